"""The relayer service: ``parkrelay relayer start --config FILE --name NAME``.

An untrusted, permissionless carrier of packets through the four phases (SPEC.md §1, §6, §10). It holds
no authority: every message it delivers is checked by a light client, a relay certificate or a proof,
so its only duties are liveness and economy.

How it works — reconcile, don't remember. The relayer runs independent tasks, each a step loop
(:mod:`relay.relayer.task`) with explicit outcomes, so a park that is down or misbehaving stalls only its own work:

* one **scanner per park** reads the park's final blocks for ``send_packet`` and ``write_ack`` events from
  a cursor kept in SQLite (packets sent while the relayer was down are found on start). An event it cannot
  decode is logged with its height, counted and skipped; the cursor moves on.
* one **worker per path** (source park → target park) reads, with one batched query per chain, the records
  of the path's packets (verified? received? outcome certified? settled?), asks the pure
  :func:`relay.relayer.policy.next_action` what each needs, and submits only that: ``packet.verify_batch`` (phase 2,
  up to 100 per source header), ``bridge.recv`` (phase 3), ``packet.confirm_ack`` / ``packet.confirm_timeout``
  (phase 4, relay half), ``bridge.settle`` (phase 4, source half); on a target that records timeouts itself
  (``ChainLink.timeout_receipt``: Fabric) first ``bridge.timeout_receipt``, whose attested sentinel is then the
  timeout's proof (SPEC §8.7, §10.1).
* one **heartbeat per park** keeps the relay's light client of the park fresh while its lanes are idle
  (``[relayers] heartbeat_s``), so a client never waits stale for the next packet (SPEC §10.5); on a park that
  cuts blocks only for transactions (``ChainLink.keepalive_after_s``: Fabric) it makes one when the channel has
  been quiet that long.

Light-client updates follow forks. Before feeding headers the relayer asks the relay chain which of the park's
current headers its client holds (``getClientHolds``) and feeds the park's branch from the last header both
share: after a reorg at or below the client's newest header the client is shown the new branch (it keeps a
tree of pending headers), and the switch is logged. A fork below the client's final header is beyond what
the client can follow: the park's branch is submitted anyway, as misbehaviour evidence that freezes the
client, and logged as an error, never a silent stall.

Because the next action is always derived from chain state, a restarted relayer, or two relayers racing,
never deliver a packet twice: a redundant submission is refused at admission (``packet.replay``), which
counts as done. Refusals are acted on by their disposition (:class:`protocol.errors.Disposition`), which
survives the JSON-RPC wire: retried within a second (full mempool), after the chain moves (not final yet),
parked and reported (invalid), or the path stopped (fatal); I/O errors back off and reconnect only the side
that failed.

Taking turns where duplicates cost. The relay chain and the Python parks refuse a duplicate at
admission, so racing there is free. On Ethereum two relayers that estimate the same ``recvPacket`` in
the same instant both send it, and the second reverts in the block, paying gas for nothing. For actions
on such chains the deployment's relayers take turns: rendezvous hashing of ``(packet, action, relayer)``
ranks them, the first acts at once, the n-th only once the action has been due for n ×
``takeover_after_s`` (a relayer that is down is covered by the next in line). On Fabric even different
packets' transactions conflict (MVCC on the escrow total, a voucher's supply, a receiver's balance: all but
one conflicting transaction of a block are invalidated), so there the order is per chain (``one_writer``):
one relayer writes, the others cover packets it leaves due.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapters.common.roles import ProvenValue, SourceSide, TargetSide
from adapters.common.rpc import JsonRpcClient
from chains.common import jsonrpc, storage
from chains.common.heap import trim_heap
from chains.common.tx import MAX_TX_BYTES
from protocol.codec import decode_outcome, decode_packet
from protocol.errors import Disposition, ProtocolError
from protocol.paths import ack_path, commitment_path, lane_config_path, outcome_path, receipt_path, verified_path
from protocol.types import Packet, PacketOutcome
from relay.chain.state_machine.clients import MAX_HEADERS as MAX_HEADERS_PER_UPDATE
from relay.relayer.client_updates import ClientUpdates
from relay.relayer.policy import (
    PARK_AFTER_REJECTION_S,
    RESUBMIT_AFTER_S,
    RETRY_SOON_S,
    Action,
    MinFees,
    PacketRecords,
    next_action,
    pays_enough,
    retry_delay_s,
)
from relay.relayer.relay_sets import RelaySetSync
from relay.relayer.task import Outcome, TaskHealth, run_step_loop

__all__ = [
    "MAX_HEADERS_PER_UPDATE",
    "PARK_AFTER_REJECTION_S",
    "RELAY_INFLIGHT_PACKETS",
    "RESUBMIT_AFTER_S",
    "RETRY_SOON_S",
    "ChainLink",
    "Relayer",
    "relay_inflight_packets",
]

log = logging.getLogger("parkrelay.relayer")

VERIFY_BATCH = 100
"""Most packets of one ``packet.verify_batch`` / ``packet.confirm_ack_batch`` and of one ``proveMany`` call."""
CERT_BATCH = 16
"""Most packets of one ``bridge.recv_batch`` / ``bridge.settle_batch``; fewer when they would not fit in a park
transaction (:data:`PARK_TX_ARGS_BUDGET`)."""
PARK_TX_ARGS_BUDGET = MAX_TX_BYTES - 4 * 1024
"""Bytes a batch's arguments may take of a park transaction (``chains.common.tx.MAX_TX_BYTES``, 64 KiB), the rest
left to the transaction's own fields. A packet with its certified record and proof takes 2-3 KiB, more as the relay's
state grows (deeper proofs) and with relay fees (payees in the outcome record, the relayer in the ack): a batch over
it is split in halves until it fits, instead of being refused as too large."""
RELAY_INFLIGHT_PACKETS = 600
"""Most packets a relayer keeps submitted to the relay chain (verify, confirm, timeout) and not yet seen there, per MiB
of a relay block's ``block.max_bytes`` (:func:`relay_inflight_packets`): about two relay blocks of them. More would
only queue behind the relayer's own nonces, and so would every client update after them: with 10,000 packets' verify
batches submitted at once, the relay's client of the target got no header for as long as they took, and not one ack
was confirmed until every packet was verified. The oldest work goes first: confirmations, then timeouts, then
verifications."""


def relay_inflight_packets(relay_max_block_bytes: int) -> int:
    """:data:`RELAY_INFLIGHT_PACKETS` for relay blocks of ``relay_max_block_bytes`` (genesis ``block.max_bytes``)."""
    return max(RELAY_INFLIGHT_PACKETS, RELAY_INFLIGHT_PACKETS * relay_max_block_bytes // (1024 * 1024))


PROGRESS_LOG_S = 30.0
TRIM_EVERY_S = 30.0
"""How often a busy relayer returns its heap's free memory to the system (:mod:`chains.common.heap`)."""
"""How often each path logs its progress while it has packets in flight."""


@dataclass
class ChainLink:
    """One chain as the relayer sees it: a source side, a target side signing as the relayer."""

    chain_id: str
    kind: str
    source: SourceSide
    target: TargetSide
    client: JsonRpcClient | None
    """The chain's parkrelay JSON-RPC (relay chain, Python parks): its ``/ws`` pushes new heads. None for
    chains spoken to through another client (Ethereum): the loop polls them."""
    duplicates_reach_blocks: bool = False
    """Whether a redundant submission gets into a block and fails there at a cost (Ethereum; Fabric, where it is
    invalidated by MVCC) instead of being refused at admission: the relayers then take turns for actions on this
    chain."""
    one_writer: bool = False
    """Transactions of *different* packets conflict there when two relayers send them at once (Fabric: the escrow
    total, a voucher's supply and an account's balance are keys many packets read and write, and MVCC invalidates all
    but one conflicting transaction of a block): then one relayer, first in a per-chain order, writes there, and the
    n-th acts on a packet only once that packet's action has been due for n × ``takeover_after_s`` (only with
    ``duplicates_reach_blocks``). A relayer keeps its own transactions apart (its adapter's pipeline)."""
    timeout_receipt: bytes | None = None
    """The chain kind's timeout receipt (:attr:`chains.common.kind.ChainKind.timeout_receipt`): as a target it must
    write it (``bridge.timeout_receipt``) before a timeout is proven, and the value at a receipt path tells a timeout
    from an acknowledgement. None: timeouts are proven by block time and absence."""
    batches: bool = False
    """The chain's bridge takes ``bridge.recv_batch`` / ``bridge.settle_batch`` (protocol SPEC §7.10): phases 3 and 4
    send up to :data:`CERT_BATCH` packets a transaction under one certificate batch, instead of one each."""
    keepalive_after_s: float | None = None
    """Make a block (``bridge.ping``) when the relay's client of the chain has been shown none for this long
    (:meth:`chains.common.kind.ChainKind.keepalive_after_s`, Fabric); None: the chain makes blocks on its own."""
    payee: str | None = None
    """The relayer's account on this chain its relay fees go to (protocol SPEC §6.10): registered on the relay chain
    with ``account.set_payee`` at start. None: it earns nothing here."""


