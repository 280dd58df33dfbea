"""Relay-chain consensus messages, their sign bytes and their checks (SPEC.md §7.3).

The messages of Tendermint's algorithm ("The latest gossip on BFT consensus", Buchman, Kwon and
Milosevic, 2018): a :class:`Proposal` and two kinds of :class:`Vote`. Everything here is pure.

Sign bytes — every message signs a 32-byte SHA-256 digest of an ABI encoding that starts with a
distinct tag string, so no signature of one kind can be replayed as another:

=====================  ===========================================================================
message                digest signed (ed25519; secp256k1 where noted)
=====================  ===========================================================================
proposal               ``sha256(abi.encode(string "parkrelay/relay-proposal/v1", string chain_id,
                       uint64 height, uint64 round, int64 pol_round, bytes32 header_hash,
                       bytes32 sha256(block)))``
prevote                ``sha256(abi.encode(string "parkrelay/relay-prevote/v1", string chain_id,
                       uint64 height, uint64 round, bytes32 block_hash_or_zero))``
precommit for a block  ``commit_sign_bytes`` of SPEC.md §7.3, i.e. ``sha256(abi.encode(string
                       "parkrelay/relay-commit/v1", string chain_id, uint64 height, uint64 round,
                       bytes32 header_hash))``; signed with ed25519 **and** secp256k1. The precommit
                       signatures are the commit signatures: a decided block's
                       :class:`~protocol.certificate.RelayCommit` is built from them unchanged.
precommit for nil      ``sha256(abi.encode(string "parkrelay/relay-precommit-nil/v1", string
                       chain_id, uint64 height, uint64 round, bytes32 0))``; ed25519 only
=====================  ===========================================================================

A block is named by its header hash (``sha256(abi.encode(header))``, SPEC.md §7.2), never zero.

secp256k1 signature layout (for the EVM verifier): 65 bytes ``r (32, big-endian) || s (32,
big-endian) || v (1)`` with ``v = 27 + recovery_id`` (27 or 28) and ``s <= n/2`` (low-s: what
libsecp256k1 produces; consensus refuses the high-s twin so each signer has one signature per message,
though the ``ecrecover`` precompile would accept it), over the 32 sign bytes as they are, with no
``"\\x19Ethereum Signed Message"`` prefix and no re-hashing: ``ecrecover(commit_sign_bytes, v, r, s) ==
eth_address``. In Solidity: ``r = sig[0:32]``, ``s = sig[32:64]``, ``v = uint8(sig[64])``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, TypeAlias

from coincurve import PrivateKey, PublicKey

from protocol.abi import decode as abi_decode
from protocol.abi import encode as abi_encode
from protocol.certificate import COMMIT_TAG, RelayHeader, ValidatorSet
from protocol.codec import sha256
from protocol.crypto import Ed25519Signer, ed25519_verify, keccak256
from protocol.errors import CodecError, HeaderError, SignatureError
from protocol.types import ChainId

__all__ = [
    "NIL_HASH",
    "PRECOMMIT_NIL_TAG",
    "PREVOTE_TAG",
    "PROPOSAL_TAG",
    "ConflictingProposalEvidence",
    "DuplicateVoteEvidence",
    "Evidence",
    "Message",
    "Proposal",
    "ValidatorKey",
    "Vote",
    "VoteType",
    "check_message_ranges",
    "decode_header",
    "decode_message",
    "encode_message",
    "eth_address_of",
    "header_hash",
    "proposal_sign_bytes",
    "recover_eth_address",
    "secp256k1_sign",
    "sign_proposal",
    "sign_vote",
    "verify_evidence",
    "verify_proposal_signature",
    "verify_vote_signature",
    "vote_sign_bytes",
]

PROPOSAL_TAG: Final = "parkrelay/relay-proposal/v1"
PREVOTE_TAG: Final = "parkrelay/relay-prevote/v1"
PRECOMMIT_NIL_TAG: Final = "parkrelay/relay-precommit-nil/v1"
NIL_HASH: Final = bytes(32)
"""How a nil vote's block hash is encoded (no header hashes to zero)."""

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ZERO_ADDRESS: Final = bytes(20)
_MAX_UINT64: Final = 2**64 - 1
_MAX_INT64: Final = 2**63 - 1


