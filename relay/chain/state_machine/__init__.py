"""The relay chain's application state machine (SPEC.md §6.4, §6.6, §6.7, §8; docs/architecture.md §2, §3).

Pure and deterministic: no I/O, no clock (block time arrives in a
:class:`~chains.common.tx.BlockContext`), and every record lives in one
:class:`~chains.common.state.ChainState` whose root the relay header commits to, so relay
certificates prove ``relay/verified/…`` and ``relay/outcome/…`` exactly as the park bridges expect.

Modules, one per concept:

* :mod:`~relay.chain.state_machine.clients` — hosted light clients, their router and persistence
  (``to_state`` / ``from_state``), ``client.update`` and ``client.misbehaviour``.
* :mod:`~relay.chain.state_machine.park_clients` — the ``dpos`` and ``poc`` client types, created from the
  park's genesis config (the default set of :class:`RelayStateMachine`).
* :mod:`~relay.chain.state_machine.packets` — phase 2 (verify, batched) and the relay half of phase 4
  (confirm ack, confirm timeout).
* :mod:`~relay.chain.state_machine.lanes` — lane registration and status, token-bucket rate limits.
* :mod:`~relay.chain.state_machine.supply` — the supply accountant (invariant I2).
* :mod:`~relay.chain.state_machine.governance` — actions signed by > 2/3 of the relay validators' power.
* :mod:`~relay.chain.state_machine.admission` — cheap rejection of redundant relays, in-block dedupe.
* :mod:`~relay.chain.state_machine.bonds` — bonded relay accounts: registration bonds, unbonding, charged
  failures and slashing (SPEC.md §6.9).
* :mod:`~relay.chain.state_machine.genesis` — the genesis config.
* :mod:`~relay.chain.state_machine.requests` — the ops and their JSON arguments.
* :mod:`~relay.chain.state_machine.keys` — every state key.
* :mod:`~relay.chain.state_machine.app` — :class:`RelayStateMachine`, what the relay node runs.
"""

from relay.chain.state_machine.app import (
    RELAY_MAX_TX_BYTES,
    BlockBuild,
    BlockResult,
    RelayStateMachine,
    relay_tx_from_json,
)
from relay.chain.state_machine.clients import (
    ClientType,
    HostedClient,
    RelayClientRouter,
    base_state_to_json,
    persistent_client_type,
    restore_base_state,
)
from relay.chain.state_machine.governance import governance_sign_bytes, sign_governance, store_validator_set
from relay.chain.state_machine.park_clients import DPOS_TYPE, POC_TYPE, default_client_types

__all__ = [
    "DPOS_TYPE",
    "POC_TYPE",
    "RELAY_MAX_TX_BYTES",
    "BlockBuild",
    "BlockResult",
    "ClientType",
    "HostedClient",
    "RelayClientRouter",
    "RelayStateMachine",
    "base_state_to_json",
    "default_client_types",
    "governance_sign_bytes",
    "persistent_client_type",
    "relay_tx_from_json",
    "restore_base_state",
    "sign_governance",
    "store_validator_set",
]
