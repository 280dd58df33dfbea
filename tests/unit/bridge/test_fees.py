"""Relay fees on a Python park's bridge (protocol SPEC §6.10): escrowed with the packet at send, paid to the payees
the relay certified at settlement, the rest refunded; escrowed = paid + refunded after every scenario."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import supply_report
from chains.common.fees import FEE_ESCROW, fee_path
from protocol.codec import ack_commitment, decode_ack, decode_outcome_record, encode_outcome, encode_packet
from protocol.errors import CodecError, InsufficientFundsError, InvalidProofError, ProtocolError, ReplayError
from protocol.paths import receipt_path
from protocol.types import FeePayees, Packet
from tests.unit.bridge.sim import MINUTE, Network
from tests.unit.bridge.test_batches import batch_cert, vkey

FEE = "prc"
START = 10_000
FEES = {"verify": 30, "execute": 50, "confirm": 20}


def _net() -> Network:
    net = Network()
    dpos = net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], fee_denom=FEE,
                        accounts=("alice", "bob", "relayer", "operator", "ver", "exe", "con"))
    net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}],
                 accounts=("bob", "carol", "relayer", "operator"), fee_denom="pcc")
    dpos.state.add_balance("alice", "kWh", 100_000)
    dpos.state.add_balance("alice", FEE, START)
    return net


def _records(net: Network) -> list[dict[str, Any]]:
    return [net.parks["dpos-park"].state.get_json(k) for k, _ in net.parks["dpos-park"].state.prefix_items(b"fees/")]


def check_fees(net: Network) -> None:
    """The fee escrow holds exactly the unsettled records' fees; no unit of the fee denom created or lost."""
    park = net.parks["dpos-park"]
    held = sum(r["verify"] + r["execute"] + r["confirm"] for r in _records(net))
    assert park.balance(FEE_ESCROW, FEE) == held
    total = sum(int(v) for k, v in park.state.prefix_items(b"balances/") if k.decode().endswith(f"/{FEE}"))
    assert total + supply_report(park.state, [FEE])["escrow"][FEE] == START  # the bridge escrows what is sent
    net.check()


def _send(net: Network, fees: dict[str, int] | None = FEES, **kw: Any) -> Packet:
    args: dict[str, Any] = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob",
                            "denom": "kWh", "amount_wh": 1_000, **kw}
    if fees is not None:
        args["fees"] = fees
    return net.send("dpos-park", "alice", **args)


def _events(net: Network, packet: Packet, cert: dict[str, Any], ack: str | None) -> list[dict[str, Any]]:
    args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
    if ack is not None:
        args["ack"] = ack
    return net.parks["dpos-park"].tx("relayer", "bridge.settle", args)


