"""How the Fabric adapter classifies what peers and orderers answer (SPEC.md §9, §9.1). Pure: no I/O, no hfc.

Three sources of failure, three kinds of error:

* **The bridge chaincode refused** (every endorsing peer answered status 500 with ``"[<code>] <message>"``,
  :func:`chains.fabric.chaincode.contract.parse_error_message`): the typed :class:`~protocol.errors.ProtocolError`
  of that code — ``packet.replay`` is :class:`~protocol.errors.ReplayError`, and so on through
  :mod:`protocol.errors` and :mod:`chains.fabric.errors`; a code this adapter has no class for keeps its code as a
  :class:`~adapters.common.rpc.RemoteError` (its disposition is read from :data:`protocol.errors.DISPOSITIONS`).
* **The transaction cannot be made or did not commit, for a reason that passes**: the organisations' peers
  answered differently (:class:`EndorsementMismatchError`: one refused and the other endorsed, or they endorsed
  different results — clock skew around a timeout, a peer one block behind the other), or the transaction was
  ordered but invalidated at commit by a concurrent one (:class:`MvccConflictError`: ``MVCC_READ_CONFLICT``,
  ``PHANTOM_READ_CONFLICT``). Both are ``retry_soon``: build the same transaction again within a second and it
  will be judged on the state as it is then. A transaction invalidated for any other reason is
  :class:`TxInvalidError` (``never``: it will not pass by being sent again).
* **A peer or orderer could not be reached, or failed outside the chaincode** (gRPC ``UNAVAILABLE``, a deadline, an
  orderer with no Raft leader, "error in simulation" when the peer cannot reach its chaincode server):
  :class:`~protocol.errors.TransportError` with ``retryable=True`` and the park's chain id as ``side``.
  A peer that refuses our identity (``access denied``, an expired or unknown certificate) is
  :class:`~protocol.errors.AuthorizationError` (``fatal``: the relayer is misconfigured).

:func:`classify_endorsements` is the one decision over a set of endorsement outcomes; :func:`rpc_failure` maps a
gRPC failure and :func:`commit_failure` a validation code. Unit-tested with plain values
(``tests/unit/test_fabric_adapter_errors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.common.rpc import RemoteError
from chains.fabric import errors as fabric_errors
from chains.fabric.chaincode.contract import parse_error_message
from protocol import errors as perr
from protocol.errors import AuthorizationError, ParkRelayError, ProtocolError, TransportError

__all__ = [
    "CODES",
    "RETRYABLE_GRPC",
    "TX_VALIDATION_CODES",
    "Endorsed",
    "EndorsementMismatchError",
    "MvccConflictError",
    "OrderingUnknownError",
    "Refused",
    "TxInvalidError",
    "chaincode_error",
    "classify_endorsements",
    "commit_failure",
    "peer_failure",
    "rpc_failure",
]


class EndorsementMismatchError(ProtocolError):
    """The peers of the endorsement policy's organisations did not answer alike: one endorsed and another refused,
    they refused with different codes, or they endorsed different results. No valid transaction can be built from
    such answers. It passes: clocks on both sides of a timeout agree a moment later, a peer one block behind
    catches up. Disposition ``retry_soon``."""

    code = "fabric.endorsement_mismatch"


class MvccConflictError(ProtocolError):
    """The transaction was ordered but invalidated at commit (``MVCC_READ_CONFLICT`` or ``PHANTOM_READ_CONFLICT``):
    another transaction in the same or an earlier block changed what it read. Nothing was written. Disposition
    ``retry_soon``: endorse again on the new state (which may then refuse it for good, e.g. ``packet.replay``)."""

    code = "fabric.mvcc_conflict"


class TxInvalidError(ProtocolError):
    """The transaction was ordered but invalidated at commit for another reason than a read conflict (endorsement
    policy failure, bad payload, expired identity...). Nothing was written; sending it again does not help.
    Disposition ``never``."""

    code = "fabric.tx_invalid"


class OrderingUnknownError(TransportError):
    """No orderer confirmed the transaction, but one may have received it (it did not answer in time): the
    transaction ``tx_id`` may still be ordered and commit. Retryable like any transport error; a caller that resends
    builds a new transaction, which the bridge then refuses (``packet.replay``) if the first one committed."""

    def __init__(self, message: str, *, tx_id: str, side: str) -> None:
        self.tx_id = tx_id
        super().__init__(message, retryable=True, side=side)


TX_VALIDATION_CODES: dict[int, str] = {
    0: "VALID", 1: "NIL_ENVELOPE", 2: "BAD_PAYLOAD", 3: "BAD_COMMON_HEADER", 4: "BAD_CREATOR_SIGNATURE",
    5: "INVALID_ENDORSER_TRANSACTION", 6: "INVALID_CONFIG_TRANSACTION", 7: "UNSUPPORTED_TX_PAYLOAD",
    8: "BAD_PROPOSAL_TXID", 9: "DUPLICATE_TXID", 10: "ENDORSEMENT_POLICY_FAILURE", 11: "MVCC_READ_CONFLICT",
    12: "PHANTOM_READ_CONFLICT", 13: "UNKNOWN_TX_TYPE", 14: "TARGET_CHAIN_NOT_FOUND", 15: "MARSHAL_TX_ERROR",
    16: "NIL_TXACTION", 17: "EXPIRED_CHAINCODE", 18: "CHAINCODE_VERSION_CONFLICT", 19: "BAD_HEADER_EXTENSION",
    20: "BAD_CHANNEL_HEADER", 21: "BAD_RESPONSE_PAYLOAD", 22: "BAD_RWSET", 23: "ILLEGAL_WRITESET",
    24: "INVALID_WRITESET", 25: "INVALID_CHAINCODE", 254: "NOT_VALIDATED", 255: "INVALID_OTHER_REASON",
}
"""``protos.TxValidationCode``: the byte per transaction of a committed block's ``TRANSACTIONS_FILTER``."""
_CONFLICTS = frozenset({11, 12})

