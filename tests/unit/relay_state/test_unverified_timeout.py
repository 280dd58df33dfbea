"""Issue 9, "every packet can end": a packet the relay never verified still times out and is refunded.

SPEC §6.6 *unverified timeout*: ``packet.confirm_timeout`` with ``commit_height`` and ``commit_proof``
records TIMED_OUT for a packet with no ``relay/verified`` record; the source refunds it as any timed-out
packet; the relay then refuses to verify it; no bucket and no supply record moves. SPEC §6.8: the relay
writes the lane-config record parks learn their capacities from. After each scenario the parks'
conservation check holds and the relay's supply accountant agrees with the parks.
"""

from __future__ import annotations

import pytest

from protocol.codec import decode_outcome
from protocol.errors import IllegalTransitionError, OverCapacityError, ReplayError
from protocol.lane_config import decode_lane_config, encode_lane_config
from protocol.paths import lane_config_path, outcome_path, verified_path
from protocol.types import ChainId, LaneId, PacketOutcome
from tests.unit.relay_state.harness import DPOS, LANE, MINUTE, POC, RelayHarness

ZERO_SUPPLY = {"outstanding": 0, "outbound": 0, "returning": 0}


def _lower_capacity(h: RelayHarness, capacity: int) -> None:
    h.govern("lane.set_limits", {"src": DPOS, "dst": POC, "lane": LANE,
                                 "limits": {"kWh": {"capacity": capacity, "refill_per_s": 10}}})


def test_a_packet_the_relay_refuses_for_good_is_refunded() -> None:
    h = RelayHarness()
    alice_before = h.feeds[DPOS].state.balance("alice", "kWh")
    p = h.send(amount_wh=5_000)
    _lower_capacity(h, 4_000)  # after the commit: the relay will never verify p
    with pytest.raises(OverCapacityError):
        h.verify(p)
    h.net.advance(10 * MINUTE)
    events = h.submit("packet.confirm_timeout", h.unverified_timeout_args(p))
    assert events[-1]["type"] == "packet_timed_out"
    assert events[-1]["state"] == "timed_out" and events[-1]["verified"] is False
    assert h.state.get(verified_path(DPOS, POC, LANE, p.sequence)) is None  # never certified for execution
    outcome, _, _ = decode_outcome(h.state.get(outcome_path(DPOS, POC, LANE, p.sequence)) or b"")
    assert outcome is PacketOutcome.TIMED_OUT
    assert h.sm.packet_state(h.state, bytes.fromhex(h.verify_args(p)["packet"])) == "timed_out"
    # nothing was counted: no supply hop, no bucket taken
    assert h.supply() == ZERO_SUPPLY
    assert h.state.get(f"relay/buckets/{DPOS}/{POC}/{LANE}/kWh".encode()) is None

    h.net.check()
    ev = h.settle(p, acked=False)
    assert ev["refunded"] and ev["outcome"] == "timed_out"
    assert h.feeds[DPOS].state.balance("alice", "kWh") == alice_before
    assert h.park_escrow() == 0 and h.park_vouchers() == 0
    h.net.check()
    h.check_accounts_agree()

    # from now on the relay refuses to verify it, even after the capacity is raised again
    _lower_capacity(h, 10_000)
    with pytest.raises(ReplayError):
        h.verify(p)


def test_a_batch_skips_a_packet_timed_out_unverified() -> None:
    h = RelayHarness()
    p, q = h.send(amount_wh=5_000), h.send(amount_wh=1_000)
    h.net.advance(10 * MINUTE)
    h.submit("packet.confirm_timeout", h.unverified_timeout_args(p))
    height = h.update(DPOS)
    items = [{"packet": h.verify_args(x, height)["packet"], "proof": h.verify_args(x, height)["proof"]}
             for x in (p, q)]
    events = h.submit("packet.verify_batch", {"height": height, "items": items})
    assert [e["type"] for e in events] == ["packet_verified", "packets_skipped"]
    assert events[1]["sequences"] == [p.sequence]


