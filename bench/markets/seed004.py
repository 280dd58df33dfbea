"""The Fabric park's charging-right market, two-stage allocation vs first come first served (docs/research.md#seed-004).

    python bench/markets/seed004.py [--json] [--plot FILE.png] [--rounds 60] [--stations 12]

Every round runs through the real bridge chaincode (:class:`chains.fabric.chaincode.contract.BridgeContract`, its
``market.*`` functions and the transformer registry of :mod:`chains.fabric.chaincode.assets`) in process, over an
in-memory ledger that commits a call's writes only when it succeeds (one endorsing organisation: the bench measures
the market, not endorsement). Stations are certified identities whose certificates carry ``market.role=station``
(Fabric CA's attribute extension, as the devnet enrolls them).

Each round is one charging slot on one transformer. Three ways to hand out the slot's charging power:

* **uncontrolled**: every station charges its whole requirement (nothing is booked; the figure is the load it would
  put on the transformer);
* **first come, first served (FCFS)**: in arrival order, the operator issues each station a right of
  ``min(requirement, capacity left)`` (``issue_right``, admission by the registry);
* **two-stage** (the seed's mechanism): stage 1, the stations submit their requirements, willingness and
  flexibility (``market.request``) and the chaincode water-fills the transformer's margin among them
  (``market.allocate``: max-min fair); stage 2, a double auction (``market.bid``, ``market.clear``) and then P2P
  offers (``market.p2p_offer``, ``market.p2p_accept``) move kW from stations that value the slot less to those
  that value it more.

Figures: the peak load on the transformer (background load plus charging) under each, against the limit (the
capacity), over all rounds; **allocation efficiency**, the value of the allocated kW as a share of the best
possible (the margin given to the highest-valued kW first); the **stations' surplus** (value of the kW each
station charges, minus what it paid, plus what it was paid) in total and for strong- and weak-willingness stations,
per round; Jain's fairness index of the share of requirement served; kW traded in stage 2. Every round checks that
the currency's total is unchanged and the market's escrow is empty after clearing, and that the booked total
never exceeds the capacity.

Behavioural model and parameters (fixed before any figure was looked at; ``SEED`` fixes every draw):

* One transformer of ``CAPACITY_KW`` = 400 kW. Background (non-charging) load over each slot: uniform
  ``BACKGROUND_KW`` = 100..200 kW, booked as a right before the round opens, so the margin is 200..300 kW.
* ``--stations`` = 12 stations, one operator account each. Per round each station draws: a requirement uniform
  ``DEMAND_KW`` = 20..60 kW; a willingness, strong with probability ``P_STRONG`` = 0.5; a value per kW of the slot,
  uniform ``VALUE_STRONG`` = 80..120 (strong) or ``VALUE_WEAK`` = 30..70 (weak) currency units; a load flexibility
  ``f`` uniform 0..1 (share of its load it can move to a later slot). Its value for this slot (what surplus counts)
  is ``e = value x (1 - f / 2)``: flexible load loses less by waiting. FCFS arrival order: a uniform permutation.
* Offers follow willingness and flexibility (:func:`chains.fabric.chaincode.market.offer_price` is the chaincode's
  reference rule; the agents here use the rational variant below so nobody trades at a loss): a station with unmet
  requirement and ``e >= REFERENCE_PRICE`` = 60 bids for all of it at ``e`` (strong) or ``0.9 e`` (weak: in no
  hurry); a station with an allocation and ``e < REFERENCE_PRICE`` asks for all of it at ``1.05 e`` (weak) or
  ``1.2 e`` (strong: reluctant). Prices are rounded to integers. Strong-willingness buyers settle P2P first
  (highest bid first, each taking from the sellers with kW left, lowest ask first, an offer made to it at the
  seller's ask, while bid >= ask); everything left then goes to the double auction, which clears at the midpoint
  of each crossing pair (the chaincode's rule). (P2P comes first because after a clearing no crossing pair is left
  for it: the first smoke run, P2P after the auction, traded 0 kW by construction.)
* ``--rounds`` = 60 rounds; stations are funded so no bid is refused.
"""

