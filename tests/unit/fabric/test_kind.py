"""FabricKind (chains/fabric/kind.py): the relay creates, persists and reloads a Fabric client from init args, refuses
hostile ones, and its phase-4 timeout goes through the client's verify_timeout (an attested sentinel, never
absence)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from chains.fabric.errors import ChannelConfigError, StatementError
from chains.fabric.kind import FABRIC
from chains.fabric.light_client import FabricLightClient
from chains.fabric.proto import Block, BlockHeader, ChannelHeader, Envelope, Header, Payload, data_hash
from chains.fabric.testing import T0_MS, FabricNet
from chains.registry import chain_kind
from protocol.codec import encode_energy, encode_packet
from protocol.errors import CodecError, ProtocolError, TimeoutExpiredError
from protocol.paths import receipt_path
from protocol.types import ChainId, ClientId, EnergyPayload, LaneId, Packet, PacketKind
from relay.chain.state_machine.clients import HostedClient
from relay.chain.state_machine.packets import decode_packet_ref, validate_confirm_timeout
from relay.chain.state_machine.park_clients import CLIENT_TYPES

NET = FabricNet.new()
NET.next_block()  # block 1, not a config block
_ENV = Envelope(Payload(Header(ChannelHeader(3, "park").encode(), b""), b"").encode(), b"").encode()
ENDORSER_BLOCK = Block(BlockHeader(0, b"", data_hash([_ENV])), (_ENV,), ())
CID = ClientId("fabric-7")
CHAIN = ChainId("fabric-park")


def genesis_init(**extra: Any) -> dict[str, Any]:
    genesis = {"channel_id": NET.channel_id, "config_block": NET.blocks[0].encode().hex(), "genesis_time_ms": T0_MS,
               "chain_id": "fabric-park", "anything": "else"}
    return {"genesis": genesis, "trusting_period_ms": 86_400_000, **extra}


def test_the_kind_is_registered_and_hosts_the_fabric_client() -> None:
    assert chain_kind("fabric") is FABRIC
    assert FABRIC.light_client_type is FabricLightClient and CLIENT_TYPES["fabric"].name == "fabric"
    assert set(FABRIC.client_params) == {"max_consensus_states", "max_attestation_age_ms", "max_clock_skew_ms",
                                         "max_configs"}
    assert FABRIC.fixed_nodes == ("network",)  # one supervisor process runs the park
    with pytest.raises(ValueError, match="base_port"):  # the orderers' endpoints are in the channel's genesis block
        FABRIC.build_genesis(chain_id="f", params={}, nodes={}, accounts={}, relay_validators=None,  # type: ignore[arg-type]
                             lanes=[], genesis_time_ms=0, data_dir=None)  # type: ignore[arg-type]


def test_create_from_the_park_genesis_and_from_own_init() -> None:
    c = FABRIC.create_light_client(CID, CHAIN, genesis_init(max_attestation_age_ms=30_000))
    assert (c.channel_id, c.chaincode, c.policy_orgs) == ("park", "bridge", (OPERATOR_MSP, SALES_MSP))
    assert c.max_attestation_age_ms == 30_000 and c.final_timestamp_ms == T0_MS and c.final_height == 0
    own = FABRIC.create_light_client(CID, CHAIN, {"config_block": NET.blocks[0].encode().hex(), "channel_id": "park",
                                                  "trusted_time_ms": T0_MS, "trusting_period_ms": 1000,
                                                  "policy_orgs": [SALES_MSP]})
    assert own.policy_orgs == (SALES_MSP,)
    # the relay's client type persists and reloads it
    ctype = CLIENT_TYPES["fabric"]
    block = NET.blocks[1].without_data()
    c.process_header(ctype.decode_header(block.encode()), T0_MS + 1)
    back = ctype.from_state(CID, ctype.to_state(c))
    assert ctype.to_state(back) == ctype.to_state(c) and ctype.redundant(back, block)


@pytest.mark.parametrize(("change", "error"), [
    ({"trusting_period_ms": 0}, CodecError),
    ({"max_clock_skew_ms": 60_001}, CodecError),
    ({"max_configs": 0}, CodecError),
    ({"max_attestation_age_ms": True}, CodecError),
    ({"unknown": 1}, CodecError),
    ({"genesis": {"channel_id": "park"}}, CodecError),
    ({"genesis": {"channel_id": "other", "config_block": NET.blocks[0].encode().hex(), "genesis_time_ms": 0}},
     ChannelConfigError),
    ({"genesis": {"channel_id": "park", "config_block": "zz", "genesis_time_ms": 0}}, CodecError),
    ({"genesis": {"channel_id": "park", "config_block": NET.blocks[0].encode().hex(), "genesis_time_ms": -1}},
     CodecError),
    ({"genesis": {"channel_id": "park", "config_block": NET.blocks[0].encode().hex(), "genesis_time_ms": 0,
                  "policy_orgs": ["OutsiderMSP"]}}, CodecError),
    ({"genesis": {"channel_id": "park", "config_block": NET.blocks[0].encode().hex(), "genesis_time_ms": 0,
                  "policy_orgs": [OPERATOR_MSP, OPERATOR_MSP]}}, CodecError),
    ({"genesis": {"channel_id": "park", "config_block": NET.blocks[1].encode().hex(), "genesis_time_ms": 0}},
     CodecError),  # its data is not even an envelope
    ({"genesis": {"channel_id": "park", "config_block": ENDORSER_BLOCK.encode().hex(), "genesis_time_ms": 0}},
     ChannelConfigError),  # a transaction block
    ({"genesis": []}, CodecError),
])
def test_bad_init_args(change: dict[str, Any], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        FABRIC.create_light_client(CID, CHAIN, {**genesis_init(), **change})


@settings(max_examples=200, deadline=None)
@given(init=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                             st.sampled_from(["genesis", "config_block", "channel_id", "trusted_time_ms",
                                              "trusting_period_ms", "policy_orgs", "max_configs", "x"]),
                             inner, max_size=5), max_leaves=10))
def test_hostile_init_raises_only_protocol_errors(init: Any) -> None:
    try:
        FABRIC.create_light_client(CID, CHAIN, init if isinstance(init, dict) else {"genesis": init})
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(state=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_hostile_state_raises_only_codec_errors(state: bytes) -> None:
    with pytest.raises(CodecError):
        FabricLightClient.from_state(CID, state)


def test_relay_timeout_needs_the_attested_sentinel() -> None:
    """packets.validate_confirm_timeout asks the client (LightClient.verify_timeout): for Fabric, an attestation of
    absence of the receipt is refused and the sentinel accepted."""
    net = FabricNet.new()
    client = net.client(chain_id="fabric-park")
    client.process_header(net.next_block(), T0_MS)
    packet = Packet(ChainId("dpos-park"), ChainId("fabric-park"), LaneId("lane-0"), 3, PacketKind.ENERGY,
                    encode_energy(EnergyPayload("kWh", 5000)), "alice", "bob", T0_MS - 10)
    ref = decode_packet_ref(encode_packet(packet))
    hosted = HostedClient(ChainId("fabric-park"), client.client_id, CLIENT_TYPES["fabric"], client)
    key = receipt_path(packet.src_chain, packet.lane, packet.sequence)
    with pytest.raises(StatementError):
        validate_confirm_timeout(hosted, ref, 1, net.attest(key, None), T0_MS)
    validate_confirm_timeout(hosted, ref, 1, net.attest(key, TIMEOUT_RECEIPT), T0_MS)
    early = decode_packet_ref(encode_packet(Packet(*[getattr(packet, f) for f in packet.__dataclass_fields__][:-1],
                                                   T0_MS + 1000)))
    with pytest.raises(TimeoutExpiredError):
        validate_confirm_timeout(hosted, early, 1, net.attest(key, TIMEOUT_RECEIPT, T0_MS + 500), T0_MS + 500)
