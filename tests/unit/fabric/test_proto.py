"""chains/fabric/proto.py against bytes Fabric's own Go code makes (``vectors.json``, written by ``govectors/``:
fabric-protos-go v0.2.0 and ``encoding/asn1``, as Fabric v2.5.9 uses them), and its strictness on hostile bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.fabric import proto as P
from chains.fabric.attestation import Statement, decode_bundle
from protocol.errors import CodecError

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text())


def v(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name])


# --- conformance with Fabric's encoders ---------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["block_headers"], ids=lambda c: str(c["number"]))
def test_block_header_bytes_and_proto_match_fabric(case: dict[str, object]) -> None:
    header = P.BlockHeader(int(case["number"]), bytes.fromhex(str(case["previous_hash"])),  # type: ignore[call-overload]
                           bytes.fromhex(str(case["data_hash"])))
    assert header.asn1().hex() == case["asn1"]  # protoutil.BlockHeaderBytes
    assert header.encode().hex() == case["proto"]
    assert P.BlockHeader.decode(bytes.fromhex(str(case["proto"]))) == header


def test_block_metadata_and_signature_header_round_trip() -> None:
    block = P.Block.decode(v("block"))
    assert block.header == P.BlockHeader(7, b"\xaa", b"\xbb")
    assert block.data == (b"\x0a\x00", b"")
    assert block.encode() == v("block")
    md = P.Metadata.decode(block.metadata[P.SIGNATURES_INDEX])
    assert block.metadata[0] == v("metadata") and md.encode() == v("metadata")
    assert P.OrdererBlockMetadata.decode(md.value) == P.OrdererBlockMetadata(300, b"\x08\x01")
    assert P.OrdererBlockMetadata.decode(md.value).encode() == v("orderer_block_metadata")
    (sig,) = md.signatures
    assert sig.signature == b"\x30\x45" and sig.signature_header == v("signature_header")
    creator = P.SerializedIdentity.decode(P.SignatureHeader.decode(sig.signature_header).creator)
    assert creator.mspid == "OrdererMSP" and creator.id_bytes.startswith(b"-----BEGIN CERTIFICATE-----")
    stripped = P.Block.decode(v("block_no_data"))
    assert stripped.data is None and stripped.metadata == (b"",) and stripped.encode() == v("block_no_data")


def test_channel_header_round_trip_with_negative_values() -> None:
    chdr = P.ChannelHeader.decode(v("channel_header"))
    assert (chdr.type, chdr.channel_id, chdr.tx_id, chdr.timestamp) == (1, "park", "tx1", (1790000000, 5))
    assert chdr.encode() == v("channel_header")
    neg = P.ChannelHeader.decode(v("channel_header_negative"))
    assert (neg.type, neg.timestamp) == (-1, (-5, 0))
    assert neg.encode() == v("channel_header_negative")


def test_config_envelope_msp_and_consensus_round_trip() -> None:
    env = P.ConfigEnvelope.decode(v("config_envelope"))
    assert env.config.sequence == 3
    assert env.encode() == v("config_envelope")  # Go's deterministic marshal sorts map keys, as ours does
    orderer = env.config.channel_group.groups["Orderer"]
    ctype = P.ConsensusType.decode(orderer.values["ConsensusType"].value)
    assert ctype.encode() == v("consensus_type")
    (consenter,) = P.EtcdRaftConfigMetadata.decode(ctype.metadata).consenters
    assert consenter == P.EtcdRaftConsenter("127.0.0.1", 7050, b"c", b"s")
    org = env.config.channel_group.groups["Application"].groups["OperatorMSP"]
    assert org.version == 2
    msp = P.FabricMSPConfig.decode(P.MSPConfig.decode(org.values["MSP"].value).config)
    assert msp.encode() == v("fabric_msp_config")
    assert msp.root_certs == (b"root1", b"root2") and msp.revocation_list == (b"crl",)
    assert msp.fabric_node_ous is not None and msp.fabric_node_ous.enable
    assert msp.fabric_node_ous.peer == P.FabricOUIdentifier(b"", "peer")
    assert msp.fabric_node_ous.admin is None


def test_proposal_response_round_trip() -> None:
    pr = P.ProposalResponse.decode(v("proposal_response"))
    assert pr.encode() == v("proposal_response")
    assert pr.endorsement == P.Endorsement(b"\xdd", b"\xee")
    assert pr.payload == v("proposal_response_payload")
    prp = P.ProposalResponsePayload.decode(pr.payload)
    action = P.ChaincodeAction.decode(prp.extension)
    assert prp.extension == v("chaincode_action") and action.encode() == v("chaincode_action")
    assert action.chaincode_id == P.ChaincodeID("bridge", "1")
    assert action.response == P.Response(200, "", b'{"v":1}')
    assert P.Response.decode(v("response_error")) == P.Response(500, "nope", b"")


# --- strictness ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "why"), [
    (b"\x08", "truncated varint"),
    (b"\x08\x80\x00", "non-minimal varint"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
    (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "over 64 bits"),
    (b"\x12\x05ab", "runs past the end"),
    (b"\x0b", "wire type 3"),
    (b"\x00\x01", "field number"),
    (b"\x0a\x01a", "wrong wire type"),  # number (field 1) is a varint
    (b"\x08\x01\x08\x02", "singular field repeated"),
    (b"\x11" + b"\x00" * 7, "truncated 64-bit"),
    (b"\x15\x00", "truncated 32-bit"),
])
def test_block_header_refuses_non_canonical_or_broken_bytes(raw: bytes, why: str) -> None:
    with pytest.raises(CodecError, match=why):
        P.BlockHeader.decode(raw)


def test_unknown_fields_are_skipped_but_checked() -> None:
    assert P.BlockHeader.decode(b"\x08\x05" + b"\x22\x01x" + b"\x2d\x00\x00\x00\x00").number == 5
    with pytest.raises(CodecError):
        P.BlockHeader.decode(b"\x08\x05" + b"\x23")  # an unknown group


def test_typed_ranges() -> None:
    big = b"\x08" + P._enc_varint(1 << 40)
    with pytest.raises(CodecError, match="int32"):
        P.ChannelHeader.decode(big)
    with pytest.raises(CodecError, match="bool"):
        P.FabricNodeOUs.decode(b"\x08\x02")
    with pytest.raises(CodecError, match="uint32"):
        P.EtcdRaftConfigMetadata.decode(P._W().raw(1, b"\x10" + P._enc_varint(1 << 33)).done())
    with pytest.raises(CodecError, match="UTF-8"):
        P.SerializedIdentity.decode(b"\x0a\x01\xff")


def test_bounds() -> None:
    with pytest.raises(CodecError, match="too large"):
        P.Block.decode(b"\x00" * (P.MAX_BLOCK_BYTES + 1))
    with pytest.raises(CodecError, match="too many elements"):
        P.Metadata.decode(b"\x12\x00" * (P.MAX_REPEATED + 1))
    deep = P.ConfigGroup()
    for _ in range(P.MAX_CONFIG_DEPTH + 1):
        deep = P.ConfigGroup(groups={"g": deep})
    with pytest.raises(CodecError, match="too deep"):
        P.ConfigEnvelope.decode(P.ConfigEnvelope(P.Config(1, deep)).encode())
    wide = P.ConfigGroup(groups={f"g{i}": P.ConfigGroup(groups={f"h{j}": P.ConfigGroup() for j in range(200)})
                                 for i in range(3)})
    with pytest.raises(CodecError, match="too many ConfigGroups"):
        P.ConfigEnvelope.decode(P.ConfigEnvelope(P.Config(1, wide)).encode())
    dup = P._W().raw(2, P._W().text(1, "a").done()).raw(2, P._W().text(1, "a").done()).done()
    with pytest.raises(CodecError, match="map key repeated"):
        P.ConfigEnvelope.decode(P.ConfigEnvelope(P.Config(1, P.ConfigGroup())).encode()[:0]
                                + P._W().raw(1, P._W().raw(2, dup, keep_empty=True).done()).done())


def test_missing_required_parts() -> None:
    with pytest.raises(CodecError, match="without a header"):
        P.Block.decode(b"")
    with pytest.raises(CodecError, match="without last_config"):
        P.OrdererBlockMetadata.decode(b"")
    with pytest.raises(CodecError, match="without a config"):
        P.ConfigEnvelope.decode(b"")


# --- hostile bytes: every decoder answers CodecError or a value, nothing else -----------------------------------

DECODERS = [P.Block.decode, P.BlockHeader.decode, P.Metadata.decode, P.OrdererBlockMetadata.decode,
            P.Envelope.decode, P.Payload.decode, P.ChannelHeader.decode, P.SignatureHeader.decode,
            P.SerializedIdentity.decode, P.ConfigEnvelope.decode, P.MSPConfig.decode, P.FabricMSPConfig.decode,
            P.FabricNodeOUs.decode, P.FabricOUIdentifier.decode, P.ConsensusType.decode,
            P.EtcdRaftConfigMetadata.decode, P.ProposalResponse.decode, P.ProposalResponsePayload.decode,
            P.ChaincodeAction.decode, P.Response.decode, Statement.decode, decode_bundle]
SEEDS = [v(k) for k in ("block", "metadata", "orderer_block_metadata", "signature_header", "channel_header",
                        "config_envelope", "fabric_msp_config", "consensus_type", "proposal_response",
                        "proposal_response_payload", "chaincode_action", "block_no_data")]


def _mutations() -> st.SearchStrategy[bytes]:
    seed = st.sampled_from(SEEDS)
    truncated = st.tuples(seed, st.integers(min_value=0, max_value=2000)).map(lambda t: t[0][: t[1] % (len(t[0]) + 1)])
    flipped = st.tuples(seed, st.integers(min_value=0), st.integers(min_value=1, max_value=255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] % len(t[0]) + 1:])
    spliced = st.tuples(seed, seed, st.integers(min_value=0)).map(lambda t: t[0][: t[2] % len(t[0])] + t[1])
    return st.one_of(st.binary(max_size=300), truncated, flipped, spliced,
                     st.sampled_from([b"\xff" * 11, b"\x0a\xff\xff\xff\xff\x0f", b"\x0a" * 5000]))


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__qualname__)
@settings(max_examples=150, deadline=None)
@given(raw=_mutations())
def test_hostile_bytes_never_escape_as_anything_but_codec_error(decode, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        decode(raw)
    except CodecError:
        pass


@pytest.mark.parametrize("decode", DECODERS, ids=lambda d: d.__qualname__)
def test_oversized_input_is_refused(decode) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CodecError):
        decode(b"\x0a" + P._enc_varint(P.MAX_BLOCK_BYTES + 10) + b"\x00" * (P.MAX_BLOCK_BYTES + 10))
