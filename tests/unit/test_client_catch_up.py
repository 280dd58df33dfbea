"""A relay client that fell far behind its park catches up (found by the 30-minute soak: the relay's Ethereum client
stayed at height 394 while the park reached 2,200, every packet to and from the park stuck).

Relayer side: when the client's headers end more than ``FORK_SEARCH`` below the park's head, the relayer finds where
they end (bisection over the held prefix) and feeds from there — not from ``head - FORK_SEARCH``, which the client
refuses as too far ahead. Attestor side: while the client's final height is far behind, validators attest a height
a fixed step above it (the same for all of them, so a quorum forms), which the fed headers reach."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from protocol.errors import NonceError
from relay.chain.attestor import CATCH_UP_STEP, RETRY_CATCH_UP_S, AttestedChain, Attestor, attestation_target
from relay.relayer.client_updates import FORK_SEARCH, ClientUpdates


@dataclass(frozen=True)
class _Header:
    height: int
    branch: str = "main"

    def encode(self) -> bytes:
        return f"{self.branch}/{self.height}".encode()


class _Source:
    def __init__(self, head: int, fork_at: int | None = None) -> None:
        self.head, self.fork_at = head, fork_at
        self.reads = 0

    async def latest_height(self) -> int:
        return self.head

    async def headers(self, start: int, end: int) -> list[_Header]:
        self.reads += 1
        return [_Header(h, "new" if self.fork_at is not None and h > self.fork_at else "main")
                for h in range(start, min(end, self.head) + 1)]


class _Park:
    chain_id = "eth-park"

    def __init__(self, source: _Source) -> None:
        self.source = source


class _Updates(ClientUpdates):
    """The relayer's client-update logic over a client that holds the main branch up to ``held_to``."""

    def __init__(self, held_to: int) -> None:
        self.held_to = held_to
        self.asked = 0

    async def _holds(self, chain_id: str, headers: list[Any]) -> list[bool]:
        self.asked += 1
        return [h.branch == "main" and h.height <= self.held_to for h in headers]


def _shared(updates: _Updates, park: _Park, final: int, top: int) -> int | None:
    return asyncio.run(updates._shared_height(park, final, top))  # type: ignore[arg-type]


def test_a_client_far_behind_is_fed_from_where_its_headers_end() -> None:
    park = _Park(_Source(head=2214))
    updates = _Updates(held_to=650)  # final 394, pending headers up to 650
    assert _shared(updates, park, 394, 2214) == 650  # not 2214 - FORK_SEARCH, which the client refuses
    assert updates.asked <= 3 + 12  # tip, the search window, then a bisection (log2 of the gap)


def test_bisection_edges_and_the_usual_cases() -> None:
    assert _shared(_Updates(held_to=394), _Park(_Source(head=2214)), 394, 2214) == 394  # only its final header
    assert _shared(_Updates(held_to=2213), _Park(_Source(head=2214)), 394, 2214) == 2213  # within the window
    assert _shared(_Updates(held_to=2214), _Park(_Source(head=2214)), 394, 2214) == 2214  # no gap
    # a fork deeper than the search window but above finality: fed from the fork point
    park = _Park(_Source(head=2214, fork_at=900))
    assert _shared(_Updates(held_to=1500), park, 394, 2214) == 900
    assert 2214 - FORK_SEARCH > 900


def test_a_fork_below_finality_is_still_reported() -> None:
    park = _Park(_Source(head=2214, fork_at=300))
    assert _shared(_Updates(held_to=1000), park, 394, 2214) is None  # the park no longer has the final header


def test_attestors_step_up_from_the_final_height_together() -> None:
    # far behind: every validator attests final + step, whatever its own head reads, so a quorum forms there
    assert attestation_target(head=2214, depth=2, final=394) == 394 + CATCH_UP_STEP
    assert attestation_target(head=2300, depth=2, final=394) == 394 + CATCH_UP_STEP
    # close behind: the block at depth, as always
    assert attestation_target(head=420, depth=2, final=394) == 418
    assert attestation_target(head=1, depth=2, final=0) == -1
    assert CATCH_UP_STEP < 256  # within the client's pending window above its anchor


class _Relay:
    def __init__(self, final: int) -> None:
        self.final = final
        self.sent: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getClientStatus":
            return {"status": "active", "final_height": self.final, "latest_height": self.final}
        if method == "getAccount":
            return {"nonce": len(self.sent), "pending": 0}
        assert method == "submitTx"
        self.sent.append(params["tx"]["args"] if isinstance(params["tx"], dict) else params)
        return {"hash": "00"}


class _Eth:
    def __init__(self, head: int) -> None:
        self.head = head

    async def call(self, method: str, params: list[Any]) -> Any:
        if method == "eth_blockNumber":
            return hex(self.head)
        assert method == "eth_getBlockByNumber"
        return {"number": params[0], "hash": "0x" + int(params[0], 16).to_bytes(32, "big").hex()}


