"""Every park chain kind, and the one lookup of a kind by name.

A new kind (a Fabric park) is one :class:`~chains.common.kind.ChainKind` in ``chains/<kind>/kind.py`` and
one line in :data:`KINDS`; the relay layer finds everything about it through :func:`chain_kind`. Its relayer
adapters are registered on the adapter side (:mod:`adapters.registry`).

This module imports every chain package, so no chain package may import it (the chain packages are
independent of each other: ``lint-imports``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from chains.common.kind import ChainKind
from chains.dpos.kind import DPOS
from chains.ethereum.kind import ETHEREUM
from chains.fabric.kind import FABRIC
from chains.poc.kind import POC

__all__ = ["KINDS", "UnknownChainKindError", "chain_kind"]

KINDS: Mapping[str, ChainKind] = MappingProxyType({k.name: k for k in (DPOS, POC, ETHEREUM, FABRIC)})
"""Every park chain kind by name, in the order the docs list them."""


class UnknownChainKindError(LookupError):
    """No park chain kind has this name."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(f"unknown chain kind {name!r}: expected one of {sorted(KINDS)}")


def chain_kind(name: str) -> ChainKind:
    """The chain kind called ``name`` (:class:`UnknownChainKindError` naming the known ones otherwise)."""
    try:
        return KINDS[name]
    except (KeyError, TypeError) as exc:
        raise UnknownChainKindError(name) from exc
