"""The park's radial feeder and the clearing rule of ``EnergyMarket.clear``, in Python.

The contract is the market; this mirror lets the off-chain agents evaluate a bid before they send it (best
response needs "what would the market do with my bid"), and the tests compare the two on the same bids (they
must agree trade for trade). Integer arithmetic exactly as the contract: energy in Wh, prices in wei per Wh,
charge per Wh = ``rate × distance_m // 1000``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Bid", "Curtailment", "Feeder", "Line", "Trade", "clear"]


@dataclass(frozen=True)
class Line:
    """Bus ``bus`` and the line from it to its ``parent`` (bus 0, the substation, is its own parent)."""

    bus: int
    parent: int
    length_m: int
    limit_wh: int


@dataclass(frozen=True)
class Feeder:
    """A radial feeder: buses 0..n-1 added in order, each behind an earlier one (``EnergyMarket.setBus``)."""

    lines: tuple[Line, ...]
    depth: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _dist: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        depth: list[int] = []
        for i, ln in enumerate(self.lines):
            if ln.bus != i or (i == 0 and ln.parent != 0) or (i > 0 and not 0 <= ln.parent < i):
                raise ValueError(f"bus {i}: buses are numbered in order, each behind an earlier one")
            depth.append(0 if i == 0 else depth[ln.parent] + 1)
        object.__setattr__(self, "depth", tuple(depth))
        n = len(self.lines)
        dist = tuple(tuple(sum(self.lines[x].length_m for x, _ in self._walk(a, b)) for b in range(n))
                     for a in range(n))
        object.__setattr__(self, "_dist", dist)

    def _walk(self, a: int, b: int) -> list[tuple[int, int]]:
        """Lines on the path from ``a`` to ``b``: (bus of the line, +1 upwards / -1 downwards)."""
        out: list[tuple[int, int]] = []
        while a != b:
            if self.depth[a] >= self.depth[b]:
                out.append((a, 1))
                a = self.lines[a].parent
            else:
                out.append((b, -1))
                b = self.lines[b].parent
        return out

    def distance(self, a: int, b: int) -> int:
        """Electrical distance (m) between two buses."""
        return self._dist[a][b]

    def lateral(self, bus: int) -> int:
        """The first bus behind the substation on the way to ``bus`` (its lateral); 0 for the substation."""
        while bus != 0 and self.lines[bus].parent != 0:
            bus = self.lines[bus].parent
        return bus

    def headroom(self, flow: Sequence[int], a: int, b: int, want: int) -> tuple[int, int]:
        """As ``EnergyMarket._headroom``: the most (≤ want) that can flow a → b, and the first binding line."""
        best, line = want, 0
        for x, sign in self._walk(a, b):
            room = self.lines[x].limit_wh - flow[x] if sign > 0 else self.lines[x].limit_wh + flow[x]
            if room < best:
                best, line = max(room, 0), x
        return best, line

    def carry(self, flow: list[int], a: int, b: int, q: int) -> None:
        for x, sign in self._walk(a, b):
            flow[x] += sign * q


@dataclass(frozen=True)
class Bid:
    member: str
    bus: int
    seller: bool
    quantity_wh: int
    price: int
    """wei per Wh: a seller's ask, a buyer's most (use-of-system charge included)."""


@dataclass(frozen=True)
class Trade:
    seller_bid: int
    buyer_bid: int
    quantity_wh: int
    price: int
    """To the seller (wei/Wh)."""
    charge: int
    """Use-of-system charge (wei/Wh), paid by the buyer to the network operator."""
    distance_m: int


@dataclass(frozen=True)
class Curtailment:
    seller_bid: int
    buyer_bid: int
    wanted_wh: int
    cleared_wh: int
    line: int


def clear(feeder: Feeder, bids: Sequence[Bid], charge_rate: int) -> tuple[list[Trade], list[Curtailment]]:
    """``EnergyMarket.clear``: repeatedly the (seller, buyer) pair of largest surplus ``bid − ask − charge`` (ties:
    shorter distance, then earlier seller, then earlier buyer), curtailed to the lines' headroom."""
    n = len(bids)
    left = [b.quantity_wh for b in bids]
    sellers = [i for i in range(n) if bids[i].seller]
    buyers = [j for j in range(n) if not bids[j].seller]
    dist = {(i, j): feeder.distance(bids[i].bus, bids[j].bus) for i in sellers for j in buyers}
    charge = {k: charge_rate * d // 1000 for k, d in dist.items()}
    blocked: set[tuple[int, int]] = set()
    flow = [0] * len(feeder.lines)
    trades: list[Trade] = []
    curtailed: list[Curtailment] = []
    while True:
        best: tuple[int, int] | None = None
        best_s = best_d = 0
        for i in sellers:
            if left[i] == 0:
                continue
            for j in buyers:
                if left[j] == 0 or (i, j) in blocked:
                    continue
                cost = bids[i].price + charge[(i, j)]
                if bids[j].price < cost:
                    continue
                s = bids[j].price - cost
                if best is None or s > best_s or (s == best_s and dist[(i, j)] < best_d):
                    best, best_s, best_d = (i, j), s, dist[(i, j)]
        if best is None:
            break
        i, j = best
        want = min(left[i], left[j])
        q, line = feeder.headroom(flow, bids[i].bus, bids[j].bus, want)
        if q < want:
            curtailed.append(Curtailment(i, j, want, q, line))
            blocked.add(best)
            if q == 0:
                continue
        feeder.carry(flow, bids[i].bus, bids[j].bus, q)
        left[i] -= q
        left[j] -= q
        price = bids[i].price + best_s // 2
        trades.append(Trade(i, j, q, price, charge[best], dist[best]))
    return trades, curtailed
