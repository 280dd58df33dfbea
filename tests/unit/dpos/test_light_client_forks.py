"""DPoS light client over forks: a tree of pending headers, longest-branch fork choice, per-branch state.

Most tests start from one set-up: a 4-witness chain built to height 8 (LIB 6), then a partition. Witness
``w00`` alone builds the minority branch ``m``; the other three build the majority branch ``j``, whose LIB
reaches the fork point after 2 blocks and passes it after 3. The branches share no producer, so no witness
signs two headers at one height.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import chains.dpos.light_client as lc
from chains.dpos.light_client import (
    DposLightClient,
    EquivocationError,
    HeaderReplayError,
    PendingLimitError,
    UnknownParentError,
)
from chains.dpos.testing import ChainBuilder, forge
from chains.dpos.types import DposHeader, WitnessInfo, WitnessSet
from protocol.errors import HeaderError, ProtocolError, ReplayError
from protocol.light_client import ClientStatus

FORK_AT = 8
LONER = "w00"


def feed(client: DposLightClient, headers: list[DposHeader]) -> None:
    for h in headers:
        client.process_header(h, h.timestamp_ms)


def partition(b: ChainBuilder, at: int, producers: list[str], n: int, *, label: str,
              propose: Callable[[int, WitnessSet], tuple[WitnessInfo, ...] | None] | None = None) -> ChainBuilder:
    """A branch of ``n`` headers on top of ``b``'s header ``at`` that only ``producers`` build."""
    branch = b.fork(at, label=label)
    branch.extend(n, offline=[w for w in b.signers if w not in producers], propose=propose)
    return branch


@dataclass
class Partition:
    base: ChainBuilder
    m: ChainBuilder
    """Minority branch: ``LONER`` only."""
    j: ChainBuilder
    """Majority branch: every other witness."""

    def branch(self, name: str) -> list[DposHeader]:
        """The headers above the fork point of branch ``m`` or ``j``."""
        return (self.m if name == "m" else self.j).headers[FORK_AT + 1 :]

    def client(self, **kwargs: int) -> DposLightClient:
        client = self.base.client(**kwargs)
        feed(client, self.base.headers[1:])
        return client


@pytest.fixture(scope="module")
def part() -> Partition:
    b = ChainBuilder(4, label="forks")
    b.extend(FORK_AT)
    others = [w for w in b.tracker.active.names if w != LONER]
    return Partition(b, partition(b, FORK_AT, [LONER], 3, label="m"), partition(b, FORK_AT, others, 9, label="j"))


def fingerprint(client: DposLightClient) -> tuple[object, ...]:
    """Everything fork choice and finality decide, for comparing clients."""
    return (client.latest_header.hash(), client.final_height, client.lib, client.active_set.hash,
            tuple(client.final_consensus_state(h) for h in client.final_heights()), client.pending_count,
            tuple((h, s.hash) for h, s in client.pending_proposals))


# -- fork choice: the longest branch wins, finality follows it, losers are pruned ---------------------


@dataclass(frozen=True)
class ForkCase:
    name: str
    steps: list[tuple[str, int, str]]
    """(branch fed, how many of its next headers, canonical branch expected after each of them)."""


FORK_CASES = [
    ForkCase("first-seen branch loses", [("m", 2, "m"), ("j", 1, "m"), ("j", 1, "m"), ("j", 7, "j")]),
    ForkCase("interleaved, each tie kept by the first seen", [("m", 1, "m"), ("j", 1, "m"), ("j", 1, "j"),
                                                               ("m", 1, "j"), ("j", 7, "j")]),
    ForkCase("winner seen first, loser never canonical", [("j", 2, "j"), ("m", 2, "j"), ("j", 7, "j")]),
]


