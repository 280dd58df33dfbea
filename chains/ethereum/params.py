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
    max_certificate_age_ms: int = param(600_000, low=10_000, high=86_400_000)
    """The park bridge refuses a phase-3 relay certificate older than this, ms (protocol SPEC §7.9; keep the relay's
    ``recovery_delay_ms`` at least this plus the clock skew)."""
    market_buses: dict[str, dict[str, int]] = param({})
    """The park market's radial feeder (``EnergyMarket``, docs/research.md#seed-001; SPEC §E2.9): bus number (``"1"``,
    ``"2"``… in order; bus 0 is the substation) -> ``{parent, length_m, limit_wh}``: the bus sits behind ``parent``
    (an earlier bus) on a line ``length_m`` long (its electrical length, which the use-of-system charge is
    proportional to) carrying at most ``limit_wh`` per round (congestion management curtails a clearing past it).
    Empty (the default): the node deploys no market."""
    market_members: dict[str, int] = param({}, low=1, high=63)
    """Accounts of this park admitted to the market at deployment and connected at a bus: name -> bus."""
    market_charge_rate: int = param(0, low=0, high=2**64 - 1)
    """Use-of-system charge of a round ``parkrelay market … open`` opens by default: wei per Wh per km of electrical
    distance between seller and buyer (0: no charge)."""
    market_round_s: int = param(60, low=1, high=86_400)
    """How long a round ``parkrelay market … open`` opens by default takes bids, s."""
    market_min_imported_score: int = param(0, low=0, high=10_000)
    """The lowest imported score (basis points) with which the operator may admit a participant of another park
    (``DeliveryRecord.admitImported``; ``parkrelay market … admit``)."""

    def check(self) -> None:
        self._check_market()
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

    def _check_market(self) -> None:
        buses = self.market_buses
        if list(buses) != [str(i) for i in range(1, len(buses) + 1)]:
            raise ParamError("market_buses", "buses are numbered 1, 2, … in order (bus 0 is the substation)",
                             f"keys {[str(i) for i in range(1, len(buses) + 1)]}", sorted(buses))
        if len(buses) >= 64:
            raise ParamError("market_buses", "EnergyMarket holds at most 64 buses", "at most 63 buses", len(buses))
        for name, bus in buses.items():
            if set(bus) != {"parent", "length_m", "limit_wh"}:
                raise ParamError(f"market_buses.{name}", "", "{parent, length_m, limit_wh}", sorted(bus))
            if not 0 <= bus["parent"] < int(name):
                raise ParamError(f"market_buses.{name}.parent", "a bus sits behind an earlier one",
                                 f"0..{int(name) - 1}", bus["parent"])
            if not 0 <= bus["length_m"] < 2**32 or not 0 < bus["limit_wh"] < 2**64:
                raise ParamError(f"market_buses.{name}", "", "length_m in 0..2^32-1 and limit_wh in 1..2^64-1",
                                 bus)
        for member, at in self.market_members.items():
            if str(at) not in buses:
                raise ParamError(f"market_members.{member}", "members connect at a bus of market_buses",
                                 f"one of {sorted(buses, key=int)}", at)
