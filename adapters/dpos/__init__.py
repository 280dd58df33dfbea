"""Relayer-side clients of the DPoS park: its source side (headers, proofs, events) and target side.

The DPoS park serves the shared park-chain JSON-RPC (:mod:`chains.common.node`); what is its own is
the header type the light client on the relay chain consumes.
"""

from __future__ import annotations

from adapters.common.park import ParkSource, ParkTarget
from adapters.common.rpc import JsonRpcClient
from chains.dpos.types import DposHeader
from protocol.crypto import Ed25519Signer

__all__ = ["DposSource", "DposTarget", "source", "target"]

DposSource = ParkSource
DposTarget = ParkTarget


def source(client: JsonRpcClient) -> ParkSource:
    """The DPoS park's source side over ``client``; headers decode to :class:`DposHeader`."""
    return ParkSource(client, DposHeader.decode)


def target(client: JsonRpcClient, chain_id: str, account: str, signer: Ed25519Signer) -> ParkTarget:
    """The DPoS park's target side, signing transactions as ``account``."""
    return ParkTarget(client, chain_id, account, signer)
