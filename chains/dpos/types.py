"""Types of the DPoS park chain (docs/research.md#seed-003; docs/architecture.md §3): witnesses, witness sets,
headers, parameters.

Everything here is pure and has one binary encoding. Integers are big-endian and unsigned; strings are
UTF-8 with a one-byte length prefix; hashes are 32 bytes.

    witness      = u8 len(name) || name || pubkey[32] || u64 votes
    witness set  = u8 count || witness*            (count >= 1, members sorted by name, names unique)
    header body  = u8 version(=1) || u8 len(chain_id) || chain_id || u64 height || parent_hash[32]
                   || u64 timestamp_ms || u64 slot || u8 len(producer) || producer || tx_root[32]
                   || state_root[32] || active_set_hash[32] || u8 has_pending(0|1) || [witness set]
    header       = body || u8 len(signature) (0|64) || signature

The producer signs ``"parkrelay/dpos-header/v1" || body`` (:meth:`DposHeader.signing_bytes`); the header's
hash, which children link to as ``parent_hash``, is ``sha256(header)`` (signature included, as Graphene's
block id). Decoding is strict: anything but the canonical encoding raises :class:`CodecError`.

Binary rather than ABI because a light client hashes and decodes every header of a park that makes one
block a second; ABI coding costs more than the signature check it guards.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import CodecError
from protocol.types import check_id, check_uint

__all__ = [
    "HEADER_SIGN_TAG",
    "HEADER_VERSION",
    "MAX_WITNESSES",
    "WITNESS_NAME_RE",
    "DposHeader",
    "DposParams",
    "WitnessInfo",
    "WitnessSet",
    "decode_witness_set",
    "encode_witness_set",
    "witness_set_hash",
]

HEADER_VERSION = 1
HEADER_SIGN_TAG = b"parkrelay/dpos-header/v1"
WITNESS_SET_TAG = b"parkrelay/dpos-witness-set/v1"
MAX_WITNESSES = 101
"""Largest witness set a header may carry (Graphene's default maximum is 1001; a park needs far fewer)."""
WITNESS_NAME_RE = re.compile(r"[a-z][a-z0-9.-]{1,31}")
"""A witness is named by its account, so the same rule as ``chains.common.tx.ACCOUNT_RE``."""
REWARD_SPLITS = ("shapley", "proportional")
"""Block-reward splits a park may choose (:attr:`DposParams.reward_split`)."""

_U64 = 2**64 - 1
_sha256 = hashlib.sha256
_MIDDLE = struct.Struct(">Q32sQQ")  # height, parent_hash, timestamp_ms, slot
_ROOTS = struct.Struct(">32s32s32s")  # tx_root, state_root, active_set_hash
_WITNESS_TAIL = struct.Struct(">32sQ")  # pubkey, votes


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not WITNESS_NAME_RE.fullmatch(name):
        raise CodecError(f"invalid {kind} name", expected=WITNESS_NAME_RE.pattern, got=name)
    return name


def _check_hash(kind: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise CodecError(f"{kind} must be 32 bytes", got=value if not isinstance(value, bytes) else len(value))
    return value


@dataclass(frozen=True, slots=True)
class WitnessInfo:
    """One witness as a witness set names it."""

    name: str
    """Account name of the witness (``[a-z][a-z0-9.-]{1,31}``)."""
    pubkey: bytes
    """32-byte ed25519 block-signing key."""
    votes: int
    """Stake-weighted votes (Wh of the stake denom) at the election that put it in the set."""

    def __post_init__(self) -> None:
        _check_name("witness", self.name)
        _check_hash("witness pubkey", self.pubkey)
        check_uint("witness votes", self.votes)

    def encode(self) -> bytes:
        name = self.name.encode()
        return bytes((len(name),)) + name + _WITNESS_TAIL.pack(self.pubkey, self.votes)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pubkey": self.pubkey.hex(), "votes": self.votes}

    @classmethod
    def from_json(cls, obj: Any) -> WitnessInfo:
        try:
            return cls(str(obj["name"]), bytes.fromhex(str(obj["pubkey"])), int(obj["votes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed witness: {exc}") from exc


def _check_members(members: object) -> tuple[WitnessInfo, ...]:
    if not isinstance(members, tuple) or not members:
        raise CodecError("a witness set is a non-empty tuple of WitnessInfo", got=type(members).__name__)
    if len(members) > MAX_WITNESSES:
        raise CodecError("witness set too large", expected=f"<= {MAX_WITNESSES}", got=len(members))
    prev = ""
    keys: set[bytes] = set()
    for w in members:
        if not isinstance(w, WitnessInfo):
            raise CodecError("a witness set member is a WitnessInfo", got=type(w).__name__)
        if w.name <= prev:
            raise CodecError("witness set members must be sorted by name, without repeats", got=w.name)
        if w.pubkey in keys:
            raise CodecError("two witnesses of one set share a key", got=w.pubkey.hex())
        prev = w.name
        keys.add(w.pubkey)
    return members


def encode_witness_set(members: tuple[WitnessInfo, ...]) -> bytes:
    """Canonical encoding of a witness set (members sorted by name, 1..MAX_WITNESSES of them)."""
    _check_members(members)
    return bytes((len(members),)) + b"".join(w.encode() for w in members)


def witness_set_hash(members: tuple[WitnessInfo, ...]) -> bytes:
    """``sha256("parkrelay/dpos-witness-set/v1" || encode_witness_set(members))``: names a witness set."""
    return _sha256(WITNESS_SET_TAG + encode_witness_set(members)).digest()


def _decode_witnesses(data: bytes, pos: int) -> tuple[tuple[WitnessInfo, ...], int]:
    if pos >= len(data):
        raise CodecError("witness set truncated")
    count = data[pos]
    pos += 1
    out = []
    for _ in range(count):
        if pos >= len(data):
            raise CodecError("witness truncated")
        n = data[pos]
        end = pos + 1 + n + _WITNESS_TAIL.size
        if end > len(data):
            raise CodecError("witness truncated", expected=end, got=len(data))
        try:
            name = data[pos + 1 : pos + 1 + n].decode()
        except UnicodeDecodeError as exc:
            raise CodecError("witness name is not UTF-8") from exc
        pubkey, votes = _WITNESS_TAIL.unpack_from(data, pos + 1 + n)
        out.append(WitnessInfo(name, pubkey, votes))
        pos = end
    return _check_members(tuple(out)), pos


def decode_witness_set(data: bytes) -> tuple[WitnessInfo, ...]:
    """Inverse of :func:`encode_witness_set`; strict."""
    members, pos = _decode_witnesses(data, 0)
    if pos != len(data):
        raise CodecError("trailing bytes after witness set", expected=pos, got=len(data))
    return members


@dataclass(frozen=True, slots=True)
class WitnessSet:
    """A witness set with what the schedule needs precomputed. Immutable; ``members`` is canonical."""

    members: tuple[WitnessInfo, ...]
    """Witnesses sorted by name, names and keys unique, 1..MAX_WITNESSES of them."""
    hash: bytes = field(init=False, repr=False, compare=False)
    """:func:`witness_set_hash` of ``members``; headers name the set that schedules them by it."""
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Member names in canonical (sorted) order: the input of each round's shuffle."""
    pubkeys: dict[str, bytes] = field(init=False, repr=False, compare=False)
    """Member name -> block-signing key."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", witness_set_hash(self.members))
        object.__setattr__(self, "names", tuple(w.name for w in self.members))
        object.__setattr__(self, "pubkeys", {w.name: w.pubkey for w in self.members})

    @classmethod
    def of(cls, witnesses: Any) -> WitnessSet:
        """A set from witnesses in any order (sorted here)."""
        return cls(tuple(sorted(witnesses, key=lambda w: w.name)))

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, name: object) -> bool:
        return name in self.pubkeys

    def to_json(self) -> list[dict[str, Any]]:
        return [w.to_json() for w in self.members]

    @classmethod
    def from_json(cls, obj: Any) -> WitnessSet:
        if not isinstance(obj, list):
            raise CodecError("a witness set in JSON is a list", got=type(obj).__name__)
        return cls(tuple(WitnessInfo.from_json(w) for w in obj))


@dataclass(frozen=True, slots=True)
class DposHeader:
    """A DPoS park block header, signed by the witness scheduled for its slot."""

    chain_id: str
    """Chain the block belongs to."""
    height: int
    """Block height; the genesis header is 0."""
    parent_hash: bytes
    """:meth:`hash` of the header at ``height - 1`` (32 zero bytes for genesis)."""
    timestamp_ms: int
    """Block time, ms since the Unix epoch; lies in ``slot``."""
    slot: int
    """Absolute slot number, ``timestamp_ms // block_interval_ms``."""
    producer: str
    """Name of the witness that produced and signed the block."""
    tx_root: bytes
    """Merkle root of the block's transactions (32 bytes)."""
    state_root: bytes
    """State commitment root after the block (``protocol.state_commitment``); proofs verify against it."""
    active_set_hash: bytes
    """:func:`witness_set_hash` of the witness set that scheduled this block."""
    pending_set: tuple[WitnessInfo, ...] | None
    """The next witness set, proposed only by a maintenance-boundary header; ``None`` otherwise."""
    signature: bytes = b""
    """ed25519 signature of :meth:`signing_bytes` by ``producer`` (64 bytes; empty while unsigned)."""
    _body: bytes = field(default=b"", init=False, repr=False, compare=False)
    _hash: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_id("chain", self.chain_id)
        check_uint("height", self.height)
        _check_hash("parent_hash", self.parent_hash)
        check_uint("timestamp_ms", self.timestamp_ms)
        check_uint("slot", self.slot)
        _check_name("producer", self.producer)
        _check_hash("tx_root", self.tx_root)
        _check_hash("state_root", self.state_root)
        _check_hash("active_set_hash", self.active_set_hash)
        if self.pending_set is not None:
            _check_members(self.pending_set)
        sig = self.signature
        if not isinstance(sig, bytes) or len(sig) not in (0, 64):
            raise CodecError("a header signature is 64 bytes, or empty when unsigned",
                             got=len(sig) if isinstance(sig, bytes) else type(sig).__name__)

    # -- encoding --------------------------------------------------------------------------------

    def body(self) -> bytes:
        """The encoding without the signature (cached: the header is immutable)."""
        body = self._body
        if not body:
            chain = self.chain_id.encode()
            producer = self.producer.encode()
            parts = [
                bytes((HEADER_VERSION, len(chain))), chain,
                _MIDDLE.pack(self.height, self.parent_hash, self.timestamp_ms, self.slot),
                bytes((len(producer),)), producer,
                _ROOTS.pack(self.tx_root, self.state_root, self.active_set_hash),
            ]
            if self.pending_set is None:
                parts.append(b"\x00")
            else:
                parts += [b"\x01", bytes((len(self.pending_set),)), *(w.encode() for w in self.pending_set)]
            body = b"".join(parts)
            object.__setattr__(self, "_body", body)
        return body

    def signing_bytes(self) -> bytes:
        """What the producer signs: the domain tag, then the body (the signature excluded)."""
        return HEADER_SIGN_TAG + self.body()

    def encode(self) -> bytes:
        return self.body() + bytes((len(self.signature),)) + self.signature

    def hash(self) -> bytes:
        """``sha256(encode())``: the block id children link to (cached)."""
        h = self._hash
        if not h:
            h = _sha256(self.encode()).digest()
            object.__setattr__(self, "_hash", h)
        return h

    def with_signature(self, signature: bytes) -> DposHeader:
        """The same header carrying ``signature``; the encoded body is reused, not recomputed."""
        signed = DposHeader(self.chain_id, self.height, self.parent_hash, self.timestamp_ms, self.slot,
                            self.producer, self.tx_root, self.state_root, self.active_set_hash,
                            self.pending_set, signature)
        object.__setattr__(signed, "_body", self.body())
        return signed

    @classmethod
    def decode(cls, data: bytes) -> DposHeader:
        """Inverse of :meth:`encode`. Raises :class:`CodecError` on anything but the canonical encoding."""
        if not isinstance(data, bytes):
            raise CodecError("a header decodes from bytes", got=type(data).__name__)
        try:
            if len(data) < 2 or data[0] != HEADER_VERSION:
                raise CodecError("unknown header version", expected=HEADER_VERSION,
                                 got=data[0] if data else None)
            pos = 2 + data[1]
            chain_raw = data[2:pos]
            if len(chain_raw) != data[1]:
                raise CodecError("header truncated in chain id")
            chain_id = chain_raw.decode()
            height, parent_hash, timestamp_ms, slot = _MIDDLE.unpack_from(data, pos)
            pos += _MIDDLE.size
            n = data[pos]
            producer_raw = data[pos + 1 : pos + 1 + n]
            if len(producer_raw) != n:
                raise CodecError("header truncated in producer")
            producer = producer_raw.decode()
            pos += 1 + n
            tx_root, state_root, active_set_hash = _ROOTS.unpack_from(data, pos)
            pos += _ROOTS.size
            flag = data[pos]
            pos += 1
            pending: tuple[WitnessInfo, ...] | None = None
            if flag == 1:
                pending, pos = _decode_witnesses(data, pos)
            elif flag != 0:
                raise CodecError("pending-set flag must be 0 or 1", got=flag)
            body_end = pos
            sig_len = data[pos]
            if sig_len not in (0, 64):
                raise CodecError("signature length must be 0 or 64", got=sig_len)
            signature = data[pos + 1 : pos + 1 + sig_len]
            pos += 1 + sig_len
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            raise CodecError(f"header truncated or malformed: {exc}") from exc
        if pos != len(data):
            raise CodecError("header has trailing or missing bytes", expected=pos, got=len(data))
        header = cls(chain_id, height, parent_hash, timestamp_ms, slot, producer, tx_root, state_root,
                     active_set_hash, pending, signature)
        object.__setattr__(header, "_body", data[:body_end])
        return header

    def to_json(self) -> dict[str, Any]:
        """A JSON form for RPC and logs (the binary encoding is the canonical one)."""
        return {
            "chain_id": self.chain_id, "height": self.height, "parent_hash": self.parent_hash.hex(),
            "timestamp_ms": self.timestamp_ms, "slot": self.slot, "producer": self.producer,
            "tx_root": self.tx_root.hex(), "state_root": self.state_root.hex(),
            "active_set_hash": self.active_set_hash.hex(),
            "pending_set": None if self.pending_set is None else [w.to_json() for w in self.pending_set],
            "signature": self.signature.hex(), "hash": self.hash().hex(),
        }


@dataclass(frozen=True, slots=True)
class DposParams:
    """Consensus parameters of a DPoS park, fixed at genesis (the genesis config's ``params``)."""

    genesis_time_ms: int
    """Time of the genesis block, ms; slot offsets and rounds count from its slot."""
    block_interval_ms: int = 1000
    """Length of one slot, ms (Graphene's block interval)."""
    maintenance_interval_blocks: int = 100
    """Blocks per maintenance interval; block heights that are multiples of it are boundaries."""
    active_witnesses: int = 21
    """N: how many witnesses an election puts in the active set (at most :data:`MAX_WITNESSES`)."""
    max_clock_drift_ms: int = 2000
    """How far ahead of the verifier's clock a header's timestamp may be, ms."""
    credit_initial: int = 5000
    """Credit of a newly registered witness (scale 0..``credit_max``)."""
    credit_max: int = 10000
    """Ceiling of witness credit."""
    credit_produced_reward: int = 10
    """Credit gained per block produced."""
    credit_missed_penalty: int = 50
    """Credit lost per scheduled slot missed."""
    credit_bad_block_penalty: int = 2500
    """Credit lost per proven bad block (double production)."""
    jail_credit_threshold: int = 3000
    """A witness whose credit falls below this is jailed."""
    jail_missed_in_row: int = 3
    """K: a witness that missed this many of its own slots in a row is jailed."""
    jail_intervals: int = 2
    """J: maintenance intervals a jailed witness is excluded from elections."""
    credit_on_release: int = 3000
    """Credit a witness is raised to (if below) when its jail ends, so it can be elected again."""
    block_reward: int = 100
    """Reward per block produced, in ``reward_denom``, paid at each boundary from the reserve by Shapley value."""
    reward_denom: str = "prc"
    """Denomination of block rewards (the park currency)."""
    stake_denom: str = "kWh"
    """Denomination whose balances weigh votes (amounts in Wh)."""
    replacement_interval_blocks: int = 0
    """Fast replacement (docs/research.md#seed-003): if R > 0, every block whose height is a multiple of R (R divides
    ``maintenance_interval_blocks``) and that finds a member of the latest elected set jailed runs an election
    at once and proposes its result, so a malicious witness is replaced within R blocks plus finality instead of
    at the next maintenance boundary. 0: elections only at maintenance boundaries (plain DPoS timing)."""
    dr_inactive_ineligible: bool = True
    """docs/research.md#seed-002: a witness that is also a demand-response node and was marked inactive at the end
    of the last DR cycle (``reputation/<name>`` with ``active`` false) loses its turn in elections until it
    matches again."""
    voter_reward_share_bp: int = 0
    """Share (basis points) of each witness's block reward paid on to the voters approving it, in proportion to
    the stake each counts for it at the boundary (docs/research.md#seed-003: voters share the rewards of the
    witnesses they chose). 0: witnesses keep their whole reward."""
    reward_split: str = "shapley"
    """How a maintenance interval's block rewards are split among its producers: ``shapley`` (Shapley values of
    the confirmation game, :func:`chains.dpos.consensus.shapley_rewards`) or ``proportional`` (to blocks
    produced, the plain-DPoS rule, :func:`chains.dpos.consensus.proportional_rewards`)."""

    def __post_init__(self) -> None:
        check_uint("genesis_time_ms", self.genesis_time_ms)
        for name in ("block_interval_ms", "maintenance_interval_blocks", "active_witnesses", "credit_max",
                     "jail_missed_in_row", "jail_intervals"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise CodecError(f"parameter {name} must be a positive integer", got=v)
        if self.active_witnesses > MAX_WITNESSES:
            raise CodecError("too many active witnesses", expected=f"<= {MAX_WITNESSES}", got=self.active_witnesses)
        for name in ("max_clock_drift_ms", "credit_initial", "credit_produced_reward", "credit_missed_penalty",
                     "credit_bad_block_penalty", "jail_credit_threshold", "credit_on_release", "block_reward"):
            check_uint(name, getattr(self, name))
        if not isinstance(self.dr_inactive_ineligible, bool):
            raise CodecError("dr_inactive_ineligible must be a boolean", got=self.dr_inactive_ineligible)
        check_uint("replacement_interval_blocks", self.replacement_interval_blocks)
        check_uint("voter_reward_share_bp (basis points)", self.voter_reward_share_bp, 10_000)
        if self.replacement_interval_blocks and self.maintenance_interval_blocks % self.replacement_interval_blocks:
            raise CodecError("replacement_interval_blocks must divide maintenance_interval_blocks",
                             expected=f"a divisor of {self.maintenance_interval_blocks}",
                             got=self.replacement_interval_blocks)
        if self.reward_split not in REWARD_SPLITS:
            raise CodecError("unknown reward split", expected=REWARD_SPLITS, got=self.reward_split)
        if not self.credit_initial <= self.credit_max or not self.credit_on_release <= self.credit_max:
            raise CodecError("initial and release credit must not exceed credit_max", expected=self.credit_max,
                             got=(self.credit_initial, self.credit_on_release))

    def may_propose(self, height: int) -> bool:
        """Whether the block at ``height`` may carry a ``pending_set``: a maintenance boundary, or (fast
        replacement) a multiple of ``replacement_interval_blocks``."""
        if height <= 0:
            return False
        if height % self.maintenance_interval_blocks == 0:
            return True
        return self.replacement_interval_blocks > 0 and height % self.replacement_interval_blocks == 0

    @property
    def genesis_slot(self) -> int:
        """Slot of the genesis block."""
        return self.genesis_time_ms // self.block_interval_ms

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, obj: Any) -> DposParams:
        if not isinstance(obj, dict):
            raise CodecError("parameters are a JSON object", got=type(obj).__name__)
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise CodecError("unknown DPoS parameters", expected=sorted(cls.__dataclass_fields__), got=sorted(unknown))
        try:
            return cls(**obj)
        except TypeError as exc:
            raise CodecError(f"malformed DPoS parameters: {exc}") from exc
