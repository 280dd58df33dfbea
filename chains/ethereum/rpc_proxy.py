"""The Ethereum park's public endpoint: a JSON-RPC proxy in front of anvil (docs/security.md).

anvil serves its whole RPC to anyone who reaches it, cheat methods included: ``anvil_impersonateAccount`` the
bridge and ``eth_sendTransaction`` from it moves the escrow, ``anvil_setStorageAt`` rewrites any balance,
``evm_revert`` rolls the chain back. Relayers are untrusted by design, so the park node runs anvil where no one
else reaches it (a unix socket in the node's data dir, its TCP listener in a network namespace of its own: see
:mod:`chains.ethereum.anvil`) and serves this proxy on the park's public port:

* :data:`PUBLIC_METHODS` (standard ``eth_``/``net_``/``web3_`` reads, ``eth_call``/``eth_estimateGas`` and
  ``eth_sendRawTransaction``: what a relayer, a wallet and the operator CLI use) are forwarded for anyone;
* every other method (``anvil_*``, ``evm_*``, ``hardhat_*``, ``debug_*``, ``personal_*``, ``eth_sendTransaction``
  and the ``eth_sign*`` family, which sign with anvil's unlocked or impersonated accounts, ``eth_accounts``,
  server-side filters ...) needs the deployment's admin token as ``Authorization: Bearer <token>`` and is
  refused without it with :class:`~chains.common.jsonrpc.UnauthorizedError` (``-32001``, ``rpc.unauthorized``),
  or :class:`~chains.common.jsonrpc.MethodNotFoundError` (``-32601``) for names no node serves.

Every body goes through the strict decoder of :mod:`chains.common.jsonrpc` (size, depth, value count, UTF-8,
duplicate keys); a batch holds at most :data:`MAX_BATCH` requests. anvil sees only requests this module
re-encoded after checking them, each with an id of the proxy's own (the caller's id is restored in the answer).
anvil not answering is HTTP 503 with a JSON-RPC error (``-32000``, ``data.code`` ``transport``), which clients
treat as a retryable transport failure. No WebSocket: clients poll (``eth_getLogs``, ``eth_blockNumber``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from chains.common import jsonrpc as rpc
from protocol.errors import TransportError

__all__ = ["MAX_BATCH", "OPERATOR_PREFIXES", "PUBLIC_METHODS", "IpcUpstream", "RpcProxy", "UpstreamError"]

log = logging.getLogger("parkrelay.ethereum.proxy")

PUBLIC_METHODS: frozenset[str] = frozenset({
    # chain and client identity
    "eth_chainId", "net_version", "net_listening", "net_peerCount", "web3_clientVersion", "web3_sha3",
    "eth_protocolVersion", "eth_syncing",
    # blocks and headers (light client input: chains/ethereum/SPEC.md §E3)
    "eth_blockNumber", "eth_getBlockByNumber", "eth_getBlockByHash", "eth_getBlockReceipts",
    "eth_getBlockTransactionCountByNumber", "eth_getBlockTransactionCountByHash",
    # transactions and receipts
    "eth_getTransactionByHash", "eth_getTransactionByBlockNumberAndIndex", "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionReceipt", "eth_getTransactionCount",
    # state reads and proofs
    "eth_getBalance", "eth_getCode", "eth_getStorageAt", "eth_getProof", "eth_call", "eth_estimateGas",
    "eth_createAccessList", "eth_getLogs",
    # fees
    "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory", "eth_blobBaseFee",
    # the one write: a transaction its sender signed
    "eth_sendRawTransaction",
})
"""What anyone may call: everything a relayer (adapters/ethereum), a wallet and the operator CLI need. Not here on
purpose: ``eth_sendTransaction``, ``eth_sign``, ``eth_signTransaction``, ``eth_signTypedData*`` (anvil signs with
unlocked and impersonated accounts), ``eth_accounts`` (which accounts anvil would sign for), the filter methods
``eth_newFilter``/``eth_newBlockFilter``/``eth_getFilterChanges``/... (server-side state anyone could pile up;
poll ``eth_getLogs`` instead), ``eth_subscribe`` (WebSocket only), ``eth_simulateV1`` and ``eth_callMany``."""

OPERATOR_PREFIXES = ("anvil_", "evm_", "hardhat_", "debug_", "trace_", "personal_", "txpool_", "ots_", "admin_",
                     "miner_", "eth_")
"""Namespaces of methods the proxy forwards only with the admin token; without it they are refused as
``rpc.unauthorized`` (any other name: ``rpc.method_not_found``)."""

MAX_BATCH = 100
"""Most requests in one batch."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""Longest answer read from anvil (``eth_getLogs`` over a long range, a block's receipts)."""
UPSTREAM_TIMEOUT_S = 30.0
"""How long one request may wait for anvil."""
REFUSAL_LOG_INTERVAL_S = 60.0
"""At most one log line per this many seconds about refused operator calls."""
POOL_SIZE = 8
"""Connections to anvil's socket kept open; more concurrent requests wait for one."""


