"""The Ethereum park's node (chains/ethereum/SPEC.md §E4) as a real process: anvil at one block a second,
the contracts deployed at the addresses ``devnet init`` announced, genesis balances minted, a SIGTERM
restart that keeps the chain and deploys nothing, and a node that exits non-zero when anvil dies.

Also, in process: the deployment against an automine anvil (expected addresses, resuming a deployment cut
short) and the config checks of ``kind = "ethereum"`` chains.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from eth_account import Account
from eth_utils import keccak
from web3 import Web3

from chains.common.procs import spawn
from chains.ethereum.anvil import automine_anvil, free_port
from chains.ethereum.deploy import ADDRESS_KEYS, create_address, deploy_park, expected_addresses, load_artifact
from chains.ethereum.node import ADDRESSES_FILE, STATE_FILE
from relay.ops import devnet
from relay.ops.config import ConfigError, DeploymentConfig, load_config
from relay.ops.keys import read_secret

REPO = Path(__file__).resolve().parents[2]
CHAIN = "eth-park"
BALANCES = {"alice": 5_000_000, "bob": 1_000_000, "operator": 0}


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = pred()
        except (OSError, ValueError):  # node not answering yet
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def write_devnet(root: Path, chain: dict[str, Any], relay_port: int | None = None) -> Path:
    doc: dict[str, Any] = {
        "deployment": {"data_dir": str(root / "data")},
        "relay": {"validators": ["op-a", "op-b", "op-c", "op-d"], **({"base_port": relay_port} if relay_port else {})},
        "relayers": {"names": ["relayer-a"]},
        "lanes": [{"lane": "lane-0", "a": CHAIN, "b": "dpos-park"}],
        "chains": [{"id": CHAIN, "kind": "ethereum", **chain}],
    }
    path = root / "devnet.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


# --- config -------------------------------------------------------------------------------------------


def test_ethereum_chain_config_defaults(tmp_path: Path) -> None:
    cfg = load_config(write_devnet(tmp_path, {"base_port": 27000, "accounts": {"alice": 5}}))
    chain = cfg.chain(CHAIN)
    assert chain.kind == "ethereum" and chain.nodes == ("anvil",) and chain.base_port == 27000
    assert chain.params == {"eth_chain_id": 31337, "block_interval_ms": 1000, "confirmation_depth": 2,
                            "transformers": {"tr-1": 150}, "stations": {"st-1": "tr-1"},
                            "max_certificate_age_ms": 600_000, "market_buses": {}, "market_members": {},
                            "market_charge_rate": 0, "market_round_s": 60, "market_min_imported_score": 0}
    assert chain.accounts == {"alice": 5}
    assert ("eth-park", "ethereum", "anvil", "--node", "http://127.0.0.1:27000") in devnet.processes(cfg)


@pytest.mark.parametrize(("extra", "message"), [
    ({"nodes": ["a"]}, "unknown key(s) ['nodes']"),
    ({"block_interval_ms": 500}, "block_interval_ms: expected a whole number of seconds"),
    ({"block_interval_ms": 1500}, "block_interval_ms: expected a whole number of seconds"),
    ({"eth_chain_id": 0}, "eth_chain_id: expected 1.."),
    ({"eth_chain_id": "1"}, "eth_chain_id: expected int"),
    ({"confirmation_depth": -1}, "confirmation_depth: the relay validators attest a block this many blocks deep"),
    ({"confirmation_depth": 1}, "expected >= 2 at 1000 ms blocks, got 1"),
    ({"confirmation_depth": 0, "block_interval_ms": 2000}, "expected >= 1 at 2000 ms blocks, got 0"),
    ({"accounts": {"alice": -1}}, "accounts.alice: expected a non-negative integer"),
    ({"max_certificate_age_ms": 5_000}, "max_certificate_age_ms: expected 10000..86400000"),
])
def test_ethereum_chain_config_errors(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_devnet(tmp_path, {"base_port": 27000, **extra}))


# --- deployment against an automine anvil (in process) ---------------------------------------------


def test_deploy_at_expected_addresses_and_resume() -> None:
    operator = Account.create()
    relay_set = ([b"\x01" * 32, b"\x02" * 32], ["0x" + "11" * 20, "0x" + "22" * 20], [1, 1])
    alice = "0x" + "aa" * 20
    args: dict[str, Any] = {"chain_id": CHAIN, "relay_chain_id": "relay", "relay_set": relay_set,
                            "lanes": [("dpos-park", "lane-0")], "balances": {alice: 7_000, "0x" + "bb" * 20: 0},
                            "transformers": {"tr-1": 150}, "stations": {"st-1": "tr-1"}}
    with automine_anvil() as anvil:
        anvil.set_balance(operator.address, 10**20)
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        # a deployment cut short after the EnergyToken: deploy_park resumes from the operator's nonce
        token = load_artifact("EnergyToken")
        signed = operator.sign_transaction({"data": token["bytecode"], "nonce": 0, "gas": 3_000_000,
                                            "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9,
                                            "chainId": w3.eth.chain_id})
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
        addrs = deploy_park(w3, operator, **args)
        assert addrs == expected_addresses(operator.address)
        assert addrs["bridge"] == create_address(operator.address, 2)
        assert all(w3.eth.get_code(Web3.to_checksum_address(addrs[k])) for k in ADDRESS_KEYS)
        # the bridge was built with the apps' addresses, the apps name the bridge and its operator
        bridge_abi = load_artifact("ParkBridge")["abi"]
        b = w3.eth.contract(address=Web3.to_checksum_address(addrs["bridge"]), abi=bridge_abi)
        assert [b.functions.energyApp().call(), b.functions.rightsApp().call(), b.functions.reputationApp().call()] == [
            Web3.to_checksum_address(addrs[k]) for k in ("energy_app", "rights", "reputation")]
        rights = w3.eth.contract(address=Web3.to_checksum_address(addrs["rights"]),
                                 abi=load_artifact("ChargingRights")["abi"])
        assert (rights.functions.bridge().call(), rights.functions.operator().call(),
                rights.functions.chainId().call()) == (b.address, operator.address, CHAIN)
        assert rights.functions.transformerOf("tr-1").call() == [True, 150, 0]  # the registry at deployment
        assert bytes(rights.functions.stationOf("st-1").call()) == keccak(text="tr-1")
        energy = w3.eth.contract(address=Web3.to_checksum_address(addrs["energy_token"]), abi=token["abi"])
        assert energy.functions.balanceOf(Web3.to_checksum_address(alice)).call() == 7_000
        bridge = w3.eth.contract(address=Web3.to_checksum_address(addrs["bridge"]),
                                 abi=load_artifact("ParkBridge")["abi"])
        assert bridge.functions.laneOpen("dpos-park", "lane-0").call()
        nonce = w3.eth.get_transaction_count(operator.address)
        assert nonce == len(ADDRESS_KEYS) + 1 + 2 + 1  # contracts, a lane, the registry, a balance
        assert deploy_park(w3, operator, **args) == addrs  # done: sends nothing
        assert w3.eth.get_transaction_count(operator.address) == nonce


# --- the node process ----------------------------------------------------------------------------------


class NodeProc:
    """``parkrelay node ethereum`` runs, each with its own log file."""

    def __init__(self, cfg: DeploymentConfig) -> None:
        self.cfg = cfg
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        argv = [sys.executable, "-m", "relay.cli", "node", "ethereum", "--config", str(self.cfg.path),
                "--chain", CHAIN]
        with open(self.log_path(), "wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self.proc

    def log_path(self, run: int | None = None) -> Path:
        return self.cfg.data_dir / f"node-{run or self.runs}.log"

    def log(self, run: int | None = None) -> str:
        p = self.log_path(run)
        return p.read_text(errors="replace") if p.exists() else ""

    def anvil_pid(self) -> int:
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProc]:
    path = write_devnet(tmp_path, {"base_port": free_port(), "accounts": BALANCES,
                                   "max_certificate_age_ms": 90_000}, relay_port=free_port())
    cfg = load_config(path)
    devnet.init(cfg)
    n = NodeProc(cfg)
    yield n
    n.stop()


@pytest.mark.integration
def test_node_deploys_restarts_and_fails_with_anvil(node: NodeProc) -> None:
    cfg = node.cfg
    genesis = json.loads((cfg.data_dir / "genesis" / f"{CHAIN}.json").read_text())
    state_dir = cfg.data_dir / CHAIN
    w3 = Web3(Web3.HTTPProvider(cfg.chain(CHAIN).url_of("anvil"), request_kwargs={"timeout": 5}))

    # first start: contracts at the CREATE addresses of the operator's nonces 0, 1, 2 that genesis announced
    proc = node.start()
    wait_until(lambda: "ready:" in node.log(), 60, f"the node to deploy; log:\n{node.log()}")
    addresses = json.loads((state_dir / ADDRESSES_FILE).read_text())
    operator_key = read_secret(cfg.data_dir / "keys" / CHAIN / "accounts" / "operator.seed")
    assert addresses == genesis["contracts"] == expected_addresses(Account.from_key(operator_key).address)
    assert w3.eth.chain_id == 31337
    code = {k: w3.eth.get_code(Web3.to_checksum_address(a)) for k, a in addresses.items() if k != "deployer"}
    assert all(code.values())
    token = w3.eth.contract(address=Web3.to_checksum_address(addresses["energy_token"]),
                            abi=load_artifact("EnergyToken")["abi"])
    bridge = w3.eth.contract(address=Web3.to_checksum_address(addresses["bridge"]),
                             abi=load_artifact("ParkBridge")["abi"])
    accounts = {name: Web3.to_checksum_address(a["address"]) for name, a in genesis["accounts"].items()}
    assert set(accounts) == {*BALANCES, "relayer-a"}

    def kwh() -> dict[str, int]:
        return {name: token.functions.balanceOf(a).call() for name, a in accounts.items()}

    assert kwh() == {**BALANCES, "relayer-a": 0}
    assert all(w3.eth.get_balance(a) > 0 for a in accounts.values())  # ETH for gas, our own keys
    assert bridge.functions.laneOpen("dpos-park", "lane-0").call()
    relay_genesis = json.loads((cfg.data_dir / "genesis" / "relay.json").read_text())
    assert bridge.functions.relaySetHash().call().hex() == relay_genesis["validators"]["hash"]
    assert bridge.functions.relayChainId().call() == "relay"
    assert genesis["max_certificate_age_ms"] == bridge.functions.maxCertificateAgeMs().call() == 90_000  # §7.9

    # interval mining at ~1 s (not automine: blocks come without transactions)
    start_height = w3.eth.block_number
    wait_until(lambda: w3.eth.block_number > start_height, 5, "a new block")
    h0, t0 = w3.eth.block_number, time.monotonic()
    wait_until(lambda: w3.eth.block_number >= h0 + 3, 10, "three more blocks")
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed <= 6.0, f"3 blocks took {elapsed:.1f} s at a 1 s block interval"
    stamps = [w3.eth.get_block(h)["timestamp"] for h in range(h0, h0 + 4)]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] in (2, 3, 4), stamps

    # SIGTERM: exit 0 with the state saved
    height = w3.eth.block_number
    hashes = {h: w3.eth.get_block(h)["hash"] for h in (1, 2, height)}
    nonce = w3.eth.get_transaction_count(accounts["operator"])
    balances = kwh()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, node.log()
    assert "state saved" in node.log(1)
    assert (state_dir / STATE_FILE).stat().st_size > 0

    # restart: same chain, same contracts, nothing deployed again
    proc = node.start()
    wait_until(lambda: "ready:" in node.log(), 30, f"the restarted node; log:\n{node.log()}")
    assert "deploying nothing" in node.log() and "sent " not in node.log()
    assert w3.eth.block_number >= height
    wait_until(lambda: w3.eth.block_number > height + 1, 10, "blocks after the restart")
    assert {h: w3.eth.get_block(h)["hash"] for h in hashes} == hashes
    assert w3.eth.get_block(height + 1)["parentHash"] == hashes[height]
    assert w3.eth.get_transaction_count(accounts["operator"]) == nonce
    assert {k: w3.eth.get_code(Web3.to_checksum_address(addresses[k])) for k in code} == code
    assert kwh() == balances
    assert json.loads((state_dir / ADDRESSES_FILE).read_text()) == addresses

    # anvil dies under the node: the node exits non-zero
    os.kill(node.anvil_pid(), signal.SIGKILL)
    assert proc.wait(timeout=20) != 0
    assert "anvil exited unexpectedly" in node.log()

    # no key material in any log
    secrets = [p.read_text().strip() for p in (cfg.data_dir / "keys").rglob("*.seed")]
    logs = node.log(1) + node.log(2) + (state_dir / "anvil.log").read_text(errors="replace")
    assert secrets and not [s for s in secrets if s in logs]
