"""The Ethereum park's node (SPEC §E4): ``parkrelay node ethereum --config FILE [--chain ID]``.

One process runs anvil as its child with interval mining every ``block_interval_ms`` and the chain's state in
``<data_dir>/<chain id>/anvil-state.json``, and serves the park's public JSON-RPC on ``<host>:<base_port>``
through :mod:`chains.ethereum.rpc_proxy`: standard ``eth_``/``net_``/``web3_`` methods for anyone, anvil's
operator methods (``anvil_*``, ``evm_*``, ``eth_sendTransaction`` ...) only with the deployment's admin token.
anvil itself is reachable only over its unix socket ``<data_dir>/<chain id>/anvil.ipc`` (0600), with its TCP
listener in a network namespace of its own where the host allows it (docs/security.md). At first start
(the bridge has no code) it funds the park's accounts with ETH for gas (``anvil_setBalance``), deploys the
contracts from the park operator's key at the addresses genesis announced, opens the lanes and mints the
genesis ``kWh`` balances. Every start writes ``<data_dir>/<chain id>/addresses.json``. SIGTERM/SIGINT stop
anvil (which dumps its state) and exit 0; anvil dying on its own makes the node exit 1.

The deployment config, keys and genesis files are read by the relay layer (``relay/ops/cli.py``), which hands
this module an :class:`EthNodeSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from chains.common.wire import validator_set_to_json
from chains.ethereum.anvil import Anvil, AnvilConfig, AnvilError, free_port, network_isolation_available
from chains.ethereum.deploy import (
    CONTRACTS,
    DEFAULT_MAX_CERTIFICATE_AGE_MS,
    DeployError,
    RelaySetArgs,
    create_address,
    deploy_market,
    deploy_park,
    expected_addresses,
    lower_address,
    market_step_count,
    park_step_count,
)
from chains.ethereum.params import EthChainParams
from chains.ethereum.rpc_proxy import IpcUpstream, RpcProxy
from protocol.certificate import ValidatorSet

log = logging.getLogger("parkrelay.ethereum")

NODE_NAME = "anvil"
"""Name of the chain's one node in logs, ``devnet`` process lists and the config."""
GAS_FUNDING_WEI = 1_000 * 10**18
"""ETH each park account gets for gas at first start."""
STATE_FILE = "anvil-state.json"
IPC_FILE = "anvil.ipc"
ISOLATED_ANVIL_PORT = 8545
"""anvil's TCP port inside its own network namespace (no one outside reaches it)."""
MAX_IPC_PATH = 100
"""Longest unix socket path we give anvil (the kernel's limit is 107 bytes)."""
ADDRESSES_FILE = "addresses.json"
HEARTBEAT_S = 30.0


def _genesis_lane(ln: tuple[str, str] | dict[str, Any]) -> dict[str, Any]:
    """A lane of the genesis file: ``{lane, chain, capacities?}``, from ``(lane, other chain)`` or an entry."""
    if not isinstance(ln, dict):
        return {"lane": ln[0], "chain": ln[1]}
    out: dict[str, Any] = {"lane": ln["lane"], "chain": ln["counterparty"]}
    if ln.get("capacities"):
        out["capacities"] = dict(ln["capacities"])
    return out


def build_genesis(
    *,
    chain_id: str,
    params: Mapping[str, Any],
    nodes: dict[str, bytes],
    accounts: dict[str, tuple[bytes, int]],
    relay_validators: ValidatorSet,
    lanes: list[tuple[str, str] | dict[str, Any]],
    genesis_time_ms: int,
    data_dir: Path,
) -> dict[str, Any]:
    """The genesis file of an Ethereum park, written by ``devnet init`` (same call as the Python parks).

    ``nodes`` maps the one node to the park operator's 20-byte address (the deployer, owner of the
    contracts); ``accounts`` maps names to ``(20-byte address, kWh balance in Wh)``; ``lanes`` are
    ``{lane, counterparty, capacities?}`` (:func:`chains.common.genesis.lanes_from_relay_genesis`: the
    relay's capacities for packets sent on the lane, which the deployment configures, protocol §6.8).
    The contract addresses are fixed here, before any node runs. ``params`` are the chain table's
    kind-specific keys (:class:`~chains.ethereum.params.EthChainParams`, or a mapping of them).
    """
    p = params if isinstance(params, EthChainParams) else EthChainParams.from_mapping(params)
    if len(nodes) != 1:
        raise ValueError(f"an ethereum park has one node (the operator's anvil), got {sorted(nodes)}")
    operator = lower_address(next(iter(nodes.values())))
    genesis = {
        "chain_id": chain_id,
        "kind": "ethereum",
        "eth_chain_id": p.eth_chain_id,
        "block_interval_ms": p.block_interval_ms,
        "confirmation_depth": p.confirmation_depth,
        "operator": operator,
        "contracts": expected_addresses(operator),
        "accounts": {name: {"address": lower_address(addr), "balance_wh": bal}
                     for name, (addr, bal) in accounts.items()},
        "lanes": [_genesis_lane(ln) for ln in lanes],
        "relay_validators": validator_set_to_json(relay_validators),
        "genesis_time_ms": genesis_time_ms,
        "registry": {"transformers": dict(p.transformers), "stations": dict(p.stations)},
    }
    if p.max_certificate_age_ms != DEFAULT_MAX_CERTIFICATE_AGE_MS:  # absent: the bridge's default (SPEC §7.9)
        genesis["max_certificate_age_ms"] = p.max_certificate_age_ms
    if p.market_buses:
        unknown = sorted(set(p.market_members) - set(accounts))
        if unknown:
            raise ValueError(f"market_members {unknown} are not accounts of {chain_id} (accounts: {sorted(accounts)})")
        first = park_step_count(len(lanes), len(p.transformers), len(p.stations),
                                sum(1 for _, bal in accounts.values() if bal > 0))
        genesis["market"] = market_genesis(p, operator, first, {n: lower_address(accounts[n][0])
                                                                 for n in p.market_members})
    return genesis


