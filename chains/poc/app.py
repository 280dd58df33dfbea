"""The PoC park's application: its ops, its genesis, and per-block consensus bookkeeping (docs/architecture.md §5;
docs/research.md#seed-000).

How a PoC node executes block ``header`` with transactions ``txs`` on the parent's state (pure;
replaying the stored blocks from genesis recomputes every record, so a restarted node needs nothing else)::

    ctx = block_context(header)
    events = apply_farmed_block(state, header, app_params)   # farmer record, plot commitment, reward
    events += app.begin_block(state, ctx)                     # market clearing at round boundaries
    for tx in txs: events += app.execute_tx(state, tx, ctx)   # a failing tx is left out of the block

The header's ``state_root`` is ``state.root`` after that, and its ``tx_root`` is :func:`tx_root`.

Genesis config (JSON or TOML; only ``chain_id`` and ``app.grid_operator`` are required)::

    {
      "chain_id": "poc-park",
      "genesis_time_ms": 1700000000000,
      "consensus": {                       # chains.poc.consensus.PocParams, chain_id taken from above
        "genesis_challenge": "<32-byte hex>",  # default sha256("parkrelay/poc/genesis/" || chain_id)
        "initial_difficulty": 2000,            # default target_interval_ms * genesis plots (k21-equivalents)
        "target_interval_ms": 1000, "retarget_window": 32, "max_adjust_divisor": 8,
        "min_difficulty": 16, "max_future_ms": 1500, "min_k": 21, "max_k": 32
      },
      "app": {                             # chains.poc.market.PocAppParams
        "grid_operator": "grid", "settle_denom": "pcc", "reward_denom": "pcc", "block_reward": 10,
        "round_blocks": 10, "services": ["frequency_regulation", "reserve", "peak_regulation"],
        "kw_per_k21_plot": 100, "max_unit_share_pct": 50, "default_response_ppm": 900000,
        "report_rounds": 2, "fill_window": 16, "max_fill_index": 64, "min_k": 21, "max_k": 32,
        "import_min_score": 5000, "storage_backing_ms": 3600000
      },
      "accounts": [{"name": "grid", "pubkey": "<32-byte ed25519 hex>"}, ...],
      "balances": [{"account": "grid", "denom": "pcc", "amount": 1000000}, ...],
      "farmers": [{"name": "farmer-a", "plots": [{"plot_nonce": "<32-byte hex>", "k": 21}]}, ...],
      "confirmation_depth": 6,             # blocks on top of a final one (node and light client; default 6)
      "bridge": {...}                      # the bridge section (chains.common.genesis), optional
    }

A farmer must be listed in ``accounts``: its account key is its farmer key (the user is the node), so
its plot ids are ``plot_id(account pubkey, plot_nonce)``. Genesis plots are committed without proof.

State keys written here and in :mod:`chains.poc.market`: ``accounts/<name>``, ``balances/<acct>/<denom>``
(chains.common); ``poc/farmers/<name>`` (JSON farmer record: ``plots {plot_id hex: {k, nonce,
proven_height}}, committed_bytes, blocks_farmed, last_farmed_height, awarded_kw, delivered_kw, awards``, and
``imported`` / ``storage {energy_wh, soc_wh}`` when set);
``poc/plots/<plot_id hex>`` (owner name); ``poc/chain`` (latest height and recent challenges);
``poc/supply/<denom>`` (issued total); ``poc/market/round/<r>`` and ``poc/market/awards/<r>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from chains.common.genesis import apply_bridge_genesis
from chains.common.state import ChainState
from chains.common.tx import App, BlockContext, account_path, base_app, create_account
from chains.poc.consensus import (
    ConsensusContext,
    PocParams,
    ProofVerifier,
    expected_plot_size,
    genesis_context,
    genesis_header,
    plot_id,
)
from chains.poc.market import (
    CHAIN_KEY,
    PocAppParams,
    account_pubkey,
    commit_plot,
    farmer_key,
    farmer_record,
    market_clear_hook,
    market_ops,
    new_farmer_record,
    plot_owner_key,
    supply_key,
)
from chains.poc.types import PocHeader
from protocol.errors import AuthorizationError, CodecError
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId

__all__ = [
    "DEFAULT_CONFIRMATION_DEPTH",
    "apply_farmed_block",
    "block_context",
    "confirmation_depth_of",
    "genesis_block",
    "genesis_state",
    "params_from_genesis",
    "poc_app",
    "tx_root",
]

GENESIS_CHALLENGE_TAG = b"parkrelay/poc/genesis/"
DEFAULT_CONFIRMATION_DEPTH = 6
"""Blocks on top of a block before it is final, when the genesis config does not say."""


def poc_app(chain_id: str, params: PocAppParams | dict[str, Any], verifier: ProofVerifier | None = None) -> App:
    """The PoC park's App: ``transfer``, ``account.create``, the capacity ops (``poc.fill``, ``poc.erase``)
    and the market ops (``market.demand``, ``market.offer``, ``market.report``, ``market.import_reputation``,
    ``market.storage_register``, ``market.storage_soc``), with market clearing as a
    begin-block hook. Bridge ops are registered by the caller."""
    app_params = PocAppParams.from_json(params)
    app = base_app(chain_id)
    for name, handler in market_ops(app_params, verifier).items():
        app.register(name, handler)
    app.begin_block_hooks.append(market_clear_hook(app_params))
    return app


def block_context(header: PocHeader) -> BlockContext:
    """What ops and hooks see of the block."""
    return BlockContext(chain_id=header.chain_id, height=header.height, timestamp_ms=header.timestamp_ms,
                        producer=header.farmer)


def tx_root(tx_hashes: Iterable[bytes]) -> bytes:
    """Commitment to a block's transactions: a state-commitment tree of ``u32 index -> tx hash``."""
    return SparseMerkleTree.from_items((i.to_bytes(4, "big"), h) for i, h in enumerate(tx_hashes)).root


