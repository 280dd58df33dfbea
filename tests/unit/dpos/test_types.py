"""Header and witness-set encoding: canonical, strict, domain-separated."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chains.dpos.testing import ChainBuilder, resign, test_signer
from chains.dpos.types import (
    HEADER_SIGN_TAG,
    DposHeader,
    DposParams,
    WitnessInfo,
    WitnessSet,
    decode_witness_set,
    encode_witness_set,
    witness_set_hash,
)
from protocol.errors import CodecError


def _w(name: str, i: int, votes: int = 1) -> WitnessInfo:
    return WitnessInfo(name, test_signer("types", i).pubkey, votes)


@pytest.fixture(scope="module")
def headers() -> list[DposHeader]:
    b = ChainBuilder(3, n_standby=1, label="types", maintenance_interval_blocks=5)
    b.extend(12, propose=b.rotate)
    return b.headers


def test_round_trip_every_header(headers: list[DposHeader]) -> None:
    assert any(h.pending_set for h in headers), "fixture should hold boundary headers with a pending set"
    for h in headers:
        raw = h.encode()
        back = DposHeader.decode(raw)
        assert back == h
        assert back.encode() == raw
        assert back.hash() == h.hash()
        assert back.signing_bytes() == h.signing_bytes()


def test_signing_bytes_are_tagged_and_exclude_signature(headers: list[DposHeader]) -> None:
    h = headers[3]
    assert h.signing_bytes().startswith(HEADER_SIGN_TAG)
    other = resign(h, test_signer("types", 99))
    assert other.signing_bytes() == h.signing_bytes()
    assert other.hash() != h.hash(), "the block id covers the signature"


def test_hash_changes_with_every_field(headers: list[DposHeader]) -> None:
    h = headers[6]
    changes: dict[str, Any] = {"height": h.height + 1, "parent_hash": b"\x01" * 32, "timestamp_ms": h.timestamp_ms + 1,
               "slot": h.slot + 1, "producer": "zz", "tx_root": b"\x02" * 32, "state_root": b"\x03" * 32,
               "active_set_hash": b"\x04" * 32, "pending_set": (_w("aa", 1),), "chain_id": "other"}
    for field, value in changes.items():
        changed = dataclasses.replace(h, **{field: value})
        assert changed.signing_bytes() != h.signing_bytes(), field
        assert changed.hash() != h.hash(), field


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda raw: raw + b"\x00", id="trailing byte"),
    pytest.param(lambda raw: raw[:-1], id="truncated signature"),
    pytest.param(lambda raw: raw[:40], id="truncated body"),
    pytest.param(lambda raw: b"", id="empty"),
    pytest.param(lambda raw: b"\x02" + raw[1:], id="unknown version"),
    pytest.param(lambda raw: raw[:-65] + b"\x20" + raw[-64:], id="signature length 32"),
])
def test_decode_is_strict(headers: list[DposHeader], mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CodecError):
        DposHeader.decode(mutate(headers[2].encode()))


def test_decode_rejects_bad_pending_flag_and_unsorted_set(headers: list[DposHeader]) -> None:
    h = headers[1]
    assert h.pending_set is None
    body = h.body()
    flag_at = len(body) - 1
    bad = body[:flag_at] + b"\x02" + h.encode()[len(body):]
    with pytest.raises(CodecError, match="flag"):
        DposHeader.decode(bad)
    unsorted = bytes((2,)) + _w("bb", 1).encode() + _w("aa", 2).encode()
    with pytest.raises(CodecError, match="sorted"):
        decode_witness_set(unsorted)
    dup_key = bytes((2,)) + _w("aa", 1).encode() + WitnessInfo("bb", _w("xx", 1).pubkey, 1).encode()
    with pytest.raises(CodecError, match="key"):
        decode_witness_set(dup_key)
    with pytest.raises(CodecError):
        decode_witness_set(b"\x00")


def test_constructor_rejects_malformed_fields(headers: list[DposHeader]) -> None:
    h = headers[1]
    bad: list[tuple[str, Any]] = [("parent_hash", b"x"), ("height", -1), ("producer", "Bad Name"),
                                  ("signature", b"x" * 10), ("pending_set", ()), ("chain_id", "UPPER")]
    for field, value in bad:
        with pytest.raises(CodecError):
            dataclasses.replace(h, **{field: value})


def test_witness_set_hash_is_canonical() -> None:
    a, b, c = _w("aa", 1), _w("bb", 2), _w("cc", 3)
    s1 = WitnessSet.of([c, a, b])
    s2 = WitnessSet.of([a, b, c])
    assert s1 == s2 and s1.hash == s2.hash == witness_set_hash((a, b, c))
    assert decode_witness_set(encode_witness_set(s1.members)) == s1.members
    assert WitnessSet.of([a, b]).hash != s1.hash
    assert WitnessSet.of([a, b, dataclasses.replace(c, votes=9)]).hash != s1.hash, "votes are committed"
    assert WitnessSet.from_json(s1.to_json()) == s1
    with pytest.raises(CodecError):
        WitnessSet((c, a, b))


def test_params_validate_and_round_trip() -> None:
    p = DposParams(genesis_time_ms=5_000, block_interval_ms=500)
    assert p.genesis_slot == 10
    assert DposParams.from_json(p.to_json()) == p
    with pytest.raises(CodecError):
        DposParams(genesis_time_ms=0, block_interval_ms=0)
    with pytest.raises(CodecError):
        DposParams.from_json({"genesis_time_ms": 0, "nope": 1})


def test_known_answer_encoding() -> None:
    # pinned: a change to the wire format (or to signing) must be deliberate, and other implementations can
    # check themselves against it
    h = DposHeader("dpos-park", 7, bytes(range(32)), 1_700_000_007_250, 1_700_000_007, "w01", b"\x11" * 32,
                   b"\x22" * 32, b"\x33" * 32, (_w("w00", 0, 10), _w("w01", 1, 20)))
    h = resign(h, test_signer("types", 1))
    raw = h.encode()
    assert raw[:11] == b"\x01\x09dpos-park"
    assert raw[11:19] == (7).to_bytes(8, "big") and raw[19:51] == bytes(range(32))
    assert raw[51:59] == (1_700_000_007_250).to_bytes(8, "big") and raw[59:67] == (1_700_000_007).to_bytes(8, "big")
    assert raw[67:71] == b"\x03w01"
    assert raw[-65] == 64 and len(raw) == 322
    assert h.hash().hex() == KAT_HEADER_HASH


KAT_HEADER_HASH = "6e1e8385a973e1130212f118cbc2ef3bcf6e47eb3047f69a3d69388bf534bb45"
