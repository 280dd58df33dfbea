"""The members' bidding, computed off chain (docs/research.md#seed-001).

Two behavioural models, both over the members of :class:`Member` (a bus, a side, the energy it forecasts to sell or
need in the round, and its reservation price: a seller's marginal cost or the feed-in tariff it gets otherwise, a
buyer's value or the retail price it pays the grid otherwise, so an unmatched member has utility 0).

**Risk-attitude bilateral bidding** (:class:`RiskAttitudeAgent`). A member believes a price ``p`` is accepted with
probability ``P(p) = 1 / (1 + exp((p − p̂)/σ))`` for a seller (``exp((p̂ − p)/σ)`` for a buyer), ``p̂`` its estimate
of the market's clearing price, and bids the price that maximises its expected utility ``P(p) · u(profit)`` with
``u(x) = x^α``: ``α`` < 1 risk-averse (concave: it trades a margin for certainty), 1 neutral, > 1 risk-seeking
(:data:`ATTITUDE_ALPHA`). After each round it adapts ``p̂`` from its initial parameters: towards the round's
volume-weighted clearing price (step ``λ``), and by ``λ · σ · unfilled share`` towards the other side when part of
its energy did not trade.

**Best-response dynamics** (:func:`best_response_dynamics`). A non-cooperative game whose strategies are the
members' prices and whose payoffs are what the on-chain clearing gives them (:func:`.feeder.clear`, the contract's
rule): a seller earns ``Σ q · (price − cost)``, a buyer ``Σ q · (value − price − charge)`` — the utility corrected by
the use-of-system charge it pays. Members update in turn (Gauss-Seidel), each to its best price on a grid of step
``price_step`` given the others' (keeping its own price on a tie), until a full sweep changes no price: no member
gains by changing its bid alone (a pure Nash equilibrium on the grid), or ``max_sweeps`` pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from chains.ethereum.market.feeder import Bid, Feeder, Trade, clear

__all__ = ["ATTITUDE_ALPHA", "BestResponseResult", "Member", "RiskAttitudeAgent", "best_response_dynamics",
           "utilities"]

ATTITUDE_ALPHA = {"averse": 0.5, "neutral": 1.0, "seeking": 2.0}
"""The exponent of ``u(x) = x^α`` per risk attitude."""


@dataclass(frozen=True)
class Member:
    name: str
    bus: int
    seller: bool
    quantity_wh: int
    reservation: int
    """wei per Wh: a seller's lowest ask (cost or feed-in tariff), a buyer's highest bid (value or retail price)."""
    attitude: str = "neutral"


@dataclass
class RiskAttitudeAgent:
    """A member bidding by its risk attitude; ``p_hat`` adapts each round (module docstring)."""

    member: Member
    p_hat: float
    sigma: float
    lam: float
    price_floor: int
    price_ceiling: int

    @property
    def alpha(self) -> float:
        return ATTITUDE_ALPHA[self.member.attitude]

    def accept_probability(self, price: int) -> float:
        z = (price - self.p_hat) / self.sigma if self.member.seller else (self.p_hat - price) / self.sigma
        return 1.0 / (1.0 + math.exp(max(min(z, 60.0), -60.0)))

    def bid_price(self) -> int:
        """The price of largest expected utility (ties: the one nearest the reservation)."""
        m = self.member
        prices = (range(m.reservation, self.price_ceiling + 1) if m.seller
                  else range(m.reservation, self.price_floor - 1, -1))
        best, best_eu = m.reservation, -1.0
        for p in prices:
            profit = p - m.reservation if m.seller else m.reservation - p
            eu = self.accept_probability(p) * (profit ** self.alpha if profit > 0 else 0.0)
            if eu > best_eu:
                best, best_eu = p, eu
        return best

    def bid(self) -> Bid:
        return Bid(self.member.name, self.member.bus, self.member.seller, self.member.quantity_wh, self.bid_price())

    def observe(self, market_price: float | None, traded_wh: int) -> None:
        """Adapt after a round: ``market_price`` the round's volume-weighted price (None: nothing cleared)."""
        if market_price is not None:
            self.p_hat += self.lam * (market_price - self.p_hat)
        unfilled = 1.0 - traded_wh / self.member.quantity_wh
        self.p_hat += (-1 if self.member.seller else 1) * self.lam * self.sigma * unfilled


def utilities(members: Sequence[Member], trades: Sequence[Trade]) -> list[int]:
    """Each member's payoff (wei) from the trades of a clearing of bids in ``members`` order."""
    out = [0] * len(members)
    for t in trades:
        s, b = members[t.seller_bid], members[t.buyer_bid]
        out[t.seller_bid] += t.quantity_wh * (t.price - s.reservation)
        out[t.buyer_bid] += t.quantity_wh * (b.reservation - t.price - t.charge)
    return out


@dataclass
class BestResponseResult:
    prices: list[int]
    converged: bool
    sweeps: int
    """Full sweeps run; the last one changed no price if ``converged``."""
    changes_per_sweep: list[int] = field(default_factory=list)
    utility_per_sweep: list[list[int]] = field(default_factory=list)
    """Each member's utility after each sweep."""
    trades: list[Trade] = field(default_factory=list)


def _bids(members: Sequence[Member], prices: Sequence[int]) -> list[Bid]:
    return [Bid(m.name, m.bus, m.seller, m.quantity_wh, p) for m, p in zip(members, prices, strict=True)]


def best_response_dynamics(feeder: Feeder, members: Sequence[Member], charge_rate: int, initial: Sequence[int],
                           *, price_floor: int, price_ceiling: int, price_step: int = 1,
                           max_sweeps: int = 50) -> BestResponseResult:
    """Iterate best responses from the prices ``initial`` (module docstring)."""
    prices = list(initial)
    result = BestResponseResult(prices, False, 0)
    for _ in range(max_sweeps):
        changes = 0
        for i, m in enumerate(members):
            grid = (range(m.reservation, price_ceiling + 1, price_step) if m.seller
                    else range(m.reservation, price_floor - 1, -price_step))
            current = prices[i]
            best_p = current
            best_u = utilities(members, clear(feeder, _bids(members, prices), charge_rate)[0])[i]
            for p in grid:
                if p == current:
                    continue
                prices[i] = p
                u = utilities(members, clear(feeder, _bids(members, prices), charge_rate)[0])[i]
                if u > best_u or (u == best_u and best_p != current and abs(p - current) < abs(best_p - current)):
                    best_p, best_u = p, u
            prices[i] = best_p
            changes += best_p != current
        result.sweeps += 1
        result.changes_per_sweep.append(changes)
        trades = clear(feeder, _bids(members, prices), charge_rate)[0]
        result.utility_per_sweep.append(utilities(members, trades))
        if changes == 0:
            result.converged = True
            break
    result.prices = prices
    result.trades = clear(feeder, _bids(members, prices), charge_rate)[0]
    return result
