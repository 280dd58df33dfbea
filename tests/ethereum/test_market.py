"""The park's market (``EnergyMarket``, docs/research.md#seed-001) on a real anvil.

Deployed beside park A by ``chains.ethereum.deploy.deploy_market`` on a small feeder (substation 0; lateral 1 → 2,
lateral 3 → 4), driven by the client ``adapters.ethereum.market``. Checked: the on-chain clearing equals the
off-chain mirror the agents use (trade for trade); the use-of-system charge makes the near pair clear first;
refusals (a bid after its round closed, a clearing before it, a bid from a non-member, a second settlement); a
clearing that would overload a line is curtailed to the line's headroom; settlement of delivered against contracted
energy feeds the delivery record; every escrowed denomination (wei and the kWh token) is conserved; a participant of
another park joins the market on the reputation imported from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from adapters.ethereum.market import MarketClient
from chains.ethereum.deploy import deploy_market
from chains.ethereum.market import Bid, Feeder, Line, clear
from protocol.codec import decode_packet, decode_reputation
from protocol.errors import AuthorizationError, IllegalTransitionError, InsufficientFundsError
from tests.ethereum.conftest import LANE, A, B, World
from tests.ethereum.harness import lower_hex, send_reputation
from tests.ethereum.test_contracts import HOUR_MS, SUCCESS_ACK, deliver

pytestmark = pytest.mark.integration

FEEDER = [(0, 0, 10**9), (0, 500, 100_000), (1, 300, 100_000), (0, 600, 100_000), (1, 400, 100_000)]
"""(parent, length m, limit Wh) per bus: 0 substation; 1 and 3 behind it; 2 and 4 behind 1."""
FEEDER_SHAPE = [(p, length) for p, length, _ in FEEDER[1:]]
RATE = 40  # wei per Wh per km


def feeder_model(rows: list[tuple[int, int, int]] = FEEDER) -> Feeder:
    return Feeder(tuple(Line(i, p, length, limit) for i, (p, length, limit) in enumerate(rows)))


@dataclass
class Mkt:
    w: World
    client: MarketClient
    members: list[LocalAccount]
    """Five members, member i at bus i + 0 (bus 0 excluded): buses 1, 2, 3, 4, 2."""
    buses: list[int]


@pytest.fixture(scope="module")
def market_base(base_world: World) -> Iterator[Mkt]:
    w = base_world
    snap = w.evm.snapshot()
    addrs = {"delivery_record": w.a.record.address, "energy_token": w.a.token.address}
    address = deploy_market(w.evm.w3, w.a.operator, addrs, FEEDER)
    client = MarketClient(w.evm.w3, address)
    members = [w.evm.account() for _ in range(5)]
    buses = [1, 2, 3, 4, 2]
    for acct, bus in zip(members, buses, strict=True):
        w.evm.transact(w.a.record.functions.admit(acct.address), w.a.operator)
        client.set_member(w.a.operator, acct.address, bus)
        w.evm.transact(w.a.token.functions.mint(acct.address, 1_000_000), w.a.operator)
    try:
        yield Mkt(w, client, members, buses)
    finally:
        w.evm.revert(snap)


@pytest.fixture
def mkt(market_base: Mkt) -> Iterator[Mkt]:
    snap = market_base.w.evm.snapshot()
    saved = market_base.w.relay.save()
    try:
        yield market_base
    finally:
        market_base.w.evm.revert(snap)
        market_base.w.relay.restore(saved)


def open_round(m: Mkt, rate: int = RATE, seconds: int = 100) -> tuple[int, int]:
    closes = m.w.evm.latest_timestamp() + seconds
    return m.client.open_round(m.w.a.operator, closes, rate), closes


def close(m: Mkt, closes: int) -> None:
    m.w.evm.mine_at(closes)


def submit(m: Mkt, rid: int, who: int, seller: bool, q: int, price: int) -> Bid:
    m.client.submit_bid(m.members[who], rid, seller, q, price)
    return Bid(str(who), m.buses[who], seller, q, price)


def totals(m: Mkt) -> tuple[int, int]:
    """(kWh of the members and the market, wei credited + the market's unsettled escrow): conserved quantities."""
    token = m.w.a.token
    wh = sum(token.functions.balanceOf(a.address).call() for a in m.members)
    wh += token.functions.balanceOf(m.client.contract.address).call()
    return wh, m.w.evm.w3.eth.get_balance(m.client.contract.address)


def test_clearing_on_chain_equals_the_mirror_and_the_near_pair_clears_first(mkt: Mkt) -> None:
    m = mkt
    rid, closes = open_round(m)
    # seller 0 at bus 1; buyers 1 (bus 2, 300 m away) and 2 (bus 3, 1100 m away) bid alike
    bids = [submit(m, rid, 0, True, 5_000, 300), submit(m, rid, 1, False, 5_000, 400),
            submit(m, rid, 2, False, 5_000, 400)]
    close(m, closes)
    receipt = m.client.clear(m.w.relayer, rid).receipt
    on_chain = m.client.trades(rid)
    mirror, curtailed = clear(feeder_model(), bids, RATE)
    assert on_chain == mirror and not curtailed
    assert [(t.buyer_bid, t.distance_m, t.charge) for t in on_chain] == [(1, 300, 12)]  # the near buyer
    assert m.client.round(rid).state == "cleared"
    assert m.client.curtailments(receipt) == []
    # without the charge the two buyers tie on surplus: the shorter distance still breaks the tie, and the
    # charge is 0
    rid2, closes2 = open_round(m, rate=0)
    bids2 = [submit(m, rid2, 0, True, 5_000, 300), submit(m, rid2, 2, False, 5_000, 401),
             submit(m, rid2, 1, False, 5_000, 400)]
    close(m, closes2)
    m.client.clear(m.w.relayer, rid2)
    assert m.client.trades(rid2) == clear(feeder_model(), bids2, 0)[0]
    assert [(t.buyer_bid, t.charge) for t in m.client.trades(rid2)] == [(1, 0)]  # the far, higher bid wins


def test_a_bid_after_its_round_closed_and_a_clearing_before_it_are_refused(mkt: Mkt) -> None:
    m = mkt
    rid, closes = open_round(m)
    submit(m, rid, 0, True, 1_000, 300)
    with pytest.raises(IllegalTransitionError) as early:
        m.client.clear(m.w.relayer, rid)
    assert "RoundTiming" in str(early.value)
    close(m, closes)
    with pytest.raises(IllegalTransitionError) as late:
        m.client.submit_bid(m.members[1], rid, False, 1_000, 400)
    assert late.value.expected == closes * 1000 and "RoundTiming" in str(late.value)
    m.client.clear(m.w.relayer, rid)
    with pytest.raises(IllegalTransitionError, match="RoundState"):
        m.client.submit_bid(m.members[1], rid, False, 1_000, 400)
    with pytest.raises(IllegalTransitionError, match="RoundState"):
        m.client.clear(m.w.relayer, rid)


def test_only_admitted_members_bid_and_only_the_operator_runs_the_feeder(mkt: Mkt) -> None:
    m = mkt
    rid, _ = open_round(m)
    with pytest.raises(AuthorizationError):
        m.client.submit_bid(m.w.carol, rid, False, 1_000, 400)
    with pytest.raises(AuthorizationError):  # not admitted by the delivery record
        m.client.set_member(m.w.a.operator, m.w.carol.address, 1)
    with pytest.raises(AuthorizationError):
        m.client.set_member(m.w.alice, m.members[0].address, 1)
    with pytest.raises(AuthorizationError):
        m.client.open_round(m.w.alice, m.w.evm.latest_timestamp() + 100, 0)


def test_a_clearing_that_would_overload_a_line_is_curtailed(mkt: Mkt) -> None:
    m = mkt
    m.client._send(m.client.contract.functions.setLineLimit(3, 2_000), m.w.a.operator)  # lateral 3: 2 kWh a round
    rows = list(FEEDER)
    rows[3] = (0, 600, 2_000)
    rid, closes = open_round(m)
    # seller at bus 1 → buyer at bus 3 (over line 1 up, line 3 down); the buyer at bus 2 bids too low to trade
    bids = [submit(m, rid, 0, True, 5_000, 300), submit(m, rid, 2, False, 5_000, 500),
            submit(m, rid, 1, False, 5_000, 301)]
    close(m, closes)
    receipt = m.client.clear(m.w.relayer, rid).receipt
    trades = m.client.trades(rid)
    assert trades == clear(feeder_model(rows), bids, RATE)[0]
    assert [(t.buyer_bid, t.quantity_wh) for t in trades] == [(1, 2_000)]  # curtailed to the line's limit
    assert m.client.curtailments(receipt) == [{"roundId": rid, "sellerBid": 0, "buyerBid": 1, "wantedWh": 5_000,
                                              "clearedWh": 2_000, "line": 3}]
    # the escrow of what did not clear went back: 3 kWh to the seller, the buyers' wei credited
    assert m.client.escrowed()[1] == 2_000


def test_settlement_of_prediction_error_feeds_the_delivery_record_and_runs_once(mkt: Mkt) -> None:
    m = mkt
    rid, closes = open_round(m)
    submit(m, rid, 0, True, 4_000, 300)
    submit(m, rid, 1, False, 4_000, 400)
    close(m, closes)
    m.client.clear(m.w.relayer, rid)
    (t,) = m.client.trades(rid)
    token = m.w.a.token
    seller, buyer = m.members[0].address, m.members[1].address
    buyer_wh = token.functions.balanceOf(buyer).call()
    m.client.settle(m.w.a.operator, rid, [3_000])  # a forecast error: 1 kWh short
    assert token.functions.balanceOf(buyer).call() == buyer_wh + 3_000
    assert m.w.a.record.functions.participantOf(seller).call() == [True, 4_000, 3_000]
    assert m.w.a.record.functions.scoreOf(seller).call() == [True, 7_500]
    # the park attests that score to another park (E2.7): the market's settlement is the reputation's source
    packet, _ = send_reputation(m.w.evm, m.w.a, m.w.alice, B, LANE, lower_hex(seller), lower_hex(m.w.carol.address),
                                m.w.evm.now_ms() + HOUR_MS)
    assert decode_reputation(decode_packet(packet).payload).score == 7_500
    assert m.client.claimable(seller) == 3_000 * t.price
    assert m.client.claimable(m.w.a.operator.address) == 3_000 * t.charge
    assert m.client.round(rid).state == "settled"
    with pytest.raises(IllegalTransitionError, match="RoundState") as again:
        m.client.settle(m.w.a.operator, rid, [3_000])
    assert again.value.expected == 2 and again.value.got == 3
    with pytest.raises(AuthorizationError):
        m.client.settle(m.w.alice, rid, [3_000])


def test_every_escrowed_denomination_is_conserved(mkt: Mkt) -> None:
    m = mkt
    wh0, wei0 = totals(m)
    assert (wei0, m.client.escrowed()) == (0, (0, 0))
    rid, closes = open_round(m)
    submit(m, rid, 0, True, 6_000, 300)
    submit(m, rid, 3, True, 3_000, 320)
    submit(m, rid, 1, False, 4_000, 420)
    submit(m, rid, 2, False, 4_000, 450)
    submit(m, rid, 4, False, 4_000, 200)  # too low: refunded
    paid = 4_000 * (420 + 450 + 200)
    wh, wei = totals(m)
    assert wh == wh0 and wei == paid and m.client.escrowed() == (paid, 9_000)
    close(m, closes)
    m.client.clear(m.w.relayer, rid)
    trades = m.client.trades(rid)
    assert trades

    def credited() -> int:
        accounts = [a.address for a in m.members] + [m.w.a.operator.address]
        return sum(m.client.claimable(a) for a in accounts)

    unsettled = sum(t.quantity_wh * (t.price + t.charge) for t in trades)
    assert credited() + unsettled == paid == m.client.escrowed()[0] == m.w.evm.w3.eth.get_balance(
        m.client.contract.address)
    assert m.client.escrowed()[1] == sum(t.quantity_wh for t in trades) == m.w.a.token.functions.balanceOf(
        m.client.contract.address).call()
    m.client.settle(m.w.a.operator, rid, [max(t.quantity_wh - 500, 0) for t in trades])
    assert credited() == paid == m.client.escrowed()[0]
    assert m.client.escrowed()[1] == 0 and totals(m)[0] == wh0
    for acct in [*m.members, m.w.a.operator]:
        if m.client.claimable(acct.address):
            m.client.withdraw(acct)
    assert m.client.escrowed() == (0, 0) and m.w.evm.w3.eth.get_balance(m.client.contract.address) == 0
    with pytest.raises(InsufficientFundsError):
        m.client.withdraw(m.members[0])


def test_a_participant_of_another_park_trades_on_its_imported_reputation(mkt: Mkt) -> None:
    """Park B attests its participant's delivery score to park A; A's delivery record admits A's account of that
    participant by the imported score (``admitImported``), and only then may the market connect and hear it."""
    m = mkt
    w = m.w
    subject = lower_hex(w.bob.address)
    w.evm.transact(w.b.record.functions.admit(w.bob.address), w.b.operator)
    w.evm.transact(w.b.record.functions.record(w.bob.address, 1_000, 950), w.b.operator)
    packet, _ = send_reputation(w.evm, w.b, w.bob, A, LANE, subject, lower_hex(w.carol.address),
                                w.evm.now_ms() + HOUR_MS)
    assert deliver(w, w.a, packet) == SUCCESS_ACK
    with pytest.raises(AuthorizationError):  # nothing admits carol on A yet
        m.client.set_member(w.a.operator, w.carol.address, 2)
    w.evm.transact(w.a.record.functions.setMinImportedScore(9_000), w.a.operator)
    w.evm.transact(w.a.record.functions.admitImported(B, subject, "eth-delivery-record/v1", w.carol.address),
                   w.a.operator)
    m.client.set_member(w.a.operator, w.carol.address, 2)
    rid, closes = open_round(m)
    submit(m, rid, 0, True, 1_000, 300)
    m.client.submit_bid(w.carol, rid, False, 1_000, 400)
    close(m, closes)
    m.client.clear(w.relayer, rid)
    (t,) = m.client.trades(rid)
    assert (t.buyer_bid, t.quantity_wh, t.distance_m) == (1, 1_000, 300)


def test_a_full_round_clears_within_a_block_and_the_49th_bid_is_refused(mkt: Mkt) -> None:
    """MAX_BIDS (48) bounds a clearing's gas: a full round, every pair crossing, takes under a third of a 30M block."""
    m = mkt
    rid, closes = open_round(m, seconds=10_000)
    bids = []
    for k in range(48):
        who = k % 5
        seller = k % 2 == 0
        bids.append(submit(m, rid, who, seller, 1_000 + 37 * k, (300 + k) if seller else (500 + k)))
    with pytest.raises(Exception, match="CodecInvalid"):
        m.client.submit_bid(m.members[1], rid, False, 1_000, 400)
    close(m, closes)
    gas = m.client.clear(m.w.relayer, rid).gas_used
    assert m.client.trades(rid) == clear(feeder_model(), bids, RATE)[0]
    assert gas < 8_000_000, gas


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_rounds_clear_on_chain_as_the_mirror_says(mkt: Mkt, seed: int) -> None:
    """Random bids on a feeder with tight lines (curtailments happen): the contract's sorted walk and the mirror's
    repeated best-pair search give the same trades, and no line ends above its limit."""
    import random
    m = mkt
    rng = random.Random(seed)
    rows = [(0, 0, 10**9)] + [(p, length, rng.randint(2, 12) * 1_000) for p, length in FEEDER_SHAPE]
    for bus in range(1, 5):
        m.client._send(m.client.contract.functions.setLineLimit(bus, rows[bus][2]), m.w.a.operator)
    rid, closes = open_round(m, rate=rng.choice([0, 20, 80]))
    rate = m.client.round(rid).charge_rate
    bids = [submit(m, rid, rng.randrange(5), rng.random() < 0.5, rng.randint(1, 9) * 1_000, rng.randint(280, 520))
            for _ in range(20)]
    close(m, closes)
    m.client.clear(m.w.relayer, rid)
    trades = m.client.trades(rid)
    f = feeder_model(rows)
    assert trades == clear(f, bids, rate)[0]
    flow = [0] * 5
    for t in trades:
        f.carry(flow, bids[t.seller_bid].bus, bids[t.buyer_bid].bus, t.quantity_wh)
    assert all(abs(x) <= rows[i][2] for i, x in enumerate(flow))


def test_malformed_bids_and_short_escrow_are_refused(mkt: Mkt) -> None:
    m = mkt
    rid, _ = open_round(m)
    fn = m.client.contract.functions
    buyer, seller = m.members[1], m.members[0]
    assert m.w.evm.revert_of(fn.submitBid(rid, False, 0, 400), buyer) == ("CodecInvalid",)
    assert m.w.evm.revert_of(fn.submitBid(rid, True, 1_000, 0), seller) == ("CodecInvalid",)
    assert m.w.evm.revert_of(fn.submitBid(rid + 1, False, 1_000, 400), buyer) == ("RoundState", rid + 1, 1, 0)
    with pytest.raises(InsufficientFundsError):  # a buyer must escrow quantity × price exactly
        m.client._send(fn.submitBid(rid, False, 1_000, 400), buyer, value=399_999)
    with pytest.raises(AuthorizationError):  # a seller must approve its kWh first
        m.client._send(fn.submitBid(rid, True, 1_000, 300), seller)
    with pytest.raises(IllegalTransitionError):  # a settlement before clearing
        m.client.settle(m.w.a.operator, rid, [])
    assert m.client.escrowed() == (0, 0) and m.client.round(rid).bids == 0
