"""``init_bridge``: the genesis configuration is checked before anything is stored."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import init_bridge, load_params, trusted_relay_set
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
