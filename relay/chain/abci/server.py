"""An asyncio ABCI 2.0 socket server for CometBFT v0.38, and the :class:`Application` contract it serves.

CometBFT (``proxy_app = "tcp://127.0.0.1:PORT"`` or ``"unix:///path"``, ``abci = "socket"``) opens four connections
to the server: consensus, mempool, query and snapshot. On each it writes length-prefixed ``Request`` frames
(:mod:`relay.chain.abci.framing`), pipelining them, and sends ``Flush`` when it wants the answers so far. What holds,
per connection:

* requests are answered one at a time, in the order they arrived, so responses are in request order;
* ``Echo`` is answered with its message and ``Flush`` with ``ResponseFlush``, by the server itself; a ``Flush``
  answer is written after every earlier answer and the socket buffer is drained before the next request is read;
* every other request goes to the :class:`Application`, holding one lock shared by all connections (as Go's
  ``abci/server/socket_server.go`` holds its ``appMtx``): the application is never called concurrently, so it needs
  no locking of its own;
* a malformed frame, a request that does not decode (:class:`~relay.chain.abci.types.UnknownRequestError` for an
  unknown variant), an application method that raises, or one that returns the wrong response type: the server
  answers ``ResponseException`` (the protocol's one error reply), logs, and closes *that* connection. The
  application never sees a request that did not decode; the other connections and the listener keep working.
  (CometBFT treats an exception or a lost connection as fatal to its ABCI client and stops the node.)

**Application methods** are plain or ``async``: the server awaits the result when it is awaitable. Plain methods
run on the event loop, so they should be quick; a slow one belongs in an ``async def`` that offloads its work.
The defaults of :class:`Application` answer as CometBFT's Go ``BaseApplication`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Final, TypeAlias, TypeVar, cast

from protocol.errors import CodecError
from relay.chain.abci.framing import FrameError, encode_frame, read_frame
from relay.chain.abci.types import (
    MAX_MESSAGE_BYTES,
    ExecTxResult,
    ProposalStatus,
    Request,
    RequestApplySnapshotChunk,
    RequestCheckTx,
    RequestCommit,
    RequestEcho,
    RequestExtendVote,
    RequestFinalizeBlock,
    RequestFlush,
    RequestInfo,
    RequestInitChain,
    RequestListSnapshots,
    RequestLoadSnapshotChunk,
    RequestOfferSnapshot,
    RequestPrepareProposal,
    RequestProcessProposal,
    RequestQuery,
    RequestVerifyVoteExtension,
    Response,
    ResponseApplySnapshotChunk,
    ResponseCheckTx,
    ResponseCommit,
    ResponseEcho,
    ResponseException,
    ResponseExtendVote,
    ResponseFinalizeBlock,
    ResponseFlush,
    ResponseInfo,
    ResponseInitChain,
    ResponseListSnapshots,
    ResponseLoadSnapshotChunk,
    ResponseOfferSnapshot,
    ResponsePrepareProposal,
    ResponseProcessProposal,
    ResponseQuery,
    ResponseVerifyVoteExtension,
    VerifyStatus,
    decode_request,
    encode_response,
    request_name,
)

__all__ = ["DEFAULT_HOST", "AbciServer", "Application", "MaybeAwaitable"]

log = logging.getLogger("parkrelay.abci")

DEFAULT_HOST: Final = "127.0.0.1"
"""The server listens on loopback unless told otherwise: ABCI has no authentication."""

_T = TypeVar("_T")
MaybeAwaitable: TypeAlias = _T | Awaitable[_T]
"""What an :class:`Application` method returns: the response, or an awaitable of it."""


class Application:
    """The ABCI 2.0 application contract (CometBFT v0.38): one method per request, each taking the decoded request
    and returning its response (or an awaitable of it). Override what the application needs; the defaults answer
    as Go's ``BaseApplication``. A method that raises makes the server answer ``ResponseException`` and close the
    connection (CometBFT then stops): raise only for a broken invariant, never for an invalid transaction (answer a
    non-zero ``code`` instead)."""

    def info(self, req: RequestInfo) -> MaybeAwaitable[ResponseInfo]:
        """Last committed height and app hash (query connection, at start-up)."""
        return ResponseInfo()

    def init_chain(self, req: RequestInitChain) -> MaybeAwaitable[ResponseInitChain]:
        """Genesis (consensus connection, once)."""
        return ResponseInitChain()

    def query(self, req: RequestQuery) -> MaybeAwaitable[ResponseQuery]:
        """A state read (query connection)."""
        return ResponseQuery()

    def check_tx(self, req: RequestCheckTx) -> MaybeAwaitable[ResponseCheckTx]:
        """Mempool admission (mempool connection); ``code`` 0 admits."""
        return ResponseCheckTx()

    def prepare_proposal(self, req: RequestPrepareProposal) -> MaybeAwaitable[ResponsePrepareProposal]:
        """The proposer's transactions: by default the mempool's, in order, while they fit ``max_tx_bytes``."""
        txs: list[bytes] = []
        total = 0
        for tx in req.txs:
            total += len(tx)
            if total > req.max_tx_bytes:
                break
            txs.append(tx)
        return ResponsePrepareProposal(tuple(txs))

    def process_proposal(self, req: RequestProcessProposal) -> MaybeAwaitable[ResponseProcessProposal]:
        """Accept or reject a proposal (default: accept)."""
        return ResponseProcessProposal(ProposalStatus.ACCEPT)

    def extend_vote(self, req: RequestExtendVote) -> MaybeAwaitable[ResponseExtendVote]:
        """This node's vote extension (default: empty)."""
        return ResponseExtendVote()

    def verify_vote_extension(self, req: RequestVerifyVoteExtension) -> MaybeAwaitable[ResponseVerifyVoteExtension]:
        """Another validator's vote extension (default: accept)."""
        return ResponseVerifyVoteExtension(VerifyStatus.ACCEPT)

    def finalize_block(self, req: RequestFinalizeBlock) -> MaybeAwaitable[ResponseFinalizeBlock]:
        """Execute a decided block (default: every transaction succeeds, empty app hash)."""
        return ResponseFinalizeBlock(tx_results=tuple(ExecTxResult() for _ in req.txs))

    def commit(self, req: RequestCommit) -> MaybeAwaitable[ResponseCommit]:
        """Persist what the last FinalizeBlock computed."""
        return ResponseCommit()

    def list_snapshots(self, req: RequestListSnapshots) -> MaybeAwaitable[ResponseListSnapshots]:
        """Local snapshots (default: none)."""
        return ResponseListSnapshots()

    def offer_snapshot(self, req: RequestOfferSnapshot) -> MaybeAwaitable[ResponseOfferSnapshot]:
        """A peer's snapshot (default: UNKNOWN, which aborts state sync)."""
        return ResponseOfferSnapshot()

    def load_snapshot_chunk(self, req: RequestLoadSnapshotChunk) -> MaybeAwaitable[ResponseLoadSnapshotChunk]:
        """A local snapshot chunk (default: empty)."""
        return ResponseLoadSnapshotChunk()

    def apply_snapshot_chunk(self, req: RequestApplySnapshotChunk) -> MaybeAwaitable[ResponseApplySnapshotChunk]:
        """A chunk being restored (default: UNKNOWN, which aborts state sync)."""
        return ResponseApplySnapshotChunk()


