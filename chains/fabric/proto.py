"""A strict protobuf wire codec for exactly the Hyperledger Fabric messages the relay's Fabric light client reads
(SPEC.md §8.7). Pure: no I/O.

Field numbers are Fabric's (``fabric-protos`` as Fabric v2.5.9 uses them, Go module ``fabric-protos-go`` v0.2.0):
``common/common.proto`` (Block, BlockHeader, BlockData, BlockMetadata, Metadata, MetadataSignature,
OrdererBlockMetadata, LastConfig, Envelope, Payload, Header, ChannelHeader, SignatureHeader), ``common/configtx.proto``
(ConfigEnvelope, Config, ConfigGroup, ConfigValue), ``msp/identities.proto`` (SerializedIdentity),
``msp/msp_config.proto`` (MSPConfig, FabricMSPConfig, FabricOUIdentifier, FabricNodeOUs),
``orderer/configuration.proto`` (ConsensusType), ``orderer/etcdraft/configuration.proto`` (ConfigMetadata,
Consenter), ``peer/proposal_response.proto``
(ProposalResponse, Response, ProposalResponsePayload, Endorsement), ``peer/proposal.proto`` (ChaincodeAction) and
``peer/chaincode.proto`` (ChaincodeID). The generated Python modules of hfc and of ``hyperledger-fabric-protos`` are
not used: they cannot share a process and are untyped.

**Strictness.** Decoding accepts what Fabric's Go encoder produces and refuses everything else that could matter, with
:class:`~protocol.errors.CodecError`:

* wire types 0 (varint), 1 (64-bit), 2 (length-delimited) and 5 (32-bit) only (groups are refused); a varint is at
  most 10 bytes and minimal (no redundant ``0x80 … 0x00`` continuation); a length never runs past the end;
* a known field must have its declared wire type; a singular field may appear once (protobuf's "last one wins" or
  merge would let two parsers read two different values from one signed byte string); a map key once;
* ``int32``/``uint32``/``bool``/enum values in range; ``string`` fields valid UTF-8;
* unknown fields are skipped (their wire type still checked): newer Fabric versions add fields, and a message's
  signature covers its raw bytes, never a re-encoding;
* every entry point bounds its input size, repeated fields bound their count, and ``ConfigGroup`` recursion is
  bounded in depth and in total groups.

Missing fields take proto3 defaults (0, empty). Signatures and hashes are always computed over raw bytes as received:
a field that Fabric signs as bytes (``Metadata.value``, ``MetadataSignature.signature_header``,
``ProposalResponse.payload``, ``Endorsement.endorser``) is kept as bytes beside its decoded form. The one exception
is the block header, whose hash Fabric defines over an ASN.1 encoding of its three fields
(:meth:`BlockHeader.asn1`, ``protoutil.BlockHeaderBytes``).

The wire layer (varints, field splitting, the spec-driven decoder, the writer) is :mod:`chains.common.protowire`, shared
with the ABCI codec; this module keeps its old private names for it.

The encoders (``encode()``) write fields in ascending number order and omit proto3 defaults, as Go does; tests use
them to build realistic blocks and proposal responses, relayers to strip a block's data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from chains.common import protowire as pw
from protocol.errors import CodecError

__all__ = [
    "CONFIG_HEADER_TYPE",
    "MAX_BLOCK_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_GROUPS",
    "MAX_PROPOSAL_RESPONSE_BYTES",
    "SIGNATURES_INDEX",
    "Block",
    "BlockHeader",
    "ChaincodeAction",
    "ChaincodeID",
    "ChannelHeader",
    "Config",
    "ConfigEnvelope",
    "ConfigGroup",
    "ConfigValue",
    "ConsensusType",
    "Endorsement",
    "Envelope",
    "EtcdRaftConfigMetadata",
    "EtcdRaftConsenter",
    "FabricMSPConfig",
    "FabricNodeOUs",
    "FabricOUIdentifier",
    "Header",
    "MSPConfig",
    "Metadata",
    "MetadataSignature",
    "OrdererBlockMetadata",
    "Payload",
    "ProposalResponse",
    "ProposalResponsePayload",
    "Response",
    "SerializedIdentity",
    "SignatureHeader",
]

MAX_BLOCK_BYTES: Final = 4 * 1024 * 1024
"""Largest encoded block a light client decodes (a config block is tens of KiB; a relayer strips the data of any
other block)."""
MAX_BLOCK_ENTRIES: Final = 10_000
"""Most transactions in a block's data, and most metadata entries."""
MAX_PROPOSAL_RESPONSE_BYTES: Final = 64 * 1024
"""Largest encoded proposal response (an attestation is a few KiB: two certificates and a short statement)."""
MAX_CONFIG_DEPTH: Final = 8
"""Deepest nesting of ``ConfigGroup`` (Fabric's channel config is 3 deep: Channel / Application / org)."""
MAX_CONFIG_GROUPS: Final = 512
"""Most ``ConfigGroup`` messages in one config (all depths)."""
MAX_MAP_ENTRIES: Final = 256
"""Most entries of one protobuf map (groups, values, policies of a config group)."""
MAX_REPEATED: Final = 256
"""Most elements of any other repeated field (certificates, signatures, consenters)."""
SIGNATURES_INDEX: Final = 0
"""``common.BlockMetadataIndex.SIGNATURES``: the metadata entry holding the orderers' block signatures."""
CONFIG_HEADER_TYPE: Final = 1
"""``common.HeaderType.CONFIG``: the channel header type of a config transaction."""

