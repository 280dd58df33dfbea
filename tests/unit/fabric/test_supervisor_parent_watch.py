"""The Fabric supervisor's stop watcher (:func:`chains.fabric.network.supervisor._watch`): the parent gone counts as a
stop; a stop during the start-up stops the park from the watcher; a stop the main thread does not finish in time
exits the process (the kernel then signals the park's processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from chains.fabric.network import supervisor

PROGRAM = textwrap.dedent("""
    import os, sys, threading, time
    from chains.fabric.network import supervisor
    supervisor.PARENT_GONE_GRACE_S = 0.3
    parent_state, phase = sys.argv[1], sys.argv[2]
    stop, supervising, stopped = threading.Event(), threading.Event(), threading.Event()
    if phase == "supervising":
        supervising.set()
    if parent_state == "stop-asked":
        stop.set()  # what SIGTERM's handler does
    parent = os.getppid() if parent_state != "gone" else -1  # -1: "the parent I was started by" is gone

    def stop_park(timeout_s: float) -> None:
        print(f"park stopped by the watcher (timeout {timeout_s})", flush=True)

    threading.Thread(target=supervisor._watch, args=(parent, stop, supervising, stopped, stop_park, "fabric-test"),
                     daemon=True).start()
    time.sleep(3)  # a main thread stuck in a long call
    print("main thread finished", flush=True)
""")


def _run(parent: str, phase: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, parent, phase], capture_output=True, text=True, timeout=30)


def test_a_parent_gone_while_supervising_exits_after_the_grace_period() -> None:
    done = _run("gone", "supervising")
    assert done.returncode == 1 and "main thread finished" not in done.stdout
    assert "not stopped 0 s after the stop was asked (parent -1)" in done.stderr


def test_a_stop_during_the_start_up_stops_the_park_from_the_watcher() -> None:
    for parent in ("gone", "stop-asked"):
        done = _run(parent, "starting")
        assert done.returncode == 0, (parent, done.stderr)
        assert "park stopped by the watcher (timeout 5.0)" in done.stdout and "main thread finished" not in done.stdout
        assert "stopping during its start-up" in done.stderr


def test_nothing_happens_while_the_parent_lives_and_no_stop_is_asked() -> None:
    for phase in ("starting", "supervising"):
        done = _run("alive", phase)
        assert done.returncode == 0 and "main thread finished" in done.stdout and done.stderr == ""


def test_the_watch_ends_when_the_park_was_stopped() -> None:
    stop, supervising, stopped = threading.Event(), threading.Event(), threading.Event()
    stop.set()
    supervising.set()
    stopped.set()
    t = threading.Thread(target=supervisor._watch, args=(-1, stop, supervising, stopped, None, "fabric-test"),
                         daemon=True)
    t.start()
    t.join(timeout=5)
    assert not t.is_alive()
