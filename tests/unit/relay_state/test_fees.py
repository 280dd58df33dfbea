"""The relay chain's half of relay fees (protocol SPEC §6.10), through the four phases between two simulated parks:
payees named with ``account.set_payee``, the first successful relay of each step recorded, the three payees
certified in the outcome record, and the source park paying them; racing relayers earn only what they did first."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import supply_report
from chains.common.fees import FEE_ESCROW
from protocol.codec import decode_outcome_record, encode_outcome, encode_packet
from protocol.errors import InvalidProofError, ReplayError
from protocol.paths import outcome_path, verified_path
from protocol.types import FeePayees, Packet, PacketOutcome
from relay.chain.state_machine.fees import verify_payee_key
from tests.unit.relay_state.harness import DPOS, MINUTE, POC, RelayHarness

FEE = "prc"
FUNDS = 5_000
FEES = {"verify": 30, "execute": 50, "confirm": 20}


@pytest.fixture
def h() -> RelayHarness:
    h = RelayHarness()
    park = h.net.parks[DPOS]
    cfg = park.state.get_json(b"bridge/config")
    park.state.set_json(b"bridge/config", {**cfg, "fee_denom": FEE})  # the park takes fees in its currency
    park.state.add_balance("alice", FEE, FUNDS)
    for name in ("pay-a", "pay-b"):
        park.add_account(name)
    h.submit("account.set_payee", {"chain": DPOS, "payee": "pay-a"}, "relayer-a")
    h.submit("account.set_payee", {"chain": DPOS, "payee": "pay-b"}, "relayer-b")
    return h


def fee_balances(h: RelayHarness) -> dict[str, int]:
    park = h.net.parks[DPOS]
    return {n: park.balance(n, FEE) for n in ("alice", "pay-a", "pay-b", FEE_ESCROW)}


def check(h: RelayHarness) -> None:
    """Nothing of the fee denom created or lost on the source; the escrow holds the unsettled records' fees."""
    park = h.net.parks[DPOS]
    held = sum(r["verify"] + r["execute"] + r["confirm"]
               for r in (park.state.get_json(k) for k, _ in park.state.prefix_items(b"fees/")))
    assert park.balance(FEE_ESCROW, FEE) == held
    total = sum(int(v) for k, v in park.state.prefix_items(b"balances/") if k.decode().endswith(f"/{FEE}"))
    assert total + supply_report(park.state, [FEE])["escrow"].get(FEE, 0) == FUNDS
    h.net.check()


def send(h: RelayHarness, **kw: Any) -> Packet:
    return h.send(fees=FEES, **kw)


def deliver(h: RelayHarness, packet: Packet, relayer: str) -> None:
    key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
    h.net.recv(packet, h.certificate(key), relayer=relayer)


def outcome_payees(h: RelayHarness, packet: Packet) -> FeePayees:
    raw = h.state.get(outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence))
    assert raw is not None
    return decode_outcome_record(raw)[3]


def test_set_payee_names_and_clears_a_payee(h: RelayHarness) -> None:
    acct = h.state.get_json(b"accounts/relayer-a")
    assert acct["payees"] == {DPOS: "pay-a"}
    events = h.submit("account.set_payee", {"chain": POC, "payee": "bob"}, "relayer-a")
    assert events == [{"type": "payee_set", "account": "relayer-a", "chain": POC, "payee": "bob"}]
    h.submit("account.set_payee", {"chain": DPOS, "payee": ""}, "relayer-a")
    assert h.state.get_json(b"accounts/relayer-a")["payees"] == {POC: "bob"}


def test_each_step_pays_the_relayer_that_did_it_first(h: RelayHarness) -> None:
    packet = send(h)
    h.verify(packet, "relayer-a")
    assert h.state.get(verify_payee_key(packet)) == b"pay-a"
    deliver(h, packet, "relayer-b")
    h.submit("packet.confirm_ack", h.confirm_args(packet), "relayer-a")
    assert outcome_payees(h, packet) == FeePayees("pay-a", "pay-b", "pay-a")
    assert h.state.get(verify_payee_key(packet)) is None  # folded into the outcome record
    h.settle(packet)
    assert fee_balances(h) == {"alice": FUNDS - 100, "pay-a": 50, "pay-b": 50, FEE_ESCROW: 0}
    check(h)


