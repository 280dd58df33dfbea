"""Source and target sides for the Python park chains (DPoS and PoC), over their JSON-RPC.

Both chains serve the same RPC (``chains.common.node``); they differ in their header type, which the
chain's adapter package passes in as ``decode_header``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from adapters.common.roles import ProvenValue
from adapters.common.rpc import JsonRpcClient
from chains.common.bridge import relay_trust_of
from chains.common.tx import Tx
from protocol.crypto import Ed25519Signer
from protocol.errors import CodecError, NonceError, TransportError


class ParkSource:
    """:class:`~adapters.common.roles.SourceSide` of a Python park chain."""

    def __init__(self, client: JsonRpcClient, decode_header: Callable[[bytes], Any]) -> None:
        self.client = client
        self.decode_header = decode_header

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("status")
        return result

    async def latest_height(self) -> int:
        return int((await self.status())["height"])

    async def final_height(self) -> int:
        return int((await self.status())["final_height"])

    async def headers(self, start: int, end: int) -> list[Any]:
        out: list[Any] = []
        while start <= end:
            batch = await self.client.call("getHeaders", {"from": start, "to": end})
            if not batch:
                break
            for h in batch:
                out.append(self.decode_header(bytes.fromhex(h["header"])))
            start = out[-1].height + 1
        return out

    async def prove(self, key: bytes, height: int) -> ProvenValue:
        try:
            path = key.decode()
        except UnicodeDecodeError as exc:
            raise CodecError("state paths are UTF-8") from exc
        r = await self.client.call("query", {"key": path, "height": height, "prove": True})
        value = bytes.fromhex(r["value"]) if r["value"] is not None else None
        return ProvenValue(int(r["height"]), key, value, bytes.fromhex(r["proof"]), bytes.fromhex(r["state_root"]))

    async def prove_many(self, keys: list[bytes], height: int) -> list[ProvenValue]:
        """:meth:`prove` of each of ``keys`` (at most 200) at one height, in one call (the node's ``proveMany``)."""
        try:
            paths = [k.decode() for k in keys]
        except UnicodeDecodeError as exc:
            raise CodecError("state paths are UTF-8") from exc
        r = await self.client.call("proveMany", {"keys": paths, "height": height})
        root, h = bytes.fromhex(r["state_root"]), int(r["height"])
        out = []
        for key, path in zip(keys, paths, strict=True):
            raw = r["values"][path]
            out.append(ProvenValue(h, key, bytes.fromhex(raw) if raw is not None else None,
                                   bytes.fromhex(r["proofs"][path]), root))
        return out

    async def events(self, start: int, end: int, kind: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"from": start, "to": end}
        if kind:
            params["type"] = kind
        result: list[dict[str, Any]] = await self.client.call("getEvents", params)
        return result

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        """The stored values (hex, or None when absent) of state paths ``keys`` at the head."""
        out: dict[str, str | None] = {}
        for i in range(0, len(keys), 1000):
            r = await self.client.call("queryMany", {"keys": keys[i:i + 1000]})
            out.update(r["values"])
        return out

    async def header_time_ms(self, height: int) -> int:
        """Block time (ms) of the header at ``height``."""
        return int((await self.client.call("getHeader", {"height": height}))["timestamp_ms"])

    async def balance(self, account: str, denom: str, height: int | None = None) -> int:
        params: dict[str, Any] = {"account": account, "denom": denom}
        if height is not None:
            params["height"] = height
        return int((await self.client.call("getBalance", params))["amount_wh"])


NONCES_KEPT = 4096
"""How many submissions' nonces a :class:`ParkTarget` keeps for callers that have not read them."""


class ParkTarget:
    """:class:`~adapters.common.roles.TargetSide` of a Python park chain, signing as one account.

    Submissions from one target are serialised and each takes the chain's next nonce (committed plus
    pending in the node's mempool), so concurrent calls never collide.
    """

    def __init__(self, client: JsonRpcClient, chain_id: str, account: str, signer: Ed25519Signer) -> None:
        self.client = client
        self.chain_id = chain_id
        self.account = account
        self.signer = signer
        self._lock = asyncio.Lock()
        self.nonces: dict[str, int] = {}
        """The nonce each recent submission took, by its hash (the last :data:`NONCES_KEPT`): a caller that tracks its
        transactions pops it, to tell one the node dropped from its mempool (a nonce gap) from one still pending."""

    async def relay_trust(self) -> dict[str, Any]:
        """The bridge's view of the relay set over time (protocol SPEC §7.8), read from state:
        ``{set_hash, update_height, trusted_time_ms, trusting_period_ms, expires_at_ms, validators}``."""
        keys = ["bridge/relay_validators", "bridge/config"]
        r = await self.client.call("queryMany", {"keys": keys})
        raw = [r["values"].get(k) for k in keys]
        if raw[0] is None or raw[1] is None:
            raise CodecError(f"{self.chain_id}: no bridge in this chain's state")
        trust = relay_trust_of(json.loads(bytes.fromhex(raw[0])), json.loads(bytes.fromhex(raw[1])))
        return {"set_hash": trust.validators.hash.hex(), **trust.to_json()}

    async def _next_nonce(self) -> int:
        # read from the chain every time: a node drops a transaction that can no longer execute (and the
        # ones queued behind it), so a locally kept counter would run ahead of the chain and stall
        acct = await self.client.call("getAccount", {"name": self.account})
        return int(acct["nonce"]) + int(acct.get("pending", 0))

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        async with self._lock:
            for attempt in range(2):
                nonce = await self._next_nonce()
                tx = Tx.signed(self.signer, self.chain_id, self.account, nonce, op, args)
                try:
                    r = await self.client.call("submitTx", {"tx": tx.to_json()})
                    break
                except NonceError:
                    # the node dropped a queued transaction between reading the nonce and submitting:
                    # read it again, once
                    if attempt:
                        raise
            tx_hash = str(r["hash"])
            self.nonces[tx_hash] = nonce
            while len(self.nonces) > NONCES_KEPT:
                del self.nonces[next(iter(self.nonces))]
        return tx_hash

    async def track(self, tx_hash: str, timeout_s: float = 30.0, poll_s: float = 0.25) -> dict[str, Any]:
        """Wait for the transaction's result in a final block."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            res = await self.client.call("getTxResult", {"hash": tx_hash})
            if res is not None:
                st = await self.client.call("status")
                if int(res["height"]) <= int(st["final_height"]):
                    result: dict[str, Any] = res
                    return result
            if loop.time() > deadline:
                raise TransportError(f"transaction {tx_hash[:16]} not final within {timeout_s}s", retryable=True,
                                     side=self.chain_id)
            await asyncio.sleep(poll_s)
