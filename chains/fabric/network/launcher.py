"""Bring a Fabric park up from nothing, or back up from its data dir: :class:`FabricNetwork`.

:meth:`FabricNetwork.up` runs every step below and skips each one that is already done, so it is both the first
start and every restart (after a crash, a reboot, or a SIGKILL of one process):

1. **init** — key material (:mod:`.crypto`, kept once made), every process's config, ``configtx.yaml`` and the
   hfc connection profile (:mod:`.render`, rewritten each time);
2. **processes** — every orderer and peer started at once as real processes (tied to this one), then each one's
   operations ``/healthz`` polled until it answers 200 (a process that exits first fails the start at once,
   with the end of its log);
3. **channel** — unless every orderer already serves it (``osnadmin channel list``): the genesis block from
   ``configtxgen -outputBlock`` (made once, kept in the data dir) and ``osnadmin channel join`` on each orderer
   that lacks it. No system channel. A restarted orderer finds its channel in its own ledger;
4. **peers** — ``peer channel join`` for each peer that has not joined, then wait until each peer's ledger is
   as high as the orderers' (a restarted peer catches up before anyone reads lifecycle state from it);
5. **chaincode** — each organisation's ccaas package installed on its peer and its chaincode server started
   (``CHAINCODE_ID`` = its package id, ``CHAINCODE_SERVER_ADDRESS``); unless the definition is committed:
   a Raft leader awaited (orderer ``/metrics``), ``approveformyorg`` by the organisations that have not approved,
   ``commit``; finally ``ChaincodeSpec.ready_args`` queried on every peer until it succeeds.
6. **chaincode_init** — unless ``chaincode-initialised`` records it done, ``ChaincodeSpec.init_args`` (the bridge's
   ``init_bridge`` with the park's genesis) submitted once, endorsed by both organisations, waited for until it
   commits VALID; a refusal ``[packet.replay]`` (done by an earlier start) counts as done.

:attr:`FabricNetwork.timings` records how long each step took.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from chains.fabric.consts import PEER_ORGS
from chains.fabric.network.config import (
    FabricConfigError,
    FabricNetworkConfig,
    chaincode_process,
    orderer_process,
    peer_process,
)
from chains.fabric.network.crypto import init_crypto
from chains.fabric.network.lifecycle import Lifecycle
from chains.fabric.network.process import (
    Echo,
    FabricCommandError,
    FabricNetworkError,
    ManagedProcess,
    OnExit,
    http_get,
)
from chains.fabric.network.render import write_configs
from chains.fabric.network.tools import FabricTools, base_env

__all__ = ["FabricNetwork", "rss_kib"]

log = logging.getLogger("chains.fabric.network")

_REFUSAL = re.compile(r'status:500 message:\\?"\[([a-z0-9._]+)\]')
"""A chaincode refusal in ``peer chaincode invoke``'s output: ``status:500 message:"[<code>] ..."``."""

STOP_TIMEOUT_S = 10.0
"""How long one tier of processes (chaincode servers, peers, orderers) gets after SIGTERM before SIGKILL."""