def apply_farmed_block(state: ChainState, header: PocHeader, params: PocAppParams) -> list[dict[str, Any]]:
    """Consensus bookkeeping of a block whose header passed :func:`chains.poc.consensus.validate_header`.

    Raises :class:`AuthorizationError` (the block is invalid on this chain) unless the farmer is an
    account whose key is ``header.farmer_pubkey``. Then: commits the plot to the farmer (a block is a
    proof of space for it) unless another farmer holds it, counts the block in the farmer's record,
    mints the block reward to the farmer, and records the block's challenge for ``poc.fill`` proofs. A storage
    unit whose state of charge does not back the plot farms the block but the plot stays uncommitted.
    """
    if header.height == 0:
        return []
    pubkey = account_pubkey(state, header.farmer)
    if pubkey != header.farmer_pubkey:
        raise AuthorizationError(f"block {header.height} farmer key is not the key of account {header.farmer}",
                                 expected=pubkey.hex(), got=header.farmer_pubkey.hex())
    pid = plot_id(header.farmer_pubkey, header.plot_nonce)
    committed = commit_plot(state, header.farmer, pid, header.k, header.plot_nonce, header.height, params)
    rec = farmer_record(state, header.farmer) or new_farmer_record()
    rec["blocks_farmed"] += 1
    rec["last_farmed_height"] = header.height
    state.set_json(farmer_key(header.farmer), rec)
    if params.block_reward:
        state.add_balance(header.farmer, params.reward_denom, params.block_reward)
        key = supply_key(params.reward_denom)
        state.set_int(key, state.get_int(key) + params.block_reward)
    _record_challenge(state, header.height, header.challenge, params.fill_window)
    return [{"type": "poc.block_farmed", "height": header.height, "farmer": header.farmer, "plot_id": pid.hex(),
             "plot_committed": committed, "reward": params.block_reward, "committed_bytes": rec["committed_bytes"]}]


def _record_challenge(state: ChainState, height: int, challenge: bytes, window: int) -> None:
    rec = state.get_json(CHAIN_KEY) or {"height": 0, "challenges": []}
    rec["height"] = height
    rec["challenges"] = [*rec["challenges"], [height, challenge.hex()]][-window:]
    state.set_json(CHAIN_KEY, rec)


