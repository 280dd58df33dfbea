"""The relayer's tasks on in-memory chains: fault isolation, undecodable events, fork-aware client updates.

The chains here are fakes of the source/target roles and of the relay chain's RPC (the relayer is the code
under test); the same behaviour on real processes is in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.codec import decode_packet, encode_packet
from protocol.errors import TransportError
from protocol.types import Packet, PacketKind
from relay.relayer.relayer import ChainLink, Relayer


@dataclass(frozen=True)
class _Header:
    height: int
    branch: str
    farmer: str = "farmer-a"

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(f"{self.height}/{self.branch}".encode()).digest()

    def encode(self) -> bytes:
        return f"{self.height}/{self.branch}".encode()


class _Park:
    """Source and target of a park: a canonical chain of headers (``branch`` per height) and events."""

    def __init__(self, chain_id: str, height: int = 10, final: int = 8) -> None:
        self.chain_id = chain_id
        self.branch = {h: "main" for h in range(1, height + 1)}
        self.final = final
        self.events_at: dict[int, list[Any]] = {}
        self.down = False
        self.time_ms = 0
        self.submitted: list[tuple[str, dict[str, Any]]] = []

    def _io(self) -> None:
        if self.down:
            raise TransportError("connection refused", retryable=True, side=self.chain_id)

    async def latest_height(self) -> int:
        self._io()
        return max(self.branch)

    async def final_height(self) -> int:
        self._io()
        return self.final

    async def headers(self, start: int, end: int) -> list[Any]:
        self._io()
        return [_Header(h, self.branch[h]) for h in range(max(1, start), min(end, max(self.branch)) + 1)]

    async def events(self, start: int, end: int, kind: str | None = None) -> list[Any]:
        self._io()
        return [ev for h in range(start, end + 1) for ev in self.events_at.get(h, [])]

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        self._io()
        return {k: ("01" if k.startswith("commitments/") else None) for k in keys}

    async def prove(self, key: bytes, height: int) -> Any:
        from adapters.common.roles import ProvenValue

        self._io()
        present = key.startswith((b"commitments/", b"accounts/farmer-"))  # committed; no receipt anywhere
        return ProvenValue(height, key, b"01" if present else None, b"proof", bytes(32))

    async def header_time_ms(self, height: int) -> int:
        return self.time_ms

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self._io()
        self.submitted.append((op, args))
        return "00" * 32


class _Relay:
    """The relay chain's RPC and roles: one client per park holding a set of header encodings."""

    url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.held: dict[str, set[bytes]] = {}
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.got_submission = asyncio.Event()
        self.refuse: dict[str, Exception] = {}

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        p = params or {}
        if method == "getClientStatus":
            return self.status[p["chain_id"]]
        if method == "getClientHolds":
            return [bytes.fromhex(h) in self.held[p["chain_id"]] for h in p["headers"]]
        if method == "getValidatorHistory":  # no relay validator-set rotation (relay/relayer/relay_sets.py)
            return [{"from_height": 1, "hash": "00" * 32}]
        raise AssertionError(f"unexpected call {method}")

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        return {k: None for k in keys}

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self.submitted.append((op, args))
        self.got_submission.set()
        if op in self.refuse:
            raise self.refuse.pop(op)
        return "00" * 32


def _relayer(tmp: Path, relay: _Relay, parks: dict[str, _Park], **kw: Any) -> Relayer:
    link = ChainLink("relay", "relay", relay, relay, relay)  # type: ignore[arg-type]
    links = {c: ChainLink(c, "dpos", p, p, None) for c, p in parks.items()}  # type: ignore[arg-type]
    return Relayer("relayer-t", link, links, tmp / "r.sqlite3", poll_s=0.05, **kw)


def _send_event(src: str, dst: str, seq: int, height: int, timeout_ms: int = 10**13) -> dict[str, Any]:
    pkt = Packet(src_chain=src, dst_chain=dst, lane="lane-0", sequence=seq, kind=PacketKind.ENERGY, payload=b"x",
                 sender="alice", receiver="bob", timeout_timestamp_ms=timeout_ms)
    return {"type": "send_packet", "packet": encode_packet(pkt).hex(), "height": height}


def _client(relay: _Relay, park: _Park, latest: int, final: int, branch: dict[int, str] | None = None) -> None:
    relay.status[park.chain_id] = {"status": "active", "latest_height": latest, "final_height": final}
    relay.held[park.chain_id] = {_Header(h, (branch or park.branch).get(h, "main")).encode()
                                 for h in range(1, latest + 1)}


async def test_one_park_down_stalls_only_its_own_paths(tmp_path: Path) -> None:
    relay = _Relay()
    a, b, c = _Park("park-a"), _Park("park-b"), _Park("park-c")
    c.down = True
    a.events_at[3] = [_send_event("park-a", "park-b", 1, 3), _send_event("park-a", "park-c", 1, 3)]
    for p in (a, b, c):
        _client(relay, p, latest=10, final=8)  # the relay is up, and holds a client of park-c too
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b, "park-c": c}, heartbeat_s=None)

    def settled() -> bool:
        c_scan, c_path = r.health.get("scan/park-c"), r.health.get("path/park-a->park-c")
        return (any(op == "packet.verify_batch" for op, _ in relay.submitted) and c_scan is not None
                and c_scan.backoffs >= 2 and c_path is not None and c_path.backoffs >= 1)

    async def tracked_and_backed_off() -> None:
        while not settled():  # noqa: ASYNC110  (polling the fakes' counters; there is no event to await)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(tracked_and_backed_off(), 10)
    finally:
        r.stop()
        await asyncio.wait_for(task, 10)
    assert "unreachable" in (r.health["scan/park-c"].last_error or "")
    assert r.health["scan/park-a"].backoffs == 0 and r.health["path/park-a->park-b"].backoffs == 0
    # the path a->b went on to phase 2 (a verify batch for its packet only) while the paths through c wait
    verifies = [args for op, args in relay.submitted if op == "packet.verify_batch"]
    assert verifies and all(len(v["items"]) == 1 for v in verifies)
    assert "park-b" in bytes.fromhex(verifies[0]["items"][0]["packet"]).decode("latin-1")
    assert "unreachable" in (r.health["path/park-a->park-c"].last_error or "")