_STRIPPED_FROM_CHAINCODE_ENV = ("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION",)
"""Variables a test process sets for hfc's old protos that the chaincode server (newer protos) must not inherit
(the pure-Python protobuf is ~10x slower)."""


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (``VmRSS``), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class FabricNetwork:
    """One Fabric park's processes and the steps that set it up (module docstring)."""

    def __init__(self, cfg: FabricNetworkConfig, *, echo: Echo | None = None, on_exit: OnExit | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        self.tools = FabricTools(cfg)
        self.lifecycle = Lifecycle(cfg, self.tools)
        self.echo = echo
        """Receives every line of every process's output (the supervisor prints them)."""
        self.on_exit = on_exit
        """Told when a process exits (the supervisor restarts it)."""
        self.procs: dict[str, ManagedProcess] = {}
        self.package_ids: dict[str, str] = {}
        """Each organisation's package id (set by :meth:`ensure_chaincode`)."""
        self.timings: dict[str, float] = {}
        """Seconds each step of the last :meth:`up` took (``init``, ``processes``, ``channel``, ``peers``,
        ``chaincode``, ``total``)."""

    # --- processes -----------------------------------------------------------------------------------

    @property
    def orderer_names(self) -> list[str]:
        return [orderer_process(i) for i in range(self.cfg.orderers)]

    @property
    def peer_names(self) -> list[str]:
        return [peer_process(m) for m in PEER_ORGS]

    @property
    def chaincode_names(self) -> list[str]:
        return [chaincode_process(m) for m in PEER_ORGS]

    def process(self, name: str) -> ManagedProcess:
        """The managed process called ``name`` (defined on first use; not started)."""
        if name not in self.procs:
            self.procs[name] = self._define(name)
        return self.procs[name]

    def _define(self, name: str) -> ManagedProcess:
        cfg, lay = self.cfg, self.cfg.layout
        common: dict[str, Any] = {"echo": self.echo, "on_exit": self.on_exit}
        for i in range(cfg.orderers):
            if name == orderer_process(i):
                ops = cfg.orderer_ports(i).operations
                return ManagedProcess(name, [self.tools.binary("orderer")], base_env(cfg, lay.config(name)),
                                      lay.log(name), health_url=f"http://{cfg.host}:{ops}/healthz",
                                      listen=[(cfg.host, cfg.orderer_ports(i).listen),
                                              (cfg.host, cfg.orderer_ports(i).admin)], **common)
        for msp in PEER_ORGS:
            if name == peer_process(msp):
                ops = cfg.peer_ports(msp).operations
                return ManagedProcess(name, [self.tools.binary("peer"), "node", "start"],
                                      base_env(cfg, lay.config(name)), lay.log(name),
                                      health_url=f"http://{cfg.host}:{ops}/healthz",
                                      listen=[(cfg.host, cfg.peer_ports(msp).listen)], **common)
            if name == chaincode_process(msp):
                package_id = self.package_ids.get(msp)
                if package_id is None:
                    raise FabricNetworkError(f"{name}: no package id yet (the chaincode is installed by up())")
                spec = cfg.chaincode
                env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_FROM_CHAINCODE_ENV}
                env.update(spec.env)
                env.update({"CHAINCODE_ID": package_id, "CHAINCODE_SERVER_ADDRESS": self.lifecycle.server_address(msp),
                            "PARKRELAY_FABRIC_MSP": msp, "PARKRELAY_FABRIC_CHANNEL": cfg.channel,
                            "PYTHONUNBUFFERED": "1"})
                return ManagedProcess(name, list(spec.command), env, lay.log(name), cwd=spec.cwd, **common)
        raise FabricNetworkError(f"no process called {name!r} in this network: expected one of "
                                 f"{[*self.orderer_names, *self.peer_names, *self.chaincode_names]}")

    def start(self, name: str, timeout_s: float = 60.0) -> None:
        """Start ``name`` unless it runs, and wait until it is healthy."""
        proc = self.process(name)
        if not proc.running():
            proc.start()
        proc.wait_healthy(timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to ``name`` (default SIGKILL) and wait until it exited; its exit code."""
        proc = self.process(name)
        proc.signal(sig)
        return proc.wait()

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        """Stop ``name`` if it runs, start it again with the same data dir, and wait until it is healthy."""
        self.process(name).stop()
        self.start(name, timeout_s)

    def running(self) -> dict[str, int]:
        """Process name -> pid of every process that runs."""
        return {n: p.pid for n, p in self.procs.items() if p.running() and p.pid is not None}

    def rss(self) -> dict[str, int | None]:
        """Process name -> resident set size in KiB of every process that runs."""
        return {n: rss_kib(pid) for n, pid in self.running().items()}

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop every process: chaincode servers, then peers, then orderers. The processes of one tier get SIGTERM
        together and share one ``timeout_s`` before SIGKILL, so a park stops within three timeouts however many
        peers it has (a supervisor that got SIGTERM because its own parent died must be gone quickly)."""
        for names in (self.chaincode_names, self.peer_names, self.orderer_names):
            tier = [self.procs[name] for name in names if name in self.procs]
            for proc in tier:
                proc.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for proc in tier:
                proc.stop(timeout_s=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> FabricNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the steps -------------------------------------------------------------------------------------

    def init(self) -> None:
        """Key material, configs and the connection profile (step 1); needs Fabric's binaries and sampleconfig."""
        self.tools.check_installed()
        self._check_settings()
        init_crypto(self.cfg)
        write_configs(self.cfg)

    def _check_settings(self) -> None:
        """Keep the settings a data dir was made with (``network.json``); refuse a config that changes one."""
        path = self.cfg.layout.settings
        now = self.cfg.fixed_settings()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(now, indent=2) + "\n")
            return
        was = json.loads(path.read_text())
        for key, value in now.items():
            if was.get(key) != value:
                raise FabricConfigError(f"{key}: the Fabric park in {self.cfg.data_dir} was made with {was.get(key)!r} "
                                        f"(fixed in its channel config, certificates or ledgers; {path}), got "
                                        f"{value!r}: keep it, or start from an empty data dir")

    def up(self, timeout_s: float = 120.0) -> None:
        """Every step (module docstring); returns once the chaincode answers on every peer."""
        started = time.monotonic()
        self.timings = {}
        with self._timed("init"):
            self.init()
        with self._timed("processes"):
            names = [*self.orderer_names, *self.peer_names]
            for name in names:
                if not self.process(name).running():
                    self.process(name).start()
            for name in names:
                self.process(name).wait_healthy(timeout_s)
        with self._timed("channel"):
            self.ensure_channel()
        with self._timed("peers"):
            self.ensure_peers_joined(timeout_s)
        with self._timed("chaincode"):
            self.ensure_chaincode(timeout_s)
        with self._timed("chaincode_init"):
            self.ensure_initialised(timeout_s)
        self.timings["total"] = time.monotonic() - started
        log.info("fabric park %s up in %.1f s (%s)", self.cfg.chain_id, self.timings["total"],
                 ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items() if k != "total"))

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        t = time.monotonic()
        yield
        self.timings[step] = time.monotonic() - t
        log.info("fabric park %s: %s done in %.2f s", self.cfg.chain_id, step, self.timings[step])

    def ensure_channel(self) -> None:
        """Step 3: every orderer serves the channel."""
        block = self.cfg.layout.channel_block(self.cfg.channel)
        missing = [i for i in range(self.cfg.orderers) if self.tools.orderer_channel(i) is None]
        if not missing:
            return
        if not block.exists():
            if len(missing) < self.cfg.orderers:
                serving = [orderer_process(i) for i in range(self.cfg.orderers) if i not in missing]
                raise FabricNetworkError(f"orderers {serving} serve channel {self.cfg.channel} but its genesis "
                                         f"block {block} is gone: restore it to join the others")
            self.tools.genesis_block(block)
            log.info("channel %s: genesis block %s", self.cfg.channel, block)
        for i in missing:
            self.tools.orderer_join(i, block)
            log.info("channel %s: %s joined", self.cfg.channel, orderer_process(i))

    def ensure_peers_joined(self, timeout_s: float = 60.0) -> None:
        """Step 4: every peer joined the channel and caught up with the orderers."""
        block = self.cfg.layout.channel_block(self.cfg.channel)
        for msp in PEER_ORGS:
            if self.cfg.channel not in self.tools.peer_channels(msp):
                self.tools.peer_join(msp, block)
                log.info("channel %s: %s joined", self.cfg.channel, peer_process(msp))
        target = self.orderer_height()
        for msp in PEER_ORGS:
            self._wait(f"{peer_process(msp)} at height {target}", partial(self._peer_reached, msp, target),
                       timeout_s, needs=(peer_process(msp),))

    def _peer_reached(self, msp: str, height: int) -> bool:
        return self.peer_height(msp) >= height

    def ensure_chaincode(self, timeout_s: float = 60.0) -> None:
        """Step 5: the chaincode installed, its servers running, its definition committed, answering on every
        peer."""
        spec = self.cfg.chaincode
        for msp in PEER_ORGS:
            package_id = self.lifecycle.package(msp)
            if self.lifecycle.install(msp, package_id):
                log.info("chaincode %s: installed %s on %s", spec.name, package_id, peer_process(msp))
            if self.package_ids.get(msp) != package_id and chaincode_process(msp) in self.procs:
                self.procs.pop(chaincode_process(msp)).stop()  # its package changed: a new CHAINCODE_ID
            self.package_ids[msp] = package_id
            server = self.process(chaincode_process(msp))
            if not server.running():
                server.start()
        committed = self.lifecycle.committed_sequence()
        if committed is not None and committed > spec.sequence:
            raise FabricNetworkError(f"chaincode {spec.name} on channel {self.cfg.channel} is committed at sequence "
                                     f"{committed}, newer than the configured {spec.sequence}")
        if committed != spec.sequence:
            orderer = self.wait_leader(timeout_s)
            approvals = self.lifecycle.approvals()
            for msp in PEER_ORGS:
                if not approvals.get(msp):
                    self.lifecycle.approve(msp, self.package_ids[msp], orderer)
                    log.info("chaincode %s: approved by %s", spec.name, msp)
            self.lifecycle.commit(orderer)
            log.info("chaincode %s: committed at sequence %d on channel %s", spec.name, spec.sequence,
                     self.cfg.channel)
        for msp in PEER_ORGS:
            self._wait(f"chaincode {spec.name} answering on {peer_process(msp)}",
                       partial(self._chaincode_answers, msp), timeout_s,
                       needs=(peer_process(msp), chaincode_process(msp)))

    def ensure_initialised(self, timeout_s: float = 60.0) -> None:
        """Step 6: the chaincode's ``init_args`` transaction committed once (module docstring)."""
        args = list(self.cfg.chaincode.init_args)
        marker = self.cfg.layout.chaincode_initialised
        if not args or marker.exists():
            return
        deadline = time.monotonic() + timeout_s
        while True:
            code, out = self.lifecycle.invoke(args, self.wait_leader(timeout_s), check=False)
            if code == 0 or "[packet.replay]" in out:
                break
            # the chaincode itself refused (status 500 with a stable code): no retry makes it accept. Anything else
            # (an orderer that lost its leader, a peer still catching up with the definition) is retried until the
            # deadline, then reported with the CLI's own words
            refused = _REFUSAL.search(out)
            if refused is not None or time.monotonic() > deadline:
                raise FabricNetworkError(f"chaincode {self.cfg.chaincode.name}: init transaction {args[0]} failed: "
                                         f"{' | '.join(out.strip().splitlines()[-4:])}")
            time.sleep(0.5)
        marker.write_text(f"{args[0]} done\n")
        log.info("chaincode %s: %s done", self.cfg.chaincode.name, args[0])

    def _chaincode_answers(self, msp: str) -> bool:
        try:
            self.lifecycle.query(msp, list(self.cfg.chaincode.ready_args))
        except FabricCommandError:
            return False
        return True

    # --- observations ----------------------------------------------------------------------------------

    def orderer_height(self) -> int:
        """The highest ledger height any running orderer reports for the channel."""
        heights: list[int] = []
        for i in range(self.cfg.orderers):
            if self.process(orderer_process(i)).running():
                info = self.tools.orderer_channel(i)
                height = info.get("height") if info is not None else None
                if isinstance(height, int):
                    heights.append(height)
        if not heights:
            raise FabricNetworkError(f"no running orderer serves channel {self.cfg.channel}")
        return max(heights)

    def peer_height(self, msp: str) -> int:
        """``msp``'s peer's ledger height on the channel."""
        out = self.tools.peer(msp, "channel", "getinfo", "--channelID", self.cfg.channel).output
        m = re.search(r'"height":\s*(\d+)', out)
        if m is None:
            raise FabricNetworkError(f"unexpected `peer channel getinfo` output: {out.strip()!r}")
        return int(m.group(1))

    def leader(self) -> int | None:
        """Index of the orderer that says it is the channel's Raft leader (its ``/metrics``), if any."""
        pattern = re.compile(r'^consensus_etcdraft_is_leader\{channel="' + re.escape(self.cfg.channel)
                             + r'"\}\s+1(\.0+)?\s*$', re.MULTILINE)
        for i in range(self.cfg.orderers):
            if not self.process(orderer_process(i)).running():
                continue
            try:
                status, body = http_get(f"http://{self.cfg.host}:{self.cfg.orderer_ports(i).operations}/metrics")
            except OSError:
                continue
            if status == 200 and pattern.search(body.decode(errors="replace")):
                return i
        return None

    def wait_leader(self, timeout_s: float = 60.0) -> int:
        """Wait until an orderer leads the channel; its index (transactions go there)."""
        found: list[int] = []

        def has_leader() -> bool:
            i = self.leader()
            if i is not None:
                found.append(i)
            return i is not None

        self._wait(f"a Raft leader of channel {self.cfg.channel}", has_leader, timeout_s)
        return found[-1]

    def _wait(self, what: str, ready: Callable[[], bool], timeout_s: float, needs: tuple[str, ...] = (),
              poll_s: float = 0.1) -> None:
        """Poll ``ready`` until it holds; fail at once if a process of ``needs`` is not running (it will not
        make anything ready), else after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            for name in needs:
                p = self.process(name)
                if not p.running():
                    raise FabricNetworkError(f"waiting for {what}: {name} is not running{p.log_hint()}")
            if time.monotonic() > deadline:
                raise FabricNetworkError(f"waiting for {what}: not within {timeout_s:.0f} s")
            time.sleep(poll_s)

