"""The configuration files of a Fabric park, derived from Fabric's own sample configuration.

* ``core.yaml`` (each peer, and the ``peer`` CLI acting for its organisation's admin) and ``orderer.yaml`` (each
  orderer) are the files of Fabric's ``sampleconfig`` (copied into the Fabric home by ``make setup``) with our
  overrides: listeners on loopback at the configured ports, TLS on with our certificates, ledgers under the data
  dir, operations (``/healthz``, Prometheus ``/metrics``) on loopback, channel participation without a system
  channel, and for peers chaincode as a service only — ``vm.endpoint`` empty *in core.yaml itself* (an empty
  ``CORE_VM_ENDPOINT`` does not override it, and with the Docker default ``/healthz`` answers 503 forever) and one
  external builder, ``ccaas``, whose scripts ship in ``chains/fabric/network/ccaas/bin``.
* ``configtx.yaml`` holds one profile, :data:`PROFILE`: the application channel's genesis (``configtxgen
  -outputBlock``): etcdraft with every orderer a consenter, the three organisations with NodeOU-based policies,
  anchor peers, the Application ACLs of Fabric's sample, capabilities ``V2_0``, and the lifecycle policies
  (``LifecycleEndorsement`` and ``Endorsement``: ``MAJORITY Endorsement``, i.e. both peer organisations).
* ``connection-profile.json`` for hfc (fabric-sdk-py): every peer and orderer with its TLS root, and every
  organisation's users (admin and clients) with their certificate and key; ``"certificateAuthorities": {}``
  (hfc 1.0 needs the key; there is no Fabric CA).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from chains.fabric.consts import ORDERER_MSP, PEER_ORGS
from chains.fabric.network.config import (
    PEER_NODE,
    FabricConfigError,
    FabricNetworkConfig,
    orderer_process,
    peer_process,
)
from chains.fabric.network.crypto import ADMIN

__all__ = ["BUILDER_DIR", "PROFILE", "connection_profile", "render_configtx", "render_core", "render_orderer",
           "sample_config", "write_configs", "write_yaml"]

PROFILE = "ParkChannel"
"""The configtx profile of the application channel."""
BUILDER_DIR = Path(__file__).resolve().parent / "ccaas"
"""Our chaincode-as-a-service external builder (``bin/detect``, ``bin/build``, ``bin/release``)."""
LOG_FORMAT = "%{time:2006-01-02 15:04:05.000} %{level:.4s} [%{module}] %{message}"
"""``FABRIC_LOGGING_FORMAT`` of every process: Fabric's default without the colour escapes."""


