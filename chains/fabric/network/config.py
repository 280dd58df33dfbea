"""What one Fabric park network is: :class:`FabricNetworkConfig` (its shape, ports and paths) and :class:`Layout`
(where everything lives under its ``data_dir``).

The config is plain data, checked once (:meth:`FabricNetworkConfig.check`); the Fabric chain kind wraps it (its
``[[chains]]`` table keys map onto these fields). Nothing here touches the disk or starts a process.

Ports: one block of ``4 × (orderers + 2)`` consecutive ports from ``base_port``, four per node, orderers first, then
the peers in :data:`~chains.fabric.consts.PEER_ORGS` order (:meth:`FabricNetworkConfig.orderer_ports`,
:meth:`FabricNetworkConfig.peer_ports`). Everything binds ``host`` (loopback).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chains.fabric.consts import BRIDGE_CHAINCODE, DEFAULT_CHANNEL, ENDORSEMENT_POLICY, PEER_ORGS

__all__ = [
    "FABRIC_HOME_ENV",
    "FABRIC_VERSION",
    "MAPPING_KEYS",
    "PEER_NODE",
    "PORTS_PER_NODE",
    "ChaincodeSpec",
    "FabricConfigError",
    "FabricNetworkConfig",
    "Layout",
    "OrdererPorts",
    "PeerPorts",
    "chaincode_process",
    "default_fabric_home",
    "orderer_process",
    "peer_process",
]

FABRIC_VERSION = "2.5.9"
"""The Fabric release ``make setup`` builds (deploy/fabric/build.sh)."""
FABRIC_HOME_ENV = "PARKRELAY_FABRIC_HOME"
"""Environment variable naming another Fabric home (``bin/`` with peer, orderer, osnadmin, configtxgen;
``config/`` with Fabric's sampleconfig core.yaml, orderer.yaml, configtx.yaml)."""
PORTS_PER_NODE = 4
"""Ports reserved per orderer or peer (module docstring)."""

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
"""User (client identity) names: they become file names and certificate common names."""
_CHANNEL = re.compile(r"^[a-z][a-z0-9.-]{0,48}$")
"""Fabric's channel-name rule (lower case, digits, dots and dashes, starting with a letter; < 250 chars)."""
_CC_NAME = re.compile(r"^[a-zA-Z0-9]+([-_][a-zA-Z0-9]+)*$")
"""Fabric's chaincode-name rule (``_lifecycle``)."""


class FabricConfigError(ValueError):
    """A Fabric network setting is invalid; the message names the field, what was expected and what was found."""


def default_fabric_home() -> Path:
    """``$PARKRELAY_FABRIC_HOME``, else ``~/.cache/parkrelay/fabric-2.5.9`` (where ``make setup`` builds)."""
    env = os.environ.get(FABRIC_HOME_ENV)
    return Path(env) if env else Path.home() / ".cache" / "parkrelay" / f"fabric-{FABRIC_VERSION}"


@dataclass(frozen=True, slots=True)
class OrdererPorts:
    """The ports of one orderer."""

    listen: int
    """gRPC: Broadcast, Deliver and the Raft cluster service (TLS)."""
    admin: int
    """Channel participation API (``osnadmin``; mutual TLS with the orderer organisation's admin)."""
    operations: int
    """Operations: ``/healthz``, ``/metrics`` (plain HTTP on loopback)."""


@dataclass(frozen=True, slots=True)
class PeerPorts:
    """The ports of one peer and of its organisation's chaincode server."""

    listen: int
    """gRPC: endorser, deliver, gossip, discovery, gateway (TLS)."""
    chaincode_listen: int
    """The peer's chaincode support listener (unused by chaincode-as-a-service, which the peer dials)."""
    operations: int
    """Operations: ``/healthz``, ``/metrics`` (plain HTTP on loopback)."""
    chaincode_server: int
    """Where the organisation's chaincode server listens (plain gRPC on loopback; the peer dials it)."""


@dataclass(frozen=True, slots=True)
class ChaincodeSpec:
    """The one chaincode the launcher defines on the channel, and how each organisation runs its server."""

    command: tuple[str, ...] = (sys.executable, "-m", "chains.fabric.chaincode.server")
    """The chaincode server's command line. Started once per peer organisation with ``CHAINCODE_ID`` (that
    organisation's package id), ``CHAINCODE_SERVER_ADDRESS`` (``host:port``) and ``PARKRELAY_FABRIC_MSP`` (the
    organisation) in its environment."""
    name: str = BRIDGE_CHAINCODE
    """Chaincode name on the channel."""
    version: str = "1"
    """Definition version (``--version``)."""
    sequence: int = 1
    """Definition sequence (``--sequence``); the launcher commits exactly this one."""
    endorsement_policy: str = ENDORSEMENT_POLICY
    """Signature policy of the definition (``--signature-policy``): both peer organisations must endorse."""
    env: Mapping[str, str] = field(default_factory=dict)
    """More environment for the chaincode server (e.g. ``PYTHONPATH``)."""
    cwd: Path | None = None
    """Working directory of the chaincode server (None: the launcher's)."""
    ready_args: tuple[str, ...] = ("org.hyperledger.fabric:get_metadata",)
    """A query (``peer chaincode query`` arguments) that succeeds once a peer reaches its organisation's chaincode
    server; the launcher waits for it on every peer. The default is the metadata function every
    ``fabric-chaincode-python`` contract chaincode has."""
    init_args: tuple[str, ...] = ()
    """A transaction (chaincode arguments) the launcher submits once the chaincode answers, as the first peer
    organisation's admin, endorsed by every organisation, unless ``<data dir>/chaincode-initialised`` records it
    done. The bridge chaincode's ``init_bridge`` with the park's genesis: it refuses a second one with
    ``[packet.replay]``, which also counts as done (a launcher killed between the commit and the record). Empty:
    nothing to submit."""

    @property
    def label(self) -> str:
        """Package label (``name_version``)."""
        return f"{self.name}_{self.version}"


@dataclass(frozen=True, slots=True)
class FabricNetworkConfig:
    """One Fabric park: an etcdraft ordering service of ``orderers`` nodes (organisation ``OrdererMSP``), one peer
    in each of ``OperatorMSP`` and ``SalesMSP``, one application channel and one chaincode on it."""

    chain_id: str
    """The park's chain id in the deployment (names in logs and the connection profile)."""
    data_dir: Path
    """Everything the network writes: key material, configs, ledgers, logs (:class:`Layout`)."""
    base_port: int
    """First of the ``4 × (orderers + 2)`` consecutive ports (module docstring)."""
    orderers: int = 1
    """Raft consenters: 1 in tests, 3 in the devnet (one may crash), at most 5."""
    host: str = "127.0.0.1"
    """Address every listener binds and every endpoint names."""
    channel: str = DEFAULT_CHANNEL
    """The application channel (created through channel participation; no system channel)."""
    chaincode: ChaincodeSpec = field(default_factory=ChaincodeSpec)
    """The chaincode defined on the channel, and its servers."""
    users: Mapping[str, str] = field(default_factory=dict)
    """Client identities to enrol, name -> peer organisation MSP id (``{"alice": "OperatorMSP"}``); each
    organisation also gets an ``admin``."""
    batch_timeout_ms: int = 250
    """Orderer ``BatchTimeout``: how long a lone transaction waits before its block is cut (Fabric's default is
    2 s). Part of the channel config: fixed when the channel is created."""
    max_message_count: int = 100
    """Orderer ``BatchSize.MaxMessageCount``: transactions per block at most (channel config)."""
    raft_tick_ms: int = 100
    """etcdraft ``TickInterval``; elections take ``ElectionTick`` (10) to 20 ticks (channel config)."""
    cert_validity_days: int = 3650
    """Lifetime of every generated certificate (devnet material)."""
    logging_spec: str = "info"
    """``FABRIC_LOGGING_SPEC`` of the peers and orderers."""
    fabric_home: Path = field(default_factory=default_fabric_home)
    """Fabric's binaries (``bin/``) and sample configuration (``config/``)."""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, chain_id: str, data_dir: Path, base_port: int,
                     host: str = "127.0.0.1") -> FabricNetworkConfig:
        """A checked config from plain data (a TOML or JSON table): the keys of :data:`MAPPING_KEYS`, each typed
        like the field of the same name; ``chaincode`` is a table of :class:`ChaincodeSpec` fields (``command``
        and ``ready_args`` lists of strings, ``env`` a table of strings, ``cwd`` a path). Unknown keys and wrong
        types are refused (:class:`FabricConfigError` naming the key)."""
        unknown = sorted(set(raw) - set(MAPPING_KEYS))
        if unknown:
            raise FabricConfigError(f"unknown key(s) {unknown}: expected some of {sorted(MAPPING_KEYS)}")
        kw: dict[str, Any] = {}
        for key, typ in MAPPING_KEYS.items():
            if key not in raw or key == "chaincode":
                continue
            value = raw[key]
            if typ is dict:
                if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                             for k, v in value.items()):
                    raise FabricConfigError(f"{key}: expected a table of strings, got {value!r}")
                value = dict(value)
            elif isinstance(value, bool) or not isinstance(value, typ):
                raise FabricConfigError(f"{key}: expected {typ.__name__}, got {value!r}")
            kw[key] = value
        if "fabric_home" in kw:
            kw["fabric_home"] = Path(kw["fabric_home"])
        if "chaincode" in raw:
            kw["chaincode"] = _chaincode_from_mapping(raw["chaincode"])
        out = cls(chain_id=chain_id, data_dir=Path(data_dir), base_port=base_port, host=host, **kw)
        out.check()
        return out

    @classmethod
    def for_park(cls, *, chain_id: str, data_dir: Path, base_port: int, host: str, params: Mapping[str, Any],
                 accounts: Iterable[str], relayers: Iterable[str] = (), genesis_arg: str | None = None
                 ) -> FabricNetworkConfig:
        """The network of a deployment's Fabric park (``parkrelay node fabric``): the chain table's parameters
        that are :data:`MAPPING_KEYS` (others are the light client's and the bridge's; None means the default;
        ``chaincode`` may be the bridge chaincode's name instead of a table), and a client identity for every
        account and relayer: in the organisation ``params["users"]`` names, else in ``OperatorMSP``.

        ``genesis_arg``: the park genesis's ``init_bridge`` argument (``chains.fabric.kind``): the launcher submits
        it once (``ChaincodeSpec.init_args``) and each organisation's chaincode server endorses no other genesis
        (its SHA-256 pinned in ``PARKRELAY_FABRIC_GENESIS_SHA256``)."""
        raw = {k: v for k, v in params.items() if k in MAPPING_KEYS and v is not None}
        if isinstance(raw.get("chaincode"), str):
            raw["chaincode"] = {"name": raw["chaincode"]}
        if genesis_arg is not None:
            spec = dict(raw.get("chaincode") or {})
            env = dict(spec.get("env") or {})
            env["PARKRELAY_FABRIC_GENESIS_SHA256"] = hashlib.sha256(genesis_arg.encode()).hexdigest()
            spec.update(env=env, init_args=["init_bridge", genesis_arg])
            raw["chaincode"] = spec
        named = dict(raw.get("users") or {})
        users = {name: named.get(name, PEER_ORGS[0]) for name in (*accounts, *relayers)}
        users.update(named)
        raw["users"] = users
        return cls.from_mapping(raw, chain_id=chain_id, data_dir=data_dir, base_port=base_port, host=host)

    def __post_init__(self) -> None:
        # absolute: configtx.yaml, core.yaml and the connection profile name files under it, and Fabric resolves a
        # relative path against the file that names it (a relative data_dir such as the devnet's var/devnet broke)
        object.__setattr__(self, "data_dir", Path(self.data_dir).absolute())

    def check(self) -> None:
        """Refuse a config that cannot work, naming the field (:class:`FabricConfigError`)."""
        if not 1 <= self.orderers <= 5:
            raise FabricConfigError(f"orderers: expected 1..5 Raft consenters, got {self.orderers}")
        last = self.base_port + self.port_count - 1
        if not 1024 <= self.base_port or last > 65535:
            raise FabricConfigError(f"base_port: expected 1024..{65536 - self.port_count} so that its "
                                    f"{self.port_count} ports fit, got {self.base_port}")
        if not _CHANNEL.match(self.channel):
            raise FabricConfigError(f"channel: expected a Fabric channel name ({_CHANNEL.pattern}), "
                                    f"got {self.channel!r}")
        cc = self.chaincode
        if not _CC_NAME.match(cc.name):
            raise FabricConfigError(f"chaincode.name: expected {_CC_NAME.pattern}, got {cc.name!r}")
        if not re.match(r"^[a-zA-Z0-9.+_-]{1,32}$", cc.version):
            raise FabricConfigError(f"chaincode.version: expected 1-32 of [a-zA-Z0-9.+_-], got {cc.version!r}")
        if cc.sequence < 1:
            raise FabricConfigError(f"chaincode.sequence: expected >= 1, got {cc.sequence}")
        if not cc.command:
            raise FabricConfigError("chaincode.command: expected a command line, got an empty one")
        for name, msp in self.users.items():
            if not _NAME.match(name) or name == "admin":
                raise FabricConfigError(f"users: expected names matching {_NAME.pattern} other than 'admin', "
                                        f"got {name!r}")
            if msp not in PEER_ORGS:
                raise FabricConfigError(f"users.{name}: expected one of {list(PEER_ORGS)}, got {msp!r}")
        for key, low, high in (("batch_timeout_ms", 10, 10_000), ("max_message_count", 1, 10_000),
                               ("raft_tick_ms", 10, 5_000), ("cert_validity_days", 1, 36_500)):
            value = getattr(self, key)
            if not low <= value <= high:
                raise FabricConfigError(f"{key}: expected {low}..{high}, got {value}")

    def fixed_settings(self) -> dict[str, object]:
        """The settings baked into the channel's genesis block, the certificates or the ledgers: a data dir
        keeps them (``network.json``) and refuses to start with others."""
        return {"chain_id": self.chain_id, "host": self.host, "base_port": self.base_port,
                "orderers": self.orderers, "channel": self.channel, "chaincode": self.chaincode.name,
                "batch_timeout_ms": self.batch_timeout_ms, "max_message_count": self.max_message_count,
                "raft_tick_ms": self.raft_tick_ms}

    # --- names and ports ------------------------------------------------------------------------------

    @property
    def port_count(self) -> int:
        """Ports used from ``base_port`` on."""
        return PORTS_PER_NODE * (self.orderers + len(PEER_ORGS))

    @property
    def orderer_names(self) -> tuple[str, ...]:
        """``orderer0``, ``orderer1``, ... (Raft consenter ids 1, 2, ...)."""
        return tuple(f"orderer{i}" for i in range(self.orderers))

    def orderer_ports(self, index: int) -> OrdererPorts:
        base = self._node_base(index)
        return OrdererPorts(listen=base, admin=base + 1, operations=base + 2)

    def peer_ports(self, msp: str) -> PeerPorts:
        base = self._node_base(self.orderers + PEER_ORGS.index(msp))
        return PeerPorts(listen=base, chaincode_listen=base + 1, operations=base + 2, chaincode_server=base + 3)

    def orderer_endpoint(self, index: int) -> str:
        return f"{self.host}:{self.orderer_ports(index).listen}"

    def peer_endpoint(self, msp: str) -> str:
        return f"{self.host}:{self.peer_ports(msp).listen}"

    def _node_base(self, slot: int) -> int:
        return self.base_port + PORTS_PER_NODE * slot

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir)

    def users_of(self, msp: str) -> tuple[str, ...]:
        """Client users of one organisation, sorted."""
        return tuple(sorted(n for n, m in self.users.items() if m == msp))


