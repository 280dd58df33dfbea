"""chains.common.heap: malloc_trim returns the C heap's free memory to the system, and a tuned heap maps large buffers
on their own (on glibc, as here)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from chains.common import heap


def _rss_kb() -> int:
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_returns_freed_memory_to_the_system() -> None:
    # the allocation pattern of a block: many strings over 512 bytes (C malloc, not CPython's arenas), most dropped
    # while a few stay, so the freed chunks sit below live ones where glibc does not give them back by itself
    kept: list[bytes] = []
    blobs = [bytes(1500) + i.to_bytes(4, "big") for i in range(60_000)]
    kept += blobs[::50]
    del blobs
    gc.collect()
    before = _rss_kb()
    assert heap.trim_heap() is True
    after = _rss_kb()
    assert before - after > 30_000, (before, after)  # most of ~90 MB freed comes back
    assert len(kept) == 1200


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    assert heap.trim_heap() is False


_FREED_BUFFERS = """
import sys
from chains.common import heap

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

if sys.argv[1] == "tuned":
    assert heap.tune_heap() is True
big = bytearray(16 << 20)  # one multi-megabyte buffer freed: glibc's default raises its mmap threshold to its size
del big
buffers = [bytes(1 << 20) + i.to_bytes(4, "big") for i in range(96)]  # a block's megabyte documents
before = rss_kb()
del buffers[::2]  # every other one let go, the rest live on between them
print(before - rss_kb())
"""


def _freed_kb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FREED_BUFFERS, mode], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_tuned_heap_returns_freed_megabyte_buffers_without_a_trim() -> None:
    # 48 MB of 1 MiB buffers freed between live ones: mapped on their own, they go back at once; in glibc's default
    # heap (its threshold raised by the 16 MiB buffer freed before) they are holes that stay until a trim
    assert _freed_kb("tuned") > 40_000
    assert _freed_kb("default") < 10_000


def test_without_mallopt_tuning_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_MALLOPT", None)
    assert heap.tune_heap() is False