from __future__ import annotations

import datetime
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.markets.common import main, pyplot
from chains.common.genesis import bridge_section
from chains.fabric.chaincode import market
from chains.fabric.chaincode.contract import STATUS_OK, BridgeContract
from chains.fabric.chaincode.ledger import StubState
from chains.fabric.consts import OPERATOR_MSP
from chains.fabric.network.crypto import attrs_extension
from protocol.certificate import Validator, ValidatorSet
from protocol.crypto import Ed25519Signer

SEED = 2004
ROUNDS = 60
STATIONS = 12
CAPACITY_KW = 400
BACKGROUND_KW = (100, 200)
DEMAND_KW = (20, 60)
P_STRONG = 0.5
VALUE_STRONG = (80, 120)
VALUE_WEAK = (30, 70)
REFERENCE_PRICE = 60
FUNDS = 10**9
T0 = 1_700_000_000_000
MINUTE = 60_000


class _Ledger:
    """Committed state of the chaincode's namespace; one invocation's stub (TEST/BENCH ONLY)."""

    def __init__(self) -> None:
        self.state: dict[str, bytes] = {}
        self.creator: tuple[str, bytes] = ("", b"")
        self.pending: dict[str, bytes | None] = {}

    def get_channel_id(self) -> str:
        return "park"

    def get_creator(self) -> tuple[str, bytes]:
        return self.creator

    def get_state(self, key: str) -> bytes:
        return self.state.get(key, b"")

    def put_state(self, key: str, value: bytes) -> None:
        self.pending[key] = value

    def del_state(self, key: str) -> None:
        self.pending[key] = None

    def get_state_by_range(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self.state.items() if start <= k < end)[:limit]

    def set_event(self, name: str, payload: bytes) -> None:
        pass

    def get_transient(self) -> dict[str, bytes]:
        return {}

    def put_private_data(self, collection: str, key: str, value: bytes) -> None:
        raise AssertionError("the charging-right market writes no private data")

    def get_private_data(self, collection: str, key: str) -> bytes:
        return b""

    def get_private_data_hash(self, collection: str, key: str) -> bytes:
        return b""


