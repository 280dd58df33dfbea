"""The bridge chaincode as a service: ``python -m chains.fabric.chaincode.server`` (SPEC.md §8.7).

Each organisation's peer reaches its own instance through chaincode-as-a-service (the package's
``connection.json``); Docker is never used. The process serves Fabric's ``protos.Chaincode/Connect`` stream with
PyPI ``fabric-chaincode-python`` 2.5.4 (chaincode-server mode, ``grpc.aio``) and runs
:class:`~chains.fabric.chaincode.contract.BridgeContract` for every ``TRANSACTION`` the peer sends.

Environment
-----------

``CHAINCODE_ID``                     the chaincode package id the peer installed (``bridge_1:<hash>``); sent in
                                     ``REGISTER``, required.
``CHAINCODE_SERVER_ADDRESS``         ``host:port`` to listen on, required; the host must be loopback
                                     (``127.0.0.1``, ``::1``, ``localhost``): the peer speaks to it without TLS.
                                     Port 0 picks a free port.
``PARKRELAY_FABRIC_GENESIS_SHA256``  optional: hex SHA-256 of the only ``init_bridge`` genesis this organisation
                                     endorses (contract module docstring, "Genesis").
``PARKRELAY_FABRIC_CLOCK_SKEW_MS``   optional, tests and devnet only: added to this server's clock, to exercise
                                     skew between organisations (default 0).

Once it listens it prints one line to stdout, ``parkrelay fabric chaincode <CHAINCODE_ID> listening on
<host>:<port>``, which a launcher may await. SIGTERM or SIGINT stops it (in-flight calls get 2 s).

How it uses the library (read from its installed source, 2.5.4)
---------------------------------------------------------------

* Its ``Handler`` keeps the peer conversation (``REGISTER`` -> ``REGISTERED`` -> ``READY``, one task per message)
  and its ``ChaincodeStub`` decodes the signed proposal (creator ``SerializedIdentity``). Both are used as they are.
* Its ``handle_stub_interaction`` never puts the stub's event into ``COMPLETED`` (``set_event`` is collected and
  dropped), so :class:`_BridgeHandler` replaces that one method and sets ``ChaincodeMessage.chaincode_event``;
  the peer fills in the event's chaincode id and tx id.
* Its request path (``MsgQueueHandler``) resolves a request with the peer's reply whatever its type, so a peer
  ``ERROR`` to ``GET_STATE`` would read as a value: :meth:`_BridgeHandler.ask` checks the reply is ``RESPONSE``.
* Its stub calls are coroutines, the shared bridge rules are synchronous: each invocation runs the contract in
  a worker thread (:class:`_PeerStub` forwards each ledger call to the event loop and waits for the peer), so
  the stream keeps serving other transactions meanwhile. Stream writes are serialised by a lock.
* Its import configures root logging at DEBUG and logs every message on the ``asyncio`` logger; this module
  quiets that logger to ERROR and logs its own lines on ``parkrelay.fabric.chaincode``.

The clock
---------

``now_ms`` of an invocation is this process's wall clock (``time.time_ns()``), read once when the peer's
``TRANSACTION`` arrives: the endorsing organisation's own clock, never the client-chosen transaction timestamp
(hazard 2; contract module docstring, "Time").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

import grpc
from fabric_chaincode_python.fabric_shim.handler import Handler
from fabric_chaincode_python.fabric_shim.msg_queue_handler import QueueMessage
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
)

from chains.fabric.chaincode.contract import MAX_ARG_BYTES, STATUS_ERROR, STATUS_OK, BridgeContract, Response

log = logging.getLogger("parkrelay.fabric.chaincode")

CCMsg = chaincode_shim_pb2.ChaincodeMessage

PEER_REPLY_TIMEOUT_S = 30.0
"""Longest wait for the peer's answer to one ledger call (the peer's own execute timeout is 30 s)."""
WORKERS = 4
"""Invocations run at once."""
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""gRPC message limit both ways (a proposal carrying a relay certificate is well under 1 MiB)."""
STOP_GRACE_S = 2.0
MAX_TRANSIENT_ENTRIES = 8
"""Most transient map entries read (the market reads one, ``terms``)."""


