"""``parkrelay doctor`` on an Ethereum park: the node is the chain the config names (its EIP-155 id), and the bridge
contract is deployed at the address the park's genesis announced. A real anvil serves the config's port: first bare
(the doctor finds no bridge there), then with the park deployed from the genesis's operator key (found); an anvil of
another chain id is named as such."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomli_w
from eth_account import Account
from web3 import Web3

from chains.ethereum.anvil import automine_anvil
from chains.ethereum.deploy import deploy_park, expected_addresses, relay_set_args
from relay.ops import devnet
from relay.ops.config import ETHEREUM_OPERATOR, DeploymentConfig, load_config
from relay.ops.doctor import Check, DoctorOptions, diagnose
from relay.ops.keys import read_secret
from tests.integration.operator_devnet import run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHAIN = "eth-park"


@contextmanager
def eth_park(root: Path, chain_id: int = 31337) -> Iterator[tuple[DeploymentConfig, str]]:
    """A deployment of one Ethereum park (no relay chain here) whose port a bare anvil of ``chain_id`` serves."""
    with automine_anvil(chain_id) as anvil:
        port = int(anvil.url.rsplit(":", 1)[1])
        doc = {"deployment": {"data_dir": str(root / "data")},
               "relay": {"validators": ["op-a", "op-b", "op-c", "op-d"]},
               "chains": [{"id": CHAIN, "kind": "ethereum", "base_port": port, "accounts": {"erin": 5_000}}]}
        (root / "devnet.toml").write_text(tomli_w.dumps(doc))
        cfg = load_config(root / "devnet.toml")
        devnet.init(cfg)  # the genesis: contract addresses of the operator key made here, at run time
        yield cfg, anvil.url


def checks(cfg: DeploymentConfig) -> dict[str, Check]:
    report = run(diagnose(cfg, DoctorOptions(window_s=1.0, index_budget_s=5.0)))
    return {c.name: c for c in report.checks}


def test_the_bridge_at_its_genesis_address(tmp_path: Path) -> None:
    with eth_park(tmp_path) as (cfg, url):
        found = checks(cfg)
        assert found[f"node/{CHAIN}/anvil"].status == "ok", found[f"node/{CHAIN}/anvil"]
        operator = Account.from_key(read_secret(devnet.account_key_path(cfg, CHAIN, ETHEREUM_OPERATOR)))
        bridge = expected_addresses(operator.address)["bridge"]
        missing = found[f"ethereum/{CHAIN}/bridge"]
        assert missing.status == "fail" and missing.detail.startswith(f"no contract at {bridge}"), missing
        assert f"parkrelay node ethereum --config … --chain {CHAIN}" in missing.fix

        w3 = Web3(Web3.HTTPProvider(url))
        w3.provider.make_request("anvil_setBalance", [operator.address, hex(10**20)])  # type: ignore[arg-type]
        deploy_park(w3, operator, chain_id=CHAIN, relay_chain_id=cfg.relay_chain_id,
                    relay_set=relay_set_args(devnet.relay_validator_set(cfg)), lanes=[], balances={})
        deployed = checks(cfg)[f"ethereum/{CHAIN}/bridge"]
        assert deployed.status == "ok" and f"bridge deployed at {bridge}" in deployed.detail, deployed


def test_a_node_of_another_chain_id(tmp_path: Path) -> None:
    with eth_park(tmp_path, chain_id=1) as (cfg, _):
        node = checks(cfg)[f"node/{CHAIN}/anvil"]
        assert node.status == "fail" and "answers as chain '1', the config says '31337'" in node.detail, node
