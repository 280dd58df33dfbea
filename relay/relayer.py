"""The relayer service: ``parkrelay relayer start --config FILE --name NAME``.

An untrusted, permissionless carrier of packets through the four phases (SPEC.md §1, §6). It holds
no authority: every message it delivers is checked by a light client, a relay certificate or a proof,
so its only duties are liveness and economy.

How it works — reconcile, don't remember. Each step:

1. scans the final blocks of every park for ``send_packet`` and ``write_ack`` events (from a cursor
   kept in SQLite, so packets sent while it was down are found on start);
2. for every packet not yet settled, reads the chains' records (verified? received? outcome
   certified? settled?) with one batched query per chain, and submits only the next action:
   ``packet.verify_batch`` (phase 2, up to 100 per source header), ``bridge.recv`` (phase 3),
   ``packet.confirm_ack`` / ``packet.confirm_timeout`` (phase 4, relay half), ``bridge.settle``
   (phase 4, source half) — each preceded by the light-client header updates its proof needs.

Because the next action is always derived from chain state, a restarted relayer, or two relayers
racing, never deliver a packet twice: a redundant submission is refused at admission
(``packet.replay``), which counts as done. Other protocol rejections are logged and not retried
until the chain moves on; I/O errors back off and reconnect only the side that failed.

Taking turns where duplicates cost. The relay chain and the Python parks refuse a duplicate at
admission, so racing there is free. On Ethereum two relayers that estimate the same ``recvPacket`` in
the same instant both send it, and the second reverts in the block, paying gas for nothing. For actions
on such chains the deployment's relayers take turns: rendezvous hashing of ``(packet, action, relayer)``
ranks them, the first acts at once, the n-th only once the action has been due for n ×
``takeover_after_s`` (a relayer that is down is covered by the next in line).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapters.common.park import ParkSource, ParkTarget
from adapters.common.roles import SourceSide, TargetSide
from adapters.common.rpc import JsonRpcClient
from protocol.codec import decode_outcome, decode_packet
from protocol.crypto import Ed25519Signer
from protocol.errors import ProtocolError, TransportError
from protocol.paths import commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import Packet, PacketOutcome
from relay.state_machine.clients import MAX_HEADERS as MAX_HEADERS_PER_UPDATE

log = logging.getLogger("parkrelay.relayer")

VERIFY_BATCH = 100
RESUBMIT_AFTER_S = 6.0
PARK_AFTER_REJECTION_S = 300.0

TRANSIENT_CODES = frozenset({
    "lane.rate_limited",  # the bucket refills with relay block time
    "funds.insufficient",  # the supply accountant waits for the acks of outbound packets
    "tx.nonce",  # a queued transaction of this account was dropped; the nonce is re-read
    "mempool.full",
    "header.not_final",  # the proof's header is not final to the client yet
    "packet.timeout",  # a timeout proof before the target's time passed the timeout
})
"""Refusals that the chain's progress alone can lift: resubmitted after RESUBMIT_AFTER_S. Any other
protocol refusal is not retried: the (packet, action) is parked for PARK_AFTER_REJECTION_S and logged."""


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
    """Whether a redundant submission gets into a block and fails there at a cost (Ethereum) instead of being
    refused at admission: the relayers then take turns for actions on this chain."""


@dataclass
class Tracked:
    """A packet the relayer carries, and what it has seen of it."""

    packet: Packet
    raw: bytes
    commit_height: int
    ack: bytes | None = None
    done: bool = False

    @property
    def key(self) -> str:
        p = self.packet
        return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"


@dataclass
class RelayerStats:
    """Counters exposed in logs and metrics."""

    submitted: dict[str, int] = field(default_factory=dict)
    redundant: int = 0
    rejected: int = 0
    settled: int = 0

    def count(self, action: str) -> None:
        self.submitted[action] = self.submitted.get(action, 0) + 1


class Relayer:
    """Carries packets between the parks of a deployment through the relay chain."""

    def __init__(self, name: str, relay: ChainLink, parks: dict[str, ChainLink], db_path: Path,
                 poll_s: float = 0.5, *, peers: tuple[str, ...] = (), takeover_after_s: float = 4.0) -> None:
        self.name = name
        self.relay = relay
        self.parks = parks
        self.poll_s = poll_s
        self.peers = tuple(sorted({*peers, name}))
        """Every relayer of the deployment (this one included): they take turns where duplicates cost."""
        self.takeover_after_s = takeover_after_s
        self._due_since: dict[tuple[str, str], float] = {}
        self.stats = RelayerStats()
        self.log = logging.LoggerAdapter(log, {"chain": relay.chain_id, "node": name})
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(db_path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS cursors (chain TEXT PRIMARY KEY, height INTEGER)")
        self.db.execute("CREATE TABLE IF NOT EXISTS packets (key TEXT PRIMARY KEY, packet TEXT, commit_height "
                        "INTEGER, ack TEXT, done INTEGER)")
        self.db.commit()
        self.packets: dict[str, Tracked] = {}
        for key, raw, h, ack, done in self.db.execute("SELECT key, packet, commit_height, ack, done FROM packets"):
            if not done:
                pkt_raw = bytes.fromhex(raw)
                self.packets[key] = Tracked(decode_packet(pkt_raw), pkt_raw, h,
                                            bytes.fromhex(ack) if ack else None)
        self._inflight: dict[tuple[str, str], float] = {}
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    # -- the loop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Step on every new head of any chain (pushed over WebSocket; polling every ``poll_s`` if a socket
        is down) until stopped. I/O errors back off (up to 10 s) and retry; protocol errors never loop."""
        backoff = 0.5
        self.log.info("relayer %s started: %d parks, %d packets in flight from its database", self.name,
                      len(self.parks), len(self.packets))
        async with aiohttp.ClientSession() as session:
            watchers = [asyncio.create_task(self._watch_heads(session, link.client))
                        for link in [self.relay, *self.parks.values()] if link.client is not None]
            try:
                while not self._stop.is_set():
                    self._wake.clear()
                    try:
                        await self.step()
                        backoff = 0.5
                        delay = self.poll_s
                    except TransportError as exc:
                        self.log.warning("side %s unreachable (%s); retrying in %.1fs", exc.side, exc.message,
                                         backoff)
                        delay, backoff = backoff, min(backoff * 2, 10.0)
                    await self._sleep(delay)
            finally:
                for w in watchers:
                    w.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
        self.db.close()
        self.log.info("relayer %s stopped: %s", self.name, self.summary())

    async def _sleep(self, delay: float) -> None:
        """Until a new head (``_wake``), a stop, or ``delay`` seconds: whichever comes first."""
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _watch_heads(self, session: aiohttp.ClientSession, client: JsonRpcClient) -> None:
        """Wake the loop on each ``new_head`` the chain pushes; reconnect after a second if it drops."""
        while not self._stop.is_set():
            try:
                async with session.ws_connect(client.url + "/ws", heartbeat=20) as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT and '"new_head"' in msg.data:
                            self._wake.set()
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # the loop keeps polling meanwhile
            await asyncio.sleep(1.0)

    def summary(self) -> dict[str, Any]:
        return {"submitted": dict(self.stats.submitted), "redundant": self.stats.redundant,
                "rejected": self.stats.rejected, "settled": self.stats.settled, "in_flight": len(self.packets)}

    async def step(self) -> None:
        """One reconcile pass over every park and packet."""
        for park in self.parks.values():
            await self._scan(park)
        if not self.packets:
            return
        relay_state = await self._relay_records()
        by_action: dict[str, list[Tracked]] = {"verify": [], "recv": [], "confirm": [], "timeout": [], "settle": []}
        park_state = await self._park_records()
        for t in list(self.packets.values()):
            action = self._next_action(t, relay_state, park_state)
            if action is not None and not self._waiting(t, action) and self._my_turn(t, action):
                by_action[action].append(t)
        await self._verify(by_action["verify"])
        await self._recv(by_action["recv"])
        await self._confirm(by_action["confirm"], by_action["timeout"])
        await self._settle(by_action["settle"], relay_state)

    # -- discovery --------------------------------------------------------------------------------

    async def _scan(self, park: ChainLink) -> None:
        row = self.db.execute("SELECT height FROM cursors WHERE chain = ?", (park.chain_id,)).fetchone()
        start = (row[0] if row else 0) + 1
        final = await park.source.final_height()
        while start <= final:
            end = min(final, start + 999)
            for ev in await park.source.events(start, end):
                if ev.get("type") == "send_packet":
                    raw = bytes.fromhex(ev["packet"])
                    pkt = decode_packet(raw)
                    if pkt.dst_chain in self.parks:
                        self._track(Tracked(pkt, raw, int(ev["height"])))
                elif ev.get("type") == "write_ack":
                    self._record_ack(ev)
            self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", (park.chain_id, end))
            self.db.commit()
            start = end + 1

    def _track(self, t: Tracked) -> None:
        if t.key in self.packets:
            return
        exists = self.db.execute("SELECT done FROM packets WHERE key = ?", (t.key,)).fetchone()
        if exists and exists[0]:
            return
        self.packets[t.key] = t
        self.db.execute("INSERT OR IGNORE INTO packets VALUES (?, ?, ?, NULL, 0)", (t.key, t.raw.hex(),
                                                                                     t.commit_height))
        self.db.commit()

    def _record_ack(self, ev: dict[str, Any]) -> None:
        key = f"{ev.get('src')}/{ev.get('dst')}/{ev.get('lane')}/{ev.get('sequence')}"
        t = self.packets.get(key)
        if t is not None and t.ack is None and ev.get("ack"):
            t.ack = bytes.fromhex(ev["ack"])
            self.db.execute("UPDATE packets SET ack = ? WHERE key = ?", (ev["ack"], key))
            self.db.commit()

    # -- reading state ----------------------------------------------------------------------------

    async def _relay_records(self) -> dict[str, str | None]:
        keys: list[str] = []
        for t in self.packets.values():
            p = t.packet
            keys += [verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode(),
                     outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()]
        return await self.relay.source.query_many(keys)

    async def _park_records(self) -> dict[str, dict[str, str | None]]:
        per_chain: dict[str, list[str]] = {}
        for t in self.packets.values():
            p = t.packet
            per_chain.setdefault(p.src_chain, []).append(commitment_path(p.dst_chain, p.lane, p.sequence).decode())
            per_chain.setdefault(p.dst_chain, []).append(receipt_path(p.src_chain, p.lane, p.sequence).decode())
            per_chain[p.dst_chain].append(f"acks/{p.src_chain}/{p.lane}/{p.sequence}")
        out: dict[str, dict[str, str | None]] = {}
        for chain, keys in per_chain.items():
            if chain in self.parks:
                out[chain] = await self.parks[chain].source.query_many(keys)
        return out

    def _next_action(self, t: Tracked, relay: dict[str, str | None], parks: dict[str, dict[str, str | None]]
                     ) -> str | None:
        p = t.packet
        src, dst = parks.get(p.src_chain, {}), parks.get(p.dst_chain, {})
        ack_hex = dst.get(f"acks/{p.src_chain}/{p.lane}/{p.sequence}")
        if ack_hex is not None and t.ack is None:
            # from the target's state, not only from events: a restarted relayer may be past the event
            t.ack = bytes.fromhex(bytes.fromhex(ack_hex).decode())  # the bridge stores the ack as hex text
            self.db.execute("UPDATE packets SET ack = ? WHERE key = ?", (t.ack.hex(), t.key))
            self.db.commit()
        committed = src.get(commitment_path(p.dst_chain, p.lane, p.sequence).decode())
        outcome = relay.get(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode())
        if outcome is not None:
            if committed is None:
                self._finish(t)
                return None
            return "settle"
        verified = relay.get(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode())
        if verified is None:
            if committed is None:  # settled without a relay record cannot happen; nothing to carry
                self._finish(t)
                return None
            return "verify"
        receipt = dst.get(receipt_path(p.src_chain, p.lane, p.sequence).decode())
        if receipt is not None:
            return "confirm"
        if self._now_ms() >= p.timeout_timestamp_ms:
            return "timeout"
        return "recv"

    def _my_turn(self, t: Tracked, action: str) -> bool:
        """Whether this relayer acts on ``action`` of ``t`` now. Always, unless the action lands on a chain where
        duplicates cost: then the relayer ranked n-th for (packet, action) waits until the action has been due
        for n × ``takeover_after_s``."""
        p = t.packet
        chain = p.dst_chain if action == "recv" else p.src_chain if action == "settle" else None
        link = self.parks.get(chain) if chain is not None else None
        if link is None or not link.duplicates_reach_blocks or len(self.peers) < 2:
            return True
        rank = self.turn_order(t.key, action).index(self.name)
        since = self._due_since.setdefault((t.key, action), time.monotonic())
        return time.monotonic() - since >= rank * self.takeover_after_s

    def turn_order(self, key: str, action: str) -> list[str]:
        """The relayers in the order they take ``action`` of packet ``key`` (rendezvous hashing: the same on every
        relayer, spread evenly, and unchanged for other packets when a relayer joins or leaves)."""
        return sorted(self.peers, key=lambda r: hashlib.sha256(f"{key}|{action}|{r}".encode()).digest())

    def _finish(self, t: Tracked) -> None:
        for action in ("recv", "settle"):
            self._due_since.pop((t.key, action), None)
        t.done = True
        self.packets.pop(t.key, None)
        self.stats.settled += 1
        self.db.execute("UPDATE packets SET done = 1 WHERE key = ?", (t.key,))
        self.db.commit()
        self.log.info("packet %s settled", t.key)

    def _waiting(self, t: Tracked, action: str) -> bool:
        until = self._inflight.get((t.key, action))
        return until is not None and time.monotonic() < until

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

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

    # -- light clients on the relay chain ---------------------------------------------------------

    async def _client_status(self, chain_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._relay_rpc().call("getClientStatus", {"chain_id": chain_id})
        return result

    async def _update_client(self, park: ChainLink) -> dict[str, Any]:
        """Feed the relay's client of ``park`` the headers it lacks (as many as one update takes); return its status."""
        st = await self._client_status(park.chain_id)
        latest = await park.source.latest_height()
        start = int(st["latest_height"]) + 1
        if start > latest:
            return st
        if self._waiting_key(f"update/{park.chain_id}"):
            return st
        end = min(latest, start + MAX_HEADERS_PER_UPDATE - 1)
        headers = await park.source.headers(start, end)
        await self._submit(self.relay, "client.update", {"chain_id": park.chain_id,
                                                         "headers": [h.encode().hex() for h in headers]},
                           f"update/{park.chain_id}", None)
        return st

    def _waiting_key(self, key: str) -> bool:
        until = self._inflight.get((key, "update"))
        return until is not None and time.monotonic() < until

    # -- actions ----------------------------------------------------------------------------------

    async def _verify(self, todo: list[Tracked]) -> None:
        by_src: dict[str, list[Tracked]] = {}
        for t in todo:
            by_src.setdefault(t.packet.src_chain, []).append(t)
        for src, items in by_src.items():
            park = self.parks[src]
            st = await self._update_client(park)
            final = int(st["final_height"])
            ready = [t for t in items if t.commit_height <= final]
            for i in range(0, len(ready), VERIFY_BATCH):
                batch = ready[i:i + VERIFY_BATCH]
                proofs = []
                for t in batch:
                    p = t.packet
                    pv = await park.source.prove(commitment_path(p.dst_chain, p.lane, p.sequence), final)
                    if pv.value is not None:
                        proofs.append((t, pv.proof))
                if proofs:
                    await self._submit(self.relay, "packet.verify_batch",
                                       {"height": final, "items": [{"packet": t.raw.hex(), "proof": pr.hex()}
                                                                   for t, pr in proofs]},
                                       "verify", [t for t, _ in proofs])

    async def _certificate(self, key: bytes) -> dict[str, Any]:
        cert: dict[str, Any] = await self._relay_rpc().call("getCertificate", {"key": key.decode()})
        return cert

    async def _recv(self, todo: list[Tracked]) -> None:
        for t in todo:
            p = t.packet
            cert = await self._certificate(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence))
            await self._submit(self.parks[p.dst_chain], "bridge.recv", {"packet": t.raw.hex(), "certificate": cert},
                               "recv", [t])

    async def _confirm(self, acked: list[Tracked], timed_out: list[Tracked]) -> None:
        by_dst: dict[str, tuple[list[Tracked], list[Tracked]]] = {}
        for t in acked:
            by_dst.setdefault(t.packet.dst_chain, ([], []))[0].append(t)
        for t in timed_out:
            by_dst.setdefault(t.packet.dst_chain, ([], []))[1].append(t)
        for dst, (acks, timeouts) in by_dst.items():
            park = self.parks[dst]
            st = await self._update_client(park)
            final = int(st["final_height"])
            for t in acks:
                p = t.packet
                pv = await park.source.prove(receipt_path(p.src_chain, p.lane, p.sequence), final)
                if pv.value is None or t.ack is None:
                    continue  # the client's final header predates the receipt: wait for the update
                await self._submit(self.relay, "packet.confirm_ack",
                                   {"packet": t.raw.hex(), "ack": t.ack.hex(), "height": final,
                                    "proof": pv.proof.hex()}, "confirm", [t])
            if not timeouts:
                continue
            header_time_ms = await park.source.header_time_ms(final)
            for t in timeouts:
                p = t.packet
                if header_time_ms < p.timeout_timestamp_ms:
                    continue  # no final header past the timeout yet
                pv = await park.source.prove(receipt_path(p.src_chain, p.lane, p.sequence), final)
                if pv.value is not None:
                    continue  # it was received after all: the ack path will carry it
                await self._submit(self.relay, "packet.confirm_timeout",
                                   {"packet": t.raw.hex(), "height": final, "proof": pv.proof.hex()}, "timeout", [t])

    async def _settle(self, todo: list[Tracked], relay: dict[str, str | None]) -> None:
        for t in todo:
            p = t.packet
            key = outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence)
            raw = relay.get(key.decode())
            if raw is None:
                continue
            outcome, _, _ = decode_outcome(bytes.fromhex(raw))
            cert = await self._certificate(key)
            args: dict[str, Any] = {"packet": t.raw.hex(), "certificate": cert}
            if outcome is PacketOutcome.ACKED:
                if t.ack is None:
                    self.log.warning("packet %s: acked on the relay chain but its ack is not readable on %s yet",
                                     t.key, p.dst_chain)
                    continue
                args["ack"] = t.ack.hex()
            await self._submit(self.parks[p.src_chain], "bridge.settle", args, "settle", [t])

    async def _submit(self, chain: ChainLink, op: str, args: dict[str, Any], action: str,
                      packets: list[Tracked] | None) -> None:
        wait_s = RESUBMIT_AFTER_S
        try:
            await chain.target.submit(op, args)
        except ProtocolError as exc:
            if exc.code == "packet.replay":
                self.stats.redundant += 1  # another relayer did it first: done, not an error
            elif exc.code in TRANSIENT_CODES:
                self.stats.rejected += 1
                self.log.info("%s on %s refused for now (%s); resubmitting later", op, chain.chain_id, exc.code)
            else:
                self.stats.rejected += 1
                wait_s = PARK_AFTER_REJECTION_S
                keys = ", ".join(t.key for t in packets or [])
                self.log.error("%s on %s refused: %s; not retried for %.0fs (packets: %s)", op, chain.chain_id, exc,
                               wait_s, keys or "-")
        else:
            self.stats.count(action)
        if packets is None:
            self._inflight[(action, "update")] = time.monotonic() + min(wait_s, RESUBMIT_AFTER_S / 3)
        else:
            for t in packets:
                self._inflight[(t.key, action)] = time.monotonic() + wait_s