# --- the wire format (chains.common.protowire, under the names this module has always used) -------------------

_VARINT, _I64, _LEN, _I32 = pw.VARINT, pw.I64, pw.LEN, pw.I32
Field = pw.Field
_BYTES, _STRING, _U64K, _I64K, _I32K, _U32K, _BOOL = (pw.BYTES, pw.STRING, pw.UINT64, pw.INT64, pw.INT32, pw.UINT32,
                                                      pw.BOOL)
_LEN_KINDS: Final = pw.LEN_KINDS
_Spec = pw.Spec
_varint = pw.read_varint
_fields = pw.split_fields
_scalar = pw.scalar
_spec = pw.spec
_b, _s, _i, _opt, _list = pw.get_bytes, pw.get_str, pw.get_int, pw.get_opt, pw.get_list
_enc_varint = pw.enc_varint
_W = pw.Writer
_BIG_REPEATED: Final = frozenset({"BlockData", "BlockMetadata"})


def _decode(data: bytes, spec: _Spec, *, max_bytes: int = MAX_BLOCK_BYTES) -> dict[str, object]:
    """The known fields of one message by name (singular: value; repeated: list), strictly (module docstring).
    No message is larger than ``max_bytes`` (default :data:`MAX_BLOCK_BYTES`); a repeated field has at most
    :data:`MAX_BLOCK_ENTRIES` elements in a block's data and metadata, :data:`MAX_REPEATED` elsewhere."""
    return pw.decode(data, spec, max_bytes=max_bytes,
                     max_repeated=MAX_BLOCK_ENTRIES if spec.name in _BIG_REPEATED else MAX_REPEATED)


# --- common.proto: blocks ------------------------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_uint(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0x00 when the top bit is set; 0 -> 00
    return b"\x02" + _der_len(len(body)) + body


def _der_octets(value: bytes) -> bytes:
    return b"\x04" + _der_len(len(value)) + value


_BLOCK_HEADER = _spec("BlockHeader", number=(1, _U64K), previous_hash=(2, _BYTES), data_hash=(3, _BYTES))


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """``common.BlockHeader``: what the orderers sign of a block, and what the next block's ``previous_hash`` hashes."""

    number: int
    """Block number (height), 0 for the channel's genesis block."""
    previous_hash: bytes
    """:attr:`hash` of the block below (empty in the genesis block)."""
    data_hash: bytes
    """SHA-256 of the concatenated transactions of the block's data (``protoutil.BlockDataHash``)."""

    def asn1(self) -> bytes:
        """``protoutil.BlockHeaderBytes``: DER of ``SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET
        STRING data_hash }`` (Go's ``encoding/asn1`` of a struct with a ``*big.Int`` and two ``[]byte``)."""
        body = _der_uint(self.number) + _der_octets(self.previous_hash) + _der_octets(self.data_hash)
        return b"\x30" + _der_len(len(body)) + body

    @property
    def hash(self) -> bytes:
        """``protoutil.BlockHeaderHash``: SHA-256 of :meth:`asn1`."""
        return hashlib.sha256(self.asn1()).digest()

    @classmethod
    def decode(cls, raw: bytes) -> BlockHeader:
        d = _decode(raw, _BLOCK_HEADER)
        return cls(_i(d, "number"), _b(d, "previous_hash"), _b(d, "data_hash"))

    def encode(self) -> bytes:
        return _W().uint(1, self.number).raw(2, self.previous_hash).raw(3, self.data_hash).done()


_BLOCK = _spec("Block", header=(1, _BYTES), data=(2, _BYTES), metadata=(3, _BYTES))
_BLOCK_DATA = _spec("BlockData", data=(1, _BYTES, True))
_BLOCK_METADATA = _spec("BlockMetadata", metadata=(1, _BYTES, True))


def data_hash(data: Iterable[bytes]) -> bytes:
    """``protoutil.BlockDataHash``: SHA-256 of the transactions concatenated."""
    h = hashlib.sha256()
    for tx in data:
        h.update(tx)
    return h.digest()


