"""EthereumLightClient and EthHeader (chains/ethereum/SPEC.md §E3): header codec, attestation finality,
forged headers, misbehaviour, expiry, persistence — pure, on synthetic headers — and, marked
``integration``, real anvil headers and real ``eth_getProof`` proofs of a contract with two
``mapping(bytes32 => bytes32)`` at slots 0 and 1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import rlp

from chains.common.procs import spawn
from chains.ethereum.light_client import (
    AttestationLimitError,
    AttestationReplayError,
    ConflictingAttestationError,
    EthereumLightClient,
    HeaderReplayError,
    PendingAheadError,
    PendingLimitError,
    ShallowAttestationError,
)
from chains.ethereum.proofs import EMPTY_TRIE_ROOT, EthStorageProof, mapping_key, storage_slot_of_path
from chains.ethereum.types import HEADER_FIELD_COUNTS, EthHeader, keccak256, rlp_decode, rlp_encode
from protocol.errors import (
    ClientExpiredError,
    ClientFrozenError,
    CodecError,
    HeaderError,
    InvalidProofError,
    MisbehaviourError,
    NotFinalError,
    ReplayError,
)
from protocol.light_client import ClientStatus
from protocol.types import ChainId, ClientId

CID = ClientId("ethereum-3")
CHAIN = ChainId("eth-park")
BRIDGE = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
DEPTH = 2
TRUST = 3_600_000
T0 = 1_790_000_000
VALIDATORS = ("v0", "v1", "v2", "v3")  # power 1 each, total 4: three attesters are a quorum


# -- synthetic headers -----------------------------------------------------------------------------------


def make_header(number: int, parent_hash: bytes, *, timestamp: int | None = None, tag: bytes = b"") -> EthHeader:
    """A Prague header; ``tag`` (extraData) makes a different block at the same height."""
    return EthHeader(
        parent_hash=parent_hash, ommers_hash=keccak256(b"\xc0"), coinbase=bytes(20),
        state_root=keccak256(b"state %d " % number + tag), transactions_root=EMPTY_TRIE_ROOT,
        receipts_root=EMPTY_TRIE_ROOT, logs_bloom=bytes(256), difficulty=0, number=number, gas_limit=30_000_000,
        gas_used=0, timestamp=T0 + number if timestamp is None else timestamp, extra_data=tag,
        mix_hash=bytes(32), nonce=bytes(8), base_fee_per_gas=10**9, withdrawals_root=EMPTY_TRIE_ROOT,
        blob_gas_used=0, excess_blob_gas=0, parent_beacon_block_root=bytes(32), requests_hash=keccak256(b""))


def make_chain(n: int, *, tag: bytes = b"", start: EthHeader | None = None) -> list[EthHeader]:
    """``n`` linked headers: 0..n-1, or continuing ``start``."""
    out: list[EthHeader] = []
    prev = start
    for _ in range(n):
        number = 0 if prev is None else prev.number + 1
        prev = make_header(number, bytes(32) if prev is None else prev.hash, tag=tag)
        out.append(prev)
    return out


CHAIN_A = make_chain(30)
"""The real chain in these tests."""


def new_client(**overrides: Any) -> EthereumLightClient:
    args: dict[str, Any] = {"eth_chain_id": 31337, "bridge_address": BRIDGE, "confirmation_depth": DEPTH,
                            "max_consensus_states": 64, "max_pending_headers": 16, **overrides}
    return EthereumLightClient(CID, CHAIN, TRUST, **args)


def now_of(h: EthHeader) -> int:
    return h.timestamp_ms


def attest_quorum(c: EthereumLightClient, h: EthHeader | tuple[int, bytes], voters: tuple[str, ...] = VALIDATORS[:3],
                  now_ms: int | None = None) -> list[int]:
    height, hhash = (h.height, h.hash) if isinstance(h, EthHeader) else h
    finals: list[int] = []
    for name in voters:
        r = c.attest(name, 1, len(VALIDATORS), height, hhash, height + DEPTH, T0 * 1000 if now_ms is None else now_ms)
        finals.extend(r.final_heights)
    return finals


def feed(c: EthereumLightClient, headers: list[EthHeader]) -> None:
    for h in headers:
        c.process_header(h, now_of(h))


# -- EthHeader codec -----------------------------------------------------------------------------------------


FORK_FIELDS = ("base_fee_per_gas", "withdrawals_root", "blob_gas_used", "excess_blob_gas",
               "parent_beacon_block_root", "requests_hash")


def header_of_fork(count: int) -> EthHeader:
    h = make_header(5, b"\x01" * 32)
    cut = {name: None for name in FORK_FIELDS[count - 15:]}
    return replace(h, **cut)


@pytest.mark.parametrize("count", HEADER_FIELD_COUNTS)
def test_header_round_trips_for_every_fork(count: int) -> None:
    h = header_of_fork(count)
    raw = h.encode()
    assert len(rlp.decode(raw)) == count == h.field_count
    assert raw == rlp.encode(rlp.decode(raw))
    assert EthHeader.decode(raw) == h
    assert h.hash == keccak256(raw)
    assert (h.height, h.timestamp_ms, h.parent_hash) == (5, (T0 + 5) * 1000, b"\x01" * 32)


def _fields(h: EthHeader) -> list[Any]:
    item = rlp_decode(h.encode())
    assert isinstance(item, list)
    return item


@pytest.mark.parametrize("count", [0, 1, 14, 18, 19, 22, 30])
def test_header_with_field_count_of_no_fork_is_rejected(count: int) -> None:
    fields = _fields(make_header(5, bytes(32)))
    fields = (fields + [b""] * 30)[:count]
    with pytest.raises(CodecError, match="field count"):
        EthHeader.decode(rlp_encode(fields))


@pytest.mark.parametrize(("index", "value"), [
    (0, b"\x01" * 31),         # parentHash short
    (2, b"\x01" * 21),         # coinbase long
    (3, b""),                  # stateRoot empty
    (6, b"\x00" * 255),        # logsBloom short
    (8, b"\x00\x05"),          # number with a leading zero
    (8, b"\x01" * 9),          # number above uint64
    (7, b"\x01" * 33),         # difficulty above uint256
    (12, b"x" * 33),           # extraData above 32 bytes
    (14, b"\x00" * 7),         # nonce short
    (15, b"\x00"),             # baseFeePerGas: 0 is the empty string
    (20, b"\x01" * 33),        # requestsHash long
    (4, [b"\x01" * 32]),       # a list where a root belongs
])
def test_header_field_sizes_are_checked(index: int, value: Any) -> None:
    fields = _fields(make_header(5, bytes(32)))
    fields[index] = value
    with pytest.raises(CodecError):
        EthHeader.decode(rlp_encode(fields))


def test_header_rejects_non_canonical_rlp_and_trailing_bytes() -> None:
    raw = make_header(5, bytes(32)).encode()
    assert raw[0] == 0xF9  # a long list: length in two bytes
    padded = b"\xfa\x00" + raw[1:]  # the same length in three bytes, with a leading zero
    for bad in (raw + b"\x00", raw[:-1], padded, rlp_encode(b"header"), b""):
        with pytest.raises(CodecError):
            EthHeader.decode(bad)


def test_header_constructor_rejects_fork_gaps_and_wrong_types() -> None:
    h = make_header(5, bytes(32))
    with pytest.raises(CodecError, match="known fork"):
        replace(h, withdrawals_root=None)  # Cancun fields without Shanghai's
    with pytest.raises(CodecError):
        replace(h, number=-1)
    with pytest.raises(CodecError):
        replace(h, number=True)
    with pytest.raises(CodecError):
        replace(h, state_root="00" * 32)  # type: ignore[arg-type]


def _rpc_json(h: EthHeader) -> dict[str, Any]:
    names = ["parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom",
             "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData", "mixHash", "nonce",
             "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot",
             "requestsHash"]
    out: dict[str, Any] = {"hash": "0x" + h.hash.hex(), "totalDifficulty": "0x0", "transactions": []}
    for name, field in zip(names, _fields(h), strict=False):
        ints = ("difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed",
                "excessBlobGas")
        out[name] = hex(int.from_bytes(field, "big")) if name in ints else "0x" + field.hex()
    return out


def test_header_from_rpc_json() -> None:
    h = make_header(7, b"\x02" * 32, tag=b"x")
    assert EthHeader.from_rpc(_rpc_json(h)) == h
    london = header_of_fork(16)
    assert EthHeader.from_rpc(_rpc_json(london)) == london
    missing = _rpc_json(h)
    del missing["requestsHash"]  # a field of the fork missing: it no longer hashes to the block hash
    with pytest.raises(CodecError, match="hash"):
        EthHeader.from_rpc(missing)
    gap = _rpc_json(h)
    del gap["baseFeePerGas"], gap["hash"]
    with pytest.raises(CodecError, match="known fork"):
        EthHeader.from_rpc(gap)
    for field, bad in (("number", "12"), ("stateRoot", "0xabc"), ("miner", 5), ("parentHash", None)):
        broken = {**_rpc_json(h), field: bad}
        with pytest.raises(CodecError):
            EthHeader.from_rpc(broken)


# -- construction -----------------------------------------------------------------------------------------


INIT = {"eth_chain_id": 31337, "bridge_address": "0x" + BRIDGE.hex(), "confirmation_depth": 2,
        "trusting_period_ms": TRUST}


def test_from_init() -> None:
    c = EthereumLightClient.from_init(CID, CHAIN, INIT)
    assert (c.client_type, c.eth_chain_id, c.bridge_address, c.confirmation_depth) == ("ethereum", 31337, BRIDGE, 2)
    assert (c.max_consensus_states, c.max_pending_headers, c.latest_height, c.final_height) == (512, 1024, 0, 0)
    assert c.status(0) is ClientStatus.ACTIVE
    c2 = EthereumLightClient.from_init(CID, CHAIN, {**INIT, "bridge_address": "0x" + BRIDGE.hex().upper(),
                                                     "max_consensus_states": 4, "max_pending_headers": 9})
    assert (c2.bridge_address, c2.max_consensus_states, c2.max_pending_headers) == (BRIDGE, 4, 9)


@pytest.mark.parametrize("init", [
    {k: v for k, v in INIT.items() if k != "bridge_address"},
    {**INIT, "unknown": 1},
    {**INIT, "eth_chain_id": 0},
    {**INIT, "eth_chain_id": 2**64},
    {**INIT, "eth_chain_id": "31337"},
    {**INIT, "bridge_address": BRIDGE.hex()},
    {**INIT, "bridge_address": "0x" + BRIDGE.hex()[:-2]},
    {**INIT, "bridge_address": "0x" + "zz" * 20},
    {**INIT, "confirmation_depth": -1},
    {**INIT, "confirmation_depth": 2**16 + 1},
    {**INIT, "confirmation_depth": True},
    {**INIT, "trusting_period_ms": 0},
    {**INIT, "max_consensus_states": 0},
    {**INIT, "max_consensus_states": 4097},
    {**INIT, "max_pending_headers": 65537},
    [],
])
def test_from_init_rejects(init: Any) -> None:
    with pytest.raises(CodecError):
        EthereumLightClient.from_init(CID, CHAIN, init)


def test_constructor_rejects_bad_chain_and_address() -> None:
    with pytest.raises(CodecError):
        EthereumLightClient(CID, ChainId("Eth Park"), TRUST, eth_chain_id=1, bridge_address=BRIDGE,
                            confirmation_depth=1)
    with pytest.raises(CodecError):
        EthereumLightClient(CID, CHAIN, TRUST, eth_chain_id=1, bridge_address=BRIDGE[:19], confirmation_depth=1)


# -- attestations and finality ------------------------------------------------------------------------------


def test_header_waits_for_its_attestation() -> None:
    c = new_client()
    h = CHAIN_A[5]
    c.process_header(h, now_of(h))
    assert c.holds(h) and c.pending_count == 1 and c.latest_height == 0
    with pytest.raises(NotFinalError):
        c.final_consensus_state(5)
    r1 = c.attest("v0", 1, 4, 5, h.hash, 7, now_of(h))
    r2 = c.attest("v1", 1, 4, 5, h.hash, 9, now_of(h))
    assert not r1.attested and not r2.attested and (r2.signed_power, r2.total_power) == (2, 4)
    r3 = c.attest("v2", 1, 4, 5, h.hash, 7, now_of(h))
    assert r3.attested and r3.final_heights == (5,) and r3.signed_power == 3
    cs = c.final_consensus_state(5)
    assert (cs.header_hash, cs.state_root, cs.timestamp_ms) == (h.hash, h.state_root, h.timestamp_ms)
    assert c.latest_height == c.final_height == 5 and c.pending_count == 0 and c.holds(h)
    assert c.attested_hash(5) == h.hash and c.has_attested("v1", 5) == h.hash and c.has_attested("v3", 5) is None


def test_attestation_before_the_header() -> None:
    c = new_client()
    assert attest_quorum(c, CHAIN_A[5]) == []
    assert c.expected_hash(5) == CHAIN_A[5].hash and c.latest_height == 0
    c.process_header(CHAIN_A[5], now_of(CHAIN_A[5]))
    assert c.final_heights() == [5] and c.pending_count == 0


def test_parents_of_a_final_header_are_final() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[10])
    feed(c, [CHAIN_A[10], CHAIN_A[9], CHAIN_A[8]])  # each arrives as the parent of a final header
    assert c.final_heights() == [8, 9, 10] and c.pending_count == 0
    assert c.expected_hash(7) == CHAIN_A[7].hash  # the parent of the lowest final header


def test_pending_ancestors_become_final_with_an_attested_descendant() -> None:
    c = new_client()
    feed(c, CHAIN_A[3:10])  # 3..9 pending, in order
    assert c.pending_heights() == list(range(3, 10))
    assert attest_quorum(c, CHAIN_A[8]) == [3, 4, 5, 6, 7, 8]
    assert c.final_heights() == [3, 4, 5, 6, 7, 8] and c.pending_heights() == [9]
    assert c.final_height == 8 and c.final_timestamp_ms == CHAIN_A[8].timestamp_ms


def test_pending_ancestors_arriving_out_of_order() -> None:
    c = new_client()
    feed(c, [CHAIN_A[7], CHAIN_A[5], CHAIN_A[6]])
    attest_quorum(c, CHAIN_A[9])
    c.process_header(CHAIN_A[9], now_of(CHAIN_A[9]))
    assert c.final_heights() == [9]  # 8 missing: the chain below is not reached yet
    c.process_header(CHAIN_A[8], now_of(CHAIN_A[8]))
    assert c.final_heights() == [5, 6, 7, 8, 9] and c.pending_count == 0


def test_exactly_two_thirds_is_not_a_quorum() -> None:
    c = new_client()
    h = CHAIN_A[4]
    assert not c.attest("a", 2, 6, 4, h.hash, 6, 0).attested
    r = c.attest("b", 2, 6, 4, h.hash, 6, 0)
    assert not r.attested and 3 * r.signed_power == 2 * r.total_power
    assert c.attest("c", 1, 6, 4, h.hash, 6, 0).attested


def test_quorum_is_measured_against_the_largest_total() -> None:
    c = new_client()
    h = CHAIN_A[4]
    c.attest("a", 2, 3, 4, h.hash, 6, 0)  # 2 of 3 would be a quorum with the next one …
    r = c.attest("b", 1, 6, 4, h.hash, 6, 0)  # … but the set grew to 6: 3 of 6 is not
    assert not r.attested and r.total_power == 6 and r.signed_power == 3
    assert c.attest("c", 2, 6, 4, h.hash, 6, 0).attested


def test_shallow_attestation_is_rejected() -> None:
    c = new_client()
    h = CHAIN_A[4]
    with pytest.raises(ShallowAttestationError) as info:
        c.attest("v0", 1, 4, 4, h.hash, 4 + DEPTH - 1, 0)
    assert info.value.code == "header.eth.shallow_attestation" and isinstance(info.value, HeaderError)
    with pytest.raises(ShallowAttestationError):
        c.attest("v0", 1, 4, 4, h.hash, 3, 0)  # head below the height
    assert c.has_attested("v0", 4) is None
    c.attest("v0", 1, 4, 4, h.hash, 4 + DEPTH, 0)  # exactly the depth counts
    assert c.has_attested("v0", 4) == h.hash
    zero = new_client(confirmation_depth=0)
    zero.attest("v0", 1, 4, 4, h.hash, 4, 0)


def test_attester_counted_once_and_never_for_two_hashes() -> None:
    c = new_client()
    h, forged = CHAIN_A[4], make_header(4, CHAIN_A[3].hash, tag=b"forged")
    c.attest("v0", 1, 4, 4, h.hash, 6, 0)
    with pytest.raises(AttestationReplayError) as replay:
        c.attest("v0", 1, 4, 4, h.hash, 9, 0)
    assert isinstance(replay.value, ReplayError) and replay.value.code == "packet.replay"
    with pytest.raises(ConflictingAttestationError) as conflict:
        c.attest("v0", 1, 4, 4, forged.hash, 9, 0)
    assert conflict.value.code == "header.eth.attestation_conflict" and isinstance(conflict.value, HeaderError)
    assert c.status(0) is ClientStatus.ACTIVE and c.has_attested("v0", 4) == h.hash
    c.attest("v1", 1, 4, 4, h.hash, 6, 0)
    assert c.attest("v2", 1, 4, 4, h.hash, 6, 0).attested
    with pytest.raises(AttestationReplayError):  # already attested: a late vote adds nothing
        c.attest("v3", 1, 4, 4, h.hash, 6, 0)


@pytest.mark.parametrize(("args", "match"), [
    (("", 1, 4, 4, b"\x01" * 32, 6), "attester"),
    (("x" * 257, 1, 4, 4, b"\x01" * 32, 6), "attester"),
    ((5, 1, 4, 4, b"\x01" * 32, 6), "attester"),
    (("v0", 0, 4, 4, b"\x01" * 32, 6), "power"),
    (("v0", 5, 4, 4, b"\x01" * 32, 6), "power"),
    (("v0", True, 4, 4, b"\x01" * 32, 6), "power"),
    (("v0", 1, 0, 4, b"\x01" * 32, 6), "total_power"),
    (("v0", 1, 4, -1, b"\x01" * 32, 6), "height"),
    (("v0", 1, 4, 4, b"\x01" * 31, 6), "hash"),
    (("v0", 1, 4, 4, "01" * 32, 6), "hash"),
    (("v0", 1, 4, 4, b"\x01" * 32, 2**64), "head_height"),
])
def test_malformed_attestations_are_codec_errors(args: tuple[Any, ...], match: str) -> None:
    c = new_client()
    with pytest.raises(CodecError, match=match):
        c.attest(*args, 0)


def test_attestation_far_above_the_anchor_is_refused() -> None:
    c = new_client(max_attestation_ahead=10)
    # before anything is attested there is no anchor: only the per-attester quota bounds votes
    c.attest("v3", 1, 4, 10_000, b"\x07" * 32, 10_002, 0)
    attest_quorum(c, CHAIN_A[3])  # the lowest attested height anchors the bound before anything is final
    with pytest.raises(AttestationLimitError) as info:
        c.attest("v0", 1, 4, 14, CHAIN_A[14].hash, 20, 0)
    assert info.value.code == "header.eth.attestation_limit" and info.value.expected == "<= 13"
    assert info.value.got == 14
    c.attest("v0", 1, 4, 13, CHAIN_A[13].hash, 20, 0)  # at the bound: counted
    feed(c, CHAIN_A[1:6])  # final up to 3; the anchor is now the final height
    assert c.final_height == 3 and c.attestation_anchor() == 3
    with pytest.raises(AttestationLimitError):
        c.attest("v1", 1, 4, 14, CHAIN_A[14].hash, 20, 0)


def test_open_votes_quota_evicts_only_the_attesters_own_lowest_vote() -> None:
    c = new_client(max_open_attestations=3)
    c.attest("v1", 1, 4, 5, CHAIN_A[5].hash, 20, 0)
    for height in (1, 2, 3, 4):
        c.attest("v0", 1, 4, height, keccak256(b"made up %d" % height), 20, 0)
    assert c.open_votes("v0") == [2, 3, 4]  # its lowest went; the vote just cast always counts
    assert c.has_attested("v0", 1) is None and c.has_attested("v1", 5) == CHAIN_A[5].hash
    c.attest("v0", 1, 4, 1, keccak256(b"again"), 20, 0)  # an evicted height may be attested again (it evicts 2)
    assert c.open_votes("v0") == [1, 3, 4]
    # a vote on the attested hash is closed: it does not count against the quota
    c.attest("v0", 1, 4, 7, CHAIN_A[7].hash, 20, 0)
    assert c.open_votes("v0") == [3, 4, 7]
    attest_quorum(c, CHAIN_A[7], ("v1", "v2"))
    assert c.open_votes("v0") == [3, 4]


def test_attestation_flood_by_one_validator_cannot_stop_finality() -> None:
    """The attack of issue 10: one validator (power 1 of 4) attests 1,536 far-future heights with made-up hashes.
    Its votes only displace its own; the honest three keep finalising, and the state stays bounded."""
    c = EthereumLightClient.from_init(CID, CHAIN, {"eth_chain_id": 31337, "bridge_address": "0x" + BRIDGE.hex(),
                                                   "confirmation_depth": DEPTH, "trusting_period_ms": TRUST})
    chain = make_chain(400)
    flood_refused = 0

    def flood(base: int) -> None:
        nonlocal flood_refused
        for i in range(1536):
            height = base + 1 + i * 7
            try:
                c.attest("v3", 1, 4, height, keccak256(b"lie %d" % height), height + DEPTH, 0)
            except AttestationLimitError:
                flood_refused += 1

    flood(1_000)  # before anything is final: accepted, but only the quota of them is kept
    assert len(c.open_votes("v3")) == c.max_open_attestations
    for top in range(10, 400, 10):
        if top == 200:
            flood(top)  # after finality: beyond the anchor's reach refused, the rest churns v3's own quota
        attest_quorum(c, chain[top])
        feed(c, [h for h in chain[top - 9:top + 1] if not c.holds(h)])
        assert c.final_height == top  # honest attestations keep finalising
    assert flood_refused > 0 and len(c.open_votes("v3")) <= c.max_open_attestations
    size = len(c.to_state())
    print(f"ethereum client state after the flood: {size} bytes, {c.pending_count} pending, "
          f"{len(c.open_votes('v3'))} open votes of the flooder")
    assert size < 200_000


def test_votes_keep_their_set_and_a_quorum_counts_within_one_set() -> None:
    c = new_client()
    h = CHAIN_A[5]
    set_a, set_b = b"\xaa" * 32, b"\xbb" * 32
    # two of four under set A, then the set changes and two of four under set B attest the same hash:
    # 2/4 + 2/4 is no quorum of either set
    for name in ("a0", "a1"):
        c.attest(name, 1, 4, 5, h.hash, 7, 0, set_id=set_a)
    for name in ("b0", "b1"):
        r = c.attest(name, 1, 4, 5, h.hash, 7, 0, set_id=set_b)
    assert not r.attested and (r.signed_power, r.total_power) == (2, 4)
    assert c.attested_hash(5) is None
    # a1's vote keeps counting under set A after a1 left: one more voter of set A makes its quorum
    r = c.attest("a2", 1, 4, 5, h.hash, 7, 0, set_id=set_a)
    assert r.attested and (r.signed_power, r.total_power) == (3, 4)
    assert c.attested_hash(5) == h.hash


def test_faulty_validators_of_several_sets_never_add_up_to_a_freeze() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[6])
    lie = make_header(6, CHAIN_A[5].hash, tag=b"lie").hash
    # one faulty validator in each of five successive sets (power 1 of 4 each): five lies, no quorum
    for epoch in range(5):
        c.attest(f"faulty-{epoch}", 1, 4, 6, lie, 8, 0, set_id=bytes([epoch]) * 32)
    assert c.status(0) is ClientStatus.ACTIVE


def test_set_votes_survive_persistence_and_version_1_states_load() -> None:
    c = new_client()
    c.attest("a0", 1, 4, 5, CHAIN_A[5].hash, 7, 0, set_id=b"\xaa" * 32)
    raw = c.to_state()
    assert json.loads(raw)["votes"][0][-1] == "aa" * 32
    d = EthereumLightClient.from_state(CID, raw)
    assert d.to_state() == raw
    obj = json.loads(raw)
    obj["v"] = 1
    obj["votes"] = [v[:5] for v in obj["votes"]]
    for k in ("max_open_attestations", "max_attestation_ahead", "max_pending_ahead", "max_pending_per_height"):
        del obj[k]
    old = EthereumLightClient.from_state(CID, json.dumps(obj).encode())
    assert old.has_attested("a0", 5) == CHAIN_A[5].hash and json.loads(old.to_state())["v"] == 2


# -- misbehaviour -------------------------------------------------------------------------------------------


def test_two_attested_hashes_at_one_height_freeze() -> None:
    c = new_client()
    h, other = CHAIN_A[6], make_header(6, CHAIN_A[5].hash, tag=b"fork")
    attest_quorum(c, h)
    c.attest("v3", 1, 4, 6, other.hash, 8, 0)  # a minority for another hash: no effect
    c.attest("v0x", 1, 4, 6, other.hash, 8, 0)
    with pytest.raises(MisbehaviourError):
        c.attest("v1x", 1, 4, 6, other.hash, 8, 0)
    assert c.status(0) is ClientStatus.FROZEN and c.frozen_height == 6
    with pytest.raises(ClientFrozenError):
        c.attest("v2x", 1, 4, 7, CHAIN_A[7].hash, 9, 0)
    with pytest.raises(ClientFrozenError):
        c.process_header(h, 0)
    with pytest.raises(ClientFrozenError):
        c.verify_non_membership(6, b"receipts/a/b/1", b"", 0)


def test_quorum_against_the_parent_of_a_final_header_freezes() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[10])
    c.process_header(CHAIN_A[10], 0)
    forged_9 = make_header(9, CHAIN_A[8].hash, tag=b"fork")
    c.attest("v0", 1, 4, 9, forged_9.hash, 12, 0)
    c.attest("v1", 1, 4, 9, forged_9.hash, 12, 0)
    with pytest.raises(MisbehaviourError):
        c.attest("v2", 1, 4, 9, forged_9.hash, 12, 0)
    assert c.frozen_height == 9


def test_authentic_header_linking_against_an_attested_parent_freezes() -> None:
    c = new_client()
    fork_9 = make_header(9, CHAIN_A[8].hash, tag=b"fork")
    attest_quorum(c, fork_9)  # the quorum attests a 9 …
    attest_quorum(c, CHAIN_A[10])  # … and a 10 whose parent is another 9
    with pytest.raises(MisbehaviourError):
        c.process_header(CHAIN_A[10], now_of(CHAIN_A[10]))
    assert c.frozen_height == 10 and c.status(now_of(CHAIN_A[10])) is ClientStatus.FROZEN


def test_two_headers_at_one_height_prove_nothing() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[6])
    feed(c, [CHAIN_A[6]])
    forged = make_header(6, CHAIN_A[5].hash, tag=b"forged")
    with pytest.raises(HeaderError):
        c.check_misbehaviour(CHAIN_A[6], forged, 0)
    with pytest.raises(HeaderError):
        c.check_misbehaviour(CHAIN_A[6], CHAIN_A[7], 0)
    assert c.status(0) is ClientStatus.ACTIVE


# -- forged headers -----------------------------------------------------------------------------------------


def test_forged_header_at_a_final_height_is_rejected_without_freezing() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[6])
    feed(c, [CHAIN_A[6]])
    forged = make_header(6, CHAIN_A[5].hash, tag=b"forged")
    with pytest.raises(HeaderError, match="forged") as info:
        c.process_header(forged, now_of(forged))
    assert type(info.value) is HeaderError
    assert c.status(now_of(forged)) is ClientStatus.ACTIVE and not c.holds(forged)


def test_forged_header_at_an_attested_height_is_rejected() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[6])  # no header yet
    forged = make_header(6, CHAIN_A[5].hash, tag=b"forged")
    with pytest.raises(HeaderError, match="forged"):
        c.process_header(forged, 0)
    assert c.status(0) is ClientStatus.ACTIVE


def test_forged_parent_of_a_final_header_is_rejected() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[10])
    feed(c, [CHAIN_A[10]])
    with pytest.raises(HeaderError, match="forged"):
        c.process_header(make_header(9, CHAIN_A[8].hash, tag=b"forged"), 0)


def test_header_not_extending_the_final_one_is_rejected() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[10])
    feed(c, [CHAIN_A[10]])
    stray = make_header(11, CHAIN_A[9].hash)
    with pytest.raises(HeaderError, match="does not extend"):
        c.process_header(stray, 0)
    c.process_header(CHAIN_A[11], 0)  # the child of the final header waits
    assert c.pending_heights() == [11]


@pytest.mark.parametrize("final_parent", [False, True])
def test_header_links_by_number_and_time(final_parent: bool) -> None:
    c = new_client()
    parent = CHAIN_A[10]
    if final_parent:
        attest_quorum(c, parent)
    feed(c, [parent])
    with pytest.raises(HeaderError, match="one above its parent"):
        c.process_header(make_header(12, parent.hash), 0)
    with pytest.raises(HeaderError, match="before its parent"):
        c.process_header(make_header(11, parent.hash, timestamp=parent.timestamp - 1), 0)
    same_second = make_header(11, parent.hash, timestamp=parent.timestamp)  # sub-second blocks share a second
    c.process_header(same_second, 0)
    assert c.holds(same_second)


def test_held_header_is_a_replay() -> None:
    c = new_client()
    feed(c, [CHAIN_A[3]])
    with pytest.raises(HeaderReplayError) as info:
        c.process_header(CHAIN_A[3], 0)
    assert isinstance(info.value, ReplayError) and isinstance(info.value, HeaderError)
    attest_quorum(c, CHAIN_A[3])
    with pytest.raises(HeaderReplayError):
        c.process_header(CHAIN_A[3], 0)


def test_pending_limit() -> None:
    c = new_client(max_pending_headers=3)
    feed(c, CHAIN_A[1:4])
    with pytest.raises(PendingLimitError) as info:
        c.process_header(CHAIN_A[4], 0)
    assert info.value.code == "header.pending_limit" and isinstance(info.value, HeaderError)
    attest_quorum(c, CHAIN_A[4])  # an expected header is never refused for room: it becomes final
    c.process_header(CHAIN_A[4], 0)
    assert c.final_heights() == [1, 2, 3, 4] and c.pending_count == 0


def test_pending_header_far_above_the_anchor_is_refused() -> None:
    c = new_client(max_pending_ahead=5)
    feed(c, CHAIN_A[1:6])
    with pytest.raises(PendingAheadError) as info:
        c.process_header(CHAIN_A[6], 0)
    assert info.value.code == "header.eth.pending_ahead" and isinstance(info.value, HeaderError)
    assert (info.value.expected, info.value.got) == ("<= 5", 6)
    attest_quorum(c, CHAIN_A[9])  # a quorum moves the anchor; nobody else can
    feed(c, CHAIN_A[6:9])
    assert c.pending_heights() == [1, 2, 3, 4, 5, 6, 7, 8]


def test_forged_flood_at_one_height_cannot_lock_out_the_honest_header() -> None:
    c = new_client(max_pending_per_height=2)
    feed(c, CHAIN_A[1:5])
    feed(c, [make_header(5, CHAIN_A[4].hash, tag=b"forged %d" % i) for i in range(10)])
    assert c.pending_heights().count(5) == 2  # the flood displaced only itself
    feed(c, CHAIN_A[5:8])  # the honest header gets in (a forged one goes), and its children
    assert c.holds(CHAIN_A[5]) and c.pending_heights().count(5) == 2
    feed(c, [make_header(5, CHAIN_A[4].hash, tag=b"more %d" % i) for i in range(10)])
    assert c.holds(CHAIN_A[5])  # a parent of another pending header goes last: childless forged ones first
    attest_quorum(c, CHAIN_A[7])
    assert c.final_heights() == [1, 2, 3, 4, 5, 6, 7] and c.pending_count == 0
    print(f"ethereum client state after the pending flood: {len(c.to_state())} bytes")


def test_full_pool_evicts_the_highest_header_for_a_lower_one() -> None:
    c = new_client(max_pending_headers=6, max_pending_ahead=20)
    forged = [make_header(h, keccak256(b"nowhere %d" % h), tag=b"forged") for h in range(10, 16)]
    feed(c, forged)
    assert c.pending_count == 6
    feed(c, CHAIN_A[1:5])  # each honest header displaces the highest forged one
    assert c.pending_heights() == [1, 2, 3, 4, 10, 11]
    attest_quorum(c, CHAIN_A[5])
    c.process_header(CHAIN_A[5], 0)
    assert c.final_heights() == [1, 2, 3, 4, 5]


def test_forged_pending_headers_are_pruned_by_finality() -> None:
    c = new_client()
    forged_5 = make_header(5, CHAIN_A[4].hash, tag=b"forged")
    forged_6 = make_header(6, forged_5.hash, tag=b"forged")
    orphan_7 = make_header(7, b"\x07" * 32, tag=b"orphan")
    feed(c, [CHAIN_A[5], forged_5, forged_6, CHAIN_A[6], orphan_7])
    assert c.pending_count == 5
    attest_quorum(c, CHAIN_A[5])
    assert c.final_heights() == [5]
    assert not c.holds(forged_5) and not c.holds(forged_6)  # forged_6's parent can no longer be final
    assert c.holds(CHAIN_A[6]) and c.holds(orphan_7)  # might still be final (7's parent is unknown)
    attest_quorum(c, CHAIN_A[6])
    assert not c.holds(orphan_7) and c.pending_count == 0


def test_retained_window_and_floor() -> None:
    c = new_client(max_consensus_states=3)
    attest_quorum(c, CHAIN_A[12])
    feed(c, [CHAIN_A[12], CHAIN_A[11], CHAIN_A[10]])  # recorded top-down
    assert c.final_heights() == [10, 11, 12] and c.floor_height() == 10
    attest_quorum(c, CHAIN_A[13])
    feed(c, [CHAIN_A[13]])
    assert c.final_heights() == [11, 12, 13]  # the lowest is pruned, not the first recorded
    with pytest.raises(HeaderError, match="below"):
        c.process_header(CHAIN_A[9], 0)
    with pytest.raises(HeaderError, match="below"):
        c.attest("v0", 1, 4, 10, CHAIN_A[10].hash, 20, 0)
    with pytest.raises(NotFinalError):
        c.final_consensus_state(10)


def test_floor_follows_the_newest_final_height() -> None:
    c = new_client(max_consensus_states=4)
    feed(c, [CHAIN_A[15], CHAIN_A[16]])
    c.attest("v0", 1, 4, 16, CHAIN_A[16].hash, 30, 0)
    c.attest("v0", 1, 4, 17, CHAIN_A[17].hash, 30, 0)
    assert c.floor_height() == 0
    attest_quorum(c, CHAIN_A[20])
    feed(c, [CHAIN_A[20]])
    assert c.final_heights() == [20] and c.floor_height() == 17
    assert c.pending_heights() == [] and c.has_attested("v0", 16) is None  # dropped below the floor
    assert c.has_attested("v0", 17) == CHAIN_A[17].hash
    with pytest.raises(HeaderError, match="below"):
        c.process_header(CHAIN_A[16], 0)
    with pytest.raises(HeaderError, match="below"):
        c.attest("v1", 1, 4, 16, CHAIN_A[16].hash, 30, 0)
    feed(c, [CHAIN_A[17]])
    assert c.pending_heights() == [17]


def test_attested_hash_of_a_header_at_another_height_finalises_nothing() -> None:
    c = new_client()
    feed(c, [CHAIN_A[7]])
    assert attest_quorum(c, (5, CHAIN_A[7].hash)) == []
    assert c.final_heights() == [] and c.pending_heights() == [7]


# -- proofs against the client (synthetic state) and status -----------------------------------------------------


@dataclass
class SyntheticState:
    header: EthHeader
    proof: EthStorageProof


def synthetic_state(height: int, records: dict[bytes, bytes]) -> SyntheticState:
    """A header whose state root holds the bridge with ``records`` (built with the ``trie`` package)."""
    from trie import HexaryTrie

    storage = HexaryTrie({})
    for path, value in records.items():
        storage[keccak256(storage_slot_of_path(path))] = rlp.encode(value.lstrip(b"\x00"))
    accounts = HexaryTrie({})
    accounts[keccak256(BRIDGE)] = rlp.encode([b"\x01", b"", storage.root_hash, keccak256(b"code")])
    accounts[keccak256(b"\x22" * 20)] = rlp.encode([b"", b"\x05", EMPTY_TRIE_ROOT, keccak256(b"")])
    h = replace(CHAIN_A[height], state_root=accounts.root_hash)
    (path,) = records
    proof = EthStorageProof(tuple(rlp.encode(n) for n in accounts.get_proof(keccak256(BRIDGE))),
                            tuple(rlp.encode(n) for n in storage.get_proof(keccak256(storage_slot_of_path(path)))))
    return SyntheticState(h, proof)


PATH = b"commitments/dpos-park/lane-0/1"
VALUE = keccak256(b"commitment")


def test_proofs_need_a_final_active_client() -> None:
    st = synthetic_state(5, {PATH: VALUE})
    c = new_client()
    c.process_header(st.header, now_of(st.header))
    with pytest.raises(NotFinalError):  # held, pending: not final
        c.verify_membership(5, PATH, VALUE, st.proof.encode(), now_of(st.header))
    attest_quorum(c, st.header)
    now = now_of(st.header)
    c.verify_membership(5, PATH, VALUE, st.proof.encode(), now)
    c.verify_membership(5, PATH, VALUE, st.proof, now)
    with pytest.raises(InvalidProofError):
        c.verify_non_membership(5, PATH, st.proof.encode(), now)
    with pytest.raises(InvalidProofError):
        c.verify_membership(5, PATH, keccak256(b"other"), st.proof.encode(), now)
    with pytest.raises(InvalidProofError):
        c.verify_membership(5, b"nextSequenceSend/dpos-park/lane-0", VALUE, st.proof.encode(), now)
    with pytest.raises(CodecError):
        c.verify_membership(5, PATH, VALUE, b"\x01\x02", now)
    with pytest.raises(NotFinalError):
        c.verify_membership(4, PATH, VALUE, st.proof.encode(), now)
    # expiry: active up to and including final time + trusting period
    c.verify_membership(5, PATH, VALUE, st.proof.encode(), now + TRUST)
    assert c.status(now + TRUST + 1) is ClientStatus.EXPIRED
    for op in (lambda t: c.verify_membership(5, PATH, VALUE, st.proof.encode(), t),
               lambda t: c.verify_non_membership(5, PATH, st.proof.encode(), t),
               lambda t: c.process_header(CHAIN_A[6], t),
               lambda t: c.attest("v0", 1, 4, 6, CHAIN_A[6].hash, 9, t)):
        with pytest.raises(ClientExpiredError):
            op(now + TRUST + 1)


def test_other_bridge_address_fails_the_proof() -> None:
    st = synthetic_state(5, {PATH: VALUE})
    c = new_client(bridge_address=b"\x22" * 20)
    attest_quorum(c, st.header)
    feed(c, [st.header])
    with pytest.raises(InvalidProofError):
        c.verify_membership(5, PATH, VALUE, st.proof.encode(), now_of(st.header))


# -- persistence ----------------------------------------------------------------------------------------------


def busy_client(order: int = 0) -> EthereumLightClient:
    """A client holding final headers, an attested height without its header, open votes and pending forks."""
    c = new_client()
    attest_quorum(c, CHAIN_A[10])
    feed(c, [CHAIN_A[10], CHAIN_A[9]])
    attest_quorum(c, CHAIN_A[14])  # attested, header not held
    pending = [CHAIN_A[11], CHAIN_A[12], make_header(12, CHAIN_A[11].hash, tag=b"fork"), CHAIN_A[20]]
    votes = [("v0", 16), ("v1", 16), ("v2", 17)]
    if order:
        pending.reverse()
        votes.reverse()
    feed(c, pending)
    for name, height in votes:
        c.attest(name, 1, 4, height, CHAIN_A[height].hash, 30, 0)
    return c


def test_state_round_trip_and_behaviour() -> None:
    c = busy_client()
    raw = c.to_state()
    obj = json.loads(raw)
    assert obj["type"] == "ethereum" and obj["v"] == 2 and len(obj["pending"]) == 4 and len(obj["votes"]) == 9
    d = EthereumLightClient.from_state(CID, raw)
    assert d.to_state() == raw
    assert (d.final_heights(), d.final_height, d.final_timestamp_ms) == ([9, 10], 10, c.final_timestamp_ms)
    assert d.expected_hash(14) == CHAIN_A[14].hash and d.pending_heights() == c.pending_heights()
    # both continue identically
    steps = [lambda x: x.attest("v3", 1, 4, 16, CHAIN_A[16].hash, 30, 0),
             lambda x: x.process_header(CHAIN_A[13], 0),
             lambda x: x.process_header(CHAIN_A[14], 0),
             lambda x: x.process_header(CHAIN_A[16], 0),
             lambda x: x.process_header(CHAIN_A[8], 0)]
    for step in steps:
        outcomes = []
        for client in (c, d):
            try:
                step(client)
                outcomes.append("ok")
            except Exception as exc:  # compared across the two clients
                outcomes.append(f"{type(exc).__name__}: {exc}")
        assert outcomes[0] == outcomes[1]
        assert c.to_state() == d.to_state()
    assert c.final_heights() == [8, 9, 10, 11, 12, 13, 14, 16]


def test_state_is_independent_of_arrival_order() -> None:
    assert busy_client(0).to_state() == busy_client(1).to_state()


def test_frozen_state_round_trips() -> None:
    c = new_client()
    attest_quorum(c, CHAIN_A[6])
    with pytest.raises(MisbehaviourError):
        attest_quorum(c, make_header(6, CHAIN_A[5].hash, tag=b"fork"), ("w0", "w1", "w2"))
    d = EthereumLightClient.from_state(CID, c.to_state())
    assert d.status(0) is ClientStatus.FROZEN and d.frozen_height == 6 and d.freeze_reason == c.freeze_reason
    assert d.to_state() == c.to_state()


def _mutated(change: Any) -> bytes:
    obj = json.loads(busy_client().to_state())
    change(obj)
    return json.dumps(obj).encode()


@pytest.mark.parametrize("data", [
    b"not json",
    b"[]",
    _mutated(lambda o: o.update(type="dpos")),
    _mutated(lambda o: o.update(v=3)),
    _mutated(lambda o: o["votes"][0].__setitem__(5, "ab" * 33)),
    _mutated(lambda o: o.pop("max_pending_ahead")),
    _mutated(lambda o: o["base"].update(client_id="ethereum-9")),
    _mutated(lambda o: o.update(bridge_address="0x1234")),
    _mutated(lambda o: o.update(confirmation_depth=-1)),
    _mutated(lambda o: o["final_parents"].pop()),
    _mutated(lambda o: o["attested"][0].__setitem__(1, "ab")),
    _mutated(lambda o: o["votes"].append(o["votes"][0])),
    _mutated(lambda o: o["votes"][0].__setitem__(3, 9)),
    _mutated(lambda o: o["pending"].append("c0")),
    _mutated(lambda o: o.pop("pending")),
])
def test_malformed_state_is_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        EthereumLightClient.from_state(CID, data)


# -- real anvil headers and eth_getProof ------------------------------------------------------------------------

ANVIL = Path(os.environ.get("PARKRELAY_ANVIL") or Path(__file__).resolve().parents[2] / "chains" / "ethereum"
             / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil")

# TwoMaps, compiled with solcjs 0.8.37 (`solcjs --bin --optimize TwoMaps.sol`):
#
#   // SPDX-License-Identifier: Apache-2.0
#   pragma solidity 0.8.37;
#
#   contract TwoMaps {
#       mapping(bytes32 => bytes32) public commitments;
#       mapping(bytes32 => bytes32) public receipts;
#
#       function setCommitment(bytes32 key, bytes32 value) external { commitments[key] = value; }
#
#       function setReceipt(bytes32 key, bytes32 value) external { receipts[key] = value; }
#   }
TWO_MAPS_BYTECODE = bytes.fromhex(
    "6080604052348015600e575f5ffd5b5061014b8061001c5f395ff3fe608060405234801561000f575f5ffd5b506004361061004a575f35"
    "60e01c80631167f3fc1461004e578063839df9451461006f578063b661c150146100a0578063ef6cf04d146100bf575b5f5ffd5b61006d"
    "61005c3660046100de565b5f9182526020829052604090912055565b005b61008e61007d3660046100fe565b5f60208190529081526040"
    "90205481565b60405190815260200160405180910390f35b61006d6100ae3660046100de565b5f918252600160205260409091205556"
    "5b61008e6100cd3660046100fe565b60016020525f908152604090205481565b5f5f604083850312156100ef575f5ffd5b505080359260"
    "20909101359150565b5f6020828403121561010e575f5ffd5b503591905056fea264697066735822122089f765b9cde9ae4099fb09ea76"
    "281a453b1c7aba6754b6d0e137776015c4bf1a64736f6c63430008250033")
ANVIL_ACCOUNT_1 = bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8")
"""anvil's second dev account: an account without storage."""
SET_COMMITMENT = keccak256(b"setCommitment(bytes32,bytes32)")[:4]
SET_RECEIPT = keccak256(b"setReceipt(bytes32,bytes32)")[:4]


