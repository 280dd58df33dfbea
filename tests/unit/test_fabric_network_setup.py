"""The Fabric park's set-up files, without starting Fabric (chains/fabric/network): the devnet key material, the
configs rendered from Fabric's sampleconfig, the hfc connection profile, the chaincode-as-a-service package and
our external builder's scripts, and the config's checks.

The processes themselves are tested in tests/integration/test_fabric_network.py.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chains.fabric.consts import ENDORSEMENT_POLICY, OPERATOR_MSP, ORDERER_MSP, PEER_ORGS, SALES_MSP
from chains.fabric.network.config import (
    ChaincodeSpec,
    FabricConfigError,
    FabricNetworkConfig,
    orderer_process,
    peer_process,
)
from chains.fabric.network.crypto import init_crypto, load_certificate
from chains.fabric.network.lifecycle import ccaas_package
from chains.fabric.network.render import (
    BUILDER_DIR,
    connection_profile,
    render_configtx,
    render_core,
    render_orderer,
    sample_config,
)

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _cfg(root: Path, **kw: object) -> FabricNetworkConfig:
    base: dict[str, object] = {"chain_id": "fabric-park", "data_dir": root, "base_port": 30000, "orderers": 3,
                               "users": {"alice": OPERATOR_MSP, "bob": SALES_MSP, "relayer-a": OPERATOR_MSP}}
    base.update(kw)
    return FabricNetworkConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> FabricNetworkConfig:
    cfg = _cfg(tmp_path_factory.mktemp("fabric"))
    init_crypto(cfg)
    return cfg


def _ou(cert: x509.Certificate) -> list[str]:
    return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]  # type: ignore[misc]


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --- key material -------------------------------------------------------------------------------------------


def test_every_identity_has_its_role_and_chains_to_its_org_ca(made: FabricNetworkConfig) -> None:
    lay = made.layout
    expected = {(ORDERER_MSP, lay.node(ORDERER_MSP, orderer_process(i))): "orderer" for i in range(3)}
    for msp in PEER_ORGS:
        expected[(msp, lay.node(msp, "peer0"))] = "peer"
    for msp in (ORDERER_MSP, *PEER_ORGS):
        expected[(msp, lay.user(msp, "admin"))] = "admin"
    expected[(OPERATOR_MSP, lay.user(OPERATOR_MSP, "alice"))] = "client"
    expected[(OPERATOR_MSP, lay.user(OPERATOR_MSP, "relayer-a"))] = "client"
    expected[(SALES_MSP, lay.user(SALES_MSP, "bob"))] = "client"
    assert not lay.user(SALES_MSP, "alice").exists()
    for (msp, ident), role in expected.items():
        cert = load_certificate(lay.signcert(ident))
        ca = load_certificate(lay.ca(msp)[0])
        assert _ou(cert) == [role], ident
        cert.verify_directly_issued_by(ca)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        key = lay.keyfile(ident).read_bytes()
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
        priv = load_pem_private_key(key, None)
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp256r1"
        assert priv.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_nodes_have_tls_server_certs_for_loopback_with_their_signing_name(made: FabricNetworkConfig) -> None:
    """SANs localhost and 127.0.0.1; serverAuth and clientAuth (the Raft cluster client presents it); issued by
    the TLS CA; and the same common name as the node's signing certificate (the light client maps a block signer
    to its consenter by it)."""
    lay = made.layout
    nodes = [(ORDERER_MSP, orderer_process(i)) for i in range(3)] + [(m, "peer0") for m in PEER_ORGS]
    for msp, node in nodes:
        crt, key = lay.node_tls(msp, node)
        cert = load_certificate(crt)
        cert.verify_directly_issued_by(load_certificate(lay.tls_ca(msp)))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert _cn(cert) == _cn(load_certificate(lay.signcert(lay.node(msp, node)))) == f"{node}.{msp}"
        assert key.stat().st_mode & 0o777 == 0o600
    crt, _ = lay.user_tls(ORDERER_MSP, "admin")
    usages = set(load_certificate(crt).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_every_key_is_0600_and_every_signature_low_s(made: FabricNetworkConfig) -> None:
    crypto = made.layout.crypto
    keys = [p for p in crypto.rglob("*") if p.is_file() and (p.name == "priv_sk" or p.suffix == ".key")]
    # 3 orgs x (CA + TLS CA), and two keys (signing, TLS) for 3 orderers, 2 peers, 3 admins, 3 clients
    assert len(keys) == 3 * 2 + 2 * (3 + 2 + 3 + 3)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys)
    assert crypto.stat().st_mode & 0o777 == 0o700
    for pem in [p for p in crypto.rglob("*") if p.suffix in (".pem", ".crt")]:
        _, s = decode_dss_signature(load_certificate(pem).signature)
        assert s <= P256_N // 2, pem


def test_msp_config_enables_node_ous(made: FabricNetworkConfig) -> None:
    for msp in (ORDERER_MSP, *PEER_ORGS):
        doc = yaml.safe_load((made.layout.org_msp(msp) / "config.yaml").read_text())
        ous = doc["NodeOUs"]
        assert ous["Enable"] is True
        for role in ("Client", "Peer", "Admin", "Orderer"):
            assert ous[f"{role}OUIdentifier"] == {"Certificate": "cacerts/ca.pem",
                                                 "OrganizationalUnitIdentifier": role.lower()}
        assert (made.layout.org_msp(msp) / "cacerts" / "ca.pem").exists()
        assert (made.layout.org_msp(msp) / "tlscacerts" / "tlsca.pem").exists()


def test_init_keeps_what_exists_and_issues_what_is_new(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, orderers=1)
    init_crypto(cfg)
    lay = cfg.layout
    ca_key = lay.ca(OPERATOR_MSP)[1].read_bytes()
    alice = lay.signcert(lay.user(OPERATOR_MSP, "alice")).read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    grown = _cfg(tmp_path, orderers=3, users={**cfg.users, "carol": SALES_MSP})
    init_crypto(grown, now=later)
    assert lay.ca(OPERATOR_MSP)[1].read_bytes() == ca_key
    assert lay.signcert(lay.user(OPERATOR_MSP, "alice")).read_bytes() == alice
    carol = load_certificate(lay.signcert(lay.user(SALES_MSP, "carol")))
    carol.verify_directly_issued_by(load_certificate(lay.ca(SALES_MSP)[0]))
    assert lay.signcert(lay.node(ORDERER_MSP, "orderer2")).exists()
    # a half-written identity (interrupted init) is issued whole again
    half = lay.user(SALES_MSP, "carol")
    lay.signcert(half).unlink()
    init_crypto(grown)
    assert lay.signcert(half).exists()


# --- rendered configs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(made: FabricNetworkConfig) -> dict[str, dict[str, object]]:
    try:
        return {n: sample_config(made, n) for n in ("core.yaml", "orderer.yaml", "configtx.yaml")}
    except FabricConfigError as exc:
        pytest.skip(str(exc))


def test_core_yaml_runs_chaincode_as_a_service_only(made: FabricNetworkConfig,
                                                      samples: dict[str, dict[str, object]]) -> None:
    core = render_core(made, SALES_MSP, samples["core.yaml"])
    ports = made.peer_ports(SALES_MSP)
    assert core["vm"]["endpoint"] == ""  # not Docker: an empty CORE_VM_ENDPOINT would not override it
    assert core["chaincode"]["externalBuilders"] == [{"name": "ccaas", "path": str(BUILDER_DIR),
                                                      "propagateEnvironment": []}]
    assert core["peer"]["listenAddress"] == f"127.0.0.1:{ports.listen}"
    assert core["peer"]["localMspId"] == SALES_MSP
    assert core["peer"]["tls"]["enabled"] is True
    assert core["operations"]["listenAddress"] == f"127.0.0.1:{ports.operations}"
    assert core["peer"]["fileSystemPath"].startswith(str(made.data_dir))
    assert core["ledger"]["snapshots"]["rootDir"].startswith(str(made.data_dir))
    # what we did not override is Fabric's sample
    assert core["peer"]["gateway"] == samples["core.yaml"]["peer"]["gateway"]  # type: ignore[index]
    for script in ("detect", "build", "release"):
        assert os.access(BUILDER_DIR / "bin" / script, os.X_OK)


def test_orderer_yaml_has_channel_participation_and_no_system_channel(made: FabricNetworkConfig,
                                                                      samples: dict[str, dict[str, object]]) -> None:
    doc = render_orderer(made, 2, samples["orderer.yaml"])
    ports = made.orderer_ports(2)
    assert doc["General"]["BootstrapMethod"] == "none"
    assert doc["ChannelParticipation"]["Enabled"] is True
    assert doc["General"]["ListenPort"] == ports.listen
    assert doc["Admin"]["ListenAddress"] == f"127.0.0.1:{ports.admin}"
    assert doc["Admin"]["TLS"]["ClientAuthRequired"] is True
    assert doc["Admin"]["TLS"]["ClientRootCAs"] == [str(made.layout.tls_ca(ORDERER_MSP))]
    assert doc["General"]["LocalMSPID"] == ORDERER_MSP
    for key in ("FileLedger",):
        assert doc[key]["Location"].startswith(str(made.data_dir))
    assert doc["Consensus"]["WALDir"].startswith(str(made.data_dir))


def test_configtx_profile(made: FabricNetworkConfig, samples: dict[str, dict[str, object]]) -> None:
    doc = render_configtx(made, samples["configtx.yaml"])
    profile = doc["Profiles"]["ParkChannel"]
    orderer = profile["Orderer"]
    assert orderer["OrdererType"] == "etcdraft"
    assert orderer["BatchTimeout"] == "250ms"
    consenters = orderer["EtcdRaft"]["Consenters"]
    assert [c["Port"] for c in consenters] == [made.orderer_ports(i).listen for i in range(3)]
    assert [o["ID"] for o in profile["Application"]["Organizations"]] == list(PEER_ORGS)
    assert profile["Application"]["Capabilities"] == {"V2_0": True}
    policies = profile["Application"]["Policies"]
    assert policies["LifecycleEndorsement"] == {"Type": "ImplicitMeta", "Rule": "MAJORITY Endorsement"}
    assert policies["Endorsement"] == {"Type": "ImplicitMeta", "Rule": "MAJORITY Endorsement"}
    sales = profile["Application"]["Organizations"][1]
    assert sales["Policies"]["Endorsement"]["Rule"] == f"OR('{SALES_MSP}.peer')"
    assert sales["AnchorPeers"] == [{"Host": "127.0.0.1", "Port": made.peer_ports(SALES_MSP).listen}]
    assert "Consortiums" not in profile and "Consortium" not in profile  # no system channel
    assert profile["Application"]["ACLs"]["_lifecycle/CommitChaincodeDefinition"] == "/Channel/Application/Writers"


def test_connection_profile_for_hfc(made: FabricNetworkConfig) -> None:
    doc = connection_profile(made)
    assert doc["certificateAuthorities"] == {}
    assert set(doc["peers"]) == {peer_process(m) for m in PEER_ORGS}
    assert set(doc["orderers"]) == {orderer_process(i) for i in range(3)}
    for entry in [*doc["peers"].values(), *doc["orderers"].values()]:
        assert Path(entry["tlsCACerts"]["path"]).is_file()
        assert entry["grpcOptions"]["grpc.ssl_target_name_override"] == "localhost"  # hfc reads this exact key
    users = doc["organizations"][OPERATOR_MSP]["users"]
    assert set(users) == {"admin", "alice", "relayer-a"}
    for user in users.values():
        assert Path(user["cert"]).is_file() and Path(user["private_key"]).is_file()


# --- the ccaas package and our builder -----------------------------------------------------------------------


def test_ccaas_package_is_deterministic_and_built_by_our_builder(tmp_path: Path) -> None:
    pkg = ccaas_package("bridge_1", "127.0.0.1:7777")
    assert pkg == ccaas_package("bridge_1", "127.0.0.1:7777")  # the package id of a data dir never changes
    assert pkg != ccaas_package("bridge_1", "127.0.0.1:7778")  # each organisation's server: its own package
    with tarfile.open(fileobj=io.BytesIO(pkg)) as outer:
        assert sorted(outer.getnames()) == ["code.tar.gz", "metadata.json"]
        meta = json.loads(outer.extractfile("metadata.json").read())  # type: ignore[union-attr]
        code = outer.extractfile("code.tar.gz").read()  # type: ignore[union-attr]
    assert meta == {"type": "ccaas", "label": "bridge_1"}
    src, metadir, build, release = (tmp_path / d for d in ("src", "meta", "build", "release"))
    for d in (src, metadir, build, release):
        d.mkdir()
    with tarfile.open(fileobj=io.BytesIO(code)) as inner:
        inner.extractall(src, filter="data")
    (metadir / "metadata.json").write_text(json.dumps(meta))
    run = lambda *a: subprocess.run([str(BUILDER_DIR / "bin" / a[0]), *map(str, a[1:])],  # noqa: E731
                                    capture_output=True, text=True, check=False)
    assert run("detect", src, metadir).returncode == 0
    assert run("build", src, metadir, build).returncode == 0
    assert run("release", build, release).returncode == 0
    conn = json.loads((release / "chaincode" / "server" / "connection.json").read_text())
    assert conn == {"address": "127.0.0.1:7777", "dial_timeout": "10s", "tls_required": False}
    # another package type is not ours; a package without connection.json does not build
    (metadir / "metadata.json").write_text(json.dumps({"type": "golang", "label": "x"}))
    assert run("detect", src, metadir).returncode != 0
    (src / "connection.json").unlink()
    failed = run("build", src, metadir, build)
    assert failed.returncode != 0 and "connection.json" in failed.stderr


# --- config checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"orderers": 0}, "orderers"),
    ({"orderers": 6}, "orderers"),
    ({"base_port": 65530}, "base_port"),
    ({"channel": "Park"}, "channel"),
    ({"users": {"admin": OPERATOR_MSP}}, "users"),
    ({"users": {"alice": ORDERER_MSP}}, "users.alice"),
    ({"users": {"Alice!": OPERATOR_MSP}}, "users"),
    ({"batch_timeout_ms": 0}, "batch_timeout_ms"),
    ({"chaincode": ChaincodeSpec(name="bad name")}, "chaincode.name"),
    ({"chaincode": ChaincodeSpec(command=())}, "chaincode.command"),
    ({"chaincode": ChaincodeSpec(sequence=0)}, "chaincode.sequence"),
])
def test_config_refuses(tmp_path: Path, change: dict[str, object], field: str) -> None:
    with pytest.raises(FabricConfigError, match=f"^{field}"):
        _cfg(tmp_path, **change).check()


def test_ports_do_not_overlap(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    used = []
    for i in range(cfg.orderers):
        p = cfg.orderer_ports(i)
        used += [p.listen, p.admin, p.operations]
    for msp in PEER_ORGS:
        p = cfg.peer_ports(msp)
        used += [p.listen, p.chaincode_listen, p.operations, p.chaincode_server]
    assert len(used) == len(set(used))
    assert min(used) == cfg.base_port and max(used) < cfg.base_port + cfg.port_count


def test_from_mapping_types_and_unknown_keys(tmp_path: Path) -> None:
    cfg = FabricNetworkConfig.from_mapping(
        {"orderers": 3, "users": {"alice": SALES_MSP}, "chaincode": {"command": ["python", "-m", "x"], "name": "kv"}},
        chain_id="f", data_dir=tmp_path, base_port=30000)
    assert cfg.orderers == 3 and cfg.chaincode.command == ("python", "-m", "x")
    assert cfg.chaincode.endorsement_policy == ENDORSEMENT_POLICY
    for bad, field in [({"orderer": 3}, "unknown key"), ({"orderers": "3"}, "orderers"),
                       ({"orderers": True}, "orderers"), ({"chaincode": {"cmd": []}}, "chaincode: unknown"),
                       ({"chaincode": {"command": "python x"}}, "chaincode.command"),
                       ({"users": {"alice": 1}}, "users")]:
        with pytest.raises(FabricConfigError, match=field):
            FabricNetworkConfig.from_mapping(bad, chain_id="f", data_dir=tmp_path, base_port=30000)


def test_for_park_gives_every_account_and_relayer_an_identity(tmp_path: Path) -> None:
    cfg = FabricNetworkConfig.for_park(chain_id="fabric-park", data_dir=tmp_path, base_port=30000, host="127.0.0.1",
                                       params={"orderers": 3, "users": {"bob": SALES_MSP}, "not_ours": 5,
                                               "batch_timeout_ms": None},
                                       accounts=["alice", "bob"], relayers=["relayer-a"])
    assert dict(cfg.users) == {"alice": OPERATOR_MSP, "bob": SALES_MSP, "relayer-a": OPERATOR_MSP}
    assert cfg.orderers == 3 and cfg.batch_timeout_ms == 250


def test_parkrelay_node_fabric_maps_the_chain_table(tmp_path: Path) -> None:
    """``parkrelay node fabric --config FILE --chain ID``: the chain's data dir, port, host, network keys, and an
    identity for each account and relayer (the kind's other keys are not the network's)."""
    from chains.fabric.params import FabricChainParams
    from relay.ops.cli import _fabric_network, build_parser
    from relay.ops.config import ChainConfig, ConfigError, DeploymentConfig

    fabric = ChainConfig("fabric-park", "fabric", ("network",), 31000, {"alice": 10, "operator": 0},
                         FabricChainParams.from_mapping({"orderers": 3, "batch_timeout_ms": 100,
                                                         "users": {"alice": SALES_MSP}, "keepalive_after_s": 60}),
                         {})
    other = ChainConfig("dpos-park", "dpos", ("witness-a",), 32000, {}, {}, {})  # type: ignore[arg-type]
    dep = DeploymentConfig(path=tmp_path / "d.toml", data_dir=tmp_path / "data", host="127.0.0.1",
                           chains=(other, fabric), relay_validators=("op-a",), relayers=("relayer-a",))
    net = _fabric_network(dep, None)
    assert net.data_dir == tmp_path / "data" / "fabric-park"
    assert (net.base_port, net.orderers, net.batch_timeout_ms) == (31000, 3, 100)
    assert dict(net.users) == {"alice": SALES_MSP, "operator": OPERATOR_MSP, "relayer-a": OPERATOR_MSP}
    with pytest.raises(ConfigError, match="dpos chain"):
        _fabric_network(dep, "dpos-park")
    args = build_parser().parse_args(["node", "fabric", "--config", "x.toml", "--chain", "fabric-park"])
    assert (args.kind, args.chain) == ("fabric", "fabric-park")


def test_a_relative_data_dir_is_made_absolute_for_the_files_that_name_paths(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Fabric resolves a relative path in configtx.yaml against that file's folder: the devnet's ``var/devnet``
    once made configtxgen look for var/devnet/fabric-park/config/configtx/var/devnet/...; every path is absolute."""
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(Path("var/devnet/fabric-park"))
    assert cfg.data_dir == tmp_path / "var/devnet/fabric-park"
    assert cfg.layout.crypto.is_absolute()


def test_an_enrolled_user_carries_fabric_ca_attributes_the_chaincode_reads(made: FabricNetworkConfig) -> None:
    from chains.fabric.chaincode.identity import account_id, certificate_attributes
    from chains.fabric.network.crypto import enroll_user

    lay = made.layout
    profile_had = lay.connection_profile.exists()
    identity_dir = enroll_user(made, SALES_MSP, "station-op", {"market.role": "station"})
    cert = load_certificate(lay.signcert(identity_dir))
    ca = load_certificate(lay.ca(SALES_MSP)[0])
    assert cert.issuer == ca.subject
    pem = lay.signcert(identity_dir).read_bytes()
    assert certificate_attributes(pem) == {"market.role": "station"}
    assert account_id(SALES_MSP, pem) == f"{SALES_MSP}:station-op@{SALES_MSP}"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "client"
    assert os.stat(lay.keyfile(identity_dir)).st_mode & 0o777 == 0o600
    if profile_had:
        users = json.loads(lay.connection_profile.read_text())["organizations"][SALES_MSP]["users"]
        assert users["station-op"]["cert"] == str(lay.signcert(identity_dir))
    with pytest.raises(ValueError):
        enroll_user(made, ORDERER_MSP, "x", {"market.role": "station"})
