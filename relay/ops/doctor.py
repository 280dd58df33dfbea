"""``parkrelay doctor``: one look at a whole deployment; each problem named, with what to do about it.

    parkrelay doctor --config deploy/devnet.toml [--json] [--api URL ...] [--window-s 15]

Every check has a name, a status (``ok``, ``warn``, ``fail``), one line of detail and, when not ok, a fix:

===============================  ========================================================================
``keys``                          key files (``<data_dir>/keys``, the Fabric parks' private keys) are 0600
``admin-token``                   ``<data_dir>/keys/admin.token`` is there: 32 hex bytes, 0600
``ports``                         the deployment's ports listening on this host are bound to ``host`` only
``fabric/binaries``               Fabric's peer, orderer, osnadmin, configtxgen are installed, at the pin
``node/<chain>/<node>``           the node answers, as the chain the config names (and its peers' genesis)
``ethereum/<chain>/bridge``       the bridge contract is deployed at the address the park's genesis names
``finality/<chain>``              the final height moves within the window (Fabric: blocks only on demand)
``clock/<chain>/<producer>``      blocks appear no earlier and no later than their timestamps allow
``client/<chain>``                the relay's light client: active, trusting period left, close to the park
``lane/<src>-><dst>/<lane>``      registered on the relay chain, not paused
``backlog/<src>-><dst>/<lane>``   packets in flight, from the chains' events; none waits too long
``relayer/<name>``                its process is alive (its API, ``<data_dir>/pids.json`` or this host's
                                  processes) and it keeps stepping while it has packets
``api/<url>``                     an operator API given with ``--api`` answers
===============================  ========================================================================

Packet states come from the chains (the same index as the operator API, :mod:`relay.ops.api.backend`), never from a
relayer's memory. Clock skew is measured against this host's clock: each new block is seen between two polls of
a node, which bounds how long after its timestamp it appeared; a block seen before its own timestamp was made by a
clock ahead of ours, blocks that always appear late by one that is behind. Several chains all off the same way
point at this host's clock instead.

The judges (``judge_*``) are pure functions of what was read and ``now``; :func:`diagnose` does the I/O.
Exit code: 0 when every check is ok, 1 when one warns or fails (2, as every command, for an unreadable config).
I/O libraries are imported where they are used: ``parkrelay`` builds this command's parser on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from chains.registry import chain_kind
from protocol.errors import ParkRelayError
from relay.ops.config import DeploymentConfig

__all__ = ["Check", "DoctorOptions", "Report", "diagnose", "main"]

Status = Literal["ok", "warn", "fail"]
_RANK = {"ok": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One finding."""

    name: str
    """What was checked, as a path: ``node/park-a/wa-1``, ``backlog/park-a->park-b/lane-0``."""
    status: Status
    """``ok``, ``warn`` (needs attention) or ``fail`` (broken)."""
    detail: str
    """One line: what was seen."""
    fix: str = ""
    """What to do about it (empty when ok)."""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class DoctorOptions:
    """Thresholds and where to look."""

    window_s: float = 15.0
    """How long to watch the chains at most: each must finalise a block within it (the watch ends sooner once
    every chain did and enough new blocks were seen to compare clocks)."""
    poll_s: float = 0.25
    """Between two polls of a node while watching."""
    max_skew_ms: int = 1000
    """A block producer's clock further than this from this host's is a problem (DPoS nodes refuse blocks over
    500 ms ahead, relay validators over 2000 ms, the relay's Fabric client peer clocks over 5000 ms)."""
    stuck_after_s: float = 300.0
    """A packet in flight longer than this, or a relayer with packets that has not stepped for this long, fails."""
    client_lag_s: float = 60.0
    """The relay's light client may lag the park's final block by this much (block time) before it warns."""
    expiry_warn_fraction: float = 0.25
    """Warn when less than this fraction of a light client's trusting period is left."""
    apis: tuple[str, ...] = ()
    """Operator APIs to check (``http://127.0.0.1:8300``): each must answer; a relayer's also proves it runs."""
    index_budget_s: float = 60.0
    """How long reading the chains' packet events may take; beyond it the backlog is judged on what was read."""
    clock_samples: int = 3
    """New blocks of one producer needed to judge its clock behind (one block seen early is enough for ahead)."""


@dataclass(frozen=True, slots=True)
class Report:
    """Every check of one run."""

    config: str
    checks: tuple[Check, ...]
    took_s: float

    @property
    def exit_code(self) -> int:
        return 0 if all(c.status == "ok" for c in self.checks) else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in ("ok", "warn", "fail")}

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "ok": self.exit_code == 0, "exit_code": self.exit_code,
                "counts": self.counts(), "took_s": round(self.took_s, 1),
                "checks": [c.to_json() for c in self.checks]}

    def render(self) -> str:
        n = self.counts()
        width = max([len(c.name) for c in self.checks] + [10])
        lines = [f"parkrelay doctor: {self.config} ({self.took_s:.1f} s)"]
        for c in self.checks:
            lines.append(f"  {c.status.upper() if c.status != 'ok' else 'ok':<5} {c.name:<{width}}  {c.detail}")
            if c.status != "ok" and c.fix:
                lines.append(f"  {'':<5} {'':<{width}}  fix: {c.fix}")
        if self.exit_code == 0:
            lines.append(f"healthy: {n['ok']} checks ok")
        else:
            lines.append(f"{n['fail'] + n['warn']} problem(s): {n['fail']} fail, {n['warn']} warn ({n['ok']} ok)")
        return "\n".join(lines)


# -- judges: pure functions of what was read ---------------------------------------------------------------------


def _ago(seconds: float) -> str:
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} days"


