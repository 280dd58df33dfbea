"""Strict decoding of packets and energy payloads for phase 2's hot path (SPEC.md §3.3).

Phase 2 decodes every packet and, for energy, its payload. :func:`protocol.codec.decode_packet` does it
with eth_abi (decode, then re-encode and compare): about 110 µs a packet, a third of the relay's whole
per-packet budget at 3,000 packets/s. The decoders here accept **exactly the same bytes** with the same
results, by the same definition of strictness — bytes are accepted only if they are the canonical
encoding of the values read from them:

1. read the values where a canonical encoding keeps them (offsets and lengths are followed, bounds
   checked; strings decoded as strict UTF-8);
2. build the canonical encoding of those values (a plain ABI head/tail layout, integers range-checked
   per their ABI type) and require it to equal the input byte for byte;
3. check the value rules of SPEC §2 (:func:`protocol.codec.validate_packet`; for energy the rules of
   :func:`protocol.codec.encode_energy`).

If the input is the canonical encoding of some value, step 1 reads that value back; if it is not the
canonical encoding of anything, step 2 fails. So the accepted set is "canonical encodings of valid
values", which is what ``protocol.codec`` accepts. ``tests/unit/relay_state/test_fastcodec.py`` checks
the equivalence on every conformance vector (valid and invalid) and on mutated encodings.
These belong in ``protocol/codec.py`` once its owner agrees (one decoder per format).
"""

from __future__ import annotations

from protocol.codec import MAX_STRING, validate_packet
from protocol.errors import CodecError
from protocol.types import UINT256_MAX, ChainId, EnergyPayload, LaneId, Packet, PacketKind

__all__ = ["decode_energy_strict", "decode_packet_strict"]

_W = 32
_ZERO_PAD = bytes(_W)
_U64 = 2**64
_U8 = 2**8


def _uint(value: int, bound: int) -> bytes:
    if not 0 <= value < bound:
        raise CodecError("integer out of range of its ABI type", expected=f"< {bound}", got=value)
    return value.to_bytes(_W, "big")


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


def _tail(raw: bytes) -> bytes:
    pad = -len(raw) % _W
    return len(raw).to_bytes(_W, "big") + raw + _ZERO_PAD[:pad]


def _encode(head_words: int, static: dict[int, bytes], dynamic: list[tuple[int, bytes]]) -> bytes:
    """ABI tuple: ``static`` words by position, ``dynamic`` (position, raw bytes) in order."""
    heads: list[bytes] = [b""] * head_words
    tails: list[bytes] = []
    offset = head_words * _W
    for pos, raw in dynamic:
        heads[pos] = offset.to_bytes(_W, "big")
        t = _tail(raw)
        tails.append(t)
        offset += len(t)
    for pos, word in static.items():
        heads[pos] = word
    return b"".join(heads) + b"".join(tails)


_PACKET_DYNAMIC = (0, 1, 2, 5, 6, 7)  # string src, dst, lane; bytes payload; string sender, receiver


def decode_packet_strict(data: bytes) -> Packet:
    """Same as :func:`protocol.codec.decode_packet`, faster."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("packet: expected bytes", got=type(data).__name__)
    data = bytes(data)
    if len(data) < 9 * _W:
        raise CodecError("packet: not a valid encoding: too short", got=len(data))
    words = [int.from_bytes(data[i * _W:(i + 1) * _W], "big") for i in range(9)]
    raws = [_read_dynamic(data, words[i]) for i in _PACKET_DYNAMIC]
    sequence, kind, timeout = words[3], words[4], words[8]
    expected = _encode(9, {3: _uint(sequence, _U64), 4: _uint(kind, _U8), 8: _uint(timeout, _U64)},
                       list(zip(_PACKET_DYNAMIC, raws, strict=True)))
    if expected != data:
        raise CodecError("packet: not the canonical encoding")
    src, dst, lane = (_text(r, "packet") for r in raws[:3])
    sender, receiver = _text(raws[4], "packet"), _text(raws[5], "packet")
    try:
        pkind = PacketKind(kind)
    except ValueError as exc:
        raise CodecError("unknown packet kind", got=kind) from exc
    p = Packet(ChainId(src), ChainId(dst), LaneId(lane), sequence, pkind, raws[3], sender, receiver, timeout)
    validate_packet(p)
    return p


def decode_energy_strict(data: bytes) -> EnergyPayload:
    """Same as :func:`protocol.codec.decode_energy`, faster."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("energy payload: expected bytes", got=type(data).__name__)
    data = bytes(data)
    if len(data) < 2 * _W:
        raise CodecError("energy payload: not a valid encoding: too short", got=len(data))
    offset = int.from_bytes(data[:_W], "big")
    amount = int.from_bytes(data[_W:2 * _W], "big")
    raw = _read_dynamic(data, offset)
    if _encode(2, {1: _uint(amount, UINT256_MAX + 1)}, [(0, raw)]) != data:
        raise CodecError("energy payload: not the canonical encoding")
    denom = _text(raw, "energy payload")
    # the rules of protocol.codec.encode_energy
    if len(raw) > MAX_STRING:
        raise CodecError(f"denom must be a UTF-8 string of at most {MAX_STRING} bytes", got=denom)
    if not denom:
        raise CodecError("denom is required")
    if amount == 0:
        raise CodecError("amount must be positive", got=0)
    return EnergyPayload(denom, amount)
