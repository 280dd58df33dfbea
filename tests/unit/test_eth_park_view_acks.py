"""The operator's view of an Ethereum park reads the bridge's ``write_ack`` logs incrementally: a view reused over
many packets (``parkrelay packets list``, the soak's drain) reads each log once instead of every log per packet."""

from __future__ import annotations

import asyncio
from typing import Any

from protocol.codec import encode_ack
from protocol.types import Acknowledgement, AckStatus
from relay.ops.parks import EthPark


class _Source:
    def __init__(self) -> None:
        self.head = 0
        self.logs: list[dict[str, Any]] = []
        self.reads: list[tuple[int, int]] = []

    async def latest_height(self) -> int:
        return self.head

    async def events(self, start: int, end: int, kind: str) -> list[dict[str, Any]]:
        assert kind == "write_ack"
        self.reads.append((start, end))
        return [e for e in self.logs if start <= e["height"] <= end]


def _view(src: _Source) -> EthPark:
    view = EthPark.__new__(EthPark)
    view._run = lambda fn: asyncio.run(fn(src))  # type: ignore[method-assign]
    return view


def _log(height: int, seq: int, code: str) -> dict[str, Any]:
    status = AckStatus.SUCCESS if code == "ok" else AckStatus.ERROR
    ack = encode_ack(Acknowledgement(status, code, b""))
    return {"height": height, "src": "dpos-park", "lane": "lane-0", "sequence": seq, "ack": ack.hex()}


def test_acks_are_read_once_and_then_only_from_the_last_block() -> None:
    src = _Source()
    src.logs = [_log(3, 1, "ok"), _log(5, 2, "right.exists")]
    src.head = 6
    view = _view(src)
    a1 = view.ack("dpos-park", "lane-0", 1)
    assert a1 is not None and a1.success
    a2 = view.ack("dpos-park", "lane-0", 2)
    assert a2 is not None and not a2.success and a2.code == "right.exists"
    assert src.reads == [(0, 6)]  # the second packet came from the first read
    assert view.ack("dpos-park", "lane-0", 3) is None  # not written yet: reads only what is new (nothing)
    src.logs.append(_log(8, 3, "ok"))
    src.head = 9
    a3 = view.ack("dpos-park", "lane-0", 3)
    assert a3 is not None and a3.success
    assert src.reads == [(0, 6), (7, 9)]
    assert view.ack("other-park", "lane-0", 1) is None  # another source's packet: not confused with ours
