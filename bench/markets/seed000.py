"""Demand response rate of the PoC park's capacity-competition market vs day-ahead prediction, a long-term
contract and a plain blockchain market (docs/research.md#seed-000).

    python bench/markets/seed000.py [--json] [--plot FILE.png] [--rounds 200]

The grid operator needs, every hour, a capacity ``D_t`` of one ancillary service (``reserve``) from 12 flexible
units and 8 storage units. Four ways of buying it run on the same units and the same random draws:

* **Capacity-competition market** — the PoC park's market (``chains.poc.market``) run in process: signed
  transactions executed by the park's App (:func:`chains.poc.app.poc_app`) in blocks with its begin-block
  clearing hook; ``market.demand`` (escrowed), ``market.offer`` bounded by committed plots, the supply-demand
  split clearing (first pass at most ``max_unit_share_pct`` of a demand per unit, then the rest), response-rate
  ranking, ``market.report`` settlement. Storage units are commissioned as storage
  (``market.storage_register``); every hour the operator posts their metered state of charge
  (``market.storage_soc``) and each storage unit **fills or erases plots** (``poc.fill`` / ``poc.erase``) so
  its plots back ``min(power, charge)``, then offers all its plots back. The chain refuses a fill the charge
  does not back and an offer while over-committed, and caps an award at the charge.
* **Plain blockchain market** — the same chain with the split off (``max_unit_share_pct`` 100) and nobody
  commissioned as storage: storage units' plots are their rated power (committed at genesis) and nothing ties
  an offer to their charge.
* **Day-ahead prediction** — a day ahead, the operator predicts each unit's available capacity of each hour
  (with an error, below) and calls units cheapest first up to their predicted capacity until ``D_t`` is covered.
* **Long-term contract** — once, the operator contracts units cheapest first at their expected capacity until
  the contracts cover the largest demand it expects (``0.45`` of the rated total); each hour it calls the
  contracted units cheapest first up to their contracted kW.
  (Day-ahead and long-term are the operator's own dispatch, not markets: they are computed in Python.)

*Revision after the first run* (documented, not tuned: the first model had storage without any recharging,
own use a symmetric -20..+20 %, so storage drained after its first calls and stayed empty in every method;
and the day-ahead operator used the long-run expectation, which made it the long-term contract's exact twin):
storage now recharges as below and the day-ahead forecast is the hour's capacity with an error.

Two ablations separate the capacity-competition market's two parts: storage bound to its charge without the
split, and the split without the storage binding (both on the chain as above).

**Response rate** of an hour: ``min(delivered, D_t) / D_t``; the figure is the mean over the hours. Also:
units called per hour, hours answered to at least 95 %, and storage units' own response (delivered / called kW).

Behavioural model and parameters (fixed before any figure was looked at; ``SEED`` fixes every draw):

* **Flexible units** ``f01..f12``: rated power uniform 50..300 kW (10 kW steps); in each hour a share
  uniform in 0.4..1.0 of it is actually available (production-dependent flexibility; expectation 0.7);
  an offer price uniform in 20..60 pcc/kW.
* **Storage units** ``s01..s08``: energy uniform 200..800 kWh and power uniform 100..300 kW (10 kWh/kW
  steps); state of charge starts at half; every hour its owner's own use moves it by a uniform -15..+15 % of
  its energy, and the owner recharges it by 20 % of its energy when it is under 80 % (a unit that sells
  capacity keeps itself charged; clamped to 0..energy); delivering capacity discharges it by the delivered kWh
  (one-hour calls). Available capacity: ``min(power, charge in kWh / 1 h)``; long-run expectation:
  ``min(power, energy / 2)``. Offer price uniform in 30..50 pcc/kW.
* **Forecasts**: the day-ahead operator predicts each unit's available capacity of an hour as the actual one
  plus an error uniform in -20..+20 % of the unit's rated power (floored at 0); the long-term contract uses the
  long-run expectations above.
* **Delivery**: a called unit delivers ``min(called, available)`` with probability ``r`` (uniform 0.85..1.00
  per unit, fixed), else a uniform fraction in [0, 1) of it; draws per (hour, unit), the same for every method.
* **Offers in the blockchain markets**: every unit offers the most the market lets it: a unit is paid per
  delivered kW, so a larger offer is never worse for it (a bound-free market gets every unit's rated power;
  on the capacity-competition market storage offers what its plots back). All at their price.
* **Demand**: ``D_t`` uniform 0.25..0.45 of the total rated power, price cap 100 pcc/kW, one hour.
* **Park**: ``kw_per_k21_plot`` 10 (a plot backs 10 kW), ``max_unit_share_pct`` 10 (at most a tenth of a demand
  per unit in the first pass: at least ten units are called when enough offer), ``storage_backing_ms`` one
  hour, ``round_blocks`` 2 (one block for the hour's operator and unit transactions, the next clears it and
  carries the delivery reports), one service (``reserve``), block reward 0 (no block is farmed), the grid
  operator funded with 10^12 pcc (escrow never limits it), other parameters the park's defaults. Flexible
  units' plots (rated power / 10) and the plain market's storage plots are committed at genesis. Block
  headers are not farmed here (the consensus is not what is measured): blocks are executed with the App's
  begin-block hooks and transactions only, and ``poc.fill`` proofs pass an accept-all verifier (a real k=21
  plot costs ~12 s and 34 MiB; fills with real chiapos proofs are tested in tests/unit/poc/test_storage.py
  and test_app.py).
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.markets.common import main, moving_average, pyplot
from chains.common.state import ChainState
from chains.common.tx import App, BlockContext, Tx
from chains.poc.app import genesis_state, poc_app
from chains.poc.market import PocAppParams, farmer_record, max_kw, plots_kw, response_ppm
from protocol.crypto import Ed25519Signer
from protocol.errors import ProtocolError

SEED = 2000
ROUNDS = 200
N_FLEX = 12
N_STORAGE = 8
KW_PER_PLOT = 10
SHARE_PCT = 10
PRICE_CAP = 100
HOUR_MS = 3_600_000
ROUND_BLOCKS = 2
CHAIN = "poc-seed000"
GRID = "grid"
METHODS = ("capacity_competition", "plain_blockchain", "day_ahead", "long_term_contract")


def _signer(name: str) -> Ed25519Signer:
    """A BENCH-ONLY key derived from a public label (the chain checks signatures; nothing here is secret)."""
    return Ed25519Signer(hashlib.sha256(b"parkrelay/BENCH-ONLY/poc-seed000/" + name.encode()).digest())


def population(seed: int = SEED) -> dict[str, dict[str, Any]]:
    rng = random.Random(f"{seed}/population")
    units: dict[str, dict[str, Any]] = {}
    for i in range(1, N_FLEX + 1):
        units[f"f{i:02d}"] = {"kind": "flex", "power_kw": rng.randrange(5, 31) * 10, "price": rng.randint(20, 60),
                              "reliability": rng.uniform(0.85, 1.0)}
    for i in range(1, N_STORAGE + 1):
        units[f"s{i:02d}"] = {"kind": "storage", "energy_kwh": rng.randrange(20, 81) * 10,
                              "power_kw": rng.randrange(10, 31) * 10, "price": rng.randint(30, 50),
                              "reliability": rng.uniform(0.85, 1.0)}
    return units


def expected_kw(unit: dict[str, Any]) -> int:
    """What the day-ahead and long-term operator expects a unit to have available."""
    if unit["kind"] == "flex":
        return int(unit["power_kw"] * 0.7)
    return int(min(unit["power_kw"], unit["energy_kwh"] / 2))


class Hours:
    """The draws of every hour, shared by the four methods."""

    def __init__(self, units: dict[str, dict[str, Any]], rounds: int, seed: int) -> None:
        rng = random.Random(f"{seed}/hours")
        rated = sum(u["power_kw"] for u in units.values())
        self.demand = [int(rated * rng.uniform(0.25, 0.45)) for _ in range(rounds)]
        self.flex_share = [{n: rng.uniform(0.4, 1.0) for n, u in units.items() if u["kind"] == "flex"}
                           for _ in range(rounds)]
        self.own_use = [{n: rng.uniform(-0.15, 0.15) for n, u in units.items() if u["kind"] == "storage"}
                        for _ in range(rounds)]
        self.forecast_error = [{n: rng.uniform(-0.2, 0.2) for n in units} for _ in range(rounds)]
        self.seed = seed

    def delivered(self, t: int, name: str, called: int, available: int, reliability: float) -> int:
        rng = random.Random(f"{self.seed}/{t}/{name}")
        can = min(called, available)
        return can if rng.random() < reliability else int(can * rng.random())


class Units:
    """The units' physical state (charge) under one method."""

    def __init__(self, units: dict[str, dict[str, Any]]) -> None:
        self.units = units
        self.soc_kwh = {n: u["energy_kwh"] / 2 for n, u in units.items() if u["kind"] == "storage"}

    def own_use(self, hours: Hours, t: int) -> None:
        for n, share in hours.own_use[t].items():
            e = self.units[n]["energy_kwh"]
            soc = self.soc_kwh[n] + share * e
            if soc < 0.8 * e:
                soc += 0.2 * e
            self.soc_kwh[n] = min(e, max(0.0, soc))

    def available(self, hours: Hours, t: int, name: str) -> int:
        u = self.units[name]
        if u["kind"] == "flex":
            return int(u["power_kw"] * hours.flex_share[t][name])
        return int(min(u["power_kw"], self.soc_kwh[name]))

    def deliver(self, hours: Hours, t: int, calls: dict[str, int]) -> dict[str, int]:
        out = {}
        for n, kw in calls.items():
            got = hours.delivered(t, n, kw, self.available(hours, t, n), self.units[n]["reliability"])
            out[n] = got
            if n in self.soc_kwh:
                self.soc_kwh[n] = max(0.0, self.soc_kwh[n] - got)
        return out


