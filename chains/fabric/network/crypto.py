"""Devnet key material of a Fabric park: X.509 (ECDSA P-256) CAs, MSP folders and TLS certificates, generated at
``devnet init`` time with ``cryptography`` (what Fabric's ``cryptogen`` would make, written by us).

Per organisation (``OrdererMSP``, ``OperatorMSP``, ``SalesMSP``):

* a signing root CA and a TLS root CA (self-signed, key files 0600);
* the organisation's verifying MSP (``cacerts``, ``tlscacerts``, ``config.yaml`` with NodeOUs enabled: the role
  of an identity is the OU of its certificate — ``client``, ``peer``, ``admin`` or ``orderer``);
* node identities: the orderers (OU ``orderer``) or the peer (OU ``peer``), each with a local MSP and a TLS server
  certificate (SANs ``localhost``, ``127.0.0.1``, the configured host; extended key usages serverAuth and
  clientAuth, since an orderer's Raft cluster client presents the same certificate);
* users: ``admin`` (OU ``admin``) and, in the peer organisations, the configured client users (OU ``client``),
  each with a local MSP and a TLS client certificate.

A node's signing certificate and its TLS certificate carry the same subject common name, ``<node>.<MSP>``
(``orderer0.OrdererMSP``): the relay's Fabric light client maps a block's signer to its etcdraft consenter entry
(named by TLS certificate) through it. Users are ``<name>@<MSP>``.

Where files go: :class:`chains.fabric.network.config.Layout`. Generation is idempotent: what exists is kept (a key
is never replaced), what is missing (a new user, a third orderer) is issued by the existing CA.

Every certificate's signature is low-S: Fabric refuses high-S ECDSA signatures on messages, and keeping the
certificates canonical too means nobody verifying them has to care (the relay's light client reads them from
the channel config).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chains.fabric.consts import FABRIC_CA_ATTRS_OID, ORDERER_MSP, PEER_ORGS
from chains.fabric.network.config import PEER_NODE, FabricNetworkConfig, Layout

__all__ = ["ADMIN", "NODE_OUS", "attrs_extension", "enroll_user", "init_crypto", "load_certificate", "write_secret"]

ATTRS_OID = x509.ObjectIdentifier(FABRIC_CA_ATTRS_OID)

ADMIN = "admin"
"""Every organisation's administrator identity (OU ``admin``)."""
NODE_OUS = ("client", "peer", "admin", "orderer")
"""The NodeOU roles (``config.yaml``), by the OU in an identity's certificate."""

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
"""n of NIST P-256: a signature is low-S when s <= n / 2."""
_BACKDATE = dt.timedelta(minutes=5)
"""Certificates start a little in the past, so a peer whose clock lags does not see them as not yet valid."""


@dataclass(frozen=True, slots=True)
class _Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def ski(self) -> bytes:
        return _ski(self.key.public_key())


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key: created 0600 (never readable by others, even for a moment), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ski(public: ec.EllipticCurvePublicKey) -> bytes:
    """Subject key id as Fabric's tools compute it: SHA-256 of the uncompressed point."""
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(point).digest()


