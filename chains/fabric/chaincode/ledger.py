"""The bridge chaincode's view of its Fabric ledger: the :class:`Stub` it talks to, the mapping of the protocol's
byte paths to Fabric keys, and :class:`StubState`, the :class:`~chains.common.state.KVState` backend that lets
:mod:`chains.common.bridge` run unchanged on Fabric (SPEC.md §5, §8.7).

Nothing here imports ``fabric_chaincode_python``: :mod:`chains.fabric.chaincode.server` adapts the library's
stub to :class:`Stub`, and unit tests drive the contract with an in-memory one.

Keys
----

The protocol names state by byte paths (``receipts/dpos-park/lane-0/7``). A Fabric key is a UTF-8 string, and
Fabric reserves keys starting with ``\\x00`` (composite keys). :func:`fabric_key` maps a path to a key, one to
one and reversibly (:func:`protocol_path`):

* a **plain** path — non-empty, every byte printable ASCII ``0x21..0x7e``, not starting with ``~`` — is its
  own key (``receipts/dpos-park/lane-0/7``), so ``peer chaincode query`` and range scans read naturally;
* any other path is ``~`` followed by its lowercase hex (``balances/a/kWh\\n`` -> ``~62616c...0a``).

A plain key never starts with ``~`` and an escaped key always does, and :func:`protocol_path` refuses an
escaped key whose path is plain, so each path has exactly one key and each key at most one path.

Reads and writes
----------------

Fabric's ``GetState`` reads the committed state only: a transaction does not see its own writes. The shared
bridge rules read after they write (a balance credited twice in one packet, an escrow share and its total), so
:class:`StubState` keeps the transaction's writes in an overlay, reads through it, and hands them to the stub
only at the end (:meth:`StubState.flush`), in sorted key order. A refused transaction flushes nothing.
Every read of a key the transaction has not written goes to the stub, so it lands in the read set that
Fabric's MVCC check validates at commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from chains.common.state import KVState
from protocol.errors import CodecError

__all__ = [
    "ESCAPE",
    "MAX_PATH_BYTES",
    "MAX_RANGE_RESULTS",
    "Stub",
    "StubState",
    "fabric_key",
    "protocol_path",
]

ESCAPE = "~"
"""First character of a Fabric key that holds a non-plain path in hex."""

MAX_PATH_BYTES = 1024
"""Longest path this chaincode reads or writes (the protocol's longest is well under 600 bytes)."""

MAX_RANGE_RESULTS = 10_000
"""Most keys one prefix scan returns (scans serve queries only)."""

_RANGE_END = "\U0010ffff"
_ESCAPED_RE = re.compile(r"~(?:[0-9a-f]{2})+")


class Stub(Protocol):
    """What the contract needs of a Fabric chaincode stub, synchronously (the server runs the contract in a worker
    thread and forwards each call to the peer)."""

    def get_channel_id(self) -> str:
        """The channel the proposal is on."""
        ...

    def get_creator(self) -> tuple[str, bytes]:
        """The proposal's creator: MSP id and its X.509 certificate (PEM), as the peer validated them."""
        ...

    def get_state(self, key: str) -> bytes:
        """The committed value at ``key``; ``b""`` when absent (Fabric's convention)."""
        ...

    def put_state(self, key: str, value: bytes) -> None:
        """Add a write of ``value`` at ``key`` to the transaction's write set."""
        ...

    def del_state(self, key: str) -> None:
        """Add a delete of ``key`` to the transaction's write set."""
        ...

    def get_state_by_range(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        """Committed ``(key, value)`` with ``start <= key < end`` in key order, at most ``limit`` of them."""
        ...

    def set_event(self, name: str, payload: bytes) -> None:
        """Set the transaction's chaincode event (Fabric keeps one per transaction)."""
        ...

    def get_transient(self) -> dict[str, bytes]:
        """The proposal's transient map: inputs the endorsers see and the transaction never records."""
        ...

    def put_private_data(self, collection: str, key: str, value: bytes) -> None:
        """Write ``value`` at ``key`` of a private data collection: the members' peers keep the value, the ledger
        only its SHA-256."""
        ...

    def get_private_data(self, collection: str, key: str) -> bytes:
        """The value at ``key`` of a collection this peer's organisation is a member of; ``b""`` when absent."""
        ...

    def get_private_data_hash(self, collection: str, key: str) -> bytes:
        """The SHA-256 of the committed private value at ``key`` (every peer has it); ``b""`` when absent."""
        ...


def _is_plain(path: bytes) -> bool:
    return bool(path) and path[:1] != b"~" and all(0x21 <= b <= 0x7E for b in path)


def fabric_key(path: bytes) -> str:
    """The Fabric key of a protocol path (module docstring)."""
    if not isinstance(path, bytes) or not path or len(path) > MAX_PATH_BYTES:
        raise CodecError(f"a state path is 1..{MAX_PATH_BYTES} bytes",
                         got=len(path) if isinstance(path, bytes) else type(path).__name__)
    return path.decode("ascii") if _is_plain(path) else ESCAPE + path.hex()


def protocol_path(key: str) -> bytes:
    """The protocol path a Fabric key holds; :class:`CodecError` for a key :func:`fabric_key` never makes."""
    if key.startswith(ESCAPE):
        if len(key) > 1 + 2 * MAX_PATH_BYTES or not _ESCAPED_RE.fullmatch(key):
            raise CodecError("an escaped key is '~' and lowercase hex", got=key[:80])
        path = bytes.fromhex(key[1:])
        if _is_plain(path):
            raise CodecError("a plain path is never escaped", got=key[:80])
        return path
    raw = key.encode("utf-8", "surrogatepass")
    if not _is_plain(raw) or len(raw) > MAX_PATH_BYTES:
        raise CodecError("not a key of this chaincode", got=key[:80])
    return raw


class StubState(KVState):
    """A transaction's state over a Fabric stub: committed reads through an overlay of its own writes."""

    __slots__ = ("_stub", "_writes")

    def __init__(self, stub: Stub) -> None:
        self._stub = stub
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        value = self._stub.get_state(fabric_key(key))
        return bytes(value) if value else None

    def set(self, key: bytes, value: bytes) -> None:
        if not value:
            # Fabric cannot tell an empty value from an absent key
            raise ValueError(f"refusing to write an empty value at {key!r}")
        fabric_key(key)  # bounds the path before anything is buffered
        self._writes[key] = bytes(value)

    def delete(self, key: bytes) -> None:
        fabric_key(key)
        self._writes[key] = None

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Undo the writes made inside the block if it raises anything."""
        saved = dict(self._writes)
        try:
            yield
        except BaseException:
            self._writes = saved
            raise

    def prefix_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Committed keys under ``prefix`` (plain and escaped) merged with this transaction's writes."""
        found: dict[bytes, bytes | None] = {}
        if not prefix or _is_plain(prefix):
            start = prefix.decode("ascii")
            for key, value in self._stub.get_state_by_range(start, start + _RANGE_END, MAX_RANGE_RESULTS):
                found[protocol_path(key)] = value
        start = ESCAPE + prefix.hex()
        for key, value in self._stub.get_state_by_range(start, start + _RANGE_END, MAX_RANGE_RESULTS):
            path = protocol_path(key)
            if path.startswith(prefix):
                found[path] = value
        found.update((k, v) for k, v in self._writes.items() if k.startswith(prefix))
        return sorted((k, v) for k, v in found.items() if v)

    @property
    def writes(self) -> dict[bytes, bytes | None]:
        """The buffered writes (``None``: a delete), by path."""
        return dict(self._writes)

    def flush(self) -> None:
        """Hand the buffered writes to the stub, in path order (one write set for one outcome)."""
        for key in sorted(self._writes):
            value = self._writes[key]
            if value is None:
                self._stub.del_state(fabric_key(key))
            else:
                self._stub.put_state(fabric_key(key), value)
        self._writes.clear()
