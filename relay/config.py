"""The deployment config: one TOML file describes chains, their nodes, relay validators and lanes.

``deploy/devnet.toml`` documents every key inline with its default. Errors name the key and say what
was expected, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAIN_KINDS = ("dpos", "poc", "ethereum")

ETHEREUM_NODE = "anvil"
"""The one node (process) of an ``ethereum`` chain: an anvil child of ``parkrelay node ethereum``."""
ETHEREUM_OPERATOR = "operator"
"""The account of an ``ethereum`` chain whose key deploys and owns the park's contracts (always created)."""
ETHEREUM_DEFAULTS: dict[str, int] = {"eth_chain_id": 31337, "block_interval_ms": 1000, "confirmation_depth": 2}
ETH_MIN_ATTESTED_AGE_MS = 2000
"""An Ethereum block is attested no younger than this: two of anvil's 1 s state dumps (chains/ethereum/anvil.py)."""
"""Defaults of an ``ethereum`` chain's keys. 31337 is anvil's own default chain id (tools treat it as local)."""
_ETH_MAX_CHAIN_ID = 4_503_599_627_370_476  # EIP-2294: the largest chain id every client supports


class ConfigError(Exception):
    """The config file is missing, unreadable, or has a bad key."""


@dataclass(frozen=True)
class ChainConfig:
    """One park chain of the deployment."""

    id: str
    """Chain id, unique in the deployment (``dpos-park``)."""
    kind: str
    """``dpos``, ``poc`` or ``ethereum``."""
    nodes: tuple[str, ...]
    """Node names (witnesses or farmers); each runs as its own process. ``ethereum``: ``("anvil",)``."""
    base_port: int
    """RPC port of the first node; the n-th node listens on ``base_port + n``."""
    accounts: dict[str, int]
    """Genesis accounts and their native balances in Wh."""
    params: dict[str, Any]
    """Kind-specific consensus parameters (see the chain's genesis docs). ``ethereum``: ``eth_chain_id``,
    ``block_interval_ms``, ``confirmation_depth``, all present (defaults filled in)."""

    def port_of(self, node: str) -> int:
        return self.base_port + self.nodes.index(node)

    def url_of(self, node: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port_of(node)}"


@dataclass(frozen=True)
class DeploymentConfig:
    """A whole deployment."""

    path: Path
    """The file it was read from."""
    data_dir: Path
    """Keys, genesis files, databases and logs (relative paths are relative to the current directory)."""
    host: str
    """Address every service binds to (default 127.0.0.1)."""
    chains: tuple[ChainConfig, ...]
    """The park chains."""
    relay_validators: tuple[str, ...]
    """Relay validator (park operator) names; their keys form the bridges' trusted set at genesis."""
    lanes: tuple[tuple[str, str, str], ...] = field(default=())
    """``(lane, chain_a, chain_b)``: bidirectional lanes between pairs of chains."""
    relay_chain_id: str = "relay"
    """The relay chain's id."""
    relay_base_port: int | None = None
    """RPC port of the first relay validator (n-th = base + n); None: the relay chain is not run here."""
    relay_block_interval_ms: int = 1000
    """Pause between a decided relay block and the next height."""
    relayers: tuple[str, ...] = field(default=())
    """Relayer service names; each gets an account on every chain."""
    relayer_takeover_after_s: float = 4.0
    """On chains where a redundant relay reaches a block and pays for it (Ethereum), one relayer of
    ``relayers`` has the turn for each packet action; the others take over only after this many seconds
    (the n-th in line after n times it)."""

    def relay_port(self, validator: str) -> int:
        assert self.relay_base_port is not None
        return self.relay_base_port + self.relay_validators.index(validator)

    def relay_url(self, validator: str) -> str:
        return f"http://{self.host}:{self.relay_port(validator)}"

    def chain(self, chain_id: str) -> ChainConfig:
        for c in self.chains:
            if c.id == chain_id:
                return c
        raise ConfigError(f"{self.path}: no chain {chain_id!r}; chains are {[c.id for c in self.chains]}")

    def chains_of_kind(self, kind: str) -> list[ChainConfig]:
        return [c for c in self.chains if c.kind == kind]


