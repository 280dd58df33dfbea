"""JSON wire forms of relay-chain data (SPEC.md §7): validator sets, headers, commits, certificates.

Transactions carry their arguments as JSON, so a relayer submits a relay certificate to a park's
``bridge.recv`` / ``bridge.settle`` in the forms below. Bytes are lowercase hex without ``0x``.
Parsing is strict: a JSON object must hold exactly the listed keys (those marked optional may be
left out), integers are JSON integers (never booleans or strings) and every malformed value raises
:class:`~protocol.errors.CodecError`, so one certificate has one wire form.

::

    Validator        {"name": str, "ed25519_pubkey": hex32, "eth_address": hex20, "power": int}
    ValidatorSet     {"validators": [Validator...], "hash"?: hex32}   # hash, if present, must match
    RelayHeader      {"chain_id": str, "height": int, "time_ms": int, "last_block_hash": hex32,
                      "data_hash": hex32, "state_root": hex32, "validators_hash": hex32,
                      "next_validators_hash": hex32}
    CommitSignature  {"validator_index": int, "ed25519_sig": hex64, "secp256k1_sig"?: hex ("" if absent)}
    RelayCommit      {"header": RelayHeader, "round": int, "signatures": [CommitSignature...]}
    Proof            hex of Proof.encode()
    RelayCertificate {"commit": RelayCommit, "key": hex, "value": hex | null, "proof": Proof}
    CertificateBatch {"commit": RelayCommit, "records": [{"key": hex, "value": hex | null, "proof": Proof}...]}

A :class:`CertificateBatch` (SPEC §7.10) is many certificates of one relay block: the commit once, then a record per
key; the relay's ``getCertificates`` answers with one, and :func:`certificate_batch_from_json` gives back one
:class:`~protocol.certificate.RelayCertificate` per record, all sharing the commit.

``key`` is the relay-state path as bytes (``relay/verified/...`` is ASCII), hex-encoded like every
other byte string; ``value`` is ``null`` for a non-membership certificate.
"""

from __future__ import annotations

from typing import Any

from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
)
from protocol.errors import CodecError
from protocol.state_commitment import Proof
from protocol.types import ChainId, check_uint

__all__ = [
    "MAX_BATCH_RECORDS",
    "MAX_SIGNATURES",
    "MAX_VALIDATORS",
    "certificate_batch_from_json",
    "certificate_batch_to_json",
    "certificate_from_json",
    "certificate_to_json",
    "commit_from_json",
    "commit_signature_from_json",
    "commit_signature_to_json",
    "commit_to_json",
    "header_from_json",
    "header_to_json",
    "hex_bytes",
    "proof_from_json",
    "proof_to_json",
    "strict_hex",
    "validator_set_from_json",
    "validator_set_to_json",
]

MAX_VALIDATORS = 256
"""Most validators a set may hold on the wire (a bound on the work one transaction can ask for)."""
MAX_SIGNATURES = MAX_VALIDATORS
"""Most signatures a commit may carry: one per validator."""
MAX_HEX_BYTES = 32 * 1024
"""Most bytes one hex field may decode to."""
MAX_BATCH_RECORDS = 64
"""Most records a certificate batch, and so one batched ``bridge.recv_batch`` / ``bridge.settle_batch``, carries."""
"""Most bytes one hex field may decode to."""


def _strict_fromhex(value: str) -> bytes | None:
    """``value`` decoded if it is lowercase, even-length hex and nothing else, else ``None``.

    ``bytes.fromhex`` also takes upper case and spaces between bytes; only the one canonical spelling
    re-encodes to the same string. (A regex over a proof's 1,000+ characters cost ~30x more; re-encoding and
    comparing, ~40% more than the checks below.)"""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    # raw.hex() == value, without building the copy: fromhex read every character as a hex digit or skipped it as
    # whitespace, so two characters a byte means no whitespace, and then only upper case can differ
    if len(value) != 2 * len(raw) or (
            "A" in value or "B" in value or "C" in value or "D" in value or "E" in value or "F" in value):
        return None
    return raw