# -- wiring from a deployment config ------------------------------------------------------------


def build_relayer(cfg: Any, name: str) -> Relayer:
    """A relayer for deployment ``cfg`` (relay.config.DeploymentConfig) signing as account ``name``."""
    from adapters import dpos as dpos_adapter
    from adapters import poc as poc_adapter
    from relay.config import ConfigError
    from relay.devnet import relayer_key_path
    from relay.keys import ed25519_signer
    from relay.node import RelayBlockHeader

    if name not in cfg.relayers:
        raise ConfigError(f"{cfg.path}: no relayer {name!r}; relayers are {list(cfg.relayers)}")
    if cfg.relay_base_port is None:
        raise ConfigError(f"{cfg.path}: the relay chain has no [relay] base_port")

    def link(chain_id: str, kind: str, url: str, decode: Any) -> ChainLink:
        client = JsonRpcClient(url, side=chain_id)
        signer: Ed25519Signer = ed25519_signer(relayer_key_path(cfg, chain_id, name))
        return ChainLink(chain_id, kind, ParkSource(client, decode), ParkTarget(client, chain_id, name, signer),
                         client)

    relay = link(cfg.relay_chain_id, "relay", cfg.relay_url(cfg.relay_validators[0]), RelayBlockHeader.decode)
    relay_rpc = relay.client
    assert relay_rpc is not None
    parks = {}
    for chain in cfg.chains:
        url = chain.url_of(chain.nodes[0], cfg.host)
        if chain.kind == "ethereum":
            parks[chain.id] = ethereum_link(cfg, chain, name, url, relay_rpc)
            continue
        decode = dpos_adapter.source if chain.kind == "dpos" else poc_adapter.source
        parks[chain.id] = link(chain.id, chain.kind, url, decode(JsonRpcClient(url, side=chain.id)).decode_header)
    return Relayer(name, relay, parks, cfg.data_dir / "relayers" / f"{name}.sqlite3", peers=tuple(cfg.relayers),
                   takeover_after_s=cfg.relayer_takeover_after_s)


