"""Trust boundaries of the parks' nodes (issue 15, docs/security.md), as real processes.

The Ethereum park's node used to serve anvil's whole RPC: anyone reaching its port could
``anvil_impersonateAccount`` the bridge and ``eth_sendTransaction`` its escrow away (5,000 Wh drained while
``escrowed()`` still reported 5,000). Here the exploit runs against ``parkrelay node ethereum``: refused with a
typed error and the escrow unchanged without the admin token; with the token the operator (and only the
operator) has anvil's powers.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from adapters.common.rpc import JsonRpcClient
from chains.common import jsonrpc as rpc
from chains.ethereum.anvil import free_port, network_isolation_available
from chains.ethereum.deploy import load_artifact
from chains.ethereum.node import ADDRESSES_FILE, IPC_FILE
from protocol.crypto import Ed25519Signer
from relay.ops import devnet
from relay.ops.config import load_config
from relay.ops.keys import read_secret
from relay.ops.layout import account_key_path, admin_token_path
from tests.integration.test_ethereum_node import BALANCES, CHAIN, NodeProc, wait_until, write_devnet
from tests.loopback import serve_post
from tests.unit.test_node_runtime import _Header, _node

ESCROW_WH = 5_000


@pytest.fixture(scope="module")
def eth_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    root = tmp_path_factory.mktemp("trust-eth")
    cfg = load_config(write_devnet(root, {"base_port": free_port(), "accounts": BALANCES}, relay_port=free_port()))
    devnet.init(cfg)
    node = NodeProc(cfg)
    node.start()
    try:
        wait_until(lambda: "ready:" in node.log(), 60, f"the node to deploy; log:\n{node.log()}")
        yield node
    finally:
        node.stop()


def call(url: str, method: str, params: list[Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as r:  # noqa: S310
        out: dict[str, Any] = json.loads(r.read())
    return out


def transact(w3: Web3, fn: Any, acct: LocalAccount) -> None:
    tx = fn.build_transaction({"from": acct.address, "nonce": w3.eth.get_transaction_count(acct.address)})
    signed = acct.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=20)
    assert receipt["status"] == 1


@pytest.mark.integration
def test_nobody_but_the_operator_can_move_the_escrow(eth_node: NodeProc) -> None:
    cfg = eth_node.cfg
    url = cfg.chain(CHAIN).url_of("anvil")
    state_dir = cfg.data_dir / CHAIN
    addresses = json.loads((state_dir / ADDRESSES_FILE).read_text())
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
    token = w3.eth.contract(address=Web3.to_checksum_address(addresses["energy_token"]),
                            abi=load_artifact("EnergyToken")["abi"])
    bridge = w3.eth.contract(address=Web3.to_checksum_address(addresses["bridge"]),
                             abi=load_artifact("ParkBridge")["abi"])
    alice: LocalAccount = Account.from_key(read_secret(account_key_path(cfg, CHAIN, "alice")))
    attacker: LocalAccount = Account.create()

    # alice sends 5,000 Wh towards dpos-park (no relay runs: the packet stays in flight, its kWh in escrow)
    transact(w3, token.functions.approve(bridge.address, ESCROW_WH), alice)
    transact(w3, bridge.functions.sendEnergy("dpos-park", "lane-0", "kWh", ESCROW_WH, "bob",
                                             int(time.time() * 1000) + 3_600_000), alice)
    supply = token.functions.totalSupply().call()

    def books() -> tuple[int, int, int, int]:
        return (token.functions.balanceOf(bridge.address).call(),
                bridge.functions.escrowed("dpos-park", "lane-0", "kWh").call(),
                token.functions.balanceOf(attacker.address).call(), token.functions.totalSupply().call())

    assert books() == (ESCROW_WH, ESCROW_WH, 0, supply)
    drain = {"from": bridge.address, "to": token.address,
             "data": token.functions.transfer(attacker.address, ESCROW_WH)._encode_transaction_data()}

    # the exploit, without the admin token: every step refused with rpc.unauthorized, nothing changes
    for method, params in [("anvil_impersonateAccount", [bridge.address]), ("eth_sendTransaction", [drain]),
                           ("anvil_setBalance", [attacker.address, hex(10**20)]),
                           ("anvil_setStorageAt", [token.address, "0x0", "0x" + "00" * 32]),
                           ("evm_snapshot", []), ("hardhat_impersonateAccount", [bridge.address])]:
        for tok in (None, "00" * 16):
            answer = call(url, method, params, tok)
            assert answer["error"]["code"] == rpc.UNAUTHORIZED, (method, answer)
            assert answer["error"]["data"]["code"] == "rpc.unauthorized" and "result" not in answer

    height = w3.eth.block_number
    wait_until(lambda: w3.eth.block_number >= height + 2, 10, "two more blocks")
    assert books() == (ESCROW_WH, ESCROW_WH, 0, supply)
    assert w3.eth.get_balance(attacker.address) == 0

    # the operator, with the deployment's admin token, has anvil's powers: the drain works (so the check above is
    # not vacuous), and is rolled back with evm_revert
    admin = read_secret(admin_token_path(cfg)).hex()
    snap = call(url, "evm_snapshot", [], admin)["result"]
    assert call(url, "anvil_impersonateAccount", [bridge.address], admin)["result"] is None
    call(url, "anvil_setBalance", [bridge.address, hex(10**18)], admin)
    sent = call(url, "eth_sendTransaction", [drain], admin)
    assert "result" in sent, sent
    w3.eth.wait_for_transaction_receipt(sent["result"], timeout=20)
    assert books() == (0, ESCROW_WH, ESCROW_WH, supply)  # the reported exploit: escrowed() still says 5,000
    call(url, "anvil_stopImpersonatingAccount", [bridge.address], admin)
    assert call(url, "evm_revert", [snap], admin)["result"] is True
    assert books() == (ESCROW_WH, ESCROW_WH, 0, supply)
    assert token.functions.balanceOf(alice.address).call() == BALANCES["alice"] - ESCROW_WH
    assert sum(token.functions.balanceOf(Web3.to_checksum_address(a["address"])).call()
               for a in json.loads((cfg.data_dir / "genesis" / f"{CHAIN}.json").read_text())["accounts"].values()
               ) + ESCROW_WH == supply == sum(BALANCES.values())

    # anvil itself: its socket is the node's user's only, its TCP listener out of everyone's reach
    assert stat.S_IMODE(os.stat(state_dir / IPC_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    if network_isolation_available():
        assert os.readlink(f"/proc/{eth_node.anvil_pid()}/ns/net") != os.readlink("/proc/self/ns/net")
    assert "refused anvil_impersonateAccount without the admin token" in eth_node.log()


# --- P2P: a block's origin is asked for ancestors only if it is a configured peer -------------------------------


async def test_a_block_from_a_stranger_makes_the_node_call_no_one(tmp_path: Path) -> None:
    """``POST /p2p/block`` is open to anyone (a block is checked by its consensus proof), but its ``origin`` used to
    be trusted: a block with an unknown parent made the node fetch up to 2000 ancestors from whatever URL the caller
    named. Now only a configured peer is asked; a stranger's origin is ignored (the sync loop asks the peers)."""
    asked: list[Any] = []

    async def trap(request: web.Request) -> web.Response:
        asked.append(await request.json())
        return web.json_response({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "no"}})

    async with serve_post("/rpc", trap) as trap_url:
        node = _node(tmp_path, Ed25519Signer(bytes(32)))
        await node.start()
        try:
            head = node.head.hash
            orphan = _Header(7, b"\x01" * 32, 10**6, bytes(32), bytes(32))
            body = {"header": orphan.encode().hex(), "txs": [], "origin": trap_url}
            async with aiohttp.ClientSession() as s:
                async with s.post(node.url + "/p2p/block", json=body) as r:
                    assert r.status == 200
                assert asked == [] and node.head.hash == head and node.peers == []
                # the same block from a configured peer: the node asks that peer for the missing parent
                async with JsonRpcClient(node.url, side="test-chain", admin_token="t0ken") as admin:
                    await admin.call("admin.setPeers", {"peers": [trap_url]}, admin=True)
                async with s.post(node.url + "/p2p/block", json=body) as r:
                    assert r.status == 200
            assert [a["method"] for a in asked] == ["getBlockByHash"] and asked[0]["params"] == {"hash": "01" * 32}
            assert node.head.hash == head
        finally:
            await node.stop()


def test_docs_security_covers_every_method_of_the_node_runtime(tmp_path: Path) -> None:
    """A method added to the runtime without a row in docs/security.md (who may call it, what it changes) fails
    here; so does an operator method left open."""
    import re

    node = _node(tmp_path, Ed25519Signer(bytes(32)))
    try:
        doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
        rows = [ln for ln in doc.splitlines() if ln.startswith("| `POST /rpc`")]
        documented = {n for ln in rows for n in re.findall(r"`([A-Za-z.]+)`", ln.split(" | ")[0])} - {"POST"}
        operator = {n for ln in rows if ln.split(" | ")[1] == "operator"
                    for n in re.findall(r"`([A-Za-z.]+)`", ln.split(" | ")[0])}
        methods = node._methods
        assert set(methods) <= documented, sorted(set(methods) - documented)
        assert {name for name, m in methods.items() if m.admin} == operator & set(methods)
    finally:
        node.db.close()
