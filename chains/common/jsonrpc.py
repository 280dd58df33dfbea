"""Hostile-input framing of the node runtime's JSON-RPC: one strict body decoder, typed parameters, error objects.

Everything a node reads from the network (``POST /rpc``, a ``/ws`` message, the ``/p2p/*`` routes) goes
through :func:`decode_body` before any handler sees it, and every RPC method declares its parameters as a
:data:`ParamSpec` that :func:`validate_params` checks before the handler runs. A request that fails either
is answered with a JSON-RPC error object and changes nothing; no input reaches a handler in a shape the
handler did not declare.

Before any body is read, :class:`RateBuckets` bounds how fast one client address may send requests (the node's
``POST /rpc`` and ``/ws`` messages, the operator API): a refused request is answered with
:class:`~protocol.errors.RequestRateLimitedError` and nothing of it is read.

The decoder refuses, with :class:`ParseError` (``-32700``):

* a body over its bound (:class:`BodyTooLargeError`, HTTP 413): :data:`MAX_BODY_BYTES`, or a node's ``[limits]
  rpc_body_bytes`` for ``/rpc`` bodies and ``/ws`` messages;
* bytes that are not strict UTF-8 (no BOM, no UTF-16/32 guessing), and strings holding lone surrogates
  (``"\\ud800"``: valid JSON, but not encodable as UTF-8, so a key or an account name built from it
  would fail later in ``str.encode``);
* ``NaN``, ``Infinity``, ``-Infinity`` and floats that overflow to infinity (``1e400``);
* integers longer than :data:`MAX_INT_DIGITS` digits (Python refuses to parse > 4300 digits with a
  ``ValueError``; we stop far earlier, a uint256 has 78);
* duplicate keys in an object (two readers could pick different values);
* nesting deeper than :data:`MAX_DEPTH`, and more than :data:`MAX_VALUES` values in one body.

Error objects follow JSON-RPC 2.0: ``{"code": int, "message": str, "data": {...}}`` where ``data`` is the
typed error's :meth:`~protocol.errors.ParkRelayError.to_dict` (its stable string ``code``, ``message``,
``expected``, ``got``, and ``param`` for a parameter error). The integer codes are the standard ones:
``-32700`` parse error, ``-32600`` invalid request, ``-32601`` unknown method, ``-32602`` invalid params,
plus the runtime's ``-32000`` (a handler refused the input: a :class:`~protocol.errors.ProtocolError`),
``-32001`` (admin method without the bearer token) and ``-32603`` (a bug; logged with its traceback).
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from orjson import JSONEncodeError as _OrjsonError
from orjson import dumps as _orjson_dumps

from protocol.errors import CodecError, RequestRateLimitedError
from protocol.types import UINT64_MAX

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_VALUES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "UNAUTHORIZED",
    "BodyTooLargeError",
    "InvalidParamsError",
    "InvalidRequestError",
    "MethodNotFoundError",
    "Param",
    "ParamSpec",
    "ParseError",
    "RateBuckets",
    "Request",
    "RequestError",
    "UnauthorizedError",
    "boolean",
    "decode_body",
    "decode_json",
    "error_object",
    "hex_string",
    "json_object",
    "object_list",
    "parse_request",
    "request_id",
    "string",
    "string_list",
    "uint",
    "validate_params",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
"""A handler refused the input with a typed protocol error (its code is in ``data.code``)."""
UNAUTHORIZED = -32001
"""An admin method called without the node's bearer token."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body (and ``/ws`` message) a node reads; a P2P block of many transactions fits."""
MAX_DEPTH = 32
"""Deepest nesting of arrays and objects (a relay certificate inside a transaction inside a block is ~10)."""
MAX_INT_DIGITS = 80
"""Longest integer literal, sign included (a uint256 has 78 digits)."""
MAX_VALUES = 200_000
"""Most JSON values (scalars and containers) in one body: bounds the work of parsing it (~0.1 s at the bound).
Real bodies stay far below: a value takes 50-80 bytes in a 4 MiB P2P block of transactions with certificates."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class RequestError(CodecError):
    """A request the JSON-RPC layer refuses before any handler runs. Subclasses :class:`CodecError`, so a
    client that only knows SPEC §9 treats it as ``codec.invalid``."""

    code = "rpc.invalid"
    rpc_code: ClassVar[int] = INVALID_REQUEST
    http_status: ClassVar[int] = 200


class ParseError(RequestError):
    """The body is not strict JSON within the decoder's bounds."""

    code = "rpc.parse_error"
    rpc_code = PARSE_ERROR


class BodyTooLargeError(RequestError):
    """The body is larger than :data:`MAX_BODY_BYTES`; answered with HTTP 413."""

    code = "rpc.body_too_large"
    rpc_code = INVALID_REQUEST
    http_status = 413


