"""The relayer's Fabric adapter (adapters/fabric) against a real Fabric 2.5 park: Fabric's own orderer and peers, the
real bridge chaincode served by each organisation, and the real hfc client — started by the network launcher in a
temp dir, the bridge initialised with a genesis and a relay validator set whose certificates come from the unit
tests' relay simulator (as tests/integration/test_fabric_bridge_chaincode.py does).

Shown, in order on one network: heights and blocks decode and a FabricLightClient made from the channel's genesis
block follows them (20+ blocks); an attestation from ``prove`` verifies with that client (membership of a commitment
after ``send_energy``, absence of an unknown key); the events of a send appear once; ``recv`` with a real relay
certificate commits and tracks ok; a replayed ``recv`` is ``packet.replay`` and a forged certificate its typed error,
both before anything is ordered; two conflicting transactions in flight give one VALID and one MVCC conflict
(retryable, its events skipped), while the adapter's own pipeline keeps conflicting ``recv`` apart; a timeout that
one organisation's clock has passed and the other's not is a retryable endorsement mismatch, then the sentinel
commits and the light client accepts the timeout; a peer and the orderer down are transport errors, and the adapter
works again once they are back.

Run with ``-s`` for the figures: attestation round trip, invoke+commit latency, invokes/s with 8 in flight.
"""

from __future__ import annotations

import os

# before protobuf and grpc load (adapters/fabric/__init__.py): hfc's protos, and this process forks Fabric
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import asyncio
import json
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

import adapters.fabric as af
from adapters.fabric import EndorsementMismatchError, FabricSource, FabricTarget, MvccConflictError
from adapters.fabric.errors import OrderingUnknownError
from chains.common.genesis import bridge_section
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP, TIMEOUT_RECEIPT
from chains.fabric.errors import StatementError
from chains.fabric.light_client import FabricLightClient
from chains.fabric.network.config import ChaincodeSpec, FabricNetworkConfig, orderer_process, peer_process
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.tools import FabricTools
from protocol.codec import decode_packet, encode_packet
from protocol.errors import (
    Disposition,
    ParkRelayError,
    QuorumError,
    ReplayError,
    SignatureError,
    TimeoutExpiredError,
    TransportError,
)
from protocol.types import ChainId, ClientId, Packet
from tests.integration.harness import REPO, free_port_block
from tests.unit.bridge.sim import Network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHAIN = "fabric-park"
LANES = [f"lane-{i}" for i in range(8)]
SKEW_MS = 3_000
"""SalesMSP's chaincode clock runs this far ahead of OperatorMSP's (the server's PARKRELAY_FABRIC_CLOCK_SKEW_MS): the
two organisations disagree about a timeout for that long, as NTP-synchronised hosts would for a moment."""
CC = ChaincodeSpec(command=("sh", "-c", f'if [ "$PARKRELAY_FABRIC_MSP" = {SALES_MSP} ]; then '
                            f"export PARKRELAY_FABRIC_CLOCK_SKEW_MS={SKEW_MS}; fi; "
                            f'exec "{sys.executable}" -m chains.fabric.chaincode.server'),
                   cwd=REPO, env={"PYTHONPATH": str(REPO)})
USERS = {"alice": OPERATOR_MSP, "bob": SALES_MSP, "relayer": OPERATOR_MSP}
ALICE, BOB = "OperatorMSP:alice@OperatorMSP", "SalesMSP:bob@SalesMSP"
FIGURES: dict[str, str] = {}

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Park:
    """The network, its connection profile and the relay simulator beside it."""

    def __init__(self, net: FabricNetwork, relay: Network) -> None:
        self.net, self.cfg, self.relay = net, net.cfg, relay
        self.profile = net.cfg.layout.connection_profile

    def inbound(self, amount: int = 1_000, lane: str = "lane-0",
                timeout_in_ms: int = 600_000) -> tuple[Packet, dict[str, Any]]:
        """A dpos-park packet to bob, verified by the relay: (packet, ``bridge.recv`` arguments)."""
        self.relay.now_ms = now_ms()
        packet = self.relay.send("dpos-park", "alice", dst_chain=CHAIN, lane=lane, kind="energy", receiver=BOB,
                                 denom="kWh", amount_wh=amount, timeout_timestamp_ms=now_ms() + timeout_in_ms)
        return packet, {"packet": encode_packet(packet).hex(), "certificate": self.relay.verify(packet)}


