"""The deployment config: one TOML file describes chains, their nodes, relay validators and lanes.

``deploy/devnet.toml`` documents every key inline with its default. Errors name the key and say what
was expected, so an operator can fix the file without reading code.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chains.common.kind import ChainKind, KindParams, ParamError
from chains.common.node import AdmissionLimits
from chains.ethereum.kind import EthereumKind
from chains.ethereum.params import EthChainParams
from chains.registry import KINDS, UnknownChainKindError, chain_kind
from relay.chain.node import BLOCK_MAX_BYTES_BOUNDS
from relay.relayer.policy import MinFees

RELAY_MAX_BLOCK_BYTES = 3 * 1024 * 1024
"""``[relay] max_block_bytes`` when the file does not say: 3 MiB, about 1,100 packet steps a block."""

CHAIN_KINDS = tuple(KINDS)
"""Every park chain kind's name (:data:`chains.registry.KINDS`)."""

ETHEREUM_NODE = EthereumKind.fixed_nodes[0]
"""The one node (process) of an ``ethereum`` chain: an anvil child of ``parkrelay node ethereum``."""
ETHEREUM_OPERATOR = "operator"
"""The account of an ``ethereum`` chain whose key deploys and owns the park's contracts (always created)."""
ETHEREUM_DEFAULTS: dict[str, int] = EthChainParams.defaults()
"""Defaults of an ``ethereum`` chain's keys (:class:`chains.ethereum.params.EthChainParams`)."""
CHAIN_BASE_KEYS = ("id", "kind", "nodes", "base_port", "accounts", "light_client")
"""Keys of every ``[[chains]]`` table; the others are the kind's typed parameters (``chains/<kind>/params.py``)."""


class ConfigError(Exception):
    """The config file is missing, unreadable, or has a bad key."""


