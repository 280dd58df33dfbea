"""Typed errors of parkrelay (SPEC.md §9).

Two trees that lead to different actions:

* :class:`ProtocolError` — the input is invalid. Reject it, maybe report misbehaviour, never retry.
* :class:`TransportError` — an I/O failure talking to a chain. ``retryable`` says whether to reconnect
  that side and try again, or stop.

Every error carries a stable ``code`` (listed in SPEC.md §9) and, where it applies, what was expected
and what was got. Each code has one :class:`Disposition` in :data:`DISPOSITIONS`, the single registry a
caller on the far side of a wire reads to decide what to do (SPEC.md §9.1): the code and its disposition
travel in every JSON-RPC error (:meth:`ParkRelayError.to_dict`), so a relayer acts the same on an error it
has a class for and on one it has not.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

__all__ = [
    "ADMISSION_CODES",
    "DISPOSITIONS",
    "AccountMempoolFullError",
    "AccountRateLimitedError",
    "AdmissionError",
    "AuthorizationError",
    "BondLockedError",
    "BondStateError",
    "CapacityExceededError",
    "CertificateStaleError",
    "ClientExpiredError",
    "ClientFrozenError",
    "ClientRecoveryError",
    "CodecError",
    "ConnectionLimitError",
    "Disposition",
    "DuplicateClientTypeError",
    "DuplicateValidatorError",
    "EvidenceError",
    "HeaderError",
    "IllegalTransitionError",
    "InsufficientFundsError",
    "InvalidProofError",
    "LaneError",
    "MarketAttributeError",
    "MarketBidError",
    "MarketError",
    "MarketPhaseError",
    "MarketRevokedError",
    "MarketSettledError",
    "MarketTermsError",
    "MarketUncertifiedError",
    "MarketUnknownError",
    "MempoolFullError",
    "MisbehaviourError",
    "NonceError",
    "NotFinalError",
    "OverCapacityError",
    "ParkRelayError",
    "ProtocolError",
    "QuorumError",
    "RateLimitError",
    "ReplayError",
    "ReputationInsufficientError",
    "RequestRateLimitedError",
    "RightMismatchError",
    "RightNotOutstandingError",
    "RightOutstandingError",
    "RoundClosedError",
    "SignatureError",
    "SlotStartedError",
    "SlotTimeoutError",
    "StaleEvidenceError",
    "StationUnknownError",
    "TimeoutExpiredError",
    "TransformerMismatchError",
    "TransformerUnknownError",
    "TransportError",
    "UnbondedAccountError",
    "UnbondingAccountError",
    "UnknownClientError",
    "ValidatorJailedError",
    "ValidatorSetMismatchError",
    "WrongChainError",
    "admission_error",
    "disposition_of",
]


class Disposition(enum.Enum):
    """What a caller should do about a refusal: the same for every caller, whichever side of a wire it is on."""

    RETRY_SOON = "retry_soon"
    """A passing condition at the node (its mempool is full, a nonce raced another transaction): submit again
    within seconds."""
    AFTER_PROGRESS = "after_progress"
    """The chain's own progress will lift it (a header not final yet, a rate-limit bucket refilling, a timeout
    not yet passed): submit again once the chain has moved."""
    DONE = "done"
    """What was asked is already true (another relayer did it first): nothing to do."""
    NEVER = "never"
    """The input is invalid and stays so: never submit it again; report it."""
    FATAL = "fatal"
    """The caller cannot work as configured (its account is refused, a client does not exist): stop the work
    that hit it and tell the operator."""


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

    @property
    def disposition(self) -> Disposition:
        """What to do about this error (:data:`DISPOSITIONS`)."""
        return disposition_of(self.code)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, as RPC servers return it: the code, its disposition, the message, and expected
        and got where they apply."""
        out: dict[str, Any] = {"code": self.code, "disposition": self.disposition.value, "message": self.message}
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


class ClientRecoveryError(ProtocolError):
    """A governance client recovery the relay refuses: the client is not frozen, the substitute is of another
    kind, or the in-flight packets listed are not exactly those verified and unsettled (SPEC.md §8.8)."""

    code = "client.recovery"


class ClientExpiredError(ProtocolError):
    """The light client was not updated within its trusting period."""

    code = "client.expired"


class CertificateStaleError(ProtocolError):
    """A phase-3 relay certificate whose relay header is older than the target bridge's
    ``max_certificate_age_ms`` at the target's block time (SPEC.md §6.5, §7.9): fetch a newer one."""

    code = "certificate.stale"


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


