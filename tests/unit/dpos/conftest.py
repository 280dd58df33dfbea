"""Shared fixtures: deterministic chains are built once per module (signing costs ~50 µs a header)."""

from __future__ import annotations

import pytest

from chains.dpos.testing import ChainBuilder


@pytest.fixture(scope="module")
def chain4() -> ChainBuilder:
    """4 active witnesses + 2 standby, boundaries every 10 blocks, 40 valid headers with set rotations."""
    b = ChainBuilder(4, n_standby=2, label="chain4", maintenance_interval_blocks=10)
    b.extend(40, propose=b.rotate)
    return b
