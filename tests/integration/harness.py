"""Real node processes on loopback for integration tests.

A :class:`Devnet` writes a deployment config into a temp dir (free ports), runs ``devnet init`` in
process, and starts each node as its own ``python -m relay.cli node ...`` process. Tests wait for
events (heights, finality) by polling the nodes' RPC with a deadline, never by sleeping blindly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from adapters.common.rpc import JsonRpcClient
from chains.common.procs import spawn
from chains.registry import chain_kind
from protocol.errors import TransportError
from relay.ops import devnet
from relay.ops.config import CHAIN_BASE_KEYS, DeploymentConfig, load_config
from relay.ops.layout import node_key_path

REPO = Path(__file__).resolve().parents[2]


def _write_key(path: Path, digest: Any) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(digest.hexdigest() + "\n")


PORT_RANGE = (15000, 32000)
"""Where test nodes listen: below Linux's ephemeral range (32768-60999), from which the kernel picks the local port
of every outgoing connection. A port taken from that range (bind to port 0) can be handed to a client socket in
the instant between a node's crash and its restart on the same port, and the restart then fails to bind."""


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive free ports after it, in :data:`PORT_RANGE` (random start, so
    concurrent test runs rarely probe the same block)."""
    rng = random.Random(os.getpid() * 1_000_003 + time.monotonic_ns())
    lo, hi = PORT_RANGE
    for _ in range(400):
        base = rng.randrange(lo, hi - n)
        if any(p in _HANDED_OUT for p in range(base, base + n)):
            continue  # free now, but given to a config of this process that has not bound it yet
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            _HANDED_OUT.update(range(base, base + n))
            return base
    raise RuntimeError(f"no block of {n} free ports in {lo}..{hi}")


_HANDED_OUT: set[int] = set()
"""Ports :func:`free_port_block` gave out in this process: a devnet's chains and its relay each get a block before
any of them binds, so a later block must not overlap an earlier one (it once did: the config then refused the
overlap, "port already used")."""


def ports_of(chain: dict[str, Any]) -> int:
    """How many consecutive ports the chain table ``chain`` needs (its kind's ``port_count``: one per node, four per
    Fabric orderer and peer)."""
    kind = chain_kind(chain["kind"])
    params = kind.parse_params({k: v for k, v in chain.items() if k not in CHAIN_BASE_KEYS})
    return kind.port_count(params, tuple(chain.get("nodes", kind.fixed_nodes)))


@dataclass
class Devnet:
    """A deployment in ``root`` whose nodes run as child processes."""

    root: Path
    chains: list[dict[str, Any]]
    lanes: list[dict[str, str]] = field(default_factory=list)
    relay: dict[str, Any] | None = None
    relayers: list[str] = field(default_factory=list)
    relayer_options: dict[str, Any] = field(default_factory=dict)
    """More keys of the ``[relayers]`` table (``heartbeat_s``, ``takeover_after_s``)."""
    procs: dict[tuple[str, str], subprocess.Popen[bytes]] = field(default_factory=dict)
    cfg: DeploymentConfig | None = None
    deployment: dict[str, Any] = field(default_factory=dict)
    """More keys of the ``[deployment]`` table (``hosts``: each process's address, :mod:`relay.ops.netns`)."""
    wrap: Callable[[str, list[str]], list[str]] | None = None
    """``wrap(key, argv)``: the command that runs node ``key`` (``"<chain id>/<node>"``) instead of ``argv`` (inside
    its host's namespace: :meth:`relay.ops.netns.Lab.exec_argv`)."""

    def write(self) -> DeploymentConfig:
        for c in self.chains:
            c.setdefault("base_port", free_port_block(ports_of(c)))
        doc = {"deployment": {"data_dir": str(self.root / "data"), **self.deployment}, "chains": self.chains}
        if self.lanes:
            doc["lanes"] = self.lanes
        if self.relay:
            doc["relay"] = self.relay
        if self.relayers:
            doc["relayers"] = {"names": self.relayers, **self.relayer_options}
        path = self.root / "devnet.toml"
        path.write_text(tomli_w.dumps(doc))
        self.cfg = load_config(path)
        for c in self.cfg.chains_of_kind("poc"):
            for n in c.nodes:
                # TEST-ONLY farmer keys, fixed so plot ids (bound to the key) hit the plot cache across runs
                _write_key(node_key_path(self.cfg, c.id, n), hashlib.sha256(f"parkrelay-test-farmer/{n}".encode()))
        devnet.init(self.cfg)
        return self.cfg

    def start(self, chain_id: str, node: str) -> None:
        assert self.cfg is not None
        logs = self.cfg.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"{chain_id}-{node}.log", "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "relay.cli", "--log-level", "info", "node"]
        if chain_id == self.cfg.relay_chain_id:
            argv += ["relay", "--config", str(self.cfg.path), "--validator", node]
        else:
            chain = self.cfg.chain(chain_id)
            flag = chain_kind(chain.kind).node_flag
            argv += [chain.kind, "--config", str(self.cfg.path), "--chain", chain_id, flag, node]
        # tied to this process: a test run killed from outside (SIGKILL, a timeout) takes its nodes with it
        if self.wrap is not None:
            argv = self.wrap(f"{chain_id}/{node}", argv)
        self.procs[(chain_id, node)] = spawn(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def start_all(self) -> None:
        assert self.cfg is not None
        for c in self.cfg.chains:
            for n in c.nodes:
                self.start(c.id, n)
        if self.cfg.relay_base_port is not None:
            for v in self.cfg.relay_validators:
                self.start(self.cfg.relay_chain_id, v)

    def kill(self, chain_id: str, node: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.pop((chain_id, node))
        p.send_signal(sig)
        p.wait(timeout=20)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def url(self, chain_id: str, node: str) -> str:
        assert self.cfg is not None
        if chain_id == self.cfg.relay_chain_id:
            return self.cfg.relay_url(node)
        return self.cfg.chain(chain_id).url_of(node)

    def client(self, chain_id: str, node: str) -> JsonRpcClient:
        return JsonRpcClient(self.url(chain_id, node), side=f"{chain_id}/{node}", timeout_s=5)

    def log_tail(self, chain_id: str, node: str, n: int = 40) -> str:
        assert self.cfg is not None
        p = self.cfg.data_dir / "logs" / f"{chain_id}-{node}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


def proc_identity(pid: int) -> tuple[int, int, str] | None:
    """``(pid, start time in clock ticks, state)`` of a live process from ``/proc/<pid>/stat``, None if it is gone.
    The start time tells a process from a later one that reuses its pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces and parentheses
    return pid, int(fields[19]), fields[0]


def descendants(pid: int) -> dict[int, tuple[int, int, str]]:
    """Every live descendant of ``pid`` (children, grandchildren...), by pid, from a scan of ``/proc``."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parent_of[int(entry.name)] = int(raw[raw.rindex(")") + 2:].split()[1])
    found: dict[int, tuple[int, int, str]] = {}
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parent_of.items():
            if parent == p and child not in found and (ident := proc_identity(child)) is not None:
                found[child] = ident
                frontier.append(child)
    return found


def still_running(procs: dict[int, tuple[int, int, str]]) -> dict[int, str]:
    """Those of ``procs`` (from :func:`descendants`) still running, with their command lines. A zombie is not
    running: it is dead and waits for whoever inherited it (in a container, PID 1 may never reap it)."""
    out = {}
    for pid, (_, started, _) in procs.items():
        now = proc_identity(pid)
        if now is not None and now[1] == started and now[2] != "Z":
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (FileNotFoundError, ProcessLookupError):
                continue
    return out


def wait_all_gone(procs: dict[int, tuple[int, int, str]], timeout_s: float) -> dict[int, str]:
    """Poll until none of ``procs`` runs or ``timeout_s`` passes; what still runs then (empty: all gone)."""
    deadline = time.monotonic() + timeout_s
    while (left := still_running(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def fabric_children(supervisor_pid: int) -> dict[str, int]:
    """The Fabric processes under a Fabric park's supervisor (``parkrelay node fabric``): process name
    (``peer0.SalesMSP``, ``orderer1``: the last part of each one's FABRIC_CFG_PATH) -> pid."""
    out: dict[str, int] = {}
    for pid in still_running(descendants(supervisor_pid)):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for entry in env:
            if entry.startswith(b"FABRIC_CFG_PATH="):
                out[Path(entry.split(b"=", 1)[1].decode()).name] = pid
    return out


async def status(url: str) -> dict[str, Any] | None:
    try:
        async with JsonRpcClient(url, side="probe", timeout_s=2) as c:
            st: dict[str, Any] = await c.call("status")
            return st
    except TransportError:
        return None


async def eth_height(url: str) -> int | None:
    """An Ethereum node's head height, or None while it does not answer."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                s.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}) as r:
            return int((await r.json())["result"], 16)
    except (aiohttp.ClientError, OSError, TimeoutError, KeyError, ValueError):
        return None


async def wait_for(what: str, check: Callable[[], Awaitable[Any]], timeout_s: float, poll_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns a truthy value; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
