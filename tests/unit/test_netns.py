"""relay.ops.netns (hosts in network namespaces, partitions) and the per-node host addresses of the config.

The lab's commands are checked as data (a fake runner records them), so these run anywhere; the real namespaces
are made in tests/integration/test_partitions.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from relay.ops import devnet, netns
from relay.ops.config import ConfigError, load_config

HOSTS = {"relay/op-a": "10.77.5.2", "relay/op-b": "10.77.5.3", "dpos-park/witness-a": "10.77.5.4",
         "relayer/relayer-a": "10.77.5.5"}


class FakeIp:
    """Records each command; fails the ones whose words contain ``fail_on``."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], bytes | None]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((list(argv), stdin))
        if self.fail_on is not None and self.fail_on in " ".join(argv):
            raise netns.NetnsError(f"`{' '.join(argv)}` failed (2): RTNETLINK answers: File exists")
        return subprocess.CompletedProcess(list(argv), 0, b"", b"")

    def commands(self) -> list[str]:
        return [" ".join(a) for a, _ in self.calls]


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setattr(netns, "STATE_DIR", d)
    return d


def lab(runner: FakeIp | None = None, hosts: dict[str, str] | None = None) -> netns.Lab:
    return netns.Lab(hosts or HOSTS, prefix="prn0a1b2c", runner=runner or FakeIp())


# -- names and plans ---------------------------------------------------------------------------------------------

def test_names_fit_linux_interface_names_and_carry_the_prefix() -> None:
    big = netns.plan_hosts([f"h/{i}" for i in range(252)], "10.77.9.0/24")
    lb = netns.Lab(big, runner=FakeIp())
    assert netns.PREFIX_RE.match(lb.prefix)
    assert max(len(lb.veth(h)) for h in big) <= 15 and len(lb.bridge) <= 15
    assert all(lb.namespace(h).startswith(lb.prefix + "-") for h in big)
    assert len({lb.namespace(h) for h in big}) == 252
    assert netns.Lab(HOSTS, runner=FakeIp()).prefix != netns.Lab(HOSTS, runner=FakeIp()).prefix


def test_create_plan_wires_each_host_to_the_bridge_at_its_address() -> None:
    cmds = [" ".join(c) for c in lab().create_plan()]
    assert cmds[:3] == ["ip link add prn0a1b2cb type bridge", "ip addr add 10.77.5.1/24 dev prn0a1b2cb",
                        "ip link set prn0a1b2cb up"]
    assert "ip netns add prn0a1b2c-0" in cmds
    assert "ip link add prn0a1b2cv0 type veth peer name eth0 netns prn0a1b2c-0" in cmds
    assert "ip link set prn0a1b2cv0 master prn0a1b2cb" in cmds
    assert "ip -n prn0a1b2c-1 addr add 10.77.5.3/24 dev eth0" in cmds
    assert "ip -n prn0a1b2c-3 link set lo up" in cmds


def test_exec_argv_enters_the_hosts_namespace_and_execs() -> None:
    assert lab().exec_argv("relay/op-b", ["python", "-m", "x"]) == ["ip", "netns", "exec", "prn0a1b2c-1",
                                                                     "python", "-m", "x"]
    with pytest.raises(netns.NetnsError, match="no host 'relay/op-z'"):
        lab().exec_argv("relay/op-z", ["x"])


def test_a_partition_cuts_both_directions_between_groups_only() -> None:
    plan = lab().partition_plan([["relay/op-a"], ["relay/op-b", "dpos-park/witness-a"]])
    cut = f"lladdr {netns.CUT_MAC} dev eth0 nud permanent"
    assert plan == {"prn0a1b2c-0": [f"neigh replace 10.77.5.3 {cut}", f"neigh replace 10.77.5.4 {cut}"],
                    "prn0a1b2c-1": [f"neigh replace 10.77.5.2 {cut}"],
                    "prn0a1b2c-2": [f"neigh replace 10.77.5.2 {cut}"]}
    # the relayer is in no group: nothing in its namespace, and nobody's entry names it
    assert "prn0a1b2c-3" not in plan and not any("10.77.5.5" in ln for lines in plan.values() for ln in lines)


