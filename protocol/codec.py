"""Canonical byte encoding of protocol data (SPEC.md §3).

Every encoding is Solidity's ``abi.encode`` of the type's fields in declaration order, so the EVM
bridge computes the same bytes with one call. Decoding is strict: bytes decode only if re-encoding
the result gives them back exactly, so every value has exactly one encoding and one commitment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from protocol import abi
from protocol.errors import CodecError
from protocol.types import (
    NO_PAYEES,
    UINT256_MAX,
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    EnergyPayload,
    FeePayees,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    ReputationPayload,
    check_id,
    check_uint,
)

T = TypeVar("T")

PACKET_ABI = ("string", "string", "string", "uint64", "uint8", "bytes", "string", "string", "uint64")
ENERGY_ABI = ("string", "uint256")
CHARGING_RIGHT_ABI = ("string", "string", "string", "string", "uint64", "uint64", "uint64")
REPUTATION_ABI = ("string", "uint64", "string", "uint64")
ACK_ABI = ("uint8", "string", "bytes")
ACK_RELAYER_ABI = ("uint8", "string", "bytes", "string")
OUTCOME_ABI = ("uint8", "bytes32", "bytes32")
OUTCOME_PAYEES_ABI = ("uint8", "bytes32", "bytes32", "string", "string", "string")

MAX_STRING = 256
MAX_PAYLOAD = 4096


def sha256(data: bytes) -> bytes:
    """SHA-256 digest, the hash of every commitment."""
    return hashlib.sha256(data).digest()


# --- the reference: eth_abi itself (tests and the reference decoders; imported on first use, see protocol.abi) ---


def _encode_reference(types: Sequence[str], values: Sequence[Any]) -> bytes:
    from eth_abi.abi import encode as abi_encode

    try:
        return abi_encode(list(types), list(values))
    except Exception as exc:  # eth_abi raises several unrelated types for one cause: bad values
        raise CodecError(f"cannot encode {types}: {exc}") from exc


def _decode_reference(types: Sequence[str], data: bytes, what: str) -> tuple[Any, ...]:
    from eth_abi.abi import decode as abi_decode

    if not isinstance(data, (bytes, bytearray)):
        raise CodecError(f"{what}: expected bytes", got=type(data).__name__)
    try:
        values = abi_decode(list(types), bytes(data), strict=True)
    except Exception as exc:  # eth_abi decoding errors share no base class worth naming
        raise CodecError(f"{what}: not a valid encoding: {exc}") from exc
    if _encode_reference(types, values) != bytes(data):
        raise CodecError(f"{what}: not the canonical encoding")
    return tuple(values)


def _check_str(kind: str, s: str) -> str:
    try:
        # lone surrogates have no UTF-8 encoding: a typed error, not UnicodeEncodeError
        ok = isinstance(s, str) and len(s.encode()) <= MAX_STRING
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise CodecError(f"{kind} must be a UTF-8 string of at most {MAX_STRING} bytes", got=s)
    return s


# --- packets -------------------------------------------------------------------------------------


def validate_packet(p: Packet) -> None:
    """Raise :class:`CodecError` unless every field of ``p`` is in range (SPEC.md §2.1)."""
    check_id("src_chain", p.src_chain)
    check_id("dst_chain", p.dst_chain)
    check_id("lane", p.lane)
    if p.src_chain == p.dst_chain:
        raise CodecError("packet source and target are the same chain", got=p.src_chain)
    if check_uint("sequence", p.sequence) == 0:
        raise CodecError("sequence starts at 1", got=0)
    if not isinstance(p.kind, PacketKind):
        raise CodecError("unknown packet kind", got=p.kind)
    if not isinstance(p.payload, bytes) or len(p.payload) > MAX_PAYLOAD:
        raise CodecError(f"payload must be bytes of at most {MAX_PAYLOAD}",
                         got=len(p.payload) if isinstance(p.payload, bytes) else type(p.payload).__name__)
    _check_str("sender", p.sender)
    _check_str("receiver", p.receiver)
    if not p.sender or not p.receiver:
        raise CodecError("sender and receiver are required")
    if check_uint("timeout_timestamp_ms", p.timeout_timestamp_ms) == 0:
        raise CodecError("a packet without a timeout is refused", got=0)


def encode_packet(p: Packet) -> bytes:
    """Canonical encoding of a packet."""
    validate_packet(p)
    return abi.encode(
        PACKET_ABI,
        (p.src_chain, p.dst_chain, p.lane, p.sequence, int(p.kind), p.payload, p.sender, p.receiver,
         p.timeout_timestamp_ms),
    )


def decode_packet_reference(data: bytes) -> Packet:
    """Reference decoder over eth_abi (decode, re-encode, compare); :func:`decode_packet` must agree with it."""
    src, dst, lane, seq, kind, payload, sender, receiver, timeout = _decode_reference(PACKET_ABI, data, "packet")
    try:
        pkind = PacketKind(kind)
    except ValueError as exc:
        raise CodecError("unknown packet kind", got=kind) from exc
    p = Packet(ChainId(src), ChainId(dst), LaneId(lane), seq, pkind, payload, sender, receiver, timeout)
    validate_packet(p)
    return p


def packet_commitment(p: Packet) -> bytes:
    """SHA-256 of the packet's canonical encoding: what the source stores in phase 1."""
    return sha256(encode_packet(p))