_DISPATCH: Final[dict[type, tuple[str, type]]] = {
    RequestInfo: ("info", ResponseInfo),
    RequestInitChain: ("init_chain", ResponseInitChain),
    RequestQuery: ("query", ResponseQuery),
    RequestCheckTx: ("check_tx", ResponseCheckTx),
    RequestPrepareProposal: ("prepare_proposal", ResponsePrepareProposal),
    RequestProcessProposal: ("process_proposal", ResponseProcessProposal),
    RequestExtendVote: ("extend_vote", ResponseExtendVote),
    RequestVerifyVoteExtension: ("verify_vote_extension", ResponseVerifyVoteExtension),
    RequestFinalizeBlock: ("finalize_block", ResponseFinalizeBlock),
    RequestCommit: ("commit", ResponseCommit),
    RequestListSnapshots: ("list_snapshots", ResponseListSnapshots),
    RequestOfferSnapshot: ("offer_snapshot", ResponseOfferSnapshot),
    RequestLoadSnapshotChunk: ("load_snapshot_chunk", ResponseLoadSnapshotChunk),
    RequestApplySnapshotChunk: ("apply_snapshot_chunk", ResponseApplySnapshotChunk),
}
"""Request type -> (the :class:`Application` method, the response type it must return)."""


class _AppFailed(Exception):
    """The application raised or answered the wrong type: answered with ResponseException, connection closed."""


