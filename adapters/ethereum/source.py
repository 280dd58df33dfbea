"""Source side of the Ethereum park (chains/ethereum/SPEC.md §E5): heights, headers, proofs, events.

* Finality is confirmation depth: ``final_height = head − confirmation_depth`` (the relay's light
  client adds validator attestations on top, SPEC §E3).
* ``headers`` are :class:`~chains.ethereum.types.EthHeader` built from the node's block JSON, each
  checked to hash (keccak of its RLP) to the block hash the node reported.
* ``prove`` is ``eth_getProof`` of the bridge account and the record's storage slot (SPEC §E2.1) at the
  block, encoded as ``rlp([account_proof_nodes, storage_proof_nodes])`` (SPEC §E3).
* ``events`` reads the bridge's logs with ``eth_getLogs`` in ranges of ``log_chunk`` blocks, as the
  event dicts the Python parks return (``send_packet`` with its ``fees``, ``write_ack``, ``settle_packet``,
  ``fee_paid``, ``fee_refunded``: protocol SPEC §6.10, in wei).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from eth_utils.address import to_checksum_address

from adapters.common.roles import ProvenValue
from adapters.ethereum.abi import EVENTS, EventAbi, decode_event
from adapters.ethereum.rpc import EthRpc, hex_int, to_bytes
from chains.ethereum import proofs
from chains.ethereum.types import EthHeader
from protocol.codec import ack_commitment, decode_packet, encode_ack, packet_commitment
from protocol.errors import CodecError, InvalidProofError, ProtocolError, TransportError
from protocol.types import Acknowledgement, AckStatus, PacketKind

__all__ = ["EVENT_TYPES", "FEE_DENOM", "FEE_STEPS", "EthSource", "ack_of_code"]

log = logging.getLogger("parkrelay.adapters.ethereum")

EVENT_TYPES: dict[str, str] = {
    "send_packet": "PacketSent",
    "write_ack": "AckWritten",
    "settle_packet": "PacketSettled",
    "relay_validators_updated": "RelayValidatorsUpdated",
    "fee_paid": "FeePaid",
    "fee_refunded": "FeeRefunded",
}
"""Event ``type`` (as the Python parks name them) → ``ParkBridge`` event."""

FEE_DENOM = "wei"
"""The Ethereum park's fee denomination (protocol SPEC §6.10): relay fees are paid in ether."""
FEE_STEPS = ("verify", "execute", "confirm")
"""The ``step`` of ``FeePaid`` / ``FeeRefunded`` (1, 2, 3) by name."""

_FEES_ESCROWED = "fees_escrowed"
"""``FeesEscrowed``: not an event of its own to a reader, but the ``fees`` of the ``send_packet`` before it."""

_BY_TOPIC: dict[bytes, tuple[str, EventAbi]] = {
    **{EVENTS[name].topic: (kind, EVENTS[name]) for kind, name in EVENT_TYPES.items()},
    EVENTS["FeesEscrowed"].topic: (_FEES_ESCROWED, EVENTS["FeesEscrowed"]),
}
_OUTCOMES = {1: "acked", 2: "timed_out"}
_KINDS = {k.value: k.name.lower() for k in PacketKind}
_CONCURRENCY = 16
"""Most requests one call keeps in flight (headers, storage reads)."""


def ack_of_code(code: str, relayer: str = "") -> Acknowledgement:
    """The ack an ``AckWritten`` log stands for: success for ``ok``, else an error ack with ``code``, naming
    ``relayer`` when the executing relayer named itself (the four-field ack, protocol SPEC §2.4); the Ethereum
    bridge's acks carry no result (SPEC §E2.2). Raises :class:`~protocol.errors.CodecError` for an invalid code or
    relayer."""
    ack = Acknowledgement(AckStatus.SUCCESS if code == "ok" else AckStatus.ERROR, code, b"", relayer)
    encode_ack(ack)  # validates
    return ack


