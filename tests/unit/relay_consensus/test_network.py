"""Four validators on the simulated network (one clock, seeded delays, drops and reordering).

The simulator raises :class:`SafetyViolation` the moment two honest nodes decide different blocks at
one height, an honest validator signs two different messages of one kind in one round (across restarts),
a message is broadcast before its sign-state record was persisted, or a decided commit fails
``verify_commit`` or has a secp256k1 signature that does not recover to its signer's eth address.
So every test here checks safety on every event; the assertions below are about progress.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from protocol.certificate import verify_commit
from protocol.errors import ValidatorSetMismatchError
from relay.chain.consensus import Proposal, ValidatorKey, Vote
from tests.unit.relay_consensus.sim import (
    CHAIN,
    NetConfig,
    Sim,
    check_commit,
    make_vset,
    validator_key,
)

MINUTE = 60_000


def _heights(sim: Sim) -> list[int]:
    return [n.app.height for n in sim.nodes]


def _same_chain(sim: Sim) -> None:
    nodes = sim.honest_alive()
    shortest = min(n.app.height for n in nodes)
    for n in nodes:
        assert n.app.headers[:shortest] == nodes[0].app.headers[:shortest]


def test_four_validators_make_progress_and_every_commit_verifies() -> None:
    sim = Sim(seed=1)
    assert sim.run_to_height(30, max_ms=MINUTE)
    _same_chain(sim)
    signers: set[int] = set()
    for node in sim.nodes:
        for commit in node.app.commits:
            check_commit(sim.genesis_set, commit)  # ed25519 via verify_commit, secp256k1 via ecrecover
            signers |= {s.validator_index for s in commit.signatures}
    assert signers == {0, 1, 2, 3}
    assert sim.evidence == [] and sim.rejected == []


@pytest.mark.parametrize("down", [0, 3])
def test_progress_with_one_of_four_down_from_the_start(down: int) -> None:
    sim = Sim(seed=down, down=[down], net=NetConfig(drop_rate=0.05))
    assert sim.run_to_height(15, max_ms=5 * MINUTE)
    for commit in sim.honest_alive()[0].app.commits:
        assert down not in {s.validator_index for s in commit.signatures}


def test_one_crashes_mid_way_the_rest_go_on_and_it_catches_up_after_a_restart() -> None:
    sim = Sim(seed=2, net=NetConfig(drop_rate=0.05, max_delay_ms=80))
    assert sim.run_to_height(5, max_ms=MINUTE)
    sim.crash(1)
    crashed_at = sim.nodes[1].app.height
    assert sim.run_to_height(crashed_at + 10, max_ms=5 * MINUTE)
    assert sim.nodes[1].app.height == crashed_at
    sim.restart(1)
    target = sim.min_height() + 5
    assert sim.run_to_height(target, max_ms=5 * MINUTE)  # the restarted node included
    assert sim.nodes[1].app.height >= target
    _same_chain(sim)


def test_exactly_two_thirds_of_the_power_makes_no_progress() -> None:
    """Powers 1, 1, 2, 2: validators 2 and 3 alone hold exactly 2/3, which is not a quorum."""
    sim = Sim(seed=4, powers=[1, 1, 2, 2], down=[0, 1])
    sim.run_for(2 * MINUTE)
    assert _heights(sim)[2:] == [0, 0]
    sim.restart(0)  # 5/6 of the power
    assert sim.run_to_height(5, max_ms=5 * MINUTE)


def test_power_not_head_count_decides() -> None:
    """Powers 1, 1, 2, 2: losing validator 0 (1/6) leaves a quorum; three of four nodes is not the point."""
    sim = Sim(seed=5, powers=[1, 1, 2, 2], down=[0])
    assert sim.run_to_height(10, max_ms=5 * MINUTE)
    weighted = Sim(seed=5, powers=[1, 1, 2, 2], down=[3])
    weighted.run_for(MINUTE)
    assert weighted.min_height() == 0


def test_a_2_2_partition_makes_no_progress_and_heals() -> None:
    sim = Sim(seed=3)
    assert sim.run_to_height(3, max_ms=MINUTE)
    sim.partition = [{0, 1}, {2, 3}]
    sim.run_for(5_000)  # messages already in flight land
    frozen = _heights(sim)
    sim.run_for(5 * MINUTE)
    assert _heights(sim) == frozen
    sim.heal()
    assert sim.run_to_height(max(frozen) + 5, max_ms=5 * MINUTE)
    _same_chain(sim)


def test_a_3_1_partition_leaves_the_majority_live() -> None:
    sim = Sim(seed=6)
    sim.partition = [{0, 1, 2}, {3}]
    assert sim.run_to_height(10, max_ms=5 * MINUTE, nodes=sim.nodes[:3])
    assert sim.nodes[3].app.height == 0
    sim.heal()
    assert sim.run_to_height(12, max_ms=5 * MINUTE)  # 3 catches up through on_commit


@pytest.mark.parametrize("seed", range(20))
def test_a_byzantine_equivocator_never_causes_two_decisions(seed: int) -> None:
    """One of four validators signs conflicting proposals and votes and sends them to different peers;
    50 heights per seed. Agreement is checked on every decision by the simulator."""
    rng = random.Random(seed)
    net = NetConfig(max_delay_ms=rng.choice([20, 60, 150]), drop_rate=rng.choice([0.0, 0.0, 0.05]))
    sim = Sim(seed=seed, byzantine=[seed % 4], net=net, check_commits=seed % 5 == 0)
    assert sim.run_to_height(50, max_ms=60 * MINUTE)
    assert sim.evidence, "the equivocation should have been seen"
    for _, ev in sim.evidence:
        signer = ev.vote_a.validator_index if hasattr(ev, "vote_a") else ev.proposal_a.proposer_index
        assert signer == seed % 4
    for _, msg, _ in sim.rejected:  # honest messages are never refused
        signer = msg.proposer_index if isinstance(msg, Proposal) else msg.validator_index
        assert signer == seed % 4


@pytest.mark.parametrize("seed", range(4))
def test_crashes_and_restarts_never_make_a_validator_double_sign(seed: int) -> None:
    """Honest validators crash at random moments (mid-round included) and restart from their persisted
    sign state; the simulator checks every signature against everything the validator signed before."""
    sim = Sim(seed=100 + seed, net=NetConfig(drop_rate=0.05, max_delay_ms=100))
    rng = random.Random(seed)
    while sim.min_height() < 20 and sim.now < 30 * MINUTE:
        victim = rng.randrange(4)
        sim.crash(victim)
        sim.run_for(rng.randint(50, 1500))
        sim.restart(victim)
        sim.run_for(rng.randint(50, 3000))
    assert sim.min_height() >= 20
    assert any(r > 0 for (_, _, r, _) in sim.signed)  # crashes cost rounds: restarts happened mid-height


def test_a_node_that_was_down_from_the_start_catches_up_by_commits() -> None:
    sim = Sim(seed=7, down=[3])
    assert sim.run_to_height(10, max_ms=5 * MINUTE)
    sim.restart(3)
    before = sim.nodes[3].app.height
    assert before == 0
    assert sim.run_until(lambda: sim.nodes[3].app.height >= 10, max_ms=30_000)
    _same_chain(sim)


def test_the_validator_set_changes_at_a_height() -> None:
    """Heights 1-5 are signed by validators 0-3; from height 6 validator 3 is replaced by validator 4
    (power 2). Node 4 follows as an observer until then; node 3 observes afterwards."""
    keys = [validator_key(i) for i in range(5)]
    old = make_vset(keys[:4], [1, 1, 1, 1])
    new = make_vset([keys[0], keys[1], keys[2], keys[4]], [1, 1, 1, 2])
    sim = Sim(seed=8, keys=keys, sets=lambda h: old if h <= 5 else new)
    assert sim.run_to_height(12, max_ms=5 * MINUTE)
    commits = sim.nodes[0].app.commits
    for c in commits[:5]:
        check_commit(old, c)
    for c in commits[5:12]:
        check_commit(new, c)
        with pytest.raises(ValidatorSetMismatchError):
            verify_commit(old, CHAIN, c)
    assert any(s.validator_index == 3 for c in commits[5:12] for s in c.signatures)  # index 3 is now key 4
    assert not [k for k in sim.signed if k[0] == 3 and k[1] > 5]  # validator 3 signs nothing after leaving
    assert [k for k in sim.signed if k[0] == 4 and k[1] <= 5] == []


def test_a_validator_without_a_secp256k1_key_takes_part() -> None:
    keys = [*(validator_key(i) for i in range(3)),
            ValidatorKey(hashlib.sha256(b"parkrelay-test-seed/relay-consensus/no-secp").digest())]
    sim = Sim(seed=10, keys=keys)
    assert sim.run_to_height(8, max_ms=MINUTE)
    sigs = [s for c in sim.nodes[0].app.commits for s in c.signatures]
    assert {s.secp256k1_sig for s in sigs if s.validator_index == 3} == {b""}
    assert all(len(s.secp256k1_sig) == 65 for s in sigs if s.validator_index != 3)


def test_same_seed_same_run() -> None:
    def run(seed: int) -> tuple[int, int, list[bytes]]:
        sim = Sim(seed=seed, byzantine=[2], net=NetConfig(drop_rate=0.05, max_delay_ms=100))
        sim.run_to_height(10, max_ms=10 * MINUTE)
        return sim.now, sim.delivered, [h.hash() for h in sim.nodes[0].app.headers]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_gossip_re_sends_what_a_peer_missed() -> None:
    """Drop every message for a while: nothing is decided; then only re-sent gossip can finish the height."""
    sim = Sim(seed=9, net=NetConfig(drop_rate=1.0))
    sim.run_for(3_000)
    assert sim.min_height() == 0
    sim.net.drop_rate = 0.0
    assert sim.run_to_height(3, max_ms=MINUTE)
    assert all(isinstance(m, (Proposal, Vote)) for n in sim.nodes if n.core for m in n.core.gossip())
