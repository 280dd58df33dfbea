"""Deterministic DPoS chains for tests and benchmarks: witness keys, valid headers, and forgeries.

TEST-ONLY: every key here is derived from a public label (``sha256("parkrelay TEST-ONLY dpos witness key"
|| label || index)``); anyone can recompute it. Never use these keys, or this module, for a real park.

:class:`ChainBuilder` produces a chain one header at a time, following the same schedule and finality
rules as the light client (:mod:`chains.dpos.consensus`), so every header it makes is valid unless a test
malleates it. :func:`make_chain` is the one-call form the benchmark uses.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chains.common.bridge import register_bridge_ops
from chains.common.tx import BlockContext, Tx, account_path
from chains.dpos.app import dpos_app, load_genesis
from chains.dpos.consensus import FinalityTracker, genesis_header, is_boundary, schedule
from chains.dpos.light_client import DposCheckpoint, DposLightClient
from chains.dpos.reputation import dpos_bridge_hooks
from chains.dpos.types import DposHeader, DposParams, WitnessInfo, WitnessSet
from chains.dpos.witnesses import BlockConsensus, apply_block_consensus, expected_producer
from protocol.crypto import Ed25519Signer
from protocol.errors import ProtocolError
from protocol.types import ChainId, ClientId

__all__ = ["ChainBuilder", "SimChain", "account_signer", "forge", "forge_branch", "make_chain", "resign", "test_signer",
           "witness_name"]

GENESIS_TIME_MS = 1_700_000_000_000
"""Default genesis time of test chains (a fixed instant: tests never read a clock)."""
DAY_MS = 86_400_000


def test_signer(label: str, index: int) -> Ed25519Signer:
    """TEST-ONLY key ``index`` of the family ``label``: derived from public strings, so never secret."""
    return Ed25519Signer(hashlib.sha256(f"parkrelay TEST-ONLY dpos witness key/{label}/{index}".encode()).digest())


test_signer.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def witness_name(index: int) -> str:
    """Name of test witness ``index``: ``w00``, ``w01``..."""
    return f"w{index:02d}"


def resign(header: DposHeader, signer: Ed25519Signer) -> DposHeader:
    """``header`` signed by ``signer`` (whoever that is)."""
    return header.with_signature(signer.sign(header.signing_bytes()))


def forge(header: DposHeader, signer: Ed25519Signer | None = None, **changes: Any) -> DposHeader:
    """``header`` with ``changes``; re-signed by ``signer`` if given, else keeping the old (now wrong) signature."""
    changed = dataclasses.replace(header, **changes)
    return resign(changed, signer) if signer is not None else changed


def forge_branch(parent: DposHeader, active: WitnessSet, signers: Mapping[str, Ed25519Signer], params: DposParams,
                 count: int, *, tag: bytes = b"conflicting branch", first_slot: int | None = None) -> list[DposHeader]:
    """``count`` headers extending ``parent`` in consecutive slots (from ``first_slot``, default the slot after
    ``parent``'s), each produced and signed by the witness ``active`` schedules there — the keys of every scheduled
    witness are needed, so this is what a colluding set can build: with more than 2/3 of ``active`` among the
    producers, the branch is irreversible under the LIB rule. ``tag`` makes its transaction roots differ from any
    honest block's, so it conflicts with the chain ``parent`` is on."""
    out: list[DposHeader] = []
    prev = parent
    slot = parent.slot + 1 if first_slot is None else first_slot
    for _ in range(count):
        producer = schedule(active, slot, params.genesis_slot)
        height = prev.height + 1
        unsigned = DposHeader(prev.chain_id, height, prev.hash(), slot * params.block_interval_ms, slot, producer,
                              hashlib.sha256(tag + b"/tx/%d" % height).digest(),
                              hashlib.sha256(tag + b"/state/%d" % height).digest(), active.hash, None)
        prev = resign(unsigned, signers[producer])
        out.append(prev)
        slot += 1
    return out


class ChainBuilder:
    """Builds a valid DPoS chain deterministically.

    ``n_witnesses`` witnesses ``w00..`` form the genesis set; ``n_standby`` more (``w<n>..``) have keys but
    are not active, so boundaries can rotate them in. ``signers`` holds every key, by name.
    """

    def __init__(self, n_witnesses: int = 21, *, n_standby: int = 0, label: str = "dpos-test",
                 chain_id: str = "dpos-park", maintenance_interval_blocks: int = 100,
                 genesis_time_ms: int = GENESIS_TIME_MS, block_interval_ms: int = 1000,
                 genesis_state_root: bytes | None = None) -> None:
        self.chain_id = chain_id
        self.label = label
        self.params = DposParams(genesis_time_ms=genesis_time_ms, block_interval_ms=block_interval_ms,
                                 maintenance_interval_blocks=maintenance_interval_blocks,
                                 active_witnesses=n_witnesses)
        self.signers: dict[str, Ed25519Signer] = {}
        self.witnesses: list[WitnessInfo] = []
        for i in range(n_witnesses + n_standby):
            signer = test_signer(label, i)
            name = witness_name(i)
            self.signers[name] = signer
            self.witnesses.append(WitnessInfo(name, signer.pubkey, 1_000_000 - i))
        genesis_set = WitnessSet.of(self.witnesses[:n_witnesses])
        root = genesis_state_root if genesis_state_root is not None else self._root(0)
        self.checkpoint = DposCheckpoint.genesis(chain_id, self.params, genesis_set.members, root)
        self.tracker: FinalityTracker = self.checkpoint.tracker()
        self.headers: list[DposHeader] = [genesis_header(chain_id, self.params, genesis_set, root)]
        self.trackers: list[FinalityTracker] = [self.tracker.copy()]
        """Tracker state after each header (index = height), for checkpoints mid-chain."""

    def _root(self, height: int) -> bytes:
        return hashlib.sha256(f"{self.label}/state/{height}".encode()).digest()

    @property
    def tip(self) -> DposHeader:
        return self.headers[-1]

    def client(self, client_id: str = "dpos-0", trusting_period_ms: int = 14 * DAY_MS,
               **kwargs: Any) -> DposLightClient:
        """A light client trusting this chain's genesis."""
        return DposLightClient(ClientId(client_id), ChainId(self.chain_id), trusting_period_ms, params=self.params,
                               checkpoint=self.checkpoint, **kwargs)

    def next_header(self, *, skip_slots: int = 0, offline: Iterable[str] = (), state_root: bytes | None = None,
                    pending_set: tuple[WitnessInfo, ...] | None = None, sign: bool = True) -> DposHeader:
        """The next valid header (not appended): the first slot after ``skip_slots`` empty ones whose
        scheduled witness is not ``offline``."""
        tip = self.tip
        offline = set(offline)
        slot = tip.slot + 1 + skip_slots
        active = self.tracker.active
        producer = schedule(active, slot, self.params.genesis_slot)
        while producer in offline:
            slot += 1
            producer = schedule(active, slot, self.params.genesis_slot)
        height = tip.height + 1
        header = DposHeader(self.chain_id, height, tip.hash(), slot * self.params.block_interval_ms, slot, producer,
                            hashlib.sha256(f"{self.label}/txs/{height}".encode()).digest(),
                            state_root if state_root is not None else self._root(height), active.hash, pending_set)
        return resign(header, self.signers[producer]) if sign else header

    def append(self, header: DposHeader) -> DposHeader:
        """Add a header made by :meth:`next_header` (possibly malleated) to the chain."""
        self.tracker.on_block(header.height, header.producer, header.pending_set)
        self.headers.append(header)
        self.trackers.append(self.tracker.copy())
        return header

    def extend(self, n: int, *, offline: Iterable[str] = (),
               propose: Callable[[int, WitnessSet], tuple[WitnessInfo, ...] | None] | None = None,
               keep_trackers: bool = True) -> list[DposHeader]:
        """Append ``n`` headers. ``propose(height, active)`` gives the pending set of boundary blocks."""
        out = []
        offline = set(offline)
        for _ in range(n):
            pending = None
            height = self.tip.height + 1
            if propose is not None and is_boundary(height, self.params):
                pending = propose(height, self.tracker.active)
            header = self.next_header(offline=offline, pending_set=pending)
            if keep_trackers:
                self.append(header)
            else:
                self.tracker.on_block(header.height, header.producer, header.pending_set)
                self.headers.append(header)
            out.append(header)
        return out

    def rotate(self, height: int, active: WitnessSet) -> tuple[WitnessInfo, ...] | None:
        """A ``propose`` policy: swap one active member (a different one each interval) for a standby."""
        standby = [w for w in self.witnesses if w.name not in active]
        if not standby:
            return None
        out_index = (height // self.params.maintenance_interval_blocks) % len(active.members)
        members = [w for i, w in enumerate(active.members) if i != out_index]
        return WitnessSet.of([*members, standby[(height // self.params.maintenance_interval_blocks) % len(standby)]]
                             ).members

    def fork(self, height: int, *, label: str | None = None) -> ChainBuilder:
        """A builder for a competing branch that starts on top of this chain's header at ``height``.

        It shares this chain's keys and parameters and its headers up to ``height``; what it appends is its own.
        ``label`` (default ``<label>/fork@<height>``) changes the tx and state roots of its new headers, so a
        header it makes in a slot this chain also filled is a different block (by the same witness: double
        production, unless the branches use different slots). Needs the trackers kept (``keep_trackers``).
        """
        if not 0 <= height < len(self.trackers):
            raise ValueError(f"no tracker kept at height {height} (chain built with keep_trackers=False?)")
        other = copy.copy(self)
        other.label = label if label is not None else f"{self.label}/fork@{height}"
        other.signers = dict(self.signers)
        other.witnesses = list(self.witnesses)
        other.headers = self.headers[: height + 1]
        other.trackers = self.trackers[: height + 1]  # snapshots, never mutated: sharing them is safe
        other.tracker = self.trackers[height].copy()
        return other

    def checkpoint_at(self, height: int) -> DposCheckpoint:
        """A checkpoint trusting the header at ``height`` with the chain's finality state after it."""
        return DposCheckpoint.from_tracker(self.headers[height], self.trackers[height])


def make_chain(n_headers: int, n_witnesses: int = 21, *, maintenance_interval_blocks: int = 100,
               set_changes: bool = True, offline: Iterable[str] = (),
               label: str = "bench") -> tuple[dict[str, Any], list[DposHeader]]:
    """A valid chain of ``n_headers`` headers after genesis, and how to build a light client for it.

    Returns ``(client_args, headers)``: ``DposLightClient(client_id=ClientId("dpos-0"), **client_args)`` (or
    ``router.create("dpos", **client_args)``) trusts the chain's genesis, and ``client.process_header(h,
    now_ms=h.timestamp_ms)`` for each header in order accepts them all, as on a live stream.
    ``client_args`` holds ``chain_id``, ``trusting_period_ms``, ``params`` and ``checkpoint``.

    ``n_witnesses`` witnesses are active (up to 101); with ``set_changes`` each maintenance boundary
    (every ``maintenance_interval_blocks``) rotates one standby witness in, so set promotions happen in
    the stream. Witnesses named in ``offline`` (``w00``...) never produce: their slots are missed.
    TEST-ONLY keys (see the module docstring).
    """
    builder = ChainBuilder(n_witnesses, n_standby=4 if set_changes else 0, label=label,
                           maintenance_interval_blocks=maintenance_interval_blocks)
    builder.extend(n_headers, offline=offline, propose=builder.rotate if set_changes else None,
                   keep_trackers=False)
    args: dict[str, Any] = {"chain_id": ChainId(builder.chain_id), "trusting_period_ms": 14 * DAY_MS,
                            "params": builder.params, "checkpoint": builder.checkpoint}
    return args, builder.headers[1:]


def account_signer(label: str, name: str) -> Ed25519Signer:
    """TEST-ONLY account key of ``name`` in the family ``label``."""
    return Ed25519Signer(hashlib.sha256(f"parkrelay TEST-ONLY dpos account key/{label}/{name}".encode()).digest())


class SimChain:
    """A pure, in-memory DPoS park that executes blocks exactly as the node must (see :mod:`chains.dpos.app`):
    ``apply_block_consensus``, begin-block hooks, transactions, then a header signed by the scheduled
    witness. For tests of the state machine and of node/light-client agreement. TEST-ONLY keys.

    ``accounts`` maps extra account names to genesis balances; witnesses ``w00..`` get accounts too.
    ``config`` entries override or extend the genesis config (``params``, ``market``, ``reserve``, ``bridge``...).
    Or ``genesis`` is a whole park genesis config used as is (e.g. ``chains.dpos.node.build_genesis`` over
    witnesses ``w00..`` keyed by ``test_signer(label, i)``), for tests that need the park a deployment
    describes. The bridge ops are registered, as on the node.
    """

    def __init__(self, n_witnesses: int = 4, *, n_standby: int = 0, label: str = "sim",
                 accounts: dict[str, dict[str, int]] | None = None, genesis: dict[str, Any] | None = None,
                 **config: Any) -> None:
        if genesis is not None and (accounts or config):
            raise ValueError("SimChain takes a whole genesis config or parts of one, not both")
        self.label = label
        self.signers: dict[str, Ed25519Signer] = {}
        witnesses: list[dict[str, Any]] = []
        for i in range(n_witnesses + n_standby):
            name = witness_name(i)
            self.signers[name] = test_signer(label, i)
            # standby witnesses have fewer votes: elected only to replace a jailed one, or through votes
            votes = 1_000_000 - i if i < n_witnesses else 1_000 - i
            witnesses.append({"name": name, "pubkey": self.signers[name].pubkey.hex(), "votes": votes})
        accts: dict[str, dict[str, Any]] = {}
        for name, balances in (accounts or {}).items():
            accts[name] = {"pubkey": account_signer(label, name).pubkey.hex(), "balances": balances}
        for w in witnesses:
            accts.setdefault(w["name"], {"pubkey": account_signer(label, w["name"]).pubkey.hex(), "balances": {}})
        genesis_config: dict[str, Any] = {"chain_id": "dpos-sim", "genesis_time_ms": GENESIS_TIME_MS,
                                          "maintenance_interval_blocks": 10, "active_witnesses": n_witnesses,
                                          "accounts": accts, "witnesses": witnesses, "reserve": {"prc": 10**9}}
        genesis_config.update(config)
        self.config = genesis if genesis is not None else genesis_config
        self.genesis = load_genesis(self.config)
        self.params = self.genesis.params
        self.chain_id = self.genesis.chain_id
        self.state = self.genesis.state
        self.app = dpos_app(self.chain_id, self.params, self.genesis.market)
        register_bridge_ops(self.app, dpos_bridge_hooks(self.params, self.genesis.market))
        self.headers: list[DposHeader] = [self.genesis.header]
        self.results: list[BlockConsensus | None] = [None]
        """``BlockConsensus`` of each block (index = height)."""
        self.events: list[list[dict[str, Any]]] = [[]]
        self.failed: list[list[tuple[Tx, ProtocolError]]] = [[]]
        """Transactions of each block that raised (and were rolled back), with their error."""

    @property
    def tip(self) -> DposHeader:
        return self.headers[-1]

    def client(self, client_id: str = "dpos-0", trusting_period_ms: int = 14 * DAY_MS,
               **kwargs: Any) -> DposLightClient:
        return DposLightClient(ClientId(client_id), ChainId(self.chain_id), trusting_period_ms, params=self.params,
                               checkpoint=self.genesis.checkpoint, **kwargs)

    def tx(self, sender: str, op: str, args: dict[str, Any], nonce: int | None = None) -> Tx:
        """A transaction signed by ``sender``'s TEST-ONLY account key, at its next nonce by default."""
        if nonce is None:
            nonce = self.state.get_json(account_path(sender))["nonce"]
        return Tx.signed(account_signer(self.label, sender), self.chain_id, sender, nonce, op, args)

    def produce(self, txs: Iterable[Tx] = (), *, offline: Iterable[str] = (), skip_slots: int = 0,
                time_ms: int | None = None) -> DposHeader:
        """Execute and sign the next block in the first slot (after ``skip_slots``, or at ``time_ms``) whose
        scheduled witness is not ``offline``. Failing transactions are rolled back and kept in :attr:`failed`."""
        offline = set(offline)
        interval = self.params.block_interval_ms
        slot = self.tip.slot + 1 + skip_slots if time_ms is None else max(time_ms // interval, self.tip.slot + 1)
        while expected_producer(self.state, self.params, slot) in offline:
            slot += 1
        producer = expected_producer(self.state, self.params, slot)
        height = self.tip.height + 1
        ctx = BlockContext(self.chain_id, height, slot * interval, producer)
        bc = apply_block_consensus(self.state, self.params, ctx)
        events = [*bc.events, *self.app.begin_block(self.state, ctx)]
        failed: list[tuple[Tx, ProtocolError]] = []
        tx_hashes = []
        for tx in txs:
            try:
                events += self.app.execute_tx(self.state, tx, ctx)
                tx_hashes.append(tx.hash())
            except ProtocolError as exc:
                failed.append((tx, exc))
        header = DposHeader(self.chain_id, height, self.tip.hash(), ctx.timestamp_ms, slot, producer,
                            hashlib.sha256(b"".join(tx_hashes)).digest(), self.state.root, bc.active_set_hash,
                            bc.pending_set)
        header = resign(header, self.signers[producer])
        self.headers.append(header)
        self.results.append(bc)
        self.events.append(events)
        self.failed.append(failed)
        return header

    def produce_many(self, n: int, *, offline: Iterable[str] = ()) -> list[DposHeader]:
        return [self.produce(offline=offline) for _ in range(n)]
