"""One client identity's connection to a Fabric park through hfc (fabric-sdk-py 1.0.0): proposals, transactions,
system-chaincode queries and commit notifications. The source and target sides (:mod:`.source`, :mod:`.target`)
are built on it.

What hfc gives and what this module adds
----------------------------------------

hfc's high-level calls do not fit a relayer: ``chaincode_query`` returns only the payload (an attestation needs each
peer's *signed* ``ProposalResponse``), ``query_block`` returns decoded dicts (the light client needs the block's
bytes), and ``chaincode_invoke`` keeps the transaction it waits for in attributes of the ``Client`` (two concurrent
invokes on one client overwrite each other's), answers an endorsement failure by *returning* its text, raises a bare
``Exception([statuses])`` when the commit is not VALID, and picks a random orderer. So this module works one level
lower, with hfc's own building blocks:

* :meth:`FabricGateway.propose` — ``Channel.send_tx_proposal`` (signs a ``SignedProposal`` with the identity's key)
  to chosen peers, each answer awaited with a deadline: the peers' ``ProposalResponse`` protos themselves;
* :meth:`FabricGateway.broadcast` — the endorsed transaction envelope (hfc's ``create_tx_payload`` and
  ``sign_tran_payload``) sent to the orderers **in turn** (the next one when an orderer is down or has no Raft
  leader), never at random;
* :meth:`FabricGateway.qscc` — ``GetChainInfo`` / ``GetBlockByNumber`` / ``GetBlockByTxID`` proposals to the query
  system chaincode, whose response payload *is* the serialized ``BlockchainInfo`` or ``Block``;
* :class:`CommitWatcher` — one filtered Deliver stream per endorsing peer, resuming after the last block seen when a
  peer restarts, so a transaction's validation code arrives as an event (no polling), once per peer.

hfc is driven through its public classes and functions (``Client``, ``Channel``, ``Peer``, ``Orderer``,
``create_user``) with one exception, to keep threads in check: aiogrpc (under hfc) runs each *stream* on a thread of
the event loop's default executor, so the long-lived Deliver streams are opened on the peer's Deliver stub
(``Peer._event_client``) with aiogrpc's ``standalone_pool=True`` (a thread of their own) rather than through
``Peer.delivery``.

Keys: hfc keeps every user of a connection profile in a "credential store", by default files in the profile's
``credentialStore.path`` holding each user's private key unencrypted (mode 0644) and read back with ``pickle``. The
adapter never lets it: hfc's ``Client`` is made from a copy of the profile without its users (the copy lives for the
call in a private temporary directory), and the one identity the adapter signs with is loaded from its key file into
an hfc ``User`` whose state store is memory (:class:`_MemoryStore`).

Event loops: aiogrpc binds every gRPC channel to the loop that was running when it was made, so the hfc ``Client`` is
made lazily inside the first coroutine that needs it and made again if called from another loop.

gRPC channel options added to the connection profile's (in that copy): reconnection backoff capped at
:data:`MAX_RECONNECT_BACKOFF_MS` (gRPC's default grows to 120 s, so a peer back after a minute's outage would stay
unused for up to two minutes more).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfc.fabric import Client
from hfc.fabric.channel import channel as _hfc_channel
from hfc.fabric.transaction.tx_context import TXContext, create_tx_context
from hfc.fabric.transaction.tx_proposal_request import (
    CC_INVOKE,
    CC_QUERY,
    CC_TYPE_GOLANG,
    TXProposalRequest,
    create_tx_prop_req,
)
from hfc.fabric.user import create_user
from hfc.protos.common import common_pb2, ledger_pb2
from hfc.protos.orderer import ab_pb2
from hfc.protos.peer import proposal_pb2
from hfc.protos.utils import create_envelope, create_seek_payload, create_tx_payload
from hfc.util.keyvaluestore import KeyValueStore
from hfc.util.utils import (
    build_channel_header,
    build_header,
    build_tx_req,
    current_timestamp,
    sign_tran_payload,
    stream_envelope,
)

from adapters.fabric.errors import (
    Endorsed,
    OrderingUnknownError,
    Refused,
    classify_endorsements,
    peer_failure,
    rpc_failure,
)
from chains.fabric.consts import BRIDGE_CHAINCODE, DEFAULT_CHANNEL, PEER_ORGS
from protocol.errors import CodecError, ParkRelayError, TransportError

__all__ = [
    "MAX_RECONNECT_BACKOFF_MS",
    "CommitWatcher",
    "Endorsement",
    "FabricGateway",
    "Profile",
    "TxStatus",
]

log = logging.getLogger("parkrelay.adapters.fabric")

MAX_RECONNECT_BACKOFF_MS = 2_000
"""Longest wait between gRPC reconnection attempts to a peer or orderer that went away."""
_GRPC_OPTIONS = {"grpc.initial_reconnect_backoff_ms": 200, "grpc.min_reconnect_backoff_ms": 200,
                 "grpc.max_reconnect_backoff_ms": MAX_RECONNECT_BACKOFF_MS,
                 "grpc.max_receive_message_length": 64 * 1024 * 1024}
_SEEK_MAX = 2**64 - 1
_STATUS_SUCCESS = 200
_STATUS_SERVICE_UNAVAILABLE = 503


@dataclass(frozen=True, slots=True)
class Profile:
    """What the adapter reads from an hfc connection profile (the one the network launcher writes,
    ``<data dir>/connection-profile.json``)."""

    path: Path
    """The profile file."""
    raw: dict[str, Any]
    """Its JSON."""
    peers_by_org: dict[str, tuple[str, ...]]
    """Peer names of each organisation that are on the channel."""
    orderers: tuple[str, ...]
    """Orderer names serving the channel, in the profile's order."""
    user_org: str
    """The MSP id of the identity's organisation."""

    @classmethod
    def load(cls, path: str | Path, channel: str, user: str, org: str | None = None) -> Profile:
        """Read ``path`` and find ``user``'s organisation (``org`` when several list that user name); a profile that
        lacks what the adapter needs raises :class:`~protocol.errors.CodecError` naming it."""
        p = Path(path)
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise CodecError(f"cannot read the Fabric connection profile {p}: {exc}") from exc
        orgs = raw.get("organizations") or {}
        chan = (raw.get("channels") or {}).get(channel)
        on_channel = set((chan or {}).get("peers") or raw.get("peers") or {})
        peers_by_org = {msp: tuple(n for n in (info.get("peers") or []) if n in on_channel)
                        for msp, info in orgs.items() if info.get("peers")}
        orderers = tuple((chan or {}).get("orderers") or raw.get("orderers") or ())
        holders = [msp for msp, info in orgs.items() if user in (info.get("users") or {})]
        if org is not None:
            holders = [m for m in holders if m == org]
        if len(holders) != 1:
            raise CodecError(f"Fabric connection profile {p}: user {user!r} must be listed by exactly one "
                             "organisation" + (f" (asked for {org})" if org else ""), got=holders)
        if not orderers:
            raise CodecError(f"Fabric connection profile {p} names no orderer for channel {channel}")
        if not any(peers_by_org.values()):
            raise CodecError(f"Fabric connection profile {p} names no peer on channel {channel}")
        return cls(p, raw, peers_by_org, orderers, holders[0])


