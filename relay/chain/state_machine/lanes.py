"""Lanes on the relay chain: registration, status and rate limits (SPEC.md §6.4 step 4-5, §6.7).

A lane record is *directed*: ``(src, dst, lane)`` carries packets from ``src`` to ``dst``. Genesis
usually opens both directions of a lane with the same limits; governance acts on one direction at a
time. Phase 2 requires the packet's lane registered and not paused (``lane.invalid``); phase 4
(confirm ack / timeout) does *not* look at the lane status, so packets already verified can always be
confirmed and refunded while a lane is paused. When a park's light client freezes, every lane with
that park at either end pauses (``relay/chain_lanes/<chain>`` indexes them); only governance resumes a
lane, typically after a new client replaced the frozen one.

Every open or re-limit also writes the lane-config record ``relay/lane_config/{src}/{dst}/{lane}``
(SPEC §6.8: capacities per asset, ABI-encoded) that parks learn their phase-1 refusals from through a
relay certificate. A packet needing more tokens than its bucket's capacity is ``lane.over_capacity``
(never admitted, whatever the refill), a short bucket ``lane.rate_limited`` (resubmit later).

Rate limits (SPEC §6.7): a token bucket per ``(src, dst, lane, asset)``; the asset is the energy denom
(tokens are Wh) or the kind name ``charging_right`` / ``reputation`` (tokens are packets). A lane's
``limits`` maps assets to ``{capacity, refill_per_s}``; the asset ``*`` is the default for any asset
not listed; an asset with neither is not rate limited. Buckets start full and refill with the relay
block time. The bucket stores *milli-tokens* (``milli = 1000 × tokens``), so refilling by
``refill_per_s × elapsed_ms`` milli-tokens is exact: SPEC §6.7's whole-token integer division, applied
block by block with ``last_ms := now``, would lose the fraction at every block (a lane refilling
1 token/s with blocks every 500 ms would never refill). The whole-token view is ``milli // 1000``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.common.state import ChainState
from protocol.codec import MAX_STRING
from protocol.errors import CodecError, LaneError, OverCapacityError, RateLimitError
from protocol.lane_config import encode_lane_config
from protocol.paths import lane_config_path
from protocol.types import ChainId, LaneId, PacketKind, check_id, check_uint
from relay.chain.state_machine.keys import bucket_key, chain_lanes_key, lane_key
from relay.chain.state_machine.records import Event, Staged

__all__ = [
    "ASSET_ANY",
    "Lane",
    "RateLimit",
    "bucket_tokens",
    "check_tokens",
    "kind_asset",
    "lane_event",
    "limits_from_json",
    "limits_to_json",
    "load_lane",
    "open_lane",
    "pause_chain_lanes",
    "pause_lane",
    "require_open_lane",
    "resume_lane",
    "set_limits",
    "take_tokens",
]

ASSET_ANY = "*"
"""The default limit of a lane: applies to every asset without its own entry."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket's parameters (SPEC §6.7)."""

    capacity: int
    """Most tokens the bucket holds (Wh for energy, packets otherwise); it starts full."""
    refill_per_s: int
    """Tokens added per second of relay block time."""


@dataclass(frozen=True, slots=True)
class Lane:
    """A directed lane as the relay records it."""

    src: str
    """Chain packets come from."""
    dst: str
    """Chain packets go to."""
    lane: str
    """Lane id (the same in both directions)."""
    paused: bool
    """Whether phase 2 refuses packets on it."""
    reason: str
    """Why it is paused (``governance``, ``client dpos-3 frozen``…), empty when open."""
    limits: Mapping[str, RateLimit]
    """Rate limit per asset (``*``: default)."""

    def limit_for(self, asset: str) -> RateLimit | None:
        return self.limits.get(asset, self.limits.get(ASSET_ANY))

    def to_json(self) -> dict[str, Any]:
        return {"paused": self.paused, "reason": self.reason, "limits": limits_to_json(self.limits)}


