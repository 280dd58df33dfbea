"""Bonded relay accounts (SPEC.md §6.9): registration locks a bond, unbonding stops an account, withdrawal waits
for the unbonding period, avoidable failures in blocks are charged and slashed, races are not.

Every test ends by checking the bond unit's conservation: Σ bonds + Σ balances + Σ funds + slashed = the genesis
supply (:meth:`RelayStateMachine.bond_supply`).
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path
from protocol.errors import (
    BondLockedError,
    BondStateError,
    CodecError,
    InsufficientFundsError,
    ProtocolError,
    SignatureError,
    UnbondedAccountError,
    UnbondingAccountError,
)
from relay.chain.state_machine.keys import SLASHED_KEY, bond_funds_key
from tests.unit.relay_state.harness import DPOS, RELAY, RELAYER_FUNDS, RelayHarness
from tests.unit.relay_state.testkit import fixed_signer

MIN_BOND = 1_000
UNBONDING_MS = 60_000
K = 3
"""Charged failures in one window that slash."""
WINDOW_MS = 10 * 60_000
BONDS = {"min_bond": MIN_BOND, "unbonding_ms": UNBONDING_MS, "slash_after_failures": K, "slash_fraction_bps": 1_000,
         "failure_window_ms": WINDOW_MS, "balances": {"relayer-a": RELAYER_FUNDS, "relayer-b": RELAYER_FUNDS}}
SUPPLY = 2 * RELAYER_FUNDS
NEWCOMER = "newcomer"


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness(bonds=BONDS)


def conserved(h: RelayHarness) -> dict[str, Any]:
    sup = h.sm.bond_supply(h.state)
    assert sup["conserved"] and sup["supply"] == SUPPLY, sup
    return sup


def acct(h: RelayHarness, name: str = NEWCOMER) -> dict[str, Any]:
    rec = h.sm.account(h.state, name)
    assert rec is not None
    return rec


def register_tx(h: RelayHarness, name: str = NEWCOMER) -> Tx:
    key = h.keys.setdefault(name, fixed_signer(f"relayer/{name}"))
    return Tx.signed(key, RELAY, name, 0, "account.register", {"pubkey": key.pubkey.hex()})


def bonded_newcomer(h: RelayHarness, funds: int = MIN_BOND + 500) -> None:
    """relayer-a funds the newcomer, which registers (locking MIN_BOND)."""
    h.submit("bond.transfer", {"to": NEWCOMER, "amount": funds})
    h.sm.execute_tx(h.state, register_tx(h), h.ctx())
    h.height += 1


def bad_update(h: RelayHarness, sender: str = NEWCOMER) -> Tx:
    """A ``client.update`` whose header the park did not sign: the sender could have checked it
    (``signature.invalid``, disposition never); its nonce is the account's next."""
    header = h.feeds[DPOS].next_header().signed(fixed_signer("not-the-park"))
    return h.tx("client.update", {"chain_id": DPOS, "headers": [header.encode().hex()]}, sender)


def in_block(h: RelayHarness, txs: list[Tx]) -> list[dict[str, Any]]:
    """One relay block of ``txs`` (as a validator executes it); returns its results, events merged in."""
    res = h.sm.execute_block(h.state, txs, h.ctx())
    h.height += 1
    return [{**r, "events": [e for e in res.events if e["tx"] == r["tx"]]} for r in res.results]


# --- genesis ---------------------------------------------------------------------------------------------------


def test_genesis_accounts_are_governance_grants(h: RelayHarness) -> None:
    a = acct(h, "relayer-a")
    assert (a["status"], a["bond"], a["balance"], a["failures"]) == ("granted", 0, RELAYER_FUNDS, 0)
    h.submit("client.update", h.header_args(DPOS)[1])  # a grant relays without a bond
    conserved(h)


def test_genesis_funds_of_a_name_not_registered_are_held_for_it() -> None:
    h = RelayHarness(bonds={"balances": {"relayer-a": 5, "outsider": 2_000}})
    assert h.sm.account(h.state, "outsider") == {"name": "outsider", "registered": False, "funds": 2_000}
    h.sm.execute_tx(h.state, register_tx(h, "outsider"), h.ctx())  # default min_bond 1000
    assert (acct(h, "outsider")["bond"], acct(h, "outsider")["balance"]) == (1_000, 1_000)
    assert h.sm.bond_supply(h.state)["conserved"]