def sample_config(cfg: FabricNetworkConfig, name: str) -> dict[str, Any]:
    """Fabric's sample ``name`` (``core.yaml``, ``orderer.yaml``, ``configtx.yaml``) from the Fabric home."""
    path = cfg.fabric_home / "config" / name
    if not path.is_file():
        raise FabricConfigError(f"Fabric's sample {name} not found at {path}: run `make setup` (it builds Fabric "
                                f"into {cfg.fabric_home}), or set PARKRELAY_FABRIC_HOME")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise FabricConfigError(f"{path}: expected a YAML mapping, got {type(doc).__name__}")
    return doc


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping; every key but the last must already exist (a misspelt override fails
    loudly instead of adding a key Fabric ignores)."""
    *parents, last = dotted.split(".")
    node = doc
    for key in parents:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            raise FabricConfigError(f"Fabric's sample config has no section {dotted.rsplit('.', 1)[0]!r}")
        node = nxt
    if last not in node:
        raise FabricConfigError(f"Fabric's sample config has no key {dotted!r}")
    node[last] = value


def render_core(cfg: FabricNetworkConfig, msp: str, sample: Mapping[str, Any]) -> dict[str, Any]:
    """``core.yaml`` of ``msp``'s peer."""
    lay = cfg.layout
    ports = cfg.peer_ports(msp)
    node = lay.node(msp, PEER_NODE)
    crt, key = lay.node_tls(msp, PEER_NODE)
    ledger = lay.ledger(peer_process(msp))
    endpoint = cfg.peer_endpoint(msp)
    doc = copy.deepcopy(dict(sample))
    for dotted, value in {
        "peer.id": f"{PEER_NODE}.{msp}",
        "peer.networkId": cfg.chain_id,
        "peer.listenAddress": endpoint,
        "peer.address": endpoint,
        "peer.gossip.bootstrap": endpoint,
        "peer.gossip.endpoint": endpoint,
        "peer.gossip.externalEndpoint": endpoint,
        "peer.tls.enabled": True,
        "peer.tls.clientAuthRequired": False,
        "peer.tls.cert.file": str(crt),
        "peer.tls.key.file": str(key),
        "peer.tls.rootcert.file": str(lay.tls_ca(msp)),
        "peer.tls.clientRootCAs.files": [str(lay.tls_ca(m)) for m in (ORDERER_MSP, *PEER_ORGS)],
        "peer.fileSystemPath": str(ledger),
        "peer.mspConfigPath": str(node / "msp"),
        "peer.localMspId": msp,
        "vm.endpoint": "",
        "chaincode.externalBuilders": [{"name": "ccaas", "path": str(BUILDER_DIR), "propagateEnvironment": []}],
        "chaincode.installTimeout": "60s",
        "chaincode.startuptimeout": "60s",
        "ledger.snapshots.rootDir": str(ledger / "snapshots"),
        "operations.listenAddress": f"{cfg.host}:{ports.operations}",
        "operations.tls.enabled": False,
        "metrics.provider": "prometheus",
    }.items():
        _set(doc, dotted, value)
    # commented out in the sample (it defaults to 0.0.0.0:7052): keys Fabric documents there, set here
    doc["peer"]["chaincodeListenAddress"] = f"{cfg.host}:{ports.chaincode_listen}"
    doc["peer"]["chaincodeAddress"] = f"{cfg.host}:{ports.chaincode_listen}"
    return doc


def render_orderer(cfg: FabricNetworkConfig, index: int, sample: Mapping[str, Any]) -> dict[str, Any]:
    """``orderer.yaml`` of orderer ``index``."""
    lay = cfg.layout
    ports = cfg.orderer_ports(index)
    name = orderer_process(index)
    node = lay.node(ORDERER_MSP, name)
    crt, key = lay.node_tls(ORDERER_MSP, name)
    ledger = lay.ledger(name)
    tls_roots = [str(lay.tls_ca(m)) for m in (ORDERER_MSP, *PEER_ORGS)]
    doc = copy.deepcopy(dict(sample))
    for dotted, value in {
        "General.ListenAddress": cfg.host,
        "General.ListenPort": ports.listen,
        "General.TLS.Enabled": True,
        "General.TLS.PrivateKey": str(key),
        "General.TLS.Certificate": str(crt),
        "General.TLS.RootCAs": tls_roots,
        "General.TLS.ClientAuthRequired": False,
        "General.Cluster.ClientCertificate": str(crt),
        "General.Cluster.ClientPrivateKey": str(key),
        "General.BootstrapMethod": "none",
        "General.LocalMSPDir": str(node / "msp"),
        "General.LocalMSPID": ORDERER_MSP,
        "FileLedger.Location": str(ledger),
        "Operations.ListenAddress": f"{cfg.host}:{ports.operations}",
        "Metrics.Provider": "prometheus",
        "Admin.ListenAddress": f"{cfg.host}:{ports.admin}",
        "Admin.TLS.Enabled": True,
        "Admin.TLS.Certificate": str(crt),
        "Admin.TLS.PrivateKey": str(key),
        "Admin.TLS.ClientAuthRequired": True,
        "Admin.TLS.ClientRootCAs": [str(lay.tls_ca(ORDERER_MSP))],
        "ChannelParticipation.Enabled": True,
        "Consensus.WALDir": str(ledger / "etcdraft" / "wal"),
        "Consensus.SnapDir": str(ledger / "etcdraft" / "snapshot"),
    }.items():
        _set(doc, dotted, value)
    return doc


