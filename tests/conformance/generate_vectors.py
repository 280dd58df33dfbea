"""Generate the conformance vectors in ``protocol/vectors/`` from the Python implementation.

Like ``ethereum/consensus-specs``, the vectors are produced by the same code whose behaviour they pin:
every case is built by running :mod:`protocol`, and every invalid case states the error code it is
*meant* to raise — the generator stops if the implementation raises anything else, so a behaviour
change cannot slip into the files unnoticed. The format is documented in ``protocol/vectors/README.md``.

Deterministic: no clock, no randomness (keys come from fixed seeds, ed25519 signatures are
deterministic), dicts in a fixed order. Running it twice gives identical files; a test checks that the
committed files equal a fresh run.

    python -m tests.conformance.generate_vectors            # rewrite protocol/vectors/*.json
    python -m tests.conformance.generate_vectors --out DIR  # write elsewhere
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode

from protocol import codec, lane_config, paths
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
    commit_sign_bytes,
    verify_certificate,
    verify_commit,
    verify_validator_set_update,
)
from protocol.crypto import Ed25519Signer
from protocol.errors import ParkRelayError
from protocol.lifecycle import TRANSITIONS, PacketEvent, PacketState, transition
from protocol.state_commitment import (
    EMPTY_ROOT,
    Proof,
    SparseMerkleTree,
    verify_membership,
    verify_non_membership,
)
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
)

VECTORS_DIR = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
FORMAT_VERSION = 1
GENERATOR = "tests/conformance/generate_vectors.py"

TEST_KEY_WARNING = (
    "TEST-ONLY KEYS. Validator i's ed25519 seed is sha256(b'parkrelay-test-validator-<i>'), public to "
    "everyone. Never use these keys, or any set built from them, in a deployment."
)


# --- helpers ---------------------------------------------------------------------------------------


def hx(b: bytes) -> str:
    return b.hex()


def dec(n: int) -> str:
    """Integers are written as decimal strings so that no JSON reader rounds a uint64 or uint256."""
    return str(n)


def expect_error(code: str, fn: Callable[..., object], *args: Any) -> str:
    """Run ``fn(*args)`` and return ``code`` if it raised exactly that error; stop the generator otherwise."""
    try:
        fn(*args)
    except ParkRelayError as exc:
        if exc.code != code:
            raise SystemExit(f"vector generation: expected error {code}, implementation raised {exc}") from exc
        return code
    raise SystemExit(f"vector generation: expected error {code}, implementation accepted the input")


def envelope(spec: str, description: str, **sections: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "generator": GENERATOR,
        "spec": spec,
        "description": description,
        **sections,
    }


def set_word(data: bytes, index: int, value: int | bytes) -> bytes:
    """Replace the 32-byte word at ``index`` (a uint or 32 raw bytes)."""
    word = value if isinstance(value, bytes) else value.to_bytes(32, "big")
    assert len(word) == 32
    return data[: 32 * index] + word + data[32 * (index + 1) :]


def word(data: bytes, index: int) -> int:
    return int.from_bytes(data[32 * index : 32 * (index + 1)], "big")


def set_byte(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + bytes([value]) + data[pos + 1 :]


# --- packets (SPEC §2.2, §3) ----------------------------------------------------------------------

SRC = ChainId("dpos-park")
DST = ChainId("poc-park")
LANE = LaneId("lane-0")
T0 = 1_700_000_000_000  # a fixed epoch for every time in the vectors (2023-11-14T22:13:20Z)


def energy(denom: str, amount: int) -> bytes:
    return codec.encode_energy(EnergyPayload(denom, amount))


CHARGING = ChargingRightPayload("right-42", ChainId("fabric-park"), "station-7", "tx-north", 22,
                                T0 + 3_600_000, T0 + 7_200_000)
REPUTATION = ReputationPayload("witness-03", 8_750, "dpos-witness-credit/v1", 12_345)


def base_packet(**changes: Any) -> Packet:
    fields: dict[str, Any] = {
        "src_chain": SRC, "dst_chain": DST, "lane": LANE, "sequence": 1, "kind": PacketKind.ENERGY,
        "payload": energy("kWh", 1_500), "sender": "0xa11ce", "receiver": "0xb0b", "timeout_timestamp_ms": T0 + 600_000,
    }
    fields.update(changes)
    return Packet(**fields)


def packet_json(p: Packet) -> dict[str, str]:
    return {
        "src_chain": p.src_chain, "dst_chain": p.dst_chain, "lane": p.lane, "sequence": dec(p.sequence),
        "kind": dec(int(p.kind)), "payload_hex": hx(p.payload), "sender": p.sender, "receiver": p.receiver,
        "timeout_timestamp_ms": dec(p.timeout_timestamp_ms),
    }


def raw_packet(src: str = SRC, dst: str = DST, lane: str = LANE, seq: int = 1, kind: int = 1,
               payload: bytes | None = None, sender: str = "0xa11ce", receiver: str = "0xb0b",
               timeout: int = T0 + 600_000) -> bytes:
    """ABI bytes of a packet tuple, bypassing validation: how an attacker would build one."""
    payload = energy("kWh", 1_500) if payload is None else payload
    return abi_encode(list(codec.PACKET_ABI), [src, dst, lane, seq, kind, payload, sender, receiver, timeout])


def gen_codec_packets() -> dict[str, Any]:
    valid_packets = [
        ("energy_leaving_home", base_packet()),
        ("energy_returning_voucher", base_packet(src_chain=DST, dst_chain=SRC, sequence=7,
                                                 payload=energy("lane-0/dpos-park/kWh", 250))),
        ("charging_right", base_packet(dst_chain=ChainId("fabric-park"), sequence=2, kind=PacketKind.CHARGING_RIGHT,
                                       payload=codec.encode_charging_right(CHARGING),
                                       timeout_timestamp_ms=CHARGING.slot_start_ms)),
        ("reputation", base_packet(dst_chain=ChainId("eth-park"), lane=LaneId("lane.rep_1"), sequence=3,
                                   kind=PacketKind.REPUTATION, payload=codec.encode_reputation(REPUTATION))),
        ("max_values", base_packet(src_chain=ChainId("a" * 64), dst_chain=ChainId("0" + "z" * 63),
                                   lane=LaneId("l" * 64), sequence=UINT64_MAX, sender="ü" * 128,
                                   receiver="r" * 256, timeout_timestamp_ms=UINT64_MAX,
                                   payload=bytes(range(256)) * 16)),
        ("min_values", base_packet(src_chain=ChainId("a"), dst_chain=ChainId("b"), lane=LaneId("0"),
                                   payload=b"", sender="s", receiver="r", timeout_timestamp_ms=1)),
        ("unicode_accounts", base_packet(sender="operator/ä€😀", receiver="Ünïcødé receiver")),
    ]
    valid = []
    for name, p in valid_packets:
        enc = codec.encode_packet(p)
        assert codec.decode_packet(enc) == p
        valid.append({"name": name, "packet": packet_json(p), "encoding_hex": hx(enc),
                      "commitment_hex": hx(codec.packet_commitment(p))})

    invalid_values = [
        ("sequence_zero", base_packet(sequence=0)),
        ("sequence_over_uint64", base_packet(sequence=UINT64_MAX + 1)),
        ("sequence_negative", base_packet(sequence=-1)),
        ("timeout_zero", base_packet(timeout_timestamp_ms=0)),
        ("timeout_over_uint64", base_packet(timeout_timestamp_ms=UINT64_MAX + 1)),
        ("src_equals_dst", base_packet(dst_chain=SRC)),
        ("src_uppercase", base_packet(src_chain=ChainId("DPOS-park"))),
        ("src_empty", base_packet(src_chain=ChainId(""))),
        ("dst_65_chars", base_packet(dst_chain=ChainId("d" * 65))),
        ("dst_trailing_newline", base_packet(dst_chain=ChainId("poc-park\n"))),
        ("lane_with_slash", base_packet(lane=LaneId("lane/0"))),
        ("lane_leading_dash", base_packet(lane=LaneId("-lane"))),
        ("sender_empty", base_packet(sender="")),
        ("receiver_empty", base_packet(receiver="")),
        ("receiver_257_bytes", base_packet(receiver="r" * 257)),
        ("sender_258_utf8_bytes", base_packet(sender="ü" * 129)),
        ("payload_4097_bytes", base_packet(payload=bytes(4097))),
    ]
    invalid = [
        {"name": name, "packet": packet_json(p),
         "error": expect_error("codec.invalid", codec.encode_packet, p)}
        for name, p in invalid_values
    ]

    base = codec.encode_packet(base_packet())
    # head words: 0 src, 1 dst, 2 lane (offsets), 3 sequence, 4 kind, 5 payload, 6 sender, 7 receiver (offsets),
    # 8 timeout
    src_off, sender_off, recv_off = word(base, 0), word(base, 6), word(base, 7)
    src_len = word(base[src_off:], 0)
    src_tail = base[src_off : src_off + 32 + 32 * ((src_len + 31) // 32)]
    bad_encodings = [
        ("empty", b""),
        ("trailing_zero_byte", base + b"\x00"),
        ("trailing_zero_word", base + bytes(32)),
        ("truncated_one_byte", base[:-1]),
        ("truncated_one_word", base[:-32]),
        ("head_only", base[: 32 * 9]),
        ("kind_zero", set_word(base, 4, 0)),
        ("kind_four", set_word(base, 4, 4)),
        ("kind_dirty_padding", set_word(base, 4, (1 << 8) | 1)),
        ("sequence_zero", set_word(base, 3, 0)),
        ("sequence_high_bits_set", set_word(base, 3, (1 << 64) | 1)),
        ("timeout_zero", set_word(base, 8, 0)),
        ("timeout_high_bits_set", set_word(base, 8, (1 << 200) | (T0 + 600_000))),
        ("string_dirty_padding", set_byte(base, src_off + 32 + src_len, 0x01)),
        ("string_invalid_utf8", set_byte(base, sender_off + 32, 0xFF)),
        ("string_length_past_end", set_word(base, recv_off // 32, len(base))),
        ("offset_past_end", set_word(base, 0, len(base) + 32)),
        ("offset_misaligned", set_word(base, 0, src_off + 1)),
        ("offset_to_duplicate_tail", set_word(base + src_tail, 0, len(base))),
        ("two_offsets_share_a_tail", set_word(base, 1, src_off)),
        ("raw_src_equals_dst", raw_packet(dst=SRC)),
        ("raw_sequence_zero", raw_packet(seq=0)),
        ("raw_timeout_zero", raw_packet(timeout=0)),
        ("raw_kind_zero", raw_packet(kind=0)),
        ("raw_kind_255", raw_packet(kind=255)),
        ("raw_uppercase_lane", raw_packet(lane="LANE-0")),
        ("raw_lane_trailing_newline", raw_packet(lane="lane-0\n")),
        ("raw_empty_sender", raw_packet(sender="")),
        ("raw_receiver_257_bytes", raw_packet(receiver="r" * 257)),
        ("raw_payload_4097_bytes", raw_packet(payload=bytes(4097))),
    ]
    for name, data in bad_encodings:
        invalid.append({"name": f"encoding_{name}", "encoding_hex": hx(data),
                        "error": expect_error("codec.invalid", codec.decode_packet, data)})
    return envelope(
        "SPEC.md §2.2, §3",
        "Packets: each valid case gives the packet, its canonical encoding and its commitment "
        "(sha256 of the encoding); decoding the encoding gives the packet back. Each invalid case is either "
        "a packet value that encoding must refuse or bytes that decoding must refuse, with the error code.",
        valid=valid, invalid=invalid,
    )


# --- payloads (SPEC §2.3) -------------------------------------------------------------------------


def payload_json(kind: PacketKind, v: EnergyPayload | ChargingRightPayload | ReputationPayload) -> dict[str, str]:
    if isinstance(v, EnergyPayload):
        return {"denom": v.denom, "amount_wh": dec(v.amount_wh)}
    if isinstance(v, ChargingRightPayload):
        return {"right_id": v.right_id, "home_park": v.home_park, "station": v.station, "transformer": v.transformer,
                "power_kw": dec(v.power_kw), "slot_start_ms": dec(v.slot_start_ms), "slot_end_ms": dec(v.slot_end_ms)}
    return {"subject": v.subject, "score": dec(v.score), "model": v.model, "source_height": dec(v.source_height)}


ENCODERS: dict[PacketKind, Callable[[Any], bytes]] = {
    PacketKind.ENERGY: codec.encode_energy,
    PacketKind.CHARGING_RIGHT: codec.encode_charging_right,
    PacketKind.REPUTATION: codec.encode_reputation,
}


def gen_payloads() -> dict[str, Any]:
    E, C, R = PacketKind.ENERGY, PacketKind.CHARGING_RIGHT, PacketKind.REPUTATION
    valid_values: list[tuple[str, PacketKind, Any]] = [
        ("energy_native", E, EnergyPayload("kWh", 1_500)),
        ("energy_voucher_one_hop", E, EnergyPayload("lane-0/dpos-park/kWh", 250)),
        ("energy_voucher_two_hops", E, EnergyPayload("lane-1/poc-park/lane-0/dpos-park/kWh", 1)),
        ("energy_max_amount", E, EnergyPayload("kWh", UINT256_MAX)),
        ("energy_denom_256_bytes", E, EnergyPayload("d" * 256, 1)),
        ("charging_right", C, CHARGING),
        ("charging_right_one_ms_slot", C, ChargingRightPayload("r", ChainId("p"), "s", "t", 1, 0, 1)),
        ("charging_right_max", C, ChargingRightPayload("r" * 256, ChainId("p" * 64), "s" * 256, "t" * 256,
                                                       UINT64_MAX, UINT64_MAX - 1, UINT64_MAX)),
        ("reputation", R, REPUTATION),
        ("reputation_zero_score_height", R, ReputationPayload("agg-1", 0, "dr-aggregator-reputation/v1", 0)),
        ("reputation_max", R, ReputationPayload("s" * 256, UINT64_MAX, "m" * 256, UINT64_MAX)),
    ]
    valid = []
    for name, kind, v in valid_values:
        enc = ENCODERS[kind](v)
        assert codec.decode_payload(kind, enc) == v
        valid.append({"name": name, "kind": dec(int(kind)), "payload": payload_json(kind, v), "encoding_hex": hx(enc)})

    invalid_values: list[tuple[str, PacketKind, Any]] = [
        ("energy_amount_zero", E, EnergyPayload("kWh", 0)),
        ("energy_amount_over_uint256", E, EnergyPayload("kWh", UINT256_MAX + 1)),
        ("energy_denom_empty", E, EnergyPayload("", 1)),
        ("energy_denom_257_bytes", E, EnergyPayload("d" * 257, 1)),
        ("charging_power_zero", C, ChargingRightPayload("r", ChainId("p"), "s", "t", 0, 0, 1)),
        ("charging_slot_empty", C, ChargingRightPayload("r", ChainId("p"), "s", "t", 1, 5, 5)),
        ("charging_slot_reversed", C, ChargingRightPayload("r", ChainId("p"), "s", "t", 1, 6, 5)),
        ("charging_home_park_invalid", C, ChargingRightPayload("r", ChainId("Park"), "s", "t", 1, 0, 1)),
        ("charging_right_id_empty", C, ChargingRightPayload("", ChainId("p"), "s", "t", 1, 0, 1)),
        ("charging_station_empty", C, ChargingRightPayload("r", ChainId("p"), "", "t", 1, 0, 1)),
        ("charging_transformer_empty", C, ChargingRightPayload("r", ChainId("p"), "s", "", 1, 0, 1)),
        ("charging_slot_end_over_uint64", C, ChargingRightPayload("r", ChainId("p"), "s", "t", 1, 0, UINT64_MAX + 1)),
        ("reputation_subject_empty", R, ReputationPayload("", 1, "m", 1)),
        ("reputation_model_empty", R, ReputationPayload("s", 1, "", 1)),
        ("reputation_score_over_uint64", R, ReputationPayload("s", UINT64_MAX + 1, "m", 1)),
        ("reputation_height_negative", R, ReputationPayload("s", 1, "m", -1)),
    ]
    invalid: list[dict[str, Any]] = [
        {"name": name, "kind": dec(int(kind)), "payload": payload_json(kind, v),
         "error": expect_error("codec.invalid", ENCODERS[kind], v)}
        for name, kind, v in invalid_values
    ]
    e = codec.encode_energy(EnergyPayload("kWh", 1_500))
    c = codec.encode_charging_right(CHARGING)
    r = codec.encode_reputation(REPUTATION)
    bad: list[tuple[str, PacketKind, bytes]] = [
        ("energy_empty", E, b""),
        ("energy_trailing_byte", E, e + b"\x00"),
        ("energy_truncated", E, e[:-1]),
        ("energy_amount_zero", E, set_word(e, 1, 0)),
        ("energy_denom_dirty_padding", E, set_byte(e, 64 + 32 + 3, 0x20)),
        ("energy_raw_empty_denom", E, abi_encode(list(codec.ENERGY_ABI), ["", 5])),
        ("charging_power_high_bits", C, set_word(c, 4, (1 << 64) | 22)),
        ("charging_raw_slot_reversed", C, abi_encode(list(codec.CHARGING_RIGHT_ABI), ["r", "p", "s", "t", 1, 9, 8])),
        ("charging_raw_home_park_uppercase", C, abi_encode(list(codec.CHARGING_RIGHT_ABI),
                                                           ["r", "P", "s", "t", 1, 0, 1])),
        ("charging_trailing_word", C, c + bytes(32)),
        ("reputation_score_high_bits", R, set_word(r, 1, 1 << 64)),
        ("reputation_raw_empty_model", R, abi_encode(list(codec.REPUTATION_ABI), ["s", 1, "", 1])),
        ("reputation_is_energy", R, e),
        ("energy_is_reputation", E, r),
    ]
    for name, kind, data in bad:
        invalid.append({"name": f"encoding_{name}", "kind": dec(int(kind)), "encoding_hex": hx(data),
                        "error": expect_error("codec.invalid", codec.decode_payload, kind, data)})
    return envelope(
        "SPEC.md §2.3, §3",
        "Packet payloads by kind (1 energy, 2 charging right, 3 reputation): valid values with their canonical "
        "encoding; invalid values that encoding refuses and bytes that decoding refuses, with the error code.",
        valid=valid, invalid=invalid,
    )


# --- acknowledgements and outcomes (SPEC §2.4, §2.5) -------------------------------------------------


def ack_json(a: Acknowledgement) -> dict[str, str]:
    return {"status": dec(int(a.status)), "code": a.code, "result_hex": hx(a.result)}


def gen_acks() -> dict[str, Any]:
    S, F = AckStatus.SUCCESS, AckStatus.ERROR
    valid_acks = [
        ("success_empty_result", Acknowledgement(S, "ok", b"")),
        ("success_with_result", Acknowledgement(S, "ok", b"minted lane-0/dpos-park/kWh")),
        ("error_capacity", Acknowledgement(F, "capacity.exceeded", b"")),
        ("error_receiver_refused", Acknowledgement(F, "receiver.refused", bytes.fromhex("deadbeef"))),
        ("error_max_result", Acknowledgement(F, "payload.invalid", bytes(4096))),
    ]
    valid = []
    for name, a in valid_acks:
        enc = codec.encode_ack(a)
        assert codec.decode_ack(enc) == a
        valid.append({"name": name, "ack": ack_json(a), "encoding_hex": hx(enc),
                      "commitment_hex": hx(codec.ack_commitment(a))})
    invalid_acks = [
        ("success_code_not_ok", Acknowledgement(S, "done", b"")),
        ("error_code_ok", Acknowledgement(F, "ok", b"")),
        ("error_code_empty", Acknowledgement(F, "", b"")),
        ("code_257_bytes", Acknowledgement(F, "c" * 257, b"")),
        ("result_4097_bytes", Acknowledgement(S, "ok", bytes(4097))),
    ]
    invalid: list[dict[str, Any]] = [
        {"name": name, "ack": ack_json(a), "error": expect_error("codec.invalid", codec.encode_ack, a)}
        for name, a in invalid_acks
    ]
    ok = codec.encode_ack(Acknowledgement(S, "ok", b""))
    bad = [
        ("empty", b""),
        ("status_zero", set_word(ok, 0, 0)),
        ("status_three", set_word(ok, 0, 3)),
        ("status_dirty_padding", set_word(ok, 0, (1 << 248) | 1)),
        ("trailing_byte", ok + b"\x00"),
        ("truncated", ok[:-1]),
        ("raw_success_code_error", abi_encode(list(codec.ACK_ABI), [1, "error", b""])),
        ("raw_error_code_ok", abi_encode(list(codec.ACK_ABI), [2, "ok", b""])),
        ("raw_error_code_empty", abi_encode(list(codec.ACK_ABI), [2, "", b""])),
        ("raw_result_4097_bytes", abi_encode(list(codec.ACK_ABI), [1, "ok", bytes(4097)])),
    ]
    for name, data in bad:
        invalid.append({"name": f"encoding_{name}", "encoding_hex": hx(data),
                        "error": expect_error("codec.invalid", codec.decode_ack, data)})
    return envelope(
        "SPEC.md §2.4, §3.4",
        "Acknowledgements: valid acks with their canonical encoding and commitment (the receipt value); "
        "invalid ack values that encoding refuses and bytes that decoding refuses, with the error code.",
        valid=valid, invalid=invalid,
    )


def gen_outcomes() -> dict[str, Any]:
    pc = codec.packet_commitment(base_packet())
    ac = codec.ack_commitment(Acknowledgement(AckStatus.SUCCESS, "ok", b""))
    zero = bytes(32)
    valid = []
    for name, o, a in [("acked", PacketOutcome.ACKED, ac), ("timed_out", PacketOutcome.TIMED_OUT, zero)]:
        enc = codec.encode_outcome(o, pc, a)
        assert codec.decode_outcome(enc) == (o, pc, a)
        valid.append({"name": name, "outcome": dec(int(o)), "packet_commitment_hex": hx(pc),
                      "ack_commitment_hex": hx(a), "encoding_hex": hx(enc)})
    invalid: list[dict[str, Any]] = []
    for name, o, p_, a in [("timed_out_with_ack", PacketOutcome.TIMED_OUT, pc, ac),
                           ("acked_zero_ack", PacketOutcome.ACKED, pc, zero),
                           ("packet_commitment_31_bytes", PacketOutcome.ACKED, pc[:31], ac),
                           ("ack_commitment_33_bytes", PacketOutcome.ACKED, pc, ac + b"\x00")]:
        invalid.append({"name": name, "outcome": dec(int(o)), "packet_commitment_hex": hx(p_),
                        "ack_commitment_hex": hx(a),
                        "error": expect_error("codec.invalid", codec.encode_outcome, o, p_, a)})
    good = codec.encode_outcome(PacketOutcome.ACKED, pc, ac)
    bad = [
        ("empty", b""),
        ("outcome_zero", set_word(good, 0, 0)),
        ("outcome_three", set_word(good, 0, 3)),
        ("trailing_byte", good + b"\x00"),
        ("truncated", good[:-1]),
        ("raw_timed_out_with_ack", abi_encode(list(codec.OUTCOME_ABI), [2, pc, ac])),
        ("raw_acked_zero_ack", abi_encode(list(codec.OUTCOME_ABI), [1, pc, zero])),
    ]
    for name, data in bad:
        invalid.append({"name": f"encoding_{name}", "encoding_hex": hx(data),
                        "error": expect_error("codec.invalid", codec.decode_outcome, data)})
    return envelope(
        "SPEC.md §2.5, §3",
        "Relay-chain outcome records (1 ACKED, 2 TIMED_OUT): valid records with their encoding; invalid records "
        "and encodings with the error code. The ack commitment is zero exactly for TIMED_OUT.",
        valid=valid, invalid=invalid,
    )


# --- paths (SPEC §5) -------------------------------------------------------------------------------


def gen_paths() -> dict[str, Any]:
    calls: list[tuple[str, Callable[..., bytes], dict[str, Any]]] = [
        ("commitment_path", paths.commitment_path, {"dst": DST, "lane": LANE, "sequence": 1}),
        ("commitment_path", paths.commitment_path, {"dst": DST, "lane": LANE, "sequence": UINT64_MAX}),
        ("receipt_path", paths.receipt_path, {"src": SRC, "lane": LANE, "sequence": 42}),
        ("next_send_path", paths.next_send_path, {"dst": DST, "lane": LANE}),
        ("verified_path", paths.verified_path, {"src": SRC, "dst": DST, "lane": LANE, "sequence": 10}),
        ("outcome_path", paths.outcome_path, {"src": SRC, "dst": DST, "lane": LANE, "sequence": 10}),
        ("balance_path", paths.balance_path, {"account": "0xa11ce", "denom": "lane-0/dpos-park/kWh"}),
        ("escrow_path", paths.escrow_path, {"denom": "kWh"}),
        ("lane_config_path", paths.lane_config_path, {"src": SRC, "dst": DST, "lane": LANE}),
    ]
    valid = [
        {"function": fn_name, "args": {k: dec(v) if isinstance(v, int) else v for k, v in args.items()},
         "path_hex": hx(fn(**args)), "path": fn(**args).decode()}
        for fn_name, fn, args in calls
    ]
    invalid = [
        {"function": "balance_path", "args": {"account": acct, "denom": "kWh"},
         "error": expect_error("codec.invalid", paths.balance_path, acct, "kWh")}
        for acct in ("0xa11ce/evil", "")
    ]
    return envelope(
        "SPEC.md §5",
        "Well-known state paths: function, arguments (integers as decimal strings) and the UTF-8 key.",
        valid=valid, invalid=invalid,
    )


# --- state commitment (SPEC §4) ----------------------------------------------------------------------


def _kv(i: int, prefix: str = "key") -> tuple[bytes, bytes]:
    return f"{prefix}-{i:04d}".encode(), hashlib.sha256(f"value-{prefix}-{i}".encode()).digest()


def _deep_pair(bits: int) -> tuple[bytes, bytes]:
    """The first two keys ``deep-<i>`` whose sha256 share their first ``bits`` bits (found by search)."""
    seen: dict[int, bytes] = {}
    i = 0
    while True:
        key = f"deep-{i}".encode()
        prefix = int.from_bytes(hashlib.sha256(key).digest(), "big") >> (256 - bits)
        if prefix in seen:
            return seen[prefix], key
        seen[prefix] = key
        i += 1


def _absent_keys(tree: SparseMerkleTree, want_empty: int, want_leaf: int) -> list[bytes]:
    """Absent keys whose non-membership proofs end in an empty subtree and at another leaf, in that order."""
    empty: list[bytes] = []
    leaf: list[bytes] = []
    i = 0
    while (len(empty) < want_empty or len(leaf) < want_leaf) and i < 10_000:
        key = f"absent-{i}".encode()
        i += 1
        if tree.get(key) is not None:
            continue
        p = tree.prove(key)
        if p.leaf is None and len(empty) < want_empty:
            empty.append(key)
        elif p.leaf is not None and len(leaf) < want_leaf:
            leaf.append(key)
    return empty + leaf


def _proof_case(tree: SparseMerkleTree, key: bytes, value: bytes | None) -> dict[str, Any]:
    p = tree.prove(key)
    if value is None:
        verify_non_membership(tree.root, key, p)
    else:
        verify_membership(tree.root, key, value, p)
    assert Proof.decode(p.encode()) == p
    return {"type": "membership" if value is not None else "non_membership", "key_hex": hx(key),
            "value_hex": None if value is None else hx(value), "proof_hex": hx(p.encode()),
            "depth": len(p.siblings), "ends_in": "leaf" if p.leaf is not None else "empty"}


def gen_state_commitment() -> dict[str, Any]:
    a, b = _deep_pair(20)
    sets: list[tuple[str, list[tuple[bytes, bytes]]]] = [
        ("empty", []),
        ("one", [(b"a", b"1")]),
        ("two", [(b"a", b"1"), (b"b", b"2")]),
        ("empty_value", [(b"k", b""), (b"", b"empty key")]),
        ("ten", [_kv(i) for i in range(10)]),
        ("hundred", [_kv(i) for i in range(100)]),
        ("deep_pair_20_bits", [(a, b"deep a"), (b, b"deep b"), (b"other", b"x")]),
        ("protocol_paths", [
            (paths.commitment_path(DST, LANE, s), codec.packet_commitment(base_packet(sequence=s))) for s in range(1, 6)
        ] + [(paths.next_send_path(DST, LANE), b"6"), (paths.escrow_path("kWh"), b"7500")]),
    ]
    cases = []
    for name, items in sets:
        tree = SparseMerkleTree.from_items(items)
        incremental = SparseMerkleTree()
        for k, v in items:
            incremental = incremental.set(k, v)
        assert incremental.root == tree.root
        proofs = [_proof_case(tree, k, v) for k, v in items[:8]]
        proofs += [_proof_case(tree, k, None) for k in _absent_keys(tree, 2, 2)]
        cases.append({"name": name, "items": [{"key_hex": hx(k), "value_hex": hx(v)} for k, v in items],
                      "root_hex": hx(tree.root), "proofs": proofs})

    # operations: incremental sets and deletes, with the root after each; ends empty again
    ops: list[dict[str, Any]] = []
    t = SparseMerkleTree()
    op_list: list[tuple[str, bytes, bytes | None]] = [
        ("set", b"a", b"1"), ("set", b"b", b"2"), ("set", b"c", b"3"), ("set", b"b", b"2'"), ("delete", b"a", None),
        ("delete", b"missing", None), ("set", a, b"deep"), ("set", b, b"deep"), ("delete", a, None),
        ("delete", b"c", None), ("delete", b, None), ("delete", b"b", None),
    ]
    for op, op_key, op_value in op_list:
        t = t.set(op_key, op_value) if op_value is not None else t.delete(op_key)
        ops.append({"op": op, "key_hex": hx(op_key), **({"value_hex": hx(op_value)} if op_value is not None else {}),
                    "root_hex": hx(t.root), "size": len(t)})
    assert t.root == EMPTY_ROOT

    invalid = _tampered_proofs(a, b) + _bad_proof_encodings()
    return envelope(
        "SPEC.md §4",
        "Compact sparse Merkle tree: sets of key/value pairs with their root and proofs (membership and "
        "non-membership, encoded); a sequence of set/delete operations with the root after each; tampered proofs "
        "that verification must reject and proof encodings that decoding must reject, with the error code.",
        empty_root_hex=hx(EMPTY_ROOT), cases=cases, operations=ops, invalid=invalid,
    )


def _tampered_proofs(deep_a: bytes, deep_b: bytes) -> list[dict[str, Any]]:
    items = [_kv(i) for i in range(20)]
    tree = SparseMerkleTree.from_items(items)
    root = tree.root
    k0, v0 = items[0]
    mem = tree.prove(k0)
    assert len(mem.siblings) >= 2
    absent_empty, absent_leaf = _absent_keys(tree, 1, 1)
    non_empty, non_leaf = tree.prove(absent_empty), tree.prove(absent_leaf)
    assert non_empty.leaf is None and non_leaf.leaf is not None
    old_tree = tree.set(b"late", b"1")  # a newer root: the old proof must not verify against it
    # a key whose path leaves k0's leaf within the proof's depth: k0's proof, offered as its absence proof
    kh0 = int.from_bytes(hashlib.sha256(k0).digest(), "big")
    off_path = next(
        k for k in (f"off-{i}".encode() for i in range(10_000))
        if (int.from_bytes(hashlib.sha256(k).digest(), "big") ^ kh0) >> (256 - len(mem.siblings))
        and tree.get(k) is None
    )
    deep_tree = SparseMerkleTree.from_items([(deep_a, b"A"), (deep_b, b"B"), (b"other", b"x")])
    deep = deep_tree.prove(deep_a)

    def flip(p: Proof, i: int) -> Proof:
        s = list(p.siblings)
        s[i] = bytes([s[i][0] ^ 0x01]) + s[i][1:]
        return Proof(tuple(s), p.leaf)

    cases: list[tuple[str, bytes, str, bytes, bytes | None, Proof]] = [
        ("membership_flipped_first_sibling", root, "membership", k0, v0, flip(mem, 0)),
        ("membership_flipped_last_sibling", root, "membership", k0, v0, flip(mem, len(mem.siblings) - 1)),
        ("membership_truncated_siblings", root, "membership", k0, v0, Proof(mem.siblings[:-1], mem.leaf)),
        ("membership_dropped_first_sibling", root, "membership", k0, v0, Proof(mem.siblings[1:], mem.leaf)),
        ("membership_extra_empty_sibling", root, "membership", k0, v0, Proof((*mem.siblings, EMPTY_ROOT), mem.leaf)),
        ("membership_extra_sibling_on_top", root, "membership", k0, v0, Proof((EMPTY_ROOT, *mem.siblings), mem.leaf)),
        ("membership_wrong_value", root, "membership", k0, b"forged", mem),
        ("membership_leaf_value_swapped", root, "membership", k0, v0,
         Proof(mem.siblings, (mem.leaf[0], hashlib.sha256(b"forged").digest()) if mem.leaf else None)),
        ("membership_other_keys_proof", root, "membership", k0, v0, tree.prove(items[1][0])),
        ("membership_without_leaf", root, "membership", k0, v0, Proof(mem.siblings, None)),
        ("membership_against_newer_root", old_tree.root, "membership", k0, v0, mem),
        ("membership_of_absent_key", root, "membership", absent_leaf, b"x", non_leaf),
        ("membership_used_as_non_membership", root, "non_membership", k0, None, mem),
        ("non_membership_used_as_membership", root, "membership", absent_empty, v0, non_empty),
        ("non_membership_leaf_off_path", root, "non_membership", off_path, None, mem),
        ("non_membership_empty_flipped_sibling", root, "non_membership", absent_empty, None, flip(non_empty, 0)),
        ("non_membership_leaf_truncated", root, "non_membership", absent_leaf, None,
         Proof(non_leaf.siblings[:-1], non_leaf.leaf)),
        ("non_membership_claims_empty_at_leaf", root, "non_membership", absent_leaf, None,
         Proof(non_leaf.siblings, None)),
        ("non_membership_against_newer_root", old_tree.root, "non_membership", absent_empty, None, non_empty),
        ("non_membership_of_present_key_empty_claim", root, "non_membership", k0, None, Proof(mem.siblings, None)),
        ("deep_membership_flipped_empty_sibling", deep_tree.root, "membership", deep_a, b"A", flip(deep, 10)),
        ("deep_membership_shortened", deep_tree.root, "membership", deep_a, b"A", Proof(deep.siblings[:10], deep.leaf)),
    ]
    out = []
    def check(r: bytes, key: bytes, value: bytes | None, proof_bytes: bytes) -> None:
        if value is None:
            verify_non_membership(r, key, Proof.decode(proof_bytes))
        else:
            verify_membership(r, key, value, Proof.decode(proof_bytes))

    for name, r, typ, key, value, proof in cases:
        assert (typ == "membership") == (value is not None)
        out.append({"name": name, "type": typ, "root_hex": hx(r), "key_hex": hx(key),
                    "value_hex": None if value is None else hx(value), "proof_hex": hx(proof.encode()),
                    "error": expect_error("proof.invalid", check, r, key, value, proof.encode())})
    return out


def _bad_proof_encodings() -> list[dict[str, Any]]:
    sib = hashlib.sha256(b"sibling").digest()
    leaf = hashlib.sha256(b"kh").digest() + hashlib.sha256(b"vh").digest()
    good = (1).to_bytes(2, "big") + sib + b"\x01" + leaf
    bad = [
        ("empty", b""),
        ("two_bytes", b"\x00\x00"),
        ("siblings_truncated", (2).to_bytes(2, "big") + sib + b"\x00"),
        ("no_flag", (1).to_bytes(2, "big") + sib),
        ("flag_two", (1).to_bytes(2, "big") + sib + b"\x02"),
        ("flag_zero_with_leaf_bytes", (1).to_bytes(2, "big") + sib + b"\x00" + leaf),
        ("leaf_truncated", good[:-1]),
        ("trailing_byte", good + b"\x00"),
        ("depth_257", (257).to_bytes(2, "big") + sib * 257 + b"\x00"),
    ]
    return [{"name": f"encoding_{name}", "type": "decode", "proof_hex": hx(data),
             "error": expect_error("codec.invalid", Proof.decode, data)} for name, data in bad]


# --- certificates (SPEC §7) ----------------------------------------------------------------------------

RELAY = ChainId("relay")


def validator_signer(i: int) -> Ed25519Signer:
    return Ed25519Signer(hashlib.sha256(f"parkrelay-test-validator-{i}".encode()).digest())


def make_set(indices: Iterable[int], powers: Iterable[int], eth: bool = False) -> ValidatorSet:
    vals = []
    for i, power in zip(indices, powers, strict=True):
        addr = hashlib.sha256(f"parkrelay-test-eth-{i}".encode()).digest()[:20] if eth else bytes(20)
        vals.append(Validator(f"val-{i}", validator_signer(i).pubkey, addr, power))
    return ValidatorSet(tuple(vals))


def set_json(name: str, vs: ValidatorSet, indices: list[int]) -> dict[str, Any]:
    return {
        "name": name,
        "validators": [
            {"name": v.name, "test_seed_hex": validator_signer(i).seed_hex(),
             "ed25519_pubkey_hex": hx(v.ed25519_pubkey), "eth_address_hex": hx(v.eth_address), "power": dec(v.power)}
            for i, v in zip(indices, vs.validators, strict=True)
        ],
        "hash_hex": hx(vs.hash),
        "total_power": dec(vs.total_power),
    }


def header_json(h: RelayHeader) -> dict[str, str]:
    return {"chain_id": h.chain_id, "height": dec(h.height), "time_ms": dec(h.time_ms),
            "last_block_hash_hex": hx(h.last_block_hash), "data_hash_hex": hx(h.data_hash),
            "state_root_hex": hx(h.state_root), "validators_hash_hex": hx(h.validators_hash),
            "next_validators_hash_hex": hx(h.next_validators_hash)}


def sign(header: RelayHeader, round_: int, signers: list[tuple[int, int]]) -> tuple[CommitSignature, ...]:
    """Signatures by (index in set, test key number)."""
    msg = commit_sign_bytes(header, round_)
    return tuple(CommitSignature(idx, validator_signer(key).sign(msg)) for idx, key in signers)


def commit_json(c: RelayCommit) -> dict[str, Any]:
    return {"header": header_json(c.header), "round": dec(c.round),
            "signatures": [{"validator_index": dec(s.validator_index), "ed25519_sig_hex": hx(s.ed25519_sig)}
                           for s in c.signatures]}


def gen_certificates() -> dict[str, Any]:
    sets_spec: dict[str, tuple[list[int], list[int], bool]] = {
        "equal4": ([0, 1, 2, 3], [10, 10, 10, 10], False),
        "equal3": ([0, 1, 2], [1, 1, 1], False),
        "unequal4": ([0, 1, 2, 3], [2, 2, 1, 1], False),
        "next4_with_eth": ([4, 5, 6, 0], [25, 25, 25, 25], True),
    }
    vsets = {name: make_set(ix, pw, eth) for name, (ix, pw, eth) in sets_spec.items()}
    eq4, eq3, un4, nxt = vsets["equal4"], vsets["equal3"], vsets["unequal4"], vsets["next4_with_eth"]

    # relay state the certificates prove into
    pkt = base_packet()
    pc = codec.packet_commitment(pkt)
    vkey = paths.verified_path(pkt.src_chain, pkt.dst_chain, pkt.lane, pkt.sequence)
    okey = paths.outcome_path(pkt.src_chain, pkt.dst_chain, pkt.lane, pkt.sequence)
    outcome = codec.encode_outcome(PacketOutcome.TIMED_OUT, pc, bytes(32))
    state = SparseMerkleTree.from_items([(vkey, pc), (okey, outcome), (b"relay/other", b"x")])
    absent_key = paths.verified_path(pkt.src_chain, pkt.dst_chain, pkt.lane, 2)

    def header(vs: ValidatorSet, **changes: Any) -> RelayHeader:
        fields: dict[str, Any] = {
            "chain_id": RELAY, "height": 7, "time_ms": T0 + 42_000,
            "last_block_hash": hashlib.sha256(b"relay block 6").digest(),
            "data_hash": hashlib.sha256(b"relay txs 7").digest(), "state_root": state.root,
            "validators_hash": vs.hash, "next_validators_hash": vs.hash,
        }
        fields.update(changes)
        return RelayHeader(**fields)

    h_eq4 = header(eq4)
    h_eq3 = header(eq3)
    h_un4 = header(un4)
    h_other_chain = header(eq4, chain_id=ChainId("relay-2"))
    h_short = header(eq4, state_root=state.root[:31])
    h_handover = header(eq4, height=8, next_validators_hash=nxt.hash)
    h_nxt = header(nxt, height=9)

    all4 = [(0, 0), (1, 1), (2, 2), (3, 3)]
    short_sig = CommitSignature(3, sign(h_eq4, 0, [(3, 3)])[0].ed25519_sig[:63])
    commits: list[tuple[str, str, ChainId, RelayCommit, str | None]] = [
        ("all_signed", "equal4", RELAY, RelayCommit(h_eq4, 0, sign(h_eq4, 0, all4)), None),
        ("three_of_four", "equal4", RELAY, RelayCommit(h_eq4, 0, sign(h_eq4, 0, all4[1:])), None),
        ("signatures_out_of_index_order", "equal4", RELAY,
         RelayCommit(h_eq4, 0, sign(h_eq4, 0, [(3, 3), (0, 0), (2, 2)])), None),
        ("round_five", "equal4", RELAY, RelayCommit(h_eq4, 5, sign(h_eq4, 5, all4[:3])), None),
        ("unequal_just_above_two_thirds", "unequal4", RELAY,
         RelayCommit(h_un4, 0, sign(h_un4, 0, [(0, 0), (1, 1), (2, 2)])), None),
        ("unequal_heavy_pair_is_two_thirds", "unequal4", RELAY,
         RelayCommit(h_un4, 0, sign(h_un4, 0, [(0, 0), (1, 1)])), "certificate.quorum"),
        ("equal3_exactly_two_thirds", "equal3", RELAY,
         RelayCommit(h_eq3, 0, sign(h_eq3, 0, [(0, 0), (1, 1)])), "certificate.quorum"),
        ("equal3_all", "equal3", RELAY, RelayCommit(h_eq3, 0, sign(h_eq3, 0, [(0, 0), (1, 1), (2, 2)])), None),
        ("two_of_four", "equal4", RELAY, RelayCommit(h_eq4, 0, sign(h_eq4, 0, all4[:2])), "certificate.quorum"),
        ("no_signatures", "equal4", RELAY, RelayCommit(h_eq4, 0, ()), "certificate.quorum"),
        ("duplicate_signer", "equal4", RELAY,
         RelayCommit(h_eq4, 0, sign(h_eq4, 0, [(0, 0), (1, 1), (1, 1)])), "signature.invalid"),
        ("unknown_index", "equal4", RELAY,
         RelayCommit(h_eq4, 0, sign(h_eq4, 0, [(0, 0), (1, 1), (2, 2), (4, 4)])), "signature.invalid"),
        ("forged_signature", "equal4", RELAY,
         RelayCommit(h_eq4, 0, (*sign(h_eq4, 0, all4[:3]), CommitSignature(3, bytes(64)))), "signature.invalid"),
        ("signature_by_wrong_key", "equal4", RELAY,
         RelayCommit(h_eq4, 0, sign(h_eq4, 0, [(0, 0), (1, 1), (2, 5)])), "signature.invalid"),
        ("signature_for_another_round", "equal4", RELAY,
         RelayCommit(h_eq4, 1, sign(h_eq4, 0, all4)), "signature.invalid"),
        ("signature_truncated", "equal4", RELAY,
         RelayCommit(h_eq4, 0, (*sign(h_eq4, 0, all4[:3]), short_sig)),
         "signature.invalid"),
        ("wrong_validator_set", "equal4", RELAY, RelayCommit(h_un4, 0, sign(h_un4, 0, all4)),
         "certificate.validator_set"),
        ("wrong_chain", "equal4", RELAY, RelayCommit(h_other_chain, 0, sign(h_other_chain, 0, all4)),
         "packet.wrong_chain"),
        ("header_short_state_root", "equal4", RELAY,
         RelayCommit(h_short, 0, tuple(CommitSignature(i, bytes(64)) for i in range(4))), "codec.invalid"),
    ]
    commit_cases = []
    for name, set_name, relay_chain, c, err in commits:
        vs = vsets[set_name]
        entry: dict[str, Any] = {"name": name, "validator_set": set_name, "relay_chain": relay_chain, **commit_json(c)}
        if err is None:
            verify_commit(vs, relay_chain, c)
            entry.update({"header_encoding_hex": hx(c.header.encode()), "header_hash_hex": hx(c.header.hash()),
                          "sign_bytes_hex": hx(commit_sign_bytes(c.header, c.round)), "error": None})
        else:
            entry["error"] = expect_error(err, verify_commit, vs, relay_chain, c)
        commit_cases.append(entry)

    handover = RelayCommit(h_handover, 0, sign(h_handover, 0, all4))
    updates: list[tuple[str, str, RelayCommit, str, str | None]] = [
        ("signed_by_old_set", "equal4", handover, "next4_with_eth", None),
        ("signed_by_new_set_only", "equal4", RelayCommit(h_nxt, 0, sign(h_nxt, 0, [(0, 4), (1, 5), (2, 6), (3, 0)])),
         "next4_with_eth", "certificate.validator_set"),
        ("not_the_certified_next_set", "equal4", handover, "unequal4", "certificate.validator_set"),
        ("old_set_below_quorum", "equal4", RelayCommit(h_handover, 0, sign(h_handover, 0, all4[:2])),
         "next4_with_eth", "certificate.quorum"),
    ]
    update_cases = []
    for name, trusted, c, new, err in updates:

        def run(t: str = trusted, c: RelayCommit = c, n: str = new) -> None:
            verify_validator_set_update(vsets[t], RELAY, c, vsets[n])

        if err is None:
            run()
        update_cases.append({"name": name, "trusted_set": trusted, "new_set": new, "relay_chain": RELAY,
                             "commit": commit_json(c), "error": err if err is None else expect_error(err, run)})

    good = RelayCommit(h_eq4, 0, sign(h_eq4, 0, all4[:3]))
    bad_commit = RelayCommit(h_eq4, 0, sign(h_eq4, 0, all4[:2]))
    mem_v = state.prove(vkey)
    non_v = state.prove(absent_key)
    certs: list[tuple[str, RelayCertificate, bytes, bytes | None, str | None]] = [
        ("verified_membership", RelayCertificate(good, vkey, pc, mem_v), vkey, pc, None),
        ("outcome_membership", RelayCertificate(good, okey, outcome, state.prove(okey)), okey, outcome, None),
        ("absence", RelayCertificate(good, absent_key, None, non_v), absent_key, None, None),
        ("proves_another_key", RelayCertificate(good, okey, outcome, state.prove(okey)), vkey, pc, "proof.invalid"),
        ("proves_another_value", RelayCertificate(good, vkey, pc, mem_v), vkey, bytes(32), "proof.invalid"),
        ("absence_claimed_for_present_key", RelayCertificate(good, vkey, None, mem_v), vkey, None, "proof.invalid"),
        ("value_not_in_state", RelayCertificate(good, vkey, bytes(32), mem_v), vkey, bytes(32), "proof.invalid"),
        ("proof_of_other_key", RelayCertificate(good, vkey, pc, state.prove(okey)), vkey, pc, "proof.invalid"),
        ("commit_below_quorum", RelayCertificate(bad_commit, vkey, pc, mem_v), vkey, pc, "certificate.quorum"),
    ]
    cert_cases = []
    for name, cert, key, value, err in certs:

        def run_cert(cert: RelayCertificate = cert, key: bytes = key, value: bytes | None = value) -> None:
            verify_certificate(eq4, RELAY, cert, key, value)

        if err is None:
            run_cert()
        cert_cases.append({
            "name": name, "trusted_set": "equal4", "relay_chain": RELAY,
            "certificate": {"commit": commit_json(cert.commit), "key_hex": hx(cert.key),
                            "value_hex": None if cert.value is None else hx(cert.value),
                            "proof_hex": hx(cert.proof.encode())},
            "expected_key_hex": hx(key), "expected_value_hex": None if value is None else hx(value),
            "error": err if err is None else expect_error(err, run_cert),
        })

    return envelope(
        "SPEC.md §7",
        "Relay validator sets (with their hash), relay commits (valid ones with header encoding, header hash and "
        "sign bytes), validator-set updates and relay certificates; invalid cases carry the error code that "
        "verification must raise. `error: null` means the case must verify.",
        WARNING=TEST_KEY_WARNING,
        commit_tag="parkrelay/relay-commit/v1",
        validator_sets=[set_json(n, vsets[n], sets_spec[n][0]) for n in sets_spec],
        commits=commit_cases, validator_set_updates=update_cases, certificates=cert_cases,
    )


# --- lifecycle (SPEC §6) -------------------------------------------------------------------------------


def gen_lifecycle() -> dict[str, Any]:
    transitions = []
    for s in PacketState:
        for e in PacketEvent:
            nxt = TRANSITIONS.get((s, e))
            if nxt is None:
                err = expect_error("lifecycle.illegal", transition, s, e)
                transitions.append({"from": s.value, "event": e.value, "to": None, "error": err})
            else:
                assert transition(s, e) is nxt
                transitions.append({"from": s.value, "event": e.value, "to": nxt.value, "error": None})
    V, X, A, T = PacketEvent.VERIFY, PacketEvent.EXECUTE, PacketEvent.CONFIRM_ACK, PacketEvent.CONFIRM_TIMEOUT
    OK, RF = PacketEvent.SETTLE_SUCCESS, PacketEvent.SETTLE_REFUND
    runs = [
        ("success", [V, X, A, OK]),
        ("error_ack_refund", [V, X, A, RF]),
        ("timeout_refund", [V, T, RF]),
        ("unverified_timeout_refund", [T, RF]),
        ("verify_after_timeout", [T, V]),
        ("double_verify", [V, V]),
        ("execute_twice", [V, X, X]),
        ("execute_after_timeout", [V, T, X]),
        ("timeout_after_execute", [V, X, T]),
        ("settle_twice", [V, X, A, OK, RF]),
        ("settle_success_after_timeout", [V, T, OK]),
        ("ack_before_execute", [V, A]),
        ("execute_before_verify", [X]),
    ]
    sequences = []
    for name, events in runs:
        state = PacketState.COMMITTED
        states = [state.value]
        error = None
        failed_at = None
        for i, e in enumerate(events):
            try:
                state = transition(state, e)
            except ParkRelayError as exc:
                error, failed_at = exc.code, i
                break
            states.append(state.value)
        sequences.append({"name": name, "start": PacketState.COMMITTED.value, "events": [e.value for e in events],
                          "states": states, "error": error, "failed_at": failed_at})
    return envelope(
        "SPEC.md §6.1",
        "Packet lifecycle: every (state, event) pair with the next state or the error code, and event sequences "
        "from COMMITTED with the states visited and where (if anywhere) the sequence fails.",
        states=[s.value for s in PacketState], events=[e.value for e in PacketEvent],
        final_states=sorted(s.value for s in (PacketState.COMPLETED, PacketState.REFUNDED)),
        transitions=transitions, sequences=sequences,
    )


# --- lane-config records (SPEC §6.8) --------------------------------------------------------------------


def gen_lane_configs() -> dict[str, Any]:
    valid = []
    for name, caps in (("not_limited", {}), ("one_denom", {"kWh": 50_000}),
                       ("default_kinds_and_vouchers", {"kWh": 50_000, "*": 3, "lane-0/dpos-park/kWh": 7,
                                                       "charging_right": 0}),
                       ("uint64_max", {"kWh": UINT64_MAX})):
        enc = lane_config.encode_lane_config(caps)
        assert lane_config.decode_lane_config(enc) == caps
        valid.append({"name": name, "capacities": {a: dec(c) for a, c in caps.items()},
                      "encoding_hex": hx(enc), "value_hash_hex": hx(codec.sha256(enc))})
    abi = list(lane_config.LANE_CONFIG_ABI)
    good = lane_config.encode_lane_config({"kWh": 5})
    bad = [
        ("unsorted_assets", abi_encode(abi, [["kWh", "*"], [1, 2]])),
        ("duplicate_asset", abi_encode(abi, [["kWh", "kWh"], [1, 2]])),
        ("one_capacity_short", abi_encode(abi, [["*", "kWh"], [1]])),
        ("empty_asset", abi_encode(abi, [[""], [1]])),
        ("capacity_above_uint64", abi_encode(["string[]", "uint256[]"], [["kWh"], [2**64]])),
        ("trailing_byte", good + b"\x00"),
        ("truncated", good[:-1]),
    ]
    invalid = [{"name": n, "encoding_hex": hx(data),
                "error": expect_error("codec.invalid", lane_config.decode_lane_config, data)} for n, data in bad]
    invalid.append({"name": "negative_capacity", "capacities": {"kWh": "-1"},
                    "error": expect_error("codec.invalid", lane_config.encode_lane_config, {"kWh": -1})})
    return envelope(
        "SPEC.md §6.8",
        "Lane-config records relay/lane_config/{src}/{dst}/{lane} = abi.encode(string[] assets, uint64[] "
        "capacities), assets strictly ascending by UTF-8 bytes ('*' the default): valid records with their "
        "encoding and the leaf value hash a certificate proves; invalid encodings with the error code.",
        valid=valid, invalid=invalid,
    )


# --- driver ----------------------------------------------------------------------------------------------

FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "codec_packets.json": gen_codec_packets,
    "payloads.json": gen_payloads,
    "acks.json": gen_acks,
    "outcomes.json": gen_outcomes,
    "paths.json": gen_paths,
    "state_commitment.json": gen_state_commitment,
    "certificates.json": gen_certificates,
    "lifecycle.json": gen_lifecycle,
    "lane_configs.json": gen_lane_configs,
}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def generate(out_dir: Path) -> list[Path]:
    """Write every vector file into ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in FILES.items():
        path = out_dir / name
        path.write_text(render(fn()), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=VECTORS_DIR, help=f"output directory (default {VECTORS_DIR})")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
