"""The doctor's judges (:mod:`relay.ops.doctor`), table by table from a healthy reading malleated into each problem, and
what it reads from this host: ``/proc/net/tcp`` listeners, relayer command lines, key files, the admin token and
Fabric's binaries (the real ones ``make setup`` built, and a home missing them)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from relay.ops.doctor import (
    ChainWatch,
    Check,
    DoctorOptions,
    HeadSeen,
    NodeSeen,
    Pending,
    RelayerSeen,
    Report,
    _runs_relayer,
    admin_token_state,
    fabric_binaries,
    judge_admin_token,
    judge_api,
    judge_backlog,
    judge_bridge,
    judge_client,
    judge_clocks,
    judge_fabric_binaries,
    judge_finality,
    judge_key_files,
    judge_lane,
    judge_listeners,
    judge_node,
    judge_relayer,
    listening_sockets,
)

NOW = 1_800_000_000_000
ANY = "0.0.0.0"  # noqa: S104 - the wildcard address, as /proc shows a socket bound to it (nothing binds here)
OPTS = DoctorOptions()


# -- files of this host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("modes", "status", "says"), [
    ([0o600, 0o400, 0o600], "ok", "3 key files, none readable"),
    ([0o600, 0o644], "fail", "1 of 2 key files are open to group or others: /k/1 (644)"),
    ([0o640, 0o606, 0o601], "fail", "3 of 3"),
    ([], "warn", "no key file under /k"),
])
def test_key_files(modes: list[int], status: str, says: str) -> None:
    c = judge_key_files(Path("/k"), [(Path(f"/k/{i}"), m) for i, m in enumerate(modes)])
    assert (c.name, c.status) == ("keys", status) and says in c.detail, c
    if status == "fail":
        loose = [f"/k/{i}" for i, m in enumerate(modes) if m & 0o077]
        assert c.fix.startswith("chmod 600 " + " ".join(loose))


@pytest.mark.parametrize(("mode", "valid", "status", "says"), [
    (0o600, True, "ok", "present, 0600"),
    (None, False, "fail", "no admin token"),
    (0o600, False, "fail", "not 32 hex-encoded bytes"),
    (0o644, True, "fail", "open to group or others (mode 644)"),
])
def test_admin_token(mode: int | None, valid: bool, status: str, says: str) -> None:
    c = judge_admin_token(Path("/d/keys/admin.token"), mode, valid)
    assert c.status == status and says in c.detail, c
    assert (c.fix != "") == (status != "ok")


def test_admin_token_read_from_the_file(tmp_path: Path) -> None:
    tok = tmp_path / "admin.token"
    assert admin_token_state(tok) == (None, False)
    tok.write_text("ab" * 32 + "\n")
    tok.chmod(0o600)
    assert admin_token_state(tok) == (0o600, True)
    tok.write_text("not hex")
    assert admin_token_state(tok)[1] is False


PORTS = {20000: "park-a/wa-1", 20001: "relay/op-a"}


@pytest.mark.parametrize(("host", "allowed", "listening", "status", "says"), [
    ("127.0.0.1", {"127.0.0.1"}, [("127.0.0.1", 20000), (ANY, 22)], "ok", "all on 127.0.0.1"),
    ("127.0.0.1", {"127.0.0.1"}, [("::1", 20001)], "ok", "all on ::1"),  # loopback all the same
    ("127.0.0.1", {"127.0.0.1"}, [(ANY, 20000)], "fail", "park-a/wa-1 on 0.0.0.0:20000"),
    ("127.0.0.1", {"127.0.0.1"}, [("::", 20001)], "fail", "relay/op-a on :::20001"),
    ("127.0.0.1", {"127.0.0.1"}, [("10.1.2.3", 20000)], "fail", "beyond host = 127.0.0.1"),
    ("10.1.2.3", {"10.1.2.3"}, [("10.1.2.3", 20000)], "ok", "all on 10.1.2.3"),
    ("10.1.2.3", {"10.1.2.3"}, [(ANY, 20000)], "fail", "0.0.0.0:20000"),
    (ANY, {ANY}, [(ANY, 20000)], "ok", "host = 0.0.0.0"),  # configured so
    ("127.0.0.1", {"127.0.0.1"}, [(ANY, 22)], "ok", "none of the deployment's 2 ports"),
])
def test_listeners(host: str, allowed: set[str], listening: list[tuple[str, int]], status: str, says: str) -> None:
    c = judge_listeners(host, frozenset(allowed), PORTS, listening)
    assert c.status == status and says in c.detail, c


def test_listening_sockets_parses_proc_net_tcp(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (net / "tcp").write_text(head +
                             "   0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n"
                             "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 2\n"
                             "   2: 0100007F:4E21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 3\n")
    z = "0" * 32
    (net / "tcp6").write_text(head +
                              f"   0: {z}:4E21 {z}:0000 0A 0 0\n"
                              f"   1: {'0' * 24}01000000:4E22 {z}:0000 0A 0 0\n"
                              f"   2: 0000000000000000FFFF00000100007F:4E23 {z}:0000 0A 0 0\n")
    assert sorted(listening_sockets(tmp_path)) == sorted([("127.0.0.1", 20000), (ANY, 22), ("::", 20001),
                                                          ("::1", 20002), ("127.0.0.1", 20003)])


def test_listening_sockets_of_this_host() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ("127.0.0.1", port) in listening_sockets()


@pytest.mark.parametrize(("argv", "runs"), [
    (["python", "-m", "relay.cli", "relayer", "start", "--config", "/d/devnet.toml", "--name", "r-a"], True),
    (["/opt/parkrelay/.venv/bin/parkrelay", "--log-json", "relayer", "start", "--config", "devnet.toml",
      "--name", "r-a", "--api-port", "8310"], True),  # relative to the process's working directory
    (["parkrelay", "relayer", "start", "--config=/d/devnet.toml", "--name=r-a"], True),
    (["parkrelay", "relayer", "start", "--config", "/d/devnet.toml", "--name", "r-b"], False),
    (["parkrelay", "relayer", "start", "--config", "/other/devnet.toml", "--name", "r-a"], False),
    (["parkrelay", "node", "relay", "--config", "/d/devnet.toml", "--validator", "relayer"], False),
    (["vim", "relayer", "--name", "r-a"], False),
])
def test_relayer_command_lines(argv: list[str], runs: bool) -> None:
    assert _runs_relayer(argv, "r-a", Path("/d/devnet.toml"), Path("/d")) is runs


# -- Fabric's binaries: the real ones, and a home without them ---------------------------------------------------


def test_fabric_binaries_at_the_pin() -> None:
    from chains.fabric.network.config import FABRIC_VERSION, default_fabric_home

    home = default_fabric_home()
    if not (home / "bin" / "peer").exists():
        pytest.skip(f"Fabric is not built in {home} (make setup builds it)")
    c = judge_fabric_binaries(home, *fabric_binaries(home), FABRIC_VERSION)
    assert c.status == "ok" and FABRIC_VERSION in c.detail, c


def test_fabric_binaries_missing_or_off_the_pin(tmp_path: Path) -> None:
    c = judge_fabric_binaries(tmp_path, *fabric_binaries(tmp_path), "2.5.9")
    assert c.status == "fail" and "peer, orderer, osnadmin, configtxgen missing" in c.detail and "make setup" in c.fix
    c = judge_fabric_binaries(tmp_path, [], "2.5.4", "2.5.9")
    assert c.status == "fail" and "Fabric 2.5.4, the pin is 2.5.9" in c.detail


# -- nodes, the Ethereum bridge, APIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seen", "peers", "status", "says"), [
    (NodeSeen("p", "n1", "http://h:1", "p", "p", 10, "aa"), {"n1": "aa", "n2": "aa"}, "ok", "answers as p"),
    (NodeSeen("p", "n1", "http://h:1", "p", error="connection refused"), {}, "fail",
     "does not answer at http://h:1: connection refused"),
    (NodeSeen("p", "n1", "http://h:1", "p", "q", 10, "aa"), {}, "fail", "answers as chain 'q', the config says 'p'"),
    (NodeSeen("p", "n1", "http://h:1", "p", "p", 10, "bb"), {"n1": "bb", "n2": "aa", "n3": "aa"}, "fail",
     "from genesis bb"),
    (NodeSeen("e", "anvil", "http://h:1", "31337", "1", 5), {}, "fail", "answers as chain '1'"),
])
def test_nodes(seen: NodeSeen, peers: dict[str, str], status: str, says: str) -> None:
    c = judge_node(seen, peers, "start it")
    assert c.name == f"node/{seen.chain}/{seen.node}" and c.status == status and says in c.detail, c


@pytest.mark.parametrize(("height", "top", "status"), [(50, 50, "ok"), (46, 50, "ok"), (45, 50, "warn"),
                                                       (None, 50, "ok")])
def test_a_node_behind_its_peers(height: int | None, top: int, status: str) -> None:
    c = judge_node(NodeSeen("p", "n1", "http://h:1", "p", "p", 40, "aa"), {}, "start it", height, top)
    assert c.status == status, c
    if status == "warn":
        assert f"at height {height} while its chain is at {top}" in c.detail and "restarted" in c.fix


@pytest.mark.parametrize(("address", "code", "status", "says"), [
    ("0xab", 4000, "ok", "bridge deployed at 0xab"),
    ("0xab", 0, "fail", "no contract at 0xab"),
    ("0xab", None, "fail", "cannot read the code"),
    (None, None, "fail", "no bridge address"),
])
def test_bridge(address: str | None, code: int | None, status: str, says: str) -> None:
    c = judge_bridge("eth-park", address, code, "boom")
    assert c.name == "ethereum/eth-park/bridge" and c.status == status and says in c.detail, c


def test_io_errors_in_plain_words() -> None:
    from relay.ops.doctor import _plain

    refused = "[transport] x: status to http://h:1 failed: ClientConnectorError: Cannot connect to host h:1"
    assert _plain(RuntimeError(refused)).startswith("connection refused: nothing listens there")
    assert _plain(TimeoutError()).startswith("no answer within 3 s")
    assert _plain(RuntimeError("status to http://h:1 failed: TimeoutError: ")).startswith("no answer within")
    assert _plain(ValueError("odd")) == "odd"


def test_api() -> None:
    assert judge_api("http://h:1", 200, None, "r-a").detail == "answers (relayer r-a)"
    assert judge_api("http://h:1", 200, None, None).status == "ok"
    assert judge_api("http://h:1", None, "refused", None).status == "fail"
    assert "HTTP 503" in judge_api("http://h:1", 503, None, None).detail


# -- finality ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("watch", "status", "says"), [
    (ChainWatch("p", "dpos", (10, 9), (14, 13), 2.0), "ok", "final height 9 -> 13"),
    (ChainWatch("p", "dpos", (10, 9), (14, 9), 15.0), "fail", "head 10 -> 14 but the final height stayed at 9"),
    (ChainWatch("p", "poc", (10, 9), (10, 9), 15.0), "fail", "no new block in 15.0 s"),
    (ChainWatch("p", "dpos", None, None, 15.0), "fail", "no node of the chain answered"),
    (ChainWatch("f", "fabric", (7, 7), (7, 7), 15.0, 600.0, 3600.0), "ok", "idle at final height 7"),
    (ChainWatch("f", "fabric", (7, 7), (7, 7), 15.0, 9000.0, 3600.0), "warn", "no block for 2.5 h"),
    (ChainWatch("f", "fabric", (7, 7), (8, 8), 15.0, 0.5, 3600.0), "ok", "final height 7 -> 8"),
])
def test_finality(watch: ChainWatch, status: str, says: str) -> None:
    c = judge_finality(watch)
    assert c.name == f"finality/{watch.chain}" and c.status == status and says in c.detail, c
    if status == "fail" and watch.kind == "dpos" and watch.first:
        assert "2/3 of the active witnesses" in c.fix


# -- clocks ------------------------------------------------------------------------------------------------------


def seen(chain: str, producer: str | None, hi: int, lo: int | None, res: int = 0) -> HeadSeen:
    return HeadSeen(chain, producer, hi, lo, res)


HEALTHY = [seen("a", "w1", 120, -130, 0), seen("a", "w1", 60, -190), seen("a", "w1", 200, -50),
           seen("r", None, 90, -160), seen("r", None, 40, -210), seen("r", None, 130, -120)]


@pytest.mark.parametrize(("obs", "names", "says"), [
    (HEALTHY, {"clock": "ok"}, "within 1.0 s of this host's clock on a, r"),
    # one block of w2 seen 3 s before its timestamp: w2's clock is ahead
    ([*HEALTHY, seen("a", "w2", -2900, None)], {"clock/a/w2": "fail"}, "w2's clock is about 2.9 s ahead"),
    # every block of w2 appears 2.5 s late, however fast it was seen (a tight bracket): behind
    ([*HEALTHY, *(seen("a", "w2", 2700 + i, 2500 + i) for i in range(3))], {"clock/a/w2": "fail"},
     "about 2.5 s behind"),
    # late, but only twice: not enough to tell a slow producer from a clock behind
    ([*HEALTHY, *(seen("a", "w2", 2700 + i, 2500 + i) for i in range(2))], {"clock": "ok"}, "within"),
    # late once, on time twice: a slow block, not a clock
    ([*HEALTHY, seen("a", "w2", 2700, 2500), seen("a", "w2", 150, -100), seen("a", "w2", 90, -160)],
     {"clock": "ok"}, "within"),
    # Ethereum's whole-second timestamps: up to a second late is their resolution
    ([*HEALTHY, *(seen("e", None, 1900, 1700, 1000) for _ in range(3))], {"clock": "ok"}, "on a, e, r"),
    # every chain ahead the same way: this host's clock is behind
    ([seen("a", "w1", -4000, None), seen("r", None, -4100, None)], {"clock/this-host": "fail"},
     "this host's clock is behind"),
    ([], {"clock": "ok"}, "no new block seen"),
])
def test_clocks(obs: list[HeadSeen], names: dict[str, str], says: str) -> None:
    checks = judge_clocks(obs, 1000, 3, ["a", "r"])
    assert {c.name: c.status for c in checks} == names, checks
    assert any(says in c.detail for c in checks), checks


def test_clock_of_a_chain_without_new_blocks_is_not_judged() -> None:
    (c,) = judge_clocks(HEALTHY, 1000, 3, ["a", "r", "f"])
    assert c.status == "ok" and "not judged (no new block while watching): f" in c.detail


# -- light clients, lanes, backlog, relayers ---------------------------------------------------------------------

DAY_MS = 86_400_000
ACTIVE: dict[str, Any] = {"chain_id": "p", "status": "active", "final_height": 90, "latest_height": 95,
                          "frozen_height": None, "trusting_period_ms": 14 * DAY_MS, "expires_in_s": 13.9 * 86_400}


@pytest.mark.parametrize(("change", "final", "lag", "status", "says"), [
    ({}, 96, 0.5, "ok", "active, final 90, latest 95, park final 96"),
    ({"status": "frozen", "frozen_height": 77}, 96, None, "fail", "frozen at height 77"),
    ({"status": "expired"}, 96, None, "fail", "expired: no update within its trusting period (14.0 days)"),
    ({"status": "unknown", "error": "client.unknown"}, 96, None, "fail", "no light client of p"),
    ({"expires_in_s": 2 * 86_400}, 96, None, "warn", "trusting period ends in 2.0 days"),
    ({}, 400, 305.0, "warn", "latest height 95 is 305 blocks (5 min) behind the park's final height 400"),
    ({}, 120, 59.0, "ok", "latest 95"),
])
def test_clients(change: dict[str, Any], final: int, lag: float | None, status: str, says: str) -> None:
    c = judge_client("p", {**ACTIVE, **change}, final, lag, OPTS)
    assert c.name == "client/p" and c.status == status and says in c.detail, c
    assert (c.fix != "") == (status != "ok")


@pytest.mark.parametrize(("lane", "status", "says", "fix"), [
    ({"registered": True, "paused": False}, "ok", "open", ""),
    ({"registered": True, "paused": True, "reason": "governance"}, "warn", "paused (governance)",
     "POST /api/v1/lanes/a/b/l-0/resume"),
    ({"registered": True, "paused": True, "reason": "client a frozen"}, "warn", "paused (client a frozen)",
     "client checks of a and b first"),
    ({"registered": False, "paused": False}, "fail", "not registered", "lane.open"),
])
def test_lanes(lane: dict[str, Any], status: str, says: str, fix: str) -> None:
    c = judge_lane({"src": "a", "dst": "b", "lane": "l-0", **lane})
    assert c.name == "lane/a->b/l-0" and c.status == status and says in c.detail and fix in c.fix, c


def pkt(seq: int, state: str, age_s: float, step_age_s: float | None = None) -> Pending:
    return Pending(f"a/b/l-0/{seq}", state, NOW - int(age_s * 1000),
                   None if step_age_s is None else NOW - int(step_age_s * 1000))


@pytest.mark.parametrize(("pending", "paused", "indexed", "status", "says", "fix"), [
    ([], False, None, "ok", "no packet in flight", ""),
    ([pkt(1, "verified", 12, 3)], False, None, "ok", "1 in flight; oldest a/b/l-0/1 committed 12 s ago, waits for "
     "execution on the target, verified for 3 s", ""),
    ([pkt(2, "committed", 30), pkt(1, "acked", 400, 390)], False, None, "fail",
     "2 in flight; oldest a/b/l-0/1 committed 7 min ago, waits for settlement on the source, acked for 6 min: "
     "stuck for more than 5 min", "relayer"),
    ([pkt(1, "committed", 400)], True, None, "fail", "waits for verify on the relay chain", "the lane is paused"),
    ([], False, "relay to height 10 of 90", "warn", "events read in part: relay to height 10 of 90", "--api"),
])
def test_backlog(pending: list[Pending], paused: bool, indexed: str | None, status: str, says: str, fix: str) -> None:
    c = judge_backlog("a", "b", "l-0", pending, NOW, 300.0, paused, indexed)
    assert c.name == "backlog/a->b/l-0" and c.status == status and says in c.detail and fix in c.fix, c


@pytest.mark.parametrize(("seen_", "progress", "status", "says"), [
    (RelayerSeen("r", "pid 7 on this host", True), {"backlog": 2, "idle_s": 1.0}, "ok",
     "running (pid 7 on this host); 2 packets pending, last stepped 1 s ago"),
    (RelayerSeen("r", None, True), None, "fail", "not running on this host"),
    (RelayerSeen("r", None, False, gone_pid=4242), {"backlog": 3}, "fail",
     "not running on this host (pid 4242 of pids.json is gone); its database holds 3 packets"),
    (RelayerSeen("r", None, False), None, "warn", "not seen: no process on this host and no --api of it"),
    (RelayerSeen("r", "its API at http://h:1", False), {"backlog": 3, "idle_s": 900.0, "last_error": "verify: x"},
     "fail", "has not stepped for 15 min with 3 packets pending; last error: verify: x"),
    (RelayerSeen("r", "pid 7 on this host", True), {"backlog": 0, "idle_s": 9000.0}, "ok", "0 packets pending"),
])
def test_relayers(seen_: RelayerSeen, progress: dict[str, Any] | None, status: str, says: str) -> None:
    c = judge_relayer(seen_, progress, 300.0, "start it: `parkrelay relayer start`")
    assert c.name == "relayer/r" and c.status == status and says in c.detail, c
    if status == "fail":
        assert "parkrelay relayer start" in c.fix


# -- the report --------------------------------------------------------------------------------------------------


def test_report_exit_code_and_output() -> None:
    ok = Check("keys", "ok", "fine")
    warn = Check("lane/a->b/l", "warn", "paused", "resume it")
    fail = Check("node/a/n", "fail", "down", "start it")
    assert Report("c.toml", (ok,), 1.0).exit_code == 0
    assert Report("c.toml", (ok, warn), 1.0).exit_code == 1
    r = Report("c.toml", (ok, warn, fail), 1.0)
    assert r.exit_code == 1 and r.counts() == {"ok": 1, "warn": 1, "fail": 1}
    text = r.render()
    assert "FAIL  node/a/n" in text and "fix: start it" in text and "2 problem(s): 1 fail, 1 warn" in text
    assert "fix:" not in text.splitlines()[1]  # an ok check has no fix line
    js = r.to_json()
    assert js["ok"] is False and js["exit_code"] == 1 and js["checks"][2] == fail.to_json()


def test_key_files_found_under_data_dir(tmp_path: Path) -> None:
    from relay.ops.doctor import key_files

    class Cfg:  # the two fields key_files reads
        data_dir = tmp_path
        chains = ()

    (tmp_path / "keys" / "relay").mkdir(parents=True)
    a = tmp_path / "keys" / "relay" / "op-a.seed"
    a.write_text("00")
    os.chmod(a, 0o644)
    found = key_files(Cfg())  # type: ignore[arg-type]
    assert found == [(a, 0o644)] and stat.S_IMODE(a.stat().st_mode) == 0o644
