"""The ABCI 2.0 messages CometBFT v0.38 exchanges with an application over its socket, as typed, frozen dataclasses
with a strict protobuf codec (``encode()`` / ``decode()``). Pure: no I/O.

**Field numbers** are CometBFT v0.38.25's (Go module ``github.com/cometbft/cometbft@v0.38.25``):
``proto/tendermint/abci/types.proto`` (Request/Response and every ``Request*``/``Response*``, CommitInfo,
ExtendedCommitInfo, VoteInfo, ExtendedVoteInfo, Validator, ValidatorUpdate, Misbehavior, Event, EventAttribute,
ExecTxResult, Snapshot), ``proto/tendermint/crypto/keys.proto`` (PublicKey), ``proto/tendermint/crypto/proof.proto``
(ProofOp, ProofOps), ``proto/tendermint/types/params.proto`` (ConsensusParams and its parts),
``proto/tendermint/types/validator.proto`` (BlockIDFlag) and ``google/protobuf/{timestamp,duration}.proto``.
This module is our own subset of those files, not a copy; the wire layer is :mod:`chains.common.protowire`.

**Byte-exact with Go.** ``encode()`` writes what CometBFT's gogoproto code writes for the same values: fields in
ascending number; proto3 defaults omitted; a sub-message that gogoproto declares ``nullable = false`` (every
Timestamp, CommitInfo, Validator, a ValidatorUpdate's key, ...) always written, even empty; a nullable one
(``Optional`` here) written whenever present; repeated scalars packed. So ``decode(x).encode() == x`` for every
message CometBFT sends (checked against captured frames and against Go-encoded vectors in ``tests/unit/abci``).

**Strictness.** On top of :mod:`chains.common.protowire` (minimal varints, wire types checked, a singular field
once, UTF-8 strings, ranged integers), decoding refuses with :class:`~protocol.errors.CodecError`:

* an unknown field in any message: the peer is pinned to v0.38.25, whose encoder writes none, and skipping one
  would break the byte-exact round trip;
* an enum value the schema does not define (CheckTxType, BlockIDFlag, MisbehaviorType, the result/status enums);
* a Timestamp outside 0001-01-01..9999-12-31 or with nanos outside ``[0, 1e9)`` (what Go's ``time`` accepts), a
  Duration with nanos outside ``(-1e9, 1e9)`` or of another sign than its seconds;
* a PublicKey with no key or both keys set;
* a ``Request``/``Response`` envelope that does not hold exactly one known variant (:class:`UnknownRequestError` for
  a request variant this schema does not know, e.g. the removed BeginBlock = 7);
* anything over :data:`MAX_MESSAGE_BYTES`, and a repeated field over :data:`MAX_REPEATED` elements.
"""

# The field helpers (_m, _om, _enum, ...) return dataclasses.field(...) specifiers, which ruff's RUF009 cannot see
# through (pyproject's extend-immutable-calls does the same for chains.common.kind.param).
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from chains.common import protowire as pw
from protocol.errors import CodecError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REPEATED",
    "REQUEST_FIELDS",
    "RESPONSE_FIELDS",
    "ABCIParams",
    "ApplySnapshotChunkResult",
    "BlockIDFlag",
    "BlockParams",
    "CheckTxType",
    "CommitInfo",
    "ConsensusParams",
    "Duration",
    "Event",
    "EventAttribute",
    "EvidenceParams",
    "ExecTxResult",
    "ExtendedCommitInfo",
    "ExtendedVoteInfo",
    "Message",
    "Misbehavior",
    "MisbehaviorType",
    "OfferSnapshotResult",
    "ProofOp",
    "ProofOps",
    "ProposalStatus",
    "PublicKey",
    "Request",
    "RequestApplySnapshotChunk",
    "RequestCheckTx",
    "RequestCommit",
    "RequestEcho",
    "RequestExtendVote",
    "RequestFinalizeBlock",
    "RequestFlush",
    "RequestInfo",
    "RequestInitChain",
    "RequestListSnapshots",
    "RequestLoadSnapshotChunk",
    "RequestOfferSnapshot",
    "RequestPrepareProposal",
    "RequestProcessProposal",
    "RequestQuery",
    "RequestVerifyVoteExtension",
    "Response",
    "ResponseApplySnapshotChunk",
    "ResponseCheckTx",
    "ResponseCommit",
    "ResponseEcho",
    "ResponseException",
    "ResponseExtendVote",
    "ResponseFinalizeBlock",
    "ResponseFlush",
    "ResponseInfo",
    "ResponseInitChain",
    "ResponseListSnapshots",
    "ResponseLoadSnapshotChunk",
    "ResponseOfferSnapshot",
    "ResponsePrepareProposal",
    "ResponseProcessProposal",
    "ResponseQuery",
    "ResponseVerifyVoteExtension",
    "Snapshot",
    "Timestamp",
    "UnknownRequestError",
    "Validator",
    "ValidatorParams",
    "ValidatorUpdate",
    "VerifyStatus",
    "VersionParams",
    "VoteInfo",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "request_name",
]

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Largest encoded ABCI message decoded (64 MiB). The biggest one is RequestFinalizeBlock/RequestPrepareProposal,
whose transactions are bounded by the consensus parameter ``block.max_bytes`` (CometBFT's default 22 020 096 bytes =
21 MiB; its hard ceiling is 100 MiB) plus the commit info (~100 bytes a validator). CometBFT itself reads up to
``math.MaxInt32``; a chain that raises ``block.max_bytes`` above ~60 MiB must raise this bound too
(:class:`~relay.chain.abci.server.AbciServer` takes it as ``max_message_bytes``)."""
MAX_REPEATED: Final = 1 << 20
"""Most elements of one repeated field (transactions in a block, votes, events): a guard beside the byte bound."""


class UnknownRequestError(CodecError):
    """A ``Request`` whose variant this schema does not know (a removed one such as BeginBlock = 7, or a newer one):
    never passed to the application."""

    def __init__(self, field_number: int) -> None:
        self.field_number = field_number
        """The envelope's field number."""
        super().__init__("Request: unknown request type", expected=sorted(REQUEST_FIELDS), got=field_number)


