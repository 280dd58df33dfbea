"""The asyncio ABCI server over real loopback sockets, with the test key=value app: order under pipelining, Echo,
Flush, and refusals that close only the offending connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chains.common import protowire as pw
from relay.chain.abci import types as T
from relay.chain.abci.framing import encode_frame, read_frame
from relay.chain.abci.server import AbciServer, Application
from tests.unit.abci.kvapp import KVApp, app_hash_of

TIMEOUT_S = 10.0


class Client:
    """A CometBFT-like ABCI client on one connection: pipelines requests, reads responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def tcp(cls, server: AbciServer) -> Client:
        return cls(*await asyncio.open_connection(server.host, server.port))

    def send(self, *reqs: T.Request) -> None:
        self.writer.write(b"".join(encode_frame(T.encode_request(r)) for r in reqs))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self) -> T.Response:
        frame = await asyncio.wait_for(read_frame(self.reader), TIMEOUT_S)
        assert frame is not None, "connection closed"
        return T.decode_response(frame)

    async def recv_n(self, n: int) -> list[T.Response]:
        return [await self.recv() for _ in range(n)]

    async def is_closed_by_server(self) -> bool:
        return await asyncio.wait_for(read_frame(self.reader), TIMEOUT_S) is None

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def app() -> KVApp:
    return KVApp()


@pytest.fixture
async def server(app: KVApp) -> AsyncIterator[AbciServer]:
    async with AbciServer(app) as srv:
        yield srv


async def test_echo_echoes_and_flush_answers(server: AbciServer) -> None:
    c = await Client.tcp(server)
    c.send(T.RequestEcho("héllo"), T.RequestFlush())
    assert await c.recv_n(2) == [T.ResponseEcho("héllo"), T.ResponseFlush()]
    await c.close()


async def test_pipelined_requests_are_answered_in_request_order(server: AbciServer, app: KVApp) -> None:
    """A slow async FinalizeBlock sits between quick requests: every answer still comes back in request order, and
    Flush comes after all of them."""
    app.slow_finalize = 0.2
    c = await Client.tcp(server)
    reqs: list[T.Request] = [
        T.RequestEcho("1"), T.RequestInfo(), T.RequestCheckTx(b"a=1"), T.RequestCheckTx(b"bad"),
        T.RequestFinalizeBlock(txs=(b"a=1", b"b=2"), height=1), T.RequestEcho("2"), T.RequestCommit(),
        T.RequestQuery(data=b"a"), T.RequestEcho("3"), T.RequestFlush(),
    ]
    c.send(*reqs)
    got = await c.recv_n(len(reqs))
    assert [type(r).__name__.removeprefix("Response") for r in got] == \
        [type(r).__name__.removeprefix("Request") for r in reqs]
    assert got[0] == T.ResponseEcho("1") and got[5] == T.ResponseEcho("2") and got[8] == T.ResponseEcho("3")
    assert isinstance(got[2], T.ResponseCheckTx) and got[2].code == 0
    assert isinstance(got[3], T.ResponseCheckTx) and got[3].code == 1
    fin = got[4]
    assert isinstance(fin, T.ResponseFinalizeBlock) and fin.app_hash == app_hash_of({b"a": b"1", b"b": b"2"})
    assert [r.code for r in fin.tx_results] == [0, 0]
    query = got[7]
    assert isinstance(query, T.ResponseQuery) and query.value == b"1"
    await c.close()


async def test_many_pipelined_requests_in_one_write_keep_their_order(server: AbciServer) -> None:
    c = await Client.tcp(server)
    reqs = [T.RequestEcho(str(i)) for i in range(500)]
    c.send(*reqs, T.RequestFlush())
    got = await c.recv_n(501)
    assert got[:500] == [T.ResponseEcho(str(i)) for i in range(500)]
    assert got[500] == T.ResponseFlush()
    await c.close()


