"""Progress bars (rich) for the long operations a person waits for: a PoC farmer filling its plots, a relayer
clearing its backlog, the benchmarks.

Shown only to a person: quiet when standard output is not a terminal (a pipe, a log file, a service) and when the
command prints JSON (``--json``, ``--log-json``: :func:`set_quiet`), so machine-readable output never carries a
bar. Quiet bars cost nothing and draw nothing; callers that have a plain report for a log (a log line every few
seconds) check :func:`shown` and keep it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Bar", "bar", "set_quiet", "shown"]

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """No bars in this process (a command printing JSON calls this before it starts)."""
    global _quiet
    _quiet = quiet


def shown(*, json_mode: bool = False) -> bool:
    """Whether a bar would be drawn: a terminal on standard output, and no JSON output."""
    return not (_quiet or json_mode) and sys.stdout.isatty()


class Bar:
    """One task's bar; every method is a no-op when the bar is not shown."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def update(self, *, completed: float | None = None, total: float | None = None, description: str | None = None,
               advance: float | None = None) -> None:
        if self._progress is None:
            return
        kw: dict[str, Any] = {}
        if completed is not None:
            kw["completed"] = completed
        if total is not None:
            kw["total"] = total
        if description is not None:
            kw["description"] = description
        if advance is not None:
            kw["advance"] = advance
        self._progress.update(self._task, **kw)

    def advance(self, n: float = 1) -> None:
        self.update(advance=n)


@contextmanager
def bar(description: str, total: float | None = None, *, json_mode: bool = False, console: Any = None
        ) -> Iterator[Bar]:
    """A bar for ``total`` steps (None: a spinner until a total is known), drawn while the block runs and removed
    after it, so what the command prints afterwards stands alone. ``console``: a :class:`rich.console.Console` to
    draw on (tests); by default the terminal, and only when :func:`shown`."""
    if console is None and not shown(json_mode=json_mode):
        yield Bar()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
