"""The anvil process behind an Ethereum park (SPEC §E4), and an automine anvil for tests.

:class:`Anvil` runs the ``anvil`` binary of ``make setup`` (or ``$PARKRELAY_ANVIL``) as a child process on
loopback. A park node runs it with interval mining (``--block-time``) and its state in a JSON file
(``--state`` + ``--state-interval``): loaded at start, dumped every second and on SIGTERM.

What a stop + start with the same state file keeps (measured with anvil 1.7.1, 2000 blocks):

* the head block number and every block (headers, hashes, transactions, receipts): the chain continues on
  top of the old head, the next block's parent hash linking to it; ``eth_getBlockByNumber`` answers for
  every old height;
* account balances, nonces, contract code and storage — the state *at the head it stopped at*;
* **not** the state at older heights: ``eth_getProof``/``eth_call``/``eth_getBalance`` at a height below
  the head at stop answer ``BlockOutOfRangeError`` after the restart, so proofs must use heights at or
  above it (a relayer retries once ``confirmation_depth`` new blocks are final). anvil's
  ``--preserve-historical-states`` would keep them, but its dump then grows superlinearly (2000 blocks:
  240 MB and seconds per dump, against 3.5 MB and 0.07 s without), so it is off by default;
* after a SIGKILL of anvil itself, only what the last periodic dump held (at most ``state_interval_s``
  old); the file is written in place, so a kill during a dump can truncate it (:class:`Anvil` then refuses
  to start, naming the file). Blocks lost this way are mined again with other hashes, so nothing may
  treat a block as final before a dump holds it: the relay validators attest a block only once it is
  ``confirmation_depth`` blocks deep, and the deployment config requires that depth to span at least
  two dump intervals (``confirmation_depth × block_interval_ms >= 2000`` at the 1 s interval).

The state file grows by ~1.7 KB per block (≈6 MB per hour at one block a second) and is rewritten whole
at every dump: fine for a devnet, not for weeks of uptime.

The park node's own accounts are generated keys funded with :meth:`Anvil.set_balance`; anvil's mnemonic
dev accounts are off (``--accounts 0``) for a park node and on for :func:`automine_anvil` (tests).

anvil serves every method to whoever reaches it (cheat codes included) and cannot turn off its HTTP listener,
so a park node runs it with ``ipc_path`` (``--ipc``, the socket made 0600) and ``isolate_network`` (the process
in network and user namespaces of its own, :data:`UNSHARE_NET`, where its TCP listener reaches no one); the node
talks to the socket and serves the public through :mod:`chains.ethereum.rpc_proxy` (docs/security.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chains.common.procs import spawn

ANVIL_ENV = "PARKRELAY_ANVIL"
"""Environment variable naming another anvil binary."""
NPM_ANVIL = Path(__file__).resolve().parent / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
"""Where ``make setup`` (``npm ci --prefix chains/ethereum``) installs anvil."""


class AnvilError(Exception):
    """anvil is missing, did not start, or failed."""


def find_anvil() -> Path:
    """The anvil binary: ``$PARKRELAY_ANVIL`` if set, else the one ``make setup`` installs."""
    env = os.environ.get(ANVIL_ENV)
    path = Path(env) if env else NPM_ANVIL
    if not path.is_file() or not os.access(path, os.X_OK):
        source = f"${ANVIL_ENV}" if env else "the npm package @foundry-rs/anvil-linux-amd64"
        raise AnvilError(f"anvil not found at {path} ({source}); run `make setup`, which installs it with "
                         f"`npm ci --prefix chains/ethereum`, or point ${ANVIL_ENV} at an anvil binary")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class AnvilConfig:
    """How to run one anvil."""

    port: int
    """RPC port on ``host``."""
    chain_id: int
    """EIP-155 chain id (``--chain-id``)."""
    block_time_s: int | None = None
    """Interval mining every this many seconds (``--block-time``); None: automine (a block per transaction)."""
    state_path: Path | None = None
    """``--state``: loaded at start if it exists, dumped periodically and on SIGTERM. None: in memory only."""
    state_interval_s: int = 1
    """``--state-interval``: seconds between periodic dumps (a SIGKILL of anvil loses at most this much)."""
    preserve_historical_states: bool = False
    """``--preserve-historical-states``: dump per-block states so queries at past heights survive a restart
    (the dump grows superlinearly with the chain: see the module docs)."""
    dev_accounts: int = 0
    """anvil's mnemonic dev accounts (``--accounts``); a park node uses none."""
    host: str = "127.0.0.1"
    """Address anvil binds to."""
    log_path: Path | None = None
    """anvil's stdout/stderr (appended); None: discarded."""
    ipc_path: Path | None = None
    """``--ipc``: anvil's unix socket (made 0600 once anvil answers); :meth:`Anvil.rpc` talks to it instead of
    TCP. The park node's only way in to its anvil (docs/security.md)."""
    isolate_network: bool = False
    """Run anvil in a network namespace of its own (``unshare --user --map-root-user --net``): its TCP listener,
    which anvil cannot turn off, is then unreachable from the host; only :attr:`ipc_path` reaches it. Needs
    ``ipc_path`` and unprivileged user namespaces (:func:`network_isolation_available`)."""