# --- payloads ------------------------------------------------------------------------------------


def encode_energy(e: EnergyPayload) -> bytes:
    _check_str("denom", e.denom)
    if not e.denom:
        raise CodecError("denom is required")
    if check_uint("amount_wh", e.amount_wh, UINT256_MAX) == 0:
        raise CodecError("amount must be positive", got=0)
    return abi.encode(ENERGY_ABI, (e.denom, e.amount_wh))


def decode_energy_reference(data: bytes) -> EnergyPayload:
    """Reference decoder over eth_abi; :func:`decode_energy` must agree with it."""
    denom, amount = _decode_reference(ENERGY_ABI, data, "energy payload")
    e = EnergyPayload(denom, amount)
    encode_energy(e)
    return e


def encode_charging_right(c: ChargingRightPayload) -> bytes:
    for kind, s in (("right_id", c.right_id), ("station", c.station), ("transformer", c.transformer)):
        if not _check_str(kind, s):
            raise CodecError(f"{kind} is required")
    check_id("home_park", c.home_park)
    if check_uint("power_kw", c.power_kw) == 0:
        raise CodecError("power_kw must be positive", got=0)
    check_uint("slot_start_ms", c.slot_start_ms)
    if check_uint("slot_end_ms", c.slot_end_ms) <= c.slot_start_ms:
        raise CodecError("slot must end after it starts", expected=f"> {c.slot_start_ms}", got=c.slot_end_ms)
    return abi.encode(
        CHARGING_RIGHT_ABI,
        (c.right_id, c.home_park, c.station, c.transformer, c.power_kw, c.slot_start_ms, c.slot_end_ms),
    )


def decode_charging_right(data: bytes) -> ChargingRightPayload:
    rid, home, station, transformer, kw, start, end = abi.decode(CHARGING_RIGHT_ABI, data, "charging right")
    c = ChargingRightPayload(rid, ChainId(home), station, transformer, kw, start, end)
    encode_charging_right(c)
    return c


def encode_reputation(r: ReputationPayload) -> bytes:
    if not _check_str("subject", r.subject) or not _check_str("model", r.model):
        raise CodecError("subject and model are required")
    check_uint("score", r.score)
    check_uint("source_height", r.source_height)
    return abi.encode(REPUTATION_ABI, (r.subject, r.score, r.model, r.source_height))


