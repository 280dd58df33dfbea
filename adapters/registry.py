"""The relayer's adapters of every park chain kind, and the one lookup of them by kind name.

The chain side of a kind is a :class:`~chains.common.kind.ChainKind` (:mod:`chains.registry`); ``chains/``
may not import ``adapters/``, so how a relayer talks to a kind is registered here, one entry per kind.
A new kind (Fabric) is one line in :data:`ADAPTERS`; a unit test checks both registries name the same kinds.

This module imports every adapter package, so no adapter package may import it (they are independent of each
other: ``lint-imports``). The Fabric adapter is the exception to *when*: it loads hfc, whose old protos fix the
process's protobuf implementation (``adapters/fabric/__init__.py``), so it is imported on first use of its
factories, not by importing this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adapters import dpos, ethereum, poc
from chains.common.kind import ChainKind
from chains.registry import KINDS, UnknownChainKindError

__all__ = ["ADAPTERS", "KindAdapters", "adapters_for"]


@dataclass(frozen=True)
class KindAdapters:
    """How a relayer builds its source and target sides of a chain of one kind."""

    kind: ChainKind
    """The chain side of the kind."""
    park_rpc: bool
    """True: the chain answers parkrelay's park JSON-RPC (:mod:`chains.common.node`), and the factories are
    ``source(client)`` and ``target(client, chain_id, account, ed25519_signer)`` over one shared
    :class:`~adapters.common.rpc.JsonRpcClient` (whose ``/ws`` pushes new heads). False: the kind's own client
    library, with the factories of its adapter package (Ethereum: ``source(url, chain_id, bridge, depth)``,
    ``target(url, chain_id, bridge, secp256k1_key, relay_set_provider, confirmation_depth=...)``; Fabric:
    ``source(profile_or_gateway, chain_id, user)``, ``target(...)`` alike, over hfc)."""
    source: Callable[..., Any]
    """The source-side factory (:class:`~adapters.common.roles.SourceSide`)."""
    target: Callable[..., Any]
    """The target-side factory (:class:`~adapters.common.roles.TargetSide`)."""
    duplicates_reach_blocks: bool = False
    """A redundant submission reaches a block and fails there at a cost (Ethereum: a revert that paid gas; Fabric: a
    transaction invalidated by MVCC) instead of being refused at admission: relayers then take turns on this
    chain."""
    one_writer: bool = False
    """Transactions of different packets conflict when two relayers send them at once (Fabric: MVCC on the bridge's
    shared keys): relayers then take turns per chain, not per packet
    (``relay.relayer.relayer.ChainLink.one_writer``)."""
    batches: bool = False
    """The chain's bridge takes ``bridge.recv_batch`` and ``bridge.settle_batch`` (many packets under one certificate
    batch, protocol SPEC §7.10): the Python parks. Elsewhere the relayer sends a transaction per packet."""


def _on_first_use(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called (module docstring: the Fabric adapter)."""

    def factory(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = f"{module}.{name}"
    return factory


ADAPTERS: Mapping[str, KindAdapters] = MappingProxyType({
    "dpos": KindAdapters(KINDS["dpos"], True, dpos.source, dpos.target, batches=True),
    "poc": KindAdapters(KINDS["poc"], True, poc.source, poc.target, batches=True),
    "ethereum": KindAdapters(KINDS["ethereum"], False, ethereum.source, ethereum.target,
                             duplicates_reach_blocks=True),
    # an MVCC-invalidated duplicate is a failed transaction in a block: the relayers take turns on Fabric too
    "fabric": KindAdapters(KINDS["fabric"], False, _on_first_use("adapters.fabric", "source"),
                           _on_first_use("adapters.fabric", "target"), duplicates_reach_blocks=True,
                           one_writer=True),
})
"""The relayer's adapters of every park chain kind, by kind name."""


def adapters_for(kind: str) -> KindAdapters:
    """The adapters of chain kind ``kind`` (:class:`~chains.registry.UnknownChainKindError` otherwise)."""
    try:
        return ADAPTERS[kind]
    except (KeyError, TypeError) as exc:
        raise UnknownChainKindError(kind) from exc
