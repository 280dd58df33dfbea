"""Hostile calldata against the Ethereum park's bridge on a real anvil (issue 15, "hostile input, everywhere").

Valid calls of every bridge entry point a relayer or user reaches (``sendEnergy``, ``sendEnergyWithFees`` with its
value, ``recvPacket`` naming a relayer, ``settle`` with an ack and the fee payees of its record, ``withdrawFees``,
``openLane``) are mutated byte-wise (ABI offsets and lengths overwritten with edge values, bits flipped, truncated,
extended: tests/unit/fuzz/mutate.py) and sent with ``eth_call``. Property: the call succeeds (the mutation kept it
valid) or reverts with a bridge custom error, ``Error(string)`` or no data (the compiler's ABI decoder refusing
malformed calldata); never a ``Panic`` (arithmetic overflow, index out of bounds, memory blow-up: a bug) and never an
error no artifact declares.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import encode_ack
from protocol.types import Acknowledgement, AckStatus, FeePayees
from tests.ethereum.conftest import LANE, B, World
from tests.ethereum.harness import certificate_abi, lower_hex, send_energy, settle, token_of, validator_set_abi
from tests.unit.fuzz.config import fuzz_settings
from tests.unit.fuzz.mutate import apply_bytes, edits

pytestmark = pytest.mark.integration

SETTINGS = fuzz_settings(25)
PANIC = keccak(text="Panic(uint256)")[:4]
ERROR_STRING = keccak(text="Error(string)")[:4]


def outcome(w: World, to: str, data: bytes, sender: Any, value: int = 0) -> tuple[str, bytes]:
    resp = w.evm.w3.provider.make_request("eth_call", [  # type: ignore[arg-type]
        {"from": sender.address, "to": to, "data": "0x" + data.hex(), "gas": hex(30_000_000), "value": hex(value)},
        "latest"])
    if "error" not in resp:
        return "ok", b""
    raw_hex = resp["error"].get("data") or "0x"
    raw = bytes.fromhex(raw_hex[2:] if raw_hex.startswith("0x") else raw_hex)
    if not raw:
        return "no data", raw
    if raw[:4] == PANIC:
        return "panic", raw
    if raw[:4] == ERROR_STRING:
        return "Error(string)", raw
    if raw[:4] in w.evm.errors:
        return w.evm.errors[raw[:4]][0], raw
    return "unknown", raw


def seeds(w: World) -> list[tuple[str, bytes, Any, int]]:
    """(to, calldata, sender, value) of valid calls, each checked to succeed before it is mutated."""
    a, b = w.a, w.b
    receiver = lower_hex(w.bob.address)
    timeout_ms = w.evm.now_ms() + 3_600_000
    w.evm.transact(token_of(w.evm, a, "kWh").functions.approve(a.bridge.address, 10**9), w.alice)
    packet, _ = send_energy(w.evm, a, w.alice, B, LANE, "kWh", 1500, receiver, timeout_ms, approve=False)
    cert = w.relay.verify(packet)
    vset = validator_set_abi(w.relay.vset)
    ack = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b"", "relayer-1"))
    payees = FeePayees(lower_hex(w.relayer.address), "relayer-1", w.relayer.address.upper())
    ack_cert = w.relay.confirm_ack(packet, ack, payees=payees)
    fees = (1, 2, 3)
    # a settled packet, so that the relayer has fees to withdraw
    paid, _ = send_energy(w.evm, a, w.alice, B, LANE, "kWh", 10, receiver, timeout_ms, approve=False, fees=fees)
    paid_ack = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b""))
    settle(w.evm, a, w.relayer, paid, paid_ack, w.relay.confirm_ack(paid, paid_ack, payees=payees), w.relay.vset)
    calls = [
        (a.bridge.address, a.bridge.functions.sendEnergy(B, LANE, "kWh", 1500, receiver, timeout_ms), w.alice, 0),
        (a.bridge.address, a.bridge.functions.sendEnergyWithFees(B, LANE, "kWh", 1500, receiver, timeout_ms, fees),
         w.alice, sum(fees)),
        (b.bridge.address, b.bridge.functions.recvPacket(packet, certificate_abi(cert), vset, "relayer-1"), w.relayer,
         0),
        (a.bridge.address, a.bridge.functions.settle(packet, ack, certificate_abi(ack_cert), vset, payees.as_tuple()),
         w.relayer, 0),
        (a.bridge.address, a.bridge.functions.withdrawFees(), w.relayer, 0),
        (a.bridge.address, a.bridge.functions.openLane("eth-z", "lane-9"), a.operator, 0),
    ]
    out = []
    for to, fn, sender, value in calls:
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        assert outcome(w, to, data, sender, value)[0] == "ok", fn.fn_name
        out.append((to, data, sender, value))
    return out


def test_hostile_calldata_reverts_with_typed_errors(world: World) -> None:
    calls = seeds(world)
    seen: dict[str, int] = {}

    @SETTINGS
    @given(st.integers(0, len(calls) - 1), edits)
    def prop(i: int, e: list[tuple[int, int, int]]) -> None:
        to, data, sender, value = calls[i]
        mutated = data[:4] + apply_bytes(data[4:], e) if e[0][0] % 5 else apply_bytes(data, e)
        kind, raw = outcome(world, to, mutated, sender, value)
        seen[kind] = seen.get(kind, 0) + 1
        assert kind not in ("panic", "unknown"), (kind, raw.hex(), i, mutated.hex()[:400])

    prop()
    assert len(seen) >= 2, seen  # the mutations reach past the ABI decoder into the bridge's own checks


@pytest.mark.parametrize("selector_only", [True, False])
def test_unknown_selectors_and_short_calldata(world: World, selector_only: bool) -> None:
    for data in [b"", b"\x00", b"\x01\x02\x03", b"\xff" * 4, keccak(text="nope()")[:4], b"\x00" * 4 + b"\x01" * 64]:
        payload = data if selector_only else data + b"\x00" * 100
        kind, raw = outcome(world, world.a.bridge.address, payload, world.relayer)
        assert kind in ("no data", "Error(string)") or kind in {n for n, _ in world.evm.errors.values()}, (kind, raw)