def _identity(msp: str, cn: str, role: str | None) -> tuple[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if role is not None:
        builder = builder.add_extension(attrs_extension({"market.role": role}), critical=False)
    return msp, builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass
class Park:
    """The chaincode over a :class:`_Ledger`, a clock, the operator and the stations."""

    stations: int
    ledger: _Ledger = field(default_factory=_Ledger)
    contract: BridgeContract = field(default_factory=BridgeContract)
    now_ms: int = T0
    calls: int = 0

    def __post_init__(self) -> None:
        self.operator = _identity(OPERATOR_MSP, "operator", None)
        self.who = [_identity(OPERATOR_MSP, f"st{i:02d}", "station") for i in range(self.stations)]
        self.names = [f"s{i:02d}" for i in range(self.stations)]
        vset = ValidatorSet((Validator("v0", Ed25519Signer(bytes(32)).pubkey, bytes(20), 1),))
        section = bridge_section("relay", vset, [{"lane": "lane-0", "counterparty": "other-park"}],
                                 native_denoms=("kWh", "CNY"), rights_operator="OperatorMSP:operator",
                                 transformers={"t1": CAPACITY_KW},
                                 stations={**{n: "t1" for n in self.names}, "bg": "t1"})
        accounts = ["OperatorMSP:operator", *(self.account(i) for i in range(self.stations))]
        genesis = {"chain_id": "fabric-park", "accounts": accounts, "bridge": section, "market": {"currency": "CNY"},
                   "balances": [{"account": a, "denom": "CNY", "amount": FUNDS} for a in accounts]}
        self.issued = FUNDS * len(accounts)
        self.call(self.operator, "init_bridge", genesis)
        for i, name in enumerate(self.names):
            self.call(self.operator, "market.certify", {"account": self.account(i), "role": "station",
                                                        "stations": [name]})

    def account(self, i: int) -> str:
        return f"OperatorMSP:st{i:02d}"

    def call(self, who: tuple[str, bytes], fn: str, args: Any, *, ok: bool = True) -> Any:
        self.ledger.creator, self.ledger.pending = who, {}
        self.calls += 1
        r = self.contract.invoke(self.ledger, [fn.encode(), json.dumps(args).encode()], self.now_ms)
        if ok and r.status != STATUS_OK:
            raise RuntimeError(f"{fn}: {r.message}")
        if r.status == STATUS_OK:
            for k, v in self.ledger.pending.items():
                if v is None:
                    self.ledger.state.pop(k, None)
                else:
                    self.ledger.state[k] = v
        return json.loads(r.payload) if r.status == STATUS_OK else r.code

    def view(self) -> StubState:
        return StubState(self.ledger)

    def booked_kw(self, start: int, end: int) -> int:
        raw = self.ledger.state.get("bookings/t1")
        return sum(int(b["power_kw"]) for b in json.loads(raw or b"[]")
                   if int(b["slot_start_ms"]) < end and start < int(b["slot_end_ms"]))

    def held_kw(self, right_id: str) -> int:
        raw = self.ledger.state.get(f"rights/{right_id}")
        return int(json.loads(raw)["power_kw"]) if raw else 0

    def check_money(self) -> None:
        state = self.view()
        total = sum(int(v) for k, v in state.prefix_items(b"balances/") if k.decode().endswith("/CNY"))
        assert total == self.issued, (total, self.issued)
        assert state.balance(market.ESCROW_ACCOUNT, "CNY") == market.market_escrow_total(state) == 0


@dataclass(frozen=True)
class Station:
    demand: int
    strong: bool
    value: int
    flex: float

    @property
    def e(self) -> float:
        return self.value * (1 - self.flex / 2)


def _draw(rng: random.Random, n: int) -> tuple[int, list[Station], list[int]]:
    background = rng.randint(*BACKGROUND_KW)
    out = []
    for _ in range(n):
        demand = rng.randint(*DEMAND_KW)
        strong = rng.random() < P_STRONG
        value = rng.randint(*(VALUE_STRONG if strong else VALUE_WEAK))
        out.append(Station(demand, strong, value, rng.random()))
    order = list(range(n))
    rng.shuffle(order)
    return background, out, order


def _best_value(margin: int, stations: list[Station]) -> float:
    left, total = margin, 0.0
    for s in sorted(stations, key=lambda s: -s.e):
        take = min(s.demand, left)
        total += take * s.e
        left -= take
    return total


def _jain(shares: list[float]) -> float:
    return sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares)) if any(shares) else 1.0


def _round_times(park: Park) -> dict[str, int]:
    now = park.now_ms
    return {"requests_close_ms": now + MINUTE, "bids_close_ms": now + 2 * MINUTE, "slot_start_ms": now + 3 * MINUTE,
            "slot_end_ms": now + 63 * MINUTE}


def _background(park: Park, rid: str, kw: int, times: dict[str, int]) -> None:
    park.call(park.operator, "issue_right", {"right_id": f"{rid}.bg", "station": "bg", "transformer": "t1",
                                             "power_kw": kw, "slot_start_ms": times["slot_start_ms"],
                                             "slot_end_ms": times["slot_end_ms"], "owner": "OperatorMSP:operator"})


