"""The Fabric park's market (docs/research.md#seed-004; chains/fabric/SPEC.md §F1): certificate-based access,
power-consumption agreements, bilateral contracts whose terms stay with the parties (Fabric private data), and the
two-stage allocation of charging rights under a transformer's capacity margin.

Every function is a chaincode function ``market.<name>`` taking one JSON object (the contract dispatches them,
:data:`FUNCTIONS`); submit functions return the list of events, queries a JSON object. The rules run over the same
:class:`~chains.common.state.KVState` as the bridge (the in-memory ledger of the unit tests and the peer's ledger
run one code); the private-data and transient calls go to the stub (:class:`MarketCall`). Nothing here reads the
chaincode clock into state: the clock only decides (a round's deadlines), so two organisations compute one write
set.

Access (§F1.1)
--------------

Only identities the park's **regulator** certified may trade. The regulator is the park operator
(:func:`~chains.fabric.chaincode.assets.require_operator`: an ``OperatorMSP`` identity, the genesis
``rights_operator`` when one is named): it certifies an account with a role (``market.certify``), optionally on
the reputation another park attested for it (imported, :mod:`chains.fabric.chaincode.assets`), and revokes it
(``market.revoke``). A trading function reads, in order: the creator's certification record (none:
``market.uncertified``), its revocation (``market.revoked``), the ``market.role`` attribute of the creator's
X.509 certificate (Fabric CA's extension, :func:`~chains.fabric.chaincode.identity.certificate_attributes`;
absent, different from the certified role, or not a role the function takes: ``market.attribute``). Roles:
:data:`ROLES`.

Money
-----

Payments are in the market's currency (genesis ``market.currency``; default the first native denom), Wh-style
integer units. Whatever the market holds is in the balance of :data:`ESCROW_ACCOUNT`, and every open record names
its share (``escrow``): the sum of the shares equals that balance after every call (the unit tests check it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from chains.common.bridge import BridgeParams, load_params
from chains.common.rights import right_path
from chains.common.state import KVState, canonical_json
from chains.common.tx import account_path
from chains.fabric.chaincode import assets
from chains.fabric.chaincode.identity import certificate_attributes, check_account_id, creator_account
from chains.fabric.chaincode.ledger import StubState
from protocol.codec import MAX_STRING
from protocol.errors import (
    CapacityExceededError,
    CodecError,
    MarketAttributeError,
    MarketBidError,
    MarketPhaseError,
    MarketRevokedError,
    MarketSettledError,
    MarketTermsError,
    MarketUncertifiedError,
    MarketUnknownError,
    ReputationInsufficientError,
    RoundClosedError,
)
from protocol.types import UINT64_MAX, check_id

__all__ = [
    "BANDS",
    "ESCROW_ACCOUNT",
    "FUNCTIONS",
    "MAX_PRIVATE_BYTES",
    "ROLES",
    "MarketCall",
    "MarketFunction",
    "PrivateStub",
    "implicit_collection",
    "market_escrow_total",
    "offer_price",
    "plan_cost",
    "terms_digest",
    "water_fill",
]

ROLES = ("user", "sales", "trader", "station")
"""``market.role`` values: a small or micro user (agreements), a power-sales company (plans, contracts), a large user
or distributed generator (contracts), a charging station operator (charging rights)."""
BANDS = ("peak", "flat", "valley")
"""Time-of-use bands of a plan's prices and a user's load profile."""
WILLINGNESS = ("strong", "weak")
ESCROW_ACCOUNT = "@market"
"""The balance that holds what the market escrows (not an account anyone signs for)."""
ROLE_ATTR = "market.role"
MAX_PRIVATE_BYTES = 4096
"""Largest private terms document."""
MAX_PRICE = 10**12
"""Largest price (currency units per kWh or per kW of a slot)."""
MAX_KW = 10**9

Event = dict[str, Any]


class PrivateStub(Protocol):
    """What the market needs of the stub beyond :class:`~chains.fabric.chaincode.ledger.Stub`: transient data and
    private data collections (Fabric's ``GetTransient``, ``PutPrivateData``, ``GetPrivateData``,
    ``GetPrivateDataHash``)."""

    def get_creator(self) -> tuple[str, bytes]: ...

    def get_transient(self) -> dict[str, bytes]: ...

    def put_private_data(self, collection: str, key: str, value: bytes) -> None: ...

    def get_private_data(self, collection: str, key: str) -> bytes: ...

    def get_private_data_hash(self, collection: str, key: str) -> bytes: ...


def implicit_collection(msp_id: str) -> str:
    """Fabric's implicit private data collection of one organisation (no collection config needed)."""
    return f"_implicit_org_{msp_id}"


