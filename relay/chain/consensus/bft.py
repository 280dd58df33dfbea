"""The relay chain's BFT consensus as a pure state machine (docs/architecture.md §3, SPEC.md §7).

Tendermint's algorithm as in "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic 2018,
Algorithm 1); the comments ``[L22]`` etc. name the line of that algorithm a rule implements.
:class:`ConsensusCore` takes inputs (``on_message``, ``on_timeout``, ``on_commit``, ``catch_up``) and returns
outputs (:data:`Output`); it does no I/O, reads no clock and draws no randomness, so one sequence of
inputs always gives one sequence of outputs. The host (the relay node) owns the network, the timers,
the disk and the application, and must handle each call's outputs **in order**:

* :class:`PersistSignState` — store the record durably *before* handling the next output (which is
  the :class:`Broadcast` of the message just signed). See :mod:`relay.chain.consensus.sign_state`.
* :class:`Broadcast` — send the message to every validator (the core already counted it itself).
* :class:`ScheduleTimeout` — after ``duration_ms`` call ``on_timeout(output.timeout)``. Stale
  timeouts are harmless; the host need not cancel anything.
* :class:`Decided` — apply the block and store ``(block, commit)``: lagging peers need it for
  ``on_commit``. The core waits for the ``COMMIT`` timeout it schedules right after before it enters
  the next height, so the application has applied the block when ``make_block`` is called again.
  A host whose application got ahead of the core (block sync) calls :meth:`ConsensusCore.catch_up`
  before it hands the core anything else; ``make_block`` answers None for a height the application is
  not just below (the core then proposes nothing that round), so no input can wedge the core.
* :class:`EvidenceFound` — a validator equivocated; report it (the duplicate is not counted).
* :class:`MessageRejected` — a buffered future-height message failed its checks when its height came.

Invalid input raises a :class:`~protocol.errors.ProtocolError` (bad signature, unknown validator,
proposal by a validator that is not the round's proposer: ``SignatureError``; malformed fields:
``CodecError``; header for another chain, height or validator set: ``HeaderError``). The host drops
the message and may penalise the peer. Messages for an old height, a far-future round, or a height
too far ahead are ignored (empty output), since late and early gossip is normal.

Thresholds, by voting power: a *quorum* is more than 2/3 of the total (``3 p > 2 total``, as in
``ValidatorSet.quorum_reached``); *skip power* (the paper's f+1) is more than 1/3 (``3 p > total``).

Proposer: :func:`proposer_index` — a smooth weighted round robin over the validator set's order (each
validator proposes in proportion to its power, spread out), indexed by ``height + round``. It is a pure
function of the set, so every node and every light client agrees on it without extra state.

Deliberate differences from the paper, none weakening safety: the value a rule needs (the paper's
"PROPOSAL(h, r, v)" in [L36] and [L49]) is looked up by block hash among every valid proposal of the
height, so a node that missed round r's proposal but saw the same block earlier can still lock and
decide; the propose timeout is also scheduled for the proposer (so a proposer whose sign state forbids
it to propose again after a restart still moves on); after deciding, the core waits for a ``COMMIT``
timeout before it starts the next height (CometBFT's ``timeout_commit``). As in the paper (and unlike a
vote set that keeps only a validator's first vote), a validator that equivocated counts towards each
value it signed (see ``_VoteSet``), so every honest node can check a proof of lock another honest node
saw; the duplicate is reported as evidence and never counts twice towards "+2/3 of any votes".
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol, TypeAlias

from protocol.certificate import CommitSignature, RelayCommit, RelayHeader, ValidatorSet, verify_commit
from protocol.errors import HeaderError, ProtocolError, SignatureError, ValidatorSetMismatchError
from protocol.types import ChainId
from relay.chain.consensus.messages import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    Message,
    Proposal,
    ValidatorKey,
    Vote,
    VoteType,
    check_message_ranges,
    decode_message,
    encode_message,
    header_hash,
    proposal_sign_bytes,
    recover_eth_address,
    sign_proposal,
    sign_vote,
    verify_proposal_signature,
    verify_vote_signature,
    vote_sign_bytes,
)
from relay.chain.consensus.sign_state import SignState, SignStep

__all__ = [
    "Broadcast",
    "ConsensusApp",
    "ConsensusConfig",
    "ConsensusCore",
    "Decided",
    "EvidenceFound",
    "MessageRejected",
    "Output",
    "PersistSignState",
    "ScheduleTimeout",
    "Step",
    "Timeout",
    "TimeoutConfig",
    "TimeoutKind",
    "proposer_index",
]

_ZERO_ADDRESS = bytes(20)


class Step(enum.IntEnum):
    """Where the core is in a height. ``COMMIT``: decided, waiting for the commit timeout."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4


