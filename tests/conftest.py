"""How ``make test`` spreads the suite over two pytest-xdist workers (``-n 2 --dist loadscope``).

xdist's ``loadscope`` sends each module whole to one worker, in collection order, so a module-scoped devnet starts
once and every test sees the same neighbours as in a serial run. The one module split further is
``tests/integration/test_four_phases.py``: its module fixture is parametrised by park pair (one devnet per pair,
started and stopped pair by pair in a serial run too), so each pair is its own unit and the six pairs run on both
workers. (``--dist loadgroup`` with ``xdist_group`` marks cannot do this: pytest-xdist 3.8 records a group by
rewriting ``item._nodeid``, which pytest 9.2's nodes no longer read, so every test became a unit of its own and a
pair's devnet was started on both workers.) Without ``-n`` the hook below is never called.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

SPLIT_BY_PARAM = {"tests/integration/test_four_phases.py"}
"""Modules whose tests are grouped by their parametrisation (``test_x[dpos-poc]`` -> ``dpos-poc``), not by module."""

_PARAM = re.compile(r"\[([^\]]*)\]$")


class ModuleOrPairScheduling(LoadScopeScheduling):
    """``loadscope`` by module; by module and park pair in :data:`SPLIT_BY_PARAM`."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        if module in SPLIT_BY_PARAM and (m := _PARAM.search(nodeid)):
            return f"{module}::{m.group(1)}"
        return module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    if config.getvalue("dist") != "loadscope":
        return None
    return ModuleOrPairScheduling(config, log)
