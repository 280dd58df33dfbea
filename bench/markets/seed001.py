"""The Ethereum park's market experiments (docs/research.md#seed-001), reproduced on chain.

    python bench/markets/seed001.py [--json] [--plot FILE.png]

Runs the ``EnergyMarket`` contract on a fresh anvil (deployed beside an Ethereum park by
``chains.ethereum.deploy.deploy_market``); bids are computed off chain by the agents of ``chains.ethereum.market``,
submitted, cleared and settled on chain by ``adapters.ethereum.market``. The seed's claims, as directions:
(1) a clearing with a use-of-system charge makes generation and users trade with near neighbours; (2) best-response
bidding with the utility corrected by the charge reaches a point where no member gains by changing its bid, and
(3) promotes local consumption of distributed energy. Every parameter below was fixed before any figure was seen.

**Feeder** (:data:`FEEDER`): a substation (bus 0) and three laterals A (buses 1-3), B (4-6), C (7-9) of three
buses each; the line from a lateral's head to the substation is 400/500/600 m, every other line 300 m. Line limits
per round: 60 kWh on the heads of A and B, **15 kWh on the head of C** (a weak line, so congestion management
acts), 40 kWh elsewhere, the substation unlimited.

**Members** (:func:`members`, ``random.Random(SEED)``, SEED = 1): on each bus 1-9 one seller (distributed
generation) and one buyer. A seller forecasts 6-14 kWh a round and asks at least its reservation 280-380 wei/Wh
(marginal cost or the feed-in tariff it gets otherwise); a buyer needs 6-14 kWh and pays at most its reservation
450-600 wei/Wh (its value, or the retail price it pays the grid otherwise), so an unmatched member's utility is 0.
Risk attitudes are drawn uniformly from averse / neutral / seeking (``u(x) = x^α``, α = 0.5 / 1 / 2).

**Use-of-system charge**: ``RATE`` = 60 wei per Wh per km of electrical distance between seller and buyer (so a
trade across two laterals, ~1.5 km, pays ~90 wei/Wh, a trade between neighbours 18), paid by the buyer to the
park operator; "without" is rate 0 on the same contract.

**Experiment 1, risk-attitude bidding** (:class:`~chains.ethereum.market.RiskAttitudeAgent`): ``ROUNDS`` = 12
trading rounds with the charge and 12 without, each member starting from ``p̂`` = 450 wei/Wh, ``σ`` = 40,
``λ`` = 0.3, prices within [250, 650]. Each round: every member bids, the round closes, ``clear`` runs (its gas is a
figure), and ``settle`` takes metered deliveries: each seller delivers ``contracted × (1 − e)``, ``e`` uniform in
[0, 0.15] (``random.Random(SEED + 2)``; prediction error, the delivery record's score), after which the agents adapt.
The same is repeated for ``SWEEP_ROUNDS`` = 6 rounds at each charge rate of ``RATE_SWEEP`` = 0, 15, 30, 45,
60, 90 wei/Wh/km (fresh agents each time; added after the first run, as a sensitivity of figure 1). Figures: the
share of cleared energy traded between near neighbours (both on the same lateral: the trade's path does not cross
the substation), the energy-weighted mean electrical distance of trades, energy cleared, curtailments.

**Experiment 2, best-response dynamics** (:func:`~chains.ethereum.market.best_response_dynamics`): from truthful
bids (each member at its reservation), members take turns in bus order, each choosing its best price on a 5 wei/Wh
grid in [250, 650] given the others' (payoff from the contract's clearing rule, mirrored off chain; a buyer's payoff
net of the charge it pays), until a full sweep changes no price (at most 40 sweeps). The equilibrium bids are then
submitted on chain, cleared (the on-chain trades must equal the mirror's) and settled. Figures: sweeps to
equilibrium, members' utilities (sum and per member), and **local consumption**: the share of the generation offered
that is consumed on its own lateral; with the charge vs without.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eth_account.signers.local import LocalAccount

from adapters.ethereum.market import MarketClient
from bench.common import emit
from chains.common import progress
from chains.ethereum.deploy import deploy_market
from chains.ethereum.market import (
    Bid,
    Feeder,
    Line,
    Member,
    RiskAttitudeAgent,
    Trade,
    best_response_dynamics,
    clear,
    utilities,
)
from tests.ethereum.harness import AnvilProcess, Evm, RelaySim, deploy_park

SEED = 1
RATE = 60
ROUNDS = 12
RATE_SWEEP, SWEEP_ROUNDS = (0, 15, 30, 45, 60, 90), 6
P_HAT0, SIGMA, LAMBDA = 450.0, 40.0, 0.3
PRICE_FLOOR, PRICE_CEILING = 250, 650
BR_STEP, BR_MAX_SWEEPS = 5, 40
SHORTFALL_MAX = 0.15
FEEDER = [(0, 0, 10**12),
          (0, 400, 60_000), (1, 300, 40_000), (2, 300, 40_000),
          (0, 500, 60_000), (4, 300, 40_000), (5, 300, 40_000),
          (0, 600, 15_000), (7, 300, 40_000), (8, 300, 40_000)]
"""(parent, length m, limit Wh per round) of buses 0-9."""


def feeder() -> Feeder:
    return Feeder(tuple(Line(i, p, length, limit) for i, (p, length, limit) in enumerate(FEEDER)))


def members() -> list[Member]:
    rng = random.Random(SEED)
    out = []
    for bus in range(1, len(FEEDER)):
        for seller in (True, False):
            q = rng.randint(6, 14) * 1000
            res = rng.randint(280, 380) if seller else rng.randint(450, 600)
            attitude = rng.choice(("averse", "neutral", "seeking"))
            out.append(Member(f"{'s' if seller else 'b'}{bus}", bus, seller, q, res, attitude))
    return out


@dataclass
class Chain:
    evm: Evm
    client: MarketClient
    operator: LocalAccount
    accounts: list[LocalAccount]
    clear_gas: list[int] = field(default_factory=list)
    settle_gas: list[int] = field(default_factory=list)
    curtailments: int = 0


def setup(evm: Evm, ms: list[Member]) -> Chain:
    park = deploy_park(evm, "eth-a", RelaySim.create("relay", 4, filler_records=16), [])
    address = deploy_market(evm.w3, park.operator, {"delivery_record": park.record.address,
                                                    "energy_token": park.token.address}, FEEDER)
    client = MarketClient(evm.w3, address)
    accounts = [evm.account() for _ in ms]
    for acct, m in zip(accounts, ms, strict=True):
        evm.transact(park.record.functions.admit(acct.address), park.operator)
        client.set_member(park.operator, acct.address, m.bus)
        if m.seller:
            evm.transact(park.token.functions.mint(acct.address, 10**9), park.operator)
    return Chain(evm, client, park.operator, accounts)


def run_round(chain: Chain, ms: list[Member], prices: list[int], rate: int, rng: random.Random) -> list[Trade]:
    """One round on chain: open, every member's bid, close, clear, settle with prediction error."""
    closes = chain.evm.latest_timestamp() + 3600
    rid = chain.client.open_round(chain.operator, closes, rate)
    for acct, m, p in zip(chain.accounts, ms, prices, strict=True):
        chain.client.submit_bid(acct, rid, m.seller, m.quantity_wh, p)
    chain.evm.mine_at(closes)
    res = chain.client.clear(chain.operator, rid)
    chain.clear_gas.append(res.gas_used)
    chain.curtailments += len(chain.client.curtailments(res.receipt))
    trades = chain.client.trades(rid)
    delivered = [int(t.quantity_wh * (1 - rng.uniform(0, SHORTFALL_MAX))) for t in trades]
    chain.settle_gas.append(chain.client.settle(chain.operator, rid, delivered).gas_used)
    return trades


