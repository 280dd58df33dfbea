"""``parkrelay devnet init`` for a Fabric park (network/genesis.py): the launcher's init runs, the channel's
genesis block comes from Fabric's configtxgen, the relay genesis creates a Fabric light client trusting that very
block, and the bridge chaincode accepts the genesis argument (and only it, once pinned) with every account,
balance, lane capacity and the relay validator set. Runs configtxgen (``make setup``'s Fabric build; skipped
without)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from chains.fabric.chaincode.contract import STATUS_ERROR, STATUS_OK, BridgeContract
from chains.fabric.consts import OPERATOR_MSP, PEER_ORGS, SALES_MSP
from chains.fabric.light_client import FabricLightClient
from chains.fabric.network.config import FabricNetworkConfig
from chains.fabric.network.tools import FabricTools
from chains.fabric.proto import Block
from chains.registry import chain_kind
from relay.ops import devnet
from relay.ops.config import ConfigError, load_config
from tests.unit.fabric_chaincode.fake import FakeLedger, identity

CONFIG = """
[deployment]
data_dir = "{root}/data"
[relay]
base_port = 21500
[relayers]
names = ["relayer-a", "relayer-b"]
[[lanes]]
lane = "lane-0"
a = "fabric-park"
b = "dpos-park"
limits = {{ kWh = {{ capacity = 50000, refill_per_s = 100 }} }}
[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["w1"]
base_port = 21600
accounts = {{ alice = 5000 }}
[[chains]]
id = "fabric-park"
kind = "fabric"
base_port = 21700
orderers = 3
batch_timeout_ms = 200
accounts = {{ gina = 5_000_000, hank = 0, operator = 0 }}
users = {{ gina = "SalesMSP" }}
"""


@pytest.fixture(scope="module")
def fabric_built() -> None:
    try:
        FabricTools(FabricNetworkConfig(chain_id="probe", data_dir=Path("/nonexistent"), base_port=20000)
                    ).check_installed()
    except Exception as exc:  # a machine without `make setup`'s Fabric build
        pytest.skip(str(exc))


def _init(root: Path) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    (root / "d.toml").write_text(CONFIG.format(root=root))
    cfg = load_config(root / "d.toml")
    devnet.init(cfg, genesis_time_ms=1_790_000_000_000)
    park = json.loads((cfg.data_dir / "genesis" / "fabric-park.json").read_text())
    relay = json.loads((cfg.data_dir / "genesis" / "relay.json").read_text())
    return cfg, park, relay


def test_the_park_genesis_holds_what_the_relay_client_and_the_chaincode_need(tmp_path: Path,
                                                                            fabric_built: None) -> None:
    cfg, park, relay = _init(tmp_path)
    assert park["channel_id"] == "park" and park["genesis_time_ms"] == 1_790_000_000_000
    assert park["chaincode"] == "bridge" and park["policy_orgs"] == list(PEER_ORGS)
    assert park["accounts"] == {"gina": "SalesMSP:gina@SalesMSP", "hank": "OperatorMSP:hank@OperatorMSP",
                                "operator": "OperatorMSP:operator@OperatorMSP",
                                "relayer-a": "OperatorMSP:relayer-a@OperatorMSP",
                                "relayer-b": "OperatorMSP:relayer-b@OperatorMSP"}
    # the channel's genesis block configtxgen wrote is the one the park will run and the relay trusts
    block_file = cfg.data_dir / "fabric-park" / "channel" / "park.block"
    assert bytes.fromhex(park["config_block"]) == block_file.read_bytes()
    init = relay["clients"]["fabric-park"]
    client = chain_kind("fabric").create_light_client("fabric-0", "fabric-park", init["init"])
    assert isinstance(client, FabricLightClient) and init["client_type"] == "fabric"
    assert client.final_height == 0 and client.final_timestamp_ms == 1_790_000_000_000
    assert client.holds(Block.decode(block_file.read_bytes()))
    assert sorted(cn for _, cn in client.config.consenters) == [f"orderer{i}.OrdererMSP" for i in range(3)]
    # a second init changes nothing (keys, block and genesis are kept)
    devnet.init(cfg, genesis_time_ms=1)
    assert json.loads((cfg.data_dir / "genesis" / "fabric-park.json").read_text()) == park
    assert block_file.read_bytes() == bytes.fromhex(park["config_block"])


def test_the_bridge_chaincode_takes_the_genesis_argument_and_the_pin_refuses_any_other(tmp_path: Path,
                                                                                     fabric_built: None) -> None:
    cfg, park, relay = _init(tmp_path)
    arg = park["init_bridge"].encode()
    pinned = BridgeContract(genesis_sha256=hashlib.sha256(arg).digest())
    ledger, operator = FakeLedger(), identity(OPERATOR_MSP, "operator@OperatorMSP")
    other = json.dumps({**json.loads(arg), "balances": []}).encode()
    refused = ledger.endorse(pinned, OPERATOR_MSP, operator, [b"init_bridge", other], 0).response
    assert refused.status == STATUS_ERROR and refused.code == "auth.denied"
    endorsed = ledger.endorse(pinned, OPERATOR_MSP, operator, [b"init_bridge", arg], 0)
    assert endorsed.response.status == STATUS_OK and ledger.commit(endorsed)

    def query(*args: str) -> Any:
        e = ledger.endorse(pinned, SALES_MSP, operator, [a.encode() for a in args], 0)
        assert e.response.status == STATUS_OK, e.response
        return json.loads(e.response.payload)

    assert query("balance", "SalesMSP:gina@SalesMSP", "kWh")["amount_wh"] == 5_000_000
    assert query("supply")["issued"] == {"kWh": 5_000_000}
    assert query("lane", "dpos-park", "lane-0") == {"configured": True, "capacities": {"kWh": 50_000},
                                                    "relay_height": 0}
    config = query("config")
    assert config["relay_validators"]["hash"] == relay["validators"]["hash"]
    assert config["config"]["rights_operator"] == "OperatorMSP:operator@OperatorMSP"
    shown = query("transformer", "tr-1")  # the registry the rights are admitted by: the params' defaults
    assert shown["transformer"] == {"capacity_kw": 150} and shown["stations"] == ["st-1"]
    # the supervisor's network: the same identities, the genesis submitted once and pinned in both servers
    from relay.ops.cli import _fabric_network

    net = _fabric_network(cfg, None)
    assert net.chaincode.init_args == ("init_bridge", park["init_bridge"])
    assert net.chaincode.env["PARKRELAY_FABRIC_GENESIS_SHA256"] == hashlib.sha256(arg).hexdigest()
    assert dict(net.users) == {name: acct.split(":")[0] for name, acct in park["accounts"].items()}
    assert (net.orderers, net.batch_timeout_ms, net.base_port) == (3, 200, 21700)


def test_a_fabric_park_reserves_its_whole_port_block(tmp_path: Path) -> None:
    """Four ports per orderer and peer: another chain inside the block is refused when the config is read."""
    text = CONFIG.format(root=tmp_path).replace("base_port = 21600", "base_port = 21719")
    (tmp_path / "d.toml").write_text(text)
    with pytest.raises(ConfigError, match="port 21719 already used by dpos-park"):
        load_config(tmp_path / "d.toml")
    (tmp_path / "d.toml").write_text(text.replace("base_port = 21719", "base_port = 21720"))
    assert load_config(tmp_path / "d.toml").chain("fabric-park").params["orderers"] == 3
