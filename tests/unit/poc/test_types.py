"""PocHeader: canonical encoding, strict decoding, hash and signing bytes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chains.poc.types import HASH_TAG, SIGN_TAG, PocHeader, decode_header
from protocol.crypto import Ed25519Signer
from protocol.errors import CodecError
from protocol.types import ChainId


def _header(**changes: object) -> PocHeader:
    h = PocHeader(
        chain_id=ChainId("poc-test"), height=7, parent_hash=b"\x01" * 32, timestamp_ms=1_700_000_000_123,
        challenge=b"\x02" * 32, slot=3, difficulty=2000, cumulative_weight=2**70 + 5, farmer="farmer-a",
        farmer_pubkey=b"\x03" * 32, plot_nonce=b"\x04" * 32, k=21, proof=bytes(range(168)), tx_root=b"\x05" * 32,
        state_root=b"\x06" * 32, signature=b"\x07" * 64,
    )
    return replace(h, **changes)


def test_roundtrip_and_layout() -> None:
    h = _header()
    enc = h.encode()
    assert decode_header(enc) == h
    # version, chain id, then fixed-width fields: a change of layout must be deliberate
    assert enc[:10] == b"\x01\x08poc-test"
    assert len(enc) == 1 + 9 + 8 + 32 + 8 + 32 + 4 + 8 + 16 + 9 + 32 + 32 + 1 + 2 + 168 + 32 + 32 + 1 + 64
    assert PocHeader.from_json(h.to_json()) == h


def test_unsigned_and_genesis_shape_roundtrip() -> None:
    h = _header(signature=b"", farmer="", k=0, proof=b"", height=0)
    assert decode_header(h.encode()) == h


def test_hash_excludes_signature_and_signing_bytes_are_tagged() -> None:
    h = _header()
    assert h.hash() == _header(signature=b"\x09" * 64).hash() == _header(signature=b"").hash()
    assert h.hash() != _header(timestamp_ms=h.timestamp_ms + 1).hash()
    assert h.signing_bytes() == SIGN_TAG + h.hash()
    assert HASH_TAG != SIGN_TAG
    signer = Ed25519Signer(b"\x11" * 32)
    assert len(signer.sign(h.signing_bytes())) == 64


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda b: b + b"\x00", id="trailing byte"),
    pytest.param(lambda b: b[:-1], id="truncated"),
    pytest.param(lambda b: b"\x02" + b[1:], id="unknown version"),
    pytest.param(lambda b: b[:-65] + b"\x20" + b[-64:-32], id="32-byte signature"),
    pytest.param(lambda b: b"", id="empty"),
    pytest.param(lambda b: b[:1] + b"\x09" + b[2:], id="chain id length off by one"),
])
def test_decode_rejects_non_canonical(mutate: object) -> None:
    with pytest.raises(CodecError):
        decode_header(mutate(_header().encode()))  # type: ignore[operator]


@pytest.mark.parametrize("changes", [
    {"parent_hash": b"\x01" * 31}, {"challenge": b"\x02" * 33}, {"farmer_pubkey": b""}, {"plot_nonce": b"\x00"},
    {"tx_root": b"\x00" * 31}, {"state_root": b"\x00" * 33}, {"height": -1}, {"height": 2**64},
    {"slot": 2**32}, {"difficulty": True}, {"k": 256}, {"farmer": "Farmer"}, {"farmer": "x" * 40},
    {"chain_id": ChainId("Bad Chain")}, {"proof": b"\x00" * 513}, {"signature": b"\x00" * 63},
])
def test_encode_rejects_out_of_range_fields(changes: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        _header(**changes).encode()


def test_decode_rejects_uppercase_farmer_in_bytes() -> None:
    enc = bytearray(_header().encode())
    i = enc.index(b"farmer-a")
    enc[i] = ord("F")
    with pytest.raises(CodecError):
        decode_header(bytes(enc))


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(CodecError):
        PocHeader.from_json({"chain_id": "poc-test"})
    with pytest.raises(CodecError):
        PocHeader.from_json([1, 2])
    bad = _header().to_json()
    bad["height"] = True
    with pytest.raises(CodecError):
        PocHeader.from_json(bad)