@dataclass(frozen=True, slots=True)
class Block:
    """``common.Block``. A light client reads its header and its orderer signatures; the data only of config blocks."""

    header: BlockHeader
    """The header (a block without one is refused)."""
    data: tuple[bytes, ...] | None
    """The transactions (encoded envelopes), or ``None`` when the block came without its data."""
    metadata: tuple[bytes, ...]
    """``BlockMetadata.metadata``, indexed by ``common.BlockMetadataIndex`` (0: SIGNATURES). Only index 0 is
    signed; the others (last config, the peers' transaction validation flags…) are not and are never read."""

    @property
    def height(self) -> int:
        """The block number (the light-client interface names it height)."""
        return self.header.number

    @property
    def hash(self) -> bytes:
        """The header hash (:attr:`BlockHeader.hash`)."""
        return self.header.hash

    @classmethod
    def decode(cls, raw: bytes) -> Block:
        d = _decode(raw, _BLOCK, max_bytes=MAX_BLOCK_BYTES)
        header_raw = _opt(d, "header")
        if header_raw is None:
            raise CodecError("Block without a header")
        data_raw = _opt(d, "data")
        data = None if data_raw is None else _list(_decode(data_raw, _BLOCK_DATA), "data")
        metadata = _list(_decode(_b(d, "metadata"), _BLOCK_METADATA), "metadata")
        return cls(BlockHeader.decode(header_raw), data, metadata)

    def encode(self) -> bytes:
        w = _W().raw(1, self.header.encode(), keep_empty=True)
        if self.data is not None:
            w.raw(2, _W().each(1, self.data).done(), keep_empty=True)
        return w.raw(3, _W().each(1, self.metadata).done(), keep_empty=True).done()

    def without_data(self) -> Block:
        """The same block with its data left out (what a relayer sends for a block that is not a config block)."""
        return Block(self.header, None, self.metadata)


_METADATA = _spec("Metadata", value=(1, _BYTES), signatures=(2, _BYTES, True))
_METADATA_SIGNATURE = _spec("MetadataSignature", signature_header=(1, _BYTES), signature=(2, _BYTES))


@dataclass(frozen=True, slots=True)
class MetadataSignature:
    """``common.MetadataSignature``: one orderer's signature over ``Metadata.value || signature_header ||
    BlockHeader.asn1()``."""

    signature_header: bytes
    """An encoded :class:`SignatureHeader` (its creator is the signer), signed as raw bytes."""
    signature: bytes
    """DER ECDSA signature."""

    def encode(self) -> bytes:
        return _W().raw(1, self.signature_header).raw(2, self.signature).done()


@dataclass(frozen=True, slots=True)
class Metadata:
    """``common.Metadata`` (the SIGNATURES entry of a block's metadata)."""

    value: bytes
    """Signed with the header: an encoded :class:`OrdererBlockMetadata` in Fabric 2.x."""
    signatures: tuple[MetadataSignature, ...]
    """The orderers' signatures."""

    @classmethod
    def decode(cls, raw: bytes) -> Metadata:
        d = _decode(raw, _METADATA)
        sigs = []
        for s in _list(d, "signatures"):
            sd = _decode(s, _METADATA_SIGNATURE)
            sigs.append(MetadataSignature(_b(sd, "signature_header"), _b(sd, "signature")))
        return cls(_b(d, "value"), tuple(sigs))

    def encode(self) -> bytes:
        return _W().raw(1, self.value).each(2, (s.encode() for s in self.signatures)).done()


_ORDERER_BLOCK_METADATA = _spec("OrdererBlockMetadata", last_config=(1, _BYTES), consenter_metadata=(2, _BYTES))
_LAST_CONFIG = _spec("LastConfig", index=(1, _U64K))


@dataclass(frozen=True, slots=True)
class OrdererBlockMetadata:
    """``common.OrdererBlockMetadata``: the signed value of the SIGNATURES metadata
    (``BlockWriter.addBlockSignature``)."""

    last_config_index: int
    """``LastConfig.index``: the number of the newest config block at or below this block (this block's own number
    when it is a config block)."""
    consenter_metadata: bytes
    """Consensus-specific (etcdraft: the raft index); not read."""

    @classmethod
    def decode(cls, raw: bytes) -> OrdererBlockMetadata:
        d = _decode(raw, _ORDERER_BLOCK_METADATA)
        last = _opt(d, "last_config")
        if last is None:
            raise CodecError("OrdererBlockMetadata without last_config")
        return cls(_i(_decode(last, _LAST_CONFIG), "index"), _b(d, "consenter_metadata"))

    def encode(self) -> bytes:
        return (_W().raw(1, _W().uint(1, self.last_config_index).done(), keep_empty=True)
                .raw(2, self.consenter_metadata).done())


# --- common.proto: envelopes ---------------------------------------------------------------------------------

_ENVELOPE = _spec("Envelope", payload=(1, _BYTES), signature=(2, _BYTES))
_PAYLOAD = _spec("Payload", header=(1, _BYTES), data=(2, _BYTES))
_HEADER = _spec("Header", channel_header=(1, _BYTES), signature_header=(2, _BYTES))
_CHANNEL_HEADER = _spec("ChannelHeader", type=(1, _I32K), version=(2, _I32K), timestamp=(3, _BYTES),
                        channel_id=(4, _STRING), tx_id=(5, _STRING), epoch=(6, _U64K), extension=(7, _BYTES),
                        tls_cert_hash=(8, _BYTES))
_TIMESTAMP = _spec("Timestamp", seconds=(1, _I64K), nanos=(2, _I32K))
_SIGNATURE_HEADER = _spec("SignatureHeader", creator=(1, _BYTES), nonce=(2, _BYTES))


