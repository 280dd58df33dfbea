"""Reputation-based demand response vs the traditional way, on the DPoS park's state machine
(docs/research.md#seed-002).

    python bench/markets/seed002.py [--json] [--plot FILE.png] [--rounds 1000]

25 users and 4 load aggregators run ``--rounds`` demand-response (DR) rounds on an in-process DPoS park
(:class:`chains.dpos.testing.SimChain`: every round is real signed blocks and transactions through
``chains.dpos.market`` — ``dr.request`` with a delivery window, sealed ``dr.commit``/``dr.reveal`` bids, the
first-price auction in the begin-block hook, ``dr.report_delivery``, cycle close with the inactivity
penalty). The same park, users and random draws run twice: once the traditional way, once reputation-based.
It prints the mean DR completion rate of each (beside the seed's about 96% and about 88.5%), the aggregators'
final reputation ranking (beside the seed's 3, 2, 1, 4) and, with ``--plot``, draws the completion rate over
the rounds and the aggregators' reputation over the rounds (the seed's Fig. 4 and Fig. 5).

Behavioural model and parameters (fixed before any figure was looked at; ``SEED`` fixes every draw):

* **Users** ``u01..u25``: load-reduction capacity per round uniform in 1.0..5.0 kWh (100 Wh steps); a cost
  uniform in 60..140 prc/kWh and a markup uniform in 5..25 %; each round a user bids its whole capacity at
  ``cost * (1 + markup)`` (its first-price bid). Reliability ``r`` uniform in 0.60..1.00: in a round a winner
  delivers its whole award with probability ``r``, else a uniform fraction in [0, 1) of it.
* **Aggregators** ``agg1..agg4``: each reports its winners' metered delivery within the window with
  probability ``q`` uniform in 0.90..1.00 (else the window ends unreported: the park pays the winners in full
  and the aggregator loses reputation).
* **Grid demand**: every round the grid asks the aggregators for ``D`` = 40 % of the users' total capacity,
  split among the aggregators in proportion to the capacity of the users they hold; each aggregator puts its
  share out as one ``dr.request`` (price cap 200 prc/kWh, above every user's bid). A sensitivity check
  (``--dispatch rank``, not the default) has the grid choose aggregators by their rank too in the
  reputation-based method: best-ranked first, each up to its members' capacity / ``COVER``.
* **Memberships** are on chain: every DR cycle (10 rounds) each user joins one aggregator (``dr.join``)
  within the aggregator's terms (``dr.set_terms``: at most 7 users), and requests are for
  members only; the cycle's end dissolves the memberships.
* **Traditional method**: users are dealt to aggregators at random once (7, 6, 6, 6) and rejoin the same one
  every cycle; no floor (terms and requests admit any reputation); the auction is the same first-price sealed
  auction (cheapest first).
* **Reputation-based method**: at the start of every cycle users and aggregators choose each other by the
  chain's credit ranking (:func:`chains.dpos.market.credit_ranking`, the seed's descending list): users, best
  reputation first, each join the best-ranked aggregator that holds fewer than 7 users (4 x 7 seats for 25
  users: everyone is placed; the terms set no floor). Each request then admits a *matching range* of the
  aggregator's members: its members ranked by their reputation on chain, best first, are admitted until their
  capacity reaches ``COVER`` = 1.5 times the request, and the request's ``min_reputation`` is the score of the
  last one admitted, so the chain refuses a commitment from any member ranked below that range (an aggregator
  with too little capacity above any floor admits all its members). A member left out of every range of a
  cycle has no match, so the cycle's close marks it inactive and it loses reputation (the seed's penalty of
  inactive nodes).
  *Revision* (the run before it: reputation-based 75.9 % vs traditional 91.5 %): the model used to exclude
  users under a fixed floor of 4000 from the two-way selection and from every request. A user under the floor
  then had no aggregator, so it never matched, was penalised as inactive every cycle and could never return:
  17 of 25 users ended there and the aggregators could not fill their requests. The seed has nodes *choose
  partners by their rank* in the credit list; it cancels inactive nodes' quota of the accounting right (block
  production), not their part in DR. So the model now ranks instead of excluding: every user holds a seat,
  and each request's floor is the one its own members' ranking and capacity give.
* **Park**: 4 witnesses, 1 s blocks, a block in every slot; a round is 7 blocks (the joins at a cycle's
  start; the requests; the commitments; the reveals at the commit phase's end, 2 s; an empty block; the auction
  at the reveal phase's end, 2 s; the delivery reports, within the 2 s window).
  Market parameters are the park's defaults (``MarketParams``: initial reputation 5000 of 10000, +20 for a
  full delivery or a request delivered to 95 %, -300 pro rata to a shortfall, -50 for a cycle without a
  match, -200 for a commitment never revealed) with a DR cycle of 10 rounds (70 s).
* **Completion rate** of a round: energy the winners actually delivered (the model's truth) over ``D``; an
  unfilled auction counts as undelivered. The figure is the mean over all rounds.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.markets.common import main, moving_average, pyplot
from chains.dpos.market import MarketParams, credit_ranking, dr_commitment, dr_members, reputation_path
from chains.dpos.testing import GENESIS_TIME_MS, SimChain

SEED = 2002
N_USERS = 25
N_AGGREGATORS = 4
ROUNDS = 1000
CYCLE_ROUNDS = 10
ROUND_MS = 7000
DEMAND_SHARE = 0.40
PRICE_CAP = 200
COVER = 1.5
AGGREGATOR_CAPACITY = 7
SEED_FIGURES = {"completion_reputation": 0.96, "completion_traditional": 0.885,
                "final_ranking": ["agg3", "agg2", "agg1", "agg4"]}


def population(seed: int = SEED) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """The users (capacity Wh, bid price, reliability) and aggregators (report probability)."""
    rng = random.Random(f"{seed}/population")
    users = {}
    for i in range(1, N_USERS + 1):
        cap = rng.randrange(10, 51) * 100
        cost = rng.uniform(60, 140)
        markup = rng.uniform(0.05, 0.25)
        users[f"u{i:02d}"] = {"capacity_wh": cap, "price": round(cost * (1 + markup)),
                              "reliability": rng.uniform(0.6, 1.0)}
    aggs = {f"agg{a}": rng.uniform(0.90, 1.00) for a in range(1, N_AGGREGATORS + 1)}
    return users, aggs


def _delivered(seed: int, k: int, user: str, award: int, reliability: float) -> int:
    rng = random.Random(f"{seed}/{k}/{user}")
    if rng.random() < reliability:
        return award
    return int(award * rng.random())


def _reports(seed: int, k: int, aggregator: str, q: float) -> bool:
    return random.Random(f"{seed}/{k}/{aggregator}").random() < q


def _deal(users: list[str], aggs: list[str], seed: int) -> dict[str, list[str]]:
    order = list(users)
    random.Random(f"{seed}/deal").shuffle(order)
    out: dict[str, list[str]] = {a: [] for a in aggs}
    for i, u in enumerate(order):
        out[aggs[i % len(aggs)]].append(u)
    return out


def _two_way(sim: SimChain, aggs: list[str]) -> dict[str, list[str]]:
    """Users, best reputation first, join the best-ranked aggregator with room (nobody is left out)."""
    ranking = credit_ranking(sim.state)
    agg_order = [r["name"] for r in ranking if r["role"] == "aggregator"]
    out: dict[str, list[str]] = {a: [] for a in aggs}
    for row in ranking:
        if row["role"] != "user":
            continue
        for a in agg_order:
            if len(out[a]) < AGGREGATOR_CAPACITY:
                out[a].append(row["name"])
                break
    return out


def _matching_floor(sim: SimChain, members: list[str], users: dict[str, dict[str, Any]], request_wh: int,
                    cover: float) -> int:
    """The request's ``min_reputation``: the score of the last of the members, best reputation first, admitted
    until their capacity reaches ``cover`` times the request (all members if they never do)."""
    ranked = sorted(((sim.state.get_json(reputation_path(u))["score"], u) for u in members), reverse=True)
    held = 0
    for score, u in ranked:
        held += users[u]["capacity_wh"]
        if held >= cover * request_wh:
            return int(score)
    return int(ranked[-1][0]) if ranked else 0


def _rank_dispatch(sim: SimChain, held: dict[str, int], demand: int, cover: float) -> dict[str, int]:
    """The grid's demand, to aggregators best-ranked first, each up to its members' capacity / ``cover``."""
    out = dict.fromkeys(held, 0)
    left = demand
    for row in credit_ranking(sim.state):
        if row["role"] == "aggregator" and row["name"] in held and left > 0:
            out[row["name"]] = min(left, int(held[row["name"]] / cover))
            left -= out[row["name"]]
    return out


def simulate(method: str, rounds: int, seed: int = SEED, inactive_penalty: int | None = None,
             cover: float = COVER, dispatch: str = "capacity") -> dict[str, Any]:
    users, aggs = population(seed)
    names = sorted(users)
    agg_names = sorted(aggs)
    accounts = {a: {"prc": 10**10} for a in agg_names} | {u: {} for u in names}
    cycle_ms = CYCLE_ROUNDS * ROUND_MS
    # genesis 3 s before a DR cycle starts: registration and terms fill the slots before it, and from then on
    # every slot has its block (no witness misses one, so the park's witnesses never change)
    t_start = (GENESIS_TIME_MS // cycle_ms + 1) * cycle_ms
    market: dict[str, Any] = {"dr_cycle_ms": cycle_ms}
    if inactive_penalty is not None:
        market["reputation_inactive_penalty"] = inactive_penalty
    sim = SimChain(4, label="seed002", accounts=accounts, market=market,
                   genesis_time_ms=t_start - 3000)
    sim.produce([sim.tx(a, "dr.register", {"role": "aggregator"}) for a in agg_names] +
                [sim.tx(u, "dr.register", {"role": "user"}) for u in names], time_ms=t_start - 2000)
    assert not sim.failed[-1], sim.failed[-1]
    sim.produce([sim.tx(a, "dr.set_terms", {"min_user_reputation": 0, "max_users": AGGREGATOR_CAPACITY})
                 for a in agg_names], time_ms=t_start - 1000)
    assert not sim.failed[-1], sim.failed[-1]
    demand = int(DEMAND_SHARE * sum(u["capacity_wh"] for u in users.values()))
    dealt = _deal(names, agg_names, seed)
    members: dict[str, list[str]] = {a: [] for a in agg_names}
    completion: list[float] = []
    reputation: dict[str, list[int]] = {a: [] for a in agg_names}
    refused = refused_joins = unreported = txs = 0
    last_award: dict[str, int] = {}
    for k in range(rounds):
        t0 = t_start + ROUND_MS * k
        assert sim.tip.timestamp_ms == t0 - 1000, "a round's blocks fill its 7 slots"
        joins = []
        if k % CYCLE_ROUNDS == 0:  # a new DR cycle: the last one's memberships are gone, both sides choose again
            plan = _two_way(sim, agg_names) if method == "reputation" else dealt
            joins = [sim.tx(u, "dr.join", {"aggregator": a}) for a in agg_names for u in plan[a]]
        sim.produce(joins, time_ms=t0)  # its begin-block hook closes the last DR cycle at a cycle's start
        refused_joins += len(sim.failed[-1])
        if joins:
            members = {a: dr_members(sim.state, a) for a in agg_names}
        held = {a: sum(users[u]["capacity_wh"] for u in members[a]) for a in agg_names}
        total_held = sum(held.values())
        share = {a: demand * held[a] // total_held if total_held else 0 for a in agg_names}
        if method == "reputation" and dispatch == "rank":
            share = _rank_dispatch(sim, held, demand, cover)
        floor = {a: _matching_floor(sim, members[a], users, share[a], cover) if method == "reputation" else 0
                 for a in agg_names}
        requests = [sim.tx(a, "dr.request", {"amount_wh": share[a], "max_price": PRICE_CAP, "commit_ms": 2000,
                                             "reveal_ms": 2000, "deliver_ms": 2000, "min_reputation": floor[a],
                                             "members_only": True})
                    for a in agg_names if share[a] > 0]
        sim.produce(requests, time_ms=t0 + 1000)
        rid = {e["aggregator"]: e["id"] for e in sim.events[-1] if e["type"] == "dr_request"}
        salt = f"{seed}-{k}"
        bids = [(u, rid[a]) for a in agg_names if a in rid for u in members[a]]
        sim.produce([sim.tx(u, "dr.commit", {"request_id": r, "commitment": dr_commitment(
            r, u, users[u]["capacity_wh"], users[u]["price"], salt)}) for u, r in bids], time_ms=t0 + 2000)
        refused += len(sim.failed[-1])
        refused_now = {tx.sender for tx, _ in sim.failed[-1]}
        sim.produce([sim.tx(u, "dr.reveal", {"request_id": r, "amount_wh": users[u]["capacity_wh"],
                                             "price": users[u]["price"], "salt": salt})
                     for u, r in bids if u not in refused_now], time_ms=t0 + 3000)
        sim.produce(time_ms=t0 + 4000)
        sim.produce(time_ms=t0 + 5000)
        settled = {e["aggregator"]: e for e in sim.events[-1] if e["type"] == "dr_settled"}
        delivered_total = 0
        reports = []
        for a, ev in sorted(settled.items()):
            for w in ev["awards"]:
                last_award[w["bidder"]] = k
            delivered = {w["bidder"]: _delivered(seed, k, w["bidder"], w["amount_wh"],
                                                 users[w["bidder"]]["reliability"]) for w in ev["awards"]}
            delivered_total += sum(delivered.values())
            if _reports(seed, k, a, aggs[a]):
                reports.append(sim.tx(a, "dr.report_delivery", {"request_id": ev["id"], "delivered": delivered}))
            else:
                unreported += 1
        sim.produce(reports, time_ms=t0 + 6000)
        assert not sim.failed[-1], sim.failed[-1]
        txs += len(joins) + len(requests) + len(bids) * 2 + len(reports)
        completion.append(delivered_total / demand)
        for a in agg_names:
            reputation[a].append(sim.state.get_json(reputation_path(a))["score"])
    sim.produce(time_ms=t_start + ROUND_MS * rounds + cycle_ms)  # settle the last windows, close the cycle
    final = {row["name"]: row["score"] for row in credit_ranking(sim.state)}
    return {"completion": completion, "reputation": reputation, "final": final, "refused_commitments": refused,
            "refused_joins": refused_joins,
            "unreported_requests": unreported, "blocks": sim.tip.height, "txs": txs,
            "users_idle_last_half": sorted(u for u in names if last_award.get(u, -1) < rounds // 2)}


def run(rounds: int = ROUNDS, seed: int = SEED, inactive_penalty: int | None = None,
        cover: float = COVER, dispatch: str = "capacity") -> dict[str, Any]:
    started = time.monotonic()
    res = {m: simulate(m, rounds, seed, inactive_penalty, cover, dispatch) for m in ("reputation", "traditional")}
    rep, trad = res["reputation"], res["traditional"]
    aggs = sorted(rep["reputation"])
    ranking = sorted(aggs, key=lambda a: (-rep["final"][a], a))
    users, agg_q = population(seed)

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4)

    return {
        "rounds": rounds, "users": N_USERS, "aggregators": N_AGGREGATORS, "seed": seed,
        "inactive_penalty": MarketParams().reputation_inactive_penalty if inactive_penalty is None
        else inactive_penalty,
        "completion_reputation": mean(rep["completion"]),
        "completion_traditional": mean(trad["completion"]),
        "completion_per_100_rounds": {m: [mean(res[m]["completion"][i:i + 100]) for i in range(0, rounds, 100)]
                                      for m in ("reputation", "traditional")},
        "completion_reputation_last_half": mean(rep["completion"][rounds // 2:]),
        "completion_traditional_last_half": mean(trad["completion"][rounds // 2:]),
        "final_ranking": ranking,
        "final_ranking_tied": len({rep["final"][a] for a in aggs}) < len(aggs),
        "final_aggregator_reputation": {a: rep["final"][a] for a in ranking},
        "final_aggregator_reputation_traditional": {a: trad["final"][a] for a in aggs},
        "aggregator_report_probability": {a: round(agg_q[a], 3) for a in aggs},
        "users_without_award_last_half_reputation": rep["users_idle_last_half"],
        "mean_reliability_of_users_without_award": mean([users[u]["reliability"] for u in rep["users_idle_last_half"]])
        if rep["users_idle_last_half"] else None,
        "mean_user_reliability": mean([u["reliability"] for u in users.values()]),
        "commitments_refused_by_floor": rep["refused_commitments"],
        "cover": cover, "dispatch": dispatch,
        "joins_refused": rep["refused_joins"],
        "unreported_requests": {"reputation": rep["unreported_requests"], "traditional": trad["unreported_requests"]},
        "blocks": rep["blocks"] + trad["blocks"], "txs": rep["txs"] + trad["txs"],
        "seconds": round(time.monotonic() - started, 1),
        "seed_reported": SEED_FIGURES,
        "_series": {"completion": {"reputation": rep["completion"], "traditional": trad["completion"]},
                    "reputation": rep["reputation"], "reputation_traditional": trad["reputation"]},
    }


def plot(out: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    s = out["_series"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    window = 50
    for method, colour in (("reputation", "tab:blue"), ("traditional", "tab:orange")):
        series = s["completion"][method]
        ax1.plot(range(1, len(series) + 1), moving_average(series, window), color=colour,
                 label=f"{method} (mean {out[f'completion_{method}']:.1%})")
        ax1.axhline(SEED_FIGURES[f"completion_{method}"], color=colour, linestyle=":", linewidth=1,
                    label=f"seed: {method} ~{SEED_FIGURES[f'completion_{method}']:.1%}")
    ax1.set_xlabel("DR round")
    ax1.set_ylabel(f"completion rate ({window}-round moving mean)")
    ax1.set_title("DR completion: reputation-based vs traditional")
    ax1.legend(fontsize=8, loc="lower right")
    for a, series in sorted(s["reputation"].items()):
        ax2.plot(range(1, len(series) + 1), series, label=a)
    ax2.set_xlabel("DR round")
    ax2.set_ylabel("aggregator reputation (0..10000)")
    tied = " (tied: by name)" if out["final_ranking_tied"] else ""
    ax2.set_title("Aggregator reputation, reputation-based method (cf. the seed's Fig. 4)\n"
                  f"final ranking: {', '.join(out['final_ranking'])}{tied} (seed: agg3, agg2, agg1, agg4)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _options(parser: Any) -> None:
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"DR rounds per method (default {ROUNDS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument("--inactive-penalty", type=int, default=None,
                        help="override the park's reputation_inactive_penalty (a sensitivity check; default: the "
                             "park's MarketParams value)")
    parser.add_argument("--cover", type=float, default=COVER,
                        help=f"matching range: members admitted to a request until their capacity is this many times "
                             f"the request (default {COVER}; a sensitivity check)")
    parser.add_argument("--dispatch", choices=("capacity", "rank"), default="capacity",
                        help="how the grid splits its demand among aggregators in the reputation-based method: in "
                             "proportion to the capacity they hold (default, as the traditional method) or, a "
                             "sensitivity check, best-ranked aggregator first up to its capacity / --cover")


if __name__ == "__main__":
    sys.exit(main(__doc__, run, plot, _options))