def near_share(f: Feeder, ms: list[Member], trades: list[Trade]) -> float:
    total = sum(t.quantity_wh for t in trades)
    near = sum(t.quantity_wh for t in trades if f.lateral(ms[t.seller_bid].bus) == f.lateral(ms[t.buyer_bid].bus))
    return near / total if total else 0.0


def mean_distance(trades: list[Trade]) -> float:
    total = sum(t.quantity_wh for t in trades)
    return sum(t.quantity_wh * t.distance_m for t in trades) / total if total else 0.0


def local_consumption(f: Feeder, ms: list[Member], trades: list[Trade]) -> float:
    offered = sum(m.quantity_wh for m in ms if m.seller)
    local = sum(t.quantity_wh for t in trades if f.lateral(ms[t.seller_bid].bus) == f.lateral(ms[t.buyer_bid].bus))
    return local / offered


def risk_attitude(chain: Chain, f: Feeder, ms: list[Member], rate: int, rounds: int = ROUNDS) -> dict[str, Any]:
    agents = [RiskAttitudeAgent(m, P_HAT0, SIGMA, LAMBDA, PRICE_FLOOR, PRICE_CEILING) for m in ms]
    rng = random.Random(SEED + 2)
    near, dist, cleared = [], [], []
    for _ in range(rounds):
        trades = run_round(chain, ms, [a.bid_price() for a in agents], rate, rng)
        volume = sum(t.quantity_wh for t in trades)
        traded = [0] * len(ms)
        for t in trades:
            traded[t.seller_bid] += t.quantity_wh
            traded[t.buyer_bid] += t.quantity_wh
        for i, a in enumerate(agents):
            if volume:
                paid = sum(t.quantity_wh * (t.price if a.member.seller else t.price + t.charge) for t in trades)
                a.observe(paid / volume, traded[i])
            else:
                a.observe(None, traded[i])
        near.append(near_share(f, ms, trades))
        dist.append(mean_distance(trades))
        cleared.append(volume)
    return {"near_share_per_round": [round(x, 4) for x in near], "near_share": round(sum(near) / len(near), 4),
            "mean_distance_m": round(sum(dist) / len(dist), 1), "cleared_wh_per_round": cleared}


