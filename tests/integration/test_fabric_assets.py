"""Charging rights, the transformer registry and reputation on a real Fabric 2.5 park (issue 12): Fabric's own orderer
and peers, the bridge chaincode served by each organisation, driven through the relayer's Fabric adapter
(adapters/fabric) as the park's users. Its counterparties are two Fabric parks of the unit tests (the same contract on
in-memory ledgers, :mod:`tests.unit.fabric_chaincode.parks`) and the relay simulator, whose certificates are real.

Shown, on one network: the registry is written by the park operator's MSP identity only (a sales-company identity and
another operator-MSP user are refused with ``auth.denied``); a right goes abroad and on to a third park and unwinds
hop by hop to its home, bookings following it; a refusal abroad and a refusal at home are error acks and the right is
refunded with its booking; phase 1 refuses a timeout after the slot start; two rights racing into one slot of a
transformer either MVCC-conflict (the loser, endorsed again, is refused for capacity) or are kept apart by the
adapter's pipeline — never both booked; forged right payloads and a voucher returned along a wrong trace are error
acks; reputation is read from the park's own standing records (a score in the sender's arguments is refused, a
packet claiming another score does not verify), an older attestation never replaces a newer one, and ``certify``
admits a participant by its imported score. After every scenario each right exists exactly once across the three
parks (:func:`tests.unit.fabric_chaincode.parks.check_rights`, the real park read with the chaincode's ``scan``).
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import asyncio
import json
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import adapters.fabric as af
from adapters.fabric import FabricSource, FabricTarget, MvccConflictError, assets
from chains.common.genesis import bridge_section
from chains.common.state import ChainState
from chains.fabric.chaincode.assets import STANDING_MODEL
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
from chains.fabric.network.config import ChaincodeSpec, FabricNetworkConfig
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.tools import FabricTools
from protocol.codec import encode_charging_right, encode_packet, encode_reputation, packet_commitment
from protocol.errors import AuthorizationError, CodecError, InvalidProofError, ProtocolError, TimeoutExpiredError
from protocol.types import ChainId, ChargingRightPayload, Packet, PacketKind, PacketOutcome, ReputationPayload
from tests.integration.harness import REPO, free_port_block
from tests.unit.bridge.sim import MINUTE
from tests.unit.fabric_chaincode.parks import (
    ALICE,
    ALICE_ID,
    BOB_ID,
    LANE,
    OPERATOR,
    STATIONS,
    TRANSFORMERS,
    B,
    C,
    Parks,
    check_rights,
    genesis,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FABRIC = "fabric-park"
CC = ChaincodeSpec(command=(sys.executable, "-m", "chains.fabric.chaincode.server"), cwd=REPO,
                   env={"PYTHONPATH": str(REPO)})
USERS = {"operator": OPERATOR_MSP, "alice": SALES_MSP, "bob": OPERATOR_MSP, "relayer": OPERATOR_MSP}
OP, AL, BO, RL = (f"{msp}:{u}@{msp}" for u, msp in USERS.items())
"""The accounts of the network's users (``<MSP id>:<user>@<MSP id>``)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class World:
    """The real Fabric park, one adapter target per user, a source, and the two parks beside it on the relay
    simulator's clock (kept at the wall clock)."""

    def __init__(self, net: FabricNetwork, parks: Parks) -> None:
        self.net, self.parks = net, parks
        self.profile = net.cfg.layout.connection_profile
        self.users: dict[str, FabricTarget] = {}
        self.source: FabricSource | None = None
        self.loop = asyncio.new_event_loop()
        """One loop for the module: the gateways' connections live on it."""

    @property
    def src(self) -> FabricSource:
        assert self.source is not None
        return self.source

    def tick(self) -> None:
        self.parks.now_ms = now_ms()

    # -- the relay's steps between the real park and the simulated ones ----------------------------------

    async def out(self, sent: Packet) -> tuple[dict[str, Any], dict[str, Any]]:
        """A packet the real park committed, relayed to its (simulated) target and settled back: (write_ack event,
        settle_packet event)."""
        self.tick()
        key = f"commitments/{sent.dst_chain}/{sent.lane}/{sent.sequence}"
        assert (await self.src.query_many([key]))[key] == packet_commitment(sent).hex()  # as the relay sees it
        ack = self.parks.recv(sent, self.parks.certify_forged(sent))
        cert, ack_hex = self.parks.confirm(sent)
        settle = await self.settle(sent, cert, ack_hex)
        return ack, settle

    async def settle(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
        if ack_hex is not None:
            args["ack"] = ack_hex
        (event,) = (await self.users["relayer"].call("bridge.settle", args))[1]
        return event

    def recv_args(self, packet: Packet, cert: dict[str, Any] | None = None) -> dict[str, Any]:
        self.tick()
        return {"packet": encode_packet(packet).hex(),
                "certificate": cert if cert is not None else self.parks.verify(packet)}

    async def inbound(self, packet: Packet, cert: dict[str, Any] | None = None) -> dict[str, Any]:
        """A packet a simulated park committed (or a forged one, with ``cert``), received here and settled back
        there: the write_ack event."""
        (ack,) = (await self.users["relayer"].call("bridge.recv", self.recv_args(packet, cert)))[1]
        assert ack["type"] == "write_ack"
        await self.settle_inbound(packet)
        return ack

    async def settle_inbound(self, packet: Packet) -> None:
        receipt = await self.src.query_json("receipt", packet.src_chain, packet.lane, str(packet.sequence))
        self.tick()
        if packet.src_chain not in self.parks.parks or not self.parks.raw(
                packet.src_chain, f"commitments/{FABRIC}/{packet.lane}/{packet.sequence}".encode()):
            return  # a forged packet: nobody committed it, nothing to settle
        cert = self.parks._outcome(packet, PacketOutcome.ACKED, bytes.fromhex(receipt["receipt"]))
        self.parks.settle(packet, cert, receipt["ack"])

    async def check(self) -> None:
        """Each right exactly once across the three parks, live rights booked, no transformer overloaded."""
        real = ChainState()
        for prefix in ("rights/", "rights_burned/", "bookings/", "transformers/", "packets/", "acks/"):
            for k, v in (await self.src.query_json("scan", prefix))["items"].items():
                real.set(k.encode(), v.encode())
        self.tick()
        check_rights({FABRIC: real, **{cid: self.parks.view(cid) for cid in self.parks.parks}}, now_ms())

    async def issue(self, right_id: str, *, owner: str = AL, station: str = "s1", transformer: str = "t1",
                    power_kw: int = 40, start_in: int = 30 * MINUTE) -> int:
        start = now_ms() + start_in
        await assets.issue_right(self.users["operator"], right_id, station, transformer, power_kw, start,
                                 start + 30 * MINUTE, owner)
        return start


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = Path(tmp_path_factory.mktemp("fabric-assets"))
    probe = FabricNetworkConfig(chain_id=FABRIC, data_dir=root, base_port=20000)
    try:
        FabricTools(probe).check_installed()
    except Exception as exc:  # a machine without `make setup`'s Fabric build
        pytest.skip(str(exc))
    cfg = FabricNetworkConfig(chain_id=FABRIC, data_dir=root, base_port=free_port_block(probe.port_count), users=USERS,
                              chaincode=CC, batch_timeout_ms=250)
    net = FabricNetwork(cfg)
    parks = Parks(now_ms=now_ms())
    w = World(net, parks)
    try:
        net.up(timeout_s=120)
        for cid in (B, C):
            parks.add(cid)
            g = genesis(cid, parks.relay, [o for o in (FABRIC, B, C) if o != cid])
            parks.ok(cid, OPERATOR, "init_bridge", g)
        section = bridge_section("relay", parks.relay.vset, [{"lane": LANE, "counterparty": B},
                                                            {"lane": LANE, "counterparty": C}],
                                 rights_operator=OP, transformers=TRANSFORMERS)
        section["stations"] = dict(STATIONS)
        gen = {"chain_id": FABRIC, "accounts": [OP, AL, BO, RL], "bridge": section,
               "market": {"certify_min_score": 6_000}}

        async def setup() -> None:
            for user in USERS:
                w.users[user] = af.target(af.connect(w.profile, FABRIC, user))
            w.source = af.source(w.users["relayer"].gateway)
            result, events = await w.users["operator"].call("bridge.init", gen)
            assert result["ok"] and events[0]["type"] == "bridge_initialised"

        w.loop.run_until_complete(setup())
        yield w
    finally:
        async def close() -> None:
            for t in w.users.values():
                await t.close()
        try:
            w.loop.run_until_complete(close())
        finally:
            w.loop.close()
            net.stop()


def run(world: World, coro: Coroutine[Any, Any, None]) -> None:
    world.loop.run_until_complete(coro)


# --- the registry --------------------------------------------------------------------------------------------


def test_the_registry_is_written_by_the_park_operator_msp_identity_only(world: World) -> None:
    async def scenario() -> None:
        for user in ("alice", "bob"):  # a sales-company identity; an operator-MSP user who is not the operator
            t = world.users[user]
            with pytest.raises(AuthorizationError):
                await assets.set_transformer(t, "t1", 10_000)
            with pytest.raises(AuthorizationError):
                await assets.set_station(t, "s9", "t1")
            with pytest.raises(AuthorizationError):
                await assets.issue_right(t, "rx", "s1", "t1", 1, now_ms() + MINUTE, now_ms() + 2 * MINUTE, AL)
            with pytest.raises(AuthorizationError):
                await assets.set_standing(t, AL, True, 10_000)
        op = world.users["operator"]
        await assets.set_station(op, "s9", "t2")
        shown = await assets.transformer(world.src, "t2")
        assert shown["transformer"] == {"capacity_kw": 50} and shown["stations"] == ["s3", "s9"]
        with pytest.raises(ProtocolError) as info:  # admission refuses: station s9 is behind t2
            await world.issue("rx", station="s9")
        assert info.value.code == "asset.invalid" and "transformer.mismatch" in str(info.value)
        await world.check()

    run(world, scenario())


# --- rights across parks -------------------------------------------------------------------------------------


def test_a_right_goes_abroad_on_to_a_third_park_and_unwinds_home_hop_by_hop(world: World) -> None:
    async def scenario() -> None:
        p = world.parks
        start = await world.issue("r1", power_kw=40)
        assert [r["right_id"] for r in await assets.rights(world.src, AL)] == ["r1"]
        alice = world.users["alice"]
        sent = await assets.send_right(alice, B, LANE, "r1", BOB_ID, start - MINUTE)
        await world.check()
        ack, settle = await world.out(sent.packet)
        assert ack["success"] and not settle["refunded"]
        v_b = f"{LANE}/{FABRIC}/r1"
        assert (await assets.right(world.src, "r1"))["right"]["owner"] == "@escrow"
        assert (await assets.transformer(world.src, "t1"))["bookings"] == []  # it left with a success ack
        await world.check()

        world.tick()
        p.move(B, C, v_b, receiver=ALICE_ID, who=world_bob())  # on to a third park
        v_c = f"{LANE}/{B}/{v_b}"
        assert p.right(C, v_c)["home_park"] == FABRIC
        p.move(C, B, v_c, receiver=BOB_ID, who=ALICE)  # back one hop
        await world.check()

        world.tick()
        home = p.send_right(B, FABRIC, v_b, receiver=AL, who=world_bob())
        ack = await world.inbound(home)
        assert ack["success"]
        rec = (await assets.right(world.src, "r1"))["right"]
        assert rec["owner"] == AL and "escrowed_to" not in rec
        assert [b["right_id"] for b in (await assets.transformer(world.src, "t1"))["bookings"]] == ["r1"]
        assert p.right(B, v_b) is None
        await world.check()

    run(world, scenario())


def world_bob() -> tuple[str, bytes]:
    from tests.unit.fabric_chaincode.parks import BOB
    return BOB


def test_refusals_abroad_and_at_home_are_error_acks_and_refunds_keep_the_booking(world: World) -> None:
    async def scenario() -> None:
        p = world.parks
        world.tick()
        p.issue(B, "big", power_kw=80, start_in=MINUTE, length=6 * 60 * MINUTE)  # park-b's t1 loaded for hours
        start = await world.issue("r2", power_kw=30, station="s2")
        ack, settle = await world.out(
            (await assets.send_right(world.users["alice"], B, LANE, "r2", BOB_ID, start - MINUTE)).packet)
        assert ack["code"] == "capacity.exceeded" and settle["refunded"]
        rec = (await assets.right(world.src, "r2"))["right"]
        assert rec["owner"] == AL and "escrowed_to" not in rec
        assert "r2" in [b["right_id"] for b in (await assets.transformer(world.src, "t1"))["bookings"]]

        world.tick()  # a right of park-b for a station the real park has not registered
        p.ok(B, OPERATOR, "set_station", {"name": "s-b-only", "transformer": "t2"})
        p.issue(B, "rb", station="s-b-only", transformer="t2", power_kw=5)
        ack = await world.inbound(p.send_right(B, FABRIC, "rb", receiver=AL))
        assert ack["code"] == "station.unknown"
        assert p.right(B, "rb")["owner"] == ALICE_ID  # refunded at its home
        await world.check()

    run(world, scenario())


def test_phase_1_refuses_a_timeout_after_the_slot_start_and_a_timed_out_right_is_refunded(world: World) -> None:
    async def scenario() -> None:
        start = await world.issue("r3", power_kw=5, station="s3", transformer="t2")
        alice = world.users["alice"]
        with pytest.raises(TimeoutExpiredError):
            await assets.send_right(alice, B, LANE, "r3", BOB_ID, start + 1)
        with pytest.raises(AuthorizationError):  # only the owner sends it
            await assets.send_right(world.users["bob"], B, LANE, "r3", BOB_ID, start - MINUTE)
        sent = await assets.send_right(alice, B, LANE, "r3", BOB_ID, now_ms() + 2_000)
        world.tick()
        world.parks.advance(2_000)  # park-b's clock passes the timeout: its sentinel, then the relay's outcome
        cert = world.parks.confirm_timeout(sent.packet, world.parks.certify_forged(sent.packet))
        settle = await world.settle(sent.packet, cert, None)
        assert settle["refunded"] and settle["outcome"] == "timed_out"
        assert (await assets.right(world.src, "r3"))["right"]["owner"] == AL
        await world.check()

    run(world, scenario())


def test_two_rights_racing_into_one_slot_never_overload_the_transformer(world: World) -> None:
    async def scenario() -> None:
        p = world.parks
        world.tick()
        p.ok(B, OPERATOR, "set_transformer", {"name": "t2", "capacity_kw": 1_000})
        relayer = world.users["relayer"]
        gw = relayer.gateway

        def two(tag: str, start_in: int) -> list[Packet]:
            world.tick()
            for i in (1, 2):
                p.issue(B, f"{tag}{i}", station="s3", transformer="t2", power_kw=30, start_in=start_in)
            return [p.send_right(B, FABRIC, f"{tag}{i}", receiver=AL) for i in (1, 2)]

        # 1. endorsed on the same state, both admit (30 + 30 > 50 only together): MVCC lets one commit
        p1, p2 = two("race", 60 * MINUTE)
        a1, a2 = world.recv_args(p1), world.recv_args(p2)
        await gw.watcher()
        e1 = await gw.endorse("recv", [json.dumps(a1)])
        e2 = await gw.endorse("recv", [json.dumps(a2)])
        assert json.loads(e1.response_payload)[0]["success"] and json.loads(e2.response_payload)[0]["success"]
        await gw.broadcast(e1)
        await gw.broadcast(e2)
        assert (await relayer.track(e1.tx_id))["ok"]
        with pytest.raises(MvccConflictError):
            await relayer.track(e2.tx_id)
        await world.check()  # the loser never happened: its right is still in flight, once
        (ack,) = (await relayer.call("bridge.recv", a2))[1]  # the relayer's retry, endorsed on the new state
        assert ack["code"] == "capacity.exceeded"
        for pk in (p1, p2):
            await world.settle_inbound(pk)
        # 2. through the adapter's pipeline (one bookings key): one after the other, never a conflict
        q1, q2 = two("pipe", 120 * MINUTE)  # another slot
        tx_ids = await asyncio.gather(*(relayer.submit("bridge.recv", world.recv_args(q)) for q in (q1, q2)))
        assert all(r["ok"] for r in await asyncio.gather(*(relayer.track(t) for t in tx_ids)))
        codes = [(await world.src.query_json("receipt", B, LANE, str(q.sequence)))["ack"] for q in (q1, q2)]
        assert len(set(codes)) == 2  # one admitted (a success ack), one refused
        for q in (q1, q2):
            await world.settle_inbound(q)
        booked = [b["right_id"] for b in (await assets.transformer(world.src, "t2"))["bookings"]]
        assert sorted(b for b in booked if b.startswith(f"{LANE}/{B}/")) == [f"{LANE}/{B}/pipe1", f"{LANE}/{B}/race1"]
        await world.check()

    run(world, scenario())


def test_forged_rights_and_a_voucher_returned_along_a_wrong_trace_are_error_acks(world: World) -> None:
    async def scenario() -> None:
        p = world.parks
        start = await world.issue("r4", power_kw=10, station="s2")
        ack, _ = await world.out(
            (await assets.send_right(world.users["alice"], B, LANE, "r4", BOB_ID, start - MINUTE)).packet)
        assert ack["success"]  # 80 kW booked there + 10 kW
        world.tick()
        held = p.right(B, f"{LANE}/{FABRIC}/r4")

        def forged(src: str, right_id: str, seq: int, **over: Any) -> Packet:
            rec = {**held, **over}
            c = ChargingRightPayload(right_id, rec["home_park"], rec["station"], rec["transformer"],
                                     rec["power_kw"], rec["slot_start_ms"], rec["slot_end_ms"])
            return Packet(ChainId(src), ChainId(FABRIC), LANE, seq, PacketKind.CHARGING_RIGHT,
                          encode_charging_right(c), "mallory", AL, now_ms() + 10 * MINUTE)

        cases = [
            (forged(B, f"{LANE}/{FABRIC}/r4", 9_001, power_kw=1), "right.mismatch"),  # another right's fields
            (forged(C, f"{LANE}/{FABRIC}/r4", 9_002), "right.not_escrowed"),  # home from a chain it never went to
            (forged(B, "r-fake", 9_003), "right.mismatch"),  # park-b's base id claiming the real park as home
        ]
        for packet, code in cases:
            ack = await world.inbound(packet, p.certify_forged(packet))
            assert ack["code"] == code
        assert (await assets.right(world.src, "r4"))["right"]["owner"] == "@escrow"
        assert p.right(B, f"{LANE}/{FABRIC}/r4")["owner"] == BOB_ID
        await world.check()

    run(world, scenario())


# --- reputation --------------------------------------------------------------------------------------------


def test_reputation_comes_from_the_parks_standing_and_never_goes_stale_backwards(world: World) -> None:
    async def scenario() -> None:
        p, op, bob = world.parks, world.users["operator"], world.users["bob"]
        await assets.set_standing(op, AL, True, 8_000)
        with pytest.raises(CodecError):  # the sender never supplies a score
            await bob.call("bridge.send", {"dst_chain": B, "lane": LANE, "kind": "reputation", "subject": AL,
                                           "score": 10_000, "receiver": BOB_ID,
                                           "timeout_timestamp_ms": now_ms() + MINUTE})
        sent = await assets.send_reputation(bob, B, LANE, AL, BOB_ID, now_ms() + 10 * MINUTE)
        real = sent.packet
        claimed = Packet(real.src_chain, real.dst_chain, real.lane, real.sequence, real.kind,
                         encode_reputation(ReputationPayload(AL, 10_000, STANDING_MODEL, 1)), real.sender,
                         real.receiver, real.timeout_timestamp_ms)
        world.tick()
        cert = p.certify_forged(real)
        assert p.refused(B, OPERATOR, "recv", p.recv_args(claimed, cert)) == "proof.invalid"
        ack, _ = await world.out(real)
        assert ack["success"]
        assert p.query(B, "imported_reputation", FABRIC, AL, STANDING_MODEL)["imported"]["score"] == 8_000

        # into the real park: park-b's attestations, newer first, then the older one
        world.tick()
        p.ok(B, OPERATOR, "set_standing", {"account": ALICE_ID, "certified": True, "score": 5_000})
        older = p.send(B, world_bob(), dst_chain=FABRIC, kind="reputation", subject=ALICE_ID, receiver=AL)
        p.ok(B, OPERATOR, "set_standing", {"account": ALICE_ID, "certified": True, "score": 7_500})
        newer = p.send(B, world_bob(), dst_chain=FABRIC, kind="reputation", subject=ALICE_ID, receiver=AL)
        forged = Packet(newer.src_chain, newer.dst_chain, newer.lane, newer.sequence, newer.kind,
                        encode_reputation(ReputationPayload(ALICE_ID, 10_000, STANDING_MODEL, 2)), newer.sender,
                        newer.receiver, newer.timeout_timestamp_ms)
        with pytest.raises(InvalidProofError):  # a score park-b's state does not hold: not what was committed
            await world.users["relayer"].submit("bridge.recv", world.recv_args(forged, world.parks.verify(newer)))
        assert (await world.inbound(newer))["success"]
        assert (await world.inbound(older))["code"] == "reputation.stale"
        imported = await assets.imported_reputation(world.src, B, ALICE_ID, STANDING_MODEL)
        assert imported is not None and imported["score"] == 7_500 and imported["source_height"] == 2

        # the market function that reads it: certify a participant by its imported score (minimum 6000 here)
        with pytest.raises(AuthorizationError):
            await assets.certify(bob, BO, B, ALICE_ID, STANDING_MODEL)
        await assets.certify(op, BO, B, ALICE_ID, STANDING_MODEL)
        standing = await assets.standing(world.src, BO)
        assert standing is not None and standing["certified"] and standing["score"] == 7_500
        assert standing["basis"] == {"src_chain": B, "subject": ALICE_ID, "model": STANDING_MODEL, "source_height": 2}
        await world.check()

    run(world, scenario())


def test_the_market_on_real_peers_attributes_private_terms_and_a_charging_round(world: World) -> None:
    """The market (chains/fabric/SPEC.md §F1) on the real park: users enrolled with a ``market.role`` certificate
    attribute; access refused to an uncertified identity and to a certified one whose certificate lacks the
    attribute; a contract whose terms travel as transient data into both organisations' implicit private data
    collections (the block holds their hash only; each party reads them from its own organisation's peer;
    settlement checks ``GetPrivateDataHash`` on the real peers; a second settlement is refused); a charging round
    allocated once its requests close, issuing a right of the registry."""
    from adapters.fabric.market import FabricMarket, contract_terms
    from chains.fabric.network.crypto import enroll_user
    from protocol.errors import (
        MarketAttributeError,
        MarketPhaseError,
        MarketSettledError,
        MarketUncertifiedError,
    )

    async def run_all() -> None:
        roles = {"gen": (SALES_MSP, "trader"), "factory": (OPERATOR_MSP, "trader"), "stn": (OPERATOR_MSP, "station")}
        for user, (msp, role) in roles.items():
            enroll_user(world.net.cfg, msp, user, {"market.role": role})
            world.users[user] = af.target(af.connect(world.profile, FABRIC, user))
            await world.users[user].register()
        gen_id, fac_id, stn_id = (f"{msp}:{u}@{msp}" for u, (msp, _) in roles.items())
        reg = FabricMarket(world.users["operator"])
        gen, fac, stn = (FabricMarket(world.users[u]) for u in roles)
        close = now_ms() + 6_000
        await reg.open_round("m1", "t1", close, close, close + 30 * MINUTE, close + 60 * MINUTE)
        with pytest.raises(MarketUncertifiedError):
            await stn.request("m1", "s1", 10, "strong", 0)
        await reg.certify(stn_id, "station", stations=["s1"])
        await stn.request("m1", "s1", 10, "strong", 0)
        # a certified identity whose certificate carries no market.role
        await reg.certify(AL, "sales")
        with pytest.raises(MarketAttributeError):
            await FabricMarket(world.users["alice"]).publish_plan("p1", {"peak": 3, "flat": 2, "valley": 1}, 0)
        # private terms: transient data in, a hash on the ledger
        await reg.certify(gen_id, "trader")
        await reg.certify(fac_id, "trader")
        terms, digest = contract_terms("c1", gen_id, fac_id, 10, 0)
        result, _ = await world.users["gen"].call("market.propose_contract",
                                                  {"contract_id": "c1", "terms_sha256": digest},
                                                  transient={"terms": terms})
        block = await world.users["gen"].gateway.block_of_tx(result["tx_hash"])
        assert block is not None and digest.encode() in block and terms not in block and b'"salt"' not in block
        await fac.accept_contract("c1", terms)
        assert (await gen.terms("c1"))["terms"]["quantity_kwh"] == 10
        assert (await fac.terms("c1"))["terms"]["seller"] == gen_id
        await fac.settle_contract("c1", 10, terms)
        with pytest.raises(MarketSettledError):
            await fac.settle_contract("c1", 10, terms)
        assert (await gen.contract("c1"))["contract"]["state"] == "settled"
        # stage 1 of a charging round: not before the requests close, then a right of the registry
        with pytest.raises(MarketPhaseError):
            await reg.allocate("m1")
        await asyncio.sleep(max(0.0, (close - now_ms()) / 1000 + 1.5))  # the chaincode clock must pass the close
        events = await reg.allocate("m1")
        kw = events[0]["allocations"]["s1"]
        assert 0 < kw <= 10
        right = (await world.src.query_json("right", "m1.s1"))["right"]
        assert right["owner"] == stn_id and right["power_kw"] == kw
        await world.check()

    run(world, run_all())