def limits_from_json(value: Any) -> dict[str, RateLimit]:
    """Parse ``{asset: {"capacity": int, "refill_per_s": int}}`` strictly."""
    if not isinstance(value, dict):
        raise CodecError("lane limits must be a JSON object", got=type(value).__name__)
    out: dict[str, RateLimit] = {}
    for asset, spec in value.items():
        if not isinstance(asset, str) or not asset or len(asset.encode()) > MAX_STRING:
            raise CodecError("a rate-limited asset is a denom or a kind name", got=asset)
        if not isinstance(spec, dict) or set(spec) != {"capacity", "refill_per_s"}:
            raise CodecError("a rate limit is {capacity, refill_per_s}", got=spec)
        out[asset] = RateLimit(check_uint(f"capacity of {asset}", spec["capacity"]),
                               check_uint(f"refill_per_s of {asset}", spec["refill_per_s"]))
    return out


def limits_to_json(limits: Mapping[str, RateLimit]) -> dict[str, Any]:
    return {a: {"capacity": r.capacity, "refill_per_s": r.refill_per_s} for a, r in sorted(limits.items())}


def load_lane(state: ChainState | Staged, src: str, dst: str, lane: str) -> Lane | None:
    raw = state.get_json(lane_key(src, dst, lane))
    if raw is None:
        return None
    return Lane(src, dst, lane, bool(raw["paused"]), str(raw["reason"]), limits_from_json(raw["limits"]))


def require_open_lane(state: ChainState | Staged, src: str, dst: str, lane: str) -> Lane:
    """The lane, or ``lane.invalid`` if it is not registered or paused (SPEC §6.4 step 4)."""
    rec = load_lane(state, src, dst, lane)
    if rec is None:
        raise LaneError("lane not registered on the relay", expected=f"a lane {src} -> {dst}",
                        got=f"{src}/{dst}/{lane}")
    if rec.paused:
        raise LaneError(f"lane {src}/{dst}/{lane} is paused: {rec.reason}", expected="an open lane", got="paused")
    return rec


def lane_event(kind: str, rec: Lane) -> Event:
    return {"type": kind, "src": rec.src, "dst": rec.dst, "lane": rec.lane, "paused": rec.paused,
            "reason": rec.reason, "limits": limits_to_json(rec.limits)}


def _store(state: ChainState, rec: Lane) -> None:
    state.set_json(lane_key(rec.src, rec.dst, rec.lane), rec.to_json())


def _store_config(state: ChainState, rec: Lane) -> None:
    """The lane-config record parks learn capacities from (SPEC §6.8); certified like any relay record."""
    state.set(lane_config_path(ChainId(rec.src), ChainId(rec.dst), LaneId(rec.lane)),
              encode_lane_config({a: r.capacity for a, r in rec.limits.items()}))


def _existing(state: ChainState, src: str, dst: str, lane: str) -> Lane:
    rec = load_lane(state, src, dst, lane)
    if rec is None:
        raise LaneError("lane not registered on the relay", got=f"{src}/{dst}/{lane}")
    return rec


def open_lane(state: ChainState, src: str, dst: str, lane: str, limits: Mapping[str, RateLimit]) -> list[Event]:
    """Register a directed lane (both ends must be known parks: the caller checks their clients)."""
    check_id("src chain", src)
    check_id("dst chain", dst)
    check_id("lane", lane)
    if src == dst:
        raise LaneError("a lane joins two different chains", got=src)
    if load_lane(state, src, dst, lane) is not None:
        raise LaneError("lane already registered", got=f"{src}/{dst}/{lane}")
    rec = Lane(src, dst, lane, False, "", dict(limits))
    _store(state, rec)
    _store_config(state, rec)
    for chain in (src, dst):
        index = state.get_json(chain_lanes_key(chain)) or []
        index.append([src, dst, lane])
        state.set_json(chain_lanes_key(chain), sorted(index))
    return [lane_event("lane_opened", rec)]


