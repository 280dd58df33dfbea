"""The node runtime of the Python park chains: block tree, fork choice, mempool, SQLite, RPC, gossip.

A park node is one process. The chain's own consensus plugs in through :class:`ChainRules` (the DPoS
witness schedule, the PoC proof of space); everything else is shared:

* **Block tree.** Every valid block is kept with the state after it (persistent trees share nodes, so
  this is cheap). The canonical head is the block of greatest ``weight`` (height for DPoS, cumulative
  difficulty for PoC); a heavier fork reorganises the head.
* **Persistence.** Blocks go to SQLite as they are accepted; on restart the node replays them from
  genesis (their consensus proofs were checked when they were stored) and resumes.
* **Gossip.** New blocks and transactions are POSTed to the peers; a block whose parent is unknown makes
  the node fetch the missing ancestors from the peer that sent it, if that ``origin`` is one of its
  configured peers (never from a URL an unauthenticated caller names). A periodic sync asks peers for
  their head and pulls what is missing, so a restarted node catches up.
* **RPC.** JSON-RPC 2.0 on ``POST /rpc`` and subscriptions on ``GET /ws`` (aiohttp), where a message
  sent by the subscriber is answered as an RPC request. Admin methods (peer management) need the bearer
  token from the node's config. Every body (RPC, ``/ws`` message, P2P) goes through the strict decoder
  of :mod:`chains.common.jsonrpc` and every method declares typed parameters, so hostile input is
  answered with a JSON-RPC error object and changes nothing.
* **Admission bounds** (:class:`AdmissionLimits`, the deployment config's ``[limits]``): the chains charge
  nothing, so any key can fill a mempool or a socket. A node bounds its mempool in all and per sender, the size
  of a ``/rpc`` body and of a ``/ws`` message, the rate of ``/rpc`` requests and ``/ws`` messages per client
  address, and its ``/ws`` connections in all and per address. What is refused is answered with a typed error
  naming the limit (``limits.<key>``), its value (``expected``) and what was got, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from chains.common import jsonrpc as rpc
from chains.common import storage
from chains.common.heap import TRIM_EVERY_BLOCKS, trim_heap
from chains.common.jsonrpc import ParamSpec
from chains.common.metrics import NodeMetrics
from chains.common.rights import registry_report, rights_report
from chains.common.state import ChainState
from chains.common.tx import App, BlockContext, Tx, account_path, tx_result
from protocol.errors import (
    AccountMempoolFullError,
    CodecError,
    ConnectionLimitError,
    MempoolFullError,
    NonceError,
    ParkRelayError,
    ProtocolError,
    RequestRateLimitedError,
)

log = logging.getLogger("parkrelay.node")

MAX_BLOCK_TXS = 2000
MAX_BLOCK_BYTES = 1024 * 1024
"""The relay chain's default block size: most bytes of transactions (canonical JSON) a relay block holds when the
genesis names no ``block.max_bytes`` (:func:`relay.chain.node.parse_block_params`; a consensus rule, so it stays what
genesis files without it were made under). A park's is :data:`PARK_MAX_BLOCK_BYTES`."""
PARK_MAX_BLOCK_BYTES = 2 * 1024 * 1024
"""Most bytes of transactions (canonical JSON) a park node (DPoS, PoC) puts in a block it makes; the rest waits in the
mempool for the next block. Its gossip (``/p2p/block``, ~2 MiB of JSON) stays inside the 4 MiB a node reads
(``MAX_BODY_BYTES``). A park's block size is its own rule, not checked by its peers or the relay: 1 MiB
(:data:`MAX_BLOCK_BYTES`) capped phase 4 of a 10,000-packet backlog at ~240 settlements a second (a settlement
batch is ~4 KiB a packet: its packet, ack, and the relay's certified record with its proof), whatever the relay and
the relayer could do."""
GET_BLOCKS_BYTES = 8 * 1024 * 1024
"""Most bytes of transactions one ``getBlocks`` answer holds (past its first block)."""
MAX_PROVE_MANY = 200
"""Most keys one ``proveMany`` call proves."""
STATE_RETENTION = 128
"""Blocks below the final height whose state trees a node keeps, for proofs at those heights (2 minutes of 1 s
blocks: the relay's clients of the parks prove at their final height, at most the PoC window plus its depth behind;
a relayer whose client fell further behind feeds headers first and proves higher). Each kept state holds the nodes
its block's writes copied: under full relay blocks ~0.8 MB a height, so 512 of them were ~400 MB of a validator."""
BODY_RETENTION = 16
"""Final blocks below the final height whose bodies (transactions, events, results) stay in memory; older ones are read
back from SQLite when asked for. A block below the final height never leaves the chain, so only the newest are
read often (by gossip, consensus catch-up and relayers at the head): 512 bodies of 1 MiB blocks would be ~600 MB."""
TX_GOSSIP_QUEUE = 10_000
"""Most admitted transactions waiting to be gossiped to one peer; past it the newest are not gossiped to that peer
(it is down or far behind: the sender resubmits, and blocks carry what it missed)."""
WS_REFUSALS_BEFORE_CLOSE = 64
"""Consecutive ``/ws`` messages refused by the rate bound after which the node closes the socket (code 1008, policy
violation): a subscriber that slows down keeps its socket; one that floods on regardless is dropped, so answering
its refusals stops costing the node."""
PENDING_REPLAY = 16
"""Most queued transactions of a sender that admission replays before trying again a transaction the head's state
refused (``ParkNode._check_pending``): bounds what one refused transaction costs."""


class Header(Protocol):
    """What the runtime needs of a chain's header type."""

    height: int
    parent_hash: bytes
    timestamp_ms: int
    tx_root: bytes
    state_root: bytes

    def hash(self) -> bytes: ...
    def encode(self) -> bytes: ...


def tx_root(txs: Sequence[Tx]) -> bytes:
    """SHA-256 over the transactions' hashes in block order (32 zero bytes for no transaction)."""
    if not txs:
        return bytes(32)
    return hashlib.sha256(b"".join(t.hash() for t in txs)).digest()


Body = tuple[tuple[Tx, ...], list[dict[str, Any]], list[dict[str, Any]]]
"""A block's body: its transactions, the events they emitted, one result per transaction."""


class BlockEntry:
    """A validated block and what executing it produced.

    The body (transactions, events, per-transaction results) of a block more than :data:`BODY_RETENTION` below the
    final height is dropped from memory (:meth:`evict`) and read back from the node's database whenever it is asked
    for, so a node's memory does not grow with every transaction it ever ran: a relay validator held ~6.6 KB per
    relayed packet in its blocks' transactions alone (66 MB after a 10,000-packet backlog)."""

    __slots__ = ("_body", "_load", "header", "state", "weight")

    def __init__(self, header: Any, txs: tuple[Tx, ...], weight: int, state: ChainState | None,
                 events: list[dict[str, Any]] | None = None, tx_results: list[dict[str, Any]] | None = None) -> None:
        self.header = header
        self.weight = weight
        self.state = state
        self._body: Body | None = (txs, events if events is not None else [], tx_results if tx_results is not None
                                   else [])
        self._load: Callable[[], Body] | None = None

    @property
    def hash(self) -> bytes:
        h: bytes = self.header.hash()
        return h

    @property
    def evicted(self) -> bool:
        """Whether the body lives only in the database now."""
        return self._body is None

    def evict(self, load: Callable[[], Body]) -> None:
        """Drop the body from memory; ``load`` reads it back (each time it is asked for: nothing is cached again)."""
        self._load = load
        self._body = None

    def body(self) -> Body:
        if self._body is not None:
            return self._body
        assert self._load is not None
        return self._load()

    @property
    def txs(self) -> tuple[Tx, ...]:
        return self.body()[0]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.body()[1]

    @property
    def tx_results(self) -> list[dict[str, Any]]:
        return self.body()[2]


