"""chains.common.heap: malloc_trim returns the C heap's free memory to the system (on glibc, as here)."""

from __future__ import annotations

import gc
import sys

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
