"""Light client of a DPoS park chain (docs/architecture.md §3; SPEC.md §8, §8.5), hosted by the relay chain.

It follows a park chain from a trusted checkpoint (usually genesis), forks included. A DPoS park picks the
longest chain, and its finality is the last irreversible block (LIB): short forks among non-final blocks
happen whenever gossip is late (two witnesses build at one height). So the client keeps a **tree of pending
headers** rooted at its newest final header (the *final tip*), as a full node's fork database does — the shared
:class:`protocol.fork_tree.ForkTree` (SPEC.md §8.1.1), with the rules below:

* **Linking.** A header is accepted when its parent is the final tip or any pending header it holds, and
  it extends that parent under the DPoS rules (chain id; height and time by :func:`protocol.fork_tree.check_link`,
  time strictly after the parent's; slot), names the witness set
  active *on its own branch*, was produced by the witness that set schedules for its slot
  (:func:`chains.dpos.consensus.schedule`) and carries that witness's ed25519 signature. A header whose
  parent is not held is refused (:class:`UnknownParentError`): a branch that does not contain the final tip
  can never be followed. A header already held is refused before any signature check
  (:class:`HeaderReplayError`, a :class:`~protocol.errors.ReplayError`), so redundant relays cost little.
* **Per-branch state.** Schedule, LIB and witness-set bookkeeping (:class:`chains.dpos.consensus.FinalityTracker`)
  depend on the branch. Every branch tip, the final tip and every pending header at a height that is a
  multiple of :data:`SNAPSHOT_EVERY` keep the tracker state after them; the state after any other pending
  header is replayed from the nearest of those below it (at most :data:`SNAPSHOT_EVERY` blocks). A header
  extending a branch tip takes over its parent's tracker, so a linear chain copies no tracker.
* **Fork choice.** The canonical branch is the longest one (highest tip). On a tie the branch seen first
  stays canonical: a new branch must be strictly longer to win. That is Graphene's rule (a node switches
  only to a higher head), so the client agrees with what the park's witnesses build on, and it depends only
  on the order headers arrive in, which the relay chain replays identically on every validator.
* **Finality** advances only along the canonical branch, under the unchanged LIB rule applied to that
  branch's tracker; heights up to the LIB are recorded as final consensus states, the only ones proofs
  verify against. Pending headers that do not descend from the new final tip are pruned then. Witness-set
  changes take effect on a branch when its boundary block becomes irreversible on that branch; what the
  client reports (:attr:`DposLightClient.active_set`, :attr:`~DposLightClient.pending_proposals`) is the
  canonical branch's, and a set proposed on a losing branch never comes into force.
* **Bounds** (SPEC.md §8.5). At most ``max_pending_headers`` pending headers are held over all branches, and
  none more than that above the final tip (:class:`PendingLimitError`). A full tree makes room by dropping a
  leaf off the canonical branch, of the producer holding the most pending headers (earliest first): a witness
  flooding forks displaces its own headers, and the canonical chain always gets in.

Faults of one witness are recorded, not frozen on. Under longest-chain fork choice an honest witness's block
heights strictly increase, so two validly signed headers by one witness at one height prove *that witness*
faulty; but one witness of N cannot make a block irreversible, so this is no conflict of finality, and
freezing on it would let any single witness halt the park's bridge. A second header that links to a held one
is held as a fork header and the pair recorded (:meth:`~DposLightClient.evidence`, in the state, reported by
the relay's client status, punished by the park's ``witness.report_double_production``); one that links to
nothing held is :class:`EquivocationError`, and :meth:`~DposLightClient.check_misbehaviour` records such a pair.
Two headers at one height from *different* witnesses prove nothing: an ordinary fork above finality (both
held), a refused fork block at or below it.

Misbehaviour that freezes: **conflicting finality** — a branch from a retained final header on which more than
2/3 of the witnesses built past a block conflicting with the final chain
(:meth:`~DposLightClient.check_conflicting_finality`): two conflicting irreversible blocks, so more than 1/3 of
the witnesses signed on both sides.

Persistence (a host such as the relay chain keeps the client in its state): :meth:`~DposLightClient.to_state`
is canonical JSON (sorted keys, bytes as lowercase hex, DPoS binary encodings for headers and witness sets)::

    {"v": 1, "type": "dpos", "client_id", "chain_id", "trusting_period_ms", "max_consensus_states",
     "max_pending_headers", "frozen_height": int | null, "freeze_reason", "params": DposParams JSON,
     "final": [header hex, ...],          # retained final headers, ascending; the last is the final tip
     "tracker": {"active": set hex, "lib", "last_produced": [[name, height], ...], "proposals": [[h, set hex]]},
     "pending": [header hex, ...],        # every pending header, all branches, in ARRIVAL order
     "known_sets": [set hex, ...],        # sets whose keys check evidence, oldest first (eviction order)
     "evidence": [[header hex, header hex], ...]}   # double-sign records, oldest first; absent when empty

Final consensus states are derived from the final headers; per-branch trackers are replayed from the final
tip's tracker. Pending headers are kept in arrival order because fork choice breaks ties by it: the canonical
tip is the first header held at the greatest height. :meth:`~DposLightClient.from_state` rebuilds exactly
that tree (the same trackers, snapshots and canonical index), so it behaves as the client that wrote the
bytes, and equal histories give equal bytes. :meth:`~DposLightClient.from_genesis` builds a client from the
park's genesis config with the park node's own code (:func:`chains.dpos.app.load_genesis`).

Pre-conditions (as ibc-go states them): the host calls :meth:`~DposLightClient.process_header`;
:meth:`~DposLightClient.apply_header` assumes :meth:`~DposLightClient.validate_header` accepted the header.
Time is passed in, never read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Self

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from chains.common.state import canonical_json
from chains.dpos.app import load_genesis
from chains.dpos.consensus import DposCheckpoint, FinalityTracker, schedule
from chains.dpos.types import DposHeader, DposParams, WitnessSet, decode_witness_set, encode_witness_set
from protocol.errors import (
    CodecError,
    HeaderError,
    MisbehaviourError,
    ReplayError,
    SignatureError,
    WrongChainError,
)
from protocol.fork_tree import ForkNode, ForkTree, check_link, unknown_parent
from protocol.light_client import (
    ConsensusState,
    HeaderReplayError,
    LightClient,
    PendingLimitError,
    UnknownParentError,
    open_state,
)
from protocol.types import ChainId, ClientId

__all__ = [
    "MAX_EVIDENCE",
    "MAX_FINALITY_EVIDENCE_HEADERS",
    "SNAPSHOT_EVERY",
    "STATE_VERSION",
    "DoubleSignEvidence",
    "DposCheckpoint",
    "DposLightClient",
    "EquivocationError",
    "FinalityEvidenceError",
    "FutureTimestampError",
    "HeaderReplayError",
    "PendingLimitError",
    "UnknownParentError",
]

MAX_KNOWN_SETS = 64
"""Witness sets (with their verify keys) a client remembers for checking evidence about past headers."""
STATE_VERSION = 1
"""Version of the :meth:`DposLightClient.to_state` encoding."""
MAX_EVIDENCE = 64
"""Double-sign evidence records a client keeps (one per witness, the oldest dropped first)."""
MAX_FINALITY_EVIDENCE_HEADERS = 256
"""Most headers one piece of conflicting-finality evidence may carry."""
SNAPSHOT_EVERY = 64
"""A pending header at a height that is a multiple of this keeps its own tracker snapshot, so the state after
any pending header is recomputed by replaying at most this many blocks (a fork deep in a stalled chain stays
cheap) while a linear chain copies a tracker only once per this many headers."""


class EquivocationError(HeaderError):
    """A witness signed a second header at a height where the client holds one of its headers, and the second cannot
    be held (its parent is not held, or the height is final). A fault of that witness, not of finality: the client
    stays active. Submit the two headers as ``client.misbehaviour`` evidence to have it recorded."""

    code: ClassVar[str] = "header.dpos.equivocation"


class FutureTimestampError(HeaderError):
    """The header's time lies further ahead of the host's time than the client's ``max_clock_drift_ms``. The host's
    time moving on lifts it (disposition ``after_progress``): on CometBFT a relay block's time is the median of the
    previous block's precommit times, a block interval or so behind the wall clock that admission used, so a header
    admitted a moment after its park made it may be early for the next block. Never a charged failure."""

    code: ClassVar[str] = "header.dpos.future_timestamp"


class FinalityEvidenceError(HeaderError):
    """Evidence of conflicting finality (:meth:`DposLightClient.check_conflicting_finality`) that proves nothing:
    no fork from a retained final header, a broken link, another set, or a branch fewer than 2/3 built on."""

    code: ClassVar[str] = "header.dpos.finality_evidence"


@dataclass(frozen=True, slots=True)
class DoubleSignEvidence:
    """Two validly signed headers of one witness at one height, recorded by the client (it does not freeze)."""

    witness: str
    """The witness that signed both."""
    height: int
    """Their height."""
    header_a: DposHeader
    """The header with the lower hash."""
    header_b: DposHeader
    """The other one."""

    def to_json(self) -> dict[str, Any]:
        """What a status query reports: the headers hex-encoded, ready for the park's
        ``witness.report_double_production {header_a, header_b}``."""
        return {"witness": self.witness, "height": self.height, "header_a": self.header_a.encode().hex(),
                "header_b": self.header_b.encode().hex()}


class _Node(ForkNode[DposHeader]):
    """A header in the tree above finality: the final tip (the root) or a pending header, with its branch's
    finality state when it keeps one."""

    __slots__ = ("tracker",)

    def __init__(self, header: DposHeader, header_hash: bytes, tracker: FinalityTracker | None) -> None:
        super().__init__(header, header_hash, header.parent_hash, header.height, header.producer)
        self.tracker = tracker
        """Finality state after this header on its branch; ``None`` where it is replayed on demand."""


def _longest(node: _Node) -> int:
    """Fork choice: the longest branch (a new branch must be strictly longer; ties stay with the first seen)."""
    return node.height


class DposLightClient(LightClient[DposHeader]):
    """Follows a DPoS park chain, forks included; records irreversible headers of the longest branch as final."""

    client_type: ClassVar[str] = "dpos"

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int, *, params: DposParams,
                 checkpoint: DposCheckpoint, max_consensus_states: int = 4096,
                 max_pending_headers: int = 65536) -> None:
        super().__init__(client_id, chain_id, trusting_period_ms, max_consensus_states)
        header = checkpoint.header
        if header.chain_id != chain_id:
            raise WrongChainError("checkpoint header of another chain", expected=chain_id, got=header.chain_id)
        self.params = params
        self.max_pending_headers = max_pending_headers
        self._interval = params.block_interval_ms
        self._genesis_slot = params.genesis_slot
        self._maintenance = params.maintenance_interval_blocks
        self._drift_ms = params.max_clock_drift_ms
        self._max_witnesses = params.active_witnesses
        self._sets: dict[bytes, tuple[WitnessSet, dict[str, VerifyKey]]] = {}
        tracker = checkpoint.tracker()
        self._keyed(tracker.active)
        root = _Node(header, header.hash(), tracker)
        self._root = root
        """The final tip: the newest final header, root of every pending branch. Always has a tracker."""
        self._tree: ForkTree[_Node] = ForkTree(_longest)
        """The root and every pending header, in arrival order. Its best tip is the canonical (longest, first seen
        on ties) branch's: a leaf, so it always has a tracker."""
        self._tree.add(root)
        self._final_headers: dict[int, DposHeader] = {}
        """Final headers by height, as many as consensus states are kept (double-production checks)."""
        self._evidence: dict[str, DoubleSignEvidence] = {}
        """Double-sign evidence by witness, in the order recorded (at most :data:`MAX_EVIDENCE`)."""
        self._validated: tuple[bytes, FinalityTracker] | None = None
        """(header hash, parent's replayed state) from the last validate_header that had to replay, for apply."""
        self._final_headers[header.height] = header
        self._record_final(ConsensusState(header.height, root.hash, header.timestamp_ms, header.state_root))

    # -- what the host and operators read ---------------------------------------------------------

    @property
    def latest_height(self) -> int:
        """Height of the canonical tip: the newest header of the longest branch held (final or pending)."""
        return self._tree.best.height

    @property
    def latest_header(self) -> DposHeader:
        """The canonical tip."""
        return self._tree.best.header

    @property
    def active_set(self) -> WitnessSet:
        """Witness set that schedules the next header of the canonical branch."""
        return self._tracker_of(self._tree.best).active

    @property
    def lib(self) -> int:
        """Last irreversible height of the canonical branch under the chain's rule. Equals ``final_height``, except
        just after a mid-chain checkpoint whose trusted header lies above the LIB the chain had computed there."""
        return self._tracker_of(self._tree.best).lib

    @property
    def pending_proposals(self) -> list[tuple[int, WitnessSet]]:
        """Witness sets proposed on the canonical branch and not yet in force: (boundary height, set)."""
        return list(self._tracker_of(self._tree.best).proposals)

    @property
    def pending_count(self) -> int:
        """Pending (non-final) headers held, over all branches; at most ``max_pending_headers``."""
        return len(self._tree) - 1

    def pending_heights(self) -> list[int]:
        """Heights of the canonical branch held but not yet final."""
        return list(range(self.final_height + 1, self._tree.best.height + 1))

    def holds(self, header: DposHeader) -> bool:
        """Whether ``header`` is held (pending on any branch, or a retained final header): submitting it again
        raises :class:`HeaderReplayError`. A relay's redundancy check should ask this, not compare heights: under
        longest-chain fork choice a header at or below :attr:`latest_height` can be new and needed."""
        hhash = header.hash()
        return hhash in self._tree or self.holds_final(header.height, hhash)

    # -- validate / apply --------------------------------------------------------------------------

    def validate_header(self, header: DposHeader, now_ms: int) -> None:
        """Raise unless ``header`` extends the final tip or a pending header under the DPoS rules of its branch.

        Pure (it may leave a replayed tracker state for :meth:`apply_header`). Raises
        :class:`HeaderReplayError` for a held header before any other work.
        """
        if header.chain_id != self.chain_id:
            raise WrongChainError("header of another chain", expected=self.chain_id, got=header.chain_id)
        hhash = header.hash()
        height = header.height
        if self.holds(header):
            raise HeaderReplayError(f"header {height} {hhash.hex()[:16]}… is already held by client {self.client_id}",
                                    got=hhash.hex())
        parent = self._tree.get(header.parent_hash)
        if parent is None:
            self._reject_unlinked(header)
        parent_header = parent.header
        ts = header.timestamp_ms
        check_link(height, ts, parent.height, parent_header.timestamp_ms)
        if ts > now_ms + self._drift_ms:
            raise FutureTimestampError(f"timestamp of header {height} too far in the future",
                              expected=f"<= {now_ms + self._drift_ms}", got=ts)
        slot = header.slot
        if slot != ts // self._interval:
            raise HeaderError(f"slot of header {height} does not match its timestamp",
                              expected=ts // self._interval, got=slot)
        if slot <= parent_header.slot:
            raise HeaderError(f"slot of header {height} not after its parent's", expected=f"> {parent_header.slot}",
                              got=slot)
        self._check_room(height, parent)
        tracker = parent.tracker
        replayed = None
        if tracker is None:
            tracker = replayed = self._replay_after(parent)
        active = tracker.active
        if header.active_set_hash != active.hash:
            raise HeaderError(f"header {height} names a stale or unknown witness set",
                              expected=active.hash.hex(), got=header.active_set_hash.hex())
        expected = schedule(active, slot, self._genesis_slot)
        if header.producer != expected:
            raise HeaderError(f"wrong witness for the slot {slot} of header {height}", expected=expected,
                              got=header.producer)
        pending = header.pending_set
        if pending is not None:
            if not self.params.may_propose(height):
                raise HeaderError(f"header {height} proposes a witness set off a maintenance boundary",
                                  expected=f"a multiple of {self._maintenance}", got=height)
            if len(pending) > self._max_witnesses:
                raise HeaderError(f"header {height} proposes more witnesses than an election elects",
                                  expected=f"<= {self._max_witnesses}", got=len(pending))
        self._check_signature(header, self._keys_of(active))
        # a second header of one witness at one height that links is held as a fork header (apply records the
        # evidence): refusing it could strand the branch the honest witnesses build on
        if replayed is not None:
            self._validated = (hhash, replayed)

    def apply_header(self, header: DposHeader) -> None:
        """Hold a validated header; move the canonical tip if its branch is now the longest; advance finality along
        the canonical branch, record newly final headers and prune the branches that do not contain them."""
        hhash = header.hash()
        tree = self._tree
        if hhash in tree:
            return
        parent = tree.get(header.parent_hash)
        if parent is None:  # the host skipped validate_header
            raise unknown_parent(header.parent_hash, header.height, client=self.client_id,
                                 held=f"the final tip ({self.final_height}) or a pending header")
        validated, self._validated = self._validated, None
        replayed = validated[1] if validated is not None and validated[0] == hhash else None
        if len(tree) > self.max_pending_headers:
            victim = self._pending_victim(parent)
            if victim is not None:
                tree.remove_subtree(victim)
        twin = next((n.header for n in tree.at_height(header.height)
                     if n.header.producer == header.producer and n.header.active_set_hash == header.active_set_hash),
                    None)
        if twin is not None:
            self._record_evidence(twin, header)
        node, tracker, promoted = self._attach(header, hhash, parent, replayed)
        if tree.prefers(node):  # strictly longer: on a tie the branch seen first stays canonical
            tree.set_best(node)
            if tracker.lib > self.final_height:
                self._finalise(tracker.lib)
        if promoted is not None:
            self._keyed(promoted)

    # -- evidence --------------------------------------------------------------------------------------

    def evidence(self) -> list[DoubleSignEvidence]:
        """Double-sign evidence recorded (one record per witness, oldest first): witnesses the park should punish."""
        return list(self._evidence.values())

    def check_misbehaviour(self, header_a: DposHeader, header_b: DposHeader, now_ms: int) -> None:
        """Evidence that one witness signed two headers at one height: validated (:meth:`validate_conflicting`), then
        **recorded** (:meth:`evidence`), and the client stays active. One witness of N double-signing proves a fault of
        that witness, which the park punishes (``witness.report_double_production``), not a break of finality: an
        irreversible block needs more than 2/3 of the witnesses. Conflicting finality freezes
        (:meth:`check_conflicting_finality`). Raises the header errors of invalid evidence, and
        :class:`~protocol.errors.ReplayError` if evidence against that witness is already recorded."""
        self.check_active(now_ms)
        if header_a.height != header_b.height:
            raise HeaderError("evidence headers are at different heights", expected=header_a.height,
                              got=header_b.height)
        self.validate_conflicting(header_a, header_b, now_ms)
        recorded = self._evidence.get(header_a.producer)
        if recorded is not None:
            raise ReplayError(f"client {self.client_id} already holds double-sign evidence against "
                              f"{header_a.producer}", got=recorded.height)
        self._record_evidence(header_a, header_b)

    def _record_evidence(self, header_a: DposHeader, header_b: DposHeader) -> None:
        witness = header_a.producer
        if witness in self._evidence:
            return
        a, b = sorted((header_a, header_b), key=lambda hd: hd.hash())
        self._evidence[witness] = DoubleSignEvidence(witness, a.height, a, b)
        while len(self._evidence) > MAX_EVIDENCE:
            del self._evidence[next(iter(self._evidence))]

    def check_conflicting_finality(self, branch: Sequence[DposHeader], now_ms: int) -> None:
        """Evidence that a branch conflicting with the final chain became irreversible: validated
        (:meth:`validate_conflicting_finality`), then the client **freezes** and
        :class:`~protocol.errors.MisbehaviourError` is raised. Invalid evidence raises its own error; the client stays
        active."""
        self.check_active(now_ms)
        self.validate_conflicting_finality(branch)
        first = branch[0]
        final = self._final_headers[first.height]
        reason = (f"conflicting finality: a branch of {len(branch)} headers from final height {first.height - 1} "
                  f"became irreversible past final header {first.height}")
        self.freeze(first.height, reason)
        raise MisbehaviourError(f"client {self.client_id} of {self.chain_id} frozen: {reason}",
                                expected=final.hash().hex(), got=first.hash().hex())

    def validate_conflicting_finality(self, branch: Sequence[DposHeader]) -> None:
        """Raise unless ``branch`` proves two conflicting irreversible blocks: ``branch[0]`` differs from the final
        header at its height and links to the retained final header below it; each header extends the one before
        under the DPoS rules (height, time, slot, the set the final chain names at ``branch[0]``'s height, the scheduled
        producer, its signature); and on the branch, more than 2/3 of that set produced at or above ``branch[0]``'s
        height (the LIB rule, counting only blocks on the branch), so ``branch[0]`` is irreversible there while the
        final header at its height is irreversible here. Pure. :class:`FinalityEvidenceError` (or the signature's
        :class:`~protocol.errors.SignatureError`) otherwise."""
        if not 1 <= len(branch) <= MAX_FINALITY_EVIDENCE_HEADERS:
            raise FinalityEvidenceError("conflicting-finality evidence is a branch of headers",
                                        expected=f"1..{MAX_FINALITY_EVIDENCE_HEADERS}", got=len(branch))
        first = branch[0]
        for hd in branch:
            if hd.chain_id != self.chain_id:
                raise WrongChainError("evidence header of another chain", expected=self.chain_id, got=hd.chain_id)
        final = self._final_headers.get(first.height)
        fork = self._final_headers.get(first.height - 1) if first.height > 0 else None
        if final is None or fork is None:
            raise FinalityEvidenceError(f"the branch must fork from a final header client {self.client_id} retains, "
                                        "with the final header above it retained", expected=f"<= {self.final_height}",
                                        got=first.height)
        if final.hash() == first.hash():
            raise FinalityEvidenceError("the branch starts with the final header: nothing conflicts",
                                        got=first.hash().hex())
        if first.parent_hash != fork.hash():
            raise FinalityEvidenceError(f"the branch must link to final header {fork.height}",
                                        expected=fork.hash().hex(), got=first.parent_hash.hex())
        entry = self._sets.get(final.active_set_hash)
        if first.active_set_hash != final.active_set_hash or entry is None:
            raise FinalityEvidenceError("the branch must be scheduled by the known set the final chain names there",
                                        expected=final.active_set_hash.hex(), got=first.active_set_hash.hex())
        wset, keys = entry
        # every witness starts at the fork: only blocks on the branch count toward its LIB
        tracker = FinalityTracker(wset, fork.height)
        prev = fork
        for hd in branch:
            if hd.parent_hash != prev.hash() or hd.height != prev.height + 1:
                raise FinalityEvidenceError(f"evidence header {hd.height} does not extend the one before",
                                            expected=[prev.height + 1, prev.hash().hex()],
                                            got=[hd.height, hd.parent_hash.hex()])
            slot = hd.slot
            if (hd.timestamp_ms <= prev.timestamp_ms or slot != hd.timestamp_ms // self._interval
                    or slot <= prev.slot):
                raise FinalityEvidenceError(f"time or slot of evidence header {hd.height} breaks the chain's rules",
                                            expected=f"slot > {prev.slot}, time > {prev.timestamp_ms}",
                                            got=[slot, hd.timestamp_ms])
            if hd.active_set_hash != wset.hash:
                raise FinalityEvidenceError(f"evidence header {hd.height} names another witness set",
                                            expected=wset.hash.hex(), got=hd.active_set_hash.hex())
            producer = schedule(wset, slot, self._genesis_slot)
            if hd.producer != producer:
                raise FinalityEvidenceError(f"wrong witness for slot {slot} of evidence header {hd.height}",
                                            expected=producer, got=hd.producer)
            self._check_signature(hd, keys)
            tracker.on_block(hd.height, hd.producer, None)
            prev = hd
        if tracker.lib < first.height:
            raise FinalityEvidenceError("the branch is not irreversible: at most 2/3 of the witnesses built on it",
                                        expected=f"lib >= {first.height}", got=tracker.lib)

    def validate_conflicting(self, header_a: DposHeader, header_b: DposHeader, now_ms: int) -> None:
        """Raise unless the two headers prove double production: one height, one producer, distinct,
        both scheduled and validly signed under one witness set the client has held as active."""
        for hd in (header_a, header_b):
            if hd.chain_id != self.chain_id:
                raise WrongChainError("evidence header of another chain", expected=self.chain_id, got=hd.chain_id)
        if header_a.hash() == header_b.hash():
            raise HeaderError("evidence headers are the same header", got=header_a.hash().hex())
        if header_a.producer != header_b.producer:
            raise HeaderError("evidence headers come from different witnesses: a fork, not misbehaviour",
                              expected=header_a.producer, got=header_b.producer)
        if header_a.active_set_hash != header_b.active_set_hash:
            raise HeaderError("evidence headers name different witness sets",
                              expected=header_a.active_set_hash.hex(), got=header_b.active_set_hash.hex())
        self._validate_standalone(header_a)
        self._validate_standalone(header_b)

    # -- construction from a genesis config, persistence -------------------------------------------------

    @classmethod
    def from_genesis(cls, client_id: ClientId, chain_id: ChainId, genesis_config: Mapping[str, Any],
                     trusting_period_ms: int, *, max_consensus_states: int = 4096,
                     max_pending_headers: int = 65536) -> Self:
        """A client trusting the genesis the park's genesis config describes (format: :mod:`chains.dpos.app`).

        The checkpoint comes from :func:`chains.dpos.app.load_genesis`, the function the park's node builds its
        genesis with, bridge section included, so the trusted header is the one block 1 links to.
        """
        genesis = load_genesis(dict(genesis_config))
        if genesis.chain_id != chain_id:
            raise WrongChainError("genesis config of another chain", expected=chain_id, got=genesis.chain_id)
        return cls(client_id, chain_id, trusting_period_ms, params=genesis.params, checkpoint=genesis.checkpoint,
                   max_consensus_states=max_consensus_states, max_pending_headers=max_pending_headers)

    def to_state(self) -> bytes:
        """Canonical JSON of everything the client's future behaviour depends on (see the module docstring)."""
        root = self._root
        tracker = root.tracker
        if tracker is None:  # unreachable: the root always keeps its tracker
            tracker = self._replay_after(root)
        return canonical_json({
            "v": STATE_VERSION, "type": self.client_type, "client_id": self.client_id, "chain_id": self.chain_id,
            "trusting_period_ms": self.trusting_period_ms, "max_consensus_states": self.max_consensus_states,
            "max_pending_headers": self.max_pending_headers, "frozen_height": self.frozen_height,
            "freeze_reason": self.freeze_reason, "params": self.params.to_json(),
            # _final is filled in ascending height order, and _final_headers has exactly its keys
            "final": [self._final_headers[h].encode().hex() for h in self._final],
            "tracker": _tracker_to_json(tracker),
            # the tree is in arrival order; the root arrived before everything above it
            "pending": [n.header.encode().hex() for n in self._tree.nodes() if n is not root],
            "known_sets": [encode_witness_set(wset.members).hex() for wset, _ in self._sets.values()],
            # only once there is some: the bytes of a client without evidence are those of earlier versions
            **({"evidence": [[e.header_a.encode().hex(), e.header_b.encode().hex()] for e in self._evidence.values()]}
               if self._evidence else {}),
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes) -> Self:
        """The inverse of :meth:`to_state`: a client that behaves as the one that wrote ``data``.

        ``data`` is trusted to come from :meth:`to_state` (the relay chain's own state): its structure is
        checked (:class:`~protocol.errors.CodecError`), its signatures are not re-verified.
        """
        try:
            obj = open_state(data, client_type=cls.client_type, versions=(STATE_VERSION,), client_id=client_id,
                             name="a DPoS light-client state")
            final = [DposHeader.decode(bytes.fromhex(raw)) for raw in obj["final"]]
            if not final:
                raise CodecError(f"DPoS client state of {client_id} holds no final header")
            checkpoint = DposCheckpoint.from_tracker(final[-1], _tracker_from_json(obj["tracker"]))
            client = cls(client_id, ChainId(str(obj["chain_id"])), _uint(obj["trusting_period_ms"]),
                         params=DposParams.from_json(obj["params"]), checkpoint=checkpoint,
                         max_consensus_states=_uint(obj["max_consensus_states"]),
                         max_pending_headers=_uint(obj["max_pending_headers"]))
            frozen = obj["frozen_height"]
            client.frozen_height = None if frozen is None else _uint(frozen)
            client.freeze_reason = str(obj["freeze_reason"])
            client._restore_final(final)
            client._sets = {}
            for raw in obj["known_sets"]:
                wset = WitnessSet(decode_witness_set(bytes.fromhex(raw)))
                client._sets[wset.hash] = (wset, _verify_keys(wset))
            client._restore_pending([DposHeader.decode(bytes.fromhex(raw)) for raw in obj["pending"]])
            for raw_a, raw_b in obj.get("evidence", ()):
                a, b = DposHeader.decode(bytes.fromhex(raw_a)), DposHeader.decode(bytes.fromhex(raw_b))
                if a.producer != b.producer or a.height != b.height or a.producer in client._evidence:
                    raise CodecError("malformed double-sign evidence record", got=a.producer)
                client._record_evidence(a, b)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"malformed DPoS light-client state of {client_id}: {exc!r}") from exc
        return client

    def _restore_final(self, final: list[DposHeader]) -> None:
        """Replace the constructor's single final record by ``final`` (ascending; the last is the root)."""
        if len(final) > self.max_consensus_states:
            raise CodecError("more final headers than the client keeps", expected=f"<= {self.max_consensus_states}",
                             got=len(final))
        self._final = {}
        self._final_headers = {}
        for hd in final:
            if self._final and hd.height <= self.final_height:
                raise CodecError("final headers out of order", expected=f"> {self.final_height}", got=hd.height)
            self._final_headers[hd.height] = hd
            self._record_final(ConsensusState(hd.height, hd.hash(), hd.timestamp_ms, hd.state_root))

    def _restore_pending(self, pending: list[DposHeader]) -> None:
        """Hold ``pending`` (in their arrival order) above the root, as :meth:`apply_header` held them.

        The canonical tip is the first header, in arrival order, at the greatest height: the longest-branch rule
        with ties to the first seen gives exactly that, and the tip is never pruned (finality follows its branch).
        """
        if len(pending) > self.max_pending_headers:
            raise CodecError("more pending headers than the client holds", expected=f"<= {self.max_pending_headers}",
                             got=len(pending))
        tree = self._tree
        best = self._root
        for header in pending:
            hhash = header.hash()
            parent = tree.get(header.parent_hash)
            if parent is None or hhash in tree or header.height != parent.height + 1:
                raise CodecError("pending headers do not form a tree above the final tip in arrival order",
                                 got=header.height)
            node, _, _ = self._attach(header, hhash, parent, None)
            if node.height > best.height:
                best = node
        tree.set_best(best)
        if self._tracker_of(best).lib > self.final_height:
            raise CodecError("pending headers past the canonical branch's LIB: finality was not applied",
                             expected=f"lib <= {self.final_height}", got=self._tracker_of(best).lib)

    # -- internals: the tree ---------------------------------------------------------------------------

    def _check_room(self, height: int, parent: _Node) -> None:
        depth = height - self.final_height
        if depth > self.max_pending_headers:
            raise PendingLimitError("too many headers held without finality: the chain's LIB is stalled",
                                    expected=f"<= {self.max_pending_headers} pending", got=depth)
        if len(self._tree) > self.max_pending_headers and self._pending_victim(parent) is None:
            raise PendingLimitError(f"client {self.client_id} holds {self.max_pending_headers} pending headers over "
                                    "all branches, all on the canonical branch: no room until finality advances",
                                    expected=f"<= {self.max_pending_headers} pending", got=len(self._tree))

    def _pending_victim(self, parent: _Node) -> _Node | None:
        """The pending header to drop for room in a full tree: a leaf off the canonical branch (not the canonical
        tip, not ``parent``), of the producer holding the most headers in the tree, the earliest to arrive among its.
        Only witnesses sign headers, so the pool fills only with the forks and double-signed headers of witnesses, and
        a flooding witness displaces its own headers first; the canonical branch is never displaced."""
        tree = self._tree
        count = tree.producer_count
        return min(tree.evictable_leaves(tree.nodes(), keep=parent.hash),
                   key=lambda node: (-count(node.producer), node.serial), default=None)

    def _attach(self, header: DposHeader, hhash: bytes, parent: _Node,
                replayed: FinalityTracker | None) -> tuple[_Node, FinalityTracker, WitnessSet | None]:
        """Hold ``header`` under ``parent`` with the tracker state after it; no fork choice, no finality.

        ``replayed`` is the parent's state if validation already replayed it. Returns the new node, its
        tracker and the witness set this header promoted on its branch, if any.
        """
        if replayed is not None:
            tracker = replayed
        else:
            held = parent.tracker
            if held is None:
                tracker = self._replay_after(parent)
            elif parent.children or parent is self._root or parent.height % SNAPSHOT_EVERY == 0:
                tracker = held.copy()  # the parent keeps its snapshot: not a leaf, the root, or a periodic one
            else:
                tracker, parent.tracker = held, None  # a branch tip's state moves up to its first child
        promoted = tracker.on_block(header.height, header.producer, header.pending_set)
        node = _Node(header, hhash, tracker)
        self._tree.add(node)
        return node, tracker, promoted

    def _tracker_of(self, node: _Node) -> FinalityTracker:
        tracker = node.tracker
        return tracker if tracker is not None else self._replay_after(node)

    def _replay_after(self, node: _Node) -> FinalityTracker:
        """A fresh tracker in the state after the held ``node`` on its branch: a copy of the nearest snapshot at or
        below it (the root has one, and so has every SNAPSHOT_EVERY-th height), replayed up to ``node``."""
        path: list[_Node] = []
        for held in self._tree.branch(node):
            snapshot = held.tracker
            if snapshot is not None:
                break
            path.append(held)
        else:  # unreachable: the root keeps its tracker, and every pending header descends from it
            raise LookupError(f"no finality snapshot below header {node.height} in client {self.client_id}")
        tracker = snapshot.copy()
        for n in reversed(path):
            hd = n.header
            tracker.on_block(n.height, hd.producer, hd.pending_set)
        return tracker

    def _finalise(self, lib: int) -> None:
        """Record the canonical headers up to ``lib`` as final; the one at ``lib`` becomes the root. Every pending
        header that does not descend from it is dropped."""
        root = self._root
        tracker = root.tracker
        if tracker is None:  # unreachable: the root always keeps its tracker
            tracker = self._replay_after(root)
        tree, final_headers = self._tree, self._final_headers
        node = root
        for h in range(root.height + 1, lib + 1):
            canonical = tree.canonical(h)
            if canonical is None:  # unreachable: the LIB of the canonical branch is on it
                raise LookupError(f"no canonical header at {h} <= lib {lib} in client {self.client_id}")
            node = canonical
            hd = node.header
            # the old root's tracker is advanced in place (one step per final height) to become the new root's
            tracker.on_block(h, hd.producer, hd.pending_set)
            final_headers[h] = hd
            self._record_final(ConsensusState(h, node.hash, hd.timestamp_ms, hd.state_root))
        if node.tracker is None:
            node.tracker = tracker
        tree.prune_to(node)
        self._root = node

    # -- internals: rejections and misbehaviour --------------------------------------------------------

    def _reject_unlinked(self, header: DposHeader) -> NoReturn:
        """A header whose parent is not held: double production, a fork block below finality, or unknown."""
        height = header.height
        self._check_same_witness(header, "final" if height <= self.final_height else "pending")
        if height <= self.final_height:
            final = self._final_headers.get(height)
            if final is None:
                raise HeaderError(f"height {height} is below the headers the client holds",
                                  expected=f">= {next(iter(self._final_headers), self.final_height)}", got=height)
            raise HeaderError(f"header {height} conflicts with the final one but comes from another witness: a fork "
                              "block, not proof of misbehaviour", expected=final.hash().hex(), got=header.hash().hex())
        raise unknown_parent(header.parent_hash, height, client=self.client_id,
                             held=f"the final tip ({self.final_height}) or a pending header")

    def _check_same_witness(self, header: DposHeader, where: str) -> None:
        """Raise if a held header at ``header``'s height has the same producer: :class:`EquivocationError` if it also
        names the same set and ``header`` is validly signed (a fault of the witness; the client stays active)."""
        height = header.height
        held: DposHeader | None = None
        if height <= self.final_height:
            final = self._final_headers.get(height)
            if final is not None and final.producer == header.producer:
                held = final
        else:
            held = next((n.header for n in self._tree.at_height(height) if n.header.producer == header.producer),
                        None)
        if held is None:
            return
        if header.active_set_hash != held.active_set_hash:
            raise HeaderError(f"header {height} conflicts with a held one of the same witness but names another set: "
                              "not proof of misbehaviour", expected=held.hash().hex(), got=header.hash().hex())
        self._validate_standalone(header)
        raise EquivocationError(f"witness {header.producer} signed two headers at height {height} ({where}); the "
                                "second links to nothing held: submit both as client.misbehaviour evidence",
                                expected=held.hash().hex(), got=header.hash().hex())

    def _validate_standalone(self, header: DposHeader) -> None:
        """The checks a header passes on its own: known set, scheduled producer, signature."""
        entry = self._sets.get(header.active_set_hash)
        if entry is None:
            raise HeaderError("header names a witness set this client never held",
                              got=header.active_set_hash.hex())
        wset, keys = entry
        if header.slot != header.timestamp_ms // self._interval:
            raise HeaderError("slot does not match the timestamp", expected=header.timestamp_ms // self._interval,
                              got=header.slot)
        expected = schedule(wset, header.slot, self._genesis_slot)
        if header.producer != expected:
            raise HeaderError(f"wrong witness for the slot {header.slot}", expected=expected, got=header.producer)
        if header.pending_set is not None and not self.params.may_propose(header.height):
            raise HeaderError("witness set proposed off a maintenance boundary", got=header.height)
        self._check_signature(header, keys)

    def _check_signature(self, header: DposHeader, keys: dict[str, VerifyKey]) -> None:
        sig = header.signature
        if not sig:
            raise SignatureError(f"header {header.height} is not signed", expected=f"signature of {header.producer}")
        try:
            keys[header.producer].verify(header.signing_bytes(), sig)
        except (BadSignatureError, ValueError) as exc:
            raise SignatureError(f"header {header.height}: signature of {header.producer} does not verify",
                                 got=sig.hex()) from exc

    # -- internals: keys and final records ----------------------------------------------------------------

    def _keys_of(self, wset: WitnessSet) -> dict[str, VerifyKey]:
        """Verify keys of a set; from the cache if held there, else built without caching (validation is pure)."""
        entry = self._sets.get(wset.hash)
        return entry[1] if entry is not None else _verify_keys(wset)

    def _keyed(self, wset: WitnessSet) -> dict[str, VerifyKey]:
        entry = self._sets.get(wset.hash)
        if entry is None:
            entry = self._sets[wset.hash] = (wset, _verify_keys(wset))
            # keep the most recent sets only (evidence about older ones is rejected as "never held")
            while len(self._sets) > MAX_KNOWN_SETS:
                del self._sets[next(iter(self._sets))]
        return entry[1]

    def _record_final(self, cs: ConsensusState) -> None:
        # Same contract as the base, but heights arrive in increasing order here, so the oldest is the
        # first inserted: O(1) pruning instead of min() over up to max_consensus_states keys per header.
        final = self._final
        first = not final
        final[cs.height] = cs
        if first or cs.height > self.final_height:
            self.final_height = cs.height
            self.final_timestamp_ms = cs.timestamp_ms
        while len(final) > self.max_consensus_states:
            oldest = next(iter(final))
            del final[oldest]
            self._final_headers.pop(oldest, None)


def _uint(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CodecError("expected a non-negative integer", got=value)
    return value


def _tracker_to_json(tracker: FinalityTracker) -> dict[str, Any]:
    return {"active": encode_witness_set(tracker.active.members).hex(), "lib": tracker.lib,
            "last_produced": sorted([name, h] for name, h in tracker.last_produced.items()),
            "proposals": [[h, encode_witness_set(wset.members).hex()] for h, wset in tracker.proposals]}


def _tracker_from_json(obj: Any) -> FinalityTracker:
    return FinalityTracker(WitnessSet(decode_witness_set(bytes.fromhex(obj["active"]))), _uint(obj["lib"]),
                           {str(name): _uint(h) for name, h in obj["last_produced"]},
                           [(_uint(h), WitnessSet(decode_witness_set(bytes.fromhex(raw))))
                            for h, raw in obj["proposals"]])


def _verify_keys(wset: WitnessSet) -> dict[str, VerifyKey]:
    try:
        return {w.name: VerifyKey(w.pubkey) for w in wset.members}
    except ValueError as exc:
        raise CodecError(f"witness set holds a malformed key: {exc}") from exc