def market_genesis(p: EthChainParams, operator: str, first_nonce: int, members: Mapping[str, str]) -> dict[str, Any]:
    """The genesis ``market`` of a park whose chain table has ``market_buses`` (SPEC §E2.9): where the node deploys
    ``EnergyMarket`` (the operator's CREATE address of ``first_nonce``, the nonce after the park's deployment, so
    clients know it before any node runs, like the bridge's), its feeder (``buses``, bus 0 the substation first, as
    ``[parent, length_m, limit_wh]``), its members (name -> ``{address, bus}``) and the defaults of the rounds the
    operator opens."""
    buses = [[0, 0, 1]] + [[b["parent"], b["length_m"], b["limit_wh"]] for b in p.market_buses.values()]
    return {"address": create_address(operator, first_nonce), "first_nonce": first_nonce, "buses": buses,
            "members": {n: {"address": members[n], "bus": bus} for n, bus in p.market_members.items()},
            "charge_rate": p.market_charge_rate, "round_s": p.market_round_s,
            "min_imported_score": p.market_min_imported_score}


@dataclass(frozen=True)
class EthNodeSettings:
    """Everything the node needs, resolved from the deployment config, genesis files and key files."""

    chain_id: str
    """Park chain id (``eth-park``)."""
    genesis: dict[str, Any]
    """The park's genesis (:func:`build_genesis`)."""
    operator_key: bytes
    """The park operator's secp256k1 secret: deploys and owns the contracts. Never logged."""
    relay_chain_id: str
    relay_set: RelaySetArgs
    """The relay validator set the bridge trusts at deployment."""
    port: int
    """The park's public JSON-RPC port (the proxy in front of anvil)."""
    state_dir: Path
    """``<data_dir>/<chain id>``: state file, ``addresses.json``, ``anvil.log``."""
    host: str = "127.0.0.1"
    state_interval_s: int = 1
    """Seconds between anvil's periodic state dumps."""
    gas_funding_wei: int = GAS_FUNDING_WEI
    artifacts_dir: Path | None = None
    """Contract artifacts; None: the committed ones."""
    admin_token: str = ""
    """Bearer token for anvil's operator methods through the proxy (the deployment's admin token); empty: a
    random one, i.e. operator methods off."""
    isolate_anvil: bool | None = None
    """anvil's TCP listener in a network namespace of its own; None: wherever the host allows it."""


