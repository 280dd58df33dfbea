"""The systemd units in deploy/systemd (one per process kind) pass ``systemd-analyze verify``.

The committed units name the install layout (``/opt/parkrelay``, ``/etc/parkrelay``); verification needs their
executables and environment files to exist, so each unit is checked as a copy pointing at this checkout's
``.venv`` and a temporary environment file, instantiated with a name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
KINDS = {"parkrelay-park-node@.service": "witness-a", "parkrelay-relay-validator@.service": "op-a",
         "parkrelay-relayer@.service": "relayer-a", "parkrelay-ethereum@.service": "eth-park",
         "parkrelay-fabric@.service": "fabric-park"}

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")


def test_one_unit_per_process_kind() -> None:
    assert {p.name for p in UNITS.glob("*.service")} == set(KINDS)


@pytest.mark.parametrize("unit", sorted(KINDS))
def test_unit_verifies(unit: str, tmp_path: Path) -> None:
    text = (UNITS / unit).read_text()
    assert "KillSignal=SIGTERM" in text and "--log-json" in text
    env = tmp_path / "parkrelay.env"
    env.write_text("PARKRELAY_CONFIG=/dev/null\n")
    (tmp_path / f"park-node-{KINDS[unit]}.env").write_text("PARKRELAY_NODE_ARGS=dpos\n")
    exe = Path(sys.executable).parent / "parkrelay"
    text = (text.replace("/opt/parkrelay/.venv/bin/parkrelay", str(exe))
            .replace("/etc/parkrelay/", f"{tmp_path}/")
            .replace("User=parkrelay\n", "").replace("Group=parkrelay\n", ""))
    (tmp_path / unit).write_text(text)
    instance = tmp_path / unit.replace("@.", f"@{KINDS[unit]}.")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(instance)], capture_output=True, text=True,
                       timeout=60, check=False)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.split("@")[0] in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
