"""Plots on disk and the farmer's side of proof of capacity (docs/architecture.md §3 and §6: real chiapos proofs;
docs/research.md#seed-000).

This module does I/O (plot files, a child process for plotting); the rules it serves are pure, in
:mod:`chains.poc.consensus`.

* **Plot ids are bound to the farmer's key.** ``plot_id = sha256("parkrelay/poc/plot/v1" || farmer_pubkey ||
  plot_nonce)``; the plot's chiapos memo is the same preimage, so a plot file says whose it is and
  :func:`load_plot` checks it.
* **A plot cache** (``$PARKRELAY_PLOT_CACHE``, else ``~/.cache/parkrelay/plots``) keyed by plot id lets tests
  and the devnet reuse plots: a k=21 plot costs ~10-12 s of CPU and ~34 MiB.
* **Plotting runs in a child process** (``python -m chains.poc.plots plot-worker ...``): chiapos writes its
  progress to the C-level stdout, which the parent reads line by line and turns into ``progress(fraction,
  message)`` calls, without touching the parent's own stdout. A lock file keeps two processes from
  plotting the same plot; the plot appears in the cache only once complete (atomic rename).
* **Farmer**: for a challenge, every plot's ``get_qualities_for_challenge`` (cheap, ~0.5 ms), then
  ``get_full_proof`` only for the best (~6 ms). Capacity competition (docs/research.md#seed-000):
  :meth:`Farmer.fill` adds
  a plot, :meth:`Farmer.erase` deletes one, changing the space the farmer can prove and commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chains.common.procs import spawn
from chains.poc.consensus import (
    PLOT_ID_TAG,
    ConsensusContext,
    PocParams,
    deadline_ms,
    expected_plot_size,
    next_difficulty,
    plot_id,
    slot_challenge,
)
from chains.poc.market import fill_challenge
from chains.poc.types import PocHeader
from protocol.crypto import Ed25519Signer
from protocol.errors import ParkRelayError

__all__ = [
    "DEFAULT_K",
    "FarmedProof",
    "Farmer",
    "PlotCache",
    "PlotError",
    "PlotInfo",
    "ProgressCallback",
    "default_plot_cache_dir",
    "load_plot",
    "parse_progress_line",
]

log = logging.getLogger("parkrelay.poc.plots")

DEFAULT_K = 21
"""Smallest k chiapos plots with its default stripe size ("Stripe size too large" below)."""
PLOT_BUFFER_MB = 200
"""Sort buffer handed to chiapos (its default, 4.5 GiB, is pointless for k=21; 200 MiB plots as fast)."""
PLOT_THREADS = 2

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction in [0, 1], message)`` while a plot is being made."""


class PlotError(ParkRelayError):
    """A plot could not be made, read, or does not belong to the claimed farmer key."""

    code = "poc.plot"


