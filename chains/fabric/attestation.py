"""Attestations: how the relay learns a Fabric park's state (SPEC.md §8.7). Pure: no I/O, no clock.

Fabric commits no state root, so state is proven by the bridge chaincode's peers: a relayer calls the chaincode's
query ``attest(key_hex, nonce_hex)`` on one peer of each organisation of the endorsement policy, and each peer's
signed proposal response is evidence of what that peer's **committed** state holds at ``key`` (hazard 1: never an
endorsed write read out of a block, whose validity flag no orderer signs).

**Statement.** The chaincode's response payload, canonical JSON (sorted keys, no spaces, ASCII)::

    {"chaincode":"bridge","channel":"park","key":"<hex>","nonce":"<hex>","time_ms":<int>,"v":1,"value":"<hex>"|null}

``key`` is the §5 path, ``value`` the stored bytes or ``null`` when the key is absent, ``time_ms`` the endorsing
peer's own chaincode clock (never a transaction timestamp, which its client chooses: hazard 2), ``nonce`` the
relayer's (opaque; at most 64 bytes). Hex is lowercase. :meth:`Statement.decode` accepts exactly the bytes
:meth:`Statement.encode` makes.

**Proof bundle** (the ``proof`` bytes of ``verify_membership`` and its kin)::

    0x01 || u8 n || n x (u32be length || encoded peer.ProposalResponse)

with ``1 <= n <= 16``, each response at most 64 KiB and nothing after the last (else ``codec.invalid``).

**Verification** (:func:`verify_attestation`), each response in turn, then the set:

1. it decodes; its ``payload`` (``ProposalResponsePayload``) holds a ``ChaincodeAction`` of chaincode ``chaincode``
   whose signed ``response`` has status 200 (the response's unsigned top-level ``response`` field is never read);
   the response payload is a :class:`Statement` of this channel, chaincode, key and value (``proof.fabric.statement``);
2. its ``time_ms`` is in ``[now_ms - max_attestation_age_ms, now_ms + max_clock_skew_ms]`` (``proof.fabric.freshness``,
   hazard 3: an old attestation of absence is refused once it is older than the window);
3. the endorser is a valid ``peer`` of an application organisation of the tracked channel config, not revoked, within
   its validity period at ``now_ms`` (``proof.fabric.endorser``), and of an organisation of the policy, once
   (``proof.fabric.policy``);
4. the endorsement signature (ECDSA P-256, low S) over ``payload || endorser`` verifies (``signature.invalid``);

then every organisation of the policy has endorsed (``proof.fabric.policy``) and all statements agree on their nonce.
The policy is the bridge chaincode's: ``AND`` over the policy organisations, one peer of each
(``chains.fabric.consts.ENDORSEMENT_POLICY``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from chains.fabric.config import ChannelConfig
from chains.fabric.errors import AttestationFreshnessError, EndorsementPolicyError, EndorserError, StatementError
from chains.fabric.proto import (
    ChaincodeAction,
    ProposalResponse,
    ProposalResponsePayload,
    SerializedIdentity,
)
from protocol.errors import CodecError, SignatureError

__all__ = [
    "BUNDLE_VERSION",
    "MAX_ENDORSEMENTS",
    "MAX_KEY_BYTES",
    "MAX_NONCE_BYTES",
    "MAX_STATEMENT_BYTES",
    "MAX_VALUE_BYTES",
    "STATEMENT_VERSION",
    "AttestationPolicy",
    "Statement",
    "decode_bundle",
    "encode_bundle",
    "verify_attestation",
]

STATEMENT_VERSION: Final = 1
"""``v`` of a statement."""
BUNDLE_VERSION: Final = 1
"""First byte of a proof bundle."""
MAX_STATEMENT_BYTES: Final = 4096
"""Longest statement."""
MAX_KEY_BYTES: Final = 512
"""Longest attested key (a §5 path)."""
MAX_VALUE_BYTES: Final = 1024
"""Longest attested value (commitments and receipts are 32 bytes)."""
MAX_NONCE_BYTES: Final = 64
"""Longest nonce."""
MAX_ENDORSEMENTS: Final = 16
"""Most proposal responses in one bundle."""
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Largest proposal response in a bundle."""
MAX_TIME_MS: Final = 2**63 - 1
_STATEMENT_KEYS: Final = ("chaincode", "channel", "key", "nonce", "time_ms", "v", "value")
_OK: Final = 200


