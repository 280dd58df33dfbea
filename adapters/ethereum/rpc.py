"""Raw Ethereum JSON-RPC over one aiohttp session per endpoint, with the relayer's error classes.

Not web3.py's ``AsyncHTTPProvider``: its session cache is guarded by a ``threading.Lock`` shared by every provider
in the process and taken through an executor thread, and a request cancelled at the wrong moment left it held,
after which every Ethereum call in the process hung (the CI hang of tests/unit/test_eth_adapter_errors.py, five
executor threads parked on that lock). These calls need nothing of web3 but JSON over HTTP.

The adapter reads the node's answers as JSON (hex strings, as ``eth_getBlockByNumber`` returns them:
what :meth:`chains.ethereum.types.EthHeader.from_rpc` takes) and classifies failures itself:

* the node could not be reached, timed out, answered HTTP 5xx/429 or garbage →
  :class:`~protocol.errors.TransportError` (``retryable=True``, ``side`` = the park's chain id);
* the node answered a JSON-RPC error → :func:`adapters.ethereum.errors.rpc_error` (a decoded revert,
  a nonce refusal, ...), or :class:`~chains.common.jsonrpc.UnauthorizedError` (``rpc.unauthorized``, fatal)
  for an operator method called without the admin token (chains/ethereum/rpc_proxy.py).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from chains.common.jsonrpc import UNAUTHORIZED, UnauthorizedError
from protocol.errors import TransportError

__all__ = ["EthRpc", "hex_int", "to_bytes"]


def hex_int(value: Any) -> int:
    """A JSON-RPC quantity (``"0x1a"``) as an int."""
    if isinstance(value, int):
        return value
    return int(str(value), 16)


def to_bytes(value: Any) -> bytes:
    """A JSON-RPC data string (``"0x..."``) as bytes."""
    s = str(value)
    return bytes.fromhex(s[2:] if s.startswith(("0x", "0X")) else s)


class EthRpc:
    """One Ethereum node endpoint (HTTP). ``side`` names the park in errors (its protocol chain id).
    ``admin_token``: the deployment's admin token, sent as ``Authorization: Bearer`` for the park node's operator
    methods (``anvil_*``, ``evm_*`` ...: chains/ethereum/rpc_proxy.py); relayers run without it."""

    def __init__(self, url: str, *, side: str, timeout_s: float = 10.0, admin_token: str = "") -> None:
        self.url = url
        self.side = side
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Content-Type": "application/json"}
        if admin_token:
            self._headers["Authorization"] = f"Bearer {admin_token}"
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        """The session of the running event loop (a new one after the loop changed: a session is bound to its
        loop, and callers such as the CLI run one ``asyncio.run`` after another with one client)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
            self._loop = loop
        return self._session

    async def call(self, method: str, params: list[Any]) -> Any:
        """``method(params)``'s result; raises the classified error (see module doc)."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with self._session_now().post(self.url, json=body) as http:
                if http.status >= 400:
                    retryable = http.status >= 500 or http.status in (408, 429)
                    raise TransportError(f"{method}: HTTP {http.status} from {self.url}", retryable=retryable,
                                         side=self.side)
                resp = await http.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} to {self.url} failed: {exc.__class__.__name__}: {exc}",
                                 retryable=True, side=self.side) from exc
        except ValueError as exc:  # the answer is not JSON
            raise TransportError(f"{method}: malformed answer from {self.url}: {exc}", retryable=True,
                                 side=self.side) from exc
        if not isinstance(resp, dict):
            raise TransportError(f"{method}: malformed JSON-RPC answer", retryable=True, side=self.side)
        if resp.get("error") is not None:
            err = resp["error"]
            if isinstance(err, dict) and err.get("code") == UNAUTHORIZED:  # the park node's operator-only methods
                raise UnauthorizedError(f"{self.side}: {method}: {err.get('message', '')!s:.300}")
            from adapters.ethereum.errors import rpc_error  # on an error only: it loads eth-abi to decode reverts

            raise rpc_error(method, err, side=self.side)
        return resp.get("result")

    async def close(self) -> None:
        """Close the HTTP session (of the running loop; one left on a finished loop is already unusable)."""
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None
        self._loop = None
