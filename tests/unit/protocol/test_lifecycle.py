"""The packet lifecycle (SPEC.md §6.1): every legal transition, every illegal one, and the spec's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import protocol
from protocol.errors import IllegalTransitionError
from protocol.lifecycle import FINAL_STATES, TRANSITIONS, PacketEvent, PacketState, transition

S, E = PacketState, PacketEvent

LEGAL = [
    (S.COMMITTED, E.VERIFY, S.VERIFIED),
    (S.VERIFIED, E.EXECUTE, S.EXECUTED),
    (S.EXECUTED, E.CONFIRM_ACK, S.ACKED),
    (S.VERIFIED, E.CONFIRM_TIMEOUT, S.TIMED_OUT),
    (S.COMMITTED, E.CONFIRM_TIMEOUT, S.TIMED_OUT),
    (S.ACKED, E.SETTLE_SUCCESS, S.COMPLETED),
    (S.ACKED, E.SETTLE_REFUND, S.REFUNDED),
    (S.TIMED_OUT, E.SETTLE_REFUND, S.REFUNDED),
]
ILLEGAL = [(s, e) for s in S for e in E if (s, e) not in {(a, b) for a, b, _ in LEGAL}]


@pytest.mark.parametrize(("state", "event", "nxt"), LEGAL, ids=[f"{s.value}-{e.value}" for s, e, _ in LEGAL])
def test_legal_transition(state: PacketState, event: PacketEvent, nxt: PacketState) -> None:
    assert transition(state, event) is nxt


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL])
def test_illegal_transition(state: PacketState, event: PacketEvent) -> None:
    with pytest.raises(IllegalTransitionError) as info:
        transition(state, event)
    assert info.value.code == "lifecycle.illegal"
    assert info.value.got == event.value
    assert info.value.expected == sorted(e.value for (s, e), _ in TRANSITIONS.items() if s is state)


def test_the_table_is_exactly_the_legal_list() -> None:
    assert TRANSITIONS == {(s, e): n for s, e, n in LEGAL}
    assert len(ILLEGAL) == 34


def test_final_states_have_no_way_out_and_every_state_is_reachable() -> None:
    assert {S.COMPLETED, S.REFUNDED} == FINAL_STATES
    assert not [k for k in TRANSITIONS if k[0] in FINAL_STATES]
    reachable, frontier = {S.COMMITTED}, [S.COMMITTED]
    while frontier:
        s = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is s and dst not in reachable:
                reachable.add(dst)
                frontier.append(dst)
    assert reachable == set(S)
    # every non-final state can still finish
    for s in set(S) - FINAL_STATES:
        assert any(src is s for src, _ in TRANSITIONS)


def test_exactly_once_no_second_execution_or_settlement() -> None:
    s = transition(transition(S.COMMITTED, E.VERIFY), E.EXECUTE)
    for again in (E.EXECUTE, E.VERIFY, E.CONFIRM_TIMEOUT):
        with pytest.raises(IllegalTransitionError):
            transition(s, again)
    done = transition(transition(s, E.CONFIRM_ACK), E.SETTLE_SUCCESS)
    for e in E:
        with pytest.raises(IllegalTransitionError):
            transition(done, e)


def test_spec_table_matches_transitions() -> None:
    spec = (Path(protocol.__file__).parent / "SPEC.md").read_text(encoding="utf-8")
    section = spec.split("### §6.1", 1)[1].split("### §6.2", 1)[0]
    rows = re.findall(r"^\| ([A-Z_]+) \| `([a-z_]+)` \| ([A-Z_]+) \|", section, re.MULTILINE)
    table = {(S[a], E(e)): S[b] for a, e, b in rows}
    assert table == TRANSITIONS


def test_a_never_verified_packet_can_still_end() -> None:
    """Issue 9: a packet the relay never verified times out (its commitment proven with the timeout) and
    is refunded; once timed out it can no longer be verified."""
    timed_out = transition(S.COMMITTED, E.CONFIRM_TIMEOUT)
    assert transition(timed_out, E.SETTLE_REFUND) is S.REFUNDED
    for e in (E.VERIFY, E.EXECUTE, E.CONFIRM_ACK, E.CONFIRM_TIMEOUT, E.SETTLE_SUCCESS):
        with pytest.raises(IllegalTransitionError):
            transition(timed_out, e)
