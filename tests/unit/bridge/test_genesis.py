"""``init_bridge``: the genesis configuration is checked before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import init_bridge, lane_capacities, load_params, trusted_relay_set
from chains.common.genesis import lanes_from_relay_genesis
from chains.common.state import ChainState
from protocol.errors import CodecError, ProtocolError
from tests.unit.bridge.sim import RelaySim

LANES = [{"lane": "lane-0", "counterparty": "poc-park"}]


def test_genesis_stores_params_set_and_lanes() -> None:
    state = ChainState()
    vset = RelaySim().vset
    init_bridge(state, "dpos-park", "relay", vset, ["kWh"], LANES, rights_operator="operator",
                transformers={"t1": 100})
    params = load_params(state)
    assert (params.chain_id, params.relay_chain_id, params.native_denoms, params.rights_operator) == (
        "dpos-park", "relay", ("kWh",), "operator")
    assert trusted_relay_set(state) == (vset, 0)
    assert state.get_json(b"bridge/lanes/poc-park/lane-0") == {"counterparty": "poc-park", "lane": "lane-0"}
    assert state.get_json(b"transformers/t1") == {"capacity_kw": 100}
    with pytest.raises(ProtocolError, match="already initialised"):
        init_bridge(state, "dpos-park", "relay", vset, ["kWh"], LANES)


@pytest.mark.parametrize(("name", "kw"), [
    ("native denom with a trace", {"native_denoms": ["lane-0/x/kWh"]}),
    ("empty native denom", {"native_denoms": [""]}),
    ("bad chain id", {"chain_id": "DPoS"}),
    ("bad relay chain id", {"relay_chain_id": "relay/1"}),
    ("lane to itself", {"lanes": [{"lane": "lane-0", "counterparty": "dpos-park"}]}),
    ("lane without counterparty", {"lanes": [{"lane": "lane-0"}]}),
    ("bad lane id", {"lanes": [{"lane": "Lane 0", "counterparty": "poc-park"}]}),
    ("negative capacity", {"transformers": {"t1": -1}}),
    ("negative lane capacity", {"lanes": [{**LANES[0], "capacities": {"kWh": -1}}]}),
    ("empty asset", {"lanes": [{**LANES[0], "capacities": {"": 5}}]}),
    ("capacities not an object", {"lanes": [{**LANES[0], "capacities": [5]}]}),
    ("unknown lane key", {"lanes": [{**LANES[0], "limits": {}}]}),
])
def test_genesis_rejects(name: str, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"chain_id": "dpos-park", "relay_chain_id": "relay", "native_denoms": ["kWh"],
                            "lanes": LANES, **kw}
    transformers = args.pop("transformers", None)
    state = ChainState()
    with pytest.raises(CodecError):
        init_bridge(state, args["chain_id"], args["relay_chain_id"], RelaySim().vset, args["native_denoms"],
                    args["lanes"], transformers=transformers)
    assert len(state.tree) == 0, name  # nothing half-written


RELAY_LANES = [
    {"lane": "lane-0", "chains": ["dpos-park", "poc-park"],
     "limits": {"kWh": {"capacity": 50_000, "refill_per_s": 100}, "*": {"capacity": 3, "refill_per_s": 1}}},
    {"lane": "lane-1", "chains": ["poc-park", "eth-park"]},
    {"lane": "lane-2", "chains": ["eth-park", "dpos-park"]},
]


def test_a_park_learns_its_lanes_and_capacities_from_the_relay_genesis() -> None:
    lanes = lanes_from_relay_genesis(RELAY_LANES, "dpos-park")
    assert lanes == [{"lane": "lane-0", "counterparty": "poc-park", "capacities": {"kWh": 50_000, "*": 3}},
                     {"lane": "lane-2", "counterparty": "eth-park"}]
    state = ChainState()
    init_bridge(state, "dpos-park", "relay", RelaySim().vset, ["kWh"], lanes)
    assert lane_capacities(state, "poc-park", "lane-0") == ({"*": 3, "kWh": 50_000}, 0)
    assert lane_capacities(state, "eth-park", "lane-2") == ({}, 0)  # not limited
    assert state.get(b"bridge/lanes/eth-park/lane-2") is not None
    assert state.get(b"bridge/lanes/eth-park/lane-1") is None  # a lane between two other parks
