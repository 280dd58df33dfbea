"""Issue 9 on the Ethereum park: phase 1 refuses an amount the relay would refuse forever, the bridge
learns lanes and capacities at deployment and from certified lane-config records, and a packet the relay
never verified is refunded on the relay's TIMED_OUT certificate (protocol §6.3 step 1, §6.6, §6.8;
chains/ethereum/SPEC.md §E2.3). Conservation (escrow vs vouchers) is checked after each scenario."""

from __future__ import annotations

import pytest

from tests.ethereum.conftest import ALICE_WH, LANE, A, B, World
from tests.ethereum.harness import (
    certificate_abi,
    lane_config_args,
    lower_hex,
    recv_packet,
    send_energy,
    settle,
    update_lane_config,
    validator_set_abi,
    voucher_of,
)
from tests.ethereum.test_contracts import balance, escrowed, name_of, send_a_to_b, supply, timeout

pytestmark = pytest.mark.integration


def _send_call(w: World, amount: int, lane: str = LANE) -> object:
    return w.a.bridge.functions.sendEnergy(B, lane, "kWh", amount, lower_hex(w.bob.address), timeout(w))


def _approve(w: World) -> None:
    w.evm.transact(w.a.token.functions.approve(w.a.bridge.address, 2**255), w.alice)


def _update_call(w: World, lane: str, caps: dict[str, int], cert: object) -> object:
    return w.a.bridge.functions.updateLaneConfig(B, lane, *lane_config_args(caps), certificate_abi(cert),
                                                 validator_set_abi(w.relay.vset))


def _conserved(w: World) -> None:
    """A's escrow towards B equals B's supply of A's voucher (nothing in flight when called)."""
    assert escrowed(w.a, B, "kWh") == supply(w, w.b, f"{LANE}/{A}/kWh")


def test_genesis_capacities_refuse_above_and_admit_up_to(world: World) -> None:
    w = world
    assert w.a.bridge.functions.laneCapacity(B, LANE, "kWh").call() == [False, 0, 0]  # not limited
    w.evm.transact(w.a.bridge.functions.configureLane(B, "lane-9", ["*", "kWh"], [10, 5_000]), w.a.operator)
    assert w.a.bridge.functions.laneOpen(B, "lane-9").call()
    assert w.a.bridge.functions.laneCapacity(B, "lane-9", "kWh").call() == [True, 5_000, 0]
    assert w.a.bridge.functions.laneCapacity(B, "lane-9", "other").call() == [True, 10, 0]  # the default
    _approve(w)
    assert w.evm.revert_of(_send_call(w, 5_001, "lane-9"), w.alice) == ("LaneOverCapacity", 5_001, 5_000)
    w.evm.transact(_send_call(w, 5_000, "lane-9"), w.alice)
    assert name_of(w.evm.revert_of(w.a.bridge.functions.configureLane(B, "lane-9", [], []), w.alice)) == "Unauthorized"
    assert w.evm.revert_of(w.a.bridge.functions.configureLane(B, "lane-9", ["kWh"], []), w.a.operator) == (
        "CodecInvalid",)


