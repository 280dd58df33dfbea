"""Plots and the farmer: cache, key binding, progress, best-proof lookup, fill and erase."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest

from chains.poc.consensus import ProofVerifier, deadline_ms, plot_id, slot_challenge
from chains.poc.plots import (
    Farmer,
    PlotCache,
    PlotError,
    default_plot_cache_dir,
    load_plot,
    parse_progress_line,
)
from chains.poc.testing import farmer_plot_nonce, farmer_signer


def test_parse_progress_lines_from_chiapos() -> None:
    assert parse_progress_line("Progress update: 0.420\n") == (0.42, None)
    assert parse_progress_line("Starting phase 3/4: Compression from tmp files into \"/x/y.plot.2.tmp\" ... Sun") == (
        None, "phase 3/4: Compression from tmp files")
    assert parse_progress_line("Starting phase 1/4: Forward Propagation into tmp files... Sun Nov 22") == (
        None, "phase 1/4: Forward Propagation")
    assert parse_progress_line("\tBucket 0 uniform sort. Ram: 0.177GiB") == (None, None)


def test_progress_was_reported_while_plotting(farmers: list[Farmer], plot_progress: list[tuple[float, str]]) -> None:
    if not any(p.created for f in farmers for p in f.plots):
        pytest.skip("plots came from $PARKRELAY_PLOT_CACHE: nothing was plotted in this session")
    fractions = [f for f, _ in plot_progress]
    assert len(plot_progress) >= 20
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    per_plot = [i for i, (_, m) in enumerate(plot_progress) if m.startswith("plotting")]
    for start, end in zip(per_plot, [*per_plot[1:], len(plot_progress)], strict=True):
        seq = fractions[start:end]
        assert seq == sorted(seq)
    assert any("phase 4/4" in m for _, m in plot_progress)


def test_cache_reuses_plots_by_id(farmers: list[Farmer], plot_dir: Path) -> None:
    cache = PlotCache(plot_dir)
    a = farmers[0]
    t = time.perf_counter()
    again = cache.create(a.pubkey, farmer_plot_nonce(a.name))
    assert time.perf_counter() - t < 2.0
    assert not again.created and again.path == a.plots[0].path
    assert again.plot_id == plot_id(a.pubkey, farmer_plot_nonce(a.name))
    assert again.path.name == f"plot-k21-{again.plot_id.hex()}.plot"
    assert 30 * 2**20 < again.file_bytes < 40 * 2**20
    assert cache.get(a.pubkey, farmer_plot_nonce(a.name)) == again
    assert cache.get(a.pubkey, b"\x00" * 32) is None


def test_plot_is_bound_to_its_key(farmers: list[Farmer]) -> None:
    a, b = farmers
    info = load_plot(a.plots[0].path)
    assert (info.farmer_pubkey, info.plot_nonce) == (a.pubkey, farmer_plot_nonce(a.name))
    with pytest.raises(PlotError, match="another key"):
        b.add_plot(info)
    with pytest.raises(PlotError):
        Farmer("mallory", farmer_signer("attacker"), [info])


def test_not_a_plot(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.plot"
    bogus.write_bytes(b"\x00" * 4096)
    with pytest.raises(PlotError):
        load_plot(bogus)
    with pytest.raises(PlotError, match="k=20"):
        PlotCache(tmp_path).create(b"\x01" * 32, b"\x02" * 32, k=20)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARKRELAY_PLOT_CACHE", str(tmp_path))
    assert default_plot_cache_dir() == tmp_path
    monkeypatch.delenv("PARKRELAY_PLOT_CACHE")
    assert default_plot_cache_dir() == Path.home() / ".cache" / "parkrelay" / "plots"


def test_best_proof_is_the_least_deadline_and_verifies(farmers: list[Farmer], verifier: ProofVerifier) -> None:
    a = farmers[0]
    (info,) = a.plots
    prover = a._plots[info.plot_id][1]
    difficulty = 2000
    for i in range(30):
        challenge = hashlib.sha256(b"lookup" + bytes([i])).digest()
        farmed = a.best_proof(challenge, difficulty)
        assert farmed is not None
        # brute force over slots 0..farmed.slot: no proof with a smaller deadline
        for slot in range(farmed.slot + 1):
            sc = slot_challenge(challenge, slot)
            for q in prover.get_qualities_for_challenge(sc):
                assert deadline_ms(bytes(q), sc, difficulty, 21, slot) >= farmed.deadline_ms
        sc = slot_challenge(challenge, farmed.slot)
        assert verifier(info.plot_id, 21, sc, farmed.proof) == farmed.quality
        assert farmed.deadline_ms == deadline_ms(farmed.quality, sc, difficulty, 21, farmed.slot)


def test_fill_and_erase_change_capacity(farmers: list[Farmer], tmp_path: Path) -> None:
    """Capacity competition on disk: a farmer fills (adds a plot) and erases (deletes it)."""
    a = farmers[0]
    cache = PlotCache(tmp_path)
    src = a.plots[0]
    shutil.copy(src.path, cache.path_for(src.plot_id, src.k))  # a cached plot: fill reuses it, no 12 s plotting
    farmer = Farmer(a.name, a.signer)
    assert farmer.capacity_bytes == 0 and farmer.best_proof(b"\x00" * 32, 1000) is None
    info = farmer.fill(cache, farmer_plot_nonce(a.name))
    assert not info.created and farmer.capacity_bytes == 43 * 2**20
    assert farmer.best_proof(b"\x00" * 32, 1000) is not None
    farmer.erase(info.plot_id, cache)
    assert farmer.capacity_bytes == 0 and not info.path.exists()
    with pytest.raises(PlotError):
        farmer.erase(info.plot_id)


def test_interrupted_plotting_leaves_nothing_behind(tmp_path: Path) -> None:
    """A progress callback that raises (as Ctrl-C would) kills chiapos and removes its temporary files."""
    pubkey, nonce = farmer_signer("interrupted").pubkey, b"\x05" * 32
    pid = plot_id(pubkey, nonce)

    def stop(fraction: float, message: str) -> None:
        if "phase 1/4" in message:
            raise KeyboardInterrupt

    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        PlotCache(tmp_path).create(pubkey, nonce, progress=stop)
    assert time.perf_counter() - t < 5.0  # killed, not waited for (a k=21 plot takes ~10 s)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    running = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(pid.hex())]
    assert running == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
