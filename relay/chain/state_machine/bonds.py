"""Bonded relay accounts (SPEC.md §6.9): what an account puts at stake to use the relay chain's block space.

The relay chain charges no fees. What stands between a key and the mempool is a **bond**: registering an account
(``account.register``) locks ``min_bond`` units of the relay's bond unit from the funds already held under the new
name; an account whose transactions keep failing in blocks for reasons it could have checked loses part of it
(slashing); an account that stops relaying gets it back after an unbonding period. The park operators' own
relayers and the relay validators are listed in genesis ``accounts``: those are **governance grants**, registered
without a bond, never slashed (their failures are counted and shown all the same).

The bond unit is not a currency: it exists from genesis only (``bonds.balances``), moves only by
``bond.transfer`` (so an operator funds an outside relayer's name before it registers) and is spent on nothing
but bonds. Every unit is in exactly one place, so ``supply`` (the genesis total) always equals::

    Σ account balance + Σ account bond + Σ funds of unregistered names + slashed

Records (keys in :mod:`relay.chain.state_machine.keys`):

``relay/bonds``                 the parameters and the genesis ``supply`` (:class:`BondParams`)
``relay/bonds/slashed``         units taken by slashing (decimal); burned: nothing moves them out
``relay/bonds/funds/{name}``    units held for a name not registered yet (decimal); moved into the account by
                                ``account.register``
``accounts/{name}``             the account record of :mod:`chains.common.tx` plus the fields of
                                :data:`ACCOUNT_FIELDS` (what ``getAccount`` shows)

Failure accounting is consensus state and deterministic: only a transaction that is *in a block* counts (the
block's builder keeps it as a charged failure, :meth:`relay.chain.state_machine.app.RelayApp.execute_tx`), only
after its signature and nonce checked (so nobody else's bytes charge an account), and only when its error's
disposition is ``never`` (invalid input that stays invalid: a proof, a codec, a signature inside the payload);
redundant relays that lost a race (``packet.replay``, ``done``), conditions the chain's progress lifts
(``after_progress``), refusals that stop the relayer (``fatal``) and :data:`RACE_CODES` count nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.common.state import ChainState
from chains.common.tx import ACCOUNT_RE, CHARGED_FAILURE, BlockContext, Tx, account_path
from protocol.errors import (
    BondLockedError,
    BondStateError,
    CodecError,
    Disposition,
    InsufficientFundsError,
    ProtocolError,
    UnbondedAccountError,
    UnbondingAccountError,
)
from protocol.types import check_uint
from relay.chain.state_machine.keys import BONDS_KEY, SLASHED_KEY, bond_funds_key
from relay.chain.state_machine.records import Event, json_object, obj_args, op_args, str_arg

__all__ = [
    "ACCOUNT_FIELDS",
    "BONDED",
    "GRANTED",
    "RACE_CODES",
    "UNBONDED",
    "UNBONDING",
    "BondParams",
    "apply_register",
    "bond_supply",
    "charge_failure",
    "check_active",
    "check_register",
    "counts_as_failure",
    "init_bonds",
    "load_params",
    "op_bond",
    "op_transfer",
    "op_unbond",
    "op_withdraw",
    "parse_genesis_bonds",
]

GRANTED, BONDED, UNBONDING, UNBONDED = "granted", "bonded", "unbonding", "unbonded"
ACCOUNT_FIELDS = ("status", "bond", "balance", "failures", "failures_total", "window_start_ms", "slashed")
"""Fields the relay adds to an account record: ``status`` (``granted`` | ``bonded`` | ``unbonding`` | ``unbonded``),
``bond`` (units locked), ``balance`` (free units), ``failures`` (charged failures in the current window),
``failures_total`` (ever), ``window_start_ms`` (relay time the window opened), ``slashed`` (units lost, ever); and,
while unbonding, ``unbonding_until_ms``."""

RACE_CODES = frozenset({"lane.invalid"})
"""``never`` codes a relayer cannot rule out when it submits: a lane paused by a client freeze or by governance
earlier in the same block. They count as no failure."""

MAX_UNITS = 10**18
"""Largest amount of bond units in one place (and in one genesis balance)."""
MAX_PERIOD_MS = 365 * 86_400_000
"""Longest unbonding period and failure window (one year)."""


@dataclass(frozen=True, slots=True)
class BondParams:
    """The relay's bond rules (genesis ``bonds``; SPEC §6.9)."""

    min_bond: int = 1_000
    """Units ``account.register`` (and ``account.bond``) locks; an account relays only with this much bonded."""
    unbonding_ms: int = 86_400_000
    """Relay time between ``account.unbond`` and the earliest ``account.withdraw`` (one day)."""
    slash_after_failures: int = 5
    """Charged failures within one window that slash the bond."""
    slash_fraction_bps: int = 1_000
    """Part of the bond a slash takes, in basis points (rounded down; 1000 = 10 %)."""
    failure_window_ms: int = 3_600_000
    """Length of a failure window, relay time (one hour): a failure after it starts a new one."""

    def to_json(self) -> dict[str, int]:
        return {"min_bond": self.min_bond, "unbonding_ms": self.unbonding_ms,
                "slash_after_failures": self.slash_after_failures, "slash_fraction_bps": self.slash_fraction_bps,
                "failure_window_ms": self.failure_window_ms}