async def test_four_connections_are_served_and_the_app_is_never_called_concurrently(server: AbciServer,
                                                                                      app: KVApp) -> None:
    """CometBFT's consensus, mempool, query and snapshot connections: a slow FinalizeBlock on one holds the others'
    application calls (one lock, as Go's appMtx), yet Echo/Flush on the others do not wait for it."""
    app.slow_finalize = 0.3
    conns = [await Client.tcp(server) for _ in range(4)]
    conns[0].send(T.RequestFinalizeBlock(txs=(b"k=v",), height=1), T.RequestFlush())
    await asyncio.sleep(0.05)  # let FinalizeBlock take the app lock first
    conns[1].send(T.RequestEcho("fast"), T.RequestFlush())
    assert await conns[1].recv_n(2) == [T.ResponseEcho("fast"), T.ResponseFlush()]
    assert app.pending is None, "Echo was answered while FinalizeBlock still ran"
    conns[2].send(T.RequestCheckTx(b"x=1"), T.RequestFlush())
    checked = await conns[2].recv()
    assert app.pending is not None, "CheckTx ran only after FinalizeBlock finished"
    assert isinstance(checked, T.ResponseCheckTx)
    await conns[2].recv()
    assert isinstance((await conns[0].recv_n(2))[0], T.ResponseFinalizeBlock)
    conns[3].send(T.RequestListSnapshots(), T.RequestFlush())
    assert await conns[3].recv_n(2) == [T.ResponseListSnapshots(), T.ResponseFlush()]
    assert server.connections == 4
    for c in conns:
        await c.close()


BAD_STREAMS: list[tuple[str, bytes]] = [
    ("non-minimal length prefix", b"\x82\x00" + b"\x12\x00"),
    ("overlong length prefix", b"\xff" * 11),
    ("zero length", b"\x00"),
    ("oversized frame", b"\xff\xff\xff\xff\x07"),
    ("unknown request type (BeginBlock = 7)", encode_frame(b"\x3a\x00")),
    ("unknown request type 99", encode_frame(pw.Writer().raw(99, b"", keep_empty=True).done())),
    ("duplicate singular field", encode_frame(b"\xa2\x01\x04\x28\x01\x28\x02")),
    ("malformed varint in a field", encode_frame(b"\x42\x03\x10\x81\x00")),
    ("garbage", encode_frame(b"\xff\xff\xff")),
]


@pytest.mark.parametrize(("case", "stream"), BAD_STREAMS, ids=[c[0] for c in BAD_STREAMS])
async def test_a_bad_frame_is_answered_with_an_exception_and_closes_only_its_connection(
        server: AbciServer, app: KVApp, case: str, stream: bytes, caplog: pytest.LogCaptureFixture) -> None:
    good = await Client.tcp(server)
    good.send(T.RequestEcho("before"))
    assert await good.recv() == T.ResponseEcho("before")
    calls_before = sum(app.calls.values())

    bad = await Client.tcp(server)
    bad.send(T.RequestEcho("ok first"))
    assert await bad.recv() == T.ResponseEcho("ok first")
    with caplog.at_level(logging.WARNING, logger="parkrelay.abci"):
        bad.send_raw(stream)
        bad.send(T.RequestInfo())  # never answered: the connection is closed after the refusal
        answer = await bad.recv()
        assert isinstance(answer, T.ResponseException) and "refused request" in answer.error
        assert await bad.is_closed_by_server()
    assert any("abci.request.refused" in r.getMessage() for r in caplog.records)
    assert sum(app.calls.values()) == calls_before, "the application never saw the bad request (nor what followed)"

    good.send(T.RequestInfo(), T.RequestFlush())
    info, _ = await good.recv_n(2)
    assert isinstance(info, T.ResponseInfo) and info.data == "kvapp"
    fresh = await Client.tcp(server)
    fresh.send(T.RequestEcho("after"))
    assert await fresh.recv() == T.ResponseEcho("after")
    await good.close()
    await fresh.close()
    await bad.close()


async def test_a_truncated_frame_closes_that_connection_quietly(server: AbciServer) -> None:
    bad = await Client.tcp(server)
    bad.send_raw(b"\x10\x12")  # promises 16 bytes, sends 1, then hangs up
    bad.writer.write_eof()
    assert await bad.is_closed_by_server(), "no exception frame for a peer that is already gone"
    good = await Client.tcp(server)
    good.send(T.RequestEcho("still here"))
    assert await good.recv() == T.ResponseEcho("still here")
    await good.close()
    await bad.close()


