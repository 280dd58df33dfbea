"""The DPoS park's deployment parameters: the kind-specific keys of a ``kind = "dpos"`` chain table.

One frozen dataclass, one field per key (type, default, range, docstring); ``deploy/devnet.toml`` shows
them. To add a key, add a field here and read it in :func:`chains.dpos.node.build_genesis`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.common.kind import KindParams, param
from chains.dpos.types import MAX_WITNESSES

__all__ = ["DposChainParams"]


@dataclass(frozen=True, eq=False)
class DposChainParams(KindParams):
    """Keys of a ``kind = "dpos"`` chain table besides ``id``, ``kind``, ``nodes``, ``base_port``, ``accounts``."""

    block_interval_ms: int = param(1000, low=1, high=3_600_000)
    """Slot length, ms: one block per slot from the scheduled witness."""
    maintenance_interval_blocks: int = param(30, low=1, high=1_000_000)
    """Elections, rewards and witness-set changes every this many blocks."""
    active_witnesses: int | None = param(None, low=1, high=MAX_WITNESSES)
    """Size of the active witness set elected by stake-weighted votes; unset: every node of the chain."""
    relay_chain_id: str = param("relay")
    """Id of the relay chain whose certificates the park's bridge accepts."""
    transformers: dict[str, int] = param({"tr-1": 150}, low=0, high=10**9)
    """Transformer capacities, kW, for charging-right admission: name -> capacity."""
    stations: dict[str, str] = param({"st-1": "tr-1"})
    """Charging stations for charging-right admission: name -> the transformer it is behind (SPEC §2.3)."""
    max_certificate_age_ms: int = param(600_000, low=10_000, high=86_400_000)
    """The park bridge refuses a phase-3 relay certificate older than this, ms (protocol SPEC §7.9; keep the relay's
    ``recovery_delay_ms`` at least this plus the clock skew)."""
