"""The relay state machine as an ABCI 2.0 application of CometBFT v0.38 (issue 17; SPEC.md §7.11).

The same rules, blocks, state tree, SQLite store and certificates as the built-in engine (:mod:`relay.chain.node`):
:class:`RelayAbciApp` holds a :class:`~relay.chain.node.RelayNode` (the park node runtime, never started as a
server here) under :class:`CometRelayRules`, and CometBFT decides the blocks instead of
:class:`~relay.chain.node.BftDriver`. What one block does maps onto the ABCI calls as follows:

============================  ========================================================================================
ABCI call                     what it does (the built-in engine's counterpart)
============================  ========================================================================================
InitChain                     the relay genesis (the built-in engine's genesis JSON); answers the CometBFT validator
                              set (:class:`ConsensusKeys`) and turns vote extensions on from height 1
CheckTx (new and recheck)     admission: ``check_admission`` then execution on a scratch *check state* that carries
                              the admitted transactions (``ParkNode._check_pending``); reset at every Commit
PrepareProposal(H)            ``BftDriver.make_block``: the mempool's transactions, failing and redundant ones dropped,
                              within ``MAX_BLOCK_TXS`` / genesis ``block.max_bytes``; FIRST the *commit item*: the
                              RelayCommit of height H-1 assembled from the vote extensions of H-1's precommits
ProcessProposal(H)            ``BftDriver.validate_block``: executes the proposal on the parent; refuses a failing or
                              malformed transaction and a missing or bad commit item; the execution is kept
ExtendVote(H)                 the validator's precommit signatures of SPEC §7.1 over the RelayHeader of H
VerifyVoteExtension(H)        checks such signatures from the named validator over this node's RelayHeader of H
FinalizeBlock(H)              ``BftDriver._decided``: takes the kept execution (or runs the block again); answers the
                              per-transaction results and ``app_hash`` = the relay state root after H
Commit                        stores the commit of H-1 with block H-1 and adds block H (SQLite, one row a block)
Info / Query                  the stored head; values with sparse-Merkle proofs; certificates (SPEC §7)
============================  ========================================================================================

**Keys.** Two key sets, each signing its own thing: CometBFT's ed25519 consensus keys (``priv_validator_key.json``)
sign CometBFT's votes; the relay validators' keys (:class:`~relay.chain.consensus.ValidatorKey`, the ones in the
relay :class:`~protocol.certificate.ValidatorSet` in state) sign relay headers, inside vote extensions.
:class:`ConsensusKeys` maps each relay validator's *name* to its CometBFT public key; every validator's app is given
the same map, and InitChain answers CometBFT's validator set from it with the relay powers.

**Certificates lag one block.** The extensions signing header H travel in H's precommits; the proposer of H+1 puts
them in H+1 as its first item; when H+1 is final, the commit of H is stored and the certificate of H (commit + proof
into H's state root, SPEC §7) is served. The round in the commit's sign bytes is always :data:`COMMIT_ROUND` (0):
ExtendVote does not tell the application CometBFT's round.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Final

from chains.common import jsonrpc as rpc
from chains.common import wire
from chains.common.node import MAX_BLOCK_TXS, BlockEntry, NodeConfig, NotFoundError, tx_root
from chains.common.state import ChainState, canonical_json
from chains.common.tx import BlockContext, Tx, account_path, tx_result
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    ValidatorSet,
    commit_sign_bytes,
    verify_commit,
)
from protocol.crypto import ed25519_verify
from protocol.errors import (
    AccountMempoolFullError,
    CodecError,
    HeaderError,
    ProtocolError,
    SignatureError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from protocol.types import ChainId
from relay.chain.abci import types as T
from relay.chain.abci.node import CometRelayNode
from relay.chain.abci.server import Application
from relay.chain.consensus import ValidatorKey, recover_eth_address
from relay.chain.node import RelayBlockHeader, RelayNode, RelayRules
from relay.chain.state_machine import relay_tx_from_json
from relay.chain.state_machine.evidence import validator_set_by_hash
from relay.chain.state_machine.governance import load_validator_set

__all__ = [
    "COMMIT_ITEM_PREFIX",
    "COMMIT_ROUND",
    "REFUSED",
    "CometRelayRules",
    "ConsensusKeys",
    "Executed",
    "RelayAbciApp",
    "commit_from_extensions",
    "decode_commit_item",
    "decode_extension",
    "encode_commit_item",
    "encode_extension",
]

log = logging.getLogger("parkrelay.relay.abci")

COMMIT_ITEM_PREFIX: Final = b"\x00parkrelay/relay-commit/v1\n"
"""How the commit item (the first item of a block after height 1) begins. A relay transaction is canonical JSON,
which never begins with a NUL byte, so no transaction can pass for the commit item nor the item for a
transaction."""
COMMIT_ROUND: Final = 0
"""The round in the sign bytes of every commit assembled from vote extensions (``commit_sign_bytes(header, 0)``)."""
REFUSED: Final = 1
"""The ABCI ``code`` of every refusal (CheckTx, a failed transaction in FinalizeBlock, a Query); which one it was
is the typed error's code in ``codespace`` (``signature.invalid``, ``packet.replay``, …) and the error as JSON in
``log``. Only ``code`` is part of CometBFT's results hash; the rest is for clients."""
EXECUTIONS_KEPT: Final = 8
"""Proposals of the current height whose execution is kept (rounds may see several) until one is finalised."""
_ED25519_SIG: Final = 64
_SECP256K1_SIG: Final = 65


