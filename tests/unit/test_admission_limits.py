"""Admission bounds of a node (issue 18): the mempool in all and per sender, ``/rpc`` bodies, the per-address rate
of ``/rpc`` requests and ``/ws`` messages, ``/ws`` connections; the same rate bound on the operator API; the
``[limits]`` table that sets them. Each refusal is the typed error naming the limit and its value, and changes
nothing; below the bound the same input passes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.common.rpc import error_from_rpc
from chains.common import jsonrpc as rpc
from chains.common import node as node_mod
from chains.common.node import AdmissionLimits, NodeConfig, ParkNode
from chains.common.state import ChainState
from chains.common.tx import Tx, account_path, create_account
from protocol.crypto import Ed25519Signer
from protocol.errors import (
    AccountMempoolFullError,
    ConnectionLimitError,
    Disposition,
    MempoolFullError,
    NonceError,
    RequestRateLimitedError,
)
from relay.ops.api import server as api_server
from relay.ops.config import LIMIT_RANGES, ConfigError, load_config
from tests.unit.test_node_runtime import _Header, _produce, _Rules

ALICE = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
CAROL = Ed25519Signer(hashlib.sha256(b"test-only carol").digest())


class _TwoSenders(_Rules):
    """The runtime test chain with a second funded account (``carol``)."""

    def __init__(self) -> None:
        super().__init__(ALICE.pubkey)

    def genesis(self) -> tuple[_Header, ChainState]:
        _, st = super().genesis()
        create_account(st, "carol", CAROL.pubkey)
        st.add_balance("carol", "kWh", 1000)
        return _Header(0, bytes(32), 0, bytes(32), st.root), st


def _tx(sender: str, nonce: int) -> Tx:
    signer = ALICE if sender == "alice" else CAROL
    return Tx.signed(signer, "test-chain", sender, nonce, "transfer", {"to": "bob", "denom": "kWh", "amount_wh": 1})


def _node(tmp: Path, **limits: Any) -> ParkNode:
    return ParkNode(_TwoSenders(), NodeConfig(name="n1", data_dir=tmp, admin_token="t0ken",
                                              limits=AdmissionLimits(**limits)))


@contextlib.asynccontextmanager
async def _served(tmp: Path, **limits: Any) -> AsyncIterator[ParkNode]:
    """A started node with these bounds."""
    node = _node(tmp, **limits)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def _status(rid: int = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "status"}).encode()


# -- the mempool ----------------------------------------------------------------------------------------------------


def test_the_mempool_refuses_past_its_global_bound_and_changes_nothing(tmp_path: Path) -> None:
    node = _node(tmp_path, mempool_txs=3)
    for nonce in range(2):
        node.submit_tx(_tx("alice", nonce))
    node.submit_tx(_tx("carol", 0))  # below the bound: admitted
    held = dict(node.mempool)
    with pytest.raises(MempoolFullError) as err:
        node.submit_tx(_tx("carol", 1))
    assert type(err.value) is MempoolFullError and err.value.code == "mempool.full"
    assert "limits.mempool_txs = 3" in err.value.message
    assert (err.value.expected, err.value.got) == ("< 3", 3)
    assert node.mempool == held
    assert node.submit_tx(_tx("alice", 0)) == _tx("alice", 0).hash(), "a transaction held already takes nothing"
    _produce(node)  # the block takes all three: room again
    assert not node.mempool
    node.submit_tx(_tx("carol", 1))


def test_one_sender_fills_at_most_its_share_of_the_mempool(tmp_path: Path) -> None:
    node = _node(tmp_path, mempool_txs_per_account=2)
    node.submit_tx(_tx("alice", 0))
    node.submit_tx(_tx("alice", 1))
    held = dict(node.mempool)
    with pytest.raises(AccountMempoolFullError) as err:
        node.submit_tx(_tx("alice", 2))
    assert err.value.code == "mempool.account_full" and err.value.disposition is Disposition.AFTER_PROGRESS
    assert "limits.mempool_txs_per_account = 2" in err.value.message and "'alice'" in err.value.message
    assert (err.value.expected, err.value.got) == ("< 2", 2)
    assert node.mempool == held
    node.submit_tx(_tx("carol", 0))  # another sender is not held back by alice's queue
    _produce(node)  # alice's queued ones go into a block: her bound lifts
    node.submit_tx(_tx("alice", 2))


def test_a_second_transaction_for_a_pending_nonce_is_refused_so_the_next_one_does_not_queue_behind_a_gap(
        tmp_path: Path) -> None:
    """Two clients of one account (a relay operator's attestor and its CLI) read nonce + pending at once: the
    second transaction for that nonce is refused (``tx.nonce``), so ``pending`` stays what a client adds, and the
    next transaction (nonce + pending) reaches a block instead of being pruned behind a gap."""
    node = _node(tmp_path)
    first = node.submit_tx(_tx("alice", 0))
    rival = Tx.signed(ALICE, "test-chain", "alice", 0, "transfer", {"to": "bob", "denom": "kWh", "amount_wh": 2})
    held = dict(node.mempool)
    with pytest.raises(NonceError) as err:
        node.submit_tx(rival)
    assert err.value.code == "tx.nonce" and first.hex()[:16] in err.value.message and err.value.got == 0
    assert node.mempool == held and node.mempool.count_of("alice") == 1
    assert node.submit_tx(_tx("alice", 0)) == first, "the same transaction again is still taken"
    nxt = node.submit_tx(_tx("alice", node.mempool.count_of("alice")))  # what a client reads: nonce 0 + 1 pending
    _produce(node)
    assert not node.mempool, "both went into the block: none was pruned behind a gap"
    assert node.head.state is not None and node.head.state.get_json(account_path("alice"))["nonce"] == 2
    assert nxt not in node.mempool


async def test_a_gossiped_transaction_meets_the_same_bounds(tmp_path: Path) -> None:
    async with _served(tmp_path, mempool_txs_per_account=1) as served, aiohttp.ClientSession() as s:
        served.submit_tx(_tx("alice", 0))
        async with s.post(served.url + "/p2p/tx", json={"tx": _tx("alice", 1).to_json()}) as r:
            answer = await r.json()
        assert r.status == 200 and answer["ok"] is False
        assert answer["error"]["data"]["code"] == "mempool.account_full"
        assert len(served.mempool) == 1
        async with s.post(served.url + "/p2p/tx", json={"tx": _tx("carol", 0).to_json()}) as r:
            assert (await r.json()) == {"ok": True}


# -- /rpc ----------------------------------------------------------------------------------------------------------


async def test_rpc_requests_past_the_bucket_of_an_address_are_429_and_change_nothing(tmp_path: Path) -> None:
    async with (_served(tmp_path, rpc_requests_per_s=1e-6, rpc_burst=3) as served,
                aiohttp.ClientSession() as s):
        for i in range(3):
            async with s.post(served.url + "/rpc", data=_status(i)) as r:
                assert r.status == 200 and "result" in await r.json()
        submit = {"jsonrpc": "2.0", "id": 9, "method": "submitTx", "params": {"tx": _tx("alice", 0).to_json()}}
        async with s.post(served.url + "/rpc", json=submit) as r:
            answer = await r.json()
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        assert not served.mempool
    err = answer["error"]
    assert err["code"] == rpc.SERVER_ERROR and err["data"]["code"] == "rpc.rate_limited"
    assert "limits.rpc_burst = 3" in err["message"] and "limits.rpc_requests_per_s = 1e-06" in err["message"]
    back = error_from_rpc(err)
    assert isinstance(back, RequestRateLimitedError) and back.disposition is Disposition.RETRY_SOON


async def test_an_rpc_body_past_the_bound_is_413_naming_it(tmp_path: Path) -> None:
    def body(size: int) -> bytes:
        head = _status()[:-1] + b', "x": "'
        return head + b"a" * (size - len(head) - 2) + b'"}'

    async def chunks(raw: bytes) -> AsyncIterator[bytes]:  # no Content-Length: the bound holds on what is read
        yield raw

    assert len(body(64 * 1024)) == 64 * 1024
    async with _served(tmp_path, rpc_body_bytes=64 * 1024) as served, aiohttp.ClientSession() as s:
        async with s.post(served.url + "/rpc", data=body(64 * 1024)) as r:  # at the bound: read (and refused for
            assert r.status == 200                                             # its unknown member)
            assert (await r.json())["error"]["data"]["code"] == "rpc.invalid_request"
        for data in (body(64 * 1024 + 1), chunks(body(64 * 1024 + 1))):
            async with s.post(served.url + "/rpc", data=data) as r:
                answer = await r.json()
            assert r.status == 413
            assert answer["error"]["data"]["code"] == "rpc.body_too_large"
            assert "limits.rpc_body_bytes = 65536" in answer["error"]["message"]
            assert answer["error"]["data"]["expected"] == "<= 65536 bytes"
        # /p2p/* keeps the bound a full block's gossip needs
        big_tx = {"tx": {**_tx("alice", 0).to_json(), "pad": "a" * (70 * 1024)}}
        async with s.post(served.url + "/p2p/tx", json=big_tx) as r:
            assert r.status == 200, await r.text()


async def test_a_declared_length_past_the_bound_is_refused_before_the_body_is_sent(tmp_path: Path) -> None:
    async with _served(tmp_path, rpc_body_bytes=64 * 1024) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10485760\r\n\r\n")  # 10 MiB announced, none sent
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 413")


# -- /ws -----------------------------------------------------------------------------------------------------------


async def test_ws_messages_share_the_bucket_and_a_flooding_socket_is_closed(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_mod, "WS_REFUSALS_BEFORE_CLOSE", 3)
    async with (_served(tmp_path, rpc_requests_per_s=1e-6, rpc_burst=2) as served, aiohttp.ClientSession() as s,
                s.ws_connect(served.url + "/ws") as ws):
        assert (await ws.receive_json())["type"] == "subscribed"
        await ws.send_bytes(_status(1))
        assert (await ws.receive_json())["result"]["chain_id"] == "test-chain"
        async with s.post(served.url + "/rpc", data=_status(2)) as r:  # the address's second token
            assert r.status == 200
        for _ in range(2):  # refused, answered, the socket stays open
            await ws.send_bytes(_status(3))
            err = (await ws.receive_json())["error"]
            assert err["data"]["code"] == "rpc.rate_limited" and "limits.rpc_burst = 2" in err["message"]
        await ws.send_bytes(_status(4))  # the third refusal in a row closes it
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION


def test_the_pacer_spaces_requests_evenly_after_its_burst() -> None:
    from chains.common.jsonrpc import Pacer

    pace = Pacer(10.0, 3)  # 10/s, 3 at once
    assert [pace.delay(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    delays = [pace.delay(100.0) for _ in range(3)]  # then one slot every 0.1 s
    assert delays == pytest.approx([0.1, 0.2, 0.3])
    assert pace.delay(101.0) == 0.0  # a quiet second refills the burst
    assert pace.delay(200.0) == 0.0 and Pacer(1.0, 1).delay(5.0) == 0.0


async def test_ws_requests_past_the_node_wide_pace_wait_their_turn_and_are_answered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket's requests share one pace (limits.ws_requests_per_s): past it the node waits before answering
    (backpressure), never refuses; a subscriber's pushed heads are not paced."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *a: Any, **kw: Any) -> Any:
        if delay >= 0.05:  # the pace's waits (the node's own loops sleep otherwise)
            slept.append(delay)
            delay = 0.0
        return await real_sleep(delay, *a, **kw)

    async with (_served(tmp_path, ws_requests_per_s=10.0, ws_burst=2) as served, aiohttp.ClientSession() as s,
                s.ws_connect(served.url + "/ws") as a, s.ws_connect(served.url + "/ws") as b):
        for ws in (a, b):
            assert (await ws.receive_json())["type"] == "subscribed"
        monkeypatch.setattr(node_mod.asyncio, "sleep", record)
        for i in range(3):
            for ws in (a, b):
                await ws.send_bytes(_status(i))
                while True:
                    msg = await ws.receive_json()
                    if "result" in msg or "error" in msg:
                        break
                assert msg["result"]["chain_id"] == "test-chain"  # answered, not refused
    assert len(slept) == 4 and all(d > 0 for d in slept)  # 6 requests, 2 at once, then 4 paced


async def test_a_ws_message_past_the_body_bound_closes_the_socket(tmp_path: Path) -> None:
    async with (_served(tmp_path, rpc_body_bytes=64 * 1024) as served, aiohttp.ClientSession() as s,
                s.ws_connect(served.url + "/ws") as ws):
        await ws.receive_json()
        await ws.send_bytes(b" " * (64 * 1024 + 1))
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def _refused_upgrade(url: str, local: str = "127.0.0.1") -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local, 0))) as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await s.ws_connect(url + "/ws")
        assert handshake.value.status == 503
        async with s.get(url + "/ws") as r:  # the same refusal, read as a plain GET
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            body: dict[str, Any] = await r.json()
    err = body["error"]
    assert err["data"]["code"] == ConnectionLimitError.code and err["data"]["disposition"] == "retry_soon"
    return err


async def test_ws_connections_are_bounded_per_address_and_in_all(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        served = await stack.enter_async_context(_served(tmp_path, ws_connections=3, ws_connections_per_ip=2))
        sessions = [await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=(f"127.0.0.{i}", 0)))) for i in (1, 1, 2, 3)]
        a1, a2 = [await s.ws_connect(served.url + "/ws") for s in sessions[:2]]
        err = await _refused_upgrade(served.url)
        assert "limits.ws_connections_per_ip = 2" in err["message"] and err["data"]["got"] == 2
        a3 = await sessions[2].ws_connect(served.url + "/ws")  # another address: below both bounds
        err = await _refused_upgrade(served.url, "127.0.0.3")
        assert "limits.ws_connections = 3" in err["message"] and err["data"]["expected"] == "< 3"
        await a1.close()
        for _ in range(1000):  # the node counts the socket out when its handler returns, just after the close
            if len(served._ws_clients) < 3:
                break
            await asyncio.sleep(0)
        b = await sessions[3].ws_connect(served.url + "/ws")  # a subscriber left: room again
        assert (await b.receive_json())["type"] == "subscribed"
        assert served._ws_per_ip == {"127.0.0.1": 1, "127.0.0.2": 1, "127.0.0.3": 1}
        assert not (a2.closed or a3.closed)


# -- the rate buckets ----------------------------------------------------------------------------------------------


def test_a_bucket_pays_its_burst_then_refills_at_its_rate_per_address() -> None:
    b = rpc.RateBuckets(10.0, 3)
    assert [b.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take("b", 0.0), "another address has its own bucket"
    assert not b.take("a", 0.05) and b.take("a", 0.15)  # one token refilled after 0.1 s
    assert [b.take("a", 100.0) for _ in range(4)] == [True, True, True, False], "refills up to the burst only"


def test_buckets_kept_are_bounded() -> None:
    b = rpc.RateBuckets(1.0, 2, max_clients=4)
    for i in range(10):  # nothing refilled yet: the oldest go
        b.take(f"idle-{i}", 0.0)
        assert len(b) <= 4
    for i in range(3):  # at t = 10 the idle ones are full again: they go first
        assert b.take(f"busy-{i}", 10.0) and b.take(f"busy-{i}", 10.0)
        assert len(b) <= 4
    assert not b.take("busy-0", 10.0), "a busy address is not forgotten while refilled ones are kept"


# -- the operator API ----------------------------------------------------------------------------------------------


class _Backend:
    cfg = None
    relayer = None


async def test_the_operator_api_bounds_the_rate_of_an_address() -> None:
    app = api_server.build_app(_Backend(), None, limits=AdmissionLimits(rpc_requests_per_s=1e-6, rpc_burst=2))  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        for _ in range(2):
            r = await client.get("/api/v1/nothing")
            assert r.status == 404
        r = await client.get("/api/v1/nothing")
        assert r.status == 429 and r.headers["Retry-After"] == "1"
        err = (await r.json())["error"]
        assert err["code"] == "rpc.rate_limited" and err["disposition"] == "retry_soon"
        assert "limits.rpc_burst = 2" in err["message"]
    finally:
        await client.close()


async def test_the_operator_api_service_takes_the_deployments_limits(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text(BASE + '[relay]\nvalidators = ["op-a"]\nbase_port = 31100\n'
                 '[limits]\nrpc_requests_per_s = 1\nrpc_burst = 1\n')
    cfg = load_config(p)
    client: TestClient[Any, Any] = TestClient(TestServer(api_server.ApiServer(cfg, api_server.ApiOptions(0)).app))
    await client.start_server()
    try:
        assert (await client.get("/api/v1/nothing")).status == 404
        r = await client.get("/api/v1/nothing")
        assert r.status == 429 and "limits.rpc_burst = 1" in (await r.json())["error"]["message"]
    finally:
        await client.close()


# -- [limits] ------------------------------------------------------------------------------------------------------

BASE = """
[deployment]
data_dir = "data"

[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a"]
base_port = 31000
"""


def _load(tmp: Path, limits: str) -> Any:
    p = tmp / "d.toml"
    p.write_text(BASE + "[limits]\n" + limits)
    return load_config(p)


def test_limits_default_to_the_runtimes_defaults_and_the_devnet_documents_each(tmp_path: Path) -> None:
    assert _load(tmp_path, "").limits == AdmissionLimits()
    devnet = (Path(__file__).resolve().parents[2] / "deploy" / "devnet.toml").read_text()
    for key in LIMIT_RANGES:
        assert f"\n{key} = " in devnet, key
    assert set(LIMIT_RANGES) == set(AdmissionLimits.__dataclass_fields__)
    for key, (_, lo, hi) in LIMIT_RANGES.items():
        assert lo <= getattr(AdmissionLimits(), key) <= hi, key


@pytest.mark.parametrize(("text", "want"), [
    ("mempool_txs = 5\nmempool_txs_per_account = 2\n", {"mempool_txs": 5, "mempool_txs_per_account": 2}),
    ("rpc_requests_per_s = 0.5e1\nrpc_burst = 7\n", {"rpc_requests_per_s": 5.0, "rpc_burst": 7}),
    ("rpc_requests_per_s = 3\n", {"rpc_requests_per_s": 3.0}),
    ("rpc_body_bytes = 65536\nws_connections = 1\nws_connections_per_ip = 1\n",
     {"rpc_body_bytes": 65536, "ws_connections": 1, "ws_connections_per_ip": 1}),
    ("ws_requests_per_s = 250\nws_burst = 10\n", {"ws_requests_per_s": 250.0, "ws_burst": 10}),
])
def test_limits_are_read_from_the_table(tmp_path: Path, text: str, want: dict[str, Any]) -> None:
    limits = _load(tmp_path, text).limits
    assert {k: getattr(limits, k) for k in want} == want
    assert isinstance(limits.rpc_requests_per_s, float)


@pytest.mark.parametrize(("text", "named"), [
    ("mempool_txs = 0\n", "limits.mempool_txs"),
    ("ws_requests_per_s = 0\n", "limits.ws_requests_per_s"),
    ("ws_burst = 1.5\n", "limits.ws_burst"),
    ("mempool_txs = 1.5\n", "limits.mempool_txs"),
    ('mempool_txs_per_account = "2000"\n', "limits.mempool_txs_per_account"),
    ("mempool_txs_per_account = true\n", "limits.mempool_txs_per_account"),
    ("rpc_body_bytes = 1024\n", "limits.rpc_body_bytes"),
    ("rpc_requests_per_s = 0\n", "limits.rpc_requests_per_s"),
    ("rpc_requests_per_s = true\n", "limits.rpc_requests_per_s"),
    ("rpc_burst = -1\n", "limits.rpc_burst"),
    ("ws_connections = 1000001\n", "limits.ws_connections"),
    ("ws_connections_per_ip = 2.0\n", "limits.ws_connections_per_ip"),
    ("mempool_size = 5\n", r"\[limits\] has unknown keys \['mempool_size'\]"),
])
def test_a_bad_limit_is_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        _load(tmp_path, text)

def test_limits_is_a_table(tmp_path: Path) -> None:
    p = tmp_path / "d.toml"
    p.write_text("limits = 5\n" + BASE)
    with pytest.raises(ConfigError, match="limits"):
        load_config(p)


def test_every_node_of_a_deployment_takes_its_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.ops import devnet, nodes

    monkeypatch.chdir(tmp_path)
    p = tmp_path / "d.toml"
    p.write_text(BASE + '[relay]\nvalidators = ["op-a"]\nbase_port = 31100\n[limits]\nmempool_txs_per_account = 7\n')
    cfg = load_config(p)
    devnet.init(cfg)
    for kind, chain in (("dpos", "dpos-park"), ("relay", None)):
        node = nodes.load_node(cfg, kind, chain, "witness-a" if chain else "op-a")
        try:
            assert node.config.limits == AdmissionLimits(mempool_txs_per_account=7), kind
        finally:
            node.db.close()


def test_the_mempool_keeps_its_sender_index_in_step() -> None:
    from chains.common.node import Mempool

    pool = Mempool()
    a0, a1, b0 = _tx("alice", 0), _tx("alice", 1), _tx("bob", 0)
    for t in (a0, a1, b0):
        pool[t.hash()] = t
    assert pool.of("alice") == [a0, a1] and pool.count_of("bob") == 1
    pool.pop(a0.hash())
    assert pool.pop(a0.hash(), None) is None and pool.of("alice") == [a1]
    del pool[b0.hash()]
    assert pool.count_of("bob") == 0 and pool.of("bob") == []
    assert pool.setdefault(b0.hash(), b0) is b0 and pool.of("bob") == [b0]
    pool[a1.hash()] = a1  # set again: indexed once
    assert pool.count_of("alice") == 1
    with pytest.raises(TypeError):
        pool.update({a0.hash(): a0})
    with pytest.raises(TypeError):
        pool.popitem()
    pool.clear()
    assert pool.of("alice") == [] and not pool