class ChainRules(ABC):
    """A chain's consensus, as the runtime calls it."""

    chain_id: str
    app: App

    @abstractmethod
    def decode_header(self, raw: bytes) -> Any:
        """Strictly decode a header; raise CodecError."""

    @abstractmethod
    def genesis(self) -> tuple[Any, ChainState]:
        """The genesis header and the state after genesis (its ``state_root`` matches)."""

    @abstractmethod
    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        """Raise a ProtocolError unless ``header`` is a valid consensus child of ``parent``."""

    @abstractmethod
    def weight(self, header: Any, parent: BlockEntry) -> int:
        """Fork-choice weight of the chain ending at ``header``."""

    def decode_tx(self, obj: Any) -> Tx:
        """A transaction from its JSON form (a chain may allow larger ones than :data:`MAX_TX_BYTES`)."""
        return Tx.from_json(obj)

    def attach(self, node: ParkNode, app: web.Application) -> None:  # noqa: B027 - optional hook
        """Add chain-specific routes and RPC methods before the node starts serving."""

    def replay_header(self, header: Any, parent: BlockEntry) -> None:  # noqa: B027 - optional hook
        """A stored block is being replayed at start-up (it was validated when stored): rebuild whatever
        per-block consensus context the rules keep outside state. Default: nothing."""

    def begin_block(self, state: ChainState, header: Any, parent: BlockEntry) -> list[dict[str, Any]]:
        """Consensus bookkeeping before the block's transactions (credit, rewards, elections)."""
        return self.app.begin_block(state, self.context(header))

    def end_block(self, state: ChainState, header: Any, parent: BlockEntry) -> list[dict[str, Any]]:
        """Bookkeeping after the block's transactions."""
        return []

    def context(self, header: Any) -> BlockContext:
        return BlockContext(self.chain_id, header.height, header.timestamp_ms, self.producer_of(header))

    def producer_of(self, header: Any) -> str:
        return str(getattr(header, "producer", getattr(header, "farmer", "")))

    @abstractmethod
    def final_height(self, node: ParkNode) -> int:
        """Height of the last final block on the canonical chain."""

    async def run_producer(self, node: ParkNode) -> None:  # noqa: B027 - optional
        """Produce blocks when it is this node's turn. Default: a follower node that never produces."""


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """A node's admission bounds: the deployment config's ``[limits]`` table (``deploy/devnet.toml`` documents
    each key). Defaults sit well above the devnet's own load (benchmarks push 200 transfers/s from 4 senders, a
    relayer thousands of transactions a minute from one account); loopback is not exempt."""

    mempool_txs: int = 20_000
    """Most transactions in the mempool, all senders together (``mempool.full``)."""
    mempool_txs_per_account: int = 2_000
    """Most queued transactions of one sender (``mempool.account_full``): a thousand keys still fill the mempool at
    most ``mempool_txs``, but one key cannot take it alone. On CometBFT the relay's CheckTx enforces it, and the
    global bound is CometBFT's ``mempool.size``."""
    rpc_body_bytes: int = 4 * 1024 * 1024
    """Largest ``POST /rpc`` body and ``/ws`` message, in bytes (``rpc.body_too_large``). ``/p2p/*`` bodies keep
    :data:`~chains.common.jsonrpc.MAX_BODY_BYTES`, which a full block's gossip needs."""
    rpc_requests_per_s: float = 2_000.0
    """Refill rate of the token bucket of each client address over ``POST /rpc`` and ``/ws`` messages
    (``rpc.rate_limited``)."""
    rpc_burst: int = 4_000
    """Capacity of that bucket: the most requests an idle address may send at once."""
    ws_connections: int = 256
    """Most open ``/ws`` connections (``rpc.connection_limit``; the upgrade is answered HTTP 503)."""
    ws_connections_per_ip: int = 64
    """Most open ``/ws`` connections from one client address."""
    ws_requests_per_s: float = 1_000.0
    """RPC requests a node answers over ``/ws``, all sockets together; past it a socket's next request waits its
    turn (no refusal: a WebSocket client waits for each answer, so waiting is backpressure that costs the node
    nothing, while a flood of answered queries from many addresses would take its CPU). Pushed heads are not
    counted. Subscribers that only listen (relayers) never wait."""
    ws_burst: int = 1_000
    """Requests over ``/ws`` answered at once after a quiet spell, before the pacing applies."""
    relay_account_txs_per_s: float = 10.0
    """Relay validators only: transactions admitted from one *bonded* relay account per second
    (``mempool.account_rate``); governance grants (the deployment's relayers and validators) are not bounded. A relay
    batch carries up to 100 packets, so this is up to 1,000 packets/s of an outside relayer's work; a flood of valid
    but useless transactions from bonded accounts gets no more. Counted only for transactions admission took, so a
    forgery naming an account cannot spend its rate."""
    relay_account_burst: int = 100
    """Transactions of one bonded account admitted at once after a quiet spell."""


class Mempool(dict[bytes, Tx]):
    """The pending transactions by hash, with an index by sender kept in step: admission asks for a sender's queued
    transactions on every submission, and a scan of a mempool a flood filled (thousands of entries) would cost each
    honest submission as much. Every way of changing it keeps the index (the dict methods that could bypass it are
    refused)."""

    def __init__(self) -> None:
        super().__init__()
        self._senders: dict[str, dict[bytes, Tx]] = {}

    def __setitem__(self, h: bytes, tx: Tx) -> None:
        old = self.get(h)
        if old is not None:
            self._unindex(h, old)
        super().__setitem__(h, tx)
        self._senders.setdefault(tx.sender, {})[h] = tx

    def __delitem__(self, h: bytes) -> None:
        self._unindex(h, self[h])
        super().__delitem__(h)

    def setdefault(self, h: bytes, tx: Tx) -> Tx:  # type: ignore[override]
        if h not in self:
            self[h] = tx
        return self[h]

    def pop(self, h: bytes, *default: Any) -> Any:  # type: ignore[override]
        if h in self:
            tx = super().pop(h)
            self._unindex(h, tx)
            return tx
        if default:
            return default[0]
        raise KeyError(h)

    def clear(self) -> None:
        super().clear()
        self._senders.clear()

    def update(self, *args: Any, **kw: Any) -> None:
        raise TypeError("Mempool.update would bypass the sender index: set each transaction")

    def popitem(self) -> tuple[bytes, Tx]:
        raise TypeError("Mempool.popitem would bypass the sender index: pop a hash")

    def of(self, sender: str) -> list[Tx]:
        """The sender's queued transactions, in arrival order."""
        return list(self._senders.get(sender, {}).values())

    def count_of(self, sender: str) -> int:
        return len(self._senders.get(sender, ()))

    def _unindex(self, h: bytes, tx: Tx) -> None:
        mine = self._senders.get(tx.sender)
        if mine is not None:
            mine.pop(h, None)
            if not mine:
                del self._senders[tx.sender]


@dataclass
class NodeConfig:
    """One node's settings (from the deployment config)."""

    name: str
    """Node name (witness or farmer account); names its log lines and database."""
    data_dir: Path
    """Directory for the SQLite database."""
    host: str = "127.0.0.1"
    """Address the RPC binds to; loopback by default."""
    port: int = 0
    """RPC port; 0 picks a free one (written to ``<data_dir>/<name>.port``)."""
    peers: list[str] = field(default_factory=list)
    """Base URLs of the other nodes (``http://127.0.0.1:PORT``)."""
    admin_token: str = ""
    """Bearer token for admin RPC methods; empty means a random one (admin disabled in practice)."""
    sync_interval_s: float = 1.0
    """How often to ask peers for their head."""
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    """Admission bounds of the mempool, the RPC and the WebSocket (``[limits]``)."""


RpcHandler = Callable[[dict[str, Any]], Awaitable[Any]]
"""An RPC method: takes its parameters, already checked against the method's :data:`ParamSpec`."""


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """One registered RPC method."""

    handler: RpcHandler
    """Runs under the node lock with the validated parameters."""
    params: ParamSpec
    """Its parameters by name; anything else is refused before the handler runs."""
    admin: bool
    """Needs the bearer token."""


