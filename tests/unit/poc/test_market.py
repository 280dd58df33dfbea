"""Ancillary-service market (docs/research.md#seed-000): hand-computed clearing, split, response rate, settlement,
conservation,
capacity bounds, and rejected inputs that leave state unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from chains.poc.app import genesis_state, poc_app
from chains.poc.market import ESCROW_ACCOUNT, PocAppParams, awards_key, clear_service, farmer_record, max_kw, round_key
from protocol.errors import ProtocolError

from .support import GRID, Runner, assert_conserved, balances, genesis_config


def runner(**app: Any) -> Runner:
    config = genesis_config(app=app)
    return Runner(poc_app("poc-test", config["app"], verifier=lambda *a: None), genesis_state(config))


FR = "frequency_regulation"


def test_capacity_bounds_offers() -> None:
    r = runner()
    params = PocAppParams.from_json(genesis_config()["app"])
    assert max_kw(params, farmer_record(r.state, "u1")) == 100  # one k21 plot backs 100 kW
    assert max_kw(params, farmer_record(r.state, "u2")) == 200
    r.begin(1)
    r.tx("u1", "market.offer", service=FR, amount_kw=60, price=5)
    r.tx("u1", "market.offer", service="reserve", amount_kw=40, price=5)  # 100 in all: at the bound
    with pytest.raises(ProtocolError, match="exceed its committed capacity"):
        r.tx("u1", "market.offer", service="peak_regulation", amount_kw=1, price=5)
    r.tx("u1", "market.offer", service=FR, amount_kw=0, price=0)  # withdraw frees capacity
    r.tx("u1", "market.offer", service="peak_regulation", amount_kw=60, price=5)


def test_clearing_splits_demand_over_more_units() -> None:
    """Demand 200 kW at cap 10; offers u2 200@5, u1 100@6, u3 80@8, u4 100@12 (over the cap).
    Split at 50 %: u2 100, u1 100; uniform price 6; cost 1200, refund 2000 - 1200 = 800."""
    r = runner()
    before = balances(r.state)
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=200, price_cap=10, duration_ms=3_600_000)
    assert balances(r.state)[ESCROW_ACCOUNT] == 2000
    r.tx("u2", "market.offer", service=FR, amount_kw=200, price=5)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=6)
    r.tx("u3", "market.offer", service=FR, amount_kw=80, price=8)
    r.tx("u4", "market.offer", service=FR, amount_kw=100, price=12)
    assert r.begin(5) == []  # not a round boundary
    events = r.begin(10)
    cleared = [e for e in events if e["type"] == "market.cleared"]
    assert cleared == [{"type": "market.cleared", "round": 0, "service": FR, "demand_kw": 200, "awarded_kw": 200,
                        "price": 6, "units": {"u1": 100, "u2": 100}, "refund": 800}]
    assert balances(r.state)[GRID] == before[GRID] - 1200
    assert balances(r.state)[ESCROW_ACCOUNT] == 1200
    assert r.state.get(round_key(0)) is None
    assert_conserved(r.state)
    # settlement: u1 delivers 100 of 100, u2 70 of 100 -> paid 600 and 420, operator refunded 30*6
    r.tx(GRID, "market.report", round=0, service=FR, unit="u1", delivered_kw=100)
    r.tx(GRID, "market.report", round=0, service=FR, unit="u2", delivered_kw=70)
    after = balances(r.state)
    assert after["u1"] == before["u1"] + 600 and after["u2"] == before["u2"] + 420
    assert after[GRID] == before[GRID] - 1200 + 180
    assert after.get(ESCROW_ACCOUNT, 0) == 0
    assert r.state.get(awards_key(0)) is None
    assert farmer_record(r.state, "u2")["delivered_kw"] == 70 and farmer_record(r.state, "u2")["awarded_kw"] == 100
    assert_conserved(r.state)


def test_no_split_gives_all_to_cheapest() -> None:
    r = runner(max_unit_share_pct=100)
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=200, price_cap=10, duration_ms=1000)
    r.tx("u2", "market.offer", service=FR, amount_kw=200, price=5)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=6)
    (ev,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
    assert (ev["units"], ev["price"], ev["refund"]) == ({"u2": 200}, 5, 1000)


def test_second_pass_covers_what_the_cap_left() -> None:
    """Demand 250, cap share 125: u2 125 + u1 100 leaves 25, which u2's remaining offer covers: u2 150, u1 100."""
    r = runner()
    r.begin(3)
    r.tx(GRID, "market.demand", service=FR, amount_kw=250, price_cap=10, duration_ms=1000)
    r.tx("u2", "market.offer", service=FR, amount_kw=200, price=5)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=6)
    (ev,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
    assert (ev["units"], ev["price"], ev["awarded_kw"], ev["refund"]) == ({"u1": 100, "u2": 150}, 6, 250, 1000)
    assert_conserved(r.state)


def test_short_supply_and_no_offers_refund() -> None:
    r = runner()
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=500, price_cap=10, duration_ms=1000)
    r.tx(GRID, "market.demand", service="reserve", amount_kw=50, price_cap=3, duration_ms=1000)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=7)
    r.tx("u1", "market.offer", service="reserve", amount_kw=0, price=0)
    events = {e["service"]: e for e in r.begin(10) if e["type"] == "market.cleared"}
    assert (events[FR]["awarded_kw"], events[FR]["price"], events[FR]["refund"]) == (100, 7, 5000 - 700)
    assert (events["reserve"]["awarded_kw"], events["reserve"]["price"], events["reserve"]["refund"]) == (0, None, 150)
    assert_conserved(r.state)


