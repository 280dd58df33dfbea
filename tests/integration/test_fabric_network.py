"""A real Fabric park on loopback (issue 11, the network): Fabric 2.5's own orderer and peer binaries, a channel made
through channel participation, the chaincode lifecycle by the CLIs, chaincode as a service (the put/get fixture
in ``tests/fixtures/fabric_cc``, on PyPI ``fabric-chaincode-python``), driven by the real hfc ``Client``
(fabric-sdk-py 1.0.0) through the connection profile ``init`` writes, and read by Fabric's ``peer chaincode query``.

One network (1 orderer) serves the tests of this module, in order: it comes up from nothing; put/get through hfc
(invokes wait for the VALID commit) and through the peer CLI; the peer SIGKILLed and restarted (state kept,
invokes work again); the orderer SIGKILLed and restarted (same); the whole network stopped and brought up again
from its data dir (nothing re-created). A second network runs under the supervisor (``python -m
chains.fabric.network.supervisor``): it restarts a peer SIGKILLed under it, and when the supervisor itself is
SIGKILLed no process it started survives.

Run with ``-s`` to see the figures: cold start (init + processes + channel + chaincode committed and answering),
resident memory of each process, and the median hfc invoke latency at the configured BatchTimeout.
"""

from __future__ import annotations

import os

# hfc's generated protos predate protobuf 4: the pure-Python protobuf must be chosen before protobuf is first
# imported (DEPENDENCIES.md). The chaincode servers never inherit this (the launcher strips it).
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
# hfc loads grpc, and this process also forks Fabric's processes: grpc's fork handlers must be off before grpc
# initialises, or a forked child may abort before it execs (chains/common/procs.py)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import asyncio
import json
import logging
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.fabric.consts import OPERATOR_MSP, PEER_ORGS, SALES_MSP
from chains.fabric.network.config import (
    ChaincodeSpec,
    FabricConfigError,
    FabricNetworkConfig,
    chaincode_process,
    orderer_process,
    peer_process,
)
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.process import FabricNetworkError
from chains.fabric.network.tools import FabricTools
from tests.integration.harness import REPO, descendants, free_port_block, still_running, wait_all_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CC = ChaincodeSpec(command=(sys.executable, "-m", "tests.fixtures.fabric_cc"), name="kv", cwd=REPO,
                   env={"PYTHONPATH": str(REPO)})
USERS = {"alice": OPERATOR_MSP, "bob": SALES_MSP}
PEERS = [peer_process(m) for m in PEER_ORGS]
BATCH_TIMEOUT_MS = 250


def _config(root: Path, orderers: int = 1) -> FabricNetworkConfig:
    probe = FabricNetworkConfig(chain_id="fabric-park", data_dir=root, base_port=20000, orderers=orderers)
    return FabricNetworkConfig(chain_id="fabric-park", data_dir=root, base_port=free_port_block(probe.port_count),
                               orderers=orderers, users=USERS, chaincode=CC, batch_timeout_ms=BATCH_TIMEOUT_MS)


def _need_fabric() -> None:
    cfg = FabricNetworkConfig(chain_id="probe", data_dir=Path("/nonexistent"), base_port=20000)
    try:
        FabricTools(cfg).check_installed()
    except Exception as exc:  # a machine without `make setup`'s Fabric build
        pytest.skip(str(exc))


class Park:
    """The module's network, and what the tests measured on it."""

    def __init__(self, net: FabricNetwork, cold_start_s: float) -> None:
        self.net = net
        self.cfg = net.cfg
        self.cold_start_s = cold_start_s


@pytest.fixture(scope="module")
def park(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Park]:
    _need_fabric()
    net = FabricNetwork(_config(tmp_path_factory.mktemp("fabric")))
    try:
        started = time.monotonic()
        net.up(timeout_s=120)
        yield Park(net, time.monotonic() - started)
    finally:
        net.stop()


# --- hfc --------------------------------------------------------------------------------------------------


def hfc_client(cfg: FabricNetworkConfig) -> Any:
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "python", (
        "protobuf was imported before this module set PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python; hfc's protos "
        "cannot load under the upb implementation")
    from hfc.fabric import Client

    client = Client(net_profile=str(cfg.layout.connection_profile))
    client.new_channel(cfg.channel)
    return client


