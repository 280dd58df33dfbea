"""Where a deployment keeps its files under ``data_dir``: key files, genesis files, a Fabric park's connection profile.

One module for every path, so the tools that make these files (``devnet init``) and the ones that read them (the
node and relayer processes, the views, the API, ``doctor``) agree without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.ops.config import DeploymentConfig


def genesis_path(cfg: DeploymentConfig, chain_id: str) -> Path:
    return cfg.data_dir / "genesis" / f"{chain_id}.json"


def fabric_profile_path(cfg: DeploymentConfig, chain: Any) -> Path:
    """The hfc connection profile a Fabric park's clients use: its ``connection_profile`` key (a relative path is
    read from the config file's folder), else the one its supervisor writes
    (``<data_dir>/<chain id>/connection-profile.json``)."""
    named = str(chain.params.get("connection_profile") or "")
    return Path(cfg.path).parent / named if named else cfg.data_dir / chain.id / "connection-profile.json"


def node_key_path(cfg: DeploymentConfig, chain_id: str, name: str) -> Path:
    return cfg.data_dir / "keys" / chain_id / f"{name}.seed"


def admin_token_path(cfg: DeploymentConfig) -> Path:
    return cfg.data_dir / "keys" / "admin.token"


def relay_genesis_path(cfg: DeploymentConfig) -> Path:
    return cfg.data_dir / "genesis" / f"{cfg.relay_chain_id}.json"


def account_key_path(cfg: DeploymentConfig, chain_id: str, account: str) -> Path:
    return cfg.data_dir / "keys" / chain_id / "accounts" / f"{account}.seed"


def relay_key_paths(cfg: DeploymentConfig, validator: str) -> tuple[Path, Path]:
    base = cfg.data_dir / "keys" / "relay"
    return base / f"{validator}.ed25519.seed", base / f"{validator}.secp256k1.seed"


def relayer_key_path(cfg: DeploymentConfig, chain_id: str, relayer: str) -> Path:
    """A relayer's account key on ``chain_id`` (parks: the genesis account of the same name)."""
    if chain_id == cfg.relay_chain_id:
        return cfg.data_dir / "keys" / "relay" / "accounts" / f"{relayer}.seed"
    return account_key_path(cfg, chain_id, relayer)


def cometbft_home_path(cfg: DeploymentConfig, validator: str) -> Path:
    """Relay validator ``validator``'s CometBFT home (``[relay] engine = "cometbft"``): its config, genesis, keys
    (``priv_validator_key.json``, ``node_key.json``: made there by ``cometbft init``) and CometBFT's own data."""
    return cfg.data_dir / "cometbft" / validator


def consensus_keys_path(cfg: DeploymentConfig) -> Path:
    """``{validator name: CometBFT consensus public key (hex)}``: the link between the relay validators' keys and
    CometBFT's (:class:`relay.chain.abci.app.ConsensusKeys`), the same for every validator."""
    return cfg.data_dir / "cometbft" / "consensus_keys.json"
