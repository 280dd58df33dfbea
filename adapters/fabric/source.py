"""Source side of a Fabric park (:class:`~adapters.common.roles.SourceSide`; SPEC.md §8.7): heights, blocks, events,
attestations.

* **Heights.** A Fabric block is final once ordered (the ordering service does not fork): ``latest_height`` and
  ``final_height`` are both the newest block a read peer holds, ``GetChainInfo().height - 1`` from the query system
  chaincode.
* **Headers** are the blocks themselves, as the relay's :class:`~chains.fabric.light_client.FabricLightClient`
  takes them (:class:`chains.fabric.proto.Block`: header and metadata, the data only of config blocks), read with
  qscc ``GetBlockByNumber`` (its payload is the block's bytes) and kept in a small cache (blocks never change).
* **Proofs** are attestations (hazard 1: never a write read out of a block): the bridge chaincode's query
  ``attest(key_hex, nonce_hex)`` sent as one signed proposal to one peer of each organisation of the endorsement
  policy; their signed ``ProposalResponse`` protos make the bundle (:func:`chains.fabric.attestation.encode_bundle`).
  ``value`` is what the statements say (both must say the same: a peer one block behind the other is waited for
  briefly), ``state_root`` the header hash of block ``height`` (the light client records ``state_root = hash``; an
  attestation speaks of the peers' committed state when they answered, not of that block).
* **Events** are the bridge chaincode's events of **VALID** transactions only (a peer's ``TRANSACTIONS_FILTER``
  flags; an MVCC-invalidated transaction's events are skipped), each the event dict the Python parks emit
  (``send_packet`` with ``packet`` hex and, when the sender offered relay fees, ``fees`` ``{verify, execute,
  confirm, denom}``; ``write_ack`` with ``ack`` hex, three or four fields; ``settle_packet`` followed by its
  ``fee_paid`` / ``fee_refunded``; ``timeout_receipt``...) plus ``height`` and ``tx_hash``.
* **State reads** (``query_many``): ``attest`` on one read peer per path, the stored bytes as hex.
* **Time** (``header_time_ms``): Fabric has no block time that anyone but a transaction's client chose. The relay's
  Fabric light client stamps a block with the relay's own time when it accepts it, and decides a timeout only on the
  chaincode clocks of the peers that attest the timeout sentinel (hazard 2). So this answers what decides a timeout
  on Fabric: the smallest of the policy organisations' chaincode clocks *now* (read with ``attest``), for any
  height the peers hold — once it is past a packet's timeout, both organisations endorse ``timeout_receipt``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Iterable
from typing import Any

from adapters.common.roles import ProvenValue
from adapters.fabric.blocks import PeerBlock, decode_peer_block
from adapters.fabric.gateway import FabricGateway, nonce
from chains.fabric.attestation import MAX_KEY_BYTES, Statement, encode_bundle
from chains.fabric.consts import ATTEST_FUNCTION
from chains.fabric.proto import Block
from protocol.errors import CodecError, ParkRelayError, TransportError

__all__ = ["CLOCK_KEY", "FabricSource"]

log = logging.getLogger("parkrelay.adapters.fabric")

CLOCK_KEY = b"parkrelay/clock"
"""The key :meth:`FabricSource.header_time_ms` attests to read the peers' chaincode clocks (any key would do)."""
_CONCURRENCY = 8
"""Most requests one call keeps in flight (blocks, state reads)."""
_AGREE_ATTEMPTS = 6
"""Attestation rounds before peers that disagree on a value are reported (delays 50, 100, ... 800 ms)."""


