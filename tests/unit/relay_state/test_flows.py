"""The relay state machine in the four phases, between two real simulated parks on one clock.

Phase 1 and 3 and the source half of phase 4 run the parks' real bridge ops; phase 2 and the relay half
of phase 4 run :class:`RelayStateMachine`, whose state root the parks' certificates prove against.
After each scenario the parks' conservation check holds and, at rest, the relay's supply accountant
agrees with the home escrow and the remote voucher supply.
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.tx import Tx
from protocol.codec import decode_outcome, encode_packet, packet_commitment
from protocol.errors import ClientRecoveryError, CodecError, InvalidProofError, LaneError, RateLimitError, ReplayError
from protocol.paths import commitment_path, outcome_path, verified_path
from protocol.types import PacketOutcome
from tests.unit.relay_state.harness import DPOS, LANE, MINUTE, POC, RELAY, VOUCHER, RelayHarness
from tests.unit.relay_state.testkit import SingleSignerHeader, fixed_signer


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness()


def record(h: RelayHarness, key: bytes) -> bytes:
    raw = h.state.get(key)
    assert raw is not None, key
    return raw


def lane(h: RelayHarness, src: str, dst: str) -> dict[str, Any]:
    rec = h.sm.lane(h.state, src, dst, LANE)
    assert rec is not None
    return rec


def only(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (event,) = [e for e in events if e["type"] == kind]
    return event


# --- energy -----------------------------------------------------------------------------------------


def test_energy_out_and_back(h: RelayHarness) -> None:
    dpos, poc = h.net.parks[DPOS], h.net.parks[POC]
    p = h.send(amount_wh=5_000)
    ev = only(h.verify(p), "packet_verified")
    assert ev == {"type": "packet_verified", "src": DPOS, "dst": POC, "lane": LANE, "sequence": 1, "kind": "energy",
                  "commitment": record(h, verified_path(p.src_chain, p.dst_chain, p.lane, 1)).hex(),
                  "source_height": 1, "state": "verified"}
    assert h.sm.packet_state(h.state, encode_packet(p)) == "verified"
    assert h.supply() == {"outstanding": 0, "outbound": 5_000, "returning": 0}
    assert h.deliver(p)["success"]
    acked = only(h.confirm(p), "packet_acked")
    assert acked["success"] and acked["state"] == "acked"
    assert h.sm.packet_state(h.state, encode_packet(p)) == "acked"
    outcome, commit, _ = decode_outcome(record(h, outcome_path(p.src_chain, p.dst_chain, p.lane, 1)))
    assert outcome is PacketOutcome.ACKED and commit == packet_commitment(p)
    # the outcome record replaced the verified one: it answers every later question (SPEC §6.6)
    assert h.state.get(verified_path(p.src_chain, p.dst_chain, p.lane, 1)) is None
    assert h.settle(p)["refunded"] is False
    h.net.check()
    h.check_accounts_agree()
    assert poc.balance("bob", VOUCHER) == 5_000

    back = h.send(src=POC, sender="bob", denom=VOUCHER, amount_wh=2_000)
    h.verify(back)
    assert h.supply() == {"outstanding": 3_000, "outbound": 0, "returning": 2_000}
    assert h.deliver(back)["success"]
    h.confirm(back)
    h.settle(back)
    h.net.check()
    h.check_accounts_agree()
    assert h.supply()["outstanding"] == 3_000
    assert dpos.balance("alice", "kWh") == 100_000 - 5_000 + 2_000


def test_error_ack_reverts_the_outbound_amount(h: RelayHarness) -> None:
    dpos = h.net.parks[DPOS]
    p = h.send(receiver="nobody", amount_wh=4_000)  # no such account on poc-park: an error ack
    h.verify(p)
    assert h.supply()["outbound"] == 4_000
    assert not h.deliver(p)["success"]
    acked = only(h.confirm(p), "packet_acked")
    assert acked["success"] is False and acked["ack_code"] == "receiver.unknown"
    assert h.supply() == {"outstanding": 0, "outbound": 0, "returning": 0}
    assert h.settle(p)["refunded"] is True
    assert dpos.balance("alice", "kWh") == 100_000
    h.net.check()
    h.check_accounts_agree()


def test_timeout_reverts_and_refunds(h: RelayHarness) -> None:
    dpos = h.net.parks[DPOS]
    p = h.send(amount_wh=3_000, timeout_timestamp_ms=h.net.now_ms + MINUTE)
    h.verify(p)
    h.net.advance(MINUTE)  # the target's next header is at the timeout: nothing can execute any more
    ev = only(h.confirm_timeout(p), "packet_timed_out")
    assert ev["state"] == "timed_out"
    outcome, _, ack_c = decode_outcome(record(h, outcome_path(p.src_chain, p.dst_chain, p.lane, 1)))
    assert outcome is PacketOutcome.TIMED_OUT and ack_c == bytes(32)
    assert h.sm.packet_state(h.state, encode_packet(p)) == "timed_out"
    assert h.supply() == {"outstanding": 0, "outbound": 0, "returning": 0}
    assert h.settle(p, acked=False)["refunded"] is True
    assert dpos.balance("alice", "kWh") == 100_000
    h.net.check()


@pytest.mark.parametrize("failure", ["error_ack", "timeout"])
def test_a_failed_return_restores_what_is_outstanding(h: RelayHarness, failure: str) -> None:
    h.roundtrip(h.send(amount_wh=5_000))
    kw: dict[str, Any] = {"receiver": "nobody"} if failure == "error_ack" else {
        "timeout_timestamp_ms": h.net.now_ms + MINUTE}
    back = h.send(src=POC, sender="bob", denom=VOUCHER, amount_wh=5_000, **kw)
    h.verify(back)
    assert h.supply() == {"outstanding": 0, "outbound": 0, "returning": 5_000}
    if failure == "error_ack":
        h.deliver(back)
        h.confirm(back)
        h.settle(back)
    else:
        h.net.advance(MINUTE)
        h.confirm_timeout(back)
        h.settle(back, acked=False)
    assert h.supply() == {"outstanding": 5_000, "outbound": 0, "returning": 0}
    h.net.check()
    h.check_accounts_agree()
    assert h.net.parks[POC].balance("bob", VOUCHER) == 5_000


def test_a_return_waits_for_the_ack_that_minted_its_vouchers(h: RelayHarness) -> None:
    p = h.send(amount_wh=5_000)
    h.verify(p)
    h.deliver(p)
    back = h.send(src=POC, sender="bob", denom=VOUCHER, amount_wh=5_000)  # real vouchers, real burn
    args = h.verify_args(back)
    from protocol.errors import InsufficientFundsError

    with pytest.raises(InsufficientFundsError):
        h.submit("packet.verify", args)
    h.confirm(p)  # the relayer confirms the outbound ack first, then the return passes
    h.submit("packet.verify", args)
    h.deliver(back)
    h.confirm(back)
    h.settle(p)
    h.settle(back)
    h.check_accounts_agree()


def test_other_kinds_flow_without_the_accountant(h: RelayHarness) -> None:
    h.feeds[DPOS].state.set_json(b"reputation/alice", {"score": 870, "model": "dpos-witness-credit/v1", "height": 7})
    p = h.net.send(DPOS, "alice", dst_chain=POC, lane=LANE, kind="reputation", receiver="bob", subject="alice")
    ev = only(h.verify(p), "packet_verified")
    assert ev["kind"] == "reputation"
    ack, settle = h.deliver(p), None
    assert ack["success"]
    h.confirm(p)
    settle = h.settle(p)
    assert settle["refunded"] is False
    assert h.state.prefix_items(b"relay/supply/") == []


# --- batches and headers in the same transaction ------------------------------------------------------


def test_batch_of_100_against_one_header(h: RelayHarness) -> None:
    packets = [h.send(amount_wh=10) for _ in range(100)]
    height = h.update(DPOS)
    items = []
    for p in packets:
        args = h.verify_args(p, height=height)
        items.append({"packet": args["packet"], "proof": args["proof"]})
    events = h.submit("packet.verify_batch", {"height": height, "items": items})
    assert [e["sequence"] for e in events if e["type"] == "packet_verified"] == list(range(1, 101))
    assert h.supply()["outbound"] == 1_000
    # a racing relayer's overlapping batch: redundant items are no-ops, the new one is verified
    extra = h.send(amount_wh=10)
    height2 = h.update(DPOS)
    new = h.verify_args(extra, height=height2)
    old = [{"packet": it["packet"], "proof": h.verify_args(p, height=height2)["proof"]}
           for it, p in zip(items[:3], packets[:3], strict=True)]
    events = h.submit("packet.verify_batch", {"height": height2, "items": [
        *old, {"packet": new["packet"], "proof": new["proof"]}]}, sender="relayer-b")
    assert only(events, "packet_verified")["sequence"] == 101
    assert only(events, "packets_skipped")["sequences"] == [1, 2, 3]
    for p in packets[:2]:
        h.deliver(p)
        h.confirm(p)
        h.settle(p)
    h.net.check()


def test_headers_ride_along_with_the_proof(h: RelayHarness) -> None:
    p = h.send()
    header = h.feeds[DPOS].next_header()
    args = h.verify_args(p, height=header.height)
    events = h.submit("packet.verify", {**args, "headers": [header.encode().hex()]})
    assert [e["type"] for e in events] == ["client_updated", "packet_verified"]
    h.deliver(p)
    target = h.feeds[POC].next_header()
    cargs = h.confirm_args(p, height=target.height)
    events = h.submit("packet.confirm_ack", {**cargs, "headers": [target.encode().hex()]})
    assert [e["type"] for e in events] == ["client_updated", "packet_acked"]
    # a header the client already holds, sent again by another relayer, is skipped, not an error
    q = h.send()
    header2 = h.feeds[DPOS].next_header()
    args = h.verify_args(q, height=header2.height)
    events = h.submit("packet.verify", {**args, "headers": [header.encode().hex(), header2.encode().hex()]},
                      sender="relayer-b")
    assert only(events, "client_updated")["heights"] == [header2.height]
    # and when another relayer already fed every header, the packet is still verified
    r = h.send()
    header3 = h.feeds[DPOS].next_header()
    h.submit("client.update", {"chain_id": DPOS, "headers": [header3.encode().hex()]})
    events = h.submit("packet.verify", {**h.verify_args(r, height=header3.height),
                                        "headers": [header3.encode().hex()]}, sender="relayer-b")
    assert [e["type"] for e in events] == ["packet_verified"]


# --- lanes ----------------------------------------------------------------------------------------------


def test_rate_limit_refills_with_block_time() -> None:
    h = RelayHarness(limits={"kWh": {"capacity": 6_000, "refill_per_s": 100}})
    p1, p2 = h.send(amount_wh=5_000), h.send(amount_wh=2_000)
    h.verify(p1)  # 1,000 Wh left
    args = h.verify_args(p2)
    with pytest.raises(RateLimitError):
        h.submit("packet.verify", args)
    h.net.advance(9_999)  # 999.9 Wh refilled: 1,999 whole Wh, still one short
    with pytest.raises(RateLimitError):
        h.submit("packet.verify", args)
    h.net.advance(1)
    h.submit("packet.verify", args)
    assert h.state.get_json(b"relay/buckets/dpos-park/poc-park/lane-0/kWh") == {"milli": 0,
                                                                               "last_ms": h.net.now_ms}


def test_rate_limit_fractions_are_not_lost_between_blocks() -> None:
    # 1 packet/s, a packet every 600 ms: each take leaves a fraction of a token. Whole-token division
    # per take (last_ms := now) would drop 0.6 token each time and refuse the third packet.
    h = RelayHarness(limits={"*": {"capacity": 2, "refill_per_s": 1}})
    h.feeds[DPOS].state.set_json(b"reputation/alice", {"score": 1, "model": "m", "height": 1})
    sends = [h.net.send(DPOS, "alice", dst_chain=POC, lane=LANE, kind="reputation", receiver="bob", subject="alice")
             for _ in range(4)]
    for p in sends[:3]:
        h.verify(p)  # 2 -> 1, then 1.6 -> 0.6, then 1.2 -> 0.2 tokens
        h.net.advance(600)
    h.net.advance(-600 + 199)  # 0.2 + 0.199 < 1: still refused
    args = h.verify_args(sends[3])
    with pytest.raises(RateLimitError):
        h.submit("packet.verify", args)
    h.net.advance(601)  # 0.2 + 0.8 = 1
    h.submit("packet.verify", args)


def test_pause_stops_verification_not_confirmation(h: RelayHarness) -> None:
    p, q = h.send(), h.send()
    h.verify(p)
    h.deliver(p)
    ev = h.govern("lane.pause", {"src": DPOS, "dst": POC, "lane": LANE})
    assert ev[0]["type"] == "lane_paused"
    with pytest.raises(LaneError):
        h.verify(q)
    h.confirm(p)  # in-flight packets still confirm (and could refund)
    h.settle(p)
    h.govern("lane.resume", {"src": DPOS, "dst": POC, "lane": LANE})
    h.verify(q)
    # the other direction was never paused
    assert lane(h, POC, DPOS)["paused"] is False


def test_set_limits_and_open_by_governance(h: RelayHarness) -> None:
    h.govern("lane.set_limits", {"src": DPOS, "dst": POC, "lane": LANE,
                                 "limits": {"kWh": {"capacity": 100, "refill_per_s": 1}}})
    with pytest.raises(RateLimitError):
        h.verify(h.send(amount_wh=101))
    ev = h.govern("lane.open", {"src": DPOS, "dst": POC, "lane": "lane-7", "limits": {}})
    assert ev[0]["type"] == "lane_opened"
    assert h.state.get_json(b"relay/chain_lanes/poc-park") == [
        ["dpos-park", "poc-park", "lane-0"], ["dpos-park", "poc-park", "lane-7"], ["poc-park", "dpos-park", "lane-0"]]


def test_governance_with_more_than_two_thirds_passes(h: RelayHarness) -> None:
    ev = h.govern("lane.pause", {"src": DPOS, "dst": POC, "lane": LANE}, indices=(1, 2, 3))  # 5 of 6
    assert ev[0]["paused"] is True
    ev = h.govern("lane.resume", {"src": DPOS, "dst": POC, "lane": LANE}, indices=(0, 2, 3))  # 5 of 6
    assert ev[0]["paused"] is False
    assert h.state.get_int(b"relay/governance/nonce") == 2


# --- light clients ---------------------------------------------------------------------------------------


def _evidence(h: RelayHarness, chain: str) -> dict[str, Any]:
    height = h.update(chain)
    feed = h.feeds[chain]
    a = SingleSignerHeader(chain, height, h.net.now_ms, feed.trees[height].root).signed(feed.key)
    b = SingleSignerHeader(chain, height, h.net.now_ms, b"\x42" * 32).signed(feed.key)
    return {"chain_id": chain, "header_a": a.encode().hex(), "header_b": b.encode().hex()}


def test_misbehaviour_freezes_and_pauses_every_lane_of_the_chain(h: RelayHarness) -> None:
    p = h.send(timeout_timestamp_ms=h.net.now_ms + 30 * MINUTE)
    h.verify(p)
    events = h.submit("client.misbehaviour", _evidence(h, DPOS))
    frozen = events[0]
    assert frozen["type"] == "client_frozen" and frozen["client_id"] == "single-0"
    assert sorted(frozen["paused_lanes"]) == ["dpos-park/poc-park/lane-0", "poc-park/dpos-park/lane-0"]
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms)["status"] == "frozen"
    for src, dst in ((DPOS, POC), (POC, DPOS)):
        assert lane(h, src, dst)["paused"] is True
    # the packet verified from the frozen chain is suspended (SPEC §8.8): no relay block from the freeze on proves
    # its relay/verified record, so no certificate fetched now delivers it; a plain client.create does not end it
    assert frozen["suspended"] == [f"{DPOS}/{POC}/{LANE}/{p.sequence}"]
    with pytest.raises(InvalidProofError):
        h.deliver(p)
    init = h.genesis["clients"][DPOS]["init"]
    with pytest.raises(ClientRecoveryError):
        h.govern("client.create", {"chain_id": DPOS, "client_type": "single", "init": init})
    # once recovered (after the relay's recovery delay) it is COMMITTED again, verified anew and delivered once
    h.net.advance(11 * MINUTE + 1)
    h.govern("client.recover", {"chain_id": DPOS, "client_type": "single", "init": init,
                                "packets": [encode_packet(p).hex()]})
    h.roundtrip(p)
    # a new client with a new id replaces the (recovered) one; governance reopens the lanes
    ev = h.govern("client.create", {"chain_id": DPOS, "client_type": "single", "init": init})
    assert ev[0]["client_id"] == "single-3" and ev[0]["replaced"] == "single-2"
    assert h.state.get(b"relay/client_state/single-0") is not None  # the frozen client's state is kept
    for src, dst in ((DPOS, POC), (POC, DPOS)):
        h.govern("lane.resume", {"src": src, "dst": dst, "lane": LANE})
    h.roundtrip(h.send())
    h.net.check()


def test_a_conflicting_header_in_an_update_freezes_and_the_freeze_persists(h: RelayHarness) -> None:
    height = h.update(DPOS)
    other = SingleSignerHeader(DPOS, height, h.net.now_ms, b"\x42" * 32).signed(h.feeds[DPOS].key)
    events = h.submit("client.update", {"chain_id": DPOS, "headers": [other.encode().hex()]})
    assert events[0]["type"] == "client_frozen"
    h.sm.router.drop_cache()  # from state alone
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms)["status"] == "frozen"


def test_client_with_finality_depth_proves_once_final() -> None:
    h = RelayHarness(finality_depth=2)
    p = h.send()
    args = h.verify_args(p)
    h.update(DPOS)
    h.update(DPOS)
    status = h.sm.client_status(h.state, DPOS, h.net.now_ms)
    assert (status["latest_height"], status["final_height"]) == (3, 1)
    h.submit("packet.verify", args)


# --- accounts ---------------------------------------------------------------------------------------------


def test_anyone_can_register_and_relay(h: RelayHarness) -> None:
    key = fixed_signer("newcomer")
    h.submit("bond.transfer", {"to": "newcomer", "amount": 1_000})  # an operator funds the newcomer's bond
    reg = Tx.signed(key, RELAY, "newcomer", 0, "account.register", {"pubkey": key.pubkey.hex()})
    assert h.sm.execute_tx(h.state, reg, h.ctx()) == [{"type": "account_registered", "name": "newcomer"},
                                                      {"type": "bond_locked", "account": "newcomer", "amount": 1_000}]
    h.keys["newcomer"] = key
    p = h.send()
    h.submit("packet.verify", h.verify_args(p), sender="newcomer")
    # registering someone else's name with your key, or re-registering, is refused
    assert h.state.get_json(b"accounts/newcomer")["nonce"] == 2


def test_commitment_path_is_the_bridges(h: RelayHarness) -> None:
    p = h.send()
    assert h.feeds[DPOS].state.get(commitment_path(p.dst_chain, p.lane, p.sequence)) is not None


@pytest.mark.parametrize("prune", [True, False])
def test_the_outcome_replaces_the_verified_record_unless_genesis_keeps_both(prune: bool) -> None:
    """Genesis ``prune_verified`` (default true, SPEC §6.6): a chain made before it keeps both records, so replaying
    its blocks gives the same states; either way the packet is done for phase 2 and confirmed once."""
    h = RelayHarness(prune_verified=prune)
    p = h.send(amount_wh=1_000)
    h.verify(p)
    h.deliver(p)
    h.confirm(p)
    kept = h.state.get(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence))
    assert (kept is None) is prune
    assert h.sm.packet_state(h.state, encode_packet(p)) == "acked"
    with pytest.raises(ReplayError):
        h.verify(p)
    with pytest.raises(ReplayError):
        h.confirm(p)
    assert h.settle(p)["refunded"] is False
    h.net.check()


def test_prune_verified_is_a_boolean() -> None:
    with pytest.raises(CodecError):
        RelayHarness(prune_verified="yes")  # type: ignore[arg-type]
