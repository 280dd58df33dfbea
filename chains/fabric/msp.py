"""Fabric MSP identities as the relay's Fabric light client checks them (SPEC.md §8.7). Pure: no I/O, no clock.

An organisation's MSP (``msp.FabricMSPConfig`` in the channel config) names the CAs whose certificates are its
members. :class:`Msp` checks a ``msp.SerializedIdentity`` the way Fabric's X.509 MSP does (``msp/mspimpl.go``,
``mspimplvalidate.go``), and stricter where the relay needs it:

* the identity is one PEM ``CERTIFICATE`` with an ECDSA P-256 key, and not a CA certificate;
* it chains, by issuer name and signature, through the MSP's intermediate certificates to one of its root
  certificates (every CA certificate of the MSP is itself a CA; every intermediate chains to a root);
* **role** by node OUs (``FabricNodeOUs``, which the light client requires enabled for an MSP whose members it
  counts): the certificate's subject OUs hold exactly one of the configured client / peer / admin / orderer OU
  identifiers (with the identifier's certificate, when given, in its chain), and it must be the role asked for;
* **revocation**: no certificate of the chain but the root is listed by a CRL of the MSP signed by its issuer
  (CRLs that no CA of the MSP signed are ignored, as Fabric ignores them);
* **validity period** at the relay's ``now_ms``: every certificate of the chain (Fabric's MSP validates chains at the
  certificate's own ``NotBefore`` and leaves expiry to its callers; the relay checks it itself — hazard 4).

Everything but the time check depends on the MSP config and the identity bytes only, so results are cached per
:class:`Msp` (bounded; a new config builds new :class:`Msp` objects). Signatures are ECDSA P-256 over SHA-256, DER,
and must have a low S (Fabric refuses high-S signatures).
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from chains.fabric.errors import ChannelConfigError
from chains.fabric.proto import FabricMSPConfig, FabricOUIdentifier, SerializedIdentity
from protocol.errors import CodecError

__all__ = [
    "MAX_CERT_PEM_BYTES",
    "ROLES",
    "IdentityRefused",
    "Msp",
    "ValidIdentity",
    "common_name",
    "load_pem_certificate",
    "verify_signature",
]

MAX_CERT_PEM_BYTES: Final = 8 * 1024
"""Largest PEM certificate read (an identity, a CA, a consenter's TLS certificate)."""
MAX_CHAIN: Final = 6
"""Longest chain from an identity to a root, both included."""
MAX_SIGNATURE_BYTES: Final = 80
"""Longest DER ECDSA P-256 signature (72 bytes at most; a little slack)."""
_IDENTITY_CACHE: Final = 512
_P256_N: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
ROLES: Final = ("client", "peer", "admin", "orderer")
"""The node-OU roles, in ``FabricNodeOUs`` field order."""
_PEM_BEGIN: Final = b"-----BEGIN CERTIFICATE-----"
_PEM_END: Final = b"-----END CERTIFICATE-----"
_X509_ERRORS: Final = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
                       x509.UnsupportedGeneralNameType)
"""What ``cryptography`` raises for malformed certificates and CRLs."""


class IdentityRefused(Exception):
    """Why an identity does not count (the caller raises its own typed error with this reason)."""

    def __init__(self, reason: str, *, expected: object = None, got: object = None) -> None:
        self.reason = reason
        self.expected = expected
        self.got = got
        super().__init__(reason)


def load_pem_certificate(pem: bytes, what: str) -> x509.Certificate:
    """One PEM ``CERTIFICATE`` (surrounding whitespace allowed, nothing else); :class:`CodecError` otherwise."""
    if not isinstance(pem, bytes) or len(pem) > MAX_CERT_PEM_BYTES:
        raise CodecError(f"{what}: not a PEM certificate of at most {MAX_CERT_PEM_BYTES} bytes",
                         got=len(pem) if isinstance(pem, bytes) else type(pem).__name__)
    body = pem.strip()
    if not body.startswith(_PEM_BEGIN) or not body.endswith(_PEM_END) or body.count(_PEM_BEGIN) != 1:
        raise CodecError(f"{what}: expected exactly one PEM CERTIFICATE block")
    try:
        with warnings.catch_warnings(record=True) as warned:
            # cryptography only warns (UserWarning) about some malformed names, and would again on every later
            # access: a certificate that makes it warn is refused here, once
            warnings.simplefilter("always")
            cert = x509.load_pem_x509_certificate(body)
            cert.subject  # noqa: B018 - names and extensions parse lazily: fail here, not later
            cert.issuer  # noqa: B018
            cert.extensions  # noqa: B018
            cert.public_key()
            cert.not_valid_before_utc  # noqa: B018
            cert.not_valid_after_utc  # noqa: B018
    except _X509_ERRORS as exc:
        raise CodecError(f"{what}: not an X.509 certificate ({exc})") from exc
    if warned:
        raise CodecError(f"{what}: malformed X.509 certificate ({warned[0].message})")
    return cert


