"""The park chains' light clients hosted by the relay chain: client types ``dpos`` and ``poc`` (SPEC.md §8, DESIGN §3).

Each type adapts a chain package's light client (:class:`chains.dpos.light_client.DposLightClient`,
:class:`chains.poc.light_client.PocLightClient`) to :class:`~relay.state_machine.clients.ClientType`: its
state is the client's own canonical ``to_state`` bytes (formats in those modules' docstrings), headers
decode strictly from the park's binary encoding, and a header is redundant only when the client already
holds it (``holds``): under longest-chain (DPoS) or heaviest-chain (PoC) fork choice a header at or below
the tip's height may be a fork header the client has not seen, and must be admitted.

Init args (``clients.<chain id>.init`` in the relay genesis, or ``init`` of a governance ``client.create``),
a JSON object; unknown keys are :class:`~protocol.errors.CodecError`::

    {
      "genesis": {...},                  # the park's genesis config, exactly as its nodes load it
      "trusting_period_ms": 1209600000,  # > 0: the client expires without a final header for this long
      "max_consensus_states": 512,       # optional: final heights kept for proofs (1..4096, default 512)
      "max_pending_headers": 4096,       # dpos only, optional: non-final headers held (1..65536, default 4096)
      "confirmation_depth": 6,           # poc only, optional: default the genesis config's (as the park's nodes)
      "fork_history": 128,               # poc only, optional: final headers kept as fork points (0..4096)
      "finality_window_ms": 60000,       # poc only, optional: relay time a header stays on the best branch
                                         #   before it is final, besides its depth (0..86400000; SPEC §8.4)
      "max_pending": 1024,               # poc only, optional: non-final headers held (2..65536)
      "max_pending_per_farmer": 128,     # poc only, optional: one farmer's non-final headers off the best branch
      "max_distance": 512                # poc only, optional: heights a held header may be above the final tip
    }                                    #   (confirmation_depth < max_distance < max_pending)

The client's trusted header is the park's genesis header, derived from ``genesis`` by the same function
the park's node runs (bridge section included), so it is the header block 1 links to. The bounds are
lower than the light clients' own defaults because the relay rewrites a client's whole state with every
update it accepts: the state grows with final and pending headers held.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.dpos.light_client import DposLightClient
from chains.dpos.types import DposHeader
from chains.ethereum.light_client import EthereumLightClient
from chains.ethereum.types import EthHeader
from chains.poc.light_client import PocClientParams, PocLightClient
from chains.poc.types import decode_header as decode_poc_header
from protocol.errors import CodecError
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId
from relay.state_machine.clients import ClientType, persistent_client_type
from relay.state_machine.records import json_object, obj_args

__all__ = [
    "DPOS_TYPE",
    "ETHEREUM_TYPE",
    "HOSTED_MAX_CONSENSUS_STATES",
    "HOSTED_MAX_PENDING_HEADERS",
    "POC_CLIENT_PARAMS",
    "POC_TYPE",
    "create_dpos",
    "create_ethereum",
    "create_poc",
    "default_client_types",
]

HOSTED_MAX_CONSENSUS_STATES = 512
"""Default of ``max_consensus_states``: final heights a hosted client keeps (about 8 min of 1 s DPoS blocks)."""
HOSTED_MAX_PENDING_HEADERS = 4096
"""Default of ``max_pending_headers`` of a hosted DPoS client: how long (in blocks) the park's LIB may stall."""
_MAX_CONSENSUS_STATES = 4096
_MAX_PENDING_HEADERS = 65536
_MAX_FORK_HISTORY = 4096
POC_CLIENT_PARAMS = tuple(PocClientParams.__dataclass_fields__)
"""Init keys of a ``poc`` client that are :class:`~chains.poc.light_client.PocClientParams`."""


def _bounded(init: Mapping[str, Any], name: str, default: int | None, low: int, high: int, what: str) -> int:
    value = init.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CodecError(f"{name} of {what} out of range", expected=f"{low}..{high}", got=value)
    return value


