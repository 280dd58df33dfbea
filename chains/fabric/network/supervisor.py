"""``parkrelay node fabric``: a whole Fabric park — orderers, peers, chaincode servers — as one supervisor process.

Why one process and not one ``parkrelay node`` per orderer and peer: a Fabric park is set up as a whole (the
channel needs every orderer, the chaincode lifecycle needs both organisations' peers, each chaincode server needs
its organisation's package id), and each of its parts is already a real, separate Fabric process. The supervisor
is the one place that knows the order; its children are Fabric's own ``orderer`` and ``peer`` binaries and the
chaincode servers.

What it does:

* :meth:`FabricNetwork.up <chains.fabric.network.launcher.FabricNetwork.up>` (from nothing, or back from the data
  dir), writes ``<data dir>/ready.json`` (endpoints, pids, package ids; removed when it stops), then waits for
  events;
* prints every child's output line by line, prefixed with the process name (``orderer0 | ...``), besides appending
  it to ``<data dir>/logs/<process>.log``; its own messages go to the log (stderr);
* restarts a child that exits without being asked to (after a SIGKILL, a crash), at once the first time and then
  with a doubling delay (up to :data:`MAX_BACKOFF_S`) while it keeps dying within :data:`STABLE_AFTER_S`;
* on SIGTERM or SIGINT stops the chaincode servers, then the peers, then the orderers, and exits 0.

Every child is tied to the supervisor (:func:`chains.common.procs.spawn`): if the supervisor is SIGKILLed, the
kernel SIGTERMs each of them.

``python -m chains.fabric.network.supervisor --settings FILE.json`` runs the same supervisor from a JSON file
(``chain_id``, ``data_dir``, ``base_port``, optional ``host``, and :data:`~chains.fabric.network.config.MAPPING_KEYS`)
for tools and tests that have no deployment config.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from chains.fabric.network.config import FabricConfigError, FabricNetworkConfig
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.process import FabricNetworkError

__all__ = ["MAX_BACKOFF_S", "PARENT_GONE_GRACE_S", "STABLE_AFTER_S", "Supervisor", "main", "run_supervisor"]

log = logging.getLogger("chains.fabric.network.supervisor")

MAX_BACKOFF_S = 30.0
"""Longest delay before restarting a child that keeps dying."""
STABLE_AFTER_S = 60.0
"""A child that ran this long before it died is restarted at once (its backoff is reset)."""
PARENT_GONE_GRACE_S = 15.0
"""Once whatever started the supervisor is gone, how long the clean stop its death signal begins may take before
the supervisor exits at once (its children then get their own death signal from the kernel)."""


_STOP_CHECK_S = 0.5
"""How often the supervising loop looks whether a stop was asked (the signal handlers only set an event)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""Colour escapes (a Fabric process's first lines come before it reads FABRIC_LOGGING_FORMAT)."""


class Supervisor:
    """One Fabric park under supervision (module docstring)."""

    def __init__(self, cfg: FabricNetworkConfig, *, out: TextIO | None = sys.stdout, restart: bool = True) -> None:
        self.cfg = cfg
        self.out = out
        """Where children's lines are printed (None: only their log files)."""
        self.restart = restart
        """Restart children that exit on their own."""
        self._events: queue.SimpleQueue[tuple[str, int, int]] = queue.SimpleQueue()
        self._print_lock = threading.Lock()
        self._width = 0
        self.net = FabricNetwork(cfg, echo=self._echo if out is not None else None, on_exit=self._exited)
        self._backoff: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self.stop_requested = threading.Event()
        """Set by SIGTERM and SIGINT (and by the watcher once the parent is gone): the park stops."""

    def _echo(self, name: str, line: str) -> None:
        out = self.out
        if out is None:
            return
        with self._print_lock:
            self._width = max(self._width, len(name))
            out.write(f"{name:<{self._width}} | {_ANSI.sub('', line)}\n")
            out.flush()

    def _exited(self, name: str, generation: int, code: int) -> None:
        self._events.put((name, generation, code))

    def run(self) -> int:
        """Bring the park up and supervise it until SIGTERM/SIGINT; the exit code (0 after a clean stop).

        The signal handlers only set :attr:`stop_requested`: an exception raised from a handler lands wherever the
        main thread is, and where that is a fork's after-fork callback (the park's start-up forks Fabric's CLI
        again and again) Python swallows it and logging's lock stays taken (seen: a park left running after its
        parent was SIGKILLed). The supervising loop looks at the event every :data:`_STOP_CHECK_S`; during the
        start-up, a watcher thread stops the park (:func:`_watch`), as it does when the parent is gone and the
        death signal did not arrive."""
        stop, supervising, stopped = self.stop_requested, threading.Event(), threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        threading.Thread(target=_watch, args=(os.getppid(), stop, supervising, stopped, self.net.stop,
                                              self.cfg.chain_id), name="fabric-stop-watch", daemon=True).start()
        try:
            self.cfg.layout.ready.unlink(missing_ok=True)  # left by a supervisor that was SIGKILLed
            self.net.up()
            supervising.set()
            if not stop.is_set():
                now = time.monotonic()
                self._started_at = dict.fromkeys(self.net.procs, now)
                self._ready_banner()
                self._write_ready()
            while not stop.is_set():
                try:
                    name, generation, code = self._events.get(timeout=_STOP_CHECK_S)
                except queue.Empty:
                    continue
                self._handle_exit(name, generation, code)
            log.info("fabric park %s: stopping", self.cfg.chain_id)
            return 0
        except (FabricNetworkError, FabricConfigError) as exc:
            if stop.is_set():  # a start-up step failing because the park is being stopped
                return 0
            log.error("fabric park %s: %s", self.cfg.chain_id, exc)
            return 1
        finally:
            self.cfg.layout.ready.unlink(missing_ok=True)
            self.net.stop()
            stopped.set()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _ready_banner(self) -> None:
        cfg = self.cfg
        t = self.net.timings
        log.info("fabric park %s ready in %.1f s: orderers %s, peers %s, channel %s, chaincode %s; connection "
                 "profile %s", cfg.chain_id, t.get("total", 0.0),
                 ", ".join(cfg.orderer_endpoint(i) for i in range(cfg.orderers)),
                 ", ".join(f"{n}@{cfg.peer_endpoint(n.split('.', 1)[1])}" for n in self.net.peer_names),
                 cfg.channel, cfg.chaincode.name, cfg.layout.connection_profile)

    def _write_ready(self) -> None:
        cfg, net = self.cfg, self.net
        doc = {"chain_id": cfg.chain_id, "supervisor_pid": os.getpid(), "pids": net.running(),
               "channel": cfg.channel, "chaincode": cfg.chaincode.name, "package_ids": net.package_ids,
               "orderers": [cfg.orderer_endpoint(i) for i in range(cfg.orderers)],
               "peers": {n: cfg.peer_endpoint(n.split(".", 1)[1]) for n in net.peer_names},
               "connection_profile": str(cfg.layout.connection_profile), "up_seconds": net.timings}
        path = cfg.layout.ready
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)

    def _handle_exit(self, name: str, generation: int, code: int) -> None:
        proc = self.net.procs.get(name)
        if proc is None or proc.generation != generation or proc.running():
            return  # an old run's report, or one that was restarted already
        if not self.restart:
            raise FabricNetworkError(f"{name} exited with {code}{proc.log_hint()}")
        ran = time.monotonic() - self._started_at.get(name, 0.0)
        delay = 0.0 if ran >= STABLE_AFTER_S else self._backoff.get(name, 0.0)
        self._backoff[name] = min(MAX_BACKOFF_S, max(1.0, 2 * delay))
        log.warning("fabric park %s: %s exited with %s after %.1f s; restarting%s", self.cfg.chain_id, name, code,
                    ran, f" in {delay:.0f} s" if delay else "")
        if delay and self.stop_requested.wait(delay):  # a deliberate pause (crash loop), cut short by a stop
            return
        try:
            self.net.start(name)
        except FabricNetworkError as exc:
            log.error("fabric park %s: restarting %s failed: %s", self.cfg.chain_id, name, exc)
            self._started_at[name] = time.monotonic()
            if not proc.running():  # it died again: its exit event is queued and brings us back here
                return
        self._started_at[name] = time.monotonic()
        log.info("fabric park %s: %s running again (pid %s)", self.cfg.chain_id, name, proc.pid)


