"""The Fabric park's deployment parameters: the kind-specific keys of a ``kind = "fabric"`` chain table.

One frozen dataclass, one field per key (type, default, range, docstring). The network launcher
(``chains/fabric/network``) adds the keys it needs (orderer count, ports, batch timeout…) here.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.common.kind import KindParams, ParamError, param
from chains.fabric.consts import BRIDGE_CHAINCODE, DEFAULT_CHANNEL

__all__ = ["FabricChainParams"]


@dataclass(frozen=True, eq=False)
class FabricChainParams(KindParams):
    """Keys of a ``kind = "fabric"`` chain table besides ``id``, ``kind``, ``nodes``, ``base_port``, ``accounts``."""

    channel: str = param(DEFAULT_CHANNEL)
    """The application channel the bridge chaincode runs on (a Fabric channel name: lowercase letters, digits, ``.``
    and ``-``, starting with a letter, under 250 characters)."""
    chaincode: str = param(BRIDGE_CHAINCODE)
    """The bridge chaincode's name (the one whose attestations the relay's light client accepts)."""

    def check(self) -> None:
        ch = self.channel
        if not (0 < len(ch) < 250 and ch[0].isascii() and ch[0].islower()
                and all(c.isascii() and (c.islower() or c.isdigit() or c in ".-") for c in ch)):
            raise ParamError("channel", "", "a Fabric channel name ([a-z][a-z0-9.-]*, < 250 chars)", ch)
        if not self.chaincode or len(self.chaincode) > 256:
            raise ParamError("chaincode", "", "a chaincode name of 1..256 characters", self.chaincode)