def strict_hex(value: Any, length: int | None = None) -> bytes | None:
    """What :func:`hex_bytes` returns for ``value``, or ``None`` where it raises: for hot paths that build the
    error's message only when there is an error (call :func:`hex_bytes` then, to raise it)."""
    raw = _strict_fromhex(value) if isinstance(value, str) and len(value) <= 2 * MAX_HEX_BYTES else None
    if raw is None or (length is not None and len(raw) != length):
        return None
    return raw


def hex_bytes(value: Any, what: str, length: int | None = None) -> bytes:
    """Decode lowercase, even-length hex (no ``0x``, no spaces); ``length`` pins the byte count."""
    raw = _strict_fromhex(value) if isinstance(value, str) and len(value) <= 2 * MAX_HEX_BYTES else None
    if raw is None:
        raise CodecError(f"{what} must be lowercase hex", got=value if isinstance(value, str) else type(value).__name__)
    if length is not None and len(raw) != length:
        raise CodecError(f"{what} has the wrong length", expected=length, got=len(raw))
    return raw


def _obj(value: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"{what} must be a JSON object", got=type(value).__name__)
    keys = set(value)
    missing = [k for k in required if k not in keys]
    if missing:
        raise CodecError(f"{what} lacks keys", expected=sorted(required), got=sorted(keys))
    extra = keys - set(required) - set(optional)
    if extra:
        raise CodecError(f"{what} has unknown keys", expected=sorted(required + optional), got=sorted(extra))
    return value


def _int(value: Any, what: str) -> int:
    return check_uint(what, value)


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CodecError(f"{what} must be a string", got=type(value).__name__)
    return value


def _list(value: Any, what: str, maximum: int) -> list[Any]:
    if not isinstance(value, list):
        raise CodecError(f"{what} must be a JSON array", got=type(value).__name__)
    if len(value) > maximum:
        raise CodecError(f"{what} is too long", expected=f"<= {maximum}", got=len(value))
    return value


# --- validator sets ------------------------------------------------------------------------------


def validator_set_to_json(vs: ValidatorSet) -> dict[str, Any]:
    return {
        "validators": [
            {"name": v.name, "ed25519_pubkey": v.ed25519_pubkey.hex(), "eth_address": v.eth_address.hex(),
             "power": v.power}
            for v in vs.validators
        ],
        "hash": vs.hash.hex(),
    }


def validator_set_from_json(value: Any) -> ValidatorSet:
    obj = _obj(value, "validator set", ("validators",), ("hash",))
    validators = []
    for i, item in enumerate(_list(obj["validators"], "validators", MAX_VALIDATORS)):
        v = _obj(item, f"validator {i}", ("name", "ed25519_pubkey", "eth_address", "power"))
        validators.append(Validator(
            _str(v["name"], f"validator {i} name"),
            hex_bytes(v["ed25519_pubkey"], f"validator {i} ed25519_pubkey", 32),
            hex_bytes(v["eth_address"], f"validator {i} eth_address", 20),
            _int(v["power"], f"validator {i} power"),
        ))
    vs = ValidatorSet(tuple(validators))
    if "hash" in obj and hex_bytes(obj["hash"], "validator set hash", 32) != vs.hash:
        raise CodecError("validator set hash does not match its validators", expected=vs.hash.hex(), got=obj["hash"])
    return vs


# --- headers, commits ----------------------------------------------------------------------------

_HASH_FIELDS = ("last_block_hash", "data_hash", "state_root", "validators_hash", "next_validators_hash")


def header_to_json(h: RelayHeader) -> dict[str, Any]:
    out: dict[str, Any] = {"chain_id": h.chain_id, "height": h.height, "time_ms": h.time_ms}
    for name in _HASH_FIELDS:
        out[name] = getattr(h, name).hex()
    return out


