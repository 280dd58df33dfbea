"""Every way a bridge op must refuse, as a table: each case malleates one valid set-up into one failure.

A case's ``prepare`` may run valid steps first (a first delivery before a replay...), then returns the
failing call. The test asserts the typed error class and that no park's state root moved: a refused
transaction changes nothing, its nonce included. Supply conservation is checked before and after.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chains.common.bridge import AssetError
from protocol.codec import encode_ack, encode_energy, encode_packet
from protocol.errors import (
    AuthorizationError,
    CapacityExceededError,
    CodecError,
    InsufficientFundsError,
    InvalidProofError,
    LaneError,
    OverCapacityError,
    ProtocolError,
    QuorumError,
    ReplayError,
    SignatureError,
    SlotStartedError,
    SlotTimeoutError,
    StationUnknownError,
    TimeoutExpiredError,
    TransformerMismatchError,
    TransformerUnknownError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from protocol.lane_config import encode_lane_config
from protocol.paths import verified_path
from protocol.types import Acknowledgement, AckStatus, ChainId, EnergyPayload, LaneId, Packet, PacketKind
from tests.unit.bridge.sim import MINUTE, Network, relay_signers, two_parks, validator_set

VOUCHER = "lane-0/dpos-park/kWh"


@dataclass
class Setup:
    """Two parks (plus edge-park on lane-1 from poc-park); p1 and p2 sent by alice and verified."""

    net: Network
    p1: Packet
    p2: Packet
    cert1: dict[str, Any]
    cert2: dict[str, Any]

    def recv(self, packet: Packet, cert: dict[str, Any], on: str | None = None) -> Any:
        park = self.net.parks[on or packet.dst_chain]
        return park.tx("relayer", "bridge.recv", {"packet": encode_packet(packet).hex(), "certificate": cert})

    def send(self, src: str = "dpos-park", sender: str = "alice", **over: Any) -> Any:
        args = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh",
                "amount_wh": 10, "timeout_timestamp_ms": self.net.now_ms + MINUTE, **over}
        return self.net.parks[src].tx(sender, "bridge.send", {k: v for k, v in args.items() if v is not _DROP})

    def acked(self) -> tuple[dict[str, Any], str]:
        """Deliver p1 and certify its ack: (outcome certificate, ack hex)."""
        self.net.recv(self.p1, self.cert1)
        return self.net.confirm(self.p1)

    def settle(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None, on: str | None = None) -> Any:
        args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
        if ack_hex is not None:
            args["ack"] = ack_hex
        return self.net.parks[on or packet.src_chain].tx("relayer", "bridge.settle", args)

    def issue(self, right_id: str, owner: str = "alice", start_off: int = 60 * MINUTE) -> None:
        start = self.net.now_ms + start_off
        self.net.parks["dpos-park"].tx("operator", "rights.issue", {
            "right_id": right_id, "station": "s1", "transformer": "t1", "power_kw": 5, "slot_start_ms": start,
            "slot_end_ms": start + 60 * MINUTE, "owner": owner})


_DROP = object()
Op = Callable[[], Any]


CAPACITIES = {"kWh": 50_000, "*": 10}
"""dpos-park's capacities on lane-0 to poc-park, as it learnt them from the relay genesis."""


def make_setup() -> Setup:
    net = two_parks(capacities=CAPACITIES)
    net.add_park("edge-park", [{"lane": "lane-1", "counterparty": "poc-park"}], accounts=("dave", "relayer"))
    net.parks["poc-park"].state.set_json(b"bridge/lanes/edge-park/lane-1",
                                         {"counterparty": "edge-park", "lane": "lane-1"})
    args = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh"}
    p1 = net.send("dpos-park", "alice", **args, amount_wh=5_000)
    p2 = net.send("dpos-park", "alice", **args, amount_wh=1_000)
    return Setup(net, p1, p2, net.verify(p1), net.verify(p2))


def flip_hex(h: str, at: int = 0) -> str:
    b = bytearray.fromhex(h)
    b[at] ^= 1
    return b.hex()


