"""docs/research.md#seed-003's three-stage trade and docs/research.md#seed-002's demand response, through real
blocks of a SimChain."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from chains.common.state import ChainState
from chains.common.tx import BlockContext
from chains.dpos.market import (
    DR_ACCOUNT,
    DR_MODELS,
    MARKET_ACCOUNT,
    REPUTATION_MODEL,
    Bid,
    MarketParams,
    credit_ranking,
    dr_commitment,
    dr_members,
    match_highest_price,
    match_max_utilisation,
    reputation_path,
)
from chains.dpos.testing import SimChain
from protocol.errors import AuthorizationError, CodecError, InsufficientFundsError, ProtocolError, ReplayError

ROUND_MS = 10_000

# the hand-worked example: ids are submission order
EXAMPLE = [
    Bid(1, "bob", "buy", 3000, 120), Bid(2, "bea", "buy", 2000, 100), Bid(3, "ben", "buy", 1000, 80),
    Bid(4, "sam", "sell", 2500, 90), Bid(5, "sue", "sell", 1500, 70), Bid(6, "sid", "sell", 2000, 110),
]


def _fills(fills: list[Any]) -> list[tuple[int, int, int, int]]:
    return [(f.buy_id, f.sell_id, f.amount_wh, f.price) for f in fills]


def test_highest_price_first_example() -> None:
    # best bid (120) meets best ask (70), then 90; bid 100 takes the rest of ask 90; 100 < 110 stops it
    assert _fills(match_highest_price(EXAMPLE)) == [(1, 5, 1500, 95), (1, 4, 1500, 105), (2, 4, 1000, 95)]


def test_max_utilisation_example() -> None:
    # the 110 ask can only go to bid 120, so it is served first; everything then clears: 6000 Wh, not 4000
    assert _fills(match_max_utilisation(EXAMPLE)) == [
        (1, 6, 2000, 115), (1, 4, 1000, 105), (2, 4, 1500, 95), (2, 5, 500, 85), (3, 5, 1000, 75)]


def test_fills_respect_prices_and_quantities() -> None:
    rng = random.Random(3)
    for _ in range(200):
        bids = _random_bids(rng)
        by_id = {b.id: b for b in bids}
        for match in (match_highest_price, match_max_utilisation):
            used: dict[int, int] = defaultdict(int)
            for f in match(bids):
                b, s = by_id[f.buy_id], by_id[f.sell_id]
                assert b.kind == "buy" and s.kind == "sell" and f.amount_wh > 0
                assert s.price <= f.price <= b.price
                used[b.id] += f.amount_wh
                used[s.id] += f.amount_wh
            assert all(used[i] <= by_id[i].amount_wh for i in used)


def _random_bids(rng: random.Random) -> list[Bid]:
    return [Bid(i, f"a{i}", rng.choice(["buy", "sell"]), rng.randrange(1, 50) * 100, rng.randrange(50, 150))
            for i in range(rng.randrange(0, 12))]


def _max_flow_volume(bids: list[Bid]) -> int:
    """Reference: maximum volume of a matching where every pair has bid >= ask (Edmonds-Karp)."""
    buys = [b for b in bids if b.kind == "buy"]
    sells = [b for b in bids if b.kind == "sell"]
    src, dst = "src", "dst"
    cap: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in sells:
        cap[src][f"s{s.id}"] += s.amount_wh
        for b in buys:
            if b.price >= s.price:
                cap[f"s{s.id}"][f"b{b.id}"] += 10**12
    for b in buys:
        cap[f"b{b.id}"][dst] += b.amount_wh
    flow = 0
    while True:
        parent = {src: src}
        queue = [src]
        while queue and dst not in parent:
            u = queue.pop(0)
            for v, c in list(cap[u].items()):
                if c > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if dst not in parent:
            return flow
        path = []
        v = dst
        while v != src:
            path.append((parent[v], v))
            v = parent[v]
        push = min(cap[u][v] for u, v in path)
        for u, v in path:
            cap[u][v] -= push
            cap[v][u] += push
        flow += push


def test_max_utilisation_reaches_the_maximum_flow() -> None:
    rng = random.Random(11)
    for _ in range(300):
        bids = _random_bids(rng)
        best = _max_flow_volume(bids)
        assert sum(f.amount_wh for f in match_max_utilisation(bids)) == best
        assert sum(f.amount_wh for f in match_highest_price(bids)) <= best


# -- through blocks --------------------------------------------------------------------------------

TRADERS = {"bob": {"prc": 1000}, "bea": {"prc": 1000}, "ben": {"prc": 1000},
           "sam": {"kWh": 5000}, "sue": {"kWh": 5000}, "sid": {"kWh": 5000}}


def _sim(matching: str = "max_utilisation", **extra: Any) -> SimChain:
    return SimChain(4, label="market", accounts={k: dict(v) for k, v in TRADERS.items()},
                    market={"round_ms": ROUND_MS, "matching": matching, "dr_cycle_ms": 60_000}, **extra)


def _totals(state: ChainState) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for key, value in state.prefix_items(b"balances/"):
        out[key.decode().split("/", 2)[2]] += int(value)
    return dict(out)


def _current_round(sim: SimChain) -> int:
    return (sim.tip.timestamp_ms + 1000) // ROUND_MS


def test_round_settles_as_hand_computed_and_conserves() -> None:
    sim = _sim()
    totals = _totals(sim.state)
    r = _current_round(sim) + 1
    txs = [sim.tx(b.owner, "market.submit_bid", {"kind": b.kind, "amount_wh": b.amount_wh, "price": b.price,
                                                  "round": r}) for b in EXAMPLE]
    sim.produce(txs)
    assert not sim.failed[-1], sim.failed[-1]
    bal = sim.state.balance
    assert bal("bob", "prc") == 1000 - 360 and bal("sam", "kWh") == 2500
    assert bal(MARKET_ACCOUNT, "prc") == 360 + 200 + 80 and bal(MARKET_ACCOUNT, "kWh") == 6000
    while sim.tip.timestamp_ms < (r + 1) * ROUND_MS:
        sim.produce()
        assert _totals(sim.state) == totals
    cleared = [e for e in sim.events[-1] if e["type"] == "round_cleared"]
    assert len(cleared) == 1 and cleared[0]["volume_wh"] == 6000
    # payments: 2000*115//1000=230, 1000*105//1000=105, 1500*95//1000=142, 500*85//1000=42, 1000*75//1000=75
    assert {n: bal(n, "prc") for n in ("bob", "bea", "ben", "sam", "sue", "sid")} == {
        "bob": 1000 - 335, "bea": 1000 - 184, "ben": 1000 - 75, "sam": 247, "sue": 117, "sid": 230}
    assert {n: bal(n, "kWh") for n in ("bob", "bea", "ben", "sam", "sue", "sid")} == {
        "bob": 3000, "bea": 2000, "ben": 1000, "sam": 2500, "sue": 3500, "sid": 3000}
    assert bal(MARKET_ACCOUNT, "prc") == 0 and bal(MARKET_ACCOUNT, "kWh") == 0
    assert sim.state.get_json(f"market/result/{r}".encode())["volume_wh"] == 6000
    assert _totals(sim.state) == totals


def test_highest_price_round_refunds_unmatched() -> None:
    sim = _sim("highest_price")
    r = _current_round(sim)
    sim.produce([sim.tx(b.owner, "market.submit_bid", {"kind": b.kind, "amount_wh": b.amount_wh,
                                                        "price": b.price, "round": r}) for b in EXAMPLE])
    while sim.tip.timestamp_ms < (r + 1) * ROUND_MS:
        sim.produce()
    bal = sim.state.balance
    # fills (1,5,1500,95)=142, (1,4,1500,105)=157, (2,4,1000,95)=95; ben and sid unmatched: refunded in full
    assert bal("bob", "prc") == 1000 - 142 - 157 and bal("bea", "prc") == 1000 - 95 and bal("ben", "prc") == 1000
    assert bal("sid", "kWh") == 5000 and bal("sid", "prc") == 0
    assert bal("sam", "kWh") == 2500 and bal("sam", "prc") == 157 + 95
    assert bal("bea", "kWh") == 1000 and bal(MARKET_ACCOUNT, "kWh") == 0 and bal(MARKET_ACCOUNT, "prc") == 0


def test_random_market_conserves_every_denomination() -> None:
    rng = random.Random(5)
    sim = _sim()
    totals = _totals(sim.state)
    for _ in range(60):
        txs = []
        for name in rng.sample(sorted(TRADERS), 3):
            kind = "buy" if "prc" in TRADERS[name] else "sell"
            txs.append(sim.tx(name, "market.submit_bid", {
                "kind": kind, "amount_wh": rng.randrange(1, 2000), "price": rng.randrange(20, 200),
                "round": _current_round(sim) + rng.randrange(0, 2)}))
        sim.produce(txs)
        assert _totals(sim.state) == totals
    assert any(e["type"] == "round_cleared" and e["volume_wh"] > 0 for ev in sim.events for e in ev)


@pytest.mark.parametrize("args,error", [
    ({"kind": "buy", "amount_wh": -5, "price": 100}, CodecError),
    ({"kind": "buy", "amount_wh": 0, "price": 100}, CodecError),
    ({"kind": "buy", "amount_wh": True, "price": 100}, CodecError),
    ({"kind": "buy", "amount_wh": "100", "price": 100}, CodecError),
    ({"kind": "buy", "amount_wh": 100, "price": 0}, CodecError),
    ({"kind": "buy", "amount_wh": 5, "price": 100}, CodecError),  # would pay nothing
    ({"kind": "swap", "amount_wh": 100, "price": 100}, CodecError),
    ({"kind": "buy", "amount_wh": 10**6, "price": 100_000}, InsufficientFundsError),
    ({"kind": "sell", "amount_wh": 100, "price": 100}, InsufficientFundsError),  # bob has no kWh
    ({"kind": "buy", "amount_wh": 100, "price": 100, "round": -1}, CodecError),  # a past round
    ({"kind": "buy", "amount_wh": 100, "price": 100, "round": 10**9}, CodecError),  # too far ahead
])
def test_bad_bid_is_rejected_and_changes_nothing(args: dict[str, Any], error: type[ProtocolError]) -> None:
    sim = _sim()
    sim.produce()
    args = {"round": _current_round(sim), **args}
    if args["round"] == -1:
        args["round"] = _current_round(sim) - 1
    root = sim.state.root
    tx = sim.tx("bob", "market.submit_bid", args)
    ctx = BlockContext(sim.chain_id, sim.tip.height + 1, sim.tip.timestamp_ms + 1000, "w00")
    with pytest.raises(error):
        sim.app.execute_tx(sim.state, tx, ctx)
    assert sim.state.root == root


# -- demand response -------------------------------------------------------------------------------

DR_ACCOUNTS = {"agg": {"prc": 10_000}, "agh": {"prc": 10_000}, "u1": {}, "u2": {}, "u3": {}, "u4": {}}


def _dr_sim() -> SimChain:
    sim = SimChain(4, label="dr", accounts={k: dict(v) for k, v in DR_ACCOUNTS.items()},
                   market={"round_ms": ROUND_MS, "dr_cycle_ms": 60_000})
    # align to the start of a DR cycle so the phases below stay inside one cycle
    start = (sim.tip.timestamp_ms // 60_000 + 1) * 60_000
    sim.produce([sim.tx("agg", "dr.register", {"role": "aggregator"}),
                 sim.tx("agh", "dr.register", {"role": "aggregator"})] +
                [sim.tx(u, "dr.register", {"role": "user"}) for u in ("u1", "u2", "u3", "u4")], time_ms=start)
    assert not sim.failed[-1], sim.failed[-1]
    return sim


def _rep(sim: SimChain, name: str) -> dict[str, Any]:
    rec = sim.state.get_json(reputation_path(name))
    assert isinstance(rec, dict)
    return rec


def test_first_price_sealed_auction_and_reputation() -> None:
    sim = _dr_sim()
    p = MarketParams()
    init = p.reputation_initial
    totals = _totals(sim.state)
    sim.produce([sim.tx("agg", "dr.request", {"amount_wh": 3000, "max_price": 200, "commit_ms": 5000,
                                              "reveal_ms": 5000})])
    rid = 1
    req = sim.state.get_json(f"dr/request/{rid}".encode())
    bids = {"u1": (1500, 150, "s1" * 8), "u2": (2000, 120, "s2" * 8), "u3": (500, 10, "s3" * 8)}
    sim.produce([sim.tx(u, "dr.commit", {"request_id": rid, "commitment": dr_commitment(rid, u, a, pr, s)})
                 for u, (a, pr, s) in bids.items()])
    assert not sim.failed[-1]
    # a commitment reveals nothing and cannot be revealed early
    early = sim.tx("u1", "dr.reveal", {"request_id": rid, "amount_wh": 1500, "price": 150, "salt": "s1" * 8})
    sim.produce([early])
    assert isinstance(sim.failed[-1][0][1], ProtocolError)
    sim.produce(time_ms=req["commit_end_ms"])
    late_commit = sim.tx("u4", "dr.commit", {"request_id": rid, "commitment": "ab" * 32})
    wrong = sim.tx("u2", "dr.reveal", {"request_id": rid, "amount_wh": 2000, "price": 119, "salt": "s2" * 8})
    sim.produce([late_commit, wrong])
    assert [type(e) for _, e in sim.failed[-1]] == [ProtocolError, ProtocolError]
    # u3 never reveals
    sim.produce([sim.tx(u, "dr.reveal", {"request_id": rid, "amount_wh": a, "price": pr, "salt": s})
                 for u, (a, pr, s) in bids.items() if u != "u3"])
    assert not sim.failed[-1], sim.failed[-1]
    sim.produce(time_ms=req["reveal_end_ms"])
    settled = [e for e in sim.events[-1] if e["type"] == "dr_settled"]
    assert settled and settled[0]["awards"] == [
        {"bidder": "u2", "amount_wh": 2000, "price": 120, "payment": 240},  # cheapest first, paid its own bid
        {"bidder": "u1", "amount_wh": 1000, "price": 150, "payment": 150},  # partial: only 1000 Wh still needed
    ]
    bal = sim.state.balance
    assert bal("u2", "prc") == 240 and bal("u1", "prc") == 150 and bal("u3", "prc") == 0
    assert bal("agg", "prc") == 10_000 - 390 and bal(DR_ACCOUNT, "prc") == 0
    assert _totals(sim.state) == totals
    r = p.reputation_match_reward
    assert _rep(sim, "u1")["score"] == init + r and _rep(sim, "u2")["score"] == init + r
    assert _rep(sim, "agg")["score"] == init + r
    assert _rep(sim, "u3")["score"] == init - p.reputation_no_reveal_penalty
    assert _rep(sim, "u1")["model"] == DR_MODELS["user"] and _rep(sim, "agg")["model"] == REPUTATION_MODEL
    assert _rep(sim, "u1")["height"] == sim.tip.height
    # the cycle ends: whoever did not match is inactive and loses reputation
    sim.produce(time_ms=(sim.tip.timestamp_ms // 60_000 + 1) * 60_000)
    closed = [e for e in sim.events[-1] if e["type"] == "dr_cycle_closed"]
    assert closed and closed[0]["inactive"] == ["agh", "u3", "u4"]
    assert _rep(sim, "u4")["active"] is False and _rep(sim, "u1")["active"] is True
    assert _rep(sim, "u4")["score"] == init - p.reputation_inactive_penalty
    ranking = [row["name"] for row in credit_ranking(sim.state)]
    assert ranking == ["agg", "u1", "u2", "agh", "u4", "u3"]


def test_dr_rules() -> None:
    sim = _dr_sim()
    sim.produce([sim.tx("agg", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 5000,
                                              "reveal_ms": 5000, "min_reputation": 5001})])
    sim.produce([
        sim.tx("u1", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 1, "reveal_ms": 1}),
        sim.tx("agh", "dr.commit", {"request_id": 1, "commitment": "00" * 32}),
        sim.tx("u1", "dr.commit", {"request_id": 1, "commitment": "00" * 32}),  # reputation 5000 < floor 5001
        sim.tx("agg", "dr.request", {"amount_wh": -1, "max_price": 100, "commit_ms": 1, "reveal_ms": 1}),
        sim.tx("agg", "dr.request", {"amount_wh": 10**6, "max_price": 10**5, "commit_ms": 1, "reveal_ms": 1}),
        sim.tx("agg", "dr.register", {"role": "user"}),
    ])
    assert [type(e) for _, e in sim.failed[-1]] == [AuthorizationError, AuthorizationError, AuthorizationError,
                                                     CodecError, InsufficientFundsError, ProtocolError]
    sim.produce([sim.tx("agg", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 5000,
                                              "reveal_ms": 5000})])
    c = dr_commitment(2, "u1", 1000, 100, "salt-u1-0123456789")
    sim.produce([sim.tx("u1", "dr.commit", {"request_id": 2, "commitment": c})])
    sim.produce([sim.tx("u1", "dr.commit", {"request_id": 2, "commitment": c})])
    assert isinstance(sim.failed[-1][0][1], ReplayError)
    # u2 cannot reveal u1's commitment as its own
    req = sim.state.get_json(b"dr/request/2")
    sim.produce([sim.tx("u2", "dr.reveal", {"request_id": 2, "amount_wh": 1000, "price": 100,
                                            "salt": "salt-u1-0123456789"})], time_ms=req["commit_end_ms"])
    assert isinstance(sim.failed[-1][0][1], ProtocolError)


def _delivery_request(sim: SimChain, bids: dict[str, tuple[int, int]], deliver_ms: int = 5000) -> dict[str, Any]:
    """agg asks 3000 Wh at most 200/kWh with a delivery window; ``bids`` commit and reveal; the auction settles."""
    sim.produce([sim.tx("agg", "dr.request", {"amount_wh": 3000, "max_price": 200, "commit_ms": 3000,
                                              "reveal_ms": 3000, "deliver_ms": deliver_ms})])
    rid = sim.state.get_int(b"dr/next_request_id")
    req = sim.state.get_json(f"dr/request/{rid}".encode())
    sim.produce([sim.tx(u, "dr.commit", {"request_id": rid, "commitment": dr_commitment(rid, u, a, pr, "salt" * 4)})
                 for u, (a, pr) in bids.items()])
    sim.produce([sim.tx(u, "dr.reveal", {"request_id": rid, "amount_wh": a, "price": pr, "salt": "salt" * 4})
                 for u, (a, pr) in bids.items()], time_ms=req["commit_end_ms"])
    sim.produce(time_ms=req["reveal_end_ms"])
    assert not any(sim.failed[-3:]), sim.failed[-3:]
    result = sim.state.get_json(f"dr/result/{rid}".encode())
    assert result["status"] == "awaiting_delivery"
    return dict(result)


def test_dr_delivery_pays_what_was_delivered_and_reputation_follows_it() -> None:
    sim = _dr_sim()
    p = MarketParams()
    init = p.reputation_initial
    totals = _totals(sim.state)
    result = _delivery_request(sim, {"u1": (2000, 100), "u2": (2000, 150)})
    rid = result["id"]
    # awarded: u1 2000 Wh at 100, u2 1000 Wh at 150; nothing paid yet, the awards held in escrow
    assert [(a["bidder"], a["amount_wh"], a["payment"]) for a in result["awards"]] == [("u1", 2000, 200),
                                                                                     ("u2", 1000, 150)]
    assert sim.state.balance("u1", "prc") == 0 and sim.state.balance(DR_ACCOUNT, "prc") == 350
    assert sim.state.balance("agg", "prc") == 10_000 - 350
    assert _rep(sim, "u1")["score"] == init  # reputation waits for the delivery
    report = {"request_id": rid, "delivered": {"u1": 2000, "u2": 400}}
    sim.produce([sim.tx("agg", "dr.report_delivery", report)])
    assert not sim.failed[-1], sim.failed[-1]
    ev = next(e for e in sim.events[-1] if e["type"] == "dr_delivery_settled")
    assert ev["delivered_wh"] == 2400 and ev["completion_bp"] == 8000 and ev["returned"] == 90
    assert sim.state.balance("u1", "prc") == 200 and sim.state.balance("u2", "prc") == 60
    assert sim.state.balance("agg", "prc") == 10_000 - 260 and sim.state.balance(DR_ACCOUNT, "prc") == 0
    assert _totals(sim.state) == totals
    assert _rep(sim, "u1")["score"] == init + p.reputation_match_reward
    assert _rep(sim, "u2")["score"] == init - p.reputation_shortfall_penalty * 600 // 1000
    # 80% < the 95% target: the aggregator loses pro rata to its 20% shortfall
    assert _rep(sim, "agg")["score"] == init - p.reputation_shortfall_penalty * 600 // 3000
    # double settlement is refused, and so is anyone but the aggregator
    sim.produce([sim.tx("agg", "dr.report_delivery", report), sim.tx("agh", "dr.report_delivery", report)])
    assert [type(e) for _, e in sim.failed[-1]] == [ReplayError, AuthorizationError]
    assert _totals(sim.state) == totals and sim.state.balance("u1", "prc") == 200


def test_dr_delivery_refusals_and_the_unreported_window() -> None:
    sim = _dr_sim()
    p = MarketParams()
    totals = _totals(sim.state)
    result = _delivery_request(sim, {"u1": (1000, 100), "u3": (2000, 120)})
    rid = result["id"]
    bad = [{"u1": 1000}, {"u1": 1000, "u3": 2001}, {"u1": 1000, "u3": -1}, {"u1": 1000, "u3": True},
           {"u1": 1000, "u3": 2000, "u4": 0}]
    sim.produce([sim.tx("agg", "dr.report_delivery", {"request_id": rid, "delivered": d}) for d in bad] +
                [sim.tx("agg", "dr.report_delivery", {"request_id": 999, "delivered": {}})])
    assert [type(e) for _, e in sim.failed[-1]] == [CodecError] * 5 + [ProtocolError]
    # the window ends unreported: winners are paid in full, the aggregator loses the no-report penalty
    sim.produce(time_ms=result["deliver_end_ms"])
    ev = next(e for e in sim.events[-1] if e["type"] == "dr_delivery_settled")
    assert ev["reported"] is False and ev["delivered_wh"] == 3000
    assert sim.state.balance("u1", "prc") == 100 and sim.state.balance("u3", "prc") == 240
    assert _rep(sim, "agg")["score"] <= p.reputation_initial - p.reputation_no_reveal_penalty
    assert _totals(sim.state) == totals and sim.state.balance(DR_ACCOUNT, "prc") == 0
    # a late report (the window closed, and the request is settled) is a replay
    sim.produce([sim.tx("agg", "dr.report_delivery", {"request_id": rid, "delivered": {"u1": 0, "u3": 0}})])
    assert isinstance(sim.failed[-1][0][1], ReplayError)
    assert sim.state.get_json(b"dr/delivery_open") is None


def test_dr_report_after_the_window_closed_is_refused() -> None:
    sim = _dr_sim()
    result = _delivery_request(sim, {"u1": (1000, 100)}, deliver_ms=2000)
    # a block at the window's end settles it in its begin-block hook, before any report in it runs
    tx = sim.tx("agg", "dr.report_delivery", {"request_id": result["id"], "delivered": {"u1": 0}})
    ctx = BlockContext(sim.chain_id, sim.tip.height + 1, result["deliver_end_ms"], "w00")
    before = sim.state.root
    with pytest.raises(ProtocolError, match="delivery window closed"):
        sim.app.execute_tx(sim.state, tx, ctx)
    assert sim.state.root == before


def test_two_way_selection_terms_join_members_only_and_the_cycle_end() -> None:
    sim = _dr_sim()
    p = MarketParams()
    # u4 loses reputation: it commits and never reveals, so it falls below agg's terms
    sim.produce([sim.tx("agh", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 2000,
                                              "reveal_ms": 2000})])
    sim.produce([sim.tx("u4", "dr.commit", {"request_id": 1, "commitment": "ab" * 32})])
    sim.produce(time_ms=sim.state.get_json(b"dr/request/1")["reveal_end_ms"])
    assert _rep(sim, "u4")["score"] == p.reputation_initial - p.reputation_no_reveal_penalty
    sim.produce([sim.tx("agg", "dr.set_terms", {"min_user_reputation": 4900, "max_users": 2}),
                 sim.tx("u1", "dr.set_terms", {"min_user_reputation": 0, "max_users": 2}),
                 sim.tx("agg", "dr.set_terms", {"min_user_reputation": 4900, "max_users": 0}, nonce=2)])
    assert [type(e) for _, e in sim.failed[-1]] == [AuthorizationError, CodecError]
    sim.produce([sim.tx("u1", "dr.join", {"aggregator": "agg"}), sim.tx("u2", "dr.join", {"aggregator": "agg"}),
                 sim.tx("u3", "dr.join", {"aggregator": "agg"}),  # full: 2 members
                 sim.tx("u4", "dr.join", {"aggregator": "agh"}),  # agh has no terms: anyone
                 sim.tx("u1", "dr.join", {"aggregator": "agh"}, nonce=2),  # one aggregator a cycle
                 sim.tx("u3", "dr.join", {"aggregator": "u2"}),  # not an aggregator (u3 nonce: the full one failed)
                 sim.tx("agh", "dr.join", {"aggregator": "agg"})])  # aggregators do not join
    assert [type(e) for _, e in sim.failed[-1]] == [ProtocolError, ReplayError, ProtocolError, AuthorizationError]
    sim.produce([sim.tx("u3", "dr.join", {"aggregator": "agh"})])
    assert dr_members(sim.state, "agg") == ["u1", "u2"] and dr_members(sim.state, "agh") == ["u3", "u4"]
    # a members-only request takes commitments from its members only
    sim.produce([sim.tx("agg", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 3000,
                                              "reveal_ms": 3000, "members_only": True}),
                 sim.tx("agg", "dr.request", {"amount_wh": 1000, "max_price": 100, "commit_ms": 3000,
                                              "reveal_ms": 3000, "members_only": 1}, nonce=3)])
    assert [type(e) for _, e in sim.failed[-1]] == [CodecError]
    rid = sim.state.get_int(b"dr/next_request_id")
    sim.produce([sim.tx("u1", "dr.commit", {"request_id": rid, "commitment": "01" * 32}),
                 sim.tx("u3", "dr.commit", {"request_id": rid, "commitment": "02" * 32})])
    assert [(tx.sender, type(e)) for tx, e in sim.failed[-1]] == [("u3", AuthorizationError)]
    # the cycle's end dissolves the memberships; u4, now below agg's terms, is refused by it
    sim.produce(time_ms=(sim.tip.timestamp_ms // 60_000 + 1) * 60_000)
    assert dr_members(sim.state, "agg") == [] and sim.state.get_json(b"dr/member/u1") is None
    sim.produce([sim.tx("u4", "dr.join", {"aggregator": "agg"}), sim.tx("u1", "dr.join", {"aggregator": "agh"})])
    assert [type(e) for _, e in sim.failed[-1]] == [AuthorizationError]
    assert dr_members(sim.state, "agh") == ["u1"]
