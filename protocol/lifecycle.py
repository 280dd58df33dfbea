"""The packet lifecycle state machine (SPEC.md §6).

A packet's life spans three chains, but its state is one value that every component can reason about:

    COMMITTED --verify--> VERIFIED --execute--> EXECUTED --confirm_ack--> ACKED --settle--> COMPLETED
                                                                                      \\-> REFUNDED (error ack)
              VERIFIED --confirm_timeout--> TIMED_OUT --settle--> REFUNDED
    COMMITTED --confirm_timeout--> TIMED_OUT    (never verified: the commitment is proven with the timeout)

``settle`` after ACKED ends in COMPLETED for a success ack and REFUNDED for an error ack. Every
transition not listed raises :class:`~protocol.errors.IllegalTransitionError`.
"""

from __future__ import annotations

import enum

from protocol.errors import IllegalTransitionError


class PacketState(enum.Enum):
    """Where a packet is in the four phases."""

    COMMITTED = "committed"  # phase 1 done on the source
    VERIFIED = "verified"  # phase 2 done on the relay chain
    EXECUTED = "executed"  # phase 3 done on the target (receipt with an ack)
    ACKED = "acked"  # phase 4, relay half: ack certified
    TIMED_OUT = "timed_out"  # phase 4, relay half: absence of receipt past the timeout certified
    COMPLETED = "completed"  # phase 4, source half: success ack settled (escrow kept)
    REFUNDED = "refunded"  # phase 4, source half: error ack or timeout settled (escrow returned)


class PacketEvent(enum.Enum):
    """What moves a packet on."""

    VERIFY = "verify"
    EXECUTE = "execute"
    CONFIRM_ACK = "confirm_ack"
    CONFIRM_TIMEOUT = "confirm_timeout"
    SETTLE_SUCCESS = "settle_success"
    SETTLE_REFUND = "settle_refund"


TRANSITIONS: dict[tuple[PacketState, PacketEvent], PacketState] = {
    (PacketState.COMMITTED, PacketEvent.VERIFY): PacketState.VERIFIED,
    (PacketState.VERIFIED, PacketEvent.EXECUTE): PacketState.EXECUTED,
    (PacketState.EXECUTED, PacketEvent.CONFIRM_ACK): PacketState.ACKED,
    (PacketState.VERIFIED, PacketEvent.CONFIRM_TIMEOUT): PacketState.TIMED_OUT,
    # a packet the relay never verified (and now never will) still ends: SPEC §6.6 "Unverified timeout"
    (PacketState.COMMITTED, PacketEvent.CONFIRM_TIMEOUT): PacketState.TIMED_OUT,
    (PacketState.ACKED, PacketEvent.SETTLE_SUCCESS): PacketState.COMPLETED,
    (PacketState.ACKED, PacketEvent.SETTLE_REFUND): PacketState.REFUNDED,
    (PacketState.TIMED_OUT, PacketEvent.SETTLE_REFUND): PacketState.REFUNDED,
}
"""Every legal transition; anything else is illegal."""

FINAL_STATES = frozenset({PacketState.COMPLETED, PacketState.REFUNDED})


def transition(state: PacketState, event: PacketEvent) -> PacketState:
    """The state after ``event``, or :class:`IllegalTransitionError`."""
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        legal = sorted(e.value for (s, e) in TRANSITIONS if s is state)
        raise IllegalTransitionError(f"{event.value} is not allowed in state {state.value}", expected=legal,
                                     got=event.value)
    return nxt
