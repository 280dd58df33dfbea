"""The Fabric park beside a Python park (dpos-park) and a simulated relay chain, on one clock. TEST ONLY.

The relay's half of phases 2 and 4 for the Fabric park reads the fake ledger's committed state directly (the
stand-in, in unit tests, for the attestations :mod:`chains.fabric.attestation` verifies); its certificates are
real (:class:`tests.unit.bridge.sim.RelaySim`). The Python park and its relay steps are the bridge tests' own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chains.common.fees import FEE_ESCROW
from chains.common.genesis import bridge_section
from chains.common.state import KVState
from chains.fabric.chaincode.contract import STATUS_OK, BridgeContract, Response
from chains.fabric.chaincode.ledger import StubState, fabric_key
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from protocol.codec import (
    ZERO_COMMITMENT,
    ack_commitment,
    decode_ack,
    decode_energy,
    decode_packet,
    encode_outcome,
    encode_packet,
    packet_commitment,
)
from protocol.paths import ack_path, commitment_path, outcome_path, receipt_path
from protocol.types import NO_PAYEES, FeePayees, Packet, PacketKind, PacketOutcome
from tests.unit.bridge.sim import MINUTE, Network, ParkSim
from tests.unit.fabric_chaincode.fake import FabricPark, FakeStub, identity

FABRIC = "fabric-park"
DPOS = "dpos-park"
LANE = "lane-0"
V_ON_FABRIC = f"{LANE}/{DPOS}/kWh"
"""dpos-park's kWh as a voucher on the Fabric park."""
V_ON_DPOS = f"{LANE}/{FABRIC}/kWh"
"""The Fabric park's kWh as a voucher on dpos-park."""

ALICE = identity(SALES_MSP, "alice")
BOB = identity(OPERATOR_MSP, "bob")
CAROL = identity(SALES_MSP, "carol")  # not registered at genesis
OPERATOR = identity(OPERATOR_MSP, "operator")
RELAYER = identity(OPERATOR_MSP, "relayer")
FABRIC_ALICE_WH = 100_000
DPOS_ALICE_WH = 100_000


_NAMES = {ALICE: "alice", BOB: "bob", CAROL: "carol", OPERATOR: "operator", RELAYER: "relayer"}


def account(who: tuple[str, bytes]) -> str:
    """The account id of a test identity."""
    return f"{who[0]}:{_NAMES[who]}"


def genesis(net: Network, **over: Any) -> dict[str, Any]:
    g: dict[str, Any] = {
        "chain_id": FABRIC,
        "accounts": ["SalesMSP:alice", "OperatorMSP:bob", "OperatorMSP:operator", "OperatorMSP:relayer"],
        "balances": [{"account": "SalesMSP:alice", "denom": "kWh", "amount": FABRIC_ALICE_WH}],
        "bridge": bridge_section(net.relay.chain_id, net.relay.vset, [{"lane": LANE, "counterparty": DPOS}],
                                 rights_operator="OperatorMSP:operator", transformers={"t1": 100}),
    }
    g.update(over)
    return g


def energy(receiver: str, amount: int, *, dst: str, denom: str = "kWh", **kw: Any) -> dict[str, Any]:
    return {"dst_chain": dst, "lane": LANE, "kind": "energy", "receiver": receiver, "denom": denom,
            "amount_wh": amount, **kw}


