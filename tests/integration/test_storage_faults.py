"""Storage faults on real processes (issue 15): the nodes' and the relayer's databases on small tmpfs mounts.

One devnet (DPoS and PoC parks, four relay validators, one relayer) whose ``<data_dir>/db`` (every node's blocks and
every validator's sign state) and ``<data_dir>/relayers`` are tmpfs mounts the test makes (root only; skipped
elsewhere). Filled up, every node and the relayer stop with exit code 74 and a log line naming the path and the
fault; a second process holding ``BEGIN EXCLUSIVE`` on the relayer's database makes it retry with a log line and go
on. After each fault clears (the filler removed, the processes started again) every packet completes exactly once
and the standard checks hold: nothing non-final, escrow at home == vouchers on the other park.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.common.procs import spawn
from chains.common.storage import EXIT_STORAGE_FAULT
from tests.integration.harness import Devnet, free_port_block, wait_for
from tests.integration.test_four_phases import DPOS, LANE, POC, RELAY, Net, chain_spec, voucher, wait_ready
from tests.unit.test_storage import disk_full

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RELAYER = "relayer-a"
LOCKER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
c.execute("COMMIT")
"""
"""A second process that holds an exclusive lock on a database until its stdin closes."""


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    assert not any(path.iterdir()), f"{path} is not empty: a mount would hide it"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture(scope="module")
def fault_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    d = Devnet(tmp_path_factory.mktemp("storage-faults"), chains=[chain_spec(DPOS), chain_spec(POC)],
               lanes=[{"lane": LANE, "a": DPOS, "b": POC}],
               relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                      "block_interval_ms": 300},
               relayers=[RELAYER], relayer_options={"heartbeat_s": 1.0})
    cfg = d.write()
    mounts = []
    try:
        for sub, size in (("db", "64m"), ("relayers", "8m")):
            _mount(cfg.data_dir / sub, size)
            mounts.append(cfg.data_dir / sub)
        d.start_all()
        n = Net(d, DPOS, POC)
        try:
            yield n
        finally:
            n.stop_relayers()
            d.stop_all()
    finally:
        for m in mounts:
            subprocess.run(["umount", "-l", str(m)], check=False)


def _log(net: Net, name: str) -> str:
    return (net.cfg.data_dir / "logs" / f"{name}.log").read_text(errors="replace")


def _nodes(net: Net) -> list[tuple[str, str]]:
    return [(c, n) for c in (DPOS, POC) for n in net.cfg.chain(c).nodes] + \
        [(RELAY, v) for v in net.cfg.relay_validators]


async def _exits(net: Net, procs: dict[str, subprocess.Popen[bytes]], timeout_s: float) -> dict[str, int]:
    async def all_exited() -> dict[str, int] | None:
        codes = {name: p.poll() for name, p in procs.items()}
        return codes if all(c is not None for c in codes.values()) else None  # type: ignore[return-value]

    result: dict[str, int] = await wait_for(f"{sorted(procs)} stopped", all_exited, timeout_s, poll_s=0.5)
    return result


async def _transfers_complete_once(net: Net, n: int = 2) -> None:
    """``n`` transfers each way complete; each sender paid once and each receiver got its vouchers once."""
    before = {(c, d): await net.balance(c, d) for c in (DPOS, POC) for d in ("kWh", voucher(net.other(c)))}
    keys = [await net.send(c, 100 + i) for c in (DPOS, POC) for i in range(n)]
    rows = await net.wait_final(keys, timeout_s=240)
    assert {r["state"] for r in rows.values()} == {"completed"}, rows
    paid = sum(100 + i for i in range(n))
    for c in (DPOS, POC):
        assert await net.balance(c, "kWh") == before[(c, "kWh")] - paid
        assert await net.balance(c, voucher(net.other(c))) == before[(c, voucher(net.other(c)))] + paid
    await net.check_invariants()


async def test_nodes_on_a_full_disk_exit_74_and_resume_from_what_they_stored(fault_net: Net) -> None:
    """Every park node and relay validator shares the full ``db`` mount: each stops at its next write (a block, a sign
    state) with exit code 74 and a line naming its database; started again once there is space, the chains go on
    from their stored heads, the relay from its stored sign states, and transfers complete once."""
    net = await wait_ready(fault_net)
    net.start_relayer(RELAYER)
    await _transfers_complete_once(net, 1)
    heads = {c: (await asyncio.to_thread(net.views[c].status))["height"] for c in (DPOS, POC)}
    with disk_full(net.cfg.data_dir / "db"):
        codes = await _exits(net, {f"{c}-{n}": net.d.procs[(c, n)] for c, n in _nodes(net)}, 180)
        assert set(codes.values()) == {EXIT_STORAGE_FAULT}, codes
        for c, n in _nodes(net):
            log = _log(net, f"{c}-{n}")
            db = net.cfg.data_dir / "db" / f"{c}-{n}.sqlite3"
            assert f"storage fault on {db}: disk_full" in log, (c, n, log[-2000:])
            net.d.procs.pop((c, n))
    for c, n in _nodes(net):
        net.d.start(c, n)
    await wait_ready(net)
    for c in (DPOS, POC):  # nothing a node had stored is lost: it went on from there
        assert (await asyncio.to_thread(net.views[c].status))["height"] >= heads[c]
    await _transfers_complete_once(net)


async def test_a_relayer_retries_a_locked_database_and_exits_74_on_a_full_disk_then_resumes(fault_net: Net) -> None:
    net = await wait_ready(fault_net)
    if RELAYER not in net.relayers:
        net.start_relayer(RELAYER)
    db = net.cfg.data_dir / "relayers" / f"{RELAYER}.sqlite3"
    await wait_for("the relayer's database", lambda: asyncio.sleep(0, db.exists()), 30)
    log_name = f"relayer-{RELAYER}"
    # another process holds the database exclusively while packets arrive: the relayer retries, logs it, goes on
    locker = spawn([sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert locker.stdout is not None and locker.stdin is not None
    try:
        assert locker.stdout.readline() == b"locked\n"
        keys = [await net.send(DPOS, 7), await net.send(POC, 8)]
        await wait_for("a retry line", lambda: asyncio.sleep(0, f"storage: {db} is locked by another process"
                                                             in _log(net, log_name)), 60)
    finally:
        locker.stdin.close()
        locker.wait(timeout=10)
    rows = await net.wait_final(keys, timeout_s=240)
    assert {r["state"] for r in rows.values()} == {"completed"}, rows
    assert net.relayers[RELAYER].poll() is None, "a lock must not stop the relayer"
    # its disk full: the relayer stops with 74 at its next write; started again with space, it finishes the packets
    with disk_full(net.cfg.data_dir / "relayers"):
        keys = [await net.send(DPOS, 9), await net.send(POC, 10)]
        code = await asyncio.to_thread(net.relayers[RELAYER].wait, 180)
        assert code == EXIT_STORAGE_FAULT, _log(net, log_name)[-3000:]
        assert f"storage fault on {db}: disk_full" in _log(net, log_name)
        net.relayers.pop(RELAYER)
    net.start_relayer(RELAYER)
    rows = await net.wait_final(keys, timeout_s=240)
    assert {r["state"] for r in rows.values()} == {"completed"}, rows
    await _transfers_complete_once(net, 1)
