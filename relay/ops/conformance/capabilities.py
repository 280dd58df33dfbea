"""What a deployment, and each chain kind in it, lets the conformance runner do.

A scenario's fault implies capabilities (:data:`FAULT_NEEDS`); a pair lacking one is reported ``skipped`` with the
capability named, never passed. Capabilities of the deployment:

``relaying``           some relayer delivers packets: the runner's own (``own_relayers``) or the deployment's
``own_relayers``       the runner runs relayers itself: the config names a relayer whose relay-chain key is in the
                       data dir, and none of the deployment's relayers runs already (``devnet up``'s pids.json)
``two_relayers``       ``own_relayers`` with two relayers named
``relayer_key``        a relayer's keys in the data dir (the runner reads proofs and offers a certificate as it)
``kill_relay_validator`` a relay validator process this machine started for this config (pids.json, or handed to the
                       runner), on a loopback host, and at least 4 validators (one down keeps a quorum)
``kill_node(<chain>)`` a park node process of ``<chain>`` the runner may SIGKILL and start again, as above
``right_admission_gap(<src>-><dst>)`` a station both parks register whose transformer is smaller on the target
                       than at home (a right fitting at home is refused there: the refused-right scenario)

Capabilities of a chain kind (:data:`KIND_CAPS`):

``sigkill_node``       the park keeps producing and finalising with one node SIGKILLed, and the node restarts from its
                       store (DPoS witnesses, PoC farmers; an Ethereum park has one node, a Fabric park's processes are
                       its supervisor's: their crashes stay in tests/integration/test_four_phases.py)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.ops.config import DeploymentConfig
from relay.ops.conformance.scenarios import Scenario

__all__ = ["FAULT_NEEDS", "KIND_CAPS", "Capabilities", "ProcessTable", "missing", "pidfile_processes"]

KIND_CAPS: dict[str, frozenset[str]] = {
    "dpos": frozenset({"sigkill_node"}),
    "poc": frozenset({"sigkill_node"}),
    "ethereum": frozenset(),
    "fabric": frozenset(),
}

FAULT_NEEDS: dict[str, tuple[str, ...]] = {
    "none": ("relaying",),
    "refused": ("relaying",),
    "return": ("relaying",),
    "replay": ("relaying", "relayer_key"),
    "timeout": ("own_relayers",),
    "relayer_sigkill": ("own_relayers",),
    "relayers_racing": ("two_relayers",),
    "relay_validator_down": ("relaying", "kill_relay_validator"),
    "park_node_sigkill": ("relaying", "kill_node", "sigkill_node"),
}
"""Capabilities each fault needs; ``kill_node`` and ``sigkill_node`` are asked of both parks of the pair."""

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ProcessTable:
    """Processes of the deployment the runner may SIGKILL and start again: ``"<chain>/<node>"`` -> pid, and the
    relayers already running (``"relayer/<name>"``)."""

    nodes: dict[str, int] = field(default_factory=dict)
    foreign_relayers: list[str] = field(default_factory=list)
    restart: Callable[[str, str], int] | None = None
    """How a killed node is started again: ``(chain, node) -> pid``. None: spawned as ``devnet up`` does."""


def _ours(pid: int, cfg: DeploymentConfig) -> bool:
    """A live process of this user started for this config (its command line names the config file)."""
    try:
        st = os.stat(f"/proc/{pid}")
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False
    if st.st_uid != os.getuid():
        return False
    args = [a.decode(errors="replace") for a in cmd]
    return "relay.cli" in args and any(os.path.abspath(a) == os.path.abspath(cfg.path) for a in args)


def pidfile_processes(cfg: DeploymentConfig) -> ProcessTable:
    """What ``parkrelay devnet up`` recorded in ``<data_dir>/pids.json``, kept only where the process still runs, is
    this user's and was started for this config; nothing on a deployment whose services are not on this machine."""
    table = ProcessTable()
    path = cfg.data_dir / "pids.json"
    if cfg.host not in LOOPBACK or not path.exists():
        return table
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return table
    if not isinstance(pids, dict):
        return table
    for key, pid in pids.items():
        if not isinstance(key, str) or isinstance(pid, bool) or not isinstance(pid, int) or not _ours(pid, cfg):
            continue
        if key.startswith("relayer/"):
            table.foreign_relayers.append(key.split("/", 1)[1])
        else:
            table.nodes[key] = pid
    return table