def _few(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def judge_key_files(keys_dir: Path, files: Sequence[tuple[Path, int]]) -> Check:
    """``files``: every key file and its mode bits. Group or others may not read, write or run any."""
    if not files:
        return Check("keys", "warn", f"no key file under {keys_dir}",
                     "on a host that runs nodes or relayers, `parkrelay devnet init --config …` makes devnet keys; "
                     "production keys go to the same paths, mode 0600")
    loose = [(p, m) for p, m in files if m & 0o077]
    if not loose:
        return Check("keys", "ok", f"{len(files)} key files, none readable by group or others")
    paths = [str(p) for p, _ in loose]
    return Check("keys", "fail",
                 f"{len(loose)} of {len(files)} key files are open to group or others: "
                 f"{_few([f'{p} ({m & 0o777:o})' for p, m in loose])}",
                 f"chmod 600 {' '.join(paths[:5])}{' …' if len(paths) > 5 else ''} "
                 "(and ask who could read them: a key others could read may have to be replaced)")


def judge_admin_token(path: Path, mode: int | None, valid: bool) -> Check:
    """The admin token: present (``mode`` not None), 32 hex bytes (``valid``), 0600."""
    make = (f"umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' > {path}, then restart the "
            "relay validators and nodes of this host (they read it at start)")
    if mode is None:
        return Check("admin-token", "fail", f"no admin token at {path}: the operator API of this host refuses every "
                     "write (transfers, lane pause and resume, backlog clearing) and nodes their admin methods", make)
    if not valid:
        return Check("admin-token", "fail", f"{path} is not 32 hex-encoded bytes", make)
    if mode & 0o077:
        return Check("admin-token", "fail", f"{path} is open to group or others (mode {mode & 0o777:o})",
                     f"chmod 600 {path}, and replace it if others may have read it")
    return Check("admin-token", "ok", f"{path} present, 0600")


_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared with, never bound
"""``host`` values that mean every address."""


def _addr_ok(addr: str, allowed: frozenset[str]) -> bool:
    if allowed & _WILDCARDS:
        return True
    if addr in allowed:
        return True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if ip.is_loopback:
        return any(ipaddress.ip_address(a).is_loopback for a in allowed if _is_ip(a))
    return False


def _is_ip(a: str) -> bool:
    try:
        ipaddress.ip_address(a)
    except ValueError:
        return False
    return True


def judge_listeners(host: str, allowed: frozenset[str], ports: dict[int, str],
                    listening: Sequence[tuple[str, int]]) -> Check:
    """``listening``: ``(address, port)`` of this host's listening TCP sockets; ``ports``: the deployment's ports
    and what each is for; ``allowed``: the addresses ``host`` (the config's ``[deployment] host``) stands for."""
    ours = sorted({(a, p) for a, p in listening if p in ports})
    if not ours:
        return Check("ports", "ok", f"none of the deployment's {len(ports)} ports listens on this host")
    wide = [(a, p) for a, p in ours if not _addr_ok(a, allowed)]
    if not wide:
        addrs = sorted({a for a, _ in ours})
        return Check("ports", "ok", f"{len({p for _, p in ours})} deployment ports listen on this host, all on "
                     f"{_few(addrs)} (host = {host})")
    where = [f"{ports[p]} on {a}:{p}" for a, p in wide]
    return Check("ports", "fail", f"{len(wide)} deployment port(s) listen beyond host = {host}: {_few(where)}",
                 f"these services are reachable from other hosts: restart them so they bind {host} (the config's "
                 "[deployment] host; an API: --api-host), or set host deliberately and firewall the ports")


@dataclass(frozen=True, slots=True)
class NodeSeen:
    """What a node said when first asked (or why it did not answer)."""

    chain: str
    node: str
    url: str
    expected: str
    """The chain id the config names (Ethereum: the EIP-155 chain id)."""
    answered_as: str | None = None
    """The chain id the node reported; None if it never answered."""
    height: int | None = None
    genesis: str | None = None
    """Its genesis hash (Python parks, relay chain)."""
    error: str | None = None


NODE_LAG_BLOCKS = 5
"""A node this many blocks behind the highest of its chain at the end of the watch is not keeping up."""


def judge_node(seen: NodeSeen, peers_genesis: dict[str, str], start_hint: str, height: int | None = None,
               peers_height: int | None = None) -> Check:
    """``peers_genesis``: the genesis hash each node of the same chain reported, by node; ``height`` and
    ``peers_height``: its head and the highest head of its chain at the end of the watch."""
    name = f"node/{seen.chain}/{seen.node}"
    if seen.answered_as is None:
        return Check(name, "fail", f"does not answer at {seen.url}: {seen.error or 'no answer'}", start_hint)
    if seen.answered_as != seen.expected:
        return Check(name, "fail", f"{seen.url} answers as chain {seen.answered_as!r}, the config says "
                     f"{seen.expected!r}",
                     "another deployment's node (or another chain's) holds this port: stop it, or fix base_port in "
                     "the config")
    others = {g for n, g in peers_genesis.items() if n != seen.node and g}
    if seen.genesis and others and seen.genesis not in others:
        return Check(name, "fail", f"answers as {seen.chain} but from genesis {seen.genesis[:12]}, its peers from "
                     f"{_few(sorted(g[:12] for g in others))}",
                     "this node was initialised on its own (another data_dir or a re-run init): stop it, copy the "
                     "deployment's genesis file and restart it with an empty database")
    if height is not None and peers_height is not None and peers_height - height >= NODE_LAG_BLOCKS:
        return Check(name, "warn", f"answers, but at height {height} while its chain is at {peers_height}: it does "
                     "not keep up with its peers",
                     "check its log for refused blocks (a clock off, another genesis) and that it reaches its peers "
                     "(`parkrelay status`); a node that stays behind can be restarted: it catches up from its peers")
    as_ = seen.chain if seen.answered_as == seen.chain else f"{seen.chain} (chain id {seen.answered_as})"
    return Check(name, "ok", f"answers as {as_} at {seen.url}, height {height if height is not None else seen.height}")


def judge_bridge(chain: str, address: str | None, code_len: int | None, error: str | None) -> Check:
    """The Ethereum park's bridge: ``code_len`` bytes of code at the genesis ``address``."""
    name = f"ethereum/{chain}/bridge"
    if address is None:
        return Check(name, "fail", f"no bridge address: {error}",
                     "`parkrelay devnet init --config …` writes the park's genesis (with the contract addresses)")
    if code_len is None:
        return Check(name, "fail", f"cannot read the code at {address}: {error}", "see the node check of this chain")
    if code_len == 0:
        return Check(name, "fail", f"no contract at {address}, the bridge address of the park's genesis",
                     f"the node runs without the park's deployment (a fresh anvil, or lost state): stop whatever "
                     f"serves this port and start `parkrelay node ethereum --config … --chain {chain}`, which deploys "
                     "the contracts at their genesis addresses on first start")
    return Check(name, "ok", f"bridge deployed at {address} ({code_len} bytes of code)")


@dataclass(frozen=True, slots=True)
class ChainWatch:
    """One chain's heights at the start and the end of the watch."""

    chain: str
    kind: str
    first: tuple[int, int] | None
    """``(height, final height)`` first seen (highest over its nodes); None: no node answered."""
    last: tuple[int, int] | None
    """The same at the end of the watch."""
    watched_s: float
    head_age_s: float | None = None
    """Now minus the head block's time at the end (chains that make blocks only on demand)."""
    on_demand_after_s: float | None = None
    """Set for chains that make blocks only for transactions (Fabric): the relayers' keepalive interval."""


def judge_finality(w: ChainWatch) -> Check:
    name = f"finality/{w.chain}"
    if w.last is None or w.first is None:
        return Check(name, "fail", "no node of the chain answered", f"see the node/{w.chain}/* checks")
    (h0, f0), (h1, f1) = w.first, w.last
    if f1 > f0:
        return Check(name, "ok", f"final height {f0} -> {f1} in {w.watched_s:.1f} s (head {h1})")
    if w.on_demand_after_s is not None:
        if w.head_age_s is None or w.head_age_s <= 2 * w.on_demand_after_s:
            age = "" if w.head_age_s is None else f", last block {_ago(w.head_age_s)} ago"
            return Check(name, "ok", f"idle at final height {f1}{age} (blocks come only with transactions)")
        return Check(name, "warn", f"no block for {_ago(w.head_age_s)} (final height {f1}); relayers send a "
                     f"keepalive every {_ago(w.on_demand_after_s)}",
                     "a relayer's heartbeat sends the keepalive: check the relayer/* checks and that the park's "
                     "orderers order (its supervisor log)")
    if h1 > h0:
        return Check(name, "fail", f"head {h0} -> {h1} but the final height stayed at {f1} for {w.watched_s:.1f} s",
                     _STALL_FIX.get(w.kind, _STALL_FIX["*"]))
    return Check(name, "fail", f"no new block in {w.watched_s:.1f} s (head {h1}, final {f1})",
                 f"the chain's block producers are down or stalled: see the node/{w.chain}/* checks and their logs")


_STALL_FIX = {
    "dpos": "a block is final once more than 2/3 of the active witnesses built on it: start the witnesses that are "
            "down (node checks) and check they are peered (`parkrelay status`)",
    "poc": "a block is final confirmation_depth blocks deep on one branch: the farmers may be split on forks; check "
           "their logs for branch switches and that they are peered",
    "relay": "a relay block needs signatures of more than 2/3 of the validators: start the validators that are down",
    "ethereum": "the relay attests Ethereum blocks confirmation_depth below the head: check the node",
    "*": "check the chain's nodes are up and peered (`parkrelay status`)",
}


@dataclass(frozen=True, slots=True)
class HeadSeen:
    """A block first seen at one poll of a node."""

    chain: str
    producer: str | None
    """The node whose clock stamped it (DPoS witness, PoC farmer); None where the header does not say."""
    hi_ms: int
    """This host's clock when the answer arrived, minus the block's timestamp: an upper bound of how long after its
    timestamp the block appeared."""
    lo_ms: int | None
    """When the previous poll of that node (which did not have the block yet) was sent, minus the block's timestamp:
    a lower bound. None when there was no such poll."""
    resolution_ms: int = 0
    """How coarse the chain's timestamps are (Ethereum: whole seconds)."""


def judge_clocks(seen: Sequence[HeadSeen], max_skew_ms: int, min_samples: int, chains: Sequence[str]) -> list[Check]:
    """Producers whose blocks appear before their timestamps (a clock ahead of this host's) or always late (behind);
    one ``clock`` check when all agree; ``clock/this-host`` when every chain is off the same way (this host's clock
    is the odd one)."""
    groups: dict[tuple[str, str | None], list[HeadSeen]] = {}
    for s in seen:
        groups.setdefault((s.chain, s.producer), []).append(s)
    verdicts: dict[tuple[str, str | None], tuple[str, int] | None] = {}
    for key, obs in groups.items():
        early = min(o.hi_ms for o in obs)
        bracketed = [o.lo_ms - o.resolution_ms for o in obs if o.lo_ms is not None]
        if early < -max_skew_ms:
            verdicts[key] = ("ahead", -early)
        elif len(bracketed) >= min_samples and min(bracketed) > max_skew_ms:
            verdicts[key] = ("behind", min(bracketed))
        else:
            verdicts[key] = None
    judged_chains = sorted({c for c, _ in groups})
    unjudged = [c for c in chains if c not in judged_chains]
    off = {k: v for k, v in verdicts.items() if v is not None}
    directions = {v[0] for v in off.values()}
    if len(judged_chains) >= 2 and len(off) == len(verdicts) and len(directions) == 1:
        way = directions.pop()
        least = min(v[1] for v in off.values())
        mine = "behind" if way == "ahead" else "ahead"
        return [Check("clock/this-host", "fail", f"blocks of every chain ({_few(judged_chains)}) look made {_ms(least)}"
                      f" or more {way} of this host's clock: this host's clock is {mine}",
                      "fix this host's time (NTP: `timedatectl status`, chrony or systemd-timesyncd)")]
    out = []
    for (chain, producer), v in sorted(off.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        assert v is not None
        way, ms = v
        who = f"{producer}'s clock" if producer else f"the clock of the {chain} node that made them"
        seen_how = "before their timestamps" if way == "ahead" else "late, every one"
        out.append(Check(f"clock/{chain}/{producer}" if producer else f"clock/{chain}", "fail",
                         f"blocks appear {seen_how} by {_ms(ms)} or more: {who} is about {_ms(ms)} {way} of this "
                         f"host's (the limit is {_ms(max_skew_ms)})",
                         f"fix the time on {producer or 'that node'}'s host (NTP: chrony or systemd-timesyncd); "
                         "parks refuse blocks too far in the future, and the relay's clients refuse such headers"))
    if out:
        return out
    detail = (f"block times within {_ms(max_skew_ms)} of this host's clock on {_few(judged_chains, 6)}"
              if judged_chains else "no new block seen to compare clocks")
    if unjudged:
        detail += f"; not judged (no new block while watching): {_few(unjudged, 6)}"
    return [Check("clock", "ok", detail)]


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if abs(ms) >= 1000 else f"{ms:.0f} ms"


def judge_client(chain: str, client: dict[str, Any], park_final: int | None, lag_s: float | None,
                 opts: DoctorOptions) -> Check:
    """The relay's light client of ``chain`` (``getClientStatus``, with ``expires_in_s``); ``lag_s``: the park's
    final block time minus the time of the client's latest height (None when not known)."""
    name = f"client/{chain}"
    status = client.get("status")
    if status in (None, "unknown"):
        return Check(name, "fail", f"the relay chain has no light client of {chain}: {client.get('error', '')}",
                     "the relay genesis predates this chain in the config: create the client by governance "
                     "(`client.create`) or start the relay chain from a genesis that has it")
    recreate = ("a frozen or expired client is never updated again: create a new one by governance (`client.create`, "
                "a new client id, from a header the validators trust) and resume the park's lanes")
    if status == "frozen":
        return Check(name, "fail", f"frozen at height {client.get('frozen_height')}: the relay accepted evidence of "
                     f"conflicting finality on {chain}; nothing from or to {chain} is verified, its lanes are paused",
                     f"find the fork on {chain} (its nodes' logs: who signed both branches); then {recreate}")
    if status == "expired":
        return Check(name, "fail", f"expired: no update within its trusting period "
                     f"({_ago((client.get('trusting_period_ms') or 0) / 1000)})", recreate)
    if status != "active":
        return Check(name, "fail", f"status {status!r}", recreate)
    latest, final = client.get("latest_height"), client.get("final_height")
    left, period = client.get("expires_in_s"), client.get("trusting_period_ms")
    behind = "" if park_final is None or latest is None else f", park final {park_final}"
    if left is not None and period and left < opts.expiry_warn_fraction * period / 1000:
        return Check(name, "warn", f"trusting period ends in {_ago(left)} (of {_ago(period / 1000)}) unless updated",
                     "relayers update the client (their heartbeat, [relayers] heartbeat_s > 0): check relayer/*; on "
                     "Fabric the park must make blocks (keepalive_after_s)")
    if lag_s is not None and lag_s > opts.client_lag_s and park_final is not None and latest is not None:
        return Check(name, "warn", f"latest height {latest} is {park_final - latest} blocks ({_ago(lag_s)}) behind "
                     f"the park's final height {park_final}: packets from {chain} wait for updates",
                     "relayers update the client: check relayer/* (heartbeat_s, last errors: `parkrelay status`)")
    life = "" if left is None else f", trusting period left {_ago(left)}"
    return Check(name, "ok", f"active, final {final}, latest {latest}{behind}{life}")


def judge_lane(lane: dict[str, Any]) -> Check:
    """One directed lane as :class:`relay.ops.api.backend.Backend` reads it (``registered``, ``paused``, ``reason``)."""
    src, dst, ln = lane["src"], lane["dst"], lane["lane"]
    name = f"lane/{src}->{dst}/{ln}"
    if not lane.get("registered"):
        return Check(name, "fail", "not registered on the relay chain: packets on it are refused",
                     "the relay genesis predates this lane in the config: open it by governance (`lane.open`)")
    if lane.get("paused"):
        why = lane.get("reason") or "no reason recorded"
        fix = (f"resume it once the cause is gone: POST /api/v1/lanes/{src}/{dst}/{ln}/resume on a relay validator's "
               "API with the admin token (a governance transaction signed by the validators)")
        if why != "governance":
            fix = f"the relay paused it ({why}): see the client checks of {src} and {dst} first; then {fix}"
        return Check(name, "warn", f"paused ({why}): packets from {src} to {dst} on {ln} are refused", fix)
    return Check(name, "ok", "open")


_NEXT = {"committed": "verify on the relay chain", "verified": "execution on the target",
         "executed": "confirmation on the relay chain", "acked": "settlement on the source",
         "timed_out": "refund on the source"}


@dataclass(frozen=True, slots=True)
class Pending:
    """A packet in flight (not completed, not refunded)."""

    key: str
    state: str
    committed_ms: int | None
    """Its source block's time."""
    last_step_ms: int | None
    """When it reached its current state."""


def judge_backlog(src: str, dst: str, lane: str, pending: Sequence[Pending], now_ms: int, stuck_after_s: float,
                  paused: bool, indexed: str | None = None, source: str | None = None) -> Check:
    """``indexed``: what could not be read (the backlog may be bigger), or None when every final block was read;
    ``source``: the operator API whose packet index stood in for the doctor's own reading."""
    name = f"backlog/{src}->{dst}/{lane}"
    partial = f" (events read in part: {indexed})" if indexed else (f" (as the API at {source} reads them)"
                                                                      if source else "")
    if not pending:
        return Check(name, "warn" if indexed else "ok", f"no packet in flight{partial}",
                     "pass --api URL of a running operator API (it has read every event), or a larger --index-budget-s"
                     if indexed else "")
    aged = sorted(pending, key=lambda p: p.committed_ms if p.committed_ms is not None else now_ms)
    oldest = aged[0]
    age = (now_ms - oldest.committed_ms) / 1000 if oldest.committed_ms is not None else 0.0
    step = "" if oldest.last_step_ms is None else f", {oldest.state} for {_ago((now_ms - oldest.last_step_ms) / 1000)}"
    head = f"{len(pending)} in flight; oldest {oldest.key} committed {_ago(age)} ago, waits for {_NEXT[oldest.state]}"
    if age <= stuck_after_s:
        return Check(name, "warn" if indexed else "ok", head + step + partial,
                     "pass --api URL of a running operator API" if indexed else "")
    if paused:
        fix = f"the lane is paused (lane/{src}->{dst}/{lane}): its packets wait until it is resumed"
    else:
        fix = ("a relayer carries packets: check relayer/* (start one: `parkrelay relayer start --config … --name …`), "
               "its last error (`parkrelay status --config …`), and the client/* checks; POST /api/v1/backlog/clear on "
               "a relayer's API acts on every packet at once")
    return Check(name, "fail", f"{head}{step}: stuck for more than {_ago(stuck_after_s)}{partial}", fix)


@dataclass(frozen=True, slots=True)
class RelayerSeen:
    """Where a relayer was found running."""

    name: str
    running: str | None
    """How it was seen: ``its API at …``, ``pid 123 (pids.json)``, ``pid 123 on this host``; None: not seen."""
    keys_here: bool
    """Its relay-chain account key is on this host (so this host is where it should run)."""
    gone_pid: int | None = None
    """A pid ``<data_dir>/pids.json`` names for it that no longer runs it."""


def judge_relayer(seen: RelayerSeen, progress: dict[str, Any] | None, stuck_after_s: float, start_hint: str) -> Check:
    """``progress``: its row of :meth:`relay.ops.api.backend.Backend.relayers` (from its database): ``backlog``,
    ``oldest_pending_s``, ``idle_s`` (since it last stepped a path with packets), ``last_error``."""
    name = f"relayer/{seen.name}"
    backlog = int((progress or {}).get("backlog") or 0)
    idle = (progress or {}).get("idle_s")
    err = (progress or {}).get("last_error")
    tail = f"; last error: {str(err)[:160]}" if err else ""
    if seen.running is None:
        gone = f" (pid {seen.gone_pid} of pids.json is gone)" if seen.gone_pid else ""
        left = f"; its database holds {backlog} packets it had not finished" if backlog else ""
        if seen.keys_here or seen.gone_pid:
            return Check(name, "fail", f"not running on this host{gone}{left}{tail}", start_hint)
        return Check(name, "warn", f"not seen: no process on this host and no --api of it{left}",
                     "run the doctor on its host, or pass --api URL of its operator API")
    if backlog and idle is not None and idle > stuck_after_s:
        return Check(name, "fail", f"running ({seen.running}) but has not stepped for {_ago(idle)} with {backlog} "
                     f"packets pending{tail}", f"see its log; restart it ({start_hint})")
    acted = "" if idle is None else f", last stepped {_ago(idle)} ago"
    return Check(name, "ok", f"running ({seen.running}); {backlog} packets pending{acted}{tail}")


def judge_fabric_binaries(home: Path, missing: Sequence[str], version: str | None, pin: str) -> Check:
    fix = f"run `make setup` (builds Fabric {pin} into {home}) or set PARKRELAY_FABRIC_HOME to a Fabric {pin} home"
    if missing:
        return Check("fabric/binaries", "fail", f"{_few(list(missing), 4)} missing in {home / 'bin'}", fix)
    if version != pin:
        return Check("fabric/binaries", "fail", f"{home / 'bin' / 'peer'} is Fabric {version or '(no version)'}, the "
                     f"pin is {pin}", fix)
    return Check("fabric/binaries", "ok", f"peer, orderer, osnadmin, configtxgen {pin} in {home / 'bin'}")


def judge_api(url: str, status: int | None, error: str | None, relayer: str | None) -> Check:
    name = f"api/{url}"
    if status != 200:
        return Check(name, "fail", f"does not answer: {error or f'HTTP {status}'}",
                     "start the service with --api-port (relay validator or relayer), or fix the URL")
    return Check(name, "ok", f"answers ({'relayer ' + relayer if relayer else 'relay validator'})")


# -- what this host shows: files, sockets, processes ---------------------------------------------------------------


def key_files(cfg: DeploymentConfig) -> list[tuple[Path, int]]:
    """Every file under ``<data_dir>/keys`` and each Fabric park's private keys (``crypto/**``: ``*.key``,
    ``priv_sk``), with its mode."""
    out: list[tuple[Path, int]] = []
    roots: list[tuple[Path, bool]] = [(cfg.data_dir / "keys", True)]
    roots += [(cfg.data_dir / c.id / "crypto", False) for c in cfg.chains if c.kind == "fabric"]
    for root, every in roots:
        if not root.is_dir():
            continue
        for dirpath, _, names in os.walk(root):
            for n in names:
                if every or n.endswith(".key") or n == "priv_sk" or n.endswith("_sk"):
                    p = Path(dirpath) / n
                    with contextlib.suppress(OSError):
                        st = p.lstat()
                        if not p.is_symlink():
                            out.append((p, st.st_mode & 0o7777))
    return sorted(out)


def admin_token_state(path: Path) -> tuple[int | None, bool]:
    try:
        mode = path.stat().st_mode & 0o7777
        text = path.read_text().strip()
    except OSError:
        return None, False
    try:
        return mode, len(bytes.fromhex(text)) == 32
    except ValueError:
        return mode, False


def deployment_ports(cfg: DeploymentConfig, apis: Iterable[str] = ()) -> dict[int, str]:
    """Every TCP port the deployment's services listen on, and what for."""
    ports: dict[int, str] = {}
    for c in cfg.chains:
        kind = chain_kind(c.kind)
        n = kind.port_count(c.params, c.nodes)
        for i in range(n):
            ports[c.base_port + i] = f"{c.id}/{c.nodes[i]}" if n == len(c.nodes) else f"{c.id} (port {i + 1} of {n})"
    if cfg.relay_base_port is not None:
        for v in cfg.relay_validators:
            ports[cfg.relay_port(v)] = f"{cfg.relay_chain_id}/{v}"
    for url in apis:
        with contextlib.suppress(ValueError):
            port = urlsplit(url).port
            if port is not None:
                ports[port] = f"API {url}"
    return ports


def listening_sockets(proc: Path = Path("/proc")) -> list[tuple[str, int]]:
    """This host's listening TCP sockets ``(address, port)`` from ``/proc/net/tcp`` and ``tcp6``."""
    out: list[tuple[str, int]] = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 4 or f[3] != "0A":  # TCP_LISTEN
                continue
            addr_hex, port_hex = f[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # the kernel prints the address as 32-bit words in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.IPv6Address(words) if v6 else ipaddress.IPv4Address(words)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            out.append((str(ip), int(port_hex, 16)))
    return out


def host_addresses(host: str) -> frozenset[str]:
    """The addresses the config's ``host`` stands for (a name is resolved)."""
    if _is_ip(host) or host in _WILDCARDS:
        return frozenset({host})
    try:
        return frozenset(str(ai[4][0]) for ai in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except OSError:
        return frozenset({host})


def fabric_binaries(home: Path) -> tuple[list[str], str | None]:
    """The missing binaries of a Fabric home, and the version its ``peer`` reports."""
    from chains.fabric.network.tools import BINARIES

    missing = [b for b in BINARIES if not os.access(home / "bin" / b, os.X_OK)]
    if "peer" in missing:
        return missing, None
    try:
        out = subprocess.run([str(home / "bin" / "peer"), "version"], capture_output=True, text=True, timeout=10,
                             check=False, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout
    except (OSError, subprocess.TimeoutExpired):
        return missing, None
    version = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.strip().startswith("Version:")),
                   None)
    return missing, version


def _cmdline(pid: int, proc: Path) -> list[str] | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _runs_relayer(argv: list[str], name: str, config: Path | None, cwd: Path | None) -> bool:
    """``argv`` is ``… relayer start … --name NAME`` (``--config`` the same file, when ``config`` is given)."""
    try:
        i = argv.index("relayer")
    except ValueError:
        return False
    rest = argv[i + 1:]
    if not rest or rest[0] != "start":
        return False
    opts = {rest[i]: rest[i + 1] for i in range(1, len(rest) - 1)}
    for a in rest:
        if a.startswith("--name="):
            opts["--name"] = a.split("=", 1)[1]
        if a.startswith("--config="):
            opts["--config"] = a.split("=", 1)[1]
    if opts.get("--name") != name:
        return False
    if config is None or "--config" not in opts:
        return True
    p = Path(opts["--config"])
    if not p.is_absolute() and cwd is not None:
        p = cwd / p
    try:
        return p.resolve() == config.resolve()
    except OSError:
        return False


def find_relayer_process(cfg: DeploymentConfig, name: str, proc: Path = Path("/proc")) -> tuple[str | None, int | None]:
    """``(how it runs, gone pid)``: from ``<data_dir>/pids.json`` (``devnet up``), else a process of this host running
    ``relayer start --name NAME`` on this config (systemd units, a shell)."""
    gone = None
    pids_file = cfg.data_dir / "pids.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        pid = int(json.loads(pids_file.read_text())[f"relayer/{name}"])
        argv = _cmdline(pid, proc)
        if argv is not None and _runs_relayer(argv, name, None, None):
            return f"pid {pid}, {pids_file.name}", None
        gone = pid
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _cmdline(int(entry.name), proc)
        if not argv or "relayer" not in argv:
            continue
        cwd = None
        with contextlib.suppress(OSError):
            cwd = Path(os.readlink(entry / "cwd"))
        if _runs_relayer(argv, name, cfg.path, cwd):
            return f"pid {entry.name} on this host", None
    return None, gone


# -- the chains, watched -------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    height: int
    final: int
    time_ms: int | None
    sent_ms: int
    got_ms: int


@dataclass
class _Probe:
    """One node, polled while watching."""

    chain: str
    kind: str
    node: str
    url: str
    expected: str
    client: Any = None
    seen: NodeSeen | None = None
    first: _Sample | None = None
    last: _Sample | None = None
    error: str | None = None
    heads: list[HeadSeen] = field(default_factory=list)
    depth: int = 0
    """Ethereum: the final height is this far below the head."""

    async def poll(self, decode: Any) -> None:
        import aiohttp

        sent = _wall_ms()
        try:
            if self.kind == "ethereum":
                sample, answered_as, genesis = await self._poll_eth(sent)
            else:
                st = await self.client.call("status")
                answered_as, genesis = str(st.get("chain_id")), st.get("genesis")
                sample = _Sample(int(st["height"]), int(st["final_height"]), int(st["timestamp_ms"]), sent, _wall_ms())
        except (ParkRelayError, aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            self.error = _plain(exc)
            if self.seen is None:
                self.seen = NodeSeen(self.chain, self.node, self.url, self.expected, error=self.error)
            elif self.seen.answered_as is not None:  # it answered, then stopped while watched
                self.seen = NodeSeen(self.chain, self.node, self.url, self.expected,
                                     error=f"stopped answering while watched: {self.error}")
            return
        if self.seen is None or self.seen.answered_as is None:
            self.seen = NodeSeen(self.chain, self.node, self.url, self.expected, answered_as, sample.height, genesis)
        prev = self.last
        if prev is not None and sample.height > prev.height and sample.time_ms is not None:
            producer = await self._producer(sample.height, decode)
            self.heads.append(HeadSeen(self.chain, producer, sample.got_ms - sample.time_ms,
                                       prev.sent_ms - sample.time_ms,
                                       1000 if self.kind == "ethereum" else 0))
        elif prev is None and sample.time_ms is not None:
            # the head was made before this first poll: only an upper bound (enough to see a clock ahead)
            self.heads.append(HeadSeen(self.chain, await self._producer(sample.height, decode),
                                       sample.got_ms - sample.time_ms, None, 1000 if self.kind == "ethereum" else 0))
        if self.first is None:
            self.first = sample
        self.last = sample

    async def _poll_eth(self, sent: int) -> tuple[_Sample, str, None]:
        chain_id = int(await self.client.call("eth_chainId", []), 16)
        block = await self.client.call("eth_getBlockByNumber", ["latest", False])
        height = int(block["number"], 16)
        return (_Sample(height, max(0, height - self.depth), int(block["timestamp"], 16) * 1000, sent, _wall_ms()),
                str(chain_id), None)

    async def _producer(self, height: int, decode: Any) -> str | None:
        if decode is None or self.kind == "ethereum":
            return None
        try:
            header = decode(bytes.fromhex((await self.client.call("getHeader", {"height": height}))["header"]))
        except (ParkRelayError, ValueError, KeyError, TypeError):
            return None
        who = getattr(header, "producer", None) or getattr(header, "farmer", None)
        return str(who) if who else None


PROBE_TIMEOUT_S = 3.0
"""How long a node may take to answer the doctor."""


def _plain(exc: BaseException) -> str:
    """An I/O error in an operator's words."""
    text = str(exc)
    if isinstance(exc, TimeoutError) or "TimeoutError" in text:
        return f"no answer within {PROBE_TIMEOUT_S:g} s (the process hangs, or its host is overloaded)"
    if "Cannot connect" in text or "Connect call failed" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there (the process is not running, or another port)"
    return text[:300] or exc.__class__.__name__


class _EthRpc:
    """Ethereum JSON-RPC to one node (the few calls the doctor makes)."""

    def __init__(self, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        import aiohttp

        self.url = url
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def call(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with self.session.post(self.url, json=body) as r:
            out = await r.json(content_type=None)
        if not isinstance(out, dict) or "result" not in out:
            raise ValueError(f"{method}: {out!r:.200}")
        return out["result"]

    async def close(self) -> None:
        await self.session.close()


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _probes(cfg: DeploymentConfig) -> list[_Probe]:
    from relay.ops.devnet import processes

    out = []
    for chain_id, kind, node, _, url in processes(cfg):
        if kind == "relay":
            out.append(_Probe(chain_id, kind, node, url, cfg.relay_chain_id))
            continue
        chain = cfg.chain(chain_id)
        if kind == "ethereum":
            out.append(_Probe(chain_id, kind, node, url, str(chain.params["eth_chain_id"]),
                              depth=int(chain.params["confirmation_depth"])))
        elif chain_kind(kind).runs_on_park_node:
            out.append(_Probe(chain_id, kind, node, url, chain_id))
    return out


def _decoder(kind: str) -> Any:
    if kind == "relay":
        return None
    try:
        return chain_kind(kind).decode_header
    except Exception:  # a kind without header decoding: no producer names, the chain is still judged
        return None


def _open_probes(probes: list[_Probe]) -> None:
    from adapters.common.rpc import JsonRpcClient

    for p in probes:
        p.client = _EthRpc(p.url) if p.kind == "ethereum" else JsonRpcClient(p.url, side=f"{p.chain}/{p.node}",
                                                                                 timeout_s=PROBE_TIMEOUT_S)


async def _poll_all(probes: list[_Probe]) -> None:
    decoders = {kind: _decoder(kind) for kind in {p.kind for p in probes}}
    await asyncio.gather(*(p.poll(decoders[p.kind]) for p in probes))


async def _watch(probes: list[_Probe], opts: DoctorOptions, progress: Any, t0: float) -> float:
    """Poll every node, each on its own (a node that hangs does not slow the others), until each chain finalised a
    block and enough new blocks were seen, or the window (from ``t0``, the first poll) ends. Returns how long it
    watched."""
    decoders = {kind: _decoder(kind) for kind in {p.kind for p in probes}}

    async def poll_loop(p: _Probe) -> None:
        while True:
            await asyncio.sleep(opts.poll_s)
            await p.poll(decoders[p.kind])

    tasks = [asyncio.ensure_future(poll_loop(p)) for p in probes]
    chains = sorted({p.chain for p in probes})
    try:
        while True:
            took = time.monotonic() - t0
            progress(took)
            if took >= opts.window_s or all(_settled(c, probes, opts) for c in chains):
                return took
            await asyncio.sleep(opts.poll_s)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _settled(chain: str, probes: list[_Probe], opts: DoctorOptions) -> bool:
    mine = [p for p in probes if p.chain == chain and p.first is not None and p.last is not None]
    if not mine:
        return False
    first = max(p.first.final for p in mine if p.first is not None)
    last = max(p.last.final for p in mine if p.last is not None)
    if last <= first:
        return False
    by_producer: dict[str | None, int] = {}
    for p in mine:
        for h in p.heads:
            if h.lo_ms is not None:
                by_producer[h.producer] = by_producer.get(h.producer, 0) + 1
    return bool(by_producer) and min(by_producer.values()) >= opts.clock_samples


async def _close_probes(probes: list[_Probe]) -> None:
    for p in probes:
        if p.client is not None:
            with contextlib.suppress(Exception):
                await p.client.close()


async def _bridge(cfg: DeploymentConfig, chain: Any) -> Check:
    import aiohttp

    from relay.ops.layout import genesis_path

    try:
        address = str(json.loads(genesis_path(cfg, chain.id).read_text())["contracts"]["bridge"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return judge_bridge(chain.id, None, None, f"{genesis_path(cfg, chain.id)}: {exc}")
    url = chain.url_of(chain.nodes[0], cfg.host)
    eth = _EthRpc(url, timeout_s=5.0)
    try:
        code = await eth.call("eth_getCode", [address, "latest"])
        return judge_bridge(chain.id, address, max(0, (len(str(code)) - 2) // 2), None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return judge_bridge(chain.id, address, None, str(exc)[:200] or exc.__class__.__name__)
    finally:
        await eth.close()


async def _api(url: str) -> tuple[Check, str | None]:
    """The API at ``url`` and, if it is a relayer's, that relayer's name (from its ``/metrics``)."""
    import aiohttp

    base = url.rstrip("/")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async with s.get(base + "/api/v1/parks") as r:
                status = r.status
            relayer = None
            if status == 200:
                async with s.get(base + "/metrics") as r:
                    text = await r.text() if r.status == 200 else ""
                for line in text.splitlines():
                    if line.startswith("parkrelay_relayer_packets_in_flight{") and 'relayer="' in line:
                        relayer = line.split('relayer="', 1)[1].split('"', 1)[0]
                        break
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return judge_api(base, None, str(exc)[:200] or exc.__class__.__name__, None), None
    return judge_api(base, status, None, relayer), relayer


async def _index(backend: Any, budget_s: float) -> str | None:
    """Refresh the backend until it read every final block's events, or the budget ran out: what is left, if any."""
    deadline = time.monotonic() + budget_s
    while True:
        await backend.refresh()
        behind = [f"{r.chain_id} to height {r.cursor} of {r.status['final_height']}"
                  for r in [backend.relay, *backend.parks.values()]
                  if r.status["reachable"] and r.status["final_height"] is not None
                  and r.cursor < int(r.status["final_height"])]
        if not behind:
            return None
        if time.monotonic() >= deadline:
            return _few(behind)


def _start_hint(cfg: DeploymentConfig, chain_id: str, kind: str, node: str) -> str:
    conf = cfg.path
    log = cfg.data_dir / "logs" / f"{chain_id}-{node}.log"
    if kind == "relay":
        cmd, unit = f"parkrelay node relay --config {conf} --validator {node}", f"parkrelay-relay-validator@{node}"
    elif kind == "ethereum":
        cmd, unit = f"parkrelay node ethereum --config {conf} --chain {chain_id}", f"parkrelay-ethereum@{chain_id}"
    elif kind == "fabric":
        cmd, unit = f"parkrelay node fabric --config {conf} --chain {chain_id}", f"parkrelay-fabric@{chain_id}"
    else:
        flag = chain_kind(kind).node_flag
        cmd, unit = f"parkrelay node {kind} --config {conf} --chain {chain_id} {flag} {node}", \
            f"parkrelay-park-node@{node}"
    return f"start it, or restart it if it hangs: `{cmd}` (systemd: `systemctl restart {unit}`); its log: {log}"


def _relayer_hint(cfg: DeploymentConfig, name: str) -> str:
    return (f"start it: `parkrelay relayer start --config {cfg.path} --name {name}` (systemd: `systemctl start "
            f"parkrelay-relayer@{name}`); its log: {cfg.data_dir / 'logs' / f'relayer-{name}.log'}")


# -- the whole run ------------------------------------------------------------------------------------------------


async def diagnose(cfg: DeploymentConfig, opts: DoctorOptions | None = None, *, progress: Any = None) -> Report:
    """Run every check on the deployment ``cfg`` (reads only; nothing is written to any chain)."""
    opts = opts or DoctorOptions()
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    checks: list[Check] = []
    # this host: keys, token, sockets, Fabric binaries
    checks.append(judge_key_files(cfg.data_dir / "keys", key_files(cfg)))
    from relay.ops.layout import admin_token_path

    checks.append(judge_admin_token(admin_token_path(cfg), *admin_token_state(admin_token_path(cfg))))
    checks.append(judge_listeners(cfg.host, host_addresses(cfg.host), deployment_ports(cfg, opts.apis),
                                  listening_sockets()))
    if any(c.kind == "fabric" for c in cfg.chains):
        from chains.fabric.network.config import FABRIC_VERSION, default_fabric_home

        home = default_fabric_home()
        checks.append(judge_fabric_binaries(home, *fabric_binaries(home), FABRIC_VERSION))

    probes = _probes(cfg)
    _open_probes(probes)
    backend = None
    indexing = None
    try:
        say("asking every node")
        t_watch = time.monotonic()
        await _poll_all(probes)
        if cfg.relay_base_port is not None:
            from relay.ops.api.backend import Backend

            # the relay state is read from validators that answered first (one that hangs would stall every read)
            relay = [p for p in probes if p.kind == "relay"]
            urls = [p.url for p in relay if p.last is not None] + [p.url for p in relay if p.last is None]
            backend = Backend(cfg, relay_urls=urls, poll_s=opts.poll_s)
            indexing = asyncio.ensure_future(_index(backend, opts.index_budget_s))
        say("watching the chains")
        watched = await _watch(probes, opts, lambda s: say(f"watching the chains: {s:.0f} s"), t_watch)
        say("reading packets and relay state")
        left = None
        if indexing is not None:
            try:
                left = await indexing
            except (ParkRelayError, OSError, ValueError, KeyError, TypeError) as exc:
                left = f"reading failed: {str(exc)[:200]}"
        if backend is not None:
            for r in backend.parks.values():  # heads at the end of the watch (chains without a probe: Fabric)
                await r.read_status()
        now = _wall_ms()
        checks += _node_checks(cfg, probes, backend)
        for chain in cfg.chains_of_kind("ethereum"):
            checks.append(await _bridge(cfg, chain))
        checks += _finality_checks(cfg, probes, backend, watched, now)
        checks += judge_clocks([h for p in probes for h in p.heads], opts.max_skew_ms, opts.clock_samples,
                               sorted({p.chain for p in probes}))
        relayers_by_api: dict[str, str] = {}
        for url in opts.apis:
            check, relayer = await _api(url)
            checks.append(check)
            if relayer:
                relayers_by_api[relayer] = url
        if backend is not None:
            checks += await _relay_checks(cfg, backend, probes, opts, now, left)
        checks += _relayer_checks(cfg, backend, relayers_by_api, opts)
    finally:
        if indexing is not None and not indexing.done():
            indexing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await indexing
        await _close_probes(probes)
        if backend is not None:
            await backend.stop()
    return Report(str(cfg.path), tuple(checks), time.monotonic() - t0)


def _node_checks(cfg: DeploymentConfig, probes: list[_Probe], backend: Any) -> list[Check]:
    out = []
    genesis: dict[str, dict[str, str]] = {}
    for p in probes:
        if p.seen is not None and p.seen.genesis:
            genesis.setdefault(p.chain, {})[p.node] = p.seen.genesis
    top: dict[str, int] = {}
    for p in probes:
        if p.last is not None:
            top[p.chain] = max(top.get(p.chain, 0), p.last.height)
    for p in probes:
        seen = p.seen or NodeSeen(p.chain, p.node, p.url, p.expected, error="not polled")
        out.append(judge_node(seen, genesis.get(p.chain, {}), _start_hint(cfg, p.chain, p.kind, p.node),
                              None if p.last is None else p.last.height, top.get(p.chain)))
    for chain in cfg.chains:
        if chain.kind != "fabric":
            continue
        node, url = chain.nodes[0], chain.url_of(chain.nodes[0], cfg.host)
        name, hint = f"node/{chain.id}/{node}", _start_hint(cfg, chain.id, "fabric", node)
        st = backend.chains()["parks"] if backend is not None else []
        row = next((r for r in st if r["id"] == chain.id), None)
        if row is None:
            out.append(Check(name, "warn", "not checked: the doctor reads Fabric parks through the relay deployment",
                             "add the relay chain to the config"))
        elif not row["reachable"]:
            out.append(Check(name, "fail", f"the park does not answer (hfc): {row.get('error')}", hint))
        else:
            out.append(Check(name, "ok", f"the park answers (hfc: its peers and orderers from {url.split('//')[-1]}), "
                                         f"height {row['height']}"))
    return out


def _finality_checks(cfg: DeploymentConfig, probes: list[_Probe], backend: Any, watched: float,
                     now: int) -> list[Check]:
    out = []
    for chain in [cfg.relay_chain_id] * (cfg.relay_base_port is not None) + [c.id for c in cfg.chains]:
        mine = [p for p in probes if p.chain == chain]
        if mine:
            firsts = [p.first for p in mine if p.first is not None]
            lasts = [p.last for p in mine if p.last is not None]
            kind = mine[0].kind
            out.append(judge_finality(ChainWatch(
                chain, kind, (max(s.height for s in firsts), max(s.final for s in firsts)) if firsts else None,
                (max(s.height for s in lasts), max(s.final for s in lasts)) if lasts else None, watched)))
            continue
        c = cfg.chain(chain)
        reader = backend.parks.get(chain) if backend is not None else None
        if reader is None or not reader.status["reachable"]:
            out.append(judge_finality(ChainWatch(chain, c.kind, None, None, watched)))
            continue
        st = reader.status
        hf = (int(st["height"]), int(st["final_height"]))
        age = None if st.get("time_ms") is None else (now - int(st["time_ms"])) / 1000
        out.append(judge_finality(ChainWatch(chain, c.kind, hf, hf, watched, age,
                                             chain_kind(c.kind).keepalive_after_s(c.params))))
    return out


async def _relay_checks(cfg: DeploymentConfig, backend: Any, probes: list[_Probe], opts: DoctorOptions, now: int,
                        left: str | None) -> list[Check]:
    from relay.ops.api.index import FINAL_STATES

    out: list[Check] = []
    if not backend.relay.status["reachable"]:
        return [Check("relay-state", "fail", f"no relay validator answered: {backend.relay.status.get('error')}",
                      "see the node/relay/* checks")]
    park_final: dict[str, int] = {}
    for p in probes:
        if p.last is not None:
            park_final[p.chain] = max(park_final.get(p.chain, 0), p.last.final)
    for r in backend.parks.values():
        if r.status["reachable"] and r.status["final_height"] is not None and r.chain_id not in park_final:
            park_final[r.chain_id] = int(r.status["final_height"])
    for client in backend.clients:
        chain = client["chain_id"]
        final = park_final.get(chain)
        lag = None
        latest = client.get("latest_height")
        reader = backend.parks.get(chain)
        if final is not None and latest is not None and final > latest and reader is not None:
            t_final, t_latest = await reader.time_ms(final), await reader.time_ms(int(latest))
            if t_final is not None and t_latest is not None:
                lag = (t_final - t_latest) / 1000
        out.append(judge_client(chain, client, final, lag, opts))
    paused: set[tuple[str, str, str]] = set()
    for lane in backend.lanes:
        out.append(judge_lane(lane))
        if lane.get("paused"):
            paused.add((lane["src"], lane["dst"], lane["lane"]))
    pending: dict[tuple[str, str, str], list[Pending]] = {}
    for rec in backend.index.packets.values():
        if rec.state in FINAL_STATES or rec.packet is None:
            continue
        step = {"committed": "commit", "verified": "verify", "executed": "execute", "acked": "confirm",
                "timed_out": "confirm"}[rec.state]
        last = rec.steps.get(step)
        pending.setdefault((rec.src, rec.dst, rec.lane), []).append(
            Pending(rec.key, rec.state, rec.committed_ms, None if last is None else last.time_ms))
    source = None
    if left is not None:  # a long history not read within the budget: a running API has read all of it
        for url in opts.apis:
            from_api = await _api_pending(url)
            if from_api is not None:
                pending, left, source = from_api, None, url.rstrip("/")
                break
    for ln, a, b in cfg.lanes:
        for src, dst in ((a, b), (b, a)):
            out.append(judge_backlog(src, dst, ln, pending.get((src, dst, ln), []), now, opts.stuck_after_s,
                                     (src, dst, ln) in paused, left, source))
    return out


async def _api_pending(url: str, max_pages: int = 500) -> dict[tuple[str, str, str], list[Pending]] | None:
    """Packets in flight as the operator API at ``url`` indexed them (``GET /api/v1/packets?state=pending``, page by
    page); None if it does not answer."""
    import aiohttp

    out: dict[tuple[str, str, str], list[Pending]] = {}
    cursor = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for _ in range(max_pages):
                params = {"state": "pending", "limit": "200", **({"cursor": cursor} if cursor else {})}
                async with s.get(url.rstrip("/") + "/api/v1/packets", params=params) as r:
                    if r.status != 200:
                        return None
                    page = await r.json()
                for p in page["items"]:
                    out.setdefault((p["src"], p["dst"], p["lane"]), []).append(
                        Pending(p["packet"], p["state"], p.get("committed_ms"), None))
                cursor = page.get("next_cursor")
                if not cursor:
                    return out
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError):
        return None
    return out


def _relayer_checks(cfg: DeploymentConfig, backend: Any, by_api: dict[str, str], opts: DoctorOptions) -> list[Check]:
    from relay.ops.layout import relayer_key_path

    rows = {r["relayer"]: r for r in (backend.relayers if backend is not None else [])}
    out = []
    for name in cfg.relayers:
        how: str | None
        gone: int | None
        if name in by_api:
            how, gone = f"its API at {by_api[name]}", None
        else:
            how, gone = find_relayer_process(cfg, name)
        keys_here = relayer_key_path(cfg, cfg.relay_chain_id, name).exists()
        out.append(judge_relayer(RelayerSeen(name, how, keys_here, gone), rows.get(name), opts.stuck_after_s,
                                 _relayer_hint(cfg, name)))
    return out


# -- the command ----------------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """``parkrelay doctor`` and its options."""
    d = DoctorOptions()
    dr = sub.add_parser("doctor", help="check a deployment end to end; each problem with what to do (exit 1 if any)")
    dr.add_argument("--config", default="deploy/devnet.toml")
    dr.add_argument("--json", action="store_true", help="one JSON object: every check and the exit code")
    dr.add_argument("--api", action="append", default=[], metavar="URL",
                    help="an operator API to check (relay validator or relayer, e.g. http://127.0.0.1:8300); a "
                         "relayer's also shows that relayer runs. Repeatable")
    dr.add_argument("--window-s", type=float, default=d.window_s,
                    help=f"watch the chains at most this long for finality and clocks (default {d.window_s:g})")
    dr.add_argument("--max-skew-ms", type=int, default=d.max_skew_ms,
                    help=f"largest clock difference allowed between a block producer and this host "
                         f"(default {d.max_skew_ms})")
    dr.add_argument("--stuck-after-s", type=float, default=d.stuck_after_s,
                    help=f"a packet in flight longer than this is stuck (default {d.stuck_after_s:g})")
    dr.add_argument("--client-lag-s", type=float, default=d.client_lag_s,
                    help=f"largest lag of a light client behind its park's final block (default {d.client_lag_s:g})")
    dr.add_argument("--index-budget-s", type=float, default=d.index_budget_s,
                    help=f"time allowed to read the chains' packet events (default {d.index_budget_s:g})")


def main(cfg: DeploymentConfig, args: Any) -> int:
    """``parkrelay doctor``: print the report (text, or JSON with ``--json``); exit 0 healthy, 1 otherwise."""
    for flag in ("window_s", "stuck_after_s", "client_lag_s", "index_budget_s"):
        if not getattr(args, flag) > 0:
            from relay.ops.config import ConfigError

            raise ConfigError(f"--{flag.replace('_', '-')}: expected a positive number, got {getattr(args, flag)}")
    opts = DoctorOptions(window_s=args.window_s, max_skew_ms=args.max_skew_ms, stuck_after_s=args.stuck_after_s,
                         client_lag_s=args.client_lag_s, index_budget_s=args.index_budget_s, apis=tuple(args.api))
    tty = sys.stderr.isatty() and not args.json

    def progress(msg: str) -> None:
        if tty:
            print(f"\r\033[Kdoctor: {msg}…", end="", file=sys.stderr, flush=True)

    report = asyncio.run(diagnose(cfg, opts, progress=progress))
    if tty:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return report.exit_code