def tx_proposal(proposal: Any) -> Any:
    """The proposal as a transaction carries it: its ``ChaincodeProposalPayload`` without the transient map. The
    endorsers hashed the proposal without it (Fabric's ``GetProposalHash1``) and the committers hash the
    transaction's payload as it is (``GetProposalHash2``), so a transaction that kept it would be invalid — and
    would publish in the block what the transient map exists to keep off it. hfc's ``send_tx_proposal`` already
    returns the proposal without it; the envelope is built here, so this makes sure of it."""
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    if not payload.TransientMap:
        return proposal
    stripped = type(proposal)()
    stripped.CopyFrom(proposal)
    stripped.payload = proposal_pb2.ChaincodeProposalPayload(input=payload.input).SerializeToString()
    return stripped


def _build_cc_proposal(cci_spec: Any, header: Any, transient_map: Mapping[str, bytes] | None) -> Any:
    """hfc 1.0's ``build_cc_proposal`` with a working transient map: hfc assigns into the map field, which the
    pure-Python protobuf runtime hfc's protos need (adapters/fabric/__init__.py) refuses (its generated map is a
    repeated field there); this adds the entries, which are the same bytes on the wire."""
    payload = proposal_pb2.ChaincodeProposalPayload()
    payload.input = cci_spec.SerializeToString()
    for name, value in sorted((transient_map or {}).items()):
        entry = payload.TransientMap.add()
        entry.key, entry.value = name, bytes(value)
    proposal = proposal_pb2.Proposal()
    proposal.header = header.SerializeToString()
    proposal.payload = payload.SerializeToString()
    return proposal


