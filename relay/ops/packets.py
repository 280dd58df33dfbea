"""Operator commands against a running deployment: ``parkrelay transfer`` and ``parkrelay packet``.

Packet states are read from the chains themselves, never from a relayer's database, so they are
right whichever relayer carried a packet (SPEC.md §6.1)::

    committed  the source holds the commitment; the relay chain has not verified it
    verified   the relay chain verified it; the target has no receipt yet
    executed   the target wrote a receipt (``ack`` says success or error)
    acked      the relay chain certified the ack; the source has not settled
    timed_out  the relay chain certified the timeout; the source has not settled
    completed  settled on a success ack (escrow kept, voucher minted)
    refunded   settled on an error ack or a timeout (the sender got it back)
"""

from __future__ import annotations

import json
import time
from typing import Any

from chains.registry import chain_kind
from protocol.codec import decode_outcome, decode_packet, decode_payload
from protocol.paths import commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import PacketOutcome
from relay.ops.config import ConfigError, DeploymentConfig
from relay.ops.parks import ParkView, park_view, rpc


def _url(cfg: DeploymentConfig, chain_id: str) -> str:
    if chain_id == cfg.relay_chain_id:
        return cfg.relay_url(cfg.relay_validators[0])
    chain = cfg.chain(chain_id)
    return chain.url_of(chain.nodes[0], cfg.host)


def transfer(cfg: DeploymentConfig, src: str, sender: str, dst: str, receiver: str, amount_wh: int,
             denom: str = "kWh", lane: str | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Send energy from ``sender`` on ``src`` to ``receiver`` on ``dst`` (phase 1); return the packet.

    ``receiver`` may name a deployment account of ``dst`` (on an Ethereum park it becomes its address)."""
    lanes = [ln for ln, a, b in cfg.lanes if {a, b} == {src, dst}]
    if lane is None:
        if not lanes:
            raise ConfigError(f"{cfg.path}: no lane joins {src} and {dst}")
        lane = lanes[0]
    to = park_view(cfg, dst).account(receiver)
    sent = park_view(cfg, src).transfer(sender, dst, to, amount_wh, denom, lane, int((time.time() + timeout_s) * 1000))
    p = decode_packet(sent["packet"])
    return {"packet": packet_key(p), "tx": sent["tx"], "height": sent["height"]}


def packet_key(p: Any) -> str:
    return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"


def list_packets(cfg: DeploymentConfig, chain_id: str | None = None) -> list[dict[str, Any]]:
    """Every packet sent by the deployment's parks (or one park), with its state read from the chains."""
    out = []
    views: dict[str, ParkView] = {}
    for chain in cfg.chains:
        if chain_id is not None and chain.id != chain_id:
            continue
        for raw, height in park_view(cfg, chain.id).sent():
            out.append(packet_status(cfg, raw, views) | {"sent_height": height})
    return out


def show_packet(cfg: DeploymentConfig, key: str) -> dict[str, Any]:
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].isdigit():
        raise ConfigError(f"a packet is named src/dst/lane/sequence, got {key!r}")
    src, dst, lane, seq = parts
    view = park_view(cfg, src)
    raw = view.query(f"packets/{dst}/{lane}/{seq}") if view.keeps_packets else None
    if raw is not None:
        return packet_status(cfg, bytes.fromhex(raw.decode()))  # the Python parks keep it as hex text
    for packet, _ in view.sent():  # settled (the source dropped it) or a park that keeps packets in logs
        if packet_key(decode_packet(packet)) == key:
            return packet_status(cfg, packet)
    raise ConfigError(f"no packet {key}")


def packet_status(cfg: DeploymentConfig, raw: bytes, views: dict[str, ParkView] | None = None) -> dict[str, Any]:
    """A packet's state read from its source, its target and the relay chain. ``views``: park views to reuse
    across calls (a caller reading many packets passes one dict, so a view's caches, such as an EVM park's acks,
    serve them all)."""
    p = decode_packet(raw)
    views = {} if views is None else views
    for chain_id in (p.src_chain, p.dst_chain):
        if chain_id not in views:
            views[chain_id] = park_view(cfg, chain_id)
    src, dst = views[p.src_chain], views[p.dst_chain]
    relay = _url(cfg, cfg.relay_chain_id) if cfg.relay_base_port is not None else None
    committed = src.query(commitment_path(p.dst_chain, p.lane, p.sequence).decode())
    receipt = dst.query(receipt_path(p.src_chain, p.lane, p.sequence).decode())
    if receipt is not None and receipt == chain_kind(dst.chain.kind).timeout_receipt:
        receipt = None  # the target recorded the timeout (Fabric): no execution; the relay certifies the outcome
    ack = dst.ack(p.src_chain, p.lane, p.sequence) if receipt is not None else None
    verified = outcome = suspended = None
    if relay is not None:
        # a packet whose source's client froze while it was in flight (SPEC §8.8) until the recovery revokes it
        suspended = rpc(relay, "query", {"key": "relay/suspended/" + verified_path(
            p.src_chain, p.dst_chain, p.lane, p.sequence).decode()[len("relay/verified/"):]})["value"]
        verified = rpc(relay, "query", {"key": verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()})[
            "value"]
        outcome = rpc(relay, "query", {"key": outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()})[
            "value"]
    if outcome is not None:
        kind, _, _ = decode_outcome(bytes.fromhex(outcome))
        success = kind is PacketOutcome.ACKED and ack is not None and ack.success
        if committed is None:
            state = "completed" if success else "refunded"
        else:
            state = "acked" if kind is PacketOutcome.ACKED else "timed_out"
    elif receipt is not None:
        state = "executed"
    elif verified is not None:
        state = "verified"
    else:
        state = "committed"
    payload = decode_payload(p.kind, p.payload)
    return {"packet": packet_key(p), "state": state, "kind": p.kind.name.lower(), "sender": p.sender,
            "receiver": p.receiver, "payload": {k: getattr(payload, k) for k in payload.__slots__},  # type: ignore[attr-defined]
            "timeout_timestamp_ms": p.timeout_timestamp_ms, "verified": verified is not None,
            "suspended": suspended is not None,
            "ack": None if ack is None else {"success": ack.success, "code": ack.code}}


def relayer_progress(cfg: DeploymentConfig) -> list[dict[str, Any]]:
    """Each relayer's view of each lane, from its database (``<data_dir>/relayers/<name>.sqlite3``, table
    ``progress``, written every step): packets by the action they wait for, the oldest pending packet and its
    age, the last refusal or error. Read-only; a relayer that never ran has no rows."""
    import sqlite3

    out: list[dict[str, Any]] = []
    for name in cfg.relayers:
        path = cfg.data_dir / "relayers" / f"{name}.sqlite3"
        if not path.exists():
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT lane, json, updated_ms FROM progress ORDER BY lane").fetchall()
        except sqlite3.OperationalError:  # a database from before the progress table
            rows = []
        finally:
            conn.close()
        for lane, raw, updated_ms in rows:
            out.append({"relayer": name, "lane": lane, "updated_ms": updated_ms, **json.loads(raw)})
    return out
