"""PocLightClient: table-driven rejections, fork choice, finality, deep-reorg misbehaviour, proofs, expiry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from chains.poc.consensus import ConsensusContext, deadline_ms, slot_challenge
from chains.poc.light_client import PocLightClient
from chains.poc.testing import FarmedChain, farmer_signer, forge
from chains.poc.types import PocHeader
from protocol.errors import (
    ClientExpiredError,
    ClientFrozenError,
    CodecError,
    HeaderError,
    InvalidProofError,
    MisbehaviourError,
    NotFinalError,
    ProtocolError,
    ReplayError,
    SignatureError,
    WrongChainError,
)
from protocol.light_client import ClientRouter, ClientStatus
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId, ClientId

ATTACKER = farmer_signer("attacker")


def new_client(chain: FarmedChain, **overrides: object) -> PocLightClient:
    # depth-only finality (window 0): these tests are about the consensus rules, fork choice and depth; the
    # finality window has its own tests (test_light_client_window.py)
    args = {**chain.client_args(), "client_params": {"finality_window_ms": 0}, **overrides}
    return PocLightClient(client_id=ClientId("poc-0"), **args)  # type: ignore[arg-type]


def feed(client: PocLightClient, headers: list[PocHeader]) -> None:
    for h in headers:
        client.process_header(h, now_ms=h.timestamp_ms)


# -- rejections: malleate a valid next header into each failure --------------------------------

TARGET = 10  # the client holds headers[:TARGET]; headers[TARGET] is the valid next header


@dataclass
class Case:
    name: str
    malleate: Callable[[FarmedChain, PocHeader], tuple[PocHeader, int]]
    """(chain, valid header) -> (header to submit, now_ms)"""
    code: str | None
    """Expected error code; None: accepted."""


def _resign(chain: FarmedChain, h: PocHeader, **changes: object) -> PocHeader:
    return forge(h, chain.builder.farmer(h.farmer).signer, **changes)


def _deadline(chain: FarmedChain, h: PocHeader) -> int:
    quality = chain.contexts[h.height - 1].quality
    return deadline_ms(quality, slot_challenge(h.challenge, h.slot), h.difficulty, h.k, h.slot)


def _flip(b: bytes, i: int = 5) -> bytes:
    return b[:i] + bytes((b[i] ^ 1,)) + b[i + 1:]


CASES = [
    Case("valid", lambda c, h: (h, h.timestamp_ms), None),
    Case("forged farmer signature", lambda c, h: (forge(h, ATTACKER), h.timestamp_ms), "signature.invalid"),
    Case("missing signature", lambda c, h: (replace(h, signature=b""), h.timestamp_ms), "signature.invalid"),
    Case("zero signature", lambda c, h: (replace(h, signature=bytes(64)), h.timestamp_ms), "signature.invalid"),
    Case("signature of another header", lambda c, h: (replace(h, signature=c.headers[TARGET - 1].signature),
                                                      h.timestamp_ms), "signature.invalid"),
    Case("tampered proof of space", lambda c, h: (_resign(c, h, proof=_flip(h.proof)), h.timestamp_ms),
         "header.poc.proof_of_space"),
    Case("proof of another height", lambda c, h: (_resign(c, h, proof=c.headers[TARGET - 1].proof), h.timestamp_ms),
         "header.poc.proof_of_space"),
    Case("plot stolen: attacker key under the farmer's name",
         lambda c, h: (forge(h, ATTACKER, farmer_pubkey=ATTACKER.pubkey), h.timestamp_ms),
         "header.poc.farmer_key"),
    Case("plot stolen: attacker key and name (an outsider)",
         lambda c, h: (forge(h, ATTACKER, farmer="attacker", farmer_pubkey=ATTACKER.pubkey), h.timestamp_ms),
         "header.poc.farmer_key"),
    Case("farmer named as the other farmer",
         lambda c, h: (_resign(c, h, farmer="farmer-a" if h.farmer == "farmer-b" else "farmer-b"), h.timestamp_ms),
         "header.poc.farmer_key"),
    Case("wrong plot nonce", lambda c, h: (_resign(c, h, plot_nonce=_flip(h.plot_nonce)), h.timestamp_ms),
         "header.poc.proof_of_space"),
    Case("wrong k", lambda c, h: (_resign(c, h, k=22), h.timestamp_ms), "header.poc.proof_of_space"),
    Case("k below minimum", lambda c, h: (_resign(c, h, k=20), h.timestamp_ms), "header.poc.proof_of_space"),
    Case("proof moved to another slot", lambda c, h: (_resign(c, h, slot=h.slot + 1,
                                                              timestamp_ms=h.timestamp_ms + h.difficulty),
                                                      h.timestamp_ms + h.difficulty), "header.poc.proof_of_space"),
    Case("insufficient quality: one ms early",
         lambda c, h: (_resign(c, h, timestamp_ms=c.contexts[TARGET - 1].timestamp_ms + _deadline(c, h) - 1),
                       h.timestamp_ms), "header.poc.insufficient_quality"),
    Case("exactly at the deadline",
         lambda c, h: (_resign(c, h, timestamp_ms=c.contexts[TARGET - 1].timestamp_ms + _deadline(c, h)),
                       h.timestamp_ms), None),
    Case("wrong difficulty (weight consistent)",
         lambda c, h: (_resign(c, h, difficulty=h.difficulty + 1, cumulative_weight=h.cumulative_weight + 1),
                       h.timestamp_ms), "header.poc.difficulty"),
    Case("wrong cumulative weight", lambda c, h: (_resign(c, h, cumulative_weight=h.cumulative_weight + 1),
                                                  h.timestamp_ms), "header.poc.weight"),
    Case("wrong challenge", lambda c, h: (_resign(c, h, challenge=hashlib.sha256(b"grind").digest()), h.timestamp_ms),
         "header.poc.challenge"),
    Case("unknown parent", lambda c, h: (_resign(c, h, parent_hash=hashlib.sha256(b"nowhere").digest()),
                                         h.timestamp_ms), "header.unknown_parent"),
    Case("wrong height", lambda c, h: (_resign(c, h, height=h.height + 1), h.timestamp_ms), "header.invalid"),
    Case("no farmer name", lambda c, h: (_resign(c, h, farmer=""), h.timestamp_ms), "header.poc.farmer_key"),
    Case("wrong chain id", lambda c, h: (_resign(c, h, chain_id=ChainId("poc-other")), h.timestamp_ms),
         "packet.wrong_chain"),
    Case("future timestamp", lambda c, h: (h, h.timestamp_ms - c.params.max_future_ms - 1),
         "header.poc.future_timestamp"),
    Case("at the future limit", lambda c, h: (h, h.timestamp_ms - c.params.max_future_ms), None),
    Case("replayed header", lambda c, h: (c.headers[TARGET - 1], h.timestamp_ms), "packet.replay"),
    Case("malformed field", lambda c, h: (replace(h, state_root=b"\x00" * 31), h.timestamp_ms), "codec.invalid"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_header_rejections(chain: FarmedChain, case: Case) -> None:
    client = new_client(chain)
    feed(client, chain.headers[:TARGET])
    best, size = client.best_tip, len(client)
    header, now_ms = case.malleate(chain, chain.headers[TARGET])
    if case.code is None:
        client.process_header(header, now_ms)
        assert client.best_tip.height == TARGET + 1
        return
    with pytest.raises(ProtocolError) as exc:
        client.process_header(header, now_ms)
    assert exc.value.code == case.code, exc.value
    assert client.best_tip == best and len(client) == size
    assert client.status(now_ms) is ClientStatus.ACTIVE
    client.process_header(chain.headers[TARGET], chain.headers[TARGET].timestamp_ms)  # the real one still goes in


def test_error_types_are_the_protocol_ones(chain: FarmedChain) -> None:
    client = new_client(chain)
    h = chain.headers[0]
    with pytest.raises(SignatureError):
        client.process_header(forge(h, ATTACKER), h.timestamp_ms)
    with pytest.raises(WrongChainError):
        client.process_header(replace(h, chain_id=ChainId("poc-other")), h.timestamp_ms)
    with pytest.raises(HeaderError):
        client.process_header(forge(h, chain.builder.farmer(h.farmer).signer, proof=_flip(h.proof)), h.timestamp_ms)
    with pytest.raises(CodecError):
        client.process_header(replace(h, proof=b"\x00" * 600), h.timestamp_ms)
    client.process_header(h, h.timestamp_ms)
    with pytest.raises(ReplayError):
        client.process_header(h, h.timestamp_ms)


# -- finality and forks ------------------------------------------------------------------------


def rival_fork(chain: FarmedChain, parent: ConsensusContext, n: int, delta_ms: int,
               main_child: PocHeader | None = None) -> list[tuple[PocHeader, ConsensusContext]]:
    """``n`` headers on ``parent`` whose first is farmed by the farmer who did *not* farm ``main_child`` (default:
    the main chain's child of ``parent``): a fork by other space, not the same proof re-signed, which the client
    refuses below finality (``header.poc.proof_reused``)."""
    main_child = main_child if main_child is not None else chain.headers[parent.height]
    other = [f for f in chain.builder.farmers if f.name != main_child.farmer]
    first = chain.builder.child(parent, farmers=other, delta_ms=delta_ms)
    return [first, *chain.builder.extend(first[1], n - 1, delta_ms=delta_ms)]



def test_follows_chain_and_finalises_at_depth(chain: FarmedChain) -> None:
    client = new_client(chain)
    feed(client, chain.headers)
    assert client.best_tip == chain.contexts[-1]
    assert client.final_height == 40 - 6
    assert client.final_tip == chain.contexts[40 - 6 - 1]
    for ctx in chain.contexts[: 40 - 6]:
        cs = client.final_consensus_state(ctx.height)
        assert (cs.header_hash, cs.timestamp_ms, cs.state_root) == (ctx.header_hash, ctx.timestamp_ms, ctx.state_root)
    with pytest.raises(NotFinalError):
        client.final_consensus_state(40 - 5)


def test_reorg_within_depth_is_followed(chain: FarmedChain) -> None:
    client = new_client(chain)
    feed(client, chain.headers[:20])  # best 20, final 14
    fork = chain.builder.extend(chain.contexts[15], 8, delta_ms=7)  # from height 16: heights 17..24
    feed(client, [h for h, _ in fork[:2]])  # lighter: the best tip stays
    assert client.best_tip == chain.contexts[19]
    feed(client, [h for h, _ in fork[2:]])
    assert client.best_tip == fork[-1][1]
    assert client.status(fork[-1][0].timestamp_ms) is ClientStatus.ACTIVE
    assert client.final_height == 24 - 6
    assert client.final_consensus_state(17).header_hash == fork[0][1].header_hash
    assert client.final_consensus_state(16).header_hash == chain.contexts[15].header_hash
    # the old branch above the fork point can no longer become final
    assert chain.contexts[16].header_hash != client.final_consensus_state(17).header_hash


def test_reorg_deeper_than_depth_freezes(chain: FarmedChain) -> None:
    client = new_client(chain)
    feed(client, chain.headers[:20])  # final 14
    fork = rival_fork(chain, chain.contexts[9], 24, delta_ms=7)  # from height 10 (final): heights 11..34
    fed = 0
    with pytest.raises(MisbehaviourError):
        for h, _ in fork:
            client.process_header(h, h.timestamp_ms)
            fed += 1
            assert client.status(h.timestamp_ms) is ClientStatus.ACTIVE  # lighter, below finality: held, harmless
    overtaking = fork[fed][1]
    assert overtaking.cumulative_weight >= chain.contexts[19].cumulative_weight
    assert fed >= 5
    assert client.status(overtaking.timestamp_ms) is ClientStatus.FROZEN
    assert client.frozen_height == overtaking.height
    with pytest.raises(ClientFrozenError):
        client.process_header(chain.headers[20], chain.headers[20].timestamp_ms)
    with pytest.raises(ClientFrozenError):
        client.verify_non_membership(5, b"k", SparseMerkleTree().prove(b"k"), chain.headers[19].timestamp_ms)


def _slow_chain_and_fast_fork(chain: FarmedChain) -> tuple[list[tuple[PocHeader, ConsensusContext]],
                                                           list[tuple[PocHeader, ConsensusContext]]]:
    """Canonical blocks 3 s late each (difficulty falls toward the minimum), and a private fork from height 2
    at full speed (difficulty holds): the fork overtakes the canonical weight at a height that is final."""
    slow = chain.builder.extend(chain.contexts[1], 28, delta_ms=3000)  # heights 3..30
    fast = rival_fork(chain, chain.contexts[1], 12, delta_ms=5, main_child=slow[0][0])  # heights 3..14
    return slow, fast


def test_heavier_fork_at_final_height_is_evidence(chain: FarmedChain) -> None:
    slow, fast = _slow_chain_and_fast_fork(chain)
    client = new_client(chain)
    feed(client, chain.headers[:2] + [h for h, _ in slow])  # best 30, final 24
    best = client.best_tip
    i = next(i for i, (_, c) in enumerate(fast) if c.cumulative_weight > best.cumulative_weight)
    assert fast[i][1].height <= client.final_height
    now = max(best.timestamp_ms, fast[i][0].timestamp_ms)
    feed(client, [h for h, _ in fast[:i]])  # lighter so far: held
    assert client.status(now) is ClientStatus.ACTIVE
    final_header = next(h for h, c in slow if c.height == fast[i][1].height)
    # two headers at one height where neither is final: an ordinary fork, the client stays active
    sibling, _ = chain.builder.child(slow[-2][1], delta_ms=9)
    with pytest.raises(HeaderError):
        client.check_misbehaviour(slow[-1][0], sibling, now)
    assert client.status(now) is ClientStatus.ACTIVE
    with pytest.raises(MisbehaviourError):
        client.check_misbehaviour(final_header, fast[i][0], now)
    assert client.status(now) is ClientStatus.FROZEN


def test_lighter_conflicting_header_is_not_evidence(chain: FarmedChain) -> None:
    client = new_client(chain)
    feed(client, chain.headers[:20])  # final 14
    orphan, _ = rival_fork(chain, chain.contexts[8], 1, delta_ms=9)[0]  # height 10, conflicts with final header 10
    now = chain.headers[19].timestamp_ms
    with pytest.raises(HeaderError):
        client.check_misbehaviour(chain.headers[9], orphan, now)
    # nor two non-final siblings
    sibling, _ = chain.builder.child(chain.contexts[17], delta_ms=9)
    with pytest.raises(HeaderError):
        client.check_misbehaviour(chain.headers[18], sibling, now)
    assert client.status(now) is ClientStatus.ACTIVE
    # the orphan itself is accepted and held (it is valid), without moving the best tip
    client.process_header(orphan, now)
    assert client.best_tip == chain.contexts[19] and client.has_header(orphan.hash())


def test_slow_canonical_overtaken_by_fast_private_fork_freezes(chain: FarmedChain) -> None:
    slow, fast = _slow_chain_and_fast_fork(chain)
    client = new_client(chain)
    feed(client, chain.headers[:2] + [h for h, _ in slow])
    with pytest.raises(MisbehaviourError):
        feed(client, [h for h, _ in fast])
    assert client.frozen_height is not None and client.frozen_height <= client.final_height


def test_pruned_fork_point_is_unknown_parent(chain: FarmedChain) -> None:
    client = new_client(chain, fork_history=4)
    feed(client, chain.headers)  # final 34: heights < 30 pruned
    assert len(client) <= 4 + 1 + 6 + 1
    orphan, _ = chain.builder.child(chain.contexts[20], delta_ms=9)
    with pytest.raises(HeaderError) as exc:
        client.process_header(orphan, chain.headers[-1].timestamp_ms)
    assert exc.value.code == "header.unknown_parent"


# -- proofs, expiry, construction --------------------------------------------------------------


def test_proofs_only_against_final_headers(chain: FarmedChain) -> None:
    tree = SparseMerkleTree.from_items([(b"commitments/dpos-park/lane-0/1", b"\x11" * 32), (b"balances/a/pcc", b"5")])
    pairs = chain.builder.extend(chain.builder.genesis, 10, state_root=tree.root)
    client = new_client(chain)
    feed(client, [h for h, _ in pairs[:3]])
    now = pairs[-1][0].timestamp_ms
    key, value = b"commitments/dpos-park/lane-0/1", b"\x11" * 32
    with pytest.raises(NotFinalError):
        client.verify_membership(3, key, value, tree.prove(key), now)
    with pytest.raises(NotFinalError):
        client.verify_non_membership(3, b"absent", tree.prove(b"absent"), now)
    feed(client, [h for h, _ in pairs[3:]])  # best 10, final 4
    client.verify_membership(3, key, value, tree.prove(key), now)
    client.verify_membership(4, key, value, tree.prove(key).encode(), now)
    client.verify_non_membership(3, b"absent", tree.prove(b"absent"), now)
    with pytest.raises(InvalidProofError):
        client.verify_membership(3, key, b"\x12" * 32, tree.prove(key), now)
    with pytest.raises(InvalidProofError):
        client.verify_non_membership(3, key, tree.prove(key), now)
    with pytest.raises(NotFinalError):
        client.verify_membership(5, key, value, tree.prove(key), now)
    # the genesis checkpoint's root is the empty tree: only absence proves there
    client.verify_non_membership(0, key, SparseMerkleTree().prove(key), now)


def test_expires_after_trusting_period(chain: FarmedChain) -> None:
    client = new_client(chain, trusting_period_ms=60_000)
    feed(client, chain.headers[:10])
    late = client.final_timestamp_ms + 60_001
    assert client.status(late) is ClientStatus.EXPIRED
    with pytest.raises(ClientExpiredError):
        client.process_header(chain.headers[10], late)


def test_created_from_json_args_through_the_router(chain: FarmedChain) -> None:
    router = ClientRouter()
    router.register_type(PocLightClient.client_type, PocLightClient)
    args = chain.client_args()
    client = router.create("poc", params=args["params"].to_json(), checkpoint=args["checkpoint"].to_json(),
                           confirmation_depth=6, trusting_period_ms=args["trusting_period_ms"],
                           client_params={"finality_window_ms": 0})
    assert client.client_id == "poc-0" and isinstance(client, PocLightClient)
    feed(client, chain.headers[:8])
    assert client.final_height == 2


def test_checkpoint_mid_chain(chain: FarmedChain) -> None:
    """A checkpoint at height 20 (its context from the chain's node) follows on from there."""
    client = PocLightClient(ClientId("poc-1"), chain.params, chain.contexts[19], 6, 10**9,
                            client_params={"finality_window_ms": 0})
    feed(client, chain.headers[20:])
    assert client.final_height == 34
    with pytest.raises(HeaderError):  # a header before the checkpoint has no held parent
        client.process_header(chain.headers[15], chain.headers[-1].timestamp_ms)
    with pytest.raises(CodecError):
        PocLightClient(ClientId("poc-2"), chain.params, chain.contexts[19], 0, 10**9)
