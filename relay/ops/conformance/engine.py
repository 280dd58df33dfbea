"""The conformance engine: plays scenarios (``scenarios.toml``) on pairs of a running deployment through the operator
modules (``relay.ops.parks`` views, ``relay.ops.packets`` states, relayer processes as ``parkrelay relayer start``).

One run is a sequence of batches. The plain scenarios (faults ``none``, ``refused``, ``timeout``, ``replay``) of every
pair go in one batch: the timeout cases are sent first while no relayer of the runner runs and the runner waits until
each target's blocks are past them, then the rest are sent and one relayer clears them together. The ``return``
scenarios follow in a second batch (they send home what the first delivered). Each fault scenario then runs on its
own, one pair at a time. After each batch the runner checks every case: its packets' final state and ack, exactly once
(the balances each packet touched moved by exactly its amount or came back), supply conserved per denomination on
the parks involved, every charging right existing exactly once, nothing left non-final.

Packet phases are read from the chains while packets are in flight (``relay.ops.packets.show_packet``); each phase
is recorded when first seen, with the time and the height of the chain it happened on at that moment (an upper bound
of the height of the block that did it). A phase passed between two reads is not recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chains.common.procs import spawn
from protocol.codec import decode_packet
from relay.ops.config import ConfigError, DeploymentConfig
from relay.ops.conformance.capabilities import (
    Capabilities,
    ProcessTable,
    admitting_station,
    missing,
    pidfile_processes,
    refusing_station,
)
from relay.ops.conformance.scenarios import Scenario
from relay.ops.packets import packet_key, show_packet
from relay.ops.parks import ParkView, park_view, rpc

__all__ = ["CaseResult", "PacketRecord", "Report", "Runner", "plan_pairs"]

FINAL = ("completed", "refunded")
ORDER = ("committed", "verified", "executed", "acked", "timed_out", "completed", "refunded")
PHASE_CHAIN = {"committed": "src", "verified": "relay", "executed": "dst", "acked": "relay", "timed_out": "relay",
               "completed": "src", "refunded": "src"}
"""Where each phase happens: the source park, the relay chain or the target park."""
AMOUNT = {"none": 1_000, "refused": 70, "timeout": 9, "return": 400, "replay": 300}
TIMEOUT_S = 4.0
"""The timeout of the timeout scenarios' packets: past on every target before the runner's relayer starts."""
RIGHT_KW = 10
SETTLE_S = 120.0
"""How long the runner relays packets it did not send before it calls them stuck (the deployment invariant)."""
SLOT_START_S, SLOT_END_S = 7_200, 10_800
NOBODY = "nobody-here"
"""The receiver of the refused cases: an account no park has."""
MODELS = {"dpos": "dpos-witness-credit/v1", "poc": "poc-farmer-response/v1", "ethereum": "eth-delivery-record/v1",
          "fabric": "fabric-participant-standing/v1"}
"""The reputation model each kind attests (docs/research.md)."""


@dataclass
class PacketRecord:
    key: str
    src: str
    dst: str
    sent_height: int
    sent_ms: int
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    """state -> ``{"ms": first seen, "chain": where, "height": that chain's height then}``"""
    row: dict[str, Any] = field(default_factory=dict)
    """its last ``parkrelay packet show`` row"""

    def to_json(self) -> dict[str, Any]:
        return {"packet": self.key, "src": self.src, "dst": self.dst, "state": self.row.get("state"),
                "ack": self.row.get("ack"), "kind": self.row.get("kind"), "payload": self.row.get("payload"),
                "phases": self.phases}


@dataclass
class CaseResult:
    scenario: Scenario
    src: str
    dst: str
    status: str = "pending"
    """``passed``, ``failed`` or ``skipped``"""
    reason: str = ""
    missing: list[str] = field(default_factory=list)
    packets: list[PacketRecord] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    """what the runner did, in order (faults injected, relayers started and killed)"""
    expect: dict[str, Any] = field(default_factory=dict)
    """what the case sent: right_id, subject, model, denom, amount (for callers that check more)"""
    started: float = 0.0
    duration_s: float = 0.0
    _deltas: list[tuple[str, str, str, int]] = field(default_factory=list)
    """balance changes expected: (chain, account, denom, delta)"""
    _done: bool = False

    @property
    def name(self) -> str:
        return f"{self.scenario.id}:{self.src}->{self.dst}"

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append({"check": what, "ok": bool(ok), "detail": detail})
        return ok

    def finish(self) -> None:
        if self._done or self.status == "skipped":
            return
        self._done = True
        bad = [c for c in self.checks if not c["ok"]]
        if self.status != "failed":
            self.status = "failed" if bad or not self.checks else "passed"
        if bad and not self.reason:
            self.reason = "; ".join(f"{c['check']}: {c['detail']}" for c in bad)
        if self.started:
            self.duration_s = time.monotonic() - self.started

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.id, "title": self.scenario.title, "src": self.src, "dst": self.dst,
                "status": self.status, "reason": self.reason, "missing": self.missing,
                "expect": self.scenario.expect.to_json(), "checks": self.checks, "events": self.events,
                "packets": [p.to_json() for p in self.packets], "duration_s": round(self.duration_s, 3)}


