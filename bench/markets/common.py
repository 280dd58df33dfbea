"""What the market benchmarks share: their command line, the printed figures and the plot file.

Each ``bench/markets/seedNNN.py`` runs its park's market through the real chain code, prints one JSON object
with ``--json`` (else one ``name value`` line per figure) and, with ``--plot FILE.png``, draws its figure with
matplotlib's non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import emit

__all__ = ["main", "moving_average", "pyplot"]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (shorter at the start)."""
    out: list[float] = []
    total = 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(doc: str | None, run: Callable[..., dict[str, Any]], plot: Callable[[dict[str, Any], Path], None],
         extra: Callable[[argparse.ArgumentParser], None] | None = None, argv: Sequence[str] | None = None) -> int:
    """Parse ``--json``/``--plot``/the benchmark's own options, run it, print its figures, draw its plot."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="write the figure to this PNG file")
    if extra is not None:
        extra(parser)
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    plot_to = args.pop("plot")
    out = run(**args)
    series = out.pop("_series", None)
    if plot_to:
        plot({**out, "_series": series}, Path(plot_to))
        out["plot"] = plot_to
    emit(out, as_json)
    return 0