def test_the_attestor_attests_the_catch_up_height_once_per_final_height() -> None:
    from protocol.crypto import Ed25519Signer

    attestor = Attestor("op-a", Ed25519Signer(os.urandom(32)), "relay", "http://127.0.0.1:1", [])
    relay = _Relay(final=394)
    attestor.relay = relay  # type: ignore[assignment]
    clock = [0.0]
    attestor._now = lambda: clock[0]
    chain = AttestedChain("eth-park", "http://127.0.0.1:2", 2)
    eth = _Eth(head=2214)
    assert asyncio.run(attestor.tick(eth, chain)) is True  # type: ignore[arg-type]
    assert asyncio.run(attestor.tick(eth, chain)) is False  # type: ignore[arg-type]  # not twice
    clock[0] += RETRY_CATCH_UP_S  # ... unless the final height stays: the vote may have been lost
    assert asyncio.run(attestor.tick(eth, chain)) is True  # type: ignore[arg-type]
    relay.final = 394 + CATCH_UP_STEP  # the quorum finalised it once the relayers fed the headers
    assert asyncio.run(attestor.tick(eth, chain)) is True  # type: ignore[arg-type]
    heights = [a["height"] for a in relay.sent]
    assert heights == [394 + CATCH_UP_STEP, 394 + CATCH_UP_STEP, 394 + 2 * CATCH_UP_STEP]
    relay.final, eth.head = 2200, 2214  # caught up: the block at depth again
    assert asyncio.run(attestor.tick(eth, chain)) is True  # type: ignore[arg-type]
    assert relay.sent[-1]["height"] == 2212


class _PendingUpdates(_Updates):
    """A client like the relay's Ethereum one: ``latest_height`` in its status is its final height; the headers it
    holds above (pending, waiting for attestations) show only through ``getClientHolds``."""

    def __init__(self, final: int, held_to: int) -> None:
        super().__init__(held_to)
        self.final = final
        self.submitted: list[list[int]] = []
        self._update_locks: dict[str, asyncio.Lock] = {}
        self._last_update: dict[str, float] = {}
        self._fed: dict[str, int] = {}
        self._last_error_code = None
        self._clock = lambda: 0.0
        self.stats = type("S", (), {"branch_switches": 0})()

    async def _client_status(self, chain_id: str) -> dict[str, Any]:
        return {"status": "active", "final_height": self.final, "latest_height": self.final}

    def _waiting_key(self, key: str) -> bool:
        return False

    async def _submit(self, chain: Any, op: str, args: dict[str, Any], action: str, items: Any) -> None:
        assert op == "client.update"
        self.submitted.append([int(h.split(b"/")[1]) for h in (bytes.fromhex(x) for x in args["headers"])])


def test_headers_are_fed_above_the_pending_ones_not_again_from_the_final_height() -> None:
    updates = _PendingUpdates(final=396, held_to=460)
    park = _Park(_Source(head=1415))
    updates.relay = None  # type: ignore[assignment]
    asyncio.run(updates._update_client(park))  # type: ignore[arg-type]
    (batch,) = updates.submitted
    assert batch[0] == 461 and batch == list(range(461, 461 + len(batch)))  # not 397..460 again (all held)
    caught_up = _PendingUpdates(final=396, held_to=1415)
    asyncio.run(caught_up._update_client(park))  # type: ignore[arg-type]
    assert caught_up.submitted == []  # it holds up to the park's head: nothing to send


class _RacedRelay(_Relay):
    """A relay node where the operator's CLI takes the attestor's nonce between its read and its submission once."""

    def __init__(self, final: int) -> None:
        super().__init__(final)
        self.nonces: list[int] = []
        self.raced = False

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getAccount":
            return {"nonce": 7, "pending": len(self.nonces)}
        if method == "submitTx":
            nonce = params["tx"]["nonce"]
            if not self.raced:
                self.raced = True
                self.nonces.append(nonce)  # the CLI's transfer, admitted first
                raise NonceError("nonce taken by a pending transaction", got=nonce)
            self.nonces.append(nonce)
        return await super().call(method, params)


def test_the_attestor_reads_its_nonce_again_when_another_client_of_its_account_took_it() -> None:
    from protocol.crypto import Ed25519Signer

    attestor = Attestor("op-a", Ed25519Signer(os.urandom(32)), "relay", "http://127.0.0.1:1", [])
    relay = _RacedRelay(final=2200)
    attestor.relay = relay  # type: ignore[assignment]
    assert asyncio.run(attestor.tick(_Eth(head=2214), AttestedChain("eth-park", "x", 2))) is True  # type: ignore[arg-type]
    assert relay.nonces == [7, 8] and [a["height"] for a in relay.sent] == [2212]
