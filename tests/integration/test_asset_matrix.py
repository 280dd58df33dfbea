"""Every asset kind on every ordered pair of the four parks, on one shared devnet (issue 12).

One devnet runs all four parks (DPoS, PoC, Ethereum, Fabric), a lane between each pair (6 lanes), four relay
validators and one relayer. For each of the 12 ordered pairs the matrix sends, per asset kind, a packet that must
complete (the happy path), one the target refuses (an error ack, refunded at home) and one that times out before
any relayer runs (refunded on proof of no receipt). Every case is committed up front and the relayer then clears
them together, so the 12 x kinds x 3 cases cost one devnet and one drain instead of one devnet each; each case is
still checked on its own (its packet's final state, its ack, the balances it touched), and the invariants are
checked at the end: no packet left non-final, every denomination's escrow at its home equal to the vouchers out,
per hop. A three-park round trip (a voucher of A held on B moves on to C, then back along its trace) runs after.
"""

from __future__ import annotations

import os

# the Fabric park's adapter (hfc) needs the pure-Python protobuf, chosen before protobuf's first import
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol.codec import decode_packet
from relay.ops import packet_key
from relay.parks import park_view
from tests.integration.harness import wait_for
from tests.integration.test_four_phases import (
    DPOS,
    ETH,
    FABRIC,
    FINAL_STATES,
    POC,
    USER,
    Net,
    started_net,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARKS = [DPOS, POC, ETH, FABRIC]
LANES = {frozenset(p): f"lane-{i}" for i, p in enumerate(itertools.combinations(PARKS, 2))}
ORDERED = [(a, b) for a in PARKS for b in PARKS if a != b]
TIMEOUT_S = 4
"""Timeout of the cases that must time out: past on every target before the relayer starts."""


def lane(a: str, b: str) -> str:
    return LANES[frozenset((a, b))]


def voucher(denom: str, src: str, dst: str) -> str:
    """The denomination ``dst`` mints for ``denom`` arriving from ``src`` (SPEC §2.3)."""
    return f"{lane(src, dst)}/{src}/{denom}"


@dataclass
class Case:
    kind: str
    outcome: str
    """``completed`` (happy path), ``refused`` (error ack) or ``timed_out``."""
    src: str
    dst: str
    key: str = ""
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.src}->{self.dst}-{self.outcome}"


class Matrix:
    """The shared devnet, the cases committed on it, and how each ended."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.cases: dict[str, Case] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.before: dict[tuple[str, str, str], int] = {}

    async def balance(self, chain: str, denom: str, who: str | None = None) -> int:
        return int(await asyncio.to_thread(self.net.views[chain].balance, who or USER[chain], denom))

    async def transfer(self, src: str, dst: str, amount_wh: int, *, denom: str = "kWh", receiver: str | None = None,
                       timeout_s: float = 600) -> str:
        view = self.net.views[src]
        to = self.net.views[dst].account(receiver or USER[dst])
        sent = await asyncio.to_thread(view.transfer, USER[src], dst, to, amount_wh, denom, lane(src, dst),
                                       int((time.time() + timeout_s) * 1000), wait_final=False)
        return packet_key(decode_packet(sent["packet"]))

    async def commit_energy(self, outcome: str) -> None:
        """Phase 1 of the energy case ``outcome`` on every ordered pair, the sources in parallel (each source's
        cases one after another: one sender per lane direction keeps packet keys stable, see ``Net.send``)."""
        amounts = {"completed": 1_000, "refused": 70, "timed_out": 9}

        async def from_source(src: str) -> None:
            for dst in PARKS:
                if dst == src:
                    continue
                c = Case("energy", outcome, src, dst)
                kw: dict[str, Any] = {}
                if outcome == "refused":
                    kw["receiver"] = "nobody-here"  # an account the target cannot credit
                if outcome == "timed_out":
                    kw["timeout_s"] = TIMEOUT_S
                c.key = await self.transfer(src, dst, amounts[outcome], **kw)
                self.cases[c.name] = c

        await asyncio.gather(*(from_source(s) for s in PARKS))

    async def drain(self, timeout_s: float = 420) -> None:
        """Until every case's packet is final; their rows kept."""
        keys = [c.key for c in self.cases.values()]

        async def all_final() -> bool:
            rows = await asyncio.gather(*(self.net.packet(k) for k in keys if k not in self.rows
                                          or self.rows[k]["state"] not in FINAL_STATES))
            for r in rows:
                self.rows[r["packet"]] = r
            return all(self.rows.get(k, {}).get("state") in FINAL_STATES for k in keys)

        await wait_for(f"{len(keys)} matrix packets final", all_final, timeout_s, poll_s=1.0)

    async def check_energy_conservation(self, denoms: dict[str, list[str]]) -> None:
        """For each park H and each denomination D it escrows (``denoms[H]``): escrow of D at H == the vouchers of
        D that the other parks hold, per hop (SPEC §2.3)."""
        for home, ds in denoms.items():
            for d in ds:
                escrowed = await asyncio.to_thread(self.net.views[home].escrow, d)
                out = 0
                for other in PARKS:
                    if other != home:
                        out += await asyncio.to_thread(self.net.views[other].voucher_supply, voucher(d, home, other))
                assert escrowed == out, f"{home}'s {d}: {escrowed} escrowed, {out} vouchers on the other parks"


@pytest.fixture(scope="module")
def matrix_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    lanes = [{"lane": name, "a": a, "b": b} for (a, b) in itertools.combinations(PARKS, 2)
             for name in [lane(a, b)]]
    with started_net(tmp_path_factory.mktemp("asset-matrix"), PARKS, lanes, ["relayer-a", "relayer-b"]) as n:
        n.views.update({c: park_view(n.cfg, c) for c in PARKS if c not in n.views})
        yield n