@pytest.fixture(scope="module")
def park(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Park]:
    root = Path(tmp_path_factory.mktemp("fabric-adapter"))
    probe = FabricNetworkConfig(chain_id=CHAIN, data_dir=root, base_port=20000)
    try:
        FabricTools(probe).check_installed()
    except Exception as exc:  # a machine without `make setup`'s Fabric build
        pytest.skip(str(exc))
    cfg = FabricNetworkConfig(chain_id=CHAIN, data_dir=root, base_port=free_port_block(probe.port_count), users=USERS,
                              chaincode=CC, batch_timeout_ms=250)
    net = FabricNetwork(cfg)
    try:
        net.up(timeout_s=120)
        relay = Network()
        relay.now_ms = now_ms()
        dpos = relay.add_park("dpos-park", [{"lane": lane, "counterparty": CHAIN} for lane in LANES])
        dpos.state.add_balance("alice", "kWh", 10**9)
        p = Park(net, relay)
        genesis = {"chain_id": CHAIN, "accounts": [ALICE, BOB],
                   "balances": [{"account": ALICE, "denom": "kWh", "amount": 10**9}],
                   "bridge": bridge_section("relay", relay.relay.vset,
                                            [{"lane": lane, "counterparty": "dpos-park"} for lane in LANES])}

        async def init() -> None:
            async with sides(p, "alice") as (_, alice):
                result, events = await alice.call("bridge.init", genesis)
                assert result["ok"] and events[0]["type"] == "bridge_initialised"

        asyncio.run(init())
        yield p
    finally:
        net.stop()
        if FIGURES:
            print("\nFabric adapter figures: " + "; ".join(f"{k}: {v}" for k, v in FIGURES.items()))


@asynccontextmanager
async def sides(park: Park, user: str = "relayer") -> AsyncIterator[tuple[FabricSource, FabricTarget]]:
    """A source and a target over one gateway as ``user``, closed afterwards."""
    gw = af.connect(park.profile, CHAIN, user)
    target = af.target(gw)
    try:
        yield af.source(gw), target
    finally:
        await target.close()


