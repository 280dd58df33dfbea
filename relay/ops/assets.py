"""Operator commands for charging rights, reputation and the charging registry, against any deployment.

    parkrelay right issue --chain C --id R --station S --transformer T --kw N --slot-start T0 --slot-end T1 --owner A
    parkrelay right list --chain C [--owner A]
    parkrelay right show R --chain C
    parkrelay right transfer --from-chain C --from A --to-chain D --to B --id R [--lane L] [--timeout-s S]
    parkrelay reputation send --from-chain C --from A --to-chain D --to B --subject S [--model M]
    parkrelay reputation show --chain D --from-chain C --subject S --model M
    parkrelay transformer set --chain C --name T --capacity-kw N [--station S ...]
    parkrelay transformer show --chain C

Every command takes ``--config`` (default ``deploy/devnet.toml``) and ``--json``. Writes to the registry and
``right issue`` sign as the park's ``operator`` account (the bridge refuses anyone else). Slot times are
milliseconds since the epoch, or ``+<n>s|m|h`` from now. A right's timeout must lie before its slot starts: by
default ``right transfer`` times out 10 minutes from now or 5 s before the slot, whichever comes first.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from protocol.codec import decode_packet
from relay.ops.config import ConfigError, DeploymentConfig
from relay.ops.packets import packet_key
from relay.ops.parks import park_view

__all__ = ["add_parsers", "dispatch", "parse_time_ms"]

COMMANDS = ("right", "reputation", "transformer")


def parse_time_ms(text: str, now_ms: int | None = None) -> int:
    """``1767225600000`` (ms since the epoch) or ``+90s`` / ``+30m`` / ``+2h`` from now."""
    m = re.fullmatch(r"\+(\d{1,9})([smh])", text.strip())
    if m:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now + int(m.group(1)) * {"s": 1_000, "m": 60_000, "h": 3_600_000}[m.group(2)]
    if re.fullmatch(r"\d{1,16}", text.strip()):
        return int(text)
    raise ConfigError(f"not a time: {text!r} (ms since the epoch, or +<n>s, +<n>m, +<n>h from now)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="deploy/devnet.toml")
    p.add_argument("--json", action="store_true")


def add_parsers(sub: Any) -> None:
    """The ``right``, ``reputation`` and ``transformer`` subcommands on the ``parkrelay`` parser."""
    rt = sub.add_parser("right", help="EV charging rights: issue, list, show, transfer to another park")
    rt.add_argument("action", choices=["issue", "list", "show", "transfer"])
    rt.add_argument("right_id", nargs="?", help="show: the right's id as the chain holds it")
    _common(rt)
    rt.add_argument("--chain", help="issue, list, show: the park")
    rt.add_argument("--id", dest="id_", help="issue, transfer: the right's id")
    rt.add_argument("--station")
    rt.add_argument("--transformer")
    rt.add_argument("--kw", type=int, help="charging power, kW")
    rt.add_argument("--slot-start", help="ms since the epoch, or +<n>s|m|h")
    rt.add_argument("--slot-end", help="ms since the epoch, or +<n>s|m|h")
    rt.add_argument("--owner", help="issue: the owner; list: only this owner's")
    rt.add_argument("--from-chain")
    rt.add_argument("--from", dest="sender")
    rt.add_argument("--to-chain")
    rt.add_argument("--to", dest="receiver")
    rt.add_argument("--lane", help="default: the first lane joining the two chains")
    rt.add_argument("--timeout-s", type=float, help="default: 600, or up to 5 s before the slot starts")

    rp = sub.add_parser("reputation", help="reputation attestations: send a park's score, show what a park imported")
    rp.add_argument("action", choices=["send", "show"])
    _common(rp)
    rp.add_argument("--chain", help="show: the park that imported it")
    rp.add_argument("--from-chain", help="send: the attesting park; show: the park that attested it")
    rp.add_argument("--from", dest="sender", help="send: who sends the attestation (often the subject)")
    rp.add_argument("--to-chain")
    rp.add_argument("--to", dest="receiver", help="send: who holds the attestation on the target")
    rp.add_argument("--subject", required=True)
    rp.add_argument("--model", help="send: default the park's own model for the subject; show: required")
    rp.add_argument("--lane")
    rp.add_argument("--timeout-s", type=float, default=600.0)

    tf = sub.add_parser("transformer", help="a park's charging registry: transformers and their stations")
    tf.add_argument("action", choices=["set", "show"])
    _common(tf)
    tf.add_argument("--chain", required=True)
    tf.add_argument("--name", help="set: the transformer")
    tf.add_argument("--capacity-kw", type=int, help="set: its capacity, kW")
    tf.add_argument("--station", action="append", default=[], help="set: a station behind it (repeatable)")


_FLAGS = {"id_": "--id", "sender": "--from", "receiver": "--to"}
"""Flags whose attribute name is not the flag's own (argparse ``dest``)."""


def _need(args: Any, *names: str) -> None:
    missing = [n for n in names if getattr(args, n) in (None, "")]
    if missing:
        flags = ", ".join(_FLAGS.get(n, "--" + n.replace("_", "-")) for n in missing)
        raise ConfigError(f"parkrelay {args.cmd} {args.action} needs {flags}")


def _lane(cfg: DeploymentConfig, src: str, dst: str, lane: str | None) -> str:
    lanes = [ln for ln, a, b in cfg.lanes if {a, b} == {src, dst}]
    if lane is not None:
        if lane not in lanes:
            raise ConfigError(f"{cfg.path}: lane {lane!r} does not join {src} and {dst} (lanes: {lanes})")
        return lane
    if not lanes:
        raise ConfigError(f"{cfg.path}: no lane joins {src} and {dst}")
    return lanes[0]