async def test_an_undecodable_event_is_skipped_counted_and_the_cursor_moves_on(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    relay = _Relay()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[2] = [{"type": "send_packet", "packet": "zz-not-hex", "height": 2},
                      {"type": "send_packet", "packet": "00" * 40, "height": 2},  # hex, not a packet
                      "not even an object"]
    a.events_at[4] = [_send_event("park-a", "park-b", 1, 4)]
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    with caplog.at_level(logging.ERROR, logger="parkrelay.relayer"):
        await r._scan(r.parks["park-a"])
    assert r.stats.undecodable_events == 3
    assert "park-a/park-b/lane-0/1" in r.packets  # the good event after them is not lost
    assert r.db.execute("SELECT height FROM cursors WHERE chain = 'park-a'").fetchone() == (8,)
    assert "undecodable event at height 2 skipped" in caplog.text
    r.db.close()


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "restarted-between"])
async def test_an_ack_scanned_before_its_packet_is_kept_for_it(tmp_path: Path, restart: bool) -> None:
    """The target's scanner may pass a packet's acknowledgement before the source's scanner tracks the packet (a
    packet executed by another relayer or by hand; the scanners are separate tasks). An Ethereum target keeps acks
    only in its logs, so the ack must be kept until the packet is tracked (else phase 4 waits forever), across a
    restart too; acks of lanes this relayer does not serve are not kept."""
    relay = _Relay()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[4] = [_send_event("park-a", "park-b", 1, 4)]
    b.events_at[3] = [{"type": "write_ack", "src": "park-a", "dst": "park-b", "lane": "lane-0", "sequence": 1,
                       "ack": "0a0b", "height": 3},
                      {"type": "write_ack", "src": "park-x", "dst": "park-b", "lane": "lane-0", "sequence": 1,
                       "ack": "0c", "height": 3}]
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r._scan(r.parks["park-b"])  # the target first: the packet is not tracked yet
    assert r.db.execute("SELECT key FROM early_acks").fetchall() == [("park-a/park-b/lane-0/1",)]
    if restart:
        r.db.close()
        r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r._scan(r.parks["park-a"])
    t = r.packets["park-a/park-b/lane-0/1"]
    assert t.ack == bytes.fromhex("0a0b")
    assert r.db.execute("SELECT ack FROM packets WHERE key = ?", (t.key,)).fetchone() == ("0a0b",)
    assert r.db.execute("SELECT count(*) FROM early_acks").fetchone() == (0,)
    r.db.close()


async def test_after_a_reorg_the_client_is_fed_the_parks_new_branch_from_the_shared_header(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    relay = _Relay()
    park = _Park("poc-park", height=7, final=3)
    # the client was fed 1..6 of the old branch; the park then reorganised from height 5 on
    _client(relay, park, latest=6, final=3, branch={5: "old", 6: "old"})
    park.branch.update({5: "new", 6: "new", 7: "new"})
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None)
    with caplog.at_level(logging.INFO, logger="parkrelay.relayer"):
        await r._update_client(r.parks["poc-park"])
    ((op, args),) = relay.submitted
    assert op == "client.update"
    assert [bytes.fromhex(h) for h in args["headers"]] == [b"5/new", b"6/new", b"7/new"]
    assert r.stats.branch_switches == 1 and "branch switch" in caplog.text
    r.db.close()


async def test_without_a_fork_the_client_is_fed_from_its_newest_header(tmp_path: Path) -> None:
    relay = _Relay()
    park = _Park("poc-park", height=9, final=6)
    _client(relay, park, latest=7, final=5)
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None)
    await r._update_client(r.parks["poc-park"])
    ((_, args),) = relay.submitted
    assert [bytes.fromhex(h) for h in args["headers"]] == [b"8/main", b"9/main"]
    assert r.stats.branch_switches == 0
    r.db.close()


async def test_a_fork_below_the_clients_finality_is_submitted_as_evidence_not_a_stall(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    relay = _Relay()
    park = _Park("poc-park", height=8, final=6)
    # the client finalised 1..5 of a branch the park no longer has above 3
    _client(relay, park, latest=5, final=5, branch={4: "old", 5: "old"})
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None)
    with caplog.at_level(logging.ERROR, logger="parkrelay.relayer"):
        await r._update_client(r.parks["poc-park"])
    ((op, args),) = relay.submitted
    assert op == "client.update"
    assert bytes.fromhex(args["headers"][0]) == b"4/main"  # the park's branch from the last shared header
    assert r.stats.misbehaviour_submitted == 1 and "misbehaviour evidence" in caplog.text
    r.db.close()


async def test_an_idle_client_gets_a_heartbeat_update(tmp_path: Path) -> None:
    relay = _Relay()
    park = _Park("poc-park", height=12, final=9)
    _client(relay, park, latest=10, final=7)
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=0.1)

    task = asyncio.create_task(r.run())
    try:
        await asyncio.wait_for(relay.got_submission.wait(), 10)
    finally:
        r.stop()
        await asyncio.wait_for(task, 10)
    op, args = relay.submitted[0]
    assert op == "client.update" and bytes.fromhex(args["headers"][0]) == b"11/main"


async def test_once_its_update_landed_the_parks_next_header_goes_at_once(tmp_path: Path) -> None:
    """An update in flight holds the next one back only until the relay's client holds its headers (issue 16: the
    wait after every update was two seconds, so under load a PoC header reached the relay 1.4 s after it was made,
    and its finality window, which runs from then, with it)."""
    relay = _Relay()
    park = _Park("poc-park", height=9, final=6)
    _client(relay, park, latest=7, final=5)
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None)
    link = r.parks["poc-park"]
    await r._update_client(link)
    park.branch[10] = "main"
    await r._update_client(link)  # 8..9 not in a relay block yet: nothing more is sent
    assert [[bytes.fromhex(h) for h in a["headers"]] for _, a in relay.submitted] == [[b"8/main", b"9/main"]]
    _client(relay, park, latest=9, final=6)  # now they are
    await r._update_client(link)
    assert [bytes.fromhex(h) for h in relay.submitted[-1][1]["headers"]] == [b"10/main"]
    assert len(relay.submitted) == 2
    r.db.close()