def header_from_json(value: Any) -> RelayHeader:
    obj = _obj(value, "relay header", ("chain_id", "height", "time_ms", *_HASH_FIELDS))
    h = RelayHeader(
        ChainId(_str(obj["chain_id"], "header chain_id")),
        _int(obj["height"], "header height"),
        _int(obj["time_ms"], "header time_ms"),
        *(hex_bytes(obj[name], f"header {name}", 32) for name in _HASH_FIELDS),
    )
    h.validate()
    return h


def commit_signature_to_json(s: CommitSignature) -> dict[str, Any]:
    return {"validator_index": s.validator_index, "ed25519_sig": s.ed25519_sig.hex(),
            "secp256k1_sig": s.secp256k1_sig.hex()}


def commit_signature_from_json(value: Any) -> CommitSignature:
    obj = _obj(value, "commit signature", ("validator_index", "ed25519_sig"), ("secp256k1_sig",))
    secp = obj.get("secp256k1_sig", "")
    secp_raw = hex_bytes(secp, "secp256k1_sig")
    if len(secp_raw) not in (0, 65):
        raise CodecError("secp256k1_sig is empty or 65 bytes", got=len(secp_raw))
    return CommitSignature(
        _int(obj["validator_index"], "validator_index"),
        hex_bytes(obj["ed25519_sig"], "ed25519_sig", 64),
        secp_raw,
    )


def commit_to_json(c: RelayCommit) -> dict[str, Any]:
    return {"header": header_to_json(c.header), "round": c.round,
            "signatures": [commit_signature_to_json(s) for s in c.signatures]}


def commit_from_json(value: Any) -> RelayCommit:
    obj = _obj(value, "relay commit", ("header", "round", "signatures"))
    sigs = tuple(commit_signature_from_json(s) for s in _list(obj["signatures"], "signatures", MAX_SIGNATURES))
    return RelayCommit(header_from_json(obj["header"]), _int(obj["round"], "round"), sigs)


# --- proofs, certificates ------------------------------------------------------------------------


def proof_to_json(p: Proof) -> str:
    return p.encode().hex()


def proof_from_json(value: Any) -> Proof:
    return Proof.decode(hex_bytes(value, "proof"))


def certificate_to_json(cert: RelayCertificate) -> dict[str, Any]:
    return {"commit": commit_to_json(cert.commit), "key": cert.key.hex(),
            "value": None if cert.value is None else cert.value.hex(), "proof": proof_to_json(cert.proof)}


def certificate_from_json(value: Any) -> RelayCertificate:
    obj = _obj(value, "relay certificate", ("commit", "key", "value", "proof"))
    raw_value = obj["value"]
    return RelayCertificate(
        commit_from_json(obj["commit"]),
        hex_bytes(obj["key"], "certificate key"),
        None if raw_value is None else hex_bytes(raw_value, "certificate value"),
        proof_from_json(obj["proof"]),
    )


def certificate_batch_to_json(commit: RelayCommit, certs: list[RelayCertificate]) -> dict[str, Any]:
    """``certs`` (all of ``commit``) as one :class:`CertificateBatch`."""
    return {"commit": commit_to_json(commit),
            "records": [{"key": c.key.hex(), "value": None if c.value is None else c.value.hex(),
                         "proof": proof_to_json(c.proof)} for c in certs]}


def certificate_batch_from_json(value: Any) -> list[RelayCertificate]:
    """One certificate per record of a :class:`CertificateBatch` (1 .. :data:`MAX_BATCH_RECORDS`), in order."""
    obj = _obj(value, "certificate batch", ("commit", "records"))
    commit = commit_from_json(obj["commit"])
    records = _list(obj["records"], "certificate batch records", MAX_BATCH_RECORDS)
    if not records:
        raise CodecError("a certificate batch holds at least one record", got=0)
    out = []
    for i, item in enumerate(records):
        r = _obj(item, f"record {i}", ("key", "value", "proof"))
        raw_value = r["value"]
        out.append(RelayCertificate(commit, hex_bytes(r["key"], f"record {i} key"),
                                    None if raw_value is None else hex_bytes(raw_value, f"record {i} value"),
                                    proof_from_json(r["proof"])))
    return out
