"""One long-running process of a Fabric park (an orderer, a peer or a chaincode server) and the short commands
(``peer``, ``osnadmin``, ``configtxgen``) the launcher runs.

Every child is started with :func:`chains.common.procs.spawn`, so it gets SIGTERM when whoever started it dies,
however it dies (no orphan orderer keeps its ports and ledger lock). A long-running child's output (stdout and
stderr) goes through a pipe to a pump thread, which appends each line to the process's log file and, if asked,
hands it to an ``echo`` callback (the supervisor prints it, prefixed with the process name). When the pipe closes
the pump reaps the child and reports its exit to ``on_exit``: the supervisor's wait for "any child exited" is that
event, not a poll.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from chains.common.procs import spawn, stop

__all__ = ["CommandResult", "FabricCommandError", "FabricNetworkError", "ManagedProcess", "http_get", "run_command"]

Echo = Callable[[str, str], None]
"""``echo(process_name, line)``: a line of a child's output (without its newline)."""
OnExit = Callable[[str, int, int], None]
"""``on_exit(process_name, generation, returncode)``: a child exited (negative code: killed by that signal)."""


class FabricNetworkError(RuntimeError):
    """The Fabric network could not be set up or a process of it failed; the message says which and why."""


class FabricCommandError(FabricNetworkError):
    """A Fabric CLI command failed."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        self.argv = list(argv)
        """The command line."""
        self.returncode = returncode
        """Its exit code (None: it timed out and was stopped)."""
        self.output = output
        """What it printed (stdout and stderr)."""
        what = "timed out" if returncode is None else f"exited with {returncode}"
        tail = " | ".join(output.strip().splitlines()[-6:])
        shown = " ".join([Path(argv[0]).name, *argv[1:]])
        super().__init__(f"`{shown}` {what}: {tail or '(no output)'}")


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float


def run_command(argv: Sequence[str], env: Mapping[str, str], *, timeout_s: float = 60.0, check: bool = True,
                cwd: Path | None = None) -> CommandResult:
    """Run a short Fabric command (tied to this process like every child) and return what it printed;
    :class:`FabricCommandError` if it fails (``check``) or does not finish within ``timeout_s``."""
    started = time.monotonic()
    proc = spawn(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 env=dict(env), cwd=cwd)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc, timeout_s=2)
        out = proc.stdout.read() if proc.stdout else b""
        raise FabricCommandError(argv, None, out.decode(errors="replace")) from None
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): never leave the command behind
            stop(proc, timeout_s=2)
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise FabricCommandError(argv, proc.returncode, text)
    return CommandResult(tuple(argv), proc.returncode, text, time.monotonic() - started)


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """``(status, body)`` of a GET on loopback; OSError if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback URL from our config
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class ManagedProcess:
    """A long-running child (module docstring). Start it, wait for its ``/healthz``, signal it, stop it; start it
    again after it exited (its data stays where its config says)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, *,
                 health_url: str | None = None, listen: Sequence[tuple[str, int]] = (), cwd: Path | None = None,
                 echo: Echo | None = None, on_exit: OnExit | None = None) -> None:
        self.name = name
        """Process name (``orderer0``, ``peer0.OperatorMSP``, ``chaincode.SalesMSP``)."""
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.health_url = health_url
        """Its operations ``/healthz`` (None: ready once started)."""
        self.listen = tuple(listen)
        """``(host, port)`` of listeners that must accept connections too: a peer's operations server answers
        ``/healthz`` before its ledgers are open and its gRPC server listens, an orderer's before its admin
        (channel participation) server does."""
        self.cwd = cwd
        self.echo = echo
        self.on_exit = on_exit
        self.generation = 0
        """How many times it was started (an exit report names the run it belongs to)."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn it (returns at once; :meth:`wait_healthy` waits until it serves)."""
        if self.running():
            raise FabricNetworkError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # the pump thread owns and closes it
        self.generation += 1
        header = f"--- parkrelay: starting {self.name} (run {self.generation}): {' '.join(self.argv)}\n"
        log.write(header.encode())
        log.flush()
        try:
            proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=self.env, cwd=self.cwd)
        except BaseException:
            log.close()
            raise
        self.proc = proc
        self._pump = threading.Thread(target=self._pump_output, args=(proc, log, self.generation),
                                      name=f"fabric-log-{self.name}", daemon=True)
        self._pump.start()

    def _pump_output(self, proc: subprocess.Popen[bytes], log: IO[bytes], generation: int) -> None:
        out = proc.stdout
        try:
            if out is not None:
                for raw in out:
                    log.write(raw)
                    log.flush()
                    if self.echo is not None:
                        self.echo(self.name, raw.decode(errors="replace").rstrip("\n"))
        except (OSError, ValueError):  # the log file went away, or the pipe was closed under us
            pass
        finally:
            code = proc.wait()
            log.close()
            if out is not None:
                out.close()
        if self.on_exit is not None:
            self.on_exit(self.name, generation, code)

    def wait_healthy(self, timeout_s: float = 60.0, poll_s: float = 0.05) -> None:
        """Poll its ``/healthz`` until it answers 200 and its listener accepts connections; fail fast if it exits
        first."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            proc = self.proc
            if proc is None:
                raise FabricNetworkError(f"{self.name} was never started")
            code = proc.poll()
            if code is not None:
                raise FabricNetworkError(f"{self.name} exited with {code} before it was healthy{self.log_hint()}")
            if self.health_url is None:
                return
            try:
                status, body = http_get(self.health_url, timeout_s=1.0)
                if status == 200:
                    closed = [f"{h}:{p}" for h, p in self.listen if not _accepts(h, p)]
                    if not closed:
                        return
                    last = f"/healthz OK but nothing listens on {', '.join(closed)} yet"
                else:
                    last = f"HTTP {status}: {body[:200].decode(errors='replace')}"
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise FabricNetworkError(f"{self.name} not healthy at {self.health_url} within {timeout_s:.0f} s "
                                         f"({last}){self.log_hint()}")
            time.sleep(poll_s)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (SIGKILL in the crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> int:
        """SIGKILL and reap it; its exit code."""
        self.signal(signal.SIGKILL)
        return self.wait()

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait until it exited and its output is drained; its exit code."""
        if self.proc is None:
            raise FabricNetworkError(f"{self.name} was never started")
        code = self.proc.wait(timeout=timeout_s)
        if self._pump is not None:
            self._pump.join(timeout=5)
        return code

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; its exit code (None if never started)."""
        if self.proc is None:
            return None
        code = stop(self.proc, timeout_s=timeout_s)
        if self._pump is not None:
            self._pump.join(timeout=5)
        return code

    def log_hint(self, lines: int = 8) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n  last lines of {self.log_path}:\n    " + "\n    ".join(tail) if tail else ""

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running() else "stopped"
        return f"<{self.name} {state}>"

