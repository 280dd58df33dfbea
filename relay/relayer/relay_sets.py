"""Relay validator-set rotations, carried to every park's bridge (SPEC.md §7.5, §7.7).

When the relay chain jails a validator at height ``H``, the header of ``H`` (signed by the old set) names
the smaller set as next, and blocks from ``H + 1`` on are signed by it. A park's bridge verifies relay
certificates against the one set it trusts, so before it can accept a certificate of height ``> H`` it must
be shown the rotation: ``bridge.update_relay_validators`` with the commit of ``H`` and the new set, which the
bridge checks against the set it trusts (``verify_validator_set_update``). Rotations are delivered in order,
each once its predecessor is final on the park; a bridge that already has one answers ``packet.replay``
(done). The relay chain lists its rotations (``getValidatorHistory``) and serves any set it used by hash
(``getValidators {hash}``), so a relayer that starts late, or a park that was down, catches up on every
rotation it missed.

Arguments by park kind: the Python parks and the Fabric chaincode take the bridge's ``{commit, new_set}``;
the Ethereum adapter takes ``{validators, commit}`` and adds the set the contract trusts itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from adapters.common.rpc import JsonRpcClient
from protocol.errors import Disposition, ProtocolError, TransportError

__all__ = ["RelaySetSync", "Rotation", "rotation_args"]

UPDATE_OP = "bridge.update_relay_validators"
TRACK_TIMEOUT_S = 60.0
RACE_RETRIES = 2
"""How many times a rotation refused with a ``retry_soon`` code (a race with another relayer's submission, such as
Fabric's MVCC conflict) is submitted again at once, before the sync gives up until its next step."""
TRUST_CHECK_S = 60.0
"""How often (seconds) a relayer reads each bridge's relay-set trust to refresh it before it expires."""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One change of the relay validator set."""

    from_height: int
    """First relay height the new set signs; the commit of ``from_height - 1`` certifies it."""
    commit: dict[str, Any]
    """RelayCommit JSON of height ``from_height - 1`` (old set's signatures, new set's hash as next)."""
    validators: dict[str, Any]
    """The new ValidatorSet JSON."""


def rotation_args(kind: str, rot: Rotation) -> dict[str, Any]:
    """``bridge.update_relay_validators`` arguments for a park of ``kind``."""
    if kind == "ethereum":
        return {"validators": rot.validators, "commit": rot.commit}
    return {"commit": rot.commit, "new_set": rot.validators}


class RelaySetSync:
    """Knows the relay chain's rotations and which of them each park's bridge has (in memory: after a restart
    the bridges' ``packet.replay`` answers tell it again)."""

    def __init__(self, relay: JsonRpcClient, log: logging.LoggerAdapter[logging.Logger], *,
                 history_ttl_s: float = 1.0) -> None:
        self.relay = relay
        self.history_ttl_s = history_ttl_s
        """The relay's history is read at most this often (every certificate submission asks; a rotation found a
        moment late only costs a ``certificate.validator_set`` refusal, retried within a second)."""
        self._history: tuple[float, list[Any]] | None = None
        self.log = log
        self.delivered: dict[str, int] = {}
        """park chain id -> ``from_height`` of the last rotation its bridge has (absent: genesis)."""
        self._rotations: dict[int, Rotation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.submitted = 0
        self.refreshed = 0
        self._trust_checked: dict[str, float] = {}

    async def rotations(self) -> list[Rotation]:
        """Every rotation after genesis, oldest first."""
        now = time.monotonic()
        if self._history is not None and now - self._history[0] < self.history_ttl_s:
            history = self._history[1]
        else:
            history = await self.relay.call("getValidatorHistory", {})
            self._history = (now, history)
        out = []
        for entry in history:
            h = int(entry["from_height"])
            if h <= 1:
                continue
            rot = self._rotations.get(h)
            if rot is None or rot.validators.get("hash") != entry["hash"]:
                commit = await self.relay.call("getCommit", {"height": h - 1})
                vs = await self.relay.call("getValidators", {"hash": entry["hash"]})
                rot = self._rotations[h] = Rotation(h, commit, vs)
            out.append(rot)
        return out

    async def sync(self, chain_id: str, kind: str, target: Any) -> bool:
        """Deliver to one park every rotation it lacks, waiting for each to be final there. True when the park's
        bridge trusts the relay's newest set (certificates of the head verify there)."""
        lock = self._locks.setdefault(chain_id, asyncio.Lock())
        async with lock:
            rotations = await self.rotations()
            for rot in rotations:
                if rot.from_height <= self.delivered.get(chain_id, 1):
                    continue
                for attempt in range(RACE_RETRIES + 1):
                    try:
                        tx = await target.submit(UPDATE_OP, rotation_args(kind, rot))
                        result = await target.track(tx, TRACK_TIMEOUT_S)
                        err = result.get("error") if not result.get("ok") else None
                        code = err.get("code") if isinstance(err, dict) else None
                    except ProtocolError as exc:
                        code = exc.code
                        if exc.disposition is Disposition.RETRY_SOON and attempt < RACE_RETRIES:
                            # most often another relayer's rotation committed first (Fabric: an MVCC conflict
                            # on the set both wrote): proposed again, the bridge answers packet.replay
                            self.log.info("relay set rotation of height %d on %s raced: %s; submitting again",
                                          rot.from_height, chain_id, exc.code)
                            continue
                        if exc.disposition is not Disposition.DONE:
                            self.log.warning("relay set rotation of height %d refused by %s: %s", rot.from_height,
                                             chain_id, exc)
                            return False
                    break
                if code is not None and code != "packet.replay":
                    self.log.warning("relay set rotation of height %d failed on %s: %s", rot.from_height, chain_id,
                                     code)
                    return False
                if code is None:
                    self.submitted += 1
                    self.log.info("relay validator set of height %d (%d validators) now trusted by %s",
                                  rot.from_height, len(rot.validators.get("validators", [])), chain_id)
                self.delivered[chain_id] = rot.from_height
            try:
                await self._refresh(chain_id, kind, target)
            except (ProtocolError, TransportError) as exc:  # packets wait for nothing here: try again later
                self.log.warning("relay set trust of %s not refreshed: %s", chain_id, exc)
            return True

    async def _refresh(self, chain_id: str, kind: str, target: Any) -> None:
        """Keep ``chain_id``'s bridge trusting the relay set (SPEC §7.8 rule 3): once less than half its
        trusting period is left, submit the set it trusts again with the relay's newest commit (an unchanged set
        names itself as next), which moves its trusted time to that header's. Checked at most every
        :data:`TRUST_CHECK_S` per park; a park whose adapter has no ``relay_trust`` query is left alone."""
        now = time.monotonic()
        if now < self._trust_checked.get(chain_id, 0.0) + TRUST_CHECK_S or not hasattr(target, "relay_trust"):
            return
        self._trust_checked[chain_id] = now
        trust = await target.relay_trust()
        trusted, period = trust.get("trusted_time_ms"), int(trust["trusting_period_ms"])
        if trusted is None:  # a Fabric bridge without a genesis time: its first certificate starts the clock
            return
        commit = await self.relay.call("getCommit", {})
        header_time = int(commit["header"]["time_ms"])
        if int(trusted) + period - header_time >= period // 2:
            return
        if int(commit["header"]["height"]) <= int(trust["update_height"]):
            return
        validators = await self.relay.call("getValidators", {"hash": trust["set_hash"]})
        rot = Rotation(int(commit["header"]["height"]) + 1, commit, validators)
        tx = await target.submit(UPDATE_OP, rotation_args(kind, rot))
        result = await target.track(tx, TRACK_TIMEOUT_S)
        if result.get("ok"):
            self.refreshed += 1
            self.log.info("relay set trust of %s refreshed to relay height %d (%d ms of %d were left)", chain_id,
                          rot.from_height - 1, int(trusted) + period - header_time, period)
        else:
            self.log.warning("relay set trust refresh on %s failed: %s", chain_id, result.get("error"))
