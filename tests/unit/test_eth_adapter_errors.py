"""The Ethereum adapter's error handling, without a chain (chains/ethereum/SPEC.md §E2.3, §E5).

* every ``ParkBridge`` custom error, as revert data built from its selector, decodes to its protocol
  error class and code — from the raw data and from a node's JSON-RPC error answer;
* other reverts (``Error(string)``, ``Panic``, unknown selectors, none) are :class:`EthRevertError`;
* node refusals are classified (nonce, already known, unfunded account);
* an unreachable node is a retryable :class:`TransportError` naming the side;
* against a scripted JSON-RPC node: a would-be revert sends nothing, the gas cap refuses, a nonce refusal
  re-reads the nonce, a transaction the node already holds counts as sent;
* the adapter's ABI strings agree with the compiled artifacts (when they exist).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import rlp
from aiohttp import web
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils import keccak

from adapters import ethereum as eth
from adapters.ethereum.abi import (
    BRIDGE_FUNCTIONS,
    CERTIFICATE,
    EVENTS,
    VALIDATOR_SET,
    certificate_arg,
    commit_arg,
    selector,
    validator_set_arg,
)
from adapters.ethereum.errors import (
    EthRevertError,
    GasCapError,
    RightError,
    TxAlreadyKnownError,
    decode_revert,
    rpc_error,
)
from chains.common.bridge import AssetError
from chains.ethereum.anvil import free_port
from chains.ethereum.types import EthHeader
from protocol import errors as perr
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
)
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId

ARTIFACTS = Path(__file__).resolve().parents[2] / "chains" / "ethereum" / "artifacts"
KEY = "0x" + "11" * 32
BRIDGE = "0x" + "22" * 20

# SPEC §E2.3, written out independently of the adapter's table: (name, argument types, sample args, code)
SPEC_ERRORS: list[tuple[str, list[str], list[Any], str]] = [
    ("CodecInvalid", [], [], "codec.invalid"),
    ("ProofInvalid", [], [], "proof.invalid"),
    ("SignatureInvalid", ["uint256"], [2], "signature.invalid"),
    ("QuorumNotReached", ["uint256", "uint256"], [4, 6], "certificate.quorum"),
    ("ValidatorSetMismatch", ["bytes32", "bytes32"], [b"\x01" * 32, b"\x02" * 32], "certificate.validator_set"),
    ("DuplicateValidatorKey", ["uint256", "bytes32"], [2, b"\x01" * 32], "certificate.duplicate_validator"),
    ("DuplicateValidatorAddress", ["uint256", "address"], [3, "0x" + "aa" * 20], "certificate.duplicate_validator"),
    ("RelayTrustExpired", ["uint256", "uint256"], [1_000, 2_000], "client.expired"),
    ("CertificateStale", ["uint256", "uint256"], [1_000, 900], "certificate.stale"),
    ("RelayTrustLive", ["uint256", "uint256"], [2_000, 1_000], "lifecycle.illegal"),
    ("PacketReplay", ["uint256", "uint256"], [7, 3], "packet.replay"),
    ("PacketTimeout", ["uint256", "uint256"], [1_000, 2_000], "packet.timeout"),
    ("TimeoutAfterSlotStart", ["uint64", "uint64"], [3_000, 2_000], "packet.timeout"),
    ("WrongChain", ["string", "string"], ["eth-park", "dpos-park"], "packet.wrong_chain"),
    ("LaneInvalid", ["string", "string"], ["dpos-park", "lane-9"], "lane.invalid"),
    ("LaneOverCapacity", ["uint256", "uint256"], [5_001, 5_000], "lane.over_capacity"),
    ("InsufficientFunds", ["uint256", "uint256"], [5, 9], "funds.insufficient"),
    ("Unauthorized", ["address", "address"], ["0x" + "aa" * 20, "0x" + "bb" * 20], "auth.denied"),
    ("AllowanceTooLow", ["uint256", "uint256"], [0, 9], "auth.denied"),
    ("ReceiverRefused", ["address"], ["0x" + "aa" * 20], "auth.denied"),
    ("RightUnavailable", ["uint256", "uint8"], [12, 2], "asset.invalid"),
    ("RightPayloadMismatch", ["bytes32", "bytes32"], [b"\x01" * 32, b"\x02" * 32], "asset.invalid"),
    ("RightExists", ["uint256"], [12], "asset.invalid"),
    ("AdmissionRefused", ["string", "uint256", "uint256"], ["capacity.exceeded", 100, 120], "asset.invalid"),
    ("ReputationUnknown", ["string"], ["0x" + "aa" * 20], "asset.invalid"),
    ("ReputationTooLow", ["uint256", "uint256"], [8_000, 7_999], "reputation.insufficient"),
    ("RoundTiming", ["uint256", "uint256", "uint256"], [3, 1_000, 2_000], "lifecycle.illegal"),
    ("RoundState", ["uint256", "uint8", "uint8"], [3, 2, 3], "lifecycle.illegal"),
]


def _revert_data(name: str, types: list[str], args: list[Any]) -> bytes:
    return keccak(text=f"{name}({','.join(types)})")[:4] + abi_encode(types, args)


# -- decoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "types", "args", "code"), SPEC_ERRORS, ids=[e[0] for e in SPEC_ERRORS])
def test_every_custom_error_decodes_to_its_protocol_error(name: str, types: list[str], args: list[Any],
                                                          code: str) -> None:
    err = decode_revert(_revert_data(name, types, args))
    assert err.code == code
    by_code = {c.code: c for c in vars(perr).values() if isinstance(c, type) and issubclass(c, perr.ProtocolError)}
    by_code["asset.invalid"] = AssetError
    assert isinstance(err, by_code[code]) and not isinstance(err, EthRevertError)
    assert name in err.message


@pytest.mark.parametrize(("name", "types", "args", "code"), SPEC_ERRORS, ids=[e[0] for e in SPEC_ERRORS])
def test_node_revert_answers_decode(name: str, types: list[str], args: list[Any], code: str) -> None:
    data = "0x" + _revert_data(name, types, args).hex()
    # anvil's shape (code 3, data hex), and a node nesting the data in an object
    for err in ({"code": 3, "message": f"execution reverted: custom error {data[:10]}", "data": data},
                {"code": -32000, "message": "execution reverted", "data": {"data": data, "message": "x"}}):
        got = rpc_error("eth_estimateGas", err, side="eth-park")
        assert got.code == code
        assert "eth-park" in got.message


def test_error_arguments_are_kept() -> None:
    q = decode_revert(_revert_data("QuorumNotReached", ["uint256", "uint256"], [4, 6]))
    assert isinstance(q, perr.QuorumError) and q.got == 4 and q.expected == "> 4"
    s = decode_revert(_revert_data("SignatureInvalid", ["uint256"], [7]))
    assert isinstance(s, perr.SignatureError) and s.got == 7
    t = decode_revert(_revert_data("TimeoutAfterSlotStart", ["uint64", "uint64"], [3_000, 2_000]))
    assert isinstance(t, perr.TimeoutExpiredError) and (t.expected, t.got) == (2_000, 3_000)
    w = decode_revert(_revert_data("WrongChain", ["string", "string"], ["eth-park", "dpos-park"]))
    assert (w.expected, w.got) == ("eth-park", "dpos-park")
    a = decode_revert(_revert_data("AdmissionRefused", ["string", "uint256", "uint256"], ["capacity.exceeded", 10, 12]))
    assert isinstance(a, RightError) and a.rule == "capacity.exceeded" and (a.expected, a.got) == (10, 12)
    m = decode_revert(_revert_data("RightPayloadMismatch", ["bytes32", "bytes32"], [b"\x01" * 32, b"\x02" * 32]))
    assert isinstance(m, RightError) and m.expected == "0x" + "01" * 32


def test_other_reverts_are_eth_revert_errors() -> None:
    reason = decode_revert(_revert_data("Error", ["string"], ["nope"]))
    assert isinstance(reason, EthRevertError) and "nope" in reason.message and reason.code == "eth.reverted"
    panic = decode_revert(_revert_data("Panic", ["uint256"], [0x11]))
    assert isinstance(panic, EthRevertError) and "0x11" in panic.message
    unknown = decode_revert(bytes.fromhex("deadbeef") + bytes(32))
    assert isinstance(unknown, EthRevertError) and "0xdeadbeef" in unknown.message
    empty = decode_revert(b"")
    assert isinstance(empty, EthRevertError) and "without error data" in empty.message
    no_data = rpc_error("eth_call", {"code": -32000, "message": "execution reverted"}, side="eth-park")
    assert isinstance(no_data, EthRevertError)


@pytest.mark.parametrize(("message", "cls"), [
    ("nonce too low", perr.NonceError),
    ("nonce too high", perr.NonceError),
    ("replacement transaction underpriced", perr.NonceError),
    ("already known", TxAlreadyKnownError),
    ("transaction already imported", TxAlreadyKnownError),
    ("Insufficient funds for gas * price + value", perr.InsufficientFundsError),
    ("gas required exceeds allowance (30000000)", GasCapError),
])
def test_node_refusals_are_classified(message: str, cls: type[Exception]) -> None:
    got = rpc_error("eth_sendRawTransaction", {"code": -32003, "message": message}, side="eth-park")
    assert type(got) is cls


def test_unknown_rpc_errors_are_remote_errors() -> None:
    got = rpc_error("eth_foo", {"code": -32601, "message": "Method not found"}, side="eth-park")
    assert isinstance(got, perr.ProtocolError) and got.code == "remote"
    rate = rpc_error("eth_call", {"code": -32005, "message": "limit exceeded"}, side="eth-park")
    assert isinstance(rate, perr.TransportError) and rate.retryable
    ahead = rpc_error("eth_getProof", {"code": -32602, "message": "BlockOutOfRangeError: block height is 4 but "
                                                                  "requested was 80"}, side="eth-park")
    assert isinstance(ahead, perr.TransportError) and ahead.retryable and ahead.side == "eth-park"


# -- transport ----------------------------------------------------------------------------------------


async def test_closed_port_is_a_retryable_transport_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    src = eth.source(url, "eth-park", BRIDGE, confirmation_depth=2, timeout_s=2.0)
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset(), timeout_s=2.0)
    try:
        for call in (src.latest_height(), src.final_height(), src.events(1, 10), src.headers(1, 2),
                     tgt.track("0x" + "00" * 32, 1.0), tgt.submit("bridge.recv", _recv_args())):
            with pytest.raises(perr.TransportError) as exc:
                await call
            assert exc.value.retryable and exc.value.side == "eth-park"
    finally:
        await src.close()
        await tgt.close()


# -- a scripted node ----------------------------------------------------------------------------------


class FakeNode:
    """Just enough of an Ethereum node's JSON-RPC for the target's send path; scripted per test."""

    def __init__(self) -> None:
        self.nonce = 5
        self.sent: list[bytes] = []
        self.estimate: Callable[[dict[str, Any]], Any] = lambda call: "0x5208"
        self.send_errors: list[dict[str, Any]] = []
        self.http_status = 200
        self.set_hash = _vset().hash
        self.blocks: dict[int, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        if self.http_status != 200:
            return web.Response(status=self.http_status, text="busy")
        body = await request.json()
        try:
            result = self.answer(body["method"], body["params"])
        except _Answer as a:
            return web.json_response({"jsonrpc": "2.0", "id": body["id"], "error": a.error})
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return "0x7a69"
        if method == "eth_getBlockByNumber":
            if params[0] == "latest":
                return {"number": "0x10", "baseFeePerGas": "0x3b9aca00", "hash": "0x" + "00" * 32}
            return self.blocks.get(int(params[0], 16))
        if method == "eth_maxPriorityFeePerGas":
            return "0x1"
        if method == "eth_getTransactionCount":
            return hex(self.nonce)
        if method == "eth_getTransactionByHash":
            known = {"0x" + keccak(raw).hex() for raw in self.sent}
            return {"hash": params[0]} if params[0] in known else None
        if method == "eth_call":  # relaySetHash()
            return "0x" + self.set_hash.hex()
        if method == "eth_estimateGas":
            result = self.estimate(params[0])
            if isinstance(result, dict):
                raise _Answer(result)
            return result
        if method == "eth_sendRawTransaction":
            raw = bytes.fromhex(params[0][2:])
            if self.send_errors:
                raise _Answer(self.send_errors.pop(0))
            nonce = int.from_bytes(rlp.decode(raw[1:])[1] or b"\0", "big")
            if nonce != self.nonce:
                raise _Answer({"code": -32003, "message": "nonce too low" if nonce < self.nonce else "nonce too high"})
            self.sent.append(raw)
            self.nonce += 1
            return "0x" + keccak(raw).hex()
        raise _Answer({"code": -32601, "message": f"Method not found: {method}"})


class _Answer(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error


@pytest.fixture
async def fake_node() -> AsyncIterator[tuple[FakeNode, str]]:
    node = FakeNode()
    app = web.Application()
    app.router.add_post("/", node.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield node, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _sent_nonces(node: FakeNode) -> list[int]:
    return [int.from_bytes(rlp.decode(raw[1:])[1] or b"\0", "big") for raw in node.sent]


async def test_a_would_be_revert_sends_nothing(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    data = "0x" + _revert_data("PacketReplay", ["uint256", "uint256"], [7, 3]).hex()
    node.estimate = lambda call: {"code": 3, "message": "execution reverted", "data": data}
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset())
    try:
        with pytest.raises(perr.ReplayError):
            await tgt.submit("bridge.recv", _recv_args())
        assert node.sent == [] and node.nonce == 5
    finally:
        await tgt.close()


async def test_gas_over_the_cap_is_refused(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    node.estimate = lambda call: hex(2_000_000)
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset(), max_gas=1_500_000)
    try:
        with pytest.raises(GasCapError) as exc:
            await tgt.submit("bridge.recv", _recv_args())
        assert exc.value.got == 2_000_000 and node.sent == []
    finally:
        await tgt.close()


async def test_gas_limit_is_the_estimate_with_margin_under_the_cap(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    node.estimate = lambda call: hex(900_000)
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset())
    try:
        await tgt.submit("bridge.recv", _recv_args())
        (raw,) = node.sent
        assert int.from_bytes(rlp.decode(raw[1:])[4], "big") == eth.DEFAULT_MAX_GAS  # 1.25 × 900k capped at 1M
    finally:
        await tgt.close()


async def test_concurrent_submits_take_consecutive_nonces_and_resync(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset())
    try:
        hashes = await asyncio.gather(*(tgt.submit("bridge.recv", _recv_args()) for _ in range(10)))
        assert len(set(hashes)) == 10 and _sent_nonces(node) == list(range(5, 15))
        node.nonce = 20  # another process sent with this key: the local counter is behind
        await tgt.submit("bridge.recv", _recv_args())
        assert _sent_nonces(node)[-1] == 20
        # the node already holds the very transaction (an earlier attempt timed out after it arrived)
        node.send_errors = [{"code": -32000, "message": "already known"}]
        h = await tgt.submit("bridge.recv", _recv_args())
        assert h.startswith("0x") and len(h) == 66 and len(node.sent) == 11
        # ... but here it did not: the counter ran ahead of a node that does not know the transaction at 21, so
        # it is read again before the send, and 21 goes out
        await tgt.submit("bridge.recv", _recv_args())
        assert _sent_nonces(node)[-1] == 21 and len(node.sent) == 12
    finally:
        await tgt.close()


def _block_json(number: int, parent: bytes) -> dict[str, Any]:
    """A London block's JSON as a node returns it, with its true hash."""
    def h32(b: int) -> str:
        return "0x" + (bytes([b]) * 32).hex()

    block = {"parentHash": "0x" + parent.hex(), "sha3Uncles": h32(1), "miner": "0x" + "00" * 20,
             "stateRoot": h32(2), "transactionsRoot": h32(3), "receiptsRoot": h32(4), "logsBloom": "0x" + "00" * 256,
             "difficulty": "0x0", "number": hex(number), "gasLimit": "0x1c9c380", "gasUsed": "0x0",
             "timestamp": hex(1_700_000_000 + number), "extraData": "0x", "mixHash": h32(5),
             "nonce": "0x0000000000000000", "baseFeePerGas": "0x7"}
    block["hash"] = "0x" + EthHeader.from_rpc(block).hash.hex()
    return block


