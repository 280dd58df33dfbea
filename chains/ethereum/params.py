"""The Ethereum park's deployment parameters: the kind-specific keys of a ``kind = "ethereum"`` chain table.

One frozen dataclass, one field per key (type, default, range, docstring); ``deploy/devnet.toml`` shows
them. To add a key, add a field here and read it in :func:`chains.ethereum.node.build_genesis`.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.common.kind import KindParams, ParamError, param

__all__ = ["ETH_MAX_CHAIN_ID", "ETH_MIN_ATTESTED_AGE_MS", "EthChainParams"]

ETH_MAX_CHAIN_ID = 4_503_599_627_370_476
"""EIP-2294: the largest chain id every client supports."""
ETH_MIN_ATTESTED_AGE_MS = 2000
"""An Ethereum block is attested no younger than this: two of anvil's 1 s state dumps (chains/ethereum/anvil.py)."""


@dataclass(frozen=True, eq=False)
class EthChainParams(KindParams):
    """Keys of a ``kind = "ethereum"`` chain table besides ``id``, ``kind``, ``base_port``, ``accounts`` (one
    node, anvil: no ``nodes`` key)."""

    eth_chain_id: int = param(31337, low=1, high=ETH_MAX_CHAIN_ID)
    """EIP-155 chain id; distinct per Ethereum chain of a deployment. 31337 is anvil's own (tools treat it as
    local)."""
    block_interval_ms: int = param(1000)
    """anvil's ``--block-time``, ms: a whole number of seconds (Ethereum block timestamps are in seconds)."""
    confirmation_depth: int = param(2)
    """Blocks on top before the relay validators attest a block; must span at least
    :data:`ETH_MIN_ATTESTED_AGE_MS` so a crash of anvil never loses an attested block."""
    transformers: dict[str, int] = param({"tr-1": 150}, low=0, high=10**9)
    """Transformer capacities, kW, for charging-right admission: name -> capacity (the ``ChargingRights``
    contract's registry, filled by the node at deployment; the operator changes it later)."""
    stations: dict[str, str] = param({"st-1": "tr-1"})
    """Charging stations for charging-right admission: name -> the transformer it is behind (SPEC §2.3)."""

    def check(self) -> None:
        interval = self.block_interval_ms
        if interval < 1000 or interval % 1000:
            raise ParamError("block_interval_ms", "", "a whole number of seconds >= 1000 (Ethereum block timestamps "
                             "are in seconds)", interval)
        if self.confirmation_depth * interval < ETH_MIN_ATTESTED_AGE_MS:
            raise ParamError("confirmation_depth", f"the relay validators attest a block this many blocks deep, "
                             f"which must span at least {ETH_MIN_ATTESTED_AGE_MS} ms (two of anvil's 1 s state "
                             f"dumps, so a crash of anvil never loses an attested block)",
                             f">= {-(-ETH_MIN_ATTESTED_AGE_MS // interval)} at {interval} ms blocks",
                             self.confirmation_depth)
