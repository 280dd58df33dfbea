"""The DPoS park's application: its ops, begin-block hooks and genesis state (docs/research.md#seed-003,
docs/research.md#seed-002).

Block execution order, for the node (chains/common) to follow when it produces or replays block h:

1. ``bc = apply_block_consensus(state, params, ctx)`` (:mod:`chains.dpos.witnesses`): credit, jail,
   rewards and election at boundaries, LIB and witness-set promotion. Raises ``HeaderError`` if
   ``ctx.producer`` is not scheduled for the slot of ``ctx.timestamp_ms``.
2. ``app.begin_block(state, ctx)``: market round clearing, DR cycle close and settlement.
3. ``app.execute_tx(state, tx, ctx)`` for each transaction.
4. The header carries ``active_set_hash=bc.active_set_hash``, ``pending_set=bc.pending_set`` and
   ``state_root=state.root``; a validating node compares all three with the received header.

Genesis config (a JSON object; only ``chain_id`` and ``genesis_time_ms`` are required)::

    {
      "chain_id": "dpos-park",
      "genesis_time_ms": 1700000000000,     # ms since the epoch; block 1 is in a later slot
      "block_interval_ms": 1000,            # slot length (default 1000)
      "maintenance_interval_blocks": 100,   # boundary every M blocks (default 100)
      "active_witnesses": 21,               # N, size of the elected set (default 21, at most 101)
      "params": {...},                      # any other DposParams field (credit, jail, block_reward...)
      "market": {...},                      # MarketParams fields (round_ms, matching, dr_cycle_ms...)
      "accounts": {"alice": {"pubkey": "<hex ed25519 account key>", "balances": {"kWh": 5000, "prc": 900}}},
      "witnesses": [{"name": "w00", "pubkey": "<hex block-signing key>", "votes": 1000, "url": ""}],
      "reserve": {"prc": 1000000},          # funds module:reserve, which pays block rewards
      "bridge": {...}                       # the bridge section (chains.common.genesis), optional
    }

A witness whose name is not among ``accounts`` gets an account keyed with its block-signing key. Its
``votes`` become permanent base votes, to which voters' stake is added at each election. The genesis
active set is the election over the genesis witnesses (top N by votes x initial credit).

:func:`load_genesis` is the one derivation of a genesis from its config: the park's node
(:class:`chains.dpos.node.DposRules`), the simulated chain of the tests and the relay chain's light
client (:meth:`chains.dpos.light_client.DposLightClient.from_genesis`) all call it, so the genesis
state root, bridge section included, and the header block 1 links to are the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chains.common.genesis import apply_bridge_genesis
from chains.common.state import ChainState
from chains.common.tx import App, base_app, create_account
from chains.dpos.consensus import Candidate, DposCheckpoint, elect
from chains.dpos.market import MarketParams, register_market_ops
from chains.dpos.types import DposHeader, DposParams, WitnessSet
from chains.dpos.witnesses import (
    RESERVE_ACCOUNT,
    init_consensus_state,
    op_report_double_production,
    op_witness_register,
    op_witness_vote,
    register_witness,
)
from protocol.errors import CodecError
from protocol.types import check_id, check_uint

__all__ = ["DposGenesis", "dpos_app", "genesis_state", "load_genesis", "params_from_config"]


def dpos_app(chain_id: str, params: DposParams, market: MarketParams | None = None) -> App:
    """The park's App: ``transfer``, ``account.create``, ``witness.register``, ``witness.vote``,
    ``witness.report_double_production``, ``market.submit_bid``, ``dr.register``, ``dr.request``,
    ``dr.commit``, ``dr.reveal``, ``dr.report_delivery``, ``dr.set_terms``, ``dr.join``; begin-block hooks clear
    market rounds and settle DR. Bridge ops are registered by the caller (``chains.common.bridge``)."""
    app = base_app(chain_id)
    app.register("witness.register", op_witness_register(params))
    app.register("witness.vote", op_witness_vote(params))
    app.register("witness.report_double_production", op_report_double_production(params))
    register_market_ops(app, market if market is not None else MarketParams())
    return app


def params_from_config(config: dict[str, Any]) -> tuple[DposParams, MarketParams]:
    """The consensus and market parameters a genesis config describes."""
    if not isinstance(config, dict):
        raise CodecError("a genesis config is a JSON object", got=type(config).__name__)
    fields = dict(config.get("params") or {})
    for key in ("genesis_time_ms", "block_interval_ms", "maintenance_interval_blocks", "active_witnesses"):
        if key in config:
            fields[key] = config[key]
    return DposParams.from_json(fields), MarketParams.from_json(dict(config.get("market") or {}))


@dataclass(frozen=True, slots=True)
class DposGenesis:
    """Everything a node or a light client derives from one genesis config."""

    chain_id: str
    """Chain id."""
    params: DposParams
    """Consensus parameters."""
    market: MarketParams
    """Market parameters."""
    state: ChainState
    """State after genesis (height 0)."""
    active_set: WitnessSet
    """Genesis witness set: schedules block 1."""
    header: DposHeader
    """The unsigned genesis header; block 1's parent."""
    checkpoint: DposCheckpoint
    """What a light client of this chain trusts at creation."""


