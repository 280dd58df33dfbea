"""One step loop for every long-running task of the relayer (STYLE habit 6).

A task is a coroutine ``step() -> Outcome`` run again and again by :func:`run_step_loop` until it says
``STOP`` or the service stops. The loop owns the failure handling, so no task holds a bare ``while True``:

* a :class:`~chains.common.storage.StorageFault` backs off too (a database another process holds locked; a full
  disk has already stopped the whole service by then);
* an :class:`~protocol.errors.TransportError` backs off that task only (doubling up to ``max_backoff_s``) and
  retries; the other tasks go on;
* a :class:`~protocol.errors.ProtocolError` whose disposition is FATAL stops the task with a report;
* any other exception is a bug in this task: it is logged with its traceback, counted, and the task backs
  off and goes on, so one bad path never stops the paths beside it;
* between steps the task sleeps until it is woken (a new head of a chain it reads) or its delay passes.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chains.common.storage import StorageFault
from protocol.errors import Disposition, ProtocolError, TransportError

__all__ = ["Next", "Outcome", "TaskHealth", "run_step_loop"]


class Next(enum.Enum):
    CONTINUE = "continue"
    """Step again after the delay (or at once when woken)."""
    BACKOFF = "backoff"
    """Something this task reads is unavailable: step again after the task's growing backoff."""
    STOP = "stop"
    """The task is done or cannot go on: leave the loop."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a step asks the loop to do next."""

    next: Next = Next.CONTINUE
    delay_s: float | None = None
    """Delay before the next step (``None``: the loop's poll interval)."""
    report: str | None = None
    """Why, for the log and status (set on BACKOFF and STOP)."""


@dataclass
class TaskHealth:
    """A task's counters and last error, as status and logs show them."""

    steps: int = 0
    backoffs: int = 0
    bugs: int = 0
    last_error: str | None = None
    stopped: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


async def run_step_loop(name: str, step: Callable[[], Awaitable[Outcome]], *, stop: asyncio.Event,
                        wake: asyncio.Event | None, log: logging.LoggerAdapter[logging.Logger], poll_s: float,
                        health: TaskHealth, max_backoff_s: float = 10.0) -> None:
    """Run ``step`` until it returns STOP or ``stop`` is set."""
    backoff = min(0.5, max_backoff_s)
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        health.steps += 1
        try:
            outcome = await step()
        except TransportError as exc:
            outcome = Outcome(Next.BACKOFF, report=f"side {exc.side or '?'} unreachable: {exc.message}")
        except ProtocolError as exc:
            if exc.disposition is Disposition.FATAL:
                outcome = Outcome(Next.STOP, report=f"fatal: {exc}")
            else:
                health.last_error = str(exc)
                log.warning("task %s: %s", name, exc)
                outcome = Outcome(Next.BACKOFF, report=str(exc))
        except StorageFault as exc:  # a lock outlasting its retries backs off; a full disk has stopped the service
            outcome = Outcome(Next.BACKOFF, report=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in this task must not stop the tasks beside it
            health.bugs += 1
            log.exception("task %s failed (bug #%d); backing off", name, health.bugs)
            outcome = Outcome(Next.BACKOFF, report=f"bug: {type(exc).__name__}: {exc}")
        if outcome.next is Next.STOP:
            health.stopped = outcome.report or "done"
            if outcome.report:
                log.error("task %s stopped: %s", name, outcome.report)
            return
        if outcome.next is Next.BACKOFF:
            health.backoffs += 1
            health.last_error = outcome.report
            log.warning("task %s: %s; retrying in %.1fs", name, outcome.report, backoff)
            delay = backoff
            backoff = min(backoff * 2, max_backoff_s)
        else:
            backoff = min(0.5, max_backoff_s)
            delay = poll_s if outcome.delay_s is None else outcome.delay_s
        await _sleep(delay, stop, wake)


async def _sleep(delay: float, stop: asyncio.Event, wake: asyncio.Event | None) -> None:
    """Until ``wake``, ``stop`` or ``delay`` seconds: whichever comes first."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