# -- the chain -------------------------------------------------------------------------------------


class Park:
    """A PoC park's App and state, executing blocks of signed transactions (no farmed headers)."""

    def __init__(self, units: dict[str, dict[str, Any]], split: bool, storage: bool) -> None:
        names = [GRID, *units]
        farmers = []
        for n, u in units.items():
            plots = u["power_kw"] // KW_PER_PLOT if u["kind"] == "flex" or not storage else 0
            farmers.append({"name": n, "plots": [{"plot_nonce": _nonce(n, -1 - i), "k": 21} for i in range(plots)]})
        config = {
            "chain_id": CHAIN, "genesis_time_ms": 1_700_000_000_000,
            "app": {"grid_operator": GRID, "round_blocks": ROUND_BLOCKS, "block_reward": 0, "services": ["reserve"],
                    "kw_per_k21_plot": KW_PER_PLOT, "max_unit_share_pct": SHARE_PCT if split else 100,
                    "storage_backing_ms": HOUR_MS},
            "accounts": [{"name": n, "pubkey": _signer(n).pubkey.hex()} for n in names],
            "balances": [{"account": GRID, "denom": "pcc", "amount": 10**12}],
            "farmers": farmers,
        }
        self.app: App = poc_app(CHAIN, config["app"], verifier=lambda *a: b"bench")
        self.state: ChainState = genesis_state(config)
        self.supply = self.state.get_int(b"poc/supply/pcc")
        self.height = 0
        self.nonces: dict[str, int] = {}
        self.signers = {n: _signer(n) for n in names}
        self.txs = 0
        self.refused: list[tuple[str, str, str]] = []
        self.fills = self.erases = 0

    def ctx(self) -> BlockContext:
        return BlockContext(CHAIN, self.height, 1_700_000_000_000 + 1000 * self.height, GRID)

    def begin(self, height: int) -> list[dict[str, Any]]:
        self.height = height
        return self.app.begin_block(self.state, self.ctx())

    def tx(self, sender: str, op: str, **args: Any) -> list[dict[str, Any]]:
        n = self.nonces.get(sender, 0)
        tx = Tx.signed(self.signers[sender], CHAIN, sender, n, op, args)
        self.txs += 1
        try:
            events = self.app.execute_tx(self.state, tx, self.ctx())
        except ProtocolError as exc:  # a refused tx is left out of the block (its nonce is not used)
            self.refused.append((sender, op, exc.code))
            return []
        self.nonces[sender] = n + 1
        return events

    def conserved(self) -> bool:
        total = sum(int(v) for k, v in self.state.prefix_items(b"balances/") if k.decode().endswith("/pcc"))
        return total == self.supply == self.state.get_int(b"poc/supply/pcc")