def _now_ms() -> int:
    return int(time.time() * 1000)


def cometbft_address(pubkey: bytes) -> bytes:
    """CometBFT's address of an ed25519 consensus key: the first 20 bytes of its SHA-256."""
    return sha256(pubkey).digest()[:20]


@dataclass(frozen=True, slots=True)
class ConsensusKeys:
    """Which CometBFT consensus key belongs to which relay validator: the one explicit link between the two key
    sets. The same on every validator (it is part of the deployment, like the genesis)."""

    by_name: Mapping[str, bytes]
    """Relay validator name -> its CometBFT ed25519 public key (32 bytes)."""

    def __post_init__(self) -> None:
        for name, key in self.by_name.items():
            if not isinstance(key, bytes) or len(key) != 32:
                raise CodecError("a CometBFT consensus key is a 32-byte ed25519 public key", got=name)
        if len(set(self.by_name.values())) != len(self.by_name):
            raise CodecError("two relay validators share a CometBFT consensus key")

    def name_of(self, address: bytes) -> str | None:
        """The relay validator whose CometBFT key has ``address``, if any."""
        for name, key in self.by_name.items():
            if cometbft_address(key) == address:
                return name
        return None

    def updates(self, vset: ValidatorSet) -> tuple[T.ValidatorUpdate, ...]:
        """CometBFT's validator set for the relay set ``vset``: each validator's consensus key with its relay power.
        Raises :class:`ValidatorSetMismatchError` for a relay validator without a consensus key."""
        out = []
        for v in vset.validators:
            key = self.by_name.get(v.name)
            if key is None:
                raise ValidatorSetMismatchError("relay validator without a CometBFT consensus key",
                                                expected=sorted(self.by_name), got=v.name)
            out.append(T.ValidatorUpdate(T.PublicKey(ed25519=key), v.power))
        return tuple(out)


# -- wire forms ----------------------------------------------------------------------------------------------------


def encode_extension(ed25519_sig: bytes, secp256k1_sig: bytes = b"") -> bytes:
    """A vote extension: the ed25519 signature (64 bytes), then the secp256k1 one (65 bytes) if the validator has an
    Ethereum address: what a :class:`~protocol.certificate.CommitSignature` carries."""
    return ed25519_sig + secp256k1_sig


def decode_extension(ext: bytes) -> tuple[bytes, bytes]:
    """``(ed25519_sig, secp256k1_sig)`` of a vote extension; :class:`CodecError` for any other length."""
    if len(ext) not in (_ED25519_SIG, _ED25519_SIG + _SECP256K1_SIG):
        raise CodecError("a vote extension is 64 or 129 bytes", expected=(64, 129), got=len(ext))
    return ext[:_ED25519_SIG], ext[_ED25519_SIG:]


def encode_commit_item(commit: RelayCommit) -> bytes:
    """The commit item of a block: :data:`COMMIT_ITEM_PREFIX` then the commit's canonical JSON (SPEC §7.11)."""
    return COMMIT_ITEM_PREFIX + canonical_json(wire.commit_to_json(commit))


def decode_commit_item(item: bytes) -> RelayCommit:
    """The commit a commit item carries; :class:`CodecError` if it is not one."""
    if not item.startswith(COMMIT_ITEM_PREFIX):
        raise CodecError("not a relay commit item", got=item[:len(COMMIT_ITEM_PREFIX)].hex())
    body = item[len(COMMIT_ITEM_PREFIX):]
    try:
        obj = rpc.decode_json(body)
    except rpc.ParseError as exc:
        raise CodecError(f"relay commit item is not JSON: {exc.message}") from exc
    commit = wire.commit_from_json(obj)
    if canonical_json(wire.commit_to_json(commit)) != body:
        raise CodecError("relay commit item is not canonical JSON")
    return commit


def decode_tx(raw: bytes) -> Tx:
    """A relay transaction from its bytes in a CometBFT block or mempool: canonical JSON only, so one transaction has
    one encoding (CometBFT identifies transactions by their bytes)."""
    if raw.startswith(COMMIT_ITEM_PREFIX):
        raise CodecError("a relay commit item is not a transaction (only a proposer puts it, first in a block)")
    try:
        obj = rpc.decode_json(raw)
    except rpc.ParseError as exc:
        raise CodecError(f"transaction is not JSON: {exc.message}") from exc
    tx = relay_tx_from_json(obj)
    if canonical_json(tx.to_json()) != raw:
        raise CodecError("transaction is not in canonical JSON", expected=len(canonical_json(tx.to_json())),
                         got=len(raw))
    return tx


