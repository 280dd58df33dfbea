"""One park down does not stall the others, on real processes (issue #9, fault isolation).

Three parks (DPoS, PoC, Ethereum) and one relayer: the Ethereum park's node is SIGKILLed (its anvil goes with
it) while a DPoS -> Ethereum packet is in flight. DPoS <-> PoC packets keep completing meanwhile: the relayer's
paths through the Ethereum park back off alone. Restarted, the Ethereum park gets its packet too; every packet
completes exactly once and supply is conserved on the DPoS <-> PoC lane.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from protocol.codec import decode_packet
from protocol.paths import commitment_path
from relay.ops.packets import packet_key
from relay.ops.parks import park_view
from tests.integration.harness import wait_for
from tests.integration.test_four_phases import DPOS, ETH, LANE, POC, USER, Net, started_net, voucher, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ETH_LANE = "lane-1"


@pytest.fixture(scope="module")
def tri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with started_net(tmp_path_factory.mktemp("park-down"), [DPOS, POC, ETH],
                     [{"lane": LANE, "a": DPOS, "b": POC}, {"lane": ETH_LANE, "a": DPOS, "b": ETH}],
                     ["relayer-a"]) as n:
        yield n


async def test_a_park_down_stalls_only_its_own_paths(tri: Net) -> None:
    net = await wait_ready(tri)
    eth = park_view(net.cfg, ETH)

    async def eth_up() -> bool:
        try:
            return int((await asyncio.to_thread(eth.status))["final_height"]) >= 1
        except OSError:
            return False

    await wait_for("the Ethereum park finalising", eth_up, 60)
    vb = await net.balance(POC, voucher(DPOS))
    net.start_relayer("relayer-a")
    try:
        to_eth = await asyncio.to_thread(net.views[DPOS].transfer, USER[DPOS], ETH, eth.account(USER[ETH]), 25,
                                         "kWh", ETH_LANE, int((time.time() + 600) * 1000))
        eth_key = packet_key(decode_packet(to_eth["packet"]))
        net.d.kill(ETH, net.cfg.chain(ETH).nodes[0])  # SIGKILL: its anvil dies with it (parent-death signal)
        keys = [await net.send(DPOS, 11), await net.send(POC, 12), await net.send(DPOS, 13)]
        rows = await net.wait_final(keys, timeout_s=180)
        assert {r["state"] for r in rows.values()} == {"completed"}
        seq = int(eth_key.split("/")[3])  # its target is down: still committed on its source, not settled
        assert await asyncio.to_thread(net.views[DPOS].query, commitment_path(ETH, ETH_LANE, seq).decode()) is not None
        net.d.start(ETH, net.cfg.chain(ETH).nodes[0])
        await wait_for("the Ethereum park back", eth_up, 60)
        rows = await net.wait_final([eth_key], timeout_s=180)
        assert rows[eth_key]["state"] == "completed"
    finally:
        net.stop_relayers()
    log = (net.cfg.data_dir / "logs" / "relayer-relayer-a.log").read_text(errors="replace")
    assert "unreachable" in log  # the relayer saw the park down, and went on with the others
    assert await net.balance(POC, voucher(DPOS)) == vb + 11 + 13
    # conservation on all three parks: DPoS's kWh escrow backs the vouchers on both lanes, PoC's those on DPoS
    dpos_escrow = await asyncio.to_thread(net.views[DPOS].escrow, "kWh")
    on_poc = await asyncio.to_thread(net.views[POC].voucher_supply, voucher(DPOS))
    on_eth = await asyncio.to_thread(eth.voucher_supply, f"{ETH_LANE}/{DPOS}/kWh")
    assert dpos_escrow == on_poc + on_eth and on_eth >= 25
    assert await asyncio.to_thread(net.views[POC].escrow, "kWh") == await asyncio.to_thread(
        net.views[DPOS].voucher_supply, voucher(POC))
