"""Relay headers, commits and relay certificates (SPEC.md §7).

A relay block is final when validators holding more than 2/3 of the voting power signed its header.
The header with those signatures is a *commit*; a commit plus a proof into the header's state root is a
*relay certificate*: what a target bridge checks in phase 3 and a source bridge in phase 4.

Targets hold a light client of the relay chain: the trusted :class:`ValidatorSet`. It changes only
through :func:`verify_validator_set_update`, signed by the current set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.abi import encode as abi_encode
from protocol.codec import sha256
from protocol.crypto import ed25519_verify
from protocol.errors import (
    CodecError,
    DuplicateValidatorError,
    InvalidProofError,
    QuorumError,
    SignatureError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from protocol.state_commitment import Proof, verify_membership, verify_non_membership
from protocol.types import ChainId, check_id, check_uint

COMMIT_TAG = "parkrelay/relay-commit/v1"


@dataclass(frozen=True, slots=True)
class Validator:
    """One relay validator (a park operator)."""

    name: str
    """Operator-chosen name, for logs."""
    ed25519_pubkey: bytes
    """32-byte ed25519 key: signs for the Python verifiers."""
    eth_address: bytes
    """20-byte secp256k1 address: signs for the EVM bridge (``ecrecover``); 20 zero bytes if none."""
    power: int
    """Voting power, > 0."""


NO_ETH_ADDRESS = bytes(20)
"""The ``eth_address`` of a validator without a secp256k1 key: it may repeat (it never signs on the EVM)."""


def check_distinct(ed25519_keys: list[bytes], eth_addresses: list[bytes]) -> None:
    """Raise :class:`DuplicateValidatorError` if a set repeats an ed25519 key or a non-zero Ethereum address
    (SPEC.md §7.1); one pass each."""
    seen_keys: set[bytes] = set()
    for i, key in enumerate(ed25519_keys):
        if key in seen_keys:
            raise DuplicateValidatorError("validator set repeats an ed25519 key", expected="distinct keys",
                                          got=f"index {i}: {key.hex()}")
        seen_keys.add(key)
    seen_addrs: set[bytes] = set()
    for i, addr in enumerate(eth_addresses):
        if addr == NO_ETH_ADDRESS:
            continue
        if addr in seen_addrs:
            raise DuplicateValidatorError("validator set repeats an Ethereum address", expected="distinct addresses",
                                          got=f"index {i}: 0x{addr.hex()}")
        seen_addrs.add(addr)


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """An ordered validator set; a commit signature names its signer by index in this order."""

    validators: tuple[Validator, ...]
    """Validators in canonical order (as in genesis)."""
    hash: bytes = field(init=False, repr=False, compare=False)
    """sha256(abi.encode(bytes32[] ed25519 keys, address[] eth addresses, uint64[] powers))."""
    total_power: int = field(init=False, repr=False, compare=False)
    """Sum of the validators' powers."""

    def __post_init__(self) -> None:
        if not self.validators:
            raise CodecError("a validator set is not empty")
        keys = [v.ed25519_pubkey for v in self.validators]
        for v in self.validators:
            if (not isinstance(v.ed25519_pubkey, bytes) or len(v.ed25519_pubkey) != 32
                    or not isinstance(v.eth_address, bytes) or len(v.eth_address) != 20):
                raise CodecError("malformed validator key or address", got=v.name)
            if check_uint(f"power of validator {v.name}", v.power) == 0:
                raise CodecError("validator power must be positive", got=v.name)
        check_distinct(keys, [v.eth_address for v in self.validators])
        encoded = abi_encode(
            ["bytes32[]", "address[]", "uint64[]"],
            [keys, [v.eth_address for v in self.validators], [v.power for v in self.validators]],
        )
        object.__setattr__(self, "hash", sha256(encoded))
        object.__setattr__(self, "total_power", sum(v.power for v in self.validators))

    def quorum_reached(self, power: int) -> bool:
        """True when ``power`` is more than 2/3 of the total."""
        return 3 * power > 2 * self.total_power