# --- enums -----------------------------------------------------------------------------------------------------


class CheckTxType(enum.IntEnum):
    """``tendermint.abci.CheckTxType``."""

    NEW = 0
    RECHECK = 1


class BlockIDFlag(enum.IntEnum):
    """``tendermint.types.BlockIDFlag``: what a validator's vote in a commit was for."""

    UNKNOWN = 0
    ABSENT = 1
    COMMIT = 2
    NIL = 3


class MisbehaviorType(enum.IntEnum):
    """``tendermint.abci.MisbehaviorType``."""

    UNKNOWN = 0
    DUPLICATE_VOTE = 1
    LIGHT_CLIENT_ATTACK = 2


class OfferSnapshotResult(enum.IntEnum):
    """``ResponseOfferSnapshot.Result``."""

    UNKNOWN = 0
    ACCEPT = 1
    ABORT = 2
    REJECT = 3
    REJECT_FORMAT = 4
    REJECT_SENDER = 5


class ApplySnapshotChunkResult(enum.IntEnum):
    """``ResponseApplySnapshotChunk.Result``."""

    UNKNOWN = 0
    ACCEPT = 1
    ABORT = 2
    RETRY = 3
    RETRY_SNAPSHOT = 4
    REJECT_SNAPSHOT = 5


class ProposalStatus(enum.IntEnum):
    """``ResponseProcessProposal.ProposalStatus``."""

    UNKNOWN = 0
    ACCEPT = 1
    REJECT = 2


class VerifyStatus(enum.IntEnum):
    """``ResponseVerifyVoteExtension.VerifyStatus``."""

    UNKNOWN = 0
    ACCEPT = 1
    REJECT = 2


# --- the message machinery -------------------------------------------------------------------------------------

_MSG: Final = "message"
"""Field kind of a sub-message (on the wire: length-delimited bytes)."""


@dataclass(frozen=True, slots=True)
class _FieldInfo:
    """How one dataclass attribute maps to one protobuf field."""

    attr: str
    num: int
    kind: str
    """A :mod:`chains.common.protowire` kind, or :data:`_MSG`."""
    repeated: bool
    optional: bool
    """Has presence: a nullable sub-message or a oneof member, ``None`` when absent."""
    sub: type[Message] | None
    enum: type[enum.IntEnum] | None


@dataclass(frozen=True, slots=True)
class _Meta:
    fields: tuple[_FieldInfo, ...]
    spec: pw.Spec


def _field(num: int, kind: str, *, repeated: bool = False, optional: bool = False, sub: type[Message] | None = None,
           enum_type: type[enum.IntEnum] | None = None) -> Any:
    meta = {"abci": (num, kind, repeated, optional, sub, enum_type)}
    if repeated:
        return dataclasses.field(default=(), metadata=meta)
    if optional:
        return dataclasses.field(default=None, metadata=meta)
    if sub is not None:
        return dataclasses.field(default_factory=sub, metadata=meta)
    if enum_type is not None:
        return dataclasses.field(default=enum_type(0), metadata=meta)
    default: object = {pw.BYTES: b"", pw.STRING: "", pw.BOOL: False}.get(kind, 0)
    return dataclasses.field(default=default, metadata=meta)


def _f(num: int, kind: str) -> Any:
    """A singular scalar field (proto3 default when absent)."""
    return _field(num, kind)


def _rep(num: int, kind: str) -> Any:
    """A repeated scalar field, as a tuple."""
    return _field(num, kind, repeated=True)


def _enum(num: int, enum_type: type[enum.IntEnum]) -> Any:
    """An enum field: values outside ``enum_type`` are refused."""
    return _field(num, pw.INT32, enum_type=enum_type)


def _m(num: int, sub: type[Message]) -> Any:
    """A non-nullable sub-message: always present, always written (gogoproto ``nullable = false``)."""
    return _field(num, _MSG, sub=sub)


def _om(num: int, sub: type[Message]) -> Any:
    """A nullable sub-message: ``None`` when absent, written whenever present (even empty)."""
    return _field(num, _MSG, optional=True, sub=sub)


def _rm(num: int, sub: type[Message]) -> Any:
    """A repeated sub-message, as a tuple."""
    return _field(num, _MSG, repeated=True, sub=sub)


def _ob(num: int) -> Any:
    """A oneof ``bytes`` member: ``None`` when not the one set, written whenever set (even empty)."""
    return _field(num, pw.BYTES, optional=True)


_M = TypeVar("_M", bound="Message")


def _message(name: str) -> Callable[[type[_M]], type[_M]]:
    """Registers a dataclass's fields (from their :func:`_field` metadata) as the protobuf message ``name``."""

    def wrap(cls: type[_M]) -> type[_M]:
        infos = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            num, kind, repeated, optional, sub, enum_type = f.metadata["abci"]
            infos.append(_FieldInfo(f.name, num, kind, repeated, optional, sub, enum_type))
        infos.sort(key=lambda i: i.num)
        table = {i.num: (i.attr, pw.BYTES if i.kind == _MSG else i.kind, i.repeated) for i in infos}
        cls._meta = _Meta(tuple(infos), pw.Spec(name, table, allow_unknown=False))
        return cls

    return wrap


