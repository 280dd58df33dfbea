"""The relayer's chain-cost metrics: Ethereum gas spent and Fabric endorsement failures, read from its chain links'
targets at scrape time (the targets count them: tests/integration/test_eth_adapter.py checks the gas is the
receipts' sum; adapters/fabric/target.py counts a refused or mismatched endorsement by code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from relay.ops.api.metrics import RelayerMetrics


@dataclass
class _Stats:
    submitted: dict[str, int] = field(default_factory=dict)
    redundant: int = 0
    settled: int = 0
    undecodable_events: int = 0


@dataclass
class _Link:
    target: Any


@dataclass
class _EthTarget:
    gas_used: int = 0


@dataclass
class _FabricTarget:
    endorsement_failures: dict[str, int] = field(default_factory=dict)


@dataclass
class _PyTarget:
    pass


@dataclass
class _Relayer:
    """The attributes the collector reads of a :class:`relay.relayer.relayer.Relayer` (an in-memory stand-in)."""

    name: str = "relayer-a"
    stats: _Stats = field(default_factory=_Stats)
    packets: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    parks: dict[str, _Link] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)


def _samples(metrics: RelayerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_gas_and_endorsement_failures_are_exported_per_chain_and_move_with_the_targets() -> None:
    eth, fab = _EthTarget(), _FabricTarget()
    rl = _Relayer(parks={"eth-park": _Link(eth), "fabric-park": _Link(fab), "dpos-park": _Link(_PyTarget())})
    m = RelayerMetrics(rl)
    gas = _samples(m, "parkrelay_relayer_gas_used_total")
    assert gas == {(("chain", "eth-park"), ("relayer", "relayer-a")): 0.0}  # only chains that spend gas
    assert _samples(m, "parkrelay_relayer_fabric_endorsement_failures_total") == {}
    eth.gas_used += 138_647
    fab.endorsement_failures["packet.replay"] = 2
    fab.endorsement_failures["fabric.endorsement_mismatch"] = 1
    assert _samples(m, "parkrelay_relayer_gas_used_total") == {(("chain", "eth-park"), ("relayer", "relayer-a")):
                                                               138_647.0}
    assert _samples(m, "parkrelay_relayer_fabric_endorsement_failures_total") == {
        (("chain", "fabric-park"), ("code", "fabric.endorsement_mismatch"), ("relayer", "relayer-a")): 1.0,
        (("chain", "fabric-park"), ("code", "packet.replay"), ("relayer", "relayer-a")): 2.0}