def default_plot_cache_dir() -> Path:
    """``$PARKRELAY_PLOT_CACHE`` if set, else ``~/.cache/parkrelay/plots``."""
    env = os.environ.get("PARKRELAY_PLOT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "parkrelay" / "plots"


def plot_memo(farmer_pubkey: bytes, plot_nonce: bytes) -> bytes:
    """The memo stored in the plot: the plot id's preimage."""
    return PLOT_ID_TAG + farmer_pubkey + plot_nonce


@dataclass(frozen=True, slots=True)
class PlotInfo:
    """One plot file and the identity bound to it."""

    plot_id: bytes
    """``sha256(PLOT_ID_TAG || farmer_pubkey || plot_nonce)``; also chiapos' plot id."""
    farmer_pubkey: bytes
    """ed25519 key of the farmer the plot is bound to."""
    plot_nonce: bytes
    """32-byte nonce of the plot."""
    k: int
    """chiapos size parameter."""
    path: Path
    """Plot file."""
    file_bytes: int
    """Size of the file on disk."""
    created: bool = False
    """True if this call plotted it, False if it came from the cache."""

    @property
    def expected_bytes(self) -> int:
        """Space the plot counts for in consensus, ``(2k+1) * 2^(k-1)``."""
        return expected_plot_size(self.k)


_PROGRESS_RE = re.compile(r"^Progress update: ([0-9.]+)\s*$")
_PHASE_RE = re.compile(r"^Starting phase (\d)/4: (.*?)(?: into|\.\.\.|$)")


def parse_progress_line(line: str) -> tuple[float | None, str | None]:
    """``(fraction, None)`` for chiapos' "Progress update: 0.42", ``(None, "phase 2/4: ...")`` for a phase
    start, ``(None, None)`` otherwise."""
    m = _PROGRESS_RE.match(line)
    if m:
        try:
            return min(1.0, max(0.0, float(m.group(1)))), None
        except ValueError:
            return None, None
    m = _PHASE_RE.match(line)
    if m:
        return None, f"phase {m.group(1)}/4: {m.group(2).strip()}"
    return None, None


def load_plot(path: Path | str) -> PlotInfo:
    """Open a plot file and check that its id is bound to the key and nonce in its memo."""
    import chiapos

    path = Path(path)
    try:
        prover = chiapos.DiskProver(str(path))
    except Exception as exc:  # chiapos raises bare RuntimeError/ValueError for any unreadable file
        raise PlotError(f"cannot read plot {path}: {exc}") from exc
    memo, pid = bytes(prover.get_memo()), bytes(prover.get_id())
    if len(memo) != len(PLOT_ID_TAG) + 64 or not memo.startswith(PLOT_ID_TAG):
        raise PlotError(f"plot {path} was not made by parkrelay (unexpected memo)", got=memo.hex()[:32])
    pubkey, nonce = memo[len(PLOT_ID_TAG):-32], memo[-32:]
    if plot_id(pubkey, nonce) != pid:
        raise PlotError(f"plot {path}: id is not bound to the key and nonce in its memo",
                        expected=plot_id(pubkey, nonce).hex(), got=pid.hex())
    return PlotInfo(pid, pubkey, nonce, int(prover.get_size()), path, path.stat().st_size)


class PlotCache:
    """A directory of plots named ``plot-k<k>-<plot_id hex>.plot``."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_plot_cache_dir()

    def path_for(self, pid: bytes, k: int) -> Path:
        return self.directory / f"plot-k{k}-{pid.hex()}.plot"

    def get(self, farmer_pubkey: bytes, plot_nonce: bytes, k: int = DEFAULT_K) -> PlotInfo | None:
        """The cached plot for this key and nonce, or None."""
        path = self.path_for(plot_id(farmer_pubkey, plot_nonce), k)
        return load_plot(path) if path.exists() else None

    def list(self) -> list[PlotInfo]:
        return [load_plot(p) for p in sorted(self.directory.glob("plot-k*-*.plot"))]

    def create(self, farmer_pubkey: bytes, plot_nonce: bytes, k: int = DEFAULT_K,
               progress: ProgressCallback | None = None) -> PlotInfo:
        """The plot for this key and nonce: from the cache, else plotted now (~12 s for k=21)."""
        if k < DEFAULT_K:
            raise PlotError(f"chiapos cannot plot k={k} (stripe size too large); use k >= {DEFAULT_K}", got=k)
        pid = plot_id(farmer_pubkey, plot_nonce)
        final = self.path_for(pid, k)
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(final.with_suffix(".lock")):
            if final.exists():
                return load_plot(final)
            _plot(self.directory, final, k, plot_memo(farmer_pubkey, plot_nonce), pid, progress)
        info = load_plot(final)
        return PlotInfo(info.plot_id, info.farmer_pubkey, info.plot_nonce, info.k, info.path, info.file_bytes, True)

    def delete(self, info: PlotInfo) -> None:
        """Erase a plot file (capacity competition: the space is freed)."""
        with contextlib.suppress(FileNotFoundError):
            info.path.unlink()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _plot(cache_dir: Path, final: Path, k: int, memo: bytes, pid: bytes, progress: ProgressCallback | None) -> None:
    report = progress or _log_progress(pid, k)
    tmp = Path(tempfile.mkdtemp(prefix=f"tmp-{pid.hex()[:12]}-", dir=cache_dir))
    name = final.name
    cmd = [sys.executable, "-m", "chains.poc.plots", "plot-worker", str(tmp), name, str(k), memo.hex(), pid.hex()]
    tail: list[str] = []
    done = 0.0
    # the child must import this package even when the parent runs from a source tree that is not installed
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    try:
        report(done, f"plotting k={k} plot {pid.hex()[:16]}…")
        # tied to this process: a farmer killed mid-plot does not leave chiapos running
        proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
        try:
            for line in proc.stdout or ():
                tail = [*tail[-19:], line.rstrip()]
                fraction, message = parse_progress_line(line)
                if fraction is not None:
                    done = max(done, fraction)
                    report(done, f"plot {pid.hex()[:16]}…: {done:.0%}")
                elif message is not None:
                    report(done, f"plot {pid.hex()[:16]}…: {message}")
            rc = proc.wait()
        finally:  # interrupted (Ctrl-C, a failing callback): do not leave chiapos running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if rc != 0 or not (tmp / name).exists():
            raise PlotError(f"chiapos failed to plot {final.name} (exit {rc}): " + " | ".join(tail[-5:]))
        os.replace(tmp / name, final)
        report(1.0, f"plot {pid.hex()[:16]}… done: {final}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _log_progress(pid: bytes, k: int) -> ProgressCallback:
    def report(fraction: float, message: str) -> None:
        log.info("poc.plot k=%d id=%s %s", k, pid.hex()[:16], message)

    return report


def _plot_worker(argv: list[str]) -> int:
    """Child process: run chiapos (its stdout goes to the parent's pipe)."""
    import chiapos

    tmp, name, k, memo, pid = argv
    chiapos.DiskPlotter().create_plot_disk(tmp, tmp, tmp, name, int(k), bytes.fromhex(memo), bytes.fromhex(pid),
                                           PLOT_BUFFER_MB, 0, 0, PLOT_THREADS, False)
    return 0


# -- the farmer -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FarmedProof:
    """The best proof a farmer found for a height."""

    plot: PlotInfo
    """Plot that answered."""
    slot: int
    """Slot of the proof's challenge."""
    quality: bytes
    """chiapos quality string."""
    proof: bytes
    """chiapos proof (8*k bytes)."""
    deadline_ms: int
    """Time after the parent's timestamp at which the block becomes valid."""
    challenge: bytes
    """The height's challenge."""
    difficulty: int
    """The height's difficulty."""


class Farmer:
    """A farmer: an account key and the plots bound to it."""

    def __init__(self, name: str, signer: Ed25519Signer, plots: Iterable[PlotInfo] = ()) -> None:
        self.name = name
        self.signer = signer
        self._plots: dict[bytes, tuple[PlotInfo, Any]] = {}
        for info in plots:
            self.add_plot(info)

    @property
    def pubkey(self) -> bytes:
        return self.signer.pubkey

    @property
    def plots(self) -> list[PlotInfo]:
        return [info for info, _ in sorted(self._plots.values(), key=lambda p: p[0].plot_id)]

    @property
    def capacity_bytes(self) -> int:
        """Space this farmer proves, in consensus bytes (sum of ``(2k+1)*2^(k-1)``)."""
        return sum(info.expected_bytes for info, _ in self._plots.values())

    def add_plot(self, info: PlotInfo) -> None:
        """Start farming a plot bound to this farmer's key."""
        import chiapos

        if info.farmer_pubkey != self.pubkey:
            raise PlotError(f"plot {info.plot_id.hex()[:16]}… is bound to another key, not farmer {self.name}'s",
                            expected=self.pubkey.hex(), got=info.farmer_pubkey.hex())
        self._plots[info.plot_id] = (info, chiapos.DiskProver(str(info.path)))

    def fill(self, cache: PlotCache, plot_nonce: bytes | None = None, k: int = DEFAULT_K,
             progress: ProgressCallback | None = None) -> PlotInfo:
        """Capacity competition, fill: make (or reuse from the cache) a plot and farm it."""
        info = cache.create(self.pubkey, plot_nonce if plot_nonce is not None else os.urandom(32), k, progress)
        self.add_plot(info)
        return info

    def erase(self, pid: bytes, cache: PlotCache | None = None) -> PlotInfo:
        """Capacity competition, erase: stop farming a plot; with ``cache``, also delete its file."""
        entry = self._plots.pop(pid, None)
        if entry is None:
            raise PlotError("no such plot", got=pid.hex())
        if cache is not None:
            cache.delete(entry[0])
        return entry[0]

    def best_proof(self, challenge: bytes, difficulty: int, max_slots: int = 64) -> FarmedProof | None:
        """The proof with the least deadline over every plot and slot (None if no plot answers any slot)."""
        best: tuple[int, bytes, int, int, bytes] | None = None  # (deadline, plot id, slot, index, quality)
        plots = sorted(self._plots.items())
        if not plots:
            return None
        for slot in range(max_slots):
            sc = slot_challenge(challenge, slot)
            for pid, (info, prover) in plots:
                # every proof of this plot at this slot or later has a deadline >= the slot's start
                if best is not None and _slot_start(slot, difficulty, info.k) >= best[0]:
                    continue
                for index, q in enumerate(prover.get_qualities_for_challenge(sc)):
                    quality = bytes(q)
                    d = deadline_ms(quality, sc, difficulty, info.k, slot)
                    if best is None or (d, pid) < (best[0], best[1]):
                        best = (d, pid, slot, index, quality)
            if best is not None and all(_slot_start(slot + 1, difficulty, info.k) >= best[0] for _, (info, _) in plots):
                break
        if best is None:
            return None
        d, pid, slot, index, quality = best
        info, prover = self._plots[pid]
        proof = bytes(prover.get_full_proof(slot_challenge(challenge, slot), index))
        return FarmedProof(info, slot, quality, proof, d, challenge, difficulty)

    def proofs(self, params: PocParams, parent: ConsensusContext, slots: range) -> Iterator[FarmedProof]:
        """Every proof this farmer's plots give for the child of ``parent`` at ``slots``, each a distinct valid
        header (what a farmer can sign besides its best: tests of the light client's bounds use it)."""
        challenge, difficulty = parent.next_challenge(), next_difficulty(params, parent)
        for slot in slots:
            sc = slot_challenge(challenge, slot)
            for _, (info, prover) in sorted(self._plots.items()):
                for index, q in enumerate(prover.get_qualities_for_challenge(sc)):
                    quality = bytes(q)
                    yield FarmedProof(info, slot, quality, bytes(prover.get_full_proof(sc, index)),
                                      deadline_ms(quality, sc, difficulty, info.k, slot), challenge, difficulty)

    def farm(self, params: PocParams, parent: ConsensusContext, max_slots: int = 64) -> FarmedProof | None:
        """The best proof for the child of ``parent``: its challenge and difficulty come from the parent."""
        return self.best_proof(parent.next_challenge(), next_difficulty(params, parent), max_slots)

    def make_header(self, params: PocParams, parent: ConsensusContext, farmed: FarmedProof, timestamp_ms: int,
                    tx_root: bytes, state_root: bytes) -> PocHeader:
        """A signed header for ``farmed``; valid once ``timestamp_ms >= parent.timestamp_ms + farmed.deadline_ms``."""
        header = PocHeader(
            chain_id=params.chain_id, height=parent.height + 1, parent_hash=parent.header_hash,
            timestamp_ms=timestamp_ms, challenge=farmed.challenge, slot=farmed.slot, difficulty=farmed.difficulty,
            cumulative_weight=parent.cumulative_weight + farmed.difficulty, farmer=self.name,
            farmer_pubkey=self.pubkey, plot_nonce=farmed.plot.plot_nonce, k=farmed.plot.k, proof=farmed.proof,
            tx_root=tx_root, state_root=state_root,
        )
        return self.sign(header)

    def sign(self, header: PocHeader) -> PocHeader:
        return header.with_signature(self.signer.sign(header.signing_bytes()))

    def fill_proof(self, pid: bytes, chain_challenge: bytes, max_index: int = 64) -> tuple[int, bytes] | None:
        """``(index, proof)`` answering the ``poc.fill`` challenge of a recent block for plot ``pid``."""
        prover = self._plots[pid][1]
        for index in range(max_index):
            fc = fill_challenge(chain_challenge, pid, index)
            if prover.get_qualities_for_challenge(fc):
                return index, bytes(prover.get_full_proof(fc, 0))
        return None


def _slot_start(slot: int, difficulty: int, k: int) -> int:
    """Least deadline any proof of a size-k plot can have at ``slot``."""
    return slot * difficulty * expected_plot_size(21) // expected_plot_size(k)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 6 and args[0] == "plot-worker":
        return _plot_worker(args[1:])
    print("usage: python -m chains.poc.plots plot-worker TMP_DIR FILENAME K MEMO_HEX ID_HEX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