def _hex(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * limit or len(value) % 2 or value != value.lower():
        raise CodecError(f"statement {what}: lowercase hex of at most {limit} bytes", got=value)
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise CodecError(f"statement {what}: not hex", got=value) from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise CodecError("statement: duplicate key", got=k)
        out[k] = v
    return out


@dataclass(frozen=True, slots=True)
class Statement:
    """What one peer's bridge chaincode says it holds at ``key`` (module docstring)."""

    chaincode: str
    """The chaincode that answered (``bridge``)."""
    channel: str
    """The channel it answered on."""
    key: bytes
    """The state key (a §5 path)."""
    nonce: bytes
    """The relayer's nonce, echoed."""
    time_ms: int
    """The endorsing peer's chaincode clock when it answered, ms since the epoch."""
    value: bytes | None
    """The committed value at ``key``, ``None`` if absent."""

    def encode(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, ASCII."""
        return json.dumps({"chaincode": self.chaincode, "channel": self.channel, "key": self.key.hex(),
                           "nonce": self.nonce.hex(), "time_ms": self.time_ms, "v": STATEMENT_VERSION,
                           "value": None if self.value is None else self.value.hex()},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> Statement:
        """Strict: exactly the bytes :meth:`encode` would make (``codec.invalid`` otherwise)."""
        if not isinstance(raw, bytes) or not 0 < len(raw) <= MAX_STATEMENT_BYTES:
            raise CodecError("statement: 1..4096 bytes expected", got=len(raw) if isinstance(raw, bytes) else None)
        if not raw.isascii():
            raise CodecError("statement: not ASCII")
        try:
            obj = json.loads(raw, object_pairs_hook=_no_duplicates, parse_float=_refuse, parse_constant=_refuse)
        except (ValueError, RecursionError) as exc:
            raise CodecError(f"statement: not JSON ({exc})") from exc
        if not isinstance(obj, dict) or tuple(sorted(obj)) != _STATEMENT_KEYS:
            raise CodecError("statement: wrong keys", expected=list(_STATEMENT_KEYS),
                             got=sorted(obj) if isinstance(obj, dict) else type(obj).__name__)
        if obj["v"] != STATEMENT_VERSION or isinstance(obj["v"], bool):
            raise CodecError("statement: unknown version", expected=STATEMENT_VERSION, got=obj["v"])
        t = obj["time_ms"]
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TIME_MS:
            raise CodecError("statement: time_ms out of range", got=t)
        for name in ("chaincode", "channel"):
            if not isinstance(obj[name], str) or not 0 < len(obj[name]) <= 256:
                raise CodecError(f"statement: {name} must be a string of 1..256 chars", got=obj[name])
        value = None if obj["value"] is None else _hex(obj["value"], "value", MAX_VALUE_BYTES)
        st = cls(obj["chaincode"], obj["channel"], _hex(obj["key"], "key", MAX_KEY_BYTES),
                 _hex(obj["nonce"], "nonce", MAX_NONCE_BYTES), t, value)
        if st.encode() != raw:
            raise CodecError("statement: not in canonical form (sorted keys, no spaces, ASCII, lowercase hex)")
        return st


def _refuse(text: str) -> Any:
    raise ValueError(f"number {text!r} is not an integer")


# --- the proof bundle ----------------------------------------------------------------------------------------


def encode_bundle(responses: Sequence[bytes]) -> bytes:
    """The proof bytes of a list of encoded proposal responses (module docstring)."""
    if not 1 <= len(responses) <= MAX_ENDORSEMENTS:
        raise CodecError("a bundle holds 1..16 proposal responses", got=len(responses))
    out = bytearray([BUNDLE_VERSION, len(responses)])
    for r in responses:
        if len(r) > MAX_RESPONSE_BYTES:
            raise CodecError("proposal response too large", expected=f"<= {MAX_RESPONSE_BYTES}", got=len(r))
        out += struct.pack(">I", len(r)) + r
    return bytes(out)


def decode_bundle(raw: bytes) -> tuple[bytes, ...]:
    """The encoded proposal responses of a proof bundle, strictly (module docstring)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise CodecError("a Fabric proof is bytes", got=type(raw).__name__)
    raw = bytes(raw)
    if len(raw) < 2 or raw[0] != BUNDLE_VERSION:
        raise CodecError("not a Fabric attestation bundle", expected=f"version {BUNDLE_VERSION}",
                         got=raw[:1].hex() or None)
    n = raw[1]
    if not 1 <= n <= MAX_ENDORSEMENTS:
        raise CodecError("a bundle holds 1..16 proposal responses", got=n)
    i, out = 2, []
    for _ in range(n):
        if len(raw) - i < 4:
            raise CodecError("truncated bundle")
        (length,) = struct.unpack_from(">I", raw, i)
        i += 4
        if length > MAX_RESPONSE_BYTES or length > len(raw) - i:
            raise CodecError("bundle entry too long or truncated",
                             expected=f"<= {min(MAX_RESPONSE_BYTES, len(raw) - i)}", got=length)
        out.append(raw[i:i + length])
        i += length
    if i != len(raw):
        raise CodecError("bytes after the last proposal response", got=len(raw) - i)
    return tuple(out)


# --- verification ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    """What a bundle must satisfy besides its statement: whose endorsements count, and how fresh."""

    channel_id: str
    """The channel (its name in Fabric)."""
    chaincode: str
    """The bridge chaincode's name."""
    orgs: tuple[str, ...]
    """MSP ids of the endorsement policy: one valid peer of each is required (AND), none from elsewhere counts."""
    max_age_ms: int
    """Oldest acceptable statement, relative to the relay's time."""
    max_skew_ms: int
    """How far ahead of the relay's time a statement's clock may be."""


def verify_attestation(bundle: bytes, config: ChannelConfig, policy: AttestationPolicy, key: bytes,
                       value: bytes | None, now_ms: int) -> tuple[Statement, ...]:
    """The statements of ``bundle`` if it proves ``key -> value`` (``None``: absent) at relay time ``now_ms`` under
    ``config`` and ``policy`` (module docstring); the first failing check's typed error otherwise."""
    responses = decode_bundle(bundle)
    statements: list[Statement] = []
    seen_orgs: set[str] = set()
    seen_endorsers: set[bytes] = set()
    for index, raw in enumerate(responses):
        where = f"attestation {index} of {len(responses)} for {key!r}"
        resp = ProposalResponse.decode(raw)
        if resp.endorsement is None:
            raise EndorsementPolicyError(f"{where} carries no endorsement")
        action = ChaincodeAction.decode(ProposalResponsePayload.decode(resp.payload).extension)
        cc_name = None if action.chaincode_id is None else action.chaincode_id.name
        if cc_name != policy.chaincode:
            raise StatementError(f"{where} is a response of another chaincode", expected=policy.chaincode, got=cc_name)
        if action.response is None or action.response.status != _OK:
            raise StatementError(f"{where}: the chaincode did not answer 200", expected=_OK,
                                 got=None if action.response is None else action.response.status)
        st = Statement.decode(action.response.payload)
        _check_statement(st, policy, key, value, where)
        if st.time_ms < now_ms - policy.max_age_ms:
            raise AttestationFreshnessError(f"{where} is stale: older than max_attestation_age_ms",
                                            expected=f">= {now_ms - policy.max_age_ms}", got=st.time_ms)
        if st.time_ms > now_ms + policy.max_skew_ms:
            raise AttestationFreshnessError(f"{where} is dated ahead of the relay's time beyond max_clock_skew_ms",
                                            expected=f"<= {now_ms + policy.max_skew_ms}", got=st.time_ms)
        endorser = resp.endorsement.endorser
        ident = SerializedIdentity.decode(endorser)
        if ident.mspid not in policy.orgs:
            raise EndorsementPolicyError(f"{where} is endorsed by an organisation outside the endorsement policy",
                                         expected=list(policy.orgs), got=ident.mspid)
        if endorser in seen_endorsers:
            raise EndorsementPolicyError(f"{where} repeats an endorser", got=ident.mspid)
        msp = config.application_msps.get(ident.mspid)
        if msp is None:
            raise EndorserError(f"{where}: {ident.mspid} is not an application organisation of channel "
                                f"{config.channel_id} (config sequence {config.sequence})",
                                expected=sorted(config.application_msps), got=ident.mspid)
        from chains.fabric.msp import IdentityRefused, Msp, verify_signature  # loaded with the config (config.py)

        try:
            valid = msp.validate(ident, "peer")
            Msp.check_time(valid, now_ms)
        except IdentityRefused as exc:
            raise EndorserError(f"{where}: endorser refused: {exc.reason}", expected=exc.expected,
                                got=exc.got) from exc
        if not verify_signature(valid.public_key, resp.endorsement.signature, resp.payload + endorser):
            raise SignatureError(f"{where}: the endorsement signature of {ident.mspid} peer "
                                 f"{valid.common_name!r} does not verify")
        seen_endorsers.add(endorser)
        seen_orgs.add(ident.mspid)
        statements.append(st)
    missing = [org for org in policy.orgs if org not in seen_orgs]
    if missing:
        raise EndorsementPolicyError(f"attestation of {key!r} lacks endorsements required by the policy",
                                     expected=list(policy.orgs), got=sorted(seen_orgs))
    nonces = {st.nonce for st in statements}
    if len(nonces) != 1:
        raise StatementError(f"the statements attesting {key!r} disagree on their nonce",
                             got=sorted(n.hex() for n in nonces))
    return tuple(statements)


def _check_statement(st: Statement, policy: AttestationPolicy, key: bytes, value: bytes | None, where: str) -> None:
    if st.channel != policy.channel_id:
        raise StatementError(f"{where} is of another channel", expected=policy.channel_id, got=st.channel)
    if st.chaincode != policy.chaincode:
        raise StatementError(f"{where} names another chaincode", expected=policy.chaincode, got=st.chaincode)
    if st.key != key:
        raise StatementError(f"{where} attests another key", expected=key.hex(), got=st.key.hex())
    if st.value != value:
        raise StatementError(f"{where} attests another value", expected=None if value is None else value.hex(),
                             got=None if st.value is None else st.value.hex())