async def test_the_client_task_feeds_each_new_head_while_the_relayer_carries_the_parks_packets(
        tmp_path: Path) -> None:
    relay = _Relay()
    poc, dpos = _Park("poc-park", height=9, final=6), _Park("dpos-park", height=5, final=4)
    _client(relay, poc, latest=9, final=6)
    _client(relay, dpos, latest=5, final=4)
    r = _relayer(tmp_path, relay, {"poc-park": poc, "dpos-park": dpos}, heartbeat_s=60)
    step = r._heartbeat_step_of(r.parks["poc-park"])
    await step()  # the first heartbeat: the client holds the park's head already
    assert relay.submitted == []
    poc.branch[10] = "main"
    for junk in ("not json", '{"height": true}', '{"height": "10"}', "[" * 100, '{"height": 10, "x": "' + "a" * 5000):
        r._note_head("poc-park", junk)
    await step()
    assert relay.submitted == [] and "poc-park" not in r._heads  # no head seen, and the heartbeat is not due
    r._note_head("poc-park", '{"type": "new_head", "height": 10, "hash": "00"}')
    await step()
    assert relay.submitted == []  # a new head, but no packet of this relayer comes from or goes to the park
    r._on_event(_send_event("dpos-park", "poc-park", 1, 3))
    await step()
    ((op, args),) = relay.submitted
    assert op == "client.update" and [bytes.fromhex(h) for h in args["headers"]] == [b"10/main"]
    _client(relay, poc, latest=10, final=7)
    await step()  # fed up to the newest head: nothing until the next one
    assert len(relay.submitted) == 1
    r.db.close()


async def test_relayers_take_turns_to_feed_a_header_and_the_next_takes_over_after_a_second(tmp_path: Path) -> None:
    """Two relayers following a park's heads sent the same update at once, and the relay left the second out of its
    block with every later transaction of its sender (issue 16): per header, one feeds it at once, the other only
    when the header is still not fed after :data:`FEED_TAKEOVER_S`."""
    from relay.relayer.client_updates import FEED_TAKEOVER_S

    now = [100.0]
    relay = _Relay()
    park = _Park("poc-park", height=7, final=4)
    _client(relay, park, latest=6, final=4)
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None, peers=("relayer-u",), clock=lambda: now[0])
    link = r.parks["poc-park"]
    first = [h for h in range(7, 60) if r.turn_order(f"update/poc-park/{h}", "update")[0] == "relayer-t"]
    second = [h for h in range(7, 60) if r.turn_order(f"update/poc-park/{h}", "update")[0] == "relayer-u"]
    assert first and second
    park.branch = {h: "main" for h in range(1, second[0] + 1)}
    _client(relay, park, latest=second[0] - 1, final=4)  # the park's newest header is relayer-u's to feed
    await r._update_client(link)
    assert relay.submitted == []  # proofs go at the client's final height meanwhile
    now[0] += FEED_TAKEOVER_S * 0.9
    await r._update_client(link)
    assert relay.submitted == []
    now[0] += FEED_TAKEOVER_S * 0.2  # relayer-u has not fed it: take over
    await r._update_client(link)
    ((_, args),) = relay.submitted
    assert bytes.fromhex(args["headers"][-1]) == f"{second[0]}/main".encode()
    relay.submitted.clear()
    r._inflight.clear()
    park.branch = {h: "main" for h in range(1, first[0] + 1)}
    _client(relay, park, latest=first[0] - 1, final=4)  # this relayer's turn: at once
    await r._update_client(link)
    ((_, args),) = relay.submitted
    assert bytes.fromhex(args["headers"][-1]) == f"{first[0]}/main".encode()
    r.db.close()


async def test_a_proof_refused_as_not_final_is_offered_again_within_a_second_without_the_prediction(
        tmp_path: Path) -> None:
    """A pipelined proof goes at the final height predicted for the relayer's update in flight; when the node dropped
    that update (a nonce gap) the relay refuses the proof as not final, and the next updates lift that within a block
    or two: it is offered again within a second, at the client's own final height (issue 16: a 6-8 s p95 tail)."""
    from protocol.errors import NotFinalError
    from protocol.light_client import UnknownParentError
    from relay.relayer.policy import RESUBMIT_AFTER_S, RETRY_SOON_S

    now = [50.0]
    relay = _Relay()
    r = _relayer(tmp_path, relay, {"dpos-park": _Park("dpos-park"), "poc-park": _Park("poc-park")}, heartbeat_s=None,
                 clock=lambda: now[0])
    for seq in (1, 2):
        r._on_event(_send_event("dpos-park", "poc-park", seq, 3))
    t1, t2 = r.packets["dpos-park/poc-park/lane-0/1"], r.packets["dpos-park/poc-park/lane-0/2"]
    r.__dict__["_predicted_final"] = {"dpos-park": 33}
    relay.refuse["packet.verify"] = NotFinalError("height 33 of dpos-park is not final", expected="<= 30", got=33)
    await r._submit(r.relay, "packet.verify", {"packet": t1.raw.hex()}, "verify", [t1])
    assert r._inflight[(t1.key, "verify")] == now[0] + RETRY_SOON_S and r.__dict__["_predicted_final"] == {}
    # any other refusal the chain's progress lifts keeps its wait, and the prediction
    r.__dict__["_predicted_final"] = {"dpos-park": 33}
    relay.refuse["packet.verify"] = UnknownParentError("parent not held")
    await r._submit(r.relay, "packet.verify", {"packet": t2.raw.hex()}, "verify", [t2])
    assert r._inflight[(t2.key, "verify")] == now[0] + RESUBMIT_AFTER_S
    assert r.__dict__["_predicted_final"] == {"dpos-park": 33}
    r.db.close()


