"""The Fabric park's market, for the CLI (``parkrelay market fabric-park ...``), the demo and tests: one method per
market function of the bridge chaincode (chains/fabric/chaincode/market.py; chains/fabric/SPEC.md §F1).

:class:`FabricMarket` wraps a :class:`~adapters.fabric.target.FabricTarget` (its identity signs: submits are
endorsed by both organisations, ordered and tracked to the commit, a refusal raises its typed error before anything
is ordered) and reads with queries on the gateway's peers. Submit methods return the chaincode's events.

Private terms (bilateral contracts): :func:`contract_terms` builds the canonical terms document and its hash;
:meth:`FabricMarket.propose_contract`, :meth:`~FabricMarket.accept_contract` and
:meth:`~FabricMarket.settle_contract` send it in the proposal's **transient map** (key ``terms``), so it reaches the
endorsing peers and never the transaction; the public ledger keeps its SHA-256 and each party's organisation its
implicit collection copy. :meth:`FabricMarket.terms` reads the terms back from a peer of the caller's own
organisation (only its members hold them).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from adapters.fabric.target import FabricTarget

__all__ = ["FabricMarket", "contract_terms"]

Events = list[dict[str, Any]]


def contract_terms(contract_id: str, seller: str, buyer: str, quantity_kwh: int, price: int,
                   salt: str | None = None) -> tuple[bytes, str]:
    """The canonical terms document of a bilateral contract (what the parties agreed offline) and its SHA-256 hex.
    A random salt (32 hex characters) unless given: without one a price and quantity could be guessed from the hash.
    Both parties must use the same bytes: exchange the document, not the fields."""
    doc = {"contract_id": contract_id, "seller": seller, "buyer": buyer, "quantity_kwh": quantity_kwh,
           "price": price, "salt": salt if salt is not None else secrets.token_hex(16)}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return raw, hashlib.sha256(raw).hexdigest()


class FabricMarket:
    """The market functions as one identity (``target``'s) of a Fabric park."""

    def __init__(self, target: FabricTarget) -> None:
        self.target = target

    async def _submit(self, fn: str, args: dict[str, Any], terms: bytes | None = None) -> Events:
        return (await self.target.call(fn, args, transient={"terms": terms} if terms is not None else None))[1]

    async def _query(self, fn: str, args: dict[str, Any], *, own_org: bool = False) -> Any:
        gw = self.target.gateway
        peers = [p for p in gw.read_peers if gw.org_of.get(p) == gw.msp_id] if own_org else None
        raw = await gw.query(fn, [json.dumps(args, sort_keys=True, separators=(",", ":"))], peers=peers or None)
        return json.loads(raw)

    # -- access (the regulator: the park operator) -------------------------------------------------------------

    async def certify(self, account: str, role: str, *, stations: list[str] | None = None,
                      reputation: dict[str, str] | None = None) -> Events:
        """Regulator: certify ``account`` for ``role`` (``user``, ``sales``, ``trader``, ``station``; a station
        operator with its ``stations``), optionally on imported reputation ``{src_chain, subject, model}``."""
        args: dict[str, Any] = {"account": account, "role": role}
        if stations is not None:
            args["stations"] = stations
        if reputation is not None:
            args["reputation"] = reputation
        return await self._submit("market.certify", args)

    async def revoke(self, account: str) -> Events:
        """Regulator: revoke ``account``'s certification."""
        return await self._submit("market.revoke", {"account": account})

    async def certification(self, account: str) -> Any:
        return await self._query("market.certification", {"account": account})

    # -- power-consumption agreements ------------------------------------------------------------------------

    async def publish_plan(self, plan_id: str, prices: dict[str, int], fixed_fee: int) -> Events:
        """Sales company: publish (or update) an agreement plan: a price per band (peak, flat, valley) and a fee."""
        return await self._submit("market.publish_plan", {"plan_id": plan_id, "prices": prices,
                                                          "fixed_fee": fixed_fee})

    async def quote(self, profile: dict[str, int]) -> Any:
        """The published plans ranked by what ``profile`` (kWh per band) would cost under each."""
        return await self._query("market.quote", {"profile": profile})

    async def choose_plan(self, profile: dict[str, int]) -> Events:
        """Small or micro user: sign the agreement whose plan costs ``profile`` least."""
        return await self._submit("market.choose_plan", {"profile": profile})

    async def agreement(self, account: str) -> Any:
        return await self._query("market.agreement", {"account": account})

    # -- bilateral contracts with private terms -------------------------------------------------------------------

    async def propose_contract(self, contract_id: str, terms: bytes) -> Events:
        """Trader or sales company: commit the terms agreed offline (:func:`contract_terms`)."""
        return await self._submit("market.propose_contract", {
            "contract_id": contract_id, "terms_sha256": hashlib.sha256(terms).hexdigest()}, terms)

    async def accept_contract(self, contract_id: str, terms: bytes) -> Events:
        """The counterparty accepts the same terms; the buyer's payment is escrowed."""
        return await self._submit("market.accept_contract", {"contract_id": contract_id}, terms)

    async def settle_contract(self, contract_id: str, delivered_kwh: int, terms: bytes) -> Events:
        """The buyer confirms delivery; the seller is paid for it, the buyer refunded the rest."""
        return await self._submit("market.settle_contract", {"contract_id": contract_id,
                                                             "delivered_kwh": delivered_kwh}, terms)

    async def contract(self, contract_id: str) -> Any:
        """The public record: parties, terms hash, state, escrow."""
        return await self._query("market.contract", {"contract_id": contract_id})

    async def terms(self, contract_id: str) -> Any:
        """The private terms, for a party, from a peer of its own organisation."""
        return await self._query("market.contract_terms", {"contract_id": contract_id}, own_org=True)

    # -- charging rights in two stages ---------------------------------------------------------------------------

    async def open_round(self, round_id: str, transformer: str, requests_close_ms: int, bids_close_ms: int,
                         slot_start_ms: int, slot_end_ms: int) -> Events:
        """Regulator: open a round for one transformer and slot."""
        return await self._submit("market.open_round", {
            "round_id": round_id, "transformer": transformer, "requests_close_ms": requests_close_ms,
            "bids_close_ms": bids_close_ms, "slot_start_ms": slot_start_ms, "slot_end_ms": slot_end_ms})

    async def request(self, round_id: str, station: str, power_kw: int, willingness: str,
                      flexibility_bp: int) -> Events:
        """Station: submit its charging requirement (stage 1)."""
        return await self._submit("market.request", {"round_id": round_id, "station": station,
                                                     "power_kw": power_kw, "willingness": willingness,
                                                     "flexibility_bp": flexibility_bp})

    async def allocate(self, round_id: str) -> Events:
        """Regulator: stage 1, water-fill the transformer's margin; the rights are issued."""
        return await self._submit("market.allocate", {"round_id": round_id})

    async def bid(self, round_id: str, station: str, side: str, power_kw: int, price: int) -> Events:
        """Station: a buy (escrowed) or sell in the round's double auction (stage 2)."""
        return await self._submit("market.bid", {"round_id": round_id, "station": station, "side": side,
                                                 "power_kw": power_kw, "price": price})

    async def clear(self, round_id: str) -> Events:
        """Regulator: clear the double auction once bids close."""
        return await self._submit("market.clear", {"round_id": round_id})

    async def p2p_offer(self, round_id: str, station: str, offer_id: str, to: str, power_kw: int,
                        price: int) -> Events:
        """Station: offer kW of its right to one account (P2P)."""
        return await self._submit("market.p2p_offer", {"round_id": round_id, "station": station,
                                                       "offer_id": offer_id, "to": to, "power_kw": power_kw,
                                                       "price": price})

    async def p2p_accept(self, round_id: str, offer_id: str, station: str) -> Events:
        """Station: take a P2P offer made to it, for one of its stations, and pay."""
        return await self._submit("market.p2p_accept", {"round_id": round_id, "offer_id": offer_id,
                                                        "station": station})

    async def p2p_cancel(self, round_id: str, offer_id: str) -> Events:
        """Station: withdraw its open P2P offer."""
        return await self._submit("market.p2p_cancel", {"round_id": round_id, "offer_id": offer_id})

    async def round(self, round_id: str) -> Any:
        """A round, its requests, the rights of its stations and its open bids."""
        return await self._query("market.round", {"round_id": round_id})

    async def escrow(self) -> Any:
        """What the market holds, by its balance and by its open records (equal)."""
        return await self._query("market.escrow", {})