def _watch(parent: int, stop: threading.Event, supervising: threading.Event, stopped: threading.Event,
           stop_park: Callable[..., None], chain_id: str) -> None:
    """The supervisor's stop watcher (a daemon thread), until the main thread has stopped the park (``stopped``).

    * The parent gone (``os.getppid()`` changed) counts as a stop: the backstop of the death signal.
    * A stop during the start-up (``supervising`` not set yet: the main thread is in a long call, a Fabric CLI or a
      gRPC wait) stops the park from here (``stop_park``) and exits the process.
    * A stop the supervising loop has not finished within :data:`PARENT_GONE_GRACE_S` exits the process at once;
      the kernel then signals each child (they are tied to the supervisor, :func:`chains.common.procs.spawn`).

    Its messages go straight to stderr: it must not wait on a lock the main thread may hold."""
    while not stopped.wait(0.5):
        if os.getppid() != parent:
            stop.set()
        if not stop.is_set():
            continue
        if not supervising.is_set():
            os.write(2, f"fabric park {chain_id}: stopping during its start-up\n".encode())
            try:
                stop_park(timeout_s=5.0)
            finally:
                os._exit(0)
        if stopped.wait(PARENT_GONE_GRACE_S):
            return
        os.write(2, f"fabric park {chain_id}: not stopped {PARENT_GONE_GRACE_S:.0f} s after the stop was asked "
                    f"(parent {parent}); exiting now\n".encode())
        os._exit(1)


def run_supervisor(cfg: FabricNetworkConfig, *, out: TextIO | None = sys.stdout) -> int:
    """Run ``cfg``'s park under a :class:`Supervisor` until SIGTERM/SIGINT; the exit code."""
    return Supervisor(cfg, out=out).run()


def config_from_settings(path: Path) -> FabricNetworkConfig:
    """A config from a ``--settings`` JSON file (module docstring)."""
    try:
        raw: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FabricConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise FabricConfigError(f"{path}: expected a JSON object")
    try:
        chain_id, data_dir, base_port = raw.pop("chain_id"), raw.pop("data_dir"), raw.pop("base_port")
    except KeyError as exc:
        raise FabricConfigError(f"{path}: missing {exc}") from exc
    host = raw.pop("host", "127.0.0.1")
    if not isinstance(base_port, int) or not isinstance(chain_id, str) or not isinstance(data_dir, str):
        raise FabricConfigError(f"{path}: chain_id and data_dir must be strings, base_port an integer")
    return FabricNetworkConfig.from_mapping(raw, chain_id=chain_id, data_dir=Path(data_dir), base_port=base_port,
                                            host=host)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chains.fabric.network.supervisor",
                                description="Run a Fabric park (orderers, peers, chaincode servers) under one "
                                            "supervisor process")
    p.add_argument("--settings", required=True, type=Path, help="JSON: chain_id, data_dir, base_port, ...")
    p.add_argument("--quiet", action="store_true", help="do not print the children's output (log files only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg = config_from_settings(args.settings)
    except FabricConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_supervisor(cfg, out=None if args.quiet else sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