_BOUNDS = {"min_bond": (1, MAX_UNITS), "unbonding_ms": (0, MAX_PERIOD_MS), "slash_after_failures": (1, 1_000_000),
           "slash_fraction_bps": (0, 10_000), "failure_window_ms": (1, MAX_PERIOD_MS)}


def _bounded(name: str, value: Any) -> int:
    lo, hi = _BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CodecError(f"genesis bonds: {name} out of bounds", expected=f"{lo}..{hi}", got=value)
    return value


def parse_genesis_bonds(value: Any) -> tuple[BondParams, dict[str, int]]:
    """Genesis ``bonds`` (every key optional; absent: the defaults of :class:`BondParams`, no balances)."""
    cfg = obj_args({} if value is None else value, "genesis bonds", (), (*_BOUNDS, "balances"))
    params = BondParams(**{k: _bounded(k, cfg[k]) for k in _BOUNDS if k in cfg})
    balances = json_object(cfg.get("balances", {}), "genesis bonds balances")
    for name, amount in balances.items():
        if not ACCOUNT_RE.match(name):
            raise CodecError("genesis bonds: balance of an invalid account name", expected=ACCOUNT_RE.pattern,
                             got=name)
        check_uint(f"genesis bonds: balance of {name}", amount, MAX_UNITS)
    return params, dict(balances)


def init_bonds(state: ChainState, params: BondParams, balances: Mapping[str, int], granted: Mapping[str, Any]) -> None:
    """Write the parameters and the genesis supply; mark the genesis accounts ``granted`` (already created), credit
    their balances, and hold the other names' balances as funds."""
    state.set_json(BONDS_KEY, {**params.to_json(), "supply": sum(balances.values())})
    for name in sorted(granted):
        acct = state.get_json(account_path(name))
        acct.update(status=GRANTED, bond=0, balance=balances.get(name, 0), failures=0, failures_total=0,
                    window_start_ms=0, slashed=0)
        state.set_json(account_path(name), acct)
    for name in sorted(set(balances) - set(granted)):
        if balances[name]:
            state.set_int(bond_funds_key(name), balances[name])


def load_params(state: ChainState) -> BondParams:
    raw = state.get_json(BONDS_KEY)
    if raw is None:
        raise ProtocolError("relay chain not initialised: no bond parameters")
    return BondParams(**{k: v for k, v in raw.items() if k != "supply"})


# --- registration and the active check ---------------------------------------------------------------------


def check_register(state: ChainState, name: str) -> None:
    """``account.unbonded`` unless the funds held for ``name`` cover ``min_bond`` (the other checks of
    ``account.register`` are :meth:`relay.chain.state_machine.app.RelayApp.check_tx`'s)."""
    need, held = load_params(state).min_bond, state.get_int(bond_funds_key(name))
    if held < need:
        raise UnbondedAccountError(f"account.register of {name} needs a bond: fund the name first (bond.transfer)",
                                   expected=f">= {need} units held for {name}", got=held)