class _NonceRelay(_Relay):
    """A relay node that hands out nonces as :class:`~adapters.common.park.ParkTarget` does and answers getAccount with
    its committed nonce and what its mempool holds; ``during_read`` runs while it answers getAccount."""

    account = "relayer-t"

    def __init__(self) -> None:
        super().__init__()
        self.nonces: dict[str, int] = {}
        self.next_nonce = 0
        self.committed = self.pending = 0
        self.during_read: Any = None

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        await super().submit(op, args)
        h = f"{self.next_nonce:064x}"
        self.nonces[h] = self.next_nonce
        self.next_nonce += 1
        return h

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if method == "getAccount":
            assert params == {"name": "relayer-t"}
            if self.during_read is not None:
                await self.during_read()
            return {"nonce": self.committed, "pending": self.pending}
        return await super().call(method, params)


async def test_transactions_a_node_dropped_behind_a_nonce_gap_are_offered_again_at_once(tmp_path: Path) -> None:
    """A block leaves out one of this relayer's relay transactions (its copy of a relay another relayer made first) and
    the node drops every later one of the sender: their packets are offered again on the next head, not after the
    six-second wait of an accepted submission (issue 16)."""
    relay = _NonceRelay()
    r = _relayer(tmp_path, relay, {"dpos-park": _Park("dpos-park"), "poc-park": _Park("poc-park")}, heartbeat_s=None)
    for seq in (1, 2, 3, 4):
        r._on_event(_send_event("dpos-park", "poc-park", seq, 3))
    ts = [r.packets[f"dpos-park/poc-park/lane-0/{seq}"] for seq in (1, 2, 3, 4)]
    for t in ts[:3]:  # nonces 0, 1, 2
        await r._submit(r.relay, "packet.verify", {"packet": t.raw.hex()}, "verify", [t])
    assert all(r._waiting(t, "verify") for t in ts[:3])

    relay.committed, relay.pending = 1, 2  # 0 in a block, 1 and 2 still pending: nothing is lost
    await r._reclaim_dropped(r.relay)
    assert all(r._waiting(t, "verify") for t in ts[:3]) and r.stats.dropped == 0

    async def submit_meanwhile() -> None:  # admitted while the account is read: pending, not judged
        await r._submit(r.relay, "packet.verify", {"packet": ts[3].raw.hex()}, "verify", [ts[3]])

    relay.pending, relay.during_read = 0, submit_meanwhile  # 1 and 2 dropped from the mempool
    await r._reclaim_dropped(r.relay)
    assert [r._waiting(t, "verify") for t in ts] == [True, False, False, True]
    assert r.stats.dropped == 2 and r.summary()["dropped"] == 2
    assert sorted(r._sent["relay"]) == [3]  # the landed one is forgotten, the one admitted meanwhile kept
    relay.during_read, relay.committed = None, 4
    await r._reclaim_dropped(r.relay)
    assert r._sent["relay"] == {} and r.stats.dropped == 2
    # the work of a dropped submission, submitted again during the read under the same nonce (the node hands the
    # dropped one's nonce out again): the new submission's wait stays
    await r._submit(r.relay, "packet.verify", {"packet": ts[0].raw.hex()}, "verify", [ts[0]])  # nonce 4

    async def again_at_the_same_nonce() -> None:
        relay.next_nonce = 4
        await r._submit(r.relay, "packet.verify", {"packet": ts[0].raw.hex()}, "verify", [ts[0]])

    relay.pending, relay.during_read = 0, again_at_the_same_nonce
    await r._reclaim_dropped(r.relay)
    assert r._waiting(ts[0], "verify") and r.stats.dropped == 2 and list(r._sent["relay"]) == [4]
    r.db.close()


@pytest.mark.parametrize(("src_final", "sent"), [(8, True), (2, False)])
async def test_a_never_verified_packet_is_timed_out_with_its_commitment_proof(tmp_path: Path, src_final: int,
                                                                            sent: bool) -> None:
    """Past its timeout, a packet the relay never verified is timed out on proof of its commitment on the source
    (at the source client's final height) and of no receipt on the target; while the source's client is not final
    past the commitment, nothing is sent (a timeout without that proof would be refused for good)."""
    relay = _Relay()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", 1, 3, timeout_ms=5_000)]
    _client(relay, a, latest=10, final=src_final)
    _client(relay, b, latest=10, final=8)
    b.time_ms = 6_000  # the target's final header is past the timeout
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None, wall_ms=lambda: 7_000)
    await r.step()
    timeouts = [args for op, args in relay.submitted if op == "packet.confirm_timeout"]
    if sent:
        ((args),) = timeouts
        assert args["commit_height"] == src_final and args["commit_proof"] == b"proof".hex()
        assert args["height"] == 8 and args["proof"] == b"proof".hex()
    else:
        assert timeouts == [] and not [op for op, _ in relay.submitted if op.startswith("packet.verify")]
    r.db.close()


async def test_recorded_witness_evidence_is_reported_to_the_park_once(tmp_path: Path) -> None:
    """A double-signing witness the relay's client recorded (not frozen on) is reported to its park by the heartbeat,
    which punishes it; the record is not sent again."""
    relay = _Relay()
    park = _Park("dpos-park", height=12, final=9)
    _client(relay, park, latest=12, final=9)
    record = {"witness": "witness-b", "height": 7, "header_a": "aa" * 8, "header_b": "bb" * 8}
    relay.status["dpos-park"]["evidence"] = [record, {"witness": "x"}]  # a malformed record is passed over
    now = [100.0]
    r = _relayer(tmp_path, relay, {"dpos-park": park}, heartbeat_s=1.0, clock=lambda: now[0])
    step = r._heartbeat_step_of(r.parks["dpos-park"])
    await step()
    assert park.submitted == [("witness.report_double_production", {"header_a": "aa" * 8, "header_b": "bb" * 8})]
    now[0] += 10
    await step()
    assert len(park.submitted) == 1
    r.db.close()