def decode_reputation(data: bytes) -> ReputationPayload:
    subject, score, model, height = abi.decode(REPUTATION_ABI, data, "reputation payload")
    r = ReputationPayload(subject, score, model, height)
    encode_reputation(r)
    return r


# --- acknowledgements and outcomes --------------------------------------------------------------


def encode_ack(a: Acknowledgement) -> bytes:
    """SPEC §2.4: three fields, or four when the ack names the relayer that executed the packet (§6.10)."""
    if not isinstance(a.status, AckStatus):
        raise CodecError("unknown ack status", got=a.status)
    if not _check_str("ack code", a.code):
        raise CodecError("ack code is required")
    if (a.status is AckStatus.SUCCESS) != (a.code == "ok"):
        raise CodecError("a success ack has code 'ok' and an error ack any other", got=(a.status, a.code))
    if not isinstance(a.result, bytes) or len(a.result) > MAX_PAYLOAD:
        raise CodecError("ack result too long", expected=f"<= {MAX_PAYLOAD}", got=len(a.result))
    if not isinstance(a.relayer, str):
        raise CodecError("ack relayer is a string", got=type(a.relayer).__name__)
    if a.relayer:
        check_id("relayer", a.relayer)
        return abi.encode(ACK_RELAYER_ABI, (int(a.status), a.code, a.result, a.relayer))
    return abi.encode(ACK_ABI, (int(a.status), a.code, a.result))


_FOUR_HEADS = (4 * 32).to_bytes(32, "big")
"""The first field offset of a four-field ack: where its encoding differs from the three-field one's (0x60)."""


def decode_ack(data: bytes) -> Acknowledgement:
    """Inverse of :func:`encode_ack`: exactly the canonical encodings of valid acks of either form."""
    four = isinstance(data, (bytes, bytearray)) and data[32:64] == _FOUR_HEADS
    values = abi.decode(ACK_RELAYER_ABI if four else ACK_ABI, data, "acknowledgement")
    try:
        a = Acknowledgement(AckStatus(values[0]), values[1], values[2], values[3] if four else "")
    except ValueError as exc:
        raise CodecError("unknown ack status", got=values[0]) from exc
    if four and not a.relayer:
        raise CodecError("acknowledgement: an empty relayer is the three-field form")
    encode_ack(a)
    return a


def ack_commitment(a: Acknowledgement) -> bytes:
    """SHA-256 of the ack's canonical encoding: what the target stores as the receipt in phase 3."""
    return sha256(encode_ack(a))


ZERO_COMMITMENT = bytes(32)


def validate_outcome(outcome: PacketOutcome, packet_commit: bytes, ack_commit: bytes) -> None:
    """Raise :class:`CodecError` unless the triple is a well-formed outcome record (SPEC.md §5)."""
    if not isinstance(outcome, PacketOutcome):
        raise CodecError("unknown outcome", got=outcome)
    for what, c in (("packet commitment", packet_commit), ("ack commitment", ack_commit)):
        if not isinstance(c, bytes) or len(c) != 32:
            raise CodecError(f"{what} is 32 bytes", got=len(c) if isinstance(c, bytes) else type(c).__name__)
    # a timeout has no ack; an ack commitment is a SHA-256 digest, never all zeros
    if (outcome is PacketOutcome.TIMED_OUT) != (ack_commit == ZERO_COMMITMENT):
        raise CodecError("the ack commitment is zero exactly when the outcome is TIMED_OUT",
                         got=(outcome.name, ack_commit.hex()))


