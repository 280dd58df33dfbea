"""A relay validator on CometBFT (``[relay] engine = "cometbft"``, issue 17): the relay RPC beside CometBFT.

One process per validator, as on the built-in engine, holds three parts:

* :class:`~relay.chain.abci.app.RelayAbciApp`, the relay state machine as an ABCI application, served on the
  validator's ABCI port by :class:`~relay.chain.abci.server.AbciServer`;
* :class:`CometRelayNode`, the relay node runtime over the app's store, serving the relay RPC and WebSocket
  (``getCertificate``, ``getHeader``, ``query``, heads, …) on the validator's relay port, exactly as the built-in
  engine's validator does: relayers, park bridges, the operator API and ``doctor`` do not know which engine runs.
  The app stores a block once its relay commit arrives (with the next block), so every block served has its
  commit. ``submitTx`` is CometBFT's ``broadcast_tx_sync``: CheckTx (the relay's admission) answers, and a refusal
  comes back as the same typed error the built-in engine gives;
* the ``cometbft`` process itself (:func:`start_cometbft`), a child tied to this process (it dies with it), its home
  under ``<data_dir>/cometbft/<validator>``.

The node gossips nothing itself: CometBFT carries transactions, proposals and votes. Its ``/p2p/*`` routes and the
admin peer methods refuse with a typed error saying so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from adapters.common.rpc import error_from_rpc
from chains.common.node import NodeConfig, _p2p_refused
from chains.common.procs import spawn
from chains.common.state import ChainState, canonical_json
from chains.common.tx import account_path
from protocol.errors import CodecError, MempoolFullError, ProtocolError
from relay.chain.abci.cometbft import cometbft_binary
from relay.chain.node import RelayNode, RelayRules

__all__ = ["BROADCAST_TIMEOUT_S", "PREVIOUS_STOP_S", "CometRelayNode", "NotGossipedError", "start_cometbft",
           "wait_exit"]

log = logging.getLogger("parkrelay.relay.abci")

BROADCAST_TIMEOUT_S: Final = 10.0
"""How long ``submitTx`` waits for CometBFT's ``broadcast_tx_sync`` (CheckTx) before answering ``mempool.full``."""
_ALREADY_IN_MEMPOOL: Final = "tx already exists in cache"
_MEMPOOL_FULL: Final = "mempool is full"


class NotGossipedError(CodecError):
    """A message for the built-in engine's gossip sent to a validator on CometBFT (which gossips through CometBFT)."""


