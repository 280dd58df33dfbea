"""chains/common/procs.py: a tied child dies with its parent however the parent dies, even when a worker thread
started it and has ended; a detached child outlives it; stop() takes the child's process group along.

Each case runs a small parent process (``python -c``), so the parent can be SIGKILLed for real. Waits poll
``/proc`` with a deadline, never sleep blindly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chains.common.procs import spawn, stop
from tests.integration.harness import REPO, descendants, proc_identity, still_running, wait_all_gone

PARENT = """
import sys, threading, time
from chains.common.procs import spawn
mode = sys.argv[1]
def go():
    child = spawn(["sleep", "300"], detach=mode == "detach")
    print(child.pid, threading.get_native_id(), flush=True)
if mode == "thread":  # the thread that asked for the child ends at once
    t = threading.Thread(target=go)
    t.start()
    t.join()
else:
    go()
print("ready", flush=True)
time.sleep(300)
"""


@pytest.fixture
def parent(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT, request.param], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    child_pid = tid = 0
    try:
        assert proc.stdout is not None
        child_pid, tid = (int(x) for x in proc.stdout.readline().split())
        assert proc.stdout.readline().strip() == "ready"
        yield proc, child_pid, tid
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if child_pid and proc_identity(child_pid) is not None:
            os.kill(child_pid, signal.SIGKILL)  # a detached child, or a failed test's


def _wait_thread_gone(pid: int, tid: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}/task/{tid}").exists():
        assert time.monotonic() < deadline, "the spawning thread did not end"
        time.sleep(0.02)


@pytest.mark.parametrize("parent", ["main", "thread"], indirect=True)
def test_a_tied_child_dies_when_its_parent_is_sigkilled(parent: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, child, tid = parent
    if tid != proc.pid:  # spawned from a worker thread that has ended: the child must not have died with it
        _wait_thread_gone(proc.pid, tid)
    kids = descendants(proc.pid)
    assert child in kids and still_running({child: kids[child]}), "the child should run while its parent does"
    proc.send_signal(signal.SIGKILL)
    assert wait_all_gone(kids, timeout_s=10) == {}


@pytest.mark.parametrize("parent", ["detach"], indirect=True)
def test_a_detached_child_outlives_its_parent(parent: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, child, _ = parent
    ident = descendants(proc.pid)[child]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running({child: ident}), "devnet up's nodes must keep running after the CLI exits"
    assert os.getsid(child) == child  # its own session: no terminal signal reaches it


def test_stop_takes_the_process_group_along() -> None:
    # a shell that starts a grandchild into its (the child's) group and then ignores SIGTERM
    proc = spawn(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    assert os.getpgid(grandchild) == proc.pid == os.getpgid(proc.pid)
    ident = proc_identity(grandchild)
    assert ident is not None
    stop(proc, timeout_s=0.5)
    proc.stdout.close()
    assert wait_all_gone({grandchild: ident}, timeout_s=10) == {}


def test_spawn_refuses_to_be_told_how_to_group() -> None:
    with pytest.raises(TypeError):
        spawn(["true"], start_new_session=True)


GRPC_PARENT = """
import subprocess, sys
if sys.argv[1] == "procs-first":
    from chains.common.procs import spawn
import grpc
if sys.argv[1] == "grpc-first":
    from chains.common.procs import spawn

channel = grpc.insecure_channel("127.0.0.1:1")  # a live channel with grpc's poller threads, as hfc keeps
try:
    grpc.channel_ready_future(channel).result(timeout=0.3)
except grpc.FutureTimeoutError:
    pass
try:
    aborted = sum(spawn(["/bin/true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait() != 0
                  for _ in range(200))
    print("aborted", aborted, flush=True)
except RuntimeError as exc:
    print("refused", exc, flush=True)
"""


@pytest.mark.parametrize("order", ["procs-first", "grpc-first"])
def test_children_of_a_grpc_process_never_abort_before_exec(order: str) -> None:
    """grpc's fork handlers abort about one forked child in ten (module docstring of procs): imported first,
    procs turns them off and no child of 200 aborts; imported after grpc, spawn() refuses instead."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", GRPC_PARENT, order], capture_output=True, text=True, env=env,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    if order == "procs-first":
        assert "aborted 0" in out.stdout, out.stdout + out.stderr[-2000:]
    else:
        assert out.stdout.startswith("refused grpc was imported before chains.common.procs"), out.stdout
