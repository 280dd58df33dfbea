"""PocLightClient, SPEC §8.6: finality by depth *and* held relay time; farmer names bound to keys; bounded state.

Every chain is farmed for real with the session's two k=21 plots (``farmer-a``, ``farmer-b``), and relay time
(``now``) is explicit: a relayer that keeps up shows each park header at its own time; a quiet period is a
stretch of relay time in which nobody updates the client. The attacker is ``farmer-b`` alone (half the park's
space; the honest park farms with both plots), building on the client's last tip with a state root that
commits a packet the park never committed.

Each rejection asserts the error class and its stable code. The window is the default (60 s) and the honest
relayer's heartbeat the recommended one (10 s); the control test shows the same attack succeeding with the
window at 0, so these tests fail if the rule is removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest

from chains.poc.consensus import ProofVerifier, validate_header
from chains.poc.errors import (
    FarmerKeyError,
    FarmerPendingLimitError,
    PendingDistanceError,
    PendingLimitError,
    ProofReuseError,
)
from chains.poc.light_client import RECOMMENDED_HEARTBEAT_MS, PocClientParams, PocLightClient
from chains.poc.plots import Farmer
from chains.poc.testing import ChainBuilder, forge, make_params
from chains.poc.types import PocHeader
from protocol.errors import (
    ClientFrozenError,
    CodecError,
    InvalidProofError,
    MisbehaviourError,
    NotFinalError,
    ProtocolError,
)
from protocol.light_client import ClientStatus
from protocol.paths import commitment_path, receipt_path
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId, ClientId, LaneId

W = PocClientParams().finality_window_ms
HEARTBEAT = RECOMMENDED_HEARTBEAT_MS
DEPTH = 6
DAY = 86_400_000
DST, SRC, LANE = ChainId("dpos-park"), ChainId("poc-test"), LaneId("lane-0")
REAL_KEY = commitment_path(DST, LANE, 1)
REAL_VALUE = hashlib.sha256(b"the packet the park committed").digest()
FORGED_KEY = commitment_path(DST, LANE, 2)
FORGED_VALUE = hashlib.sha256(b"a packet the park never committed").digest()
RECEIPT_KEY = receipt_path(SRC, LANE, 9)  # absent from the forged root: a forged TIMED_OUT would prove its absence


def new_client(builder: ChainBuilder, verifier: ProofVerifier, **client_params: int) -> PocLightClient:
    return PocLightClient(ClientId("poc-0"), builder.params, builder.genesis, DEPTH, DAY, verifier=verifier,
                          client_params=client_params, farmer_keys=builder.farmer_keys())


def follow(client: PocLightClient, headers: Iterable[PocHeader]) -> None:
    """A relayer that keeps up: each header shown at its own time."""
    for h in headers:
        client.process_header(h, h.timestamp_ms)


def show(client: PocLightClient, headers: Iterable[PocHeader], now: int) -> int:
    """One ``client.update`` at relay time ``now`` with the headers the client does not hold (then ``advance``, as
    the relay does after an update's headers). Returns how many were new."""
    new = [h for h in headers if not client.holds(h)]
    for h in new:
        client.process_header(h, now)
    client.advance(now)
    return len(new)


def heartbeat(client: PocLightClient, park: Sequence[PocHeader], now: int) -> int:
    """An honest relayer's heartbeat at ``now``: the park's chain as far as it has got by then."""
    return show(client, [h for h in park if h.timestamp_ms <= now], now)


def rejects(client: PocLightClient, header: PocHeader, now: int, cls: type[ProtocolError], code: str) -> None:
    size = client.to_state()
    with pytest.raises(cls) as exc:
        client.process_header(header, now)
    assert exc.value.code == code, exc.value
    assert client.to_state() == size  # a refused header changes nothing


@dataclass
class Attack:
    """The park's chain and an attacker's branch, both on ``prefix[-1]``."""

    builder: ChainBuilder
    prefix: list[PocHeader]
    """Honest headers a relayer showed as they came."""
    forged: list[PocHeader]
    """``farmer-b``'s branch on the prefix tip; each state root commits FORGED_KEY (never committed on the park)."""
    park: list[PocHeader]
    """The park's chain on the prefix tip (both farmers); REAL_KEY committed from ``real_height`` on."""
    real_height: int
    forged_tree: SparseMerkleTree
    real_tree: SparseMerkleTree


@pytest.fixture(scope="module")
def attack(farmers: list[Farmer], verifier: ProofVerifier) -> Attack:
    builder = ChainBuilder(make_params(n_plots=2), farmers, verifier=verifier)
    prefix = builder.extend(builder.genesis, 30)
    tip = prefix[-1][1]
    forged_tree = SparseMerkleTree.from_items([(FORGED_KEY, FORGED_VALUE)])
    forged = builder.extend(tip, 8, farmers=[builder.farmer("farmer-b")], state_root=forged_tree.root)
    real_tree = SparseMerkleTree.from_items([(REAL_KEY, REAL_VALUE)])
    before = builder.extend(tip, 4)
    after = builder.extend(before[-1][1], 150, state_root=real_tree.root)
    return Attack(builder, [h for h, _ in prefix], [h for h, _ in forged], [h for h, _ in before + after],
                  after[0][1].height, forged_tree, real_tree)


def assert_forged_refused(client: PocLightClient, a: Attack, now: int) -> None:
    """Neither VERIFIED (membership) nor TIMED_OUT (absence) can be proven from a forged root."""
    for height in range(a.forged[0].height, a.forged[-1].height + 1):
        try:
            cs = client.final_consensus_state(height)
        except NotFinalError as exc:
            assert exc.code == "header.not_final"
            with pytest.raises(NotFinalError):
                client.verify_membership(height, FORGED_KEY, FORGED_VALUE, a.forged_tree.prove(FORGED_KEY), now)
            with pytest.raises(NotFinalError):
                client.verify_non_membership(height, RECEIPT_KEY, a.forged_tree.prove(RECEIPT_KEY), now)
            continue
        assert cs.header_hash == a.park[height - a.park[0].height].hash()  # only the park's header is final
        with pytest.raises(InvalidProofError) as exc_info:
            client.verify_membership(height, FORGED_KEY, FORGED_VALUE, a.forged_tree.prove(FORGED_KEY), now)
        assert exc_info.value.code == "proof.invalid"


def finish_honestly(client: PocLightClient, a: Attack, t_first: int) -> None:
    """Heartbeats from ``t_first`` on: the client is never frozen, the real packet is not final while the
    window runs, then verifies; nothing forged ever does."""
    t = t_first
    shown_at: dict[int, int] = {}
    while True:
        heartbeat(client, a.park, t)
        for h in a.park:
            if h.timestamp_ms <= t:
                shown_at.setdefault(h.height, t)
        assert client.status(t) is ClientStatus.ACTIVE
        assert client.best_tip.header_hash in {h.hash() for h in a.park}
        assert_forged_refused(client, a, t)
        if client.final_height >= a.real_height:
            break
        if a.real_height in shown_at:
            # shown, maybe deep enough, but not yet held for the window: not final
            assert t < shown_at[a.real_height] + W
            with pytest.raises(NotFinalError):
                client.verify_membership(a.real_height, REAL_KEY, REAL_VALUE, a.real_tree.prove(REAL_KEY), t)
        t += HEARTBEAT
        assert t < a.park[-1].timestamp_ms, "the farmed park chain is too short for this test"
    assert t >= shown_at[a.real_height] + W
    client.verify_membership(a.real_height, REAL_KEY, REAL_VALUE, a.real_tree.prove(REAL_KEY), t)


def test_forged_branch_in_one_update_is_never_final(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    client = new_client(a.builder, verifier)
    follow(client, a.prefix)
    final_before = client.final_height
    t_attack = a.forged[-1].timestamp_ms  # no relay time has passed over the client since the prefix tip
    assert len(a.forged) > DEPTH and t_attack - a.prefix[-1].timestamp_ms > 10_000  # deep enough, a long quiet
    show(client, a.forged, t_attack)
    assert client.best_tip.header_hash == a.forged[-1].hash()  # nothing heavier was shown: the forged tip is best
    assert final_before <= client.final_height <= a.prefix[-1].height
    assert_forged_refused(client, a, t_attack)
    # the honest relayer's next heartbeat is late by a whole heartbeat: still inside the window
    t_honest = t_attack + HEARTBEAT
    assert t_honest - t_attack < W
    client.advance(t_honest - 1)
    assert client.final_height <= a.prefix[-1].height
    assert_forged_refused(client, a, t_honest - 1)
    finish_honestly(client, a, t_honest)


def test_forged_branch_over_several_updates_is_never_final(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    client = new_client(a.builder, verifier)
    follow(client, a.prefix)
    for h in a.forged:  # each forged header in its own update, as soon as its time allows
        show(client, [h], h.timestamp_ms)
        assert client.best_tip.header_hash == h.hash()
        assert_forged_refused(client, a, h.timestamp_ms)
    t_honest = a.forged[-1].timestamp_ms + HEARTBEAT
    assert t_honest - a.forged[0].timestamp_ms < W  # the first forged header has not been held for the window
    finish_honestly(client, a, t_honest)


def test_without_the_window_the_same_attack_succeeds(attack: Attack, verifier: ProofVerifier) -> None:
    """Control (the review's finding): depth alone makes the forged root final, then the park's chain freezes it."""
    a = attack
    client = new_client(a.builder, verifier, finality_window_ms=0)
    follow(client, a.prefix)
    t_attack = a.forged[-1].timestamp_ms
    show(client, a.forged, t_attack)
    forged_height = a.forged[0].height
    client.verify_membership(forged_height, FORGED_KEY, FORGED_VALUE, a.forged_tree.prove(FORGED_KEY), t_attack)
    with pytest.raises(MisbehaviourError):
        heartbeat(client, a.park, t_attack + HEARTBEAT)
    assert client.status(t_attack + HEARTBEAT) is ClientStatus.FROZEN


def test_catch_up_after_a_quiet_period_finalises_after_the_window(attack: Attack, verifier: ProofVerifier) -> None:
    """No attacker: an idle client, then the park's whole gap in one update; final a window later, not frozen."""
    a = attack
    client = new_client(a.builder, verifier)
    follow(client, a.prefix)
    client.advance(a.prefix[-1].timestamp_ms + W)
    final_before = client.final_height
    assert final_before == a.prefix[-1].height - DEPTH
    gap = [h for h in a.park if h.timestamp_ms <= a.prefix[-1].timestamp_ms + 60_000][:64]  # one update's worth
    assert gap[-1].timestamp_ms - a.prefix[-1].timestamp_ms > 45_000  # a long quiet period
    assert gap[-1].height - a.real_height > DEPTH
    t_catch = max(gap[-1].timestamp_ms, a.prefix[-1].timestamp_ms + W) + 1  # relay time only moves forward
    assert show(client, gap, t_catch) == len(gap)
    # the prefix, held for the window already, is final as soon as it is deep; no gap header is (held for no time)
    assert client.final_height == a.prefix[-1].height
    with pytest.raises(NotFinalError) as exc:
        client.verify_membership(a.real_height, REAL_KEY, REAL_VALUE, a.real_tree.prove(REAL_KEY), t_catch)
    assert exc.value.code == "header.not_final"
    assert not client.advance(t_catch + W - 1)
    assert client.advance(t_catch + W)  # the explicit advance the relay makes before verifying
    assert client.final_height == gap[-1].height - DEPTH
    assert client.status(t_catch + W) is ClientStatus.ACTIVE
    client.verify_membership(a.real_height, REAL_KEY, REAL_VALUE, a.real_tree.prove(REAL_KEY), t_catch + W)
    # the held times survive persistence: a restored client finalises exactly as the original
    copy = PocLightClient.from_state(client.client_id, client.to_state(), verifier=verifier)
    assert copy.to_state() == client.to_state()
    more = [h for h in a.park if h.height > gap[-1].height][:10]
    t_more = max(more[-1].timestamp_ms, t_catch + W) + 1000  # relay time only moves forward
    for c in (client, copy):
        show(c, more, t_more)
        assert not c.advance(t_more + W - 1)
        assert c.advance(t_more + W)
    assert copy.to_state() == client.to_state() and copy.final_height == more[-1].height - DEPTH


# -- farmer names bound to keys -----------------------------------------------------------------


def test_farmer_not_bound_to_its_key_is_refused(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    b = a.builder.farmer("farmer-b")
    by_b = next(i for i, h in enumerate(a.prefix) if h.farmer == "farmer-b")
    header = a.prefix[by_b]
    # farmer-b is an outsider here: a real plot bound to its own key, but no account of the park
    client = PocLightClient(ClientId("poc-0"), a.builder.params, a.builder.genesis, DEPTH, DAY, verifier=verifier,
                            farmer_keys={"farmer-a": a.builder.farmer("farmer-a").pubkey})
    follow(client, a.prefix[:by_b])
    rejects(client, header, header.timestamp_ms, FarmerKeyError, "header.poc.farmer_key")
    # its plot under the name of a park account: the key is not that account's
    rejects(client, forge(header, b.signer, farmer="farmer-a"), header.timestamp_ms, FarmerKeyError,
            "header.poc.farmer_key")
    # control: a client that does not bind names takes the outsider's block
    unbound = PocLightClient(ClientId("poc-0"), a.builder.params, a.builder.genesis, DEPTH, DAY, verifier=verifier)
    follow(unbound, a.prefix[:by_b + 1])
    # a park account created after genesis is learnt from a proof against a final state root, then its blocks count
    account = json.dumps({"nonce": 0, "pubkey": b.pubkey.hex()}, sort_keys=True).encode()
    tree = SparseMerkleTree.from_items([(b"accounts/farmer-b", account)])
    park = ChainBuilder(a.builder.params, a.builder.farmers, verifier=verifier)
    only_a = [h for h, _ in park.extend(park.genesis, 8, farmers=[park.farmer("farmer-a")], state_root=tree.root)]
    registered = PocLightClient(ClientId("poc-0"), park.params, park.genesis, DEPTH, DAY, verifier=verifier,
                                client_params={"finality_window_ms": 0},
                                farmer_keys={"farmer-a": park.farmer("farmer-a").pubkey})
    follow(registered, only_a)
    by_b_next, _ = park.child(park.contexts[only_a[-1].hash()], farmers=[b])
    now = by_b_next.timestamp_ms
    rejects(registered, by_b_next, now, FarmerKeyError, "header.poc.farmer_key")
    with pytest.raises(InvalidProofError):  # the genesis root does not hold the account
        registered.register_farmer(0, "farmer-b", account, tree.prove(b"accounts/farmer-b"), now)
    with pytest.raises(NotFinalError):
        registered.register_farmer(only_a[-1].height, "farmer-b", account, tree.prove(b"accounts/farmer-b"), now)
    registered.register_farmer(registered.final_height, "farmer-b", account, tree.prove(b"accounts/farmer-b"), now)
    registered.process_header(by_b_next, now)
    assert registered.best_tip.header_hash == by_b_next.hash()


# -- bounded state ------------------------------------------------------------------------------


def test_proof_reuse_flood_keeps_state_bounded(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    client = new_client(a.builder, verifier)
    follow(client, a.prefix)
    tip = a.prefix[-1]
    now = tip.timestamp_ms + W
    assert client.advance(now) and client.final_height == tip.height - DEPTH
    signer = a.builder.farmer(tip.farmer).signer
    held, size = len(client), len(client.to_state())
    for i in range(3000):  # one winning proof re-signed under 3000 state roots
        copy = forge(tip, signer, state_root=hashlib.sha256(i.to_bytes(4, "big")).digest())
        client.process_header(copy, now)
        assert len(client) <= held + 1  # one off-best copy per proof and parent: each replaces the last
    grown = len(client.to_state()) - size
    print(f"\nproof-reuse flood: 3000 copies, {len(client)} headers held, state {size} -> {size + grown} bytes")
    assert grown < 1000
    # a copy of a final header's proof is refused outright
    final = a.prefix[client.final_height - 1]
    rejects(client, forge(final, a.builder.farmer(final.farmer).signer, state_root=hashlib.sha256(b"x").digest()),
            now,
            ProofReuseError, "header.poc.proof_reused")
    # the park's chain goes on (its tip re-sent if a copy displaced it) and keeps finalising
    final_before = client.final_height
    t = now + HEARTBEAT
    while client.final_height < final_before + 20:
        heartbeat(client, [tip, *a.park], t)
        t += HEARTBEAT
    assert client.status(t) is ClientStatus.ACTIVE


def farm_siblings(builder: ChainBuilder, farmer: Farmer, parent: PocHeader, slots: range) -> list[PocHeader]:
    """Every header ``farmer`` can sign on ``parent`` from the proofs of its plot at ``slots``."""
    ctx = builder.contexts[parent.hash()]
    out = []
    for fp in farmer.proofs(builder.params, ctx, slots):
        header = farmer.make_header(builder.params, ctx, fp, ctx.timestamp_ms + fp.deadline_ms, bytes(32),
                                    hashlib.sha256(fp.proof).digest())
        child = validate_header(header, ctx, builder.params, header.timestamp_ms, builder.verifier)
        builder.contexts[child.header_hash] = child  # so a test can farm on it
        out.append(header)
    return out


def test_low_difficulty_side_branch_flood_keeps_state_bounded(farmers: list[Farmer], verifier: ProofVerifier) -> None:
    """A park at the minimum difficulty (16 ms x plots): one plot answers a height in thousands of slots within
    seconds, each a distinct valid header. The farmer's pending headers off the best branch stay capped, the
    lightest are evicted for heavier ones, and the honest chain keeps finalising through the flood."""
    builder = ChainBuilder(make_params(n_plots=2, target_interval_ms=8, min_difficulty=16), farmers,
                           verifier=verifier)
    honest = [h for h, _ in builder.extend(builder.genesis, 200)]
    # a short window: this test is about the bounds, and 8 ms blocks would pile up thousands in 30 s
    caps = {"finality_window_ms": 500, "max_pending": 96, "max_pending_per_farmer": 32, "max_distance": 48}
    client = new_client(builder, verifier, **caps)
    b = builder.farmer("farmer-b")
    now = honest[-1].timestamp_ms
    follow(client, honest[:60])
    t = honest[59].timestamp_ms + 500
    client.advance(t)
    assert client.final_height == 60 - DEPTH
    base = len(client.to_state())
    refused: dict[str, int] = {}
    admitted = 0
    sizes = []
    for i in range(50, 60):  # siblings of held headers: below, at and above finality
        for header in farm_siblings(builder, b, honest[i - 1], range(0, 200)):
            if header.timestamp_ms > t + builder.params.max_future_ms or client.holds(header):
                continue
            try:
                client.process_header(header, t)
                admitted += 1
            except (FarmerPendingLimitError, PendingLimitError, PendingDistanceError, ProofReuseError) as exc:
                refused[exc.code] = refused.get(exc.code, 0) + 1
            assert client.pending_count <= caps["max_pending"]
            off_best = sum(1 for h in client.pending_of("farmer-b") if client.best_since(h) is None)
            assert off_best <= caps["max_pending_per_farmer"]
        sizes.append(len(client.to_state()))
    total = admitted + sum(refused.values())
    print(f"\nside-branch flood: {total} distinct headers by one plot, {admitted} admitted (lightest evicted), "
          f"refused {refused}; state {base} -> max {max(sizes)} bytes; pending {client.pending_count}")
    assert total >= 1000  # (equal-weight siblings displace each other: a newcomer wins the tie)
    assert max(sizes) < base + 60_000
    # the honest chain: heavier, always admitted, and final a window later
    t = max(now, t)
    for end in (100, 120):  # as a relayer does: the park headers the client does not hold, max_distance at a time
        show(client, honest[:end], t)
        t += 500
        client.advance(t)
    assert client.final_height == 120 - DEPTH and client.status(t) is ClientStatus.ACTIVE
    assert client.pending_count <= caps["max_pending"]


def test_distance_and_total_caps_refuse_with_codes(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    b = a.builder.farmer("farmer-b")
    window = 600_000  # long: relay time passes for side headers without finality moving twice
    client = new_client(a.builder, verifier, finality_window_ms=window, max_pending=8, max_pending_per_farmer=8,
                        max_distance=7)
    follow(client, a.prefix[:7])  # final 0 (no window passed): heights 1..7 pending
    rejects(client, a.prefix[7], a.prefix[7].timestamp_ms, PendingDistanceError, "header.poc.pending_distance")
    now = a.prefix[6].timestamp_ms + window
    assert client.advance(now)
    assert (client.final_height, client.pending_count) == (1, 6)  # 2..7 pending
    # a side chain of farmer-b from height 3: two headers fill the client; the third could only evict its own
    # ancestors or the best branch: refused
    side = [farm_siblings(a.builder, b, a.prefix[2], range(1, 4))[0]]
    side += [h for h, _ in a.builder.extend(a.builder.contexts[side[0].hash()], 2, farmers=[b], delta_ms=2000)]
    assert side[-1].cumulative_weight < a.prefix[6].cumulative_weight and side[-1].timestamp_ms <= now
    follow_at = [client.process_header(h, now) for h in side[:2]]
    assert len(follow_at) == 2 and client.pending_count == 8
    rejects(client, side[2], now, PendingLimitError, "header.pending_limit")
    # the park's next header extends the best tip: it always gets in, evicting the side chain's leaf
    client.process_header(a.prefix[7], now)
    assert client.best_tip.header_hash == a.prefix[7].hash() and client.final_height == 2  # (2 held long enough)
    assert client.pending_count == 7
    assert not client.has_header(side[1].hash()) and client.has_header(side[0].hash())
    # per farmer: a farmer at its cap only displaces its own lighter headers
    capped = new_client(a.builder, verifier, finality_window_ms=window, max_pending=64, max_pending_per_farmer=2,
                        max_distance=32)
    follow(capped, a.prefix[:12])
    siblings = [h for i in (9, 10, 11) for h in farm_siblings(a.builder, b, a.prefix[i - 2], range(1, 4))
                if h.timestamp_ms <= now and not capped.holds(h)]
    by_weight = sorted(siblings, key=lambda h: -h.cumulative_weight)
    capped.process_header(by_weight[0], now)
    capped.process_header(by_weight[1], now)
    lighter = next(h for h in by_weight[2:] if h.cumulative_weight < by_weight[1].cumulative_weight)
    rejects(capped, lighter, now, FarmerPendingLimitError, "header.poc.pending_farmer")


@pytest.mark.parametrize("params", [
    {"finality_window_ms": -1}, {"finality_window_ms": 86_400_001}, {"finality_window_ms": True},
    {"max_pending": 1}, {"max_distance": 1024}, {"max_pending_per_farmer": 2000}, {"max_distance": DEPTH},
    {"surprise": 1},
], ids=["negative window", "window over a day", "boolean window", "pending 1", "distance not below pending",
        "per-farmer above pending", "distance within depth", "unknown key"])
def test_invalid_client_params_are_codec_errors(attack: Attack, verifier: ProofVerifier,
                                                params: dict[str, object]) -> None:
    with pytest.raises(CodecError) as exc:
        PocLightClient(ClientId("poc-0"), attack.builder.params, attack.builder.genesis, DEPTH, DAY,
                       verifier=verifier, client_params=params)  # type: ignore[arg-type]
    assert exc.value.code == "codec.invalid"


def test_a_frozen_client_does_not_advance(attack: Attack, verifier: ProofVerifier) -> None:
    a = attack
    client = new_client(a.builder, verifier, finality_window_ms=0)
    follow(client, a.prefix)
    show(client, a.forged, a.forged[-1].timestamp_ms)
    with pytest.raises(MisbehaviourError):
        heartbeat(client, a.park, a.forged[-1].timestamp_ms + HEARTBEAT)
    assert not client.advance(a.park[-1].timestamp_ms)
    with pytest.raises(ClientFrozenError):
        client.verify_membership(1, REAL_KEY, REAL_VALUE, a.real_tree.prove(REAL_KEY), a.park[-1].timestamp_ms)
