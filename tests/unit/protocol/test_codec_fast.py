"""The fast strict decoders of :mod:`protocol.codec` accept exactly what its eth_abi reference decoders accept.

Differential: every conformance vector (valid and invalid), every single-byte mutation, truncation and
extension of valid encodings, and random valid values at their bounds. Either both decoders return equal
values, or both raise ``codec.invalid``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol.codec import decode_energy as decode_energy_strict
from protocol.codec import decode_energy_reference as decode_energy
from protocol.codec import decode_packet as decode_packet_strict
from protocol.codec import decode_packet_reference as decode_packet
from protocol.codec import encode_energy, encode_packet
from protocol.errors import ParkRelayError
from protocol.types import UINT64_MAX, UINT256_MAX, ChainId, EnergyPayload, LaneId, Packet, PacketKind

VECTORS = Path(protocol.__file__).resolve().parent / "vectors"


def outcome(fn: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except ParkRelayError as exc:
        return "error", exc.code


def same(reference: Callable[[bytes], Any], fast: Callable[[bytes], Any], data: bytes) -> None:
    assert outcome(fast, data) == outcome(reference, data), data.hex()


def mutations(data: bytes, rng: random.Random, step: int = 1) -> Iterator[bytes]:
    """Every ``step``-th byte flipped (one bit) and set to 0xFF, cuts, and a few extensions."""
    for i in range(0, len(data), step):
        b = bytearray(data)
        b[i] ^= 1 << rng.randrange(8)
        yield bytes(b)
        b = bytearray(data)
        b[i] = 0xFF
        yield bytes(b)
    for cut in range(0, len(data), 7):
        yield data[:cut]
    for extra in (b"\x00", bytes(32), b"\x01" + bytes(31)):
        yield data + extra


def _packet_vectors() -> dict[str, Any]:
    return dict(json.loads((VECTORS / "codec_packets.json").read_text(encoding="utf-8")))


def _payload_vectors() -> dict[str, Any]:
    return dict(json.loads((VECTORS / "payloads.json").read_text(encoding="utf-8")))


def test_packet_vectors() -> None:
    doc = _packet_vectors()
    for case in doc["valid"]:
        data = bytes.fromhex(case["encoding_hex"])
        assert decode_packet_strict(data) == decode_packet(data)
    n = 0
    for case in doc["invalid"]:
        if "encoding_hex" in case:
            data = bytes.fromhex(case["encoding_hex"])
            assert outcome(decode_packet_strict, data) == ("error", case["error"]), case["name"]
            n += 1
    assert n > 20


def test_energy_vectors() -> None:
    doc = _payload_vectors()
    n = 0
    for case in doc["valid"] + doc["invalid"]:
        if case["kind"] in (1, "1", "energy") and "encoding_hex" in case:
            same(decode_energy, decode_energy_strict, bytes.fromhex(case["encoding_hex"]))
            n += 1
    assert n >= 5


@pytest.mark.parametrize("case", range(7))
def test_packet_mutations(case: int) -> None:
    rng = random.Random(case)
    doc = _packet_vectors()
    data = bytes.fromhex(doc["valid"][case % len(doc["valid"])]["encoding_hex"])
    for mutated in mutations(data, rng):
        same(decode_packet, decode_packet_strict, mutated)


def test_energy_mutations() -> None:
    rng = random.Random(7)
    for denom in ("kWh", "lane-0/dpos-park/kWh", "é" * 16, "x" * 256):
        for mutated in mutations(encode_energy(EnergyPayload(denom, 12_345)), rng):
            same(decode_energy, decode_energy_strict, mutated)


def _text(rng: random.Random, lo: int, hi: int) -> str:
    alphabet = "abcdefghij-._0123456789/éü€𝔘 "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def test_random_valid_values_round_trip() -> None:
    rng = random.Random(42)
    for _ in range(300):
        denom = _text(rng, 1, 40)
        amount = rng.choice([1, UINT256_MAX, rng.randrange(1, UINT256_MAX)])
        payload = encode_energy(EnergyPayload(denom, amount))
        assert decode_energy_strict(payload) == decode_energy(payload)
        p = Packet(ChainId("a" + str(rng.randrange(10**6))), ChainId("b-park"), LaneId("lane-" + str(rng.randrange(9))),
                   rng.choice([1, UINT64_MAX, rng.randrange(1, UINT64_MAX)]), rng.choice(list(PacketKind)),
                   bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))), _text(rng, 1, 50),
                   _text(rng, 1, 50), rng.choice([1, UINT64_MAX, rng.randrange(1, UINT64_MAX)]))
        raw = encode_packet(p)
        assert decode_packet_strict(raw) == p == decode_packet(raw)