class VoteType(enum.IntEnum):
    """The two vote kinds; the value is the wire byte."""

    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit."""

    type: VoteType
    """Prevote or precommit."""
    height: int
    """Relay-chain height voted on, >= 1."""
    round: int
    """Consensus round within the height, >= 0."""
    block_hash: bytes | None
    """Header hash of the block voted for; ``None`` for a nil vote."""
    validator_index: int
    """Signer's index in the validator set of ``height``."""
    ed25519_sig: bytes
    """64-byte ed25519 signature of :func:`vote_sign_bytes`."""
    secp256k1_sig: bytes = b""
    """65-byte ``r || s || v`` of the same bytes for a precommit for a block by a validator with an
    eth address; empty for prevotes, nil precommits and validators without a secp256k1 key."""

    @property
    def is_nil(self) -> bool:
        return self.block_hash is None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A signed block proposal by the proposer of ``(height, round)``."""

    height: int
    """Height proposed for, >= 1."""
    round: int
    """Round proposed in, >= 0."""
    pol_round: int
    """Round of the proof of lock (the +2/3 prevotes) the proposer holds for this block, or -1."""
    header: RelayHeader
    """Header of the proposed block; its hash names the block in votes."""
    block: bytes
    """The block bytes; the host's ``validate_block`` checks they are what ``header`` commits to."""
    proposer_index: int
    """Signer's index in the validator set of ``height``."""
    signature: bytes
    """64-byte ed25519 signature of :func:`proposal_sign_bytes`."""

    @property
    def block_hash(self) -> bytes:
        return header_hash(self.header)


Message: TypeAlias = Proposal | Vote


@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    """One validator signed two different votes of one type at one height and round."""

    vote_a: Vote
    """The vote seen first."""
    vote_b: Vote
    """The conflicting vote."""


@dataclass(frozen=True, slots=True)
class ConflictingProposalEvidence:
    """The proposer of one height and round signed two different proposals."""

    proposal_a: Proposal
    """The proposal seen first."""
    proposal_b: Proposal
    """The conflicting proposal."""


Evidence: TypeAlias = DuplicateVoteEvidence | ConflictingProposalEvidence


@lru_cache(maxsize=4096)
def header_hash(header: RelayHeader) -> bytes:
    """``header.hash()``, cached: consensus hashes the same few headers many times."""
    return header.hash()


def proposal_sign_bytes(chain_id: ChainId, height: int, round_: int, pol_round: int, block_hash: bytes,
                        block: bytes) -> bytes:
    return sha256(abi_encode(
        ["string", "string", "uint64", "uint64", "int64", "bytes32", "bytes32"],
        [PROPOSAL_TAG, chain_id, height, round_, pol_round, block_hash, sha256(block)],
    ))


def vote_sign_bytes(chain_id: ChainId, vote_type: VoteType, height: int, round_: int,
                    block_hash: bytes | None) -> bytes:
    """The 32 bytes a validator signs for a vote (table in the module docstring).

    For a precommit for a block this equals ``protocol.certificate.commit_sign_bytes(header, round_)``.
    """
    if vote_type is VoteType.PRECOMMIT:
        tag = PRECOMMIT_NIL_TAG if block_hash is None else COMMIT_TAG
    else:
        tag = PREVOTE_TAG
    return sha256(abi_encode(
        ["string", "string", "uint64", "uint64", "bytes32"],
        [tag, chain_id, height, round_, NIL_HASH if block_hash is None else block_hash],
    ))


def eth_address_of(pubkey: PublicKey) -> bytes:
    """``keccak256(uncompressed public key without its 0x04 prefix)[-20:]``."""
    return keccak256(pubkey.format(compressed=False)[1:])[-20:]


def secp256k1_sign(secret: PrivateKey, digest: bytes) -> bytes:
    """``r || s || v`` (v = 27/28) over ``digest`` with no prefix or re-hashing (RFC 6979 nonces)."""
    if len(digest) != 32:
        raise ValueError("secp256k1 signs a 32-byte digest")
    sig = secret.sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([27 + sig[64]])


