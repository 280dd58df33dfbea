"""Consensus rules of the DPoS park (docs/research.md#seed-003; docs/architecture.md §3), as pure functions shared
by every verifier.

The full node (through :mod:`chains.dpos.witnesses`), the relay chain's light client
(:mod:`chains.dpos.light_client`) and the test-chain generator (:mod:`chains.dpos.testing`) all call these,
so they cannot disagree on whose slot it is, which block is irreversible or when the witness set changes.

* **Slots.** Time is cut into slots of ``block_interval_ms``; slot ``s`` is ``timestamp_ms // interval``.
  Counting from the genesis slot, slot offsets are grouped in rounds of N (the active set's size).
* **Schedule.** Each round, the active set (in canonical name order) is shuffled by a Fisher-Yates
  shuffle seeded with ``sha256(tag || set_hash || round)``, as Graphene reshuffles its witnesses every
  round; the i-th slot of the round belongs to the i-th witness of the shuffle.
* **Last irreversible block (LIB).** A witness that produces a block at height h has built on every block
  below it. A height is irreversible once *more than 2/3* of the active witnesses have produced a block at or
  above it: sort the witnesses' last produced heights in descending order and take the entry at index
  ``floor(2N/3)`` (that entry and the ``floor(2N/3)`` before it are ``floor(2N/3) + 1 > 2N/3`` witnesses).
* **Witness-set changes (EOS-style).** See :class:`FinalityTracker`.
* **Election, credit, jail and rewards** (docs/research.md#seed-003's improvements to DPoS): :func:`elect`,
  :func:`credit_after`, :func:`shapley_confirmation_game`, :func:`split_largest_remainder`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import factorial
from typing import Any

from chains.dpos.types import DposHeader, DposParams, WitnessInfo, WitnessSet
from protocol.errors import CodecError, HeaderError

__all__ = [
    "Candidate",
    "DposCheckpoint",
    "FinalityTracker",
    "confirmations_needed",
    "credit_after",
    "elect",
    "genesis_header",
    "interval_of",
    "irreversible_height",
    "is_boundary",
    "missed_slots",
    "proportional_rewards",
    "round_order",
    "schedule",
    "shapley_by_subsets",
    "shapley_confirmation_game",
    "shapley_rewards",
    "slot_of",
    "split_largest_remainder",
]

SCHEDULE_TAG = b"parkrelay/dpos-schedule/v1"
_sha256 = hashlib.sha256

# -- slots and the schedule ----------------------------------------------------------------------


def slot_of(timestamp_ms: int, block_interval_ms: int) -> int:
    """Absolute slot number of a time."""
    return timestamp_ms // block_interval_ms


_ORDER_CACHE: dict[tuple[bytes, int], tuple[str, ...]] = {}
_ORDER_CACHE_MAX = 4096


def round_order(active: WitnessSet, round_number: int) -> tuple[str, ...]:
    """The witnesses of ``active`` in their production order for round ``round_number``.

    Fisher-Yates over the canonical name order, drawing 64-bit words from
    ``sha256(sha256(tag || set_hash || u64 round) || u32 block)``. The modulo bias of a 64-bit word over at
    most 101 witnesses is below 2^-56 and, being deterministic, is the same for every verifier.
    """
    key = (active.hash, round_number)
    order = _ORDER_CACHE.get(key)
    if order is None:
        if round_number < 0:
            raise HeaderError("a round number is not negative", got=round_number)
        seed = _sha256(SCHEDULE_TAG + active.hash + round_number.to_bytes(8, "big")).digest()
        names = list(active.names)
        words: list[int] = []
        block = 0
        for i in range(len(names) - 1, 0, -1):
            if not words:
                digest = _sha256(seed + block.to_bytes(4, "big")).digest()
                words = [int.from_bytes(digest[k : k + 8], "big") for k in (24, 16, 8, 0)]
                block += 1
            j = words.pop() % (i + 1)
            names[i], names[j] = names[j], names[i]
        order = tuple(names)
        if len(_ORDER_CACHE) >= _ORDER_CACHE_MAX:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = order
    return order


def schedule(active: WitnessSet, slot: int, genesis_slot: int) -> str:
    """Name of the witness of ``active`` scheduled to produce in ``slot``."""
    offset = slot - genesis_slot
    if offset <= 0:
        raise HeaderError("slot at or before genesis", expected=f"> {genesis_slot}", got=slot)
    round_number, index = divmod(offset, len(active.names))
    return round_order(active, round_number)[index]


def missed_slots(active: WitnessSet, after_slot: int, before_slot: int, genesis_slot: int) -> dict[str, int]:
    """How many slots strictly between ``after_slot`` and ``before_slot`` each witness of ``active`` had.

    These are the slots no block filled. Whole rounds are counted arithmetically (each witness has one slot
    a round), so a chain that was down for a day costs no more than one that skipped a few slots.
    """
    out: dict[str, int] = {}
    first, last = after_slot + 1, before_slot - 1
    if first > last:
        return out
    n = len(active.names)

    def add_range(a: int, b: int) -> None:
        for s in range(a, b + 1):
            name = schedule(active, s, genesis_slot)
            out[name] = out.get(name, 0) + 1

    if last - first < 3 * n:
        add_range(first, last)
        return out
    # head: up to the end of first's round; tail: from the start of last's round
    head_end = genesis_slot + ((first - genesis_slot) // n + 1) * n - 1
    tail_start = genesis_slot + ((last - genesis_slot) // n) * n
    add_range(first, head_end)
    add_range(tail_start, last)
    full_rounds = (tail_start - head_end - 1) // n
    for name in active.names:
        out[name] = out.get(name, 0) + full_rounds
    return out


# -- finality and witness-set changes ------------------------------------------------------------


def confirmations_needed(n: int) -> int:
    """Smallest number of witnesses that is more than 2/3 of ``n``."""
    return (2 * n) // 3 + 1


def irreversible_height(last_produced: Iterable[int], n: int) -> int:
    """The highest height that more than 2/3 of ``n`` witnesses have produced at or above.

    ``last_produced`` holds one height per active witness (a witness that has not produced counts with
    the height it was given when it joined). Sorted descending, the entry at index ``floor(2N/3)`` is
    reached or passed by the ``floor(2N/3) + 1`` witnesses up to it, and ``floor(2N/3) + 1 > 2N/3``.
    """
    heights = sorted(last_produced, reverse=True)
    if len(heights) != n or n == 0:
        raise HeaderError("one last-produced height per active witness", expected=n, got=len(heights))
    return heights[(2 * n) // 3]


class FinalityTracker:
    """LIB and witness-set bookkeeping of one linear chain; mutable, pure (no I/O).

    Feed it every block in order with :meth:`on_block`. It keeps the active witness set, each active
    witness's last produced height, the LIB, and the witness sets proposed by boundary blocks that are not
    yet in force.

    **Why a set change waits for irreversibility (EOS-style).** The block at each maintenance boundary
    carries the next witness set (``pending_set``), elected from chain state. A light client cannot re-run
    the election, so it must not believe the set because one witness signed it: that witness could name a
    set of keys it owns and, once in force, sign anything. Instead the proposal takes effect only when the
    boundary block becomes irreversible *under the current set*, that is when more than 2/3 of the current
    witnesses have produced blocks on top of it. Full nodes of honest witnesses re-run the election and
    never build on a boundary block whose ``pending_set`` differs from theirs, so as long as fewer than
    1/3 of the active witnesses are faulty a fake set can stall its own fork but is never promoted. Each
    set is therefore vouched for by more than 2/3 of its predecessor, back to the trusted genesis set.

    When a set is promoted, witnesses that stay keep their last produced height; new ones start at the
    current LIB (they have confirmed nothing above it), and the LIB never moves backwards. If several
    proposals become irreversible at once, the latest wins (it was elected from the latest state).
    """

    __slots__ = ("_k", "active", "last_produced", "lib", "proposals")

    def __init__(self, active: WitnessSet, lib: int = 0, last_produced: Mapping[str, int] | None = None,
                 proposals: Iterable[tuple[int, WitnessSet]] = ()) -> None:
        self.active = active
        """The witness set that schedules the next block."""
        self.lib = lib
        """Last irreversible height."""
        self.last_produced: dict[str, int] = {name: lib for name in active.names}
        """Active witness name -> height of the last block it produced (or its start height)."""
        if last_produced is not None:
            if set(last_produced) != set(active.names):
                raise CodecError("last_produced must name exactly the active witnesses",
                                 expected=sorted(active.names), got=sorted(last_produced))
            self.last_produced.update(last_produced)
        self.proposals: list[tuple[int, WitnessSet]] = sorted(proposals, key=lambda p: p[0])
        """(boundary height, proposed set) not yet in force, oldest first."""
        self._k = (2 * len(active.names)) // 3

    def on_block(self, height: int, producer: str, pending_set: tuple[WitnessInfo, ...] | None) -> WitnessSet | None:
        """Account for a block (already checked: ``producer`` is in the active set). Returns the newly
        promoted set, if this block made a proposal irreversible."""
        if pending_set is not None:
            self.proposals.append((height, WitnessSet(pending_set)))
        lp = self.last_produced
        if lp[producer] < height:
            lp[producer] = height
        candidate = sorted(lp.values(), reverse=True)[self._k]
        if candidate <= self.lib:
            return None
        self.lib = candidate
        if not self.proposals or self.proposals[0][0] > candidate:
            return None
        promoted = self.proposals.pop(0)[1]
        while self.proposals and self.proposals[0][0] <= candidate:
            promoted = self.proposals.pop(0)[1]
        self._promote(promoted)
        return promoted

    def _promote(self, new: WitnessSet) -> None:
        old = self.last_produced
        self.active = new
        self.last_produced = {name: old.get(name, self.lib) for name in new.names}
        self._k = (2 * len(new.names)) // 3

    def copy(self) -> FinalityTracker:
        return FinalityTracker(self.active, self.lib, dict(self.last_produced), list(self.proposals))

    def to_json(self) -> dict[str, Any]:
        return {
            "active_set": self.active.to_json(),
            "lib": self.lib,
            "last_produced": dict(sorted(self.last_produced.items())),
            "proposals": [[h, s.to_json()] for h, s in self.proposals],
        }

    @classmethod
    def from_json(cls, obj: Any) -> FinalityTracker:
        try:
            return cls(WitnessSet.from_json(obj["active_set"]), int(obj["lib"]),
                       {str(k): int(v) for k, v in obj["last_produced"].items()},
                       [(int(h), WitnessSet.from_json(s)) for h, s in obj["proposals"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"malformed finality tracker: {exc}") from exc


def genesis_header(chain_id: str, params: DposParams, active: WitnessSet, state_root: bytes) -> DposHeader:
    """The unsigned height-0 header every verifier starts from: block 1 links to its :meth:`~DposHeader.hash`.

    Its producer is the placeholder name ``genesis``; nobody signs it, it is trusted as configured.
    """
    return DposHeader(chain_id, 0, bytes(32), params.genesis_time_ms, params.genesis_slot, "genesis", bytes(32),
                      state_root, active.hash, None, b"")


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


# -- maintenance intervals, credit, election -----------------------------------------------------


def is_boundary(height: int, params: DposParams) -> bool:
    """Whether the block at ``height`` closes a maintenance interval (and may propose the next set)."""
    return height > 0 and height % params.maintenance_interval_blocks == 0


def interval_of(height: int, params: DposParams) -> int:
    """Maintenance interval a block belongs to: blocks 1..M are interval 0, and block M is its boundary."""
    return max(height - 1, 0) // params.maintenance_interval_blocks


def credit_after(credit: int, params: DposParams, *, produced: int = 0, missed: int = 0, bad: int = 0) -> int:
    """Credit after rewards and punishments, clamped to ``0..credit_max``.

    Missing a slot costs more than producing one earns (docs/research.md#seed-003: punishments outweigh rewards), and a
    proven bad block costs the most.
    """
    c = (credit + produced * params.credit_produced_reward - missed * params.credit_missed_penalty
         - bad * params.credit_bad_block_penalty)
    return max(0, min(params.credit_max, c))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A registered witness as an election sees it."""

    name: str
    """Account name."""
    pubkey: bytes
    """32-byte block-signing key."""
    votes: int
    """Stake-weighted votes (Wh of the stake denom), tallied at the election."""
    credit: int
    """Credit score, 0..credit_max."""
    jailed: bool
    """Not eligible: jailed, or (docs/research.md#seed-002) a demand-response node the last cycle marked inactive."""


def elect(candidates: Iterable[Candidate], params: DposParams) -> WitnessSet | None:
    """The top ``active_witnesses`` candidates by ``votes * credit`` (docs/research.md#seed-003: votes weighted by
    credit).

    Jailed candidates, those under the jail credit threshold and those with a zero score are excluded;
    ties go to the smaller name. ``None`` if nobody is eligible (the caller then keeps the current set).
    """
    eligible = [c for c in candidates
                if not c.jailed and c.credit >= params.jail_credit_threshold and c.votes * c.credit > 0]
    eligible.sort(key=lambda c: (-(c.votes * c.credit), c.name))
    chosen = eligible[: params.active_witnesses]
    if not chosen:
        return None
    return WitnessSet.of(WitnessInfo(c.name, c.pubkey, c.votes) for c in chosen)


# -- Shapley-value rewards -----------------------------------------------------------------------


def shapley_confirmation_game(weights: Mapping[str, int], quota: int) -> dict[str, Fraction]:
    """Exact Shapley values of the interval's *confirmation game*.

    Players are the witnesses of a maintenance interval; ``weights[i]`` is witness i's contribution
    (blocks it produced times its credit). A coalition S is worth the weight of its blocks if it could make
    them irreversible by itself, that is if it holds at least ``quota`` (> 2/3 of the active set) witnesses
    that produced in the interval; otherwise nothing::

        v(S) = W(S) * [ |{i in S : w_i > 0}| >= quota ]

    A witness with zero weight never changes any coalition's value (a null player) and gets 0. Over the m
    producers, in a random order player i joins after k-1 others; its marginal value is w_i when
    k >= quota, plus the others' weight W(pred) when k == quota (it completes the quorum). With
    E[W(pred) | k] = (k-1)/(m-1) * (W - w_i):

        phi_i = w_i * (m - quota + 1) / m  +  (quota - 1) / (m * (m - 1)) * (W - w_i)

    which sums to W = v(everyone) (efficiency) and treats equal weights equally (symmetry). Above a bare
    quorum (m > quota) more weight earns more; with exactly a quorum of producers each of them is
    indispensable and they share equally, whatever they produced.
    :func:`shapley_by_subsets` computes the same from the definition, for tests. If fewer than ``quota``
    witnesses produced, no coalition finalises anything and every value is 0.
    """
    if quota <= 0:
        raise ValueError("quota must be positive")
    out = {name: Fraction(0) for name in weights}
    producers = [name for name, w in weights.items() if w > 0]
    m = len(producers)
    if m < quota:
        return out
    total = sum(weights[p] for p in producers)
    if m == 1:
        out[producers[0]] = Fraction(total)
        return out
    for p in producers:
        w = weights[p]
        out[p] = Fraction(w * (m - quota + 1), m) + Fraction((quota - 1) * (total - w), m * (m - 1))
    return out


def shapley_by_subsets(players: Sequence[str],
                       value: Callable[[frozenset[str]], int | Fraction]) -> dict[str, Fraction]:
    """Shapley values from the definition: sum over coalitions S not holding i of
    ``|S|! (n-|S|-1)! / n! * (v(S + i) - v(S))``. Exponential in ``len(players)``: a reference for tests."""
    n = len(players)
    n_fact = factorial(n)
    cache: dict[frozenset[str], Fraction] = {}

    def v(s: frozenset[str]) -> Fraction:
        r = cache.get(s)
        if r is None:
            r = cache[s] = Fraction(value(s))
        return r

    out: dict[str, Fraction] = {}
    for i in players:
        others = [p for p in players if p != i]
        total = Fraction(0)
        for size in range(n):
            weight = Fraction(factorial(size) * factorial(n - size - 1), n_fact)
            for combo in itertools.combinations(others, size):
                s = frozenset(combo)
                total += weight * (v(s | {i}) - v(s))
        out[i] = total
    return out


def split_largest_remainder(total: int, shares: Mapping[str, Fraction]) -> dict[str, int]:
    """Split the integer ``total`` in proportion to ``shares`` so the parts sum to exactly ``total``.

    Each gets the floor of its exact part; the units left over go one each to the largest remainders
    (ties to the smaller name). If every share is 0, nobody gets anything and the parts sum to 0.
    """
    if total < 0:
        raise ValueError("total must not be negative")
    s = sum(shares.values(), Fraction(0))
    if s <= 0:
        return {name: 0 for name in shares}
    parts: dict[str, int] = {}
    remainders: list[tuple[Fraction, str]] = []
    for name, share in shares.items():
        exact = total * share / s
        floor = exact.numerator // exact.denominator
        parts[name] = floor
        remainders.append((exact - floor, name))
    left = total - sum(parts.values())
    remainders.sort(key=lambda r: (-r[0], r[1]))
    for _, name in remainders[:left]:
        parts[name] += 1
    return parts


def shapley_rewards(produced: Mapping[str, int], credit: Mapping[str, int], active_n: int,
                    pool: int) -> dict[str, int]:
    """Split ``pool`` among the interval's witnesses by their Shapley values in the confirmation game.

    Weights are ``produced[i] * credit[i]``; the quota is more than 2/3 of the active set's size
    ``active_n``. Returns integer rewards summing to ``pool`` (or to 0 if no quorum produced).
    """
    weights = {name: produced[name] * credit.get(name, 0) for name in produced}
    values = shapley_confirmation_game(weights, confirmations_needed(active_n))
    return split_largest_remainder(pool, values)


def proportional_rewards(produced: Mapping[str, int], pool: int) -> dict[str, int]:
    """Split ``pool`` in proportion to blocks produced (plain DPoS's per-block pay), largest remainder; the
    baseline docs/research.md#seed-003's Shapley split is compared with. Sums to ``pool`` (0 if nobody produced)."""
    return split_largest_remainder(pool, {name: Fraction(n) for name, n in produced.items()})
