"""The PoC park's deployment parameters: the kind-specific keys of a ``kind = "poc"`` chain table.

One frozen dataclass, one field per key (type, default, range, docstring); ``deploy/devnet.toml`` shows
them. To add a key, add a field here and read it in :func:`chains.poc.node.build_genesis`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.common.kind import KindParams, param
from chains.poc.app import DEFAULT_CONFIRMATION_DEPTH

__all__ = ["PocChainParams"]


@dataclass(frozen=True, eq=False)
class PocChainParams(KindParams):
    """Keys of a ``kind = "poc"`` chain table besides ``id``, ``kind``, ``nodes``, ``base_port``, ``accounts``."""

    target_block_interval_ms: int = param(2000, low=1, high=3_600_000)
    """Block interval, ms, the difficulty retargets toward."""
    plot_k: int = param(21, low=21, high=32)
    """chiapos plot size k of the farmers' plots (k=21 is ~34 MiB and ~12 s to plot)."""
    plots_per_farmer: int = param(1, low=1, high=64)
    """Plots each farmer fills at its first start."""
    confirmation_depth: int = param(DEFAULT_CONFIRMATION_DEPTH, low=1, high=2**16)
    """Blocks on top of a block before it is final (the hosted light client's limit is 2**16)."""
    relay_chain_id: str = param("relay")
    """Id of the relay chain whose certificates the park's bridge accepts."""
    transformers: dict[str, int] = param({"tr-1": 150}, low=0, high=10**9)
    """Transformer capacities, kW, for charging-right admission: name -> capacity."""
    stations: dict[str, str] = param({"st-1": "tr-1"})
    """Charging stations for charging-right admission: name -> the transformer it is behind (SPEC §2.3)."""
    max_certificate_age_ms: int = param(600_000, low=10_000, high=86_400_000)
    """The park bridge refuses a phase-3 relay certificate older than this, ms (protocol SPEC §7.9; keep the relay's
    ``recovery_delay_ms`` at least this plus the clock skew)."""
