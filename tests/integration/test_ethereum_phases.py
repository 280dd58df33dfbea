"""The four phases between the Ethereum park and the DPoS park, on real processes (issue #4).

One devnet for the module: 3 DPoS witnesses, the Ethereum park's node (anvil at 1 s blocks, the
contracts deployed at start), 4 relay validators each running its attestor against the Ethereum node, and
relayer ``relayer-a``. Energy goes DPoS -> Ethereum (escrowed at home, voucher minted by the bridge's
ERC-20 clone), the voucher comes home (burned on Ethereum, unescrowed on DPoS), native Ethereum kWh goes to
DPoS, and a transfer to an account Ethereum cannot hold is refunded at home through an error ack. After
every step: supply conserved per denomination on both parks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.common.park import ParkTarget
from adapters.common.rpc import JsonRpcClient
from protocol.codec import decode_packet
from relay.config import DeploymentConfig
from relay.devnet import account_key_path
from relay.keys import ed25519_signer
from relay.parks import EthPark
from tests.integration.harness import REPO, Devnet, eth_height, free_port_block, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DPOS, ETH, RELAY, LANE = "dpos-park", "eth-park", "relay", "lane-0"
VOUCHER_ON_ETH = f"{LANE}/{DPOS}/kWh"
VOUCHER_ON_DPOS = f"{LANE}/{ETH}/kWh"


class EthNet:
    def __init__(self, d: Devnet) -> None:
        assert d.cfg is not None
        self.d = d
        self.cfg: DeploymentConfig = d.cfg
        self.eth_url = self.cfg.chain(ETH).url_of("anvil")
        self.relayer: subprocess.Popen[bytes] | None = None
        self.eth = EthPark(self.cfg, self.cfg.chain(ETH))  # the operator tools' view: ERC-20 balances, escrow

    def address(self, name: str) -> str:
        return self.eth.account(name)

    def start_relayer(self, name: str = "relayer-a") -> None:
        log = open(self.cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
        self.relayer = subprocess.Popen(
            [sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(self.cfg.path), "--name", name],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    async def eth_balance(self, name: str, denom: str = "kWh") -> int:
        return int(await asyncio.to_thread(self.eth.balance, name, denom))

    async def eth_supply(self, denom: str) -> int:
        return int(await asyncio.to_thread(self.eth.voucher_supply, denom))

    async def dpos(self, method: str, params: dict[str, Any]) -> Any:
        async with JsonRpcClient(self.cfg.chain(DPOS).url_of("witness-a"), side=DPOS, timeout_s=10) as c:
            return await c.call(method, params)

    async def dpos_balance(self, account: str, denom: str = "kWh") -> int:
        return int((await self.dpos("getBalance", {"account": account, "denom": denom}))["amount_wh"])

    async def dpos_int(self, key: str) -> int:
        v = (await self.dpos("query", {"key": key}))["value"]
        return int(bytes.fromhex(v).decode()) if v is not None else 0

    async def send_from_dpos(self, sender: str, receiver: str, amount_wh: int, denom: str = "kWh") -> str:
        signer = ed25519_signer(account_key_path(self.cfg, DPOS, sender))
        async with JsonRpcClient(self.cfg.chain(DPOS).url_of("witness-a"), side=DPOS, timeout_s=10) as c:
            h = await ParkTarget(c, DPOS, sender, signer).submit(
                "bridge.send", {"dst_chain": ETH, "lane": LANE, "kind": "energy", "receiver": receiver,
                                "denom": denom, "amount_wh": amount_wh,
                                "timeout_timestamp_ms": int((time.time() + 600) * 1000)})
            res = await wait_for("send on dpos", lambda: c.call("getTxResult", {"hash": h}), 60)
            assert res["ok"], res
            evs = await c.call("getEvents", {"from": res["height"], "to": res["height"], "type": "send_packet"})
            p = decode_packet(bytes.fromhex(next(e for e in evs if e["tx"] == h)["packet"]))
            return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"

    async def send_from_eth(self, sender: str, receiver: str, amount_wh: int, denom: str = "kWh") -> str:
        sent = await asyncio.to_thread(self.eth.transfer, sender, DPOS, receiver, amount_wh, denom, LANE,
                                       int((time.time() + 600) * 1000))
        p = decode_packet(sent["packet"])
        return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"

    async def outcome_settled(self, key: str) -> bool:
        """The relay chain holds the packet's outcome and its source deleted the commitment (phase 4 done)."""
        src, dst, lane, seq = key.split("/")
        async with JsonRpcClient(self.cfg.relay_url("op-a"), side=RELAY, timeout_s=10) as r:
            outcome = (await r.call("query", {"key": f"relay/outcome/{key}"}))["value"]
        if outcome is None:
            return False
        if src == DPOS:
            return (await self.dpos("query", {"key": f"commitments/{dst}/{lane}/{seq}"}))["value"] is None
        return await asyncio.to_thread(self.eth.query, f"commitments/{dst}/{lane}/{seq}") is None

    async def wait_settled(self, key: str, timeout_s: float = 180) -> None:
        await wait_for(f"packet {key} settled on its source", lambda: self.outcome_settled(key), timeout_s, 0.5)

    async def check_conservation(self) -> None:
        """Escrowed at home == vouchers outstanding on the other park, both ways."""
        assert await self.dpos_int("escrow/kWh") == await self.eth_supply(VOUCHER_ON_ETH)
        eth_escrow = await asyncio.to_thread(self.eth.escrow, "kWh")
        assert eth_escrow == await self.dpos_int(f"supply/{VOUCHER_ON_DPOS}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EthNet]:
    root: Path = tmp_path_factory.mktemp("eth-phases")
    d = Devnet(root, chains=[
        {"id": DPOS, "kind": "dpos", "nodes": ["witness-a", "witness-b", "witness-c"], "block_interval_ms": 500,
         "maintenance_interval_blocks": 1000, "accounts": {"alice": 5_000_000, "operator": 0}},
        {"id": ETH, "kind": "ethereum", "base_port": free_port_block(1), "confirmation_depth": 2,
         "accounts": {"erin": 5_000_000, "operator": 0}},
    ], lanes=[{"lane": LANE, "a": DPOS, "b": ETH}],
        relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
               "block_interval_ms": 300},
        relayers=["relayer-a"])
    d.write()
    d.start_all()
    n = EthNet(d)
    try:
        yield n
    finally:
        if n.relayer is not None and n.relayer.poll() is None:
            n.relayer.terminate()
            n.relayer.wait(timeout=20)
        d.stop_all()


