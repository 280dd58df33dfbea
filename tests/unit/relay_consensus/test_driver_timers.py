"""The relay node's consensus driver keeps only pending timers: a fired one leaves its set (a long-running
validator schedules several per height, and holding every fired handle grew memory without bound)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from relay.chain.consensus.bft import ScheduleTimeout, Timeout, TimeoutKind
from relay.chain.node import BftDriver


class _Core:
    def __init__(self) -> None:
        self.fired: list[Timeout] = []

    def on_timeout(self, t: Timeout) -> list[Any]:
        self.fired.append(t)
        return []


def _driver() -> tuple[BftDriver, _Core]:
    driver = BftDriver.__new__(BftDriver)
    driver.log = logging.LoggerAdapter(logging.getLogger("test"), {})
    driver._timers = set()
    core = _Core()
    driver.core = core  # type: ignore[assignment]
    driver._catch_up = lambda: None  # type: ignore[method-assign]
    return driver, core


def test_fired_timers_leave_the_set_and_pending_ones_stay() -> None:
    async def main() -> None:
        driver, core = _driver()
        fired = asyncio.Event()
        on_timeout = core.on_timeout

        def record(t: Timeout) -> list[Any]:
            out = on_timeout(t)
            if len(core.fired) == 50:
                fired.set()
            return out

        core.on_timeout = record  # type: ignore[method-assign]
        driver._handle([ScheduleTimeout(Timeout(TimeoutKind.PROPOSE, h, 0), 1) for h in range(50)])
        driver._handle([ScheduleTimeout(Timeout(TimeoutKind.COMMIT, 99, 0), 3_600_000)])
        assert len(driver._timers) == 51
        await asyncio.wait_for(fired.wait(), 10)
        assert [t.height for t in core.fired] == list(range(50))
        assert len(driver._timers) == 1  # only the hour-long one is left
        (pending,) = driver._timers
        pending.cancel()

    asyncio.run(main())
