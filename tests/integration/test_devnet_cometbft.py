"""``parkrelay devnet up`` with ``[relay] engine = "cometbft"`` (issue 17): four relay validators, each with its
``cometbft`` child, on loopback; ``devnet down`` stops every one of them, CometBFT included.

What an operator does: ``devnet up`` (detached processes), ``devnet status``, then ``devnet down``. The relay chain
commits on all four validators with one hash per height, each validator answers the relay RPC as on the built-in
engine, and after ``down`` no ``cometbft`` of the deployment is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relay.chain.abci.cometbft import cometbft_binary
from relay.ops.layout import cometbft_home_path
from tests.integration.harness import REPO, Devnet, free_port_block, status, wait_for
from tests.integration.test_four_phases import DPOS, chain_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not cometbft_binary().exists(),
                       reason=f"no cometbft binary at {cometbft_binary()}: `make setup` builds it"),
]

VALIDATORS = ["op-a", "op-b", "op-c", "op-d"]


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=240, check=False)


def _cometbft_processes(homes: list[Path]) -> list[int]:
    """Pids of running ``cometbft start --home H`` for any of ``homes``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"cometbft") and any(str(h).encode() in argv for h in homes):
            out.append(int(proc.name))
    return out


async def test_devnet_up_runs_four_cometbft_validators_and_down_stops_them(tmp_path: Path) -> None:
    d = Devnet(tmp_path, chains=[{**chain_spec(DPOS), "nodes": ["witness-a"]}], lanes=[],
               relay={"validators": VALIDATORS, "base_port": free_port_block(4), "block_interval_ms": 300,
                      "engine": "cometbft", "cometbft": {"base_port": free_port_block(12)}})
    cfg = d.write()
    homes = [cometbft_home_path(cfg, v) for v in VALIDATORS]
    try:
        up = _cli("devnet", "up", "--config", str(cfg.path))
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]

        async def four_running() -> bool:  # a node answers before its CometBFT child has exec'd (CI: 3 == 4)
            return len(_cometbft_processes(homes)) == 4

        await wait_for("a CometBFT process per validator", four_running, 15)
        keys = json.loads((cfg.data_dir / "cometbft" / "consensus_keys.json").read_text())
        assert sorted(keys) == VALIDATORS and all(len(bytes.fromhex(k)) == 32 for k in keys.values())

        async def committing() -> dict[str, int] | None:
            heights = {}
            for v in VALIDATORS:
                st = await status(cfg.relay_url(v))
                if st is None or st["height"] < 5:
                    return None
                assert st["engine"] == "cometbft"
                heights[v] = int(st["height"])
            return heights

        heights = await wait_for("four validators at height 5", committing, 120)
        hashes = set()
        for v in VALIDATORS:
            async with d.client(cfg.relay_chain_id, v) as c:
                hashes.add((await c.call("getHeader", {"height": min(heights.values())}))["hash"])
                commit = await c.call("getCommit", {"height": 3})
                assert len(commit["signatures"]) >= 3, commit  # more than 2/3 of four relay validators signed
        assert len(hashes) == 1, f"one relay block per height on every validator, got {hashes}"
        st = _cli("devnet", "status", "--config", str(cfg.path))
        assert st.returncode == 0, st.stdout + st.stderr
    finally:
        down = _cli("devnet", "down", "--config", str(cfg.path))
    assert down.returncode == 0, down.stderr

    async def all_gone() -> bool:  # a cometbft SIGTERMed with its validator may take a moment to flush and exit
        return not _cometbft_processes(homes)

    await wait_for("every cometbft of the deployment gone after devnet down", all_gone, 30)