async def test_a_farmer_the_client_does_not_know_is_registered_with_a_proof_of_its_account(tmp_path: Path) -> None:
    """The relay's PoC client refuses a header of a farmer created after its genesis (header.poc.farmer_key); the
    relayer registers that farmer with a proof of its account at the client's final height, then feeds on."""
    from chains.poc.errors import FarmerKeyError

    relay = _Relay()
    park = _Park("poc-park", height=9, final=6)
    _client(relay, park, latest=7, final=5)
    relay.refuse["client.update"] = FarmerKeyError("farmer-a is not bound to a key")
    r = _relayer(tmp_path, relay, {"poc-park": park}, heartbeat_s=None)
    await r._update_client(r.parks["poc-park"])
    (first, _), (op, reg) = relay.submitted
    assert first == "client.update"
    assert op == "client.register_farmer"
    assert reg == {"chain_id": "poc-park", "height": 5, "name": "farmer-a", "account": b"01".hex(),
                   "proof": b"proof".hex()}
    r.db.close()


class _ReceiptPark(_Park):
    """A target that records timeouts itself (Fabric): its receipt paths hold what ``receipts`` says."""

    def __init__(self, chain_id: str) -> None:
        super().__init__(chain_id)
        self.receipts: dict[str, bytes] = {}

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        out = await super().query_many(keys)
        out.update({k: v.hex() for k, v in self.receipts.items() if k in keys})
        return out

    async def prove(self, key: bytes, height: int) -> Any:
        from adapters.common.roles import ProvenValue

        if key.decode() in self.receipts:
            return ProvenValue(height, key, self.receipts[key.decode()], b"attested", bytes(32))
        return await super().prove(key, height)

    async def header_time_ms(self, height: int) -> int:
        raise AssertionError("a target that records timeouts itself has no block time to read")


