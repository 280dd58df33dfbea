"""Forks on the parks while packets are in flight both ways, on real processes (issue #9).

The relayers' park node is the one that loses each fork, so they have fed the relay's light client the
branch that is then abandoned: the PoC park's two farmers are partitioned and the relayers' farmer builds a
branch shorter than the confirmation depth while the other builds a heavier one; the DPoS park's relayer
witness is cut off from the two others, which outgrow it above the last irreversible block. After each heal
the relayers must find the last header the client shares with the park's new branch and feed it from there
(``branch switch`` in their logs); every packet completes exactly once, the abandoned branch's transfers
are included again on the new one, supply is conserved and the clients stay active.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from relay.ops.keys import read_secret
from relay.ops.layout import admin_token_path
from tests.integration.harness import wait_for
from tests.integration.test_four_phases import DPOS, LANE, POC, RELAY, Net, started_net, voucher, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def fnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with started_net(tmp_path_factory.mktemp("forks"), [DPOS, POC], [{"lane": LANE, "a": DPOS, "b": POC}],
                     ["relayer-a", "relayer-b"]) as n:
        yield n


@pytest.fixture
async def live_forks(fnet: Net) -> Net:
    return await wait_ready(fnet)


class Admin:
    """The parks' admin RPC (peers, gossip, block production), as an operator uses it for maintenance."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.token = read_secret(admin_token_path(net.cfg)).hex()

    async def call(self, chain: str, node: str, method: str, params: dict[str, Any]) -> Any:
        c = self.net.d.client(chain, node)
        c._admin_token = self.token
        async with c:
            return await c.call(method, params, admin=True)

    async def peers(self, chain: str, node: str, others: list[str]) -> None:
        await self.call(chain, node, "admin.setPeers", {"peers": [self.net.url(chain, o) for o in others]})

    async def producing(self, chain: str, node: str, on: bool) -> None:
        await self.call(chain, node, "admin.setProducing", {"enabled": on})


async def _status(net: Net, chain: str, node: str) -> dict[str, Any]:
    async with net.d.client(chain, node) as c:
        st: dict[str, Any] = await c.call("status")
        return st


async def _client_holds_head_of(net: Net, chain: str, node: str) -> bool:
    """Whether the relay's client of ``chain`` holds ``node``'s current head header."""
    async with net.d.client(chain, node) as c:
        st = await c.call("status")
        header = (await c.call("getHeader", {"height": st["height"]}))["header"]
    async with net.d.client(RELAY, "op-a") as relay:
        held = await relay.call("getClientHolds", {"chain_id": chain, "headers": [header]})
    return bool(held[0])


def _relayer_logs(net: Net, names: tuple[str, ...] = ("relayer-a", "relayer-b")) -> str:
    return "".join((net.cfg.data_dir / "logs" / f"relayer-{n}.log").read_text(errors="replace") for n in names)


async def _send_both_ways(net: Net, n: int, base: int) -> list[str]:
    keys = []
    for i in range(n):
        keys.append(await net.send(DPOS, base + i))
        keys.append(await net.send(POC, base + 100 + i))
    return keys


