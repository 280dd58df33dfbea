"""Accounts of the Fabric park: keyed by the MSP identity that signs a proposal, never by a name the caller supplies.

The account of a transaction's creator (its ``SerializedIdentity``: an MSP id and an X.509 certificate, which the
endorsing peer has already validated against the channel's MSP before the chaincode runs) is::

    <MSP id>:<subject common name>          e.g.  OperatorMSP:alice   SalesMSP:User1@sales.park

* The MSP id scopes the name: each organisation's CA owns its namespace of common names, so ``OperatorMSP:x``
  and ``SalesMSP:x`` are two accounts, and no organisation can issue a certificate that lands in another's.
* The common name, not the certificate, names the account: a renewed certificate (same CA, same CN) keeps its
  account and balances. Two certificates one CA issues with one CN are one account — that CA's choice.
* The separator is ``:`` because an account in a state path may not hold ``/`` (SPEC.md §5: ``balances/
  {account}/{denom}`` must have one parse); MSP ids and common names are restricted to the characters below
  (:data:`MSP_ID_RE`, :data:`COMMON_NAME_RE`), so the first ``:`` splits an account id unambiguously. A creator
  whose certificate has no, or more than one, common name, or one outside that alphabet, cannot hold an
  account: its transactions that need one are refused (:class:`~protocol.errors.AuthorizationError`).

Certificate attributes
----------------------

An enrolled identity may carry attributes in its certificate, in Fabric CA's convention: the X.509 extension
:data:`ATTRS_OID` (``1.2.3.4.5.6.7.8.1``, not critical) whose value is the UTF-8 JSON ``{"attrs": {name: value}}``
(names and values strings). :func:`certificate_attributes` reads them (at most :data:`MAX_ATTRS_BYTES` bytes and
:data:`MAX_ATTRS` attributes; anything else is :class:`~protocol.errors.AuthorizationError`: a certificate whose
attributes cannot be read grants none). The peer has validated the certificate against the MSP's CA before the
chaincode runs, so an attribute is the issuing CA's statement. The park's market reads ``market.role``
(:mod:`chains.fabric.chaincode.market`).

An account exists once it is registered (genesis ``accounts``, or the creator's own ``register`` transaction):
like the Python parks, the bridge delivers a packet only to an existing receiver (error ack
``receiver.unknown`` otherwise) and ``transfer`` only to an existing account.
"""

from __future__ import annotations

import json
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from chains.fabric.consts import FABRIC_CA_ATTRS_OID
from protocol.errors import AuthorizationError, CodecError

__all__ = [
    "ACCOUNT_ID_RE",
    "ATTRS_OID",
    "COMMON_NAME_RE",
    "MAX_ATTRS",
    "MAX_ATTRS_BYTES",
    "MAX_IDENTITY_BYTES",
    "MSP_ID_RE",
    "account_id",
    "certificate_attributes",
    "check_account_id",
    "creator_account",
    "is_account_id",
]

MSP_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""An MSP id this chaincode accepts (Fabric's own are like ``OperatorMSP``)."""
COMMON_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""A certificate common name that can name an account (``alice``, ``User1@sales.park``)."""
ACCOUNT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""``<MSP id>:<common name>``."""
MAX_IDENTITY_BYTES = 16 * 1024
"""Largest serialized identity certificate read."""

ATTRS_OID = x509.ObjectIdentifier(FABRIC_CA_ATTRS_OID)
"""Fabric CA's attribute extension."""
MAX_ATTRS_BYTES = 4096
"""Largest attribute extension read."""
MAX_ATTRS = 32
"""Most attributes one certificate may carry."""


def certificate_attributes(cert_pem: bytes) -> dict[str, str]:
    """The Fabric CA attributes of a certificate (module docstring); ``{}`` when it has none."""
    if not isinstance(cert_pem, bytes) or not cert_pem or len(cert_pem) > MAX_IDENTITY_BYTES:
        raise AuthorizationError(f"creator identity must be a PEM certificate of 1..{MAX_IDENTITY_BYTES} bytes")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ext = cert.extensions.get_extension_for_oid(ATTRS_OID)
    except x509.ExtensionNotFound:
        return {}
    except ValueError as exc:
        raise AuthorizationError("creator identity is not an X.509 certificate", got=str(exc)[:120]) from exc
    raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    if not raw or len(raw) > MAX_ATTRS_BYTES:
        raise AuthorizationError(f"certificate attributes must be 1..{MAX_ATTRS_BYTES} bytes", got=len(raw))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AuthorizationError("certificate attributes are not JSON", got=str(exc)[:120]) from exc
    attrs = doc.get("attrs") if isinstance(doc, dict) else None
    if (not isinstance(attrs, dict) or len(attrs) > MAX_ATTRS
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items())):
        raise AuthorizationError('certificate attributes must be {"attrs": {name: value}} of strings',
                                 expected=f"<= {MAX_ATTRS} string attributes", got=type(attrs).__name__)
    return dict(attrs)


def account_id(msp_id: str, cert_pem: bytes) -> str:
    """The account of an MSP identity (module docstring); :class:`AuthorizationError` if it cannot hold one."""
    if not isinstance(msp_id, str) or not MSP_ID_RE.fullmatch(msp_id):
        raise AuthorizationError("creator MSP id cannot name an account", expected=MSP_ID_RE.pattern,
                                 got=msp_id if isinstance(msp_id, str) else type(msp_id).__name__)
    if not isinstance(cert_pem, bytes) or not cert_pem or len(cert_pem) > MAX_IDENTITY_BYTES:
        raise AuthorizationError(f"creator identity must be a PEM certificate of 1..{MAX_IDENTITY_BYTES} bytes",
                                 got=len(cert_pem) if isinstance(cert_pem, bytes) else type(cert_pem).__name__)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:
        raise AuthorizationError("creator identity is not an X.509 certificate", got=str(exc)[:120]) from exc
    if len(names) != 1:
        raise AuthorizationError("creator certificate must have exactly one common name", expected=1,
                                 got=len(names))
    cn = names[0].value
    if not isinstance(cn, str) or not COMMON_NAME_RE.fullmatch(cn):
        raise AuthorizationError("creator common name cannot name an account", expected=COMMON_NAME_RE.pattern,
                                 got=cn if isinstance(cn, str) else type(cn).__name__)
    return f"{msp_id}:{cn}"


def creator_account(creator: tuple[str, bytes]) -> str:
    """The account of a stub's creator ``(msp id, certificate PEM)``."""
    msp_id, cert_pem = creator
    return account_id(msp_id, cert_pem)


def check_account_id(value: object, what: str = "account") -> str:
    """``value`` if it is a well-formed account id (for arguments and genesis), else :class:`CodecError`."""
    if not isinstance(value, str) or not ACCOUNT_ID_RE.fullmatch(value):
        raise CodecError(f"{what} must be an account id <MSP id>:<common name>", expected=ACCOUNT_ID_RE.pattern,
                         got=value if isinstance(value, str) else type(value).__name__)
    return value


def is_account_id(value: object) -> bool:
    """Whether :func:`check_account_id` accepts ``value``: an account this park can credit (a relay fee to any other
    payee goes back to its payer, protocol SPEC §6.10)."""
    return isinstance(value, str) and ACCOUNT_ID_RE.fullmatch(value) is not None
