"""Canonical codec (SPEC.md §2, §3): tables that malleate a valid value into each failure."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode

import protocol
from protocol import codec
from protocol.errors import CodecError
from protocol.types import (
    UINT64_MAX,
    UINT256_MAX,
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    EnergyPayload,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    ReputationPayload,
    check_id,
)

SPEC = (Path(protocol.__file__).parent / "SPEC.md").read_text(encoding="utf-8")


def valid_packet() -> Packet:
    return Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-0"), 1, PacketKind.ENERGY,
                  codec.encode_energy(EnergyPayload("kWh", 1_500)), "0xa11ce", "0xb0b", 1_700_000_600_000)


# --- packet values ------------------------------------------------------------------------------------

PACKET_INVALID: list[tuple[str, Callable[[Packet], Packet]]] = [
    ("src_empty", lambda p: replace(p, src_chain=ChainId(""))),
    ("src_uppercase", lambda p: replace(p, src_chain=ChainId("Dpos"))),
    ("src_65_chars", lambda p: replace(p, src_chain=ChainId("a" * 65))),
    ("src_trailing_newline", lambda p: replace(p, src_chain=ChainId("dpos-park\n"))),
    ("src_slash", lambda p: replace(p, src_chain=ChainId("dpos/park"))),
    ("src_leading_dot", lambda p: replace(p, src_chain=ChainId(".dpos"))),
    ("src_space", lambda p: replace(p, src_chain=ChainId("dpos park"))),
    ("src_not_str", lambda p: replace(p, src_chain=7)),  # type: ignore[arg-type]
    ("dst_empty", lambda p: replace(p, dst_chain=ChainId(""))),
    ("dst_unicode", lambda p: replace(p, dst_chain=ChainId("pöc"))),
    ("dst_equals_src", lambda p: replace(p, dst_chain=p.src_chain)),
    ("lane_empty", lambda p: replace(p, lane=LaneId(""))),
    ("lane_trailing_newline", lambda p: replace(p, lane=LaneId("lane-0\n"))),
    ("lane_65_chars", lambda p: replace(p, lane=LaneId("l" * 65))),
    ("sequence_zero", lambda p: replace(p, sequence=0)),
    ("sequence_negative", lambda p: replace(p, sequence=-1)),
    ("sequence_over_uint64", lambda p: replace(p, sequence=UINT64_MAX + 1)),
    ("sequence_bool", lambda p: replace(p, sequence=True)),
    ("sequence_float", lambda p: replace(p, sequence=1.0)),  # type: ignore[arg-type]
    ("kind_plain_int", lambda p: replace(p, kind=1)),  # type: ignore[arg-type]
    ("payload_4097_bytes", lambda p: replace(p, payload=bytes(4097))),
    ("payload_str", lambda p: replace(p, payload="kWh")),  # type: ignore[arg-type]
    ("payload_bytearray", lambda p: replace(p, payload=bytearray(3))),  # type: ignore[arg-type]
    ("sender_empty", lambda p: replace(p, sender="")),
    ("sender_257_bytes", lambda p: replace(p, sender="s" * 257)),
    ("sender_258_utf8_bytes", lambda p: replace(p, sender="é" * 129)),
    ("sender_lone_surrogate", lambda p: replace(p, sender="\ud800")),
    ("sender_not_str", lambda p: replace(p, sender=b"0xa11ce")),  # type: ignore[arg-type]
    ("receiver_empty", lambda p: replace(p, receiver="")),
    ("receiver_257_bytes", lambda p: replace(p, receiver="r" * 257)),
    ("timeout_zero", lambda p: replace(p, timeout_timestamp_ms=0)),
    ("timeout_negative", lambda p: replace(p, timeout_timestamp_ms=-5)),
    ("timeout_over_uint64", lambda p: replace(p, timeout_timestamp_ms=UINT64_MAX + 1)),
]


def test_valid_packet_round_trips() -> None:
    p = valid_packet()
    enc = codec.encode_packet(p)
    assert codec.decode_packet(enc) == p
    assert codec.packet_commitment(p) == codec.sha256(enc)
    assert len(enc) % 32 == 0


@pytest.mark.parametrize(("name", "malleate"), PACKET_INVALID, ids=[n for n, _ in PACKET_INVALID])
def test_packet_value_refused(name: str, malleate: Callable[[Packet], Packet]) -> None:
    p = malleate(valid_packet())
    with pytest.raises(CodecError):
        codec.validate_packet(p)
    with pytest.raises(CodecError):
        codec.encode_packet(p)


PACKET_EDGES: list[tuple[str, Callable[[Packet], Packet]]] = [
    ("sequence_uint64_max", lambda p: replace(p, sequence=UINT64_MAX)),
    ("timeout_one", lambda p: replace(p, timeout_timestamp_ms=1)),
    ("timeout_uint64_max", lambda p: replace(p, timeout_timestamp_ms=UINT64_MAX)),
    ("ids_64_chars", lambda p: replace(p, src_chain=ChainId("a" * 64), lane=LaneId("0" + "._-" * 21))),
    ("ids_one_char", lambda p: replace(p, src_chain=ChainId("a"), dst_chain=ChainId("b"), lane=LaneId("0"))),
    ("sender_256_utf8_bytes", lambda p: replace(p, sender="é" * 128)),
    ("payload_4096_bytes", lambda p: replace(p, payload=bytes(4096))),
    ("payload_empty", lambda p: replace(p, payload=b"")),
    ("kind_reputation", lambda p: replace(p, kind=PacketKind.REPUTATION)),
]


@pytest.mark.parametrize(("name", "malleate"), PACKET_EDGES, ids=[n for n, _ in PACKET_EDGES])
def test_packet_edge_values_accepted(name: str, malleate: Callable[[Packet], Packet]) -> None:
    p = malleate(valid_packet())
    assert codec.decode_packet(codec.encode_packet(p)) == p


def test_random_packets_round_trip() -> None:
    rng = random.Random(20240601)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789._-"
    for _ in range(200):
        src = ChainId(rng.choice("abc") + "".join(rng.choices(alphabet, k=rng.randint(0, 63))))
        dst = ChainId("z" + "".join(rng.choices(alphabet, k=rng.randint(0, 63))))
        p = Packet(src, dst, LaneId(rng.choice(["lane-0", "l", "x" * 64])), rng.randint(1, UINT64_MAX),
                   rng.choice(list(PacketKind)), rng.randbytes(rng.randint(0, 300)),
                   "".join(rng.choices("αβγ/:x0", k=rng.randint(1, 80))), "r" * rng.randint(1, 256),
                   rng.randint(1, UINT64_MAX))
        enc = codec.encode_packet(p)
        assert codec.decode_packet(enc) == p


# --- packet encodings --------------------------------------------------------------------------------


def test_every_single_byte_change_is_refused_or_canonical() -> None:
    """Flip each byte: the decoder refuses it, or it is another packet whose encoding is exactly those bytes."""
    enc = codec.encode_packet(valid_packet())
    for i in range(len(enc)):
        for delta in (0x01, 0x80):
            mutated = enc[:i] + bytes([enc[i] ^ delta]) + enc[i + 1 :]
            try:
                p = codec.decode_packet(mutated)
            except CodecError:
                continue
            assert codec.encode_packet(p) == mutated, f"byte {i} ^ {delta:#x} decoded non-canonically"


def test_every_truncation_and_extension_is_refused() -> None:
    enc = codec.encode_packet(valid_packet())
    for n in range(len(enc)):
        with pytest.raises(CodecError):
            codec.decode_packet(enc[:n])
    for extra in (b"\x00", b"\x01", bytes(31), bytes(32), bytes(64)):
        with pytest.raises(CodecError):
            codec.decode_packet(enc + extra)


def _word(data: bytes, i: int) -> int:
    return int.from_bytes(data[32 * i : 32 * i + 32], "big")


def _set_word(data: bytes, i: int, v: int) -> bytes:
    return data[: 32 * i] + v.to_bytes(32, "big") + data[32 * i + 32 :]


def _raw(**over: Any) -> bytes:
    fields: dict[str, Any] = {"src": "dpos-park", "dst": "poc-park", "lane": "lane-0", "seq": 1, "kind": 1,
                              "payload": b"", "sender": "a", "receiver": "b", "timeout": 5}
    fields.update(over)
    return abi_encode(list(codec.PACKET_ABI), list(fields.values()))


PACKET_BAD_BYTES: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("kind_high_byte", lambda e: _set_word(e, 4, (1 << 255) | 1)),
    ("kind_zero", lambda e: _set_word(e, 4, 0)),
    ("kind_four", lambda e: _set_word(e, 4, 4)),
    ("sequence_high_bits", lambda e: _set_word(e, 3, (1 << 64) | 1)),
    ("timeout_high_bits", lambda e: _set_word(e, 8, (1 << 64) | 5)),
    ("offset_shifted_by_32", lambda e: _set_word(e, 0, _word(e, 0) + 32)),
    ("offset_huge", lambda e: _set_word(e, 6, 2**255)),
    ("length_huge", lambda e: _set_word(e, _word(e, 0) // 32, 2**200)),
    ("string_padding_dirty", lambda e: e[: _word(e, 0) + 32 + 9] + b"\x01" + e[_word(e, 0) + 32 + 10 :]),
    ("invalid_utf8", lambda e: e[: _word(e, 6) + 32] + b"\xc3" + e[_word(e, 6) + 33 :]),
    ("raw_src_equals_dst", lambda e: _raw(dst="dpos-park")),
    ("raw_sequence_zero", lambda e: _raw(seq=0)),
    ("raw_timeout_zero", lambda e: _raw(timeout=0)),
    ("raw_kind_zero", lambda e: _raw(kind=0)),
    ("raw_kind_200", lambda e: _raw(kind=200)),
    ("raw_bad_src", lambda e: _raw(src="Upper")),
    ("raw_empty_sender", lambda e: _raw(sender="")),
    ("raw_empty_receiver", lambda e: _raw(receiver="")),
    ("raw_payload_4097", lambda e: _raw(payload=bytes(4097))),
    ("raw_receiver_257", lambda e: _raw(receiver="r" * 257)),
]


@pytest.mark.parametrize(("name", "malleate"), PACKET_BAD_BYTES, ids=[n for n, _ in PACKET_BAD_BYTES])
def test_packet_bytes_refused(name: str, malleate: Callable[[bytes], bytes]) -> None:
    enc = codec.encode_packet(replace(valid_packet(), sender="0xa11ce-sender"))
    assert _raw() != enc and codec.decode_packet(_raw())  # the raw builder's defaults are a valid packet
    with pytest.raises(CodecError):
        codec.decode_packet(malleate(enc))


def test_non_canonical_but_decodable_offsets_are_refused() -> None:
    """eth_abi follows offsets anywhere; only the re-encoding check catches a tail moved out of place."""
    enc = codec.encode_packet(valid_packet())
    off = _word(enc, 0)
    length = _word(enc, off // 32)
    tail = enc[off : off + 32 + 32 * ((length + 31) // 32)]
    moved = _set_word(enc + tail, 0, len(enc))
    with pytest.raises(CodecError, match="not the canonical encoding"):
        codec.decode_packet(moved)


def test_decode_accepts_bytearray_and_refuses_text() -> None:
    enc = codec.encode_packet(valid_packet())
    assert codec.decode_packet(bytearray(enc)) == valid_packet()  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected bytes"):
        codec.decode_packet(enc.hex())  # type: ignore[arg-type]


# --- payloads -----------------------------------------------------------------------------------------

E = EnergyPayload("kWh", 1_500)
C = ChargingRightPayload("right-1", ChainId("fabric-park"), "st-1", "tx-1", 11, 1_000, 2_000)
R = ReputationPayload("witness-1", 9_000, "dpos-witness-credit/v1", 77)

PAYLOAD_INVALID: list[tuple[str, Callable[[], bytes]]] = [
    ("energy_amount_zero", lambda: codec.encode_energy(replace(E, amount_wh=0))),
    ("energy_amount_negative", lambda: codec.encode_energy(replace(E, amount_wh=-1))),
    ("energy_amount_over_uint256", lambda: codec.encode_energy(replace(E, amount_wh=UINT256_MAX + 1))),
    ("energy_denom_empty", lambda: codec.encode_energy(replace(E, denom=""))),
    ("energy_denom_257", lambda: codec.encode_energy(replace(E, denom="d" * 257))),
    ("energy_denom_not_str", lambda: codec.encode_energy(replace(E, denom=b"kWh"))),  # type: ignore[arg-type]
    ("charging_right_id_empty", lambda: codec.encode_charging_right(replace(C, right_id=""))),
    ("charging_station_empty", lambda: codec.encode_charging_right(replace(C, station=""))),
    ("charging_transformer_empty", lambda: codec.encode_charging_right(replace(C, transformer=""))),
    ("charging_station_257", lambda: codec.encode_charging_right(replace(C, station="s" * 257))),
    ("charging_home_park_invalid", lambda: codec.encode_charging_right(replace(C, home_park=ChainId("Fabric")))),
    ("charging_power_zero", lambda: codec.encode_charging_right(replace(C, power_kw=0))),
    ("charging_power_over_uint64", lambda: codec.encode_charging_right(replace(C, power_kw=UINT64_MAX + 1))),
    ("charging_start_negative", lambda: codec.encode_charging_right(replace(C, slot_start_ms=-1))),
    ("charging_end_equals_start", lambda: codec.encode_charging_right(replace(C, slot_end_ms=1_000))),
    ("charging_end_before_start", lambda: codec.encode_charging_right(replace(C, slot_end_ms=999))),
    ("charging_end_over_uint64", lambda: codec.encode_charging_right(replace(C, slot_end_ms=UINT64_MAX + 1))),
    ("reputation_subject_empty", lambda: codec.encode_reputation(replace(R, subject=""))),
    ("reputation_model_empty", lambda: codec.encode_reputation(replace(R, model=""))),
    ("reputation_model_257", lambda: codec.encode_reputation(replace(R, model="m" * 257))),
    ("reputation_score_negative", lambda: codec.encode_reputation(replace(R, score=-1))),
    ("reputation_score_over_uint64", lambda: codec.encode_reputation(replace(R, score=UINT64_MAX + 1))),
    ("reputation_height_over_uint64", lambda: codec.encode_reputation(replace(R, source_height=UINT64_MAX + 1))),
]


@pytest.mark.parametrize(("name", "encode"), PAYLOAD_INVALID, ids=[n for n, _ in PAYLOAD_INVALID])
def test_payload_value_refused(name: str, encode: Callable[[], bytes]) -> None:
    with pytest.raises(CodecError):
        encode()


@pytest.mark.parametrize(("kind", "value"), [(PacketKind.ENERGY, E), (PacketKind.CHARGING_RIGHT, C),
                                             (PacketKind.REPUTATION, R)])
def test_payload_round_trip_and_strictness(kind: PacketKind, value: Any) -> None:
    encoders: dict[PacketKind, Callable[[Any], bytes]] = {
        PacketKind.ENERGY: codec.encode_energy, PacketKind.CHARGING_RIGHT: codec.encode_charging_right,
        PacketKind.REPUTATION: codec.encode_reputation,
    }
    enc = encoders[kind](value)
    assert codec.decode_payload(kind, enc) == value
    for bad in (enc + b"\x00", enc[:-1], enc + bytes(32), b""):
        with pytest.raises(CodecError):
            codec.decode_payload(kind, bad)
    for other in PacketKind:
        if other is not kind:
            with pytest.raises(CodecError):
                codec.decode_payload(other, enc)


PAYLOAD_BAD_RAW: list[tuple[str, PacketKind, bytes]] = [
    ("energy_amount_zero", PacketKind.ENERGY, abi_encode(list(codec.ENERGY_ABI), ["kWh", 0])),
    ("energy_denom_empty", PacketKind.ENERGY, abi_encode(list(codec.ENERGY_ABI), ["", 1])),
    ("charging_slot_reversed", PacketKind.CHARGING_RIGHT,
     abi_encode(list(codec.CHARGING_RIGHT_ABI), ["r", "p", "s", "t", 1, 5, 4])),
    ("charging_power_zero", PacketKind.CHARGING_RIGHT,
     abi_encode(list(codec.CHARGING_RIGHT_ABI), ["r", "p", "s", "t", 0, 4, 5])),
    ("charging_bad_home", PacketKind.CHARGING_RIGHT,
     abi_encode(list(codec.CHARGING_RIGHT_ABI), ["r", "p/q", "s", "t", 1, 4, 5])),
    ("reputation_empty_subject", PacketKind.REPUTATION, abi_encode(list(codec.REPUTATION_ABI), ["", 1, "m", 1])),
]


@pytest.mark.parametrize(("name", "kind", "data"), PAYLOAD_BAD_RAW, ids=[n for n, _, _ in PAYLOAD_BAD_RAW])
def test_payload_rule_violations_refused_when_decoding(name: str, kind: PacketKind, data: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode_payload(kind, data)


# --- acknowledgements and outcomes ------------------------------------------------------------------------

OK = Acknowledgement(AckStatus.SUCCESS, "ok", b"")

ACK_INVALID: list[tuple[str, Acknowledgement]] = [
    ("success_with_error_code", Acknowledgement(AckStatus.SUCCESS, "capacity.exceeded", b"")),
    ("error_with_ok_code", Acknowledgement(AckStatus.ERROR, "ok", b"")),
    ("error_with_empty_code", Acknowledgement(AckStatus.ERROR, "", b"")),
    ("success_with_empty_code", Acknowledgement(AckStatus.SUCCESS, "", b"")),
    ("code_257", Acknowledgement(AckStatus.ERROR, "c" * 257, b"")),
    ("result_4097", Acknowledgement(AckStatus.SUCCESS, "ok", bytes(4097))),
    ("result_str", Acknowledgement(AckStatus.SUCCESS, "ok", "x")),  # type: ignore[arg-type]
    ("status_plain_int", Acknowledgement(1, "ok", b"")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "ack"), ACK_INVALID, ids=[n for n, _ in ACK_INVALID])
def test_ack_value_refused(name: str, ack: Acknowledgement) -> None:
    with pytest.raises(CodecError):
        codec.encode_ack(ack)


def test_ack_round_trip_and_bytes() -> None:
    err = Acknowledgement(AckStatus.ERROR, "capacity.exceeded", b"\x01\x02")
    for a in (OK, err, replace(OK, result=bytes(4096))):
        enc = codec.encode_ack(a)
        assert codec.decode_ack(enc) == a
        assert codec.ack_commitment(a) == codec.sha256(enc)
    assert OK.success and not err.success
    enc = codec.encode_ack(OK)
    for bad in (_set_word(enc, 0, 0), _set_word(enc, 0, 3), enc + b"\x00", enc[:-1],
                abi_encode(list(codec.ACK_ABI), [2, "ok", b""]), abi_encode(list(codec.ACK_ABI), [1, "no", b""]),
                abi_encode(list(codec.ACK_ABI), [2, "", b""])):
        with pytest.raises(CodecError):
            codec.decode_ack(bad)


PC = codec.packet_commitment(valid_packet())
AC = codec.ack_commitment(OK)

OUTCOME_INVALID: list[tuple[str, Any, Any, Any]] = [
    ("timed_out_with_ack", PacketOutcome.TIMED_OUT, PC, AC),
    ("acked_without_ack", PacketOutcome.ACKED, PC, bytes(32)),
    ("plain_int_outcome", 1, PC, AC),
    ("packet_commit_short", PacketOutcome.ACKED, PC[:31], AC),
    ("ack_commit_long", PacketOutcome.ACKED, PC, AC + b"\x00"),
    ("packet_commit_str", PacketOutcome.ACKED, PC.hex(), AC),
]


@pytest.mark.parametrize(("name", "outcome", "pc", "ac"), OUTCOME_INVALID, ids=[n for n, *_ in OUTCOME_INVALID])
def test_outcome_value_refused(name: str, outcome: Any, pc: Any, ac: Any) -> None:
    with pytest.raises(CodecError):
        codec.encode_outcome(outcome, pc, ac)


def test_outcome_round_trip_and_bytes() -> None:
    for triple in ((PacketOutcome.ACKED, PC, AC), (PacketOutcome.TIMED_OUT, PC, bytes(32))):
        assert codec.decode_outcome(codec.encode_outcome(*triple)) == triple
    for raw in ([0, PC, AC], [3, PC, AC], [2, PC, AC], [1, PC, bytes(32)]):
        with pytest.raises(CodecError):
            codec.decode_outcome(abi_encode(list(codec.OUTCOME_ABI), raw))


# --- identifiers and the spec's tables ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "0", "lane-0", "dpos_park.v2", "a" * 64])
def test_check_id_accepts(value: str) -> None:
    assert check_id("chain", value) == value


@pytest.mark.parametrize("value", ["", "A", "-a", ".a", "_a", "a" * 65, "a\n", "\na", "a/b", "a b", "ä", "a\x00"])
def test_check_id_refuses(value: str) -> None:
    with pytest.raises(CodecError):
        check_id("chain", value)


def test_spec_abi_table_matches_codec() -> None:
    table = {
        "packet": codec.PACKET_ABI, "energy payload": codec.ENERGY_ABI,
        "charging-right payload": codec.CHARGING_RIGHT_ABI, "reputation payload": codec.REPUTATION_ABI,
        "acknowledgement": codec.ACK_ABI, "outcome record": codec.OUTCOME_ABI,
    }
    for name, abi in table.items():
        row = re.search(rf"^\| {re.escape(name)} \| `\(([^)]*)\)` \|$", SPEC, re.MULTILINE)
        assert row is not None, name
        assert tuple(t.strip() for t in row.group(1).split(",")) == abi, name
