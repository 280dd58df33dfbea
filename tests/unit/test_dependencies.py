"""pyproject.toml declares exactly what the code imports, so the list cannot drift.

* ``project.dependencies``: every third-party import of ``protocol``, ``chains``, ``adapters`` and ``relay``
  maps (through the installed distributions' top-level names) to a declared distribution, and every declared
  distribution is imported there.
* ``project.optional-dependencies.test``: every third-party import of ``tests`` and ``bench`` is declared in
  one of the two lists, and every distribution of the ``test`` extra is imported there.

Imports are read with :mod:`ast`, so imports inside functions and ``TYPE_CHECKING`` blocks count.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OWN = {"protocol", "chains", "adapters", "relay", "tests", "bench"}
RUNTIME_PACKAGES = ("protocol", "chains", "adapters", "relay")
TEST_PACKAGES = ("tests", "bench")


def _norm(dist: str) -> str:
    """PEP 503 name normalisation: ``PyNaCl`` / ``eth_abi`` -> ``pynacl`` / ``eth-abi``."""
    return re.sub(r"[-_.]+", "-", dist).lower()


def _declared(requirements: Iterable[str]) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def _imports(packages: Iterable[str]) -> dict[str, set[str]]:
    """Top-level third-party module name -> files importing it."""
    out: dict[str, set[str]] = {}
    for pkg in packages:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if "node_modules" in f.parts:
                continue
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in OWN and top not in sys.stdlib_module_names:
                        out.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return out


def _distributions(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Distribution (normalised) -> files importing it; an import no installed distribution provides fails."""
    provided = packages_distributions()
    out: dict[str, set[str]] = {}
    unknown = {m: sorted(fs) for m, fs in imports.items() if m not in provided}
    assert not unknown, f"imports no installed distribution provides: {unknown}"
    for module, files in imports.items():
        for dist in provided[module]:
            out.setdefault(_norm(dist), set()).update(files)
    return out


RUNTIME = _declared(PYPROJECT["project"]["dependencies"])
TEST_EXTRA = _declared(PYPROJECT["project"]["optional-dependencies"]["test"])


def test_every_runtime_import_is_declared() -> None:
    used = _distributions(_imports(RUNTIME_PACKAGES))
    missing = {d: sorted(files)[:3] for d, files in used.items() if d not in RUNTIME}
    assert not missing, f"imported by the code but not in project.dependencies: {missing}"


def test_every_declared_runtime_dependency_is_imported() -> None:
    used = _distributions(_imports(RUNTIME_PACKAGES))
    unused = sorted(RUNTIME - set(used))
    assert not unused, f"in project.dependencies but imported nowhere in {RUNTIME_PACKAGES}: {unused}"


def test_every_test_import_is_declared() -> None:
    used = _distributions(_imports(TEST_PACKAGES))
    missing = {d: sorted(files)[:3] for d, files in used.items() if d not in RUNTIME | TEST_EXTRA}
    assert not missing, f"imported by tests/bench but in neither project.dependencies nor the test extra: {missing}"


def test_every_test_extra_is_imported() -> None:
    used = _distributions(_imports(TEST_PACKAGES))
    # pytest plugins are loaded by pytest (asyncio_mode, timeout in [tool.pytest.ini_options]), not imported
    plugins = {"pytest-asyncio", "pytest-timeout"}
    unused = sorted(TEST_EXTRA - set(used) - plugins)
    assert not unused, f"in the test extra but imported nowhere in {TEST_PACKAGES}: {unused}"


def test_declared_distributions_are_pinned_in_the_lock() -> None:
    locked = {_norm(line.split("==")[0]) for line in (ROOT / "requirements.lock").read_text().splitlines()
              if "==" in line and not line.lstrip().startswith("#")}
    unpinned = sorted((RUNTIME | TEST_EXTRA) - locked)
    assert not unpinned, f"declared in pyproject.toml but not pinned in requirements.lock: {unpinned}"
