"""Issue 9 on the Python bridge: phase 1 refuses what the relay would refuse forever, parks learn lane
changes from certified lane-config records, and a packet the relay never verified is refunded on a
certified TIMED_OUT (SPEC §6.3 step 1, §6.6 unverified timeout, §6.8). Conservation is checked after
every step."""

from __future__ import annotations

import pytest

from chains.common.bridge import lane_capacities
from protocol.errors import LaneError, OverCapacityError
from protocol.paths import commitment_path
from tests.unit.bridge.sim import MINUTE, Network, two_parks

SEND = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh"}


def _update(net: Network, capacities: dict[str, int], lane: str = "lane-0") -> dict[str, object]:
    args = net.lane_update_args("dpos-park", "poc-park", lane, capacities)
    (event,) = net.parks["dpos-park"].tx("relayer", "bridge.update_lane", args)
    return event


def test_capacity_learnt_at_genesis_refuses_before_anything_is_escrowed() -> None:
    net = two_parks(capacities={"kWh": 20_000})
    before = net.roots()
    with pytest.raises(OverCapacityError) as info:
        net.send("dpos-park", "alice", **SEND, amount_wh=20_001)
    assert info.value.code == "lane.over_capacity"
    assert net.roots() == before
    net.roundtrip("dpos-park", "alice", **SEND, amount_wh=20_000)  # exactly the capacity passes
    net.check()


def test_certified_lane_update_changes_capacities_and_opens_new_lanes() -> None:
    net = two_parks()
    dpos = net.parks["dpos-park"].state
    event = _update(net, {"kWh": 1_000, "*": 0})
    assert event["type"] == "lane_config_updated" and event["opened"] is False
    assert lane_capacities(dpos, "poc-park", "lane-0")[0] == {"kWh": 1_000, "*": 0}
    with pytest.raises(OverCapacityError):
        net.send("dpos-park", "alice", **SEND, amount_wh=1_001)
    net.roundtrip("dpos-park", "alice", **SEND, amount_wh=1_000)
    _update(net, {})  # governance lifted the limits: not limited any more
    net.roundtrip("dpos-park", "alice", **SEND, amount_wh=30_000)

    # a lane the relay opened by governance after genesis: unknown until certified, then usable
    with pytest.raises(LaneError):
        net.send("dpos-park", "alice", **{**SEND, "lane": "lane-5"}, amount_wh=10)
    assert _update(net, {"kWh": 500}, lane="lane-5")["opened"] is True
    with pytest.raises(OverCapacityError):
        net.send("dpos-park", "alice", **{**SEND, "lane": "lane-5"}, amount_wh=501)
    net.send("dpos-park", "alice", **{**SEND, "lane": "lane-5"}, amount_wh=500)
    net.check()


def test_a_packet_the_relay_never_verified_is_refunded_on_a_certified_timeout() -> None:
    """The capacity fell after the packet was committed (a race the bridge cannot see): the relay never
    verifies it, then certifies its timeout from the source commitment and the target's absence."""
    net = two_parks()
    dpos = net.parks["dpos-park"]
    before = dpos.balance("alice", "kWh")
    packet = net.send("dpos-park", "alice", **SEND, amount_wh=7_000)
    net.check()
    assert dpos.balance("alice", "kWh") == before - 7_000
    net.advance(10 * MINUTE)  # the target's time passes the timeout; no receipt there
    cert = net.confirm_timeout_unverified(packet)
    event = net.settle(packet, cert, None)
    assert event["outcome"] == "timed_out" and event["refunded"] is True
    assert dpos.balance("alice", "kWh") == before
    assert dpos.state.get(commitment_path(packet.dst_chain, packet.lane, packet.sequence)) is None
    assert net.parks["poc-park"].supply("lane-0/dpos-park/kWh") == 0  # nothing was minted
    net.check()
