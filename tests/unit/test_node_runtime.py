"""The shared node runtime on a minimal single-signer chain (an in-test ChainRules, not a park).

Covers what every park node relies on: blocks built from the mempool with correct roots, state
queries with proofs that verify, bad RPC input answered with a typed error and no change, admin
methods behind the token, and a restarted node replaying its SQLite blocks.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.common.park import ParkSource, ParkTarget
from adapters.common.rpc import JsonRpcClient, RemoteError
from chains.common.node import BlockEntry, ChainRules, NodeConfig, ParkNode
from chains.common.state import ChainState
from chains.common.tx import Tx, base_app, create_account
from protocol.crypto import Ed25519Signer
from protocol.errors import InsufficientFundsError, ProtocolError, ReplayError
from protocol.paths import balance_path
from protocol.state_commitment import Proof, verify_membership, verify_non_membership


@dataclass(frozen=True)
class _Header:
    height: int
    parent_hash: bytes
    timestamp_ms: int
    tx_root: bytes
    state_root: bytes

    def encode(self) -> bytes:
        return struct.pack(">QQ", self.height, self.timestamp_ms) + self.parent_hash + self.tx_root + self.state_root

    @classmethod
    def decode(cls, raw: bytes) -> _Header:
        if len(raw) != 16 + 96:
            raise ProtocolError("bad header length")
        h, t = struct.unpack(">QQ", raw[:16])
        return cls(h, raw[16:48], t, raw[48:80], raw[80:112])

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


class _Rules(ChainRules):
    def __init__(self, alice: bytes) -> None:
        self.chain_id = "test-chain"
        self.app = base_app(self.chain_id)
        self._alice = alice

    def decode_header(self, raw: bytes) -> _Header:
        return _Header.decode(raw)

    def genesis(self) -> tuple[_Header, ChainState]:
        st = ChainState()
        create_account(st, "alice", self._alice)
        create_account(st, "bob", bytes(range(32)))
        st.add_balance("alice", "kWh", 1000)
        return _Header(0, bytes(32), 0, bytes(32), st.root), st

    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        if header.timestamp_ms <= parent.header.timestamp_ms:
            raise ProtocolError("time must increase")

    def weight(self, header: Any, parent: BlockEntry) -> int:
        return int(header.height)

    def final_height(self, node: ParkNode) -> int:
        return max(0, node.head.header.height - 1)


def _node(tmp: Path, alice: Ed25519Signer) -> ParkNode:
    return ParkNode(_Rules(alice.pubkey), NodeConfig(name="n1", data_dir=tmp, admin_token="t0ken"))


def _produce(node: ParkNode) -> BlockEntry:
    parent = node.head
    ts = parent.header.timestamp_ms + 1000
    return node.build_block(lambda txr, sr: _Header(parent.header.height + 1, parent.hash, ts, txr, sr), ts, "n1")


async def test_blocks_queries_and_restart(tmp_path: Path) -> None:
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(tmp_path, alice)
    await node.start()
    try:
        async with JsonRpcClient(node.url, side="test-chain") as client:
            target = ParkTarget(client, "test-chain", "alice", alice)
            source = ParkSource(client, _Header.decode)
            h1 = await target.submit("transfer", {"to": "bob", "denom": "kWh", "amount_wh": 300})
            h2 = await target.submit("transfer", {"to": "bob", "denom": "kWh", "amount_wh": 200})
            assert len(node.mempool) == 2
            assert target.nonces == {h1: 0, h2: 1}  # what a relayer reads to tell a dropped transaction (issue 16)
            _produce(node)
            _produce(node)  # makes block 1 final under the test rule
            res = await target.track(h1, timeout_s=1)
            assert res["ok"] and res["height"] == 1
            assert (await target.track(h2, timeout_s=1))["ok"]
            assert await source.balance("bob", "kWh") == 500
            assert await source.balance("alice", "kWh", height=0) == 1000

            pv = await source.prove(balance_path("bob", "kWh"), 1)
            assert pv.value == b"500"
            verify_membership(pv.state_root, pv.key, pv.value, Proof.decode(pv.proof))
            absent = await source.prove(balance_path("carol", "kWh"), 1)
            assert absent.value is None
            verify_non_membership(absent.state_root, absent.key, Proof.decode(absent.proof))
            hdrs = await source.headers(1, 2)
            assert [h.height for h in hdrs] == [1, 2] and hdrs[0].state_root == pv.state_root

            # bad input: typed errors, nothing changes
            root_before = node.head.header.state_root
            with pytest.raises(InsufficientFundsError):
                node.rules.app.execute_tx(ChainState(node.head.state.tree),  # type: ignore[union-attr]
                                          _signed(alice, 2, {"to": "bob", "denom": "kWh", "amount_wh": 10**9}),
                                          node.rules.context(node.head.header))
            with pytest.raises(ReplayError):
                await client.call("submitTx", {"tx": _signed(alice, 0, {"to": "bob", "denom": "kWh",
                                                                          "amount_wh": 1}).to_json()})
            with pytest.raises(RemoteError):
                await client.call("noSuchMethod")
            with pytest.raises(ProtocolError):
                await client.call("getHeader", {"height": -1})
            with pytest.raises(RemoteError):  # admin without the token
                await client.call("admin.setPeers", {"peers": ["http://127.0.0.1:1"]})
            assert node.peers == [] and node.head.header.state_root == root_before and not node.mempool
            async with aiohttp.ClientSession() as s, s.post(node.url + "/rpc", data=b"{not json") as r:
                assert (await r.json())["error"]["code"] == -32700
            authed = JsonRpcClient(node.url, side="test-chain", admin_token="t0ken")
            async with authed:
                assert await authed.call("admin.setPeers", {"peers": []}, admin=True) == []
    finally:
        await node.stop()

    # restart: the node replays its blocks from SQLite and resumes at the same head
    again = _node(tmp_path, alice)
    assert again.head.header.height == 2
    assert again.head.state is not None and again.head.state.balance("bob", "kWh") == 500
    again.db.close()


def _signed(signer: Ed25519Signer, nonce: int, args: dict[str, Any]) -> Any:
    from chains.common.tx import Tx

    return Tx.signed(signer, "test-chain", "alice", nonce, "transfer", args)


async def test_websocket_pushes_new_heads_and_errors_are_classified(tmp_path: Path) -> None:
    from protocol.errors import TransportError

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(tmp_path, alice)
    await node.start()
    try:
        async with aiohttp.ClientSession() as s, s.ws_connect(node.url + "/ws") as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello == {"type": "subscribed", "height": 0, "hash": node.genesis_hash.hex()}
            produced = _produce(node)
            msg = await ws.receive_json(timeout=5)
            assert msg == {"type": "new_head", "height": 1, "hash": produced.hash.hex()}
        url = node.url
    finally:
        await node.stop()
    # the node is gone: an I/O failure, retryable, naming the side that failed
    async with JsonRpcClient(url, side="test-chain", timeout_s=2) as client:
        with pytest.raises(TransportError) as info:
            await client.call("status")
    assert info.value.retryable and info.value.side == "test-chain"


async def test_a_reorg_returns_the_abandoned_transactions_to_the_mempool(tmp_path: Path) -> None:
    """A transfer included on a branch that a heavier fork replaces is included again on the new branch (the
    product bug behind a `transfer` that printed a packet key which then never existed)."""
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(tmp_path, alice)
    try:
        tx = _signed(alice, 0, {"to": "bob", "denom": "kWh", "amount_wh": 300})
        node.mempool[tx.hash()] = tx
        genesis = node.head
        a1 = _produce(node)
        assert [t.hash() for t in a1.txs] == [tx.hash()] and not node.mempool

        def on(parent: BlockEntry, ts: int) -> BlockEntry:
            return node.build_block(lambda txr, sr: _Header(parent.header.height + 1, parent.hash, ts, txr, sr), ts,
                                    "n2", parent=parent)

        b1 = on(genesis, 1500)  # equal weight: the head may or may not switch here (ties go by hash)
        b2 = on(b1, 2500)
        assert node.head.hash == b2.hash and a1.hash not in node.by_height.values()
        _produce(node)
        canonical = [t.hash() for h in range(1, node.head.header.height + 1) for t in node.canonical(h).txs]  # type: ignore[union-attr]
        assert canonical == [tx.hash()], "the abandoned branch's transfer is included again, once"
        assert node.head.state is not None and node.head.state.balance("bob", "kWh") == 300
        assert not node.mempool
    finally:
        node.db.close()


def test_a_block_holds_at_most_max_block_bytes_of_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What does not fit a block's byte budget waits in the mempool for the next block: every block a node makes
    reaches its peers (``/p2p/block`` reads at most 4 MiB), however many large transactions are queued."""
    import chains.common.node as node_mod

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(tmp_path, alice)
    txs = [_signed(alice, n, {"to": "bob", "denom": "kWh", "amount_wh": 1, "memo": "x" * 2_000}) for n in range(5)]
    size = txs[0].size()
    assert all(abs(tx.size() - size) <= 2 for tx in txs)
    monkeypatch.setattr(node_mod, "PARK_MAX_BLOCK_BYTES", 2 * size + 2)
    for tx in txs:
        node.mempool[tx.hash()] = tx
    heights = []
    for _ in range(3):
        e = _produce(node)
        heights.append(len(e.txs))
        assert sum(tx.size() for tx in e.txs) <= node_mod.PARK_MAX_BLOCK_BYTES
    assert heights == [2, 2, 1] and not node.mempool
    node.db.close()