async def hfc_put(client: Any, cfg: FabricNetworkConfig, key: str, value: str, user: str = "alice") -> None:
    """Invoke ``put`` endorsed by both peers and wait until both committed it VALID (hfc raises if a peer reports
    another validation code, and answers an error message instead of the payload if an endorsement failed)."""
    got = await client.chaincode_invoke(requestor=client.get_user(USERS[user], user), channel_name=cfg.channel,
                                        peers=PEERS, args=[key, value], cc_name=CC.name, fcn="put",
                                        wait_for_event=True, wait_for_event_timeout=30)
    assert got == key, f"put {key}: {got!r}"


async def hfc_get(client: Any, cfg: FabricNetworkConfig, key: str, peer: str, user: str = "bob") -> str:
    got = await client.chaincode_query(requestor=client.get_user(USERS[user], user), channel_name=cfg.channel,
                                       peers=[peer], args=[key], cc_name=CC.name, fcn="get")
    return str(got)


def cli_get(net: FabricNetwork, msp: str, key: str) -> str:
    """``peer chaincode query`` (Fabric's own CLI) as ``msp``'s admin against its peer."""
    return net.lifecycle.query(msp, ["get", key]).strip()


async def until(what: str, attempt: Callable[[], Any], timeout_s: float = 60.0) -> float:
    """Retry an async ``attempt`` until it stops raising; seconds it took."""
    started = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - started < timeout_s:
        try:
            await attempt()
            return time.monotonic() - started
        except Exception as exc:  # the part just restarted may refuse for a moment: that is what is waited out
            last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: still failing after {timeout_s:.0f} s: {last!r}")


# --- the tests, in order ------------------------------------------------------------------------------------


def test_network_comes_up_from_nothing(park: Park) -> None:
    net, cfg = park.net, park.cfg
    running = net.running()
    expected = {orderer_process(0), *PEERS, *(chaincode_process(m) for m in PEER_ORGS)}
    assert set(running) == expected
    assert net.lifecycle.committed_sequence() == CC.sequence
    for msp in PEER_ORGS:
        assert cfg.channel in net.tools.peer_channels(msp)
    # every key file written 0600
    keys = list(cfg.layout.crypto.rglob("priv_sk")) + list(cfg.layout.crypto.rglob("*.key"))
    assert keys and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    profile = json.loads(cfg.layout.connection_profile.read_text())
    assert profile["certificateAuthorities"] == {}
    rss = net.rss()
    print(f"\n[fabric] cold start {park.cold_start_s:.1f} s (init + processes + channel + chaincode committed and "
          f"answering): " + ", ".join(f"{k} {v:.2f} s" for k, v in net.timings.items()))
    print("[fabric] RSS: " + ", ".join(f"{n} {kib / 1024:.0f} MiB" for n, kib in rss.items() if kib))
    assert park.cold_start_s < 60