def test_a_verified_packet_times_out_as_before_with_or_without_commit_proof() -> None:
    for with_commit in (False, True):
        h = RelayHarness()
        p = h.send(amount_wh=5_000)
        h.verify(p)
        assert h.supply()["outbound"] == 5_000
        h.net.advance(10 * MINUTE)
        args = h.unverified_timeout_args(p) if with_commit else h.timeout_args(p)
        events = h.submit("packet.confirm_timeout", args)
        assert events[-1]["verified"] is True
        assert h.supply() == ZERO_SUPPLY  # the verified amount was released
        assert h.settle(p, acked=False)["refunded"]
        h.net.check()
        h.check_accounts_agree()


def test_unverified_timeout_feeds_source_headers_in_the_same_transaction() -> None:
    h = RelayHarness()
    p = h.send(amount_wh=5_000)
    h.net.advance(10 * MINUTE)
    src_header = h.feeds[DPOS].next_header()
    args = h.unverified_timeout_args(p, commit_height=src_header.height)
    args["commit_headers"] = [src_header.encode().hex()]
    events = h.submit("packet.confirm_timeout", args)
    assert events[-1]["type"] == "packet_timed_out"
    assert h.settle(p, acked=False)["refunded"]
    h.net.check()


def test_the_relay_keeps_a_lane_config_record_per_directed_lane() -> None:
    h = RelayHarness(limits={"kWh": {"capacity": 6_000, "refill_per_s": 100}, "*": {"capacity": 3,
                                                                                    "refill_per_s": 1}})
    for src, dst in ((DPOS, POC), (POC, DPOS)):
        raw = h.state.get(lane_config_path(ChainId(src), ChainId(dst), LaneId(LANE)))
        assert raw is not None and decode_lane_config(raw) == {"*": 3, "kWh": 6_000}
    _lower_capacity(h, 4_000)
    assert h.state.get(lane_config_path(ChainId(DPOS), ChainId(POC), LaneId(LANE))) == encode_lane_config(
        {"kWh": 4_000})
    # pausing does not touch it (a pause is not forever)
    before = h.state.get(lane_config_path(ChainId(DPOS), ChainId(POC), LaneId(LANE)))
    h.govern("lane.pause", {"src": DPOS, "dst": POC, "lane": LANE})
    assert h.state.get(lane_config_path(ChainId(DPOS), ChainId(POC), LaneId(LANE))) == before


def test_admission_takes_an_unverified_timeout_and_then_refuses_its_verify() -> None:
    h = RelayHarness()
    p = h.send(amount_wh=5_000)
    h.net.advance(10 * MINUTE)
    args = h.unverified_timeout_args(p)
    bare = {k: v for k, v in args.items() if not k.startswith("commit_")}
    with pytest.raises(IllegalTransitionError):  # never verified, and no proof the source committed it
        h.sm.check_admission(h.state, h.tx("packet.confirm_timeout", bare))
    h.sm.check_admission(h.state, h.tx("packet.confirm_timeout", args))
    h.submit("packet.confirm_timeout", args)
    for op, op_args in (("packet.confirm_timeout", args), ("packet.verify", h.verify_args(p))):
        with pytest.raises(ReplayError):
            h.sm.check_admission(h.state, h.tx(op, op_args))


def test_the_target_client_is_told_whether_the_relay_ever_certified_the_packet(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """``verify_timeout(..., certified=)``: False exactly when the timeout starts from COMMITTED (no ``relay/verified``
    record, so no certificate the target could execute the packet with: SPEC §8.7 lets a Fabric target prove such a
    timeout by attested absence), True from VERIFIED, with or without a commitment proof."""
    from protocol.light_client import LightClient

    seen: list[bool] = []
    original = LightClient.verify_timeout

    def spy(self: LightClient[object], *args: object, certified: bool = True) -> None:
        seen.append(certified)
        original(self, *args, certified=certified)  # type: ignore[arg-type]

    monkeypatch.setattr(LightClient, "verify_timeout", spy)
    h = RelayHarness()
    never, verified, both = h.send(amount_wh=1_000), h.send(amount_wh=2_000), h.send(amount_wh=3_000)
    h.verify(verified)
    h.verify(both)
    h.net.advance(10 * MINUTE)
    h.submit("packet.confirm_timeout", h.unverified_timeout_args(never))
    h.submit("packet.confirm_timeout", h.timeout_args(verified))
    h.submit("packet.confirm_timeout", h.unverified_timeout_args(both))
    assert seen == [False, True, True]
