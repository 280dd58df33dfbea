"""The ``attest`` query: its statement bytes are pinned (the Fabric light client verifies exactly this format),
it reads committed state at the key's Fabric key, carries the endorsing org's clock, and bounds its inputs."""

from __future__ import annotations

import json

import pytest

from chains.fabric.chaincode.contract import (
    MAX_ATTEST_KEY_BYTES,
    MAX_NONCE_BYTES,
    STATUS_OK,
    attestation_statement,
    parse_error_message,
)
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from protocol.errors import CodecError, ReplayError
from tests.unit.fabric_chaincode.harness import BOB, DPOS, FABRIC, RELAYER, Harness, energy, make_harness


def test_statement_bytes_are_pinned() -> None:
    assert attestation_statement("park", b"receipts/dpos-park/lane-0/7", bytes.fromhex("00ff"), 1700000000123,
                                 bytes(range(4))) == (
        b'{"chaincode":"bridge","channel":"park",'
        b'"key":"72656365697074732f64706f732d7061726b2f6c616e652d302f37","nonce":"00ff",'
        b'"time_ms":1700000000123,"v":1,"value":"00010203"}')
    assert attestation_statement("park", b"k", b"", 5, None) == (
        b'{"chaincode":"bridge","channel":"park","key":"6b","nonce":"","time_ms":5,"v":1,"value":null}')
    # ASCII only, whatever the channel holds
    assert attestation_statement("p\u00e4rk", b"k", b"", 0, None).isascii()


@pytest.fixture
def h() -> Harness:
    return make_harness()


def attest(h: Harness, key: bytes | str, nonce: str = "", org: str = OPERATOR_MSP) -> tuple[int, bytes, str]:
    key_hex = key.hex() if isinstance(key, bytes) else key
    r = h.fabric.query(RELAYER, "attest", key_hex, nonce, now_ms=h.net.now_ms, org=org)
    return r.status, r.payload, r.message


def test_attest_states_a_committed_value_and_an_absence(h: Harness) -> None:
    packet = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC))
    args = h.recv_args(packet, h.net.verify(packet))
    key = b"receipts/dpos-park/lane-0/1"
    nonce = "aa" * MAX_NONCE_BYTES
    status, payload, _ = attest(h, key, nonce)
    assert status == STATUS_OK
    assert payload == attestation_statement("park", key, bytes.fromhex(nonce), h.net.now_ms, None)
    h.ok(RELAYER, "recv", args)
    status, payload, _ = attest(h, key, nonce)
    receipt = h.raw(key)
    assert receipt is not None and receipt != TIMEOUT_RECEIPT
    assert json.loads(payload)["value"] == receipt.hex()


def test_attest_carries_each_organisations_own_clock(h: Harness) -> None:
    h.fabric.skew_ms = {OPERATOR_MSP: -5, SALES_MSP: 40}
    times = {org: json.loads(attest(h, b"bridge/config", org=org)[1])["time_ms"] for org in (OPERATOR_MSP, SALES_MSP)}
    assert times == {OPERATOR_MSP: h.net.now_ms - 5, SALES_MSP: h.net.now_ms + 40}


def test_attest_reads_escaped_keys(h: Harness) -> None:
    """A path that is not plain ASCII lives under its escaped Fabric key; attest names it by its path."""
    h.dpos_to_fabric("alice", **energy("OperatorMSP:bob", 10, dst=FABRIC))
    h.ok(BOB, "transfer", {"to": "SalesMSP:alice", "denom": "lane-0/dpos-park/kWh", "amount_wh": 1})
    path = b"balances/SalesMSP:alice/lane-0/dpos-park/kWh"
    assert json.loads(attest(h, path)[1])["value"] == b"1".hex()
    weird = "balances/SalesMSP:alice/k\u00e9Wh".encode()
    assert json.loads(attest(h, weird)[1])["value"] is None


@pytest.mark.parametrize(("key", "nonce"), [
    ("", ""),                                      # empty key
    ("6b" * (MAX_ATTEST_KEY_BYTES + 1), ""),       # key too long
    ("6b", "aa" * (MAX_NONCE_BYTES + 1)),          # nonce too long
    ("6B", ""),                                    # uppercase
    ("6", ""),                                     # odd length
    ("0x6b", ""),                                  # prefixed
    ("6b", "zz"),                                  # not hex
    ("6b ", ""),                                   # trailing space
])
def test_attest_bounds_its_inputs(h: Harness, key: str, nonce: str) -> None:
    status, payload, message = attest(h, key, nonce)
    assert status != STATUS_OK and not payload
    assert parse_error_message(message)[0] == "codec.invalid"


def test_attest_at_the_bounds(h: Harness) -> None:
    assert attest(h, "6b" * MAX_ATTEST_KEY_BYTES, "aa" * MAX_NONCE_BYTES)[0] == STATUS_OK


def test_attest_works_before_genesis() -> None:
    h = make_harness(init=False)
    status, payload, _ = attest(h, b"bridge/config")
    assert status == STATUS_OK and json.loads(payload)["value"] is None


def test_error_messages_carry_their_code() -> None:
    assert parse_error_message(str(ReplayError("packet already received", expected="no receipt", got="a/b/1"))) == (
        "packet.replay", "packet already received (expected 'no receipt', got 'a/b/1')")
    assert parse_error_message(str(CodecError("x\ny")))[0] == "codec.invalid"
    assert parse_error_message("chaincode stream terminated") == ("remote", "chaincode stream terminated")