async def _ready(net: Net) -> None:
    """Every chain of the shared devnet finalising (``wait_ready`` looks at a pair: look at all four)."""
    for a, b in ((DPOS, POC), (ETH, FABRIC)):
        net.a, net.b = a, b
        await wait_ready(net)
    net.a, net.b = DPOS, POC


@pytest.fixture(scope="module")
def matrix(matrix_net: Net) -> Matrix:
    """Every case committed, drained by one relayer, and their rows read (once for the module)."""
    return asyncio.run(_run_matrix(matrix_net))


async def _run_matrix(net: Net) -> Matrix:
    await _ready(net)
    m = Matrix(net)
    for src, dst in ORDERED:
        m.before[(src, dst, "kWh")] = await m.balance(src, "kWh")
        m.before[(src, dst, "voucher")] = await m.balance(dst, voucher("kWh", src, dst))
    # the cases that must time out first, while no relayer runs; then wait until each target is past them
    await m.commit_energy("timed_out")
    links = await net.links()
    try:
        for c in m.cases.values():
            target = links.parks[c.dst].source
            timeout_ms = (await net.packet(c.key))["timeout_timestamp_ms"]

            async def past(target: Any = target, timeout_ms: int = timeout_ms) -> bool:
                return bool(await target.header_time_ms(await target.latest_height()) > timeout_ms)

            await wait_for(f"{c.dst}'s block time past {c.key}'s timeout", past, 60)
    finally:
        await links.close_links()
    await m.commit_energy("completed")
    await m.commit_energy("refused")
    net.start_relayer("relayer-a")
    try:
        await m.drain()
    finally:
        net.stop_relayers()
    return m


ENERGY_CASES = [f"energy-{s}->{d}-{o}" for s, d in ORDERED for o in ("completed", "refused", "timed_out")]


@pytest.mark.parametrize("name", ENERGY_CASES)
async def test_energy_case(matrix: Matrix, name: str) -> None:
    c = matrix.cases[name]
    row = matrix.rows[c.key]
    if c.outcome == "completed":
        assert row["state"] == "completed" and row["ack"] == {"success": True, "code": "ok"}, row
    elif c.outcome == "refused":
        code = "receiver.invalid" if matrix.net.kind(c.dst) == "ethereum" else "receiver.unknown"
        assert row["state"] == "refunded" and row["ack"] == {"success": False, "code": code}, row
    else:
        assert row["state"] == "refunded" and row["ack"] is None and row["verified"] is False, row


async def test_energy_balances_and_conservation_after_the_matrix(matrix: Matrix) -> None:
    """Each source paid exactly its completed transfers (the refused and timed-out ones came back), each target
    holds exactly the vouchers of the completed ones, and every home's escrow equals the vouchers out."""
    sent_by = {p: 0 for p in PARKS}
    for src, dst in ORDERED:
        sent_by[src] += 1_000
        got = await matrix.balance(dst, voucher("kWh", src, dst))
        assert got == matrix.before[(src, dst, "voucher")] + 1_000, f"{dst}'s vouchers from {src}: {got}"
    for p in PARKS:
        first = next(matrix.before[(s, d, "kWh")] for s, d in ORDERED if s == p)
        assert await matrix.balance(p, "kWh") == first - sent_by[p], p
    await matrix.check_energy_conservation({p: ["kWh"] for p in PARKS})
    from relay.ops import list_packets

    rows = await asyncio.to_thread(list_packets, matrix.net.cfg)
    assert not [r["packet"] for r in rows if r["state"] not in FINAL_STATES]


async def test_energy_three_park_round_trip_unwinds_hop_by_hop(matrix: Matrix) -> None:
    """A voucher of DPoS held on Ethereum moves on to Fabric and back along its trace, then home: each hop burns or
    unescrows what the previous one escrowed or minted, and nothing stays escrowed on any hop."""
    net, a, b, c = matrix.net, DPOS, ETH, FABRIC
    on_b = voucher("kWh", a, b)
    on_c = voucher(on_b, b, c)
    a0, b0, c0 = await matrix.balance(a, "kWh"), await matrix.balance(b, on_b), await matrix.balance(c, on_c)
    esc_a, esc_b = (await asyncio.to_thread(net.views[a].escrow, "kWh"),
                    await asyncio.to_thread(net.views[b].escrow, on_b))
    net.start_relayer("relayer-a")
    try:
        hops = [(a, b, "kWh", 600), (b, c, on_b, 600), (c, b, on_c, 600), (b, a, on_b, 600)]
        for i, (src, dst, denom, amount) in enumerate(hops):
            key = await matrix.transfer(src, dst, amount, denom=denom)
            rows = await net.wait_final([key], timeout_s=240)
            assert rows[key]["state"] == "completed", (i, rows[key])
            if i == 1:  # the voucher is two hops from home: escrowed on the middle park, minted on the last
                assert await matrix.balance(c, on_c) == c0 + 600
                assert await asyncio.to_thread(net.views[b].escrow, on_b) == esc_b + 600
                await matrix.check_energy_conservation({a: ["kWh"], b: [on_b]})
    finally:
        net.stop_relayers()
    assert await matrix.balance(a, "kWh") == a0
    assert await matrix.balance(b, on_b) == b0
    assert await matrix.balance(c, on_c) == c0
    assert await asyncio.to_thread(net.views[a].escrow, "kWh") == esc_a
    assert await asyncio.to_thread(net.views[b].escrow, on_b) == esc_b
    await matrix.check_energy_conservation({a: ["kWh"], b: [on_b]})