@pytest.mark.parametrize("case", FORK_CASES, ids=[c.name for c in FORK_CASES])
def test_longest_branch_wins_and_is_finalised(part: Partition, case: ForkCase) -> None:
    client = part.client()
    fed = {"m": 0, "j": 0}
    for name, count, canonical in case.steps:
        for _ in range(count):
            h = part.branch(name)[fed[name]]
            client.process_header(h, h.timestamp_ms)
            fed[name] += 1
            tip = part.branch(canonical)[fed[canonical] - 1]
            assert client.latest_header == tip, f"after {name}{fed[name]} the canonical tip is {canonical}'s"
            assert client.latest_height == tip.height
            # finality is the canonical branch's LIB, never another branch's
            assert client.final_height == max(6, (part.m if canonical == "m" else part.j).trackers[tip.height].lib)
    # the majority branch is final past the fork point, and nothing of the minority is held any more
    assert client.final_height == part.j.trackers[part.j.tip.height].lib > FORK_AT + 2
    for h in range(FORK_AT + 1, client.final_height + 1):
        assert client.final_consensus_state(h).header_hash == part.j.headers[h].hash()
    assert not any(client.holds(h) for h in part.branch("m")), "orphaned headers are pruned once final passes them"
    assert client.pending_count == len(client.pending_heights()) == part.j.tip.height - client.final_height
    with pytest.raises(HeaderError):  # the minority branch does not contain the final tip: refused
        client.process_header(part.branch("m")[2], part.m.tip.timestamp_ms)
    assert client.status(part.j.tip.timestamp_ms) is ClientStatus.ACTIVE


def test_orphans_are_kept_until_finality_passes_them(part: Partition) -> None:
    client = part.client()
    feed(client, part.branch("m")[:2])
    feed(client, part.branch("j")[:2])  # a tie: m stays canonical; j's LIB (8) is not followed
    assert client.final_height == 7 and client.pending_count == 1 + 2 + 2  # 8, then two per branch
    client.process_header(part.branch("j")[2], part.branch("j")[2].timestamp_ms)  # j longer: its LIB is 9
    assert client.final_height == 9 and client.pending_count == 2
    assert client.final_consensus_state(FORK_AT + 1).header_hash == part.branch("j")[0].hash()
    assert all(client.holds(h) for h in part.branch("j")[:3]) and not any(client.holds(h) for h in part.branch("m"))
    orphan_child = part.branch("m")[2]  # above finality, but its parent was pruned
    with pytest.raises(UnknownParentError, match="does not link") as err:
        client.process_header(orphan_child, orphan_child.timestamp_ms)
    assert err.value.code == "header.unknown_parent"


def test_unknown_parent_is_refused_and_changes_nothing(part: Partition) -> None:
    client = part.client()
    before = fingerprint(client)
    good = part.base.next_header()
    stray = forge(good, part.base.signers[good.producer], parent_hash=hashlib.sha256(b"never seen").digest())
    with pytest.raises(UnknownParentError):
        client.process_header(stray, stray.timestamp_ms)
    assert fingerprint(client) == before and client.status(stray.timestamp_ms) is ClientStatus.ACTIVE


# -- ties: deterministic for a given input order ------------------------------------------------------


@pytest.fixture(scope="module")
def late_gossip() -> tuple[ChainBuilder, ChainBuilder, ChainBuilder]:
    """Two witnesses' blocks at one height: ``a`` in slot s, and ``b`` in slot s+1 by a witness that had not
    seen ``a``; each branch then grows by one block."""
    base = ChainBuilder(4, label="late")
    base.extend(FORK_AT)
    a = base.fork(FORK_AT, label="a")
    a.extend(2)
    b = base.fork(FORK_AT, label="b")
    b.append(b.next_header(skip_slots=1, offline=[a.headers[FORK_AT + 1].producer]))
    b.extend(1, offline=[a.headers[FORK_AT + 2].producer])
    return base, a, b


@pytest.mark.parametrize("first", ["a", "b"])
def test_tie_keeps_the_first_seen_branch(late_gossip: tuple[ChainBuilder, ...], first: str) -> None:
    base, a, b = late_gossip
    branches = {"a": a, "b": b}
    second = "b" if first == "a" else "a"
    client = base.client()
    feed(client, base.headers[1:])
    for name in (first, second):
        h = branches[name].headers[FORK_AT + 1]
        client.process_header(h, h.timestamp_ms)
    assert client.latest_header == branches[first].headers[FORK_AT + 1]
    assert client.holds(branches[second].headers[FORK_AT + 1])
    nxt = branches[second].headers[FORK_AT + 2]  # the second-seen branch grows first: it is now the longest
    client.process_header(nxt, nxt.timestamp_ms)
    assert client.latest_header == nxt
    assert client.active_set == branches[second].trackers[nxt.height].active