def _sent(out: dict[str, Any]) -> dict[str, Any]:
    p = decode_packet(out["packet"])
    return {"packet": packet_key(p), "tx": out["tx"], "height": out["height"]}


def send_right(cfg: DeploymentConfig, src: str, sender: str, dst: str, receiver: str, right_id: str,
               lane: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
    """Phase 1 of a charging right (the id as ``src`` holds it); the packet key, tx and height."""
    view = park_view(cfg, src)
    rec = view.rights()["live"].get(right_id)
    if rec is None:
        raise ConfigError(f"{src} holds no live charging right {right_id!r} (`parkrelay right list --chain {src}`)")
    now_ms = int(time.time() * 1000)
    if timeout_s is None:
        timeout_ms = min(now_ms + 600_000, int(rec["slot_start_ms"]) - 5_000)
    else:
        timeout_ms = now_ms + int(timeout_s * 1000)
    to = park_view(cfg, dst).account(receiver)
    return _sent(view.send(sender, dst, to, _lane(cfg, src, dst, lane), timeout_ms,
                           {"kind": "charging_right", "right_id": right_id}))


def send_reputation(cfg: DeploymentConfig, src: str, sender: str, dst: str, receiver: str, subject: str,
                    model: str | None = None, lane: str | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Phase 1 of a reputation attestation: ``src`` attests its own score of ``subject`` (read from its state)."""
    asset: dict[str, Any] = {"kind": "reputation", "subject": park_view(cfg, src).account(subject)}
    if model:
        asset["model"] = model
    to = park_view(cfg, dst).account(receiver)
    return _sent(park_view(cfg, src).send(sender, dst, to, _lane(cfg, src, dst, lane),
                                          int((time.time() + timeout_s) * 1000), asset))


def _print_rights(rep: dict[str, Any], owner: str | None) -> None:
    print(f"{'right':<40} {'where':<10} {'owner / towards':<34} {'station':<10} {'kW':>5}  slot")
    for rid, r in sorted(rep["live"].items()):
        if owner and r["owner"] != owner:
            continue
        print(f"{rid:<40} {'live':<10} {r['owner']:<34} {r['station']:<10} {r['power_kw']:>5}  "
              f"{r['slot_start_ms']}..{r['slot_end_ms']}")
    if owner:
        return
    for state in ("escrowed", "burning"):
        for rid, r in sorted(rep[state].items()):
            print(f"{rid:<40} {state:<10} {r['chain'] + '/' + r['lane'] + '/' + str(r['sequence']):<34}")


def dispatch(cfg: DeploymentConfig, args: Any) -> int:
    """Run one ``right`` / ``reputation`` / ``transformer`` command; 0 on success, 1 when a chain refused."""
    try:
        out = _run(cfg, args)
    except (OSError, RuntimeError) as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 1
    if out is not None:
        print(json.dumps(out, indent=None if args.json else 2, sort_keys=True))
    return 0


def _run(cfg: DeploymentConfig, args: Any) -> Any:
    cmd, action = args.cmd, args.action
    if cmd == "right":
        if action == "issue":
            _need(args, "chain", "id_", "station", "transformer", "kw", "slot_start", "slot_end", "owner")
            view = park_view(cfg, args.chain)
            res = view.issue_right(args.id_, args.station, args.transformer, args.kw, parse_time_ms(args.slot_start),
                                   parse_time_ms(args.slot_end), view.account(args.owner))
            return {"right_id": args.id_, "chain": args.chain, **res}
        if action == "list":
            _need(args, "chain")
            view = park_view(cfg, args.chain)
            rep = view.rights()
            owner = view.account(args.owner) if args.owner else None
            if args.json:
                return {**rep, "live": {k: v for k, v in rep["live"].items() if owner is None or v["owner"] == owner}}
            _print_rights(rep, owner)
            return None
        if action == "show":
            _need(args, "chain")
            if not args.right_id:
                raise ConfigError("parkrelay right show needs the right's id")
            rep = park_view(cfg, args.chain).rights()
            for state in ("live", "escrowed", "burning"):
                if args.right_id in rep[state]:
                    return {"right_id": args.right_id, "chain": args.chain, "state": state, **rep[state][args.right_id]}
            raise RuntimeError(f"{args.chain} holds no charging right {args.right_id!r}")
        _need(args, "from_chain", "sender", "to_chain", "receiver", "id_")
        return send_right(cfg, args.from_chain, args.sender, args.to_chain, args.receiver, args.id_, args.lane,
                          args.timeout_s)
    if cmd == "reputation":
        if action == "send":
            _need(args, "from_chain", "sender", "to_chain", "receiver")
            return send_reputation(cfg, args.from_chain, args.sender, args.to_chain, args.receiver, args.subject,
                                   args.model, args.lane, args.timeout_s)
        _need(args, "chain", "from_chain", "model")
        subject = park_view(cfg, args.from_chain).account(args.subject)
        rec = park_view(cfg, args.chain).imported_reputation(args.from_chain, subject, args.model)
        if rec is None:
            raise RuntimeError(f"{args.chain} recorded no {args.model} attestation of {subject} from {args.from_chain}")
        return {"chain": args.chain, "from_chain": args.from_chain, "subject": subject, "model": args.model, **rec}
    view = park_view(cfg, args.chain)
    if action == "show":
        return view.registry()
    _need(args, "name", "capacity_kw")
    res = {"transformer": view.set_transformer(args.name, args.capacity_kw),
           "stations": {s: view.set_station(s, args.name) for s in args.station}}
    return {"chain": args.chain, "name": args.name, "capacity_kw": args.capacity_kw, **res}
