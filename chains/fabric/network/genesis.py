"""A Fabric park's genesis, as ``parkrelay devnet init`` writes it (``FabricKind.build_genesis``).

It runs the network launcher's init — key material, every process's config, the hfc connection profile — and makes
the channel's genesis block with ``configtxgen``, once, under ``<data_dir>/<chain id>`` (the same data dir
``parkrelay node fabric`` then runs the park from, so the channel it creates is the one the relay trusts). The
genesis file holds::

    {"chain_id": "fabric-park", "kind": "fabric",
     "channel_id": "park",                     # the channel
     "config_block": "<hex>",                  # its genesis block (common.Block): the relay client's root of trust
     "genesis_time_ms": 1790000000000,         # relay time from which the relay's client trusts it
     "chaincode": "bridge", "policy_orgs": ["OperatorMSP", "SalesMSP"],
     "accounts": {"alice": "OperatorMSP:alice@OperatorMSP", ...},  # deployment name -> bridge account
     "init_bridge": "<JSON text>",             # the bridge chaincode's genesis argument, exactly (its SHA-256 is
                                               # pinned in both organisations' chaincode servers)
     "network": {...}}                         # the settings fixed in the block and certificates (network.json)

The first five keys are what the relay's Fabric light client needs (``chains/fabric/kind.py``); ``init_bridge`` is
the chaincode's genesis (``chains/fabric/chaincode/contract.py``, "Genesis"): every account registered, the balances
minted in the energy token, and the bridge section with the relay validator set, the lanes and their capacities
(:func:`chains.common.genesis.bridge_section`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chains.common.bridge import DEFAULT_MAX_CERTIFICATE_AGE_MS
from chains.common.genesis import bridge_section
from chains.common.state import canonical_json
from chains.fabric.consts import PEER_ORGS
from chains.fabric.network.config import FabricNetworkConfig
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.params import FabricChainParams
from protocol.certificate import ValidatorSet

__all__ = ["account_of", "build_genesis", "park_network"]

OPERATOR_ACCOUNT = "operator"
"""The deployment account that may issue charging rights (the bridge's ``rights_operator``), when it exists."""


def account_of(name: str, msp: str) -> str:
    """The bridge account of deployment account ``name`` enrolled in ``msp``: ``<MSP>:<name>@<MSP>`` (the launcher
    names a user's certificate ``<name>@<MSP>``; :mod:`chains.fabric.chaincode.identity`)."""
    return f"{msp}:{name}@{msp}"


def park_network(*, chain_id: str, params: Mapping[str, Any], data_dir: Path, base_port: int, host: str,
                 accounts: list[str], genesis: Mapping[str, Any] | None = None) -> FabricNetworkConfig:
    """The network of a deployment's Fabric park: its data dir ``<data_dir>/<chain id>``, an identity for each
    account (relayers included), and, given the park's genesis, its ``init_bridge`` (submitted once, pinned)."""
    p = params if isinstance(params, FabricChainParams) else FabricChainParams.from_mapping(params)
    return FabricNetworkConfig.for_park(chain_id=chain_id, data_dir=data_dir / chain_id, base_port=base_port,
                                        host=host, params=dict(p), accounts=accounts,
                                        genesis_arg=None if genesis is None else str(genesis["init_bridge"]))


def build_genesis(*, chain_id: str, params: Mapping[str, Any], accounts: dict[str, tuple[bytes, int]],
                  relay_validators: ValidatorSet, lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int,
                  data_dir: Path, base_port: int, host: str) -> dict[str, Any]:
    """The park's genesis (module docstring); makes its key material and channel genesis block if missing.
    ``accounts`` maps deployment names (relayers included) to ``(unused key, kWh balance in Wh)``."""
    p = params if isinstance(params, FabricChainParams) else FabricChainParams.from_mapping(params)
    cfg = park_network(chain_id=chain_id, params=p, data_dir=data_dir, base_port=base_port, host=host,
                       accounts=list(accounts))
    ids = {name: account_of(name, msp) for name, msp in sorted(cfg.users.items())}
    balances = [{"account": ids[name], "denom": "kWh", "amount": bal}
                for name, (_, bal) in sorted(accounts.items()) if bal > 0]
    section = bridge_section(p.relay_chain_id, relay_validators, lanes, rights_operator=ids.get(OPERATOR_ACCOUNT),
                             transformers=dict(p.transformers), trusted_time_ms=genesis_time_ms,
                             max_certificate_age_ms=(None if p.max_certificate_age_ms == DEFAULT_MAX_CERTIFICATE_AGE_MS
                                                     else p.max_certificate_age_ms))
    section["stations"] = dict(p.stations)  # the chaincode's registry (chains/fabric/chaincode/assets.py)
    init_arg = canonical_json({"chain_id": chain_id, "accounts": sorted(ids.values()), "balances": balances,
                               "bridge": section}).decode()
    net = FabricNetwork(cfg)
    net.init()
    block = cfg.layout.channel_block(cfg.channel)
    if not block.exists():
        net.tools.genesis_block(block)
    return {
        "chain_id": chain_id,
        "kind": "fabric",
        "channel_id": cfg.channel,
        "config_block": block.read_bytes().hex(),
        "genesis_time_ms": genesis_time_ms,
        "chaincode": cfg.chaincode.name,
        "policy_orgs": list(PEER_ORGS),
        "accounts": ids,
        "init_bridge": init_arg,
        "network": cfg.fixed_settings(),
    }
