"""The park chains' light clients hosted by the relay chain: one client type per chain kind (SPEC.md §8).

Each type adapts a chain kind's light client (:attr:`chains.common.kind.ChainKind.light_client_type`:
:class:`chains.dpos.light_client.DposLightClient`, :class:`chains.poc.light_client.PocLightClient`,
:class:`chains.ethereum.light_client.EthereumLightClient`) to :class:`~relay.chain.state_machine.clients.ClientType`:
its state is the client's own canonical ``to_state`` bytes (formats in those modules' docstrings), headers
decode strictly from the park's binary encoding (:meth:`~chains.common.kind.ChainKind.decode_header`), and a
header is redundant only when the client already holds it (``holds``): under longest-chain (DPoS) or
heaviest-chain (PoC) fork choice a header at or below the tip's height may be a fork header the client has
not seen, and must be admitted.

Init args (``clients.<chain id>.init`` in the relay genesis, or ``init`` of a governance ``client.create``)
are each kind's (:meth:`~chains.common.kind.ChainKind.create_light_client`; formats in
``chains/<kind>/kind.py``); unknown keys are :class:`~protocol.errors.CodecError`. The client types are made
from :data:`chains.registry.KINDS`, so a new kind needs no edit here.
"""

from __future__ import annotations

from chains.common.kind import HOSTED_MAX_CONSENSUS_STATES, HOSTED_MAX_PENDING_HEADERS, ChainKind
from chains.registry import KINDS
from relay.chain.state_machine.clients import ClientType, persistent_client_type

__all__ = [
    "DPOS_TYPE",
    "ETHEREUM_TYPE",
    "HOSTED_MAX_CONSENSUS_STATES",
    "HOSTED_MAX_PENDING_HEADERS",
    "POC_TYPE",
    "create_dpos",
    "create_ethereum",
    "create_poc",
    "default_client_types",
]


def client_type_of(kind: ChainKind) -> ClientType:
    """The relay's client type for chain kind ``kind`` (its name is the client type)."""
    if kind.light_client_type.client_type != kind.name:
        raise TypeError(f"chain kind {kind.name} hosts {kind.light_client_type.__name__}, whose client type is "
                        f"{kind.light_client_type.client_type!r}")
    return persistent_client_type(kind.light_client_type, decode_header=kind.decode_header,
                                  create=kind.create_light_client, is_redundant=kind.holds,
                                  advance=kind.advance_light_client if kind.advances_with_time else None,
                                  final_at=kind.light_client_final_at if kind.advances_with_time else None)


CLIENT_TYPES: dict[str, ClientType] = {name: client_type_of(kind) for name, kind in KINDS.items()}
"""The relay's client type of every park chain kind, by name."""

DPOS_TYPE: ClientType = CLIENT_TYPES["dpos"]
"""The relay's adapter for :class:`~chains.dpos.light_client.DposLightClient`."""
POC_TYPE: ClientType = CLIENT_TYPES["poc"]
"""The relay's adapter for :class:`~chains.poc.light_client.PocLightClient` (real chiapos verifier)."""
ETHEREUM_TYPE: ClientType = CLIENT_TYPES["ethereum"]
"""The relay's adapter for :class:`~chains.ethereum.light_client.EthereumLightClient` (finality by attestation)."""

create_dpos = KINDS["dpos"].create_light_client
create_poc = KINDS["poc"].create_light_client
create_ethereum = KINDS["ethereum"].create_light_client


def default_client_types() -> list[ClientType]:
    """The client types a relay node hosts: one per park chain kind."""
    return list(CLIENT_TYPES.values())
