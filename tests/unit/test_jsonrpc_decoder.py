"""The strict JSON-RPC body decoder and the typed parameter checks (chains/common/jsonrpc.py).

Tables from a valid body malleated into each hostile shape: every case names the error class and, for
parameters, the parameter the error must name.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chains.common import jsonrpc as rpc
from protocol.errors import CodecError

VALID = b'{"jsonrpc": "2.0", "id": 7, "method": "getHeader", "params": {"height": 3}}'


def test_a_valid_body_decodes_to_its_request() -> None:
    req = rpc.parse_request(rpc.decode_body(VALID))
    assert req == rpc.Request(7, "getHeader", {"height": 3})
    assert rpc.decode_body(b'{"a": [1, -2.5, "\\u00e9", true, null]}') == {"a": [1, -2.5, "é", True, None]}


@pytest.mark.parametrize(("body", "error"), [
    (b"", rpc.ParseError),
    (b"{not json", rpc.ParseError),
    (b'{"a": 1} trailing', rpc.ParseError),
    (b'{"a": NaN}', rpc.ParseError),
    (b'{"a": Infinity}', rpc.ParseError),
    (b'{"a": -Infinity}', rpc.ParseError),
    (b'{"a": 1e400}', rpc.ParseError),  # valid JSON, but a float that overflows to inf
    (b'{"a": -1e400}', rpc.ParseError),
    (b'{"a": ' + b"9" * 81 + b"}", rpc.ParseError),  # longer than MAX_INT_DIGITS
    (b'{"a": ' + b"9" * 5000 + b"}", rpc.ParseError),  # beyond Python's int-string limit (ValueError)
    (b'{"a": 0.' + b"1" * 100 + b"}", rpc.ParseError),
    (b'{"a": "\xff"}', rpc.ParseError),  # invalid UTF-8
    (b'{"a": "\xed\xa0\x80"}', rpc.ParseError),  # a surrogate encoded as UTF-8 bytes (CESU), not UTF-8
    (b'\xef\xbb\xbf{"a": 1}', rpc.ParseError),  # a BOM
    ('{"a": 1}'.encode("utf-16"), rpc.ParseError),  # json.loads(bytes) would guess UTF-16; we do not
    (b'{"a": "\\ud800"}', rpc.ParseError),  # a lone surrogate escape in a value
    (b'{"\\udfff": 1}', rpc.ParseError),  # ... and in a key
    (b'{"a": 1, "a": 2}', rpc.ParseError),  # duplicate key
    (b"[" * 33 + b"]" * 33, rpc.ParseError),  # one past MAX_DEPTH
    (b"[" * 100_000 + b"]" * 100_000, rpc.ParseError),  # past the C scanner's recursion limit
    (b"[" + b"0," * rpc.MAX_VALUES + b"0]", rpc.ParseError),  # too many values
    (b" " * (rpc.MAX_BODY_BYTES + 1), rpc.BodyTooLargeError),
])
def test_hostile_bodies_are_parse_errors(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        rpc.decode_body(body)
    assert isinstance(info.value, CodecError)  # a client that knows only SPEC §9 sees codec.invalid
    assert info.value.to_dict()["code"].startswith("rpc.")


def test_depth_is_bounded_before_the_c_scanner_recurses() -> None:
    """json's C scanner recurses per level up to sys.getrecursionlimit(); hypothesis and others raise that limit,
    and then 10^5 levels overflow the C stack (a segfault, seen before the pre-parse check existed)."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10**7)
    try:
        for n in (33, 10_000, 45_000):
            with pytest.raises(rpc.ParseError, match="nested too deeply"):
                rpc.decode_body(b'{"a":' * n + b"1" + b"}" * n)
            with pytest.raises(rpc.ParseError, match="nested too deeply"):
                rpc.decode_body(b'["x[",' * n + b'"]"' + b"]" * n)  # brackets inside strings do not count
        assert rpc.decode_body(b'["[[[[",' * 31 + b'"]"' + b"]" * 31)[0] == "[[[["
    finally:
        sys.setrecursionlimit(limit)


