"""Fabric's own CLIs, run as an organisation's admin: ``configtxgen`` (the channel's genesis block), ``osnadmin``
(channel participation on each orderer, mutual TLS with the orderer organisation's admin), and ``peer`` (channel
join and the chaincode lifecycle, with the organisation admin's MSP).

hfc (fabric-sdk-py 1.0) cannot do Fabric 2's lifecycle or channel participation, so these steps use the CLIs, as
Fabric's own samples do. Each command runs with a clean environment (only what it needs), so stray ``CORE_*`` or
``ORDERER_*`` variables of the caller cannot change what it does.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from chains.fabric.consts import ORDERER_MSP
from chains.fabric.network.config import FabricNetworkConfig, orderer_process, peer_process
from chains.fabric.network.crypto import ADMIN
from chains.fabric.network.process import CommandResult, FabricNetworkError, run_command
from chains.fabric.network.render import LOG_FORMAT, PROFILE

__all__ = ["BINARIES", "FabricTools", "base_env"]

BINARIES = ("peer", "orderer", "osnadmin", "configtxgen")
"""What ``make setup`` builds into ``<Fabric home>/bin``."""


def base_env(cfg: FabricNetworkConfig, cfg_path: Path) -> dict[str, str]:
    """The environment of every Fabric process and command: PATH, HOME, FABRIC_CFG_PATH and logging."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FABRIC_CFG_PATH": str(cfg_path),
           "FABRIC_LOGGING_SPEC": cfg.logging_spec, "FABRIC_LOGGING_FORMAT": LOG_FORMAT}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


class FabricTools:
    """The CLIs of one Fabric home, bound to one network's config."""

    def __init__(self, cfg: FabricNetworkConfig) -> None:
        self.cfg = cfg
        self.bin = cfg.fabric_home / "bin"

    def check_installed(self) -> None:
        """Refuse to go on without Fabric's binaries, saying how to get them."""
        missing = [b for b in BINARIES if not os.access(self.bin / b, os.X_OK)]
        if missing:
            raise FabricNetworkError(f"Fabric binaries {missing} not found in {self.bin}: run `make setup` (it builds "
                                     f"Fabric {self.cfg.fabric_home.name.removeprefix('fabric-')} there) or set "
                                     f"PARKRELAY_FABRIC_HOME")

    def binary(self, name: str) -> str:
        return str(self.bin / name)

    # --- configtxgen ----------------------------------------------------------------------------------

    def genesis_block(self, out: Path) -> CommandResult:
        """The application channel's genesis block from ``configtx.yaml``'s profile."""
        lay = self.cfg.layout
        out.parent.mkdir(parents=True, exist_ok=True)
        return run_command([self.binary("configtxgen"), "-configPath", str(lay.configtx_dir), "-profile", PROFILE,
                            "-channelID", self.cfg.channel, "-outputBlock", str(out)],
                           base_env(self.cfg, lay.configtx_dir))

    # --- osnadmin ------------------------------------------------------------------------------------

    def _osnadmin(self, index: int, *args: str, check: bool = True) -> CommandResult:
        lay = self.cfg.layout
        crt, key = lay.user_tls(ORDERER_MSP, ADMIN)
        endpoint = f"{self.cfg.host}:{self.cfg.orderer_ports(index).admin}"
        return run_command([self.binary("osnadmin"), "channel", *args, "-o", endpoint,
                            "--ca-file", str(lay.tls_ca(ORDERER_MSP)), "--client-cert", str(crt),
                            "--client-key", str(key)],
                           base_env(self.cfg, lay.config(orderer_process(index))), check=check)

    def orderer_channel(self, index: int) -> dict[str, Any] | None:
        """What orderer ``index`` says of the channel (``status``, ``consensusRelation``, ``height``), or None if
        it has not joined it."""
        res = self._osnadmin(index, "list", "--channelID", self.cfg.channel, check=False)
        status = _osn_status(res)
        if status == 404:
            return None
        if status != 200:
            raise FabricNetworkError(f"osnadmin channel list on {orderer_process(index)}: {res.output.strip()}")
        return _json_after_status(res)

    def orderer_join(self, index: int, block: Path) -> None:
        """Join orderer ``index`` to the channel with its genesis block."""
        res = self._osnadmin(index, "join", "--channelID", self.cfg.channel, "--config-block", str(block),
                             check=False)
        if _osn_status(res) != 201:
            raise FabricNetworkError(f"osnadmin channel join on {orderer_process(index)}: {res.output.strip()}")

    # --- peer ----------------------------------------------------------------------------------------

    def peer_env(self, msp: str, user: str = ADMIN) -> dict[str, str]:
        """The ``peer`` CLI's environment acting as ``user`` of ``msp`` against that organisation's peer."""
        lay = self.cfg.layout
        return {**base_env(self.cfg, lay.config(peer_process(msp))),
                "CORE_PEER_LOCALMSPID": msp,
                "CORE_PEER_MSPCONFIGPATH": str(lay.user(msp, user) / "msp"),
                "CORE_PEER_ADDRESS": self.cfg.peer_endpoint(msp),
                "CORE_PEER_TLS_ENABLED": "true",
                "CORE_PEER_TLS_ROOTCERT_FILE": str(lay.tls_ca(msp)),
                "FABRIC_LOGGING_SPEC": "warning"}

    def peer(self, msp: str, *args: str, check: bool = True, timeout_s: float = 60.0,
             user: str = ADMIN) -> CommandResult:
        """``peer ARGS`` as ``user`` (default the admin) of ``msp``."""
        return run_command([self.binary("peer"), *args], self.peer_env(msp, user), check=check, timeout_s=timeout_s)

    def orderer_flags(self, index: int) -> list[str]:
        """``-o`` and its TLS flags for a command that submits a transaction."""
        lay = self.cfg.layout
        return ["-o", self.cfg.orderer_endpoint(index), "--tls", "--cafile", str(lay.tls_ca(ORDERER_MSP))]

    def peer_channels(self, msp: str) -> set[str]:
        """The channels ``msp``'s peer has joined."""
        out = self.peer(msp, "channel", "list").output
        lines = out.strip().splitlines()
        try:
            start = next(i for i, line in enumerate(lines) if "has joined" in line) + 1
        except StopIteration:
            raise FabricNetworkError(f"unexpected `peer channel list` output: {out.strip()!r}") from None
        return {line.strip() for line in lines[start:] if line.strip()}

    def peer_join(self, msp: str, block: Path) -> None:
        self.peer(msp, "channel", "join", "-b", str(block))


def _osn_status(res: CommandResult) -> int | None:
    m = re.search(r"^Status:\s*(\d+)", res.output, re.MULTILINE)
    return int(m.group(1)) if m else None


def _json_after_status(res: CommandResult) -> dict[str, Any]:
    body = res.output[res.output.find("{"):]
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise FabricNetworkError(f"unexpected osnadmin output: {res.output.strip()!r}") from exc
    if not isinstance(doc, dict):
        raise FabricNetworkError(f"unexpected osnadmin output: {res.output.strip()!r}")
    return doc
