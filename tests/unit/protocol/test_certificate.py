"""Relay commits, validator sets and relay certificates (SPEC.md §7).

Keys are TEST-ONLY, derived from public seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from eth_abi.abi import encode as abi_encode

from protocol import codec, paths
from protocol.certificate import (
    COMMIT_TAG,
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
from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import (
    CodecError,
    InvalidProofError,
    ProtocolError,
    QuorumError,
    SignatureError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId, PacketOutcome

RELAY = ChainId("relay")


def signer(i: int) -> Ed25519Signer:
    return Ed25519Signer(hashlib.sha256(f"unit-test-validator-{i}".encode()).digest())


def vset(powers: Sequence[int], first_key: int = 0) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(f"v{first_key + i}", signer(first_key + i).pubkey, bytes(20), p)
                              for i, p in enumerate(powers)))


STATE = SparseMerkleTree.from_items([(b"relay/verified/a/b/lane-0/1", b"C" * 32), (b"relay/x", b"y")])


def header(vs: ValidatorSet, **changes: object) -> RelayHeader:
    h = RelayHeader(RELAY, 10, 1_700_000_000_000, b"\x11" * 32, b"\x22" * 32, STATE.root, vs.hash, vs.hash)
    return replace(h, **changes)  # type: ignore[arg-type]


def commit(vs: ValidatorSet, signers: Sequence[int], *, h: RelayHeader | None = None, round_: int = 0,
           sign_round: int | None = None, first_key: int = 0) -> RelayCommit:
    h = h if h is not None else header(vs)
    msg = commit_sign_bytes(h, round_ if sign_round is None else sign_round)
    return RelayCommit(h, round_, tuple(CommitSignature(i, signer(first_key + i).sign(msg)) for i in signers))


# --- quorum ---------------------------------------------------------------------------------------------

QUORUM: list[tuple[str, list[int], list[int], bool]] = [
    ("equal3_two_is_exactly_two_thirds", [1, 1, 1], [0, 1], False),
    ("equal3_all", [1, 1, 1], [0, 1, 2], True),
    ("equal4_three", [10, 10, 10, 10], [0, 1, 3], True),
    ("equal4_two", [10, 10, 10, 10], [2, 3], False),
    ("equal6_four_is_exactly_two_thirds", [1] * 6, [0, 1, 2, 3], False),
    ("equal6_five", [1] * 6, [0, 1, 2, 3, 4], True),
    ("unequal_heavy_pair_exactly_two_thirds", [2, 2, 1, 1], [0, 1], False),
    ("unequal_heavy_pair_plus_one", [2, 2, 1, 1], [0, 1, 3], True),
    ("unequal_light_three_is_two_thirds", [2, 2, 1, 1], [0, 2, 3], False),
    ("one_heavy_validator_alone", [100, 1, 1, 1], [0], True),
    ("all_light_validators", [100, 1, 1, 1], [1, 2, 3], False),
    ("large_powers_just_above", [3 * 10**18, 3 * 10**18, 3 * 10**18 + 1], [1, 2], True),
    ("large_powers_just_below", [3 * 10**18 + 1, 3 * 10**18, 3 * 10**18], [1, 2], False),
    ("single_validator", [5], [0], True),
    ("no_signatures", [1, 1, 1], [], False),
]


@pytest.mark.parametrize(("name", "powers", "signers", "ok"), QUORUM, ids=[q[0] for q in QUORUM])
def test_quorum_edges(name: str, powers: list[int], signers: list[int], ok: bool) -> None:
    vs = vset(powers)
    c = commit(vs, signers)
    signed = sum(powers[i] for i in signers)
    assert vs.quorum_reached(signed) is ok
    if ok:
        verify_commit(vs, RELAY, c)
    else:
        with pytest.raises(QuorumError):
            verify_commit(vs, RELAY, c)


# --- commit malleation ------------------------------------------------------------------------------------

VS = vset([10, 10, 10, 10])
OTHER = vset([10, 10, 10, 10], first_key=10)


def valid_commit() -> RelayCommit:
    return commit(VS, [0, 1, 2, 3])


def with_sigs(c: RelayCommit, sigs: Sequence[CommitSignature]) -> RelayCommit:
    return replace(c, signatures=tuple(sigs))


def _resigned_header(c: RelayCommit, **changes: object) -> RelayCommit:
    """The signatures of ``c`` attached to another header: they sign different bytes."""
    return replace(c, header=replace(c.header, **changes))  # type: ignore[arg-type]


COMMIT_MALLEATE: list[tuple[str, Callable[[RelayCommit], RelayCommit], type[ProtocolError]]] = [
    ("duplicate_signer", lambda c: with_sigs(c, [*c.signatures[:3], c.signatures[0]]), SignatureError),
    ("duplicate_signer_below_quorum_first", lambda c: with_sigs(c, [c.signatures[0], c.signatures[0]]),
     SignatureError),
    ("unknown_index_4", lambda c: with_sigs(c, [*c.signatures[:3], replace(c.signatures[3], validator_index=4)]),
     SignatureError),
    ("negative_index", lambda c: with_sigs(c, [*c.signatures[:3], replace(c.signatures[3], validator_index=-1)]),
     SignatureError),
    ("index_swapped", lambda c: with_sigs(c, [replace(c.signatures[0], validator_index=1),
                                              replace(c.signatures[1], validator_index=0)]), SignatureError),
    ("forged_zero_signature", lambda c: with_sigs(c, [*c.signatures[:3], CommitSignature(3, bytes(64))]),
     SignatureError),
    ("flipped_signature_bit", lambda c: with_sigs(c, [*c.signatures[:3], replace(
        c.signatures[3], ed25519_sig=bytes([c.signatures[3].ed25519_sig[0] ^ 1]) + c.signatures[3].ed25519_sig[1:])]),
     SignatureError),
    ("truncated_signature", lambda c: with_sigs(c, [*c.signatures[:3], replace(
        c.signatures[3], ed25519_sig=c.signatures[3].ed25519_sig[:63])]), SignatureError),
    ("signature_by_outsider_key", lambda c: with_sigs(c, [*c.signatures[:3], CommitSignature(
        3, signer(99).sign(commit_sign_bytes(c.header, c.round)))]), SignatureError),
    ("another_round", lambda c: replace(c, round=1), SignatureError),
    ("another_height", lambda c: _resigned_header(c, height=11), SignatureError),
    ("another_time", lambda c: _resigned_header(c, time_ms=c.header.time_ms + 1), SignatureError),
    ("another_state_root", lambda c: _resigned_header(c, state_root=b"\x33" * 32), SignatureError),
    ("another_next_set", lambda c: _resigned_header(c, next_validators_hash=OTHER.hash), SignatureError),
    ("wrong_chain", lambda c: commit(VS, [0, 1, 2, 3], h=header(VS, chain_id=ChainId("relay-b"))), WrongChainError),
    ("wrong_validator_set_hash", lambda c: commit(VS, [0, 1, 2, 3], h=header(VS, validators_hash=OTHER.hash)),
     ValidatorSetMismatchError),
    ("signed_by_another_set", lambda c: commit(OTHER, [0, 1, 2, 3], first_key=10), ValidatorSetMismatchError),
    ("state_root_31_bytes", lambda c: _resigned_header(c, state_root=STATE.root[:31]), CodecError),
    ("last_block_hash_empty", lambda c: _resigned_header(c, last_block_hash=b""), CodecError),
    ("data_hash_33_bytes", lambda c: _resigned_header(c, data_hash=b"\x22" * 33), CodecError),
    ("next_hash_not_bytes", lambda c: _resigned_header(c, next_validators_hash=VS.hash.hex()), CodecError),
    ("height_over_uint64", lambda c: _resigned_header(c, height=2**64), CodecError),
    ("time_negative", lambda c: _resigned_header(c, time_ms=-1), CodecError),
    ("round_negative", lambda c: replace(c, round=-1), CodecError),
    ("round_over_uint64", lambda c: replace(c, round=2**64), CodecError),
    ("empty", lambda c: with_sigs(c, []), QuorumError),
]


def test_valid_commit_verifies() -> None:
    verify_commit(VS, RELAY, valid_commit())
    verify_commit(VS, RELAY, commit(VS, [3, 0, 2]))  # any order of signers


@pytest.mark.parametrize(("name", "malleate", "error"), COMMIT_MALLEATE, ids=[m[0] for m in COMMIT_MALLEATE])
def test_commit_malleated(name: str, malleate: Callable[[RelayCommit], RelayCommit],
                          error: type[ProtocolError]) -> None:
    with pytest.raises(error) as info:
        verify_commit(VS, RELAY, malleate(valid_commit()))
    assert type(info.value) is error


def test_check_order_chain_then_set_then_signatures_then_quorum() -> None:
    bad_everything = commit(VS, [0], h=header(VS, chain_id=ChainId("relay-b"), validators_hash=OTHER.hash))
    with pytest.raises(WrongChainError):
        verify_commit(VS, RELAY, bad_everything)
    bad_set_and_sig = with_sigs(commit(VS, [0], h=header(VS, validators_hash=OTHER.hash)),
                                [CommitSignature(0, bytes(64))])
    with pytest.raises(ValidatorSetMismatchError):
        verify_commit(VS, RELAY, bad_set_and_sig)
    # a bad signature fails the commit even when the good ones alone reach quorum
    c = valid_commit()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_commit(VS, RELAY, with_sigs(c, [*c.signatures[1:], CommitSignature(0, bytes(64))]))


def test_sign_bytes_layout() -> None:
    h = header(VS)
    expected = hashlib.sha256(abi_encode(["string", "string", "uint64", "uint64", "bytes32"],
                                         [COMMIT_TAG, "relay", 10, 7, h.hash()])).digest()
    assert commit_sign_bytes(h, 7) == expected
    assert COMMIT_TAG == "parkrelay/relay-commit/v1"
    assert h.hash() == hashlib.sha256(h.encode()).digest()
    assert len(h.encode()) == 32 * 10  # 8 head words + the chain id's length word and one data word
    ed25519_verify(signer(0).pubkey, expected, signer(0).sign(expected))


# --- validator sets -------------------------------------------------------------------------------------------


def _v(i: int, power: int = 1, key: bytes | None = None, addr: bytes = bytes(20)) -> Validator:
    return Validator(f"v{i}", signer(i).pubkey if key is None else key, addr, power)


SET_INVALID: list[tuple[str, tuple[Validator, ...]]] = [
    ("empty", ()),
    ("duplicate_key", (_v(0), _v(1, key=signer(0).pubkey))),
    ("key_31_bytes", (_v(0, key=signer(0).pubkey[:31]),)),
    ("key_str", (_v(0, key=signer(0).pubkey.hex()),)),  # type: ignore[arg-type]
    ("address_19_bytes", (_v(0, addr=bytes(19)),)),
    ("power_zero", (_v(0, power=0),)),
    ("power_negative", (_v(0, power=-3),)),
    ("power_over_uint64", (_v(0, power=2**64),)),
    ("power_bool", (_v(0, power=True),)),
]


@pytest.mark.parametrize(("name", "validators"), SET_INVALID, ids=[s[0] for s in SET_INVALID])
def test_validator_set_refused(name: str, validators: tuple[Validator, ...]) -> None:
    with pytest.raises(CodecError):
        ValidatorSet(validators)


def test_validator_set_hash_binds_keys_addresses_powers_and_order() -> None:
    base = ValidatorSet((_v(0, 1), _v(1, 2)))
    expected = hashlib.sha256(abi_encode(["bytes32[]", "address[]", "uint64[]"],
                                         [[signer(0).pubkey, signer(1).pubkey], [bytes(20)] * 2, [1, 2]])).digest()
    assert base.hash == expected and base.total_power == 3
    variants = [
        ValidatorSet((_v(1, 2), _v(0, 1))),
        ValidatorSet((_v(0, 1), _v(1, 3))),
        ValidatorSet((_v(0, 1), _v(1, 2, addr=b"\x01" * 20))),
        ValidatorSet((_v(0, 1), _v(2, 2))),
    ]
    assert len({base.hash, *(v.hash for v in variants)}) == 5
    assert ValidatorSet((_v(0, 2**64 - 1), _v(1, 2**64 - 1))).total_power == 2**65 - 2


# --- validator set updates --------------------------------------------------------------------------------------

NEW = vset([5, 5, 5], first_key=20)


def handover(signers: Sequence[int] = (0, 1, 2, 3)) -> RelayCommit:
    return commit(VS, signers, h=header(VS, height=20, next_validators_hash=NEW.hash))


def test_update_signed_by_old_set_accepted() -> None:
    verify_validator_set_update(VS, RELAY, handover(), NEW)


UPDATE_BAD: list[tuple[str, Callable[[], None], type[ProtocolError]]] = [
    ("signed_by_new_set_only", lambda: verify_validator_set_update(
        VS, RELAY, commit(NEW, [0, 1, 2], h=header(NEW, height=21), first_key=20), NEW), ValidatorSetMismatchError),
    ("new_set_not_certified", lambda: verify_validator_set_update(VS, RELAY, handover(), OTHER),
     ValidatorSetMismatchError),
    ("next_hash_unchanged", lambda: verify_validator_set_update(VS, RELAY, valid_commit(), NEW),
     ValidatorSetMismatchError),
    ("old_set_below_quorum", lambda: verify_validator_set_update(VS, RELAY, handover([0, 1]), NEW), QuorumError),
    ("forged_old_signature", lambda: verify_validator_set_update(
        VS, RELAY, with_sigs(handover(), [*handover().signatures[:3], CommitSignature(3, bytes(64))]), NEW),
     SignatureError),
    ("other_relay_chain", lambda: verify_validator_set_update(VS, ChainId("relay-b"), handover(), NEW),
     WrongChainError),
    ("trusting_the_new_set_already", lambda: verify_validator_set_update(NEW, RELAY, handover(), NEW),
     ValidatorSetMismatchError),
]


@pytest.mark.parametrize(("name", "run", "error"), UPDATE_BAD, ids=[u[0] for u in UPDATE_BAD])
def test_update_refused(name: str, run: Callable[[], None], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        run()


def test_after_update_only_the_new_set_certifies() -> None:
    verify_validator_set_update(VS, RELAY, handover(), NEW)
    trusted = NEW
    verify_commit(trusted, RELAY, commit(NEW, [0, 1, 2], h=header(NEW, height=21), first_key=20))
    with pytest.raises(ValidatorSetMismatchError):
        verify_commit(trusted, RELAY, valid_commit())


# --- certificates --------------------------------------------------------------------------------------------

VKEY = b"relay/verified/a/b/lane-0/1"
VVAL = b"C" * 32
ABSENT = paths.verified_path(ChainId("a"), ChainId("b"), "lane-0", 2)  # type: ignore[arg-type]


def member_cert() -> RelayCertificate:
    return RelayCertificate(commit(VS, [0, 1, 2]), VKEY, VVAL, STATE.prove(VKEY))


def absence_cert() -> RelayCertificate:
    return RelayCertificate(commit(VS, [0, 1, 2]), ABSENT, None, STATE.prove(ABSENT))


def test_certificates_verify() -> None:
    verify_certificate(VS, RELAY, member_cert(), VKEY, VVAL)
    verify_certificate(VS, RELAY, absence_cert(), ABSENT, None)


CERT_BAD: list[tuple[str, Callable[[], None], type[ProtocolError]]] = [
    ("asks_another_key", lambda: verify_certificate(VS, RELAY, member_cert(), b"relay/x", VVAL), InvalidProofError),
    ("asks_another_value", lambda: verify_certificate(VS, RELAY, member_cert(), VKEY, b"D" * 32), InvalidProofError),
    ("asks_absence_of_member", lambda: verify_certificate(VS, RELAY, member_cert(), VKEY, None), InvalidProofError),
    ("asks_value_of_absent", lambda: verify_certificate(VS, RELAY, absence_cert(), ABSENT, VVAL), InvalidProofError),
    ("claims_absence_of_member", lambda: verify_certificate(
        VS, RELAY, RelayCertificate(commit(VS, [0, 1, 2]), VKEY, None, STATE.prove(VKEY)), VKEY, None),
     InvalidProofError),
    ("claims_value_not_in_state", lambda: verify_certificate(
        VS, RELAY, replace(member_cert(), value=b"D" * 32), VKEY, b"D" * 32), InvalidProofError),
    ("proof_for_other_key", lambda: verify_certificate(
        VS, RELAY, replace(member_cert(), proof=STATE.prove(b"relay/x")), VKEY, VVAL), InvalidProofError),
    ("state_root_of_another_block", lambda: verify_certificate(
        VS, RELAY, replace(member_cert(), commit=commit(VS, [0, 1, 2], h=header(VS, state_root=b"\x44" * 32))),
        VKEY, VVAL), InvalidProofError),
    ("commit_below_quorum", lambda: verify_certificate(
        VS, RELAY, replace(member_cert(), commit=commit(VS, [0, 1])), VKEY, VVAL), QuorumError),
    ("commit_of_untrusted_set", lambda: verify_certificate(OTHER, RELAY, member_cert(), VKEY, VVAL),
     ValidatorSetMismatchError),
    ("commit_of_other_relay", lambda: verify_certificate(VS, ChainId("relay-b"), member_cert(), VKEY, VVAL),
     WrongChainError),
    # key/value are compared before any signature work: a cheap rejection
    ("wrong_key_and_bad_commit", lambda: verify_certificate(
        VS, RELAY, replace(member_cert(), commit=commit(VS, [])), b"relay/x", VVAL), InvalidProofError),
]


@pytest.mark.parametrize(("name", "run", "error"), CERT_BAD, ids=[c[0] for c in CERT_BAD])
def test_certificate_refused(name: str, run: Callable[[], None], error: type[ProtocolError]) -> None:
    with pytest.raises(error) as info:
        run()
    assert type(info.value) is error


def test_certificate_for_an_outcome_record() -> None:
    pc = hashlib.sha256(b"packet").digest()
    key = paths.outcome_path(ChainId("a"), ChainId("b"), "lane-0", 1)  # type: ignore[arg-type]
    value = codec.encode_outcome(PacketOutcome.TIMED_OUT, pc, bytes(32))
    state = STATE.set(key, value)
    c = commit(VS, [0, 1, 2], h=header(VS, state_root=state.root))
    verify_certificate(VS, RELAY, RelayCertificate(c, key, value, state.prove(key)), key, value)
