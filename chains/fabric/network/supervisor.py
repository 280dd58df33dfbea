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
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from chains.fabric.network.config import FabricConfigError, FabricNetworkConfig
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.process import FabricNetworkError

__all__ = ["MAX_BACKOFF_S", "STABLE_AFTER_S", "Supervisor", "main", "run_supervisor"]

log = logging.getLogger("chains.fabric.network.supervisor")

MAX_BACKOFF_S = 30.0
"""Longest delay before restarting a child that keeps dying."""
STABLE_AFTER_S = 60.0
"""A child that ran this long before it died is restarted at once (its backoff is reset)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""Colour escapes (a Fabric process's first lines come before it reads FABRIC_LOGGING_FORMAT)."""


class _Stop(Exception):
    """SIGTERM arrived: unwind to the shutdown."""


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
        """Bring the park up and supervise it until SIGTERM/SIGINT; the exit code (0 after a clean stop)."""
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            self.cfg.layout.ready.unlink(missing_ok=True)  # left by a supervisor that was SIGKILLed
            self.net.up()
            now = time.monotonic()
            self._started_at = dict.fromkeys(self.net.procs, now)
            self._ready_banner()
            self._write_ready()
            while True:
                name, generation, code = self._events.get()
                self._handle_exit(name, generation, code)
        except (KeyboardInterrupt, _Stop):
            log.info("fabric park %s: stopping", self.cfg.chain_id)
            return 0
        except (FabricNetworkError, FabricConfigError) as exc:
            log.error("fabric park %s: %s", self.cfg.chain_id, exc)
            return 1
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
            self.cfg.layout.ready.unlink(missing_ok=True)
            self.net.stop()
            signal.signal(signal.SIGTERM, previous)

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
        if delay:
            time.sleep(delay)  # a deliberate pause (crash loop), not a wait for an event
        try:
            self.net.start(name)
        except FabricNetworkError as exc:
            log.error("fabric park %s: restarting %s failed: %s", self.cfg.chain_id, name, exc)
            self._started_at[name] = time.monotonic()
            if not proc.running():  # it died again: its exit event is queued and brings us back here
                return
        self._started_at[name] = time.monotonic()
        log.info("fabric park %s: %s running again (pid %s)", self.cfg.chain_id, name, proc.pid)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


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
