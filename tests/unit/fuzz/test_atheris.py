"""bench/fuzz_atheris.py really is coverage-guided: libFuzzer sees edges of our own code and grows the corpus
from the target's seeds (the instrumentation silently doing nothing would show as 0 edges and 1 corpus entry)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_atheris_fuzzes_a_decoder_with_coverage_feedback() -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_atheris.py"), "--target", "codec.decode_packet",
                           "--runs", "3000", "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["findings"] == 0 and out["inputs"] >= 3000
    assert out["edges"] > 20 and out["corpus"] > 1, out


def test_an_unknown_target_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_atheris.py"), "--target", "nope"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "no target 'nope'" in proc.stderr