class PeerError(Exception):
    """The peer answered a ledger call with ``ERROR``, or not in time."""


class _LockedStream:
    """The servicer context, with writes serialised (each transaction task and the request queue write)."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, msg: Any) -> None:
        async with self._lock:
            await self._context.write(msg)


class _PeerStub:
    """:class:`~chains.fabric.chaincode.ledger.Stub` for one transaction, called from a worker thread: each call
    runs on the event loop and blocks the worker until the peer answers."""

    def __init__(self, handler: _BridgeHandler, loop: asyncio.AbstractEventLoop, channel_id: str, txid: str,
                 creator: tuple[str, bytes], transient: dict[str, bytes] | None = None) -> None:
        self._handler, self._loop = handler, loop
        self._channel_id, self._txid, self._creator = channel_id, txid, creator
        self._transient = dict(transient or {})
        self.event: tuple[str, bytes] | None = None

    def _ask(self, msg_type: int, payload: Any, what: str) -> bytes:
        stopping = self._handler.stopping
        if stopping.is_set():
            raise PeerError(f"the chaincode server is stopping: {what} not sent")
        coro = self._handler.ask(msg_type, payload.SerializeToString(), self._channel_id, self._txid, what)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=PEER_REPLY_TIMEOUT_S)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise PeerError(f"no answer from the peer to {what} in {PEER_REPLY_TIMEOUT_S} s") from exc
        except concurrent.futures.CancelledError as exc:  # the server stopped while the peer had not answered
            raise PeerError(f"the chaincode server stopped before the peer answered {what}") from exc

    def get_channel_id(self) -> str:
        return self._channel_id

    def get_creator(self) -> tuple[str, bytes]:
        return self._creator

    def get_state(self, key: str) -> bytes:
        return self._ask(CCMsg.GET_STATE, chaincode_shim_pb2.GetState(key=key, collection=""), "GetState")

    def put_state(self, key: str, value: bytes) -> None:
        self._ask(CCMsg.PUT_STATE, chaincode_shim_pb2.PutState(key=key, value=value, collection=""), "PutState")

    def del_state(self, key: str) -> None:
        self._ask(CCMsg.DEL_STATE, chaincode_shim_pb2.DelState(key=key, collection=""), "DelState")

    def get_state_by_range(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        raw = self._ask(CCMsg.GET_STATE_BY_RANGE,
                        chaincode_shim_pb2.GetStateByRange(startKey=start, endKey=end, collection=""),
                        "GetStateByRange")
        while True:
            page = chaincode_shim_pb2.QueryResponse.FromString(raw)
            for result in page.results:
                kv = kv_query_result_pb2.KV.FromString(result.resultBytes)
                out.append((kv.key, bytes(kv.value)))
            if not page.has_more or len(out) >= limit:
                break
            raw = self._ask(CCMsg.QUERY_STATE_NEXT, chaincode_shim_pb2.QueryStateNext(id=page.id), "QueryStateNext")
        if page.id:
            self._ask(CCMsg.QUERY_STATE_CLOSE, chaincode_shim_pb2.QueryStateClose(id=page.id), "QueryStateClose")
        return out[:limit]

    def set_event(self, name: str, payload: bytes) -> None:
        self.event = (name, payload)

    def get_transient(self) -> dict[str, bytes]:
        return dict(self._transient)

    def put_private_data(self, collection: str, key: str, value: bytes) -> None:
        if not collection:
            raise PeerError("PutPrivateData needs a collection")
        self._ask(CCMsg.PUT_STATE, chaincode_shim_pb2.PutState(key=key, value=value, collection=collection),
                  "PutPrivateData")

    def get_private_data(self, collection: str, key: str) -> bytes:
        if not collection:
            raise PeerError("GetPrivateData needs a collection")
        return self._ask(CCMsg.GET_STATE, chaincode_shim_pb2.GetState(key=key, collection=collection),
                         "GetPrivateData")

    def get_private_data_hash(self, collection: str, key: str) -> bytes:
        if not collection:
            raise PeerError("GetPrivateDataHash needs a collection")
        return self._ask(CCMsg.GET_PRIVATE_DATA_HASH, chaincode_shim_pb2.GetState(key=key, collection=collection),
                         "GetPrivateDataHash")


def _transient_map(signed: Any) -> dict[str, bytes]:
    """The proposal's transient map (``ChaincodeProposalPayload.TransientMap``): at most
    :data:`MAX_TRANSIENT_ENTRIES` entries, each value at most the contract's largest argument."""
    raw = getattr(signed, "proposal_bytes", b"") if signed is not None else b""
    if not raw:
        return {}
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal_pb2.Proposal.FromString(raw).payload)
    if len(payload.TransientMap) > MAX_TRANSIENT_ENTRIES:
        raise ValueError(f"more than {MAX_TRANSIENT_ENTRIES} transient entries")
    out = {str(k): bytes(v) for k, v in payload.TransientMap.items()}
    if any(len(v) > MAX_ARG_BYTES for v in out.values()):
        raise ValueError(f"a transient value above {MAX_ARG_BYTES} bytes")
    return out