@dataclass
class Harness:
    """dpos-park (a Python park), the Fabric park and the relay, on ``net.now_ms``."""

    net: Network
    dpos: ParkSim
    fabric: FabricPark
    genesis_json: str = ""
    dpos_issued: dict[str, int] = field(default_factory=lambda: {"kWh": DPOS_ALICE_WH})

    # -- Fabric calls ------------------------------------------------------------------------------

    def submit(self, who: tuple[str, bytes], fn: str, *args: Any) -> Response:
        return self.fabric.submit(who, fn, *(_arg(a) for a in args), now_ms=self.net.now_ms)

    def ok(self, who: tuple[str, bytes], fn: str, *args: Any) -> list[dict[str, Any]]:
        r = self.submit(who, fn, *args)
        assert r.status == STATUS_OK, r.message
        events: list[dict[str, Any]] = json.loads(r.payload)
        return events

    def refused(self, who: tuple[str, bytes], fn: str, *args: Any) -> str:
        """Submit a call that must be refused; check nothing changed; return the error code."""
        before, events = self.fabric.ledger.snapshot(), len(self.fabric.ledger.events)
        r = self.submit(who, fn, *args)
        assert r.status != STATUS_OK, f"{fn} was accepted: {r.payload[:200]!r}"
        assert self.fabric.ledger.snapshot() == before and len(self.fabric.ledger.events) == events
        assert r.code is not None
        return r.code

    def query(self, fn: str, *args: str, who: tuple[str, bytes] = RELAYER) -> Any:
        r = self.fabric.query(who, fn, *args, now_ms=self.net.now_ms)
        assert r.status == STATUS_OK, r.message
        return json.loads(r.payload)

    def view(self) -> StubState:
        """A read-only state view of the committed Fabric ledger."""
        return StubState(FakeStub(self.fabric.ledger, RELAYER, self.fabric.ledger.channel))

    def raw(self, path: bytes) -> bytes | None:
        return self.fabric.ledger.state.get(fabric_key(path))

    def balance(self, acct: str, denom: str = "kWh") -> int:
        return int(self.query("balance", acct, denom)["amount_wh"])

    # -- phases with the Fabric park ---------------------------------------------------------------

    def send_from_fabric(self, who: tuple[str, bytes], **args: Any) -> Packet:
        args.setdefault("timeout_timestamp_ms", self.net.now_ms + 10 * MINUTE)
        (event,) = self.ok(who, "send", args)
        assert event["type"] == "send_packet"
        return decode_packet(bytes.fromhex(event["packet"]))

    def verify_from_fabric(self, packet: Packet) -> dict[str, Any]:
        """Phase 2 for a Fabric packet: the relay sees the committed commitment; returns the certificate JSON."""
        assert self.raw(commitment_path(packet.dst_chain, packet.lane, packet.sequence)) == packet_commitment(packet)
        self.net.relay.verify_unchecked(packet)
        return self.net.verified_cert(packet)

    def recv_args(self, packet: Packet, cert: dict[str, Any], relayer: str | None = None) -> dict[str, Any]:
        args = {"packet": encode_packet(packet).hex(), "certificate": cert}
        return args if relayer is None else {**args, "relayer": relayer}

    def recv_on_fabric(self, packet: Packet, cert: dict[str, Any], relayer: str | None = None) -> dict[str, Any]:
        (event,) = self.ok(RELAYER, "recv", self.recv_args(packet, cert, relayer))
        assert event["type"] == "write_ack"
        return event

    def certify_outcome(self, packet: Packet, outcome: PacketOutcome, ack_commit: bytes,
                        payees: FeePayees = NO_PAYEES) -> dict[str, Any]:
        """Phase 4, relay half, as the relay records it: the outcome record with the fee ``payees`` it names
        (protocol SPEC §2.5, §6.10), certified; the certificate JSON."""
        self.net.relay.tree = self.net.relay.tree.set(
            outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
            encode_outcome(outcome, packet_commitment(packet), ack_commit, payees))
        return self.net.outcome_cert(packet)

    def confirm_from_dpos(self, packet: Packet, payees: FeePayees = NO_PAYEES) -> tuple[dict[str, Any], str]:
        """Phase 4, relay half, for a Fabric packet dpos-park executed: (outcome certificate naming ``payees``, ack
        hex)."""
        raw_ack = self.dpos.state.get(ack_path(packet.src_chain, packet.lane, packet.sequence))
        assert raw_ack is not None, "dpos-park has not executed the packet"
        ack = bytes.fromhex(raw_ack.decode())
        return self.certify_outcome(packet, PacketOutcome.ACKED, ack_commitment(decode_ack(ack)), payees), ack.hex()

    def confirm_from_fabric(self, packet: Packet) -> tuple[dict[str, Any], str]:
        """Phase 4, relay half, for a packet the Fabric park executed: (outcome certificate, ack hex)."""
        receipt = self.raw(receipt_path(packet.src_chain, packet.lane, packet.sequence))
        raw_ack = self.raw(ack_path(packet.src_chain, packet.lane, packet.sequence))
        assert receipt is not None and receipt != TIMEOUT_RECEIPT and raw_ack is not None
        ack = bytes.fromhex(raw_ack.decode())
        assert ack_commitment(decode_ack(ack)) == receipt
        self.net.relay.tree = self.net.relay.tree.set(
            outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
            encode_outcome(PacketOutcome.ACKED, packet_commitment(packet), receipt))
        return self.net.outcome_cert(packet), ack.hex()

    def confirm_timeout_from_fabric(self, packet: Packet) -> dict[str, Any]:
        """Phase 4, relay half, for a packet timed out on the Fabric park: only the sentinel proves it."""
        assert self.raw(receipt_path(packet.src_chain, packet.lane, packet.sequence)) == TIMEOUT_RECEIPT
        self.net.relay.tree = self.net.relay.tree.set(
            outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
            encode_outcome(PacketOutcome.TIMED_OUT, packet_commitment(packet), ZERO_COMMITMENT))
        return self.net.outcome_cert(packet)

    def settle_args(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
        if ack_hex is not None:
            args["ack"] = ack_hex
        return args

    def settle_on_fabric(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None) -> dict[str, Any]:
        event, *fee_events = self.ok(RELAYER, "settle", self.settle_args(packet, cert, ack_hex))
        assert event["type"] == "settle_packet"
        assert all(e["type"] in ("fee_paid", "fee_refunded") for e in fee_events)
        return event

    def fabric_to_dpos(self, who: tuple[str, bytes], **args: Any) -> tuple[Packet, dict[str, Any], dict[str, Any]]:
        """All four phases from the Fabric park to dpos-park, checking conservation after each."""
        packet = self.send_from_fabric(who, **args)
        self.check()
        ack = self.net.recv(packet, self.verify_from_fabric(packet))
        self.check()
        cert, ack_hex = self.net.confirm(packet)
        settle = self.settle_on_fabric(packet, cert, ack_hex)
        self.check()
        return packet, ack, settle

    def dpos_to_fabric(self, sender: str, **args: Any) -> tuple[Packet, dict[str, Any], dict[str, Any]]:
        """All four phases from dpos-park to the Fabric park, checking conservation after each."""
        packet = self.net.send(DPOS, sender, **args)
        self.check()
        ack = self.recv_on_fabric(packet, self.net.verify(packet))
        self.check()
        cert, ack_hex = self.confirm_from_fabric(packet)
        settle = self.net.settle(packet, cert, ack_hex)
        self.check()
        return packet, ack, settle

    # -- invariants --------------------------------------------------------------------------------

    def check(self) -> None:
        """No energy created or lost on either park (tests.unit.bridge.sim.check_conservation, for two kinds
        of park): per park, native issued == balances + escrow and voucher supply == balances (+ escrow on a
        further hop); per lane share, escrow == the counterparty's voucher supply + what is in flight."""
        views: dict[str, KVState] = {DPOS: self.dpos.state, FABRIC: self.view()}
        issued = {DPOS: self.dpos_issued, FABRIC: self.query("supply")["issued"]}
        check_conservation(views, issued)
        check_fee_escrow(views[FABRIC])


def _arg(a: Any) -> str | bytes:
    return a if isinstance(a, (str, bytes)) else json.dumps(a)


def _balances(state: KVState, denom: str) -> int:
    total = 0
    for key, value in state.prefix_items(b"balances/"):
        _, _acct, d = key.decode().split("/", 2)
        if d == denom:
            total += int(value)
    return total


def _pending(views: Mapping[str, KVState]) -> list[tuple[Packet, bool]]:
    out = []
    for state in views.values():
        for _key, value in state.prefix_items(b"packets/"):
            packet = decode_packet(bytes.fromhex(value.decode()))
            raw_ack = views[packet.dst_chain].get(ack_path(packet.src_chain, packet.lane, packet.sequence))
            out.append((packet, raw_ack is not None and decode_ack(bytes.fromhex(raw_ack.decode())).success))
    return out


def check_conservation(views: Mapping[str, KVState], issued: Mapping[str, Mapping[str, int]]) -> None:
    pending = _pending(views)
    for cid, state in views.items():
        escrow = {k.decode()[len("escrow/"):]: int(v) for k, v in state.prefix_items(b"escrow/")}
        for denom, total in issued[cid].items():
            assert total == _balances(state, denom) + escrow.get(denom, 0), (cid, denom)
        for key, value in state.prefix_items(b"supply/"):
            voucher = key.decode()[len("supply/"):]
            assert int(value) == _balances(state, voucher) + escrow.get(voucher, 0), (cid, voucher)
        for key, value in state.prefix_items(b"bridge/escrow/"):
            cp, lane, denom = key.decode()[len("bridge/escrow/"):].split("/", 2)
            voucher = f"{lane}/{cid}/{denom}"
            in_flight = 0
            for p, applied in pending:
                if p.kind is not PacketKind.ENERGY or applied or p.lane != lane:
                    continue
                e = decode_energy(p.payload)
                if (p.src_chain, p.dst_chain, e.denom) in ((cid, cp, denom), (cp, cid, voucher)):
                    in_flight += e.amount_wh
            assert int(value) == views[cp].get_int(f"supply/{voucher}".encode()) + in_flight, (cid, key, in_flight)


def check_fee_escrow(state: KVState) -> None:
    """Relay fees (protocol SPEC §6.10): the fee escrow holds, in each denom, exactly the fees of the fee records
    not settled yet, and nothing else; every record is well formed (its fees sum to what it escrowed)."""
    owed: dict[str, int] = {}
    for key, value in state.prefix_items(b"fees/"):
        rec = json.loads(value)
        assert set(rec) == {"verify", "execute", "confirm", "denom", "payer"}, (key, rec)
        total = int(rec["verify"]) + int(rec["execute"]) + int(rec["confirm"])
        assert total > 0, (key, rec)
        owed[rec["denom"]] = owed.get(rec["denom"], 0) + total
    prefix = f"balances/{FEE_ESCROW}/"
    held = {key.decode()[len(prefix):]: int(value) for key, value in state.prefix_items(prefix.encode()) if int(value)}
    assert held == owed, (held, owed)


def make_harness(*, contract: BridgeContract | None = None, init: bool = True) -> Harness:
    net = Network()
    dpos = net.add_park(DPOS, [{"lane": LANE, "counterparty": FABRIC}], transformers={"t1": 100})
    dpos.state.add_balance("alice", "kWh", DPOS_ALICE_WH)
    h = Harness(net, dpos, FabricPark(contract=contract or BridgeContract()))
    h.genesis_json = json.dumps(genesis(net))
    if init:
        h.ok(OPERATOR, "init_bridge", h.genesis_json)
    return h

