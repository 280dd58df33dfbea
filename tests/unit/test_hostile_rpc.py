"""Hostile input against real nodes (issue 9): a DPoS witness and a relay validator, built from a devnet config
by the same code as ``parkrelay node`` and served on loopback by their own event loop in a thread.

Property, for ``POST /rpc``, ``/ws`` messages and every ``/p2p/*`` route: whatever the body, the answer is
never HTTP 500, always JSON with a JSON-RPC error object (or, for a request that happens to be valid, a
result of a read-only method), and the node's state does not change — same head, same state root, empty
mempool, same peers and switches. Example counts are modest and derandomized so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from chains.common import jsonrpc as rpc
from chains.common.node import ParkNode
from relay.ops.nodes import load_node
from tests.integration.harness import Devnet, free_port_block
from tests.unit.hostile import p2p_bodies, request_bodies

T = TypeVar("T")
DPOS = "dpos-park"
SETTINGS = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])
REFUSALS = {rpc.PARSE_ERROR, rpc.INVALID_REQUEST, rpc.METHOD_NOT_FOUND, rpc.INVALID_PARAMS, rpc.SERVER_ERROR,
            rpc.UNAUTHORIZED}
"""Every error code a node may answer hostile input with; -32603 (a bug) is not among them."""
TX_FIELDS = ("chain_id", "sender", "nonce", "op", "args", "signature")


class ServedNode:
    """A node on its own event loop in a daemon thread; :meth:`run` executes a coroutine there."""

    def __init__(self, make: Callable[[], ParkNode]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="served-node", daemon=True)
        self.thread.start()
        self.node: ParkNode = self.run(self._start(make))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    async def _start(self, make: Callable[[], ParkNode]) -> ParkNode:
        node = make()  # in the loop's thread: the node's SQLite connection belongs to it
        node.producing = False  # a DPoS witness alone would otherwise make blocks; a lone relay validator cannot
        await node.start()
        return node

    def snapshot(self) -> tuple[Any, ...]:
        async def take() -> tuple[Any, ...]:
            n = self.node
            return (n.head.header.height, n.head.hash, n.head.header.state_root, len(n.blocks), sorted(n.mempool),
                    list(n.peers), n.producing, n._gossip_enabled)
        return self.run(take())

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=30)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.run(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Devnet:
    d = Devnet(tmp_path_factory.mktemp("hostile"), chains=[
        {"id": DPOS, "kind": "dpos", "nodes": ["witness-a"], "block_interval_ms": 1000,
         "accounts": {"alice": 10**6, "operator": 0}}],
        relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4)})
    d.write()
    return d


@pytest.fixture(scope="module", params=["dpos", "relay"])
def served(request: pytest.FixtureRequest, devnet: Devnet) -> Iterator[ServedNode]:
    cfg = devnet.cfg
    assert cfg is not None
    if request.param == "dpos":
        s = ServedNode(lambda: load_node(cfg, "dpos", DPOS, "witness-a"))
    else:
        s = ServedNode(lambda: load_node(cfg, "relay", None, "op-a"))
    try:
        yield s
    finally:
        s.close()


def _param_names(node: ParkNode) -> list[str]:
    return sorted({name for m in node.methods.values() for name in m.params} | set(TX_FIELDS))


def check_rpc_answer(node: ParkNode, sent: bytes, status: int, raw: bytes) -> None:
    assert status in (200, 413), (status, raw[:300], sent[:300])
    answer = json.loads(raw)
    assert answer["jsonrpc"] == "2.0" and "id" in answer, answer
    if "result" in answer:  # the generator hit a valid read-only call; the unchanged state is checked anyway
        assert "error" not in answer
        return
    err = answer["error"]
    assert isinstance(err["code"], int) and err["code"] in REFUSALS, (err, sent[:300])
    assert isinstance(err["message"], str) and err["message"]
    if err["code"] != rpc.UNAUTHORIZED:
        assert isinstance(err["data"]["code"], str), err  # the typed error's stable code
    if err["code"] == rpc.INVALID_PARAMS and err["data"].get("param") is not None:
        assert err["data"]["param"] in err["message"], err


def check_p2p_answer(status: int, raw: bytes, sent: bytes) -> None:
    assert status in (200, 400, 413), (status, raw[:300], sent[:300])
    answer = json.loads(raw)
    assert answer["ok"] is False, (answer, sent[:300])
    err = answer["error"]
    assert isinstance(err["code"], int) and err["code"] in REFUSALS, (err, sent[:300])
    assert isinstance(err["message"], str)


def test_every_method_declares_its_params(served: ServedNode) -> None:
    methods = served.node.methods
    assert {"status", "getHeader", "submitTx", "query", "admin.setPeers"} <= set(methods)
    if _is_relay(served.node):
        assert {"getCommit", "getCertificate", "getValidators", "getClientStatus"} <= set(methods)
    for name, m in methods.items():
        for pname, p in m.params.items():
            assert isinstance(p, rpc.Param), (name, pname)


def test_rpc_never_500_and_changes_nothing(served: ServedNode) -> None:
    node, before = served.node, served.snapshot()
    bodies = request_bodies(sorted(node.methods), _param_names(node))

    @SETTINGS
    @given(bodies)
    def prop(body: bytes) -> None:
        status, raw = served.post("/rpc", body)
        check_rpc_answer(node, body, status, raw)
        assert served.snapshot() == before

    prop()


def _ws_answer(ws: ClientConnection) -> dict[str, Any]:
    while True:
        msg = json.loads(ws.recv(timeout=30))
        if "jsonrpc" in msg:  # not a pushed head
            return dict(msg)


def test_ws_messages_never_break_the_socket_and_change_nothing(served: ServedNode) -> None:
    node, before = served.node, served.snapshot()
    bodies = request_bodies(sorted(node.methods), _param_names(node))
    with connect(f"ws://127.0.0.1:{node.port}/ws", max_size=None, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"

        @SETTINGS
        @given(bodies)
        def prop(body: bytes) -> None:
            try:
                ws.send(body.decode("utf-8"))  # a text frame must be UTF-8; anything else goes as binary
            except UnicodeDecodeError:
                ws.send(body)
            check_rpc_answer(node, body, 200, json.dumps(_ws_answer(ws)).encode())
            assert served.snapshot() == before

        prop()
        # the subscription still works after all that: a plain request is answered
        ws.send(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "status"}))
        assert _ws_answer(ws)["result"]["height"] == before[0]


def test_p2p_routes_never_500_and_change_nothing(served: ServedNode) -> None:
    from chains.common.node import P2P_BLOCK, P2P_TX
    from relay.chain.node import P2P_CONSENSUS

    node, before = served.node, served.snapshot()
    routes = {"/p2p/block": [*P2P_BLOCK, *TX_FIELDS], "/p2p/tx": [*P2P_TX, *TX_FIELDS]}
    if _is_relay(node):
        routes["/p2p/consensus"] = list(P2P_CONSENSUS)

    @SETTINGS
    @given(st.sampled_from(sorted(routes)).flatmap(lambda r: st.tuples(st.just(r), p2p_bodies(routes[r]))))
    def prop(route_body: tuple[str, bytes]) -> None:
        route, body = route_body
        status, raw = served.post(route, body)
        check_p2p_answer(status, raw, body)
        assert served.snapshot() == before

    prop()


def test_oversized_bodies_are_413_with_an_error_object(served: ServedNode) -> None:
    before = served.snapshot()
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": {"x": "' + b"a" * rpc.MAX_BODY_BYTES + b'"}}'
    status, raw = served.post("/rpc", big)
    assert status == 413
    assert json.loads(raw)["error"]["code"] == rpc.INVALID_REQUEST
    assert json.loads(raw)["error"]["data"]["code"] == "rpc.body_too_large"
    # /p2p/* reads the node's own bound: 4 MiB on a park, twice a full block and 1 MiB on a relay validator
    bound = served.node.p2p_body_bytes
    relay = _is_relay(served.node)
    assert bound == (2 * served.node.rules.max_block_bytes + 2**20 if relay else rpc.MAX_BODY_BYTES)
    p2p_big = b'{"tx": {"x": "' + b"a" * bound + b'"}}'
    status, raw = served.post("/p2p/tx", p2p_big)
    assert status == 413 and json.loads(raw)["ok"] is False
    assert served.snapshot() == before


def test_admin_methods_with_the_token_check_param_types(served: ServedNode, devnet: Devnet) -> None:
    """With the bearer token, wrong types still never reach the handler: invalid params naming the parameter."""
    node, before = served.node, served.snapshot()
    auth = {"Authorization": f"Bearer {node.admin_token}"}
    cases = [("admin.setPeers", {"peers": "http://x"}, "peers"), ("admin.setPeers", {"peers": [1]}, "peers"),
             ("admin.setPeers", {}, "peers"), ("admin.setGossip", {"enabled": 0}, "enabled"),
             ("admin.setGossip", {"enabled": "false"}, "enabled"), ("admin.setProducing", {"enabled": None}, "enabled"),
             ("admin.addPeer", {"url": ["x"]}, "url"), ("admin.addPeer", {"url": "x", "extra": 1}, "extra")]
    for method, params, param in cases:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        status, raw = served.post("/rpc", body, auth)
        err = json.loads(raw)["error"]
        assert status == 200 and err["code"] == rpc.INVALID_PARAMS and err["data"]["param"] == param, (method, err)
        assert served.snapshot() == before
    # and the token is what lets a valid call through (so the cases above were refused for their params)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "admin.setGossip", "params": {"enabled": True}}).encode()
    assert json.loads(served.post("/rpc", body, auth)[1])["result"] is True
    assert json.loads(served.post("/rpc", body)[1])["error"]["code"] == rpc.UNAUTHORIZED


@pytest.mark.parametrize(("method", "params", "param"), [
    ("getHeader", {"height": "1"}, "height"), ("getHeader", {"height": 1.0}, "height"),
    ("getHeader", {"height": True}, "height"), ("getBlock", {"height": -1}, "height"),
    ("getHeaders", {"from": 0}, "to"), ("getEvents", {"from": 0, "to": "x"}, "to"),
    ("getEvents", {"from": 0, "type": 1}, "type"), ("getTxResult", {"hash": "00", "lookback": "200"}, "lookback"),
    ("getTxResult", {"hash": 5}, "hash"), ("query", {"key": "a", "prove": "yes"}, "prove"),
    ("query", {"key": {"a": 1}}, "key"), ("queryMany", {"keys": ["a"] * 1001}, "keys"),
    ("getBalance", {"account": "alice", "denom": 5}, "denom"), ("getAccount", {}, "name"),
    ("getBlockByHash", {"hash": "xyz"}, "hash"), ("submitTx", {"tx": "00"}, "tx"), ("status", {"a": 1}, "a"),
])
def test_wrong_param_types_are_invalid_params_naming_the_param(served: ServedNode, method: str,
                                                              params: dict[str, Any], param: str) -> None:
    before = served.snapshot()
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": method, "params": params}).encode()
    status, raw = served.post("/rpc", body)
    answer = json.loads(raw)
    assert status == 200 and answer["id"] == 9
    assert answer["error"]["code"] == rpc.INVALID_PARAMS and answer["error"]["data"]["param"] == param, answer
    assert param in answer["error"]["message"]
    assert served.snapshot() == before


def test_the_relay_checks_its_own_methods_params(served: ServedNode) -> None:
    relay = _is_relay(served.node)
    for method, params, param in [("getCertificate", {"key": 1}, "key"), ("getCommit", {"height": "1"}, "height"),
                                  ("getClientStatus", {"chain_id": None}, "chain_id"),
                                  ("getValidators", {"height": 1.5}, "height")]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        err = json.loads(served.post("/rpc", body)[1])["error"]
        if relay:
            assert err["code"] == rpc.INVALID_PARAMS and err["data"]["param"] == param, (method, err)
        else:  # a park node has no such method
            assert err["code"] == rpc.METHOD_NOT_FOUND, (method, err)


def _is_relay(node: ParkNode) -> bool:
    from relay.chain.node import RelayRules

    return isinstance(node.rules, RelayRules)



def test_get_rights_reports_where_the_rights_are(served: ServedNode) -> None:
    """``getRights`` answers the rights report of the head (none issued at genesis), at a height too."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getRights", "params": {}}).encode()
    status, raw = served.post("/rpc", body)
    report = json.loads(raw)["result"]
    assert status == 200 and {k: report[k] for k in ("live", "escrowed", "burning", "bookings")} == {
        "live": {}, "escrowed": {}, "burning": {}, "bookings": {}}
    assert report["height"] == served.node.head.header.height