def kind_of(name: str) -> ChainKind:
    """The chain kind called ``name``, or a :class:`ConfigError` naming the known ones."""
    try:
        return chain_kind(name)
    except UnknownChainKindError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class ChainConfig:
    """One park chain of the deployment."""

    id: str
    """Chain id, unique in the deployment (``dpos-park``)."""
    kind: str
    """The chain kind's name (:data:`chains.registry.KINDS`: ``dpos``, ``poc`` or ``ethereum``)."""
    nodes: tuple[str, ...]
    """Node names (witnesses or farmers); each runs as its own process. ``ethereum``: ``("anvil",)``."""
    base_port: int
    """RPC port of the first node; the n-th node listens on ``base_port + n``."""
    accounts: dict[str, int]
    """Genesis accounts and their native balances in Wh."""
    params: KindParams
    """The kind's typed parameters, defaults filled in (``chains/<kind>/params.py``); they read as a mapping too
    (``params["confirmation_depth"]``)."""
    light_client: dict[str, int] = field(default_factory=dict)
    """The chain table's ``light_client`` table: init args of the relay chain's light client of this park
    (windows and bounds, SPEC §8.4-§8.6; names from the kind's ``client_params``, values checked when the relay
    genesis creates the client)."""
    hosts: dict[str, str] = field(default_factory=dict)
    """Node name -> the address it binds to and is reached at, for the nodes ``[deployment] hosts`` places on a
    host of their own (``"<chain id>/<node>"`` keys there); the others use the ``host`` their caller passes."""

    def port_of(self, node: str) -> int:
        return self.base_port + self.nodes.index(node)

    def url_of(self, node: str, host: str = "127.0.0.1") -> str:
        return f"http://{self.hosts.get(node, host)}:{self.port_of(node)}"


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
    relay_block_interval_ms: int = 500
    """Pause between a decided relay block and the next height (the block interval; 1000 before issue 16: half a
    second halved the relay's overhead through phase 4 at 100 transfers/s and raised what 200/s sustains)."""
    relayers: tuple[str, ...] = field(default=())
    """Relayer service names; each gets an account on every chain."""
    lane_limits: dict[tuple[str, str, str], dict[str, dict[str, int]]] = field(default_factory=dict)
    """Rate limits of a lane of ``lanes`` (same key), ``{asset: {capacity, refill_per_s}}`` (``*``: the
    default), in both directions; a lane without an entry is not limited. The relay genesis sets them and
    every park at either end learns the capacities at its own genesis (protocol SPEC §6.8)."""
    relayer_takeover_after_s: float = 4.0
    """On chains where a redundant relay reaches a block and pays for it (Ethereum), one relayer of
    ``relayers`` has the turn for each packet action; the others take over only after this many seconds
    (the n-th in line after n times it)."""
    relayer_heartbeat_s: float | None = 5.0
    """Each relayer refreshes the relay's light client of every park at least this often, lanes idle or not,
    so a client is never stale when a packet comes (a stale probabilistic-finality client waits out its
    finality window, SPEC §8). ``0`` in the file: only when a packet needs it (None here)."""
    node_hosts: dict[str, str] = field(default_factory=dict)
    """``[deployment] hosts``: ``"<chain id>/<node>"`` (the relay chain's id for a relay validator) -> the IP
    address that node binds to and is reached at, instead of ``host`` (e.g. each node in a network namespace of
    its own, :mod:`relay.ops.netns`). Nodes not named use ``host``."""
    relay_recovery_delay_ms: int | None = None
    """``[relay] recovery_delay_ms``: ``client.recover`` waits this long after a freeze (protocol SPEC §8.8; None: the
    relay's default, 11 minutes). Keep it >= every park bridge's ``max_certificate_age_ms`` (§7.9) + clock skew."""
    relayer_pipeline_proofs: bool = True
    """``[relayers] pipeline_proofs``: a relayer submits a proof right behind the client update that makes its
    height final (both in one relay block) when it can tell that height with the relay's own client code; False:
    it waits for the update's block first (one relay block more per phase, no client-state reads)."""
    relay_engine: str = "builtin"
    """``[relay] engine``: the relay chain's consensus. ``"builtin"``: parkrelay's own Tendermint-style BFT inside
    each validator process; ``"cometbft"``: each validator process runs the relay state machine as an ABCI
    application of its own ``cometbft`` child (issue 17, protocol SPEC §7.11). Same rules, certificates and RPC."""
    cometbft_base_port: int | None = None
    """``[relay.cometbft] base_port``: with ``engine = "cometbft"``, validator n's CometBFT uses base + 3n (the ABCI
    socket its app serves), base + 3n + 1 (CometBFT's RPC) and base + 3n + 2 (CometBFT's P2P)."""
    cometbft_timeout_propose_ms: int = 1000
    """``[relay.cometbft] timeout_propose_ms``: how long validators wait for a round's proposal before moving on
    (CometBFT ``consensus.timeout_propose``; its default 3 s). The block interval is ``block_interval_ms``
    (``consensus.timeout_commit``)."""
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    """``[limits]``: the admission bounds of every park node and relay validator (mempool, RPC, WebSocket) and the
    operator API's rate bound (:class:`~chains.common.node.AdmissionLimits`)."""
    relayer_min_fees: dict[str, MinFees] = field(default_factory=dict)
    """``[relayers.min_fees.<park>] verify, execute, confirm``: the deployment's relayers take a step of a packet from
    that park only for at least this fee, in the park's currency (protocol SPEC §6.10); a park not named: any fee."""
    relay_max_block_bytes: int = RELAY_MAX_BLOCK_BYTES
    """``[relay] max_block_bytes``: the most bytes of transactions a relay block holds (relay genesis
    ``block.max_bytes``, fixed at ``devnet init``). A larger block carries more packet steps a block: the relay's
    capacity under a backlog, paid in validator memory."""

    def host_of(self, chain_id: str, node: str) -> str:
        """The address node ``node`` of ``chain_id`` (or relay validator ``node``) binds to and is reached at."""
        return self.node_hosts.get(f"{chain_id}/{node}", self.host)

    def relay_port(self, validator: str) -> int:
        assert self.relay_base_port is not None
        return self.relay_base_port + self.relay_validators.index(validator)

    def relay_url(self, validator: str) -> str:
        return f"http://{self.host_of(self.relay_chain_id, validator)}:{self.relay_port(validator)}"

    def cometbft_ports(self, validator: str) -> tuple[int, int, int]:
        """Validator ``validator``'s CometBFT ports: (ABCI, RPC, P2P) (``cometbft_base_port``)."""
        assert self.cometbft_base_port is not None
        n = self.relay_validators.index(validator)
        base = self.cometbft_base_port + 3 * n
        return base, base + 1, base + 2

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


