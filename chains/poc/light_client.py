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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from chains.poc.consensus import (
    ConsensusContext,
    PocParams,
    ProofVerifier,
    chiapos_verifier,
    is_heavier,
)
from chains.poc.consensus import validate_header as validate_header_rules
from chains.poc.errors import UnknownParentError
from chains.poc.types import PocHeader
from protocol.errors import CodecError, HeaderError, MisbehaviourError, ReplayError, WrongChainError
from protocol.light_client import ConsensusState, LightClient
from protocol.types import ClientId

__all__ = ["PocLightClient"]


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


def _consensus_state(ctx: ConsensusContext) -> ConsensusState:
    return ConsensusState(height=ctx.height, header_hash=ctx.header_hash, timestamp_ms=ctx.timestamp_ms,
                          state_root=ctx.state_root)