def _fcfs(park: Park, rid: str, background: int, stations: list[Station], order: list[int]) -> list[int]:
    times = _round_times(park)
    _background(park, rid, background, times)
    got = [0] * len(stations)
    for i in order:
        left = CAPACITY_KW - park.booked_kw(times["slot_start_ms"], times["slot_end_ms"])
        kw = min(stations[i].demand, left)
        if kw > 0:
            park.call(park.operator, "issue_right", {
                "right_id": f"{rid}.{park.names[i]}", "station": park.names[i], "transformer": "t1", "power_kw": kw,
                "slot_start_ms": times["slot_start_ms"], "slot_end_ms": times["slot_end_ms"],
                "owner": park.account(i)})
            got[i] = kw
    assert park.booked_kw(times["slot_start_ms"], times["slot_end_ms"]) <= CAPACITY_KW
    park.now_ms = times["slot_end_ms"]  # the slot passes; its bookings end
    return got


def _two_stage(park: Park, rid: str, background: int, stations: list[Station]
               ) -> tuple[list[int], list[int], list[int], int, int]:
    """Returns (stage-1 kW, final kW, net money received per station, kW traded in the auction, kW traded P2P)."""
    times = _round_times(park)
    _background(park, rid, background, times)
    park.call(park.operator, "market.open_round", {"round_id": rid, "transformer": "t1", **times})
    for i, s in enumerate(stations):
        park.call(park.who[i], "market.request", {"round_id": rid, "station": park.names[i], "power_kw": s.demand,
                                                  "willingness": "strong" if s.strong else "weak",
                                                  "flexibility_bp": int(s.flex * 10_000)})
    park.now_ms = times["requests_close_ms"]
    park.call(park.operator, "market.allocate", {"round_id": rid})
    stage1 = [park.held_kw(f"{rid}.{n}") for n in park.names]
    money0 = [park.view().balance(park.account(i), "CNY") for i in range(len(stations))]
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for i, s in enumerate(stations):
        if s.demand > stage1[i] and s.e >= REFERENCE_PRICE:
            bids[i] = round(s.e if s.strong else 0.9 * s.e)
        elif stage1[i] > 0 and s.e < REFERENCE_PRICE:
            asks[i] = round(1.2 * s.e if s.strong else 1.05 * s.e)
    # P2P first, for strong-willingness buyers (they settle bilaterally rather than wait for the auction)
    p2p_kw = 0
    for b in sorted((i for i in bids if stations[i].strong), key=lambda i: (-bids[i], i)):
        for a in sorted(asks, key=lambda i: (asks[i], i)):
            short = stations[b].demand - park.held_kw(f"{rid}.{park.names[b]}")
            have = park.held_kw(f"{rid}.{park.names[a]}")
            if short <= 0 or bids[b] < asks[a] or have <= 0:
                continue
            kw = min(short, have)
            oid = f"o{b}-{a}"
            park.call(park.who[a], "market.p2p_offer", {"round_id": rid, "station": park.names[a], "offer_id": oid,
                                                        "to": park.account(b), "power_kw": kw, "price": asks[a]})
            park.call(park.who[b], "market.p2p_accept", {"round_id": rid, "offer_id": oid, "station": park.names[b]})
            p2p_kw += kw
    # then the double auction for what is left
    for i in sorted(bids):
        unmet = stations[i].demand - park.held_kw(f"{rid}.{park.names[i]}")
        if unmet > 0:
            park.call(park.who[i], "market.bid", {"round_id": rid, "station": park.names[i], "side": "buy",
                                                  "power_kw": unmet, "price": bids[i]})
    for i in sorted(asks):
        have = park.held_kw(f"{rid}.{park.names[i]}")
        if have > 0:
            park.call(park.who[i], "market.bid", {"round_id": rid, "station": park.names[i], "side": "sell",
                                                  "power_kw": have, "price": asks[i]})
    park.now_ms = times["bids_close_ms"]
    cleared = park.call(park.operator, "market.clear", {"round_id": rid})[0]
    auction_kw = sum(t["power_kw"] for t in cleared["trades"])
    final = [park.held_kw(f"{rid}.{n}") for n in park.names]
    money = [park.view().balance(park.account(i), "CNY") - money0[i] for i in range(len(stations))]
    assert park.booked_kw(times["slot_start_ms"], times["slot_end_ms"]) <= CAPACITY_KW
    park.check_money()
    park.now_ms = times["slot_end_ms"]
    return stage1, final, money, auction_kw, p2p_kw


