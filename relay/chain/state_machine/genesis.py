"""Genesis of the relay chain's application state (docs/architecture.md §7: one config describes the deployment).

The genesis config is JSON (parsed strictly: unknown keys are :class:`~protocol.errors.CodecError`)::

    {
      "chain_id":   "relay",
      "validators": ValidatorSet wire JSON (chains.common.wire),          # authorises governance
      "clients":    {"<park chain id>": {"client_type": "dpos", "init": {...}}, ...},
      "lanes":      [{"lane": "lane-0", "chains": ["dpos-park", "poc-park"],
                      "limits"?: {"kWh": {"capacity": 50000, "refill_per_s": 100}, "*": {...}}}, ...],
      "accounts"?:  {"relayer-a": "<ed25519 pubkey hex>", ...},   # governance grants: no bond (SPEC §6.9)
      "bonds"?:     {"min_bond"?: 1000, "unbonding_ms"?: 86400000, "slash_after_failures"?: 5,
                     "slash_fraction_bps"?: 1000, "failure_window_ms"?: 3600000,
                     "balances"?: {"<account name>": <bond units>, ...}},   # relay/chain/state_machine/bonds.py
      "recovery_delay_ms"?: 600000,    # client.recover waits this long after a freeze (SPEC §8.8; default
                                       # 11 minutes, 0 .. 7 days; >= every park bridge's
                                       # max_certificate_age_ms + the relay-park clock skew)
      "prune_verified"?: true          # an outcome record replaces the packet's verified record (SPEC §6.6;
                                       # default true; false: both kept, as chains made before it do)
    }

Clients are created in sorted chain-id order (so their ids ``<type>-<n>`` do not depend on how the
file was written); each lane entry opens both directions with the same limits.
"""

from __future__ import annotations

from typing import Any

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import create_account
from protocol.errors import CodecError, ProtocolError, UnknownClientError
from protocol.types import ChainId, check_id
from relay.chain.state_machine.bonds import init_bonds, parse_genesis_bonds
from relay.chain.state_machine.clients import RelayClientRouter, process_client_create
from relay.chain.state_machine.evidence import record_validator_set
from relay.chain.state_machine.keys import CONFIG_KEY, PRUNE_VERIFIED_KEY
from relay.chain.state_machine.lanes import limits_from_json, open_lane
from relay.chain.state_machine.records import Event, json_object, obj_args, str_arg
from relay.chain.state_machine.recovery import MAX_RECOVERY_DELAY_MS

__all__ = ["init_genesis"]


def init_genesis(state: ChainState, router: RelayClientRouter, config: Any) -> list[Event]:
    """Write the genesis state; returns the events of what it created."""
    if state.get(CONFIG_KEY) is not None:
        raise ProtocolError("relay chain state already initialised")
    cfg = obj_args(config, "relay genesis", ("chain_id", "validators", "clients", "lanes"),
                   ("accounts", "recovery_delay_ms", "bonds", "prune_verified"))
    chain_id = check_id("relay chain", str_arg(cfg, "chain_id", "genesis"))
    vset = wire.validator_set_from_json(cfg["validators"])
    clients = json_object(cfg["clients"], "genesis clients")
    lanes = cfg["lanes"]
    if not isinstance(lanes, list):
        raise CodecError("genesis lanes must be a JSON array", got=type(lanes).__name__)
    accounts = json_object(cfg.get("accounts", {}), "genesis accounts")
    bond_params, bond_balances = parse_genesis_bonds(cfg.get("bonds"))

    delay = cfg.get("recovery_delay_ms")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int)
                              or not 0 <= delay <= MAX_RECOVERY_DELAY_MS):
        raise CodecError("recovery_delay_ms out of bounds (ms)", expected=f"0..{MAX_RECOVERY_DELAY_MS}", got=delay)

    prune = cfg.get("prune_verified", True)
    if not isinstance(prune, bool):
        raise CodecError("prune_verified is true or false", got=prune)

    state.set_json(CONFIG_KEY, {"chain_id": chain_id, **({"recovery_delay_ms": delay} if delay is not None else {})})
    if prune:
        state.set(PRUNE_VERIFIED_KEY, b"1")
    record_validator_set(state, vset, 1)  # refuses a repeated ed25519 key or Ethereum address
    events: list[Event] = []
    for park in sorted(clients):
        spec = obj_args(clients[park], f"genesis client of {park}", ("client_type", "init"))
        init = spec["init"]
        if not isinstance(init, dict):
            raise CodecError(f"init of the client of {park} must be a JSON object", got=type(init).__name__)
        events += process_client_create(router, state, ChainId(check_id("chain", park)),
                                        str_arg(spec, "client_type", "genesis client"), init)
    for i, entry in enumerate(lanes):
        spec = obj_args(entry, f"genesis lane {i}", ("lane", "chains"), ("limits",))
        pair = spec["chains"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise CodecError(f"genesis lane {i}: chains is a pair of chain ids", got=pair)
        a, b = (check_id("chain", c) for c in pair)
        for chain in (a, b):
            if not router.has_client(state, chain):
                raise UnknownClientError(f"genesis lane {i} names a chain without a light client", got=chain)
        limits = limits_from_json(spec.get("limits", {}))
        lane = str_arg(spec, "lane", "genesis lane")
        events += open_lane(state, a, b, lane, limits)
        events += open_lane(state, b, a, lane, limits)
    for name in sorted(accounts):
        create_account(state, name, wire.hex_bytes(accounts[name], f"pubkey of account {name}", 32))
        events.append({"type": "account_registered", "name": name})
    init_bonds(state, bond_params, bond_balances, accounts)
    return events
