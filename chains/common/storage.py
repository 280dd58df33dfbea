"""Local storage that fails cleanly (issue 15): SQLite writes as whole transactions, retried a bounded number of
times while another process holds the database locked; files written whole or not at all; and one typed fault,
:class:`StorageFault`, for a write that cannot be done (disk full, an I/O error, a lock that outlasts the retries).

What the services do with a fault (documented for operators in README "Storage faults"):

* **SQLITE_BUSY / SQLITE_LOCKED** (another process holds the database, e.g. an operator's ``sqlite3`` shell in
  ``BEGIN EXCLUSIVE``): the write is retried :data:`BUSY_ATTEMPTS` times, each waiting up to the connection's busy
  timeout, with a log line per retry naming the path (``storage: <path> is locked (...); retry 2/8``). If the lock
  outlasts them, :class:`StorageFault` (``fault="busy"``): the relayer's task backs off and tries again later (its
  writes are idempotent), a node stops.
* **Disk full (SQLITE_FULL, ENOSPC, EDQUOT) and I/O errors (SQLITE_IOERR, EIO, EROFS)**: the transaction is rolled
  back, nothing of it is kept in memory either, and the process stops with one error line naming the path and the
  fault and exit code :data:`EXIT_STORAGE_FAULT` (74, ``EX_IOERR`` of sysexits.h). Restarted once there is space,
  it resumes from what it stored: packets, cursors, blocks and the sign state are each either wholly written or not.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["BUSY_ATTEMPTS", "BUSY_TIMEOUT_S", "EXIT_STORAGE_FAULT", "MIN_FREE_BYTES", "StorageFault", "atomic_write",
           "connect", "fault_of", "free_bytes", "schema_db", "write_tx"]

EXIT_STORAGE_FAULT = 74
"""Exit code of a node or relayer stopped by a storage fault (``EX_IOERR``)."""
BUSY_TIMEOUT_S = 0.5
"""How long one attempt waits for another process's lock (SQLite's busy handler)."""
BUSY_ATTEMPTS = 8
"""Attempts of one write while the database is locked; with the pauses between them about 6 s in all."""
MIN_FREE_BYTES = 64 * 1024
"""Free space under which a write is refused as ``disk_full`` before SQLite is asked (as geth's
``--datadir.minfreedisk``). SQLite writes into the pages of its write-ahead log again after a checkpoint, so on a full
disk a process whose writes are small (a relay validator voting alone, its peers stopped) could go on for ever without
an error: it now stops at its next write like the others."""

_log = logging.getLogger("parkrelay.storage")
T = TypeVar("T")

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_READONLY = 5, 6, 10, 13, 8
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_IO_ERRNOS = {errno.EIO, errno.EROFS}


class StorageFault(Exception):
    """A write that could not be done: ``fault`` is ``disk_full``, ``io_error`` or ``busy``."""

    def __init__(self, path: Path | str, fault: str, detail: str) -> None:
        super().__init__(f"storage fault on {path}: {fault} ({detail})")
        self.path = str(path)
        self.fault = fault
        self.detail = detail

    @property
    def retryable(self) -> bool:
        """Only a lock passes by itself; a full disk or an I/O error needs the operator."""
        return self.fault == "busy"


def fault_of(exc: BaseException) -> str | None:
    """``busy``, ``disk_full`` or ``io_error`` for an exception that is a storage fault; None for anything else."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        msg = str(exc).lower()
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "is locked" in msg or "is busy" in msg:
            return "busy"
        if primary == _SQLITE_FULL or "disk is full" in msg:
            return "disk_full"
        if primary in (_SQLITE_IOERR, _SQLITE_READONLY) or "disk i/o error" in msg:
            return "io_error"
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "disk_full"
        if exc.errno in _IO_ERRNOS:
            return "io_error"
    return None


def connect(path: Path, *, wal: bool = True) -> sqlite3.Connection:
    """A connection for :func:`write_tx`: short busy timeout (the retries are ours, with log lines), WAL, and
    ``synchronous=FULL`` (a committed transaction survives a power cut, which the sign state needs). A fault while
    opening raises :class:`StorageFault`."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        kind = fault_of(exc)
        if kind is None:
            raise
        raise StorageFault(path, kind, str(exc)) from exc
    return conn


def write_tx(conn: sqlite3.Connection, path: Path | str, fn: Callable[[sqlite3.Connection], T], *,
             log: logging.Logger | logging.LoggerAdapter[Any] | None = None, attempts: int = BUSY_ATTEMPTS,
             pause_s: float = 0.25, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``fn(conn)`` in one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``): all of its writes or none.

    A lock held by another process is retried up to ``attempts`` times with a log line each; then, or on a full
    disk or an I/O error, the transaction is rolled back and :class:`StorageFault` raised. Any other exception
    rolls back and propagates unchanged. ``fn`` may run more than once: it must only write (no side effects).
    """
    lg = log or _log
    free = free_bytes(path)
    if free is not None and free < MIN_FREE_BYTES:
        raise StorageFault(path, "disk_full", f"{free} bytes free on its file system, under {MIN_FREE_BYTES}")
    for attempt in range(1, attempts + 1):
        try:
            if conn.in_transaction:  # a statement outside write_tx left one open: it is not ours to keep
                conn.rollback()
            conn.execute("BEGIN IMMEDIATE")
            result = fn(conn)
            conn.commit()
            return result
        except (sqlite3.Error, OSError) as exc:
            _rollback(conn)
            kind = fault_of(exc)
            if kind is None:
                raise
            if kind == "busy" and attempt < attempts:
                lg.warning("storage: %s is locked by another process (%s); retry %d/%d in %.2fs", path, exc,
                           attempt, attempts - 1, pause_s)
                sleep(pause_s)
                continue
            if kind == "busy":
                lg.error("storage: %s still locked after %d attempts; giving up this write", path, attempts)
            raise StorageFault(path, kind, str(exc)) from exc
        except BaseException:
            _rollback(conn)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def free_bytes(path: Path | str) -> int | None:
    """Bytes an unprivileged process may still write on the file system holding ``path`` (None if it cannot tell)."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.rollback()


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644, exclusive: bool = False) -> bool:
    """Write ``path`` whole or not at all: a temporary file beside it, fsync, rename (or, with ``exclusive``, a
    hard link that fails if ``path`` exists: then the existing file is kept and False returned), fsync of the
    directory. A fault raises :class:`StorageFault` and leaves no temporary file and ``path`` as it was."""
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
            tmp = None
        _fsync_dir(path.parent)
        return True
    except OSError as exc:
        kind = fault_of(exc)
        if kind is None:
            raise
        raise StorageFault(path, kind, str(exc)) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_OPTIONAL_OF_SQLITE_UTILS = ("numpy", "pandas")
"""Modules sqlite-utils imports if it finds them, for their column types (which no schema here uses)."""


def schema_db(conn: sqlite3.Connection) -> Any:
    """A ``sqlite_utils.Database`` over ``conn``, for schemas and their migrations.

    sqlite-utils is imported on first use with its optional numpy and pandas integrations hidden: a test install has
    numpy (matplotlib's), and importing it would cost every node and relayer process ~9 MB of memory it never uses.
    They are hidden only while sqlite-utils imports: a later ``import numpy`` elsewhere works as usual."""
    hidden = [] if "sqlite_utils" in sys.modules else [m for m in _OPTIONAL_OF_SQLITE_UTILS if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import sqlite_utils
    finally:
        for m in hidden:
            if sys.modules.get(m, False) is None:
                del sys.modules[m]
    return sqlite_utils.Database(conn)