class UpstreamError(Exception):
    """The upstream socket failed or answered garbage."""


class IpcUpstream:
    """anvil's IPC socket: newline-delimited JSON-RPC, one request at a time per connection, a small pool."""

    def __init__(self, path: Path, *, pool_size: int = POOL_SIZE, timeout_s: float = UPSTREAM_TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._ids = itertools.count(1)

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request (its id replaced by ours), return anvil's answer object (id restored)."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                if conn is None:
                    conn = await asyncio.wait_for(
                        asyncio.open_unix_connection(str(self.path), limit=MAX_ANSWER_BYTES), self.timeout_s)
                answer = await asyncio.wait_for(self._exchange(conn, request), self.timeout_s)
            except (OSError, TimeoutError, ValueError, UpstreamError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as exc:
                if conn is not None:
                    conn[1].close()
                raise UpstreamError(f"{exc.__class__.__name__}: {exc}") from exc
            except BaseException:  # cancelled mid-exchange: the connection's state is unknown
                if conn is not None:
                    conn[1].close()
                raise
            self._idle.append(conn)
            return answer

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: dict[str, Any]) -> dict[str, Any]:
        reader, writer = conn
        own = next(self._ids)
        out = {"jsonrpc": "2.0", "id": own, "method": request["method"]}
        if "params" in request:
            out["params"] = request["params"]
        writer.write(json.dumps(out, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
        line = await reader.readuntil(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict) or answer.get("id") != own:
            raise UpstreamError(f"unexpected answer from anvil: {line[:200]!r}")
        answer["id"] = request.get("id")
        return answer

    async def close(self) -> None:
        while self._idle:
            _, writer = self._idle.pop()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _refusal(rid: Any, exc: rpc.RequestError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": rpc.error_object(exc.rpc_code, exc.message, exc.to_dict())}


def _check_request(body: Any, *, authorized: bool) -> dict[str, Any]:
    """The request object, checked; raises a :class:`~chains.common.jsonrpc.RequestError`."""
    if not isinstance(body, dict):
        raise rpc.InvalidRequestError("a request is a JSON object", got=type(body).__name__)
    extra = set(body) - {"jsonrpc", "id", "method", "params"}
    if extra:
        raise rpc.InvalidRequestError("unknown request members", got=sorted(extra)[:8])
    if body.get("jsonrpc") != "2.0":
        raise rpc.InvalidRequestError('"jsonrpc" must be "2.0"')
    if body.get("id") is not None and rpc.request_id(body) is None:
        raise rpc.InvalidRequestError("id must be a string, an integer or null", got=type(body["id"]).__name__)
    method = body.get("method")
    if not isinstance(method, str) or not method or len(method) > 64:
        raise rpc.InvalidRequestError("method must be a string of 1..64 characters", got=type(method).__name__)
    params = body.get("params", [])
    if not isinstance(params, (list, dict)):
        raise rpc.InvalidParamsError("params must be an array or an object", param=None, got=type(params).__name__)
    if method not in PUBLIC_METHODS and not authorized:
        if method.startswith(OPERATOR_PREFIXES):
            raise rpc.UnauthorizedError(f"{method} is an operator method of the Ethereum park node: it needs the "
                                        f"deployment's admin token (Authorization: Bearer ...)", got=method)
        raise rpc.MethodNotFoundError(f"unknown method {method!r}", got=method)
    return {"method": method, "params": params, "id": rpc.request_id(body)}


class RpcProxy:
    """The aiohttp app serving ``POST /`` (and ``POST /rpc``) in front of an :class:`IpcUpstream`."""

    def __init__(self, upstream: IpcUpstream, admin_token: str, *, chain_id: str = "ethereum",
                 max_batch: int = MAX_BATCH) -> None:
        self.upstream = upstream
        self.admin_token = admin_token or secrets.token_hex(16)  # empty: operator methods off in practice
        self.chain_id = chain_id
        self.max_batch = max_batch
        self.log = logging.LoggerAdapter(log, {"chain": chain_id})
        self.refused = 0
        """Requests refused (any reason), for tests and logs."""
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._last_warning = -REFUSAL_LOG_INTERVAL_S
        self._refusals = 0

    def authorized(self, header: str) -> bool:
        return secrets.compare_digest(header.encode(), f"Bearer {self.admin_token}".encode())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=rpc.MAX_BODY_BYTES)
        app.router.add_post("/", self.handle)
        app.router.add_post("/rpc", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        authorized = self.authorized(request.headers.get("Authorization", ""))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            exc = rpc.BodyTooLargeError("body too large", expected=f"<= {rpc.MAX_BODY_BYTES} bytes")
            self.refused += 1
            return web.json_response(_refusal(None, exc), status=exc.http_status)
        status, answer = await self.dispatch(raw, authorized=authorized)
        return web.json_response(answer, status=status)

    async def dispatch(self, raw: bytes, *, authorized: bool) -> tuple[int, Any]:
        """``(http status, answer)`` for one body (a request or a batch). Never raises."""
        try:
            body = rpc.decode_body(raw)
        except rpc.RequestError as exc:
            self.refused += 1
            return exc.http_status, _refusal(None, exc)
        if not isinstance(body, list):
            return await self._one(body, authorized)
        if not body or len(body) > self.max_batch:
            too_many = rpc.InvalidRequestError(f"a batch holds 1..{self.max_batch} requests", got=len(body))
            self.refused += 1
            return 200, _refusal(None, too_many)
        answers = await asyncio.gather(*(self._one(item, authorized) for item in body))
        if all(status == 503 for status, _ in answers):
            return 503, [a for _, a in answers]
        return 200, [a for _, a in answers]

    async def _one(self, body: Any, authorized: bool) -> tuple[int, dict[str, Any]]:
        rid = rpc.request_id(body)
        try:
            req = _check_request(body, authorized=authorized)
        except rpc.RequestError as exc:
            self.refused += 1
            if isinstance(exc, rpc.UnauthorizedError):
                self._warn_refused(req_name(body))
            return exc.http_status, _refusal(rid, exc)
        if authorized and req["method"] not in PUBLIC_METHODS:
            self.log.info("operator call %s", req["method"])
        try:
            return 200, await self.upstream.call(req)
        except UpstreamError as exc:
            self.log.warning("anvil did not answer %s: %s", req["method"], exc)
            err = TransportError(f"the park's anvil did not answer ({exc})", retryable=True, side=self.chain_id)
            return 503, {"jsonrpc": "2.0", "id": rid,
                         "error": rpc.error_object(rpc.SERVER_ERROR, err.message, err.to_dict())}

    def _warn_refused(self, method: str) -> None:
        """Log a refused operator method, at most once a minute (a caller cannot flood the log)."""
        now = time.monotonic()
        self._refusals += 1
        if now - self._last_warning >= REFUSAL_LOG_INTERVAL_S:
            self.log.warning("refused %s without the admin token (%d operator calls refused since the last line)",
                             method, self._refusals)
            self._last_warning, self._refusals = now, 0

    async def start(self, host: str, port: int) -> int:
        """Serve on ``host:port``; the bound port (``port`` 0: a free one). Raises OSError if it is taken."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.upstream.close()


def req_name(body: Any) -> str:
    m = body.get("method") if isinstance(body, dict) else None
    return m[:64] if isinstance(m, str) else "?"


def public_methods() -> Iterable[str]:
    """:data:`PUBLIC_METHODS`, sorted (docs/security.md lists them)."""
    return sorted(PUBLIC_METHODS)
