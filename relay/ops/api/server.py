"""The operator HTTP API: one aiohttp application served by the relayer and by each relay validator.

Routes (``relay/ops/api/openapi.yaml`` is the contract; ``GET /openapi.json`` serves it)::

    GET  /api/v1/overview                      everything the status page shows, in one object
    GET  /api/v1/parks                         the relay chain and every park: head, final height, reachable
    GET  /api/v1/lanes                         directed lanes: paused, rate-limit buckets, packets per state
    GET  /api/v1/packets?lane&src&dst&state&min_age_s&max_age_s&limit&cursor     paginated, filtered
    GET  /api/v1/packets/{src}/{dst}/{lane}/{sequence}                           one packet's timeline
    GET  /api/v1/clients                       the relay's light clients: type, status, final height, expiry
    GET  /api/v1/relayers                      backlog, oldest pending packet, last error, idle time
    GET  /api/v1/supply                        the supply accountant per hop and denomination
    GET  /api/v1/stream                        server-sent events: the overview after every refresh
    POST /api/v1/transfers                     phase 1 of an energy transfer              (bearer token)
    POST /api/v1/lanes/{src}/{dst}/{lane}/pause|resume   governance on one direction (bearer token)
    POST /api/v1/backlog/clear                 the relayer of this process acts on every packet now (token)
    GET  /metrics                              Prometheus text format
    GET  /                                     the live status page

Every error is a JSON body ``{"error": {"code", "disposition", "message", "expected"?, "got"?}}`` with a stable
code of :mod:`protocol.errors` (``rpc.invalid_params`` for a bad query parameter or body, HTTP 400;
``rpc.unauthorized``, 401; ``rpc.not_found``, 404; ``rpc.body_too_large``, 413; a chain's own refusal, 422;
``rpc.rate_limited``, 429; ``transport``, 503). Every request pays a token of its client address's bucket, the
deployment's ``[limits] rpc_requests_per_s`` and ``rpc_burst`` (the nodes' bound; this process's own buckets). The
token is the deployment's admin token (:func:`relay.ops.layout.admin_token_path`), compared in constant time
(:func:`hmac.compare_digest`); without a token file, writes are refused. The service binds 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from chains.common import jsonrpc as rpc
from chains.common.node import AdmissionLimits
from protocol.errors import ParkRelayError, ProtocolError, TransportError
from relay.ops.api.backend import Backend
from relay.ops.api.index import STATES
from relay.ops.config import ConfigError

log = logging.getLogger("parkrelay.api")

__all__ = ["OPENAPI_PATH", "ApiOptions", "ApiServer", "build_app", "openapi_document"]

HERE = Path(__file__).resolve().parent
OPENAPI_PATH = HERE / "openapi.yaml"
PAGE_DIR = HERE / "page"
MAX_BODY_BYTES = 16 * 1024
"""Largest request body a write endpoint reads."""
MAX_PAGE = 200
"""Most packets one page holds."""
DEFAULT_PAGE = 50
ID_RE = re.compile(r"^[a-z0-9._-]{1,64}$")
"""Chain, lane and relayer ids (SPEC §2.1 ids, as the config allows them)."""
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9._:@/+-]{1,128}$")
"""Account names and denominations as the chains take them (a Fabric account holds ':' and '@', a voucher '/')."""


@dataclass(frozen=True)
class ApiOptions:
    """Where the API listens: ``parkrelay node relay|relayer start --api-port N [--api-host H]``."""

    port: int
    """TCP port (0: any free port)."""
    host: str = "127.0.0.1"
    """Address it binds to; loopback by default."""


def openapi_document() -> dict[str, Any]:
    """The committed OpenAPI 3.1 document (``relay/ops/api/openapi.yaml``)."""
    doc: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text())
    return doc


def _error(status: int, exc: ParkRelayError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": exc.to_dict()}, status=status, headers=headers)


def _bad(message: str, *, param: str | None = None, expected: Any = None, got: Any = None) -> web.Response:
    return _error(400, rpc.InvalidParamsError(message, param=param, expected=expected, got=got))


class _BadRequest(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _query(request: web.Request, allowed: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
    """The request's query parameters, each parsed by its converter; unknown, repeated or malformed ones are
    ``rpc.invalid_params`` (HTTP 400)."""
    out: dict[str, Any] = {}
    for name in request.query:
        if name not in allowed:
            raise _BadRequest(_bad(f"unknown query parameter {name[:64]!r}", expected=sorted(allowed)))
        values = request.query.getall(name)
        if len(values) != 1:
            raise _BadRequest(_bad(f"query parameter {name!r} given {len(values)} times", expected=1,
                                   got=len(values)))
        try:
            out[name] = allowed[name](values[0])
        except ValueError as exc:
            raise _BadRequest(_bad(f"query parameter {name!r}: {exc}", param=name, got=values[0][:64])) from None
    return out


def _id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"expected an id matching {ID_RE.pattern}")
    return value


def _bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    def conv(value: str) -> int:
        if not re.fullmatch(r"[0-9]{1,12}", value):
            raise ValueError("expected a non-negative integer")
        n = int(value)
        if not lo <= n <= hi:
            raise ValueError(f"expected {lo}..{hi}")
        return n
    return conv


def _number(lo: float, hi: float) -> Callable[[str], float]:
    def conv(value: str) -> float:
        if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,6})?", value):
            raise ValueError("expected a non-negative number of seconds")
        n = float(value)
        if not lo <= n <= hi:
            raise ValueError(f"expected {lo}..{hi}")
        return n
    return conv


def _state(value: str) -> str:
    if value not in (*STATES, "pending"):
        raise ValueError(f"expected one of {[*STATES, 'pending']}")
    return value


def _cursor(value: str) -> tuple[str, str, str, int]:
    parts = value.split("/")
    if len(parts) != 4 or not all(ID_RE.match(p) for p in parts[:3]) or not re.fullmatch(r"[0-9]{1,19}", parts[3]):
        raise ValueError("expected the last packet key of the previous page (src/dst/lane/sequence)")
    return parts[0], parts[1], parts[2], int(parts[3])


def _sort_key(key: str) -> tuple[str, str, str, int]:
    src, dst, lane, seq = key.split("/")
    return src, dst, lane, int(seq)


PACKET_QUERY: dict[str, Callable[[str], Any]] = {
    "lane": _id, "src": _id, "dst": _id, "state": _state, "min_age_s": _number(0, 10 ** 8),
    "max_age_s": _number(0, 10 ** 8), "limit": _bounded_int(1, MAX_PAGE), "cursor": _cursor}


class _Api:
    """The route handlers over one :class:`Backend`."""

    def __init__(self, backend: Backend, token: str | None, metrics: Callable[[], bytes] | None) -> None:
        self.b = backend
        self.token = token
        self.metrics = metrics

    # -- helpers ----------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the request carries the deployment's admin token, else the 401 to answer."""
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        ok = self.token is not None and scheme == "Bearer" and hmac.compare_digest(given.encode(), self.token.encode())
        if ok:
            return None
        why = "no admin token is configured on this host: writes are disabled" if self.token is None else \
            "a write needs the deployment's admin token as 'Authorization: Bearer <token>'"
        return _error(401, rpc.UnauthorizedError(why), {"WWW-Authenticate": 'Bearer realm="parkrelay"'})

    async def _body(self, request: web.Request, fields: dict[str, tuple[type, bool]]) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _BadRequest(_error(413, rpc.BodyTooLargeError("body too large", expected=f"<= {MAX_BODY_BYTES}",
                                                                 got=request.content_length)))
        raw = await request.content.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise _BadRequest(_error(413, rpc.BodyTooLargeError("body too large", expected=f"<= {MAX_BODY_BYTES}")))
        try:
            body = rpc.decode_body(raw)
        except ProtocolError as exc:
            raise _BadRequest(_bad(f"body: {exc.message}")) from None
        if not isinstance(body, dict):
            raise _BadRequest(_bad("the body is a JSON object", got=type(body).__name__))
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise _BadRequest(_bad(f"unknown field(s) {unknown[:5]}", expected=sorted(fields)))
        for name, (typ, required) in fields.items():
            if name not in body:
                if required:
                    raise _BadRequest(_bad(f"missing field {name!r}"))
                continue
            v = body[name]
            if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise _BadRequest(_bad(f"field {name!r}: expected an integer", got=repr(v)[:64]))
            if typ is float and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise _BadRequest(_bad(f"field {name!r}: expected a number", got=repr(v)[:64]))
            if typ is str and not isinstance(v, str):
                raise _BadRequest(_bad(f"field {name!r}: expected a string", got=repr(v)[:64]))
        return body

    # -- reads ------------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response(self.b.overview())

    async def parks(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response(self.b.chains())

    async def lanes(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response({"lanes": self.b.lanes})

    async def clients(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response({"clients": self.b.clients})

    async def relayers(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response({"relayers": self.b.relayers})

    async def supply(self, request: web.Request) -> web.Response:
        _query(request, {})
        return web.json_response({"supply": self.b.supply})

    async def packets(self, request: web.Request) -> web.Response:
        q = _query(request, PACKET_QUERY)
        now = self.b.wall_ms()
        rows = []
        after = q.get("cursor")
        for rec in self.b.index.packets.values():
            if after is not None and _sort_key(rec.key) <= after:
                continue
            if any(q.get(f) not in (None, getattr(rec, f)) for f in ("lane", "src", "dst")):
                continue
            state = rec.state
            if "state" in q and not (state == q["state"] or (q["state"] == "pending" and state not in
                                                             ("completed", "refunded"))):
                continue
            if "min_age_s" in q or "max_age_s" in q:
                if rec.committed_ms is None:
                    continue
                age = (now - rec.committed_ms) / 1000
                if age < q.get("min_age_s", 0) or age > q.get("max_age_s", float("inf")):
                    continue
            rows.append(rec)
        rows.sort(key=lambda r: _sort_key(r.key))
        limit = q.get("limit", DEFAULT_PAGE)
        page = rows[:limit]
        nxt = page[-1].key if len(rows) > limit else None
        return web.json_response({"items": [r.summary() for r in page], "next_cursor": nxt, "total": len(rows)})

    async def packet(self, request: web.Request) -> web.Response:
        _query(request, {})
        m = request.match_info
        try:
            key = "/".join((_id(m["src"]), _id(m["dst"]), _id(m["lane"]), str(_bounded_int(0, 2 ** 63)(m["sequence"]))))
        except ValueError as exc:
            return _bad(f"packet path: {exc}")
        rec = self.b.index.packets.get(key)
        if rec is None:
            return _error(404, NotFound(f"no packet {key} on the deployment's chains (yet)", got=key))
        return web.json_response({**rec.summary(), "timeline": rec.timeline()})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        _query(request, {})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q = self.b.subscribe()
        try:
            await resp.write(_sse(self.b.overview()))
            while True:
                try:
                    snap = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                await resp.write(_sse(snap))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.b.unsubscribe(q)
        return resp

    async def metrics_text(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = self.metrics() if self.metrics is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE_DIR / "index.html")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = PAGE_DIR / name
        if name not in _ASSETS or not path.exists():
            return _error(404, NotFound("no such file", got=name[:64]))
        return web.FileResponse(path, headers={"Content-Type": _ASSETS[name]})

    # -- writes -----------------------------------------------------------------------------------

    async def transfer(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        _query(request, {})
        body = await self._body(request, {"from_chain": (str, True), "sender": (str, True), "to_chain": (str, True),
                                          "receiver": (str, True), "amount_wh": (int, True), "denom": (str, False),
                                          "lane": (str, False), "timeout_s": (float, False)})
        for f in ("from_chain", "to_chain", "lane"):
            if f in body and not ID_RE.match(body[f]):
                return _bad(f"field {f!r}: expected an id matching {ID_RE.pattern}", got=body[f][:64])
        for f in ("sender", "receiver", "denom"):
            if f in body and not ACCOUNT_RE.match(body[f]):
                return _bad(f"field {f!r}: expected a name matching {ACCOUNT_RE.pattern}", got=body[f][:64])
        if not 0 < body["amount_wh"] < 2 ** 63:
            return _bad("field 'amount_wh': expected a positive amount of Wh", got=body["amount_wh"])
        timeout_s = float(body.get("timeout_s", 600.0))
        if not 10 <= timeout_s <= 7 * 24 * 3600:
            return _bad("field 'timeout_s': expected 10..604800 seconds", got=timeout_s)
        known = {c.id for c in self.b.cfg.chains}
        for f in ("from_chain", "to_chain"):
            if body[f] not in known:
                return _bad(f"field {f!r}: no such park", expected=sorted(known), got=body[f])
        if not _holds_key(self.b, body["from_chain"], body["sender"]):
            return _error(422, _Refused("auth.denied", f"no key of account {body['sender']!r} on "
                                                       f"{body['from_chain']} on this host"))
        try:
            out = await self.b.transfer(body["from_chain"], body["sender"], body["to_chain"], body["receiver"],
                                        body["amount_wh"], body.get("denom", "kWh"), body.get("lane"), timeout_s)
        except ConfigError as exc:
            return _bad(str(exc))
        except ProtocolError as exc:
            return _error(422, exc)
        except (TransportError, OSError) as exc:
            return _error(503, TransportError(str(exc)[:300], retryable=True, side=body["from_chain"]))
        except RuntimeError as exc:  # the park refused the transfer (relay.ops.parks: its message names the error)
            return _error(422, _Refused("remote", str(exc)[:500]))
        return web.json_response(out, status=201)

    def lane_action(self, op: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            if (denied := self._authorized(request)) is not None:
                return denied
            _query(request, {})
            m = request.match_info
            ids = {k: m[k] for k in ("src", "dst", "lane")}
            for k, v in ids.items():
                if not ID_RE.match(v):
                    return _bad(f"path {k}: expected an id matching {ID_RE.pattern}", got=v[:64])
            if not any({a, b} == {ids["src"], ids["dst"]} and ln == ids["lane"] for ln, a, b in self.b.cfg.lanes):
                return _error(404, NotFound(f"no lane {ids['lane']} between {ids['src']} and {ids['dst']} in "
                                            f"this deployment", got=f"{ids['src']}/{ids['dst']}/{ids['lane']}"))
            try:
                out = await self.b.govern_lane(op, ids["src"], ids["dst"], ids["lane"])
            except ProtocolError as exc:
                return _error(422, exc)
            except (TransportError, OSError) as exc:
                return _error(503, TransportError(str(exc)[:300], retryable=True, side=self.b.cfg.relay_chain_id))
            await self.b.refresh()
            return web.json_response(out)
        return handler

    async def clear_backlog(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        _query(request, {})
        relayer = self.b.relayer
        if relayer is None:
            return _error(404, NotFound("no relayer runs in this service: ask a relayer's API"))
        woken = relayer.clear_backlog()
        return web.json_response({"relayer": relayer.name, "packets": woken})


class NotFound(rpc.RequestError):
    """What the request names does not exist here."""

    code = "rpc.not_found"


class _Refused(ProtocolError):
    """A refusal with a code given at run time (a chain's, or ``auth.denied``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code  # type: ignore[misc]
        super().__init__(message)


def _holds_key(backend: Backend, chain_id: str, account: str) -> bool:
    """Whether this host holds ``account``'s deployment key on ``chain_id`` (a Fabric account signs with its MSP
    identity, which the park's connection profile names: the park says whether it exists)."""
    from relay.ops.layout import account_key_path

    if backend.cfg.chain(chain_id).kind == "fabric":
        return True
    return account_key_path(backend.cfg, chain_id, account).exists()


def _sse(obj: dict[str, Any]) -> bytes:
    return b"event: overview\ndata: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


_ASSETS = {"page.js": "application/javascript", "page.css": "text/css"}


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """Typed JSON errors for everything: bad parameters, unknown routes and methods, and bugs (logged)."""
    try:
        return await handler(request)
    except _BadRequest as exc:
        return exc.response
    except web.HTTPRequestEntityTooLarge:
        return _error(413, rpc.BodyTooLargeError("body too large", expected=f"<= {MAX_BODY_BYTES}"))
    except web.HTTPMethodNotAllowed as exc:
        return _error(405, rpc.MethodNotFoundError(f"{request.method} is not allowed here",
                                                   expected=sorted(exc.allowed_methods)),
                      {"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        return _error(404, NotFound("no such route", got=request.path[:128]))
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("operator API: %s %s failed", request.method, request.path[:128])
        return _error(500, ParkRelayError("internal error (logged)"))


def _rate_bound(limits: AdmissionLimits) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware that answers ``rpc.rate_limited`` (HTTP 429) once a client address's bucket is empty."""
    buckets = rpc.RateBuckets(limits.rpc_requests_per_s, limits.rpc_burst)

    @web.middleware
    async def bound(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        client = request.remote or ""
        if buckets.take(client, time.monotonic()):
            return await handler(request)
        return _error(429, buckets.refusal(client), {"Retry-After": "1"})

    return bound


def build_app(backend: Backend, token: str | None, metrics: Callable[[], bytes] | None = None,
              limits: AdmissionLimits | None = None) -> web.Application:
    """The operator API's aiohttp application over ``backend``; ``token`` authorises writes (None: no writes);
    ``metrics`` renders this process's Prometheus metrics; ``limits`` (the deployment's ``[limits]``; default:
    their defaults) gives the per-address rate bound."""
    api = _Api(backend, token, metrics)
    bound = _rate_bound(limits if limits is not None else AdmissionLimits())
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[bound, _errors])
    r = app.router
    r.add_get("/", api.page)
    r.add_get("/static/{name}", api.asset)
    r.add_get("/openapi.json", api.openapi)
    r.add_get("/metrics", api.metrics_text)
    r.add_get("/api/v1/overview", api.overview)
    r.add_get("/api/v1/parks", api.parks)
    r.add_get("/api/v1/lanes", api.lanes)
    r.add_get("/api/v1/packets", api.packets)
    r.add_get("/api/v1/packets/{src}/{dst}/{lane}/{sequence}", api.packet)
    r.add_get("/api/v1/clients", api.clients)
    r.add_get("/api/v1/relayers", api.relayers)
    r.add_get("/api/v1/supply", api.supply)
    r.add_get("/api/v1/stream", api.stream)
    r.add_post("/api/v1/transfers", api.transfer)
    r.add_post("/api/v1/lanes/{src}/{dst}/{lane}/pause", api.lane_action("lane.pause"))
    r.add_post("/api/v1/lanes/{src}/{dst}/{lane}/resume", api.lane_action("lane.resume"))
    r.add_post("/api/v1/backlog/clear", api.clear_backlog)
    return app


def read_token(cfg: Any) -> str | None:
    """The deployment's admin token (hex), as the nodes read it; None without a token file."""
    from relay.ops.keys import read_secret
    from relay.ops.layout import admin_token_path

    path = admin_token_path(cfg)
    return read_secret(path).hex() if path.exists() else None


class ApiServer:
    """The operator API as a running service: its backend's refresh loop and an HTTP site."""

    def __init__(self, cfg: Any, options: ApiOptions, *, relay_urls: list[str] | None = None, relayer: Any = None,
                 metrics: Callable[[], bytes] | None = None, poll_s: float = 1.0) -> None:
        self.cfg = cfg
        self.options = options
        self.backend = Backend(cfg, relay_urls=relay_urls, relayer=relayer, poll_s=poll_s)
        self.app = build_app(self.backend, read_token(cfg), metrics, getattr(cfg, "limits", None))
        self._runner: web.AppRunner | None = None
        self.port = options.port

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await self.backend.start()
        log.info("operator API on %s (status page at /, OpenAPI at /openapi.json)", self.url)

    async def stop(self) -> None:
        await self.backend.stop()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
