"""A relay validator on CometBFT, above CometBFT itself: the home it is given (:mod:`relay.chain.abci.cometbft`) and the
relay RPC served beside it (:class:`~relay.chain.abci.node.CometRelayNode`). CometBFT's RPC is an in-memory aiohttp
fake here (what ``broadcast_tx_sync`` answers, as v0.38 shapes it); the real one is in
``tests/integration/test_relay_on_cometbft.py``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chains.common.node import NodeConfig
from chains.common.state import canonical_json
from chains.common.tx import Tx
from protocol.crypto import Ed25519Signer
from protocol.errors import MempoolFullError, ReplayError
from relay.chain.abci import types as T
from relay.chain.abci.app import RelayAbciApp
from relay.chain.abci.cometbft import (
    CometHomeError,
    HomeSettings,
    consensus_pubkey,
    init_home,
    node_id,
    set_toml,
    write_genesis,
)
from tests.loopback import serve_post
from tests.unit.abci.relaynet import CHAIN, RelayNet, raw, register_tx

# -- the home ------------------------------------------------------------------------------------------------------

CONFIG = """proxy_app = "tcp://127.0.0.1:26658"
moniker = "x"

[rpc]
laddr = "tcp://127.0.0.1:26657"
max_body_bytes = 1000000

[p2p]
laddr = "tcp://0.0.0.0:26656"
persistent_peers = ""
addr_book_strict = true
allow_duplicate_ip = false

[consensus]
timeout_propose = "3s"
timeout_commit = "1s"
"""


def _fake_home(root: Path) -> tuple[Path, bytes, bytes]:
    """A home as ``cometbft init`` leaves it (keys made now), without running it: (home, consensus and node public
    keys)."""
    home = root / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(CONFIG)
    cons, node = Ed25519Signer(os.urandom(32)), Ed25519Signer(os.urandom(32))
    (home / "config" / "priv_validator_key.json").write_text(json.dumps(
        {"pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(cons.pubkey).decode()}}))
    (home / "config" / "node_key.json").write_text(json.dumps(
        {"priv_key": {"type": "tendermint/PrivKeyEd25519",
                      "value": base64.b64encode(os.urandom(32) + node.pubkey).decode()}}))
    (home / "config" / "genesis.json").write_text(json.dumps(
        {"consensus_params": {"block": {"max_bytes": "22020096"}, "abci": {"vote_extensions_enable_height": "0"}}}))
    return home, cons.pubkey, node.pubkey


def test_the_home_gets_the_relay_settings_and_keeps_its_keys(tmp_path: Path) -> None:
    home, cons, node = _fake_home(tmp_path)
    settings = HomeSettings(moniker="op-a", host="127.0.0.1", abci_port=40000, rpc_port=40001, p2p_port=40002,
                            timeout_commit_ms=300, timeout_propose_ms=1000, persistent_peers=("ab@127.0.0.1:40005",))
    init_home(home, settings, binary=tmp_path / "no-such-cometbft")  # the config exists: init is not run
    text = (home / "config" / "config.toml").read_text()
    for line in ('proxy_app = "tcp://127.0.0.1:40000"', 'moniker = "op-a"', 'laddr = "tcp://127.0.0.1:40001"',
                 'laddr = "tcp://127.0.0.1:40002"', 'persistent_peers = "ab@127.0.0.1:40005"',
                 "addr_book_strict = false", "allow_duplicate_ip = true", 'timeout_commit = "300ms"',
                 'timeout_propose = "1000ms"', "max_body_bytes = 4194304"):
        assert line in text.splitlines(), line
    assert consensus_pubkey(home) == cons
    assert node_id(home) == hashlib.sha256(node).digest()[:20].hex()


def test_a_missing_binary_or_setting_is_a_clear_error(tmp_path: Path) -> None:
    settings = HomeSettings("op-a", "127.0.0.1", 1, 2, 3, 300, 1000)
    with pytest.raises(CometHomeError, match=r"no cometbft binary at .*make setup"):
        init_home(tmp_path / "new", settings, binary=tmp_path / "no-such-cometbft")
    with pytest.raises(CometHomeError, match="no 'timeout_commit' in \\[consensus\\]"):
        set_toml("[consensus]\ntimeout_propose = 1\n", "consensus", "timeout_commit", '"1s"')
    home, _, _ = _fake_home(tmp_path)
    (home / "config" / "priv_validator_key.json").write_text('{"pub_key": {"type": "tendermint/PubKeySecp256k1"}}')
    with pytest.raises(CometHomeError, match="ed25519"):
        consensus_pubkey(home)
    (home / "config" / "node_key.json").write_text("[]")
    with pytest.raises(CometHomeError, match="not a JSON object"):
        node_id(home)


def test_the_genesis_carries_the_relay_genesis_and_the_validators(tmp_path: Path) -> None:
    home, cons, _ = _fake_home(tmp_path)
    app_state = {"chain_id": "relay", "validators": []}
    raw_genesis = write_genesis(home, chain_id="relay", genesis_time_ms=1_700_000_000_123, app_state=app_state,
                                validators=[("op-a", cons, 3)])
    doc = json.loads(raw_genesis)
    assert doc["genesis_time"] == "2023-11-14T22:13:20.123000000Z"
    assert doc["app_state"] == app_state and doc["chain_id"] == "relay" and doc["initial_height"] == "1"
    assert doc["validators"] == [{"address": hashlib.sha256(cons).digest()[:20].hex().upper(),
                                  "pub_key": {"type": "tendermint/PubKeyEd25519",
                                              "value": base64.b64encode(cons).decode()},
                                  "power": "3", "name": "op-a"}]
    assert doc["consensus_params"]["block"] == {"max_bytes": "22020096"}
    assert (home / "config" / "genesis.json").read_bytes() == raw_genesis


# -- the relay RPC beside CometBFT ---------------------------------------------------------------------------------


Answer = Callable[[bytes], Any]


@pytest.fixture
async def fake_cometbft() -> AsyncIterator[tuple[str, list[Answer], list[bytes]]]:
    """CometBFT's JSON-RPC ``broadcast_tx_sync`` (the test sets what it answers); the transactions it was given."""
    answers: list[Answer] = []
    got: list[bytes] = []

    async def rpc(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["method"] == "broadcast_tx_sync"
        tx = base64.b64decode(body["params"]["tx"])
        got.append(tx)
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], **answers[0](tx)})

    async with serve_post("/", rpc) as url:
        yield url, answers, got


