"""Charging rights, the transformer registry and reputation on a Fabric park, for the CLI, the demo and tests
(the bridge chaincode's functions: chains/fabric/chaincode/contract.py; rules: chains/fabric/chaincode/assets.py).

Writes go through a :class:`~adapters.fabric.target.FabricTarget` as its identity (endorsed by both organisations,
ordered, tracked to the commit; a refusal raises its typed error before anything is ordered):

* phase 1 from a user's own identity: :func:`send_right` (the owner of a right), :func:`send_reputation` (anyone: the
  score is the park's, read by the chaincode);
* :func:`transfer_right` (the owner);
* the park operator's (an identity of the operator's MSP; the genesis ``rights_operator`` when one is named —
  anyone else gets :class:`~protocol.errors.AuthorizationError`): :func:`set_transformer`, :func:`set_station`,
  :func:`issue_right`, :func:`set_standing`, :func:`certify`.

Reads go through a :class:`~adapters.fabric.source.FabricSource` (a query on one peer, nothing ordered):
:func:`right` (``right show``), :func:`rights` (``right list``), :func:`transformer` (``transformer show``),
:func:`standing`, :func:`imported_reputation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.common.roles import SentPacket
from adapters.fabric.source import FabricSource
from adapters.fabric.target import FabricTarget, send_packet

__all__ = [
    "certify",
    "imported_reputation",
    "issue_right",
    "right",
    "rights",
    "send_reputation",
    "send_right",
    "set_standing",
    "set_station",
    "set_transformer",
    "standing",
    "transfer_right",
    "transformer",
]

Events = list[dict[str, Any]]


# --- phase 1 --------------------------------------------------------------------------------------------------


async def send_right(target: FabricTarget, dst_chain: str, lane: str, right_id: str, receiver: str,
                     timeout_timestamp_ms: int, *, fees: Mapping[str, int] | None = None,
                     timeout_s: float = 60.0) -> SentPacket:
    """Send charging right ``right_id`` (as this park holds it: a base id or a voucher trace) to ``receiver`` on
    ``dst_chain``: escrowed here, or burned if it goes back the way it came. The timeout must not be after the
    right's slot start (:class:`~protocol.errors.TimeoutExpiredError`). ``fees``: relay fees in the park's currency
    (:func:`~adapters.fabric.target.send_packet`)."""
    return await send_packet(target, {"dst_chain": dst_chain, "lane": lane, "kind": "charging_right",
                                      "right_id": right_id, "receiver": receiver,
                                      "timeout_timestamp_ms": timeout_timestamp_ms}, fees=fees, timeout_s=timeout_s)


async def send_reputation(target: FabricTarget, dst_chain: str, lane: str, subject: str, receiver: str,
                          timeout_timestamp_ms: int, *, fees: Mapping[str, int] | None = None,
                          timeout_s: float = 60.0) -> SentPacket:
    """Attest ``subject``'s certified standing (model ``fabric-participant-standing/v1``) to ``dst_chain``; the
    chaincode reads the score and its revision from the park's state. ``fees``: relay fees in the park's currency
    (:func:`~adapters.fabric.target.send_packet`)."""
    return await send_packet(target, {"dst_chain": dst_chain, "lane": lane, "kind": "reputation", "subject": subject,
                                      "receiver": receiver, "timeout_timestamp_ms": timeout_timestamp_ms},
                             fees=fees, timeout_s=timeout_s)


# --- local writes -------------------------------------------------------------------------------------------


async def transfer_right(target: FabricTarget, right_id: str, to: str) -> Events:
    """Hand a live right this identity owns to another registered account of the park."""
    return (await target.call("rights.transfer", {"right_id": right_id, "to": to}))[1]


async def set_transformer(target: FabricTarget, name: str, capacity_kw: int) -> Events:
    """Operator: set a transformer's capacity (kW)."""
    return (await target.call("rights.set_transformer", {"name": name, "capacity_kw": capacity_kw}))[1]


async def set_station(target: FabricTarget, name: str, transformer_name: str) -> Events:
    """Operator: register a station behind a transformer."""
    return (await target.call("rights.set_station", {"name": name, "transformer": transformer_name}))[1]


async def issue_right(target: FabricTarget, right_id: str, station: str, transformer_name: str, power_kw: int,
                      slot_start_ms: int, slot_end_ms: int, owner: str) -> Events:
    """Operator: issue a home right through admission (its refusal: :class:`~chains.common.bridge.AssetError`,
    ``got`` the rule's code)."""
    return (await target.call("rights.issue", {
        "right_id": right_id, "station": station, "transformer": transformer_name, "power_kw": power_kw,
        "slot_start_ms": slot_start_ms, "slot_end_ms": slot_end_ms, "owner": owner}))[1]


async def set_standing(target: FabricTarget, account: str, certified: bool, score: int) -> Events:
    """Operator: record a participant's standing (basis points)."""
    return (await target.call("reputation.set_standing", {"account": account, "certified": certified,
                                                           "score": score}))[1]


async def certify(target: FabricTarget, account: str, src_chain: str, subject: str, model: str) -> Events:
    """Operator: certify ``account`` on the reputation ``src_chain`` attested for ``subject`` under ``model``."""
    return (await target.call("reputation.certify", {"account": account, "src_chain": src_chain, "subject": subject,
                                                      "model": model}))[1]


# --- reads ----------------------------------------------------------------------------------------------------


async def right(source: FabricSource, right_id: str) -> dict[str, Any]:
    """``{right_id, right, burned}``: the record held under that id (or None) and a burn awaiting settlement."""
    out: dict[str, Any] = await source.query_json("right", right_id)
    return out


async def rights(source: FabricSource, owner: str = "") -> list[dict[str, Any]]:
    """Every right record on the park (``right_id`` and its fields), or those ``owner`` holds."""
    out: list[dict[str, Any]] = (await source.query_json("rights", owner))["rights"]
    return out


async def transformer(source: FabricSource, name: str) -> dict[str, Any]:
    """``{name, transformer: {capacity_kw} | None, stations, bookings}`` (bookings whose slot has not ended)."""
    out: dict[str, Any] = await source.query_json("transformer", name)
    return out


async def standing(source: FabricSource, account: str) -> dict[str, Any] | None:
    """A participant's standing record, or None."""
    out: dict[str, Any] | None = (await source.query_json("standing", account))["standing"]
    return out


async def imported_reputation(source: FabricSource, src_chain: str, subject: str, model: str) -> dict[str, Any] | None:
    """What ``src_chain`` last attested for ``subject`` under ``model``, as imported here, or None."""
    out: dict[str, Any] | None = (await source.query_json("imported_reputation", src_chain, subject, model))["imported"]
    return out