def malleate(cert: dict[str, Any], fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    out = copy.deepcopy(cert)
    fn(out)
    return out


def _tamper_sibling(c: dict[str, Any]) -> None:
    # proof = u16 n || siblings...: flip a bit of the first sibling
    assert int(c["proof"][:4], 16) > 0
    c["proof"] = c["proof"][:4] + flip_hex(c["proof"][4:6]) + c["proof"][6:]


def _other_value(c: dict[str, Any]) -> None:
    c["value"] = "00" * 32


def _forge_sig(c: dict[str, Any]) -> None:
    c["commit"]["signatures"][0]["ed25519_sig"] = flip_hex(c["commit"]["signatures"][0]["ed25519_sig"])


def _tamper_root(c: dict[str, Any]) -> None:
    c["commit"]["header"]["state_root"] = flip_hex(c["commit"]["header"]["state_root"])


def _duplicate_signer(c: dict[str, Any]) -> None:
    sigs = c["commit"]["signatures"]
    sigs[1] = dict(sigs[0])


def _unknown_key(c: dict[str, Any]) -> None:
    c["extra"] = 1


def _bool_height(c: dict[str, Any]) -> None:
    c["commit"]["header"]["round"] = True


def _forged_lane_packet(s: Setup) -> Packet:
    return Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-9"), 1, PacketKind.ENERGY,
                  encode_energy(EnergyPayload("kWh", 1)), "alice", "bob", s.net.now_ms + MINUTE)


def _other_relay_chain(s: Setup) -> Any:
    return s.recv(s.p1, s.net.verified_cert(s.p1, chain_id="relay-2"))


def _too_few(s: Setup) -> Any:
    return s.recv(s.p1, s.net.verified_cert(s.p1, indices=(2, 3)))  # power 4 of 6: exactly 2/3


def _wrong_set(s: Setup) -> Any:
    other = relay_signers(9)
    return s.recv(s.p1, s.net.verified_cert(s.p1, signers=other, vset=validator_set(other)))


def _trusted_hash_other_keys(s: Setup) -> Any:
    return s.recv(s.p1, s.net.verified_cert(s.p1, signers=relay_signers(9)))


def _expired(s: Setup) -> Any:
    s.net.advance(20 * MINUTE)
    return s.recv(s.p1, s.net.verified_cert(s.p1))


def _absent(s: Setup) -> Any:
    p3 = Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-0"), 3, PacketKind.ENERGY,
                encode_energy(EnergyPayload("kWh", 7)), "alice", "bob", s.net.now_ms + MINUTE)
    return s.recv(p3, s.net.verified_cert(p3))  # a non-membership certificate: value null


def _outcome_key_cert(s: Setup) -> Any:
    return s.recv(s.p1, s.net.outcome_cert(s.p1))


def _replay_packet(s: Setup) -> Op:
    s.recv(s.p1, s.cert1)
    fresh = s.net.verified_cert(s.p1)
    return lambda: s.recv(s.p1, fresh)


def _replay_cert(s: Setup) -> Op:
    s.recv(s.p1, s.cert1)
    return lambda: s.recv(s.p1, s.cert1)


def _uppercase_packet(s: Setup) -> Any:
    return s.net.parks["poc-park"].tx("relayer", "bridge.recv", {"packet": encode_packet(s.p1).hex().upper(),
                                                                 "certificate": s.cert1})


RECV_CASES: list[tuple[str, Callable[[Setup], Op], type[ProtocolError]]] = [
    ("replayed packet", _replay_packet, ReplayError),
    ("replayed certificate", _replay_cert, ReplayError),
    ("forged signature", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _forge_sig)), SignatureError),
    ("duplicate signer", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _duplicate_signer)), SignatureError),
    ("exactly 2/3 of the power", lambda s: lambda: _too_few(s), QuorumError),
    ("another validator set", lambda s: lambda: _wrong_set(s), ValidatorSetMismatchError),
    ("trusted hash, other keys", lambda s: lambda: _trusted_hash_other_keys(s), SignatureError),
    ("another relay chain id", lambda s: lambda: _other_relay_chain(s), WrongChainError),
    ("proof for another key", lambda s: lambda: s.recv(s.p2, s.cert1), InvalidProofError),
    ("proof for another value", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _other_value)), InvalidProofError),
    ("tampered proof", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _tamper_sibling)), InvalidProofError),
    ("tampered state root", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _tamper_root)), SignatureError),
    ("non-membership certificate", lambda s: lambda: _absent(s), InvalidProofError),
    ("outcome certificate for a packet", lambda s: lambda: _outcome_key_cert(s), InvalidProofError),
    ("expired timeout", lambda s: lambda: _expired(s), TimeoutExpiredError),
    ("packet for another chain", lambda s: lambda: s.recv(s.p1, s.cert1, on="dpos-park"), WrongChainError),
    ("lane not configured for the source", lambda s: lambda: s.recv(_forged_lane_packet(s), s.cert1), LaneError),
    ("uppercase packet hex", lambda s: lambda: _uppercase_packet(s), CodecError),
    ("certificate with an unknown key", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _unknown_key)), CodecError),
    ("boolean round", lambda s: lambda: s.recv(s.p1, malleate(s.cert1, _bool_height)), CodecError),
]


