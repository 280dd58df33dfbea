"""Typed rejections of PoC headers (docs/architecture.md §3, PoC row).

Each is a :class:`~protocol.errors.HeaderError` (reject, never retry), with its own stable ``code`` so a
relayer's log or an RPC answer says which consensus rule a header broke. Signature, chain-id and codec
failures use the protocol's own :class:`~protocol.errors.SignatureError`,
:class:`~protocol.errors.WrongChainError` and :class:`~protocol.errors.CodecError`.
"""

from __future__ import annotations

from protocol.errors import HeaderError

__all__ = [
    "FutureTimestampError",
    "InsufficientQualityError",
    "ProofOfSpaceError",
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


class UnknownParentError(HeaderError):
    """The parent is not a header the verifier holds (never seen, or pruned)."""

    code = "header.poc.unknown_parent"


class FutureTimestampError(HeaderError):
    """The header's time lies further in the future than the allowed clock drift."""

    code = "header.poc.future_timestamp"
