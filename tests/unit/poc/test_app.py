"""PoC app: genesis, per-block consensus bookkeeping, replay determinism, fill with a real proof of space."""

from __future__ import annotations

import pytest

from chains.common.state import ChainState
from chains.common.tx import Tx
from chains.poc.app import apply_farmed_block, block_context, genesis_block, genesis_state, params_from_genesis, poc_app
from chains.poc.consensus import plot_id
from chains.poc.market import CHAIN_KEY, PocAppParams, farmer_record, max_kw
from chains.poc.plots import Farmer
from chains.poc.testing import FarmedChain, farmer_plot_nonce
from chains.poc.types import PocHeader
from protocol.errors import AuthorizationError, CodecError, ProtocolError

from .support import CHAIN, GRID, Runner, assert_conserved, balances, genesis_config, signer


def test_genesis_state_and_params() -> None:
    config = genesis_config()
    state = genesis_state(config)
    params, app_params = params_from_genesis(config)
    assert params.chain_id == CHAIN and params.initial_difficulty == 2000
    assert app_params.grid_operator == GRID
    assert balances(state)[GRID] == 100_000
    assert farmer_record(state, "u2")["committed_bytes"] == 2 * 43 * 2**20
    a_pid = plot_id(signer("farmer-a").pubkey, farmer_plot_nonce("farmer-a"))
    assert a_pid.hex() in farmer_record(state, "farmer-a")["plots"]
    assert state.get_json(CHAIN_KEY)["challenges"] == [[0, params.genesis_challenge.hex()]]
    assert_conserved(state)
    # one root for one config
    assert genesis_state(genesis_config()).root == state.root
    _, header, ctx = genesis_block(config)
    assert header.state_root == state.root and ctx.header_hash == header.hash() and ctx.height == 0


@pytest.mark.parametrize("broken", [
    lambda c: c["app"].pop("grid_operator"),
    lambda c: c["accounts"].pop(0),  # the grid operator's account
    lambda c: c["balances"].append({"account": "nobody", "denom": "pcc", "amount": 1}),
    lambda c: c["balances"].append({"account": GRID, "denom": "pcc", "amount": -1}),
    lambda c: c["farmers"].append({"name": "u1", "plots": [{"plot_nonce": "00" * 32, "k": 20}]}),
    lambda c: c["farmers"].append(dict(c["farmers"][0])),  # the same plots twice
    lambda c: c["app"].update(bogus=1),
])
def test_genesis_rejects_bad_configs(broken: object) -> None:
    config = genesis_config()
    broken(config)  # type: ignore[operator]
    with pytest.raises((CodecError, ProtocolError)):
        genesis_state(config)


def _replay(chain: FarmedChain, n: int) -> ChainState:
    """What a restarted node does: genesis, then every stored block's bookkeeping and hooks."""
    config = genesis_config()
    _, app_params = params_from_genesis(config)
    state = genesis_state(config)
    app = poc_app(CHAIN, app_params)
    for header in chain.headers[:n]:
        apply_farmed_block(state, header, app_params)
        app.begin_block(state, block_context(header))
    return state


def test_farmed_blocks_pay_rewards_and_commit_plots(chain: FarmedChain) -> None:
    state = _replay(chain, 30)
    by_farmer = {"farmer-a": 0, "farmer-b": 0}
    for h in chain.headers[:30]:
        by_farmer[h.farmer] += 1
    assert all(by_farmer.values()), by_farmer  # both farmers won blocks
    before = balances(genesis_state(genesis_config()))
    for name, n in by_farmer.items():
        rec = farmer_record(state, name)
        assert rec["blocks_farmed"] == n
        assert balances(state)[name] == before[name] + 10 * n
    # farmer-b's plot was not committed at genesis: farming with it committed it
    b_pid = plot_id(signer("farmer-b").pubkey, farmer_plot_nonce("farmer-b"))
    assert b_pid.hex() in farmer_record(state, "farmer-b")["plots"]
    assert max_kw(PocAppParams(grid_operator=GRID), farmer_record(state, "farmer-b")) == 100
    assert state.get_int(b"poc/supply/pcc") == sum(before.values()) + 10 * 30
    assert_conserved(state)
    recent = state.get_json(CHAIN_KEY)
    assert recent["height"] == 30 and len(recent["challenges"]) == 16
    assert recent["challenges"][-1] == [30, chain.headers[29].challenge.hex()]


