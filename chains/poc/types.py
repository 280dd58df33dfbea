"""The PoC park's block header and its canonical binary encoding (docs/architecture.md §3, PoC row).

A header carries its own proof of space (a chiapos proof for the height's challenge), the farmer's
ed25519 key that the plot id is bound to, and the farmer's signature. Everything a light client needs
to check consensus is in the header; the parent's consensus context (:mod:`chains.poc.consensus`)
supplies the rest.

Encoding (all integers big-endian, no padding, no trailing bytes)::

    u8   version (= 1)
    u8   len || chain_id (ASCII, a protocol id)
    u64  height
    32   parent_hash
    u64  timestamp_ms
    32   challenge
    u32  slot
    u64  difficulty
    u128 cumulative_weight
    u8   len || farmer (ASCII account name, empty only at genesis)
    32   farmer_pubkey
    32   plot_nonce
    u8   k
    u16  len || proof (at most 512 bytes)
    32   tx_root
    32   state_root
    u8   len || signature (0 or 64 bytes)

Decoding is strict: every byte is read, lengths are checked, and :func:`decode_header` of
:meth:`PocHeader.encode` is the identity, so one header has exactly one encoding.

The header hash covers everything except the signature (as a Tendermint block id excludes its
commit): a signature never changes which block a header is, and the farmer signs that hash.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, replace
from typing import Any

from protocol.errors import CodecError
from protocol.types import ChainId, check_id

__all__ = [
    "HASH_TAG",
    "HEADER_VERSION",
    "MAX_PROOF_BYTES",
    "SIGN_TAG",
    "PocHeader",
    "decode_header",
]

HEADER_VERSION = 1
HASH_TAG = b"parkrelay/poc/header/v1"
"""Domain tag of the header hash."""
SIGN_TAG = b"parkrelay/poc/header-sig/v1"
"""Domain tag of what the farmer signs: ``SIGN_TAG || hash``."""
MAX_PROOF_BYTES = 512
"""A chiapos proof is 8*k bytes (64 x-values of k bits); k <= 50 gives at most 400."""
_FARMER_RE = re.compile(r"(?:[a-z][a-z0-9.-]{1,31})?")
_U64 = 2**64 - 1
_U128 = 2**128 - 1


@dataclass(frozen=True, slots=True)
class PocHeader:
    """A block header of a PoC park chain."""

    chain_id: ChainId
    """Chain the block belongs to; a header never counts on another chain."""
    height: int
    """Height, genesis = 0."""
    parent_hash: bytes
    """:meth:`hash` of the parent header (32 zero bytes at genesis)."""
    timestamp_ms: int
    """Block time, ms since the Unix epoch; at least ``parent.timestamp_ms + deadline_ms``."""
    challenge: bytes
    """The height's challenge (32 bytes): fixed by the parent's challenge and quality, never by block contents."""
    slot: int
    """Which sub-challenge of the height the proof answers (0, 1...); each slot adds ``difficulty`` ms to
    the deadline, so a height that no plot answers in slot 0 still gets a block (liveness)."""
    difficulty: int
    """Block difficulty in ms x k21-plot-equivalents; also the block's weight."""
    cumulative_weight: int
    """Sum of the difficulties of every block from genesis (exclusive) to this one."""
    farmer: str
    """Account name of the farmer (reward recipient); empty at genesis."""
    farmer_pubkey: bytes
    """The farmer's ed25519 public key (32 bytes); the plot id is bound to it."""
    plot_nonce: bytes
    """32-byte nonce of the plot: ``plot_id = sha256(tag || farmer_pubkey || plot_nonce)``."""
    k: int
    """Plot size parameter of chiapos (a k plot holds about (2k+1)*2^(k-1) bytes); 0 at genesis."""
    proof: bytes
    """chiapos proof of space (8*k bytes) for the slot challenge; empty at genesis."""
    tx_root: bytes
    """Commitment to the block's transactions (32 bytes)."""
    state_root: bytes
    """State commitment root after executing the block (32 bytes)."""
    signature: bytes = b""
    """ed25519 signature by ``farmer_pubkey`` of :meth:`signing_bytes` (64 bytes; empty before signing
    and at genesis)."""

    # -- encoding ------------------------------------------------------------------------------

    def unsigned_bytes(self) -> bytes:
        """The canonical encoding without the signature (what the hash covers)."""
        check_id("chain", self.chain_id)
        for name, value, size in (("parent_hash", self.parent_hash, 32), ("challenge", self.challenge, 32),
                                  ("farmer_pubkey", self.farmer_pubkey, 32), ("plot_nonce", self.plot_nonce, 32),
                                  ("tx_root", self.tx_root, 32), ("state_root", self.state_root, 32)):
            if not isinstance(value, bytes) or len(value) != size:
                raise CodecError(f"header field {name} must be {size} bytes",
                                 got=len(value) if isinstance(value, bytes) else type(value).__name__)
        _check_int("height", self.height, _U64)
        _check_int("timestamp_ms", self.timestamp_ms, _U64)
        _check_int("slot", self.slot, 2**32 - 1)
        _check_int("difficulty", self.difficulty, _U64)
        _check_int("cumulative_weight", self.cumulative_weight, _U128)
        _check_int("k", self.k, 255)
        if not isinstance(self.farmer, str) or not _FARMER_RE.fullmatch(self.farmer):
            raise CodecError("header farmer must be an account name", expected=_FARMER_RE.pattern, got=self.farmer)
        if not isinstance(self.proof, bytes) or len(self.proof) > MAX_PROOF_BYTES:
            raise CodecError("header proof too long or not bytes", expected=f"<= {MAX_PROOF_BYTES} bytes",
                             got=len(self.proof) if isinstance(self.proof, bytes) else type(self.proof).__name__)
        chain = self.chain_id.encode()
        farmer = self.farmer.encode()
        return b"".join((
            bytes((HEADER_VERSION, len(chain))), chain,
            struct.pack(">Q", self.height), self.parent_hash,
            struct.pack(">Q", self.timestamp_ms), self.challenge,
            struct.pack(">IQ", self.slot, self.difficulty), self.cumulative_weight.to_bytes(16, "big"),
            bytes((len(farmer),)), farmer, self.farmer_pubkey, self.plot_nonce,
            struct.pack(">BH", self.k, len(self.proof)), self.proof,
            self.tx_root, self.state_root,
        ))

    def encode(self) -> bytes:
        """The canonical encoding, signature included."""
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, 64):
            raise CodecError("header signature must be empty or 64 bytes",
                             got=len(self.signature) if isinstance(self.signature, bytes) else None)
        return self.unsigned_bytes() + bytes((len(self.signature),)) + self.signature

    def hash(self) -> bytes:
        """Header id: ``sha256(HASH_TAG || unsigned_bytes)``; the signature is not part of it."""
        return hashlib.sha256(HASH_TAG + self.unsigned_bytes()).digest()

    def signing_bytes(self) -> bytes:
        """What the farmer signs: ``SIGN_TAG || hash`` (domain-separated from every other signature)."""
        return SIGN_TAG + self.hash()

    def with_signature(self, signature: bytes) -> PocHeader:
        return replace(self, signature=signature)

    # -- JSON (RPC) ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """JSON form for RPC answers: bytes as hex, integers as numbers (weights may exceed 2^53: strings)."""
        return {
            "chain_id": self.chain_id, "height": self.height, "parent_hash": self.parent_hash.hex(),
            "timestamp_ms": self.timestamp_ms, "challenge": self.challenge.hex(), "slot": self.slot,
            "difficulty": self.difficulty, "cumulative_weight": str(self.cumulative_weight),
            "farmer": self.farmer, "farmer_pubkey": self.farmer_pubkey.hex(), "plot_nonce": self.plot_nonce.hex(),
            "k": self.k, "proof": self.proof.hex(), "tx_root": self.tx_root.hex(),
            "state_root": self.state_root.hex(), "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Any) -> PocHeader:
        if not isinstance(obj, dict):
            raise CodecError("a PoC header is a JSON object", got=type(obj).__name__)
        try:
            header = cls(
                ChainId(str(obj["chain_id"])), _json_int(obj["height"]), bytes.fromhex(obj["parent_hash"]),
                _json_int(obj["timestamp_ms"]), bytes.fromhex(obj["challenge"]), _json_int(obj["slot"]),
                _json_int(obj["difficulty"]), _json_int(obj["cumulative_weight"]), str(obj["farmer"]),
                bytes.fromhex(obj["farmer_pubkey"]), bytes.fromhex(obj["plot_nonce"]), _json_int(obj["k"]),
                bytes.fromhex(obj["proof"]), bytes.fromhex(obj["tx_root"]), bytes.fromhex(obj["state_root"]),
                bytes.fromhex(obj["signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed PoC header JSON: {exc}") from exc
        header.encode()  # field sizes and ranges
        return header


def _json_int(v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError("boolean is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    raise TypeError(f"not an integer: {v!r}")


def _check_int(name: str, value: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise CodecError(f"header field {name} out of range", expected=f"0..{maximum}", got=value)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise CodecError(f"PoC header truncated in {what}", expected=end, got=len(self.data))
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def var(self, len_bytes: int, what: str) -> bytes:
        return self.take(self.uint(len_bytes, what), what)


def decode_header(data: bytes) -> PocHeader:
    """Decode the canonical encoding; raise :class:`CodecError` on anything else."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("a PoC header encoding is bytes", got=type(data).__name__)
    r = _Reader(bytes(data))
    version = r.uint(1, "version")
    if version != HEADER_VERSION:
        raise CodecError("unknown PoC header version", expected=HEADER_VERSION, got=version)
    try:
        chain_id = r.var(1, "chain_id").decode("ascii")
        height, parent_hash = r.uint(8, "height"), r.take(32, "parent_hash")
        timestamp_ms, challenge = r.uint(8, "timestamp_ms"), r.take(32, "challenge")
        slot, difficulty = r.uint(4, "slot"), r.uint(8, "difficulty")
        cumulative_weight = r.uint(16, "cumulative_weight")
        farmer = r.var(1, "farmer").decode("ascii")
    except UnicodeDecodeError as exc:
        raise CodecError("non-ASCII text in a PoC header") from exc
    header = PocHeader(
        ChainId(chain_id), height, parent_hash, timestamp_ms, challenge, slot, difficulty, cumulative_weight,
        farmer, r.take(32, "farmer_pubkey"), r.take(32, "plot_nonce"), r.uint(1, "k"), r.var(2, "proof"),
        r.take(32, "tx_root"), r.take(32, "state_root"), r.var(1, "signature"),
    )
    if r.pos != len(r.data):
        raise CodecError("trailing bytes after a PoC header", expected=r.pos, got=len(r.data))
    # ranges, name syntax and signature length; equal re-encoding then holds by construction
    if header.encode() != r.data:
        raise CodecError("PoC header is not in canonical encoding")
    return header
