"""The protobuf wire format, strictly: the layer under every hand-written codec of parkrelay (the Fabric messages of
:mod:`chains.fabric.proto`, the ABCI messages of :mod:`relay.chain.abci.types`). Pure: no I/O.

Lifted unchanged from :mod:`chains.fabric.proto` (which now imports it); the encoding itself is
https://protobuf.dev/programming-guides/encoding/.

**What a decoder built on it refuses**, always with :class:`~protocol.errors.CodecError`:

* input that is not ``bytes``, or longer than the caller's ``max_bytes``;
* wire types other than 0 (varint), 1 (64-bit), 2 (length-delimited) and 5 (32-bit): groups (3, 4) and 6, 7;
* a varint longer than 10 bytes, over 64 bits, or not minimal (a redundant ``0x80 … 0x00`` continuation); a
  truncated varint or fixed-width field; a length that runs past the end; field number 0 or above ``2**29 - 1``;
* a known field with another wire type than its kind's (a repeated varint kind may also come packed, wire type 2,
  as proto3 encoders write it);
* a singular field that appears twice (protobuf's "last one wins" would let two parsers read two values from one
  byte string); more elements of a repeated field than the caller's ``max_repeated``;
* ``int32``/``uint32``/``bool`` out of range; a ``string`` that is not UTF-8;
* an unknown field, when the message's :class:`Spec` says ``allow_unknown=False`` (otherwise it is skipped, its wire
  type still checked).

Missing fields are absent from the decoded mapping (the getters give proto3 defaults: 0, empty, ``None`` for an
absent sub-message). :class:`Writer` writes fields in the order called (callers write ascending numbers, as Go's
encoders do) and omits proto3 defaults unless told to keep a present, empty sub-message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from protocol.errors import CodecError

__all__ = [
    "BOOL",
    "BYTES",
    "I32",
    "I64",
    "INT32",
    "INT64",
    "LEN",
    "LEN_KINDS",
    "STRING",
    "U64_MAX",
    "UINT32",
    "UINT64",
    "VARINT",
    "VARINT_KINDS",
    "Field",
    "Spec",
    "Writer",
    "decode",
    "enc_varint",
    "get_bool",
    "get_bytes",
    "get_int",
    "get_list",
    "get_opt",
    "get_str",
    "read_varint",
    "scalar",
    "spec",
    "split_fields",
]

U64_MAX: Final = (1 << 64) - 1
"""The largest value a varint may carry."""

VARINT: Final = 0
"""Wire type 0: a base-128 varint."""
I64: Final = 1
"""Wire type 1: 8 bytes, little-endian."""
LEN: Final = 2
"""Wire type 2: a varint length, then that many bytes (bytes, strings, sub-messages, packed scalars)."""
I32: Final = 5
"""Wire type 5: 4 bytes, little-endian."""

Field = tuple[int, int, "int | bytes"]
"""One field as read: ``(field number, wire type, value)`` (an ``int`` for wire types 0, 1, 5; ``bytes`` for 2)."""

# Field kinds: how a known field's value is read.
BYTES: Final = "bytes"
"""``bytes``, and every sub-message (decoded by the caller from its raw bytes)."""
STRING: Final = "string"
"""``string``: UTF-8."""
UINT64: Final = "uint64"
"""``uint64``."""
INT64: Final = "int64"
"""``int64`` (two's complement in 10 bytes when negative)."""
INT32: Final = "int32"
"""``int32`` and enums: a sign-extended varint in the int32 range."""
UINT32: Final = "uint32"
"""``uint32``: a varint below ``2**32``."""
BOOL: Final = "bool"
"""``bool``: the varint 0 or 1."""
LEN_KINDS: Final = frozenset({BYTES, STRING})
"""Kinds on wire type 2."""
VARINT_KINDS: Final = frozenset({UINT64, INT64, INT32, UINT32, BOOL})
"""Kinds on wire type 0 (packable when repeated)."""


def read_varint(data: bytes, i: int, what: str) -> tuple[int, int]:
    """The minimal varint at ``data[i:]`` and the index after it."""
    value = shift = 0
    start = i
    n = len(data)
    while True:
        if i >= n:
            raise CodecError(f"{what}: truncated varint", got=n)
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise CodecError(f"{what}: varint longer than 10 bytes")
    if i - start > 1 and b == 0:
        raise CodecError(f"{what}: non-minimal varint")
    if value > U64_MAX:
        raise CodecError(f"{what}: varint over 64 bits")
    return value, i


def split_fields(data: bytes, what: str) -> list[Field]:
    """Every ``(field number, wire type, value)`` of a message, in order."""
    if not isinstance(data, bytes):
        raise CodecError(f"{what}: expected bytes", got=type(data).__name__)
    out: list[Field] = []
    i, n = 0, len(data)
    while i < n:
        key, i = read_varint(data, i, what)
        num, wire = key >> 3, key & 7
        if num == 0 or num > 0x1FFFFFFF:
            raise CodecError(f"{what}: invalid field number", got=num)
        value: int | bytes
        if wire == VARINT:
            value, i = read_varint(data, i, what)
        elif wire == LEN:
            length, i = read_varint(data, i, what)
            if length > n - i:
                raise CodecError(f"{what}: field {num} runs past the end", expected=f"<= {n - i} bytes", got=length)
            value = data[i:i + length]
            i += length
        elif wire == I64:
            if n - i < 8:
                raise CodecError(f"{what}: truncated 64-bit field {num}")
            value = int.from_bytes(data[i:i + 8], "little")
            i += 8
        elif wire == I32:
            if n - i < 4:
                raise CodecError(f"{what}: truncated 32-bit field {num}")
            value = int.from_bytes(data[i:i + 4], "little")
            i += 4
        else:
            raise CodecError(f"{what}: unsupported wire type {wire} of field {num}")
        out.append((num, wire, value))
    return out


@dataclass(frozen=True, slots=True)
class Spec:
    """A message's known fields: number -> (name, kind, repeated)."""

    name: str
    """The message's name, as errors print it."""
    fields: Mapping[int, tuple[str, str, bool]]
    """Field number -> (field name, kind, repeated)."""
    allow_unknown: bool = True
    """Skip fields not in :attr:`fields` (``True``), or refuse them (``False``: a peer pinned to one schema)."""


def spec(msg: str, /, **fields: tuple[int, str] | tuple[int, str, bool]) -> Spec:
    """A :class:`Spec` that skips unknown fields: ``spec("Msg", name=(1, STRING), items=(2, BYTES, True))``."""
    table: dict[int, tuple[str, str, bool]] = {}
    for fname, desc in fields.items():
        repeated = len(desc) > 2 and bool(desc[2])
        table[desc[0]] = (fname, desc[1], repeated)
    return Spec(msg, table)


def scalar(kind: str, value: int | bytes, what: str) -> int | bool | bytes | str:
    """The value of a field of ``kind`` read off the wire as ``value``, range-checked."""
    if kind in LEN_KINDS:
        assert isinstance(value, bytes)
        if kind == BYTES:
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{what}: string is not UTF-8") from exc
    assert isinstance(value, int)
    if kind == UINT64:
        return value
    if kind == INT64:
        return value - (1 << 64) if value >> 63 else value
    if kind == INT32:
        signed = value - (1 << 64) if value >> 63 else value
        if not -(1 << 31) <= signed < (1 << 31):
            raise CodecError(f"{what}: int32 out of range", got=signed)
        return signed
    if kind == UINT32:
        if value >> 32:
            raise CodecError(f"{what}: uint32 out of range", got=value)
        return value
    if kind == BOOL:
        if value > 1:
            raise CodecError(f"{what}: bool out of range", got=value)
        return value == 1
    raise AssertionError(kind)  # pragma: no cover


def _packed(data: bytes, what: str) -> list[int]:
    """The varints of a packed repeated field."""
    out: list[int] = []
    i = 0
    while i < len(data):
        v, i = read_varint(data, i, what)
        out.append(v)
    return out


def decode(data: bytes, spec: Spec, *, max_bytes: int, max_repeated: int) -> dict[str, object]:
    """The known fields of one message by name (singular: value; repeated: list), strictly (module docstring).
    No message is larger than ``max_bytes``; no repeated field has more than ``max_repeated`` elements."""
    if isinstance(data, bytes) and len(data) > max_bytes:
        raise CodecError(f"{spec.name} too large", expected=f"<= {max_bytes} bytes", got=len(data))
    out: dict[str, object] = {}
    for num, wire, value in split_fields(data, spec.name):
        known = spec.fields.get(num)
        if known is None:
            if not spec.allow_unknown:
                raise CodecError(f"{spec.name}: unknown field {num}", got=num)
            continue
        name, kind, repeated = known
        expected_wire = LEN if kind in LEN_KINDS else VARINT
        if repeated and wire == LEN and kind in VARINT_KINDS:
            assert isinstance(value, bytes)
            values: list[int | bytes] = list(_packed(value, f"{spec.name}.{name}"))
        elif wire != expected_wire:
            raise CodecError(f"{spec.name}.{name}: wrong wire type", expected=expected_wire, got=wire)
        else:
            values = [value]
        for raw in values:
            v = scalar(kind, raw, f"{spec.name}.{name}")
            if repeated:
                items = out.setdefault(name, [])
                assert isinstance(items, list)
                if len(items) >= max_repeated:
                    raise CodecError(f"{spec.name}.{name}: too many elements")
                items.append(v)
            else:
                if name in out:
                    raise CodecError(f"{spec.name}.{name}: singular field repeated")
                out[name] = v
    return out


def get_bytes(d: Mapping[str, object], name: str) -> bytes:
    """A ``bytes`` field (empty if absent)."""
    v = d.get(name, b"")
    assert isinstance(v, bytes)
    return v


def get_str(d: Mapping[str, object], name: str) -> str:
    """A ``string`` field (empty if absent)."""
    v = d.get(name, "")
    assert isinstance(v, str)
    return v


def get_int(d: Mapping[str, object], name: str) -> int:
    """An integer or enum field (0 if absent)."""
    v = d.get(name, 0)
    assert isinstance(v, int)
    return int(v)


def get_bool(d: Mapping[str, object], name: str) -> bool:
    """A ``bool`` field (``False`` if absent)."""
    v = d.get(name, False)
    assert isinstance(v, bool)
    return v


def get_opt(d: Mapping[str, object], name: str) -> bytes | None:
    """A sub-message's raw bytes, ``None`` if absent (present and empty is ``b""``)."""
    v = d.get(name)
    assert v is None or isinstance(v, bytes)
    return v


def get_list(d: Mapping[str, object], name: str) -> tuple[bytes, ...]:
    """A repeated length-delimited field (an empty tuple if absent)."""
    v = d.get(name, [])
    assert isinstance(v, list)
    return tuple(v)


# --- the encoder (Go's field order, proto3 defaults omitted) -------------------------------------------------


def enc_varint(value: int) -> bytes:
    """The minimal varint of ``0 <= value < 2**64``."""
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class Writer:
    """Appends fields in the order written (callers write them in ascending number, as Go does). Integers are
    written as varints, negatives as 64-bit two's complement (``int32``/``int64``/enums, as Go writes them)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def uint(self, num: int, value: int) -> Writer:
        """A varint field; 0 is omitted."""
        if value:
            self.buf += enc_varint(num << 3) + enc_varint(value & U64_MAX)
        return self

    def boolean(self, num: int, value: bool) -> Writer:
        """A ``bool`` field; ``False`` is omitted."""
        return self.uint(num, 1 if value else 0)

    def raw(self, num: int, value: bytes | None, *, keep_empty: bool = False) -> Writer:
        """A length-delimited field; empty is omitted unless ``keep_empty`` (a present, empty sub-message)."""
        if value is None or (not value and not keep_empty):
            return self
        self.buf += enc_varint(num << 3 | LEN) + enc_varint(len(value)) + value
        return self

    def text(self, num: int, value: str) -> Writer:
        """A ``string`` field; empty is omitted."""
        return self.raw(num, value.encode("utf-8"))

    def each(self, num: int, values: Iterable[bytes]) -> Writer:
        """A repeated length-delimited field: every element, empty ones too."""
        for v in values:
            self.buf += enc_varint(num << 3 | LEN) + enc_varint(len(v)) + v
        return self

    def texts(self, num: int, values: Iterable[str]) -> Writer:
        """A repeated ``string`` field: every element, empty ones too."""
        return self.each(num, (v.encode("utf-8") for v in values))

    def packed(self, num: int, values: Iterable[int]) -> Writer:
        """A repeated varint field, packed (proto3's default); no elements writes nothing."""
        body = b"".join(enc_varint(v & U64_MAX) for v in values)
        return self.raw(num, body)

    def done(self) -> bytes:
        """The message so far."""
        return bytes(self.buf)