@dataclass(frozen=True, slots=True)
class RelayHeader:
    """Header of a relay-chain block."""

    chain_id: ChainId
    """The relay chain's id."""
    height: int
    """Block height, >= 1."""
    time_ms: int
    """Block time chosen by the proposer, ms; strictly increasing."""
    last_block_hash: bytes
    """Hash of the previous header (32 zero bytes at height 1)."""
    data_hash: bytes
    """SHA-256 over the block's transactions."""
    state_root: bytes
    """State commitment root after executing this block."""
    validators_hash: bytes
    """Hash of the set that signs this block."""
    next_validators_hash: bytes
    """Hash of the set that signs the next block."""

    def validate(self) -> None:
        """Raise :class:`CodecError` unless every field is in range.

        ABI ``bytes32`` right-pads shorter values, so without this check two headers that differ in a
        hash field would share one encoding and one signature.
        """
        check_id("relay chain", self.chain_id)
        check_uint("height", self.height)
        check_uint("time_ms", self.time_ms)
        for name in ("last_block_hash", "data_hash", "state_root", "validators_hash", "next_validators_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise CodecError(f"header {name} is 32 bytes",
                                 got=len(value) if isinstance(value, bytes) else type(value).__name__)

    def encode(self) -> bytes:
        """``abi.encode(string, uint64, uint64, bytes32 x 5)`` of the fields in order (SPEC.md §7.1)."""
        self.validate()
        return abi_encode(
            ["string", "uint64", "uint64", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
            [self.chain_id, self.height, self.time_ms, self.last_block_hash, self.data_hash, self.state_root,
             self.validators_hash, self.next_validators_hash],
        )

    def hash(self) -> bytes:
        return sha256(self.encode())


@dataclass(frozen=True, slots=True)
class CommitSignature:
    """One validator's precommit signature on a header."""

    validator_index: int
    """Index of the signer in the validator set."""
    ed25519_sig: bytes
    """64-byte ed25519 signature of :func:`commit_sign_bytes`."""
    secp256k1_sig: bytes = b""
    """65-byte ``r || s || v`` signature of the same bytes, for the EVM; may be empty for Python targets."""


@dataclass(frozen=True, slots=True)
class RelayCommit:
    """A header and the precommits that finalised it."""

    header: RelayHeader
    """The signed header."""
    round: int
    """Consensus round in which it was committed."""
    signatures: tuple[CommitSignature, ...]
    """Signatures, by distinct validators, with more than 2/3 of the power."""


def commit_sign_bytes(header: RelayHeader, round_: int) -> bytes:
    """The 32 bytes a validator signs to precommit ``header`` in ``round_``."""
    check_uint("round", round_)
    return sha256(
        abi_encode(["string", "string", "uint64", "uint64", "bytes32"],
                   [COMMIT_TAG, header.chain_id, header.height, round_, header.hash()])
    )


def verify_commit(trusted: ValidatorSet, relay_chain: ChainId, commit: RelayCommit) -> None:
    """Raise unless ``commit`` is signed by more than 2/3 of ``trusted`` for relay chain ``relay_chain``."""
    h = commit.header
    if h.chain_id != relay_chain:
        raise WrongChainError("commit is for another relay chain", expected=relay_chain, got=h.chain_id)
    if h.validators_hash != trusted.hash:
        raise ValidatorSetMismatchError("header names a validator set other than the trusted one",
                                        expected=trusted.hash.hex(), got=h.validators_hash.hex())
    msg = commit_sign_bytes(h, commit.round)
    seen: set[int] = set()
    power = 0
    for sig in commit.signatures:
        idx = sig.validator_index
        if not 0 <= idx < len(trusted.validators):
            raise SignatureError("signature by an unknown validator index", expected=f"< {len(trusted.validators)}",
                                 got=idx)
        if idx in seen:
            raise SignatureError("two signatures by one validator", got=idx)
        seen.add(idx)
        v = trusted.validators[idx]
        ed25519_verify(v.ed25519_pubkey, msg, sig.ed25519_sig, what=f"precommit of validator {v.name}")
        power += v.power
    if not trusted.quorum_reached(power):
        raise QuorumError("commit signed by at most 2/3 of the voting power",
                          expected=f"> {2 * trusted.total_power // 3}", got=power)


def verify_validator_set_update(
    trusted: ValidatorSet, relay_chain: ChainId, commit: RelayCommit, new_set: ValidatorSet
) -> None:
    """Raise unless the current set certified ``new_set`` as the next set (``next_validators_hash``)."""
    verify_commit(trusted, relay_chain, commit)
    if commit.header.next_validators_hash != new_set.hash:
        raise ValidatorSetMismatchError("new validator set is not the certified next set",
                                        expected=commit.header.next_validators_hash.hex(), got=new_set.hash.hex())


@dataclass(frozen=True, slots=True)
class RelayCertificate:
    """Proof that the relay chain recorded ``value`` under ``key`` at a final height (or its absence)."""

    commit: RelayCommit
    """The final header and its signatures."""
    key: bytes
    """Relay-state path proven (``relay/verified/...`` or ``relay/outcome/...``)."""
    value: bytes | None
    """Value proven at ``key``, or ``None`` for a non-membership certificate."""
    proof: Proof
    """Proof of ``key`` into ``commit.header.state_root``."""


def verify_certificate(
    trusted: ValidatorSet, relay_chain: ChainId, cert: RelayCertificate, key: bytes, value: bytes | None
) -> None:
    """Raise unless ``cert`` proves ``key`` -> ``value`` (or absence if ``None``) in a final relay block."""
    _check_claim(cert, key, value)
    verify_commit(trusted, relay_chain, cert.commit)
    _verify_proof(cert, key, value)


def verify_record(cert: RelayCertificate, key: bytes, value: bytes | None) -> None:
    """Steps 1 and 3 of :func:`verify_certificate`, without step 2: for a host that verified ``cert.commit`` already
    (:func:`verify_commit`), once for every record of a certificate batch (SPEC §7.10)."""
    _check_claim(cert, key, value)
    _verify_proof(cert, key, value)


def _check_claim(cert: RelayCertificate, key: bytes, value: bytes | None) -> None:
    if cert.key != key:
        raise InvalidProofError("certificate proves another key", expected=key, got=cert.key)
    if cert.value != value:
        raise InvalidProofError("certificate proves another value", expected=value, got=cert.value)


def _verify_proof(cert: RelayCertificate, key: bytes, value: bytes | None) -> None:
    root = cert.commit.header.state_root
    if value is None:
        verify_non_membership(root, key, cert.proof)
    else:
        verify_membership(root, key, value, cert.proof)