class _BridgeHandler(Handler):  # type: ignore[misc]  # the library is untyped
    """The library's peer conversation, with the transaction step replaced (module docstring)."""

    def __init__(self, chaincode_id: str, contract: BridgeContract, pool: concurrent.futures.Executor,
                 clock: Callable[[], int], stopping: threading.Event) -> None:
        super().__init__(chaincode_id, None)
        self._contract, self._pool, self._clock = contract, pool, clock
        self.stopping = stopping
        """Set once the server stops: a worker's next ledger call fails at once instead of waiting for a peer."""

    async def chat_with_peer(self, stream: AsyncIterable[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await super().chat_with_peer(stream, _LockedStream(context))

    async def ask(self, msg_type: int, payload: bytes, channel_id: str, txid: str, what: str) -> bytes:
        """Send one ledger request for transaction ``txid`` and return the peer's ``RESPONSE`` payload."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        msg = CCMsg(type=msg_type, payload=payload, txid=txid, channel_id=channel_id)
        await self.msg_queue_handler.queue_msg(QueueMessage(msg, what, future))
        reply = await future
        if reply.type != CCMsg.RESPONSE:
            raise PeerError(f"peer refused {what}: {bytes(reply.payload)[:200].decode('utf-8', 'replace')}")
        return bytes(reply.payload)

    async def handle_stub_interaction(self, msg: Any, action: str = "Invoke") -> None:
        now_ms = self._clock()
        event: tuple[str, bytes] | None = None
        if action.lower() == "init":
            # the 2.x lifecycle calls Init only for --init-required chaincode; the bridge has its init_bridge
            response = Response(STATUS_OK)
        else:
            try:
                cc_input = chaincode_pb2.ChaincodeInput.FromString(msg.payload)
                stub = ChaincodeStub(self, msg.channel_id, msg.txid, cc_input, msg.proposal)
                creator = stub.get_creator() or {}
                peer_stub = _PeerStub(self, asyncio.get_running_loop(), msg.channel_id, msg.txid,
                                      (str(creator.get("mspid", "")), bytes(creator.get("idBytes", b""))),
                                      _transient_map(msg.proposal))
            except Exception as exc:  # a proposal the library cannot decode
                log.warning("tx %s: undecodable proposal: %s", msg.txid, exc)
                response = Response(STATUS_ERROR, message=f"[codec.invalid] undecodable proposal: {exc}"[:512])
            else:
                response = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._contract.invoke, peer_stub, [bytes(a) for a in cc_input.args], now_ms)
                event = peer_stub.event if response.status == STATUS_OK else None
        completed = CCMsg(type=CCMsg.COMPLETED, txid=msg.txid, channel_id=msg.channel_id,
                          payload=proposal_response_pb2.Response(status=response.status, message=response.message,
                                                                 payload=response.payload).SerializeToString())
        if event is not None:
            completed.chaincode_event.CopyFrom(chaincode_event_pb2.ChaincodeEvent(event_name=event[0],
                                                                                 payload=event[1]))
        await self.context.write(completed)


class _Service(chaincode_shim_pb2_grpc.ChaincodeServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, chaincode_id: str, contract: BridgeContract, pool: concurrent.futures.Executor,
                 clock: Callable[[], int], stopping: threading.Event) -> None:
        self._args = (chaincode_id, contract, pool, clock, stopping)

    async def Connect(self, request_iterator: AsyncIterable[Any],
                      context: grpc.aio.ServicerContext[Any, Any]) -> None:
        peer = context.peer()
        log.info("peer %s connected", peer)
        try:
            await _BridgeHandler(*self._args).chat_with_peer(request_iterator, context)
        except asyncio.CancelledError:
            log.info("peer %s: stream cancelled", peer)
            raise
        log.info("peer %s disconnected", peer)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` with a loopback host (``[::1]:port`` for IPv6); :class:`ValueError` otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"CHAINCODE_SERVER_ADDRESS must be host:port, got {address!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != "localhost":
        try:
            loopback = ipaddress.ip_address(bare).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the chaincode server listens on loopback only (no TLS), got host {host!r}")
    return host, int(port_text)


def wall_clock_ms(skew_ms: int = 0) -> Callable[[], int]:
    """This organisation's chaincode clock, in ms."""
    return lambda: time.time_ns() // 1_000_000 + skew_ms


async def serve(chaincode_id: str, address: str, contract: BridgeContract, clock: Callable[[], int]) -> None:
    """Listen on ``address`` and serve peers until SIGTERM or SIGINT.

    Stopping takes at most :data:`STOP_GRACE_S` plus a moment: the gRPC server stops, then every ledger call still
    waiting for a peer is cancelled (its worker's transaction fails, the peer gets nothing: it times the proposal
    out as if the server had crashed; the state lives on the peer, so nothing is lost), and the workers end."""
    host, _ = parse_address(address)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="bridge-cc")
    stopping = threading.Event()
    try:
        chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(
            _Service(chaincode_id, contract, pool, clock, stopping), server)
        port = server.add_insecure_port(address)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"parkrelay fabric chaincode {chaincode_id} listening on {host}:{port}", flush=True)
        await stop.wait()
        log.info("stopping")
        stopping.set()
        await server.stop(STOP_GRACE_S)
    finally:
        stopping.set()
        # a worker blocked on a ledger call waits for a task on this loop: cancel those tasks (the loop keeps
        # running while the pool shuts down) instead of letting each worker wait out PEER_REPLY_TIMEOUT_S
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _quiet_library_logging() -> None:
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.INFO)


def main() -> int:
    _quiet_library_logging()
    chaincode_id = os.environ.get("CHAINCODE_ID", "")
    address = os.environ.get("CHAINCODE_SERVER_ADDRESS", "")
    pin_hex = os.environ.get("PARKRELAY_FABRIC_GENESIS_SHA256", "")
    skew_text = os.environ.get("PARKRELAY_FABRIC_CLOCK_SKEW_MS", "0")
    try:
        if not chaincode_id:
            raise ValueError("CHAINCODE_ID is required (the installed package id)")
        parse_address(address)
        pin = bytes.fromhex(pin_hex) if pin_hex else None
        if pin is not None and len(pin) != 32:
            raise ValueError("PARKRELAY_FABRIC_GENESIS_SHA256 must be 64 hex digits")
        skew_ms = int(skew_text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if pin is None:
        log.warning("no PARKRELAY_FABRIC_GENESIS_SHA256: this organisation endorses the first init_bridge genesis")
    if skew_ms:
        log.warning("chaincode clock skewed by %d ms (PARKRELAY_FABRIC_CLOCK_SKEW_MS)", skew_ms)
    asyncio.run(serve(chaincode_id, address, BridgeContract(genesis_sha256=pin), wall_clock_ms(skew_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
