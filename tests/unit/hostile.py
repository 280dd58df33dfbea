"""Hypothesis strategies for hostile request bodies (issue 9): JSON *text* built token by token, so the
shapes a JSON encoder would never emit appear often — NaN and Infinity, floats that overflow, integers
past Python's int-string limit, lone surrogate escapes, duplicate keys, deep nesting, huge arrays — and
then bytes that are not UTF-8 at all."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import strategies as st

_ODD_SCALARS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1E+99999", "-0", "0.0", "1.5", "true", "false",
                "null", '"\\ud800"', '"x\\udfff"', '"\\udbff\\udfff"', '""', '"00"', '"zz"', '"0x00"', "[]", "{}",
                '"' + "a" * 5000 + '"', "18446744073709551616", "-1", "4294967296"]

scalar_text = st.one_of(
    st.sampled_from(_ODD_SCALARS),
    st.integers().map(str),
    st.integers(min_value=79, max_value=6000).map(lambda n: "9" * n),  # past MAX_INT_DIGITS / the int limit
    st.floats().map(lambda f: json.dumps(f)),  # NaN and Infinity included
    st.text(max_size=12).map(json.dumps),
    st.text(alphabet="0123456789abcdef", max_size=70).map(json.dumps),  # hex-looking strings
)


def _object(keys: Sequence[str], inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    key = st.sampled_from([*keys, "a", "\\ud800", ""]).map(lambda k: f'"{k}"') | st.text(max_size=6).map(json.dumps)
    return st.lists(st.tuples(key, inner), max_size=5).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")


def json_text(keys: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Mostly-JSON text, with object keys drawn from ``keys`` (parameter names) among others."""
    deep = st.integers(min_value=30, max_value=3000).map(lambda n: "[" * n + "1" + "]" * n)
    wide = st.integers(min_value=1000, max_value=300_000).map(lambda n: "[" + ",".join(["0"] * n) + "]")
    return st.one_of(
        st.recursive(scalar_text,
                     lambda inner: st.lists(inner, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]")
                     | _object(keys, inner),
                     max_leaves=12),
        deep, wide)


def to_bytes(text_strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Text as UTF-8 (surrogates escaped, as a hostile client can send them), sometimes broken: a BOM, an invalid
    byte, a CESU-8 surrogate, or cut short."""
    def encode(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    plain = text_strategy.map(encode)
    junk = [b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b""]
    broken = st.tuples(text_strategy.map(encode), st.sampled_from(junk),
                       st.booleans()).map(lambda t: t[1] + t[0] if t[2] else t[0][: len(t[0]) // 2] + t[1])
    return st.one_of(plain, plain, broken, st.binary(max_size=64))


def request_bodies(methods: Sequence[str], param_names: Sequence[str]) -> st.SearchStrategy[bytes]:
    """JSON-RPC requests naming real methods with hostile params, hostile envelopes, and raw hostile bytes."""
    params = json_text(param_names)
    envelope = st.tuples(st.sampled_from([*methods, "nope", ""]), params,
                         st.sampled_from(['"2.0"', '"1.0"', "2", "null"]),
                         st.sampled_from(["1", '"x"', "null", "1.5", "[1]", "true", "9" * 90])).map(
        lambda t: f'{{"jsonrpc":{t[2]},"id":{t[3]},"method":{json.dumps(t[0])},"params":{t[1]}}}')
    good_envelope = st.tuples(st.sampled_from(list(methods)), params).map(
        lambda t: f'{{"jsonrpc":"2.0","id":1,"method":{json.dumps(t[0])},"params":{t[1]}}}')
    return st.one_of(to_bytes(good_envelope), to_bytes(good_envelope), to_bytes(envelope),
                     to_bytes(json_text(("jsonrpc", "id", "method", "params"))))


def p2p_bodies(field_names: Sequence[str]) -> st.SearchStrategy[bytes]:
    """Bodies of a P2P route: objects with its fields set to hostile values, and raw hostile bytes."""
    return to_bytes(json_text(field_names))
