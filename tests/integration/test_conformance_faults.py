"""The conformance runner's fault scenarios as an operator plays them (opt-in: ``PARKRELAY_CONFORMANCE_FAULTS=1``; about
3 minutes on 2 cores, so ``make test`` leaves it out — the same faults run per pair of kinds in test_four_phases.py).

A DPoS <-> PoC devnet brought up with ``parkrelay devnet up`` (detached, recorded in ``pids.json``), its relayers
stopped so the runner may run and kill its own, then ``parkrelay conformance run`` with the relayer SIGKILLed after
each phase, two relayers racing, a relay validator down and back, and a node of each park SIGKILLed and restarted:
each passes, and ``devnet down`` stops everything, the processes the runner restarted included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.harness import REPO, Devnet, free_port_block, status, wait_for
from tests.integration.test_four_phases import DPOS, LANE, POC, chain_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(not os.environ.get("PARKRELAY_CONFORMANCE_FAULTS"),
                                 reason="opt-in: PARKRELAY_CONFORMANCE_FAULTS=1 (about 3 minutes)")]


def _cli(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay.cli", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)


async def test_fault_scenarios_on_a_devnet_brought_up_by_the_operator(tmp_path: Path) -> None:
    d = Devnet(tmp_path, chains=[chain_spec(DPOS), chain_spec(POC)], lanes=[{"lane": LANE, "a": DPOS, "b": POC}],
               relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                      "block_interval_ms": 300},
               relayers=["relayer-a", "relayer-b"], relayer_options={"heartbeat_s": 1.0})
    cfg = d.write()
    config = str(cfg.path)
    pids_file = cfg.data_dir / "pids.json"
    try:
        up = _cli("devnet", "up", "--config", config, timeout=300)
        assert up.returncode == 0, up.stderr[-3000:]
        # the operator stops the deployment's relayers: the runner runs (and kills) its own
        pids = json.loads(pids_file.read_text())
        for key in [k for k in pids if k.startswith("relayer/")]:
            os.kill(pids.pop(key), signal.SIGTERM)
        pids_file.write_text(json.dumps(pids))

        async def ready() -> bool:
            for url in (cfg.relay_url("op-a"), cfg.chain(DPOS).url_of("witness-a"), cfg.chain(POC).url_of("farmer-a")):
                st = await status(url)
                if st is None or st["final_height"] < 2:
                    return False
            return True

        await wait_for("every chain finalising", ready, 180)
        junit = tmp_path / "faults.xml"
        run = _cli("conformance", "run", "--config", config, "--scenarios",
                   "relayer-sigkill,relayers-racing,relay-validator-down,park-node-sigkill", "--junit", str(junit),
                   "--json")
        assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
        out = json.loads(run.stdout)
        assert out["counts"] == {"passed": 4, "failed": 0, "skipped": 0}, out
        events = {r["scenario"]: r["events"] for r in out["results"]}
        assert sum("SIGKILLed" in e for e in events["relayer-sigkill"]) == 3, events
        assert any(e.startswith("relay/op-d") and "SIGKILLed" in e for e in events["relay-validator-down"]), events
        assert any("caught up" in e for e in events["relay-validator-down"]), events
        killed = [e for e in events["park-node-sigkill"] if "SIGKILLed" in e]
        assert [e.split(" ")[0] for e in killed] == [f"{DPOS}/witness-c", f"{POC}/farmer-b"], events
        # restarted nodes are the deployment's again: `devnet down` knows them
        pids = json.loads(pids_file.read_text())
        assert all(f"pid {pids[k]}" in " ".join(events["park-node-sigkill"] + events["relay-validator-down"])
                   for k in (f"{DPOS}/witness-c", f"{POC}/farmer-b", "relay/op-d"))
        root = ET.parse(junit).getroot()  # noqa: S314 - the report this test had written
        assert len(list(root.iter("testcase"))) == 4 + 3 and not list(root.iter("failure"))
    finally:
        down = _cli("devnet", "down", "--config", config, timeout=120)
        assert down.returncode == 0, down.stderr