def test_replay_is_deterministic(chain: FarmedChain) -> None:
    assert _replay(chain, 25).root == _replay(chain, 25).root
    assert _replay(chain, 24).root != _replay(chain, 25).root


def test_block_by_a_farmer_whose_account_key_differs_is_refused(chain: FarmedChain) -> None:
    config = genesis_config()
    for acct in config["accounts"]:
        if acct["name"] == "farmer-a":
            acct["pubkey"] = signer("someone-else").pubkey.hex()
    config["farmers"] = [f for f in config["farmers"] if f["name"] != "farmer-a"]
    state = genesis_state(config)
    header: PocHeader = next(h for h in chain.headers if h.farmer == "farmer-a")
    root = state.root
    with pytest.raises(AuthorizationError):
        apply_farmed_block(state, header, PocAppParams(grid_operator=GRID))
    assert state.root == root


def test_fill_with_a_real_proof_then_offer_then_erase(farmers: list[Farmer]) -> None:
    """farmer-b proves its plot for the genesis challenge (capacity competition: fill), offers against it,
    cannot erase under its open offer, withdraws, erases."""
    config = genesis_config()
    params, app_params = params_from_genesis(config)
    r = Runner(poc_app(CHAIN, app_params), genesis_state(config))
    farmer_b = next(f for f in farmers if f.name == "farmer-b")
    pid = farmer_b.plots[0].plot_id
    found = farmer_b.fill_proof(pid, params.genesis_challenge)
    assert found is not None
    index, proof = found
    fill = {"plot_nonce": farmer_b.plots[0].plot_nonce.hex(), "k": 21, "challenge_height": 0, "index": index}
    r.begin(1)
    root = r.state.root
    with pytest.raises(ProtocolError):  # the proof must answer the named challenge index
        r.tx("farmer-b", "poc.fill", **fill, proof=proof[:-1].hex() + "00" if proof[-1] else proof[:-1].hex() + "01")
    assert r.state.root == root
    (ev,) = r.tx("farmer-b", "poc.fill", **fill, proof=proof.hex())
    assert ev["plot_id"] == pid.hex() and ev["max_kw"] == 100
    with pytest.raises(ProtocolError, match="already committed"):
        r.tx("farmer-b", "poc.fill", **fill, proof=proof.hex())
    r.tx("farmer-b", "market.offer", service="reserve", amount_kw=100, price=3)
    with pytest.raises(ProtocolError, match="open offers"):
        r.tx("farmer-b", "poc.erase", plot_id=pid.hex())
    r.tx("farmer-b", "market.offer", service="reserve", amount_kw=0, price=0)
    (ev,) = r.tx("farmer-b", "poc.erase", plot_id=pid.hex())
    assert ev["max_kw"] == 0 and farmer_record(r.state, "farmer-b")["plots"] == {}
    assert r.state.get(f"poc/plots/{pid.hex()}".encode()) is None


def test_someone_elses_plot_cannot_be_filled(farmers: list[Farmer]) -> None:
    """u1 submits farmer-b's valid fill proof as its own: the plot id is bound to farmer-b's key, so it fails."""
    config = genesis_config()
    params, app_params = params_from_genesis(config)
    r = Runner(poc_app(CHAIN, app_params), genesis_state(config))
    farmer_b = next(f for f in farmers if f.name == "farmer-b")
    index, proof = farmer_b.fill_proof(farmer_b.plots[0].plot_id, params.genesis_challenge) or (0, b"")
    r.begin(1)
    with pytest.raises(ProtocolError) as exc:
        r.tx("u1", "poc.fill", plot_nonce=farmer_b.plots[0].plot_nonce.hex(), k=21, challenge_height=0, index=index,
             proof=proof.hex())
    assert exc.value.code == "proof.invalid"


def test_app_registers_the_ops_and_no_bridge_ops() -> None:
    app = poc_app(CHAIN, {"grid_operator": GRID})
    assert sorted(app.ops) == ["account.create", "market.demand", "market.import_reputation", "market.offer",
                               "market.report", "market.storage_register", "market.storage_soc", "poc.erase",
                               "poc.fill", "transfer"]
    tx = Tx.signed(signer("u1"), CHAIN, "u1", 0, "market.offer", {"service": "reserve", "amount_kw": 1, "price": 1})
    assert tx.op in app.ops
