"""``parkrelay relayer clear``: ask a running relayer to act on its whole backlog now, and watch the backlog clear.

The relayer is asked through its operator API (``POST /api/v1/backlog/clear``, with the deployment's admin token),
then watched through the same API's event stream (``GET /api/v1/stream``: the overview after every refresh, about
once a second), which carries each relayer's backlog as its database records it. A person sees a bar of the
packets cleared; ``--json`` or an output that is not a terminal gets one JSON object (or line) at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from chains.common import progress
from relay.ops.config import ConfigError, DeploymentConfig
from relay.ops.keys import read_secret
from relay.ops.layout import admin_token_path

MAX_EVENT_BYTES = 8 << 20
"""Largest event of the stream read (an overview of a large deployment is some kB); a longer one is refused."""


class BacklogError(Exception):
    """The relayer's API refused, or could not be reached."""


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The ``data`` of each server-sent event, decoded (keep-alive comments skipped)."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            data = b"".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
            if data:
                yield json.loads(data)
        if len(buf) > MAX_EVENT_BYTES:
            raise BacklogError(f"an event of the stream is longer than {MAX_EVENT_BYTES} bytes")


def _backlog(overview: dict[str, Any], name: str) -> int:
    row = next((r for r in overview.get("relayers") or [] if r.get("relayer") == name), None)
    return int(row.get("backlog") or 0) if row else 0


async def clear(cfg: DeploymentConfig, name: str, api: str, timeout_s: float, as_json: bool = False
                ) -> dict[str, Any]:
    """Ask relayer ``name`` (its API at ``api``) to act on every packet now, then wait until its backlog is empty
    or ``timeout_s`` passes. Returns ``{"relayer", "in_flight", "backlog_start", "backlog", "cleared", "seconds"}``."""
    if name not in cfg.relayers:
        raise ConfigError(f"{cfg.path}: no relayer {name!r}; relayers are {list(cfg.relayers)}")
    path = admin_token_path(cfg)
    if not path.exists():
        raise ConfigError(f"no admin token at {path}: the relayer's API refuses writes without one")
    headers = {"Authorization": f"Bearer {read_secret(path).hex()}"}
    base = api.rstrip("/")
    t0 = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3.0, sock_read=30.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.post(f"{base}/api/v1/backlog/clear", headers=headers) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    err = body.get("error", {}) if isinstance(body, dict) else {}
                    raise BacklogError(f"{base} refused ({resp.status} {err.get('code')}): {err.get('message')}")
            if body.get("relayer") != name:
                raise BacklogError(f"{base} serves relayer {body.get('relayer')!r}, not {name!r}")
            start: int | None = None
            backlog = 0
            with progress.bar(f"{name}: clearing the backlog", json_mode=as_json) as bar:
                async with session.get(f"{base}/api/v1/stream") as resp:
                    try:
                        async with asyncio.timeout(timeout_s):
                            async for overview in _events(resp):
                                backlog = _backlog(overview, name)
                                start = backlog if start is None else max(start, backlog)
                                bar.update(total=max(start, 1), completed=start - backlog)
                                if backlog == 0:
                                    break
                    except TimeoutError:
                        pass
        except (aiohttp.ClientError, OSError) as exc:
            raise BacklogError(f"relayer API at {base} unreachable: {exc}") from exc
    return {"relayer": name, "in_flight": int(body.get("packets") or 0), "backlog_start": start or 0,
            "backlog": backlog, "cleared": backlog == 0, "seconds": round(time.monotonic() - t0, 1)}


def main(cfg: DeploymentConfig, args: Any) -> int:
    """``parkrelay relayer clear --name NAME --api URL [--timeout-s S] [--json]``: 0 once the backlog is empty, 1 if
    packets still wait after the timeout, 2 if the API refused or could not be reached."""
    if not args.api:
        raise ConfigError("parkrelay relayer clear needs --api URL (the relayer's --api-port)")
    as_json = bool(args.json)
    try:
        out = asyncio.run(clear(cfg, args.name, args.api, args.timeout_s, as_json))
    except BacklogError as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(out))
    elif out["cleared"]:
        print(f"{out['relayer']}: backlog cleared ({out['backlog_start']} packets) in {out['seconds']} s")
    else:
        print(f"{out['relayer']}: {out['backlog']} of {out['backlog_start']} packets still wait after "
              f"{out['seconds']} s (`parkrelay doctor` says why)")
    return 0 if out["cleared"] else 1
