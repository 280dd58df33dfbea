"""Fabric channels made in memory for tests and benchmarks: CAs, MSPs, a channel config, blocks signed by orderers,
and attestations (proposal responses) signed by peers — realistic bytes, as Fabric 2.5 makes them.

TEST-ONLY: keys are generated when a :class:`FabricNet` is built and never leave the process. Never use this module
for a real park; the Fabric network launcher (``chains/fabric/network``) makes real MSP material.

The layout follows ``cryptogen``: per organisation one signing CA and one TLS CA (ECDSA P-256, self-signed), node
OUs ``client`` / ``peer`` / ``admin`` / ``orderer`` enabled, each node's signing certificate and TLS certificate with
the node's name as common name. Signatures are low-S, as Fabric requires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from chains.fabric.attestation import Statement, encode_bundle
from chains.fabric.config import ETCDRAFT
from chains.fabric.consts import BRIDGE_CHAINCODE, DEFAULT_CHANNEL, ORDERER_MSP, PEER_ORGS
from chains.fabric.light_client import FabricLightClient
from chains.fabric.proto import (
    CONFIG_HEADER_TYPE,
    Block,
    BlockHeader,
    ChaincodeAction,
    ChaincodeID,
    ChannelHeader,
    Config,
    ConfigEnvelope,
    ConfigGroup,
    ConfigValue,
    ConsensusType,
    Endorsement,
    Envelope,
    EtcdRaftConfigMetadata,
    EtcdRaftConsenter,
    FabricMSPConfig,
    FabricNodeOUs,
    FabricOUIdentifier,
    Header,
    Metadata,
    MetadataSignature,
    MSPConfig,
    OrdererBlockMetadata,
    Payload,
    ProposalResponse,
    ProposalResponsePayload,
    Response,
    SerializedIdentity,
    SignatureHeader,
    data_hash,
)
from protocol.types import ChainId, ClientId

__all__ = ["T0_MS", "FabricNet", "Node", "Org", "low_s_sign"]

T0_MS = 1_790_000_000_000
"""Default "now" of test channels (a fixed instant: tests never read a clock)."""
YEAR_MS = 365 * 86_400_000
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def low_s_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature of ``data``, DER, with S normalised low (Fabric refuses high S)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return encode_dss_signature(r, min(s, _N - s))


def _name(cn: str, org: str, ous: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in ous]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass(slots=True)
class _CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def new(cls, cn: str, org: str, not_before_ms: int, not_after_ms: int) -> _CA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(cn, org)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(_dt(not_before_ms))
                .not_valid_after(_dt(not_after_ms))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def issue(self, cn: str, org: str, ous: Sequence[str], not_before_ms: int, not_after_ms: int, *,
              is_ca: bool = False, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[x509.Certificate,
                                                                                            ec.EllipticCurvePrivateKey]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(_name(cn, org, ous)).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(_dt(not_before_ms)).not_valid_after(_dt(not_after_ms))
             .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False))
        if not is_ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        return b.sign(self.key, hashes.SHA256()), key

    def crl(self, serials: Iterable[int], at_ms: int) -> bytes:
        b = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject).last_update(_dt(at_ms))
             .next_update(_dt(at_ms + YEAR_MS)))
        for serial in serials:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(_dt(at_ms)).build())
        return b.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(slots=True)
class Node:
    """A signing identity (orderer, peer or client) of an organisation, with its key."""

    mspid: str
    """Its organisation."""
    name: str
    """Its common name."""
    cert: x509.Certificate
    """Its signing certificate."""
    key: ec.EllipticCurvePrivateKey
    """Its private key."""
    tls_cert: x509.Certificate | None = None
    """Its TLS certificate (orderers), same common name."""

    @property
    def serialized(self) -> bytes:
        """``msp.SerializedIdentity`` bytes, as Fabric's MSP serialises a signing identity."""
        return SerializedIdentity(self.mspid, _pem(self.cert)).encode()

    def sign(self, data: bytes) -> bytes:
        return low_s_sign(self.key, data)