@dataclass
class Tracked:
    """A packet the relayer carries, and what it has seen of it."""

    packet: Packet
    raw: bytes
    commit_height: int
    ack: bytes | None = None
    done: bool = False
    seen_s: float = field(default_factory=time.monotonic)
    """When this relayer first saw the packet (monotonic s): the age of the oldest pending packet."""
    fees: dict[str, int] | None = None
    """The relay fees its sender escrowed on the source (``{verify, execute, confirm}``; None: none)."""
    ack_height: int | None = None
    """The target height of the ``write_ack`` event this relayer scanned (None: not seen, or read from state)."""

    @property
    def key(self) -> str:
        p = self.packet
        return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"

    @property
    def lane_key(self) -> str:
        p = self.packet
        return f"{p.src_chain}->{p.dst_chain}/{p.lane}"


@dataclass
class RelayerStats:
    """Counters exposed in logs and status."""

    submitted: dict[str, int] = field(default_factory=dict)
    redundant: int = 0
    rejected: int = 0
    settled: int = 0
    undecodable_events: int = 0
    branch_switches: int = 0
    misbehaviour_submitted: int = 0
    clients_frozen: int = 0
    """Times this relayer saw a park's client frozen (SPEC §8.8)."""
    clients_recovered: int = 0
    """Times it saw a frozen client replaced by a governance recovery."""
    unpaid: int = 0
    """Steps this relayer left to others because the packet's fee for them was below its ``min_fees``."""
    dropped: int = 0
    """This relayer's admitted transactions a node dropped from its mempool without a block (a nonce gap after one
    left out of a block), offered again at once (:meth:`Relayer._reclaim_dropped`)."""
    proof_heights_unavailable: int = 0
    """Times a park could not prove at the relay client's final height (its state there pruned): the relayer waits
    for the client updates it keeps feeding to bring that height into the park's window, instead of retrying it."""

    def count(self, action: str) -> None:
        self.submitted[action] = self.submitted.get(action, 0) + 1


def proof_height(st: Mapping[str, Any]) -> int:
    """The height to prove at, from a client status :meth:`Relayer._update_client` returned: the final height a proof
    executed now is judged by (``final_height_now``: a PoC client's window may have passed since its last update),
    or the one the relayer's update in flight makes final (``proof_height``), whichever is higher."""
    return max(int(st.get("proof_height", st["final_height"])), int(st.get("final_height_now", -1)))


SENT_KEPT = 10_000
"""Most admitted transactions per chain a relayer remembers until it sees them in a block or dropped."""


@dataclass
class LaneProgress:
    """One lane's progress as this relayer sees it: packets by the action they wait for, the oldest one's
    age, and the last refusal or error on the lane."""

    pending: dict[str, int] = field(default_factory=dict)
    oldest_pending_s: float = 0.0
    oldest_packet: str | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pending": dict(self.pending), "oldest_pending_s": round(self.oldest_pending_s, 1),
                "oldest_packet": self.oldest_packet, "last_error": self.last_error}


