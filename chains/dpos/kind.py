"""The DPoS park as a chain kind (:class:`chains.common.kind.ChainKind`): ``kind = "dpos"``.

Light-client init args (``clients.<chain id>.init`` in the relay genesis, or ``init`` of a governance
``client.create``), a JSON object; unknown keys are :class:`~protocol.errors.CodecError`::

    {
      "genesis": {...},                  # the park's genesis config, exactly as its nodes load it
      "trusting_period_ms": 1209600000,  # > 0: the client expires without a final header for this long
      "max_consensus_states": 512,       # optional: final heights kept for proofs (1..4096, default 512)
      "max_pending_headers": 4096        # optional: non-final headers held (1..65536, default 4096)
    }

The client's trusted header is the park's genesis header, derived from ``genesis`` by the same function the
park's node runs (bridge section included), so it is the header block 1 links to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chains.common.kind import (
    HOSTED_MAX_CONSENSUS_STATES,
    HOSTED_MAX_PENDING_HEADERS,
    ParkNodeKind,
    bounded_init_int,
    init_args,
    init_object,
)
from chains.dpos.light_client import DposLightClient
from chains.dpos.params import DposChainParams
from chains.dpos.types import DposHeader
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId

if TYPE_CHECKING:
    pass

__all__ = ["DPOS", "DposKind"]

_MAX_CONSENSUS_STATES = 4096
_MAX_PENDING_HEADERS = 65536


class DposKind(ParkNodeKind):
    """Graphene-style DPoS witnesses on the shared park-node runtime; client type ``dpos``."""

    name = "dpos"
    params_type = DposChainParams
    node_flag = "--witness"
    key_scheme = "ed25519"
    node_module = "chains.dpos.node"
    client_params = ("max_consensus_states", "max_pending_headers")

    @property
    def light_client_type(self) -> type[LightClient[Any]]:
        return DposLightClient

    def create_light_client(self, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> DposLightClient:
        """A ``dpos`` client from init args (module docstring): trusts the park's genesis."""
        what = f"the init of dpos client {client_id}"
        args = init_args(init, what, ("genesis", "trusting_period_ms"), ("max_consensus_states", "max_pending_headers"))
        return DposLightClient.from_genesis(
            client_id, chain_id, init_object(args["genesis"], f"genesis of {what}"),
            bounded_init_int(args, "trusting_period_ms", None, 1, 2**63 - 1, what),
            max_consensus_states=bounded_init_int(args, "max_consensus_states", HOSTED_MAX_CONSENSUS_STATES, 1,
                                                  _MAX_CONSENSUS_STATES, what),
            max_pending_headers=bounded_init_int(args, "max_pending_headers", HOSTED_MAX_PENDING_HEADERS, 1,
                                                 _MAX_PENDING_HEADERS, what))

    def decode_header(self, raw: bytes) -> DposHeader:
        return DposHeader.decode(raw)


DPOS = DposKind()
"""The ``dpos`` chain kind."""
