"""``parkrelay market <ethereum park> …``: the Ethereum park's ``EnergyMarket`` (docs/research.md#seed-001; SPEC
§E2.9), through :class:`adapters.ethereum.market.MarketClient`.

The node deploys the market at first start when the park's chain table has a feeder (``market_buses``; its genesis
``market`` names the address, the feeder, the members and the round defaults). The operator ``open``s a round
(default length ``market_round_s``, use-of-system charge ``market_charge_rate`` wei/Wh/km); members ``bid`` (a
seller escrows its kWh tokens, a buyer ``quantity × price`` wei; prices in wei per Wh, the buyer's including the
charge); after the round closes anyone ``clear``s it on chain (double auction, proximal pairs first, curtailed at
line limits); the operator ``settle``s it with the metered delivery of each trade, which feeds the park's delivery
record (the reputation it attests); members ``withdraw`` the wei credited to them. ``admit`` admits a participant of
another park by the reputation this park imported over the relay (``DeliveryRecord.admitImported``), ``member``
connects an admitted participant at a bus. ``feeder``, ``rounds``, ``round`` and ``participant`` read.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from relay.ops.layout import account_key_path, genesis_path
from relay.ops.market import (
    Action,
    MarketArgumentError,
    MarketContext,
    UnsupportedMarketError,
    add_import_args,
    import_ref,
    non_negative,
    positive,
)

__all__ = ["ACTIONS", "KIND"]

KIND = "ethereum"


def _genesis(ctx: MarketContext) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(genesis_path(ctx.cfg, ctx.chain.id).read_text())
    return out


def _market(ctx: MarketContext) -> tuple[Any, dict[str, Any]]:
    """The market's client and the genesis ``market``; :class:`UnsupportedMarketError` if the park has none."""
    from web3 import Web3

    from adapters.ethereum.market import MarketClient

    market = _genesis(ctx).get("market")
    if not market:
        raise UnsupportedMarketError(f"{ctx.chain.id} has no market: its chain table has no market_buses (see "
                                     f"deploy/devnet.toml), so its node deployed no EnergyMarket")
    w3 = Web3(Web3.HTTPProvider(ctx.chain.url_of(ctx.chain.nodes[0], ctx.cfg.host), request_kwargs={"timeout": 10}))
    if not w3.eth.get_code(Web3.to_checksum_address(market["address"])):
        raise RuntimeError(f"{ctx.chain.id}: no EnergyMarket at {market['address']} yet: its node deploys it at first "
                           f"start, right after the park's contracts (see its log)")
    return MarketClient(w3, market["address"]), market


def _signer(ctx: MarketContext, name: str) -> Any:
    """The deployment account's key (its devnet key file) as a web3 signer; never printed."""
    from eth_account import Account

    from relay.ops.keys import read_secret

    return Account.from_key(read_secret(account_key_path(ctx.cfg, ctx.chain.id, name)))


def _names(ctx: MarketContext) -> dict[str, str]:
    """Address (lowercase) -> deployment account name, to show names beside addresses."""
    return {str(a["address"]).lower(): n for n, a in _genesis(ctx)["accounts"].items()}


def _address(ctx: MarketContext, who: str) -> str:
    if who.startswith("0x") and len(who) == 42:
        return who.lower()
    accounts = _genesis(ctx)["accounts"]
    if who not in accounts:
        raise MarketArgumentError(f"{who!r} is neither an account of {ctx.chain.id} ({sorted(accounts)}) nor an "
                                  f"address")
    return str(accounts[who]["address"])


def _tx(r: Any) -> dict[str, Any]:
    return {"tx": "0x" + bytes(r.receipt["transactionHash"]).hex(), "height": int(r.receipt["blockNumber"]),
            "gas_used": r.gas_used}