def _nonce(name: str, i: int) -> str:
    return hashlib.sha256(f"seed000/{name}/{i}".encode()).hexdigest()


def follow_charge(park: Park, name: str, unit: dict[str, Any], counter: list[int]) -> None:
    """A storage unit fills or erases plots so its plots back ``min(power, charge)`` (whole plots)."""
    rec = farmer_record(park.state, name)
    soc_kw = int(rec["storage"]["soc_wh"]) * 3600 // HOUR_MS
    target = min(unit["power_kw"], soc_kw) // KW_PER_PLOT
    plots = sorted(rec["plots"])
    for pid in plots[target:]:
        park.tx(name, "poc.erase", plot_id=pid)
        park.erases += 1
    for _ in range(target - len(plots)):
        counter[0] += 1
        park.tx(name, "poc.fill", plot_nonce=_nonce(name, counter[0]), k=21, challenge_height=0, index=0,
                proof="00" * 168)
        park.fills += 1


def run_market(units: dict[str, dict[str, Any]], hours: Hours, rounds: int, split: bool,
               storage: bool) -> dict[str, Any]:
    park = Park(units, split, storage)
    state = Units(units)
    counters = {n: [0] for n in units}
    rates, called, storage_called, storage_delivered = [], [], 0, 0
    trace: dict[str, list[int]] = {"soc_kw": [], "plots_kw": [], "offered_kw": []}
    first_storage = next(n for n, u in units.items() if u["kind"] == "storage")
    for t in range(rounds):
        state.own_use(hours, t)
        park.begin(ROUND_BLOCKS * t + 1)
        if storage:
            for n, soc in state.soc_kwh.items():  # the operator's meter reading, then the unit follows it
                if t == 0:
                    park.tx(GRID, "market.storage_register", unit=n, energy_wh=units[n]["energy_kwh"] * 1000,
                            soc_wh=int(soc * 1000))
                else:
                    park.tx(GRID, "market.storage_soc", unit=n, soc_wh=int(soc * 1000))
                follow_charge(park, n, units[n], counters[n])
        park.tx(GRID, "market.demand", service="reserve", amount_kw=hours.demand[t], price_cap=PRICE_CAP,
                duration_ms=HOUR_MS)
        offered = {}
        for n, u in units.items():
            rec = farmer_record(park.state, n)
            kw = _offerable(rec)
            if kw:
                park.tx(n, "market.offer", service="reserve", amount_kw=kw, price=u["price"])
                offered[n] = kw
        rec0 = farmer_record(park.state, first_storage)
        trace["soc_kw"].append(int(min(units[first_storage]["power_kw"], state.soc_kwh[first_storage])))
        trace["plots_kw"].append(_plots_kw(rec0))
        trace["offered_kw"].append(offered.get(first_storage, 0))
        events = park.begin(ROUND_BLOCKS * (t + 1))
        (cleared,) = [e for e in events if e["type"] == "market.cleared"]
        calls = dict(cleared["units"])
        got = state.deliver(hours, t, calls)
        for n, kw in sorted(got.items()):
            park.tx(GRID, "market.report", round=t, service="reserve", unit=n, delivered_kw=kw)
        rates.append(min(sum(got.values()), hours.demand[t]) / hours.demand[t])
        called.append(len(calls))
        storage_called += sum(kw for n, kw in calls.items() if n in state.soc_kwh)
        storage_delivered += sum(kw for n, kw in got.items() if n in state.soc_kwh)
    ranking = {n: response_ppm(_PARAMS, farmer_record(park.state, n)) for n in units}
    return {"rates": rates, "called": called, "storage_called_kw": storage_called,
            "storage_delivered_kw": storage_delivered, "txs": park.txs, "refused": park.refused,
            "conserved": park.conserved(), "fills": park.fills, "erases": park.erases, "trace": trace,
            "response_ppm": ranking, "blocks": ROUND_BLOCKS * rounds}