def test_escaped_quotes_and_backslashes_do_not_hide_nesting() -> None:
    """Strings are cut out as the scanner reads them: an escaped backslash ends no string and an escaped quote
    closes none, so nesting after either still counts (were it taken for string content, 45,000 levels would
    reach the C scanner)."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10**7)
    try:
        for item in (b'"\\\\",', b'"\\"[",', b'"\\\\\\"]",', b'"\\u005c",'):
            for n in (33, 45_000):
                with pytest.raises(rpc.ParseError, match="nested too deeply"):
                    rpc.decode_body((b"[" + item) * n + b'"x"' + b"]" * n)
            assert rpc.decode_body((b"[" + item) * 32 + b'"x"' + b"]" * 32) is not None
    finally:
        sys.setrecursionlimit(limit)


_REFERENCE_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # the regex the decoder used to cut strings


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.recursive(st.text(alphabet='"\\[]{},:u0a\u00e9') | st.integers(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text('"\\[]{}a'), inner, max_size=3),
                    max_leaves=12))
def test_strings_are_cut_out_as_a_regex_over_the_literals_would(value: Any) -> None:
    """On any JSON text, the C-speed cut equals the string-literal regex it replaced (quotes, backslashes and
    brackets inside the strings on purpose)."""
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, separators=(",", ":"))):
        assert rpc._outside_strings(text) == _REFERENCE_STRING.sub('""', text)


def test_lone_surrogates_are_found_however_the_body_arrives() -> None:
    assert rpc.decode_body(b'{"a": "\\\\ud800"}') == {"a": "\\ud800"}  # an escaped backslash, then text
    with pytest.raises(rpc.ParseError, match="surrogate"):
        rpc.decode_body(b'{"a": ["\\u00e9", {"b": "\\udc00"}]}')
    with pytest.raises(rpc.ParseError, match="surrogate"):
        rpc.decode_json('{"a": "\ud800"}')  # a str holding the surrogate itself, no escape
    assert rpc.decode_json('{"a": "\u00e9"}') == {"a": "\u00e9"}


def test_bounds_are_inclusive() -> None:
    assert rpc.decode_body(b"[" * 32 + b"]" * 32) is not None
    assert rpc.decode_body(b"9" * 80) == int("9" * 80)
    assert rpc.decode_body(b"\"\\ud83d\\ude00\"") == "\U0001f600"  # a surrogate *pair* is one character
    assert len(rpc.decode_body(b"[" + b"0," * (rpc.MAX_VALUES - 2) + b"0]")) == rpc.MAX_VALUES - 1


@pytest.mark.parametrize(("body", "error"), [
    ([], rpc.InvalidRequestError),  # batch
    ([VALID.decode()], rpc.InvalidRequestError),
    ("getHeader", rpc.InvalidRequestError),
    (1, rpc.InvalidRequestError),
    ({"id": 1, "method": "status"}, rpc.InvalidRequestError),  # no jsonrpc member
    ({"jsonrpc": "1.0", "id": 1, "method": "status"}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": 1, "method": 5}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": 1}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": [1], "method": "status"}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": True, "method": "status"}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "status"}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": 1, "method": "status", "extra": 1}, rpc.InvalidRequestError),
    ({"jsonrpc": "2.0", "id": 1, "method": "status", "params": [1]}, rpc.InvalidParamsError),
    ({"jsonrpc": "2.0", "id": 1, "method": "status", "params": "x"}, rpc.InvalidParamsError),
    ({"jsonrpc": "2.0", "id": 1, "method": "status", "params": 0}, rpc.InvalidParamsError),
])
def test_requests_that_are_not_json_rpc(body: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        rpc.parse_request(body)


def test_request_id_is_echoed_only_when_valid() -> None:
    assert rpc.request_id({"id": "abc"}) == "abc"
    assert rpc.request_id({"id": 3}) == 3
    assert rpc.request_id({"id": True}) is None
    assert rpc.request_id({"id": {"x": 1}}) is None
    assert rpc.request_id([1]) is None
    assert rpc.parse_request({"jsonrpc": "2.0", "method": "status", "params": None}).params == {}


SPEC: rpc.ParamSpec = {
    "height": rpc.uint(),
    "key": rpc.string(required=True, max_len=8),
    "prove": rpc.boolean(),
    "hash": rpc.hex_string(max_bytes=4),
    "keys": rpc.string_list(max_len=2),
    "txs": rpc.object_list(max_len=2),
    "tx": rpc.json_object(),
}


@pytest.mark.parametrize(("params", "param"), [
    ({}, "key"),
    ({"key": None}, "key"),
    ({"key": 5}, "key"),
    ({"key": "123456789"}, "key"),
    ({"key": "k", "height": -1}, "height"),
    ({"key": "k", "height": True}, "height"),  # a bool is an int in Python, never in our params
    ({"key": "k", "height": 1.0}, "height"),
    ({"key": "k", "height": "1"}, "height"),
    ({"key": "k", "height": 2**64}, "height"),
    ({"key": "k", "prove": 1}, "prove"),
    ({"key": "k", "prove": "true"}, "prove"),
    ({"key": "k", "hash": "abc"}, "hash"),  # odd length
    ({"key": "k", "hash": "zz"}, "hash"),
    ({"key": "k", "hash": "0x00"}, "hash"),
    ({"key": "k", "hash": "00" * 5}, "hash"),
    ({"key": "k", "keys": "a"}, "keys"),
    ({"key": "k", "keys": ["a", 1]}, "keys"),
    ({"key": "k", "keys": ["a", "b", "c"]}, "keys"),
    ({"key": "k", "txs": [[]]}, "txs"),
    ({"key": "k", "tx": []}, "tx"),
    ({"key": "k", "other": 1}, "other"),  # unknown parameter
])
def test_wrong_params_name_the_parameter(params: dict[str, Any], param: str) -> None:
    with pytest.raises(rpc.InvalidParamsError) as info:
        rpc.validate_params(SPEC, params)
    assert info.value.param == param and info.value.to_dict()["param"] == param
    assert param in info.value.message
    assert info.value.rpc_code == rpc.INVALID_PARAMS


def test_valid_params_pass_and_null_optionals_are_absent() -> None:
    got = rpc.validate_params(SPEC, {"key": "k", "height": 0, "prove": False, "hash": "00ff", "keys": ["a"],
                                     "txs": [{}], "tx": {"a": 1}})
    assert got == {"key": "k", "height": 0, "prove": False, "hash": "00ff", "keys": ["a"], "txs": [{}],
                   "tx": {"a": 1}}
    assert rpc.validate_params(SPEC, {"key": "k", "height": None}) == {"key": "k"}


# any JSON value, including the awkward ones the encoder can produce
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())))
def test_the_decoder_raises_only_parse_errors(raw: bytes) -> None:
    """Whatever the bytes, the decoder returns a value within its bounds or raises ParseError: nothing else
    escapes (no ValueError, RecursionError, UnicodeError), and what it returns re-encodes as strict JSON."""
    try:
        value = rpc.decode_body(raw)
    except rpc.ParseError:
        return
    json.dumps(value, allow_nan=False).encode("utf-8")