def verify_extension(vset: ValidatorSet, name: str, header: RelayHeader, ext: bytes) -> CommitSignature:
    """The commit signature validator ``name`` of ``vset`` made in vote extension ``ext`` over ``header``; raises
    :class:`ValidatorSetMismatchError` (not in the set), :class:`CodecError` (malformed) or
    :class:`SignatureError` (does not verify, or a secp256k1 signature that does not recover to the validator's
    Ethereum address, or one missing for a validator that has an address)."""
    index = next((i for i, v in enumerate(vset.validators) if v.name == name), None)
    if index is None:
        raise ValidatorSetMismatchError("vote extension by a validator outside the relay set",
                                        expected=[v.name for v in vset.validators], got=name)
    v = vset.validators[index]
    ed, secp = decode_extension(ext)
    digest = commit_sign_bytes(header, COMMIT_ROUND)
    ed25519_verify(v.ed25519_pubkey, digest, ed, what=f"vote extension of relay validator {name}")
    has_eth = v.eth_address != bytes(20)
    if has_eth != bool(secp):
        raise SignatureError("vote extension's secp256k1 signature is there iff the validator has an Ethereum address",
                             expected=has_eth, got=bool(secp))
    if secp and recover_eth_address(digest, secp, what=f"secp256k1 extension of {name}") != v.eth_address:
        raise SignatureError("secp256k1 extension signed by another key", expected=v.eth_address.hex(), got=name)
    return CommitSignature(index, ed, secp)


def commit_from_extensions(vset: ValidatorSet, keys: ConsensusKeys, header: RelayHeader,
                           votes: Sequence[T.ExtendedVoteInfo]) -> RelayCommit:
    """The RelayCommit of ``header`` from the extended commit CometBFT hands the next proposer: every precommit for
    the block whose extension verifies, in validator order. A vote that does not verify is left out (CometBFT
    verified them already, so there should be none). Raises :class:`~protocol.errors.QuorumError` without more than
    2/3 of ``vset``'s power."""
    sigs: dict[int, CommitSignature] = {}
    for vote in votes:
        if vote.block_id_flag != T.BlockIDFlag.COMMIT or not vote.vote_extension:
            continue
        name = keys.name_of(vote.validator.address)
        if name is None:
            continue
        try:
            sig = verify_extension(vset, name, header, vote.vote_extension)
        except ProtocolError as exc:
            log.warning("abci.extension.dropped height=%d validator=%s err=%s", header.height, name, exc)
            continue
        sigs[sig.validator_index] = sig
    commit = RelayCommit(header, COMMIT_ROUND, tuple(sigs[i] for i in sorted(sigs)))
    verify_commit(vset, header.chain_id, commit)
    return commit


# -- the rules -----------------------------------------------------------------------------------------------------


class CometRelayRules(RelayRules):
    """:class:`~relay.chain.node.RelayRules` for blocks CometBFT decided: a block is added before its commit exists
    (its commit arrives in the next block and is stored then, :meth:`RelayAbciApp.commit`), so a header is checked
    against its parent only (:meth:`~relay.chain.node.RelayRules.check_child`), its commit when it has one."""

    def validate_header(self, header: Any, parent: BlockEntry, now_ms: int) -> None:
        h: RelayBlockHeader = header
        vset = self.check_child(h, parent)
        if h.commit is not None:
            verify_commit(vset, ChainId(self.chain_id), h.commit)

    def attach(self, node: Any, app: Any) -> None:
        """The relay's RPC methods; no consensus routes: CometBFT is the consensus."""
        self.register_queries(node)

    async def run_producer(self, node: Any) -> None:
        """CometBFT proposes."""


@dataclass(frozen=True, slots=True)
class Executed:
    """One block run on its parent: what ProcessProposal keeps for ExtendVote and FinalizeBlock."""

    entry: BlockEntry
    """The block (header without commit), its transactions, the state after it, its events and results."""
    prev_commit: RelayCommit | None
    """The commit of the parent the block carried as its first item (``None`` only at height 1)."""


