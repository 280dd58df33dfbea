"""Four relay validators' :class:`RelayAbciApp` driven by hand-built ABCI requests, as CometBFT drives them. TEST ONLY.

:class:`RelayNet` plays CometBFT for a four-validator relay chain whose keys are generated at test time: it asks the
proposer for a proposal (PrepareProposal, with the previous height's extended commit), has every app process it,
extend its vote and verify the others', then finalises and commits. Block hashes are made up (the app treats them
as opaque ids).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chains.common import wire
from chains.common.state import canonical_json
from chains.common.tx import Tx
from protocol.certificate import Validator, ValidatorSet
from protocol.crypto import Ed25519Signer
from relay.chain.abci import types as T
from relay.chain.abci.app import ConsensusKeys, RelayAbciApp, cometbft_address
from relay.chain.consensus import ValidatorKey

CHAIN = "relay-abci-test"
N = 4
FUNDED = ("alice", "bob", "eve", "mallory", "xavier", "later", "relayer-z", *(f"acct{i}" for i in range(64)))
"""Names the relay genesis funds with one ``min_bond`` (1000 units) each, so the tests' ``account.register`` of them
passes (SPEC §6.9); ``extra_genesis`` may replace the whole ``bonds`` entry."""


def new_validator_key() -> ValidatorKey:
    """A relay validator key (ed25519 and secp256k1) made now, from the OS's randomness."""
    return ValidatorKey(os.urandom(32), os.urandom(32))


def raw(tx: Tx) -> bytes:
    """A transaction's bytes as CometBFT carries them: canonical JSON."""
    return canonical_json(tx.to_json())


def register_tx(name: str, signer: Ed25519Signer | None = None, chain: str = CHAIN,
                sign_with: Ed25519Signer | None = None) -> Tx:
    """``account.register`` of ``name`` (``sign_with``: another key signs it: a forged signature)."""
    signer = signer or Ed25519Signer(os.urandom(32))
    tx = Tx.signed(sign_with or signer, chain, name, 0, "account.register", {"pubkey": signer.pubkey.hex()})
    return tx


