"""The relayer stores a pass over many packets in one transaction (one commit, one fsync), and changes its memory
only once that transaction is stored: a scan range's packets and cursor, a path step's finished packets.

Before, every packet tracked, acknowledged and finished was a transaction of its own: under a 10,000-packet backlog
the relayer spent about a third of its time committing (py-spy), its event loop blocked in fsync.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chains.common import storage
from relay.relayer import relayer as relayer_mod
from tests.unit.test_relayer_loop import _client, _Park, _Relay, _relayer, _send_event

N = 300


class _SettledRelay(_Relay):
    """A relay chain that holds an outcome for every packet: each one is finished."""

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        return {k: ("01" if k.startswith("relay/outcome/") else None) for k in keys}


class _SettledPark(_Park):
    """A source that settled every packet (its commitments are gone)."""

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        return {k: None for k in keys}


def _count_transactions(db: sqlite3.Connection) -> list[str]:
    began: list[str] = []
    db.set_trace_callback(lambda sql: began.append(sql) if sql.startswith("BEGIN") else None)
    return began


async def test_a_scan_range_is_one_transaction_with_its_cursor(tmp_path: Path) -> None:
    relay, a, b = _Relay(), _Park("park-a"), _Park("park-b")
    for seq in range(1, N + 1):
        a.events_at.setdefault(1 + seq % a.final, []).append(_send_event("park-a", "park-b", seq, 1 + seq % a.final))
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b})
    began = _count_transactions(r.db)
    await r._scan(r.parks["park-a"])
    assert len(began) == 1
    assert len(r.packets) == N
    assert r.db.execute("SELECT COUNT(*) FROM packets WHERE done = 0").fetchone() == (N,)
    assert r.db.execute("SELECT height FROM cursors WHERE chain = 'park-a'").fetchone() == (a.final,)
    r.db.close()


async def test_a_path_step_finishes_its_packets_in_one_transaction(tmp_path: Path) -> None:
    relay, a, b = _SettledRelay(), _SettledPark("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", seq, 3) for seq in range(1, N + 1)]
    _client(relay, a, 10, 8)
    _client(relay, b, 10, 8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b})
    await r._scan(r.parks["park-a"])
    began = _count_transactions(r.db)
    await r._path_step("park-a", "park-b")
    assert len(began) == 1  # N packets finished and the lane's progress: one commit
    assert r.packets == {} and r.stats.settled == N
    assert r.db.execute("SELECT COUNT(*) FROM packets WHERE done = 1").fetchone() == (N,)
    r.db.close()


@pytest.mark.parametrize("fault", ["busy", "disk_full"])
async def test_a_pass_that_cannot_be_stored_changes_nothing_in_memory(tmp_path: Path, monkeypatch: Any,
                                                                      fault: str) -> None:
    """The commit fails: no packet is tracked that is not stored, none forgotten whose end is not stored, and the
    next pass (the write succeeding again) does the same work."""
    relay, a, b = _SettledRelay(), _SettledPark("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", seq, 3) for seq in range(1, N + 1)]
    _client(relay, a, 10, 8)
    _client(relay, b, 10, 8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b})
    write_tx = storage.write_tx

    def failing(*args: Any, **kw: Any) -> Any:
        raise storage.StorageFault(tmp_path, fault, "test")

    monkeypatch.setattr(relayer_mod.storage, "write_tx", failing)
    with pytest.raises(storage.StorageFault):
        await r._scan(r.parks["park-a"])
    assert r.packets == {}
    monkeypatch.setattr(relayer_mod.storage, "write_tx", write_tx)
    r._stop.clear()
    await r._scan(r.parks["park-a"])
    assert len(r.packets) == N

    monkeypatch.setattr(relayer_mod.storage, "write_tx", failing)
    with pytest.raises(storage.StorageFault):
        await r._path_step("park-a", "park-b")
    assert len(r.packets) == N and r.stats.settled == 0  # still tracked: their end was not stored
    assert r.db.execute("SELECT COUNT(*) FROM packets WHERE done = 0").fetchone() == (N,)
    monkeypatch.setattr(relayer_mod.storage, "write_tx", write_tx)
    await r._path_step("park-a", "park-b")
    assert r.packets == {} and r.stats.settled == N
    assert r.db.execute("SELECT COUNT(*) FROM packets WHERE done = 1").fetchone() == (N,)
    r.db.close()


async def test_a_block_that_raises_drops_its_writes_and_their_effects(tmp_path: Path) -> None:
    r = _relayer(tmp_path, _Relay(), {"park-a": _Park("park-a")})
    effects: list[int] = []
    with pytest.raises(RuntimeError), r._one_transaction():
        r._write(lambda db: db.execute("INSERT INTO cursors VALUES ('park-a', 5)"), after=lambda: effects.append(1))
        raise RuntimeError("a bug in the pass")
    assert effects == [] and r.db.execute("SELECT COUNT(*) FROM cursors").fetchone() == (0,)
    with r._one_transaction():
        r._write(lambda db: db.execute("INSERT INTO cursors VALUES ('park-a', 5)"), after=lambda: effects.append(1))
        with r._one_transaction():  # nested: the outer block commits
            r._write(lambda db: db.execute("INSERT INTO cursors VALUES ('park-b', 6)"), after=lambda: effects.append(2))
        assert effects == [] and r.db.execute("SELECT COUNT(*) FROM cursors").fetchone() == (0,)
    assert effects == [1, 2] and r.db.execute("SELECT COUNT(*) FROM cursors").fetchone() == (2,)
    r.db.close()