@pytest.mark.parametrize("bonds", [
    {"min_bond": 0}, {"min_bond": True}, {"slash_fraction_bps": 10_001}, {"slash_after_failures": 0},
    {"failure_window_ms": 0}, {"unbonding_ms": -1}, {"balances": {"Bad Name": 1}}, {"balances": {"x1": -1}},
    {"fee": 1}, [],
])
def test_malformed_genesis_bonds_are_refused(bonds: Any) -> None:
    with pytest.raises(CodecError):
        RelayHarness(bonds=bonds)


# --- registration ------------------------------------------------------------------------------------------------


def test_registration_without_a_bond_is_refused_at_admission_and_in_a_block(h: RelayHarness) -> None:
    tx = register_tx(h)
    root = h.root
    with pytest.raises(UnbondedAccountError):
        h.sm.check_admission(h.state, tx)
    with pytest.raises(UnbondedAccountError):
        h.sm.execute_tx(h.state, tx, h.ctx())
    build = h.sm.build_block(ChainState(h.state.tree), [tx], h.ctx())
    assert build.included == [] and [e.code for _, e in build.dropped] == ["account.unbonded"]
    assert [r["error"]["code"] for r in in_block(h, [tx])] == ["account.unbonded"]
    assert h.root == root and h.sm.account(h.state, NEWCOMER) is None
    conserved(h)


def test_registration_with_less_than_min_bond_is_refused(h: RelayHarness) -> None:
    h.submit("bond.transfer", {"to": NEWCOMER, "amount": MIN_BOND - 1})
    root = h.root
    with pytest.raises(UnbondedAccountError):
        h.sm.check_admission(h.state, register_tx(h))
    assert h.root == root and acct(h)["funds"] == MIN_BOND - 1
    conserved(h)


def test_registration_with_a_bond_locks_it_and_the_account_relays(h: RelayHarness) -> None:
    h.submit("bond.transfer", {"to": NEWCOMER, "amount": MIN_BOND + 500})
    assert acct(h, "relayer-a")["balance"] == RELAYER_FUNDS - MIN_BOND - 500
    tx = register_tx(h)
    h.sm.check_admission(h.state, tx)
    assert h.sm.execute_tx(h.state, tx, h.ctx()) == [{"type": "account_registered", "name": NEWCOMER},
                                                     {"type": "bond_locked", "account": NEWCOMER, "amount": MIN_BOND}]
    a = acct(h)
    assert (a["status"], a["bond"], a["balance"], a["nonce"]) == ("bonded", MIN_BOND, 500, 1)
    assert h.state.get(bond_funds_key(NEWCOMER)) is None
    h.submit("client.update", h.header_args(DPOS)[1], NEWCOMER)
    h.submit("bond.transfer", {"to": "relayer-b", "amount": 500}, NEWCOMER)  # to a registered account's balance
    assert (acct(h)["balance"], acct(h, "relayer-b")["balance"]) == (0, RELAYER_FUNDS + 500)
    conserved(h)


def test_bond_transfer_refusals(h: RelayHarness) -> None:
    root = h.root
    for args, error in (({"to": NEWCOMER, "amount": RELAYER_FUNDS + 1}, InsufficientFundsError),
                        ({"to": NEWCOMER, "amount": 0}, CodecError), ({"to": "relayer-a", "amount": 1}, CodecError),
                        ({"to": "Not A Name", "amount": 1}, CodecError), ({"to": NEWCOMER}, CodecError)):
        with pytest.raises(error):
            h.submit("bond.transfer", args)
    assert h.root == root
    conserved(h)


# --- unbonding and withdrawal --------------------------------------------------------------------------------------