class Message:
    """Base of every message: ``encode()`` and ``decode()`` driven by the fields' metadata."""

    __slots__ = ()
    _meta: ClassVar[_Meta]

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        """The message encoded in ``raw``, strictly (module docstring)."""
        meta = cls._meta
        d = pw.decode(raw, meta.spec, max_bytes=MAX_MESSAGE_BYTES, max_repeated=MAX_REPEATED)
        kwargs: dict[str, object] = {}
        for fi in meta.fields:
            if fi.attr not in d:
                continue
            value = d[fi.attr]
            if fi.repeated:
                assert isinstance(value, list)
                kwargs[fi.attr] = tuple(_convert(fi, v, meta.spec.name) for v in value)
            else:
                kwargs[fi.attr] = _convert(fi, value, meta.spec.name)
        obj = cls(**kwargs)
        obj._check()
        return obj

    def _check(self) -> None:
        """Refuses values the schema's types cannot hold (a hook for messages with cross-field rules)."""

    def encode(self) -> bytes:
        """The protobuf encoding, byte for byte as CometBFT's Go code writes it (module docstring)."""
        w = pw.Writer()
        for fi in self._meta.fields:
            value = getattr(self, fi.attr)
            if fi.kind == _MSG:
                if fi.repeated:
                    w.each(fi.num, (m.encode() for m in value))
                elif value is not None:
                    w.raw(fi.num, value.encode(), keep_empty=True)
            elif fi.repeated:
                if fi.kind == pw.STRING:
                    w.texts(fi.num, value)
                elif fi.kind == pw.BYTES:
                    w.each(fi.num, value)
                else:
                    w.packed(fi.num, (int(v) for v in value))
            elif fi.optional:
                if value is not None:
                    w.raw(fi.num, value, keep_empty=True)
            elif fi.kind == pw.STRING:
                w.text(fi.num, value)
            elif fi.kind == pw.BYTES:
                w.raw(fi.num, value)
            elif fi.kind == pw.BOOL:
                w.boolean(fi.num, value)
            else:
                w.uint(fi.num, int(value))
        return w.done()


def _convert(fi: _FieldInfo, value: object, msg: str) -> object:
    if fi.sub is not None:
        assert isinstance(value, bytes)
        return fi.sub.decode(value)
    if fi.enum is not None:
        assert isinstance(value, int)
        try:
            return fi.enum(value)
        except ValueError as exc:
            raise CodecError(f"{msg}.{fi.attr}: unknown {fi.enum.__name__} value", expected=[int(e) for e in fi.enum],
                             got=value) from exc
    return value


# --- google.protobuf, tendermint.crypto, tendermint.types ------------------------------------------------------

_MIN_SECONDS: Final = -62_135_596_800
"""0001-01-01T00:00:00Z, the earliest Timestamp (google/protobuf/timestamp.proto)."""
_MAX_SECONDS: Final = 253_402_300_799
"""9999-12-31T23:59:59Z, the latest."""
_NANOS: Final = 1_000_000_000


@_message("google.protobuf.Timestamp")
@dataclass(frozen=True, slots=True)
class Timestamp(Message):
    """``google.protobuf.Timestamp``: a UTC instant (CometBFT's block and genesis times)."""

    seconds: int = _f(1, pw.INT64)
    """Seconds since the Unix epoch."""
    nanos: int = _f(2, pw.INT32)
    """Nanoseconds within the second, ``[0, 1e9)``."""

    def _check(self) -> None:
        if not _MIN_SECONDS <= self.seconds <= _MAX_SECONDS:
            raise CodecError("Timestamp.seconds out of range", expected=f"[{_MIN_SECONDS}, {_MAX_SECONDS}]",
                             got=self.seconds)
        if not 0 <= self.nanos < _NANOS:
            raise CodecError("Timestamp.nanos out of range", expected="[0, 1e9)", got=self.nanos)

    @property
    def unix_ns(self) -> int:
        """The instant in nanoseconds since the Unix epoch."""
        return self.seconds * _NANOS + self.nanos


@_message("google.protobuf.Duration")
@dataclass(frozen=True, slots=True)
class Duration(Message):
    """``google.protobuf.Duration``."""

    seconds: int = _f(1, pw.INT64)
    """Whole seconds."""
    nanos: int = _f(2, pw.INT32)
    """Nanoseconds, ``(-1e9, 1e9)``, of the sign of ``seconds``."""

    def _check(self) -> None:
        if not -_NANOS < self.nanos < _NANOS or (self.seconds > 0 > self.nanos) or (self.seconds < 0 < self.nanos):
            raise CodecError("Duration.nanos out of range", expected="(-1e9, 1e9), sign of seconds", got=self.nanos)


@_message("tendermint.crypto.PublicKey")
@dataclass(frozen=True, slots=True)
class PublicKey(Message):
    """``tendermint.crypto.PublicKey``: a oneof; exactly one of the two keys is set."""

    ed25519: bytes | None = _ob(1)
    """32-byte Ed25519 public key."""
    secp256k1: bytes | None = _ob(2)
    """33-byte compressed secp256k1 public key."""

    def _check(self) -> None:
        if (self.ed25519 is None) == (self.secp256k1 is None):
            raise CodecError("PublicKey: exactly one key must be set",
                             got="both" if self.ed25519 is not None else "none")


@_message("tendermint.crypto.ProofOp")
@dataclass(frozen=True, slots=True)
class ProofOp(Message):
    """``tendermint.crypto.ProofOp``: one step of a Merkle proof (its format is the application's)."""

    type: str = _f(1, pw.STRING)
    """The operation's type name."""
    key: bytes = _f(2, pw.BYTES)
    """The key proved at this step."""
    data: bytes = _f(3, pw.BYTES)
    """The encoded proof."""


@_message("tendermint.crypto.ProofOps")
@dataclass(frozen=True, slots=True)
class ProofOps(Message):
    """``tendermint.crypto.ProofOps``: a chain of proof steps."""

    ops: tuple[ProofOp, ...] = _rm(1, ProofOp)
    """The steps, leaf first."""


@_message("tendermint.types.BlockParams")
@dataclass(frozen=True, slots=True)
class BlockParams(Message):
    """``tendermint.types.BlockParams``."""

    max_bytes: int = _f(1, pw.INT64)
    """Largest block in bytes (-1: 100 MiB)."""
    max_gas: int = _f(2, pw.INT64)
    """Most gas per block (-1: unlimited)."""