def recover_eth_address(digest: bytes, sig: bytes, *, what: str = "secp256k1 signature") -> bytes:
    """The eth address ``ecrecover(digest, v, r, s)`` returns; :class:`SignatureError` if malformed.

    Only the canonical form is accepted (v 27/28, 0 < r, 0 < s <= n/2), so one signer has one
    signature per message.
    """
    if len(sig) != 65:
        raise SignatureError(f"{what}: r || s || v is 65 bytes", expected=65, got=len(sig))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64]
    if v not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_N // 2:
        raise SignatureError(f"{what} is not canonical (v 27/28, low s)", got=sig.hex())
    try:
        pub = PublicKey.from_signature_and_message(sig[:64] + bytes([v - 27]), digest, hasher=None)
    except ValueError as exc:
        raise SignatureError(f"{what} recovers no key", got=sig.hex()) from exc
    return eth_address_of(pub)


class ValidatorKey:
    """A relay validator's two keys: ed25519 for Python verifiers, secp256k1 for the EVM bridge.

    Secrets never leave this object; :meth:`~relay.chain.consensus.sign_state.SignState.allows` is what
    keeps a validator from signing twice, and the consensus core checks it before every signature.
    """

    __slots__ = ("_ed25519", "_secp256k1", "ed25519_pubkey", "eth_address")

    def __init__(self, ed25519_seed: bytes, secp256k1_secret: bytes | None = None) -> None:
        self._ed25519 = Ed25519Signer(ed25519_seed)
        self._secp256k1 = PrivateKey(secp256k1_secret) if secp256k1_secret is not None else None
        self.ed25519_pubkey: bytes = self._ed25519.pubkey
        self.eth_address: bytes = (eth_address_of(self._secp256k1.public_key) if self._secp256k1 is not None
                                   else _ZERO_ADDRESS)

    def sign_ed25519(self, digest: bytes) -> bytes:
        return self._ed25519.sign(digest)

    def sign_secp256k1(self, digest: bytes) -> bytes:
        if self._secp256k1 is None:
            raise ValueError("this validator key has no secp256k1 secret")
        return secp256k1_sign(self._secp256k1, digest)

    def __repr__(self) -> str:  # keys never appear in logs
        return f"ValidatorKey(ed25519={self.ed25519_pubkey.hex()[:16]}…, eth=0x{self.eth_address.hex()})"


def sign_vote(key: ValidatorKey, chain_id: ChainId, vote_type: VoteType, height: int, round_: int,
              block_hash: bytes | None, validator_index: int, *, with_secp256k1: bool) -> Vote:
    """Sign a vote. No double-sign guard: the consensus core checks its :class:`SignState` first."""
    digest = vote_sign_bytes(chain_id, vote_type, height, round_, block_hash)
    secp = b""
    if with_secp256k1 and vote_type is VoteType.PRECOMMIT and block_hash is not None:
        secp = key.sign_secp256k1(digest)
    return Vote(vote_type, height, round_, block_hash, validator_index, key.sign_ed25519(digest), secp)


def sign_proposal(key: ValidatorKey, chain_id: ChainId, height: int, round_: int, pol_round: int,
                  header: RelayHeader, block: bytes, proposer_index: int) -> Proposal:
    """Sign a proposal. No double-sign guard: the consensus core checks its :class:`SignState` first."""
    digest = proposal_sign_bytes(chain_id, height, round_, pol_round, header_hash(header), block)
    return Proposal(height, round_, pol_round, header, block, proposer_index, key.sign_ed25519(digest))


def _check_index(vset: ValidatorSet, index: int, what: str) -> None:
    if not isinstance(index, int) or not 0 <= index < len(vset.validators):
        raise SignatureError(f"{what} by an unknown validator index", expected=f"< {len(vset.validators)}",
                             got=index)


