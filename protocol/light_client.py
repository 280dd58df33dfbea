"""The light-client interface and the client router (SPEC.md §8).

A light client follows one counterparty chain header by header. Its host (the relay chain, or a
test) calls :meth:`LightClient.process_header`, which runs the two halves in order:

* ``validate_header(header, now_ms)`` — pure: raises a :class:`~protocol.errors.ProtocolError` if the
  header breaks the counterparty's consensus rules, or :class:`~protocol.errors.MisbehaviourError` if
  it conflicts with a header the client already holds as final. Changes nothing.
* ``apply_header(header)`` — assumes the header was validated; records it, advances finality, prunes.

Proofs are checked only against *final* headers (``verify_membership`` / ``verify_non_membership``).
Misbehaviour freezes the client for good: a frozen client verifies nothing and is never unfrozen (a
new client, with a new id, replaces it). Time is always passed in (``now_ms``); nothing here reads
a clock.

A host that persists its clients (the relay chain keeps each one's whole state under its state root)
asks every client type for ``to_state()`` / ``from_state(client_id, data)``;
:func:`base_state_to_json` / :func:`restore_base_state` serialise the part every :class:`LightClient`
shares, so a chain kind's client adds only its own consensus-rule state.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from protocol.errors import (
    ClientExpiredError,
    ClientFrozenError,
    CodecError,
    DuplicateClientTypeError,
    HeaderError,
    MisbehaviourError,
    NotFinalError,
    ReplayError,
    TimeoutExpiredError,
    UnknownClientError,
)
from protocol.state_commitment import Proof, verify_membership, verify_membership_encoded, verify_non_membership
from protocol.types import ChainId, ClientId

H = TypeVar("H")


# -- errors every client type that follows forks raises (one copy, SPEC.md §9) --------------------------------


class HeaderReplayError(ReplayError, HeaderError):
    """A light client already holds the header (pending, or final at its height): the work is done.

    A :class:`ReplayError` (code ``packet.replay``), so a host drops a redundant header update as it drops
    any replay; also a :class:`HeaderError`, as a header refused before it was applied. One class for every
    client type."""

    code: ClassVar[str] = ReplayError.code


class UnknownParentError(HeaderError):
    """The header's parent is not a header the light client holds (never seen, or on a pruned branch): feed the
    headers below it first. One class for every client type that follows forks."""

    code: ClassVar[str] = "header.unknown_parent"


class PendingLimitError(HeaderError):
    """Holding the header would exceed the client's bound on non-final headers (its finality stalls, or forks fill
    the pool), and nothing lighter could be evicted for it. One class for every client type; a client may refine
    it (PoC: per farmer, by distance)."""

    code: ClassVar[str] = "header.pending_limit"


class ClientStatus(enum.Enum):
    """A light client's status (SPEC.md §8.2)."""

    ACTIVE = "active"
    FROZEN = "frozen"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ConsensusState:
    """What a light client keeps of one header: enough to verify proofs against it."""

    height: int
    """Height of the header."""
    header_hash: bytes
    """Hash of the header."""
    timestamp_ms: int
    """Block time of the header, ms."""
    state_root: bytes
    """State commitment root the header commits to."""