def feeder(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """The market's address, its feeder (buses and line limits, bus 0 the substation), members and round
    defaults, as deployed."""
    client, market = _market(ctx)
    return {"park": ctx.chain.id, "address": market["address"], "buses": client.feeder(),
            "members": market["members"], "charge_rate": market["charge_rate"], "round_s": market["round_s"],
            "min_imported_score": client.min_imported_score(), "rounds": client.round_count()}


def _open_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--closes-in-s", type=positive, help="bids until this many seconds after the head block (default "
                                                        "the park's market_round_s)")
    p.add_argument("--charge-rate", type=non_negative, help="use-of-system charge, wei per Wh per km (default the "
                                                            "park's market_charge_rate)")


def open_(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Open a trading round (operator): it takes bids until its closing time (block time, s)."""
    client, market = _market(ctx)
    closes_at = int(client.w3.eth.get_block("latest")["timestamp"]) + (args.closes_in_s or int(market["round_s"]))
    rate = market["charge_rate"] if args.charge_rate is None else args.charge_rate
    round_id = client.open_round(_signer(ctx, args.as_), closes_at, rate)
    return {"round": round_id, "closes_at": closes_at, "charge_rate": rate}


def _bid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", required=True, type=positive)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    p.add_argument("--quantity-wh", required=True, type=positive, help="energy, Wh")
    p.add_argument("--price", required=True, type=positive,
                   help="wei per Wh: a seller's ask; a buyer's most, use-of-system charge included")


def bid(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A member's sealed bid (computed off chain, e.g. by chains/ethereum/market/agents.py) while the round is open.
    A seller approves and escrows its kWh tokens; a buyer sends quantity × price wei."""
    client, _ = _market(ctx)
    index = client.submit_bid(_signer(ctx, args.as_), args.round, args.side == "sell", args.quantity_wh, args.price)
    return {"round": args.round, "index": index, "side": args.side, "quantity_wh": args.quantity_wh,
            "price_wei_per_wh": args.price, "escrowed": (f"{args.quantity_wh} Wh" if args.side == "sell"
                                                         else f"{args.quantity_wh * args.price} wei")}


def _round_id_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", required=True, type=positive)


def clear(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Clear a closed round on chain (anyone may): the double auction with the use-of-system charge, curtailed at
    line limits; unmatched escrow goes back."""
    client, _ = _market(ctx)
    r = client.clear(_signer(ctx, args.as_), args.round)
    return {"round": args.round, **_tx(r), "curtailed": [{k: int(v) for k, v in c.items() if k != "roundId"}
                                                         for c in client.curtailments(r.receipt)],
            **_round(ctx, client, args.round)}


def _settle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", required=True, type=positive)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--delivered", help="metered Wh of each trade, in order, comma-separated")
    g.add_argument("--full", action="store_true", help="every trade delivered as contracted")


def settle(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Settle a cleared round with each trade's metered delivery (operator): buyers pay for what was delivered,
    sellers get the rest back, and each seller's delivery goes to the park's delivery record (its reputation)."""
    client, _ = _market(ctx)
    trades = client.trades(args.round)
    if args.full:
        delivered = [t.quantity_wh for t in trades]
    else:
        try:
            delivered = [int(x) for x in args.delivered.split(",")] if args.delivered.strip() else []
        except ValueError as exc:
            raise MarketArgumentError(f"--delivered is comma-separated Wh, got {args.delivered!r}") from exc
        if len(delivered) != len(trades) or min(delivered, default=0) < 0:
            raise MarketArgumentError(f"--delivered needs {len(trades)} non-negative figures (one per trade of round "
                                      f"{args.round}), got {len(delivered)}")
    r = client.settle(_signer(ctx, args.as_), args.round, delivered)
    return {"round": args.round, **_tx(r), "delivered_wh": delivered, **_round(ctx, client, args.round)}


def withdraw(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Withdraw every wei the market credited to the caller (sales, refunds, price improvement)."""
    client, _ = _market(ctx)
    signer = _signer(ctx, args.as_)
    amount = client.claimable(signer.address)
    return {"withdrawn_wei": amount, **_tx(client.withdraw(signer))}


def _round(ctx: MarketContext, client: Any, round_id: int) -> dict[str, Any]:
    info = client.round(round_id)
    names = _names(ctx)
    bids = client.bids(round_id)
    for b in bids:
        b["name"] = names.get(b["member"])
    trades = [{"seller_bid": t.seller_bid, "buyer_bid": t.buyer_bid, "seller": bids[t.seller_bid]["name"] or
               bids[t.seller_bid]["member"], "buyer": bids[t.buyer_bid]["name"] or bids[t.buyer_bid]["member"],
               "quantity_wh": t.quantity_wh, "price_wei_per_wh": t.price, "charge_wei_per_wh": t.charge,
               "distance_m": t.distance_m} for t in client.trades(round_id)] if info.trades else []
    return {"state": info.state, "closes_at": info.closes_at, "charge_rate": info.charge_rate, "bids": bids,
            "trades": trades, "cleared_wh": sum(t["quantity_wh"] for t in trades)}


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("round", type=positive, help="the round id")


def round_(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """One round: state, closing time, charge rate, bids, and its trades once cleared (seller and buyer, quantity,
    price to the seller, use-of-system charge, electrical distance)."""
    client, _ = _market(ctx)
    if not 1 <= args.round <= client.round_count():
        raise MarketArgumentError(f"no round {args.round} (rounds: 1..{client.round_count()})")
    return {"round": args.round, **_round(ctx, client, args.round)}


def rounds(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Every round's state, closing time and counts (the last 50)."""
    client, _ = _market(ctx)
    n = client.round_count()
    out = []
    for rid in range(max(1, n - 49), n + 1):
        i = client.round(rid)
        out.append({"round": rid, "state": i.state, "closes_at": i.closes_at, "charge_rate": i.charge_rate,
                    "bids": i.bids, "trades": i.trades})
    return {"park": ctx.chain.id, "rounds": out}


def _admit_args(p: argparse.ArgumentParser) -> None:
    add_import_args(p, required=True)
    p.add_argument("--participant", required=True, help="its account here (a name of this park, or an address)")
    p.add_argument("--bus", type=positive, help="also connect it at this bus")


def admit(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Admit a participant to the market by the reputation another park attested and this park imported over the
    relay (operator; ``DeliveryRecord.admitImported``: refused, ``reputation.insufficient``, below the record's
    minimum score or with none imported); with ``--bus`` also connect it there."""
    client, _ = _market(ctx)
    ref = import_ref(ctx, args)
    if ref is None:
        raise MarketArgumentError("--import-from is required")
    who = _address(ctx, args.participant)
    operator = _signer(ctx, args.as_)
    out: dict[str, Any] = {"participant": who, **ref, "imported": ctx.view.imported_reputation(
        ref["src_chain"], ref["subject"], ref["model"]), "admitted": _tx(client.admit_imported(
            operator, ref["src_chain"], ref["subject"], ref["model"], who))}
    if args.bus is not None:
        out["member"] = _tx(client.set_member(operator, who, args.bus))
    return {**out, "record": client.participant(who)}


def _member_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--account", required=True, help="an admitted participant (a name of this park, or an address)")
    p.add_argument("--bus", required=True, type=positive)


def member(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """Connect an admitted participant at a bus of the feeder (operator)."""
    client, _ = _market(ctx)
    who = _address(ctx, args.account)
    return {"account": who, **_tx(client.set_member(_signer(ctx, args.as_), who, args.bus)),
            "record": client.participant(who)}


def _participant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("account", help="a name of this park, or an address")


def participant(ctx: MarketContext, args: argparse.Namespace) -> Any:
    """A participant's delivery record (admitted, contracted and delivered Wh, the score the park attests), its bus
    and the wei credited to it."""
    client, _ = _market(ctx)
    who = _address(ctx, args.account)
    return {"account": who, **client.participant(who)}


def _none(p: argparse.ArgumentParser) -> None:
    """No arguments of its own."""


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("feeder", "the market's feeder, members and round defaults", _none, feeder),
    Action("open", "open a trading round (operator)", _open_args, open_, signs="operator"),
    Action("bid", "a member's bid in an open round", _bid_args, bid, signs=""),
    Action("clear", "clear a closed round on chain", _round_id_args, clear, signs="operator"),
    Action("settle", "settle a cleared round with metered delivery (operator)", _settle_args, settle,
           signs="operator"),
    Action("withdraw", "withdraw the wei credited to the caller", _none, withdraw, signs=""),
    Action("rounds", "every round's state", _none, rounds),
    Action("round", "one round's bids and trades", _show_args, round_),
    Action("admit", "admit a participant by reputation imported from another park (operator)", _admit_args, admit,
           signs="operator"),
    Action("member", "connect an admitted participant at a bus (operator)", _member_args, member, signs="operator"),
    Action("participant", "a participant's delivery record, bus and credit", _participant_args, participant),
)}