def verify_vote_signature(vset: ValidatorSet, chain_id: ChainId, vote: Vote) -> None:
    """Raise :class:`SignatureError` unless ``vote`` is well formed and signed by its validator in ``vset``.

    A precommit for a block by a validator with an eth address must carry a secp256k1 signature that
    recovers to it; every other vote carries none.
    """
    what = f"{vote.type.name.lower()} h={vote.height} r={vote.round} by validator {vote.validator_index}"
    _check_index(vset, vote.validator_index, what)
    if vote.block_hash is not None and (len(vote.block_hash) != 32 or vote.block_hash == NIL_HASH):
        raise CodecError(f"{what}: block hash is 32 non-zero bytes", got=vote.block_hash.hex())
    v = vset.validators[vote.validator_index]
    digest = vote_sign_bytes(chain_id, vote.type, vote.height, vote.round, vote.block_hash)
    ed25519_verify(v.ed25519_pubkey, digest, vote.ed25519_sig, what=what)
    wants_secp = (vote.type is VoteType.PRECOMMIT and vote.block_hash is not None
                  and v.eth_address != _ZERO_ADDRESS)
    if not wants_secp:
        if vote.secp256k1_sig:
            raise SignatureError(f"{what}: unexpected secp256k1 signature", expected=0,
                                 got=len(vote.secp256k1_sig))
        return
    got = recover_eth_address(digest, vote.secp256k1_sig, what=f"{what} (secp256k1)")
    if got != v.eth_address:
        raise SignatureError(f"{what}: secp256k1 signature by another key", expected=v.eth_address.hex(),
                             got=got.hex())


def verify_proposal_signature(vset: ValidatorSet, chain_id: ChainId, proposal: Proposal) -> None:
    """Raise unless ``proposal``'s header fits (chain, height, set) and its proposer signed it.

    Whether the proposer is the right one for the round is the core's check (it knows the schedule).
    """
    what = f"proposal h={proposal.height} r={proposal.round} by validator {proposal.proposer_index}"
    _check_index(vset, proposal.proposer_index, what)
    if not -1 <= proposal.pol_round < proposal.round:
        raise CodecError(f"{what}: pol_round is -1 or below the round", expected=f"-1..{proposal.round - 1}",
                         got=proposal.pol_round)
    h = proposal.header
    h.validate()
    if h.chain_id != chain_id or h.height != proposal.height:
        raise HeaderError(f"{what}: header for another chain or height", expected=(chain_id, proposal.height),
                          got=(h.chain_id, h.height))
    if h.validators_hash != vset.hash:
        raise HeaderError(f"{what}: header names another validator set", expected=vset.hash.hex(),
                          got=h.validators_hash.hex())
    digest = proposal_sign_bytes(chain_id, proposal.height, proposal.round, proposal.pol_round,
                                 header_hash(h), proposal.block)
    ed25519_verify(vset.validators[proposal.proposer_index].ed25519_pubkey, digest, proposal.signature, what=what)


def verify_evidence(vset: ValidatorSet, chain_id: ChainId, evidence: Evidence) -> None:
    """Raise a protocol error unless ``evidence`` proves equivocation by one validator of ``vset``."""
    if isinstance(evidence, DuplicateVoteEvidence):
        a, b = evidence.vote_a, evidence.vote_b
        if ((a.type, a.height, a.round, a.validator_index) != (b.type, b.height, b.round, b.validator_index)
                or a.block_hash == b.block_hash):
            raise SignatureError("votes do not conflict", got=(a, b))
        verify_vote_signature(vset, chain_id, a)
        verify_vote_signature(vset, chain_id, b)
        return
    p, q = evidence.proposal_a, evidence.proposal_b
    if ((p.height, p.round, p.proposer_index) != (q.height, q.round, q.proposer_index)
            or (p.pol_round, p.header, p.block) == (q.pol_round, q.header, q.block)):
        raise SignatureError("proposals do not conflict", got=(p.height, p.round, q.height, q.round))
    verify_proposal_signature(vset, chain_id, p)
    verify_proposal_signature(vset, chain_id, q)


