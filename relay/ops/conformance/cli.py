"""``parkrelay conformance run --config FILE [--pairs A:B,...] [--scenarios ID,...] [--scenario-file FILE]
[--junit FILE] [--html FILE] [--json]``: plays the conformance scenarios against the deployment the config describes.

Exit codes: 0 every case passed or was skipped (with the missing capability named), 1 a case or a deployment invariant
failed, 2 bad usage, config or scenario file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from relay.ops.config import ConfigError, DeploymentConfig

__all__ = ["add_parser", "main", "parse_pairs"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conformance", help="play the conformance scenarios against a deployment, with reports")
    p.add_argument("action", choices=["run", "list"], help="run: play them; list: print the scenarios")
    p.add_argument("--config", default="deploy/devnet.toml")
    p.add_argument("--pairs", metavar="A:B,...",
                   help="only these ordered pairs: chain ids or kinds (dpos-park:poc-park, dpos:poc); default: both "
                        "directions of every lane")
    p.add_argument("--scenarios", metavar="ID,...", help="only these scenario ids (default: all)")
    p.add_argument("--scenario-file", metavar="FILE", help="the scenarios (default: the packaged scenarios.toml)")
    p.add_argument("--user", action="append", default=[], metavar="CHAIN=ACCOUNT",
                   help="the account to send from and to on CHAIN (default: its first funded genesis account)")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one testcase per pair x scenario)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--drain-timeout-s", type=float, default=420.0,
                   help="how long packets may take to become final (default 420)")


def parse_pairs(cfg: DeploymentConfig, text: str) -> list[tuple[str, str]]:
    """``A:B,C:D`` with chain ids or kinds -> the ordered pairs of chain ids (a kind stands for each of its chains)."""
    out: list[tuple[str, str]] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        parts = item.split(":")
        if len(parts) != 2:
            raise ConfigError(f"--pairs: expected SRC:DST, got {item!r}")
        ends = []
        for end in parts:
            ids = [c.id for c in cfg.chains if end in (c.id, c.kind)]
            if not ids:
                raise ConfigError(f"--pairs: {end!r} is neither a chain id nor a chain kind of {cfg.path}")
            ends.append(ids)
        out += [(a, b) for a in ends[0] for b in ends[1] if a != b and (a, b) not in out]
    return out


def main(cfg: DeploymentConfig, args: argparse.Namespace) -> int:
    from relay.ops.conformance.engine import Runner
    from relay.ops.conformance.report import render_html, render_junit
    from relay.ops.conformance.scenarios import DEFAULT_FILE, load_scenarios

    scenarios = load_scenarios(args.scenario_file or DEFAULT_FILE)
    if args.scenarios:
        wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {s.id for s in scenarios}]
        if unknown:
            raise ConfigError(f"--scenarios: no scenario {', '.join(unknown)}; see `parkrelay conformance list`")
        scenarios = [s for s in scenarios if s.id in wanted]
    if args.action == "list":
        if args.json:
            print(json.dumps([s.to_json() for s in scenarios]))
        else:
            for s in scenarios:
                print(f"{s.id:<22} {s.asset:<15} {s.fault:<21} {s.title}")
        return 0
    users = {}
    for u in args.user:
        chain, sep, acct = u.partition("=")
        if not sep or not acct:
            raise ConfigError(f"--user: expected CHAIN=ACCOUNT, got {u!r}")
        cfg.chain(chain)
        users[chain] = acct
    pairs = parse_pairs(cfg, args.pairs) if args.pairs else None

    def say(line: str) -> None:
        if not args.json:
            print(f"conformance: {line}", file=sys.stderr)

    runner = Runner(cfg, scenarios, pairs=pairs, users=users, log=say, drain_timeout_s=args.drain_timeout_s)
    report = asyncio.run(runner.run())
    if args.junit:
        Path(args.junit).write_text(render_junit(report))
    if args.html:
        Path(args.html).write_text(render_html(report))
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for r in report.results:
            print(f"{r.status:<8} {r.scenario.id:<22} {r.src} -> {r.dst}" + (f": {r.reason}" if r.reason else ""))
        for inv in report.invariants:
            print(f"{'passed' if inv['ok'] else 'failed':<8} {inv['check']}" + (f": {inv['detail']}" if not inv['ok']
                                                                                  else ""))
        c = report.counts()
        print(f"conformance: {c.get('passed', 0)} passed, {c.get('failed', 0)} failed, {c.get('skipped', 0)} skipped "
              f"in {report.duration_s:.0f} s")
    return 0 if report.ok else 1