_HEIGHT: ParamSpec = {"height": rpc.uint()}
_RANGE: ParamSpec = {"from": rpc.uint(required=True), "to": rpc.uint(required=True)}
P2P_BLOCK: ParamSpec = {"header": rpc.hex_string(required=True, max_bytes=rpc.MAX_BODY_BYTES // 2),
                        "txs": rpc.object_list(max_len=MAX_BLOCK_TXS), "origin": rpc.string(max_len=256)}
"""The body of ``POST /p2p/block``."""
P2P_TX: ParamSpec = {"tx": rpc.json_object(required=True)}
"""The body of ``POST /p2p/tx``."""


class ParkNode:
    """One park-chain node process (witness or farmer)."""

    def __init__(self, rules: ChainRules, config: NodeConfig) -> None:
        self.rules = rules
        self.config = config
        self.log = logging.LoggerAdapter(log, {"chain": rules.chain_id, "node": config.name})
        self.blocks: dict[bytes, BlockEntry] = {}
        self.by_height: dict[int, bytes] = {}  # canonical chain
        self.children: dict[bytes, list[bytes]] = {}
        self.head: BlockEntry
        self.mempool = Mempool()
        self.peers: list[str] = list(config.peers)
        self._gossip_enabled = True
        self._tx_outbox: dict[str, asyncio.Queue[bytes]] = {}  # per peer, in admission order, encoded once
        self._bodies_from = 1  # the lowest height whose body _evict_bodies has not evicted yet
        self.tx_gossip_dropped = 0
        self.producing = True  # admin.setProducing pauses block production (maintenance)
        self.p2p_body_bytes = rpc.MAX_BODY_BYTES
        """Most bytes a ``/p2p/*`` body may have (a chain whose blocks may be larger raises it)."""
        self.state_retention = STATE_RETENTION
        """Blocks below the final height whose states stay in memory (:data:`STATE_RETENTION`; a chain whose states
        are proven only near its head keeps fewer)."""
        self.body_retention = BODY_RETENTION
        """Final blocks below the final height whose bodies stay in memory (:data:`BODY_RETENTION`)."""
        self._ws_clients: set[web.WebSocketResponse] = set()
        self._ws_per_ip: dict[str, int] = {}
        self._rate = rpc.RateBuckets(config.limits.rpc_requests_per_s, config.limits.rpc_burst)
        self._ws_pace = rpc.Pacer(config.limits.ws_requests_per_s, config.limits.ws_burst)
        self._head_waiters: list[asyncio.Future[None]] = []
        self._methods: dict[str, RpcMethod] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.failed = asyncio.Event()  # set when a task the node cannot run without has died
        self.port = config.port
        self.admin_token = config.admin_token or secrets.token_hex(16)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.exit_code = 0
        """What the node's process exits with once ``failed`` stopped it: 1, or ``storage.EXIT_STORAGE_FAULT``."""
        self.db_path = config.data_dir / f"{rules.chain_id}-{config.name}.sqlite3"
        self.db = storage.connect(self.db_path)
        self.write(_migrate_blocks)
        self._register_default_methods()
        self._load()
        self.metrics = NodeMetrics(self)

    # -- chain ----------------------------------------------------------------------------------

    def _load(self) -> None:
        g_header, g_state = self.rules.genesis()
        genesis = BlockEntry(g_header, (), 0, g_state)
        self.genesis_hash = genesis.hash
        self.blocks[genesis.hash] = genesis
        self.by_height[0] = genesis.hash
        self.head = genesis
        rows = self.db.execute("SELECT header, txs, body IS NULL FROM blocks ORDER BY seq").fetchall()
        replayed = 0
        backfill: list[tuple[str, bytes]] = []
        for raw, txs_json, no_body in rows:
            header = self.rules.decode_header(raw)
            txs = tuple(self.rules.decode_tx(t) for t in json.loads(txs_json))
            if header.hash() in self.blocks:
                continue
            parent = self.blocks.get(header.parent_hash)
            if parent is None:
                self.log.warning("stored block %s has no parent; skipped", header.hash().hex()[:12])
                continue
            self.rules.replay_header(header, parent)
            entry = self._execute_and_insert(header, txs, parent, persist=False)
            if no_body:  # stored by a node before bodies were kept (events and results were only in memory)
                backfill.append((_body_json(entry), entry.hash))
                if len(backfill) >= 256:
                    self.write(lambda db, rows=backfill: db.executemany("UPDATE blocks SET body = ? WHERE hash = ?",
                                                                        rows))
                    backfill = []
            replayed += 1
        if backfill:
            self.write(lambda db: db.executemany("UPDATE blocks SET body = ? WHERE hash = ?", backfill))
        self._evict_bodies()
        if replayed:
            self.log.info("replayed %d stored blocks; head height %d", replayed, self.head.header.height)

    def _execute(self, header: Any, txs: Sequence[Tx], parent: BlockEntry) -> BlockEntry:
        """Run a block on its parent's state; raise ProtocolError if a root does not match."""
        if parent.state is None:
            raise ProtocolError("parent state pruned; cannot execute", got=parent.header.height)
        state = ChainState(parent.state.tree)
        events = self.rules.begin_block(state, header, parent)
        ctx = self.rules.context(header)
        results: list[dict[str, Any]] = []
        for tx in txs:
            th = tx.hash().hex()  # once: a batch's hundred events would each re-encode the whole transaction
            try:
                tx_events = self.rules.app.execute_tx(state, tx, ctx)
                results.append(tx_result(th, tx_events))
                for ev in tx_events:
                    events.append({**ev, "tx": th})
            except ProtocolError as exc:
                results.append({"tx": th, "ok": False, "error": exc.to_dict()})
        events += self.rules.end_block(state, header, parent)
        if tx_root(txs) != header.tx_root:
            raise ProtocolError("tx root mismatch", expected=tx_root(txs).hex(), got=header.tx_root.hex())
        if state.root != header.state_root:
            raise ProtocolError("state root mismatch", expected=state.root.hex(), got=header.state_root.hex())
        weight = self.rules.weight(header, parent)
        return BlockEntry(header, tuple(txs), weight, state, events, results)

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """One transaction on the node's database (:func:`chains.common.storage.write_tx`). A storage fault (a full
        disk, an I/O error, a lock that outlasts the retries) stops the node (``failed``; exit code
        ``storage.EXIT_STORAGE_FAULT``) and is raised: the caller keeps nothing of what it failed to store."""
        try:
            return storage.write_tx(self.db, self.db_path, fn, log=self.log)
        except storage.StorageFault as exc:
            if not self.failed.is_set():
                self.log.error("node stopping: %s (free the disk, then start it again: it resumes from its database)",
                               exc)
                self.exit_code = storage.EXIT_STORAGE_FAULT
                self.failed.set()
            raise

    def _execute_and_insert(self, header: Any, txs: Sequence[Tx], parent: BlockEntry, *, persist: bool,
                            executed: BlockEntry | None = None) -> BlockEntry:
        if (executed is not None and executed.state is not None and executed.header.parent_hash == header.parent_hash
                and executed.header.state_root == header.state_root and executed.header.tx_root == header.tx_root
                and executed.header.height == header.height):
            entry = BlockEntry(header, tuple(txs), self.rules.weight(header, parent), executed.state, executed.events,
                               executed.tx_results)
        else:
            entry = self._execute(header, txs, parent)
        h = entry.hash
        if persist:  # stored before the node holds it: a block it failed to store it never gossips nor builds on
            raw_txs = rpc.dumps([t.to_json() for t in txs])
            body = _body_json(entry)
            self.write(lambda db: db.execute(
                "INSERT OR IGNORE INTO blocks (hash, height, parent, header, txs, seq, body) "
                "VALUES (?,?,?,?,?,(SELECT COALESCE(MAX(seq),0)+1 FROM blocks),?)",
                (h, header.height, header.parent_hash, header.encode(), raw_txs, body),
            ))
        self.blocks[h] = entry
        self.children.setdefault(header.parent_hash, []).append(h)
        if _heavier(entry, self.head):
            self._set_head(entry)
        return entry

    def _set_head(self, entry: BlockEntry) -> None:
        old = self.head
        abandoned = self._abandoned_branch(old, entry)
        # rewrite the canonical index from the new head down to the fork point
        h: bytes | None = entry.hash
        while h is not None:
            e = self.blocks[h]
            if self.by_height.get(e.header.height) == h:
                break
            self.by_height[e.header.height] = h
            h = e.header.parent_hash if e.header.height > 0 else None
        for height in [x for x in self.by_height if x > entry.header.height]:
            del self.by_height[height]
        if old.hash != entry.header.parent_hash and old.hash != entry.hash:
            self.log.info("reorg: head %d/%s -> %d/%s", old.header.height, old.hash.hex()[:12],
                          entry.header.height, entry.hash.hex()[:12])
        self.head = entry
        # a reorg returns the abandoned blocks' transactions to the mempool: a user's transfer that a fork
        # dropped is included again on the new branch (those the new branch already holds, or that can no
        # longer run, fall to the nonce check below)
        for tx in abandoned:
            if len(self.mempool) < self.config.limits.mempool_txs:
                self.mempool.setdefault(tx.hash(), tx)
        if abandoned:
            self.log.info("reorg: %d transactions of the abandoned branch back in the mempool", len(abandoned))
        included = {t.hash() for t in entry.txs}
        for th in included:
            self.mempool.pop(th, None)
        self._prune_mempool()
        self._prune_states()
        self._evict_bodies()
        if entry.header.height % TRIM_EVERY_BLOCKS == 0:
            trim_heap()
        for fut in self._head_waiters:
            if not fut.done():
                fut.set_result(None)
        self._head_waiters.clear()
        self._notify_ws({"type": "new_head", "height": entry.header.height, "hash": entry.hash.hex()})

    def _abandoned_branch(self, old: BlockEntry, new: BlockEntry) -> list[Tx]:
        """Transactions in the blocks of ``old``'s branch above its common ancestor with ``new`` that ``new``'s
        branch does not hold (oldest first): what a switch of head from ``old`` to ``new`` drops."""
        if new.header.parent_hash == old.hash or new.hash == old.hash:
            return []
        a: BlockEntry | None = old
        b: BlockEntry | None = new
        dropped: list[BlockEntry] = []
        kept: set[bytes] = set()
        while a is not None and b is not None and a.hash != b.hash:
            if a.header.height >= b.header.height:
                dropped.append(a)
                a = self.blocks.get(a.header.parent_hash) if a.header.height > 0 else None
            else:
                kept.update(t.hash() for t in b.txs)
                b = self.blocks.get(b.header.parent_hash) if b.header.height > 0 else None
        return [t for e in reversed(dropped) for t in e.txs if t.hash() not in kept]

    def _prune_mempool(self) -> None:
        """Keep, per sender, only the run of nonces that follows the account's: a used nonce, or one behind a
        gap (a transaction before it was dropped), can never execute."""
        if not self.mempool or self.head.state is None:
            return
        by_sender: dict[str, list[tuple[int, bytes]]] = {}
        for th, tx in self.mempool.items():
            by_sender.setdefault(tx.sender, []).append((tx.nonce, th))
        for sender, txs in by_sender.items():
            acct = self.head.state.get_json(account_path(sender))
            # no account yet: its first transaction (the relay's self-signed ``account.register``) has nonce 0; -1 here
            # dropped a pending registration after any block that did not carry it (a proposer that had not received
            # its gossip yet), so it never reached a block
            expected = acct["nonce"] if acct is not None else 0
            for nonce, th in sorted(txs):
                if nonce == expected:
                    expected += 1
                else:
                    self.mempool.pop(th, None)

    def _prune_states(self) -> None:
        final = self.rules.final_height(self)
        cutoff = final - self.state_retention
        if cutoff <= 0 or cutoff % min(64, max(1, self.state_retention // 2)):  # a sweep over every block: not each
            return
        for e in self.blocks.values():
            if e.header.height < cutoff and e.header.height > 0 and (e.state is not None or not e.evicted):
                e.state = None
                self._evict(e)

    def _evict_bodies(self) -> None:
        """Evict the bodies of the canonical blocks that fell :data:`BODY_RETENTION` below the final height since the
        last call (each once; :meth:`_prune_states` sweeps every block, forks included, below the state window)."""
        upto = self.rules.final_height(self) - self.body_retention
        while self._bodies_from < upto:
            e = self.canonical(self._bodies_from)
            if e is not None and not e.evicted:
                self._evict(e)
            self._bodies_from += 1

    def _evict(self, e: BlockEntry) -> None:
        """Drop ``e``'s body from memory: it is read back from its row (which holds its events and results)."""
        h = e.hash
        e.evict(lambda: self._read_body(h))

    def _read_body(self, h: bytes) -> Body:
        row = self.db.execute("SELECT txs, body FROM blocks WHERE hash = ?", (h,)).fetchone()
        if row is None or row[1] is None:
            raise NotFoundError("block body not stored", got=h.hex())
        body = json.loads(row[1])
        return tuple(self.rules.decode_tx(t) for t in json.loads(row[0])), body["events"], body["results"]

    def validate_and_add(self, header: Any, txs: Sequence[Tx], now_ms: int,
                         executed: BlockEntry | None = None) -> BlockEntry:
        """Validate a block from a peer or the local producer and add it; raise ProtocolError if invalid.

        ``executed``: the block's transactions already run on this parent by :meth:`_execute` under a header with the
        same parent, transaction root and state root (the relay's consensus validated the proposal): its state,
        events and results are taken instead of running them again."""
        h = header.hash()
        known = self.blocks.get(h)
        if known is not None:
            return known
        if header.height < 1:
            raise ProtocolError("block height must be positive", got=header.height)
        parent = self.blocks.get(header.parent_hash)
        if parent is None:
            raise MissingParentError("unknown parent", got=header.parent_hash.hex())
        if header.height != parent.header.height + 1:
            raise ProtocolError("height does not follow parent", expected=parent.header.height + 1, got=header.height)
        if len(txs) > MAX_BLOCK_TXS:
            raise ProtocolError("too many transactions", expected=f"<= {MAX_BLOCK_TXS}", got=len(txs))
        final = self.rules.final_height(self)
        if header.height <= final and self.by_height.get(header.height) != h:
            raise ProtocolError("block conflicts with a final block", expected=f"height > {final}", got=header.height)
        self.rules.validate_header(header, parent, now_ms)
        return self._execute_and_insert(header, txs, parent, persist=True, executed=executed)

    def build_block(self, make_header: Callable[[bytes, bytes], Any], timestamp_ms: int,
                    producer: str, parent: BlockEntry | None = None) -> BlockEntry:
        """Assemble a block on ``parent`` (default: the head) from the mempool and add it.

        ``make_header(tx_root, state_root)`` returns the signed header; the runtime executes the
        transactions first so that it can give the roots.
        """
        parent = parent or self.head
        assert parent.state is not None
        txs: list[Tx] = []
        state = ChainState(parent.state.tree)
        ctx = BlockContext(self.rules.chain_id, parent.header.height + 1, timestamp_ms, producer)
        # begin_block needs a header; give it a provisional one with empty roots
        provisional = make_header(bytes(32), bytes(32))
        self.rules.begin_block(state, provisional, parent)
        room = PARK_MAX_BLOCK_BYTES
        for th, tx in list(self.mempool.items()):
            if len(txs) >= MAX_BLOCK_TXS:
                break
            size = tx.size()
            if size > room:
                continue  # the block is full for it (a smaller one may still fit); next block
            try:
                self.rules.app.execute_tx(state, tx, ctx)
                txs.append(tx)
                room -= size
            except ProtocolError as exc:
                if _stale(exc):
                    self.mempool.pop(th, None)
        self.rules.end_block(state, provisional, parent)
        header = make_header(tx_root(txs), state.root)
        return self.validate_and_add(header, txs, timestamp_ms)

    # -- queries --------------------------------------------------------------------------------

    def canonical(self, height: int) -> BlockEntry | None:
        h = self.by_height.get(height)
        return self.blocks[h] if h is not None else None

    def entry_at(self, height: int | None) -> BlockEntry:
        if height is None:
            return self.head
        e = self.canonical(height)
        if e is None:
            raise NotFoundError("no canonical block at that height", expected=f"<= {self.head.header.height}",
                                got=height)
        return e

    async def wait_for_head(self, timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head_waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, timeout_s)

    # -- mempool --------------------------------------------------------------------------------

    def submit_tx(self, tx: Tx) -> bytes:
        """Admit a transaction to the mempool after checking it against the mempool's bounds (``[limits]``
        ``mempool_txs``, ``mempool_txs_per_account``) and the head state. A transaction already held is admitted
        again, bounds or not: it takes nothing more."""
        h = tx.hash()
        if h in self.mempool:
            return h
        limits = self.config.limits
        if len(self.mempool) >= limits.mempool_txs:
            raise MempoolFullError(f"mempool full (limits.mempool_txs = {limits.mempool_txs})",
                                   expected=f"< {limits.mempool_txs}", got=len(self.mempool))
        queued = self.mempool.of(tx.sender)
        if len(queued) >= limits.mempool_txs_per_account:
            raise AccountMempoolFullError(
                f"mempool holds {len(queued)} queued transactions of {tx.sender[:64]!r} (limits.mempool_txs_per_account"
                f" = {limits.mempool_txs_per_account})", expected=f"< {limits.mempool_txs_per_account}",
                got=len(queued))
        taken = self._nonce_taken(tx, queued)
        if taken is not None:
            raise NonceError(
                f"nonce {tx.nonce} of {tx.sender[:64]!r} is taken by pending transaction {taken.hash().hex()[:16]}: "
                "read the account's nonce + pending again", expected="a nonce no pending transaction holds",
                got=tx.nonce)
        assert self.head.state is not None
        state = ChainState(self.head.state.tree)
        self._check_pending(state, tx, queued)
        self.mempool[h] = tx
        return h

    def _nonce_taken(self, tx: Tx, queued: Sequence[Tx]) -> Tx | None:
        """The sender's pending transaction holding ``tx``'s nonce, if any. Admission refuses a second one: only
        one of them can reach a block, and while both wait, the account's ``pending`` (what a client adds to its
        nonce) counts one too many, so the sender's next transaction would queue behind a gap and be dropped."""
        return next((q for q in queued if q.nonce == tx.nonce), None)

    def _check_pending(self, state: ChainState, tx: Tx, queued: Sequence[Tx]) -> None:
        """Run ``tx`` on a scratch copy of the head state, so bad input is refused at once with its typed
        error. A sender's queued transactions are allowed: the nonce is checked against the head's plus
        what is pending from that sender.

        A queued transaction the head's state refuses is tried once more after the sender's own queued ones,
        replayed in nonce order on another copy of the head (at most :data:`PENDING_REPLAY` of them), and admitted
        if it runs there: a transaction that relies on the sender's previous one (a relayer's proof at the height
        its client update, just before, makes final: both go into one block) is not refused for now. Nothing is
        replayed for a transaction the head's state takes, so admission costs what it did; what the replay
        refuses is answered with the head's refusal. ``queued``: the sender's transactions in the mempool."""
        acct = state.get_json(account_path(tx.sender))
        ctx = BlockContext(self.rules.chain_id, self.head.header.height + 1,
                           max(_now_ms(), self.head.header.timestamp_ms + 1), self.config.name)
        if acct is None or not queued or tx.nonce != acct["nonce"] + len(queued):
            self._trial_execute(state, tx, ctx)
            return
        replay = ChainState(state.tree)
        state.set_json(account_path(tx.sender), {**acct, "nonce": tx.nonce})
        try:
            self._trial_execute(state, tx, ctx)
            return
        except ProtocolError as refused:
            if len(queued) > PENDING_REPLAY:
                raise
            try:
                for t in sorted(queued, key=lambda t: t.nonce):
                    self._trial_execute(replay, t, ctx)
                self._trial_execute(replay, tx, ctx)
            except ProtocolError:
                raise refused from None

    def _trial_execute(self, state: ChainState, tx: Tx, ctx: BlockContext) -> None:
        """Admission's trial run of ``tx`` on a scratch state: raises its typed refusal. What a relay block records
        instead of raising (a charged failure, a redundant no-op) is refused here, for free."""
        self.rules.app.execute_checked(state, tx, ctx)

    # -- RPC ------------------------------------------------------------------------------------

    def method(self, name: str, handler: RpcHandler, *, params: ParamSpec, admin: bool = False) -> None:
        """Register an RPC method; ``params`` declares every parameter it takes (``{}`` for none)."""
        self._methods[name] = RpcMethod(handler, params, admin)

    @property
    def methods(self) -> dict[str, RpcMethod]:
        """The registered RPC methods by name (read-only use: tests and docs)."""
        return dict(self._methods)

    def _register_default_methods(self) -> None:
        m = self.method
        name, key = rpc.string(required=True, max_len=256), rpc.string(required=True, max_len=1024)
        m("status", self._rpc_status, params={})
        m("getHeader", self._rpc_get_header, params=_HEIGHT)
        m("getHeaders", self._rpc_get_headers, params=_RANGE)
        m("getBlock", self._rpc_get_block, params=_HEIGHT)
        m("getBlocks", self._rpc_get_blocks, params=_RANGE)
        m("getBlockByHash", self._rpc_get_block_by_hash, params={"hash": rpc.hex_string(required=True)})
        m("submitTx", self._rpc_submit_tx, params={"tx": rpc.json_object(required=True)})
        m("query", self._rpc_query, params={"key": key, **_HEIGHT, "prove": rpc.boolean()})
        m("proveMany", self._rpc_prove_many, params={"keys": rpc.string_list(required=True, max_len=MAX_PROVE_MANY),
                                                     **_HEIGHT})
        m("queryMany", self._rpc_query_many, params={"keys": rpc.string_list(required=True, max_len=1000),
                                                      **_HEIGHT})
        m("getBalance", self._rpc_get_balance, params={"account": name, "denom": rpc.string(max_len=256),
                                                        **_HEIGHT})
        m("getAccount", self._rpc_get_account, params={"name": name})
        m("getRights", self._rpc_get_rights, params=_HEIGHT)
        m("getRegistry", self._rpc_get_registry, params=_HEIGHT)
        m("getEvents", self._rpc_get_events, params={"from": rpc.uint(required=True), "to": rpc.uint(),
                                                      "type": rpc.string(max_len=256)})
        m("getTxResult", self._rpc_get_tx_result, params={"hash": rpc.hex_string(required=True),
                                                           "lookback": rpc.uint(maximum=100_000)})
        m("admin.addPeer", self._rpc_add_peer, params={"url": rpc.string(required=True, max_len=256)}, admin=True)
        m("admin.setPeers", self._rpc_set_peers, params={"peers": rpc.string_list(required=True, max_len=256)},
          admin=True)
        m("admin.setGossip", self._rpc_set_gossip, params={"enabled": rpc.boolean(required=True)}, admin=True)
        m("admin.setProducing", self._rpc_set_producing, params={"enabled": rpc.boolean(required=True)},
          admin=True)

    async def _rpc_status(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "chain_id": self.rules.chain_id,
            "node": self.config.name,
            "height": self.head.header.height,
            "head": self.head.hash.hex(),
            "weight": str(self.head.weight),
            "final_height": self.rules.final_height(self),
            "genesis": self.genesis_hash.hex(),
            "timestamp_ms": self.head.header.timestamp_ms,
            "mempool": len(self.mempool),
            "peers": list(self.peers),
        }

    async def _rpc_get_header(self, p: dict[str, Any]) -> dict[str, Any]:
        e = self.entry_at(p.get("height"))
        return _header_json(e)

    async def _rpc_get_headers(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        start: int = p["from"]
        end = min(p["to"], start + 500, self.head.header.height)
        return [_header_json(e) for h in range(start, end + 1) if (e := self.canonical(h)) is not None]

    async def _rpc_get_block(self, p: dict[str, Any]) -> dict[str, Any]:
        e = self.entry_at(p.get("height"))
        return _block_json(e)

    async def _rpc_get_block_by_hash(self, p: dict[str, Any]) -> dict[str, Any]:
        h = bytes.fromhex(p["hash"])
        e = self.blocks.get(h)
        if e is None:
            raise NotFoundError("unknown block", got=h.hex())
        return _block_json(e)

    async def _rpc_submit_tx(self, p: dict[str, Any]) -> dict[str, Any]:
        tx = self.rules.decode_tx(p["tx"])
        h = self.submit_tx(tx)
        self.gossip_tx(tx)
        return {"hash": h.hex()}

    async def _rpc_query(self, p: dict[str, Any]) -> dict[str, Any]:
        key: str = p["key"]
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        raw = key.encode()
        value = e.state.get(raw)
        out: dict[str, Any] = {"height": e.header.height, "key": key,
                               "value": value.hex() if value is not None else None,
                               "state_root": e.header.state_root.hex()}
        if p.get("prove"):
            out["proof"] = e.state.prove(raw).encode().hex()
        return out

    async def _rpc_query_many(self, p: dict[str, Any]) -> dict[str, Any]:
        """Values of up to 1,000 keys at one height (no proofs): what a relayer polls its packets with."""
        keys: list[str] = p["keys"]
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        values = {}
        for k in keys:
            v = e.state.get(k.encode())
            values[k] = v.hex() if v is not None else None
        return {"height": e.header.height, "values": values}

    async def _rpc_prove_many(self, p: dict[str, Any]) -> dict[str, Any]:
        """Up to 200 keys at one height with their proofs: ``query`` with ``prove`` for many keys in one call (what a
        relayer proves a batch of packets with). ``{height, state_root, values: {key: hex | null}, proofs: {key:
        hex}}``."""
        keys: list[str] = p["keys"]
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        values: dict[str, str | None] = {}
        proofs: dict[str, str] = {}
        for k in keys:
            if len(k) > 1024:
                raise CodecError("a key is at most 1024 characters", got=len(k))
            raw = k.encode()
            v = e.state.get(raw)
            values[k] = v.hex() if v is not None else None
            proofs[k] = e.state.prove(raw).encode().hex()
        return {"height": e.header.height, "state_root": e.header.state_root.hex(), "values": values,
                "proofs": proofs}

    async def _rpc_get_balance(self, p: dict[str, Any]) -> dict[str, Any]:
        account, denom = p["account"], p.get("denom", "kWh")
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        return {"account": account, "denom": denom, "amount_wh": e.state.balance(account, denom),
                "height": e.header.height}

    async def _rpc_get_rights(self, p: dict[str, Any]) -> dict[str, Any]:
        """Where the charging rights held on this chain are (:func:`chains.common.rights.rights_report`), for the
        demo's and the tests' "each right exists exactly once" check
        (:func:`~chains.common.rights.rights_violations`)."""
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        return {**rights_report(e.state), "height": e.header.height}

    async def _rpc_get_registry(self, p: dict[str, Any]) -> dict[str, Any]:
        """The charging registry (:func:`chains.common.rights.registry_report`): transformers, stations,
        bookings."""
        e = self.entry_at(p.get("height"))
        if e.state is None:
            raise NotFoundError("state at that height was pruned", got=e.header.height)
        return {**registry_report(e.state), "height": e.header.height}

    async def _rpc_get_account(self, p: dict[str, Any]) -> Any:
        assert self.head.state is not None
        acct = self.head.state.get_json(account_path(p["name"]))
        if acct is None:
            raise NotFoundError("unknown account", got=p["name"])
        pending = self.mempool.count_of(p["name"])
        return {**acct, "pending": pending}

    async def _rpc_get_events(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        start: int = p["from"]
        end = min(p.get("to", self.head.header.height), start + 1000, self.head.header.height)
        kind = p.get("type")
        out = []
        for h in range(start, end + 1):
            e = self.canonical(h)
            if e is None:
                continue
            for ev in e.events:
                if kind is None or ev.get("type") == kind:
                    out.append({**ev, "height": h})
        return out

    async def _rpc_get_tx_result(self, p: dict[str, Any]) -> Any:
        want = p["hash"].lower()
        start = max(0, self.head.header.height - p.get("lookback", 200))
        for h in range(self.head.header.height, start - 1, -1):
            e = self.canonical(h)
            if e is None:
                continue
            for r in e.tx_results:
                if r["tx"] == want:
                    return {**r, "height": h}
        return None

    async def _rpc_add_peer(self, p: dict[str, Any]) -> list[str]:
        url: str = p["url"]
        if url not in self.peers:
            self.peers.append(url)
        self._spawn(self._sync_once())
        return self.peers

    async def _rpc_set_peers(self, p: dict[str, Any]) -> list[str]:
        self.peers = list(p["peers"])
        return self.peers

    async def _rpc_set_gossip(self, p: dict[str, Any]) -> bool:
        self._gossip_enabled = p["enabled"]
        return self._gossip_enabled

    async def _rpc_set_producing(self, p: dict[str, Any]) -> bool:
        enabled: bool = p["enabled"]
        self.producing = enabled
        self.log.info("block production %s by admin", "resumed" if enabled else "paused")
        return enabled

    async def dispatch(self, raw: bytes, *, authorized: bool) -> tuple[int, dict[str, Any]]:
        """Answer one JSON-RPC request body: ``(http_status, answer)``. Never raises. Input the JSON-RPC layer
        refuses never reaches a handler; a handler's typed refusal is ``-32000`` with the error in ``data``."""
        rid: str | int | None = None
        method = "?"
        try:
            body = rpc.decode_json(raw, max_bytes=self.config.limits.rpc_body_bytes)
            rid = rpc.request_id(body)
            req = rpc.parse_request(body)
            method = req.method
            entry = self._methods.get(req.method)
            if entry is None:
                raise rpc.MethodNotFoundError(f"unknown method {req.method[:64]!r}", got=req.method[:64])
            if entry.admin and not authorized:
                raise rpc.UnauthorizedError("admin method: bad or missing bearer token")
            params = rpc.validate_params(entry.params, req.params)
            async with self._lock:
                result = await entry.handler(params)
        except rpc.RequestError as exc:
            self.metrics.rpc(method, exc.code)
            return exc.http_status, _rpc_answer(rid, error=rpc.error_object(exc.rpc_code, exc.message, exc.to_dict()))
        except ParkRelayError as exc:
            self.metrics.rpc(method, exc.code)
            return 200, _rpc_answer(rid, error=rpc.error_object(rpc.SERVER_ERROR, exc.message, exc.to_dict()))
        except Exception:  # a bug: keep serving, say so, and leave the traceback for the operator
            self.log.exception("RPC method %s failed", method)
            self.metrics.rpc(method, "internal")
            return 200, _rpc_answer(rid, error=rpc.error_object(rpc.INTERNAL_ERROR, "internal error"))
        self.metrics.rpc(method, None)
        return 200, _rpc_answer(rid, result=result)

    def _authorized(self, request: web.Request) -> bool:
        return secrets.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.admin_token}")

    def _rate_refusal(self, client: str) -> RequestRateLimitedError | None:
        """Pay one token of ``client``'s bucket (``[limits] rpc_requests_per_s``, ``rpc_burst``); the error to answer
        when it is empty."""
        if self._rate.take(client, time.monotonic()):
            return None
        self.metrics.rpc("", RequestRateLimitedError.code)
        return self._rate.refusal(client)

    async def _handle_rpc(self, request: web.Request) -> web.Response:
        refused = self._rate_refusal(request.remote or "")
        if refused is not None:  # refused before its body is read
            err = rpc.error_object(rpc.SERVER_ERROR, refused.message, refused.to_dict())
            return web.json_response(_rpc_answer(None, error=err), status=429, headers={"Retry-After": "1"})
        try:
            raw = await _read_body(request, self.config.limits.rpc_body_bytes, "limits.rpc_body_bytes")
        except rpc.BodyTooLargeError as exc:
            err = rpc.error_object(exc.rpc_code, exc.message, exc.to_dict())
            return web.json_response(_rpc_answer(None, error=err), status=exc.http_status)
        status, answer = await self.dispatch(raw, authorized=self._authorized(request))
        return web.json_response(answer, status=status, dumps=rpc.dumps)

    def _ws_refusal(self, client: str) -> ConnectionLimitError | None:
        """The error to refuse a ``/ws`` upgrade from ``client`` with, when a connection bound is reached."""
        limits = self.config.limits
        if len(self._ws_clients) >= limits.ws_connections:
            return ConnectionLimitError(f"the node holds its limit of WebSocket connections (limits.ws_connections "
                                        f"= {limits.ws_connections})", expected=f"< {limits.ws_connections}",
                                        got=len(self._ws_clients))
        held = self._ws_per_ip.get(client, 0)
        if held >= limits.ws_connections_per_ip:
            return ConnectionLimitError(f"{client} holds its limit of WebSocket connections "
                                        f"(limits.ws_connections_per_ip = {limits.ws_connections_per_ip})",
                                        expected=f"< {limits.ws_connections_per_ip}", got=held)
        return None

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        """Subscriptions and RPC requests over one socket. A message the rate bound refuses is answered with the
        typed error and the socket stays open; :data:`WS_REFUSALS_BEFORE_CLOSE` refused in a row close it (1008)."""
        client = request.remote or ""
        refused = self._ws_refusal(client)
        if refused is not None:
            err = rpc.error_object(rpc.SERVER_ERROR, refused.message, refused.to_dict())
            return web.json_response(_rpc_answer(None, error=err), status=503, headers={"Retry-After": "1"})
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=self.config.limits.rpc_body_bytes)
        self._ws_clients.add(ws)  # counted from before the handshake, which awaits
        self._ws_per_ip[client] = self._ws_per_ip.get(client, 0) + 1
        try:
            await ws.prepare(request)
            authorized = self._authorized(request)
            # tells the subscriber which head it starts from; every later head is pushed as new_head
            await ws.send_json({"type": "subscribed", "height": self.head.header.height,
                                "hash": self.head.hash.hex()})
            refused_in_a_row = 0
            async for msg in ws:
                # a subscriber's message is an RPC request like a POST /rpc body, answered in order
                if msg.type == aiohttp.WSMsgType.TEXT:
                    raw = msg.data.encode("utf-8", "surrogatepass")
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    raw = msg.data
                else:
                    continue
                limited = self._rate_refusal(client)
                if limited is None:
                    refused_in_a_row = 0
                    wait = self._ws_pace.delay(time.monotonic())
                    if wait > 0:  # the node-wide pace (limits.ws_requests_per_s): this socket waits its turn
                        await asyncio.sleep(wait)
                    _, answer = await self.dispatch(raw, authorized=authorized)
                else:
                    refused_in_a_row += 1
                    if refused_in_a_row >= WS_REFUSALS_BEFORE_CLOSE:
                        await ws.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"rate limited")
                        break
                    answer = _rpc_answer(None, error=rpc.error_object(rpc.SERVER_ERROR, limited.message,
                                                                      limited.to_dict()))
                await ws.send_json(answer)
        except ConnectionError:  # the subscriber went away before its answer: nothing to tell it
            pass
        finally:
            self._ws_clients.discard(ws)
            left = self._ws_per_ip.pop(client, 1) - 1
            if left:
                self._ws_per_ip[client] = left
        return ws

    def metrics_text(self) -> bytes:
        """This node's Prometheus metrics (:mod:`chains.common.metrics`), as ``GET /metrics`` serves them."""
        return self.metrics.render()

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics_text(), headers={"Content-Type": "text/plain; version=0.0.4"})

    def _notify_ws(self, msg: dict[str, Any]) -> None:
        for ws in list(self._ws_clients):
            if ws.prepared and not ws.closed:  # a socket still in its handshake is counted, not pushed to yet
                self._spawn(_push(ws, msg))

    # -- p2p --------------------------------------------------------------------------------------

    async def _p2p_body(self, request: web.Request, spec: ParamSpec) -> dict[str, Any]:
        """A P2P route's body, decoded strictly and checked against ``spec``; raises a RequestError."""
        limit = self.p2p_body_bytes
        body = rpc.decode_body(await _read_body(request, limit, "a P2P body"), max_bytes=limit)
        if not isinstance(body, dict):
            raise rpc.InvalidRequestError("a P2P message is a JSON object", got=type(body).__name__)
        return rpc.validate_params(spec, body)

    async def _handle_p2p_block(self, request: web.Request) -> web.Response:
        if self._gossip_enabled and self._holds_hinted_block(request):
            return web.json_response({"ok": True})  # known: its body is not read (a relay block is megabytes)
        try:
            body = await self._p2p_body(request, P2P_BLOCK)
            try:
                header = self.rules.decode_header(bytes.fromhex(body["header"]))
                if header.hash() in self.blocks:  # every validator gossips each decided block: most arrive known
                    return web.json_response({"ok": True})
                txs = [self.rules.decode_tx(t) for t in body.get("txs", [])]
            except (ValueError, TypeError, KeyError) as exc:  # a decoder that broke its CodecError contract
                raise CodecError(f"malformed block: {exc}") from exc
        except ProtocolError as exc:
            return _p2p_refused(exc)
        origin = body.get("origin", "")
        if origin not in self.peers:
            # anyone can POST a block (it is checked by its consensus proof), but the node fetches missing
            # ancestors only from its configured peers: an unauthenticated caller's URL would have the node send up
            # to 2000 requests wherever it names (docs/security.md); the sync loop pulls from the peers instead
            origin = ""
        if not self._gossip_enabled:
            return web.json_response({"ok": False, "error": rpc.error_object(rpc.SERVER_ERROR, "gossip disabled")})
        await self._receive_block(header, txs, origin)
        return web.json_response({"ok": True})

    def _holds_hinted_block(self, request: web.Request) -> bool:
        """Whether the sender's :data:`BLOCK_HASH_HEADER` names a block this node holds. The hint is the sender's word
        only, and it only ever skips a body: a wrong one costs the sender its own gossip, never a block this node
        lacks (an unknown or malformed hint reads the body as before)."""
        hint = request.headers.get(BLOCK_HASH_HEADER, "")
        if len(hint) != 64:
            return False
        try:
            return bytes.fromhex(hint) in self.blocks
        except ValueError:
            return False

    async def _receive_block(self, header: Any, txs: Sequence[Tx], origin: str) -> None:
        async with self._lock:
            if header.hash() in self.blocks:
                return
            try:
                self.validate_and_add(header, txs, _now_ms())
                self._spawn(self._gossip_block(header, txs))
                return
            except MissingParentError:
                pass
            except ProtocolError as exc:
                self.log.warning("rejected block %d from %s: %s", header.height, origin or "peer", exc)
                return
        if origin:
            await self._fetch_ancestors(origin, header, txs)

    async def _fetch_ancestors(self, origin: str, header: Any, txs: Sequence[Tx]) -> None:
        chain: list[tuple[Any, Sequence[Tx]]] = [(header, txs)]
        want = header.parent_hash
        for _ in range(2000):
            if want in self.blocks:
                break
            try:
                blk = await self._call(origin, "getBlockByHash", {"hash": want.hex()})
                # the origin is whoever posted the block: its answer is hostile input like the post itself
                hdr = self.rules.decode_header(bytes.fromhex(blk["header"]))
                chain.append((hdr, [self.rules.decode_tx(t) for t in blk["txs"]]))
            except (aiohttp.ClientError, TimeoutError, RpcError):
                return
            except (ProtocolError, KeyError, IndexError, TypeError, ValueError) as exc:
                self.log.warning("origin %s answered getBlockByHash with a malformed block: %s", origin, exc)
                return
            want = hdr.parent_hash
        else:
            return
        async with self._lock:
            for hdr, ts in reversed(chain):
                try:
                    self.validate_and_add(hdr, ts, _now_ms())
                except ProtocolError as exc:
                    self.log.warning("rejected fetched block %d: %s", hdr.height, exc)
                    return

    async def _handle_p2p_tx(self, request: web.Request) -> web.Response:
        try:
            body = await self._p2p_body(request, P2P_TX)
            tx = self.rules.decode_tx(body["tx"])
        except ProtocolError as exc:
            return _p2p_refused(exc)
        try:
            async with self._lock:
                self.submit_tx(tx)
        except ProtocolError as exc:  # a well-formed transaction the head state refuses: HTTP 200
            return web.json_response(p2p_refusal(exc)[1])
        return web.json_response({"ok": True})

    async def _gossip_block(self, header: Any, txs: Sequence[Tx]) -> None:
        await self._gossip("/p2p/block", {"header": header.encode().hex(), "txs": [t.to_json() for t in txs],
                                          "origin": self.url}, {BLOCK_HASH_HEADER: header.hash().hex()})

    def gossip_tx(self, tx: Tx) -> None:
        """Queue ``tx`` for every peer. One sender per peer posts the queued transactions one after another, in the
        order this node admitted them, so an account's run of nonces reaches each peer in order: a peer's mempool
        refuses a nonce past a gap, and a post per transaction, each in its own task, arrived out of order often
        enough that under load only the node a relayer submits to held its transactions (3 of 4 relay blocks were
        empty in a 10,000-packet backlog)."""
        if not self._gossip_enabled:
            return
        body = rpc.dumps({"tx": tx.to_json()}).encode()  # once for every peer
        for peer in self.peers:
            queue = self._tx_outbox.get(peer)
            if queue is None:
                queue = self._tx_outbox[peer] = asyncio.Queue(TX_GOSSIP_QUEUE)
                self._spawn(self._tx_sender(peer, queue))
            try:
                queue.put_nowait(body)
            except asyncio.QueueFull:
                self.tx_gossip_dropped += 1
                if self.tx_gossip_dropped % 1000 == 1:
                    self.log.warning("tx gossip to %s is %d behind: not gossiping new transactions to it (%d so far)",
                                     peer, TX_GOSSIP_QUEUE, self.tx_gossip_dropped)

    async def _tx_sender(self, peer: str, queue: asyncio.Queue[bytes]) -> None:
        """Post ``queue``'s transactions to ``peer`` in order, each once (a peer that misses one gets it in a block)."""
        while True:
            body = await queue.get()
            try:
                if self._gossip_enabled and self._session is not None and peer in self.peers:
                    async with self._session.post(peer + "/p2p/tx", data=body, headers=JSON_HEADERS,
                                                  timeout=aiohttp.ClientTimeout(total=3)) as r:
                        await r.read()
            except (aiohttp.ClientError, TimeoutError):
                pass  # a peer that missed it gets it in a block
            finally:
                queue.task_done()

    async def _gossip(self, path: str, body: dict[str, Any], hint: dict[str, str] | None = None) -> None:
        if not self._gossip_enabled or self._session is None:
            return
        data = rpc.dumps(body).encode()  # once for every peer (a relay block is megabytes of JSON)
        headers = JSON_HEADERS if hint is None else {**JSON_HEADERS, **hint}

        async def one(peer: str) -> None:
            try:
                assert self._session is not None
                async with self._session.post(peer + path, data=data, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=3)) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError):
                pass  # the periodic sync repairs what gossip missed

        await asyncio.gather(*(one(p) for p in self.peers))

    async def _call(self, peer: str, method: str, params: dict[str, Any]) -> Any:
        assert self._session is not None
        async with self._session.post(peer + "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                           "params": params},
                                      timeout=aiohttp.ClientTimeout(total=5)) as r:
            try:
                body = await r.json()
            except ValueError as exc:  # a peer's answer is hostile input: not JSON is an RpcError, not a crash
                raise RpcError(f"answer is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RpcError(f"answer is not a JSON-RPC object: {type(body).__name__}")
        if "error" in body:
            err = body["error"]
            raise RpcError(str(err.get("message", "rpc error"))[:500] if isinstance(err, dict) else "rpc error")
        if "result" not in body:
            raise RpcError("answer without a result")
        return body["result"]

    async def _sync_once(self) -> None:
        if not self._gossip_enabled:
            return
        for peer in list(self.peers):
            try:
                st = await self._call(peer, "status", {})
            except (aiohttp.ClientError, TimeoutError, RpcError, ValueError):
                continue
            if not _peer_head_wins(int(st["weight"]), str(st["head"]), self.head):
                continue
            start = self.head.header.height + 1
            # walk back to a common ancestor when the peer is on another fork
            try:
                blk = await self._call(peer, "getBlock", {"height": int(st["height"])})
            except (aiohttp.ClientError, TimeoutError, RpcError):
                continue
            hdr = self.rules.decode_header(bytes.fromhex(blk["header"]))
            if hdr.parent_hash in self.blocks or start > hdr.height:
                await self._receive_block(hdr, [self.rules.decode_tx(t) for t in blk["txs"]], peer)
                continue
            # pull the gap in ascending order, then the tip
            while start <= hdr.height:
                try:
                    blocks = await self._call(peer, "getBlocks", {"from": start, "to": hdr.height})
                except (aiohttp.ClientError, TimeoutError, RpcError):
                    break
                if not blocks:
                    break
                for b in blocks:
                    h2 = self.rules.decode_header(bytes.fromhex(b["header"]))
                    await self._receive_block(h2, [self.rules.decode_tx(t) for t in b["txs"]], peer)
                start += len(blocks)

    async def _rpc_get_blocks(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Up to 200 canonical blocks from ``from``, and no more once they hold :data:`GET_BLOCKS_BYTES` of
        transactions (always the first): a peer asking for 200 full relay blocks gets an answer it can read."""
        start: int = p["from"]
        end = min(p["to"], start + 200, self.head.header.height)
        out: list[dict[str, Any]] = []
        size = 0
        for h in range(start, end + 1):
            e = self.canonical(h)
            if e is None:
                continue
            body = e.body()
            size += sum(t.size() for t in body[0])
            if out and size > GET_BLOCKS_BYTES:
                break
            out.append(_block_json(e, body))
        return out

    async def _sync_loop(self) -> None:
        """Pull what gossip missed. A peer's bad data is logged and skipped; a bug stops the node."""
        while True:
            await asyncio.sleep(self.config.sync_interval_s)
            try:
                await self._sync_once()
            except (ProtocolError, KeyError, ValueError, TypeError) as exc:
                self.log.warning("sync step failed: %s", exc)
            except Exception:
                self.log.exception("sync loop failed; stopping the node")
                self.failed.set()
                return

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)  # type: ignore[arg-type]
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)  # type: ignore[arg-type]

    async def start(self) -> None:
        # each route bounds its own body (/rpc: limits.rpc_body_bytes, /p2p/*: p2p_body_bytes)
        app = web.Application(client_max_size=max(self.config.limits.rpc_body_bytes, self.p2p_body_bytes))
        app.router.add_post("/rpc", self._handle_rpc)
        app.router.add_get("/ws", self._handle_ws)
        app.router.add_post("/p2p/block", self._handle_p2p_block)
        app.router.add_post("/p2p/tx", self._handle_p2p_tx)
        app.router.add_get("/metrics", self._handle_metrics)
        self.rules.attach(self, app)
        self._session = aiohttp.ClientSession()
        # a body refused before it was read (413) is drained for at most 1 s, not aiohttp's 10 s: a sender that stopped
        # on the answer held a connection, and the node's shutdown, that long
        self._runner = web.AppRunner(app, access_log=None, lingering_time=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        storage.atomic_write(self.config.data_dir / f"{self.config.name}.port", str(self.port))
        self.log.info("%s node %s listening on %s (height %d)", self.rules.chain_id, self.config.name, self.url,
                      self.head.header.height)
        self._spawn(self._sync_loop())
        self._spawn(self._run_producer())

    async def _run_producer(self) -> None:
        try:
            await self.rules.run_producer(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("block producer failed; stopping the node")
            self.failed.set()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for ws in list(self._ws_clients):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.db.close()


def _migrate_blocks(db: sqlite3.Connection) -> None:
    """The node database's ``blocks`` table (sqlite-utils); a database written before block bodies were stored gains
    the ``body`` column (events and per-transaction results as JSON; filled in when the node replays it), and one
    written before ``blocks_seq`` gains that index. Every stored block takes the next ``seq`` (``MAX(seq) + 1``):
    without the index that read every row, through each one's transactions (``seq`` is stored after them), so
    storing a block cost time in proportion to the chain (43 ms at 2,000 blocks of 20 KB, 0.8 ms with it)."""
    table = storage.schema_db(db)["blocks"]
    table.create({"hash": bytes, "height": int, "parent": bytes, "header": bytes, "txs": str,  # type: ignore[union-attr]
                  "seq": int, "body": str}, pk="hash", if_not_exists=True)
    if "body" not in table.columns_dict:
        table.add_column("body", str)  # type: ignore[union-attr]
    table.create_index(["seq"], index_name="blocks_seq", if_not_exists=True)  # type: ignore[union-attr]


def _body_json(e: BlockEntry) -> str:
    return rpc.dumps({"events": e.events, "results": e.tx_results})


JSON_HEADERS = {"Content-Type": "application/json"}
"""Headers of a POST whose body is JSON encoded beforehand (once for many peers)."""
BLOCK_HASH_HEADER = "X-Parkrelay-Block-Hash"
"""The hex hash of the block a ``POST /p2p/block`` carries: a peer that holds it answers without reading the body
(every relay validator gossips each decided block, so most arrive known; each was megabytes decoded for nothing)."""


class MissingParentError(ProtocolError):
    """A block whose parent this node does not have yet (fetch it, then retry)."""

    code = "block.missing_parent"


class NotFoundError(ProtocolError):
    """Asked for something the node does not have."""

    code = "rpc.not_found"


class RpcError(Exception):
    """A peer answered with a JSON-RPC error."""


def _heavier(a: BlockEntry, b: BlockEntry) -> bool:
    """Fork choice: greater weight wins; on equal weight the lower hash, so every node picks the same."""
    return a.weight > b.weight or (a.weight == b.weight and a.hash < b.hash)


def _peer_head_wins(weight: int, head_hex: str, own: BlockEntry) -> bool:
    """Whether a peer's reported head beats ours under :func:`_heavier`. A tie goes to the lower hash here too:
    two branches of equal weight would otherwise never converge while production is paused."""
    if weight != own.weight:
        return weight > own.weight
    try:
        return bytes.fromhex(head_hex) < own.hash
    except ValueError:
        return False


def _stale(exc: ProtocolError) -> bool:
    return exc.code in {"packet.replay", "auth.denied", "signature.invalid", "codec.invalid", "packet.timeout"}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _header_json(e: BlockEntry) -> dict[str, Any]:
    h = e.header
    return {"height": h.height, "hash": e.hash.hex(), "parent_hash": h.parent_hash.hex(),
            "timestamp_ms": h.timestamp_ms, "state_root": h.state_root.hex(), "tx_root": h.tx_root.hex(),
            "header": h.encode().hex(), "weight": str(e.weight)}


def _block_json(e: BlockEntry, body: Body | None = None) -> dict[str, Any]:
    """A block as RPC answers it; ``body``: its body if the caller read it already (an evicted one is read from
    SQLite each time it is asked for)."""
    txs, events, results = body if body is not None else e.body()
    return {**_header_json(e), "txs": [t.to_json() for t in txs], "events": events, "tx_results": results}


async def _push(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
    """Push ``msg`` to a subscriber; one that went away meanwhile (its transport closing or reset) is skipped. The
    push runs as a task nobody awaits, so an exception here was logged as "Task exception was never retrieved"
    with a traceback: any client closing its socket at the wrong moment put one in the node's log."""
    with contextlib.suppress(ConnectionError):
        await ws.send_json(msg)


def _rpc_answer(rid: Any, *, result: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": rid, "error": error}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def _read_body(request: web.Request, max_bytes: int, bound: str) -> bytes:
    """The request body, or :class:`~chains.common.jsonrpc.BodyTooLargeError` naming ``bound`` past ``max_bytes``
    (a declared length past it is refused before anything is read)."""
    def too_large(got: int | None) -> rpc.BodyTooLargeError:
        return rpc.BodyTooLargeError(f"body too large ({bound} = {max_bytes})", expected=f"<= {max_bytes} bytes",
                                     got=got)

    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(request.content_length)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large(None) from exc
    if len(raw) > max_bytes:
        raise too_large(len(raw))
    return raw


def p2p_refusal(exc: ProtocolError) -> tuple[int, dict[str, Any]]:
    """``(http_status, body)`` for a P2P message refused as malformed: ``{"ok": false, "error": <JSON-RPC error
    object>}`` with HTTP 400 (413 for an oversized body)."""
    code = exc.rpc_code if isinstance(exc, rpc.RequestError) else rpc.SERVER_ERROR
    status = 413 if isinstance(exc, rpc.BodyTooLargeError) else 400
    return status, {"ok": False, "error": rpc.error_object(code, exc.message, exc.to_dict())}


def _p2p_refused(exc: ProtocolError) -> web.Response:
    status, body = p2p_refusal(exc)
    return web.json_response(body, status=status, dumps=rpc.dumps)
