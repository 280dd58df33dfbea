"""An in-memory Fabric ledger for the bridge chaincode's unit tests. TEST ONLY.

It models what the contract's correctness rests on, no more:

* ``GetState`` reads the committed state only (no read-your-writes), and ``b""`` means absent;
* an endorsement records a read set (key -> version read) and a write set, as a peer's simulator does;
* :meth:`FakeLedger.commit` applies the write set only if every key read still has the version read
  (Fabric's MVCC check), else marks the transaction ``MVCC_READ_CONFLICT`` and changes nothing;
* two organisations endorse a submit, each with its own chaincode clock, and a transaction needs both
  responses and read/write sets to match (the AND policy and the client's endorsement comparison);
* private data: a write to a collection goes into the read/write set as its SHA-256 only; at commit every peer
  keeps the hash and only the member organisation of an implicit collection ``_implicit_org_<MSP>`` keeps the
  value; ``GetPrivateData`` on a peer of another organisation is refused, as a non-member peer's is; transient
  data reaches the chaincode and never the transaction.

Identities come from a per-session test CA (ECDSA P-256), one certificate per ``(MSP id, common name)``.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chains.fabric.chaincode.contract import STATUS_OK, BridgeContract, Response
from chains.fabric.consts import DEFAULT_CHANNEL, OPERATOR_MSP, PEER_ORGS
from chains.fabric.network.crypto import attrs_extension

IMPLICIT = "_implicit_org_"

_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(common_names: list[str] | None, *, issuer: str = "test-ca",
              attrs: dict[str, str] | None = None) -> bytes:
    """A PEM certificate with the given subject common names (None or []: none), signed by the test CA key; with
    ``attrs``, Fabric CA's attribute extension as the devnet's enrollment writes it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names or []]
                        + [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "parkrelay test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(_KEY.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30)))
    if attrs is not None:
        cert = cert.add_extension(attrs_extension(attrs), critical=False)
    return cert.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@cache
def identity(msp_id: str, common_name: str) -> tuple[str, bytes]:
    """The creator ``(MSP id, PEM)`` of ``<msp_id>:<common_name>``."""
    return msp_id, make_cert([common_name])


def enrolled(msp_id: str, common_name: str, **attrs: str) -> tuple[str, bytes]:
    """A creator whose certificate carries Fabric CA attributes (``enrolled(SALES_MSP, "s", **{"market.role":
    "sales"})``)."""
    return msp_id, make_cert([common_name], attrs=dict(attrs))


@dataclass
class Endorsement:
    """One peer's simulation of one proposal."""

    org: str
    response: Response
    reads: dict[str, int]
    """key -> version read (0: absent)."""
    writes: list[tuple[str, bytes | None]]
    event: tuple[str, bytes] | None
    private_writes: list[tuple[str, str, bytes]] = field(default_factory=list)

    def rwset(self) -> tuple[Any, ...]:
        hashed = tuple((c, k, hashlib.sha256(v).hexdigest()) for c, k, v in self.private_writes)
        return tuple(sorted(self.reads.items())), tuple(self.writes), self.event, hashed


class FakeStub:
    """The contract's :class:`~chains.fabric.chaincode.ledger.Stub` over one snapshot of a :class:`FakeLedger`."""

    def __init__(self, ledger: FakeLedger, creator: tuple[str, bytes], channel: str, org: str = OPERATOR_MSP,
                 transient: dict[str, bytes] | None = None) -> None:
        self.ledger = ledger
        self.creator = creator
        self.channel = channel
        self.org = org
        self.transient = dict(transient or {})
        self.reads: dict[str, int] = {}
        self.writes: list[tuple[str, bytes | None]] = []
        self.private_writes: list[tuple[str, str, bytes]] = []
        self.event: tuple[str, bytes] | None = None

    def get_transient(self) -> dict[str, bytes]:
        return dict(self.transient)

    def put_private_data(self, collection: str, key: str, value: bytes) -> None:
        assert collection.startswith(IMPLICIT) and isinstance(value, bytes) and value, (collection, key)
        self.private_writes.append((collection, key, value))

    def get_private_data(self, collection: str, key: str) -> bytes:
        if collection != IMPLICIT + self.org:
            raise PermissionError(f"peer of {self.org} is not a member of {collection}")
        return self.ledger.private.get(self.org, {}).get((collection, key), b"")

    def get_private_data_hash(self, collection: str, key: str) -> bytes:
        return self.ledger.private_hashes.get((collection, key), b"")

    def get_channel_id(self) -> str:
        return self.channel

    def get_creator(self) -> tuple[str, bytes]:
        return self.creator

    def get_state(self, key: str) -> bytes:
        assert isinstance(key, str) and key and not key.startswith("\x00"), key
        self.reads[key] = self.ledger.versions.get(key, 0)
        return self.ledger.state.get(key, b"")

    def put_state(self, key: str, value: bytes) -> None:
        assert isinstance(value, bytes) and value, (key, value)
        self.writes.append((key, value))

    def del_state(self, key: str) -> None:
        self.writes.append((key, None))

    def get_state_by_range(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        out = sorted((k, v) for k, v in self.ledger.state.items() if start <= k < end)[:limit]
        for k, _ in out:
            self.reads[k] = self.ledger.versions[k]
        return out

    def set_event(self, name: str, payload: bytes) -> None:
        assert self.event is None, "Fabric keeps one event per transaction"
        self.event = (name, payload)


@dataclass
class FakeLedger:
    """Committed world state of the bridge chaincode's namespace, with MVCC versions."""

    channel: str = DEFAULT_CHANNEL
    state: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    height: int = 0
    events: list[tuple[str, bytes]] = field(default_factory=list)
    invalid: int = 0
    """Transactions that failed MVCC validation at commit."""
    private: dict[str, dict[tuple[str, str], bytes]] = field(default_factory=dict)
    """Private values each organisation's peers keep, by (collection, key)."""
    private_hashes: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """SHA-256 of every committed private value: on every peer."""

    def endorse(self, contract: BridgeContract, org: str, creator: tuple[str, bytes], args: list[bytes],
                now_ms: int, transient: dict[str, bytes] | None = None) -> Endorsement:
        stub = FakeStub(self, creator, self.channel, org, transient)
        response = contract.invoke(stub, args, now_ms)
        if response.status != STATUS_OK:
            assert not stub.writes and stub.event is None and not stub.private_writes, \
                "a refusal must write nothing and emit nothing"
        return Endorsement(org, response, stub.reads, stub.writes, stub.event, stub.private_writes)

    def commit(self, endorsement: Endorsement) -> bool:
        """Validate (MVCC) and apply; returns whether the transaction was VALID."""
        self.height += 1
        if any(self.versions.get(k, 0) != v for k, v in endorsement.reads.items()):
            self.invalid += 1
            return False
        for key, value in endorsement.writes:
            if value is None:
                self.state.pop(key, None)
                self.versions.pop(key, None)
            else:
                self.state[key] = value
                self.versions[key] = self.height
        for collection, key, value in endorsement.private_writes:
            self.private_hashes[(collection, key)] = hashlib.sha256(value).digest()
            self.private.setdefault(collection[len(IMPLICIT):], {})[(collection, key)] = value
        if endorsement.event is not None:
            self.events.append(endorsement.event)
        return True

    def snapshot(self) -> str:
        """A digest of the committed state (a refused call must not change it)."""
        h = hashlib.sha256()
        for k in sorted(self.state):
            h.update(k.encode() + b"\x00" + self.state[k] + b"\x01")
        for (c, k), v in sorted(self.private_hashes.items()):
            h.update(c.encode() + b"\x02" + k.encode() + b"\x00" + v)
        return h.hexdigest()


class EndorsementMismatch(Exception):
    """The organisations' endorsements differ: no transaction satisfying the policy can be assembled."""


@dataclass
class FabricPark:
    """The Fabric park in the unit tests: a fake ledger, the real contract, one chaincode clock per org."""

    contract: BridgeContract = field(default_factory=BridgeContract)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    skew_ms: dict[str, int] = field(default_factory=lambda: {org: 0 for org in PEER_ORGS})
    """Each org's chaincode clock minus the network clock."""

    def endorse(self, who: tuple[str, bytes], fn: str, *args: str | bytes, now_ms: int,
                org: str = OPERATOR_MSP, transient: dict[str, bytes] | None = None) -> Endorsement:
        raw = [a.encode() if isinstance(a, str) else a for a in (fn, *args)]
        return self.ledger.endorse(self.contract, org, who, raw, now_ms + self.skew_ms[org], transient)

    def submit(self, who: tuple[str, bytes], fn: str, *args: str | bytes, now_ms: int,
               transient: dict[str, bytes] | None = None) -> Response:
        """Endorse on a peer of each org; on matching endorsements, commit. Returns the response."""
        ends = [self.endorse(who, fn, *args, now_ms=now_ms, org=org, transient=transient) for org in PEER_ORGS]
        first = ends[0]
        for other in ends[1:]:
            if other.response != first.response or other.rwset() != first.rwset():
                raise EndorsementMismatch(f"{first.org}: {first.response}; {other.org}: {other.response}")
        if first.response.status == STATUS_OK:
            assert self.ledger.commit(first), "MVCC conflict on an uncontended submit"
        return first.response

    def query(self, who: tuple[str, bytes], fn: str, *args: str | bytes, now_ms: int,
              org: str = OPERATOR_MSP, transient: dict[str, bytes] | None = None) -> Response:
        end = self.endorse(who, fn, *args, now_ms=now_ms, org=org, transient=transient)
        assert not end.writes and end.event is None, "a query writes nothing"
        return end.response
