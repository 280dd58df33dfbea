"""The Fabric park as a chain kind (:class:`chains.common.kind.ChainKind`): ``kind = "fabric"``.

Its nodes are real Fabric processes (orderers and peers, chaincode as a service) started by the network launcher
(``chains/fabric/network``), not the shared park-node runtime. The relay follows it with
:class:`~chains.fabric.light_client.FabricLightClient` (SPEC.md §8.7); headers are ``common.Block`` bytes
(:meth:`FabricKind.decode_header`).

Light-client init args: the client's own form (:meth:`FabricLightClient.from_init`), or the park's genesis as the
relay genesis passes every park's (``relay.ops.devnet.relay_genesis``)::

    {"genesis": {"channel_id": "park",              # the Fabric channel
                 "config_block": "<hex>",           # its genesis block (configtxgen -outputBlock) or a later
                                                    # config block, as common.Block bytes
                 "genesis_time_ms": 1790000000000,  # relay time from which that block is trusted
                 "chaincode": "bridge",             # optional
                 "policy_orgs": ["OperatorMSP", "SalesMSP"],  # optional
                 ...},                              # other keys of the park's genesis are not read
     "trusting_period_ms": 1209600000,
     "max_consensus_states"?, "max_attestation_age_ms"?, "max_clock_skew_ms"?, "max_configs"?}

The park genesis keys above are the contract with the network launcher's genesis builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chains.common.kind import ChainKind, KindParams, init_args, init_object
from chains.fabric.consts import PEER_ORGS, TIMEOUT_RECEIPT
from chains.fabric.light_client import PARAM_RANGES, FabricLightClient
from chains.fabric.params import FabricChainParams
from chains.fabric.proto import Block
from protocol.certificate import ValidatorSet
from protocol.errors import CodecError
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId

__all__ = ["FABRIC", "FabricKind"]

PORTS_PER_NODE = 4
"""Ports each orderer and peer takes (:data:`chains.fabric.network.config.PORTS_PER_NODE`; not imported: the kind
must not load the network launcher)."""

_GENESIS_KEYS = ("channel_id", "config_block", "genesis_time_ms")
_GENESIS_OPTIONAL = ("chaincode", "policy_orgs")


class FabricKind(ChainKind):
    """A real Hyperledger Fabric 2.5 network; client type ``fabric`` (blocks by orderer signatures, state by peer
    attestations)."""

    name = "fabric"
    params_type = FabricChainParams
    node_flag = "--node"
    # Fabric's identities are X.509 certificates with P-256 keys, made by the network launcher; the relay layer's
    # account keys (ed25519) serve only the relayers' own accounts
    key_scheme = "ed25519"
    runs_on_park_node = False
    timeout_receipt = TIMEOUT_RECEIPT  # no block time to trust: the bridge writes a sentinel once its peers say so
    fixed_nodes = ("network",)  # one supervisor process runs the park's orderers, peers and chaincode servers
    client_params = tuple(PARAM_RANGES)

    def build_genesis(self, *, chain_id: str, params: Mapping[str, Any], nodes: dict[str, bytes],
                      accounts: dict[str, tuple[bytes, int]], relay_validators: ValidatorSet,
                      lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int, data_dir: Path,
                      base_port: int | None = None, host: str = "127.0.0.1") -> dict[str, Any]:
        """The park's genesis (:mod:`chains.fabric.network.genesis`): runs the network launcher's init under
        ``<data_dir>/<chain id>`` (key material, configs, the channel's genesis block from configtxgen) and returns
        what the relay's client and the bridge chaincode's ``init_bridge`` need. ``nodes`` is unused (one supervisor
        runs the park); ``base_port`` is required (the orderers' endpoints are in the channel's genesis block)."""
        from chains.fabric.network import genesis  # the launcher and its I/O load only when used

        if base_port is None:
            raise ValueError(f"fabric park {chain_id}: its genesis needs the chain's base_port (the orderers' "
                             "endpoints are part of the channel's genesis block)")
        return genesis.build_genesis(chain_id=chain_id, params=params, accounts=accounts,
                                     relay_validators=relay_validators, lanes=lanes, genesis_time_ms=genesis_time_ms,
                                     data_dir=data_dir, base_port=base_port, host=host)

    def keepalive_after_s(self, params: KindParams) -> float | None:
        """The chain table's ``keepalive_after_s``: Fabric cuts a block only for a transaction, and the relay's client
        expires after ``trusting_period_ms`` without one (SPEC §8.7)."""
        return float(params["keepalive_after_s"])

    def port_count(self, params: KindParams, nodes: tuple[str, ...]) -> int:
        """Four ports per orderer and per peer (:class:`chains.fabric.network.config.FabricNetworkConfig`)."""
        return PORTS_PER_NODE * (int(params["orderers"]) + len(PEER_ORGS))

    @property
    def light_client_type(self) -> type[LightClient[Any]]:
        return FabricLightClient

    def create_light_client(self, client_id: ClientId, chain_id: ChainId,
                            init: Mapping[str, Any]) -> FabricLightClient:
        """A ``fabric`` client from init args (module docstring)."""
        if "genesis" not in init:
            return FabricLightClient.from_init(client_id, chain_id, init)
        what = f"the init of fabric client {client_id}"
        args = init_args(init, what, ("genesis", "trusting_period_ms"), tuple(PARAM_RANGES))
        genesis = init_object(args["genesis"], f"genesis of {what}")
        missing = [k for k in _GENESIS_KEYS if k not in genesis]
        if missing:
            raise CodecError(f"the genesis in {what} lacks {missing}", expected=list(_GENESIS_KEYS),
                             got=sorted(genesis))
        own: dict[str, Any] = {k: v for k, v in args.items() if k != "genesis"}
        own.update(channel_id=genesis["channel_id"], config_block=genesis["config_block"],
                   trusted_time_ms=genesis["genesis_time_ms"])
        own.update({k: genesis[k] for k in _GENESIS_OPTIONAL if k in genesis})
        return FabricLightClient.from_init(client_id, chain_id, own)

    def decode_header(self, raw: bytes) -> Block:
        return Block.decode(raw)


FABRIC = FabricKind()
"""The ``fabric`` chain kind."""