@dataclass
class MarketCall:
    """One market invocation: what the contract hands a market function."""

    stub: PrivateStub
    state: StubState
    now_ms: int
    args: dict[str, Any]
    params: BridgeParams
    operator_msp: str
    events: list[Event] = field(default_factory=list)
    private_writes: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(collection, key, value)``, handed to the stub only when the call succeeds (contract)."""

    def sender(self) -> str:
        return creator_account(self.stub.get_creator())

    def msp(self) -> str:
        return self.stub.get_creator()[0]


@dataclass(frozen=True, slots=True)
class MarketFunction:
    handler: Callable[[MarketCall], Any]
    submit: bool
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


# --- keys ---------------------------------------------------------------------------------------------------------


def _cert_key(account: str) -> bytes:
    return f"market/certs/{account}".encode()


def _plan_key(plan_id: str) -> bytes:
    return f"market/plans/{plan_id}".encode()


def _agreement_key(account: str) -> bytes:
    return f"market/agreements/{account}".encode()


def _contract_key(contract_id: str) -> bytes:
    return f"market/contracts/{contract_id}".encode()


def _round_key(round_id: str) -> bytes:
    return f"market/rounds/{round_id}".encode()


def _request_key(round_id: str, station: str) -> bytes:
    return f"market/requests/{round_id}/{station}".encode()


def _bid_key(round_id: str, station: str, side: str) -> bytes:
    return f"market/bids/{round_id}/{station}/{side}".encode()


def _offer_key(round_id: str, offer_id: str) -> bytes:
    return f"market/p2p/{round_id}/{offer_id}".encode()


def _right_id(round_id: str, station: str) -> str:
    return check_id("right", f"{round_id}.{station}")


# --- argument checks ----------------------------------------------------------------------------------------------


def _uint(args: dict[str, Any], name: str, maximum: int = UINT64_MAX, minimum: int = 0) -> int:
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum:
        raise CodecError(f"{name} must be an integer {minimum}..{maximum}", got=v)
    return v


def _ident(args: dict[str, Any], name: str) -> str:
    return check_id(name, args[name])


def _text(args: dict[str, Any], name: str) -> str:
    v = args[name]
    if not isinstance(v, str) or not v or len(v.encode()) > MAX_STRING:
        raise CodecError(f"{name} is a string of 1..{MAX_STRING} bytes", got=v)
    return v


def _currency(call: MarketCall) -> str:
    return assets.market_currency(call.state, call.params)


def _escrow_in(call: MarketCall, account: str, amount: int) -> None:
    if amount:
        call.state.sub_balance(account, _currency(call), amount)  # funds.insufficient
        call.state.add_balance(ESCROW_ACCOUNT, _currency(call), amount)


def _escrow_out(call: MarketCall, account: str, amount: int) -> None:
    if amount:
        call.state.sub_balance(ESCROW_ACCOUNT, _currency(call), amount)
        call.state.add_balance(account, _currency(call), amount)


def _pay(call: MarketCall, payer: str, payee: str, amount: int) -> None:
    if amount:
        call.state.sub_balance(payer, _currency(call), amount)
        call.state.add_balance(payee, _currency(call), amount)


def market_escrow_total(state: KVState) -> int:
    """What the open market records say is escrowed (buy bids, agreed contracts): equals the balance of
    :data:`ESCROW_ACCOUNT` in the market's currency."""
    total = 0
    for prefix in (b"market/bids/", b"market/contracts/"):
        for _, value in state.prefix_items(prefix):
            total += int(json.loads(value).get("escrow", 0))
    return total


# --- access -------------------------------------------------------------------------------------------------------


def require_access(call: MarketCall, roles: tuple[str, ...]) -> dict[str, Any]:
    """The creator's certification record if it may call a function taking ``roles`` (module docstring, Access)."""
    account = call.sender()
    rec = call.state.get_json(_cert_key(account))
    if rec is None:
        raise MarketUncertifiedError("identity not certified by the park's regulator", got=account)
    if rec.get("revoked"):
        raise MarketRevokedError("the regulator revoked this identity's certification", got=account)
    role = certificate_attributes(call.stub.get_creator()[1]).get(ROLE_ATTR)
    if role is None:
        raise MarketAttributeError(f"the certificate has no {ROLE_ATTR} attribute", expected=rec["role"], got=None)
    if role != rec["role"]:
        raise MarketAttributeError(f"the certificate's {ROLE_ATTR} is not the certified role", expected=rec["role"],
                                   got=role)
    if role not in roles:
        raise MarketAttributeError("this function is for other roles", expected=list(roles), got=role)
    return dict(rec)


def _require_regulator(call: MarketCall, what: str) -> None:
    assets.require_operator(call.msp(), call.sender(), call.params, call.operator_msp, what)


def _certify(call: MarketCall) -> list[Event]:
    _require_regulator(call, "market.certify")
    a = call.args
    account = check_account_id(a["account"])
    role = a["role"]
    if role not in ROLES:
        raise CodecError("unknown market role", expected=list(ROLES), got=role)
    if call.state.get(account_path(account)) is None:
        raise MarketUnknownError("certify a registered account", got=account)
    stations = a.get("stations", [])
    if not isinstance(stations, list) or len(stations) > 64 or (stations and role != "station"):
        raise CodecError("stations are a list of at most 64 names, for the station role", got=stations)
    stations = sorted({check_id("station", s) for s in stations})
    basis = None
    if "reputation" in a:
        r = a["reputation"]
        if not isinstance(r, dict) or set(r) != {"src_chain", "subject", "model"}:
            raise CodecError("reputation is {src_chain, subject, model}", got=r)
        src, subject, model = check_id("src_chain", r["src_chain"]), _text(r, "subject"), _text(r, "model")
        imported = call.state.get_json(assets.imported_reputation_path(src, subject, model))
        least = assets.market_config(call.state)["certify_min_score"]
        if imported is None:
            raise ReputationInsufficientError("no reputation imported for that subject and model",
                                              expected=f">= {least}", got=None)
        if int(imported["score"]) < least:
            raise ReputationInsufficientError("imported reputation below the park's minimum for certification",
                                              expected=f">= {least}", got=int(imported["score"]))
        basis = {"src_chain": src, "subject": subject, "model": model, "score": int(imported["score"]),
                 "source_height": int(imported["source_height"])}
    old = call.state.get_json(_cert_key(account))
    rec = {"role": role, "revoked": False, "stations": stations, "basis": basis,
           "revision": (int(old["revision"]) if old else 0) + 1}
    call.state.set_json(_cert_key(account), rec)
    return [{"type": "market_certified", "account": account, "role": role, "stations": stations,
             "revision": rec["revision"], "on_reputation": basis is not None}]


