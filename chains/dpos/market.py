"""Markets of the DPoS park: docs/research.md#seed-003's three-stage energy trade and docs/research.md#seed-002's
reputation-based demand response.

**Energy trade (docs/research.md#seed-003).** Time is cut into trading rounds of ``round_ms``.

1. *Demand submission* — ``market.submit_bid {kind: buy|sell, amount_wh, price, round}``; ``price`` is in
   integer ``currency_denom`` units per kWh. A seller's energy (``energy_denom``, Wh) and a buyer's maximum
   payment ``amount_wh * price // 1000`` are escrowed in the module account ``module:market`` at once,
   so a cleared round can always settle.
2. *Matching* — at the first block whose time is past a round's end, a begin-block hook clears it.
   ``highest_price`` ("highest price first"): buyers by bid descending, sellers by ask ascending, matched
   while bid >= ask, with partial fills. ``max_utilisation`` (the default): the greatest matched volume
   any price-compatible matching reaches; sellers are served from the highest ask down, each from the
   highest bids first, with partial fills (see :func:`match_max_utilisation`). **Clearing price**: each fill
   is priced at the midpoint of its buyer's bid and seller's ask, rounded down: it lies in [ask, bid], so
   nobody trades worse than they offered, and the pair shares the surplus equally. A fill of ``q`` Wh at
   ``p`` per kWh pays ``q * p // 1000`` (rounding favours the buyer by under one unit per fill).
3. *Execution* — energy goes to buyers and payments to sellers out of escrow; unmatched energy and unspent
   payment escrow are refunded. Every denomination's total over all accounts is unchanged.

**Demand response (docs/research.md#seed-002).** DR nodes register as ``user`` or ``aggregator``. An aggregator
publishes a
request for ``amount_wh`` of load reduction with a price cap, escrowing the budget; users answer with a
first-price sealed auction: a sha256 commitment in the commit phase, the bid in the reveal phase. At the
end the cheapest revealed offers win (ties to the higher reputation) and each winner is paid its own bid:
the first-price rule of a procurement auction. Nodes are ranked by reputation (descending,
:func:`credit_ranking`); a request may admit only bidders above a reputation floor. A node that has not
matched by the end of a DR cycle is marked inactive and loses reputation; a bidder that commits and never
reveals loses more.

**Two-way selection.** Users and aggregators choose each other by reputation, every DR cycle: an aggregator
states whom it takes (``dr.set_terms {min_user_reputation, max_users}``), a user joins one aggregator
(``dr.join``) within those terms, choosing from the credit ranking; a request may be for members only. The
cycle's end dissolves every membership.

**Delivery (docs/research.md#seed-002's DR completion).** A request may name a delivery window
(``deliver_ms``). Its awards are then paid on delivery rather than at the auction: the auction refunds the
unawarded budget and keeps the awards' payments in escrow; within the window the aggregator reports what each
winner delivered (``dr.report_delivery``, read from its users' meters), each winner is paid its own price for
what it delivered (never more than awarded), and the rest returns to the aggregator. Reputation follows the
delivery: a winner that delivered its whole award gains ``reputation_match_reward``, one that fell short loses
``reputation_shortfall_penalty`` pro rata; the aggregator gains the reward if its request was delivered to
``dr_completion_target_bp`` of what it asked, else loses the penalty pro rata to the shortfall (an unfilled
auction counts). A request is settled once (a second report is a replay); an aggregator that does not report
by the window's end has its winners paid in full and loses ``reputation_no_reveal_penalty``.

State keys: ``market/next_bid_id``, ``market/round/<round>`` (list of bids), ``market/open_rounds``,
``market/result/<round>``; ``dr/nodes``, ``dr/next_request_id``, ``dr/request/<id>``,
``dr/result/<id>``, ``dr/cycle`` (``{index, matched}``), ``dr/open`` (sorted ``[reveal_end_ms, id]``),
``dr/delivery_open`` (sorted ``[deliver_end_ms, id]``), ``dr/terms/<aggregator>``, ``dr/members/<aggregator>``,
``dr/member/<user>`` (this cycle's memberships); and
``reputation/<subject>`` = ``{score, model, height, role, active, imported_from?}`` for every DR node
(``model`` ``dr-aggregator-reputation/v1`` or ``dr-user-reputation/v1`` by role), which the bridge attests
(:mod:`chains.dpos.reputation`).

**Reputation from other parks.** A node may join DR with the reputation it earned on another park:
``dr.register {role, import: {src_chain, subject, model}}`` names an attestation this park imported
(:mod:`chains.common.reputation`; any model, every model scores in basis points). The caller must hold it
(the subject sent its own attestation to the caller's account here) and its score must reach
``dr_import_min_score``; the node then starts at that score instead of ``reputation_initial``, so an
aggregator with a record elsewhere is ranked, and passes request floors, from its first cycle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from chains.common.reputation import SCORE_MAX, held_reputation, parse_import_ref
from chains.common.state import ChainState, canonical_json
from chains.common.tx import BlockContext, BlockHook, OpHandler, Tx, arg
from protocol.errors import AuthorizationError, CodecError, ProtocolError, ReplayError

__all__ = [
    "DR_ACCOUNT",
    "DR_MODELS",
    "MARKET_ACCOUNT",
    "REPUTATION_MODEL",
    "Bid",
    "Fill",
    "MarketParams",
    "credit_ranking",
    "dr_commitment",
    "dr_hook",
    "dr_members",
    "dr_terms",
    "market_hook",
    "match_bids",
    "match_highest_price",
    "match_max_utilisation",
    "payment",
    "register_market_ops",
    "reputation_path",
    "settle_delivery",
]

MARKET_ACCOUNT = "module:market"
"""Escrow of open bids (``:`` keeps it out of the creatable account names)."""
DR_ACCOUNT = "module:dr"
"""Escrow of open DR request budgets."""
REPUTATION_MODEL = "dr-aggregator-reputation/v1"
"""The model of an aggregator's reputation."""
DR_MODELS = {"aggregator": REPUTATION_MODEL, "user": "dr-user-reputation/v1"}
"""The reputation model of each DR role (SPEC §2.3)."""
DR_BID_TAG = b"parkrelay/dr-bid/v1"
MATCHING_METHODS = ("max_utilisation", "highest_price")