_hfc_channel.build_cc_proposal = _build_cc_proposal


class _MemoryStore(KeyValueStore):  # type: ignore[misc]  # hfc is untyped
    """hfc's user state store, in memory: hfc's own file store writes every user's private key, unencrypted and
    readable by all, and reads it back with ``pickle``."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def set_value(self, key: str, value: Any) -> bool:
        self._values[key] = value
        return True

    def get_value(self, key: str) -> Any:
        return self._values.get(key)

    def async_set_value(self, key: str, value: Any, scheduler: Any = None) -> Any:
        raise NotImplementedError("not used by hfc's client")

    def async_get_value(self, key: str, scheduler: Any = None) -> Any:
        raise NotImplementedError("not used by hfc's client")


@dataclass
class _Session:
    """hfc objects bound to one event loop."""

    loop: asyncio.AbstractEventLoop
    client: Any
    channel: Any
    user: Any


@dataclass(frozen=True, slots=True)
class Endorsement:
    """A proposal every endorsing peer endorsed alike, ready to be ordered."""

    tx_id: str
    """The transaction id the proposal carries."""
    payload: bytes
    """The agreed ``ProposalResponsePayload``."""
    response_payload: bytes
    """The chaincode's response payload (for the bridge: the JSON list of its events)."""
    responses: tuple[Any, ...]
    """The peers' ``ProposalResponse`` protos."""
    proposal: Any
    """The proposal (without transient data), as hfc builds it."""
    header: Any
    """Its ``common.Header``."""


@dataclass(frozen=True, slots=True)
class TxStatus:
    """A transaction's fate as one peer committed it."""

    tx_id: str
    code: int
    """``TxValidationCode`` (0: VALID)."""
    height: int
    """The block that holds it."""
    peer: str
    """The peer that reported it."""


