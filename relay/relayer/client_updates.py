"""Keeping the relay's light clients of the parks fresh and on the parks' branches (SPEC.md §10.4, §10.5).

A mixin of :class:`relay.relayer.relayer.Relayer`: the per-park heartbeat, fork-aware client updates (feed the park's
current branch from the last header the client shares with it; a fork below the client's final header is
submitted as misbehaviour evidence), PoC farmer registration and the delivery of recorded DPoS evidence to the
park. It uses the relayer's submission machinery (``_submit``, turn-taking, in-flight keys) and state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.common.rpc import JsonRpcClient
from chains.common.tx import account_path
from protocol.errors import CodecError, Disposition, ProtocolError
from protocol.types import ClientId
from relay.chain.state_machine.clients import MAX_HEADERS as MAX_HEADERS_PER_UPDATE
from relay.chain.state_machine.clients import ClientType
from relay.chain.state_machine.keys import client_state_key
from relay.chain.state_machine.park_clients import default_client_types
from relay.relayer.task import Next, Outcome

if TYPE_CHECKING:
    from adapters.common.roles import ProvenValue
    from relay.relayer.relayer import ChainLink, RelayerStats

FORK_SEARCH = 256
"""How far below the client's newest header the relayer looks for the last header it shares with the park."""

PREDICT_CLOCK_MARGIN_MS = 500
"""How far behind its own clock the relayer dates the relay block that will apply its update, when it predicts the
client's final height after that update: a client whose finality waits on relay time (PoC) is then predicted no
further than the block will allow, even with the validators' clocks that much behind the relayer's (the block and
the admission of its transactions come after the prediction, so on one host any margin holds). A validator whose
clock is further behind refuses the proof for now (``header.not_final``) and the relayer offers it again; every
ms of margin delays a PoC proof by as much."""

FEED_TAKEOVER_S = 1.0
"""How long the n-th relayer in a header's turn order waits, times n - 1, before it feeds the relay's client a park
header the first has not (:meth:`ClientUpdates._feeds_now`)."""

CLIENT_TYPES: dict[str, ClientType] = {t.name: t for t in default_client_types()}
"""The relay chain's own light-client types, for predicting what an update will make final."""


