"""Run one park-chain node process from a deployment config (``parkrelay node <kind>|relay``)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from chains.common.kind import ChainKind
from chains.common.node import NodeConfig, ParkNode
from chains.registry import UnknownChainKindError, chain_kind
from relay.config import ConfigError, DeploymentConfig
from relay.consensus import ValidatorKey
from relay.keys import ed25519_signer, read_secret


def kind_of(name: str) -> ChainKind:
    """The chain kind called ``name``, or a :class:`ConfigError` naming the known ones."""
    try:
        return chain_kind(name)
    except UnknownChainKindError as exc:
        raise ConfigError(str(exc)) from exc


def genesis_path(cfg: DeploymentConfig, chain_id: str) -> Path:
    return cfg.data_dir / "genesis" / f"{chain_id}.json"


def fabric_profile_path(cfg: DeploymentConfig, chain: Any) -> Path:
    """The hfc connection profile a Fabric park's clients use: its ``connection_profile`` key (a relative path is
    read from the config file's folder), else the one its supervisor writes
    (``<data_dir>/<chain id>/connection-profile.json``)."""
    named = str(chain.params.get("connection_profile") or "")
    return Path(cfg.path).parent / named if named else cfg.data_dir / chain.id / "connection-profile.json"


def node_key_path(cfg: DeploymentConfig, chain_id: str, name: str) -> Path:
    return cfg.data_dir / "keys" / chain_id / f"{name}.seed"


def admin_token_path(cfg: DeploymentConfig) -> Path:
    return cfg.data_dir / "keys" / "admin.token"


def relay_genesis_path(cfg: DeploymentConfig) -> Path:
    return cfg.data_dir / "genesis" / f"{cfg.relay_chain_id}.json"


def load_relay_node(cfg: DeploymentConfig, name: str) -> ParkNode:
    from relay.devnet import relay_key_paths
    from relay.node import make_relay_node

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
    peers = [cfg.relay_url(v) for v in cfg.relay_validators if v != name]
    node_cfg = NodeConfig(name=name, data_dir=cfg.data_dir / "db", host=cfg.host, port=cfg.relay_port(name),
                          peers=peers, admin_token=token)
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
    node_cfg = NodeConfig(name=name, data_dir=cfg.data_dir / "db", host=cfg.host, port=chain.port_of(name),
                          peers=peers, admin_token=token)
    return ParkNode(rules, node_cfg)


def _attestor(cfg: DeploymentConfig, name: str) -> Any:
    """Relay validator ``name``'s attestor of the deployment's parks attested by the relay (Ethereum; None if
    there are none)."""
    from relay.attestor import AttestedChain, Attestor
    from relay.devnet import relay_key_paths

    chains = [AttestedChain(c.id, c.url_of(c.nodes[0], cfg.host), int(c.params["confirmation_depth"]))
              for c in cfg.chains if kind_of(c.kind).attested_by_relay]
    if not chains:
        return None
    signer = ed25519_signer(relay_key_paths(cfg, name)[0])
    return Attestor(name, signer, cfg.relay_chain_id, cfg.relay_url(name), chains)


async def run_node(cfg: DeploymentConfig, kind: str, chain_id: str | None, name: str) -> int:
    """Start the node and serve until SIGTERM or SIGINT, then stop cleanly."""
    node = load_node(cfg, kind, chain_id, name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    attestor = _attestor(cfg, name) if kind == "relay" else None
    attesting = asyncio.ensure_future(attestor.run()) if attestor is not None else None
    stopped, failed = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    for fut in (stopped, failed):
        fut.cancel()
    node.log.info("stopping")
    if attestor is not None and attesting is not None:
        attestor.stop()
        await attesting
    await node.stop()
    return 1 if node.failed.is_set() else 0
