"""The signing-safety record: which signatures it allows, how it carries the lock, how it persists."""

from __future__ import annotations

import json

import pytest

from protocol.errors import CodecError
from relay.chain.consensus import SignState, SignStep, VoteType
from relay.chain.consensus.messages import encode_message, sign_vote
from relay.chain.consensus.sign_state import MAX_KEPT_VOTES
from tests.unit.relay_consensus.sim import CHAIN, SimApp, make_vset, validator_key

A = b"\xaa" * 32
B = b"\xbb" * 32
VSET = make_vset([validator_key(i) for i in range(4)], [1, 1, 1, 1])
BLOCK, HEADER = SimApp("t", lambda _h: VSET).make_block(1, 0)

LAST = SignState(height=5, round=2, step=SignStep.PREVOTE, sign_bytes=A)
KEY = validator_key(0)


def _vote(height: int, round_: int, vtype: VoteType = VoteType.PREVOTE) -> bytes:
    return encode_message(sign_vote(KEY, CHAIN, vtype, height, round_, None, 0, with_secp256k1=True))


@pytest.mark.parametrize(("name", "height", "round_", "step", "sign_bytes", "allowed"), [
    ("same message again (restart)", 5, 2, SignStep.PREVOTE, A, True),
    ("another prevote, same round", 5, 2, SignStep.PREVOTE, B, False),
    ("proposal after the prevote, same round", 5, 2, SignStep.PROPOSE, B, False),
    ("precommit after the prevote", 5, 2, SignStep.PRECOMMIT, B, True),
    ("earlier round", 5, 1, SignStep.PRECOMMIT, B, False),
    ("later round", 5, 3, SignStep.PROPOSE, B, True),
    ("earlier height", 4, 9, SignStep.PRECOMMIT, B, False),
    ("later height", 6, 0, SignStep.PROPOSE, B, True),
], ids=lambda v: v if isinstance(v, str) else "")
def test_allows(name: str, height: int, round_: int, step: SignStep, sign_bytes: bytes, allowed: bool) -> None:
    assert LAST.allows(height, round_, step, sign_bytes) is allowed


def test_a_fresh_record_allows_anything() -> None:
    assert SignState().allows(1, 0, SignStep.PROPOSE, A)


def test_the_lock_follows_precommits_and_resets_at_a_new_height() -> None:
    s = SignState().signed(1, 0, SignStep.PREVOTE, A)
    assert s.locked_round == -1
    s = s.signed(1, 0, SignStep.PRECOMMIT, B, lock=(HEADER, BLOCK))
    assert (s.locked_round, s.locked_header, s.locked_block) == (0, HEADER, BLOCK)
    s = s.signed(1, 1, SignStep.PRECOMMIT, A)  # a nil precommit keeps the lock
    assert (s.height, s.round, s.step, s.locked_round) == (1, 1, SignStep.PRECOMMIT, 0)
    s = s.signed(2, 0, SignStep.PREVOTE, B)
    assert (s.locked_round, s.locked_header, s.locked_block) == (-1, None, b"")


@pytest.mark.parametrize("state", [
    SignState(),
    LAST,
    SignState(1, 3, SignStep.PRECOMMIT, A, 2, HEADER, BLOCK),
    SignState(1, 3, SignStep.PRECOMMIT, A, 2, HEADER, BLOCK, (_vote(1, 2), _vote(1, 3, VoteType.PRECOMMIT))),
], ids=["empty", "no lock", "locked", "with votes"])
def test_json_round_trip(state: SignState) -> None:
    assert SignState.from_json(state.to_json()) == state
    # the record a node stored before orjson wrote it (the standard library's separators) reads the same
    reference = json.dumps(json.loads(state.to_json()), sort_keys=True)
    assert SignState.from_json(reference) == state and json.loads(reference) == json.loads(state.to_json())


def _doc(**changes: object) -> str:
    obj = json.loads(SignState(1, 3, SignStep.PRECOMMIT, A, 2, HEADER, BLOCK).to_json())
    obj.update(changes)
    return json.dumps(obj)


@pytest.mark.parametrize(("name", "text"), [
    ("not JSON", "{"),
    ("not an object", "[]"),
    ("missing field", json.dumps({"version": 1})),
    ("extra field", _doc(extra=1)),
    ("other version", _doc(version=3)),
    ("version 1 with votes", _doc(version=1)),
    ("votes not a list", _doc(votes="00")),
    ("vote not hex", _doc(votes=["zz"])),
    ("vote malformed", _doc(votes=["00" * 40])),
    ("vote of another height", _doc(votes=[_vote(2, 0).hex()])),
    ("too many votes", _doc(votes=[_vote(1, r).hex() for r in range(MAX_KEPT_VOTES + 1)])),
    ("negative height", _doc(height=-1)),
    ("bool round", _doc(round=True)),
    ("step 4", _doc(step=4)),
    ("sign bytes not hex", _doc(sign_bytes="zz")),
    ("sign bytes 31", _doc(sign_bytes="00" * 31)),
    ("signed but no sign bytes", _doc(sign_bytes="")),
    ("lock after the record's round", _doc(locked_round=4)),
    ("lock header of another height", _doc(height=2, round=3)),
    ("locked block but no locked round", _doc(locked_round=-1)),
    ("locked header malformed", _doc(locked_header="00")),
])
def test_from_json_refuses_anything_else(name: str, text: str) -> None:
    with pytest.raises(CodecError):
        SignState.from_json(text)


def test_a_version_1_record_is_still_read_without_votes() -> None:
    obj = json.loads(SignState(1, 3, SignStep.PRECOMMIT, A, 2, HEADER, BLOCK).to_json())
    del obj["votes"]
    obj["version"] = 1
    assert SignState.from_json(json.dumps(obj)) == SignState(1, 3, SignStep.PRECOMMIT, A, 2, HEADER, BLOCK)


def test_votes_are_kept_per_height_and_bounded() -> None:
    s = SignState().signed(1, 0, SignStep.PREVOTE, A, vote=_vote(1, 0))
    s = s.signed(1, 0, SignStep.PRECOMMIT, B, vote=_vote(1, 0, VoteType.PRECOMMIT))
    assert s.votes == (_vote(1, 0), _vote(1, 0, VoteType.PRECOMMIT))
    for r in range(1, MAX_KEPT_VOTES + 2):
        s = s.signed(1, r, SignStep.PREVOTE, A, vote=_vote(1, r))
    assert len(s.votes) == MAX_KEPT_VOTES and s.votes[-1] == _vote(1, MAX_KEPT_VOTES + 1)
    assert s.signed(2, 0, SignStep.PREVOTE, A, vote=_vote(2, 0)).votes == (_vote(2, 0),)
