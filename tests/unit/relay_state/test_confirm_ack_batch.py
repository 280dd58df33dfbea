"""``packet.confirm_ack_batch``: phase 4's relay half for many packets of one target at one height.

As ``packet.verify_batch``: packets with an outcome already are skipped, a batch with nothing left is a replay at
admission (before any proof work), and anything wrong with one packet fails the whole batch and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.codec import encode_ack, encode_packet
from protocol.errors import CodecError, IllegalTransitionError, InvalidProofError, ProtocolError, ReplayError
from protocol.paths import receipt_path
from protocol.types import Acknowledgement, AckStatus, Packet
from tests.unit.relay_state.harness import POC, RelayHarness


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness()


def delivered(h: RelayHarness, n: int) -> list[Packet]:
    packets = [h.send(amount_wh=1_000 * (i + 1)) for i in range(n)]
    for p in packets:
        h.verify(p)
        h.deliver(p)
    return packets


def batch_args(h: RelayHarness, packets: list[Packet], height: int | None = None) -> dict[str, Any]:
    if height is None:
        height = h.update(POC)
    items = [{"packet": encode_packet(p).hex(), "ack": h.ack_hex(p),
              "proof": h.feeds[POC].prove(height, receipt_path(p.src_chain, p.lane, p.sequence))} for p in packets]
    return {"height": height, "items": items}


def refused(h: RelayHarness, args: dict[str, Any], err: type[ProtocolError]) -> None:
    root = h.state.root
    with pytest.raises(err):
        h.submit("packet.confirm_ack_batch", args)
    assert h.state.root == root


def test_a_batch_acks_every_packet_and_settles_the_supply(h: RelayHarness) -> None:
    packets = delivered(h, 3)
    events = h.submit("packet.confirm_ack_batch", batch_args(h, packets))
    acked = [e for e in events if e["type"] == "packet_acked"]
    assert [e["sequence"] for e in acked] == [1, 2, 3] and all(e["success"] for e in acked)
    for p in packets:
        h.settle(p)
    h.check_accounts_agree()


def test_outcomes_recorded_already_are_skipped_and_only_those_are_a_replay(h: RelayHarness) -> None:
    packets = delivered(h, 3)
    h.confirm(packets[1])
    args = batch_args(h, packets)
    h.sm.check_admission(h.state, h.tx("packet.confirm_ack_batch", args))
    events = h.submit("packet.confirm_ack_batch", args)
    assert [e["sequence"] for e in events if e["type"] == "packet_acked"] == [1, 3]
    (skip,) = [e for e in events if e["type"] == "packets_skipped"]
    assert skip["sequences"] == [2]
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("packet.confirm_ack_batch", args, sender="relayer-b"))
    refused(h, args, ReplayError)


def test_a_packet_listed_twice_is_acked_once(h: RelayHarness) -> None:
    (p,) = delivered(h, 1)
    args = batch_args(h, [p, p])
    events = h.submit("packet.confirm_ack_batch", args)
    assert len([e for e in events if e["type"] == "packet_acked"]) == 1
    h.settle(p)
    h.check_accounts_agree()


@pytest.mark.parametrize("fault", ["swapped_proofs", "wrong_ack", "not_verified", "two_targets", "too_many", "empty",
                                   "extra_key"])
def test_a_bad_batch_changes_nothing(h: RelayHarness, fault: str) -> None:
    packets = delivered(h, 2)
    args = batch_args(h, packets)
    err: type[ProtocolError] = InvalidProofError
    items = args["items"]
    if fault == "swapped_proofs":
        items[0]["proof"], items[1]["proof"] = items[1]["proof"], items[0]["proof"]
    elif fault == "wrong_ack":
        items[0]["ack"] = encode_ack(Acknowledgement(AckStatus.ERROR, "escrow.insufficient", b"")).hex()
    elif fault == "not_verified":
        extra = h.send()
        args = batch_args(h, packets)
        args["items"].append({**args["items"][0], "packet": encode_packet(extra).hex()})
        err = IllegalTransitionError
    elif fault == "two_targets":
        back = h.send(POC, sender="carol", amount_wh=1_000)
        args["items"].append({**items[0], "packet": encode_packet(back).hex()})
        err = CodecError
    elif fault == "too_many":
        args["items"] = items * 101
        err = CodecError
    elif fault == "empty":
        args["items"] = []
        err = CodecError
    else:
        items[0]["extra"] = "00"
        err = CodecError
    refused(h, args, err)
