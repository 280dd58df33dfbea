"""Three parks and the real relay state machine: energy and a charging right go dpos -> poc -> edge and back,
and the relay's accountants (SPEC §6.7: supply per hop for energy, one record per hop for a right) hold
the invariant at every step; every way a right could be counted twice or returned along a wrong trace is
refused at verify.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chains.common.bridge import lane_escrow_path, rights_report, supply_path
from chains.common.rights import rights_violations
from protocol.codec import encode_charging_right, packet_commitment
from protocol.errors import RightMismatchError, RightNotOutstandingError, RightOutstandingError
from protocol.paths import commitment_path
from protocol.types import ChainId, ChargingRightPayload, LaneId, Packet, PacketKind
from tests.unit.relay_state.harness import DPOS, EDGE, LANE, LANE1, MINUTE, POC, RelayHarness

HOUR = 60 * MINUTE
V1 = f"{LANE}/{DPOS}/r1"
V2 = f"{LANE1}/{POC}/{V1}"
K1 = f"{LANE}/{DPOS}/kWh"
K2 = f"{LANE1}/{POC}/{K1}"
HOPS = ((DPOS, LANE, POC), (POC, LANE1, EDGE))
"""The two hops out from dpos-park: (home, lane, remote)."""


@pytest.fixture
def h() -> RelayHarness:
    h = RelayHarness(three=True)
    start = h.net.now_ms + 10 * HOUR
    h.net.parks[DPOS].tx("operator", "rights.issue", {
        "right_id": "r1", "station": "station-7", "transformer": "t1", "power_kw": 20, "slot_start_ms": start,
        "slot_end_ms": start + HOUR, "owner": "alice"})
    return h


def move(h: RelayHarness, src: str, sender: str, dst: str, lane: str, receiver: str, **args: Any) -> Packet:
    """All four phases through the relay state machine; the packet must succeed."""
    packet = h.net.send(src, sender, dst_chain=dst, lane=lane, receiver=receiver, **args)
    ack, settle = h.roundtrip(packet)
    assert ack["success"] and not settle["refunded"], ack
    return packet


def right(rid: str, **kw: Any) -> dict[str, Any]:
    return {"kind": "charging_right", "right_id": rid, **kw}


def energy(denom: str) -> dict[str, Any]:
    return {"kind": "energy", "denom": denom, "amount_wh": 4_000}


def check(h: RelayHarness, energy_out: tuple[int, int], rights_out: tuple[str | None, str | None]) -> None:
    """Per hop: the relay's figures equal the parks' (at rest), and each right exists exactly once."""
    for (home, lane, remote), amount, denom in zip(HOPS, energy_out, ("kWh", K1), strict=True):
        s = h.sm.supply(h.state, home, lane, remote, denom)
        assert s == {"outstanding": amount, "outbound": 0, "returning": 0}, (home, lane, s)
        assert h.net.parks[home].state.get_int(lane_escrow_path(remote, lane, denom)) == amount
        assert h.net.parks[remote].state.get_int(supply_path(f"{lane}/{home}/{denom}")) == amount
    for (home, lane, remote), rid in zip(HOPS, rights_out, strict=True):
        rec = h.sm.right(h.state, home, lane, remote, rid or "-")
        assert (rec is None) is (rid is None), (home, lane, rec)
        if rec is not None:
            assert rec["state"] == "outstanding" and rec["home_park"] == DPOS and rec["power_kw"] == 20
            assert rights_report(h.net.parks[home].state)["escrowed"][rid]["chain"] == remote
    assert h.state.prefix_items(b"relay/rights/") == [
        (f"relay/rights/{home}/{lane}/{remote}/{rid}".encode(), h.state.get(
            f"relay/rights/{home}/{lane}/{remote}/{rid}".encode()))
        for (home, lane, remote), rid in zip(HOPS, rights_out, strict=True) if rid is not None]
    assert rights_violations({cid: rights_report(p.state) for cid, p in h.net.parks.items()}) == []
    h.net.check()


def test_energy_and_a_right_go_two_hops_out_and_unwind_per_hop(h: RelayHarness) -> None:
    check(h, (0, 0), (None, None))
    move(h, DPOS, "alice", POC, LANE, "bob", **right("r1"))
    move(h, DPOS, "alice", POC, LANE, "bob", **energy("kWh"))
    check(h, (4_000, 0), ("r1", None))
    move(h, POC, "bob", EDGE, LANE1, "dave", **right(V1))
    move(h, POC, "bob", EDGE, LANE1, "dave", **energy(K1))
    check(h, (4_000, 4_000), ("r1", V1))
    assert rights_report(h.net.parks[EDGE].state)["live"][V2]["owner"] == "dave"
    move(h, EDGE, "dave", POC, LANE1, "bob", **right(V2))
    move(h, EDGE, "dave", POC, LANE1, "bob", **energy(K2))
    check(h, (4_000, 0), ("r1", None))
    move(h, POC, "bob", DPOS, LANE, "alice", **right(V1))
    move(h, POC, "bob", DPOS, LANE, "alice", **energy(K1))
    check(h, (0, 0), (None, None))
    assert rights_report(h.net.parks[DPOS].state)["live"]["r1"]["owner"] == "alice"
    assert h.net.parks[DPOS].balance("alice", "kWh") == 100_000


def test_a_right_returns_only_once_its_departure_is_confirmed(h: RelayHarness) -> None:
    out = h.net.send(DPOS, "alice", dst_chain=POC, lane=LANE, receiver="bob", **right("r1"))
    h.verify(out)
    assert h.sm.right(h.state, DPOS, LANE, POC, "r1")["state"] == "outbound"
    assert h.deliver(out)["success"]
    back = h.net.send(POC, "bob", dst_chain=DPOS, lane=LANE, receiver="alice", **right(V1))
    args = h.verify_args(back)
    with pytest.raises(RightNotOutstandingError):  # the departure's ack is not confirmed yet
        h.submit("packet.verify", args)
    h.confirm(out)
    h.submit("packet.verify", args)
    assert h.sm.right(h.state, DPOS, LANE, POC, "r1")["state"] == "returning"
    assert h.deliver(back)["success"]
    h.confirm(back)
    assert h.sm.right(h.state, DPOS, LANE, POC, "r1") is None
    h.settle(out)
    h.settle(back)
    check(h, (0, 0), (None, None))


def test_a_refused_right_is_forgotten_and_a_refunded_return_is_outstanding_again(h: RelayHarness) -> None:
    move(h, DPOS, "alice", POC, LANE, "bob", **right("r1"))
    back = h.net.send(POC, "bob", dst_chain=DPOS, lane=LANE, receiver="nobody", **right(V1))
    ack, settle = h.roundtrip(back)
    assert ack["code"] == "receiver.unknown" and settle["refunded"]
    check(h, (0, 0), ("r1", None))  # the voucher was re-minted on poc: outstanding again
    move(h, POC, "bob", DPOS, LANE, "alice", **right(V1))
    h.net.parks[POC].tx("operator", "rights.set_transformer", {"name": "t1", "capacity_kw": 1})
    refused = h.net.send(DPOS, "alice", dst_chain=POC, lane=LANE, receiver="bob", **right("r1"))
    ack, settle = h.roundtrip(refused)
    assert ack["code"] == "capacity.exceeded" and settle["refunded"]
    check(h, (0, 0), (None, None))


# --- a faulty park commits what its bridge would never send ---------------------------------------------


def commit_forged(h: RelayHarness, src: str, dst: str, lane: str, payload: ChargingRightPayload,
                  sequence: int = 90) -> Packet:
    """A faulty ``src`` writes a commitment for a right packet its bridge never sent."""
    packet = Packet(ChainId(src), ChainId(dst), LaneId(lane), sequence, PacketKind.CHARGING_RIGHT,
                    encode_charging_right(payload), "mallory", "alice", h.net.now_ms + MINUTE)
    h.net.parks[src].state.set(commitment_path(ChainId(dst), LaneId(lane), sequence), packet_commitment(packet))
    return packet


def _r1(h: RelayHarness, rid: str) -> ChargingRightPayload:
    rec = h.net.parks[DPOS].right("r1")
    return ChargingRightPayload(rid, ChainId(DPOS), rec["station"], rec["transformer"], rec["power_kw"],
                                rec["slot_start_ms"], rec["slot_end_ms"])


def test_the_accountant_refuses_a_second_copy_forged_fields_and_a_wrong_trace(h: RelayHarness) -> None:
    move(h, DPOS, "alice", POC, LANE, "bob", **right("r1"))
    move(h, POC, "bob", EDGE, LANE1, "dave", **right(V1))
    verified = h.state.prefix_items(b"relay/verified/")
    rights_before = h.state.prefix_items(b"relay/rights/")
    cases = [
        # dpos lets r1 leave again over the same hop: a second copy
        (commit_forged(h, DPOS, POC, LANE, _r1(h, "r1")), RightOutstandingError),
        # edge returns r1's voucher to poc with more power than the right that left
        (commit_forged(h, EDGE, POC, LANE1, replace(_r1(h, V2), power_kw=21)), RightMismatchError),
        # edge returns a right that never went out over lane-1
        (commit_forged(h, EDGE, POC, LANE1, _r1(h, f"{LANE1}/{POC}/{LANE}/{DPOS}/r9"), sequence=91),
         RightNotOutstandingError),
        # (not refusable here: poc returning V1 home while V1 is escrowed on poc towards edge. The hop dpos->poc
        # is outstanding, and the relay cannot see poc's escrow; poc's own bridge refuses to send an escrowed
        # right. As with energy, a faulty park can take what is in its own custody, never more: SPEC §6.7)
    ]
    for packet, error in cases:
        with pytest.raises(error):
            h.verify(packet)
    assert h.state.prefix_items(b"relay/verified/") == verified
    assert h.state.prefix_items(b"relay/rights/") == rights_before
    check(h, (0, 0), ("r1", V1))
