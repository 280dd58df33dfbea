"""A tiny ABCI application for tests only: a ``key=value`` store whose app hash is SHA-256 over its sorted contents,
and whose vote extensions are Ed25519 signatures (keys generated at test time) over the height and block hash.

It records what CometBFT asked of it (every request type, the finalized blocks, the app hash returned per height,
vote extensions made and verified) so tests can check what really happened.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.chain.abci import types as T
from relay.chain.abci.server import Application

EXT_DOMAIN = b"kvapp.vote-extension.v1"
"""Domain tag of what a vote extension signs."""


def parse_tx(tx: bytes) -> tuple[bytes, bytes] | None:
    """``(key, value)`` of a well-formed ``key=value`` transaction, else ``None``."""
    key, sep, value = tx.partition(b"=")
    if not sep or not key or b"=" in value:
        return None
    return key, value


def app_hash_of(store: dict[bytes, bytes]) -> bytes:
    """SHA-256 over the length-prefixed sorted items (empty store: SHA-256 of nothing)."""
    h = hashlib.sha256()
    for k in sorted(store):
        v = store[k]
        h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    return h.digest()


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class KVApp(Application):
    """The store. ``ext_key`` signs this node's vote extensions; ``trusted_ext_keys`` are the raw public keys whose
    extensions are accepted (this node's own is always trusted)."""

    ext_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    trusted_ext_keys: set[bytes] = field(default_factory=set)
    slow_finalize: float = 0.0
    """Seconds ``finalize_block`` sleeps (an async method), to test ordering around a slow answer."""
    committed: dict[bytes, bytes] = field(default_factory=dict)
    pending: dict[bytes, bytes] | None = None
    height: int = 0
    app_hash: bytes = b""
    calls: Counter[str] = field(default_factory=Counter)
    finalized: dict[int, tuple[bytes, ...]] = field(default_factory=dict)
    """Height -> the transactions FinalizeBlock saw."""
    app_hashes: dict[int, bytes] = field(default_factory=dict)
    """Height -> the app hash FinalizeBlock returned."""
    extensions_made: int = 0
    extensions_verified: int = 0
    extensions_in_proposals: int = 0
    """Non-empty vote extensions seen in PrepareProposal's local_last_commit."""

    def __post_init__(self) -> None:
        self.trusted_ext_keys.add(_raw(self.ext_key.public_key()))

    def info(self, req: T.RequestInfo) -> T.ResponseInfo:
        self.calls["info"] += 1
        return T.ResponseInfo(data="kvapp", version="1", last_block_height=self.height,
                              last_block_app_hash=self.app_hash)

    def init_chain(self, req: T.RequestInitChain) -> T.ResponseInitChain:
        self.calls["init_chain"] += 1
        self.app_hash = app_hash_of(self.committed)
        return T.ResponseInitChain(app_hash=self.app_hash)

    def check_tx(self, req: T.RequestCheckTx) -> T.ResponseCheckTx:
        self.calls["check_tx"] += 1
        if parse_tx(req.tx) is None:
            return T.ResponseCheckTx(code=1, log="not key=value")
        return T.ResponseCheckTx(code=0)

    def process_proposal(self, req: T.RequestProcessProposal) -> T.ResponseProcessProposal:
        self.calls["process_proposal"] += 1
        ok = all(parse_tx(tx) is not None for tx in req.txs)
        return T.ResponseProcessProposal(T.ProposalStatus.ACCEPT if ok else T.ProposalStatus.REJECT)

    def prepare_proposal(self, req: T.RequestPrepareProposal) -> T.ResponsePrepareProposal:
        self.calls["prepare_proposal"] += 1
        self.extensions_in_proposals += sum(1 for v in req.local_last_commit.votes if v.vote_extension)
        txs = [tx for tx in req.txs if parse_tx(tx) is not None]
        out, total = [], 0
        for tx in txs:
            total += len(tx)
            if total > req.max_tx_bytes:
                break
            out.append(tx)
        return T.ResponsePrepareProposal(tuple(out))

    @staticmethod
    def _ext_msg(height: int, block_hash: bytes) -> bytes:
        return EXT_DOMAIN + height.to_bytes(8, "big") + block_hash

    def extend_vote(self, req: T.RequestExtendVote) -> T.ResponseExtendVote:
        self.calls["extend_vote"] += 1
        self.extensions_made += 1
        sig = self.ext_key.sign(self._ext_msg(req.height, req.hash))
        return T.ResponseExtendVote(_raw(self.ext_key.public_key()) + sig)

    def verify_vote_extension(self, req: T.RequestVerifyVoteExtension) -> T.ResponseVerifyVoteExtension:
        self.calls["verify_vote_extension"] += 1
        ext = req.vote_extension
        reject = T.ResponseVerifyVoteExtension(T.VerifyStatus.REJECT)
        if len(ext) != 96 or ext[:32] not in self.trusted_ext_keys:
            return reject
        try:
            Ed25519PublicKey.from_public_bytes(ext[:32]).verify(ext[32:], self._ext_msg(req.height, req.hash))
        except InvalidSignature:
            return reject
        self.extensions_verified += 1
        return T.ResponseVerifyVoteExtension(T.VerifyStatus.ACCEPT)

    async def finalize_block(self, req: T.RequestFinalizeBlock) -> T.ResponseFinalizeBlock:
        self.calls["finalize_block"] += 1
        if self.slow_finalize:
            await asyncio.sleep(self.slow_finalize)
        state = dict(self.committed)
        results = []
        for tx in req.txs:
            kv = parse_tx(tx)
            if kv is None:
                results.append(T.ExecTxResult(code=1, log="not key=value"))
                continue
            state[kv[0]] = kv[1]
            results.append(T.ExecTxResult(events=(T.Event("kv", (T.EventAttribute("key", kv[0].decode(errors="replace"),
                                                                                 True),)),)))
        self.pending = state
        self.finalized[req.height] = req.txs
        app_hash = app_hash_of(state)
        self.app_hashes[req.height] = app_hash
        self.height = req.height
        self.app_hash = app_hash
        return T.ResponseFinalizeBlock(tx_results=tuple(results), app_hash=app_hash)

    def commit(self, req: T.RequestCommit) -> T.ResponseCommit:
        self.calls["commit"] += 1
        if self.pending is not None:
            self.committed, self.pending = self.pending, None
        return T.ResponseCommit()

    def query(self, req: T.RequestQuery) -> T.ResponseQuery:
        self.calls["query"] += 1
        value = self.committed.get(req.data)
        if value is None:
            return T.ResponseQuery(code=1, key=req.data, log="not found", height=self.height)
        return T.ResponseQuery(code=0, key=req.data, value=value, height=self.height)