def common_name(cert: x509.Certificate) -> str:
    """The subject's single common name ('' if it has none or several)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        return ""
    value = cns[0].value
    return value if isinstance(value, str) else ""


def verify_signature(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """ECDSA P-256 / SHA-256 of ``data``, DER-encoded, with a low S (as Fabric requires)."""
    if not isinstance(signature, bytes) or len(signature) > MAX_SIGNATURE_BYTES:
        return False
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return False
    if not (0 < r < _P256_N and 0 < s <= _P256_N // 2):
        return False
    try:
        public_key.verify(signature, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.tbs_certificate_bytes + cert.signature).digest()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (*_X509_ERRORS, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class ValidIdentity:
    """An identity that passed every check of its MSP but the time check (:meth:`Msp.check_time`)."""

    mspid: str
    """Its organisation."""
    role: str
    """Its node-OU role (one of :data:`ROLES`)."""
    common_name: str
    """Its subject's common name ('' if none)."""
    public_key: ec.EllipticCurvePublicKey
    """Its P-256 key."""
    not_before_ms: int
    """Latest ``notBefore`` of its chain, ms since the epoch."""
    not_after_ms: int
    """Earliest ``notAfter`` of its chain, ms since the epoch."""


class _Chainer:
    """CA certificates by subject, with the roots among them: builds and checks chains."""

    def __init__(self, what: str, roots: Iterable[bytes], intermediates: Iterable[bytes]) -> None:
        self.what = what
        self.roots: set[bytes] = set()
        self.by_subject: dict[bytes, list[x509.Certificate]] = {}
        self.certs: list[x509.Certificate] = []
        for pem in roots:
            cert = self._ca(pem, "root")
            self.roots.add(_fingerprint(cert))
            self.by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
            self.certs.append(cert)
        inters = [self._ca(pem, "intermediate") for pem in intermediates]
        for cert in inters:
            self.by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
            self.certs.append(cert)
        for cert in inters:
            try:
                self.chain(cert)
            except IdentityRefused as exc:
                raise ChannelConfigError(f"{what}: an intermediate CA does not chain to a root: {exc.reason}",
                                         got=common_name(cert)) from exc

    def _ca(self, pem: bytes, kind: str) -> x509.Certificate:
        try:
            cert = load_pem_certificate(pem, f"{self.what} {kind} certificate")
        except CodecError as exc:
            raise ChannelConfigError(exc.message) from exc
        if not _is_ca(cert):
            raise ChannelConfigError(f"{self.what}: a {kind} certificate is not a CA", got=common_name(cert))
        return cert

    def chain(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """``cert`` and its issuers up to a root (``[cert]`` if ``cert`` is a root)."""
        chain = [cert]
        cur = cert
        while _fingerprint(cur) not in self.roots:
            if len(chain) >= MAX_CHAIN:
                raise IdentityRefused(f"chain longer than {MAX_CHAIN} in {self.what}")
            for ca in self.by_subject.get(cur.issuer.public_bytes(), ()):
                if _issued_by(cur, ca):
                    break
            else:
                raise IdentityRefused(f"certificate does not chain to a root of {self.what}", got=common_name(cur))
            chain.append(ca)
            cur = ca
        return chain


class Msp:
    """One organisation's X.509 MSP from its ``FabricMSPConfig`` (module docstring). Raises
    :class:`~chains.fabric.errors.ChannelConfigError` for a config it cannot read."""

    def __init__(self, cfg: FabricMSPConfig) -> None:
        self.mspid = cfg.name
        if not cfg.name:
            raise ChannelConfigError("an MSP without a name")
        if not cfg.root_certs:
            raise ChannelConfigError(f"MSP {cfg.name} has no root certificate")
        self._ca = _Chainer(f"MSP {cfg.name}", cfg.root_certs, cfg.intermediate_certs)
        self._tls = _Chainer(f"the TLS CAs of MSP {cfg.name}", cfg.tls_root_certs, cfg.tls_intermediate_certs)
        self._revoked: dict[bytes, frozenset[int]] = self._load_crls(cfg.revocation_list)
        self._roles: dict[str, tuple[str, bytes | None]] = {}
        """role -> (OU value, fingerprint of the CA the OU is tied to, if any)."""
        node_ous = cfg.fabric_node_ous
        self.node_ous_enabled = node_ous is not None and node_ous.enable
        if node_ous is not None and node_ous.enable:
            idents: Mapping[str, FabricOUIdentifier | None] = {
                "client": node_ous.client, "peer": node_ous.peer, "admin": node_ous.admin,
                "orderer": node_ous.orderer}
            for role, ident in idents.items():
                if ident is None or not ident.organizational_unit_identifier:
                    continue
                tied = None
                if ident.certificate:
                    try:
                        tied = _fingerprint(load_pem_certificate(ident.certificate, f"MSP {cfg.name} {role} OU CA"))
                    except CodecError as exc:
                        raise ChannelConfigError(exc.message) from exc
                self._roles[role] = (ident.organizational_unit_identifier, tied)
        self._cache: dict[bytes, ValidIdentity | IdentityRefused] = {}

    def _load_crls(self, crls: Iterable[bytes]) -> dict[bytes, frozenset[int]]:
        revoked: dict[bytes, set[int]] = {}
        for pem in crls:
            try:
                crl = x509.load_pem_x509_crl(pem)
                issuer = crl.issuer.public_bytes()
                serials = {r.serial_number for r in crl}
            except _X509_ERRORS as exc:
                raise ChannelConfigError(f"MSP {self.mspid}: a revocation list is not a PEM CRL ({exc})") from exc
            for ca in self._ca.by_subject.get(issuer, ()):
                try:
                    valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
                except _X509_ERRORS:
                    valid = False
                if valid:
                    revoked.setdefault(_fingerprint(ca), set()).update(serials)
        return {k: frozenset(v) for k, v in revoked.items()}

    # -- identities ----------------------------------------------------------------------------------------

    def validate(self, identity: SerializedIdentity, role: str) -> ValidIdentity:
        """The identity if it is a member of this MSP with node-OU role ``role``, not revoked (time not checked:
        :meth:`check_time`); :class:`IdentityRefused` otherwise."""
        if identity.mspid != self.mspid:
            raise IdentityRefused("identity of another MSP", expected=self.mspid, got=identity.mspid)
        cached = self._cache.get(identity.id_bytes)
        if cached is None:
            try:
                cached = self._validate(identity.id_bytes)
            except IdentityRefused as exc:
                cached = exc
            if len(self._cache) >= _IDENTITY_CACHE:
                self._cache.clear()
            self._cache[identity.id_bytes] = cached
        if isinstance(cached, IdentityRefused):
            raise cached
        if cached.role != role:
            raise IdentityRefused(f"identity of MSP {self.mspid} has the wrong role", expected=role, got=cached.role)
        return cached

    def _validate(self, pem: bytes) -> ValidIdentity:
        try:
            cert = load_pem_certificate(pem, "identity")
        except CodecError as exc:
            raise IdentityRefused(exc.message) from exc
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise IdentityRefused("identity key is not ECDSA P-256", got=type(key).__name__)
        if _is_ca(cert):
            raise IdentityRefused("a CA certificate is not an identity", got=common_name(cert))
        chain = self._ca.chain(cert)
        for child, parent in itertools.pairwise(chain):
            if child.serial_number in self._revoked.get(_fingerprint(parent), ()):
                raise IdentityRefused(f"certificate revoked by a CRL of MSP {self.mspid}",
                                      got=f"{common_name(child)} serial {child.serial_number:x}")
        role = self._role(cert, chain)
        return ValidIdentity(self.mspid, role, common_name(cert), key,
                             max(_ms(c.not_valid_before_utc) for c in chain),
                             min(_ms(c.not_valid_after_utc) for c in chain))

    def _role(self, cert: x509.Certificate, chain: list[x509.Certificate]) -> str:
        if not self.node_ous_enabled:
            raise IdentityRefused(f"MSP {self.mspid} has no node OUs: the role of its identities cannot be told")
        ous = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}
        fps = {_fingerprint(c) for c in chain[1:]}
        roles = [role for role, (ou, tied) in self._roles.items() if ou in ous and (tied is None or tied in fps)]
        if len(roles) != 1:
            raise IdentityRefused(f"identity of MSP {self.mspid} must have exactly one node-OU role",
                                  expected=sorted(ou for ou, _ in self._roles.values()), got=sorted(map(str, ous)))
        return roles[0]

    @staticmethod
    def check_time(identity: ValidIdentity, now_ms: int) -> None:
        """:class:`IdentityRefused` unless every certificate of the identity's chain is valid at ``now_ms``."""
        if not identity.not_before_ms <= now_ms <= identity.not_after_ms:
            raise IdentityRefused(f"identity {identity.common_name!r} of MSP {identity.mspid} is outside its "
                                  "validity period", expected=f"{identity.not_before_ms}..{identity.not_after_ms}",
                                  got=now_ms)

    # -- TLS certificates (consenters) ----------------------------------------------------------------------

    def tls_issued(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` chains to a TLS root of this MSP (time not checked: it names a consenter)."""
        if not self._tls.roots:
            return False
        try:
            self._tls.chain(cert)
        except IdentityRefused:
            return False
        return True