class CometRelayNode(RelayNode):
    """The relay node runtime serving a :class:`~relay.chain.abci.app.RelayAbciApp`'s chain; ``cometbft_rpc`` is the
    URL of this validator's CometBFT RPC (``http://127.0.0.1:<port>``), where ``submitTx`` sends transactions."""

    def __init__(self, rules: RelayRules, config: NodeConfig, cometbft_rpc: str) -> None:
        super().__init__(rules, config)
        self.cometbft_rpc = cometbft_rpc.rstrip("/")
        self._ids = itertools.count(1)
        self._gossip_enabled = False  # CometBFT gossips; the sync loop pulls nothing
        self.check_state: Callable[[], ChainState] | None = None
        """The app's CheckTx state (the last committed block plus what its mempool admitted since): where
        ``getAccount`` reads an account's pending nonces. Set by the app."""

    async def _rpc_get_account(self, p: dict[str, Any]) -> Any:
        """The account at the stored head, ``pending``: its transactions CometBFT committed or admitted since (the
        block waiting for its commit, the mempool), so nonce + pending is the next nonce CheckTx takes."""
        acct = await super()._rpc_get_account(p)
        if self.check_state is not None:
            ahead = self.check_state().get_json(account_path(p["name"]))
            if ahead is not None:
                acct["pending"] = max(0, int(ahead["nonce"]) - int(acct["nonce"]))
        return acct

    async def _rpc_submit_tx(self, p: dict[str, Any]) -> dict[str, Any]:
        tx = self.rules.decode_tx(p["tx"])
        await self.broadcast(canonical_json(tx.to_json()))
        return {"hash": tx.hash().hex()}

    async def broadcast(self, raw: bytes) -> None:
        """Hand a transaction (its canonical JSON) to CometBFT's mempool; raise the app's typed refusal, or
        :class:`~protocol.errors.MempoolFullError` when CometBFT's mempool is full or CometBFT does not answer.
        A transaction already in CometBFT's mempool is accepted again, as the built-in engine's mempool does."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": "broadcast_tx_sync",
                "params": {"tx": base64.b64encode(raw).decode()}}
        session = self._session
        if session is None:
            raise MempoolFullError("the relay node is not serving yet", got="starting")
        try:
            async with session.post(self.cometbft_rpc, json=body,
                                    timeout=aiohttp.ClientTimeout(total=BROADCAST_TIMEOUT_S)) as r:
                answer = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MempoolFullError("this validator's CometBFT does not answer: submit again, or to another "
                                   "validator", got=f"{type(exc).__name__}: {exc}"[:300]) from exc
        if not isinstance(answer, dict):
            raise MempoolFullError("CometBFT answered broadcast_tx_sync with something else than an object")
        if "error" in answer:
            err = answer["error"]
            text = json.dumps(err)[:500]
            if _ALREADY_IN_MEMPOOL in text:
                return
            if _MEMPOOL_FULL in text:
                raise MempoolFullError("CometBFT's mempool is full", got=text)
            raise MempoolFullError("CometBFT refused broadcast_tx_sync", got=text)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise MempoolFullError("CometBFT answered broadcast_tx_sync without a result")
        if int(result.get("code", 0) or 0) == 0:
            return
        raise _refusal(result)

    async def _handle_p2p_block(self, request: web.Request) -> web.Response:
        return _p2p_refused(NotGossipedError("this relay validator runs on CometBFT, which carries blocks"))

    async def _handle_p2p_tx(self, request: web.Request) -> web.Response:
        return _p2p_refused(NotGossipedError("this relay validator runs on CometBFT: submit with submitTx"))

    async def _rpc_add_peer(self, p: dict[str, Any]) -> list[str]:
        raise NotGossipedError("peers of a relay validator on CometBFT are CometBFT's (p2p.persistent_peers)")

    async def _rpc_set_peers(self, p: dict[str, Any]) -> list[str]:
        raise NotGossipedError("peers of a relay validator on CometBFT are CometBFT's (p2p.persistent_peers)")

    async def _rpc_set_gossip(self, p: dict[str, Any]) -> bool:
        raise NotGossipedError("a relay validator on CometBFT gossips through CometBFT")

    async def _rpc_set_producing(self, p: dict[str, Any]) -> bool:
        raise NotGossipedError("CometBFT proposes the blocks of a relay validator on CometBFT")

    async def _rpc_status(self, p: dict[str, Any]) -> dict[str, Any]:
        return {**await super()._rpc_status(p), "engine": "cometbft"}


def _refusal(result: dict[str, Any]) -> ProtocolError:
    """The app's typed refusal from a CheckTx answer (``log``: the error as JSON, ``codespace``: its code)."""
    try:
        data = json.loads(str(result.get("log", "")))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"code": str(result.get("codespace", "") or "remote"), "message": str(result.get("log", ""))[:500]}
    return error_from_rpc({"data": data})


PREVIOUS_STOP_S: Final = 15.0
"""How long a previous run's ``cometbft`` of the same home (its validator process was SIGKILLed: the kernel SIGTERMed
it, and it may still be flushing its stores) gets to exit before it is SIGKILLed."""


def start_cometbft(home: Path, log_path: Path, *, binary: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cometbft start --home home`` as a child tied to this process, its output appended to ``log_path``.
    A ``cometbft`` of a previous run of this home still running (``<home>/cometbft.pid``) is waited for first (then
    SIGKILLed after :data:`PREVIOUS_STOP_S`): two on one home would fight over its stores and ports."""
    exe = binary or cometbft_binary()
    pidfile = home / "cometbft.pid"
    _reap_previous(pidfile, home)
    log.info("starting %s start --home %s", exe, home)
    with log_path.open("ab") as log_file:
        proc: subprocess.Popen[bytes] = spawn([str(exe), "start", "--home", str(home)], stdin=subprocess.DEVNULL,
                                              stdout=log_file, stderr=subprocess.STDOUT)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def _reap_previous(pidfile: Path, home: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + PREVIOUS_STOP_S
    while _is_cometbft_of(pid, home):
        if time.monotonic() > deadline:
            log.warning("cometbft pid %d of %s still running %.0f s after its validator died: SIGKILL", pid, home,
                        PREVIOUS_STOP_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + PREVIOUS_STOP_S
        time.sleep(0.1)  # another process's exit: nothing to await but its /proc entry
    pidfile.unlink(missing_ok=True)


def _is_cometbft_of(pid: int, home: Path) -> bool:
    """Whether ``pid`` runs ``cometbft start --home home`` (not a recycled pid of something else)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"start" in argv and str(home).encode() in argv


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit (on a worker thread: the event loop goes on); its exit code."""
    return int(await asyncio.to_thread(proc.wait))