def _name(common_name: str, msp: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
             x509.NameAttribute(NameOID.ORGANIZATION_NAME, msp)]
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _sign_low_s(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Sign until the signature is low-S (ECDSA is randomised: each try is low-S with probability 1/2)."""
    for _ in range(64):
        cert = builder.sign(key, hashes.SHA256())
        _, s = decode_dss_signature(cert.signature)
        if s <= _P256_ORDER // 2:
            return cert
    raise RuntimeError("no low-S certificate signature in 64 tries")  # probability 2**-64


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, now: dt.datetime,
             days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier(_ski(public)), critical=False))


def _ensure_ca(cert_path: Path, key_path: Path, msp: str, tls: bool, now: dt.datetime, days: int) -> _Ca:
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: expected an EC private key, got {type(key).__name__}")
        return _Ca(load_certificate(cert_path), key)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{'tlsca' if tls else 'ca'}.{msp}", msp)
    builder = (_builder(name, name, key.public_key(), now, days)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                     ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    cert = _sign_low_s(builder, key)
    write_secret(key_path, _key_pem(key))
    _write_public(cert_path, _pem(cert))
    return _Ca(cert, key)


def attrs_extension(attrs: Mapping[str, str]) -> x509.UnrecognizedExtension:
    """Fabric CA's attribute extension (OID ``1.2.3.4.5.6.7.8.1``, value the JSON ``{"attrs": {...}}``), as an
    enrolled certificate carries it; :func:`chains.fabric.chaincode.identity.certificate_attributes` reads it."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
        raise ValueError("certificate attributes are strings")
    value = json.dumps({"attrs": dict(attrs)}, sort_keys=True, separators=(",", ":")).encode()
    return x509.UnrecognizedExtension(ATTRS_OID, value)


def _issue(ca: _Ca, subject: x509.Name, now: dt.datetime, days: int, *,
           tls_sans: tuple[str, ...] | None = None, server: bool = False, attrs: Mapping[str, str] | None = None
           ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate and its new key. ``tls_sans`` None: a signing identity (digitalSignature only; with
    ``attrs``, Fabric CA's attribute extension); else a TLS certificate with these SANs (IP literals as IP SANs),
    clientAuth, and serverAuth if ``server``."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_builder(subject, ca.cert.subject, key.public_key(), now, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier(ca.ski, None, None), critical=False))
    if attrs:
        builder = builder.add_extension(attrs_extension(attrs), critical=False)
    if tls_sans is None:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        sans: list[x509.GeneralName] = []
        for san in dict.fromkeys(tls_sans):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                sans.append(x509.DNSName(san))
        builder = (builder
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=True, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    return _sign_low_s(builder, ca.key), key


def _node_ous_yaml() -> str:
    """An MSP's ``config.yaml``: NodeOUs on, every role identified by its OU under the signing CA."""
    lines = ["NodeOUs:", "  Enable: true"]
    for ou in NODE_OUS:
        lines += [f"  {ou.capitalize()}OUIdentifier:", "    Certificate: cacerts/ca.pem",
                  f"    OrganizationalUnitIdentifier: {ou}"]
    return "\n".join(lines) + "\n"


def _write_msp_roots(msp_dir: Path, ca: _Ca, tlsca: _Ca) -> None:
    _write_public(msp_dir / "cacerts" / "ca.pem", _pem(ca.cert))
    _write_public(msp_dir / "tlscacerts" / "tlsca.pem", _pem(tlsca.cert))
    _write_public(msp_dir / "config.yaml", _node_ous_yaml().encode())


def _ensure_identity(layout: Layout, identity_dir: Path, msp: str, common_name: str, ou: str, ca: _Ca, tlsca: _Ca,
                     now: dt.datetime, days: int, tls_sans: tuple[str, ...], server: bool,
                     attrs: Mapping[str, str] | None = None) -> None:
    """One identity's local MSP and TLS pair; kept if complete, (re)issued if missing or partial."""
    signcert = layout.signcert(identity_dir)
    tls_name = "server" if server else "client"
    tls_cert, tls_key = identity_dir / "tls" / f"{tls_name}.crt", identity_dir / "tls" / f"{tls_name}.key"
    if signcert.exists() and tls_cert.exists():
        return
    if identity_dir.exists():  # a half-written identity (interrupted init): issue it whole again
        shutil.rmtree(identity_dir)
    msp_dir = identity_dir / "msp"
    _write_msp_roots(msp_dir, ca, tlsca)
    cert, key = _issue(ca, _name(common_name, msp, ou), now, days, attrs=attrs)
    write_secret(layout.keyfile(identity_dir), _key_pem(key))
    tcert, tkey = _issue(tlsca, _name(common_name, msp), now, days, tls_sans=tls_sans, server=server)
    write_secret(tls_key, _key_pem(tkey))
    _write_public(identity_dir / "tls" / "ca.crt", _pem(tlsca.cert))
    _write_public(tls_cert, _pem(tcert))
    _write_public(signcert, _pem(cert))  # last: its presence marks the identity complete


def init_crypto(cfg: FabricNetworkConfig, now: dt.datetime | None = None) -> None:
    """Generate (or complete) the key material of ``cfg``'s network under its data dir (module docstring)."""
    layout = cfg.layout
    when = now or dt.datetime.now(dt.UTC)
    days = cfg.cert_validity_days
    layout.crypto.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.crypto, 0o700)
    for msp in (ORDERER_MSP, *PEER_ORGS):
        ca = _ensure_ca(*layout.ca(msp), msp, False, when, days)
        tlsca = _ensure_ca(*layout.ca(msp, tls=True), msp, True, when, days)
        _write_msp_roots(layout.org_msp(msp), ca, tlsca)
        if msp == ORDERER_MSP:
            nodes = [(name, "orderer") for name in cfg.orderer_names]
        else:
            nodes = [(PEER_NODE, "peer")]
        for node, ou in nodes:
            _ensure_identity(layout, layout.node(msp, node), msp, f"{node}.{msp}", ou, ca, tlsca, when, days,
                             ("localhost", "127.0.0.1", cfg.host, node), server=True)
        users = [(ADMIN, "admin")] + ([(u, "client") for u in cfg.users_of(msp)] if msp in PEER_ORGS else [])
        for user, ou in users:
            _ensure_identity(layout, layout.user(msp, user), msp, f"{user}@{msp}", ou, ca, tlsca, when, days,
                             ("localhost", "127.0.0.1", cfg.host), server=False)


def enroll_user(cfg: FabricNetworkConfig, msp: str, user: str, attrs: Mapping[str, str],
                now: dt.datetime | None = None) -> Path:
    """Enroll one more client user of a peer organisation, its signing certificate carrying ``attrs`` (Fabric CA's
    attribute extension, e.g. ``{"market.role": "station"}``), issued by the organisation's CA this module made:
    what ``fabric-ca-client enroll`` with ``--enrollment.attrs`` gives on a production network. DEVNET ONLY, like
    every key here. Kept if it exists (re-enrolling with other attributes means removing its directory first). If
    the network's connection profile exists, the user is added to its organisation there (so an adapter can
    connect as it). Returns the identity's directory (``msp/``, ``tls/``)."""
    if msp not in PEER_ORGS:
        raise ValueError(f"client users belong to a peer organisation {list(PEER_ORGS)}, not {msp!r}")
    layout = cfg.layout
    when = now or dt.datetime.now(dt.UTC)
    ca = _ensure_ca(*layout.ca(msp), msp, False, when, cfg.cert_validity_days)
    tlsca = _ensure_ca(*layout.ca(msp, tls=True), msp, True, when, cfg.cert_validity_days)
    identity_dir = layout.user(msp, user)
    _ensure_identity(layout, identity_dir, msp, f"{user}@{msp}", "client", ca, tlsca, when, cfg.cert_validity_days,
                     ("localhost", "127.0.0.1", cfg.host), server=False, attrs=attrs)
    profile = layout.connection_profile
    if profile.exists():
        raw = json.loads(profile.read_text())
        users = raw["organizations"][msp].setdefault("users", {})
        users[user] = {"cert": str(layout.signcert(identity_dir)), "private_key": str(layout.keyfile(identity_dir))}
        tmp = profile.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=2))
        os.replace(tmp, profile)
    return identity_dir
