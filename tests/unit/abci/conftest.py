"""Fixtures of the ABCI unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.abci.relaynet import RelayNet


@pytest.fixture
def net(tmp_path: Path) -> Iterator[RelayNet]:
    """Four relay validators' apps past InitChain (:class:`RelayNet`), closed after the test."""
    n = RelayNet(tmp_path)
    n.init_chain()
    yield n
    n.close()