@dataclass(slots=True)
class Org:
    """An organisation: its signing CA and TLS CA, its CRLs, and the nodes issued so far."""

    mspid: str
    """MSP id."""
    ca: _CA
    """Signing CA (the MSP's root)."""
    tls_ca: _CA
    """TLS CA."""
    crls: list[bytes] = field(default_factory=list)
    """PEM CRLs in its MSP config."""
    not_before_ms: int = T0_MS - YEAR_MS
    """Validity start of what it issues by default."""
    not_after_ms: int = T0_MS + YEAR_MS
    """Validity end of what it issues by default."""

    @classmethod
    def new(cls, mspid: str, now_ms: int = T0_MS) -> Org:
        dom = mspid.lower()
        return cls(mspid, _CA.new(f"ca.{dom}", mspid, now_ms - 2 * YEAR_MS, now_ms + 5 * YEAR_MS),
                   _CA.new(f"tlsca.{dom}", mspid, now_ms - 2 * YEAR_MS, now_ms + 5 * YEAR_MS),
                   not_before_ms=now_ms - YEAR_MS, not_after_ms=now_ms + YEAR_MS)

    def node(self, name: str, role: str, *, not_before_ms: int | None = None, not_after_ms: int | None = None,
             ous: Sequence[str] | None = None, tls: bool = False, ca: _CA | None = None) -> Node:
        """A node certificate with node OU ``role`` (``ous`` overrides the OUs)."""
        nb = self.not_before_ms if not_before_ms is None else not_before_ms
        na = self.not_after_ms if not_after_ms is None else not_after_ms
        cert, key = (ca or self.ca).issue(name, self.mspid, [role] if ous is None else ous, nb, na)
        tls_cert = self.tls_ca.issue(name, self.mspid, [], nb, na)[0] if tls else None
        return Node(self.mspid, name, cert, key, tls_cert)

    def revoke(self, node: Node, at_ms: int = T0_MS) -> None:
        """Add a CRL revoking ``node`` (effective in the next config made)."""
        self.crls.append(self.ca.crl([node.cert.serial_number], at_ms))

    def msp_value(self, *, node_ous: bool = True) -> bytes:
        """The ``MSP`` config value of this organisation."""
        ca_pem = _pem(self.ca.cert)
        ous = FabricNodeOUs(True, *(FabricOUIdentifier(ca_pem, r) for r in ("client", "peer", "admin", "orderer"))) \
            if node_ous else None
        cfg = FabricMSPConfig(self.mspid, (ca_pem,), revocation_list=tuple(self.crls),
                              tls_root_certs=(_pem(self.tls_ca.cert),), fabric_node_ous=ous)
        return MSPConfig(0, cfg.encode()).encode()


def _org_group(org: Org) -> ConfigGroup:
    return ConfigGroup(0, {}, {"MSP": ConfigValue(0, org.msp_value(), "Admins")}, {}, "Admins")


