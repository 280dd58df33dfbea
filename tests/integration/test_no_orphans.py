"""No orphans (issue 9): when whatever started a devnet is SIGKILLed, every process it started dies with it.

A parent process starts a small devnet through the real code paths — a DPoS witness, an Ethereum park node
with its anvil (a grandchild), a Fabric park's supervisor with its orderer, peers and chaincode servers
(grandchildren), a relay validator and a relayer — once as ``parkrelay devnet demo`` (the CLI)
and once as a test harness / benchmark does (``tests.integration.harness.Devnet`` plus a relayer). Once
every role runs, the parent is SIGKILLed (no ``finally``, no signal handler runs) and ``/proc`` is polled,
with a deadline, until none of its descendants runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from chains.ethereum.anvil import AnvilError, find_anvil, free_port
from relay.ops.config import load_config
from tests.integration.harness import REPO, descendants, free_port_block, still_running, wait_all_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DPOS, ETH, FABRIC = "dpos-park", "eth-park", "fabric-park"
ROLES = {"dpos node": "node dpos", "ethereum node": "node ethereum", "relay validator": "node relay",
         "relayer": "relayer start", "anvil": "--state-interval", "fabric supervisor": "node fabric",
         "fabric orderer": "/bin/orderer", "fabric peer": "peer node start",
         "fabric chaincode server": "chains.fabric.chaincode.server"}
"""Each role the devnet must be running before the kill, by a piece of its command line."""

HARNESS_PARENT = """
import signal, subprocess, sys
from pathlib import Path
from chains.common.procs import spawn
from relay.ops.config import load_config
from tests.integration.harness import Devnet
cfg = load_config(Path(sys.argv[1]))
d = Devnet(cfg.path.parent, chains=[])
d.cfg = cfg
d.start_all()
log = open(cfg.data_dir / "logs" / "relayer-relayer-a.log", "ab")
spawn([sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(cfg.path), "--name", "relayer-a"],
      stdout=log, stderr=subprocess.STDOUT)
signal.pause()
"""


def _write_config(root: Path) -> Path:
    doc = {
        "deployment": {"data_dir": str(root / "data")},
        "chains": [
            {"id": DPOS, "kind": "dpos", "nodes": ["witness-a"], "base_port": free_port_block(1),
             "block_interval_ms": 1000, "accounts": {"alice": 10**9, "operator": 0}},
            {"id": ETH, "kind": "ethereum", "base_port": free_port(), "accounts": {"bob": 10**9}},
            {"id": FABRIC, "kind": "fabric", "base_port": free_port_block(12), "accounts": {"gina": 10**9}},
        ],
        "lanes": [{"lane": "lane-0", "a": ETH, "b": DPOS}, {"lane": "lane-1", "a": FABRIC, "b": DPOS}],
        "relay": {"validators": ["op-a"], "base_port": free_port_block(1)},
        "relayers": {"names": ["relayer-a"]},
    }
    path = root / "devnet.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def _roles_running(pid: int) -> tuple[dict[int, tuple[int, int, str]], dict[str, int]]:
    procs = descendants(pid)
    cmdlines = still_running(procs)
    found = {role: p for role, needle in ROLES.items() for p, cmd in cmdlines.items() if needle in cmd}
    return procs, found


@pytest.mark.parametrize("parent_kind", ["devnet-demo", "harness"])
def test_killing_the_parent_kills_every_descendant(tmp_path: Path, parent_kind: str) -> None:
    try:
        find_anvil()
    except AnvilError as exc:
        pytest.skip(f"anvil not installed: {exc}")
    path = _write_config(tmp_path)
    cfg = load_config(path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    if parent_kind == "devnet-demo":
        argv = [sys.executable, "-m", "relay.cli", "devnet", "demo", "--config", str(path), "--seconds", "600"]
    else:
        from relay.ops import devnet

        devnet.init(cfg)
        argv = [sys.executable, "-c", HARNESS_PARENT, str(path)]
    out = open(tmp_path / "parent.log", "wb")
    # deliberately not spawn(): this test kills the parent itself, and what the parent started is under test
    parent = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
    procs: dict[int, tuple[int, int, str]] = {}
    try:
        deadline = time.monotonic() + 180
        found: dict[str, int] = {}
        while time.monotonic() < deadline and parent.poll() is None:
            procs, found = _roles_running(parent.pid)
            if set(found) == set(ROLES):
                break
            time.sleep(0.2)
        logs = sorted((cfg.data_dir / "logs").glob("*.log")) if (cfg.data_dir / "logs").exists() else []
        assert set(found) == set(ROLES), (
            f"roles running: {sorted(found)} of {sorted(ROLES)} (parent exit {parent.poll()})\n"
            + (tmp_path / "parent.log").read_text(errors="replace")[-2000:]
            + "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-1500:] for p in logs))
        anvil = found["anvil"]
        assert procs[anvil] and anvil not in descendants(found["relay validator"])  # a grandchild, via the eth node
        assert anvil in descendants(found["ethereum node"])
        fabric = descendants(found["fabric supervisor"])  # Fabric's own processes, under the park's supervisor
        assert {found[r] for r in ("fabric orderer", "fabric peer", "fabric chaincode server")} <= set(fabric)

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        left = wait_all_gone(procs, timeout_s=60)
        assert left == {}, f"orphans after the parent was SIGKILLed: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        out.close()
        for pid in still_running(procs):  # a failed run must not leave its devnet behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