def _call(served: ServedNode, method: str, params: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    answer: dict[str, Any] = json.loads(served.post("/rpc", body)[1])
    return answer


def test_batched_reads_answer_what_the_single_reads_do(served: ServedNode) -> None:
    """``proveMany`` (parks) and ``getCertificates`` (relay) give, for each key, the value and proof the one-key
    ``query``/``getCertificate`` gives at the same height, present and absent keys alike; they bound their input."""
    from chains.common import wire
    from protocol.state_commitment import Proof, verify_membership, verify_non_membership

    before = served.snapshot()
    height = served.node.head.header.height
    relay = _is_relay(served.node)
    keys = ["accounts/alice", "relay/validators", "no/such/key", "accounts/alice"]
    if relay:
        answer = _call(served, "getCertificates", {"keys": keys, "height": height})
        if height == 0:  # a lone validator makes no block: no commit to certify with, as getCertificate says
            single = _call(served, "getCertificate", {"key": keys[0], "height": height})
            assert answer["error"] == single["error"] and answer["error"]["data"]["code"] == "rpc.not_found"
            keys = []
        batch = answer.get("result")
        certs = [] if batch is None else wire.certificate_batch_from_json(batch)
        for key, cert in zip(keys, certs, strict=True):
            single = _call(served, "getCertificate", {"key": key, "height": height})["result"]
            assert wire.certificate_to_json(cert) == single
        assert not keys or any(c.value is not None for c in certs), "no key present: the test proves nothing"
    else:
        many = _call(served, "proveMany", {"keys": keys, "height": height})["result"]
        root = bytes.fromhex(many["state_root"])
        for key in keys:
            single = _call(served, "query", {"key": key, "height": height, "prove": True})["result"]
            assert (many["values"][key], many["proofs"][key]) == (single["value"], single["proof"])
            proof = Proof.decode(bytes.fromhex(many["proofs"][key]))
            if many["values"][key] is None:
                verify_non_membership(root, key.encode(), proof)
            else:
                verify_membership(root, key.encode(), bytes.fromhex(many["values"][key]), proof)
        assert many["values"]["accounts/alice"] is not None
    method, limit = ("getCertificates", 64) if relay else ("proveMany", 200)
    err = _call(served, method, {"keys": ["a"] * (limit + 1)})["error"]
    assert err["code"] == rpc.INVALID_PARAMS and err["data"]["param"] == "keys"
    err = _call(served, method, {"keys": ["k" * 1025]})["error"]
    assert err["code"] == rpc.SERVER_ERROR and err["data"]["code"] == "codec.invalid", err
    assert served.snapshot() == before
