"""The operator API's bearer-token check, in process (no devnet): the token is compared with
:func:`hmac.compare_digest` (constant time), every write refuses a missing or wrong token before touching its
backend, and a host without a token file refuses every write.

The live-server tests (tests/integration/test_api.py) cover the same routes against a real devnet; here the
comparison itself is observed.
"""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay.ops.api import server as api_server

TOKEN = "ab" * 32


class _Relayer:
    name = "relayer-x"

    def __init__(self) -> None:
        self.cleared = 0

    def clear_backlog(self) -> int:
        self.cleared += 1
        return 7


class _Backend:
    """Only what the write routes touch before and after the auth check."""

    def __init__(self) -> None:
        self.relayer = _Relayer()


async def _client(token: str | None) -> tuple[TestClient[Any, Any], _Backend]:
    backend = _Backend()
    client: TestClient[Any, Any] = TestClient(TestServer(api_server.build_app(backend, token)))  # type: ignore[arg-type]
    await client.start_server()
    return client, backend


async def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_server.hmac, "compare_digest", spy)
    client, backend = await _client(TOKEN)
    try:
        r = await client.post("/api/v1/backlog/clear", headers={"Authorization": "Bearer " + "cd" * 32})
        assert r.status == 401
        assert calls == [(("cd" * 32).encode(), TOKEN.encode())]
        assert backend.relayer.cleared == 0
        r = await client.post("/api/v1/backlog/clear", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200 and (await r.json()) == {"relayer": "relayer-x", "packets": 7}
        assert backend.relayer.cleared == 1 and len(calls) == 2
    finally:
        await client.close()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", f"bearer {TOKEN}", f"Basic {TOKEN}",
                                    f"Bearer  {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}00"])
async def test_a_missing_or_wrong_token_is_401_and_does_nothing(header: str | None) -> None:
    client, backend = await _client(TOKEN)
    try:
        r = await client.post("/api/v1/backlog/clear", headers={} if header is None else {"Authorization": header})
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        body = await r.json()
        assert body["error"]["code"] == "rpc.unauthorized" and body["error"]["disposition"] == "fatal"
        assert backend.relayer.cleared == 0
    finally:
        await client.close()


async def test_without_a_token_file_every_write_is_refused() -> None:
    client, backend = await _client(None)
    try:
        for path in ("/api/v1/backlog/clear", "/api/v1/transfers", "/api/v1/lanes/a/b/c/pause",
                     "/api/v1/lanes/a/b/c/resume"):
            r = await client.post(path, headers={"Authorization": "Bearer "})
            assert r.status == 401, path
            assert "no admin token" in (await r.json())["error"]["message"]
        assert backend.relayer.cleared == 0
    finally:
        await client.close()
