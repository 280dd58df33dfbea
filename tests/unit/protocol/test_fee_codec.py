"""The fee fields of the ack (the executing relayer) and of the outcome record (the payees), SPEC §2.4, §2.5, §6.10:
both forms round-trip, every other encoding is refused, and the three-field forms are unchanged."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode as abi_encode

from protocol.codec import (
    ack_commitment,
    decode_ack,
    decode_outcome,
    decode_outcome_record,
    encode_ack,
    encode_outcome,
    sha256,
)
from protocol.errors import CodecError
from protocol.types import NO_PAYEES, Acknowledgement, AckStatus, FeePayees, PacketOutcome

PC, AC = sha256(b"packet"), sha256(b"ack")


@pytest.mark.parametrize("ack", [
    Acknowledgement(AckStatus.SUCCESS, "ok", b""),
    Acknowledgement(AckStatus.ERROR, "receiver.unknown", b"\x01\x02"),
    Acknowledgement(AckStatus.SUCCESS, "ok", b"", "relayer-a"),
    Acknowledgement(AckStatus.ERROR, "capacity.exceeded", b"r" * 40, "op-b.relayer"),
])
def test_ack_round_trips_in_both_forms_and_matches_the_abi(ack: Acknowledgement) -> None:
    raw = encode_ack(ack)
    assert decode_ack(raw) == ack
    fields: tuple[object, ...] = (int(ack.status), ack.code, ack.result)
    types = ["uint8", "string", "bytes"]
    if ack.relayer:
        fields, types = (*fields, ack.relayer), [*types, "string"]
    assert raw == abi_encode(types, list(fields))  # what Solidity's abi.encode gives
    assert ack_commitment(ack) == sha256(raw)


def test_naming_a_relayer_changes_the_receipt() -> None:
    plain = Acknowledgement(AckStatus.SUCCESS, "ok", b"")
    named = Acknowledgement(AckStatus.SUCCESS, "ok", b"", "relayer-a")
    assert ack_commitment(plain) != ack_commitment(named)


@pytest.mark.parametrize("raw", [
    abi_encode(["uint8", "string", "bytes", "string"], [1, "ok", b"", ""]),         # empty relayer: not canonical
    abi_encode(["uint8", "string", "bytes", "string"], [1, "ok", b"", "Relayer"]),  # not an id
    abi_encode(["uint8", "string", "bytes", "string"], [1, "ok", b"", "a" * 65]),   # too long
    abi_encode(["uint8", "string", "bytes", "string"], [3, "ok", b"", "relayer-a"]),
    abi_encode(["uint8", "string", "bytes", "string"], [1, "ok", b"", "relayer-a"]) + bytes(32),
    abi_encode(["uint8", "string", "bytes", "string", "string"], [1, "ok", b"", "relayer-a", "x"]),
])
def test_a_malformed_four_field_ack_is_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_ack(raw)


def test_encoding_an_ack_with_a_bad_relayer_is_refused() -> None:
    for relayer in ("UPPER", "-x", "a" * 65, 7):
        with pytest.raises(CodecError):
            encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b"", relayer))  # type: ignore[arg-type]


@pytest.mark.parametrize("outcome,ac,payees", [
    (PacketOutcome.ACKED, AC, NO_PAYEES),
    (PacketOutcome.ACKED, AC, FeePayees("alice", "bob", "carol")),
    (PacketOutcome.ACKED, AC, FeePayees("", "0x" + "ab" * 20, "")),
    (PacketOutcome.TIMED_OUT, bytes(32), FeePayees("alice", "", "carol")),
    (PacketOutcome.TIMED_OUT, bytes(32), NO_PAYEES),
])
def test_outcome_record_round_trips_in_both_forms(outcome: PacketOutcome, ac: bytes, payees: FeePayees) -> None:
    raw = encode_outcome(outcome, PC, ac, payees)
    assert decode_outcome_record(raw) == (outcome, PC, ac, payees)
    assert decode_outcome(raw) == (outcome, PC, ac)
    if payees:
        assert raw == abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"],
                                 [int(outcome), PC, ac, *payees.as_tuple()])
    else:
        assert raw == abi_encode(["uint8", "bytes32", "bytes32"], [int(outcome), PC, ac])
        assert len(raw) == 96


@pytest.mark.parametrize("raw", [
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"], [1, PC, AC, "", "", ""]),
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"], [2, PC, bytes(32), "", "x", ""]),
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"], [1, PC, AC, "a" * 257, "", ""]),
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"], [3, PC, AC, "a", "", ""]),
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"], [1, PC, AC, "a", "", ""]) + b"\0",
    abi_encode(["uint8", "bytes32", "bytes32", "string", "string"], [1, PC, AC, "a", "b"]),
    abi_encode(["uint8", "bytes32", "bytes32"], [1, PC, AC])[:95],
    b"",
])
def test_a_malformed_outcome_record_is_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        decode_outcome_record(raw)


def test_a_timeout_names_no_executor() -> None:
    with pytest.raises(CodecError):
        encode_outcome(PacketOutcome.TIMED_OUT, PC, bytes(32), FeePayees("", "bob", ""))