def ethereum_link(cfg: Any, chain: Any, name: str, url: str, relay_rpc: JsonRpcClient) -> ChainLink:
    """The relayer's link to an Ethereum park: web3 source and target at the bridge the park's genesis names,
    signing with the relayer's secp256k1 devnet key on that chain."""
    from adapters import ethereum as eth_adapter
    from relay.devnet import relayer_key_path
    from relay.keys import read_secret
    from relay.nodes import genesis_path

    genesis = json.loads(genesis_path(cfg, chain.id).read_text())
    bridge = genesis["contracts"]["bridge"]
    depth = int(chain.params["confirmation_depth"])
    key = read_secret(relayer_key_path(cfg, chain.id, name))
    return ChainLink(chain.id, "ethereum", eth_adapter.source(url, chain.id, bridge, depth),
                     eth_adapter.target(url, chain.id, bridge, key, eth_adapter.relay_set_from_rpc(relay_rpc.call),
                                        confirmation_depth=depth), None, duplicates_reach_blocks=True)


async def run_relayer(cfg: Any, name: str) -> int:
    """``parkrelay relayer start``: run until SIGTERM/SIGINT, then stop cleanly."""
    relayer = build_relayer(cfg, name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relayer.stop)
    try:
        await relayer.run()
    finally:
        await relayer.close_links()
    print(json.dumps(relayer.summary()))
    return 0
