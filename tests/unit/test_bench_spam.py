"""bench/spam.py's verdict: the loaded run's honest figures over the unloaded run's, against the issue's bounds."""

from __future__ import annotations

from bench.spam import compare


def _run(throughput: float, p95: float, *, conserved: bool = True, completed: int = 1000) -> dict[str, object]:
    return {"throughput_per_s": throughput, "latency_p95_s": p95, "supply_conserved": conserved,
            "completed": completed, "accepted": 1000}


def test_the_bounds_hold_at_80_percent_throughput_and_twice_the_p95() -> None:
    out = compare(_run(30.0, 10.0), _run(24.0, 20.0), {"requests": 5})
    assert (out["throughput_loaded_over_unloaded"], out["p95_loaded_over_unloaded"]) == (0.8, 2.0)
    assert out["throughput_target_met"] and out["p95_target_met"] and out["nothing_lost"]
    assert out["flood"] == {"requests": 5}


def test_each_bound_fails_on_its_own() -> None:
    slow = compare(_run(30.0, 10.0), _run(23.0, 10.0))
    assert not slow["throughput_target_met"] and slow["p95_target_met"]
    late = compare(_run(30.0, 10.0), _run(30.0, 21.0))
    assert late["throughput_target_met"] and not late["p95_target_met"]
    lost = compare(_run(30.0, 10.0), _run(30.0, 10.0, completed=999))
    assert not lost["nothing_lost"]
    assert not compare(_run(30.0, 10.0, conserved=False), _run(30.0, 10.0))["nothing_lost"]