class FabricGateway:
    """A park (``chain_id``) as seen by one client identity (``user`` of the connection profile)."""

    def __init__(self, profile: str | Path, chain_id: str, user: str, *, org: str | None = None,
                 channel: str = DEFAULT_CHANNEL, chaincode: str = BRIDGE_CHAINCODE,
                 policy_orgs: Sequence[str] = PEER_ORGS, timeout_s: float = 10.0) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s > 0")
        self.chain_id = chain_id
        """The park's chain id (the ``side`` of transport errors)."""
        self.channel_name = channel
        self.chaincode = chaincode
        self.user_name = user
        self.timeout_s = timeout_s
        """Deadline of one call to a peer or orderer."""
        self.profile = Profile.load(profile, channel, user, org)
        missing = [o for o in policy_orgs if not self.profile.peers_by_org.get(o)]
        if missing:
            raise CodecError(f"Fabric connection profile {self.profile.path} has no peer of {missing} on channel "
                             f"{channel}: the bridge's endorsement policy needs one of each", got=missing)
        self.policy_orgs = tuple(policy_orgs)
        """Organisations that must endorse (one peer each)."""
        self.org_of = {p: msp for msp, peers in self.profile.peers_by_org.items() for p in peers}
        """Peer name -> MSP id."""
        own = list(self.profile.peers_by_org.get(self.profile.user_org, ()))
        self.read_peers = tuple(own + [p for p in self.org_of if p not in own])
        """Peers for reads, in order of preference: the identity's own organisation's first."""
        self._session: _Session | None = None
        self._orderer_turn = 0
        self._watcher: CommitWatcher | None = None

    @property
    def msp_id(self) -> str:
        """The identity's MSP id."""
        return self.profile.user_org

    def endorsers(self) -> list[str]:
        """One peer of each policy organisation (the first the profile lists)."""
        return [self.profile.peers_by_org[o][0] for o in self.policy_orgs]

    # -- hfc objects -----------------------------------------------------------------------------------

    async def session(self) -> _Session:
        """hfc's client, channel and user for the running event loop (module docstring)."""
        loop = asyncio.get_running_loop()
        s = self._session
        if s is not None and s.loop is loop:
            return s
        client = self._client()
        channel = client.new_channel(self.channel_name)
        self._session = s = _Session(loop, client, channel, self._user())
        self._watcher = None  # its streams ran on the previous loop (gone with it)
        return s

    def _client(self) -> Any:
        """An hfc ``Client`` of the profile's peers and orderers, made from a copy of the profile (module docstring,
        "Keys") in a private temporary directory that is removed at once."""
        raw = copy.deepcopy(self.profile.raw)
        with tempfile.TemporaryDirectory(prefix="parkrelay-hfc-") as tmp:  # mode 0700
            raw.setdefault("client", {})["credentialStore"] = {"path": str(Path(tmp) / "kvs")}
            for org in (raw.get("organizations") or {}).values():
                org.pop("users", None)
            for kind in ("peers", "orderers"):
                for info in (raw.get(kind) or {}).values():
                    info["grpcOptions"] = {**_GRPC_OPTIONS, **(info.get("grpcOptions") or {})}
            path = Path(tmp) / "profile.json"
            path.write_text(json.dumps(raw))
            return Client(net_profile=str(path))

    def _user(self) -> Any:
        """The identity as an hfc ``User`` whose state store is memory (module docstring, "Keys")."""
        org = self.profile.raw["organizations"][self.profile.user_org]
        paths = org["users"][self.user_name]
        try:
            return create_user(self.user_name, self.profile.user_org, _MemoryStore(), org.get("mspid") or
                               self.profile.user_org, paths["private_key"], paths["cert"])
        except (OSError, KeyError, ValueError) as exc:
            raise CodecError(f"Fabric identity {self.user_name!r} of {self.profile.user_org}: cannot load its key "
                             f"and certificate: {exc}") from exc

    async def close(self) -> None:
        """Stop the commit watcher and close every gRPC channel."""
        if self._watcher is not None:
            await self._watcher.close()
            self._watcher = None
        s, self._session = self._session, None
        if s is not None and s.loop is asyncio.get_running_loop():
            try:
                await s.client.close_grpc_channels()
            except Exception as exc:  # closing is best effort: a channel already broken may refuse
                log.debug("%s: closing hfc channels: %s", self.chain_id, exc)

    # -- proposals -----------------------------------------------------------------------------------

    async def propose(self, fcn: str, args: Sequence[str | bytes], peers: Sequence[str], *,
                      chaincode: str | None = None, invoke: bool = False,
                      transient: Mapping[str, bytes] | None = None) -> tuple[Any, Any, Any, list[Any]]:
        """Send one signed proposal of ``chaincode.fcn(args)`` to ``peers``; ``(tx context, proposal, header,
        answers)`` with each peer's ``ProposalResponse`` or the exception its call raised (a deadline of
        :attr:`timeout_s` each). ``transient``: the proposal's transient map (the endorsers see it, the transaction
        does not record it: private data inputs)."""
        s = await self.session()
        req = create_tx_prop_req(prop_type=CC_INVOKE if invoke else CC_QUERY, fcn=fcn,
                                 cc_name=chaincode or self.chaincode, cc_type=CC_TYPE_GOLANG, args=list(args),
                                 transient_map=dict(transient) if transient else None)
        ctx = create_tx_context(s.user, s.user.cryptoSuite, req)
        targets = [s.client.get_peer(p) for p in peers]
        futures, proposal, header = s.channel.send_tx_proposal(ctx, targets)
        answers = await asyncio.gather(*(asyncio.wait_for(f, self.timeout_s) for f in futures),
                                       return_exceptions=True)
        for a in answers:
            if isinstance(a, asyncio.CancelledError):
                raise a
        return ctx, proposal, header, list(answers)

    def _outcomes(self, peers: Sequence[str], answers: Sequence[Any], what: str) -> list[Endorsed | Refused]:
        out: list[Endorsed | Refused] = []
        for peer, a in zip(peers, answers, strict=True):
            if isinstance(a, BaseException):
                raise rpc_failure(a, side=self.chain_id, what=f"{what} on {peer}") from a
            org = self.org_of.get(peer, peer)
            if a.response.status == _STATUS_SUCCESS:
                out.append(Endorsed(org, bytes(a.payload)))
            else:
                out.append(Refused(org, int(a.response.status), str(a.response.message)))
        return out

    async def endorse(self, fcn: str, args: Sequence[str | bytes],
                      transient: Mapping[str, bytes] | None = None) -> Endorsement:
        """A transaction proposal endorsed alike by one peer of every policy organisation, or the typed error of
        the endorsements (:func:`~adapters.fabric.errors.classify_endorsements`)."""
        peers = self.endorsers()
        ctx, proposal, header, answers = await self.propose(fcn, args, peers, invoke=True, transient=transient)
        payload = classify_endorsements(self._outcomes(peers, answers, f"endorsing {fcn}"), side=self.chain_id)
        return Endorsement(ctx.tx_id, payload, bytes(answers[0].response.payload), tuple(answers), proposal, header)

    async def answer(self, fcn: str, args: Sequence[str | bytes], *, chaincode: str | None = None,
                     peers: Sequence[str] | None = None,
                     transient: Mapping[str, bytes] | None = None) -> tuple[str, Any]:
        """``(peer, ProposalResponse)`` of a read-only call from the first of ``peers`` (default :attr:`read_peers`)
        that can be reached, whatever it answered; :class:`~protocol.errors.TransportError` if none can."""
        last: ParkRelayError | None = None
        for peer in peers or self.read_peers:
            _, _, _, (a,) = await self.propose(fcn, args, [peer], chaincode=chaincode, transient=transient)
            if not isinstance(a, BaseException):
                return peer, a
            last = rpc_failure(a, side=self.chain_id, what=f"{fcn} on {peer}")
            if not (isinstance(last, TransportError) and last.retryable):
                raise last from a
        assert last is not None
        raise last

    async def query(self, fcn: str, args: Sequence[str | bytes], *, chaincode: str | None = None,
                    peers: Sequence[str] | None = None, transient: Mapping[str, bytes] | None = None) -> bytes:
        """The response payload of a read-only call on the first of ``peers`` (default :attr:`read_peers`) that
        answers; a chaincode refusal raises its typed error; a peer that cannot be reached, or fails outside the
        chaincode, passes to the next."""
        last: ParkRelayError | None = None
        for peer in peers or self.read_peers:
            try:
                _, a = await self.answer(fcn, args, chaincode=chaincode, peers=[peer], transient=transient)
            except TransportError as exc:
                if not exc.retryable:
                    raise
                last = exc
                continue
            if a.response.status == _STATUS_SUCCESS:
                return bytes(a.response.payload)
            err = peer_failure(Refused(self.org_of.get(peer, peer), int(a.response.status),
                                       str(a.response.message)), side=self.chain_id)
            if isinstance(err, TransportError) and err.retryable:
                last = err
                continue
            raise err
        assert last is not None
        raise last

    async def signed_responses(self, fcn: str, args: Sequence[str | bytes],
                               peers: Sequence[str]) -> list[Any]:
        """Each peer's signed ``ProposalResponse`` to one read-only proposal (the same signed proposal to all): for
        attestations. A peer that cannot be reached or does not answer 200 raises."""
        _, _, _, answers = await self.propose(fcn, args, peers)
        for o in self._outcomes(peers, answers, fcn):
            if isinstance(o, Refused):
                raise peer_failure(o, side=self.chain_id)
        return answers

    # -- the query system chaincode --------------------------------------------------------------------

    async def qscc(self, fcn: str, args: Sequence[str], peers: Sequence[str] | None = None) -> bytes:
        """``qscc.fcn(channel, *args)``'s payload from the first peer that answers."""
        return await self.query(fcn, [self.channel_name, *args], chaincode="qscc", peers=peers)

    async def chain_height(self, peers: Sequence[str] | None = None) -> int:
        """The channel's height (blocks held, so the newest is ``height - 1``) on the first read peer that answers."""
        info = ledger_pb2.BlockchainInfo()
        try:
            info.ParseFromString(await self.qscc("GetChainInfo", [], peers))
        except Exception as exc:
            if isinstance(exc, ParkRelayError):
                raise
            raise TransportError(f"GetChainInfo: undecodable answer: {exc}", retryable=True,
                                 side=self.chain_id) from exc
        return int(info.height)

    async def block_bytes(self, number: int, peers: Sequence[str] | None = None) -> bytes:
        """Block ``number`` as a peer committed it (``common.Block`` bytes, its validation flags included)."""
        return await self.qscc("GetBlockByNumber", [str(number)], peers)

    async def block_of_tx(self, tx_id: str) -> bytes | None:
        """The block holding transaction ``tx_id``, or None if the first reachable read peer does not know it."""
        peer, a = await self.answer("GetBlockByTxID", [self.channel_name, tx_id], chaincode="qscc")
        if a.response.status == _STATUS_SUCCESS:
            return bytes(a.response.payload)
        if "no such transaction id" in str(a.response.message).lower():
            return None
        raise peer_failure(Refused(self.org_of.get(peer, peer), int(a.response.status), str(a.response.message)),
                           side=self.chain_id)

    # -- ordering ------------------------------------------------------------------------------------------

    async def broadcast(self, e: Endorsement) -> str:
        """Order ``e``: the signed envelope to the orderers in turn until one accepts it (``SUCCESS``). Returns the
        orderer's name; :class:`~protocol.errors.TransportError` if none accepts —
        :class:`~adapters.fabric.errors.OrderingUnknownError` if one did not answer in time (it may have it)."""
        s = await self.session()
        req = build_tx_req((list(e.responses), tx_proposal(e.proposal), e.header))
        signer = create_tx_context(s.user, s.user.cryptoSuite, req)
        envelope = sign_tran_payload(signer, create_tx_payload([r.endorsement for r in e.responses], req))
        names = self.profile.orderers
        errors: list[str] = []
        retryable = True
        unknown = False
        for k in range(len(names)):
            name = names[(self._orderer_turn + k) % len(names)]
            orderer = s.client.get_orderer(name)
            try:
                status, info = await self._broadcast_one(orderer, envelope, self.timeout_s)
            except Exception as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                err = rpc_failure(exc, side=self.chain_id, what=f"broadcast to {name}")
                errors.append(str(err))
                unknown = unknown or isinstance(exc, TimeoutError)  # it may have the envelope all the same
                continue
            if status == _STATUS_SUCCESS:
                self._orderer_turn = (self._orderer_turn + k) % len(names)
                return name
            errors.append(f"{name}: status {status} {info}")
            if status != _STATUS_SERVICE_UNAVAILABLE and status < 500:
                retryable = False  # BAD_REQUEST, FORBIDDEN...: every orderer will say the same
        self._orderer_turn += 1
        message = f"no orderer accepted transaction {e.tx_id}: " + "; ".join(errors)
        if unknown:
            raise OrderingUnknownError(message + " (it may still be ordered)", tx_id=e.tx_id, side=self.chain_id)
        raise TransportError(message, retryable=retryable, side=self.chain_id)

    @staticmethod
    async def _broadcast_one(orderer: Any, envelope: Any, timeout_s: float) -> tuple[int, str]:
        """The orderer's answer to one envelope: ``(status, info)``. On a deadline the gRPC call is cancelled before
        the wait for it is (aiogrpc reads a stream on a thread, and a read abandoned mid-way is logged as an
        error by the event loop)."""
        stream = orderer.broadcast(envelope)
        first: asyncio.Future[Any] = asyncio.ensure_future(stream.__anext__())
        try:
            done, _ = await asyncio.wait({first}, timeout=timeout_s)
            if not done:
                stream.cancel()
                await asyncio.wait({first}, timeout=1.0)
                raise TimeoutError(f"no answer within {timeout_s:.0f}s")
            try:
                resp = first.result()
            except StopAsyncIteration:
                return 0, "the orderer closed the stream without an answer"
            return int(resp.status), str(resp.info)
        finally:
            if first.done() and not first.cancelled():
                first.exception()  # retrieved: an abandoned read's error is not "never retrieved"
            await stream.aclose()

    # -- commits -------------------------------------------------------------------------------------------

    async def watcher(self) -> CommitWatcher:
        """The commit watcher of this gateway (started on first use, following every endorsing peer)."""
        await self.session()
        if self._watcher is None:
            self._watcher = CommitWatcher(self, self.endorsers())
        await self._watcher.start()
        return self._watcher

    async def deliver_filtered(self, peer: str, start: int) -> Any:
        """A filtered Deliver stream of ``peer`` from block ``start`` on, never ending (module docstring)."""
        s = await self.session()
        seek = ab_pb2.SeekInfo()
        seek.start.specified.number = start
        seek.stop.specified.number = _SEEK_MAX
        seek.behavior = ab_pb2.SeekInfo.SeekBehavior.Value("BLOCK_UNTIL_READY")
        ctx = TXContext(s.user, s.user.cryptoSuite, TXProposalRequest())
        ch = build_channel_header(common_pb2.HeaderType.Value("DELIVER_SEEK_INFO"), ctx.tx_id, self.channel_name,
                                  current_timestamp(), ctx.epoch)
        payload = create_seek_payload(build_header(ctx.identity, ch, ctx.nonce), seek)
        envelope = create_envelope(ctx.sign(payload), payload)
        stub = s.client.get_peer(peer)._event_client  # hfc Peer's Deliver stub (module docstring)
        return stub.DeliverFiltered(stream_envelope(envelope), standalone_pool=True)


