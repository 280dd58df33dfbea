"""Child processes that die with their parent (issue 9): no node, relayer or anvil outlives whoever started it.

Every place that starts a process (the devnet supervisor, the test harnesses, the benchmark, a park node
starting anvil or a plotter) calls :func:`spawn`. A *tied* child (the default)

* asks the kernel for a signal when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), set in the child
  between fork and exec, so it fires even when the parent is SIGKILLed or a runner's timeout kills it and
  no ``finally`` runs. The signal is SIGTERM: nodes stop cleanly (an Ethereum node stops anvil, which
  dumps its state). The same holds one level down — a park node ties the anvil or plotter it starts — so
  a whole tree unwinds from the top when the top dies;
* closes the race where the parent dies between ``fork`` and ``prctl`` (the child checks its parent pid
  and signals itself);
* leads its own process group, so :func:`stop` can signal a child together with whatever it started
  into its group, and a Ctrl-C in the terminal reaches only the supervisor, which stops its children in
  order.

The caveat: the kernel sends the signal when the parent *thread* that forked the child exits, not the
process. A child forked from a worker thread (``asyncio.to_thread``, which the tests and the PoC farmer
use) would die when that thread ends. So :func:`spawn` forks on the main thread when called there (in
CPython the main OS thread lives until the process ends: interpreter shutdown, joining the other threads,
runs on it) and otherwise on one daemon "forker" thread that also lives until the interpreter ends. A
child's parent *task* in ``/proc/<pid>/task/<tid>/children`` is therefore the main thread or the forker.

A *detached* child (``detach=True``: ``parkrelay devnet up``, whose nodes keep running after the CLI exits
until ``devnet down``) gets a new session and no death signal.

gRPC and ``fork``: the death signal is set in a ``preexec_fn``, so the child is made with ``fork()`` and every
``pthread_atfork`` handler runs in it. gRPC's C core (loaded by hfc and the Fabric chaincode shim) registers such
handlers unless ``GRPC_ENABLE_FORK_SUPPORT`` is off when it initialises, and with them about one child in ten
aborts (SIGABRT, "epoll_wait error: Bad file descriptor") before it execs — measured with grpcio 1.85 once a
channel had been used. This module therefore turns the variable off when it is imported, which is early enough
whenever it is imported before ``grpc``; a process that imported ``grpc`` first with fork support on is refused
by :func:`spawn` with an explanation instead of losing children at random.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["PR_SET_PDEATHSIG", "spawn", "stop", "tie_to_parent"]

_GRPC_FORK_UNSAFE = ("grpc" in sys.modules
                     and os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("0", "false"))
"""grpc was initialised before this module with its fork handlers on: a forked child may abort."""
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before grpc initialises (module docstring)

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent (thread) dies (linux/prctl.h)."""

try:  # resolved in the parent: between fork and exec the child must not load libraries or take locks
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children are still stopped by stop() and the supervisors
    _prctl = None


def tie_to_parent(death_signal: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``death_signal`` when the calling thread's process (thread)
    dies. Runs in the forked child, so it only calls the pre-resolved ``prctl`` and raw syscalls."""
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: the signal will never come
            os.kill(os.getpid(), death_signal)

    return preexec


def spawn(argv: Sequence[str], *, detach: bool = False, new_session: bool = False,
          death_signal: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``argv``; tied to this process unless ``detach`` (see the module docs). Callable from any thread.

    ``new_session``: a tied child in a session of its own instead of just a process group (anvil: the
    node in front of it decides when it stops, so a terminal's signals must not reach it directly).
    Other keyword arguments go to :class:`subprocess.Popen`.
    """
    for key in ("preexec_fn", "start_new_session", "process_group"):
        if key in popen:
            raise TypeError(f"spawn() sets {key} itself")
    if _GRPC_FORK_UNSAFE and not detach:
        raise RuntimeError("grpc was imported before chains.common.procs with GRPC_ENABLE_FORK_SUPPORT on: a child "
                           "forked now may abort before it execs; import chains.common.procs first, or set "
                           "GRPC_ENABLE_FORK_SUPPORT=0 in the environment")
    if detach:
        return subprocess.Popen(list(argv), start_new_session=True, **popen)
    group: dict[str, Any] = {"start_new_session": True} if new_session else {"process_group": 0}
    return _on_process_lifetime_thread(lambda: subprocess.Popen(list(argv), preexec_fn=tie_to_parent(death_signal),
                                                      **group, **popen))


_forker_lock = threading.Lock()
_forker_jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
_forker: threading.Thread | None = None


def _forker_loop() -> None:
    while True:  # until the interpreter ends: the children's parent thread must live as long as the process
        job, fut = _forker_jobs.get()
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(job())
            except BaseException as exc:  # handed to the caller, who raises it in its own thread
                fut.set_exception(exc)


def _on_process_lifetime_thread(job: Callable[[], T]) -> T:
    """Run ``job`` on a thread that lives as long as the process — this one if it is the main thread or the
    forker, else the forker — and return its result (or raise its exception)."""
    global _forker
    current = threading.current_thread()
    if current is threading.main_thread() or current is _forker:
        return job()
    with _forker_lock:
        if _forker is None or not _forker.is_alive():
            _forker = threading.Thread(target=_forker_loop, name="parkrelay-forker", daemon=True)
            _forker.start()
    fut: Future[T] = Future()
    _forker_jobs.put((job, fut))
    return fut.result()


def stop(proc: subprocess.Popen[Any], timeout_s: float = 15.0) -> int:
    """SIGTERM the child (and its process group, if it leads one), wait up to ``timeout_s``, SIGKILL it if it is
    still there, then SIGKILL whatever is left in its group. Its exit code. Safe after the child exited."""
    group = _own_group(proc)
    if proc.poll() is None:
        _signal(proc, group, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal(proc, group, signal.SIGKILL)
    code = proc.wait()
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)  # whatever it started into its group and left behind
        except ProcessLookupError:
            pass
    return code


def _own_group(proc: subprocess.Popen[Any]) -> int | None:
    """The child's process group if it leads one (a tied child does), else None."""
    try:
        return proc.pid if proc.poll() is None and os.getpgid(proc.pid) == proc.pid else None
    except ProcessLookupError:
        return None


def _signal(proc: subprocess.Popen[Any], group: int | None, sig: int) -> None:
    try:
        if group is not None:
            os.killpg(group, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        return
