"""Chaos soak: the four-park devnet under continuous traffic while a seeded schedule breaks its processes (issue 15).

    python bench/soak.py --minutes N [--seed S] [--json] [--keep DIR]

Starts a devnet of real processes in a temp dir: the DPoS, PoC, Ethereum and Fabric parks, a lane between every
pair (6), four relay validators and two relayers. For ``--minutes`` each park's user sends, one after another, to a
random other park, cycling through the three asset kinds: energy (kWh, and now and then vouchers back home),
charging rights (a pool issued at the start; a right abroad goes back along its trace, a right at home to a random
park) and reputation attestations. Meanwhile a schedule drawn from ``--seed`` injects one fault every
``--fault-every-s`` seconds (jittered), each healed after a few seconds. The fault kinds (:data:`FAULT_KINDS`) are
pluggable; those available here:

* ``kill``: SIGKILL a process, start it again after the fault's duration: a DPoS witness, a PoC farmer, the
  Ethereum park's node (anvil, tied to it, stops and dumps its state), a relay validator, a relayer;
* ``kill_anvil`` (not in the default set): SIGKILL anvil itself; see :class:`KillAnvil` for why it is kept apart;
* ``kill_fabric``: SIGKILL a Fabric peer or orderer; the park's supervisor restarts it from its ledger;
* ``pause``: SIGSTOP a node, validator or relayer, SIGCONT after the duration;
* ``partition``: cut links and heal them (:class:`Partition`): a relay validator from the other three, a park's
  node(s) from the relay and the relayers (``--long-partition-p`` of them past the packets' timeouts), a relayer
  from everyone. It needs the network-namespace lab below; without one it is reported ``unavailable`` and the
  schedule skips it: it is never faked.

Where the machine can make network namespaces (:func:`relay.ops.netns.unavailable` is None: root and iproute2) and
``--no-netns`` is not given, the devnet runs in a :class:`relay.ops.netns.Lab`, every process on a host of its own
(``[deployment] hosts``): each relay validator, DPoS witness, PoC farmer and relayer, the Ethereum park's node
(anvil behind its unix socket, as always), and the Fabric park's supervisor with its orderers, peers and chaincode
servers, which share that one host (they bind its address and reach each other there; the chaincode servers stay on
its loopback): the Fabric park is partitioned as a whole, its processes not from each other. The soak sends and
reads from the root namespace, which no cut touches. The lab is removed when the soak ends, however it ends.

Rules: at most one fault per chain (or per relayer) at a time, and at most one relay validator down (killed or
paused), so the relay keeps its 3-of-4 quorum. Then a drain: faults stop, every process runs again, and the soak
waits until every packet the parks committed is final (or ``--drain-s`` passes). It prints:

  packets.sent / completed / refunded / stuck   from the chains (every packet the parks committed), per kind too
  sends                                          send attempts by the soak, and how many failed (a fault on the
                                                 source: nothing was committed, or the packet shows up in ``sent``)
  faults                                         injected per kind (and skipped: kinds unavailable here)
  checks                                         nothing stuck; every packet the soak saw committed exists; per park
                                                 kWh supply (user + escrow) unchanged; escrow of kWh at home ==
                                                 vouchers out on the other parks (per trace); every charging right
                                                 exists exactly once (``rights_violations``) and none is lost

and exits 1 if any check fails (2 on a setup error).
"""

from __future__ import annotations

import os

# the Fabric park's adapter (hfc) needs the pure-Python protobuf, chosen before protobuf's first import
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import argparse
import asyncio
import contextlib
import itertools
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, run_dir
from chains.common.procs import spawn  # first: before anything imports grpc (see chains.common.procs)
from chains.registry import chain_kind
from protocol.codec import decode_packet
from relay.ops import netns
from relay.ops.packets import packet_key
from relay.ops.parks import park_view
from tests.integration.harness import REPO, Devnet, fabric_children, free_port_block, status, wait_for
from tests.integration.test_four_phases import DPOS, ETH, FABRIC, FINAL_STATES, POC, USER, chain_spec

PARKS = [DPOS, POC, ETH, FABRIC]
LANES = {frozenset(p): f"lane-{i}" for i, p in enumerate(itertools.combinations(PARKS, 2))}
RELAY = "relay"
RELAYERS = ["relayer-a", "relayer-b"]
KINDS = ("energy", "charging_right", "reputation")
SUBJECTS: dict[str, tuple[str, str]] = {
    DPOS: ("witness-a", "dpos-witness-credit/v1"),
    POC: ("farmer-a", "poc-farmer-response/v1"),
    ETH: (USER[ETH], "eth-delivery-record/v1"),
    FABRIC: (USER[FABRIC], "fabric-participant-standing/v1"),
}
"""Per park: a subject its state scores and the model it attests it under (as tests/integration/test_asset_matrix)."""
SCORED_BY_OPERATOR = {ETH: 7_500, FABRIC: 8_200}
RIGHTS_PER_PARK = 4
RIGHT_KW = 10
READ_BATCH = 500
"""Packets whose states the drain reads in one bulk read (each chain answers at most 1,000 keys a call)."""