_PARAMS = PocAppParams(grid_operator=GRID, kw_per_k21_plot=KW_PER_PLOT, storage_backing_ms=HOUR_MS)


def _offerable(rec: dict[str, Any]) -> int:
    return max_kw(_PARAMS, rec)


def _plots_kw(rec: dict[str, Any]) -> int:
    return plots_kw(_PARAMS, rec)


# -- the operator's own dispatch ---------------------------------------------------------------------


def _cheapest(units: dict[str, dict[str, Any]], caps: dict[str, int], demand: int) -> dict[str, int]:
    calls: dict[str, int] = {}
    left = demand
    for n in sorted(caps, key=lambda n: (units[n]["price"], n)):
        if left <= 0:
            break
        take = min(caps[n], left)
        if take > 0:
            calls[n] = take
            left -= take
    return calls


def run_dispatch(units: dict[str, dict[str, Any]], hours: Hours, rounds: int, method: str) -> dict[str, Any]:
    state = Units(units)
    expected = {n: expected_kw(u) for n, u in units.items()}
    if method == "long_term_contract":
        rated = sum(u["power_kw"] for u in units.values())
        contracted = _cheapest(units, expected, int(0.45 * rated))
    rates, called, storage_called, storage_delivered = [], [], 0, 0
    for t in range(rounds):
        state.own_use(hours, t)
        if method == "day_ahead":
            caps = {n: max(0, state.available(hours, t, n) + int(hours.forecast_error[t][n] * u["power_kw"]))
                    for n, u in units.items()}
        else:
            caps = contracted
        calls = _cheapest(units, caps, hours.demand[t])
        got = state.deliver(hours, t, calls)
        rates.append(min(sum(got.values()), hours.demand[t]) / hours.demand[t])
        called.append(len(calls))
        storage_called += sum(kw for n, kw in calls.items() if n in state.soc_kwh)
        storage_delivered += sum(kw for n, kw in got.items() if n in state.soc_kwh)
    out = {"rates": rates, "called": called, "storage_called_kw": storage_called,
           "storage_delivered_kw": storage_delivered}
    if method == "long_term_contract":
        out["contracted_units"] = len(contracted)
    return out