@dataclass(frozen=True, slots=True)
class MarketParams:
    """Parameters of the park's markets (the genesis config's ``market``)."""

    round_ms: int = 60_000
    """Length of a trading round, ms."""
    max_rounds_ahead: int = 60
    """How many rounds ahead of the current one a bid may be for."""
    energy_denom: str = "kWh"
    """Denomination of traded energy (amounts in Wh)."""
    currency_denom: str = "prc"
    """Settlement currency (park currency)."""
    matching: str = "max_utilisation"
    """Matching method: ``max_utilisation`` or ``highest_price``."""
    max_bids_per_round: int = 1000
    """Bound on one round's bids (and so on a clearing's work)."""
    max_amount_wh: int = 10**12
    """Largest amount in one bid or request, Wh."""
    max_price: int = 10**9
    """Largest price, currency units per kWh."""
    dr_cycle_ms: int = 3_600_000
    """Length of a DR cycle, ms; nodes unmatched in a cycle become inactive."""
    dr_max_phase_ms: int = 86_400_000
    """Longest commit or reveal phase, ms."""
    dr_max_bids: int = 200
    """Most commitments one DR request takes."""
    reputation_initial: int = 5000
    """Reputation of a new DR node (scale 0..reputation_max)."""
    reputation_max: int = 10000
    """Ceiling of reputation."""
    reputation_match_reward: int = 20
    """Reputation gained per match (a winning bid, or a request that found winners)."""
    reputation_inactive_penalty: int = 50
    """Reputation lost for a cycle without a match."""
    reputation_no_reveal_penalty: int = 200
    """Reputation lost for a commitment never revealed."""
    reputation_shortfall_penalty: int = 300
    """Reputation a DR user loses for an award it delivered nothing of (pro rata to the shortfall), and an
    aggregator for a request of which nothing was delivered (pro rata to its completion's shortfall)."""
    dr_completion_target_bp: int = 9500
    """An aggregator whose request was delivered to at least this share (basis points of the requested
    amount) gains ``reputation_match_reward``; below it, it loses the pro-rata shortfall penalty."""
    dr_import_min_score: int = 6000
    """Least imported score (basis points, 0..10000) with which a node joins DR at its reputation from another
    park (``dr.register`` with ``import``)."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, int) and (isinstance(v, bool) or v < 0):
                raise CodecError(f"market parameter {name} must be a non-negative integer", got=v)
        for name in ("round_ms", "dr_cycle_ms", "max_bids_per_round", "dr_max_bids", "max_amount_wh", "max_price"):
            if getattr(self, name) <= 0:
                raise CodecError(f"market parameter {name} must be positive", got=getattr(self, name))
        if self.matching not in MATCHING_METHODS:
            raise CodecError("unknown matching method", expected=MATCHING_METHODS, got=self.matching)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, obj: Any) -> MarketParams:
        if not isinstance(obj, dict) or set(obj) - set(cls.__dataclass_fields__):
            raise CodecError("malformed market parameters", expected=sorted(cls.__dataclass_fields__),
                             got=obj if not isinstance(obj, dict) else sorted(obj))
        try:
            return cls(**obj)
        except TypeError as exc:
            raise CodecError(f"malformed market parameters: {exc}") from exc


# -- stage 2: matching (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bid:
    """One order in a trading round."""

    id: int
    """Chain-wide bid number, in submission order (breaks price ties)."""
    owner: str
    """Account that submitted it."""
    kind: str
    """``buy`` or ``sell``."""
    amount_wh: int
    """Energy offered or wanted, Wh (> 0)."""
    price: int
    """Buyer's highest or seller's lowest price, currency units per kWh (> 0)."""
    escrow: int = 0
    """What was escrowed: Wh of energy for a sale, currency units for a purchase."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "kind": self.kind, "amount_wh": self.amount_wh,
                "price": self.price, "escrow": self.escrow}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Bid:
        return cls(int(obj["id"]), str(obj["owner"]), str(obj["kind"]), int(obj["amount_wh"]), int(obj["price"]),
                   int(obj["escrow"]))