class InvalidRequestError(RequestError):
    """JSON, but not a JSON-RPC 2.0 request object."""

    code = "rpc.invalid_request"
    rpc_code = INVALID_REQUEST


class MethodNotFoundError(RequestError):
    """No method of that name."""

    code = "rpc.method_not_found"
    rpc_code = METHOD_NOT_FOUND


class UnauthorizedError(RequestError):
    """An admin method without the bearer token."""

    code = "rpc.unauthorized"
    rpc_code = UNAUTHORIZED


class InvalidParamsError(RequestError):
    """A parameter is missing, unknown, or of the wrong type; ``param`` names it."""

    code = "rpc.invalid_params"
    rpc_code = INVALID_PARAMS

    def __init__(self, message: str, *, param: str | None, expected: Any = None, got: Any = None) -> None:
        self.param = param
        super().__init__(message, expected=expected, got=got)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.param is not None:
            out["param"] = self.param
        return out


def dumps(value: Any) -> str:
    """Compact JSON text for the wire and the block store (RPC answers and requests, gossip, stored block bodies):
    orjson's, ~10-30x faster than the standard library's on the megabytes of hex a relay block carries; the standard
    library's compact text for what orjson refuses (an int beyond 64 bits, a non-``str`` key, a lone surrogate,
    which comes out escaped, nesting past 255 levels). Any JSON reader parses both alike; not canonical (bytes that
    are signed or hashed are :func:`chains.common.state.canonical_json`'s)."""
    try:
        return _orjson_dumps(value).decode()
    except _OrjsonError:
        return json.dumps(value, separators=(",", ":"))


def error_object(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-RPC 2.0 error object."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return err


# --- rate ----------------------------------------------------------------------------------------


class Pacer:
    """One rate shared by every caller, enforced by making callers wait instead of refusing them (GCRA: a virtual
    schedule of evenly spaced slots, ``burst`` of them may be taken at once). For request-answer streams — a
    WebSocket client waits for each answer before it sends the next — waiting is backpressure at no cost: the
    server reads nothing while a handler waits, the client's sends queue in its own socket. Pure: the caller passes
    ``now`` and sleeps for the returned delay."""

    __slots__ = ("_tat", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tat = 0.0  # theoretical arrival time of the next slot (monotonic seconds)

    def delay(self, now: float) -> float:
        """Take the next slot at ``now``: how long to wait before acting on it (0: at once)."""
        step = 1.0 / self.rate_per_s
        start = max(now, self._tat)
        self._tat = start + step
        return max(0.0, start - now - (self.burst - 1) * step)


class RateBuckets:
    """One token bucket per client address: each holds at most ``burst`` tokens, refills at ``rate_per_s`` and
    pays one token per request. Pure: the caller passes ``now`` (monotonic seconds).

    At most ``max_clients`` buckets are kept: past it, buckets refilled to full are dropped (they hold nothing a
    new bucket would not), then the oldest; so a flood from many addresses costs bounded memory, and an address
    whose bucket was dropped starts full again (at worst one more burst)."""

    __slots__ = ("_buckets", "burst", "max_clients", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, *, max_clients: int = 65_536) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when they were counted)

    def has(self, client: str, now: float) -> bool:
        """Whether ``client``'s bucket holds a token at ``now`` (nothing paid)."""
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - then) * self.rate_per_s) >= 1.0

    def take(self, client: str, now: float) -> bool:
        """Pay one token of ``client``'s bucket at ``now``: False (nothing paid) when the bucket is empty."""
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._shrink(now)
        return True

    def refusal(self, client: str) -> RequestRateLimitedError:
        """The error that answers a request of ``client`` refused by :meth:`take` (the ``[limits]`` keys named)."""
        return RequestRateLimitedError(
            f"too many requests from {client} (limits.rpc_requests_per_s = {self.rate_per_s:g}, "
            f"limits.rpc_burst = {self.burst})", expected=f"<= {self.rate_per_s:g}/s", got="an empty bucket")

    def _shrink(self, now: float) -> None:
        full = [c for c, (t, then) in self._buckets.items() if t + (now - then) * self.rate_per_s >= self.burst]
        for c in full:
            del self._buckets[c]
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


# --- the decoder ---------------------------------------------------------------------------------


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ParseError("integer literal too long", expected=f"<= {MAX_INT_DIGITS} characters", got=len(text))
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_INT_DIGITS:
        raise ParseError("number literal too long", expected=f"<= {MAX_INT_DIGITS} characters", got=len(text))
    value = float(text)
    if not math.isfinite(value):
        raise ParseError("number out of range", expected="a finite number", got=text[:40])
    return value


def _parse_constant(text: str) -> Any:
    raise ParseError("not JSON: NaN and Infinity are not numbers in JSON", got=text)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ParseError("duplicate key in a JSON object", got=dup[:64])
    return out


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                            object_pairs_hook=_pairs)


