"""Light client of a DPoS park chain (DESIGN.md §3; SPEC.md §8), hosted by the relay chain.

It follows one park chain header by header from a trusted checkpoint (usually genesis). A header is
accepted when it extends the held chain (chain id, height, parent hash, time and slot), names the witness
set the client holds as active, was produced by the witness scheduled for its slot
(:func:`chains.dpos.consensus.schedule`) and carries that witness's ed25519 signature. Headers are kept as
pending until they become irreversible under the last-irreversible-block rule
(:class:`chains.dpos.consensus.FinalityTracker`); only then are they recorded as final consensus states
that proofs verify against. Witness-set changes take effect only when the boundary block proposing them
becomes irreversible under the old set.

Misbehaviour: a witness that signs two different headers at one height. Under longest-chain fork choice
an honest witness's block heights strictly increase (it only switches to a strictly longer branch, so
its next block is higher than its last), so two validly signed headers by one witness at one height prove
a fault, and freeze the client. Two headers at one height from *different* witnesses prove nothing: an
honest witness may have produced on a fork it had not yet seen lose; such a header is rejected, and the
client stays active.

Pre-conditions (as ibc-go states them): the host calls :meth:`process_header`; :meth:`apply_header`
assumes :meth:`validate_header` accepted the header. Time is passed in, never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from chains.dpos.consensus import FinalityTracker, genesis_header, schedule
from chains.dpos.types import DposHeader, DposParams, WitnessInfo, WitnessSet
from protocol.errors import CodecError, HeaderError, MisbehaviourError, SignatureError, WrongChainError
from protocol.light_client import ConsensusState, LightClient
from protocol.types import ChainId, ClientId

__all__ = ["DposCheckpoint", "DposLightClient"]

MAX_KNOWN_SETS = 64
"""Witness sets (with their verify keys) a client remembers for checking evidence about past headers."""


@dataclass(frozen=True, slots=True)
class DposCheckpoint:
    """What a DPoS light client trusts at creation: a header and the chain's finality state after it."""

    header: DposHeader
    """Trusted header; recorded as final (the genesis header from :func:`genesis_header`, or a final one)."""
    active_set: tuple[WitnessInfo, ...]
    """Witness set that schedules the block after ``header``."""
    lib: int
    """Last irreversible height as the chain computed it after ``header``."""
    last_produced: tuple[tuple[str, int], ...]
    """(witness, last produced height) for every member of ``active_set``."""
    proposals: tuple[tuple[int, tuple[WitnessInfo, ...]], ...] = ()
    """Witness sets proposed at boundaries up to ``header`` and not yet in force: (boundary height, set)."""

    @classmethod
    def genesis(cls, chain_id: str, params: DposParams, active_set: tuple[WitnessInfo, ...],
                state_root: bytes) -> DposCheckpoint:
        """The checkpoint of a chain's genesis: height 0, every witness at height 0."""
        active = WitnessSet(active_set)
        header = genesis_header(chain_id, params, active, state_root)
        return cls(header, active_set, 0, tuple((name, 0) for name in active.names))

    @classmethod
    def from_tracker(cls, header: DposHeader, tracker: FinalityTracker) -> DposCheckpoint:
        """The checkpoint of a full node's (or generator's) state after ``header``."""
        return cls(header, tracker.active.members, tracker.lib, tuple(sorted(tracker.last_produced.items())),
                   tuple((h, s.members) for h, s in tracker.proposals))

    def tracker(self) -> FinalityTracker:
        return FinalityTracker(WitnessSet(self.active_set), self.lib, dict(self.last_produced),
                               [(h, WitnessSet(s)) for h, s in self.proposals])