@dataclass(frozen=True, slots=True)
class Envelope:
    """``common.Envelope``: a transaction as it sits in a block's data."""

    payload: bytes
    """An encoded :class:`Payload`."""
    signature: bytes
    """The creator's signature over ``payload``."""

    @classmethod
    def decode(cls, raw: bytes) -> Envelope:
        d = _decode(raw, _ENVELOPE)
        return cls(_b(d, "payload"), _b(d, "signature"))

    def encode(self) -> bytes:
        return _W().raw(1, self.payload).raw(2, self.signature).done()


@dataclass(frozen=True, slots=True)
class Header:
    """``common.Header``."""

    channel_header: bytes
    """An encoded :class:`ChannelHeader`."""
    signature_header: bytes
    """An encoded :class:`SignatureHeader`."""

    def encode(self) -> bytes:
        return _W().raw(1, self.channel_header).raw(2, self.signature_header).done()


@dataclass(frozen=True, slots=True)
class Payload:
    """``common.Payload``."""

    header: Header | None
    """The header (a config transaction must have one)."""
    data: bytes
    """The body: an encoded :class:`ConfigEnvelope` for a config transaction."""

    @classmethod
    def decode(cls, raw: bytes) -> Payload:
        d = _decode(raw, _PAYLOAD)
        hraw = _opt(d, "header")
        header = None
        if hraw is not None:
            hd = _decode(hraw, _HEADER)
            header = Header(_b(hd, "channel_header"), _b(hd, "signature_header"))
        return cls(header, _b(d, "data"))

    def encode(self) -> bytes:
        return _W().raw(1, None if self.header is None else self.header.encode(), keep_empty=True) \
            .raw(2, self.data).done()


@dataclass(frozen=True, slots=True)
class ChannelHeader:
    """``common.ChannelHeader``."""

    type: int
    """``common.HeaderType`` (1: CONFIG, 3: ENDORSER_TRANSACTION…)."""
    channel_id: str
    """The channel's name."""
    tx_id: str = ""
    """Transaction id."""
    version: int = 0
    """Message protocol version."""
    timestamp: tuple[int, int] | None = None
    """(seconds, nanos) chosen by the transaction's creator: never trusted as a time (SPEC.md §8.7, hazard 2)."""
    epoch: int = 0
    """Unused by Fabric 2.x."""
    extension: bytes = b""
    """Header-type-specific extension."""
    tls_cert_hash: bytes = b""
    """Hash of the client's TLS certificate, if mutual TLS."""

    @classmethod
    def decode(cls, raw: bytes) -> ChannelHeader:
        d = _decode(raw, _CHANNEL_HEADER)
        ts_raw = _opt(d, "timestamp")
        ts = None
        if ts_raw is not None:
            td = _decode(ts_raw, _TIMESTAMP)
            ts = (_i(td, "seconds"), _i(td, "nanos"))
        return cls(_i(d, "type"), _s(d, "channel_id"), _s(d, "tx_id"), _i(d, "version"), ts, _i(d, "epoch"),
                   _b(d, "extension"), _b(d, "tls_cert_hash"))

    def encode(self) -> bytes:
        ts = None if self.timestamp is None else _W().uint(1, self.timestamp[0]).uint(2, self.timestamp[1]).done()
        return (_W().uint(1, self.type).uint(2, self.version).raw(3, ts, keep_empty=True).text(4, self.channel_id)
                .text(5, self.tx_id).uint(6, self.epoch).raw(7, self.extension).raw(8, self.tls_cert_hash).done())


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    """``common.SignatureHeader``."""

    creator: bytes
    """An encoded :class:`SerializedIdentity` of the signer."""
    nonce: bytes
    """Random bytes."""

    @classmethod
    def decode(cls, raw: bytes) -> SignatureHeader:
        d = _decode(raw, _SIGNATURE_HEADER)
        return cls(_b(d, "creator"), _b(d, "nonce"))

    def encode(self) -> bytes:
        return _W().raw(1, self.creator).raw(2, self.nonce).done()


_SERIALIZED_IDENTITY = _spec("SerializedIdentity", mspid=(1, _STRING), id_bytes=(2, _BYTES))


@dataclass(frozen=True, slots=True)
class SerializedIdentity:
    """``msp.SerializedIdentity``: an MSP id and a PEM X.509 certificate."""

    mspid: str
    """The MSP (organisation) id."""
    id_bytes: bytes
    """The PEM certificate."""

    @classmethod
    def decode(cls, raw: bytes) -> SerializedIdentity:
        d = _decode(raw, _SERIALIZED_IDENTITY, max_bytes=16 * 1024)
        return cls(_s(d, "mspid"), _b(d, "id_bytes"))

    def encode(self) -> bytes:
        return _W().text(1, self.mspid).raw(2, self.id_bytes).done()


# --- configtx.proto --------------------------------------------------------------------------------------------

_CONFIG_ENVELOPE = _spec("ConfigEnvelope", config=(1, _BYTES), last_update=(2, _BYTES))
_CONFIG = _spec("Config", sequence=(1, _U64K), channel_group=(2, _BYTES))
_CONFIG_GROUP = _spec("ConfigGroup", version=(1, _U64K), groups=(2, _BYTES, True), values=(3, _BYTES, True),
                      policies=(4, _BYTES, True), mod_policy=(5, _STRING))
