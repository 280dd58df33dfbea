"""The Fabric adapter's decisions that need no network (adapters/fabric): how peers' answers, gRPC failures and
validation codes become typed errors; which transactions may be in flight together; what a peer's block yields.

Each table starts from a valid set-up and changes one thing; every row checks the error class, its code and its
disposition (what a relayer does about it, SPEC.md §9.1).
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # hfc's protos (adapters/fabric/__init__)

import json
from typing import Any

import pytest

from adapters.common.rpc import RemoteError
from adapters.fabric import decode_peer_block, write_keys
from adapters.fabric.errors import (
    Endorsed,
    EndorsementMismatchError,
    MvccConflictError,
    Refused,
    TxInvalidError,
    chaincode_error,
    classify_endorsements,
    commit_failure,
    rpc_failure,
)
from chains.fabric.errors import StatementError
from protocol.codec import encode_charging_right, encode_energy, encode_packet, encode_reputation
from protocol.errors import (
    AuthorizationError,
    CodecError,
    Disposition,
    ParkRelayError,
    QuorumError,
    ReplayError,
    TimeoutExpiredError,
    TransportError,
)
from protocol.types import ChainId, ChargingRightPayload, EnergyPayload, Packet, PacketKind, ReputationPayload

SIDE = "fabric-park"
OK = Endorsed("OperatorMSP", b"payload"), Endorsed("SalesMSP", b"payload")


def refused(org: str, message: str, status: int = 500) -> Refused:
    return Refused(org, status, message)


def raised(outcomes: Any) -> ParkRelayError:
    with pytest.raises(ParkRelayError) as info:
        classify_endorsements(outcomes, side=SIDE)
    return info.value


def test_both_organisations_endorsing_one_result_is_the_transaction_to_order() -> None:
    assert classify_endorsements(OK, side=SIDE) == b"payload"


ENDORSEMENT_CASES = [
    ("both refuse: replay", [refused("OperatorMSP", "[packet.replay] packet already received"),
                             refused("SalesMSP", "[packet.replay] packet already received")],
     ReplayError, "packet.replay", Disposition.DONE),
    ("both refuse: forged certificate", [refused("OperatorMSP", "[certificate.quorum] commit signed by 1/4"),
                                         refused("SalesMSP", "[certificate.quorum] commit signed by 1/4")],
     QuorumError, "certificate.quorum", Disposition.NEVER),
    ("both refuse: a Fabric light-client code", [refused("OperatorMSP", "[proof.fabric.statement] x"),
                                                 refused("SalesMSP", "[proof.fabric.statement] x")],
     StatementError, "proof.fabric.statement", Disposition.NEVER),
    ("both refuse: timed out", [refused("OperatorMSP", "[packet.timeout] timeout passed"),
                                refused("SalesMSP", "[packet.timeout] timeout passed")],
     TimeoutExpiredError, "packet.timeout", Disposition.AFTER_PROGRESS),
    ("one endorses, one refuses (clock skew at a timeout)",
     [OK[0], refused("SalesMSP", "[packet.timeout] timeout passed")],
     EndorsementMismatchError, "fabric.endorsement_mismatch", Disposition.RETRY_SOON),
    ("two codes (a peer one block behind)", [refused("OperatorMSP", "[packet.replay] done"),
                                             refused("SalesMSP", "[funds.insufficient] short")],
     EndorsementMismatchError, "fabric.endorsement_mismatch", Disposition.RETRY_SOON),
    ("two results", [OK[0], Endorsed("SalesMSP", b"another payload")],
     EndorsementMismatchError, "fabric.endorsement_mismatch", Disposition.RETRY_SOON),
    ("a peer cannot reach its chaincode server",
     [refused("OperatorMSP", "error in simulation: failed to execute transaction: connection refused"),
      refused("SalesMSP", "[packet.replay] done")],
     TransportError, "transport", Disposition.RETRY_SOON),
    ("our identity refused", [OK[0], refused("SalesMSP", "access denied: channel [park] creator org [Foo]")],
     AuthorizationError, "auth.denied", Disposition.FATAL),
    ("nobody answered", [], TransportError, "transport", Disposition.RETRY_SOON),
]


@pytest.mark.parametrize(("outcomes", "cls", "code", "disposition"), [c[1:] for c in ENDORSEMENT_CASES],
                         ids=[c[0] for c in ENDORSEMENT_CASES])
def test_endorsement_answers_are_classified(outcomes: Any, cls: type, code: str, disposition: Disposition) -> None:
    err = raised(outcomes)
    assert type(err) is cls and err.code == code and err.disposition is disposition
    assert SIDE in str(err)


@pytest.mark.parametrize(("message", "cls", "code"), [
    ("[packet.replay] packet already received", ReplayError, "packet.replay"),
    ("[codec.invalid] recv arguments: not JSON (expected 'x', got 'y')", CodecError, "codec.invalid"),
    ("[park.custom] something new", RemoteError, "park.custom"),
    ("[protocol] internal error: KeyError", RemoteError, "remote"),
    ("no code at all", RemoteError, "remote"),
])
def test_chaincode_messages_map_to_the_class_of_their_code(message: str, cls: type, code: str) -> None:
    err = chaincode_error(message, where=SIDE)
    assert type(err) is cls and err.code == code
    assert err.disposition is (Disposition.DONE if code == "packet.replay" else Disposition.NEVER)


class _Code:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRpcError(Exception):
    """Quacks like grpc.RpcError (``code()``, ``details()``): the adapter never imports grpc itself."""

    def __init__(self, status: str, details: str) -> None:
        super().__init__(details)
        self._status, self._details = status, details

    def code(self) -> _Code:
        return _Code(self._status)

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("exc", "cls", "retryable"), [
    (FakeRpcError("UNAVAILABLE", "failed to connect to all addresses"), TransportError, True),
    (FakeRpcError("DEADLINE_EXCEEDED", "deadline"), TransportError, True),
    (FakeRpcError("UNIMPLEMENTED", "unknown service protos.Endorser"), TransportError, False),
    (FakeRpcError("UNKNOWN", "access denied: channel [park] creator org unknown"), AuthorizationError, None),
    (FakeRpcError("UNKNOWN", "the supplied identity is not valid: x509: certificate has expired"),
     AuthorizationError, None),
    (TimeoutError(), TransportError, True),
    (ConnectionResetError("reset"), TransportError, True),
])
def test_grpc_failures_are_transport_errors_of_the_side_unless_our_identity_is_refused(
        exc: BaseException, cls: type, retryable: bool | None) -> None:
    err = rpc_failure(exc, side=SIDE, what="endorsing recv on peer0.SalesMSP")
    assert type(err) is cls and SIDE in str(err)
    if isinstance(err, TransportError):
        assert err.retryable is retryable and err.side == SIDE
        assert err.disposition is (Disposition.RETRY_SOON if retryable else Disposition.FATAL)
    else:
        assert err.disposition is Disposition.FATAL


@pytest.mark.parametrize(("code", "cls", "disposition"), [
    (11, MvccConflictError, Disposition.RETRY_SOON),   # MVCC_READ_CONFLICT
    (12, MvccConflictError, Disposition.RETRY_SOON),   # PHANTOM_READ_CONFLICT
    (10, TxInvalidError, Disposition.NEVER),           # ENDORSEMENT_POLICY_FAILURE
    (9, TxInvalidError, Disposition.NEVER),            # DUPLICATE_TXID
    (200, TxInvalidError, Disposition.NEVER),          # a code this client does not know
])
def test_invalidated_transactions_say_whether_to_build_them_again(code: int, cls: type,
                                                                   disposition: Disposition) -> None:
    err = commit_failure(code, "ab" * 32, 7, side=SIDE)
    assert type(err) is cls and err is not None and err.disposition is disposition
    assert "block 7" in str(err)


def test_a_valid_transaction_is_no_error() -> None:
    assert commit_failure(0, "ab" * 32, 7, side=SIDE) is None


# --- which transactions may be in flight together -------------------------------------------------------------


def packet(src: str, dst: str, lane: str, seq: int, denom: str, kind: PacketKind = PacketKind.ENERGY) -> str:
    payload = encode_energy(EnergyPayload(denom, 10)) if kind is PacketKind.ENERGY else b"\x00"
    return encode_packet(Packet(src, dst, lane, seq, kind, payload, "alice", "bob", 10**13)).hex()


def keys(op: str, **args: Any) -> set[tuple[str, ...]]:
    return write_keys(op, args, home="fabric-park")


def test_recvs_minting_one_voucher_share_its_supply_key_and_other_lanes_do_not() -> None:
    a = keys("bridge.recv", packet=packet("dpos-park", "fabric-park", "lane-0", 1, "kWh"), certificate={})
    b = keys("bridge.recv", packet=packet("dpos-park", "fabric-park", "lane-0", 2, "kWh"), certificate={})
    other_lane = keys("bridge.recv", packet=packet("poc-park", "fabric-park", "lane-1", 1, "kWh"), certificate={})
    assert ("supply", "lane-0/dpos-park/kWh") in a & b
    assert not a & other_lane


def test_a_returning_native_denom_shares_the_escrow_total_with_sends_and_refunds_on_every_lane() -> None:
    home = keys("bridge.recv", packet=packet("dpos-park", "fabric-park", "lane-0", 3, "lane-0/fabric-park/kWh"),
                certificate={})
    send = keys("bridge.send", dst_chain="poc-park", lane="lane-9", kind="energy", receiver="x", denom="kWh",
                amount_wh=1, timeout_timestamp_ms=1)
    refund = keys("bridge.settle", packet=packet("fabric-park", "ethereum-park", "lane-2", 5, "kWh"), certificate={})
    assert ("escrow", "kWh") in home & send & refund


def test_a_recv_and_a_timeout_receipt_of_one_packet_never_fly_together() -> None:
    p = packet("dpos-park", "fabric-park", "lane-0", 4, "kWh")
    assert keys("bridge.recv", packet=p, certificate={}) & keys("bridge.timeout_receipt", packet=p, certificate={})


def _right_packet(src: str, dst: str, seq: int, right_id: str, transformer: str) -> str:
    c = ChargingRightPayload(right_id, ChainId("dpos-park"), "s1", transformer, 10, 10**13, 10**13 + 1)
    return encode_packet(Packet(src, dst, "lane-0", seq, PacketKind.CHARGING_RIGHT, encode_charging_right(c),
                                "alice", "bob", 10**12)).hex()


def test_rights_for_one_transformer_share_its_bookings_key_and_others_do_not() -> None:
    a = keys("bridge.recv", packet=_right_packet("dpos-park", "fabric-park", 1, "r1", "t1"), certificate={})
    b = keys("bridge.recv", packet=_right_packet("dpos-park", "fabric-park", 2, "r2", "t1"), certificate={})
    c = keys("bridge.recv", packet=_right_packet("dpos-park", "fabric-park", 3, "r3", "t2"), certificate={})
    issue = keys("rights.issue", right_id="r4", station="s1", transformer="t1", power_kw=1, slot_start_ms=1,
                 slot_end_ms=2, owner="x")
    settle = keys("bridge.settle", packet=_right_packet("fabric-park", "poc-park", 4, "r5", "t1"), certificate={})
    assert ("bookings", "t1") in a & b & issue & settle
    assert not {k for k in a & c if k[0] != "receipt"}
    rep = ReputationPayload("alice", 1, "m/v1", 1)
    r1, r2 = (keys("bridge.recv", certificate={}, packet=encode_packet(Packet(
        "dpos-park", "fabric-park", "lane-0", seq, PacketKind.REPUTATION, encode_reputation(rep), "a", "b", 10**12)
    ).hex()) for seq in (5, 6))
    assert ("imported", "dpos-park", "alice", "m/v1") in r1 & r2


def test_undecodable_arguments_still_get_a_key_and_the_chaincode_refuses_them() -> None:
    assert keys("bridge.recv", packet="zz", certificate={}) == {("op", "bridge.recv")}


# --- a peer's block ---------------------------------------------------------------------------------------------


def peer_block(number: int, txs: list[tuple[str, int, bytes | None]], *, chaincode: str = "bridge") -> bytes:
    """A committed block as a peer serves it: one endorser transaction per ``(tx id, validation code, event
    payload)``, the flags in TRANSACTIONS_FILTER."""
    from hfc.protos.common import common_pb2
    from hfc.protos.peer import chaincode_event_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

    block = common_pb2.Block()
    block.header.number = number
    block.header.previous_hash = b"\x01" * 32
    block.header.data_hash = b"\x02" * 32
    for tx_id, _, event in txs:
        action = proposal_pb2.ChaincodeAction()
        action.chaincode_id.name = chaincode
        if event is not None:
            ev = chaincode_event_pb2.ChaincodeEvent(chaincode_id=chaincode, tx_id=tx_id, event_name="x", payload=event)
            action.events = ev.SerializeToString()
        prp = proposal_response_pb2.ProposalResponsePayload(extension=action.SerializeToString())
        cap = transaction_pb2.ChaincodeActionPayload()
        cap.action.proposal_response_payload = prp.SerializeToString()
        tx = transaction_pb2.Transaction()
        tx.actions.add().payload = cap.SerializeToString()
        ch = common_pb2.ChannelHeader(type=3, tx_id=tx_id, channel_id="park")
        payload = common_pb2.Payload(data=tx.SerializeToString())
        payload.header.channel_header = ch.SerializeToString()
        block.data.data.append(common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString())
    block.metadata.metadata.extend([b"sigs", b"", bytes(code for _, code, _ in txs), b"", b""])
    return block.SerializeToString()


def events_payload(*types: str) -> bytes:
    return json.dumps([{"type": t, "sequence": i} for i, t in enumerate(types)]).encode()


def test_events_come_from_valid_transactions_only_with_height_and_tx_hash() -> None:
    raw = peer_block(9, [("a1", 0, events_payload("send_packet")),
                         ("b2", 11, events_payload("write_ack")),          # MVCC_READ_CONFLICT: never happened
                         ("c3", 0, events_payload("settle_packet", "transfer"))])
    b = decode_peer_block(raw, 9)
    assert [(e["type"], e["height"], e["tx_hash"]) for e in b.events("bridge")] == [
        ("send_packet", 9, "a1"), ("settle_packet", 9, "c3"), ("transfer", 9, "c3")]
    assert b.tx("b2") is not None and b.tx("b2").validation_code == 11  # type: ignore[union-attr]
    assert not b.is_config and b.header.data is None and b.header.height == 9


def test_another_chaincodes_events_and_undecodable_payloads_are_skipped() -> None:
    raw = peer_block(3, [("a1", 0, b"not json"), ("b2", 0, b'{"type": "x"}'), ("c3", 0, events_payload("ok"))])
    assert [e["type"] for e in decode_peer_block(raw).events("bridge")] == ["ok"]
    assert decode_peer_block(peer_block(3, [("d4", 0, events_payload("ok"))], chaincode="kv")).events("bridge") == []


def test_a_transaction_without_a_flag_counts_as_not_validated() -> None:
    from hfc.protos.common import common_pb2

    block = common_pb2.Block()
    block.ParseFromString(peer_block(4, [("a1", 0, events_payload("send_packet"))]))
    del block.metadata.metadata[2:]
    assert decode_peer_block(block.SerializeToString()).events("bridge") == []


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"", b"\x0a\x02\x08"])
def test_bytes_that_are_not_a_block_are_a_codec_error(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_peer_block(raw)


def test_the_wrong_block_number_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="another block"):
        decode_peer_block(peer_block(5, []), 6)


def test_a_transaction_carries_the_proposal_without_its_transient_map() -> None:
    from hfc.fabric.channel import channel
    from hfc.protos.common import common_pb2
    from hfc.protos.peer import chaincode_pb2, proposal_pb2

    from adapters.fabric.gateway import tx_proposal

    spec = chaincode_pb2.ChaincodeInvocationSpec()
    spec.chaincode_spec.input.args.extend([b"market.propose_contract", b"{}"])
    # hfc builds proposals with the adapter's builder: transient entries go in (hfc's own cannot add them)
    proposal = channel.build_cc_proposal(spec, common_pb2.Header(), {"terms": b"secret"})
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    assert [(e.key, e.value) for e in payload.TransientMap] == [("terms", b"secret")]
    assert payload.input == spec.SerializeToString()
    stripped = tx_proposal(proposal)
    out = proposal_pb2.ChaincodeProposalPayload.FromString(stripped.payload)
    assert out.input == spec.SerializeToString() and not out.TransientMap
    assert b"secret" not in stripped.SerializeToString() and stripped.header == proposal.header
    assert proposal.payload == payload.SerializeToString()  # the original is kept
    plain = proposal_pb2.Proposal(header=b"h", payload=proposal_pb2.ChaincodeProposalPayload(
        input=b"x").SerializeToString())
    assert tx_proposal(plain) is plain
