"""What every benchmark script shares: where a run keeps its files, and how figures are printed."""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def run_dir(keep: str | None, prefix: str) -> Iterator[Path]:
    """``keep`` (created if missing, kept afterwards) or a temporary folder removed on exit."""
    if keep:
        root = Path(keep)
        root.mkdir(parents=True, exist_ok=True)
        yield root
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def emit(out: dict[str, Any], as_json: bool, width: int = 28, echo: Callable[[str], None] = print) -> None:
    """One JSON object with ``--json``, else one aligned ``name value`` line per figure."""
    if as_json:
        echo(json.dumps(out))
        return
    for k, v in out.items():
        echo(f"{k:<{width}} {v}")


def p50_p95(values: Sequence[float]) -> tuple[float, float]:
    """Median, and the 95th percentile as the sample at index ``floor(0.95 (n - 1))`` of the sorted values."""
    if not values:
        return math.nan, math.nan
    s = sorted(values)
    return statistics.median(s), s[int(0.95 * (len(s) - 1))]


def steady_rate(times_s: Sequence[float]) -> float | None:
    """Packets per second over the middle 80 % of ``times_s`` (settle block times): what the chains sustained once the
    pipeline was full, without its filling and draining (``throughput_per_s`` counts both). None under 10 packets or
    when they all settled in one block."""
    if len(times_s) < 10:
        return None
    ts = sorted(times_s)
    lo, hi = ts[len(ts) // 10], ts[(len(ts) * 9) // 10]
    return round((len(ts) * 9 // 10 - len(ts) // 10) / (hi - lo), 1) if hi > lo else None


def r2(x: float | None) -> float | None:
    """``x`` to 2 decimals; None for None or NaN (a figure with nothing to measure)."""
    return None if x is None or math.isnan(x) else round(x, 2)
