"""Light client of a PoC park chain, client type ``poc`` (docs/architecture.md §3, PoC row; SPEC.md §8.6).

Starts from a trusted checkpoint (a :class:`~chains.poc.consensus.ConsensusContext`: height, hash,
challenge and quality, difficulty, cumulative weight and the retarget window) and follows headers,
forks included:

* Every header is checked by :func:`chains.poc.consensus.validate_header` against its parent's
  context: chain id, link, challenge chain, exact difficulty and weight, future time, the farmer's
  signature, the proof of space for the plot bound to the farmer's key, and its deadline. Before that,
  the farmer's name must be a park account whose key is ``farmer_pubkey`` (:class:`FarmerKeyError`), the
  check the park's nodes make in :func:`chains.poc.app.apply_farmed_block`.
* The client keeps a small tree of headers above the final one (and the last ``fork_history`` final
  ones, as fork points), the shared :class:`protocol.fork_tree.ForkTree` (SPEC.md §8.1.1). The best tip is the
  heaviest by cumulative weight (ties to the lower hash); a reorg within the confirmation depth just moves the
  best tip. A header whose parent is not held is :class:`~protocol.light_client.UnknownParentError`.
* **Finality by depth and held time** (SPEC §8.6): every held header on the best branch records
  ``best_since_ms``, the relay time (``now_ms``) since which it has been on the best branch without a
  break. A header is final once it is ``confirmation_depth`` blocks below the best tip *and*
  ``now_ms - best_since_ms >= finality_window_ms``. Headers shown together after a quiet period therefore
  wait a window for any honest relayer to show a heavier branch; finality then advances on a later
  :meth:`process_header` or :meth:`advance` with a later ``now_ms``.
* **Bounded state** (:class:`PocClientParams`): no header more than ``max_distance`` above the final tip;
  at most ``max_pending`` headers off the final chain, and ``max_pending_per_farmer`` of one farmer off the
  best branch. When full, an off-best leaf is evicted: the farmer's own lightest (if no heavier than the
  newcomer) for its cap, the lightest of the largest off-best holder for the total; a header that becomes the
  best tip always gets in. A proof of space re-signed on the same parent (same quality) is held at most
  twice (the copy on the best branch and the latest other copy, which replaces the previous one with its
  subtree); a copy of a final header's proof is refused.
* **Misbehaviour**: a valid header on a branch that does not contain the final tip and that fork choice
  would prefer over the best tip (a reorg past finality) raises
  :class:`~protocol.errors.MisbehaviourError` from :meth:`validate_header`, so
  :meth:`~protocol.light_client.LightClient.process_header` freezes the client.

An ordinary fork (two blocks at one height) is not misbehaviour in proof of capacity: two farmers
may both find proofs. :meth:`validate_conflicting` therefore accepts evidence only when one header is
final here and the other, valid, is preferred by fork choice over the best tip.

Persistence (a host such as the relay chain keeps the client in its state): :meth:`~PocLightClient.to_state`
is canonical JSON (sorted keys, bytes as lowercase hex, u128 weights as decimal strings)::

    {"v": 2, "type": "poc", "base": protocol.light_client.base_state_to_json(client),
     "params": PocParams JSON, "client_params": PocClientParams JSON, "confirmation_depth", "fork_history",
     "farmer_keys": {name: pubkey hex} | null, "now_ms": latest relay time seen,
     "nodes": [[height, hash, parent_hash, timestamp_ms, state_root, challenge, quality, difficulty,
                cumulative_weight, window | null, farmer, seen_ms, best_since_ms | null], ...],
                # every held header, sorted by (height, hash)
     "final_tip": hash, "best": hash}

A node's retarget window is stored only when its parent is not held (the checkpoint, the oldest kept fork
points); the others are recomputed from the parent, as :func:`~chains.poc.consensus.validate_header` made
them. Fork choice depends on weights and hashes only (never on arrival order), so a canonical order suffices;
finality depends on the stored times. :meth:`~PocLightClient.from_state` rebuilds the same tree;
:meth:`~PocLightClient.from_genesis` builds a client from the park's genesis config with the park node's own
code (:func:`chains.poc.app.genesis_block`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cmp_to_key
from itertools import pairwise
from typing import Any, ClassVar, Self

from chains.common.state import canonical_json
from chains.common.tx import account_path
from chains.poc.app import confirmation_depth_of, genesis_block, params_from_genesis
from chains.poc.consensus import (
    GENESIS_QUALITY,
    ConsensusContext,
    PocParams,
    ProofVerifier,
    chiapos_verifier,
    child_window,
    is_heavier,
    verify_proof_of_space,
)
from chains.poc.consensus import validate_header as validate_header_rules
from chains.poc.errors import (
    FarmerKeyError,
    FarmerPendingLimitError,
    PendingDistanceError,
    PendingLimitError,
    ProofReuseError,
)
from chains.poc.types import PocHeader
from protocol.errors import CodecError, HeaderError, MisbehaviourError, ReplayError, WrongChainError
from protocol.fork_tree import ForkNode, ForkTree, require_parent
from protocol.light_client import ConsensusState, LightClient, base_state_to_json, open_state, restore_base_state
from protocol.types import ChainId, ClientId

__all__ = ["RECOMMENDED_HEARTBEAT_MS", "STATE_VERSION", "PocClientParams", "PocLightClient"]

STATE_VERSION = 2
"""Version of the :meth:`PocLightClient.to_state` encoding (2: held times, farmer keys, client params)."""

RECOMMENDED_HEARTBEAT_MS = 10_000
"""Relayers check an idle PoC client at least this often (SPEC §8.6) and show it the park's chain if it does not
hold the park's best header: a sixth of the default window, so several missed heartbeats still leave an honest
relayer time to show a heavier branch before anything on another one is final."""

_MAX_WINDOW_MS = 86_400_000
_MAX_PENDING = 65_536


@dataclass(frozen=True, slots=True)
class PocClientParams:
    """Operator parameters of one PoC light client (SPEC §8.6); the park's consensus rules are :class:`PocParams`."""

    finality_window_ms: int = 60_000
    """Relay time a header must stay on the best branch, besides being ``confirmation_depth`` deep, before it is
    final. Must exceed the longest an honest relayer may take to show the park's chain (heartbeat + inclusion)."""
    max_pending: int = 1024
    """Most non-final headers held (all branches)."""
    max_pending_per_farmer: int = 128
    """Most non-final headers of one farmer held off the best branch."""
    max_distance: int = 512
    """Most heights a held header may be above the final tip (bounds the best branch, which is never evicted)."""

    def __post_init__(self) -> None:
        for name, low, high in (("finality_window_ms", 0, _MAX_WINDOW_MS), ("max_pending", 2, _MAX_PENDING),
                                ("max_pending_per_farmer", 1, _MAX_PENDING), ("max_distance", 1, _MAX_PENDING)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise CodecError(f"PoC client param {name} out of range", expected=f"{low}..{high}", got=v)
        if self.max_distance >= self.max_pending:
            # the best branch (up to max_distance headers) is never evicted: room must remain for a heavier branch
            raise CodecError("PoC client param max_distance must be below max_pending",
                             expected=f"< {self.max_pending}", got=self.max_distance)
        if self.max_pending_per_farmer > self.max_pending:
            raise CodecError("PoC client param max_pending_per_farmer must be at most max_pending",
                             expected=f"<= {self.max_pending}", got=self.max_pending_per_farmer)

    def to_json(self) -> dict[str, Any]:
        return {"finality_window_ms": self.finality_window_ms, "max_pending": self.max_pending,
                "max_pending_per_farmer": self.max_pending_per_farmer, "max_distance": self.max_distance}

    @classmethod
    def from_json(cls, obj: Any) -> PocClientParams:
        """From a JSON object; missing keys take their defaults, unknown keys are :class:`CodecError`."""
        if isinstance(obj, PocClientParams):
            return obj
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise CodecError("PoC client params are a JSON object", got=type(obj).__name__)
        unknown = sorted(set(obj) - set(cls.__dataclass_fields__))
        if unknown:
            raise CodecError("unknown PoC client params", expected=sorted(cls.__dataclass_fields__), got=unknown)
        return cls(**dict(obj))


class _Node(ForkNode[ConsensusContext]):
    """A header the client holds: its consensus context (``header``), its farmer (``producer``), and the relay
    times it was seen at."""

    __slots__ = ("best_since_ms", "final", "seen_ms")

    def __init__(self, ctx: ConsensusContext, parent_hash: bytes, farmer: str, seen_ms: int,
                 best_since_ms: int | None) -> None:
        super().__init__(ctx, ctx.header_hash, parent_hash, ctx.height, farmer)
        self.seen_ms = seen_ms
        """Relay time the header was first held (informational; eviction and finality never depend on it)."""
        self.best_since_ms = best_since_ms
        """Relay time since which the header has been on the best branch without a break; None off it."""
        self.final = False
        """On the final chain (the final tip or below it); every other held header is pending."""


def _fork_choice(a: _Node, b: _Node) -> int:
    ca, cb = a.header, b.header
    if is_heavier(ca.cumulative_weight, ca.header_hash, cb.cumulative_weight, cb.header_hash):
        return 1
    return -1 if is_heavier(cb.cumulative_weight, cb.header_hash, ca.cumulative_weight, ca.header_hash) else 0


_heaviest = cmp_to_key(_fork_choice)
"""Fork choice as the tree's key: :func:`chains.poc.consensus.is_heavier` (greater cumulative weight, ties to the
lower hash) is the one rule; the heavier node has the greater key."""


def _proof_key(parent_hash: bytes, ctx: ConsensusContext) -> bytes:
    # one proof answers one challenge with one quality, and the parent fixes the challenge: an equal key is the
    # same proof re-signed on the same parent (only its farmer can do that). Across branches a farmer may farm
    # the same challenge on every fork it sees (proof of capacity costs nothing per branch), so that is allowed.
    return parent_hash + ctx.quality


@dataclass(slots=True)
class _Plan:
    """What :meth:`PocLightClient.validate_header` decided for a header, for :meth:`PocLightClient.apply_header`."""

    header_hash: bytes
    node: _Node
    """The header's node, not yet held."""
    now_ms: int
    evict: list[bytes]


class PocLightClient(LightClient[PocHeader]):
    """Follows a PoC park chain by proof of space, deadline and heaviest cumulative weight."""

    client_type: ClassVar[str] = "poc"

    def __init__(
        self,
        client_id: ClientId,
        params: PocParams | Mapping[str, Any],
        checkpoint: ConsensusContext | Mapping[str, Any],
        confirmation_depth: int,
        trusting_period_ms: int,
        *,
        fork_history: int = 128,
        verifier: ProofVerifier | None = None,
        max_consensus_states: int = 4096,
        client_params: PocClientParams | Mapping[str, Any] | None = None,
        farmer_keys: Mapping[str, bytes] | None = None,
        now_ms: int = 0,
    ) -> None:
        """``params`` and ``checkpoint`` may be given as their JSON forms (``to_json``), as a relay-chain
        create-client message carries them. ``fork_history`` final headers are kept as fork points, so a
        deep reorg starting up to that far below the final tip is detected as misbehaviour (older
        forks are refused as unknown-parent). ``farmer_keys`` maps the park's account names to their keys
        (:meth:`from_genesis` takes them from the genesis accounts); ``None`` leaves farmer names unbound,
        for tests of other rules only. ``now_ms`` is the relay time of creation."""
        p = PocParams.from_json(dict(params)) if isinstance(params, Mapping) else params
        cp = ConsensusContext.from_json(dict(checkpoint)) if isinstance(checkpoint, Mapping) else checkpoint
        cparams = PocClientParams.from_json(client_params)
        if isinstance(confirmation_depth, bool) or not isinstance(confirmation_depth, int) or confirmation_depth < 1:
            raise CodecError("confirmation_depth must be a positive integer", got=confirmation_depth)
        if confirmation_depth >= cparams.max_distance:
            raise CodecError("max_distance must exceed confirmation_depth, or nothing could become final",
                             expected=f"> {confirmation_depth}", got=cparams.max_distance)
        if len(cp.window) > p.retarget_window + 1:
            raise CodecError("checkpoint window longer than the retarget window", expected=p.retarget_window + 1,
                             got=len(cp.window))
        super().__init__(client_id, p.chain_id, trusting_period_ms, max_consensus_states)
        self.params = p
        self.client_params = cparams
        self.confirmation_depth = confirmation_depth
        self.fork_history = max(0, fork_history)
        self.farmer_keys: dict[str, bytes] | None = None if farmer_keys is None else _farmer_keys(farmer_keys)
        self._verifier: ProofVerifier = verifier if verifier is not None else chiapos_verifier()
        self._now_ms = _uint(now_ms)
        root = _Node(cp, b"", "", self._now_ms, self._now_ms)
        root.final = True
        self._tree: ForkTree[_Node] = ForkTree(_heaviest)
        """Every held header, final (the kept fork points) or not. Its best tip is the heaviest; only pending
        (non-final) headers count against their farmers (final ones are released)."""
        self._tree.add(root)
        self._tree.release(root)
        self._by_proof: dict[bytes, list[bytes]] = {_proof_key(b"", cp): [cp.header_hash]}
        self._pending = 0
        """Held headers not on the final chain: above the final tip, or orphans below it (kept as fork evidence)."""
        self._final_tip = cp
        self._validated: _Plan | None = None
        self._record_final(_consensus_state(cp))

    # -- queries -------------------------------------------------------------------------------

    @property
    def best_tip(self) -> ConsensusContext:
        """The heaviest header held (it always contains the final tip)."""
        return self._tree.best.header

    @property
    def latest_height(self) -> int:
        """Height of the heaviest header held: a relayer sends headers from the next one on."""
        return self._tree.best.height

    @property
    def final_tip(self) -> ConsensusContext:
        """The newest final header."""
        return self._final_tip

    @property
    def pending_count(self) -> int:
        """Held headers not on the final chain (at most ``client_params.max_pending``)."""
        return self._pending

    @property
    def now_ms(self) -> int:
        """The latest relay time the client was given."""
        return self._now_ms

    def has_header(self, header_hash: bytes) -> bool:
        """Whether a header is held (a relayer may skip submitting it)."""
        return header_hash in self._tree

    def holds(self, header: PocHeader) -> bool:
        """Whether ``header`` is held in the fork tree or is the retained final header at its height: submitting
        it again adds nothing. A relay's redundancy check should ask this, not compare heights: under
        heaviest-chain fork choice a header at or below :attr:`latest_height` can be new and needed."""
        hhash = header.hash()
        return hhash in self._tree or self.holds_final(header.height, hhash)

    def context(self, header_hash: bytes) -> ConsensusContext | None:
        """The consensus context of a held header."""
        node = self._tree.get(header_hash)
        return None if node is None else node.header

    def best_since(self, header_hash: bytes) -> int | None:
        """Relay time since which a held header has been on the best branch (None: not held, or off it)."""
        node = self._tree.get(header_hash)
        return None if node is None else node.best_since_ms

    def pending_of(self, farmer: str) -> list[bytes]:
        """Hashes of ``farmer``'s pending (non-final) headers held, on the best branch or off it."""
        return [node.hash for node in self._tree.by_producer(farmer)]

    def __len__(self) -> int:
        return len(self._tree)

    # -- headers -------------------------------------------------------------------------------

    def validate_header(self, header: PocHeader, now_ms: int) -> None:
        """Raise unless ``header`` is a valid child of a held header that the bounds admit; MisbehaviourError
        if it reverts finality. Changes nothing (the decision is kept for :meth:`apply_header`)."""
        ctx = self._validate_child(header, now_ms)
        now = max(now_ms, self._now_ms)
        node = _Node(ctx, header.parent_hash, header.farmer, now, None)
        would_be_best = self._tree.prefers(node)
        if would_be_best and not self._descends_from_final(header.parent_hash):
            raise MisbehaviourError(
                f"client {self.client_id} of {self.chain_id}: header {ctx.height} {ctx.header_hash.hex()[:16]}… is on "
                f"a heavier branch that reverts final header {self._final_tip.height} (reorg past finality)",
                expected=f"cumulative weight <= {self._tree.best.header.cumulative_weight}", got=ctx.cumulative_weight)
        evict = self._admission(header, ctx, would_be_best)
        self._validated = _Plan(ctx.header_hash, node, now, evict)

    def apply_header(self, header: PocHeader) -> None:
        """Record a validated header (evicting what validation chose), move the best tip, advance finality, prune."""
        hhash = header.hash()
        plan = self._validated
        self._validated = None
        if plan is None or plan.header_hash != hhash:
            # the host skipped validate_header: redo it at the latest time seen (the future-time rule is relative)
            now = max(self._now_ms, header.timestamp_ms)
            self.validate_header(header, now)
            plan = self._validated
            self._validated = None
            if plan is None:  # pragma: no cover - validate_header always sets it or raises
                raise HeaderError("header was not validated", got=hhash.hex())
        tree = self._tree
        if hhash in tree:
            return
        self._now_ms = plan.now_ms
        node = plan.node
        tree.add(node)
        self._by_proof.setdefault(_proof_key(header.parent_hash, node.header), []).append(hhash)
        self._pending += 1
        left: list[_Node] = []
        if tree.prefers(node):
            left = self._switch_best(node, plan.now_ms)
        for victim_hash in plan.evict:  # off the best branch (the old best tip, if chosen, has just left it)
            victim = tree.get(victim_hash)
            if victim is not None:
                self._evict(victim)
        # headers a reorg moved off the best branch count against their farmers' caps from now on
        for farmer in sorted({n.producer for n in left if n.hash in tree}):
            self._trim_farmer(farmer)
        self._advance_finality(plan.now_ms)

    def advance(self, now_ms: int) -> bool:
        """Make final what the window now allows at relay time ``now_ms`` (hosts call it on every update, even
        one that brings no new header). Returns whether the final tip moved. A frozen client does not move."""
        if self.frozen_height is not None:
            return False
        now = max(self._now_ms, _uint(now_ms))
        if not self._advance_finality(now):
            return False  # nothing changes, not even the time: a host may keep its cached state bytes
        self._now_ms = now
        return True

    def final_height_at(self, now_ms: int) -> int:
        """The final height :meth:`advance` would make at relay time ``now_ms``, changing nothing: what a status query
        reports, so a relayer proves at the height a proof executed now is judged by (every proof check first
        advances the client to its block's time)."""
        if self.frozen_height is not None:
            return int(self.final_height)
        newly_final = self._newly_final(max(self._now_ms, _uint(now_ms)))
        return newly_final[0].height if newly_final else self._final_tip.height

    def _validate_child(self, header: PocHeader, now_ms: int) -> ConsensusContext:
        if header.chain_id != self.chain_id:
            raise WrongChainError("PoC header for another chain", expected=self.chain_id, got=header.chain_id)
        hhash = header.hash()
        if hhash in self._tree:
            raise ReplayError(f"header {header.height} {hhash.hex()[:16]}… already held by client {self.client_id}",
                              got=hhash.hex())
        parent = require_parent(self._tree, header.parent_hash, header.height, client=self.client_id,
                                held=f"a pending header or one of the {self.fork_history} final headers kept")
        if self.farmer_keys is not None:
            key = self.farmer_keys.get(header.farmer)
            if key != header.farmer_pubkey:
                raise FarmerKeyError(
                    f"header {header.height}: farmer {header.farmer!r} is "
                    f"{'not a park account known to' if key is None else 'bound to another key in'} client "
                    f"{self.client_id}", expected=None if key is None else key.hex(), got=header.farmer_pubkey.hex())
        return validate_header_rules(header, parent.header, self.params, now_ms, self._verifier)

    def _admission(self, header: PocHeader, ctx: ConsensusContext, would_be_best: bool) -> list[bytes]:
        """The headers to evict so that ``header`` fits the bounds; raise if it may not enter (pure)."""
        cp = self.client_params
        tree = self._tree
        final_height = self._final_tip.height
        if ctx.height > final_height + cp.max_distance:
            raise PendingDistanceError(
                f"header {ctx.height} is too far above final header {final_height} of client {self.client_id}",
                expected=f"height <= {final_height + cp.max_distance}", got=ctx.height)
        evict: list[bytes] = []
        for twin_hash in self._by_proof.get(_proof_key(header.parent_hash, ctx), ()):
            twin = self._node(twin_hash)
            if twin.final:
                raise ProofReuseError(
                    f"header {ctx.height} re-signs the proof of space of final header {twin.height} "
                    f"{twin_hash.hex()[:16]}… of client {self.client_id}", expected=twin_hash.hex(),
                    got=ctx.header_hash.hex())
            if not tree.is_canonical(twin):
                # one off-best header per proof: the newer copy replaces it
                evict.extend(n.hash for n in tree.subtree(twin))
        gone = set(evict)
        mine = self._off_best(header.farmer, gone)
        if not would_be_best and len(mine) + 1 > cp.max_pending_per_farmer:
            victim = self._lightest_leaf(mine, header.parent_hash, gone)
            if victim is None or victim.header.cumulative_weight > ctx.cumulative_weight:
                # equal weight is not heavier: a newcomer wins the tie
                raise FarmerPendingLimitError(
                    f"farmer {header.farmer} holds {len(mine)} headers off the best branch of client {self.client_id},"
                    f" none lighter than header {ctx.height}", expected=f"<= {cp.max_pending_per_farmer}",
                    got=len(mine) + 1)
            evict.append(victim.hash)
            gone.add(victim.hash)
        if self._pending - len(gone) + 1 > cp.max_pending:
            victim = self._largest_holder_leaf(header.parent_hash, gone)
            best = tree.best
            if victim is None and would_be_best and best.hash != header.parent_hash:
                victim = best  # the old best tip: an off-best leaf once this header is best
            if victim is None:
                raise PendingLimitError(
                    f"client {self.client_id} holds {self._pending} non-final headers and none off the best branch "
                    f"it could evict for header {ctx.height} (only its own ancestors)", expected=f"<= {cp.max_pending}",
                    got=self._pending + 1)
            evict.append(victim.hash)
        return evict

    def _off_best(self, farmer: str, gone: set[bytes]) -> list[_Node]:
        """``farmer``'s pending headers off the best branch, but for those in ``gone``: what its cap counts."""
        on_best = self._tree.is_canonical
        return [n for n in self._tree.by_producer(farmer) if n.hash not in gone and not on_best(n)]

    def _largest_holder_leaf(self, keep: bytes, gone: set[bytes]) -> _Node | None:
        """The lightest evictable leaf of the farmer holding the most headers off the best branch (then the next
        farmer...). A flood fills the client with its own farmers' headers, so it is evicted before the few an
        honest branch holds while it catches up: weight alone would let heavier flood leaves lock out an honest
        branch that is still lighter at its fork point."""
        counts = []
        for farmer in self._tree.producers():
            mine = self._off_best(farmer, gone)
            if mine:
                counts.append((-len(mine), farmer, mine))
        for _, _, mine in sorted(counts, key=lambda c: (c[0], c[1])):
            victim = self._lightest_leaf(mine, keep, gone)
            if victim is not None:
                return victim
        return None

    def _lightest_leaf(self, candidates: Iterable[_Node], keep: bytes, gone: set[bytes]) -> _Node | None:
        """The lightest held leaf off the best branch among ``candidates`` (not ``keep``, not already ``gone``)."""
        tree = self._tree
        return min(tree.evictable_leaves(candidates, keep=keep, gone=gone), key=_heaviest, default=None)

    def _evict(self, top: _Node) -> None:
        """Forget a non-final, off-best header and its held descendants."""
        for node in self._tree.remove_subtree(top):
            _remove(self._by_proof, _proof_key(node.parent_hash, node.header), node.hash)
            if not node.final:
                self._pending -= 1

    def _trim_farmer(self, farmer: str) -> None:
        """Evict ``farmer``'s lightest off-best leaves while it holds more than its cap off the best branch."""
        cap = self.client_params.max_pending_per_farmer
        while True:
            mine = self._off_best(farmer, set())
            if len(mine) <= cap:
                return
            victim = self._lightest_leaf(mine, b"", set())
            if victim is None:  # pragma: no cover - an off-best subtree always has an off-best leaf
                return
            self._evict(victim)

    def _switch_best(self, new_best: _Node, now_ms: int) -> list[_Node]:
        """Make ``new_best`` the best tip: its branch joins the best branch at ``now_ms``, the old one leaves (its
        headers are returned)."""
        joined, left = self._tree.set_best(new_best)
        for node in joined:
            node.best_since_ms = now_ms
        for node in left:
            node.best_since_ms = None
        return left

    def _descends_from_final(self, parent_hash: bytes) -> bool:
        """Whether the held header ``parent_hash`` is the final tip or above it on its branch."""
        return self._tree.descends_from(self._node(parent_hash), self._node(self._final_tip.header_hash))

    def _node(self, header_hash: bytes) -> _Node:
        node = self._tree.get(header_hash)
        if node is None:  # unreachable: callers name held headers
            raise LookupError(f"header {header_hash.hex()[:16]}… is not held by client {self.client_id}")
        return node

    def _advance_finality(self, now_ms: int) -> bool:
        """Final: the best-branch headers ``confirmation_depth`` deep that have been on it for the window. Returns
        whether the final tip moved (nothing changes if not).

        ``best_since_ms`` never decreases up a branch (a header joins the best branch no later than its
        child), so the newly final headers are a run from just above the final tip."""
        newly_final = self._newly_final(now_ms)
        if not newly_final:
            return False
        for node in reversed(newly_final):
            self._record_final(_consensus_state(node.header))
            node.final = True
            self._pending -= 1
            self._tree.release(node)
        self._final_tip = newly_final[0].header
        self._prune()
        return True

    def _newly_final(self, now_ms: int) -> list[_Node]:
        """The best-branch headers above the final tip that are ``confirmation_depth`` deep and have been on the branch
        for the window at ``now_ms``, highest first (``best_since_ms`` never decreases up a branch, so they are a run
        from just above the final tip)."""
        tree = self._tree
        best = tree.best
        target = best.height - self.confirmation_depth
        final_height = self._final_tip.height
        if target <= final_height:
            return []
        held_since = now_ms - self.client_params.finality_window_ms
        newly_final: list[_Node] = []
        node: _Node | None = best
        while node is not None and node.height > final_height:  # down the best branch (the hot loop: no generator)
            since = node.best_since_ms
            if node.height <= target and since is not None and since <= held_since:
                newly_final.append(node)
            node = tree.get(node.parent_hash)
        return newly_final

    def _prune(self) -> None:
        for node in self._tree.prune_below(self._final_tip.height - self.fork_history):
            _remove(self._by_proof, _proof_key(node.parent_hash, node.header), node.hash)
            if not node.final:
                self._pending -= 1

    # -- farmer keys ---------------------------------------------------------------------------

    def register_farmer(self, height: int, name: str, account_value: bytes, proof: Any, now_ms: int) -> None:
        """Learn a park account created after genesis: ``accounts/<name>`` -> ``account_value`` (the park's account
        JSON) proven against the final header at ``height``. Its key binds the farmer name from then on
        (:class:`ReplayError` if it already does). The relay's op is ``client.register_farmer``."""
        if self.farmer_keys is None:
            raise CodecError(f"client {self.client_id} does not bind farmer names", got=name)
        self.verify_membership(height, account_path(name), account_value, proof, now_ms)
        try:
            key = bytes.fromhex(json.loads(account_value)["pubkey"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"account {name} of {self.chain_id}: not an account record: {exc!r}") from exc
        if len(key) != 32:
            raise CodecError(f"account {name} of {self.chain_id}: a key is 32 bytes", got=len(key))
        known = self.farmer_keys.get(name)
        if known == key:
            raise ReplayError(f"farmer {name} of {self.chain_id} is already bound to this key in client "
                              f"{self.client_id}", got=name)
        if known is not None:  # unreachable for a park whose account keys never change
            raise FarmerKeyError(f"account {name} of {self.chain_id} is already bound to another key",
                                 expected=known.hex(), got=key.hex())
        self.farmer_keys[name] = key

    # -- construction from a genesis config, persistence ---------------------------------------

    @classmethod
    def from_genesis(cls, client_id: ClientId, chain_id: ChainId, genesis_config: Mapping[str, Any],
                     trusting_period_ms: int, *, confirmation_depth: int | None = None, fork_history: int = 128,
                     verifier: ProofVerifier | None = None, max_consensus_states: int = 4096,
                     client_params: PocClientParams | Mapping[str, Any] | None = None, now_ms: int = 0,
                     checkpoint: ConsensusContext | Mapping[str, Any] | None = None,
                     farmers: Mapping[str, bytes] | None = None) -> Self:
        """A client trusting the genesis the park's genesis config describes (format: :mod:`chains.poc.app`).

        The checkpoint comes from :func:`chains.poc.app.genesis_block`, the function the park's node builds its
        genesis with, bridge section included. ``confirmation_depth`` defaults to the config's (as the park's
        node uses it). Farmer names are bound to the keys of the genesis accounts (any account may farm).

        A *substitute* client (governance recovery, SPEC §8.8) trusts ``checkpoint`` instead: the consensus
        context of a park header at a trusted height (:func:`checkpoint_from_headers`), and binds ``farmers``
        (accounts created after genesis, as ``register_farmer`` bound them in the frozen client) besides the
        genesis accounts.
        """
        config = dict(genesis_config)
        params, _ = params_from_genesis(config)
        if params.chain_id != chain_id:
            raise WrongChainError("genesis config of another chain", expected=chain_id, got=params.chain_id)
        if checkpoint is None:
            _, _, checkpoint = genesis_block(config)
        elif isinstance(checkpoint, Mapping):
            checkpoint = ConsensusContext.from_json(dict(checkpoint))
        depth = confirmation_depth if confirmation_depth is not None else confirmation_depth_of(config)
        try:
            keys = {str(a["name"]): bytes.fromhex(a["pubkey"]) for a in config.get("accounts", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed accounts in the PoC genesis config: {exc!r}") from exc
        for name, key in (farmers or {}).items():
            if name in keys and keys[name] != key:
                raise CodecError(f"farmer {name} is a genesis account with another key", expected=keys[name].hex(),
                                 got=key.hex())
            keys[name] = key
        return cls(client_id, params, checkpoint, depth, trusting_period_ms, fork_history=fork_history,
                   verifier=verifier, max_consensus_states=max_consensus_states, client_params=client_params,
                   farmer_keys=keys, now_ms=now_ms)

    def to_state(self) -> bytes:
        """Canonical JSON of everything the client's future behaviour depends on (see the module docstring)."""
        tree = self._tree
        entries = []
        for node in sorted(tree.nodes(), key=lambda n: (n.height, n.hash)):
            c = node.header
            window = None if node.parent_hash in tree else [[ts, str(cw)] for ts, cw in c.window]
            entries.append([c.height, c.header_hash.hex(), node.parent_hash.hex(), c.timestamp_ms, c.state_root.hex(),
                            c.challenge.hex(), c.quality.hex(), c.difficulty, str(c.cumulative_weight), window,
                            node.producer, node.seen_ms, node.best_since_ms])
        keys = None if self.farmer_keys is None else {n: k.hex() for n, k in self.farmer_keys.items()}
        return canonical_json({
            "v": STATE_VERSION, "type": self.client_type, "base": base_state_to_json(self),
            "params": self.params.to_json(), "client_params": self.client_params.to_json(),
            "confirmation_depth": self.confirmation_depth, "fork_history": self.fork_history,
            "farmer_keys": keys, "now_ms": self._now_ms, "nodes": entries,
            "final_tip": self._final_tip.header_hash.hex(), "best": tree.best.hash.hex(),
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes, *, verifier: ProofVerifier | None = None) -> Self:
        """The inverse of :meth:`to_state`: a client that behaves as the one that wrote ``data``.

        ``data`` is trusted to come from :meth:`to_state` (the relay chain's own state): its structure is
        checked (:class:`~protocol.errors.CodecError`), proofs of space are not re-verified.
        """
        try:
            obj = open_state(data, client_type=cls.client_type, versions=(STATE_VERSION,), client_id=client_id,
                             name="a PoC light-client state")
            base = obj["base"]
            params = PocParams.from_json(obj["params"])
            tree: ForkTree[_Node] = ForkTree(_heaviest)
            for entry in obj["nodes"]:
                node = _node_from_json(params, entry, tree)
                if node.hash in tree:
                    raise CodecError("a header held twice", got=node.hash.hex())
                tree.add(node)
            final_node = tree.get(bytes.fromhex(obj["final_tip"]))
            best = tree.get(bytes.fromhex(obj["best"]))
            if final_node is None or best is None:
                raise CodecError("PoC client state: the final tip and the best tip are held headers",
                                 got=[obj["final_tip"], obj["best"]])
            final_tip = final_node.header
            raw_keys = obj["farmer_keys"]
            keys = None if raw_keys is None else {str(n): bytes.fromhex(k) for n, k in raw_keys.items()}
            client = cls(client_id, params, final_tip, obj["confirmation_depth"], _uint(base["trusting_period_ms"]),
                         fork_history=_uint(obj["fork_history"]), verifier=verifier,
                         max_consensus_states=_uint(base["max_consensus_states"]),
                         client_params=obj["client_params"], farmer_keys=keys, now_ms=_uint(obj["now_ms"]))
            if base["chain_id"] != client.chain_id:
                raise CodecError("PoC client state names two chains", expected=client.chain_id,
                                 got=str(base["chain_id"])[:80])
            tree.set_best(best)
            client._tree, client._final_tip = tree, final_tip
            client._by_proof = {}
            client._pending = 0
            for node in tree.branch(final_node):
                node.final = True
                tree.release(node)
            for node in tree.nodes():
                client._by_proof.setdefault(_proof_key(node.parent_hash, node.header), []).append(node.hash)
                if not node.final:
                    client._pending += 1
            restore_base_state(client, base)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise CodecError(f"malformed PoC light-client state of {client_id}: {exc!r}") from exc
        if client.final_height != final_tip.height:
            raise CodecError("PoC client state: the final tip is not the newest final header",
                             expected=client.final_height, got=final_tip.height)
        return client

    # -- misbehaviour evidence -----------------------------------------------------------------

    def validate_conflicting(self, header_a: PocHeader, header_b: PocHeader, now_ms: int) -> None:
        """Raise unless the pair proves a reorg past finality: distinct valid headers at one height, one of
        them final here, the other preferred by fork choice over the best tip."""
        ha, hb = header_a.hash(), header_b.hash()
        if ha == hb:
            raise HeaderError("evidence headers are the same header", got=ha.hex())
        final = self._final.get(header_a.height)
        if final is None or final.header_hash not in (ha, hb):
            raise HeaderError(
                "two PoC headers at one height are an ordinary fork; evidence needs one of them final in this client",
                got=header_a.height)
        other = header_b if final.header_hash == ha else header_a
        held = self._tree.get(other.hash())
        ctx = held.header if held is not None else self._validate_child(other, now_ms)
        best = self._tree.best.header
        if not is_heavier(ctx.cumulative_weight, ctx.header_hash, best.cumulative_weight, best.header_hash):
            raise HeaderError("the conflicting header is lighter than the best tip: an orphan, not misbehaviour",
                              expected=f"cumulative weight > {best.cumulative_weight}",
                              got=ctx.cumulative_weight)


def _uint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CodecError("expected a non-negative integer", got=value)
    return value


def _hash32(value: Any) -> bytes:
    raw = bytes.fromhex(value)
    if len(raw) != 32:
        raise CodecError("expected 32 bytes", got=len(raw))
    return raw


def _node_from_json(params: PocParams, entry: Any, held: ForkTree[_Node]) -> _Node:
    """One ``nodes`` entry of :meth:`PocLightClient.to_state`; ``held`` has every lower one already."""
    (height, hhash, parent_hex, ts, root, challenge, quality, difficulty, cw_str, window, farmer, seen_ms,
     best_since_ms) = entry
    parent_hash = bytes.fromhex(parent_hex)
    cw = int(cw_str)
    parent = held.get(parent_hash)
    if parent is not None:
        if parent.height + 1 != height:
            raise CodecError("a held header is not one above its parent", expected=parent.height + 1, got=height)
        win = child_window(params, parent.header, _uint(ts), cw)
    elif window is None:
        raise CodecError("a header whose parent is not held needs its retarget window", got=height)
    else:
        win = tuple((_uint(w_ts), int(w_cw)) for w_ts, w_cw in window)
        if not win or win[-1] != (ts, cw):
            raise CodecError("a retarget window ends at its own header", expected=[ts, cw_str], got=window[-1:])
    if not isinstance(farmer, str):
        raise CodecError("a held header's farmer is a name", got=farmer)
    ctx = ConsensusContext(_uint(height), _hash32(hhash), _uint(ts), _hash32(root), _hash32(challenge),
                           _hash32(quality), _uint(difficulty), cw, win)
    return _Node(ctx, parent_hash, farmer, _uint(seen_ms), None if best_since_ms is None else _uint(best_since_ms))


def _remove(index: dict[Any, list[bytes]], key: Any, header_hash: bytes) -> None:
    hashes = index.get(key)
    if hashes is not None and header_hash in hashes:
        hashes.remove(header_hash)
        if not hashes:
            del index[key]


def _farmer_keys(keys: Mapping[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, key in keys.items():
        if not isinstance(name, str) or not isinstance(key, bytes) or len(key) != 32:
            raise CodecError("farmer keys map account names to 32-byte keys", got=name)
        out[name] = key
    return out


def _consensus_state(ctx: ConsensusContext) -> ConsensusState:
    return ConsensusState(height=ctx.height, header_hash=ctx.header_hash, timestamp_ms=ctx.timestamp_ms,
                          state_root=ctx.state_root)


MAX_CHECKPOINT_HEADERS = 4097
"""Most headers :func:`checkpoint_from_headers` takes (the retarget window plus the trusted header)."""


def checkpoint_from_headers(params: PocParams, headers: list[PocHeader],
                            verifier: ProofVerifier | None = None) -> ConsensusContext:
    """The consensus context of ``headers[-1]`` (a substitute client's trusted checkpoint, SPEC §8.8).

    ``headers`` are consecutive park headers ending with the trusted one and starting at most
    ``params.retarget_window`` below it, or at genesis: they give the retarget window. Only the trusted header's
    proof of space is verified (for its quality, which the next challenge needs): the checkpoint is trusted by
    whoever signs the recovery, not proven. Raises :class:`CodecError` for a list that does not chain."""
    if not headers or len(headers) > MAX_CHECKPOINT_HEADERS:
        raise CodecError("a checkpoint needs the trusted header and its retarget window",
                         expected=f"1..{MAX_CHECKPOINT_HEADERS} headers", got=len(headers))
    top = headers[-1]
    for a, b in pairwise(headers):
        if b.height != a.height + 1 or b.parent_hash != a.hash():
            raise CodecError("checkpoint headers do not chain", expected=a.height + 1, got=b.height)
    first = headers[0]
    if first.height != 0 and top.height - first.height < params.retarget_window:
        raise CodecError("checkpoint headers miss part of the retarget window",
                         expected=f"from height {max(0, top.height - params.retarget_window)}", got=first.height)
    if top.chain_id != params.chain_id:
        raise WrongChainError("checkpoint header of another chain", expected=params.chain_id, got=top.chain_id)
    quality = GENESIS_QUALITY if top.height == 0 else verify_proof_of_space(
        top, params, verifier if verifier is not None else chiapos_verifier())
    window = tuple((h.timestamp_ms, h.cumulative_weight) for h in headers)[-(params.retarget_window + 1):]
    return ConsensusContext(height=top.height, header_hash=top.hash(), timestamp_ms=top.timestamp_ms,
                            state_root=top.state_root, challenge=top.challenge, quality=quality,
                            difficulty=top.difficulty, cumulative_weight=top.cumulative_weight, window=window)
