"""``evidence.submit``: equivocation evidence, jailing and the validator-set transition (SPEC.md §7.7).

Every refusal is checked for its exact typed error and for an unchanged relay state root, both at execution
and at mempool admission (``check_admission``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx
from protocol.certificate import Validator, ValidatorSet
from protocol.crypto import Ed25519Signer
from protocol.errors import (
    CodecError,
    EvidenceError,
    ProtocolError,
    ReplayError,
    SignatureError,
    StaleEvidenceError,
    ValidatorJailedError,
)
from protocol.types import ChainId
from relay.chain.consensus.messages import Vote, VoteType, encode_message, vote_sign_bytes
from relay.chain.state_machine import RelayStateMachine
from relay.chain.state_machine.evidence import (
    EVIDENCE_SUBMIT,
    MAX_EVIDENCE_AGE_BLOCKS,
    jailed_record,
    validator_history,
    validator_set_at,
)
from relay.chain.state_machine.governance import load_validator_set
from tests.unit.relay_state.harness import RELAY, RelayHarness

PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT
A, B = b"\xaa" * 32, b"\xbb" * 32


def vote(h: RelayHarness, who: int, vtype: VoteType, height: int, block: bytes | None, *, index: int | None = None,
         round_: int = 0, key: Ed25519Signer | None = None) -> Vote:
    """A vote signed with validator ``who``'s ed25519 key (the harness's validators have no eth address)."""
    signer = key or h.gov_keys[who]
    sig = signer.sign(vote_sign_bytes(ChainId(RELAY), vtype, height, round_, block))
    return Vote(vtype, height, round_, block, who if index is None else index, sig)


def ev_args(a: Vote, b: Vote, kind: str = "duplicate_vote") -> dict[str, Any]:
    return {"kind": kind, "a": encode_message(a).hex(), "b": encode_message(b).hex()}


def ev_tx(args: dict[str, Any], sender: str = "watcher", nonce: int = 0, signature: bytes = b"") -> Tx:
    return Tx(RELAY, sender, nonce, EVIDENCE_SUBMIT, args, signature)


def advance(h: RelayHarness, blocks: int) -> None:
    h.height += blocks


def submit(h: RelayHarness, tx: Tx) -> list[dict[str, Any]]:
    events = h.sm.execute_tx(h.state, tx, h.ctx())
    h.height += 1
    return events


def test_equivocation_jails_the_validator_and_the_next_height_has_the_new_set() -> None:
    h = RelayHarness()
    advance(h, 4)
    old = load_validator_set(h.state)
    a, b = vote(h, 1, PREVOTE, 5, A), vote(h, 1, PREVOTE, 5, B)
    h.sm.check_admission(h.state, ev_tx(ev_args(a, b)))  # the mempool admits it
    (ev,) = submit(h, ev_tx(ev_args(a, b)))  # in block 5
    new = load_validator_set(h.state)
    assert ev["type"] == "validator_jailed" and ev["validator"] == "v1" and ev["jailed_at"] == 5
    assert ev["effective_height"] == 6 and ev["next_set_hash"] == new.hash.hex()
    assert [v.name for v in new.validators] == ["v0", "v2", "v3"]
    assert [v.power for v in new.validators] == [1, 2, 2]
    assert jailed_record(h.state, old.validators[1].ed25519_pubkey) is not None
    assert validator_history(h.state) == [{"from_height": 1, "hash": old.hash.hex()},
                                          {"from_height": 6, "hash": new.hash.hex()}]
    assert validator_set_at(h.state, 5) == old and validator_set_at(h.state, 6) == new
    assert validator_set_at(h.state, 1000) == new


def test_a_nil_and_a_block_precommit_are_equivocation_too() -> None:
    h = RelayHarness()
    advance(h, 2)
    (ev,) = submit(h, ev_tx(ev_args(vote(h, 3, PRECOMMIT, 2, None), vote(h, 3, PRECOMMIT, 2, A))))
    assert ev["validator"] == "v3"


def test_two_jailings_in_one_block_leave_one_history_entry() -> None:
    h = RelayHarness()
    advance(h, 3)
    ctx = h.ctx()
    h.sm.execute_tx(h.state, ev_tx(ev_args(vote(h, 0, PREVOTE, 3, A), vote(h, 0, PREVOTE, 3, B))), ctx)
    h.sm.execute_tx(h.state, ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B))), ctx)
    assert [v.name for v in load_validator_set(h.state).validators] == ["v2", "v3"]
    assert [e["from_height"] for e in validator_history(h.state)] == [1, 5]


def test_evidence_of_an_earlier_height_is_checked_against_that_heights_set() -> None:
    h = RelayHarness()
    advance(h, 4)
    submit(h, ev_tx(ev_args(vote(h, 0, PREVOTE, 5, A), vote(h, 0, PREVOTE, 5, B))))  # v0 out from height 6
    advance(h, 3)
    # v2 equivocated at height 3, when it was index 2 of the genesis set: still punishable
    (ev,) = submit(h, ev_tx(ev_args(vote(h, 2, PREVOTE, 3, A), vote(h, 2, PREVOTE, 3, B))))
    assert ev["validator"] == "v2"
    assert [v.name for v in load_validator_set(h.state).validators] == ["v1", "v3"]


# --- refusals: typed error, nothing changes ----------------------------------------------------------------

Prepare = Callable[[RelayHarness], Tx]


def _forged(h: RelayHarness) -> Tx:
    b = vote(h, 1, PREVOTE, 3, B, key=Ed25519Signer(hashlib.sha256(b"not-v1").digest()))
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), b))


def _wrong_heights_set(h: RelayHarness) -> Tx:
    # v0 is jailed from height 4; at height 6, index 1 is v2, so v1's votes that claim index 1 do not verify
    submit(h, ev_tx(ev_args(vote(h, 0, PREVOTE, 3, A), vote(h, 0, PREVOTE, 3, B))))
    advance(h, 3)
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 6, A), vote(h, 1, PREVOTE, 6, B)))


def _duplicate(h: RelayHarness) -> Tx:
    tx = ev_tx(ev_args(vote(h, 2, PREVOTE, 3, A), vote(h, 2, PREVOTE, 3, B)))
    submit(h, tx)
    return ev_tx(ev_args(vote(h, 2, PREVOTE, 3, B), vote(h, 2, PREVOTE, 3, A)), sender="another")


def _already_jailed(h: RelayHarness) -> Tx:
    submit(h, ev_tx(ev_args(vote(h, 2, PREVOTE, 3, A), vote(h, 2, PREVOTE, 3, B))))
    return ev_tx(ev_args(vote(h, 2, PRECOMMIT, 3, A), vote(h, 2, PRECOMMIT, 3, B)))


def _non_validator(h: RelayHarness) -> Tx:
    outsider = Ed25519Signer(hashlib.sha256(b"outsider").digest())
    return ev_tx(ev_args(vote(h, 0, PREVOTE, 3, A, index=4, key=outsider),
                         vote(h, 0, PREVOTE, 3, B, index=4, key=outsider)))


def _no_conflict(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, A)))


def _two_validators(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 2, PREVOTE, 3, B)))


def _two_rounds(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B, round_=1)))


def _prevote_and_precommit(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PRECOMMIT, 3, B)))


def _future(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 9, A), vote(h, 1, PREVOTE, 9, B)))


def _stale(h: RelayHarness) -> Tx:
    advance(h, MAX_EVIDENCE_AGE_BLOCKS + 5)
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B)))


def _last_validator(h: RelayHarness) -> Tx:
    for i in (0, 1, 2):
        submit(h, ev_tx(ev_args(vote(h, i, PREVOTE, 3, A), vote(h, i, PREVOTE, 3, B))))
    return ev_tx(ev_args(vote(h, 3, PREVOTE, 3, A), vote(h, 3, PREVOTE, 3, B)))


def _malformed(change: Callable[[dict[str, Any]], dict[str, Any]]) -> Prepare:
    def prepare(h: RelayHarness) -> Tx:
        return ev_tx(change(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B))))
    return prepare


def _signed_tx(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B)), signature=b"\x01" * 64)


def _nonce(h: RelayHarness) -> Tx:
    return ev_tx(ev_args(vote(h, 1, PREVOTE, 3, A), vote(h, 1, PREVOTE, 3, B)), nonce=1)


CASES: list[tuple[str, Prepare, type[ProtocolError]]] = [
    ("forged signature", _forged, SignatureError),
    ("another height's set", _wrong_heights_set, SignatureError),
    ("duplicate", _duplicate, ReplayError),
    ("already jailed", _already_jailed, ValidatorJailedError),
    ("not a validator", _non_validator, EvidenceError),
    ("same value twice", _no_conflict, EvidenceError),
    ("two validators", _two_validators, EvidenceError),
    ("two rounds", _two_rounds, EvidenceError),
    ("prevote and precommit", _prevote_and_precommit, EvidenceError),
    ("future height", _future, EvidenceError),
    ("stale", _stale, StaleEvidenceError),
    ("last validator", _last_validator, EvidenceError),
    ("unknown kind", _malformed(lambda a: {**a, "kind": "double_sign"}), CodecError),
    ("proposal kind with votes", _malformed(lambda a: {**a, "kind": "conflicting_proposal"}), CodecError),
    ("extra argument", _malformed(lambda a: {**a, "x": 1}), CodecError),
    ("missing argument", _malformed(lambda a: {"kind": a["kind"], "a": a["a"]}), CodecError),
    ("not hex", _malformed(lambda a: {**a, "a": "zz"}), CodecError),
    ("upper-case hex", _malformed(lambda a: {**a, "a": a["a"].upper()}), CodecError),
    ("truncated message", _malformed(lambda a: {**a, "b": a["b"][:-2]}), CodecError),
    ("message not a string", _malformed(lambda a: {**a, "b": 7}), CodecError),
    ("oversized message", _malformed(lambda a: {**a, "b": "00" * (300 * 1024)}), CodecError),
    ("signed transaction", _signed_tx, CodecError),
    ("nonce 1", _nonce, CodecError),
]


@pytest.mark.parametrize(("name", "prepare", "error"), CASES, ids=[c[0] for c in CASES])
def test_refused_evidence_changes_nothing(name: str, prepare: Prepare, error: type[ProtocolError]) -> None:
    h = RelayHarness()
    advance(h, 3)
    tx = prepare(h)
    root = h.root
    with pytest.raises(error) as info:
        h.sm.execute_tx(h.state, tx, h.ctx())
    assert type(info.value) is error and info.value.code == error.code, info.value
    assert h.root == root
    if error is not StaleEvidenceError and name != "future height":  # admission skips the age checks
        with pytest.raises(error):
            h.sm.check_admission(h.state, tx)
    assert h.root == root


# --- genesis: repeated keys ------------------------------------------------------------------------------


def _genesis(validators: list[Validator]) -> dict[str, Any]:
    return {"chain_id": RELAY, "validators": {"validators": [
        {"name": v.name, "ed25519_pubkey": v.ed25519_pubkey.hex(), "eth_address": v.eth_address.hex(),
         "power": v.power} for v in validators]}, "clients": {}, "lanes": []}


def _key(i: int) -> bytes:
    return Ed25519Signer(hashlib.sha256(f"genesis-{i}".encode()).digest()).pubkey


def test_genesis_refuses_a_repeated_ethereum_address() -> None:
    addr = b"\x11" * 20
    cfg = _genesis([Validator("a", _key(0), addr, 1), Validator("b", _key(1), addr, 1)])
    with pytest.raises(CodecError, match="Ethereum address"):
        RelayStateMachine(RELAY, []).init_genesis(ChainState(), cfg)


def test_genesis_refuses_a_repeated_ed25519_key() -> None:
    cfg = _genesis([Validator("a", _key(0), b"\x11" * 20, 1), Validator("b", _key(0), b"\x22" * 20, 1)])
    with pytest.raises(CodecError):
        RelayStateMachine(RELAY, []).init_genesis(ChainState(), cfg)


def test_genesis_allows_several_validators_without_an_ethereum_key() -> None:
    state = ChainState()
    cfg = _genesis([Validator("a", _key(0), bytes(20), 1), Validator("b", _key(1), bytes(20), 1)])
    RelayStateMachine(RELAY, []).init_genesis(state, cfg)
    assert load_validator_set(state) == wire.validator_set_from_json(cfg["validators"])
    assert validator_set_at(state, 1) == load_validator_set(state)


def test_block_context_height_is_the_jail_height() -> None:
    h = RelayHarness()
    tx = ev_tx(ev_args(vote(h, 3, PREVOTE, 7, A), vote(h, 3, PREVOTE, 7, B)))
    (ev,) = h.sm.execute_tx(h.state, tx, BlockContext(RELAY, 40, h.net.now_ms, "v0"))
    assert (ev["jailed_at"], ev["effective_height"]) == (40, 41)
    assert isinstance(validator_set_at(h.state, 41), ValidatorSet)
