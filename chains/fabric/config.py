"""A Fabric channel's configuration as the relay's Fabric light client tracks it (SPEC.md §8.7). Pure.

From a config block (the channel's genesis block, or any later config block) the client keeps:

* the **orderer organisations** (``Channel/Orderer/<org>``) and their MSPs: who may sign blocks;
* the **consenters** (``Channel/Orderer`` value ``ConsensusType``, type ``etcdraft``, its ``ConfigMetadata``), and how
  a block signer maps to one (below);
* the **application organisations** (``Channel/Application/<org>``) and their MSPs: whose peers may attest;
* the config ``sequence``, and the raw ``ConfigEnvelope`` bytes it was read from (what the client persists).

**Block signer -> consenter.** An etcdraft consenter is named by its endpoint and its TLS certificates, not by the
identity that signs blocks (Fabric 2.5 checks block signatures against the ``BlockValidation`` policy, by default any
orderer organisation's writer; it does not bind them to consenters). The light client binds them: a consenter
belongs to the orderer organisation whose TLS CAs issued its ``server_tls_cert``, and is named by that certificate's
subject common name. A signature counts for that consenter when its signer is a valid ``orderer``-role identity of
the same organisation whose certificate has the same subject common name. Fabric's own tooling (``cryptogen``, and
the devnet's launcher) gives a node's enrollment (signing) certificate and its TLS certificate the node's name as
their common name, so an honest orderer's signatures map to its consenter entry, while an orderer organisation
member that is not a consenter (an admin, a client, a removed node) cannot sign for the channel.

etcdraft writes **one** signature per block (the orderer that wrote its copy), so a block needs one valid consenter
signature (:attr:`ChannelConfig.required_signatures`); other consensus types are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from chains.fabric.errors import ChannelConfigError
from chains.fabric.proto import (
    CONFIG_HEADER_TYPE,
    Block,
    ChannelHeader,
    ConfigEnvelope,
    ConfigGroup,
    ConsensusType,
    Envelope,
    EtcdRaftConfigMetadata,
    FabricMSPConfig,
    MSPConfig,
    Payload,
    data_hash,
)
from protocol.errors import CodecError

if TYPE_CHECKING:
    from chains.fabric.msp import Msp

__all__ = ["ETCDRAFT", "MAX_CONSENTERS", "MAX_ORGS", "ChannelConfig", "config_envelope_of_block"]

ETCDRAFT: Final = "etcdraft"
MAX_CONSENTERS: Final = 64
"""Most consenters a config may name."""
MAX_ORGS: Final = 64
"""Most organisations in the orderer or application group."""


def config_envelope_of_block(block: Block, channel_id: str) -> bytes:
    """The encoded ``ConfigEnvelope`` of a config block of ``channel_id``: its data is present and matches its
    header's ``data_hash``, holds exactly one envelope, of type CONFIG, of this channel.
    :class:`~chains.fabric.errors.ChannelConfigError` otherwise (bytes that do not decode: ``codec.invalid``)."""
    n = block.header.number
    if block.data is None:
        raise ChannelConfigError(f"config block {n} came without its data")
    if data_hash(block.data) != block.header.data_hash:
        raise ChannelConfigError(f"the data of config block {n} does not match its header's data_hash",
                                 expected=block.header.data_hash.hex(), got=data_hash(block.data).hex())
    if len(block.data) != 1:
        raise ChannelConfigError(f"config block {n} must hold exactly one transaction", got=len(block.data))
    payload = Payload.decode(Envelope.decode(block.data[0]).payload)
    if payload.header is None:
        raise ChannelConfigError(f"the config transaction of block {n} has no header")
    chdr = ChannelHeader.decode(payload.header.channel_header)
    if chdr.type != CONFIG_HEADER_TYPE:
        raise ChannelConfigError(f"block {n} is not a config block", expected=CONFIG_HEADER_TYPE, got=chdr.type)
    if chdr.channel_id != channel_id:
        raise ChannelConfigError(f"config block {n} is of another channel", expected=channel_id, got=chdr.channel_id)
    return payload.data


def _msps(group: ConfigGroup | None, what: str) -> dict[str, Msp]:
    from chains.fabric.msp import Msp  # the X.509 stack (cryptography, ~7 MB) loads with the first channel config

    if group is None:
        raise ChannelConfigError(f"the channel config has no {what} group")
    if len(group.groups) > MAX_ORGS:
        raise ChannelConfigError(f"too many {what} organisations", expected=f"<= {MAX_ORGS}", got=len(group.groups))
    out: dict[str, Msp] = {}
    for org_name, org in sorted(group.groups.items()):
        value = org.values.get("MSP")
        if value is None:
            raise ChannelConfigError(f"{what} organisation {org_name} has no MSP value")
        msp_cfg = MSPConfig.decode(value.value)
        if msp_cfg.type != 0:
            raise ChannelConfigError(f"{what} organisation {org_name}: only X.509 (FABRIC) MSPs are supported",
                                     expected=0, got=msp_cfg.type)
        msp = Msp(FabricMSPConfig.decode(msp_cfg.config))
        if msp.mspid in out:
            raise ChannelConfigError(f"two {what} organisations with MSP id {msp.mspid}")
        out[msp.mspid] = msp
    return out


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One channel config, read (module docstring). Build it with :meth:`parse`."""

    channel_id: str
    """The channel's name."""
    sequence: int
    """The config sequence."""
    orderer_msps: Mapping[str, Msp]
    """Orderer organisations' MSPs by MSP id."""
    application_msps: Mapping[str, Msp]
    """Application (peer) organisations' MSPs by MSP id."""
    consenters: frozenset[tuple[str, str]]
    """``(orderer MSP id, common name)`` of each consenter (module docstring)."""
    consenter_count: int
    """Consenters in the config (a consenter whose TLS certificate no orderer organisation issued is counted but can
    never sign)."""
    required_signatures: int
    """Valid consenter signatures a block needs (1 under etcdraft)."""
    raw: bytes
    """The encoded ``ConfigEnvelope`` it was read from."""

    @classmethod
    def parse(cls, raw: bytes, channel_id: str) -> ChannelConfig:
        """The config in an encoded ``ConfigEnvelope`` (:class:`~chains.fabric.errors.ChannelConfigError` if the
        client cannot follow it, ``codec.invalid`` if it does not decode)."""
        env = ConfigEnvelope.decode(raw)
        root = env.config.channel_group
        orderer = root.groups.get("Orderer")
        orderer_msps = _msps(orderer, "Orderer")
        application_msps = _msps(root.groups.get("Application"), "Application")
        assert orderer is not None  # _msps refused a missing group
        ctype_value = orderer.values.get("ConsensusType")
        if ctype_value is None:
            raise ChannelConfigError("the Orderer group has no ConsensusType")
        ctype = ConsensusType.decode(ctype_value.value)
        if ctype.type != ETCDRAFT:
            raise ChannelConfigError("only etcdraft ordering is supported", expected=ETCDRAFT, got=ctype.type)
        meta = EtcdRaftConfigMetadata.decode(ctype.metadata)
        if not 1 <= len(meta.consenters) <= MAX_CONSENTERS:
            raise ChannelConfigError("etcdraft consenters out of range", expected=f"1..{MAX_CONSENTERS}",
                                     got=len(meta.consenters))
        from chains.fabric.msp import common_name, load_pem_certificate  # loaded by _msps above

        consenters: set[tuple[str, str]] = set()
        for c in meta.consenters:
            try:
                tls = load_pem_certificate(c.server_tls_cert, f"server TLS certificate of consenter {c.host}:{c.port}")
            except CodecError as exc:
                raise ChannelConfigError(exc.message) from exc
            cn = common_name(tls)
            if not cn:
                continue
            for mspid, msp in orderer_msps.items():
                if msp.tls_issued(tls):
                    consenters.add((mspid, cn))
        if not consenters:
            raise ChannelConfigError("no consenter's TLS certificate was issued by an orderer organisation's TLS CA: "
                                     "no block signer could be mapped to a consenter", got=len(meta.consenters))
        return cls(channel_id, env.config.sequence, orderer_msps, application_msps, frozenset(consenters),
                   len(meta.consenters), 1, raw)

    @classmethod
    def from_block(cls, block: Block, channel_id: str) -> ChannelConfig:
        """The config carried by config block ``block`` of ``channel_id``."""
        return cls.parse(config_envelope_of_block(block, channel_id), channel_id)
