"""What every benchmark script shares: where a run keeps its files, and how figures are printed."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
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