class EthSource:
    """:class:`~adapters.common.roles.SourceSide` of the Ethereum park (one node, one bridge)."""

    def __init__(self, rpc: EthRpc, chain_id: str, bridge_address: str, confirmation_depth: int = 0, *,
                 log_chunk: int = 1000) -> None:
        if confirmation_depth < 0 or log_chunk < 1:
            raise ValueError("confirmation_depth >= 0 and log_chunk >= 1")
        self.rpc = rpc
        self.chain_id = chain_id
        self.bridge = to_checksum_address(bridge_address)
        self.confirmation_depth = confirmation_depth
        self.log_chunk = log_chunk

    # -- heights and headers ----------------------------------------------------------------------

    async def latest_height(self) -> int:
        """Height of the node's head block."""
        return hex_int(await self.rpc.call("eth_blockNumber", []))

    async def final_height(self) -> int:
        """Head minus the confirmation depth (never below 0)."""
        return max(0, await self.latest_height() - self.confirmation_depth)

    async def block(self, height: int) -> dict[str, Any] | None:
        """The node's JSON of block ``height`` (transaction hashes only), or None past the head."""
        result: dict[str, Any] | None = await self.rpc.call("eth_getBlockByNumber", [hex(height), False])
        return result

    async def _block_or_raise(self, height: int) -> dict[str, Any]:
        b = await self.block(height)
        if b is None:
            raise TransportError(f"block {height} is not on the node yet", retryable=True, side=self.chain_id)
        return b

    def header_of(self, block: dict[str, Any]) -> EthHeader:
        """The header of ``block`` (node JSON), checked against the block hash the node reported."""
        try:
            header = EthHeader.from_rpc(block)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"{self.chain_id}: block JSON does not make a header: {exc}") from exc
        reported = to_bytes(block["hash"])
        if header.hash != reported:
            raise CodecError(f"{self.chain_id}: header RLP of block {hex_int(block['number'])} does not hash to the "
                             "block hash (a field this client does not know?)", expected=reported.hex(),
                             got=header.hash.hex())
        return header

    async def headers(self, start: int, end: int) -> list[Any]:
        """Headers ``start..end`` of the node's canonical chain; stops early at the head."""
        out: list[Any] = []
        for lo in range(max(start, 0), end + 1, _CONCURRENCY):
            hi = min(end, lo + _CONCURRENCY - 1)
            blocks = await asyncio.gather(*(self.block(n) for n in range(lo, hi + 1)))
            for n, b in zip(range(lo, hi + 1), blocks, strict=True):
                if b is None:
                    return out
                h = self.header_of(b)
                if h.height != n:
                    raise CodecError(f"{self.chain_id}: asked for block {n}, got {h.height}")
                if out and h.parent_hash != out[-1].hash:
                    # a reorg between two reads: the caller asks again on its next step
                    raise TransportError(f"block {n} does not extend block {n - 1} (reorg while reading)",
                                         retryable=True, side=self.chain_id)
                out.append(h)
        return out

    async def header_time_ms(self, height: int) -> int:
        """Block time of ``height`` in ms (``timestamp × 1000``, SPEC §E1)."""
        return 1000 * hex_int((await self._block_or_raise(height))["timestamp"])

    # -- state ------------------------------------------------------------------------------------

    async def prove(self, key: bytes, height: int) -> ProvenValue:
        """The bridge record at protocol path ``key`` after block ``height``, with its MPT proof (SPEC §E3)."""
        slot = proofs.storage_slot_of_path(key)
        block = await self._block_or_raise(height)
        # by the block's hash (EIP-1898): the proof is against exactly the state root returned with it
        r = await self.rpc.call("eth_getProof", [self.bridge, ["0x" + slot.hex()], {"blockHash": block["hash"]}])
        try:
            proof = proofs.EthStorageProof.from_rpc(r, slot)
            (sp,) = [e for e in r["storageProof"] if hex_int(e["key"]) == int.from_bytes(slot, "big")]
            stored = hex_int(sp["value"])
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            raise TransportError(f"eth_getProof: malformed answer: {exc}", retryable=True,
                                 side=self.chain_id) from exc
        value = stored.to_bytes(32, "big") if stored else None
        return ProvenValue(height, key, value, proof.encode(), to_bytes(block["stateRoot"]))

    async def storage(self, key: bytes, height: int | str = "latest") -> bytes | None:
        """The 32-byte value the bridge stores at protocol path ``key`` (None when 0), without a proof."""
        tag = hex(height) if isinstance(height, int) else height
        slot = proofs.storage_slot_of_path(key)
        raw = await self.rpc.call("eth_getStorageAt", [self.bridge, "0x" + slot.hex(), tag])
        value = to_bytes(raw).rjust(32, b"\0")
        return None if not any(value) else value

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        """Hex values of protocol paths at one block (the head). The bridge stores only ``commitments/...``
        and ``receipts/...`` (SPEC §E2.1); every other path (``acks/...``: Ethereum keeps acks in logs)
        answers None."""
        out: dict[str, str | None] = dict.fromkeys(keys)
        stored = [k for k in keys if k.startswith(("commitments/", "receipts/"))]
        if not stored:
            return out
        head = await self.latest_height()  # every read at one block, so the answers agree
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(k: str) -> None:
            async with sem:
                try:
                    v = await self.storage(k.encode(), head)
                except InvalidProofError:  # not a well-formed record path: the bridge stores nothing there
                    return
            out[k] = None if v is None else v.hex()

        await asyncio.gather(*(one(k) for k in stored))
        return out

    # -- events -----------------------------------------------------------------------------------

    async def logs(self, start: int, end: int, topics: list[bytes]) -> list[dict[str, Any]]:
        """The bridge's logs with topic 0 in ``topics`` in blocks ``start..end``, fetched in chunks."""
        out: list[dict[str, Any]] = []
        t0 = ["0x" + t.hex() for t in topics]
        lo = max(start, 0)
        if lo <= end:
            end = min(end, await self.latest_height())  # a range past the head is an error to the node
        while lo <= end:
            hi = min(end, lo + self.log_chunk - 1)
            batch = await self.rpc.call("eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi),
                                                        "address": self.bridge, "topics": [t0]}])
            out.extend(x for x in batch or [] if not x.get("removed"))
            lo = hi + 1
        out.sort(key=lambda x: (hex_int(x["blockNumber"]), hex_int(x["logIndex"])))
        return out

    async def events(self, start: int, end: int, kind: str | None = None) -> list[dict[str, Any]]:
        """Bridge events in blocks ``start..end`` as the Python parks' event dicts (optionally one ``type``).

        A ``send_packet`` whose sender escrowed relay fees carries them as ``fees`` ``{verify, execute, confirm,
        denom: "wei"}`` (from the ``FeesEscrowed`` log the same transaction wrote right after its ``PacketSent``), as
        on the Python parks; without fees it has no ``fees``."""
        if kind is None:
            topics = [EVENTS[name].topic for name in EVENT_TYPES.values()]
        elif kind in EVENT_TYPES:
            topics = [EVENTS[EVENT_TYPES[kind]].topic]
        else:
            return []
        if kind in (None, "send_packet"):
            topics.append(EVENTS["FeesEscrowed"].topic)
        out: list[dict[str, Any]] = []
        for entry in await self.logs(start, end, topics):
            ev = self.event_of(entry)
            if ev is None:
                continue
            if ev["type"] == _FEES_ESCROWED:
                self._attach_fees(out, ev)
            else:
                out.append(ev)
        return out

    def _attach_fees(self, out: list[dict[str, Any]], escrowed: dict[str, Any]) -> None:
        """Give the ``send_packet`` of ``escrowed``'s packet (same transaction, dst, lane and sequence) its fees."""
        for ev in reversed(out):
            if (ev["type"] == "send_packet" and ev.get("tx_hash") == escrowed["tx_hash"]
                    and (ev["dst"], ev["lane"], ev["sequence"]) == (escrowed["dst"], escrowed["lane"],
                                                                     escrowed["sequence"])):
                ev["fees"] = escrowed["fees"]
                return
        log.error("%s: FeesEscrowed of %s/%s/%s in tx %s without its PacketSent", self.chain_id, escrowed["dst"],
                  escrowed["lane"], escrowed["sequence"], escrowed["tx_hash"])

    def event_of(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """The event dict of one bridge log (node JSON), or None for a log that is not a bridge event."""
        topics = entry.get("topics") or []
        try:  # a node's malformed topic list is skipped like an undecodable log, not raised into the scan
            found = _BY_TOPIC.get(to_bytes(topics[0])) if topics else None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            log.error("%s: skipping a log with malformed topics in block %r: %s", self.chain_id,
                      entry.get("blockNumber"), exc)
            return None
        if found is None:
            return None
        kind, abi = found
        try:
            f = decode_event(abi, to_bytes(entry["data"]), [to_bytes(t) for t in topics[1:]])
            return self._event(kind, f, entry)
        except Exception as exc:  # the ABI decoder's errors share no base class
            # the bridge wrote something no park can read: report it, do not stall the scan on it
            # (the block number raw: it may be what is malformed)
            log.error("%s: skipping an undecodable %s log in block %r (tx %s): %s", self.chain_id, abi.name,
                      entry.get("blockNumber"), entry.get("transactionHash"), exc)
            return None

    def _event(self, kind: str, f: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {"type": kind, "height": hex_int(entry["blockNumber"]),
                                "tx_hash": entry.get("transactionHash")}
        if kind == "send_packet":
            raw = bytes(f["packet"])
            pkt = decode_packet(raw)
            return {**base, "packet": raw.hex(), "src": pkt.src_chain, "dst": pkt.dst_chain, "lane": pkt.lane,
                    "sequence": pkt.sequence, "kind": pkt.kind.name.lower(),
                    "commitment": packet_commitment(pkt).hex()}
        if kind == "write_ack":
            # the bridge logs the ack's code and relayer: its ack is abi.encode(1, "ok", "") or abi.encode(2, code,
            # ""), with the relayer as a fourth field when one was named (protocol SPEC §2.4)
            code = str(f["ackCode"])
            ev = {**base, "src": f["srcChain"], "dst": self.chain_id, "lane": f["laneId"],
                  "sequence": int(f["sequence"]), "kind": _KINDS.get(int(f["kind"]), str(f["kind"]))}
            try:
                ack = ack_of_code(code, str(f["relayer"]))
            except ProtocolError:
                log.warning("%s: write_ack %s/%s with an invalid ack code", self.chain_id, f["laneId"], f["sequence"])
            else:
                ev.update(ack=encode_ack(ack).hex(), success=ack.success, code=ack.code,
                          ack_commitment=ack_commitment(ack).hex())
            return ev
        if kind == "settle_packet":
            return {**base, "src": self.chain_id, "dst": f["dstChain"], "lane": f["laneId"],
                    "sequence": int(f["sequence"]), "outcome": _OUTCOMES.get(int(f["outcome"]), str(f["outcome"])),
                    "refunded": bool(f["refunded"])}
        if kind in ("fee_paid", "fee_refunded", _FEES_ESCROWED):
            ids = {"src": self.chain_id, "dst": str(f["dstChain"]), "lane": str(f["laneId"]),
                   "sequence": int(f["sequence"])}
            if kind == _FEES_ESCROWED:
                return {**base, **ids, "fees": {**{step: int(f[step]) for step in FEE_STEPS}, "denom": FEE_DENOM}}
            if not 1 <= int(f["step"]) <= len(FEE_STEPS):
                raise ValueError(f"no fee step {f['step']}")
            step = FEE_STEPS[int(f["step"]) - 1]
            if kind == "fee_paid":  # the payee as the certified record names it (chains/common/fees.py)
                return {**base, **ids, "step": step, "payee": str(f["payee"]), "amount": int(f["amount"]),
                        "denom": FEE_DENOM}
            # the payer is the packet's sender, named as the packet names it (lowercase hex, SPEC §E1)
            return {**base, **ids, "step": step, "to": str(f["account"]).lower(), "amount": int(f["amount"]),
                    "denom": FEE_DENOM}
        return {**base, "set_hash": bytes(f["setHash"]).hex(), "relay_height": int(f["height"])}

    async def close(self) -> None:
        """Close the node connection."""
        await self.rpc.close()
