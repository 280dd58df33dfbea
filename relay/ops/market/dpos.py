"""``parkrelay market <dpos park> …``: the DPoS park's markets (:mod:`chains.dpos.market`).

Energy trade (docs/research.md#seed-003), three stages: ``bid`` submits a buy or sell for a trading round
(escrowed at once), the chain matches a round at its first block past the round's end (``highest_price`` or
``max_utilisation``, the park's ``market/params``), and settles it out of escrow; ``rounds`` and ``round`` show the
open rounds' bids and a cleared round's fills.

Demand response (docs/research.md#seed-002): ``dr-register`` (as a user or an aggregator; with ``--import-from``
the node starts at the reputation it earned on another park and imported over the relay, if it holds that
attestation and it reaches ``dr_import_min_score``), ``dr-terms`` and ``dr-join`` (the two-way selection),
``dr-request`` (an aggregator's request, budget escrowed), ``dr-commit`` then ``dr-reveal`` (a user's first-price
sealed bid: the commitment is computed here; the bid and its salt are kept in a 0600 file under
``<data_dir>/market/<park>/`` so ``dr-reveal`` needs only the request id), ``dr-report`` (the aggregator's metered
delivery), ``dr-show`` and ``ranking`` (the credit ranking list).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path
from typing import Any

from chains.dpos.market import DR_MODELS, MarketParams, dr_commitment
from relay.ops.market import (
    Action,
    MarketArgumentError,
    MarketContext,
    add_import_args,
    import_ref,
    non_negative,
    positive,
)
from relay.ops.market.pyparks import read_json, status, submit

__all__ = ["ACTIONS", "KIND"]

KIND = "dpos"
ROUND_MARGIN_MS = 3_000
"""``bid`` without ``--round``: the current round, or the next if the current ends within this (the bid must be in
a block before the round's end to count)."""


def _params(ctx: MarketContext) -> MarketParams:
    raw = read_json(ctx, "market/params")
    return MarketParams.from_json(raw) if raw is not None else MarketParams()


def _now_ms(ctx: MarketContext) -> int:
    return int(status(ctx)["timestamp_ms"])


# -- energy trade (docs/research.md#seed-003) ------------------------------------------------------------------------


def _bid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--side", required=True, choices=["buy", "sell"], help="buy energy, or sell it")
    p.add_argument("--amount-wh", required=True, type=positive, help="energy, Wh")
    p.add_argument("--price", required=True, type=positive, help="currency units per kWh: the most a buyer pays, "
                                                                 "the least a seller takes")
    p.add_argument("--round", type=non_negative, help="the trading round (default: the current one, or the next if "
                                                      "the current ends within 3 s)")


def bid(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Submit a bid to a trading round (stage 1 of docs/research.md#seed-003's trade). A seller's energy, or a
    buyer's most payment (amount × price / 1000), is escrowed until the round clears."""
    params = _params(ctx)
    rnd = args.round
    if rnd is None:
        now = _now_ms(ctx)
        rnd = now // params.round_ms
        if (rnd + 1) * params.round_ms - now < ROUND_MARGIN_MS:
            rnd += 1
    out = submit(ctx, args.as_, "market.submit_bid", {"kind": args.side, "amount_wh": args.amount_wh,
                                                      "price": args.price, "round": rnd})
    return {**out, "round": rnd, "clears_after_ms": (rnd + 1) * params.round_ms}


def rounds(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The market's parameters, the current round and every open round's bids."""
    params = _params(ctx)
    now = _now_ms(ctx)
    open_rounds = read_json(ctx, "market/open_rounds") or []
    return {"park": ctx.chain.id, "matching": params.matching, "round_ms": params.round_ms,
            "current_round": now // params.round_ms, "head_time_ms": now,
            "open": {str(r): read_json(ctx, f"market/round/{r}") or [] for r in open_rounds}}


def _round_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("round", type=non_negative, help="the round number")


def round_(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """One round: its bids while open, its fills (stages 2 and 3) once cleared."""
    result = read_json(ctx, f"market/result/{args.round}")
    if result is not None:
        return {"round": args.round, "state": "cleared", **result}
    bids = read_json(ctx, f"market/round/{args.round}")
    if bids is not None:
        return {"round": args.round, "state": "open", "bids": bids,
                "clears_after_ms": (args.round + 1) * _params(ctx).round_ms}
    return {"round": args.round, "state": "none", "bids": []}


# -- demand response (docs/research.md#seed-002) ---------------------------------------------------------------------


def _register_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", required=True, choices=sorted(DR_MODELS), help="a DR user or a load aggregator")
    add_import_args(p)


def dr_register(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Join demand response as a user or an aggregator. With ``--import-from CHAIN --subject S --model M`` start at
    the reputation S earned on CHAIN (imported over the relay: S sent its own attestation to this account) instead
    of the initial one, so the node is ranked by it from its first cycle (refused, ``reputation.insufficient``,
    unless the caller holds it and it reaches the park's ``dr_import_min_score``)."""
    op: dict[str, Any] = {"role": args.role}
    ref = import_ref(ctx, args)
    if ref is not None:
        op["import"] = ref
    out = submit(ctx, args.as_, "dr.register", op)
    return {**out, "reputation": read_json(ctx, f"reputation/{args.as_}")}


def _terms_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-user-reputation", required=True, type=non_negative)
    p.add_argument("--max-users", required=True, type=positive)


def dr_terms(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """An aggregator's terms: whom it takes as members this cycle (its side of the two-way selection)."""
    return submit(ctx, args.as_, "dr.set_terms", {"min_user_reputation": args.min_user_reputation,
                                                  "max_users": args.max_users})


def _join_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--aggregator", required=True, help="the aggregator to join (see `ranking`)")


def dr_join(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A user joins an aggregator for the current DR cycle, within its terms (the user's side of the selection)."""
    return submit(ctx, args.as_, "dr.join", {"aggregator": args.aggregator})


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amount-wh", required=True, type=positive, help="load reduction wanted, Wh")
    p.add_argument("--max-price", required=True, type=positive, help="price cap, currency units per kWh")
    p.add_argument("--commit-s", type=positive, default=20, help="commit phase, s (default 20)")
    p.add_argument("--reveal-s", type=positive, default=20, help="reveal phase, s (default 20)")
    p.add_argument("--deliver-s", type=positive, help="delivery window after the auction, s (default: paid at once)")
    p.add_argument("--min-reputation", type=non_negative, default=0, help="bidders' reputation floor (default 0)")
    p.add_argument("--members-only", action="store_true", help="only the aggregator's members this cycle may bid")


def dr_request(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """An aggregator's DR request: amount × cap / 1000 escrowed; users bid sealed, the cheapest win."""
    op: dict[str, Any] = {"amount_wh": args.amount_wh, "max_price": args.max_price, "commit_ms": args.commit_s * 1000,
                          "reveal_ms": args.reveal_s * 1000, "min_reputation": args.min_reputation}
    if args.deliver_s:
        op["deliver_ms"] = args.deliver_s * 1000
    if args.members_only:
        op["members_only"] = True
    out = submit(ctx, args.as_, "dr.request", op)
    req = next((e for e in out["events"] if e.get("type") == "dr_request"), {})
    return {**out, "request_id": req.get("id")}


def _sealed_path(ctx: MarketContext, request_id: int, account: str) -> Path:
    return ctx.cfg.data_dir / "market" / ctx.chain.id / "dr-bids" / f"{request_id}-{account}.json"


def _commit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request", required=True, type=positive, help="the DR request id")
    p.add_argument("--amount-wh", required=True, type=positive, help="load reduction offered, Wh")
    p.add_argument("--price", required=True, type=positive, help="asked price, currency units per kWh")
    p.add_argument("--salt", help="the commitment's salt (default: random, kept for dr-reveal)")


def dr_commit(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A user's sealed bid on a DR request (commit phase): only its sha256 commitment goes on chain. The bid and
    salt are kept in a 0600 file under ``<data_dir>/market/<park>/dr-bids/`` for ``dr-reveal``."""
    salt = args.salt or secrets.token_hex(16)
    commitment = dr_commitment(args.request, args.as_, args.amount_wh, args.price, salt)
    out = submit(ctx, args.as_, "dr.commit", {"request_id": args.request, "commitment": commitment})
    path = _sealed_path(ctx, args.request, args.as_)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"amount_wh": args.amount_wh, "price": args.price, "salt": salt}, f)
    return {**out, "request_id": args.request, "commitment": commitment, "sealed_bid": str(path)}


def _reveal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request", required=True, type=positive, help="the DR request id")
    p.add_argument("--amount-wh", type=positive, help="default: the committed bid kept by dr-commit")
    p.add_argument("--price", type=positive, help="default: the committed bid kept by dr-commit")
    p.add_argument("--salt", help="default: the committed bid kept by dr-commit")


def dr_reveal(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Open a sealed bid in the reveal phase (the bid ``dr-commit`` kept, unless given here)."""
    bid = {"amount_wh": args.amount_wh, "price": args.price, "salt": args.salt}
    if None in bid.values():
        path = _sealed_path(ctx, args.request, args.as_)
        if not path.exists():
            raise MarketArgumentError(f"no kept bid at {path}: give --amount-wh, --price and --salt")
        kept = json.loads(path.read_text())
        bid = {k: kept[k] if v is None else v for k, v in bid.items()}
    return submit(ctx, args.as_, "dr.reveal", {"request_id": args.request, **bid})


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request", required=True, type=positive, help="the DR request id")
    p.add_argument("--delivered", action="append", default=[], metavar="BIDDER=WH", required=True,
                   help="what a winner delivered, Wh (repeat for each winner)")


def dr_report(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The aggregator reports each winner's metered delivery within the request's delivery window: winners are paid
    for what they delivered and reputation follows the delivery."""
    delivered: dict[str, int] = {}
    for item in args.delivered:
        name, sep, wh = item.partition("=")
        if not sep or not name or not wh.isdigit():
            raise MarketArgumentError(f"--delivered is BIDDER=WH, got {item!r}")
        delivered[name] = int(wh)
    return submit(ctx, args.as_, "dr.report_delivery", {"request_id": args.request, "delivered": delivered})


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("request", type=positive, help="the DR request id")


def dr_show(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A DR request: open (its phases and sealed bids) or settled (awards, delivery, completion)."""
    req = read_json(ctx, f"dr/request/{args.request}")
    if req is not None:
        return {"request_id": args.request, "state": "open", **req}
    result = read_json(ctx, f"dr/result/{args.request}")
    if result is not None:
        return {"request_id": args.request, "state": result.get("status", "settled"), **result}
    return {"request_id": args.request, "state": "none"}


def ranking(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """docs/research.md#seed-002's credit ranking list: DR nodes by reputation, highest first, with the park each
    imported reputation came from."""
    rows = []
    for name in read_json(ctx, "dr/nodes") or []:
        rec = read_json(ctx, f"reputation/{name}") or {}
        rows.append({"name": name, "score": rec.get("score"), "role": rec.get("role"), "active": rec.get("active"),
                     **({"imported_from": rec["imported_from"]} if rec.get("imported_from") else {})})
    rows.sort(key=lambda r: (-int(r["score"] or 0), r["name"]))
    return {"park": ctx.chain.id, "cycle": read_json(ctx, "dr/cycle"), "ranking": rows}


def params(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The park's market parameters (genesis ``market``: round length, matching rule, DR reputation rules)."""
    return _params(ctx).to_json()


def _none(p: argparse.ArgumentParser) -> None:
    """No arguments of its own."""


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("bid", "submit a buy or sell bid to a trading round (stage 1 of the three-stage trade)", _bid_args, bid,
           signs=""),
    Action("rounds", "the current round and every open round's bids", _none, rounds),
    Action("round", "one round: bids while open, fills once cleared", _round_args, round_),
    Action("params", "the park's market parameters", _none, params),
    Action("dr-register", "join demand response (user/aggregator), optionally with imported reputation",
           _register_args, dr_register, signs=""),
    Action("dr-terms", "an aggregator's membership terms", _terms_args, dr_terms, signs=""),
    Action("dr-join", "a user joins an aggregator this cycle", _join_args, dr_join, signs=""),
    Action("dr-request", "an aggregator's DR request (budget escrowed)", _request_args, dr_request, signs=""),
    Action("dr-commit", "a user's sealed bid on a DR request", _commit_args, dr_commit, signs=""),
    Action("dr-reveal", "open a sealed bid", _reveal_args, dr_reveal, signs=""),
    Action("dr-report", "an aggregator reports metered delivery", _report_args, dr_report, signs=""),
    Action("dr-show", "a DR request or its result", _show_args, dr_show),
    Action("ranking", "the DR credit ranking list", _none, ranking),
)}
