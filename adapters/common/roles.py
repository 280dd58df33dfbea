"""The relayer's view of a chain, split by role (as in parity-bridges' finality loop).

A relayer worker takes a :class:`SourceSide` (where packets come from: heights, headers, proofs,
events) and a :class:`TargetSide` (where it submits and tracks transactions), never a whole chain.
Each chain kind's adapter implements both over its own client library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from protocol.types import Packet


@dataclass(frozen=True, slots=True)
class ProvenValue:
    """A value read from a chain's state with a proof against the header at ``height``."""

    height: int
    """Height of the header whose state root the proof is against."""
    key: bytes
    """State path."""
    value: bytes | None
    """Value at the path, or None when absent (then the proof is a non-membership proof)."""
    proof: bytes
    """Encoded proof (:meth:`protocol.state_commitment.Proof.encode` for the Python chains)."""
    state_root: bytes
    """Root the proof verifies against."""


@dataclass(frozen=True, slots=True)
class SentPacket:
    """A packet committed by a park's phase-1 call, as read back from the bridge's own event for it."""

    packet: Packet
    raw: bytes
    """The packet's canonical encoding, as the bridge emitted it."""
    sequence: int
    height: int
    """Block of the committing transaction."""
    tx_hash: str


class SourceSide(Protocol):
    """Reads from a chain: what a relayer needs to prove something happened (or did not)."""

    async def latest_height(self) -> int:
        """Height of the chain's head."""

    async def final_height(self) -> int:
        """Height of the last final block."""

    async def headers(self, start: int, end: int) -> list[Any]:
        """Decoded headers ``start..end`` (inclusive) of the canonical chain, for a light client."""

    async def prove(self, key: bytes, height: int) -> ProvenValue:
        """The value at ``key`` in the state after block ``height``, with its proof."""

    async def events(self, start: int, end: int, kind: str | None = None) -> list[dict[str, Any]]:
        """Events in blocks ``start..end`` (optionally one type: ``send_packet``, ``write_ack``...)."""

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        """Values (hex; None when absent) of protocol state paths (SPEC §5) at the head. A chain that
        does not store a record under a path (Ethereum keeps acks in logs only) answers None for it."""

    async def header_time_ms(self, height: int) -> int:
        """Block time (ms) of the header at ``height``."""


class TargetSide(Protocol):
    """Writes to a chain: submit a signed transaction and track it to finality."""

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        """Sign and submit ``op`` with ``args`` from the relayer's account; return the tx hash (hex)."""

    async def track(self, tx_hash: str, timeout_s: float) -> dict[str, Any]:
        """Wait until the transaction is in a final block; return its result (ok or the typed error)."""