def test_unbond_stops_the_account_and_the_bond_returns_after_the_period(h: RelayHarness) -> None:
    bonded_newcomer(h)
    h.submit("account.unbond", {}, NEWCOMER)
    until = h.net.now_ms + UNBONDING_MS
    assert (acct(h)["status"], acct(h)["unbonding_until_ms"]) == ("unbonding", until)
    update = h.tx("client.update", h.header_args(DPOS)[1], NEWCOMER)
    root = h.root
    with pytest.raises(UnbondingAccountError):
        h.sm.check_admission(h.state, update)
    assert [r["error"]["code"] for r in in_block(h, [update])] == ["account.unbonding"]
    with pytest.raises(BondStateError):
        h.submit("account.unbond", {}, NEWCOMER)
    h.net.advance(UNBONDING_MS - 1)
    with pytest.raises(BondLockedError):
        h.submit("account.withdraw", {}, NEWCOMER)
    assert h.root == root
    h.net.advance(1)
    assert h.submit("account.withdraw", {}, NEWCOMER) == [{"type": "bond_withdrawn", "account": NEWCOMER,
                                                           "amount": MIN_BOND}]
    a = acct(h)
    assert (a["status"], a["bond"], a["balance"]) == ("unbonded", 0, MIN_BOND + 500)
    assert "unbonding_until_ms" not in a
    with pytest.raises(UnbondedAccountError):
        h.sm.check_admission(h.state, h.tx("client.update", h.header_args(DPOS)[1], NEWCOMER))
    with pytest.raises(BondStateError):
        h.submit("account.withdraw", {}, NEWCOMER)
    h.submit("account.bond", {}, NEWCOMER)  # bonds again from its balance, and relays
    assert (acct(h)["status"], acct(h)["bond"], acct(h)["balance"]) == ("bonded", MIN_BOND, 500)
    h.submit("client.update", h.header_args(DPOS)[1], NEWCOMER)
    conserved(h)


# --- charged failures and slashing -----------------------------------------------------------------------------


def test_avoidable_failures_in_blocks_are_charged_and_slash_the_bond(h: RelayHarness) -> None:
    bonded_newcomer(h)
    nonce = acct(h)["nonce"]
    latest = h.sm.client_status(h.state, DPOS, h.net.now_ms)["latest_height"]
    for i in range(1, K):
        [r] = in_block(h, [bad_update(h)])
        assert not r["ok"] and r["error"]["charged"] and [e["type"] for e in r["events"]] == ["tx_failed"]
        assert r["error"]["code"] == "signature.invalid" and r["error"]["disposition"] == "never"
        assert r["events"][0]["code"] == "signature.invalid"
        assert (acct(h)["failures"], acct(h)["nonce"], acct(h)["bond"]) == (i, nonce + i, MIN_BOND)
        assert h.sm.client_status(h.state, DPOS, h.net.now_ms)["latest_height"] == latest  # the op's writes undone
    [r] = in_block(h, [bad_update(h)])
    slash = MIN_BOND // 10
    assert [e["type"] for e in r["events"]] == ["tx_failed", "account_slashed"]
    assert r["events"][1] | {"tx": None} == {"type": "account_slashed", "account": NEWCOMER, "amount": slash,
                                             "bond": MIN_BOND - slash, "failures": K, "tx": None}
    a = acct(h)
    assert (a["bond"], a["slashed"], a["failures"], a["failures_total"], a["nonce"]) == (
        MIN_BOND - slash, slash, 0, K, nonce + K)
    assert h.state.get_int(SLASHED_KEY) == slash
    assert conserved(h)["slashed"] == slash
    # below min_bond: refused until account.bond tops the bond up from the balance
    with pytest.raises(UnbondedAccountError):
        h.sm.check_admission(h.state, h.tx("client.update", h.header_args(DPOS)[1], NEWCOMER))
    assert h.submit("account.bond", {}, NEWCOMER) == [{"type": "bond_locked", "account": NEWCOMER, "amount": slash}]
    assert (acct(h)["bond"], acct(h)["balance"]) == (MIN_BOND, 500 - slash)
    conserved(h)


def test_a_block_builder_keeps_a_charged_failure_and_a_trial_run_refuses_it_for_free(h: RelayHarness) -> None:
    bonded_newcomer(h)
    tx = bad_update(h)
    root = h.root
    with pytest.raises(SignatureError):  # admission's trial execution (CometBFT's CheckTx) charges nothing
        h.sm.execute_tx(h.state, tx, h.ctx())
    assert h.root == root
    built = ChainState(h.state.tree)
    build = h.sm.build_block(built, [tx], h.ctx())
    assert build.included == [tx] and build.dropped == []
    assert [e["type"] for e in build.events] == ["tx_failed"]
    replayed = ChainState(h.state.tree)
    h.sm.execute_block(replayed, [tx], h.ctx())
    assert replayed.root == built.root != root  # the validators reach the proposer's state
    conserved(h)


