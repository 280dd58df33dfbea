"""A deterministic simulated network of relay validators on ONE controllable clock. TEST ONLY.

Like ibc-go's coordinator: the :class:`Sim` owns the clock (``now`` in ms, only moved by the event queue),
the network (delays, drops and reordering drawn from one seeded PRNG; partitions), every node's timers
and every node's "disk" (its sign-state record, as the JSON a real host would write, and its applied
blocks). Each :class:`SimNode` is a tiny host around a real :class:`ConsensusCore`: it handles the core's
outputs in order, re-sends :meth:`ConsensusCore.gossip` when it makes no progress, and serves and
requests commits for catch-up. Same seed, same run.

Invariants checked on every event, not only at the end of a test:

* agreement — no two honest nodes decide different blocks at one height;
* no double signing — an honest validator never signs two different messages of one kind at one
  height and round, across crashes and restarts;
* every decided commit passes ``verify_commit`` and its secp256k1 signatures recover to the signers'
  eth addresses.

Validator keys come from fixed, public seeds: TEST ONLY.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.certificate import RelayCommit, RelayHeader, Validator, ValidatorSet, verify_commit
from protocol.codec import sha256
from protocol.errors import ProtocolError
from protocol.types import ChainId
from relay.chain.consensus import (
    Broadcast,
    ConsensusConfig,
    ConsensusCore,
    Decided,
    EvidenceFound,
    Message,
    MessageRejected,
    Output,
    PersistSignState,
    Proposal,
    ScheduleTimeout,
    SignState,
    TimeoutConfig,
    ValidatorKey,
    VoteType,
    proposal_sign_bytes,
    recover_eth_address,
    vote_sign_bytes,
)
from relay.chain.consensus.messages import header_hash, sign_proposal, sign_vote

CHAIN = ChainId("relay-test")
T0 = 1_700_000_000_000

FAST = TimeoutConfig(propose_ms=300, propose_delta_ms=100, prevote_ms=100, prevote_delta_ms=50,
                     precommit_ms=100, precommit_delta_ms=50, commit_ms=10)


def validator_key(i: int, generation: int = 0) -> ValidatorKey:
    """A TEST-ONLY validator key from a fixed, public seed."""
    seed = hashlib.sha256(f"parkrelay-test-seed/relay-consensus/{generation}/{i}/ed25519".encode()).digest()
    secp = hashlib.sha256(f"parkrelay-test-seed/relay-consensus/{generation}/{i}/secp256k1".encode()).digest()
    return ValidatorKey(seed, secp)


def make_vset(keys: Sequence[ValidatorKey], powers: Sequence[int]) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(f"v{i}", k.ed25519_pubkey, k.eth_address, p)
                              for i, (k, p) in enumerate(zip(keys, powers, strict=True))))


class SimApp:
    """A toy relay application: blocks link by header hash, the state root hashes the block history.

    ``sets(h)`` is the validator set that signs height ``h``. A block is valid iff its header is exactly
    what this node computes from the block bytes on top of its own chain (and it is not marked bad).
    """

    def __init__(self, name: str, sets: Callable[[int], ValidatorSet]) -> None:
        self.name = name
        self.sets = sets
        self.headers: list[RelayHeader] = []
        self.blocks: list[bytes] = []
        self.commits: list[RelayCommit] = []
        self.refused_heights: list[int] = []
        """Heights ``make_block`` was asked for while the application was not at the height below."""

    @property
    def height(self) -> int:
        """Last applied height (0 before the first block)."""
        return len(self.headers)

    def header_for(self, block: bytes, round_: int) -> RelayHeader:
        prev = self.headers[-1] if self.headers else None
        height = self.height + 1
        data_hash = sha256(block)
        return RelayHeader(
            chain_id=CHAIN, height=height, time_ms=(prev.time_ms if prev else T0) + 1000 + round_,
            last_block_hash=header_hash(prev) if prev else bytes(32), data_hash=data_hash,
            state_root=sha256((prev.state_root if prev else bytes(32)) + data_hash),
            validators_hash=self.sets(height).hash, next_validators_hash=self.sets(height + 1).hash,
        )

    def make_block(self, height: int, round_: int, salt: bytes = b"") -> tuple[bytes, RelayHeader] | None:
        if height != self.height + 1:  # not at that height (block sync took it past, or not applied yet)
            self.refused_heights.append(height)
            return None
        block = f"sim-block|{height}|{round_}|{self.name}|".encode() + salt
        return block, self.header_for(block, round_)

    def validate_block(self, header: RelayHeader, block: bytes) -> bool:
        if 1 <= header.height <= self.height and self.headers[header.height - 1] == header:
            return self.blocks[header.height - 1] == block  # applied already (block sync), as BftDriver answers
        if not block.startswith(f"sim-block|{self.height + 1}|".encode()) or b"|bad" in block:
            return False
        prev = self.headers[-1] if self.headers else None
        expected = self.header_for(block, 0)
        return (header.time_ms > (prev.time_ms if prev else T0)
                and header == RelayHeader(**{**_fields(expected), "time_ms": header.time_ms}))

    def next_validator_set(self, header: RelayHeader) -> ValidatorSet:
        return self.sets(header.height + 1)

    def apply(self, block: bytes, commit: RelayCommit) -> None:
        if commit.header.height != self.height + 1:
            raise AssertionError(f"{self.name}: applying height {commit.header.height} on {self.height}")
        self.headers.append(commit.header)
        self.blocks.append(block)
        self.commits.append(commit)


def _fields(h: RelayHeader) -> dict[str, Any]:
    return {k: getattr(h, k) for k in RelayHeader.__slots__}


@dataclass
class NetConfig:
    min_delay_ms: int = 5
    max_delay_ms: int = 40
    drop_rate: float = 0.0
    """Probability that one delivery (message to one node) is lost."""
    gossip_ms: int = 1000
    """A node whose height did not change for this long re-sends its gossip."""
    sync_ms: int = 0
    """Every this many ms a node pulls the blocks it lacks (with commits) from the highest peer, as the node
    runtime's block sync does, independently of consensus; 0: off (catch-up only by commit requests)."""


