"""Every way the bridge chaincode must refuse, as tables malleating one valid set-up into one failure. Each case
asserts the stable error code and that the committed ledger and its events did not move (:meth:`Harness.refused`);
a hypothesis test throws hostile argument bytes at every function and sees only typed refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.common import wire
from chains.fabric.chaincode.contract import FUNCTIONS, MAX_ARG_BYTES, STATUS_OK, BridgeContract
from chains.fabric.consts import OPERATOR_MSP
from protocol.codec import encode_ack, encode_energy, encode_packet
from protocol.types import Acknowledgement, AckStatus, EnergyPayload, Packet
from tests.unit.bridge.sim import MINUTE, relay_signers, validator_set
from tests.unit.fabric_chaincode.fake import make_cert
from tests.unit.fabric_chaincode.harness import (
    ALICE,
    DPOS,
    FABRIC,
    LANE,
    OPERATOR,
    RELAYER,
    Harness,
    energy,
    genesis,
    make_harness,
)
from tests.unit.hostile import json_text, to_bytes


@dataclass
class Setup:
    """The Fabric park with one inbound packet verified (p_in, its recv args) and one outbound packet sent,
    delivered and confirmed (p_out, its settle args)."""

    h: Harness
    p_in: Packet
    recv: dict[str, Any]
    p_out: Packet
    settle: dict[str, Any]


@pytest.fixture
def s() -> Setup:
    h = make_harness()
    p_in = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC))
    recv = h.recv_args(p_in, h.net.verify(p_in))
    p_out = h.send_from_fabric(ALICE, **energy("bob", 2_000, dst=DPOS))
    h.net.recv(p_out, h.verify_from_fabric(p_out))
    cert, ack = h.net.confirm(p_out)
    settle = {"packet": encode_packet(p_out).hex(), "certificate": cert, "ack": ack}
    return Setup(h, p_in, recv, p_out, settle)


Call = tuple[tuple[str, bytes], list[Any]]
"""(creator, chaincode args after the function name)."""


def _send(s: Setup, **over: Any) -> Call:
    return ALICE, [{**energy("bob", 10, dst=DPOS), "timeout_timestamp_ms": s.h.net.now_ms + MINUTE, **over}]


def _recv(s: Setup, **over: Any) -> Call:
    return RELAYER, [{**s.recv, **over}]


def _recv_with(s: Setup, **cert_kw: Any) -> Call:
    return _recv(s, certificate=s.h.net.verified_cert(s.p_in, **cert_kw))


def _tampered_packet(s: Setup) -> Call:
    p = s.p_in
    forged = Packet(p.src_chain, p.dst_chain, p.lane, p.sequence, p.kind, encode_energy(EnergyPayload("kWh", 10**9)),
                    p.sender, p.receiver, p.timeout_timestamp_ms)
    return _recv(s, packet=encode_packet(forged).hex())


def _for_another_chain(s: Setup) -> Call:
    p = s.p_in
    other = Packet(p.src_chain, "poc-park", p.lane, p.sequence, p.kind, p.payload, p.sender, p.receiver,
                   p.timeout_timestamp_ms)
    s.h.net.relay.verify_unchecked(other)
    return _recv(s, packet=encode_packet(other).hex(), certificate=s.h.net.verified_cert(other))


def _replayed(fn: str) -> Callable[[Setup], Call]:
    def prepare(s: Setup) -> Call:
        args = s.recv if fn == "recv" else s.settle
        s.h.ok(RELAYER, fn, args)
        return RELAYER, [args]
    return prepare


def _settle(s: Setup, **over: Any) -> Call:
    return RELAYER, [{**s.settle, **over}]


def _short_signature(s: Setup) -> Call:
    cert = s.recv["certificate"]
    commit = {**cert["commit"], "signatures": [{"validator_index": 0, "ed25519_sig": "00"}]}
    return _recv(s, certificate={**cert, "commit": commit})


def _stale_lane_update(s: Setup) -> Call:
    args = s.h.net.lane_update_args(FABRIC, DPOS, LANE, {"kWh": 5})
    s.h.ok(RELAYER, "update_lane", args)
    return RELAYER, [args]


def _creator(msp: str, cert: bytes, *args: Any) -> Callable[[Setup], Call]:
    return lambda s: ((msp, cert), list(args))


_ERROR_ACK = encode_ack(Acknowledgement(AckStatus.ERROR, "x", b"")).hex()
_RIGHT = {"right_id": "r9", "station": "s", "transformer": "t1", "power_kw": 1, "slot_start_ms": 2**62,
          "slot_end_ms": 2**62 + 1, "owner": "SalesMSP:alice"}

def _duplicate_key_update(s: Setup) -> Call:
    body = wire.validator_set_to_json(s.h.net.relay.vset)
    body["validators"][1] = {**body["validators"][1], "ed25519_pubkey": body["validators"][0]["ed25519_pubkey"]}
    return RELAYER, [{"commit": wire.commit_to_json(s.h.net.relay.commit(s.h.net.now_ms)), "new_set": body}]


def _duplicate_address_update(s: Setup) -> Call:
    body = wire.validator_set_to_json(s.h.net.relay.vset)
    for i in (1, 3):
        body["validators"][i] = {**body["validators"][i], "eth_address": "22" * 20}
    return RELAYER, [{"commit": wire.commit_to_json(s.h.net.relay.commit(s.h.net.now_ms)), "new_set": body}]


def _reset_args(s: Setup) -> dict[str, Any]:
    return {"new_set": wire.validator_set_to_json(validator_set(relay_signers(1))), "height": 10**6,
            "time_ms": s.h.net.now_ms}


CASES: dict[str, tuple[str, Callable[[Setup], Call], str]] = {
    # replays and certificates
    "recv replayed": ("recv", _replayed("recv"), "packet.replay"),
    "settle replayed": ("settle", _replayed("settle"), "packet.replay"),
    "recv: signed by unknown keys": ("recv", lambda s: _recv_with(s, signers=relay_signers(7)), "signature.invalid"),
    "recv: two thirds is not a quorum": ("recv", lambda s: _recv_with(s, indices=[2, 3]), "certificate.quorum"),
    "recv: another relay chain": ("recv", lambda s: _recv_with(s, chain_id="other-relay"), "packet.wrong_chain"),
    "recv: another validator set": ("recv", lambda s: _recv_with(s, vset=validator_set(relay_signers(7)),
                                                                 signers=relay_signers(7)),
                                    "certificate.validator_set"),
    "recv: packet tampered after certification": ("recv", _tampered_packet, "proof.invalid"),
    "recv: packet for another chain": ("recv", _for_another_chain, "packet.wrong_chain"),
    "recv: state root not the certified one": ("recv", lambda s: _recv_with(s, state_root=bytes(32)),
                                               "proof.invalid"),
    "settle: ack other than the certified one": ("settle", lambda s: _settle(s, ack=_ERROR_ACK), "proof.invalid"),
    "settle: certificate of the verified record": (
        "settle", lambda s: _settle(s, certificate=s.h.net.verified_cert(s.p_out)), "proof.invalid"),
    "update_lane: a stale record": ("update_lane", _stale_lane_update, "packet.replay"),
    "update_relay_validators by a non-quorum": ("update_relay_validators", lambda s: (RELAYER, [{
        "commit": wire.commit_to_json(s.h.net.relay.commit(s.h.net.now_ms, indices=[0, 1])),
        "new_set": wire.validator_set_to_json(s.h.net.relay.vset)}]), "certificate.quorum"),
    "update_relay_validators to a set repeating a key": ("update_relay_validators", _duplicate_key_update,
                                                          "certificate.duplicate_validator"),
    "update_relay_validators to a set repeating an address": ("update_relay_validators", _duplicate_address_update,
                                                              "certificate.duplicate_validator"),
    "reset_relay_validators by a non-admin": ("reset_relay_validators", lambda s: (ALICE, [_reset_args(s)]),
                                              "auth.denied"),
    "reset_relay_validators before expiry": ("reset_relay_validators", lambda s: (OPERATOR, [_reset_args(s)]),
                                             "lifecycle.illegal"),
    "init_bridge again": ("init_bridge", lambda s: (OPERATOR, [s.h.genesis_json]), "packet.replay"),
    # phase 1
    "send: unknown lane": ("send", lambda s: _send(s, lane="lane-9"), "lane.invalid"),
    "send: to itself": ("send", lambda s: _send(s, dst_chain=FABRIC), "packet.wrong_chain"),
    "send: more than the balance": ("send", lambda s: _send(s, amount_wh=10**9), "funds.insufficient"),
    "send: a voucher nobody holds": ("send", lambda s: _send(s, denom=f"{LANE}/{DPOS}/kWh"), "funds.insufficient"),
    "send: no timeout": ("send", lambda s: _send(s, timeout_timestamp_ms=0), "codec.invalid"),
    "send: unknown kind": ("send", lambda s: _send(s, kind="gold"), "codec.invalid"),
    "send: amount as a string": ("send", lambda s: _send(s, amount_wh="10"), "codec.invalid"),
    "send: amount as a boolean": ("send", lambda s: _send(s, amount_wh=True), "codec.invalid"),
    "send: negative amount": ("send", lambda s: _send(s, amount_wh=-1), "codec.invalid"),
    "send: a sender argument": ("send", lambda s: _send(s, sender="OperatorMSP:bob"), "codec.invalid"),
    "send: receiver not a string": ("send", lambda s: _send(s, receiver=["bob"]), "codec.invalid"),
    # argument framing
    "unknown function": ("mint", lambda s: (ALICE, ["{}"]), "codec.invalid"),
    "send without its argument": ("send", lambda s: (ALICE, []), "codec.invalid"),
    "send with two arguments": ("send", lambda s: (ALICE, ["{}", "{}"]), "codec.invalid"),
    "five arguments": ("attest", lambda s: (ALICE, ["00", "00", "00", "00"]), "codec.invalid"),
    "argument not UTF-8": ("send", lambda s: (ALICE, [b"\xff\xfe{}"]), "codec.invalid"),
    "argument too large": ("send", lambda s: (ALICE, [b" " * (MAX_ARG_BYTES + 1)]), "codec.invalid"),
    "arguments a JSON array": ("recv", lambda s: (RELAYER, [json.dumps([s.recv])]), "codec.invalid"),
    "arguments not JSON": ("recv", lambda s: (RELAYER, ["{packet:"]), "codec.invalid"),
    "arguments nested too deeply": ("recv", lambda s: (RELAYER, ["[" * 5000 + "]" * 5000]), "codec.invalid"),
    "arguments with a duplicate key": (
        "recv", lambda s: (RELAYER, ['{"packet":"00","packet":"00","certificate":{}}']), "codec.invalid"),
    "arguments with NaN": (
        "transfer", lambda s: (ALICE, ['{"to":"SalesMSP:x","denom":"kWh","amount_wh":NaN}']), "codec.invalid"),
    "packet hex uppercase": ("recv", lambda s: _recv(s, packet=s.recv["packet"].upper()), "codec.invalid"),
    "packet hex odd": ("recv", lambda s: _recv(s, packet=s.recv["packet"][:-1]), "codec.invalid"),
    "packet with 0x": ("recv", lambda s: _recv(s, packet="0x" + s.recv["packet"]), "codec.invalid"),
    "packet bytes garbage": ("recv", lambda s: _recv(s, packet="00" * 40), "codec.invalid"),
    "packet not a string": ("recv", lambda s: _recv(s, packet=7), "codec.invalid"),
    "certificate not an object": ("recv", lambda s: _recv(s, certificate="x"), "codec.invalid"),
    "certificate signature short": ("recv", _short_signature, "codec.invalid"),
    "recv without its certificate": ("recv", lambda s: (RELAYER, [{"packet": s.recv["packet"]}]), "codec.invalid"),
    "timeout_receipt with an extra field": ("timeout_receipt", lambda s: _recv(s, x=1), "codec.invalid"),
    "ping with an argument": ("ping", lambda s: (RELAYER, ["{}"]), "codec.invalid"),
    # who the sender is
    "creator without a common name": ("register", _creator(OPERATOR_MSP, make_cert(None)), "auth.denied"),
    "creator with two common names": ("register", _creator(OPERATOR_MSP, make_cert(["a", "b"])), "auth.denied"),
    "creator common name with a slash": ("register", _creator(OPERATOR_MSP, make_cert(["a/b"])), "auth.denied"),
    "creator MSP id with a colon": ("register", _creator("Op:MSP", make_cert(["a"])), "auth.denied"),
    "creator identity not PEM": ("send", _creator(OPERATOR_MSP, b"not a certificate", "{}"), "auth.denied"),
    "set_transformer by a non-operator": (
        "set_transformer", lambda s: (ALICE, [{"name": "t1", "capacity_kw": 1}]), "auth.denied"),
    "issue_right by a non-operator": ("issue_right", lambda s: (ALICE, [_RIGHT]), "auth.denied"),
    "issue_right with a trace for an id": (
        "issue_right", lambda s: (OPERATOR, [{**_RIGHT, "right_id": "lane-0/dpos-park/r9"}]), "codec.invalid"),
    "set_station by a non-operator": (
        "set_station", lambda s: (ALICE, [{"name": "s1", "transformer": "t1"}]), "auth.denied"),
    "set_station with a slash in the name": (
        "set_station", lambda s: (OPERATOR, [{"name": "s/1", "transformer": "t1"}]), "codec.invalid"),
    "set_standing by a non-operator": (
        "set_standing", lambda s: (ALICE, [{"account": "SalesMSP:alice", "certified": True, "score": 1}]),
        "auth.denied"),
    "set_standing with a score over 10000": (
        "set_standing", lambda s: (OPERATOR, [{"account": "SalesMSP:alice", "certified": True, "score": 10_001}]),
        "codec.invalid"),
    "certify without an imported reputation": (
        "certify", lambda s: (OPERATOR, [{"account": "SalesMSP:alice", "src_chain": DPOS, "subject": "alice",
                                          "model": "dr-user-reputation/v1"}]), "asset.invalid"),
    "transfer_right of a right nobody holds": (
        "transfer_right", lambda s: (ALICE, [{"right_id": "r404", "to": "OperatorMSP:bob"}]), "asset.invalid"),
    "transfer to an unknown account": (
        "transfer", lambda s: (ALICE, [{"to": "SalesMSP:nobody", "denom": "kWh", "amount_wh": 1}]), "protocol"),
    # the market (chains/fabric/chaincode/market.py): the regulator's functions, then uncertified callers
    **{f"{fn} by a non-operator": (fn, lambda s, a=a: (ALICE, [a]), "auth.denied") for fn, a in (
        ("market.certify", {"account": "SalesMSP:alice", "role": "sales"}),
        ("market.revoke", {"account": "SalesMSP:alice"}),
        ("market.open_round", {"round_id": "r1", "transformer": "t1", "requests_close_ms": 2**62,
                               "bids_close_ms": 2**62, "slot_start_ms": 2**62, "slot_end_ms": 2**62 + 1}),
        ("market.allocate", {"round_id": "r1"}),
        ("market.clear", {"round_id": "r1"}))},
    **{f"{fn} by an uncertified identity": (fn, lambda s, a=a: (ALICE, [a]), "market.uncertified") for fn, a in (
        ("market.publish_plan", {"plan_id": "p", "prices": {"peak": 1, "flat": 1, "valley": 1}, "fixed_fee": 0}),
        ("market.choose_plan", {"profile": {"peak": 1, "flat": 1, "valley": 1}}),
        ("market.propose_contract", {"contract_id": "c", "terms_sha256": "00"}),
        ("market.accept_contract", {"contract_id": "c"}),
        ("market.settle_contract", {"contract_id": "c", "delivered_kwh": 1}),
        ("market.request", {"round_id": "r1", "station": "s1", "power_kw": 1, "willingness": "weak",
                            "flexibility_bp": 0}),
        ("market.bid", {"round_id": "r1", "station": "s1", "side": "buy", "power_kw": 1, "price": 1}),
        ("market.p2p_offer", {"round_id": "r1", "station": "s1", "offer_id": "o", "to": "SalesMSP:bob",
                              "power_kw": 1, "price": 1}),
        ("market.p2p_accept", {"round_id": "r1", "offer_id": "o", "station": "s1"}),
        ("market.p2p_cancel", {"round_id": "r1", "offer_id": "o"}))},
    "market arguments with an unknown field": (
        "market.choose_plan", lambda s: (ALICE, [{"profile": {}, "x": 1}]), "codec.invalid"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refusal(s: Setup, name: str) -> None:
    fn, prepare, code = CASES[name]
    who, args = prepare(s)
    s.h.check()
    assert s.h.refused(who, fn, *args) == code
    s.h.check()


def test_every_submit_function_has_a_refusal_case() -> None:
    covered = {fn for fn, _, _ in CASES.values()}
    assert {name for name, f in FUNCTIONS.items() if f.submit} - covered == set()


# --- genesis --------------------------------------------------------------------------------------


def _genesis_cases(h: Harness) -> dict[str, tuple[Any, str]]:
    g = genesis(h.net)
    bridge = g["bridge"]
    return {
        "not an object": ([g], "codec.invalid"),
        "unknown key": ({**g, "mint": 1}, "codec.invalid"),
        "no chain id": ({k: v for k, v in g.items() if k != "chain_id"}, "codec.invalid"),
        "chain id uppercase": ({**g, "chain_id": "Fabric"}, "codec.invalid"),
        "no bridge section": ({k: v for k, v in g.items() if k != "bridge"}, "codec.invalid"),
        "bridge section not an object": ({**g, "bridge": []}, "codec.invalid"),
        "bridge section unknown key": ({**g, "bridge": {**bridge, "x": 1}}, "codec.invalid"),
        "relay validators malformed": ({**g, "bridge": {**bridge, "relay_validators": {"validators": 1}}},
                                       "codec.invalid"),
        "relay validators repeat a key": ({**g, "bridge": {**bridge, "relay_validators": _repeat_key(bridge)}},
                                          "certificate.duplicate_validator"),
        "relay validators repeat an address": ({**g, "bridge": {**bridge, "relay_validators": _repeat_address(bridge)}},
                                               "certificate.duplicate_validator"),
        "trusting period too short": ({**g, "bridge": {**bridge, "trusting_period_ms": 59_999}}, "codec.invalid"),
        "trusting period over a year": ({**g, "bridge": {**bridge, "trusting_period_ms": 366 * 86_400_000}},
                                        "codec.invalid"),
        "trusted time negative": ({**g, "bridge": {**bridge, "trusted_time_ms": -1}}, "codec.invalid"),
        "relay admin outside the operator MSP": ({**g, "bridge": {**bridge, "relay_admin": "SalesMSP:alice"}},
                                                 "codec.invalid"),
        "lanes not a list": ({**g, "bridge": {**bridge, "lanes": {"lane": LANE}}}, "codec.invalid"),
        "lane to itself": ({**g, "bridge": {**bridge, "lanes": [{"lane": LANE, "counterparty": FABRIC}]}},
                           "codec.invalid"),
        "native denom with a slash": ({**g, "bridge": {**bridge, "native_denoms": ["a/b"]}}, "codec.invalid"),
        "native denoms not strings": ({**g, "bridge": {**bridge, "native_denoms": [1]}}, "codec.invalid"),
        "rights operator not an account id": ({**g, "bridge": {**bridge, "rights_operator": "operator"}},
                                              "codec.invalid"),
        "transformers not an object": ({**g, "bridge": {**bridge, "transformers": [1]}}, "codec.invalid"),
        "transformer capacity negative": ({**g, "bridge": {**bridge, "transformers": {"t": -1}}}, "codec.invalid"),
        "account id without MSP": ({**g, "accounts": ["alice"]}, "codec.invalid"),
        "accounts repeated": ({**g, "accounts": ["SalesMSP:alice", "SalesMSP:alice"]}, "codec.invalid"),
        "balance of an unlisted account": ({**g, "balances": [{"account": "SalesMSP:eve", "denom": "kWh",
                                                                "amount": 1}]}, "codec.invalid"),
        "balance of a voucher": ({**g, "balances": [{"account": "SalesMSP:alice", "denom": f"{LANE}/{DPOS}/kWh",
                                                      "amount": 1}]}, "codec.invalid"),
        "balance zero": ({**g, "balances": [{"account": "SalesMSP:alice", "denom": "kWh", "amount": 0}]},
                         "codec.invalid"),
        "balance as a string": ({**g, "balances": [{"account": "SalesMSP:alice", "denom": "kWh", "amount": "9"}]},
                                "codec.invalid"),
        "balance past uint64 in total": ({**g, "balances": [
            {"account": "SalesMSP:alice", "denom": "kWh", "amount": 2**64 - 1},
            {"account": "OperatorMSP:bob", "denom": "kWh", "amount": 1}]}, "codec.invalid"),
    }


def _repeat_key(bridge: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(bridge["relay_validators"]))
    body["validators"][1]["ed25519_pubkey"] = body["validators"][0]["ed25519_pubkey"]
    return dict(body)


def _repeat_address(bridge: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(bridge["relay_validators"]))
    body["validators"][0]["eth_address"] = body["validators"][2]["eth_address"] = "11" * 20
    return dict(body)


@pytest.mark.parametrize("name", sorted(_genesis_cases(make_harness(init=False))))
def test_genesis_refusal(name: str) -> None:
    h = make_harness(init=False)
    value, code = _genesis_cases(h)[name]
    assert h.refused(OPERATOR, "init_bridge", json.dumps(value)) == code
    assert h.fabric.ledger.state == {}
    h.ok(OPERATOR, "init_bridge", h.genesis_json)  # the valid one still goes through


def test_before_genesis_everything_but_init_attest_and_ping_is_refused() -> None:
    h = make_harness(init=False)
    for fn, f in FUNCTIONS.items():
        if fn in ("init_bridge", "attest", "ping") or not f.submit:
            continue
        assert h.refused(ALICE, fn, *(["{}"] * f.arity)) == "protocol", fn
    assert h.ok(ALICE, "ping") == []  # reads nothing, not even the bridge's config: it only makes a block


def test_a_genesis_pin_admits_only_that_genesis() -> None:
    import hashlib
    probe = make_harness(init=False)
    pin = hashlib.sha256(probe.genesis_json.encode()).digest()
    h = make_harness(init=False, contract=BridgeContract(genesis_sha256=pin))
    h.genesis_json = probe.genesis_json.replace('"amount": 100000', '"amount": 100001')
    assert h.refused(OPERATOR, "init_bridge", h.genesis_json) == "auth.denied"
    h.ok(OPERATOR, "init_bridge", probe.genesis_json)


# --- hostile bytes ----------------------------------------------------------------------------------

_ARG_KEYS = ("packet", "certificate", "ack", "dst_chain", "lane", "kind", "receiver", "denom", "amount_wh",
             "timeout_timestamp_ms", "to", "commit", "new_set", "config", "right_id", "name", "capacity_kw",
             "station", "transformer", "power_kw", "slot_start_ms", "slot_end_ms", "owner", "account", "certified",
             "score", "src_chain", "subject", "model")


@settings(max_examples=150, deadline=None)
@given(fn=st.sampled_from(sorted(FUNCTIONS)), raw=st.lists(to_bytes(json_text(_ARG_KEYS)), max_size=4))
def test_hostile_arguments_get_typed_refusals(shared: Harness, fn: str, raw: list[bytes]) -> None:
    before = shared.fabric.ledger.snapshot()
    r = shared.fabric.endorse(RELAYER, fn, *raw, now_ms=shared.net.now_ms)
    if r.response.status != STATUS_OK:
        code = r.response.code
        assert code is not None and code != "remote"
        assert "internal error" not in r.response.message, r.response.message
    assert shared.fabric.ledger.snapshot() == before


@pytest.fixture(scope="module")
def shared() -> Harness:
    return make_harness()


@pytest.fixture(scope="module")
def valid_recv() -> tuple[Harness, str]:
    h = make_harness()
    p = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC))
    return h, json.dumps(h.recv_args(p, h.net.verify(p)))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mangled_recv_arguments_get_typed_refusals(valid_recv: tuple[Harness, str], data: st.DataObject) -> None:
    """A valid recv argument with bytes flipped, cut or spliced in: a typed refusal (or, where the change is
    harmless, the same success), never an internal error."""
    h, text = valid_recv
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "splice"]))
        if op == "flip":
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[i:i + data.draw(st.integers(1, 64))]
        else:
            raw[i:i] = data.draw(st.sampled_from([b"0", b"ff", b'"', b"{", b"]", b"\\u0000", b"9" * 30, b"-"]))
        if not raw:
            raw = bytearray(b"{}")
    r = h.fabric.endorse(RELAYER, "recv", bytes(raw), now_ms=h.net.now_ms)
    if r.response.status != STATUS_OK:
        assert r.response.code not in (None, "remote") and "internal error" not in r.response.message
