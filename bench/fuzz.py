"""Longer fuzz runs than the suite's (issue 15, "hostile input, everywhere").

    python bench/fuzz.py --minutes N [--json] [--targets SUBSTR ...] [--seed S] [--no-coverage] [--endpoints]

Decoders and verifiers: every target of tests/unit/fuzz/targets.py, round-robin, each input a valid seed with
random edits (tests/unit/fuzz/mutate.py). Coverage-guided: the lines of the repository's own code an input runs
are recorded (``sys.settrace``), and an input that runs a line no earlier input of its target ran joins that
target's corpus, so later mutations start from it (atheris's loop in pure Python, all targets in one process;
bench/fuzz_atheris.py runs one target under atheris/libFuzzer). A :class:`~protocol.errors.ProtocolError` is a
refusal; any other exception is a failure, reported once per (target, exception type, place)
with the input that raised it.

``--endpoints`` also runs the endpoint fuzz tests (tests/integration/test_fuzz_endpoints.py: running DPoS, PoC and
relay processes and the operator API; tests/ethereum/test_fuzz_calldata.py: hostile calldata against the bridge
on anvil) with ``PARKRELAY_FUZZ_EXAMPLES`` scaled to the time given and fresh randomness, in a pytest child.

Prints inputs tried, corpus growth, lines covered and failures (``--json``: one JSON object); exits 1 if any
failure was found.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.errors import ProtocolError  # noqa: E402
from tests.unit.fuzz.mutate import apply_bytes, apply_json, random_edits  # noqa: E402
from tests.unit.fuzz.targets import Target, all_targets  # noqa: E402

_OWN = tuple(str(ROOT / d) for d in ("protocol", "chains", "relay", "adapters"))


@dataclass
class Run:
    target: Target
    corpus: list[Any]
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    lines: set[tuple[str, int]] = field(default_factory=set)
    failures: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _traced(fn: Any, arg: Any) -> tuple[set[tuple[str, int]], BaseException | None]:
    """Run ``fn(arg)``; the (file, line) pairs of the repository's code it ran, and what it raised."""
    hit: set[tuple[str, int]] = set()

    def local(frame: FrameType, event: str, _: Any) -> Any:
        if event == "line":
            hit.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def global_(frame: FrameType, event: str, _: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(_OWN) else None

    sys.settrace(global_)
    try:
        fn(arg)
        exc = None
    except BaseException as e:  # classified by the caller
        exc = e
    finally:
        sys.settrace(None)
    return hit, exc


def _place(exc: BaseException) -> str:
    """Where in the repository's code ``exc`` was raised (its last own frame)."""
    own = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(_OWN)]
    f = own[-1] if own else traceback.extract_tb(exc.__traceback__)[-1]
    return f"{Path(f.filename).relative_to(ROOT) if f.filename.startswith(str(ROOT)) else f.filename}:{f.lineno}"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()[:2000]
    try:
        return json.dumps(value)[:2000]
    except (TypeError, ValueError):
        return repr(value)[:2000]


def fuzz_decoders(deadline: float, rng: random.Random, only: list[str], coverage: bool) -> list[Run]:
    runs = []
    for t in all_targets():
        if only and not any(o in t.name for o in only):
            continue
        runs.append(Run(t, list(t.seeds())))
    if not runs:
        raise SystemExit(f"no target matches {only}")
    while time.monotonic() < deadline:
        for r in runs:
            for _ in range(20):
                seed = rng.choice(r.corpus)
                edits = random_edits(rng)
                data = apply_bytes(seed, edits) if r.target.kind == "bytes" else apply_json(seed, edits)
                if coverage:
                    hit, exc = _traced(r.target.run, data)
                else:
                    hit = set()
                    try:
                        r.target.run(data)
                        exc = None
                    except BaseException as e:  # classified below
                        exc = e
                r.inputs += 1
                if exc is None:
                    r.accepted += 1
                elif isinstance(exc, ProtocolError):
                    r.refused += 1
                elif isinstance(exc, KeyboardInterrupt):
                    raise exc
                else:
                    key = (type(exc).__name__, _place(exc))
                    if key not in r.failures:
                        r.failures[key] = {"target": r.target.name, "exception": type(exc).__name__,
                                           "message": str(exc)[:300], "where": key[1], "input": _show(data)}
                new = hit - r.lines
                if new:
                    r.lines |= new
                    if exc is None or isinstance(exc, ProtocolError):
                        r.corpus.append(data)
    return runs


def run_endpoints(minutes: float) -> dict[str, Any]:
    examples = max(15, int(minutes * 60))
    env = {**os.environ, "PARKRELAY_FUZZ_EXAMPLES": str(examples), "PARKRELAY_FUZZ_RANDOM": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-x",
            "tests/integration/test_fuzz_endpoints.py", "tests/ethereum/test_fuzz_calldata.py"]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
    return {"examples_per_property": examples, "passed": proc.returncode == 0, "seconds": round(time.monotonic() - t0),
            "summary": tail[-1] if tail else "", "output_tail": [] if proc.returncode == 0 else tail}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--targets", nargs="*", default=[], help="only targets whose name contains one of these")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    ap.add_argument("--no-coverage", action="store_true", help="plain mutation, no line-coverage feedback (faster)")
    ap.add_argument("--endpoints", action="store_true",
                    help="also the endpoint fuzz against running processes and anvil (half the time)")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # decoders that log what they skip would flood the terminal
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    rng = random.Random(seed)
    decoder_minutes = args.minutes / 2 if args.endpoints else args.minutes
    t0 = time.monotonic()
    runs = fuzz_decoders(t0 + decoder_minutes * 60, rng, args.targets, not args.no_coverage)
    endpoints = run_endpoints(args.minutes - decoder_minutes) if args.endpoints else None
    failures = [f for r in runs for f in r.failures.values()]
    report = {
        "minutes": args.minutes, "seed": seed, "coverage_guided": not args.no_coverage,
        "inputs_tried": sum(r.inputs for r in runs), "failures_found": len(failures),
        "targets": {r.target.name: {"inputs": r.inputs, "refused": r.refused, "accepted": r.accepted,
                                    "corpus": len(r.corpus), "lines": len(r.lines), "failures": len(r.failures)}
                    for r in runs},
        "failures": failures,
    }
    if endpoints is not None:
        report["endpoints"] = endpoints
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"seed {seed}: {report['inputs_tried']} inputs over {len(runs)} decoder targets in "
              f"{decoder_minutes:g} min, {len(failures)} failure(s)")
        for name, t in report["targets"].items():
            print(f"  {name:48} {t['inputs']:>8} inputs  {t['refused']:>8} refused  corpus {t['corpus']:>4}  "
                  f"lines {t['lines']:>5}  failures {t['failures']}")
        for f in failures:
            print(f"FAILURE {f['target']}: {f['exception']} at {f['where']}: {f['message']}")
            print(f"  input {f['input'][:300]}")
        if endpoints is not None:
            print(f"endpoints ({endpoints['examples_per_property']} examples/property, {endpoints['seconds']} s): "
                  f"{'passed' if endpoints['passed'] else 'FAILED'} - {endpoints['summary']}")
            for line in endpoints["output_tail"]:
                print("  " + line)
    ok = not failures and (endpoints is None or endpoints["passed"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
