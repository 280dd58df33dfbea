"""The consensus driver's re-sends back off while a height stalls, and a message still on its way to a peer is not
sent there again: under load, re-sending every proposal of a stalled height (megabytes each) every second to
validators too busy to read them kept a devnet's relay chain at one height for minutes."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from chains.common import jsonrpc as rpc
from relay.chain.node import RESEND_MAX_S, BftDriver
from tests.loopback import serve_post


class _Node:
    """The driver's view of its node: a head whose height a script moves, and the pauses it was asked to wait."""

    def __init__(self, moves_after: set[int], stop_after: int) -> None:
        self.head = SimpleNamespace(header=SimpleNamespace(height=5))
        self.pauses: list[float] = []
        self.moves_after, self.stop_after = moves_after, stop_after
        self.spawned: list[Any] = []

    async def wait_for_head(self, timeout_s: float) -> None:
        self.pauses.append(timeout_s)
        if len(self.pauses) in self.moves_after:
            self.head.header.height += 1
        if len(self.pauses) >= self.stop_after:
            raise asyncio.CancelledError

    def _spawn(self, coro: Any) -> None:
        coro.close()
        self.spawned.append(coro)


class _Core:
    def __init__(self) -> None:
        self.gossiped = 0

    def gossip(self) -> tuple[Any, ...]:
        self.gossiped += 1
        return ()


def _driver(node: Any) -> BftDriver:
    driver = BftDriver.__new__(BftDriver)
    driver.log = logging.LoggerAdapter(logging.getLogger("test"), {})
    driver.node = node
    driver.core = _Core()  # type: ignore[assignment]
    driver._catch_up = lambda: None  # type: ignore[method-assign]
    driver._sending = set()
    return driver


async def test_re_sends_back_off_while_the_height_stalls_and_reset_when_it_moves() -> None:
    node = _Node(moves_after={6}, stop_after=9)
    driver = _driver(node)
    try:
        await driver._resend_loop(1.0)
    except asyncio.CancelledError:
        pass
    assert node.pauses == [1.0, 2.0, 4.0, RESEND_MAX_S, RESEND_MAX_S, RESEND_MAX_S, 1.0, 2.0, 4.0]
    assert driver.core.gossiped == 7  # type: ignore[attr-defined]  # each pause but the one the height moved in
    node = _Node(moves_after=set(), stop_after=3)
    try:
        await _driver(node)._resend_loop(8.0)  # a propose timeout longer than the cap: never shortened
    except asyncio.CancelledError:
        pass
    assert node.pauses == [8.0, 8.0, 8.0]


async def test_a_message_on_its_way_to_a_peer_is_not_sent_there_again() -> None:
    got: list[Any] = []
    arrived, release = asyncio.Event(), asyncio.Event()

    async def consensus(request: web.Request) -> web.Response:
        got.append(rpc.decode_body(await request.read()))
        arrived.set()
        if len(got) == 1:
            await release.wait()  # the first answer waits until the test lets it go
        return web.json_response({"ok": True})

    async with serve_post("/p2p/consensus", consensus) as peer, aiohttp.ClientSession() as session:
        driver = _driver(SimpleNamespace(_session=session, peers=[peer]))
        raw = bytes(range(256)) * 40
        first = asyncio.create_task(driver._broadcast(raw))
        await asyncio.wait_for(arrived.wait(), 10)
        await driver._broadcast(raw)  # the first is still being answered: skipped
        await driver._broadcast(b"another message")
        assert [g["msg"] for g in got] == [raw.hex(), b"another message".hex()]
        assert not first.done()
        release.set()
        await first
        await driver._broadcast(raw)  # delivered by now: a re-send goes out
        assert len(got) == 3 and got[2] == {"msg": raw.hex()} and driver._sending == set()
