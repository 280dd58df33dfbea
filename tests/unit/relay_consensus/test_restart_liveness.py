"""Liveness across crashes, restarts and pauses with block sync running beside consensus (the soak's stall).

The 30-minute chaos soak (seed 15) stopped the relay chain for good: a validator restarted from its sign state
while the others were ahead; block sync took its node past the height its consensus core was at; a timeout then
moved the core to a height the node had already passed and ``make_block`` failed inside the timer callback,
leaving the core in a round with no timer; and catch-up moved the core one height per resend tick, slower than
the chain grew, so the restarted validator never voted again. With one more validator down the chain stopped.
"""

from __future__ import annotations

import random

import pytest

from protocol.certificate import RelayCommit
from protocol.errors import ProtocolError
from relay.chain.consensus import Decided, SignState, Timeout, TimeoutKind
from tests.unit.relay_consensus.harness import (
    PRECOMMIT,
    PREVOTE,
    make_node,
    sent_votes,
    signed_commit,
    timeouts,
    votes,
)
from tests.unit.relay_consensus.sim import NetConfig, Sim, SimApp

SYNC = NetConfig(sync_ms=150, gossip_ms=500)


def _chain(app: SimApp, upto: int) -> None:
    """Apply toy blocks to ``app`` up to height ``upto`` with valid commits (as block sync would)."""
    while app.height < upto:
        block = app.make_block(app.height + 1, 0)
        assert block is not None
        app.apply(block[0], signed_commit(block, [0, 1, 2]))


def test_commit_timeout_for_a_height_block_sync_passed_does_not_crash() -> None:
    # validator 2 proposes height 2 round 0; its node's block sync applies heights 1..3 while the core is at 1
    node = make_node(2)
    other = SimApp("other", node.app.sets)
    _chain(other, 3)
    node.commit(other.blocks[0], other.commits[0])  # height 1 decided from a commit; COMMIT timeout pending
    for h in (2, 3):
        node.app.apply(other.blocks[h - 1], other.commits[h - 1])
    out = node.timeout(TimeoutKind.COMMIT, round_=0, height=1)  # the soak's crash: make_block(2) on head 3
    assert node.core.height == 2 and not [o for o in out if isinstance(o, Decided)]
    assert node.app.refused_heights == [2]
    # the host's catch-up then takes the core straight to the head, one call, no commit pauses between
    out = node.core.catch_up(node.app.height, lambda h: (node.app.blocks[h - 1], node.app.commits[h - 1]))
    assert node.core.height == 3 and [d.height for d in out if isinstance(d, Decided)] == [2, 3]


@pytest.mark.parametrize("kind", list(TimeoutKind))
def test_timeouts_for_stale_and_future_heights_are_ignored(kind: TimeoutKind) -> None:
    node = make_node(1)
    for height, round_ in ((0, 0), (2, 0), (7, 3), (1, 5)):
        assert node.core.on_timeout(Timeout(kind, height, round_)) == []
    assert node.core.height == 1 and node.core.round == 0


def test_catch_up_moves_many_heights_at_once_and_signs_nothing_on_the_way() -> None:
    node = make_node(0)
    other = SimApp("other", node.app.sets)
    _chain(other, 12)
    for h in range(1, 13):
        node.app.apply(other.blocks[h - 1], other.commits[h - 1])
    out = node.core.catch_up(12, lambda h: (node.app.blocks[h - 1], node.app.commits[h - 1]))
    assert [d.height for d in out if isinstance(d, Decided)] == list(range(1, 13))
    assert node.core.height == 12  # decided, in COMMIT until its timeout: then height 13
    assert node.core.sign_state.height == 0  # no vote, no proposal while catching up
    node.timeout(TimeoutKind.COMMIT, round_=0, height=12)
    assert node.core.height == 13


def test_restart_from_sign_state_while_the_others_are_ahead_rejoins() -> None:
    sim = Sim(seed=3, net=SYNC)
    assert sim.run_to_height(3)
    sim.crash(0)
    assert sim.run_to_height(25, nodes=sim.nodes[1:])
    sim.restart(0)  # sign state of height ~3, the others at ~25 and still going
    assert sim.run_to_height(30)
    # validator 0 must be back in consensus: without it (and 1 down) nothing is decided
    sim.crash(1)
    top = max(n.app.height for n in sim.nodes)
    assert sim.run_to_height(top + 5, max_ms=60_000), [n.app.height for n in sim.nodes]


def test_paused_validator_resuming_with_old_timers_rejoins() -> None:
    sim = Sim(seed=5, net=SYNC)
    assert sim.run_to_height(3)
    sim.pause(2)
    sim.run_for(8_000)  # its timers expire and messages pile up meanwhile
    sim.resume(2)
    assert sim.run_to_height(max(n.app.height for n in sim.nodes) + 2)
    sim.crash(3)
    top = max(n.app.height for n in sim.nodes)
    assert sim.run_to_height(top + 5, max_ms=60_000), [n.app.height for n in sim.nodes]