def _check_tree(value: Any) -> None:
    """Bound depth and size, and refuse lone surrogates in strings and keys; iterative (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        v, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ParseError("too many values", expected=f"<= {MAX_VALUES}")
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise ParseError("string holds a lone UTF-16 surrogate (not encodable as UTF-8)")
        elif isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise ParseError("nested too deeply", expected=f"<= {MAX_DEPTH}", got=depth)
            if isinstance(v, dict):
                for k, item in v.items():
                    if _SURROGATE.search(k):
                        raise ParseError("key holds a lone UTF-16 surrogate (not encodable as UTF-8)")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in v)


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})  # depth change + 1, as a byte


def _outside_strings(text: str) -> str:
    """``text`` with every string literal's content cut out (``"a[b"`` -> ``""``), as the JSON scanner reads it: a
    backslash escapes the character after it, so escaped backslashes and escaped quotes go first, and every quote
    left delimits a string. A string left open at the end loses its content too (the scanner stops there). Three
    C-speed passes: a regex over megabytes of hex strings took ~40 ms a body."""
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    return '""'.join(text.split('"')[::2])


def _check_shape(text: str) -> None:
    """Refuse too many values and too deep nesting *before* parsing, in C-speed passes. The C scanner recurses
    once per level, bounded only by ``sys.getrecursionlimit()``, which libraries raise (hypothesis does): a
    deep enough body would then overflow the C stack. Parsing millions of tiny containers also costs seconds,
    so the value count is bounded first, from the quotes (a value brings at most two strings, a key and itself:
    four quotes; escaped ones count too, so this refuses nothing a count of every separator did not), before the
    text is split at them, and then exactly, with the strings cut out: at most one value per comma and per
    opening bracket, plus one. The exact count and depth make a second look at the parsed tree unnecessary."""
    if text.count('"') > 4 * MAX_VALUES:
        raise ParseError("too many values", expected=f"<= {MAX_VALUES}")
    bare = _outside_strings(text)
    opens = bare.count("[") + bare.count("{")
    if bare.count(",") + opens + 1 > MAX_VALUES:
        raise ParseError("too many values", expected=f"<= {MAX_VALUES}")
    if opens <= MAX_DEPTH:
        return
    steps = _NOT_BRACKET.sub("", bare).translate(_STEP).encode("latin-1")
    depth = max(itertools.accumulate(map(operator.sub, steps, itertools.repeat(1))))
    if depth > MAX_DEPTH:
        raise ParseError("nested too deeply", expected=f"<= {MAX_DEPTH}", got=depth)


def decode_json(raw: bytes | str, *, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """Strictly decode one JSON text from the network; raise :class:`ParseError` (never anything else)."""
    if len(raw) > max_bytes:
        raise BodyTooLargeError("body too large", expected=f"<= {max_bytes} bytes", got=len(raw))
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError("body is not valid UTF-8", got=f"byte {exc.start}") from exc
    else:
        text = raw
    _check_shape(text)
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg}", got=f"line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:  # unreachable after _check_shape unless the recursion limit is tiny
        raise ParseError("nested too deeply", expected=f"<= {MAX_DEPTH}") from exc
    # a lone surrogate can only come from a \u escape (UTF-8 cannot encode one) or a str handed in: only then is
    # every string of the tree searched (count and depth were bounded exactly above)
    if ("\\" in text and "\\u" in text) or (not isinstance(raw, bytes) and _SURROGATE.search(text)):
        _check_tree(value)
    return value


decode_body = decode_json
"""A request body: :func:`decode_json` under :data:`MAX_BODY_BYTES`."""


# --- requests ------------------------------------------------------------------------------------

_REQUEST_KEYS = frozenset({"jsonrpc", "id", "method", "params"})


@dataclass(frozen=True, slots=True)
class Request:
    """One JSON-RPC 2.0 request object."""

    id: str | int | None
    """The caller's id, echoed in the answer (a string, an integer or null)."""
    method: str
    """The method name."""
    params: dict[str, Any]
    """The parameters by name (``{}`` when the request has none); not yet checked against the method."""


def request_id(body: Any) -> str | int | None:
    """The id to answer with: the body's own if it is a valid id, else null (JSON-RPC 2.0 §5)."""
    if isinstance(body, dict):
        rid = body.get("id")
        if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
            return rid
    return None