@dataclass
class _Waiter:
    future: asyncio.Future[TxStatus]
    all_peers: bool


@dataclass
class _PeerStream:
    peer: str
    next_block: int | None = None
    task: asyncio.Task[None] | None = None
    stream: Any = None
    connected: bool = False
    failures: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class CommitWatcher:
    """Validation codes of committed transactions as events: one filtered Deliver stream per followed peer, from
    the peer's height when the watcher started, resumed after the last block seen when the stream breaks.

    :meth:`wait` resolves when one followed peer (or, with ``all_peers``, every followed peer) has committed the
    transaction; what has been seen is remembered (the newest :data:`SEEN_KEPT` transactions), so a wait that
    starts after the commit resolves at once."""

    SEEN_KEPT = 65_536

    def __init__(self, gateway: FabricGateway, peers: Iterable[str]) -> None:
        self.gateway = gateway
        self.streams = {p: _PeerStream(p) for p in peers}
        self._seen: collections.OrderedDict[str, dict[str, TxStatus]] = collections.OrderedDict()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._closed = False
        self._started = False

    async def start(self) -> None:
        """Start every stream (each from its peer's current height) and wait until each is positioned or has failed
        once: a transaction broadcast after this returns is in a block every running stream will deliver."""
        if self._started:
            return
        self._started = True
        for st in self.streams.values():
            st.task = asyncio.get_running_loop().create_task(self._follow(st), name=f"fabric-watch-{st.peer}")
        await asyncio.gather(*(st.ready.wait() for st in self.streams.values()))

    async def close(self) -> None:
        """Stop the streams and fail the waiters."""
        self._closed = True
        tasks = [st.task for st in self.streams.values() if st.task is not None]
        for st in self.streams.values():
            if st.stream is not None:
                # cancel the gRPC call, not the task: the stream's thread then ends with CANCELLED, which aiogrpc
                # expects (a task cancelled mid-read leaves aiogrpc a cancelled future it logs as an error)
                st.stream.cancel()
        _, pending = await asyncio.wait(tasks, timeout=2.0) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiters in self._waiters.values():
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(TransportError("the commit watcher was closed", retryable=True,
                                                          side=self.gateway.chain_id))
        self._waiters.clear()

    def seen(self, tx_id: str) -> dict[str, TxStatus]:
        """Peer -> status of ``tx_id`` as far as the streams have delivered it."""
        return dict(self._seen.get(tx_id, {}))

    def record(self, status: TxStatus) -> None:
        """Note that ``status.peer`` committed ``status.tx_id`` (also used by a fallback lookup)."""
        per_peer = self._seen.setdefault(status.tx_id, {})
        if status.peer in per_peer:
            return  # a duplicate tx id in a later block is invalid: the first sighting is its fate
        per_peer[status.peer] = status
        self._seen.move_to_end(status.tx_id)
        while len(self._seen) > self.SEEN_KEPT:
            self._seen.popitem(last=False)
        waiters = self._waiters.get(status.tx_id)
        if not waiters:
            return
        keep = []
        for w in waiters:
            if w.future.done():
                continue
            if not w.all_peers or set(self.streams) <= set(per_peer):
                w.future.set_result(status)
            else:
                keep.append(w)
        if keep:
            self._waiters[status.tx_id] = keep
        else:
            del self._waiters[status.tx_id]

    async def wait(self, tx_id: str, timeout_s: float, *, all_peers: bool = False) -> TxStatus:
        """The status of ``tx_id`` once committed on one followed peer (every one with ``all_peers``);
        :class:`TimeoutError` after ``timeout_s``."""
        per_peer = self._seen.get(tx_id, {})
        if per_peer and (not all_peers or set(self.streams) <= set(per_peer)):
            return next(iter(per_peer.values()))
        fut: asyncio.Future[TxStatus] = asyncio.get_running_loop().create_future()
        w = _Waiter(fut, all_peers)
        self._waiters.setdefault(tx_id, []).append(w)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        finally:
            ws = self._waiters.get(tx_id)
            if ws is not None and w in ws:
                ws.remove(w)
                if not ws:
                    del self._waiters[tx_id]

    async def _follow(self, st: _PeerStream) -> None:
        backoff = 0.1
        while not self._closed:
            stream = None
            try:
                if st.next_block is None:
                    st.next_block = await self.gateway.chain_height([st.peer])
                stream = st.stream = await self.gateway.deliver_filtered(st.peer, st.next_block)
                if self._closed:
                    break
                st.ready.set()
                async for resp in stream:
                    kind = resp.WhichOneof("Type")
                    if kind == "filtered_block":
                        fb = resp.filtered_block
                        n = int(fb.number)
                        for ft in fb.filtered_transactions:
                            self.record(TxStatus(ft.txid, int(ft.tx_validation_code), n, st.peer))
                        st.next_block = n + 1
                        st.connected, st.failures, backoff = True, 0, 0.1
                    elif kind == "status":
                        raise TransportError(f"deliver from {st.peer} ended with status {resp.status}",
                                             retryable=True, side=self.gateway.chain_id)
                raise TransportError(f"deliver from {st.peer} ended", retryable=True, side=self.gateway.chain_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    break
                st.ready.set()  # a peer that is down does not hold up the others
                st.connected = False
                st.failures += 1
                err = exc if isinstance(exc, ParkRelayError) else rpc_failure(
                    exc, side=self.gateway.chain_id, what=f"deliver from {st.peer}")
                level = logging.INFO if st.failures == 1 else logging.DEBUG
                log.log(level, "%s: commit watcher: %s (reconnecting from block %s)", self.gateway.chain_id, err,
                        st.next_block)
                await asyncio.sleep(backoff)  # a peer coming back announces nothing: try again after a while
                backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF_MS / 1000)
            finally:
                st.stream = None
                if stream is not None:
                    try:
                        await stream.aclose()
                    except Exception as exc:  # closing a broken stream may fail again: nothing to keep from it
                        log.debug("%s: closing the deliver stream of %s: %s", self.gateway.chain_id, st.peer, exc)


def nonce() -> bytes:
    """A fresh attestation nonce (16 random bytes)."""
    return secrets.token_bytes(16)


def now_ms() -> int:
    """Wall-clock ms (the adapter's own clock: only for local deadlines and logs)."""
    return time.time_ns() // 1_000_000
