"""``parkrelay market <fabric park> …``: the Fabric park's market (docs/research.md#seed-004; chains/fabric/SPEC.md
§F1), the bridge chaincode's ``market.*`` functions through :class:`adapters.fabric.market.FabricMarket`.

Who is who. ``--as ACCOUNT`` is the identity that signs: a user of the park's connection profile (the deployment's
accounts, and any user enrolled later with a ``market.role`` certificate attribute, e.g. by
``chains.fabric.network.crypto.enroll_user``). An account argument (``--account``, ``--seller``, ``--to`` …) is a
deployment account name, a user of the connection profile, or a full account id ``<MSP>:<CN>``. The regulator is
the park operator: its actions default ``--as`` to ``operator``.

Access (§F1.1): the regulator ``certify``s an account for one role (``user``, ``sales``, ``trader``, ``station``
with its ``--station``s), optionally on reputation this park imported over the relay (``--import-from CHAIN
--subject NAME --model MODEL``: the imported score must reach the park's ``certify_min_score``), and ``revoke``s it;
a market function also needs the caller's certificate to carry the same ``market.role``. ``participant`` shows an
account's certification and agreement.

Agreements (§F1.2): a sales company ``publish-plan``s prices per band; ``quote`` ranks the plans for a load
profile; a small user ``choose-plan`` signs the cheapest.

Bilateral contracts with private terms (§F1.3): ``propose`` builds the terms document (random salt), commits its
hash on chain with the document in the proposal's transient map, and keeps the document in a 0600 file under
``<data_dir>/market/<park>/terms/`` (hand that file to the counterparty: both must send the same bytes);
``accept`` (the counterparty; the buyer's payment is escrowed) and ``settle`` (the buyer, with the delivered kWh)
send it again; ``contract`` shows the public record and, with ``--as``, the terms read from a peer of that party's
own organisation.

Charging rounds (§F1.4): the regulator ``open-round``s one transformer's slot; stations ``request`` (stage 1) until
requests close; the regulator ``allocate``s (water-fill, rights issued); stations ``bid`` buys and sells (stage 2)
until bids close; the regulator ``clear``s; until the slot starts stations ``p2p-offer``, ``p2p-take`` and
``p2p-withdraw``. ``round`` shows a round, its requests, the rights and open bids (its ``trades`` once cleared);
``escrow`` what the market holds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay.ops.market import (
    Action,
    MarketArgumentError,
    MarketContext,
    add_import_args,
    import_ref,
    non_negative,
    positive,
)

__all__ = ["ACTIONS", "KIND"]

KIND = "fabric"

ROLES = ("user", "sales", "trader", "station")
BANDS = ("peak", "flat", "valley")


def with_market(ctx: MarketContext, who: str, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``fn`` on a :class:`~adapters.fabric.market.FabricMarket` as identity ``who`` (a user of the park's
    connection profile; ``admin`` reads as the operator organisation's admin), over one gateway closed after."""
    from adapters import fabric
    from adapters.fabric.market import FabricMarket

    async def go(_src: Any, gw: Any) -> Any:
        return await fn(FabricMarket(fabric.target(gw)))

    return ctx.view._run(go, user=who)


def _profile_users(ctx: MarketContext) -> dict[str, str]:
    """User name -> its organisation (MSP id), from the park's connection profile (empty if none is written)."""
    path = Path(getattr(ctx.view, "profile", ""))
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    out: dict[str, str] = {}
    for msp, info in (raw.get("organizations") or {}).items():
        for user in info.get("users") or {}:
            out.setdefault(user, msp)
    return out


