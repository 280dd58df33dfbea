"""Energy storage answers capacity demand by filling and erasing plots (docs/research.md#seed-000): a storage unit's
plots may back no more than its state of charge sustains, it fills plots as it charges, it must erase them as it
discharges before it offers again, clearing never awards it more than its charge backs, and its deliveries
discharge it. Refusals leave the state unchanged; every denomination is conserved."""

from __future__ import annotations

from typing import Any

import pytest

from chains.poc.app import apply_farmed_block, genesis_state, params_from_genesis, poc_app
from chains.poc.market import (
    PocAppParams,
    farmer_record,
    max_kw,
    over_committed,
    plots_kw,
    storage_kw,
)
from chains.poc.plots import Farmer
from chains.poc.testing import FarmedChain
from protocol.errors import ProtocolError

from .support import CHAIN, GRID, Runner, balances, genesis_config, nonce
from .support import assert_conserved as assert_pcc_conserved

FR = "frequency_regulation"
HOUR = 3_600_000


def assert_conserved(state: Any) -> None:
    """Every denomination on the park (``pcc`` only: settlement and block rewards) adds up to its issued supply,
    escrow included."""
    denoms = {key.decode().split("/", 2)[2] for key, _ in state.prefix_items(b"balances/")}
    assert denoms == {"pcc"}, denoms
    assert_pcc_conserved(state)


def accept_all(*_: Any) -> bytes:
    """Proof verification is tested with real chiapos proofs in test_app and below; here fills only need to pass."""
    return b"quality"


def runner(**app: Any) -> Runner:
    # u1: one k21 plot (100 kW); u3 storage candidate with one plot
    config = genesis_config(app=app)
    return Runner(poc_app(CHAIN, config["app"], verifier=accept_all), genesis_state(config))


def params(**app: Any) -> PocAppParams:
    return PocAppParams.from_json(genesis_config(app=app)["app"])


def fill(r: Runner, unit: str, i: int) -> list[dict[str, Any]]:
    return r.tx(unit, "poc.fill", plot_nonce=nonce(f"{unit}-fill", i), k=21, challenge_height=0, index=0,
                proof="00" * 168)


def test_storage_charge_bounds_what_it_may_offer_and_fill() -> None:
    """u3 (one plot, 100 kW) commissioned with 150 kWh of 400: charge backs 150 kW for an hour. It offers 100 (its
    plots); a second plot would take it to 200 kW > 150: refused; charged to 250 kWh it fills the second plot and
    offers 200."""
    r = runner()
    p = params()
    r.begin(1)
    (ev,) = r.tx(GRID, "market.storage_register", unit="u3", energy_wh=400_000, soc_wh=150_000)
    assert (ev["charge_kw"], ev["plots_kw"], ev["over_committed"]) == (150, 100, False)
    assert max_kw(p, farmer_record(r.state, "u3")) == 100
    r.tx("u3", "market.offer", service=FR, amount_kw=100, price=5)
    root = r.state.root
    with pytest.raises(ProtocolError, match="does not back another plot"):
        fill(r, "u3", 0)
    assert r.state.root == root
    r.tx(GRID, "market.storage_soc", unit="u3", soc_wh=250_000)
    (ev,) = fill(r, "u3", 0)
    assert ev["max_kw"] == 200
    r.tx("u3", "market.offer", service=FR, amount_kw=200, price=5)
    with pytest.raises(ProtocolError, match="exceed its committed capacity"):
        r.tx("u3", "market.offer", service="reserve", amount_kw=1, price=5)
    assert_conserved(r.state)


