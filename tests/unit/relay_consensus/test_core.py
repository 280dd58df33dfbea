"""One ConsensusCore driven by scripted peers: the rules, the checks, catch-up and restarts."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from protocol.certificate import RelayCommit, RelayHeader, ValidatorSet, verify_commit
from protocol.errors import (
    HeaderError,
    QuorumError,
    SignatureError,
    ValidatorSetMismatchError,
)
from protocol.types import ChainId
from relay.chain.consensus import (
    Broadcast,
    ConflictingProposalEvidence,
    ConsensusConfig,
    ConsensusCore,
    DuplicateVoteEvidence,
    EvidenceFound,
    MessageRejected,
    PersistSignState,
    Proposal,
    ScheduleTimeout,
    SignState,
    Step,
    TimeoutKind,
    ValidatorKey,
    Vote,
    VoteType,
    proposer_index,
    verify_evidence,
)
from relay.chain.consensus.messages import sign_proposal, sign_vote
from tests.unit.relay_consensus.harness import (
    CFG,
    KEYS,
    PRECOMMIT,
    PREVOTE,
    VSET,
    bh,
    block_at,
    decisions,
    make_node,
    persisted_before_broadcast,
    proposal,
    sent,
    sent_votes,
    signed_commit,
    timeouts,
    vote,
    votes,
)
from tests.unit.relay_consensus.sim import CHAIN, SimApp, check_commit, make_vset

A = block_at(1, 0)
B = block_at(1, 1, b"B")


# --- proposer schedule ----------------------------------------------------------------------------------


def test_equal_powers_rotate_by_height_plus_round() -> None:
    assert [proposer_index(VSET, h, r) for h, r in [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (7, 5)]] == [
        1, 2, 3, 0, 2, 0]


def test_weighted_schedule_is_proportional_and_spread() -> None:
    vset = make_vset(KEYS[:4], [1, 1, 2, 2])
    period = [proposer_index(vset, 0, r) for r in range(6)]
    assert period == [2, 3, 0, 1, 2, 3]
    assert [proposer_index(vset, 0, r) for r in range(6, 12)] == period


def test_large_powers_are_scaled_for_the_schedule_only() -> None:
    vset = make_vset(KEYS[:3], [10**12, 10**12, 2 * 10**12])
    counts = [0, 0, 0]
    for r in range(4096):
        counts[proposer_index(vset, 1, r)] += 1
    assert counts == [1024, 1024, 2048]


# --- a round as a validator sees it ---------------------------------------------------------------------


def test_proposer_proposes_and_prevotes_its_block_after_persisting_each_signature() -> None:
    node = make_node(1)
    out = node.outputs
    msgs = sent(out)
    assert isinstance(msgs[0], Proposal) and msgs[0].pol_round == -1 and msgs[0].round == 0
    assert sent_votes(out, PREVOTE)[0].block_hash == msgs[0].block_hash
    assert persisted_before_broadcast(out)
    assert [t.timeout.kind for t in timeouts(out)] == [TimeoutKind.PROPOSE]
    assert node.core.sign_state.step == 2  # prevote


def test_non_proposer_prevotes_nil_when_the_proposal_does_not_come() -> None:
    node = make_node(0)
    (t,) = timeouts(node.outputs)
    assert (t.timeout.kind, t.timeout.height, t.timeout.round, t.duration_ms) == (TimeoutKind.PROPOSE, 1, 0, 300)
    assert sent(node.outputs) == []
    (v,) = sent_votes(node.timeout(TimeoutKind.PROPOSE), PREVOTE)
    assert v.block_hash is None


def test_a_full_round_decides_and_the_commit_verifies() -> None:
    node = make_node(0)
    assert sent_votes(node.feed(proposal(1, 0, A)), PREVOTE)[0].block_hash == bh(A)
    out = node.feed(*votes([1, 2], PREVOTE, 0, A))
    (pc,) = sent_votes(out, PRECOMMIT)
    assert pc.block_hash == bh(A) and len(pc.secp256k1_sig) == 65
    assert (node.core.locked_round, node.core.locked_hash) == (0, bh(A))
    out = node.feed(*votes([1, 2], PRECOMMIT, 0, A))
    (d,) = decisions(out)
    assert (d.height, d.block, d.commit.round) == (1, A[0], 0)
    assert [s.validator_index for s in d.commit.signatures] == [0, 1, 2]
    check_commit(VSET, d.commit)
    assert node.core.step is Step.COMMIT
    (t,) = timeouts(out)
    assert (t.timeout.kind, t.duration_ms) == (TimeoutKind.COMMIT, CFG.timeouts.commit_ms)
    node.timeout(TimeoutKind.COMMIT, 0, 1)
    assert (node.core.height, node.core.round, node.core.step) == (2, 0, Step.PROPOSE)


def test_an_invalid_block_gets_a_nil_prevote() -> None:
    bad = block_at(1, 0, b"|bad")
    (v,) = sent_votes(make_node(0).feed(proposal(1, 0, bad)), PREVOTE)
    assert v.block_hash is None


def test_two_thirds_of_nil_prevotes_make_a_nil_precommit() -> None:
    node = make_node(0)
    node.timeout(TimeoutKind.PROPOSE)
    (pc,) = sent_votes(node.feed(*votes([1, 2], PREVOTE, 0, None)), PRECOMMIT)
    assert pc.block_hash is None and pc.secp256k1_sig == b""


def test_mixed_prevotes_wait_for_the_prevote_timeout_then_precommit_nil() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A))
    out = node.feed(vote(1, PREVOTE, 0, A), vote(2, PREVOTE, 0, None))
    assert sent(out) == []
    (t,) = timeouts(out)
    assert (t.timeout.kind, t.duration_ms) == (TimeoutKind.PREVOTE, 100)
    (pc,) = sent_votes(node.timeout(TimeoutKind.PREVOTE), PRECOMMIT)
    assert pc.block_hash is None


def test_two_thirds_of_any_precommits_start_the_next_round_after_the_timeout() -> None:
    node = make_node(0)
    node.timeout(TimeoutKind.PROPOSE)
    node.feed(*votes([1, 2], PREVOTE, 0, None))
    out = node.feed(vote(1, PRECOMMIT, 0, None), vote(2, PRECOMMIT, 0, A))
    (t,) = timeouts(out)
    assert t.timeout.kind is TimeoutKind.PRECOMMIT
    node.timeout(TimeoutKind.PRECOMMIT)
    assert (node.core.round, node.core.step) == (1, Step.PROPOSE)
    (t,) = timeouts(node.outputs[-1:])
    assert (t.timeout.kind, t.timeout.round, t.duration_ms) == (TimeoutKind.PROPOSE, 1, 400)


def test_stale_timeouts_do_nothing() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A))  # prevoted: the propose timeout is stale now
    assert node.timeout(TimeoutKind.PROPOSE) == []
    assert node.timeout(TimeoutKind.PRECOMMIT, round_=5) == []
    assert node.timeout(TimeoutKind.PREVOTE, height=7) == []


def test_round_skip_needs_more_than_a_third_of_the_power() -> None:
    node = make_node(0)
    node.feed(vote(2, PREVOTE, 3, None))
    assert node.core.round == 0
    node.feed(vote(3, PRECOMMIT, 3, None))
    assert node.core.round == 3


def test_messages_for_rounds_too_far_ahead_are_ignored() -> None:
    node = make_node(0)
    far = CFG.max_round_ahead + 1
    assert node.feed(*votes([1, 2, 3], PREVOTE, far, None)) == []
    assert node.core.round == 0


# --- the locking rules, one core --------------------------------------------------------------------------


def test_a_locked_validator_prevotes_nil_for_another_block() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    node.feed(*votes([1, 2], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)
    (v,) = sent_votes(node.feed(proposal(2, 1, B)), PREVOTE)
    assert v.block_hash is None


def test_a_locked_validator_prevotes_its_locked_block_again() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    node.feed(*votes([1, 2], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)
    (v,) = sent_votes(node.feed(proposal(2, 1, A, pol_round=0)), PREVOTE)
    assert v.block_hash == bh(A)


def test_a_proof_of_lock_from_a_later_round_releases_the_lock() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    node.feed(*votes([1, 2], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)  # round 1
    node.feed(*votes([1, 2, 3], PREVOTE, 1, B))  # a polka for B in round 1 that this node missed the proposal of
    node.feed(*votes([1, 2, 3], PRECOMMIT, 1, None))
    node.timeout(TimeoutKind.PRECOMMIT)  # round 2: the proposer re-proposes B with its proof of lock
    assert node.core.round == 2
    (v,) = sent_votes(node.feed(proposal(3, 2, B, pol_round=1)), PREVOTE)
    assert v.block_hash == bh(B)


def test_a_proof_of_lock_older_than_the_lock_does_not_release_it() -> None:
    node = make_node(0)
    node.feed(*votes([1, 2, 3], PREVOTE, 0, B))  # a polka for B in round 0; the node missed its proposal
    node.timeout(TimeoutKind.PROPOSE)
    node.feed(*votes([1, 2, 3], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)  # round 1: A gets a polka and the node locks on it
    node.feed(proposal(2, 1, A), *votes([1, 2], PREVOTE, 1, A))
    assert (node.core.locked_round, node.core.locked_hash) == (1, bh(A))
    node.feed(*votes([1, 2], PRECOMMIT, 1, None))
    node.timeout(TimeoutKind.PRECOMMIT)  # round 2: B again, with its proof of lock from round 0 < 1
    (v,) = sent_votes(node.feed(proposal(3, 2, B, pol_round=0)), PREVOTE)
    assert v.block_hash is None


def test_a_proof_of_lock_the_node_has_not_seen_is_waited_for_then_refused() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    node.feed(*votes([1, 2], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)
    node.feed(*votes([1, 2], PRECOMMIT, 1, None))  # round 1 ends without the node seeing a polka
    node.timeout(TimeoutKind.PRECOMMIT, round_=1)
    assert sent_votes(node.feed(proposal(3, 2, B, pol_round=1)), PREVOTE) == []  # waits for the polka
    (v,) = sent_votes(node.timeout(TimeoutKind.PROPOSE), PREVOTE)
    assert v.block_hash is None


def test_a_validator_that_saw_a_polka_re_proposes_that_block() -> None:
    node = make_node(3)  # proposer of round 2 at height 1
    node.feed(proposal(1, 0, A), *votes([0, 1], PREVOTE, 0, A))
    assert node.core.valid_round == 0
    node.feed(*votes([0, 1], PRECOMMIT, 0, None))
    node.timeout(TimeoutKind.PRECOMMIT)
    node.feed(*votes([0, 1], PRECOMMIT, 1, None))
    out = node.timeout(TimeoutKind.PRECOMMIT, round_=1)
    (p,) = [m for m in sent(out) if isinstance(m, Proposal)]
    assert (p.round, p.pol_round, p.block_hash) == (2, 0, bh(A))


# --- checks of incoming messages ------------------------------------------------------------------------------


def test_a_proposal_by_a_validator_that_is_not_the_proposer_is_refused() -> None:
    with pytest.raises(SignatureError):
        make_node(0).feed(proposal(2, 0, A))


def test_a_vote_with_a_bad_signature_is_refused() -> None:
    with pytest.raises(SignatureError):
        make_node(0).feed(dataclasses.replace(vote(1, PREVOTE, 0, A), ed25519_sig=bytes(64)))


def test_a_vote_by_an_unknown_validator_is_refused() -> None:
    stranger = vote(4, PREVOTE, 0, A)  # KEYS[4] is not in the set
    with pytest.raises(SignatureError):
        make_node(0).feed(stranger)
    with pytest.raises(SignatureError):
        make_node(0).feed(dataclasses.replace(stranger, validator_index=2))


def test_a_precommit_with_a_bad_secp256k1_signature_is_refused_and_not_counted() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    forged = dataclasses.replace(vote(1, PRECOMMIT, 0, A), secp256k1_sig=vote(2, PRECOMMIT, 0, A).secp256k1_sig)
    with pytest.raises(SignatureError):
        node.feed(forged)
    assert decisions(node.feed(vote(2, PRECOMMIT, 0, A))) == []


def test_old_heights_are_ignored_and_the_next_height_is_buffered() -> None:
    node = make_node(0)
    a2 = block_at(2, 0)
    early = proposal(proposer_index(VSET, 2, 0), 0, a2, height=2)
    assert node.feed(early) == []
    assert node.feed(vote(1, PREVOTE, 0, None, height=3)) == []  # two heights ahead: dropped
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A), *votes([1, 2], PRECOMMIT, 0, A))
    assert node.app.height == 1
    out = node.timeout(TimeoutKind.COMMIT, 0, 1)  # enter height 2: the buffered proposal is replayed
    (v,) = sent_votes(out, PREVOTE)
    assert (v.height, v.block_hash) == (2, bh(a2))
    assert node.feed(vote(1, PREVOTE, 0, A)) == []  # height 1 is over


def test_the_future_buffer_is_bounded() -> None:
    app = SimApp("v0", lambda _h: VSET)
    core = ConsensusCore(dataclasses.replace(CFG, max_buffered_messages=1), app, VSET, 1, KEYS[0])
    core.start()
    core.on_message(vote(1, PREVOTE, 0, None, height=2))
    core.on_message(vote(2, PREVOTE, 0, None, height=2))
    assert len(core._buffer) == 1


def test_a_buffered_message_that_turns_out_invalid_is_reported() -> None:
    node = make_node(0)
    node.feed(dataclasses.replace(vote(1, PREVOTE, 0, None, height=2), ed25519_sig=bytes(64)))
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A), *votes([1, 2], PRECOMMIT, 0, A))
    out = node.timeout(TimeoutKind.COMMIT, 0, 1)
    (rej,) = [o for o in out if isinstance(o, MessageRejected)]
    assert isinstance(rej.error, SignatureError)


def test_inputs_before_start_are_a_programming_error() -> None:
    core = ConsensusCore(CFG, SimApp("v0", lambda _h: VSET), VSET, 1, KEYS[0])
    with pytest.raises(RuntimeError):
        core.on_message(vote(1, PREVOTE, 0, None))


# --- equivocation -------------------------------------------------------------------------------------------


def test_a_double_vote_is_evidence_and_counts_once_towards_any() -> None:
    node = make_node(0)
    node.timeout(TimeoutKind.PROPOSE)  # own nil prevote
    node.feed(vote(1, PREVOTE, 0, A))
    out = node.feed(vote(1, PREVOTE, 0, None), vote(1, PREVOTE, 0, B))
    evidence = [o.evidence for o in out if isinstance(o, EvidenceFound)]
    assert len(evidence) == 1 and isinstance(evidence[0], DuplicateVoteEvidence)
    verify_evidence(VSET, CHAIN, evidence[0])
    assert node.core.evidence == tuple(evidence)
    # validators 0 and 1 only: 2 of 4 is no quorum of any prevotes, however often validator 1 signs
    assert timeouts(out) == [] and node.core.step is Step.PREVOTE


def test_an_equivocator_counts_for_each_value_it_signed() -> None:
    """As in the paper: 2f+1 prevotes for v are 2f+1 validators that signed one for v."""
    node = make_node(0)
    node.feed(proposal(1, 0, A))
    node.feed(vote(1, PREVOTE, 0, None), vote(1, PREVOTE, 0, A))  # validator 1 equivocates
    (pc,) = sent_votes(node.feed(vote(2, PREVOTE, 0, A)), PRECOMMIT)
    assert pc.block_hash == bh(A)


def test_two_proposals_for_one_round_are_evidence() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A))
    out = node.feed(proposal(1, 0, B), proposal(1, 0, block_at(1, 0, b"C")))
    evidence = [o.evidence for o in out if isinstance(o, EvidenceFound)]
    assert len(evidence) == 1 and isinstance(evidence[0], ConflictingProposalEvidence)
    verify_evidence(VSET, CHAIN, evidence[0])
    assert sent_votes(out) == []  # the first proposal stands; no second prevote


# --- restart: never double-sign, keep the lock ----------------------------------------------------------------


def test_a_restarted_validator_never_prevotes_twice_in_a_round() -> None:
    node = make_node(0)
    (first,) = sent_votes(node.feed(proposal(1, 0, A)), PREVOTE)
    record = node.core.sign_state
    # the byzantine proposer shows the restarted node another block for the same round
    restarted = make_node(0, sign_state=SignState.from_json(record.to_json()))
    assert restarted.core.round == 0
    assert sent_votes(restarted.feed(proposal(1, 0, B))) == []
    assert sent_votes(restarted.timeout(TimeoutKind.PROPOSE)) == []  # nor a nil prevote
    # control: without its record the same node would have signed a second prevote
    amnesiac = make_node(0)
    (second,) = sent_votes(amnesiac.feed(proposal(1, 0, B)), PREVOTE)
    assert second.block_hash != first.block_hash


def test_a_restarted_validator_re_sends_the_same_vote() -> None:
    node = make_node(0)
    (first,) = sent_votes(node.feed(proposal(1, 0, A)), PREVOTE)
    restarted = make_node(0, sign_state=SignState.from_json(node.core.sign_state.to_json()))
    assert sent_votes(restarted.feed(proposal(1, 0, A))) == [first]


def test_a_restarted_proposer_does_not_propose_another_block() -> None:
    node = make_node(1)
    record = node.core.sign_state
    other_app = SimApp("v1-after-restart", lambda _h: VSET)  # would build a different block now
    restarted = make_node(1, sign_state=SignState.from_json(record.to_json()), app=other_app)
    assert [m for m in sent(restarted.outputs) if isinstance(m, Proposal)] == []


def test_a_restarted_validator_keeps_its_lock() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, A), *votes([1, 2], PREVOTE, 0, A))
    assert node.core.sign_state.locked_round == 0
    restarted = make_node(0, sign_state=SignState.from_json(node.core.sign_state.to_json()))
    assert (restarted.core.locked_round, restarted.core.locked_hash) == (0, bh(A))
    restarted.feed(*votes([1, 2, 3], PRECOMMIT, 0, None))
    restarted.timeout(TimeoutKind.PRECOMMIT)
    (v,) = sent_votes(restarted.feed(proposal(2, 1, B)), PREVOTE)
    assert v.block_hash is None
    # control: forgetting the lock would prevote B
    amnesiac = make_node(0, sign_state=dataclasses.replace(node.core.sign_state, locked_round=-1,
                                                           locked_header=None, locked_block=b""))
    amnesiac.feed(*votes([1, 2, 3], PRECOMMIT, 0, None))
    amnesiac.timeout(TimeoutKind.PRECOMMIT)
    (w,) = sent_votes(amnesiac.feed(proposal(2, 1, B)), PREVOTE)
    assert w.block_hash == bh(B)


# --- observers, catch-up, validator-set changes -----------------------------------------------------------------


def test_an_observer_decides_without_signing_anything() -> None:
    node = make_node(None)
    out = node.feed(proposal(1, 0, A), *votes([1, 2, 3], PREVOTE, 0, A), *votes([1, 2, 3], PRECOMMIT, 0, A))
    assert [d.height for d in decisions(out)] == [1]
    assert not [o for o in node.outputs if isinstance(o, (Broadcast, PersistSignState))]


def test_catch_up_with_a_commit() -> None:
    node = make_node(0)
    commit = signed_commit(A, [1, 2, 3], round_=4)
    out = node.commit(A[0], commit)
    (d,) = decisions(out)
    assert d.commit == commit and node.app.height == 1
    (t,) = [o for o in out if isinstance(o, ScheduleTimeout)]
    assert (t.timeout.kind, t.duration_ms) == (TimeoutKind.COMMIT, 0)
    assert node.commit(A[0], commit) == []  # already decided
    node.timeout(TimeoutKind.COMMIT, 4, 1)
    assert node.core.height == 2
    assert node.commit(A[0], commit) == []  # an old height


@pytest.mark.parametrize(("name", "make", "error"), [
    ("two thirds exactly is not a quorum", lambda: (A[0], signed_commit(A, [1, 2])), QuorumError),
    ("a bad ed25519 signature", lambda: (A[0], _with_sig(signed_commit(A, [1, 2, 3]), 0, ed25519_sig=bytes(64))),
     SignatureError),
    ("a secp256k1 signature by another key",
     lambda: (A[0], _with_sig(signed_commit(A, [1, 2, 3]), 0,
                              secp256k1_sig=signed_commit(A, [3]).signatures[0].secp256k1_sig)), SignatureError),
    ("a later height", lambda: (block_at(2)[0], signed_commit(block_at(2), [1, 2, 3])), HeaderError),
    ("a block the application rejects",
     lambda: (block_at(1, 0, b"|bad")[0], signed_commit(block_at(1, 0, b"|bad"), [1, 2, 3])), HeaderError),
    ("block bytes that are not the header's",
     lambda: (B[0], signed_commit(A, [1, 2, 3])), HeaderError),
])
def test_catch_up_refuses_bad_commits(name: str, make: Callable[[], tuple[bytes, RelayCommit]],
                                      error: type[Exception]) -> None:
    block, commit = make()
    node = make_node(0)
    with pytest.raises(error):
        node.commit(block, commit)
    assert node.core.height == 1 and node.app.height == 0


def _with_sig(commit: RelayCommit, i: int, **changes: Any) -> RelayCommit:
    sigs = list(commit.signatures)
    sigs[i] = dataclasses.replace(sigs[i], **changes)
    return dataclasses.replace(commit, signatures=tuple(sigs))


def _two_sets() -> tuple[ValidatorSet, ValidatorSet]:
    new = make_vset([KEYS[0], KEYS[1], KEYS[2], KEYS[4]], [1, 1, 1, 2])
    return VSET, new


def test_the_next_validator_set_comes_from_the_decided_header() -> None:
    old, new = _two_sets()  # new: validators 0, 1, 2 and 4 (power 2); total 5, quorum 4
    node = make_node(3, sets=lambda h: old if h == 1 else new)
    a = node.app.make_block(1, 0)
    assert a[1].next_validators_hash == new.hash
    node.feed(proposal(1, 0, a), *votes([0, 1, 2], PREVOTE, 0, a), *votes([0, 1, 2], PRECOMMIT, 0, a))
    node.timeout(TimeoutKind.COMMIT, 0, 1)
    assert node.core.height == 2 and node.core.validator_set == new
    assert node.core.validator_index is None  # validator 3 left the set: it observes height 2
    a2 = node.app.make_block(2, 0)
    signers = [(0, 0), (4, 3)]  # (key, index in the new set): power 1 + 2 = 3 of 5 is no quorum
    p = proposer_index(new, 2, 0)
    prop = sign_proposal(KEYS[[0, 1, 2, 4][p]], CHAIN, 2, 0, -1, a2[1], a2[0], p)

    def new_votes(t: VoteType, who: list[tuple[int, int]]) -> list[Vote]:
        return [sign_vote(KEYS[k], CHAIN, t, 2, 0, bh(a2), i, with_secp256k1=True) for k, i in who]

    assert decisions(node.feed(prop, *new_votes(PREVOTE, signers), *new_votes(PRECOMMIT, signers))) == []
    (d,) = decisions(node.feed(*new_votes(PRECOMMIT, [(1, 1)])))
    check_commit(new, d.commit)
    with pytest.raises(ValidatorSetMismatchError):
        verify_commit(old, CHAIN, d.commit)


def test_a_next_validator_set_that_the_header_does_not_name_is_refused() -> None:
    old, new = _two_sets()

    class LyingApp(SimApp):
        def next_validator_set(self, header: RelayHeader) -> ValidatorSet:
            return old

    app = LyingApp("v0", lambda h: old if h == 1 else new)
    node = make_node(0, app=app)
    a = app.make_block(1, 0)
    node.feed(proposal(1, 0, a), *votes([1, 2], PREVOTE, 0, a), *votes([1, 2], PRECOMMIT, 0, a))
    with pytest.raises(ValidatorSetMismatchError):
        node.timeout(TimeoutKind.COMMIT, 0, 1)


def test_a_key_whose_secp256k1_address_is_not_the_sets_is_refused() -> None:
    ed_seed = hashlib.sha256(b"parkrelay-test-seed/relay-consensus/0/0/ed25519").digest()
    key = ValidatorKey(ed_seed, hashlib.sha256(b"another secp256k1 key").digest())
    assert key.ed25519_pubkey == KEYS[0].ed25519_pubkey and key.eth_address != KEYS[0].eth_address
    with pytest.raises(ValidatorSetMismatchError):
        ConsensusCore(CFG, SimApp("x", lambda _h: VSET), VSET, 1, key)


def test_make_block_for_another_height_is_a_host_bug() -> None:
    class WrongApp(SimApp):
        def make_block(self, height: int, round_: int, salt: bytes = b"") -> tuple[bytes, object]:  # type: ignore[override]
            block, header = super().make_block(height, round_, salt)
            return block, dataclasses.replace(header, height=height + 1)

    with pytest.raises(HeaderError):
        make_node(1, app=WrongApp("v1", lambda _h: VSET))


def test_default_timeouts_grow_with_the_round() -> None:
    cfg = ConsensusConfig(ChainId("relay"))
    assert cfg.timeouts.duration_ms(TimeoutKind.PROPOSE, 2) == 4000
    assert cfg.timeouts.duration_ms(TimeoutKind.PREVOTE, 2) == 2000
    assert cfg.timeouts.duration_ms(TimeoutKind.COMMIT, 9) == 1000