def _chain(c: dict[str, Any], i: int, path: Path, seen_ports: dict[int, str]) -> ChainConfig:
    """One ``[[chains]]`` table: the base keys here, the rest by the kind's typed parameters."""
    where = f"chains[{i}]"
    if not isinstance(c, dict):
        raise ConfigError(f"{where}: expected a table")
    cid = _get(c, "id", str, where)
    kind_name = _get(c, "kind", str, where)
    if kind_name not in KINDS:
        raise ConfigError(f"{path}: chain {cid!r}: {where}.kind: expected one of {CHAIN_KINDS}, got {kind_name!r}")
    kind = chain_kind(kind_name)
    if kind.fixed_nodes:
        if "nodes" in c:
            raise ConfigError(f"{where}: unknown key(s) ['nodes'] for an {kind.name} chain (its nodes are always "
                              f"{list(kind.fixed_nodes)}, no `nodes`); allowed keys are "
                              f"{sorted({*CHAIN_BASE_KEYS, *kind.params_type.defaults()} - {'nodes'})}")
        nodes: tuple[str, ...] = kind.fixed_nodes
    else:
        nodes = tuple(_get(c, "nodes", list, where))
        if not nodes or not all(isinstance(n, str) for n in nodes) or len(set(nodes)) != len(nodes):
            raise ConfigError(f"{where}.nodes: expected a non-empty list of distinct names")
    base_port = _get(c, "base_port", int, where)
    accounts = _get(c, "accounts", dict, where, {})
    for name, bal in accounts.items():
        if isinstance(bal, bool) or not isinstance(bal, int) or bal < 0:
            raise ConfigError(f"{where}.accounts.{name}: expected a non-negative integer (Wh), got {bal!r}")
    try:
        params = kind.parse_params({k: v for k, v in c.items() if k not in CHAIN_BASE_KEYS})
    except ParamError as exc:
        raise ConfigError(f"{path}: chain {cid!r} (kind {kind.name}): {where}.{exc}") from exc
    ports = kind.port_count(params, nodes)
    if not 0 < base_port < 65536 - ports + 1:
        raise ConfigError(f"{where}.base_port: expected a TCP port (1-{65536 - ports}) with its {ports} port(s) "
                          f"after it, got {base_port}")
    for n in range(ports):
        if base_port + n in seen_ports:
            raise ConfigError(f"{where}: port {base_port + n} already used by {seen_ports[base_port + n]}")
        seen_ports[base_port + n] = f"{cid}/{nodes[n] if n < len(nodes) else nodes[-1]}"
    lc = _get(c, "light_client", dict, where, {})
    unknown = sorted(set(lc) - set(kind.client_params))
    if unknown:
        raise ConfigError(f"{path}: chain {cid!r}: {where}.light_client: unknown key(s) {unknown}; a {kind.name} "
                          f"client takes {sorted(kind.client_params)}")
    for key, value in lc.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{path}: chain {cid!r}: {where}.light_client.{key}: expected a non-negative integer, "
                              f"got {value!r}")
    return ChainConfig(cid, kind.name, nodes, base_port, dict(accounts), params, dict(lc))


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
        chains.append(_chain(c, i, p, seen_ports))
    if len({c.id for c in chains}) != len(chains):
        raise ConfigError(f"{p}: chain ids must be distinct")
    eth_ids = [c.params.eth_chain_id for c in chains if isinstance(c.params, EthChainParams)]
    if len(set(eth_ids)) != len(eth_ids):
        raise ConfigError(f"{p}: ethereum chains need distinct eth_chain_id values (EIP-155 replay protection), "
                          f"got {eth_ids}")
    relay = _get(raw, "relay", dict, str(p), {})
    validators = tuple(_get(relay, "validators", list, "relay", ["op-a", "op-b", "op-c", "op-d"]))
    lanes = []
    lane_limits: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
    for i, ln in enumerate(_get(raw, "lanes", list, str(p), [])):
        where = f"lanes[{i}]"
        lane = (_get(ln, "lane", str, where), _get(ln, "a", str, where), _get(ln, "b", str, where))
        unknown_keys = sorted(set(ln) - {"lane", "a", "b", "limits"})
        if unknown_keys:
            raise ConfigError(f"{where}: unknown keys {unknown_keys} (a lane is lane, a, b and optional limits)")
        if "limits" in ln:
            lane_limits[lane] = _lane_limits(_get(ln, "limits", dict, where), f"{where}.limits")
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
    block_ms = _get(relay, "block_interval_ms", int, "relay", 500)
    max_block_bytes = _get(relay, "max_block_bytes", int, "relay", RELAY_MAX_BLOCK_BYTES)
    lo, hi = BLOCK_MAX_BYTES_BOUNDS  # what the relay genesis accepts
    if not lo <= max_block_bytes <= hi:
        raise ConfigError(f"relay.max_block_bytes must be bytes in [{lo}, {hi}], got {max_block_bytes!r}")
    engine, comet_base, comet_propose = _relay_engine(relay, validators, relay_chain_id, relay_base_port, seen_ports)
    recovery_delay = relay.get("recovery_delay_ms")
    if recovery_delay is not None and (isinstance(recovery_delay, bool) or not isinstance(recovery_delay, int)
                                       or not 0 <= recovery_delay <= 7 * 24 * 3600 * 1000):
        raise ConfigError(f"relay.recovery_delay_ms must be milliseconds in [0, 604800000], got {recovery_delay!r}")
    relayer_section = _get(raw, "relayers", dict, str(p), {})
    relayers = tuple(relayer_section.get("names", []))
    takeover = relayer_section.get("takeover_after_s", 4.0)
    if isinstance(takeover, bool) or not isinstance(takeover, int | float) or not 0 <= takeover <= 600:
        raise ConfigError(f"relayers.takeover_after_s must be a number of seconds in [0, 600], got {takeover!r}")
    heartbeat = relayer_section.get("heartbeat_s", 5.0)
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not 0 <= heartbeat <= 3600:
        raise ConfigError(f"relayers.heartbeat_s must be a number of seconds in [0, 3600], got {heartbeat!r}")
    pipeline = relayer_section.get("pipeline_proofs", True)
    if not isinstance(pipeline, bool):
        raise ConfigError(f"relayers.pipeline_proofs must be true or false, got {pipeline!r}")
    known = ("names", "takeover_after_s", "heartbeat_s", "pipeline_proofs", "min_fees")
    unknown = sorted(set(relayer_section) - set(known))
    if unknown:
        raise ConfigError(f"{p}: [relayers] has unknown keys {unknown}; known: {', '.join(known)}")
    min_fees = _min_fees(relayer_section.get("min_fees", {}), {c.id for c in chains}, p)
    node_hosts = _node_hosts(_get(dep, "hosts", dict, "deployment", {}), chains,
                             validators if relay_base_port is not None else (), relay_chain_id, relayers)
    chains = [replace(c, hosts={n: node_hosts[f"{c.id}/{n}"] for n in c.nodes if f"{c.id}/{n}" in node_hosts})
              for c in chains]
    limits = _limits(_get(raw, "limits", dict, str(p), {}), p)
    return DeploymentConfig(p, data_dir, host, tuple(chains), validators, tuple(lanes), relay_chain_id,
                            relay_base_port, block_ms, relayers, lane_limits, float(takeover),
                            float(heartbeat) or None, node_hosts, recovery_delay, pipeline, engine, comet_base,
                            comet_propose, limits, min_fees, max_block_bytes)