def test_racing_relayers_earn_only_the_steps_they_won(h: RelayHarness) -> None:
    p1, p2 = send(h), send(h)
    height = h.update(DPOS)
    a = h.verify_args(p1, height)
    b = h.verify_args(p2, height)
    # relayer-b verifies p2 first; relayer-a's batch of both lands next: p2 is skipped, relayer-a earns only p1
    h.submit("packet.verify_batch", {"height": height, "items": [{"packet": b["packet"], "proof": b["proof"]}]},
             "relayer-b")
    events = h.submit("packet.verify_batch", {"height": height, "items": [
        {"packet": a["packet"], "proof": a["proof"]}, {"packet": b["packet"], "proof": b["proof"]}]}, "relayer-a")
    assert any(e["type"] == "packets_skipped" for e in events)
    for p in (p1, p2):
        deliver(h, p, "relayer-a")
    args = h.confirm_args(p1)
    h.submit("packet.confirm_ack", args, "relayer-b")
    with pytest.raises(ReplayError):  # relayer-a lost the race: refused, nothing recorded for it
        h.submit("packet.confirm_ack", args, "relayer-a")
    h.submit("packet.confirm_ack", h.confirm_args(p2), "relayer-a")
    assert outcome_payees(h, p1) == FeePayees("pay-a", "pay-a", "pay-b")
    assert outcome_payees(h, p2) == FeePayees("pay-b", "pay-a", "pay-a")
    h.settle(p1)
    h.settle(p2)
    assert fee_balances(h)["pay-a"] == 30 + 50 + 50 + 20
    assert fee_balances(h)["pay-b"] == 20 + 30
    check(h)


def test_a_relayer_without_a_payee_earns_nothing_and_its_fee_goes_back(h: RelayHarness) -> None:
    h.submit("account.set_payee", {"chain": DPOS, "payee": ""}, "relayer-b")
    packet = send(h)
    h.verify(packet, "relayer-b")
    assert h.state.get(verify_payee_key(packet)) is None
    deliver(h, packet, "nobody-registered")  # the ack names an account the relay does not know
    h.submit("packet.confirm_ack", h.confirm_args(packet), "relayer-a")
    assert outcome_payees(h, packet) == FeePayees("", "", "pay-a")
    h.settle(packet)
    assert fee_balances(h) == {"alice": FUNDS - 20, "pay-a": 20, "pay-b": 0, FEE_ESCROW: 0}
    check(h)


def test_a_timeout_certifies_no_executor_and_refunds_the_execute_fee(h: RelayHarness) -> None:
    packet = send(h)
    h.verify(packet, "relayer-b")
    h.net.advance(11 * MINUTE)
    h.submit("packet.confirm_timeout", h.timeout_args(packet), "relayer-a")
    assert outcome_payees(h, packet) == FeePayees("pay-b", "", "pay-a")
    h.settle(packet, acked=False)
    assert fee_balances(h) == {"alice": FUNDS - 50, "pay-a": 20, "pay-b": 30, FEE_ESCROW: 0}
    check(h)


def test_an_unverified_timeout_pays_only_its_confirmer(h: RelayHarness) -> None:
    packet = send(h)
    h.net.advance(11 * MINUTE)
    h.submit("packet.confirm_timeout", h.unverified_timeout_args(packet), "relayer-b")
    raw = h.state.get(outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence))
    assert raw is not None and decode_outcome_record(raw)[0] is PacketOutcome.TIMED_OUT
    assert outcome_payees(h, packet) == FeePayees("", "", "pay-b")
    h.settle(packet, acked=False)
    assert fee_balances(h) == {"alice": FUNDS - 20, "pay-a": 0, "pay-b": 20, FEE_ESCROW: 0}
    check(h)


def test_without_any_payee_the_outcome_record_keeps_its_three_fields(h: RelayHarness) -> None:
    for name in ("relayer-a", "relayer-b"):
        h.submit("account.set_payee", {"chain": DPOS, "payee": ""}, name)
    packet = send(h)
    h.verify(packet)
    deliver(h, packet, "relayer-a")
    h.confirm(packet)
    raw = h.state.get(outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence))
    assert raw is not None and len(raw) == 96
    h.settle(packet)
    assert fee_balances(h)["alice"] == FUNDS  # every fee refunded
    check(h)


def test_a_relayer_cannot_settle_with_payees_of_its_choosing(h: RelayHarness) -> None:
    packet = send(h)
    h.verify(packet, "relayer-a")
    deliver(h, packet, "relayer-a")
    h.submit("packet.confirm_ack", h.confirm_args(packet), "relayer-a")
    key = outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
    cert = h.certificate(key)
    out, pc, ac, _ = decode_outcome_record(bytes.fromhex(cert["value"]))
    forged = {**cert, "value": encode_outcome(out, pc, ac, FeePayees("pay-b", "pay-b", "pay-b")).hex()}
    park = h.net.parks[DPOS]
    root = park.state.root
    with pytest.raises(InvalidProofError):
        park.tx("relayer", "bridge.settle", {"packet": encode_packet(packet).hex(), "certificate": forged,
                                             "ack": h.ack_hex(packet)})
    assert park.state.root == root
    h.settle(packet)
    assert fee_balances(h)["pay-a"] == 100
    check(h)