RETRYABLE_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "ABORTED",
                            "INTERNAL", "UNKNOWN"})
"""gRPC status names after which the same request may succeed (a node restarting, a connection reset)."""

_AUTH_MARKERS = ("access denied", "creator certificate is not valid", "certificate has expired",
                 "the supplied identity is not valid", "failed to deserialize creator identity",
                 "the creator's signature over the proposal is not valid")
"""Peer answers that mean our own identity is refused (Fabric's endorser ``preProcess`` and ACL checks)."""


def _registry() -> dict[str, type[ProtocolError]]:
    out: dict[str, type[ProtocolError]] = {}
    for module in (perr, fabric_errors):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, ProtocolError) and value is not ProtocolError:
                out[value.code] = value
    for cls in (EndorsementMismatchError, MvccConflictError, TxInvalidError):
        out[cls.code] = cls
    return out


CODES: dict[str, type[ProtocolError]] = _registry()
"""Error code -> class of every code the bridge chaincode can answer (``protocol.errors``, ``chains.fabric.errors``)
and of this adapter's own."""


def chaincode_error(message: str, *, where: str = "") -> ProtocolError:
    """The typed error a bridge chaincode message ``"[<code>] <text>"`` names (:func:`parse_error_message`); a code
    with no class here keeps its code (:class:`~adapters.common.rpc.RemoteError`)."""
    code, text = parse_error_message(message)
    prefix = f"{where}: " if where else ""
    cls = CODES.get(code)
    if cls is None or cls is ProtocolError:
        return RemoteError(code, prefix + text)
    return cls(prefix + text)


@dataclass(frozen=True, slots=True)
class Endorsed:
    """A peer endorsed the proposal."""

    org: str
    """The endorsing peer's MSP id."""
    payload: bytes
    """The signed ``ProposalResponsePayload`` (results, events, response): what every endorsement must agree on."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A peer answered the proposal without endorsing it."""

    org: str
    """The peer's MSP id."""
    status: int
    """``Response.status`` (500 for a chaincode refusal)."""
    message: str
    """``Response.message``: ``"[<code>] ..."`` from the bridge chaincode, or the peer's own text."""