@_message("tendermint.types.EvidenceParams")
@dataclass(frozen=True, slots=True)
class EvidenceParams(Message):
    """``tendermint.types.EvidenceParams``."""

    max_age_num_blocks: int = _f(1, pw.INT64)
    """Oldest evidence accepted, in blocks."""
    max_age_duration: Duration = _m(2, Duration)
    """Oldest evidence accepted, in time."""
    max_bytes: int = _f(3, pw.INT64)
    """Most evidence bytes per block."""


@_message("tendermint.types.ValidatorParams")
@dataclass(frozen=True, slots=True)
class ValidatorParams(Message):
    """``tendermint.types.ValidatorParams``."""

    pub_key_types: tuple[str, ...] = _rep(1, pw.STRING)
    """Key types validators may use (``"ed25519"``, ``"secp256k1"``)."""


@_message("tendermint.types.VersionParams")
@dataclass(frozen=True, slots=True)
class VersionParams(Message):
    """``tendermint.types.VersionParams``."""

    app: int = _f(1, pw.UINT64)
    """The application's protocol version."""


@_message("tendermint.types.ABCIParams")
@dataclass(frozen=True, slots=True)
class ABCIParams(Message):
    """``tendermint.types.ABCIParams``."""

    vote_extensions_enable_height: int = _f(1, pw.INT64)
    """First height whose precommits carry vote extensions (0: never)."""


@_message("tendermint.types.ConsensusParams")
@dataclass(frozen=True, slots=True)
class ConsensusParams(Message):
    """``tendermint.types.ConsensusParams``: every part optional (an update names only what changes)."""

    block: BlockParams | None = _om(1, BlockParams)
    """Block size limits."""
    evidence: EvidenceParams | None = _om(2, EvidenceParams)
    """Evidence age and size limits."""
    validator: ValidatorParams | None = _om(3, ValidatorParams)
    """Allowed validator key types."""
    version: VersionParams | None = _om(4, VersionParams)
    """App version."""
    abci: ABCIParams | None = _om(5, ABCIParams)
    """Vote extensions."""


# --- tendermint.abci: shared messages --------------------------------------------------------------------------


@_message("tendermint.abci.Validator")
@dataclass(frozen=True, slots=True)
class Validator(Message):
    """``tendermint.abci.Validator``: a validator as named in commit info (field 2 is unused)."""

    address: bytes = _f(1, pw.BYTES)
    """First 20 bytes of SHA-256 of its public key."""
    power: int = _f(3, pw.INT64)
    """Voting power."""


@_message("tendermint.abci.ValidatorUpdate")
@dataclass(frozen=True, slots=True)
class ValidatorUpdate(Message):
    """``tendermint.abci.ValidatorUpdate``: a validator's new power (0 removes it)."""

    pub_key: PublicKey = _m(1, PublicKey)
    """Its consensus key."""
    power: int = _f(2, pw.INT64)
    """New voting power."""


@_message("tendermint.abci.VoteInfo")
@dataclass(frozen=True, slots=True)
class VoteInfo(Message):
    """``tendermint.abci.VoteInfo``: one validator's precommit in a commit."""

    validator: Validator = _m(1, Validator)
    """Who."""
    block_id_flag: BlockIDFlag = _enum(3, BlockIDFlag)
    """What its vote was for."""


@_message("tendermint.abci.ExtendedVoteInfo")
@dataclass(frozen=True, slots=True)
class ExtendedVoteInfo(Message):
    """``tendermint.abci.ExtendedVoteInfo``: a precommit with its vote extension (PrepareProposal only)."""

    validator: Validator = _m(1, Validator)
    """Who."""
    vote_extension: bytes = _f(3, pw.BYTES)
    """The application's extension (from ExtendVote)."""
    extension_signature: bytes = _f(4, pw.BYTES)
    """The validator's signature over the extension (CometBFT checked it)."""
    block_id_flag: BlockIDFlag = _enum(5, BlockIDFlag)
    """What its vote was for."""


@_message("tendermint.abci.CommitInfo")
@dataclass(frozen=True, slots=True)
class CommitInfo(Message):
    """``tendermint.abci.CommitInfo``: the votes of the previous block's commit."""

    round: int = _f(1, pw.INT32)
    """Round of the commit."""
    votes: tuple[VoteInfo, ...] = _rm(2, VoteInfo)
    """One per validator of the previous height's set, in its order."""


@_message("tendermint.abci.ExtendedCommitInfo")
@dataclass(frozen=True, slots=True)
class ExtendedCommitInfo(Message):
    """``tendermint.abci.ExtendedCommitInfo``: CommitInfo with vote extensions."""

    round: int = _f(1, pw.INT32)
    """Round of the commit."""
    votes: tuple[ExtendedVoteInfo, ...] = _rm(2, ExtendedVoteInfo)
    """One per validator of the previous height's set, in its order."""


@_message("tendermint.abci.Misbehavior")
@dataclass(frozen=True, slots=True)
class Misbehavior(Message):
    """``tendermint.abci.Misbehavior``: evidence CometBFT committed."""

    type: MisbehaviorType = _enum(1, MisbehaviorType)
    """Kind of misbehaviour."""
    validator: Validator = _m(2, Validator)
    """The offender."""
    height: int = _f(3, pw.INT64)
    """Height of the offence."""
    time: Timestamp = _m(4, Timestamp)
    """Block time at that height."""
    total_voting_power: int = _f(5, pw.INT64)
    """Total voting power of the set at that height."""


@_message("tendermint.abci.EventAttribute")
@dataclass(frozen=True, slots=True)
class EventAttribute(Message):
    """``tendermint.abci.EventAttribute``."""

    key: str = _f(1, pw.STRING)
    """Attribute name."""
    value: str = _f(2, pw.STRING)
    """Attribute value."""
    index: bool = _f(3, pw.BOOL)
    """Whether CometBFT's indexer indexes it."""