class DuplicateValidatorError(CodecError):
    """A validator set that repeats an ed25519 key or a (non-zero) Ethereum address (SPEC.md §7.1)."""

    code = "certificate.duplicate_validator"


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


class MempoolFullError(ProtocolError):
    """The node's mempool holds its limit of transactions: the same transaction may pass seconds later."""

    code = "mempool.full"


class AccountMempoolFullError(MempoolFullError):
    """The node's mempool holds its limit of queued transactions of this sender (``[limits]
    mempool_txs_per_account``): the sender's own queued ones must go into blocks first. Bounds what one account
    holds of a mempool that charges nothing; the global bound (``mempool.full``) bounds all accounts together."""

    code = "mempool.account_full"


class AccountRateLimitedError(MempoolFullError):
    """A bonded relay account submitted transactions faster than a relay node admits from one account (``[limits]
    relay_account_txs_per_s``, ``relay_account_burst``; governance grants are not bounded): the relay chain charges
    nothing for block space, so a bond buys a rate, not a flood. Passes once the account's bucket refills."""

    code = "mempool.account_rate"


class RequestRateLimitedError(ProtocolError):
    """A client address sent requests faster than a node's or the operator API's per-address token bucket allows
    (``[limits] rpc_requests_per_s``, ``rpc_burst``): nothing was read past the refusal; the same request passes
    once the bucket refills."""

    code = "rpc.rate_limited"


class ConnectionLimitError(ProtocolError):
    """A node holds its limit of WebSocket connections, in all or from this client address (``[limits]
    ws_connections``, ``ws_connections_per_ip``): the upgrade is refused; it passes once a subscriber leaves."""

    code = "rpc.connection_limit"


class SlotTimeoutError(TimeoutExpiredError):
    """A charging right's packet would time out after its slot starts (SPEC §2.3): phase 1 refuses it for good,
    since a right may only execute before its slot."""

    code = "right.timeout_after_slot"


class AdmissionError(ProtocolError):
    """A park's admission rule refuses a charging right (SPEC §2.3, "Bookings"). On issue it is raised; on
    receive the same code is the error ack. A chain's own admission hook may refuse with a code of its own,
    raised as this class."""

    code = "admission.refused"


class SlotStartedError(AdmissionError):
    """The right's slot has started (``slot_start_ms <= block time``)."""

    code = "slot.started"


class StationUnknownError(AdmissionError):
    """The right's station is not registered on this park."""

    code = "station.unknown"


class TransformerMismatchError(AdmissionError):
    """The registered station is behind another transformer than the right names."""

    code = "transformer.mismatch"


class TransformerUnknownError(AdmissionError):
    """The right's transformer is not registered on this park."""

    code = "transformer.unknown"


class CapacityExceededError(AdmissionError):
    """The booked rights overlapping the slot plus this one exceed the transformer's capacity."""

    code = "capacity.exceeded"


ADMISSION_CODES: tuple[str, ...] = ("slot.started", "station.unknown", "transformer.mismatch", "transformer.unknown",
                                    "capacity.exceeded")
"""The admission refusals every park checks, in this order (SPEC §2.3)."""

_ADMISSION_CLASSES: dict[str, type[AdmissionError]] = {
    c.code: c for c in (SlotStartedError, StationUnknownError, TransformerMismatchError, TransformerUnknownError,
                        CapacityExceededError)}


def admission_error(code: str, message: str, *, expected: Any = None, got: Any = None) -> AdmissionError:
    """The typed error of an admission refusal code (:class:`AdmissionError` itself for a chain's own code)."""
    return _ADMISSION_CLASSES.get(code, AdmissionError)(message, expected=expected, got=got)


class RightOutstandingError(ProtocolError):
    """The relay's accountant (SPEC §6.7): a right leaving over a hop where that trace is already outstanding or
    in flight. A right that came back over the hop passes once its return is confirmed."""

    code = "right.outstanding"


class RightNotOutstandingError(ProtocolError):
    """The relay's accountant (SPEC §6.7): a right returning over a hop where that trace is not known outstanding
    (never left that way, already back, or its outbound ack not confirmed yet)."""

    code = "right.not_outstanding"


class RightMismatchError(ProtocolError):
    """The relay's accountant (SPEC §6.7): a right returning with fields other than the ones that left."""

    code = "right.mismatch"


class ReputationInsufficientError(ProtocolError):
    """A market refuses imported reputation: none held by the caller, or a score below the market's threshold."""

    code = "reputation.insufficient"


