"""``bridge.recv_batch`` and ``bridge.settle_batch`` (protocol SPEC §7.10): many packets under one certificate batch.

Every scenario checks supply conservation and the one-live-copy rule for rights after it (:meth:`Network.check`), and
every refused batch leaves the park's state root as it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common import wire
from protocol.certificate import RelayCertificate
from protocol.codec import encode_ack, encode_packet
from protocol.errors import (
    CodecError,
    InvalidProofError,
    ProtocolError,
    ReplayError,
    SignatureError,
    TimeoutExpiredError,
    WrongChainError,
)
from protocol.paths import outcome_path, verified_path
from protocol.types import Acknowledgement, AckStatus, Packet
from tests.unit.bridge.sim import MINUTE, Network, relay_signers, two_parks

VOUCHER = "lane-0/dpos-park/kWh"


@pytest.fixture
def net() -> Network:
    return two_parks()


def energy(receiver: str, amount: int, **kw: Any) -> dict[str, Any]:
    return {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": receiver, "denom": "kWh",
            "amount_wh": amount, **kw}


def batch_cert(net: Network, keys: list[bytes], **commit_kw: Any) -> dict[str, Any]:
    """A certificate batch of ``keys`` in one new relay block (what the relay's ``getCertificates`` answers)."""
    commit = net.relay.commit(net.now_ms, **commit_kw)
    tree = net.relay.tree
    return wire.certificate_batch_to_json(commit, [RelayCertificate(commit, k, tree.get(k), tree.prove(k))
                                                   for k in keys])


def vkey(p: Packet) -> bytes:
    return verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence)


def okey(p: Packet) -> bytes:
    return outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence)


def sent_and_verified(net: Network, n: int, **kw: Any) -> list[Packet]:
    packets = [net.send("dpos-park", "alice", **energy("bob", 100 * (i + 1), **kw)) for i in range(n)]
    for p in packets:
        net.relay.verify_packet(net.parks["dpos-park"], p)
    return packets


def recv_batch(net: Network, packets: list[Packet], cert: dict[str, Any]) -> list[dict[str, Any]]:
    return net.parks["poc-park"].tx("relayer", "bridge.recv_batch",
                                    {"packets": [encode_packet(p).hex() for p in packets], "certificates": cert})


def settle_batch(net: Network, items: list[tuple[Packet, str | None]], cert: dict[str, Any]) -> list[dict[str, Any]]:
    return net.parks["dpos-park"].tx("relayer", "bridge.settle_batch", {
        "items": [{"packet": encode_packet(p).hex(), **({} if a is None else {"ack": a})} for p, a in items],
        "certificates": cert})


def refused(net: Network, chain: str, fn: Any, err: type[ProtocolError]) -> ProtocolError:
    root = net.parks[chain].state.root
    with pytest.raises(err) as exc:
        fn()
    assert net.parks[chain].state.root == root, "a refused batch changed the park's state"
    net.check()
    return exc.value


