"""Charging rights on the Ethereum park, on a real anvil (issue 12 rules; chains/ethereum/SPEC.md §E2.6).

ERC-721 home rights and voucher rights, the operator's transformer registry, admission in the rules' order of
refusal, bookings (released at a success settle or slot end, kept by a refund), the multi-hop trace (A -> B -> C
and back, unwinding hop by hop), and every rejection: a timeout after the slot start, two rights racing into one
slot, a forged payload, a voucher coming back along a wrong trace, a non-operator writing the registry. After every
scenario each right exists exactly once: live on one park, escrowed on every other park along its trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode

from protocol.codec import decode_charging_right, decode_packet, encode_charging_right
from protocol.types import ChainId, ChargingRightPayload, PacketKind
from tests.ethereum.conftest import DPOS, LANE, LANE_AC, LANE_BC, A, B, C, World
from tests.ethereum.harness import (
    Park,
    TxFailed,
    issue_right,
    lower_hex,
    recv_packet,
    register,
    right_payload,
    right_state,
    right_token_id,
    send_right,
    settle,
)
from tests.ethereum.test_contracts import (
    HOUR_MS,
    SUCCESS_ACK,
    deliver,
    error_ack,
    name_of,
    py_packet,
    settle_call,
)

pytestmark = pytest.mark.integration

TRAFO, STATION = "trafo-1", "station-1"


def slot(w: World, start_in_ms: int = 2 * HOUR_MS, length_ms: int = HOUR_MS) -> tuple[int, int]:
    start = w.evm.now_ms() + start_in_ms
    return start, start + length_ms


def registry(w: World, capacity_kw: int = 100, parks: Iterable[Park] | None = None) -> None:
    """Every park registers ``station-1`` behind ``trafo-1`` of ``capacity_kw``."""
    for park in parks if parks is not None else (w.a, w.b, w.c):
        register(w.evm, park, {TRAFO: capacity_kw}, {STATION: TRAFO})


def issue(w: World, right_id: str = "r1", power_kw: int = 50, owner: str | None = None,
          times: tuple[int, int] | None = None) -> bytes:
    start, end = times if times is not None else slot(w)
    return issue_right(w.evm, w.a, right_id, owner or w.alice.address, station=STATION, transformer=TRAFO,
                       power_kw=power_kw, slot_start_ms=start, slot_end_ms=end)


def booked(park: Park) -> int:
    return int(park.rights.functions.transformerOf(TRAFO).call()[2])


def move(w: World, src: Park, dst: Park, sender: object, payload: bytes, receiver: str, lane: str = LANE,
         timeout_ms: int | None = None) -> tuple[bytes, bytes]:
    """Phases 1 to 4 of a right from ``src`` to ``dst``: returns the packet and the ack (settled at ``src``)."""
    c = decode_charging_right(payload)
    t = timeout_ms if timeout_ms is not None else c.slot_start_ms - 60_000
    packet, _ = send_right(w.evm, src, sender, dst.chain_id, lane, payload, receiver, t)  # type: ignore[arg-type]
    ack = deliver(w, dst, packet)
    settle(w.evm, src, w.relayer, packet, ack, w.relay.confirm_ack(packet, ack), w.relay.vset)
    return packet, ack


def exactly_once(w: World, trace: list[tuple[Park, str]], live_at: Park | None) -> None:
    """The right whose ids along its trace are ``trace`` is live on ``live_at`` alone (None: nowhere, in flight or
    burned home), escrowed on every other park of the trace, and its id exists on no other park."""
    parks = {p.chain_id: p for p in (w.a, w.b, w.c)}
    on_trace = {p.chain_id for p, _ in trace}
    for park, rid in trace:
        state, _ = right_state(park, rid)
        assert state == ("live" if park is live_at else "escrowed"), (park.chain_id, rid, state)
    for chain, park in parks.items():
        if chain not in on_trace:
            for _, rid in trace:
                assert right_state(park, rid)[0] == "none", (chain, rid)


# --- issuing and the registry -------------------------------------------------------------------------------


def test_registry_and_issuing_are_for_the_operator_only(world: World) -> None:
    w = world
    rights = w.a.rights
    assert w.evm.revert_of(rights.functions.setTransformer(TRAFO, 100), w.alice) == (
        "Unauthorized", w.a.operator.address.lower(), w.alice.address.lower())
    assert name_of(w.evm.revert_of(rights.functions.setStation(STATION, TRAFO), w.alice)) == "Unauthorized"
    start, end = slot(w)
    assert name_of(w.evm.revert_of(rights.functions.issue("r1", STATION, TRAFO, 10, start, end, w.alice.address),
                                   w.alice)) == "Unauthorized"
    # the apps' packet hooks answer their router only
    assert name_of(w.evm.revert_of(rights.functions.onRecvPacket(b""), w.alice)) == "Unauthorized"
    assert name_of(w.evm.revert_of(rights.functions.onSettlePacket(b"", True), w.alice)) == "Unauthorized"
    assert rights.functions.transformerOf(TRAFO).call() == [False, 0, 0]
    registry(w, 100, [w.a])
    assert rights.functions.transformerOf(TRAFO).call() == [True, 100, 0]
    assert rights.functions.operator().call() == w.a.bridge.functions.owner().call() == w.a.operator.address


def test_issue_admits_in_the_rules_order_and_books(world: World) -> None:
    w = world
    rights, op = w.a.rights, w.a.operator
    start, end = slot(w)

    def refusal(station: str = STATION, transformer: str = TRAFO, power: int = 60, s: int = start,
                e: int = end) -> tuple[object, ...] | None:
        return w.evm.revert_of(rights.functions.issue("r9", station, transformer, power, s, e, w.alice.address), op)

    now = w.evm.now_ms()
    assert refusal(s=now - 1, e=end)[:2] == ("AdmissionRefused", "slot.started")  # type: ignore[index]
    assert refusal()[:2] == ("AdmissionRefused", "station.unknown")  # type: ignore[index]
    register(w.evm, w.a, {}, {STATION: TRAFO})
    assert refusal(transformer="trafo-2")[:2] == ("AdmissionRefused", "transformer.mismatch")  # type: ignore[index]
    assert refusal()[:2] == ("AdmissionRefused", "transformer.unknown")  # type: ignore[index]
    register(w.evm, w.a, {TRAFO: 100}, {})
    issue(w, "r1", 60, times=(start, end))
    # 60 booked over the slot: 41 more would exceed 100
    assert refusal(power=41) == ("AdmissionRefused", "capacity.exceeded", 100, 101)
    assert refusal(power=40, s=end, e=end + HOUR_MS) is None  # does not overlap: [start, end) is half-open
    issue(w, "r2", 40, times=(start + 1, end - 1))
    assert booked(w.a) == 2
    assert name_of(refusal(power=1)) == "AdmissionRefused"
    # the id is taken; ids are identifiers (a `/` is a voucher trace)
    assert name_of(w.evm.revert_of(rights.functions.issue("r1", STATION, TRAFO, 1, end, end + 1, w.alice.address),
                                   op)) == "RightExists"
    assert name_of(w.evm.revert_of(rights.functions.issue("a/b", STATION, TRAFO, 1, end, end + 1, w.alice.address),
                                   op)) == "CodecInvalid"
    payload = right_payload(w.evm, w.a, "r1")
    assert decode_charging_right(payload) == ChargingRightPayload("r1", ChainId(A), STATION, TRAFO, 60, start, end)
    assert right_state(w.a, "r1") == ("live", w.alice.address.lower())
    assert rights.functions.ownerOf(right_token_id("r1")).call() == w.alice.address
    assert rights.functions.balanceOf(w.alice.address).call() == 2


def test_erc721_transfers_between_accounts(world: World) -> None:
    w = world
    registry(w, 100, [w.a])
    issue(w, "r1")
    rights, token = w.a.rights, right_token_id("r1")
    assert name_of(w.evm.revert_of(rights.functions.transferFrom(w.alice.address, w.bob.address, token), w.bob)) == (
        "Unauthorized")
    w.evm.transact(rights.functions.approve(w.bob.address, token), w.alice)
    w.evm.transact(rights.functions.transferFrom(w.alice.address, w.bob.address, token), w.bob)
    assert right_state(w.a, "r1") == ("live", w.bob.address.lower())
    assert rights.functions.getApproved(token).call() == "0x" + "00" * 20
    assert rights.functions.supportsInterface(bytes.fromhex("80ac58cd")).call()
    assert booked(w.a) == 1  # same right, same slot: the booking stays


# --- between parks ------------------------------------------------------------------------------------------


def test_right_abroad_and_home_again(world: World) -> None:
    w = world
    registry(w)
    payload = issue(w, "r1")
    bob, alice = lower_hex(w.bob.address), lower_hex(w.alice.address)
    _, ack = move(w, w.a, w.b, w.alice, payload, bob)
    assert ack == SUCCESS_ACK
    voucher = f"{LANE}/{A}/r1"
    exactly_once(w, [(w.a, "r1"), (w.b, voucher)], w.b)
    assert right_state(w.b, voucher)[1] == bob
    # the voucher carries every field unchanged but its id; home_park stays the issuer
    vc = decode_charging_right(right_payload(w.evm, w.b, voucher))
    assert vc == ChargingRightPayload(voucher, ChainId(A), STATION, TRAFO, 50, *_times(payload))
    assert (booked(w.a), booked(w.b)) == (0, 1)  # released at home on the success settle, booked abroad

    back, ack2 = move(w, w.b, w.a, w.bob, right_payload(w.evm, w.b, voucher), alice)
    assert ack2 == SUCCESS_ACK
    exactly_once(w, [(w.a, "r1")], w.a)
    assert right_state(w.b, voucher)[0] == "none"  # burned for good once A's success ack settled
    assert right_state(w.a, "r1")[1] == alice
    assert (booked(w.a), booked(w.b)) == (1, 0)
    assert decode_packet(back).payload == right_payload(w.evm, w.b, voucher)


def _times(payload: bytes) -> tuple[int, int]:
    c = decode_charging_right(payload)
    return c.slot_start_ms, c.slot_end_ms


def test_multi_hop_trace_unwinds_hop_by_hop(world: World) -> None:
    w = world
    registry(w)
    payload = issue(w, "r1")
    bob, carol, alice = lower_hex(w.bob.address), lower_hex(w.carol.address), lower_hex(w.alice.address)
    on_b, on_c = f"{LANE}/{A}/r1", f"{LANE_BC}/{B}/{LANE}/{A}/r1"
    move(w, w.a, w.b, w.alice, payload, bob)
    _, ack = move(w, w.b, w.c, w.bob, right_payload(w.evm, w.b, on_b), carol, lane=LANE_BC)
    assert ack == SUCCESS_ACK
    exactly_once(w, [(w.a, "r1"), (w.b, on_b), (w.c, on_c)], w.c)
    assert decode_charging_right(right_payload(w.evm, w.c, on_c)).home_park == A
    assert (booked(w.a), booked(w.b), booked(w.c)) == (0, 0, 1)
    # C -> B: C burns, B unescrows (admitted again on B)
    move(w, w.c, w.b, w.carol, right_payload(w.evm, w.c, on_c), bob, lane=LANE_BC)
    exactly_once(w, [(w.a, "r1"), (w.b, on_b)], w.b)
    assert right_state(w.c, on_c)[0] == "none"
    # B -> A: home
    move(w, w.b, w.a, w.bob, right_payload(w.evm, w.b, on_b), alice)
    exactly_once(w, [(w.a, "r1")], w.a)
    assert (booked(w.a), booked(w.b), booked(w.c)) == (1, 0, 0)


def test_a_voucher_returned_along_a_wrong_trace_is_refused(world: World) -> None:
    w = world
    registry(w)
    payload = issue(w, "r1")
    move(w, w.a, w.b, w.alice, payload, lower_hex(w.bob.address))
    c = decode_charging_right(payload)
    alice = lower_hex(w.alice.address)
    t = c.slot_start_ms - 60_000

    def claim(src: str, lane: str, rid: str, seq: int = 1, **changes: Any) -> bytes:
        right = replace(c, right_id=rid, **changes)
        return py_packet(A, src=src, lane=lane, sequence=seq, kind=PacketKind.CHARGING_RIGHT, receiver=alice,
                         timeout_ms=t, payload=encode_charging_right(right))

    # r1 is escrowed towards (eth-b, lane-0): a "return" from another chain or over another lane unlocks nothing
    assert deliver(w, w.a, claim(DPOS, LANE, f"{LANE}/{A}/r1")) == error_ack("right.not_escrowed")
    assert deliver(w, w.a, claim(C, LANE_AC, f"{LANE_AC}/{A}/r1")) == error_ack("right.not_escrowed")
    assert deliver(w, w.a, claim(B, LANE, f"{LANE}/{A}/r2")) == error_ack("right.not_escrowed")  # not escrowed
    # from the right chain and lane, but not the fields escrowed: a forged right payload
    assert deliver(w, w.a, claim(B, LANE, f"{LANE}/{A}/r1", seq=2, power_kw=1)) == error_ack("right.mismatch")
    assert deliver(w, w.a, claim(B, LANE, f"{LANE}/{A}/r1", seq=3, home_park=ChainId(B))) == error_ack(
        "right.mismatch")
    exactly_once(w, [(w.a, "r1"), (w.b, f"{LANE}/{A}/r1")], w.b)


def test_timeout_after_slot_start_is_refused_in_phase_1(world: World) -> None:
    w = world
    registry(w)
    payload = issue(w, "r1")
    start, _ = _times(payload)
    fn = w.a.bridge.functions.sendRight(B, LANE, payload, lower_hex(w.bob.address), start + 1)
    assert w.evm.revert_of(fn, w.alice) == ("TimeoutAfterSlotStart", start + 1, start)
    assert w.evm.revert_of(w.a.bridge.functions.sendRight(B, LANE, payload, lower_hex(w.bob.address), start),
                           w.alice) is None  # at the slot start is allowed
    exactly_once(w, [(w.a, "r1")], w.a)
    # a source that does not check it: the target refuses a right whose slot started before it executes
    c = decode_charging_right(payload)
    early = ChargingRightPayload("x1", ChainId(DPOS), STATION, TRAFO, 1, w.evm.now_ms() + 5_000,
                                 w.evm.now_ms() + HOUR_MS)
    pkt = py_packet(B, kind=PacketKind.CHARGING_RIGHT, receiver=lower_hex(w.bob.address),
                    timeout_ms=c.slot_start_ms, payload=encode_charging_right(early))
    cert = w.relay.verify(pkt)
    w.evm.mine_at(early.slot_start_ms // 1000 + 1)
    ack, _ = recv_packet(w.evm, w.b, w.relayer, pkt, cert, w.relay.vset)
    assert ack == error_ack("slot.started")


@pytest.fixture
def racing(world: World) -> World:
    w = world
    register(w.evm, w.a, {TRAFO: 1_000}, {STATION: TRAFO})
    register(w.evm, w.b, {TRAFO: 100}, {STATION: TRAFO})
    return w


def test_two_rights_racing_into_one_slot(racing: World) -> None:
    w = racing
    times = slot(w)
    bob = lower_hex(w.bob.address)
    p1, p2 = issue(w, "r1", 60, times=times), issue(w, "r2", 60, times=times)
    t = times[0] - 60_000
    k1, _ = send_right(w.evm, w.a, w.alice, B, LANE, p1, bob, t)
    k2, _ = send_right(w.evm, w.a, w.alice, B, LANE, p2, bob, t)
    assert (right_state(w.a, "r1")[0], right_state(w.a, "r2")[0]) == ("escrowed", "escrowed")
    a1, a2 = deliver(w, w.b, k1), deliver(w, w.b, k2)  # both verified; B admits the first only
    assert (a1, a2) == (SUCCESS_ACK, error_ack("capacity.exceeded"))
    assert int(w.b.rights.functions.bookedLoad(TRAFO, *times).call()) == 60 <= 100
    # the source refunds the refused one: live with its sender again, still booked at home
    settle(w.evm, w.a, w.relayer, k2, a2, w.relay.confirm_ack(k2, a2), w.relay.vset)
    settle(w.evm, w.a, w.relayer, k1, a1, w.relay.confirm_ack(k1, a1), w.relay.vset)
    assert right_state(w.a, "r2") == ("live", w.alice.address.lower())
    assert booked(w.a) == 1  # r1 left with success (released), r2 refunded (kept)
    exactly_once(w, [(w.a, "r1"), (w.b, f"{LANE}/{A}/r1")], w.b)
    exactly_once(w, [(w.a, "r2")], w.a)
    assert right_state(w.b, f"{LANE}/{A}/r2")[0] == "none"


def test_forged_right_payload_at_send(racing: World) -> None:
    w = racing
    payload = issue(w, "r1", 60)
    c = decode_charging_right(payload)
    bob = lower_hex(w.bob.address)
    forged = encode_charging_right(ChargingRightPayload("r1", c.home_park, c.station, c.transformer, 600,
                                                        c.slot_start_ms, c.slot_end_ms))
    t = c.slot_start_ms - 60_000
    err = w.evm.revert_of(w.a.bridge.functions.sendRight(B, LANE, forged, bob, t), w.alice)
    assert name_of(err) == "RightPayloadMismatch"
    # not canonical, not the owner's, not live
    assert name_of(w.evm.revert_of(w.a.bridge.functions.sendRight(B, LANE, payload + bytes(32), bob, t),
                                   w.alice)) == "CodecInvalid"
    assert name_of(w.evm.revert_of(w.a.bridge.functions.sendRight(B, LANE, payload, bob, t), w.bob)) == (
        "Unauthorized")
    send_right(w.evm, w.a, w.alice, B, LANE, payload, bob, t)
    assert w.evm.revert_of(w.a.bridge.functions.sendRight(B, LANE, payload, bob, t), w.alice) == (
        "RightUnavailable", right_token_id("r1"), 2)
    exactly_once(w, [(w.a, "r1")], None)  # in flight: escrowed at home, nowhere live


def test_timeout_refunds_and_keeps_the_booking(racing: World) -> None:
    w = racing
    payload = issue(w, "r1", 60)
    now_s = w.evm.latest_timestamp()
    packet, _ = send_right(w.evm, w.a, w.alice, B, LANE, payload, lower_hex(w.bob.address), (now_s + 30) * 1000)
    w.evm.mine_at(now_s + 31)
    ev = settle(w.evm, w.a, w.relayer, packet, b"", w.relay.confirm_timeout(packet), w.relay.vset)
    assert (ev["outcome"], ev["refunded"]) == (2, True)
    exactly_once(w, [(w.a, "r1")], w.a)
    assert booked(w.a) == 1


def test_returning_voucher_refund_re_mints(racing: World) -> None:
    w = racing
    payload = issue(w, "r1", 60)
    move(w, w.a, w.b, w.alice, payload, lower_hex(w.bob.address))
    voucher = f"{LANE}/{A}/r1"
    vp = right_payload(w.evm, w.b, voucher)
    now_s = w.evm.latest_timestamp()
    packet, _ = send_right(w.evm, w.b, w.bob, A, LANE, vp, lower_hex(w.alice.address), (now_s + 30) * 1000)
    assert right_state(w.b, voucher)[0] == "burning"
    # the id stays reserved while it is on its way: a second voucher of it cannot appear
    w.evm.mine_at(now_s + 31)
    settle(w.evm, w.b, w.relayer, packet, b"", w.relay.confirm_timeout(packet), w.relay.vset)
    assert right_state(w.b, voucher) == ("live", w.bob.address.lower())
    exactly_once(w, [(w.a, "r1"), (w.b, voucher)], w.b)
    assert booked(w.b) == 1


def test_receive_refusals_change_nothing_but_the_receipt(racing: World) -> None:
    w = racing
    bob = lower_hex(w.bob.address)
    t = w.evm.now_ms() + HOUR_MS
    start, end = t + HOUR_MS, t + 2 * HOUR_MS
    seq = 0

    def right(rid: str = "x1", station: str = STATION, transformer: str = TRAFO, power: int = 10) -> bytes:
        return encode_charging_right(ChargingRightPayload(rid, ChainId(DPOS), station, transformer, power, start,
                                                          end))

    def pkt(payload: bytes, receiver: str = bob) -> bytes:
        nonlocal seq
        seq += 1
        return py_packet(B, sequence=seq, kind=PacketKind.CHARGING_RIGHT, receiver=receiver, timeout_ms=t,
                         payload=payload)

    raw = ["string", "string", "string", "string", "uint64", "uint64", "uint64"]
    cases = [
        ("payload.invalid", pkt(right() + bytes(32))),
        ("payload.invalid", pkt(abi_encode(raw, ["x1", DPOS, STATION, TRAFO, 0, start, end]))),
        ("payload.invalid", pkt(abi_encode(raw, ["x1", DPOS, STATION, TRAFO, 1, end, end]))),
        ("payload.invalid", pkt(abi_encode(raw, ["x1", "Not An Id", STATION, TRAFO, 1, start, end]))),
        ("payload.invalid", pkt(abi_encode(["string", "string", "bytes", "string", "uint64", "uint64", "uint64"],
                                           ["x1", DPOS, b"st\xff", TRAFO, 1, start, end]))),
        ("receiver.invalid", pkt(right(), receiver="bob")),
        ("right.too_long", pkt(right("r" * 240))),
        ("station.unknown", pkt(right(station="station-9"))),
        ("transformer.mismatch", pkt(right(transformer="trafo-9"))),
        ("capacity.exceeded", pkt(right(power=101))),
    ]
    for code, p in cases:
        assert deliver(w, w.b, p) == error_ack(code), code
    assert booked(w.b) == 0
    assert deliver(w, w.b, pkt(right("x1"))) == SUCCESS_ACK
    assert deliver(w, w.b, pkt(right("x1"))) == error_ack("right.exists")  # one id, one token
    register(w.evm, w.b, {}, {"station-2": "trafo-2"})
    assert deliver(w, w.b, pkt(right("x2", station="station-2", transformer="trafo-2"))) == error_ack(
        "transformer.unknown")
    assert booked(w.b) == 1
    assert right_state(w.b, f"{LANE}/{DPOS}/x1") == ("live", bob)
    for refused in ("x2", "r" * 240):  # refusals minted nothing
        assert right_state(w.b, f"{LANE}/{DPOS}/{refused}")[0] == "none"


def test_ended_slots_release_their_bookings(racing: World) -> None:
    w = racing
    now = w.evm.now_ms()
    issue(w, "r1", 60, times=(now + 60_000, now + 120_000))
    issue(w, "r2", 60, times=(now + 200_000, now + 300_000))
    assert booked(w.a) == 2
    w.evm.mine_at((now + 150_000) // 1000)
    issue(w, "r3", 60, times=(now + 400_000, now + 500_000))  # the list is written: the ended r1 is dropped
    assert booked(w.a) == 2
    tags = w.a.rights.functions.bookingsOf(TRAFO).call()[3]
    assert sorted(tags) == sorted(right_token_id(r) & (2**64 - 1) for r in ("r2", "r3"))
    for rid in ("r1", "r2", "r3"):  # a released booking is not a gone right
        exactly_once(w, [(w.a, rid)], w.a)


def test_settling_a_right_twice_is_a_replay(racing: World) -> None:
    w = racing
    payload = issue(w, "r1", 60)
    packet, ack = move(w, w.a, w.b, w.alice, payload, lower_hex(w.bob.address))
    assert name_of(w.evm.revert_of(settle_call(w, w.a, packet, ack, w.relay.confirm_ack(packet, ack)),
                                   w.relayer)) == "PacketReplay"
    with pytest.raises(TxFailed):
        w.evm.transact(settle_call(w, w.a, packet, ack, w.relay.confirm_ack(packet, ack)), w.relayer)
    exactly_once(w, [(w.a, "r1"), (w.b, f"{LANE}/{A}/r1")], w.b)
