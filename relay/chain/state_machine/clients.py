"""Light clients hosted by the relay chain, persisted in its state (SPEC.md §8, §6.4 step 2, §6.6;
docs/architecture.md §3).

The relay chain follows every park chain with one light client (:class:`protocol.light_client.LightClient`).
Client *types* register with a :class:`RelayClientRouter` (a :class:`~protocol.light_client.ClientRouter`
whose id counter lives in relay state, so ids ``<type>-<n>`` are never reused, SPEC §8.3). Clients are
created at genesis or by a governance transaction; a client replaced after a freeze keeps its state
under its own id, and the chain's pointer moves to the new one.

Persistence: state is authoritative
-----------------------------------

Every client's whole state is in the relay state tree at ``relay/client_state/<client_id>`` (so the
relay header's ``state_root`` commits to it and a restarted node rebuilds its clients from state
alone). A hosted client type supplies, through its :class:`ClientType`:

``to_state(client) -> bytes``
    Canonical bytes of everything the client's future behaviour depends on (two clients that
    behave alike give equal bytes; use :func:`chains.common.state.canonical_json`).
``from_state(client_id, data) -> client``
    The inverse: ``from_state(id, to_state(c))`` behaves exactly as ``c`` for every later call.

Decoded clients are cached in memory *keyed by their state bytes*: a lookup reads the bytes from the
state it is given and reuses the cached object only if they are the same bytes. An op that mutates a
client first takes it out of the cache (:meth:`RelayClientRouter.checkout`) and puts it back with its
new bytes (:meth:`RelayClientRouter.save`), so a transaction that fails half-way (its state rolled
back) or a fork executing on another state can never see a client object that does not match its
own state. :func:`base_state_to_json` / :func:`restore_base_state` (from
:mod:`protocol.light_client`, re-exported here) serialise the part every :class:`LightClient` shares
(consensus states of final headers, freeze, trusting period); a subclass adds its own consensus-rule
state (validator or witness set, pending headers…).

The park chains' types, ``dpos`` and ``poc``, are in :mod:`relay.chain.state_machine.park_clients`
(:func:`~relay.chain.state_machine.park_clients.default_client_types`). Their ``is_redundant`` asks whether the
client already holds the header, not whether its height is at most the latest: under longest-chain or
heaviest-chain fork choice a header at or below the tip's height can be new and needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chains.common.state import ChainState
from protocol.errors import (
    ClientRecoveryError,
    CodecError,
    HeaderError,
    MisbehaviourError,
    ProtocolError,
    ReplayError,
    UnknownClientError,
    WrongChainError,
)
from protocol.light_client import ClientRouter, ClientStatus, LightClient, base_state_to_json, restore_base_state
from protocol.types import ChainId, ClientId, check_id
from relay.chain.state_machine.keys import (
    CLIENT_INDEX_KEY,
    chain_lanes_key,
    client_pointer_key,
    client_state_key,
    frozen_at_key,
    suspended_key,
)
from relay.chain.state_machine.lanes import load_lane, pause_lane
from relay.chain.state_machine.records import Event

__all__ = [
    "MAX_HEADERS",
    "ClientType",
    "HostedClient",
    "RelayClientRouter",
    "base_state_to_json",
    "check_farmer_redundant",
    "client_holds",
    "client_status",
    "feed_headers",
    "freeze_events",
    "load_for_proofs",
    "persistent_client_type",
    "process_client_create",
    "process_client_update",
    "process_finality_evidence",
    "process_misbehaviour",
    "process_register_farmer",
    "restore_base_state",
    "suspend_in_flight",
    "verified_in_flight",
]

MAX_HEADERS = 64
"""Most headers one transaction may feed to a light client (a bound on the work of one tx)."""


def _default_latest_height(client: LightClient[Any]) -> int:
    # DPoS exposes the newest held (pending) header; a client with instant finality has only final ones
    latest = getattr(client, "latest_height", None)
    return int(latest) if isinstance(latest, int) else client.final_height


def _default_header_height(header: Any) -> int:
    return int(header.height)


@dataclass(frozen=True, slots=True)
class ClientType:
    """What the relay needs to host one light-client type."""

    name: str
    """Registered type name (``dpos``, ``poc``…); the prefix of its client ids."""
    create: Callable[[ClientId, ChainId, Mapping[str, Any]], LightClient[Any]]
    """A new client from JSON init args (genesis config or governance): params and a trusted checkpoint."""
    decode_header: Callable[[bytes], Any]
    """Strict header decoder; raises :class:`CodecError`."""
    to_state: Callable[[LightClient[Any]], bytes]
    """Canonical bytes of the client's whole state."""
    from_state: Callable[[ClientId, bytes], LightClient[Any]]
    """Inverse of :attr:`to_state`."""
    latest_height: Callable[[LightClient[Any]], int] = _default_latest_height
    """Height of the newest header the client holds (final or not)."""
    header_height: Callable[[Any], int] = _default_header_height
    """Height of a decoded header."""
    is_redundant: Callable[[LightClient[Any], Any], bool] | None = None
    """Whether the client already has what ``header`` would give it (default: height <= latest height)."""
    advance: Callable[[LightClient[Any], int], bool] | None = None
    """For a client whose finality also waits on relay time (``poc``, SPEC §8.6): make final what ``now_ms``
    allows, returning whether finality moved. Called by every update after its headers."""
    final_at: Callable[[LightClient[Any], int], int] | None = None
    """With :attr:`advance`: the final height it would make at ``now_ms``, changing nothing (the status query)."""

    def redundant(self, client: LightClient[Any], header: Any) -> bool:
        if self.is_redundant is not None:
            return self.is_redundant(client, header)
        return self.header_height(header) <= self.latest_height(client)


