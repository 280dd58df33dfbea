"""The chaos soak's partition fault kind and schedule (bench/soak.py), in process: a lab whose ``ip`` commands a fake
runner records, a soak with no processes. The real cuts run in tests/integration/test_soak.py."""

from __future__ import annotations

import os
import random
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relay.ops import netns

_PB = "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"
_had_pb = _PB in os.environ
from bench import soak as soak_mod  # noqa: E402  (sets _PB for the soak's own process; undone below)

if not _had_pb:
    os.environ.pop(_PB, None)

VALIDATORS = ("op-a", "op-b", "op-c", "op-d")
NODES = {soak_mod.DPOS: ("witness-a", "witness-b"), soak_mod.POC: ("farmer-a",), soak_mod.ETH: ("anvil",),
         soak_mod.FABRIC: ("network",)}
CUT = f"lladdr {netns.CUT_MAC} dev eth0 nud permanent"


class FakeIp:
    def __init__(self) -> None:
        self.batches: dict[str, list[str]] = {}

    def __call__(self, argv: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        if stdin is not None:  # ip -n <ns> -batch -: the namespace's whole set of cuts
            self.batches[argv[2]] = stdin.decode().splitlines()[1:]
        elif "flush" in argv:
            self.batches[argv[2]] = []
        return subprocess.CompletedProcess(list(argv), 0, b"", b"")


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(netns, "STATE_DIR", tmp_path / "state")
    yield


def make_soak(with_lab: bool = True) -> tuple[Any, FakeIp]:
    keys = [f"{c}/{n}" for c, ns in NODES.items() for n in ns] + [f"relay/{v}" for v in VALIDATORS] + \
        [f"relayer/{r}" for r in soak_mod.RELAYERS]
    ip = FakeIp()
    lab = netns.Lab(netns.plan_hosts(keys, "10.77.9.0/24"), prefix="prn0a0b0c", runner=ip) if with_lab else None
    s = soak_mod.Soak.__new__(soak_mod.Soak)
    s.cfg = SimpleNamespace(relay_validators=VALIDATORS, relay_chain_id="relay",
                            chain=lambda c: SimpleNamespace(nodes=NODES[c]))
    s.lab, s.no_lab_reason = lab, None if with_lab else "not root"
    s.relayers = {r: None for r in soak_mod.RELAYERS}
    s.packet_timeout_s, s.long_partition_p = 120.0, 0.0
    s.cuts, s.partitions, s.down = {}, Counter(), {}
    s._cut_ids = iter(range(1, 1000))
    s.log = lambda msg: None
    return s, ip


def cut_from(s: Any, ip: FakeIp, host: str) -> set[str]:
    """The hosts ``host``'s namespace cannot reach."""
    addr = {a: h for h, a in s.lab.hosts.items()}
    return {addr[line.split()[2]] for line in ip.batches.get(s.lab.namespace(host), [])}


def test_each_shape_cuts_what_it_says_and_nothing_else() -> None:
    s, ip = make_soak()
    kind = soak_mod.FAULT_KINDS["partition"]
    validators = {f"relay/{v}" for v in VALIDATORS}
    relayers = {f"relayer/{r}" for r in soak_mod.RELAYERS}
    targets = {(t.chain, t.node): t for t in kind.targets(s)}
    assert set(targets) == {*(("relay", v) for v in VALIDATORS), *((c, "nodes") for c in NODES),
                            *(("relayer", r) for r in soak_mod.RELAYERS)}

    heal = kind.inject(s, targets[("relay", "op-b")])
    assert cut_from(s, ip, "relay/op-b") == validators - {"relay/op-b"}
    assert cut_from(s, ip, "relay/op-a") == {"relay/op-b"}
    assert cut_from(s, ip, "dpos-park/witness-a") == set() and cut_from(s, ip, "relayer/relayer-a") == set()
    heal()
    assert all(not lines for lines in ip.batches.values())

    heal = kind.inject(s, targets[(soak_mod.DPOS, "nodes")])
    assert cut_from(s, ip, "dpos-park/witness-b") == validators | relayers
    assert cut_from(s, ip, "relay/op-c") == {"dpos-park/witness-a", "dpos-park/witness-b"}
    assert cut_from(s, ip, "poc-park/farmer-a") == set()  # other parks keep their links
    heal()

    heal = kind.inject(s, targets[("relayer", "relayer-a")])
    assert cut_from(s, ip, "relayer/relayer-a") == set(s.lab.hosts) - {"relayer/relayer-a"}
    heal()
    assert s.partitions == Counter(relay_validator=1, park=1, relayer=1)


def test_healing_one_partition_leaves_the_others_cut() -> None:
    s, ip = make_soak()
    kind = soak_mod.FAULT_KINDS["partition"]
    targets = {(t.chain, t.node): t for t in kind.targets(s)}
    heal_v = kind.inject(s, targets[("relay", "op-a")])
    heal_p = kind.inject(s, targets[(soak_mod.FABRIC, "nodes")])
    assert "fabric-park/network" in cut_from(s, ip, "relay/op-a") and "relay/op-b" in cut_from(s, ip, "relay/op-a")
    heal_v()
    assert cut_from(s, ip, "relay/op-a") == {"fabric-park/network"}  # the park's cut stays
    heal_p()
    assert all(not lines for lines in ip.batches.values()) and s.cuts == {}


def test_a_long_park_cut_lasts_past_the_packet_timeout() -> None:
    s, _ = make_soak()
    s.long_partition_p = 1.0
    kind = soak_mod.FAULT_KINDS["partition"]
    park = next(t for t in kind.targets(s) if t.chain == soak_mod.POC)
    assert kind.duration(s, park, random.Random(1), 3.0) > s.packet_timeout_s + 5
    validator = next(t for t in kind.targets(s) if t.chain == "relay")
    assert kind.duration(s, validator, random.Random(1), 3.0) == 3.0  # never a validator or relayer


def test_without_a_lab_partition_is_skipped_with_the_reason_and_the_others_still_run() -> None:
    s, _ = make_soak(with_lab=False)
    sched = soak_mod.Schedule(s, ["pause", "partition"], 1, 1, 2, random.Random(7))
    assert sched.skipped == {"partition": "the devnet does not run in network namespaces: not root"}


def test_the_bag_draws_every_kind_and_one_relay_fault_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = make_soak()
    drawn: list[tuple[str, str]] = []

    class Fake(soak_mod.FaultKind):
        def __init__(self, name: str, chain: str) -> None:
            self.name, self.chain = name, chain

        def targets(self, soak: Any) -> list[Any]:
            return [soak_mod.Target(self.chain, "x", self.chain)]

        def inject(self, soak: Any, t: Any) -> Any:
            drawn.append((self.name, t.chain))
            return lambda: None

    kinds = {"a": Fake("a", "relay"), "b": Fake("b", "relay"), "c": Fake("c", "poc-park")}
    monkeypatch.setattr(soak_mod, "FAULT_KINDS", kinds)
    sched = soak_mod.Schedule(s, list(kinds), 1, 100, 200, random.Random(3))
    for _ in range(3):
        sched.inject_one()
    # one of a/b holds the relay group: the other has no free target and goes back in the bag
    assert sorted(k for k, _ in drawn if k != "c") in (["a"], ["b"]) and ("c", "poc-park") in drawn
    assert sched.no_target == 1
    sched.heal_due(0, everything=True)
    sched.inject_one()
    assert {k for k, _ in drawn} == {"a", "b", "c"}