class FabricSource:
    """:class:`~adapters.common.roles.SourceSide` of one Fabric park (module docstring)."""

    def __init__(self, gateway: FabricGateway, *, cache_blocks: int = 512) -> None:
        if cache_blocks < 1:
            raise ValueError("cache_blocks >= 1")
        self.gateway = gateway
        self.chain_id = gateway.chain_id
        self.chaincode = gateway.chaincode
        self._cache: collections.OrderedDict[int, PeerBlock] = collections.OrderedDict()
        self._cache_size = cache_blocks

    # -- heights and blocks ------------------------------------------------------------------------

    async def latest_height(self) -> int:
        """The newest block a read peer holds."""
        return await self.gateway.chain_height() - 1

    async def final_height(self) -> int:
        """The same as :meth:`latest_height`: an ordered block is final."""
        return await self.latest_height()

    async def block(self, number: int) -> PeerBlock:
        """Block ``number`` as a read peer committed it (cached); a block the peer does not hold yet raises a
        retryable :class:`~protocol.errors.TransportError`."""
        if number < 0:
            raise CodecError("a block number is >= 0", got=number)
        b = self._cache.get(number)
        if b is not None:
            self._cache.move_to_end(number)
            return b
        try:
            raw = await self.gateway.block_bytes(number)
        except TransportError:
            raise
        except ParkRelayError as exc:  # qscc answers 500 for a block past its height
            raise TransportError(f"block {number} is not on the peers yet: {exc}", retryable=True,
                                 side=self.chain_id) from exc
        b = decode_peer_block(raw, number)
        self._cache[number] = b
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return b

    async def blocks(self, numbers: Iterable[int]) -> list[PeerBlock]:
        """Blocks ``numbers``, fetched concurrently, in order."""
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(n: int) -> PeerBlock:
            async with sem:
                return await self.block(n)

        return list(await asyncio.gather(*(one(n) for n in numbers)))

    async def headers(self, start: int, end: int) -> list[Any]:
        """Blocks ``start..end`` as the Fabric light client's headers (:class:`chains.fabric.proto.Block`); stops
        early at the head."""
        start = max(start, 0)
        if start > end:
            return []
        end = min(end, await self.latest_height())
        out: list[Block] = []
        for b in await self.blocks(range(start, end + 1)):
            if out and b.header.header.previous_hash != out[-1].hash:
                raise CodecError(f"{self.chain_id}: block {b.number} does not extend block {b.number - 1} on the "
                                 "read peer", expected=out[-1].hash.hex(), got=b.header.header.previous_hash.hex())
            out.append(b.header)
        return out

    async def header_time_ms(self, height: int) -> int:
        """The policy organisations' smallest chaincode clock now (module docstring, "Time"), once ``height`` is a
        block the read peer holds."""
        if height > await self.latest_height():
            raise TransportError(f"block {height} is not on the peers yet", retryable=True, side=self.chain_id)
        statements, _ = await self.attest(CLOCK_KEY)
        return min(st.time_ms for st in statements)

    # -- attestations ----------------------------------------------------------------------------------

    async def attest(self, key: bytes, nonce_bytes: bytes | None = None) -> tuple[list[Statement], bytes]:
        """``(statements, proof bundle)`` of ``key`` from one peer of each policy organisation, agreeing on the
        value (a peer still one block behind is asked again a few times: :class:`~protocol.errors.TransportError`
        if they keep disagreeing)."""
        if not 0 < len(key) <= MAX_KEY_BYTES:
            raise CodecError(f"an attested key is 1..{MAX_KEY_BYTES} bytes", got=len(key))
        n = nonce() if nonce_bytes is None else nonce_bytes
        peers = self.gateway.endorsers()
        values: set[bytes | None] = set()
        for attempt in range(_AGREE_ATTEMPTS):
            answers = await self.gateway.signed_responses(ATTEST_FUNCTION, [key.hex(), n.hex()], peers)
            statements = [Statement.decode(bytes(a.response.payload)) for a in answers]
            values = {st.value for st in statements}
            if len(values) == 1:
                return statements, encode_bundle([a.SerializeToString() for a in answers])
            await asyncio.sleep(0.05 * 2**attempt)  # one peer has committed a block the other has not yet
        raise TransportError(f"the organisations' peers keep disagreeing on {key!r}",
                             retryable=True, side=self.chain_id, got=sorted(v.hex() if v else "absent" for v in values))

    async def prove(self, key: bytes, height: int) -> ProvenValue:
        """An attestation of ``key`` (module docstring, "Proofs") with the header hash of block ``height``."""
        header = (await self.block(height)).header
        statements, bundle = await self.attest(key)
        return ProvenValue(height, key, statements[0].value, bundle, header.hash)

    # -- events and state ----------------------------------------------------------------------------

    async def events(self, start: int, end: int, kind: str | None = None) -> list[dict[str, Any]]:
        """The bridge's events in VALID transactions of blocks ``start..end`` (optionally one ``type``)."""
        start = max(start, 0)
        if start > end:
            return []
        end = min(end, await self.latest_height())
        out: list[dict[str, Any]] = []
        for b in await self.blocks(range(start, end + 1)):
            out.extend(e for e in b.events(self.chaincode) if kind is None or e["type"] == kind)
        return out

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        """Hex values (None when absent) of protocol state paths, each read with ``attest`` on a read peer."""
        out: dict[str, str | None] = dict.fromkeys(keys)
        sem = asyncio.Semaphore(_CONCURRENCY)

        async def one(k: str) -> None:
            raw = k.encode()
            if not 0 < len(raw) <= MAX_KEY_BYTES:
                return  # not a path the bridge can hold
            async with sem:
                payload = await self.gateway.query(ATTEST_FUNCTION, [raw.hex(), ""])
            try:
                value = json.loads(payload)["value"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CodecError(f"{self.chain_id}: attest answered something that is not a statement: {exc}",
                                 got=payload[:120]) from exc
            out[k] = value if isinstance(value, str) else None

        await asyncio.gather(*(one(k) for k in keys))
        return out

    async def query_json(self, fcn: str, *args: str) -> Any:
        """A read-only bridge function's JSON answer (``balance``, ``receipt``, ``packet``, ``supply``,
        ``config``, ``fees``, ``lane``, ``next_sequence``, ``whoami``: chains/fabric/chaincode/contract.py)."""
        payload = await self.gateway.query(fcn, list(args))
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise CodecError(f"{self.chain_id}: {fcn} answered something that is not JSON",
                             got=payload[:120]) from exc

    async def balance(self, account: str, denom: str) -> int:
        """``account``'s balance of ``denom`` (Wh)."""
        return int((await self.query_json("balance", account, denom))["amount_wh"])

    async def whoami(self) -> dict[str, Any]:
        """This identity's account and whether it is registered."""
        result: dict[str, Any] = await self.query_json("whoami")
        return result

    async def close(self) -> None:
        """Close the gateway's connections."""
        await self.gateway.close()

