"""``parkrelay doctor`` on a real devnet (issue 14): a healthy devnet passes, then each problem is caused on purpose
and the doctor must name it, with a fix: a lane paused by governance, a key file opened to others, a relayer stopped
with a packet waiting, a witness whose clock runs ahead (libfaketime under its process), a node killed, and a light
client frozen by forged conflicting finality.

One devnet for the module (:mod:`tests.integration.operator_devnet`: two one-witness DPoS parks, four relay
validators, one relayer); the tests run in file order and each puts back what it broke, except the last (a frozen
client stays frozen).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.common.procs import spawn
from relay.ops.doctor import Check, DoctorOptions, diagnose
from relay.ops.layout import relay_key_paths
from tests.integration.harness import REPO
from tests.integration.operator_devnet import (
    LANE,
    PARK_A,
    PARK_B,
    OperatorNet,
    freeze_dpos_client,
    operator_devnet,
    run,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNet]:
    with operator_devnet(tmp_path_factory.mktemp("doctor")) as n:
        n.ready()
        yield n


def doctor(net: OperatorNet, **opts: Any) -> dict[str, Check]:
    """The doctor's checks by name, run in process (the same code as the command)."""
    report = run(diagnose(net.cfg, DoctorOptions(**opts)))
    assert report.exit_code == (0 if all(c.status == "ok" for c in report.checks) else 1)
    return {c.name: c for c in report.checks}