def test_same_input_order_gives_the_same_state(late_gossip: tuple[ChainBuilder, ...]) -> None:
    base, a, b = late_gossip
    order = [*base.headers[1:], a.headers[FORK_AT + 1], b.headers[FORK_AT + 1], a.headers[FORK_AT + 2],
             b.headers[FORK_AT + 2]]
    one, two = base.client(), base.client("dpos-1")
    for h in order:
        one.process_header(h, h.timestamp_ms)
        two.process_header(h, h.timestamp_ms)
        assert fingerprint(one) == fingerprint(two)
    assert one.latest_header == a.headers[FORK_AT + 2]  # a and b tie at every height: a was seen first
    swapped = base.client("dpos-2")
    feed(swapped, [*order[:-4], order[-3], order[-4], order[-1], order[-2]])
    assert swapped.latest_header == b.headers[FORK_AT + 2]


# -- re-submission: ReplayError before any signature check ----------------------------------------------


@dataclass(frozen=True)
class ReplayCase:
    name: str
    pick: Callable[[Partition], DposHeader]


REPLAY_CASES = [
    ReplayCase("canonical tip", lambda p: p.branch("m")[1]),
    ReplayCase("canonical pending header below the tip", lambda p: p.branch("m")[0]),
    ReplayCase("pending header of a losing branch", lambda p: p.branch("j")[0]),
    ReplayCase("final tip", lambda p: p.base.headers[7]),
    ReplayCase("older final header", lambda p: p.base.headers[3]),
    ReplayCase("genesis", lambda p: p.base.headers[0]),
]


@pytest.mark.parametrize("case", REPLAY_CASES, ids=[c.name for c in REPLAY_CASES])
def test_resubmitted_header_is_a_replay(part: Partition, case: ReplayCase, monkeypatch: pytest.MonkeyPatch) -> None:
    client = part.client()
    feed(client, [*part.branch("m")[:2], part.branch("j")[0]])
    assert client.final_height == 7
    before = fingerprint(client)

    def no_work(*args: object) -> None:
        raise AssertionError("a replay must be refused before any signature check or state replay")

    monkeypatch.setattr(DposLightClient, "_check_signature", no_work)
    monkeypatch.setattr(DposLightClient, "_replay_after", no_work)
    header = case.pick(part)
    assert client.holds(header)
    with pytest.raises(ReplayError, match="already held") as err:
        client.process_header(header, part.m.tip.timestamp_ms)
    assert isinstance(err.value, HeaderReplayError) and isinstance(err.value, HeaderError)
    assert err.value.code == "packet.replay"
    assert fingerprint(client) == before and client.status(part.m.tip.timestamp_ms) is ClientStatus.ACTIVE


# -- the bound on pending headers --------------------------------------------------------------------


@dataclass(frozen=True)
class LimitCase:
    name: str
    accepted: list[tuple[str, int]]
    """(branch, how many of its headers) fed in order, all accepted."""
    rejected: tuple[str, int]
    """(branch, index of its header) then refused."""
    match: str


# on a stalled chain (two of four witnesses offline), with max_pending_headers = 6 and final height 0
LIMIT_CASES = [
    LimitCase("one branch deeper than the bound", [("x", 6)], ("x", 6), "LIB is stalled"),
    LimitCase("branches together over the bound", [("x", 3), ("y", 3)], ("y", 3), "over all branches"),
    LimitCase("a short fork when the tree is full", [("x", 6)], ("y", 0), "over all branches"),
]


@pytest.mark.parametrize("case", LIMIT_CASES, ids=[c.name for c in LIMIT_CASES])
def test_pending_tree_is_bounded(case: LimitCase) -> None:
    b = ChainBuilder(4, label="bound")
    branches = {"x": partition(b, 0, ["w00"], 8, label="x"), "y": partition(b, 0, ["w01"], 8, label="y")}
    client = b.client(max_pending_headers=6)
    for name, count in case.accepted:
        feed(client, branches[name].headers[1 : count + 1])
    before = fingerprint(client)
    name, index = case.rejected
    header = branches[name].headers[1 + index]
    with pytest.raises(PendingLimitError, match=case.match) as err:
        client.process_header(header, header.timestamp_ms)
    assert isinstance(err.value, HeaderError) and err.value.code == "header.pending_limit"
    assert fingerprint(client) == before and client.pending_count <= 6
    assert client.status(header.timestamp_ms) is ClientStatus.ACTIVE


