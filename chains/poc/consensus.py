"""Proof-of-capacity consensus of the PoC park (docs/architecture.md §3, PoC row; docs/research.md#seed-000). Pure:
no I/O, no clock.

The farmer node and the relay chain's light client run this same code; time comes in as ``now_ms``
and the chiapos verifier is passed in.

**Plot binding.** ``plot_id = sha256("parkrelay/poc/plot/v1" || farmer_pubkey || plot_nonce)``. A header
names the key and the nonce, the verifier recomputes the id, and chiapos proves the plot for that id,
so only the holder of ``farmer_pubkey`` can sign a block with that plot's proofs.

**Challenge chain.** ``challenge_h = sha256("parkrelay/poc/challenge" || challenge_{h-1} || quality_{h-1})``
with ``challenge_0`` from the chain's config and ``quality_0`` = 32 zero bytes. Transactions, timestamps
and roots never enter it, so a farmer cannot grind block contents for a better next challenge.

**Slots.** A chiapos plot answers a challenge with a Poisson(1) number of proofs: for a given height no
plot of a small park may have any (e^-P for P plots; 13.5 % with two). So a height has sub-challenges:
slot 0 is the challenge itself, slot s > 0 is ``sha256("parkrelay/poc/slot/v1" || challenge || u32 s)``.

**Deadline.** For a proof with chiapos quality string ``quality`` at slot challenge ``c``::

    q           = int(sha256(quality || c))                  # uniform in [0, 2^256)
    deadline_ms = (s * 2^256 + q) * difficulty * S(21) // (2^256 * S(k))

where ``S(k) = (2k+1) * 2^(k-1)`` is chiapos' expected plot size in bytes. A header is valid only if
``timestamp_ms >= parent.timestamp_ms + deadline_ms``. Each plot's proofs then form a Poisson process
in deadline time with rate ``S(k) / (S(21) * difficulty)``, so the first deadline over all plots is
exponential with mean ``difficulty / C`` where ``C = sum S(k)/S(21)`` is the park's capacity in
k=21-plot-equivalents: **expected block interval = difficulty / C** (not difficulty / (C + 1): that would
be the mean of the least of C+1 uniform deadlines, i.e. one proof per plot per challenge, which chiapos
does not give; ``tests/unit/poc/test_consensus.py`` measures it on real plots). So difficulty has units of
ms x plots, and ``difficulty = target_interval_ms * C`` gives the target.

**Retarget.** Per block, from the last ``W`` intervals ending at the parent: the work done over them
(``cw_parent - cw_{parent-W}``, the sum of their difficulties) divided by their span and times the target,
``raw = work * target_interval_ms // span_ms``, which estimates ``target * C`` directly (each interval has
mean ``d_i / C``), so it settles in one window and does not compound. The result moves at most
``parent_difficulty // max_adjust_divisor`` per block and never below ``min_difficulty``. Validators
recompute it exactly.

**Fork choice.** A block's weight is its difficulty; the best tip has the greatest
``cumulative_weight``, ties to the lower header hash. Weight rather than height: a branch farmed with
less space retargets to a lower difficulty and so piles up blocks, but not weight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chains.poc.errors import (
    FutureTimestampError,
    InsufficientQualityError,
    ProofOfSpaceError,
    WrongChallengeError,
    WrongDifficultyError,
    WrongWeightError,
)
from chains.poc.types import SIGN_TAG, PocHeader
from protocol.crypto import ed25519_verify
from protocol.errors import CodecError, HeaderError, SignatureError, WrongChainError
from protocol.state_commitment import EMPTY_ROOT
from protocol.types import ChainId, check_id

__all__ = [
    "CHALLENGE_TAG",
    "PLOT_ID_TAG",
    "SLOT_TAG",
    "ConsensusContext",
    "PocParams",
    "ProofVerifier",
    "chiapos_verifier",
    "deadline_ms",
    "expected_plot_size",
    "genesis_context",
    "genesis_header",
    "is_heavier",
    "next_challenge",
    "next_difficulty",
    "plot_id",
    "slot_challenge",
    "validate_header",
    "verify_proof_of_space",
]

PLOT_ID_TAG = b"parkrelay/poc/plot/v1"
CHALLENGE_TAG = b"parkrelay/poc/challenge"
SLOT_TAG = b"parkrelay/poc/slot/v1"
GENESIS_QUALITY = bytes(32)
"""Quality of the genesis block (it has no proof) for the first step of the challenge chain."""
_TWO_256 = 2**256

ProofVerifier = Callable[[bytes, int, bytes, bytes], bytes | None]
"""``(plot_id, k, challenge, proof) -> quality string or None``: chiapos' ``Verifier().validate_proof``."""