def test_response_rate_ranks_the_next_round() -> None:
    """Round 0: equal prices, u2 (more space) ranks first and takes all 100; it delivers 40 (rate 40 %).
    Round 1: u1 (default 90 %) now ranks before u2 and takes all 100."""
    r = runner(max_unit_share_pct=100)
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=1000)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=5)
    r.tx("u2", "market.offer", service=FR, amount_kw=100, price=5)
    (ev,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
    assert ev["units"] == {"u2": 100}
    (settled,) = r.tx(GRID, "market.report", round=0, service=FR, unit="u2", delivered_kw=40)
    assert (settled["paid"], settled["response_ppm"]) == (200, 400_000)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=1000)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=5)
    r.tx("u2", "market.offer", service=FR, amount_kw=100, price=5)
    (ev,) = [e for e in r.begin(20) if e["type"] == "market.cleared"]
    assert ev["units"] == {"u1": 100}
    assert_conserved(r.state)


def test_unreported_awards_settle_as_delivered_after_report_rounds() -> None:
    r = runner(report_rounds=2)
    before = balances(r.state)
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=1000)
    r.tx("u1", "market.offer", service=FR, amount_kw=100, price=4)
    r.begin(10)  # clears round 0 (u1 50 @4 in the first pass, then 50 more in the second)
    assert r.state.get(awards_key(0)) is not None
    r.begin(20)
    assert r.state.get(awards_key(0)) is not None
    settled = [e for e in r.begin(30) if e["type"] == "market.settled"]
    assert [(e["unit"], e["delivered_kw"], e["paid"]) for e in settled] == [("u1", 100, 400)]
    assert r.state.get(awards_key(0)) is None
    assert balances(r.state)["u1"] == before["u1"] + 400
    assert_conserved(r.state)


def test_clear_service_is_pure_and_excludes_over_cap() -> None:
    params = PocAppParams(grid_operator=GRID)
    rec = {"plots": {}, "committed_bytes": 0, "blocks_farmed": 0, "last_farmed_height": -1, "awarded_kw": 0,
           "delivered_kw": 0, "awards": 0}
    price, awarded = clear_service(params, {"amount_kw": 10, "price_cap": 3},
                                   {"a": {"amount_kw": 10, "price": 4}}, {"a": rec})
    assert (price, awarded) == (None, {})