# --- wire codec --------------------------------------------------------------------------------------
#
#   vote:     abi.encode(uint8 1, uint8 type, uint64 height, uint64 round, bytes32 block_hash (0 = nil),
#                        uint32 validator_index, bytes ed25519_sig, bytes secp256k1_sig)
#   proposal: abi.encode(uint8 2, uint64 height, uint64 round, int64 pol_round, bytes header (§7.2
#                        encoding), bytes block, uint32 proposer_index, bytes signature)
#
# Decoding is strict: the bytes must be exactly the encoding of what they decode to.

_VOTE_TYPES: Final = ["uint8", "uint8", "uint64", "uint64", "bytes32", "uint32", "bytes", "bytes"]
_PROPOSAL_TYPES: Final = ["uint8", "uint64", "uint64", "int64", "bytes", "bytes", "uint32", "bytes"]
_HEADER_TYPES: Final = ["string", "uint64", "uint64", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"]
_KIND_VOTE: Final = 1
_KIND_PROPOSAL: Final = 2


def encode_message(msg: Message) -> bytes:
    """The canonical wire bytes of a consensus message (layout above)."""
    try:
        if isinstance(msg, Vote):
            return abi_encode(_VOTE_TYPES, [
                _KIND_VOTE, int(msg.type), msg.height, msg.round,
                NIL_HASH if msg.block_hash is None else msg.block_hash,
                msg.validator_index, msg.ed25519_sig, msg.secp256k1_sig,
            ])
        return abi_encode(_PROPOSAL_TYPES, [
            _KIND_PROPOSAL, msg.height, msg.round, msg.pol_round, msg.header.encode(), msg.block,
            msg.proposer_index, msg.signature,
        ])
    except (CodecError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"consensus message does not encode: {exc}", got=type(msg).__name__) from exc


def decode_message(data: bytes) -> Message:
    """Strictly decode :func:`encode_message` output; :class:`CodecError` on anything else."""
    if len(data) < 32:
        raise CodecError("consensus message too short", expected=">= 32 bytes", got=len(data))
    kind = int.from_bytes(data[:32], "big")
    msg: Message
    try:
        if kind == _KIND_VOTE:
            _, vtype, height, round_, bh, idx, ed_sig, secp_sig = abi_decode(_VOTE_TYPES, data, "consensus message")
            if vtype not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                raise CodecError("unknown vote type", expected=(1, 2), got=vtype)
            msg = Vote(VoteType(vtype), height, round_, None if bh == NIL_HASH else bh, idx, ed_sig, secp_sig)
        elif kind == _KIND_PROPOSAL:
            fields = abi_decode(_PROPOSAL_TYPES, data, "consensus message")
            _, height, round_, pol_round, header_bytes, block, idx, sig = fields
            msg = Proposal(height, round_, pol_round, decode_header(header_bytes), block, idx, sig)
        else:
            raise CodecError("unknown consensus message kind", expected=(1, 2), got=kind)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"consensus message does not decode: {exc}") from exc
    if encode_message(msg) != data:
        raise CodecError("consensus message is not in canonical encoding")
    return msg


def decode_header(data: bytes) -> RelayHeader:
    """Strictly decode a relay header from its SPEC.md §7.2 encoding."""
    try:
        fields = abi_decode(_HEADER_TYPES, data, "relay header")
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"relay header does not decode: {exc}") from exc
    chain_id, height, time_ms, last, data_hash, root, vals, next_vals = fields
    header = RelayHeader(chain_id, height, time_ms, last, data_hash, root, vals, next_vals)
    if header.encode() != data:
        raise CodecError("relay header is not in canonical encoding")
    return header


def check_message_ranges(msg: Message) -> None:
    """Raise :class:`CodecError` if a field is out of its wire range (messages built in memory)."""
    if msg.height < 1 or msg.height > _MAX_UINT64 or msg.round < 0 or msg.round > _MAX_UINT64:
        raise CodecError("height >= 1 and round >= 0 (uint64)", got=(msg.height, msg.round))
    if isinstance(msg, Vote) and not isinstance(msg.type, VoteType):
        raise CodecError("vote type", expected=[t.name for t in VoteType], got=msg.type)
    if isinstance(msg, Proposal) and not -1 <= msg.pol_round <= _MAX_INT64:
        raise CodecError("pol_round >= -1", got=msg.pol_round)