@pytest.mark.parametrize("seed", range(6))
def test_chaos_kills_restarts_and_pauses_one_at_a_time_then_progress(seed: int) -> None:
    """The soak's fault pattern: one validator at a time killed (restarts from its disk) or paused, lossy
    network; once all are up the chain goes on. The simulator checks agreement and no double sign throughout."""
    rng = random.Random(seed)
    sim = Sim(seed=seed, net=NetConfig(sync_ms=300, gossip_ms=700, drop_rate=0.1, max_delay_ms=80))
    for _ in range(25):
        victim = rng.randrange(4)
        fault = rng.choice(["kill", "pause"])
        if fault == "kill":
            sim.crash(victim, drop_in_flight=rng.random() < 0.5)
        else:
            sim.pause(victim)
        sim.run_for(rng.randint(300, 9_000))
        (sim.restart if fault == "kill" else sim.resume)(victim)
        sim.run_for(rng.randint(0, 4_000))
    top = max(n.app.height for n in sim.nodes)
    assert sim.run_to_height(top + 5, max_ms=120_000), (
        [(n.app.height, n.core.height, n.core.round, n.core.step) for n in sim.nodes if n.core])


def test_a_restarted_validator_still_counts_and_re_sends_the_votes_it_signed_before() -> None:
    """Round 0 fails (no proposal): validators 0, 1, 2 prevote and precommit nil; every precommit is lost (each was
    killed before its broadcast left, or the others restarted and forgot it), and all three restart. The sign state
    forbids them to sign those votes again, so unless a restarted core counts and re-sends its own, nobody ever
    holds +2/3 precommits of round 0 again and the height stalls for good, with every validator up."""
    node = make_node(0)
    node.timeout(TimeoutKind.PROPOSE)  # prevote nil
    node.feed(*votes([1, 2], PREVOTE, 0, None))  # +2/3 nil prevotes: precommit nil
    ((mine,),) = [sent_votes(node.outputs, PRECOMMIT)]
    restarted = make_node(0, sign_state=SignState.from_json(node.core.sign_state.to_json()))
    assert mine in restarted.core.gossip()  # re-sent to the peers that never got it
    # the peers restarted too: each re-sends only its own precommit; with ours counted that is +2/3 of round 0
    out = restarted.feed(*votes([1, 2], PRECOMMIT, 0, None))
    assert [t.timeout.kind for t in timeouts(out)] == [TimeoutKind.PRECOMMIT]
    restarted.timeout(TimeoutKind.PRECOMMIT, round_=0)
    assert restarted.core.round == 1


def test_everyone_restarting_in_a_stuck_round_does_not_stall_the_height() -> None:
    """The soak's end: all four up, each restarted while the height was stuck; the chain must go on."""
    sim = Sim(seed=11, net=SYNC)
    assert sim.run_to_height(3)
    sim.crash(3)  # one down; round after round the other three are killed in turn right after they signed
    for victim in (0, 1, 2):
        sim.run_for(700)
        sim.crash(victim, drop_in_flight=True)
        sim.restart(victim)
    sim.restart(3)
    top = max(n.app.height for n in sim.nodes)
    assert sim.run_to_height(top + 5, max_ms=60_000), [n.app.height for n in sim.nodes]


@pytest.mark.parametrize("seed", [0, 1, 5, 13])
def test_kills_right_after_signing_one_at_a_time_never_stall_the_chain(seed: int) -> None:
    """Validators killed one at a time right after they stored a signature (what they signed never left) and
    restarted. Before a restarted core counted and re-sent its own votes, each of these seeds ended with all four
    up at one height, in PREVOTE/PRECOMMIT, for good (the soak's end state); 9 of seeds 0..14 did."""
    rng = random.Random(seed)
    sim = Sim(seed=seed, net=NetConfig(sync_ms=300, gossip_ms=700, max_delay_ms=80))
    assert sim.run_to_height(2)
    for _ in range(30):
        victim = rng.randrange(4)
        sim.crash(victim, drop_in_flight=True)
        sim.run_for(rng.choice([0, 0, 50, 400, 3000]))
        sim.restart(victim)
        sim.run_for(rng.randint(0, 600))
    top = max(n.app.height for n in sim.nodes)
    assert sim.run_to_height(top + 3, max_ms=60_000), (
        [(n.app.height, n.core.round, n.core.step.name) for n in sim.nodes if n.core])


def test_catch_up_keeps_the_heights_done_when_a_later_commit_does_not_verify() -> None:
    node = make_node(0)
    other = SimApp("other", node.app.sets)
    _chain(other, 4)
    bad = signed_commit((other.blocks[2], other.headers[2]), [0])  # one signature: not +2/3

    def commit_at(h: int) -> tuple[bytes, RelayCommit]:
        return other.blocks[h - 1], (bad if h == 3 else other.commits[h - 1])

    for h in range(1, 5):
        node.app.apply(other.blocks[h - 1], other.commits[h - 1])
    out = node.core.catch_up(4, commit_at)
    assert [d.height for d in out if isinstance(d, Decided)] == [1, 2] and node.core.height == 3
    with pytest.raises(ProtocolError):
        node.core.catch_up(4, commit_at)
    assert node.core.height == 3
