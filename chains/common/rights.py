"""Charging rights on a park (SPEC.md §2.3 "Charging right" and "Bookings"): the right-id trace, the park's
station and transformer registry, bookings, admission, and the report of where each right is.

The bridge (:mod:`chains.common.bridge`) moves rights between parks with these rules; they are the same on
every park (the Ethereum bridge and the Fabric chaincode implement them too).

Right ids and their trace
-------------------------

A *base* right id has no ``/`` and is issued at its ``home_park``. A park that received a right over lane
``l`` from chain ``c`` holds it as the *voucher* right ``l/c/<the id as c held it>``, newest hop first,
exactly like a voucher denom. For a packet ``p`` carrying right id ``R``, with ``prefix = p.lane/p.dst/``:

* **returning** (``R`` starts with ``prefix``): the source burns voucher ``R``; the target un-escrows
  ``R[len(prefix):]``, which must be escrowed there towards ``(p.src, p.lane)`` with equal fields;
* **leaving** (otherwise): the source escrows ``R``; the target mints ``p.lane/p.src/R``.

``home_park`` and the other fields never change along the trace. A right exists exactly once: live on one
chain; every other chain along its trace holds it escrowed (or burned, until the burn settles).

Registry and bookings
---------------------

``transformers/<name>`` = ``{capacity_kw}`` and ``stations/<name>`` = ``{transformer}``, written only by the
rights operator (``rights.set_transformer``, ``rights.set_station``) or at genesis. A park books a right's
``(transformer, power_kw, slot)`` in ``bookings/<transformer>`` while the right is live or in flight on it;
the booking is released when the right leaves with a success ack (at settlement) or when its slot ends
(ended slots are pruned whenever the list is written). A refund keeps it.

Admission
---------

A right becomes live on a park (issued at home, minted as a voucher, or un-escrowed when it returns) only
through admission, which refuses in this order (:data:`protocol.errors.ADMISSION_CODES`): ``slot.started``
(``slot_start_ms <= block time``), ``station.unknown``, ``transformer.mismatch`` (the registered station
is behind another transformer), ``transformer.unknown``, ``capacity.exceeded`` (power of the booked rights
whose slots overlap ``[slot_start, slot_end)``, plus this one, above ``capacity_kw``; a right's own booking
is not counted against it: a right coming home before its departure settled is still booked there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from chains.common.state import KVState
from chains.common.tx import BlockContext
from protocol.codec import MAX_STRING, decode_charging_right
from protocol.errors import CodecError
from protocol.types import ChainId, ChargingRightPayload, Packet, PacketKind, check_uint

__all__ = [
    "ESCROW_OWNER",
    "admission_refusal",
    "base_right_id",
    "book",
    "bookings",
    "bookings_path",
    "burned_right_path",
    "default_admission",
    "is_returning",
    "registry_report",
    "right_path",
    "right_payload",
    "right_record",
    "rights_report",
    "rights_violations",
    "set_station",
    "set_transformer",
    "station_path",
    "transformer_path",
    "unbook",
    "voucher_right_id",
]

ESCROW_OWNER = "@escrow"
"""Owner of a right escrowed on this park while it is on another; not a valid account name, so nobody holds it."""


# --- state paths ----------------------------------------------------------------------------------


def right_path(right_id: str) -> bytes:
    """A right held here (live, or escrowed towards another chain), by its id as this park holds it."""
    return f"rights/{right_id}".encode()


def burned_right_path(right_id: str) -> bytes:
    """A voucher right burned on its way back, kept (with its booking and its id) until its packet settles."""
    return f"rights_burned/{right_id}".encode()


def transformer_path(name: str) -> bytes:
    return f"transformers/{name}".encode()


def station_path(name: str) -> bytes:
    return f"stations/{name}".encode()


def bookings_path(transformer: str) -> bytes:
    return f"bookings/{transformer}".encode()


# --- ids ------------------------------------------------------------------------------------------


def is_returning(right_id: str, lane: str, dst: str) -> bool:
    """Whether a packet over ``lane`` to ``dst`` carrying ``right_id`` takes the right back the way it came."""
    return right_id.startswith(f"{lane}/{dst}/")


def voucher_right_id(lane: str, src: str, right_id: str) -> str:
    """The id the target holds a leaving right under."""
    return f"{lane}/{src}/{right_id}"


def base_right_id(right_id: str) -> str:
    """The id the right was issued under at its home park (the last segment of the trace)."""
    return right_id.rsplit("/", 1)[-1]


# --- records --------------------------------------------------------------------------------------


def right_payload(right_id: str, rec: Mapping[str, Any]) -> ChargingRightPayload:
    """The payload of a stored right, under ``right_id``."""
    return ChargingRightPayload(right_id, ChainId(rec["home_park"]), rec["station"], rec["transformer"],
                                int(rec["power_kw"]), int(rec["slot_start_ms"]), int(rec["slot_end_ms"]))


def right_record(c: ChargingRightPayload, owner: str) -> dict[str, Any]:
    """The stored form of a right owned by ``owner`` (its id is the state key)."""
    return {"home_park": c.home_park, "station": c.station, "transformer": c.transformer, "power_kw": c.power_kw,
            "slot_start_ms": c.slot_start_ms, "slot_end_ms": c.slot_end_ms, "owner": owner}


# --- registry -------------------------------------------------------------------------------------


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_STRING:
        raise CodecError(f"a {what} name is a non-empty string of at most {MAX_STRING} bytes", got=name)
    return name


def set_transformer(state: KVState, name: str, capacity_kw: int) -> None:
    """Register a transformer or change its capacity (kW)."""
    _check_name("transformer", name)
    check_uint("capacity_kw", capacity_kw)
    state.set_json(transformer_path(name), {"capacity_kw": capacity_kw})


def set_station(state: KVState, name: str, transformer: str) -> None:
    """Register a charging station, or move it, behind ``transformer`` (which need not be registered yet:
    admission then refuses with ``transformer.unknown``)."""
    _check_name("station", name)
    _check_name("transformer", transformer)
    state.set_json(station_path(name), {"transformer": transformer})


# --- bookings -------------------------------------------------------------------------------------


def bookings(state: KVState, transformer: str) -> list[dict[str, Any]]:
    """``[{right_id, power_kw, slot_start_ms, slot_end_ms}]`` booked on ``transformer`` (ended slots may linger
    until the list is next written; they never overlap a slot that is still to come)."""
    raw = state.get_json(bookings_path(transformer))
    return list(raw) if raw else []


def _write_bookings(state: KVState, transformer: str, entries: list[dict[str, Any]], now_ms: int) -> None:
    live = sorted((b for b in entries if b["slot_end_ms"] > now_ms), key=lambda b: str(b["right_id"]))
    if live:
        state.set_json(bookings_path(transformer), live)
    else:
        state.delete(bookings_path(transformer))


def book(state: KVState, c: ChargingRightPayload, now_ms: int) -> None:
    """Book ``c`` (``c.right_id`` is the id held here) on its transformer, replacing a booking of the same id."""
    entries = [b for b in bookings(state, c.transformer) if b["right_id"] != c.right_id]
    entries.append({"right_id": c.right_id, "power_kw": c.power_kw, "slot_start_ms": c.slot_start_ms,
                    "slot_end_ms": c.slot_end_ms})
    _write_bookings(state, c.transformer, entries, now_ms)


def unbook(state: KVState, transformer: str, right_id: str, now_ms: int) -> None:
    """Release the booking of ``right_id`` on ``transformer``."""
    _write_bookings(state, transformer, [b for b in bookings(state, transformer) if b["right_id"] != right_id],
                    now_ms)


# --- admission ------------------------------------------------------------------------------------


def admission_refusal(state: KVState, c: ChargingRightPayload, now_ms: int) -> str | None:
    """The first refusal code of :data:`protocol.errors.ADMISSION_CODES` that applies to ``c`` here, or None.

    ``c.right_id`` is the id the right would be held under here; a booking under that id is not counted
    (it is this very right's). Every booked right whose slot overlaps counts in full: a sum, not the peak
    of the load curve, so the rule never admits an overload.
    """
    if c.slot_start_ms <= now_ms:
        return "slot.started"
    station = state.get_json(station_path(c.station))
    if station is None:
        return "station.unknown"
    if station.get("transformer") != c.transformer:
        return "transformer.mismatch"
    transformer = state.get_json(transformer_path(c.transformer))
    if transformer is None:
        return "transformer.unknown"
    load = sum(int(b["power_kw"]) for b in bookings(state, c.transformer)
               if b["right_id"] != c.right_id
               and b["slot_start_ms"] < c.slot_end_ms and c.slot_start_ms < b["slot_end_ms"])
    if load + c.power_kw > int(transformer["capacity_kw"]):
        return "capacity.exceeded"
    return None


def default_admission(state: KVState, c: ChargingRightPayload, ctx: BlockContext) -> str | None:
    """The admission every park applies (:func:`admission_refusal` at the block's time)."""
    return admission_refusal(state, c, ctx.timestamp_ms)


# --- reports --------------------------------------------------------------------------------------


def rights_report(state: KVState) -> dict[str, dict[str, Any]]:
    """Where the rights held on this chain are (a full scan: a query, for tests, the demo and the CLI).

    ``live``: ``{right_id: {home_park, owner, station, transformer, power_kw, slot_start_ms, slot_end_ms}}``;
    ``escrowed``: ``{right_id: {home_park, chain, lane, sequence}}`` (the packet that took it away);
    ``burning``: ``{right_id: {home_park, chain, lane, sequence}}`` (burned, its packet not settled yet);
    ``bookings``: ``{transformer: [right_id, ...]}``.
    """
    live: dict[str, Any] = {}
    escrowed: dict[str, Any] = {}
    for key, value in state.prefix_items(b"rights/"):
        rid = key.decode()[len("rights/"):]
        rec = json.loads(value)
        if rec["owner"] == ESCROW_OWNER:
            escrowed[rid] = {"home_park": rec["home_park"], **rec["escrowed_to"]}
        else:
            live[rid] = {k: rec[k] for k in ("home_park", "owner", "station", "transformer", "power_kw",
                                             "slot_start_ms", "slot_end_ms")}
    burning = {}
    for key, value in state.prefix_items(b"rights_burned/"):
        rec = json.loads(value)
        burning[key.decode()[len("rights_burned/"):]] = {"home_park": rec["home_park"], **rec["burned_to"]}
    booked = {}
    for key, value in state.prefix_items(b"bookings/"):
        booked[key.decode()[len("bookings/"):]] = [b["right_id"] for b in json.loads(value)]
    return {"live": live, "escrowed": escrowed, "burning": burning, "bookings": booked}


def registry_report(state: KVState) -> dict[str, Any]:
    """The park's charging registry (a full scan, for the CLI): ``{"transformers": {name: capacity_kw},
    "stations": {name: transformer}, "bookings": {transformer: [{right_id, power_kw, slot_start_ms,
    slot_end_ms}]}}``."""
    return {
        "transformers": {k.decode()[len("transformers/"):]: int(json.loads(v)["capacity_kw"])
                         for k, v in state.prefix_items(b"transformers/")},
        "stations": {k.decode()[len("stations/"):]: str(json.loads(v)["transformer"])
                     for k, v in state.prefix_items(b"stations/")},
        "bookings": {k.decode()[len("bookings/"):]: list(json.loads(v)) for k, v in state.prefix_items(b"bookings/")},
    }


def rights_violations(reports: Mapping[str, Mapping[str, Any]],
                      pending: Iterable[tuple[Packet, bool]] = ()) -> list[str]:
    """Check "each right exists exactly once" over every chain's :func:`rights_report`; returns the violations.

    ``pending`` lists the right packets sent and not settled, each with whether the target applied it with a
    success ack (an unapplied packet is the right's live copy while it travels; empty at rest). Checks:

    * per ``(home_park, base id)``: live records + unapplied packets == 1;
    * a right escrowed on ``X`` towards ``(Y, L)`` under id ``R`` is held on ``Y`` as ``L/X/R`` (live,
      escrowed or burning), or travels there in an unapplied packet;
    * a live or escrowed voucher ``L/X/R`` on ``Y`` (``X`` a chain of ``reports``) is escrowed on ``X``
      as ``R`` towards ``(Y, L)``.
    """
    problems: list[str] = []
    copies: dict[tuple[str, str], list[str]] = {}
    travelling: set[tuple[str, str, str, str]] = set()
    for packet, applied in pending:
        if packet.kind is not PacketKind.CHARGING_RIGHT or applied:
            continue
        c = decode_charging_right(packet.payload)
        copies.setdefault((c.home_park, base_right_id(c.right_id)), []).append(
            f"packet {packet.src_chain}->{packet.dst_chain}/{packet.lane}/{packet.sequence}")
        travelling.add((packet.src_chain, packet.dst_chain, packet.lane, c.right_id))
    for chain, report in reports.items():
        for rid, rec in report["live"].items():
            copies.setdefault((rec["home_park"], base_right_id(rid)), []).append(f"{chain}:{rid}")
        for rid, rec in (*report["escrowed"].items(), *report["burning"].items()):
            copies.setdefault((rec["home_park"], base_right_id(rid)), [])
    for (home, base), where in sorted(copies.items()):
        if len(where) != 1:
            problems.append(f"right {home}:{base} has {len(where)} live copies: {where}")
    for chain, report in reports.items():
        for rid, rec in report["escrowed"].items():
            dst, lane = rec["chain"], rec["lane"]
            voucher = voucher_right_id(lane, chain, rid)
            if dst in reports:
                held = reports[dst]
                if not (voucher in held["live"] or voucher in held["escrowed"] or voucher in held["burning"]
                        or (chain, dst, lane, rid) in travelling):
                    problems.append(f"{chain}:{rid} escrowed towards {dst}/{lane}, which holds no {voucher}")
        for rid in (*report["live"], *report["escrowed"]):
            parts = rid.split("/", 2)
            if len(parts) < 3 or parts[1] not in reports:
                continue
            lane, origin, rest = parts
            esc = reports[origin]["escrowed"].get(rest)
            if esc is None or esc["chain"] != chain or esc["lane"] != lane:
                problems.append(f"{chain}:{rid} is not escrowed on {origin} as {rest} towards {chain}/{lane}")
    return problems