class Relayer(ClientUpdates):
    """Carries packets between the parks of a deployment through the relay chain."""

    def __init__(self, name: str, relay: ChainLink, parks: dict[str, ChainLink], db_path: Path,
                 poll_s: float = 0.5, *, peers: tuple[str, ...] = (), takeover_after_s: float = 4.0,
                 heartbeat_s: float | None = 5.0, timeout_unverified: bool = True, pipeline_proofs: bool = True,
                 clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] | None = None,
                 min_fees: Mapping[str, MinFees] | None = None, relay_inflight: int = RELAY_INFLIGHT_PACKETS) -> None:
        self.name = name
        self.relay = relay
        self.parks = parks
        self.poll_s = poll_s
        self.peers = tuple(sorted({*peers, name}))
        """Every relayer of the deployment (this one included): they take turns where duplicates cost."""
        self.takeover_after_s = takeover_after_s
        self.heartbeat_s = heartbeat_s
        """Refresh the relay's client of each park at least this often (None: only when a packet needs it)."""
        self.timeout_unverified = timeout_unverified
        """Time out packets the relay never verified once their timeout passed (the relay supports it)."""
        self.pipeline_proofs = pipeline_proofs
        """Submit proofs right behind the client update that makes their height final (``_update_client``)."""
        self.relay_inflight = relay_inflight
        """Most packets kept submitted to the relay chain and not yet seen there (:func:`relay_inflight_packets`)."""
        self._fit_size: dict[tuple[str, str], int] = {}
        """(chain, op) -> packets per batch that fit a park transaction, from the bytes per packet last measured."""
        self.min_fees = dict(min_fees or {})
        """Per source park, the least fee this relayer takes each step of a packet for (SPEC §6.10; absent: any)."""
        self.payees = {cid: link.payee for cid, link in parks.items() if link.payee}
        """Per park, the account there this relayer's fees go to."""
        self._payees_synced = not self.payees
        self._clock = clock
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._due_since: dict[tuple[str, str], float] = {}
        self.stats = RelayerStats()
        self.health: dict[str, TaskHealth] = {}
        self.progress: dict[str, LaneProgress] = {}
        self.log = logging.LoggerAdapter(log, {"chain": relay.chain_id, "node": name})
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        self.fault: storage.StorageFault | None = None
        """The storage fault that stopped this relayer (its CLI then exits with ``storage.EXIT_STORAGE_FAULT``)."""
        self.db = storage.connect(db_path)
        try:
            _migrate(self.db)
        except sqlite3.Error as exc:
            if (kind := storage.fault_of(exc)) is None:
                raise
            raise storage.StorageFault(db_path, kind, str(exc)) from exc
        self.packets: dict[str, Tracked] = {}
        for key, raw, h, ack, done, fees in self.db.execute(
                "SELECT key, packet, commit_height, ack, done, fees FROM packets"):
            if not done:
                pkt_raw = bytes.fromhex(raw)
                self.packets[key] = Tracked(decode_packet(pkt_raw), pkt_raw, h,
                                            bytes.fromhex(ack) if ack else None, seen_s=clock(),
                                            fees=json.loads(fees) if fees else None)
        self.earned: dict[tuple[str, str, str], int] = {
            (chain, denom, step): int(total) for chain, denom, step, total in self.db.execute(
                "SELECT chain, denom, step, SUM(amount) FROM earned GROUP BY chain, denom, step")}
        """What this relayer earned, by (paying park, denom, step), from the parks' ``fee_paid`` events."""
        self._inflight: dict[tuple[str, str], float] = {}
        self._batch: list[tuple[Callable[[sqlite3.Connection], Any], Callable[[], None] | None]] | None = None
        """Writes held for one transaction (:meth:`_one_transaction`), each with what follows it in memory."""
        self._last_trim = 0.0
        self._reported: set[str] = set()
        """Evidence records this relayer delivered to their park (or that the park refused for good)."""
        self._lane_updates: set[tuple[str, str, str]] = set()
        """Lanes whose certified config this relayer still has to deliver to the lane's source park."""
        self._last_disposition = Disposition.DONE
        self._last_error_code: str | None = None
        self._last_update: dict[str, float] = {}
        self._update_locks: dict[str, asyncio.Lock] = {}
        self._sent: dict[str, dict[int, list[tuple[str, str]]]] = {}
        """Per chain signed with a nonce, this relayer's admitted transactions not yet seen in a block: nonce -> the
        in-flight waits they hold (:meth:`_reclaim_dropped`)."""
        self._heads: dict[str, int] = {}
        """Per chain, the newest head height its node pushed (``_watch_heads``)."""
        self._fed: dict[str, int] = {}
        """Per park, the highest height this relayer's client updates reached (submitted, or found held)."""
        self._last_progress_log: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._wakes: dict[str, list[asyncio.Event]] = {}
        self.relay_sets = RelaySetSync(relay.client, self.log) if relay.client is not None else None
        """Relay validator-set rotations, delivered to every park before any certificate signed by the new set."""
        self.observer: Any = None
        """Told of accepted submissions, refusals and settled packets
        (:class:`relay.ops.api.metrics.RelayerMetrics`)."""

    # -- the tasks --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def clear_backlog(self) -> int:
        """Act on every packet in flight now (the operator API's ``POST /api/v1/backlog/clear``): forget the waits
        after earlier submissions and refusals and wake every task. Returns how many packets are in flight."""
        self._inflight.clear()
        for evs in self._wakes.values():
            for ev in evs:
                ev.set()
        return len(self.packets)

    def paths(self) -> list[tuple[str, str]]:
        """Every ordered pair of parks: one worker each."""
        return [(a, b) for a in self.parks for b in self.parks if a != b]

    def _wake_on(self, *chains: str) -> asyncio.Event:
        ev = asyncio.Event()
        for c in chains:
            self._wakes.setdefault(c, []).append(ev)
        return ev

    async def run(self) -> None:
        """Run every task until stopped: the tasks step on each new head of the chains they read (pushed over
        WebSocket; polling every ``poll_s`` where there is none)."""
        self.log.info("relayer %s started: %d parks, %d paths, %d packets in flight from its database", self.name,
                      len(self.parks), len(self.paths()), len(self.packets))
        relay_id = self.relay.chain_id
        tasks: list[tuple[str, Any, asyncio.Event | None]] = []
        tasks.append((f"scan/{relay_id}", self._scan_relay_step, self._wake_on(relay_id)))
        for park in self.parks.values():
            tasks.append((f"scan/{park.chain_id}", self._scan_step_of(park), self._wake_on(park.chain_id)))
            if self.heartbeat_s is not None:
                tasks.append((f"heartbeat/{park.chain_id}", self._heartbeat_step_of(park),
                              self._wake_on(park.chain_id)))
            if self.relay_sets is not None:
                tasks.append((f"relayset/{park.chain_id}", self._relay_set_step_of(park), self._wake_on(relay_id)))
        for src, dst in self.paths():
            tasks.append((f"path/{src}->{dst}", self._path_step_of(src, dst), self._wake_on(src, dst, relay_id)))
        async with aiohttp.ClientSession() as session:
            watchers = [asyncio.create_task(self._watch_heads(session, link))
                        for link in [self.relay, *self.parks.values()] if link.client is not None]
            running = []
            for name, step, wake in tasks:
                self.health[name] = TaskHealth()
                running.append(asyncio.create_task(run_step_loop(
                    name, step, stop=self._stop, wake=wake, log=self.log, poll_s=self.poll_s,
                    health=self.health[name])))
            try:
                await self._stop.wait()
            finally:
                for w in watchers:
                    w.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                await asyncio.gather(*watchers, return_exceptions=True)
        self.db.close()
        self.log.info("relayer %s stopped: %s", self.name, self.summary())

    async def _watch_heads(self, session: aiohttp.ClientSession, link: ChainLink) -> None:
        """Wake the tasks that read ``link``'s chain on each ``new_head`` it pushes; reconnect after a second if
        it drops (the tasks poll meanwhile)."""
        assert link.client is not None
        woken = self._wakes.get(link.chain_id, [])
        if link.chain_id == self.relay.chain_id:
            woken = [ev for evs in self._wakes.values() for ev in evs]
        while not self._stop.is_set():
            try:
                async with session.ws_connect(link.client.url + "/ws", heartbeat=20) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT and '"new_head"' in msg.data:
                            self._note_head(link.chain_id, msg.data)
                            for ev in woken:
                                ev.set()
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.log.debug("head stream of %s down; its tasks poll", link.chain_id)
            await asyncio.sleep(1.0)

    def _note_head(self, chain_id: str, data: str) -> None:
        """Record the height of a pushed ``new_head`` (a message that does not parse is only a wake-up)."""
        try:
            msg = jsonrpc.decode_json(data, max_bytes=4096)
        except ProtocolError:
            return
        height = msg.get("height") if isinstance(msg, dict) else None
        if isinstance(height, int) and not isinstance(height, bool) and height > self._heads.get(chain_id, -1):
            self._heads[chain_id] = height

    def summary(self) -> dict[str, Any]:
        return {"submitted": dict(self.stats.submitted), "redundant": self.stats.redundant,
                "unpaid": self.stats.unpaid, "dropped": self.stats.dropped,
                "earned": [{"chain": c, "denom": d, "step": st, "amount": n}
                           for (c, d, st), n in sorted(self.earned.items())],
                "rejected": self.stats.rejected, "settled": self.stats.settled, "in_flight": len(self.packets),
                "undecodable_events": self.stats.undecodable_events,
                "branch_switches": self.stats.branch_switches,
                "lanes": {k: v.to_json() for k, v in sorted(self.progress.items())},
                "tasks": {k: {"backoffs": h.backoffs, "bugs": h.bugs, "last_error": h.last_error,
                              "stopped": h.stopped} for k, h in sorted(self.health.items())}}

    async def step(self) -> None:
        """One pass of every task, in order (tests and tools; the service runs the tasks concurrently).
        Raises what a task raised."""
        for park in self.parks.values():
            await self._scan(park)
        for src, dst in self.paths():
            await self._path_step(src, dst)

    # -- relay validator-set rotations (SPEC §7.7) ------------------------------------------------------

    def _relay_set_step_of(self, park: ChainLink) -> Callable[[], Any]:
        async def step() -> Outcome:
            await self._relay_set_ready(park)
            return Outcome()
        return step

    async def _relay_set_ready(self, park: ChainLink) -> bool:
        """Deliver the relay's set rotations ``park`` lacks; True once its bridge trusts the newest set, so
        certificates of the relay's head verify there (False: try again on a later step)."""
        if self.relay_sets is None:
            return True
        # a rotation is tracked until final on the park (up to a minute): a stopping relayer does not wait for it
        # (the bridge answers packet.replay to whichever relayer submits it again)
        sync = asyncio.ensure_future(self.relay_sets.sync(park.chain_id, park.kind, park.target))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sync, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not sync.done():
                sync.cancel()
                await asyncio.gather(sync, return_exceptions=True)
        return sync.result() if not sync.cancelled() else False

    # -- discovery: one scanner per park ----------------------------------------------------------

    def _scan_step_of(self, park: ChainLink) -> Callable[[], Any]:
        async def step() -> Outcome:
            await self._reclaim_dropped(park)
            await self._scan(park)
            return Outcome()
        return step

    async def _reclaim_dropped(self, chain: ChainLink) -> None:
        """Offer again at once what the chain's node dropped from its mempool without a block. A node keeps a sender's
        transactions only as a run of nonces from the account's; when a block leaves one out (on a park, a copy of a
        recv or settle another relayer made first; a recv past its timeout), every later one of the sender is dropped
        after it, silently. On the relay chain a copy of another relayer's relay stays in the block as a no-op that
        uses its nonce (SPEC §1 Trust). Each dropped one holds its packets' in-flight wait (:data:`RESUBMIT_AFTER_S`):
        without this, those packets waited six seconds for nothing (issue 16: the 6-7 s phase-3 p95 of one run in
        two).

        A transaction whose nonce is below the account's has reached a block; one at or above the account's nonce
        plus what the node holds pending is gone. Only submissions admitted before the account is read are judged
        (one admitted meanwhile is pending, not lost)."""
        sent = self._sent.get(chain.chain_id)
        account = getattr(chain.target, "account", None)
        if not sent or chain.client is None or not isinstance(account, str):
            return
        judged = list(sent.items())  # entries, not nonces: a resubmission meanwhile may reuse a dropped one's nonce
        acct = await chain.client.call("getAccount", {"name": account})
        committed, pending = (acct.get("nonce"), acct.get("pending", 0)) if isinstance(acct, dict) else (None, None)
        if not isinstance(committed, int) or not isinstance(pending, int):
            return  # no account there (yet), or an answer this relayer cannot read: judge nothing
        lost: list[int] = []
        freed: set[tuple[str, str]] = set()
        for n, entry in judged:
            if sent.get(n) is not entry:
                continue  # replaced by a submission admitted during the read
            if n < committed:
                del sent[n]
            elif n >= committed + pending:
                lost.append(n)
                freed.update(sent.pop(n))
        # a wait a later submission of the same work holds (still pending) stays
        freed -= {k for ks in sent.values() for k in ks}
        for k in freed:
            self._inflight.pop(k, None)
        if lost:
            self.stats.dropped += len(lost)
            self.log.info("%s: %d of this relayer's transactions left the node's mempool without reaching a block "
                          "(nonces %d..%d; one before them was left out of a block); offering their work again",
                          chain.chain_id, len(lost), min(lost), max(lost))

    async def _scan(self, park: ChainLink) -> None:
        row = self.db.execute("SELECT height FROM cursors WHERE chain = ?", (park.chain_id,)).fetchone()
        start = (row[0] if row else 0) + 1
        final = await park.source.final_height()
        while start <= final:
            end = min(final, start + 999)
            events = await park.source.events(start, end)
            with self._one_transaction():  # the range's packets, acks and earnings, and the cursor past them
                for ev in events:
                    try:
                        self._on_event(ev)
                    except (ProtocolError, ValueError, KeyError, TypeError, AttributeError) as exc:
                        # one bad event must not stall the park (the cursor would never move past it)
                        self.stats.undecodable_events += 1
                        height = ev.get("height") if isinstance(ev, dict) else None
                        self.log.error("%s: undecodable event at height %s skipped (%d so far): %s", park.chain_id,
                                       height, self.stats.undecodable_events, exc)
                self._write(lambda db, end=end: db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                                                           (park.chain_id, end)))
            start = end + 1

    def _on_event(self, ev: Any) -> None:
        kind = ev.get("type")
        if kind == "send_packet":
            raw = bytes.fromhex(ev["packet"])
            pkt = decode_packet(raw)
            if pkt.dst_chain in self.parks and pkt.src_chain in self.parks:
                self._track(Tracked(pkt, raw, int(ev["height"]), seen_s=self._clock(), fees=_fees_of(ev)))
        elif kind == "write_ack":
            self._record_ack(ev)
        elif kind == "fee_paid":
            self._record_earning(ev)

    def _record_earning(self, ev: dict[str, Any]) -> None:
        """A park paid a relay fee (SPEC §6.10): count it if the payee is this relayer's there. Idempotent (a rescan
        sees the event again): one row per packet and step."""
        chain = ev.get("src")
        if not isinstance(chain, str) or ev.get("payee") != self.payees.get(chain):
            return
        amount, step, denom = ev.get("amount"), ev.get("step"), ev.get("denom")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0 or step not in (
                "verify", "execute", "confirm") or not isinstance(denom, str):
            raise ValueError(f"malformed fee_paid event: {ev!r}")
        key = f"{chain}/{ev.get('dst')}/{ev.get('lane')}/{ev.get('sequence')}"
        added: list[int] = []

        def insert(db: sqlite3.Connection) -> None:
            added[:] = [db.execute("INSERT OR IGNORE INTO earned VALUES (?, ?, ?, ?, ?)",
                                   (key, step, chain, denom, amount)).rowcount]

        def count() -> None:
            if added == [1]:
                self.earned[(chain, denom, step)] = self.earned.get((chain, denom, step), 0) + amount
                self.log.info("earned %d %s for %s of %s", amount, denom, step, key)

        self._write(insert, after=count)

    def _track(self, t: Tracked) -> None:
        known = self.packets.get(t.key)
        if known is not None and known.raw == t.raw:
            return
        replace = False
        exists = self.db.execute("SELECT done, packet FROM packets WHERE key = ?", (t.key,)).fetchone()
        if exists is not None and exists[1] != t.raw.hex():
            # a rescan after a recovery found another packet at this sequence on the park's new branch: it replaces
            # the one tracked from the abandoned branch (SPEC §8.8)
            self.log.warning("%s: the park's chain now holds another packet at this sequence: tracking it", t.key)
            self.packets.pop(t.key, None)
            replace = True
            exists = None
        elif known is not None:
            return
        if exists and exists[0]:
            self._write(lambda db: db.execute("DELETE FROM early_acks WHERE key = ?", (t.key,)))
            return
        early = self.db.execute("SELECT ack FROM early_acks WHERE key = ?", (t.key,)).fetchone()
        if early is not None and t.ack is None:
            t.ack = bytes.fromhex(early[0])

        def store(db: sqlite3.Connection) -> None:
            if replace:  # in the same transaction as its successor: never a moment with neither stored
                db.execute("DELETE FROM packets WHERE key = ?", (t.key,))
            db.execute("INSERT OR IGNORE INTO packets (key, packet, commit_height, ack, done, fees) "
                       "VALUES (?, ?, ?, ?, 0, ?)",
                       (t.key, t.raw.hex(), t.commit_height, t.ack.hex() if t.ack is not None else None,
                        json.dumps(t.fees) if t.fees else None))
            db.execute("DELETE FROM early_acks WHERE key = ?", (t.key,))

        # stored before it is tracked in memory: a failed write tracks nothing, the scan retries
        self._write(store, after=lambda: self.packets.__setitem__(t.key, t))

    def _rescan(self, chain_id: str) -> None:
        """Scan the park's events again from its genesis (after a client recovery, SPEC §8.8)."""
        self._write(lambda db: db.execute("DELETE FROM cursors WHERE chain = ?", (chain_id,)))

    def _record_ack(self, ev: dict[str, Any]) -> None:
        src, dst = ev.get("src"), ev.get("dst")
        key = f"{src}/{dst}/{ev.get('lane')}/{ev.get('sequence')}"
        if not ev.get("ack"):
            return
        ack = bytes.fromhex(str(ev["ack"]))
        t = self.packets.get(key)
        if t is None:
            # The target's scanner and the source's are separate tasks: the target's may pass the acknowledgement
            # before the source's has tracked the packet (a packet executed by another relayer or by hand). An
            # Ethereum target keeps acks only in its logs (no state read finds them later), so the ack is kept
            # until the packet is tracked, else phase 4 would wait for it forever.
            if src in self.parks and dst in self.parks:
                done = self.db.execute("SELECT done FROM packets WHERE key = ?", (key,)).fetchone()
                if not (done and done[0]):
                    self._write(lambda db: db.execute("INSERT OR IGNORE INTO early_acks VALUES (?, ?)",
                                                      (key, ack.hex())))
            return
        if t.ack is None:
            self._write(lambda db: db.execute("UPDATE packets SET ack = ? WHERE key = ?", (ack.hex(), key)))
            t.ack = ack
        height = ev.get("height")
        if t.ack == ack and isinstance(height, int) and not isinstance(height, bool) and height >= 0:
            t.ack_height = height

    # -- the relay chain's lane events: bridges learn lane limits from certified records --------------

    async def _sync_payees(self) -> None:
        """Name this relayer's payee on each park on the relay chain (``account.set_payee``, SPEC §6.10) where its
        account names another; once. A refusal is logged and tried again at the next step."""
        try:
            acct = await self._relay_rpc().call("getAccount", {"name": self.name})
            held = acct.get("payees") or {}
            for chain, payee in sorted(self.payees.items()):
                if held.get(chain) != payee:
                    await self.relay.target.submit("account.set_payee", {"chain": chain, "payee": payee})
                    self.log.info("relay fees earned on %s go to %s there", chain, payee)
            self._payees_synced = True
        except ProtocolError as exc:
            self.log.warning("could not name this relayer's payees on the relay chain yet: %s", exc)

    async def _scan_relay_step(self) -> Outcome:
        """Find the relay's ``lane_opened`` / ``lane_limits_set`` events in its final blocks and deliver the
        certified lane-config record to the lane's source park (``bridge.update_lane``, SPEC §6.8), so a park's
        phase 1 refuses what the relay would refuse forever under the new limits."""
        relay_id = self.relay.chain_id
        await self._reclaim_dropped(self.relay)
        if not self._payees_synced:
            await self._sync_payees()
        row = self.db.execute("SELECT height FROM cursors WHERE chain = ?", (relay_id,)).fetchone()
        start = (row[0] if row else 0) + 1
        final = await self.relay.source.final_height()
        while start <= final:
            end = min(final, start + 999)
            for ev in await self.relay.source.events(start, end):
                if isinstance(ev, dict) and ev.get("type") in ("lane_opened", "lane_limits_set"):
                    lane = (str(ev.get("src")), str(ev.get("dst")), str(ev.get("lane")))
                    if lane[0] in self.parks:
                        self._lane_updates.add(lane)
            self._write(lambda db, end=end: db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                                                       (relay_id, end)))
            start = end + 1
        for src, dst, lane in sorted(self._lane_updates):
            key = f"lane/{src}/{dst}/{lane}"
            if self._waiting_key(key) or not self._turn(key, "update_lane", src):
                continue
            if not await self._relay_set_ready(self.parks[src]):
                continue
            cert = await self._certificate(lane_config_path(src, dst, lane))
            if cert.get("value") is None:
                self._lane_updates.discard((src, dst, lane))
                continue
            await self._submit(self.parks[src], "bridge.update_lane",
                               {"dst_chain": dst, "lane": lane, "config": cert["value"], "certificate": cert},
                               key, None)
            if self._last_disposition in (Disposition.DONE, Disposition.NEVER, Disposition.FATAL):
                self._lane_updates.discard((src, dst, lane))  # delivered, already there, or never deliverable
                self._due_since.pop((key, "update_lane"), None)
        return Outcome()

    # -- one worker per path ----------------------------------------------------------------------

    def _path_step_of(self, src: str, dst: str) -> Callable[[], Any]:
        async def step() -> Outcome:
            await self._path_step(src, dst)
            return Outcome()
        return step

    async def _path_step(self, src: str, dst: str) -> None:
        items = [t for t in list(self.packets.values()) if t.packet.src_chain == src and t.packet.dst_chain == dst]
        if not items:
            return
        # executed packets whose ack the relay's client of the target does not hold final yet can take no step (the
        # confirmation proves the receipt at a final height; nobody else can confirm them either): their records are
        # not read. Under load most packets in flight wait so, for the target's finality (a PoC park's window), and
        # reading all of them on each head made a step's reads grow with the backlog (issue 16)
        dst_final = await self._target_final(dst)
        unripe: list[Tracked] = []
        ripe: list[Tracked] = []
        for t in items:
            (unripe if t.ack is not None and t.ack_height is not None and t.ack_height > dst_final else ripe).append(t)
        items = ripe
        relay_state = await self._relay_records(items) if items else {}
        park_state = await self._park_records(src, dst, items) if items else {}
        now_ms = self._wall_ms()
        todo: dict[Action, list[Tracked]] = {a: [] for a in Action}
        unverified: set[str] = set()
        receipt_target = self.parks[dst].timeout_receipt is not None
        # a frozen client (SPEC §8.8): nothing is proven against it, and a packet the relay verified from a frozen
        # source is not delivered: it may come from a branch the park abandoned, which a recovery revokes; nothing is
        # verified towards a frozen target either (the freeze paused its lanes: lane.invalid would park it for long)
        src_frozen = await self._client_frozen(src)
        dst_frozen = await self._client_frozen(dst)
        with self._one_transaction():  # the acks read, the packets finished and the lanes' progress: one commit
            for t in items:
                rec = self._records_of(t, relay_state, park_state)
                action = next_action(rec, now_ms, timeout_unverified=self.timeout_unverified,
                                     target_timeout_receipt=receipt_target)
                if action is Action.FINISH and (rec.outcome or not src_frozen):
                    self._finish(t)
                    continue
                if action is Action.FINISH:
                    continue  # a frozen source's suspended packet (SPEC §8.8): kept until the recovery decides
                if action is Action.TIMEOUT and not rec.verified:
                    unverified.add(t.key)
                if ((src_frozen and (action in (Action.VERIFY, Action.RECV, Action.TIMEOUT_RECEIPT)
                                     or t.key in unverified))
                        or (dst_frozen and action in (Action.VERIFY, Action.CONFIRM, Action.TIMEOUT))):
                    continue
                if not pays_enough(action, t.fees, self.min_fees.get(src)):
                    self.stats.unpaid += 1  # another relayer may take it: this one is not paid enough for the step
                    continue
                todo[action].append(t)
            self._note_progress(items, {**todo, Action.CONFIRM: todo[Action.CONFIRM] + unripe})
        if self._clock() - self._last_trim >= TRIM_EVERY_S:  # a step reads and drops megabytes of JSON
            self._last_trim = self._clock()
            trim_heap()
        ready = {a: [t for t in ts if not self._waiting(t, a.value) and self._my_turn(t, a.value)]
                 for a, ts in todo.items()}
        # the relay chain's share: confirmations and timeouts first, then verifications, within what is left of
        # relay_inflight once the packets submitted there and not yet seen are counted
        on_relay = (Action.CONFIRM, Action.TIMEOUT, Action.VERIFY)
        room = self.relay_inflight - sum(1 for a in on_relay for t in todo[a] if self._waiting(t, a.value))

        async def to_relay() -> None:
            left = room - await self._confirm(src, dst, ready[Action.CONFIRM], ready[Action.TIMEOUT], unverified, room)
            await self._verify(src, ready[Action.VERIFY], left)

        async def to_target() -> None:
            await self._recv(ready[Action.RECV])
            await self._timeout_receipt(ready[Action.TIMEOUT_RECEIPT])

        # three chains, three queues of submissions: run side by side (issue 16: a step settling a thousand packets
        # on the source held back the next step's confirmations on the relay for seconds, so both came in bursts)
        await _all_of(to_relay(), to_target(), self._settle(ready[Action.SETTLE], relay_state))

    async def _target_final(self, chain_id: str) -> int:
        """The final height of the relay's client of ``chain_id`` for this step: its status now, or the height the
        relayer's update in flight makes final (proofs may go right behind it); -1 when there is no such client."""
        try:
            final = proof_height(await self._client_status(chain_id))
        except (ProtocolError, ValueError, TypeError, KeyError):
            return -1  # read every packet's records, as without the status
        return max(final, self.__dict__.get("_predicted_final", {}).get(chain_id, -1))

    def _note_progress(self, items: list[Tracked], todo: dict[Action, list[Tracked]]) -> None:
        now = self._clock()
        lanes: dict[str, LaneProgress] = {}
        for action, ts in todo.items():
            for t in ts:
                lp = lanes.setdefault(t.lane_key, LaneProgress(last_error=self.progress.get(
                    t.lane_key, LaneProgress()).last_error))
                lp.pending[action.value] = lp.pending.get(action.value, 0) + 1
                age = now - t.seen_s
                if age >= lp.oldest_pending_s:
                    lp.oldest_pending_s, lp.oldest_packet = age, t.key
        for t in items:
            if t.lane_key not in lanes:
                lanes[t.lane_key] = LaneProgress(last_error=self.progress.get(t.lane_key, LaneProgress()).last_error)
        rows = []
        for lane, lp in lanes.items():
            self.progress[lane] = lp
            rows.append((lane, json.dumps(lp.to_json()), self._wall_ms()))
            if lp.pending and now - self._last_progress_log.get(lane, -PROGRESS_LOG_S) >= PROGRESS_LOG_S:
                self._last_progress_log[lane] = now
                self.log.info("lane %s: pending %s; oldest %s for %.0fs; last error: %s", lane,
                              json.dumps(lp.pending, sort_keys=True), lp.oldest_packet, lp.oldest_pending_s,
                              lp.last_error or "-")
        if rows:
            self._write(lambda db: db.executemany("INSERT OR REPLACE INTO progress VALUES (?, ?, ?)", rows))

    # -- reading state ----------------------------------------------------------------------------

    async def _relay_records(self, items: list[Tracked]) -> dict[str, str | None]:
        keys: list[str] = []
        for t in items:
            p = t.packet
            keys += [verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode(),
                     outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()]
        return await self.relay.source.query_many(keys)

    async def _park_records(self, src: str, dst: str, items: list[Tracked]) -> dict[str, dict[str, str | None]]:
        src_keys = [commitment_path(t.packet.dst_chain, t.packet.lane, t.packet.sequence).decode() for t in items]
        dst_keys: list[str] = []
        for t in items:
            p = t.packet
            dst_keys += [receipt_path(p.src_chain, p.lane, p.sequence).decode(), _ack_key(p)]
        return {src: await self.parks[src].source.query_many(src_keys),
                dst: await self.parks[dst].source.query_many(dst_keys)}

    def _records_of(self, t: Tracked, relay: dict[str, str | None], parks: dict[str, dict[str, str | None]]
                    ) -> PacketRecords:
        p = t.packet
        src, dst = parks.get(p.src_chain, {}), parks.get(p.dst_chain, {})
        ack_hex = dst.get(_ack_key(p))
        if ack_hex is not None:
            # from the target's state, not only from events: a restarted relayer may be past the event, and an event
            # of a branch the target abandoned names the ack of that branch's execution (another relayer in it, or
            # another result), which no proof of the chain the target kept can match
            ack = bytes.fromhex(bytes.fromhex(ack_hex).decode())  # the bridge stores the ack as hex text
            if ack != t.ack:
                if t.ack is not None:
                    self.log.info("packet %s: the target's state holds another ack than the one seen (a reorg "
                                  "executed it again); confirming that one", t.key)
                    self._inflight.pop((t.key, Action.CONFIRM.value), None)  # a refusal of the stale one parked it
                t.ack = ack
                self._write(lambda db: db.execute("UPDATE packets SET ack = ? WHERE key = ?", (ack.hex(), t.key)))
        receipt = dst.get(receipt_path(p.src_chain, p.lane, p.sequence).decode())
        sentinel = self.parks[p.dst_chain].timeout_receipt if p.dst_chain in self.parks else None
        timed_out_there = receipt is not None and sentinel is not None and bytes.fromhex(receipt) == sentinel
        commitment = src.get(commitment_path(p.dst_chain, p.lane, p.sequence).decode())
        return PacketRecords(
            # another packet at this sequence (the source reorganised past the relay's finality and a recovery revoked
            # this one, SPEC §8.8) is not this packet's commitment
            committed=commitment is not None and _same_commitment(commitment, t.raw),
            verified=relay.get(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()) is not None,
            outcome=relay.get(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()) is not None,
            received=receipt is not None and not timed_out_there,
            timeout_ms=p.timeout_timestamp_ms, timeout_receipt=timed_out_there)

    def _my_turn(self, t: Tracked, action: str) -> bool:
        """Whether this relayer acts on ``action`` of ``t`` now. Always, unless the action lands on a chain where
        duplicates cost: then the relayer ranked n-th for (packet, action) waits until the action has been due
        for n × ``takeover_after_s``."""
        p = t.packet
        on_target = action in (Action.RECV.value, Action.TIMEOUT_RECEIPT.value)
        chain = p.dst_chain if on_target else p.src_chain if action == Action.SETTLE.value else None
        return self._turn(t.key, action, chain)

    def _turn(self, key: str, action: str, chain: str | None) -> bool:
        link = self.parks.get(chain) if chain is not None else None
        if link is None or not link.duplicates_reach_blocks or len(self.peers) < 2:
            return True
        # who goes first: per packet and action; per chain where different packets' transactions conflict
        order = self.turn_order(f"writes/{chain}", "write") if link.one_writer else self.turn_order(key, action)
        rank = order.index(self.name)
        since = self._due_since.setdefault((key, action), self._clock())
        return self._clock() - since >= rank * self.takeover_after_s

    def turn_order(self, key: str, action: str) -> list[str]:
        """The relayers in the order they take ``action`` of packet ``key`` (rendezvous hashing: the same on every
        relayer, spread evenly, and unchanged for other packets when a relayer joins or leaves)."""
        return sorted(self.peers, key=lambda r: hashlib.sha256(f"{key}|{action}|{r}".encode()).digest())

    def _finish(self, t: Tracked) -> None:
        # stored first: a failed write leaves the packet tracked, and the next pass finds it settled again
        self._write(lambda db: db.execute("UPDATE packets SET done = 1 WHERE key = ?", (t.key,)),
                    after=lambda: self._forget(t))

    def _forget(self, t: Tracked) -> None:
        for turn in ("recv", "timeout_receipt", "settle"):
            self._due_since.pop((t.key, turn), None)
        for action in Action:
            self._inflight.pop((t.key, action.value), None)
        t.done = True
        self.packets.pop(t.key, None)
        self.stats.settled += 1
        if self.observer is not None:
            self.observer.finished(t)
        self._log_packets(logging.INFO, [t], "packet %s settled", t.key)

    def _write(self, fn: Callable[[sqlite3.Connection], Any], after: Callable[[], None] | None = None) -> None:
        """One transaction on the relayer's database (:func:`chains.common.storage.write_tx`: a lock held by another
        process is retried a few times), then ``after`` (what changes in memory once it is stored). A full disk or
        an I/O error stops the relayer: its tasks end, and ``parkrelay relayer start`` exits with
        :data:`chains.common.storage.EXIT_STORAGE_FAULT`. Inside :meth:`_one_transaction`, both wait for its end."""
        if self._batch is not None:
            self._batch.append((fn, after))
            return
        self._commit(fn)
        if after is not None:
            after()

    @contextlib.contextmanager
    def _one_transaction(self) -> Iterator[None]:
        """The :meth:`_write` calls of the ``with`` block in one transaction at its end, then their ``after``
        effects in order: one commit (an fsync) for a pass over thousands of packets instead of one each. The block
        must not await (no other task may see the memory of writes not yet stored, nor write in between); reads in
        it do not see its writes yet. If the block raises, its writes and their effects are dropped (the next pass
        finds the same work); if the commit fails, the effects are dropped and the error raised."""
        if self._batch is not None:  # nested: the outer block commits
            yield
            return
        batch: list[tuple[Callable[[sqlite3.Connection], Any], Callable[[], None] | None]] = []
        self._batch = batch
        try:
            yield
        finally:
            self._batch = None
        if not batch:
            return

        def all_of(db: sqlite3.Connection) -> None:
            for fn, _ in batch:
                fn(db)

        self._commit(all_of)
        for _, after in batch:
            if after is not None:
                after()

    def _commit(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        try:
            storage.write_tx(self.db, self.db_path, fn, log=self.log)
        except storage.StorageFault as exc:
            if not exc.retryable and self.fault is None:
                self.fault = exc
                self.log.error("relayer %s stopping: %s (free the disk, then start it again: it resumes from its "
                               "database)", self.name, exc)
                self._stop.set()
            raise

    def _waiting(self, t: Tracked, action: str) -> bool:
        until = self._inflight.get((t.key, action))
        return until is not None and self._clock() < until

    async def close_links(self) -> None:
        """Close every chain client the links hold (each once), whatever its kind."""
        seen: set[int] = set()
        for link in [self.relay, *self.parks.values()]:
            for obj in (link.client, link.source, link.target):
                close = getattr(obj, "close", None)
                if obj is None or id(obj) in seen or close is None:
                    continue
                seen.add(id(obj))
                await close()

    def _relay_rpc(self) -> JsonRpcClient:
        if self.relay.client is None:
            raise TypeError("the relay chain link needs its JSON-RPC client")
        return self.relay.client

    def _waiting_key(self, key: str) -> bool:
        until = self._inflight.get((key, "update"))
        return until is not None and self._clock() < until

    def _done_waiting(self, key: str) -> None:
        self._inflight.pop((key, "update"), None)

    def _carries(self, chain_id: str) -> bool:
        """Whether a packet this relayer tracks comes from or goes to ``chain_id``."""
        return any(t.packet.src_chain == chain_id or t.packet.dst_chain == chain_id for t in self.packets.values())

    # -- actions ----------------------------------------------------------------------------------

    async def _verify(self, src: str, items: list[Tracked], room: int = RELAY_INFLIGHT_PACKETS) -> None:
        """Phase 2: prove the commitments of ``items`` final in the relay's client of ``src``, at most ``room`` of
        them (the oldest)."""
        if not items or room <= 0:
            return
        park = self.parks[src]
        st = await self._update_client(park)
        final = proof_height(st)  # the update's final height, if it could be told
        ready = [t for t in items if t.commit_height <= final][:room]
        for i in range(0, len(ready), VERIFY_BATCH):
            batch = ready[i:i + VERIFY_BATCH]
            pvs = await self._prove_many(park, [commitment_path(t.packet.dst_chain, t.packet.lane, t.packet.sequence)
                                                for t in batch], final)
            if pvs is None:
                return  # the park pruned that height: the client updates above bring a provable one
            proofs = [(t, pv.proof) for t, pv in zip(batch, pvs, strict=True) if pv.value is not None]
            if proofs:
                await self._submit(self.relay, "packet.verify_batch",
                                   {"height": final, "items": [{"packet": t.raw.hex(), "proof": pr.hex()}
                                                               for t, pr in proofs]},
                                   "verify", [t for t, _ in proofs])

    async def _prove_many(self, park: ChainLink, keys: list[bytes], height: int) -> list[ProvenValue] | None:
        """:meth:`_prove` of every key, in one call per :data:`VERIFY_BATCH` keys where the source proves many at once
        (the Python parks' ``proveMany``), else one by one; None as there."""
        prove_many = getattr(park.source, "prove_many", None)
        if prove_many is None:
            out = []
            for key in keys:
                pv = await self._prove(park, key, height)
                if pv is None:
                    return None
                out.append(pv)
            return out
        try:
            many: list[ProvenValue] = []
            for i in range(0, len(keys), VERIFY_BATCH):
                many += await prove_many(keys[i:i + VERIFY_BATCH], height)
            return many
        except ProtocolError as exc:
            if exc.code != "rpc.not_found":
                raise
        self._unprovable(park, height)
        return None

    async def _prove(self, park: ChainLink, key: bytes, height: int) -> ProvenValue | None:
        """``key`` proven on ``park`` at ``height`` (the relay client's final height), or None if the park no longer
        holds its state there: the client fell further behind than the park's state window (a stalled or slow relay
        chain). Retrying that height can never succeed; the caller skips its proofs for this step while
        :meth:`_update_client`, called at the start of every step, feeds the client the park's next headers, so the
        final height moves up into the window and proofs resume there (logged once per height)."""
        try:
            return await park.source.prove(key, height)
        except ProtocolError as exc:
            if exc.code != "rpc.not_found":
                raise
        self._unprovable(park, height)
        return None

    def _unprovable(self, park: ChainLink, height: int) -> None:
        self.stats.proof_heights_unavailable += 1
        seen: set[tuple[str, int]] = self.__dict__.setdefault("_unprovable_logged", set())
        if (park.chain_id, height) not in seen:
            seen.add((park.chain_id, height))
            self.log.warning("%s: no state at the relay client's final height %d any more (pruned on the park); "
                             "proving again once the client's updates move its final height up", park.chain_id, height)

    async def _certificate(self, key: bytes) -> dict[str, Any]:
        cert: dict[str, Any] = await self._relay_rpc().call("getCertificate", {"key": key.decode()})
        return cert

    async def _certificates(self, keys: list[bytes]) -> dict[str, Any]:
        """One certificate batch of ``keys`` (at most :data:`CERT_BATCH`) from the relay's newest block."""
        batch: dict[str, Any] = await self._relay_rpc().call("getCertificates", {"keys": [k.decode() for k in keys]})
        return batch

    async def _recv(self, todo: list[Tracked]) -> None:
        if todo and not await self._relay_set_ready(self.parks[todo[0].packet.dst_chain]):
            return
        if todo and self.parks[todo[0].packet.dst_chain].batches:
            async def recv_args(chunk: list[Tracked]) -> dict[str, Any]:
                certs = await self._certificates([verified_path(t.packet.src_chain, t.packet.dst_chain, t.packet.lane,
                                                                t.packet.sequence) for t in chunk])
                return {"packets": [t.raw.hex() for t in chunk], "certificates": certs, "relayer": self.name}

            await self._submit_fitting(self.parks[todo[0].packet.dst_chain], "bridge.recv_batch", todo, recv_args,
                                       "recv")
            return
        for t in todo:
            p = t.packet
            cert = await self._certificate(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence))
            await self._submit(self.parks[p.dst_chain], "bridge.recv",
                               {"packet": t.raw.hex(), "certificate": cert, "relayer": self.name}, "recv", [t])

    async def _timeout_receipt(self, todo: list[Tracked]) -> None:
        """Phase 4, target half, on a target that records timeouts itself (Fabric): the packet and its certificate,
        so that the target writes its timeout receipt once its own clocks are past the timeout (before that it
        refuses with ``packet.timeout``, retried after the chain moves)."""
        if todo and not await self._relay_set_ready(self.parks[todo[0].packet.dst_chain]):
            return
        for t in todo:
            p = t.packet
            cert = await self._certificate(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence))
            await self._submit(self.parks[p.dst_chain], "bridge.timeout_receipt",
                               {"packet": t.raw.hex(), "certificate": cert}, Action.TIMEOUT_RECEIPT.value, [t])

    async def _confirm(self, src: str, dst: str, acks: list[Tracked], timeouts: list[Tracked],
                       unverified: Collection[str] = (), room: int = RELAY_INFLIGHT_PACKETS) -> int:
        """Phase 4, relay half: prove the receipts of ``acks``; prove no receipt for ``timeouts`` at a final target
        header past their timeout, adding the commitment's proof on the source for those in ``unverified`` (the
        relay never verified them, SPEC §6.6: it needs to know the source committed them). At most ``room`` packets
        (the oldest acks first); returns how many it submitted."""
        if (not acks and not timeouts) or room <= 0:
            return 0
        park = self.parks[dst]
        st = await self._update_client(park)
        final = proof_height(st)  # as in _verify
        proven: list[tuple[Tracked, bytes, bytes]] = []
        acks = acks[:room]  # the oldest: their receipts are the likeliest to be final in the client
        pvs = await self._prove_many(park, [receipt_path(t.packet.src_chain, t.packet.lane, t.packet.sequence)
                                            for t in acks], final) if acks else []
        if pvs is None:
            return 0  # the park pruned that height: the client updates above bring a provable one
        for t, rv in zip(acks, pvs, strict=True):
            if rv.value is None or t.ack is None:
                continue  # the client's final header predates the receipt: wait for the update
            proven.append((t, t.ack, rv.proof))
        used = len(proven)
        for i in range(0, len(proven), VERIFY_BATCH):
            chunk = proven[i:i + VERIFY_BATCH]
            if len(chunk) == 1:
                t, ack, proof = chunk[0]
                await self._submit(self.relay, "packet.confirm_ack",
                                   {"packet": t.raw.hex(), "ack": ack.hex(), "height": final, "proof": proof.hex()},
                                   "confirm", [t])
            else:
                await self._submit(self.relay, "packet.confirm_ack_batch",
                                   {"height": final, "items": [{"packet": t.raw.hex(), "ack": ack.hex(),
                                                                "proof": proof.hex()} for t, ack, proof in chunk]},
                                   "confirm", [t for t, _, _ in chunk])
        if not timeouts or used >= room:
            return used
        if park.timeout_receipt is None:
            header_time_ms = await park.source.header_time_ms(final)
            due = [t for t in timeouts if header_time_ms >= t.packet.timeout_timestamp_ms]  # a final header past it
        else:
            due = timeouts  # the target's receipt (or its peers' attested clocks) says it, not a block time
        if not due:
            return used
        src_park = self.parks[src]
        src_st = await self._update_client(src_park) if any(t.key in unverified for t in due) else {}
        src_final = int(src_st.get("proof_height", src_st.get("final_height", 0)))
        for t in due:
            p = t.packet
            args: dict[str, Any] = {"packet": t.raw.hex(), "height": final}
            if t.key in unverified:
                if t.commit_height > src_final:
                    continue  # the source's client is not final past the commitment yet: wait for it
                cp = await self._prove(src_park, commitment_path(p.dst_chain, p.lane, p.sequence), src_final)
                if cp is None:
                    return used
                if cp.value is None:
                    continue  # settled meanwhile (the commitment is gone): the next read finishes it
                args |= {"commit_height": src_final, "commit_proof": cp.proof.hex()}
            pv = await self._prove(park, receipt_path(p.src_chain, p.lane, p.sequence), final)
            if pv is None:
                return used
            # what proves the timeout at the receipt path: nothing, or (a verified packet on a target that writes one)
            # the timeout receipt; an acknowledgement there means it was received after all (the ack path carries it)
            expected = park.timeout_receipt if t.key not in unverified else None
            if pv.value != expected:
                continue
            args["proof"] = pv.proof.hex()
            await self._submit(self.relay, "packet.confirm_timeout", args, "timeout", [t])
            used += 1
            if used >= room:
                break
        return used

    async def _settle(self, todo: list[Tracked], relay: dict[str, str | None]) -> None:
        if todo and not await self._relay_set_ready(self.parks[todo[0].packet.src_chain]):
            return
        ready: list[tuple[Tracked, bytes, dict[str, Any]]] = []  # (packet, outcome key, bridge.settle's item)
        for t in todo:
            p = t.packet
            key = outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence)
            raw = relay.get(key.decode())
            if raw is None:
                continue
            outcome, _, _ = decode_outcome(bytes.fromhex(raw))
            item: dict[str, Any] = {"packet": t.raw.hex()}
            if outcome is PacketOutcome.ACKED:
                if t.ack is None:
                    self._log_packets(logging.WARNING, [t], "packet %s: acked on the relay chain but its ack is not "
                                      "readable on %s yet", t.key, p.dst_chain)
                    continue
                item["ack"] = t.ack.hex()
            ready.append((t, key, item))
        if ready and self.parks[ready[0][0].packet.src_chain].batches:
            items = {t.key: (key, item) for t, key, item in ready}

            async def settle_args(chunk: list[Tracked]) -> dict[str, Any]:
                certs = await self._certificates([items[t.key][0] for t in chunk])
                return {"items": [items[t.key][1] for t in chunk], "certificates": certs}

            await self._submit_fitting(self.parks[ready[0][0].packet.src_chain], "bridge.settle_batch",
                                       [t for t, _, _ in ready], settle_args, "settle")
            return
        for t, key, item in ready:
            await self._submit(self.parks[t.packet.src_chain], "bridge.settle",
                               {**item, "certificate": await self._certificate(key)}, "settle", [t])

    async def _submit_fitting(self, chain: ChainLink, op: str, todo: list[Tracked],
                              build: Callable[[list[Tracked]], Any], action: str) -> None:
        """Submit ``op`` for ``todo`` in batches of at most :data:`CERT_BATCH` whose arguments (``await
        build(chunk)``) fit :data:`PARK_TX_ARGS_BUDGET`.

        A batch over it is split in halves (its certificates fetched again for each half) until it fits or is one
        packet; the batches after it are cut to what the bytes per packet measured so far allow, so a run of them
        does not fetch every certificate twice (a settlement carries ~4 KiB a packet: sixteen never fit). The next
        batch's arguments are fetched while this one is submitted (issue 16: one round trip to the relay and one to
        the park per batch, in turn, made a step settling a thousand packets take seconds)."""
        key = (chain.chain_id, op)
        rest = list(todo)
        queue: list[list[Tracked]] = []  # halves waiting, before the rest

        def next_chunk() -> list[Tracked] | None:
            nonlocal rest
            if queue:
                return queue.pop(0)
            if not rest:
                return None
            n = self._fit_size.get(key, CERT_BATCH)
            chunk, rest = rest[:n], rest[n:]
            return chunk

        def start(chunk: list[Tracked] | None) -> asyncio.Task[Any] | None:
            return None if chunk is None else asyncio.ensure_future(build(chunk))

        chunk = next_chunk()
        task = start(chunk)
        upcoming: asyncio.Task[Any] | None = None
        try:
            while chunk is not None and task is not None:
                args = await task
                size = len(jsonrpc.dumps(args).encode())  # orjson: a batch is ~60 KB of hex
                per_packet = size / len(chunk)
                self._fit_size[key] = max(1, min(CERT_BATCH, int(PARK_TX_ARGS_BUDGET // per_packet)))
                if len(chunk) > 1 and size > PARK_TX_ARGS_BUDGET:
                    half = len(chunk) // 2
                    queue[:0] = [chunk[:half], chunk[half:]]
                    chunk = next_chunk()
                    task = start(chunk)
                    continue
                following = next_chunk()
                upcoming = start(following)
                await self._submit(chain, op, args, action, chunk)
                chunk, task, upcoming = following, upcoming, None
        finally:  # a submission that raised leaves the next batch's fetch behind: stopped, its error read
            for pending in (task, upcoming):
                if pending is None:
                    continue
                if not pending.done():
                    pending.cancel()
                elif not pending.cancelled():
                    pending.exception()

    async def _submit(self, chain: ChainLink, op: str, args: dict[str, Any], action: str,
                      packets: list[Tracked] | None) -> None:
        """Submit ``op``; act on a refusal by its disposition: done (another relayer did it), retried within a
        second, after the chain moves, or parked and reported. I/O errors propagate to the task's loop."""
        disposition = Disposition.DONE
        error: ProtocolError | None = None
        tx_hash: str | None = None
        try:
            tx_hash = await chain.target.submit(op, args)
        except ProtocolError as exc:
            disposition, error = exc.disposition, exc
        self._last_disposition = disposition
        self._last_error_code = None if error is None else error.code
        wait_s = retry_delay_s(disposition)
        if error is not None and error.code == "certificate.validator_set" and chain is not self.relay:
            wait_s = min(wait_s, RETRY_SOON_S)  # the relay set rotated under it: rotate the park's bridge, resubmit
        if error is not None and error.code == "header.not_final" and chain is self.relay:
            # a proof at a height the relay's client does not hold final: the final height predicted for this relayer's
            # update in flight was wrong (the node dropped the update behind a nonce gap, or another relayer's update
            # with fewer headers landed first). The updates that follow lift it within a block or two: offer it again
            # then at the client's own final height, not after six seconds (issue 16: a p95 tail of 6-8 s)
            wait_s = min(wait_s, RETRY_SOON_S)
            self.__dict__.get("_predicted_final", {}).clear()
        if error is not None and error.code == "certificate.stale" and chain is not self.relay:
            # the certificate's relay block is older than the target's bound (SPEC §7.9): every submission fetches
            # the newest relay block's certificate, so the next one is fresh unless the relay itself is stalled
            wait_s = min(wait_s, RETRY_SOON_S)
        waits = [(action, "update")] if packets is None else [(t.key, action) for t in packets]
        if packets is None:
            # header updates, lane configs, evidence: what they carry changes with the chain, so a refusal
            # is looked at again within seconds whatever its disposition
            wait_s = min(wait_s, RESUBMIT_AFTER_S / 3)
        for k in waits:
            self._inflight[k] = self._clock() + wait_s
        nonces = getattr(chain.target, "nonces", None)
        if error is None and isinstance(nonces, dict) and tx_hash in nonces:
            sent = self._sent.setdefault(chain.chain_id, {})
            sent[nonces.pop(tx_hash)] = waits
            while len(sent) > SENT_KEPT:  # a relayer stepped by hand (``step``) never reclaims: keep the newest
                del sent[next(iter(sent))]
        if error is None:
            self.stats.count(action)
            if self.observer is not None:
                self.observer.submitted(action, packets or [])
            if packets:
                self._log_packets(logging.INFO, packets, "%s on %s submitted (packets: %s)", op, chain.chain_id,
                                  ", ".join(t.key for t in packets))
            return
        if disposition is Disposition.DONE:
            self.stats.redundant += 1  # another relayer did it first: done, not an error
            return
        self.stats.rejected += 1
        if self.observer is not None:
            self.observer.refused(chain.chain_id, error.code)
        for t in packets or []:
            self.progress.setdefault(t.lane_key, LaneProgress()).last_error = f"{op}: {error}"
        keys = ", ".join(t.key for t in packets or []) or "-"
        if disposition in (Disposition.RETRY_SOON, Disposition.AFTER_PROGRESS):
            self._log_packets(logging.INFO, packets or [], "%s on %s refused for now (%s); resubmitting in %.0fs "
                              "(packets: %s)", op, chain.chain_id, error.code, wait_s, keys)
        else:
            self._log_packets(logging.ERROR, packets or [], "%s on %s refused: %s; not retried for %.0fs "
                              "(packets: %s)", op, chain.chain_id, error, wait_s, keys)

    def _log_packets(self, level: int, packets: list[Tracked], msg: str, *args: Any) -> None:
        """A log line about packets: their ids ride on the record as ``packet`` (a list; ``--log-json`` prints it as
        the line's ``packet`` field), besides the chain and node every line of this relayer carries."""
        extra = {**(self.log.extra or {}), "packet": [t.key for t in packets]} if packets else self.log.extra
        self.log.logger.log(level, msg, *args, extra=extra)


async def _all_of(*steps: Coroutine[Any, Any, None]) -> None:
    """Run ``steps`` concurrently to their ends, then raise the first one's error, if any (a failed step does not cut
    the others short: what they submitted is recorded as if they had run alone)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _migrate(conn: sqlite3.Connection) -> None:
    """The relayer database's schema (sqlite-utils): tables created if missing, so a database written by an
    older relayer gains the newer tables (``progress``, ``early_acks``) on start and keeps its cursors and packets."""
    db = storage.schema_db(conn)
    db.enable_wal()
    db["cursors"].create({"chain": str, "height": int}, pk="chain", if_not_exists=True)  # type: ignore[union-attr]
    db["packets"].create({"key": str, "packet": str, "commit_height": int, "ack": str, "done": int},  # type: ignore[union-attr]
                         pk="key", if_not_exists=True)
    db["progress"].create({"lane": str, "json": str, "updated_ms": int}, pk="lane",  # type: ignore[union-attr]
                          if_not_exists=True)
    # acknowledgements seen on a target before the source's scanner tracked their packet (Relayer._record_ack)
    db["early_acks"].create({"key": str, "ack": str}, pk="key", if_not_exists=True)  # type: ignore[union-attr]
    if "fees" not in db["packets"].columns_dict:  # a database of a relayer from before relay fees (SPEC §6.10)
        db["packets"].add_column("fees", str)  # type: ignore[union-attr]
    # the fees this relayer earned: one row per packet and step (a rescan adds nothing)
    db["earned"].create({"packet": str, "step": str, "chain": str, "denom": str, "amount": int},  # type: ignore[union-attr]
                        pk=("packet", "step"), if_not_exists=True)
    conn.commit()


def _fees_of(ev: dict[str, Any]) -> dict[str, int] | None:
    """The ``fees`` of a ``send_packet`` event (SPEC §6.10), checked: ``{verify, execute, confirm}`` of ints >= 0."""
    fees = ev.get("fees")
    if fees is None:
        return None
    if not isinstance(fees, dict):
        raise ValueError(f"send_packet fees is not an object: {fees!r}")
    out = {step: fees.get(step, 0) for step in ("verify", "execute", "confirm")}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in out.values()):
        raise ValueError(f"send_packet fees are not amounts: {fees!r}")
    return out if any(out.values()) else None


def _same_commitment(value_hex: str, raw: bytes) -> bool:
    """Whether a source's commitment record (hex of its value, as ``query_many`` answers) is ``raw``'s commitment;
    a value that is not 32 bytes (a source storing it otherwise) counts as the same."""
    try:
        value = bytes.fromhex(value_hex)
    except ValueError:
        return True
    return len(value) != 32 or value == hashlib.sha256(raw).digest()


def _ack_key(p: Packet) -> str:
    """The target's state path of the packet's acknowledgement (SPEC §5)."""
    return ack_path(p.src_chain, p.lane, p.sequence).decode()