def run(rounds: int = ROUNDS, stations: int = STATIONS) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(SEED)
    fcfs_park, market_park = Park(stations), Park(stations)
    series: dict[str, list[float]] = {k: [] for k in (
        "limit", "uncontrolled", "fcfs", "two_stage", "eff_fcfs", "eff_stage1", "eff_two_stage",
        "surplus_fcfs", "surplus_two_stage")}
    split: dict[str, list[float]] = {k: [] for k in ("fcfs_strong", "fcfs_weak", "two_stage_strong",
                                                     "two_stage_weak")}
    jain: dict[str, list[float]] = {"fcfs": [], "stage1": [], "two_stage": []}
    traded = {"auction": 0, "p2p": 0}
    refused_uncertified = market_park.call(_identity(OPERATOR_MSP, "stranger", "station"), "market.request",
                                           {"round_id": "nope", "station": "s00", "power_kw": 1,
                                            "willingness": "weak", "flexibility_bp": 0}, ok=False)
    for r in range(rounds):
        background, st, order = _draw(rng, stations)
        rid = f"r{r}"
        margin = CAPACITY_KW - background
        got_f = _fcfs(fcfs_park, rid, background, st, order)
        stage1, final, money, a_kw, p_kw = _two_stage(market_park, rid, background, st)
        traded["auction"] += a_kw
        traded["p2p"] += p_kw
        best = _best_value(margin, st)
        value = {"fcfs": [got_f[i] * s.e for i, s in enumerate(st)],
                 "stage1": [stage1[i] * s.e for i, s in enumerate(st)],
                 "two_stage": [final[i] * s.e + money[i] for i, s in enumerate(st)]}
        series["limit"].append(CAPACITY_KW)
        series["uncontrolled"].append(background + sum(s.demand for s in st))
        series["fcfs"].append(background + sum(got_f))
        series["two_stage"].append(background + sum(final))
        series["eff_fcfs"].append(sum(value["fcfs"]) / best)
        series["eff_stage1"].append(sum(value["stage1"]) / best)
        series["eff_two_stage"].append(sum(final[i] * s.e for i, s in enumerate(st)) / best)
        series["surplus_fcfs"].append(sum(value["fcfs"]))
        series["surplus_two_stage"].append(sum(value["two_stage"]))
        for name, vals in (("fcfs", value["fcfs"]), ("two_stage", value["two_stage"])):
            strong = [v for v, s in zip(vals, st, strict=True) if s.strong]
            weak = [v for v, s in zip(vals, st, strict=True) if not s.strong]
            split[f"{name}_strong"].append(statistics.fmean(strong) if strong else 0.0)
            split[f"{name}_weak"].append(statistics.fmean(weak) if weak else 0.0)
        jain["fcfs"].append(_jain([got_f[i] / s.demand for i, s in enumerate(st)]))
        jain["stage1"].append(_jain([stage1[i] / s.demand for i, s in enumerate(st)]))
        jain["two_stage"].append(_jain([final[i] / s.demand for i, s in enumerate(st)]))

    def mean(xs: list[float]) -> float:
        return round(statistics.fmean(xs), 4)

    return {
        "rounds": rounds, "stations": stations, "capacity_kw": CAPACITY_KW, "seed": SEED,
        "peak_kw_uncontrolled": max(series["uncontrolled"]), "peak_kw_fcfs": max(series["fcfs"]),
        "peak_kw_two_stage": max(series["two_stage"]),
        "rounds_over_limit_uncontrolled": sum(u > CAPACITY_KW for u in series["uncontrolled"]),
        "rounds_over_limit_two_stage": sum(u > CAPACITY_KW for u in series["two_stage"]),
        "efficiency_fcfs": mean(series["eff_fcfs"]), "efficiency_stage1": mean(series["eff_stage1"]),
        "efficiency_two_stage": mean(series["eff_two_stage"]),
        "surplus_per_round_fcfs": round(statistics.fmean(series["surplus_fcfs"]), 1),
        "surplus_per_round_two_stage": round(statistics.fmean(series["surplus_two_stage"]), 1),
        "surplus_per_station_strong": {"fcfs": round(statistics.fmean(split["fcfs_strong"]), 1),
                                       "two_stage": round(statistics.fmean(split["two_stage_strong"]), 1)},
        "surplus_per_station_weak": {"fcfs": round(statistics.fmean(split["fcfs_weak"]), 1),
                                     "two_stage": round(statistics.fmean(split["two_stage_weak"]), 1)},
        "jain_fairness": {k: mean(v) for k, v in jain.items()},
        "traded_kw": traded,
        "uncertified_request": refused_uncertified,
        "chaincode_calls": fcfs_park.calls + market_park.calls,
        "conserved": True,
        "seconds": round(time.monotonic() - started, 2),
        "_series": series,
    }