class RelayAbciApp(Application):
    """The relay chain's ABCI application. ``genesis`` is the relay genesis (the built-in engine's JSON); ``name``
    this validator's relay name and ``key`` its relay key (``None``: a full node that never extends votes);
    ``consensus_keys`` links relay validators to CometBFT keys; the database lives in ``data_dir``; ``client_types``
    as :class:`~relay.chain.node.RelayRules` takes them (default: the park chains')."""

    def __init__(self, genesis: dict[str, Any], *, name: str, key: ValidatorKey | None,
                 consensus_keys: ConsensusKeys, data_dir: Path, client_types: Any = None,
                 node_config: NodeConfig | None = None, cometbft_rpc: str | None = None) -> None:
        self.genesis = genesis
        self.rules = CometRelayRules(genesis, name, key, client_types)
        self.chain_id = ChainId(self.rules.chain_id)
        self.key = key
        self.name = name
        self.consensus_keys = consensus_keys
        config = node_config or NodeConfig(name=name, data_dir=data_dir)
        self.node: RelayNode = (CometRelayNode(self.rules, config, cometbft_rpc) if cometbft_rpc is not None
                                else RelayNode(self.rules, config))
        """The chain (SQLite) and, with ``cometbft_rpc``, the relay RPC served beside CometBFT
        (:class:`~relay.chain.abci.node.CometRelayNode`: start it with ``await app.node.start()``)."""
        self.log = logging.LoggerAdapter(log, {"chain": self.chain_id, "node": name})
        self._executed: dict[bytes, Executed] = {}
        """Proposals of the current height executed by ProcessProposal, by CometBFT block hash."""
        self._finalized: Executed | None = None
        """What FinalizeBlock decided, for Commit to hold."""
        self._pending: Executed | None = None
        """The last block CometBFT committed, held in memory until the next block brings its relay commit: only
        then is it stored (:meth:`commit`), so the relay node's chain holds blocks with their commits only and
        everything that reads it (the relay RPC, its WebSocket heads, certificates) reads the built-in engine's
        chain. Lost in a crash, it is replayed by CometBFT (Info reports the stored height)."""
        self._check_state: ChainState = self._fresh_check_state()
        if isinstance(self.node, CometRelayNode):
            self.node.check_state = lambda: self._check_state

    def close(self) -> None:
        """Close the database (the app is not used afterwards)."""
        self.node.db.close()

    # -- queries of the stored chain -------------------------------------------------------------------------------

    @property
    def tip(self) -> BlockEntry:
        """The last block CometBFT committed: the pending block, or the stored head when none is pending."""
        return self._pending.entry if self._pending is not None else self.node.head

    @property
    def height(self) -> int:
        """The last height CometBFT committed (one above :attr:`stored_height` while a block waits for its
        commit)."""
        return int(self.tip.header.height)

    @property
    def stored_height(self) -> int:
        """The last height stored with its relay commit (the relay node's head)."""
        return int(self.node.head.header.height)

    @property
    def app_hash(self) -> bytes:
        """The relay state root after the last committed block (CometBFT's app hash)."""
        root: bytes = self.tip.header.state_root
        return root

    def commit_at(self, height: int) -> RelayCommit:
        """The stored RelayCommit of ``height`` (there once ``height + 1`` is committed)."""
        e = self.node.canonical(height)
        if e is None or e.header.commit is None:
            raise NotFoundError("no relay commit at that height yet (a height's commit arrives with the next block)",
                                expected=f"<= {self.height - 1}", got=height)
        commit: RelayCommit = e.header.commit
        return commit

    def certificate(self, key: bytes, height: int | None = None) -> RelayCertificate:
        """The relay certificate of ``key`` at ``height`` (default: the highest height with a commit, one below the
        head): the commit plus a proof of the value or its absence in that height's state root (SPEC §7)."""
        h = self.stored_height if height is None else height
        commit = self.commit_at(h)
        e = self.node.canonical(h)
        if e is None or e.state is None:
            raise NotFoundError("state of that height pruned", got=h)
        return RelayCertificate(commit, key, e.state.get(key), e.state.prove(key))

    # -- ABCI: connection set-up -----------------------------------------------------------------------------------

    def info(self, req: T.RequestInfo) -> T.ResponseInfo:
        """The stored head: CometBFT replays the blocks after it (FinalizeBlock and Commit, no proposal calls),
        including a block that was pending when the app stopped."""
        head = self.node.head.header
        return T.ResponseInfo(data="parkrelay-relay", version="1", last_block_height=head.height,
                              last_block_app_hash=head.state_root if head.height > 0 else b"")

    def init_chain(self, req: T.RequestInitChain) -> T.ResponseInitChain:
        """Genesis. A CometBFT genesis that disagrees with the relay genesis stops the node here (CometBFT treats an
        exception in InitChain as fatal): another chain id, initial height, ``app_state`` or validator keys."""
        if req.chain_id != self.chain_id:
            raise WrongChainError("CometBFT chain id is not the relay chain's", expected=self.chain_id,
                                  got=req.chain_id)
        if req.initial_height not in (0, 1):
            raise HeaderError("relay heights start at 1", expected=1, got=req.initial_height)
        if req.app_state_bytes:
            try:
                app_state = json.loads(req.app_state_bytes)
            except ValueError as exc:
                raise CodecError(f"CometBFT app_state is not JSON: {exc}") from exc
            if app_state != self.genesis:
                raise CodecError("CometBFT app_state is not this relay genesis")
        vset = load_validator_set(self._head_state())
        updates = self.consensus_keys.updates(vset)
        if req.validators and {v.pub_key for v in req.validators} != {u.pub_key for u in updates}:
            raise ValidatorSetMismatchError("CometBFT genesis validators are not the relay validators' consensus keys",
                                            expected=sorted(u.pub_key.ed25519.hex() for u in updates
                                                            if u.pub_key.ed25519),
                                            got=sorted(v.pub_key.ed25519.hex() for v in req.validators
                                                       if v.pub_key.ed25519))
        params = T.ConsensusParams(abci=T.ABCIParams(vote_extensions_enable_height=1))
        return T.ResponseInitChain(consensus_params=params, validators=updates, app_hash=self.app_hash)

    # -- ABCI: mempool ---------------------------------------------------------------------------------------------

    def check_tx(self, req: T.RequestCheckTx) -> T.ResponseCheckTx:
        """Admission on the check state: the head's state plus the transactions admitted since (as the built-in
        node's ``_check_pending``), so a sender's next nonce is admitted and a second relay of one packet is refused
        before it takes block space. A recheck (after each Commit) runs the same on the fresh check state.

        A sender's pending transactions (check-state nonce minus head nonce) are bounded by ``[limits]
        mempool_txs_per_account`` (``mempool.account_full``, the check state unchanged); CometBFT's ``mempool.size``
        bounds all senders together."""
        try:
            tx = decode_tx(req.tx)
            ahead = self._check_state.get_json(account_path(tx.sender))
            committed = self._head_state().get_json(account_path(tx.sender))  # None: created since (nonce 0)
            limit = self.node.config.limits.mempool_txs_per_account
            if ahead is not None and (
                    pending := int(ahead["nonce"]) - int(committed["nonce"] if committed else 0)) >= limit:
                raise AccountMempoolFullError(
                    f"CometBFT's mempool holds {pending} pending transactions of {tx.sender[:64]!r} "
                    f"(limits.mempool_txs_per_account = {limit})", expected=f"< {limit}", got=pending)
            # a bonded account's rate (limits.relay_account_txs_per_s), on new transactions only: a recheck after each
            # Commit is the same transaction again
            bounded = (req.type is not T.CheckTxType.RECHECK and ahead is not None
                       and ahead.get("status", "granted") != "granted")
            if bounded:
                self.node.check_account_rate(tx.sender)
            self.rules.sm.check_admission(self._check_state, tx)
            head = self.tip.header
            ctx = BlockContext(self.chain_id, head.height + 1, max(_now_ms(), head.timestamp_ms + 1), self.name)
            self.rules.sm.execute_tx(self._check_state, tx, ctx)
            if bounded:
                self.node.pay_account_rate(tx.sender)
        except ProtocolError as exc:
            return T.ResponseCheckTx(code=REFUSED, log=_error_json(exc), codespace=exc.code)
        return T.ResponseCheckTx()

    def _fresh_check_state(self) -> ChainState:
        state = self.tip.state
        assert state is not None  # the head's state is never pruned
        return ChainState(state.tree)

    # -- ABCI: consensus -------------------------------------------------------------------------------------------

    def prepare_proposal(self, req: T.RequestPrepareProposal) -> T.ResponsePrepareProposal:
        """The commit item of the parent first, then the mempool's transactions that execute, within the block
        bounds and ``max_tx_bytes``, each in its original bytes (CometBFT removes committed transactions from its
        mempool by their bytes). Without a quorum of valid extensions it proposes nothing: validators refuse such a
        block and the next round's proposer tries with its own extended commit."""
        head = self.tip
        if req.height != head.header.height + 1 or head.state is None:
            self.log.error("abci.prepare.behind height=%d head=%d: empty proposal", req.height, head.header.height)
            return T.ResponsePrepareProposal()
        items: list[bytes] = []
        if head.header.height >= 1:
            try:
                commit = commit_from_extensions(self._signing_set(head), self.consensus_keys, head.header.header,
                                                req.local_last_commit.votes)
            except ProtocolError as exc:  # validators will refuse this proposal; the next round's proposer tries
                self.log.error("abci.prepare.no_commit height=%d err=%s", req.height, exc)
                return T.ResponsePrepareProposal()
            items.append(encode_commit_item(commit))
        room = req.max_tx_bytes - sum(len(i) for i in items)
        raw_of: dict[bytes, bytes] = {}
        candidates: list[Tx] = []
        for raw in req.txs:
            if len(raw) > room:
                continue
            try:
                tx = decode_tx(raw)
            except ProtocolError:
                continue  # CheckTx refused it; an app restarted with another mempool rule may meet it
            room -= len(raw)
            raw_of[tx.hash()] = raw
            candidates.append(tx)
        state = ChainState(head.state.tree)
        time_ms = self._time_ms(req.time, head)
        self.rules.begin_block(state, self._provisional(req.height, time_ms), head)
        built = self.rules.sm.build_block(state, candidates, BlockContext(self.chain_id, req.height, time_ms, ""),
                                          max_txs=MAX_BLOCK_TXS, max_bytes=self.rules.max_block_bytes)
        for tx, refusal in built.dropped:
            self.log.info("abci.prepare.dropped tx=%s err=%s", tx.hash().hex()[:16], refusal.code)
        items += [raw_of[tx.hash()] for tx in built.included]
        return T.ResponsePrepareProposal(tuple(items))

    def process_proposal(self, req: T.RequestProcessProposal) -> T.ResponseProcessProposal:
        """Accept only a block :meth:`execute` runs strictly; keep its execution for ExtendVote and FinalizeBlock."""
        try:
            ex = self.execute(req.txs, req.height, req.time, strict=True)
        except ProtocolError as exc:
            self.log.warning("abci.proposal.refused height=%d err=%s", req.height, exc)
            return T.ResponseProcessProposal(T.ProposalStatus.REJECT)
        self._keep(req.hash, ex)
        return T.ResponseProcessProposal(T.ProposalStatus.ACCEPT)

    def extend_vote(self, req: T.RequestExtendVote) -> T.ResponseExtendVote:
        """This validator's commit signatures (SPEC §7.3, round :data:`COMMIT_ROUND`) over its RelayHeader of the
        block it precommits."""
        if self.key is None or all(v.name != self.name for v in self.rules.validator_set(self.tip).validators):
            return T.ResponseExtendVote()  # no relay validator at this height (jailed): nothing to sign
        ex = self._executed.get(req.hash)
        if ex is None or ex.entry.header.height != req.height or ex.entry.header.parent_hash != self.tip.hash:
            try:  # CometBFT may skip ProcessProposal on the proposer's own block: run it now
                ex = self.execute(req.txs, req.height, req.time, strict=True)
            except ProtocolError as exc:  # it precommits a block this node refuses: a bug or a byzantine majority
                self.log.error("abci.extend.refused height=%d err=%s", req.height, exc)
                return T.ResponseExtendVote()
            self._keep(req.hash, ex)
        header: RelayHeader = ex.entry.header.header
        digest = commit_sign_bytes(header, COMMIT_ROUND)
        secp = self.key.sign_secp256k1(digest) if self.key.eth_address != bytes(20) else b""
        return T.ResponseExtendVote(encode_extension(self.key.sign_ed25519(digest), secp))

    def verify_vote_extension(self, req: T.RequestVerifyVoteExtension) -> T.ResponseVerifyVoteExtension:
        """ACCEPT unless :meth:`check_extension` raises."""
        try:
            self.check_extension(req)
        except ProtocolError as exc:
            self.log.warning("abci.extension.refused height=%d validator=%s err=%s", req.height,
                             req.validator_address.hex(), exc)
            return T.ResponseVerifyVoteExtension(T.VerifyStatus.REJECT)
        return T.ResponseVerifyVoteExtension(T.VerifyStatus.ACCEPT)

    def check_extension(self, req: T.RequestVerifyVoteExtension) -> None:
        """Raise unless ``req`` carries valid relay signatures over this node's header of the block (SPEC §7.11).

        One case is accepted without the signature check: a precommit for a block this node has not executed yet
        (it can arrive before the proposal's block parts). Refusing it would drop a correct validator's precommit
        for good (CometBFT does not resend it), so its form and signer are checked here and its signature by the
        next proposer, who verifies every extension again before it builds the commit item, which every validator
        verifies in ProcessProposal.

        A CometBFT validator outside the relay set of the height (the relay jails at H, CometBFT applies the change
        at H+2) extends with nothing, and only nothing is accepted from it: its precommit still counts for CometBFT,
        its signature for no certificate."""
        head = self.tip
        if req.height != head.header.height + 1:
            raise HeaderError("vote extension for a height this node is not deciding", expected=head.header.height + 1,
                              got=req.height)
        name = self.consensus_keys.name_of(req.validator_address)
        if name is None:
            raise ValidatorSetMismatchError("vote extension from an unknown CometBFT validator",
                                            got=req.validator_address.hex())
        vset = load_validator_set(self._head_state())
        if all(v.name != name for v in vset.validators):
            if req.vote_extension:
                raise ValidatorSetMismatchError("vote extension by a validator outside the relay set",
                                                expected="an empty extension", got=name)
            return
        ex = self._executed.get(req.hash)
        if ex is None:
            decode_extension(req.vote_extension)
            return
        verify_extension(vset, name, ex.entry.header.header, req.vote_extension)

    def finalize_block(self, req: T.RequestFinalizeBlock) -> T.ResponseFinalizeBlock:
        """Apply the decided block: the execution ProcessProposal kept when it is this block on this parent,
        otherwise the block runs now (a replay after a restart, or a proposal this node did not process). A decided
        block that does not apply (a bad commit item, a malformed transaction) stops the node: it cannot go on
        safely."""
        ex = self._executed.get(req.hash)
        if ex is None or ex.entry.header.height != req.height or ex.entry.header.parent_hash != self.tip.hash:
            ex = self.execute(req.txs, req.height, req.time, strict=False)
        self._executed.clear()  # other proposals of this height are never decided now
        self._finalized = ex
        results = []
        if ex.prev_commit is not None:
            results.append(T.ExecTxResult(log=f"relay commit of height {ex.prev_commit.header.height}"))
        for r in ex.entry.tx_results:
            if r["ok"]:
                results.append(T.ExecTxResult(log=f"redundant no-op: {r['redundant']}") if "redundant" in r
                               else T.ExecTxResult())
            else:
                err = r["error"]
                results.append(T.ExecTxResult(code=REFUSED, log=json.dumps(err, sort_keys=True),
                                              codespace=str(err.get("code", ""))))
        return T.ResponseFinalizeBlock(tx_results=tuple(results), validator_updates=self._validator_updates(ex),
                                       app_hash=ex.entry.header.state_root)

    def commit(self, req: T.RequestCommit) -> T.ResponseCommit:
        """Store the parent with the commit this block carried for it (one write), then hold this block until the
        next one brings its commit. A crash loses only held blocks: Info reports the stored head and CometBFT
        replays what follows; a replayed block's commit item for a parent stored already changes nothing."""
        ex = self._finalized
        if ex is None:
            raise HeaderError("Commit without FinalizeBlock", got=self.height)
        self._finalized = None
        if ex.prev_commit is not None:
            self._store_commit(ex.prev_commit)
        self._pending = ex
        self._check_state = self._fresh_check_state()
        return T.ResponseCommit()

    # -- ABCI: queries ---------------------------------------------------------------------------------------------

    def query(self, req: T.RequestQuery) -> T.ResponseQuery:
        """``path`` ``"store"`` or ``"/key"``: the value of relay-state key ``data`` at ``height`` (0: the head) and,
        with ``prove``, a proof into that height's state root (one ``ProofOp`` of type ``parkrelay/smt``: the
        :class:`~protocol.state_commitment.Proof` encoding). ``"/certificate"``: the relay certificate of key
        ``data`` at ``height`` (0: the highest height with a commit) as canonical JSON (the ``getCertificate``
        form)."""
        try:
            if req.path in ("store", "/store", "/key"):
                e = self.tip if req.height in (0, self.height) else self.node.entry_at(req.height)
                if e.state is None:
                    raise NotFoundError("state of that height pruned", got=req.height)
                value = e.state.get(req.data)
                proof = None
                if req.prove:
                    proof = T.ProofOps((T.ProofOp("parkrelay/smt", req.data, e.state.prove(req.data).encode()),))
                return T.ResponseQuery(key=req.data, value=value or b"", proof_ops=proof, height=e.header.height,
                                       info="" if value is not None else "absent")
            if req.path == "/certificate":
                cert = self.certificate(req.data, req.height or None)
                return T.ResponseQuery(key=req.data, value=canonical_json(wire.certificate_to_json(cert)),
                                       height=cert.commit.header.height)
            raise NotFoundError("unknown query path", expected=["store", "/key", "/certificate"], got=req.path)
        except ProtocolError as exc:
            return T.ResponseQuery(code=REFUSED, log=_error_json(exc), codespace=exc.code, height=req.height)

    # -- execution -------------------------------------------------------------------------------------------------

    def execute(self, items: Sequence[bytes], height: int, block_time: T.Timestamp, *, strict: bool) -> Executed:
        """Run block ``height`` (``items``: the commit item, then transactions) on the head, as ``ParkNode._execute``
        does, computing the header instead of checking one. ``strict`` (a proposal): raise for a failing
        transaction and for blocks beyond what an honest proposer makes; otherwise (a decided block) record failures
        in the results. Always raises for a malformed item or a missing or bad commit item."""
        head = self.tip
        if height != head.header.height + 1 or head.state is None:
            raise HeaderError("block does not follow the head", expected=head.header.height + 1, got=height)
        prev_commit = None
        body = list(items)
        if head.header.height >= 1:
            if not body:
                raise HeaderError("block lacks the relay commit of its parent", expected=head.header.height,
                                  got="no items")
            prev_commit = decode_commit_item(body.pop(0))
            self.check_commit(prev_commit)
        txs = [decode_tx(raw) for raw in body]
        max_bytes = self.rules.max_block_bytes
        if strict and (len(txs) > MAX_BLOCK_TXS or sum(t.size() for t in txs) > max_bytes):
            raise CodecError("proposal beyond the block bounds", expected=f"<= {MAX_BLOCK_TXS} txs, "
                             f"<= {max_bytes} bytes", got=f"{len(txs)} txs, {sum(t.size() for t in txs)} bytes")
        time_ms = self._time_ms(block_time, head)
        state = ChainState(head.state.tree)
        provisional = self._provisional(height, time_ms)
        events = self.rules.begin_block(state, provisional, head)
        ctx = self.rules.context(provisional)
        results: list[dict[str, Any]] = []
        for tx in txs:
            th = tx.hash().hex()
            try:
                tx_events = self.rules.app.execute_tx(state, tx, ctx)
            except ProtocolError as exc:
                if strict:
                    raise
                results.append({"tx": th, "ok": False, "error": exc.to_dict()})
                continue
            results.append(tx_result(th, tx_events))  # a charged failure's charge stands, a no-op its nonce (SPEC §6.9)
            events += [{**ev, "tx": th} for ev in tx_events]
        signing = self.rules.validator_set(head)  # the set the parent left in state signs this block (SPEC §7.7)
        header = RelayBlockHeader(RelayHeader(self.chain_id, height, time_ms, head.hash, tx_root(txs), state.root,
                                              signing.hash, load_validator_set(state).hash), None)
        events += self.rules.end_block(state, header, head)
        entry = BlockEntry(header, tuple(txs), height, state, events, results)
        return Executed(entry, prev_commit)

    def check_commit(self, commit: RelayCommit) -> None:
        """Raise unless ``commit`` is a commit of the tip's header by more than 2/3 of the set that signed it."""
        head = self.tip
        if commit.header != head.header.header:
            raise HeaderError("relay commit for another header than the parent's", expected=head.hash.hex(),
                              got=commit.header.hash().hex())
        if commit.round != COMMIT_ROUND:
            raise HeaderError("relay commit of a CometBFT block is of round 0", expected=COMMIT_ROUND,
                              got=commit.round)
        verify_commit(self._signing_set(head), self.chain_id, commit)

    def _signing_set(self, entry: BlockEntry) -> ValidatorSet:
        """The relay set that signed ``entry`` (genesis: the set in genesis state)."""
        state = entry.state if entry.state is not None else self._head_state()
        vset = validator_set_by_hash(state, entry.header.header.validators_hash) if entry.header.height else None
        return vset if vset is not None else load_validator_set(state)

    def _head_state(self) -> ChainState:
        state = self.tip.state
        assert state is not None  # the head's state is never pruned
        return state

    def _time_ms(self, t: T.Timestamp, parent: BlockEntry) -> int:
        """The relay time of a block: CometBFT's block time in ms, at least 1 ms after the parent's (relay time
        strictly increases; CometBFT's does by at least 1 ms past height 1, and height 1 gets the genesis time,
        which may not be after the relay genesis's ``genesis_time_ms``)."""
        return max(t.unix_ns // 1_000_000, int(parent.header.timestamp_ms) + 1)

    def _provisional(self, height: int, time_ms: int) -> RelayBlockHeader:
        """A header that gives begin-block hooks the height and time only (its roots are not known yet)."""
        z = bytes(32)
        return RelayBlockHeader(RelayHeader(self.chain_id, height, time_ms, z, z, z, z, z), None)

    def _keep(self, block_hash: bytes, ex: Executed) -> None:
        self._executed[block_hash] = ex
        while len(self._executed) > EXECUTIONS_KEPT:
            del self._executed[next(iter(self._executed))]

    def _store_commit(self, commit: RelayCommit) -> None:
        """Store the pending block with ``commit``; for a block stored already (a replay), its commit if missing."""
        pending = self._pending
        if pending is not None:
            if pending.entry.header.header != commit.header:
                raise HeaderError("relay commit for another block than the pending one",
                                  expected=pending.entry.header.height, got=commit.header.height)
            held = pending.entry
            self.node.validate_and_add(RelayBlockHeader(commit.header, commit), held.txs, _now_ms(), executed=held)
            self._pending = None
            return
        e = self.node.canonical(commit.header.height)
        if e is None or e.header.header != commit.header:
            raise HeaderError("relay commit for a block this node does not hold", got=commit.header.height)
        if e.header.commit is not None:
            return
        hdr = RelayBlockHeader(commit.header, commit)
        raw, h = hdr.encode(), e.hash
        self.node.write(lambda db: db.execute("UPDATE blocks SET header = ? WHERE hash = ?", (raw, h)))
        e.header = hdr

    def _validator_updates(self, ex: Executed) -> tuple[T.ValidatorUpdate, ...]:
        """CometBFT's set follows the relay's: a block whose next set differs (a jailed validator) sends the change
        (power 0 for a removed validator). CometBFT applies it two heights later, the relay one height later."""
        h: RelayHeader = ex.entry.header.header
        if h.next_validators_hash == h.validators_hash:
            return ()
        assert ex.entry.state is not None
        old = self.rules.validator_set(self.tip)
        new = load_validator_set(ex.entry.state)
        updates = list(self.consensus_keys.updates(new))
        for v in old.validators:
            if all(w.name != v.name for w in new.validators):
                key = self.consensus_keys.by_name[v.name]
                updates.append(T.ValidatorUpdate(T.PublicKey(ed25519=key), 0))
        return tuple(updates)


def _error_json(exc: ProtocolError) -> str:
    return json.dumps(exc.to_dict(), sort_keys=True, default=str)
