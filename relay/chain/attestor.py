"""The attestor: a relay validator's witness of the park chains whose headers prove no finality (Ethereum).

Each relay validator runs one next to its node (``parkrelay node relay`` starts it when the deployment
has such chains). Once per ``interval_s`` it asks *its own* endpoint of each chain for the head, takes the
block ``confirmation_depth`` below it and, when that height is new to it, submits ``client.attest``
``(height, block_hash, head_height)`` to the relay chain signed by the validator's relay account
(:mod:`relay.chain.state_machine.attest`). A hash attested by validators holding more than 2/3 of the voting
power makes that block final in the relay's light client once a relayer feeds its header.

An endpoint that is down, or answers garbage, is logged and retried on the next tick; it never stops the
node. Attestations need no ordering: a validator that missed heights attests the newest one, and the
light client finalises its ancestors through the header hash chain.

**Catching up.** The client accepts attestations and pending headers only within a window above its final height
(``max_attestation_ahead``, ``max_pending_ahead``: SPEC §8.4). When the client fell further behind than that — the
park cut off from the relay for a long while, the relay chain stalled — the block at depth is out of reach, and
attesting it only earns refusals while the client never moves (seen in the 30-minute soak: final stuck 1,800
blocks behind). Then every validator attests the block :data:`CATCH_UP_STEP` above the client's final height
instead (:func:`attestation_target`): all of them the same height, so a quorum forms; the relayers' headers
reach it; it becomes final, and the next step starts from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.common.park import ParkTarget
from adapters.common.rpc import JsonRpcClient
from adapters.ethereum.rpc import EthRpc, hex_int
from protocol.crypto import Ed25519Signer
from protocol.errors import AuthorizationError, ProtocolError, ReplayError, TransportError

__all__ = ["CATCH_UP_STEP", "RETRY_CATCH_UP_S", "AttestedChain", "Attestor", "attestation_target"]

log = logging.getLogger("parkrelay.attestor")

CATCH_UP_STEP = 128
"""How far above the client's final height validators attest while the client is further behind than this: half
the client's default pending window (``HOSTED_MAX_PENDING_AHEAD``, 256), so the headers up to it are accepted."""


RETRY_CATCH_UP_S = 20.0
"""How long a validator waits for its catch-up attestation to take effect before it sends it again."""


def attestation_target(head: int, depth: int, final: int) -> int:
    """The height to attest: the block ``depth`` below ``head``, or, while the client's ``final`` height is more
    than :data:`CATCH_UP_STEP` below it, ``final + CATCH_UP_STEP`` (module docstring)."""
    at_depth = head - depth
    return final + CATCH_UP_STEP if at_depth - final > CATCH_UP_STEP else at_depth


@dataclass(frozen=True, slots=True)
class AttestedChain:
    """A chain this validator attests, and the endpoint it trusts for it."""

    chain_id: str
    """Park chain id (the relay's light client of it takes attestations)."""
    eth_url: str
    """The validator's own Ethereum JSON-RPC endpoint of the chain."""
    confirmation_depth: int
    """Blocks on top of an attested block on this endpoint."""


class Attestor:
    """Attests the chains' blocks at depth to the relay chain as validator ``name``."""

    def __init__(self, name: str, signer: Ed25519Signer, relay_chain_id: str, relay_url: str,
                 chains: list[AttestedChain], interval_s: float = 1.0) -> None:
        self.name = name
        self.signer = signer
        self.relay_chain_id = relay_chain_id
        self.relay = JsonRpcClient(relay_url, side=relay_chain_id)
        self.chains = chains
        self.interval_s = interval_s
        self.last: dict[str, int] = {}
        """Per chain: the highest height attested at depth (each is attested once)."""
        self.last_target: dict[str, tuple[int, int, float]] = {}
        """Per chain: (the client's final height, the height attested then, when): a catch-up height is attested once
        per final height, and again every :data:`RETRY_CATCH_UP_S` while the final height stays (a vote lost with a
        restarted node's mempool is sent again; one already counted is refused as a replay, harmlessly)."""
        self.submitted = 0
        self.retired = False
        """Set once the relay chain refuses this validator's attestations as a non-validator's (jailed)."""
        self._stop = asyncio.Event()
        self._now: Callable[[], float] = time.monotonic

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        log.info("attestor %s: attesting %s", self.name,
                 ", ".join(f"{c.chain_id} at depth {c.confirmation_depth} via {c.eth_url}" for c in self.chains))
        endpoints = {c.chain_id: EthRpc(c.eth_url, side=c.chain_id, timeout_s=5.0) for c in self.chains}
        try:
            while not self._stop.is_set() and not self.retired:
                for chain in self.chains:
                    try:
                        await self.tick(endpoints[chain.chain_id], chain)
                    except (TransportError, ProtocolError, ValueError, KeyError) as exc:
                        log.warning("attestor %s: %s unreachable or malformed (%s); retrying", self.name,
                                    chain.chain_id, exc)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
                except TimeoutError:
                    pass
        finally:
            for endpoint in endpoints.values():
                await endpoint.close()
            await self.relay.close()

    async def tick(self, eth: EthRpc, chain: AttestedChain) -> bool:
        """Attest the block at depth on ``chain`` (or the catch-up height: :func:`attestation_target`) if this
        validator has not attested that height at the client's current final height; True if it submitted one."""
        head = hex_int(await eth.call("eth_blockNumber", []))
        status = await self.relay.call("getClientStatus", {"chain_id": chain.chain_id})
        final = int(status["final_height"])
        at_depth = head - chain.confirmation_depth
        height = attestation_target(head, chain.confirmation_depth, final)
        if height < 1 or height <= final:
            return False
        if height == at_depth and height <= self.last.get(chain.chain_id, 0):
            return False  # attested at depth already (or a higher one)
        last = self.last_target.get(chain.chain_id)
        if last is not None and last[:2] == (final, height) and self._now() - last[2] < RETRY_CATCH_UP_S:
            return False  # this catch-up height, at this final height, already (again after RETRY_CATCH_UP_S)
        block = await eth.call("eth_getBlockByNumber", [hex(height), False])
        if not isinstance(block, dict) or hex_int(block["number"]) != height:
            raise ValueError(f"endpoint returned no block {height}")
        block_hash = bytes.fromhex(str(block["hash"]).removeprefix("0x"))
        args = {"chain_id": chain.chain_id, "height": height, "block_hash": block_hash.hex(), "head_height": head}
        try:
            # the next nonce read from the chain, read again once if the operator's other client of this account
            # (its CLI) took it first (tx.nonce)
            await ParkTarget(self.relay, self.relay_chain_id, self.name, self.signer).submit("client.attest", args)
        except ReplayError:
            pass  # attested before a restart: nothing to add
        except AuthorizationError as exc:  # no longer a relay validator (jailed, SPEC §7.7): nothing more to attest
            log.warning("attestor %s: not a relay validator (any more): attesting stops (%s)", self.name, exc)
            self.retired = True
            return False
        except ProtocolError as exc:
            log.error("attestor %s: client.attest of %s height %d refused: %s", self.name, chain.chain_id, height, exc)
            self._attested(chain.chain_id, final, height)  # not retried for this height: a newer one comes next tick
            return False
        self._attested(chain.chain_id, final, height)
        self.submitted += 1
        log.debug("attestor %s: attested %s height %d %s", self.name, chain.chain_id, height, block_hash.hex()[:16])
        return True

    def _attested(self, chain_id: str, final: int, height: int) -> None:
        self.last_target[chain_id] = (final, height, self._now())
        self.last[chain_id] = max(self.last.get(chain_id, 0), height)

