"""Async JSON-RPC client for the Python park chains (and later the relay chain).

Errors are classified for the relayer: a chain that *answered* with an error raises the protocol
error it carried (never retried); a chain that could not be reached, timed out or answered garbage
raises :class:`~protocol.errors.TransportError` with ``retryable=True`` and the side's name, so only that
side reconnects.
"""

from __future__ import annotations

import itertools
import re
from types import TracebackType
from typing import Any

import aiohttp

from chains.common import jsonrpc as rpc_json
from protocol import errors as perr
from protocol.errors import Disposition, ProtocolError, TransportError, disposition_of

_CODES: dict[str, type[ProtocolError]] = {
    cls.code: cls
    for cls in vars(perr).values()
    if isinstance(cls, type) and issubclass(cls, ProtocolError)
}


def _error_class(code: str) -> type[ProtocolError] | None:
    """The class of ``code``: :mod:`protocol.errors`' own, else a chain kind's refinement loaded in this process
    (``proof.fabric.statement`` is a :class:`~protocol.errors.InvalidProofError`: a caller that catches the generic
    class catches it), found breadth-first from :class:`ProtocolError` so the most general class of a code wins."""
    if code in _CODES:
        return _CODES[code]
    queue: list[type[ProtocolError]] = [ProtocolError]
    while queue:
        cls = queue.pop(0)
        if getattr(cls, "code", None) == code and cls is not RemoteError:
            return cls
        queue.extend(cls.__subclasses__())
    return None


_CODE_SHAPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class RemoteError(ProtocolError):
    """The chain refused the request with a code this client has no class for. The error keeps the remote's
    code (``code`` is the remote code, not ``"remote"``) and the disposition the remote named for it, so a
    caller's decision reads the same as for a known class."""

    code = "remote"

    def __init__(self, remote_code: str, message: str, *, remote_disposition: str | None = None, **kw: Any) -> None:
        self.remote_code = remote_code
        if _CODE_SHAPE.match(remote_code):  # a parkrelay code (``mempool.full``), not a bare JSON-RPC number
            self.code = remote_code  # type: ignore[misc]  # the instance carries the code it came with
        try:
            self._disposition = Disposition(remote_disposition) if remote_disposition else disposition_of(self.code)
        except ValueError:  # a disposition this version does not know: treat the code as invalid input
            self._disposition = Disposition.NEVER
        super().__init__(message, **kw)

    @property
    def disposition(self) -> Disposition:
        return self._disposition


def error_from_rpc(err: Any) -> ProtocolError:
    """Rebuild the typed error a node returned (its ``data`` holds ``code``, ``disposition``, ``message``,
    ``expected``, ``got``). Whatever the shape, the result is a :class:`ProtocolError`."""
    err = err if isinstance(err, dict) else {"message": str(err)}
    data = err.get("data")
    data = data if isinstance(data, dict) else {}
    code = str(data.get("code", "") or "")
    message = str(data.get("message", err.get("message", "rpc error")))
    cls = _error_class(code) if code else None
    kw = {"expected": data.get("expected"), "got": data.get("got")}
    if cls is not None:
        try:
            return cls(message, **kw)
        except TypeError:  # a class built otherwise (its own arguments): keep the code as a RemoteError
            pass
    disp = data.get("disposition")
    return RemoteError(code or str(err.get("code", "remote")), message,
                       remote_disposition=disp if isinstance(disp, str) else None, **kw)


class JsonRpcClient:
    """One endpoint. Use as ``async with JsonRpcClient(url, side="dpos-park") as c: await c.call(...)``."""

    def __init__(self, url: str, *, side: str, timeout_s: float = 10.0, admin_token: str = "") -> None:
        self.url = url.rstrip("/")
        self.side = side
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._admin_token = admin_token
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> JsonRpcClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, json_serialize=rpc_json.dumps)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, params: dict[str, Any] | None = None, *, admin: bool = False) -> Any:
        await self.connect()
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._admin_token}"} if admin else {}
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or {}}
        try:
            async with self._session.post(self.url + "/rpc", json=body, headers=headers) as resp:
                if resp.status >= 500:
                    raise TransportError(f"{method}: HTTP {resp.status}", retryable=True, side=self.side)
                out = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{method} to {self.url} failed: {exc.__class__.__name__}: {exc}",
                                 retryable=True, side=self.side) from exc
        except ValueError as exc:
            raise TransportError(f"{method}: answer is not JSON", retryable=True, side=self.side) from exc
        if not isinstance(out, dict):
            raise TransportError(f"{method}: malformed JSON-RPC answer", retryable=True, side=self.side)
        if "error" in out:
            err = out["error"]
            if not isinstance(err, dict):  # a node's answer is hostile input: a malformed error is still typed
                raise RemoteError("remote", f"{self.side}: {method}: malformed error {str(err)[:200]}")
            if err.get("code") in (-32700, -32600, -32601, -32602, -32001) or "data" not in err:
                raise RemoteError(str(err.get("code")), f"{self.side}: {method}: {err.get('message')}")
            raise error_from_rpc(err)
        return out.get("result")
