"""Types of the Ethereum park (chains/ethereum/SPEC.md §E3): a strict RLP codec and the block header.

Everything here is pure. The codec is the RLP of the Yellow Paper (appendix B), decoded *strictly*: an
item has exactly one accepted encoding, so a single byte below ``0x80`` must be itself, a string of at
most 55 bytes must use the short prefix, a length has no leading zero byte, and nothing may trail the
item. Anything else is :class:`~protocol.errors.CodecError`.

:class:`EthHeader` is a block header as its hash is computed: ``hash = keccak256(rlp(fields))``. The
fields are those of the node's fork; a header carries exactly one of these field counts:

=====  ==========================================================================================
count  fork (fields appended)
=====  ==========================================================================================
15     pre-London: ``parentHash … nonce``
16     London: ``baseFeePerGas``
17     Shanghai: ``withdrawalsRoot``
20     Cancun: ``blobGasUsed``, ``excessBlobGas``, ``parentBeaconBlockRoot``
21     Prague: ``requestsHash``
=====  ==========================================================================================

Hashes and roots are 32 bytes, ``coinbase`` 20, ``logsBloom`` 256, ``nonce`` 8, ``extraData`` at most
32 (the Yellow Paper's bound); integers are canonical big-endian (no leading zero byte, zero is the
empty string), ``number``, ``gasLimit``, ``gasUsed``, ``timestamp``, ``blobGasUsed`` and
``excessBlobGas`` at most ``2^64 − 1``, ``difficulty`` and ``baseFeePerGas`` at most ``2^256 − 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from protocol.crypto import keccak256
from protocol.errors import CodecError

__all__ = [
    "HEADER_FIELD_COUNTS",
    "MAX_RLP_DEPTH",
    "EthHeader",
    "RlpItem",
    "keccak256",
    "rlp_decode",
    "rlp_encode",
    "rlp_item",
]

RlpItem: TypeAlias = bytes | list["RlpItem"]
"""A decoded RLP item: a byte string or a list of items."""

MAX_RLP_DEPTH = 16
"""Deepest list nesting :func:`rlp_decode` accepts (a header is depth 1, a proof depth 2)."""
HEADER_FIELD_COUNTS = (15, 16, 17, 20, 21)
"""Field counts of the known forks: pre-London, London, Shanghai, Cancun, Prague."""

_U64 = 2**64 - 1
_U256 = 2**256 - 1


# -- RLP -------------------------------------------------------------------------------------------


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(raw),)) + raw


def rlp_encode(item: RlpItem) -> bytes:
    """The RLP of a byte string or a (nested) list of them."""
    if isinstance(item, (bytes, bytearray)):
        if len(item) == 1 and item[0] < 0x80:
            return bytes(item)
        return _length_prefix(len(item), 0x80) + bytes(item)
    if isinstance(item, list):
        payload = b"".join(rlp_encode(x) for x in item)
        return _length_prefix(len(payload), 0xC0) + payload
    raise CodecError("only bytes and lists of them are RLP-encodable", got=type(item).__name__)


def rlp_item(data: bytes, pos: int, end: int) -> tuple[bool, int, int]:
    """Bounds of the canonical RLP item at ``data[pos:end]``: ``(is_list, payload_start, payload_stop)``.

    The item ends at ``payload_stop``. For a single byte below ``0x80`` the payload is the byte itself.
    Raises :class:`CodecError` on a truncated item or a non-canonical prefix.
    """
    if pos >= end:
        raise CodecError("RLP item expected, got the end of the input", got=pos)
    b0 = data[pos]
    if b0 < 0x80:
        return False, pos, pos + 1
    if b0 < 0xB8:
        start = pos + 1
        stop = start + b0 - 0x80
        if stop > end:
            raise CodecError("truncated RLP string", expected=stop - pos, got=end - pos)
        if stop == start + 1 and data[start] < 0x80:
            raise CodecError("non-canonical RLP: a single byte below 0x80 encoded as a string", got=data[start])
        return False, start, stop
    if b0 < 0xC0:
        is_list, ll = False, b0 - 0xB7
    elif b0 < 0xF8:
        start = pos + 1
        stop = start + b0 - 0xC0
        if stop > end:
            raise CodecError("truncated RLP list", expected=stop - pos, got=end - pos)
        return True, start, stop
    else:
        is_list, ll = True, b0 - 0xF7
    start = pos + 1 + ll
    if start > end:
        raise CodecError("truncated RLP length", expected=start - pos, got=end - pos)
    if data[pos + 1] == 0:
        raise CodecError("non-canonical RLP: a length with a leading zero byte")
    length = int.from_bytes(data[pos + 1:start], "big")
    if length < 56:
        raise CodecError("non-canonical RLP: a long prefix for a payload under 56 bytes", got=length)
    stop = start + length
    if stop > end:
        raise CodecError("truncated RLP item", expected=stop - pos, got=end - pos)
    return is_list, start, stop


def _decode_at(data: bytes, pos: int, end: int, depth: int) -> tuple[RlpItem, int]:
    is_list, start, stop = rlp_item(data, pos, end)
    if not is_list:
        return data[start:stop], stop
    if depth >= MAX_RLP_DEPTH:
        raise CodecError("RLP lists nested too deep", expected=f"<= {MAX_RLP_DEPTH}")
    items: list[RlpItem] = []
    p = start
    while p < stop:
        item, p = _decode_at(data, p, stop, depth + 1)
        items.append(item)
    return items, stop


def rlp_decode(data: bytes) -> RlpItem:
    """Strictly decode one RLP item spanning all of ``data``; :class:`CodecError` otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError("RLP input must be bytes", got=type(data).__name__)
    raw = bytes(data)
    item, stop = _decode_at(raw, 0, len(raw), 0)
    if stop != len(raw):
        raise CodecError("trailing bytes after the RLP item", expected=stop, got=len(raw))
    return item