def _settle_twice(s: Setup) -> Op:
    cert, ack = s.acked()
    s.settle(s.p1, cert, ack)
    return lambda: s.settle(s.p1, cert, ack)


def _other_ack(s: Setup) -> Op:
    cert, _ = s.acked()
    return lambda: s.settle(s.p1, cert, encode_ack(Acknowledgement(AckStatus.ERROR, "receiver.unknown", b"")).hex())


def _timeout_with_ack_cert(s: Setup) -> Op:
    cert, _ = s.acked()
    return lambda: s.settle(s.p1, cert, None)


def _premature_timeout(s: Setup) -> Op:
    # the relay has recorded no outcome: all a relayer can show is a certificate of absence
    cert = s.net.outcome_cert(s.p1)
    return lambda: s.settle(s.p1, cert, None)


def _settle_with_verified_cert(s: Setup) -> Op:
    _, ack = s.acked()
    return lambda: s.settle(s.p1, s.cert1, ack)


def _settle_on_target(s: Setup) -> Op:
    cert, ack = s.acked()
    return lambda: s.settle(s.p1, cert, ack, on="poc-park")


def _settle_other_packet(s: Setup) -> Op:
    cert, ack = s.acked()
    bigger = Packet(s.p1.src_chain, s.p1.dst_chain, s.p1.lane, s.p1.sequence, s.p1.kind,
                    encode_energy(EnergyPayload("kWh", 50_000)), s.p1.sender, s.p1.receiver,
                    s.p1.timeout_timestamp_ms)
    return lambda: s.settle(bigger, cert, ack)


def _settle_too_few(s: Setup) -> Op:
    _, ack = s.acked()
    cert = s.net.outcome_cert(s.p1, indices=(2, 3))  # power 4 of 6
    return lambda: s.settle(s.p1, cert, ack)


def _settle_bad_ack_hex(s: Setup) -> Op:
    cert, _ = s.acked()
    return lambda: s.settle(s.p1, cert, "zz")


SETTLE_CASES: list[tuple[str, Callable[[Setup], Op], type[ProtocolError]]] = [
    ("settle twice", _settle_twice, ReplayError),
    ("ack not the certified one", _other_ack, InvalidProofError),
    ("timeout claimed with an ack certificate", _timeout_with_ack_cert, InvalidProofError),
    ("timeout before the relay certified it", _premature_timeout, InvalidProofError),
    ("verified certificate as outcome", _settle_with_verified_cert, InvalidProofError),
    ("settle on the target", _settle_on_target, WrongChainError),
    ("another packet at the sequence", _settle_other_packet, InvalidProofError),
    ("outcome signed by 2/3 exactly", _settle_too_few, QuorumError),
    ("malformed ack hex", _settle_bad_ack_hex, CodecError),
]


def _escrowed_right_sent_again(s: Setup) -> Op:
    s.issue("r1")
    s.send(kind="charging_right", right_id="r1", denom=_DROP, amount_wh=_DROP)  # escrowed, in flight
    return lambda: s.send(kind="charging_right", right_id="r1", denom=_DROP, amount_wh=_DROP)


def _issue(s: Setup, **over: Any) -> Op:
    start = s.net.now_ms + 60 * MINUTE
    args = {"right_id": "r5", "station": "s1", "transformer": "t1", "power_kw": 1, "slot_start_ms": start,
            "slot_end_ms": start + MINUTE, "owner": "alice", **over}
    return lambda: s.net.parks["dpos-park"].tx("operator", "rights.issue", args)


def _issue_on_unregistered_transformer(s: Setup) -> Op:
    s.net.parks["dpos-park"].tx("operator", "rights.set_station", {"name": "s9", "transformer": "t9"})
    return _issue(s, station="s9", transformer="t9")


def _rep(s: Setup, **over: Any) -> Op:
    s.net.parks["dpos-park"].state.set_json(b"reputation/w1", {"score": 1, "model": "m", "height": 1})
    return lambda: s.send(kind="reputation", subject="w1", denom=_DROP, amount_wh=_DROP, **over)


def _right(s: Setup, **over: Any) -> Op:
    s.issue("r1")
    args = {"kind": "charging_right", "right_id": "r1", "denom": _DROP, "amount_wh": _DROP, **over}
    return lambda: s.send(**args)


