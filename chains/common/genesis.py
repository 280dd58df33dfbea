"""The bridge section of a Python park chain's genesis config, shared by the DPoS and PoC parks.

    "bridge": {
      "relay_chain_id": "relay",                 # id of the relay chain whose certificates are accepted
      "relay_validators": {...},                 # ValidatorSet JSON (chains.common.wire), trusted at genesis
      "lanes": [{"lane": "lane-0", "counterparty": "poc-park",
                 "capacities": {"kWh": 50000}}],  # the relay's bucket capacities of the lane
                                                  # from this park (optional: none, not limited)
      "native_denoms": ["kWh"],                  # denominations this park issues (escrowed when sent)
      "rights_operator": "operator",             # account allowed to issue charging rights (optional)
      "transformers": {"tr-1": 150},             # transformer capacities in kW (optional)
      "stations": {"st-1": "tr-1"},              # charging stations -> their transformer (optional)
      "trusting_period_ms": 604800000,           # trust in the relay set without a fresh header (optional,
                                                 # default 7 days; protocol SPEC §7.8)
      "trusted_time_ms": 1700000000000,          # relay time the set is trusted as of (optional: the first
                                                 # certificate starts the clock)
      "relay_admin": "operator",                 # may reset an expired set (optional: the rights operator)
      "max_certificate_age_ms": 600000           # phase 3 refuses an older relay certificate (optional,
      "fee_denom": "prc",                       # the park currency relay fees are paid in (optional: none)
                                                 # default 10 minutes, 10 s .. 1 day; protocol SPEC §7.9)
    }

A park learns its lanes and their capacities from the relay genesis, the same way it learns the relay
validator set: :func:`lanes_from_relay_genesis` turns the relay genesis's ``lanes`` into this section's
``lanes`` for one park (SPEC.md §6.8). Later changes arrive as certified ``bridge.update_lane``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chains.common.bridge import DEFAULT_MAX_CERTIFICATE_AGE_MS, DEFAULT_TRUSTING_PERIOD_MS, init_bridge
from chains.common.state import KVState
from chains.common.wire import validator_set_from_json, validator_set_to_json
from protocol.certificate import ValidatorSet
from protocol.errors import CodecError


def lanes_from_relay_genesis(relay_lanes: Any, chain_id: str) -> list[dict[str, Any]]:
    """The bridge genesis ``lanes`` of ``chain_id`` from the relay genesis ``lanes``
    (``[{"lane", "chains": [a, b], "limits"?: {asset: {"capacity", "refill_per_s"}}}]``, which opens both
    directions with the same limits): every lane touching the park, with the capacities of its limits."""
    if not isinstance(relay_lanes, list):
        raise CodecError("relay genesis lanes must be a JSON array", got=type(relay_lanes).__name__)
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(relay_lanes):
        if not isinstance(entry, dict) or not isinstance(entry.get("chains"), list) or len(entry["chains"]) != 2:
            raise CodecError(f"relay genesis lane {i} is {{lane, chains: [a, b], limits?}}", got=entry)
        a, b = entry["chains"]
        if chain_id not in (a, b):
            continue
        limits = entry.get("limits") or {}
        if not isinstance(limits, dict) or not all(isinstance(v, dict) and "capacity" in v for v in limits.values()):
            raise CodecError(f"relay genesis lane {i}: limits are {{asset: {{capacity, refill_per_s}}}}", got=limits)
        lane: dict[str, Any] = {"lane": entry.get("lane"), "counterparty": b if a == chain_id else a}
        if limits:
            lane["capacities"] = {asset: v["capacity"] for asset, v in limits.items()}
        out.append(lane)
    return out


def bridge_section(relay_chain_id: str, relay_validators: ValidatorSet,
                   lanes: Iterable[tuple[str, str] | dict[str, Any]],
                   native_denoms: Iterable[str] = ("kWh",), rights_operator: str | None = None,
                   transformers: dict[str, int] | None = None,
                   stations: dict[str, str] | None = None, *, trusted_time_ms: int | None = None,
                   trusting_period_ms: int | None = None,
                   max_certificate_age_ms: int | None = None, fee_denom: str | None = None) -> dict[str, Any]:
    """Build the ``bridge`` genesis section; ``lanes`` are ``(lane, counterparty)`` pairs or entries
    ``{lane, counterparty, capacities?}`` (as :func:`lanes_from_relay_genesis` gives them). ``trusted_time_ms``:
    the relay genesis time, as of which the relay set is trusted (protocol SPEC §7.8)."""
    out: dict[str, Any] = {
        "relay_chain_id": relay_chain_id,
        "relay_validators": validator_set_to_json(relay_validators),
        "lanes": [dict(ln) if isinstance(ln, dict) else {"lane": ln[0], "counterparty": ln[1]} for ln in lanes],
        "native_denoms": list(native_denoms),
        "transformers": dict(transformers or {}),
    }
    if rights_operator:
        out["rights_operator"] = rights_operator
    if stations:
        out["stations"] = dict(stations)
    if trusted_time_ms is not None:
        out["trusted_time_ms"] = trusted_time_ms
    if trusting_period_ms is not None:
        out["trusting_period_ms"] = trusting_period_ms
    if max_certificate_age_ms is not None:
        out["max_certificate_age_ms"] = max_certificate_age_ms
    if fee_denom is not None:
        out["fee_denom"] = fee_denom
    return out


def apply_bridge_genesis(state: KVState, chain_id: str, section: Any) -> None:
    """Set the bridge up in genesis state from its config section (nothing if the section is absent)."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise CodecError("genesis 'bridge' must be an object", got=type(section).__name__)
    init_bridge(state, chain_id, str(section["relay_chain_id"]),
                validator_set_from_json(section["relay_validators"]),
                list(section.get("native_denoms", ["kWh"])), list(section.get("lanes", [])),
                rights_operator=section.get("rights_operator"), transformers=section.get("transformers") or None,
                stations=section.get("stations") or None,
                trusting_period_ms=section.get("trusting_period_ms", DEFAULT_TRUSTING_PERIOD_MS),
                trusted_time_ms=section.get("trusted_time_ms"), relay_admin=section.get("relay_admin"),
                max_certificate_age_ms=section.get("max_certificate_age_ms", DEFAULT_MAX_CERTIFICATE_AGE_MS),
                fee_denom=section.get("fee_denom"))