def create_dpos(client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> DposLightClient:
    """A ``dpos`` client from init args (module docstring): trusts the park's genesis."""
    what = f"the init of dpos client {client_id}"
    args = obj_args(init, what, ("genesis", "trusting_period_ms"), ("max_consensus_states", "max_pending_headers"))
    return DposLightClient.from_genesis(
        client_id, chain_id, json_object(args["genesis"], f"genesis of {what}"),
        _bounded(args, "trusting_period_ms", None, 1, 2**63 - 1, what),
        max_consensus_states=_bounded(args, "max_consensus_states", HOSTED_MAX_CONSENSUS_STATES, 1,
                                      _MAX_CONSENSUS_STATES, what),
        max_pending_headers=_bounded(args, "max_pending_headers", HOSTED_MAX_PENDING_HEADERS, 1, _MAX_PENDING_HEADERS,
                                     what))


def create_poc(client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> PocLightClient:
    """A ``poc`` client from init args (module docstring): trusts the park's genesis."""
    what = f"the init of poc client {client_id}"
    args = obj_args(init, what, ("genesis", "trusting_period_ms"),
                    ("max_consensus_states", "confirmation_depth", "fork_history", *POC_CLIENT_PARAMS))
    depth = args.get("confirmation_depth")
    # PocClientParams checks each value and their relations (CodecError), defaults for what is absent
    client_params = PocClientParams.from_json({k: args[k] for k in POC_CLIENT_PARAMS if k in args})
    return PocLightClient.from_genesis(
        client_id, chain_id, json_object(args["genesis"], f"genesis of {what}"),
        _bounded(args, "trusting_period_ms", None, 1, 2**63 - 1, what),
        confirmation_depth=None if depth is None else _bounded(args, "confirmation_depth", None, 1, 2**16, what),
        fork_history=_bounded(args, "fork_history", 128, 0, _MAX_FORK_HISTORY, what),
        max_consensus_states=_bounded(args, "max_consensus_states", HOSTED_MAX_CONSENSUS_STATES, 1,
                                      _MAX_CONSENSUS_STATES, what),
        client_params=client_params)


def _poc_advance(client: LightClient[Any], now_ms: int) -> bool:
    if not isinstance(client, PocLightClient):
        raise TypeError(f"the poc client type hosts PocLightClient, not {type(client).__name__}")
    return client.advance(now_ms)


def _dpos_holds(client: LightClient[Any], header: Any) -> bool:
    if not isinstance(client, DposLightClient):
        raise TypeError(f"the dpos client type hosts DposLightClient, not {type(client).__name__}")
    return client.holds(header)


def _poc_holds(client: LightClient[Any], header: Any) -> bool:
    if not isinstance(client, PocLightClient):
        raise TypeError(f"the poc client type hosts PocLightClient, not {type(client).__name__}")
    return client.holds(header)


DPOS_TYPE: ClientType = persistent_client_type(DposLightClient, decode_header=DposHeader.decode, create=create_dpos,
                                               is_redundant=_dpos_holds)
"""The relay's adapter for :class:`~chains.dpos.light_client.DposLightClient`."""

POC_TYPE: ClientType = persistent_client_type(PocLightClient, decode_header=decode_poc_header, create=create_poc,
                                              is_redundant=_poc_holds, advance=_poc_advance)
"""The relay's adapter for :class:`~chains.poc.light_client.PocLightClient` (real chiapos verifier)."""


def create_ethereum(client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> EthereumLightClient:
    """An ``ethereum`` client from init args. Besides the client's own form
    (:meth:`EthereumLightClient.from_init`), accepts the park's genesis as the other parks do:
    ``{"genesis": {...}, "trusting_period_ms": ...}``, taking ``eth_chain_id``, ``confirmation_depth``
    and the bridge's address from it. Finality needs no trusted header: it comes from attestations."""
    if "genesis" not in init:
        return EthereumLightClient.from_init(client_id, chain_id, init)
    what = f"the init of ethereum client {client_id}"
    args = obj_args(init, what, ("genesis", "trusting_period_ms"), ("max_consensus_states", "max_pending_headers"))
    genesis = json_object(args["genesis"], f"genesis of {what}")
    contracts = json_object(genesis.get("contracts"), f"contracts in the genesis of {what}")
    own = {k: v for k, v in args.items() if k != "genesis"}
    try:
        own.update(eth_chain_id=genesis["eth_chain_id"], confirmation_depth=genesis["confirmation_depth"],
                   bridge_address=contracts["bridge"])
    except KeyError as exc:
        raise CodecError(f"the genesis in {what} lacks {exc}") from exc
    return EthereumLightClient.from_init(client_id, chain_id, own)


def _eth_holds(client: LightClient[Any], header: Any) -> bool:
    if not isinstance(client, EthereumLightClient):
        raise TypeError(f"the ethereum client type hosts EthereumLightClient, not {type(client).__name__}")
    return client.holds(header)


ETHEREUM_TYPE: ClientType = persistent_client_type(EthereumLightClient, decode_header=EthHeader.decode,
                                                   create=create_ethereum, is_redundant=_eth_holds)
"""The relay's adapter for :class:`~chains.ethereum.light_client.EthereumLightClient` (finality by attestation)."""


def default_client_types() -> list[ClientType]:
    """The client types a relay node hosts: one per park chain kind."""
    return [DPOS_TYPE, POC_TYPE, ETHEREUM_TYPE]