class DposLightClient(LightClient[DposHeader]):
    """Follows a DPoS park chain; records irreversible headers as final consensus states."""

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
        self._tracker = checkpoint.tracker()
        self._sets: dict[bytes, tuple[WitnessSet, dict[str, VerifyKey]]] = {}
        self._active_keys = self._keyed(self._tracker.active)
        self._tip = header
        self._tip_hash = header.hash()
        self._headers: dict[int, DposHeader] = {header.height: header}
        self._record_final(ConsensusState(header.height, self._tip_hash, header.timestamp_ms, header.state_root))

    # -- what the host and operators read ---------------------------------------------------------

    @property
    def latest_height(self) -> int:
        """Height of the newest header held (final or pending)."""
        return self._tip.height

    @property
    def latest_header(self) -> DposHeader:
        return self._tip

    @property
    def active_set(self) -> WitnessSet:
        """Witness set that schedules the next header."""
        return self._tracker.active

    @property
    def lib(self) -> int:
        """Last irreversible height under the chain's rule. Equals ``final_height``, except just after a mid-chain
        checkpoint whose trusted header lies above the LIB the chain had computed there."""
        return self._tracker.lib

    @property
    def pending_proposals(self) -> list[tuple[int, WitnessSet]]:
        """Proposed witness sets not yet in force: (boundary height, set)."""
        return list(self._tracker.proposals)

    def pending_heights(self) -> list[int]:
        """Heights held but not yet final."""
        return list(range(self.final_height + 1, self._tip.height + 1))

    # -- validate / apply --------------------------------------------------------------------------

    def validate_header(self, header: DposHeader, now_ms: int) -> None:
        """Raise unless ``header`` is the next block of the held chain under the DPoS rules. Pure."""
        if header.chain_id != self.chain_id:
            raise WrongChainError("header of another chain", expected=self.chain_id, got=header.chain_id)
        tip = self._tip
        height = header.height
        if height != tip.height + 1:
            if height <= tip.height:
                self._check_held_height(header)
            raise HeaderError(f"height gap after {tip.height}: headers must come one by one",
                              expected=tip.height + 1, got=height)
        if header.parent_hash != self._tip_hash:
            raise HeaderError(f"header {height} does not link to the held header {tip.height}",
                              expected=self._tip_hash.hex(), got=header.parent_hash.hex())
        ts = header.timestamp_ms
        if ts <= tip.timestamp_ms:
            raise HeaderError(f"timestamp of header {height} not after its parent's",
                              expected=f"> {tip.timestamp_ms}", got=ts)
        if ts > now_ms + self._drift_ms:
            raise HeaderError(f"timestamp of header {height} too far in the future",
                              expected=f"<= {now_ms + self._drift_ms}", got=ts)
        slot = header.slot
        if slot != ts // self._interval:
            raise HeaderError(f"slot of header {height} does not match its timestamp",
                              expected=ts // self._interval, got=slot)
        if slot <= tip.slot:
            raise HeaderError(f"slot of header {height} not after its parent's", expected=f"> {tip.slot}", got=slot)
        active = self._tracker.active
        if header.active_set_hash != active.hash:
            raise HeaderError(f"header {height} names a stale or unknown witness set",
                              expected=active.hash.hex(), got=header.active_set_hash.hex())
        expected = schedule(active, slot, self._genesis_slot)
        if header.producer != expected:
            raise HeaderError(f"wrong witness for the slot {slot} of header {height}", expected=expected,
                              got=header.producer)
        pending = header.pending_set
        if pending is not None:
            if height % self._maintenance != 0:
                raise HeaderError(f"header {height} proposes a witness set off a maintenance boundary",
                                  expected=f"a multiple of {self._maintenance}", got=height)
            if len(pending) > self._max_witnesses:
                raise HeaderError(f"header {height} proposes more witnesses than an election elects",
                                  expected=f"<= {self._max_witnesses}", got=len(pending))
        if height - self.final_height > self.max_pending_headers:
            raise HeaderError("too many headers held without finality: the chain's LIB is stalled",
                              expected=f"<= {self.max_pending_headers} pending", got=height - self.final_height)
        self._check_signature(header, self._active_keys)

    def apply_header(self, header: DposHeader) -> None:
        """Record a validated header, advance the LIB, record newly final headers, promote a witness set."""
        height = header.height
        self._headers[height] = header
        self._tip = header
        self._tip_hash = header.hash()
        tracker = self._tracker
        promoted = tracker.on_block(height, header.producer, header.pending_set)
        lib = tracker.lib
        if lib > self.final_height:
            held = self._headers
            for h in range(self.final_height + 1, lib + 1):
                hd = held[h]
                self._record_final(ConsensusState(h, hd.hash(), hd.timestamp_ms, hd.state_root))
        if promoted is not None:
            self._active_keys = self._keyed(promoted)

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

    # -- internals -----------------------------------------------------------------------------------

    def _check_held_height(self, header: DposHeader) -> None:
        """A header at a height already held: a duplicate, a fork block, or double production. Always raises."""
        height = header.height
        held = self._headers.get(height)
        if held is None:
            raise HeaderError(f"height {height} is below the headers the client holds",
                              expected=f"> {self._tip.height}", got=height)
        if header.hash() == held.hash():
            raise HeaderError(f"header {height} is already held", got=held.hash().hex())
        if header.producer != held.producer or header.active_set_hash != held.active_set_hash:
            raise HeaderError(f"header {height} conflicts with the held one but comes from another witness or "
                              "set: a fork block, not proof of misbehaviour", expected=held.hash().hex(),
                              got=header.hash().hex())
        self._validate_standalone(header)
        raise MisbehaviourError(f"witness {header.producer} signed two headers at height {height} "
                                f"({'final' if height <= self.final_height else 'pending'})",
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
        if header.pending_set is not None and header.height % self._maintenance != 0:
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

    def _keyed(self, wset: WitnessSet) -> dict[str, VerifyKey]:
        entry = self._sets.get(wset.hash)
        if entry is None:
            try:
                keys = {w.name: VerifyKey(w.pubkey) for w in wset.members}
            except ValueError as exc:
                raise CodecError(f"witness set holds a malformed key: {exc}") from exc
            entry = self._sets[wset.hash] = (wset, keys)
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
            self._headers.pop(oldest, None)
