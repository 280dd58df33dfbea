"""The four phases end to end between simulated parks: energy, charging rights, reputation.

Every scenario runs on one clock with real certificates and checks supply conservation and the
one-live-copy rule for charging rights after each phase (:meth:`Network.check`).
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import (
    ESCROW_OWNER,
    AssetError,
    BridgeHooks,
    default_admission,
    reputation_path,
    supply_report,
)
from chains.common.state import ChainState
from protocol.codec import encode_energy, encode_packet
from protocol.errors import TimeoutExpiredError
from protocol.types import ChainId, ChargingRightPayload, EnergyPayload, LaneId, Packet, PacketKind
from tests.unit.bridge.sim import MINUTE, Network, two_parks

VOUCHER = "lane-0/dpos-park/kWh"


@pytest.fixture
def net() -> Network:
    return two_parks()


def energy(receiver: str, amount: int, denom: str = "kWh", dst: str = "poc-park", lane: str = "lane-0",
           **kw: Any) -> dict[str, Any]:
    return {"dst_chain": dst, "lane": lane, "kind": "energy", "receiver": receiver, "denom": denom,
            "amount_wh": amount, **kw}


# --- energy ---------------------------------------------------------------------------------------


def test_energy_out_escrows_at_home_and_mints_a_voucher(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    packet, ack, settle = net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))
    assert packet.sequence == 1 and ack["success"] and ack["code"] == "ok"
    assert settle == {"type": "settle_packet", "src": "dpos-park", "dst": "poc-park", "lane": "lane-0",
                      "sequence": 1, "kind": "energy", "outcome": "acked", "ack_code": "ok", "refunded": False}
    assert dpos.balance("alice", "kWh") == 95_000
    assert supply_report(dpos.state, ["kWh"])["escrow"] == {"kWh": 5_000}
    assert poc.balance("bob", VOUCHER) == 5_000 and poc.supply(VOUCHER) == 5_000
    # the commitment and the stored packet are gone once settled; the receipt and ack stay on the target
    assert dpos.state.prefix_items(b"commitments/") == [] and dpos.state.prefix_items(b"packets/") == []
    assert poc.state.get(b"receipts/dpos-park/lane-0/1") is not None
    # sequences count up per lane
    assert net.roundtrip("dpos-park", "alice", **energy("bob", 1))[0].sequence == 2


def test_energy_the_other_way_uses_its_own_trace(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    net.roundtrip("poc-park", "carol", **energy("alice", 7_000, dst="dpos-park"))
    net.roundtrip("dpos-park", "alice", **energy("bob", 1_000))
    # both chains call their token kWh; the traces keep them apart
    assert dpos.balance("alice", "lane-0/poc-park/kWh") == 7_000 and dpos.balance("alice", "kWh") == 99_000
    assert poc.balance("carol", "kWh") == 33_000 and poc.balance("bob", VOUCHER) == 1_000
    assert supply_report(poc.state, ["kWh"])["escrow"] == {"kWh": 7_000}


def test_voucher_going_home_is_burned_there_and_unescrowed_at_home(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))
    packet = net.send("poc-park", "bob", **energy("alice", 2_000, denom=VOUCHER, dst="dpos-park"))
    assert poc.supply(VOUCHER) == 3_000 and poc.balance("bob", VOUCHER) == 3_000  # burned at once
    net.check()
    ack = net.recv(packet, net.verify(packet))
    assert ack["success"]
    assert dpos.balance("alice", "kWh") == 97_000  # the trace was stripped: alice gets kWh, not a voucher
    assert dpos.balance("alice", f"lane-0/poc-park/{VOUCHER}") == 0
    net.check()
    cert, ack_hex = net.confirm(packet)
    assert net.settle(packet, cert, ack_hex)["refunded"] is False
    assert poc.supply(VOUCHER) == 3_000  # the burn stays burned
    assert supply_report(dpos.state, ["kWh"])["escrow"]["kWh"] == 3_000
    net.check()
    # all of it home: no voucher and no escrow left anywhere
    net.roundtrip("poc-park", "bob", **energy("alice", 3_000, denom=VOUCHER, dst="dpos-park"))
    assert poc.supply(VOUCHER) == 0 and dpos.balance("alice", "kWh") == 100_000
    assert supply_report(dpos.state, ["kWh"]) == {"escrow": {"kWh": 0}, "escrow_by_lane": {}, "vouchers": {}}


def test_multi_hop_voucher_nests_its_trace_and_unwinds_hop_by_hop() -> None:
    net = two_parks()
    poc = net.parks["poc-park"]
    net.add_park("edge-park", [{"lane": "lane-1", "counterparty": "poc-park"}], accounts=("dave", "relayer"))
    poc.state.set_json(b"bridge/lanes/edge-park/lane-1", {"counterparty": "edge-park", "lane": "lane-1"})
    edge, dpos = net.parks["edge-park"], net.parks["dpos-park"]
    net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))
    net.roundtrip("poc-park", "bob", **energy("dave", 1_500, denom=VOUCHER, dst="edge-park", lane="lane-1"))
    nested = f"lane-1/poc-park/{VOUCHER}"
    assert edge.balance("dave", nested) == 1_500 and edge.supply(nested) == 1_500
    assert supply_report(poc.state, ["kWh"])["escrow"][VOUCHER] == 1_500  # the voucher is escrowed on poc
    # back one hop: burned on edge, unescrowed on poc as the plain voucher
    net.roundtrip("edge-park", "dave", **energy("bob", 1_500, denom=nested, dst="poc-park", lane="lane-1"))
    assert edge.supply(nested) == 0 and poc.balance("bob", VOUCHER) == 5_000
    # and home
    net.roundtrip("poc-park", "bob", **energy("alice", 5_000, denom=VOUCHER, dst="dpos-park"))
    assert dpos.balance("alice", "kWh") == 100_000 and poc.supply(VOUCHER) == 0


def test_error_ack_refunds_the_escrow(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    packet = net.send("dpos-park", "alice", **energy("nobody", 5_000))
    cert = net.verify(packet)
    before = dict(poc.state.tree.items())
    ack = net.recv(packet, cert)
    assert not ack["success"] and ack["code"] == "receiver.unknown"
    # the refusal wrote only the receipt and the ack bytes (and the relayer's nonce moved)
    after = dict(poc.state.tree.items())
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {b"receipts/dpos-park/lane-0/1", b"acks/dpos-park/lane-0/1", b"accounts/relayer"}
    net.check()
    cert, ack_hex = net.confirm(packet)
    settle = net.settle(packet, cert, ack_hex)
    assert settle["outcome"] == "acked" and settle["ack_code"] == "receiver.unknown" and settle["refunded"]
    assert dpos.balance("alice", "kWh") == 100_000
    assert supply_report(dpos.state, ["kWh"])["escrow"] == {"kWh": 0}
    net.check()


def test_error_ack_on_a_returning_voucher_re_mints_it(net: Network) -> None:
    poc = net.parks["poc-park"]
    net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))
    _, ack, settle = net.roundtrip("poc-park", "bob", **energy("nobody", 2_000, denom=VOUCHER, dst="dpos-park"))
    assert ack["code"] == "receiver.unknown" and settle["refunded"]
    assert poc.balance("bob", VOUCHER) == 5_000 and poc.supply(VOUCHER) == 5_000


@pytest.mark.parametrize("returning", [False, True])
def test_timeout_refunds_only_on_a_certified_timeout(net: Network, returning: bool) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    if returning:
        net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))
        src, sender, args = "poc-park", "bob", energy("alice", 2_000, denom=VOUCHER, dst="dpos-park")
    else:
        src, sender, args = "dpos-park", "alice", energy("bob", 5_000)
    before = (dpos.balance("alice", "kWh"), poc.balance("bob", VOUCHER))
    packet = net.send(src, sender, **args, timeout_timestamp_ms=net.now_ms + MINUTE)
    cert = net.verify(packet)
    # the relay will not certify a timeout that has not passed
    with pytest.raises(TimeoutExpiredError):
        net.confirm_timeout(packet)
    net.advance(MINUTE)
    # too late to execute: rejected whole, nothing written on the target
    root = net.parks[packet.dst_chain].state.root
    with pytest.raises(TimeoutExpiredError):
        net.recv(packet, cert)
    assert net.parks[packet.dst_chain].state.root == root
    net.check()
    # the local clock alone refunds nothing: the commitment stays until a certified timeout
    assert net.parks[src].state.prefix_items(b"commitments/") != []
    settle = net.settle(packet, net.confirm_timeout(packet), None)
    assert settle["outcome"] == "timed_out" and settle["refunded"] and settle["ack_code"] is None
    assert (dpos.balance("alice", "kWh"), poc.balance("bob", VOUCHER)) == before
    net.check()


def test_forged_return_cannot_unlock_more_than_the_lane_escrowed() -> None:
    """A faulty source (or relay) claiming a voucher return gets an error ack; the escrow is untouched."""
    net = two_parks()
    net.add_park("edge-park", [{"lane": "lane-0", "counterparty": "dpos-park"}], accounts=("dave", "relayer"))
    dpos = net.parks["dpos-park"]
    dpos.state.set_json(b"bridge/lanes/edge-park/lane-0", {"counterparty": "edge-park", "lane": "lane-0"})
    net.roundtrip("dpos-park", "alice", **energy("bob", 5_000))  # 5000 escrowed towards poc-park
    # edge-park never received any kWh, yet "returns" 1000 over its own lane-0
    forged = Packet(ChainId("edge-park"), ChainId("dpos-park"), LaneId("lane-0"), 1, PacketKind.ENERGY,
                    encode_energy(EnergyPayload(VOUCHER, 1_000)), "dave", "alice", net.now_ms + MINUTE)
    net.relay.verify_unchecked(forged)
    ack = net.recv(forged, net.verified_cert(forged))
    assert ack["code"] == "escrow.insufficient"
    assert dpos.balance("alice", "kWh") == 95_000
    assert supply_report(dpos.state, ["kWh"])["escrow_by_lane"] == {"poc-park/lane-0/kWh": 5_000}


def test_malformed_payload_is_an_error_ack() -> None:
    net = two_parks()
    bad = Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-0"), 9, PacketKind.ENERGY,
                 b"not an energy payload", "alice", "bob", net.now_ms + MINUTE)
    net.relay.verify_unchecked(bad)
    assert net.recv(bad, net.verified_cert(bad))["code"] == "payload.invalid"


# --- charging rights ------------------------------------------------------------------------------

SLOT_START = 10 * 60 * MINUTE  # 10 hours after T0


def issue(net: Network, right_id: str, power_kw: int, owner: str = "alice", start_off: int = SLOT_START,
          hours: int = 2, transformer: str = "t1") -> None:
    start = net.now_ms + start_off
    net.parks["dpos-park"].tx("operator", "rights.issue", {
        "right_id": right_id, "station": "station-7", "transformer": transformer, "power_kw": power_kw,
        "slot_start_ms": start, "slot_end_ms": start + hours * 60 * MINUTE, "owner": owner})


def right_args(right_id: str, receiver: str = "bob", dst: str = "poc-park") -> dict[str, Any]:
    return {"dst_chain": dst, "lane": "lane-0", "kind": "charging_right", "receiver": receiver,
            "right_id": right_id}


def test_charging_right_admitted_abroad_and_back_home(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 22)
    assert dpos.right("r1")["owner"] == "alice"
    packet = net.send("dpos-park", "alice", **right_args("r1"))
    assert dpos.right("r1")["owner"] == ESCROW_OWNER
    assert dpos.right("r1")["escrowed_to"] == {"chain": "poc-park", "lane": "lane-0", "sequence": 1}
    net.check()
    ack = net.recv(packet, net.verify(packet))
    assert ack["success"]
    assert poc.right("r1") == {"home_park": "dpos-park", "station": "station-7", "transformer": "t1",
                               "power_kw": 22, "slot_start_ms": net.now_ms + SLOT_START,
                               "slot_end_ms": net.now_ms + SLOT_START + 120 * MINUTE, "owner": "bob"}
    assert [b["right_id"] for b in poc.state.get_json(b"bookings/t1")] == ["r1"]
    cert, ack_hex = net.confirm(packet)
    assert not net.settle(packet, cert, ack_hex)["refunded"]
    assert dpos.right("r1")["owner"] == ESCROW_OWNER  # stays escrowed at home while abroad
    net.check()
    # home again: burned abroad, released at home
    back = net.send("poc-park", "bob", **right_args("r1", receiver="alice", dst="dpos-park"))
    assert poc.right("r1") is None and poc.state.get_json(b"rights_burned/r1")["burned_to"]["sequence"] == 1
    net.check()
    assert net.recv(back, net.verify(back))["success"]
    assert dpos.right("r1")["owner"] == "alice" and "escrowed_to" not in dpos.right("r1")
    net.check()
    cert, ack_hex = net.confirm(back)
    net.settle(back, cert, ack_hex)
    assert poc.state.get(b"rights_burned/r1") is None and poc.state.get(b"bookings/t1") is None
    net.check()


def test_charging_right_may_time_out_exactly_at_its_slot_start(net: Network) -> None:
    issue(net, "r1", 5)
    slot_start = net.parks["dpos-park"].right("r1")["slot_start_ms"]
    packet = net.send("dpos-park", "alice", **right_args("r1"), timeout_timestamp_ms=slot_start)
    net.advance(SLOT_START - MINUTE)  # a minute before the slot: still executes
    assert net.recv(packet, net.verify(packet))["success"]
    net.check()


def test_charging_right_refused_for_capacity_is_refunded_at_home(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 30)
    issue(net, "r2", 30)
    issue(net, "r3", 30, start_off=SLOT_START + 3 * 60 * MINUTE)  # after r1's slot ends
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["success"]
    _, ack, settle = net.roundtrip("dpos-park", "alice", **right_args("r2"))
    assert ack["code"] == "capacity.exceeded" and settle["refunded"]  # 30 + 30 > 50 on poc's t1
    assert dpos.right("r2")["owner"] == "alice" and "escrowed_to" not in dpos.right("r2")
    assert poc.right("r2") is None
    assert net.roundtrip("dpos-park", "alice", **right_args("r3"))[1]["success"]  # no overlap with r1
    assert sorted(b["right_id"] for b in poc.state.get_json(b"bookings/t1")) == ["r1", "r3"]


def test_charging_right_on_an_unknown_transformer_is_refused(net: Network) -> None:
    net.parks["dpos-park"].state.set_json(b"transformers/t9", {"capacity_kw": 100})
    issue(net, "r9", 5, transformer="t9")
    _, ack, settle = net.roundtrip("dpos-park", "alice", **right_args("r9"))
    assert ack["code"] == "transformer.unknown" and settle["refunded"]
    assert net.parks["dpos-park"].right("r9")["owner"] == "alice"


def test_charging_right_timeout_refunds_and_a_returning_right_refund_re_creates_it(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 10)
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    # bob sends it home to an account that does not exist: error ack, the burned right comes back to bob
    _, ack, settle = net.roundtrip("poc-park", "bob", **right_args("r1", receiver="nobody", dst="dpos-park"))
    assert ack["code"] == "receiver.unknown" and settle["refunded"]
    assert poc.right("r1")["owner"] == "bob" and poc.state.get(b"rights_burned/r1") is None
    assert dpos.right("r1")["owner"] == ESCROW_OWNER
    # timed out on the way home: refunded on a certified timeout only
    packet = net.send("poc-park", "bob", **right_args("r1", receiver="alice", dst="dpos-park"),
                      timeout_timestamp_ms=net.now_ms + MINUTE)
    net.verify(packet)
    net.advance(MINUTE)
    net.check()
    net.settle(packet, net.confirm_timeout(packet), None)
    assert poc.right("r1")["owner"] == "bob"
    assert [b["right_id"] for b in poc.state.get_json(b"bookings/t1")] == ["r1"]  # still booked
    net.check()


def test_custom_admission_hook_decides() -> None:
    def closed(state: ChainState, payload: ChargingRightPayload, ctx: Any) -> str | None:
        return "station.closed" if payload.power_kw > 20 else default_admission(state, payload, ctx)

    net = Network()
    net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], transformers={"t1": 100})
    net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}], accounts=("bob", "relayer"),
                 transformers={"t1": 100}, hooks=BridgeHooks(admission=closed))
    issue(net, "r1", 22)
    issue(net, "r2", 11)
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["code"] == "station.closed"
    assert net.roundtrip("dpos-park", "alice", **right_args("r2"))[1]["success"]


def test_a_refusal_rolls_back_what_the_hook_wrote() -> None:
    def messy(state: ChainState, payload: ChargingRightPayload, ctx: Any) -> str | None:
        state.set(b"hook/side-effect", b"1")  # hooks must not write; if one does, a refusal undoes it
        return "station.closed"

    net = Network()
    net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], transformers={"t1": 100})
    net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}], accounts=("bob", "relayer"),
                 hooks=BridgeHooks(admission=messy))
    issue(net, "r1", 5)
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["code"] == "station.closed"
    assert net.parks["poc-park"].state.get(b"hook/side-effect") is None


def test_issuing_rights_respects_home_capacity(net: Network) -> None:
    issue(net, "r1", 60)
    with pytest.raises(AssetError, match="admission"):
        issue(net, "r2", 60)
    issue(net, "r3", 40)  # 60 + 40 <= 100 on dpos's t1


# --- reputation -----------------------------------------------------------------------------------


def _set_reputation(net: Network, subject: str, score: int, height: int) -> None:
    net.parks["dpos-park"].state.set_json(reputation_path(subject), {"score": score, "model": "dpos-witness-credit/v1",
                                                                     "height": height})


def rep_args(subject: str) -> dict[str, Any]:
    return {"dst_chain": "poc-park", "lane": "lane-0", "kind": "reputation", "receiver": "bob", "subject": subject}


def test_reputation_is_read_from_state_and_recorded_abroad(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    _set_reputation(net, "witness-1", 8_700, 40)
    _, ack, settle = net.roundtrip("dpos-park", "alice", **rep_args("witness-1"))
    assert ack["success"] and not settle["refunded"]
    rec = poc.state.get_json(b"imported_reputation/dpos-park/witness-1")
    assert rec["score"] == 8_700 and rec["model"] == "dpos-witness-credit/v1" and rec["source_height"] == 40
    assert rec["height"] == poc.height  # the block that executed bridge.recv (poc's only one)
    # nothing escrowed or spent at home; the score stays
    assert dpos.state.get_json(reputation_path("witness-1"))["score"] == 8_700
    assert supply_report(dpos.state, ["kWh"])["escrow"] == {"kWh": 0}


def test_older_reputation_arriving_late_is_refused_as_stale(net: Network) -> None:
    poc = net.parks["poc-park"]
    _set_reputation(net, "witness-1", 8_700, 40)
    old = net.send("dpos-park", "alice", **rep_args("witness-1"))
    _set_reputation(net, "witness-1", 9_100, 50)
    new = net.send("dpos-park", "alice", **rep_args("witness-1"))
    old_cert, new_cert = net.verify(old), net.verify(new)
    assert net.recv(new, new_cert)["success"]
    assert net.recv(old, old_cert)["code"] == "reputation.stale"
    assert poc.state.get_json(b"imported_reputation/dpos-park/witness-1")["score"] == 9_100
    cert, ack_hex = net.confirm(old)
    assert net.settle(old, cert, ack_hex)["refunded"]  # nothing to give back; the packet is closed


def test_packet_bytes_are_published_for_relayers(net: Network) -> None:
    packet = net.send("dpos-park", "alice", **energy("bob", 10))
    stored = net.parks["dpos-park"].state.get(b"packets/poc-park/lane-0/1")
    assert stored == encode_packet(packet).hex().encode()