_CONFIG_VALUE = _spec("ConfigValue", version=(1, _U64K), value=(2, _BYTES), mod_policy=(3, _STRING))
_MAP_ENTRY = _spec("MapEntry", key=(1, _STRING), value=(2, _BYTES))


@dataclass(frozen=True, slots=True)
class ConfigValue:
    """``common.ConfigValue``."""

    version: int
    """Version of the value."""
    value: bytes
    """The encoded value (an :class:`MSPConfig`, a :class:`ConsensusType`…)."""
    mod_policy: str = ""
    """Policy that may modify it."""

    def encode(self) -> bytes:
        return _W().uint(1, self.version).raw(2, self.value).text(3, self.mod_policy).done()


@dataclass(frozen=True, slots=True)
class ConfigGroup:
    """``common.ConfigGroup``. Policies are kept as their raw bytes: the light client does not evaluate them."""

    version: int = 0
    """Version of the group."""
    groups: Mapping[str, ConfigGroup] = field(default_factory=dict)
    """Sub-groups by name."""
    values: Mapping[str, ConfigValue] = field(default_factory=dict)
    """Values by name."""
    policies: Mapping[str, bytes] = field(default_factory=dict)
    """Encoded ``ConfigPolicy`` messages by name (not interpreted)."""
    mod_policy: str = ""
    """Policy that may modify it."""

    def encode(self) -> bytes:
        w = _W().uint(1, self.version)
        for k in sorted(self.groups):
            w.raw(2, _W().text(1, k).raw(2, self.groups[k].encode(), keep_empty=True).done())
        for k in sorted(self.values):
            w.raw(3, _W().text(1, k).raw(2, self.values[k].encode(), keep_empty=True).done())
        for k in sorted(self.policies):
            w.raw(4, _W().text(1, k).raw(2, self.policies[k], keep_empty=True).done())
        return w.text(5, self.mod_policy).done()


T = TypeVar("T")


def _map(entries: tuple[bytes, ...], what: str, value: Callable[[bytes], T]) -> dict[str, T]:
    if len(entries) > MAX_MAP_ENTRIES:
        raise CodecError(f"{what}: too many map entries", expected=f"<= {MAX_MAP_ENTRIES}", got=len(entries))
    out: dict[str, T] = {}
    for e in entries:
        d = _decode(e, _MAP_ENTRY)
        k = _s(d, "key")
        if k in out:
            raise CodecError(f"{what}: map key repeated", got=k)
        out[k] = value(_b(d, "value"))
    return out


def _decode_group(raw: bytes, depth: int, budget: list[int]) -> ConfigGroup:
    if depth > MAX_CONFIG_DEPTH:
        raise CodecError("ConfigGroup nested too deep", expected=f"<= {MAX_CONFIG_DEPTH}", got=depth)
    budget[0] -= 1
    if budget[0] < 0:
        raise CodecError("too many ConfigGroups", expected=f"<= {MAX_CONFIG_GROUPS}")
    d = _decode(raw, _CONFIG_GROUP)

    def value(b: bytes) -> ConfigValue:
        vd = _decode(b, _CONFIG_VALUE)
        return ConfigValue(_i(vd, "version"), _b(vd, "value"), _s(vd, "mod_policy"))

    groups = _map(_list(d, "groups"), "ConfigGroup.groups", lambda b: _decode_group(b, depth + 1, budget))
    values = _map(_list(d, "values"), "ConfigGroup.values", value)
    policies = _map(_list(d, "policies"), "ConfigGroup.policies", lambda b: b)
    return ConfigGroup(_i(d, "version"), groups, values, policies, _s(d, "mod_policy"))


@dataclass(frozen=True, slots=True)
class Config:
    """``common.Config``: a channel's whole configuration."""

    sequence: int
    """Config sequence: +1 with every config update."""
    channel_group: ConfigGroup
    """The root group (``Channel``: groups ``Orderer`` and ``Application``)."""

    def encode(self) -> bytes:
        return _W().uint(1, self.sequence).raw(2, self.channel_group.encode(), keep_empty=True).done()


@dataclass(frozen=True, slots=True)
class ConfigEnvelope:
    """``common.ConfigEnvelope``: the data of a config transaction."""

    config: Config
    """The full config after the update."""
    last_update: bytes = b""
    """The encoded update envelope that produced it (not read: the block's orderer signatures vouch for the
    config)."""

    @classmethod
    def decode(cls, raw: bytes) -> ConfigEnvelope:
        d = _decode(raw, _CONFIG_ENVELOPE, max_bytes=MAX_BLOCK_BYTES)
        craw = _opt(d, "config")
        if craw is None:
            raise CodecError("ConfigEnvelope without a config")
        cd = _decode(craw, _CONFIG)
        graw = _opt(cd, "channel_group")
        if graw is None:
            raise CodecError("Config without a channel group")
        return cls(Config(_i(cd, "sequence"), _decode_group(graw, 1, [MAX_CONFIG_GROUPS])), _b(d, "last_update"))

    def encode(self) -> bytes:
        return _W().raw(1, self.config.encode(), keep_empty=True).raw(2, self.last_update).done()


