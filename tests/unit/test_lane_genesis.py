"""Issue 9 wiring: a deployment's lane limits reach the relay genesis, and every park at either end of a
lane learns its lanes and capacities from that relay genesis at its own genesis (protocol SPEC §6.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chains.common.bridge import init_bridge, lane_capacities
from chains.common.genesis import lanes_from_relay_genesis
from chains.common.state import ChainState
from chains.ethereum import node as eth_node
from relay.ops.config import ConfigError, load_config
from relay.ops.devnet import relay_lanes
from tests.unit.bridge.sim import RelaySim

BASE = """
[deployment]
data_dir = "data"

[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a"]
base_port = 31000

[[lanes]]
lane = "lane-0"
a = "dpos-park"
b = "poc-park"
limits = { kWh = { capacity = 50000, refill_per_s = 100 }, "*" = { capacity = 5, refill_per_s = 1 } }

[[lanes]]
lane = "lane-1"
a = "dpos-park"
b = "eth-park"
"""


def test_lane_limits_reach_the_relay_genesis_and_the_parks(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text(BASE)
    cfg = load_config(p)
    lanes = relay_lanes(cfg)
    assert lanes == [{"lane": "lane-0", "chains": ["dpos-park", "poc-park"],
                      "limits": {"kWh": {"capacity": 50_000, "refill_per_s": 100},
                                 "*": {"capacity": 5, "refill_per_s": 1}}},
                     {"lane": "lane-1", "chains": ["dpos-park", "eth-park"]}]
    park_lanes = lanes_from_relay_genesis(lanes, "dpos-park")
    state = ChainState()
    init_bridge(state, "dpos-park", "relay", RelaySim().vset, ["kWh"], park_lanes)
    assert lane_capacities(state, "poc-park", "lane-0") == ({"*": 5, "kWh": 50_000}, 0)
    assert lane_capacities(state, "eth-park", "lane-1") == ({}, 0)
    # the Ethereum park's genesis carries them to its deployment (configureLane)
    eth_lanes = lanes_from_relay_genesis(lanes, "eth-park")
    genesis = eth_node.build_genesis(chain_id="eth-park", params={}, nodes={"node-0": bytes(20)}, accounts={},
                                     relay_validators=RelaySim().vset, lanes=eth_lanes, genesis_time_ms=1,
                                     data_dir=tmp_path)
    assert genesis["lanes"] == [{"lane": "lane-1", "chain": "dpos-park"}]
    limited = lanes_from_relay_genesis([{**lanes[1], "limits": {"kWh": {"capacity": 9, "refill_per_s": 1}}}],
                                       "eth-park")
    assert eth_node.build_genesis(chain_id="eth-park", params={}, nodes={"node-0": bytes(20)}, accounts={},
                                  relay_validators=RelaySim().vset, lanes=limited, genesis_time_ms=1,
                                  data_dir=tmp_path)["lanes"] == [{"lane": "lane-1", "chain": "dpos-park",
                                                                   "capacities": {"kWh": 9}}]


@pytest.mark.parametrize("bad", ["{ kWh = 5 }", "{ kWh = { capacity = -1, refill_per_s = 1 } }",
                                 "{ kWh = { capacity = 1 } }"])
def test_bad_lane_limits_are_refused(tmp_path: Path, bad: str) -> None:
    p = tmp_path / "d.toml"
    p.write_text(BASE.replace('b = "eth-park"\n', f'b = "eth-park"\nlimits = {bad}\n'))
    with pytest.raises(ConfigError, match="limits"):
        load_config(p)