async def test_a_senders_transactions_reach_every_peer_in_nonce_order(tmp_path: Path) -> None:
    """A relayer submits its run of nonces to one node; every peer's mempool must hold the whole run, else only that
    node's blocks carry them (a peer refuses a nonce past a gap). Gossip posts them to each peer in admission order."""
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    n2 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n2", data_dir=tmp_path / "n2", admin_token="t0ken"))
    handle, open_posts, most_open = n2._handle_p2p_tx, [0], [0]

    async def counted(request: Any) -> Any:  # how many of n1's posts are in flight at once
        open_posts[0] += 1
        most_open[0] = max(most_open[0], open_posts[0])
        try:
            return await handle(request)
        finally:
            open_posts[0] -= 1

    n2._handle_p2p_tx = counted  # type: ignore[method-assign]
    await n2.start()
    n1 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n1", data_dir=tmp_path / "n1", admin_token="t0ken",
                                                   peers=[n2.url]))
    await n1.start()
    try:
        async with JsonRpcClient(n1.url, side="test-chain") as client, n2._lock:  # the peer busy: gossip piles up
            target = ParkTarget(client, "test-chain", "alice", alice)
            for _ in range(120):
                await target.submit("transfer", {"to": "bob", "denom": "kWh", "amount_wh": 1})
        await n1._tx_outbox[n2.url].join()  # every queued transaction posted and answered
        assert len(n1.mempool) == 120
        # one post at a time: 120 concurrent posts of large transactions timed out and overtook each other
        assert most_open[0] == 1
        assert sorted(tx.nonce for tx in n2.mempool.values()) == list(range(120))
        entry = _produce(n2)  # the peer's own block carries the whole run
        assert len(entry.txs) == 120 and entry.state is not None and entry.state.balance("bob", "kWh") == 120
    finally:
        await n1.stop()
        await n2.stop()


