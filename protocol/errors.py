"""Typed errors of parkrelay (SPEC.md §9).

Two trees that lead to different actions:

* :class:`ProtocolError` — the input is invalid. Reject it, maybe report misbehaviour, never retry.
* :class:`TransportError` — an I/O failure talking to a chain. ``retryable`` says whether to reconnect
  that side and try again, or stop.

Every error carries a stable ``code`` (listed in SPEC.md §9) and, where it applies, what was expected
and what was got.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AuthorizationError",
    "ClientExpiredError",
    "ClientFrozenError",
    "CodecError",
    "DuplicateClientTypeError",
    "HeaderError",
    "IllegalTransitionError",
    "InsufficientFundsError",
    "InvalidProofError",
    "LaneError",
    "MisbehaviourError",
    "NonceError",
    "NotFinalError",
    "OverCapacityError",
    "ParkRelayError",
    "ProtocolError",
    "QuorumError",
    "RateLimitError",
    "ReplayError",
    "SignatureError",
    "TimeoutExpiredError",
    "TransportError",
    "UnknownClientError",
    "ValidatorSetMismatchError",
    "WrongChainError",
]


class ParkRelayError(Exception):
    """Root of every error parkrelay raises on purpose."""

    code: ClassVar[str] = "parkrelay"

    def __init__(self, message: str, *, expected: Any = None, got: Any = None) -> None:
        self.message = message
        self.expected = expected
        self.got = got
        detail = message
        if expected is not None or got is not None:
            detail = f"{message} (expected {expected!r}, got {got!r})"
        super().__init__(f"[{self.code}] {detail}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, as RPC servers return it."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.expected is not None:
            out["expected"] = _jsonable(self.expected)
        if self.got is not None:
            out["got"] = _jsonable(self.got)
        return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (int, str, float, bool)) or v is None:
        return v
    return repr(v)


class ProtocolError(ParkRelayError):
    """Invalid input: reject, never retry."""

    code = "protocol"


class CodecError(ProtocolError):
    """Bytes that are not the canonical encoding of the expected type."""

    code = "codec.invalid"


class InvalidProofError(ProtocolError):
    """A membership or non-membership proof does not verify against the root."""

    code = "proof.invalid"


class SignatureError(ProtocolError):
    """A signature is missing, malformed, or does not verify."""

    code = "signature.invalid"


class HeaderError(ProtocolError):
    """A header breaks a consensus rule of its chain (wrong producer, bad link, bad proof of space...)."""

    code = "header.invalid"


class NotFinalError(ProtocolError):
    """A proof was offered against a header the light client does not hold as final."""

    code = "header.not_final"


class MisbehaviourError(ProtocolError):
    """Two valid, conflicting headers: the client that saw them is frozen."""

    code = "client.misbehaviour"


class ClientFrozenError(ProtocolError):
    """The light client is frozen after misbehaviour; nothing is verified against it."""

    code = "client.frozen"


class ClientExpiredError(ProtocolError):
    """The light client was not updated within its trusting period."""

    code = "client.expired"


class UnknownClientError(ProtocolError):
    """No light client with that id or type."""

    code = "client.unknown"


class DuplicateClientTypeError(ProtocolError):
    """A light-client type was registered twice with the router."""

    code = "client.duplicate_type"


class QuorumError(ProtocolError):
    """Signatures of at most 2/3 of the voting power."""

    code = "certificate.quorum"


class ValidatorSetMismatchError(ProtocolError):
    """A header or certificate names a validator set other than the trusted one."""

    code = "certificate.validator_set"


class ReplayError(ProtocolError):
    """A packet, receipt or certificate that was already processed."""

    code = "packet.replay"


class NonceError(ProtocolError):
    """A transaction's nonce is not its account's next one (too high: a gap before it)."""

    code = "tx.nonce"


class TimeoutExpiredError(ProtocolError):
    """The packet's timeout has passed (or, for a timeout proof, has not yet passed)."""

    code = "packet.timeout"


class WrongChainError(ProtocolError):
    """A packet, header or certificate meant for another chain."""

    code = "packet.wrong_chain"


class LaneError(ProtocolError):
    """Out-of-order sequence, unknown or paused lane."""

    code = "lane.invalid"


class RateLimitError(LaneError):
    """The lane's token bucket for the asset holds too little: the same packet may pass once it refills."""

    code = "lane.rate_limited"


class OverCapacityError(RateLimitError):
    """A packet needs more tokens than the lane's bucket can ever hold (its capacity): refused for good,
    unlike :class:`RateLimitError`, which a refill lifts. Phase 1 refuses it before anything is escrowed."""

    code = "lane.over_capacity"


class InsufficientFundsError(ProtocolError):
    """A balance or escrow too small for the operation."""

    code = "funds.insufficient"


class IllegalTransitionError(ProtocolError):
    """A packet lifecycle transition not in SPEC.md §6."""

    code = "lifecycle.illegal"


class AuthorizationError(ProtocolError):
    """The caller may not do this (unsigned, wrong key, not an operator)."""

    code = "auth.denied"


class TransportError(ParkRelayError):
    """I/O with a chain failed. ``retryable`` says whether reconnecting may help; ``side`` names the side."""

    code = "transport"

    def __init__(
        self, message: str, *, retryable: bool, side: str = "", expected: Any = None, got: Any = None
    ) -> None:
        self.retryable = retryable
        self.side = side
        super().__init__(f"{side}: {message}" if side else message, expected=expected, got=got)
