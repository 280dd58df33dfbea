"""Run one park-chain node process from a deployment config (``parkrelay node <kind>|relay``)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

from chains.common.node import NodeConfig, ParkNode
from relay.chain.consensus import ValidatorKey
from relay.ops.config import ConfigError, DeploymentConfig, kind_of
from relay.ops.keys import ed25519_signer, read_secret
from relay.ops.layout import (
    admin_token_path,
    cometbft_home_path,
    consensus_keys_path,
    genesis_path,
    node_key_path,
    relay_genesis_path,
    relay_key_paths,
)


def _relay_validator(cfg: DeploymentConfig, name: str, peers: list[str]) -> tuple[dict[str, Any], ValidatorKey,
                                                                                NodeConfig]:
    """What a relay validator process runs on, whatever the engine: the relay genesis, its key, its node config."""
    if name not in cfg.relay_validators:
        raise ConfigError(f"{cfg.path}: no relay validator {name!r}; validators are {list(cfg.relay_validators)}")
    if cfg.relay_base_port is None:
        raise ConfigError(f"{cfg.path}: [relay] base_port is not set, so the relay chain does not run here")
    gpath = relay_genesis_path(cfg)
    if not gpath.exists():
        raise ConfigError(f"no relay genesis at {gpath}: run `parkrelay devnet init --config {cfg.path}` first")
    genesis = json.loads(gpath.read_text())
    ed_path, eth_path = relay_key_paths(cfg, name)
    key = ValidatorKey(read_secret(ed_path), read_secret(eth_path))
    token = read_secret(admin_token_path(cfg)).hex() if admin_token_path(cfg).exists() else ""
    node_cfg = NodeConfig(name=name, data_dir=cfg.data_dir / "db", host=cfg.host_of(cfg.relay_chain_id, name),
                          port=cfg.relay_port(name), peers=peers, admin_token=token, limits=cfg.limits)
    return genesis, key, node_cfg


def load_relay_node(cfg: DeploymentConfig, name: str) -> ParkNode:
    from relay.chain.node import make_relay_node

    genesis, key, node_cfg = _relay_validator(cfg, name, [cfg.relay_url(v) for v in cfg.relay_validators if v != name])
    return make_relay_node(genesis, name, key, node_cfg)


def load_node(cfg: DeploymentConfig, kind: str, chain_id: str | None, name: str) -> ParkNode:
    if kind == "relay":
        return load_relay_node(cfg, name)
    chain_kind_ = kind_of(kind)
    if not chain_kind_.runs_on_park_node:
        raise ConfigError(f"a {kind} chain runs its own node process, not the park-node runtime")
    chains = cfg.chains_of_kind(kind) if chain_id is None else [cfg.chain(chain_id)]
    if len(chains) != 1:
        raise ConfigError(f"{cfg.path}: {len(chains)} chains of kind {kind}; name one with --chain")
    chain = chains[0]
    if chain.kind != kind:
        raise ConfigError(f"{cfg.path}: chain {chain.id} is a {chain.kind} chain; run `parkrelay node {chain.kind}`")
    if name not in chain.nodes:
        raise ConfigError(f"{cfg.path}: chain {chain.id} has no node {name!r}; nodes are {list(chain.nodes)}")
    gpath = genesis_path(cfg, chain.id)
    if not gpath.exists():
        raise ConfigError(f"no genesis at {gpath}: run `parkrelay devnet init --config {cfg.path}` first")
    genesis = json.loads(gpath.read_text())
    signer = ed25519_signer(node_key_path(cfg, chain.id, name))
    rules = chain_kind_.make_rules(genesis, name, signer, cfg.data_dir)
    token = read_secret(admin_token_path(cfg)).hex() if admin_token_path(cfg).exists() else ""
    peers = [chain.url_of(n, cfg.host) for n in chain.nodes if n != name]
    node_cfg = NodeConfig(name=name, data_dir=cfg.data_dir / "db", host=cfg.host_of(chain.id, name),
                          port=chain.port_of(name),
                          peers=peers, admin_token=token, limits=cfg.limits)
    return ParkNode(rules, node_cfg)


def _attestor(cfg: DeploymentConfig, name: str) -> Any:
    """Relay validator ``name``'s attestor of the deployment's parks attested by the relay (Ethereum; None if
    there are none)."""
    from relay.chain.attestor import AttestedChain, Attestor

    chains = [AttestedChain(c.id, c.url_of(c.nodes[0], cfg.host), int(c.params["confirmation_depth"]))
              for c in cfg.chains if kind_of(c.kind).attested_by_relay]
    if not chains:
        return None
    signer = ed25519_signer(relay_key_paths(cfg, name)[0])
    return Attestor(name, signer, cfg.relay_chain_id, cfg.relay_url(name), chains)


async def run_node(cfg: DeploymentConfig, kind: str, chain_id: str | None, name: str, api: Any = None) -> int:
    """Start the node and serve until SIGTERM or SIGINT, then stop cleanly. A relay validator with ``api``
    (:class:`relay.ops.api.server.ApiOptions`) serves the operator API too; on ``engine = "cometbft"`` it serves the
    ABCI socket and runs its ``cometbft`` (:class:`_CometEngine`), which it stops first."""
    from chains.common.heap import tune_heap
    from chains.common.storage import EXIT_STORAGE_FAULT, StorageFault

    tune_heap()  # buffers over 128 KiB mapped on their own: freed block bodies go back to the system
    comet = kind == "relay" and cfg.relay_engine == "cometbft"
    if kind == "relay":
        check_engine(cfg, name)
    try:
        app = load_cometbft_app(cfg, name) if comet else None
        node = app.node if app is not None else load_node(cfg, kind, chain_id, name)
    except StorageFault as exc:
        logging.getLogger("parkrelay.node").error("%s node %s cannot start: %s", chain_id or kind, name, exc)
        return EXIT_STORAGE_FAULT
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if kind == "relay":
        from relay.ops.api.metrics import register_relay_metrics

        register_relay_metrics(node, cfg)
    await node.start()
    engine = await _CometEngine.start(cfg, name, app) if app is not None else None
    server = None
    if api is not None and kind == "relay":
        from relay.ops.api.service import validator_api

        server = await validator_api(cfg, node, api)
    attestor = _attestor(cfg, name) if kind == "relay" else None
    attesting = asyncio.ensure_future(attestor.run()) if attestor is not None else None
    waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())}
    if engine is not None:
        waits.add(engine.exited)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    code = 1 if engine is not None and engine.exited.done() else 0
    for fut in waits:
        fut.cancel()
    node.log.info("stopping")
    if engine is not None:
        await engine.stop_cometbft()  # CometBFT first, the app still answering while it shuts down
    if server is not None:
        await server.stop()
    if attestor is not None and attesting is not None:
        attestor.stop()
        await attesting
    if engine is not None:
        await engine.server.stop()
    await node.stop()
    return (getattr(node, "exit_code", 0) or 1) if node.failed.is_set() else code


def check_engine(cfg: DeploymentConfig, name: str) -> None:
    """Refuse to run relay validator ``name`` on another engine than the one its database was made by (the two keep
    different records: a built-in chain's blocks mean nothing to CometBFT's block store, and the other way round);
    the first start records the engine beside the database (``<data_dir>/db/<name>.engine``)."""
    from chains.common.storage import atomic_write

    marker = cfg.data_dir / "db" / f"{name}.engine"
    db = cfg.data_dir / "db" / f"{cfg.relay_chain_id}-{name}.sqlite3"
    if marker.exists() or db.exists():  # a database from before the marker: the built-in engine's
        made_by = marker.read_text().strip() if marker.exists() else "builtin"
        if made_by != cfg.relay_engine:
            raise ConfigError(f"{cfg.path}: relay validator {name}'s database ({cfg.data_dir / 'db'}) was made by the "
                              f"{made_by!r} engine, and [relay] engine is {cfg.relay_engine!r}: a relay chain does "
                              f"not change engine; set engine = {made_by!r} or use a fresh data_dir")
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, cfg.relay_engine + "\n")


def load_cometbft_app(cfg: DeploymentConfig, name: str) -> Any:
    """Relay validator ``name``'s :class:`~relay.chain.abci.app.RelayAbciApp`, with its relay RPC node configured
    (``[relay] engine = "cometbft"``; ``devnet init`` made the CometBFT homes)."""
    from relay.chain.abci.app import ConsensusKeys, RelayAbciApp

    genesis, key, node_cfg = _relay_validator(cfg, name, [])  # CometBFT has the peers
    kpath = consensus_keys_path(cfg)
    if not kpath.exists():
        raise ConfigError(f"no {kpath}: run `parkrelay devnet init --config {cfg.path}` first")
    keys = ConsensusKeys({v: bytes.fromhex(k) for v, k in json.loads(kpath.read_text()).items()})
    _, rpc_port, _ = cfg.cometbft_ports(name)
    return RelayAbciApp(genesis, name=name, key=key, consensus_keys=keys, data_dir=node_cfg.data_dir,
                        node_config=node_cfg, cometbft_rpc=f"http://{node_cfg.host}:{rpc_port}")


class _CometEngine:
    """A relay validator's CometBFT side (:mod:`relay.chain.abci.node`): the app's ABCI server, then ``cometbft`` as a
    tied child. ``exited`` completes if CometBFT exits on its own (the process then exits 1: restarted, CometBFT
    replays to the app what it lacks)."""

    def __init__(self, server: Any, proc: Any, exited: asyncio.Future[int]) -> None:
        self.server, self.proc, self.exited = server, proc, exited

    @classmethod
    async def start(cls, cfg: DeploymentConfig, name: str, app: Any) -> _CometEngine:
        from relay.chain.abci.cometbft import init_home
        from relay.chain.abci.node import start_cometbft, wait_exit
        from relay.chain.abci.server import AbciServer
        from relay.ops.devnet import cometbft_settings

        server = AbciServer(app, host=cfg.host_of(cfg.relay_chain_id, name), port=cfg.cometbft_ports(name)[0],
                            name=f"{name}-abci")
        await server.start()
        logs = cfg.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        home = cometbft_home_path(cfg, name)
        # the deployment's addresses, ports and block interval as the config says now (e.g. hosts given after init)
        init_home(home, cometbft_settings(cfg, name))
        proc = await asyncio.to_thread(start_cometbft, home, logs / f"cometbft-{name}.log")
        app.node.log.info("relay validator %s on CometBFT: relay RPC %s, ABCI %s, CometBFT pid %d (log %s)", name,
                          app.node.url, server.address, proc.pid, logs / f"cometbft-{name}.log")
        engine = cls(server, proc, asyncio.ensure_future(wait_exit(proc)))
        engine.exited.add_done_callback(lambda f: None if f.cancelled() else app.node.log.error(
            "CometBFT exited with %s; stopping (restart the validator: CometBFT replays to the app what it lacks)",
            proc.returncode))
        return engine

    async def stop_cometbft(self) -> None:
        from chains.common.procs import stop as stop_process

        await asyncio.to_thread(stop_process, self.proc, 10.0)