def test_a_full_tree_drops_a_leaf_off_the_canonical_branch_for_a_new_header() -> None:
    """The tree is full (six pending) with a one-header fork x and a branch y of five; y's sixth header gets in by
    dropping x's leaf (off the canonical branch, of the producer holding most), not by waiting for finality."""
    b = ChainBuilder(4, label="bound")
    branches = {"x": partition(b, 0, ["w00"], 8, label="x"), "y": partition(b, 0, ["w01"], 8, label="y")}
    client = b.client(max_pending_headers=6)
    feed(client, branches["x"].headers[1:2])
    feed(client, branches["y"].headers[1:6])
    assert client.pending_count == 6
    header = branches["y"].headers[6]
    client.process_header(header, header.timestamp_ms)
    assert client.pending_count == 6 and not client.holds(branches["x"].headers[1])
    assert client.latest_header == header
    restored = DposLightClient.from_state(client.client_id, client.to_state())
    assert restored.to_state() == client.to_state()


def test_one_witness_flooding_forks_cannot_lock_out_the_canonical_chain() -> None:
    """A witness signs many headers at its own slots (double-signing, forks) until the tree is full: the next header
    of the canonical chain still gets in (the flooder's leaves go first), and the evidence is recorded."""
    b = ChainBuilder(4, label="flood")
    b.extend(6)
    client = b.client(max_pending_headers=16)
    feed(client, b.headers[1:4])
    parent = b.headers[3]
    flooder = b.headers[4].producer
    twins = [forge(b.headers[4], b.signers[flooder], tx_root=hashlib.sha256(b"flood %d" % i).digest())
             for i in range(40)]
    held = 0
    for twin in twins:
        try:
            client.process_header(twin, twin.timestamp_ms)
            held += 1
        except PendingLimitError:
            break
    assert held == 40 and client.pending_count <= 16  # every twin got in by displacing an earlier twin
    assert [e.witness for e in client.evidence()] == [flooder]
    feed(client, b.headers[4:7])
    assert client.holds(b.headers[6]) and client.status(b.headers[6].timestamp_ms) is ClientStatus.ACTIVE
    assert parent.hash() == b.headers[4].parent_hash
    print(f"dpos client state after the flood: {len(client.to_state())} bytes, {client.pending_count} pending")


# -- witness-set promotion follows the canonical branch ----------------------------------------------


def _rotate_other(b: ChainBuilder) -> Callable[[int, WitnessSet], tuple[WitnessInfo, ...] | None]:
    """A proposal policy electing a different set than ``b.rotate`` at the same boundary."""
    return lambda height, active: b.rotate(height + 2 * b.params.maintenance_interval_blocks, active)


@dataclass(frozen=True)
class PromotionCase:
    name: str
    loser_proposes: bool
    winner_policy: str | None
    """``rotate``, ``other`` (a different set) or None (no proposal)."""


PROMOTION_CASES = [
    PromotionCase("proposed on the losing branch only", loser_proposes=True, winner_policy=None),
    PromotionCase("proposed on the winning branch only", loser_proposes=False, winner_policy="rotate"),
    PromotionCase("different sets proposed on each branch", loser_proposes=True, winner_policy="other"),
]


@pytest.mark.parametrize("case", PROMOTION_CASES, ids=[c.name for c in PROMOTION_CASES])
def test_promotion_follows_the_canonical_branch(case: PromotionCase) -> None:
    # 7 witnesses, boundary every 10 blocks: the fork point is 9, so each branch's first block is a boundary
    b = ChainBuilder(7, n_standby=3, label="promote-forks", maintenance_interval_blocks=10)
    b.extend(9)
    genesis_set = b.tracker.active
    loser = partition(b, 9, ["w00"], 2, label="loser", propose=b.rotate if case.loser_proposes else None)
    policy = {None: None, "rotate": b.rotate, "other": _rotate_other(b)}[case.winner_policy]
    winner = partition(b, 9, [w for w in genesis_set.names if w != "w00"], 12, label="winner", propose=policy)
    client = b.client()
    feed(client, b.headers[1:])
    feed(client, loser.headers[10:])  # seen first: canonical until the winner is longer
    assert client.pending_proposals == loser.tracker.proposals
    assert ([h for h, _ in client.pending_proposals] == [10]) is case.loser_proposes
    feed(client, winner.headers[10:])
    assert client.latest_header == winner.tip and client.final_height >= 10
    assert client.pending_proposals == winner.tracker.proposals
    assert client.active_set == winner.tracker.active
    assert (client.active_set != genesis_set) is (case.winner_policy is not None)
    if case.loser_proposes:
        assert client.active_set != loser.trackers[10].proposals[0][1], "the losing branch's set never comes into force"


