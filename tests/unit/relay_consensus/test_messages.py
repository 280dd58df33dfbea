"""Consensus messages: sign bytes, the two signature schemes, checks, evidence and the wire codec."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from protocol.certificate import commit_sign_bytes
from protocol.codec import sha256
from protocol.errors import CodecError, HeaderError, ProtocolError, SignatureError
from protocol.types import ChainId
from relay.chain.consensus import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Proposal,
    ValidatorKey,
    Vote,
    VoteType,
    decode_message,
    encode_message,
    proposal_sign_bytes,
    recover_eth_address,
    verify_evidence,
    vote_sign_bytes,
)
from relay.chain.consensus.messages import (
    header_hash,
    sign_proposal,
    sign_vote,
    verify_proposal_signature,
    verify_vote_signature,
)
from tests.unit.relay_consensus.sim import CHAIN, SimApp, make_vset, validator_key

KEYS = [validator_key(i) for i in range(4)]
VSET = make_vset(KEYS, [1, 1, 1, 1])
SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _block(round_: int = 0, salt: bytes = b"") -> tuple[bytes, Any]:
    return SimApp("test", lambda _h: VSET).make_block(1, round_, salt)


BLOCK, HEADER = _block()
BH = header_hash(HEADER)


def _precommit(i: int = 1, bh: bytes | None = BH, round_: int = 2) -> Vote:
    return sign_vote(KEYS[i], CHAIN, VoteType.PRECOMMIT, 1, round_, bh, i, with_secp256k1=True)


def _prevote(i: int = 1, bh: bytes | None = BH, round_: int = 2) -> Vote:
    return sign_vote(KEYS[i], CHAIN, VoteType.PREVOTE, 1, round_, bh, i, with_secp256k1=True)


def _proposal(i: int = 1, round_: int = 2, pol_round: int = -1) -> Proposal:
    return sign_proposal(KEYS[i], CHAIN, 1, round_, pol_round, HEADER, BLOCK, i)


# --- sign bytes ---------------------------------------------------------------------------------------


def test_precommit_sign_bytes_are_the_commit_sign_bytes() -> None:
    for round_ in (0, 1, 7, 2**40):
        assert vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, round_, BH) == commit_sign_bytes(HEADER, round_)


def test_sign_bytes_layout_is_the_documented_abi_encoding() -> None:
    def digest(tag: str, bh: bytes) -> bytes:
        return sha256(abi_encode(["string", "string", "uint64", "uint64", "bytes32"], [tag, CHAIN, 1, 3, bh]))

    assert vote_sign_bytes(CHAIN, VoteType.PREVOTE, 1, 3, BH) == digest("parkrelay/relay-prevote/v1", BH)
    assert vote_sign_bytes(CHAIN, VoteType.PREVOTE, 1, 3, None) == digest("parkrelay/relay-prevote/v1", bytes(32))
    assert (vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, 3, None)
            == digest("parkrelay/relay-precommit-nil/v1", bytes(32)))
    assert vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, 3, BH) == digest("parkrelay/relay-commit/v1", BH)
    assert proposal_sign_bytes(CHAIN, 1, 3, -1, BH, BLOCK) == sha256(abi_encode(
        ["string", "string", "uint64", "uint64", "int64", "bytes32", "bytes32"],
        ["parkrelay/relay-proposal/v1", CHAIN, 1, 3, -1, BH, sha256(BLOCK)]))


def test_every_kind_of_message_signs_different_bytes() -> None:
    """Domain separation: no prevote, nil precommit or proposal signature is a commit signature."""
    digests = {
        "prevote": vote_sign_bytes(CHAIN, VoteType.PREVOTE, 1, 0, BH),
        "prevote nil": vote_sign_bytes(CHAIN, VoteType.PREVOTE, 1, 0, None),
        "precommit": vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, 0, BH),
        "precommit nil": vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, 0, None),
        "proposal": proposal_sign_bytes(CHAIN, 1, 0, -1, BH, BLOCK),
        "other chain": vote_sign_bytes(ChainId("relay-other"), VoteType.PRECOMMIT, 1, 0, BH),
        "other round": vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, 1, 1, BH),
    }
    assert len(set(digests.values())) == len(digests)
    assert all(len(d) == 32 for d in digests.values())


# --- secp256k1 ----------------------------------------------------------------------------------------


def test_secp256k1_signature_is_r_s_v_and_recovers_to_the_eth_address() -> None:
    vote = _precommit(2)
    sig = vote.secp256k1_sig
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert 0 < int.from_bytes(sig[32:64], "big") <= SECP_N // 2  # low s
    # The address as an EVM computes it, from the secret independently of the code under test.
    secret = PrivateKey(bytes.fromhex(_secp_secret_hex(2)))
    address = keccak(secret.public_key.format(compressed=False)[1:])[-20:]
    assert address == KEYS[2].eth_address == VSET.validators[2].eth_address
    assert recover_eth_address(commit_sign_bytes(HEADER, 2), sig) == address


def _secp_secret_hex(i: int) -> str:
    return hashlib.sha256(f"parkrelay-test-seed/relay-consensus/0/{i}/secp256k1".encode()).hexdigest()


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


@pytest.mark.parametrize(("name", "malleate"), [
    ("64 bytes", lambda sig: sig[:64]),
    ("v = 0 (raw recovery id)", lambda sig: sig[:64] + bytes([sig[64] - 27])),
    ("v = 29", lambda sig: sig[:64] + b"\x1d"),
    ("high s (the malleable twin)", _high_s),
    ("r = 0", lambda sig: bytes(32) + sig[32:]),
])
def test_non_canonical_secp256k1_signatures_are_refused(name: str, malleate: Callable[[bytes], bytes]) -> None:
    sig = _precommit().secp256k1_sig
    with pytest.raises(SignatureError):
        recover_eth_address(commit_sign_bytes(HEADER, 2), malleate(sig))


# --- vote and proposal checks ---------------------------------------------------------------------------


def _replace(**changes: Any) -> Callable[[Any], Any]:
    return lambda m: dataclasses.replace(m, **changes)


VOTE_CASES: list[tuple[str, Callable[[], Vote], type[ProtocolError]]] = [
    ("unknown validator index", lambda: _replace(validator_index=4)(_precommit()), SignatureError),
    ("negative validator index", lambda: _replace(validator_index=-1)(_precommit()), SignatureError),
    ("signed by another validator", lambda: _replace(validator_index=2)(_precommit(1)), SignatureError),
    ("bad ed25519 signature", lambda: _replace(ed25519_sig=bytes(64))(_precommit()), SignatureError),
    ("signature for another round", lambda: _replace(round=3)(_precommit()), SignatureError),
    ("prevote signature as precommit", lambda: _replace(type=VoteType.PRECOMMIT)(_prevote()), SignatureError),
    ("precommit without secp256k1", lambda: _replace(secp256k1_sig=b"")(_precommit()), SignatureError),
    ("secp256k1 of another validator", lambda: _replace(secp256k1_sig=_precommit(3).secp256k1_sig)(_precommit(1)),
     SignatureError),
    ("high-s secp256k1", lambda: _replace(secp256k1_sig=_high_s(_precommit().secp256k1_sig))(_precommit()),
     SignatureError),
    ("prevote carrying secp256k1", lambda: _replace(secp256k1_sig=_precommit().secp256k1_sig)(_prevote()),
     SignatureError),
    ("nil precommit carrying secp256k1",
     lambda: _replace(secp256k1_sig=_precommit().secp256k1_sig)(_precommit(bh=None)), SignatureError),
    ("zero block hash", lambda: _replace(block_hash=bytes(32))(_precommit()), CodecError),
    ("short block hash", lambda: _replace(block_hash=BH[:31])(_precommit()), CodecError),
]


def test_valid_votes_verify() -> None:
    for vote in (_prevote(), _prevote(bh=None), _precommit(), _precommit(bh=None)):
        verify_vote_signature(VSET, CHAIN, vote)


@pytest.mark.parametrize(("name", "make", "error"), VOTE_CASES, ids=[c[0] for c in VOTE_CASES])
def test_invalid_votes_are_refused(name: str, make: Callable[[], Vote], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        verify_vote_signature(VSET, CHAIN, make())


def test_a_validator_without_an_eth_address_signs_precommits_with_ed25519_only() -> None:
    key = ValidatorKey(hashlib.sha256(b"parkrelay-test-seed/relay-consensus/no-secp").digest())
    assert key.eth_address == bytes(20)
    vset = make_vset([*KEYS[:3], key], [1, 1, 1, 1])
    plain = sign_vote(key, CHAIN, VoteType.PRECOMMIT, 1, 0, BH, 3, with_secp256k1=False)
    assert plain.secp256k1_sig == b""
    verify_vote_signature(vset, CHAIN, plain)
    with pytest.raises(SignatureError):  # a secp256k1 signature where the set names no address
        extra = _precommit(3, round_=0).secp256k1_sig
        verify_vote_signature(vset, CHAIN, dataclasses.replace(plain, secp256k1_sig=extra))
    with pytest.raises(ValueError):
        key.sign_secp256k1(BH)


def test_votes_of_another_chain_do_not_verify() -> None:
    with pytest.raises(SignatureError):
        verify_vote_signature(VSET, ChainId("relay-other"), _precommit())


PROPOSAL_CASES: list[tuple[str, Callable[[], Proposal], type[ProtocolError]]] = [
    ("pol_round = round", lambda: _proposal(round_=2, pol_round=2), CodecError),
    ("pol_round < -1", lambda: _proposal(round_=2, pol_round=-2), CodecError),
    ("unknown proposer index", lambda: _replace(proposer_index=9)(_proposal()), SignatureError),
    ("bad signature", lambda: _replace(signature=bytes(64))(_proposal()), SignatureError),
    ("block swapped", lambda: _replace(block=BLOCK + b"x")(_proposal()), SignatureError),
    ("pol_round changed", lambda: _replace(pol_round=0)(_proposal()), SignatureError),
    ("header of another height", lambda: _replace(height=2)(_proposal()), HeaderError),
    ("header of another chain",
     lambda: _replace(header=dataclasses.replace(HEADER, chain_id="relay-other"))(_proposal()), HeaderError),
    ("header names another set",
     lambda: _replace(header=dataclasses.replace(HEADER, validators_hash=bytes(32)))(_proposal()), HeaderError),
    ("short header hash field",
     lambda: _replace(header=dataclasses.replace(HEADER, data_hash=b"\x01" * 31))(_proposal()), CodecError),
]


def test_valid_proposals_verify() -> None:
    verify_proposal_signature(VSET, CHAIN, _proposal())
    verify_proposal_signature(VSET, CHAIN, _proposal(round_=5, pol_round=4))


@pytest.mark.parametrize(("name", "make", "error"), PROPOSAL_CASES, ids=[c[0] for c in PROPOSAL_CASES])
def test_invalid_proposals_are_refused(name: str, make: Callable[[], Proposal], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        verify_proposal_signature(VSET, CHAIN, make())


# --- evidence -------------------------------------------------------------------------------------------


def test_duplicate_vote_evidence_verifies_only_for_a_real_conflict() -> None:
    a, b = _prevote(bh=BH), _prevote(bh=None)
    verify_evidence(VSET, CHAIN, DuplicateVoteEvidence(a, b))
    with pytest.raises(SignatureError):
        verify_evidence(VSET, CHAIN, DuplicateVoteEvidence(a, a))
    with pytest.raises(SignatureError):  # different rounds are no conflict
        verify_evidence(VSET, CHAIN, DuplicateVoteEvidence(a, _prevote(bh=None, round_=3)))
    with pytest.raises(SignatureError):  # different validators are no conflict
        verify_evidence(VSET, CHAIN, DuplicateVoteEvidence(a, _prevote(i=2, bh=None)))
    with pytest.raises(SignatureError):  # a forged vote is no evidence
        verify_evidence(VSET, CHAIN, DuplicateVoteEvidence(a, dataclasses.replace(b, ed25519_sig=bytes(64))))


def test_conflicting_proposal_evidence() -> None:
    block2, header2 = _block(salt=b"other")
    p = _proposal()
    q = sign_proposal(KEYS[1], CHAIN, 1, 2, -1, header2, block2, 1)
    verify_evidence(VSET, CHAIN, ConflictingProposalEvidence(p, q))
    with pytest.raises(SignatureError):
        verify_evidence(VSET, CHAIN, ConflictingProposalEvidence(p, p))


# --- wire codec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [_prevote(), _prevote(bh=None), _precommit(), _precommit(bh=None), _proposal(),
                                 _proposal(round_=9, pol_round=3)], ids=lambda m: type(m).__name__)
def test_wire_round_trip(msg: Vote | Proposal) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert encode_message(decode_message(data)) == data


@pytest.mark.parametrize(("name", "malleate"), [
    ("empty", lambda d: b""),
    ("trailing byte", lambda d: d + b"\x00"),
    ("truncated", lambda d: d[:-1]),
    ("unknown kind", lambda d: (3).to_bytes(32, "big") + d[32:]),
    ("unknown vote type", lambda d: d[:32] + (7).to_bytes(32, "big") + d[64:]),
    ("non-zero padding in the kind word", lambda d: b"\x01" + d[1:]),
])
def test_wire_decoding_is_strict(name: str, malleate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(CodecError):
        decode_message(malleate(encode_message(_precommit())))


def test_wire_proposal_with_a_malformed_header_is_refused() -> None:
    p = _proposal()
    data = abi_encode(["uint8", "uint64", "uint64", "int64", "bytes", "bytes", "uint32", "bytes"],
                      [2, 1, 2, -1, b"garbage", BLOCK, 1, p.signature])
    with pytest.raises(CodecError):
        decode_message(data)