class _VerifiedRelay(_Relay):
    """The relay chain with ``verified`` packets recorded VERIFIED (and their certificates)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: set[str] = set()

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        return {k: ("aa" if k in self.verified else None) for k in keys}

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if method == "getCertificate":
            return {"key": (params or {})["key"], "cert": "of the relay"}
        return await super().call(method, params)


SENTINEL = hashlib.sha256(b"a timeout receipt").digest()


async def test_a_timeout_to_a_target_that_records_it_goes_through_its_receipt_first(tmp_path: Path) -> None:
    """Phase 4 to Fabric (ChainKind.timeout_receipt): past the timeout the relayer delivers the packet and its
    certificate to the target (``bridge.timeout_receipt``), never reading a block time; once the target's receipt
    path holds its timeout receipt, that (attested) value is what the relayer proves to the relay."""
    from protocol.paths import receipt_path, verified_path

    relay, a, b = _VerifiedRelay(), _Park("park-a"), _ReceiptPark("fabric-park")
    a.events_at[3] = [_send_event("park-a", "fabric-park", 1, 3, timeout_ms=5_000)]
    relay.verified.add(verified_path("park-a", "fabric-park", "lane-0", 1).decode())
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "fabric-park": b}, heartbeat_s=None, wall_ms=lambda: 4_999)
    r.parks["fabric-park"].timeout_receipt = SENTINEL
    r.parks["fabric-park"].duplicates_reach_blocks = True
    await r.step()
    assert [op for op, _ in b.submitted] == ["bridge.recv"]  # before the timeout: delivered as usual
    b.submitted.clear()
    r._wall_ms = lambda: 5_000
    r._inflight.clear()
    await r.step()
    ((op, args),) = b.submitted
    assert op == "bridge.timeout_receipt" and args["certificate"]["key"].startswith("relay/verified/park-a/")
    assert not [op for op, _ in relay.submitted if op == "packet.confirm_timeout"]  # nothing to prove yet
    b.receipts[receipt_path("park-a", "lane-0", 1).decode()] = SENTINEL
    await r.step()
    ((args),) = [a for op, a in relay.submitted if op == "packet.confirm_timeout"]
    assert args["proof"] == b"attested".hex() and args["height"] == 8 and "commit_proof" not in args
    assert len(b.submitted) == 1  # no second timeout_receipt once it is there
    r.db.close()


async def test_an_ack_at_the_receipt_path_is_never_proven_as_a_timeout(tmp_path: Path) -> None:
    from protocol.paths import receipt_path, verified_path

    relay, a, b = _VerifiedRelay(), _Park("park-a"), _ReceiptPark("fabric-park")
    a.events_at[3] = [_send_event("park-a", "fabric-park", 1, 3, timeout_ms=5_000)]
    relay.verified.add(verified_path("park-a", "fabric-park", "lane-0", 1).decode())
    b.receipts[receipt_path("park-a", "lane-0", 1).decode()] = bytes(32)  # an ack commitment: executed in time
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "fabric-park": b}, heartbeat_s=None, wall_ms=lambda: 9_000)
    r.parks["fabric-park"].timeout_receipt = SENTINEL
    await r.step()
    assert not [op for op, _ in b.submitted if op == "bridge.timeout_receipt"]
    assert not [op for op, _ in relay.submitted if op == "packet.confirm_timeout"]
    r.db.close()


async def test_a_never_verified_packet_to_such_a_target_is_timed_out_on_attested_absence(tmp_path: Path) -> None:
    """No certificate exists for a packet the relay never verified, so the target can write no timeout receipt: the
    relayer proves the receipt path's absence (SPEC §8.7, ``certified=False``), with the commitment's proof."""
    relay, a, b = _Relay(), _Park("park-a"), _ReceiptPark("fabric-park")
    a.events_at[3] = [_send_event("park-a", "fabric-park", 1, 3, timeout_ms=5_000)]
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "fabric-park": b}, heartbeat_s=None, wall_ms=lambda: 5_000)
    r.parks["fabric-park"].timeout_receipt = SENTINEL
    await r.step()
    assert b.submitted == []
    ((args),) = [a for op, a in relay.submitted if op == "packet.confirm_timeout"]
    assert args["commit_proof"] == b"proof".hex() and args["proof"] == b"proof".hex()
    r.db.close()


@pytest.mark.parametrize(("quiet_s", "park_ahead", "pinged"), [(3601, False, True), (3599, False, False),
                                                              (3601, True, False)])
async def test_a_quiet_channel_gets_a_keepalive_transaction(tmp_path: Path, quiet_s: int, park_ahead: bool,
                                                            pinged: bool) -> None:
    """ChainKind.keepalive_after_s (Fabric): the relay's client of a park that cuts blocks only for transactions
    expires without them; the heartbeat sends a no-op ``bridge.ping`` once the client has seen no new block for that
    long and the park has none to feed it (a park with newer blocks is fed instead)."""
    relay, park = _Relay(), _Park("fabric-park", height=10, final=10)
    _client(relay, park, latest=10 - park_ahead, final=10 - park_ahead)
    relay.status["fabric-park"]["final_timestamp_ms"] = 1_000_000
    now = [100.0]
    r = _relayer(tmp_path, relay, {"fabric-park": park}, heartbeat_s=1.0, clock=lambda: now[0],
                 wall_ms=lambda: 1_000_000 + quiet_s * 1000)
    r.parks["fabric-park"].keepalive_after_s = 3600.0
    step = r._heartbeat_step_of(r.parks["fabric-park"])
    await step()
    assert [op for op, _ in park.submitted] == (["bridge.ping"] if pinged else [])
    assert [op for op, _ in relay.submitted] == (["client.update"] if park_ahead else [])
    now[0] += 1.5  # the next heartbeat, the ping still in flight (its block not fed yet): not sent again
    await step()
    assert len(park.submitted) == int(pinged)
    now[0] += 5  # still no new block long after: the ping was lost, another one goes
    await step()
    assert len(park.submitted) == 2 * int(pinged)
    r.db.close()


class _BatchRelay(_VerifiedRelay):
    """The relay answering ``getCertificates`` with a batch naming its keys."""

    def __init__(self) -> None:
        super().__init__()
        self.batches_asked: list[list[str]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if method == "getCertificates":
            keys = (params or {})["keys"]
            self.batches_asked.append(keys)
            return {"commit": "of the relay", "records": [{"key": k} for k in keys]}
        return await super().call(method, params)


@pytest.mark.parametrize("batches", [True, False])
async def test_phase_3_goes_in_batches_to_a_target_that_takes_them(tmp_path: Path, batches: bool) -> None:
    """A target whose bridge takes ``bridge.recv_batch`` (ChainLink.batches) gets its packets 16 a transaction,
    each chunk under one certificate batch of exactly its packets' ``relay/verified`` keys, in order; any other
    target gets a ``bridge.recv`` per packet with its own certificate."""
    from protocol.paths import verified_path

    relay, a, b = _BatchRelay(), _Park("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", s, 3) for s in range(1, 21)]
    relay.verified |= {verified_path("park-a", "park-b", "lane-0", s).decode() for s in range(1, 21)}
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    r.parks["park-b"].batches = batches
    await r.step()
    ops = [op for op, _ in b.submitted]
    if not batches:
        assert ops == ["bridge.recv"] * 20 and relay.batches_asked == []
        r.db.close()
        return
    assert ops == ["bridge.recv_batch"] * 2
    keys = [verified_path("park-a", "park-b", "lane-0", s).decode() for s in range(1, 21)]
    assert relay.batches_asked == [keys[:16], keys[16:]]
    for (_, args), chunk in zip(b.submitted, (keys[:16], keys[16:]), strict=True):
        assert [decode_packet(bytes.fromhex(h)).sequence for h in args["packets"]] == [
            int(k.rsplit("/", 1)[1]) for k in chunk]
        assert [rec["key"] for rec in args["certificates"]["records"]] == chunk
    r.db.close()


async def test_packets_in_flight_to_the_relay_chain_are_bounded(tmp_path: Path) -> None:
    """A backlog goes to the relay chain RELAY_INFLIGHT_PACKETS at a time: what is submitted and not yet seen there
    holds back more, so a client update the relayer submits next is not queued behind the whole backlog."""
    from protocol.paths import verified_path
    from relay.relayer.relayer import RELAY_INFLIGHT_PACKETS

    relay, a, b = _VerifiedRelay(), _Park("park-a"), _Park("park-b")
    n = RELAY_INFLIGHT_PACKETS + 400
    a.events_at[3] = [_send_event("park-a", "park-b", s, 3) for s in range(1, n + 1)]
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)

    def verifying() -> list[int]:
        seqs = [decode_packet(bytes.fromhex(item["packet"])).sequence
                for op, args in relay.submitted if op == "packet.verify_batch" for item in args["items"]]
        relay.submitted.clear()
        return seqs

    await r.step()
    assert verifying() == list(range(1, RELAY_INFLIGHT_PACKETS + 1))
    await r.step()
    assert verifying() == []  # all of them still in flight: nothing more
    relay.verified |= {verified_path("park-a", "park-b", "lane-0", s).decode() for s in range(1, 201)}
    await r.step()  # 200 seen verified: room for 200 more, the oldest first
    assert verifying() == list(range(RELAY_INFLIGHT_PACKETS + 1, RELAY_INFLIGHT_PACKETS + 201))
    r.db.close()


class _ReceivedPark(_Park):
    """A target that executed ``received`` packets (receipt and ack in its state) in blocks the relay's client does
    not hold as final yet: proving a receipt finds nothing."""

    def __init__(self, chain_id: str, received: set[int]) -> None:
        super().__init__(chain_id)
        self.received = received

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        out = await super().query_many(keys)
        for k in keys:
            if k.startswith(("receipts/", "acks/")) and int(k.rsplit("/", 1)[1]) in self.received:
                out[k] = b"01".hex() if k.startswith("acks/") else "aa"
        return out


async def test_acks_not_yet_provable_leave_the_relay_room_to_verifications(tmp_path: Path) -> None:
    """Confirmations go first, but only those the relayer can prove count against RELAY_INFLIGHT_PACKETS: a thousand
    acks waiting for the target's finality must not hold back every verification."""
    from protocol.paths import verified_path
    from relay.relayer.relayer import RELAY_INFLIGHT_PACKETS

    received = set(range(1, 1001))
    relay, a, b = _VerifiedRelay(), _Park("park-a"), _ReceivedPark("park-b", received)
    a.events_at[3] = [_send_event("park-a", "park-b", s, 3) for s in range(1, 1201)]
    relay.verified |= {verified_path("park-a", "park-b", "lane-0", s).decode() for s in received}
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r.step()
    ops = {op for op, _ in relay.submitted if op.startswith("packet.")}
    assert ops == {"packet.verify_batch"}  # nothing confirmable yet
    verified = [decode_packet(bytes.fromhex(item["packet"])).sequence
                for op, args in relay.submitted if op == "packet.verify_batch" for item in args["items"]]
    assert verified == list(range(1001, 1201)) and len(verified) <= RELAY_INFLIGHT_PACKETS
    r.db.close()