def genesis_state(genesis_config: dict[str, Any]) -> ChainState:
    """The state at height 0 described by ``genesis_config`` (format in the module docstring)."""
    return load_genesis(genesis_config).state


def load_genesis(config: dict[str, Any]) -> DposGenesis:
    """Build the genesis state (bridge section included), header and light-client checkpoint from a genesis config."""
    params, market = params_from_config(config)
    chain_id = check_id("chain", config.get("chain_id", ""))
    state = ChainState()
    accounts = config.get("accounts") or {}
    if not isinstance(accounts, dict):
        raise CodecError("accounts is an object: name -> {pubkey, balances}", got=type(accounts).__name__)
    for name in sorted(accounts):
        acct = accounts[name]
        create_account(state, name, _hex32(acct.get("pubkey"), f"pubkey of account {name}"))
        for denom, amount in sorted((acct.get("balances") or {}).items()):
            check_uint(f"genesis balance of {name}", amount)
            state.add_balance(name, denom, amount)
    witnesses = config.get("witnesses") or []
    if not isinstance(witnesses, list) or not witnesses:
        raise CodecError("a DPoS genesis needs at least one witness", got=witnesses)
    candidates = []
    for w in witnesses:
        name = w.get("name")
        pubkey = _hex32(w.get("pubkey"), f"pubkey of witness {name}")
        votes = check_uint(f"votes of witness {name}", w.get("votes", 0))
        if name not in accounts:
            create_account(state, name, pubkey)
        rec = register_witness(state, params, name, pubkey, str(w.get("url", "")), 0, base_votes=votes)
        candidates.append(Candidate(name, pubkey, votes, rec["credit"], False))
    for denom, amount in sorted((config.get("reserve") or {}).items()):
        check_uint(f"reserve of {denom}", amount)
        state.add_balance(RESERVE_ACCOUNT, denom, amount)
    active = elect(candidates, params)
    if active is None:
        raise CodecError("no genesis witness is electable (votes > 0 and initial credit >= jail threshold)")
    init_consensus_state(state, params, active)
    state.set_json(b"dr/cycle", {"index": params.genesis_time_ms // market.dr_cycle_ms, "matched": []})
    state.set_json(b"market/params", market.to_json())
    apply_bridge_genesis(state, chain_id, config.get("bridge"))
    checkpoint = DposCheckpoint.genesis(chain_id, params, active.members, state.root)
    return DposGenesis(chain_id, params, market, state, active, checkpoint.header, checkpoint)


def _hex32(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError as exc:
        raise CodecError(f"{what} must be hex") from exc
    if len(raw) != 32:
        raise CodecError(f"{what} must be 32 bytes", got=len(raw))
    return raw
