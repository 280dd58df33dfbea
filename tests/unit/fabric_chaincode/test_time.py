"""Hazard 2 (SPEC.md §8.7): no timeout is decided by a client-chosen time. The contract reads only the endorsing
organisation's chaincode clock (injected here as ``now_ms`` per org); ``recv`` stops at the timeout,
``timeout_receipt`` writes the sentinel only past it, and MVCC lets at most one of a receipt and the sentinel
commit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from protocol.codec import encode_energy, encode_packet
from protocol.paths import receipt_path
from protocol.types import EnergyPayload, Packet, PacketKind
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode.fake import EndorsementMismatch
from tests.unit.fabric_chaincode.harness import (
    ALICE,
    DPOS,
    FABRIC,
    FABRIC_ALICE_WH,
    LANE,
    RELAYER,
    Harness,
    energy,
    make_harness,
)


@pytest.fixture
def h() -> Harness:
    return make_harness()


def inbound(h: Harness, timeout_in_ms: int = MINUTE) -> tuple[Packet, dict[str, Any], dict[str, Any]]:
    """A dpos-park packet to the Fabric park, verified by the relay: (packet, its certificate, recv args)."""
    packet = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC,
                                                timeout_timestamp_ms=h.net.now_ms + timeout_in_ms))
    cert = h.net.verify(packet)
    return packet, cert, h.recv_args(packet, cert)


def receipt(h: Harness, packet: Packet) -> bytes | None:
    return h.raw(receipt_path(packet.src_chain, packet.lane, packet.sequence))


def test_recv_runs_until_the_chaincode_clock_reaches_the_timeout(h: Harness) -> None:
    packet, _, args = inbound(h)
    h.net.advance(MINUTE)  # now == timeout
    assert h.refused(RELAYER, "recv", args) == "packet.timeout"
    h.net.advance(-1)  # one ms before
    assert h.ok(RELAYER, "recv", args)[0]["success"]
    assert receipt(h, packet) not in (None, TIMEOUT_RECEIPT)


def test_timeout_receipt_only_past_the_timeout_then_recv_is_refused_for_good(h: Harness) -> None:
    packet, _, args = inbound(h)
    h.net.advance(MINUTE - 1)
    assert h.refused(RELAYER, "timeout_receipt", args) == "packet.timeout"
    h.net.advance(1)
    (event,) = h.ok(RELAYER, "timeout_receipt", args)
    assert event == {"type": "timeout_receipt", "src": DPOS, "dst": FABRIC, "lane": LANE,
                     "sequence": packet.sequence, "kind": "energy"}
    assert h.fabric.ledger.events[-1][0] == "timeout_receipt"
    assert receipt(h, packet) == TIMEOUT_RECEIPT
    assert h.query("receipt", DPOS, LANE, str(packet.sequence)) == {"receipt": TIMEOUT_RECEIPT.hex(), "ack": None,
                                                                   "timed_out": True}
    assert h.refused(RELAYER, "timeout_receipt", args) == "packet.replay"
    assert h.refused(RELAYER, "recv", args) == "packet.timeout"
    # even if both organisations' clocks stepped back before the timeout, the sentinel holds
    h.fabric.skew_ms = {OPERATOR_MSP: -10 * MINUTE, SALES_MSP: -10 * MINUTE}
    assert h.refused(RELAYER, "recv", args) == "packet.timeout"
    assert h.balance("OperatorMSP:bob", f"{LANE}/{DPOS}/kWh") == 0


def test_timeout_receipt_after_a_receipt_is_a_replay(h: Harness) -> None:
    _, _, args = inbound(h)
    h.ok(RELAYER, "recv", args)
    h.net.advance(2 * MINUTE)
    assert h.refused(RELAYER, "timeout_receipt", args) == "packet.replay"


def test_timeout_receipt_needs_the_relay_certificate_of_the_real_packet(h: Harness) -> None:
    """The receipt path is keyed by (src, lane, sequence) only: a packet of one's own making with a past timeout
    must not be able to block the real packet at that sequence."""
    fake = Packet(DPOS, FABRIC, LANE, 1, PacketKind.ENERGY, encode_energy(EnergyPayload("kWh", 1_000)), "alice",
                  "OperatorMSP:bob", h.net.now_ms - 1)
    fake_args = {"packet": encode_packet(fake).hex(),
                 "certificate": h.net.verified_cert(fake)}  # the relay holds no such record: absence proof
    assert h.refused(RELAYER, "timeout_receipt", fake_args) == "proof.invalid"
    packet, _, args = inbound(h)
    assert packet.sequence == 1 and h.ok(RELAYER, "recv", args)[0]["success"]


def test_a_timed_out_inbound_packet_is_refunded_at_its_source_on_the_sentinel(h: Harness) -> None:
    packet, _, args = inbound(h)
    h.check()
    h.net.advance(MINUTE)
    assert h.refused(RELAYER, "recv", args) == "packet.timeout"
    h.ok(RELAYER, "timeout_receipt", args)
    h.check()
    settle = h.net.settle(packet, h.confirm_timeout_from_fabric(packet), None)
    assert settle["outcome"] == "timed_out" and settle["refunded"]
    assert h.dpos.balance("alice", "kWh") == 100_000
    h.check()


def test_a_fabric_packet_timed_out_on_the_python_park_is_refunded_on_fabric(h: Harness) -> None:
    packet = h.send_from_fabric(ALICE, **energy("bob", 3_000, dst=DPOS, timeout_timestamp_ms=h.net.now_ms + MINUTE))
    h.verify_from_fabric(packet)
    h.net.advance(MINUTE)
    settle = h.settle_on_fabric(packet, h.net.confirm_timeout(packet), None)
    assert settle["refunded"] and settle["outcome"] == "timed_out"
    assert h.balance("SalesMSP:alice") == FABRIC_ALICE_WH
    h.check()


def test_send_checks_the_timeout_against_the_chaincode_clock(h: Harness) -> None:
    now = h.net.now_ms
    assert h.refused(ALICE, "send", energy("bob", 1, dst=DPOS, timeout_timestamp_ms=now)) == "packet.timeout"
    assert h.ok(ALICE, "send", energy("bob", 1, dst=DPOS, timeout_timestamp_ms=now + 1))[0]["sequence"] == 1


@pytest.mark.parametrize("first", ["recv", "timeout_receipt"])
def test_mvcc_lets_only_one_of_a_receipt_and_the_sentinel_commit(h: Harness, first: str) -> None:
    """A recv endorsed before the timeout but ordered after a sentinel (or the other way round) is invalidated:
    both read the receipt key."""
    packet, _, args = inbound(h)
    before, after = h.net.now_ms + MINUTE - 1, h.net.now_ms + MINUTE
    recv = [h.fabric.endorse(RELAYER, "recv", json.dumps(args), now_ms=before, org=o)
            for o in (OPERATOR_MSP, SALES_MSP)]
    sentinel = [h.fabric.endorse(RELAYER, "timeout_receipt", json.dumps(args), now_ms=after, org=o)
                for o in (OPERATOR_MSP, SALES_MSP)]
    assert all(e.response.status == 200 for e in recv + sentinel)
    assert recv[0].rwset() == recv[1].rwset() and sentinel[0].rwset() == sentinel[1].rwset()
    ordered = (recv, sentinel) if first == "recv" else (sentinel, recv)
    assert h.fabric.ledger.commit(ordered[0][0]) is True
    assert h.fabric.ledger.commit(ordered[1][0]) is False
    assert h.fabric.ledger.invalid == 1
    expected_sentinel = first == "timeout_receipt"
    assert (receipt(h, packet) == TIMEOUT_RECEIPT) is expected_sentinel
    minted = h.balance("OperatorMSP:bob", f"{LANE}/{DPOS}/kWh")
    assert minted == (0 if expected_sentinel else 1_000)


def test_clocks_on_either_side_of_the_timeout_cannot_endorse_either_way(h: Harness) -> None:
    """Skew between the organisations near the boundary costs liveness (retry), never safety."""
    _, _, args = inbound(h)
    h.net.advance(MINUTE - 1_000)
    h.fabric.skew_ms = {OPERATOR_MSP: 0, SALES_MSP: 2_000}  # Sales is 2 s ahead: already past the timeout
    before = h.fabric.ledger.snapshot()
    with pytest.raises(EndorsementMismatch):
        h.submit(RELAYER, "recv", args)
    with pytest.raises(EndorsementMismatch):
        h.submit(RELAYER, "timeout_receipt", args)
    assert h.fabric.ledger.snapshot() == before
    h.net.advance(1_000)  # both clocks past the timeout now
    h.ok(RELAYER, "timeout_receipt", args)


def test_both_organisations_write_the_same_set_whatever_their_clocks(h: Harness) -> None:
    h.net.advance(123_457)
    _, _, args = inbound(h)
    clocks = {OPERATOR_MSP: h.net.now_ms + 11, SALES_MSP: h.net.now_ms + 788}
    ends = [h.fabric.endorse(RELAYER, "recv", json.dumps(args), now_ms=now, org=org) for org, now in clocks.items()]
    assert ends[0].rwset() == ends[1].rwset() and ends[0].response == ends[1].response
    assert ends[0].writes
    for now in clocks.values():
        for _, value in ends[0].writes:
            assert str(now).encode() not in (value or b"") and now.to_bytes(8, "big") not in (value or b"")