def apply_register(state: ChainState, name: str) -> list[Event]:
    """Move the name's funds into its new account (created by the caller) and lock ``min_bond`` of them."""
    need, held = load_params(state).min_bond, state.get_int(bond_funds_key(name))
    state.delete(bond_funds_key(name))
    acct = state.get_json(account_path(name))
    # window_start_ms 0: the first failure opens a window (a record that does not depend on the block's time)
    acct.update(status=BONDED, bond=need, balance=held - need, failures=0, failures_total=0, window_start_ms=0,
                slashed=0)
    state.set_json(account_path(name), acct)
    return [{"type": "bond_locked", "account": name, "amount": need}]


def check_active(state: ChainState, name: str, acct: Mapping[str, Any]) -> None:
    """Raise unless the account may send relay work: a grant, or bonded with at least ``min_bond``."""
    status = acct.get("status")
    if status == GRANTED:
        return
    if status == UNBONDING:
        raise UnbondingAccountError(f"account {name} is unbonding: it relays nothing more",
                                    expected=BONDED, got=status)
    need = load_params(state).min_bond
    if status != BONDED or int(acct.get("bond", 0)) < need:
        raise UnbondedAccountError(f"account {name} holds no full bond: account.bond locks one again",
                                   expected=f"status bonded with >= {need} units", got=f"{status}, {acct.get('bond')}")


# --- the bond ops -----------------------------------------------------------------------------------------------


def _account(state: ChainState, name: str) -> dict[str, Any]:
    acct: dict[str, Any] = state.get_json(account_path(name))
    return acct


