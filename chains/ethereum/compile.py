"""Compile the Ethereum park's contracts with the pinned solcjs (chains/ethereum/SPEC.md §E2).

    python -m chains.ethereum.compile            # (re)write chains/ethereum/artifacts/<Contract>.json
    python -m chains.ethereum.compile --check    # recompile; exit 1 listing artifacts that differ

Every ``contracts/*.sol`` goes into one solc Standard JSON compilation under the relative source name
``contracts/<file>`` with fixed settings (:data:`SETTINGS`: optimizer on, via-IR, EVM ``cancun``, no
metadata hash and no CBOR trailer), so the output depends only on the sources and the compiler of
``make setup`` (``chains/ethereum/node_modules/solc``), never on where the checkout lives. Each
deployable contract gets ``artifacts/<Contract>.json``: ``{contractName, sourceName, abi, bytecode,
deployedBytecode, compiler: {version, settings}}`` (hex with ``0x``), written as sorted, indented JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["ARTIFACTS_DIR", "CONTRACTS_DIR", "SETTINGS", "build_artifacts", "compile_sources", "load_artifact",
           "main", "render_artifact"]

HERE = Path(__file__).resolve().parent
CONTRACTS_DIR = HERE / "contracts"
ARTIFACTS_DIR = HERE / "artifacts"
SOLC_MODULE = HERE / "node_modules" / "solc"

# `solcjs --standard-json` exits before a large stdout is drained into a pipe (the output arrives cut);
# this runner lets node flush before exiting. The module path comes in argv, never in the compiler input.
_RUNNER = """
const solc = require(process.argv[1]);
if (process.argv[2] === '--version') {
  process.stdout.write(solc.version());
} else {
  let input = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => { input += chunk; });
  process.stdin.on('end', () => { process.stdout.write(solc.compile(input)); });
}
"""

SETTINGS: dict[str, Any] = {
    "evmVersion": "cancun",
    "viaIR": True,
    "optimizer": {"enabled": True, "runs": 10_000},
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}
"""Fixed compiler settings: part of every artifact, so a change to them shows up in ``--check``."""


class CompileError(RuntimeError):
    """solc reported errors, or could not be run."""


def _solc_module() -> Path:
    override = os.environ.get("PARKRELAY_SOLC_MODULE")
    path = Path(override) if override else SOLC_MODULE
    if not (path / "package.json").exists():
        raise CompileError(f"solc (solcjs) not found at {path}: run `make setup` (npm ci --prefix chains/ethereum)")
    return path


def _node(args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(["node", "-e", _RUNNER, *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(f"solcjs failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def compile_sources(contracts_dir: Path = CONTRACTS_DIR) -> tuple[str, dict[str, Any]]:
    """Compile every ``*.sol`` in ``contracts_dir``; returns (compiler version, solc ``contracts`` output)."""
    module = str(_solc_module())
    sources = {f"contracts/{p.name}": {"content": p.read_text(encoding="utf-8")}
               for p in sorted(contracts_dir.glob("*.sol"))}
    if not sources:
        raise CompileError(f"no contracts in {contracts_dir}")
    request = {"language": "Solidity", "sources": sources, "settings": SETTINGS}
    version = _node([module, "--version"]).strip()
    out = json.loads(_node([module], json.dumps(request)))
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    return version, out.get("contracts", {})


_LIBRARY = re.compile(r"^library\s+(\w+)", re.MULTILINE)


def build_artifacts(contracts_dir: Path = CONTRACTS_DIR) -> dict[str, dict[str, Any]]:
    """Artifacts by contract name, for every deployable contract (not interfaces, abstracts or libraries: the
    libraries' functions are internal, compiled into the contracts that use them)."""
    version, contracts = compile_sources(contracts_dir)
    libraries = {m for p in contracts_dir.glob("*.sol") for m in _LIBRARY.findall(p.read_text(encoding="utf-8"))}
    settings = {k: v for k, v in SETTINGS.items() if k != "outputSelection"}
    artifacts: dict[str, dict[str, Any]] = {}
    for source_name in sorted(contracts):
        for name, c in sorted(contracts[source_name].items()):
            bytecode = c["evm"]["bytecode"]["object"]
            if not bytecode or name in libraries:
                continue
            if name in artifacts:
                raise CompileError(f"two contracts named {name}")
            artifacts[name] = {
                "contractName": name,
                "sourceName": source_name,
                "abi": c["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
                "compiler": {"version": version, "settings": settings},
            }
    return artifacts


def render_artifact(artifact: dict[str, Any]) -> str:
    """The exact text of an artifact file."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def load_artifact(name: str, artifacts_dir: Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """Read ``artifacts/<name>.json`` (``abi``, ``bytecode``, ``deployedBytecode``, ``compiler``)."""
    data: dict[str, Any] = json.loads((artifacts_dir / f"{name}.json").read_text(encoding="utf-8"))
    return data


def _differences(artifacts: dict[str, dict[str, Any]], artifacts_dir: Path) -> list[str]:
    wanted = {f"{name}.json": render_artifact(a) for name, a in artifacts.items()}
    present = {p.name for p in artifacts_dir.glob("*.json")} if artifacts_dir.is_dir() else set()
    diffs = []
    for fname in sorted(wanted.keys() | present):
        path = artifacts_dir / fname
        if fname not in wanted:
            diffs.append(f"{path}: stale (no contract compiles to it)")
        elif fname not in present:
            diffs.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != wanted[fname]:
            diffs.append(f"{path}: differs from a fresh compilation")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chains.ethereum.compile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="recompile and fail if any artifact differs")
    args = parser.parse_args(argv)
    try:
        artifacts = build_artifacts()
    except CompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        diffs = _differences(artifacts, ARTIFACTS_DIR)
        for d in diffs:
            print(d, file=sys.stderr)
        if diffs:
            print("artifacts out of date: run `python -m chains.ethereum.compile`", file=sys.stderr)
            return 1
        print(f"{len(artifacts)} artifacts up to date")
        return 0
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    for stale in set(ARTIFACTS_DIR.glob("*.json")) - {ARTIFACTS_DIR / f"{n}.json" for n in artifacts}:
        stale.unlink()
    for name, artifact in sorted(artifacts.items()):
        (ARTIFACTS_DIR / f"{name}.json").write_text(render_artifact(artifact), encoding="utf-8")
        runtime = (len(artifact["deployedBytecode"]) - 2) // 2
        print(f"{name}: {runtime} bytes runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
