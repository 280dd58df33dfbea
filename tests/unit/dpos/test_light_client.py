"""DPoS light client: a valid chain is accepted; each malleation of it is rejected with its typed error."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chains.dpos.consensus import schedule
from chains.dpos.light_client import DposLightClient, EquivocationError, FinalityEvidenceError, FutureTimestampError
from chains.dpos.testing import ChainBuilder, forge, forge_branch, make_chain, resign, test_signer, witness_name
from chains.dpos.types import DposHeader, WitnessInfo, WitnessSet
from protocol.errors import (
    ClientExpiredError,
    ClientFrozenError,
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


def feed(client: DposLightClient, headers: list[DposHeader]) -> None:
    for h in headers:
        client.process_header(h, h.timestamp_ms)


def first_promotion(b: ChainBuilder) -> int:
    return next(h for h in range(1, len(b.trackers)) if b.trackers[h].active != b.trackers[h - 1].active)


# -- the valid chain ---------------------------------------------------------------------------------


def test_valid_chain_is_accepted_and_tracks_the_builder(chain4: ChainBuilder) -> None:
    client = chain4.client()
    for h in chain4.headers[1:]:
        client.process_header(h, h.timestamp_ms)
        t = chain4.trackers[h.height]
        assert client.lib == t.lib and client.active_set == t.active
        assert client.final_height == t.lib
    assert client.latest_height == 40
    assert len({t.active.hash for t in chain4.trackers}) >= 3, "the fixture rotates witness sets"
    assert client.status(chain4.tip.timestamp_ms) is ClientStatus.ACTIVE


def test_decoded_headers_and_router_creation() -> None:
    args, headers = make_chain(60, 7, maintenance_interval_blocks=10)
    router = ClientRouter()
    router.register_type(DposLightClient.client_type, DposLightClient)
    client = router.create("dpos", **args)
    assert isinstance(client, DposLightClient) and client.client_id == "dpos-0"
    for h in headers:
        client.process_header(DposHeader.decode(h.encode()), h.timestamp_ms)
    assert client.final_height == 60 - 4  # 7 witnesses: the 5th highest of the last 7 heights


# -- malleations: each check in validate_header ------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    malleate: Callable[[ChainBuilder, DposHeader], DposHeader]
    error: type[ProtocolError]
    match: str
    now_delta_ms: int = 0


def _other_witness(b: ChainBuilder, header: DposHeader) -> str:
    return next(n for n in b.tracker.active.names if n != header.producer)


def _resign_as_scheduled(b: ChainBuilder, header: DposHeader) -> DposHeader:
    return resign(header, b.signers[header.producer])


CASES = [
    Case("forged signature", lambda b, h: forge(h, test_signer("attacker", 0)), SignatureError, "does not verify"),
    Case("signature of another witness", lambda b, h: resign(h, b.signers[_other_witness(b, h)]), SignatureError,
         "does not verify"),
    Case("signature of another header", lambda b, h: dataclasses.replace(h, signature=b.tip.signature),
         SignatureError, "does not verify"),
    Case("missing signature", lambda b, h: dataclasses.replace(h, signature=b""), SignatureError, "not signed"),
    Case("content changed after signing", lambda b, h: forge(h, state_root=b"\x07" * 32), SignatureError,
         "does not verify"),
    Case("wrong witness for the slot", lambda b, h: forge(h, b.signers[_other_witness(b, h)],
                                                          producer=_other_witness(b, h)),
         HeaderError, "wrong witness for the slot"),
    Case("standby witness not in the set", lambda b, h: forge(h, b.signers["w05"], producer="w05"),
         HeaderError, "wrong witness for the slot"),
    Case("unknown witness set", lambda b, h: forge(h, b.signers[h.producer], active_set_hash=b"\x05" * 32),
         HeaderError, "stale or unknown witness set"),
    Case("non-linking parent", lambda b, h: forge(h, b.signers[h.producer], parent_hash=b"\x09" * 32),
         HeaderError, "does not link"),
    Case("height gap", lambda b, h: forge(h, b.signers[h.producer], height=h.height + 1), HeaderError, "height gap"),
    Case("height repeated (already held)", lambda b, h: b.tip, HeaderError, "already held"),
    Case("timestamp not increasing", lambda b, h: forge(h, b.signers[h.producer], timestamp_ms=b.tip.timestamp_ms,
                                                        slot=b.tip.slot),
         HeaderError, "timestamp of header .* not after"),
    Case("slot inconsistent with timestamp", lambda b, h: forge(h, b.signers[h.producer], slot=h.slot + 1),
         HeaderError, "slot of header .* does not match"),
    Case("timestamp too far in the future", lambda b, h: h, FutureTimestampError, "too far in the future",
         now_delta_ms=-(2000 + 1)),
    Case("wrong chain id", lambda b, h: forge(h, b.signers[h.producer], chain_id="other-park"), WrongChainError,
         "another chain"),
    Case("pending set off a boundary",
         lambda b, h: forge(h, b.signers[h.producer], pending_set=b.tracker.active.members),
         HeaderError, "off a maintenance boundary"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malleated_header_is_rejected(case: Case) -> None:
    b = ChainBuilder(4, n_standby=2, label="malleate", maintenance_interval_blocks=10)
    b.extend(5)
    client = b.client()
    feed(client, b.headers[1:])
    good = b.next_header()
    bad = case.malleate(b, good)
    before = (client.latest_height, client.final_height, client.lib)
    with pytest.raises(case.error, match=case.match):
        client.process_header(bad, good.timestamp_ms + case.now_delta_ms)
    assert (client.latest_height, client.final_height, client.lib) == before, "a rejected header changes nothing"
    assert client.status(good.timestamp_ms) is ClientStatus.ACTIVE
    client.process_header(good, good.timestamp_ms)  # the untouched header still goes through
    assert client.latest_height == good.height


def test_drift_bound_is_inclusive() -> None:
    b = ChainBuilder(3, label="drift")
    client = b.client()
    h = b.next_header()
    client.process_header(h, h.timestamp_ms - b.params.max_clock_drift_ms)


# -- witness-set changes -----------------------------------------------------------------------------


def test_stale_witness_set_after_promotion_is_rejected(chain4: ChainBuilder) -> None:
    p = first_promotion(chain4)
    old = chain4.trackers[p - 1].active
    client = chain4.client()
    feed(client, chain4.headers[1 : p + 1])
    assert client.active_set == chain4.trackers[p].active != old
    good = chain4.headers[p + 1]
    stale_producer = schedule(old, good.slot, chain4.params.genesis_slot)
    stale = forge(good, chain4.signers[stale_producer], producer=stale_producer, active_set_hash=old.hash)
    with pytest.raises(HeaderError, match="stale"):
        client.process_header(stale, good.timestamp_ms)
    client.process_header(good, good.timestamp_ms)


def _heights_confirming(headers: list[DposHeader], boundary: int, members: tuple[str, ...]) -> int:
    return len({h.producer for h in headers if h.height >= boundary and h.producer in members})


def test_promotion_happens_exactly_when_the_boundary_becomes_irreversible() -> None:
    b = ChainBuilder(7, n_standby=3, label="promote", maintenance_interval_blocks=10)
    b.extend(9)
    new = b.rotate(10, b.tracker.active)
    assert new is not None
    b.append(b.next_header(pending_set=new))
    b.extend(12)
    client = b.client()
    old = b.trackers[0].active
    promoted_at = None
    for h in b.headers[1:]:
        client.process_header(h, h.timestamp_ms)
        # independent count: distinct old-set witnesses with a block at height >= 10 so far
        confirming = _heights_confirming(b.headers[1 : h.height + 1], 10, old.names)
        if promoted_at is None:
            if confirming * 3 > 2 * len(old):
                promoted_at = h.height
                assert client.active_set == WitnessSet(new)
                assert client.final_height >= 10
            else:
                assert client.active_set == old, f"promoted too early at {h.height}"
                assert client.final_height < 10
    assert promoted_at is not None and promoted_at >= 10 + 4  # 5 of 7 witnesses must build at >= 10


def test_fake_pending_set_signed_by_one_witness_is_never_promoted() -> None:
    b = ChainBuilder(4, label="fake", maintenance_interval_blocks=10)
    b.extend(9)
    evil = tuple(sorted((WitnessInfo(f"x{i}", test_signer("evil", i).pubkey, 1) for i in range(4)),
                        key=lambda w: w.name))
    boundary = b.next_header(pending_set=evil)
    b.append(boundary)
    malicious = boundary.producer
    honest = [n for n in b.tracker.active.names if n != malicious]
    # honest witnesses refuse to build on the fake boundary: only the malicious one keeps producing
    b.extend(40, offline=honest)
    client = b.client()
    feed(client, b.headers[1:])
    assert client.active_set == b.trackers[0].active
    assert client.final_height < 10 and [h for h, _ in client.pending_proposals] == [10]
    # even one accomplice is not enough: 2 of 4 is not more than 2/3
    b2 = ChainBuilder(4, label="fake", maintenance_interval_blocks=10)
    b2.extend(9)
    b2.append(b2.next_header(pending_set=evil))
    accomplice = honest[0]
    b2.extend(40, offline=[n for n in honest if n != accomplice])
    client2 = b2.client()
    feed(client2, b2.headers[1:])
    assert client2.active_set == b2.trackers[0].active and client2.final_height < 10
    # a third one makes 3 of 4: the set is then vouched for by more than 2/3, and promoted
    b3 = ChainBuilder(4, label="fake", maintenance_interval_blocks=10)
    b3.extend(9)
    b3.append(b3.next_header(pending_set=evil))
    b3.signers.update({w.name: test_signer("evil", int(w.name[1:])) for w in evil})
    b3.extend(12, offline=[honest[2]])
    client3 = b3.client()
    feed(client3, b3.headers[1:])
    assert client3.active_set == WitnessSet(evil)


# -- LIB -----------------------------------------------------------------------------------------------


def _lib_by_counting(headers: list[DposHeader], n: int) -> int:
    """Independent form of the rule: the highest x such that more than 2n/3 distinct witnesses have a block
    at height >= x (every witness counts as having produced at genesis)."""
    best = 0
    for x in range(1, headers[-1].height + 1):
        if 3 * len({h.producer for h in headers if h.height >= x}) > 2 * n:
            best = x
    return best


def test_lib_advances_with_all_witnesses() -> None:
    b = ChainBuilder(4, label="lib")
    client = b.client()
    for h in b.extend(30):
        client.process_header(h, h.timestamp_ms)
        assert client.final_height == _lib_by_counting(b.headers[1 : h.height + 1], 4)
    # with everyone producing the LIB trails the tip by two or three blocks (rounds reshuffle)
    assert 27 <= client.final_height <= 28


@pytest.mark.parametrize("n_offline,advances", [(6, True), (7, False)])
def test_lib_stalls_with_a_third_or_more_missing(n_offline: int, advances: bool) -> None:
    b = ChainBuilder(21, label="stall")
    offline = [witness_name(i) for i in range(n_offline)]
    b.extend(80, offline=offline)
    client = b.client()
    feed(client, b.headers[1:])
    assert (client.final_height > 0) is advances
    assert client.latest_height == 80


def test_pending_headers_are_bounded_when_lib_stalls() -> None:
    b = ChainBuilder(4, label="bound")
    b.extend(12, offline=["w00", "w01"])
    client = b.client(max_pending_headers=10)
    feed(client, b.headers[1:11])
    with pytest.raises(HeaderError, match="LIB is stalled"):
        client.process_header(b.headers[11], b.headers[11].timestamp_ms)


# -- proofs ------------------------------------------------------------------------------------------


def _tree() -> SparseMerkleTree:
    return SparseMerkleTree.from_items((f"key/{i}".encode(), f"value/{i}".encode()) for i in range(50))


def test_proofs_against_final_headers_only() -> None:
    tree = _tree()
    b = ChainBuilder(4, label="proofs")
    b.extend(5)
    h = b.append(b.next_header(state_root=tree.root))
    client = b.client()
    feed(client, b.headers[1:])
    now = h.timestamp_ms
    key, value = b"key/7", b"value/7"
    with pytest.raises(NotFinalError):
        client.verify_membership(h.height, key, value, tree.prove(key), now)
    with pytest.raises(NotFinalError):
        client.verify_non_membership(h.height, b"absent", tree.prove(b"absent"), now)
    feed(client, b.extend(3))
    assert client.final_height >= h.height
    client.verify_membership(h.height, key, value, tree.prove(key), now)
    client.verify_membership(h.height, key, value, tree.prove(key).encode(), now)
    client.verify_non_membership(h.height, b"absent", tree.prove(b"absent"), now)
    with pytest.raises(InvalidProofError):
        client.verify_membership(h.height, key, b"value/8", tree.prove(key), now)
    with pytest.raises(InvalidProofError):
        client.verify_non_membership(h.height, key, tree.prove(key), now)
    proof = tree.prove(key)
    tampered = dataclasses.replace(proof, siblings=(hashlib.sha256(b"x").digest(), *proof.siblings[1:]))
    with pytest.raises(InvalidProofError):
        client.verify_membership(h.height, key, value, tampered, now)
    other = _tree().set(b"key/7", b"forged")
    with pytest.raises(InvalidProofError):
        client.verify_membership(h.height, key, b"forged", other.prove(key), now)
    with pytest.raises(InvalidProofError):  # a real proof, but against another final header's root
        client.verify_membership(h.height - 1, key, value, proof, now)


# -- misbehaviour --------------------------------------------------------------------------------------


def _double(b: ChainBuilder, height: int) -> DposHeader:
    """A second header at ``height`` by the same (scheduled) producer: double production."""
    h = b.headers[height]
    return forge(h, b.signers[h.producer], tx_root=hashlib.sha256(b"double").digest())


def _frozen_checks(client: DposLightClient, b: ChainBuilder, now: int) -> None:
    assert client.status(now) is ClientStatus.FROZEN
    tree = SparseMerkleTree().set(b"k", b"v")
    with pytest.raises(ClientFrozenError):
        client.verify_membership(client.final_height, b"k", b"v", tree.prove(b"k"), now)
    with pytest.raises(ClientFrozenError):
        client.verify_non_membership(client.final_height, b"z", tree.prove(b"z"), now)
    with pytest.raises(ClientFrozenError):
        client.process_header(b.next_header(), now)


def test_double_production_in_the_stream_is_recorded_and_does_not_freeze(chain4: ChainBuilder) -> None:
    """One witness of four signing two headers at one height (linked, above finality): both are held as forks,
    the evidence is recorded, and the client keeps following the chain."""
    client = chain4.client()
    feed(client, chain4.headers[1:31])
    height = client.latest_height
    now = chain4.headers[30].timestamp_ms
    twin = _double(chain4, height)
    client.process_header(twin, now)
    assert client.status(now) is ClientStatus.ACTIVE and client.holds(twin)
    [ev] = client.evidence()
    assert (ev.witness, ev.height) == (twin.producer, height)
    assert {ev.header_a.hash(), ev.header_b.hash()} == {twin.hash(), chain4.headers[height].hash()}
    feed(client, chain4.headers[31:41])
    assert client.final_height > height and client.status(now) is ClientStatus.ACTIVE
    restored = DposLightClient.from_state(client.client_id, client.to_state())
    assert restored.to_state() == client.to_state() and restored.evidence() == client.evidence()


def test_double_production_below_finality_is_refused_without_freezing(chain4: ChainBuilder) -> None:
    client = chain4.client()
    feed(client, chain4.headers[1:31])
    height = client.final_height - 3
    now = chain4.headers[30].timestamp_ms
    with pytest.raises(EquivocationError) as info:
        client.process_header(_double(chain4, height), now)
    assert info.value.code == "header.dpos.equivocation" and isinstance(info.value, HeaderError)
    assert info.value.expected == chain4.headers[height].hash().hex()
    assert client.status(now) is ClientStatus.ACTIVE and client.evidence() == []
    client.check_misbehaviour(chain4.headers[height], _double(chain4, height), now)  # the way to record it
    assert [e.height for e in client.evidence()] == [height] and client.status(now) is ClientStatus.ACTIVE


def _continuation(b: ChainBuilder, height: int) -> ChainBuilder:
    # a builder positioned at `height`, for producing "the next header" after a freeze
    class _At(ChainBuilder):
        pass
    c = _At.__new__(_At)
    c.__dict__.update(b.__dict__)
    c.headers = b.headers[: height + 1]
    c.tracker = b.trackers[height].copy()
    return c


def test_fork_block_from_another_witness_is_not_misbehaviour(chain4: ChainBuilder) -> None:
    client = chain4.client()
    feed(client, chain4.headers[1:31])
    height = client.final_height - 1
    held = chain4.headers[height]
    active = chain4.trackers[height - 1].active
    slot = next(s for s in range(held.slot + 1, held.slot + 20)
                if schedule(active, s, chain4.params.genesis_slot) != held.producer)
    producer = schedule(active, slot, chain4.params.genesis_slot)
    fork = forge(held, chain4.signers[producer], producer=producer, slot=slot, timestamp_ms=slot * 1000)
    with pytest.raises(HeaderError, match="fork block"):
        client.process_header(fork, chain4.headers[30].timestamp_ms)
    assert client.status(chain4.headers[30].timestamp_ms) is ClientStatus.ACTIVE


def test_explicit_evidence(chain4: ChainBuilder) -> None:
    now = chain4.headers[20].timestamp_ms
    a = chain4.headers[15]
    cases: list[tuple[DposHeader, DposHeader, type[ProtocolError], str]] = [
        (a, a, HeaderError, "same header"),
        (a, chain4.headers[16], HeaderError, "different heights"),
        (a, forge(a, test_signer("attacker", 1), tx_root=b"\x01" * 32), SignatureError, "does not verify"),
        (a, dataclasses.replace(a, tx_root=b"\x01" * 32, signature=b""), SignatureError, "not signed"),
        (a, forge(a, test_signer("x", 1), chain_id="other-park"), WrongChainError, "another chain"),
    ]
    for ha, hb, err, match in cases:
        client = chain4.client()
        feed(client, chain4.headers[1:21])
        with pytest.raises(err, match=match):
            client.check_misbehaviour(ha, hb, now)
        assert client.status(now) is ClientStatus.ACTIVE, f"invalid evidence must not freeze ({match})"
    client = chain4.client()
    feed(client, chain4.headers[1:21])
    client.check_misbehaviour(a, _double(chain4, 15), now)  # recorded, not frozen
    assert client.status(now) is ClientStatus.ACTIVE and [e.witness for e in client.evidence()] == [a.producer]
    with pytest.raises(ReplayError):
        client.check_misbehaviour(_double(chain4, 15), a, now)
    feed(client, chain4.headers[21:25])
    assert client.latest_height == 24


def _conflicting(b: ChainBuilder, fork: int, count: int, **kw: Any) -> list[DposHeader]:
    """A branch from final height ``fork`` by the witnesses of the set that scheduled ``fork + 1``."""
    return forge_branch(b.headers[fork], b.trackers[fork].active, b.signers, b.params, count, **kw)


def test_conflicting_finality_freezes(chain4: ChainBuilder) -> None:
    """Four witnesses, three colluding (> 2/3) sign a branch from a final header past its LIB: two conflicting
    irreversible blocks. The client freezes."""
    client = chain4.client()
    feed(client, chain4.headers[1:31])
    now = chain4.headers[30].timestamp_ms
    fork = client.final_height - 5
    branch = _conflicting(chain4, fork, 6)
    with pytest.raises(MisbehaviourError, match="conflicting finality"):
        client.check_conflicting_finality(branch, now)
    assert client.frozen_height == fork + 1
    _frozen_checks(client, _continuation(chain4, 30), now)


def test_invalid_conflicting_finality_evidence(chain4: ChainBuilder) -> None:
    base = chain4.client()
    feed(base, chain4.headers[1:31])
    now = chain4.headers[30].timestamp_ms
    fork = base.final_height - 5
    good = _conflicting(chain4, fork, 6)
    other_set = chain4.trackers[0].active if chain4.trackers[0].active != chain4.trackers[fork].active else None
    cases: list[tuple[list[DposHeader], type[ProtocolError], str]] = [
        ([], FinalityEvidenceError, "branch of headers"),
        (good[:1], FinalityEvidenceError, "not irreversible"),
        (_conflicting(chain4, base.final_height, 6), FinalityEvidenceError, "fork from a final header"),
        (chain4.headers[fork + 1:fork + 7], FinalityEvidenceError, "nothing conflicts"),
        (good[1:], FinalityEvidenceError, "fork from a final header|link to final header"),
        ([good[0], *good[2:]], FinalityEvidenceError, "does not extend"),
        ([good[0], dataclasses.replace(good[1], signature=b"\x00" * 64), *good[2:]], SignatureError, "does not verify"),
        ([good[0], forge(good[1], test_signer("x", 9), producer=good[2].producer), *good[2:]], FinalityEvidenceError,
         "does not extend|wrong witness"),
        ([forge(h, test_signer("x", 1), chain_id="other-park") for h in good], WrongChainError, "another chain"),
        ([good[0], forge(good[1], chain4.signers[good[1].producer], active_set_hash=b"\x09" * 32), *good[2:]],
         FinalityEvidenceError, "another witness set"),
    ]
    if other_set is not None:
        cases.append((forge_branch(chain4.headers[fork], other_set, chain4.signers, chain4.params, 6),
                      FinalityEvidenceError, "set"))
    for branch, err, match in cases:
        client = DposLightClient.from_state(base.client_id, base.to_state())
        with pytest.raises(err, match=match) as info:
            client.check_conflicting_finality(branch, now)
        if err is FinalityEvidenceError:
            assert info.value.code == "header.dpos.finality_evidence"
        assert client.status(now) is ClientStatus.ACTIVE, f"invalid evidence must not freeze ({match})"


# -- checkpoints and expiry --------------------------------------------------------------------------


def test_checkpoint_mid_chain_follows_like_a_genesis_client(chain4: ChainBuilder) -> None:
    full = chain4.client()
    feed(full, chain4.headers[1:])
    k = 17
    late = DposLightClient(ClientId("dpos-1"), ChainId(chain4.chain_id), 10**9, params=chain4.params,
                           checkpoint=chain4.checkpoint_at(k))
    feed(late, chain4.headers[k + 1 :])
    assert late.final_height == full.final_height and late.active_set == full.active_set
    for h in late.final_heights():
        assert late.final_consensus_state(h) == full.final_consensus_state(h)


def test_expired_client_rejects_headers() -> None:
    b = ChainBuilder(3, label="expire")
    b.extend(6)
    client = b.client(trusting_period_ms=60_000)
    feed(client, b.headers[1:])
    h = b.next_header()
    with pytest.raises(ClientExpiredError):
        client.process_header(h, client.final_timestamp_ms + 60_001)


def test_consensus_states_are_pruned_in_order() -> None:
    b = ChainBuilder(3, label="prune")
    b.extend(30)
    client = b.client(max_consensus_states=5)
    feed(client, b.headers[1:])
    assert client.final_heights() == list(range(client.final_height - 4, client.final_height + 1))
    with pytest.raises(HeaderError, match="below the headers"):
        client.process_header(b.headers[3], b.tip.timestamp_ms)


def test_oversized_pending_set_is_rejected() -> None:
    b = ChainBuilder(3, n_standby=2, label="oversize", maintenance_interval_blocks=5)
    b.extend(4)
    client = b.client()
    feed(client, b.headers[1:])
    too_many = WitnessSet.of(b.witnesses).members  # 5 > active_witnesses = 3
    with pytest.raises(HeaderError, match="more witnesses than an election elects"):
        client.process_header(b.next_header(pending_set=too_many), b.tip.timestamp_ms + 1000)


def test_known_witness_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import chains.dpos.light_client as lc

    monkeypatch.setattr(lc, "MAX_KNOWN_SETS", 3)
    args, headers = make_chain(200, 4, maintenance_interval_blocks=5)
    client = DposLightClient(client_id=ClientId("dpos-0"), **args)
    seen = set()
    for h in headers:
        client.process_header(h, h.timestamp_ms)
        seen.add(client.active_set.hash)
        assert len(client._sets) <= 3 and client.active_set.hash in client._sets
    assert len(seen) > 3