@_message("tendermint.abci.Event")
@dataclass(frozen=True, slots=True)
class Event(Message):
    """``tendermint.abci.Event``: a typed set of attributes an application emits."""

    type: str = _f(1, pw.STRING)
    """Event type."""
    attributes: tuple[EventAttribute, ...] = _rm(2, EventAttribute)
    """Attributes, in order."""


@_message("tendermint.abci.ExecTxResult")
@dataclass(frozen=True, slots=True)
class ExecTxResult(Message):
    """``tendermint.abci.ExecTxResult``: the outcome of one transaction of a block."""

    code: int = _f(1, pw.UINT32)
    """0: success; anything else: failed (the transaction stays in the block)."""
    data: bytes = _f(2, pw.BYTES)
    """Result bytes (hashed into the next header's ``last_results_hash``)."""
    log: str = _f(3, pw.STRING)
    """Non-deterministic log."""
    info: str = _f(4, pw.STRING)
    """Non-deterministic info."""
    gas_wanted: int = _f(5, pw.INT64)
    """Gas requested."""
    gas_used: int = _f(6, pw.INT64)
    """Gas consumed."""
    events: tuple[Event, ...] = _rm(7, Event)
    """Events (not hashed)."""
    codespace: str = _f(8, pw.STRING)
    """Namespace of ``code``."""


@_message("tendermint.abci.Snapshot")
@dataclass(frozen=True, slots=True)
class Snapshot(Message):
    """``tendermint.abci.Snapshot``: a state-sync snapshot's descriptor."""

    height: int = _f(1, pw.UINT64)
    """Height of the snapshot."""
    format: int = _f(2, pw.UINT32)
    """Application-defined format."""
    chunks: int = _f(3, pw.UINT32)
    """Number of chunks."""
    hash: bytes = _f(4, pw.BYTES)
    """Application-defined hash."""
    metadata: bytes = _f(5, pw.BYTES)
    """Application-defined metadata."""


# --- requests --------------------------------------------------------------------------------------------------


@_message("tendermint.abci.RequestEcho")
@dataclass(frozen=True, slots=True)
class RequestEcho(Message):
    """Echo: the server answers with the same message (connection check)."""

    message: str = _f(1, pw.STRING)
    """Text to echo."""


@_message("tendermint.abci.RequestFlush")
@dataclass(frozen=True, slots=True)
class RequestFlush(Message):
    """Flush: answered once every earlier request of the connection is answered."""


@_message("tendermint.abci.RequestInfo")
@dataclass(frozen=True, slots=True)
class RequestInfo(Message):
    """Info: CometBFT asks the application's last committed height and app hash (at start-up, for handshake)."""

    version: str = _f(1, pw.STRING)
    """CometBFT's software version."""
    block_version: int = _f(2, pw.UINT64)
    """Block protocol version."""
    p2p_version: int = _f(3, pw.UINT64)
    """P2P protocol version."""
    abci_version: str = _f(4, pw.STRING)
    """ABCI semantic version."""


@_message("tendermint.abci.RequestInitChain")
@dataclass(frozen=True, slots=True)
class RequestInitChain(Message):
    """InitChain: once, at genesis."""

    time: Timestamp = _m(1, Timestamp)
    """Genesis time."""
    chain_id: str = _f(2, pw.STRING)
    """Chain id."""
    consensus_params: ConsensusParams | None = _om(3, ConsensusParams)
    """Genesis consensus parameters."""
    validators: tuple[ValidatorUpdate, ...] = _rm(4, ValidatorUpdate)
    """Genesis validators."""
    app_state_bytes: bytes = _f(5, pw.BYTES)
    """Genesis ``app_state`` (JSON bytes)."""
    initial_height: int = _f(6, pw.INT64)
    """First block height."""


@_message("tendermint.abci.RequestQuery")
@dataclass(frozen=True, slots=True)
class RequestQuery(Message):
    """Query: a read of application state (query connection)."""

    data: bytes = _f(1, pw.BYTES)
    """Query bytes (e.g. a key)."""
    path: str = _f(2, pw.STRING)
    """Query path."""
    height: int = _f(3, pw.INT64)
    """Height to read at (0: latest)."""
    prove: bool = _f(4, pw.BOOL)
    """Whether a proof is wanted."""


@_message("tendermint.abci.RequestCheckTx")
@dataclass(frozen=True, slots=True)
class RequestCheckTx(Message):
    """CheckTx: mempool admission (mempool connection)."""

    tx: bytes = _f(1, pw.BYTES)
    """The transaction."""
    type: CheckTxType = _enum(2, CheckTxType)
    """First check or re-check after a block."""


@_message("tendermint.abci.RequestCommit")
@dataclass(frozen=True, slots=True)
class RequestCommit(Message):
    """Commit: persist the state FinalizeBlock computed."""


@_message("tendermint.abci.RequestListSnapshots")
@dataclass(frozen=True, slots=True)
class RequestListSnapshots(Message):
    """ListSnapshots: the snapshots the application offers to peers."""


@_message("tendermint.abci.RequestOfferSnapshot")
@dataclass(frozen=True, slots=True)
class RequestOfferSnapshot(Message):
    """OfferSnapshot: a peer's snapshot for state sync."""

    snapshot: Snapshot | None = _om(1, Snapshot)
    """The snapshot offered."""
    app_hash: bytes = _f(2, pw.BYTES)
    """Light-client-verified app hash at its height."""


@_message("tendermint.abci.RequestLoadSnapshotChunk")
@dataclass(frozen=True, slots=True)
class RequestLoadSnapshotChunk(Message):
    """LoadSnapshotChunk: a chunk of a local snapshot, for a peer."""

    height: int = _f(1, pw.UINT64)
    """Snapshot height."""
    format: int = _f(2, pw.UINT32)
    """Snapshot format."""
    chunk: int = _f(3, pw.UINT32)
    """Chunk index."""