LIMIT_RANGES: dict[str, tuple[type, int, int]] = {
    "mempool_txs": (int, 1, 10_000_000),
    "mempool_txs_per_account": (int, 1, 10_000_000),
    "rpc_body_bytes": (int, 64 * 1024, 64 * 1024 * 1024),
    "rpc_requests_per_s": (float, 1, 10_000_000),
    "rpc_burst": (int, 1, 10_000_000),
    "ws_connections": (int, 1, 1_000_000),
    "ws_connections_per_ip": (int, 1, 1_000_000),
    "ws_requests_per_s": (float, 1, 10_000_000),
    "ws_burst": (int, 1, 10_000_000),
    "relay_account_txs_per_s": (float, 0.001, 10_000_000),
    "relay_account_burst": (int, 1, 10_000_000),
}
"""``[limits]`` keys: (type, least, most). Each is a field of :class:`~chains.common.node.AdmissionLimits`."""


def _min_fees(table: Any, parks: set[str], path: Path) -> dict[str, MinFees]:
    """``[relayers.min_fees]``: ``{park: {verify?, execute?, confirm?}}``, amounts in 0..2^64-1."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [relayers.min_fees] must be a table of parks")
    out: dict[str, MinFees] = {}
    for park, steps in table.items():
        if park not in parks:
            raise ConfigError(f"{path}: [relayers.min_fees] names {park!r}, not a park of the deployment: "
                              f"{sorted(parks)}")
        if not isinstance(steps, dict) or not set(steps) <= {"verify", "execute", "confirm"}:
            raise ConfigError(f"{path}: [relayers.min_fees.{park}] has the keys verify, execute, confirm; got "
                              f"{steps!r}")
        for step, amount in steps.items():
            if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 2**64:
                raise ConfigError(f"relayers.min_fees.{park}.{step} must be an amount in 0..2^64-1, got {amount!r}")
        out[park] = MinFees(**steps)
    return out


def _limits(table: dict[str, Any], path: Path) -> AdmissionLimits:
    """``[limits]``: every key optional (defaults of :class:`~chains.common.node.AdmissionLimits`), typed and in
    range; unknown keys refused."""
    unknown = sorted(set(table) - set(LIMIT_RANGES))
    if unknown:
        raise ConfigError(f"{path}: [limits] has unknown keys {unknown}; known: {', '.join(LIMIT_RANGES)}")
    values: dict[str, int | float] = {}
    for key, value in table.items():
        typ, lo, hi = LIMIT_RANGES[key]
        what = "a number" if typ is float else "an integer"
        if isinstance(value, bool) or not isinstance(value, int | float if typ is float else int) \
                or not lo <= value <= hi:
            raise ConfigError(f"{path}: limits.{key} must be {what} in [{lo}, {hi}], got {value!r}")
        values[key] = typ(value)
    return AdmissionLimits(**values)  # type: ignore[arg-type]


RELAY_ENGINES = ("builtin", "cometbft")
"""The relay chain's consensus engines (``[relay] engine``)."""


