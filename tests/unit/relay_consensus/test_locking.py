"""The classic locking scenario, built message by message: without the lock, the chain would fork.

Four equal validators, validator 3 byzantine (scripted), the test is the network. Height 1:

* round 0 (proposer 1) proposes A. Validators 0, 1 and the byzantine 3 prevote A; validators 0 and 1
  see that polka, lock on A and precommit A. Validator 0 also gets 3's precommit for A and decides A.
  Validator 2 never saw the proposal, prevoted and precommitted nil. The byzantine 3 tells 1 and 2 it
  precommitted nil, and 0's precommit never reaches them, so 1 and 2 go on to round 1.
* round 1 (proposer 2, not locked) proposes a new block B. Validator 2 and the byzantine 3 prevote B.
  If validator 1 prevoted B too, B would have a polka and then a quorum of precommits: a second block
  decided at height 1. The locking rule makes 1 prevote nil, and B never gets a quorum.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from relay.chain.consensus import Output, Proposal, SignState, TimeoutKind, Vote, VoteType
from tests.unit.relay_consensus.harness import (
    PRECOMMIT,
    PREVOTE,
    Node,
    bh,
    decisions,
    make_node,
    sent,
    sent_votes,
    vote,
)


def _only_vote(out: Sequence[Output], vtype: VoteType) -> Vote:
    (v,) = sent_votes(out, vtype)
    return v


def _round_0() -> tuple[Node, Node, Node, Proposal, SignState]:
    c0, c1, c2 = make_node(0), make_node(1), make_node(2)
    (p0,) = [m for m in sent(c1.outputs) if isinstance(m, Proposal)]
    a = (p0.block, p0.header)
    pv1 = _only_vote(c1.outputs, PREVOTE)
    pv0 = _only_vote(c0.feed(p0), PREVOTE)
    byz_pv_a = vote(3, PREVOTE, 0, a)

    pc1 = _only_vote(c1.feed(pv0, byz_pv_a), PRECOMMIT)
    assert pc1.block_hash == bh(a) and c1.core.locked_round == 0
    record_after_lock = c1.core.sign_state
    pc0 = _only_vote(c0.feed(pv1, byz_pv_a), PRECOMMIT)
    assert pc0.block_hash == bh(a)
    (d0,) = decisions(c0.feed(pc1, vote(3, PRECOMMIT, 0, a)))
    assert d0.block == p0.block

    pv2 = _only_vote(c2.timeout(TimeoutKind.PROPOSE), PREVOTE)
    assert pv2.block_hash is None
    c2.feed(pv0, pv1)
    pc2 = _only_vote(c2.timeout(TimeoutKind.PREVOTE), PRECOMMIT)
    assert c2.core.locked_round == -1

    c1.feed(pc2, vote(3, PRECOMMIT, 0, None))  # the byzantine equivocates
    c1.timeout(TimeoutKind.PRECOMMIT)
    c2.feed(pc1, vote(3, PRECOMMIT, 0, None))
    assert decisions(c1.outputs) == [] and decisions(c2.outputs) == []
    return c0, c1, c2, p0, record_after_lock


def test_locking_prevents_a_second_decision_at_one_height() -> None:
    c0, c1, c2, p0, _ = _round_0()
    a = (p0.block, p0.header)
    out = c2.timeout(TimeoutKind.PRECOMMIT)  # round 1: validator 2 proposes a new block
    (p1,) = [m for m in sent(out) if isinstance(m, Proposal)]
    assert (p1.round, p1.pol_round) == (1, -1) and p1.block_hash != bh(a)
    b = (p1.block, p1.header)
    pv2 = _only_vote(out, PREVOTE)
    byz_pv_b = vote(3, PREVOTE, 1, b)

    pv1 = _only_vote(c1.feed(p1), PREVOTE)
    assert pv1.block_hash is None, "validator 1 is locked on A and must not prevote B"

    c1.feed(pv2, byz_pv_b)
    c2.feed(pv1, byz_pv_b)
    byz_pc_b = vote(3, PRECOMMIT, 1, b)
    for node in (c1, c2):
        pc = _only_vote(node.timeout(TimeoutKind.PREVOTE), PRECOMMIT)
        assert pc.block_hash is None
        node.feed(byz_pc_b)
    assert decisions(c1.outputs) == [] and decisions(c2.outputs) == []

    # Validator 0's commit lets 1 and 2 catch up: everyone decides A.
    (d0,) = decisions(c0.outputs)
    for node in (c1, c2):
        (d,) = decisions(node.commit(d0.block, d0.commit))
        assert d.commit.header == d0.commit.header


def test_control_without_the_lock_the_same_messages_fork_the_chain() -> None:
    """Why the test above matters: validator 1 restarted without its lock decides B."""
    c0, _c1, c2, _p0, record = _round_0()
    amnesiac = make_node(1, sign_state=dataclasses.replace(record, locked_round=-1, locked_header=None,
                                                           locked_block=b""))
    amnesiac.feed(vote(2, PRECOMMIT, 0, None), vote(3, PRECOMMIT, 0, None))
    amnesiac.timeout(TimeoutKind.PRECOMMIT)
    out = c2.timeout(TimeoutKind.PRECOMMIT)
    (p1,) = [m for m in sent(out) if isinstance(m, Proposal)]
    b = (p1.block, p1.header)
    assert _only_vote(amnesiac.feed(p1), PREVOTE).block_hash == bh(b)
    amnesiac.feed(_only_vote(out, PREVOTE), vote(3, PREVOTE, 1, b))
    (d,) = decisions(amnesiac.feed(vote(2, PRECOMMIT, 1, b), vote(3, PRECOMMIT, 1, b)))
    (d0,) = decisions(c0.outputs)
    assert d.height == d0.height == 1 and d.block != d0.block  # two blocks decided at height 1
