"""Solidity's ``abi.encode`` of the tuples the protocol signs, commits and sends, and its strict inverse (SPEC.md §3).

Every canonical encoding of the protocol (packets, payloads, acks, outcome records, lane configs, relay headers,
validator sets, consensus messages and sign bytes) is ``abi.encode`` of a flat tuple whose fields are ``uintN``,
``intN``, ``bytes32``, ``address``, ``string``, ``bytes`` or a dynamic array ``T[]`` of one of those. This module
encodes exactly those types; anything else is refused when the type list is first seen (a bug, not input).

:func:`decode` is strict: it accepts exactly the canonical encodings of valid values (each offset where the
canonical layout puts its tail, zero padding, nothing after the last tail, integers in range, UTF-8 text), which is
what decoding with eth_abi and comparing the re-encoding accepted. Everything else is a
:class:`~protocol.errors.CodecError`; no input makes it allocate more than its own length or recurse.

Why not eth_abi itself: importing it brings eth_utils and pydantic, ~15 MB in every node and relayer process (a
quarter of a relay validator's baseline), and its encoder is ~10x slower on these flat tuples. eth_abi stays the
reference: ``tests/unit/protocol/test_abi.py`` compares the two on random values and mutated encodings of every
type list the protocol uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final

from protocol.errors import CodecError

__all__ = ["decode", "encode"]

_W: Final = 32
_ZERO: Final = bytes(_W)

# field kinds
_UINT: Final = 0
_INT: Final = 1
_BYTES32: Final = 2
_ADDRESS: Final = 3
_STRING: Final = 4
_BYTES: Final = 5

_Kind = tuple[int, int, bool]
"""(kind, bits of an integer type, is a dynamic array of that kind)."""


def _parse(t: str) -> _Kind:
    array = t.endswith("[]")
    base = t[:-2] if array else t
    if base == "string":
        kind: _Kind = (_STRING, 0, array)
    elif base == "bytes":
        kind = (_BYTES, 0, array)
    elif base == "bytes32":
        kind = (_BYTES32, 0, array)
    elif base == "address":
        kind = (_ADDRESS, 0, array)
    elif base.startswith(("uint", "int")):
        signed = base.startswith("int")
        digits = base[3:] if signed else base[4:]
        if not digits.isdigit() or not 8 <= int(digits) <= 256 or int(digits) % 8:
            raise ValueError(f"unsupported ABI type {t!r}")
        kind = (_INT if signed else _UINT, int(digits), array)
    else:
        raise ValueError(f"unsupported ABI type {t!r}")
    if array and base.endswith("[]"):
        raise ValueError(f"unsupported ABI type {t!r} (nested arrays)")
    return kind


@lru_cache(maxsize=64)
def _layout(types: tuple[str, ...]) -> tuple[tuple[_Kind, ...], tuple[tuple[int, int], ...] | None]:
    """The fields' kinds, and the same without the array flag when no field is an array (the fast path)."""
    kinds = tuple(_parse(t) for t in types)
    flat = None if any(array for _, _, array in kinds) else tuple((k, b) for k, b, _ in kinds)
    return kinds, flat


def _is_dynamic(kind: _Kind) -> bool:
    return kind[2] or kind[0] in (_STRING, _BYTES)


# --- encoding --------------------------------------------------------------------------------------------------------


def _word(kind: int, bits: int, v: Any, types: Sequence[str]) -> bytes:
    """The head word of a static value."""
    if kind == _UINT:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << bits:
            raise CodecError(f"cannot encode {list(types)}: {v!r} is not a uint{bits}")
        return v.to_bytes(_W, "big")
    if kind == _INT:
        half = 1 << (bits - 1)
        if not isinstance(v, int) or isinstance(v, bool) or not -half <= v < half:
            raise CodecError(f"cannot encode {list(types)}: {v!r} is not an int{bits}")
        return v.to_bytes(_W, "big", signed=True)
    if not isinstance(v, (bytes, bytearray)):
        raise CodecError(f"cannot encode {list(types)}: {type(v).__name__} is not bytes")
    if kind == _BYTES32:
        if len(v) > _W:
            raise CodecError(f"cannot encode {list(types)}: {len(v)} bytes do not fit a bytes32")
        return bytes(v) + _ZERO[len(v):]  # bytesN is right-padded, as eth_abi and Solidity do
    if len(v) != 20:
        raise CodecError(f"cannot encode {list(types)}: an address is 20 bytes", got=len(v))
    return _ZERO[:12] + bytes(v)