def _relay_engine(relay: dict[str, Any], validators: tuple[str, ...], relay_chain_id: str,
                  relay_base_port: int | None, seen_ports: dict[int, str]) -> tuple[str, int | None, int]:
    """``[relay] engine`` and its ``[relay.cometbft]`` table: (engine, CometBFT base port, timeout_propose_ms)."""
    engine = _get(relay, "engine", str, "relay", "builtin")
    if engine not in RELAY_ENGINES:
        raise ConfigError(f"relay.engine must be one of {', '.join(RELAY_ENGINES)}, got {engine!r}")
    table = _get(relay, "cometbft", dict, "relay", {})
    unknown = sorted(set(table) - {"base_port", "timeout_propose_ms"})
    if unknown:
        raise ConfigError(f"[relay.cometbft] has unknown keys {unknown}; known: base_port, timeout_propose_ms")
    propose = _get(table, "timeout_propose_ms", int, "relay.cometbft", 1000)
    if not 100 <= propose <= 60_000:
        raise ConfigError(f"relay.cometbft.timeout_propose_ms must be in [100, 60000], got {propose}")
    base = _get(table, "base_port", int, "relay.cometbft", 0) or None
    if engine == "builtin" or relay_base_port is None:
        return engine, base, propose
    if base is None:
        raise ConfigError("relay.engine = \"cometbft\" needs [relay.cometbft] base_port (validator n's CometBFT "
                          "uses base + 3n for ABCI, + 1 for its RPC, + 2 for P2P)")
    if not 1024 <= base <= 65535 - 3 * len(validators):
        raise ConfigError(f"relay.cometbft.base_port must leave room for {3 * len(validators)} ports below 65536, "
                          f"got {base}")
    for n, v in enumerate(validators):
        for k, what in enumerate(("abci", "rpc", "p2p")):
            port = base + 3 * n + k
            if port in seen_ports:
                raise ConfigError(f"relay.cometbft: port {port} ({v} {what}) already used by {seen_ports[port]}")
            seen_ports[port] = f"{relay_chain_id}/{v} cometbft {what}"
    return engine, base, propose