MAPPING_KEYS: Mapping[str, type] = {
    "orderers": int, "channel": str, "users": dict, "batch_timeout_ms": int, "max_message_count": int,
    "raft_tick_ms": int, "cert_validity_days": int, "logging_spec": str, "fabric_home": str, "chaincode": dict,
}
"""Keys :meth:`FabricNetworkConfig.from_mapping` takes, and their types."""
_CHAINCODE_KEYS = {"command": list, "name": str, "version": str, "sequence": int, "endorsement_policy": str,
                   "env": dict, "cwd": str, "ready_args": list, "init_args": list}


def _chaincode_from_mapping(raw: Any) -> ChaincodeSpec:
    if not isinstance(raw, Mapping):
        raise FabricConfigError(f"chaincode: expected a table, got {raw!r}")
    unknown = sorted(set(raw) - set(_CHAINCODE_KEYS))
    if unknown:
        raise FabricConfigError(f"chaincode: unknown key(s) {unknown}: expected some of {sorted(_CHAINCODE_KEYS)}")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        typ = _CHAINCODE_KEYS[key]
        if typ is list:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise FabricConfigError(f"chaincode.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif typ is dict:
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in value.items()):
                raise FabricConfigError(f"chaincode.{key}: expected a table of strings, got {value!r}")
            value = dict(value)
        elif isinstance(value, bool) or not isinstance(value, typ):
            raise FabricConfigError(f"chaincode.{key}: expected {typ.__name__}, got {value!r}")
        kw[key] = Path(value) if key == "cwd" else value
    return ChaincodeSpec(**kw)


