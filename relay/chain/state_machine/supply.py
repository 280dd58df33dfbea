"""The supply accountant: no park unescrows more energy than was escrowed for it (SPEC.md §6.7, invariant I2).

It applies the bridge's denomination trace rule (SPEC §2.3, :mod:`chains.common.bridge`) to every
energy packet the relay verifies. For a packet ``p`` with denom ``D`` and ``prefix = p.lane/p.dst/``:

* **outbound** (``D`` does not start with ``prefix``): ``p.src`` escrows ``D`` and ``p.dst`` will mint the
  voucher ``p.lane/p.src/D``. The hop is ``(home=p.src, lane, remote=p.dst, D)``.
* **returning** (``D`` starts with ``prefix``): ``p.src`` burned a voucher and ``p.dst`` (its home) will
  unescrow ``D[len(prefix):]``. The hop is ``(home=p.dst, lane, remote=p.src, D[len(prefix):])``.

Per hop the relay keeps three amounts (Wh), at ``relay/supply/{home}/{lane}/{remote}/{denom}``:

``outstanding``
    vouchers the relay *knows* were minted on ``remote`` and not sent back: outbound packets whose
    success ack was confirmed, minus returning packets verified, plus returning packets refunded.
``outbound``
    outbound packets verified and not yet confirmed (they may still fail: error ack or timeout).
``returning``
    returning packets verified and not yet confirmed (already taken out of ``outstanding``).

Rules. Verify outbound: ``outbound += a``. Verify returning: refuse with ``funds.insufficient`` unless
``outstanding >= a``, then ``outstanding -= a; returning += a``. Outcome of an outbound packet:
``outbound -= a``, and on a success ack ``outstanding += a``. Outcome of a returning packet:
``returning -= a``, and on an error ack or timeout (the remote re-mints the voucher)
``outstanding += a``.

Why not one counter as SPEC §6.7 words it (``supply += a`` at verify)? Because an outbound packet can
still fail: with one counter, a (forged) returning packet verified while an outbound packet is in
flight could spend the in-flight amount, and the outbound packet's refund would then drive the
counter negative: home would unescrow for the returning packet *and* refund the sender, for one
escrow. Counting in-flight outbound amounts as not yet spendable closes that window. The cost is
liveness only: a returning packet is accepted once the acks of the outbound packets that minted its
vouchers are confirmed (a relayer can always prove them first: the remote wrote those receipts
before it burned the vouchers), so relayers confirm acks before verifying returning packets.

Invariant (tested): for a hop, ``outstanding + outbound + returning`` equals the home bridge's lane
escrow ``bridge/escrow/{remote}/{lane}/{denom}`` whenever every committed packet is verified and
every executed packet confirmed; at rest ``outstanding`` equals the remote's voucher supply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from chains.common.state import ChainState
from protocol.errors import InsufficientFundsError
from protocol.types import EnergyPayload, Packet
from relay.chain.state_machine.keys import supply_key
from relay.chain.state_machine.records import Staged

__all__ = ["Direction", "Hop", "SupplyChange", "apply_outcome", "apply_verify", "classify", "supply_record",
           "validate_verify"]

_FIELDS = ("outstanding", "outbound", "returning")


class Direction(enum.Enum):
    """Which way a packet moves a hop's asset."""

    OUTBOUND = "outbound"
    RETURNING = "returning"


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop of a denomination trace: ``denom`` escrowed by ``home`` on ``lane`` for ``remote``."""

    home: str
    """Chain where ``denom`` is escrowed (its home for this hop)."""
    lane: str
    """Lane of the hop."""
    remote: str
    """Chain holding the vouchers ``lane/home/denom``."""
    denom: str
    """Denom as it is on ``home`` (may itself be a voucher trace of an earlier hop)."""

    def key(self) -> bytes:
        return supply_key(self.home, self.lane, self.remote, self.denom)


@dataclass(frozen=True, slots=True)
class SupplyChange:
    """What an energy packet does to the accountant."""

    hop: Hop
    """The hop it moves."""
    direction: Direction
    """Out from home, or back home."""
    amount_wh: int
    """Amount, Wh."""


def classify(packet: Packet, energy: EnergyPayload) -> SupplyChange:
    """The hop and direction of an energy packet under the denomination trace rule (SPEC §2.3)."""
    prefix = f"{packet.lane}/{packet.dst_chain}/"
    if energy.denom.startswith(prefix):
        hop = Hop(packet.dst_chain, packet.lane, packet.src_chain, energy.denom[len(prefix):])
        return SupplyChange(hop, Direction.RETURNING, energy.amount_wh)
    return SupplyChange(Hop(packet.src_chain, packet.lane, packet.dst_chain, energy.denom), Direction.OUTBOUND,
                        energy.amount_wh)


def _record(staged: Staged, hop: Hop) -> dict[str, int]:
    return _record_at(staged, hop.key())


def _record_at(staged: Staged, key: bytes) -> dict[str, int]:
    raw = staged.get_json(key)
    if raw is None:
        return dict.fromkeys(_FIELDS, 0)
    # {f: int(raw[f]) for f in _FIELDS}, written out (phase 2 reads a hop's record once a packet)
    return {"outstanding": int(raw["outstanding"]), "outbound": int(raw["outbound"]),
            "returning": int(raw["returning"])}


def _put(staged: Staged, hop: Hop, rec: dict[str, int]) -> None:
    _put_at(staged, hop.key(), rec)


def _put_at(staged: Staged, key: bytes, rec: dict[str, int]) -> None:
    staged.put(key, rec if any(rec.values()) else None)


def validate_verify(staged: Staged, change: SupplyChange) -> None:
    """``funds.insufficient`` if a returning packet would unescrow more than is known outstanding."""
    if change.direction is Direction.RETURNING:
        rec = _record(staged, change.hop)
        if rec["outstanding"] < change.amount_wh:
            h = change.hop
            raise InsufficientFundsError(
                f"returning {h.lane}/{h.home}/{h.denom} from {h.remote}: more than the vouchers known outstanding "
                f"(confirm the acks of the outbound packets first; in flight out: {rec['outbound']})",
                expected=f"<= {rec['outstanding']}", got=change.amount_wh)


def apply_verify(staged: Staged, change: SupplyChange) -> None:
    key = change.hop.key()
    rec = _record_at(staged, key)
    if change.direction is Direction.OUTBOUND:
        rec["outbound"] += change.amount_wh
    else:
        rec["outstanding"] -= change.amount_wh
        rec["returning"] += change.amount_wh
    _put_at(staged, key, rec)


def apply_outcome(staged: Staged, change: SupplyChange, delivered: bool) -> None:
    """Settle a verified packet: ``delivered`` is a success ack; an error ack or a timeout is not."""
    rec = _record(staged, change.hop)
    if change.direction is Direction.OUTBOUND:
        rec["outbound"] -= change.amount_wh
        if delivered:
            rec["outstanding"] += change.amount_wh
    else:
        rec["returning"] -= change.amount_wh
        if not delivered:
            rec["outstanding"] += change.amount_wh
    _put(staged, change.hop, rec)


def supply_record(state: ChainState, home: str, lane: str, remote: str, denom: str) -> dict[str, Any]:
    """A query: the accountant's amounts for one hop (zeros if none)."""
    return _record(Staged(state), Hop(home, lane, remote, denom))