@dataclass
class Capabilities:
    """The deployment's capabilities (names as in the module doc; per-chain ones as ``name(chain)``)."""

    have: set[str]
    kinds: dict[str, str]
    """chain id -> kind"""
    detail: dict[str, str] = field(default_factory=dict)
    """why a capability is missing, for the report"""

    @classmethod
    def of(cls, cfg: DeploymentConfig, procs: ProcessTable, registries: dict[str, Any] | None = None) -> Capabilities:
        from relay.ops.layout import relayer_key_path

        have: set[str] = set()
        detail: dict[str, str] = {}
        keyed = [r for r in cfg.relayers if relayer_key_path(cfg, cfg.relay_chain_id, r).exists()]
        if keyed:
            have.add("relayer_key")
        else:
            detail["relayer_key"] = "no relayer of the config has its key in the data dir"
        if cfg.relay_base_port is None:
            detail["relaying"] = "the config runs no relay chain ([relay] base_port unset)"
        elif procs.foreign_relayers:
            have.add("relaying")
            detail["own_relayers"] = f"the deployment's relayers run already ({', '.join(procs.foreign_relayers)})"
        elif keyed:
            have |= {"relaying", "own_relayers"}
            if len(keyed) >= 2:
                have.add("two_relayers")
            else:
                detail["two_relayers"] = "the config names one relayer with keys"
        else:
            detail["relaying"] = "no relayer of the config has its key in the data dir, and none runs"
        if "own_relayers" not in have and "own_relayers" not in detail:
            detail["own_relayers"] = detail.get("relaying", "no relayer the runner can run")
        if "two_relayers" not in have and "two_relayers" not in detail:
            detail["two_relayers"] = detail["own_relayers"]
        validators = [v for v in cfg.relay_validators if f"{cfg.relay_chain_id}/{v}" in procs.nodes]
        if validators and len(cfg.relay_validators) >= 4:
            have.add("kill_relay_validator")
        else:
            detail["kill_relay_validator"] = ("fewer than 4 relay validators" if len(cfg.relay_validators) < 4 else
                                              "no relay validator process of this machine started for this config")
        for chain in cfg.chains:
            node = chain.nodes[-1]
            if f"{chain.id}/{node}" in procs.nodes and len(chain.nodes) >= 2:
                have.add(f"kill_node({chain.id})")
            else:
                detail[f"kill_node({chain.id})"] = (
                    f"{chain.id} has one node" if len(chain.nodes) < 2 else
                    f"no process of {chain.id}/{node} started for this config on this machine")
        for src, reg_s in (registries or {}).items():
            for dst, reg_d in (registries or {}).items():
                if src != dst and refusing_station(reg_s, reg_d) is not None:
                    have.add(f"right_admission_gap({src}->{dst})")
        return cls(have, {c.id: c.kind for c in cfg.chains}, detail)

    def kind_has(self, chain: str, cap: str) -> bool:
        return cap in KIND_CAPS.get(self.kinds.get(chain, ""), frozenset())


def refusing_station(home: dict[str, Any], target: dict[str, Any]) -> tuple[str, str, int] | None:
    """A station both registries name whose transformer the target makes smaller than home does, and the power of a
    right that fits at home (free capacity, every booking counted) but not on the target: ``(station, transformer,
    kW)``."""
    best: tuple[str, str, int] | None = None
    for station, tr in sorted(home.get("stations", {}).items()):
        if target.get("stations", {}).get(station) is None:
            continue
        cap_home = int(home.get("transformers", {}).get(tr, 0))
        cap_target = int(target.get("transformers", {}).get(target["stations"][station], 0))
        booked = sum(int(b.get("power_kw", 0)) for b in home.get("bookings", {}).get(tr, []))
        kw = cap_target + 1
        if kw <= cap_home - booked and best is None:
            best = (station, tr, kw)
    return best


def admitting_station(home: dict[str, Any], target: dict[str, Any], kw: int) -> tuple[str, str] | None:
    """A station both parks register with room for ``kw`` on its transformer at each (every booking counted), the
    one with the most room: ``(station, home transformer)``."""
    best: tuple[int, str, str] | None = None
    for station, tr in sorted(home.get("stations", {}).items()):
        tr_t = target.get("stations", {}).get(station)
        if tr_t is None:
            continue
        room = min(int(home.get("transformers", {}).get(tr, 0)) - _booked(home, tr),
                   int(target.get("transformers", {}).get(tr_t, 0)) - _booked(target, tr_t))
        if room >= kw and (best is None or room > best[0]):
            best = (room, station, tr)
    return None if best is None else (best[1], best[2])


def _booked(reg: dict[str, Any], tr: str) -> int:
    return sum(int(b.get("power_kw", 0)) for b in reg.get("bookings", {}).get(tr, []))


def missing(s: Scenario, src: str, dst: str, caps: Capabilities) -> list[str]:
    """The capabilities scenario ``s`` on pair ``src -> dst`` needs and the deployment or a kind lacks, each as
    ``name`` or ``name(chain)`` and the reason: ``"kill_node(poc-park): no process ..."``."""
    out: list[str] = []
    for need in (*FAULT_NEEDS[s.fault], *s.requires):
        if need == "kill_node":
            for c in (src, dst):
                if f"kill_node({c})" not in caps.have:
                    out.append(f"kill_node({c}): {caps.detail.get(f'kill_node({c})', 'not available')}")
        elif need == "sigkill_node":
            for c in (src, dst):
                if not caps.kind_has(c, "sigkill_node"):
                    out.append(f"sigkill_node({caps.kinds.get(c, '?')}): not a capability of the "
                               f"{caps.kinds.get(c, '?')} kind in this runner")
        elif need not in caps.have:
            out.append(f"{need}: {caps.detail.get(need, 'not available')}")
    if s.asset == "charging_right" and s.fault == "refused" and f"right_admission_gap({src}->{dst})" not in caps.have:
        out.append(f"right_admission_gap({src}->{dst}): no station both parks register with a smaller transformer "
                   f"on {dst} than free at {src}")
    return out