def _get(d: dict[str, Any], key: str, typ: type, where: str, default: Any = ...) -> Any:
    if key not in d:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    v = d[key]
    if (typ is int and isinstance(v, bool)) or not isinstance(v, typ):
        raise ConfigError(f"{where}.{key}: expected {typ.__name__}, got {v!r}")
    return v


def _ethereum_chain(c: dict[str, Any], cid: str, where: str, seen_ports: dict[int, str]) -> ChainConfig:
    """A ``kind = "ethereum"`` chain: one anvil node on ``base_port``; the park's accounts are ERC-20 balances."""
    allowed = {"id", "kind", "base_port", "accounts", *ETHEREUM_DEFAULTS}
    unknown = sorted(set(c) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for an ethereum chain (one anvil node, no `nodes`); "
                          f"allowed keys are {sorted(allowed)}")
    base_port = _get(c, "base_port", int, where)
    if not 0 < base_port < 65536:
        raise ConfigError(f"{where}.base_port: expected a TCP port (1-65535), got {base_port}")
    if base_port in seen_ports:
        raise ConfigError(f"{where}: port {base_port} already used by {seen_ports[base_port]}")
    seen_ports[base_port] = f"{cid}/{ETHEREUM_NODE}"
    params = {k: _get(c, k, int, where, d) for k, d in ETHEREUM_DEFAULTS.items()}
    if not 0 < params["eth_chain_id"] <= _ETH_MAX_CHAIN_ID:
        raise ConfigError(f"{where}.eth_chain_id: expected 1..{_ETH_MAX_CHAIN_ID} (EIP-2294), "
                          f"got {params['eth_chain_id']}")
    interval = params["block_interval_ms"]
    if interval < 1000 or interval % 1000:
        raise ConfigError(f"{where}.block_interval_ms: expected a whole number of seconds >= 1000 (Ethereum "
                          f"block timestamps are in seconds), got {interval}")
    if params["confirmation_depth"] * interval < ETH_MIN_ATTESTED_AGE_MS:
        raise ConfigError(f"{where}.confirmation_depth: the relay validators attest a block this many blocks deep, "
                          f"which must span at least {ETH_MIN_ATTESTED_AGE_MS} ms (two of anvil's 1 s state dumps, so "
                          f"a crash of anvil never loses an attested block); expected >= "
                          f"{-(-ETH_MIN_ATTESTED_AGE_MS // interval)} at {interval} ms blocks, "
                          f"got {params['confirmation_depth']}")
    accounts = _get(c, "accounts", dict, where, {})
    for name, bal in accounts.items():
        if isinstance(bal, bool) or not isinstance(bal, int) or bal < 0:
            raise ConfigError(f"{where}.accounts.{name}: expected a non-negative integer (Wh), got {bal!r}")
    return ChainConfig(cid, "ethereum", (ETHEREUM_NODE,), base_port, dict(accounts), params)


