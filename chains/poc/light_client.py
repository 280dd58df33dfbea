"""Light client of a PoC park chain, client type ``poc`` (DESIGN §3, PoC row; SPEC.md §8).

Starts from a trusted checkpoint (a :class:`~chains.poc.consensus.ConsensusContext`: height, hash,
challenge and quality, difficulty, cumulative weight and the retarget window) and follows headers,
forks included:

* Every header is checked by :func:`chains.poc.consensus.validate_header` against its parent's
  context: chain id, link, challenge chain, exact difficulty and weight, future time, the farmer's
  signature, the proof of space for the plot bound to the farmer's key, and its deadline.
* The client keeps a small tree of headers above the final one (and the last ``fork_history`` final
  ones, as fork points). The best tip is the heaviest by cumulative weight (ties to the lower hash);
  a reorg within the confirmation depth just moves the best tip.
* A header is final once it is ``confirmation_depth`` blocks below the best tip; final headers are
  recorded with :meth:`~protocol.light_client.LightClient._record_final`, and proofs are verified only
  against them.
* **Misbehaviour**: a valid header on a branch that does not contain the final tip and that fork choice
  would prefer over the best tip (a reorg deeper than the confirmation depth) raises
  :class:`~protocol.errors.MisbehaviourError` from :meth:`validate_header`, so
  :meth:`~protocol.light_client.LightClient.process_header` freezes the client.

An ordinary fork (two blocks at one height) is not misbehaviour in proof of capacity: two farmers
may both find proofs. :meth:`validate_conflicting` therefore accepts evidence only when one header is
final here and the other, valid, is preferred by fork choice over the best tip.

Persistence (a host such as the relay chain keeps the client in its state): :meth:`~PocLightClient.to_state`
is canonical JSON (sorted keys, bytes as lowercase hex, u128 weights as decimal strings)::

    {"v": 1, "type": "poc", "base": protocol.light_client.base_state_to_json(client),
     "params": PocParams JSON, "confirmation_depth", "fork_history",
     "nodes": [[height, hash, parent_hash, timestamp_ms, state_root, challenge, quality, difficulty,
                cumulative_weight, window | null], ...],   # every held header, sorted by (height, hash)
     "final_tip": hash, "best": hash}

A node's retarget window is stored only when its parent is not held (the checkpoint, the oldest kept fork
points); the others are recomputed from the parent, as :func:`~chains.poc.consensus.validate_header` made
them. Fork choice depends on weights and hashes only (never on arrival order), so a canonical order suffices.
:meth:`~PocLightClient.from_state` rebuilds the same tree; :meth:`~PocLightClient.from_genesis` builds a
client from the park's genesis config with the park node's own code (:func:`chains.poc.app.genesis_block`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from chains.common.state import canonical_json
from chains.poc.app import confirmation_depth_of, genesis_block, params_from_genesis
from chains.poc.consensus import (
    ConsensusContext,
    PocParams,
    ProofVerifier,
    chiapos_verifier,
    child_window,
    is_heavier,
)
from chains.poc.consensus import validate_header as validate_header_rules
from chains.poc.errors import UnknownParentError
from chains.poc.types import PocHeader
from protocol.errors import CodecError, HeaderError, MisbehaviourError, NotFinalError, ReplayError, WrongChainError
from protocol.light_client import ConsensusState, LightClient, base_state_to_json, restore_base_state
from protocol.types import ChainId, ClientId

__all__ = ["STATE_VERSION", "PocLightClient"]

STATE_VERSION = 1
"""Version of the :meth:`PocLightClient.to_state` encoding."""


class _Node:
    """A header the client holds: its consensus context and its parent's hash."""

    __slots__ = ("ctx", "parent_hash")

    def __init__(self, ctx: ConsensusContext, parent_hash: bytes) -> None:
        self.ctx = ctx
        self.parent_hash = parent_hash


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
    ) -> None:
        """``params`` and ``checkpoint`` may be given as their JSON forms (``to_json``), as a relay-chain
        create-client message carries them. ``fork_history`` final headers are kept as fork points, so a
        deep reorg starting up to that far below the final tip is detected as misbehaviour (older
        forks are refused as unknown-parent)."""
        p = PocParams.from_json(dict(params)) if isinstance(params, Mapping) else params
        cp = ConsensusContext.from_json(dict(checkpoint)) if isinstance(checkpoint, Mapping) else checkpoint
        if isinstance(confirmation_depth, bool) or not isinstance(confirmation_depth, int) or confirmation_depth < 1:
            raise CodecError("confirmation_depth must be a positive integer", got=confirmation_depth)
        if len(cp.window) > p.retarget_window + 1:
            raise CodecError("checkpoint window longer than the retarget window", expected=p.retarget_window + 1,
                             got=len(cp.window))
        super().__init__(client_id, p.chain_id, trusting_period_ms, max_consensus_states)
        self.params = p
        self.confirmation_depth = confirmation_depth
        self.fork_history = max(0, fork_history)
        self._verifier: ProofVerifier = verifier if verifier is not None else chiapos_verifier()
        self._nodes: dict[bytes, _Node] = {cp.header_hash: _Node(cp, b"")}
        self._by_height: dict[int, list[bytes]] = {cp.height: [cp.header_hash]}
        self._final_tip = cp
        self._best = cp
        self._validated: tuple[bytes, ConsensusContext] | None = None
        self._record_final(_consensus_state(cp))

    # -- queries -------------------------------------------------------------------------------

    @property
    def best_tip(self) -> ConsensusContext:
        """The heaviest header held (it always contains the final tip)."""
        return self._best

    @property
    def latest_height(self) -> int:
        """Height of the heaviest header held: a relayer sends headers from the next one on."""
        return self._best.height

    @property
    def final_tip(self) -> ConsensusContext:
        """The newest final header."""
        return self._final_tip

    def has_header(self, header_hash: bytes) -> bool:
        """Whether a header is held (a relayer may skip submitting it)."""
        return header_hash in self._nodes

    def holds(self, header: PocHeader) -> bool:
        """Whether ``header`` is held in the fork tree or is the retained final header at its height: submitting
        it again adds nothing. A relay's redundancy check should ask this, not compare heights: under
        heaviest-chain fork choice a header at or below :attr:`latest_height` can be new and needed."""
        hhash = header.hash()
        if hhash in self._nodes:
            return True
        try:
            return self.final_consensus_state(header.height).header_hash == hhash
        except NotFinalError:
            return False

    def context(self, header_hash: bytes) -> ConsensusContext | None:
        """The consensus context of a held header."""
        node = self._nodes.get(header_hash)
        return None if node is None else node.ctx

    def __len__(self) -> int:
        return len(self._nodes)

    # -- headers -------------------------------------------------------------------------------

    def validate_header(self, header: PocHeader, now_ms: int) -> None:
        """Raise unless ``header`` is a valid child of a held header; MisbehaviourError if it reverts finality."""
        ctx = self._validate_child(header, now_ms)
        if not self._descends_from_final(header.parent_hash, ctx.height - 1) and is_heavier(
                ctx.cumulative_weight, ctx.header_hash, self._best.cumulative_weight, self._best.header_hash):
            raise MisbehaviourError(
                f"client {self.client_id} of {self.chain_id}: header {ctx.height} {ctx.header_hash.hex()[:16]}… is on "
                f"a heavier branch that reverts final header {self._final_tip.height} (reorg deeper than "
                f"{self.confirmation_depth} blocks)",
                expected=f"cumulative weight <= {self._best.cumulative_weight}", got=ctx.cumulative_weight)
        self._validated = (ctx.header_hash, ctx)

    def apply_header(self, header: PocHeader) -> None:
        """Record a validated header, move the best tip, advance finality and prune."""
        hhash = header.hash()
        if self._validated is not None and self._validated[0] == hhash:
            ctx = self._validated[1]
        else:  # the host skipped validate_header: redo the rules (time cannot be checked here)
            ctx = self._validate_child(header, header.timestamp_ms)
        self._validated = None
        if hhash in self._nodes:
            return
        self._nodes[hhash] = _Node(ctx, header.parent_hash)
        self._by_height.setdefault(ctx.height, []).append(hhash)
        if is_heavier(ctx.cumulative_weight, hhash, self._best.cumulative_weight, self._best.header_hash):
            self._best = ctx
        self._advance_finality()

    def _validate_child(self, header: PocHeader, now_ms: int) -> ConsensusContext:
        if header.chain_id != self.chain_id:
            raise WrongChainError("PoC header for another chain", expected=self.chain_id, got=header.chain_id)
        hhash = header.hash()
        if hhash in self._nodes:
            raise ReplayError(f"header {header.height} {hhash.hex()[:16]}… already held by client {self.client_id}",
                              got=hhash.hex())
        parent = self._nodes.get(header.parent_hash)
        if parent is None:
            raise UnknownParentError(
                f"parent of header {header.height} is not held by client {self.client_id} (never seen, or older than "
                f"the {self.fork_history} kept final headers)", got=header.parent_hash.hex())
        return validate_header_rules(header, parent.ctx, self.params, now_ms, self._verifier)

    def _descends_from_final(self, header_hash: bytes, height: int) -> bool:
        """Whether the held header ``header_hash`` (at ``height``) is the final tip or above it on its branch."""
        final_height = self._final_tip.height
        if height < final_height:
            return False
        h = header_hash
        for _ in range(height - final_height):
            node = self._nodes.get(h)
            if node is None:
                return False
            h = node.parent_hash
        return h == self._final_tip.header_hash

    def _advance_finality(self) -> None:
        target = self._best.height - self.confirmation_depth
        if target <= self._final_tip.height:
            return
        newly_final: list[ConsensusContext] = []
        h = self._best.header_hash
        node = self._nodes[h]
        while node.ctx.height > self._final_tip.height:
            if node.ctx.height <= target:
                newly_final.append(node.ctx)
            node = self._nodes[node.parent_hash]
        for ctx in reversed(newly_final):
            self._record_final(_consensus_state(ctx))
        self._final_tip = newly_final[0]
        self._prune()

    def _prune(self) -> None:
        cutoff = self._final_tip.height - self.fork_history
        for height in sorted(h for h in self._by_height if h < cutoff):
            for hh in self._by_height.pop(height):
                del self._nodes[hh]

    # -- construction from a genesis config, persistence ---------------------------------------

    @classmethod
    def from_genesis(cls, client_id: ClientId, chain_id: ChainId, genesis_config: Mapping[str, Any],
                     trusting_period_ms: int, *, confirmation_depth: int | None = None, fork_history: int = 128,
                     verifier: ProofVerifier | None = None, max_consensus_states: int = 4096) -> Self:
        """A client trusting the genesis the park's genesis config describes (format: :mod:`chains.poc.app`).

        The checkpoint comes from :func:`chains.poc.app.genesis_block`, the function the park's node builds its
        genesis with, bridge section included. ``confirmation_depth`` defaults to the config's (as the park's
        node uses it).
        """
        config = dict(genesis_config)
        params, _ = params_from_genesis(config)
        if params.chain_id != chain_id:
            raise WrongChainError("genesis config of another chain", expected=chain_id, got=params.chain_id)
        _, _, checkpoint = genesis_block(config)
        depth = confirmation_depth if confirmation_depth is not None else confirmation_depth_of(config)
        return cls(client_id, params, checkpoint, depth, trusting_period_ms, fork_history=fork_history,
                   verifier=verifier, max_consensus_states=max_consensus_states)

    def to_state(self) -> bytes:
        """Canonical JSON of everything the client's future behaviour depends on (see the module docstring)."""
        nodes = self._nodes
        entries = []
        for node in sorted(nodes.values(), key=lambda n: (n.ctx.height, n.ctx.header_hash)):
            c = node.ctx
            window = None if node.parent_hash in nodes else [[ts, str(cw)] for ts, cw in c.window]
            entries.append([c.height, c.header_hash.hex(), node.parent_hash.hex(), c.timestamp_ms, c.state_root.hex(),
                            c.challenge.hex(), c.quality.hex(), c.difficulty, str(c.cumulative_weight), window])
        return canonical_json({
            "v": STATE_VERSION, "type": self.client_type, "base": base_state_to_json(self),
            "params": self.params.to_json(), "confirmation_depth": self.confirmation_depth,
            "fork_history": self.fork_history, "nodes": entries,
            "final_tip": self._final_tip.header_hash.hex(), "best": self._best.header_hash.hex(),
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes, *, verifier: ProofVerifier | None = None) -> Self:
        """The inverse of :meth:`to_state`: a client that behaves as the one that wrote ``data``.

        ``data`` is trusted to come from :meth:`to_state` (the relay chain's own state): its structure is
        checked (:class:`~protocol.errors.CodecError`), proofs of space are not re-verified.
        """
        try:
            obj = json.loads(data)
            if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION or obj.get("type") != cls.client_type:
                raise CodecError("not a PoC light-client state", expected=f"{cls.client_type} v{STATE_VERSION}",
                                 got=[obj.get("type"), obj.get("v")] if isinstance(obj, dict) else None)
            base = obj["base"]
            if base["client_id"] != client_id:
                raise CodecError("light-client state of another client", expected=client_id, got=base["client_id"])
            params = PocParams.from_json(obj["params"])
            nodes: dict[bytes, _Node] = {}
            by_height: dict[int, list[bytes]] = {}
            for entry in obj["nodes"]:
                ctx, parent_hash = _node_from_json(params, entry, nodes)
                if ctx.header_hash in nodes:
                    raise CodecError("a header held twice", got=ctx.header_hash.hex())
                nodes[ctx.header_hash] = _Node(ctx, parent_hash)
                by_height.setdefault(ctx.height, []).append(ctx.header_hash)
            final_tip = nodes[bytes.fromhex(obj["final_tip"])].ctx
            best = nodes[bytes.fromhex(obj["best"])].ctx
            client = cls(client_id, params, final_tip, obj["confirmation_depth"], _uint(base["trusting_period_ms"]),
                         fork_history=_uint(obj["fork_history"]), verifier=verifier,
                         max_consensus_states=_uint(base["max_consensus_states"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"malformed PoC light-client state of {client_id}: {exc!r}") from exc
        if base["chain_id"] != client.chain_id:
            raise CodecError("PoC client state names two chains", expected=client.chain_id, got=base["chain_id"])
        client._nodes, client._by_height, client._best = nodes, by_height, best
        restore_base_state(client, base)
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
        held = self._nodes.get(other.hash())
        ctx = held.ctx if held is not None else self._validate_child(other, now_ms)
        if not is_heavier(ctx.cumulative_weight, ctx.header_hash, self._best.cumulative_weight,
                          self._best.header_hash):
            raise HeaderError("the conflicting header is lighter than the best tip: an orphan, not misbehaviour",
                              expected=f"cumulative weight > {self._best.cumulative_weight}",
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


def _node_from_json(params: PocParams, entry: Any, held: Mapping[bytes, _Node]) -> tuple[ConsensusContext, bytes]:
    """One ``nodes`` entry of :meth:`PocLightClient.to_state`; ``held`` has every lower one already."""
    height, hhash, parent_hex, ts, root, challenge, quality, difficulty, cw_str, window = entry
    parent_hash = bytes.fromhex(parent_hex)
    cw = int(cw_str)
    parent = held.get(parent_hash)
    if parent is not None:
        if parent.ctx.height + 1 != height:
            raise CodecError("a held header is not one above its parent", expected=parent.ctx.height + 1, got=height)
        win = child_window(params, parent.ctx, _uint(ts), cw)
    elif window is None:
        raise CodecError("a header whose parent is not held needs its retarget window", got=height)
    else:
        win = tuple((_uint(w_ts), int(w_cw)) for w_ts, w_cw in window)
        if not win or win[-1] != (ts, cw):
            raise CodecError("a retarget window ends at its own header", expected=[ts, cw_str], got=window[-1:])
    ctx = ConsensusContext(_uint(height), _hash32(hhash), _uint(ts), _hash32(root), _hash32(challenge),
                           _hash32(quality), _uint(difficulty), cw, win)
    return ctx, parent_hash


def _consensus_state(ctx: ConsensusContext) -> ConsensusState:
    return ConsensusState(height=ctx.height, header_hash=ctx.header_hash, timestamp_ms=ctx.timestamp_ms,
                          state_root=ctx.state_root)