def _above_default_capacity(s: Setup) -> Op:
    # the relay lowered the lane's default (`*`) to 0 packets: no reputation packet will ever pass
    _update_lane(s, _lane_update(s, {"kWh": 50_000, "*": 0}))
    s.net.parks["dpos-park"].state.set_json(b"reputation/w1", {"score": 1, "model": "m", "height": 1})
    return lambda: s.send(kind="reputation", subject="w1", denom=_DROP, amount_wh=_DROP)


def _voucher_burn_too_big(s: Setup) -> Op:
    s.net.recv(s.p1, s.cert1)  # bob holds 5000 of the voucher
    return lambda: s.send(src="poc-park", sender="bob", dst_chain="dpos-park", receiver="alice", denom=VOUCHER,
                          amount_wh=5_001)


def _lane_update(s: Setup, capacities: dict[str, int] | None = None, **commit_kw: Any) -> dict[str, Any]:
    return s.net.lane_update_args("dpos-park", "poc-park", "lane-0", capacities or {"kWh": 1}, **commit_kw)


def _update_lane(s: Setup, args: dict[str, Any], on: str = "dpos-park") -> Any:
    return s.net.parks[on].tx("relayer", "bridge.update_lane", args)


def _lane_update_replayed(s: Setup) -> Op:
    args = _lane_update(s)
    _update_lane(s, args)
    return lambda: _update_lane(s, args)


def _lane_update_older(s: Setup) -> Op:
    # two certified configs: the newer applied first, then the older may not roll it back
    older = _lane_update(s, {"kWh": 1})
    _update_lane(s, _lane_update(s, {"kWh": 2}))
    return lambda: _update_lane(s, older)


def _lane_update_other_config(s: Setup) -> Op:
    args = _lane_update(s, {"kWh": 1})
    return lambda: _update_lane(s, {**args, "config": encode_lane_config({"kWh": 10**9}).hex()})


def _lane_update_other_lane(s: Setup) -> Op:
    args = _lane_update(s)  # certifies dpos-park -> poc-park on lane-0
    return lambda: _update_lane(s, {**args, "lane": "lane-1"})


def _lane_update_other_direction(s: Setup) -> Op:
    # poc-park's own outgoing lane config cannot configure dpos-park's
    args = s.net.lane_update_args("poc-park", "dpos-park", "lane-0", {"kWh": 1})
    return lambda: _update_lane(s, {**args, "dst_chain": "poc-park"})


LANE_CASES: list[tuple[str, Callable[[Setup], Op], type[ProtocolError]]] = [
    ("lane update replayed", _lane_update_replayed, ReplayError),
    ("older lane update after a newer", _lane_update_older, ReplayError),
    ("config not the certified one", _lane_update_other_config, InvalidProofError),
    ("certificate of another lane", _lane_update_other_lane, InvalidProofError),
    ("certificate of the other direction", _lane_update_other_direction, InvalidProofError),
    ("lane update signed by 2/3 exactly", lambda s: lambda: _update_lane(s, _lane_update(s, indices=(2, 3))),
     QuorumError),
    ("lane update with a forged signature", lambda s: lambda: _update_lane(s, malleate(_lane_update(s), lambda a: (
        _forge_sig(a["certificate"])))), SignatureError),
    ("lane update to itself", lambda s: lambda: _update_lane(s, {**_lane_update(s), "dst_chain": "dpos-park"}),
     WrongChainError),
    ("malformed config", lambda s: lambda: _update_lane(s, {**_lane_update(s), "config": "00" * 31}), CodecError),
]