def test_discharged_storage_must_erase_before_it_offers_again() -> None:
    """u3 storage with two plots (200 kW) and 200 kWh: awarded 200 kW for an hour, it delivers 150 kW: discharged
    by 150 kWh to 50 kWh, which backs 50 kW: over-committed. Its offers are refused until it erases both plots
    down... one erase leaves 100 kW > 50: still refused; the clearing of an earlier offer is capped at 50 kW."""
    r = runner(max_unit_share_pct=100)
    p = params()
    before = balances(r.state)
    r.begin(1)
    r.tx(GRID, "market.storage_register", unit="u3", energy_wh=400_000, soc_wh=200_000)
    (ev,) = fill(r, "u3", 0)
    pid = ev["plot_id"]
    r.tx(GRID, "market.demand", service=FR, amount_kw=200, price_cap=10, duration_ms=HOUR)
    r.tx("u3", "market.offer", service=FR, amount_kw=200, price=4)
    (cleared,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
    assert cleared["units"] == {"u3": 200}
    (settled,) = r.tx(GRID, "market.report", round=0, service=FR, unit="u3", delivered_kw=150)
    assert (settled["soc_wh"], settled["over_committed"], settled["paid"]) == (50_000, True, 600)
    rec = farmer_record(r.state, "u3")
    assert (storage_kw(p, rec), plots_kw(p, rec), max_kw(p, rec)) == (50, 200, 50)
    root = r.state.root
    with pytest.raises(ProtocolError, match="over-committed"):
        r.tx("u3", "market.offer", service=FR, amount_kw=10, price=4)
    assert r.state.root == root
    (ev,) = r.tx("u3", "poc.erase", plot_id=pid)
    assert ev["over_committed"] is True  # 100 kW of plots, 50 kW of charge
    with pytest.raises(ProtocolError, match="over-committed"):
        r.tx("u3", "market.offer", service=FR, amount_kw=10, price=4)
    genesis_pid = next(iter(farmer_record(r.state, "u3")["plots"]))
    (ev,) = r.tx("u3", "poc.erase", plot_id=genesis_pid)
    assert (ev["over_committed"], ev["max_kw"]) == (False, 0)
    # charged again: fills to follow its charge and offers
    r.tx(GRID, "market.storage_soc", unit="u3", soc_wh=120_000)
    fill(r, "u3", 1)
    with pytest.raises(ProtocolError, match="does not back another plot"):
        fill(r, "u3", 2)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=HOUR)
    r.tx("u3", "market.offer", service=FR, amount_kw=100, price=4)
    # before the round clears, the meter reads 30 kWh: the award is capped at what the charge backs
    r.tx(GRID, "market.storage_soc", unit="u3", soc_wh=30_000)
    (cleared,) = [e for e in r.begin(20) if e["type"] == "market.cleared"]
    assert (cleared["units"], cleared["awarded_kw"], cleared["refund"]) == ({"u3": 30}, 30, 1000 - 30 * 4)
    assert_conserved(r.state)
    r.begin(30)
    auto = [e for e in r.begin(40) if e["type"] == "market.settled"]  # unreported: settles as delivered
    assert [(e["unit"], e["delivered_kw"], e["soc_wh"]) for e in auto] == [("u3", 30, 0)]
    after = balances(r.state)
    assert after["u3"] == before["u3"] + 600 + 120
    assert sum(after.values()) == sum(before.values())
    assert_conserved(r.state)