def _signature(rule: str) -> dict[str, str]:
    return {"Type": "Signature", "Rule": rule}


def _implicit(rule: str) -> dict[str, str]:
    return {"Type": "ImplicitMeta", "Rule": rule}


def render_configtx(cfg: FabricNetworkConfig, sample: Mapping[str, Any]) -> dict[str, Any]:
    """``configtx.yaml`` with the one profile :data:`PROFILE` (module docstring)."""
    lay = cfg.layout
    orderer_org = {
        "Name": ORDERER_MSP, "ID": ORDERER_MSP, "MSPDir": str(lay.org_msp(ORDERER_MSP)),
        "Policies": {"Readers": _signature(f"OR('{ORDERER_MSP}.member')"),
                     "Writers": _signature(f"OR('{ORDERER_MSP}.member')"),
                     "Admins": _signature(f"OR('{ORDERER_MSP}.admin')")},
        "OrdererEndpoints": [cfg.orderer_endpoint(i) for i in range(cfg.orderers)],
    }
    peer_orgs = []
    for msp in PEER_ORGS:
        peer_orgs.append({
            "Name": msp, "ID": msp, "MSPDir": str(lay.org_msp(msp)),
            "Policies": {"Readers": _signature(f"OR('{msp}.admin','{msp}.peer','{msp}.client')"),
                         "Writers": _signature(f"OR('{msp}.admin','{msp}.client')"),
                         "Admins": _signature(f"OR('{msp}.admin')"),
                         "Endorsement": _signature(f"OR('{msp}.peer')")},
            "AnchorPeers": [{"Host": cfg.host, "Port": cfg.peer_ports(msp).listen}],
        })
    consenters = []
    for i in range(cfg.orderers):
        crt, _ = lay.node_tls(ORDERER_MSP, orderer_process(i))
        consenters.append({"Host": cfg.host, "Port": cfg.orderer_ports(i).listen,
                           "ClientTLSCert": str(crt), "ServerTLSCert": str(crt)})
    try:
        acls = dict(sample["Application"]["ACLs"])
    except (KeyError, TypeError) as exc:
        raise FabricConfigError("Fabric's sample configtx.yaml has no Application.ACLs") from exc
    v2 = {"V2_0": True}
    profile = {
        "Policies": {"Readers": _implicit("ANY Readers"), "Writers": _implicit("ANY Writers"),
                     "Admins": _implicit("MAJORITY Admins")},
        "Capabilities": v2,
        "Orderer": {
            "OrdererType": "etcdraft",
            "BatchTimeout": f"{cfg.batch_timeout_ms}ms",
            "BatchSize": {"MaxMessageCount": cfg.max_message_count, "AbsoluteMaxBytes": "10 MB",
                          "PreferredMaxBytes": "2 MB"},
            "EtcdRaft": {"Consenters": consenters,
                         "Options": {"TickInterval": f"{cfg.raft_tick_ms}ms", "ElectionTick": 10, "HeartbeatTick": 1,
                                     "MaxInflightBlocks": 5, "SnapshotIntervalSize": "16 MB"}},
            "Organizations": [orderer_org],
            "Policies": {"Readers": _implicit("ANY Readers"), "Writers": _implicit("ANY Writers"),
                         "Admins": _implicit("MAJORITY Admins"), "BlockValidation": _implicit("ANY Writers")},
            "Capabilities": v2,
        },
        "Application": {
            "ACLs": acls,
            "Organizations": peer_orgs,
            "Policies": {"LifecycleEndorsement": _implicit("MAJORITY Endorsement"),
                         "Endorsement": _implicit("MAJORITY Endorsement"),
                         "Readers": _implicit("ANY Readers"), "Writers": _implicit("ANY Writers"),
                         "Admins": _implicit("MAJORITY Admins")},
            "Capabilities": v2,
        },
    }
    return {"Organizations": [orderer_org, *peer_orgs], "Profiles": {PROFILE: profile}}