def chiapos_verifier() -> ProofVerifier:
    """The real verifier. chiapos returns the 32-byte quality string, or None for any invalid proof
    (tampered, wrong id, wrong k, wrong length); it does not check the challenge's length, we do."""
    import chiapos  # a C extension: imported lazily so that code which only encodes headers needs no native lib

    verifier = chiapos.Verifier()

    def verify(pid: bytes, k: int, challenge: bytes, proof: bytes) -> bytes | None:
        out = verifier.validate_proof(pid, k, challenge, proof)
        return bytes(out) if out else None

    return verify


# -- parameters and per-block context ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PocParams:
    """Consensus parameters of one PoC park chain (fixed at genesis; every verifier holds the same)."""

    chain_id: ChainId
    """The chain these rules are for."""
    genesis_challenge: bytes
    """``challenge_0`` (32 bytes), from the genesis config."""
    initial_difficulty: int
    """Difficulty of the genesis block and of height 1 (ms x k21-plots): ``target_interval_ms * plots``."""
    target_interval_ms: int = 1000
    """Target block interval, ms."""
    retarget_window: int = 32
    """Intervals the retarget looks back over (W)."""
    max_adjust_divisor: int = 8
    """Per block, difficulty moves by at most ``parent_difficulty // max_adjust_divisor`` (12.5 %)."""
    min_difficulty: int = 16
    """Difficulty never falls below this."""
    max_future_ms: int = 1500
    """How far ahead of the verifier's clock a header's time may be, ms."""
    min_k: int = 21
    """Smallest plot size accepted (chiapos cannot plot k < 21 with its default stripe size)."""
    max_k: int = 32
    """Largest plot size accepted."""

    def __post_init__(self) -> None:
        check_id("chain", self.chain_id)
        if not isinstance(self.genesis_challenge, bytes) or len(self.genesis_challenge) != 32:
            raise CodecError("genesis_challenge must be 32 bytes")
        for name in ("initial_difficulty", "target_interval_ms", "retarget_window", "max_adjust_divisor",
                     "min_difficulty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CodecError(f"PoC param {name} must be a positive integer", got=v)
        if not 1 <= self.min_k <= self.max_k <= 50:
            raise CodecError("PoC plot sizes must satisfy 1 <= min_k <= max_k <= 50", got=(self.min_k, self.max_k))
        if self.max_future_ms < 0:
            raise CodecError("max_future_ms must be >= 0", got=self.max_future_ms)

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "genesis_challenge": self.genesis_challenge.hex(),
                "initial_difficulty": self.initial_difficulty, "target_interval_ms": self.target_interval_ms,
                "retarget_window": self.retarget_window, "max_adjust_divisor": self.max_adjust_divisor,
                "min_difficulty": self.min_difficulty, "max_future_ms": self.max_future_ms,
                "min_k": self.min_k, "max_k": self.max_k}

    @classmethod
    def from_json(cls, obj: Any) -> PocParams:
        if isinstance(obj, PocParams):
            return obj
        if not isinstance(obj, dict):
            raise CodecError("PoC params are a JSON object", got=type(obj).__name__)
        try:
            fields = dict(obj)
            fields["genesis_challenge"] = bytes.fromhex(fields["genesis_challenge"])
            fields["chain_id"] = ChainId(str(fields["chain_id"]))
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed PoC params: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ConsensusContext:
    """What a verifier keeps of one accepted block to validate its children (also a light-client checkpoint)."""

    height: int
    """Height of the block."""
    header_hash: bytes
    """Its header hash."""
    timestamp_ms: int
    """Its block time, ms."""
    state_root: bytes
    """Its state root (proofs are checked against it once final)."""
    challenge: bytes
    """Its challenge."""
    quality: bytes
    """chiapos quality string of its proof (``GENESIS_QUALITY`` at genesis): feeds the next challenge."""
    difficulty: int
    """Its difficulty."""
    cumulative_weight: int
    """Its cumulative weight."""
    window: tuple[tuple[int, int], ...]
    """``(timestamp_ms, cumulative_weight)`` of up to ``W + 1`` blocks ending with this one, oldest first:
    the retarget's input for the child."""

    def next_challenge(self) -> bytes:
        """The challenge of every child of this block."""
        return next_challenge(self.challenge, self.quality)

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "header_hash": self.header_hash.hex(), "timestamp_ms": self.timestamp_ms,
                "state_root": self.state_root.hex(), "challenge": self.challenge.hex(),
                "quality": self.quality.hex(), "difficulty": self.difficulty,
                "cumulative_weight": str(self.cumulative_weight),
                "window": [[ts, str(cw)] for ts, cw in self.window]}

    @classmethod
    def from_json(cls, obj: Any) -> ConsensusContext:
        if isinstance(obj, ConsensusContext):
            return obj
        if not isinstance(obj, dict):
            raise CodecError("a PoC consensus context is a JSON object", got=type(obj).__name__)
        try:
            ctx = cls(int(obj["height"]), bytes.fromhex(obj["header_hash"]), int(obj["timestamp_ms"]),
                      bytes.fromhex(obj["state_root"]), bytes.fromhex(obj["challenge"]),
                      bytes.fromhex(obj["quality"]), int(obj["difficulty"]), int(obj["cumulative_weight"]),
                      tuple((int(ts), int(cw)) for ts, cw in obj["window"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed PoC consensus context: {exc}") from exc
        if (any(len(b) != 32 for b in (ctx.header_hash, ctx.state_root, ctx.challenge, ctx.quality))
                or not ctx.window or ctx.window[-1] != (ctx.timestamp_ms, ctx.cumulative_weight)):
            raise CodecError("inconsistent PoC consensus context: 32-byte hashes, window ending at the block")
        return ctx


# -- the pure rules ---------------------------------------------------------------------------


def plot_id(farmer_pubkey: bytes, plot_nonce: bytes) -> bytes:
    """The plot id bound to a farmer key: ``sha256(PLOT_ID_TAG || farmer_pubkey || plot_nonce)``."""
    if len(farmer_pubkey) != 32 or len(plot_nonce) != 32:
        raise CodecError("plot id needs a 32-byte key and a 32-byte nonce", got=(len(farmer_pubkey), len(plot_nonce)))
    return hashlib.sha256(PLOT_ID_TAG + farmer_pubkey + plot_nonce).digest()


def next_challenge(challenge: bytes, quality: bytes) -> bytes:
    """``sha256(CHALLENGE_TAG || challenge || quality)``: the challenge chain's step."""
    return hashlib.sha256(CHALLENGE_TAG + challenge + quality).digest()


def slot_challenge(challenge: bytes, slot: int) -> bytes:
    """The challenge a proof at ``slot`` answers: the height's challenge at slot 0, else a hash of it."""
    if slot == 0:
        return challenge
    return hashlib.sha256(SLOT_TAG + challenge + slot.to_bytes(4, "big")).digest()


def expected_plot_size(k: int) -> int:
    """chiapos' expected plot size in bytes, ``(2k+1) * 2^(k-1)`` (a k=21 plot: 43 MiB; on disk ~34 MiB)."""
    return (2 * k + 1) << (k - 1)


_S21 = expected_plot_size(21)


def deadline_ms(quality: bytes, proof_challenge: bytes, difficulty: int, k: int, slot: int) -> int:
    """Milliseconds after the parent's time before a block with this proof is valid (see module docstring)."""
    q = int.from_bytes(hashlib.sha256(quality + proof_challenge).digest(), "big")
    return (slot * _TWO_256 + q) * difficulty * _S21 // (_TWO_256 * expected_plot_size(k))


def next_difficulty(params: PocParams, parent: ConsensusContext) -> int:
    """The difficulty every child of ``parent`` must carry (integer arithmetic only)."""
    window = parent.window
    if len(window) < 2:
        raw = parent.difficulty
    else:
        span = max(1, window[-1][0] - window[0][0])
        work = window[-1][1] - window[0][1]
        raw = work * params.target_interval_ms // span
    step = max(1, parent.difficulty // params.max_adjust_divisor)
    d = min(max(raw, parent.difficulty - step), parent.difficulty + step)
    return max(d, params.min_difficulty)


def child_window(params: PocParams, parent: ConsensusContext, timestamp_ms: int,
                 cumulative_weight: int) -> tuple[tuple[int, int], ...]:
    """The retarget window of a child: the parent's plus the child, at most ``W + 1`` entries."""
    w = (*parent.window, (timestamp_ms, cumulative_weight))
    return w[-(params.retarget_window + 1):]


def is_heavier(cw_a: int, hash_a: bytes, cw_b: int, hash_b: bytes) -> bool:
    """Fork choice: does tip a beat tip b? Greater cumulative weight, ties to the lower hash."""
    return cw_a > cw_b or (cw_a == cw_b and hash_a < hash_b)


def verify_proof_of_space(header: PocHeader, params: PocParams, verifier: ProofVerifier) -> bytes:
    """Return the quality string of the header's proof, or raise :class:`ProofOfSpaceError`."""
    if not params.min_k <= header.k <= params.max_k:
        raise ProofOfSpaceError(f"plot size k of header {header.height} out of range",
                                expected=f"{params.min_k}..{params.max_k}", got=header.k)
    if len(header.proof) != 8 * header.k:
        raise ProofOfSpaceError(f"proof of header {header.height} has the wrong length for k={header.k}",
                                expected=8 * header.k, got=len(header.proof))
    pid = plot_id(header.farmer_pubkey, header.plot_nonce)
    quality = verifier(pid, header.k, slot_challenge(header.challenge, header.slot), header.proof)
    if not quality:
        raise ProofOfSpaceError(
            f"proof of space of header {header.height} does not verify for plot {pid.hex()[:16]}… of farmer "
            f"{header.farmer} (tampered proof, or plot not bound to this key and nonce)", got=header.proof.hex()[:32])
    return quality


def validate_header(header: PocHeader, parent: ConsensusContext, params: PocParams, now_ms: int,
                    verifier: ProofVerifier) -> ConsensusContext:
    """Raise unless ``header`` is a valid child of ``parent``; return the child's context. Changes nothing.

    ``parent`` is the context of the block the header names as parent (the caller looks it up by
    ``header.parent_hash``). ``now_ms`` is the verifier's clock, for the future-time rule; a node
    replaying its own stored blocks may pass a time far ahead. Checks run cheapest first.
    """
    if header.chain_id != params.chain_id:
        raise WrongChainError("PoC header for another chain", expected=params.chain_id, got=header.chain_id)
    hhash = header.hash()  # also checks field sizes and ranges (CodecError)
    if header.parent_hash != parent.header_hash:
        raise HeaderError(f"header {header.height} names another parent", expected=parent.header_hash.hex(),
                          got=header.parent_hash.hex())
    if header.height != parent.height + 1:
        raise HeaderError("header height is not its parent's plus one", expected=parent.height + 1, got=header.height)
    if not header.farmer:
        raise HeaderError(f"header {header.height} names no farmer", got=header.farmer)
    expected_challenge = parent.next_challenge()
    if header.challenge != expected_challenge:
        raise WrongChallengeError(f"wrong challenge at height {header.height}", expected=expected_challenge.hex(),
                                  got=header.challenge.hex())
    expected_difficulty = next_difficulty(params, parent)
    if header.difficulty != expected_difficulty:
        raise WrongDifficultyError(f"wrong difficulty at height {header.height}", expected=expected_difficulty,
                                   got=header.difficulty)
    expected_weight = parent.cumulative_weight + header.difficulty
    if header.cumulative_weight != expected_weight:
        raise WrongWeightError(f"wrong cumulative weight at height {header.height}", expected=expected_weight,
                               got=header.cumulative_weight)
    if header.timestamp_ms > now_ms + params.max_future_ms:
        raise FutureTimestampError(f"header {header.height} is from the future",
                                   expected=f"<= {now_ms + params.max_future_ms}", got=header.timestamp_ms)
    if len(header.signature) != 64:
        raise SignatureError(f"header {header.height} is not signed by its farmer {header.farmer}",
                             expected=64, got=len(header.signature))
    ed25519_verify(header.farmer_pubkey, SIGN_TAG + hhash, header.signature,
                   what=f"farmer signature of PoC header {header.height}")
    quality = verify_proof_of_space(header, params, verifier)
    deadline = deadline_ms(quality, slot_challenge(header.challenge, header.slot), header.difficulty, header.k,
                           header.slot)
    earliest = parent.timestamp_ms + deadline
    if header.timestamp_ms < earliest:
        raise InsufficientQualityError(
            f"insufficient quality at height {header.height}: deadline of {deadline} ms not elapsed",
            expected=f"timestamp_ms >= {earliest}", got=header.timestamp_ms)
    return ConsensusContext(
        height=header.height, header_hash=hhash, timestamp_ms=header.timestamp_ms, state_root=header.state_root,
        challenge=header.challenge, quality=quality, difficulty=header.difficulty,
        cumulative_weight=header.cumulative_weight,
        window=child_window(params, parent, header.timestamp_ms, header.cumulative_weight),
    )


# -- genesis ----------------------------------------------------------------------------------


def genesis_header(params: PocParams, timestamp_ms: int, state_root: bytes, tx_root: bytes = EMPTY_ROOT) -> PocHeader:
    """The genesis header: height 0, ``challenge_0``, the initial difficulty, weight 0, no proof, unsigned."""
    return PocHeader(
        chain_id=params.chain_id, height=0, parent_hash=bytes(32), timestamp_ms=timestamp_ms,
        challenge=params.genesis_challenge, slot=0, difficulty=params.initial_difficulty, cumulative_weight=0,
        farmer="", farmer_pubkey=bytes(32), plot_nonce=bytes(32), k=0, proof=b"", tx_root=tx_root,
        state_root=state_root, signature=b"",
    )


def genesis_context(params: PocParams, header: PocHeader) -> ConsensusContext:
    """The context of a genesis header; raise unless it is the genesis these params define."""
    expected = genesis_header(params, header.timestamp_ms, header.state_root, header.tx_root)
    if header != expected:
        raise HeaderError("not the genesis header of these params", expected=expected.hash().hex(),
                          got=header.hash().hex())
    return ConsensusContext(
        height=0, header_hash=header.hash(), timestamp_ms=header.timestamp_ms, state_root=header.state_root,
        challenge=header.challenge, quality=GENESIS_QUALITY, difficulty=header.difficulty, cumulative_weight=0,
        window=((header.timestamp_ms, 0),),
    )