def cli(net: OperatorNet, *args: str) -> tuple[int, dict[str, Any]]:
    """``parkrelay doctor --json`` as a process: its exit code and its JSON."""
    out = subprocess.run([sys.executable, "-m", "relay.cli", "doctor", "--config", str(net.cfg.path), "--json",
                          *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def problems(checks: dict[str, Check]) -> dict[str, Check]:
    return {n: c for n, c in checks.items() if c.status != "ok"}


def test_a_healthy_devnet_passes(net: OperatorNet) -> None:
    code, report = cli(net, "--api", net.validator_api, "--api", net.relayer_api)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0 and report["ok"], [c for c in report["checks"] if c["status"] != "ok"]
    assert all(c["status"] == "ok" for c in report["checks"])
    expected = {"keys", "admin-token", "ports", "clock", "node/park-a/wa-1", "node/park-b/wb-1",
                *(f"node/relay/{v}" for v in ("op-a", "op-b", "op-c", "op-d")),
                "finality/relay", "finality/park-a", "finality/park-b", "client/park-a", "client/park-b",
                f"lane/{PARK_A}->{PARK_B}/{LANE}", f"lane/{PARK_B}->{PARK_A}/{LANE}",
                f"backlog/{PARK_A}->{PARK_B}/{LANE}", f"backlog/{PARK_B}->{PARK_A}/{LANE}", "relayer/relayer-a",
                f"api/{net.validator_api}", f"api/{net.relayer_api}"}
    assert expected <= set(checks), expected - set(checks)
    assert "its API at" in checks["relayer/relayer-a"]["detail"]
    assert "relayer relayer-a" in checks[f"api/{net.relayer_api}"]["detail"]
    # without --api the relayer is found among this host's processes
    found = doctor(net)["relayer/relayer-a"]
    assert found.status == "ok" and found.detail.startswith("running (pid ") and "on this host)" in found.detail


def test_a_paused_lane(net: OperatorNet) -> None:
    path = f"/api/v1/lanes/{PARK_B}/{PARK_A}/{LANE}"
    status, body = net.post(path + "/pause", token=net.token)
    assert status == 200, body
    try:
        found = problems(doctor(net))
        lane = found.pop(f"lane/{PARK_B}->{PARK_A}/{LANE}")
        assert lane.status == "warn" and "paused (governance)" in lane.detail
        assert f"{path}/resume" in lane.fix
        assert not found, found  # the paused direction only
    finally:
        status, body = net.post(path + "/resume", token=net.token)
        assert status == 200, body


def test_a_key_file_open_to_others(net: OperatorNet) -> None:
    key = relay_key_paths(net.cfg, "op-d")[0]
    key.chmod(0o644)
    try:
        found = problems(doctor(net))
        keys = found.pop("keys")
        assert keys.status == "fail" and f"{key} (644)" in keys.detail and "1 of" in keys.detail
        assert f"chmod 600 {key}" in keys.fix
        assert not found, found
    finally:
        key.chmod(0o600)


def test_a_stopped_relayer_with_a_backlog(net: OperatorNet, monkeypatch: pytest.MonkeyPatch) -> None:
    net.stop_relayer("relayer-a")
    try:
        key = net.transfer(PARK_A, 1_000)
        net.wait("the packet waiting 2 s", lambda: _age_s(net, key) > 2.5, 30, 0.2)
        code, report = cli(net, "--stuck-after-s", "2")
        checks = {c["name"]: c for c in report["checks"]}
        assert code == 1 and not report["ok"]
        relayer = checks["relayer/relayer-a"]
        assert relayer["status"] == "fail" and relayer["detail"].startswith("not running on this host")
        assert "parkrelay relayer start" in relayer["fix"] and "--name relayer-a" in relayer["fix"]
        backlog = checks[f"backlog/{PARK_A}->{PARK_B}/{LANE}"]
        assert backlog["status"] == "fail", backlog
        assert f"1 in flight; oldest {key}" in backlog["detail"] and "verify on the relay chain" in backlog["detail"]
        assert "relayer" in backlog["fix"]
        assert checks[f"backlog/{PARK_B}->{PARK_A}/{LANE}"]["status"] == "ok"
        # a history too long to read within the budget (here: 5 blocks a refresh, one refresh): the doctor says it
        # read in part, and with --api of a running operator API it judges the API's complete index instead
        monkeypatch.setattr("relay.ops.api.backend.MAX_EVENT_BLOCKS_PER_REFRESH", 5)
        partial = doctor(net, stuck_after_s=2.0, index_budget_s=0.001)[f"backlog/{PARK_A}->{PARK_B}/{LANE}"]
        assert partial.status == "warn" and "events read in part" in partial.detail, partial
        via_api = doctor(net, stuck_after_s=2.0, index_budget_s=0.001, apis=(net.validator_api,))
        backlog_api = via_api[f"backlog/{PARK_A}->{PARK_B}/{LANE}"]
        assert backlog_api.status == "fail" and f"oldest {key}" in backlog_api.detail, backlog_api
        assert f"as the API at {net.validator_api} reads them" in backlog_api.detail
    finally:
        net.start_relayer("relayer-a")
    net.wait("the packet settled", lambda: net.packet(key)["state"] == "completed", 60)


def _age_s(net: OperatorNet, key: str) -> float:
    committed = net.packet(key).get("committed_ms")
    return (time.time() * 1000 - committed) / 1000 if committed else 0.0


def _restart_witness(net: OperatorNet, env: dict[str, str] | None = None) -> None:
    """Park B's only witness stopped (SIGTERM) and started again, under ``env`` if given."""
    d, cfg = net.d, net.cfg
    d.kill(PARK_B, "wb-1", signal.SIGTERM)
    log = open(cfg.data_dir / "logs" / f"{PARK_B}-wb-1.log", "ab")
    d.procs[(PARK_B, "wb-1")] = spawn(
        [sys.executable, "-m", "relay.cli", "--log-level", "info", "node", "dpos", "--config", str(cfg.path),
         "--chain", PARK_B, "--witness", "wb-1"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _head_ahead_ms(net: OperatorNet) -> int:
    from relay.ops.parks import rpc

    st = rpc(net.cfg.chain(PARK_B).url_of("wb-1"), "status", timeout=1.0)
    return int(st["timestamp_ms"]) - int(time.time() * 1000)


@pytest.mark.skipif(not FAKETIME_LIB.exists(), reason="libfaketime is not installed (make setup installs it)")
def test_a_witness_clock_ahead(net: OperatorNet) -> None:
    # the witness's own process lives 3 s in the future (libfaketime shifts its wall clock; monotonic time is
    # left alone), as on a host whose NTP is broken: it stamps and makes each slot's block 3 s early
    _restart_witness(net, {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": "+3s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                           "FAKETIME_NO_CACHE": "1"})
    net.wait("park B's blocks stamped ahead", lambda: _head_ahead_ms(net) > 1500, 30, 0.2)
    found = problems(doctor(net))
    clock = found.pop(f"clock/{PARK_B}/wb-1")
    assert clock.status == "fail" and "before their timestamps" in clock.detail, clock
    assert "wb-1's clock is about" in clock.detail and "ahead of this host's" in clock.detail
    assert "NTP" in clock.fix
    assert not any(n.startswith("clock") for n in found), found


def test_a_killed_node(net: OperatorNet) -> None:
    net.d.kill(PARK_B, "wb-1", signal.SIGKILL)
    try:
        found = problems(doctor(net, window_s=3.0))
        node = found.pop(f"node/{PARK_B}/wb-1")
        assert node.status == "fail" and node.detail.startswith("does not answer at http://127.0.0.1:"), node
        assert "connection refused: nothing listens there" in node.detail
        assert "--witness wb-1" in node.fix and f"{PARK_B}-wb-1.log" in node.fix
        finality = found.pop(f"finality/{PARK_B}")
        assert finality.status == "fail" and "no node of the chain answered" in finality.detail
        assert all(n.startswith(("client/", "backlog/", "clock")) for n in found), found
    finally:
        net.d.start(PARK_B, "wb-1")
    net.ready()


def test_a_frozen_client(net: OperatorNet) -> None:
    freeze_dpos_client(net, PARK_A)
    net.wait("the client frozen", lambda: any(c["status"] == "frozen" for c in net.get("/api/v1/clients")[1]
                                               ["clients"] if c["chain_id"] == PARK_A), 30)
    found = problems(doctor(net))
    client = found.pop(f"client/{PARK_A}")
    assert client.status == "fail" and client.detail.startswith("frozen at height"), client
    assert "client.create" in client.fix
    # the relay paused the frozen park's lanes itself: named too, with the client as the cause
    lane = found.pop(f"lane/{PARK_A}->{PARK_B}/{LANE}")
    assert lane.status == "warn" and "paused" in lane.detail and f"client checks of {PARK_A}" in lane.fix
