"""The DPoS park as real processes on loopback (issue #2).

Three witnesses produce and finalise blocks; a light client fed through the adapter follows the live
chain and proves a balance and a bridge commitment (membership) and an absent receipt
(non-membership). One witness is SIGKILLed: the chain goes on. Restarted, it replays its SQLite
blocks, catches up from its peers and the chain finalises past the outage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from adapters import dpos as dpos_adapter
from chains.dpos.light_client import DposLightClient
from chains.dpos.node import DposRules
from protocol.codec import packet_commitment
from protocol.errors import CodecError, InsufficientFundsError, NotFinalError, ProtocolError
from protocol.paths import balance_path, commitment_path, receipt_path
from protocol.state_commitment import Proof
from protocol.types import ChainId, ClientId, LaneId
from relay.ops.keys import ed25519_signer
from relay.ops.layout import account_key_path
from tests.integration.harness import Devnet, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CHAIN = "dpos-park"
WITNESSES = ["witness-a", "witness-b", "witness-c"]


def _now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def net(tmp_path: Path) -> Any:
    d = Devnet(tmp_path, chains=[{"id": CHAIN, "kind": "dpos", "nodes": WITNESSES, "block_interval_ms": 500,
                                  "maintenance_interval_blocks": 20,
                                  "accounts": {"alice": 5_000_000, "relayer": 0}}],
               lanes=[{"lane": "lane-0", "a": CHAIN, "b": "poc-park"}])
    d.write()
    d.start_all()
    yield d
    d.stop_all()


async def _heights(d: Devnet, nodes: list[str]) -> dict[str, dict[str, Any] | None]:
    return {n: await status(d.url(CHAIN, n)) for n in nodes}


async def test_witnesses_finalise_survive_a_kill_and_a_light_client_proves_state(net: Devnet) -> None:
    assert net.cfg is not None

    async def all_final(h: int) -> bool:
        sts = await _heights(net, WITNESSES)
        return all(s is not None and s["final_height"] >= h for s in sts.values())

    await wait_for("3 witnesses finalising block 3", lambda: all_final(3), 60)

    genesis = json.loads((net.cfg.data_dir / "genesis" / f"{CHAIN}.json").read_text())
    rules = DposRules(genesis, None, None)
    client = DposLightClient(ClientId("dpos-0"), ChainId(CHAIN), 3_600_000, params=rules.params,
                             checkpoint=rules.checkpoint)
    alice = ed25519_signer(account_key_path(net.cfg, CHAIN, "alice"))

    async with net.client(CHAIN, "witness-a") as rpc:
        src = dpos_adapter.source(rpc)
        tgt = dpos_adapter.target(rpc, CHAIN, "alice", alice)

        # bad input: typed errors, nothing changes
        before = await src.balance("alice", "kWh")
        with pytest.raises(CodecError):
            await rpc.call("submitTx", {"tx": {"chain_id": CHAIN}})
        with pytest.raises(ProtocolError):
            await tgt.submit("bridge.send", {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy",
                                             "receiver": "carol", "timeout_timestamp_ms": 0, "denom": "kWh",
                                             "amount_wh": 1})
        with pytest.raises(InsufficientFundsError):
            await tgt.submit("transfer", {"to": "relayer", "denom": "kWh", "amount_wh": 10**15})
        assert await src.balance("alice", "kWh") == before

        # phase 1 on the live chain
        send = await tgt.submit("bridge.send", {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy",
                                                "receiver": "carol", "timeout_timestamp_ms": _now() + 600_000,
                                                "denom": "kWh", "amount_wh": 1_500})
        res = await tgt.track(send, timeout_s=60)
        assert res["ok"], res
        ev = [e for e in await src.events(res["height"], res["height"], "send_packet")]
        assert len(ev) == 1
        from protocol.codec import decode_packet

        packet = decode_packet(bytes.fromhex(ev[0]["packet"]))
        assert packet.sequence == 1 and packet.src_chain == CHAIN

        # the light client follows the live chain until the send's block is final to it
        async def follow() -> bool:
            latest = await src.latest_height()
            for h in await src.headers(client.latest_height + 1, latest):
                client.process_header(h, _now())
            return client.final_height >= res["height"]

        await wait_for("light client finalising the send", follow, 60)
        height = res["height"]
        for key, value in [(balance_path("alice", "kWh"), str(before - 1_500).encode()),
                           (commitment_path(ChainId("poc-park"), LaneId("lane-0"), 1), packet_commitment(packet))]:
            pv = await src.prove(key, height)
            assert pv.value == value
            client.verify_membership(height, key, value, Proof.decode(pv.proof), _now())
        absent = await src.prove(receipt_path(ChainId("poc-park"), LaneId("lane-0"), 1), height)
        assert absent.value is None
        client.verify_non_membership(height, absent.key, Proof.decode(absent.proof), _now())
        # a proof is only good against a final header, and only for what it proves
        with pytest.raises(NotFinalError):
            client.verify_membership(client.latest_height + 50, key, value, Proof.decode(pv.proof), _now())
        with pytest.raises(ProtocolError):
            client.verify_membership(height, balance_path("alice", "kWh"), b"999", Proof.decode(pv.proof), _now())

    # a witness dies: the others go on producing
    killed_at = (await status(net.url(CHAIN, "witness-c")))["height"]  # type: ignore[index]
    net.kill(CHAIN, "witness-c")

    async def progressed() -> bool:
        sts = await _heights(net, ["witness-a", "witness-b"])
        return all(s is not None and s["height"] >= killed_at + 6 for s in sts.values())

    await wait_for("chain going on without witness-c", progressed, 60)

    # restarted, it replays SQLite, catches up and the chain finalises past the outage
    net.start(CHAIN, "witness-c")

    async def caught_up() -> bool:
        sts = await _heights(net, WITNESSES)
        if any(s is None for s in sts.values()):
            return False
        heads = {s["head"] for s in sts.values() if s is not None}
        finals = [s["final_height"] for s in sts.values() if s is not None]
        return len(heads) == 1 and min(finals) > killed_at + 6

    await wait_for("witness-c caught up and finality past the outage", caught_up, 90)
    assert "replayed" in net.log_tail(CHAIN, "witness-c", 400)
