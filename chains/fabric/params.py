"""The Fabric park's deployment parameters: the kind-specific keys of a ``kind = "fabric"`` chain table.

One frozen dataclass, one field per key (type, default, range, docstring); ``deploy/devnet.toml`` shows them. The
network keys (``orderers``, ``batch_timeout_ms``, ``users``...) are those of
:class:`chains.fabric.network.config.FabricNetworkConfig` of the same name (its ``check`` applies them again);
``relay_chain_id``, ``transformers`` and ``stations`` go into the bridge chaincode's genesis, ``keepalive_after_s``
to the relayers.
"""

from __future__ import annotations

from dataclasses import dataclass

from chains.common.kind import KindParams, ParamError, param
from chains.fabric.consts import BRIDGE_CHAINCODE, DEFAULT_CHANNEL, PEER_ORGS

__all__ = ["FabricChainParams"]


@dataclass(frozen=True, eq=False)
class FabricChainParams(KindParams):
    """Keys of a ``kind = "fabric"`` chain table besides ``id``, ``kind``, ``base_port``, ``accounts`` (one
    supervisor process runs the whole park: no ``nodes`` key)."""

    channel: str = param(DEFAULT_CHANNEL)
    """The application channel the bridge chaincode runs on (a Fabric channel name: lowercase letters, digits, ``.``
    and ``-``, starting with a letter, under 50 characters here)."""
    chaincode: str = param(BRIDGE_CHAINCODE)
    """The bridge chaincode's name (the one whose attestations the relay's light client accepts)."""
    orderers: int = param(1, low=1, high=5)
    """etcdraft consenters (orderer processes); 3 lets one crash and the channel go on."""
    batch_timeout_ms: int = param(250, low=10, high=10_000)
    """Orderer ``BatchTimeout``: how long a lone transaction waits before its block is cut (Fabric's default is
    2 s). Fixed in the channel's genesis block."""
    max_message_count: int = param(100, low=1, high=10_000)
    """Orderer ``BatchSize.MaxMessageCount``: transactions per block at most (fixed in the channel's genesis)."""
    raft_tick_ms: int = param(100, low=10, high=5_000)
    """etcdraft ``TickInterval``: a leader is elected within 10 to 20 ticks of a leader's crash."""
    cert_validity_days: int = param(3650, low=1, high=36_500)
    """Lifetime of every devnet certificate (the relay's client refuses an expired orderer or peer)."""
    users: dict[str, str] = param({})
    """The organisation of each account or relayer that is not in ``OperatorMSP`` (name -> ``OperatorMSP`` or
    ``SalesMSP``); every account and relayer gets a client certificate ``<name>@<MSP>`` and its bridge account is
    ``<MSP>:<name>@<MSP>``."""
    logging_spec: str = param("info")
    """``FABRIC_LOGGING_SPEC`` of the peers and orderers (their logs: ``<data_dir>/<chain id>/logs``)."""
    relay_chain_id: str = param("relay")
    """Id of the relay chain whose certificates the park's bridge accepts."""
    transformers: dict[str, int] = param({"tr-1": 150}, low=0, high=10**9)
    """Transformer capacities, kW, for charging-right admission: name -> capacity."""
    stations: dict[str, str] = param({"st-1": "tr-1"})
    """Charging stations and the transformer each is behind, for charging-right admission: a right is admitted on
    this park only for a station registered here behind the right's transformer (the operator adds more with
    ``set_station``)."""
    max_certificate_age_ms: int = param(600_000, low=10_000, high=86_400_000)
    """The park bridge refuses a phase-3 relay certificate older than this, ms (protocol SPEC §7.9; keep the relay's
    ``recovery_delay_ms`` at least this plus the clock skew)."""
    connection_profile: str = param("")
    """The hfc connection profile the park's clients (relayers, ``parkrelay`` commands, the demo) use. Empty: the
    one the supervisor writes, ``<data_dir>/<chain id>/connection-profile.json``. A relative path is read from the
    deployment config's folder; the relative file paths inside it from the working directory, like ``data_dir`` (hfc's
    rule). ``parkrelay fabric profile
    --relative-to .`` prints what to commit (``deploy/fabric/connection-profile.devnet.json`` for the devnet)."""
    keepalive_after_s: int = param(3600, low=1, high=30 * 86_400)
    """A relayer's heartbeat submits a no-op ``ping`` transaction when the relay's client of the park has been
    shown no new block for this long, so a quiet channel never lets the client expire (its trusting period counts
    from the last block it accepted, SPEC §8.7). Keep it well under the client's ``trusting_period_ms``."""

    def check(self) -> None:
        ch = self.channel
        if not (0 < len(ch) < 50 and ch[0].isascii() and ch[0].islower()
                and all(c.isascii() and (c.islower() or c.isdigit() or c in ".-") for c in ch)):
            raise ParamError("channel", "", "a Fabric channel name ([a-z][a-z0-9.-]*, < 50 chars)", ch)
        cc = self.chaincode
        if not cc or len(cc) > 256 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in cc):
            raise ParamError("chaincode", "", "a chaincode name of 1..256 characters [a-zA-Z0-9_-]", cc)
        for name, transformer in self.stations.items():
            if not name or "/" in name or not transformer or "/" in transformer:
                raise ParamError(f"stations.{name}", "", "station and transformer names without '/'", transformer)
        for name, msp in self.users.items():
            if msp not in PEER_ORGS:
                raise ParamError(f"users.{name}", "", f"one of {list(PEER_ORGS)}", msp)
