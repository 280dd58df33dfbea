"""The PoC park as a chain kind (:class:`chains.common.kind.ChainKind`): ``kind = "poc"``.

Light-client init args (``clients.<chain id>.init`` in the relay genesis, or ``init`` of a governance
``client.create``), a JSON object; unknown keys are :class:`~protocol.errors.CodecError`::

    {
      "genesis": {...},                  # the park's genesis config, exactly as its nodes load it
      "trusting_period_ms": 1209600000,  # > 0: the client expires without a final header for this long
      "max_consensus_states": 512,       # optional: final heights kept for proofs (1..4096, default 512)
      "confirmation_depth": 6,           # optional: default the genesis config's (as the park's nodes)
      "fork_history": 128,               # optional: final headers kept as fork points (0..4096)
      "finality_window_ms": 60000,       # optional: relay time a header stays on the best branch before it is
                                         #   final, besides its depth (0..86400000; SPEC §8.6)
      "max_pending": 1024,               # optional: non-final headers held (2..65536)
      "max_pending_per_farmer": 128,     # optional: one farmer's non-final headers off the best branch
      "max_distance": 512,               # optional: heights a held header may be above the final tip
                                         #   (confirmation_depth < max_distance < max_pending)
      "checkpoint": {...},               # optional (a substitute, SPEC §8.8): the trusted header's consensus
                                         #   context (ConsensusContext.to_json; checkpoint_from_headers)
      "farmers": {"name": "pubkey hex"}  # optional: farmer accounts created after genesis, bound at once
    }

The client's trusted header is the park's genesis header, derived from ``genesis`` by the same function the
park's node runs (bridge section included), so it is the header block 1 links to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chains.common.kind import HOSTED_MAX_CONSENSUS_STATES, ParkNodeKind, bounded_init_int, init_args, init_object
from chains.poc.light_client import PocClientParams, PocLightClient
from chains.poc.params import PocChainParams
from chains.poc.types import PocHeader, decode_header
from protocol.errors import CodecError
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId

if TYPE_CHECKING:
    pass

__all__ = ["POC", "PocKind"]

_MAX_CONSENSUS_STATES = 4096
_MAX_FORK_HISTORY = 4096
POC_CLIENT_PARAMS = tuple(PocClientParams.__dataclass_fields__)
"""Init keys of a ``poc`` client that are :class:`~chains.poc.light_client.PocClientParams`."""


class PocKind(ParkNodeKind):
    """Proof-of-capacity farmers (chiapos) on the shared park-node runtime; client type ``poc``."""

    name = "poc"
    params_type = PocChainParams
    node_flag = "--farmer"
    key_scheme = "ed25519"
    node_module = "chains.poc.node"
    advances_with_time = True
    client_params = ("max_consensus_states", "confirmation_depth", "fork_history", *POC_CLIENT_PARAMS)

    @property
    def light_client_type(self) -> type[LightClient[Any]]:
        return PocLightClient

    def create_light_client(self, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> PocLightClient:
        """A ``poc`` client from init args (module docstring): trusts the park's genesis."""
        what = f"the init of poc client {client_id}"
        args = init_args(init, what, ("genesis", "trusting_period_ms"),
                         ("max_consensus_states", "confirmation_depth", "fork_history", "checkpoint", "farmers",
                          *POC_CLIENT_PARAMS))
        depth = args.get("confirmation_depth")
        # PocClientParams checks each value and their relations (CodecError), defaults for what is absent
        window_and_bounds = PocClientParams.from_json({k: args[k] for k in POC_CLIENT_PARAMS if k in args})
        return PocLightClient.from_genesis(
            client_id, chain_id, init_object(args["genesis"], f"genesis of {what}"),
            bounded_init_int(args, "trusting_period_ms", None, 1, 2**63 - 1, what),
            confirmation_depth=None if depth is None else bounded_init_int(args, "confirmation_depth", None, 1,
                                                                           2**16, what),
            fork_history=bounded_init_int(args, "fork_history", 128, 0, _MAX_FORK_HISTORY, what),
            max_consensus_states=bounded_init_int(args, "max_consensus_states", HOSTED_MAX_CONSENSUS_STATES, 1,
                                                  _MAX_CONSENSUS_STATES, what),
            client_params=window_and_bounds,
            checkpoint=None if "checkpoint" not in args else init_object(args["checkpoint"], f"checkpoint of {what}"),
            farmers=_farmers(args.get("farmers", {}), what))

    def advance_light_client(self, client: LightClient[Any], now_ms: int) -> bool:
        if not isinstance(client, PocLightClient):
            raise TypeError(f"the poc client type hosts PocLightClient, not {type(client).__name__}")
        return client.advance(now_ms)

    def light_client_final_at(self, client: LightClient[Any], now_ms: int) -> int:
        if not isinstance(client, PocLightClient):
            raise TypeError(f"the poc client type hosts PocLightClient, not {type(client).__name__}")
        return client.final_height_at(now_ms)

    def decode_header(self, raw: bytes) -> PocHeader:
        return decode_header(raw)


def _farmers(value: Any, what: str) -> dict[str, bytes]:
    """``farmers`` of a substitute's init: ``{name: ed25519 pubkey hex}``, at most 4096."""
    obj = init_object(value, f"farmers of {what}")
    if len(obj) > 4096:
        raise CodecError(f"too many farmers in {what}", expected="<= 4096", got=len(obj))
    out: dict[str, bytes] = {}
    for name, key in obj.items():
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32 or not name:
            raise CodecError(f"farmer {name!r} of {what} needs a 32-byte key in hex", got=key)
        out[name] = raw
    return out


POC = PocKind()
"""The ``poc`` chain kind (real chiapos verifier)."""