@dataclass
class Park:
    """An automine anvil with TwoMaps deployed and records written (heights recorded)."""

    w3: Any
    contract: bytes
    commitments: dict[int, bytes]
    """sequence -> value written to commitments[(dpos-park, lane-0, sequence)]"""
    receipts: dict[int, bytes]
    """sequence -> value written to receipts[(dpos-park, lane-0, sequence)]"""
    written_at: int
    """Height after which every record above is written."""
    deleted_at: int
    """Height at which commitments[1] was set back to 0 (deleted)."""

    def block(self, height: int) -> dict[str, Any]:
        result: dict[str, Any] = self.w3.provider.make_request("eth_getBlockByNumber", [hex(height), False])["result"]
        return result

    def proof(self, path: bytes, height: int, address: bytes | None = None) -> EthStorageProof:
        slot = storage_slot_of_path(path)
        addr = self.w3.to_checksum_address(address or self.contract)
        result = self.w3.eth.get_proof(addr, ["0x" + slot.hex()], height)
        return EthStorageProof.from_rpc(result, slot)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def park() -> Iterator[Park]:
    if not ANVIL.is_file():
        pytest.skip(f"anvil not installed at {ANVIL} (make setup)")
    from web3 import Web3

    port = _free_port()
    proc = spawn([str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 10}))
        deadline = time.monotonic() + 20
        while not w3.is_connected():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not start on port {port}")
            time.sleep(0.1)
        sender = w3.eth.accounts[0]

        def send(tx: dict[str, Any]) -> Any:
            receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({"from": sender, **tx}))
            assert receipt["status"] == 1
            return receipt

        deployed = send({"data": "0x" + TWO_MAPS_BYTECODE.hex()})
        address = bytes.fromhex(deployed["contractAddress"][2:])
        to = w3.to_checksum_address(address)
        commitments = {seq: keccak256(b"c%d" % seq) for seq in range(1, 41)}
        commitments[3] = b"\x00\x00" + commitments[3][2:]  # leading zero bytes are stripped in storage
        receipts = {seq: keccak256(b"r%d" % seq) for seq in range(1, 6)}
        for seq, value in commitments.items():
            send({"to": to, "data": "0x" + (SET_COMMITMENT + mapping_key("dpos-park", "lane-0", seq) + value).hex()})
        for seq, value in receipts.items():
            send({"to": to, "data": "0x" + (SET_RECEIPT + mapping_key("dpos-park", "lane-0", seq) + value).hex()})
        written_at = w3.eth.block_number
        deleted = send({"to": to, "data": "0x" + (SET_COMMITMENT + mapping_key("dpos-park", "lane-0", 1)
                                                  + bytes(32)).hex()})
        for _ in range(DEPTH + 2):
            w3.provider.make_request("evm_mine", [])
        yield Park(w3, address, commitments, receipts, written_at, deleted["blockNumber"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finalised_client(park: Park, *heights: int, bridge: bytes | None = None) -> EthereumLightClient:
    """A client of the anvil chain with ``heights`` attested and their headers fed."""
    c = new_client(bridge_address=bridge or park.contract, max_consensus_states=4096, max_pending_headers=4096)
    head = park.w3.eth.block_number
    for height in heights:
        header = EthHeader.from_rpc(park.block(height))
        for name in VALIDATORS[:3]:
            c.attest(name, 1, 4, height, header.hash, head, header.timestamp_ms)
        c.process_header(header, header.timestamp_ms)
    return c


@pytest.mark.integration
def test_real_headers_hash_to_their_block_hash(park: Park) -> None:
    head = park.w3.eth.block_number
    assert head > 40
    prev: EthHeader | None = None
    for height in range(head + 1):
        raw = park.block(height)
        header = EthHeader.from_rpc(raw)
        assert header.hash.hex() == raw["hash"][2:] and header.height == height
        assert keccak256(header.encode()) == header.hash and header.field_count == 21
        assert EthHeader.decode(header.encode()) == header
        assert EthHeader.from_rpc(park.w3.eth.get_block(height)) == header  # web3.py's formatted block too
        assert header.timestamp_ms == int(raw["timestamp"], 16) * 1000
        if prev is not None:
            assert header.parent_hash == prev.hash
        prev = header


@pytest.mark.integration
def test_real_headers_in_the_client(park: Park) -> None:
    head = park.w3.eth.block_number
    c = finalised_client(park, head - DEPTH)
    for height in range(head - DEPTH - 1, head - DEPTH - 11, -1):  # parents of final headers
        c.process_header(EthHeader.from_rpc(park.block(height)), 0)
    assert c.final_heights() == list(range(head - DEPTH - 10, head - DEPTH + 1))
    with pytest.raises(ShallowAttestationError):
        c.attest("v0", 1, 4, head - 1, EthHeader.from_rpc(park.block(head - 1)).hash, head, 0)


@pytest.mark.integration
def test_real_membership_and_non_membership(park: Park) -> None:
    h = park.written_at
    c = finalised_client(park, h, park.deleted_at)
    now = EthHeader.from_rpc(park.block(park.deleted_at)).timestamp_ms
    for seq in (1, 2, 3, 40):
        path = b"commitments/dpos-park/lane-0/%d" % seq
        c.verify_membership(h, path, park.commitments[seq], park.proof(path, h).encode(), now)
    for seq in (1, 5):
        path = b"receipts/dpos-park/lane-0/%d" % seq
        c.verify_membership(h, path, park.receipts[seq], park.proof(path, h).encode(), now)
    for path in (b"commitments/dpos-park/lane-0/41", b"receipts/dpos-park/lane-0/6", b"receipts/other/lane-0/1",
                 b"commitments/dpos-park/lane-1/2"):
        c.verify_non_membership(h, path, park.proof(path, h).encode(), now)
    # the deleted commitment: absent after its deletion, present before
    deleted = b"commitments/dpos-park/lane-0/1"
    c.verify_non_membership(park.deleted_at, deleted, park.proof(deleted, park.deleted_at).encode(), now)
    with pytest.raises(InvalidProofError):
        c.verify_membership(park.deleted_at, deleted, park.commitments[1],
                            park.proof(deleted, park.deleted_at).encode(), now)
    with pytest.raises(InvalidProofError):
        c.verify_non_membership(h, deleted, park.proof(deleted, h).encode(), now)


@pytest.mark.integration
def test_real_proof_rejections(park: Park) -> None:
    h = park.written_at
    c = finalised_client(park, h)
    now = EthHeader.from_rpc(park.block(h)).timestamp_ms
    path = b"commitments/dpos-park/lane-0/2"
    value = park.commitments[2]
    proof = park.proof(path, h)
    raw = proof.encode()
    c.verify_membership(h, path, value, raw, now)

    def tamper(nodes: tuple[bytes, ...], index: int) -> tuple[bytes, ...]:
        node = nodes[index]
        return (*nodes[:index], node[:-3] + bytes([node[-3] ^ 1]) + node[-2:], *nodes[index + 1:])

    bad_proofs = [
        EthStorageProof(tamper(proof.account_proof, 0), proof.storage_proof),
        EthStorageProof(tamper(proof.account_proof, len(proof.account_proof) - 1), proof.storage_proof),
        EthStorageProof(proof.account_proof, tamper(proof.storage_proof, 0)),
        EthStorageProof(proof.account_proof, tamper(proof.storage_proof, len(proof.storage_proof) - 1)),
        EthStorageProof(proof.account_proof, proof.storage_proof[:-1]),
        EthStorageProof(proof.account_proof[:-1], proof.storage_proof),
        EthStorageProof(proof.account_proof, (*proof.storage_proof, proof.storage_proof[-1])),
        EthStorageProof(proof.storage_proof, proof.account_proof),
        park.proof(b"commitments/dpos-park/lane-0/3", h),  # another slot's proof
        park.proof(path, h, address=ANVIL_ACCOUNT_1),  # another account's proof
        park.proof(path, h - 1),  # the proof of an earlier state
    ]
    for bad in bad_proofs:
        with pytest.raises(InvalidProofError):
            c.verify_membership(h, path, value, bad.encode(), now)
    with pytest.raises(InvalidProofError):  # wrong value
        c.verify_membership(h, path, park.commitments[3], raw, now)
    with pytest.raises(InvalidProofError):  # the proof names another slot than the path
        c.verify_membership(h, b"receipts/dpos-park/lane-0/2", value, raw, now)
    with pytest.raises(InvalidProofError):  # a path the bridge does not store
        c.verify_membership(h, b"escrow/kWh", value, raw, now)
    with pytest.raises(CodecError):
        c.verify_membership(h, path, value, raw[:-1], now)
    with pytest.raises(NotFinalError):
        c.verify_membership(h - 1, path, value, park.proof(path, h - 1).encode(), now)
    other = finalised_client(park, h, bridge=b"\x11" * 20)  # a client of another bridge address
    with pytest.raises(InvalidProofError):
        other.verify_membership(h, path, value, raw, now)
    with pytest.raises(ClientExpiredError):
        c.verify_membership(h, path, value, raw, now + TRUST + 1)
    # frozen: a quorum attests another hash at a final height
    forged = replace(EthHeader.from_rpc(park.block(h)), extra_data=b"forged")
    head = park.w3.eth.block_number
    c.attest("w0", 1, 4, h, forged.hash, head, now)
    c.attest("w1", 1, 4, h, forged.hash, head, now)
    with pytest.raises(MisbehaviourError):
        c.attest("w2", 1, 4, h, forged.hash, head, now)
    with pytest.raises(ClientFrozenError):
        c.verify_membership(h, path, value, raw, now)
