"""Pure consensus rules: schedule, missed slots, LIB, set promotion, election, credit, Shapley rewards."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from chains.dpos.consensus import (
    Candidate,
    FinalityTracker,
    confirmations_needed,
    credit_after,
    elect,
    interval_of,
    irreversible_height,
    is_boundary,
    missed_slots,
    round_order,
    schedule,
    shapley_by_subsets,
    shapley_confirmation_game,
    shapley_rewards,
    split_largest_remainder,
)
from chains.dpos.testing import test_signer
from chains.dpos.types import DposParams, WitnessInfo, WitnessSet
from protocol.errors import HeaderError


def wset(n: int, label: str = "cons", offset: int = 0) -> WitnessSet:
    return WitnessSet.of(WitnessInfo(f"w{i:02d}", test_signer(label, i).pubkey, 100 + i)
                         for i in range(offset, offset + n))


PARAMS = DposParams(genesis_time_ms=1_000_000, maintenance_interval_blocks=10, active_witnesses=3)

# -- schedule --------------------------------------------------------------------------------------


def test_schedule_is_a_deterministic_permutation_per_round() -> None:
    s = wset(21)
    g = 1000
    orders = set()
    for r in range(30):
        slots = range(g + r * 21, g + (r + 1) * 21)
        producers = [schedule(s, slot, g) for slot in slots if slot > g]
        if r > 0:
            assert sorted(producers) == sorted(s.names), "every witness exactly once a round"
        assert producers == [schedule(s, slot, g) for slot in slots if slot > g]
        orders.add(round_order(s, r))
    assert len(orders) > 25, "rounds are reshuffled"


def test_schedule_known_answer() -> None:
    # pinned so that another implementation (or a refactor) of the shuffle is caught if it diverges
    s = wset(5, label="kat")
    assert round_order(s, 0) == round_order(s, 0)
    got = [schedule(s, slot, 100) for slot in range(101, 111)]
    assert got == KAT_SCHEDULE, got


KAT_SCHEDULE = ["w02", "w00", "w01", "w04", "w01", "w03", "w04", "w02", "w00", "w03"]


def test_schedule_depends_on_the_set_hash() -> None:
    a = wset(7)
    b = WitnessSet.of([*a.members[:-1], WitnessInfo(a.members[-1].name, a.members[-1].pubkey, 1)])
    assert a.names == b.names and a.hash != b.hash
    assert [round_order(a, r) for r in range(5)] != [round_order(b, r) for r in range(5)]


def test_schedule_rejects_slots_at_or_before_genesis() -> None:
    with pytest.raises(HeaderError):
        schedule(wset(3), 100, 100)


@pytest.mark.parametrize("after,before", [(100, 101), (100, 102), (100, 107), (103, 190), (101, 1000), (99, 5000)])
def test_missed_slots_matches_counting_slot_by_slot(after: int, before: int) -> None:
    s = wset(5)
    g = 99
    expected: dict[str, int] = {}
    for slot in range(after + 1, before):
        name = schedule(s, slot, g)
        expected[name] = expected.get(name, 0) + 1
    assert missed_slots(s, after, before, g) == expected


# -- LIB -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 22))
def test_lib_needs_strictly_more_than_two_thirds(n: int) -> None:
    rng = random.Random(n)
    for _ in range(50):
        lp = [rng.randrange(0, 40) for _ in range(n)]
        lib = irreversible_height(lp, n)
        assert 3 * sum(1 for h in lp if h >= lib) > 2 * n, "more than 2/3 confirm the LIB"
        assert not any(3 * sum(1 for h in lp if h >= x) > 2 * n for x in range(lib + 1, 41)), "LIB is maximal"
    assert confirmations_needed(n) == next(c for c in range(n + 1) if 3 * c > 2 * n)


def test_lib_exactly_two_thirds_is_not_enough() -> None:
    # 6 witnesses: 4 at height 10 is exactly 2/3, not more
    assert irreversible_height([10, 10, 10, 10, 0, 0], 6) == 0
    assert irreversible_height([10, 10, 10, 10, 10, 0], 6) == 10
    assert irreversible_height([9, 10, 10, 0], 4) == 9


def test_tracker_promotes_when_boundary_becomes_irreversible() -> None:
    old = wset(4)
    new = wset(4, offset=2)  # w02, w03 stay; w04, w05 join
    t = FinalityTracker(old)
    order = list(old.names)
    promoted = t.on_block(10, order[0], new.members)
    assert promoted is None and t.proposals and t.active == old
    assert t.on_block(11, order[1], None) is None
    assert t.lib == 0
    promoted = t.on_block(12, order[2], None)  # 3 of 4 witnesses at >= 10: heights 10,11,12 -> LIB 10
    assert t.lib == 10 and promoted == new and t.active == new and not t.proposals
    assert t.last_produced == {"w02": 12, "w03": 0, "w04": 10, "w05": 10}, "stayers keep, joiners start at LIB"
    assert FinalityTracker.from_json(t.to_json()).to_json() == t.to_json()


def test_tracker_latest_proposal_wins_and_lib_never_goes_back() -> None:
    old = wset(3)
    a, b = wset(3, offset=3), wset(3, offset=6)
    t = FinalityTracker(old)
    t.on_block(5, "w00", a.members)
    t.on_block(10, "w00", b.members)
    t.on_block(11, "w01", None)
    assert t.lib == 0 and t.active == old and len(t.proposals) == 2
    promoted = t.on_block(12, "w02", None)  # heights 10, 11, 12: LIB 10 covers both proposals
    assert t.lib == 10 and promoted == b and t.active == b and not t.proposals
    assert t.on_block(13, "w06", None) is None
    assert t.lib == 10, "joiners start at the LIB, so it holds until they produce"


# -- intervals, credit, election -------------------------------------------------------------------


def test_boundaries_and_intervals() -> None:
    assert [h for h in range(0, 31) if is_boundary(h, PARAMS)] == [10, 20, 30]
    assert [interval_of(h, PARAMS) for h in (1, 10, 11, 20, 21)] == [0, 0, 1, 1, 2]


def test_credit_rewards_punishments_and_clamp() -> None:
    p = PARAMS
    assert credit_after(5000, p, produced=1) == 5000 + p.credit_produced_reward
    assert credit_after(5000, p, missed=1) == 5000 - p.credit_missed_penalty
    assert p.credit_missed_penalty > p.credit_produced_reward and p.credit_bad_block_penalty > p.credit_missed_penalty
    assert credit_after(5000, p, bad=1) == 5000 - p.credit_bad_block_penalty
    assert credit_after(10, p, missed=5) == 0
    assert credit_after(p.credit_max, p, produced=3) == p.credit_max


def _cand(name: str, votes: int, credit: int = 5000, jailed: bool = False, i: int = 0) -> Candidate:
    return Candidate(name, test_signer("elect", i).pubkey, votes, credit, jailed)


def test_election_weighs_votes_by_credit_and_skips_jailed() -> None:
    cands = [_cand("aa", 1000, 5000, i=1), _cand("bb", 900, 9000, i=2), _cand("cc", 1200, 3500, i=3),
             _cand("dd", 5000, 9000, jailed=True, i=4), _cand("ee", 9000, 2999, i=5), _cand("ff", 0, 9000, i=6),
             _cand("gg", 800, 5000, i=7)]
    got = elect(cands, PARAMS)
    assert got is not None
    # scores: bb 8.1M, aa 5M, cc 4.2M, gg 4M; dd jailed, ee under the credit threshold, ff has no votes
    assert got.names == ("aa", "bb", "cc")
    assert {w.name: w.votes for w in got.members} == {"aa": 1000, "bb": 900, "cc": 1200}
    # ties go to the smaller name
    tie = elect([_cand("zz", 10, i=1), _cand("yy", 10, i=2), _cand("xx", 10, i=3), _cand("ww", 10, i=4)], PARAMS)
    assert tie is not None and tie.names == ("ww", "xx", "yy")
    assert elect([_cand("aa", 10, jailed=True)], PARAMS) is None


# -- Shapley ---------------------------------------------------------------------------------------


def _game(weights: dict[str, int], quota: int):  # type: ignore[no-untyped-def]
    def v(s: frozenset[str]) -> int:
        producers = sum(1 for p in s if weights[p] > 0)
        return sum(weights[p] for p in s) if producers >= quota else 0
    return v


@pytest.mark.parametrize("seed", range(12))
def test_closed_form_equals_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(1, 8)
    weights = {f"p{i}": rng.choice([0, 0, 1, 3, 7, 10, 25]) for i in range(n)}
    quota = rng.randrange(1, n + 1)
    assert shapley_confirmation_game(weights, quota) == shapley_by_subsets(list(weights), _game(weights, quota))


def test_shapley_efficiency_symmetry_null_player() -> None:
    weights = {"a": 30, "b": 30, "c": 12, "d": 0, "e": 5, "f": 9, "g": 7, "h": 8}
    quota = confirmations_needed(8)  # 6 of the 7 producers
    phi = shapley_confirmation_game(weights, quota)
    assert sum(phi.values()) == sum(weights.values()), "efficiency: the grand coalition's value is shared out"
    assert phi["a"] == phi["b"], "symmetry"
    assert phi["d"] == 0, "null player"
    assert phi["a"] > phi["c"] > phi["f"] > phi["e"] > 0, "more weight, more value, above a bare quorum"
    # with a bare quorum of producers every one of them is indispensable: equal shares
    bare = shapley_confirmation_game({"a": 30, "b": 1, "c": 5, "d": 0}, 3)
    assert bare == {"a": 12, "b": 12, "c": 12, "d": 0}
    # a witness that did not produce is not pivotal: no quorum without it -> nobody is paid
    assert all(v == 0 for v in shapley_confirmation_game({"a": 1, "b": 1, "c": 0}, 3).values())


def test_largest_remainder_split_is_exact() -> None:
    shares = {"a": Fraction(1, 3), "b": Fraction(1, 3), "c": Fraction(1, 3)}
    assert split_largest_remainder(100, shares) == {"a": 34, "b": 33, "c": 33}
    assert split_largest_remainder(0, shares) == {"a": 0, "b": 0, "c": 0}
    assert split_largest_remainder(7, {"a": Fraction(0), "b": Fraction(0)}) == {"a": 0, "b": 0}
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randrange(1, 22)
        shares = {f"w{i}": Fraction(rng.randrange(0, 1000), rng.randrange(1, 50)) for i in range(n)}
        total = rng.randrange(0, 10**6)
        parts = split_largest_remainder(total, shares)
        if sum(shares.values()) > 0:
            assert sum(parts.values()) == total
            s = sum(shares.values())
            assert all(abs(parts[k] - total * shares[k] / s) < 1 for k in shares), "within one unit of exact"


def test_shapley_rewards_sum_to_pool() -> None:
    produced = {f"w{i:02d}": 4 + (i % 3) for i in range(21)}
    produced["w20"] = 0
    credit = {name: 4000 + 100 * i for i, name in enumerate(produced)}
    rewards = shapley_rewards(produced, credit, 21, 10_007)
    assert sum(rewards.values()) == 10_007
    assert rewards["w20"] == 0
    # more blocks at the same credit, more reward
    assert rewards["w02"] > rewards["w01"] > rewards["w00"] or credit["w02"] > credit["w00"]