def test_certified_lane_config_updates_capacities_and_opens_lanes(world: World) -> None:
    w = world
    _approve(w)
    older = w.relay.lane_config(A, B, LANE, {"kWh": 2_000})
    newer = w.relay.lane_config(A, B, LANE, {"kWh": 1_000})
    # anyone may submit; the values must be the certified ones, for this very lane and direction
    assert name_of(w.evm.revert_of(_update_call(w, LANE, {"kWh": 10**9}, newer), w.relayer)) == "ProofInvalid"
    assert name_of(w.evm.revert_of(_update_call(w, "lane-1", {"kWh": 1_000}, newer), w.relayer)) == "ProofInvalid"
    other_direction = w.relay.lane_config(B, A, LANE, {"kWh": 7})
    assert name_of(w.evm.revert_of(_update_call(w, LANE, {"kWh": 7}, other_direction), w.relayer)) == "ProofInvalid"
    too_few = w.relay.lane_config(A, B, LANE, {"kWh": 1_000}, signers=[0, 1], check=False)
    assert w.evm.revert_of(_update_call(w, LANE, {"kWh": 1_000}, too_few), w.relayer) == ("QuorumNotReached", 2, 4)
    update_lane_config(w.evm, w.a, w.relayer, B, LANE, {"kWh": 1_000}, newer, w.relay.vset)
    height = newer.commit.header.height
    assert w.a.bridge.functions.laneCapacity(B, LANE, "kWh").call() == [True, 1_000, height]
    assert name_of(w.evm.revert_of(_update_call(w, LANE, {"kWh": 1_000}, newer), w.relayer)) == "PacketReplay"
    assert name_of(w.evm.revert_of(_update_call(w, LANE, {"kWh": 2_000}, older), w.relayer)) == "PacketReplay"
    assert w.evm.revert_of(_send_call(w, 1_001), w.alice) == ("LaneOverCapacity", 1_001, 1_000)
    # the operator's genesis call cannot override the relay's certified config
    assert name_of(w.evm.revert_of(w.a.bridge.functions.configureLane(B, LANE, [], []), w.a.operator)) == "PacketReplay"
    # governance lifted the limit: an empty config means not limited
    lifted = w.relay.lane_config(A, B, LANE, {})
    update_lane_config(w.evm, w.a, w.relayer, B, LANE, {}, lifted, w.relay.vset)
    assert w.a.bridge.functions.laneCapacity(B, LANE, "kWh").call()[0] is False
    w.evm.transact(_send_call(w, 50_000), w.alice)
    # a lane the relay opened by governance: unknown until its config is certified
    assert name_of(w.evm.revert_of(_send_call(w, 10, "lane-5"), w.alice)) == "LaneInvalid"
    opened = w.relay.lane_config(A, B, "lane-5", {"*": 100})
    update_lane_config(w.evm, w.a, w.relayer, B, "lane-5", {"*": 100}, opened, w.relay.vset)
    assert w.evm.revert_of(_send_call(w, 101, "lane-5"), w.alice) == ("LaneOverCapacity", 101, 100)
    w.evm.transact(_send_call(w, 100, "lane-5"), w.alice)


def test_a_packet_the_relay_never_verified_is_refunded_on_its_timeout_certificate(world: World) -> None:
    """The relay lowered the capacity after the packet was committed: it never verifies it; after the
    timeout it certifies TIMED_OUT from the source commitment and the target's absence (§6.6)."""
    w = world
    now_s = w.evm.latest_timestamp()
    packet = send_a_to_b(w, 4_000, timeout_ms=(now_s + 60) * 1000)
    assert escrowed(w.a, B, "kWh") == 4_000
    w.evm.mine_at(now_s + 61)
    settled = settle(w.evm, w.a, w.relayer, packet, b"", w.relay.confirm_timeout(packet), w.relay.vset)
    assert (settled["outcome"], settled["refunded"]) == (2, True)
    assert balance(w.a.token, w.alice.address) == ALICE_WH
    assert escrowed(w.a, B, "kWh") == 0
    assert voucher_of(w.evm, w.b, f"{LANE}/{A}/kWh") is None  # nothing was ever minted
    _conserved(w)


def test_a_send_within_capacity_still_round_trips(world: World) -> None:
    w = world
    w.evm.transact(w.a.bridge.functions.configureLane(B, LANE, ["kWh"], [3_000]), w.a.operator)
    packet, _ = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", 3_000, lower_hex(w.bob.address), timeout(w))
    assert escrowed(w.a, B, "kWh") == 3_000
    ack, _ = recv_packet(w.evm, w.b, w.relayer, packet, w.relay.verify(packet), w.relay.vset)
    settled = settle(w.evm, w.a, w.relayer, packet, ack, w.relay.confirm_ack(packet, ack), w.relay.vset)
    assert settled["refunded"] is False
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 3_000
    _conserved(w)