async def test_headers_must_hash_to_the_block_hash(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    b1 = _block_json(1, bytes(32))
    node.blocks = {1: b1, 2: _block_json(2, bytes.fromhex(b1["hash"][2:]))}
    src = eth.source(url, "eth-park", BRIDGE)
    try:
        headers = await src.headers(1, 5)  # stops at the node's head
        assert [h.height for h in headers] == [1, 2] and headers[1].parent_hash == headers[0].hash
        assert headers[0].hash.hex() == b1["hash"][2:] and await src.header_time_ms(2) == 1_700_000_002_000
        node.blocks[2] = {**node.blocks[2], "hash": "0x" + "ee" * 32}  # the node lies about a block's hash
        with pytest.raises(perr.CodecError):
            await src.headers(1, 2)
        node.blocks[2] = _block_json(2, bytes(32))  # a block that does not extend block 1 (a reorg)
        with pytest.raises(perr.TransportError):
            await src.headers(1, 2)
    finally:
        await src.close()


async def test_http_errors_are_transport_errors(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    node.http_status = 503
    src = eth.source(url, "eth-park", BRIDGE)
    try:
        with pytest.raises(perr.TransportError) as exc:
            await src.latest_height()
        assert exc.value.retryable and exc.value.side == "eth-park"
    finally:
        await src.close()


async def test_relay_set_must_have_the_bridges_hash(fake_node: tuple[FakeNode, str]) -> None:
    node, url = fake_node
    other = _vset(power=3)
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: other)
    try:
        with pytest.raises(perr.ValidatorSetMismatchError):
            await tgt.submit("bridge.recv", _recv_args())
        assert node.sent == []
    finally:
        await tgt.close()


async def test_bad_arguments_are_codec_errors(fake_node: tuple[FakeNode, str]) -> None:
    _, url = fake_node
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset())
    try:
        with pytest.raises(perr.CodecError):
            await tgt.submit("bridge.recv", {"packet": "00"})
        with pytest.raises(perr.CodecError):
            await tgt.submit("bridge.recv", {**_recv_args(), "packet": "0xzz"})
        with pytest.raises(perr.CodecError):
            await tgt.submit("bridge.teleport", {})
    finally:
        await tgt.close()


