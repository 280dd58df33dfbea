"""The chaos soak, short (issue 15): ``python bench/soak.py`` for half a minute of faults with a fixed seed.

The four-park devnet, all three asset kinds on every pair, SIGKILLs, pauses and Fabric process kills every few
seconds, then a drain; the soak's own checks (nothing stuck, supply per park and per trace, each charging right
exactly once, every committed send found) must all pass and it must exit 0. The long run is a benchmark
(``python bench/soak.py --minutes 30 --json``), not part of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chains.common.procs import spawn
from tests.integration.harness import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_a_short_seeded_soak_loses_nothing(tmp_path: Path) -> None:
    with open(tmp_path / "soak.err", "wb") as err:
        proc = spawn([sys.executable, "bench/soak.py", "--minutes", "0.5", "--seed", "7", "--fault-every-s", "4",
                      "--fault-max-s", "6", "--send-every-s", "1.5", "--drain-s", "300", "--json", "--keep",
                      str(tmp_path / "run")], cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        out_raw, _ = proc.communicate(timeout=840)
    tail = (tmp_path / "soak.err").read_text(errors="replace")[-4000:]
    assert proc.returncode in (0, 1), tail
    out = json.loads(out_raw)
    assert "error" not in out, (out["error"], tail)
    failed = {k: v for k, v in out["checks"].items() if not v["ok"]}
    assert proc.returncode == 0 and out["ok"] and not failed, (failed, out["packets"], tail)
    assert out["packets"]["stuck"] == 0
    assert out["packets"]["sent"] == out["packets"]["completed"] + out["packets"]["refunded"]
    for kind in ("energy", "charging_right", "reputation"):
        assert out["packets"]["by_kind"].get(kind, {}).get("completed", 0) > 0, (kind, out["packets"])
    assert out["faults"]["total"] >= 3, out["faults"]
    if "partition" in out["faults"]["skipped_kinds"]:  # reported as not available, never faked
        assert "partition" not in out["faults"]["injected"]
