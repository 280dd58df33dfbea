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
             denom: str = "kWh", lane: str | None = None, timeout_s: float = 600.0,
             fees: dict[str, int] | None = None) -> dict[str, Any]:
    """Send energy from ``sender`` on ``src`` to ``receiver`` on ``dst`` (phase 1); return the packet.

    ``receiver`` may name a deployment account of ``dst`` (on an Ethereum park it becomes its address). ``fees``
    (``{verify, execute, confirm}`` in ``src``'s currency) are escrowed for the relayers (protocol SPEC §6.10)."""
    lanes = [ln for ln, a, b in cfg.lanes if {a, b} == {src, dst}]
    if lane is None:
        if not lanes:
            raise ConfigError(f"{cfg.path}: no lane joins {src} and {dst}")
        lane = lanes[0]
    to = park_view(cfg, dst).account(receiver)
    timeout_ms = int((time.time() + timeout_s) * 1000)
    asset: dict[str, Any] = {"kind": "energy", "denom": denom, "amount_wh": amount_wh}
    if fees:
        asset["fees"] = fees
    sent = park_view(cfg, src).send(sender, dst, to, lane, timeout_ms, asset)
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
        sent = park_view(cfg, chain.id).sent()
        rows = packet_statuses(cfg, [raw for raw, _ in sent], views)
        out += [row | {"sent_height": height} for row, (_, height) in zip(rows, sent, strict=True)]
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
    return packet_statuses(cfg, [raw], views)[0]


def packet_statuses(cfg: DeploymentConfig, raws: list[bytes],
                    views: dict[str, ParkView] | None = None) -> list[dict[str, Any]]:
    """:func:`packet_status` of many packets, in their order, read in bulk: each chain is asked for all the
    records it holds for them at once (a Python park's or the relay chain's ``queryMany``, 1,000 keys a call; an
    EVM or Fabric park's batched reads), not a few round trips per packet."""
    views = {} if views is None else views
    packets = [decode_packet(raw) for raw in raws]
    for p in packets:
        for chain_id in (p.src_chain, p.dst_chain):
            if chain_id not in views:
                views[chain_id] = park_view(cfg, chain_id)
    committed = _many(views, [(p.src_chain, commitment_path(p.dst_chain, p.lane, p.sequence).decode())
                              for p in packets])
    receipts = _many(views, [(p.dst_chain, receipt_path(p.src_chain, p.lane, p.sequence).decode()) for p in packets])
    for i, p in enumerate(packets):
        if receipts[i] is not None and receipts[i] == chain_kind(views[p.dst_chain].chain.kind).timeout_receipt:
            receipts[i] = None  # the target recorded the timeout (Fabric): no execution; the relay certifies it
    by_target: dict[str, list[tuple[str, str, int]]] = {}
    for p, receipt in zip(packets, receipts, strict=True):
        if receipt is not None:
            by_target.setdefault(p.dst_chain, []).append((p.src_chain, p.lane, p.sequence))
    acks = {(dst, *item): ack for dst, items in by_target.items() for item, ack in views[dst].acks(items).items()}
    relay_keys: list[str] = []
    if cfg.relay_base_port is not None:
        for p in packets:
            vpath = verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()
            # a packet whose source's client froze while it was in flight (SPEC §8.8) until the recovery revokes it
            relay_keys += ["relay/suspended/" + vpath[len("relay/verified/"):], vpath,
                           outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence).decode()]
    relay_values = _relay_many(cfg, relay_keys) if relay_keys else {}
    rows = []
    for i, p in enumerate(packets):
        suspended: str | None = None
        verified: str | None = None
        outcome: str | None = None
        if relay_keys:
            suspended, verified, outcome = (relay_values.get(k) for k in relay_keys[3 * i:3 * i + 3])
        ack = acks.get((p.dst_chain, p.src_chain, p.lane, p.sequence))
        if outcome is not None:
            kind, _, _ = decode_outcome(bytes.fromhex(outcome))
            success = kind is PacketOutcome.ACKED and ack is not None and ack.success
            if committed[i] is None:
                state = "completed" if success else "refunded"
            else:
                state = "acked" if kind is PacketOutcome.ACKED else "timed_out"
        elif receipts[i] is not None:
            state = "executed"
        elif verified is not None:
            state = "verified"
        else:
            state = "committed"
        payload = decode_payload(p.kind, p.payload)
        rows.append({"packet": packet_key(p), "state": state, "kind": p.kind.name.lower(), "sender": p.sender,
                     "receiver": p.receiver,
                     "payload": {k: getattr(payload, k) for k in payload.__slots__},  # type: ignore[attr-defined]
                     "timeout_timestamp_ms": p.timeout_timestamp_ms, "verified": verified is not None,
                     "suspended": suspended is not None,
                     "ack": None if ack is None else {"success": ack.success, "code": ack.code}})
    return rows


def _many(views: dict[str, ParkView], wanted: list[tuple[str, str]]) -> list[bytes | None]:
    """The values of ``(chain, path)`` records, in order, one :meth:`ParkView.query_many` per chain."""
    by_chain: dict[str, list[str]] = {}
    for chain_id, path in wanted:
        by_chain.setdefault(chain_id, []).append(path)
    found = {chain_id: views[chain_id].query_many(paths) for chain_id, paths in by_chain.items()}
    return [found[chain_id][path] for chain_id, path in wanted]


def _relay_many(cfg: DeploymentConfig, keys: list[str]) -> dict[str, str | None]:
    """Hex values of relay-chain records, 1,000 keys per ``queryMany`` (the node's limit)."""
    url = _url(cfg, cfg.relay_chain_id)
    out: dict[str, str | None] = {}
    for i in range(0, len(keys), 1000):
        out.update(rpc(url, "queryMany", {"keys": keys[i:i + 1000]}, timeout=15.0)["values"])
    return out


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