class LightClient(ABC, Generic[H]):
    """Base of every light client. Subclasses implement the consensus rules of one chain kind."""

    client_type: ClassVar[str]
    """Registered type name (``dpos``, ``poc``, ``ethereum``, ``fabric``, ``relay``)."""

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int,
                 max_consensus_states: int = 4096) -> None:
        self.client_id = client_id
        self.chain_id = chain_id
        self.trusting_period_ms = trusting_period_ms
        self.max_consensus_states = max_consensus_states
        self.frozen_height: int | None = None
        self.freeze_reason = ""
        self._final: dict[int, ConsensusState] = {}
        self.final_height = 0
        self.final_timestamp_ms = 0

    # -- status --------------------------------------------------------------------------------

    def status(self, now_ms: int) -> ClientStatus:
        if self.frozen_height is not None:
            return ClientStatus.FROZEN
        if self._final and now_ms > self.final_timestamp_ms + self.trusting_period_ms:
            return ClientStatus.EXPIRED
        return ClientStatus.ACTIVE

    def check_active(self, now_ms: int) -> None:
        """Raise unless the client is active."""
        st = self.status(now_ms)
        if st is ClientStatus.FROZEN:
            raise ClientFrozenError(f"client {self.client_id} of {self.chain_id} is frozen: {self.freeze_reason}",
                                    got=self.frozen_height)
        if st is ClientStatus.EXPIRED:
            raise ClientExpiredError(
                f"client {self.client_id} of {self.chain_id} expired: no final header within the trusting period",
                expected=f"now <= {self.final_timestamp_ms + self.trusting_period_ms}", got=now_ms)

    def freeze(self, height: int, reason: str) -> None:
        """Freeze for good after misbehaviour at ``height``."""
        if self.frozen_height is None:
            self.frozen_height = height
            self.freeze_reason = reason

    @property
    @abstractmethod
    def latest_height(self) -> int:
        """Height of the newest header held (final or not): a relayer sends headers from the next one on."""

    # -- headers -------------------------------------------------------------------------------

    @abstractmethod
    def validate_header(self, header: H, now_ms: int) -> None:
        """Raise unless ``header`` extends what the client holds under the chain's consensus rules."""

    @abstractmethod
    def apply_header(self, header: H) -> None:
        """Record a header that :meth:`validate_header` accepted; advance finality."""

    def process_header(self, header: H, now_ms: int) -> None:
        """Validate then apply. Misbehaviour freezes the client before the error propagates."""
        self.check_active(now_ms)
        try:
            self.validate_header(header, now_ms)
        except MisbehaviourError as exc:
            self.freeze(self._height_of(header), exc.message)
            raise
        self.apply_header(header)

    def _height_of(self, header: H) -> int:
        return int(getattr(header, "height", 0))

    def check_misbehaviour(self, header_a: H, header_b: H, now_ms: int) -> None:
        """Evidence of two valid headers at one height: validates both, freezes, raises :class:`MisbehaviourError`.

        The default asks the subclass to validate each header as a fork of what it holds
        (:meth:`validate_conflicting`). Raises the header's own error if either is invalid.
        """
        self.check_active(now_ms)
        ha, hb = self._height_of(header_a), self._height_of(header_b)
        if ha != hb:
            # invalid evidence, not misbehaviour: the client stays active, so the error must not say frozen
            raise HeaderError("evidence headers are at different heights", expected=ha, got=hb)
        self.validate_conflicting(header_a, header_b, now_ms)
        self.freeze(ha, "conflicting headers submitted as evidence")
        raise MisbehaviourError(f"client {self.client_id} frozen: two valid headers at height {ha}", got=ha)

    @abstractmethod
    def validate_conflicting(self, header_a: H, header_b: H, now_ms: int) -> None:
        """Raise unless both headers are validly signed/proven, distinct, and at one height."""

    # -- finality and proofs -------------------------------------------------------------------

    def _record_final(self, cs: ConsensusState) -> None:
        # `not self._final`: a first final header at height 0 (a genesis) must also start the trusting period
        newest = not self._final or cs.height > self.final_height
        self._final[cs.height] = cs
        if newest:
            self.final_height = cs.height
            self.final_timestamp_ms = cs.timestamp_ms
        while len(self._final) > self.max_consensus_states:
            del self._final[next(iter(self._final))]  # heights are recorded in ascending order

    def final_consensus_state(self, height: int) -> ConsensusState:
        """The consensus state of a final header, or :class:`NotFinalError`."""
        cs = self._final.get(height)
        if cs is None:
            raise NotFinalError(f"height {height} of {self.chain_id} is not final in client {self.client_id}",
                                expected=f"a final height <= {self.final_height}", got=height)
        return cs

    def final_heights(self) -> list[int]:
        return sorted(self._final)

    def holds_final(self, height: int, header_hash: bytes) -> bool:
        """Whether ``header_hash`` is the retained final header at ``height``: with the headers a client holds
        pending (its :class:`~protocol.fork_tree.ForkTree`), what its ``holds(header)`` answers."""
        cs = self._final.get(height)
        return cs is not None and cs.header_hash == header_hash

    def verify_membership(self, height: int, key: bytes, value: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless ``key`` -> ``value`` in the state of the final header at ``height``."""
        self.check_active(now_ms)
        cs = self.final_consensus_state(height)
        if isinstance(proof, Proof):
            verify_membership(cs.state_root, key, value, proof)
        else:  # as Proof.decode(bytes(proof)) then verify_membership, without the Proof
            verify_membership_encoded(cs.state_root, key, value, bytes(proof))

    def verify_non_membership(self, height: int, key: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless ``key`` is absent from the state of the final header at ``height``."""
        self.check_active(now_ms)
        cs = self.final_consensus_state(height)
        verify_non_membership(cs.state_root, key, _as_proof(proof))

    def verify_timeout(self, height: int, key: bytes, timeout_timestamp_ms: int, proof: Any, now_ms: int, *,
                       certified: bool = True) -> None:
        """Raise unless a packet whose receipt path is ``key`` has provably timed out on the counterparty at the
        final height ``height`` (SPEC.md §6.6, *Timeout*): nothing can execute it any more.

        The default is the rule of chains with a trustworthy block time: the final header at ``height`` has
        ``timestamp_ms >= timeout_timestamp_ms`` (else :class:`~protocol.errors.TimeoutExpiredError`: not yet, use a
        later header), and ``key`` is absent there (:meth:`verify_non_membership`). A chain kind whose block time is
        not the chain's own clock overrides it (Fabric, SPEC.md §8.7: an attested timeout receipt instead).

        ``certified`` says whether the relay ever certified the packet VERIFIED (a ``relay/verified`` record the
        counterparty's bridge could execute it with). The relay passes False for an *unverified timeout* (§6.6),
        where no certificate exists and none will once the outcome is recorded: a kind whose target can execute
        only with that certificate may then accept a weaker proof (Fabric, §8.7). The default rule ignores it.
        """
        self.check_active(now_ms)
        cs = self.final_consensus_state(height)
        if cs.timestamp_ms < timeout_timestamp_ms:
            raise TimeoutExpiredError(
                f"not yet timed out: {self.chain_id} header {height} is before the packet's timeout "
                "(use a later header)",
                expected=f"time >= {timeout_timestamp_ms}", got=cs.timestamp_ms)
        self.verify_non_membership(height, key, proof, now_ms)


def _as_proof(proof: Any) -> Proof:
    return proof if isinstance(proof, Proof) else Proof.decode(bytes(proof))


# -- persistence of the shared part ------------------------------------------------------------


def _no_constant(name: str) -> Any:
    """``json.loads``' hook for ``NaN``/``Infinity``/``-Infinity``: not JSON, never in a state we wrote."""
    raise ValueError(f"{name} is not a JSON number")


def _state_int(value: Any, what: str) -> int:
    """A non-negative integer of a persisted state (not a float, not a bool), else :class:`CodecError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CodecError(f"light-client state: {what} is not a non-negative integer", got=repr(value)[:80])
    return value


def open_state(data: bytes, *, client_type: str, versions: Collection[int], client_id: ClientId,
               name: str) -> dict[str, Any]:
    """The envelope every persisted light-client state shares, opened and checked (one copy for every client
    type): a JSON object with ``"v"`` one of ``versions``, ``"type"`` equal to ``client_type``, and the client's
    id (under ``"base"``, or at the top for older layouts) equal to ``client_id``. Raises
    :class:`~protocol.errors.CodecError` naming ``name`` (``"a PoC light-client state"``) otherwise."""
    try:
        obj = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"not {name}: not JSON ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("v") not in versions or obj.get("type") != client_type:
        raise CodecError(f"not {name}", expected=f"{client_type} v{max(versions)}",
                         got=[obj.get("type"), obj.get("v")] if isinstance(obj, dict) else None)
    base = obj.get("base")
    owner = base.get("client_id") if isinstance(base, dict) else obj.get("client_id")
    if owner != client_id:
        raise CodecError("light-client state of another client", expected=client_id, got=owner)
    return obj


def base_state_to_json(client: LightClient[Any]) -> dict[str, Any]:
    """JSON of :class:`LightClient`'s own fields: ids, trusting period, freeze, final consensus states.

    ``final`` lists ``[height, header_hash hex, timestamp_ms, state_root hex]`` in ascending height; the
    other keys are ``client_id``, ``chain_id``, ``trusting_period_ms``, ``max_consensus_states``,
    ``frozen_height`` (``null`` unless frozen) and ``freeze_reason``.
    """
    final = []
    for h in client.final_heights():
        cs = client.final_consensus_state(h)
        final.append([cs.height, cs.header_hash.hex(), cs.timestamp_ms, cs.state_root.hex()])
    return {"client_id": client.client_id, "chain_id": client.chain_id,
            "trusting_period_ms": client.trusting_period_ms, "max_consensus_states": client.max_consensus_states,
            "frozen_height": client.frozen_height, "freeze_reason": client.freeze_reason, "final": final}


def restore_base_state(client: LightClient[Any], obj: Mapping[str, Any]) -> None:
    """Restore what :func:`base_state_to_json` wrote into a freshly constructed ``client``.

    Final consensus states the constructor recorded (a client built from a checkpoint holds it as final)
    are replaced. Uses :meth:`LightClient._record_final`, the subclass-facing recorder, in ascending
    height order, so ``final_height`` / ``final_timestamp_ms`` come out as the original's. Raises
    :class:`CodecError` if ``obj`` is malformed (ids and limits are the constructor's: the caller checks them).
    """
    client._final = {}
    client.final_height = 0
    client.final_timestamp_ms = 0
    try:
        for height, header_hash, ts, root in obj["final"]:
            client._record_final(ConsensusState(_state_int(height, "a final height"), bytes.fromhex(header_hash),
                                                _state_int(ts, "a final timestamp"), bytes.fromhex(root)))
        frozen = obj["frozen_height"]
        client.frozen_height = None if frozen is None else _state_int(frozen, "frozen_height")
        client.freeze_reason = str(obj["freeze_reason"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"malformed light-client state of {client.client_id}: {exc}") from exc


ClientFactory = Callable[..., LightClient[Any]]


class ClientRouter:
    """Creates and holds light clients by id. Types register once; ids are never reused."""

    def __init__(self) -> None:
        self._factories: dict[str, ClientFactory] = {}
        self._clients: dict[ClientId, LightClient[Any]] = {}
        self._counter = 0

    def register_type(self, client_type: str, factory: ClientFactory) -> None:
        if client_type in self._factories:
            raise DuplicateClientTypeError(f"light-client type {client_type!r} is already registered",
                                           got=client_type)
        self._factories[client_type] = factory

    def create(self, client_type: str, **kwargs: Any) -> LightClient[Any]:
        """Create a client of a registered type; its id is ``<type>-<n>`` with a counter that only grows."""
        factory = self._factories.get(client_type)
        if factory is None:
            raise UnknownClientError("unknown light-client type", expected=sorted(self._factories), got=client_type)
        client_id = ClientId(f"{client_type}-{self._counter}")
        self._counter += 1
        client = factory(client_id=client_id, **kwargs)
        self._clients[client_id] = client
        return client

    def get(self, client_id: ClientId) -> LightClient[Any]:
        client = self._clients.get(client_id)
        if client is None:
            raise UnknownClientError("no light client with that id", got=client_id)
        return client

    @property
    def next_index(self) -> int:
        return self._counter

    def clients(self) -> dict[ClientId, LightClient[Any]]:
        return dict(self._clients)
