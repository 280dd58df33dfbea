"""The Fabric park's market benchmark (bench/markets/seed004.py) runs, prints one JSON object and draws its plot: a
short run of the same code the full benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.markets import seed004


def test_seed004_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "charging.png"
    assert seed004.main(seed004.__doc__, seed004.run, seed004.plot, seed004._options,
                        ["--json", "--plot", str(png), "--rounds", "4", "--stations", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 10_000 and out["plot"] == str(png)
    assert out["rounds"] == 4 and out["stations"] == 8 and out["conserved"] is True
    # the controlled allocations never put more on the transformer than its limit; uncontrolled charging does
    assert out["peak_kw_fcfs"] <= out["capacity_kw"] and out["peak_kw_two_stage"] <= out["capacity_kw"]
    assert out["rounds_over_limit_two_stage"] == 0
    for key in ("efficiency_fcfs", "efficiency_stage1", "efficiency_two_stage"):
        assert 0 < out[key] <= 1
    # trading only moves kW to stations that value them more: never less efficient than its stage 1
    assert out["efficiency_two_stage"] >= out["efficiency_stage1"]
    assert out["uncertified_request"] == "market.uncertified"
    # fixed seeds: the same run gives the same figures
    again = seed004.run(rounds=4, stations=8)
    assert {k: v for k, v in again.items() if k not in ("seconds", "_series")} == \
        {k: v for k, v in out.items() if k not in ("seconds", "plot")}