class TimeoutKind(enum.Enum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    COMMIT = "commit"


@dataclass(frozen=True, slots=True)
class Timeout:
    """A timer the host runs for the core and hands back to :meth:`ConsensusCore.on_timeout`."""

    kind: TimeoutKind
    """Which step timed out."""
    height: int
    """Height the timer was set at."""
    round: int
    """Round the timer was set at."""


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeout durations, ms. A round's timeout is ``base + round * delta``, so rounds eventually outlast
    any message delay after the network stabilises (the paper's partial-synchrony assumption)."""

    propose_ms: int = 3000
    """Wait for the round's proposal."""
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    """Wait for more prevotes after +2/3 of any prevotes."""
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    """Wait for more precommits after +2/3 of any precommits."""
    precommit_delta_ms: int = 500
    commit_ms: int = 1000
    """Pause between deciding and starting the next height (block interval, late precommits). The built-in engine's
    host shortens it by the time the height took, down to ``relay.chain.node.COMMIT_WAIT_MIN_MS``: the block
    interval, however long a block takes to decide up to it."""

    def duration_ms(self, kind: TimeoutKind, round_: int) -> int:
        if kind is TimeoutKind.PROPOSE:
            return self.propose_ms + round_ * self.propose_delta_ms
        if kind is TimeoutKind.PREVOTE:
            return self.prevote_ms + round_ * self.prevote_delta_ms
        if kind is TimeoutKind.PRECOMMIT:
            return self.precommit_ms + round_ * self.precommit_delta_ms
        return self.commit_ms


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """Static configuration of one node's consensus."""

    chain_id: ChainId
    """The relay chain's id (in every sign-bytes digest and header)."""
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    """Timeout durations."""
    max_round_ahead: int = 64
    """Messages for rounds more than this above the current round are ignored (memory bound)."""
    max_future_heights: int = 1
    """Messages for heights up to this far above the current one are buffered until it is reached."""
    max_buffered_messages: int = 1024
    """At most this many future-height messages are buffered; more are dropped."""


class ConsensusApp(Protocol):
    """What the core asks of the host's application. Synchronous, deterministic, no side effects."""

    def make_block(self, height: int, round_: int) -> tuple[bytes, RelayHeader] | None:
        """A new block to propose at ``height``: bytes and header; None if the application is not at
        ``height - 1`` (it is still applying the previous block, or block sync has already taken it past
        ``height``): the core then proposes nothing this round and lets the propose timeout run."""
        ...

    def validate_block(self, header: RelayHeader, block: bytes) -> bool:
        """True if ``block`` is a valid next block and ``header`` is its header (data hash, state root,
        time, links). Must give every honest node the same answer for the same input."""
        ...

    def next_validator_set(self, header: RelayHeader) -> ValidatorSet:
        """The set whose hash is ``header.next_validators_hash`` (asked only when it changes)."""
        ...


# --- outputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send ``message`` to all validators."""

    message: Message
    """The signed message."""


@dataclass(frozen=True, slots=True)
class PersistSignState:
    """Durably store ``state`` before handling the next output; hand it back after a restart."""

    state: SignState
    """The new signing-safety record."""


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call :meth:`ConsensusCore.on_timeout` with ``timeout`` after ``duration_ms``."""

    timeout: Timeout
    """What to hand back."""
    duration_ms: int
    """Delay, ms."""


@dataclass(frozen=True, slots=True)
class Decided:
    """``block`` is final at ``height``; ``commit`` (the +2/3 precommits) passes ``verify_commit``."""

    height: int
    """The decided height."""
    block: bytes
    """The block bytes."""
    commit: RelayCommit
    """Header, round and signatures (ed25519 and, for validators with an eth address, secp256k1)."""


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    """A validator signed two conflicting messages; both are in ``evidence``."""

    evidence: Evidence
    """Verifiable by anyone with ``messages.verify_evidence``."""


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A buffered message failed its checks when its height was reached."""

    message: Message
    """The message."""
    error: ProtocolError
    """Why."""


Output: TypeAlias = Broadcast | PersistSignState | ScheduleTimeout | Decided | EvidenceFound | MessageRejected


# --- proposer selection --------------------------------------------------------------------------------

_SCHEDULE_SLOTS = 4096
"""Above this total power, powers are scaled down for the schedule only (fairness, not safety)."""


@lru_cache(maxsize=64)
def _schedule(powers: tuple[int, ...]) -> tuple[int, ...]:
    """One period of smooth weighted round robin: validator i appears ``weight_i`` times, spread out."""
    total = sum(powers)
    weights = [max(1, p * _SCHEDULE_SLOTS // total) for p in powers] if total > _SCHEDULE_SLOTS else list(powers)
    period = sum(weights)
    current = [0] * len(weights)
    order: list[int] = []
    for _ in range(period):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: (current[i], -i))  # ties: lowest index
        current[best] -= period
        order.append(best)
    return tuple(order)


def proposer_index(vset: ValidatorSet, height: int, round_: int) -> int:
    """The proposer of ``(height, round_)``: entry ``(height + round_) mod period`` of the smooth weighted
    round-robin schedule of ``vset`` (period = total power; with equal powers, index ``(height + round_) mod
    n``). If the total power exceeds 4096, each power p is scaled to ``max(1, p * 4096 // total)`` first."""
    order = _schedule(tuple(v.power for v in vset.validators))
    return order[(height + round_) % len(order)]


# --- vote bookkeeping ----------------------------------------------------------------------------------


class _VoteSet:
    """The votes of one type in one round.

    As in the paper, "2f+1 votes for v" counts every validator that signed a vote for v, so a validator
    that equivocated counts once for each value it voted for (safe: two quorums for different values in
    one round would need more than 1/3 of the power to equivocate). Counting only a validator's first
    vote instead would let an equivocator make a proof of lock that some honest nodes can never check,
    which stalls them. "2f+1 votes of any kind" counts each validator once.
    """

    __slots__ = ("by_block", "first", "power_any", "power_by_block")

    def __init__(self) -> None:
        self.first: dict[int, Vote] = {}
        """validator index -> the first vote seen from it."""
        self.by_block: dict[bytes | None, dict[int, Vote]] = {}
        """block hash (None: nil) -> validator index -> its vote for that value."""
        self.power_by_block: dict[bytes | None, int] = {}
        self.power_any = 0

    def add(self, vote: Vote, power: int, *, count_conflict: bool) -> Vote | None:
        """Count ``vote``; return the validator's first vote if ``vote`` conflicts with it.

        A conflicting vote is counted only if ``count_conflict`` (its value matters: nil or a known
        block); otherwise one validator could fill memory with votes for made-up hashes.
        """
        idx = vote.validator_index
        prior = self.first.get(idx)
        if prior is None:
            self.first[idx] = vote
            self.power_any += power
        elif prior.block_hash == vote.block_hash:
            return None
        voters = self.by_block.setdefault(vote.block_hash, {})
        if idx not in voters and (prior is None or count_conflict):
            voters[idx] = vote
            self.power_by_block[vote.block_hash] = self.power_by_block.get(vote.block_hash, 0) + power
        return prior

    def quorum_value(self, vset: ValidatorSet) -> tuple[bool, bytes | None]:
        """``(True, hash-or-None)`` if a value (a block or nil) has a quorum, else ``(False, None)``."""
        for block_hash, power in self.power_by_block.items():
            if vset.quorum_reached(power):
                return True, block_hash
        return False, None


@dataclass(slots=True)
class _Block:
    header: RelayHeader
    block: bytes
    valid: bool


@dataclass(slots=True)
class _Decision:
    block: bytes
    commit: RelayCommit


class ConsensusCore:
    """One node's Tendermint consensus for the relay chain. Pure: see the module docstring.

    ``key`` is None for a node that follows and decides without voting (an observer), and a validator
    whose key is not in a height's set observes that height.
    """

    def __init__(self, config: ConsensusConfig, app: ConsensusApp, validator_set: ValidatorSet, height: int,
                 key: ValidatorKey | None = None, sign_state: SignState | None = None) -> None:
        """Set up at ``height`` (the first undecided height, >= 1) with the set that signs it.

        After a restart pass the last :class:`PersistSignState` record the host stored: the core then
        resumes at the record's round with the record's lock, and never signs against it. Nothing
        happens until :meth:`start`.
        """
        if height < 1:
            raise ValueError(f"heights start at 1, got {height}")
        self._cfg = config
        self._app = app
        self._key = key
        self._sign_state = sign_state if sign_state is not None else SignState()
        if key is not None:
            for v in validator_set.validators:
                if v.ed25519_pubkey == key.ed25519_pubkey and v.eth_address not in (_ZERO_ADDRESS,
                                                                                    key.eth_address):
                    raise ValidatorSetMismatchError(f"validator {v.name}: secp256k1 key is not the set's",
                                                    expected=v.eth_address.hex(), got=key.eth_address.hex())
        self._started = False
        self._buffer: list[Message] = []
        # Per-height state, reset by _enter_height.
        self._height = height
        self._vset = validator_set
        self._my_index: int | None = None
        self._round = 0
        self._step = Step.PROPOSE
        self._locked: tuple[RelayHeader, bytes] | None = None
        """[paper: lockedValue] the block of our last precommit for a block at this height."""
        self._locked_round = -1
        self._valid: tuple[RelayHeader, bytes] | None = None
        """[paper: validValue] the latest block seen with +2/3 prevotes in a round (we re-propose it)."""
        self._valid_round = -1
        self._decision: _Decision | None = None
        self._proposals: dict[int, Proposal] = {}
        self._votes: dict[tuple[int, VoteType], _VoteSet] = {}
        self._round_voters: dict[int, dict[int, int]] = {}
        """round -> validator index -> power, for everyone who voted in the round ([L55])."""
        self._blocks: dict[bytes, _Block] = {}
        """Every proposed block of this height by header hash, with the application's verdict."""
        self._prevote_wait: set[int] = set()
        self._precommit_wait: set[int] = set()
        self._polka_seen: set[int] = set()
        self._evidence: list[Evidence] = []
        self._evidence_keys: set[tuple[int, int, int]] = set()
        self._enter_height(height, validator_set)

    # --- read-only state -------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self._round

    @property
    def step(self) -> Step:
        return self._step

    @property
    def validator_set(self) -> ValidatorSet:
        return self._vset

    @property
    def validator_index(self) -> int | None:
        """This node's index in the current set, or None if it only observes this height."""
        return self._my_index

    @property
    def locked_round(self) -> int:
        return self._locked_round

    @property
    def locked_hash(self) -> bytes | None:
        return header_hash(self._locked[0]) if self._locked is not None else None

    @property
    def valid_round(self) -> int:
        return self._valid_round

    @property
    def sign_state(self) -> SignState:
        """The current signing-safety record (the last one output in :class:`PersistSignState`)."""
        return self._sign_state

    @property
    def evidence(self) -> tuple[Evidence, ...]:
        """Equivocation seen at the current height."""
        return tuple(self._evidence)

    def proposer(self, round_: int) -> int:
        """Index of the proposer of ``round_`` at the current height."""
        return proposer_index(self._vset, self._height, round_)

    def gossip(self) -> tuple[Message, ...]:
        """Messages worth re-sending to peers that may have missed them: every proposal accepted at this
        height, this node's own votes at this height, and the prevotes that make its ``valid_round``
        proof of lock (a peer needs them to accept the re-proposal of that block, [L28]). The core never
        re-sends by itself; a host re-sends these when a height makes no progress for a while (the
        paper assumes that messages are eventually delivered)."""
        msgs: list[Message] = [self._proposals[r] for r in sorted(self._proposals)]
        for _, vs in sorted(self._votes.items(), key=lambda kv: kv[0]):
            own = vs.first.get(self._my_index) if self._my_index is not None else None
            if own is not None:
                msgs.append(own)
        if self._valid is not None:
            pol = self._votes.get((self._valid_round, VoteType.PREVOTE))
            bh = header_hash(self._valid[0])
            if pol is not None:
                msgs.extend(v for i, v in sorted(pol.by_block.get(bh, {}).items()) if i != self._my_index)
        return tuple(msgs)

    # --- inputs ----------------------------------------------------------------------------------------

    def start(self) -> list[Output]:
        """Enter the first round: 0, or the round of the sign-state record after a restart."""
        if self._started:
            raise RuntimeError("ConsensusCore.start() called twice")
        self._started = True
        out: list[Output] = []
        first_round = 0
        s = self._sign_state
        if s.height == self._height:
            first_round = s.round
            if s.locked_header is not None and s.locked_round >= 0:
                self._locked = self._valid = (s.locked_header, s.locked_block)
                self._locked_round = self._valid_round = s.locked_round
                self._store_block(s.locked_header, s.locked_block)
        self._start_round(first_round, out)
        if s.height == self._height:
            self._restore_own_votes(s, out)
        self._run_rules(out)
        return out

    def _restore_own_votes(self, s: SignState, out: list[Output]) -> None:
        """Count again the votes this validator signed at this height before a restart (the sign state forbids
        signing them anew, and peers may never have got them); :meth:`gossip` re-sends them. The rounds go on as
        before: a step whose vote the core derives again is re-signed with the very same bytes and sent at once."""
        for raw in s.votes:
            try:
                vote = decode_message(raw)
                if not isinstance(vote, Vote) or vote.height != self._height or vote.validator_index != self._my_index:
                    continue
                verify_vote_signature(self._vset, self._cfg.chain_id, vote)
            except ProtocolError:
                continue  # not ours under this set (another key, another set): nothing to re-send
            self._apply_vote(vote, out)

    def on_message(self, msg: Message) -> list[Output]:
        """A proposal or vote from the network. Raises a protocol error if it is invalid."""
        self._check_started()
        out: list[Output] = []
        self._process_message(msg, out)
        self._run_rules(out)
        return out

    def on_timeout(self, timeout: Timeout) -> list[Output]:
        """A timer scheduled by a :class:`ScheduleTimeout` output expired."""
        self._check_started()
        out: list[Output] = []
        if timeout.height != self._height:
            return out
        kind, r = timeout.kind, timeout.round
        if kind is TimeoutKind.COMMIT:
            if self._step is Step.COMMIT:
                self._enter_next_height(out)
        elif self._step is Step.COMMIT or r != self._round:
            return out
        elif kind is TimeoutKind.PROPOSE and self._step is Step.PROPOSE:  # [L57]
            self._cast_vote(VoteType.PREVOTE, None, out)
            self._step = Step.PREVOTE
        elif kind is TimeoutKind.PREVOTE and self._step is Step.PREVOTE:  # [L61]
            self._cast_vote(VoteType.PRECOMMIT, None, out)
            self._step = Step.PRECOMMIT
        elif kind is TimeoutKind.PRECOMMIT:  # [L65]
            self._start_round(r + 1, out)
        self._run_rules(out)
        return out

    def on_commit(self, block: bytes, commit: RelayCommit) -> list[Output]:
        """Catch up: a commit for the current height from a peer or the chain's store.

        Raises if it does not verify against the current validator set (``verify_commit``), if a
        secp256k1 signature in it does not recover to its validator's address, if it is for a later
        height (catch up one height at a time), or if the application rejects the block. A commit for
        a height already decided is ignored.
        """
        self._check_started()
        out: list[Output] = []
        self._apply_commit(block, commit, 0, out)
        return out

    def catch_up(self, applied_height: int,
                 commit_at: Callable[[int], tuple[bytes, RelayCommit] | None]) -> list[Output]:
        """Move the core to the host's application: it holds decided blocks up to ``applied_height`` (block sync
        pulled them from peers with their commits). ``commit_at(h)`` gives the block and commit of height ``h``
        (or None if the host does not hold it).

        Each height below ``applied_height`` is decided from its commit and left at once (no commit pause: the
        next block is already known); the height ``applied_height`` itself is decided as by :meth:`on_commit`
        (the core enters the next height after its ``COMMIT`` timeout). Afterwards the core is at
        ``applied_height + 1``, or in ``COMMIT`` at ``applied_height``, and ``make_block`` is only asked for
        ``applied_height + 1``. Raises like :meth:`on_commit` if the first commit does not verify; a later one
        that does not ends the call with the heights done so far (the next call raises at it). Catch-up signs
        nothing: every height it passes is decided from its commit.
        """
        self._check_started()
        out: list[Output] = []
        while self._height <= applied_height:
            h = self._height
            if self._step is not Step.COMMIT:
                got = commit_at(h)
                if got is None:
                    break
                try:
                    self._apply_commit(got[0], got[1], 0, out)
                except ProtocolError:
                    if out:
                        break  # keep the heights done (and their timers); the next call raises at this one
                    raise
            if h == applied_height:
                break
            self._enter_next_height(out)
        self._run_rules(out)
        return out

    def _apply_commit(self, block: bytes, commit: RelayCommit, wait_ms: int, out: list[Output]) -> None:
        h = commit.header.height
        if h < self._height or (h == self._height and self._step is Step.COMMIT):
            return
        if h > self._height:
            raise HeaderError("commit for a later height: catch up one height at a time",
                              expected=self._height, got=h)
        verify_commit(self._vset, self._cfg.chain_id, commit)
        digest = vote_sign_bytes(self._cfg.chain_id, VoteType.PRECOMMIT, h, commit.round, header_hash(commit.header))
        for sig in commit.signatures:
            v = self._vset.validators[sig.validator_index]
            if sig.secp256k1_sig and recover_eth_address(digest, sig.secp256k1_sig) != v.eth_address:
                raise SignatureError(f"commit h={h}: secp256k1 signature of validator {v.name} by another key",
                                     expected=v.eth_address.hex())
        entry = self._store_block(commit.header, block)
        if not entry.valid:
            raise HeaderError(f"commit h={h}: the application rejects the committed block",
                              got=header_hash(commit.header).hex())
        self._decide(block, commit, wait_ms, out)

    # --- message handling ------------------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("call ConsensusCore.start() first")

    def _process_message(self, msg: Message, out: list[Output]) -> None:
        check_message_ranges(msg)
        if msg.height < self._height:
            return
        if msg.height > self._height:
            if (msg.height - self._height <= self._cfg.max_future_heights
                    and len(self._buffer) < self._cfg.max_buffered_messages):
                self._buffer.append(msg)
            return
        if self._step is Step.COMMIT or msg.round > self._round + self._cfg.max_round_ahead:
            return
        if isinstance(msg, Proposal):
            self._validate_proposal(msg)
            self._apply_proposal(msg, out)
        else:
            verify_vote_signature(self._vset, self._cfg.chain_id, msg)
            self._apply_vote(msg, out)

    def _validate_proposal(self, p: Proposal) -> None:
        expected = self.proposer(p.round)
        if p.proposer_index != expected:
            raise SignatureError(f"proposal h={p.height} r={p.round} is not by the round's proposer",
                                 expected=expected, got=p.proposer_index)
        verify_proposal_signature(self._vset, self._cfg.chain_id, p)

    def _apply_proposal(self, p: Proposal, out: list[Output]) -> None:
        prior = self._proposals.get(p.round)
        if prior is not None:
            ev_key = (p.round, 0, p.proposer_index)
            if prior != p and ev_key not in self._evidence_keys:
                self._evidence_keys.add(ev_key)
                self._record_evidence(ConflictingProposalEvidence(prior, p), out)
            return
        self._proposals[p.round] = p
        self._store_block(p.header, p.block)

    def _apply_vote(self, vote: Vote, out: list[Output]) -> None:
        key = (vote.round, vote.type)
        vs = self._votes.get(key)
        if vs is None:
            vs = self._votes[key] = _VoteSet()
        power = self._vset.validators[vote.validator_index].power
        conflict = vs.add(vote, power, count_conflict=vote.block_hash is None or vote.block_hash in self._blocks)
        if conflict is not None:
            ev_key = (vote.round, int(vote.type), vote.validator_index)
            if ev_key not in self._evidence_keys:  # one piece of evidence per offence is enough
                self._evidence_keys.add(ev_key)
                self._record_evidence(DuplicateVoteEvidence(conflict, vote), out)
            return
        self._round_voters.setdefault(vote.round, {})[vote.validator_index] = power

    def _record_evidence(self, ev: Evidence, out: list[Output]) -> None:
        self._evidence.append(ev)
        out.append(EvidenceFound(ev))

    def _store_block(self, header: RelayHeader, block: bytes) -> _Block:
        """Remember a proposed block and whether the application accepts it (asked once per block)."""
        bh = header_hash(header)
        entry = self._blocks.get(bh)
        if entry is None or (not entry.valid and entry.block != block):
            entry = _Block(header, block, self._app.validate_block(header, block))
            self._blocks[bh] = entry
        return entry

    def _valid_block(self, block_hash: bytes | None) -> _Block | None:
        entry = self._blocks.get(block_hash) if block_hash is not None else None
        return entry if entry is not None and entry.valid else None

    # --- the rules -------------------------------------------------------------------------------------

    def _run_rules(self, out: list[Output]) -> None:
        """Fire rules until none applies. Each rule fires at most once per round, so this ends."""
        while self._step is not Step.COMMIT:
            if self._try_decide(out) or self._try_round_skip(out) or self._try_round_rules(out):
                continue
            return

    def _quorum(self, power: int) -> bool:
        return self._vset.quorum_reached(power)

    def _skip_power(self, power: int) -> bool:
        return 3 * power > self._vset.total_power

    def _try_decide(self, out: list[Output]) -> bool:
        """[L49] +2/3 precommits for a valid block in any round of the height: decide it."""
        for (r, vtype), vs in self._votes.items():
            if vtype is not VoteType.PRECOMMIT:
                continue
            found, bh = vs.quorum_value(self._vset)
            entry = self._valid_block(bh) if found else None
            if entry is None or bh is None:
                continue
            sigs = tuple(CommitSignature(v.validator_index, v.ed25519_sig, v.secp256k1_sig)
                         for _, v in sorted(vs.by_block[bh].items()))
            self._decide(entry.block, RelayCommit(entry.header, r, sigs), self._cfg.timeouts.commit_ms, out)
            return True
        return False

    def _try_round_skip(self, out: list[Output]) -> bool:
        """[L55] votes of more than 1/3 of the power from a later round: go to that round."""
        later = [r for r, voters in self._round_voters.items()
                 if r > self._round and self._skip_power(sum(voters.values()))]
        if not later:
            return False
        self._start_round(max(later), out)
        return True

    def _try_round_rules(self, out: list[Output]) -> bool:
        r = self._round
        prevotes = self._votes.get((r, VoteType.PREVOTE))
        precommits = self._votes.get((r, VoteType.PRECOMMIT))
        if self._step is Step.PROPOSE:
            p = self._proposals.get(r)
            if p is not None and self._try_prevote_proposal(p, out):
                return True
        if self._step >= Step.PREVOTE and prevotes is not None:
            if r not in self._prevote_wait and self._quorum(prevotes.power_any):  # [L34]
                self._prevote_wait.add(r)
                self._schedule(TimeoutKind.PREVOTE, r, out)
                return True
            found, bh = prevotes.quorum_value(self._vset)
            entry = self._valid_block(bh) if found else None
            if entry is not None and r not in self._polka_seen:  # [L36]
                self._polka_seen.add(r)
                if self._step is Step.PREVOTE:
                    self._locked, self._locked_round = (entry.header, entry.block), r
                    self._cast_vote(VoteType.PRECOMMIT, bh, out)
                    self._step = Step.PRECOMMIT
                self._valid, self._valid_round = (entry.header, entry.block), r
                return True
            if found and bh is None and self._step is Step.PREVOTE:  # [L44]
                self._cast_vote(VoteType.PRECOMMIT, None, out)
                self._step = Step.PRECOMMIT
                return True
        if precommits is not None and r not in self._precommit_wait and self._quorum(precommits.power_any):
            self._precommit_wait.add(r)  # [L47]
            self._schedule(TimeoutKind.PRECOMMIT, r, out)
            return True
        return False

    def _try_prevote_proposal(self, p: Proposal, out: list[Output]) -> bool:
        """[L22] a fresh proposal, or [L28] one with a proof of lock from round ``pol_round``."""
        bh = p.block_hash
        entry = self._valid_block(bh)
        if p.pol_round == -1:
            ok = entry is not None and (self._locked_round == -1 or self.locked_hash == bh)
        else:
            pol = self._votes.get((p.pol_round, VoteType.PREVOTE))
            found, pol_hash = pol.quorum_value(self._vset) if pol is not None else (False, None)
            if not (found and pol_hash == bh):
                return False  # wait for the proof of lock (or the propose timeout)
            ok = entry is not None and (self._locked_round <= p.pol_round or self.locked_hash == bh)
        self._cast_vote(VoteType.PREVOTE, bh if ok else None, out)
        self._step = Step.PREVOTE
        return True

    # --- actions ---------------------------------------------------------------------------------------

    def _schedule(self, kind: TimeoutKind, round_: int, out: list[Output]) -> None:
        out.append(ScheduleTimeout(Timeout(kind, self._height, round_),
                                   self._cfg.timeouts.duration_ms(kind, round_)))

    def _start_round(self, round_: int, out: list[Output]) -> None:
        """[L11] StartRound."""
        self._round = round_
        self._step = Step.PROPOSE
        if self._my_index is not None and self.proposer(round_) == self._my_index:
            if self._valid is not None:
                (header, block), pol_round = self._valid, self._valid_round
            else:
                made = self._app.make_block(self._height, round_)
                if made is None:  # the application is not at this height (catching up): propose nothing
                    self._schedule(TimeoutKind.PROPOSE, round_, out)
                    return
                block, header = made
                self._check_own_header(header)
                pol_round = -1
            self._sign_proposal(header, block, pol_round, out)
        self._schedule(TimeoutKind.PROPOSE, round_, out)

    def _check_own_header(self, header: RelayHeader) -> None:
        header.validate()
        if (header.chain_id, header.height, header.validators_hash) != (self._cfg.chain_id, self._height,
                                                                         self._vset.hash):
            raise HeaderError("make_block returned a header for another chain, height or validator set",
                              expected=(self._cfg.chain_id, self._height, self._vset.hash.hex()),
                              got=(header.chain_id, header.height, header.validators_hash.hex()))

    def _sign_proposal(self, header: RelayHeader, block: bytes, pol_round: int, out: list[Output]) -> None:
        key, idx = self._key, self._my_index
        if key is None or idx is None:
            return
        digest = proposal_sign_bytes(self._cfg.chain_id, self._height, self._round, pol_round, header_hash(header),
                                     block)
        if not self._sign_state.allows(self._height, self._round, SignStep.PROPOSE, digest):
            return
        self._sign_state = self._sign_state.signed(self._height, self._round, SignStep.PROPOSE, digest)
        p = sign_proposal(key, self._cfg.chain_id, self._height, self._round, pol_round, header, block, idx)
        out.append(PersistSignState(self._sign_state))
        out.append(Broadcast(p))
        self._apply_proposal(p, out)

    def _cast_vote(self, vtype: VoteType, block_hash: bytes | None, out: list[Output]) -> None:
        """Sign, record and broadcast our vote, unless we only observe or the sign state forbids it."""
        key, idx = self._key, self._my_index
        if key is None or idx is None:
            return
        step = SignStep.PREVOTE if vtype is VoteType.PREVOTE else SignStep.PRECOMMIT
        digest = vote_sign_bytes(self._cfg.chain_id, vtype, self._height, self._round, block_hash)
        if not self._sign_state.allows(self._height, self._round, step, digest):
            return
        lock = None
        if vtype is VoteType.PRECOMMIT and block_hash is not None and self._locked is not None:
            lock = self._locked
        with_secp = self._vset.validators[idx].eth_address != _ZERO_ADDRESS
        vote = sign_vote(key, self._cfg.chain_id, vtype, self._height, self._round, block_hash, idx,
                         with_secp256k1=with_secp)
        self._sign_state = self._sign_state.signed(self._height, self._round, step, digest, lock=lock,
                                                   vote=encode_message(vote))
        out.append(PersistSignState(self._sign_state))
        out.append(Broadcast(vote))
        self._apply_vote(vote, out)

    def _decide(self, block: bytes, commit: RelayCommit, wait_ms: int, out: list[Output]) -> None:
        self._decision = _Decision(block, commit)
        self._step = Step.COMMIT
        out.append(Decided(self._height, block, commit))
        out.append(ScheduleTimeout(Timeout(TimeoutKind.COMMIT, self._height, commit.round), wait_ms))

    def _enter_next_height(self, out: list[Output]) -> None:
        decision = self._decision
        if decision is None:  # unreachable: COMMIT is only entered by _decide
            raise RuntimeError("no decision to build on")
        header = decision.commit.header
        vset = self._vset
        if header.next_validators_hash != vset.hash:
            vset = self._app.next_validator_set(header)
            if vset.hash != header.next_validators_hash:
                raise ValidatorSetMismatchError("next_validator_set returned a set the header does not name",
                                                expected=header.next_validators_hash.hex(), got=vset.hash.hex())
        self._enter_height(self._height + 1, vset)
        self._start_round(0, out)
        pending, self._buffer = self._buffer, []
        for msg in pending:
            if msg.height > self._height:
                self._buffer.append(msg)
                continue
            try:
                self._process_message(msg, out)
            except ProtocolError as exc:
                out.append(MessageRejected(msg, exc))

    def _enter_height(self, height: int, vset: ValidatorSet) -> None:
        self._height = height
        self._vset = vset
        self._my_index = self._index_in(vset)
        self._round = 0
        self._step = Step.PROPOSE
        self._locked = None
        self._locked_round = -1
        self._valid = None
        self._valid_round = -1
        self._decision = None
        self._proposals = {}
        self._votes = {}
        self._round_voters = {}
        self._blocks = {}
        self._prevote_wait = set()
        self._precommit_wait = set()
        self._polka_seen = set()
        self._evidence = []
        self._evidence_keys = set()

    def _index_in(self, vset: ValidatorSet) -> int | None:
        if self._key is None:
            return None
        for i, v in enumerate(vset.validators):
            if v.ed25519_pubkey == self._key.ed25519_pubkey:
                return i if v.eth_address in (_ZERO_ADDRESS, self._key.eth_address) else None
        return None
