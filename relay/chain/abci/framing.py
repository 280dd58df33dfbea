"""CometBFT v0.38's ABCI socket framing: every message is an unsigned base-128 varint (Go's ``binary.PutUvarint``)
holding the message's length, then the message (``abci/types/messages.go`` ``WriteMessage``/``ReadMessage`` over
``libs/protoio``). Tendermint ≤ 0.34 used a *signed* (zig-zag) varint; that framing is not accepted here.

**What is refused**, with :class:`FrameError` (a :class:`~protocol.errors.CodecError`):

* a length prefix longer than 10 bytes, over 64 bits, or not minimal (``0x80 0x00`` for 0; Go's reader would accept
  it, its writer never writes it);
* a length of 0: every ABCI message CometBFT sends is a ``Request`` with one variant set, at least 2 bytes;
* a length above the reader's bound (:data:`~relay.chain.abci.types.MAX_MESSAGE_BYTES` by default; CometBFT reads up
  to ``math.MaxInt32``) — refused from the prefix alone, before any of the body is read;
* a stream that ends inside a prefix or a body (:attr:`FrameError.truncated`).

A stream that ends cleanly between two frames is not an error: :func:`read_frame` returns ``None``.
"""

from __future__ import annotations

import asyncio
from typing import Final

from chains.common.protowire import U64_MAX, enc_varint
from protocol.errors import CodecError
from relay.chain.abci.types import MAX_MESSAGE_BYTES

__all__ = ["MAX_PREFIX_BYTES", "FrameError", "encode_frame", "read_frame", "split_frame"]

MAX_PREFIX_BYTES: Final = 10
"""Longest varint length prefix (a 64-bit value)."""


class FrameError(CodecError):
    """A malformed frame: the connection cannot be read further."""

    def __init__(self, message: str, *, truncated: bool = False, expected: object = None, got: object = None) -> None:
        self.truncated = truncated
        """The stream ended inside a frame (rather than holding bad bytes)."""
        super().__init__(message, expected=expected, got=got)


def encode_frame(payload: bytes) -> bytes:
    """``payload`` with its uvarint length prefix."""
    return enc_varint(len(payload)) + payload


def _prefix(buf: bytes | bytearray, *, at_eof: bool) -> tuple[int, int] | None:
    """The length in the varint at the start of ``buf`` and the prefix's size; ``None`` if more bytes are needed."""
    value = 0
    for i in range(min(len(buf), MAX_PREFIX_BYTES)):
        b = buf[i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                raise FrameError("non-minimal length prefix", got=bytes(buf[:i + 1]).hex())
            if value > U64_MAX:
                raise FrameError("length prefix over 64 bits", got=bytes(buf[:i + 1]).hex())
            return value, i + 1
    if len(buf) >= MAX_PREFIX_BYTES:
        raise FrameError("length prefix longer than 10 bytes", expected=f"<= {MAX_PREFIX_BYTES} bytes")
    if at_eof:
        raise FrameError("stream ended inside a length prefix", truncated=True, got=len(buf))
    return None


def _check_length(length: int, max_bytes: int) -> None:
    if length == 0:
        raise FrameError("empty frame", expected=">= 1 byte", got=0)
    if length > max_bytes:
        raise FrameError("frame too large", expected=f"<= {max_bytes} bytes", got=length)


def split_frame(buf: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, at_eof: bool = False) -> tuple[bytes, int] | None:
    """The first frame's payload in ``buf`` and the bytes it took; ``None`` if ``buf`` holds only part of a frame and
    more may come (``at_eof=False``). With ``at_eof=True`` a partial frame is a truncated one. Pure: the codec of
    :func:`read_frame`, for tests and captured byte streams."""
    head = _prefix(buf, at_eof=at_eof)
    if head is None:
        return None
    length, used = head
    _check_length(length, max_bytes)
    end = used + length
    if end > len(buf):
        if at_eof:
            raise FrameError("stream ended inside a frame", truncated=True, expected=length, got=len(buf) - used)
        return None
    return bytes(buf[used:end]), end


async def read_frame(reader: asyncio.StreamReader, *, max_bytes: int = MAX_MESSAGE_BYTES) -> bytes | None:
    """The next frame's payload from ``reader``; ``None`` when the stream ends cleanly before a frame. The prefix is
    read byte by byte and checked before the body is read, so an oversized length never allocates its body."""
    prefix = bytearray()
    while True:
        try:
            b = await reader.readexactly(1)
        except asyncio.IncompleteReadError:
            if not prefix:
                return None
            _prefix(prefix, at_eof=True)
            raise AssertionError("unreachable: a partial prefix at EOF raises") from None  # pragma: no cover
        prefix += b
        head = _prefix(prefix, at_eof=False)
        if head is not None:
            break
    length, _ = head
    _check_length(length, max_bytes)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError("stream ended inside a frame", truncated=True, expected=length,
                         got=len(exc.partial)) from None