PER_NODE_HOST_KINDS = ("dpos", "poc", "ethereum", "fabric")
"""Park kinds whose nodes may each have an address of their own (``[deployment] hosts``): the park-node runtime's
(each witness or farmer), the Ethereum park's node (its public RPC; anvil stays behind its unix socket) and the
Fabric park's ``network`` (its orderers, peers and chaincode servers all bind that one address: the park is one
host). Relay validators may too."""


def _node_hosts(table: dict[str, Any], chains: list[ChainConfig], validators: tuple[str, ...],
                relay_chain_id: str, relayers: tuple[str, ...]) -> dict[str, str]:
    """``[deployment] hosts``: each key a ``"<chain id>/<node>"`` of this deployment whose node can bind an address
    of its own (or ``"relayer/<name>"``: the host a relayer runs on, :mod:`relay.ops.netns`), each value an IP
    address literal."""
    where = "deployment.hosts"
    known = {f"{relay_chain_id}/{v}" for v in validators} | {f"relayer/{r}" for r in relayers}
    for c in chains:
        if c.kind in PER_NODE_HOST_KINDS:
            known |= {f"{c.id}/{n}" for n in c.nodes}
    out: dict[str, str] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}: {key!r} is not a node that can have an address of its own; keys are "
                              f"\"<chain id>/<node>\" of a {' or '.join(PER_NODE_HOST_KINDS)} park or "
                              f"\"{relay_chain_id}/<validator>\" (the relay chain needs base_port) or "
                              f"\"relayer/<name>\": {sorted(known)}")
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key!r}: expected an IP address string, got {value!r}")
        try:
            addr = ipaddress.ip_address(value)
        except ValueError as exc:
            raise ConfigError(f"{where}.{key!r}: expected an IP address literal (e.g. 10.77.0.2), got {value!r}"
                              ) from exc
        if addr.is_unspecified or addr.is_multicast:
            raise ConfigError(f"{where}.{key!r}: {value} is not an address a node can be reached at")
        out[key] = str(addr)
    return out


def _lane_limits(limits: dict[str, Any], where: str) -> dict[str, dict[str, int]]:
    """``{asset: {capacity, refill_per_s}}`` with non-negative integers (the relay genesis re-checks them)."""
    out: dict[str, dict[str, int]] = {}
    for asset, spec in limits.items():
        if not isinstance(spec, dict) or set(spec) != {"capacity", "refill_per_s"}:
            raise ConfigError(f"{where}.{asset}: a limit is {{capacity, refill_per_s}}, got {spec!r}")
        for k in ("capacity", "refill_per_s"):
            v = spec[k]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64:
                raise ConfigError(f"{where}.{asset}.{k}: expected an integer in [0, 2^64), got {v!r}")
        out[asset] = {"capacity": spec["capacity"], "refill_per_s": spec["refill_per_s"]}
    return out
