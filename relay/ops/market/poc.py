"""``parkrelay market <poc park> …``: the PoC park's ancillary-service capacity market (:mod:`chains.poc.market`,
docs/research.md#seed-000).

The grid operator posts a round's capacity ``demand`` per service (escrowed); storage units ``offer`` capacity
backed by their committed plots (``unit`` shows a unit's committed space, the kW it may offer and the response
rate it is ranked by; ``erase`` releases a plot); at the first block of the next round the chain splits each
demand among the cheapest, most responsive units; the operator ``report``s each award's delivered kW (unreported
awards settle as delivered). ``import-reputation`` ranks a unit new here by the score it earned on another park
(imported over the relay) until its first settled award here. ``round`` shows a round's demands, offers and
awards, ``results`` the clearings and settlements of recent blocks. Rounds are ``round_blocks`` blocks
(``params``).

``fill`` is the capacity competition's other half: it makes a chiapos plot bound to the account's key (or reuses
the one cached for that nonce; ~12 s and ~34 MiB for k=21, in the farmers' plot cache), finds a proof of it for the
chain's latest challenge, and commits it (``poc.fill``), so the unit may offer more kW.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from chains.poc.market import PocAppParams, max_kw, new_farmer_record, response_ppm
from relay.ops.layout import genesis_path
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

KIND = "poc"


def _params(ctx: MarketContext) -> PocAppParams:
    """The park's app parameters, from its genesis (``app``)."""
    genesis = json.loads(genesis_path(ctx.cfg, ctx.chain.id).read_text())
    return PocAppParams.from_json(dict(genesis["app"]))


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", required=True, help="the ancillary service (see `params`: services)")


def _demand_args(p: argparse.ArgumentParser) -> None:
    _service_args(p)
    p.add_argument("--amount-kw", required=True, type=positive, help="capacity needed, kW")
    p.add_argument("--price-cap", required=True, type=positive, help="most paid per kW (settle_denom units)")
    p.add_argument("--duration-ms", type=positive, default=900_000, help="how long the capacity is needed "
                                                                          "(default 900000)")