def best_response(chain: Chain, f: Feeder, ms: list[Member], rate: int) -> dict[str, Any]:
    res = best_response_dynamics(f, ms, rate, [m.reservation for m in ms], price_floor=PRICE_FLOOR,
                                 price_ceiling=PRICE_CEILING, price_step=BR_STEP, max_sweeps=BR_MAX_SWEEPS)
    on_chain = run_round(chain, ms, res.prices, rate, random.Random(SEED + 3))
    if on_chain != res.trades:
        raise SystemExit("on-chain clearing differs from the off-chain mirror")
    u = utilities(ms, on_chain)
    truthful = utilities(ms, clear(f, _bids(ms, [m.reservation for m in ms]), rate)[0])
    return {"converged": res.converged, "sweeps": res.sweeps, "changes_per_sweep": res.changes_per_sweep,
            "utility_sum_per_sweep": [sum(x) for x in res.utility_per_sweep],
            "utilities": dict(zip([m.name for m in ms], u, strict=True)), "utility_sum": sum(u),
            "utility_sum_truthful": sum(truthful), "prices": dict(zip([m.name for m in ms], res.prices, strict=True)),
            "cleared_wh": sum(t.quantity_wh for t in on_chain), "near_share": round(near_share(f, ms, on_chain), 4),
            "local_consumption": round(local_consumption(f, ms, on_chain), 4),
            "mean_distance_m": round(mean_distance(on_chain), 1)}


def _bids(ms: list[Member], prices: list[int]) -> list[Bid]:
    return [Bid(m.name, m.bus, m.seller, m.quantity_wh, p) for m, p in zip(ms, prices, strict=True)]


def measure() -> dict[str, Any]:
    f, ms = feeder(), members()
    with AnvilProcess() as node:
        evm = Evm.connect(node.url)
        chain = setup(evm, ms)
        ra_with = risk_attitude(chain, f, ms, RATE)
        ra_without = risk_attitude(chain, f, ms, 0)
        sweep = {rate: risk_attitude(chain, f, ms, rate, SWEEP_ROUNDS) for rate in RATE_SWEEP}
        br_with = best_response(chain, f, ms, RATE)
        br_without = best_response(chain, f, ms, 0)
        record = chain.client.contract.functions.deliveryRecord().call()
        rec = evm.w3.eth.contract(address=record, abi=[{
            "type": "function", "name": "scoreOf", "stateMutability": "view",
            "inputs": [{"name": "p", "type": "address"}],
            "outputs": [{"name": "has", "type": "bool"}, {"name": "scoreBps", "type": "uint64"}]}])
        scores = {m.name: rec.functions.scoreOf(a.address).call()[1]
                  for m, a in zip(ms, chain.accounts, strict=True) if m.seller}
        escrow = chain.client.escrowed()
        # conservation: the market holds exactly the wei it credits (not yet withdrawn) and no kWh once settled
        if (evm.w3.eth.get_balance(chain.client.contract.address), 0) != escrow:
            raise SystemExit(f"escrow not conserved: {escrow}")
    gas = chain.clear_gas
    return {
        "members": len(ms), "bids_per_round": len(ms), "rate_wei_per_wh_km": RATE, "rounds": ROUNDS,
        "risk_near_share_with_charge": ra_with["near_share"],
        "risk_near_share_without_charge": ra_without["near_share"],
        "risk_mean_distance_m_with": ra_with["mean_distance_m"],
        "risk_mean_distance_m_without": ra_without["mean_distance_m"],
        "risk_cleared_wh_with": sum(ra_with["cleared_wh_per_round"]),
        "risk_cleared_wh_without": sum(ra_without["cleared_wh_per_round"]),
        "br_converged_with": br_with["converged"], "br_sweeps_with": br_with["sweeps"],
        "br_converged_without": br_without["converged"], "br_sweeps_without": br_without["sweeps"],
        "br_utility_sum_with": br_with["utility_sum"], "br_utility_sum_without": br_without["utility_sum"],
        "br_near_share_with": br_with["near_share"], "br_near_share_without": br_without["near_share"],
        "local_consumption_with": br_with["local_consumption"],
        "local_consumption_without": br_without["local_consumption"],
        "risk_near_share_by_rate": {str(r): s["near_share"] for r, s in sweep.items()},
        "risk_mean_distance_m_by_rate": {str(r): s["mean_distance_m"] for r, s in sweep.items()},
        "risk_cleared_wh_by_rate": {str(r): sum(s["cleared_wh_per_round"]) for r, s in sweep.items()},
        "curtailments": chain.curtailments,
        "gas_clear_mean": sum(gas) // len(gas), "gas_clear_max": max(gas),
        "gas_settle_mean": sum(chain.settle_gas) // len(chain.settle_gas),
        "credited_not_withdrawn_wei": escrow[0], "escrow_left_wh": escrow[1],
        "seller_scores_bps": scores,
        "detail": {"risk_with": ra_with, "risk_without": ra_without, "br_with": br_with, "br_without": br_without},
    }