# --- msp_config.proto ------------------------------------------------------------------------------------------

_MSP_CONFIG = _spec("MSPConfig", type=(1, _I32K), config=(2, _BYTES))
_FABRIC_MSP_CONFIG = _spec("FabricMSPConfig", name=(1, _STRING), root_certs=(2, _BYTES, True),
                           intermediate_certs=(3, _BYTES, True), admins=(4, _BYTES, True),
                           revocation_list=(5, _BYTES, True), organizational_unit_identifiers=(7, _BYTES, True),
                           tls_root_certs=(9, _BYTES, True), tls_intermediate_certs=(10, _BYTES, True),
                           fabric_node_ous=(11, _BYTES))
_OU_IDENTIFIER = _spec("FabricOUIdentifier", certificate=(1, _BYTES), organizational_unit_identifier=(2, _STRING))
_NODE_OUS = _spec("FabricNodeOUs", enable=(1, _BOOL), client_ou_identifier=(2, _BYTES),
                  peer_ou_identifier=(3, _BYTES), admin_ou_identifier=(4, _BYTES), orderer_ou_identifier=(5, _BYTES))


@dataclass(frozen=True, slots=True)
class MSPConfig:
    """``msp.MSPConfig``: the value ``MSP`` of an organisation's config group."""

    type: int
    """0: FABRIC (X.509); 1: IDEMIX (refused by the light client)."""
    config: bytes
    """An encoded :class:`FabricMSPConfig` when ``type`` is 0."""

    @classmethod
    def decode(cls, raw: bytes) -> MSPConfig:
        d = _decode(raw, _MSP_CONFIG)
        return cls(_i(d, "type"), _b(d, "config"))

    def encode(self) -> bytes:
        return _W().uint(1, self.type).raw(2, self.config).done()


@dataclass(frozen=True, slots=True)
class FabricOUIdentifier:
    """``msp.FabricOUIdentifier``: an organisational unit, optionally tied to the CA that must have issued it."""

    certificate: bytes
    """PEM of a root or intermediate CA of the MSP, or empty (any of its CAs)."""
    organizational_unit_identifier: str
    """The OU value (``peer``, ``orderer``…)."""

    @classmethod
    def decode(cls, raw: bytes) -> FabricOUIdentifier:
        d = _decode(raw, _OU_IDENTIFIER)
        return cls(_b(d, "certificate"), _s(d, "organizational_unit_identifier"))

    def encode(self) -> bytes:
        return _W().raw(1, self.certificate).text(2, self.organizational_unit_identifier).done()


@dataclass(frozen=True, slots=True)
class FabricNodeOUs:
    """``msp.FabricNodeOUs``: which OU makes an identity a client, peer, admin or orderer."""

    enable: bool
    """Node OUs are in force."""
    client: FabricOUIdentifier | None = None
    """The client OU."""
    peer: FabricOUIdentifier | None = None
    """The peer OU."""
    admin: FabricOUIdentifier | None = None
    """The admin OU."""
    orderer: FabricOUIdentifier | None = None
    """The orderer OU."""

    @classmethod
    def decode(cls, raw: bytes) -> FabricNodeOUs:
        d = _decode(raw, _NODE_OUS)

        def ou(name: str) -> FabricOUIdentifier | None:
            v = _opt(d, name)
            return None if v is None else FabricOUIdentifier.decode(v)

        return cls(bool(d.get("enable", False)), ou("client_ou_identifier"), ou("peer_ou_identifier"),
                   ou("admin_ou_identifier"), ou("orderer_ou_identifier"))

    def encode(self) -> bytes:
        w = _W().boolean(1, self.enable)
        for num, ou in ((2, self.client), (3, self.peer), (4, self.admin), (5, self.orderer)):
            w.raw(num, None if ou is None else ou.encode(), keep_empty=True)
        return w.done()


