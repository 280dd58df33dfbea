"""Helpers shared by the relay's op modules: strict JSON arguments and staged record writes.

Arguments follow the bridge's rules (:mod:`chains.common.bridge`): an op's JSON object holds exactly
its listed keys, integers are JSON integers (never booleans), byte strings are lowercase hex, and
anything else is :class:`~protocol.errors.CodecError`, so one request has one wire form.

:class:`Staged` batches read-modify-write of small JSON records (rate-limit buckets, supply records)
within one transaction: a batch of 100 packets on one lane writes the lane's bucket once, not 100
times. The transaction is atomic (:meth:`chains.common.state.ChainState.atomic`), so staged values
that are never flushed simply vanish with the failed transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.common import wire
from chains.common.kind import init_args, init_object
from chains.common.state import ChainState
from chains.common.tx import Tx
from protocol.errors import CodecError
from protocol.types import check_uint

Event = dict[str, Any]
"""An event an op emits: a JSON object with a ``type``."""


def op_args(tx: Tx, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``tx.args`` if it holds every ``required`` key and nothing outside ``required + optional``."""
    return obj_args(tx.args, tx.op, required, optional)


obj_args = init_args
"""``value`` if it is a JSON object with every ``required`` key and nothing outside ``required + optional``
(one implementation with the chain kinds' light-client init args)."""
json_object = init_object
"""``value`` if it is a JSON object with string keys (any keys)."""


def str_arg(args: Mapping[str, Any], name: str, what: str) -> str:
    v = args[name]
    if not isinstance(v, str):
        raise CodecError(f"argument {name!r} of {what} must be a string", got=v)
    return v


def int_arg(args: Mapping[str, Any], name: str, what: str) -> int:
    return check_uint(f"argument {name!r} of {what}", args[name])


def hex_arg(args: Mapping[str, Any], name: str, what: str, length: int | None = None) -> bytes:
    value = args[name]
    raw = wire.strict_hex(value, length)  # the error's message is built only for an error (two hex args a packet)
    return raw if raw is not None else wire.hex_bytes(value, f"argument {name!r} of {what}", length)


def list_arg(args: Mapping[str, Any], name: str, what: str, maximum: int, minimum: int = 0) -> list[Any]:
    v = args[name]
    if not isinstance(v, list):
        raise CodecError(f"argument {name!r} of {what} must be a JSON array", got=type(v).__name__)
    if not minimum <= len(v) <= maximum:
        raise CodecError(f"argument {name!r} of {what} has the wrong length", expected=f"{minimum}..{maximum}",
                         got=len(v))
    return v


def hex_list_arg(args: Mapping[str, Any], name: str, what: str, maximum: int) -> list[bytes]:
    return [wire.hex_bytes(h, f"{name}[{i}] of {what}") for i, h in enumerate(list_arg(args, name, what, maximum))]


class Staged:
    """Read-through, write-back cache of JSON records over one :class:`ChainState`, for one transaction."""

    __slots__ = ("_dirty", "_state", "_values")

    def __init__(self, state: ChainState) -> None:
        self._state = state
        self._values: dict[bytes, Any] = {}
        self._dirty: set[bytes] = set()

    def get_json(self, key: bytes) -> Any:
        """The record at ``key`` (``None`` if absent), as staged so far."""
        if key not in self._values:
            self._values[key] = self._state.get_json(key)
        return self._values[key]

    def put(self, key: bytes, value: Any) -> None:
        """Stage ``value`` (``None`` deletes the key)."""
        self._values[key] = value
        self._dirty.add(key)

    def flush(self) -> None:
        """Write every staged record (sorted, though the root does not depend on write order)."""
        for key in sorted(self._dirty):
            value = self._values[key]
            if value is None:
                self._state.delete(key)
            else:
                self._state.set_json(key, value)
        self._dirty.clear()
