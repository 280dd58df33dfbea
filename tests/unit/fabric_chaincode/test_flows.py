"""The four phases between the Fabric park (the real contract on a fake ledger) and a Python park, with real relay
certificates; supply conservation checked after each phase (:meth:`Harness.check`). Every submit is endorsed by
both organisations with chaincode clocks 250 ms apart, and their read/write sets must match: the clock never
reaches the ledger."""

from __future__ import annotations

import json

import pytest

from chains.common import wire
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
from protocol.codec import decode_packet, packet_commitment
from protocol.lane_config import encode_lane_config
from protocol.paths import commitment_path, lane_config_path
from protocol.types import ChainId, LaneId
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode.harness import (
    ALICE,
    BOB,
    CAROL,
    DPOS,
    FABRIC,
    FABRIC_ALICE_WH,
    LANE,
    OPERATOR,
    RELAYER,
    V_ON_DPOS,
    V_ON_FABRIC,
    Harness,
    account,
    energy,
    make_harness,
)


@pytest.fixture
def h() -> Harness:
    h = make_harness()
    h.fabric.skew_ms = {OPERATOR_MSP: 0, SALES_MSP: 250}
    return h


def test_genesis_sets_up_accounts_balances_and_the_bridge(h: Harness) -> None:
    assert h.query("config")["config"] == {"chain_id": FABRIC, "relay_chain_id": "relay", "native_denoms": ["kWh"],
                                           "rights_operator": "OperatorMSP:operator",
                                           "trusting_period_ms": 7 * 24 * 3600 * 1000,
                                           "relay_admin": "OperatorMSP:operator",
                                           "max_certificate_age_ms": 10 * 60 * 1000}
    assert h.query("config")["relay_validators"]["hash"] == h.net.relay.vset.hash.hex()
    assert h.query("config")["fee_denom"] == "kWh"  # relay fees are in the market's currency (test_fees.py)
    assert h.balance("SalesMSP:alice") == FABRIC_ALICE_WH
    assert h.query("supply") == {"escrow": {"kWh": 0}, "escrow_by_lane": {}, "vouchers": {},
                                 "issued": {"kWh": FABRIC_ALICE_WH}}
    assert h.query("lane", DPOS, LANE) == {"configured": True, "capacities": {}, "relay_height": 0}
    assert h.query("whoami", who=ALICE) == {"account": "SalesMSP:alice", "registered": True}
    assert h.query("whoami", who=CAROL) == {"account": "SalesMSP:carol", "registered": False}
    ((name, payload),) = h.fabric.ledger.events
    (event,) = json.loads(payload)
    assert name == "bridge_initialised" and event["accounts"] == 4 and event["chain_id"] == FABRIC
    h.check()


def test_energy_from_fabric_escrows_at_home_and_mints_a_voucher_on_the_python_park(h: Harness) -> None:
    packet, ack, settle = h.fabric_to_dpos(ALICE, **energy("bob", 5_000, dst=DPOS))
    assert packet.sender == "SalesMSP:alice" and packet.src_chain == FABRIC and packet.sequence == 1
    assert ack["success"] and settle["outcome"] == "acked" and not settle["refunded"]
    assert h.balance("SalesMSP:alice") == FABRIC_ALICE_WH - 5_000
    assert h.query("supply")["escrow_by_lane"] == {f"{DPOS}/{LANE}/kWh": 5_000}
    assert h.dpos.balance("bob", V_ON_DPOS) == 5_000
    # the commitment and the packet bytes are gone once settled
    assert h.query("packet", DPOS, LANE, "1") == {"packet": None, "commitment": None}
    assert h.query("next_sequence", DPOS, LANE) == {"next_sequence": 2}
    assert h.fabric_to_dpos(ALICE, **energy("bob", 1, dst=DPOS))[0].sequence == 2


def test_send_stores_the_packet_and_commitment_and_emits_send_packet(h: Harness) -> None:
    packet = h.send_from_fabric(ALICE, **energy("bob", 10, dst=DPOS))
    name, payload = h.fabric.ledger.events[-1]
    (event,) = json.loads(payload)
    assert name == "send_packet" and event["type"] == "send_packet"
    assert decode_packet(bytes.fromhex(event["packet"])) == packet
    stored = h.query("packet", DPOS, LANE, "1")
    assert stored == {"packet": event["packet"], "commitment": packet_commitment(packet).hex()}
    assert h.raw(commitment_path(ChainId(DPOS), LaneId(LANE), 1)) == packet_commitment(packet)