def _account(ctx: MarketContext, who: str) -> str:
    """The account id (``<MSP>:<CN>``) of a deployment account, a connection-profile user or an id as given."""
    if ":" in who:
        return who
    accounts = dict(getattr(ctx.view, "genesis", {}).get("accounts") or {})
    if who in accounts:
        return str(accounts[who])
    msp = _profile_users(ctx).get(who)
    if msp is None:
        raise MarketArgumentError(f"{who!r} is neither an account of {ctx.chain.id} ({sorted(accounts)}), a user of "
                                  f"its connection profile, nor an account id <MSP>:<CN>")
    return f"{msp}:{who}@{msp}"


def _submitted(ctx: MarketContext, who: str, fn: str, events: Any) -> dict[str, Any]:
    return {"park": ctx.chain.id, "function": fn, "as": who, "events": events}


# -- access (the regulator) ---------------------------------------------------------------------------------------


def _certify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", required=True, help="the account to certify (it must have registered)")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--station", action="append", default=None, dest="stations", metavar="STATION",
                   help="a station the operator runs (role station; repeat)")
    add_import_args(p)


def certify(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Regulator: certify an account for one role (``station`` with its ``--station``s). With ``--import-from CHAIN
    --subject NAME --model MODEL`` on the reputation this park imported over the relay for that subject (its score
    must reach the park's ``certify_min_score``, else ``reputation.insufficient``); the record keeps it as its
    basis. The account also needs a certificate carrying ``market.role`` = the role to use the market."""
    if args.stations and args.role != "station":
        raise MarketArgumentError("--station goes with --role station")
    ref = import_ref(ctx, args)
    account = _account(ctx, args.account)
    events = with_market(ctx, args.as_, lambda m: m.certify(account, args.role, stations=args.stations,
                                                            reputation=ref))
    return {**_submitted(ctx, args.as_, "market.certify", events), "account": account}


def _account_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", required=True, help="the account")


def revoke(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Regulator: revoke an account's certification (``market.settled`` if revoked already)."""
    account = _account(ctx, args.account)
    return {**_submitted(ctx, args.as_, "market.revoke", with_market(ctx, args.as_, lambda m: m.revoke(account))),
            "account": account}


def _name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("account", help="the account (a name or <MSP>:<CN>)")


def participant(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """An account's certification (role, stations, revoked, the imported reputation it rests on) and its
    power-consumption agreement."""
    account = _account(ctx, args.account)

    async def both(m: Any) -> dict[str, Any]:
        cert = await m.certification(account)
        agreement = await m.agreement(account)
        return {"certification": cert.get("certification"), "agreement": agreement.get("agreement")}

    return {"park": ctx.chain.id, "account": account, **with_market(ctx, "admin", both)}


# -- power-consumption agreements ---------------------------------------------------------------------------------


def _bands(p: argparse.ArgumentParser, what: str) -> None:
    for b in BANDS:
        p.add_argument(f"--{b}", required=True, type=non_negative, help=f"{what} in the {b} band")


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan-id", required=True)
    _bands(p, "price per kWh")
    p.add_argument("--fixed-fee", type=non_negative, default=0, help="the plan's fixed fee (default 0)")


def publish_plan(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Sales company: publish (or update) an agreement plan, a price per kWh of each band (peak, flat, valley)
    and a fixed fee."""
    prices = {b: getattr(args, b) for b in BANDS}
    events = with_market(ctx, args.as_, lambda m: m.publish_plan(args.plan_id, prices, args.fixed_fee))
    return _submitted(ctx, args.as_, "market.publish_plan", events)


def _profile_args(p: argparse.ArgumentParser) -> None:
    _bands(p, "kWh")


def quote(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The published plans ranked by what a load profile (kWh per band) would cost under each."""
    profile = {b: getattr(args, b) for b in BANDS}
    return {"park": ctx.chain.id, "profile": profile, **with_market(ctx, "admin", lambda m: m.quote(profile))}


def choose_plan(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Small or micro user: sign the agreement whose plan costs this load profile least (its signed proposal is
    its signature)."""
    profile = {b: getattr(args, b) for b in BANDS}
    return _submitted(ctx, args.as_, "market.choose_plan", with_market(ctx, args.as_,
                                                                       lambda m: m.choose_plan(profile)))


# -- bilateral contracts with private terms -------------------------------------------------------------------------


def _terms_path(ctx: MarketContext, contract_id: str) -> Path:
    return ctx.cfg.data_dir / "market" / ctx.chain.id / "terms" / f"{contract_id}.json"


def _propose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contract-id", required=True)
    p.add_argument("--seller", required=True, help="the selling party (the caller or its counterparty)")
    p.add_argument("--buyer", required=True, help="the buying party")
    p.add_argument("--quantity-kwh", required=True, type=positive)
    p.add_argument("--price", required=True, type=non_negative, help="per kWh, in the market's currency")
    p.add_argument("--terms-out", help="where to keep the terms document (default <data_dir>/market/<park>/terms/"
                                       "<contract>.json)")


def propose(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Trader or sales company: commit a bilateral contract agreed offline. The terms document (parties,
    quantity, price, a random salt) goes to the endorsers in the transient map and into each party's organisation's
    private data; the ledger keeps its SHA-256. The document is kept in a 0600 file: hand it to the counterparty
    for ``accept`` (the same bytes)."""
    from adapters.fabric.market import contract_terms

    seller, buyer = _account(ctx, args.seller), _account(ctx, args.buyer)
    terms, digest = contract_terms(args.contract_id, seller, buyer, args.quantity_kwh, args.price)
    path = Path(args.terms_out) if args.terms_out else _terms_path(ctx, args.contract_id)
    events = with_market(ctx, args.as_, lambda m: m.propose_contract(args.contract_id, terms))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(terms)
    return {**_submitted(ctx, args.as_, "market.propose_contract", events), "contract_id": args.contract_id,
            "terms_sha256": digest, "terms_file": str(path)}


def _terms_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contract-id", required=True)
    p.add_argument("--terms", help="the terms document `propose` kept (default <data_dir>/market/<park>/terms/"
                                   "<contract>.json)")


def _read_terms(ctx: MarketContext, args: argparse.Namespace) -> bytes:
    path = Path(args.terms) if args.terms else _terms_path(ctx, args.contract_id)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MarketArgumentError(f"no terms document for contract {args.contract_id!r} at {path} (--terms FILE: "
                                  f"the one `propose` kept): {exc.strerror}") from exc
    if len(raw) > 4096:
        raise MarketArgumentError(f"{path}: a terms document is at most 4096 bytes, got {len(raw)}")
    return raw


def accept(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The counterparty accepts the same terms document; the buyer's payment (quantity × price) is escrowed."""
    terms = _read_terms(ctx, args)
    events = with_market(ctx, args.as_, lambda m: m.accept_contract(args.contract_id, terms))
    return {**_submitted(ctx, args.as_, "market.accept_contract", events), "contract_id": args.contract_id}


def _settle_args(p: argparse.ArgumentParser) -> None:
    _terms_args(p)
    p.add_argument("--delivered-kwh", required=True, type=non_negative)


def settle(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The buyer confirms delivery: the seller is paid min(delivered, quantity) × price, the buyer refunded the
    rest (the terms must match the hash on the ledger and both organisations' private data)."""
    terms = _read_terms(ctx, args)
    events = with_market(ctx, args.as_, lambda m: m.settle_contract(args.contract_id, args.delivered_kwh, terms))
    return {**_submitted(ctx, args.as_, "market.settle_contract", events), "contract_id": args.contract_id}


def _contract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("contract_id")
    p.add_argument("--as", dest="as_", metavar="ACCOUNT",
                   help="a party: also read the private terms from a peer of its own organisation")


def contract(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A contract's public record (parties, terms hash, state, escrow); with ``--as`` a party, also its private
    terms, read from a peer of that party's own organisation (``market.terms`` for anyone else)."""
    if not args.as_:
        return {"park": ctx.chain.id, **with_market(ctx, "admin", lambda m: m.contract(args.contract_id))}

    async def both(m: Any) -> dict[str, Any]:
        return {**(await m.contract(args.contract_id)), "terms": (await m.terms(args.contract_id)).get("terms")}

    return {"park": ctx.chain.id, **with_market(ctx, args.as_, both)}


# -- charging rounds -------------------------------------------------------------------------------------------------


def _open_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--transformer", required=True, help="a transformer of the park's registry")
    p.add_argument("--requests-close-in-s", required=True, type=positive, help="stage 1 requests until then")
    p.add_argument("--bids-close-in-s", type=positive, help="stage 2 bids until then (default: requests close)")
    p.add_argument("--slot-start-in-s", type=positive, help="the slot starts (default: bids close)")
    p.add_argument("--slot-s", type=positive, default=3600, help="the slot's length (default 3600)")


def open_round(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Regulator: open a charging round for one transformer's slot. Times are seconds from now (this machine's
    clock; the chaincode checks them against its own): now < requests close <= bids close <= slot start."""
    bids = args.bids_close_in_s or args.requests_close_in_s
    start = args.slot_start_in_s or bids
    if not args.requests_close_in_s <= bids <= start:
        raise MarketArgumentError("need --requests-close-in-s <= --bids-close-in-s <= --slot-start-in-s")
    now = int(time.time() * 1000)
    times = (now + args.requests_close_in_s * 1000, now + bids * 1000, now + start * 1000,
             now + (start + args.slot_s) * 1000)
    events = with_market(ctx, args.as_, lambda m: m.open_round(args.round_id, args.transformer, *times))
    return {**_submitted(ctx, args.as_, "market.open_round", events), "round_id": args.round_id,
            "requests_close_ms": times[0], "bids_close_ms": times[1], "slot_start_ms": times[2],
            "slot_end_ms": times[3]}


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--station", required=True, help="a station certified to the caller, behind the round's "
                                                    "transformer")
    p.add_argument("--power-kw", required=True, type=positive)
    p.add_argument("--willingness", choices=["strong", "weak"], default="strong")
    p.add_argument("--flexibility-bp", type=non_negative, default=0, help="load flexibility, basis points")


def request(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Station operator: a station's charging requirement for the round's slot (stage 1), until requests close."""
    events = with_market(ctx, args.as_, lambda m: m.request(args.round_id, args.station, args.power_kw,
                                                            args.willingness, args.flexibility_bp))
    return _submitted(ctx, args.as_, "market.request", events)


def _round_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)


def allocate(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Regulator: stage 1 once requests close: water-fill the transformer's margin over the slot among the
    requests; each station's share is issued as a charging right ``<round>.<station>`` of the registry."""
    return _submitted(ctx, args.as_, "market.allocate", with_market(ctx, args.as_,
                                                                    lambda m: m.allocate(args.round_id)))


def _bid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--station", required=True)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    p.add_argument("--power-kw", required=True, type=positive)
    p.add_argument("--price", required=True, type=non_negative, help="per kW of the slot")


def bid(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Station operator: one bid per station in the round's double auction (stage 2), until bids close: a buy of
    at most the unmet requirement (power × price escrowed) or a sell of at most the free kW of its right."""
    events = with_market(ctx, args.as_, lambda m: m.bid(args.round_id, args.station, args.side, args.power_kw,
                                                        args.price))
    return _submitted(ctx, args.as_, "market.bid", events)


def clear(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Regulator: clear the double auction once bids close (before the slot starts): crossing pairs trade at the
    midpoint, kW move between the stations' rights, escrow pays the sellers and the rest is refunded."""
    return _submitted(ctx, args.as_, "market.clear", with_market(ctx, args.as_, lambda m: m.clear(args.round_id)))


def _offer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--station", required=True, help="the station whose right is offered")
    p.add_argument("--offer-id", required=True)
    p.add_argument("--to", required=True, help="the one account that may take it")
    p.add_argument("--power-kw", required=True, type=positive)
    p.add_argument("--price", required=True, type=non_negative, help="per kW")


def p2p_offer(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Station operator: offer kW of a station's right to one account (P2P), until the slot starts."""
    to = _account(ctx, args.to)
    events = with_market(ctx, args.as_, lambda m: m.p2p_offer(args.round_id, args.station, args.offer_id, to,
                                                              args.power_kw, args.price))
    return _submitted(ctx, args.as_, "market.p2p_offer", events)


def _take_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--offer-id", required=True)
    p.add_argument("--station", required=True, help="the caller's station that takes the kW")


def p2p_take(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Station operator: take a P2P offer made to the caller, for one of its stations (at most its unmet
    requirement), and pay for it."""
    events = with_market(ctx, args.as_, lambda m: m.p2p_accept(args.round_id, args.offer_id, args.station))
    return _submitted(ctx, args.as_, "market.p2p_accept", events)


def _withdraw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round-id", required=True)
    p.add_argument("--offer-id", required=True)


def p2p_withdraw(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Station operator: withdraw its open P2P offer."""
    events = with_market(ctx, args.as_, lambda m: m.p2p_cancel(args.round_id, args.offer_id))
    return _submitted(ctx, args.as_, "market.p2p_cancel", events)


def _round_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("round_id")


def round_(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A round: its deadlines and state (its margin and ``trades`` once allocated and cleared), its requests
    with what each was allocated, the rights its stations hold and the open bids."""
    return {"park": ctx.chain.id, **with_market(ctx, "admin", lambda m: m.round(args.round_id))}


def escrow(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """What the market holds: its balance and the sum of its open records' escrow (equal)."""
    return {"park": ctx.chain.id, **with_market(ctx, "admin", lambda m: m.escrow())}


def _none(p: argparse.ArgumentParser) -> None:
    """No arguments of its own."""


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("certify", "regulator: certify an account for a role (optionally on imported reputation)",
           _certify_args, certify, signs="operator"),
    Action("revoke", "regulator: revoke an account's certification", _account_args, revoke, signs="operator"),
    Action("participant", "an account's certification and agreement", _name_args, participant),
    Action("publish-plan", "sales company: publish an agreement plan", _plan_args, publish_plan, signs=""),
    Action("quote", "the plans ranked for a load profile", _profile_args, quote),
    Action("choose-plan", "small user: sign the cheapest plan's agreement", _profile_args, choose_plan, signs=""),
    Action("propose", "propose a bilateral contract with private terms", _propose_args, propose, signs=""),
    Action("accept", "accept a bilateral contract (buyer's payment escrowed)", _terms_args, accept, signs=""),
    Action("settle", "buyer: settle a contract by the delivered kWh", _settle_args, settle, signs=""),
    Action("contract", "a contract's public record (and a party's private terms)", _contract_args, contract),
    Action("open-round", "regulator: open a charging round", _open_args, open_round, signs="operator"),
    Action("request", "station: a charging requirement (stage 1)", _request_args, request, signs=""),
    Action("allocate", "regulator: stage 1 allocation, rights issued", _round_id_args, allocate, signs="operator"),
    Action("bid", "station: a buy or sell in the double auction (stage 2)", _bid_args, bid, signs=""),
    Action("clear", "regulator: clear the double auction", _round_id_args, clear, signs="operator"),
    Action("p2p-offer", "station: offer kW of a right to one account", _offer_args, p2p_offer, signs=""),
    Action("p2p-take", "station: take a P2P offer made to it", _take_args, p2p_take, signs=""),
    Action("p2p-withdraw", "station: withdraw an open P2P offer", _withdraw_args, p2p_withdraw, signs=""),
    Action("round", "a round's requests, rights, bids and trades", _round_args, round_),
    Action("escrow", "what the market holds", _none, escrow),
)}
