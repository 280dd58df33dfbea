"""The packet index behind the operator API: every packet of the deployment and its four-phase timeline.

Built from the chains' own events (SPEC §6, the phases), never from a relayer's memory, so any service reading
the same chains shows the same thing:

============  ===========  ===================================  ==========================================
phase         chain        event                                 what it records
============  ===========  ===================================  ==========================================
1 commit      source       ``send_packet``                      the packet (its bytes: sender, payload …)
2 verify      relay        ``packet_verified``                  VERIFIED on the relay chain
3 execute     target       ``write_ack``                        the receipt and its ack (success, code)
4 confirm     relay        ``packet_acked``/``packet_timed_out`` the certified outcome
4 settle      source       ``settle_packet``                    escrow kept or refunded
============  ===========  ===================================  ==========================================

A source whose adapter reports no ``settle_packet`` event (Ethereum, Fabric) is settled when the relay
certified the outcome and the source's commitment is gone (:meth:`PacketIndex.settled_without_event`).
This module is pure: events and block times come in as arguments; :mod:`relay.ops.api.backend` does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.codec import decode_packet, decode_payload
from protocol.errors import ProtocolError
from protocol.types import Packet

__all__ = ["PHASES", "STATES", "PacketIndex", "PacketRecord", "Step"]

PHASES: tuple[tuple[str, int], ...] = (("commit", 1), ("verify", 2), ("execute", 3), ("confirm", 4), ("settle", 4))
"""The steps of a packet's timeline and the protocol phase each belongs to (SPEC §2, §6)."""

STATES = ("committed", "verified", "executed", "acked", "timed_out", "completed", "refunded")
"""A packet's state, as :mod:`relay.ops.packets` names them (furthest step reached)."""

FINAL_STATES = frozenset({"completed", "refunded"})


@dataclass(slots=True)
class Step:
    """One step of a packet's timeline: where and when it happened."""

    chain: str
    """The chain that recorded it."""
    height: int | None
    """Its block (None: known to have happened, block not known — a settle seen only as a gone commitment)."""
    time_ms: int | None
    """That block's time (ms since the epoch), when known."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the event said beyond the ids (ack success and code, outcome, refunded)."""

    def to_json(self, phase: str, number: int) -> dict[str, Any]:
        return {"phase": phase, "protocol_phase": number, "chain": self.chain, "height": self.height,
                "time_ms": self.time_ms, **self.detail}


@dataclass(slots=True)
class PacketRecord:
    """A packet the index knows of, and the steps it went through."""

    key: str
    """``src/dst/lane/sequence``."""
    packet: Packet | None
    """The decoded packet (None until its ``send_packet`` was read: a relay event may come first)."""
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def src(self) -> str:
        return self.key.split("/")[0]

    @property
    def dst(self) -> str:
        return self.key.split("/")[1]

    @property
    def lane(self) -> str:
        return self.key.split("/")[2]

    @property
    def sequence(self) -> int:
        return int(self.key.split("/")[3])

    @property
    def state(self) -> str:
        s = self.steps
        if "settle" in s:
            return "refunded" if s["settle"].detail.get("refunded") else "completed"
        if "confirm" in s:
            return "timed_out" if s["confirm"].detail.get("outcome") == "timed_out" else "acked"
        if "execute" in s:
            return "executed"
        if "verify" in s:
            return "verified"
        return "committed"

    @property
    def committed_ms(self) -> int | None:
        c = self.steps.get("commit")
        return None if c is None else c.time_ms

    def summary(self) -> dict[str, Any]:
        """The packet as list endpoints and the status page show it."""
        p = self.packet
        out: dict[str, Any] = {"packet": self.key, "src": self.src, "dst": self.dst, "lane": self.lane,
                               "sequence": self.sequence, "state": self.state, "committed_ms": self.committed_ms,
                               "kind": None, "sender": None, "receiver": None, "payload": None,
                               "timeout_timestamp_ms": None}
        if p is not None:
            payload = decode_payload(p.kind, p.payload)
            out |= {"kind": p.kind.name.lower(), "sender": p.sender, "receiver": p.receiver,
                    "payload": {k: getattr(payload, k) for k in payload.__slots__},  # type: ignore[attr-defined]
                    "timeout_timestamp_ms": p.timeout_timestamp_ms}
        ex = self.steps.get("execute")
        out["ack"] = None if ex is None else {"success": ex.detail.get("success"), "code": ex.detail.get("code")}
        return out

    def timeline(self) -> list[dict[str, Any]]:
        """Every step in protocol order; a step not reached yet has ``height`` and ``time_ms`` null and
        ``done`` false."""
        out = []
        for phase, number in PHASES:
            step = self.steps.get(phase)
            if step is None:
                chain = {"commit": self.src, "execute": self.dst, "settle": self.src}.get(phase, "relay")
                out.append({"phase": phase, "protocol_phase": number, "chain": chain, "height": None,
                            "time_ms": None, "done": False})
            else:
                out.append({**step.to_json(phase, number), "done": True})
        return out