def test_a_split_demand_calls_storage_and_other_units_within_their_backing() -> None:
    """Demand 300 kW, 50 % split: u2 (200 kW of plots) and storage u3 (100 kW of plots, 80 kWh: 80 kW) each
    offer all they can; u3 gets its 80, u2 150 in the first pass and 50 more in the second (its 200)."""
    r = runner()
    r.begin(1)
    r.tx(GRID, "market.storage_register", unit="u3", energy_wh=100_000, soc_wh=100_000)
    r.tx(GRID, "market.demand", service=FR, amount_kw=300, price_cap=10, duration_ms=HOUR)
    r.tx("u3", "market.offer", service=FR, amount_kw=100, price=3)
    r.tx("u2", "market.offer", service=FR, amount_kw=200, price=5)
    r.tx(GRID, "market.storage_soc", unit="u3", soc_wh=80_000)  # own use since it offered
    (cleared,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
    assert (cleared["units"], cleared["price"]) == ({"u2": 200, "u3": 80}, 5)
    assert cleared["refund"] == 3000 - 280 * 5
    assert_conserved(r.state)


def _reject_table() -> list[tuple[str, str, str, dict[str, Any], str]]:
    return [
        ("storage commissioned by a unit", "u3", "market.storage_register",
         {"unit": "u3", "energy_wh": 1000, "soc_wh": 0}, "auth.denied"),
        ("storage of an unknown account", GRID, "market.storage_register",
         {"unit": "nobody", "energy_wh": 1000, "soc_wh": 0}, "auth.denied"),
        ("storage commissioned twice", GRID, "market.storage_register",
         {"unit": "u4", "energy_wh": 1000, "soc_wh": 0}, "protocol"),
        ("charge above energy at commissioning", GRID, "market.storage_register",
         {"unit": "u1", "energy_wh": 1000, "soc_wh": 1001}, "protocol"),
        ("zero energy", GRID, "market.storage_register", {"unit": "u1", "energy_wh": 0, "soc_wh": 0},
         "codec.invalid"),
        ("charge reported by a unit", "u4", "market.storage_soc", {"unit": "u4", "soc_wh": 10}, "auth.denied"),
        ("charge of a unit that is not storage", GRID, "market.storage_soc", {"unit": "u1", "soc_wh": 10},
         "protocol"),
        ("charge above energy", GRID, "market.storage_soc", {"unit": "u4", "soc_wh": 500_001}, "protocol"),
        ("negative charge", GRID, "market.storage_soc", {"unit": "u4", "soc_wh": -1}, "codec.invalid"),
        ("fill beyond charge", "u4", "poc.fill",
         {"plot_nonce": "22" * 32, "k": 21, "challenge_height": 0, "index": 0, "proof": "00" * 168}, "protocol"),
        ("offer while over-committed", "u4", "market.offer", {"service": FR, "amount_kw": 1, "price": 1},
         "protocol"),
    ]


@pytest.mark.parametrize(("name", "sender", "op", "args", "code"), _reject_table(), ids=[c[0] for c in _reject_table()])
def test_storage_refusals_leave_state_unchanged(name: str, sender: str, op: str, args: dict[str, Any],
                                                code: str) -> None:
    r = runner()
    r.begin(1)
    # u4: one plot (100 kW), 500 kWh storage at 90 kWh: 90 kW of charge, over-committed
    r.tx(GRID, "market.storage_register", unit="u4", energy_wh=500_000, soc_wh=90_000)
    assert over_committed(params(), farmer_record(r.state, "u4"))
    root = r.state.root
    with pytest.raises(ProtocolError) as exc:
        r.tx(sender, op, **args)
    assert exc.value.code == code, exc.value
    assert r.state.root == root, name
    assert_conserved(r.state)


def test_real_fill_proof_is_refused_until_charge_backs_it(farmers: list[Farmer]) -> None:
    """farmer-b as storage with a real chiapos fill proof: refused at 50 kWh, committed at 100 kWh."""
    config = genesis_config()
    consensus, app_params = params_from_genesis(config)
    r = Runner(poc_app(CHAIN, app_params), genesis_state(config))
    farmer_b = next(f for f in farmers if f.name == "farmer-b")
    pid = farmer_b.plots[0].plot_id
    found = farmer_b.fill_proof(pid, consensus.genesis_challenge)
    assert found is not None
    index, proof = found
    args = {"plot_nonce": farmer_b.plots[0].plot_nonce.hex(), "k": 21, "challenge_height": 0, "index": index,
            "proof": proof.hex()}
    r.begin(1)
    r.tx(GRID, "market.storage_register", unit="farmer-b", energy_wh=200_000, soc_wh=50_000)
    root = r.state.root
    with pytest.raises(ProtocolError, match="does not back another plot"):
        r.tx("farmer-b", "poc.fill", **args)
    assert r.state.root == root
    r.tx(GRID, "market.storage_soc", unit="farmer-b", soc_wh=100_000)
    (ev,) = r.tx("farmer-b", "poc.fill", **args)
    assert ev["max_kw"] == 100


def test_a_farmed_block_commits_no_plot_the_charge_does_not_back(chain: FarmedChain) -> None:
    """farmer-b farms a block with its plot; as storage without charge the block counts (reward) but the plot
    stays uncommitted; as a plain unit the same block commits it."""
    header = next(h for h in chain.headers if h.farmer == "farmer-b")
    for soc, committed in ((0, False), (100_000, True)):
        config = genesis_config()
        _, app_params = params_from_genesis(config)
        state = genesis_state(config)
        r = Runner(poc_app(CHAIN, app_params, verifier=accept_all), state)
        r.begin(1)
        r.tx(GRID, "market.storage_register", unit="farmer-b", energy_wh=100_000, soc_wh=soc)
        (ev,) = apply_farmed_block(state, header, app_params)
        assert ev["plot_committed"] is committed and ev["reward"] == 10
        assert bool(farmer_record(state, "farmer-b")["plots"]) is committed
        assert_conserved(state)


def test_a_longer_service_calls_storage_for_what_its_charge_sustains() -> None:
    """u3 storage, one plot (100 kW), 100 kWh: a one-hour demand may take 100 kW of it, a two-hour one 50 kW."""
    for duration, award in ((HOUR, 100), (2 * HOUR, 50)):
        r = runner(max_unit_share_pct=100)
        r.begin(1)
        r.tx(GRID, "market.storage_register", unit="u3", energy_wh=100_000, soc_wh=100_000)
        r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=duration)
        r.tx("u3", "market.offer", service=FR, amount_kw=100, price=3)
        (cleared,) = [e for e in r.begin(10) if e["type"] == "market.cleared"]
        assert cleared["units"] == {"u3": award}, duration
        (settled,) = r.tx(GRID, "market.report", round=0, service=FR, unit="u3", delivered_kw=award)
        assert settled["soc_wh"] == 100_000 - award * duration // 3600  # held for the whole duration: empty
        assert settled["soc_wh"] == 0
        assert_conserved(r.state)


