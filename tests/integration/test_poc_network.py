"""The PoC park as real processes on loopback (issue #2).

Two farmers grow one chain with real chiapos proofs of space; a light client fed through the adapter
follows it and proves a balance and a bridge commitment (membership) and an absent receipt
(non-membership). A forced fork (the farmers partitioned, each farming its own branch) resolves to
the heavier branch when they reconnect.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from adapters import poc as poc_adapter
from chains.poc.light_client import PocLightClient
from chains.poc.node import PocRules
from protocol.codec import decode_packet, packet_commitment
from protocol.errors import NotFinalError, ProtocolError
from protocol.paths import balance_path, commitment_path, receipt_path
from protocol.state_commitment import Proof
from protocol.types import ChainId, ClientId, LaneId
from relay.ops.keys import ed25519_signer, read_secret
from relay.ops.layout import account_key_path, admin_token_path
from tests.integration.harness import Devnet, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHAIN = "poc-park"
FARMERS = ["farmer-a", "farmer-b"]


def _now() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def net(tmp_path: Path) -> Any:
    d = Devnet(tmp_path, chains=[{"id": CHAIN, "kind": "poc", "nodes": FARMERS, "target_block_interval_ms": 1000,
                                  "confirmation_depth": 8, "accounts": {"carol": 5_000_000, "operator": 0}}],
               lanes=[{"lane": "lane-0", "a": "dpos-park", "b": CHAIN}])
    d.write()
    d.start_all()
    yield d
    d.stop_all()


async def _statuses(d: Devnet) -> dict[str, dict[str, Any] | None]:
    return {n: await status(d.url(CHAIN, n)) for n in FARMERS}


async def test_farmers_grow_one_chain_and_a_light_client_proves_state(net: Devnet) -> None:
    assert net.cfg is not None

    async def agreed(h: int) -> bool:
        sts = await _statuses(net)
        return all(s is not None and s["final_height"] >= h for s in sts.values())

    await wait_for("2 farmers finalising block 2 (plots may be filled first)", lambda: agreed(2), 120)

    genesis = json.loads((net.cfg.data_dir / "genesis" / f"{CHAIN}.json").read_text())
    rules = PocRules(genesis, None, None)
    # as the relay creates it (farmer names bound to the genesis accounts), with a short finality window: the
    # client follows with wall-clock time, and a header is final once held 5 s on the best branch at depth
    client = PocLightClient.from_genesis(ClientId("poc-0"), ChainId(CHAIN), genesis, 3_600_000,
                                         client_params={"finality_window_ms": 5_000})
    assert client.final_tip == rules.genesis_ctx and client.confirmation_depth == rules.confirmation_depth
    carol = ed25519_signer(account_key_path(net.cfg, CHAIN, "carol"))

    async with net.client(CHAIN, "farmer-a") as rpc:
        src = poc_adapter.source(rpc)
        tgt = poc_adapter.target(rpc, CHAIN, "carol", carol)
        before = await src.balance("carol", "kWh")
        with pytest.raises(ProtocolError):  # no such lane: refused at submission, nothing changes
            await tgt.submit("bridge.send", {"dst_chain": "dpos-park", "lane": "lane-9", "kind": "energy",
                                             "receiver": "alice", "timeout_timestamp_ms": _now() + 600_000,
                                             "denom": "kWh", "amount_wh": 1})
        send = await tgt.submit("bridge.send", {"dst_chain": "dpos-park", "lane": "lane-0", "kind": "energy",
                                                "receiver": "alice", "timeout_timestamp_ms": _now() + 600_000,
                                                "denom": "kWh", "amount_wh": 2_500})
        res = await tgt.track(send, timeout_s=90)
        assert res["ok"], res
        ev = await src.events(res["height"], res["height"], "send_packet")
        packet = decode_packet(bytes.fromhex(ev[0]["packet"]))

        async def follow() -> bool:
            latest = await src.latest_height()
            for h in await src.headers(client.latest_height + 1, latest):
                client.process_header(h, _now())
            return client.final_height >= res["height"]

        await wait_for("light client finalising the send", follow, 90)
        height = res["height"]
        checks = [(balance_path("carol", "kWh"), str(before - 2_500).encode()),
                  (commitment_path(ChainId("dpos-park"), LaneId("lane-0"), packet.sequence), packet_commitment(packet))]
        for key, value in checks:
            pv = await src.prove(key, height)
            assert pv.value == value
            client.verify_membership(height, key, value, Proof.decode(pv.proof), _now())
        absent = await src.prove(receipt_path(ChainId("dpos-park"), LaneId("lane-0"), packet.sequence), height)
        assert absent.value is None
        client.verify_non_membership(height, absent.key, Proof.decode(absent.proof), _now())
        with pytest.raises(NotFinalError):
            client.verify_membership(client.final_height + 1, key, value, Proof.decode(pv.proof), _now())


async def test_a_forced_fork_resolves_to_the_heavier_branch(net: Devnet) -> None:
    assert net.cfg is not None
    token = read_secret(admin_token_path(net.cfg)).hex()

    async def admin(node: str, method: str, params: dict[str, Any]) -> Any:
        c = net.client(CHAIN, node)
        c._admin_token = token
        async with c:
            return await c.call(method, params, admin=True)

    async def agreed_at(h: int) -> dict[str, Any] | None:
        sts = await _statuses(net)
        vals = [s for s in sts.values() if s is not None]
        if len(vals) == 2 and vals[0]["head"] == vals[1]["head"] and vals[0]["height"] >= h:
            return vals[0]
        return None

    base = await wait_for("one chain of height 3", lambda: agreed_at(3), 120)

    # partition: each farmer now farms its own branch
    for n in FARMERS:
        await admin(n, "admin.setPeers", {"peers": []})

    async def forked() -> bool:
        sts = await _statuses(net)
        return all(s is not None and s["height"] >= base["height"] + 2 for s in sts.values()) and \
            len({s["head"] for s in sts.values() if s is not None}) == 2

    await wait_for("two branches of 2+ blocks each", forked, 90)
    for n in FARMERS:
        await admin(n, "admin.setProducing", {"enabled": False})
    tips = {n: s for n, s in (await _statuses(net)).items() if s is not None}
    heavier = max(FARMERS, key=lambda n: (int(tips[n]["weight"]), -int(tips[n]["head"], 16)))
    lighter = next(n for n in FARMERS if n != heavier)

    # heal: the lighter farmer reorganises onto the heavier branch
    for n in FARMERS:
        other = next(m for m in FARMERS if m != n)
        await admin(n, "admin.addPeer", {"url": net.url(CHAIN, other)})

    async def converged() -> bool:
        sts = await _statuses(net)
        return all(s is not None and s["head"] == tips[heavier]["head"] for s in sts.values())

    await wait_for(f"both on {heavier}'s heavier branch", converged, 60)
    assert "reorg" in net.log_tail(CHAIN, lighter, 400)

    # production resumes on the one chain, which keeps finalising
    for n in FARMERS:
        await admin(n, "admin.setProducing", {"enabled": True})
    await wait_for("finality past the healed fork",
                   lambda: agreed_at(int(tips[heavier]["height"]) + 3), 120)
