"""Relay fees through the Fabric adapter (protocol SPEC §6.10; adapters/fabric): ``send_*`` offer fees, ``bridge.recv``
names the relayer, the source side hands the relayer the chaincode's ``send_packet`` with its ``fees`` and the
``fee_paid`` / ``fee_refunded`` events of a settlement, and the pipeline keys keep fee-escrow writers apart. No
network: the adapter's target runs the real contract on the chaincode tests' fake ledger."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # hfc's protos (adapters/fabric/__init__)

import asyncio
import json
from typing import Any

import pytest

from adapters.fabric import FabricTarget, decode_peer_block, send_energy, send_packet, write_keys
from adapters.fabric.assets import send_reputation, send_right
from adapters.fabric.errors import chaincode_error
from chains.fabric.chaincode.contract import STATUS_OK
from protocol.codec import ack_commitment, decode_ack, encode_energy, encode_packet
from protocol.errors import CodecError, InsufficientFundsError
from protocol.types import Acknowledgement, AckStatus, EnergyPayload, FeePayees, Packet, PacketKind
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode import parks
from tests.unit.fabric_chaincode.harness import ALICE, DPOS, FABRIC, LANE, RELAYER, Harness, energy, make_harness
from tests.unit.test_fabric_adapter_errors import peer_block

FEES = {"verify": 1, "execute": 2, "confirm": 3}


class ChaincodeTarget(FabricTarget):
    """A :class:`FabricTarget` whose transactions run the real contract on a fake ledger (no gateway): what the
    adapter builds (function, JSON argument) is what the chaincode parses."""

    def __init__(self, park: Any, who: tuple[str, bytes], chain_id: str, now_ms: Any) -> None:  # no gateway
        self.chain_id = chain_id
        self.park, self.who, self.now_ms = park, who, now_ms
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, op: str, args: dict[str, Any], timeout_s: float | None = None,
                   transient: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        self.calls.append((op, args))
        fcn, cc_args = self.invocation(op, args)
        r = self.park.submit(self.who, fcn, *(a.encode() for a in cc_args), now_ms=self.now_ms())
        if r.status != STATUS_OK:
            raise chaincode_error(r.message, where=self.chain_id)
        return {"ok": True, "height": len(self.park.ledger.events), "tx_hash": f"tx{len(self.calls)}"}, \
            json.loads(r.payload)


def target(h: Harness, who: tuple[str, bytes] = ALICE) -> ChaincodeTarget:
    return ChaincodeTarget(h.fabric, who, FABRIC, lambda: h.net.now_ms)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_send_energy_offers_the_fees_and_the_chaincode_escrows_them() -> None:
    h = make_harness()
    t = target(h)
    sent = run(send_energy(t, DPOS, LANE, "kWh", 500, "bob", h.net.now_ms + MINUTE, fees=FEES))
    assert t.calls[-1][1]["fees"] == FEES and sent.sequence == 1 and sent.packet.sender == "SalesMSP:alice"
    assert h.query("fees", DPOS, LANE, "1")["record"] == {**FEES, "denom": "kWh", "payer": "SalesMSP:alice"}
    # zero fees and no fees send no fees argument at all
    run(send_energy(t, DPOS, LANE, "kWh", 1, "bob", h.net.now_ms + MINUTE, fees={"verify": 0}))
    run(send_packet(t, energy("bob", 1, dst=DPOS, timeout_timestamp_ms=h.net.now_ms + MINUTE)))
    assert all("fees" not in args for _, args in t.calls[1:])
    assert h.balance("SalesMSP:alice") == 100_000 - 502 - 6
    h.check()


@pytest.mark.parametrize("fees", [{"tip": 1}, {"verify": -1}, {"execute": True}, {"confirm": 2**64}, {"verify": "1"}])
def test_malformed_fees_are_refused_before_anything_is_sent(fees: dict[str, Any]) -> None:
    h = make_harness()
    t = target(h)
    with pytest.raises(CodecError):
        run(send_energy(t, DPOS, LANE, "kWh", 1, "bob", h.net.now_ms + MINUTE, fees=fees))
    assert t.calls == []


def test_fees_the_sender_cannot_pay_come_back_as_the_chaincodes_typed_refusal() -> None:
    h = make_harness()
    with pytest.raises(InsufficientFundsError):
        run(send_energy(target(h), DPOS, LANE, "kWh", 100_000, "bob", h.net.now_ms + MINUTE, fees={"confirm": 1}))
    assert h.query("next_sequence", DPOS, LANE) == {"next_sequence": 1}


def test_send_right_and_send_reputation_offer_fees() -> None:
    net = parks.make_parks(parks.A, parks.B)
    net.issue(parks.A, "r1")
    net.ok(parks.A, parks.OPERATOR, "set_standing", {"account": parks.ALICE_ID, "certified": True, "score": 7_000})
    t = ChaincodeTarget(net.parks[parks.A], parks.ALICE, parks.A, lambda: net.now_ms)
    right = run(send_right(t, parks.B, LANE, "r1", parks.BOB_ID, net.now_ms + MINUTE, fees={"execute": 4}))
    rep = run(send_reputation(t, parks.B, LANE, parks.ALICE_ID, parks.BOB_ID, net.now_ms + MINUTE,
                              fees={"verify": 5}))
    assert [args["fees"] for _, args in t.calls] == [{"verify": 0, "execute": 4, "confirm": 0},
                                                     {"verify": 5, "execute": 0, "confirm": 0}]
    assert (right.sequence, rep.sequence) == (1, 2)
    assert net.query(parks.A, "fees", parks.B, LANE, "2")["escrow"] == 9
    net.check()


def test_recv_passes_the_relayer_and_the_ack_names_it() -> None:
    h = make_harness()
    packet = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 10, dst=FABRIC))
    args = {"packet": encode_packet(packet).hex(), "certificate": h.net.verify(packet), "relayer": "relayer-7"}
    fcn, cc_args = target(h).invocation("bridge.recv", args)
    assert fcn == "recv" and json.loads(cc_args[0])["relayer"] == "relayer-7"
    _, events = run(target(h, RELAYER).call("bridge.recv", args))
    (ev,) = events
    ack = Acknowledgement(AckStatus.SUCCESS, "ok", b"", "relayer-7")
    assert decode_ack(bytes.fromhex(ev["ack"])) == ack and ev["ack_commitment"] == ack_commitment(ack).hex()


# --- the source side: events of a peer's block ----------------------------------------------------------------


def test_the_relayer_sees_the_fees_of_a_send_and_the_fee_events_of_a_settlement() -> None:
    h = make_harness()
    packet = h.send_from_fabric(ALICE, **energy("bob", 50, dst=DPOS, fees=FEES))
    _, send_payload = h.fabric.ledger.events[-1]
    h.net.recv(packet, h.verify_from_fabric(packet))
    cert, ack_hex = h.confirm_from_dpos(packet, FeePayees("OperatorMSP:relayer", "relayer", ""))
    h.settle_on_fabric(packet, cert, ack_hex)
    name, settle_payload = h.fabric.ledger.events[-1]
    assert name == "settle_packet"
    block = decode_peer_block(peer_block(12, [("s1", 0, send_payload), ("s2", 0, settle_payload)]), 12)
    events = block.events("bridge")
    assert [(e["type"], e["height"], e["tx_hash"]) for e in events] == [
        ("send_packet", 12, "s1"), ("settle_packet", 12, "s2"), ("fee_paid", 12, "s2"), ("fee_refunded", 12, "s2"),
        ("fee_refunded", 12, "s2")]
    assert events[0]["fees"] == {**FEES, "denom": "kWh"}
    assert {k: events[2][k] for k in ("step", "payee", "amount", "denom", "src", "dst", "lane", "sequence")} == {
        "step": "verify", "payee": "OperatorMSP:relayer", "amount": 1, "denom": "kWh", "src": FABRIC, "dst": DPOS,
        "lane": LANE, "sequence": 1}
    assert [(e["step"], e["to"], e["amount"]) for e in events[3:]] == [("execute", "SalesMSP:alice", 2),
                                                                       ("confirm", "SalesMSP:alice", 3)]


# --- the pipeline's hot keys ------------------------------------------------------------------------------------


def test_sends_with_fees_and_settlements_share_the_fee_escrow_key_and_sends_without_do_not() -> None:
    send = {"dst_chain": "poc-park", "lane": "lane-9", "kind": "charging_right", "receiver": "x", "right_id": "r",
            "timeout_timestamp_ms": 1}
    with_fees = write_keys("bridge.send", {**send, "fees": {"execute": 1}}, home=FABRIC)
    zero_fees = write_keys("bridge.send", {**send, "fees": {"execute": 0}}, home=FABRIC)
    packet = Packet(FABRIC, DPOS, LANE, 1, PacketKind.ENERGY, encode_energy(EnergyPayload("kWh", 1)), "a", "b", 10**13)
    settle = write_keys("bridge.settle", {"packet": encode_packet(packet).hex(), "certificate": {}}, home=FABRIC)
    assert ("fee_escrow",) in with_fees & settle
    assert ("fee_escrow",) not in write_keys("bridge.send", send, home=FABRIC) | zero_fees

