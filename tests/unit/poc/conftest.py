"""Session fixtures: two k=21 test plots (reused from ``$PARKRELAY_PLOT_CACHE`` when set) and one test chain.

Plotting costs ~12 s a plot, so the whole unit suite uses exactly these two plots.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chains.poc.consensus import ProofVerifier, chiapos_verifier
from chains.poc.plots import Farmer
from chains.poc.testing import ChainBuilder, FarmedChain, make_farmers, make_params


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


@pytest.fixture(scope="session")
def verifier() -> ProofVerifier:
    return chiapos_verifier()


@pytest.fixture(scope="session")
def chain(farmers: list[Farmer]) -> FarmedChain:
    """A 40-header chain farmed by both farmers (confirmation depth 6). Tests must not mutate it."""
    builder = ChainBuilder(make_params(n_plots=2), farmers)
    pairs = builder.extend(builder.genesis, 40)
    return FarmedChain(builder, [h for h, _ in pairs], [c for _, c in pairs], confirmation_depth=6)