def plot(out: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    s = out["_series"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    x = range(1, len(s["limit"]) + 1)
    ax1.axhline(out["capacity_kw"], color="tab:red", lw=4, alpha=0.35, label="transformer limit")
    ax1.plot(x, s["uncontrolled"], color="0.6", lw=1, label="uncontrolled charging")
    ax1.plot(x, s["fcfs"], color="tab:orange", lw=0, marker="o", ms=5, mfc="none",
             label="first come, first served")
    ax1.plot(x, s["two_stage"], color="tab:blue", lw=0, marker="x", ms=4, label="two-stage (allocation + trading)")
    ax1.set_xlabel("round (one charging slot)")
    ax1.set_ylabel("peak load on the transformer (kW)")
    ax1.set_title("Peak charging load vs the transformer limit")
    ax1.legend(fontsize=8, loc="upper right")
    names = [("fcfs", "FCFS", "tab:orange"), ("stage1", "stage 1 only", "tab:green"),
             ("two_stage", "two-stage", "tab:blue")]
    eff = {"fcfs": out["efficiency_fcfs"], "stage1": out["efficiency_stage1"], "two_stage": out["efficiency_two_stage"]}
    width = 0.25
    for k, (key, label, color) in enumerate(names):
        vals = [eff[key], out["jain_fairness"][key]]
        ax2.bar([p + (k - 1) * width for p in range(2)], vals, width, label=label, color=color)
    labels = ["allocation efficiency", "Jain fairness (share served)"]
    ax2.set_xticks(range(2), labels)
    ax2.set_ylim(0, 1.05)
    ax2.set_title(f"Means over {out['rounds']} rounds, {out['stations']} stations")
    ax2.legend(fontsize=8, loc="lower right")
    groups = [("surplus_per_station_strong", "strong willingness"), ("surplus_per_station_weak", "weak willingness")]
    for k, (key, label, color) in enumerate([("fcfs", "FCFS", "tab:orange"), ("two_stage", "two-stage", "tab:blue")]):
        ax3.bar([p + (k - 0.5) * 0.35 for p in range(2)], [out[g][key] for g, _ in groups], 0.35, label=label,
                color=color)
    ax3.set_xticks(range(2), [label for _, label in groups])
    ax3.set_ylabel("mean surplus per station and round (currency units)")
    ax3.set_title("Stations' surplus (value charged - paid + received)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _options(parser: Any) -> None:
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="charging slots (default %(default)s)")
    parser.add_argument("--stations", type=int, default=STATIONS, help="stations (default %(default)s)")


if __name__ == "__main__":
    raise SystemExit(main(__doc__, run, plot, _options))