def test_energy_into_fabric_mints_a_voucher_and_it_goes_home_burned(h: Harness) -> None:
    h.dpos_to_fabric("alice", **energy("OperatorMSP:bob", 7_000, dst=FABRIC))
    assert h.balance("OperatorMSP:bob", V_ON_FABRIC) == 7_000
    assert h.query("supply")["vouchers"] == {V_ON_FABRIC: 7_000}
    # a voucher moves between Fabric accounts like any token
    h.ok(BOB, "transfer", {"to": "SalesMSP:alice", "denom": V_ON_FABRIC, "amount_wh": 2_000})
    assert h.balance("SalesMSP:alice", V_ON_FABRIC) == 2_000
    h.check()
    # home: burned on Fabric at send, unescrowed on dpos-park at receipt
    packet = h.send_from_fabric(BOB, **energy("bob", 3_000, dst=DPOS, denom=V_ON_FABRIC))
    assert h.query("supply")["vouchers"] == {V_ON_FABRIC: 4_000}
    h.check()
    ack = h.net.recv(packet, h.verify_from_fabric(packet))
    assert ack["success"] and h.dpos.balance("bob", "kWh") == 3_000
    assert h.dpos.balance("alice", "kWh") == 100_000 - 7_000
    cert, ack_hex = h.net.confirm(packet)
    assert not h.settle_on_fabric(packet, cert, ack_hex)["refunded"]
    h.check()


def test_an_unregistered_receiver_gets_an_error_ack_and_the_sender_a_refund(h: Harness) -> None:
    packet, ack, settle = h.dpos_to_fabric("alice", **energy("SalesMSP:carol", 900, dst=FABRIC))
    assert not ack["success"] and ack["code"] == "receiver.unknown"
    assert settle["refunded"] and h.dpos.balance("alice", "kWh") == 100_000
    assert h.query("receipt", DPOS, LANE, str(packet.sequence))["ack"] == ack["ack"]
    # once carol registers (her own creator identity), she can receive
    assert h.ok(CAROL, "register") == [{"type": "account_registered", "account": "SalesMSP:carol"}]
    assert h.ok(CAROL, "register") == []  # nothing to do, nothing written
    _, ack, _ = h.dpos_to_fabric("alice", **energy("SalesMSP:carol", 900, dst=FABRIC))
    assert ack["success"] and h.balance("SalesMSP:carol", V_ON_FABRIC) == 900


def test_an_error_ack_from_the_python_park_refunds_on_fabric(h: Harness) -> None:
    packet, ack, settle = h.fabric_to_dpos(ALICE, **energy("nobody", 4_000, dst=DPOS))
    assert not ack["success"] and ack["code"] == "receiver.unknown"
    assert settle["refunded"] and settle["ack_code"] == "receiver.unknown"
    assert h.balance("SalesMSP:alice") == FABRIC_ALICE_WH
    assert h.query("supply")["escrow_by_lane"] == {}
    assert packet.sequence == 1


def test_the_sender_is_always_the_creator(h: Harness) -> None:
    """Nobody can spend another account's balance: there is no sender argument, and one supplied is refused."""
    assert h.refused(BOB, "send", {**energy("bob", 1, dst=DPOS), "timeout_timestamp_ms": h.net.now_ms + MINUTE,
                                   "sender": "SalesMSP:alice"}) == "codec.invalid"
    assert h.refused(BOB, "send", {**energy("bob", 1, dst=DPOS), "timeout_timestamp_ms": h.net.now_ms + MINUTE}
                     ) == "funds.insufficient"
    assert h.refused(BOB, "transfer", {"to": "OperatorMSP:bob", "denom": "kWh", "amount_wh": 1}
                     ) == "funds.insufficient"
    h.ok(ALICE, "transfer", {"to": account(BOB), "denom": "kWh", "amount_wh": 10})
    assert h.balance("OperatorMSP:bob") == 10 and h.balance("SalesMSP:alice") == FABRIC_ALICE_WH - 10
    assert h.refused(ALICE, "transfer", {"to": "SalesMSP:carol", "denom": "kWh", "amount_wh": 1}) == "protocol"


