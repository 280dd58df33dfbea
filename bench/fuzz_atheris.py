"""Coverage-guided fuzzing of the decoders and verifiers with atheris (libFuzzer), one target per run.

    python bench/fuzz_atheris.py --target NAME [--seconds N | --runs N] [--json] [--corpus DIR]
    python bench/fuzz_atheris.py --list

The targets are tests/unit/fuzz/targets.py's (the same 47 the suite's hypothesis harness and ``bench/fuzz.py``
run). Our packages (``protocol``, ``chains``, ``adapters``, ``relay``) are imported under atheris's bytecode
instrumentation, so libFuzzer sees the edges of our own code and keeps the inputs that reach new ones. The corpus
starts from each target's valid seeds (written to ``--corpus``, a temporary directory by default). A
:class:`~protocol.errors.ProtocolError` is a refusal; any other exception is a finding: libFuzzer stops, writes the
input to ``crash-<sha1>`` in the working directory and this script exits 1.

A "bytes" target gets libFuzzer's bytes as they are; a "json" target gets them decoded as UTF-8 JSON (bytes that do
not decode are skipped: the JSON decoders of the nodes are fuzzed at the byte level by their own target).

``--json`` runs libFuzzer in a child process and prints one JSON object: target, seconds, inputs executed, edges
covered, corpus size, findings. Without it libFuzzer's own output is shown.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OWN = ["protocol", "chains", "adapters", "relay"]


def _targets() -> dict[str, Any]:
    from tests.unit.fuzz.targets import all_targets

    return {t.name: t for t in all_targets()}


def _instrument_own(atheris: Any) -> int:
    """Instrument every function of our own packages loaded so far (atheris's ``instrument_func``; the modules are
    loaded by then, so ``instrument_imports`` would see nothing new). Returns how many."""
    import types

    count = 0
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or mod_name.split(".")[0] not in OWN:
            continue
        for attr, value in list(vars(mod).items()):
            if isinstance(value, types.FunctionType) and value.__module__ == mod_name:
                setattr(mod, attr, atheris.instrument_func(value))
                count += 1
            elif isinstance(value, type) and value.__module__ == mod_name:
                for k, v in list(vars(value).items()):
                    if isinstance(v, types.FunctionType):
                        setattr(value, k, atheris.instrument_func(v))
                        count += 1
    return count


def _child(name: str, corpus: Path, libfuzzer_args: list[str]) -> None:
    import atheris

    targets = _targets()
    from protocol.errors import ProtocolError

    target = targets[name]
    target.seeds()  # imports what the target needs, so it is instrumented below
    _instrument_own(atheris)
    for i, seed in enumerate(target.seeds()):
        data = seed if target.kind == "bytes" else json.dumps(seed).encode()
        (corpus / f"seed-{i}").write_bytes(data)

    def one_input(data: bytes) -> None:
        arg: Any = data
        if target.kind == "json":
            try:
                arg = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                return
        try:
            target.run(arg)
        except ProtocolError:
            pass

    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()


def _stats(stderr: str) -> dict[str, Any]:
    """The last progress line's figures and the final stats libFuzzer printed."""
    out: dict[str, Any] = {}
    for m in re.finditer(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", stderr):
        out.update(inputs=int(m.group(1)), edges=int(m.group(2)), features=int(m.group(3)),
                   corpus=int(m.group(4)))
    m = re.search(r"stat::number_of_executed_units: (\d+)", stderr)
    if m:
        out["inputs"] = int(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="a target name (see --list)")
    ap.add_argument("--list", action="store_true", help="print the target names and exit")
    ap.add_argument("--seconds", type=int, default=60, help="libFuzzer's -max_total_time (default 60)")
    ap.add_argument("--runs", type=int, default=None, help="stop after this many inputs instead")
    ap.add_argument("--corpus", type=Path, default=None, help="corpus directory (kept; default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.list:
        print("\n".join(sorted(_targets())))
        return 0
    if not args.target:
        ap.error("--target NAME is required (see --list)")
    if args.target not in _targets():
        ap.error(f"no target {args.target!r} (see --list)")
    lf = [f"-max_total_time={args.seconds}", "-print_final_stats=1", "-rss_limit_mb=2048", "-timeout=10"]
    if args.runs is not None:
        lf.append(f"-runs={args.runs}")
    with tempfile.TemporaryDirectory(prefix="parkrelay-atheris-") as tmp:
        corpus = args.corpus or Path(tmp)
        corpus.mkdir(parents=True, exist_ok=True)
        if args.child:
            _child(args.target, corpus, lf)
            return 0
        if not args.json:
            _child(args.target, corpus, lf)  # libFuzzer exits the process itself
            return 0
        started = time.monotonic()
        argv = [sys.executable, __file__, "--child", "--target", args.target, "--seconds", str(args.seconds),
                "--corpus", str(corpus)] + (["--runs", str(args.runs)] if args.runs is not None else [])
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp, check=False)
        crashes = sorted(p.name for p in Path(tmp).glob("crash-*"))
        result = {"target": args.target, "engine": "atheris", "seconds": round(time.monotonic() - started, 1),
                  **_stats(proc.stderr), "exit_code": proc.returncode, "findings": len(crashes)}
        if proc.returncode != 0:
            result["finding"] = proc.stderr[-4000:]
        print(json.dumps(result))
        return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