class ClientUpdates:
    """The relayer's light-client work (module docstring). State and submission come from the relayer."""

    relay: ChainLink
    heartbeat_s: float | None
    stats: RelayerStats
    log: logging.LoggerAdapter[logging.Logger]
    _clock: Callable[[], float]
    _wall_ms: Callable[[], int]
    _reported: set[str]
    _last_disposition: Disposition
    _last_error_code: str | None
    _last_update: dict[str, float]
    _heads: dict[str, int]
    _fed: dict[str, int]
    name: str
    peers: tuple[str, ...] = ()
    pipeline_proofs: bool = True
    """Predict the final height an update makes, for proofs behind it (:meth:`_update_client`)."""
    _update_locks: dict[str, asyncio.Lock]

    def _relay_rpc(self) -> JsonRpcClient:
        raise NotImplementedError

    def _waiting_key(self, key: str) -> bool:
        raise NotImplementedError

    def _done_waiting(self, key: str) -> None:
        raise NotImplementedError

    def _carries(self, chain_id: str) -> bool:
        raise NotImplementedError

    def turn_order(self, key: str, action: str) -> list[str]:
        raise NotImplementedError

    def _feeds_now(self, chain_id: str, top: int) -> bool:
        """Whether this relayer feeds the relay's client of ``chain_id`` the park's headers up to ``top`` now. The
        relayers take turns per header (rendezvous order of ``update/{chain}/{top}``): the first feeds at once, the
        n-th once the header has been due here for (n - 1) x :data:`FEED_TAKEOVER_S`. Every relayer following a
        park's heads sent the same update at once otherwise: the relay keeps all but the first in its block as
        redundant no-ops (SPEC §1 Trust), each a signature check and block space for nothing. (Before those no-ops,
        the relay left them out, and with each one every later transaction of its sender, behind the nonce gap.)"""
        if len(self.peers) < 2:
            return True
        rank = self.turn_order(f"update/{chain_id}/{top}", "update").index(self.name)
        if rank == 0:
            return True
        due: dict[str, tuple[int, float]] = self.__dict__.setdefault("_feed_due", {})
        seen = due.get(chain_id)
        if seen is None or seen[0] != top:
            seen = due[chain_id] = (top, self._clock())
        return self._clock() - seen[1] >= rank * FEED_TAKEOVER_S

    def _turn(self, key: str, action: str, chain: str | None) -> bool:
        raise NotImplementedError

    async def _submit(self, chain: ChainLink, op: str, args: dict[str, Any], action: str,
                      items: Any) -> None:
        raise NotImplementedError

    async def _prove(self, park: ChainLink, key: bytes, height: int) -> ProvenValue | None:
        raise NotImplementedError

    def _heartbeat_step_of(self, park: ChainLink) -> Callable[[], Any]:
        """The park's client task: feed each new head of the park to the relay's client as soon as the park pushes
        it while this relayer carries a packet from or to the park, and at least every ``heartbeat_s`` otherwise.

        Following heads is what keeps the relay's view of a park fresh under load (issue 16): a path step feeds the
        client too, but only between reading its packets' records, and a PoC header's finality window runs from when
        the relay's client first held it, so every ms a header waits for a step is added to phase 4."""
        async def step() -> Outcome:
            assert self.heartbeat_s is not None
            since = self._clock() - self._last_update.get(park.chain_id, float("-inf"))
            behind = self._heads.get(park.chain_id, -1) > self._fed.get(park.chain_id, -1)
            if since >= self.heartbeat_s or (behind and self._carries(park.chain_id)):
                st = await self._update_client(park)
                await self._report_evidence(park, st.get("evidence") or [])
                await self._keepalive(park, st)
            return Outcome(Next.CONTINUE, delay_s=self.heartbeat_s / 2)
        return step

    async def _keepalive(self, park: ChainLink, st: dict[str, Any]) -> None:
        """On a chain that cuts blocks only for transactions (Fabric), make one (``bridge.ping``, a no-op
        transaction) once the relay's client of it has been shown no new block for ``keepalive_after_s``: the client
        expires after its trusting period without one (SPEC §8.7), and a quiet channel must not let it. ``st`` is the
        client's status before this heartbeat's update; a block the park has but the client lacks is fed first (the
        update), so a ping is sent only when the park itself is quiet. The relayers take turns (a ping is a
        transaction in a block)."""
        if park.keepalive_after_s is None or st.get("status") != "active":
            return
        quiet_ms = self._wall_ms() - int(st.get("final_timestamp_ms") or 0)
        if quiet_ms < park.keepalive_after_s * 1000:
            return
        if await park.source.latest_height() > int(st["latest_height"]):
            return  # the park has blocks the client has not been shown: the update feeds them
        key = f"ping/{park.chain_id}/{st.get('final_height')}"
        if self._waiting_key(key) or not self._turn(key, "ping", park.chain_id):
            return
        self.log.info("%s: the relay's client has seen no block for %.0f s: sending a keepalive transaction",
                      park.chain_id, quiet_ms / 1000)
        await self._submit(park, "bridge.ping", {}, key, None)

    async def _report_evidence(self, park: ChainLink, evidence: list[Any]) -> None:
        """Deliver the lesser evidence the relay's client recorded (a DPoS witness that signed two headers at one
        height, SPEC §8.5) to the park, whose own rules punish the witness (``witness.report_double_production``).
        Each record once: a park that already punished it answers ``packet.replay``."""
        for record in evidence:
            if not isinstance(record, dict) or not record.get("header_a") or not record.get("header_b"):
                continue
            key = f"evidence/{park.chain_id}/" + hashlib.sha256(
                f"{record['header_a']}|{record['header_b']}".encode()).hexdigest()[:32]
            if key in self._reported or self._waiting_key(key) or not self._turn(key, "report", park.chain_id):
                continue
            await self._submit(park, "witness.report_double_production",
                               {"header_a": record["header_a"], "header_b": record["header_b"]}, key, None)
            if self._last_disposition in (Disposition.DONE, Disposition.NEVER, Disposition.FATAL):
                self._reported.add(key)
                self.log.warning("%s: reported witness %s's double signing at height %s to the park (%s)",
                                 park.chain_id, record.get("witness"), record.get("height"),
                                 self._last_disposition.value)

    async def _client_status(self, chain_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._relay_rpc().call("getClientStatus", {"chain_id": chain_id})
        self._note_client(chain_id, result)
        return result

    def _note_client(self, chain_id: str, st: dict[str, Any]) -> None:
        """Track the client's id and freeze (SPEC §8.8): log a freeze once; when a substitute replaced a frozen
        client (a governance recovery), log it and rescan the park's events, since packets the park committed on
        its new branch may lie below the scanner's cursor (packets already tracked or done are skipped)."""
        known: dict[str, tuple[str, bool]] = self.__dict__.setdefault("_client_seen", {})
        cid, frozen = str(st.get("client_id")), st.get("status") == "frozen"
        before = known.get(chain_id)
        known[chain_id] = (cid, frozen)
        self.__dict__.setdefault("_client_checked", {})[chain_id] = (self._clock(), frozen)
        if before == (cid, frozen) or (before is None and not frozen):
            return
        if frozen:
            self.stats.clients_frozen += 1
            self.log.error("%s: the relay's client %s is frozen (height %s): holding this park's packets (no verify, "
                           "no delivery of its verified packets) until governance recovers the client "
                           "(parkrelay relay client recover)", chain_id, cid, st.get("frozen_height"))
        elif before is not None and before[1] and before[0] != cid:
            self.stats.clients_recovered += 1
            self.log.warning("%s: client %s replaced the frozen %s (trusted height %s): resuming this park's packets "
                             "and rescanning its events", chain_id, cid, before[0], st.get("final_height"))
            self._rescan(chain_id)

    def _rescan(self, chain_id: str) -> None:
        raise NotImplementedError

    async def _client_frozen(self, chain_id: str, max_age_s: float = 1.0) -> bool:
        """Whether the relay's client of ``chain_id`` is frozen (a status at most ``max_age_s`` old)."""
        checked: dict[str, tuple[float, bool]] = self.__dict__.setdefault("_client_checked", {})
        seen = checked.get(chain_id)
        if seen is None or self._clock() - seen[0] > max_age_s:
            await self._client_status(chain_id)
            seen = checked[chain_id]
        return seen[1]

    async def _update_client(self, park: ChainLink) -> dict[str, Any]:
        """Feed the relay's client of ``park`` the park's current branch from the last header both share (as many
        headers as one update takes); return the client's status as it was before.

        Pipelining: when the relay admitted the update and the relayer could tell, with the relay's own client code
        on the client's state, the final height the update's headers make (:meth:`_predict_final`), the status also
        carries it as ``proof_height``, and so does every status returned while that update is in flight. Proofs
        at that height, submitted behind the update (the next nonces of the same account), execute in the same
        relay block right after it: a phase saves a relay block. The prediction is the relay's own computation, so
        it holds unless the client froze meanwhile, in which case nothing of that park executes anyway."""
        lock = self._update_locks.setdefault(park.chain_id, asyncio.Lock())
        async with lock:
            self._last_update[park.chain_id] = self._clock()
            st = await self._client_status(park.chain_id)
            predicted: dict[str, int] = self.__dict__.setdefault("_predicted_final", {})
            if st.get("status") == "frozen":
                return st
            if self._waiting_key(f"update/{park.chain_id}"):
                if int(st["latest_height"]) < self._fed.get(park.chain_id, 0):
                    ahead = predicted.get(park.chain_id, 0)
                    return {**st, "proof_height": ahead} if ahead > int(st["final_height"]) else st
                # the update landed (the client holds its top header): feed what the park made since, not seconds later
                self._done_waiting(f"update/{park.chain_id}")
            predicted.pop(park.chain_id, None)
            latest = await park.source.latest_height()
            self._fed[park.chain_id] = max(self._fed.get(park.chain_id, -1), min(int(st["latest_height"]), latest))
            held, final = int(st["latest_height"]), int(st["final_height"])
            held_final = final
            shared = await self._shared_height(park, final, min(held, latest))
            if shared is None:
                await self._submit_deep_fork(park, final)
                return st
            if shared == final and held <= final < latest:
                shared = await self._pending_top(park, final, latest)
                if shared is None:
                    return st  # the client holds the park's headers up to its head already
            if shared < min(held, latest):
                self.stats.branch_switches += 1
                self.log.info("%s: branch switch: the relay's client holds up to %d but the park's chain left its "
                              "branch above %d; feeding the park's branch from %d", park.chain_id, held, shared,
                              shared + 1)
            start = shared + 1
            if start > latest:
                return st
            end = min(latest, start + MAX_HEADERS_PER_UPDATE - 1)
            if not self._feeds_now(park.chain_id, end):
                return st  # another relayer's turn to feed this header: proofs go at the client's final height
            headers = await park.source.headers(start, end)
            if headers:
                self._fed[park.chain_id] = int(headers[-1].height)
                raws = [h.encode() for h in headers]
                ahead = await self._predict_final(st, raws) if self.pipeline_proofs else None
                await self._submit(self.relay, "client.update",
                                   {"chain_id": park.chain_id, "headers": [r.hex() for r in raws]},
                                   f"update/{park.chain_id}", None)
                if self._last_error_code == "header.poc.farmer_key":
                    await self._register_farmers(park, headers, held_final)
                if self._last_error_code is None and ahead is not None and ahead > held_final:
                    predicted[park.chain_id] = ahead
                    return {**st, "proof_height": ahead}
            return st

    async def _predict_final(self, st: dict[str, Any], raw_headers: list[bytes]) -> int | None:
        """The final height of the relay's client described by ``st`` once ``raw_headers`` are applied, computed
        as the relay computes it (SPEC §6.4: the client type's own header processing, then the relay-time
        advance) on the client's state at the relay's head, dated :data:`PREDICT_CLOCK_MARGIN_MS` back; None when
        the relayer cannot tell (a client type it does not know, the state unreadable, a header the client
        refuses: the update then tells the relay chain's own answer)."""
        ctype = CLIENT_TYPES.get(str(st.get("client_type")))
        if ctype is None or not st.get("client_id"):
            return None
        try:
            r = await self._relay_rpc().call("query", {"key": client_state_key(str(st["client_id"])).decode()})
            if not isinstance(r, dict) or not r.get("value"):
                return None
            client = ctype.from_state(ClientId(str(st["client_id"])), bytes.fromhex(str(r["value"])))
            now_ms = self._wall_ms() - PREDICT_CLOCK_MARGIN_MS
            client.check_active(now_ms)
            for raw in raw_headers:
                header = ctype.decode_header(raw)
                if not ctype.redundant(client, header):
                    client.process_header(header, now_ms)
            if ctype.advance is not None:
                ctype.advance(client, now_ms)
            return int(client.final_height)
        except (ProtocolError, ValueError, KeyError, TypeError) as exc:  # I/O errors go to the task's loop
            self.log.debug("%s: no prediction of the client's finality: %s", st.get("chain_id"), exc)
            return None

    async def _register_farmers(self, park: ChainLink, headers: list[Any], final: int) -> None:
        """The client refused a header whose farmer it does not know (an account the park created after the client's
        genesis, SPEC §8.6): bind each farmer of ``headers`` to its key with a proof of its account at the client's
        final height (``client.register_farmer``). A name that is not a park account there is left alone: its
        headers stay refused."""
        for name in dict.fromkeys(str(getattr(h, "farmer", "")) for h in headers):
            if not name:
                continue
            pv = await self._prove(park, account_path(name), final)
            if pv is None:
                return  # the park pruned the client's final height: nothing to prove the account with there
            if pv.value is None:
                continue
            self.log.info("%s: registering farmer %s with the relay's client (its account, proven at %d)",
                          park.chain_id, name, final)
            await self._submit(self.relay, "client.register_farmer",
                               {"chain_id": park.chain_id, "height": final, "name": name, "account": pv.value.hex(),
                                "proof": pv.proof.hex()}, f"farmer/{park.chain_id}/{name}", None)

    async def _holds(self, chain_id: str, headers: list[Any]) -> list[bool]:
        held: list[bool] = await self._relay_rpc().call(
            "getClientHolds", {"chain_id": chain_id, "headers": [h.encode().hex() for h in headers]})
        if not isinstance(held, list) or len(held) != len(headers):
            raise CodecError("getClientHolds answered the wrong shape", expected=len(headers), got=held)
        return held

    async def _shared_height(self, park: ChainLink, final: int, top: int) -> int | None:
        """The highest height in ``final..top`` whose header on the park's current chain the client holds (the
        client holds a header only with its ancestors, so the held ones are a prefix); None when the client does
        not even hold the park's header at its own final height: a fork below finality."""
        if top < final or top < 1:
            return top  # the park's node is behind the client: nothing to feed from it
        if top == final:
            (h,) = await park.source.headers(top, top) or [None]
            return top if h is None or (await self._holds(park.chain_id, [h]))[0] else None
        (tip,) = await park.source.headers(top, top) or [None]
        if tip is None:
            return top
        if (await self._holds(park.chain_id, [tip]))[0]:
            return top  # the common case: no fork
        lo = max(final, top - FORK_SEARCH)
        headers = await park.source.headers(lo, top)
        held = await self._holds(park.chain_id, headers)
        for h, ok in zip(reversed(headers), reversed(held), strict=True):
            if ok:
                return int(h.height)
        if lo > final:
            # the client's headers end more than FORK_SEARCH below the park's head (the client fell behind: a long
            # partition, a stalled relay, or a fork that deep): find where they end by bisection over the held
            # prefix and feed from there. Feeding from ``lo`` instead would send headers far above everything the
            # client holds, which it refuses as too far ahead, and the client would never catch up.
            return await self._held_prefix_top(park, final, lo)
        return None

    async def _pending_top(self, park: ChainLink, final: int, latest: int) -> int | None:
        """Where the client's headers of the park end above ``final`` (whose header it holds), for a client whose
        status counts no pending header in its ``latest_height`` (Ethereum: headers wait for attestations). Feeding
        from ``final + 1`` again would only resend headers it holds ("already holds every header") and never reach
        the attested one: the soak's Ethereum client stayed at one final height for 25 minutes so. None: it holds
        up to ``latest``."""
        tip = await self._holds_at(park, latest)
        if tip is None:
            return final
        return None if tip else await self._bisect_held(park, final, latest)

    async def _holds_at(self, park: ChainLink, height: int) -> bool | None:
        """Whether the client holds the park's header at ``height``; None if the park has no header there."""
        (h,) = await park.source.headers(height, height) or [None]
        return None if h is None else (await self._holds(park.chain_id, [h]))[0]

    async def _held_prefix_top(self, park: ChainLink, final: int, above: int) -> int | None:
        """The highest height in ``final..above - 1`` whose park header the client holds (it holds ``final``'s, or
        None: a fork below finality); ``above``'s header is known not to be held."""
        held = await self._holds_at(park, final)
        if held is None:
            return final
        return await self._bisect_held(park, final, above) if held else None

    async def _bisect_held(self, park: ChainLink, lo: int, hi: int) -> int:
        """The highest height whose park header the client holds, given that it holds ``lo``'s and not ``hi``'s (the
        held headers are a prefix of the park's chain)."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            held = await self._holds_at(park, mid)
            if held is None:
                return lo
            lo, hi = (mid, hi) if held else (lo, mid)
        return lo

    async def _submit_deep_fork(self, park: ChainLink, final: int) -> None:
        """The park's chain does not contain the client's final header: a fork deeper than the client can follow.
        Find the park's branch point among the client's fork points and submit the park's branch from there:
        for the client that is evidence of two final chains, and it freezes (SPEC §8)."""
        self.log.error("%s: the park's chain conflicts with the relay client's final header at %d: a fork deeper "
                       "than the client's finality; submitting the park's branch as misbehaviour evidence",
                       park.chain_id, final)
        lo = max(1, final - FORK_SEARCH)
        headers = await park.source.headers(lo, final)
        held = await self._holds(park.chain_id, headers) if headers else []
        base = next((int(h.height) for h, ok in zip(reversed(headers), reversed(held), strict=True) if ok), lo - 1)
        branch = await park.source.headers(base + 1, base + MAX_HEADERS_PER_UPDATE)
        if branch:
            self.stats.misbehaviour_submitted += 1
            await self._submit(self.relay, "client.update",
                               {"chain_id": park.chain_id, "headers": [h.encode().hex() for h in branch]},
                               f"update/{park.chain_id}", None)
