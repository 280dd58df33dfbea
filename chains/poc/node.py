"""A PoC park farmer as a process: ``parkrelay node poc --config FILE --farmer NAME``.

The farmer fills its plots at start (chiapos, cached by plot id; progress in the log), then farms:
for each new head it finds its best proof of space for the head's challenge and, if no heavier block
arrives before the proof's deadline, builds, signs and gossips the next block. Every block from a
peer is checked in full (proof of space, deadline, difficulty, weight, signature) against the
consensus context of its parent; the heaviest chain is canonical and a block is final once
``confirmation_depth`` blocks are on top of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chains.common import progress
from chains.common.bridge import register_bridge_ops
from chains.common.genesis import bridge_section
from chains.common.node import BlockEntry, ChainRules, ParkNode
from chains.common.state import ChainState
from chains.poc.app import (
    apply_farmed_block,
    block_context,
    confirmation_depth_of,
    genesis_block,
    params_from_genesis,
    poc_app,
)
from chains.poc.consensus import ConsensusContext, chiapos_verifier, validate_header
from chains.poc.params import PocChainParams
from chains.poc.plots import FarmedProof, Farmer, PlotCache
from chains.poc.reputation import poc_bridge_hooks
from chains.poc.types import PocHeader, decode_header
from protocol.certificate import ValidatorSet
from protocol.crypto import Ed25519Signer
from protocol.errors import HeaderError


def plot_nonce(farmer_pubkey: bytes, index: int) -> bytes:
    """The nonce of a farmer's ``index``-th devnet plot (public: a plot id is bound to the farmer's key)."""
    return hashlib.sha256(b"parkrelay/poc/devnet-plot/" + farmer_pubkey + index.to_bytes(4, "big")).digest()


def build_genesis(*, chain_id: str, params: Mapping[str, Any], nodes: dict[str, bytes],
                  accounts: dict[str, tuple[bytes, int]], relay_validators: ValidatorSet,
                  lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int,
                  data_dir: Path) -> dict[str, Any]:
    """The genesis config of a PoC park from a deployment's chain section (see ``deploy/devnet.toml``).

    ``params`` are the chain table's kind-specific keys (:class:`~chains.poc.params.PocChainParams`, or a
    mapping of them: checked and defaults filled in here)."""
    p = params if isinstance(params, PocChainParams) else PocChainParams.from_mapping(params)
    k, per_farmer, target = p.plot_k, p.plots_per_farmer, p.target_block_interval_ms
    all_accounts = {**{n: (pk, 0) for n, pk in nodes.items()}, **accounts}
    operator = "operator" if "operator" in all_accounts else next(iter(all_accounts))
    return {
        "chain_id": chain_id,
        "genesis_time_ms": genesis_time_ms,
        "confirmation_depth": p.confirmation_depth,
        "consensus": {"target_interval_ms": target,
                      "initial_difficulty": target * per_farmer * len(nodes) * (2 ** (k - 21))},
        "app": {"grid_operator": operator},
        "accounts": [{"name": n, "pubkey": pk.hex()} for n, (pk, _) in all_accounts.items()],
        # kWh to move between parks, and as much of the park currency the capacity market settles in (as the DPoS
        # park's genesis gives prc): the grid operator escrows demand in it
        "balances": [{"account": n, "denom": denom, "amount": bal} for n, (_, bal) in all_accounts.items() if bal
                     for denom in ("kWh", "pcc")],  # pcc: PocAppParams.settle_denom's default
        "farmers": [{"name": n, "plots": [{"plot_nonce": plot_nonce(pk, i).hex(), "k": k} for i in range(per_farmer)]}
                    for n, pk in nodes.items()],
        "bridge": bridge_section(p.relay_chain_id, relay_validators, lanes,
                                 rights_operator="operator" if "operator" in accounts else None,
                                 transformers=dict(p.transformers), stations=dict(p.stations),
                                 trusted_time_ms=genesis_time_ms, max_certificate_age_ms=p.max_certificate_age_ms,
                                 fee_denom="pcc"),  # relay fees in the park currency (protocol SPEC §6.10)
    }


class PocRules(ChainRules):
    """The PoC park's consensus for the node runtime."""

    def __init__(self, genesis_config: dict[str, Any], farmer: str | None, signer: Ed25519Signer | None,
                 plot_cache: PlotCache | None = None) -> None:
        # bridge section included: the relay's light client derives the same genesis (PocLightClient.from_genesis)
        state, self.genesis_hdr, self.genesis_ctx = genesis_block(genesis_config)
        self.params, self.app_params = params_from_genesis(genesis_config)
        self.chain_id = self.params.chain_id
        self.genesis_state = state
        self.confirmation_depth = confirmation_depth_of(genesis_config)
        self.app = poc_app(self.chain_id, self.app_params)
        register_bridge_ops(self.app, poc_bridge_hooks(self.app_params))
        self.verifier = chiapos_verifier()
        self.contexts: dict[bytes, ConsensusContext] = {self.genesis_hdr.hash(): self.genesis_ctx}
        self.farmer_name = farmer
        self.signer = signer
        self.plot_cache = plot_cache or PlotCache()
        self.genesis_plots = {f["name"]: f.get("plots", []) for f in genesis_config.get("farmers", [])}
        self.farmer: Farmer | None = None

    def decode_header(self, raw: bytes) -> PocHeader:
        return decode_header(raw)

    def genesis(self) -> tuple[PocHeader, ChainState]:
        return self.genesis_hdr, ChainState(self.genesis_state.tree)

    def context_of(self, block_hash: bytes) -> ConsensusContext:
        ctx = self.contexts.get(block_hash)
        if ctx is None:
            raise HeaderError("no consensus context for the parent", got=block_hash.hex())
        return ctx

    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        self.contexts[header.hash()] = validate_header(header, self.context_of(parent.hash), self.params, now_ms,
                                                       self.verifier)

    def replay_header(self, header: Any, parent: BlockEntry) -> None:
        # checked when stored; recompute the context with no clock bound
        self.validate_header(header, parent, 2**62)

    def begin_block(self, state: ChainState, header: Any, parent: BlockEntry) -> list[dict[str, Any]]:
        events = apply_farmed_block(state, header, self.app_params)
        return [*events, *self.app.begin_block(state, block_context(header))]

    def weight(self, header: Any, parent: BlockEntry) -> int:
        return int(header.cumulative_weight)

    def final_height(self, node: ParkNode) -> int:
        return max(0, node.head.header.height - self.confirmation_depth)

    # -- farming ----------------------------------------------------------------------------------

    def _load_plots(self, node: ParkNode) -> Farmer:
        assert self.farmer_name is not None and self.signer is not None
        farmer = Farmer(self.farmer_name, self.signer)
        for plot in self.genesis_plots.get(self.farmer_name, []):
            nonce, k = bytes.fromhex(plot["plot_nonce"]), int(plot["k"])
            info = self.plot_cache.get(self.signer.pubkey, nonce, k)
            if info is None:
                node.log.info("filling a k=%d plot (first start only; cached in %s)", k, self.plot_cache.directory)
                with progress.bar(f"{self.farmer_name}: filling a k={k} plot", total=100) as bar:

                    def report(f: float, msg: str, bar: progress.Bar = bar) -> None:
                        if bar.shown:  # a person at a terminal: a bar, not a log line per percent
                            bar.update(completed=100 * f)
                        else:
                            node.log.info("plotting %3.0f%% %s", 100 * f, msg)

                    info = self.plot_cache.create(self.signer.pubkey, nonce, k, report)
            farmer.add_plot(info)
        node.log.info("farming %d plot(s), %d bytes", len(farmer.plots), farmer.capacity_bytes)
        return farmer

    async def run_producer(self, node: ParkNode) -> None:
        """Farm each new head: wait for the best proof's deadline unless a new head comes first."""
        if self.farmer_name is None or self.signer is None:
            return
        self.farmer = await asyncio.to_thread(self._load_plots, node)
        while True:
            if not node.producing:
                await node.wait_for_head(1.0)
                continue
            head = node.head
            parent_ctx = self.context_of(head.hash)
            farmed = await asyncio.to_thread(self.farmer.farm, self.params, parent_ctx)
            if farmed is None:
                await node.wait_for_head(5.0)
                continue
            due = head.header.timestamp_ms + farmed.deadline_ms
            wait_s = max(0.0, (due - _now_ms()) / 1000)
            if wait_s > 0:
                await node.wait_for_head(wait_s)
            async with node._lock:
                fresh = node.head.hash == head.hash and node.producing
                entry = self._build(node, head, parent_ctx, farmed, due) if fresh else None
            if entry is not None:
                await node._gossip_block(entry.header, entry.txs)


    def _build(self, node: ParkNode, head: BlockEntry, parent_ctx: ConsensusContext, farmed: FarmedProof,
               due: int) -> BlockEntry:
        assert self.farmer is not None
        farmer, params = self.farmer, self.params
        ts = max(due, _now_ms(), head.header.timestamp_ms + 1)

        def make_header(tx_root: bytes, state_root: bytes) -> PocHeader:
            return farmer.make_header(params, parent_ctx, farmed, ts, tx_root, state_root)

        return node.build_block(make_header, ts, farmer.name, head)


def _now_ms() -> int:
    return int(time.time() * 1000)


def make_rules(genesis: dict[str, Any], name: str, signer: Ed25519Signer, data_dir: Path) -> PocRules:
    return PocRules(genesis, name, signer)