async def test_packets_whose_ack_the_client_does_not_hold_final_are_not_read(tmp_path: Path) -> None:
    """Most packets in flight under load wait for the target's finality of their ack (a PoC park's window): a step
    reads the records of none of them until the relay's client of the target holds the ack's height final (issue 16:
    a step read every packet's records on three chains on each head)."""
    from protocol.paths import verified_path

    class _Reading(_VerifiedRelay):
        def __init__(self) -> None:
            super().__init__()
            self.read: list[str] = []

        async def query_many(self, keys: list[str]) -> dict[str, str | None]:
            self.read += keys
            return await super().query_many(keys)

    relay, a, b = _Reading(), _Park("park-a"), _ReceivedPark("park-b", {1, 2})
    a.events_at[3] = [_send_event("park-a", "park-b", s, 3) for s in (1, 2)]
    b.events_at.update({h: [{"type": "write_ack", "src": "park-a", "dst": "park-b", "lane": "lane-0", "sequence": s,
                             "ack": "01", "height": h}] for s, h in ((1, 5), (2, 7))})
    relay.verified |= {verified_path("park-a", "park-b", "lane-0", s).decode() for s in (1, 2)}
    _client(relay, a, latest=10, final=8)
    _client(relay, b, latest=10, final=6)  # the ack at 5 is final in the client, the one at 7 is not
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r.step()
    assert r.packets["park-a/park-b/lane-0/2"].ack_height == 7
    read = "".join(relay.read)
    assert "lane-0/1" in read and "lane-0/2" not in read
    assert r.progress["park-a->park-b/lane-0"].pending == {"confirm": 2}  # both shown waiting to be confirmed
    relay.read.clear()
    relay.status["park-b"]["final_height_now"] = 7  # the client's window passed since its last update (PoC)
    await r.step()
    assert "lane-0/2" in "".join(relay.read)
    r.db.close()


def test_proofs_go_at_the_height_a_proof_executed_now_is_judged_by() -> None:
    from relay.relayer.relayer import proof_height

    assert proof_height({"final_height": 6}) == 6
    assert proof_height({"final_height": 6, "final_height_now": 8}) == 8  # a PoC window passed since the update
    assert proof_height({"final_height": 6, "final_height_now": 6, "proof_height": 9}) == 9  # an update in flight
    assert proof_height({"final_height": 6, "final_height_now": 10, "proof_height": 9}) == 10


class _DepthClient:
    """A light client final ``depth`` headers below its newest (the fake parks' ``_Header`` encodings)."""

    depth = 2

    def __init__(self, latest: int) -> None:
        self.latest = latest
        self.final_height = max(0, latest - self.depth)

    def check_active(self, now_ms: int) -> None:
        return None

    def process_header(self, header: _Header, now_ms: int) -> None:
        if header.branch == "forged":
            from protocol.errors import HeaderError

            raise HeaderError("a header the client refuses")
        self.latest = max(self.latest, header.height)
        self.final_height = max(self.final_height, self.latest - self.depth)


def _depth_type() -> Any:
    from relay.chain.state_machine.clients import ClientType

    def decode(raw: bytes) -> _Header:
        h, branch = raw.decode().split("/")
        return _Header(int(h), branch)

    return ClientType(name="depth", create=lambda *a: None,  # type: ignore[arg-type,return-value]
                      decode_header=decode, to_state=lambda c: str(c.latest).encode(),  # type: ignore[attr-defined]
                      from_state=lambda cid, raw: _DepthClient(int(raw.decode())),  # type: ignore[arg-type,return-value]
                      latest_height=lambda c: c.latest)  # type: ignore[attr-defined]


class _StateRelay(_VerifiedRelay):
    """Serves the client states (``query``) of clients of the ``depth`` type."""

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        p = params or {}
        if method == "query" and p["key"].startswith("relay/client_state/"):
            chain = next(c for c, st in self.status.items() if st.get("client_id") == p["key"].rsplit("/", 1)[1])
            return {"key": p["key"], "value": str(self.status[chain]["latest_height"]).encode().hex()}
        return await super().call(method, params)


@pytest.mark.parametrize("known_type, pipeline", [(True, True), (False, True), (True, False)])
async def test_a_verify_goes_right_behind_the_client_update_that_makes_its_packet_final(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known_type: bool, pipeline: bool) -> None:
    """Phase 2 pipelined: the relayer computes, with the client type's own code on the client's state, the final
    height its update makes, and submits the verify at that height right behind the update (one relay block for
    both), and again while the update is in flight. A client type it cannot compute waits for the update, and so
    does a relayer configured with ``pipeline_proofs = false``."""
    from relay.relayer import client_updates

    monkeypatch.setitem(client_updates.CLIENT_TYPES, "depth", _depth_type())
    relay, a, b = _StateRelay(), _Park("park-a", height=14, final=12), _Park("park-b")
    a.events_at[11] = [_send_event("park-a", "park-b", 1, 11)]
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
        relay.status[p.chain_id] |= {"client_id": f"depth-{p.chain_id}",
                                     "client_type": "depth" if known_type else "unknown"}
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None, pipeline_proofs=pipeline)
    await r.step()
    ops = [(op, args) for op, args in relay.submitted if op != "client.update" or args["chain_id"] == "park-a"]
    if not known_type or not pipeline:
        assert [op for op, _ in ops] == ["client.update"]  # the packet (height 11) is above the client's final 8
        r.db.close()
        return
    (op_u, update), (op_v, verify) = ops
    assert (op_u, op_v) == ("client.update", "packet.verify_batch")
    assert [bytes.fromhex(h) for h in update["headers"]] == [b"11/main", b"12/main", b"13/main", b"14/main"]
    assert verify["height"] == 12  # 14 - depth: what the update makes final, not the 8 the client holds now
    # while that update is in flight, proofs are made at the height it makes final, and no update is sent again
    relay.submitted.clear()
    st = await r._update_client(r.parks["park-a"])
    assert (st["final_height"], st["proof_height"]) == (8, 12)
    assert relay.submitted == []
    r.db.close()