def lane(a: str, b: str) -> str:
    return LANES[frozenset((a, b))]


def voucher(denom: str, src: str, dst: str) -> str:
    """The denomination ``dst`` mints for ``denom`` arriving from ``src`` (SPEC §2.3)."""
    return f"{lane(src, dst)}/{src}/{denom}"


def registry() -> dict[str, Any]:
    """Every park: station ``st-1`` behind transformer ``tr-1``, large enough for the whole rights pool."""
    return {"transformers": {"tr-1": 10_000}, "stations": {"st-1": "tr-1"}}


# -- the deployment --------------------------------------------------------------------------------------


class Soak:
    """The devnet, its relayers, and what the soak did to them."""

    def __init__(self, d: Devnet, rng: random.Random, packet_timeout_s: float, lab: netns.Lab | None = None,
                 no_lab_reason: str | None = None, long_partition_p: float = 0.0) -> None:
        self.d = d
        assert d.cfg is not None
        self.cfg = d.cfg
        self.rng = rng
        self.packet_timeout_s = packet_timeout_s
        self.lab = lab
        """The network namespaces every process runs in (a host each), or None (all on loopback)."""
        self.no_lab_reason = no_lab_reason
        self.long_partition_p = long_partition_p
        self.cuts: dict[int, list[list[str]]] = {}
        """The partitions in force: id -> groups (:meth:`relay.ops.netns.Lab.set_cuts`)."""
        self._cut_ids = itertools.count(1)
        self.partitions: Counter[str] = Counter()
        """Partitions injected per shape (``relay_validator``, ``park``, ``relayer``), and ``park_past_timeout``: park
        cuts healed only after the packet timeout had passed."""
        self.views = {c: park_view(self.cfg, c) for c in PARKS}
        self.relayers: dict[str, subprocess.Popen[bytes]] = {}
        self.keys: dict[str, str] = {}
        """Packet key -> asset kind, of every send the soak saw committed."""
        self.sends: Counter[str] = Counter()
        self.send_errors: Counter[str] = Counter()
        self.rights: set[str] = set()
        self.supply0: dict[str, int] = {}
        self.unexpected_exits: Counter[str] = Counter()
        self.down: dict[tuple[str, str], str] = {}
        """Processes a fault holds down (killed, not yet restarted) or paused: (chain, node) -> fault kind."""
        self.log = print_err
        self._restart_after: dict[tuple[str, str], float] = {}

    # processes -----------------------------------------------------------------------------------------

    def start_relayer(self, name: str) -> None:
        log = open(self.cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
        argv = [sys.executable, "-m", "relay.cli", "--log-level", "info", "relayer", "start", "--config",
                str(self.cfg.path), "--name", name]
        if self.lab is not None:
            argv = self.lab.exec_argv(f"relayer/{name}", argv)
        self.relayers[name] = spawn(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    # the network ---------------------------------------------------------------------------------------

    def host_keys(self, chain: str) -> list[str]:
        """The lab's hosts of a park's nodes, of the relay chain's validators (``relay``) or of the relayers."""
        assert self.lab is not None
        if chain == "relayer":
            return [f"relayer/{r}" for r in self.relayers]
        nodes = self.cfg.relay_validators if chain == RELAY else self.cfg.chain(chain).nodes
        return [h for h in (f"{chain}/{n}" for n in nodes) if h in self.lab.hosts]

    def cut(self, groups: list[list[str]]) -> int:
        """Cut every link between ``groups`` (the other partitions in force stay); its id, for :meth:`uncut`."""
        assert self.lab is not None
        cid = next(self._cut_ids)
        self.cuts[cid] = groups
        self.lab.set_cuts(list(self.cuts.values()))
        return cid

    def uncut(self, cid: int) -> None:
        assert self.lab is not None
        self.cuts.pop(cid, None)
        self.lab.set_cuts(list(self.cuts.values()))

    def heal_all(self) -> None:
        self.cuts.clear()
        if self.lab is not None:
            self.lab.heal()

    def proc(self, chain: str, node: str) -> subprocess.Popen[bytes] | None:
        if chain == "relayer":
            return self.relayers.get(node)
        return self.d.procs.get((chain, node))

    def start(self, chain: str, node: str) -> None:
        if chain == "relayer":
            self.start_relayer(node)
        else:
            self.d.start(chain, node)

    def reap(self) -> None:
        """Processes that exited though no fault holds them down: counted and started again."""
        now = time.monotonic()
        for (chain, node), p in [*self.d.procs.items(), *(((("relayer", n), p) for n, p in self.relayers.items()))]:
            if (chain, node) in self.down or p.poll() is None or now < self._restart_after.get((chain, node), 0):
                continue
            self.unexpected_exits[f"{chain}/{node}"] += 1
            self.log(f"{chain}/{node} exited on its own (code {p.returncode}); starting it again")
            self._restart_after[(chain, node)] = now + 10  # one that keeps failing: a line every 10 s, not a loop
            self.start(chain, node)

    def stop_all(self) -> None:
        for p in self.relayers.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.relayers.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in self.d.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
        self.d.stop_all()


def print_err(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- faults ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    chain: str
    """A park's id, ``relay`` or ``relayer``."""
    node: str
    group: str
    """At most one fault per group at a time: the chain, ``relay`` (one validator down at most), or the relayer."""
    note: str = ""
    """What the fault kind made of it (a partition past the packets' timeouts: ``past_timeout``)."""


@dataclass
class Active:
    kind: str
    target: Target
    heal_at: float
    heal: Callable[[], None]


class FaultKind:
    """One kind of fault: which targets it can hit, how to inject it, and how to heal it."""

    name = ""

    def unavailable(self, soak: Soak) -> str | None:
        """Why this kind cannot run here (the schedule skips it and reports it), or None."""
        return None

    def targets(self, soak: Soak) -> list[Target]:
        raise NotImplementedError

    def inject(self, soak: Soak, t: Target) -> Callable[[], None]:
        """Break ``t`` now; returns the heal."""
        raise NotImplementedError

    def duration(self, soak: Soak, t: Target, rng: random.Random, drawn: float) -> float:
        """How long the fault on ``t`` lasts: the schedule's draw, unless the kind draws its own."""
        return drawn


class ProcessFault(FaultKind):
    """A fault on one process, held down until healed: a DPoS witness, a PoC farmer, the Ethereum park's node, a relay
    validator, a relayer."""

    def targets(self, soak: Soak) -> list[Target]:
        out = [Target(c, n, c) for c in (DPOS, POC, ETH) for n in soak.cfg.chain(c).nodes]
        out += [Target(RELAY, v, RELAY) for v in soak.cfg.relay_validators]
        return out + [Target("relayer", r, f"relayer/{r}") for r in RELAYERS]

    def hold(self, soak: Soak, t: Target) -> subprocess.Popen[bytes]:
        """``t``'s process, marked down by this kind (the reaper leaves it alone until healed)."""
        p = soak.proc(t.chain, t.node)
        assert p is not None
        soak.down[(t.chain, t.node)] = self.name
        return p


class Kill(ProcessFault):
    """SIGKILL a node, validator or relayer and start it again when healed. On the Ethereum park the node process is
    killed: anvil, tied to it, gets SIGTERM and dumps its state (``kill_anvil`` kills anvil itself)."""

    name = "kill"
    anvil = False

    def inject(self, soak: Soak, t: Target) -> Callable[[], None]:
        p = self.hold(soak, t)
        if t.chain == ETH and self.anvil:
            # anvil, under the park's node: the node notices and exits (as tests/integration/test_four_phases)
            children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            os.kill(int(children[0]) if children else p.pid, signal.SIGKILL)
        else:
            p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

        def heal() -> None:
            soak.start(t.chain, t.node)
            soak.down.pop((t.chain, t.node), None)

        return heal


class KillAnvil(Kill):
    """SIGKILL the Ethereum park's anvil itself (its node exits with it), start the node again when healed.

    Not in the default schedule: anvil writes its state file in place (chains/ethereum/anvil.py), so a kill that
    lands during one of its dumps (every second) leaves a torn file and the park cannot start again (the node
    refuses it, naming the file). A 30-minute soak hit that within 20 minutes; run this kind on its own to see it."""

    name = "kill_anvil"
    anvil = True

    def targets(self, soak: Soak) -> list[Target]:
        return [Target(ETH, n, ETH) for n in soak.cfg.chain(ETH).nodes]


class Pause(ProcessFault):
    """SIGSTOP a node, validator or relayer; SIGCONT when healed."""

    name = "pause"

    def inject(self, soak: Soak, t: Target) -> Callable[[], None]:
        p = self.hold(soak, t)
        p.send_signal(signal.SIGSTOP)

        def heal() -> None:
            p.send_signal(signal.SIGCONT)
            soak.down.pop((t.chain, t.node), None)

        return heal


def fabric_processes(soak: Soak) -> dict[str, int]:
    """The Fabric park's orderers and peers under its supervisor: name (``peer0.SalesMSP``, ``orderer1``) -> pid."""
    sup = soak.d.procs.get((FABRIC, "network"))
    return {} if sup is None else fabric_children(sup.pid)


class KillFabric(FaultKind):
    """SIGKILL one Fabric peer or orderer; the park's supervisor starts it again from its ledger."""

    name = "kill_fabric"

    def targets(self, soak: Soak) -> list[Target]:
        return [Target(FABRIC, name, FABRIC) for name in sorted(fabric_processes(soak))]

    def inject(self, soak: Soak, t: Target) -> Callable[[], None]:
        pid = fabric_processes(soak).get(t.node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        return lambda: None


class Partition(FaultKind):
    """Cut links between hosts and heal them, in the :class:`relay.ops.netns.Lab` the devnet runs in: silent packet
    loss, as on a cut cable (connections time out; nothing is refused). Three shapes, drawn like any target:

    * a relay validator cut from the other three (it still reaches the parks and relayers, and they it; the other
      three keep their 3-of-4 quorum; group ``relay``, so no other validator is down meanwhile);
    * a park's node(s) cut from every relay validator and every relayer (the park keeps making blocks; the soak, in
      the root namespace, still sends from it). ``--long-partition-p`` of these last the packet timeout and 5-20 s
      more, so the packets sent to and from the park during the cut time out: once healed they must end refunded on
      proof of the timeout, never executed;
    * a relayer cut from every other host.

    Healing one partition leaves the others in force (:meth:`Soak.cut`). Without a lab the kind is ``unavailable``
    and the schedule skips it: it is never faked."""

    name = "partition"

    def unavailable(self, soak: Soak) -> str | None:
        if soak.lab is None:
            return f"the devnet does not run in network namespaces: {soak.no_lab_reason}"
        return None

    def targets(self, soak: Soak) -> list[Target]:
        out = [Target(RELAY, v, RELAY) for v in soak.cfg.relay_validators]
        out += [Target(c, "nodes", c) for c in PARKS if soak.host_keys(c)]
        out += [Target("relayer", r, f"relayer/{r}") for r in RELAYERS]
        return out

    def groups(self, soak: Soak, t: Target) -> list[list[str]]:
        assert soak.lab is not None
        validators, relayers = soak.host_keys(RELAY), soak.host_keys("relayer")
        if t.chain == RELAY:
            me = f"{RELAY}/{t.node}"
            return [[me], [h for h in validators if h != me]]
        if t.chain == "relayer":
            me = f"relayer/{t.node}"
            return [[me], [h for h in soak.lab.hosts if h != me]]
        return [soak.host_keys(t.chain), validators + relayers]

    def duration(self, soak: Soak, t: Target, rng: random.Random, drawn: float) -> float:
        if t.chain in PARKS and rng.random() < soak.long_partition_p:
            t.note = "past_timeout"
            return soak.packet_timeout_s + rng.uniform(5, 20)
        return drawn

    def inject(self, soak: Soak, t: Target) -> Callable[[], None]:
        shape = {RELAY: "relay_validator", "relayer": "relayer"}.get(t.chain, "park")
        soak.partitions[shape] += 1
        cid = soak.cut(self.groups(soak, t))
        since = time.monotonic()

        def heal() -> None:
            soak.uncut(cid)
            if shape == "park" and time.monotonic() - since > soak.packet_timeout_s:  # held that long (the end of
                soak.partitions["park_past_timeout"] += 1  # the schedule heals everything: a long draw may not be)

        return heal


FAULT_KINDS: dict[str, FaultKind] = {k.name: k for k in (Kill(), Pause(), KillFabric(), Partition(), KillAnvil())}
"""Every fault kind the schedule can draw from, by name (add one: subclass :class:`FaultKind` and list it here)."""
DEFAULT_FAULTS = ("kill", "pause", "kill_fabric", "partition")
"""The kinds a run draws from unless ``--faults`` names others (``kill_anvil``: see :class:`KillAnvil`)."""


class Schedule:
    """A seeded schedule of faults: one every ``every_s`` (jittered), each healed after ``min_s``..``max_s``."""

    def __init__(self, soak: Soak, kinds: list[str], every_s: float, min_s: float, max_s: float,
                 rng: random.Random) -> None:
        self.soak = soak
        self.rng = rng
        """The schedule's own generator (the traffic's threads draw from theirs): the same seed, the same faults."""
        self.bag: list[str] = []
        self.every_s, self.min_s, self.max_s = every_s, min_s, max_s
        self.kinds = kinds
        self.active: list[Active] = []
        self.injected: Counter[str] = Counter()
        self.by_target: Counter[str] = Counter()
        self.skipped: dict[str, str] = {}
        self.no_target = 0
        for k in kinds:
            why = FAULT_KINDS[k].unavailable(soak)
            if why is not None:
                self.skipped[k] = why

    def heal_due(self, now: float, everything: bool = False) -> None:
        for a in list(self.active):
            if everything or a.heal_at <= now:
                self.active.remove(a)
                self.soak.log(f"heal {a.kind} {a.target.chain}/{a.target.node}")
                a.heal()

    def inject_one(self) -> None:
        """The next fault. Kinds come from a bag holding each usable kind once, shuffled, refilled when empty: a short
        run sees every kind, a long one each about equally often. A kind with no free target goes to the bag's end."""
        rng = self.rng
        usable = [k for k in self.kinds if k not in self.skipped]
        if not usable:
            return
        if not self.bag:
            self.bag = list(usable)
            rng.shuffle(self.bag)
        kind = FAULT_KINDS[self.bag.pop(0)]
        busy = {a.target.group for a in self.active}
        targets = [t for t in kind.targets(self.soak) if t.group not in busy]
        if not targets:
            self.no_target += 1
            self.bag.append(kind.name)
            return
        t = rng.choice(targets)
        duration = kind.duration(self.soak, t, rng, rng.uniform(self.min_s, self.max_s))
        self.soak.log(f"inject {kind.name} {t.chain}/{t.node} for {duration:.1f}s")
        heal = kind.inject(self.soak, t)
        self.injected[kind.name] += 1
        self.by_target[f"{kind.name}:{t.chain}/{t.node}"] += 1
        self.active.append(Active(kind.name, t, time.monotonic() + duration, heal))

    async def run(self, until: float) -> None:
        next_at = time.monotonic() + self.every_s * self.rng.uniform(0.5, 1.5)
        while (now := time.monotonic()) < until:
            await asyncio.to_thread(self.heal_due, now)
            await asyncio.to_thread(self.soak.reap)
            if now >= next_at:
                await asyncio.to_thread(self.inject_one)
                next_at = now + self.every_s * self.rng.uniform(0.5, 1.5)
            await asyncio.sleep(0.5)
        await asyncio.to_thread(self.heal_due, time.monotonic(), True)


# -- traffic ---------------------------------------------------------------------------------------------


class Traffic:
    """Each park's user sends to a random other park, cycling through the asset kinds, one send at a time."""

    def __init__(self, soak: Soak, interval_s: float) -> None:
        self.soak = soak
        self.interval_s = interval_s
        self.n = Counter[str]()

    def _asset(self, src: str, kind: str) -> tuple[str, str, dict[str, Any]] | None:
        """(target park, receiver on it, asset) for the next send of ``kind`` from ``src``; None if nothing to send."""
        s, rng = self.soak, self.soak.rng
        others = [p for p in PARKS if p != src]
        if kind == "energy":
            dst = rng.choice(others)
            self.n[f"energy/{src}"] += 1
            home_denom = voucher("kWh", dst, src)  # a voucher of dst's kWh held here: now and then sent home
            if self.n[f"energy/{src}"] % 4 == 0 and s.views[src].balance(USER[src], home_denom) >= 100:
                return dst, USER[dst], {"kind": "energy", "denom": home_denom, "amount_wh": 100}
            return dst, USER[dst], {"kind": "energy", "denom": "kWh", "amount_wh": rng.randrange(100, 1_000)}
        if kind == "charging_right":
            mine = s.views[src].account(USER[src])
            live = sorted(rid for rid, r in s.views[src].rights()["live"].items() if r["owner"] == mine)
            if not live:
                return None
            rid = rng.choice(live)
            # a right abroad goes back along its trace (its newest hop's chain); a right at home to a random park
            dst = rid.split("/")[1] if "/" in rid else rng.choice(others)
            return dst, USER[dst], {"kind": "charging_right", "right_id": rid}
        subject, model = SUBJECTS[src]
        dst = rng.choice(others)
        return dst, USER[dst], {"kind": "reputation", "subject": s.views[src].account(subject), "model": model}

    def send_one(self, src: str, kind: str) -> None:
        s = self.soak
        try:
            picked = self._asset(src, kind)
            if picked is None:
                s.sends[f"{kind}/skipped"] += 1
                return
            dst, receiver, asset = picked
            s.sends[kind] += 1
            timeout_ms = int((time.time() + s.packet_timeout_s) * 1000)
            sent = s.views[src].send(USER[src], dst, s.views[dst].account(receiver), lane(src, dst), timeout_ms,
                                     asset, wait_final=False)
            s.keys[packet_key(decode_packet(sent["packet"]))] = kind
        except Exception as exc:  # a fault on the source (or a refusal): counted; the chains say what was committed
            s.send_errors[f"{kind}:{type(exc).__name__}"] += 1

    async def run(self, src: str, until: float) -> None:
        kinds = itertools.cycle(KINDS)
        while time.monotonic() < until:
            await asyncio.to_thread(self.send_one, src, next(kinds))
            await asyncio.sleep(self.interval_s * self.soak.rng.uniform(0.5, 1.5))


# -- the run ---------------------------------------------------------------------------------------------


def devnet(root: Path) -> Devnet:
    chains = []
    for c in PARKS:
        chains.append({**chain_spec(c), **registry()})
    return Devnet(root, chains=chains,
                  lanes=[{"lane": lane(a, b), "a": a, "b": b} for a, b in itertools.combinations(PARKS, 2)],
                  relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                         "block_interval_ms": 300},
                  relayers=RELAYERS, relayer_options={"heartbeat_s": 1.0})


def host_keys(d: Devnet) -> list[str]:
    """A host for every process of the devnet (as :func:`relay.ops.netns.deployment_hosts` names them): each park
    node (the Ethereum park's node; the Fabric park's ``network``, whose orderers, peers and chaincode servers share
    its one address), each relay validator, each relayer."""
    keys = [f"{c['id']}/{n}" for c in d.chains for n in (c.get("nodes") or chain_kind(c["kind"]).fixed_nodes)]
    assert d.relay is not None
    return keys + [f"{RELAY}/{v}" for v in d.relay["validators"]] + [f"relayer/{r}" for r in d.relayers]


def make_lab(d: Devnet) -> netns.Lab:
    """A lab with a host for every process of ``d``, created (on a free /24: another run's lab may take the one
    drawn meanwhile, then another is drawn); ``d`` writes those addresses into its config and starts each node in
    its namespace."""
    keys = host_keys(d)
    for attempt in range(5):
        lab = netns.Lab(netns.plan_hosts(keys, netns.free_subnet()))
        try:
            lab.create()
        except netns.NetnsError as exc:
            if "already on an interface" not in str(exc) or attempt == 4:
                raise
            continue
        d.deployment = {"hosts": lab.hosts}
        d.wrap = lab.exec_argv
        return lab
    raise AssertionError("unreachable")


async def ready(s: Soak, timeout_s: float = 300) -> None:
    async def all_final() -> bool:
        relay = await status(s.cfg.relay_url(s.cfg.relay_validators[0]))
        if relay is None or relay["final_height"] < 2:
            return False
        for c in PARKS:
            try:
                if (await asyncio.to_thread(s.views[c].status))["final_height"] < 2:
                    return False
            except OSError:
                return False
        return True

    await wait_for("every chain finalising", all_final, timeout_s, poll_s=1.0)


def setup_assets(s: Soak) -> None:
    """The rights pool (each park's user holds ``RIGHTS_PER_PARK``, each in a slot of its own hours ahead), the
    scores the Ethereum and Fabric parks attest, and each park's kWh supply before any transfer."""
    now = int(time.time() * 1000)
    for i, park in enumerate(PARKS):
        view = s.views[park]
        for j in range(RIGHTS_PER_PARK):
            rid = f"soak-{park.split('-')[0]}-{j}"
            start = now + (2 + i * RIGHTS_PER_PARK + j) * 3_600_000
            view.issue_right(rid, "st-1", "tr-1", RIGHT_KW, start, start + 3_600_000, view.account(USER[park]))
            s.rights.add(rid)
        if park in SCORED_BY_OPERATOR:
            view.set_participant_score(view.account(SUBJECTS[park][0]), SCORED_BY_OPERATOR[park])  # type: ignore[attr-defined]
        s.supply0[park] = view.balance(USER[park], "kWh") + view.escrow("kWh")


async def drain(s: Soak, drain_s: float) -> list[dict[str, Any]]:
    """Until every packet the parks committed is final, or ``drain_s``; the final rows (read from the chains).

    Each pass reads every park's sent packets once and the state of each packet not yet seen final (a final state
    never changes, so it is read once): linear in the packets, where reading each pending packet by its key would
    rescan a park's sends for every packet it settled. A chain that does not answer is read again on the next
    pass; a packet whose state could not be read by the deadline is reported ``unreadable`` (and fails
    ``nothing_stuck``)."""
    deadline = time.monotonic() + drain_s
    final: dict[str, dict[str, Any]] = {}
    views: dict[str, Any] = {}  # reused across passes: an EVM park's view reads each ack log once
    while True:
        pending, complete = await asyncio.to_thread(_read_pass, s, final, views)
        if complete and not pending:
            return list(final.values())
        if time.monotonic() > deadline:
            s.log(f"drain: gave up with {len(pending)} packets not final"
                  f"{'' if complete else ' (and a park whose sends could not be read)'}")
            return list(final.values()) + [row or {"packet": k, "state": "unreadable"} for k, row in pending.items()]
        s.log(f"drain: {len(pending)} packets not final yet{'' if complete else ' (a park did not answer)'}")
        await asyncio.sleep(5)


def _read_pass(s: Soak, final: dict[str, dict[str, Any]],
               views: dict[str, Any]) -> tuple[dict[str, dict[str, Any] | None], bool]:
    """One pass of :func:`drain`: moves packets found final into ``final``; returns the others (their row, or None
    if unreadable this time) and whether every park's sends were read. The states of one park's packets are read
    in bulk (:func:`relay.ops.packets.packet_statuses`: a few batched reads per chain, not a few calls a packet)."""
    from relay.ops.packets import packet_statuses

    pending: dict[str, dict[str, Any] | None] = {}
    complete = True
    for park in PARKS:
        try:
            sent = park_view(s.cfg, park).sent()
        except Exception as exc:  # a chain still recovering: read again on the next pass
            s.log(f"reading {park}'s sends: {type(exc).__name__}: {exc}")
            complete = False
            continue
        todo = [(packet_key(decode_packet(raw)), raw, height) for raw, height in sent]
        todo = [t for t in todo if t[0] not in final]
        for i in range(0, len(todo), READ_BATCH):
            batch = todo[i:i + READ_BATCH]
            try:
                rows = packet_statuses(s.cfg, [raw for _, raw, _ in batch], views)
            except Exception as exc:
                s.log(f"reading {len(batch)} packets of {park}: {type(exc).__name__}: {exc}")
                pending.update((key, None) for key, _, _ in batch)
                continue
            for (key, _, height), row in zip(batch, rows, strict=True):
                row = row | {"sent_height": height}
                if row["state"] in FINAL_STATES:
                    final[key] = row
                else:
                    pending[key] = row
    return pending, complete


def chain_heights(s: Soak) -> dict[str, Any]:
    """Each chain's head and final height at the end (a chain that stalled under the faults shows here)."""
    out: dict[str, Any] = {}
    for c in PARKS:
        try:
            st = s.views[c].status()
            out[c] = {"height": st.get("height"), "final_height": st.get("final_height")}
        except Exception as exc:
            out[c] = f"{type(exc).__name__}: {exc}"
    from relay.ops.parks import rpc

    for v in s.cfg.relay_validators:
        try:
            st = rpc(s.cfg.relay_url(v), "status")
            out[f"{RELAY}/{v}"] = {"height": st["height"], "final_height": st["final_height"]}
        except Exception as exc:
            out[f"{RELAY}/{v}"] = f"{type(exc).__name__}: {exc}"
    return out


def checks(s: Soak, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from chains.common.rights import rights_violations

    out: dict[str, Any] = {}
    stuck = [f"{r['packet']}:{r['state']}" for r in rows if r["state"] not in FINAL_STATES]
    out["nothing_stuck"] = {"ok": not stuck, "stuck": stuck[:20]}
    listed = {r["packet"] for r in rows}
    lost = sorted(set(s.keys) - listed)
    out["every_send_seen_committed_exists"] = {"ok": not lost, "missing": lost[:20]}
    supply = {}
    for park in PARKS:
        now = s.views[park].balance(USER[park], "kWh") + s.views[park].escrow("kWh")
        supply[park] = {"before": s.supply0[park], "after": now}
    out["kwh_supply_per_park"] = {"ok": all(v["before"] == v["after"] for v in supply.values()), **supply}
    traces = {}
    for home in PARKS:
        escrowed = s.views[home].escrow("kWh")
        vouchers = sum(s.views[o].voucher_supply(voucher("kWh", home, o)) for o in PARKS if o != home)
        traces[home] = {"escrowed": escrowed, "vouchers_out": vouchers}
    out["escrow_equals_vouchers_per_trace"] = {"ok": all(v["escrowed"] == v["vouchers_out"] for v in traces.values()),
                                               **traces}
    reports = {p: s.views[p].rights() for p in PARKS}
    violations = rights_violations(reports)
    bases = {rid.rsplit("/", 1)[-1] for rep in reports.values() for rid in rep["live"]}
    missing = sorted(s.rights - bases)
    out["each_right_exactly_once"] = {"ok": not violations and not missing, "violations": violations[:20],
                                      "missing": missing}
    return out


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    d = devnet(root)
    no_lab = "--no-netns" if args.no_netns else netns.unavailable()
    with contextlib.ExitStack() as stack:
        lab = None
        if no_lab is None:
            lab = make_lab(d)
            stack.callback(lab.remove)  # whatever happens (an error, SIGINT, SIGTERM): after every process stopped
        return await soak(args, d, lab, no_lab)


async def soak(args: argparse.Namespace, d: Devnet, lab: netns.Lab | None, no_lab: str | None) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with contextlib.redirect_stdout(sys.stderr):  # init's "genesis ... written" lines: stdout is the figures
        d.write()
    t_start = time.monotonic()
    try:
        d.start_all()
        s = Soak(d, rng, args.packet_timeout_s, lab, no_lab, args.long_partition_p)
    except BaseException:
        d.stop_all()
        raise
    try:
        await ready(s)
        await asyncio.to_thread(setup_assets, s)
        for r in RELAYERS:
            s.start_relayer(r)
        startup_s = time.monotonic() - t_start
        s.log(f"devnet ready in {startup_s:.0f}s; soaking for {args.minutes} min (seed {args.seed})")
        if lab is not None:
            s.log(f"lab {lab.prefix}: {len(lab.hosts)} hosts on {lab.subnet}")
        sched = Schedule(s, args.faults, args.fault_every_s, args.fault_min_s, args.fault_max_s,
                         random.Random(f"faults/{args.seed}"))
        for k, why in sched.skipped.items():
            s.log(f"fault kind {k} skipped: {why}")
        traffic = Traffic(s, args.send_every_s)
        until = time.monotonic() + args.minutes * 60
        await asyncio.gather(sched.run(until), *(traffic.run(p, until) for p in PARKS))
        s.heal_all()  # the schedule healed its faults; no cut may outlive it
        s.reap()
        s.log(f"faults over ({dict(sched.injected)}); draining")
        t_drain = time.monotonic()
        try:
            rows = await drain(s, args.drain_s)
        except Exception as exc:  # the chains did not answer the final listing: what the run did, and not ok
            heights = await asyncio.to_thread(chain_heights, s)
            return {"seed": args.seed, "minutes": args.minutes, "startup_s": round(startup_s, 1),
                    "error": f"after the faults, listing the packets failed: {type(exc).__name__}: {exc}",
                    "sends": {"attempted": dict(s.sends), "failed": dict(s.send_errors),
                              "seen_committed": len(s.keys)},
                    "faults": {"injected": dict(sched.injected), "total": sum(sched.injected.values()),
                               "partitions": dict(sorted(s.partitions.items()))},
                    "heights_at_end": heights, "ok": False}
        drain_s = time.monotonic() - t_drain
        result_checks = await asyncio.to_thread(checks, s, rows)
        heights = await asyncio.to_thread(chain_heights, s)
    finally:
        s.stop_all()
    states = Counter(r["state"] for r in rows)
    by_kind: dict[str, Counter[str]] = {}
    refunds: Counter[str] = Counter()
    for r in rows:
        by_kind.setdefault(r["kind"], Counter())[r["state"]] += 1
        if r["state"] == "refunded":
            refunds[f"{r['kind']}:{r['ack']['code'] if r['ack'] else 'timeout'}"] += 1
    stuck = sum(n for st, n in states.items() if st not in FINAL_STATES)
    return {
        "seed": args.seed, "minutes": args.minutes, "startup_s": round(startup_s, 1), "drain_s": round(drain_s, 1),
        "packets": {"sent": len(rows), "completed": states["completed"], "refunded": states["refunded"],
                    "stuck": stuck, "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
                    "refunded_why": dict(sorted(refunds.items()))},
        "sends": {"attempted": dict(s.sends), "failed": dict(s.send_errors), "seen_committed": len(s.keys)},
        "netns": {"lab": lab.prefix if lab else None, "hosts": dict(lab.hosts) if lab else {},
                  "unavailable": no_lab},
        "faults": {"injected": dict(sched.injected), "total": sum(sched.injected.values()),
                   "partitions": dict(sorted(s.partitions.items())),
                   "skipped_kinds": sched.skipped, "no_free_target": sched.no_target,
                   "by_target": dict(sorted(sched.by_target.items()))},
        "unexpected_exits": dict(s.unexpected_exits),
        "heights_at_end": heights,
        "checks": result_checks,
        "ok": all(c["ok"] for c in result_checks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="how long faults and traffic run. Default 5")
    ap.add_argument("--seed", type=int, default=1, help="the fault schedule's and the traffic's seed. Default 1")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, databases)")
    ap.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                    help=f"fault kinds, comma-separated, of {','.join(FAULT_KINDS)}. Default: "
                         f"{','.join(DEFAULT_FAULTS)}")
    ap.add_argument("--fault-every-s", type=float, default=10.0, help="mean time between faults. Default 10")
    ap.add_argument("--fault-min-s", type=float, default=2.0, help="shortest fault. Default 2")
    ap.add_argument("--fault-max-s", type=float, default=10.0, help="longest fault. Default 10")
    ap.add_argument("--send-every-s", type=float, default=2.0, help="mean time between one park's sends. Default 2")
    ap.add_argument("--packet-timeout-s", type=float, default=120.0, help="each packet's timeout. Default 120")
    ap.add_argument("--long-partition-p", type=float, default=0.3,
                    help="the share of a park's partitions that outlast the packet timeout. Default 0.3")
    ap.add_argument("--no-netns", action="store_true",
                    help="every process on loopback, no network namespaces (then no partitions)")
    ap.add_argument("--drain-s", type=float, default=600.0,
                    help="after the faults, wait at most this long for every packet to be final. Default 600")
    args = ap.parse_args(argv)
    args.faults = [k for k in args.faults.split(",") if k]
    unknown = [k for k in args.faults if k not in FAULT_KINDS]
    if unknown:
        print(f"unknown fault kinds {unknown}; known: {sorted(FAULT_KINDS)}", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwind through run()'s finally, which stops every process

    signal.signal(signal.SIGTERM, on_term)
    with run_dir(args.keep, "parkrelay-soak-") as root:
        try:
            out = asyncio.run(run(args, root))
        except Exception as exc:  # the figures' reader gets an answer: what failed, and not ok
            import traceback

            traceback.print_exc()
            out = {"seed": args.seed, "minutes": args.minutes, "error": f"{type(exc).__name__}: {exc}", "ok": False}
    if args.json:
        emit(out, True)
    else:
        for k, v in out.items():
            print(f"{k:<20} {v}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # every process the soak started is stopped by now; a worker thread still blocked in a call to a chain that died
    # under the faults must not hold the exit (the interpreter would join it)
    os._exit(code)
