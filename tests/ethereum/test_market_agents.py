"""The Ethereum park market's off-chain side (``chains.ethereum.market``): the feeder, the clearing mirror, the
risk-attitude agents and best-response dynamics. Pure Python; the mirror is compared with the contract on anvil in
``test_market.py``."""

from __future__ import annotations

import pytest

from chains.ethereum.market import (
    Bid,
    Feeder,
    Line,
    Member,
    RiskAttitudeAgent,
    best_response_dynamics,
    clear,
    utilities,
)

# substation 0; lateral 1 -> 2; lateral 3 -> 4
FEEDER = Feeder((Line(0, 0, 0, 10**9), Line(1, 0, 500, 10_000), Line(2, 1, 300, 10_000), Line(3, 0, 600, 10_000),
                 Line(4, 3, 400, 10_000)))


def test_feeder_distances_laterals_and_shape_checks() -> None:
    assert FEEDER.distance(2, 2) == 0
    assert FEEDER.distance(1, 2) == FEEDER.distance(2, 1) == 300
    assert FEEDER.distance(2, 4) == 300 + 500 + 600 + 400
    assert [FEEDER.lateral(b) for b in range(5)] == [0, 1, 1, 3, 3]
    with pytest.raises(ValueError):
        Feeder((Line(0, 0, 0, 1), Line(1, 2, 10, 1), Line(2, 0, 10, 1)))  # behind a later bus


def test_the_charge_turns_a_far_higher_bid_into_a_near_trade() -> None:
    bids = [Bid("s", 1, True, 5_000, 300), Bid("far", 4, False, 5_000, 420), Bid("near", 2, False, 5_000, 400)]
    assert [t.buyer_bid for t in clear(FEEDER, bids, 0)[0]] == [1]
    (t,) = clear(FEEDER, bids, 60)[0]  # far: 420 - 300 - 108 = 12 < near: 400 - 300 - 18 = 82
    assert (t.buyer_bid, t.charge, t.distance_m, t.price) == (2, 18, 300, 300 + 82 // 2)


def test_flows_never_exceed_a_line_limit() -> None:
    bids = [Bid("s1", 2, True, 8_000, 300), Bid("s2", 1, True, 8_000, 310), Bid("b1", 4, False, 9_000, 600),
            Bid("b2", 3, False, 9_000, 600)]
    trades, curtailed = clear(FEEDER, bids, 0)
    flow = [0] * 5
    for t in trades:
        FEEDER.carry(flow, bids[t.seller_bid].bus, bids[t.buyer_bid].bus, t.quantity_wh)
    assert all(abs(f) <= FEEDER.lines[i].limit_wh for i, f in enumerate(flow))
    assert sum(t.quantity_wh for t in trades) == 10_000 and curtailed  # lateral 1's head binds


def agent(attitude: str, seller: bool = True) -> RiskAttitudeAgent:
    m = Member("m", 1, seller, 1_000, 300 if seller else 600, attitude)
    return RiskAttitudeAgent(m, p_hat=450.0, sigma=40.0, lam=0.3, price_floor=250, price_ceiling=650)


@pytest.mark.parametrize("seller", [True, False])
def test_risk_attitude_orders_the_margin_asked(seller: bool) -> None:
    """Averse members give up margin for certainty; seeking ones ask more (sellers) or offer less (buyers)."""
    prices = [agent(a, seller).bid_price() for a in ("averse", "neutral", "seeking")]
    assert (prices[0] < prices[1] < prices[2]) if seller else (prices[0] > prices[1] > prices[2])


def test_an_agent_adapts_from_the_market_and_its_unfilled_energy() -> None:
    a = agent("neutral")
    first = a.bid_price()
    a.observe(None, 0)  # nothing sold: it lowers its estimate, and its ask
    assert a.p_hat == pytest.approx(450 - 0.3 * 40) and a.bid_price() < first
    b = agent("neutral", seller=False)
    b.observe(500.0, 1_000)  # filled at 500: its estimate moves towards the market
    assert b.p_hat == pytest.approx(450 + 0.3 * 50)


def test_best_response_reaches_a_point_where_no_member_gains_alone() -> None:
    ms = [Member("s1", 1, True, 6_000, 300), Member("s2", 4, True, 6_000, 330), Member("b1", 2, False, 5_000, 560),
          Member("b2", 3, False, 5_000, 520), Member("b3", 4, False, 4_000, 500)]
    res = best_response_dynamics(FEEDER, ms, 60, [m.reservation for m in ms], price_floor=250, price_ceiling=650,
                                 price_step=5)
    assert res.converged and res.changes_per_sweep[-1] == 0
    base = utilities(ms, res.trades)
    for i, m in enumerate(ms):
        grid = range(m.reservation, 651, 5) if m.seller else range(m.reservation, 249, -5)
        for p in grid:
            prices = list(res.prices)
            prices[i] = p
            bids = [Bid(x.name, x.bus, x.seller, x.quantity_wh, q) for x, q in zip(ms, prices, strict=True)]
            assert utilities(ms, clear(FEEDER, bids, 60)[0])[i] <= base[i]
    assert sum(base) > 0 and all(u >= 0 for u in base)  # individually rational
