"""The light client reads a channel genesis block made by Fabric's own ``configtxgen`` (v2.5.9, built by ``make
setup``) from MSP directories of test CAs, as the network launcher will: MSPs with node OUs, TLS CAs, an etcdraft
consenter set, the ``Application`` group. Blocks then signed as Fabric's BlockWriter signs them are followed, and
attestations of the channel's peers verify. Skipped when the Fabric binaries are not built."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from chains.fabric.consts import OPERATOR_MSP, ORDERER_MSP, SALES_MSP
from chains.fabric.proto import Block
from chains.fabric.testing import T0_MS, FabricNet, Org
from protocol.errors import SignatureError

FABRIC_HOME = Path(os.environ.get("PARKRELAY_FABRIC_HOME", Path.home() / ".cache/parkrelay/fabric-2.5.9"))
CONFIGTXGEN = FABRIC_HOME / "bin" / "configtxgen"
pytestmark = pytest.mark.skipif(not CONFIGTXGEN.exists(), reason="Fabric binaries not built (make setup)")

NODE_OUS = """NodeOUs:
  Enable: true
  ClientOUIdentifier: {{Certificate: cacerts/ca.pem, OrganizationalUnitIdentifier: client}}
  PeerOUIdentifier: {{Certificate: cacerts/ca.pem, OrganizationalUnitIdentifier: peer}}
  AdminOUIdentifier: {{Certificate: cacerts/ca.pem, OrganizationalUnitIdentifier: admin}}
  OrdererOUIdentifier: {{Certificate: cacerts/ca.pem, OrganizationalUnitIdentifier: orderer}}
"""


def _pem(cert: object) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]


def _msp_dir(root: Path, org: Org) -> Path:
    d = root / org.mspid / "msp"
    for sub, cert in (("cacerts", org.ca.cert), ("tlscacerts", org.tls_ca.cert)):
        (d / sub).mkdir(parents=True)
        (d / sub / ("ca.pem" if sub == "cacerts" else "tlsca.pem")).write_bytes(_pem(cert))
    (d / "config.yaml").write_text(NODE_OUS.format())
    return d


def _org_yaml(org: Org, d: Path, *, orderer: bool) -> str:
    m = org.mspid
    extra = f"    Endorsement: {{Type: Signature, Rule: \"OR('{m}.peer')\"}}\n" if not orderer else ""
    ends = "  OrdererEndpoints: [\"127.0.0.1:7050\"]\n" if orderer else ""
    return (f"- &{m}\n  Name: {m}\n  ID: {m}\n  MSPDir: {d}\n{ends}  Policies:\n"
            f"    Readers: {{Type: Signature, Rule: \"OR('{m}.member')\"}}\n"
            f"    Writers: {{Type: Signature, Rule: \"OR('{m}.member')\"}}\n"
            f"    Admins: {{Type: Signature, Rule: \"OR('{m}.admin')\"}}\n{extra}")


def test_a_configtxgen_genesis_block_is_followed(tmp_path: Path) -> None:
    net = FabricNet.new(n_orderers=2)
    tls = []
    for i, o in enumerate(net.orderers):
        p = tmp_path / f"orderer{i}-tls.pem"
        p.write_bytes(_pem(o.tls_cert))
        tls.append(p)
    dirs = {m: _msp_dir(tmp_path, org) for m, org in [(ORDERER_MSP, net.orderer_org), *net.peer_orgs.items()]}
    orgs = "Organizations:\n" + "".join(
        "\n".join("  " + line for line in _org_yaml(org, dirs[m], orderer=m == ORDERER_MSP).splitlines()) + "\n"
        for m, org in [(ORDERER_MSP, net.orderer_org), *net.peer_orgs.items()])
    consenters = "".join(f"        - {{Host: 127.0.0.1, Port: {7050 + i}, ClientTLSCert: {p}, ServerTLSCert: {p}}}\n"
                         for i, p in enumerate(tls))
    def implicit(indent: int) -> str:
        pad = " " * indent
        return (f"{pad}Readers: {{Type: ImplicitMeta, Rule: \"ANY Readers\"}}\n"
                f"{pad}Writers: {{Type: ImplicitMeta, Rule: \"ANY Writers\"}}\n"
                f"{pad}Admins: {{Type: ImplicitMeta, Rule: \"MAJORITY Admins\"}}\n")
    configtx = f"""{orgs}
Profiles:
  Park:
    Capabilities: {{V2_0: true}}
    Policies:
{implicit(6)}    Orderer:
      OrdererType: etcdraft
      BatchTimeout: 500ms
      BatchSize: {{MaxMessageCount: 10, AbsoluteMaxBytes: 10 MB, PreferredMaxBytes: 2 MB}}
      EtcdRaft:
        Consenters:
{consenters}      Organizations: [*{ORDERER_MSP}]
      Capabilities: {{V2_0: true}}
      Policies:
{implicit(8)}        BlockValidation: {{Type: ImplicitMeta, Rule: "ANY Writers"}}
    Application:
      Organizations: [*{OPERATOR_MSP}, *{SALES_MSP}]
      Capabilities: {{V2_5: true}}
      Policies:
{implicit(8)}        Endorsement: {{Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}}
        LifecycleEndorsement: {{Type: ImplicitMeta, Rule: "MAJORITY Endorsement"}}
"""
    (tmp_path / "configtx.yaml").write_text(configtx.replace("\n  - &", "\n  - &"))
    out = tmp_path / "genesis.block"
    run = subprocess.run([str(CONFIGTXGEN), "-configPath", str(tmp_path), "-profile", "Park", "-channelID", "park",
                          "-outputBlock", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]

    genesis = Block.decode(out.read_bytes())
    net.blocks = [genesis]
    client = net.client()
    cfg = client.config
    assert sorted(cfg.application_msps) == [OPERATOR_MSP, SALES_MSP] and list(cfg.orderer_msps) == [ORDERER_MSP]
    assert cfg.consenters == {(ORDERER_MSP, o.name) for o in net.orderers} and cfg.consenter_count == 2
    for i in range(3):  # blocks as the orderers' BlockWriter signs them, either consenter
        client.process_header(net.next_block(signers=[net.orderers[i % 2]]), T0_MS + i)
    with pytest.raises(SignatureError):
        client.process_header(net.next_block(signers=[]), T0_MS + 9)
    key = b"commitments/dpos-park/lane-0/1"
    client.verify_membership(3, key, b"\x05" * 32, net.attest(key, b"\x05" * 32), T0_MS + 10)