# -- calldata -----------------------------------------------------------------------------------------


def _vset(power: int = 1) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(f"v{i}", bytes([i + 1]) * 32, bytes([i + 10]) * 20, power)
                              for i in range(3)))


def _certificate() -> RelayCertificate:
    vs = _vset()
    tree = SparseMerkleTree().set(b"relay/verified/a/b/l/1", b"\x01" * 32)
    header = RelayHeader(ChainId("relay"), 7, 1000, bytes(32), bytes(32), tree.root, vs.hash, vs.hash)
    sigs = (CommitSignature(0, b"\x01" * 64, b"\x02" * 65), CommitSignature(1, b"\x03" * 64, b""),
            CommitSignature(2, b"\x04" * 64, b"\x05" * 65))
    key = b"relay/verified/a/b/l/1"
    return RelayCertificate(RelayCommit(header, 2, sigs), key, tree.get(key), tree.prove(key))


def _recv_args() -> dict[str, Any]:
    from chains.common import wire
    return {"packet": "00" * 32, "certificate": wire.certificate_to_json(_certificate())}


def test_certificate_calldata_keeps_secp_signatures_with_their_indices() -> None:
    cert = _certificate()
    (header, round_, sigs), proof = certificate_arg(cert)
    assert round_ == 2 and [i for i, _ in sigs] == [0, 2] and all(len(s) == 65 for _, s in sigs)
    assert proof == cert.proof.encode()
    assert header[0] == "relay" and header[5] == cert.commit.header.state_root
    assert commit_arg(cert.commit) == (header, round_, sigs)
    keys, addrs, powers = validator_set_arg(_vset())
    assert len(keys) == len(addrs) == len(powers) == 3


