"""Where the CometBFT binary this package is built against lives (``docs``: /work/shared/DEPENDENCIES.md, CometBFT),
and a relay validator's CometBFT home: ``cometbft init``, the settings the relay changes, the shared genesis.

``$PARKRELAY_COMETBFT_HOME/bin/cometbft``, by default ``~/.cache/parkrelay/cometbft-0.38.25/bin/cometbft`` (built
with ``CGO_ENABLED=0 go install github.com/cometbft/cometbft/cmd/cometbft@v0.38.25``). The ABCI codec is pinned to
that version: :data:`COMETBFT_VERSION`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

__all__ = ["COMETBFT_VERSION", "MAX_RPC_BODY_BYTES", "CometHomeError", "HomeSettings", "cometbft_binary",
           "cometbft_home", "consensus_pubkey", "init_home", "node_id", "set_toml", "write_genesis"]

COMETBFT_VERSION: Final = "0.38.25"
"""The CometBFT release whose ``proto/tendermint/abci/types.proto`` :mod:`relay.chain.abci.types` follows."""


def cometbft_home() -> Path:
    """``$PARKRELAY_COMETBFT_HOME``, or ``~/.cache/parkrelay/cometbft-0.38.25``."""
    env = os.environ.get("PARKRELAY_COMETBFT_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "parkrelay" / f"cometbft-{COMETBFT_VERSION}"


def cometbft_binary() -> Path:
    """The ``cometbft`` executable under :func:`cometbft_home` (it may not exist: callers check)."""
    return cometbft_home() / "bin" / "cometbft"


# -- a validator's CometBFT home ------------------------------------------------------------------------------------

MAX_RPC_BODY_BYTES: Final = 4 * 1024 * 1024
"""CometBFT's ``rpc.max_body_bytes`` for the relay: a largest relay transaction (1 MiB of canonical JSON) fits a
``broadcast_tx_sync`` in base64 (CometBFT's default, 1 MB, would refuse it)."""


@dataclass(frozen=True, slots=True)
class HomeSettings:
    """What the relay devnet changes in a validator's ``config/config.toml`` (every other setting is CometBFT's
    default; ``deploy/cometbft/README.md`` lists them with the reasons)."""

    moniker: str
    """The relay validator's name."""
    host: str
    """The address CometBFT's RPC and P2P bind to (loopback by default), and its app's ABCI socket."""
    abci_port: int
    rpc_port: int
    p2p_port: int
    timeout_commit_ms: int
    """The pause after a committed block: the relay block interval."""
    timeout_propose_ms: int
    persistent_peers: tuple[str, ...] = ()
    """The other validators, ``<node id>@<host>:<p2p port>``."""

    def changes(self) -> list[tuple[str, str, str]]:
        """``(section, key, TOML value)`` for each changed setting."""
        peers = ",".join(self.persistent_peers)
        return [
            ("", "proxy_app", f'"tcp://{self.host}:{self.abci_port}"'),
            ("", "moniker", _toml_str(self.moniker)),
            ("rpc", "laddr", f'"tcp://{self.host}:{self.rpc_port}"'),
            ("rpc", "max_body_bytes", str(MAX_RPC_BODY_BYTES)),
            ("p2p", "laddr", f'"tcp://{self.host}:{self.p2p_port}"'),
            ("p2p", "persistent_peers", _toml_str(peers)),
            ("p2p", "addr_book_strict", "false"),  # loopback and private addresses are the devnet's
            ("p2p", "allow_duplicate_ip", "true"),  # four validators on one address
            ("consensus", "timeout_commit", f'"{self.timeout_commit_ms}ms"'),
            ("consensus", "timeout_propose", f'"{self.timeout_propose_ms}ms"'),
        ]


class CometHomeError(Exception):
    """A CometBFT home that cannot be made or read (no binary, ``cometbft init`` failed, a missing key file)."""


def set_toml(text: str, section: str, key: str, value: str) -> str:
    """``key = value`` inside ``[section]`` ("" for the top level) of CometBFT's generated ``config.toml``; raise
    :class:`CometHomeError` if the file has no such key there (another CometBFT version's layout)."""
    out, current, done = [], "", False
    for line in text.splitlines():
        m = re.match(r"^\[([^\]]+)\]\s*$", line)
        if m:
            current = m.group(1)
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", line):
            line = f"{key} = {value}"
            done = True
        out.append(line)
    if not done:
        raise CometHomeError(f"config.toml has no {key!r} in [{section or 'top level'}]: not CometBFT "
                             f"{COMETBFT_VERSION}'s layout")
    return "\n".join(out) + "\n"


def init_home(home: Path, settings: HomeSettings, *, binary: Path | None = None) -> None:
    """Make ``home`` with ``cometbft init`` (its keys: ``priv_validator_key.json``, ``node_key.json``, generated
    there, never in the repository) unless it exists, then write ``settings`` into its ``config.toml``
    (idempotent: a second call only rewrites the settings)."""
    cfg = home / "config" / "config.toml"
    if not cfg.exists():
        exe = binary or cometbft_binary()
        if not exe.exists():
            raise CometHomeError(f"no cometbft binary at {exe}: run `make setup` (it builds CometBFT "
                                 f"{COMETBFT_VERSION}; PARKRELAY_COMETBFT_HOME points elsewhere)")
        done = subprocess.run([str(exe), "init", "--home", str(home)], capture_output=True, text=True, timeout=60,
                              check=False)
        if done.returncode != 0:
            raise CometHomeError(f"`cometbft init --home {home}` failed ({done.returncode}): "
                                 f"{(done.stderr or done.stdout).strip()[-500:]}")
    text = cfg.read_text()
    for section, key, value in settings.changes():
        text = set_toml(text, section, key, value)
    cfg.write_text(text)


def _key_file(home: Path, name: str) -> dict[str, Any]:
    path = home / "config" / name
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return doc
    except (OSError, ValueError) as exc:
        raise CometHomeError(f"{path}: {exc}") from exc


def consensus_pubkey(home: Path) -> bytes:
    """The ed25519 consensus public key in ``home``'s ``priv_validator_key.json`` (the private half is not read)."""
    key = _key_file(home, "priv_validator_key.json").get("pub_key", {})
    if not isinstance(key, dict) or key.get("type") != "tendermint/PubKeyEd25519":
        raise CometHomeError(f"{home}: the relay runs ed25519 CometBFT consensus keys, got {key.get('type')!r}")
    raw = base64.b64decode(str(key.get("value", "")))
    if len(raw) != 32:
        raise CometHomeError(f"{home}: consensus public key of {len(raw)} bytes")
    return raw


def node_id(home: Path) -> str:
    """The P2P node id of ``home``'s ``node_key.json``: hex of the first 20 bytes of SHA-256 of its ed25519 public
    key (the last 32 bytes of the 64-byte private key value)."""
    key = _key_file(home, "node_key.json").get("priv_key", {})
    raw = base64.b64decode(str(key.get("value", ""))) if isinstance(key, dict) else b""
    if len(raw) != 64:
        raise CometHomeError(f"{home}: node_key.json holds no ed25519 key")
    return hashlib.sha256(raw[32:]).digest()[:20].hex()


def write_genesis(home: Path, *, chain_id: str, genesis_time_ms: int, app_state: dict[str, Any],
                  validators: Sequence[tuple[str, bytes, int]], template: Path | None = None) -> bytes:
    """Write CometBFT's ``genesis.json`` for the relay chain into ``home``: its chain id and time, the relay genesis
    as ``app_state`` (the app checks it is its own at InitChain), ``validators`` as ``(name, consensus public key,
    relay power)``, vote extensions left off (the app's InitChain answer turns them on from height 1). The
    consensus parameters come from ``template`` (default: the file ``cometbft init`` wrote). Returns the bytes, the
    same for every validator."""
    base = json.loads((template or home / "config" / "genesis.json").read_text())
    when = datetime.fromtimestamp(genesis_time_ms / 1000, tz=UTC)
    doc = {
        "genesis_time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z",
        "chain_id": chain_id,
        "initial_height": "1",
        "consensus_params": base["consensus_params"],
        "validators": [{"address": hashlib.sha256(pub).digest()[:20].hex().upper(),
                        "pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(pub).decode()},
                        "power": str(power), "name": name} for name, pub, power in validators],
        "app_hash": "",
        "app_state": app_state,
    }
    doc["consensus_params"]["abci"]["vote_extensions_enable_height"] = "0"
    raw = (json.dumps(doc, indent=2) + "\n").encode()
    (home / "config" / "genesis.json").write_bytes(raw)
    return raw


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a TOML basic string is a JSON string for what names, ids and addresses hold