# -- header ------------------------------------------------------------------------------------------

_HASH = 32
_INT64 = -64
_INT256 = -256

# (attribute, JSON-RPC name, size: bytes when > 0, integer bound in bits when < 0; 0 = extraData)
_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("parent_hash", "parentHash", _HASH),
    ("ommers_hash", "sha3Uncles", _HASH),
    ("coinbase", "miner", 20),
    ("state_root", "stateRoot", _HASH),
    ("transactions_root", "transactionsRoot", _HASH),
    ("receipts_root", "receiptsRoot", _HASH),
    ("logs_bloom", "logsBloom", 256),
    ("difficulty", "difficulty", _INT256),
    ("number", "number", _INT64),
    ("gas_limit", "gasLimit", _INT64),
    ("gas_used", "gasUsed", _INT64),
    ("timestamp", "timestamp", _INT64),
    ("extra_data", "extraData", 0),
    ("mix_hash", "mixHash", _HASH),
    ("nonce", "nonce", 8),
    ("base_fee_per_gas", "baseFeePerGas", _INT256),
    ("withdrawals_root", "withdrawalsRoot", _HASH),
    ("blob_gas_used", "blobGasUsed", _INT64),
    ("excess_blob_gas", "excessBlobGas", _INT64),
    ("parent_beacon_block_root", "parentBeaconBlockRoot", _HASH),
    ("requests_hash", "requestsHash", _HASH),
)
_MAX_EXTRA_DATA = 32


def _int_to_rlp_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _check_field(name: str, size: int, value: Any) -> None:
    if size < 0:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** (-size):
            raise CodecError(f"header field {name} out of range", expected=f"uint{-size}", got=value)
        return
    if not isinstance(value, bytes):
        raise CodecError(f"header field {name} must be bytes", got=type(value).__name__)
    if size == 0:
        if len(value) > _MAX_EXTRA_DATA:
            raise CodecError(f"header field {name} too long", expected=f"<= {_MAX_EXTRA_DATA} bytes", got=len(value))
    elif len(value) != size:
        raise CodecError(f"header field {name} has the wrong size", expected=size, got=len(value))


