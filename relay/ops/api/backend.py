"""What the operator API reads and does: one deployment, read from its chains (I/O side of :mod:`relay.ops.api`).

:class:`Backend` keeps a snapshot of the deployment fresh with one refresh loop (every ``poll_s``): the relay
chain's head and its packet events, each park's head and its packet events (through the same read-only source
sides a relayer uses, :mod:`adapters`), the lanes and their rate-limit buckets, the light clients and the supply
accountant from the relay chain's state, and each relayer's progress (its database). Requests answer from the
snapshot, so a burst of requests costs the chains nothing. A chain that does not answer shows as unreachable
with the error; the others keep refreshing.

Writes go to the chains: a transfer is phase 1 on the source park (:func:`relay.ops.packets.transfer`, with the
deployment's account keys), a lane pause or resume is a governance transaction signed by every relay validator
key this host holds (more than 2/3 of the power is needed: the relay chain refuses fewer with
``certificate.quorum``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from adapters.common.park import ParkSource
from adapters.common.rpc import JsonRpcClient
from protocol.codec import decode_payload
from protocol.errors import ParkRelayError, ProtocolError, TransportError
from protocol.paths import commitment_path
from protocol.types import EnergyPayload, PacketKind
from relay.ops.api.index import FINAL_STATES, PacketIndex
from relay.ops.config import DeploymentConfig

log = logging.getLogger("parkrelay.api")

__all__ = ["Backend", "ChainReader"]

EVENT_CHUNK = 1000
"""Blocks per event read (the park RPC's ``getEvents`` bound)."""
MAX_EVENT_BLOCKS_PER_REFRESH = 20_000
"""Blocks of one chain read per refresh at most, so a long history is indexed over several refreshes while the
heads stay fresh."""


class ChainReader:
    """One chain, read-only: a source side (heights, events, state, block times) and its status."""

    def __init__(self, chain_id: str, kind: str, source: Any, url: str) -> None:
        self.chain_id = chain_id
        self.kind = kind
        self.source = source
        self.url = url
        self.cursor = 0
        """Last block whose events were read."""
        self.status: dict[str, Any] = {"id": chain_id, "kind": kind, "reachable": False, "height": None,
                                       "final_height": None, "head": None, "time_ms": None, "error": None}
        self._times: dict[int, int] = {}

    async def read_status(self) -> None:
        try:
            if isinstance(self.source, ParkSource):
                st = await self.source.status()
                height, final = int(st["height"]), int(st["final_height"])
                head, time_ms = str(st["head"]), int(st["timestamp_ms"])
            else:
                height = await self.source.latest_height()
                final = await self.source.final_height()
                head, time_ms = None, await self.source.header_time_ms(height)
        except (ParkRelayError, OSError, ValueError, KeyError, TypeError) as exc:
            self.status |= {"reachable": False, "error": str(exc)[:300]}
            return
        self.status |= {"reachable": True, "height": height, "final_height": final, "head": head,
                        "time_ms": time_ms, "error": None}

    async def time_ms(self, height: int) -> int | None:
        if height not in self._times:
            try:
                self._times[height] = int(await self.source.header_time_ms(height))
            except (ParkRelayError, OSError, ValueError, KeyError, TypeError):
                return None
            if len(self._times) > 4096:
                self._times.pop(next(iter(self._times)))
        return self._times[height]

    async def new_events(self) -> list[tuple[dict[str, Any], int]]:
        """Events of the final blocks after the cursor (moves the cursor): ``(event, height)``."""
        final = self.status.get("final_height")
        if not self.status["reachable"] or final is None:
            return []
        out: list[tuple[dict[str, Any], int]] = []
        stop = min(int(final), self.cursor + MAX_EVENT_BLOCKS_PER_REFRESH)
        while self.cursor < stop:
            start, end = self.cursor + 1, min(stop, self.cursor + EVENT_CHUNK)
            events = await self.source.events(start, end)
            out += [(ev, int(ev.get("height", start))) for ev in events if isinstance(ev, dict)]
            self.cursor = end
        return out

    async def close(self) -> None:
        for obj in (self.source, getattr(self.source, "client", None), getattr(self.source, "gateway", None)):
            close = getattr(obj, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


def _park_source(cfg: DeploymentConfig, chain: Any) -> Any:
    """A read-only source side of a park, as a relayer builds it (:func:`relay.ops.relayers.build_relayer`)."""
    from adapters.registry import adapters_for

    url = chain.url_of(chain.nodes[0], cfg.host)
    adapters = adapters_for(chain.kind)
    if adapters.park_rpc:
        return adapters.source(JsonRpcClient(url, side=chain.id, timeout_s=5.0))
    from relay.ops.layout import fabric_profile_path, genesis_path

    genesis = json.loads(genesis_path(cfg, chain.id).read_text())
    if chain.kind == "ethereum":
        return adapters.source(url, chain.id, genesis["contracts"]["bridge"], int(chain.params["confirmation_depth"]),
                               timeout_s=5.0)
    # Fabric: read as the operator organisation's admin, as the operator tools do (relay.ops.parks.FabricPark)
    return adapters.source(fabric_profile_path(cfg, chain), chain.id, "admin", org="OperatorMSP",
                           channel=genesis["channel_id"], chaincode=genesis["chaincode"], timeout_s=5.0)


class Backend:
    """The deployment as the operator API serves it. ``relay_urls``: the relay validators to read from, in order of
    preference (a validator's own API reads its own node first)."""

    def __init__(self, cfg: DeploymentConfig, *, relay_urls: list[str] | None = None, poll_s: float = 1.0,
                 relayer: Any = None, wall_ms: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.poll_s = poll_s
        self.relayer = relayer
        """The relayer running in this process, if any (``POST /backlog/clear`` wakes it)."""
        self.wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        if cfg.relay_base_port is None:
            raise ValueError(f"{cfg.path}: the operator API reads the relay chain; [relay] base_port is not set")
        from relay.chain.node import RelayBlockHeader

        self.relay_urls = relay_urls or [cfg.relay_url(v) for v in cfg.relay_validators]
        self._relay_clients = [JsonRpcClient(u, side=cfg.relay_chain_id, timeout_s=5.0) for u in self.relay_urls]
        self.relay = ChainReader(cfg.relay_chain_id, "relay", ParkSource(self._relay_clients[0],
                                                                         RelayBlockHeader.decode), self.relay_urls[0])
        self.parks: dict[str, ChainReader] = {}
        self._park_errors: dict[str, str] = {}
        self.index = PacketIndex(cfg.relay_chain_id)
        self.lanes: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.supply: list[dict[str, Any]] = []
        self.relayers: list[dict[str, Any]] = []
        self.refreshed_ms = 0
        self.refreshes = 0
        self._refresh_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._changed: list[str] = []
        self.refreshed = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for reader in [*self.parks.values()]:
            await reader.close()
        for c in self._relay_clients:
            await c.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one refresh must not end the service: log it, try again next time
                log.exception("operator API refresh failed")
            await asyncio.sleep(self.poll_s)

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=8)
        self._listeners.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(q)

    # -- reading ----------------------------------------------------------------------------------

    def _park_reader(self, chain: Any) -> ChainReader | None:
        reader = self.parks.get(chain.id)
        if reader is None:
            try:
                reader = self.parks[chain.id] = ChainReader(chain.id, chain.kind, _park_source(self.cfg, chain),
                                                            chain.url_of(chain.nodes[0], self.cfg.host))
            except (OSError, ValueError, KeyError, ParkRelayError) as exc:
                self._park_errors[chain.id] = f"cannot read the park: {exc}"[:300]
                return None
        return reader

    async def relay_call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A relay chain RPC call to the first validator that answers."""
        last: TransportError | None = None
        for client in self._relay_clients:
            try:
                return await client.call(method, params)
            except TransportError as exc:
                last = exc
        assert last is not None
        raise last

    async def refresh(self) -> None:
        async with self._refresh_lock:
            await self._refresh()
        self.refreshes += 1
        self.refreshed_ms = self.wall_ms()
        self.refreshed.set()
        self.refreshed = asyncio.Event()
        if self._listeners:
            snap = self.overview()
            for q in list(self._listeners):
                if q.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()  # a slow reader gets the newest snapshot, not a backlog
                q.put_nowait(snap)

    async def _refresh(self) -> None:
        changed: list[str] = []
        await self.relay.read_status()
        readers = [r for c in self.cfg.chains if (r := self._park_reader(c)) is not None]
        await asyncio.gather(*(r.read_status() for r in readers))
        for reader in [self.relay, *readers]:
            try:
                events = await reader.new_events()
            except (ParkRelayError, OSError, ValueError) as exc:
                reader.status["error"] = f"events: {exc}"[:300]
                continue
            for ev, height in events:
                if ev.get("type") not in _PACKET_EVENTS:
                    continue
                key = self.index.apply(reader.chain_id, ev, height, await reader.time_ms(height))
                if key is not None:
                    changed.append(key)
        changed += await self._settled_by_state()
        if self.relay.status["reachable"]:
            await self._read_relay_state()
        self.relayers = await asyncio.to_thread(self._read_relayers)
        self._changed = changed[-200:]

    async def _settled_by_state(self) -> list[str]:
        """Packets settled on a source whose events the index does not read settlements from: the commitment is
        gone after a certified outcome."""
        by_src: dict[str, list[str]] = {}
        for rec in self.index.awaiting_settle():
            reader = self.parks.get(rec.src)
            if reader is not None and reader.kind in _NO_SETTLE_EVENT and reader.status["reachable"]:
                by_src.setdefault(rec.src, []).append(rec.key)
        done: list[str] = []
        for src, keys in by_src.items():
            paths = {k: commitment_path(k.split("/")[1], k.split("/")[2], int(k.split("/")[3])).decode()
                     for k in keys}
            try:
                values = await self.parks[src].source.query_many(list(paths.values()))
            except (ParkRelayError, OSError, ValueError):
                continue
            for k, path in paths.items():
                if values.get(path) is None:
                    self.index.settled_without_event(k)
                    done.append(k)
        return done

    async def _read_relay_state(self) -> None:
        now_ms = self.wall_ms()
        directed = [(a, b, ln) for ln, x, y in self.cfg.lanes for a, b in ((x, y), (y, x))]
        lane_keys = [f"relay/lanes/{a}/{b}/{ln}" for a, b, ln in directed]
        try:
            lane_values = await self._query_many(lane_keys)
            lanes: list[dict[str, Any]] = []
            bucket_keys: list[str] = []
            for (a, b, ln), key in zip(directed, lane_keys, strict=True):
                raw = lane_values.get(key)
                rec = json.loads(bytes.fromhex(raw)) if raw is not None else None
                lanes.append({"lane": ln, "src": a, "dst": b, "registered": rec is not None,
                              "paused": bool(rec and rec["paused"]), "reason": (rec or {}).get("reason", ""),
                              "limits": (rec or {}).get("limits", {}), "buckets": {}})
                for asset in (rec or {}).get("limits", {}):
                    bucket_keys.append(f"relay/buckets/{a}/{b}/{ln}/{asset}")
            buckets = await self._query_many(bucket_keys) if bucket_keys else {}
            counts = self.index.counts()
            for lane in lanes:
                for asset, limit in lane["limits"].items():
                    raw = buckets.get(f"relay/buckets/{lane['src']}/{lane['dst']}/{lane['lane']}/{asset}")
                    lane["buckets"][asset] = {**limit, "tokens": _tokens(raw, limit, now_ms)}
                lane["packets"] = counts.get(f"{lane['src']}->{lane['dst']}/{lane['lane']}", {})
            self.lanes = lanes
            clients = []
            for chain in self.cfg.chains:
                try:
                    st = await self.relay_call("getClientStatus", {"chain_id": chain.id})
                except ProtocolError as exc:
                    clients.append({"chain_id": chain.id, "status": "unknown", "error": exc.message})
                    continue
                expires = st["final_timestamp_ms"] + st["trusting_period_ms"] if st.get(
                    "final_timestamp_ms") is not None and st.get("trusting_period_ms") is not None else None
                clients.append({**{k: st.get(k) for k in ("chain_id", "client_id", "client_type", "status",
                                                           "final_height", "latest_height", "frozen_height",
                                                           "final_timestamp_ms", "trusting_period_ms")},
                                "expires_at_ms": expires,
                                "expires_in_s": None if expires is None else round((expires - now_ms) / 1000, 1)})
            self.clients = clients
            self.supply = await self._read_supply()
        except (ParkRelayError, OSError, ValueError, KeyError, TypeError) as exc:
            self.relay.status["error"] = f"state: {exc}"[:300]

    async def _query_many(self, keys: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(keys), 1000):
            out.update((await self.relay_call("queryMany", {"keys": keys[i:i + 1000]}))["values"])
        return out

    async def _read_supply(self) -> list[dict[str, Any]]:
        """The accountant's record of every hop the deployment's lanes and energy packets name (SPEC §6.7)."""
        from relay.chain.state_machine.supply import classify

        hops: set[tuple[str, str, str, str]] = set()
        for ln, a, b in self.cfg.lanes:
            hops |= {(a, ln, b, "kWh"), (b, ln, a, "kWh")}
        for rec in self.index.packets.values():
            p = rec.packet
            if p is not None and p.kind is PacketKind.ENERGY:
                payload = decode_payload(p.kind, p.payload)
                if isinstance(payload, EnergyPayload):
                    h = classify(p, payload).hop
                    hops.add((h.home, h.lane, h.remote, h.denom))
        ordered = sorted(hops)
        keys = [f"relay/supply/{h}/{ln}/{r}/{d}" for h, ln, r, d in ordered]
        values = await self._query_many(keys)
        out = []
        for (home, ln, remote, denom), key in zip(ordered, keys, strict=True):
            raw = values.get(key)
            rec = json.loads(bytes.fromhex(raw)) if raw is not None else {}
            out.append({"home": home, "lane": ln, "remote": remote, "denom": denom,
                        **{f: int(rec.get(f, 0)) for f in ("outstanding", "outbound", "returning")}})
        return out

    def _read_relayers(self) -> list[dict[str, Any]]:
        from relay.ops.packets import relayer_progress

        now = self.wall_ms()
        per: dict[str, dict[str, Any]] = {
            name: {"relayer": name, "backlog": 0, "oldest_pending_s": 0.0, "oldest_packet": None, "last_error": None,
                   "updated_ms": None, "idle_s": None, "lanes": []} for name in self.cfg.relayers}
        try:
            rows = relayer_progress(self.cfg)
        except Exception as exc:  # a database being written or migrated: keep the last view
            log.debug("relayer progress unreadable: %s", exc)
            return self.relayers
        for row in rows:
            r = per.get(row["relayer"])
            if r is None:
                continue
            pending = sum(int(v) for v in row.get("pending", {}).values())
            r["lanes"].append({"lane": row["lane"], "pending": row.get("pending", {}),
                               "oldest_pending_s": row.get("oldest_pending_s", 0.0),
                               "oldest_packet": row.get("oldest_packet"), "last_error": row.get("last_error"),
                               "updated_ms": row["updated_ms"]})
            r["backlog"] += pending
            if pending and row.get("oldest_pending_s", 0.0) >= r["oldest_pending_s"]:
                r["oldest_pending_s"], r["oldest_packet"] = row.get("oldest_pending_s", 0.0), row.get("oldest_packet")
            if row.get("last_error"):
                r["last_error"] = row["last_error"]
            r["updated_ms"] = max(r["updated_ms"] or 0, int(row["updated_ms"]))
        for r in per.values():
            if r["updated_ms"] is not None:
                r["idle_s"] = round(max(0, now - r["updated_ms"]) / 1000, 1)
        return list(per.values())

    # -- views ------------------------------------------------------------------------------------

    def chains(self) -> dict[str, Any]:
        parks = []
        for chain in self.cfg.chains:
            reader = self.parks.get(chain.id)
            if reader is None:
                parks.append({"id": chain.id, "kind": chain.kind, "reachable": False, "height": None,
                              "final_height": None, "head": None, "time_ms": None,
                              "error": self._park_errors.get(chain.id, "not read yet")})
            else:
                parks.append(dict(reader.status))
        return {"relay": dict(self.relay.status), "parks": parks}

    def overview(self) -> dict[str, Any]:
        """Everything the status page shows, in one object (also pushed on ``/api/v1/stream``)."""
        recent = sorted(self.index.packets.values(), key=lambda r: (r.committed_ms or 0, r.key), reverse=True)[:100]
        return {"time_ms": self.wall_ms(), "refreshed_ms": self.refreshed_ms, **self.chains(), "lanes": self.lanes,
                "clients": self.clients, "supply": self.supply, "relayers": self.relayers,
                "packets": [r.summary() for r in recent], "changed": list(self._changed)}

    def pending_packets(self) -> int:
        return sum(1 for r in self.index.packets.values() if r.state not in FINAL_STATES)

    # -- writes -----------------------------------------------------------------------------------

    async def transfer(self, src: str, sender: str, dst: str, receiver: str, amount_wh: int, denom: str,
                       lane: str | None, timeout_s: float) -> dict[str, Any]:
        from relay.ops.packets import transfer

        return await asyncio.to_thread(transfer, self.cfg, src, sender, dst, receiver, amount_wh, denom, lane,
                                       timeout_s)

    async def govern_lane(self, op: str, src: str, dst: str, lane: str, wait_s: float = 30.0) -> dict[str, Any]:
        """``lane.pause`` / ``lane.resume`` as governance: signed by every relay validator key on this host, sent
        from the first one's relay account; returns once a relay block holds it."""
        from chains.common.tx import Tx
        from relay.chain.state_machine.governance import sign_governance
        from relay.ops.keys import ed25519_signer
        from relay.ops.layout import relay_key_paths

        signers = [(i, ed25519_signer(relay_key_paths(self.cfg, v)[0])) for i, v in enumerate(self.cfg.relay_validators)
                   if relay_key_paths(self.cfg, v)[0].exists()]
        if not signers:
            raise _NoKeysError("no relay validator key on this host: governance cannot be signed here")
        sender_index, sender_key = signers[0]
        sender = self.cfg.relay_validators[sender_index]
        params = {"src": src, "dst": dst, "lane": lane}
        for _ in range(5):  # a nonce raced by another transaction of the same account: take the next one
            raw = (await self.relay_call("query", {"key": "relay/governance/nonce"}))["value"]
            gov_nonce = int(bytes.fromhex(raw).decode()) if raw else 0
            acct = await self.relay_call("getAccount", {"name": sender})
            nonce = int(acct["nonce"]) + int(acct.get("pending", 0))
            gov = sign_governance(self.cfg.relay_chain_id, gov_nonce, op, params, signers)
            tx = Tx.signed(sender_key, self.cfg.relay_chain_id, sender, nonce, op, {**params, "gov": gov})
            try:
                tx_hash = (await self.relay_call("submitTx", {"tx": tx.to_json()}))["hash"]
            except ProtocolError as exc:
                if exc.code in ("tx.nonce", "packet.replay"):
                    await asyncio.sleep(0.3)
                    continue
                raise
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                res = await self.relay_call("getTxResult", {"hash": tx_hash})
                if res is not None:
                    if not res["ok"]:
                        err = res["error"]
                        raise _ChainRefusal(err.get("code", "protocol"), err.get("message", "refused"))
                    return {"tx": tx_hash, "height": res["height"], "op": op, **params}
                await asyncio.sleep(0.2)
            raise TransportError(f"{op} {tx_hash[:16]} not in a relay block within {wait_s:.0f} s", retryable=True,
                                 side=self.cfg.relay_chain_id)
        raise _ChainRefusal("tx.nonce", "the governance sender's nonce kept racing; try again")


class _NoKeysError(ProtocolError):
    """This host holds no relay validator key (governance needs them)."""

    code = "auth.denied"


class _ChainRefusal(ProtocolError):
    """The relay chain refused a transaction in its block, with the error code it gave."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code  # type: ignore[misc]  # the instance carries the chain's code
        super().__init__(message)


def _tokens(raw: str | None, limit: dict[str, int], now_ms: int) -> int:
    """Whole tokens in a lane's bucket at ``now_ms`` (its record refilled as the relay does, SPEC §6.7)."""
    full = int(limit["capacity"]) * 1000
    if raw is None:
        return full // 1000
    b = json.loads(bytes.fromhex(raw))
    return min(full, int(b["milli"]) + int(limit["refill_per_s"]) * max(0, now_ms - int(b["last_ms"]))) // 1000


_PACKET_EVENTS = frozenset({"send_packet", "write_ack", "settle_packet", "packet_verified", "packet_acked",
                            "packet_timed_out"})
_NO_SETTLE_EVENT = frozenset({"ethereum", "fabric"})
"""Park kinds whose source adapter reports no ``settle_packet`` event."""
