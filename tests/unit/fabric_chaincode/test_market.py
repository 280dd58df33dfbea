"""The Fabric park's market (docs/research.md#seed-004; chains/fabric/SPEC.md §F1) on the fake ledger: every
mechanism with its refusals. After every call, refused ones included, :meth:`Market.check` holds: each denomination
issued equals the balances (the market's escrow included), the escrow equals what the open market records say it
holds, and the rights booked on a transformer never exceed its capacity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from chains.common.genesis import bridge_section
from chains.fabric.chaincode import market
from chains.fabric.chaincode.contract import STATUS_OK, BridgeContract
from chains.fabric.chaincode.identity import certificate_attributes
from chains.fabric.chaincode.ledger import StubState
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
from chains.fabric.network.crypto import attrs_extension
from protocol.errors import AuthorizationError
from tests.unit.bridge.sim import MINUTE, T0, RelaySim
from tests.unit.fabric_chaincode.fake import FabricPark, FakeStub, enrolled, identity, make_cert
from tests.unit.fabric_chaincode.parks import ALICE_ID, BOB, LANE, OPERATOR_ID, A, B, make_parks


def role(msp: str, cn: str, r: str) -> tuple[str, bytes]:
    return enrolled(msp, cn, **{"market.role": r})


OPERATOR = identity(OPERATOR_MSP, "operator")
SALES1, SALES2 = role(SALES_MSP, "sales1", "sales"), role(SALES_MSP, "sales2", "sales")
USER = role(OPERATOR_MSP, "user1", "user")
GEN = role(SALES_MSP, "gen1", "trader")  # a distributed generator (SalesMSP's peers keep its private data)
FACTORY = role(OPERATOR_MSP, "factory", "trader")  # a large user (OperatorMSP's)
ST_A, ST_B, ST_C = (role(OPERATOR_MSP, "st-a", "station"), role(SALES_MSP, "st-b", "station"),
                    role(OPERATOR_MSP, "st-c", "station"))


def acct(who: tuple[str, bytes]) -> str:
    cn = certificate_cn(who[1])
    return f"{who[0]}:{cn}"


def certificate_cn(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return str(x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


ACCOUNTS = [OPERATOR, SALES1, SALES2, USER, GEN, FACTORY, ST_A, ST_B, ST_C]
CNY = 1_000_000
STATIONS = {"s1": "t1", "s2": "t1", "s3": "t1", "s4": "t1", "s9": "t2"}


@dataclass
class Market:
    park: FabricPark = field(default_factory=lambda: FabricPark(contract=BridgeContract()))
    now_ms: int = T0
    issued: dict[str, int] = field(default_factory=dict)

    def submit(self, who: tuple[str, bytes], fn: str, args: Any, transient: dict[str, bytes] | None = None) -> Any:
        return self.park.submit(who, fn, args if isinstance(args, str) else json.dumps(args), now_ms=self.now_ms,
                                transient=transient)

    def ok(self, who: tuple[str, bytes], fn: str, args: Any, **kw: Any) -> list[dict[str, Any]]:
        r = self.submit(who, fn, args, **kw)
        assert r.status == STATUS_OK, r.message
        self.check()
        return list(json.loads(r.payload))

    def refused(self, who: tuple[str, bytes], fn: str, args: Any, **kw: Any) -> str:
        before = self.park.ledger.snapshot()
        r = self.submit(who, fn, args, **kw)
        assert r.status != STATUS_OK, f"{fn} accepted: {r.payload[:300]!r}"
        assert self.park.ledger.snapshot() == before
        self.check()
        assert r.code is not None
        return r.code

    def query(self, fn: str, args: Any, who: tuple[str, bytes] = OPERATOR, org: str = OPERATOR_MSP) -> Any:
        r = self.park.query(who, fn, json.dumps(args), now_ms=self.now_ms, org=org)
        assert r.status == STATUS_OK, r.message
        return json.loads(r.payload)

    def view(self) -> StubState:
        return StubState(FakeStub(self.park.ledger, OPERATOR, self.park.ledger.channel))

    def balance(self, who: tuple[str, bytes] | str, denom: str = "CNY") -> int:
        return self.view().balance(who if isinstance(who, str) else acct(who), denom)

    def check(self) -> None:
        state = self.view()
        for denom, total in self.issued.items():
            held = sum(int(v) for k, v in state.prefix_items(b"balances/") if k.decode().endswith(f"/{denom}"))
            assert held == total, (denom, held, total)
        assert state.balance(market.ESCROW_ACCOUNT, "CNY") == market.market_escrow_total(state)
        caps = {"t1": 100, "t2": 50}
        for t, cap in caps.items():
            booked = json.loads(state.get(f"bookings/{t}".encode()) or b"[]")
            edges = sorted({int(b["slot_start_ms"]) for b in booked})
            for at in edges:  # the load curve peaks at some slot start
                load = sum(int(b["power_kw"]) for b in booked if int(b["slot_start_ms"]) <= at < int(b["slot_end_ms"]))
                assert load <= cap, (t, at, load)

    def certify(self, who: tuple[str, bytes], r: str, **kw: Any) -> None:
        self.ok(OPERATOR, "market.certify", {"account": acct(who), "role": r, **kw})


def make_market() -> Market:
    relay = RelaySim()
    section = bridge_section(relay.chain_id, relay.vset, [{"lane": LANE, "counterparty": "dpos-park"}],
                             native_denoms=("kWh", "CNY"), rights_operator=OPERATOR_ID,
                             transformers={"t1": 100, "t2": 50}, stations=STATIONS)
    buyers = [USER, GEN, FACTORY, ST_A, ST_B, ST_C]
    g = {"chain_id": "fabric-park", "accounts": [acct(w) for w in ACCOUNTS], "bridge": section,
         "market": {"currency": "CNY"},
         "balances": [{"account": acct(w), "denom": "CNY", "amount": CNY} for w in buyers]}
    m = Market(issued={"CNY": CNY * len(buyers)})
    r = m.park.submit(OPERATOR, "init_bridge", json.dumps(g), now_ms=m.now_ms)
    assert r.status == STATUS_OK, r.message
    return m


@pytest.fixture
def m() -> Market:
    return make_market()


# --- access ---------------------------------------------------------------------------------------------------------


PLAN = {"plan_id": "p-flat", "prices": {"peak": 10, "flat": 10, "valley": 10}, "fixed_fee": 0}


def test_only_identities_the_regulator_certified_with_a_matching_certificate_attribute_trade(m: Market) -> None:
    assert m.refused(SALES1, "market.publish_plan", PLAN) == "market.uncertified"
    m.certify(SALES1, "sales")
    assert m.ok(SALES1, "market.publish_plan", PLAN)[0]["type"] == "plan_published"
    # the same account with a certificate that has no market.role, or another role, or the wrong role for the call
    assert m.refused(identity(SALES_MSP, "sales1"), "market.publish_plan", PLAN) == "market.attribute"
    assert m.refused(role(SALES_MSP, "sales1", "trader"), "market.publish_plan", PLAN) == "market.attribute"
    m.certify(GEN, "trader")
    assert m.refused(GEN, "market.publish_plan", PLAN) == "market.attribute"  # a trader publishes no plans
    # only the regulator (the park operator) certifies and revokes
    assert m.refused(SALES1, "market.certify", {"account": acct(SALES2), "role": "sales"}) == "auth.denied"
    assert m.refused(OPERATOR, "market.certify", {"account": "SalesMSP:nobody", "role": "sales"}) == "market.unknown"
    assert m.refused(OPERATOR, "market.certify", {"account": acct(SALES2), "role": "king"}) == "codec.invalid"
    m.ok(OPERATOR, "market.revoke", {"account": acct(SALES1)})
    assert m.refused(SALES1, "market.publish_plan", PLAN) == "market.revoked"
    assert m.refused(OPERATOR, "market.revoke", {"account": acct(SALES1)}) == "market.settled"
    assert m.query("market.certification", {"account": acct(SALES1)})["certification"]["revoked"] is True


def test_certificate_attributes_are_read_strictly() -> None:
    assert certificate_attributes(make_cert(["x"], attrs={"market.role": "user", "hf.Type": "client"})) == {
        "market.role": "user", "hf.Type": "client"}
    assert certificate_attributes(make_cert(["x"])) == {}
    from cryptography import x509
    for bad in (b"not json", b'{"attrs": [1]}', b'{"attrs": {"a": 1}}', b"[" * 3000, b"x" * 5000):
        ext = x509.UnrecognizedExtension(attrs_extension({}).oid, bad)
        import datetime

        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
        now = datetime.datetime.now(datetime.UTC)
        pem = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(ext, critical=False).sign(key, hashes.SHA256())
               .public_bytes(serialization.Encoding.PEM))
        with pytest.raises(AuthorizationError):
            certificate_attributes(pem)


# --- power-consumption agreements -------------------------------------------------------------------------------------


def test_a_small_user_signs_the_plan_that_costs_its_load_profile_least(m: Market) -> None:
    m.certify(SALES1, "sales")
    m.certify(SALES2, "sales")
    m.certify(USER, "user")
    tou = {"plan_id": "p-tou", "prices": {"peak": 14, "flat": 9, "valley": 4}, "fixed_fee": 100}
    m.ok(SALES1, "market.publish_plan", PLAN)
    m.ok(SALES2, "market.publish_plan", tou)
    assert m.refused(SALES2, "market.publish_plan", {**PLAN, "fixed_fee": 1}) == "market.bid"  # sales1's plan id
    assert m.refused(USER, "market.publish_plan", PLAN) == "market.attribute"
    for profile in ({"peak": 50, "flat": 30, "valley": 10}, {"peak": 5, "flat": 20, "valley": 80},
                    {"peak": 10, "flat": 10, "valley": 10}):
        costs = {p["plan_id"]: p["fixed_fee"] + sum(p["prices"][b] * profile[b] for b in market.BANDS)
                 for p in (PLAN, tou)}
        best = min(costs, key=lambda k: (costs[k], k))
        (event,) = m.ok(USER, "market.choose_plan", {"profile": profile})
        assert event["type"] == "agreement_signed" and event["plan_id"] == best and event["cost"] == costs[best]
        assert m.query("market.agreement", {"account": acct(USER)})["agreement"]["plan_id"] == best
        assert [p["plan_id"] for p in m.query("market.quote", {"profile": profile})["plans"]] == sorted(
            costs, key=lambda k: (costs[k], k))
    # a company the regulator revoked offers nothing: the user is signed to the other plan even if dearer
    m.ok(OPERATOR, "market.revoke", {"account": acct(SALES2)})
    (event,) = m.ok(USER, "market.choose_plan", {"profile": {"peak": 5, "flat": 20, "valley": 80}})
    assert event["plan_id"] == "p-flat"
    assert m.refused(USER, "market.choose_plan", {"profile": {"peak": 5, "flat": -1, "valley": 0}}) == "codec.invalid"


# --- bilateral contracts with private terms ---------------------------------------------------------------------


def _terms(contract_id: str = "c1", quantity: int = 300, price: int = 420) -> bytes:
    return json.dumps({"contract_id": contract_id, "seller": acct(GEN), "buyer": acct(FACTORY),
                       "quantity_kwh": quantity, "price": price, "salt": "9f1c2e7a5b3d4f60a1"}).encode()


def test_offline_terms_stay_private_the_ledger_holds_their_hash_and_settlement_checks_it(m: Market) -> None:
    m.certify(GEN, "trader")
    terms = _terms()
    digest = hashlib.sha256(terms).hexdigest()
    propose = {"contract_id": "c1", "terms_sha256": digest}
    assert m.refused(GEN, "market.propose_contract", propose, transient={"terms": terms}) == "market.uncertified"
    m.certify(FACTORY, "trader")
    assert m.refused(GEN, "market.propose_contract", propose, transient={"terms": _terms(price=1)}) == "market.terms"
    assert m.refused(GEN, "market.propose_contract", propose) == "codec.invalid"  # terms travel as transient data
    m.ok(GEN, "market.propose_contract", propose, transient={"terms": terms})
    # the public ledger and the events hold the parties and the hash, never the price or quantity
    public = b"".join(m.park.ledger.state.values()) + b"".join(p for _, p in m.park.ledger.events)
    assert b'"price"' not in public and b'"quantity_kwh"' not in public and terms not in public
    assert digest.encode() in public
    assert m.refused(GEN, "market.accept_contract", {"contract_id": "c1"}, transient={"terms": terms}) \
        == "market.terms"  # the proposer cannot accept for the other side
    assert m.refused(FACTORY, "market.accept_contract", {"contract_id": "c1"},
                     transient={"terms": _terms(quantity=1)}) == "market.terms"
    before = m.balance(FACTORY)
    m.ok(FACTORY, "market.accept_contract", {"contract_id": "c1"}, transient={"terms": terms})
    assert m.balance(FACTORY) == before - 300 * 420 and m.balance(market.ESCROW_ACCOUNT) == 300 * 420
    # each party reads the terms from its own organisation's peer; nobody else can
    for who, org in ((GEN, SALES_MSP), (FACTORY, OPERATOR_MSP)):
        assert m.query("market.contract_terms", {"contract_id": "c1"}, who=who, org=org)["terms"]["price"] == 420
    r = m.park.query(ST_A, "market.contract_terms", json.dumps({"contract_id": "c1"}), now_ms=m.now_ms)
    assert r.code == "market.terms"
    r = m.park.query(GEN, "market.contract_terms", json.dumps({"contract_id": "c1"}), now_ms=m.now_ms,
                     org=OPERATOR_MSP)
    assert r.status != STATUS_OK  # an OperatorMSP peer is no member of SalesMSP's implicit collection
    # settlement: the buyer confirms delivery with the terms; both parties' private data must match the hash
    settle = {"contract_id": "c1", "delivered_kwh": 250}
    assert m.refused(GEN, "market.settle_contract", settle, transient={"terms": terms}) == "market.terms"
    key = ("_implicit_org_SalesMSP", "market/contracts/c1")
    good = m.park.ledger.private_hashes[key]
    m.park.ledger.private_hashes[key] = hashlib.sha256(b"tampered").digest()
    assert m.refused(FACTORY, "market.settle_contract", settle, transient={"terms": terms}) == "market.terms"
    m.park.ledger.private_hashes[key] = good
    gen_before = m.balance(GEN)
    m.ok(FACTORY, "market.settle_contract", settle, transient={"terms": terms})
    assert m.balance(GEN) == gen_before + 250 * 420
    assert m.balance(FACTORY) == before - 250 * 420 and m.balance(market.ESCROW_ACCOUNT) == 0
    assert m.refused(FACTORY, "market.settle_contract", settle, transient={"terms": terms}) == "market.settled"


def test_a_contract_the_buyer_cannot_pay_is_not_agreed(m: Market) -> None:
    m.certify(GEN, "trader")
    m.certify(FACTORY, "trader")
    terms = _terms("c2", quantity=10_000, price=1_000)
    m.ok(GEN, "market.propose_contract", {"contract_id": "c2", "terms_sha256": hashlib.sha256(terms).hexdigest()},
         transient={"terms": terms})
    assert m.refused(FACTORY, "market.accept_contract", {"contract_id": "c2"},
                     transient={"terms": terms}) == "funds.insufficient"
    assert m.refused(FACTORY, "market.settle_contract", {"contract_id": "c2", "delivered_kwh": 1},
                     transient={"terms": terms}) == "market.phase"


# --- charging rights: stage 1 ----------------------------------------------------------------------------------------


ROUND = "r1"


def _open(m: Market, round_id: str = ROUND) -> dict[str, int]:
    times = {"requests_close_ms": m.now_ms + MINUTE, "bids_close_ms": m.now_ms + 2 * MINUTE,
             "slot_start_ms": m.now_ms + 3 * MINUTE, "slot_end_ms": m.now_ms + 63 * MINUTE}
    m.ok(OPERATOR, "market.open_round", {"round_id": round_id, "transformer": "t1", **times})
    return times


def _stations(m: Market) -> None:
    m.certify(ST_A, "station", stations=["s1", "s2"])
    m.certify(ST_B, "station", stations=["s3", "s9"])
    m.certify(ST_C, "station", stations=["s4"])


def _request(station: str, kw: int, willingness: str = "strong", flex: int = 0) -> dict[str, Any]:
    return {"round_id": ROUND, "station": station, "power_kw": kw, "willingness": willingness,
            "flexibility_bp": flex}


def _booked(m: Market, transformer: str = "t1") -> dict[str, int]:
    return {b["right_id"]: b["power_kw"] for b in json.loads(m.park.ledger.state.get(f"bookings/{transformer}",
                                                                                      b"[]"))}


def _allocated_round(m: Market) -> dict[str, int]:
    _stations(m)
    times = _open(m)
    # a right already booked on t1 over the slot: the margin is 90 kW
    m.ok(OPERATOR, "issue_right", {"right_id": "old", "station": "s1", "transformer": "t1", "power_kw": 10,
                                   "slot_start_ms": times["slot_start_ms"], "slot_end_ms": times["slot_end_ms"],
                                   "owner": acct(ST_A)})
    m.ok(ST_A, "market.request", _request("s1", 40, "strong", 0))
    m.ok(ST_A, "market.request", _request("s2", 30, "weak", 8_000))
    m.ok(ST_B, "market.request", _request("s3", 30, "strong", 2_000))
    m.ok(ST_C, "market.request", _request("s4", 20, "weak", 5_000))
    m.now_ms = times["requests_close_ms"]
    m.ok(OPERATOR, "market.allocate", {"round_id": ROUND})
    return times


def test_stage_one_water_fills_the_transformer_margin_and_never_exceeds_it(m: Market) -> None:
    _stations(m)
    times = _open(m)
    assert m.refused(ST_A, "market.request", _request("s3", 10)) == "market.bid"  # s3 is not certified to st-a
    assert m.refused(ST_B, "market.request", _request("s9", 10)) == "market.bid"  # s9 is behind t2
    assert m.refused(ST_A, "market.request", _request("s1", 101)) == "capacity.exceeded"
    assert m.refused(GEN, "market.request", _request("s1", 10)) == "market.uncertified"
    m.now_ms = times["requests_close_ms"] - MINUTE
    m.ok(OPERATOR, "issue_right", {"right_id": "old", "station": "s1", "transformer": "t1", "power_kw": 10,
                                   "slot_start_ms": times["slot_start_ms"], "slot_end_ms": times["slot_end_ms"],
                                   "owner": acct(ST_A)})
    for who, st, kw in ((ST_A, "s1", 40), (ST_A, "s2", 30), (ST_B, "s3", 30), (ST_C, "s4", 20)):
        m.ok(who, "market.request", _request(st, kw))
    assert m.refused(ST_A, "market.request", _request("s1", 5)) == "market.bid"  # one request per station
    assert m.refused(OPERATOR, "market.allocate", {"round_id": ROUND}) == "market.phase"
    m.now_ms = times["requests_close_ms"]
    assert m.refused(ST_C, "market.request", _request("s4", 5)) == "market.round_closed"
    events = m.ok(OPERATOR, "market.allocate", {"round_id": ROUND})
    assert events[0]["margin_kw"] == 90
    assert events[0]["allocations"] == {"s4": 20, "s2": 23, "s3": 23, "s1": 24}  # max-min fair
    assert _booked(m) == {"old": 10, "r1.s1": 24, "r1.s2": 23, "r1.s3": 23, "r1.s4": 20}
    assert sum(_booked(m).values()) == 100  # exactly the capacity, never above
    assert m.refused(OPERATOR, "market.allocate", {"round_id": ROUND}) == "market.settled"


def test_water_fill_is_max_min_fair_and_bounded() -> None:
    assert market.water_fill(90, {"a": 40, "b": 30, "c": 30, "d": 20}) == {"d": 20, "b": 23, "c": 23, "a": 24}
    assert market.water_fill(200, {"a": 40, "b": 30}) == {"b": 30, "a": 40}
    assert market.water_fill(0, {"a": 5}) == {"a": 0}
    assert market.water_fill(-5, {"a": 5}) == {"a": 0}
    import random
    rng = random.Random(4)
    for _ in range(300):
        demands = {f"s{i}": rng.randint(1, 60) for i in range(rng.randint(1, 9))}
        margin = rng.randint(0, 300)
        out = market.water_fill(margin, demands)
        assert sum(out.values()) == min(margin, sum(demands.values()))
        assert all(0 <= out[s] <= demands[s] for s in demands)
        unmet = [s for s in demands if out[s] < demands[s]]
        if unmet:  # every station left short gets at least (within 1 kW) the most anyone gets
            assert min(out[s] for s in unmet) >= max(out.values()) - 1


# --- charging rights: stage 2 ----------------------------------------------------------------------------------------


def test_stage_two_double_auction_moves_kw_between_stations_and_pays_from_escrow(m: Market) -> None:
    times = _allocated_round(m)
    total = sum(_booked(m).values())
    # s1 (strong, inflexible) is 16 kW short and buys; s2 (weak, flexible) sells 10 kW; s4 sells 5 kW
    assert m.refused(ST_A, "market.bid", {"round_id": ROUND, "station": "s1", "side": "buy", "power_kw": 17,
                                          "price": 50}) == "market.bid"  # above its unmet requirement
    assert m.refused(ST_A, "market.bid", {"round_id": ROUND, "station": "s2", "side": "sell", "power_kw": 24,
                                          "price": 5}) == "market.bid"  # above its right
    assert m.refused(GEN, "market.bid", {"round_id": ROUND, "station": "s1", "side": "buy", "power_kw": 1,
                                         "price": 1}) == "market.uncertified"
    a_before, b_before = m.balance(ST_A), m.balance(ST_B)
    m.ok(ST_A, "market.bid", {"round_id": ROUND, "station": "s1", "side": "buy", "power_kw": 16, "price": 50})
    assert m.balance(ST_A) == a_before - 16 * 50
    m.ok(ST_B, "market.bid", {"round_id": ROUND, "station": "s3", "side": "buy", "power_kw": 7, "price": 20})
    m.ok(ST_A, "market.bid", {"round_id": ROUND, "station": "s2", "side": "sell", "power_kw": 10, "price": 30})
    m.ok(ST_C, "market.bid", {"round_id": ROUND, "station": "s4", "side": "sell", "power_kw": 5, "price": 10})
    assert m.refused(ST_A, "market.bid", {"round_id": ROUND, "station": "s2", "side": "buy", "power_kw": 1,
                                          "price": 1}) == "market.bid"  # one open bid per station
    assert m.refused(OPERATOR, "market.clear", {"round_id": ROUND}) == "market.phase"
    m.now_ms = times["bids_close_ms"]
    assert m.refused(ST_B, "market.bid", {"round_id": ROUND, "station": "s3", "side": "sell", "power_kw": 1,
                                          "price": 1}) == "market.round_closed"
    c_before = m.balance(ST_C)
    (cleared, *_) = m.ok(OPERATOR, "market.clear", {"round_id": ROUND})
    # s1 (50) meets s4 (10): 5 kW at 30, then s2 (30): 10 kW at 40; s3 (20) is below s2's ask (30)
    assert cleared["trades"] == [{"buyer": "s1", "seller": "s4", "power_kw": 5, "price": 30},
                                 {"buyer": "s1", "seller": "s2", "power_kw": 10, "price": 40}]
    assert _booked(m) == {"old": 10, "r1.s1": 39, "r1.s2": 13, "r1.s3": 23, "r1.s4": 15}
    assert sum(_booked(m).values()) == total
    # st-a paid 5*30 + 10*40 for s1 and was paid 10*40 for s2; the unmatched kW of its buy were refunded
    assert m.balance(ST_A) == a_before - 5 * 30 - 10 * 40 + 10 * 40
    assert m.balance(ST_C) == c_before + 5 * 30 and m.balance(ST_B) == b_before
    assert m.balance(market.ESCROW_ACCOUNT) == 0
    assert m.refused(OPERATOR, "market.clear", {"round_id": ROUND}) == "market.settled"
    # the rights are the registry's: the relay can move them (owner, station, power as the park holds them)
    right = json.loads(m.park.ledger.state["rights/r1.s1"])
    assert right["owner"] == acct(ST_A) and right["power_kw"] == 39 and right["station"] == "s1"


def test_p2p_trade_moves_kw_to_the_named_account_and_pays_the_seller(m: Market) -> None:
    times = _allocated_round(m)
    offer = {"round_id": ROUND, "station": "s3", "offer_id": "o1", "to": acct(ST_A), "power_kw": 8, "price": 25}
    assert m.refused(ST_B, "market.p2p_offer", {**offer, "power_kw": 24}) == "market.bid"
    m.ok(ST_B, "market.p2p_offer", {**offer, "offer_id": "o0", "power_kw": 20})
    assert m.refused(ST_B, "market.p2p_offer", offer) == "market.bid"  # 20 of its 23 kW are on offer
    assert m.refused(ST_A, "market.p2p_cancel", {"round_id": ROUND, "offer_id": "o0"}) == "market.bid"
    m.ok(ST_B, "market.p2p_cancel", {"round_id": ROUND, "offer_id": "o0"})
    assert m.refused(ST_B, "market.p2p_cancel", {"round_id": ROUND, "offer_id": "o0"}) == "market.unknown"
    m.ok(ST_B, "market.p2p_offer", offer)
    # the offered kW are committed: a sell bid beyond the rest is refused
    assert m.refused(ST_B, "market.bid", {"round_id": ROUND, "station": "s3", "side": "sell", "power_kw": 16,
                                          "price": 1}) == "market.bid"
    accept = {"round_id": ROUND, "offer_id": "o1", "station": "s1"}
    assert m.refused(ST_C, "market.p2p_accept", {**accept, "station": "s4"}) == "market.bid"  # not for st-c
    a_before, b_before = m.balance(ST_A), m.balance(ST_B)
    events = m.ok(ST_A, "market.p2p_accept", accept)
    assert events[0]["type"] == "p2p_traded"
    assert m.balance(ST_A) == a_before - 8 * 25 and m.balance(ST_B) == b_before + 8 * 25
    assert _booked(m)["r1.s1"] == 32 and _booked(m)["r1.s3"] == 15
    assert m.refused(ST_A, "market.p2p_accept", accept) == "market.settled"
    m.now_ms = times["slot_start_ms"]
    assert m.refused(ST_B, "market.p2p_offer", {**offer, "offer_id": "o2", "power_kw": 1}) == "market.round_closed"


def test_a_right_sent_away_is_no_longer_sold_by_the_market(m: Market) -> None:
    times = _allocated_round(m)
    m.ok(ST_C, "transfer_right", json.dumps({"right_id": "r1.s4", "to": acct(GEN)}))
    assert m.refused(ST_C, "market.bid", {"round_id": ROUND, "station": "s4", "side": "sell", "power_kw": 1,
                                          "price": 1}) == "market.bid"
    assert times


# --- imported reputation ---------------------------------------------------------------------------------------------


def test_a_participant_of_another_park_is_certified_on_the_reputation_this_park_imported() -> None:
    net = make_parks(A, B)
    args = {"account": ALICE_ID, "role": "sales",
            "reputation": {"src_chain": A, "subject": ALICE_ID, "model": "fabric-participant-standing/v1"}}
    assert net.refused(B, identity(OPERATOR_MSP, "operator"), "market.certify", args) == "reputation.insufficient"
    net.ok(A, identity(OPERATOR_MSP, "operator"), "set_standing", {"account": ALICE_ID, "certified": True,
                                                                    "score": 4_000})
    packet = net.send(A, BOB, dst_chain=B, kind="reputation", subject=ALICE_ID, receiver=OPERATOR_ID)
    assert net.deliver(packet)["success"]
    # imported, but below the park's minimum (5000 by default)
    assert net.refused(B, identity(OPERATOR_MSP, "operator"), "market.certify", args) == "reputation.insufficient"
    net.ok(A, identity(OPERATOR_MSP, "operator"), "set_standing", {"account": ALICE_ID, "certified": True,
                                                                    "score": 8_600})
    assert net.deliver(net.send(A, BOB, dst_chain=B, kind="reputation", subject=ALICE_ID,
                                receiver=OPERATOR_ID))["success"]
    (event,) = net.ok(B, identity(OPERATOR_MSP, "operator"), "market.certify", args)
    assert event["on_reputation"] is True
    cert = net.query(B, "market.certification", json.dumps({"account": ALICE_ID}))["certification"]
    assert cert["basis"]["score"] == 8_600 and cert["basis"]["src_chain"] == A
    alice = role(SALES_MSP, "alice", "sales")
    assert net.ok(B, alice, "market.publish_plan", PLAN)[0]["type"] == "plan_published"
    assert net.refused(A, alice, "market.publish_plan", PLAN) == "market.uncertified"  # certified on B only


# --- hostile input ---------------------------------------------------------------------------------------------------

JUNK: list[Any] = [None, True, -1, 2**70, 1.5, "", "x" * 300, "A/B", [], [1, [2]], {}, {"a": {"b": 1}}]


@pytest.mark.parametrize("fn", sorted(market.FUNCTIONS))
def test_every_market_function_answers_junk_arguments_with_a_typed_refusal(fn: str) -> None:
    m = make_market()
    _stations(m)
    m.certify(SALES1, "sales")
    m.certify(USER, "user")
    m.certify(GEN, "trader")
    m.certify(FACTORY, "trader")
    _open(m)
    spec = market.FUNCTIONS[fn]
    callers = [OPERATOR, SALES1, USER, GEN, FACTORY, ST_A]
    fields = spec.required + spec.optional
    for who in callers:
        for field_name in fields:
            for junk in JUNK:
                args = {f: (junk if f == field_name else "r1") for f in spec.required}
                args[field_name] = junk
                for transient in (None, {"terms": b"{" * 5000}, {"terms": json.dumps({"contract_id": "r1"}).encode()}):
                    if spec.submit:
                        r = m.submit(who, fn, args, transient=transient)
                    else:
                        r = m.park.query(who, fn, json.dumps(args), now_ms=m.now_ms,
                                         org=who[0], transient=transient)
                    if r.status != STATUS_OK:
                        assert r.code not in ("protocol", "remote"), (fn, field_name, junk, r.message)
    m.check()