def peer_failure(outcome: Refused, *, side: str) -> ParkRelayError:
    """What one peer's refusal means on its own: the chaincode's typed error when the message carries a parkrelay
    code, our identity refused, or else a failure at the peer (retryable transport)."""
    where = f"{side}: peer of {outcome.org}"
    code, _ = parse_error_message(outcome.message)
    if code != "remote":
        return chaincode_error(outcome.message, where=where)
    low = outcome.message.lower()
    if any(m in low for m in _AUTH_MARKERS):
        return AuthorizationError(f"{where} refused our identity: {outcome.message[:300]}")
    return TransportError(f"peer of {outcome.org} failed outside the chaincode (status {outcome.status}): "
                          f"{outcome.message[:300]}", retryable=True, side=side)


def classify_endorsements(outcomes: Sequence[Endorsed | Refused], *, side: str) -> bytes:
    """The agreed ``ProposalResponsePayload`` if every peer endorsed the same one; else the error to raise.

    * all endorsed, one payload: returned;
    * all refused by the chaincode with one code: that code's typed error (the first peer's message);
    * a peer failed outside the chaincode or refused our identity (:func:`peer_failure`): that error, whatever the
      others said;
    * anything else — endorsed and refused, two codes, two payloads: :class:`EndorsementMismatchError`.
    """
    if not outcomes:
        raise TransportError("no peer answered the proposal", retryable=True, side=side)
    refused = [o for o in outcomes if isinstance(o, Refused)]
    errors = [peer_failure(o, side=side) for o in refused]
    for err in errors:
        if not isinstance(err, ProtocolError) or isinstance(err, AuthorizationError):
            raise err
    endorsed = [o for o in outcomes if isinstance(o, Endorsed)]
    if not refused:
        payloads = {o.payload for o in endorsed}
        if len(payloads) == 1:
            return endorsed[0].payload
        raise EndorsementMismatchError(f"{side}: the peers endorsed different results (their states or clocks "
                                       "differ for now)", got=[o.org for o in endorsed])
    codes = {parse_error_message(o.message)[0] for o in refused}
    if not endorsed and len(codes) == 1:
        raise errors[0]
    raise EndorsementMismatchError(
        f"{side}: the organisations' peers answered differently: "
        + "; ".join(f"{o.org} endorsed" if isinstance(o, Endorsed) else f"{o.org} refused {o.message[:200]!r}"
                    for o in outcomes),
        expected="one answer from every organisation", got=sorted(codes | ({"endorsed"} if endorsed else set())))


def rpc_failure(exc: BaseException, *, side: str, what: str) -> ParkRelayError:
    """A gRPC failure of ``what`` (a call to a peer or orderer) as a typed error. ``exc`` is duck-typed (gRPC's
    ``RpcError`` has ``code()`` and ``details()``; the adapter never imports grpc itself: pyproject's import
    contracts keep it out of ``adapters``)."""
    code_fn, details_fn = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code_fn) and callable(details_fn):
        try:
            status = getattr(code_fn(), "name", str(code_fn()))
            details = str(details_fn() or "")
        except Exception:  # a call object in a state that cannot report: still a failed call
            status, details = "UNKNOWN", repr(exc)
        low = details.lower()
        if any(m in low for m in _AUTH_MARKERS):
            return AuthorizationError(f"{side}: {what}: refused our identity: {details[:300]}")
        return TransportError(f"{what}: gRPC {status}: {details[:300]}", retryable=status in RETRYABLE_GRPC,
                              side=side)
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return TransportError(f"{what}: {exc.__class__.__name__}: {exc}", retryable=True, side=side)
    return TransportError(f"{what}: unexpected {exc.__class__.__name__}: {exc}", retryable=True, side=side)


def commit_failure(code: int, tx_id: str, height: int, *, side: str) -> ProtocolError | None:
    """``None`` for a VALID transaction; else the error its validation code means."""
    if code == 0:
        return None
    name = TX_VALIDATION_CODES.get(code, f"code {code}")
    msg = f"{side}: transaction {tx_id} in block {height} was invalidated at commit: {name}"
    if code in _CONFLICTS:
        return MvccConflictError(msg + " (a concurrent transaction changed what it read)", got=name)
    return TxInvalidError(msg, got=name)