class EthereumNode:
    """anvil plus the park's first-start deployment."""

    def __init__(self, settings: EthNodeSettings) -> None:
        self.s = settings
        self.log = logging.LoggerAdapter(log, {"chain": settings.chain_id, "node": NODE_NAME})
        g = settings.genesis
        self.block_time_s = int(g["block_interval_ms"]) // 1000
        self.state_path = settings.state_dir / STATE_FILE
        self.ipc_path = ipc_path_for(settings.state_dir)
        isolate = settings.isolate_anvil
        if isolate is None:
            isolate = network_isolation_available()
        self.isolated = isolate
        self.anvil = Anvil(AnvilConfig(port=ISOLATED_ANVIL_PORT if isolate else free_port(),
                                       chain_id=int(g["eth_chain_id"]), block_time_s=self.block_time_s,
                                       state_path=self.state_path, state_interval_s=settings.state_interval_s,
                                       host="127.0.0.1", log_path=settings.state_dir / "anvil.log",
                                       ipc_path=self.ipc_path, isolate_network=isolate))
        self.proxy = RpcProxy(IpcUpstream(self.ipc_path), settings.admin_token, chain_id=settings.chain_id)
        self.addresses: dict[str, str] = {}

    async def serve(self) -> None:
        """Open the park's public port (the proxy); OSError if it is taken."""
        port = await self.proxy.start(self.s.host, self.s.port)
        self.log.info("serving the park's JSON-RPC on http://%s:%d (public: standard eth_/net_/web3_ methods; "
                      "operator methods with the admin token)", self.s.host, port)

    def start_anvil(self) -> None:
        """Spawn anvil, tied to this process (see :class:`Anvil`)."""
        self.s.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.s.state_dir, 0o700)
        resumed = self.state_path.exists()
        if not self.isolated:
            self.log.warning("user namespaces are not available: anvil's own TCP listener is on %s, which other "
                             "users of this host can reach (anvil cannot turn it off); see docs/security.md",
                             self.anvil.url)
        self.anvil.spawn()
        self.log.info("anvil pid %d on %s%s: chain id %s, a block every %d s, state %s (%s)", self.anvil.pid,
                      self.anvil.endpoint, " (own network namespace)" if self.isolated else "",
                      self.s.genesis["eth_chain_id"], self.block_time_s, self.state_path,
                      "loading the saved chain" if resumed else "new chain")

    def prepare(self) -> dict[str, str]:
        """Wait for anvil, deploy at first start (or finish a cut-short deployment), write ``addresses.json``.
        Blocking; run it in a worker thread."""
        self.anvil.wait_ready()
        g = self.s.genesis
        operator = Account.from_key(self.s.operator_key)
        expected = expected_addresses(operator.address)
        if expected != g["contracts"] or lower_address(operator.address) != g["operator"]:
            raise DeployError(f"the operator key does not match genesis (genesis operator {g['operator']}, key's "
                              f"address {lower_address(operator.address)}): wrong key file or a stale genesis")
        w3 = Web3(Web3.IPCProvider(str(self.ipc_path), timeout=10))
        height = w3.eth.block_number
        bridge = Web3.to_checksum_address(expected["bridge"])
        has_code = bool(w3.eth.get_code(bridge))
        # the charging-right registry at deployment, if the genesis names one (`registry`: {transformers, stations})
        registry = g.get("registry") or {"transformers": {}, "stations": {}}
        steps = park_step_count(len(g["lanes"]), len(registry["transformers"]), len(registry["stations"]),
                                sum(1 for a in g["accounts"].values() if a["balance_wh"] > 0))
        market = g.get("market")
        if market is not None and int(market["first_nonce"]) != steps:
            raise DeployError(f"genesis places the market at the operator's nonce {market['first_nonce']}, but the "
                              f"park's deployment ends at nonce {steps}: a stale genesis")
        total = steps + (market_step_count(len(market["buses"]), len(market["members"]), market["min_imported_score"])
                         if market is not None else 0)
        if has_code and w3.eth.get_transaction_count(operator.address) >= total:
            self.log.info("contracts found at height %d (bridge %s); deploying nothing", height, expected["bridge"])
        else:
            if not has_code:
                funded = sorted({g["operator"], *(a["address"] for a in g["accounts"].values())})
                self.log.info("first start at height %d: funding %d accounts with %d ETH each for gas", height,
                              len(funded), self.s.gas_funding_wei // 10**18)
                for addr in funded:
                    self.anvil.set_balance(addr, self.s.gas_funding_wei)
            self.log.info("deploying %s from %s; %d lane(s), %d balance(s)", ", ".join(CONTRACTS),
                          expected["deployer"], len(g["lanes"]), steps - len(CONTRACTS) - len(g["lanes"]))
            deploy_park(w3, operator, chain_id=self.s.chain_id, relay_chain_id=self.s.relay_chain_id,
                        relay_set=self.s.relay_set,
                        lanes=[(ln["chain"], ln["lane"]) for ln in g["lanes"]],
                        lane_capacities={(ln["chain"], ln["lane"]): ln["capacities"] for ln in g["lanes"]
                                         if ln.get("capacities")},
                        balances={a["address"]: a["balance_wh"] for a in g["accounts"].values()},
                        transformers=registry["transformers"], stations=registry["stations"],
                        max_certificate_age_ms=int(g.get("max_certificate_age_ms", DEFAULT_MAX_CERTIFICATE_AGE_MS)),
                        artifacts_dir=self.s.artifacts_dir, logger=self.log)
            self.log.info("deployed: ParkBridge %s, EnergyToken %s, ChargingRights %s, ReputationApp %s",
                          expected["bridge"], expected["energy_token"], expected["rights"], expected["reputation"])
            if market is not None:
                self.log.info("deploying EnergyMarket at %s: %d buses, %d members", market["address"],
                              len(market["buses"]), len(market["members"]))
                got = deploy_market(w3, operator, expected, [tuple(b) for b in market["buses"]],
                                    members={m["address"]: int(m["bus"]) for m in market["members"].values()},
                                    min_imported_score=int(market["min_imported_score"]), first_nonce=steps,
                                    artifacts_dir=self.s.artifacts_dir, logger=self.log)
                if got != market["address"]:
                    raise DeployError(f"EnergyMarket deployed at {got}, genesis announced {market['address']}")
                self.log.info("deployed: EnergyMarket %s", got)
        _write_json_atomic(self.s.state_dir / ADDRESSES_FILE, expected)
        self.addresses = expected
        return expected

    def stop(self) -> None:
        """Stop anvil: SIGTERM (it dumps the state), bounded wait, then SIGKILL."""
        if self.anvil.returncode() is not None:
            return
        before = self.state_path.stat().st_mtime_ns if self.state_path.exists() else 0
        height = None
        with contextlib.suppress(OSError, AnvilError):
            height = self.anvil.block_number()
        code = self.anvil.stop()
        saved = self.state_path.exists() and self.state_path.stat().st_mtime_ns != before
        if code == -signal.SIGKILL:
            self.log.warning("anvil did not stop on SIGTERM and was killed; state as of its last periodic dump")
        elif saved:
            self.log.info("anvil stopped at height %s; state saved to %s (%d KiB)", height, self.state_path,
                          self.state_path.stat().st_size // 1024)
        else:
            self.log.warning("anvil stopped (exit code %s) but did not write %s", code, self.state_path)

    async def heartbeat(self) -> None:
        """Log the head every :data:`HEARTBEAT_S`."""
        last = None
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                height = await asyncio.to_thread(self.anvil.block_number)
            except (OSError, AnvilError) as exc:
                self.log.warning("anvil did not answer: %s", exc)
                continue
            self.log.info("height %d (+%s in %.0f s)", height, "?" if last is None else height - last, HEARTBEAT_S)
            last = height


async def run_ethereum_node(settings: EthNodeSettings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until anvil dies or setup fails (exit 1)."""
    node = EthereumNode(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.serve()
    except OSError as exc:
        node.log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    try:
        node.start_anvil()
    except AnvilError as exc:
        node.log.error("cannot start anvil: %s", exc)
        await node.proxy.stop()
        return 1
    stopped = asyncio.ensure_future(stop.wait())
    exited = asyncio.ensure_future(asyncio.to_thread(node.anvil.wait))
    tasks: list[asyncio.Future[Any]] = [stopped, exited]
    try:
        prepared = asyncio.ensure_future(asyncio.to_thread(node.prepare))
        done = await _first(stopped, exited, prepared)
        if prepared in done:
            failure = prepared.exception()
            if failure is not None:
                node.log.error("setup failed: %s", failure)
                return 1
            node.log.info("ready: bridge %s, energy token %s; addresses in %s", node.addresses["bridge"],
                          node.addresses["energy_token"], settings.state_dir / ADDRESSES_FILE)
            tasks.append(asyncio.ensure_future(node.heartbeat()))
            done = await _first(stopped, exited)
        if exited in done:
            node.log.error("anvil exited unexpectedly (code %s); see %s", exited.result(),
                           settings.state_dir / "anvil.log")
            return 1
        node.log.info("stopping")
        return 0
    finally:
        await node.proxy.stop()
        await asyncio.to_thread(node.stop)
        if node.ipc_path.parent != settings.state_dir:  # the private directory of a too-long socket path
            shutil.rmtree(node.ipc_path.parent, ignore_errors=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _first(*futs: asyncio.Future[Any]) -> set[asyncio.Future[Any]]:
    done, _ = await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    return done


def ipc_path_for(state_dir: Path) -> Path:
    """anvil's socket: ``<state_dir>/anvil.ipc``, or a fresh private directory's if that path is too long for a
    unix socket."""
    path = state_dir / IPC_FILE
    if len(str(path.resolve())) <= MAX_IPC_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="parkrelay-anvil-")) / IPC_FILE  # mode 0700


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def relay_set_from_json(obj: dict[str, Any]) -> RelaySetArgs:
    """The constructor's relay set from a validator set in the ``chains.common.wire`` JSON form."""
    vals: Sequence[dict[str, Any]] = obj["validators"]
    return ([bytes.fromhex(v["ed25519_pubkey"]) for v in vals], ["0x" + v["eth_address"] for v in vals],
            [int(v["power"]) for v in vals])