async def test_no_prediction_when_the_client_refuses_the_headers(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A header the client's own code refuses: no proof height is predicted (the relay chain's answer to the
    update decides), so no verify rides on it."""
    from relay.relayer import client_updates

    monkeypatch.setitem(client_updates.CLIENT_TYPES, "depth", _depth_type())
    relay, a = _StateRelay(), _Park("park-a", height=14, final=12)
    a.branch[13] = "forged"
    _client(relay, a, latest=10, final=8)
    relay.status["park-a"] |= {"client_id": "depth-a", "client_type": "depth"}
    r = _relayer(tmp_path, relay, {"park-a": a}, heartbeat_s=None)
    st = await r._update_client(r.parks["park-a"])
    assert "proof_height" not in st and st["final_height"] == 8
    assert [op for op, _ in relay.submitted] == ["client.update"]
    r.db.close()


async def test_the_ack_the_targets_state_holds_replaces_one_seen_on_an_abandoned_branch(tmp_path: Path) -> None:
    """A reorg of the target executes a packet again, and its ack names the relayer that did (SPEC §6.10): the ack an
    event of the abandoned branch showed can never be proven. The one the target's state holds replaces it, and a
    confirmation refused for the stale ack (parked for minutes as `never`) is offered again at once. A forks test
    timed out in CI this way: both relayers kept confirming the abandoned branch's ack."""
    from protocol.paths import ack_path

    relay = _Relay()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[4] = [_send_event("park-a", "park-b", 1, 4)]
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r._scan(r.parks["park-a"])
    t = r.packets["park-a/park-b/lane-0/1"]
    stale, kept = bytes.fromhex("0a0b"), bytes.fromhex("0c0d")
    t.ack = stale
    r._inflight[(t.key, "confirm")] = r._clock() + 300  # its confirmation was refused as `never`
    ack_key = ack_path("park-a", "lane-0", 1).decode()
    # the bridge stores the ack as hex text; the records the relayer read hold that text's hex
    same = {"park-b": {ack_key: stale.hex().encode().hex()}}
    r._records_of(t, {}, same)
    assert t.ack == stale and r._waiting(t, "confirm"), "the same ack: nothing changes"
    r._records_of(t, {}, {"park-b": {ack_key: kept.hex().encode().hex()}})
    assert t.ack == kept and not r._waiting(t, "confirm")
    assert r.db.execute("SELECT ack FROM packets WHERE key = ?", (t.key,)).fetchone() == (kept.hex(),)
    r.db.close()


async def test_a_step_runs_its_chains_side_by_side_and_a_failure_on_one_does_not_cut_the_others_short() -> None:
    """A path step submits to the relay, the target and the source side by side (issue 16): a settlement run on the
    source no longer holds back the relay's confirmations. One chain failing (a park down) leaves the others'
    submissions made, and the step still reports the failure."""
    from relay.relayer.relayer import _all_of

    order: list[str] = []
    gate = asyncio.Event()

    async def relay_side() -> None:
        order.append("relay started")
        await gate.wait()  # held until the source side has run: the two overlap
        order.append("relay submitted")

    async def source_side() -> None:
        order.append("source started")
        gate.set()
        raise ConnectionError("source park down")

    async def target_side() -> None:
        await asyncio.sleep(0)
        order.append("target submitted")

    with pytest.raises(ConnectionError, match="source park down"):
        await _all_of(relay_side(), source_side(), target_side())
    assert order[:2] == ["relay started", "source started"]
    assert {"relay submitted", "target submitted"} <= set(order)


class _MeetingPark(_Park):
    """A target whose deliveries wait until the relay chain has a verification under way (and say they started):
    a step that submitted to one chain after the other would never get past its first submission."""

    def __init__(self, chain_id: str, relay_started: asyncio.Event, fail: BaseException | None = None) -> None:
        super().__init__(chain_id)
        self.started = asyncio.Event()
        self.relay_started = relay_started
        self.fail = fail

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self.started.set()
        await self.relay_started.wait()
        if self.fail is not None:
            raise self.fail
        return await super().submit(op, args)


class _MeetingRelay(_VerifiedRelay):
    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.target: _MeetingPark | None = None

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self.started.set()
        assert self.target is not None
        await self.target.started.wait()
        for _ in range(20):  # a submission takes a while: a failing target raises before this one lands
            await asyncio.sleep(0)
        return await super().submit(op, args)


@pytest.mark.parametrize("target_fails", [False, True])
async def test_a_path_step_submits_to_the_relay_and_the_target_at_once(tmp_path: Path, target_fails: bool) -> None:
    """``_path_step``'s wiring (issue 16): packets 1-20, verified, go to the target while 21-40 go to the relay for
    verification, and each chain's submission waits for the other's to start, so the step finishes only if they run
    side by side. A target failing with an unexpected error does not cut the relay's submission short, and the step
    still raises it."""
    from protocol.paths import verified_path

    relay = _MeetingRelay()
    a = _Park("park-a")
    b = _MeetingPark("park-b", relay.started, ConnectionResetError("target down") if target_fails else None)
    relay.target = b
    a.events_at[3] = [_send_event("park-a", "park-b", s, 3) for s in range(1, 41)]
    relay.verified |= {verified_path("park-a", "park-b", "lane-0", s).decode() for s in range(1, 21)}
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    if target_fails:
        with pytest.raises(ConnectionResetError, match="target down"):
            await asyncio.wait_for(r.step(), 10)
    else:
        await asyncio.wait_for(r.step(), 10)
    verified = [decode_packet(bytes.fromhex(item["packet"])).sequence
                for op, args in relay.submitted if op == "packet.verify_batch" for item in args["items"]]
    assert verified == list(range(21, 41))
    delivered = [op for op, _ in b.submitted]
    assert delivered == ([] if target_fails else ["bridge.recv"] * 20)
    r.db.close()
