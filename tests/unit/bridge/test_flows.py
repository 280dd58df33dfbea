"""The four phases end to end between simulated parks: energy (charging rights and reputation have their own files).

Every scenario runs on one clock with real certificates and checks supply conservation and the
one-live-copy rule for charging rights after each phase (:meth:`Network.check`).
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import supply_report
from protocol.codec import encode_energy, encode_packet
from protocol.errors import TimeoutExpiredError
from protocol.types import ChainId, EnergyPayload, LaneId, Packet, PacketKind
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


# charging rights: tests/unit/bridge/test_rights.py; reputation: tests/unit/bridge/test_reputation.py


def test_packet_bytes_are_published_for_relayers(net: Network) -> None:
    packet = net.send("dpos-park", "alice", **energy("bob", 10))
    stored = net.parks["dpos-park"].state.get(b"packets/poc-park/lane-0/1")
    assert stored == encode_packet(packet).hex().encode()