@pytest.mark.parametrize("groups, match", [([["relay/op-a"], ["relay/op-a", "relay/op-b"]], "in two groups"),
                                           ([["relay/op-a", "relay/op-b"]], "two non-empty groups"),
                                           ([["relay/op-a"], []], "two non-empty groups"),
                                           ([["relay/op-a"], ["nobody"]], "no host 'nobody'")])
def test_a_bad_partition_is_refused(groups: list[list[str]], match: str) -> None:
    with pytest.raises(netns.NetnsError, match=match):
        lab().partition_plan(groups)


def test_partition_replaces_the_previous_one_and_heal_flushes_every_cut() -> None:
    ip = FakeIp()
    lb = lab(ip)
    lb.partition(["relay/op-a"], ["relay/op-b"])
    flush = "neigh flush dev eth0 nud permanent\n"
    # one batch per namespace: the earlier partition's cuts go, then this one's are made
    assert [a for a, _ in ip.calls] == [["ip", "-n", f"prn0a1b2c-{i}", "-batch", "-"] for i in range(4)]
    assert [s for _, s in ip.calls] == [
        (flush + f"neigh replace 10.77.5.3 lladdr {netns.CUT_MAC} dev eth0 nud permanent\n").encode(),
        (flush + f"neigh replace 10.77.5.2 lladdr {netns.CUT_MAC} dev eth0 nud permanent\n").encode(),
        flush.encode(), flush.encode()]
    assert lb.cut == [["relay/op-a"], ["relay/op-b"]]
    flushes = [f"ip -n prn0a1b2c-{i} neigh flush dev eth0 nud permanent" for i in range(4)]
    ip.calls.clear()
    lb.heal()
    assert ip.commands() == flushes and lb.cut == []


@pytest.mark.parametrize("hosts, match", [({"a": "10.77.5.2", "b": "10.77.6.2"}, "one /24"),
                                          ({"a": "10.77.5.1"}, "bridge"),
                                          ({"a": "10.77.5.0"}, "network"),
                                          ({"a": "10.77.5.255"}, "broadcast"),
                                          ({"a": "10.77.5.2", "b": "10.77.5.2"}, "both have address"),
                                          ({"a": "::1"}, "IPv4"),
                                          ({}, "at least one host")])
def test_a_lab_refuses_bad_addresses(hosts: dict[str, str], match: str) -> None:
    with pytest.raises(netns.NetnsError, match=match):
        netns.Lab(hosts, runner=FakeIp())
    with pytest.raises(netns.NetnsError, match="prefix"):
        netns.Lab(HOSTS, prefix="x", runner=FakeIp())


def test_plan_hosts_starts_after_the_bridge() -> None:
    assert netns.plan_hosts(["a", "b"], "10.77.7.0/24") == {"a": "10.77.7.2", "b": "10.77.7.3"}
    with pytest.raises(netns.NetnsError):
        netns.plan_hosts(["a"], "10.77.0.0/16")
    with pytest.raises(netns.NetnsError):
        netns.plan_hosts([str(i) for i in range(253)], "10.77.7.0/24")


# -- creating and removing -------------------------------------------------------------------------------------

def test_create_writes_its_state_and_remove_deletes_everything(state_dir: Path) -> None:
    ip = FakeIp()
    with lab(ip) as lb:
        state = json.loads((state_dir / "prn0a1b2c.json").read_text())
        assert state["owner"] == os.getpid() and state["hosts"] == HOSTS
        made = ip.commands()
        assert made.index("ip link add prn0a1b2cb type bridge") > made.index("ip link del prn0a1b2cb")  # idempotent
        ip.calls.clear()
    removed = ip.commands()
    assert [c for c in removed if " del " in c] == [*(f"ip link del prn0a1b2cv{i}" for i in range(4)),
                                                    *(f"ip netns del prn0a1b2c-{i}" for i in range(4)),
                                                    "ip link del prn0a1b2cb"]
    assert not (state_dir / "prn0a1b2c.json").exists() and not lb.created


def test_a_lab_is_removed_when_its_body_raises(state_dir: Path) -> None:
    ip = FakeIp()
    with pytest.raises(RuntimeError), lab(ip):
        ip.calls.clear()
        raise RuntimeError("a test failed")
    assert "ip netns del prn0a1b2c-0" in ip.commands() and not (state_dir / "prn0a1b2c.json").exists()


