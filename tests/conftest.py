"""How ``make test`` spreads the suite over two pytest-xdist workers (``-n 2 --dist loadgroup``).

Every test gets an ``xdist_group``: its file, so a worker runs a whole module and its module-scoped devnet is started
once, as in a serial run. The one exception is ``tests/integration/test_four_phases.py``, whose module fixture is
parametrised by park pair (one devnet per pair, already started and stopped pair by pair in a serial run): each
pair is its own group, so the six pairs can run on both workers. A group runs on one worker in collection order, so
no test sees another order of its neighbours than serially. Without xdist (``pytest tests/...``) the marks do nothing.
"""

from __future__ import annotations

import pytest

PAIR_GROUPED = {"tests/integration/test_four_phases.py": "net"}
"""Module -> the name of its parametrised module fixture whose parameter splits the module into groups."""

SESSION_GROUPED = {"farmers": "session-fixture:poc-plots", "base_world": "session-fixture:anvil-world"}
"""Costly session fixtures (two k=21 plots and a 40-header farmed chain, ~25 s of CPU; three parks deployed on one
anvil) -> one group for every module that uses them, so they are made once, on one worker, as in a serial run."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    module_group: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for fixture, group in SESSION_GROUPED.items():
            if fixture in getattr(item, "fixturenames", ()):
                module_group.setdefault(module, group)
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        group = module_group.get(module, module)
        fixture = PAIR_GROUPED.get(module)
        callspec = getattr(item, "callspec", None)
        if fixture is not None and callspec is not None and fixture in callspec.params:
            # no brackets in a group name: xdist reads the group after the last "@" only when no "]" follows it
            group = f"{module}:{callspec.params[fixture]}"
        item.add_marker(pytest.mark.xdist_group(group))