@_message("tendermint.abci.RequestApplySnapshotChunk")
@dataclass(frozen=True, slots=True)
class RequestApplySnapshotChunk(Message):
    """ApplySnapshotChunk: a chunk of the snapshot being restored."""

    index: int = _f(1, pw.UINT32)
    """Chunk index."""
    chunk: bytes = _f(2, pw.BYTES)
    """Chunk bytes."""
    sender: str = _f(3, pw.STRING)
    """Peer that sent it."""


@_message("tendermint.abci.RequestPrepareProposal")
@dataclass(frozen=True, slots=True)
class RequestPrepareProposal(Message):
    """PrepareProposal: the proposer may reorder, drop or add transactions."""

    max_tx_bytes: int = _f(1, pw.INT64)
    """Most bytes the returned transactions may take."""
    txs: tuple[bytes, ...] = _rep(2, pw.BYTES)
    """Mempool transactions, in order."""
    local_last_commit: ExtendedCommitInfo = _m(3, ExtendedCommitInfo)
    """Previous commit with vote extensions."""
    misbehavior: tuple[Misbehavior, ...] = _rm(4, Misbehavior)
    """Evidence to include."""
    height: int = _f(5, pw.INT64)
    """Height being proposed."""
    time: Timestamp = _m(6, Timestamp)
    """Proposed block time."""
    next_validators_hash: bytes = _f(7, pw.BYTES)
    """Hash of the next validator set."""
    proposer_address: bytes = _f(8, pw.BYTES)
    """This node's validator address."""


@_message("tendermint.abci.RequestProcessProposal")
@dataclass(frozen=True, slots=True)
class RequestProcessProposal(Message):
    """ProcessProposal: accept or reject a proposed block."""

    txs: tuple[bytes, ...] = _rep(1, pw.BYTES)
    """The block's transactions."""
    proposed_last_commit: CommitInfo = _m(2, CommitInfo)
    """Previous commit."""
    misbehavior: tuple[Misbehavior, ...] = _rm(3, Misbehavior)
    """Evidence in the block."""
    hash: bytes = _f(4, pw.BYTES)
    """The proposed block's hash."""
    height: int = _f(5, pw.INT64)
    """Its height."""
    time: Timestamp = _m(6, Timestamp)
    """Its time."""
    next_validators_hash: bytes = _f(7, pw.BYTES)
    """Hash of the next validator set."""
    proposer_address: bytes = _f(8, pw.BYTES)
    """The proposer's address."""


@_message("tendermint.abci.RequestExtendVote")
@dataclass(frozen=True, slots=True)
class RequestExtendVote(Message):
    """ExtendVote: the application's extension to this node's precommit."""

    hash: bytes = _f(1, pw.BYTES)
    """The block voted for."""
    height: int = _f(2, pw.INT64)
    """Its height."""
    time: Timestamp = _m(3, Timestamp)
    """Its time."""
    txs: tuple[bytes, ...] = _rep(4, pw.BYTES)
    """Its transactions."""
    proposed_last_commit: CommitInfo = _m(5, CommitInfo)
    """Its last commit."""
    misbehavior: tuple[Misbehavior, ...] = _rm(6, Misbehavior)
    """Its evidence."""
    next_validators_hash: bytes = _f(7, pw.BYTES)
    """Hash of the next validator set."""
    proposer_address: bytes = _f(8, pw.BYTES)
    """The proposer's address."""


@_message("tendermint.abci.RequestVerifyVoteExtension")
@dataclass(frozen=True, slots=True)
class RequestVerifyVoteExtension(Message):
    """VerifyVoteExtension: check another validator's extension."""

    hash: bytes = _f(1, pw.BYTES)
    """The block voted for."""
    validator_address: bytes = _f(2, pw.BYTES)
    """The voter."""
    height: int = _f(3, pw.INT64)
    """The height."""
    vote_extension: bytes = _f(4, pw.BYTES)
    """Its extension."""


@_message("tendermint.abci.RequestFinalizeBlock")
@dataclass(frozen=True, slots=True)
class RequestFinalizeBlock(Message):
    """FinalizeBlock: execute a decided block (its app hash appears in the next block's header)."""

    txs: tuple[bytes, ...] = _rep(1, pw.BYTES)
    """The block's transactions."""
    decided_last_commit: CommitInfo = _m(2, CommitInfo)
    """Previous commit."""
    misbehavior: tuple[Misbehavior, ...] = _rm(3, Misbehavior)
    """Evidence in the block."""
    hash: bytes = _f(4, pw.BYTES)
    """The block's hash."""
    height: int = _f(5, pw.INT64)
    """Its height."""
    time: Timestamp = _m(6, Timestamp)
    """Its time."""
    next_validators_hash: bytes = _f(7, pw.BYTES)
    """Hash of the next validator set."""
    proposer_address: bytes = _f(8, pw.BYTES)
    """The proposer's address."""


# --- responses -------------------------------------------------------------------------------------------------


@_message("tendermint.abci.ResponseException")
@dataclass(frozen=True, slots=True)
class ResponseException(Message):
    """Exception: the request failed; the server closes the connection after it (CometBFT then stops)."""

    error: str = _f(1, pw.STRING)
    """What went wrong."""


@_message("tendermint.abci.ResponseEcho")
@dataclass(frozen=True, slots=True)
class ResponseEcho(Message):
    """The echoed message."""

    message: str = _f(1, pw.STRING)
    """The request's text."""


@_message("tendermint.abci.ResponseFlush")
@dataclass(frozen=True, slots=True)
class ResponseFlush(Message):
    """Every earlier response of the connection has been written."""


