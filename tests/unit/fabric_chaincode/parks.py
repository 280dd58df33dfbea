"""Several Fabric parks (the real contract, each on its own fake ledger) and a simulated relay chain, on one clock:
the issue 12 assets (charging rights with multi-hop traces, the transformer registry, reputation) between parks
that all run the bridge chaincode. TEST ONLY.

The relay's phase 2 and 4 read a park's committed fake ledger directly (the stand-in for the attestations the relay's
Fabric light client verifies); its certificates are real (:class:`tests.unit.bridge.sim.RelaySim`). No Python park
takes part, so these tests pin the Fabric chaincode's rules alone.

:func:`check_rights` is the invariant every scenario ends with (and checks between phases): each right exists exactly
once — one live record or one packet not yet applied — every escrow along its trace points at a later hop that holds
it (or the packet carrying it), every live right is booked on its park, and no transformer is ever loaded past its
capacity.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chains.common import wire
from chains.common.bridge import ESCROW_OWNER
from chains.common.genesis import bridge_section
from chains.common.state import KVState
from chains.fabric.chaincode.contract import STATUS_OK, BridgeContract, Response
from chains.fabric.chaincode.ledger import StubState, fabric_key
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from protocol.codec import (
    ZERO_COMMITMENT,
    ack_commitment,
    decode_ack,
    decode_charging_right,
    decode_packet,
    encode_outcome,
    encode_packet,
    packet_commitment,
)
from protocol.paths import ack_path, commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import NO_PAYEES, FeePayees, Packet, PacketKind, PacketOutcome
from tests.unit.bridge.sim import MINUTE, T0, RelaySim
from tests.unit.fabric_chaincode.fake import FabricPark, FakeStub, identity
from tests.unit.fabric_chaincode.harness import check_fee_escrow

A, B, C = "park-a", "park-b", "park-c"
LANE = "lane-0"
"""The lane between every two parks."""
LANE2 = "lane-1"
"""A second lane between park-a and park-b."""

ALICE = identity(SALES_MSP, "alice")
BOB = identity(OPERATOR_MSP, "bob")
OPERATOR = identity(OPERATOR_MSP, "operator")
RELAYER = identity(OPERATOR_MSP, "relayer")
SALES_BOSS = identity(SALES_MSP, "operator")
"""A sales-company identity with the operator's common name: still not the park operator."""
ALICE_ID, BOB_ID, OPERATOR_ID = "SalesMSP:alice", "OperatorMSP:bob", "OperatorMSP:operator"

TRANSFORMERS = {"t1": 100, "t2": 50}
STATIONS = {"s1": "t1", "s2": "t1", "s3": "t2", "s-orphan": "t9"}
"""``s-orphan`` is behind a transformer nobody registered."""


def genesis(chain_id: str, relay: RelaySim, others: list[str], **market: int) -> dict[str, Any]:
    lanes = [{"lane": LANE, "counterparty": o} for o in others]
    if chain_id in (A, B):
        lanes.append({"lane": LANE2, "counterparty": B if chain_id == A else A})
    section = bridge_section(relay.chain_id, relay.vset, lanes, rights_operator=OPERATOR_ID,
                             transformers=TRANSFORMERS)
    section["stations"] = dict(STATIONS)
    g: dict[str, Any] = {"chain_id": chain_id, "accounts": [ALICE_ID, BOB_ID, OPERATOR_ID, "OperatorMSP:relayer"],
                         "balances": [{"account": ALICE_ID, "denom": "kWh", "amount": 1_000_000}], "bridge": section}
    if market:
        g["market"] = market
    return g


def _arg(a: Any) -> str | bytes:
    return a if isinstance(a, (str, bytes)) else json.dumps(a)