def run(rounds: int = ROUNDS, seed: int = SEED) -> dict[str, Any]:
    started = time.monotonic()
    units = population(seed)
    hours = Hours(units, rounds, seed)
    res = {
        "capacity_competition": run_market(units, hours, rounds, split=True, storage=True),
        "plain_blockchain": run_market(units, hours, rounds, split=False, storage=False),
        "day_ahead": run_dispatch(units, hours, rounds, "day_ahead"),
        "long_term_contract": run_dispatch(units, hours, rounds, "long_term_contract"),
    }

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4) if xs else 0.0

    ablation = {"storage_binding_without_split": run_market(units, hours, rounds, split=False, storage=True),
                "split_without_storage_binding": run_market(units, hours, rounds, split=True, storage=False)}
    cc, plain = res["capacity_competition"], res["plain_blockchain"]
    return {
        "rounds": rounds, "seed": seed, "flexible_units": N_FLEX, "storage_units": N_STORAGE,
        "response_rate": {m: mean(res[m]["rates"]) for m in METHODS},
        "units_called_per_hour": {m: mean(res[m]["called"]) for m in METHODS},
        "ablation_response_rate": {k: mean(v["rates"]) for k, v in ablation.items()},
        "ablation_units_called_per_hour": {k: mean(v["called"]) for k, v in ablation.items()},
        "storage_response_rate": {m: round(res[m]["storage_delivered_kw"] / res[m]["storage_called_kw"], 4)
                                  if res[m]["storage_called_kw"] else None for m in METHODS},
        "storage_share_of_calls": {m: round(res[m]["storage_called_kw"] / max(1, sum(hours.demand)), 4)
                                   for m in METHODS},
        "hours_at_least_95pct": {m: sum(1 for r in res[m]["rates"] if r >= 0.95) for m in METHODS},
        "contracted_units": res["long_term_contract"]["contracted_units"],
        "plots_filled": cc["fills"], "plots_erased": cc["erases"],
        "txs_refused": {"capacity_competition": len(cc["refused"]), "plain_blockchain": len(plain["refused"])},
        "conserved": {"capacity_competition": cc["conserved"], "plain_blockchain": plain["conserved"]},
        "txs": cc["txs"] + plain["txs"], "blocks": cc["blocks"] + plain["blocks"],
        "mean_demand_kw": mean([float(d) for d in hours.demand]),
        "rated_kw": sum(u["power_kw"] for u in units.values()),
        "seconds": round(time.monotonic() - started, 1),
        "seed_reported": "direction only: the market calls more units and its response rate beats day-ahead "
                         "prediction, long-term contract and a traditional blockchain market",
        "_series": {"rates": {m: res[m]["rates"] for m in METHODS}, "trace": cc["trace"]},
    }


