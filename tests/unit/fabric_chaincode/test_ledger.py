"""Protocol paths as Fabric keys, the overlay state over a stub, and accounts from creator certificates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.fabric.chaincode.identity import account_id, check_account_id
from chains.fabric.chaincode.ledger import MAX_PATH_BYTES, StubState, fabric_key, protocol_path
from protocol.errors import AuthorizationError, CodecError
from tests.unit.fabric_chaincode.fake import FakeLedger, FakeStub, identity, make_cert

# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "key"), [
    (b"receipts/dpos-park/lane-0/7", "receipts/dpos-park/lane-0/7"),
    (b"balances/SalesMSP:alice/lane-0/dpos-park/kWh", "balances/SalesMSP:alice/lane-0/dpos-park/kWh"),
    (b"~tilde", "~7e74696c6465"),
    (b"a b", "~612062"),
    (b"k\xc3\xa9", "~6bc3a9"),
    (b"\x00composite", "~00636f6d706f73697465"),
])
def test_plain_paths_are_their_own_keys_and_others_are_escaped(path: bytes, key: str) -> None:
    assert fabric_key(path) == key
    assert protocol_path(key) == path


@given(st.binary(min_size=1, max_size=MAX_PATH_BYTES))
def test_keys_round_trip(path: bytes) -> None:
    key = fabric_key(path)
    assert protocol_path(key) == path
    assert key.isascii() and not key.startswith("\x00")


@pytest.mark.parametrize("key", ["~", "~6", "~6B", "~7265", "a b", "caf\u00e9", "", "~" + "00" * (MAX_PATH_BYTES + 1)])
def test_keys_not_made_by_fabric_key_are_refused(key: str) -> None:
    with pytest.raises(CodecError):
        protocol_path(key)


@pytest.mark.parametrize("path", [b"", b"x" * (MAX_PATH_BYTES + 1)])
def test_paths_are_bounded(path: bytes) -> None:
    with pytest.raises(CodecError):
        fabric_key(path)


# --- the overlay ------------------------------------------------------------------------------------


def test_state_reads_its_own_writes_rolls_back_and_flushes_in_order() -> None:
    ledger = FakeLedger(state={"a": b"1", "b": b"2"}, versions={"a": 1, "b": 1})
    stub = FakeStub(ledger, identity("OperatorMSP", "x"), "park")
    state = StubState(stub)
    state.set(b"c", b"3")
    state.delete(b"a")
    assert state.get(b"c") == b"3" and state.get(b"a") is None and state.get(b"b") == b"2"
    assert stub.get_state("c") == b""  # Fabric's GetState does not see the transaction's writes
    with pytest.raises(RuntimeError), state.atomic():
        state.set(b"b", b"9")
        state.set(b"d", b"4")
        raise RuntimeError
    assert state.get(b"b") == b"2" and state.get(b"d") is None
    assert state.prefix_items(b"") == [(b"b", b"2"), (b"c", b"3")]
    state.set(b"\x01odd", b"5")
    state.flush()
    assert stub.writes == [("~016f6464", b"5"), ("a", None), ("c", b"3")]  # in path order
    assert state.writes == {}
    assert set(stub.reads) >= {"a", "b"}  # reads go to the ledger's read set


def test_state_refuses_empty_values() -> None:
    state = StubState(FakeStub(FakeLedger(), identity("OperatorMSP", "x"), "park"))
    with pytest.raises(ValueError, match="empty"):
        state.set(b"k", b"")


def test_prefix_scans_cover_escaped_keys() -> None:
    ledger = FakeLedger()
    ledger.state = {fabric_key(b"supply/x"): b"1", fabric_key(b"supply/\xc3\xa9"): b"2", fabric_key(b"suppl"): b"3"}
    ledger.versions = dict.fromkeys(ledger.state, 1)
    state = StubState(FakeStub(ledger, identity("OperatorMSP", "x"), "park"))
    assert state.prefix_items(b"supply/") == [(b"supply/x", b"1"), (b"supply/\xc3\xa9", b"2")]


# --- accounts ---------------------------------------------------------------------------------------


def test_account_ids_come_from_msp_and_common_name() -> None:
    assert account_id("OperatorMSP", make_cert(["alice"])) == "OperatorMSP:alice"
    assert account_id("SalesMSP", make_cert(["User1@sales.park"])) == "SalesMSP:User1@sales.park"
    # a renewed certificate (another key, another serial) with the same name is the same account
    assert account_id("SalesMSP", make_cert(["alice"], issuer="other")) == account_id("SalesMSP", make_cert(["alice"]))


@pytest.mark.parametrize(("msp", "cert"), [
    ("", make_cert(["a"])), ("Op MSP", make_cert(["a"])), ("Op:MSP", make_cert(["a"])),
    ("OperatorMSP", b""), ("OperatorMSP", b"x" * 20000), ("OperatorMSP", b"-----BEGIN CERTIFICATE-----\nxx"),
    ("OperatorMSP", make_cert(None)), ("OperatorMSP", make_cert(["a", "b"])), ("OperatorMSP", make_cert(["a:b"])),
    ("OperatorMSP", make_cert(["a b"])), ("OperatorMSP", make_cert(["-a"])),
])
def test_identities_that_cannot_name_an_account(msp: str, cert: bytes) -> None:
    with pytest.raises(AuthorizationError):
        account_id(msp, cert)


@pytest.mark.parametrize("value", ["alice", "OperatorMSP/alice", "OperatorMSP:", ":alice", "A:b:c", 7, None])
def test_account_id_arguments_are_checked(value: object) -> None:
    with pytest.raises(CodecError):
        check_account_id(value)