def _transfers(node: ParkNode, alice: Ed25519Signer, blocks: int) -> ParkNode:
    """``blocks`` blocks on ``node``, each with one transfer of 1 Wh from alice to bob."""
    for nonce in range(blocks):
        node.submit_tx(_signed(alice, nonce, {"to": "bob", "denom": "kWh", "amount_wh": 1}))
        _produce(node)
    return node


def test_old_block_bodies_leave_memory_and_are_read_back_from_the_database(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Past STATE_RETENTION below the final height a block keeps only its header in memory; its transactions, events
    and results are read back from SQLite, the same as before, and a restarted node (and an older database without
    stored bodies) ends the same way."""
    import sqlite3

    from chains.common import node as node_mod

    monkeypatch.setattr(node_mod, "STATE_RETENTION", 2)
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _transfers(_node(tmp_path, alice), alice, 70)
    # final = 69 under the test rule; a window of 2 prunes at every height (a wide one every 64): cutoff 67 evicted
    # heights 1..66
    blocks = {h: node_mod._block_json(node.canonical(h)) for h in range(1, 71)}  # type: ignore[arg-type]
    assert all(node.canonical(h).evicted for h in range(1, 67))  # type: ignore[union-attr]
    assert not any(node.canonical(h).evicted for h in range(67, 71))  # type: ignore[union-attr]
    assert blocks[5]["txs"][0]["nonce"] == 4 and blocks[5]["events"][0]["type"] == "transfer"
    assert blocks[5]["tx_results"][0]["ok"] is True
    node.db.close()

    again = _node(tmp_path, alice)  # replays, then evicts what is old
    assert again.head.header.height == 70 and all(again.canonical(h).evicted for h in range(1, 67))  # type: ignore[union-attr]
    assert {h: node_mod._block_json(again.canonical(h)) for h in range(1, 71)} == blocks  # type: ignore[arg-type]
    again.db.close()

    with sqlite3.connect(tmp_path / "test-chain-n1.sqlite3") as db:  # a database from before bodies were stored
        db.execute("ALTER TABLE blocks DROP COLUMN body")
    migrated = _node(tmp_path, alice)
    assert {h: node_mod._block_json(migrated.canonical(h)) for h in range(1, 71)} == blocks  # type: ignore[arg-type]
    assert migrated.db.execute("SELECT COUNT(*) FROM blocks WHERE body IS NULL").fetchone()[0] == 0
    migrated.db.close()


def test_storing_a_block_reads_the_next_seq_from_an_index(tmp_path: Path) -> None:
    """A block's ``seq`` is ``MAX(seq) + 1``: read from the ``blocks_seq`` index, not by a scan of every stored block
    (which grew with the chain: tens of ms a block after a few thousand); an older database gains the index."""
    import sqlite3

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _transfers(_node(tmp_path, alice), alice, 3)

    def plan(db: sqlite3.Connection) -> str:
        return " ".join(str(row[-1]) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT COALESCE(MAX(seq),0)+1 FROM blocks").fetchall())

    assert "USING COVERING INDEX blocks_seq" in plan(node.db)
    seqs = [r[0] for r in node.db.execute("SELECT seq FROM blocks ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3
    node.db.close()
    with sqlite3.connect(tmp_path / "test-chain-n1.sqlite3") as db:  # a database from before the index
        db.execute("DROP INDEX blocks_seq")
        assert "INDEX" not in plan(db)
    again = _node(tmp_path, alice)
    assert "USING COVERING INDEX blocks_seq" in plan(again.db)
    assert [r[0] for r in again.db.execute("SELECT seq FROM blocks ORDER BY seq")] == seqs
    again.db.close()


def test_bodies_leave_memory_sooner_than_states(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body is evicted BODY_RETENTION below the final height while the state stays for proofs (STATE_RETENTION)."""
    from chains.common import node as node_mod

    monkeypatch.setattr(node_mod, "BODY_RETENTION", 3)
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _transfers(_node(tmp_path, alice), alice, 20)
    # final = 19: bodies below 16 are in SQLite only, every state is still held
    assert [h for h in range(1, 21) if node.canonical(h).evicted] == list(range(1, 16))  # type: ignore[union-attr]
    assert all(node.canonical(h).state is not None for h in range(1, 21))  # type: ignore[union-attr]
    assert node.canonical(3).txs[0].nonce == 2 and node.canonical(3).events[0]["amount_wh"] == 1  # type: ignore[union-attr]
    node.db.close()


def test_a_block_executed_while_validating_its_proposal_is_not_executed_again(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """validate_and_add(executed=...) takes the state of an execution under a header with the same parent, roots and
    height (the relay validated the proposal); any other execution is not trusted: the block runs again."""
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    n1 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n1", data_dir=tmp_path / "n1"))
    n2 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n2", data_dir=tmp_path / "n2"))
    n1.submit_tx(_signed(alice, 0, {"to": "bob", "denom": "kWh", "amount_wh": 7}))
    b1 = _produce(n1)
    n1.submit_tx(_signed(alice, 1, {"to": "bob", "denom": "kWh", "amount_wh": 8}))
    b2 = _produce(n1)
    pre = n2._execute(b1.header, b1.txs, n2.head)  # what validating the proposal ran

    class Ran(Exception):
        pass

    def no_second_run(*a: Any) -> Any:
        raise Ran

    monkeypatch.setattr(n2, "_execute", no_second_run)
    got = n2.validate_and_add(b1.header, b1.txs, 10**13, executed=pre)
    assert got.state is pre.state and got.events == pre.events and n2.head is got
    assert got.state is not None and got.state.balance("bob", "kWh") == 7
    with pytest.raises(Ran):  # an execution of another block is not taken for this one
        n2.validate_and_add(b2.header, b2.txs, 10**13, executed=pre)
    n1.db.close()
    n2.db.close()


def test_a_transaction_relying_on_the_senders_previous_one_is_admitted_behind_it(tmp_path: Path) -> None:
    """Admission tries a queued transaction the head's state refuses once more after the sender's own queued ones:
    one that relies on the previous (here ``use`` needs the mark ``mark`` writes; on the relay, a proof at the
    height the client update before it makes final) goes into the mempool behind it and both into one block. One
    that fails either way, or behind more than PENDING_REPLAY queued transactions, keeps the head's refusal."""
    from chains.common.node import PENDING_REPLAY
    from chains.common.tx import Tx

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(tmp_path, alice)

    def mark(state: ChainState, tx: Tx, ctx: Any) -> list[dict[str, Any]]:
        state.set(b"marks/" + tx.args["name"].encode(), b"1")
        return []

    def use(state: ChainState, tx: Tx, ctx: Any) -> list[dict[str, Any]]:
        if state.get(b"marks/" + tx.args["name"].encode()) is None:
            raise ReplayError("no such mark yet", got=tx.args["name"])
        return [{"type": "used", "name": tx.args["name"]}]

    node.rules.app.register("mark", mark)
    node.rules.app.register("use", use)

    def signed(nonce: int, op: str, name: str) -> Tx:
        return Tx.signed(alice, "test-chain", "alice", nonce, op, {"name": name})

    with pytest.raises(ReplayError):  # nothing queued: the head's state decides
        node.submit_tx(signed(0, "use", "m1"))
    node.submit_tx(signed(0, "mark", "m1"))
    node.submit_tx(signed(1, "use", "m1"))  # refused by the head's state, runs behind the queued mark
    with pytest.raises(ReplayError):  # m2 is marked by nothing queued: the head's refusal stands
        node.submit_tx(signed(2, "use", "m2"))
    blk = _produce(node)
    assert [r["ok"] for r in blk.tx_results] == [True, True] and blk.events[-1]["type"] == "used"
    for n in range(2, 2 + PENDING_REPLAY + 1):
        node.submit_tx(signed(n, "mark", f"x{n}"))
    with pytest.raises(ReplayError):  # behind more than PENDING_REPLAY queued: not replayed
        node.submit_tx(signed(2 + PENDING_REPLAY + 1, "use", "x2"))


async def test_a_node_syncs_onto_a_peers_branch_of_equal_weight_and_lower_hash(tmp_path: Path) -> None:
    """Fork choice breaks a weight tie by the lower hash, and so must sync: with production paused, two nodes on
    branches of equal weight otherwise stayed apart for good (a PoC fork test timed out in CI this way)."""
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    n1 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n1", data_dir=tmp_path / "n1", admin_token="t0ken"))
    n2 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n2", data_dir=tmp_path / "n2", admin_token="t0ken"))
    await n1.start()
    await n2.start()
    try:
        for node, ts in ((n1, 1000), (n2, 1001)):  # one block each at height 1: equal weight, different hashes
            parent = node.head
            node.build_block(lambda txr, sr, p=parent, t=ts: _Header(1, p.hash, t, txr, sr), ts, node.config.name)
        low, high = sorted((n1, n2), key=lambda n: n.head.hash)
        assert low.head.weight == high.head.weight and low.head.hash != high.head.hash
        low_head = low.head.hash
        low.peers, high.peers = [high.url], [low.url]
        await low._sync_once()
        assert low.head.hash == low_head, "the lower hash already wins: nothing to take"
        await high._sync_once()
        assert high.head.hash == low_head, "the higher-hash node takes the peer's lower-hash branch"
    finally:
        await n1.stop()
        await n2.stop()


async def test_get_blocks_stops_at_its_byte_budget_but_always_answers_one(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """200 full relay blocks in one answer would be hundreds of MB: ``getBlocks`` stops once the blocks it holds pass
    ``GET_BLOCKS_BYTES`` of transactions, and a client asks again from where it stopped (as sync does)."""
    from chains.common import node as node_mod

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _transfers(_node(tmp_path, alice), alice, 6)
    try:
        size = node.canonical(1).txs[0].size()  # type: ignore[union-attr]
        assert (await node._rpc_get_blocks({"from": 1, "to": 6})) == [
            node_mod._block_json(node.canonical(h)) for h in range(1, 7)]  # type: ignore[arg-type]
        monkeypatch.setattr(node_mod, "GET_BLOCKS_BYTES", 2 * size + size // 2)
        assert [b["height"] for b in await node._rpc_get_blocks({"from": 1, "to": 6})] == [1, 2]
        monkeypatch.setattr(node_mod, "GET_BLOCKS_BYTES", 1)
        assert [b["height"] for b in await node._rpc_get_blocks({"from": 3, "to": 6})] == [3]
    finally:
        node.db.close()


async def test_a_gossiped_block_the_peer_holds_is_answered_without_reading_its_body(tmp_path: Path) -> None:
    """Every relay validator gossips each decided block, megabytes each: a peer that holds the block the sender's
    ``X-Parkrelay-Block-Hash`` names answers at once. The hint only ever skips a body: an unknown or malformed one
    reads the body as before."""
    from chains.common.node import BLOCK_HASH_HEADER, JSON_HEADERS

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    n2 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n2", data_dir=tmp_path / "n2", admin_token="t0ken"))
    bodies_read = [0]
    read_body = n2._p2p_body

    async def counted(request: Any, spec: Any) -> Any:
        bodies_read[0] += 1
        return await read_body(request, spec)

    n2._p2p_body = counted  # type: ignore[method-assign]
    await n2.start()
    n1 = ParkNode(_Rules(alice.pubkey), NodeConfig(name="n1", data_dir=tmp_path / "n1", admin_token="t0ken",
                                                   peers=[n2.url]))
    await n1.start()
    try:
        n1.submit_tx(_signed(alice, 0, {"to": "bob", "denom": "kWh", "amount_wh": 5}))
        entry = _produce(n1)
        await n1._gossip_block(entry.header, entry.txs)
        assert n2.head.hash == entry.hash and bodies_read[0] == 1  # new to n2: read and added
        await n1._gossip_block(entry.header, entry.txs)
        assert bodies_read[0] == 1  # held: not read again

        async def post(hint: str | None) -> tuple[int, Any]:
            headers = JSON_HEADERS if hint is None else {**JSON_HEADERS, BLOCK_HASH_HEADER: hint}
            async with aiohttp.ClientSession() as s, s.post(n2.url + "/p2p/block", data=b"{not json",
                                                            headers=headers) as r:
                return r.status, await r.json()

        assert await post(entry.hash.hex()) == (200, {"ok": True})  # a held block's hint: garbage body never read
        for hint in (None, "00" * 32, "zz" * 32, entry.hash.hex()[:-2], entry.hash.hex() + "00"):
            status, answer = await post(hint)  # read, and refused as the malformed body it is
            assert status == 400 and answer["error"]["data"]["code"] == "rpc.parse_error", (hint, answer)
        assert n2.head.hash == entry.hash
    finally:
        await n1.stop()
        await n2.stop()


def _claim(state: ChainState, tx: Any, ctx: Any) -> list[dict[str, Any]]:
    """A relayer-like op: the first ``claim`` of an id does the work, any later one finds it done."""
    key = f"claims/{tx.args['id']}".encode()
    if state.get(key) is not None:
        raise ReplayError("claimed already", got=tx.args["id"])
    state.set(key, tx.sender.encode())
    return [{"type": "claimed", "id": tx.args["id"], "by": tx.sender}]


def test_a_park_leaves_a_transaction_whose_work_another_did_first_out_of_its_block(tmp_path: Path) -> None:
    """Two senders' identical work both pass admission; in the block the second finds it done (``packet.replay``) and
    leaves the block, its nonce unused: its sender's next transaction waits behind the gap (a relayer reclaims such
    work, SPEC §10.5; the relay chain keeps its own as no-ops, SPEC §1). Admission refuses it again, for free."""
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    carol = Ed25519Signer(hashlib.sha256(b"test-only carol").digest())
    node = _node(tmp_path, alice)
    try:
        node.rules.app.register("claim", _claim)
        assert node.head.state is not None
        create_account(node.head.state, "carol", carol.pubkey)  # the head's state, before any block
        first = Tx.signed(alice, "test-chain", "alice", 0, "claim", {"id": "p1"})
        second = Tx.signed(carol, "test-chain", "carol", 0, "claim", {"id": "p1"})
        after = Tx.signed(carol, "test-chain", "carol", 1, "claim", {"id": "p2"})
        for tx in (first, second, after):
            node.submit_tx(tx)
        block = _produce(node)
        state = node.head.state
        assert state is not None
        assert state.get(b"claims/p1") == b"alice"
        assert [t.hash() for t in block.txs] == [first.hash()]
        assert state.get(b"claims/p2") is None
        assert state.get_json(b"accounts/carol")["nonce"] == 0
        pending = dict(node.mempool)
        with pytest.raises(ReplayError):
            node.submit_tx(Tx.signed(carol, "test-chain", "carol", 0, "claim", {"id": "p1"}))
        assert node.mempool == pending
    finally:
        node.db.close()
