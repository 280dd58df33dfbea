"""The Ethereum park's public JSON-RPC proxy (chains/ethereum/rpc_proxy.py) in front of a real anvil on its unix
socket, in its own network namespace where the host allows it: the allowlist, the operator token, bounded bodies
and batches, typed refusals that leave the chain as it was, and anvil down answered as a retryable 503."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from adapters.ethereum.rpc import EthRpc
from chains.common import jsonrpc as rpc
from chains.ethereum.anvil import Anvil, AnvilConfig, free_port, network_isolation_available
from chains.ethereum.node import ipc_path_for
from chains.ethereum.rpc_proxy import MAX_BATCH, PUBLIC_METHODS, IpcUpstream, RpcProxy
from protocol.errors import Disposition, TransportError

TOKEN = "ab" * 16
ALICE = "0x" + "a1" * 20


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    d = tmp_path_factory.mktemp("anvil")
    isolated = network_isolation_available()
    a = Anvil(AnvilConfig(port=8545 if isolated else free_port(), chain_id=31337, ipc_path=ipc_path_for(d),
                          isolate_network=isolated, dev_accounts=2))
    a.start()
    yield a
    a.stop()


@pytest.fixture
async def proxy(anvil: Anvil) -> AsyncIterator[str]:
    assert anvil.config.ipc_path is not None
    p = RpcProxy(IpcUpstream(anvil.config.ipc_path), TOKEN, chain_id="eth-park")
    port = await p.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await p.stop()


async def post(url: str, body: Any, *, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.post(url, data=raw if raw is not None else json.dumps(body),
                                                    headers=headers) as r:
        return r.status, await r.json()


def req(method: str, params: Any = None, rid: Any = 7) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        out["params"] = params
    return out


def chain_state(anvil: Anvil) -> tuple[Any, ...]:
    return (anvil.rpc("eth_blockNumber"), anvil.rpc("eth_getBalance", [ALICE, "latest"]),
            anvil.rpc("eth_getStorageAt", [ALICE, "0x0", "latest"]))


def test_anvil_is_reachable_only_over_its_socket(anvil: Anvil) -> None:
    assert anvil.config.ipc_path is not None
    assert stat.S_IMODE(os.stat(anvil.config.ipc_path).st_mode) == 0o600
    if not network_isolation_available():
        pytest.skip("no unprivileged user namespaces on this host: anvil's TCP listener stays on loopback")
    assert os.readlink(f"/proc/{anvil.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    with pytest.raises(OSError):  # nothing of anvil's listens in our namespace
        Anvil(AnvilConfig(port=8545, chain_id=31337)).rpc("eth_chainId", timeout=2)


@pytest.mark.parametrize(("method", "params"), [
    ("anvil_impersonateAccount", [ALICE]),
    ("anvil_setBalance", [ALICE, "0xffff"]),
    ("anvil_setStorageAt", [ALICE, "0x0", "0x" + "11" * 32]),
    ("evm_snapshot", []),
    ("evm_revert", ["0x0"]),
    ("evm_mine", []),
    ("hardhat_setBalance", [ALICE, "0x1"]),
    ("debug_traceTransaction", ["0x" + "00" * 32]),
    ("personal_sign", ["0x00", ALICE]),
    ("eth_sendTransaction", [{"from": ALICE, "to": ALICE, "value": "0x1"}]),
    ("eth_sign", [ALICE, "0x00"]),
    ("eth_signTypedData_v4", [ALICE, {}]),
    ("eth_accounts", []),
    ("eth_newBlockFilter", []),
])
async def test_operator_methods_need_the_token(anvil: Anvil, proxy: str, method: str, params: Any) -> None:
    before = chain_state(anvil)
    for token in (None, "wrong", TOKEN[:-1], ""):
        status, answer = await post(proxy, req(method, params), token=token)
        assert status == 200 and answer["id"] == 7, answer
        err = answer["error"]
        assert err["code"] == rpc.UNAUTHORIZED and err["data"]["code"] == "rpc.unauthorized", err
        assert "result" not in answer
    assert chain_state(anvil) == before


async def test_the_token_opens_operator_methods(anvil: Anvil, proxy: str) -> None:
    before = chain_state(anvil)
    _, snap = await post(proxy, req("evm_snapshot", []), token=TOKEN)
    _, answer = await post(proxy, req("anvil_setBalance", [ALICE, "0x1234"]), token=TOKEN)
    assert answer == {"jsonrpc": "2.0", "id": 7, "result": None}
    assert anvil.rpc("eth_getBalance", [ALICE, "latest"]) == "0x1234"
    _, accounts = await post(proxy, req("eth_accounts", []), token=TOKEN)
    assert len(accounts["result"]) == 2
    _, reverted = await post(proxy, req("evm_revert", [snap["result"]]), token=TOKEN)
    assert reverted["result"] is True and chain_state(anvil) == before


async def test_public_methods_reach_anvil(anvil: Anvil, proxy: str) -> None:
    _, answer = await post(proxy, req("eth_chainId", rid="x"))
    assert answer == {"jsonrpc": "2.0", "id": "x", "result": "0x7a69"}
    _, answer = await post(proxy, req("eth_getBalance", [ALICE, "latest"], rid=None))
    assert answer["id"] is None and answer["result"].startswith("0x")
    # a signed transaction is the one write anyone may submit: a bad one is anvil's own refusal, passed through
    _, answer = await post(proxy, req("eth_sendRawTransaction", ["0x00"]))
    assert answer["error"]["code"] not in (rpc.UNAUTHORIZED, rpc.METHOD_NOT_FOUND), answer
    # the relayer's client: standard calls work without a token, and a refusal is its typed error
    client = EthRpc(proxy, side="eth-park")
    try:
        assert int(await client.call("eth_blockNumber", []), 16) >= 0
        with pytest.raises(rpc.UnauthorizedError) as refused:  # fatal: the relayer's task stops and says so
            await client.call("anvil_impersonateAccount", [ALICE])
        assert refused.value.disposition is Disposition.FATAL
        operator = EthRpc(proxy, side="eth-park", admin_token=TOKEN)
        snap = await operator.call("evm_snapshot", [])
        assert await operator.call("evm_revert", [snap]) is True
        await operator.close()
    finally:
        await client.close()


async def test_a_signed_transaction_goes_through(anvil: Anvil, proxy: str) -> None:
    acct = Account.create()
    anvil.rpc("anvil_setBalance", [acct.address, hex(10**18)])
    signed = acct.sign_transaction({"to": Account.create().address, "value": 5, "nonce": 0, "gas": 21000,
                                    "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1, "chainId": 31337})
    _, answer = await post(proxy, req("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()]))
    assert answer["result"] == "0x" + signed.hash.hex()
    # automine answers before the block is in: wait for it, so the next test's chain state holds still
    for _ in range(200):
        _, receipt = await post(proxy, req("eth_getTransactionReceipt", [answer["result"]]))
        if receipt["result"] is not None:
            break
    assert receipt["result"]["status"] == "0x1"


async def test_unknown_names_and_malformed_requests(anvil: Anvil, proxy: str) -> None:
    before = chain_state(anvil)
    cases: list[tuple[Any, int, str]] = [
        (req("foo_bar", []), rpc.METHOD_NOT_FOUND, "rpc.method_not_found"),
        (req("", []), rpc.INVALID_REQUEST, "rpc.invalid_request"),
        (req("x" * 65, []), rpc.INVALID_REQUEST, "rpc.invalid_request"),
        ({"id": 1, "method": "eth_chainId"}, rpc.INVALID_REQUEST, "rpc.invalid_request"),
        ({**req("eth_chainId"), "extra": 1}, rpc.INVALID_REQUEST, "rpc.invalid_request"),
        (req("eth_chainId", "notalist"), rpc.INVALID_PARAMS, "rpc.invalid_params"),
        (req("eth_chainId", rid=[1]), rpc.INVALID_REQUEST, "rpc.invalid_request"),
        (5, rpc.INVALID_REQUEST, "rpc.invalid_request"),
        ([], rpc.INVALID_REQUEST, "rpc.invalid_request"),
        ([req("eth_chainId")] * (MAX_BATCH + 1), rpc.INVALID_REQUEST, "rpc.invalid_request"),
    ]
    for body, code, name in cases:
        status, answer = await post(proxy, body)
        assert status == 200 and answer["error"]["code"] == code and answer["error"]["data"]["code"] == name, (
            body if not isinstance(body, list) else len(body), answer)
    for raw, name in [(b"{", "rpc.parse_error"), (b'{"a":1,"a":2}', "rpc.parse_error"),
                      (b"[" * 100 + b"]" * 100, "rpc.parse_error"), (b"\xff", "rpc.parse_error"),
                      (b"NaN", "rpc.parse_error")]:
        status, answer = await post(proxy, None, raw=raw)
        assert answer["error"]["data"]["code"] == name, (raw, answer)
    status, answer = await post(proxy, None, raw=b" " * (rpc.MAX_BODY_BYTES + 1))
    assert status == 413 and answer["error"]["data"]["code"] == "rpc.body_too_large"
    assert chain_state(anvil) == before


async def test_a_batch_is_checked_request_by_request(anvil: Anvil, proxy: str) -> None:
    before = chain_state(anvil)
    batch = [req("eth_chainId", rid=1), req("anvil_setBalance", [ALICE, "0x99"], rid=2), req("nope", rid=3),
             req("eth_blockNumber", rid=4), 7]
    status, answers = await post(proxy, batch)
    assert status == 200 and [a["id"] for a in answers] == [1, 2, 3, 4, None]
    assert answers[0]["result"] == "0x7a69" and answers[3]["result"].startswith("0x")
    assert [a["error"]["data"]["code"] for a in answers[1:3] + answers[4:]] == [
        "rpc.unauthorized", "rpc.method_not_found", "rpc.invalid_request"]
    assert chain_state(anvil) == before
    _, answers = await post(proxy, [req("eth_chainId")] * MAX_BATCH)
    assert len(answers) == MAX_BATCH and all(a["result"] == "0x7a69" for a in answers)


async def test_anvil_down_is_a_retryable_503(tmp_path: Path) -> None:
    p = RpcProxy(IpcUpstream(tmp_path / "nothing.ipc"), TOKEN, chain_id="eth-park")
    port = await p.start("127.0.0.1", 0)
    try:
        status, answer = await post(f"http://127.0.0.1:{port}", req("eth_chainId"))
        assert status == 503 and answer["error"]["data"]["code"] == "transport", answer
        client = EthRpc(f"http://127.0.0.1:{port}", side="eth-park")
        with pytest.raises(TransportError) as info:
            await client.call("eth_chainId", [])
        assert info.value.retryable
        await client.close()
    finally:
        await p.stop()


def test_the_allowlist_is_standard_reads_and_raw_transactions_only() -> None:
    assert all(m.split("_", 1)[0] in ("eth", "net", "web3") for m in PUBLIC_METHODS)
    signing = {"eth_sendTransaction", "eth_sign", "eth_signTransaction", "eth_signTypedData", "eth_signTypedData_v4",
               "eth_accounts", "eth_newFilter", "eth_newBlockFilter", "eth_newPendingTransactionFilter",
               "eth_subscribe"}
    assert not signing & PUBLIC_METHODS
    assert "eth_sendRawTransaction" in PUBLIC_METHODS


def test_docs_security_lists_exactly_the_allowlist() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    (row,) = [line for line in doc.splitlines() if line.startswith("| `eth_blobBaseFee`")]
    listed = set(row.split(" | ")[0].strip("| ").replace("`", "").split(", "))
    assert listed | {"eth_sendRawTransaction"} == PUBLIC_METHODS


@pytest.mark.parametrize("isolate", [True, False])
def test_the_park_node_never_gives_anvil_its_public_port(tmp_path: Path, isolate: bool) -> None:
    from chains.ethereum.node import EthereumNode, EthNodeSettings

    public = free_port()
    node = EthereumNode(EthNodeSettings(
        chain_id="eth-park", genesis={"block_interval_ms": 1000, "eth_chain_id": 31337}, operator_key=bytes(32),
        relay_chain_id="relay", relay_set=([], [], []), port=public, state_dir=tmp_path / "eth-park",
        isolate_anvil=isolate, admin_token=TOKEN))
    argv = node.anvil.argv()
    assert argv[argv.index("--ipc") + 1] == str(node.ipc_path) and node.ipc_path.name == "anvil.ipc"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and int(argv[argv.index("--port") + 1]) != public
    assert (argv[0] == "unshare") is isolate
    assert node.proxy.authorized(f"Bearer {TOKEN}") and not node.proxy.authorized("Bearer ")


def test_a_node_without_an_admin_token_serves_no_operator_method() -> None:
    p = RpcProxy(IpcUpstream(Path("/nonexistent")), "")
    assert not p.authorized("Bearer ") and not p.authorized("")


def test_a_socket_path_too_long_for_the_kernel_goes_to_a_private_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    path = ipc_path_for(deep)
    try:
        assert len(str(path)) <= 100 and stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    finally:
        path.parent.rmdir()
    assert ipc_path_for(Path("/srv/p")) == Path("/srv/p/anvil.ipc")
