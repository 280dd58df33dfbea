"""Session fixtures: the chiapos verifier and one test chain farmed with the session's two k=21 test plots
(``plot_dir`` / ``farmers`` live in ``tests/unit/conftest.py``, shared with the relay tests).
"""

from __future__ import annotations

import pytest

from chains.poc.consensus import ProofVerifier, chiapos_verifier
from chains.poc.plots import Farmer
from chains.poc.testing import ChainBuilder, FarmedChain, make_params


@pytest.fixture(scope="session")
def verifier() -> ProofVerifier:
    return chiapos_verifier()


@pytest.fixture(scope="session")
def chain(farmers: list[Farmer]) -> FarmedChain:
    """A 40-header chain farmed by both farmers (confirmation depth 6). Tests must not mutate it."""
    builder = ChainBuilder(make_params(n_plots=2), farmers)
    pairs = builder.extend(builder.genesis, 40)
    return FarmedChain(builder, [h for h, _ in pairs], [c for _, c in pairs], confirmation_depth=6)