class Anvil:
    """One anvil child process.

    The child is tied to this process (:func:`chains.common.procs.spawn`): SIGTERM when it dies, however it
    dies, so anvil dumps its state and exits instead of living on as an orphan holding the port. anvil runs
    in a session of its own, so a terminal's Ctrl-C reaches only the node, which stops anvil in order.
    """

    def __init__(self, config: AnvilConfig, binary: Path | None = None) -> None:
        self.config = config
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """anvil's HTTP URL (useless when :attr:`AnvilConfig.isolate_network`: use :attr:`endpoint`)."""
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def endpoint(self) -> str:
        """Where this process reaches anvil: the IPC socket if configured, else :attr:`url` (for logs)."""
        return str(self.config.ipc_path) if self.config.ipc_path is not None else self.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        """The command line (for logs and tests)."""
        c = self.config
        binary = self.binary or find_anvil()
        argv = [str(binary), "--host", c.host, "--port", str(c.port), "--chain-id", str(c.chain_id),
                "--accounts", str(c.dev_accounts), "--color", "never"]
        if c.ipc_path is not None:
            argv += ["--ipc", str(c.ipc_path)]
        if c.isolate_network:
            if c.ipc_path is None:
                raise AnvilError("an anvil in its own network namespace is reachable only over --ipc: set ipc_path")
            argv = [*UNSHARE_NET, *argv]
        if c.block_time_s is not None:
            if c.block_time_s < 1:
                raise AnvilError(f"block time must be at least 1 s, got {c.block_time_s}")
            argv += ["--block-time", str(c.block_time_s)]
        if c.state_path is not None:
            argv += ["--state", str(c.state_path), "--state-interval", str(c.state_interval_s)]
            if c.preserve_historical_states:
                argv.append("--preserve-historical-states")
        return argv

    def spawn(self) -> None:
        """Start the process (returns at once; :meth:`wait_ready` waits for its RPC)."""
        if self.proc is not None:
            raise AnvilError("anvil already started")
        c = self.config
        if not c.isolate_network and _port_in_use(c.host, c.port):
            raise AnvilError(f"port {c.host}:{c.port} is already in use (another node, or an anvil left running?)")
        if c.ipc_path is not None:
            c.ipc_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                c.ipc_path.unlink()  # a socket left by an anvil that was killed
        if c.state_path is not None:
            _check_state_file(c.state_path)
        argv = self.argv()
        out: Any = subprocess.DEVNULL
        if c.log_path is not None:
            c.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(c.log_path, "ab")
            out = self._log
        self.proc = spawn(argv, new_session=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll ``eth_chainId`` until anvil answers with the configured chain id; fail fast if it exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.returncode()
            if code is not None:
                raise AnvilError(f"anvil exited with code {code} before answering on {self.url}{self._log_hint()}")
            try:
                got = int(self.rpc("eth_chainId", timeout=1.0), 16)
            except (OSError, AnvilError):
                if time.monotonic() > deadline:
                    raise AnvilError(f"anvil did not answer on {self.url} within {timeout_s:.0f} s"
                                     f"{self._log_hint()}") from None
                time.sleep(0.05)
                continue
            if got != self.config.chain_id:
                raise AnvilError(f"anvil on {self.url} reports chain id {got}, expected {self.config.chain_id}")
            if self.returncode() is not None:  # someone else answered on the port
                continue
            if self.config.ipc_path is not None:
                os.chmod(self.config.ipc_path, 0o600)  # connecting needs write access: the node's user only
            return

    def start(self, timeout_s: float = 30.0) -> Anvil:
        """:meth:`spawn` and :meth:`wait_ready`; stops the process again if it does not become ready."""
        self.spawn()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def returncode(self) -> int | None:
        """None while running (or never started), else the exit code (negative: killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def wait(self) -> int:
        """Block until anvil exits; its exit code."""
        if self.proc is None:
            raise AnvilError("anvil not started")
        return self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (anvil dumps its state and exits), wait up to ``timeout_s``, then SIGKILL. The exit code,
        or None if it was never started. Safe to call twice and after anvil died on its own."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def rpc(self, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
        """One JSON-RPC call (blocking), over the IPC socket if configured, else HTTP. Raises
        :class:`AnvilError` on a JSON-RPC error, OSError on I/O."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        if self.config.ipc_path is not None:
            out = json.loads(_ipc_exchange(self.config.ipc_path, body, timeout))
        else:
            req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # noqa: S310
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URL from our config
                out = json.loads(r.read())
        if "error" in out:
            raise AnvilError(f"{method}: {out['error'].get('message')}")
        return out["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def set_balance(self, address: str, wei: int) -> None:
        """Give ``address`` exactly ``wei`` (anvil cheat code; no transaction, no block)."""
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def _log_hint(self) -> str:
        path = self.config.log_path
        if path is None or not path.exists():
            return ""
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        return f"; last lines of {path}: " + " | ".join(tail) if tail else f"; see {path}"

    def __enter__(self) -> Anvil:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


UNSHARE_NET = ("unshare", "--user", "--map-root-user", "--net", "--")
"""Prefix that starts a program in new user and network namespaces (util-linux ``unshare``, no privileges
needed where unprivileged user namespaces are enabled, the default of current kernels). ``unshare`` execs the
program, so the child's pid is anvil's own."""


@functools.cache
def network_isolation_available() -> bool:
    """Whether :data:`UNSHARE_NET` works on this host (checked once per process)."""
    try:
        done = subprocess.run([*UNSHARE_NET, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _ipc_exchange(path: Path, body: bytes, timeout: float) -> bytes:
    """One newline-delimited request/answer on anvil's IPC socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(body + b"\n")
        chunks: list[bytes] = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"anvil closed {path} before answering")
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(chunks)


def _check_state_file(path: Path) -> None:
    """Refuse a state file that is not JSON (anvil writes it in place, so a kill mid-dump truncates it)."""
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            json.load(f)
    except (ValueError, OSError) as exc:
        raise AnvilError(f"anvil state file {path} is unreadable ({exc}); it was probably cut short by a kill "
                         f"during a dump. Restore a copy, or delete it to start the chain afresh (the contracts "
                         f"are then deployed again at the same addresses, but the chain's history is lost)") from exc


@contextlib.contextmanager
def automine_anvil(chain_id: int = 31337, *, dev_accounts: int = 10, log_path: Path | None = None,
                   block_time_s: int | None = None) -> Iterator[Anvil]:
    """TEST HELPER: an in-memory anvil on a free loopback port, mining a block per transaction (or every
    ``block_time_s``), with anvil's funded mnemonic dev accounts; stopped on exit."""
    for attempt in range(3):
        anvil = Anvil(AnvilConfig(port=free_port(), chain_id=chain_id, block_time_s=block_time_s,
                                  dev_accounts=dev_accounts, log_path=log_path))
        try:
            anvil.start()
        except AnvilError:
            if attempt == 2:
                raise
            continue  # lost the race for the free port
        break
    try:
        yield anvil
    finally:
        anvil.stop()
