"""The chaincode server as a real process, spoken to as a Fabric peer speaks to a chaincode-as-a-service.

The test plays the peer's side of ``protos.Chaincode/Connect`` over gRPC on 127.0.0.1 (``REGISTERED``, ``READY``,
``TRANSACTION``, answering each ``GET_STATE``/``PUT_STATE``/``DEL_STATE``/range request from a dict), with the
protobuf messages encoded by hand below: ``fabric_protos`` must not be imported into the test process, which may
also hold hfc's protos. Field numbers are Fabric's (``peer/chaincode_shim.proto``, ``peer/proposal.proto``,
``common/common.proto``, ``msp/identities.proto``). A full run inside real Fabric is the network's integration test.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from chains.fabric.chaincode.contract import attestation_statement
from chains.fabric.consts import OPERATOR_MSP
from tests.unit.fabric_chaincode.fake import identity
from tests.unit.fabric_chaincode.harness import make_harness

ROOT = Path(__file__).resolve().parents[3]

# ChaincodeMessage.Type
REGISTER, REGISTERED, READY, TRANSACTION, COMPLETED, ERROR = 1, 2, 4, 5, 6, 7
GET_STATE, PUT_STATE, DEL_STATE, RESPONSE, GET_STATE_BY_RANGE, QUERY_STATE_NEXT, QUERY_STATE_CLOSE = (
    8, 9, 10, 13, 14, 16, 17)


# --- a minimal protobuf codec (varint and length-delimited fields only) ----------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(raw)) + raw


def decode(raw: bytes) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = n = 0
        while True:
            b = raw[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(raw):
        tag = varint()
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            out.setdefault(num, []).append(varint())
        elif wire == 2:
            n = varint()
            out.setdefault(num, []).append(raw[i:i + n])
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def one(msg: dict[int, list[Any]], num: int, default: Any = b"") -> Any:
    return msg.get(num, [default])[0]


def chaincode_message(type_: int, payload: bytes = b"", txid: str = "", channel: str = "",
                      proposal: bytes = b"") -> bytes:
    out = field(1, type_) + field(3, payload) + field(4, txid) + field(7, channel)
    return out + (field(5, proposal) if proposal else b"")


def signed_proposal(creator: tuple[str, bytes], args: list[bytes], channel: str, txid: str) -> bytes:
    """SignedProposal{Proposal{Header{ChannelHeader, SignatureHeader{SerializedIdentity}}, payload}}."""
    ident = field(1, creator[0]) + field(2, creator[1])
    sig_header = field(1, ident) + field(2, b"nonce")
    chan_header = field(1, 3) + field(4, channel) + field(5, txid)
    header = field(1, chan_header) + field(2, sig_header)
    cc_input = b"".join(field(1, a) for a in args)
    payload = field(1, field(1, field(3, cc_input)))  # ChaincodeProposalPayload{input: ChaincodeInvocationSpec}
    return field(1, field(1, header) + field(2, payload)) + field(2, b"sig")


# --- the peer side -------------------------------------------------------------------------------


class FakePeer:
    """One Connect stream to the chaincode, answering its ledger requests from ``self.state``."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        connect = self.channel.stream_stream("/protos.Chaincode/Connect", request_serializer=None,
                                             response_deserializer=None)
        self.replies: Iterator[bytes] = connect(iter(self.outbox.get, None), timeout=60)
        self.state: dict[str, bytes] = {}
        self.requests: list[tuple[int, dict[int, list[Any]]]] = []

    def recv(self) -> dict[int, list[Any]]:
        return decode(next(self.replies))

    def send(self, msg: bytes) -> None:
        self.outbox.put(msg)

    def handshake(self) -> str:
        register = self.recv()
        assert one(register, 1) == REGISTER
        chaincode_id = one(decode(one(register, 3)), 2).decode()  # ChaincodeID.name
        self.send(chaincode_message(REGISTERED))
        self.send(chaincode_message(READY))
        return chaincode_id

    def transaction(self, args: list[bytes], creator: tuple[str, bytes] | None = None, txid: str = "tx",
                    channel: str = "park") -> tuple[dict[int, list[Any]], dict[int, list[Any]]]:
        """Run one transaction; returns (the Response, the COMPLETED message)."""
        proposal = signed_proposal(creator, args, channel, txid) if creator else b""
        cc_input = b"".join(field(1, a) for a in args)
        self.send(chaincode_message(TRANSACTION, cc_input, txid, channel, proposal))
        while True:
            msg = self.recv()
            kind, payload = one(msg, 1), one(msg, 3)
            assert one(msg, 4).decode() == txid and one(msg, 7).decode() == channel
            if kind == COMPLETED:
                return decode(payload), msg
            self.requests.append((kind, decode(payload)))
            self.send(chaincode_message(RESPONSE, self.answer(kind, decode(payload)), txid, channel))

    def answer(self, kind: int, req: dict[int, list[Any]]) -> bytes:
        if kind == GET_STATE:
            return self.state.get(one(req, 1).decode(), b"")
        if kind == PUT_STATE:
            self.state[one(req, 1).decode()] = one(req, 2)
            return b""
        if kind == DEL_STATE:
            self.state.pop(one(req, 1).decode(), None)
            return b""
        if kind == GET_STATE_BY_RANGE:
            start, end = one(req, 1).decode(), one(req, 2).decode()
            kvs = [field(2, k) + field(3, v) for k, v in sorted(self.state.items()) if start <= k < end]
            return b"".join(field(1, field(1, kv)) for kv in kvs) + field(2, 0) + field(3, "q1")
        if kind == QUERY_STATE_CLOSE:
            return field(2, 0) + field(3, "q1")
        raise AssertionError(f"unexpected request {kind}")

    def close(self) -> None:
        self.outbox.put(None)
        self.channel.close()


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {**os.environ, "CHAINCODE_ID": "bridge_1:0123abcd", "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0",
           "PYTHONPATH": str(ROOT)}
    env.pop("PARKRELAY_FABRIC_GENESIS_SHA256", None)
    proc = subprocess.Popen([sys.executable, "-m", "chains.fabric.chaincode.server"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the readiness line: the server listens once it is printed
        assert line.startswith("parkrelay fabric chaincode bridge_1:0123abcd listening on 127.0.0.1:"), (
            line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        yield line.rsplit(" ", 1)[1].strip(), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_listens_registers_and_answers_attest(server: tuple[str, subprocess.Popen[str]]) -> None:
    address, _proc = server
    peer = FakePeer(address)
    try:
        assert peer.handshake() == "bridge_1:0123abcd"
        peer.state["receipts/dpos-park/lane-0/1"] = bytes(range(32))
        before = time.time_ns() // 1_000_000
        response, completed = peer.transaction([b"attest", b"receipts/dpos-park/lane-0/1".hex().encode(), b"ab"])
        after = time.time_ns() // 1_000_000
        assert one(response, 1) == 200, one(response, 2)
        statement = one(response, 3)
        time_ms = json.loads(statement)["time_ms"]
        assert before <= time_ms <= after  # the server's own clock
        assert statement == attestation_statement("park", b"receipts/dpos-park/lane-0/1", b"\xab", time_ms,
                                                  bytes(range(32)))
        assert 6 not in completed  # a query emits no event
        assert [k for k, _ in peer.requests] == [GET_STATE]
    finally:
        peer.close()


def test_server_runs_submits_with_writes_events_and_refusals(server: tuple[str, subprocess.Popen[str]]) -> None:
    """init_bridge, register and whoami through the real server: the creator is decoded from the signed proposal,
    writes reach the peer as PUT_STATE, the event rides in COMPLETED, and a refusal is status 500 with its code."""
    address, _proc = server
    genesis = make_harness(init=False).genesis_json.encode()
    operator, carol = identity(OPERATOR_MSP, "operator"), identity(OPERATOR_MSP, "carol")
    peer = FakePeer(address)
    try:
        peer.handshake()
        response, _ = peer.transaction([b"register"], operator, "tx0")
        assert one(response, 1) == 500 and one(response, 2).startswith(b"[protocol] bridge not initialised")
        assert not any(k == PUT_STATE for k, _ in peer.requests)

        response, completed = peer.transaction([b"init_bridge", genesis], operator, "tx1")
        assert one(response, 1) == 200, one(response, 2)
        event = decode(one(completed, 6))  # ChaincodeEvent{event_name=3, payload=4}
        assert one(event, 3) == b"bridge_initialised"
        assert json.loads(one(event, 4))[0]["chain_id"] == "fabric-park"
        assert json.loads(peer.state["bridge/config"])["chain_id"] == "fabric-park"
        assert peer.state["balances/SalesMSP:alice/kWh"] == b"100000"

        response, _ = peer.transaction([b"init_bridge", genesis], operator, "tx2")
        assert one(response, 1) == 500 and one(response, 2).startswith(b"[packet.replay] bridge already initialised")

        response, completed = peer.transaction([b"register"], carol, "tx3")
        assert one(response, 1) == 200, one(response, 2)
        assert one(decode(one(completed, 6)), 3) == b"account_registered"
        assert "accounts/OperatorMSP:carol" in peer.state

        response, _ = peer.transaction([b"whoami"], carol, "tx4")
        assert json.loads(one(response, 3)) == {"account": "OperatorMSP:carol", "registered": True}

        response, _ = peer.transaction([b"supply"], carol, "tx5")  # range scans through the peer
        assert json.loads(one(response, 3))["issued"] == {"kWh": 100000}

        response, _ = peer.transaction([b"whoami"], None, "tx6")  # no proposal: no creator
        assert one(response, 1) == 500 and one(response, 2).startswith(b"[auth.denied]")
    finally:
        peer.close()


@pytest.mark.parametrize("address", ["0.0.0.0:7052", "10.1.2.3:7052", "example.org:7052", "7052", "127.0.0.1:x"])
def test_server_refuses_a_non_loopback_or_malformed_address(address: str) -> None:
    env = {**os.environ, "CHAINCODE_ID": "bridge_1:0", "CHAINCODE_SERVER_ADDRESS": address, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "chains.fabric.chaincode.server"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "error:" in proc.stderr and not proc.stdout


def test_only_the_server_module_loads_the_chaincode_library() -> None:
    """The contract (and so the adapter and the relay, which may import it) never loads fabric_protos, whose
    descriptors clash with hfc's in one process."""
    code = ("import sys, chains.fabric.chaincode.contract, chains.fabric.chaincode.ledger, "
            "chains.fabric.chaincode.identity\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fabric_protos', 'fabric_chaincode_python', "
            "'grpc', 'google'))\n"
            "assert not bad, bad\n"
            "import chains.fabric.chaincode.server\n"
            "assert 'fabric_protos' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   timeout=60)