def plot(out: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    s = out["_series"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    labels = {"capacity_competition": "capacity competition (PoC)", "plain_blockchain": "plain blockchain",
              "day_ahead": "day-ahead prediction", "long_term_contract": "long-term contract"}
    xs = range(len(METHODS))
    bars = ax1.bar(xs, [out["response_rate"][m] for m in METHODS],
                   color=["tab:blue", "tab:orange", "tab:green", "tab:red"])
    for b, m in zip(bars, METHODS, strict=True):
        ax1.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.005,
                 f"{out['response_rate'][m]:.1%}\n{out['units_called_per_hour'][m]:.1f} units", ha="center",
                 fontsize=8)
    ax1.set_xticks(list(xs), [labels[m] for m in METHODS], rotation=15, fontsize=8)
    ax1.set_ylim(0, 1.1)
    ax1.set_ylabel("mean demand response rate")
    ax1.set_title("Response rate and units called per hour")
    window = 20
    for m, colour in zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True):
        series = s["rates"][m]
        ax2.plot(range(1, len(series) + 1), moving_average(series, window), color=colour, label=labels[m])
    ax2.set_xlabel("hour")
    ax2.set_ylabel(f"response rate ({window}-hour moving mean)")
    ax2.set_title("Response rate over the hours")
    ax2.legend(fontsize=8)
    tr = {k: v[:60] for k, v in s["trace"].items()}
    hours = range(1, len(tr["soc_kw"]) + 1)
    ax3.plot(hours, tr["soc_kw"], color="tab:gray", label="capacity its charge sustains (kW)")
    ax3.step(hours, tr["plots_kw"], where="mid", color="tab:blue", label="committed plots (kW)")
    ax3.step(hours, tr["offered_kw"], where="mid", color="tab:purple", linestyle=":", label="offered (kW)")
    ax3.set_xlabel("hour")
    ax3.set_ylabel("kW")
    ax3.set_title("Capacity competition: one storage unit fills and erases plots\nto follow its charge "
                  "(first 60 hours)", fontsize=9)
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _options(parser: Any) -> None:
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"hours (market rounds) per method (default {ROUNDS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")


if __name__ == "__main__":
    sys.exit(main(__doc__, run, plot, _options))