def _reject_table() -> list[tuple[str, str, str, dict[str, Any], str]]:
    return [
        ("demand by a non-operator", "u1", "market.demand",
         {"service": FR, "amount_kw": 10, "price_cap": 1, "duration_ms": 1}, "auth.denied"),
        ("unknown service", GRID, "market.demand",
         {"service": "black_start", "amount_kw": 10, "price_cap": 1, "duration_ms": 1}, "protocol"),
        ("zero demand", GRID, "market.demand", {"service": FR, "amount_kw": 0, "price_cap": 1, "duration_ms": 1},
         "codec.invalid"),
        ("demand over the operator's balance", GRID, "market.demand",
         {"service": "reserve", "amount_kw": 100_000, "price_cap": 100, "duration_ms": 1}, "funds.insufficient"),
        ("second demand for a service in a round", GRID, "market.demand",
         {"service": FR, "amount_kw": 10, "price_cap": 1, "duration_ms": 1}, "protocol"),
        ("offer over committed capacity", "u1", "market.offer", {"service": FR, "amount_kw": 101, "price": 1},
         "protocol"),
        ("offer without committed capacity", "farmer-b", "market.offer", {"service": FR, "amount_kw": 1, "price": 1},
         "protocol"),
        ("negative price", "u1", "market.offer", {"service": FR, "amount_kw": 1, "price": -1}, "codec.invalid"),
        ("boolean amount", "u1", "market.offer", {"service": FR, "amount_kw": True, "price": 1}, "codec.invalid"),
        ("report by a non-operator", "u1", "market.report",
         {"round": 0, "service": FR, "unit": "u2", "delivered_kw": 1}, "auth.denied"),
        ("report of no award", GRID, "market.report", {"round": 7, "service": FR, "unit": "u2", "delivered_kw": 1},
         "protocol"),
        ("report over the award", GRID, "market.report",
         {"round": 0, "service": FR, "unit": "u2", "delivered_kw": 101}, "protocol"),
        ("erase under open offers", "u3", "poc.erase", {"plot_id": "PLOT_U3"}, "protocol"),
        ("erase of an unknown plot", "u3", "poc.erase", {"plot_id": "00" * 32}, "protocol"),
        ("fill with a bad proof", "u4", "poc.fill",
         {"plot_nonce": "11" * 32, "k": 21, "challenge_height": 0, "index": 0, "proof": "00" * 168}, "proof.invalid"),
        ("fill of an unknown challenge", "u4", "poc.fill",
         {"plot_nonce": "11" * 32, "k": 21, "challenge_height": 99, "index": 0, "proof": "00" * 168}, "protocol"),
        ("fill with k out of range", "u4", "poc.fill",
         {"plot_nonce": "11" * 32, "k": 20, "challenge_height": 0, "index": 0, "proof": "00" * 160}, "protocol"),
        ("fill of a committed plot", "u4", "poc.fill",
         {"plot_nonce": "NONCE_U4", "k": 21, "challenge_height": 0, "index": 0, "proof": "00" * 168}, "protocol"),
    ]


@pytest.mark.parametrize(("name", "sender", "op", "args", "code"), _reject_table(), ids=[c[0] for c in _reject_table()])
def test_bad_input_leaves_state_unchanged(name: str, sender: str, op: str, args: dict[str, Any], code: str) -> None:
    from .support import nonce

    r = runner()
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=1)
    r.tx("u2", "market.offer", service=FR, amount_kw=100, price=1)
    r.tx("u3", "market.offer", service=FR, amount_kw=100, price=1)
    r.begin(10)  # round 0 cleared: u2 and u3 hold awards of 50 kW to report on
    r.tx(GRID, "market.demand", service=FR, amount_kw=10, price_cap=1, duration_ms=1)
    r.tx("u3", "market.offer", service=FR, amount_kw=100, price=1)
    u3_plot = next(iter(farmer_record(r.state, "u3")["plots"]))
    args = {k: (u3_plot if v == "PLOT_U3" else nonce("u4") if v == "NONCE_U4" else v) for k, v in args.items()}
    root = r.state.root
    with pytest.raises(ProtocolError) as exc:
        r.tx(sender, op, **args)
    assert exc.value.code == code, exc.value
    assert r.state.root == root, name
