"""The rights accountant: each charging right is outstanding at most once per hop (SPEC.md §6.7, §2.3).

It applies the right-id trace rule (:mod:`chains.common.rights`) to every charging-right packet the relay
verifies, as the supply accountant (:mod:`relay.chain.state_machine.supply`) does to energy. For a packet ``p``
carrying right id ``R`` and ``prefix = p.lane/p.dst/``:

* **outbound** (``R`` does not start with ``prefix``): ``p.src`` escrows ``R`` and ``p.dst`` will mint
  ``p.lane/p.src/R``. The hop is ``(home=p.src, lane, remote=p.dst, R)``.
* **returning** (``R`` starts with ``prefix``): ``p.src`` burned its voucher and ``p.dst`` will un-escrow
  ``R[len(prefix):]``. The hop is ``(home=p.dst, lane, remote=p.src, R[len(prefix):])``.

Per hop the relay keeps one record at ``relay/rights/{home}/{lane}/{remote}/{right_id}``:
``{state, home_park, station, transformer, power_kw, slot_start_ms, slot_end_ms}``, ``state`` one of

``outbound``
    verified leaving ``home``, not yet confirmed (it may still fail);
``outstanding``
    its success ack confirmed: the voucher is known to live on ``remote`` (or further along);
``returning``
    verified on its way back from ``remote``, not yet confirmed.

Rules. Verify outbound: refuse with ``right.outstanding`` if the hop holds a record (the right left that
way and has not come back: a second copy); else record ``outbound`` with the right's fields. Verify
returning: refuse with ``right.not_outstanding`` unless the record is ``outstanding``, and with
``right.mismatch`` unless the packet's fields equal the recorded ones; then ``returning``. Outcome of an
outbound packet: a success ack makes it ``outstanding``, a failure forgets it. Outcome of a returning
packet: a success ack forgets it (it is home for this hop), a failure (the remote re-mints the voucher)
makes it ``outstanding`` again.

So a park that mints a voucher it never received, or returns a right with other fields, or twice, can
never make a home un-escrow it. As with energy, a faulty park can still misuse what is in its own custody
(a voucher it holds escrowed for a further hop, which the relay cannot tell from one it holds live), and a
return is accepted only once the ack of the departure it undoes is confirmed (``right.not_outstanding`` is
``after_progress``: relayers confirm acks first). Each hop of a multi-hop trace is its own record, so a
right two hops out is outstanding once on each hop and unwinds hop by hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chains.common.state import ChainState
from protocol.errors import RightMismatchError, RightNotOutstandingError, RightOutstandingError
from protocol.types import ChargingRightPayload, Packet
from relay.chain.state_machine.keys import rights_key
from relay.chain.state_machine.records import Staged
from relay.chain.state_machine.supply import Direction

__all__ = ["RightChange", "RightHop", "apply_outcome", "apply_verify", "classify", "right_record", "validate_verify"]

_FIELDS = ("home_park", "station", "transformer", "power_kw", "slot_start_ms", "slot_end_ms")


@dataclass(frozen=True, slots=True)
class RightHop:
    """One hop of a right's trace: ``right_id`` escrowed by ``home`` on ``lane`` for ``remote``."""

    home: str
    """Chain where the right is escrowed for this hop."""
    lane: str
    """Lane of the hop."""
    remote: str
    """Chain holding the voucher ``lane/home/right_id``."""
    right_id: str
    """The id as ``home`` holds it (a trace itself beyond the first hop)."""

    def key(self) -> bytes:
        return rights_key(self.home, self.lane, self.remote, self.right_id)


@dataclass(frozen=True, slots=True)
class RightChange:
    """What a charging-right packet does to the accountant."""

    hop: RightHop
    """The hop it moves."""
    direction: Direction
    """Out from home, or back home."""
    fields: dict[str, Any]
    """The right's fields, which never change along the trace."""


def classify(packet: Packet, right: ChargingRightPayload) -> RightChange:
    """The hop and direction of a right packet under the trace rule (SPEC §2.3)."""
    fields = {f: getattr(right, f) for f in _FIELDS}
    prefix = f"{packet.lane}/{packet.dst_chain}/"
    if right.right_id.startswith(prefix):
        hop = RightHop(packet.dst_chain, packet.lane, packet.src_chain, right.right_id[len(prefix):])
        return RightChange(hop, Direction.RETURNING, fields)
    return RightChange(RightHop(packet.src_chain, packet.lane, packet.dst_chain, right.right_id), Direction.OUTBOUND,
                       fields)


def _where(hop: RightHop) -> str:
    return f"{hop.lane}/{hop.home}/{hop.right_id} on {hop.remote}"


def validate_verify(staged: Staged, change: RightChange) -> None:
    """Refuse a second copy leaving over a hop, or a return the hop does not know outstanding with these fields."""
    rec = staged.get_json(change.hop.key())
    if change.direction is Direction.OUTBOUND:
        if rec is not None:
            raise RightOutstandingError(f"right {_where(change.hop)} already left over this hop and is not back",
                                        expected="no record", got=rec["state"])
        return
    if rec is None or rec["state"] != "outstanding":
        raise RightNotOutstandingError(
            f"returning right {_where(change.hop)} is not known outstanding (confirm the ack of its departure first)",
            expected="outstanding", got=None if rec is None else rec["state"])
    recorded = {f: rec[f] for f in _FIELDS}
    if recorded != change.fields:
        raise RightMismatchError(f"returning right {_where(change.hop)} differs from the right that left",
                                 expected=recorded, got=change.fields)


def apply_verify(staged: Staged, change: RightChange) -> None:
    if change.direction is Direction.OUTBOUND:
        staged.put(change.hop.key(), {"state": "outbound", **change.fields})
    else:
        staged.put(change.hop.key(), {**staged.get_json(change.hop.key()), "state": "returning"})


def apply_outcome(staged: Staged, change: RightChange, delivered: bool) -> None:
    """Settle a verified packet: ``delivered`` is a success ack; an error ack or a timeout is not."""
    rec = staged.get_json(change.hop.key())
    if rec is None:  # pragma: no cover - a verified packet always has its record
        return
    outbound = change.direction is Direction.OUTBOUND
    if delivered == outbound:  # outbound delivered, or returning refunded: the voucher lives on remote
        staged.put(change.hop.key(), {**rec, "state": "outstanding"})
    else:
        staged.put(change.hop.key(), None)


def right_record(state: ChainState, home: str, lane: str, remote: str, right_id: str) -> dict[str, Any] | None:
    """A query: the accountant's record of one hop of a right (None: not out over that hop)."""
    rec: dict[str, Any] | None = Staged(state).get_json(RightHop(home, lane, remote, right_id).key())
    return rec
