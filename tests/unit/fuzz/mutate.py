"""Mutation engine shared by the suite's hypothesis harnesses and ``bench/fuzz.py``.

An input is a valid seed (bytes, or a JSON value) plus a list of edits. Edits are plain integer tuples, so
hypothesis can draw and shrink them and the bench can draw them from a seeded ``random.Random``.

Byte edits: flip a bit, set a byte to 0x00/0xff/0x80/0x7f, truncate, insert a run of bytes, duplicate a
slice, overwrite a 32-byte word with an edge value (ABI lengths and offsets), append junk.
JSON edits: replace the n-th node (pre-order) with a hostile value — wrong types, huge and non-finite
numbers, lone surrogates, long strings, deep nesting — drop or add a key, or wrap the value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

Edit = tuple[int, int, int]
"""(operation, position, argument); position and argument are reduced modulo what they index."""

N_BYTE_OPS = 8
N_JSON_OPS = 4

_WORDS = [bytes(32), b"\xff" * 32, (32).to_bytes(32, "big"), (2**64).to_bytes(32, "big"),
          (2**255).to_bytes(32, "big"), (1).to_bytes(32, "big"), (0x7FFFFFFF).to_bytes(32, "big"),
          (2**256 - 32).to_bytes(32, "big")]
_BYTES = [0x00, 0xFF, 0x80, 0x7F, 0x01, 0xC0, 0xF8, 0x0A]

def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, 2**64, 2**256, -(2**300), 2**300, 10**400, 1.5, -0.0, math.nan, math.inf,
    -math.inf, 1e308, "", "\ud800", "x\udfff", "\x00", "zz", "0x", "00", "ff" * 33, "a" * 70_000, "é", "-1",
    "NaN", [], {}, [None], {"": None}, _deep(40),
    ["0"] * 300, {"\ud800": 1},
]


def apply_bytes(seed: bytes, edits: Sequence[Edit]) -> bytes:
    data = bytearray(seed)
    for op, pos, arg in edits:
        n = len(data)
        i = pos % (n + 1)
        kind = op % N_BYTE_OPS
        if kind == 0 and n:
            data[i % n] ^= 1 << (arg % 8)
        elif kind == 1 and n:
            data[i % n] = _BYTES[arg % len(_BYTES)]
        elif kind == 2:
            del data[i:]
        elif kind == 3:
            data[i:i] = bytes([arg % 256]) * (1 + arg % 40)
        elif kind == 4 and n:
            j = (i + 1 + arg % 64) % (n + 1)
            lo, hi = min(i, j), max(i, j)
            data[hi:hi] = data[lo:hi]
        elif kind == 5 and n >= 32:
            w = (i // 32) * 32 % (n - n % 32 or 32)
            data[w:w + 32] = _WORDS[arg % len(_WORDS)]
        elif kind == 6:
            data += bytes([arg % 256]) * (1 + arg % 33)
        elif kind == 7 and n:
            del data[i % n:(i % n) + 1 + arg % 8]
    return bytes(data)


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_nodes(v, (*path, i)))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _set(value[path[0]], path[1:], new)
    return copy


def apply_json(seed: Any, edits: Sequence[Edit]) -> Any:
    value = seed
    for op, pos, arg in edits:
        nodes = _nodes(value)
        path = nodes[pos % len(nodes)]
        kind = op % N_JSON_OPS
        node = _get(value, path)
        if kind == 0:
            value = _set(value, path, HOSTILE_VALUES[arg % len(HOSTILE_VALUES)])
        elif kind == 1 and isinstance(node, dict) and node:
            key = sorted(node, key=str)[arg % len(node)]
            value = _set(value, path, {k: v for k, v in node.items() if k != key})
        elif kind == 1:
            value = _set(value, path, {"extra": HOSTILE_VALUES[arg % len(HOSTILE_VALUES)]})
        elif kind == 2 and isinstance(node, dict):
            value = _set(value, path, {**node, f"k{arg % 3}": HOSTILE_VALUES[arg % len(HOSTILE_VALUES)]})
        elif kind == 2 and isinstance(node, list):
            value = _set(value, path, [*node, *node[: 1 + arg % 4]])
        elif kind == 3 and isinstance(node, str) and node:
            value = _set(value, path, node[: arg % (len(node) + 1)] + ("G" if arg % 2 else "0"))
        elif kind == 3 and isinstance(node, int) and not isinstance(node, bool):
            value = _set(value, path, node + (-1, 1, 2**64, -(2**64), 2**256)[arg % 5])
        else:
            value = _set(value, path, [node] if arg % 2 else {"v": node})
    return value


edit = st.tuples(st.integers(0, 63), st.integers(0, 2**20), st.integers(0, 2**16))
edits = st.lists(edit, min_size=1, max_size=6)


def random_edits(rng: random.Random) -> list[Edit]:
    return [(rng.randrange(64), rng.randrange(2**20), rng.randrange(2**16)) for _ in range(1 + rng.randrange(6))]
