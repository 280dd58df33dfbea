"""Raw Ethereum JSON-RPC over web3.py's ``AsyncWeb3`` HTTP provider, with the relayer's error classes.

The adapter reads the node's answers as JSON (hex strings, as ``eth_getBlockByNumber`` returns them:
what :meth:`chains.ethereum.types.EthHeader.from_rpc` takes) and classifies failures itself:

* the node could not be reached, timed out, answered HTTP 5xx/429 or garbage →
  :class:`~protocol.errors.TransportError` (``retryable=True``, ``side`` = the park's chain id);
* the node answered a JSON-RPC error → :func:`adapters.ethereum.errors.rpc_error` (a decoded revert,
  a nonce refusal, ...), or :class:`~chains.common.jsonrpc.UnauthorizedError` (``rpc.unauthorized``, fatal)
  for an operator method called without the admin token (chains/ethereum/rpc_proxy.py).
"""

from __future__ import annotations

import threading
from typing import Any

import aiohttp
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import RPCEndpoint

from adapters.ethereum.errors import rpc_error
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
        kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
        if admin_token:
            kwargs["headers"] = {"Content-Type": "application/json", "Authorization": f"Bearer {admin_token}"}
        self.w3 = AsyncWeb3(AsyncHTTPProvider(
            url,
            request_kwargs=kwargs,
            exception_retry_configuration=None,  # the relayer decides about retries, per side
        ))
        # web3's HTTPSessionManager guards its session cache with a threading.Lock shared by every provider of the
        # process (a class attribute), taken through an executor thread; a request cancelled at the wrong moment can
        # leave it held, after which every Ethereum call in the process hangs (seen as the CI hang of
        # tests/unit/test_eth_adapter_errors.py: 5 executor threads parked on that one lock). One lock per endpoint
        # keeps such a failure to the provider it happened on.
        self.w3.provider._request_session_manager._lock = threading.Lock()

    async def call(self, method: str, params: list[Any]) -> Any:
        """``method(params)``'s result; raises the classified error (see module doc)."""
        try:
            resp = await self.w3.provider.make_request(RPCEndpoint(method), params)
        except aiohttp.ClientResponseError as exc:
            retryable = exc.status >= 500 or exc.status in (408, 429)
            raise TransportError(f"{method}: HTTP {exc.status} from {self.url}", retryable=retryable,
                                 side=self.side) from exc
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
            raise rpc_error(method, err, side=self.side)
        return resp.get("result")

    async def close(self) -> None:
        """Close the provider's HTTP sessions."""
        await self.w3.provider.disconnect()