class AbciServer:
    """Serves one :class:`Application` to CometBFT over TCP (``host``/``port``, port 0: any free one) or a unix
    socket (``unix_path``). An async context manager: ``async with AbciServer(app) as server: server.port``."""

    def __init__(self, app: Application, *, host: str = DEFAULT_HOST, port: int = 0, unix_path: Path | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, name: str = "abci",
                 on_frame: Callable[[int, bytes], None] | None = None) -> None:
        self.app = app
        """The application served."""
        self.host = host
        """TCP host to listen on (ignored with ``unix_path``)."""
        self.port = port
        """TCP port; after :meth:`start`, the port actually bound."""
        self.unix_path = unix_path
        """Unix socket path, instead of TCP."""
        self.max_message_bytes = max_message_bytes
        """Largest request frame read (:data:`~relay.chain.abci.types.MAX_MESSAGE_BYTES` by default)."""
        self.on_frame = on_frame
        """Called with (connection number, payload) for every request frame read, before it is decoded: a trace
        hook (tests record CometBFT's frames with it). It must not raise."""
        self.log = logging.LoggerAdapter(log, {"server": name})
        self._app_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None
        self._conns: dict[int, tuple[asyncio.Task[None], asyncio.StreamWriter]] = {}
        self._ids = itertools.count(1)
        self.requests_served = 0
        """Requests answered so far (all connections; Echo and Flush included)."""

    @property
    def address(self) -> str:
        """The address CometBFT's ``proxy_app`` takes: ``tcp://HOST:PORT`` or ``unix://PATH``."""
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"tcp://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    async def start(self) -> None:
        """Listen (returns once the socket is bound)."""
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.unix_path),
                                                           limit=_READ_BUFFER)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=_READ_BUFFER)
            self.port = self._server.sockets[0].getsockname()[1]
        self.log.info("abci.listen address=%s", self.address)

    async def stop(self) -> None:
        """Stop listening, close every connection, and wait for their tasks to end. Closing a connection's socket
        ends its reader, so each handler leaves its loop by itself (one stuck in the application is cancelled after
        ``_STOP_GRACE_S``)."""
        if self._server is not None:
            self._server.close()
        for _, writer in list(self._conns.values()):
            writer.close()
        tasks = [task for task, _ in self._conns.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)

    async def __aenter__(self) -> AbciServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = next(self._ids)
        task = asyncio.current_task()
        assert task is not None
        self._conns[conn] = (task, writer)
        self.log.info("abci.conn.open conn=%d peer=%s", conn, writer.get_extra_info("peername"))
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.log.info("abci.conn.lost conn=%d err=%r", conn, exc)
        finally:
            self._conns.pop(conn, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.log.info("abci.conn.close conn=%d", conn)

    async def _serve(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection's step loop: read a frame, answer it, until EOF or a refusal."""
        while True:
            try:
                frame = await read_frame(reader, max_bytes=self.max_message_bytes)
                if frame is None:
                    return
                if self.on_frame is not None:
                    self.on_frame(conn, frame)
                req = decode_request(frame)
            except CodecError as exc:
                self.log.warning("abci.request.refused conn=%d err=%s", conn, exc)
                if not (isinstance(exc, FrameError) and exc.truncated):
                    await self._write(writer, ResponseException(f"refused request: {exc}"))
                return
            try:
                resp = await self._answer(req)
            except _AppFailed as exc:
                self.log.error("abci.app.failed conn=%d request=%s err=%s", conn, request_name(req), exc)
                await self._write(writer, ResponseException(str(exc)))
                return
            await self._write(writer, resp)
            self.requests_served += 1

    async def _answer(self, req: Request) -> Response:
        if isinstance(req, RequestEcho):
            return ResponseEcho(req.message)
        if isinstance(req, RequestFlush):
            return ResponseFlush()
        method_name, resp_type = _DISPATCH[type(req)]
        async with self._app_lock:
            try:
                result: object = getattr(self.app, method_name)(req)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                raise _AppFailed(f"{request_name(req)}: {type(exc).__name__}: {exc}") from exc
        if type(result) is not resp_type:
            raise _AppFailed(f"{request_name(req)}: the application answered {type(result).__name__}, "
                             f"expected {resp_type.__name__}")
        return cast(Response, result)

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, resp: Response) -> None:
        writer.write(encode_frame(encode_response(resp)))
        await writer.drain()


_STOP_GRACE_S: Final = 5.0
"""How long :meth:`AbciServer.stop` waits for a connection's handler to end after closing its socket."""
_READ_BUFFER: Final = 1 << 20
"""StreamReader buffer limit: how far the server reads ahead of a pipelining client (frames themselves are read
with ``readexactly``, which this limit does not bound)."""