@_message("tendermint.abci.ResponseInfo")
@dataclass(frozen=True, slots=True)
class ResponseInfo(Message):
    """The application's last committed state (CometBFT replays blocks above ``last_block_height``)."""

    data: str = _f(1, pw.STRING)
    """Free-form application info."""
    version: str = _f(2, pw.STRING)
    """Application software version."""
    app_version: int = _f(3, pw.UINT64)
    """Application protocol version."""
    last_block_height: int = _f(4, pw.INT64)
    """Last committed height (0: none)."""
    last_block_app_hash: bytes = _f(5, pw.BYTES)
    """App hash after it."""


@_message("tendermint.abci.ResponseInitChain")
@dataclass(frozen=True, slots=True)
class ResponseInitChain(Message):
    """The application's genesis answer."""

    consensus_params: ConsensusParams | None = _om(1, ConsensusParams)
    """Replacement consensus parameters (``None``: keep genesis's)."""
    validators: tuple[ValidatorUpdate, ...] = _rm(2, ValidatorUpdate)
    """Replacement validator set (empty: keep genesis's)."""
    app_hash: bytes = _f(3, pw.BYTES)
    """Initial app hash."""


@_message("tendermint.abci.ResponseQuery")
@dataclass(frozen=True, slots=True)
class ResponseQuery(Message):
    """The answer to a Query (field 2 is unused)."""

    code: int = _f(1, pw.UINT32)
    """0: found/ok."""
    log: str = _f(3, pw.STRING)
    """Non-deterministic log."""
    info: str = _f(4, pw.STRING)
    """Non-deterministic info."""
    index: int = _f(5, pw.INT64)
    """Index of the key in the tree."""
    key: bytes = _f(6, pw.BYTES)
    """The key."""
    value: bytes = _f(7, pw.BYTES)
    """Its value."""
    proof_ops: ProofOps | None = _om(8, ProofOps)
    """Proof, when asked and available."""
    height: int = _f(9, pw.INT64)
    """Height the state was read at."""
    codespace: str = _f(10, pw.STRING)
    """Namespace of ``code``."""


@_message("tendermint.abci.ResponseCheckTx")
@dataclass(frozen=True, slots=True)
class ResponseCheckTx(Message):
    """Mempool admission result: ``code`` 0 admits (fields 9-11 are reserved)."""

    code: int = _f(1, pw.UINT32)
    """0: admitted."""
    data: bytes = _f(2, pw.BYTES)
    """Result bytes."""
    log: str = _f(3, pw.STRING)
    """Non-deterministic log."""
    info: str = _f(4, pw.STRING)
    """Non-deterministic info."""
    gas_wanted: int = _f(5, pw.INT64)
    """Gas requested."""
    gas_used: int = _f(6, pw.INT64)
    """Gas consumed."""
    events: tuple[Event, ...] = _rm(7, Event)
    """Events."""
    codespace: str = _f(8, pw.STRING)
    """Namespace of ``code``."""


@_message("tendermint.abci.ResponseCommit")
@dataclass(frozen=True, slots=True)
class ResponseCommit(Message):
    """Commit done (fields 1-2 are reserved)."""

    retain_height: int = _f(3, pw.INT64)
    """Blocks below this height may be pruned (0: keep all)."""


@_message("tendermint.abci.ResponseListSnapshots")
@dataclass(frozen=True, slots=True)
class ResponseListSnapshots(Message):
    """The local snapshots."""

    snapshots: tuple[Snapshot, ...] = _rm(1, Snapshot)
    """Their descriptors."""


@_message("tendermint.abci.ResponseOfferSnapshot")
@dataclass(frozen=True, slots=True)
class ResponseOfferSnapshot(Message):
    """Whether to restore the offered snapshot."""

    result: OfferSnapshotResult = _enum(1, OfferSnapshotResult)
    """The decision."""


@_message("tendermint.abci.ResponseLoadSnapshotChunk")
@dataclass(frozen=True, slots=True)
class ResponseLoadSnapshotChunk(Message):
    """A local snapshot chunk."""

    chunk: bytes = _f(1, pw.BYTES)
    """Its bytes."""


@_message("tendermint.abci.ResponseApplySnapshotChunk")
@dataclass(frozen=True, slots=True)
class ResponseApplySnapshotChunk(Message):
    """The outcome of applying a chunk."""

    result: ApplySnapshotChunkResult = _enum(1, ApplySnapshotChunkResult)
    """The decision."""
    refetch_chunks: tuple[int, ...] = _rep(2, pw.UINT32)
    """Chunks to fetch again (packed on the wire)."""
    reject_senders: tuple[str, ...] = _rep(3, pw.STRING)
    """Peers to ban."""


@_message("tendermint.abci.ResponsePrepareProposal")
@dataclass(frozen=True, slots=True)
class ResponsePrepareProposal(Message):
    """The proposer's block transactions."""

    txs: tuple[bytes, ...] = _rep(1, pw.BYTES)
    """At most ``max_tx_bytes`` in total."""


@_message("tendermint.abci.ResponseProcessProposal")
@dataclass(frozen=True, slots=True)
class ResponseProcessProposal(Message):
    """Verdict on a proposal."""

    status: ProposalStatus = _enum(1, ProposalStatus)
    """ACCEPT or REJECT (UNKNOWN makes CometBFT panic)."""


@_message("tendermint.abci.ResponseExtendVote")
@dataclass(frozen=True, slots=True)
class ResponseExtendVote(Message):
    """This node's vote extension."""

    vote_extension: bytes = _f(1, pw.BYTES)
    """Its bytes (CometBFT signs them)."""


@_message("tendermint.abci.ResponseVerifyVoteExtension")
@dataclass(frozen=True, slots=True)
class ResponseVerifyVoteExtension(Message):
    """Verdict on another validator's extension."""

    status: VerifyStatus = _enum(1, VerifyStatus)
    """ACCEPT or REJECT (REJECT drops that precommit)."""