def plot(out: dict[str, Any], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = out["detail"]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    ax = [axes[0][:2], axes[1][:2]]
    rates = [int(r) for r in out["risk_near_share_by_rate"]]
    axes[0][2].plot(rates, list(out["risk_near_share_by_rate"].values()), "o-", color="tab:blue")
    axes[0][2].set(title="Risk-attitude bidding: near-neighbour share vs charge rate", xlabel="wei per Wh per km",
                   ylabel="share of cleared energy", ylim=(0, 1.05))
    twin = axes[0][2].twinx()
    twin.plot(rates, list(out["risk_mean_distance_m_by_rate"].values()), "s--", color="tab:red")
    twin.set_ylabel("mean electrical distance of trades (m)", color="tab:red")
    axes[1][2].plot(rates, [v / 1000 for v in out["risk_cleared_wh_by_rate"].values()], "o-")
    axes[1][2].set(title=f"Energy cleared in {SWEEP_ROUNDS} rounds vs charge rate", xlabel="wei per Wh per km",
                   ylabel="kWh", ylim=(0, None))
    rounds = range(1, out["rounds"] + 1)
    ax[0][0].plot(rounds, d["risk_with"]["near_share_per_round"], "o-", label=f"charge {RATE} wei/Wh/km")
    ax[0][0].plot(rounds, d["risk_without"]["near_share_per_round"], "s--", label="no charge")
    ax[0][0].set(title="Risk-attitude bidding: energy traded with near neighbours", xlabel="round",
                 ylabel="share of cleared energy", ylim=(0, 1.05))
    ax[0][0].legend()
    for key, style, label in (("br_with", "o-", "with charge"), ("br_without", "s--", "without charge")):
        ax[0][1].plot(range(1, d[key]["sweeps"] + 1), d[key]["utility_sum_per_sweep"], style, label=label)
    ax[0][1].set(title="Best-response dynamics: members' total utility per sweep", xlabel="sweep",
                 ylabel="utility (wei)")
    ax[0][1].legend()
    names = list(d["br_with"]["utilities"])
    x = range(len(names))
    ax[1][0].bar([i - 0.2 for i in x], list(d["br_with"]["utilities"].values()), 0.4, label="with charge")
    ax[1][0].bar([i + 0.2 for i in x], list(d["br_without"]["utilities"].values()), 0.4, label="without charge")
    ax[1][0].set_xticks(list(x), names, rotation=90)
    ax[1][0].set(title="Members' utilities at equilibrium", ylabel="utility (wei)")
    ax[1][0].legend()
    labels = ["near share\n(risk)", "near share\n(best resp.)", "local consumption\n(best resp.)"]
    w = [out["risk_near_share_with_charge"], out["br_near_share_with"], out["local_consumption_with"]]
    wo = [out["risk_near_share_without_charge"], out["br_near_share_without"], out["local_consumption_without"]]
    ax[1][1].bar([i - 0.2 for i in range(3)], w, 0.4, label="with charge")
    ax[1][1].bar([i + 0.2 for i in range(3)], wo, 0.4, label="without charge")
    ax[1][1].set_xticks(range(3), labels)
    ax[1][1].set(title="With vs without the use-of-system charge", ylim=(0, 1.25))
    ax[1][1].legend(loc="upper center", ncol=2)
    fig.suptitle(f"seed-001 on the Ethereum park (EnergyMarket on anvil; clear() {out['gas_clear_mean']:,} gas "
                 f"for {out['bids_per_round']} bids)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--plot", metavar="FILE.png", help="write the figure")
    args = ap.parse_args()
    with progress.bar("seed-001: rounds on the Ethereum park's market", json_mode=args.json):
        out = measure()
    if args.plot:
        plot(out, args.plot)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
