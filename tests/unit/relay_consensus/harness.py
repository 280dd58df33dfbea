"""Scripted peers around one :class:`ConsensusCore`: the test plays the network and the clock. TEST ONLY.

Four equal validators; at height 1 the proposer of round r is validator ``(1 + r) % 4``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.certificate import CommitSignature, RelayCommit, RelayHeader, ValidatorSet
from protocol.types import ChainId
from relay.chain.consensus import (
    Broadcast,
    ConsensusConfig,
    ConsensusCore,
    Decided,
    Message,
    Output,
    PersistSignState,
    Proposal,
    ScheduleTimeout,
    SignState,
    Timeout,
    TimeoutKind,
    ValidatorKey,
    Vote,
    VoteType,
)
from relay.chain.consensus.messages import header_hash, sign_proposal, sign_vote, vote_sign_bytes
from tests.unit.relay_consensus.sim import CHAIN, FAST, SimApp, make_vset, validator_key

KEYS = [validator_key(i) for i in range(6)]
VSET = make_vset(KEYS[:4], [1, 1, 1, 1])
CFG = ConsensusConfig(CHAIN, FAST)
PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT


@dataclass
class Node:
    """One core and its application; :meth:`feed` plays the host (applies decisions, keeps outputs)."""

    core: ConsensusCore
    app: SimApp
    outputs: list[Output] = field(default_factory=list)

    def feed(self, *msgs: Message) -> list[Output]:
        out: list[Output] = []
        for m in msgs:
            out += self._host(self.core.on_message(m))
        return out

    def timeout(self, kind: TimeoutKind, round_: int | None = None, height: int | None = None) -> list[Output]:
        t = Timeout(kind, self.core.height if height is None else height,
                    self.core.round if round_ is None else round_)
        return self._host(self.core.on_timeout(t))

    def commit(self, block: bytes, commit: RelayCommit) -> list[Output]:
        return self._host(self.core.on_commit(block, commit))

    def _host(self, out: list[Output]) -> list[Output]:
        for o in out:
            if isinstance(o, Decided):
                self.app.apply(o.block, o.commit)
        self.outputs += out
        return out


def make_node(i: int | None, *, sign_state: SignState | None = None, vset: ValidatorSet = VSET,
              sets: Callable[[int], ValidatorSet] | None = None, key: ValidatorKey | None = None,
              app: SimApp | None = None) -> Node:
    """A started core for validator ``i`` (None: an observer) at the app's next height."""
    app = app if app is not None else SimApp(f"v{i}", sets if sets is not None else (lambda _h: vset))
    k = key if key is not None else (KEYS[i] if i is not None else None)
    core = ConsensusCore(CFG, app, app.sets(app.height + 1), app.height + 1, k, sign_state)
    node = Node(core, app)
    node._host(core.start())
    return node


def block_at(height: int, round_: int = 0, salt: bytes = b"", *, vset: ValidatorSet = VSET,
             proposer: str = "p") -> tuple[bytes, RelayHeader]:
    """A valid block at ``height`` on top of :func:`chain` blocks (same toy application)."""
    app = SimApp(proposer, lambda _h: vset)
    for h in range(1, height):
        b, hd = app.make_block(h, 0)
        app.apply(b, RelayCommit(hd, 0, ()))
    return app.make_block(height, round_, salt)


def proposal(i: int, round_: int, block: tuple[bytes, RelayHeader], *, pol_round: int = -1,
             height: int = 1) -> Proposal:
    return sign_proposal(KEYS[i], CHAIN, height, round_, pol_round, block[1], block[0], i)


def vote(i: int, vtype: VoteType, round_: int, block: tuple[bytes, RelayHeader] | bytes | None, *,
         height: int = 1) -> Vote:
    bh = header_hash(block[1]) if isinstance(block, tuple) else block
    return sign_vote(KEYS[i], CHAIN, vtype, height, round_, bh, i, with_secp256k1=True)


def votes(signers: Sequence[int], vtype: VoteType, round_: int,
          block: tuple[bytes, RelayHeader] | bytes | None, *, height: int = 1) -> list[Vote]:
    return [vote(i, vtype, round_, block, height=height) for i in signers]


def signed_commit(block: tuple[bytes, RelayHeader], signers: Sequence[int], round_: int = 0) -> RelayCommit:
    sigs = []
    for i in signers:
        v = vote(i, PRECOMMIT, round_, block, height=block[1].height)
        sigs.append(CommitSignature(i, v.ed25519_sig, v.secp256k1_sig))
    return RelayCommit(block[1], round_, tuple(sigs))


def sent(out: Sequence[Output]) -> list[Message]:
    return [o.message for o in out if isinstance(o, Broadcast)]


def sent_votes(out: Sequence[Output], vtype: VoteType | None = None) -> list[Vote]:
    return [m for m in sent(out) if isinstance(m, Vote) and (vtype is None or m.type is vtype)]


def timeouts(out: Sequence[Output]) -> list[ScheduleTimeout]:
    return [o for o in out if isinstance(o, ScheduleTimeout)]


def decisions(out: Sequence[Output]) -> list[Decided]:
    return [o for o in out if isinstance(o, Decided)]


def bh(block: tuple[bytes, RelayHeader]) -> bytes:
    return header_hash(block[1])


def persisted_before_broadcast(out: Sequence[Output], chain_id: ChainId = CHAIN) -> bool:
    """Every Broadcast of a vote comes right after the PersistSignState record of exactly that vote."""
    for prev, o in zip([None, *out], out, strict=False):
        if isinstance(o, Broadcast) and isinstance(o.message, Vote):
            m = o.message
            if not isinstance(prev, PersistSignState):
                return False
            if prev.state.sign_bytes != vote_sign_bytes(chain_id, m.type, m.height, m.round, m.block_hash):
                return False
        elif isinstance(o, Broadcast) and not isinstance(prev, PersistSignState):
            return False
    return True
