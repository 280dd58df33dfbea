"""Importing the Fabric adapter (adapters/fabric/__init__.py), each in a fresh interpreter: hfc's noise stays out of
an operator's log, and a process that loaded protobuf's default implementation first is told why hfc cannot load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, *, env_drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_hfc_prints_nothing_on_import_nor_when_a_client_and_channel_are_made(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"client": {"credentialStore": {"path": str(tmp_path / "kvs")}},
                                   "organizations": {}, "orderers": {}, "peers": {}, "certificateAuthorities": {}}))
    res = run("import os, asyncio\n"
              "import adapters.fabric\n"
              "from hfc.fabric import Client\n"
              "async def main():\n"
              f"    Client(net_profile={str(profile)!r}).new_channel('park')\n"
              "asyncio.run(main())\n"
              "assert os.environ['GRPC_ENABLE_FORK_SUPPORT'] == '0'\n"
              "from google.protobuf.internal import api_implementation\n"
              "assert api_implementation.Type() == 'python'\n")
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and res.stdout == ""  # no DeprecationWarning, no "New channel with name"


def test_protobuf_loaded_first_under_another_implementation_is_refused_with_the_reason() -> None:
    res = run("from google.protobuf import timestamp_pb2\nimport adapters.fabric\n",
              env_drop=("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION",))
    assert res.returncode != 0
    assert "ImportError" in res.stderr and "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python" in res.stderr