async def test_poc_reorg_with_packets_in_flight_both_ways(live_forks: Net) -> None:
    net, admin = live_forks, Admin(live_forks)
    a, b = net.cfg.chain(POC).nodes  # the relayers read farmer-a: it is the one that must reorganise
    depth = int(net.cfg.chain(POC).params["confirmation_depth"])
    va, vb = await net.balance(POC, voucher(DPOS)), await net.balance(DPOS, voucher(POC))
    net.start_relayer("relayer-a")
    net.start_relayer("relayer-b")
    try:
        keys = await _send_both_ways(net, 2, 10)
        # partition the farmers, both paused; then farmer-a alone builds one block (holding a PoC transfer),
        # which the relayers feed to the relay's client: a branch shorter than the confirmation depth
        await net.wait_final(keys)  # the relayers have nothing left to submit to the parks
        for n in (a, b):
            await admin.producing(POC, n, False)
            await admin.peers(POC, n, [])
        base = (await _status(net, POC, a))["height"]
        keys.append(await net.send(DPOS, 20))
        poc_send = asyncio.create_task(net.send(POC, 120))

        async def in_mempool() -> bool:  # the only transaction: the relayers are idle on the parks
            return int((await _status(net, POC, a))["mempool"]) >= 1

        await wait_for("the PoC transfer in farmer-a's mempool", in_mempool, 30, poll_s=0.05)
        await admin.producing(POC, a, True)

        async def one_block() -> bool:
            return int((await _status(net, POC, a))["height"]) > base

        await wait_for("farmer-a's first block of its branch", one_block, 60, poll_s=0.05)
        await admin.producing(POC, a, False)
        keys.append(await poc_send)
        a_height = (await _status(net, POC, a))["height"]
        assert a_height - base < depth, "farmer-a's branch must stay below the confirmation depth"
        await wait_for("the relay's client fed farmer-a's branch",
                       lambda: _client_holds_head_of(net, POC, a), 60, poll_s=0.2)
        await admin.producing(POC, b, True)

        async def b_heavier() -> bool:
            return int((await _status(net, POC, b))["height"]) >= a_height + 2

        await wait_for("farmer-b's branch heavier", b_heavier, 60, poll_s=0.2)
        # heal before farmer-a farms again: a farmer resumed after a pause finds several deadlines already
        # passed and would outgrow the fork depth on its own branch before it syncs
        await admin.call(POC, a, "admin.addPeer", {"url": net.url(POC, b)})
        await admin.call(POC, b, "admin.addPeer", {"url": net.url(POC, a)})

        async def converged() -> bool:
            sa, sb = await _status(net, POC, a), await _status(net, POC, b)
            return sa["head"] == sb["head"] and sa["height"] > a_height

        await wait_for("farmer-a on farmer-b's branch", converged, 60)
        await admin.producing(POC, a, True)
        assert "reorg" in net.d.log_tail(POC, a, 400)
        keys += await _send_both_ways(net, 1, 30)
        rows = await net.wait_final(keys, timeout_s=240)
    finally:
        net.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert "poc-park: branch switch" in _relayer_logs(net)
    assert await net.balance(POC, voucher(DPOS)) == va + sum(10 + i for i in range(2)) + 20 + 30
    assert await net.balance(DPOS, voucher(POC)) == vb + sum(110 + i for i in range(2)) + 120 + 130
    assert len(set(keys)) == len(keys) == 8
    async with net.d.client(RELAY, "op-a") as relay:
        assert (await relay.call("getClientStatus", {"chain_id": POC}))["status"] == "active"
    await net.check_invariants()


async def test_dpos_fork_above_the_last_irreversible_block_with_packets_in_flight(live_forks: Net) -> None:
    net, admin = live_forks, Admin(live_forks)
    wa, wb, wc = net.cfg.chain(DPOS).nodes  # the relayers read witness-a: it is the one cut off
    va, vb = await net.balance(POC, voucher(DPOS)), await net.balance(DPOS, voucher(POC))
    switches_before = _relayer_logs(net).count("dpos-park: branch switch")
    net.start_relayer("relayer-a")
    net.start_relayer("relayer-b")
    try:
        keys = await _send_both_ways(net, 1, 40)
        await admin.peers(DPOS, wa, [])
        await admin.peers(DPOS, wb, [wc])
        await admin.peers(DPOS, wc, [wb])
        base = (await _status(net, DPOS, wa))["height"]

        async def a_branch_fed() -> bool:
            st = await _status(net, DPOS, wa)
            return st["height"] >= base + 1 and await _client_holds_head_of(net, DPOS, wa)

        await wait_for("the relay's client fed witness-a's branch", a_branch_fed, 60, poll_s=0.2)
        await admin.producing(DPOS, wa, False)
        a_height = (await _status(net, DPOS, wa))["height"]

        async def bc_longer() -> bool:
            return int((await _status(net, DPOS, wb))["height"]) >= a_height + 2

        await wait_for("witnesses b and c outgrow witness-a", bc_longer, 60, poll_s=0.2)
        for w in (wa, wb, wc):
            for o in (wa, wb, wc):
                if o != w:
                    await admin.call(DPOS, w, "admin.addPeer", {"url": net.url(DPOS, o)})

        async def converged() -> bool:
            sa, sb = await _status(net, DPOS, wa), await _status(net, DPOS, wb)
            return sa["head"] == sb["head"] and sa["height"] > a_height

        await wait_for("witness-a on the others' branch", converged, 60)
        await admin.producing(DPOS, wa, True)
        keys += await _send_both_ways(net, 1, 50)
        rows = await net.wait_final(keys, timeout_s=240)
    finally:
        net.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert _relayer_logs(net).count("dpos-park: branch switch") > switches_before
    assert await net.balance(POC, voucher(DPOS)) == va + 40 + 50
    assert await net.balance(DPOS, voucher(POC)) == vb + 140 + 150
    async with net.d.client(RELAY, "op-a") as relay:
        assert (await relay.call("getClientStatus", {"chain_id": DPOS}))["status"] == "active"
    await net.check_invariants()


