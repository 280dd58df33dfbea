"""A peer's committed blocks, read for the relayer (SPEC.md §8.7): the light client's header form and the bridge's
events of VALID transactions.

A block comes from a peer as ``common.Block`` bytes (qscc ``GetBlockByNumber``: the response payload *is* the
serialized block). Unlike the orderer's copy, a peer's block carries the peer's validation flags — metadata index 2,
``TRANSACTIONS_FILTER``, one ``TxValidationCode`` byte per transaction — which no orderer signs. They are read here
for one purpose only: to skip the chaincode events of transactions the peers invalidated (an MVCC conflict, a policy
failure), whose writes never reached state. The relay never trusts them (hazard 1): its light client takes headers
and orderer signatures from :attr:`PeerBlock.header`, and state only by attestation.

Decoding uses hfc's generated protos (Fabric 1.4's, wire-compatible with 2.5 for these messages) because the light
client's strict codec (:mod:`chains.fabric.proto`) reads only what the light client needs; the header handed to the
light client is rebuilt from the same bytes it signs (header fields, metadata entries), so nothing is re-encoded that
a signature covers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from hfc.protos.common import common_pb2
from hfc.protos.peer import chaincode_event_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from chains.fabric.proto import CONFIG_HEADER_TYPE, Block, BlockHeader
from protocol.errors import CodecError

__all__ = ["ENDORSER_TRANSACTION", "TRANSACTIONS_FILTER_INDEX", "BridgeTx", "PeerBlock", "decode_peer_block"]

log = logging.getLogger("parkrelay.adapters.fabric")

TRANSACTIONS_FILTER_INDEX = 2
"""``common.BlockMetadataIndex.TRANSACTIONS_FILTER``."""
ENDORSER_TRANSACTION = 3
"""``common.HeaderType.ENDORSER_TRANSACTION``."""
NOT_VALIDATED = 254
"""``TxValidationCode.NOT_VALIDATED``: what a transaction without a flag byte counts as."""
MAX_EVENT_PAYLOAD = 1024 * 1024
"""Largest chaincode event payload decoded (the bridge's are a few hundred bytes)."""


@dataclass(frozen=True, slots=True)
class BridgeTx:
    """One transaction of a block, as the relayer sees it."""

    index: int
    """Position in the block's data."""
    tx_id: str
    """The channel header's transaction id (hex)."""
    validation_code: int
    """The peer's ``TxValidationCode`` (0: VALID)."""
    chaincode: str
    """Name of the chaincode whose action it carries ("" for a non-endorser transaction)."""
    event_name: str
    """The chaincode event's name ("" if none)."""
    event_payload: bytes
    """The chaincode event's payload (b"" if none)."""


@dataclass(frozen=True, slots=True)
class PeerBlock:
    """A committed block as one peer holds it."""

    number: int
    """Block number (the light client's height)."""
    header: Block
    """The light client's header form: header and metadata, with the data only for a config block."""
    is_config: bool
    """Whether its one transaction is a channel config update."""
    txs: tuple[BridgeTx, ...]
    """Its transactions with their validation codes."""
    size: int
    """Bytes of the block as received."""

    def events(self, chaincode: str) -> list[dict[str, Any]]:
        """The events ``chaincode`` emitted in VALID transactions, each one of the bridge's event dicts (the list its
        chaincode event carries, SPEC.md §8.7 / ``chains.fabric.chaincode.contract``) plus ``height`` (this block)
        and ``tx_hash`` (the transaction id). An event payload that is not such a list is logged and skipped: one
        bad transaction never stalls a relayer's scan."""
        out: list[dict[str, Any]] = []
        for tx in self.txs:
            if tx.validation_code != 0 or tx.chaincode != chaincode or not tx.event_payload:
                continue
            try:
                if len(tx.event_payload) > MAX_EVENT_PAYLOAD:
                    raise ValueError(f"{len(tx.event_payload)} bytes")
                items = json.loads(tx.event_payload)
                if not isinstance(items, list) or not all(isinstance(e, dict) and isinstance(e.get("type"), str)
                                                          for e in items):
                    raise ValueError("not a list of events")
            except (ValueError, RecursionError) as exc:
                log.error("block %d tx %s: skipping an undecodable %s event %r: %s", self.number, tx.tx_id,
                          chaincode, tx.event_name, exc)
                continue
            out.extend({**e, "height": self.number, "tx_hash": tx.tx_id} for e in items)
        return out

    def tx(self, tx_id: str) -> BridgeTx | None:
        """The transaction ``tx_id`` of this block, if it holds it (the first one: a duplicate is invalid)."""
        for tx in self.txs:
            if tx.tx_id == tx_id:
                return tx
        return None


def _parse(msg: Any, raw: bytes, what: str) -> Any:
    try:
        msg.ParseFromString(raw)
    except (DecodeError, ValueError, TypeError) as exc:
        raise CodecError(f"peer block: {what} does not decode: {exc}") from exc
    return msg


def decode_peer_block(raw: bytes, expected_number: int | None = None) -> PeerBlock:
    """Decode a committed block from a peer (module docstring); :class:`CodecError` if it is not one (or not
    block ``expected_number``)."""
    block = _parse(common_pb2.Block(), raw, "the block")
    if not block.HasField("header"):
        raise CodecError("peer block without a header")
    number = int(block.header.number)
    if expected_number is not None and number != expected_number:
        raise CodecError("the peer answered another block", expected=expected_number, got=number)
    metadata = tuple(bytes(m) for m in block.metadata.metadata)
    flags = metadata[TRANSACTIONS_FILTER_INDEX] if len(metadata) > TRANSACTIONS_FILTER_INDEX else b""
    data = tuple(bytes(d) for d in block.data.data)
    txs: list[BridgeTx] = []
    is_config = False
    for i, env_raw in enumerate(data):
        env = _parse(common_pb2.Envelope(), env_raw, f"envelope {i}")
        payload = _parse(common_pb2.Payload(), env.payload, f"payload {i}")
        ch = _parse(common_pb2.ChannelHeader(), payload.header.channel_header, f"channel header {i}")
        code = flags[i] if i < len(flags) else NOT_VALIDATED
        if ch.type == CONFIG_HEADER_TYPE:
            is_config = True
        cc, name, event = "", "", b""
        if ch.type == ENDORSER_TRANSACTION:
            cc, name, event = _chaincode_event(payload.data, i)
        txs.append(BridgeTx(i, ch.tx_id, code, cc, name, event))
    header = BlockHeader(number, bytes(block.header.previous_hash), bytes(block.header.data_hash))
    light = Block(header, data if is_config else None, metadata)
    return PeerBlock(number, light, is_config, tuple(txs), len(raw))


def _chaincode_event(tx_raw: bytes, i: int) -> tuple[str, str, bytes]:
    """(chaincode, event name, event payload) of an endorser transaction's first action."""
    tx = _parse(transaction_pb2.Transaction(), tx_raw, f"transaction {i}")
    for action in tx.actions:
        cap = _parse(transaction_pb2.ChaincodeActionPayload(), action.payload, f"action payload {i}")
        prp = _parse(proposal_response_pb2.ProposalResponsePayload(), cap.action.proposal_response_payload,
                     f"proposal response payload {i}")
        cca = _parse(proposal_pb2.ChaincodeAction(), prp.extension, f"chaincode action {i}")
        name = cca.chaincode_id.name
        if not cca.events:
            return name, "", b""
        ev = _parse(chaincode_event_pb2.ChaincodeEvent(), cca.events, f"chaincode event {i}")
        return ev.chaincode_id or name, ev.event_name, bytes(ev.payload)
    return "", "", b""