@dataclass(frozen=True, slots=True)
class FabricMSPConfig:
    """``msp.FabricMSPConfig`` (the fields the light client reads; signing identity and crypto config are skipped)."""

    name: str
    """The MSP id."""
    root_certs: tuple[bytes, ...]
    """PEM root CA certificates."""
    intermediate_certs: tuple[bytes, ...] = ()
    """PEM intermediate CA certificates."""
    admins: tuple[bytes, ...] = ()
    """PEM admin certificates (not read)."""
    revocation_list: tuple[bytes, ...] = ()
    """PEM certificate revocation lists."""
    organizational_unit_identifiers: tuple[FabricOUIdentifier, ...] = ()
    """OUs every identity must have one of (not read: node OUs decide roles)."""
    tls_root_certs: tuple[bytes, ...] = ()
    """PEM TLS root CA certificates (the consenters' TLS certificates chain to these)."""
    tls_intermediate_certs: tuple[bytes, ...] = ()
    """PEM TLS intermediate CA certificates."""
    fabric_node_ous: FabricNodeOUs | None = None
    """Node OUs, if configured."""

    @classmethod
    def decode(cls, raw: bytes) -> FabricMSPConfig:
        d = _decode(raw, _FABRIC_MSP_CONFIG)
        node_raw = _opt(d, "fabric_node_ous")
        return cls(_s(d, "name"), _list(d, "root_certs"), _list(d, "intermediate_certs"), _list(d, "admins"),
                   _list(d, "revocation_list"),
                   tuple(FabricOUIdentifier.decode(x) for x in _list(d, "organizational_unit_identifiers")),
                   _list(d, "tls_root_certs"), _list(d, "tls_intermediate_certs"),
                   None if node_raw is None else FabricNodeOUs.decode(node_raw))

    def encode(self) -> bytes:
        return (_W().text(1, self.name).each(2, self.root_certs).each(3, self.intermediate_certs).each(4, self.admins)
                .each(5, self.revocation_list).each(7, (o.encode() for o in self.organizational_unit_identifiers))
                .each(9, self.tls_root_certs).each(10, self.tls_intermediate_certs)
                .raw(11, None if self.fabric_node_ous is None else self.fabric_node_ous.encode(), keep_empty=True)
                .done())


# --- orderer configuration -------------------------------------------------------------------------------------

_CONSENSUS_TYPE = _spec("ConsensusType", type=(1, _STRING), metadata=(2, _BYTES), state=(3, _I32K))
_ETCDRAFT_METADATA = _spec("etcdraft.ConfigMetadata", consenters=(1, _BYTES, True), options=(2, _BYTES))
_CONSENTER = _spec("etcdraft.Consenter", host=(1, _STRING), port=(2, _U32K), client_tls_cert=(3, _BYTES),
                   server_tls_cert=(4, _BYTES))


@dataclass(frozen=True, slots=True)
class ConsensusType:
    """``orderer.ConsensusType``: the value ``ConsensusType`` of the ``Orderer`` group."""

    type: str
    """``etcdraft`` (the only type the light client follows)."""
    metadata: bytes
    """For etcdraft an encoded :class:`EtcdRaftConfigMetadata`."""
    state: int = 0
    """0: STATE_NORMAL, 1: STATE_MAINTENANCE."""

    @classmethod
    def decode(cls, raw: bytes) -> ConsensusType:
        d = _decode(raw, _CONSENSUS_TYPE)
        return cls(_s(d, "type"), _b(d, "metadata"), _i(d, "state"))

    def encode(self) -> bytes:
        return _W().text(1, self.type).raw(2, self.metadata).uint(3, self.state).done()


@dataclass(frozen=True, slots=True)
class EtcdRaftConsenter:
    """``etcdraft.Consenter``: one raft node, named by its endpoint and its TLS certificates."""

    host: str
    """Host name or address."""
    port: int
    """Cluster port."""
    client_tls_cert: bytes
    """PEM TLS client certificate."""
    server_tls_cert: bytes
    """PEM TLS server certificate."""

    def encode(self) -> bytes:
        return (_W().text(1, self.host).uint(2, self.port).raw(3, self.client_tls_cert)
                .raw(4, self.server_tls_cert).done())


@dataclass(frozen=True, slots=True)
class EtcdRaftConfigMetadata:
    """``etcdraft.ConfigMetadata``: the consenter set (options are kept raw)."""

    consenters: tuple[EtcdRaftConsenter, ...]
    """The raft nodes."""
    options: bytes = b""
    """Encoded ``etcdraft.Options`` (not read)."""

    @classmethod
    def decode(cls, raw: bytes) -> EtcdRaftConfigMetadata:
        d = _decode(raw, _ETCDRAFT_METADATA)
        cons = []
        for c in _list(d, "consenters"):
            cd = _decode(c, _CONSENTER)
            cons.append(EtcdRaftConsenter(_s(cd, "host"), _i(cd, "port"), _b(cd, "client_tls_cert"),
                                          _b(cd, "server_tls_cert")))
        return cls(tuple(cons), _b(d, "options"))

    def encode(self) -> bytes:
        return _W().each(1, (c.encode() for c in self.consenters)).raw(2, self.options).done()


# --- peer: proposal responses ---------------------------------------------------------------------------------

_PROPOSAL_RESPONSE = _spec("ProposalResponse", version=(1, _I32K), timestamp=(2, _BYTES), response=(4, _BYTES),
                           payload=(5, _BYTES), endorsement=(6, _BYTES))
_RESPONSE = _spec("Response", status=(1, _I32K), message=(2, _STRING), payload=(3, _BYTES))
_PROPOSAL_RESPONSE_PAYLOAD = _spec("ProposalResponsePayload", proposal_hash=(1, _BYTES), extension=(2, _BYTES))
_ENDORSEMENT = _spec("Endorsement", endorser=(1, _BYTES), signature=(2, _BYTES))
_CHAINCODE_ACTION = _spec("ChaincodeAction", results=(1, _BYTES), events=(2, _BYTES), response=(3, _BYTES),
                          chaincode_id=(4, _BYTES))