async def until(what: str, attempt: Callable[[], Awaitable[T]], timeout_s: float = 60.0) -> T:
    """Retry ``attempt`` until it stops raising a retryable error (a part coming back)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await attempt()
        except ParkRelayError as exc:
            if exc.disposition is not Disposition.RETRY_SOON and not isinstance(exc, TransportError):
                raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout_s:.0f} s: {exc}") from exc
            await asyncio.sleep(0.2)


def light_client(genesis: Any) -> FabricLightClient:
    return FabricLightClient.from_trusted_block(ClientId("fabric-0"), ChainId(CHAIN), 3_600_000, genesis,
                                                channel_id="park", trusted_time_ms=now_ms())


# --- the source side -----------------------------------------------------------------------------------------


async def test_heights_and_blocks_are_followed_by_a_light_client_from_the_genesis_block(park: Park) -> None:
    async with sides(park, "alice") as (src, alice):
        for _ in range(20):  # 20 more blocks, one transfer each
            result, _ = await alice.call("transfer", {"to": BOB, "denom": "kWh", "amount_wh": 1})
            assert result["ok"]
        head = await src.latest_height()
        assert head >= 20 and await src.final_height() == head
        genesis = (await src.block(0)).header
        assert genesis.data is not None  # a config block keeps its data: it is the client's root of trust
        client = light_client(genesis)
        headers = await src.headers(1, head + 5)  # past the head: stops there
        assert [h.height for h in headers] == list(range(1, head + 1))
        assert all(h.data is None for h in headers)  # no config block since the genesis: headers only
        for h in headers:
            client.process_header(h, now_ms())
        assert client.latest_height == head and client.holds(headers[-1])
    # hfc's credential store (the profile names <data dir>/crypto/hfc-kvs) would hold private keys: unused
    assert not (park.cfg.layout.crypto / "hfc-kvs").exists()


async def test_an_attestation_from_prove_verifies_with_the_light_client(park: Park) -> None:
    async with sides(park, "alice") as (src, alice):
        t = time.perf_counter()
        sent = await af.send_energy(alice, "dpos-park", "lane-0", "kWh", 500, "bob", now_ms() + 600_000)
        FIGURES["send_energy (invoke+commit)"] = f"{(time.perf_counter() - t) * 1000:.0f} ms"
        assert sent.packet.sender == ALICE and sent.packet.src_chain == CHAIN
        head = await src.final_height()
        client = light_client((await src.block(0)).header)
        for h in await src.headers(1, head):
            client.process_header(h, now_ms())

        key = f"commitments/dpos-park/lane-0/{sent.sequence}".encode()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            pv = await src.prove(key, head)
            times.append(time.perf_counter() - t)
        FIGURES["attestation round trip (prove, 2 peers)"] = f"median {statistics.median(times) * 1000:.1f} ms"
        assert pv.value is not None and pv.height == head
        assert pv.state_root == client.final_consensus_state(head).state_root
        client.verify_membership(head, key, pv.value, pv.proof, now_ms())
        with pytest.raises(StatementError):  # the statement binds the value
            client.verify_membership(head, key, b"\x00" * 32, pv.proof, now_ms())

        unknown = b"commitments/dpos-park/lane-0/999999"
        absent = await src.prove(unknown, head)
        assert absent.value is None
        client.verify_non_membership(head, unknown, absent.proof, now_ms())
        with pytest.raises(StatementError):  # an absence attestation is of its own key only
            client.verify_non_membership(head, key, absent.proof, now_ms())

        assert await src.query_many([key.decode(), unknown.decode()]) == {key.decode(): pv.value.hex(),
                                                                          unknown.decode(): None}
        clock = await src.header_time_ms(head)
        assert abs(clock - now_ms()) < 2_000  # the peers' chaincode clocks, now


async def test_the_events_of_a_send_appear_once(park: Park) -> None:
    async with sides(park, "alice") as (src, alice):
        before = await src.final_height()
        sent = await af.send_energy(alice, "dpos-park", "lane-1", "kWh", 700, "bob", now_ms() + 600_000)
        after = await src.final_height()
        events = await src.events(before + 1, after)
        mine = [e for e in events if e["type"] == "send_packet" and e["tx_hash"] == sent.tx_hash]
        assert len(mine) == 1
        ev = mine[0]
        assert ev["height"] == sent.height and decode_packet(bytes.fromhex(ev["packet"])) == sent.packet
        assert ev["lane"] == "lane-1" and ev["sequence"] == sent.sequence and ev["dst"] == "dpos-park"
        assert await src.events(before + 1, after, "write_ack") == []
        scanned = [e for lo in range(0, after + 1, 7) for e in await src.events(lo, min(after, lo + 6), "send_packet")]
        assert sum(1 for e in scanned if e["tx_hash"] == sent.tx_hash) == 1


# --- the target side -----------------------------------------------------------------------------------------


async def test_recv_with_a_real_certificate_commits_and_a_replay_is_refused_before_ordering(park: Park) -> None:
    async with sides(park) as (src, relayer):
        packet, args = park.inbound(1_000)
        balance = await src.balance(BOB, "lane-0/dpos-park/kWh")
        t = time.perf_counter()
        tx_id = await relayer.submit("bridge.recv", args)
        result = await relayer.track(tx_id)
        FIGURES["recv (submit+track)"] = f"{(time.perf_counter() - t) * 1000:.0f} ms"
        assert result["ok"] and result["tx_hash"] == tx_id
        assert await src.balance(BOB, "lane-0/dpos-park/kWh") == balance + 1_000
        acks = [e for e in await src.events(result["height"], result["height"], "write_ack")
                if e["sequence"] == packet.sequence]
        assert len(acks) == 1 and acks[0]["success"] is True

        height = await src.final_height()
        with pytest.raises(ReplayError) as info:
            await relayer.submit("bridge.recv", args)
        assert info.value.disposition is Disposition.DONE
        assert await src.final_height() == height  # refused at endorsement: nothing was ordered


async def test_forged_certificates_get_their_typed_errors(park: Park) -> None:
    async with sides(park) as (_, relayer):
        packet, args = park.inbound(10)
        few = park.relay.verified_cert(packet, indices=[0])  # one validator of four signs
        with pytest.raises(QuorumError):
            await relayer.submit("bridge.recv", {**args, "certificate": few})
        forged = json.loads(json.dumps(args["certificate"]))
        sig = forged["commit"]["signatures"][0]
        sig["ed25519_sig"] = ("00" if sig["ed25519_sig"][:2] != "00" else "11") + sig["ed25519_sig"][2:]
        with pytest.raises(SignatureError):
            await relayer.submit("bridge.recv", {**args, "certificate": forged})
        assert (await relayer.call("bridge.recv", args))[0]["ok"]  # the genuine one still goes through


async def test_conflicting_writes_in_flight_give_one_mvcc_conflict_which_is_retryable(park: Park) -> None:
    async with sides(park) as (src, relayer):
        gw = relayer.gateway
        (_, a1), (p2, a2) = park.inbound(5), park.inbound(5)  # both mint lane-0/dpos-park/kWh: one supply key
        await gw.watcher()
        e1 = await gw.endorse("recv", [json.dumps(a1)])
        e2 = await gw.endorse("recv", [json.dumps(a2)])  # on the same state as e1: both read the supply's version
        await gw.broadcast(e1)
        await gw.broadcast(e2)
        assert (await relayer.track(e1.tx_id))["ok"]
        with pytest.raises(MvccConflictError) as info:
            await relayer.track(e2.tx_id)
        assert info.value.disposition is Disposition.RETRY_SOON
        status = await relayer.status(e2.tx_id, 5)
        block = await src.block(status.height)
        assert not [e for e in block.events(gw.chaincode) if e.get("sequence") == p2.sequence]  # never happened
        assert (await relayer.call("bridge.recv", a2))[0]["ok"]  # built again on the new state, it commits

        # through the adapter's pipeline, conflicting recvs in flight together never conflict
        batch = [park.inbound(3) for _ in range(4)]
        tx_ids = await asyncio.gather(*(relayer.submit("bridge.recv", a) for _, a in batch))
        results = await asyncio.gather(*(relayer.track(t) for t in tx_ids))
        assert all(r["ok"] for r in results)


async def test_throughput_with_eight_recvs_in_flight(park: Park) -> None:
    async with sides(park) as (_, relayer):
        # latency: one at a time
        lat, sub = [], []
        for _ in range(10):
            _, a = park.inbound(1, lane="lane-7")
            t = time.perf_counter()
            tx_id = await relayer.submit("bridge.recv", a)
            sub.append(time.perf_counter() - t)
            assert (await relayer.track(tx_id))["ok"]
            lat.append(time.perf_counter() - t)
        FIGURES["invoke+commit latency"] = f"median {statistics.median(lat) * 1000:.0f} ms (BatchTimeout 250 ms)"
        FIGURES["submit (endorse by 2 peers + order)"] = f"median {statistics.median(sub) * 1000:.0f} ms"

        # 8 in flight on 8 lanes (disjoint keys): several recv per block
        per_lane = 6
        work = {lane: [park.inbound(1, lane=lane)[1] for _ in range(per_lane)] for lane in LANES}

        async def lane_worker(lane: str) -> None:
            for a in work[lane]:
                await relayer.call("bridge.recv", a)

        t, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane_worker(lane) for lane in LANES))
        elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
        n = per_lane * len(LANES)
        FIGURES["8 in flight (8 lanes)"] = (f"{n / elapsed:.1f} invokes/s ({n} recv in {elapsed:.1f} s; adapter CPU "
                                            f"{cpu / n * 1000:.0f} ms per invoke)")

        # 8 in flight on one lane: the pipeline keeps them apart (one supply key), no MVCC conflict
        same = [park.inbound(1, lane="lane-6")[1] for _ in range(8)]
        t = time.perf_counter()
        tx_ids = await asyncio.gather(*(relayer.submit("bridge.recv", a) for a in same))
        assert all(r["ok"] for r in await asyncio.gather(*(relayer.track(x) for x in tx_ids)))
        elapsed = time.perf_counter() - t
        FIGURES["8 in flight (1 lane, pipelined)"] = f"{8 / elapsed:.1f} invokes/s"


async def test_clock_skew_at_a_timeout_is_a_retryable_mismatch_then_the_sentinel_commits(park: Park) -> None:
    async with sides(park) as (src, relayer):
        timeout_in = SKEW_MS + 2_000
        packet, args = park.inbound(3, timeout_in_ms=timeout_in)
        deadline = packet.timeout_timestamp_ms
        with pytest.raises(TimeoutExpiredError) as info:  # both clocks before the timeout: not yet
            await relayer.submit("bridge.timeout_receipt", args)
        assert info.value.disposition is Disposition.AFTER_PROGRESS

        await asyncio.sleep(max(0.0, (deadline - SKEW_MS - now_ms()) / 1000) + 0.3)  # SalesMSP's clock passes it
        for op in ("bridge.recv", "bridge.timeout_receipt"):
            with pytest.raises(EndorsementMismatchError) as mismatch:
                await relayer.submit(op, args)
            assert mismatch.value.disposition is Disposition.RETRY_SOON

        await asyncio.sleep(max(0.0, (deadline - now_ms()) / 1000) + 0.3)  # both clocks past it
        with pytest.raises(TimeoutExpiredError):
            await relayer.submit("bridge.recv", args)
        assert (await relayer.call("bridge.timeout_receipt", args))[0]["ok"]
        key = f"receipts/dpos-park/lane-0/{packet.sequence}".encode()
        head = await src.final_height()
        pv = await src.prove(key, head)
        assert pv.value == TIMEOUT_RECEIPT
        client = light_client((await src.block(0)).header)
        for h in await src.headers(1, head):
            client.process_header(h, now_ms())
        client.verify_timeout(head, key, deadline, pv.proof, now_ms())  # the relay can confirm the timeout
        with pytest.raises(TimeoutExpiredError):  # and the packet can never execute here
            await relayer.submit("bridge.recv", args)


# --- parts down ------------------------------------------------------------------------------------------------


async def test_a_peer_down_is_a_transport_error_and_the_adapter_recovers(park: Park) -> None:
    peer = peer_process(OPERATOR_MSP)  # the relayer's own organisation's: its first read peer
    async with sides(park) as (src, relayer):
        _, args = park.inbound(2)
        park.net.kill(peer)
        try:
            with pytest.raises(TransportError) as info:
                await relayer.submit("bridge.recv", args)
            assert info.value.retryable and info.value.side == CHAIN
            assert info.value.disposition is Disposition.RETRY_SOON
            with pytest.raises(TransportError):  # an attestation needs both organisations
                await src.prove(b"commitments/dpos-park/lane-0/1", await src.final_height())
            assert await src.final_height() > 0  # reads go on at the other organisation's peer
            assert (await src.block(1)).number == 1
        finally:
            park.net.start(peer)
        result = await until("recv after the peer restarted",
                             lambda: relayer.call("bridge.recv", args))
        assert result[0]["ok"]


async def test_the_orderer_down_is_a_transport_error_and_the_adapter_recovers(park: Park) -> None:
    orderer = orderer_process(0)
    async with sides(park) as (_, relayer):
        _, args = park.inbound(2)
        park.net.kill(orderer)
        try:
            with pytest.raises(TransportError) as info:
                await relayer.submit("bridge.recv", args)
            assert info.value.retryable and "orderer" in str(info.value)
        finally:
            park.net.start(orderer)
        result = await until("recv after the orderer restarted", lambda: relayer.call("bridge.recv", args))
        assert result[0]["ok"]



async def test_a_hung_orderer_leaves_the_transaction_in_doubt_and_the_pipeline_waits_for_it(park: Park) -> None:
    orderer = park.net.process(orderer_process(0))
    gw = af.connect(park.profile, CHAIN, "relayer", timeout_s=2.0)
    relayer = af.target(gw)
    try:
        (_, a1), (_, a2) = park.inbound(4), park.inbound(4)  # one supply key: the second must wait for the first
        await relayer.call("bridge.recv", park.inbound(1)[1])  # connections up, watcher running
        orderer.signal(signal.SIGSTOP)
        try:
            with pytest.raises(OrderingUnknownError) as info:
                await relayer.submit("bridge.recv", a1)
            assert info.value.retryable and info.value.disposition is Disposition.RETRY_SOON
        finally:
            orderer.signal(signal.SIGCONT)
        in_doubt = info.value.tx_id
        # endorsed once the one in doubt committed, or after in_doubt_wait_s: never an MVCC conflict with it
        assert (await relayer.call("bridge.recv", a2))[0]["ok"]
        try:
            committed = (await relayer.track(in_doubt, 1.0))["ok"]  # a stream cancelled mid-way: it may or may not
        except TransportError:
            committed = False
        if committed:
            with pytest.raises(ReplayError):
                await relayer.submit("bridge.recv", a1)
        else:
            assert (await relayer.call("bridge.recv", a1))[0]["ok"]
    finally:
        await relayer.close()