def test_a_service_with_a_response_floor_calls_only_units_that_reach_it() -> None:
    """u2 delivered 40 % of its first award; a demand asking for a response rate of 50 % passes it over for u1
    (default 90 %) although u2 is cheaper; a demand without a floor takes u2 first."""
    r = runner(max_unit_share_pct=100)
    r.begin(1)
    r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=HOUR)
    r.tx("u2", "market.offer", service=FR, amount_kw=100, price=5)
    r.begin(10)
    r.tx(GRID, "market.report", round=0, service=FR, unit="u2", delivered_kw=40)
    (ev,) = r.tx(GRID, "market.demand", service=FR, amount_kw=100, price_cap=10, duration_ms=HOUR,
                 min_response_ppm=500_000)
    assert ev["min_response_ppm"] == 500_000
    r.tx(GRID, "market.demand", service="reserve", amount_kw=100, price_cap=10, duration_ms=HOUR)
    for service in (FR, "reserve"):
        r.tx("u2", "market.offer", service=service, amount_kw=100, price=2)
        r.tx("u1", "market.offer", service=service, amount_kw=50, price=6)
    cleared = {e["service"]: e for e in r.begin(20) if e["type"] == "market.cleared"}
    assert (cleared[FR]["units"], cleared[FR]["price"]) == ({"u1": 50}, 6)
    assert (cleared["reserve"]["units"], cleared["reserve"]["price"]) == ({"u2": 100}, 2)
    assert_conserved(r.state)


@pytest.mark.parametrize("floor", [1_000_001, -1, True, "900000"])
def test_a_response_floor_out_of_range_is_refused(floor: object) -> None:
    r = runner()
    r.begin(1)
    root = r.state.root
    with pytest.raises(ProtocolError) as exc:
        r.tx(GRID, "market.demand", service=FR, amount_kw=10, price_cap=1, duration_ms=HOUR, min_response_ppm=floor)
    assert exc.value.code == "codec.invalid"
    assert r.state.root == root
