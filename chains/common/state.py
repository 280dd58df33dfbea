"""Application state of a Python park chain: a key/value view over the state commitment.

:class:`KVState` is the interface the shared rules (:mod:`chains.common.bridge`, :mod:`chains.common.tx` ops)
run over; :class:`ChainState` is its backend on the Python parks. Pure: no I/O. A block executes against the
parent's tree and yields a new one; because the tree is persistent, the parent's tree (and its root and
proofs) stay valid and cost nothing to keep. A transaction that raises a
:class:`~protocol.errors.ProtocolError` is rolled back whole.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from orjson import OPT_SORT_KEYS as _ORJSON_SORTED
from orjson import JSONEncodeError as _OrjsonError
from orjson import dumps as _orjson_dumps

from protocol.errors import InsufficientFundsError
from protocol.paths import balance_path
from protocol.state_commitment import Proof, SparseMerkleTree


class KVState(ABC):
    """The key/value interface the bridge and the ops run over, with their typed helpers.

    Two backends: :class:`ChainState` (a Python park's state tree) and the Fabric bridge chaincode's ledger
    view (:class:`chains.fabric.chaincode.ledger.StubState`), so one set of rules runs on every park.
    Keys are the protocol's byte paths (SPEC.md §5); an absent key reads as ``None``.
    """

    __slots__ = ()

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` as this transaction sees it (its own writes included)."""

    @abstractmethod
    def set(self, key: bytes, value: bytes) -> None:
        """Write ``value`` (non-empty) at ``key``."""

    @abstractmethod
    def delete(self, key: bytes) -> None:
        """Remove ``key`` (nothing if it is absent)."""

    @abstractmethod
    def atomic(self) -> AbstractContextManager[None]:
        """A block whose writes are all undone if it raises anything (a bug included); nestable."""

    @abstractmethod
    def prefix_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, sorted (a scan: for queries, not for consensus)."""

    # -- typed helpers -------------------------------------------------------------------------

    def get_int(self, key: bytes, default: int = 0) -> int:
        raw = self.get(key)
        return int(raw.decode()) if raw is not None else default

    def set_int(self, key: bytes, value: int) -> None:
        if value == 0:
            self.delete(key)
        else:
            self.set(key, str(value).encode())

    def get_json(self, key: bytes) -> Any:
        raw = self.get(key)
        return json.loads(raw) if raw is not None else None

    def set_json(self, key: bytes, value: Any) -> None:
        self.set(key, canonical_json(value))

    def balance(self, account: str, denom: str) -> int:
        return self.get_int(balance_path(account, denom))

    def add_balance(self, account: str, denom: str, amount: int) -> None:
        if amount < 0:
            raise ValueError("add_balance takes a non-negative amount")
        self.set_int(balance_path(account, denom), self.balance(account, denom) + amount)

    def sub_balance(self, account: str, denom: str, amount: int) -> None:
        have = self.balance(account, denom)
        if amount < 0 or have < amount:
            raise InsufficientFundsError(f"balance of {account} in {denom} too small", expected=f">= {amount}",
                                         got=have)
        self.set_int(balance_path(account, denom), have - amount)


_ABSENT = object()
"""In an undo log: the key had no buffered write before the block (reads went to the tree)."""


class _Frame:
    """One open :meth:`ChainState.atomic` block: how to put the state back as it was when the block started."""

    __slots__ = ("snapshot", "tree", "undo")

    def __init__(self, tree: SparseMerkleTree) -> None:
        self.tree = tree
        """The tree when the block started."""
        self.undo: dict[bytes, object] = {}
        """Key -> its buffered write before the block's first write of it (:data:`_ABSENT`: none)."""
        self.snapshot: dict[bytes, bytes | None] | None = None
        """The buffered writes when the block started, once a flush inside it moved them into the tree."""


class ChainState(KVState):
    """Mutable handle on an immutable tree. ``tree`` is the current version.

    Writes are buffered and applied to the tree together (:meth:`SparseMerkleTree.set_many`) when the tree, its root
    or a proof is next asked for: a block's transactions build each new inner node once, its hot keys (an account's
    nonce, an escrow total) are written into the tree once, not once per transaction (issue 16). Reads see the
    buffered writes first. An :meth:`atomic` block keeps an undo log of the buffered writes it replaces, so rolling
    it back costs what it wrote, and starting one costs nothing.
    """

    __slots__ = ("_frames", "_pending", "_tree")

    def __init__(self, tree: SparseMerkleTree | None = None) -> None:
        self._tree = tree if tree is not None else SparseMerkleTree()
        self._pending: dict[bytes, bytes | None] = {}
        self._frames: list[_Frame] = []

    @property
    def tree(self) -> SparseMerkleTree:
        """The current tree, every write so far applied."""
        if self._pending:
            self._flush()
        return self._tree

    @tree.setter
    def tree(self, tree: SparseMerkleTree) -> None:
        """Replace the whole state (buffered writes dropped). Refused inside an :meth:`atomic` block, whose rollback
        could not undo it."""
        if self._frames:
            raise RuntimeError("ChainState.tree is replaced outside atomic blocks only: a rollback could not undo it")
        self._tree = tree
        self._pending = {}

    def _flush(self) -> None:
        if self._frames:
            self._snapshot_frames()
        pending, self._pending = self._pending, {}
        tree = self._tree.delete_many([k for k, v in pending.items() if v is None])
        self._tree = tree.set_many((k, v) for k, v in pending.items() if v is not None)

    def _snapshot_frames(self) -> None:
        """Before a flush inside open atomic blocks: each block's buffered writes as they were when it started (the
        undo logs refer to buffered writes the flush is about to move into the tree)."""
        entry = dict(self._pending)
        for frame in reversed(self._frames):  # innermost first: each log undoes its block's writes
            if frame.snapshot is None:
                _undo(entry, frame.undo)
                frame.snapshot = dict(entry)
            else:
                entry = dict(frame.snapshot)

    @property
    def root(self) -> bytes:
        return self.tree.root

    def get(self, key: bytes) -> bytes | None:
        pending = self._pending
        if key in pending:
            return pending[key]
        return self._tree.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:  # fail here, inside the transaction, not at flush
            key, value = _as_bytes(key, "key"), _as_bytes(value, "value")
        if self._frames:
            undo = self._frames[-1].undo
            if key not in undo:
                undo[key] = self._pending.get(key, _ABSENT)
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            key = _as_bytes(key, "key")
        if self._frames:
            undo = self._frames[-1].undo
            if key not in undo:
                undo[key] = self._pending.get(key, _ABSENT)
        self._pending[key] = None

    def prove(self, key: bytes) -> Proof:
        return self.tree.prove(key)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Roll back every change made inside the block if it raises anything (a bug included)."""
        frame = _Frame(self._tree)
        frames = self._frames
        frames.append(frame)
        try:
            yield
        except BaseException:
            frames.pop()
            if frame.snapshot is not None:  # a flush inside the block moved its writes into the tree
                self._tree, self._pending = frame.tree, frame.snapshot
            else:
                _undo(self._pending, frame.undo)
            raise
        frames.pop()
        if frames:  # committed into the enclosing block: its log must undo these writes too
            outer = frames[-1].undo
            for key, before in frame.undo.items():
                if key not in outer:
                    outer[key] = before

    def prefix_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix`` (a full scan: for queries, not for consensus)."""
        return sorted((k, v) for k, v in self.tree.items() if k.startswith(prefix))


def _undo(pending: dict[bytes, bytes | None], undo: dict[bytes, object]) -> None:
    """Put back in ``pending`` the buffered writes an atomic block's undo log holds."""
    for key, before in undo.items():
        if before is _ABSENT:
            pending.pop(key, None)
        else:
            pending[key] = before  # type: ignore[assignment]


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, str) or not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"a state {what} is bytes, not {type(value).__name__}")
    return bytes(value)