class PacketIndex:
    """Every packet seen on the deployment's chains, by key, with the relay chain's id to tell its events."""

    def __init__(self, relay_chain_id: str) -> None:
        self.relay_chain_id = relay_chain_id
        self.packets: dict[str, PacketRecord] = {}
        self.undecodable = 0
        """Events whose packet could not be decoded (skipped; counted)."""

    def _record(self, key: str) -> PacketRecord:
        rec = self.packets.get(key)
        if rec is None:
            rec = self.packets[key] = PacketRecord(key, None)
        return rec

    def apply(self, chain: str, event: dict[str, Any], height: int, time_ms: int | None) -> str | None:
        """Record one event of ``chain`` at ``height``; return the key of the packet it moved (None: not a packet
        event, or one the index cannot read)."""
        kind = event.get("type")
        try:
            if kind == "send_packet":
                p = decode_packet(bytes.fromhex(str(event["packet"])))
                key = f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"
                rec = self._record(key)
                rec.packet = p
                rec.steps.setdefault("commit", Step(chain, height, time_ms))
                return key
            key = f"{event['src']}/{event['dst']}/{event['lane']}/{int(event['sequence'])}"
        except (KeyError, TypeError, ValueError, ProtocolError):
            if kind in ("send_packet", "write_ack", "settle_packet", "packet_verified", "packet_acked",
                        "packet_timed_out"):
                self.undecodable += 1
            return None
        if chain == self.relay_chain_id:
            if kind == "packet_verified":
                self._record(key).steps.setdefault("verify", Step(chain, height, time_ms))
            elif kind == "packet_acked":
                self._record(key).steps.setdefault("confirm", Step(chain, height, time_ms, {
                    "outcome": "acked", "success": bool(event.get("success"))}))
            elif kind == "packet_timed_out":
                self._record(key).steps.setdefault("confirm", Step(chain, height, time_ms, {"outcome": "timed_out"}))
            else:
                return None
            return key
        if kind == "write_ack":
            self._record(key).steps.setdefault("execute", Step(chain, height, time_ms, {
                "success": bool(event.get("success")), "code": event.get("code")}))
            return key
        if kind == "settle_packet":
            self._record(key).steps.setdefault("settle", Step(chain, height, time_ms, {
                "outcome": event.get("outcome"), "refunded": bool(event.get("refunded"))}))
            return key
        return None

    def awaiting_settle(self) -> list[PacketRecord]:
        """Packets whose outcome the relay certified and whose settlement the index has not seen."""
        return [r for r in self.packets.values() if "confirm" in r.steps and "settle" not in r.steps]

    def settled_without_event(self, key: str) -> None:
        """The source's commitment of ``key`` is gone after a certified outcome: it settled (refunded unless the
        outcome was a success ack), at a block the source's events did not name."""
        rec = self.packets[key]
        confirm = rec.steps["confirm"].detail
        refunded = not (confirm.get("outcome") == "acked" and confirm.get("success"))
        rec.steps.setdefault("settle", Step(rec.src, None, None, {"outcome": confirm.get("outcome"),
                                                                  "refunded": refunded}))

    def counts(self) -> dict[str, dict[str, int]]:
        """Packets per directed lane (``src->dst/lane``) and state."""
        out: dict[str, dict[str, int]] = {}
        for r in self.packets.values():
            lane = out.setdefault(f"{r.src}->{r.dst}/{r.lane}", {})
            lane[r.state] = lane.get(r.state, 0) + 1
        return out