# -- genesis ----------------------------------------------------------------------------------


def params_from_genesis(config: dict[str, Any]) -> tuple[PocParams, PocAppParams]:
    """The consensus and app params a genesis config defines (defaults filled in)."""
    try:
        chain_id = ChainId(str(config["chain_id"]))
        cons: dict[str, Any] = dict(config.get("consensus", {}))
        app_params = PocAppParams.from_json(dict(config["app"]))
    except (KeyError, TypeError) as exc:
        raise CodecError(f"malformed PoC genesis config: {exc}") from exc
    cons["chain_id"] = chain_id
    cons.setdefault("genesis_challenge",
                    hashlib.sha256(GENESIS_CHALLENGE_TAG + chain_id.encode()).hexdigest())
    if "initial_difficulty" not in cons:
        space = sum(expected_plot_size(int(p["k"])) for f in config.get("farmers", []) for p in f["plots"])
        k21_plots = max(1, space // expected_plot_size(21))
        cons["initial_difficulty"] = int(cons.get("target_interval_ms", 1000)) * k21_plots
    return PocParams.from_json(cons), app_params


def confirmation_depth_of(config: dict[str, Any]) -> int:
    """The genesis config's ``confirmation_depth`` (default :data:`DEFAULT_CONFIRMATION_DEPTH`), >= 1."""
    depth = config.get("confirmation_depth", DEFAULT_CONFIRMATION_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise CodecError("confirmation_depth must be a positive integer", got=depth)
    return depth


def genesis_state(config: dict[str, Any]) -> ChainState:
    """The genesis state a config defines (see the module docstring for the format)."""
    _, app_params = params_from_genesis(config)
    state = ChainState()
    try:
        for acct in config.get("accounts", []):
            create_account(state, str(acct["name"]), bytes.fromhex(acct["pubkey"]))
        supply: dict[str, int] = {}
        for bal in config.get("balances", []):
            name, denom, amount = str(bal["account"]), str(bal["denom"]), bal["amount"]
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                raise CodecError("genesis balance must be a non-negative integer", got=amount)
            account_pubkey(state, name)
            state.add_balance(name, denom, amount)
            supply[denom] = supply.get(denom, 0) + amount
        for denom, total in sorted(supply.items()):
            state.set_int(supply_key(denom), total)
        for farmer in config.get("farmers", []):
            name = str(farmer["name"])
            pubkey = account_pubkey(state, name)
            if farmer_record(state, name) is None:
                state.set_json(farmer_key(name), new_farmer_record())
            for plot in farmer.get("plots", []):
                nonce, k = bytes.fromhex(plot["plot_nonce"]), int(plot["k"])
                if not app_params.min_k <= k <= app_params.max_k:
                    raise CodecError("genesis plot size out of range", expected=(app_params.min_k, app_params.max_k),
                                     got=k)
                pid = plot_id(pubkey, nonce)
                if state.get(plot_owner_key(pid)) is not None:
                    raise CodecError("genesis plot committed twice", got=plot["plot_nonce"])
                commit_plot(state, name, pid, k, nonce, 0)
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"malformed PoC genesis config: {exc}") from exc
    if state.get(account_path(app_params.grid_operator)) is None:
        raise CodecError("genesis config: the grid operator has no account", got=app_params.grid_operator)
    params, _ = params_from_genesis(config)
    _record_challenge(state, 0, params.genesis_challenge, app_params.fill_window)
    apply_bridge_genesis(state, params.chain_id, config.get("bridge"))
    return state


def genesis_block(config: dict[str, Any]) -> tuple[ChainState, PocHeader, ConsensusContext]:
    """Genesis state (bridge section included), genesis header and its consensus context: everything a node
    starts from, and what the relay chain's light client trusts (:meth:`PocLightClient.from_genesis
    <chains.poc.light_client.PocLightClient.from_genesis>` calls this, so the roots agree)."""
    params, _ = params_from_genesis(config)
    state = genesis_state(config)
    header = genesis_header(params, int(config.get("genesis_time_ms", 0)), state.root)
    return state, header, genesis_context(params, header)
