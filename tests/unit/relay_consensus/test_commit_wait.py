"""The pause after a decided height is what is left of ``commit_ms`` since the height started (at least
``COMMIT_WAIT_MIN_MS``): ``commit_ms`` is the block interval. A 10,000-packet backlog's full relay blocks took about a
second to decide and were then followed by a whole ``commit_ms`` more: blocks came every 2 s instead of every 1 s,
exactly when the relay chain had the most to do."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from relay.chain.consensus import ScheduleTimeout, Timeout, TimeoutKind
from relay.chain.node import COMMIT_WAIT_MIN_MS, BftDriver


class _Core:
    def __init__(self) -> None:
        self.timeouts: list[Timeout] = []

    def on_timeout(self, t: Timeout) -> list[Any]:
        self.timeouts.append(t)
        return []


def _driver() -> BftDriver:
    driver = BftDriver.__new__(BftDriver)
    driver.log = logging.LoggerAdapter(logging.getLogger("test"), {})
    driver.core = _Core()  # type: ignore[assignment]
    driver._catch_up = lambda: None  # type: ignore[method-assign]
    driver._timers = set()
    driver._height_started = None
    return driver


def test_the_pause_is_what_is_left_of_the_interval_and_never_below_the_floor() -> None:
    d = _driver()
    assert d._commit_wait_ms(1000, 50.0) == 1000  # before any height started by a commit pause: the whole interval
    d._height_started = 100.0
    assert d._commit_wait_ms(1000, 100.03) == 970  # a block decided in 30 ms: the interval stays 1 s
    assert d._commit_wait_ms(1000, 100.7) == 300
    assert d._commit_wait_ms(1000, 100.9) == COMMIT_WAIT_MIN_MS  # 100 ms left: the floor for late precommits
    assert d._commit_wait_ms(1000, 101.5) == COMMIT_WAIT_MIN_MS  # took longer than the interval: the floor
    assert d._commit_wait_ms(100, 101.5) == 100  # an interval below the floor is not lengthened
    assert d._commit_wait_ms(1000, 99.0) == 1000  # a clock that went back never lengthens the pause


async def test_a_commit_timeout_starts_the_height_and_the_next_pause_counts_from_it() -> None:
    d = _driver()
    loop = asyncio.get_running_loop()
    commit = Timeout(TimeoutKind.COMMIT, 4, 0)
    d._handle([ScheduleTimeout(commit, 1000)])
    (first,) = d._timers
    assert abs(first.when() - loop.time() - 1.0) < 0.05  # the first height: the whole commit_ms
    first.cancel()
    d._timers.clear()
    d._on_timeout(commit, [first])  # the pause ended: height 5 starts now
    assert d.core.timeouts == [commit]  # type: ignore[union-attr]
    started = d._height_started
    assert started is not None and abs(started - loop.time()) < 0.05
    await asyncio.sleep(0.3)  # height 5 takes 300 ms to decide
    d._handle([ScheduleTimeout(Timeout(TimeoutKind.COMMIT, 5, 0), 1000)])
    (second,) = d._timers
    assert abs(second.when() - (started + 1.0)) < 0.05  # the next height starts 1 s after this one did
    second.cancel()
    d._handle([ScheduleTimeout(Timeout(TimeoutKind.PROPOSE, 5, 0), 1000)])
    assert any(abs(t.when() - loop.time() - 1.0) < 0.05 for t in d._timers)  # other timeouts: as the core says
    for t in d._timers:
        t.cancel()