@dataclass(frozen=True, slots=True)
class Fill:
    """A matched quantity between one buy and one sell."""

    buy_id: int
    """Matched buy bid."""
    sell_id: int
    """Matched sell bid."""
    buyer: str
    """Buying account."""
    seller: str
    """Selling account."""
    amount_wh: int
    """Energy traded, Wh."""
    price: int
    """Price of the fill, per kWh: midpoint of bid and ask, rounded down."""

    @property
    def payment(self) -> int:
        """Currency the buyer pays the seller."""
        return payment(self.amount_wh, self.price)

    def to_json(self) -> dict[str, Any]:
        return {"buy_id": self.buy_id, "sell_id": self.sell_id, "buyer": self.buyer, "seller": self.seller,
                "amount_wh": self.amount_wh, "price": self.price, "payment": self.payment}


def payment(amount_wh: int, price_per_kwh: int) -> int:
    """Currency for ``amount_wh`` at ``price_per_kwh``, rounded down."""
    return amount_wh * price_per_kwh // 1000


def _fill(b: Bid, s: Bid, q: int) -> Fill:
    return Fill(b.id, s.id, b.owner, s.owner, q, (b.price + s.price) // 2)


def _sides(bids: list[Bid]) -> tuple[list[Bid], list[Bid]]:
    buys = sorted((b for b in bids if b.kind == "buy"), key=lambda b: (-b.price, b.id))
    sells = [b for b in bids if b.kind == "sell"]
    return buys, sells


def match_highest_price(bids: list[Bid]) -> list[Fill]:
    """"Highest price first": the highest bid meets the lowest ask, partial fills, while bid >= ask."""
    buys, sells = _sides(bids)
    sells.sort(key=lambda b: (b.price, b.id))
    fills: list[Fill] = []
    rb = [b.amount_wh for b in buys]
    rs = [s.amount_wh for s in sells]
    i = j = 0
    while i < len(buys) and j < len(sells) and buys[i].price >= sells[j].price:
        q = min(rb[i], rs[j])
        fills.append(_fill(buys[i], sells[j], q))
        rb[i] -= q
        rs[j] -= q
        if rb[i] == 0:
            i += 1
        if rs[j] == 0:
            j += 1
    return fills


def match_max_utilisation(bids: list[Bid]) -> list[Fill]:
    """"Maximum utilisation": a price-compatible matching (bid >= ask in every fill) of greatest volume.

    A seller with ask a can trade with exactly the buyers bidding >= a, so the sets of partners are nested:
    the higher the ask, the fewer the partners. Serving sellers from the highest ask down, each from the
    highest remaining bids, never takes a partner a later (lower-ask) seller needed more than the current
    one does, since every buyer compatible with the current seller is compatible with all later ones: a
    greedy on nested sets that reaches the maximum flow (the tests check it against a max-flow solver).
    As every seller draws from the top of the bid list, exhausted buyers form a prefix: two pointers.
    """
    buys, sells = _sides(bids)
    sells.sort(key=lambda b: (-b.price, b.id))
    fills: list[Fill] = []
    rb = [b.amount_wh for b in buys]
    i = 0
    for s in sells:
        left = s.amount_wh
        k = i
        while left and k < len(buys) and buys[k].price >= s.price:
            q = min(left, rb[k])
            if q:
                fills.append(_fill(buys[k], s, q))
                rb[k] -= q
                left -= q
            if rb[k] == 0:
                k += 1
        while i < len(buys) and rb[i] == 0:
            i += 1
    return fills


def match_bids(bids: list[Bid], method: str) -> list[Fill]:
    if method == "highest_price":
        return match_highest_price(bids)
    if method == "max_utilisation":
        return match_max_utilisation(bids)
    raise CodecError("unknown matching method", expected=MATCHING_METHODS, got=method)


# -- stage 1: demand submission --------------------------------------------------------------------


def _round_path(r: int) -> bytes:
    return f"market/round/{r}".encode()


_OPEN_ROUNDS = b"market/open_rounds"
_NEXT_BID = b"market/next_bid_id"


def _bounded_int(tx: Tx, name: str, lo: int, hi: int) -> int:
    v: int = arg(tx, name, int)
    if not lo <= v <= hi:
        raise CodecError(f"argument {name!r} of {tx.op} out of range", expected=f"{lo}..{hi}", got=v)
    return v


def op_submit_bid(params: MarketParams) -> OpHandler:
    """``market.submit_bid {kind: buy|sell, amount_wh, price, round}``: escrow and queue a bid for ``round``
    (the current round, or up to ``max_rounds_ahead`` later)."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        kind = arg(tx, "kind", str)
        if kind not in ("buy", "sell"):
            raise CodecError("kind must be buy or sell", got=kind)
        amount = _bounded_int(tx, "amount_wh", 1, params.max_amount_wh)
        price = _bounded_int(tx, "price", 1, params.max_price)
        current = ctx.timestamp_ms // params.round_ms
        r = _bounded_int(tx, "round", current, current + params.max_rounds_ahead)
        bids = state.get_json(_round_path(r)) or []
        if len(bids) >= params.max_bids_per_round:
            raise ProtocolError("trading round full", expected=f"< {params.max_bids_per_round} bids", got=len(bids))
        if kind == "sell":
            denom, escrow = params.energy_denom, amount
        else:
            denom, escrow = params.currency_denom, payment(amount, price)
            if escrow == 0:
                raise CodecError("bid too small: it would pay nothing", expected=">= 1 currency unit",
                                 got=(amount, price))
        state.sub_balance(tx.sender, denom, escrow)
        state.add_balance(MARKET_ACCOUNT, denom, escrow)
        bid_id = state.get_int(_NEXT_BID) + 1
        state.set_int(_NEXT_BID, bid_id)
        bid = Bid(bid_id, tx.sender, kind, amount, price, escrow)
        state.set_json(_round_path(r), [*bids, bid.to_json()])
        open_rounds = state.get_json(_OPEN_ROUNDS) or []
        if r not in open_rounds:
            state.set_json(_OPEN_ROUNDS, sorted([*open_rounds, r]))
        return [{"type": "bid_submitted", "round": r, **bid.to_json()}]

    return handler


# -- stages 2 and 3: clearing and execution --------------------------------------------------------


def clear_round(state: ChainState, params: MarketParams, r: int, height: int) -> list[dict[str, Any]]:
    """Match round ``r`` and settle it out of escrow: fills, then refunds. Conserves every denomination."""
    bids = [Bid.from_json(b) for b in state.get_json(_round_path(r)) or []]
    fills = match_bids(bids, params.matching)
    spent: dict[int, int] = {b.id: 0 for b in bids}
    e, c = params.energy_denom, params.currency_denom
    for f in fills:
        state.sub_balance(MARKET_ACCOUNT, e, f.amount_wh)
        state.add_balance(f.buyer, e, f.amount_wh)
        pay = f.payment
        if pay:
            state.sub_balance(MARKET_ACCOUNT, c, pay)
            state.add_balance(f.seller, c, pay)
        spent[f.sell_id] += f.amount_wh
        spent[f.buy_id] += pay
    refunds = []
    for b in bids:
        back = b.escrow - spent[b.id]
        if back:
            denom = e if b.kind == "sell" else c
            state.sub_balance(MARKET_ACCOUNT, denom, back)
            state.add_balance(b.owner, denom, back)
            refunds.append({"bid": b.id, "owner": b.owner, "denom": denom, "amount": back})
    volume = sum(f.amount_wh for f in fills)
    state.set_json(f"market/result/{r}".encode(), {
        "round": r, "method": params.matching, "height": height, "volume_wh": volume,
        "fills": [f.to_json() for f in fills], "bids": len(bids)})
    state.delete(_round_path(r))
    return [{"type": "round_cleared", "round": r, "method": params.matching, "volume_wh": volume,
             "fills": [f.to_json() for f in fills], "refunds": refunds}]


def market_hook(params: MarketParams) -> BlockHook:
    """Begin-block hook: clear every open round that ended at or before the block's time."""

    def hook(state: ChainState, ctx: BlockContext) -> list[dict[str, Any]]:
        open_rounds: list[int] = state.get_json(_OPEN_ROUNDS) or []
        due = [r for r in open_rounds if (r + 1) * params.round_ms <= ctx.timestamp_ms]
        if not due:
            return []
        events: list[dict[str, Any]] = []
        for r in due:
            events += clear_round(state, params, r, ctx.height)
        rest = [r for r in open_rounds if r not in due]
        if rest:
            state.set_json(_OPEN_ROUNDS, rest)
        else:
            state.delete(_OPEN_ROUNDS)
        return events

    return hook


# -- demand response (docs/research.md#seed-002) --------------------------------------------------------------------


def reputation_path(subject: str) -> bytes:
    """``reputation/<subject>``: a DR node's reputation, in the form the bridge attests."""
    return f"reputation/{subject}".encode()


_DR_NODES = b"dr/nodes"
_DR_OPEN = b"dr/open"
_DR_NEXT = b"dr/next_request_id"
_DR_CYCLE = b"dr/cycle"
_DR_DELIVERY_OPEN = b"dr/delivery_open"


def _request_path(rid: int) -> bytes:
    return f"dr/request/{rid}".encode()


def _result_path(rid: int) -> bytes:
    return f"dr/result/{rid}".encode()


def _terms_path(aggregator: str) -> bytes:
    return f"dr/terms/{aggregator}".encode()


def _members_path(aggregator: str) -> bytes:
    return f"dr/members/{aggregator}".encode()


def _member_path(user: str) -> bytes:
    return f"dr/member/{user}".encode()


def dr_terms(state: ChainState, params: MarketParams, aggregator: str) -> dict[str, int]:
    """An aggregator's terms for users joining it: ``{min_user_reputation, max_users}`` (defaults 0 and
    ``dr_max_bids``)."""
    terms = state.get_json(_terms_path(aggregator))
    return dict(terms) if isinstance(terms, dict) else {"min_user_reputation": 0, "max_users": params.dr_max_bids}


def dr_members(state: ChainState, aggregator: str) -> list[str]:
    """Users that joined ``aggregator`` in the current DR cycle."""
    return list(state.get_json(_members_path(aggregator)) or [])


def dr_commitment(request_id: int, bidder: str, amount_wh: int, price: int, salt: str) -> str:
    """The sealed bid a user commits to: ``sha256(tag || canonical_json(bid))`` in hex. The bidder's name
    is inside, so nobody can copy another's commitment and reveal it as their own."""
    body = {"request_id": request_id, "bidder": bidder, "amount_wh": amount_wh, "price": price, "salt": salt}
    return hashlib.sha256(DR_BID_TAG + canonical_json(body)).hexdigest()


def _reputation(state: ChainState, name: str) -> dict[str, Any]:
    rec = state.get_json(reputation_path(name))
    if not isinstance(rec, dict):
        raise AuthorizationError("not a registered DR node", got=name)
    return rec


def _set_reputation(state: ChainState, params: MarketParams, rec: dict[str, Any], delta: int, height: int,
                    name: str) -> None:
    rec["score"] = max(0, min(params.reputation_max, rec["score"] + delta))
    rec["height"] = height
    state.set_json(reputation_path(name), rec)


def credit_ranking(state: ChainState) -> list[dict[str, Any]]:
    """DR nodes by reputation, highest first (ties by name): docs/research.md#seed-002's credit ranking list."""
    out = []
    for name in state.get_json(_DR_NODES) or []:
        rec = state.get_json(reputation_path(name))
        out.append({"name": name, "score": rec["score"], "role": rec["role"], "active": rec["active"]})
    out.sort(key=lambda r: (-r["score"], r["name"]))
    return out


def op_dr_register(params: MarketParams) -> OpHandler:
    """``dr.register {role: user|aggregator, import?: {src_chain, subject, model}}``: join demand response
    with the initial reputation, or with the imported score the caller holds if it reaches
    ``dr_import_min_score`` (:class:`~protocol.errors.ReputationInsufficientError` otherwise)."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        role = arg(tx, "role", str)
        if role not in DR_MODELS:
            raise CodecError("role must be user or aggregator", got=role)
        if state.get(reputation_path(tx.sender)) is not None:
            raise ProtocolError("already a DR node", got=tx.sender)
        rec: dict[str, Any] = {"score": params.reputation_initial, "model": DR_MODELS[role], "height": ctx.height,
                               "role": role, "active": True}
        if "import" in tx.args:
            src, subject, model = parse_import_ref(tx.args["import"], "argument 'import' of dr.register")
            held = held_reputation(state, tx.sender, src, subject, model, params.dr_import_min_score)
            rec["score"] = min(params.reputation_max, int(held["score"]) * params.reputation_max // SCORE_MAX)
            rec["imported_from"] = {"src_chain": src, "subject": subject, "model": model, "score": held["score"],
                                    "source_height": held["source_height"]}
        state.set_json(reputation_path(tx.sender), rec)
        state.set_json(_DR_NODES, sorted([*(state.get_json(_DR_NODES) or []), tx.sender]))
        return [{"type": "dr_registered", "node": tx.sender, "role": role, "score": rec["score"],
                 "imported_from": rec.get("imported_from")}]

    return handler


def op_dr_set_terms(params: MarketParams) -> OpHandler:
    """``dr.set_terms {min_user_reputation, max_users}`` (aggregators): whom the aggregator takes as members: users
    at or above a reputation, at most ``max_users`` a cycle (its side of the two-way selection)."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        rec = _reputation(state, tx.sender)
        if rec["role"] != "aggregator":
            raise AuthorizationError("only aggregators set membership terms", got=tx.sender)
        terms = {"min_user_reputation": _bounded_int(tx, "min_user_reputation", 0, params.reputation_max),
                 "max_users": _bounded_int(tx, "max_users", 1, params.dr_max_bids)}
        state.set_json(_terms_path(tx.sender), terms)
        return [{"type": "dr_terms", "aggregator": tx.sender, **terms}]

    return handler


def op_dr_join(params: MarketParams) -> OpHandler:
    """``dr.join {aggregator}`` (users): become the aggregator's member for the current DR cycle (the user's side
    of the two-way selection, chosen from :func:`credit_ranking`). Refused below the aggregator's
    ``min_user_reputation`` or when it is full; one aggregator per user and cycle. Memberships end with the
    cycle, so both sides choose again by the reputations the cycle produced."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        rec = _reputation(state, tx.sender)
        aggregator = arg(tx, "aggregator", str)
        if rec["role"] != "user":
            raise AuthorizationError("only users join aggregators", got=tx.sender)
        agg = state.get_json(reputation_path(aggregator))
        if not isinstance(agg, dict) or agg["role"] != "aggregator":
            raise ProtocolError("not a registered aggregator", got=aggregator)
        current = state.get_json(_member_path(tx.sender))
        if current is not None:
            raise ReplayError("already a member of an aggregator this DR cycle", got=current)
        terms = dr_terms(state, params, aggregator)
        if rec["score"] < terms["min_user_reputation"]:
            raise AuthorizationError("reputation below the aggregator's terms",
                                     expected=f">= {terms['min_user_reputation']}", got=rec["score"])
        members = dr_members(state, aggregator)
        if len(members) >= terms["max_users"]:
            raise ProtocolError("aggregator full this cycle", expected=f"< {terms['max_users']} members",
                                got=len(members))
        state.set_json(_members_path(aggregator), sorted([*members, tx.sender]))
        state.set_json(_member_path(tx.sender), aggregator)
        return [{"type": "dr_joined", "user": tx.sender, "aggregator": aggregator}]

    return handler


def op_dr_request(params: MarketParams) -> OpHandler:
    """``dr.request {amount_wh, max_price, commit_ms, reveal_ms, min_reputation?, deliver_ms?, members_only?}``
    (aggregators): ask for ``amount_wh`` of load reduction at most ``max_price`` per kWh; escrows
    ``amount_wh * max_price // 1000``. ``members_only``: only the aggregator's members this cycle may bid."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        rec = _reputation(state, tx.sender)
        if rec["role"] != "aggregator":
            raise AuthorizationError("only aggregators publish DR requests", got=tx.sender)
        amount = _bounded_int(tx, "amount_wh", 1, params.max_amount_wh)
        max_price = _bounded_int(tx, "max_price", 1, params.max_price)
        commit_ms = _bounded_int(tx, "commit_ms", 1, params.dr_max_phase_ms)
        reveal_ms = _bounded_int(tx, "reveal_ms", 1, params.dr_max_phase_ms)
        members_only = tx.args.get("members_only", False)
        if not isinstance(members_only, bool):
            raise CodecError("members_only must be a boolean", got=members_only)
        deliver_ms = tx.args.get("deliver_ms")
        if deliver_ms is not None:
            deliver_ms = _bounded_int(tx, "deliver_ms", 1, params.dr_max_phase_ms)
        min_rep = tx.args.get("min_reputation", 0)
        if isinstance(min_rep, bool) or not isinstance(min_rep, int) or not 0 <= min_rep <= params.reputation_max:
            raise CodecError("min_reputation out of range", expected=f"0..{params.reputation_max}", got=min_rep)
        budget = payment(amount, max_price)
        if budget == 0:
            raise CodecError("request too small: its budget would be 0", got=(amount, max_price))
        state.sub_balance(tx.sender, params.currency_denom, budget)
        state.add_balance(DR_ACCOUNT, params.currency_denom, budget)
        rid = state.get_int(_DR_NEXT) + 1
        state.set_int(_DR_NEXT, rid)
        req = {"id": rid, "aggregator": tx.sender, "amount_wh": amount, "max_price": max_price, "budget": budget,
               "commit_end_ms": ctx.timestamp_ms + commit_ms, "reveal_end_ms": ctx.timestamp_ms + commit_ms + reveal_ms,
               "min_reputation": min_rep, "commits": {}, "reveals": {}}
        if deliver_ms is not None:
            req["deliver_ms"] = deliver_ms
        if members_only:
            req["members_only"] = True
        state.set_json(_request_path(rid), req)
        state.set_json(_DR_OPEN, sorted([*(state.get_json(_DR_OPEN) or []), [req["reveal_end_ms"], rid]]))
        return [{"type": "dr_request", "id": rid, "aggregator": tx.sender, "amount_wh": amount,
                 "max_price": max_price, "commit_end_ms": req["commit_end_ms"], "reveal_end_ms": req["reveal_end_ms"]}]

    return handler


def _open_request(state: ChainState, tx: Tx) -> dict[str, Any]:
    rid = arg(tx, "request_id", int)
    req = state.get_json(_request_path(rid))
    if req is None:
        raise ProtocolError("no open DR request with that id", got=rid)
    return dict(req)


def op_dr_commit(params: MarketParams) -> OpHandler:
    """``dr.commit {request_id, commitment}`` (users, during the commit phase): a sealed bid,
    ``commitment = dr_commitment(request_id, sender, amount_wh, price, salt)``."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        rec = _reputation(state, tx.sender)
        req = _open_request(state, tx)
        commitment = arg(tx, "commitment", str)
        if len(commitment) != 64 or any(ch not in "0123456789abcdef" for ch in commitment):
            raise CodecError("commitment is 32 bytes of lowercase hex", got=commitment)
        if rec["role"] != "user":
            raise AuthorizationError("only users bid on DR requests", got=tx.sender)
        if ctx.timestamp_ms >= req["commit_end_ms"]:
            raise ProtocolError("commit phase is over", expected=f"< {req['commit_end_ms']}", got=ctx.timestamp_ms)
        if rec["score"] < req["min_reputation"]:
            raise AuthorizationError("reputation below the request's floor", expected=f">= {req['min_reputation']}",
                                     got=rec["score"])
        if req.get("members_only") and state.get_json(_member_path(tx.sender)) != req["aggregator"]:
            raise AuthorizationError("the request is for the aggregator's members this cycle",
                                     expected=req["aggregator"], got=state.get_json(_member_path(tx.sender)))
        if tx.sender in req["commits"]:
            raise ReplayError("already committed to this request", got=tx.sender)
        if len(req["commits"]) >= params.dr_max_bids:
            raise ProtocolError("DR request full", expected=f"< {params.dr_max_bids} bids", got=len(req["commits"]))
        req["commits"] = {**req["commits"], tx.sender: commitment}
        state.set_json(_request_path(req["id"]), req)
        return [{"type": "dr_commit", "id": req["id"], "bidder": tx.sender}]

    return handler


def op_dr_reveal(params: MarketParams) -> OpHandler:
    """``dr.reveal {request_id, amount_wh, price, salt}`` (during the reveal phase): open a sealed bid."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        req = _open_request(state, tx)
        amount = _bounded_int(tx, "amount_wh", 1, params.max_amount_wh)
        price = _bounded_int(tx, "price", 1, params.max_price)
        salt = arg(tx, "salt", str)
        if not req["commit_end_ms"] <= ctx.timestamp_ms < req["reveal_end_ms"]:
            raise ProtocolError("not in the reveal phase", expected=f"{req['commit_end_ms']}..{req['reveal_end_ms']}",
                                got=ctx.timestamp_ms)
        commitment = req["commits"].get(tx.sender)
        if commitment is None:
            raise ProtocolError("no commitment to reveal", got=tx.sender)
        if tx.sender in req["reveals"]:
            raise ReplayError("bid already revealed", got=tx.sender)
        if dr_commitment(req["id"], tx.sender, amount, price, salt) != commitment:
            raise ProtocolError("revealed bid does not match the commitment", expected=commitment)
        if price > req["max_price"]:
            raise ProtocolError("bid above the request's price cap", expected=f"<= {req['max_price']}", got=price)
        req["reveals"] = {**req["reveals"], tx.sender: {"amount_wh": amount, "price": price}}
        state.set_json(_request_path(req["id"]), req)
        return [{"type": "dr_reveal", "id": req["id"], "bidder": tx.sender, "amount_wh": amount, "price": price}]

    return handler


def settle_request(state: ChainState, params: MarketParams, req: dict[str, Any], height: int) -> list[dict[str, Any]]:
    """First-price sealed auction: cheapest offers win (ties to higher reputation, then name), each paid its
    own price for what it is awarded; the unspent budget returns to the aggregator. With a delivery window the
    awards' payments stay in escrow until :func:`settle_delivery`, and reputation waits for it too."""
    offers = []
    for bidder, bid in req["reveals"].items():
        rep = state.get_json(reputation_path(bidder))["score"]
        offers.append((bid["price"], -rep, bidder, bid["amount_wh"]))
    offers.sort()
    remaining = req["amount_wh"]
    awards = []
    awarded = 0
    c = params.currency_denom
    deferred = "deliver_ms" in req
    for price, _, bidder, amount in offers:
        if remaining == 0:
            break
        q = min(amount, remaining)
        remaining -= q
        pay = payment(q, price)
        if pay and not deferred:
            state.sub_balance(DR_ACCOUNT, c, pay)
            state.add_balance(bidder, c, pay)
        awarded += pay
        awards.append({"bidder": bidder, "amount_wh": q, "price": price, "payment": pay})
    refund = req["budget"] - awarded
    if refund:
        state.sub_balance(DR_ACCOUNT, c, refund)
        state.add_balance(req["aggregator"], c, refund)
    cycle = state.get_json(_DR_CYCLE)
    matched = set(cycle["matched"])
    winners = [a["bidder"] for a in awards]
    if winners:
        winners.append(req["aggregator"])
    for name in winners:
        matched.add(name)
        if not deferred:
            _set_reputation(state, params, state.get_json(reputation_path(name)), params.reputation_match_reward,
                            height, name)
    for bidder in sorted(set(req["commits"]) - set(req["reveals"])):
        _set_reputation(state, params, state.get_json(reputation_path(bidder)), -params.reputation_no_reveal_penalty,
                        height, bidder)
    state.set_json(_DR_CYCLE, {**cycle, "matched": sorted(matched)})
    result: dict[str, Any] = {"id": req["id"], "awards": awards, "refund": refund, "unfilled_wh": remaining,
                              "height": height}
    if deferred:
        end = req["reveal_end_ms"] + req["deliver_ms"]
        result.update(aggregator=req["aggregator"], amount_wh=req["amount_wh"], deliver_end_ms=end,
                      status="awaiting_delivery")
        state.set_json(_DR_DELIVERY_OPEN, sorted([*(state.get_json(_DR_DELIVERY_OPEN) or []), [end, req["id"]]]))
    state.set_json(_result_path(req["id"]), result)
    state.delete(_request_path(req["id"]))
    return [{"type": "dr_settled", "id": req["id"], "aggregator": req["aggregator"], "awards": awards,
             "refund": refund, "unfilled_wh": remaining, **({"deliver_end_ms": result["deliver_end_ms"]}
                                                             if deferred else {})}]


def _shortfall_penalty(params: MarketParams, short: int, of: int) -> int:
    return -(params.reputation_shortfall_penalty * short // of) if of else -params.reputation_shortfall_penalty


def settle_delivery(state: ChainState, params: MarketParams, result: dict[str, Any], delivered: dict[str, int] | None,
                    height: int) -> list[dict[str, Any]]:
    """Pay a request's winners for what they delivered (``None``: the aggregator never reported, so in full), refund
    the rest of the escrow to the aggregator and update everyone's reputation by the delivery."""
    c = params.currency_denom
    aggregator = result["aggregator"]
    paid_out = []
    total = 0
    back = 0
    for a in result["awards"]:
        got = a["amount_wh"] if delivered is None else delivered[a["bidder"]]
        pay = payment(got, a["price"])
        if pay:
            state.sub_balance(DR_ACCOUNT, c, pay)
            state.add_balance(a["bidder"], c, pay)
        back += a["payment"] - pay
        total += got
        delta = (params.reputation_match_reward if got == a["amount_wh"]
                 else _shortfall_penalty(params, a["amount_wh"] - got, a["amount_wh"]))
        _set_reputation(state, params, state.get_json(reputation_path(a["bidder"])), delta, height, a["bidder"])
        paid_out.append({"bidder": a["bidder"], "delivered_wh": got, "payment": pay})
    if back:
        state.sub_balance(DR_ACCOUNT, c, back)
        state.add_balance(aggregator, c, back)
    asked = result["amount_wh"]
    completion_bp = total * 10_000 // asked
    if delivered is None:
        agg_delta = -params.reputation_no_reveal_penalty
    elif completion_bp >= params.dr_completion_target_bp:
        agg_delta = params.reputation_match_reward
    else:
        agg_delta = _shortfall_penalty(params, asked - total, asked)
    _set_reputation(state, params, state.get_json(reputation_path(aggregator)), agg_delta, height, aggregator)
    state.set_json(_result_path(result["id"]), {**result, "status": "delivered" if delivered is not None else
                                                "unreported", "delivered_wh": total, "completion_bp": completion_bp,
                                                "paid": paid_out, "returned": back, "settled_height": height})
    open_ids: list[list[int]] = state.get_json(_DR_DELIVERY_OPEN) or []
    rest = [e for e in open_ids if e[1] != result["id"]]
    if rest:
        state.set_json(_DR_DELIVERY_OPEN, rest)
    else:
        state.delete(_DR_DELIVERY_OPEN)
    return [{"type": "dr_delivery_settled", "id": result["id"], "aggregator": aggregator, "reported": delivered
             is not None, "delivered_wh": total, "requested_wh": asked, "completion_bp": completion_bp,
             "paid": paid_out, "returned": back}]


def op_dr_report_delivery(params: MarketParams) -> OpHandler:
    """``dr.report_delivery {request_id, delivered: {bidder: wh}}`` (the request's aggregator, within its delivery
    window): what each winner delivered, from 0 to its award; pays and settles the request once."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        rid = arg(tx, "request_id", int)
        delivered = arg(tx, "delivered", dict)
        result = state.get_json(_result_path(rid))
        if not isinstance(result, dict) or "status" not in result:
            raise ProtocolError("no DR request awaiting delivery with that id", got=rid)
        if result["aggregator"] != tx.sender:
            raise AuthorizationError("only the request's aggregator reports its delivery",
                                     expected=result["aggregator"], got=tx.sender)
        if result["status"] != "awaiting_delivery":
            raise ReplayError("DR request already settled", got=(rid, result["status"]))
        if ctx.timestamp_ms >= result["deliver_end_ms"]:
            raise ProtocolError("delivery window closed", expected=f"< {result['deliver_end_ms']}",
                                got=ctx.timestamp_ms)
        awards = {a["bidder"]: a["amount_wh"] for a in result["awards"]}
        if set(delivered) != set(awards):
            raise CodecError("delivered must name exactly the request's winners", expected=sorted(awards),
                             got=sorted(delivered)[:50])
        for bidder, wh in delivered.items():
            if isinstance(wh, bool) or not isinstance(wh, int) or not 0 <= wh <= awards[bidder]:
                raise CodecError("a delivery is 0..the award, Wh", expected=f"0..{awards[bidder]}", got=(bidder, wh))
        return settle_delivery(state, params, result, delivered, ctx.height)

    return handler


def close_cycle(state: ChainState, params: MarketParams, new_index: int, height: int) -> list[dict[str, Any]]:
    """End the stored DR cycle: unmatched nodes become inactive and lose reputation; matched ones are active."""
    cycle = state.get_json(_DR_CYCLE)
    matched = set(cycle["matched"])
    inactive = []
    for name in state.get_json(_DR_NODES) or []:
        rec = state.get_json(reputation_path(name))
        if name in matched:
            rec["active"] = True
            delta = 0
        else:
            rec["active"] = False
            delta = -params.reputation_inactive_penalty
            inactive.append(name)
        _set_reputation(state, params, rec, delta, height, name)
        state.delete(_member_path(name))
        state.delete(_members_path(name))
    state.set_json(_DR_CYCLE, {"index": new_index, "matched": []})
    return [{"type": "dr_cycle_closed", "cycle": cycle["index"], "inactive": inactive}]


def dr_hook(params: MarketParams) -> BlockHook:
    """Begin-block hook: close a finished DR cycle, then settle requests whose reveal phase ended."""

    def hook(state: ChainState, ctx: BlockContext) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = ctx.timestamp_ms // params.dr_cycle_ms
        cycle = state.get_json(_DR_CYCLE)
        if cycle is None:
            state.set_json(_DR_CYCLE, {"index": index, "matched": []})
        elif index > cycle["index"]:
            events += close_cycle(state, params, index, ctx.height)
        open_ids: list[list[int]] = state.get_json(_DR_OPEN) or []
        due = [rid for end, rid in open_ids if end <= ctx.timestamp_ms]
        for rid in due:
            events += settle_request(state, params, state.get_json(_request_path(rid)), ctx.height)
        if due:
            rest = [e for e in open_ids if e[1] not in due]
            if rest:
                state.set_json(_DR_OPEN, rest)
            else:
                state.delete(_DR_OPEN)
        for end, rid in state.get_json(_DR_DELIVERY_OPEN) or []:
            if end <= ctx.timestamp_ms:
                events += settle_delivery(state, params, state.get_json(_result_path(rid)), None, ctx.height)
        return events

    return hook


def register_market_ops(app: Any, params: MarketParams) -> None:
    """Register the market and DR ops and their begin-block hooks on an :class:`~chains.common.tx.App`."""
    app.register("market.submit_bid", op_submit_bid(params))
    app.register("dr.register", op_dr_register(params))
    app.register("dr.request", op_dr_request(params))
    app.register("dr.commit", op_dr_commit(params))
    app.register("dr.reveal", op_dr_reveal(params))
    app.register("dr.report_delivery", op_dr_report_delivery(params))
    app.register("dr.set_terms", op_dr_set_terms(params))
    app.register("dr.join", op_dr_join(params))
    app.begin_block_hooks.append(market_hook(params))
    app.begin_block_hooks.append(dr_hook(params))