def encode_outcome(outcome: PacketOutcome, packet_commit: bytes, ack_commit: bytes,
                   payees: FeePayees = NO_PAYEES) -> bytes:
    """Relay-chain record of a packet's final outcome (SPEC.md §2.5). ``ack_commit`` is zero on timeout; with any
    payee (§6.10) the record has six fields, else three."""
    validate_outcome(outcome, packet_commit, ack_commit)
    if not isinstance(payees, FeePayees):
        raise CodecError("payees must be FeePayees", got=type(payees).__name__)
    if payees:
        for name, payee in zip(("verify", "execute", "confirm"), payees.as_tuple(), strict=True):
            _check_str(f"{name} payee", payee)
        if outcome is PacketOutcome.TIMED_OUT and payees.execute:
            raise CodecError("a timed-out packet was executed by no one", got=payees.execute)
        return abi.encode(OUTCOME_PAYEES_ABI, (int(outcome), packet_commit, ack_commit, *payees.as_tuple()))
    return abi.encode(OUTCOME_ABI, (int(outcome), packet_commit, ack_commit))


def decode_outcome_record(data: bytes) -> tuple[PacketOutcome, bytes, bytes, FeePayees]:
    """Inverse of :func:`encode_outcome`, payees included; raises :class:`CodecError` on anything else."""
    six = isinstance(data, (bytes, bytearray)) and len(data) != 96
    values = abi.decode(OUTCOME_PAYEES_ABI if six else OUTCOME_ABI, data, "outcome")
    try:
        out = PacketOutcome(values[0])
    except ValueError as exc:
        raise CodecError("unknown outcome", got=values[0]) from exc
    payees = FeePayees(*values[3:]) if six else NO_PAYEES
    if six and not payees:
        raise CodecError("outcome: a record without payees is the three-field form")
    if encode_outcome(out, values[1], values[2], payees) != bytes(data):
        raise CodecError("outcome: not the canonical encoding")
    return out, values[1], values[2], payees


def decode_outcome(data: bytes) -> tuple[PacketOutcome, bytes, bytes]:
    """:func:`decode_outcome_record` without the payees."""
    out, pc, ac, _ = decode_outcome_record(data)
    return out, pc, ac


# --- fast strict decoders -------------------------------------------------------------------------
# Phase 2 decodes every packet; eth_abi's decode-then-re-encode costs ~110 µs a packet. These read the
# values where a canonical encoding keeps them, check in place that the input is the canonical encoding of
# those values byte for byte (offsets, length words, zero padding, nothing after the last tail), then apply
# the value rules: so they accept exactly the canonical encodings of valid values, as the reference decoders
# do (~10 µs a packet).
# tests/unit/protocol/test_codec_fast.py checks the two agree on every vector and on mutations.

_W = 32
_ZERO_PAD = bytes(_W)
_U64 = 2**64
_U8 = 2**8


def _read_dynamic(data: bytes, offset: int) -> bytes:
    end_len = offset + _W
    if end_len > len(data):
        raise CodecError("offset points past the end of the encoding", got=offset)
    length = int.from_bytes(data[offset:end_len], "big")
    if end_len + length > len(data):
        raise CodecError("length runs past the end of the encoding", got=length)
    return data[end_len:end_len + length]


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise CodecError(f"{what}: invalid UTF-8") from exc


_PACKET_DYNAMIC = (0, 1, 2, 5, 6, 7)  # string src, dst, lane; bytes payload; string sender, receiver
_PACKET_KINDS = {int(k): k for k in PacketKind}


def _read_canonical_tails(data: bytes, head_words: int, dynamic: tuple[int, ...], what: str) -> list[bytes]:
    """The raw bytes of the ``dynamic`` fields of an ABI tuple, checking in one pass that their part of the
    encoding is the canonical one: each head offset is where the canonical layout puts its tail (tails in
    field order, straight after the heads), each tail is a length word, the bytes and zero padding to a
    word, and nothing follows the last tail. Equivalent to re-encoding and comparing, without the copy."""
    n = len(data)
    expected = head_words * _W
    raws: list[bytes] = []
    for pos in dynamic:
        head = pos * _W
        if int.from_bytes(data[head:head + _W], "big") != expected:
            raise CodecError(f"{what}: not the canonical encoding", got=f"offset of field {pos}")
        start = expected + _W
        if start > n:
            raise CodecError("offset points past the end of the encoding", got=expected)
        length = int.from_bytes(data[expected:start], "big")
        end = start + length
        if end > n:
            raise CodecError("length runs past the end of the encoding", got=length)
        pad = -length % _W
        if data[end:end + pad] != _ZERO_PAD[:pad]:
            raise CodecError(f"{what}: not the canonical encoding", got=f"padding of field {pos}")
        raws.append(data[start:end])
        expected = end + pad
    if expected != n:
        raise CodecError(f"{what}: not the canonical encoding", got=f"{n - expected} bytes after the last field")
    return raws


