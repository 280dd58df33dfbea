"""Relay fees on the Fabric park (protocol SPEC §6.10; chains/fabric/SPEC.md §F2): escrowed at ``send`` in the
market's currency, paid at ``settle`` to the payees of the certified outcome record, the rest refunded; the ack of
``recv`` names the relayer. The real contract on fake ledgers, real relay certificates; after every scenario the fee
escrow holds exactly the fees of the packets not settled and no Wh of the fee denom appeared or vanished
(:func:`conserved`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chains.common.fees import FEE_ESCROW
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
from protocol.codec import (
    ZERO_COMMITMENT,
    ack_commitment,
    decode_ack,
    encode_ack,
    encode_outcome,
    packet_commitment,
)
from protocol.paths import receipt_path
from protocol.types import (
    Acknowledgement,
    AckStatus,
    ChainId,
    FeePayees,
    LaneId,
    Packet,
    PacketOutcome,
)
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode import parks
from tests.unit.fabric_chaincode.harness import (
    ALICE,
    BOB,
    DPOS,
    FABRIC,
    FABRIC_ALICE_WH,
    LANE,
    RELAYER,
    V_ON_FABRIC,
    Harness,
    energy,
    genesis,
    make_harness,
)

FEES = {"verify": 10, "execute": 20, "confirm": 30}
TOTAL = 60
ALICE_ID, BOB_ID, RELAYER_ID, OPERATOR_ID = ("SalesMSP:alice", "OperatorMSP:bob", "OperatorMSP:relayer",
                                             "OperatorMSP:operator")
CAROL_ID = "SalesMSP:carol"
"""A valid account id nobody registered: a fee can still be credited to it."""
PAYEES = FeePayees(RELAYER_ID, BOB_ID, CAROL_ID)


@pytest.fixture
def h() -> Harness:
    h = make_harness()
    h.fabric.skew_ms = {OPERATOR_MSP: 0, SALES_MSP: 250}  # both organisations endorse one write set
    return h


def conserved(h: Harness) -> None:
    """The fee escrow holds exactly the unsettled fee records (also in :meth:`Harness.check`), and the fee denom's
    total over every account and escrow is what genesis issued."""
    h.check()
    view = h.view()
    records = [json.loads(v) for _, v in view.prefix_items(b"fees/")]
    assert view.balance(FEE_ESCROW, "kWh") == sum(int(r[s]) for r in records for s in FEES)
    total = sum(int(v) for k, v in view.prefix_items(b"balances/") if k.decode().endswith("/kWh")
                and k.decode().count("/") == 2)
    assert total + view.get_int(b"escrow/kWh") == FABRIC_ALICE_WH


def send_event(h: Harness) -> dict[str, Any]:
    name, payload = h.fabric.ledger.events[-1]
    (event,) = json.loads(payload)
    assert name == "send_packet"
    return dict(event)


def fabric_packet_executed_on_dpos(h: Harness, receiver: str = "bob", amount: int = 5_000,
                                   fees: dict[str, int] | None = None) -> Packet:
    packet = h.send_from_fabric(ALICE, **energy(receiver, amount, dst=DPOS, fees=FEES if fees is None else fees))
    conserved(h)
    h.net.recv(packet, h.verify_from_fabric(packet))
    conserved(h)
    return packet


def settle(h: Harness, packet: Packet, cert: dict[str, Any], ack_hex: str | None) -> list[dict[str, Any]]:
    events = h.ok(RELAYER, "settle", h.settle_args(packet, cert, ack_hex))
    conserved(h)
    return events


def fee_events(events: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """``(type, step, to, amount)`` of the fee events, in order."""
    return [(e["type"], e["step"], e.get("payee", e.get("to")), e["amount"]) for e in events
            if e["type"] in ("fee_paid", "fee_refunded")]


# --- phase 1: escrow --------------------------------------------------------------------------------------------


def test_send_escrows_the_fees_in_the_market_currency_and_reports_them_with_the_packet(h: Harness) -> None:
    packet = h.send_from_fabric(ALICE, **energy("bob", 5_000, dst=DPOS, fees=FEES))
    assert send_event(h)["fees"] == {**FEES, "denom": "kWh"}
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 5_000 - TOTAL
    assert h.balance(FEE_ESCROW) == TOTAL
    assert h.query("fees", DPOS, LANE, "1") == {"denom": "kWh", "escrow": TOTAL,
                                                "record": {**FEES, "denom": "kWh", "payer": ALICE_ID}}
    assert h.query("config")["fee_denom"] == "kWh"
    conserved(h)
    # the fees are not part of the packet: the same send without them commits the very same packet
    other = make_harness()
    assert other.send_from_fabric(ALICE, **energy("bob", 5_000, dst=DPOS)) == packet
    assert "fees" not in send_event(other) and other.query("fees", DPOS, LANE, "1")["record"] is None
    assert packet_commitment(packet).hex() == send_event(h)["commitment"]


def test_absent_steps_are_zero_and_all_zero_fees_are_no_fees(h: Harness) -> None:
    h.send_from_fabric(ALICE, **energy("bob", 1, dst=DPOS, fees={"execute": 7}))
    assert send_event(h)["fees"] == {"verify": 0, "execute": 7, "confirm": 0, "denom": "kWh"}
    h.send_from_fabric(ALICE, **energy("bob", 1, dst=DPOS, fees={"verify": 0, "confirm": 0}))
    assert "fees" not in send_event(h) and h.query("fees", DPOS, LANE, "2")["record"] is None
    h.send_from_fabric(ALICE, **energy("bob", 1, dst=DPOS, fees=None))  # null: no fees
    assert "fees" not in send_event(h)
    assert h.balance(FEE_ESCROW) == 7 and h.balance(ALICE_ID) == FABRIC_ALICE_WH - 3 - 7
    conserved(h)


def test_the_market_currency_is_the_fee_denom_even_when_another_denom_is_sent(h: Harness) -> None:
    """Bob holds only a voucher: he can send it, but not with fees (he has no kWh); given kWh, he can."""
    h.dpos_to_fabric("alice", **energy(BOB_ID, 7_000, dst=FABRIC))
    voucher = energy("bob", 100, dst=DPOS, denom=V_ON_FABRIC, timeout_timestamp_ms=h.net.now_ms + MINUTE)
    assert h.refused(BOB, "send", {**voucher, "fees": {"confirm": 1}}) == "funds.insufficient"
    h.ok(ALICE, "transfer", {"to": BOB_ID, "denom": "kWh", "amount_wh": 5})
    h.ok(BOB, "send", {**voucher, "fees": {"confirm": 5}})
    assert h.balance(BOB_ID) == 0 and h.balance(BOB_ID, V_ON_FABRIC) == 6_900 and h.balance(FEE_ESCROW) == 5
    conserved(h)


def test_a_park_whose_market_pays_in_another_currency_takes_its_fees_in_it() -> None:
    h = make_harness(init=False)
    g = genesis(h.net, market={"currency": "credit"},
                balances=[{"account": ALICE_ID, "denom": "kWh", "amount": FABRIC_ALICE_WH},
                          {"account": ALICE_ID, "denom": "credit", "amount": 50}])
    g["bridge"]["native_denoms"] = ["kWh", "credit"]
    h.ok(parks.OPERATOR, "init_bridge", json.dumps(g))
    assert h.query("config")["fee_denom"] == "credit"
    timeout = h.net.now_ms + MINUTE
    # all of alice's kWh can leave with fees: they are paid in credit
    h.ok(ALICE, "send", {**energy("bob", FABRIC_ALICE_WH, dst=DPOS, timeout_timestamp_ms=timeout),
                         "fees": {"execute": 50}})
    assert send_event(h)["fees"]["denom"] == "credit"
    assert (h.balance(ALICE_ID), h.balance(ALICE_ID, "credit"), h.balance(FEE_ESCROW, "credit")) == (0, 0, 50)
    assert h.query("fees", DPOS, LANE, "1")["escrow"] == 50
    h.check()


def test_the_fee_denom_is_no_genesis_setting_of_its_own() -> None:
    h = make_harness(init=False)
    g = genesis(h.net)
    g["bridge"]["fee_denom"] = "kWh"
    assert h.refused(parks.OPERATOR, "init_bridge", json.dumps(g)) == "codec.invalid"


def test_a_sender_of_the_fee_denom_needs_the_amount_and_the_fees(h: Harness) -> None:
    timeout = h.net.now_ms + MINUTE
    over = {**energy("bob", FABRIC_ALICE_WH - TOTAL + 1, dst=DPOS, timeout_timestamp_ms=timeout), "fees": FEES}
    assert h.refused(ALICE, "send", over) == "funds.insufficient"
    # without the fees the same amount is fine, and so is the amount that leaves exactly the fees
    exact = {**over, "amount_wh": FABRIC_ALICE_WH - TOTAL}
    h.ok(ALICE, "send", exact)
    assert h.balance(ALICE_ID) == 0 and h.balance(FEE_ESCROW) == TOTAL
    conserved(h)


# --- phase 4: payment -------------------------------------------------------------------------------------------


def test_a_success_ack_pays_each_step_to_its_certified_payee(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h)
    cert, ack_hex = h.confirm_from_dpos(packet, PAYEES)
    events = settle(h, packet, cert, ack_hex)
    assert events[0]["type"] == "settle_packet" and not events[0]["refunded"]
    assert fee_events(events) == [("fee_paid", "verify", RELAYER_ID, 10), ("fee_paid", "execute", BOB_ID, 20),
                                  ("fee_paid", "confirm", CAROL_ID, 30)]
    ids = {"src": FABRIC, "dst": DPOS, "lane": LANE, "sequence": 1, "denom": "kWh"}
    assert all({k: e[k] for k in ids} == ids for e in events[1:])
    assert (h.balance(RELAYER_ID), h.balance(BOB_ID), h.balance(CAROL_ID)) == (10, 20, 30)
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 5_000 - TOTAL and h.balance(FEE_ESCROW) == 0
    assert h.query("fees", DPOS, LANE, "1") == {"denom": "kWh", "escrow": 0, "record": None}
    # the chaincode event carries them too (what the relayer counts its earnings from)
    name, payload = h.fabric.ledger.events[-1]
    assert name == "settle_packet" and json.loads(payload) == events


def test_an_error_ack_refunds_the_asset_and_still_pays_the_relayers(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h, receiver="nobody")
    cert, ack_hex = h.confirm_from_dpos(packet, PAYEES)
    assert not decode_ack(bytes.fromhex(ack_hex)).success
    events = settle(h, packet, cert, ack_hex)
    assert events[0]["refunded"] and events[0]["ack_code"] == "receiver.unknown"
    assert [e[0] for e in fee_events(events)] == ["fee_paid"] * 3
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - TOTAL
    assert h.query("supply")["escrow_by_lane"] == {}


def test_a_timeout_refunds_the_asset_and_the_execute_fee(h: Harness) -> None:
    packet = h.send_from_fabric(ALICE, **energy("bob", 5_000, dst=DPOS, fees=FEES,
                                                timeout_timestamp_ms=h.net.now_ms + MINUTE))
    h.verify_from_fabric(packet)
    h.net.advance(2 * MINUTE)  # never executed on dpos-park; the relay records TIMED_OUT, no execute payee
    cert = h.certify_outcome(packet, PacketOutcome.TIMED_OUT, ZERO_COMMITMENT, FeePayees(RELAYER_ID, "", CAROL_ID))
    events = settle(h, packet, cert, None)
    assert events[0]["outcome"] == "timed_out" and events[0]["refunded"]
    assert fee_events(events) == [("fee_paid", "verify", RELAYER_ID, 10), ("fee_refunded", "execute", ALICE_ID, 20),
                                  ("fee_paid", "confirm", CAROL_ID, 30)]
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 10 - 30


def test_an_unverified_timeout_names_only_the_confirmer(h: Harness) -> None:
    packet = h.send_from_fabric(ALICE, **energy("bob", 5_000, dst=DPOS, fees=FEES,
                                                timeout_timestamp_ms=h.net.now_ms + MINUTE))
    h.net.advance(2 * MINUTE)
    cert = h.certify_outcome(packet, PacketOutcome.TIMED_OUT, ZERO_COMMITMENT, FeePayees(confirm=RELAYER_ID))
    events = settle(h, packet, cert, None)
    assert fee_events(events) == [("fee_refunded", "verify", ALICE_ID, 10), ("fee_refunded", "execute", ALICE_ID, 20),
                                  ("fee_paid", "confirm", RELAYER_ID, 30)]
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 30


def test_a_payee_that_is_no_account_of_this_park_is_refunded_to_the_payer(h: Harness) -> None:
    """The relay names payees of any form (a Python park's ``relayer``, an Ethereum address): the chaincode credits
    only an account id ``<MSP id>:<common name>``."""
    packet = fabric_packet_executed_on_dpos(h)
    weird = FeePayees("relayer", "0x" + "ab" * 20, "OperatorMSP:bad/name")
    cert, ack_hex = h.confirm_from_dpos(packet, weird)
    events = settle(h, packet, cert, ack_hex)
    assert fee_events(events) == [("fee_refunded", "verify", ALICE_ID, 10), ("fee_refunded", "execute", ALICE_ID, 20),
                                  ("fee_refunded", "confirm", ALICE_ID, 30)]
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 5_000
    assert not list(h.view().prefix_items(b"balances/relayer/"))


def test_a_packet_without_fees_settles_a_record_with_payees_and_pays_nothing(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h, fees={})
    cert, ack_hex = h.confirm_from_dpos(packet, PAYEES)
    events = settle(h, packet, cert, ack_hex)
    assert [e["type"] for e in events] == ["settle_packet"]
    assert h.balance(RELAYER_ID) == 0 and h.balance(FEE_ESCROW) == 0


def test_fees_of_several_packets_stay_apart(h: Harness) -> None:
    p1 = fabric_packet_executed_on_dpos(h, amount=100)
    p2 = fabric_packet_executed_on_dpos(h, amount=200, fees={"execute": 1_000})
    assert h.balance(FEE_ESCROW) == TOTAL + 1_000
    cert, ack_hex = h.confirm_from_dpos(p2, FeePayees(execute=BOB_ID))
    settle(h, p2, cert, ack_hex)
    assert h.balance(BOB_ID) == 1_000 and h.balance(FEE_ESCROW) == TOTAL
    cert, ack_hex = h.confirm_from_dpos(p1, PAYEES)
    settle(h, p1, cert, ack_hex)
    assert h.balance(BOB_ID) == 1_020 and h.balance(FEE_ESCROW) == 0


# --- phase 3: the ack names the relayer --------------------------------------------------------------------------


def test_recv_with_a_relayer_writes_the_four_field_ack_and_its_commitment(h: Harness) -> None:
    packet = h.net.send(DPOS, "alice", **energy(BOB_ID, 700, dst=FABRIC))
    event = h.recv_on_fabric(packet, h.net.verify(packet), relayer="relayer-1")
    expected = Acknowledgement(AckStatus.SUCCESS, "ok", b"", "relayer-1")
    assert decode_ack(bytes.fromhex(event["ack"])) == expected
    assert bytes.fromhex(event["ack"]) == encode_ack(expected) and encode_ack(expected)[32:64] == (128).to_bytes(32,
                                                                                                                 "big")
    assert event["ack_commitment"] == ack_commitment(expected).hex()
    assert h.raw(receipt_path(ChainId(DPOS), LaneId(LANE), packet.sequence)) == ack_commitment(expected)
    assert h.query("receipt", DPOS, LANE, str(packet.sequence))["ack"] == event["ack"]
    assert h.balance(BOB_ID, V_ON_FABRIC) == 700
    # the relay proves that receipt, and the Python park settles on that ack
    cert, ack_hex = h.confirm_from_fabric(packet)
    assert ack_hex == event["ack"]
    assert not h.net.settle(packet, cert, ack_hex)["refunded"]
    conserved(h)


def test_an_error_ack_names_the_relayer_too_and_no_relayer_is_the_three_field_ack(h: Harness) -> None:
    packet = h.net.send(DPOS, "alice", **energy("SalesMSP:carol", 900, dst=FABRIC))
    event = h.recv_on_fabric(packet, h.net.verify(packet), relayer="r.2")
    assert decode_ack(bytes.fromhex(event["ack"])) == Acknowledgement(AckStatus.ERROR, "receiver.unknown", b"", "r.2")
    for relayer in (None, ""):
        packet = h.net.send(DPOS, "alice", **energy(BOB_ID, 1, dst=FABRIC))
        event = h.recv_on_fabric(packet, h.net.verify(packet), relayer=relayer)
        ack = Acknowledgement(AckStatus.SUCCESS, "ok", b"")
        assert event["ack"] == encode_ack(ack).hex() and event["ack_commitment"] == ack_commitment(ack).hex()
    conserved(h)


# --- refusals: typed, and nothing written -------------------------------------------------------------------------


@pytest.mark.parametrize("fees", [
    "10", [10], 10, True, {"tip": 1}, {"verify": 1, "Execute": 1}, {"verify": -1}, {"execute": True},
    {"confirm": False}, {"verify": 2**64}, {"verify": 2**64 - 1, "execute": "1"}, {"confirm": 1.5},
    {"verify": None}, {"execute": {"amount": 1}},
], ids=repr)
def test_malformed_fees_are_refused_before_anything_is_written(h: Harness, fees: Any) -> None:
    args = {**energy("bob", 1, dst=DPOS, timeout_timestamp_ms=h.net.now_ms + MINUTE), "fees": fees}
    assert h.refused(ALICE, "send", args) == "codec.invalid"


def test_fees_beyond_any_balance_are_refused(h: Harness) -> None:
    args = {**energy("bob", 1, dst=DPOS, timeout_timestamp_ms=h.net.now_ms + MINUTE)}
    assert h.refused(ALICE, "send", {**args, "fees": {"verify": 2**64 - 1, "execute": 2**64 - 1}}
                     ) == "funds.insufficient"
    assert h.refused(BOB, "send", {**args, "fees": {"confirm": 1}}) == "funds.insufficient"
    # any other refusal of the send comes first and still writes nothing
    assert h.refused(ALICE, "send", {**args, "fees": FEES, "lane": "lane-9"}) == "lane.invalid"


@pytest.mark.parametrize("relayer", ["Relayer", "r" * 65, "relayer/1", " relayer", "relayer\n", 7, None, ["r"],
                                     {"id": "r"}, True], ids=repr)
def test_a_bad_relayer_is_refused_and_nothing_is_written(h: Harness, relayer: Any) -> None:
    packet = h.net.send(DPOS, "alice", **energy(BOB_ID, 1, dst=FABRIC))
    args = {**h.recv_args(packet, h.net.verify(packet)), "relayer": relayer}
    assert h.refused(RELAYER, "recv", args) == "codec.invalid"
    h.recv_on_fabric(packet, args["certificate"], relayer="r" * 64)  # the longest id is fine


def _with_value(cert: dict[str, Any], value: bytes | None) -> dict[str, Any]:
    return {**cert, "value": None if value is None else value.hex()}


def test_payees_other_than_the_certified_ones_are_refused(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h)
    cert, ack_hex = h.confirm_from_dpos(packet, PAYEES)
    pc, ac = packet_commitment(packet), ack_commitment(decode_ack(bytes.fromhex(ack_hex)))
    forgeries = [
        FeePayees(RELAYER_ID, "SalesMSP:mallory", CAROL_ID),  # one payee swapped
        FeePayees(RELAYER_ID, BOB_ID, ""),                    # one dropped
        FeePayees(),                                          # the three-field record: everything refunded
    ]
    for payees in forgeries:
        forged = _with_value(cert, encode_outcome(PacketOutcome.ACKED, pc, ac, payees))
        assert h.refused(RELAYER, "settle", h.settle_args(packet, forged, ack_hex)) == "proof.invalid"
    # a value that is no outcome record at all, or none: a wrong value, as on every park
    for raw in (b"\x00" * 5, encode_outcome(PacketOutcome.ACKED, pc, ac, PAYEES) + b"\x00",
                encode_outcome(PacketOutcome.ACKED, pc, ac) + b"\x00" * 32):
        assert h.refused(RELAYER, "settle", h.settle_args(packet, _with_value(cert, raw), ack_hex)) == "proof.invalid"
    assert h.refused(RELAYER, "settle", h.settle_args(packet, _with_value(cert, None), ack_hex)) == "proof.invalid"
    assert h.balance(FEE_ESCROW) == TOTAL
    settle(h, packet, cert, ack_hex)
    assert (h.balance(RELAYER_ID), h.balance(BOB_ID), h.balance(CAROL_ID)) == (10, 20, 30)


def test_payees_where_the_relay_certified_none_are_refused(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h)
    cert, ack_hex = h.confirm_from_dpos(packet)  # nobody earned anything: the three-field record
    pc, ac = packet_commitment(packet), ack_commitment(decode_ack(bytes.fromhex(ack_hex)))
    forged = _with_value(cert, encode_outcome(PacketOutcome.ACKED, pc, ac, FeePayees(confirm=BOB_ID)))
    assert h.refused(RELAYER, "settle", h.settle_args(packet, forged, ack_hex)) == "proof.invalid"
    events = settle(h, packet, cert, ack_hex)
    assert [e[0] for e in fee_events(events)] == ["fee_refunded"] * 3
    assert h.balance(ALICE_ID) == FABRIC_ALICE_WH - 5_000


def test_a_replayed_settle_is_refused_and_pays_nothing_twice(h: Harness) -> None:
    packet = fabric_packet_executed_on_dpos(h)
    cert, ack_hex = h.confirm_from_dpos(packet, PAYEES)
    settle(h, packet, cert, ack_hex)
    assert h.refused(RELAYER, "settle", h.settle_args(packet, cert, ack_hex)) == "packet.replay"
    assert (h.balance(RELAYER_ID), h.balance(BOB_ID), h.balance(CAROL_ID)) == (10, 20, 30)
    conserved(h)


# --- charging rights and reputation between Fabric parks ------------------------------------------------------------


@pytest.fixture
def net() -> parks.Parks:
    return parks.make_parks(parks.A, parks.B)


def test_a_charging_right_with_fees_between_fabric_parks(net: parks.Parks) -> None:
    a, b = parks.A, parks.B
    net.issue(a, "r1")
    packet = net.send_right(a, b, "r1", fees=FEES)
    assert net.query(a, "fees", b, LANE, "1")["record"] == {**FEES, "denom": "kWh", "payer": ALICE_ID}
    net.check()
    ack = net.recv(packet, net.verify(packet), relayer="relayer-b")
    assert ack["success"] and decode_ack(bytes.fromhex(ack["ack"])).relayer == "relayer-b"
    cert, ack_hex = net.confirm(packet, FeePayees(RELAYER_ID, "", OPERATOR_ID))
    net.settle(packet, cert, ack_hex)
    net.check()
    balance = {who: net.query(a, "balance", who, "kWh")["amount_wh"] for who in (ALICE_ID, RELAYER_ID, OPERATOR_ID)}
    assert balance == {ALICE_ID: 1_000_000 - 10 - 30, RELAYER_ID: 10, OPERATOR_ID: 30}
    assert net.right(b, f"{LANE}/{a}/r1")["owner"] == BOB_ID


def test_a_right_owner_who_cannot_pay_the_fees_keeps_the_right(net: parks.Parks) -> None:
    a, b = parks.A, parks.B
    net.issue(a, "r1", owner=BOB_ID)
    before = net.right(a, "r1")
    args = {"dst_chain": b, "lane": LANE, "kind": "charging_right", "right_id": "r1", "receiver": ALICE_ID,
            "timeout_timestamp_ms": net.now_ms + MINUTE, "fees": {"execute": 1}}
    assert net.refused(a, parks.BOB, "send", args) == "funds.insufficient"
    assert net.right(a, "r1") == before
    net.send_right(a, b, "r1", receiver=ALICE_ID, who=parks.BOB)  # without fees it leaves
    net.check()


def test_reputation_with_fees_refused_by_the_target_pays_the_relayers(net: parks.Parks) -> None:
    a, b = parks.A, parks.B
    net.ok(a, parks.OPERATOR, "set_standing", {"account": ALICE_ID, "certified": True, "score": 8_000})
    packet = net.send(a, parks.ALICE, dst_chain=b, kind="reputation", subject=ALICE_ID, receiver="SalesMSP:nobody",
                      fees={"verify": 3, "execute": 4})
    ack = net.recv(packet, net.verify(packet), relayer="relayer-b")
    assert ack["code"] == "receiver.unknown"
    cert, ack_hex = net.confirm(packet, FeePayees(RELAYER_ID, RELAYER_ID, ""))
    net.settle(packet, cert, ack_hex)
    net.check()
    assert net.query(a, "balance", RELAYER_ID, "kWh")["amount_wh"] == 7


def test_a_timed_out_right_refunds_the_execute_fee(net: parks.Parks) -> None:
    a, b = parks.A, parks.B
    net.issue(a, "r1")
    packet = net.send_right(a, b, "r1", fees=FEES, timeout_timestamp_ms=net.now_ms + MINUTE)
    cert = net.verify(packet)
    net.advance(2 * MINUTE)
    outcome = net.confirm_timeout(packet, cert, FeePayees(verify=RELAYER_ID, confirm=RELAYER_ID))
    net.settle(packet, outcome, None)
    net.check()
    assert net.query(a, "balance", RELAYER_ID, "kWh")["amount_wh"] == 40
    assert net.query(a, "balance", ALICE_ID, "kWh")["amount_wh"] == 1_000_000 - 40
    assert net.right(a, "r1")["owner"] == ALICE_ID
