"""Protocol data types (SPEC.md §2–§4): identifiers, packets, payloads, acknowledgements.

Every type is a frozen, slotted dataclass. Times are integer milliseconds since the Unix epoch
(``*_ms``); energy amounts are integer watt-hours (``amount_wh``), so no value is ever a float.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NewType

from protocol.errors import CodecError

ChainId = NewType("ChainId", str)
"""A chain's id, unique in a deployment (``dpos-park``, ``relay``...)."""
LaneId = NewType("LaneId", str)
"""A lane between one source chain and one target chain (``lane-0``)."""
ClientId = NewType("ClientId", str)
"""A light client's id on its host: ``<client_type>-<n>``, never reused."""
Height = NewType("Height", int)
"""A block height, >= 0."""
TimestampMs = NewType("TimestampMs", int)
"""Milliseconds since the Unix epoch."""

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid identifier (lowercase, 1-64 chars, ``[a-z0-9._-]``), else raise."""
    # fullmatch, not match with `$`: `$` also matches before a trailing newline
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise CodecError(f"invalid {kind} id", expected="[a-z0-9][a-z0-9._-]{0,63}", got=value)
    return value


def check_uint(kind: str, value: int, maximum: int = UINT64_MAX) -> int:
    """Return ``value`` if it is an int in [0, maximum], else raise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise CodecError(f"{kind} out of range", expected=f"0..{maximum}", got=value)
    return value


class PacketKind(enum.IntEnum):
    """What a packet carries; its numeric value is the ``kind`` byte of the encoding."""

    ENERGY = 1
    CHARGING_RIGHT = 2
    REPUTATION = 3


@dataclass(frozen=True, slots=True)
class Packet:
    """One cross-chain action from a source park to a target park (SPEC.md §2.1)."""

    src_chain: ChainId
    """Chain that committed the packet (phase 1)."""
    dst_chain: ChainId
    """Chain that executes it (phase 3)."""
    lane: LaneId
    """Lane between ``src_chain`` and ``dst_chain``; sequences are per (src, dst, lane)."""
    sequence: int
    """1, 2, 3... on the lane, assigned by the source bridge."""
    kind: PacketKind
    """What the payload is."""
    payload: bytes
    """Canonical encoding of the kind's payload type (:mod:`protocol.codec`)."""
    sender: str
    """Account on the source chain that sent it."""
    receiver: str
    """Account on the target chain that receives it."""
    timeout_timestamp_ms: int
    """Target block time (ms) at or after which the packet can no longer execute; never 0."""


@dataclass(frozen=True, slots=True)
class EnergyPayload:
    """Fungible energy (ICS-20-like). ``denom`` is ``kWh`` at home or a trace ``<lane>/<src>/.../kWh``."""

    denom: str
    """Denomination with its trace; the base is the home chain's token name."""
    amount_wh: int
    """Amount in watt-hours, > 0."""


@dataclass(frozen=True, slots=True)
class ChargingRightPayload:
    """A non-fungible EV charging right (docs/architecture.md §4): a kW slot on a station behind a transformer."""

    right_id: str
    """Id of the right at its home park."""
    home_park: ChainId
    """Chain that issued the right and escrows it while abroad."""
    station: str
    """Charging station the right was issued for at home."""
    transformer: str
    """Transformer the target must admit the load on."""
    power_kw: int
    """Charging power of the right, kW."""
    slot_start_ms: int
    """Start of the charging slot (ms); the packet's timeout lies before it."""
    slot_end_ms: int
    """End of the charging slot (ms), > start."""


@dataclass(frozen=True, slots=True)
class ReputationPayload:
    """An attestation of a subject's credit or reputation score by its home park (docs/architecture.md §4)."""

    subject: str
    """Account or node the score is about."""
    score: int
    """Score in the model's integer units (e.g. credit 0..10000)."""
    model: str
    """Scoring model id (``dpos-witness-credit/v1``, ``dr-aggregator-reputation/v1``)."""
    source_height: int
    """Height of the source chain at which the score was read."""


class AckStatus(enum.IntEnum):
    """Outcome written by the target bridge in phase 3."""

    SUCCESS = 1
    ERROR = 2


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The target's answer to a packet, stored as its receipt (SPEC.md §2.3)."""

    status: AckStatus
    """Success, or an error that makes the source refund."""
    code: str
    """``ok`` on success, else a stable error code (``receiver.refused``, ``capacity.exceeded``...)."""
    result: bytes
    """Kind-specific result bytes (may be empty)."""
    relayer: str = ""
    """Relay-chain account that executed the packet and earns its execute fee (SPEC.md §6.10); empty: none named."""

    @property
    def success(self) -> bool:
        return self.status is AckStatus.SUCCESS


@dataclass(frozen=True, slots=True)
class FeePayees:
    """Who earned each relaying step's fee of a packet (SPEC.md §6.10): payees on the *source* park, as the relay
    chain recorded them in the outcome record; an empty string is a step no registered relayer earned (refunded)."""

    verify: str = ""
    """Payee of the relayer account whose phase-2 transaction verified the packet first."""
    execute: str = ""
    """Payee of the relayer account the target's ack names (it executed the packet, phase 3)."""
    confirm: str = ""
    """Payee of the relayer account whose phase-4 transaction recorded the outcome first."""

    def __bool__(self) -> bool:
        return bool(self.verify or self.execute or self.confirm)

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.verify, self.execute, self.confirm)


NO_PAYEES = FeePayees()
"""No step earned by anyone: the outcome record has its three-field form."""


class PacketOutcome(enum.IntEnum):
    """Final outcome of a packet as certified by the relay chain in phase 4."""

    ACKED = 1
    TIMED_OUT = 2