class SafetyViolation(AssertionError):
    pass


@dataclass
class SimNode:
    index: int
    key: ValidatorKey
    app: SimApp
    byzantine: bool = False
    alive: bool = True
    incarnation: int = 0
    core: ConsensusCore | None = None
    disk_sign_state: str | None = None
    """The sign-state record as the host stored it (JSON), or None if it never signed."""
    last_progress: int = 0
    """Height at the last gossip tick."""
    requested: dict[int, int] = field(default_factory=dict)
    """height -> time of the last commit request (throttle)."""
    paused: bool = False
    """SIGSTOPped: nothing it receives or any timer of it runs until it is resumed."""
    stash: list[tuple[Any, ...]] = field(default_factory=list)
    """Events that reached it while paused, replayed in order when it resumes."""


class Sim:
    """N validators, one clock, one seeded network. See the module docstring."""

    def __init__(self, *, n: int = 4, powers: Sequence[int] | None = None, seed: int = 0,
                 net: NetConfig | None = None, byzantine: Iterable[int] = (), down: Iterable[int] = (),
                 timeouts: TimeoutConfig = FAST, sets: Callable[[int], ValidatorSet] | None = None,
                 keys: Sequence[ValidatorKey] | None = None, check_commits: bool = True) -> None:
        self.keys = list(keys) if keys is not None else [validator_key(i) for i in range(n)]
        self.genesis_set = make_vset(self.keys[:n], powers if powers is not None else [1] * n)
        self.sets = sets if sets is not None else (lambda _h: self.genesis_set)
        self.cfg = ConsensusConfig(CHAIN, timeouts)
        self.net = net if net is not None else NetConfig()
        self.rng = random.Random(seed)
        self.now = 0
        self._queue: list[tuple[int, int, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.partition: list[set[int]] | None = None
        self.check_commits = check_commits
        # observations
        self.decided: dict[int, bytes] = {}
        """height -> header hash decided by the honest nodes."""
        self.signed: dict[tuple[int, int, int, str], bytes] = {}
        """(validator, height, round, kind) -> digest signed, for honest validators."""
        self.evidence: list[tuple[int, Any]] = []
        self.rejected: list[tuple[int, Message, ProtocolError]] = []
        self.delivered = 0
        byz = set(byzantine)
        self.nodes = [SimNode(i, k, SimApp(f"v{i}", self.sets), byzantine=i in byz)
                      for i, k in enumerate(self.keys)]
        for i in down:
            self.nodes[i].alive = False
        for node in self.nodes:
            if node.alive:
                self._boot(node)

    # --- clock and events ------------------------------------------------------------------------------

    def _push(self, delay_ms: int, event: tuple[Any, ...]) -> None:
        heapq.heappush(self._queue, (self.now + delay_ms, next(self._seq), event))

    def run_until(self, done: Callable[[], bool], *, max_ms: int = 600_000) -> bool:
        """Process events in time order until ``done()`` or the clock passes ``now + max_ms``."""
        deadline = self.now + max_ms
        while not done():
            if not self._queue or self._queue[0][0] > deadline:
                self.now = deadline
                return done()
            t, _, event = heapq.heappop(self._queue)
            self.now = t
            self._dispatch(event)
        return True

    def run_for(self, ms: int) -> None:
        self.run_until(lambda: False, max_ms=ms)

    def honest_alive(self) -> list[SimNode]:
        return [n for n in self.nodes if n.alive and not n.byzantine]

    def min_height(self, nodes: Iterable[SimNode] | None = None) -> int:
        """The lowest applied height among ``nodes`` (default: honest live nodes)."""
        nodes = list(nodes) if nodes is not None else self.honest_alive()
        return min(n.app.height for n in nodes)

    def run_to_height(self, height: int, *, max_ms: int = 600_000, nodes: Iterable[SimNode] | None = None) -> bool:
        group = list(nodes) if nodes is not None else None
        return self.run_until(lambda: self.min_height(group) >= height, max_ms=max_ms)

    # --- nodes -----------------------------------------------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        height = node.app.height + 1
        state = SignState.from_json(node.disk_sign_state) if node.disk_sign_state is not None else None
        node.core = ConsensusCore(self.cfg, node.app, self.sets(height), height, node.key, state)
        node.last_progress = -1
        self._handle(node, node.core.start())
        self._push(self.net.gossip_ms, ("gossip", node.index, node.incarnation))
        if self.net.sync_ms:
            self._push(self.net.sync_ms, ("sync", node.index, node.incarnation))

    def crash(self, i: int, *, drop_in_flight: bool = False) -> None:
        """Kill node ``i``. ``drop_in_flight``: its messages not yet delivered are lost too (SIGKILL right after it
        stored a sign state, before its broadcast left the process)."""
        node = self.nodes[i]
        if drop_in_flight:
            self._queue = [e for e in self._queue if not (e[2][0] == "deliver" and e[2][2] == i)]
            heapq.heapify(self._queue)
        node.alive = False
        node.paused = False
        node.stash = []
        node.core = None
        node.incarnation += 1

    def pause(self, i: int) -> None:
        """SIGSTOP: the node keeps its state, but runs nothing (messages, timers) until :meth:`resume`."""
        self.nodes[i].paused = True

    def resume(self, i: int) -> None:
        """SIGCONT: everything that reached the node meanwhile (messages, expired timers) runs at once, in order."""
        node = self.nodes[i]
        node.paused = False
        stash, node.stash = node.stash, []
        for event in stash:
            self._dispatch(event)

    def sync(self, i: int) -> None:
        """Block sync of the node runtime: node ``i`` pulls every block it lacks, with its commit, from the
        highest live peer and applies it (outside consensus), then its host moves the core to the new head."""
        node = self.nodes[i]
        peers = [n for n in self.nodes if n.alive and not n.paused and n is not node and not n.byzantine]
        best = max(peers, key=lambda n: n.app.height, default=None)
        if not node.alive or node.core is None or best is None or best.app.height <= node.app.height:
            return
        for h in range(node.app.height + 1, best.app.height + 1):
            node.app.apply(best.app.blocks[h - 1], best.app.commits[h - 1])
        self._catch_up(node)

    def _catch_up(self, node: SimNode) -> None:
        """The host's catch-up (as ``BftDriver._catch_up``): the core follows the application's head."""
        core, app = node.core, node.app
        if core is None or app.height < core.height:
            return
        try:
            outputs = core.catch_up(app.height, lambda h: (app.blocks[h - 1], app.commits[h - 1]))
        except ProtocolError as exc:
            self.rejected.append((node.index, None, exc))  # type: ignore[arg-type]
            return
        self._handle(node, outputs)

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        node.alive = True
        node.incarnation += 1
        self._boot(node)

    def heal(self) -> None:
        self.partition = None

    # --- output handling (the host) ----------------------------------------------------------------

    def _handle(self, node: SimNode, outputs: list[Output]) -> None:
        for prev, out in zip([None, *outputs], outputs, strict=False):
            if isinstance(out, PersistSignState):
                node.disk_sign_state = out.state.to_json()
            elif isinstance(out, Broadcast):
                if not isinstance(prev, PersistSignState) or prev.state.sign_bytes != _digest(out.message):
                    raise SafetyViolation(f"node {node.index} broadcast a message it had not persisted first")
                self._record_signed(node, out.message)
                if node.byzantine:
                    self._byzantine_send(node, out.message)
                else:
                    self._broadcast(node.index, out.message)
            elif isinstance(out, ScheduleTimeout):
                self._push(out.duration_ms, ("timeout", node.index, node.incarnation, out.timeout))
            elif isinstance(out, Decided):
                self._on_decided(node, out)
            elif isinstance(out, EvidenceFound):
                self.evidence.append((node.index, out.evidence))
            elif isinstance(out, MessageRejected):
                self.rejected.append((node.index, out.message, out.error))

    def _record_signed(self, node: SimNode, msg: Message) -> None:
        if node.byzantine:
            return
        kind = "proposal" if isinstance(msg, Proposal) else msg.type.name
        key = (node.index, msg.height, msg.round, kind)
        digest = _digest(msg)
        prior = self.signed.setdefault(key, digest)
        if prior != digest:
            raise SafetyViolation(f"validator {node.index} double-signed {key} at t={self.now}")

    def _on_decided(self, node: SimNode, d: Decided) -> None:
        if d.height <= node.app.height:  # block sync applied it already (catch-up)
            if header_hash(node.app.headers[d.height - 1]) != header_hash(d.commit.header):
                raise SafetyViolation(f"node {node.index} decided {d.height} against the block it synced")
            return
        node.app.apply(d.block, d.commit)
        if node.byzantine:
            return
        bh = header_hash(d.commit.header)
        prior = self.decided.get(d.height)
        if prior is None:
            self.decided[d.height] = bh
            if self.check_commits:
                check_commit(self.sets(d.height), d.commit)
        elif prior != bh:
            raise SafetyViolation(f"height {d.height}: node {node.index} decided {bh.hex()[:12]}, "
                                  f"another honest node {prior.hex()[:12]} (t={self.now})")

    # --- network -------------------------------------------------------------------------------------

    def _connected(self, src: int, dst: int) -> bool:
        if self.partition is None:
            return True
        return any(src in g and dst in g for g in self.partition)

    def _send(self, src: int, dst: int, event: tuple[Any, ...]) -> None:
        if not self._connected(src, dst) or self.rng.random() < self.net.drop_rate:
            return
        self._push(self.rng.randint(self.net.min_delay_ms, self.net.max_delay_ms), event)

    def _broadcast(self, src: int, msg: Message, to: Iterable[int] | None = None) -> None:
        for dst in (to if to is not None else range(len(self.nodes))):
            if dst != src:
                self._send(src, dst, ("deliver", dst, src, msg))

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        target = self.nodes[event[1]]
        if target.paused and kind != "commit_request":
            target.stash.append(event)
            return
        if target.paused:  # a paused server answers nothing
            return
        if kind == "deliver":
            self._deliver(event[1], event[2], event[3])
        elif kind == "timeout":
            _, i, inc, timeout = event
            node = self.nodes[i]
            if node.alive and node.incarnation == inc and node.core is not None:
                self._catch_up(node)
                self._handle(node, node.core.on_timeout(timeout))
        elif kind == "sync":
            _, i, inc = event
            node = self.nodes[i]
            if node.alive and node.incarnation == inc:
                self.sync(i)
                self._push(self.net.sync_ms, ("sync", i, inc))
        elif kind == "gossip":
            self._gossip(event[1], event[2])
        elif kind == "commit_request":
            self._serve_commit(event[1], event[2], event[3])
        elif kind == "commit":
            _, i, block, commit = event
            node = self.nodes[i]
            if node.alive and node.core is not None and commit.header.height == node.core.height:
                self._catch_up(node)
                if commit.header.height == node.core.height:
                    self._handle(node, node.core.on_commit(block, commit))

    def _deliver(self, dst: int, src: int, msg: Message) -> None:
        node = self.nodes[dst]
        if not node.alive or node.core is None:
            return
        self.delivered += 1
        self._catch_up(node)
        core = node.core
        if msg.height > core.height and self.now - node.requested.get(core.height, -10**9) > 200:
            node.requested[core.height] = self.now
            self._send(dst, src, ("commit_request", src, dst, core.height))
        try:
            outputs = core.on_message(msg)
        except ProtocolError as exc:
            self.rejected.append((dst, msg, exc))
            return
        self._handle(node, outputs)

    def _serve_commit(self, server: int, requester: int, height: int) -> None:
        node = self.nodes[server]
        if node.alive and node.app.height >= height:
            self._send(server, requester, ("commit", requester, node.app.blocks[height - 1],
                                           node.app.commits[height - 1]))

    def _gossip(self, i: int, inc: int) -> None:
        node = self.nodes[i]
        if not node.alive or node.incarnation != inc or node.core is None:
            return
        core = node.core
        progress = core.height
        if progress == node.last_progress:
            for msg in core.gossip():
                self._broadcast(i, msg)
        node.last_progress = progress
        self._push(self.net.gossip_ms, ("gossip", i, inc))

    # --- byzantine behaviour -----------------------------------------------------------------------

    def _byzantine_send(self, node: SimNode, msg: Message) -> None:
        """Equivocate: a conflicting twin of ``msg``, signed without any guard, to a random part of the
        network (or both to everyone, so honest nodes see the evidence)."""
        twin = self._twin(node, msg)
        others = [j for j in range(len(self.nodes)) if j != node.index]
        if twin is None:
            self._broadcast(node.index, msg)
            return
        mode = self.rng.random()
        if mode < 0.2:
            self._broadcast(node.index, msg)
            self._broadcast(node.index, twin)
            return
        self.rng.shuffle(others)
        cut = self.rng.randint(0, len(others))
        self._broadcast(node.index, msg, others[:cut])
        self._broadcast(node.index, twin, others[cut:])

    def _twin(self, node: SimNode, msg: Message) -> Message | None:
        if node.core is None or self.rng.random() < 0.2:
            return None
        if isinstance(msg, Proposal):
            # A quarter of the twins are blocks the application rejects.
            bad = b"|bad" if self.rng.random() < 0.25 else b""
            block, header = node.app.make_block(msg.height, msg.round, salt=bad + self.rng.randbytes(4))
            return sign_proposal(node.key, CHAIN, msg.height, msg.round, -1, header, block, msg.proposer_index)
        known = sorted({p.block_hash for p in node.core.gossip() if isinstance(p, Proposal)})
        choices: list[bytes | None] = [None, *known, self.rng.randbytes(32)]
        choices = [c for c in choices if c != msg.block_hash]
        alt = self.rng.choice(choices)
        return sign_vote(node.key, CHAIN, msg.type, msg.height, msg.round, alt, msg.validator_index,
                         with_secp256k1=True)


def _digest(msg: Message) -> bytes:
    if isinstance(msg, Proposal):
        return proposal_sign_bytes(CHAIN, msg.height, msg.round, msg.pol_round, msg.block_hash, msg.block)
    return vote_sign_bytes(CHAIN, msg.type, msg.height, msg.round, msg.block_hash)


def check_commit(vset: ValidatorSet, commit: RelayCommit) -> None:
    """``verify_commit`` plus: every signer with an eth address signed with secp256k1 too, and that
    signature recovers (as ``ecrecover`` would) to its eth address; signers without one did not."""
    verify_commit(vset, CHAIN, commit)
    digest = vote_sign_bytes(CHAIN, VoteType.PRECOMMIT, commit.header.height, commit.round,
                             header_hash(commit.header))
    for sig in commit.signatures:
        v = vset.validators[sig.validator_index]
        if v.eth_address == bytes(20):
            if sig.secp256k1_sig:
                raise SafetyViolation(f"{v.name} has no eth address but a secp256k1 signature")
            continue
        if recover_eth_address(digest, sig.secp256k1_sig) != v.eth_address:
            raise SafetyViolation(f"secp256k1 signature of {v.name} does not recover to its address")

