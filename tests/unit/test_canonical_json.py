"""``canonical_json`` writes orjson's bytes where they are the reference encoder's, and the reference's elsewhere: the
same bytes (or the same error) as ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` for any
value. Sign bytes, transaction hashes and state records are these bytes, so one differing byte would split nodes
running the two encoders, and would change what a relayer signs."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.common import state as state_mod
from chains.common.state import canonical_json


def reference(value: Any, *, allow_nan: bool = True) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan).encode()


def outcome(fn: Any, value: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(value, **kw)
    except Exception as exc:  # the same kind of failure counts as the same outcome
        return "error", type(exc)


class Kind(enum.IntEnum):
    A = 1


class Name(str):
    pass


@dataclass
class Point:
    x: int


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # surrogates and controls included
LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | TEXT
          | st.sampled_from([Kind.A, Name("n"), Point(1), 10**20, -(2**63) - 1, 2**64, 1e16, 1e-7, -0.0]))
VALUES = st.recursive(
    LEAVES,
    lambda inner: (st.lists(inner, max_size=5) | st.lists(inner, max_size=5).map(tuple)
                   | st.dictionaries(TEXT, inner, max_size=5)
                   | st.dictionaries(st.integers(0, 9), inner, max_size=3)),
    max_leaves=30)


@settings(max_examples=1_500, deadline=None)
@given(VALUES)
def test_any_value_encodes_as_the_reference_encodes_it(value: Any) -> None:
    assert outcome(canonical_json, value) == outcome(reference, value)
    assert outcome(canonical_json, value, allow_nan=False) == outcome(reference, value, allow_nan=False)


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [True, None, "x"], "é": {"z": "\u2028\x7f"}},
    {"amount": 2**63 - 1, "neg": -(2**63)},
    {"ctrl": "\x00\x08\x0c\n\r\t\x1f\"\\/"},
    {"\U0001f600": 1, "\uffff": 2, "a": 3, "": 4},
    [[[[]]], {}, ()],
])
def test_plain_values_take_the_fast_path_with_the_reference_bytes(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference(value)
    monkeypatch.setattr(state_mod, "json", None)  # the reference encoder is not reached: orjson alone wrote it
    assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [1e16, 1.5e-7, float("nan"), float("inf"), 2**64, Kind.A, Name("n"), {1: "a"}])
def test_what_orjson_writes_differently_or_refuses_goes_to_the_reference(value: Any) -> None:
    assert canonical_json(value) == reference(value)


def test_orjson_spells_float_exponents_unlike_the_reference() -> None:
    """Why floats go to the reference: the same value, other bytes."""
    assert orjson.dumps(1e-7) == b"1e-7" and reference(1e-7) == b"1e-07"
    assert orjson.dumps(float("nan")) == b"null" and reference(float("nan")) == b"NaN"


def test_errors_stay_the_reference_errors() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular"):
        canonical_json(cyclic)
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"s": "\ud800"})
    with pytest.raises(TypeError):
        canonical_json(Point(1))
    with pytest.raises(TypeError):
        canonical_json(b"bytes")
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")}, allow_nan=False)
    deep: Any = "leaf"
    for _ in range(400):  # past orjson's 255 levels: the reference writes it
        deep = [deep]
    assert canonical_json(deep) == reference(deep)


WIRE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: (st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5)
                   | st.dictionaries(st.integers(0, 9), inner, max_size=3)),
    max_leaves=30)


@settings(max_examples=800, deadline=None)
@given(WIRE_VALUES)
def test_wire_json_reads_back_as_the_standard_librarys(value: Any) -> None:
    """``jsonrpc.dumps`` (RPC answers, gossip, stored bodies) is not canonical, but any reader gets the same value as
    from the standard library's text: big ints, int keys and lone surrogates included (those take its path)."""
    from chains.common import jsonrpc

    assert json.loads(jsonrpc.dumps(value)) == json.loads(json.dumps(value))
