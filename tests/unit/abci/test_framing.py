"""CometBFT v0.38's socket framing (uvarint length prefix): what is read, and what is refused with FrameError."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import CodecError
from relay.chain.abci.framing import FrameError, encode_frame, read_frame, split_frame

FLUSH = b"\x12\x00"


def test_a_frame_is_a_uvarint_length_then_the_message() -> None:
    assert encode_frame(FLUSH) == b"\x02\x12\x00"
    assert encode_frame(b"x" * 300)[:2] == b"\xac\x02"
    assert split_frame(b"\x02\x12\x00") == (FLUSH, 3)


def test_back_to_back_frames_split_in_order_and_a_partial_one_waits() -> None:
    stream = encode_frame(FLUSH) + encode_frame(b"abc") + encode_frame(b"x" * 200)[:50]
    first = split_frame(stream)
    assert first == (FLUSH, 3)
    second = split_frame(stream[3:])
    assert second == (b"abc", 4)
    assert split_frame(stream[7:]) is None
    assert split_frame(b"\xac") is None, "half a prefix: more bytes may come"


REFUSED: list[tuple[str, bytes, int, str, bool]] = [
    ("non-minimal prefix", b"\x82\x00" + FLUSH, 1 << 20, "non-minimal", False),
    ("non-minimal zero", b"\x80\x00", 1 << 20, "non-minimal", False),
    ("prefix longer than 10 bytes", b"\xff" * 10 + b"\x01", 1 << 20, "longer than 10 bytes", False),
    ("prefix over 64 bits", b"\xff" * 9 + b"\x02", 1 << 20, "over 64 bits", False),
    ("zero length", b"\x00", 1 << 20, "empty frame", False),
    ("oversized", encode_frame(b"x" * 101), 100, "too large", False),
    ("huge length, no body", b"\xff\xff\xff\xff\x0f", 1 << 20, "too large", False),
    ("truncated prefix", b"\xac", 1 << 20, "inside a length prefix", True),
    ("truncated body", b"\x05\x12\x00", 1 << 20, "inside a frame", True),
]


@pytest.mark.parametrize(("case", "stream", "limit", "message", "truncated"), REFUSED, ids=[c[0] for c in REFUSED])
def test_split_frame_refuses(case: str, stream: bytes, limit: int, message: str, truncated: bool) -> None:
    with pytest.raises(FrameError) as info:
        split_frame(stream, max_bytes=limit, at_eof=True)
    assert isinstance(info.value, CodecError) and info.value.code == "codec.invalid"
    assert message in str(info.value)
    assert info.value.truncated is truncated


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize(("case", "stream", "limit", "message", "truncated"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_read_frame_refuses(case: str, stream: bytes, limit: int, message: str, truncated: bool) -> None:
    with pytest.raises(FrameError) as info:
        await read_frame(_reader(stream), max_bytes=limit)
    assert message in str(info.value)
    assert info.value.truncated is truncated


async def test_read_frame_reads_frames_then_none_at_a_clean_end() -> None:
    reader = _reader(encode_frame(FLUSH) + encode_frame(b"y" * 1000))
    assert await read_frame(reader) == FLUSH
    assert await read_frame(reader) == b"y" * 1000
    assert await read_frame(reader) is None


async def test_an_oversized_length_is_refused_without_waiting_for_its_body() -> None:
    """The prefix alone decides: the reader has no body bytes and no EOF, yet the frame is refused at once."""
    reader = asyncio.StreamReader()
    reader.feed_data(b"\xff\xff\xff\xff\x07")  # 2**31 - 1: CometBFT's own maximum
    with pytest.raises(FrameError, match="too large"):
        await asyncio.wait_for(read_frame(reader, max_bytes=1 << 20), timeout=5)


def test_a_frame_at_the_limit_is_accepted() -> None:
    assert split_frame(encode_frame(b"x" * 100), max_bytes=100) == (b"x" * 100, 101)
