"""``bench/state_tree.py`` runs and prints its figures as JSON (issue 16: benchmarks print JSON)."""

from __future__ import annotations

import json

import pytest

from bench.state_tree import main


def test_prints_microseconds_per_write_and_read(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--keys", "2000", "--block", "20", "--blocks", "3", "--runs", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for kind in ("packet_writes", "hash_writes", "reads"):
        assert out[f"{kind}_us"] > 0
        assert len(out["all_runs_us"][kind]) == 2
    assert (out["keys"], out["block"], out["blocks"]) == (2000, 20, 3)
