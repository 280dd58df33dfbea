"""Typed rejections of PoC headers (docs/architecture.md §3, PoC row).

Each is a :class:`~protocol.errors.HeaderError` (reject, never retry), with its own stable ``code`` so a
relayer's log or an RPC answer says which consensus rule a header broke. Signature, chain-id and codec
failures use the protocol's own :class:`~protocol.errors.SignatureError`,
:class:`~protocol.errors.WrongChainError` and :class:`~protocol.errors.CodecError`.
"""

from __future__ import annotations

from protocol.errors import HeaderError
from protocol.light_client import PendingLimitError, UnknownParentError

__all__ = [
    "FarmerKeyError",
    "FarmerPendingLimitError",
    "FutureTimestampError",
    "InsufficientQualityError",
    "PendingDistanceError",
    "PendingLimitError",
    "ProofOfSpaceError",
    "ProofReuseError",
    "UnknownParentError",
    "WrongChallengeError",
    "WrongDifficultyError",
    "WrongWeightError",
]


class ProofOfSpaceError(HeaderError):
    """The proof of space does not verify for the plot id bound to the header's farmer key and nonce."""

    code = "header.poc.proof_of_space"


class InsufficientQualityError(HeaderError):
    """The proof's deadline has not elapsed: ``timestamp_ms < parent.timestamp_ms + deadline_ms``."""

    code = "header.poc.insufficient_quality"


class WrongDifficultyError(HeaderError):
    """The header's difficulty is not the retarget rule's result for its parent."""

    code = "header.poc.difficulty"


class WrongWeightError(HeaderError):
    """``cumulative_weight`` is not the parent's plus the header's difficulty."""

    code = "header.poc.weight"


class WrongChallengeError(HeaderError):
    """The challenge is not the challenge chain's next value after the parent."""

    code = "header.poc.challenge"


class FutureTimestampError(HeaderError):
    """The header's time lies further in the future than the allowed clock drift."""

    code = "header.poc.future_timestamp"


class FarmerKeyError(HeaderError):
    """The header's farmer is not an account the verifier knows, or its key is not ``farmer_pubkey`` (the park's
    nodes make the same check, :func:`chains.poc.app.apply_farmed_block`): a plot bound to an outsider's key
    proves space the park does not have."""

    code = "header.poc.farmer_key"


class ProofReuseError(HeaderError):
    """The header's proof of space (challenge and quality) already backs a final header the verifier holds: the
    same proof re-signed under another header."""

    code = "header.poc.proof_reused"


class FarmerPendingLimitError(PendingLimitError):
    """The header's farmer already has ``max_pending_per_farmer`` non-final headers off the best branch, none of
    them lighter than this one."""

    code = "header.poc.pending_farmer"


class PendingDistanceError(PendingLimitError):
    """The header is more than ``max_distance`` heights above the final tip: finality must catch up first."""

    code = "header.poc.pending_distance"