@dataclass(frozen=True, slots=True)
class EthHeader:
    """An Ethereum block header; ``keccak256(encode()) = hash`` is the block hash children link to.

    Optional fields belong to later forks; a header has exactly the fields of one fork
    (:data:`HEADER_FIELD_COUNTS`): a field is set if and only if every earlier one is.
    """

    parent_hash: bytes
    """Hash of the parent block."""
    ommers_hash: bytes
    """``sha3Uncles``."""
    coinbase: bytes
    """``miner``: 20-byte fee recipient."""
    state_root: bytes
    """Root of the account trie after the block: proofs verify against it."""
    transactions_root: bytes
    """Root of the transaction trie."""
    receipts_root: bytes
    """Root of the receipt trie."""
    logs_bloom: bytes
    """256-byte bloom filter of the block's logs."""
    difficulty: int
    """0 since the merge."""
    number: int
    """Block number (the height)."""
    gas_limit: int
    """Gas limit."""
    gas_used: int
    """Gas used."""
    timestamp: int
    """Block time, seconds since the Unix epoch."""
    extra_data: bytes
    """At most 32 bytes."""
    mix_hash: bytes
    """``mixHash`` (``prevRandao`` since the merge)."""
    nonce: bytes
    """8 bytes (zero since the merge)."""
    base_fee_per_gas: int | None = None
    """London and later."""
    withdrawals_root: bytes | None = None
    """Shanghai and later."""
    blob_gas_used: int | None = None
    """Cancun and later."""
    excess_blob_gas: int | None = None
    """Cancun and later."""
    parent_beacon_block_root: bytes | None = None
    """Cancun and later."""
    requests_hash: bytes | None = None
    """Prague and later."""
    _rlp: bytes = field(default=b"", init=False, repr=False, compare=False)
    _hash: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name, _, _ in _FIELDS]
        count = len(_FIELDS)
        while count > 15 and values[count - 1] is None:
            count -= 1
        if count not in HEADER_FIELD_COUNTS or any(v is None for v in values[:count]):
            raise CodecError("header fields do not match a known fork", expected=list(HEADER_FIELD_COUNTS),
                             got=[name for (name, _, _), v in zip(_FIELDS, values, strict=True) if v is not None])
        items: list[RlpItem] = []
        for (name, _, size), value in zip(_FIELDS[:count], values[:count], strict=True):
            _check_field(name, size, value)
            items.append(_int_to_rlp_bytes(value) if size < 0 else value)
        raw = rlp_encode(items)
        object.__setattr__(self, "_rlp", raw)
        object.__setattr__(self, "_hash", keccak256(raw))

    # -- what the light client reads ---------------------------------------------------------------

    @property
    def hash(self) -> bytes:
        """The block hash: ``keccak256(encode())``."""
        return self._hash

    @property
    def height(self) -> int:
        """The block number."""
        return self.number

    @property
    def timestamp_ms(self) -> int:
        """Block time in ms (``timestamp × 1000``, chains/ethereum/SPEC.md §E1)."""
        return self.timestamp * 1000

    @property
    def field_count(self) -> int:
        """Number of RLP fields (which fork's header this is)."""
        count = len(_FIELDS)
        while getattr(self, _FIELDS[count - 1][0]) is None:
            count -= 1
        return count

    # -- codec ---------------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The header's RLP, exactly as the block hash is computed over it."""
        return self._rlp

    @classmethod
    def decode(cls, data: bytes) -> EthHeader:
        """Strictly decode a header's RLP; :class:`CodecError` unless ``data`` is its canonical encoding."""
        item = rlp_decode(data)
        if not isinstance(item, list):
            raise CodecError("an Ethereum header is an RLP list", got="string")
        if len(item) not in HEADER_FIELD_COUNTS:
            raise CodecError("Ethereum header with a field count of no known fork",
                             expected=list(HEADER_FIELD_COUNTS), got=len(item))
        kwargs: dict[str, Any] = {}
        for (name, _, size), value in zip(_FIELDS, item, strict=False):
            if not isinstance(value, bytes):
                raise CodecError(f"header field {name} must be an RLP string, not a list")
            if size < 0:
                if value[:1] == b"\x00":
                    raise CodecError(f"header field {name}: integer with a leading zero byte", got=value.hex())
                kwargs[name] = int.from_bytes(value, "big")
            else:
                kwargs[name] = value
        header = cls(**kwargs)
        if header._rlp != bytes(data):  # cannot differ after a strict decode; kept as a guard
            raise CodecError("Ethereum header is not in its canonical encoding")
        return header

    @classmethod
    def from_rpc(cls, block: Mapping[str, Any]) -> EthHeader:
        """The header of a block as ``eth_getBlockByNumber`` returns it (raw JSON or web3.py's formatted dict).

        Hex strings (``0x…``) and bytes are accepted for byte fields, ints and hex quantities for integers.
        The fields present decide the fork (a later fork's field without every earlier one is
        :class:`CodecError`). When the block carries its ``hash``, the header must hash to it.
        """
        kwargs: dict[str, Any] = {}
        for name, rpc_name, size in _FIELDS:
            value = block.get(rpc_name)
            if value is None:
                continue
            kwargs[name] = _rpc_int(rpc_name, value) if size < 0 else _rpc_bytes(rpc_name, value)
        missing = [rpc for name, rpc, _ in _FIELDS[:15] if name not in kwargs]
        if missing:
            raise CodecError("block JSON lacks header fields", got=missing)
        header = cls(**kwargs)
        claimed = block.get("hash")
        if claimed is not None and _rpc_bytes("hash", claimed) != header.hash:
            raise CodecError("block JSON fields do not hash to its block hash (a field the fork has is missing?)",
                             expected=_rpc_bytes("hash", claimed).hex(), got=header.hash.hex())
        return header


def _rpc_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) % 2 == 0:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise CodecError(f"block field {name} is not 0x-prefixed hex of whole bytes", got=value)


def _rpc_int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value[2:], 16)
        except ValueError:
            pass
    raise CodecError(f"block field {name} is not an integer quantity", got=value)