def op_transfer(state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
    """``bond.transfer {to, amount}``: free units from the sender's balance to an account's balance, or to the funds
    of a name not registered yet."""
    args = op_args(tx, ("to", "amount"))
    to = str_arg(args, "to", tx.op)
    amount = check_uint(f"argument 'amount' of {tx.op}", args["amount"], MAX_UNITS)
    if not ACCOUNT_RE.match(to):
        raise CodecError(f"{tx.op}: invalid account name", expected=ACCOUNT_RE.pattern, got=to)
    if amount == 0 or to == tx.sender:
        raise CodecError(f"{tx.op} moves a positive amount to another name", got={"to": to, "amount": amount})
    src = _account(state, tx.sender)
    if src["balance"] < amount:
        raise InsufficientFundsError(f"{tx.op}: balance of {tx.sender} too small", expected=f">= {amount}",
                                     got=src["balance"])
    src["balance"] -= amount
    state.set_json(account_path(tx.sender), src)
    dst = state.get_json(account_path(to))
    if dst is None:
        state.set_int(bond_funds_key(to), state.get_int(bond_funds_key(to)) + amount)
    else:
        dst["balance"] += amount
        state.set_json(account_path(to), dst)
    return [{"type": "bond_transferred", "from": tx.sender, "to": to, "amount": amount,
             "registered": dst is not None}]


def op_unbond(state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
    """``account.unbond {}``: start the unbonding period; from now on the account relays nothing."""
    op_args(tx, ())
    acct = _account(state, tx.sender)
    if acct["status"] != BONDED:
        raise BondStateError(f"{tx.op}: only a bonded account unbonds", expected=BONDED, got=acct["status"])
    until = ctx.timestamp_ms + load_params(state).unbonding_ms
    acct.update(status=UNBONDING, unbonding_until_ms=until)
    state.set_json(account_path(tx.sender), acct)
    return [{"type": "account_unbonding", "account": tx.sender, "bond": acct["bond"], "until_ms": until}]


def op_withdraw(state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
    """``account.withdraw {}``: after the unbonding period, the bond returns to the balance."""
    op_args(tx, ())
    acct = _account(state, tx.sender)
    if acct["status"] != UNBONDING:
        raise BondStateError(f"{tx.op}: only an unbonding account withdraws", expected=UNBONDING, got=acct["status"])
    until = acct["unbonding_until_ms"]
    if ctx.timestamp_ms < until:
        raise BondLockedError(f"{tx.op}: the bond of {tx.sender} is locked until the unbonding period ends",
                              expected=f"relay time >= {until}", got=ctx.timestamp_ms)
    amount = acct["bond"]
    del acct["unbonding_until_ms"]
    acct.update(status=UNBONDED, bond=0, balance=acct["balance"] + amount)
    state.set_json(account_path(tx.sender), acct)
    return [{"type": "bond_withdrawn", "account": tx.sender, "amount": amount}]


def op_bond(state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
    """``account.bond {}``: lock from the balance what the bond lacks of ``min_bond`` (after a withdrawal or a
    slash), so the account relays again."""
    op_args(tx, ())
    acct = _account(state, tx.sender)
    need = load_params(state).min_bond
    status = acct["status"]
    if status not in (BONDED, UNBONDED) or (status == BONDED and acct["bond"] >= need):
        raise BondStateError(f"{tx.op}: nothing to bond for a {status} account", expected="unbonded, or bonded "
                             f"with less than {need}", got=f"{status}, {acct['bond']}")
    lack = need - acct["bond"]
    if acct["balance"] < lack:
        raise InsufficientFundsError(f"{tx.op}: balance of {tx.sender} too small", expected=f">= {lack}",
                                     got=acct["balance"])
    acct.update(status=BONDED, bond=need, balance=acct["balance"] - lack)
    state.set_json(account_path(tx.sender), acct)
    return [{"type": "bond_locked", "account": tx.sender, "amount": lack}]


# --- failures and slashing ----------------------------------------------------------------------------------


def counts_as_failure(exc: ProtocolError) -> bool:
    """Whether an error of a transaction in a block is one its sender could have checked (SPEC §6.9)."""
    return exc.disposition is Disposition.NEVER and exc.code not in RACE_CODES


def charge_failure(state: ChainState, tx: Tx, exc: ProtocolError, ctx: BlockContext) -> list[Event]:
    """Record a charged failure of ``tx`` (its signature and nonce checked, its op refused with ``exc``): the nonce is
    used, the failure counted; at ``slash_after_failures`` in one window a bonded account loses
    ``slash_fraction_bps`` of its bond to ``relay/bonds/slashed`` and its count restarts."""
    params = load_params(state)
    acct = _account(state, tx.sender)
    acct["nonce"] += 1
    if ctx.timestamp_ms >= acct["window_start_ms"] + params.failure_window_ms:
        acct.update(failures=0, window_start_ms=ctx.timestamp_ms)
    acct["failures"] += 1
    acct["failures_total"] += 1
    events: list[Event] = [{"type": CHARGED_FAILURE, "account": tx.sender, "op": tx.op, "code": exc.code,
                            "message": exc.message[:300], "failures": acct["failures"]}]
    if acct["status"] != GRANTED and acct["failures"] >= params.slash_after_failures:
        amount = acct["bond"] * params.slash_fraction_bps // 10_000
        acct.update(bond=acct["bond"] - amount, slashed=acct["slashed"] + amount, failures=0,
                    window_start_ms=ctx.timestamp_ms)
        state.set_int(SLASHED_KEY, state.get_int(SLASHED_KEY) + amount)
        events.append({"type": "account_slashed", "account": tx.sender, "amount": amount, "bond": acct["bond"],
                       "failures": params.slash_after_failures})
    state.set_json(account_path(tx.sender), acct)
    return events


# --- queries ------------------------------------------------------------------------------------------------


def bond_supply(state: ChainState) -> dict[str, Any]:
    """Where every bond unit is: ``supply`` (genesis), ``bonded``, ``balances``, ``funds``, ``slashed``, and
    ``conserved`` (their sum is the supply). Reads every account: a query, never run by an op."""
    bonded = balances = 0
    for _, raw in state.prefix_items(b"accounts/"):
        acct = json.loads(raw)
        bonded += int(acct.get("bond", 0))
        balances += int(acct.get("balance", 0))
    funds = sum(int(raw) for _, raw in state.prefix_items(bond_funds_key("")))
    slashed = state.get_int(SLASHED_KEY)
    supply = int(state.get_json(BONDS_KEY)["supply"])
    return {"supply": supply, "bonded": bonded, "balances": balances, "funds": funds, "slashed": slashed,
            "conserved": bonded + balances + funds + slashed == supply}
