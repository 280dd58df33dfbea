"""The Ethereum park as a chain kind (:class:`chains.common.kind.ChainKind`): ``kind = "ethereum"``.

Its node is its own process (anvil plus the first-start deployment, :func:`chains.ethereum.node.run_ethereum_node`),
not the shared park-node runtime; its one node is always ``anvil`` and its accounts are secp256k1 addresses.
Finality comes from relay-validator attestation, so every relay validator runs an attestor of it.

Light-client init args: the client's own form (:meth:`EthereumLightClient.from_init`), or the park's genesis
as the other parks take it, ``{"genesis": {...}, "trusting_period_ms": ..., "max_consensus_states"?: ...,
"max_pending_headers"?: ...}``, from which ``eth_chain_id``, ``confirmation_depth`` and the bridge's address
are taken. Finality needs no trusted header: it comes from attestations.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chains.common.kind import ChainKind, init_args, init_object
from chains.ethereum.light_client import EthereumLightClient
from chains.ethereum.params import EthChainParams
from chains.ethereum.types import EthHeader
from protocol.certificate import ValidatorSet
from protocol.errors import CodecError
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId

__all__ = ["ETHEREUM", "EthereumKind"]


class EthereumKind(ChainKind):
    """Real Ethereum on anvil; client type ``ethereum`` (finality by depth and relay-validator attestation)."""

    name = "ethereum"
    params_type = EthChainParams
    node_flag = "--node"
    key_scheme = "secp256k1"
    client_params = ("max_consensus_states", "max_pending_headers", "max_open_attestations",
                     "max_attestation_ahead", "max_pending_ahead", "max_pending_per_height")
    fixed_nodes = ("anvil",)  # chains.ethereum.node.NODE_NAME (not imported here: it loads web3)
    attested_by_relay = True
    runs_on_park_node = False

    def build_genesis(self, *, chain_id: str, params: Mapping[str, Any], nodes: dict[str, bytes],
                      accounts: dict[str, tuple[bytes, int]], relay_validators: ValidatorSet,
                      lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int, data_dir: Path,
                      base_port: int | None = None, host: str = "127.0.0.1") -> dict[str, Any]:
        from chains.ethereum import node  # the node runtime and its I/O libraries load only when used

        return node.build_genesis(chain_id=chain_id, params=params, nodes=nodes, accounts=accounts,
                                  relay_validators=relay_validators, lanes=lanes, genesis_time_ms=genesis_time_ms,
                                  data_dir=data_dir)

    @property
    def light_client_type(self) -> type[LightClient[Any]]:
        return EthereumLightClient

    def create_light_client(self, client_id: ClientId, chain_id: ChainId,
                            init: Mapping[str, Any]) -> EthereumLightClient:
        """An ``ethereum`` client from init args (module docstring)."""
        if "genesis" not in init:
            return EthereumLightClient.from_init(client_id, chain_id, init)
        what = f"the init of ethereum client {client_id}"
        args = init_args(init, what, ("genesis", "trusting_period_ms"),
                         ("max_consensus_states", "max_pending_headers", "max_open_attestations",
                          "max_attestation_ahead", "max_pending_ahead", "max_pending_per_height"))
        genesis = init_object(args["genesis"], f"genesis of {what}")
        contracts = init_object(genesis.get("contracts"), f"contracts in the genesis of {what}")
        own = {k: v for k, v in args.items() if k != "genesis"}
        try:
            own.update(eth_chain_id=genesis["eth_chain_id"], confirmation_depth=genesis["confirmation_depth"],
                       bridge_address=contracts["bridge"])
        except KeyError as exc:
            raise CodecError(f"the genesis in {what} lacks {exc}") from exc
        return EthereumLightClient.from_init(client_id, chain_id, own)

    def decode_header(self, raw: bytes) -> EthHeader:
        return EthHeader.decode(raw)


ETHEREUM = EthereumKind()
"""The ``ethereum`` chain kind."""