def test_lane_config_and_relay_validator_updates_through_the_chaincode(h: Harness) -> None:
    args = h.net.lane_update_args(FABRIC, DPOS, LANE, {"kWh": 2_000})
    (event,) = h.ok(RELAYER, "update_lane", args)
    assert event["type"] == "lane_config_updated" and event["capacities"] == {"kWh": 2_000}
    assert h.query("lane", DPOS, LANE)["capacities"] == {"kWh": 2_000}
    assert h.refused(ALICE, "send", {**energy("bob", 2_001, dst=DPOS),
                                     "timeout_timestamp_ms": h.net.now_ms + MINUTE}) == "lane.over_capacity"
    assert h.refused(RELAYER, "update_lane", args) == "packet.replay"  # an old record cannot roll back
    # a newer certificate, but of another value than the one claimed
    newer = h.net.lane_update_args(FABRIC, DPOS, LANE, {"kWh": 3_000})
    assert h.refused(RELAYER, "update_lane", {**newer, "config": encode_lane_config({"kWh": 9}).hex()}
                     ) == "proof.invalid"
    h.ok(RELAYER, "update_lane", newer)
    assert h.query("lane", DPOS, LANE)["capacities"] == {"kWh": 3_000}
    assert lane_config_path(ChainId(FABRIC), ChainId(DPOS), LaneId(LANE)).hex() == args["certificate"]["key"]

    commit, new_set = h.net.relay.rotate(h.net.now_ms, generation=1)
    upd = {"commit": wire.commit_to_json(commit), "new_set": wire.validator_set_to_json(new_set)}
    (event,) = h.ok(RELAYER, "update_relay_validators", upd)
    assert event["type"] == "relay_validators_updated" and event["hash"] == new_set.hash.hex()
    assert h.refused(RELAYER, "update_relay_validators", upd) == "packet.replay"
    # certificates of the new set are accepted, of the old one no more
    h.dpos.state.set_json(b"bridge/relay_validators", {**wire.validator_set_to_json(new_set),
                                                       "update_height": commit.header.height})
    _, ack, _ = h.dpos_to_fabric("alice", **energy("OperatorMSP:bob", 5, dst=FABRIC))
    assert ack["success"]


def test_charging_rights_are_issued_by_the_rights_operator_only(h: Harness) -> None:
    """Issuing and the registry are the operator's (tests/unit/fabric_chaincode/test_assets.py has the rest: rights
    across Fabric parks, admission, reputation)."""
    right = {"right_id": "r1", "station": "s1", "transformer": "t1", "power_kw": 40,
             "slot_start_ms": h.net.now_ms + 60 * MINUTE, "slot_end_ms": h.net.now_ms + 120 * MINUTE,
             "owner": "SalesMSP:alice"}
    assert h.refused(ALICE, "issue_right", right) == "auth.denied"
    assert h.refused(OPERATOR, "issue_right", right) == "asset.invalid"  # station s1 is not registered yet
    assert h.refused(ALICE, "set_station", {"name": "s1", "transformer": "t1"}) == "auth.denied"
    h.ok(OPERATOR, "set_station", {"name": "s1", "transformer": "t1"})
    (event,) = h.ok(OPERATOR, "issue_right", right)
    assert event["type"] == "right_issued" and event["owner"] == "SalesMSP:alice"
    assert h.refused(OPERATOR, "issue_right", {**right, "right_id": "r2", "power_kw": 61}) == "asset.invalid"
    assert h.refused(ALICE, "set_transformer", {"name": "t1", "capacity_kw": 500}) == "auth.denied"
    h.ok(OPERATOR, "set_transformer", {"name": "t1", "capacity_kw": 500})
    h.ok(OPERATOR, "issue_right", {**right, "right_id": "r2", "power_kw": 61})


def test_metadata_lists_every_function_with_its_kind() -> None:
    from chains.fabric.chaincode.contract import FUNCTIONS, METADATA_FUNCTION
    h = make_harness(init=False)  # answers before genesis: a launcher's readiness query
    listed = h.query(METADATA_FUNCTION)["contracts"]["bridge"]["transactions"]
    assert {t["name"]: t["tags"] for t in listed} == {
        name: ["submit" if f.submit else "evaluate"] for name, f in FUNCTIONS.items() if name != METADATA_FUNCTION}


def test_ping_reads_and_writes_nothing_so_keepalives_never_conflict(h: Harness) -> None:
    """A relayer's keepalive (``ping``): a transaction that commits into a block (a quiet channel's relay client stays
    alive, SPEC §8.7) with an empty read/write set and no event: two relayers pinging at once never MVCC-conflict."""
    from chains.fabric.consts import PEER_ORGS

    before = h.fabric.ledger.snapshot()
    ends = [h.fabric.endorse(RELAYER, "ping", now_ms=h.net.now_ms, org=org) for org in PEER_ORGS]
    assert all(e.reads == {} and e.writes == [] and e.event is None for e in ends)
    assert ends[0].rwset() == ends[1].rwset()
    assert h.ok(RELAYER, "ping") == [] and h.ok(OPERATOR, "ping") == []
    assert h.fabric.ledger.snapshot() == before and h.fabric.ledger.invalid == 0