class MarketError(ProtocolError):
    """A park market's own refusal (chains/fabric/SPEC.md §F1, docs/research.md#seed-004): the subclasses name
    the rule."""

    code = "market.refused"


class MarketUncertifiedError(MarketError):
    """Market access: the caller's identity has no certification from the park's regulator."""

    code = "market.uncertified"


class MarketRevokedError(MarketError):
    """Market access: the regulator revoked the caller's certification."""

    code = "market.revoked"


class MarketAttributeError(MarketError):
    """Market access: the caller's certificate lacks the market role attribute, or it is not the role certified
    or the role the function needs."""

    code = "market.attribute"


class RoundClosedError(MarketError):
    """A request, bid or offer after its market round closed for it."""

    code = "market.round_closed"


class MarketPhaseError(MarketError):
    """A market step before its time (allocation before requests close, clearing before bids close): the round's
    progress lifts it."""

    code = "market.phase"


class MarketSettledError(MarketError):
    """A market step already done (a round allocated or cleared twice, a contract settled twice)."""

    code = "market.settled"


class MarketUnknownError(MarketError):
    """A market record the call names does not exist (round, plan, contract, offer, request)."""

    code = "market.unknown"


class MarketTermsError(MarketError):
    """Private terms that do not hash to the commitment on the public ledger, or private data the peers hold
    that does not."""

    code = "market.terms"


class MarketBidError(MarketError):
    """A bid or offer the market's rules refuse (more power than the station's unmet demand or held right, a
    station that is not the caller's, a request or bid already placed)."""

    code = "market.bid"


class EvidenceError(ProtocolError):
    """Evidence of relay-validator equivocation (SPEC §7.7) that proves nothing: the two messages do not conflict,
    name a validator index outside the set of their height, or are for a height the relay chain has not reached."""

    code = "evidence.invalid"


class StaleEvidenceError(EvidenceError):
    """Evidence of relay-validator equivocation older than the evidence window (SPEC §7.7)."""

    code = "evidence.stale"


class ValidatorJailedError(ProtocolError):
    """Evidence against a relay validator that is already jailed (SPEC §7.7): nothing left to do."""

    code = "validator.jailed"


# --- relay-chain bonds (SPEC §6.9): begin -------------------------------------------------------------------


class UnbondedAccountError(ProtocolError):
    """A relay account without the bond it needs (SPEC §6.9): ``account.register`` of a name whose funds hold less
    than ``min_bond``, or a transaction of an account whose bond was withdrawn or slashed below ``min_bond``."""

    code = "account.unbonded"


class UnbondingAccountError(ProtocolError):
    """A relay transaction of an account that is unbonding (SPEC §6.9): it relays nothing until it bonds again."""

    code = "account.unbonding"


class BondLockedError(ProtocolError):
    """``account.withdraw`` before the unbonding period ended (SPEC §6.9): relay time lifts it."""

    code = "bond.locked"


class BondStateError(ProtocolError):
    """A bond operation the account's bond status does not allow (SPEC §6.9): unbonding a governance grant or an
    account already unbonding, withdrawing a bond that is not unbonding, bonding an account already bonded."""

    code = "bond.state"


# --- relay-chain bonds: end ---------------------------------------------------------------------------------


class TransportError(ParkRelayError):
    """I/O with a chain failed. ``retryable`` says whether reconnecting may help; ``side`` names the side."""

    code = "transport"

    def __init__(
        self, message: str, *, retryable: bool, side: str = "", expected: Any = None, got: Any = None
    ) -> None:
        self.retryable = retryable
        self.side = side
        super().__init__(f"{side}: {message}" if side else message, expected=expected, got=got)

    @property
    def disposition(self) -> Disposition:
        return Disposition.RETRY_SOON if self.retryable else Disposition.FATAL


_R, _P, _D, _N, _F = (Disposition.RETRY_SOON, Disposition.AFTER_PROGRESS, Disposition.DONE, Disposition.NEVER,
                      Disposition.FATAL)