def test_a_batch_runs_phases_3_and_4_of_every_packet(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    packets = sent_and_verified(net, 3)
    events = recv_batch(net, packets, batch_cert(net, [vkey(p) for p in packets]))
    acks = [e for e in events if e["type"] == "write_ack"]
    assert [e["sequence"] for e in acks] == [1, 2, 3] and all(e["success"] for e in acks)
    assert poc.balance("bob", VOUCHER) == 600 and poc.supply(VOUCHER) == 600
    net.check()
    ack_hex = [net.relay.confirm_ack(poc, p).hex() for p in packets]
    events = settle_batch(net, list(zip(packets, ack_hex, strict=True)), batch_cert(net, [okey(p) for p in packets]))
    assert [e["sequence"] for e in events if e["type"] == "settle_packet"] == [1, 2, 3]
    assert dpos.state.prefix_items(b"commitments/") == [] and dpos.balance("alice", "kWh") == 100_000 - 600
    net.check()


def test_received_packets_are_skipped_and_a_batch_of_only_those_is_a_replay(net: Network) -> None:
    poc = net.parks["poc-park"]
    packets = sent_and_verified(net, 3)
    net.recv(packets[1], net.verified_cert(packets[1]))  # another relayer got there first
    events = recv_batch(net, packets, batch_cert(net, [vkey(p) for p in packets]))
    assert [e["sequence"] for e in events if e["type"] == "write_ack"] == [1, 3]
    (skip,) = [e for e in events if e["type"] == "packets_skipped"]
    assert skip["received_already"] == [2] and skip["timed_out"] == []
    assert poc.balance("bob", VOUCHER) == 600
    net.check()
    # the whole batch again: nothing left to do, refused before any signature is checked
    forged = batch_cert(net, [vkey(p) for p in packets], signers=relay_signers(9))
    refused(net, "poc-park", lambda: recv_batch(net, packets, forged), ReplayError)


def test_a_packet_listed_twice_is_received_once(net: Network) -> None:
    poc = net.parks["poc-park"]
    (p,) = sent_and_verified(net, 1)
    events = recv_batch(net, [p, p], batch_cert(net, [vkey(p), vkey(p)]))
    assert len([e for e in events if e["type"] == "write_ack"]) == 1
    assert poc.balance("bob", VOUCHER) == 100
    net.check()


@pytest.mark.parametrize("fault", ["forged_signatures", "no_quorum", "wrong_record", "tampered_proof",
                                   "unverified_packet", "other_chain", "count_mismatch", "wrong_round"])
def test_a_bad_batch_is_refused_whole_and_writes_nothing(net: Network, fault: str) -> None:
    packets = sent_and_verified(net, 3)
    keys = [vkey(p) for p in packets]
    cert = batch_cert(net, keys)
    err: type[ProtocolError] = InvalidProofError
    if fault == "forged_signatures":
        cert, err = batch_cert(net, keys, signers=relay_signers(9)), SignatureError
    elif fault == "no_quorum":
        from protocol.errors import QuorumError
        cert, err = batch_cert(net, keys, indices=[2, 3]), QuorumError
    elif fault == "wrong_record":
        cert["records"][1], cert["records"][2] = cert["records"][2], cert["records"][1]
    elif fault == "tampered_proof":
        proof = bytearray(bytes.fromhex(cert["records"][2]["proof"]))
        proof[-1] ^= 1
        cert["records"][2]["proof"] = proof.hex()
    elif fault == "unverified_packet":
        extra = net.send("dpos-park", "alice", **energy("bob", 7))  # committed, never verified by the relay
        packets, cert = [*packets, extra], batch_cert(net, [*keys, vkey(extra)])
    elif fault == "other_chain":
        back = net.send("poc-park", "carol", **{**energy("alice", 5), "dst_chain": "dpos-park"})
        net.relay.verify_packet(net.parks["poc-park"], back)
        packets, cert, err = [*packets, back], batch_cert(net, [*keys, vkey(back)]), WrongChainError
    elif fault == "count_mismatch":
        cert["records"] = cert["records"][:2]
        err = CodecError
    else:
        cert["commit"]["round"] = 1  # the signatures were made for round 0
        err = SignatureError
    refused(net, "poc-park", lambda: recv_batch(net, packets, cert), err)


@pytest.mark.parametrize("args", [
    {"packets": [], "certificates": None},
    {"packets": "00", "certificates": {}},
    {"packets": ["zz"], "certificates": {}},
    {"packets": ["00"] * 65, "certificates": {}},
    {"packets": ["00"]},
    {"packets": ["00"], "certificates": {"commit": {}, "records": []}, "extra": 1},
])
def test_malformed_batch_arguments_are_codec_errors(net: Network, args: dict[str, Any]) -> None:
    refused(net, "poc-park", lambda: net.parks["poc-park"].tx("relayer", "bridge.recv_batch", args), CodecError)


def test_timed_out_packets_are_skipped_and_a_batch_of_only_those_is_refused(net: Network) -> None:
    poc = net.parks["poc-park"]
    late = sent_and_verified(net, 1, timeout_timestamp_ms=net.now_ms + MINUTE)
    ok = sent_and_verified(net, 1)
    net.advance(2 * MINUTE)
    events = recv_batch(net, [*late, *ok], batch_cert(net, [vkey(p) for p in [*late, *ok]]))
    assert [e["sequence"] for e in events if e["type"] == "write_ack"] == [2]
    (skip,) = [e for e in events if e["type"] == "packets_skipped"]
    assert skip["timed_out"] == [1]
    assert poc.state.get(b"receipts/dpos-park/lane-0/1") is None  # nothing written for it
    net.check()
    refused(net, "poc-park", lambda: recv_batch(net, late, batch_cert(net, [vkey(late[0])])), TimeoutExpiredError)


def test_settle_batch_mixes_acks_and_timeouts_and_skips_the_settled(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    acked = sent_and_verified(net, 2)
    recv_batch(net, acked, batch_cert(net, [vkey(p) for p in acked]))
    ack_hex = [net.relay.confirm_ack(poc, p).hex() for p in acked]
    timed = net.send("dpos-park", "alice", **energy("bob", 1_000, timeout_timestamp_ms=net.now_ms + MINUTE))
    net.advance(2 * MINUTE)
    net.relay.confirm_timeout_unverified(dpos, poc, timed, net.now_ms)
    net.settle(acked[0], net.outcome_cert(acked[0]), ack_hex[0])  # settled one by one already
    items: list[tuple[Packet, str | None]] = [(acked[0], ack_hex[0]), (acked[1], ack_hex[1]), (timed, None)]
    events = settle_batch(net, items, batch_cert(net, [okey(p) for p, _ in items]))
    settles = [e for e in events if e["type"] == "settle_packet"]
    assert [(e["sequence"], e["refunded"]) for e in settles] == [(2, False), (3, True)]
    (skip,) = [e for e in events if e["type"] == "packets_skipped"]
    assert skip["settled_already"] == [1]
    assert dpos.balance("alice", "kWh") == 100_000 - 300 and dpos.state.prefix_items(b"commitments/") == []
    net.check()
    refused(net, "dpos-park", lambda: settle_batch(net, items, batch_cert(net, [okey(p) for p, _ in items])),
            ReplayError)


@pytest.mark.parametrize("fault", ["error_ack_for_a_delivery", "timeout_claimed_for_an_ack", "forged", "other_src"])
def test_a_bad_settle_batch_is_refused_whole(net: Network, fault: str) -> None:
    poc = net.parks["poc-park"]
    packets = sent_and_verified(net, 2)
    recv_batch(net, packets, batch_cert(net, [vkey(p) for p in packets]))
    ack_hex = [net.relay.confirm_ack(poc, p).hex() for p in packets]
    items: list[tuple[Packet, str | None]] = list(zip(packets, ack_hex, strict=True))
    keys = [okey(p) for p in packets]
    cert, err = batch_cert(net, keys), InvalidProofError
    if fault == "timeout_claimed_for_an_ack":
        items[1] = (packets[1], None)  # a refund claimed for a delivered packet
    elif fault == "error_ack_for_a_delivery":  # a refund claimed with an error ack the target never wrote
        items[0] = (packets[0], encode_ack(Acknowledgement(AckStatus.ERROR, "escrow.insufficient", b"")).hex())
    elif fault == "forged":
        cert, err = batch_cert(net, keys, signers=relay_signers(9)), SignatureError
    else:
        back = net.send("poc-park", "carol", **{**energy("alice", 5), "dst_chain": "dpos-park"})
        items, err = [*items, (back, None)], WrongChainError
        cert = batch_cert(net, [*keys, okey(back)])
    refused(net, "dpos-park", lambda: settle_batch(net, items, cert), err)
