"""A relay-chain validator as a process: ``parkrelay node relay --config FILE --validator NAME``.

The relay chain reuses the park node runtime (:mod:`chains.common.node`: blocks and state in SQLite,
mempool, JSON-RPC/WebSocket, block sync) with two differences:

* **Blocks are decided by BFT consensus** (:mod:`relay.chain.consensus`, Tendermint-style) instead of a
  producer schedule. The consensus core is pure; :class:`BftDriver` here feeds it messages from peers
  (``POST /p2p/consensus``) and timeouts from the event loop, persists its signing record before
  anything it signed leaves the process, and adds each decided block with its commit.
* **Every stored block carries its commit** (> 2/3 of the validators' signatures), so a block fetched
  from any peer is verified by its signatures alone and every height is final at once. A lagging
  validator pulls blocks with commits from its peers and jumps its consensus ahead.

Its application is the relay state machine (:mod:`relay.chain.state_machine`); its RPC adds ``getCommit``
and ``getCertificate`` (a relay certificate: commit plus a state proof, what park bridges check).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web

from chains.common import jsonrpc as rpc
from chains.common import wire
from chains.common.jsonrpc import RateBuckets
from chains.common.node import (
    JSON_HEADERS,
    MAX_BLOCK_BYTES,
    MAX_BLOCK_TXS,
    BlockEntry,
    ChainRules,
    NodeConfig,
    NotFoundError,
    ParkNode,
    p2p_refusal,
    tx_root,
)
from chains.common.state import ChainState, canonical_json
from chains.common.tx import ACCOUNT_RE, BlockContext, Tx, account_path
from protocol.certificate import RelayCertificate, RelayCommit, RelayHeader, ValidatorSet, verify_commit
from protocol.errors import (
    AccountRateLimitedError,
    CodecError,
    HeaderError,
    ProtocolError,
    ValidatorSetMismatchError,
)
from protocol.types import ChainId
from relay.chain.consensus import (
    Broadcast,
    ConsensusConfig,
    ConsensusCore,
    Decided,
    EvidenceFound,
    MessageRejected,
    Output,
    PersistSignState,
    ScheduleTimeout,
    SignState,
    Timeout,
    TimeoutConfig,
    TimeoutKind,
    ValidatorKey,
    decode_message,
    encode_message,
)
from relay.chain.consensus.messages import Evidence
from relay.chain.state_machine import RELAY_MAX_TX_BYTES, RelayStateMachine, relay_tx_from_json
from relay.chain.state_machine.clients import MAX_HOLDS_QUERY
from relay.chain.state_machine.evidence import (
    EVIDENCE_SUBMIT,
    check_distinct_validators,
    evidence_args,
    validator_history,
    validator_set_by_hash,
)
from relay.chain.state_machine.governance import load_validator_set

log = logging.getLogger("parkrelay.relay")

MAX_CLOCK_DRIFT_MS = 2000
VALIDATED_KEPT = 8
"""Proposals of the current height a validator keeps executed (rounds may see several) until one is decided."""
RESEND_MAX_S = 5.0
"""Longest pause between two re-sends of a stalled height's consensus messages (the first comes after the
propose timeout, then each pause doubles)."""
COMMIT_WAIT_MIN_MS = 200
"""Shortest pause between deciding a height and starting the next: late precommits still arrive in it. The pause is
what is left of ``commit_ms`` since the height started (:meth:`BftDriver._commit_wait_ms`), so ``commit_ms`` is the
block interval while blocks decide faster than it, and a block that took longer is followed after this."""
BLOCK_MAX_BYTES_BOUNDS = (RELAY_MAX_TX_BYTES, 8 * 1024 * 1024)
"""Bounds of relay genesis ``block.max_bytes``: at least one transaction of the largest size fits a block; at most
8 MiB, whose proposal (hex in JSON) stays a 17 MiB body between validators."""


RELAY_STATE_RETENTION = 32
"""Relay blocks below the head whose states a validator keeps in memory. A relay state is proven at the newest height
(relayers take certificates there; the attestor and the operator read the head), so 32 s of 1 s blocks is ample.
Each kept state holds the tree nodes its block's writes copied: in a 10,000-packet backlog on 3 MiB blocks, the
parks' window of 128 (:data:`~chains.common.node.STATE_RETENTION`) put a validator's peak RSS at 277 MB, 32 at 246 MB
(and 232 MB with :data:`RELAY_BODY_RETENTION`)."""

RELAY_BODY_RETENTION = 4
"""Relay blocks below the head whose bodies a validator keeps in memory: relayers read a new block's events once, at
the head; older bodies are read back from SQLite (a full block's transactions are several MB of objects)."""


def p2p_consensus_spec(body_bytes: int) -> rpc.ParamSpec:
    """The body of ``POST /p2p/consensus``: one encoded consensus message, hex, within a body of ``body_bytes``."""
    return {"msg": rpc.hex_string(required=True, max_bytes=body_bytes // 2)}


P2P_CONSENSUS: rpc.ParamSpec = p2p_consensus_spec(rpc.MAX_BODY_BYTES)
"""The body of ``POST /p2p/consensus`` on a relay of 1 MiB blocks (a node's own: :attr:`RelayNode.p2p_body_bytes`)."""


def parse_block_params(block_cfg: Any) -> tuple[TimeoutConfig, int]:
    """Relay genesis ``block``: the consensus timeouts (:class:`TimeoutConfig` fields, in ms) and ``max_bytes``, the
    most bytes of transactions (canonical JSON) a block may hold (default :data:`MAX_BLOCK_BYTES`, as a genesis
    without it had). Like CometBFT's ``consensus_params.block.max_bytes``: every validator must agree on it, so it is
    genesis, not node configuration. :class:`CodecError` names what is wrong."""
    if block_cfg is None:
        return TimeoutConfig(), MAX_BLOCK_BYTES
    if not isinstance(block_cfg, dict):
        raise CodecError("relay genesis block is a JSON object", got=type(block_cfg).__name__)
    known = {f.name for f in dataclasses.fields(TimeoutConfig)} | {"max_bytes"}
    unknown = sorted(set(block_cfg) - known)
    if unknown:
        raise CodecError("relay genesis block has unknown keys", expected=sorted(known), got=unknown)
    for k, v in block_cfg.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CodecError(f"relay genesis block.{k} is a whole number >= 0", got=v)
    max_bytes = block_cfg.get("max_bytes", MAX_BLOCK_BYTES)
    lo, hi = BLOCK_MAX_BYTES_BOUNDS
    if not lo <= max_bytes <= hi:
        raise CodecError("relay genesis block.max_bytes out of bounds", expected=f"{lo}..{hi}", got=max_bytes)
    return TimeoutConfig(**{k: v for k, v in block_cfg.items() if k != "max_bytes"}), max_bytes


class RelayBlockHeader:
    """What the runtime stores for a relay block: the header and the commit that finalised it.

    The genesis pseudo-header (height 0, no commit) hashes to 32 zero bytes, the ``last_block_hash``
    SPEC §7.1 gives block 1.
    """

    __slots__ = ("_hash", "commit", "header")

    def __init__(self, header: RelayHeader, commit: RelayCommit | None) -> None:
        self.header = header
        self.commit = commit
        self._hash = bytes(32) if commit is None and header.height == 0 else header.hash()

    height = property(lambda self: self.header.height)
    parent_hash = property(lambda self: self.header.last_block_hash)
    timestamp_ms = property(lambda self: self.header.time_ms)
    tx_root = property(lambda self: self.header.data_hash)
    state_root = property(lambda self: self.header.state_root)

    def hash(self) -> bytes:
        return self._hash

    def encode(self) -> bytes:
        return canonical_json({"header": wire.header_to_json(self.header),
                               "commit": wire.commit_to_json(self.commit) if self.commit is not None else None})

    @classmethod
    def decode(cls, raw: bytes) -> RelayBlockHeader:
        try:
            obj = rpc.decode_json(raw)
            header = wire.header_from_json(obj["header"])
            commit = wire.commit_from_json(obj["commit"]) if obj["commit"] is not None else None
        except (ValueError, KeyError, TypeError) as exc:
            raise CodecError(f"malformed relay block header: {exc}") from exc
        if commit is not None and commit.header != header:
            raise CodecError("relay block's commit is for another header")
        return cls(header, commit)


def block_bytes(txs: list[Tx]) -> bytes:
    """The consensus value of a block's body: its transactions as canonical JSON."""
    return canonical_json([t.to_json() for t in txs])


def txs_of(block: bytes) -> list[Tx]:
    try:
        items = rpc.decode_json(block)
    except rpc.ParseError as exc:
        raise CodecError(f"block body is not JSON: {exc.message}") from exc
    if not isinstance(items, list):
        raise CodecError("block body is a JSON array of transactions")
    return [relay_tx_from_json(t) for t in items]


class RelayRules(ChainRules):
    """The relay chain for the node runtime: blocks final by commit, the relay state machine as app."""

    def __init__(self, genesis: dict[str, Any], validator: str | None, key: ValidatorKey | None,
                 client_types: Any = None) -> None:
        if client_types is None:
            from relay.chain.state_machine.park_clients import default_client_types

            client_types = default_client_types()
        self.chain_id = str(genesis["chain_id"])
        self.genesis_time_ms = int(genesis.get("genesis_time_ms", 0))
        self.sm = RelayStateMachine(self.chain_id, client_types)
        self.app = self.sm.app
        state = ChainState()
        self.sm.init_genesis(state, {k: v for k, v in genesis.items() if k not in {"genesis_time_ms", "block"}})
        self.genesis_state = state
        vset = load_validator_set(state)
        self.genesis_hdr = RelayBlockHeader(
            RelayHeader(ChainId(self.chain_id), 0, self.genesis_time_ms, bytes(32), bytes(32), state.root,
                        vset.hash, vset.hash), None)
        self.timeouts, self.max_block_bytes = parse_block_params(genesis.get("block"))
        self.validator = validator
        self.key = key
        self.driver: BftDriver | None = None

    def decode_header(self, raw: bytes) -> RelayBlockHeader:
        return RelayBlockHeader.decode(raw)

    def decode_tx(self, obj: Any) -> Tx:
        return relay_tx_from_json(obj)

    def genesis(self) -> tuple[RelayBlockHeader, ChainState]:
        return self.genesis_hdr, ChainState(self.genesis_state.tree)

    def validator_set(self, entry: BlockEntry) -> ValidatorSet:
        assert entry.state is not None
        return load_validator_set(entry.state)

    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        h: RelayBlockHeader = header
        if h.commit is None:
            raise HeaderError("relay block without a commit", got=h.height)
        vset = self.check_child(h, parent)
        verify_commit(vset, ChainId(self.chain_id), h.commit)

    def check_child(self, h: RelayBlockHeader, parent: BlockEntry) -> ValidatorSet:
        """What links a header to its parent apart from its commit: the signing set is the one the parent left in
        state, and time increases. Returns that set. (The CometBFT engine checks this much at once: a block's
        commit arrives with the next block, :mod:`relay.chain.abci.app`.)"""
        vset = self.validator_set(parent)
        if h.header.validators_hash != vset.hash:
            raise ValidatorSetMismatchError("block signed for another validator set", expected=vset.hash.hex(),
                                            got=h.header.validators_hash.hex())
        if h.timestamp_ms <= parent.header.timestamp_ms:
            raise HeaderError("relay time must increase", expected=f"> {parent.header.timestamp_ms}",
                              got=h.timestamp_ms)
        return vset

    def end_block(self, state: ChainState, header: Any, parent: BlockEntry) -> list[dict[str, Any]]:
        """A header's ``next_validators_hash`` names the set in state after its block (SPEC §7.7): the set
        that signs the next height. A block that jails a validator is the last one its old set signs."""
        h: RelayBlockHeader = header
        if h.height == 0:
            return []
        nxt = load_validator_set(state)
        if h.header.next_validators_hash != nxt.hash:
            raise ValidatorSetMismatchError("header's next validator set is not the one its block leaves in state",
                                            expected=nxt.hash.hex(), got=h.header.next_validators_hash.hex())
        return []

    def context(self, header: Any) -> BlockContext:
        return BlockContext(self.chain_id, header.height, header.timestamp_ms, "")

    def weight(self, header: Any, parent: BlockEntry) -> int:
        return int(header.height)

    def final_height(self, node: ParkNode) -> int:
        return int(node.head.header.height)  # every stored block carries its commit

    def attach(self, node: ParkNode, app: web.Application) -> None:
        self.driver = BftDriver(self, node)
        app.router.add_post("/p2p/consensus", self.driver.handle_message)
        self.register_queries(node)

    def register_queries(self, node: ParkNode) -> None:
        """The relay's RPC methods beside the node runtime's: commits, certificates, validators, clients (the same
        on every engine)."""
        height: rpc.ParamSpec = {"height": rpc.uint()}
        node.method("getCommit", self._rpc_get_commit(node), params=height)
        node.method("getCertificate", self._rpc_get_certificate(node),
                    params={"key": rpc.string(required=True, max_len=1024), **height})
        node.method("getCertificates", self._rpc_get_certificates(node),
                    params={"keys": rpc.string_list(required=True, max_len=wire.MAX_BATCH_RECORDS), **height})
        node.method("getValidators", self._rpc_get_validators(node),
                    params={**height, "hash": rpc.hex_string(max_bytes=32)})
        node.method("getValidatorHistory", self._rpc_get_validator_history(node), params={})
        node.method("getClientStatus", self._rpc_get_client_status(node),
                    params={"chain_id": rpc.string(required=True, max_len=256)})
        node.method("getClientHolds", self._rpc_get_client_holds(node),
                    params={"chain_id": rpc.string(required=True, max_len=256),
                            "headers": rpc.string_list(required=True, max_len=MAX_HOLDS_QUERY)})

    def _rpc_get_commit(self, node: ParkNode) -> Any:
        async def handler(p: dict[str, Any]) -> Any:
            e = node.entry_at(p.get("height"))
            if e.header.commit is None:
                raise NotFoundError("genesis has no commit", got=0)
            return wire.commit_to_json(e.header.commit)
        return handler

    def _rpc_get_certificate(self, node: ParkNode) -> Any:
        async def handler(p: dict[str, Any]) -> Any:
            key: str = p["key"]
            e = node.entry_at(p.get("height"))
            if e.header.commit is None or e.state is None:
                raise NotFoundError("no certificate at that height", got=e.header.height)
            raw = key.encode()
            cert = RelayCertificate(e.header.commit, raw, e.state.get(raw), e.state.prove(raw))
            return wire.certificate_to_json(cert)
        return handler

    def _rpc_get_certificates(self, node: ParkNode) -> Any:
        """Certificates of up to 64 keys in one relay block (default: the head), as one certificate batch (SPEC
        §7.10): ``{commit, records: [{key, value, proof}]}``, a record per key in order. A key longer than 1,024
        characters is refused like ``getCertificate``'s."""
        async def handler(p: dict[str, Any]) -> Any:
            keys: list[str] = p["keys"]
            if not keys:
                raise CodecError("getCertificates takes 1 .. 64 keys", got=0)
            for k in keys:
                if len(k) > 1024:
                    raise CodecError("a key is at most 1024 characters", got=len(k))
            e = node.entry_at(p.get("height"))
            if e.header.commit is None or e.state is None:
                raise NotFoundError("no certificate at that height", got=e.header.height)
            certs = []
            for k in keys:
                raw = k.encode()
                certs.append(RelayCertificate(e.header.commit, raw, e.state.get(raw), e.state.prove(raw)))
            return wire.certificate_batch_to_json(e.header.commit, certs)
        return handler

    def _rpc_get_client_status(self, node: ParkNode) -> Any:
        async def handler(p: dict[str, Any]) -> Any:
            chain: str = p["chain_id"]
            assert node.head.state is not None
            return self.sm.client_status(node.head.state, chain, _now_ms())
        return handler

    def _rpc_get_client_holds(self, node: ParkNode) -> Any:
        async def handler(p: dict[str, Any]) -> Any:
            chain, headers = p["chain_id"], p["headers"]
            try:
                raws = [bytes.fromhex(h) for h in headers]
            except ValueError:
                raise CodecError("headers must be hex strings") from None
            assert node.head.state is not None
            return self.sm.client_holds(node.head.state, chain, raws)
        return handler

    def _rpc_get_validators(self, node: ParkNode) -> Any:
        """The set signing the block after ``height`` (default: the head), or the set with ``hash``."""
        async def handler(p: dict[str, Any]) -> Any:
            if p.get("hash") is not None:
                assert node.head.state is not None
                vs = validator_set_by_hash(node.head.state, bytes.fromhex(p["hash"]))
                if vs is None:
                    raise NotFoundError("no relay validator set with that hash", got=p["hash"])
                return wire.validator_set_to_json(vs)
            return wire.validator_set_to_json(self.validator_set(node.entry_at(p.get("height"))))
        return handler

    def _rpc_get_validator_history(self, node: ParkNode) -> Any:
        """``[{"from_height", "hash"}]``: each set the relay chain used and the first height it signed (SPEC §7.7).
        A set that starts at ``h > 1`` is certified by the commit of height ``h - 1``."""
        async def handler(p: dict[str, Any]) -> Any:
            assert node.head.state is not None
            return validator_history(node.head.state)
        return handler

    async def run_producer(self, node: ParkNode) -> None:
        assert self.driver is not None
        await self.driver.run()


class BftDriver:
    """Runs the pure consensus core inside the node: network, timers, persistence."""

    _height_started: float | None = None
    """Event-loop time this validator entered its current height after a commit pause (None: not yet)."""

    def __init__(self, rules: RelayRules, node: ParkNode) -> None:
        self.rules = rules
        self.node = node
        self.log = logging.LoggerAdapter(log, {"chain": rules.chain_id, "node": node.config.name})
        self.core: ConsensusCore | None = None
        node.write(lambda db: db.execute(
            "CREATE TABLE IF NOT EXISTS sign_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT)"))
        self._timers: set[asyncio.TimerHandle] = set()
        self._validated: dict[bytes, BlockEntry] = {}  # proposals executed by validate_block, by header hash
        self._sending: set[tuple[str, bytes]] = set()
        """(peer, message digest) of the consensus messages on their way to a peer now: not sent there again."""

    # -- ConsensusApp -----------------------------------------------------------------------------

    def make_block(self, height: int, round_: int) -> tuple[bytes, RelayHeader] | None:
        head = self.node.head
        if head.state is None or height != head.header.height + 1:
            # block sync took the node past ``height`` (the core catches up on the next input) or the previous block is
            # not applied yet: no proposal this round, never an exception inside a timer callback
            self.log.info("no proposal for height %d round %d: the node's head is %d", height, round_,
                          head.header.height)
            return None
        ts = max(_now_ms(), head.header.timestamp_ms + 1)
        state = ChainState(head.state.tree)
        built = self.rules.sm.build_block(state, list(self.node.mempool.values()), BlockContext(
            self.rules.chain_id, height, ts, ""), max_txs=MAX_BLOCK_TXS, max_bytes=self.rules.max_block_bytes)
        for tx, exc in built.dropped:
            if exc.code in {"packet.replay", "auth.denied", "signature.invalid", "codec.invalid", "validator.jailed",
                            "evidence.invalid", "evidence.stale"}:
                self.node.mempool.pop(tx.hash(), None)
        vset = self.rules.validator_set(head)
        next_vset = load_validator_set(state)  # another set if the block jails a validator (SPEC §7.7)
        header = RelayHeader(ChainId(self.rules.chain_id), height, ts, head.hash, tx_root(built.included),
                             state.root, vset.hash, next_vset.hash)
        # building executed the block: what _execute would make of it is kept for validate_block (the core asks it of
        # its own proposal too) and _decided, so the proposer runs each block once, not twice (issue 16)
        bh = RelayBlockHeader(header, None)
        self._keep_validated(header, BlockEntry(bh, tuple(built.included), self.rules.weight(bh, head), state,
                                                built.events, built.results))
        return block_bytes(built.included), header

    def _keep_validated(self, header: RelayHeader, entry: BlockEntry) -> None:
        self._validated[header.hash()] = entry
        while len(self._validated) > VALIDATED_KEPT:
            del self._validated[next(iter(self._validated))]

    def validate_block(self, header: RelayHeader, block: bytes) -> bool:
        stored = self.node.blocks.get(header.hash())
        if stored is not None:  # synced with its commit and validated then (catch-up)
            return block_bytes(list(stored.txs)) == block
        built = self._validated.get(header.hash())
        if built is not None:  # this validator's own proposal (make_block executed it), or one validated already
            return block_bytes(list(built.txs)) == block
        head = self.node.head
        if header.height != head.header.height + 1 or header.last_block_hash != head.hash:
            return False
        if len(block) > self.rules.max_block_bytes + MAX_BLOCK_TXS + 2:  # what every honest proposer keeps (make_block)
            return False
        if not head.header.timestamp_ms < header.time_ms <= _now_ms() + MAX_CLOCK_DRIFT_MS:
            return False
        try:
            txs = txs_of(block)
            entry = self.node._execute(RelayBlockHeader(header, None), txs, head)
        except ProtocolError as exc:
            self.log.warning("proposal for height %d refused: %s", header.height, exc)
            return False
        # a charged failure stays in the block (SPEC §6.9: the state moved under a transaction admission let through;
        # every proposer would include it again, so refusing it would stall the height); any other failure is one
        # an honest proposer drops (make_block)
        if any(not r["ok"] and not r["error"].get("charged") for r in entry.tx_results):
            self.log.warning("proposal for height %d holds a failing transaction", header.height)
            return False
        # kept for _decided: the header names the parent, the transactions (tx root) and the state root, so the
        # decided block with this header is this execution; executing it again doubled every validator's work
        self._keep_validated(header, entry)
        return True

    def next_validator_set(self, header: RelayHeader) -> ValidatorSet:
        """The set the decided block ``header`` left in state (its ``next_validators_hash``)."""
        entry = self.node.blocks.get(header.hash())
        if entry is None or entry.state is None:
            entry = self.node.head
        vset = self.rules.validator_set(entry)
        check_distinct_validators(vset)
        return vset

    # -- inputs -----------------------------------------------------------------------------------

    async def run(self) -> None:
        head = self.node.head
        key = self.rules.key
        row = self.node.db.execute("SELECT state FROM sign_state WHERE id = 1").fetchone()
        sign_state = SignState.from_json(row[0]) if row else None
        config = ConsensusConfig(ChainId(self.rules.chain_id), timeouts=self.rules.timeouts)
        self.core = ConsensusCore(config, self, self.rules.validator_set(head), head.header.height + 1, key,
                                  sign_state)
        self._handle(self.core.start())
        try:
            await self._resend_loop(max(0.5, self.rules.timeouts.propose_ms / 1000))
        finally:  # stopped (cancelled): no consensus timer may fire into a driver that no longer runs
            for handle in self._timers:
                handle.cancel()
            self._timers.clear()

    async def _resend_loop(self, resend_s: float) -> None:
        """A height that makes no progress for ``resend_s`` re-sends what peers may have missed (a peer that was down
        or not yet listening); the paper assumes eventual delivery and this provides it. The pause doubles while the
        height stays (up to :data:`RESEND_MAX_S`) and is ``resend_s`` again once it moves: a re-send is every
        proposal of the height (a block of up to ``max_bytes`` each), and sending them every second to peers too
        busy to read them kept those peers busy for good (a devnet's relay chain stalled at one height for minutes
        under load, every validator encoding and decoding the same megabytes; see also :meth:`_broadcast`)."""
        pause_s = resend_s
        while True:
            height = self.node.head.header.height
            await self.node.wait_for_head(pause_s)
            self._catch_up()
            if self.node.head.header.height == height and self.core is not None:
                for msg in self.core.gossip():
                    self.node._spawn(self._broadcast(encode_message(msg)))
                pause_s = min(2 * pause_s, max(resend_s, RESEND_MAX_S))
            else:
                pause_s = resend_s

    def _catch_up(self) -> None:
        """Blocks that arrived by sync (with their commits) move the core to the node's head at once, before the core
        handles any message or timeout: it never works on a height the node has already passed."""
        core = self.core
        if core is None or core.height > self.node.head.header.height:
            return

        def commit_at(height: int) -> tuple[bytes, RelayCommit] | None:
            e = self.node.canonical(height)
            if e is None or e.header.commit is None:
                return None
            return block_bytes(list(e.txs)), e.header.commit

        try:
            self._handle(core.catch_up(self.node.head.header.height, commit_at))
        except ProtocolError as exc:
            self.log.warning("catch-up to height %d refused at height %d: %s", self.node.head.header.height,
                             core.height, exc)

    async def handle_message(self, request: web.Request) -> web.Response:
        try:
            body = await self.node._p2p_body(request, p2p_consensus_spec(self.node.p2p_body_bytes))
            try:
                msg = decode_message(bytes.fromhex(body["msg"]))
            except (ValueError, KeyError, TypeError) as exc:  # a decoder that broke its CodecError contract
                raise CodecError(f"malformed consensus message: {exc}") from exc
        except ProtocolError as exc:
            status, answer = p2p_refusal(exc)
            return web.json_response(answer, status=status, dumps=rpc.dumps)
        if self.core is None:
            return web.json_response({"ok": False, "error": rpc.error_object(rpc.SERVER_ERROR, "not started")})
        try:
            self._catch_up()
            self._handle(self.core.on_message(msg))
        except ProtocolError as exc:  # a well-formed message consensus refuses: HTTP 200
            return web.json_response(p2p_refusal(exc)[1])
        return web.json_response({"ok": True})

    def _on_timeout(self, t: Timeout, handle: list[asyncio.TimerHandle]) -> None:
        self._timers.discard(handle[0])  # fired: the set holds only pending timers
        if t.kind is TimeoutKind.COMMIT:
            self._height_started = asyncio.get_running_loop().time()
        if self.core is not None:
            self._catch_up()
            self._handle(self.core.on_timeout(t))

    # -- outputs ----------------------------------------------------------------------------------

    def _handle(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, PersistSignState):
                # durable before anything signed under it leaves the process: one transaction on a connection with
                # synchronous=FULL (written whole or not at all). If it cannot be stored (a full disk, an I/O error)
                # the node stops and the exception skips the rest of these outputs: what was signed under the record
                # is never sent, so a restart from the older record cannot double-sign.
                record = out.state.to_json()
                self.node.write(lambda db, r=record: db.execute("INSERT OR REPLACE INTO sign_state VALUES (1, ?)",
                                                                (r,)))
            elif isinstance(out, Broadcast):
                self.node._spawn(self._broadcast(encode_message(out.message)))
            elif isinstance(out, ScheduleTimeout):
                loop = asyncio.get_running_loop()
                duration_ms = out.duration_ms
                if out.timeout.kind is TimeoutKind.COMMIT:
                    duration_ms = self._commit_wait_ms(duration_ms, loop.time())
                cell: list[asyncio.TimerHandle] = []
                cell.append(loop.call_later(duration_ms / 1000, self._on_timeout, out.timeout, cell))
                self._timers.add(cell[0])
            elif isinstance(out, Decided):
                self._decided(out)
            elif isinstance(out, EvidenceFound):
                self.log.warning("validator equivocation detected: %s", out.evidence)
                self.node._spawn(self.submit_evidence(out.evidence))
            elif isinstance(out, MessageRejected):
                self.log.info("buffered consensus message rejected: %s", out.error)

    def _commit_wait_ms(self, commit_ms: int, now: float) -> int:
        """The pause after deciding a height: what is left of ``commit_ms`` since the height started, at least
        :data:`COMMIT_WAIT_MIN_MS`. Blocks then start every ``commit_ms`` however long each took to decide, up to that
        time; a full block that took a second to decide used to be followed by another whole ``commit_ms``, halving
        the relay chain's throughput exactly when it had the most to do. The whole ``commit_ms`` before this
        validator first entered a height by a commit pause (after a start); after a catch-up by block sync the height
        it last entered that way still counts, so the pause is the floor."""
        started = self._height_started
        if started is None:
            return commit_ms
        left = commit_ms - int((now - started) * 1000)
        return max(min(COMMIT_WAIT_MIN_MS, commit_ms), min(left, commit_ms))

    async def submit_evidence(self, ev: Evidence) -> bytes | None:
        """Put ``evidence.submit`` for ``ev`` in this node's mempool and gossip it (SPEC §7.7). A refusal (already
        punished, jailed, stale) is logged: another node's report may have landed first."""
        sender = self.node.config.name.lower() if ACCOUNT_RE.match(self.node.config.name.lower()) else "relay-node"
        tx = Tx(self.rules.chain_id, sender, 0, EVIDENCE_SUBMIT, evidence_args(ev), b"")
        try:
            async with self.node._lock:
                h = self.node.submit_tx(tx)
        except ProtocolError as exc:
            self.log.info("equivocation evidence not submitted: %s", exc)
            return None
        self.log.warning("equivocation evidence submitted as transaction %s", h.hex())
        await self.node._gossip("/p2p/tx", {"tx": tx.to_json()})
        return h

    def _decided(self, d: Decided) -> None:
        txs = txs_of(d.block)
        header = RelayBlockHeader(d.commit.header, d.commit)
        if header.hash() in self.node.blocks:
            return
        executed = self._validated.pop(d.commit.header.hash(), None)
        self._validated.clear()  # older heights' proposals are never decided now
        try:
            entry = self.node.validate_and_add(header, txs, _now_ms(), executed=executed)
        except ProtocolError as exc:  # a decided block we cannot apply: the node cannot go on safely
            self.log.error("decided block %d does not apply: %s", d.height, exc)
            self.node.failed.set()
            return
        self.log.debug("height %d decided with %d txs", d.height, len(txs))
        self.node._spawn(self.node._gossip_block(entry.header, entry.txs))

    async def _broadcast(self, raw: bytes) -> None:
        """Post consensus message ``raw`` to every peer, the body encoded once (hex needs no JSON escaping). A peer
        still receiving the same message from this node is skipped: re-sends of a stalled height must not pile up
        behind a peer too busy to read them."""
        session = self.node._session
        if session is None:
            return
        digest = hashlib.sha256(raw).digest()
        data = b'{"msg":"' + raw.hex().encode("ascii") + b'"}'

        async def one(peer: str) -> None:
            key = (peer, digest)
            if key in self._sending:
                return
            self._sending.add(key)
            try:
                async with session.post(peer + "/p2p/consensus", data=data, headers=JSON_HEADERS,
                                        timeout=aiohttp.ClientTimeout(total=2)) as r:
                    await r.read()
            except (aiohttp.ClientError, TimeoutError):
                pass  # a peer that misses a message catches up through later rounds or block sync
            finally:
                self._sending.discard(key)

        await asyncio.gather(*(one(p) for p in self.node.peers))


def _now_ms() -> int:
    return int(time.time() * 1000)


class RelayNode(ParkNode):
    """The park node runtime with the relay's mempool rule for evidence: an ``evidence.submit`` has no account and
    no nonce run to follow, so it stays in the mempool (until a block includes it or the head state refuses it:
    punished already, jailed, stale) instead of being pruned as a transaction of an unknown sender."""

    def __init__(self, rules: RelayRules, config: NodeConfig) -> None:
        super().__init__(rules, config)
        # a proposal carries its block hex-encoded (twice its bytes), and a decided block's gossip carries it as JSON
        self.p2p_body_bytes = max(rpc.MAX_BODY_BYTES, 2 * rules.max_block_bytes + 1024 * 1024)
        self.state_retention = RELAY_STATE_RETENTION
        self.body_retention = RELAY_BODY_RETENTION
        limits = config.limits
        self._account_buckets = RateBuckets(limits.relay_account_txs_per_s, limits.relay_account_burst)
        """One token bucket per bonded relay account (``[limits] relay_account_txs_per_s``)."""

    def submit_tx(self, tx: Tx) -> bytes:
        """Admission with the rate of a bonded account (``[limits] relay_account_txs_per_s``, governance grants
        unbounded): an empty bucket refuses at once (``mempool.account_rate``), before any work; a token is paid only
        once admission took the transaction, whose signature then proved its sender."""
        bounded = tx.hash() not in self.mempool and self.account_rate_bounded(tx.sender)
        if bounded:
            self.check_account_rate(tx.sender)
        h = super().submit_tx(tx)
        if bounded:
            self._account_buckets.take(tx.sender, time.monotonic())
        return h

    def _nonce_taken(self, tx: Tx, queued: Sequence[Tx]) -> Tx | None:
        """As the parks', but for ``evidence.submit``: self-authenticating, always nonce 0 (SPEC §7.7), so several
        reports a node names after itself wait side by side."""
        if tx.op == EVIDENCE_SUBMIT:
            return None
        return super()._nonce_taken(tx, queued)

    def account_rate_bounded(self, sender: str) -> bool:
        """Whether admission bounds ``sender``'s rate: a registered relay account but a governance grant (SPEC
        §6.9). An unknown name is not (its ``account.register`` is bounded by its bond's funds)."""
        state = self.head.state
        acct = state.get_json(account_path(sender)) if state is not None else None
        return acct is not None and acct.get("status", "granted") != "granted"

    def check_account_rate(self, sender: str) -> None:
        """``mempool.account_rate`` if ``sender``'s bucket is empty (nothing paid)."""
        if self._account_buckets.has(sender, time.monotonic()):
            return
        limits = self.config.limits
        raise AccountRateLimitedError(
            f"relay account {sender[:64]!r} is admitted at most {limits.relay_account_txs_per_s:g} transactions/s "
            f"(limits.relay_account_txs_per_s, limits.relay_account_burst = {limits.relay_account_burst})",
            expected=f"<= {limits.relay_account_txs_per_s:g}/s", got="an empty bucket")

    def pay_account_rate(self, sender: str) -> None:
        """Pay one token of ``sender``'s bucket: a transaction of its was admitted."""
        self._account_buckets.take(sender, time.monotonic())

    def _prune_mempool(self) -> None:
        evidence = {h: tx for h, tx in self.mempool.items() if tx.op == EVIDENCE_SUBMIT}
        super()._prune_mempool()
        if not evidence or self.head.state is None:
            return
        rules: RelayRules = self.rules  # type: ignore[assignment]
        for h, tx in evidence.items():
            try:
                rules.app.check_tx(self.head.state, tx)
            except ProtocolError:
                self.mempool.pop(h, None)
                continue
            self.mempool[h] = tx


def make_relay_node(genesis: dict[str, Any], name: str, key: ValidatorKey | None, node_cfg: NodeConfig) -> ParkNode:
    return RelayNode(RelayRules(genesis, name, key), node_cfg)


__all__ = ["BftDriver", "RelayBlockHeader", "RelayNode", "RelayRules", "make_relay_node"]
