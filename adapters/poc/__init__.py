"""Relayer-side clients of the PoC park: its source side (headers, proofs, events) and target side.

The PoC park serves the shared park-chain JSON-RPC (:mod:`chains.common.node`); what is its own is
the header type the light client on the relay chain consumes.
"""

from __future__ import annotations

from adapters.common.park import ParkSource, ParkTarget
from adapters.common.rpc import JsonRpcClient
from chains.poc.types import decode_header
from protocol.crypto import Ed25519Signer

__all__ = ["PocSource", "PocTarget", "source", "target"]

PocSource = ParkSource
PocTarget = ParkTarget


def source(client: JsonRpcClient) -> ParkSource:
    """The PoC park's source side over ``client``; headers decode to :class:`chains.poc.types.PocHeader`."""
    return ParkSource(client, decode_header)


def target(client: JsonRpcClient, chain_id: str, account: str, signer: Ed25519Signer) -> ParkTarget:
    """The PoC park's target side, signing transactions as ``account``."""
    return ParkTarget(client, chain_id, account, signer)