def decode_packet(data: bytes) -> Packet:
    """Inverse of :func:`encode_packet`; raises :class:`CodecError` on anything else (SPEC.md §3.3)."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("packet: expected bytes", got=type(data).__name__)
    data = bytes(data)
    if len(data) < 9 * _W:
        raise CodecError("packet: not a valid encoding: too short", got=len(data))
    sequence = int.from_bytes(data[3 * _W:4 * _W], "big")
    kind = int.from_bytes(data[4 * _W:5 * _W], "big")
    timeout = int.from_bytes(data[8 * _W:9 * _W], "big")
    if sequence >= _U64 or kind >= _U8 or timeout >= _U64:
        raise CodecError("integer out of range of its ABI type", got=(sequence, kind, timeout))
    raws = _read_canonical_tails(data, 9, _PACKET_DYNAMIC, "packet")
    src, dst, lane = _text(raws[0], "packet"), _text(raws[1], "packet"), _text(raws[2], "packet")
    sender, receiver = _text(raws[4], "packet"), _text(raws[5], "packet")
    pkind = _PACKET_KINDS.get(kind)  # PacketKind(kind) without the enum call
    if pkind is None:
        try:
            pkind = PacketKind(kind)
        except ValueError as exc:
            raise CodecError("unknown packet kind", got=kind) from exc
    p = Packet(ChainId(src), ChainId(dst), LaneId(lane), sequence, pkind, raws[3], sender, receiver, timeout)
    validate_packet(p)
    return p


def decode_energy(data: bytes) -> EnergyPayload:
    """Inverse of :func:`encode_energy`; raises :class:`CodecError` on anything else."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("energy payload: expected bytes", got=type(data).__name__)
    data = bytes(data)
    if len(data) < 2 * _W:
        raise CodecError("energy payload: not a valid encoding: too short", got=len(data))
    offset = int.from_bytes(data[:_W], "big")
    amount = int.from_bytes(data[_W:2 * _W], "big")
    raw = _read_dynamic(data, offset)
    # the canonical layout is the offset 64, the amount word, then raw's tail (its length word, raw, zero padding
    # to a word) and nothing else: the amount word, the length word and raw are read from where that layout keeps
    # them, so data is canonical exactly when the offset is 64 and the padding is all that follows raw
    pad = -len(raw) % _W
    if offset != 2 * _W or data[3 * _W + len(raw):] != _ZERO_PAD[:pad]:
        raise CodecError("energy payload: not the canonical encoding")
    denom = _text(raw, "energy payload")
    # the rules of encode_energy
    if len(raw) > MAX_STRING:
        raise CodecError(f"denom must be a UTF-8 string of at most {MAX_STRING} bytes", got=denom)
    if not denom:
        raise CodecError("denom is required")
    if amount == 0:
        raise CodecError("amount must be positive", got=0)
    return EnergyPayload(denom, amount)


PAYLOAD_DECODERS: dict[PacketKind, Callable[[bytes], object]] = {
    PacketKind.ENERGY: decode_energy,
    PacketKind.CHARGING_RIGHT: decode_charging_right,
    PacketKind.REPUTATION: decode_reputation,
}


def decode_payload(kind: PacketKind, data: bytes) -> object:
    """Decode a packet's payload by its kind."""
    return PAYLOAD_DECODERS[kind](data)