def canonical_json(value: Any, *, allow_nan: bool = True) -> bytes:
    """Sorted keys, no spaces, UTF-8: one encoding for one value.

    The reference is the standard library's ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``, UTF-8 encoded. orjson writes the same bytes ~30x faster when every node of ``value`` is a
    ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``bool`` or ``None`` of exactly those types: it runs first, and
    the value is then walked for anything else (a float, whose exponent orjson spells differently; a subclass such
    as an ``IntEnum``; a dataclass, which orjson would encode and the reference refuses), which the reference
    encodes instead. What orjson refuses (an int beyond 64 bits, a non-``str`` key, a lone surrogate, nesting past
    255 levels or a cycle) also goes to the reference, which then answers or raises as it always did. The walk runs
    only after orjson succeeded, so it meets no cycle. ``allow_nan=False`` refuses NaN and infinities
    (``ValueError``), as ``json.dumps(allow_nan=False)`` does. ``tests/unit/test_canonical_json.py`` holds the two
    equal on any JSON-like value."""
    try:
        out: bytes = _orjson_dumps(value, option=_ORJSON_SORTED)
    except _OrjsonError:
        pass
    else:
        if _plain(value):
            return out
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan).encode()


_PLAIN_LEAVES = frozenset({str, int, bool, type(None)})


def _plain(value: Any) -> bool:
    """Whether every node of ``value`` (acyclic: orjson encoded it) is of a type both encoders write alike."""
    leaves = _PLAIN_LEAVES
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        v = pop()
        t = v.__class__
        if t in leaves:
            continue
        if t is dict:
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        else:
            return False
    return True


StateHook = Callable[[ChainState], None]
