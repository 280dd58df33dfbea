"""Relay fees on a park's bridge (protocol SPEC §6.10): escrowed with a packet at commit, paid at settlement.

A send may carry ``fees = {verify, execute, confirm}`` in the park's fee denomination. :func:`escrow_fees` moves
their sum from the sender to :data:`FEE_ESCROW` and stores the fee record at :func:`fee_path`; :func:`settle_fees`
pays each step's fee to the payee the relay certified in the outcome record (``protocol.types.FeePayees``) and
refunds the payer every fee nobody earned, then deletes the record. So for every packet escrowed = paid + refunded,
and :data:`FEE_ESCROW` holds exactly the fees of the packets not settled yet. The fees are not part of the packet
or its commitment: a packet sent without fees relays exactly as before.

The Python parks and the Fabric chaincode share this module (both keep balances in a
:class:`chains.common.state.KVState`); the Solidity bridge implements the same rules (``ParkBridge.sol``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chains.common.state import KVState
from protocol.errors import CodecError
from protocol.types import UINT64_MAX, FeePayees, Packet, PacketOutcome

__all__ = [
    "FEE_ESCROW",
    "NO_FEES",
    "STEPS",
    "Fees",
    "escrow_fees",
    "fee_path",
    "fee_record",
    "parse_fees",
    "settle_fees",
]

FEE_ESCROW = "module:relay-fees"
"""Account holding the escrowed fees of the packets not settled yet (no key: nobody signs for it)."""

STEPS = ("verify", "execute", "confirm")
"""The relaying steps a fee pays for, in the order of the outcome record's payees."""


@dataclass(frozen=True, slots=True)
class Fees:
    """What a packet's sender offers for each relaying step, in the park's fee denomination."""

    verify: int = 0
    execute: int = 0
    confirm: int = 0

    @property
    def total(self) -> int:
        return self.verify + self.execute + self.confirm

    def __bool__(self) -> bool:
        return self.total > 0

    def of(self, step: str) -> int:
        return {"verify": self.verify, "execute": self.execute, "confirm": self.confirm}[step]

    def to_json(self) -> dict[str, int]:
        return {"verify": self.verify, "execute": self.execute, "confirm": self.confirm}


NO_FEES = Fees()


def parse_fees(value: Any) -> Fees:
    """Strictly parse a ``fees`` argument: an object with any of the three steps, each an int in 0..2^64-1."""
    if value is None:
        return NO_FEES
    if not isinstance(value, Mapping) or not set(value) <= set(STEPS):
        raise CodecError("fees are {verify?, execute?, confirm?}", expected=list(STEPS),
                         got=sorted(value) if isinstance(value, Mapping) else type(value).__name__)
    out: dict[str, int] = {}
    for step in STEPS:
        amount = value.get(step, 0)
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= UINT64_MAX:
            raise CodecError(f"the {step} fee is an integer in 0..2^64-1", got=amount)
        out[step] = amount
    return Fees(**out)


def fee_path(dst: str, lane: str, sequence: int) -> bytes:
    """The fee record of the packet this park sent to ``dst`` on ``lane`` at ``sequence``."""
    return f"fees/{dst}/{lane}/{sequence}".encode()


def escrow_fees(state: KVState, denom: str, packet: Packet, fees: Fees) -> dict[str, Any] | None:
    """Take the fees from the packet's sender into :data:`FEE_ESCROW` and store the fee record; return the
    ``fees`` field of the ``send_packet`` event (None: no fees). ``funds.insufficient`` if the sender is short
    (nothing written: the caller checked everything else first, and runs this before any other write)."""
    if not fees:
        return None
    state.sub_balance(packet.sender, denom, fees.total)  # raises before any write
    state.add_balance(FEE_ESCROW, denom, fees.total)
    state.set_json(fee_path(packet.dst_chain, packet.lane, packet.sequence),
                   {**fees.to_json(), "denom": denom, "payer": packet.sender})
    return {**fees.to_json(), "denom": denom}


def settle_fees(state: KVState, packet: Packet, outcome: PacketOutcome, payees: FeePayees,
                payable: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Pay each step's fee to its payee, refund the payer the rest, forget the record; return the events.

    ``payable`` says whether this park can credit a payee (a valid account name here). A timed-out packet's execute
    fee is refunded whatever the record says (the codec already refuses an execute payee on a timeout)."""
    key = fee_path(packet.dst_chain, packet.lane, packet.sequence)
    record = state.get_json(key)
    if record is None:
        return []
    denom, payer = record["denom"], record["payer"]
    ids = {"src": packet.src_chain, "dst": packet.dst_chain, "lane": packet.lane, "sequence": packet.sequence,
           "denom": denom}
    events: list[dict[str, Any]] = []
    for step, payee in zip(STEPS, payees.as_tuple(), strict=True):
        amount = int(record[step])
        if amount == 0:
            continue
        state.sub_balance(FEE_ESCROW, denom, amount)
        earned = bool(payee) and payable(payee) and not (step == "execute" and outcome is PacketOutcome.TIMED_OUT)
        if earned:
            state.add_balance(payee, denom, amount)
            events.append({"type": "fee_paid", **ids, "step": step, "payee": payee, "amount": amount})
        else:
            state.add_balance(payer, denom, amount)
            events.append({"type": "fee_refunded", **ids, "step": step, "to": payer, "amount": amount})
    state.delete(key)
    return events


def fee_record(state: KVState, dst: str, lane: str, sequence: int) -> Mapping[str, Any] | None:
    """The fee record of a packet not settled yet (None: none, or settled)."""
    raw: Mapping[str, Any] | None = state.get_json(fee_path(dst, lane, sequence))
    return raw