@pytest.fixture
async def served(tmp_path: Path, fake_cometbft: tuple[str, list[Answer], list[bytes]]
                 ) -> AsyncIterator[tuple[RelayAbciApp, RelayNet, list[Answer], list[bytes]]]:
    url, answers, got = fake_cometbft
    net = RelayNet(tmp_path / "net")
    net.init_chain()
    app = RelayAbciApp(net.genesis, name="v0", key=net.keys[0], consensus_keys=net.consensus_keys,
                       data_dir=tmp_path / "served", client_types=net.client_types,
                       node_config=NodeConfig(name="v0", data_dir=tmp_path / "served", port=0,
                                              admin_token="test-admin-token"), cometbft_rpc=url)
    app.init_chain(T.RequestInitChain(chain_id=CHAIN, initial_height=1))
    await app.node.start()
    yield app, net, answers, got
    await app.node.stop()
    net.close()


async def _call(app: RelayAbciApp, method: str, params: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(app.node.url + "/rpc", json={
            "jsonrpc": "2.0", "id": 1, "method": method, "params": params}) as r:
        body: dict[str, Any] = await r.json()
        return body


async def test_submit_tx_goes_to_cometbft_and_a_check_tx_refusal_comes_back_typed(served: Any) -> None:
    app, _, answers, got = served
    signer = Ed25519Signer(os.urandom(32))
    tx = Tx.signed(signer, CHAIN, "alice", 0, "account.register", {"pubkey": signer.pubkey.hex()})
    answers.append(lambda raw: {"result": {"code": 0, "hash": hashlib.sha256(raw).hexdigest().upper()}})
    ok = await _call(app, "submitTx", {"tx": tx.to_json()})
    assert ok["result"] == {"hash": tx.hash().hex()} and got == [canonical_json(tx.to_json())]

    refusal = ReplayError("account already registered", got="alice")
    answers[0] = lambda raw: {"result": {"code": 1, "codespace": refusal.code, "log": json.dumps(refusal.to_dict())}}
    bad = await _call(app, "submitTx", {"tx": tx.to_json()})
    assert bad["error"]["data"]["code"] == "packet.replay", bad
    assert bad["error"]["data"]["message"] == "account already registered"

    answers[0] = lambda raw: {"error": {"code": -32603, "message": "Internal error",
                                        "data": "tx already exists in cache"}}
    assert (await _call(app, "submitTx", {"tx": tx.to_json()}))["result"] == {"hash": tx.hash().hex()}, \
        "a transaction CometBFT holds already is accepted again, as the built-in mempool does"
    answers[0] = lambda raw: {"error": {"code": -32603, "message": "Internal error",
                                        "data": "mempool is full: number of txs 5000 (max: 5000)"}}
    full = await _call(app, "submitTx", {"tx": tx.to_json()})
    assert full["error"]["data"]["code"] == MempoolFullError.code
    assert "CometBFT's mempool is full" in full["error"]["data"]["message"]


async def test_a_cometbft_that_does_not_answer_is_a_retryable_refusal(served: Any) -> None:
    app, _, _, _ = served
    app.node.cometbft_rpc = "http://127.0.0.1:9"  # nothing listens there
    signer = Ed25519Signer(os.urandom(32))
    tx = Tx.signed(signer, CHAIN, "alice", 0, "account.register", {"pubkey": signer.pubkey.hex()})
    out = await _call(app, "submitTx", {"tx": tx.to_json()})
    assert out["error"]["data"]["code"] == MempoolFullError.code
    assert "CometBFT does not answer" in out["error"]["data"]["message"]


async def test_malformed_transactions_are_refused_before_cometbft(served: Any) -> None:
    app, _, _, got = served
    for bad in ({"sender": "x"}, {**register_tx("alice").to_json(), "signature": "not hex"}):
        out = await _call(app, "submitTx", {"tx": bad})
        assert out["error"]["data"]["code"] == "codec.invalid", out
    assert got == []


async def test_the_builtin_gossip_and_peer_methods_are_refused(served: Any) -> None:
    app, _, _, _ = served
    async with aiohttp.ClientSession() as s:
        for path in ("/p2p/block", "/p2p/tx"):
            async with s.post(app.node.url + path, json={}) as r:
                body = await r.json()
                assert r.status == 400 and "CometBFT" in body["error"]["message"], body
        token = app.node.config.admin_token
        for method, params in (("admin.addPeer", {"url": "http://127.0.0.1:1"}), ("admin.setPeers", {"peers": []}),
                               ("admin.setGossip", {"enabled": True}), ("admin.setProducing", {"enabled": True})):
            async with s.post(app.node.url + "/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                           "params": params},
                              headers={"Authorization": f"Bearer {token}"} if token else {}) as r:
                body = await r.json()
                assert "CometBFT" in json.dumps(body), (method, body)
    assert app.node.peers == []


async def test_get_account_counts_what_check_tx_admitted_as_pending(served: Any) -> None:
    """A relayer's next nonce is nonce + pending: with CometBFT the pending ones are in CometBFT's mempool and in the
    block waiting for its commit, which the app's CheckTx state holds."""
    app, net, _, _ = served
    signer = Ed25519Signer(os.urandom(32))
    reg = Tx.signed(signer, CHAIN, "relayer-z", 0, "account.register", {"pubkey": signer.pubkey.hex()})
    for h, items in ((1, [raw(reg)]), (2, []), (3, [])):  # height 1 is stored once height 2 brings its commit
        proposal = net.prepare(items)
        net.decide(proposal)
        block_hash, decided, t = net.blocks[-1]
        app.finalize_block(T.RequestFinalizeBlock(txs=decided, hash=block_hash, height=h, time=t))
        app.commit(T.RequestCommit())
    acct = (await _call(app, "getAccount", {"name": "relayer-z"}))["result"]
    assert (acct["nonce"], acct["pending"]) == (1, 0)
    again = Tx.signed(signer, CHAIN, "relayer-z", 0, "account.register", {"pubkey": signer.pubkey.hex()})
    assert app.check_tx(T.RequestCheckTx(tx=raw(again))).code != 0  # refused: admits nothing
    assert (await _call(app, "getAccount", {"name": "relayer-z"}))["result"]["pending"] == 0
    key = b"accounts/relayer-z"
    app._check_state.set_json(key, {**app._check_state.get_json(key), "nonce": 3})  # two admitted, as CheckTx does
    assert (await _call(app, "getAccount", {"name": "relayer-z"}))["result"] == {**acct, "pending": 2}