def load_config(path: str | Path) -> DeploymentConfig:
    """Read and check a deployment config."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    dep = _get(raw, "deployment", dict, str(p), {})
    data_dir = Path(_get(dep, "data_dir", str, "deployment", "var/devnet"))
    host = _get(dep, "host", str, "deployment", "127.0.0.1")
    chains: list[ChainConfig] = []
    seen_ports: dict[int, str] = {}
    for i, c in enumerate(_get(raw, "chains", list, str(p))):
        where = f"chains[{i}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected a table")
        cid = _get(c, "id", str, where)
        kind = _get(c, "kind", str, where)
        if kind not in CHAIN_KINDS:
            raise ConfigError(f"{where}.kind: expected one of {CHAIN_KINDS}, got {kind!r}")
        if kind == "ethereum":
            chains.append(_ethereum_chain(c, cid, where, seen_ports))
            continue
        nodes = tuple(_get(c, "nodes", list, where))
        if not nodes or not all(isinstance(n, str) for n in nodes) or len(set(nodes)) != len(nodes):
            raise ConfigError(f"{where}.nodes: expected a non-empty list of distinct names")
        base_port = _get(c, "base_port", int, where)
        for n in range(len(nodes)):
            port = base_port + n
            if port in seen_ports:
                raise ConfigError(f"{where}: port {port} already used by {seen_ports[port]}")
            seen_ports[port] = f"{cid}/{nodes[n]}"
        accounts = _get(c, "accounts", dict, where, {})
        for name, bal in accounts.items():
            if isinstance(bal, bool) or not isinstance(bal, int) or bal < 0:
                raise ConfigError(f"{where}.accounts.{name}: expected a non-negative integer (Wh), got {bal!r}")
        params = {k: v for k, v in c.items() if k not in {"id", "kind", "nodes", "base_port", "accounts"}}
        lc = params.get("light_client", {})
        # init args of the relay's client of this park (SPEC §8.4 for poc); their values are checked when the
        # relay genesis creates the client, here only their shape
        if not isinstance(lc, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in lc.values()):
            raise ConfigError(f"{where}.light_client: expected a table of integers, got {lc!r}")
        chains.append(ChainConfig(cid, kind, nodes, base_port, dict(accounts), params))
    if len({c.id for c in chains}) != len(chains):
        raise ConfigError(f"{p}: chain ids must be distinct")
    eth_ids = [c.params["eth_chain_id"] for c in chains if c.kind == "ethereum"]
    if len(set(eth_ids)) != len(eth_ids):
        raise ConfigError(f"{p}: ethereum chains need distinct eth_chain_id values (EIP-155 replay protection), "
                          f"got {eth_ids}")
    relay = _get(raw, "relay", dict, str(p), {})
    validators = tuple(_get(relay, "validators", list, "relay", ["op-a", "op-b", "op-c", "op-d"]))
    lanes = []
    for i, ln in enumerate(_get(raw, "lanes", list, str(p), [])):
        where = f"lanes[{i}]"
        lane = (_get(ln, "lane", str, where), _get(ln, "a", str, where), _get(ln, "b", str, where))
        if not {lane[1], lane[2]} & {c.id for c in chains}:
            raise ConfigError(f"{where}: neither {lane[1]!r} nor {lane[2]!r} is a chain of this deployment")
        if lane[1] == lane[2]:
            raise ConfigError(f"{where}: a lane joins two different chains, got {lane[1]!r} twice")
        lanes.append(lane)
    relay_chain_id = _get(relay, "chain_id", str, "relay", "relay")
    relay_base_port = _get(relay, "base_port", int, "relay", 0) or None
    if relay_base_port is not None:
        for n, v in enumerate(validators):
            port = relay_base_port + n
            if port in seen_ports:
                raise ConfigError(f"relay: port {port} already used by {seen_ports[port]}")
            seen_ports[port] = f"{relay_chain_id}/{v}"
    block_ms = _get(relay, "block_interval_ms", int, "relay", 1000)
    relayer_section = _get(raw, "relayers", dict, str(p), {})
    relayers = tuple(relayer_section.get("names", []))
    takeover = relayer_section.get("takeover_after_s", 4.0)
    if isinstance(takeover, bool) or not isinstance(takeover, int | float) or not 0 <= takeover <= 600:
        raise ConfigError(f"relayers.takeover_after_s must be a number of seconds in [0, 600], got {takeover!r}")
    return DeploymentConfig(p, data_dir, host, tuple(chains), validators, tuple(lanes), relay_chain_id,
                            relay_base_port, block_ms, relayers, float(takeover))
