"""The bridge section of a Python park chain's genesis config, shared by the DPoS and PoC parks.

    "bridge": {
      "relay_chain_id": "relay",                 # id of the relay chain whose certificates are accepted
      "relay_validators": {...},                 # ValidatorSet JSON (chains.common.wire), trusted at genesis
      "lanes": [{"lane": "lane-0", "counterparty": "poc-park"}],
      "native_denoms": ["kWh"],                  # denominations this park issues (escrowed when sent)
      "rights_operator": "operator",             # account allowed to issue charging rights (optional)
      "transformers": {"tr-1": 150}              # transformer capacities in kW (optional)
    }
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chains.common.bridge import init_bridge
from chains.common.state import ChainState
from chains.common.wire import validator_set_from_json, validator_set_to_json
from protocol.certificate import ValidatorSet
from protocol.errors import CodecError


def bridge_section(relay_chain_id: str, relay_validators: ValidatorSet, lanes: Iterable[tuple[str, str]],
                   native_denoms: Iterable[str] = ("kWh",), rights_operator: str | None = None,
                   transformers: dict[str, int] | None = None) -> dict[str, Any]:
    """Build the ``bridge`` genesis section; ``lanes`` are ``(lane, counterparty)`` pairs."""
    out: dict[str, Any] = {
        "relay_chain_id": relay_chain_id,
        "relay_validators": validator_set_to_json(relay_validators),
        "lanes": [{"lane": lane, "counterparty": cp} for lane, cp in lanes],
        "native_denoms": list(native_denoms),
        "transformers": dict(transformers or {}),
    }
    if rights_operator:
        out["rights_operator"] = rights_operator
    return out


def apply_bridge_genesis(state: ChainState, chain_id: str, section: Any) -> None:
    """Set the bridge up in genesis state from its config section (nothing if the section is absent)."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise CodecError("genesis 'bridge' must be an object", got=type(section).__name__)
    init_bridge(state, chain_id, str(section["relay_chain_id"]),
                validator_set_from_json(section["relay_validators"]),
                list(section.get("native_denoms", ["kWh"])), list(section.get("lanes", [])),
                rights_operator=section.get("rights_operator"), transformers=section.get("transformers") or None)
