"""A DPoS park witness as a process: ``parkrelay node dpos --config FILE --witness NAME``.

The shared runtime (:mod:`chains.common.node`) keeps blocks, state, RPC and gossip; this module gives
it the DPoS rules. Block execution follows :mod:`chains.dpos.app`'s order: consensus bookkeeping
(``apply_block_consensus``), begin-block hooks, transactions; the header must then carry the active
set hash and pending set that bookkeeping produced. Fork choice is the longest chain; finality is the
last irreversible block kept in state by the witness tracker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chains.common.bridge import register_bridge_ops
from chains.common.genesis import bridge_section
from chains.common.node import BlockEntry, ChainRules, ParkNode
from chains.common.state import ChainState
from chains.common.tx import BlockContext
from chains.dpos.app import dpos_app, load_genesis
from chains.dpos.params import DposChainParams
from chains.dpos.reputation import dpos_bridge_hooks
from chains.dpos.types import DposHeader
from chains.dpos.witnesses import active_set, apply_block_consensus, expected_producer, load_tracker
from protocol.certificate import ValidatorSet
from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import HeaderError, WrongChainError

MAX_CLOCK_DRIFT_MS = 500


def build_genesis(
    *,
    chain_id: str,
    params: Mapping[str, Any],
    nodes: dict[str, bytes],
    accounts: dict[str, tuple[bytes, int]],
    relay_validators: ValidatorSet,
    lanes: list[tuple[str, str] | dict[str, Any]],
    genesis_time_ms: int,
    data_dir: Path,
) -> dict[str, Any]:
    """The genesis config of a DPoS park from a deployment's chain section (see ``deploy/devnet.toml``).

    ``params`` are the chain table's kind-specific keys (:class:`~chains.dpos.params.DposChainParams`, or a
    mapping of them: checked and defaults filled in here)."""
    p = params if isinstance(params, DposChainParams) else DposChainParams.from_mapping(params)
    interval = p.block_interval_ms
    accts = {name: {"pubkey": pk.hex(), "balances": {"kWh": bal, "prc": bal}} for name, (pk, bal) in accounts.items()}
    return {
        "chain_id": chain_id,
        # start on a slot boundary a little ahead, so every witness is up when block 1 is due
        "genesis_time_ms": (genesis_time_ms // interval + 3) * interval,
        "block_interval_ms": interval,
        "maintenance_interval_blocks": p.maintenance_interval_blocks,
        "active_witnesses": len(nodes) if p.active_witnesses is None else p.active_witnesses,
        "accounts": accts,
        "witnesses": [
            {"name": n, "pubkey": pk.hex(), "votes": 1_000_000 - i} for i, (n, pk) in enumerate(nodes.items())
        ],
        "reserve": {"prc": 10**12},
        "bridge": bridge_section(
            p.relay_chain_id,
            relay_validators,
            lanes,
            rights_operator="operator" if "operator" in accounts else None,
            transformers=dict(p.transformers),
            stations=dict(p.stations),
            trusted_time_ms=genesis_time_ms,
            max_certificate_age_ms=p.max_certificate_age_ms,
            fee_denom="prc",  # relay fees in the park currency (protocol SPEC §6.10)
        ),
    }


class DposRules(ChainRules):
    """The DPoS park's consensus for the node runtime."""

    def __init__(self, genesis_config: dict[str, Any], witness: str | None, signer: Ed25519Signer | None) -> None:
        g = load_genesis(genesis_config)  # bridge section included: the relay's light client derives the same
        self.chain_id = g.chain_id
        self.params = g.params
        self.genesis_state = g.state
        self.genesis_hdr = g.header
        self.checkpoint = g.checkpoint
        self.app = dpos_app(g.chain_id, g.params, g.market)
        register_bridge_ops(self.app, dpos_bridge_hooks(g.params, g.market))
        self.witness = witness
        self.signer = signer

    def decode_header(self, raw: bytes) -> DposHeader:
        return DposHeader.decode(raw)

    def genesis(self) -> tuple[DposHeader, ChainState]:
        return self.genesis_hdr, ChainState(self.genesis_state.tree)

    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        h: DposHeader = header
        if h.chain_id != self.chain_id:
            raise WrongChainError("header of another chain", expected=self.chain_id, got=h.chain_id)
        interval = self.params.block_interval_ms
        if h.slot <= parent.header.slot or h.timestamp_ms != h.slot * interval:
            raise HeaderError(
                "slot must follow the parent's and match the timestamp",
                expected=f"> {parent.header.slot}, time = slot * {interval}",
                got=(h.slot, h.timestamp_ms),
            )
        if h.timestamp_ms > now_ms + MAX_CLOCK_DRIFT_MS:
            raise HeaderError("block from the future", expected=f"<= {now_ms + MAX_CLOCK_DRIFT_MS}", got=h.timestamp_ms)
        assert parent.state is not None
        scheduled = expected_producer(parent.state, self.params, h.slot)
        if h.producer != scheduled:
            raise HeaderError("wrong witness for the slot", expected=scheduled, got=h.producer)
        keys = {w.name: w.pubkey for w in active_set(parent.state).members}
        ed25519_verify(keys[scheduled], h.signing_bytes(), h.signature, what=f"block signature of {scheduled}")

    def begin_block(self, state: ChainState, header: Any, parent: BlockEntry) -> list[dict[str, Any]]:
        ctx = self.context(header)
        bc = apply_block_consensus(state, self.params, ctx)
        if bc.active_set_hash != header.active_set_hash or bc.pending_set != header.pending_set:
            raise HeaderError(
                "header's witness set does not match the chain's",
                expected=bc.active_set_hash.hex(),
                got=header.active_set_hash.hex(),
            )
        return [*bc.events, *self.app.begin_block(state, ctx)]

    def weight(self, header: Any, parent: BlockEntry) -> int:
        return int(header.height)

    def final_height(self, node: ParkNode) -> int:
        assert node.head.state is not None
        return int(load_tracker(node.head.state).lib)

    async def run_producer(self, node: ParkNode) -> None:
        """Sleep to each slot; when this witness is scheduled on the head, produce and gossip the block."""
        if self.witness is None or self.signer is None:
            return
        interval = self.params.block_interval_ms
        while True:
            now = int(time.time() * 1000)
            slot = now // interval + 1
            await asyncio.sleep((slot * interval - now) / 1000)
            async with node._lock:
                entry = self._produce(node, slot)
            if entry is not None:
                await node._gossip_block(entry.header, entry.txs)

    def _produce(self, node: ParkNode, slot: int) -> BlockEntry | None:
        parent = node.head
        assert parent.state is not None and self.signer is not None and self.witness is not None
        if not node.producing or slot <= parent.header.slot:
            return None
        if expected_producer(parent.state, self.params, slot) != self.witness:
            return None
        ts = slot * self.params.block_interval_ms
        ctx = self.context_for(parent.header.height + 1, ts)
        bc = apply_block_consensus(ChainState(parent.state.tree), self.params, ctx)
        signer, witness, chain_id = self.signer, self.witness, self.chain_id

        def make_header(tx_root: bytes, state_root: bytes) -> DposHeader:
            h = DposHeader(
                chain_id,
                parent.header.height + 1,
                parent.hash,
                ts,
                slot,
                witness,
                tx_root,
                state_root,
                bc.active_set_hash,
                bc.pending_set,
            )
            return h.with_signature(signer.sign(h.signing_bytes()))

        entry = node.build_block(make_header, ts, witness, parent)
        node.log.debug("produced block %d in slot %d", entry.header.height, slot)
        return entry

    def context_for(self, height: int, ts: int) -> BlockContext:
        return BlockContext(self.chain_id, height, ts, self.witness or "")


def make_rules(genesis: dict[str, Any], name: str, signer: Ed25519Signer, data_dir: Path) -> DposRules:
    return DposRules(genesis, name, signer)