def _revoke(call: MarketCall) -> list[Event]:
    _require_regulator(call, "market.revoke")
    account = check_account_id(call.args["account"])
    rec = call.state.get_json(_cert_key(account))
    if rec is None:
        raise MarketUnknownError("no certification to revoke", got=account)
    if rec.get("revoked"):
        raise MarketSettledError("certification already revoked", got=account)
    call.state.set_json(_cert_key(account), {**rec, "revoked": True, "revision": int(rec["revision"]) + 1})
    return [{"type": "market_revoked", "account": account}]


def _certification(call: MarketCall) -> Any:
    account = check_account_id(call.args["account"])
    return {"account": account, "certification": call.state.get_json(_cert_key(account))}


# --- power-consumption agreements (§F1.2) --------------------------------------------------------------------------


def _prices(raw: Any, what: str) -> dict[str, int]:
    if not isinstance(raw, dict) or set(raw) != set(BANDS):
        raise CodecError(f"{what} has one integer per band", expected=list(BANDS), got=raw)
    return {b: _uint(raw, b, MAX_PRICE) for b in BANDS}


def plan_cost(plan: dict[str, Any], profile: dict[str, int]) -> int:
    """What a load profile (kWh per band) costs under a plan: its fixed fee plus price x energy per band."""
    return int(plan["fixed_fee"]) + sum(int(plan["prices"][b]) * int(profile[b]) for b in BANDS)


def _publish_plan(call: MarketCall) -> list[Event]:
    require_access(call, ("sales",))
    a = call.args
    plan_id = _ident(a, "plan_id")
    old = call.state.get_json(_plan_key(plan_id))
    company = call.sender()
    if old is not None and old["company"] != company:
        raise MarketBidError("the plan id is another company's", expected=old["company"], got=company)
    plan = {"company": company, "prices": _prices(a["prices"], "prices"), "fixed_fee": _uint(a, "fixed_fee",
                                                                                           MAX_PRICE)}
    call.state.set_json(_plan_key(plan_id), plan)
    return [{"type": "plan_published", "plan_id": plan_id, **plan}]