_CHAINCODE_ID = _spec("ChaincodeID", path=(1, _STRING), name=(2, _STRING), version=(3, _STRING))


@dataclass(frozen=True, slots=True)
class Response:
    """``peer.Response``: a chaincode's response."""

    status: int
    """HTTP-like status (200: OK)."""
    message: str
    """Error message, if any."""
    payload: bytes
    """The chaincode's result bytes."""

    @classmethod
    def decode(cls, raw: bytes) -> Response:
        d = _decode(raw, _RESPONSE)
        return cls(_i(d, "status"), _s(d, "message"), _b(d, "payload"))

    def encode(self) -> bytes:
        return _W().uint(1, self.status).text(2, self.message).raw(3, self.payload).done()


@dataclass(frozen=True, slots=True)
class Endorsement:
    """``peer.Endorsement``: the endorsing peer's identity and its signature over ``payload || endorser``."""

    endorser: bytes
    """An encoded :class:`SerializedIdentity`."""
    signature: bytes
    """DER ECDSA signature."""

    def encode(self) -> bytes:
        return _W().raw(1, self.endorser).raw(2, self.signature).done()


@dataclass(frozen=True, slots=True)
class ProposalResponse:
    """``peer.ProposalResponse``. Only ``payload`` and ``endorsement`` are signed; ``response`` is not, and the
    light client never reads it (the chaincode's signed response is inside ``payload``)."""

    version: int
    """Protocol version."""
    response: Response | None
    """UNSIGNED copy of the chaincode response: never trusted."""
    payload: bytes
    """An encoded :class:`ProposalResponsePayload`, signed by the endorser."""
    endorsement: Endorsement | None
    """The endorsement."""
    timestamp: bytes = b""
    """Encoded timestamp (not read)."""

    @classmethod
    def decode(cls, raw: bytes) -> ProposalResponse:
        d = _decode(raw, _PROPOSAL_RESPONSE, max_bytes=MAX_PROPOSAL_RESPONSE_BYTES)
        rraw, eraw = _opt(d, "response"), _opt(d, "endorsement")
        endorsement = None
        if eraw is not None:
            ed = _decode(eraw, _ENDORSEMENT)
            endorsement = Endorsement(_b(ed, "endorser"), _b(ed, "signature"))
        return cls(_i(d, "version"), None if rraw is None else Response.decode(rraw), _b(d, "payload"), endorsement,
                   _b(d, "timestamp"))

    def encode(self) -> bytes:
        return (_W().uint(1, self.version).raw(2, self.timestamp)
                .raw(4, None if self.response is None else self.response.encode(), keep_empty=True)
                .raw(5, self.payload)
                .raw(6, None if self.endorsement is None else self.endorsement.encode(), keep_empty=True).done())


@dataclass(frozen=True, slots=True)
class ProposalResponsePayload:
    """``peer.ProposalResponsePayload``: what an endorser signs (with its identity appended)."""

    proposal_hash: bytes
    """Hash of the proposal (binds the response to the client's request; not read)."""
    extension: bytes
    """An encoded :class:`ChaincodeAction`."""

    @classmethod
    def decode(cls, raw: bytes) -> ProposalResponsePayload:
        d = _decode(raw, _PROPOSAL_RESPONSE_PAYLOAD)
        return cls(_b(d, "proposal_hash"), _b(d, "extension"))

    def encode(self) -> bytes:
        return _W().raw(1, self.proposal_hash).raw(2, self.extension).done()


@dataclass(frozen=True, slots=True)
class ChaincodeID:
    """``peer.ChaincodeID``."""

    name: str
    """Chaincode name."""
    version: str = ""
    """Chaincode version (sequence), not read."""
    path: str = ""
    """Unused in Fabric 2.x."""

    def encode(self) -> bytes:
        return _W().text(1, self.path).text(2, self.name).text(3, self.version).done()


@dataclass(frozen=True, slots=True)
class ChaincodeAction:
    """``peer.ChaincodeAction``: the simulation result an endorsement signs."""

    response: Response | None
    """The chaincode's response (signed)."""
    chaincode_id: ChaincodeID | None
    """Which chaincode ran."""
    results: bytes = b""
    """Encoded read/write set (not read)."""
    events: bytes = b""
    """Encoded chaincode event (not read)."""

    @classmethod
    def decode(cls, raw: bytes) -> ChaincodeAction:
        d = _decode(raw, _CHAINCODE_ACTION)
        rraw, craw = _opt(d, "response"), _opt(d, "chaincode_id")
        cc = None
        if craw is not None:
            cd = _decode(craw, _CHAINCODE_ID)
            cc = ChaincodeID(_s(cd, "name"), _s(cd, "version"), _s(cd, "path"))
        return cls(None if rraw is None else Response.decode(rraw), cc, _b(d, "results"), _b(d, "events"))

    def encode(self) -> bytes:
        return (_W().raw(1, self.results).raw(2, self.events)
                .raw(3, None if self.response is None else self.response.encode(), keep_empty=True)
                .raw(4, None if self.chaincode_id is None else self.chaincode_id.encode(), keep_empty=True).done())
