"""The PoC park's market benchmark (bench/markets/seed000.py) runs, prints one JSON object and draws its plot: a
short run of the same code the full benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.markets import seed000


def test_seed000_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "poc.png"
    assert seed000.main(seed000.__doc__, seed000.run, seed000.plot, seed000._options,
                        ["--json", "--plot", str(png), "--rounds", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert png.stat().st_size > 10_000 and out["plot"] == str(png)
    assert out["rounds"] == 12
    assert set(out["response_rate"]) == set(seed000.METHODS)
    for method in seed000.METHODS:
        assert 0 < out["response_rate"][method] <= 1
        assert out["units_called_per_hour"][method] > 0
    assert out["conserved"] == {"capacity_competition": True, "plain_blockchain": True}
    assert out["txs_refused"] == {"capacity_competition": 0, "plain_blockchain": 0}
    # storage followed its charge through the chain: plots were filled and erased
    assert out["plots_filled"] > 0 and out["plots_erased"] > 0
    # storage bound to its charge answers what it is called for better than storage offering its rated power
    rates = out["storage_response_rate"]
    assert rates["capacity_competition"] > rates["plain_blockchain"]
    # the split calls more units than the plain market
    assert out["units_called_per_hour"]["capacity_competition"] > out["units_called_per_hour"]["plain_blockchain"]
    again = seed000.run(rounds=12)
    assert {k: v for k, v in again.items() if k not in ("seconds", "_series")} == \
        {k: v for k, v in out.items() if k not in ("seconds", "plot")}