@pytest.fixture
async def live(net: EthNet) -> AsyncIterator[EthNet]:
    async def ready() -> bool:
        dpos = await status(net.cfg.chain(DPOS).url_of("witness-a"))
        relay = await status(net.cfg.relay_url("op-a"))
        eth = await eth_height(net.eth_url)
        return bool(dpos and dpos["final_height"] >= 2 and relay and relay["final_height"] >= 2 and eth and eth >= 3)

    await wait_for("every chain producing", ready, 120)
    if net.relayer is None:
        net.start_relayer()
    yield net


async def test_energy_dpos_to_ethereum_and_the_voucher_home(live: EthNet) -> None:
    erin, alice0 = live.address("erin"), await live.dpos_balance("alice")
    key = await live.send_from_dpos("alice", erin, 5_000)
    await live.wait_settled(key)
    assert await live.eth_balance("erin", VOUCHER_ON_ETH) == 5_000
    assert await live.dpos_balance("alice") == alice0 - 5_000
    await live.check_conservation()

    back = await live.send_from_eth("erin", "alice", 2_000, VOUCHER_ON_ETH)
    await live.wait_settled(back)
    assert await live.eth_balance("erin", VOUCHER_ON_ETH) == 3_000
    assert await live.dpos_balance("alice") == alice0 - 3_000
    await live.check_conservation()


async def test_native_ethereum_energy_to_dpos(live: EthNet) -> None:
    erin0 = await live.eth_balance("erin")
    key = await live.send_from_eth("erin", "alice", 1_500)
    await live.wait_settled(key)
    assert await live.eth_balance("erin") == erin0 - 1_500
    assert await live.dpos_balance("alice", VOUCHER_ON_DPOS) == 1_500
    await live.check_conservation()


async def test_a_receiver_ethereum_cannot_hold_is_refunded_at_home(live: EthNet) -> None:
    alice0 = await live.dpos_balance("alice")
    key = await live.send_from_dpos("alice", "not-an-address", 700)
    await live.wait_settled(key)
    assert await live.dpos_balance("alice") == alice0  # error ack receiver.invalid -> refund
    await live.check_conservation()
