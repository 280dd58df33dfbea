"""The market benchmarks of the DPoS park (bench/markets/seed002.py, seed003.py) run, print one JSON object and
draw their plot: short runs of the same code the full benchmarks run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.markets import seed002, seed003


def test_seed002_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "dr.png"
    assert seed002.main(seed002.__doc__, seed002.run, seed002.plot, seed002._options,
                        ["--json", "--plot", str(png), "--rounds", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 10_000 and out["plot"] == str(png)
    assert out["rounds"] == 12 and out["users"] == 25 and out["aggregators"] == 4
    for method in ("reputation", "traditional"):
        assert 0 < out[f"completion_{method}"] <= 1
    assert sorted(out["final_ranking"]) == ["agg1", "agg2", "agg3", "agg4"]
    assert out["seed_reported"]["completion_reputation"] == 0.96
    # fixed seeds: the same run gives the same figures
    again = seed002.run(rounds=12)
    assert {k: v for k, v in again.items() if k not in ("seconds", "_series")} == \
        {k: v for k, v in out.items() if k not in ("seconds", "plot")}


def test_seed003_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "dpos.png"
    assert seed003.main(seed003.__doc__, seed003.run, seed003.plot, seed003._options,
                        ["--json", "--plot", str(png), "--rounds", "4", "--trials", "2", "--intervals", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 10_000
    assert out["conserved_highest_price"] and out["conserved_max_utilisation"]
    # maximum utilisation never matches less than highest price first (it reaches the maximum flow)
    assert out["volume_kwh_max_utilisation"] >= out["volume_kwh_highest_price"]
    fast, credit = out["removal_blocks_credit_fast_replacement"], out["removal_blocks_credit"]
    assert fast["removed"] == credit["removed"] == "2/2" and fast["max"] < credit["mean"]
    assert out["removal_blocks_plain_dpos_idle_voters"]["removed"] == "0/2"
    assert abs(sum(out["reward_share_shapley"].values()) - 1) < 1e-3


def test_seed002_ranks_users_and_dispatches_by_rank() -> None:
    """Nobody is left out of the two-way selection (joins are never refused, every user holds a seat); with
    ``dispatch="rank"`` the grid's demand goes to aggregators by rank."""
    out = seed002.run(rounds=12, dispatch="rank")
    assert out["dispatch"] == "rank" and out["cover"] == seed002.COVER
    assert out["joins_refused"] == 0
    for method in ("reputation", "traditional"):
        assert 0 < out[f"completion_{method}"] <= 1
