"""From a detected equivocation to a consensus on the smaller set (SPEC.md §7.7).

The evidence a core reports (:class:`EvidenceFound`) is what a node submits as ``evidence.submit``: the relay
state machine accepts it, jails the validator, and the set it leaves in state is the one the decided header
names as next; the core switches to it at the next height, where the jailed validator's votes no longer count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx
from protocol.certificate import ValidatorSet, verify_commit
from protocol.errors import SignatureError, ValidatorSetMismatchError
from relay.chain.consensus import EvidenceFound, TimeoutKind, proposer_index
from relay.chain.consensus.messages import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    sign_proposal,
    sign_vote,
)
from relay.chain.state_machine import RelayStateMachine
from relay.chain.state_machine.evidence import EVIDENCE_SUBMIT, evidence_args
from relay.chain.state_machine.governance import load_validator_set
from tests.unit.relay_consensus.harness import (
    KEYS,
    PRECOMMIT,
    PREVOTE,
    VSET,
    block_at,
    decisions,
    make_node,
    proposal,
    vote,
    votes,
)
from tests.unit.relay_consensus.sim import CHAIN, check_commit


def relay_state() -> tuple[RelayStateMachine, ChainState]:
    sm, state = RelayStateMachine(CHAIN, []), ChainState()
    sm.init_genesis(state, {"chain_id": CHAIN, "validators": wire.validator_set_to_json(VSET), "clients": {},
                            "lanes": []})
    return sm, state


def jail(ev: Evidence, height: int) -> tuple[ValidatorSet, list[dict[str, object]]]:
    """Submit ``ev`` as a node does; returns the set the block leaves in state and the events."""
    sm, state = relay_state()
    tx = Tx(CHAIN, "relay-0", 0, EVIDENCE_SUBMIT, evidence_args(ev), b"")
    sm.check_admission(state, tx)
    events = sm.execute_tx(state, tx, BlockContext(CHAIN, height, 1, ""))
    return load_validator_set(state), events


def test_a_double_prevote_seen_by_a_node_jails_its_signer_and_the_next_height_runs_without_it() -> None:
    a = block_at(1)
    node0 = make_node(0)
    node0.feed(proposal(1, 0, a))
    out = node0.feed(vote(3, PREVOTE, 0, a), vote(3, PREVOTE, 0, b"\x77" * 32))  # validator 3 equivocates
    (ev,) = [o.evidence for o in out if isinstance(o, EvidenceFound)]
    assert isinstance(ev, DuplicateVoteEvidence)
    new, (event,) = jail(ev, 1)
    assert event["validator"] == "v3" and event["effective_height"] == 2
    assert [v.ed25519_pubkey for v in new.validators] == [k.ed25519_pubkey for k in KEYS[:3]]

    # a node whose application says: height 1 signed by the four, height 2 on by the three
    node = make_node(0, sets=lambda h: VSET if h == 1 else new)
    a = node.app.make_block(1, 0)
    assert a[1].next_validators_hash == new.hash
    node.feed(proposal(1, 0, a), *votes([1, 2, 3], PREVOTE, 0, a), *votes([1, 2, 3], PRECOMMIT, 0, a))
    node.timeout(TimeoutKind.COMMIT, 0, 1)
    assert node.core.height == 2 and node.core.validator_set == new

    a2 = node.app.make_block(2, 0)
    with pytest.raises(SignatureError):  # the jailed validator's index is outside the new set
        node.feed(sign_vote(KEYS[3], CHAIN, PREVOTE, 2, 0, a2[1].hash(), 3, with_secp256k1=True))
    p = proposer_index(new, 2, 0)
    prop = sign_proposal(KEYS[p], CHAIN, 2, 0, -1, a2[1], a2[0], p)
    pre = [sign_vote(KEYS[i], CHAIN, t, 2, 0, a2[1].hash(), i, with_secp256k1=True)
           for t in (PREVOTE, PRECOMMIT) for i in (1, 2)]
    out = node.feed(prop, *pre)  # with validator 0 (the node itself): all three of the new set
    (d,) = decisions(out)
    check_commit(new, d.commit)
    with pytest.raises(ValidatorSetMismatchError):  # a bridge still on the old set must be rotated first
        verify_commit(VSET, CHAIN, d.commit)


def test_a_set_of_three_needs_all_three() -> None:
    """1 + 1 of 3 is no quorum: the jailed validator's power is gone, not moved to anyone."""
    new = ValidatorSet(VSET.validators[:3])
    node = make_node(0, sets=lambda h: VSET if h == 1 else new)
    a = node.app.make_block(1, 0)
    node.feed(proposal(1, 0, a), *votes([1, 2], PREVOTE, 0, a), *votes([1, 2, 3], PRECOMMIT, 0, a))
    node.timeout(TimeoutKind.COMMIT, 0, 1)
    a2 = node.app.make_block(2, 0)
    one = [sign_vote(KEYS[1], CHAIN, t, 2, 0, a2[1].hash(), 1, with_secp256k1=True) for t in (PREVOTE, PRECOMMIT)]
    p = proposer_index(new, 2, 0)
    prop = [sign_proposal(KEYS[p], CHAIN, 2, 0, -1, a2[1], a2[0], p)] if p != 0 else []
    assert decisions(node.feed(*prop, *one)) == []  # validators 0 and 1: 2 of 3
    (d,) = decisions(node.feed(*[sign_vote(KEYS[2], CHAIN, t, 2, 0, a2[1].hash(), 2, with_secp256k1=True)
                                 for t in (PREVOTE, PRECOMMIT)]))
    assert len(d.commit.signatures) == 3


