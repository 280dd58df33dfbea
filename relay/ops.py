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

import time
from typing import Any

from chains.common.tx import Tx
from protocol.codec import decode_ack, decode_outcome, decode_packet, decode_payload
from protocol.paths import commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import PacketOutcome
from relay.config import ConfigError, DeploymentConfig
from relay.devnet import account_key_path, rpc
from relay.keys import ed25519_signer


def _url(cfg: DeploymentConfig, chain_id: str) -> str:
    if chain_id == cfg.relay_chain_id:
        return cfg.relay_url(cfg.relay_validators[0])
    chain = cfg.chain(chain_id)
    return chain.url_of(chain.nodes[0], cfg.host)


def transfer(cfg: DeploymentConfig, src: str, sender: str, dst: str, receiver: str, amount_wh: int,
             denom: str = "kWh", lane: str | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Send energy from ``sender`` on ``src`` to ``receiver`` on ``dst`` (phase 1); return the packet."""
    lanes = [ln for ln, a, b in cfg.lanes if {a, b} == {src, dst}]
    if lane is None:
        if not lanes:
            raise ConfigError(f"{cfg.path}: no lane joins {src} and {dst}")
        lane = lanes[0]
    signer = ed25519_signer(account_key_path(cfg, src, sender))
    url = _url(cfg, src)
    acct = rpc(url, "getAccount", {"name": sender})
    args = {"dst_chain": dst, "lane": lane, "kind": "energy", "receiver": receiver, "denom": denom,
            "amount_wh": amount_wh, "timeout_timestamp_ms": int((time.time() + timeout_s) * 1000)}
    tx = Tx.signed(signer, src, sender, int(acct["nonce"]) + int(acct.get("pending", 0)), "bridge.send", args)
    tx_hash = rpc(url, "submitTx", {"tx": tx.to_json()})["hash"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        res = rpc(url, "getTxResult", {"hash": tx_hash})
        if res is not None:
            if not res["ok"]:
                raise RuntimeError(f"transfer failed on {src}: {res['error']}")
            for ev in rpc(url, "getEvents", {"from": res["height"], "to": res["height"], "type": "send_packet"}):
                if ev.get("tx") == tx_hash:
                    p = decode_packet(bytes.fromhex(ev["packet"]))
                    return {"packet": packet_key(p), "tx": tx_hash, "height": res["height"]}
        time.sleep(0.25)
    raise RuntimeError(f"transfer {tx_hash[:16]} not in a block within 60 s")


def packet_key(p: Any) -> str:
    return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"


def list_packets(cfg: DeploymentConfig, chain_id: str | None = None) -> list[dict[str, Any]]:
    """Every packet sent by the deployment's parks (or one park), with its state read from the chains."""
    out = []
    for chain in cfg.chains:
        if chain_id is not None and chain.id != chain_id:
            continue
        url = _url(cfg, chain.id)
        head = rpc(url, "status")["height"]
        start = 1
        while start <= head:
            for ev in rpc(url, "getEvents", {"from": start, "to": head, "type": "send_packet"}):
                out.append(packet_status(cfg, bytes.fromhex(ev["packet"])) | {"sent_height": ev["height"]})
            start += 1001
    return out


def show_packet(cfg: DeploymentConfig, key: str) -> dict[str, Any]:
    parts = key.split("/")
    if len(parts) != 4 or not parts[3].isdigit():
        raise ConfigError(f"a packet is named src/dst/lane/sequence, got {key!r}")
    src, dst, lane, seq = parts
    raw = rpc(_url(cfg, src), "query", {"key": f"packets/{dst}/{lane}/{seq}"})["value"]
    if raw is None:  # settled: the source dropped it; find it in the source's events
        for p in list_packets(cfg, src):
            if p["packet"] == key:
                return p
        raise ConfigError(f"no packet {key}")
    return packet_status(cfg, bytes.fromhex(bytes.fromhex(raw).decode()))


def packet_status(cfg: DeploymentConfig, raw: bytes) -> dict[str, Any]:
    p = decode_packet(raw)
    src, dst = _url(cfg, p.src_chain), _url(cfg, p.dst_chain)
    relay = _url(cfg, cfg.relay_chain_id) if cfg.relay_base_port is not None else None
    committed = rpc(src, "query", {"key": commitment_path(p.dst_chain, p.lane, p.sequence).decode()})["value"]
    receipt = rpc(dst, "query", {"key": receipt_path(p.src_chain, p.lane, p.sequence).decode()})["value"]
    ack_hex = rpc(dst, "query", {"key": f"acks/{p.src_chain}/{p.lane}/{p.sequence}"})["value"]
    ack = decode_ack(bytes.fromhex(bytes.fromhex(ack_hex).decode())) if ack_hex else None
    verified = outcome = None
    if relay is not None:
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
            "timeout_timestamp_ms": p.timeout_timestamp_ms,
            "ack": None if ack is None else {"success": ack.success, "code": ack.code}}