def persistent_client_type(
    cls: type[LightClient[Any]],
    *,
    decode_header: Callable[[bytes], Any],
    create: Callable[[ClientId, ChainId, Mapping[str, Any]], LightClient[Any]],
    **kwargs: Any,
) -> ClientType:
    """A :class:`ClientType` for a class that implements ``to_state(self)`` and ``from_state(cls, id, data)``."""
    from_state = getattr(cls, "from_state", None)
    if not callable(from_state) or not callable(getattr(cls, "to_state", None)):
        raise TypeError(f"{cls.__name__} does not implement to_state/from_state: the relay cannot persist it")

    def to_state(client: LightClient[Any]) -> bytes:
        raw = client.to_state()  # type: ignore[attr-defined]
        if not isinstance(raw, bytes):
            raise TypeError(f"{cls.__name__}.to_state must return bytes")
        return raw

    return ClientType(cls.client_type, create, decode_header, to_state, from_state, **kwargs)


# --- the router -------------------------------------------------------------------------------------


@dataclass(slots=True)
class HostedClient:
    """A light client as the relay hosts it: which chain, which id, which type."""

    chain_id: ChainId
    """The park chain it follows."""
    client_id: ClientId
    """Its id, ``<type>-<n>``."""
    ctype: ClientType
    """Its type's adapter."""
    client: LightClient[Any]
    """The client, decoded from state."""


