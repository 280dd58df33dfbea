"""What the DPoS and PoC market handlers share: state reads and signed transactions over parkrelay's park
JSON-RPC (:class:`relay.ops.parks.PyPark`)."""

from __future__ import annotations

import json
from typing import Any

from relay.ops.market import MarketContext
from relay.ops.parks import rpc

__all__ = ["events_of", "read_json", "status", "submit"]


def read_json(ctx: MarketContext, key: str) -> Any:
    """The JSON value of state key ``key`` at the park's head, None when absent."""
    raw = ctx.view.query(key)
    return None if raw is None else json.loads(raw)


def status(ctx: MarketContext) -> dict[str, Any]:
    """The head node's ``status`` (height, final_height, timestamp_ms of the head…)."""
    out: dict[str, Any] = rpc(ctx.view.url, "status")
    return out


def events_of(ctx: MarketContext, height: int, kind: str | None = None, tx: str | None = None
              ) -> list[dict[str, Any]]:
    """The events of block ``height`` (of one ``kind``, or one transaction)."""
    params: dict[str, Any] = {"from": height, "to": height}
    if kind:
        params["type"] = kind
    evs: list[dict[str, Any]] = rpc(ctx.view.url, "getEvents", params)
    return [e for e in evs if tx is None or e.get("tx") == tx]


def submit(ctx: MarketContext, sender: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Sign ``op`` as ``sender`` (its devnet key), wait for its block: ``{tx, height, events}``. A refusal raises
    :class:`relay.ops.parks.TxRefusedError` with the chain's error code."""
    tx_hash, res = ctx.view._submit(sender, op, args)  # the view's one signing path
    height = int(res["height"])
    return {"op": op, "sender": sender, "tx": tx_hash, "height": height,
            "events": [{k: v for k, v in e.items() if k not in ("tx", "height")}
                       for e in events_of(ctx, height, tx=tx_hash)]}