def _blob(kind: int, v: Any, types: Sequence[str]) -> bytes:
    """The tail of a ``string`` or ``bytes`` value: length word, the bytes, zero padding to a word."""
    if kind == _STRING:
        if not isinstance(v, str):
            raise CodecError(f"cannot encode {list(types)}: {type(v).__name__} is not a string")
        try:
            raw = v.encode()
        except UnicodeEncodeError as exc:
            raise CodecError(f"cannot encode {list(types)}: {exc}") from exc
    elif isinstance(v, (bytes, bytearray)):
        raw = bytes(v)
    else:
        raise CodecError(f"cannot encode {list(types)}: {type(v).__name__} is not bytes")
    return len(raw).to_bytes(_W, "big") + raw + _ZERO[:-len(raw) % _W]


def _tuple(kinds: Sequence[tuple[int, int]], values: Sequence[Any], types: Sequence[str]) -> bytes:
    """The encoding of a tuple of non-array fields (heads, then the tails of the dynamic ones in order)."""
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = _W * len(kinds)
    for (kind, bits), v in zip(kinds, values, strict=True):
        if kind == _UINT and type(v) is int and 0 <= v < 1 << bits:  # the common case, inline
            heads.append(v.to_bytes(_W, "big"))
        elif kind >= _STRING:
            tail = _blob(kind, v, types)
            heads.append(offset.to_bytes(_W, "big"))
            tails.append(tail)
            offset += len(tail)
        else:
            heads.append(_word(kind, bits, v, types))
    return b"".join(heads) + b"".join(tails)