@dataclass
class Report:
    config: str
    started_ms: int
    results: list[CaseResult]
    capabilities: list[str]
    invariants: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results) and all(i["ok"] for i in self.invariants)

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "started_ms": self.started_ms, "duration_s": round(self.duration_s, 3),
                "ok": self.ok, "counts": self.counts(), "capabilities": sorted(self.capabilities),
                "invariants": self.invariants, "results": [r.to_json() for r in self.results]}


def plan_pairs(cfg: DeploymentConfig, how: str, only: Iterable[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """The pairs a scenario runs on: ``ordered`` both directions of every lane, ``lanes`` each lane once (a -> b);
    restricted to ``only`` (ordered pairs; a ``lanes`` scenario takes a lane if either direction is named)."""
    out: list[tuple[str, str]] = []
    for _, a, b in cfg.lanes:
        if a == cfg.relay_chain_id or b == cfg.relay_chain_id:
            continue
        dirs = [(a, b), (b, a)] if how == "ordered" else [(a, b)]
        for d in dirs:
            if d in out:
                continue
            if only is not None:
                wanted = set(only)
                if how == "ordered" and d not in wanted:
                    continue
                if how == "lanes" and d not in wanted and (d[1], d[0]) not in wanted:
                    continue
            out.append(d)
    return out


def default_user(cfg: DeploymentConfig, chain_id: str) -> str:
    """The account the runner sends from and to on a park: its first genesis account with a balance that is neither
    a relayer nor the operator."""
    chain = cfg.chain(chain_id)
    for name, amount in chain.accounts.items():
        if name not in cfg.relayers and name not in ("operator", "relayer") and int(amount) > 0:
            return str(name)
    raise ConfigError(f"{cfg.path}: chain {chain_id} has no funded account to send from")


def reputation_subject(cfg: DeploymentConfig, chain_id: str, user: str) -> tuple[str, str]:
    """Whom park ``chain_id`` attests and under which model: its first node (a DPoS witness's credit, a PoC farmer's
    response rate), else the park's user (Ethereum, Fabric: the participant its genesis or operator scores)."""
    chain = cfg.chain(chain_id)
    model = MODELS.get(chain.kind, f"{chain.kind}/v1")
    if chain.kind in ("dpos", "poc"):
        return chain.nodes[0], model
    return user, model


class Runner:
    """One conformance run against deployment ``cfg``. ``procs``: the processes it may kill (default: what
    ``devnet up`` recorded); ``users``: chain -> account to send from and to (default :func:`default_user`);
    ``wait_final_sends``: each phase 1 waits for a final block (operators' deployments; a test devnet where the
    runner is the only sender may skip it); ``log``: progress lines."""

    def __init__(self, cfg: DeploymentConfig, scenarios: list[Scenario], *,
                 pairs: Iterable[tuple[str, str]] | None = None, procs: ProcessTable | None = None,
                 users: dict[str, str] | None = None, wait_final_sends: bool = True,
                 log: Callable[[str], None] | None = None, drain_timeout_s: float = 420.0) -> None:
        self.cfg = cfg
        self.scenarios = scenarios
        self.only = None if pairs is None else list(pairs)
        self.procs = procs if procs is not None else pidfile_processes(cfg)
        self.users = {c.id: (users or {}).get(c.id) or default_user(cfg, c.id) for c in cfg.chains}
        self.wait_final_sends = wait_final_sends
        self.log = log or (lambda _: None)
        self.drain_timeout_s = drain_timeout_s
        self.views: dict[str, ParkView] = _Views(cfg)  # made when first used: a run with nothing to do reads no chain
        self.run_id = uuid.uuid4().hex[:6]
        self.relayers: dict[str, subprocess.Popen[bytes]] = {}
        self.rights_before: dict[str, Any] = {}
        self._down: tuple[str, str] | None = None
        self._before: dict[tuple[str, str, str], int] = {}
        self._n = 0

    # -- the run --------------------------------------------------------------------------------------------------

    async def run(self) -> Report:
        t0, started_ms = time.monotonic(), int(time.time() * 1000)
        registries = {c.id: await asyncio.to_thread(self.views[c.id].registry) for c in self.cfg.chains} if any(
            s.asset == "charging_right" for s in self.scenarios) and self._keyed() else {}
        caps = Capabilities.of(self.cfg, self.procs, registries)
        self.caps = caps
        cases: list[CaseResult] = []
        for s in self.scenarios:
            for src, dst in plan_pairs(self.cfg, s.pairs, self.only):
                if s.kinds is not None and not {caps.kinds[src], caps.kinds[dst]} <= set(s.kinds):
                    continue  # not a scenario of this pair's kinds
                c = CaseResult(s, src, dst)
                c.missing = missing(s, src, dst, caps)
                if c.missing:
                    c.status, c.reason = "skipped", "missing capability: " + "; ".join(c.missing)
                cases.append(c)
        todo = [c for c in cases if c.status != "skipped"]
        try:
            first = [c for c in todo if c.scenario.fault in ("none", "refused", "timeout", "replay")]
            if first:
                await self._batch(first, registries)
                for c in first:
                    c.finish()  # their verdicts decide whether the `return` scenarios run
            later = []
            for c in (c for c in todo if c.scenario.fault == "return"):
                before = next((x for x in cases if x.scenario.id == c.scenario.after
                               and (x.src, x.dst) == (c.src, c.dst)), None)
                if before is None or before.status != "passed":
                    c.status = "skipped"
                    c.reason = (f"missing capability: after({c.scenario.after}): "
                                f"{'it did not run' if before is None else before.status} on this pair")
                    c.missing = [c.reason.removeprefix("missing capability: ")]
                else:
                    later.append(c)
            if later:
                await self._batch(later, registries)
            for c in todo:
                if c.scenario.fault in ("relayer_sigkill", "relayers_racing", "relay_validator_down",
                                        "park_node_sigkill"):
                    await self._fault(c)
            invariants = await self._deployment_invariants() if todo else []
        finally:
            self.stop_relayers()
        for c in cases:
            c.finish()
        report = Report(str(self.cfg.path), started_ms, cases, sorted(caps.have), invariants)
        report.duration_s = time.monotonic() - t0
        return report

    # -- relayers ---------------------------------------------------------------------------------------------------

    def start_relayer(self, name: str | None = None) -> str:
        from relay.ops.layout import relayer_key_path

        if name is None:
            name = next(r for r in self.cfg.relayers if relayer_key_path(self.cfg, self.cfg.relay_chain_id, r).exists()
                        and r not in self.relayers)
        logs = self.cfg.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"relayer-{name}.log", "ab")
        self.relayers[name] = spawn([sys.executable, "-m", "relay.cli", "relayer", "start", "--config",
                                     str(self.cfg.path), "--name", name], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return name

    def kill_relayer(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.relayers.pop(name)
        p.send_signal(sig)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_relayers(self) -> None:
        for name in list(self.relayers):
            self.kill_relayer(name, signal.SIGTERM)

    # -- phase 1 ----------------------------------------------------------------------------------------------------

    def _lane(self, a: str, b: str) -> str:
        for ln, x, y in self.cfg.lanes:
            if {x, y} == {a, b}:
                return ln
        raise ConfigError(f"{self.cfg.path}: no lane joins {a} and {b}")

    def voucher(self, denom: str, src: str, dst: str) -> str:
        return f"{self._lane(src, dst)}/{src}/{denom}"

    async def _send(self, c: CaseResult, src: str, dst: str, asset: dict[str, Any], *, receiver: str | None = None,
                    timeout_s: float = 600.0) -> PacketRecord:
        view = self.views[src]
        to = self.views[dst].account(receiver or self.users[dst])
        sent_ms = int(time.time() * 1000)
        sent = await asyncio.to_thread(view.send, self.users[src], dst, to, self._lane(src, dst),
                                       int((time.time() + timeout_s) * 1000), asset, wait_final=self.wait_final_sends)
        rec = PacketRecord(packet_key(decode_packet(sent["packet"])), src, dst, int(sent["height"]), sent_ms)
        rec.phases["committed"] = {"ms": sent_ms, "chain": src, "height": int(sent["height"])}
        c.packets.append(rec)
        c.expect.setdefault("height", int(sent["height"]))
        return rec

    async def _commit(self, c: CaseResult, registries: dict[str, Any]) -> None:
        """Phase 1 of case ``c``, and the balance changes it must make."""
        s, src, dst = c.scenario, c.src, c.dst
        c._deltas = self._planned_deltas(c)  # zero: refunded and refused cases must leave these as they were
        if not c.started:
            c.started = time.monotonic()
        fault = s.fault
        timeout_s = TIMEOUT_S if fault == "timeout" else 600.0
        receiver = NOBODY if fault == "refused" and s.asset != "charging_right" else None
        if s.asset == "energy":
            if fault == "return":  # the voucher the `after` case delivered goes home
                denom = self.voucher("kWh", src, dst)
                c.expect.update(denom=denom, amount=AMOUNT["return"] * s.packets, home=src)
                for _ in range(s.packets):
                    await self._send(c, dst, src, {"kind": "energy", "denom": denom, "amount_wh": AMOUNT["return"]})
                c._deltas += [(dst, self.users[dst], denom, -AMOUNT["return"] * s.packets),
                              (src, self.users[src], "kWh", AMOUNT["return"] * s.packets)]
                return
            amount = AMOUNT.get(fault, 100)
            c.expect.update(denom="kWh", amount=amount)
            both = fault in ("relayer_sigkill", "relayers_racing", "relay_validator_down", "park_node_sigkill")
            for i in range(s.packets):
                for a, b in ((src, dst), (dst, src)) if both else ((src, dst),):
                    await self._send(c, a, b, {"kind": "energy", "denom": "kWh", "amount_wh": amount + i},
                                     receiver=receiver, timeout_s=timeout_s)
                    if s.expect.state == "completed":
                        c._deltas += [(a, self.users[a], "kWh", -(amount + i)),
                                      (b, self.users[b], self.voucher("kWh", a, b), amount + i)]
            return
        if s.asset == "charging_right":
            now = int(time.time() * 1000)
            reg_s, reg_d = registries[src], registries[dst]
            if fault == "refused":
                found = refusing_station(reg_s, reg_d)
                assert found is not None  # gated by right_admission_gap
                station, tr, kw = found
            else:
                got = admitting_station(reg_s, reg_d, RIGHT_KW)
                if got is None:
                    c.status = "failed"
                    c.reason = f"no station registered on both {src} and {dst} with {RIGHT_KW} kW free"
                    return
                (station, tr), kw = got, RIGHT_KW
            self._n += 1
            rid = f"cf-{self.run_id}-{self._n:03d}"
            view = self.views[src]
            await asyncio.to_thread(view.issue_right, rid, station, tr, kw, now + SLOT_START_S * 1000,
                                    now + SLOT_END_S * 1000, view.account(self.users[src]))
            for reg in (reg_s, reg_d):  # booked from now on: later cases choose with it counted
                reg.setdefault("bookings", {}).setdefault(tr, []).append({"right_id": rid, "power_kw": kw})
            c.expect.update(right_id=rid, station=station, power_kw=kw)
            await self._send(c, src, dst, {"kind": "charging_right", "right_id": rid}, timeout_s=timeout_s)
            return
        subject, model = reputation_subject(self.cfg, src, self.users[src])
        c.expect.update(subject=self.views[src].account(subject), model=model)
        await self._send(c, src, dst, {"kind": "reputation", "subject": c.expect["subject"], "model": model},
                         receiver=receiver, timeout_s=timeout_s)

    # -- waiting and watching -----------------------------------------------------------------------------------

    async def _height(self, chain: str, cache: dict[str, int | None]) -> int | None:
        if chain not in cache:
            try:
                if chain == self.cfg.relay_chain_id:
                    url = self.cfg.relay_url(self.cfg.relay_validators[0])
                    cache[chain] = int((await asyncio.to_thread(rpc, url, "status"))["height"])
                else:
                    cache[chain] = int((await asyncio.to_thread(self.views[chain].status))["height"])
            except (OSError, RuntimeError, KeyError, ValueError):
                cache[chain] = None
        return cache[chain]

    async def _observe(self, recs: list[PacketRecord]) -> None:
        """Read each non-final packet's state once; record the phases seen first now."""
        heights: dict[str, int | None] = {}
        pending = [r for r in recs if r.row.get("state") not in FINAL]
        rows = await asyncio.gather(*(asyncio.to_thread(show_packet, self.cfg, r.key) for r in pending),
                                    return_exceptions=True)
        now = int(time.time() * 1000)
        for r, row in zip(pending, rows, strict=True):
            if isinstance(row, BaseException):
                continue
            r.row = row
            st = row["state"]
            if st not in r.phases and st in ORDER:
                where = PHASE_CHAIN[st]
                chain = {"src": r.src, "dst": r.dst, "relay": self.cfg.relay_chain_id}[where]
                r.phases[st] = {"ms": now, "chain": chain, "height": await self._height(chain, heights)}

    async def _wait(self, recs: list[PacketRecord], timeout_s: float, until: Callable[[], bool] | None = None,
                    poll_s: float = 0.5) -> bool:
        """Until every packet of ``recs`` is final (or ``until()``); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self._observe(recs)
            if until is not None and until():
                return True
            if until is None and all(r.row.get("state") in FINAL for r in recs):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(poll_s)

    async def _targets_past(self, recs: list[PacketRecord]) -> None:
        """Until each packet's target has a block past its timeout (no relayer of the runner runs meanwhile)."""
        from relay.ops.relayers import build_relayer

        links = await asyncio.to_thread(build_relayer, self.cfg, next(iter(self._keyed())))
        try:
            deadline = time.monotonic() + 90
            for r in recs:
                target = links.parks[r.dst].source
                timeout_ms = int((await asyncio.to_thread(show_packet, self.cfg, r.key))["timeout_timestamp_ms"])
                while await target.header_time_ms(await target.latest_height()) <= timeout_ms:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{r.dst}'s blocks not past {r.key}'s timeout within 90 s")
                    await asyncio.sleep(0.3)
        finally:
            await links.close_links()

    def _keyed(self) -> list[str]:
        from relay.ops.layout import relayer_key_path

        return [r for r in self.cfg.relayers if relayer_key_path(self.cfg, self.cfg.relay_chain_id, r).exists()]

    # -- balances and invariants --------------------------------------------------------------------------------

    async def _balances(self, cases: list[CaseResult]) -> dict[tuple[str, str, str], int]:
        keys = {(ch, acct, denom) for c in cases for ch, acct, denom, _ in c._deltas}
        out = {}
        for ch, acct, denom in sorted(keys):
            out[(ch, acct, denom)] = int(await asyncio.to_thread(self.views[ch].balance, acct, denom))
        return out

    async def _conserved(self, parks: set[str]) -> list[str]:
        """Per park H of ``parks``: H's kWh escrowed == the vouchers of it on the other end of each of its lanes."""
        bad = []
        for home in sorted(parks):
            ends = [(ln, b if a == home else a) for ln, a, b in self.cfg.lanes if home in (a, b)]
            escrowed = int(await asyncio.to_thread(self.views[home].escrow, "kWh"))
            out = 0
            for ln, other in ends:
                if other != self.cfg.relay_chain_id:
                    out += int(await asyncio.to_thread(self.views[other].voucher_supply, f"{ln}/{home}/kWh"))
            if escrowed != out:
                bad.append(f"{home}'s kWh: {escrowed} escrowed, {out} vouchers out")
        return bad

    async def _rights(self, parks: set[str]) -> tuple[dict[str, Any], list[Any]]:
        from chains.common.rights import rights_violations

        reports = {p: await asyncio.to_thread(self.views[p].rights) for p in sorted(parks)}
        return reports, list(rights_violations(reports))

    async def _deployment_invariants(self) -> list[dict[str, Any]]:
        from relay.ops.packets import list_packets

        out = []
        try:
            # packets in flight that are not the run's (another sender's, an earlier run's) are relayed too: with its
            # own relayers the runner keeps one running until they are final or SETTLE_S passes
            deadline = time.monotonic() + min(SETTLE_S, self.drain_timeout_s)
            while True:
                rows = await asyncio.to_thread(list_packets, self.cfg)
                stuck = [f"{r['packet']}:{r['state']}" for r in rows if r["state"] not in FINAL]
                if not stuck or "own_relayers" not in self.caps.have or time.monotonic() > deadline:
                    break
                if not self.relayers:
                    self.start_relayer()
                await asyncio.sleep(2)
            out.append({"check": "nothing left non-final", "ok": not stuck,
                        "detail": f"{len(rows)} packets" if not stuck else ", ".join(stuck[:20])})
            parks = {c.id for c in self.cfg.chains}
            bad = await self._conserved(parks)
            out.append({"check": "supply conserved per denomination", "ok": not bad, "detail": "; ".join(bad)})
            _, violations = await self._rights(parks)
            out.append({"check": "every charging right exists exactly once", "ok": not violations,
                        "detail": "; ".join(map(str, violations[:10]))})
        except (OSError, RuntimeError) as exc:
            out.append({"check": "deployment readable", "ok": False, "detail": str(exc)})
        return out

    async def _verify(self, cases: list[CaseResult], before: dict[tuple[str, str, str], int]) -> None:
        """The checks of each case once its packets are final (or the drain gave up)."""
        after = await self._balances(cases)
        want = dict(before)
        for c in cases:
            for ch, acct, denom, d in c._deltas:
                want[(ch, acct, denom)] += d
        parks = {p for c in cases for p in (c.src, c.dst)}
        unconserved = await self._conserved(parks)
        rights, violations = ({}, []) if not any(c.scenario.asset == "charging_right" for c in cases) else \
            await self._rights(parks)
        for c in cases:
            if c.status == "failed":
                continue
            s = c.scenario
            for r in c.packets:
                st, ack = r.row.get("state"), r.row.get("ack")
                c.check(f"{r.key} {s.expect.state}", st == s.expect.state, f"state {st}")
                if s.expect.acks is None:
                    c.check(f"{r.key} no ack", ack is None and r.row.get("verified") is False, f"ack {ack}")
                else:
                    c.check(f"{r.key} ack {'/'.join(s.expect.acks)}",
                            ack is not None and ack.get("code") in s.expect.acks
                            and ack.get("success") is (s.expect.acks == ("ok",)), f"ack {ack}")
            moved = [(k, before[k], after[k], want[k]) for ch, acct, denom, _ in c._deltas
                     for k in [(ch, acct, denom)] if after[k] != want[k]]
            c.check("exactly once", not moved, "; ".join(f"{k[0]} {k[1]} {k[2]}: {b} -> {a}, expected {w}"
                                                          for k, b, a, w in moved))
            c.check("supply conserved", not unconserved, "; ".join(unconserved))
            if s.asset == "charging_right":
                self._check_right(c, rights)
                c.check("every right exactly once", not violations, "; ".join(map(str, violations[:5])))
            if s.asset == "reputation" and s.expect.state == "completed":
                rec = await asyncio.to_thread(self.views[c.dst].imported_reputation, c.src, c.expect["subject"],
                                              c.expect["model"])
                c.check("attestation imported", rec is not None and 0 <= int(rec.get("score", -1)) <= 10_000,
                        f"{rec}")
                c.expect["imported"] = rec

    def _check_right(self, c: CaseResult, rights: dict[str, Any]) -> None:
        from chains.common.rights import voucher_right_id

        rid = c.expect["right_id"]
        held_as = voucher_right_id(self._lane(c.src, c.dst), c.src, rid)
        home, abroad = rights[c.src], rights[c.dst]
        if c.scenario.expect.state == "completed":
            owner = abroad["live"].get(held_as, {}).get("owner")
            c.check("right held on the target", owner == self.views[c.dst].account(self.users[c.dst]),
                    f"{held_as} owner {owner}")
            c.check("right escrowed at home", rid in home["escrowed"] and rid not in home["live"], rid)
        else:
            owner = home["live"].get(rid, {}).get("owner")
            c.check("right back with its owner", owner == self.views[c.src].account(self.users[c.src]),
                    f"{rid} owner {owner}")
            c.check("nothing held on the target", held_as not in abroad["live"] and rid not in home["escrowed"], rid)

    # -- batches --------------------------------------------------------------------------------------------------

    async def _batch(self, cases: list[CaseResult], registries: dict[str, Any]) -> None:
        """Commit every case (timeouts first, while none of the runner's relayers runs), relay, drain, check."""
        self.log(f"batch: {len(cases)} cases")
        timeouts = [c for c in cases if c.scenario.fault == "timeout"]
        rest = [c for c in cases if c.scenario.fault != "timeout"]
        try:
            if any(c.scenario.asset == "charging_right" for c in cases):
                self.rights_before = {c.id: await asyncio.to_thread(self.views[c.id].rights) for c in self.cfg.chains}
            await self._commit_all(timeouts, registries, before_all=cases)
            before = self._before
            if timeouts:
                await self._targets_past([r for c in timeouts for r in c.packets])
            await self._commit_all(rest, registries)
            for k, v in self._before.items():
                before.setdefault(k, v)
        except Exception as exc:
            for c in cases:
                if not c.packets:
                    c.status, c.reason = "failed", f"phase 1: {type(exc).__name__}: {exc}"
            cases = [c for c in cases if c.packets]
            before = self._before
        recs = [r for c in cases for r in c.packets]  # a failed case's packets sent so far: relayed, not checked
        cases = [c for c in cases if c.status != "failed"]
        started = not self.relayers and "own_relayers" in self.caps.have
        if started:
            name = self.start_relayer()
            for c in cases:
                c.events.append(f"relayer {name} started")
        try:
            drained = await self._wait(recs, self.drain_timeout_s, poll_s=1.0)
        finally:
            if started:
                self.stop_relayers()
        if not drained:
            for c in cases:
                c.events.append(f"not every packet final within {self.drain_timeout_s:.0f} s")
        for c in cases:
            if c.scenario.fault == "replay" and c.packets and c.packets[0].row.get("state") == "completed":
                await self._replay(c)
        await self._verify(cases, before)

    async def _commit_all(self, cases: list[CaseResult], registries: dict[str, Any],
                          before_all: list[CaseResult] | None = None) -> None:
        """Phase 1 of ``cases``, one source after another within a source (one sender per lane direction keeps the
        keys read from blocks stable), the sources in parallel. Balances are read first (for the expected deltas,
        which need the cases' accounts: the deltas of energy are known before sending)."""
        by_src: dict[str, list[CaseResult]] = {}
        for c in cases:  # grouped by the park that sends (a `return` case sends from its target)
            by_src.setdefault(c.dst if c.scenario.fault == "return" else c.src, []).append(c)
        self._before = {}
        # the accounts and denominations the cases touch are known before sending: read them first
        probe = [CaseResult(c.scenario, c.src, c.dst) for c in (before_all or cases)]
        for p in probe:
            p._deltas = self._planned_deltas(p)
        self._before = await self._balances(probe)

        async def from_source(src: str) -> None:
            for c in by_src[src]:
                try:
                    await self._commit(c, registries)
                except Exception as exc:
                    c.status, c.reason = "failed", f"phase 1: {type(exc).__name__}: {exc}"

        await asyncio.gather(*(from_source(s) for s in by_src))

    def _planned_deltas(self, c: CaseResult) -> list[tuple[str, str, str, int]]:
        s = c.scenario
        if s.asset != "energy":
            return []
        if s.fault == "return":
            return [(c.dst, self.users[c.dst], self.voucher("kWh", c.src, c.dst), 0),
                    (c.src, self.users[c.src], "kWh", 0)]
        pairs = [(c.src, c.dst), (c.dst, c.src)] if s.fault not in ("none", "refused", "timeout", "replay") else \
            [(c.src, c.dst)]
        return [d for a, b in pairs for d in ((a, self.users[a], "kWh", 0), (b, self.users[b],
                                                                                 self.voucher("kWh", a, b), 0))]

    async def _replay(self, c: CaseResult) -> None:
        """Offer the target the delivered packet's genuine certificate again: refused as a replay, nothing moves."""
        from protocol.errors import ReplayError
        from protocol.paths import verified_path
        from protocol.types import ChainId, LaneId
        from relay.ops.relayers import build_relayer

        r = c.packets[0]
        src, dst, lane, seq = r.key.split("/")
        links = await asyncio.to_thread(build_relayer, self.cfg, self._keyed()[0])
        try:
            assert links.relay.client is not None
            cert = await links.relay.client.call("getCertificate",
                                                 {"key": verified_path(ChainId(src), ChainId(dst), LaneId(lane),
                                                                       int(seq)).decode()})
            raw = next(p for p, _ in await asyncio.to_thread(self.views[src].sent)
                       if packet_key(decode_packet(p)) == r.key)
            held = await asyncio.to_thread(self.views[dst].balance, self.users[dst], self.voucher("kWh", src, dst))
            try:
                await links.parks[dst].target.submit("bridge.recv", {"packet": raw.hex(), "certificate": cert})
                c.check("replay refused", False, "the target accepted the certificate a second time")
            except ReplayError as exc:
                c.check("replay refused", True, f"{exc.code}")
                c.events.append(f"certificate of {r.key} offered again: refused {exc.code}")
            after = await asyncio.to_thread(self.views[dst].balance, self.users[dst], self.voucher("kWh", src, dst))
            c.check("replay changed nothing", after == held, f"{held} -> {after}")
        except Exception as exc:
            c.check("replay refused", False, f"{type(exc).__name__}: {exc}")
        finally:
            await links.close_links()

    # -- fault scenarios ------------------------------------------------------------------------------------------

    async def _fault(self, c: CaseResult) -> None:
        self.log(f"fault {c.scenario.fault}: {c.src} <-> {c.dst}")
        c.started = time.monotonic()
        try:
            await self._commit_all([c], {})
            before = self._before
            if c.status == "failed":
                return
            fault = c.scenario.fault
            if fault == "relayer_sigkill":
                await self._relayer_sigkill(c)
            elif fault == "relayers_racing":
                for _ in range(2):
                    c.events.append(f"relayer {self.start_relayer()} started")
            elif fault == "relay_validator_down":
                await self._validator_down(c)
            elif fault == "park_node_sigkill":
                await self._node_sigkill(c)
            if not self.relayers and "own_relayers" in self.caps.have:
                c.events.append(f"relayer {self.start_relayer()} started")
            drained = await self._wait(c.packets, self.drain_timeout_s)
            if not drained:
                c.events.append(f"not every packet final within {self.drain_timeout_s:.0f} s")
        except Exception as exc:
            c.status, c.reason = "failed", f"{type(exc).__name__}: {exc}"
            return
        finally:
            self.stop_relayers()
            down, self._down = self._down, None
            if down is not None:
                try:
                    await self._restart(down[0], down[1], c)
                    await self._caught_up(down[1], c)
                except Exception as exc:
                    c.status, c.reason = "failed", f"{type(exc).__name__}: {exc}"
        if c.status != "failed":
            await self._verify([c], before)

    async def _relayer_sigkill(self, c: CaseResult) -> None:
        name = self.start_relayer()
        c.events.append(f"relayer {name} started")
        for phase in ("verified", "executed", "acked"):
            def reached(phase: str = phase) -> bool:
                return any(ORDER.index(r.row.get("state", "committed")) >= ORDER.index(phase) for r in c.packets)

            if not await self._wait(c.packets, 120, until=reached, poll_s=0.1):
                raise TimeoutError(f"no packet {phase} within 120 s")
            self.kill_relayer(name)
            c.events.append(f"a packet {phase}: relayer {name} SIGKILLed")
            self.start_relayer(name)
            c.events.append(f"relayer {name} started again")

    def _pid(self, chain: str, node: str) -> int:
        return self.procs.nodes[f"{chain}/{node}"]

    async def _kill(self, chain: str, node: str, c: CaseResult) -> None:
        pid = self._pid(chain, node)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await asyncio.to_thread(_gone, pid):
                break
            await asyncio.sleep(0.1)
        c.events.append(f"{chain}/{node} (pid {pid}) SIGKILLed")

    async def _restart(self, chain: str, node: str, c: CaseResult) -> None:
        if self.procs.restart is not None:
            pid = await asyncio.to_thread(self.procs.restart, chain, node)
        else:
            pid = _spawn_node(self.cfg, chain, node)
        self.procs.nodes[f"{chain}/{node}"] = pid
        c.events.append(f"{chain}/{node} started again (pid {pid})")
        url = self.cfg.relay_url(node) if chain == self.cfg.relay_chain_id else self.cfg.chain(chain).url_of(
            node, self.cfg.host)
        deadline = time.monotonic() + 90
        while True:
            try:
                await asyncio.to_thread(rpc, url, "status")
                return
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{chain}/{node} not answering 90 s after its restart") from None
                await asyncio.sleep(0.3)

    async def _caught_up(self, validator: str, c: CaseResult) -> None:
        """Until the restarted relay validator is within a block of the first one."""
        first = next(v for v in self.cfg.relay_validators if v != validator)
        deadline = time.monotonic() + 120
        while True:
            try:
                a = await asyncio.to_thread(rpc, self.cfg.relay_url(first), "status")
                d = await asyncio.to_thread(rpc, self.cfg.relay_url(validator), "status")
                if int(d["height"]) >= int(a["height"]) - 1 and int(d["height"]) > 0:
                    c.events.append(f"{validator} caught up at relay height {d['height']}")
                    return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{validator} not caught up within 120 s of its restart")
            await asyncio.sleep(0.5)

    async def _validator_down(self, c: CaseResult) -> None:
        relay = self.cfg.relay_chain_id
        victim = next(v for v in reversed(self.cfg.relay_validators) if f"{relay}/{v}" in self.procs.nodes)
        await self._kill(relay, victim, c)
        self._down = (relay, victim)

    async def _node_sigkill(self, c: CaseResult) -> None:
        name = self.start_relayer()
        c.events.append(f"relayer {name} started")

        def verified() -> bool:
            return all(ORDER.index(r.row.get("state", "committed")) >= ORDER.index("verified") for r in c.packets)

        if not await self._wait(c.packets, 120, until=verified, poll_s=0.3):
            raise TimeoutError("the packets were not verified within 120 s")
        for chain in (c.src, c.dst):
            node = self.cfg.chain(chain).nodes[-1]
            await self._kill(chain, node, c)
            await self._restart(chain, node, c)
        # sent after the restarts, from final blocks (a park may still reorganise right after one)
        keep = self.wait_final_sends
        self.wait_final_sends = True
        try:
            for a, b in ((c.src, c.dst), (c.dst, c.src)):
                await self._send(c, a, b, {"kind": "energy", "denom": "kWh", "amount_wh": 131})
                c._deltas += [(a, self.users[a], "kWh", -131), (b, self.users[b], self.voucher("kWh", a, b), 131)]
        finally:
            self.wait_final_sends = keep


class _Views(dict[str, ParkView]):
    def __init__(self, cfg: DeploymentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def __missing__(self, chain_id: str) -> ParkView:
        view = self[chain_id] = park_view(self.cfg, chain_id)
        return view


def _gone(pid: int) -> bool:
    """The process exited (reaped here if it is this process's child; a zombie of another parent counts)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _spawn_node(cfg: DeploymentConfig, chain: str, node: str) -> int:
    """Start a node again as ``parkrelay devnet up`` does (detached: it outlives the runner), and record its pid in
    ``<data_dir>/pids.json`` for ``devnet down``."""
    from chains.registry import chain_kind

    logs = cfg.data_dir / "logs"
    log = open(logs / f"{chain}-{node}.log", "ab")
    if chain == cfg.relay_chain_id:
        argv = [sys.executable, "-m", "relay.cli", "node", "relay", "--config", str(cfg.path), "--validator", node]
    else:
        kind = cfg.chain(chain).kind
        argv = [sys.executable, "-m", "relay.cli", "node", kind, "--config", str(cfg.path), "--chain", chain,
                chain_kind(kind).node_flag, node]
    proc = spawn(argv, detach=True, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    path = cfg.data_dir / "pids.json"
    try:
        pids = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        pids = {}
    pids[f"{chain}/{node}"] = proc.pid
    path.write_text(json.dumps(pids, indent=2))
    return proc.pid