SEND_CASES: list[tuple[str, Callable[[Setup], Op], type[ProtocolError]]] = [
    ("no timeout", lambda s: lambda: s.send(timeout_timestamp_ms=_DROP), CodecError),
    ("zero timeout", lambda s: lambda: s.send(timeout_timestamp_ms=0), CodecError),
    ("timeout now", lambda s: lambda: s.send(timeout_timestamp_ms=s.net.now_ms), TimeoutExpiredError),
    ("string timeout", lambda s: lambda: s.send(timeout_timestamp_ms=str(s.net.now_ms + MINUTE)), CodecError),
    ("unknown lane", lambda s: lambda: s.send(lane="lane-7"), LaneError),
    ("amount above the lane's capacity", lambda s: lambda: s.send(amount_wh=50_001), OverCapacityError),
    ("kind above the default capacity", lambda s: _above_default_capacity(s), OverCapacityError),
    ("lane of another counterparty", lambda s: lambda: s.send(dst_chain="edge-park"), LaneError),
    ("to itself", lambda s: lambda: s.send(dst_chain="dpos-park"), WrongChainError),
    ("insufficient balance", lambda s: lambda: s.send(amount_wh=94_001), InsufficientFundsError),
    ("voucher burn beyond balance", _voucher_burn_too_big, InsufficientFundsError),
    ("zero amount", lambda s: lambda: s.send(amount_wh=0), CodecError),
    ("unknown kind", lambda s: lambda: s.send(kind="gold"), CodecError),
    ("user-supplied score", lambda s: lambda: s.send(kind="reputation", subject="w1", score=10, denom=_DROP,
                                                     amount_wh=_DROP), CodecError),
    ("reputation of an unknown subject", lambda s: lambda: s.send(kind="reputation", subject="w1", denom=_DROP,
                                                                  amount_wh=_DROP), AssetError),
    ("unknown right", lambda s: lambda: s.send(kind="charging_right", right_id="nope", denom=_DROP,
                                               amount_wh=_DROP), AssetError),
    ("right of someone else", lambda s: _right(s, sender="operator"), AuthorizationError),
    ("right timeout after slot start", lambda s: _right(s, timeout_timestamp_ms=s.net.now_ms + 60 * MINUTE + 1),
     SlotTimeoutError),
    ("escrowed right sent again", _escrowed_right_sent_again, AuthorizationError),
    ("reputation of a model the chain does not attest", lambda s: _rep(s, model="other/v1"), AssetError),
    ("empty reputation model", lambda s: _rep(s, model=""), CodecError),
    ("reputation model not a string", lambda s: _rep(s, model=7), CodecError),
    ("rights.issue by a user", lambda s: lambda: s.net.parks["dpos-park"].tx("alice", "rights.issue", {
        "right_id": "r5", "station": "s", "transformer": "t1", "power_kw": 1, "slot_start_ms": s.net.now_ms + 1,
        "slot_end_ms": s.net.now_ms + 2, "owner": "alice"}), AuthorizationError),
    ("rights.set_transformer by a user", lambda s: lambda: s.net.parks["dpos-park"].tx(
        "alice", "rights.set_transformer", {"name": "t1", "capacity_kw": 10**6}), AuthorizationError),
    ("rights.set_station by a user", lambda s: lambda: s.net.parks["dpos-park"].tx(
        "alice", "rights.set_station", {"name": "s1", "transformer": "t9"}), AuthorizationError),
    ("rights.set_station with an empty name", lambda s: lambda: s.net.parks["dpos-park"].tx(
        "operator", "rights.set_station", {"name": "", "transformer": "t1"}), CodecError),
    ("issue a right whose slot has started", lambda s: _issue(s, slot_start_ms=s.net.now_ms), SlotStartedError),
    ("issue at an unknown station", lambda s: _issue(s, station="s9"), StationUnknownError),
    ("issue at a station behind another transformer", lambda s: _issue(s, transformer="t2"),
     TransformerMismatchError),
    ("issue on an unregistered transformer", _issue_on_unregistered_transformer, TransformerUnknownError),
    ("issue above the transformer's capacity", lambda s: _issue(s, power_kw=101), CapacityExceededError),
    ("issue a right id with a '/'", lambda s: _issue(s, right_id="lane-0/x/r5"), CodecError),
    ("issue a right id twice", lambda s: (_issue(s)(), _issue(s))[1], AssetError),
]


ALL_CASES = RECV_CASES + SETTLE_CASES + SEND_CASES + LANE_CASES


@pytest.mark.parametrize(("name", "prepare", "error"), ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_rejected_without_state_change(name: str, prepare: Callable[[Setup], Op],
                                       error: type[ProtocolError]) -> None:
    s = make_setup()
    s.net.check()
    op = prepare(s)
    roots = s.net.roots()
    with pytest.raises(error) as info:
        op()
    assert type(info.value) is error, f"{name}: {info.value!r}"
    assert s.net.roots() == roots, name
    s.net.check()


def test_the_valid_setup_passes() -> None:
    """The table's base case: unmalleated, every step succeeds (so each failure above is the malleation's)."""
    s = make_setup()
    assert s.net.recv(s.p1, s.cert1)["success"]
    assert s.net.recv(s.p2, s.cert2)["success"]
    cert, ack = s.net.confirm(s.p1)
    assert s.net.settle(s.p1, cert, ack)["outcome"] == "acked"
    s.issue("r1")
    assert s.net.roundtrip("dpos-park", "alice", dst_chain="poc-park", lane="lane-0", kind="charging_right",
                           receiver="bob", right_id="r1")[1]["success"]
    s.net.check()


def test_relayed_certificate_key_binds_source_target_lane_and_sequence() -> None:
    s = make_setup()
    assert bytes.fromhex(s.cert1["key"]) == verified_path(s.p1.src_chain, s.p1.dst_chain, s.p1.lane, 1)