@dataclass
class FabricNet:
    """One channel: an orderer organisation with its consenters, peer organisations with one peer each, and the blocks
    made so far (``blocks[n]`` is block ``n``). Build with :meth:`new`."""

    channel_id: str
    orderer_org: Org
    peer_orgs: dict[str, Org]
    orderers: list[Node]
    peers: dict[str, Node]
    blocks: list[Block] = field(default_factory=list)
    sequence: int = 0
    last_config: int = 0
    consenters: list[Node] = field(default_factory=list)
    """The orderers named in the channel config's consenter set."""
    extra_app_orgs: dict[str, Org] = field(default_factory=dict)
    """Application organisations outside the endorsement policy (for tests)."""

    @classmethod
    def new(cls, *, channel_id: str = DEFAULT_CHANNEL, n_orderers: int = 1, peer_orgs: Sequence[str] = PEER_ORGS,
            extra_orgs: Sequence[str] = (), now_ms: int = T0_MS) -> FabricNet:
        oorg = Org.new(ORDERER_MSP, now_ms)
        orderers = [oorg.node(f"orderer{i}.{ORDERER_MSP.lower()}", "orderer", tls=True) for i in range(n_orderers)]
        porgs = {m: Org.new(m, now_ms) for m in peer_orgs}
        extra = {m: Org.new(m, now_ms) for m in extra_orgs}
        peers = {m: o.node(f"peer0.{m.lower()}", "peer") for m, o in {**porgs, **extra}.items()}
        net = cls(channel_id, oorg, porgs, orderers, peers, consenters=list(orderers), extra_app_orgs=extra)
        net.blocks.append(net._config_block(0, b"", None))
        return net

    # -- config --------------------------------------------------------------------------------------------------

    def config_envelope(self, sequence: int) -> bytes:
        """The ``ConfigEnvelope`` of the channel as it is now configured."""
        meta = EtcdRaftConfigMetadata(tuple(EtcdRaftConsenter("127.0.0.1", 7050 + i, _pem(o.tls_cert or o.cert),
                                                              _pem(o.tls_cert or o.cert))
                                            for i, o in enumerate(self.consenters)))
        orderer = ConfigGroup(0, {ORDERER_MSP: _org_group(self.orderer_org)},
                              {"ConsensusType": ConfigValue(0, ConsensusType(ETCDRAFT, meta.encode()).encode(),
                                                            "Admins")}, {}, "Admins")
        apps = {m: _org_group(o) for m, o in {**self.peer_orgs, **self.extra_app_orgs}.items()}
        application = ConfigGroup(0, apps, {}, {}, "Admins")
        root = ConfigGroup(0, {"Orderer": orderer, "Application": application}, {}, {}, "Admins")
        return ConfigEnvelope(Config(sequence, root)).encode()

    def _config_block(self, number: int, previous_hash: bytes, signer: Node | None) -> Block:
        chdr = ChannelHeader(CONFIG_HEADER_TYPE, self.channel_id, timestamp=(number, 0))
        shdr = SignatureHeader(b"" if signer is None else signer.serialized, b"nonce-%d" % number)
        payload = Payload(Header(chdr.encode(), shdr.encode()), self.config_envelope(self.sequence)).encode()
        env = Envelope(payload, b"" if signer is None else signer.sign(payload)).encode()
        header = BlockHeader(number, previous_hash, data_hash([env]))
        if signer is None:  # a genesis block, as configtxgen writes it: no signatures
            return Block(header, (env,), (b"", b"", b"", b"", b""))
        return self.sign(Block(header, (env,), ()), [signer], last_config=number)

    # -- blocks --------------------------------------------------------------------------------------------------

    def sign(self, block: Block, signers: Sequence[Node], *, last_config: int | None = None) -> Block:
        """``block`` with SIGNATURES metadata by ``signers`` (as ``BlockWriter.addBlockSignature`` writes it)."""
        value = OrdererBlockMetadata(self.last_config if last_config is None else last_config, b"\x08\x01").encode()
        sigs = []
        for s in signers:
            shdr = SignatureHeader(s.serialized, hashlib.sha256(s.name.encode() + block.header.asn1()).digest()[:24])
            shdr_raw = shdr.encode()
            sigs.append(MetadataSignature(shdr_raw, s.sign(value + shdr_raw + block.header.asn1())))
        md = Metadata(value, tuple(sigs)).encode()
        return Block(block.header, block.data, (md, b"", b"", b"", b""))

    def next_block(self, *, signers: Sequence[Node] | None = None, txs: Sequence[bytes] = (b"tx",),
                   parent: Block | None = None, keep_data: bool = False) -> Block:
        """A new block on ``parent`` (default: the newest), signed by the first orderer (or ``signers``); appended
        to :attr:`blocks` only when built on the newest. Returned without its data unless ``keep_data``."""
        parent = parent or self.blocks[-1]
        header = BlockHeader(parent.header.number + 1, parent.hash, data_hash(txs))
        block = self.sign(Block(header, tuple(txs), ()), self.consenters[:1] if signers is None else signers)
        if parent is self.blocks[-1]:
            self.blocks.append(block)
        return block if keep_data else block.without_data()

    def config_update(self, *, signer: Node | None = None) -> Block:
        """A config block carrying the channel as now configured (after a test changed consenters, CRLs…), signed
        under the config before it."""
        self.sequence += 1
        parent = self.blocks[-1]
        block = self._config_block(parent.header.number + 1, parent.hash, signer or self.consenters[0])
        self.blocks.append(block)
        self.last_config = block.header.number
        return block

    # -- the light client ------------------------------------------------------------------------------------------

    def client(self, *, chain_id: str = "fabric-park", trusting_period_ms: int = 14 * 86_400_000,
               trusted_time_ms: int = T0_MS, **kwargs: object) -> FabricLightClient:
        """A client trusting this channel's genesis block."""
        return FabricLightClient.from_trusted_block(ClientId("fabric-0"), ChainId(chain_id), trusting_period_ms,
                                                    self.blocks[0], channel_id=self.channel_id,
                                                    trusted_time_ms=trusted_time_ms, **kwargs)

    # -- attestations ------------------------------------------------------------------------------------------------

    def response(self, peer: Node, statement: Statement, *, chaincode: str = BRIDGE_CHAINCODE, status: int = 200,
                 tamper: bytes | None = None) -> bytes:
        """A ``ProposalResponse`` of ``peer`` answering with ``statement`` (``tamper``: replace the statement bytes
        after signing)."""
        action = ChaincodeAction(Response(status, "", statement.encode()), ChaincodeID(chaincode, "1"))
        prp = ProposalResponsePayload(hashlib.sha256(statement.nonce).digest(), action.encode()).encode()
        endorser = peer.serialized
        sig = peer.sign(prp + endorser)
        if tamper is not None:
            prp = ProposalResponsePayload(hashlib.sha256(statement.nonce).digest(),
                                          replace(action, response=Response(status, "", tamper)).encode()).encode()
        return ProposalResponse(1, Response(status, "", b""), prp, Endorsement(endorser, sig)).encode()

    def statement(self, key: bytes, value: bytes | None, time_ms: int = T0_MS, *, nonce: bytes = b"\x01" * 16,
                  channel: str | None = None, chaincode: str = BRIDGE_CHAINCODE) -> Statement:
        return Statement(chaincode, channel or self.channel_id, key, nonce, time_ms, value)

    def attest(self, key: bytes, value: bytes | None, time_ms: int = T0_MS, *, orgs: Sequence[str] | None = None,
               peers: Sequence[Node] | None = None, **kw: object) -> bytes:
        """A proof bundle: one response per peer (default: one peer of each policy organisation)."""
        st = self.statement(key, value, time_ms, **kw)  # type: ignore[arg-type]
        chosen = list(peers) if peers is not None else [self.peers[m] for m in (orgs or list(self.peer_orgs))]
        return encode_bundle([self.response(p, st) for p in chosen])