DISPOSITIONS: dict[str, Disposition] = {
    # generic and codec
    "parkrelay": _N, "protocol": _N, "remote": _N, "codec.invalid": _N, "asset.invalid": _N,
    # proofs, signatures, certificates: forged or wrong input
    "proof.invalid": _N, "signature.invalid": _N, "certificate.quorum": _N, "certificate.validator_set": _N,
    # headers and light clients
    "header.invalid": _N, "header.not_final": _P, "client.misbehaviour": _N, "client.frozen": _F,
    "client.expired": _F, "client.unknown": _F, "client.duplicate_type": _F,
    "client.recovery": _N,
    # a phase-3 certificate older than the target's bound (SPEC §7.9): a newer relay block lifts it
    "certificate.stale": _P,
    "header.unknown_parent": _P, "header.pending_limit": _P, "header.dpos.equivocation": _N,
    "header.dpos.finality_evidence": _N, "header.dpos.future_timestamp": _P,
    "header.dpos.double_sign_evidence": _N,
    "header.poc.proof_of_space": _N, "header.poc.insufficient_quality": _N, "header.poc.difficulty": _N,
    "header.poc.weight": _N, "header.poc.challenge": _N, "header.poc.future_timestamp": _P,
    "header.poc.farmer_key": _N, "header.poc.proof_reused": _N,
    "header.poc.pending_farmer": _P, "header.poc.pending_distance": _P,
    "header.eth.shallow_attestation": _P, "header.eth.attestation_conflict": _N,
    "header.eth.attestation_limit": _P, "header.eth.pending_ahead": _P,
    "header.fabric.signer": _N, "header.fabric.config": _N,
    # Fabric attestations (refinements of proof.invalid); a stale or future-dated one is replaced by a fresh one
    "proof.fabric.endorser": _N, "proof.fabric.policy": _N, "proof.fabric.statement": _N,
    "proof.fabric.freshness": _P,
    # packets and lanes
    "packet.replay": _D, "packet.timeout": _P, "packet.wrong_chain": _N, "lifecycle.illegal": _N,
    "lane.invalid": _N, "lane.rate_limited": _P, "lane.over_capacity": _N, "funds.insufficient": _P,
    # charging rights: admission (SPEC §2.3), the relay's accountant (§6.7); reputation read by markets
    "right.timeout_after_slot": _N, "admission.refused": _N, "slot.started": _N, "station.unknown": _N,
    "transformer.mismatch": _N, "transformer.unknown": _N, "capacity.exceeded": _N,
    "right.outstanding": _P, "right.not_outstanding": _P, "right.mismatch": _N, "reputation.insufficient": _N,
    # park markets (chains/fabric/SPEC.md §F1): access, rounds, records, private terms
    "market.refused": _N, "market.uncertified": _N, "market.revoked": _N, "market.attribute": _N,
    "market.round_closed": _N, "market.phase": _P, "market.settled": _D, "market.unknown": _N, "market.terms": _N,
    "market.bid": _N,
    # relay-validator equivocation evidence (SPEC §7.7)
    "evidence.invalid": _N, "evidence.stale": _N, "validator.jailed": _D,
    # accounts and transactions
    "auth.denied": _F, "tx.nonce": _R, "mempool.full": _R, "mempool.account_full": _P,
    "mempool.account_rate": _R,
    # node and transport
    "block.missing_parent": _P, "rpc.not_found": _P, "transport": _R, "poc.plot": _F,
    # requests refused before any method runs (chains/common/jsonrpc.py)
    "rpc.invalid": _N, "rpc.parse_error": _N, "rpc.body_too_large": _N, "rpc.invalid_request": _N,
    "rpc.method_not_found": _N, "rpc.invalid_params": _N, "rpc.unauthorized": _F,
    # admission bounds of a node and the operator API (the deployment config's [limits])
    "rpc.rate_limited": _R, "rpc.connection_limit": _R,
    # Ethereum adapter
    "eth.reverted": _N, "eth.gas_cap": _N,
    # Fabric adapter: peers that answered differently and read conflicts at commit pass within a block or two;
    # any other invalidation at commit does not
    "fabric.endorsement_mismatch": _R, "fabric.mvcc_conflict": _R, "fabric.tx_invalid": _N,
    # relay validator sets on the park bridges (SPEC §7.1)
    "certificate.duplicate_validator": _N,
    # relay-chain bonds (SPEC §6.9) -- begin
    "account.unbonded": _F, "account.unbonding": _F, "bond.locked": _P, "bond.state": _N,
    # relay-chain bonds -- end
}
"""Every stable error code and its :class:`Disposition` (SPEC.md §9). A code missing here is treated as
:attr:`Disposition.NEVER`; a unit test checks that every error class of the code base has its code here."""


def disposition_of(code: str) -> Disposition:
    """The disposition of error ``code`` (:attr:`Disposition.NEVER` for a code nobody registered)."""
    return DISPOSITIONS.get(code, Disposition.NEVER)