def parse_request(body: Any) -> Request:
    """The request in a decoded body; raise :class:`InvalidRequestError` or :class:`InvalidParamsError`."""
    if isinstance(body, list):
        raise InvalidRequestError("batch requests are not supported", expected="a JSON object", got="array")
    if not isinstance(body, dict):
        raise InvalidRequestError("a request is a JSON object", got=type(body).__name__)
    extra = set(body) - _REQUEST_KEYS
    if extra:
        raise InvalidRequestError("unknown request members", expected=sorted(_REQUEST_KEYS), got=sorted(extra)[:8])
    if body.get("jsonrpc") != "2.0":
        raise InvalidRequestError('"jsonrpc" must be "2.0"', got=_short(body.get("jsonrpc")))
    rid = body.get("id")
    if rid is not None and request_id(body) is None:
        raise InvalidRequestError("id must be a string, an integer or null", got=type(rid).__name__)
    method = body.get("method")
    if not isinstance(method, str):
        raise InvalidRequestError("method must be a string", got=type(method).__name__)
    params = body.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParamsError("params must be an object (by-name parameters)", param=None,
                                 got=type(params).__name__)
    return Request(rid, method, params)


def _short(v: Any) -> Any:
    return v[:64] if isinstance(v, str) else type(v).__name__ if isinstance(v, (list, dict)) else v


# --- parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    """How one named parameter is checked."""

    expected: str
    """What a valid value is, in words (the error says it)."""
    kind: str
    """``uint``, ``str``, ``bool``, ``hex``, ``object``, ``str_list`` or ``object_list``."""
    required: bool = False
    """Missing (or null) is an error; otherwise it is left out of the validated dict."""
    max_len: int = 0
    """Longest string (characters), hex (bytes) or list (items); 0: no bound beyond the body's."""
    maximum: int = UINT64_MAX
    """Largest ``uint``."""

    def check(self, name: str, value: Any) -> Any:
        ok: bool
        if self.kind == "uint":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= self.maximum
        elif self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "object":
            ok = isinstance(value, dict)
        elif self.kind in ("str", "hex"):
            ok = isinstance(value, str) and (not self.max_len or len(value) <= self.max_len * (
                2 if self.kind == "hex" else 1)) and (
                self.kind == "str" or (len(value) % 2 == 0 and _HEX.fullmatch(value) is not None))
        elif self.kind in ("str_list", "object_list"):
            item = str if self.kind == "str_list" else dict
            ok = isinstance(value, list) and (not self.max_len or len(value) <= self.max_len) and all(
                isinstance(x, item) for x in value)
        else:  # a spec bug, not bad input
            raise ValueError(f"unknown parameter kind {self.kind!r}")
        if not ok:
            raise InvalidParamsError(f"parameter {name!r} must be {self.expected}", param=name,
                                     expected=self.expected, got=_describe(value))
        return value


_HEX = re.compile(r"[0-9a-fA-F]*")
"""Hex digits (the length is checked even apart): a character class runs ~20x faster than a repeated pair
group, which took ~1 s per 2 MB of hex and stalled the relay chain on large consensus messages."""


def _describe(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if abs(v) < 10**20 else f"int of {len(str(abs(v)))} digits"
    if isinstance(v, str):
        return v if len(v) <= 64 else f"string of {len(v)} characters"
    if isinstance(v, list):
        return f"array of {len(v)}"
    return type(v).__name__


def uint(*, required: bool = False, maximum: int = UINT64_MAX) -> Param:
    """A non-negative JSON integer (never a boolean, a float or a string)."""
    return Param(f"an integer in 0..{maximum}", "uint", required, maximum=maximum)


def string(*, required: bool = False, max_len: int = 4096) -> Param:
    return Param(f"a string of at most {max_len} characters", "str", required, max_len)


def boolean(*, required: bool = False) -> Param:
    return Param("true or false", "bool", required)


def hex_string(*, required: bool = False, max_bytes: int = 32) -> Param:
    return Param(f"hex of at most {max_bytes} bytes", "hex", required, max_bytes)


def json_object(*, required: bool = False) -> Param:
    return Param("a JSON object", "object", required)


def string_list(*, required: bool = False, max_len: int = 1000) -> Param:
    return Param(f"an array of at most {max_len} strings", "str_list", required, max_len)


def object_list(*, required: bool = False, max_len: int = 1000) -> Param:
    return Param(f"an array of at most {max_len} objects", "object_list", required, max_len)


ParamSpec = Mapping[str, Param]
"""A method's parameters by name. Names not in the spec are refused."""


def validate_params(spec: ParamSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters checked against ``spec``: unknown names, missing required ones and wrong types raise
    :class:`InvalidParamsError` naming the parameter. A null optional parameter counts as absent."""
    for name in params:
        if name not in spec:
            raise InvalidParamsError(f"unknown parameter {name[:64]!r}", param=name[:64], expected=sorted(spec))
    out: dict[str, Any] = {}
    for name, p in spec.items():
        value = params.get(name)
        if value is None:
            if p.required:
                raise InvalidParamsError(f"parameter {name!r} is required", param=name, expected=p.expected)
            continue
        out[name] = p.check(name, value)
    return out
