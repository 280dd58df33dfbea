"""Target side of a Fabric park (:class:`~adapters.common.roles.TargetSide`; SPEC.md §8.7): bridge transactions
endorsed by both organisations and tracked until they commit.

:meth:`FabricTarget.submit` takes the relayer's ops with the Python parks' JSON arguments and invokes the bridge
chaincode function of the same meaning as the target's own client identity (a relayer's identity is issued by the
network's init: ``FabricNetworkConfig.for_park``):

=================================  =========================  ==========================================
op                                 chaincode function         arguments (one JSON object)
=================================  =========================  ==========================================
``bridge.recv``                    ``recv``                   ``{packet, certificate, relayer?}`` (the ack names
                                                              ``relayer``, the relay account earning the execute fee)
``bridge.settle``                  ``settle``                 ``{packet, certificate, ack?}`` (pays the relay fees)
``bridge.timeout_receipt``         ``timeout_receipt``        ``{packet, certificate}``
``bridge.update_lane``             ``update_lane``            ``{dst_chain, lane, config, certificate}``
``bridge.update_relay_validators`` ``update_relay_validators`` ``{commit, new_set}``
``bridge.send``                    ``send``                   ``bridge.send`` args and ``fees?`` (phase 1, a user's
                                                              own; :func:`send_packet`)
``transfer``                       ``transfer``               ``{to, denom, amount_wh}``
``register``                       ``register``               none
``bridge.init``                    ``init_bridge``            the park's genesis (once, by its operator)
``bridge.ping``                    ``ping``                   none (a relayer's keepalive on a quiet channel)
``rights.issue``                   ``issue_right``            ``{right_id, station, transformer, power_kw,
                                                              slot_start_ms, slot_end_ms, owner}`` (operator)
``rights.set_transformer``         ``set_transformer``        ``{name, capacity_kw}`` (operator)
``rights.set_station``             ``set_station``            ``{name, transformer}`` (operator)
``rights.transfer``                ``transfer_right``         ``{right_id, to}`` (the owner)
``reputation.set_standing``        ``set_standing``           ``{account, certified, score}`` (operator)
``reputation.certify``             ``certify``                ``{account, src_chain, subject, model}`` (operator)
=================================  =========================  ==========================================

A submission is **endorsed** by one peer of each organisation of the endorsement policy with one signed proposal;
the peers must agree (:func:`~adapters.fabric.errors.classify_endorsements`: a chaincode refusal raises its typed
error *before anything is ordered* — a redundant relay is :class:`~protocol.errors.ReplayError` and costs nothing;
peers that disagree raise the retryable :class:`~adapters.fabric.errors.EndorsementMismatchError`). The endorsed
envelope is then **ordered** (the orderers in turn) and ``submit`` returns its transaction id.
:meth:`FabricTarget.track` waits for the commit (:class:`~adapters.fabric.gateway.CommitWatcher`, events from the
endorsing peers' filtered Deliver streams) and returns ``{"ok": True, ...}`` for VALID, or raises
:class:`~adapters.fabric.errors.MvccConflictError` (retryable) / :class:`~adapters.fabric.errors.TxInvalidError`.

**Pipelining without self-conflicts.** Fabric endorses against committed state and checks read versions at commit,
so two transactions in flight that read and write one key cannot both commit: the second is invalidated
(``MVCC_READ_CONFLICT``) — a failed transaction in a block. The bridge has such hot keys: the escrow total of a
native denomination (``escrow/<denom>``, every lane), a voucher's outstanding supply (``supply/<voucher>``), a
lane's next sequence, a packet's receipt path, a transformer's bookings (every right admitted on it), a right's
record, an imported reputation, the relay fee escrow (every send with fees and every settlement that pays them).
:func:`write_keys` names, for each op, the hot keys it may write;
``submit`` sends a transaction only once every earlier transaction of this target sharing one of its keys has
committed on the endorsing peers. Transactions with disjoint keys (packets of different denominations or lanes,
different accounts) are in flight together, so several ``recv`` ride in one block. A relay validator-set update
shares no key with the others (it is rare; a conflict it causes is retried as any MVCC conflict is).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.common.roles import SentPacket
from adapters.fabric.blocks import decode_peer_block
from adapters.fabric.errors import OrderingUnknownError, commit_failure
from adapters.fabric.gateway import FabricGateway, TxStatus
from chains.common import wire
from chains.common.fees import parse_fees
from chains.fabric.chaincode.market import FUNCTIONS as MARKET_FUNCTIONS
from protocol.codec import decode_charging_right, decode_energy, decode_packet, decode_reputation
from protocol.errors import CodecError, ProtocolError, TransportError
from protocol.types import Packet, PacketKind

__all__ = ["OPS", "FabricTarget", "SentPacket", "Submitted", "send_energy", "send_packet", "write_keys"]

log = logging.getLogger("parkrelay.adapters.fabric")

OPS: dict[str, str] = {
    "bridge.recv": "recv",
    "bridge.settle": "settle",
    "bridge.timeout_receipt": "timeout_receipt",
    "bridge.update_lane": "update_lane",
    "bridge.update_relay_validators": "update_relay_validators",
    "bridge.reset_relay_validators": "reset_relay_validators",
    "bridge.send": "send",
    "transfer": "transfer",
    "register": "register",
    "bridge.init": "init_bridge",
    "bridge.ping": "ping",
    "rights.issue": "issue_right",
    "rights.set_transformer": "set_transformer",
    "rights.set_station": "set_station",
    "rights.transfer": "transfer_right",
    "reputation.set_standing": "set_standing",
    "reputation.certify": "certify",
    **{name: name for name in MARKET_FUNCTIONS if MARKET_FUNCTIONS[name].submit},
}
"""Op -> bridge chaincode function (module docstring); the market's ``market.*`` functions are their own ops
(:mod:`adapters.fabric.market`)."""
_NO_ARGS = frozenset({"register", "bridge.ping"})
_SUBMITTED_KEPT = 4096


def _is_voucher(denom: str) -> bool:
    """A denomination with a trace (``lane/chain/denom``) is a voucher here; a native one has no ``/``."""
    return "/" in denom


def _packet_keys(packet: Packet, *, home: str) -> set[tuple[str, ...]]:
    """Hot keys a packet's value movement writes on ``home``: its escrow total or voucher supply; a right's
    transformer bookings (admission on receipt, release on a successful settlement) and its record; an imported
    reputation."""
    if packet.kind is PacketKind.CHARGING_RIGHT:
        try:
            c = decode_charging_right(packet.payload)
        except ProtocolError:
            return set()  # acked payload.invalid: it moves nothing
        return {("bookings", c.transformer), ("right", c.right_id)}
    if packet.kind is PacketKind.REPUTATION:
        try:
            r = decode_reputation(packet.payload)
        except ProtocolError:
            return set()
        return {("imported", packet.src_chain, r.subject, r.model)} if packet.dst_chain == home else set()
    try:
        denom = decode_energy(packet.payload).denom
    except ProtocolError:
        return set()  # the chaincode refuses it or acks an error: it moves nothing
    if packet.dst_chain == home:  # inbound: a returning native unescrows, anything else mints a voucher
        prefix = f"{packet.lane}/{home}/"
        if denom.startswith(prefix):
            return {("escrow", denom[len(prefix):])}
        return {("supply", f"{packet.lane}/{packet.src_chain}/{denom}")}
    return {("supply", denom)} if _is_voucher(denom) else {("escrow", denom)}  # outbound: a refund


def write_keys(op: str, args: dict[str, Any], *, home: str) -> set[tuple[str, ...]]:
    """The hot keys (module docstring) ``op`` with ``args`` may write on park ``home``; arguments the chaincode will
    refuse anyway give what can be read of them."""
    try:
        if op in ("bridge.recv", "bridge.timeout_receipt", "bridge.settle"):
            packet = decode_packet(wire.hex_bytes(args["packet"], "packet"))
            keys = _packet_keys(packet, home=home)
            if op == "bridge.settle":
                keys.add(("commitment", packet.dst_chain, packet.lane, str(packet.sequence)))
                keys.add(("fee_escrow",))  # paid out if the packet carried fees (the adapter cannot tell)
            else:
                keys.add(("receipt", packet.src_chain, packet.lane, str(packet.sequence)))
            return keys
        if op == "bridge.send":
            denom = str(args.get("denom", ""))
            keys = {("sequence", str(args["dst_chain"]), str(args["lane"]))}
            if args.get("kind") == "energy" and denom:
                keys.add(("supply", denom) if _is_voucher(denom) else ("escrow", denom))
            if args.get("kind") == "charging_right":
                keys.add(("right", str(args.get("right_id"))))
            fees = args.get("fees")
            if isinstance(fees, dict) and any(fees.values()):
                keys.add(("fee_escrow",))
            return keys | {("account",)}
        if op == "rights.issue":
            return {("bookings", str(args["transformer"])), ("right", str(args["right_id"]))}
        if op == "rights.transfer":
            return {("right", str(args["right_id"]))}
        if op == "rights.set_transformer":
            return {("transformer", str(args["name"]))}
        if op == "rights.set_station":
            return {("station", str(args["name"]))}
        if op in ("reputation.set_standing", "reputation.certify"):
            return {("standing", str(args["account"]))}
        if op == "bridge.update_lane":
            return {("sequence", str(args["dst_chain"]), str(args["lane"]))}
        if op in ("bridge.update_relay_validators", "bridge.reset_relay_validators"):
            return {("relay_validators",)}
        if op in ("transfer", "register"):
            return {("account",)} | ({("account", str(args.get("to")))} if op == "transfer" else set())
    except (KeyError, TypeError, ProtocolError):
        pass
    return {("op", op)}


@dataclass(frozen=True, slots=True)
class Submitted:
    """An ordered transaction."""

    tx_id: str
    response: bytes
    """The chaincode's response payload both organisations endorsed (the bridge's events, JSON)."""
    orderer: str
    """The orderer that accepted it."""


class FabricTarget:
    """:class:`~adapters.common.roles.TargetSide` of one Fabric park, as one client identity (module docstring)."""

    def __init__(self, gateway: FabricGateway, *, commit_timeout_s: float = 60.0, pipeline_wait_s: float = 30.0,
                 all_peers_grace_s: float = 2.0, in_doubt_wait_s: float = 5.0) -> None:
        if commit_timeout_s <= 0 or pipeline_wait_s <= 0 or all_peers_grace_s < 0 or in_doubt_wait_s < 0:
            raise ValueError("commit_timeout_s > 0, pipeline_wait_s > 0, all_peers_grace_s >= 0, in_doubt_wait_s >= 0")
        self.gateway = gateway
        self.chain_id = gateway.chain_id
        self.commit_timeout_s = commit_timeout_s
        """How long :meth:`track` and the pipeline wait for a commit."""
        self.pipeline_wait_s = pipeline_wait_s
        """Longest a submission waits for an earlier one sharing a hot key (then it goes anyway)."""
        self.all_peers_grace_s = all_peers_grace_s
        """After the first endorsing peer committed a transaction, how long to wait for the others before the next
        transaction on its keys is endorsed (a peer still behind would endorse on old state)."""
        self.in_doubt_wait_s = in_doubt_wait_s
        """How long the next transaction on its keys waits for one whose ordering is in doubt
        (:class:`~adapters.fabric.errors.OrderingUnknownError`: an orderer that did not answer may still order it,
        within a batch timeout of coming back)."""
        self._tails: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self._submitted: collections.OrderedDict[str, Submitted] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.endorsement_failures: dict[str, int] = {}
        """Proposals the peers refused or answered differently, by error code (a chaincode refusal such as
        ``packet.replay`` included: on Fabric that is how a redundant relay ends, before ordering)."""

    @property
    def msp_id(self) -> str:
        """The identity's MSP id (its bridge account is ``<MSP id>:<certificate CN>``: :meth:`whoami`)."""
        return self.gateway.msp_id

    # -- submitting ---------------------------------------------------------------------------------

    def invocation(self, op: str, args: dict[str, Any]) -> tuple[str, list[str]]:
        """The chaincode function and arguments of ``op`` (module docstring)."""
        fcn = OPS.get(op)
        if fcn is None:
            raise CodecError(f"{self.chain_id} has no op {op!r}", expected=sorted(OPS), got=op)
        if op in _NO_ARGS:
            return fcn, []
        if not isinstance(args, dict):
            raise CodecError(f"{op} arguments must be a JSON object", got=type(args).__name__)
        return fcn, [json.dumps(args, sort_keys=True, separators=(",", ":"))]

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        """Endorse and order ``op``; the transaction id. Raises the chaincode's typed refusal (nothing is ordered),
        :class:`~adapters.fabric.errors.EndorsementMismatchError`, or :class:`~protocol.errors.TransportError`."""
        return (await self.invoke(op, args)).tx_id

    async def invoke(self, op: str, args: dict[str, Any], transient: Mapping[str, bytes] | None = None) -> Submitted:
        """:meth:`submit`, returning the endorsed response too; ``transient`` goes in the proposal's transient map
        (seen by the endorsers, never recorded)."""
        fcn, cc_args = self.invocation(op, args)
        keys = sorted(write_keys(op, args if isinstance(args, dict) else {}, home=self.chain_id))
        loop = asyncio.get_running_loop()
        earlier = {f for k in keys if (f := self._tails.get(k)) is not None and not f.done() and f.get_loop() is loop}
        mine: asyncio.Future[None] = loop.create_future()
        for k in keys:
            self._tails[k] = mine
        mine.add_done_callback(lambda f: self._drop_tail(keys, f))
        try:
            if earlier:
                await asyncio.wait(earlier, timeout=self.pipeline_wait_s)
            watcher = await self.gateway.watcher()  # positioned before the broadcast: it will see the commit
            try:
                e = await self.gateway.endorse(fcn, cc_args, transient)
            except ProtocolError as exc:
                # the peers refused the proposal or answered it differently (the relayer's
                # parkrelay_relayer_fabric_endorsement_failures metric, by code)
                self.endorsement_failures[exc.code] = self.endorsement_failures.get(exc.code, 0) + 1
                raise
            orderer = await self.gateway.broadcast(e)
        except OrderingUnknownError as exc:
            self._release_later(watcher, exc.tx_id, mine, self.in_doubt_wait_s)  # it may yet commit
            raise
        except BaseException:
            mine.set_result(None)
            raise
        sub = Submitted(e.tx_id, e.response_payload, orderer)
        self._submitted[e.tx_id] = sub
        while len(self._submitted) > _SUBMITTED_KEPT:
            self._submitted.popitem(last=False)
        self._release_later(watcher, e.tx_id, mine, self.commit_timeout_s)
        return sub

    def _release_later(self, watcher: Any, tx_id: str, tail: asyncio.Future[None], timeout_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._release_when_committed(watcher, tx_id, tail, timeout_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop_tail(self, keys: Iterable[tuple[str, ...]], fut: asyncio.Future[None]) -> None:
        for k in keys:
            if self._tails.get(k) is fut:
                del self._tails[k]

    async def _release_when_committed(self, watcher: Any, tx_id: str, tail: asyncio.Future[None],
                                      timeout_s: float) -> None:
        try:
            await watcher.wait(tx_id, timeout_s)
            await self._on_every_peer(tx_id)
        except (TimeoutError, TransportError):
            pass  # not seen in time (or the watcher closed): the next transaction goes; MVCC still protects state
        finally:
            if not tail.done():
                tail.set_result(None)

    # -- tracking -----------------------------------------------------------------------------------

    async def status(self, tx_id: str, timeout_s: float) -> TxStatus:
        """How ``tx_id`` committed, from the commit watcher; for a transaction this target did not submit, looked up
        in the peers' ledger first (qscc ``GetBlockByTxID``)."""
        watcher = await self.gateway.watcher()
        seen = watcher.seen(tx_id)
        if seen:
            return next(iter(seen.values()))
        if tx_id not in self._submitted:
            raw = await self.gateway.block_of_tx(tx_id)
            if raw is not None:
                block = decode_peer_block(raw)
                tx = block.tx(tx_id)
                if tx is not None:
                    st = TxStatus(tx_id, tx.validation_code, block.number, "ledger")
                    watcher.record(st)
                    return st
        try:
            return await watcher.wait(tx_id, timeout_s)
        except TimeoutError as exc:
            raise TransportError(f"transaction {tx_id} not committed within {timeout_s}s", retryable=True,
                                 side=self.chain_id) from exc

    async def track(self, tx_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait until ``tx_id`` commits: ``{"ok": True, "height", "tx_hash"}`` when VALID, else raise its error
        (:class:`~adapters.fabric.errors.MvccConflictError` retryable, :class:`~adapters.fabric.errors.TxInvalidError`
        otherwise); a transaction not committed in time raises a retryable
        :class:`~protocol.errors.TransportError`."""
        st = await self.status(tx_id, self.commit_timeout_s if timeout_s is None else timeout_s)
        err = commit_failure(st.code, tx_id, st.height, side=self.chain_id)
        if err is not None:
            raise err
        if st.peer != "ledger":
            await self._on_every_peer(tx_id)
        return {"ok": True, "height": st.height, "tx_hash": tx_id}

    async def _on_every_peer(self, tx_id: str) -> None:
        """Read your writes: wait (up to ``all_peers_grace_s``) until every followed peer has committed ``tx_id``,
        so that a query after :meth:`track` sees it whichever peer answers. The first commit event may come from
        one organisation's peer while reads go to the identity's own organisation's peer first
        (:attr:`~adapters.fabric.gateway.FabricGateway.read_peers`), which may not have committed the block yet. A
        peer lagging past the grace (or down) does not fail the transaction: it is committed."""
        watcher = await self.gateway.watcher()
        try:
            await watcher.wait(tx_id, self.all_peers_grace_s, all_peers=True)
        except (TimeoutError, TransportError) as exc:
            log.debug("%s: %s not seen on every peer within %.1fs: %s", self.chain_id, tx_id,
                      self.all_peers_grace_s, exc)

    async def call(self, op: str, args: dict[str, Any], timeout_s: float | None = None,
                   transient: Mapping[str, bytes] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Submit and track ``op``: ``(track result, the bridge's events)``."""
        sub = await self.invoke(op, args, transient)
        result = await self.track(sub.tx_id, timeout_s)
        try:
            events = json.loads(sub.response) if sub.response else []
        except ValueError:
            events = []
        return result, events if isinstance(events, list) else []

    async def register(self) -> list[dict[str, Any]]:
        """Create this identity's bridge account (nothing if it exists); the events."""
        return (await self.call("register", {}))[1]

    async def relay_trust(self) -> dict[str, Any]:
        """The bridge's view of the relay set over time (protocol SPEC §7.8, chaincode query ``relay_trust``):
        ``{set_hash, update_height, trusted_time_ms, trusting_period_ms, expires_at_ms, validators, now_ms}``
        (``trusted_time_ms`` None until the first certificate when the genesis gave none)."""
        raw: dict[str, Any] = json.loads(await self.gateway.query("relay_trust", []))
        return {"set_hash": raw["validators"]["hash"], **raw}

    async def whoami(self) -> dict[str, Any]:
        """This identity's account and whether it is registered."""
        result: dict[str, Any] = json.loads(await self.gateway.query("whoami", []))
        return result

    async def close(self) -> None:
        """Stop tracking and close the gateway's connections."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.gateway.close()



async def send_energy(target: FabricTarget, dst_chain: str, lane: str, denom: str, amount_wh: int, receiver: str,
                      timeout_timestamp_ms: int, *, fees: Mapping[str, int] | None = None,
                      timeout_s: float = 60.0) -> SentPacket:
    """Phase 1 from ``target``'s identity (its account must hold ``amount_wh`` of ``denom``, and the ``fees``
    besides): invoke ``send``, wait for the commit and return the packet from its ``send_packet`` event."""
    return await send_packet(target, {"dst_chain": dst_chain, "lane": lane, "kind": "energy", "receiver": receiver,
                                      "denom": denom, "amount_wh": amount_wh,
                                      "timeout_timestamp_ms": timeout_timestamp_ms}, fees=fees, timeout_s=timeout_s)


async def send_packet(target: FabricTarget, args: dict[str, Any], *, fees: Mapping[str, int] | None = None,
                      timeout_s: float = 60.0) -> SentPacket:
    """Phase 1 of any kind from ``target``'s identity with ``bridge.send`` arguments ``args``: invoke ``send``, wait
    for the commit, return the packet from its ``send_packet`` event (:mod:`adapters.fabric.assets` for rights and
    reputation).

    ``fees`` (``{verify?, execute?, confirm?}``, protocol SPEC §6.10) are the relay fees the sender offers, in the
    park's market currency (the chaincode query ``config``'s ``fee_denom``), escrowed with the packet and paid to
    the relayers at settlement; checked here as the chaincode checks them (:class:`~protocol.errors.CodecError`
    before anything is sent), and left out when all are 0. The ``send_packet`` event reports them (``fees``)."""
    parsed = parse_fees(fees)
    if parsed:
        args = {**args, "fees": parsed.to_json()}
    result, events = await target.call("bridge.send", args, timeout_s)
    for ev in events:
        if ev.get("type") == "send_packet":
            raw = bytes.fromhex(ev["packet"])
            return SentPacket(decode_packet(raw), raw, int(ev["sequence"]), int(result["height"]), result["tx_hash"])
    raise CodecError(f"{target.chain_id}: send transaction {result['tx_hash']} emitted no send_packet", got=events)
