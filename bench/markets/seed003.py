"""The DPoS park's market and consensus improvements, on its state machine (docs/research.md#seed-003).

    python bench/markets/seed003.py [--json] [--plot FILE.png] [--rounds 200] [--trials 20] [--intervals 20]

Three experiments, each through real signed blocks of an in-process park (:class:`chains.dpos.testing.SimChain`:
``chains.dpos.witnesses.apply_block_consensus``, the market's begin-block hooks, transactions):

1. **Matching rules.** The same ``--rounds`` trading rounds of bids (``market.submit_bid``, escrowed, cleared
   and settled by the begin-block hook) on two parks that differ only in ``matching``: ``highest_price``
   ("highest price first") and ``max_utilisation``. Figures: matched volume and welfare (the traders' surplus,
   ``sum q * (bid - ask)``, taking bids and asks as the traders' values), totals over the rounds; every
   denomination's total is checked unchanged.
2. **Malicious-witness removal.** A witness of the active set double-produces; ``--trials`` times (random
   active witness and random height inside a maintenance interval) on three parks: *plain DPoS* (no credit, no
   jail: only voters can remove it, through the next election), *credit scoring* (the evidence jails it; it
   is voted out at the next maintenance boundary) and *credit scoring with fast replacement*
   (``replacement_interval_blocks`` = 1: the election runs in the next block); and plain DPoS twice, with
   the offender's voter reacting at once and with voters that do not react. Figure: blocks from the
   misbehaviour until a witness set without the offender is in force (the set the light client and the
   schedule use), and how many blocks it produced in the meantime.
3. **Reward split.** ``--intervals`` maintenance intervals of a park whose witnesses miss slots at different
   rates, with the block rewards split by Shapley value and, on a second park with the same draws, in
   proportion to blocks produced. Figures: each witness's share, the Gini coefficient of the rewards, the
   share of the half of the witnesses that produced least.

Behavioural model and parameters (fixed before any figure was looked at; ``SEED`` fixes every draw):

* Matching: each round 10 sellers offer uniform 0.5..5.0 kWh (100 Wh steps) at asks uniform 40..120 prc/kWh
  and 10 buyers want uniform 0.5..5.0 kWh at bids uniform 60..160 prc/kWh; round length 10 s, 1 s blocks, the
  park's default market parameters otherwise. Traders are funded so no bid is refused.
* Removal: 7 active witnesses and 3 standby (genesis base votes 1000 active, 500 standby); 7 voters, each with
  10,000 kWh of stake, approve one active witness each from block 1. Maintenance interval 50 blocks, 1 s
  blocks, all witnesses online. After a 60-block warm-up, the offender signs a second block at a height
  drawn uniformly over the next 50 blocks. In the block after it, a watcher submits the evidence
  (``witness.report_double_production``) on the credit parks; on the first plain-DPoS park the offender's voter
  instead moves its approval to the best standby witness (the most favourable reaction plain DPoS can get),
  on the second nobody reacts; voters do not react on the credit parks (the chain acts alone). Plain DPoS is
  the same chain with credit rewards and penalties 0, jail thresholds off and no evidence op used. A trial
  watches 500 blocks (10 intervals) for the removal.
  Credit parameters are the park's defaults (``DposParams``).
* Rewards: 7 witnesses, maintenance interval 50 blocks, block reward 100 prc; in every slot a witness is
  offline with its own probability 0, 0, 0.05, 0.10, 0.20, 0.30, 0.50 (w00..w06); jail is off here
  (``jail_missed_in_row`` 10^6, threshold 0) so the set stays the same and only the split differs. Shapley
  weights are blocks times credit (:func:`chains.dpos.consensus.shapley_rewards`). Each witness has one voter
  (10,000 kWh of stake) and passes 10 % of its reward on to its voters (``voter_reward_share_bp`` 1000); a
  witness's share counts what its voter received, and the voters' return per MWh of stake is reported.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.markets.common import main, pyplot
from chains.common.state import ChainState
from chains.dpos.testing import SimChain, forge, test_signer, witness_name
from chains.dpos.witnesses import active_set

SEED = 2003
ROUNDS = 200
TRIALS = 20
INTERVALS = 20
ROUND_MS = 10_000
TRADERS = 10
MAINTENANCE = 50
WARMUP = 60
OFFLINE_P = [0.0, 0.0, 0.05, 0.10, 0.20, 0.30, 0.50]
VOTER_STAKE = 10_000
VOTER_SHARE_BP = 1000


def _totals(state: ChainState) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for key, value in state.prefix_items(b"balances/"):
        out[key.decode().split("/", 2)[2]] += int(value)
    return dict(out)


# -- 1. matching rules -----------------------------------------------------------------------------


def _orders(seed: int, rounds: int) -> list[list[tuple[str, str, int, int]]]:
    rng = random.Random(f"{seed}/orders")
    out = []
    for _ in range(rounds):
        orders = [(f"s{i:02d}", "sell", rng.randrange(5, 51) * 100, rng.randint(40, 120)) for i in range(TRADERS)]
        orders += [(f"b{i:02d}", "buy", rng.randrange(5, 51) * 100, rng.randint(60, 160)) for i in range(TRADERS)]
        rng.shuffle(orders)
        out.append(orders)
    return out


def matching(method: str, rounds: int, seed: int) -> dict[str, Any]:
    accounts = {f"s{i:02d}": {"kWh": 10**9} for i in range(TRADERS)} | {f"b{i:02d}": {"prc": 10**9}
                                                                         for i in range(TRADERS)}
    sim = SimChain(4, label="seed003m", accounts=accounts, market={"round_ms": ROUND_MS, "matching": method})
    totals = _totals(sim.state)
    start = (sim.tip.timestamp_ms // ROUND_MS + 1) * ROUND_MS
    prices: dict[int, int] = {}
    volume: list[int] = []
    welfare: list[float] = []
    for k, orders in enumerate(_orders(seed, rounds)):
        r = start // ROUND_MS + k
        sim.produce([sim.tx(o, "market.submit_bid", {"kind": kind, "amount_wh": q, "price": p, "round": r})
                     for o, kind, q, p in orders], time_ms=r * ROUND_MS + 1000)
        assert not sim.failed[-1], sim.failed[-1]
        prices.update({e["id"]: e["price"] for e in sim.events[-1] if e["type"] == "bid_submitted"})
        sim.produce(time_ms=(r + 1) * ROUND_MS)  # the first block past the round's end clears it
        (cleared,) = [e for e in sim.events[-1] if e["type"] == "round_cleared"]
        volume.append(sum(f["amount_wh"] for f in cleared["fills"]))
        welfare.append(sum(f["amount_wh"] * (prices[f["buy_id"]] - prices[f["sell_id"]]) for f in cleared["fills"])
                       / 1000)
    conserved = _totals(sim.state) == totals
    return {"volume_wh": volume, "welfare": welfare, "conserved": conserved, "blocks": sim.tip.height}


# -- 2. malicious-witness removal --------------------------------------------------------------------


_PLAIN = {"credit_produced_reward": 0, "credit_missed_penalty": 0, "credit_bad_block_penalty": 0,
          "jail_credit_threshold": 0, "jail_missed_in_row": 10**6}
MODES: dict[str, dict[str, Any]] = {
    # park parameters, whether a watcher submits the evidence, whether the offender's voter moves its approval
    "plain_dpos": {"params": _PLAIN, "evidence": False, "voters_react": True},
    "plain_dpos_idle_voters": {"params": _PLAIN, "evidence": False, "voters_react": False},
    "credit": {"params": {}, "evidence": True, "voters_react": False},
    "credit_fast_replacement": {"params": {"replacement_interval_blocks": 1}, "evidence": True, "voters_react": False},
}
HORIZON = 10 * MAINTENANCE
"""Blocks after the misbehaviour a trial watches for the removal."""


def removal(mode: str, offender_index: int, bad_offset: int) -> dict[str, Any]:
    label = "seed003r"
    witnesses = [{"name": witness_name(i), "pubkey": test_signer(label, i).pubkey.hex(),
                  "votes": 1000 if i < 7 else 500 - i} for i in range(10)]
    voters = {f"v{i}": {"kWh": 10_000} for i in range(7)}
    sim = SimChain(7, n_standby=3, label=label, accounts=voters, witnesses=witnesses,
                   maintenance_interval_blocks=MAINTENANCE, params=MODES[mode]["params"])
    sim.produce([sim.tx(f"v{i}", "witness.vote", {"witness": witness_name(i)}) for i in range(7)])
    offender = witness_name(offender_index)
    # warm-up, then run until the offender's block at the drawn height
    bad_height = WARMUP + bad_offset
    while sim.tip.height < bad_height or sim.tip.producer != offender:
        sim.produce()
        assert sim.tip.height < bad_height + 30, "the offender had no slot"
    bad = sim.tip
    bad_at = bad.height
    twin = forge(bad, sim.signers[offender], tx_root=b"\x99" * 32)
    reaction = []
    if MODES[mode]["voters_react"]:
        reaction += [sim.tx(f"v{offender_index}", "witness.vote", {"witness": offender, "approve": False}),
                     sim.tx(f"v{offender_index}", "witness.vote", {"witness": "w07"}, nonce=2)]
    if MODES[mode]["evidence"]:
        reaction.append(sim.tx("v0" if offender_index else "v1", "witness.report_double_production",
                               {"header_a": bad.encode().hex(), "header_b": twin.encode().hex()}))
    sim.produce(reaction)
    assert not sim.failed[-1], sim.failed[-1]
    produced_after = 0
    while offender in active_set(sim.state):
        if sim.tip.height >= bad_at + HORIZON:
            return {"blocks_to_removal": None, "offender_blocks_after": produced_after}
        h = sim.produce()
        produced_after += h.producer == offender
    return {"blocks_to_removal": sim.tip.height - bad_at, "offender_blocks_after": produced_after}


def removals(trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}/removal")
    draws = [(rng.randrange(7), rng.randrange(MAINTENANCE)) for _ in range(trials)]
    out = {}
    for mode in MODES:
        runs = [removal(mode, o, off) for o, off in draws]
        blocks = [r["blocks_to_removal"] for r in runs if r["blocks_to_removal"] is not None]
        out[mode] = {"blocks_to_removal": blocks, "removed": f"{len(blocks)}/{trials}",
                     "mean": round(statistics.mean(blocks), 1) if blocks else None,
                     "median": statistics.median(blocks) if blocks else None, "max": max(blocks) if blocks else None,
                     "offender_blocks_after_mean": round(statistics.mean(r["offender_blocks_after"] for r in runs), 1)}
    return out


# -- 3. reward split -----------------------------------------------------------------------------------


def gini(xs: list[int]) -> float:
    xs = sorted(xs)
    n, total = len(xs), sum(xs)
    if not total:
        return 0.0
    return sum((2 * i - n + 1) * x for i, x in enumerate(xs)) / (n * total)


def rewards(split: str, intervals: int, seed: int) -> dict[str, Any]:
    names = [witness_name(i) for i in range(7)]
    voters = {f"v{i}": {"kWh": VOTER_STAKE} for i in range(7)}
    sim = SimChain(7, label="seed003w", maintenance_interval_blocks=MAINTENANCE, accounts=voters,
                   params={"reward_split": split, "block_reward": 100, "jail_missed_in_row": 10**6,
                           "jail_credit_threshold": 0, "voter_reward_share_bp": VOTER_SHARE_BP})
    sim.produce([sim.tx(f"v{i}", "witness.vote", {"witness": n}) for i, n in enumerate(names)])
    rng = random.Random(f"{seed}/availability")
    while sim.tip.height < intervals * MAINTENANCE:
        offline = {n for n, p in zip(names, OFFLINE_P, strict=True) if rng.random() < p}
        if len(offline) == len(names):
            offline = set()
        sim.produce(offline=offline)
    paid = {n: sim.state.balance(n, "prc") + sim.state.balance(f"v{i}", "prc") for i, n in enumerate(names)}
    voter_paid = {n: sim.state.balance(f"v{i}", "prc") for i, n in enumerate(names)}
    produced = {n: sum(1 for h in sim.headers[1:] if h.producer == n) for n in names}
    total = sum(paid.values())
    by_blocks = sorted(names, key=lambda n: (produced[n], n))
    return {"paid": paid, "produced": produced, "total": total,
            "share": {n: round(paid[n] / total, 4) for n in names},
            "gini": round(gini(list(paid.values())), 4),
            "bottom_half_share": round(sum(paid[n] for n in by_blocks[:3]) / total, 4),
            "voter_return_per_mwh": {n: round(voter_paid[n] * 1_000_000 / VOTER_STAKE, 1) for n in names}}


def run(rounds: int = ROUNDS, trials: int = TRIALS, intervals: int = INTERVALS, seed: int = SEED) -> dict[str, Any]:
    started = time.monotonic()
    m = {method: matching(method, rounds, seed) for method in ("highest_price", "max_utilisation")}
    rem = removals(trials, seed)
    rw = {split: rewards(split, intervals, seed) for split in ("shapley", "proportional")}
    out: dict[str, Any] = {"seed": seed, "rounds": rounds}
    for method, res in m.items():
        out[f"volume_kwh_{method}"] = round(sum(res["volume_wh"]) / 1000, 1)
        out[f"welfare_{method}"] = round(sum(res["welfare"]), 1)
        out[f"conserved_{method}"] = res["conserved"]
    hp, mu = m["highest_price"], m["max_utilisation"]
    out["rounds_max_utilisation_more_volume"] = sum(a > b for a, b in zip(mu["volume_wh"], hp["volume_wh"],
                                                                          strict=True))
    out["rounds_highest_price_more_welfare"] = sum(a > b for a, b in zip(hp["welfare"], mu["welfare"], strict=True))
    out["removal_trials"] = trials
    for mode, res in rem.items():
        out[f"removal_blocks_{mode}"] = {k: res[k] for k in ("removed", "mean", "median", "max")}
        out[f"offender_blocks_after_misbehaviour_{mode}"] = res["offender_blocks_after_mean"]
    out["reward_intervals"] = intervals
    out["offline_probability"] = dict(zip([witness_name(i) for i in range(7)], OFFLINE_P, strict=True))
    for split, res in rw.items():
        out[f"reward_share_{split}"] = res["share"]
        out[f"reward_gini_{split}"] = res["gini"]
        out[f"reward_bottom_half_share_{split}"] = res["bottom_half_share"]
        out[f"voter_return_prc_per_mwh_{split}"] = res["voter_return_per_mwh"]
    out["blocks_produced"] = rw["shapley"]["produced"]
    out["seed_reported"] = "no figures: the claims are directions (both matching rules, timely removal of "\
        "malicious witnesses, Shapley rewards widening the beneficiaries)"
    out["seconds"] = round(time.monotonic() - started, 1)
    out["_series"] = {"matching": m, "removal": rem, "rewards": rw}
    return out


def plot(out: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    s = out["_series"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    methods = ["highest_price", "max_utilisation"]
    vol = [out[f"volume_kwh_{m}"] for m in methods]
    wel = [out[f"welfare_{m}"] for m in methods]
    x = [0, 1]
    bars = ax.bar([i - 0.2 for i in x], vol, width=0.4, color="tab:blue", label="matched volume (kWh, left)")
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_ylabel("matched volume, kWh")
    ax2 = ax.twinx()
    bars = ax2.bar([i + 0.2 for i in x], wel, width=0.4, color="tab:orange", label="welfare (prc, right)")
    ax2.bar_label(bars, fmt="%.0f", fontsize=8)
    ax2.set_ylabel("welfare sum q(bid - ask), prc")
    ax.set_xticks(x, ["highest price first", "maximum utilisation"])
    ax.set_title(f"Matching rules over {out['rounds']} rounds")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax2.legend(handles, [str(h.get_label()) for h in handles], fontsize=8, loc="upper center")
    ax2.set_ylim(0, max(wel) * 1.25)
    ax.set_ylim(0, max(vol) * 1.25)
    ax = axes[1]
    modes = list(s["removal"])
    data = [s["removal"][m]["blocks_to_removal"] or [HORIZON] for m in modes]
    ax.boxplot(data)
    labels = {"plain_dpos": "plain DPoS,\nvoters react", "plain_dpos_idle_voters": "plain DPoS,\nvoters idle",
              "credit": "credit + jail", "credit_fast_replacement": "credit + fast\nreplacement"}
    ax.set_xticks(range(1, len(modes) + 1), [f"{labels[m]}\nremoved {s['removal'][m]['removed']}" for m in modes],
                  fontsize=7)
    ax.axhline(HORIZON, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylabel(f"blocks from misbehaviour to removal (log; cap {HORIZON})")
    ax.set_title(f"Malicious witness removal ({out['removal_trials']} trials, interval {MAINTENANCE} blocks)")
    ax = axes[2]
    names = sorted(out["reward_share_shapley"])
    xs = range(len(names))
    ax.bar([i - 0.2 for i in xs], [out["reward_share_shapley"][n] for n in names], width=0.4,
           label=f"Shapley (Gini {out['reward_gini_shapley']:.3f})")
    ax.bar([i + 0.2 for i in xs], [out["reward_share_proportional"][n] for n in names], width=0.4,
           label=f"proportional (Gini {out['reward_gini_proportional']:.3f})")
    ax.set_xticks(list(xs), [f"{n}\n{out['offline_probability'][n]:.2f}" for n in names], fontsize=8)
    ax.set_xlabel("witness and its probability of missing a slot")
    ax.set_ylabel("share of block rewards")
    ax.set_title(f"Reward split over {out['reward_intervals']} intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _options(parser: Any) -> None:
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"trading rounds (default {ROUNDS})")
    parser.add_argument("--trials", type=int, default=TRIALS, help=f"removal trials per park (default {TRIALS})")
    parser.add_argument("--intervals", type=int, default=INTERVALS,
                        help=f"maintenance intervals of the reward runs (default {INTERVALS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")


if __name__ == "__main__":
    sys.exit(main(__doc__, run, plot, _options))