def test_set_promoted_on_a_losing_branch_stays_on_that_branch() -> None:
    """Branch B (two witnesses, LIB stalled below the fork point) is seen first and is long; branch A (five
    witnesses) proposes a set at its boundary and makes it irreversible *on A* while still shorter than B.
    A's headers are checked against A's promoted set, B's against B's; the client reports B's until A wins."""
    b = ChainBuilder(7, n_standby=3, label="promote-losing", maintenance_interval_blocks=10)
    b.extend(9)
    genesis_set = b.tracker.active
    long_b = partition(b, 9, ["w00", "w01"], 20, label="b")
    a = partition(b, 9, [w for w in b.signers if w not in ("w00", "w01")], 25, label="a", propose=b.rotate)
    promoted_at = next(h for h in range(10, 35) if a.trackers[h].active != genesis_set)
    assert promoted_at < long_b.tip.height, "the set is promoted on A while A is the shorter branch"
    client = b.client()
    feed(client, b.headers[1:])
    feed(client, long_b.headers[10:])
    final_before = client.final_height
    assert final_before < 9
    for h in a.headers[10:]:
        client.process_header(h, h.timestamp_ms)
        if h.height <= long_b.tip.height:
            assert client.latest_header == long_b.tip and client.active_set == genesis_set
            assert client.final_height == final_before, "a shorter branch's LIB finalises nothing"
    # A's headers after its promotion named the new set, and were accepted: state is per branch
    assert a.headers[promoted_at + 1].active_set_hash == a.trackers[promoted_at].active.hash != genesis_set.hash
    assert client.latest_header == a.tip and client.active_set == a.tracker.active != genesis_set
    assert client.final_height == a.tracker.lib and not any(client.holds(h) for h in long_b.headers[10:])


def test_canonical_branch_refuses_a_set_promoted_only_on_another_branch() -> None:
    b = ChainBuilder(7, n_standby=3, label="promote-losing", maintenance_interval_blocks=10)
    b.extend(9)
    long_b = partition(b, 9, ["w00", "w01"], 20, label="b")
    a = partition(b, 9, [w for w in b.signers if w not in ("w00", "w01")], 10, label="a", propose=b.rotate)
    client = b.client()
    feed(client, [*b.headers[1:], *long_b.headers[10:], *a.headers[10:]])
    new_set = a.tracker.active
    assert client.latest_header == long_b.tip and client.active_set != new_set
    nxt = long_b.next_header(offline=[w for w in b.signers if w not in ("w00", "w01")])
    with pytest.raises(HeaderError, match="stale or unknown witness set"):
        client.process_header(forge(nxt, b.signers[nxt.producer], active_set_hash=new_set.hash), nxt.timestamp_ms)
    client.process_header(nxt, nxt.timestamp_ms)


# -- per-branch state from snapshots -------------------------------------------------------------------


@pytest.fixture(scope="module")
def stalled_main() -> tuple[ChainBuilder, ChainBuilder, list[str]]:
    """7 witnesses, a boundary every 5 blocks, sets rotating: everyone produces up to 22 (LIB 13), then only 4 of
    them (the LIB stalls at 17), so a pending set promotion (at 23) and many proposals lie above finality.
    Returns (prefix, main branch, the witnesses that stopped producing)."""
    b = ChainBuilder(7, n_standby=3, label="snapshots", maintenance_interval_blocks=5)
    b.extend(22, propose=b.rotate)
    stalled = list(b.tracker.active.names)[:3]
    main = partition(b, 22, [w for w in b.tracker.active.names if w not in stalled], 30, label="main",
                     propose=b.rotate)
    return b, main, stalled