def test_two_proposals_seen_by_a_node_jail_the_proposer() -> None:
    node = make_node(0)
    node.feed(proposal(1, 0, block_at(1)))
    out = node.feed(proposal(1, 0, block_at(1, 0, b"C")))
    (ev,) = [o.evidence for o in out if isinstance(o, EvidenceFound)]
    assert isinstance(ev, ConflictingProposalEvidence)
    new, (event,) = jail(ev, 3)
    assert event["validator"] == "v1" and len(new.validators) == 3


def test_a_relay_block_must_name_the_set_its_state_leaves_as_next() -> None:
    """The relay node's end-of-block check (relay/chain/node.py): a header naming another next set is refused."""
    from protocol.certificate import RelayHeader
    from relay.chain.node import RelayBlockHeader, RelayRules

    rules = RelayRules({"chain_id": CHAIN, "validators": wire.validator_set_to_json(VSET), "clients": {},
                        "lanes": []}, None, None)
    _, state = rules.genesis()
    parent: object = None

    def header(next_hash: bytes) -> RelayBlockHeader:
        return RelayBlockHeader(RelayHeader(CHAIN, 1, 1, bytes(32), bytes(32), state.root, VSET.hash, next_hash),
                                None)

    assert rules.end_block(state, header(VSET.hash), parent) == []  # type: ignore[arg-type]
    smaller = ValidatorSet(VSET.validators[:3])
    with pytest.raises(ValidatorSetMismatchError):
        rules.end_block(state, header(smaller.hash), parent)  # type: ignore[arg-type]


def test_the_relay_mempool_keeps_evidence_until_it_lands_or_is_refused(tmp_path: Path) -> None:
    """An evidence.submit has no account: the runtime's nonce-run pruning would drop it at the next head."""
    from dataclasses import replace

    from chains.common.node import NodeConfig
    from relay.chain.node import make_relay_node

    genesis = {"chain_id": CHAIN, "validators": wire.validator_set_to_json(VSET), "clients": {}, "lanes": []}
    node = make_relay_node(genesis, "op-a", None, NodeConfig("op-a", tmp_path))
    try:
        a = block_at(1)
        ev = DuplicateVoteEvidence(vote(3, PREVOTE, 0, a), vote(3, PREVOTE, 0, b"\x77" * 32))
        tx = Tx(CHAIN, "op-a", 0, EVIDENCE_SUBMIT, evidence_args(ev), b"")
        h = node.submit_tx(tx)
        forged = Tx(CHAIN, "op-b", 0, EVIDENCE_SUBMIT,
                    evidence_args(replace(ev, vote_b=replace(ev.vote_b, ed25519_sig=bytes(64)))), b"")
        node.mempool[forged.hash()] = forged  # as if admitted before the state moved
        node._prune_mempool()
        assert list(node.mempool) == [h]
        other = DuplicateVoteEvidence(vote(2, PREVOTE, 0, a), vote(2, PREVOTE, 0, b"\x66" * 32))
        second = node.submit_tx(Tx(CHAIN, "op-a", 0, EVIDENCE_SUBMIT, evidence_args(other), b""))
        assert set(node.mempool) == {h, second}, "two reports a node names after itself (nonce 0) wait side by side"
    finally:
        node.db.close()