async def test_put_get_through_hfc_and_peer_cli(park: Park) -> None:
    cfg, net = park.cfg, park.net
    client = hfc_client(cfg)
    await hfc_put(client, cfg, "energy", "42 kWh")
    for peer in PEERS:  # the write committed on both peers: each answers it
        assert await hfc_get(client, cfg, "energy", peer) == "42 kWh"
    for msp in PEER_ORGS:
        assert cli_get(net, msp, "energy") == "42 kWh"
    # the chaincode saw who signed: hfc with bob's SalesMSP identity, the CLI with OperatorMSP's admin
    whoami = await client.chaincode_query(requestor=client.get_user(SALES_MSP, "bob"), channel_name=cfg.channel,
                                          peers=[PEERS[0]], args=[], cc_name=CC.name, fcn="whoami")
    assert whoami == SALES_MSP
    assert net.lifecycle.query(OPERATOR_MSP, ["whoami"]).strip() == OPERATOR_MSP
    # an absent key is the chaincode's error (status 500 in the proposal response), not an empty answer
    with pytest.raises(Exception, match="no value at"):
        await hfc_get(client, cfg, "no-such-key", PEERS[1])

    latencies = []
    for i in range(20):
        started = time.monotonic()
        await hfc_put(client, cfg, f"k{i}", f"v{i}")
        latencies.append(time.monotonic() - started)
    assert await hfc_get(client, cfg, "k19", PEERS[1]) == "v19"
    # hfc copied the profile's private keys into its credential store (unencrypted): only inside crypto/ (0700)
    kvs = json.loads(cfg.layout.connection_profile.read_text())["client"]["credentialStore"]["path"]
    assert Path(kvs).parent == cfg.layout.crypto and cfg.layout.crypto.stat().st_mode & 0o077 == 0
    print(f"\n[fabric] hfc invoke (endorse on 2 peers, order, wait VALID on both) at BatchTimeout "
          f"{cfg.batch_timeout_ms} ms: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"min {min(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms (20 sequential)")


async def test_peer_sigkilled_and_restarted_keeps_state(park: Park) -> None:
    cfg, net = park.cfg, park.net
    client = hfc_client(cfg)
    await hfc_put(client, cfg, "before-peer-crash", "kept")
    victim = peer_process(OPERATOR_MSP)
    old_pid = net.running()[victim]
    assert net.kill(victim) == -signal.SIGKILL
    # hfc submits with the one endorsement it got; the committing peer invalidates it: the policy needs both orgs
    with pytest.raises(Exception, match="ENDORSEMENT_POLICY_FAILURE"):
        await hfc_put(client, cfg, "while-down", "x")
    net.start(victim)
    assert net.running()[victim] != old_pid
    assert cli_get(net, OPERATOR_MSP, "before-peer-crash") == "kept"  # its ledger survived the SIGKILL
    with pytest.raises(Exception, match="no value at"):  # endorsed by one organisation only: never written
        await hfc_get(client, cfg, "while-down", PEERS[1])
    took = await until("invoke after the peer restart", lambda: hfc_put(client, cfg, "after-peer-crash", "ok"))
    for peer in PEERS:
        assert await hfc_get(client, cfg, "after-peer-crash", peer) == "ok"
    assert await hfc_get(client, cfg, "energy", victim) == "42 kWh"
    print(f"\n[fabric] first invoke succeeded {took:.1f} s after the SIGKILLed peer was healthy again")


async def test_orderer_sigkilled_and_restarted_keeps_state(park: Park) -> None:
    cfg, net = park.cfg, park.net
    client = hfc_client(cfg)
    await hfc_put(client, cfg, "before-orderer-crash", "kept")
    height = net.orderer_height()
    assert net.kill(orderer_process(0)) == -signal.SIGKILL
    net.start(orderer_process(0))
    assert net.tools.orderer_channel(0) is not None  # it found its channel in its own ledger: nothing re-joined
    assert net.orderer_height() >= height
    took = await until("invoke after the orderer restart", lambda: hfc_put(client, cfg, "after-orderer-crash", "ok"))
    assert net.orderer_height() > height
    for peer in PEERS:
        assert await hfc_get(client, cfg, "before-orderer-crash", peer) == "kept"
        assert await hfc_get(client, cfg, "after-orderer-crash", peer) == "ok"
    print(f"\n[fabric] first invoke succeeded {took:.1f} s after the SIGKILLed orderer was healthy again")


def test_whole_network_restarts_from_its_data_dir(park: Park, caplog: pytest.LogCaptureFixture) -> None:
    """Stop everything, bring it up again with a new launcher: the channel, the joins, the chaincode definition
    are found, not made again, and the state is there."""
    cfg = park.cfg
    block = cfg.layout.channel_block(cfg.channel)
    made = block.stat().st_mtime_ns
    park.net.stop()
    again = FabricNetwork(cfg)
    park.net = again  # the fixture's finally stops whatever runs now
    with caplog.at_level(logging.INFO, logger="chains.fabric.network"):
        started = time.monotonic()
        again.up(timeout_s=120)
        took = time.monotonic() - started
    steps = " ".join(r.getMessage() for r in caplog.records)
    for word in ("genesis block", "joined", "installed", "approved", "committed at"):
        assert word not in steps, f"{word!r} redone on restart: {steps}"
    assert block.stat().st_mtime_ns == made
    assert cli_get(again, SALES_MSP, "after-orderer-crash") == "ok"
    print(f"\n[fabric] warm restart of the whole network: {took:.1f} s")


def test_a_data_dir_refuses_other_fixed_settings(park: Park) -> None:
    cfg = park.cfg
    moved = FabricNetworkConfig(chain_id=cfg.chain_id, data_dir=cfg.data_dir, base_port=cfg.base_port + 1,
                                users=USERS, chaincode=CC)
    with pytest.raises(FabricConfigError, match="base_port"):
        FabricNetwork(moved).init()


async def test_three_orderers_survive_the_loss_of_the_leader(tmp_path: Path) -> None:
    """The devnet's shape: 3 Raft consenters. SIGKILL the leader: the other two elect one and invokes go on;
    the old leader restarts and catches up."""
    _need_fabric()
    net = FabricNetwork(_config(tmp_path, orderers=3))
    try:
        started = time.monotonic()
        net.up(timeout_s=120)
        print(f"\n[fabric] cold start with 3 orderers: {time.monotonic() - started:.1f} s")
        cfg = net.cfg
        client = hfc_client(cfg)
        await hfc_put(client, cfg, "three", "1")
        leader = net.wait_leader()
        net.kill(orderer_process(leader))
        # hfc broadcasts to a random orderer of its profile: retry until a live one takes it and Raft has a leader
        took = await until("invoke with the leader down", lambda: hfc_put(client, cfg, "leader-down", "2"))
        assert net.wait_leader() != leader
        net.start(orderer_process(leader))
        height = net.orderer_height()
        deadline = time.monotonic() + 60
        while (net.tools.orderer_channel(leader) or {}).get("height", 0) < height:
            assert time.monotonic() < deadline, "the restarted orderer did not catch up"
            await asyncio.sleep(0.2)
        for peer in PEERS:
            assert await hfc_get(client, cfg, "leader-down", peer) == "2"
        print(f"[fabric] 3 orderers, leader SIGKILLed: first invoke committed {took:.1f} s later")
    finally:
        net.stop()


def test_a_chaincode_server_that_dies_fails_the_start_with_its_log(tmp_path: Path) -> None:
    _need_fabric()
    broken = ChaincodeSpec(command=(sys.executable, "-c", "import sys; sys.exit('no chaincode here')"), name="kv")
    cfg = _config(tmp_path)
    net = FabricNetwork(FabricNetworkConfig(chain_id=cfg.chain_id, data_dir=cfg.data_dir, base_port=cfg.base_port,
                                            users=USERS, chaincode=broken))
    try:
        started = time.monotonic()
        with pytest.raises(FabricNetworkError, match=r"(?s)chaincode\.OperatorMSP is not running.*no chaincode here"):
            net.up(timeout_s=60)
        assert time.monotonic() - started < 30  # told at once, not after the timeout
    finally:
        net.stop()


# --- the supervisor ---------------------------------------------------------------------------------------


def _roles(pid: int) -> dict[str, list[int]]:
    """The park's processes under ``pid``, by role."""
    found: dict[str, list[int]] = {"orderer": [], "peer": [], "chaincode": []}
    for p, cmd in still_running(descendants(pid)).items():
        if re.search(r"/orderer\s*$", cmd):
            found["orderer"].append(p)
        elif "peer node start" in cmd:
            found["peer"].append(p)
        elif "tests.fixtures.fabric_cc" in cmd:
            found["chaincode"].append(p)
    return found


def test_supervisor_restarts_a_killed_peer_and_leaves_no_orphans(tmp_path: Path) -> None:
    _need_fabric()
    cfg = _config(tmp_path / "data")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({
        "chain_id": cfg.chain_id, "data_dir": str(cfg.data_dir), "base_port": cfg.base_port,
        "users": USERS, "batch_timeout_ms": BATCH_TIMEOUT_MS,
        "chaincode": {"command": list(CC.command), "name": CC.name, "cwd": str(REPO), "env": dict(CC.env)}}))
    err = open(tmp_path / "supervisor.log", "wb")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    # deliberately not spawn(): this test SIGKILLs the parent itself, and what the parent started is under test
    parent = subprocess.Popen([sys.executable, "-m", "chains.fabric.network.supervisor", "--settings", str(settings),
                               "--quiet"], stdout=err, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                              start_new_session=True)
    procs: dict[int, tuple[int, int, str]] = {}

    def log_text() -> str:
        return (tmp_path / "supervisor.log").read_text(errors="replace")

    def wait(what: str, pred: Callable[[], bool], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert parent.poll() is None, f"supervisor exited with {parent.returncode}:\n{log_text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log_text()[-3000:]}"
            time.sleep(0.1)

    try:
        wait("the park to be ready", lambda: cfg.layout.ready.exists())
        ready = json.loads(cfg.layout.ready.read_text())
        assert ready["supervisor_pid"] == parent.pid and set(ready["pids"]) == {
            orderer_process(0), *PEERS, *(chaincode_process(m) for m in PEER_ORGS)}
        roles = _roles(parent.pid)
        assert {k: len(v) for k, v in roles.items()} == {"orderer": 1, "peer": 2, "chaincode": 2}, roles
        victim = roles["peer"][0]
        os.kill(victim, signal.SIGKILL)
        wait("the supervisor to restart the peer", lambda: "running again" in log_text())
        peers = _roles(parent.pid)["peer"]
        assert len(peers) == 2 and victim not in peers

        procs = descendants(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        left = wait_all_gone(procs, timeout_s=60)
        assert left == {}, f"orphans after the supervisor was SIGKILLed: {left}"
    finally:
        if parent.poll() is None:
            procs = procs or descendants(parent.pid)
            parent.kill()
            parent.wait()
        err.close()
        for pid in still_running(procs):  # a failed run must not leave its park behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
