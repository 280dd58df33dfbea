"""Storage faults on the write paths (issue 15), with real faults: a full disk is a small tmpfs filled up (we mount
one; skipped where mounting is not allowed), a lock is a second connection holding ``BEGIN EXCLUSIVE``.

Each write is whole or absent: SQLite transactions (the relayer's packets and cursors, a node's blocks, a relay
validator's sign state) and files (write, fsync, rename). A lock is retried a bounded number of times with a log
line; a full disk stops the relayer or node with exit code 74, keeping nothing in memory it could not store, and a
restart after the disk is freed resumes from what was stored.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.common import storage
from chains.common.storage import EXIT_STORAGE_FAULT, StorageFault, atomic_write, fault_of, write_tx
from protocol.crypto import Ed25519Signer
from tests.unit.test_node_runtime import _node, _produce
from tests.unit.test_relayer_loop import _Park, _Relay, _relayer, _send_event


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only: skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@contextlib.contextmanager
def disk_full(mnt: Path) -> Iterator[None]:
    """Fill ``mnt`` to the last page with a file (ENOSPC for the next write that needs space); freed on exit."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    try:
        yield
    finally:
        filler.unlink()


def test_fault_of_names_each_storage_fault_and_nothing_else() -> None:
    assert fault_of(OSError(errno.ENOSPC, "No space left on device")) == "disk_full"
    assert fault_of(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk_full"
    assert fault_of(OSError(errno.EIO, "Input/output error")) == "io_error"
    assert fault_of(OSError(errno.ENOENT, "No such file")) is None
    assert fault_of(sqlite3.OperationalError("database is locked")) == "busy"
    assert fault_of(sqlite3.OperationalError("database or disk is full")) == "disk_full"
    assert fault_of(sqlite3.OperationalError("disk I/O error")) == "io_error"
    assert fault_of(sqlite3.OperationalError("no such table: x")) is None
    assert fault_of(ValueError("database is locked")) is None


def _db(path: Path) -> sqlite3.Connection:
    conn = storage.connect(path)
    write_tx(conn, path, lambda db: db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB)"))
    return conn


def test_a_lock_held_by_another_connection_is_retried_with_a_log_line_then_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.sqlite3"
    conn = _db(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    pauses: list[float] = []

    def pause(s: float) -> None:
        pauses.append(s)
        if len(pauses) == 3:
            locker.execute("COMMIT")  # the other process lets go during the third pause

    with caplog.at_level(logging.WARNING):
        write_tx(conn, path, lambda db: db.execute("INSERT INTO t VALUES ('a', x'01')"), sleep=pause)
    assert len(pauses) == 3
    lines = [r.getMessage() for r in caplog.records if "is locked by another process" in r.getMessage()]
    assert len(lines) == 3 and str(path) in lines[0] and "retry 1/" in lines[0], lines
    assert conn.execute("SELECT k FROM t").fetchall() == [("a",)]


def test_a_lock_that_outlasts_the_retries_is_a_retryable_fault_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    conn = _db(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")

    def both(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES ('a', x'01')")
        db.execute("INSERT INTO t VALUES ('b', x'02')")

    with pytest.raises(StorageFault) as info:
        write_tx(conn, path, both, attempts=3, sleep=lambda s: None)
    assert info.value.fault == "busy" and info.value.retryable and str(path) in str(info.value)
    locker.execute("COMMIT")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not conn.in_transaction
    write_tx(conn, path, both)  # the connection is usable again
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_full_disk_rolls_back_the_whole_transaction(small_fs: Path) -> None:
    path = small_fs / "s.sqlite3"
    conn = _db(path)
    write_tx(conn, path, lambda db: db.execute("INSERT INTO t VALUES ('before', x'00')"))

    def two_rows(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO t VALUES ('small', x'01')")
        db.execute("INSERT INTO t VALUES ('large', ?)", (os.urandom(200_000),))

    with disk_full(small_fs):
        with pytest.raises(StorageFault) as info:
            write_tx(conn, path, two_rows)
        assert info.value.fault == "disk_full" and not info.value.retryable
        assert [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")] == ["before"]
    write_tx(conn, path, two_rows)  # space again: the same write goes through whole
    assert [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")] == ["before", "large", "small"]
    conn.close()
    reopened = sqlite3.connect(path)
    assert reopened.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(small_fs: Path) -> None:
    path = small_fs / "genesis.json"
    assert atomic_write(path, '{"v": 1}')
    with disk_full(small_fs):
        with pytest.raises(StorageFault) as info:
            atomic_write(path, "x" * 300_000)
        assert info.value.fault == "disk_full" and str(path) in str(info.value)
        assert path.read_text() == '{"v": 1}'
        assert sorted(p.name for p in small_fs.iterdir()) == ["filler", "genesis.json"]
    assert atomic_write(path, "x" * 300_000)
    assert path.read_text() == "x" * 300_000
    assert not atomic_write(path, "other", exclusive=True)  # no clobbering where the caller keeps what exists
    assert path.read_text() == "x" * 300_000
    key = small_fs / "key"
    assert atomic_write(key, "secret", mode=0o600, exclusive=True)
    assert key.stat().st_mode & 0o777 == 0o600


async def test_a_relayer_on_a_full_disk_stops_tracks_nothing_it_did_not_store_and_resumes(small_fs: Path) -> None:
    relay, a, b = _Relay(), _Park("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", 1, 3)]
    r = _relayer(small_fs, relay, {"park-a": a, "park-b": b})
    with disk_full(small_fs):
        with pytest.raises(StorageFault):
            await r._scan(r.parks["park-a"])
        assert r.fault is not None and r.fault.fault == "disk_full" and r._stop.is_set()
        assert r.packets == {}  # not held in memory: it was not stored
        row = r.db.execute("SELECT height FROM cursors WHERE chain = 'park-a'").fetchone()
        assert row is None  # nor the cursor past it
    r.db.close()
    again = _relayer(small_fs, relay, {"park-a": a, "park-b": b})
    await again._scan(again.parks["park-a"])
    assert list(again.packets) == ["park-a/park-b/lane-0/1"] and again.fault is None
    assert again.db.execute("SELECT height FROM cursors WHERE chain = 'park-a'").fetchone() == (a.final,)


async def test_a_relayer_exits_74_when_its_database_cannot_be_opened(small_fs: Path) -> None:
    """``build_relayer`` on a full disk: no traceback, the fault named, exit code 74."""
    relay, a = _Relay(), _Park("park-a")
    with disk_full(small_fs), pytest.raises(StorageFault) as info:
        _relayer(small_fs, relay, {"park-a": a})
    assert info.value.fault in ("disk_full", "io_error")
    assert EXIT_STORAGE_FAULT == 74


def test_a_node_on_a_full_disk_stops_and_keeps_no_block_it_could_not_store(small_fs: Path) -> None:
    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(small_fs, alice)
    first = _produce(node)
    with disk_full(small_fs):
        with pytest.raises(StorageFault):
            for _ in range(50):  # until the WAL needs a page the disk has not got
                _produce(node)
        assert node.failed.is_set() and node.exit_code == EXIT_STORAGE_FAULT
        head = node.head
        assert all(e.hash in node.blocks for e in [first, head])
        assert len(node.blocks) == head.header.height + 1  # genesis and each stored block, nothing more
    node.db.close()
    again = _node(small_fs, alice)  # restarted: the blocks it stored, the same head
    assert again.head.hash == head.hash
    assert _produce(again).header.height == head.header.height + 1


def test_a_sign_state_that_cannot_be_stored_stops_the_validator_before_it_sends(
        small_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay validator's driver: a ``PersistSignState`` whose write fails raises before the ``Broadcast`` after
    it is handled (nothing signed under an unstored record leaves the process), the node stops, and the record
    stored before is intact."""
    from relay.chain.consensus.bft import Broadcast, PersistSignState
    from relay.chain.consensus.sign_state import SignState, SignStep
    from relay.chain.node import BftDriver

    alice = Ed25519Signer(hashlib.sha256(b"test-only alice").digest())
    node = _node(small_fs, alice)
    driver = BftDriver.__new__(BftDriver)
    driver.node = node
    driver.log = logging.LoggerAdapter(logging.getLogger("test"), {})
    node.write(lambda db: db.execute(
        "CREATE TABLE IF NOT EXISTS sign_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT)"))
    monkeypatch.setattr("relay.chain.node.encode_message", lambda msg: b"signed")
    sent: list[object] = []
    node._spawn = lambda coro: (sent.append(coro), coro.close())  # type: ignore[method-assign, func-returns-value]
    s1 = SignState().signed(5, 0, SignStep.PREVOTE, b"\x01" * 32)
    driver._handle([PersistSignState(s1), Broadcast(object())])  # type: ignore[arg-type]
    assert len(sent) == 1
    with disk_full(small_fs):
        with pytest.raises(StorageFault):
            for r in range(1, 200):  # each record a new WAL frame: until one does not fit
                driver._handle([PersistSignState(s1.signed(5, r, SignStep.PREVOTE, bytes([r % 256]) * 32)),
                                Broadcast(object())])  # type: ignore[arg-type]
        assert node.failed.is_set() and node.exit_code == EXIT_STORAGE_FAULT
    stored = node.db.execute("SELECT state FROM sign_state WHERE id = 1").fetchone()[0]
    last = SignState.from_json(stored)  # whole: it parses, and it is the record of the last message sent
    assert len(sent) == last.round + 1


def test_a_small_write_on_a_full_disk_is_refused_even_where_sqlite_could_reuse_its_log(small_fs: Path) -> None:
    """After a checkpoint SQLite writes into its write-ahead log's pages again, so on a full disk small writes would
    go on succeeding (a relay validator voting alone never stopped); under MIN_FREE_BYTES free, a write is refused."""
    path = small_fs / "w.sqlite3"
    conn = storage.connect(path)
    write_tx(conn, path, lambda db: db.execute("CREATE TABLE t (x BLOB)"))
    for _ in range(4):  # grow the log, then checkpoint it: its pages are free for reuse
        write_tx(conn, path, lambda db: db.execute("INSERT INTO t VALUES (?)", (os.urandom(60_000),)))
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    with disk_full(small_fs):
        assert (storage.free_bytes(path) or 0) < storage.MIN_FREE_BYTES
        with pytest.raises(StorageFault) as info:
            write_tx(conn, path, lambda db: db.execute("INSERT INTO t VALUES (?)", (b"small",)))
        assert info.value.fault == "disk_full" and not info.value.retryable
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 4  # nothing of it written
    write_tx(conn, path, lambda db: db.execute("INSERT INTO t VALUES (?)", (b"small",)))  # space again: it goes on
    conn.close()


_SCHEMA_DB_IMPORTS = """
import sqlite3, sys
from chains.common import storage
db = storage.schema_db(sqlite3.connect(":memory:"))
db["t"].create({"k": str, "v": int}, pk="k")
db["t"].insert({"k": "a", "v": 1})
loaded_with = "numpy" in sys.modules
import numpy  # hidden only while sqlite-utils imported
print(loaded_with, db["t"].count, numpy.int64(3) + 1)
"""


def test_schema_db_imports_sqlite_utils_without_numpy_and_numpy_stays_importable() -> None:
    # numpy is in a test install (matplotlib's); sqlite-utils would import it for column types no schema here uses
    out = subprocess.run([sys.executable, "-c", _SCHEMA_DB_IMPORTS], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["False", "1", "4"]