# -- the ABI strings against the compiled artifacts ---------------------------------------------------


def _abi_type(item: dict[str, Any]) -> str:
    t = str(item["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + t[len("tuple"):]
    return t


def _artifact(name: str) -> list[dict[str, Any]]:
    path = ARTIFACTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not built yet")
    abi: list[dict[str, Any]] = json.loads(path.read_text())["abi"]
    return abi


def test_abi_matches_the_artifact() -> None:
    abi = _artifact("ParkBridge")
    functions = {i["name"]: [_abi_type(x) for x in i["inputs"]] for i in abi if i["type"] == "function"}
    for name, (inputs, _) in BRIDGE_FUNCTIONS.items():
        assert functions.get(name) == inputs, name
    events = {i["name"]: i for c in ("ParkBridge", "ChargingRights") for i in _artifact(c) if i["type"] == "event"}
    for name, ev in EVENTS.items():
        assert [_abi_type(x) for x in events[name]["inputs"]] == list(ev.types), name
        assert [x["name"] for x in events[name]["inputs"]] == list(ev.fields), name
        assert [bool(x.get("indexed")) for x in events[name]["inputs"]] == list(ev.indexed), name
    errors = {selector(i["name"], [_abi_type(x) for x in i["inputs"]]): i["name"]
              for c in ("ParkBridge", "EnergyToken", "EnergyApp", "ChargingRights", "ReputationApp", "DeliveryRecord",
                        "EnergyMarket")
              for i in _artifact(c) if i["type"] == "error"}
    for name, types, _, _ in SPEC_ERRORS:
        assert errors.get(selector(name, types)) == name, f"{name} missing from the park's ABIs"
    assert set(errors.values()) == {e[0] for e in SPEC_ERRORS}  # and the adapter knows every one


async def test_update_lane_calldata_carries_the_certified_record(fake_node: tuple[FakeNode, str]) -> None:
    """``bridge.update_lane`` (protocol §6.8) takes the Python parks' args; the calldata is updateLaneConfig
    with the record's assets and capacities in the record's order."""
    from chains.common import wire
    from protocol.lane_config import encode_lane_config

    _, url = fake_node
    tgt = eth.target(url, "eth-park", BRIDGE, KEY, lambda h: _vset())
    try:
        args = {"dst_chain": "dpos-park", "lane": "lane-0", "config": encode_lane_config({"kWh": 9, "*": 2}).hex(),
                "certificate": wire.certificate_to_json(_certificate())}
        data = await tgt.calldata("bridge.update_lane", args)
        types = ["string", "string", "string[]", "uint64[]", CERTIFICATE, VALIDATOR_SET]
        assert data[:4] == selector("updateLaneConfig", types)
        dst, lane, assets, caps, _, _ = abi_decode(types, data[4:])
        assert (dst, lane, list(assets), list(caps)) == ("dpos-park", "lane-0", ["*", "kWh"], [2, 9])
        with pytest.raises(perr.CodecError):
            await tgt.calldata("bridge.update_lane", {**args, "config": "00"})
    finally:
        await tgt.close()