def demand(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The grid operator's capacity demand for the current round (amount × cap escrowed); one per service and
    round."""
    return submit(ctx, args.as_, "market.demand", {"service": args.service, "amount_kw": args.amount_kw,
                                                   "price_cap": args.price_cap, "duration_ms": args.duration_ms})


def _offer_args(p: argparse.ArgumentParser) -> None:
    _service_args(p)
    p.add_argument("--amount-kw", required=True, type=non_negative, help="capacity offered, kW (0 withdraws)")
    p.add_argument("--price", required=True, type=non_negative, help="asked price per kW")


def offer(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A unit's capacity offer for the current round (replaces its previous one for the service; 0 kW withdraws).
    A unit's offers in a round stay within the kW its committed plots back."""
    return submit(ctx, args.as_, "market.offer", {"service": args.service, "amount_kw": args.amount_kw,
                                                  "price": args.price})


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", required=True, type=non_negative)
    _service_args(p)
    p.add_argument("--unit", required=True, help="the awarded unit")
    p.add_argument("--delivered-kw", required=True, type=non_negative, help="metered delivery, kW")


def report(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The grid operator settles one award by its delivered kW: the unit is paid for what it delivered, the rest
    refunded, and its response rate updated."""
    return submit(ctx, args.as_, "market.report", {"round": args.round, "service": args.service, "unit": args.unit,
                                                   "delivered_kw": args.delivered_kw})


def _erase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plot-id", required=True, help="the committed plot (hex; see `unit`)")


def erase(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Release a committed plot (capacity competition): refused if the unit's open offers need its space."""
    return submit(ctx, args.as_, "poc.erase", {"plot_id": args.plot_id})


def _fill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=positive, help="plot size (default: the park's plot_k)")
    p.add_argument("--plot-nonce", help="32 bytes hex (default: random); the same nonce reuses a cached plot")


def fill(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Commit a new plot (capacity competition, docs/research.md#seed-000): plot it (or reuse the cached one), prove
    it for a fill sub-challenge of the chain's latest challenge, and submit ``poc.fill``. The plot is bound to the
    account's key: nobody else can commit it."""
    import os

    import chiapos

    from chains.poc.market import fill_challenge
    from chains.poc.plots import PlotCache
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import account_key_path

    params = _params(ctx)
    k = args.k or int(ctx.chain.params.get("plot_k", params.min_k))
    if not params.min_k <= k <= params.max_k:
        raise MarketArgumentError(f"--k: the park commits plots of k {params.min_k}..{params.max_k}, got {k}")
    try:
        nonce = bytes.fromhex(args.plot_nonce) if args.plot_nonce else os.urandom(32)
    except ValueError as exc:
        raise MarketArgumentError(f"--plot-nonce is 32 bytes hex, got {args.plot_nonce!r}") from exc
    if len(nonce) != 32:
        raise MarketArgumentError(f"--plot-nonce is 32 bytes hex, got {len(nonce)} bytes")
    pubkey = ed25519_signer(account_key_path(ctx.cfg, ctx.chain.id, args.as_)).pubkey
    info = PlotCache().create(pubkey, nonce, k)
    chain = read_json(ctx, "poc/chain") or {"challenges": []}
    if not chain["challenges"]:
        raise RuntimeError(f"{ctx.chain.id}: no recent challenge to prove the plot for")
    height, challenge = max((int(h), bytes.fromhex(c)) for h, c in chain["challenges"])
    prover = chiapos.DiskProver(str(info.path))
    for index in range(params.max_fill_index):
        sub = fill_challenge(challenge, info.plot_id, index)
        if prover.get_qualities_for_challenge(sub):
            proof = bytes(prover.get_full_proof(sub, 0))
            out = submit(ctx, args.as_, "poc.fill", {"plot_nonce": nonce.hex(), "k": k, "challenge_height": height,
                                                     "index": index, "proof": proof.hex()})
            return {**out, "plot_id": info.plot_id.hex(), "unit": _unit(ctx, args.as_)}
    raise RuntimeError(f"plot {info.plot_id.hex()[:16]}… answers none of the {params.max_fill_index} fill "
                       f"sub-challenges of block {height}: try again at the next block")


def _import_args(p: argparse.ArgumentParser) -> None:
    add_import_args(p, required=True)


def import_reputation(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Rank the caller, until its first settled award here, by a score it earned on another park and imported over
    the relay (the subject sent its own attestation to the caller's account here; the score must reach the park's
    ``import_min_score``, else ``reputation.insufficient``)."""
    ref = import_ref(ctx, args)
    if ref is None:  # the arguments are required: argparse refused already
        raise MarketArgumentError("--import-from is required")
    out = submit(ctx, args.as_, "market.import_reputation", ref)
    return {**out, "unit": _unit(ctx, args.as_)}


def _round_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("round", nargs="?", type=non_negative, help="the round (default: the current one)")


def round_(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A round's demands and offers (until it clears) and its awards (until they settle)."""
    params = _params(ctx)
    height = int(status(ctx)["height"])
    current = params.round_of(height)
    rnd = current if args.round is None else args.round
    blob = read_json(ctx, f"poc/market/round/{rnd}") or {"demands": {}, "offers": {}}
    return {"round": rnd, "current_round": current, "height": height,
            "clears_at_height": (rnd + 1) * params.round_blocks, **blob,
            "awards": read_json(ctx, f"poc/market/awards/{rnd}") or {}}


def _results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=positive, default=200, help="how many recent blocks to read (default 200)")


RESULT_EVENTS = ("market.cleared", "market.settled", "market.reputation_imported")


def results(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Clearings, settlements and reputation imports of the last ``--blocks`` blocks, oldest first."""
    from relay.ops.parks import rpc

    head = int(status(ctx)["height"])
    start = max(1, head - args.blocks + 1)
    out: list[dict[str, Any]] = []
    while start <= head:
        for kind in RESULT_EVENTS:
            out += rpc(ctx.view.url, "getEvents", {"from": start, "to": head, "type": kind})
        start += 1001
    out.sort(key=lambda e: int(e["height"]))
    return {"park": ctx.chain.id, "head": head, "events": out}


def _unit(ctx: MarketContext, name: str) -> dict[str, Any]:
    params = _params(ctx)
    rec = read_json(ctx, f"poc/farmers/{name}") or new_farmer_record()
    return {"name": name, "committed_bytes": rec["committed_bytes"], "plots": sorted(rec["plots"]),
            "max_kw": max_kw(params, rec), "awarded_kw": rec["awarded_kw"], "delivered_kw": rec["delivered_kw"],
            "response_ppm": response_ppm(params, rec), "imported": rec.get("imported")}


def _unit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the unit (farmer) account")


def unit(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A unit's committed space, the kW it may offer, its record and the response rate the market ranks it by
    (its imported score until its first settled award here)."""
    return _unit(ctx, args.name)


def params(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The park's market parameters (genesis ``app``: services, round length, unit share cap, import floor)."""
    return _params(ctx).to_json()


def _none(p: argparse.ArgumentParser) -> None:
    """No arguments of its own."""


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("demand", "the grid operator's capacity demand for this round", _demand_args, demand, signs="operator"),
    Action("offer", "a unit's capacity offer for this round", _offer_args, offer, signs=""),
    Action("report", "the grid operator settles an award by its delivered kW", _report_args, report,
           signs="operator"),
    Action("fill", "plot and commit a new plot (more capacity to offer)", _fill_args, fill, signs=""),
    Action("erase", "release a committed plot", _erase_args, erase, signs=""),
    Action("import-reputation", "rank the caller by reputation imported from another park", _import_args,
           import_reputation, signs=""),
    Action("round", "a round's demands, offers and awards", _round_args, round_),
    Action("results", "recent clearings and settlements", _results_args, results),
    Action("unit", "a unit's capacity and response rate", _unit_args, unit),
    Action("params", "the park's market parameters", _none, params),
)}