@pytest.mark.parametrize("at", [20, 23, 30, 44])
@pytest.mark.parametrize("snapshot_every", [1, 3, 64, 10**9])
def test_branch_state_does_not_depend_on_where_snapshots_are(stalled_main: tuple[ChainBuilder, ChainBuilder,
                                                                                 list[str]],
                                                             snapshot_every: int, at: int,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork off a pending header deep in a stalled chain: its branch's state is replayed from the nearest
    snapshot (through a set promotion for ``at >= 23``) and must equal the generator's, whatever the spacing."""
    monkeypatch.setattr(lc, "SNAPSHOT_EVERY", snapshot_every)
    b, main, stalled = stalled_main
    client = b.client()
    feed(client, [*b.headers[1:], *main.headers[23:]])
    assert client.final_height == 17 and client.latest_header == main.tip
    assert main.trackers[23].active != main.trackers[17].active, "a promotion lies above finality"
    fork = partition(main, at, stalled, main.tip.height - at + 1, label=f"fork@{at}", propose=b.rotate)
    for h in fork.headers[at + 1 :]:
        client.process_header(h, h.timestamp_ms)  # each is checked against the replayed state of its branch
    assert client.latest_header == fork.tip
    t = fork.tracker
    assert (client.active_set, client.lib, client.pending_proposals) == (t.active, t.lib, t.proposals)
    assert client.final_height == max(17, t.lib)


# -- misbehaviour across branches -------------------------------------------------------------------------


def _next_by(b: ChainBuilder, producer: str) -> DposHeader:
    """``b``'s next header in the first slot ``producer`` is scheduled for."""
    return b.next_header(offline=[w for w in b.tracker.active.names if w != producer])


@dataclass(frozen=True)
class ConflictCase:
    name: str
    make: Callable[[ChainBuilder, ChainBuilder, DposLightClient], DposHeader]
    error: type[ProtocolError] | None
    """``None``: the header is held (a fork header)."""
    match: str
    recorded: bool
    """Double-sign evidence against its witness is recorded. The client never freezes: one witness is not finality."""


def _same_witness_other_branch(base: ChainBuilder, a: ChainBuilder, client: DposLightClient) -> DposHeader:
    """Witness w built block 9 on block 8; on a branch forked at 7 (a block 8' by another witness), w also builds
    a block 9': one witness, one height, two parents. Both link to held headers."""
    w = a.headers[FORK_AT + 1].producer
    q = base.fork(FORK_AT - 1, label="q")
    busy = {w, base.headers[FORK_AT].producer}  # neither may sign a second block at 8
    q.append(_next_by(q, next(x for x in q.tracker.active.names if x not in busy)))
    client.process_header(q.tip, q.tip.timestamp_ms)
    header = _next_by(q, w)
    assert header.height == FORK_AT + 1 and header.parent_hash != a.headers[FORK_AT + 1].parent_hash
    return header


CONFLICT_CASES = [
    ConflictCase("same witness, same height, another branch", _same_witness_other_branch, None, "", recorded=True),
    ConflictCase("same witness, same height and parent (pending)",
                 lambda base, a, c: forge(a.headers[FORK_AT + 1], a.signers[a.headers[FORK_AT + 1].producer],
                                          tx_root=b"\x0d" * 32),
                 None, "", recorded=True),
    ConflictCase("same witness as a final header, off the tree",
                 lambda base, a, c: forge(base.headers[5], base.signers[base.headers[5].producer],
                                          tx_root=b"\x0d" * 32),
                 EquivocationError, r"two headers at height 5 \(final\)", recorded=False),
    ConflictCase("another witness below finality",
                 lambda base, a, c: forge(base.headers[5], base.signers[base.headers[6].producer],
                                          producer=base.headers[6].producer, slot=base.headers[6].slot,
                                          timestamp_ms=base.headers[6].timestamp_ms),
                 HeaderError, "fork block", recorded=False),
]


@pytest.mark.parametrize("case", CONFLICT_CASES, ids=[c.name for c in CONFLICT_CASES])
def test_conflicts_across_branches(late_gossip: tuple[ChainBuilder, ...], case: ConflictCase) -> None:
    base, a, _ = late_gossip
    client = base.client()
    feed(client, [*base.headers[1:], a.headers[FORK_AT + 1]])
    assert 5 < client.final_height < FORK_AT
    header = case.make(base, a, client)
    if case.error is None:
        client.process_header(header, header.timestamp_ms)
        assert client.holds(header)
    else:
        with pytest.raises(case.error, match=case.match):
            client.process_header(header, header.timestamp_ms)
    now = header.timestamp_ms
    assert client.status(now) is ClientStatus.ACTIVE
    assert [e.witness for e in client.evidence()] == ([header.producer] if case.recorded else [])


def test_fork_block_of_another_witness_above_finality_is_held(late_gossip: tuple[ChainBuilder, ...]) -> None:
    base, a, b = late_gossip
    client = base.client()
    feed(client, [*base.headers[1:], a.headers[FORK_AT + 1], b.headers[FORK_AT + 1]])
    assert client.holds(a.headers[FORK_AT + 1]) and client.holds(b.headers[FORK_AT + 1])
    assert client.status(b.tip.timestamp_ms) is ClientStatus.ACTIVE
    assert client.pending_count == len(client.pending_heights()) + 1  # the canonical branch, and one fork block
