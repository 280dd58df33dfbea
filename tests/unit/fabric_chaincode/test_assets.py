"""Charging rights, the transformer registry and reputation in the bridge chaincode (issue 12 rules), between Fabric
parks on fake ledgers with real relay certificates. Every scenario ends with each right existing exactly once
(:func:`tests.unit.fabric_chaincode.parks.check_rights`, also checked between phases)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chains.fabric.chaincode.assets import STANDING_MODEL
from chains.fabric.consts import PEER_ORGS
from protocol.codec import encode_charging_right, encode_reputation, packet_commitment
from protocol.types import ChainId, ChargingRightPayload, Packet, PacketKind, ReputationPayload
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode.parks import (
    ALICE,
    ALICE_ID,
    BOB,
    BOB_ID,
    LANE,
    LANE2,
    OPERATOR,
    OPERATOR_ID,
    RELAYER,
    SALES_BOSS,
    A,
    B,
    C,
    Parks,
    make_parks,
)


@pytest.fixture
def net() -> Parks:
    n = make_parks()
    n.parks[A].skew_ms = {PEER_ORGS[0]: 0, PEER_ORGS[1]: 250}  # the clock never reaches the write sets
    return n


def bookings(net: Parks, chain: str, transformer: str = "t1") -> dict[str, int]:
    return {b["right_id"]: b["power_kw"] for b in net.query(chain, "transformer", transformer)["bookings"]}


def ack_code(event: dict[str, Any]) -> str:
    return str(event["code"])


# --- the registry -------------------------------------------------------------------------------------------


def test_the_registry_is_written_by_the_park_operator_msp_identity_only(net: Parks) -> None:
    right = {"right_id": "r1", "station": "s1", "transformer": "t1", "power_kw": 10,
             "slot_start_ms": net.now_ms + MINUTE, "slot_end_ms": net.now_ms + 2 * MINUTE, "owner": ALICE_ID}
    writes: list[tuple[str, dict[str, Any]]] = [
        ("set_transformer", {"name": "t3", "capacity_kw": 10}),
        ("set_station", {"name": "s9", "transformer": "t3"}),
        ("issue_right", right),
        ("set_standing", {"account": ALICE_ID, "certified": True, "score": 9_000}),
        ("certify", {"account": ALICE_ID, "src_chain": B, "subject": "x", "model": "m"}),
    ]
    for fn, args in writes:
        # a sales-company identity (even one named like the operator), and an operator-MSP user who is not it
        for who in (ALICE, SALES_BOSS, BOB):
            assert net.refused(A, who, fn, args) == "auth.denied", (fn, who[0])
    for fn, args in writes[:4]:
        net.ok(A, OPERATOR, fn, args)
    shown = net.query(A, "transformer", "t3")
    assert shown == {"name": "t3", "transformer": {"capacity_kw": 10}, "stations": ["s9"], "bookings": []}
    slot = {"slot_start_ms": right["slot_start_ms"], "slot_end_ms": right["slot_end_ms"]}
    assert net.query(A, "transformer", "t1")["bookings"] == [{"right_id": "r1", "power_kw": 10, **slot}]
    assert net.query(A, "right", "r1")["right"]["owner"] == ALICE_ID
    assert [r["right_id"] for r in net.query(A, "rights", ALICE_ID)["rights"]] == ["r1"]
    assert net.query(A, "rights", BOB_ID)["rights"] == []


def test_a_rights_operator_outside_the_operator_msp_is_refused_at_genesis() -> None:
    from tests.unit.fabric_chaincode.parks import genesis
    n = Parks()
    n.add(A)
    g = genesis(A, n.relay, [B])
    g["bridge"]["rights_operator"] = "SalesMSP:operator"
    assert n.refused(A, OPERATOR, "init_bridge", g) == "codec.invalid"


def test_without_a_named_rights_operator_any_identity_of_the_operator_msp_writes_the_registry() -> None:
    from tests.unit.fabric_chaincode.parks import genesis
    n = Parks()
    n.add(A)
    g = genesis(A, n.relay, [B])
    del g["bridge"]["rights_operator"]
    n.ok(A, OPERATOR, "init_bridge", g)
    for who in (ALICE, SALES_BOSS):
        assert n.refused(A, who, "set_transformer", {"name": "t1", "capacity_kw": 1}) == "auth.denied"
    n.ok(A, BOB, "set_transformer", {"name": "t1", "capacity_kw": 1})


@pytest.mark.parametrize(("over", "refusal"), [
    ({"start_in": 0}, "slot.started"),
    ({"station": "s-nowhere"}, "station.unknown"),
    ({"station": "s3"}, "transformer.mismatch"),  # s3 is behind t2
    ({"station": "s-orphan", "transformer": "t9"}, "transformer.unknown"),
    ({"power_kw": 101}, "capacity.exceeded"),
])
def test_issuing_goes_through_admission_in_order(net: Parks, over: dict[str, Any], refusal: str) -> None:
    r = net.submit(A, OPERATOR, "issue_right", {
        "right_id": "r1", "station": over.get("station", "s1"), "transformer": over.get("transformer", "t1"),
        "power_kw": over.get("power_kw", 10), "slot_start_ms": net.now_ms + over.get("start_in", MINUTE),
        "slot_end_ms": net.now_ms + 2 * MINUTE, "owner": ALICE_ID})
    assert r.code == "asset.invalid" and f"got {refusal!r}" in r.message
    assert net.query(A, "right", "r1")["right"] is None


def test_capacity_sums_overlapping_slots_only(net: Parks) -> None:
    net.issue(A, "r1", power_kw=60, start_in=MINUTE, length=10 * MINUTE)
    net.issue(A, "r2", power_kw=40, start_in=5 * MINUTE, length=10 * MINUTE)  # 60 + 40 = 100: admitted
    assert net.submit(A, OPERATOR, "issue_right", {
        "right_id": "r3", "station": "s2", "transformer": "t1", "power_kw": 1, "slot_start_ms": net.now_ms + 6 * MINUTE,
        "slot_end_ms": net.now_ms + 7 * MINUTE, "owner": ALICE_ID}).code == "asset.invalid"  # overlaps both
    net.issue(A, "r3", power_kw=40, start_in=2 * MINUTE, length=MINUTE)  # overlaps r1 only: 100
    net.issue(A, "r4", power_kw=60, start_in=11 * MINUTE, length=MINUTE)  # r1 ended: overlaps r2 only
    net.issue(A, "r5", power_kw=100, start_in=15 * MINUTE, length=MINUTE)  # r2 ends exactly when it starts
    net.check()


# --- rights across parks ----------------------------------------------------------------------------------


def test_a_right_travels_three_parks_and_unwinds_hop_by_hop(net: Parks) -> None:
    net.issue(A, "r1", power_kw=40)
    _, ack = net.move(A, B, "r1")
    assert ack["success"]
    v_b = f"{LANE}/{A}/r1"
    assert net.right(B, v_b)["owner"] == BOB_ID and net.right(A, "r1")["owner"] == "@escrow"
    assert bookings(net, B) == {v_b: 40} and bookings(net, A) == {}  # released at A once it left with success

    _, ack = net.move(B, C, v_b, receiver=ALICE_ID, who=BOB)
    v_c = f"{LANE}/{B}/{v_b}"
    assert ack["success"] and net.right(C, v_c)["owner"] == ALICE_ID and net.right(C, v_c)["home_park"] == A
    assert net.right(B, v_b)["escrowed_to"]["chain"] == C and bookings(net, B) == {}

    _, ack = net.move(C, B, v_c, receiver=BOB_ID)  # returning: C burns, B unescrows
    assert ack["success"] and net.right(C, v_c) is None and net.query(C, "right", v_c)["burned"] is None
    assert net.right(B, v_b)["owner"] == BOB_ID and "escrowed_to" not in net.right(B, v_b)
    assert bookings(net, B) == {v_b: 40} and bookings(net, C) == {}

    _, ack = net.move(B, A, v_b, receiver=ALICE_ID, who=BOB)
    assert ack["success"] and net.right(B, v_b) is None
    assert net.right(A, "r1")["owner"] == ALICE_ID and bookings(net, A) == {"r1": 40}


def test_a_refusal_abroad_is_an_error_ack_and_the_right_is_refunded_at_home(net: Parks) -> None:
    net.issue(B, "big", power_kw=80)  # B's own right loads its t1
    net.issue(A, "r1", power_kw=40)
    _, ack = net.move(A, B, "r1")
    assert ack_code(ack) == "capacity.exceeded"
    assert net.right(A, "r1")["owner"] == ALICE_ID and "escrowed_to" not in net.right(A, "r1")
    assert bookings(net, A) == {"r1": 40}  # a refund keeps the booking
    assert net.right(B, f"{LANE}/{A}/r1") is None and bookings(net, B) == {"big": 80}


def test_a_voucher_refused_on_its_way_home_is_reminted_with_its_booking(net: Parks) -> None:
    net.issue(A, "r1", power_kw=40)
    net.move(A, B, "r1")
    net.issue(A, "fill", power_kw=70)  # r1's booking at home was released when it left: its slot filled up
    v_b = f"{LANE}/{A}/r1"
    _, ack = net.move(B, A, v_b, receiver=ALICE_ID, who=BOB)
    assert ack_code(ack) == "capacity.exceeded"
    assert net.right(B, v_b)["owner"] == BOB_ID and net.query(B, "right", v_b)["burned"] is None
    assert bookings(net, B) == {v_b: 40} and net.right(A, "r1")["owner"] == "@escrow"


@pytest.mark.parametrize(("setup", "refusal"), [
    ({A: {"s4": "t1"}}, "station.unknown"),
    ({A: {"s4": "t1"}, B: {"s4": "t2"}}, "transformer.mismatch"),
    ({A: {"s4": "t9"}, B: {"s4": "t9"}}, "transformer.unknown"),
])
def test_admission_refusals_on_receipt_are_error_acks(net: Parks, setup: dict[str, dict[str, str]],
                                                      refusal: str) -> None:
    for chain, stations in setup.items():
        for name, transformer in stations.items():
            net.ok(chain, OPERATOR, "set_station", {"name": name, "transformer": transformer})
    net.ok(A, OPERATOR, "set_transformer", {"name": "t9", "capacity_kw": 100})
    transformer = setup[A]["s4"]
    net.issue(A, "r1", station="s4", transformer=transformer)
    _, ack = net.move(A, B, "r1")
    assert ack_code(ack) == refusal
    assert net.right(A, "r1")["owner"] == ALICE_ID


def test_phase_1_refuses_a_right_whose_timeout_is_after_its_slot_start(net: Parks) -> None:
    args = net.issue(A, "r1", start_in=5 * MINUTE)
    send = {"dst_chain": B, "lane": LANE, "kind": "charging_right", "right_id": "r1", "receiver": BOB_ID}
    assert net.refused(A, ALICE, "send", {**send, "timeout_timestamp_ms": args["slot_start_ms"] + 1}
                       ) == "packet.timeout"
    assert net.refused(A, BOB, "send", {**send, "timeout_timestamp_ms": args["slot_start_ms"]}) == "auth.denied"
    net.send_right(A, B, "r1", timeout_timestamp_ms=args["slot_start_ms"])  # at the slot start: accepted


def test_a_right_timed_out_abroad_is_refunded_at_home_and_keeps_its_booking(net: Parks) -> None:
    net.issue(A, "r1", power_kw=30)
    packet = net.send_right(A, B, "r1", timeout_timestamp_ms=net.now_ms + MINUTE)
    net.check()
    net.advance(MINUTE)
    assert net.refused(B, RELAYER, "recv", net.recv_args(packet, net.verify(packet))) == "packet.timeout"
    event = net.settle(packet, net.confirm_timeout(packet), None)
    assert event["refunded"] and event["outcome"] == "timed_out"
    assert net.right(A, "r1")["owner"] == ALICE_ID and bookings(net, A) == {"r1": 30}
    net.check()


def test_two_rights_racing_into_one_slot_never_overload_the_transformer(net: Parks) -> None:
    """Both recv endorsed on the same state admit; MVCC lets one commit; the loser, endorsed again on the new
    state, is refused with an error ack and refunded: never both booked."""
    net.ok(A, OPERATOR, "set_transformer", {"name": "t1", "capacity_kw": 200})  # room for both at home
    net.issue(A, "r1", power_kw=60)
    net.issue(A, "r2", power_kw=60, station="s2")
    p1, p2 = net.send_right(A, B, "r1"), net.send_right(A, B, "r2")
    a1, a2 = (json.dumps(net.recv_args(p, net.verify(p))).encode() for p in (p1, p2))
    park = net.parks[B]
    e1 = park.endorse(RELAYER, "recv", a1, now_ms=net.now_ms)
    e2 = park.endorse(RELAYER, "recv", a2, now_ms=net.now_ms)
    assert json.loads(e1.response.payload)[0]["success"] and json.loads(e2.response.payload)[0]["success"]
    assert park.ledger.commit(e1) and not park.ledger.commit(e2)  # bookings/t1 was read by both
    net.check()
    (ack,) = net.ok(B, RELAYER, "recv", json.loads(a2))  # the relayer's retry
    assert ack_code(ack) == "capacity.exceeded"
    for p in (p1, p2):
        net.settle(p, *net.confirm(p))
    assert bookings(net, B) == {f"{LANE}/{A}/r1": 60} and net.right(A, "r2")["owner"] == ALICE_ID
    net.check()


def test_a_right_coming_back_before_its_departure_settled_keeps_its_new_booking(net: Parks) -> None:
    net.issue(A, "r1", power_kw=60)
    out = net.send_right(A, B, "r1")
    assert net.recv(out, net.verify(out))["success"]
    back = net.send_right(B, A, f"{LANE}/{A}/r1", receiver=ALICE_ID, who=BOB)
    assert net.recv(back, net.verify(back))["success"]  # A admits it again: its own old booking is not counted
    net.check()
    again = net.send_right(A, B, "r1")  # and it leaves again at once, before anything settled
    net.settle(out, *net.confirm(out))  # the first departure's success releases nothing: the right is in flight
    assert bookings(net, A) == {"r1": 60}
    net.settle(back, *net.confirm(back))
    assert bookings(net, B) == {}
    net.check()
    assert net.deliver(again)["success"]
    assert bookings(net, A) == {} and bookings(net, B) == {f"{LANE}/{A}/r1": 60}


def test_bookings_are_released_when_their_slot_ends(net: Parks) -> None:
    net.issue(A, "r1", power_kw=100, start_in=MINUTE, length=MINUTE)
    assert bookings(net, A) == {"r1": 100}
    net.advance(2 * MINUTE)
    assert bookings(net, A) == {}  # shown without it
    net.issue(A, "r2", power_kw=100, start_in=MINUTE)  # and the list written without it
    assert [b["right_id"] for b in json.loads(net.raw(A, b"bookings/t1") or b"[]")] == ["r2"]


def test_the_owner_transfers_a_right_locally(net: Parks) -> None:
    net.issue(A, "r1")
    assert net.refused(A, BOB, "transfer_right", {"right_id": "r1", "to": BOB_ID}) == "auth.denied"
    assert net.refused(A, ALICE, "transfer_right", {"right_id": "r1", "to": "SalesMSP:nobody"}) == "asset.invalid"
    net.ok(A, ALICE, "transfer_right", {"right_id": "r1", "to": BOB_ID})
    assert net.right(A, "r1")["owner"] == BOB_ID
    net.check()


# --- forged and misrouted rights --------------------------------------------------------------------------


def _forged(net: Parks, src: str, dst: str, right: ChargingRightPayload, *, lane: str = LANE,
            sequence: int = 900) -> dict[str, Any]:
    packet = Packet(ChainId(src), ChainId(dst), lane, sequence, PacketKind.CHARGING_RIGHT,
                    encode_charging_right(right), "SalesMSP:mallory", ALICE_ID, net.now_ms + 10 * MINUTE)
    return net.recv(packet, net.certify_forged(packet))


def _payload(net: Parks, right_id: str, **over: Any) -> ChargingRightPayload:
    rec = {**net.right(A, "r1"), **over}
    return ChargingRightPayload(right_id, rec["home_park"], rec["station"], rec["transformer"], rec["power_kw"],
                                rec["slot_start_ms"], rec["slot_end_ms"])


def test_forged_and_misrouted_rights_are_error_acks_and_the_right_stays_once(net: Parks) -> None:
    net.issue(A, "r1", power_kw=40)
    net.move(A, B, "r1")
    v_b = f"{LANE}/{A}/r1"
    cases = [
        # coming home with other fields than the escrowed right
        (B, _payload(net, v_b, power_kw=1), LANE, "right.mismatch"),
        (B, _payload(net, v_b, slot_end_ms=net.right(A, "r1")["slot_end_ms"] + 1), LANE, "right.mismatch"),
        # a voucher returned along a wrong trace: from another chain, or over another lane
        (C, _payload(net, v_b), LANE, "right.not_escrowed"),
        (B, _payload(net, f"{LANE2}/{A}/r1"), LANE2, "right.not_escrowed"),
        (B, _payload(net, f"{LANE}/{A}/r-never-issued"), LANE, "right.not_escrowed"),
        # leaving rights whose trace disagrees with their home park, or does not parse
        (C, _payload(net, "r7"), LANE, "right.mismatch"),  # a base id from park-c is park-c's, not park-a's
        (C, _payload(net, f"{LANE}/{B}/x"), LANE, "right.mismatch"),
        (C, _payload(net, "lane-0/park-a"), LANE, "payload.invalid"),
        (C, _payload(net, "lane-0//r1"), LANE, "payload.invalid"),
        # already held
        (C, _payload(net, "r1", home_park=C), LANE, None),
    ]
    seq = 900
    for src, right, lane, code in cases:
        seq += 1
        ack = _forged(net, src, A, right, lane=lane, sequence=seq)
        if code is None:  # the first mint of lane-0/park-c/r1: then the same again is right.exists
            assert ack["success"]
            assert _forged(net, src, A, right, lane=lane, sequence=seq + 500)["code"] == "right.exists"
            continue
        assert ack_code(ack) == code, (right.right_id, code)
    assert net.right(A, "r1")["owner"] == "@escrow" and net.right(B, v_b)["owner"] == BOB_ID


def test_a_forged_right_whose_slot_started_or_whose_trace_is_too_long_is_refused(net: Parks) -> None:
    net.issue(A, "r1")
    started = _payload(net, "r9", home_park=B, slot_start_ms=net.now_ms)
    assert ack_code(_forged(net, B, A, started)) == "slot.started"
    hops = f"{LANE}/{C}/" * 18
    long_id = hops + "r1"
    assert len(long_id.encode()) <= 256 < len(f"{LANE}/{B}/{long_id}".encode())
    assert ack_code(_forged(net, B, A, _payload(net, long_id, home_park=C), sequence=901)) == "right.too_long"


# --- reputation -----------------------------------------------------------------------------------------


def _standing(net: Parks, chain: str, account: str, score: int, certified: bool = True) -> None:
    net.ok(chain, OPERATOR, "set_standing", {"account": account, "certified": certified, "score": score})


def _send_reputation(net: Parks, subject: str, src: str = A, dst: str = B, **kw: Any) -> Packet:
    return net.send(src, BOB, dst_chain=dst, kind="reputation", subject=subject, receiver=OPERATOR_ID, **kw)


def test_reputation_is_read_from_the_standing_record_and_imported_once_per_newer_source_height(net: Parks) -> None:
    assert net.refused(A, BOB, "send", {"dst_chain": B, "lane": LANE, "kind": "reputation", "subject": ALICE_ID,
                                        "receiver": OPERATOR_ID, "timeout_timestamp_ms": net.now_ms + MINUTE}
                       ) == "asset.invalid"  # no standing yet
    _standing(net, A, ALICE_ID, 8_200)
    assert net.refused(A, BOB, "send", {"dst_chain": B, "lane": LANE, "kind": "reputation", "subject": ALICE_ID,
                                        "score": 10_000, "receiver": OPERATOR_ID,
                                        "timeout_timestamp_ms": net.now_ms + MINUTE}) == "codec.invalid"
    p1 = _send_reputation(net, ALICE_ID)
    assert net.deliver(p1)["success"]
    key = (A, ALICE_ID, STANDING_MODEL)
    assert net.query(B, "imported_reputation", *key)["imported"] == {
        "src_chain": A, "subject": ALICE_ID, "model": STANDING_MODEL, "score": 8_200, "source_height": 1}
    assert ack_code(net.deliver(_send_reputation(net, ALICE_ID))) == "reputation.stale"  # same revision again

    _standing(net, A, ALICE_ID, 7_000)
    older = _send_reputation(net, ALICE_ID)  # revision 2
    _standing(net, A, ALICE_ID, 9_100)
    newer = _send_reputation(net, ALICE_ID)  # revision 3
    assert net.deliver(newer)["success"]
    assert ack_code(net.deliver(older)) == "reputation.stale"  # an older attestation never replaces a newer one
    assert net.query(B, "imported_reputation", *key)["imported"]["score"] == 9_100

    _standing(net, A, BOB_ID, 9_000, certified=False)
    assert net.refused(A, BOB, "send", {"dst_chain": B, "lane": LANE, "kind": "reputation", "subject": BOB_ID,
                                        "receiver": OPERATOR_ID, "timeout_timestamp_ms": net.now_ms + MINUTE}
                       ) == "asset.invalid"  # not a certified participant


def test_a_reputation_packet_claiming_a_score_the_source_does_not_hold_is_refused(net: Parks) -> None:
    _standing(net, A, ALICE_ID, 4_000)
    real = _send_reputation(net, ALICE_ID)
    cert = net.verify(real)
    forged = Packet(real.src_chain, real.dst_chain, real.lane, real.sequence, real.kind,
                    encode_reputation(ReputationPayload(ALICE_ID, 10_000, STANDING_MODEL, 1)), real.sender,
                    real.receiver, real.timeout_timestamp_ms)
    assert packet_commitment(forged) != packet_commitment(real)
    assert net.refused(B, RELAYER, "recv", net.recv_args(forged, cert)) == "proof.invalid"
    out_of_range = Packet(ChainId(A), ChainId(B), LANE, 77, PacketKind.REPUTATION,
                          encode_reputation(ReputationPayload(ALICE_ID, 10_001, STANDING_MODEL, 9)), "x", OPERATOR_ID,
                          net.now_ms + MINUTE)
    assert ack_code(net.recv(out_of_range, net.certify_forged(out_of_range))) == "payload.invalid"
    nobody = Packet(ChainId(A), ChainId(B), LANE, 78, PacketKind.REPUTATION,
                    encode_reputation(ReputationPayload(ALICE_ID, 5_000, STANDING_MODEL, 9)), "x", "nobody",
                    net.now_ms + MINUTE)
    assert ack_code(net.recv(nobody, net.certify_forged(nobody))) == "receiver.unknown"  # records nothing:
    assert net.recv(real, cert)["success"]
    assert net.query(B, "imported_reputation", A, ALICE_ID, STANDING_MODEL)["imported"]["score"] == 4_000


def test_certify_admits_a_participant_of_another_park_by_its_imported_score() -> None:
    net = make_parks(A, B, certify_min_score=6_000)
    certify = {"account": BOB_ID, "src_chain": A, "subject": ALICE_ID, "model": STANDING_MODEL}
    assert net.refused(B, OPERATOR, "certify", certify) == "asset.invalid"  # nothing imported yet
    _standing(net, A, ALICE_ID, 5_999)
    net.deliver(_send_reputation(net, ALICE_ID))
    assert net.refused(B, OPERATOR, "certify", certify) == "asset.invalid"  # below the park's minimum
    _standing(net, A, ALICE_ID, 6_000)
    net.deliver(_send_reputation(net, ALICE_ID))
    (event,) = net.ok(B, OPERATOR, "certify", certify)
    assert event["type"] == "participant_certified" and event["score"] == 6_000
    standing = net.query(B, "standing", BOB_ID)["standing"]
    assert standing == {"certified": True, "score": 6_000, "revision": 1,
                        "basis": {"src_chain": A, "subject": ALICE_ID, "model": STANDING_MODEL, "source_height": 2}}
    # certified here, bob's standing is now this park's to attest, under its own model
    p = _send_reputation(net, BOB_ID, src=B, dst=A)
    assert net.deliver(p)["success"]
    assert net.query(A, "imported_reputation", B, BOB_ID, STANDING_MODEL)["imported"]["score"] == 6_000


def test_scan_lists_the_asset_records_an_audit_reads_and_nothing_else(net: Parks) -> None:
    net.issue(A, "r1", power_kw=40)
    packet = net.send_right(A, B, "r1")
    items = net.query(A, "scan", "rights/")["items"]
    assert list(items) == ["rights/r1"] and json.loads(items["rights/r1"])["owner"] == "@escrow"
    assert list(net.query(A, "scan", "packets/")["items"]) == [f"packets/{B}/{LANE}/{packet.sequence}"]
    r = net.parks[A].query(RELAYER, "scan", "balances/", now_ms=net.now_ms)
    assert r.code == "codec.invalid"