def timestamp(ms: int) -> T.Timestamp:
    return T.Timestamp(ms // 1000, (ms % 1000) * 1_000_000)


@dataclass
class RelayNet:
    """The four apps, their keys and what CometBFT would carry between heights."""

    root: Path
    keys: list[ValidatorKey] = field(default_factory=lambda: [new_validator_key() for _ in range(N)])
    consensus_pubkeys: list[bytes] = field(default_factory=lambda: [Ed25519Signer(os.urandom(32)).pubkey
                                                                    for _ in range(N)])
    genesis_time_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 60_000)
    apps: list[RelayAbciApp] = field(default_factory=list)
    last_votes: tuple[T.ExtendedVoteInfo, ...] = ()
    """The extended commit of the last height (what PrepareProposal of the next one gets)."""
    blocks: list[tuple[bytes, tuple[bytes, ...], T.Timestamp]] = field(default_factory=list)
    """Every finalised block: (hash, items, time), for replays."""
    results: dict[int, T.ResponseFinalizeBlock] = field(default_factory=dict)
    extra_genesis: dict[str, Any] = field(default_factory=dict)
    """Genesis entries beside the validators (clients, lanes, accounts; the chain id)."""
    client_types: Any = None

    def __post_init__(self) -> None:
        self.vset = ValidatorSet(tuple(Validator(f"v{i}", k.ed25519_pubkey, k.eth_address, 10)
                                       for i, k in enumerate(self.keys)))
        self.genesis: dict[str, Any] = {"chain_id": CHAIN, "clients": {}, "lanes": [],
                                        "bonds": {"balances": {name: 1_000 for name in FUNDED}}, **self.extra_genesis,
                                        "validators": wire.validator_set_to_json(self.vset),
                                        "genesis_time_ms": self.genesis_time_ms}
        self.chain_id = str(self.genesis["chain_id"])
        self.consensus_keys = ConsensusKeys({f"v{i}": k for i, k in enumerate(self.consensus_pubkeys)})
        self.apps = [self.open(i) for i in range(N)]

    def open(self, i: int, data_dir: Path | None = None) -> RelayAbciApp:
        return RelayAbciApp(self.genesis, name=f"v{i}", key=self.keys[i], consensus_keys=self.consensus_keys,
                            data_dir=data_dir or self.root / f"v{i}", client_types=self.client_types)

    def address(self, i: int) -> bytes:
        return cometbft_address(self.consensus_pubkeys[i])

    def init_chain(self) -> list[T.ResponseInitChain]:
        req = T.RequestInitChain(time=timestamp(self.genesis_time_ms), chain_id=self.chain_id, initial_height=1,
                                 validators=self.consensus_keys.updates(self.vset),
                                 app_state_bytes=canonical_json(self.genesis))
        return [app.init_chain(req) for app in self.apps]

    @property
    def height(self) -> int:
        return self.apps[0].height

    def time_of(self, height: int) -> T.Timestamp:
        return timestamp(self.genesis_time_ms + 1000 * height)

    def prepare(self, txs: list[bytes], proposer: int = 0,
                votes: tuple[T.ExtendedVoteInfo, ...] | None = None) -> tuple[bytes, ...]:
        h = self.height + 1
        req = T.RequestPrepareProposal(max_tx_bytes=4 << 20, txs=tuple(txs),
                                       local_last_commit=T.ExtendedCommitInfo(0, self.last_votes if votes is None
                                                                              else votes),
                                       height=h, time=self.time_of(h), proposer_address=self.address(proposer))
        return proposer_items(self.apps[proposer].prepare_proposal(req))

    def block_hash(self, items: tuple[bytes, ...]) -> bytes:
        return hashlib.sha256(str(self.height + 1).encode() + b"".join(items)).digest()

    def process(self, app: RelayAbciApp, items: tuple[bytes, ...]) -> T.ProposalStatus:
        h = self.height + 1
        return app.process_proposal(T.RequestProcessProposal(txs=items, hash=self.block_hash(items), height=h,
                                                             time=self.time_of(h))).status

    def extend(self, i: int, items: tuple[bytes, ...]) -> bytes:
        h = self.height + 1
        return self.apps[i].extend_vote(T.RequestExtendVote(hash=self.block_hash(items), height=h,
                                                            time=self.time_of(h), txs=items)).vote_extension

    def verify(self, verifier: int, signer: int, items: tuple[bytes, ...], ext: bytes) -> T.VerifyStatus:
        req = T.RequestVerifyVoteExtension(hash=self.block_hash(items), validator_address=self.address(signer),
                                           height=self.height + 1, vote_extension=ext)
        return self.apps[verifier].verify_vote_extension(req).status

    def decide(self, items: tuple[bytes, ...], signers: range | list[int] = range(N)) -> None:
        """Every app processes ``items`` (all must accept), the ``signers`` extend (each extension verified by every
        other app), then every app finalises and commits."""
        for app in self.apps:
            assert self.process(app, items) == T.ProposalStatus.ACCEPT
        exts = {i: self.extend(i, items) for i in signers}
        for i, ext in exts.items():
            for j in range(N):
                if j != i:
                    assert self.verify(j, i, items, ext) == T.VerifyStatus.ACCEPT
        self.finalize(items)
        self.last_votes = tuple(T.ExtendedVoteInfo(T.Validator(self.address(i), 10), exts.get(i, b""),
                                                   block_id_flag=T.BlockIDFlag.COMMIT if i in exts
                                                   else T.BlockIDFlag.ABSENT) for i in range(N))

    def finalize(self, items: tuple[bytes, ...]) -> None:
        h = self.height + 1
        block_hash, t = self.block_hash(items), self.time_of(h)
        req = T.RequestFinalizeBlock(txs=items, hash=block_hash, height=h, time=t)
        answers = [app.finalize_block(req) for app in self.apps]
        assert len({a.app_hash for a in answers}) == 1
        for app in self.apps:
            app.commit(T.RequestCommit())
        self.results[h] = answers[0]
        self.blocks.append((block_hash, items, t))

    def run(self, txs: list[bytes], proposer: int | None = None) -> tuple[bytes, ...]:
        """One height with the mempool ``txs``; returns the decided items."""
        items = self.prepare(txs, (self.height + 1) % N if proposer is None else proposer)
        self.decide(items)
        return items

    def close(self) -> None:
        for app in self.apps:
            app.close()


def proposer_items(resp: T.ResponsePrepareProposal) -> tuple[bytes, ...]:
    return resp.txs
