"""Session fixtures shared by the PoC tests and the relay tests that host a PoC client: two k=21 test plots.

Plotting costs ~12 s a plot, so the whole unit suite uses exactly these two plots (farmer-a's and
farmer-b's), reused from ``$PARKRELAY_PLOT_CACHE`` when it is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.poc.plots import Farmer
from chains.poc.testing import make_farmers


@pytest.fixture(autouse=True)
def _progress_bars_back() -> Iterator[None]:
    """A CLI call with ``--json`` turns progress bars off for the whole process (chains.common.progress): on again
    after every test, so no test depends on which CLI tests ran before it."""
    from chains.common import progress

    yield
    progress.set_quiet(False)


@pytest.fixture(scope="session")
def plot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("PARKRELAY_PLOT_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("plots")


@pytest.fixture(scope="session")
def plot_progress() -> list[tuple[float, str]]:
    """Every progress report made while the session's plots were created (empty if all were cached)."""
    return []


@pytest.fixture(scope="session")
def farmers(plot_dir: Path, plot_progress: list[tuple[float, str]]) -> list[Farmer]:
    return make_farmers(2, plot_dir, progress=lambda f, m: plot_progress.append((f, m)))