class Broken(Application):
    def info(self, req: T.RequestInfo) -> T.ResponseInfo:
        raise RuntimeError("state is corrupt")

    def query(self, req: T.RequestQuery) -> T.ResponseQuery:
        return T.ResponseInfo()  # type: ignore[return-value]  # the wrong response type, on purpose

    async def check_tx(self, req: T.RequestCheckTx) -> T.ResponseCheckTx:
        return T.ResponseCheckTx(code=7)


@pytest.mark.parametrize(("req", "message"), [
    (T.RequestInfo(), "Info: RuntimeError: state is corrupt"),
    (T.RequestQuery(), "Query: the application answered ResponseInfo, expected ResponseQuery"),
])
async def test_an_application_failure_is_an_exception_answer_and_closes_the_connection(
        req: T.Request, message: str) -> None:
    async with AbciServer(Broken()) as server:
        c = await Client.tcp(server)
        c.send(T.RequestEcho("x"), req, T.RequestEcho("never"))
        assert await c.recv() == T.ResponseEcho("x")
        answer = await c.recv()
        assert isinstance(answer, T.ResponseException) and message in answer.error
        assert await c.is_closed_by_server()
        other = await Client.tcp(server)
        other.send(T.RequestCheckTx(b"t"))
        assert await other.recv() == T.ResponseCheckTx(code=7), "an async method is awaited; the server lives on"
        await c.close()
        await other.close()


async def test_default_application_answers_as_go_base_application() -> None:
    async with AbciServer(Application()) as server:
        c = await Client.tcp(server)
        c.send(T.RequestPrepareProposal(max_tx_bytes=5, txs=(b"abc", b"de", b"f")),
               T.RequestProcessProposal(), T.RequestVerifyVoteExtension(), T.RequestFinalizeBlock(txs=(b"a", b"b")),
               T.RequestOfferSnapshot(), T.RequestFlush())
        got = await c.recv_n(6)
        assert got[0] == T.ResponsePrepareProposal((b"abc", b"de"))
        assert got[1] == T.ResponseProcessProposal(T.ProposalStatus.ACCEPT)
        assert got[2] == T.ResponseVerifyVoteExtension(T.VerifyStatus.ACCEPT)
        assert got[3] == T.ResponseFinalizeBlock(tx_results=(T.ExecTxResult(), T.ExecTxResult()))
        assert got[4] == T.ResponseOfferSnapshot(T.OfferSnapshotResult.UNKNOWN)
        await c.close()


async def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "abci.sock"
    async with AbciServer(KVApp(), unix_path=path) as server:
        assert server.address == f"unix://{path}"
        reader, writer = await asyncio.open_unix_connection(str(path))
        c = Client(reader, writer)
        c.send(T.RequestEcho("unix"), T.RequestFlush())
        assert await c.recv_n(2) == [T.ResponseEcho("unix"), T.ResponseFlush()]
        await c.close()
    assert not path.exists()


async def test_stop_closes_open_connections(app: KVApp) -> None:
    server = AbciServer(app)
    await server.start()
    c = await Client.tcp(server)
    c.send(T.RequestEcho("x"))
    assert await c.recv() == T.ResponseEcho("x")
    await server.stop()
    assert await c.is_closed_by_server()
    assert server.connections == 0
    await c.close()


async def test_on_frame_sees_every_request_frame_raw(app: KVApp) -> None:
    seen: list[tuple[int, bytes]] = []
    async with AbciServer(app, on_frame=lambda conn, f: seen.append((conn, f))) as server:
        c = await Client.tcp(server)
        c.send(T.RequestEcho("a"), T.RequestFlush())
        await c.recv_n(2)
        await c.close()
    assert [f for _, f in seen] == [T.encode_request(T.RequestEcho("a")), T.encode_request(T.RequestFlush())]