def encode(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """``abi.encode`` of ``values`` as the tuple ``types``; :class:`CodecError` for a value its type cannot hold.

    Integers are ``int`` (not ``bool``); ``bytes32`` takes at most 32 bytes (right-padded), ``address`` exactly 20,
    ``string`` a ``str``, ``bytes`` bytes; an array a list or tuple."""
    layout, flat = _layout(tuple(types))
    if not isinstance(values, (list, tuple)) or len(values) != len(layout):
        raise CodecError(f"cannot encode {list(types)}: {len(layout)} values expected",
                         got=len(values) if isinstance(values, (list, tuple)) else type(values).__name__)
    if flat is not None:
        return _tuple(flat, values, types)
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = _W * len(layout)
    for (kind, bits, array), v in zip(layout, values, strict=True):
        if array:
            if not isinstance(v, (list, tuple)):
                raise CodecError(f"cannot encode {list(types)}: {type(v).__name__} is not a list")
            tail = len(v).to_bytes(_W, "big") + _tuple([(kind, bits)] * len(v), v, types)
        elif kind >= _STRING:
            tail = _blob(kind, v, types)
        else:
            heads.append(_word(kind, bits, v, types))
            continue
        heads.append(offset.to_bytes(_W, "big"))
        tails.append(tail)
        offset += len(tail)
    return b"".join(heads) + b"".join(tails)


# --- strict decoding -------------------------------------------------------------------------------------------------


class _Reader:
    """Reads the canonical layout in place and refuses the first byte that differs from it."""

    __slots__ = ("data", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what

    def uint_at(self, pos: int) -> int:
        if pos + _W > len(self.data):
            raise CodecError(f"{self.what}: not a valid encoding: too short", got=len(self.data))
        return int.from_bytes(self.data[pos:pos + _W], "big")

    def static(self, kind: int, bits: int, pos: int) -> Any:
        word = self.data[pos:pos + _W]
        if len(word) != _W:
            raise CodecError(f"{self.what}: not a valid encoding: too short", got=len(self.data))
        if kind == _UINT:
            v = int.from_bytes(word, "big")
            if v >> bits:
                raise CodecError(f"{self.what}: integer out of range of uint{bits}", got=v)
            return v
        if kind == _INT:
            v = int.from_bytes(word, "big", signed=True)
            if not -(1 << (bits - 1)) <= v < 1 << (bits - 1):
                raise CodecError(f"{self.what}: integer out of range of int{bits}", got=v)
            return v
        if kind == _ADDRESS:
            if word[:12] != _ZERO[:12]:
                raise CodecError(f"{self.what}: an address word is left-padded with zeros", got=word.hex())
            return word[12:]
        return word

    def blob(self, kind: int, start: int) -> tuple[Any, int]:
        """The ``string`` or ``bytes`` whose tail starts at ``start``, and where the next tail must start."""
        length = self.uint_at(start)
        end = start + _W + length
        if end > len(self.data):
            raise CodecError(f"{self.what}: length runs past the end of the encoding", got=length)
        pad = -length % _W
        if self.data[end:end + pad] != _ZERO[:pad]:
            raise CodecError(f"{self.what}: not the canonical encoding", got="non-zero padding")
        raw = self.data[start + _W:end]
        if kind == _STRING:
            try:
                return raw.decode("utf-8", errors="strict"), end + pad
            except UnicodeDecodeError as exc:
                raise CodecError(f"{self.what}: invalid UTF-8") from exc
        return raw, end + pad

    def tuple_at(self, kinds: Sequence[tuple[int, int]], base: int) -> tuple[tuple[Any, ...], int]:
        """The tuple whose heads start at ``base`` (offsets relative to it), and the end of its last tail."""
        values: list[Any] = []
        expected = base + _W * len(kinds)
        if expected > len(self.data):
            raise CodecError(f"{self.what}: not a valid encoding: too short", got=len(self.data))
        for i, (kind, bits) in enumerate(kinds):
            pos = base + _W * i
            if kind >= _STRING:
                if self.uint_at(pos) != expected - base:
                    raise CodecError(f"{self.what}: not the canonical encoding", got=f"offset of field {i}")
                value, expected = self.blob(kind, expected)
                values.append(value)
            else:
                values.append(self.static(kind, bits, pos))
        return tuple(values), expected


def decode(types: Sequence[str], data: bytes, what: str = "ABI tuple") -> tuple[Any, ...]:
    """The values of which ``data`` is the canonical :func:`encode` as ``types``; :class:`CodecError` otherwise.

    Values come back as :func:`encode` takes them: ``int``, ``bytes`` (``bytes32`` all 32 bytes, ``address`` 20),
    ``str``, and a tuple for an array. ``what`` names the record in error messages."""
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError(f"{what}: expected bytes", got=type(data).__name__)
    data = bytes(data)
    layout, flat = _layout(tuple(types))
    reader = _Reader(data, what)
    if flat is not None:
        values, end = reader.tuple_at(flat, 0)
    else:
        out: list[Any] = []
        end = _W * len(layout)
        if end > len(data):
            raise CodecError(f"{what}: not a valid encoding: too short", got=len(data))
        for i, (kind, bits, array) in enumerate(layout):
            pos = _W * i
            if not (array or kind >= _STRING):
                out.append(reader.static(kind, bits, pos))
                continue
            if reader.uint_at(pos) != end:
                raise CodecError(f"{what}: not the canonical encoding", got=f"offset of field {i}")
            if not array:
                value, end = reader.blob(kind, end)
                out.append(value)
                continue
            count = reader.uint_at(end)
            if count > (len(data) - end - _W) // _W:  # each element takes at least its head word
                raise CodecError(f"{what}: array length runs past the end of the encoding", got=count)
            value, end = reader.tuple_at([(kind, bits)] * count, end + _W)
            out.append(value)
        values = tuple(out)
    if end != len(data):
        raise CodecError(f"{what}: not the canonical encoding", got=f"{len(data) - end} bytes after the last field")
    return values