PEER_NODE = "peer0"
"""Each peer organisation's one peer."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a Fabric park keeps everything, under its ``root`` (the chain's data dir)::

        crypto/<MSP>/ca/ca.pem, ca.key                  the organisation's signing root CA (key 0600)
        crypto/<MSP>/tlsca/tlsca.pem, tlsca.key         its TLS root CA
        crypto/<MSP>/msp/                               its verifying MSP (what the channel config holds):
                                                        cacerts/, tlscacerts/, config.yaml (NodeOUs)
        crypto/<MSP>/nodes/<node>/msp/, tls/            an orderer (orderer0..) or the peer (peer0): local MSP
                                                        (signcerts/cert.pem, keystore/priv_sk, ...) and TLS
                                                        (ca.crt, server.crt, server.key)
        crypto/<MSP>/users/<name>/msp/, tls/            admin (OU admin) and client users (OU client); TLS
                                                        (ca.crt, client.crt, client.key)
        config/configtx/configtx.yaml                   the channel's profile (configtxgen)
        config/<process>/core.yaml | orderer.yaml       each process's FABRIC_CFG_PATH
        channel/<channel>.block                         the channel's genesis block
        ledger/<process>/                               peer file system path / orderer ledger, WAL, snapshots
        chaincode/<MSP>/<label>.tgz, package-id         each organisation's chaincode-as-a-service package
        network.json                                    the settings fixed at init (ports, orderers, channel...)
        ready.json                                      present while a supervisor runs the park, once it is up
        chaincode-initialised                           the chaincode's init transaction is done (init_bridge)
        connection-profile.json                         for hfc (fabric-sdk-py)
        logs/<process>.log                              each process's output
    """

    root: Path

    @property
    def crypto(self) -> Path:
        return self.root / "crypto"

    def org(self, msp: str) -> Path:
        return self.crypto / msp

    def org_msp(self, msp: str) -> Path:
        """The organisation's verifying MSP directory (configtx ``MSPDir``)."""
        return self.org(msp) / "msp"

    def ca(self, msp: str, tls: bool = False) -> tuple[Path, Path]:
        """``(certificate, key)`` of the organisation's signing (or TLS) root CA."""
        d = self.org(msp) / ("tlsca" if tls else "ca")
        stem = "tlsca" if tls else "ca"
        return d / f"{stem}.pem", d / f"{stem}.key"

    def node(self, msp: str, node: str) -> Path:
        return self.org(msp) / "nodes" / node

    def user(self, msp: str, name: str) -> Path:
        return self.org(msp) / "users" / name

    def signcert(self, identity_dir: Path) -> Path:
        return identity_dir / "msp" / "signcerts" / "cert.pem"

    def keyfile(self, identity_dir: Path) -> Path:
        return identity_dir / "msp" / "keystore" / "priv_sk"

    def node_tls(self, msp: str, node: str) -> tuple[Path, Path]:
        """``(server.crt, server.key)`` of a node (serverAuth and clientAuth: the Raft cluster uses it too)."""
        d = self.node(msp, node) / "tls"
        return d / "server.crt", d / "server.key"

    def user_tls(self, msp: str, name: str) -> tuple[Path, Path]:
        """``(client.crt, client.key)`` of a user (osnadmin's mutual TLS for the orderer admin)."""
        d = self.user(msp, name) / "tls"
        return d / "client.crt", d / "client.key"

    def tls_ca(self, msp: str) -> Path:
        return self.ca(msp, tls=True)[0]

    def config(self, process: str) -> Path:
        return self.root / "config" / process

    @property
    def configtx_dir(self) -> Path:
        return self.root / "config" / "configtx"

    def channel_block(self, channel: str) -> Path:
        return self.root / "channel" / f"{channel}.block"

    def ledger(self, process: str) -> Path:
        return self.root / "ledger" / process

    def chaincode_dir(self, msp: str) -> Path:
        return self.root / "chaincode" / msp

    @property
    def settings(self) -> Path:
        """``network.json``: :meth:`FabricNetworkConfig.fixed_settings` as of ``init``."""
        return self.root / "network.json"

    @property
    def ready(self) -> Path:
        """``ready.json``: written by the supervisor once the park is up (endpoints, pids, package ids, the
        connection profile), removed when it stops; one left by a SIGKILLed supervisor names a dead
        ``supervisor_pid``."""
        return self.root / "ready.json"

    @property
    def chaincode_initialised(self) -> Path:
        """``chaincode-initialised``: the chaincode's ``init_args`` transaction committed (or was done already)."""
        return self.root / "chaincode-initialised"

    @property
    def connection_profile(self) -> Path:
        return self.root / "connection-profile.json"

    def log(self, process: str) -> Path:
        return self.root / "logs" / f"{process}.log"


def orderer_process(index: int) -> str:
    """Process name of orderer ``index`` (also its node name in ``OrdererMSP``)."""
    return f"orderer{index}"


def peer_process(msp: str) -> str:
    """Process name of an organisation's peer: ``peer0.OperatorMSP``."""
    return f"{PEER_NODE}.{msp}"


def chaincode_process(msp: str) -> str:
    """Process name of an organisation's chaincode server: ``chaincode.OperatorMSP``."""
    return f"chaincode.{msp}"