def _paid(events: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    return {e["step"]: (e["payee"], e["amount"]) for e in events if e["type"] == "fee_paid"}


def _refunded(events: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    return {e["step"]: (e["to"], e["amount"]) for e in events if e["type"] == "fee_refunded"}


def test_fees_are_escrowed_with_the_packet_and_reported_in_its_event() -> None:
    net = _net()
    events = net.parks["dpos-park"].tx("alice", "bridge.send", {
        "dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh",
        "amount_wh": 1_000, "timeout_timestamp_ms": net.now_ms + MINUTE, "fees": FEES})
    (sent,) = [e for e in events if e["type"] == "send_packet"]
    assert sent["fees"] == {**FEES, "denom": FEE}
    park = net.parks["dpos-park"]
    assert park.balance("alice", FEE) == START - 100
    assert park.balance(FEE_ESCROW, FEE) == 100
    assert park.state.get_json(fee_path("poc-park", "lane-0", sent["sequence"])) == {**FEES, "denom": FEE,
                                                                                    "payer": "alice"}
    check_fees(net)


def test_a_packet_without_fees_has_no_record_and_no_fee_field() -> None:
    net = _net()
    packet = _send(net, None)
    assert _records(net) == []
    net.recv(packet, net.verify(packet))
    cert, ack = net.confirm(packet, FeePayees("ver", "exe", "con"))
    events = _events(net, packet, cert, ack)
    assert not _paid(events) and not _refunded(events)
    assert net.parks["dpos-park"].balance("ver", FEE) == 0
    check_fees(net)


def test_a_success_ack_pays_each_step_to_its_certified_payee() -> None:
    net = _net()
    packet = _send(net)
    written = net.recv(packet, net.verify(packet), relayer="relayer-b")
    assert decode_ack(bytes.fromhex(written["ack"])).relayer == "relayer-b"
    cert, ack = net.confirm(packet, FeePayees("ver", "exe", "con"))
    events = _events(net, packet, cert, ack)
    assert _paid(events) == {"verify": ("ver", 30), "execute": ("exe", 50), "confirm": ("con", 20)}
    assert not _refunded(events)
    park = net.parks["dpos-park"]
    assert (park.balance("ver", FEE), park.balance("exe", FEE), park.balance("con", FEE)) == (30, 50, 20)
    assert _records(net) == []
    check_fees(net)


def test_an_error_ack_refunds_the_energy_and_still_pays_the_relayers() -> None:
    net = _net()
    packet = _send(net, receiver="nobody-here")  # not an account of poc-park: error ack receiver.unknown
    net.recv(packet, net.verify(packet))
    cert, ack = net.confirm(packet, FeePayees("ver", "exe", "con"))
    assert not decode_ack(bytes.fromhex(ack)).success
    events = _events(net, packet, cert, ack)
    assert [e["refunded"] for e in events if e["type"] == "settle_packet"] == [True]
    assert net.parks["dpos-park"].balance("alice", "kWh") == 100_000
    assert _paid(events) == {"verify": ("ver", 30), "execute": ("exe", 50), "confirm": ("con", 20)}
    check_fees(net)


def test_a_timeout_refunds_the_execute_fee_and_pays_the_others() -> None:
    net = _net()
    packet = _send(net)
    net.verify(packet)
    net.advance(11 * MINUTE)
    cert = net.confirm_timeout(packet, FeePayees("ver", "", "con"))
    events = _events(net, packet, cert, None)
    assert _paid(events) == {"verify": ("ver", 30), "confirm": ("con", 20)}
    assert _refunded(events) == {"execute": ("alice", 50)}
    assert net.parks["dpos-park"].balance("alice", FEE) == START - 50
    check_fees(net)


def test_an_unverified_timeout_pays_only_the_confirm_step() -> None:
    net = _net()
    packet = _send(net)
    net.advance(11 * MINUTE)
    # never verified: the relay's record names only the confirming relayer
    net.relay.confirm_timeout(net.parks["poc-park"], packet, net.now_ms, FeePayees("", "", "con"))
    events = _events(net, packet, net.outcome_cert(packet), None)
    assert _paid(events) == {"confirm": ("con", 20)}
    assert _refunded(events) == {"verify": ("alice", 30), "execute": ("alice", 50)}
    check_fees(net)


@pytest.mark.parametrize("payee", ["0x" + "ab" * 20, "Not An Account", "module:market", "a"])
def test_a_payee_this_park_cannot_credit_is_refunded(payee: str) -> None:
    net = _net()
    packet = _send(net)
    net.recv(packet, net.verify(packet))
    cert, ack = net.confirm(packet, FeePayees(payee, "exe", ""))
    events = _events(net, packet, cert, ack)
    assert _paid(events) == {"execute": ("exe", 50)}
    assert _refunded(events) == {"verify": ("alice", 30), "confirm": ("alice", 20)}
    check_fees(net)


def test_payees_other_than_the_certified_ones_are_refused_and_nothing_changes() -> None:
    net = _net()
    packet = _send(net)
    net.recv(packet, net.verify(packet))
    cert, ack = net.confirm(packet, FeePayees("ver", "exe", "con"))
    forged = dict(cert)
    out, pc, ac, _ = decode_outcome_record(bytes.fromhex(cert["value"]))
    forged["value"] = encode_outcome(out, pc, ac, FeePayees("alice", "alice", "alice")).hex()
    park = net.parks["dpos-park"]
    root = park.state.root
    with pytest.raises(ProtocolError):
        _events(net, packet, forged, ack)
    assert park.state.root == root
    _events(net, packet, cert, ack)  # the certified record still settles
    with pytest.raises(ReplayError):  # and pays once
        _events(net, packet, cert, ack)
    assert park.balance("ver", FEE) == 30
    check_fees(net)


def test_settling_without_the_payees_the_relay_certified_is_refused() -> None:
    """A relayer cannot drop the payees: the three-field record is another value than the one certified."""
    net = _net()
    packet = _send(net)
    net.recv(packet, net.verify(packet))
    cert, ack = net.confirm(packet, FeePayees("ver", "", ""))
    out, pc, ac, _ = decode_outcome_record(bytes.fromhex(cert["value"]))
    stripped = {**cert, "value": encode_outcome(out, pc, ac).hex()}
    with pytest.raises(InvalidProofError):
        _events(net, packet, stripped, ack)
    check_fees(net)


@pytest.mark.parametrize("fees", [
    [], "100", {"verify": -1}, {"verify": True}, {"tip": 1}, {"execute": 2**64}, {"confirm": 1.5},
    {"verify": "1"}, {"verify": None},
])
def test_malformed_fees_are_refused_and_nothing_is_written(fees: Any) -> None:
    net = _net()
    root = net.parks["dpos-park"].state.root
    with pytest.raises(CodecError):
        _send(net, fees)
    assert net.parks["dpos-park"].state.root == root


def test_fees_the_sender_cannot_pay_are_refused_and_nothing_is_written() -> None:
    net = _net()
    park = net.parks["dpos-park"]
    root = park.state.root
    with pytest.raises(InsufficientFundsError):
        _send(net, {"verify": START + 1})
    # the fee denom sent as energy too: amount and fees come from one balance
    with pytest.raises(InsufficientFundsError):
        _send(net, {"verify": START - 10}, denom=FEE, amount_wh=11)
    assert park.state.root == root
    _send(net, {"verify": START - 10}, denom=FEE, amount_wh=10)  # exactly enough
    assert park.balance("alice", FEE) == 0
    check_fees(net)


def test_a_bridge_without_a_fee_denom_refuses_fees() -> None:
    net = _net()
    net.parks["poc-park"].state.add_balance("carol", "kWh", 5_000)
    cfg = net.parks["poc-park"].state.get_json(b"bridge/config")
    net.parks["poc-park"].state.set_json(b"bridge/config", {k: v for k, v in cfg.items() if k != "fee_denom"})
    with pytest.raises(CodecError, match="no relay fees"):
        net.send("poc-park", "carol", dst_chain="dpos-park", lane="lane-0", kind="energy", receiver="alice",
                 denom="kWh", amount_wh=10, fees={"verify": 1})


@pytest.mark.parametrize("relayer", ["Upper", "-lead", "a" * 65, 7, ["x"]])
def test_a_bad_relayer_is_refused_and_nothing_is_written(relayer: Any) -> None:
    net = _net()
    packet = _send(net)
    cert = net.verify(packet)
    poc = net.parks["poc-park"]
    root = poc.state.root
    with pytest.raises(CodecError):
        poc.tx("relayer", "bridge.recv", {"packet": encode_packet(packet).hex(), "certificate": cert,
                                          "relayer": relayer})
    assert poc.state.root == root


def test_the_first_execution_names_the_relayer_and_a_second_cannot_rename_it() -> None:
    net = _net()
    packet = _send(net)
    cert = net.verify(packet)
    poc = net.parks["poc-park"]
    poc.tx("relayer", "bridge.recv", {"packet": encode_packet(packet).hex(), "certificate": cert,
                                      "relayer": "first"})
    with pytest.raises(ReplayError):
        poc.tx("bob", "bridge.recv", {"packet": encode_packet(packet).hex(), "certificate": cert,
                                      "relayer": "second"})
    cert_out, ack = net.confirm(packet, FeePayees("", "exe", ""))
    named = decode_ack(bytes.fromhex(ack))
    assert named.relayer == "first"
    assert poc.state.get(receipt_path(packet.src_chain, packet.lane, packet.sequence)) == ack_commitment(named)
    _events(net, packet, cert_out, ack)
    check_fees(net)


def test_a_batch_execution_names_its_relayer_in_every_ack() -> None:
    net = _net()
    packets = [_send(net) for _ in range(3)]
    for p in packets:
        net.relay.verify_packet(net.parks["dpos-park"], p)
    cert = batch_cert(net, [vkey(p) for p in packets])
    events = net.parks["poc-park"].tx("relayer", "bridge.recv_batch", {
        "packets": [encode_packet(p).hex() for p in packets], "certificates": cert, "relayer": "batcher"})
    acks = [decode_ack(bytes.fromhex(e["ack"])) for e in events if e["type"] == "write_ack"]
    assert [a.relayer for a in acks] == ["batcher"] * 3
    check_fees(net)