@dataclass
class Parks:
    """Fabric parks, a relay chain, one clock."""

    relay: RelaySim = field(default_factory=RelaySim)
    now_ms: int = T0
    parks: dict[str, FabricPark] = field(default_factory=dict)

    def add(self, chain_id: str) -> FabricPark:
        park = FabricPark(contract=BridgeContract())
        self.parks[chain_id] = park
        return park

    def init(self, **market: int) -> None:
        for cid, park in self.parks.items():
            g = genesis(cid, self.relay, [o for o in self.parks if o != cid], **market)
            r = park.submit(OPERATOR, "init_bridge", json.dumps(g).encode(), now_ms=self.now_ms)
            assert r.status == STATUS_OK, r.message

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    # -- calls -----------------------------------------------------------------------------------------------

    def submit(self, chain: str, who: tuple[str, bytes], fn: str, *args: Any) -> Response:
        return self.parks[chain].submit(who, fn, *(_arg(a) for a in args), now_ms=self.now_ms)

    def ok(self, chain: str, who: tuple[str, bytes], fn: str, *args: Any) -> list[dict[str, Any]]:
        r = self.submit(chain, who, fn, *args)
        assert r.status == STATUS_OK, r.message
        events: list[dict[str, Any]] = json.loads(r.payload)
        return events

    def refused(self, chain: str, who: tuple[str, bytes], fn: str, *args: Any) -> str:
        """Submit a call that must be refused; check nothing changed; its error code."""
        ledger = self.parks[chain].ledger
        before, events = ledger.snapshot(), len(ledger.events)
        r = self.submit(chain, who, fn, *args)
        assert r.status != STATUS_OK, f"{fn} was accepted: {r.payload[:200]!r}"
        assert ledger.snapshot() == before and len(ledger.events) == events
        assert r.code is not None
        return r.code

    def query(self, chain: str, fn: str, *args: str) -> Any:
        r = self.parks[chain].query(RELAYER, fn, *args, now_ms=self.now_ms)
        assert r.status == STATUS_OK, r.message
        return json.loads(r.payload)

    def view(self, chain: str) -> StubState:
        park = self.parks[chain]
        return StubState(FakeStub(park.ledger, RELAYER, park.ledger.channel))

    def raw(self, chain: str, path: bytes) -> bytes | None:
        return self.parks[chain].ledger.state.get(fabric_key(path))

    def right(self, chain: str, right_id: str) -> Any:
        return self.query(chain, "right", right_id)["right"]

    # -- registry and rights -----------------------------------------------------------------------------------

    def issue(self, chain: str, right_id: str, *, owner: str = ALICE_ID, station: str = "s1", transformer: str = "t1",
              power_kw: int = 40, start_in: int = 60 * MINUTE, length: int = 60 * MINUTE) -> dict[str, Any]:
        args = {"right_id": right_id, "station": station, "transformer": transformer, "power_kw": power_kw,
                "slot_start_ms": self.now_ms + start_in, "slot_end_ms": self.now_ms + start_in + length,
                "owner": owner}
        self.ok(chain, OPERATOR, "issue_right", args)
        return args

    # -- the four phases ---------------------------------------------------------------------------------------

    def send(self, src: str, who: tuple[str, bytes], **args: Any) -> Packet:
        args.setdefault("lane", LANE)
        args.setdefault("timeout_timestamp_ms", self.now_ms + 10 * MINUTE)
        (event,) = self.ok(src, who, "send", args)
        assert event["type"] == "send_packet"
        return decode_packet(bytes.fromhex(event["packet"]))

    def send_right(self, src: str, dst: str, right_id: str, receiver: str = BOB_ID,
                   who: tuple[str, bytes] = ALICE, **kw: Any) -> Packet:
        return self.send(src, who, dst_chain=dst, kind="charging_right", right_id=right_id, receiver=receiver, **kw)

    def verify(self, packet: Packet) -> dict[str, Any]:
        """Phase 2: the relay sees the committed commitment on the source; the certificate JSON."""
        assert self.raw(packet.src_chain, commitment_path(packet.dst_chain, packet.lane, packet.sequence)
                        ) == packet_commitment(packet)
        return self.certify_forged(packet)

    def certify_forged(self, packet: Packet) -> dict[str, Any]:
        """Phase 2 for a packet no bridge committed (a faulty or hostile source): the relay certifies it anyway."""
        self.relay.verify_unchecked(packet)
        key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        return wire.certificate_to_json(self.relay.certificate(key, self.now_ms))

    def recv_args(self, packet: Packet, cert: dict[str, Any], relayer: str | None = None) -> dict[str, Any]:
        args = {"packet": encode_packet(packet).hex(), "certificate": cert}
        return args if relayer is None else {**args, "relayer": relayer}

    def recv(self, packet: Packet, cert: dict[str, Any], relayer: str | None = None) -> dict[str, Any]:
        (event,) = self.ok(packet.dst_chain, RELAYER, "recv", self.recv_args(packet, cert, relayer))
        assert event["type"] == "write_ack"
        return event

    def confirm(self, packet: Packet, payees: FeePayees = NO_PAYEES) -> tuple[dict[str, Any], str]:
        """Phase 4, relay half, for an executed packet: (outcome certificate naming the fee ``payees``, ack hex)."""
        dst = packet.dst_chain
        receipt = self.raw(dst, receipt_path(packet.src_chain, packet.lane, packet.sequence))
        raw_ack = self.raw(dst, ack_path(packet.src_chain, packet.lane, packet.sequence))
        assert receipt is not None and receipt != TIMEOUT_RECEIPT and raw_ack is not None
        ack = bytes.fromhex(raw_ack.decode())
        assert ack_commitment(decode_ack(ack)) == receipt
        return self._outcome(packet, PacketOutcome.ACKED, receipt, payees), ack.hex()

    def confirm_timeout(self, packet: Packet, cert: dict[str, Any] | None = None,
                        payees: FeePayees = NO_PAYEES) -> dict[str, Any]:
        """Phase 4, relay half, for a packet timed out on its target: the sentinel is written (with the packet's
        ``relay/verified`` certificate ``cert``, made here if None), then certified."""
        cert = self.verify(packet) if cert is None else cert
        self.ok(packet.dst_chain, RELAYER, "timeout_receipt", self.recv_args(packet, cert))
        assert self.raw(packet.dst_chain, receipt_path(packet.src_chain, packet.lane, packet.sequence)
                        ) == TIMEOUT_RECEIPT
        return self._outcome(packet, PacketOutcome.TIMED_OUT, ZERO_COMMITMENT, payees)

    def _outcome(self, packet: Packet, outcome: PacketOutcome, ack_commit: bytes,
                 payees: FeePayees = NO_PAYEES) -> dict[str, Any]:
        key = outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        self.relay.tree = self.relay.tree.set(key, encode_outcome(outcome, packet_commitment(packet), ack_commit,
                                                                  payees))
        return wire.certificate_to_json(self.relay.certificate(key, self.now_ms))

    def settle(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
        if ack_hex is not None:
            args["ack"] = ack_hex
        event, *fee_events = self.ok(packet.src_chain, RELAYER, "settle", args)
        assert event["type"] == "settle_packet"
        assert all(e["type"] in ("fee_paid", "fee_refunded") for e in fee_events)
        return event

    def deliver(self, packet: Packet) -> dict[str, Any]:
        """Phases 2 to 4 of a committed packet, checking the rights after each; the ``write_ack`` event."""
        ack = self.recv(packet, self.verify(packet))
        self.check()
        cert, ack_hex = self.confirm(packet)
        self.settle(packet, cert, ack_hex)
        self.check()
        return ack

    def move(self, src: str, dst: str, right_id: str, receiver: str = BOB_ID, who: tuple[str, bytes] = ALICE,
             **kw: Any) -> tuple[Packet, dict[str, Any]]:
        """A right from ``src`` to ``dst``, all four phases: (packet, write_ack event)."""
        packet = self.send_right(src, dst, right_id, receiver, who, **kw)
        self.check()
        return packet, self.deliver(packet)

    # -- invariants --------------------------------------------------------------------------------------------

    def check(self) -> None:
        check_rights({cid: self.view(cid) for cid in self.parks}, self.now_ms)
        for cid in self.parks:
            check_fee_escrow(self.view(cid))


def _pending(views: Mapping[str, KVState]) -> list[tuple[Packet, bool]]:
    """Packets committed and not settled, each with whether its target applied it with a success ack."""
    out = []
    for state in views.values():
        for _, value in state.prefix_items(b"packets/"):
            packet = decode_packet(bytes.fromhex(value.decode()))
            dst = views.get(packet.dst_chain)  # a park outside the views: counted as in flight
            raw_ack = None if dst is None else dst.get(ack_path(packet.src_chain, packet.lane, packet.sequence))
            out.append((packet, raw_ack is not None and decode_ack(bytes.fromhex(raw_ack.decode())).success))
    return out


def base_of(right_id: str) -> str:
    return right_id.rsplit("/", 1)[-1]


def check_rights(views: Mapping[str, KVState], now_ms: int) -> None:
    """Each right (``(home park, base id)``) has exactly one live copy: a record owned by an account, or a packet not
    yet applied with a success ack (the escrow or burn it left behind waits for it). Every escrowed record points
    at a hop that holds the right, or at the packet carrying it. Every live right is booked on its park, and no
    transformer's booked load exceeds its capacity at any time."""
    pending = _pending(views)
    copies: dict[tuple[str, str], list[str]] = {}
    for cid, state in views.items():
        booked: dict[str, dict[str, dict[str, Any]]] = {}
        for key, value in state.prefix_items(b"bookings/"):
            booked[key.decode()[len("bookings/"):]] = {b["right_id"]: b for b in json.loads(value)}
        for key, value in state.prefix_items(b"rights/"):
            rid, rec = key.decode()[len("rights/"):], json.loads(value)
            ident = (rec["home_park"], base_of(rid))
            copies.setdefault(ident, [])
            if rec["owner"] != ESCROW_OWNER:
                copies[ident].append(f"{cid}:{rid}")
                if rec["slot_end_ms"] > now_ms:
                    assert rid in booked.get(rec["transformer"], {}), (cid, rid, "live and not booked")
                continue
            to = rec["escrowed_to"]
            if to["chain"] not in views:
                continue
            held = views[to["chain"]]
            next_id = f"{to['lane']}/{cid}/{rid}"
            in_flight = any(p.src_chain == cid and p.dst_chain == to["chain"] and p.lane == to["lane"]
                            and p.sequence == to["sequence"] for p, _ in pending)
            assert (in_flight or held.get(f"rights/{next_id}".encode()) is not None
                    or held.get(f"rights_burned/{next_id}".encode()) is not None), (cid, rid, "escrowed to nothing")
        capacity = {k.decode()[len("transformers/"):]: json.loads(v)["capacity_kw"]
                    for k, v in state.prefix_items(b"transformers/")}
        for name, entries in booked.items():
            for b in entries.values():
                # the load peaks at some slot's start: the power of the slots running then
                load = sum(o["power_kw"] for o in entries.values()
                           if o["slot_start_ms"] <= b["slot_start_ms"] < o["slot_end_ms"])
                assert load <= capacity.get(name, 0), (cid, name, "overbooked", load)
    for p, applied in pending:
        if p.kind is PacketKind.CHARGING_RIGHT and not applied:
            c = decode_charging_right(p.payload)
            copies.setdefault((c.home_park, base_of(c.right_id)), []).append(f"packet {p.src_chain}->{p.dst_chain}")
    for ident, where in copies.items():
        assert len(where) == 1, (ident, where)


def make_parks(*chains: str, **market: int) -> Parks:
    net = Parks()
    for cid in chains or (A, B, C):
        net.add(cid)
    net.init(**market)
    return net