def _factory(ctype: ClientType) -> Callable[..., LightClient[Any]]:
    def make(*, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> LightClient[Any]:
        try:
            return ctype.create(client_id, chain_id, init)
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # init args come from a transaction: a malformed one is invalid input, not a crash
            raise CodecError(f"invalid init args for a {ctype.name} client: {exc!r}") from exc

    return make


class RelayClientRouter(ClientRouter):
    """Client types by name (SPEC §8.3), clients by chain, all read from and written to relay state.

    The base router's in-memory client table is not used: clients live in state, and this router
    holds only the types and a cache of decoded clients keyed by their state bytes.
    """

    def __init__(self, types: Iterable[ClientType] = ()) -> None:
        super().__init__()
        self._types: dict[str, ClientType] = {}
        self._cache: dict[ClientId, tuple[bytes, LightClient[Any]]] = {}
        for ctype in types:
            self.add_type(ctype)

    def add_type(self, ctype: ClientType) -> None:
        """Register a client type (``client.duplicate_type`` if its name is taken)."""
        check_id("client type", ctype.name)
        self.register_type(ctype.name, _factory(ctype))
        self._types[ctype.name] = ctype

    def client_type(self, name: str) -> ClientType:
        ctype = self._types.get(name)
        if ctype is None:
            raise UnknownClientError("unknown light-client type", expected=sorted(self._types), got=name)
        return ctype

    def create(self, client_type: str, **kwargs: Any) -> LightClient[Any]:
        """Not available: a relay client's id comes from state. Use :meth:`create_in_state`."""
        raise TypeError("relay light clients are created in state: RelayClientRouter.create_in_state")

    def create_in_state(self, state: ChainState, client_type: str, chain_id: ChainId,
                        init: Mapping[str, Any]) -> tuple[HostedClient, ClientId | None]:
        """Create a client of ``client_type`` following ``chain_id``; it replaces the chain's current one.

        Returns the new client and the id of the client it replaced (``None`` for a new chain).
        """
        check_id("chain", chain_id)
        ctype = self.client_type(client_type)
        previous = state.get_json(client_pointer_key(chain_id))
        # the router-wide counter lives in state: ids are never reused, across restarts and forks
        self._counter = state.get_int(CLIENT_INDEX_KEY)
        client = super().create(client_type, chain_id=chain_id, init=init)
        self._clients.pop(client.client_id, None)
        if client.chain_id != chain_id:
            raise WrongChainError("the init args describe another chain", expected=chain_id, got=client.chain_id)
        state.set_int(CLIENT_INDEX_KEY, self._counter)
        state.set_json(client_pointer_key(chain_id), {"client_id": client.client_id, "client_type": ctype.name})
        hosted = HostedClient(chain_id, client.client_id, ctype, client)
        self.save(state, hosted)
        return hosted, None if previous is None else ClientId(previous["client_id"])

    def has_client(self, state: ChainState, chain_id: str) -> bool:
        return state.get(client_pointer_key(chain_id)) is not None

    def pointer(self, state: ChainState, chain_id: str) -> tuple[ClientId, ClientType]:
        ptr = state.get_json(client_pointer_key(chain_id))
        if ptr is None:
            raise UnknownClientError("no light client follows that chain", got=chain_id)
        return ClientId(ptr["client_id"]), self.client_type(ptr["client_type"])

    def load(self, state: ChainState, chain_id: str) -> HostedClient:
        """The client following ``chain_id`` as of ``state`` (read-only use: do not mutate it)."""
        client_id, ctype = self.pointer(state, chain_id)
        raw = state.get(client_state_key(client_id))
        if raw is None:
            raise UnknownClientError("light client has no state", got=client_id)
        cached = self._cache.get(client_id)
        # bytes equality (identity first) ties the cached object to exactly this state
        if cached is not None and cached[0] == raw:
            client = cached[1]
        else:
            client = ctype.from_state(client_id, raw)
            self._cache[client_id] = (raw, client)
        return HostedClient(ChainId(chain_id), client_id, ctype, client)

    def checkout(self, state: ChainState, chain_id: str) -> HostedClient:
        """Like :meth:`load`, for an op that may mutate the client: it leaves the cache until :meth:`save`."""
        hosted = self.load(state, chain_id)
        self._cache.pop(hosted.client_id, None)
        return hosted

    def release(self, state: ChainState, hosted: HostedClient) -> None:
        """Return a checked-out client that was *not* mutated to the cache (nothing is written)."""
        raw = state.get(client_state_key(hosted.client_id))
        if raw is not None:
            self._cache[hosted.client_id] = (raw, hosted.client)

    def save(self, state: ChainState, hosted: HostedClient) -> None:
        """Persist the client's state and cache the object under its new bytes."""
        raw = hosted.ctype.to_state(hosted.client)
        state.set(client_state_key(hosted.client_id), raw)
        self._cache[hosted.client_id] = (raw, hosted.client)

    def drop_cache(self) -> None:
        """Forget every decoded client (tests use this to prove state alone suffices)."""
        self._cache.clear()


# --- ops --------------------------------------------------------------------------------------------


def _decode_headers(hosted: HostedClient, raw_headers: Sequence[bytes]) -> list[Any]:
    if len(raw_headers) > MAX_HEADERS:
        raise CodecError("too many headers in one transaction", expected=f"<= {MAX_HEADERS}", got=len(raw_headers))
    return [hosted.ctype.decode_header(raw) for raw in raw_headers]


def verified_in_flight(state: ChainState, chain_id: str) -> dict[bytes, bytes]:
    """``relay/verified/{chain_id}/…`` records without an outcome: key -> packet commitment (a sorted prefix scan)."""
    out: dict[bytes, bytes] = {}
    for key, commitment in state.prefix_items(f"relay/verified/{chain_id}/".encode()):
        if state.get(b"relay/outcome/" + key[len(b"relay/verified/"):]) is None:
            out[key] = commitment
    return out


def suspend_in_flight(state: ChainState, chain_id: str) -> list[str]:
    """At a freeze (SPEC §8.8): every packet of ``chain_id`` VERIFIED without an outcome leaves the provable path:
    its ``relay/verified/…`` record moves to ``relay/suspended/…``, so no relay block from the freeze on proves it
    to a target. ``client.recover`` revokes them; the suspended keys (``src/dst/lane/seq``) are returned."""
    moved: list[str] = []
    for key, commitment in verified_in_flight(state, chain_id).items():
        state.delete(key)
        state.set(suspended_key(key), commitment)
        moved.append(key[len(b"relay/verified/"):].decode())
    return moved


def freeze_events(state: ChainState, hosted: HostedClient, exc: MisbehaviourError, now_ms: int) -> list[Event]:
    """After ``hosted``'s client froze: record the freeze time, suspend its chain's in-flight packets and pause its
    lanes; the events of all."""
    c = hosted.client
    state.set_json(frozen_at_key(hosted.chain_id), {"client_id": hosted.client_id, "time_ms": now_ms})
    suspended = suspend_in_flight(state, hosted.chain_id)
    # a lane governance paused keeps its reason, so a recovery (which resumes what the freeze paused) leaves it paused
    paused: list[Event] = []
    for src, dst, lane in state.get_json(chain_lanes_key(hosted.chain_id)) or []:
        rec = load_lane(state, src, dst, lane)
        if rec is not None and not rec.paused:
            paused += pause_lane(state, src, dst, lane, f"client {hosted.client_id} frozen")
    return [{"type": "client_frozen", "chain_id": hosted.chain_id, "client_id": hosted.client_id,
             "height": c.frozen_height, "reason": exc.message,
             "paused_lanes": [f"{e['src']}/{e['dst']}/{e['lane']}" for e in paused], "suspended": suspended,
             "frozen_at_ms": now_ms}, *paused]


def feed_headers(router: RelayClientRouter, state: ChainState, hosted: HostedClient, raw_headers: Sequence[bytes],
                 now_ms: int, *, require_progress: bool) -> tuple[list[Event], bool]:
    """Process headers in order (SPEC §6.4 step 2); skip those the client already has.

    ``hosted`` must come from :meth:`RelayClientRouter.checkout`. Returns ``(events, frozen)``. On
    misbehaviour the client freezes, its chain's lanes pause and the freeze is *persisted* (the
    caller must then return the events without raising, or the rollback would undo the freeze).
    Nothing new with ``require_progress`` (no header applied, finality not moved) is :class:`ReplayError`.
    """
    headers = _decode_headers(hosted, raw_headers)
    client = hosted.client
    client.check_active(now_ms)
    applied: list[int] = []
    for header in headers:
        if hosted.ctype.redundant(client, header):
            continue
        try:
            client.process_header(header, now_ms)
        except MisbehaviourError as exc:
            router.save(state, hosted)
            return freeze_events(state, hosted, exc, now_ms), True
        applied.append(hosted.ctype.header_height(header))
    # finality that waits on relay time moves on any update, even one whose headers were all held already
    advanced = hosted.ctype.advance(client, now_ms) if hosted.ctype.advance is not None else False
    if not applied and not advanced:
        router.release(state, hosted)  # redundant headers were never shown to the client
        if require_progress:
            raise ReplayError(f"client {hosted.client_id} of {hosted.chain_id} already holds every header",
                              expected=f"a header above {hosted.ctype.latest_height(client)}",
                              got=[hosted.ctype.header_height(h) for h in headers])
        return [], False
    router.save(state, hosted)
    return [{"type": "client_updated", "chain_id": hosted.chain_id, "client_id": hosted.client_id,
             "heights": applied, "latest_height": hosted.ctype.latest_height(client),
             "final_height": client.final_height}], False


def load_for_proofs(router: RelayClientRouter, state: ChainState, chain_id: str,
                    now_ms: int) -> tuple[HostedClient, list[Event]]:
    """The chain's client, to verify proofs at relay time ``now_ms``: a type whose finality waits on relay time
    (``advance``) first makes final what ``now_ms`` allows, persisted with a ``client_updated`` event (no heights),
    so a proof is judged by the same final heights the client's state then shows."""
    hosted = router.load(state, chain_id)
    advance = hosted.ctype.advance
    if advance is None or hosted.client.status(now_ms) is not ClientStatus.ACTIVE:
        return hosted, []
    hosted = router.checkout(state, chain_id)
    if not advance(hosted.client, now_ms):
        router.release(state, hosted)
        return hosted, []
    router.save(state, hosted)
    c = hosted.client
    return hosted, [{"type": "client_updated", "chain_id": hosted.chain_id, "client_id": hosted.client_id,
                     "heights": [], "latest_height": hosted.ctype.latest_height(c), "final_height": c.final_height}]


def _farmer_binding(hosted: HostedClient) -> Any:
    register = getattr(hosted.client, "register_farmer", None)
    if register is None or getattr(hosted.client, "farmer_keys", None) is None:
        raise CodecError(f"client {hosted.client_id} of {hosted.chain_id} does not bind farmer names",
                         expected="a poc client", got=hosted.ctype.name)
    return register


def check_farmer_redundant(router: RelayClientRouter, state: ChainState, chain_id: str, name: str) -> None:
    """Admission of ``client.register_farmer``: refused if the client cannot bind names or already binds ``name``."""
    hosted = router.load(state, chain_id)
    _farmer_binding(hosted)
    if name in getattr(hosted.client, "farmer_keys", {}):
        raise ReplayError(f"farmer {name} is already bound in client {hosted.client_id}", got=name)


def process_register_farmer(router: RelayClientRouter, state: ChainState, chain_id: str, height: int, name: str,
                            account: bytes, proof: bytes, now_ms: int) -> list[Event]:
    """``client.register_farmer`` (SPEC §8.6): bind a park account created after genesis, proven at a final height."""
    hosted, events = load_for_proofs(router, state, chain_id, now_ms)
    hosted = router.checkout(state, chain_id)
    _farmer_binding(hosted)(height, name, account, proof, now_ms)
    router.save(state, hosted)
    return [*events, {"type": "farmer_registered", "chain_id": hosted.chain_id, "client_id": hosted.client_id,
                      "name": name, "height": height}]


def process_client_update(router: RelayClientRouter, state: ChainState, chain_id: str,
                          raw_headers: Sequence[bytes], now_ms: int) -> list[Event]:
    """``client.update``: feed headers to the chain's client; misbehaviour freezes it (and succeeds)."""
    if not raw_headers:
        raise CodecError("client.update needs at least one header")
    hosted = router.checkout(state, chain_id)
    events, _ = feed_headers(router, state, hosted, raw_headers, now_ms, require_progress=True)
    return events


def process_misbehaviour(router: RelayClientRouter, state: ChainState, chain_id: str, raw_a: bytes, raw_b: bytes,
                         now_ms: int) -> list[Event]:
    """``client.misbehaviour``: valid evidence freezes the client and pauses the chain's lanes."""
    hosted = router.checkout(state, chain_id)
    if hosted.client.frozen_height is not None:
        raise ReplayError(f"client {hosted.client_id} of {chain_id} is already frozen",
                          got=hosted.client.frozen_height)
    header_a, header_b = _decode_headers(hosted, (raw_a, raw_b))
    client = hosted.client
    try:
        client.check_misbehaviour(header_a, header_b, now_ms)
    except MisbehaviourError as exc:
        router.save(state, hosted)
        return freeze_events(state, hosted, exc, now_ms)
    # lesser evidence (SPEC §8.1): a fault of one signer that does not break finality, recorded by the client
    recorded = getattr(client, "evidence", None)
    if client.frozen_height is not None or not callable(recorded):
        raise HeaderError(f"client {hosted.client_id} accepted the evidence without freezing or recording it")
    router.save(state, hosted)
    return [{"type": "client_evidence_recorded", "chain_id": hosted.chain_id, "client_id": hosted.client_id,
             "height": int(getattr(header_a, "height", 0)), "evidence_count": len(recorded())}]


def process_finality_evidence(router: RelayClientRouter, state: ChainState, chain_id: str,
                              raw_branch: Sequence[bytes], now_ms: int) -> list[Event]:
    """``client.misbehaviour {chain_id, branch}``: a branch proving conflicting finality (a client with
    ``check_conflicting_finality``, e.g. DPoS) freezes the client and pauses the chain's lanes."""
    hosted = router.checkout(state, chain_id)
    if hosted.client.frozen_height is not None:
        raise ReplayError(f"client {hosted.client_id} of {chain_id} is already frozen",
                          got=hosted.client.frozen_height)
    check = getattr(hosted.client, "check_conflicting_finality", None)
    if not callable(check):
        raise CodecError(f"the client of {chain_id} takes no conflicting-finality evidence",
                         got=type(hosted.client).__name__)
    branch = [hosted.ctype.decode_header(raw) for raw in raw_branch]
    try:
        check(branch, now_ms)
    except MisbehaviourError as exc:
        router.save(state, hosted)
        return freeze_events(state, hosted, exc, now_ms)
    raise HeaderError(f"client {hosted.client_id} accepted conflicting-finality evidence without freezing")


def process_client_create(router: RelayClientRouter, state: ChainState, chain_id: str, client_type: str,
                          init: Mapping[str, Any]) -> list[Event]:
    """Genesis or governance: a new client for ``chain_id`` (replacing its current one, if any). Refused
    (``client.recovery``) while a freeze holds packets of the chain suspended: only ``client.recover`` ends them."""
    if state.prefix_items(f"relay/suspended/{chain_id}/".encode()):
        raise ClientRecoveryError(f"{chain_id}'s client froze with packets in flight: replace it with client.recover, "
                                  "which revokes them", expected="client.recover", got="client.create")
    hosted, replaced = router.create_in_state(state, client_type, ChainId(chain_id), init)
    return [{"type": "client_created", "chain_id": chain_id, "client_id": hosted.client_id,
             "client_type": client_type, "replaced": replaced, "final_height": hosted.client.final_height}]


STATUS_CLOCK_MARGIN_MS = 250
"""How far behind the answering node's clock :func:`client_status` dates ``final_height_now``: a proof at that height
goes into a block whose time is the proposer's, which may run that much behind this node on another host."""


def client_status(router: RelayClientRouter, state: ChainState, chain_id: str, now_ms: int) -> dict[str, Any]:
    """A query: the chain's client, its status at ``now_ms`` and its heights. ``final_height`` is the stored one;
    ``final_height_now`` is what a proof executed now is judged by, for a client whose finality waits on relay time
    (PoC: every proof check first advances the client to its block's time; :data:`STATUS_CLOCK_MARGIN_MS` back)."""
    hosted = router.load(state, chain_id)
    c = hosted.client
    status = c.status(now_ms)
    final_now = c.final_height
    if hosted.ctype.final_at is not None and status is ClientStatus.ACTIVE:
        final_now = max(final_now, hosted.ctype.final_at(c, max(0, now_ms - STATUS_CLOCK_MARGIN_MS)))
    out: dict[str, Any] = {"chain_id": chain_id, "client_id": hosted.client_id, "client_type": hosted.ctype.name,
           "status": status.value, "final_height": c.final_height, "final_height_now": final_now,
           "latest_height": hosted.ctype.latest_height(c), "frozen_height": c.frozen_height,
           # the trusting period counts from this (a block's time; the relay's acceptance time for Fabric, §8.7)
           "final_timestamp_ms": c.final_timestamp_ms, "trusting_period_ms": c.trusting_period_ms}
    evidence = getattr(c, "evidence", None)
    if callable(evidence):
        # recorded faults of single signers (e.g. a DPoS witness that double-signed), each ready to be reported
        # to the park that can punish it
        out["evidence"] = [e.to_json() for e in evidence()]
    return out



MAX_HOLDS_QUERY = 256
"""Most headers one :func:`client_holds` query may ask about."""


def client_holds(router: RelayClientRouter, state: ChainState, chain_id: str, raw_headers: Sequence[bytes]
                 ) -> list[bool]:
    """A query: for each encoded header, whether the chain's client holds it (final or pending). A relayer reads
    it to find the last header its park's current branch shares with the client after a fork."""
    if len(raw_headers) > MAX_HOLDS_QUERY:
        raise CodecError("too many headers in one query", expected=f"<= {MAX_HOLDS_QUERY}", got=len(raw_headers))
    hosted = router.load(state, chain_id)
    return [hosted.ctype.redundant(hosted.client, hosted.ctype.decode_header(raw)) for raw in raw_headers]