@_message("tendermint.abci.ResponseFinalizeBlock")
@dataclass(frozen=True, slots=True)
class ResponseFinalizeBlock(Message):
    """The result of executing a block."""

    events: tuple[Event, ...] = _rm(1, Event)
    """Block-level events."""
    tx_results: tuple[ExecTxResult, ...] = _rm(2, ExecTxResult)
    """One per transaction, in order (CometBFT requires exactly as many as txs)."""
    validator_updates: tuple[ValidatorUpdate, ...] = _rm(3, ValidatorUpdate)
    """Changes to the validator set (effective at height + 2)."""
    consensus_param_updates: ConsensusParams | None = _om(4, ConsensusParams)
    """Changes to the consensus parameters."""
    app_hash: bytes = _f(5, pw.BYTES)
    """App hash after the block (in the next header)."""


# --- the envelopes ---------------------------------------------------------------------------------------------

Request: TypeAlias = (
    RequestEcho | RequestFlush | RequestInfo | RequestInitChain | RequestQuery | RequestCheckTx | RequestCommit
    | RequestListSnapshots | RequestOfferSnapshot | RequestLoadSnapshotChunk | RequestApplySnapshotChunk
    | RequestPrepareProposal | RequestProcessProposal | RequestExtendVote | RequestVerifyVoteExtension
    | RequestFinalizeBlock
)
"""One variant of ``tendermint.abci.Request``'s oneof."""

Response: TypeAlias = (
    ResponseException | ResponseEcho | ResponseFlush | ResponseInfo | ResponseInitChain | ResponseQuery
    | ResponseCheckTx | ResponseCommit | ResponseListSnapshots | ResponseOfferSnapshot | ResponseLoadSnapshotChunk
    | ResponseApplySnapshotChunk | ResponsePrepareProposal | ResponseProcessProposal | ResponseExtendVote
    | ResponseVerifyVoteExtension | ResponseFinalizeBlock
)
"""One variant of ``tendermint.abci.Response``'s oneof."""

REQUEST_FIELDS: Final[Mapping[int, type[Message]]] = {
    1: RequestEcho, 2: RequestFlush, 3: RequestInfo, 5: RequestInitChain, 6: RequestQuery, 8: RequestCheckTx,
    11: RequestCommit, 12: RequestListSnapshots, 13: RequestOfferSnapshot, 14: RequestLoadSnapshotChunk,
    15: RequestApplySnapshotChunk, 16: RequestPrepareProposal, 17: RequestProcessProposal, 18: RequestExtendVote,
    19: RequestVerifyVoteExtension, 20: RequestFinalizeBlock,
}
"""``Request.value``'s oneof: field number -> variant (4, 7, 9, 10 are reserved: SetOption, BeginBlock, DeliverTx,
EndBlock)."""

RESPONSE_FIELDS: Final[Mapping[int, type[Message]]] = {
    1: ResponseException, 2: ResponseEcho, 3: ResponseFlush, 4: ResponseInfo, 6: ResponseInitChain, 7: ResponseQuery,
    9: ResponseCheckTx, 12: ResponseCommit, 13: ResponseListSnapshots, 14: ResponseOfferSnapshot,
    15: ResponseLoadSnapshotChunk, 16: ResponseApplySnapshotChunk, 17: ResponsePrepareProposal,
    18: ResponseProcessProposal, 19: ResponseExtendVote, 20: ResponseVerifyVoteExtension, 21: ResponseFinalizeBlock,
}
"""``Response.value``'s oneof: field number -> variant (5, 8, 10, 11 are reserved)."""

_REQUEST_NUMBERS: Final = {cls: num for num, cls in REQUEST_FIELDS.items()}
_RESPONSE_NUMBERS: Final = {cls: num for num, cls in RESPONSE_FIELDS.items()}


def _envelope(raw: bytes, what: str, table: Mapping[int, type[Message]]) -> tuple[int, Message]:
    if isinstance(raw, bytes) and len(raw) > MAX_MESSAGE_BYTES:
        raise CodecError(f"{what} too large", expected=f"<= {MAX_MESSAGE_BYTES} bytes", got=len(raw))
    fields = pw.split_fields(raw, what)
    if len(fields) != 1:
        raise CodecError(f"{what}: exactly one variant must be set", expected=1, got=len(fields))
    num, wire, value = fields[0]
    cls = table.get(num)
    if cls is None:
        if table is REQUEST_FIELDS:
            raise UnknownRequestError(num)
        raise CodecError(f"{what}: unknown variant", expected=sorted(table), got=num)
    if wire != pw.LEN:
        raise CodecError(f"{what}.{cls.__name__}: wrong wire type", expected=pw.LEN, got=wire)
    assert isinstance(value, bytes)
    return num, cls.decode(value)


def decode_request(raw: bytes) -> Request:
    """The request in one frame's payload; :class:`UnknownRequestError` for a variant not in :data:`REQUEST_FIELDS`,
    :class:`~protocol.errors.CodecError` for anything else malformed."""
    _, msg = _envelope(raw, "Request", REQUEST_FIELDS)
    return msg  # type: ignore[return-value]  # REQUEST_FIELDS holds only Request variants


def decode_response(raw: bytes) -> Response:
    """The response in one frame's payload (tests and clients read what a server wrote)."""
    _, msg = _envelope(raw, "Response", RESPONSE_FIELDS)
    return msg  # type: ignore[return-value]  # RESPONSE_FIELDS holds only Response variants


def encode_request(req: Request) -> bytes:
    """``tendermint.abci.Request`` holding ``req`` (a frame's payload)."""
    return pw.Writer().raw(_REQUEST_NUMBERS[type(req)], req.encode(), keep_empty=True).done()


def encode_response(resp: Response) -> bytes:
    """``tendermint.abci.Response`` holding ``resp`` (a frame's payload)."""
    return pw.Writer().raw(_RESPONSE_NUMBERS[type(resp)], resp.encode(), keep_empty=True).done()


def request_name(req: Request) -> str:
    """The request's ABCI method name (``"FinalizeBlock"``), for logs."""
    return type(req).__name__.removeprefix("Request")