def test_a_failed_create_removes_what_it_made(state_dir: Path) -> None:
    ip = FakeIp(fail_on="addr add 10.77.5.4/24")  # the third host's address
    with pytest.raises(netns.NetnsError, match="File exists"):
        lab(ip).create()
    after = ip.commands()[ip.commands().index("ip -n prn0a1b2c-2 addr add 10.77.5.4/24 dev eth0"):]
    assert {"ip netns del prn0a1b2c-0", "ip netns del prn0a1b2c-1", "ip link del prn0a1b2cb"} <= set(after)
    assert not (state_dir / "prn0a1b2c.json").exists()


def test_create_refuses_a_subnet_whose_bridge_address_is_taken(state_dir: Path) -> None:
    class Taken(FakeIp):
        def __call__(self, argv: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
            res = super().__call__(argv, stdin)
            if list(argv[:3]) == ["ip", "-4", "-o"]:
                res.stdout = b"7: prn999999b    inet 10.77.5.1/24 scope global prn999999b\n"
            return res

    ip = Taken()
    with pytest.raises(netns.NetnsError, match="already on an interface"):
        lab(ip).create()
    assert not any("type bridge" in c for c in ip.commands())
    assert netns.free_subnet(ip).split(".")[2] != "5"


def test_sweep_removes_labs_whose_owner_died_and_keeps_live_ones(state_dir: Path) -> None:
    dead = {"owner": 2**22 + 17, "owner_start": "1", "hosts": {"x": "10.77.8.2"}}
    with lab(FakeIp()):
        (state_dir / "prn00dead.json").write_text(json.dumps(dead))  # a lab whose owner was SIGKILLed
        ip = FakeIp()
        assert netns.sweep(ip) == ["prn00dead"]
        assert "ip netns del prn00dead-0" in ip.commands() and "ip link del prn00deadb" in ip.commands()
        assert not any("prn0a1b2c" in c for c in ip.commands())  # the live lab (this process's) stays
        assert (state_dir / "prn0a1b2c.json").exists() and not (state_dir / "prn00dead.json").exists()
    (state_dir / "prn00dead.json").write_text(json.dumps(dead))
    ip = FakeIp()
    lab(ip).create()  # creating a lab sweeps first
    assert "ip netns del prn00dead-0" in ip.commands() and not (state_dir / "prn00dead.json").exists()


def test_unavailable_names_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns.unavailable() == "network namespaces need root (running as uid 1000)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda _: None)
    assert netns.unavailable() == "the `ip` command (iproute2) is not installed"


# -- the config's per-node addresses ---------------------------------------------------------------------------

CONFIG = """
[deployment]
data_dir = "data"
{hosts}

[relay]
validators = ["op-a", "op-b"]
base_port = 31100

[relayers]
names = ["relayer-a"]

[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a", "witness-b"]
base_port = 31000

[[chains]]
id = "eth-park"
kind = "ethereum"
base_port = 31200
"""


def _load(tmp: Path, hosts: str) -> Any:
    p = tmp / "d.toml"
    p.write_text(CONFIG.format(hosts=hosts))
    return load_config(p)


def test_without_hosts_every_node_stays_on_loopback(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.node_hosts == {} and cfg.host == "127.0.0.1"
    assert cfg.relay_url("op-b") == "http://127.0.0.1:31101"
    assert cfg.chain("dpos-park").url_of("witness-b", cfg.host) == "http://127.0.0.1:31001"
    assert cfg.host_of("dpos-park", "witness-a") == "127.0.0.1"


def test_hosts_give_nodes_their_own_address_everywhere_they_are_reached(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'hosts = { "relay/op-b" = "10.77.5.3", "dpos-park/witness-b" = "10.77.5.5", '
                          '"relayer/relayer-a" = "10.77.5.9" }')
    assert cfg.relay_url("op-a") == "http://127.0.0.1:31100" and cfg.relay_url("op-b") == "http://10.77.5.3:31101"
    dpos = cfg.chain("dpos-park")
    assert dpos.url_of("witness-b", cfg.host) == "http://10.77.5.5:31001"
    assert dpos.url_of("witness-b") == "http://10.77.5.5:31001"  # callers that pass no host reach it too
    assert dpos.url_of("witness-a", cfg.host) == "http://127.0.0.1:31000"
    assert cfg.host_of("relay", "op-b") == "10.77.5.3" and cfg.host_of("dpos-park", "witness-b") == "10.77.5.5"
    assert [p[4] for p in devnet.processes(cfg)] == ["http://127.0.0.1:31000", "http://10.77.5.5:31001",
                                                     "http://127.0.0.1:31200", "http://127.0.0.1:31100",
                                                     "http://10.77.5.3:31101"]
    assert netns.deployment_hosts(cfg) == ["dpos-park/witness-a", "dpos-park/witness-b", "eth-park/anvil",
                                           "relay/op-a", "relay/op-b", "relayer/relayer-a"]


def test_the_ethereum_parks_node_serves_on_its_own_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.ops.cli import _ethereum_settings

    monkeypatch.chdir(tmp_path)  # data_dir "data"
    cfg = _load(tmp_path, 'hosts = { "eth-park/anvil" = "10.77.5.7" }')
    assert cfg.chain("eth-park").url_of("anvil", cfg.host) == "http://10.77.5.7:31200"
    devnet.init(cfg)
    assert _ethereum_settings(cfg, "eth-park", "anvil").host == "10.77.5.7"
    assert _ethereum_settings(_load(tmp_path, ""), "eth-park", "anvil").host == "127.0.0.1"


def test_set_cuts_makes_every_cut_of_several_partitions_at_once() -> None:
    ip = FakeIp()
    lb = lab(ip)
    # op-a cut from op-b, and (another partition) the DPoS witness cut from op-a and the relayer
    lb.set_cuts([[["relay/op-a"], ["relay/op-b"]], [["dpos-park/witness-a"], ["relay/op-a", "relayer/relayer-a"]]])
    cut = f"lladdr {netns.CUT_MAC} dev eth0 nud permanent"
    flush = "neigh flush dev eth0 nud permanent"
    batches = {a[2]: s.decode().splitlines() for a, s in ip.calls if s is not None}
    assert batches == {"prn0a1b2c-0": [flush, f"neigh replace 10.77.5.3 {cut}", f"neigh replace 10.77.5.4 {cut}"],
                       "prn0a1b2c-1": [flush, f"neigh replace 10.77.5.2 {cut}"],
                       "prn0a1b2c-2": [flush, f"neigh replace 10.77.5.2 {cut}", f"neigh replace 10.77.5.5 {cut}"],
                       "prn0a1b2c-3": [flush, f"neigh replace 10.77.5.4 {cut}"]}
    ip.calls.clear()
    lb.set_cuts([])  # none left: every namespace's cuts flushed
    assert [s for _, s in ip.calls] == [(flush + "\n").encode()] * 4 and lb.cut == []


def test_nodes_bind_their_own_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.ops import nodes

    monkeypatch.chdir(tmp_path)
    p = tmp_path / "d.toml"
    p.write_text(CONFIG.format(hosts='hosts = { "relay/op-b" = "10.77.5.3", "dpos-park/witness-b" = "10.77.5.5" }')
                 .replace('[[chains]]\nid = "eth-park"\nkind = "ethereum"\nbase_port = 31200\n', ""))
    cfg = load_config(p)
    devnet.init(cfg)
    assert nodes.load_node(cfg, "dpos", "dpos-park", "witness-b").config.host == "10.77.5.5"
    assert nodes.load_node(cfg, "dpos", "dpos-park", "witness-a").config.host == "127.0.0.1"
    relay_b = nodes.load_node(cfg, "relay", None, "op-b")
    assert relay_b.config.host == "10.77.5.3"
    assert nodes.load_node(cfg, "relay", None, "op-a").config.peers == ["http://10.77.5.3:31101"]


@pytest.mark.parametrize("hosts, match", [
    ('hosts = { "dpos-park/witness-z" = "10.77.5.3" }', "'dpos-park/witness-z' is not a node"),
    ('hosts = { "eth-park/geth" = "10.77.5.3" }', "'eth-park/geth' is not a node"),
    ('hosts = { "relayer/relayer-q" = "10.77.5.3" }', "'relayer/relayer-q' is not a node"),
    ('hosts = { "relay/op-a" = 7 }', "expected an IP address string"),
    ('hosts = { "relay/op-a" = "node-a.example" }', "expected an IP address literal"),
    ('hosts = { "relay/op-a" = "0.0.0.0" }', "not an address a node can be reached at"),
    ('hosts = { "relay/op-a" = "224.0.0.1" }', "not an address a node can be reached at"),
    ('hosts = ["10.77.5.3"]', r"deployment.hosts: expected dict"),
])
def test_bad_hosts_are_refused_by_key(tmp_path: Path, hosts: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, hosts)


def test_devnet_up_runs_each_process_through_wrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # data_dir "data": logs and pids.json under tmp_path
    cfg = _load(tmp_path, "")
    started: list[list[str]] = []

    class Proc:
        pid = 4242

    monkeypatch.setattr(devnet, "init", lambda _cfg: None)
    monkeypatch.setattr(devnet, "spawn", lambda argv, **_: started.append(list(argv)) or Proc())
    monkeypatch.setattr(devnet, "_node_status", lambda *_: {})
    assert devnet.up(cfg, wrap=lambda key, argv: ["in", key, *argv[-2:]]) == 0
    assert started == [["in", "dpos-park/witness-a", "--witness", "witness-a"],
                       ["in", "dpos-park/witness-b", "--witness", "witness-b"],
                       ["in", "eth-park/anvil", "--node", "anvil"],
                       ["in", "relay/op-a", "--validator", "op-a"], ["in", "relay/op-b", "--validator", "op-b"],
                       ["in", "relayer/relayer-a", "--name", "relayer-a"]]


def test_partition_groups_on_the_command_line_expand_prefixes() -> None:
    keys = list(HOSTS)
    assert netns.expand_group("relay", keys) == ["relay/op-a", "relay/op-b"]
    assert netns.expand_group("relay/op-b,dpos-park", keys) == ["relay/op-b", "dpos-park/witness-a"]
    assert netns.expand_group("relayer/,relayer/relayer-a", keys) == ["relayer/relayer-a"]
    with pytest.raises(netns.NetnsError, match="'rel' names no host"):
        netns.expand_group("rel", keys)


def test_a_persistent_lab_outlives_its_maker_until_removed(state_dir: Path) -> None:
    lb = lab(FakeIp()).create(persistent=True)
    assert json.loads((state_dir / f"{lb.prefix}.json").read_text())["owner"] is None
    assert netns.sweep(FakeIp()) == []  # a detached devnet's lab: only `down` removes it
    lb.remove()
    assert not (state_dir / f"{lb.prefix}.json").exists()


def test_the_cli_plans_hosts_for_every_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "d.toml"
    p.write_text(CONFIG.format(hosts="").replace('[[chains]]\nid = "eth-park"\nkind = "ethereum"\nbase_port = 31200\n',
                                                 ""))
    assert netns.main(["plan", "--config", str(p), "--subnet", "10.77.42.0/24"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == ('hosts = { "dpos-park/witness-a" = "10.77.42.2", "dpos-park/witness-b" = "10.77.42.3", '
                    '"relay/op-a" = "10.77.42.4", "relay/op-b" = "10.77.42.5", "relayer/relayer-a" = "10.77.42.6" }')
    p.write_text(p.read_text().replace('data_dir = "data"', f'data_dir = "{tmp_path}/data"\n{line}'))
    assert load_config(p).host_of("relay", "op-b") == "10.77.42.5"  # the printed line is a valid hosts table
    assert netns.main(["heal", "--config", str(p)]) == 1
    assert "run `python -m relay.ops.netns up` first" in capsys.readouterr().err


@pytest.mark.parametrize("host, served", [("127.0.0.1", "127.0.0.1"), ("10.77.5.8", "127.0.0.1"),
                                          ("localhost", "localhost"), ("127.0.0.2", "127.0.0.2")])
def test_a_fabric_park_on_its_own_host_keeps_its_chaincode_servers_on_loopback(tmp_path: Path, host: str,
                                                                               served: str) -> None:
    from chains.fabric.network.genesis import park_network
    from chains.fabric.network.lifecycle import Lifecycle

    cfg = park_network(chain_id="fabric-park", params={}, data_dir=tmp_path, base_port=31300, host=host,
                       accounts=["operator"])
    assert cfg.host == host  # orderers and peers bind the park's host
    address = Lifecycle(cfg, tools=None).server_address("SalesMSP")  # type: ignore[arg-type]
    assert address.rsplit(":", 1)[0] == served  # the chaincode server (no TLS): loopback of that host