def _ranked_plans(call: MarketCall, profile: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for key, value in call.state.prefix_items(b"market/plans/"):
        plan = json.loads(value)
        company = call.state.get_json(_cert_key(plan["company"]))
        if company is None or company.get("revoked"):
            continue  # a company the regulator revoked offers nothing
        out.append({"plan_id": key.decode()[len("market/plans/"):], "cost": plan_cost(plan, profile), **plan})
    return sorted(out, key=lambda p: (p["cost"], p["plan_id"]))


def _quote(call: MarketCall) -> Any:
    profile = _prices(call.args["profile"], "profile")
    return {"plans": _ranked_plans(call, profile)}


def _choose_plan(call: MarketCall) -> list[Event]:
    """A small or micro user submits its load profile; the chaincode signs it up to the plan that costs it least
    (ties: the smaller plan id). The user's signed proposal is its signature of the agreement."""
    require_access(call, ("user",))
    profile = _prices(call.args["profile"], "profile")
    ranked = _ranked_plans(call, profile)
    if not ranked:
        raise MarketUnknownError("no plan published")
    best = ranked[0]
    user = call.sender()
    rec = {"plan_id": best["plan_id"], "company": best["company"], "prices": best["prices"],
           "fixed_fee": best["fixed_fee"], "profile": profile, "cost": best["cost"],
           "runner_up_cost": ranked[1]["cost"] if len(ranked) > 1 else None}
    call.state.set_json(_agreement_key(user), rec)
    return [{"type": "agreement_signed", "user": user, **rec}]


def _agreement(call: MarketCall) -> Any:
    account = check_account_id(call.args["account"])
    return {"account": account, "agreement": call.state.get_json(_agreement_key(account))}


# --- bilateral contracts with private terms (§F1.3) -----------------------------------------------------------------


def terms_digest(terms: bytes) -> str:
    """The public commitment to private terms: SHA-256 hex (the hash Fabric keeps of a private data value)."""
    return hashlib.sha256(terms).hexdigest()


def _transient_terms(call: MarketCall, contract_id: str) -> tuple[bytes, dict[str, Any]]:
    raw = call.stub.get_transient().get("terms")
    if not raw or len(raw) > MAX_PRIVATE_BYTES:
        raise CodecError(f"the terms travel as transient data 'terms' of 1..{MAX_PRIVATE_BYTES} bytes",
                         got=len(raw) if raw else 0)
    try:
        terms = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CodecError("terms are JSON", got=str(exc)[:80]) from exc
    if not isinstance(terms, dict) or set(terms) != {"contract_id", "seller", "buyer", "quantity_kwh", "price",
                                                     "salt"}:
        raise CodecError("terms are {contract_id, seller, buyer, quantity_kwh, price, salt}",
                         got=sorted(terms) if isinstance(terms, dict) else type(terms).__name__)
    if terms["contract_id"] != contract_id:
        raise MarketTermsError("the terms are another contract's", expected=contract_id, got=terms["contract_id"])
    check_account_id(terms["seller"], "seller")
    check_account_id(terms["buyer"], "buyer")
    if terms["seller"] == terms["buyer"]:
        raise CodecError("a contract has two parties", got=terms["seller"])
    _uint(terms, "quantity_kwh", MAX_KW, 1)
    _uint(terms, "price", MAX_PRICE)
    if not isinstance(terms["salt"], str) or not 16 <= len(terms["salt"]) <= 128:
        raise CodecError("salt is a string of 16..128 characters (so the hash cannot be guessed)",
                         got=len(terms["salt"]) if isinstance(terms["salt"], str) else terms["salt"])
    return bytes(raw), terms


def _put_private(call: MarketCall, msp: str, contract_id: str, raw: bytes) -> None:
    call.private_writes.append((implicit_collection(msp), _contract_key(contract_id).decode(), raw))


def _propose_contract(call: MarketCall) -> list[Event]:
    require_access(call, ("trader", "sales"))
    a = call.args
    contract_id = _ident(a, "contract_id")
    digest = a["terms_sha256"]
    if call.state.get(_contract_key(contract_id)) is not None:
        raise MarketSettledError("a contract with that id exists", got=contract_id)
    raw, terms = _transient_terms(call, contract_id)
    if terms_digest(raw) != digest:
        raise MarketTermsError("the transient terms do not hash to terms_sha256", expected=digest,
                               got=terms_digest(raw))
    me = call.sender()
    if me not in (terms["seller"], terms["buyer"]):
        raise MarketTermsError("the proposer is not a party to the terms", expected=[terms["seller"],
                                                                                   terms["buyer"]], got=me)
    other = terms["buyer"] if me == terms["seller"] else terms["seller"]
    cert = call.state.get_json(_cert_key(other))
    if cert is None or cert.get("revoked") or cert["role"] not in ("trader", "sales"):
        raise MarketUncertifiedError("the counterparty is not a certified trader or sales company", got=other)
    rec = {"seller": terms["seller"], "buyer": terms["buyer"], "terms_sha256": digest, "state": "proposed",
           "proposer": me, "escrow": 0}
    call.state.set_json(_contract_key(contract_id), rec)
    _put_private(call, call.msp(), contract_id, raw)
    # the event names the parties and the commitment only: price and quantity never reach the public ledger
    return [{"type": "contract_proposed", "contract_id": contract_id, "seller": rec["seller"],
             "buyer": rec["buyer"], "terms_sha256": digest}]


def _contract(call: MarketCall, contract_id: str) -> dict[str, Any]:
    rec = call.state.get_json(_contract_key(contract_id))
    if rec is None:
        raise MarketUnknownError("no such contract", got=contract_id)
    return dict(rec)


def _checked_terms(call: MarketCall, contract_id: str, rec: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    raw, terms = _transient_terms(call, contract_id)
    if terms_digest(raw) != rec["terms_sha256"]:
        raise MarketTermsError("the transient terms are not the committed ones", expected=rec["terms_sha256"],
                               got=terms_digest(raw))
    return raw, terms


def _accept_contract(call: MarketCall) -> list[Event]:
    """The counterparty accepts the same terms (offline negotiation, online transaction); the buyer's payment is
    escrowed (the proposal of the buyer, whichever party it is, commits it to the terms)."""
    require_access(call, ("trader", "sales"))
    contract_id = _ident(call.args, "contract_id")
    rec = _contract(call, contract_id)
    if rec["state"] != "proposed":
        raise MarketSettledError("contract already accepted", got=rec["state"])
    me = call.sender()
    if me == rec["proposer"] or me not in (rec["seller"], rec["buyer"]):
        raise MarketTermsError("only the counterparty accepts", expected=[p for p in (rec["seller"], rec["buyer"])
                                                                        if p != rec["proposer"]], got=me)
    raw, terms = _checked_terms(call, contract_id, rec)
    amount = int(terms["quantity_kwh"]) * int(terms["price"])
    _escrow_in(call, rec["buyer"], amount)
    call.state.set_json(_contract_key(contract_id), {**rec, "state": "agreed", "escrow": amount})
    _put_private(call, call.msp(), contract_id, raw)
    return [{"type": "contract_agreed", "contract_id": contract_id, "terms_sha256": rec["terms_sha256"]}]


def _settle_contract(call: MarketCall) -> list[Event]:
    """The buyer confirms delivery: the terms (transient) must hash to the public commitment, and so must the private
    data both parties' organisations hold (``GetPrivateDataHash``); the seller is paid for what was delivered (at
    most the contracted quantity), the buyer refunded the rest."""
    require_access(call, ("trader", "sales"))
    a = call.args
    contract_id = _ident(a, "contract_id")
    delivered = _uint(a, "delivered_kwh", MAX_KW)
    rec = _contract(call, contract_id)
    if rec["state"] == "settled":
        raise MarketSettledError("contract already settled", got=contract_id)
    if rec["state"] != "agreed":
        raise MarketPhaseError("contract not accepted yet", expected="agreed", got=rec["state"])
    if call.sender() != rec["buyer"]:
        raise MarketTermsError("the buyer confirms delivery", expected=rec["buyer"], got=call.sender())
    _, terms = _checked_terms(call, contract_id, rec)
    key = _contract_key(contract_id).decode()
    for party in (rec["seller"], rec["buyer"]):
        held = call.stub.get_private_data_hash(implicit_collection(party.split(":", 1)[0]), key)
        if held.hex() != rec["terms_sha256"]:
            raise MarketTermsError("a party's private data does not match the commitment",
                                   expected=rec["terms_sha256"], got=held.hex() or None)
    paid = min(delivered, int(terms["quantity_kwh"])) * int(terms["price"])
    _escrow_out(call, rec["seller"], paid)
    _escrow_out(call, rec["buyer"], int(rec["escrow"]) - paid)
    call.state.set_json(_contract_key(contract_id), {**rec, "state": "settled", "escrow": 0})
    return [{"type": "contract_settled", "contract_id": contract_id, "terms_sha256": rec["terms_sha256"]}]


def _contract_view(call: MarketCall) -> Any:
    contract_id = _ident(call.args, "contract_id")
    return {"contract_id": contract_id, "contract": call.state.get_json(_contract_key(contract_id))}


def _contract_terms(call: MarketCall) -> Any:
    """The private terms, for a party, from its own organisation's implicit collection (evaluate this query on a
    peer of that organisation: only its members hold the data)."""
    contract_id = _ident(call.args, "contract_id")
    rec = _contract(call, contract_id)
    me = call.sender()
    if me not in (rec["seller"], rec["buyer"]):
        raise MarketTermsError("the terms are the parties' only", expected=[rec["seller"], rec["buyer"]], got=me)
    raw = call.stub.get_private_data(implicit_collection(call.msp()), _contract_key(contract_id).decode())
    if not raw:
        raise MarketUnknownError("this peer holds no private terms for that contract", got=contract_id)
    if terms_digest(raw) != rec["terms_sha256"]:
        raise MarketTermsError("private data does not match the commitment", expected=rec["terms_sha256"])
    return {"contract_id": contract_id, "terms": json.loads(raw)}


# --- charging rights in two stages (§F1.4) --------------------------------------------------------------------------


def water_fill(margin_kw: int, demands: dict[str, int]) -> dict[str, int]:
    """Max-min fair integer allocation of ``margin_kw`` among ``demands`` (kW by station): no station gets more than
    it asked, and a station gets less than another only if it asked less or got all it asked (up to the last kW of
    rounding, which goes to the larger requests). The total never exceeds ``margin_kw``."""
    out: dict[str, int] = {}
    remaining = max(0, margin_kw)
    order = sorted(demands.items(), key=lambda kv: (kv[1], kv[0]))
    for i, (station, want) in enumerate(order):
        give = min(want, remaining // (len(order) - i))
        out[station] = give
        remaining -= give
    return out


def offer_price(willingness: str, flexibility_bp: int, value: int, reference: int) -> int:
    """The offer a station makes (the seed's rule of thumb, used by off-chain agents and the bench): a station
    with strong willingness bids towards its own value per kW, a weak one towards the reference price; load
    flexibility (basis points) discounts what it pays as a buyer, or asks as a seller, linearly by up to half."""
    base = value if willingness == "strong" else (value + reference) // 2
    return max(0, base - base * flexibility_bp // 20_000)


def _round(call: MarketCall, round_id: str) -> dict[str, Any]:
    rec = call.state.get_json(_round_key(round_id))
    if rec is None:
        raise MarketUnknownError("no such round", got=round_id)
    return dict(rec)


def _overlapping_load(state: KVState, transformer: str, start: int, end: int) -> int:
    return sum(int(b["power_kw"]) for b in assets.bookings(state, transformer)
               if int(b["slot_start_ms"]) < end and start < int(b["slot_end_ms"]))


def _open_round(call: MarketCall) -> list[Event]:
    _require_regulator(call, "market.open_round")
    a = call.args
    round_id = _ident(a, "round_id")
    transformer = _text(a, "transformer")
    times = [_uint(a, k) for k in ("requests_close_ms", "bids_close_ms", "slot_start_ms", "slot_end_ms")]
    if not (call.now_ms < times[0] <= times[1] <= times[2] < times[3]):
        raise CodecError("a round needs now < requests_close <= bids_close <= slot_start < slot_end",
                         got=[call.now_ms, *times])
    if call.state.get(_round_key(round_id)) is not None:
        raise MarketSettledError("a round with that id exists", got=round_id)
    if call.state.get_json(assets.transformer_path(transformer)) is None:
        raise MarketUnknownError("no such transformer", got=transformer)
    rec = {"transformer": transformer, "requests_close_ms": times[0], "bids_close_ms": times[1],
           "slot_start_ms": times[2], "slot_end_ms": times[3], "state": "requests"}
    call.state.set_json(_round_key(round_id), rec)
    return [{"type": "round_opened", "round_id": round_id, **rec}]


def _station_of(call: MarketCall, cert: dict[str, Any], rnd: dict[str, Any], station: str) -> None:
    if station not in cert.get("stations", []):
        raise MarketBidError("the station is not certified to the caller", expected=cert.get("stations"), got=station)
    rec = call.state.get_json(assets.station_path(station))
    if rec is None or rec.get("transformer") != rnd["transformer"]:
        raise MarketBidError("the station is not behind the round's transformer", expected=rnd["transformer"],
                             got=None if rec is None else rec.get("transformer"))


def _request(call: MarketCall) -> list[Event]:
    """Stage 1 input: a station's charging requirement for the round's slot, its willingness and flexibility."""
    cert = require_access(call, ("station",))
    a = call.args
    round_id, station = _ident(a, "round_id"), _ident(a, "station")
    rnd = _round(call, round_id)
    if call.now_ms >= rnd["requests_close_ms"]:
        raise RoundClosedError("the round's requests are closed", expected=f"< {rnd['requests_close_ms']}",
                               got=call.now_ms)
    _station_of(call, cert, rnd, station)
    power = _uint(a, "power_kw", MAX_KW, 1)
    capacity = int(call.state.get_json(assets.transformer_path(rnd["transformer"]))["capacity_kw"])
    if power > capacity:
        raise CapacityExceededError("a requirement above the transformer's capacity", expected=f"<= {capacity}",
                                    got=power)
    if a["willingness"] not in WILLINGNESS:
        raise CodecError("willingness is strong or weak", got=a["willingness"])
    flexibility = _uint(a, "flexibility_bp", 10_000)
    if call.state.get(_request_key(round_id, station)) is not None:
        raise MarketBidError("the station already requested in this round", got=station)
    rec = {"account": call.sender(), "power_kw": power, "willingness": a["willingness"],
           "flexibility_bp": flexibility, "allocated_kw": 0}
    call.state.set_json(_request_key(round_id, station), rec)
    return [{"type": "charging_requested", "round_id": round_id, "station": station, **rec}]


def _requests(call: MarketCall, round_id: str) -> dict[str, dict[str, Any]]:
    prefix = f"market/requests/{round_id}/".encode()
    return {k.decode()[len(prefix):]: json.loads(v) for k, v in call.state.prefix_items(prefix)}


def _allocate(call: MarketCall) -> list[Event]:
    """Stage 1: water-fill the transformer's margin over the slot (capacity minus every booking overlapping it)
    among the requests; issue each station its right (``<round>.<station>``), booked through admission."""
    _require_regulator(call, "market.allocate")
    round_id = _ident(call.args, "round_id")
    rnd = _round(call, round_id)
    if rnd["state"] != "requests":
        raise MarketSettledError("the round is already allocated", got=rnd["state"])
    if call.now_ms < rnd["requests_close_ms"]:
        raise MarketPhaseError("requests are still open", expected=f">= {rnd['requests_close_ms']}", got=call.now_ms)
    if call.now_ms >= rnd["slot_start_ms"]:
        raise RoundClosedError("the slot has started", expected=f"< {rnd['slot_start_ms']}", got=call.now_ms)
    transformer = rnd["transformer"]
    capacity = int(call.state.get_json(assets.transformer_path(transformer))["capacity_kw"])
    margin = capacity - _overlapping_load(call.state, transformer, rnd["slot_start_ms"], rnd["slot_end_ms"])
    reqs = _requests(call, round_id)
    shares = water_fill(margin, {s: int(r["power_kw"]) for s, r in reqs.items()})
    if sum(shares.values()) > max(0, margin):  # defence in depth: admission below refuses it too
        raise CapacityExceededError("allocation above the transformer's margin", expected=f"<= {margin}",
                                    got=sum(shares.values()))
    events: list[Event] = []
    for station, kw in sorted(shares.items()):
        req = reqs[station]
        call.state.set_json(_request_key(round_id, station), {**req, "allocated_kw": kw})
        if kw:
            events += assets.issue_right(call.state, call.params, _right_id(round_id, station), station,
                                         transformer, kw, rnd["slot_start_ms"], rnd["slot_end_ms"], req["account"],
                                         call.now_ms)
    call.state.set_json(_round_key(round_id), {**rnd, "state": "trading", "margin_kw": margin})
    return [{"type": "round_allocated", "round_id": round_id, "margin_kw": margin, "allocations": shares}, *events]


def _held(call: MarketCall, round_id: str, station: str) -> dict[str, Any] | None:
    rec = call.state.get_json(right_path(_right_id(round_id, station)))
    return dict(rec) if rec is not None else None


def _held_kw(call: MarketCall, round_id: str, station: str, owner: str) -> int:
    rec = _held(call, round_id, station)
    return int(rec["power_kw"]) if rec is not None and rec["owner"] == owner else 0


def _unmet_kw(call: MarketCall, round_id: str, station: str, account: str) -> int:
    """kW ``account`` may still buy for ``station``: its requirement in the round minus the station's right it
    holds; 0 without a request of its own, or when the station's right of the round is held by someone else (sent
    away, transferred, escrowed)."""
    req = call.state.get_json(_request_key(round_id, station))
    if req is None or req["account"] != account:
        return 0
    held = _held(call, round_id, station)
    if held is not None and held["owner"] != account:
        return 0
    return max(0, int(req["power_kw"]) - (int(held["power_kw"]) if held else 0))


def _committed_sell_kw(call: MarketCall, round_id: str, station: str) -> int:
    ask = call.state.get_json(_bid_key(round_id, station, "sell"))
    kw = int(ask["power_kw"]) if ask else 0
    for _, v in call.state.prefix_items(f"market/p2p/{round_id}/".encode()):
        offer = json.loads(v)
        if offer["station"] == station and offer["state"] == "open":
            kw += int(offer["power_kw"])
    return kw


def _trading_round(call: MarketCall, round_id: str, close_key: str) -> dict[str, Any]:
    rnd = _round(call, round_id)
    if rnd["state"] == "requests":
        raise MarketPhaseError("the round is not allocated yet", expected="trading", got=rnd["state"])
    if rnd["state"] != "trading" or call.now_ms >= rnd[close_key]:
        raise RoundClosedError("the round is closed for this", expected=f"< {rnd[close_key]}", got=call.now_ms)
    return rnd


def _bid(call: MarketCall) -> list[Event]:
    """Stage 2, double auction: a buy (escrowing ``power_kw x price``) of at most the station's unmet requirement,
    or a sell of at most the kW of its right not already offered. One open bid per station and side."""
    cert = require_access(call, ("station",))
    a = call.args
    round_id, station, side = _ident(a, "round_id"), _ident(a, "station"), a["side"]
    rnd = _trading_round(call, round_id, "bids_close_ms")
    _station_of(call, cert, rnd, station)
    if side not in ("buy", "sell"):
        raise CodecError("side is buy or sell", got=side)
    power, price = _uint(a, "power_kw", MAX_KW, 1), _uint(a, "price", MAX_PRICE)
    for either in ("buy", "sell"):
        if call.state.get(_bid_key(round_id, station, either)) is not None:
            raise MarketBidError("the station has an open bid in this round", got=f"{station}/{either}")
    me = call.sender()
    escrow = 0
    if side == "buy":
        unmet = _unmet_kw(call, round_id, station, me)
        if power > unmet:
            raise MarketBidError("a buy above the station's unmet requirement", expected=f"<= {unmet}", got=power)
        escrow = power * price
        _escrow_in(call, me, escrow)
    else:
        free = _held_kw(call, round_id, station, me) - _committed_sell_kw(call, round_id, station)
        if power > free:
            raise MarketBidError("a sell above the station's free right", expected=f"<= {free}", got=power)
    rec = {"account": me, "power_kw": power, "price": price, "escrow": escrow}
    call.state.set_json(_bid_key(round_id, station, side), rec)
    return [{"type": "bid_placed", "round_id": round_id, "station": station, "side": side, "power_kw": power,
             "price": price}]


def _move_kw(call: MarketCall, round_id: str, rnd: dict[str, Any], seller_station: str, buyer_station: str,
             buyer: str, kw: int) -> list[Event]:
    """Move ``kw`` of the seller station's right to the buyer station's right of the round: the seller's shrinks
    (or goes), the buyer's grows (or is issued through admission). Same transformer and slot, so the booked total
    never changes."""
    rid = _right_id(round_id, seller_station)
    rec = _held(call, round_id, seller_station)
    assert rec is not None and int(rec["power_kw"]) >= kw
    left = int(rec["power_kw"]) - kw
    events: list[Event] = []
    if left:
        assets.resize_right(call.state, rid, left, call.now_ms)
    else:
        assets.retire_right(call.state, rid, call.now_ms)
    bid_rid = _right_id(round_id, buyer_station)
    mine = _held(call, round_id, buyer_station)
    if mine is not None and mine["owner"] != buyer:  # _unmet_kw said 0: never reached
        raise MarketBidError("the buyer station's right is held by someone else", got=mine["owner"])
    if mine is not None:
        assets.resize_right(call.state, bid_rid, int(mine["power_kw"]) + kw, call.now_ms)
    else:
        events += assets.issue_right(call.state, call.params, bid_rid, buyer_station, rnd["transformer"], kw,
                                     rnd["slot_start_ms"], rnd["slot_end_ms"], buyer, call.now_ms)
    return events


def _bids(call: MarketCall, round_id: str, side: str) -> list[tuple[str, dict[str, Any]]]:
    prefix = f"market/bids/{round_id}/".encode()
    out = []
    for k, v in call.state.prefix_items(prefix):
        station, s = k.decode()[len(prefix):].split("/")
        if s == side:
            out.append((station, json.loads(v)))
    return out


def _clear(call: MarketCall) -> list[Event]:
    """Stage 2 clearing, once the bids close: buys by price descending, sells ascending (ties by station); each
    crossing pair trades ``min`` of their open kW (capped by the buyer's unmet requirement and the seller's right
    as they are now) at the midpoint price; the buyer's escrow pays the seller and the rest is refunded. Every bid
    is closed after it."""
    _require_regulator(call, "market.clear")
    round_id = _ident(call.args, "round_id")
    rnd = _round(call, round_id)
    if rnd["state"] == "cleared":
        raise MarketSettledError("the round is already cleared", got=round_id)
    if rnd["state"] != "trading":
        raise MarketPhaseError("the round is not allocated yet", expected="trading", got=rnd["state"])
    if call.now_ms < rnd["bids_close_ms"]:
        raise MarketPhaseError("bids are still open", expected=f">= {rnd['bids_close_ms']}", got=call.now_ms)
    if call.now_ms >= rnd["slot_start_ms"]:
        raise RoundClosedError("the slot has started", expected=f"< {rnd['slot_start_ms']}", got=call.now_ms)
    buys = sorted(_bids(call, round_id, "buy"), key=lambda b: (-int(b[1]["price"]), b[0]))
    sells = sorted(_bids(call, round_id, "sell"), key=lambda s: (int(s[1]["price"]), s[0]))
    left_b = [int(b["power_kw"]) for _, b in buys]
    left_s = [min(int(s["power_kw"]), _held_kw(call, round_id, st, s["account"])) for st, s in sells]
    paid = [0] * len(buys)
    trades: list[dict[str, Any]] = []
    events: list[Event] = []
    i = j = 0
    while i < len(buys) and j < len(sells):
        (bst, b), (sst, s) = buys[i], sells[j]
        if int(b["price"]) < int(s["price"]):
            break
        cap = min(left_b[i], _unmet_kw(call, round_id, bst, b["account"]))
        if cap == 0:
            i += 1
            continue
        if left_s[j] == 0:
            j += 1
            continue
        q = min(cap, left_s[j])
        price = (int(b["price"]) + int(s["price"])) // 2
        events += _move_kw(call, round_id, rnd, sst, bst, b["account"], q)
        _escrow_out(call, s["account"], q * price)
        paid[i] += q * price
        trades.append({"buyer": bst, "seller": sst, "power_kw": q, "price": price})
        left_b[i] -= q
        left_s[j] -= q
    for k, (station, b) in enumerate(buys):
        _escrow_out(call, b["account"], int(b["escrow"]) - paid[k])
        call.state.delete(_bid_key(round_id, station, "buy"))
    for station, _ in sells:
        call.state.delete(_bid_key(round_id, station, "sell"))
    call.state.set_json(_round_key(round_id), {**rnd, "state": "cleared", "trades": trades})
    return [{"type": "round_cleared", "round_id": round_id, "trades": trades}, *events]


def _p2p_offer(call: MarketCall) -> list[Event]:
    """P2P: a station offers kW of its right to one named account at a price per kW (until the slot starts)."""
    cert = require_access(call, ("station",))
    a = call.args
    round_id, station, offer_id = _ident(a, "round_id"), _ident(a, "station"), _ident(a, "offer_id")
    rnd = _trading_round(call, round_id, "slot_start_ms")
    _station_of(call, cert, rnd, station)
    to = check_account_id(a["to"], "to")
    power, price = _uint(a, "power_kw", MAX_KW, 1), _uint(a, "price", MAX_PRICE)
    if call.state.get(_offer_key(round_id, offer_id)) is not None:
        raise MarketBidError("an offer with that id exists", got=offer_id)
    me = call.sender()
    free = _held_kw(call, round_id, station, me) - _committed_sell_kw(call, round_id, station)
    if power > free:
        raise MarketBidError("an offer above the station's free right", expected=f"<= {free}", got=power)
    rec = {"account": me, "station": station, "to": to, "power_kw": power, "price": price, "state": "open"}
    call.state.set_json(_offer_key(round_id, offer_id), rec)
    return [{"type": "p2p_offered", "round_id": round_id, "offer_id": offer_id, **rec}]


def _p2p_accept(call: MarketCall) -> list[Event]:
    """The named account takes the offer for one of its stations (at most its unmet requirement) and pays."""
    cert = require_access(call, ("station",))
    a = call.args
    round_id, offer_id, station = _ident(a, "round_id"), _ident(a, "offer_id"), _ident(a, "station")
    rnd = _trading_round(call, round_id, "slot_start_ms")
    offer = call.state.get_json(_offer_key(round_id, offer_id))
    if offer is None:
        raise MarketUnknownError("no such offer", got=offer_id)
    if offer["state"] != "open":
        raise MarketSettledError("offer already taken", got=offer_id)
    me = call.sender()
    if me != offer["to"]:
        raise MarketBidError("the offer is for another account", expected=offer["to"], got=me)
    _station_of(call, cert, rnd, station)
    power = int(offer["power_kw"])
    unmet = _unmet_kw(call, round_id, station, me)
    if power > unmet:
        raise MarketBidError("more than the station's unmet requirement", expected=f"<= {unmet}", got=power)
    if _held_kw(call, round_id, offer["station"], offer["account"]) < power:
        raise MarketBidError("the seller no longer holds the offered kW", got=offer["station"])
    _pay(call, me, offer["account"], power * int(offer["price"]))
    # close the offer before moving: the seller's committed kW no longer counts it
    call.state.set_json(_offer_key(round_id, offer_id), {**offer, "state": "taken", "taken_by": station})
    events = _move_kw(call, round_id, rnd, offer["station"], station, me, power)
    return [{"type": "p2p_traded", "round_id": round_id, "offer_id": offer_id, "buyer_station": station,
             "seller_station": offer["station"], "power_kw": power, "price": int(offer["price"])}, *events]


def _p2p_cancel(call: MarketCall) -> list[Event]:
    """The seller withdraws an open offer (its kW are free again)."""
    require_access(call, ("station",))
    round_id, offer_id = _ident(call.args, "round_id"), _ident(call.args, "offer_id")
    offer = call.state.get_json(_offer_key(round_id, offer_id))
    if offer is None:
        raise MarketUnknownError("no such offer", got=offer_id)
    if offer["account"] != call.sender():
        raise MarketBidError("only the seller withdraws its offer", expected=offer["account"], got=call.sender())
    if offer["state"] != "open":
        raise MarketSettledError("offer already taken", got=offer_id)
    call.state.delete(_offer_key(round_id, offer_id))
    return [{"type": "p2p_withdrawn", "round_id": round_id, "offer_id": offer_id}]


def _round_view(call: MarketCall) -> Any:
    round_id = _ident(call.args, "round_id")
    rnd = call.state.get_json(_round_key(round_id))
    reqs = _requests(call, round_id) if rnd is not None else {}
    rights = {s: _held(call, round_id, s) for s in reqs}
    return {"round_id": round_id, "round": rnd, "requests": reqs, "rights": rights,
            "bids": {f"{st}/{side}": b for side in ("buy", "sell") for st, b in _bids(call, round_id, side)}}


def _escrow_view(call: MarketCall) -> Any:
    cur = _currency(call)
    return {"currency": cur, "balance": call.state.balance(ESCROW_ACCOUNT, cur),
            "records": market_escrow_total(call.state)}


FUNCTIONS: dict[str, MarketFunction] = {
    "market.certify": MarketFunction(_certify, True, ("account", "role"), ("stations", "reputation")),
    "market.revoke": MarketFunction(_revoke, True, ("account",)),
    "market.publish_plan": MarketFunction(_publish_plan, True, ("plan_id", "prices", "fixed_fee")),
    "market.choose_plan": MarketFunction(_choose_plan, True, ("profile",)),
    "market.propose_contract": MarketFunction(_propose_contract, True, ("contract_id", "terms_sha256")),
    "market.accept_contract": MarketFunction(_accept_contract, True, ("contract_id",)),
    "market.settle_contract": MarketFunction(_settle_contract, True, ("contract_id", "delivered_kwh")),
    "market.open_round": MarketFunction(_open_round, True, ("round_id", "transformer", "requests_close_ms",
                                                             "bids_close_ms", "slot_start_ms", "slot_end_ms")),
    "market.request": MarketFunction(_request, True, ("round_id", "station", "power_kw", "willingness",
                                                       "flexibility_bp")),
    "market.allocate": MarketFunction(_allocate, True, ("round_id",)),
    "market.bid": MarketFunction(_bid, True, ("round_id", "station", "side", "power_kw", "price")),
    "market.clear": MarketFunction(_clear, True, ("round_id",)),
    "market.p2p_offer": MarketFunction(_p2p_offer, True, ("round_id", "station", "offer_id", "to", "power_kw",
                                                           "price")),
    "market.p2p_accept": MarketFunction(_p2p_accept, True, ("round_id", "offer_id", "station")),
    "market.p2p_cancel": MarketFunction(_p2p_cancel, True, ("round_id", "offer_id")),
    "market.certification": MarketFunction(_certification, False, ("account",)),
    "market.quote": MarketFunction(_quote, False, ("profile",)),
    "market.agreement": MarketFunction(_agreement, False, ("account",)),
    "market.contract": MarketFunction(_contract_view, False, ("contract_id",)),
    "market.contract_terms": MarketFunction(_contract_terms, False, ("contract_id",)),
    "market.round": MarketFunction(_round_view, False, ("round_id",)),
    "market.escrow": MarketFunction(_escrow_view, False, ()),
}
"""Every market function: handler, submit or query, required and optional argument fields."""


def run(fn: MarketFunction, call: MarketCall) -> bytes:
    """Run a market function; its response payload (events for a submit)."""
    load_params(call.state)  # the bridge is initialised
    missing = [k for k in fn.required if k not in call.args]
    extra = set(call.args) - set(fn.required) - set(fn.optional)
    if missing or extra:
        raise CodecError("market arguments have the wrong fields", expected=list(fn.required + fn.optional),
                         got=sorted(call.args))
    out = fn.handler(call)
    if fn.submit:
        call.events += out
        return canonical_json(call.events)
    return canonical_json(out)