def test_a_redundant_relay_that_lost_a_race_is_a_no_op_and_not_charged(h: RelayHarness) -> None:
    bonded_newcomer(h)
    _, args = h.header_args(DPOS)
    a, b = h.tx("client.update", args, "relayer-a"), h.tx("client.update", args, NEWCOMER)
    before = acct(h)
    results = in_block(h, [a, b])
    assert [r["ok"] for r in results] == [True, True] and results[1]["redundant"] == "packet.replay"
    assert [e["type"] for e in results[1]["events"]] == ["tx_redundant"]
    assert acct(h) == {**before, "nonce": before["nonce"] + 1}  # not counted; the nonce used, so no gap after it
    conserved(h)


@pytest.mark.parametrize("what", ["header not final yet", "lane paused in the block"])
def test_failures_a_sender_could_not_rule_out_are_not_charged(h: RelayHarness, what: str) -> None:
    bonded_newcomer(h)
    p = h.send()
    args = h.verify_args(p)
    if what == "header not final yet":
        tx = h.tx("packet.verify", {**args, "height": args["height"] + 5}, NEWCOMER)  # header.not_final
        txs = [tx]
    else:
        pause = h.tx("lane.pause", h.gov_args("lane.pause", {"src": DPOS, "dst": p.dst_chain, "lane": p.lane}))
        tx = h.tx("packet.verify", args, NEWCOMER)
        txs = [pause, tx]
    before = acct(h)
    results = in_block(h, txs)
    assert not results[-1]["ok"] and results[-1]["error"]["code"] in ("header.not_final", "lane.invalid")
    assert acct(h) == before
    conserved(h)


def test_a_grants_failures_are_counted_and_never_slashed(h: RelayHarness) -> None:
    for _ in range(2 * K):
        [r] = in_block(h, [bad_update(h, "relayer-a")])
        assert [e["type"] for e in r["events"]] == ["tx_failed"]
    a = acct(h, "relayer-a")
    assert (a["status"], a["failures"], a["failures_total"], a["slashed"], a["balance"]) == (
        "granted", 2 * K, 2 * K, 0, RELAYER_FUNDS)
    h.submit("client.update", h.header_args(DPOS)[1])  # and it still relays
    conserved(h)


def test_failures_outside_the_window_do_not_add_up(h: RelayHarness) -> None:
    bonded_newcomer(h)
    for _ in range(K - 1):
        in_block(h, [bad_update(h)])
    h.net.advance(WINDOW_MS)
    [r] = in_block(h, [bad_update(h)])
    assert [e["type"] for e in r["events"]] == ["tx_failed"]
    a = acct(h)
    assert (a["failures"], a["failures_total"], a["bond"], a["window_start_ms"]) == (1, K, MIN_BOND, h.net.now_ms)
    conserved(h)


def test_a_failing_governance_action_is_not_charged(h: RelayHarness) -> None:
    params = {"src": DPOS, "dst": "poc-park", "lane": "lane-9"}
    tx = h.tx("lane.pause", h.gov_args("lane.pause", params))  # unknown lane: lane.invalid, never, but governance
    before = acct(h, "relayer-a")
    [r] = in_block(h, [tx])
    assert not r["ok"] and acct(h, "relayer-a") == before
    conserved(h)


def test_charging_is_deterministic(h: RelayHarness) -> None:
    bonded_newcomer(h)
    txs = [bad_update(h)]
    ctx = h.ctx()
    roots = set()
    for _ in range(2):
        state = ChainState(h.state.tree)
        h.sm.execute_block(state, txs, BlockContext(ctx.chain_id, ctx.height, ctx.timestamp_ms, "any-producer"))
        roots.add(state.root)
    assert len(roots) == 1
    conserved(h)


def test_every_bond_error_is_a_protocol_error_with_its_code() -> None:
    codes = {UnbondedAccountError: "account.unbonded", UnbondingAccountError: "account.unbonding",
             BondLockedError: "bond.locked", BondStateError: "bond.state"}
    for cls, code in codes.items():
        assert issubclass(cls, ProtocolError) and cls.code == code
    assert account_path(NEWCOMER) == b"accounts/newcomer"