def connection_profile(cfg: FabricNetworkConfig) -> dict[str, Any]:
    """The hfc connection profile (module docstring). Peer and orderer names are their process names."""
    lay = cfg.layout
    target = {"grpc.ssl_target_name_override": "localhost"}
    orgs: dict[str, Any] = {}
    for msp in (ORDERER_MSP, *PEER_ORGS):
        users = {ADMIN: None, **dict.fromkeys(cfg.users_of(msp) if msp in PEER_ORGS else ())}
        entry: dict[str, Any] = {
            "mspid": msp,
            "users": {u: {"cert": str(lay.signcert(lay.user(msp, u))),
                          "private_key": str(lay.keyfile(lay.user(msp, u)))} for u in users},
        }
        if msp == ORDERER_MSP:
            entry["orderers"] = [orderer_process(i) for i in range(cfg.orderers)]
        else:
            entry["peers"] = [peer_process(msp)]
        orgs[msp] = entry
    return {
        "name": cfg.chain_id,
        "description": f"Fabric park {cfg.chain_id}: {cfg.orderers} etcdraft orderer(s), peers of "
                       f"{', '.join(PEER_ORGS)}, channel {cfg.channel} (written by parkrelay)",
        "version": "1.0",
        "client": {"organization": PEER_ORGS[0],
                   # hfc writes every user's private key here unencrypted (0644) and reads it back with pickle:
                   # keep it inside crypto/ (0700, as the keys it copies); adapters.fabric never uses it
                   "credentialStore": {"path": str(lay.crypto / "hfc-kvs")}},
        "organizations": orgs,
        "orderers": {orderer_process(i): {"url": cfg.orderer_endpoint(i), "grpcOptions": dict(target),
                                          "tlsCACerts": {"path": str(lay.tls_ca(ORDERER_MSP))}}
                     for i in range(cfg.orderers)},
        "peers": {peer_process(msp): {"url": cfg.peer_endpoint(msp), "grpcOptions": dict(target),
                                      "tlsCACerts": {"path": str(lay.tls_ca(msp))}}
                  for msp in PEER_ORGS},
        "certificateAuthorities": {},
        "channels": {cfg.channel: {
            "orderers": [orderer_process(i) for i in range(cfg.orderers)],
            "peers": {peer_process(msp): {"endorsingPeer": True, "chaincodeQuery": True, "ledgerQuery": True,
                                          "eventSource": True} for msp in PEER_ORGS},
        }},
    }


def write_yaml(path: Path, doc: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Written by parkrelay (chains/fabric/network/render.py) from Fabric's sample; do not edit.\n"
                   + yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False))
    tmp.replace(path)


def write_configs(cfg: FabricNetworkConfig) -> None:
    """Render every process's config, ``configtx.yaml`` and the connection profile (idempotent: derived files,
    rewritten each time, so a change of Fabric home or ports takes effect at the next start)."""
    lay = cfg.layout
    core, orderer, configtx = (sample_config(cfg, n) for n in ("core.yaml", "orderer.yaml", "configtx.yaml"))
    for i in range(cfg.orderers):
        write_yaml(lay.config(orderer_process(i)) / "orderer.yaml", render_orderer(cfg, i, orderer))
    for msp in PEER_ORGS:
        write_yaml(lay.config(peer_process(msp)) / "core.yaml", render_core(cfg, msp, core))
    write_yaml(lay.configtx_dir / "configtx.yaml", render_configtx(cfg, configtx))
    profile = lay.connection_profile
    tmp = profile.with_name(profile.name + ".tmp")
    tmp.write_text(json.dumps(connection_profile(cfg), indent=2) + "\n")
    tmp.replace(profile)