def pause_lane(state: ChainState, src: str, dst: str, lane: str, reason: str) -> list[Event]:
    rec = _existing(state, src, dst, lane)
    new = Lane(src, dst, lane, True, reason, rec.limits)
    _store(state, new)
    return [lane_event("lane_paused", new)]


def resume_lane(state: ChainState, src: str, dst: str, lane: str) -> list[Event]:
    rec = _existing(state, src, dst, lane)
    new = Lane(src, dst, lane, False, "", rec.limits)
    _store(state, new)
    return [lane_event("lane_resumed", new)]


def set_limits(state: ChainState, src: str, dst: str, lane: str, limits: Mapping[str, RateLimit]) -> list[Event]:
    """Replace the lane's limits. Existing buckets keep their tokens, capped at the new capacity on use."""
    rec = _existing(state, src, dst, lane)
    new = Lane(src, dst, lane, rec.paused, rec.reason, dict(limits))
    _store(state, new)
    _store_config(state, new)
    return [lane_event("lane_limits_set", new)]


def pause_chain_lanes(state: ChainState, chain_id: str, reason: str) -> list[Event]:
    """Pause every lane with ``chain_id`` at either end (its client froze)."""
    events: list[Event] = []
    for src, dst, lane in state.get_json(chain_lanes_key(chain_id)) or []:
        events += pause_lane(state, src, dst, lane, reason)
    return events


# --- rate limits ------------------------------------------------------------------------------------


def kind_asset(kind: PacketKind) -> str:
    """The rate-limit asset of a non-energy packet: its kind name (tokens are packets)."""
    return kind.name.lower()


def _refilled(bucket: Any, limit: RateLimit, now_ms: int) -> int:
    full = limit.capacity * 1000
    if bucket is None:
        return full
    elapsed = max(0, now_ms - int(bucket["last_ms"]))
    return min(full, int(bucket["milli"]) + limit.refill_per_s * elapsed)


def check_tokens(staged: Staged, rec: Lane, asset: str, amount: int, now_ms: int) -> tuple[bytes, Any] | None:
    """The bucket after taking ``amount`` tokens of ``asset`` as ``(key, record)`` (``None``: not limited),
    or ``lane.rate_limited``. Writes nothing: stage the result with :func:`take_tokens`."""
    limit = rec.limit_for(asset)
    if limit is None:
        return None
    if amount > limit.capacity:  # no refill ever admits it: a refusal for good, not "resubmit later"
        raise OverCapacityError(
            f"lane {rec.src}/{rec.dst}/{rec.lane}: {amount} tokens of {asset} exceed the bucket's capacity",
            expected=f"<= {limit.capacity}", got=amount)
    key = bucket_key(rec.src, rec.dst, rec.lane, asset)
    milli = _refilled(staged.get_json(key), limit, now_ms)
    need = amount * 1000
    if need > milli:
        raise RateLimitError(
            f"lane {rec.src}/{rec.dst}/{rec.lane}: the bucket of {asset} holds too little "
            f"(capacity {limit.capacity}, refill {limit.refill_per_s}/s)",
            expected=f">= {amount}", got=milli // 1000)
    return key, {"milli": milli - need, "last_ms": now_ms}


def take_tokens(staged: Staged, taken: tuple[bytes, Any] | None) -> None:
    """Stage what :func:`check_tokens` computed."""
    if taken is not None:
        staged.put(*taken)


def bucket_tokens(state: ChainState, rec: Lane, asset: str, now_ms: int) -> int | None:
    """A query: whole tokens of ``asset`` available on the lane at ``now_ms`` (``None``: not limited)."""
    limit = rec.limit_for(asset)
    if limit is None:
        return None
    return _refilled(state.get_json(bucket_key(rec.src, rec.dst, rec.lane, asset)), limit, now_ms) // 1000
