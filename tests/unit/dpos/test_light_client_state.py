"""DPoS light client persistence: ``from_state(c.to_state())`` continues exactly as ``c`` would.

Histories are generated like partitions: a base chain with frequent witness-set rotations, then splits
of a branch tip into two sibling branches built by disjoint groups of its active witnesses (ordinary forks:
the majority's LIB advances, the minority's stalls), and now and then a twin of a tip header in the same
slot by the same witness (double production: held as a fork, the evidence recorded). Headers are fed
interleaved, parents first mostly, with repeats and orphans. For every split point tried, a client restored
from the bytes of one that saw the prefix must give the same outcome (error code and message, or success) and the same
bytes as the original on every header of the rest of the stream.
"""

from __future__ import annotations

import json
import random

import pytest

import chains.dpos.light_client as lc
from chains.dpos.app import load_genesis
from chains.dpos.light_client import DposLightClient
from chains.dpos.testing import ChainBuilder, SimChain, forge_branch
from chains.dpos.types import DposHeader
from protocol.errors import CodecError, MisbehaviourError, ProtocolError, WrongChainError
from protocol.light_client import ClientStatus
from protocol.types import ChainId, ClientId

CID = ClientId("dpos-7")

Outcome = tuple[str, str, bytes]


def grow(branch: ChainBuilder, n: int, offline: list[str]) -> None:
    """Up to ``n`` headers of ``branch`` with ``offline`` witnesses silent (fewer if none active is online)."""
    for _ in range(n):
        if set(branch.tracker.active.names) <= set(offline):
            return
        branch.extend(1, offline=offline, propose=branch.rotate)


def history(seed: int) -> tuple[ChainBuilder, list[DposHeader]]:
    """A base builder and a stream of headers over it and its forks (see the module docstring)."""
    rng = random.Random(seed)
    base = ChainBuilder(4, n_standby=2, label=f"state-{seed}", maintenance_interval_blocks=4)
    base.extend(rng.randint(2, 10), propose=base.rotate)
    branches, tips = [base], [base]
    for i in range(rng.randint(1, 4)):
        src = tips.pop(rng.randrange(len(tips)))
        if rng.random() < 0.2:
            twin = src.fork(src.tip.height - 1, label=f"state-{seed}/twin{i}")
            twin.extend(1)  # the tip's slot again: the same witness unless src skipped it
            branches.append(twin)
            tips.append(src)
            continue
        active = list(src.tracker.active.names)
        rng.shuffle(active)
        cut = rng.randint(1, len(active) - 1)
        for j, group in enumerate((active[:cut], active[cut:])):
            child = src.fork(src.tip.height, label=f"state-{seed}/{i}.{j}")
            grow(child, rng.randint(1, 10), [w for w in child.signers if w not in group])
            branches.append(child)
            tips.append(child)
    cursors = [1] * len(branches)
    emitted = {base.headers[0].hash()}
    stream: list[DposHeader] = []
    while True:
        ready = [i for i, b in enumerate(branches) if cursors[i] < len(b.headers)]
        if not ready:
            break
        linked = [i for i in ready if branches[i].headers[cursors[i]].parent_hash in emitted]
        i = rng.choice(linked if linked and rng.random() < 0.95 else ready)
        header = branches[i].headers[cursors[i]]
        cursors[i] += 1
        if header.hash() in emitted and rng.random() < 0.8:
            continue  # a branch's copy of its parent's headers: usually skipped, sometimes a repeat
        emitted.add(header.hash())
        stream.append(header)
        if rng.random() < 0.05:
            stream.append(rng.choice(stream))  # a repeat: held, final, or pruned
    return base, stream


def feed(client: DposLightClient, headers: list[DposHeader]) -> list[Outcome]:
    out: list[Outcome] = []
    for h in headers:
        try:
            client.process_header(h, h.timestamp_ms)
            out.append(("ok", "", client.to_state()))
        except ProtocolError as exc:
            out.append((exc.code, exc.message, client.to_state()))
    return out


def restored(client: DposLightClient) -> DposLightClient:
    raw = client.to_state()
    copy = DposLightClient.from_state(CID, raw)
    assert copy.to_state() == raw
    return copy


SEEDS = range(24)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_restored_client_continues_as_the_original(seed: int) -> None:
    base, stream = history(seed)
    original = base.client(CID, max_pending_headers=40)
    expected = feed(original, stream)
    rng = random.Random(1000 + seed)
    for split in sorted({0, len(stream), *rng.sample(range(len(stream) + 1), min(4, len(stream) + 1))}):
        prefix = base.client(CID, max_pending_headers=40)
        feed(prefix, stream[:split])
        assert feed(restored(prefix), stream[split:]) == expected[split:], f"split at {split}"


def test_the_histories_cover_forks_promotions_and_double_production() -> None:
    """The generator is worth something only if it reaches the interesting states."""
    recorded = promoted = forked = replays = 0
    for seed in SEEDS:
        base, stream = history(seed)
        client = base.client(CID, max_pending_headers=40)
        sets = {client.active_set.hash}
        for h in stream:
            try:
                client.process_header(h, h.timestamp_ms)
            except ProtocolError as exc:
                replays += exc.code == "packet.replay"
            sets.add(client.active_set.hash)
            # more pending headers than the canonical branch has above finality: forks are held
            forked += client.pending_count > len(client.pending_heights())
        assert client.frozen_height is None  # one witness double-signing never freezes
        recorded += bool(client.evidence())
        promoted += len(sets) > 1
    assert 3 <= recorded <= len(SEEDS) // 2 and promoted >= 8 and forked >= 50 and replays >= 3, (
        recorded, promoted, forked, replays)


def test_tracker_snapshots_and_replays_survive_a_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    # with a snapshot every 3 heights, restored branches mix kept, moved and replayed trackers
    monkeypatch.setattr(lc, "SNAPSHOT_EVERY", 3)
    for seed in range(6):
        base, stream = history(seed)
        original = base.client(CID, max_pending_headers=40)
        expected = feed(original, stream)
        for split in range(0, len(stream) + 1, 3):
            prefix = base.client(CID, max_pending_headers=40)
            feed(prefix, stream[:split])
            assert feed(restored(prefix), stream[split:]) == expected[split:]


def test_ties_stay_with_the_branch_seen_first_after_a_round_trip() -> None:
    b = ChainBuilder(4, label="ties")
    b.extend(6)
    left = b.fork(6, label="left")
    left.extend(2, offline=["w00", "w01"])
    right = b.fork(6, label="right")
    right.extend(2, offline=["w02", "w03"])
    for first, second in ((left, right), (right, left)):
        client = b.client(CID)
        feed(client, b.headers[1:] + first.headers[7:] + second.headers[7:])
        assert client.latest_header == first.tip
        copy = restored(client)
        assert copy.latest_header == first.tip
        # one more block on the second branch makes it strictly longer: both switch to it
        nxt = second.next_header(offline=["w00", "w01"] if second is right else ["w02", "w03"])
        feed(client, [nxt])
        feed(copy, [nxt])
        assert copy.latest_header == client.latest_header == nxt
        assert copy.to_state() == client.to_state()


def test_equal_histories_give_equal_bytes() -> None:
    base_a, stream_a = history(3)
    base_b, stream_b = history(3)
    a, b = base_a.client(CID), base_b.client(CID)
    assert feed(a, stream_a) == feed(b, stream_b)
    assert a.to_state() == b.to_state()


def test_double_production_evidence_survives_a_round_trip() -> None:
    b = ChainBuilder(4, label="frozen")
    b.extend(8)
    twin = b.fork(7, label="twin")
    twin.extend(1)  # same slot, same witness, other root: double production
    client = b.client(CID)
    feed(client, [*b.headers[1:], twin.tip])
    assert [e.height for e in client.evidence()] == [8] and client.frozen_height is None
    copy = restored(client)
    assert copy.to_state() == client.to_state() and copy.evidence() == client.evidence()
    b.extend(1)
    assert feed(copy, [b.tip]) == feed(client, [b.tip])
    assert copy.to_state() == client.to_state()


def test_a_frozen_client_stays_frozen_after_a_round_trip() -> None:
    b = ChainBuilder(4, label="frozen")
    b.extend(12)
    client = b.client(CID)
    feed(client, b.headers[1:])
    fork = client.final_height - 2
    branch = forge_branch(b.headers[fork], b.trackers[fork].active, b.signers, b.params, 6)
    with pytest.raises(MisbehaviourError):
        client.check_conflicting_finality(branch, b.tip.timestamp_ms)
    copy = restored(client)
    now = b.tip.timestamp_ms
    assert copy.status(now) is ClientStatus.FROZEN
    assert (copy.frozen_height, copy.freeze_reason) == (client.frozen_height, client.freeze_reason)
    b.extend(1)
    assert feed(copy, [b.tip]) == feed(client, [b.tip])
    assert feed(copy, [b.tip])[0][0] == "client.frozen"


def test_proofs_verify_against_the_same_heights_after_a_round_trip() -> None:
    sim = SimChain(4, label="proofs", accounts={"alice": {"kWh": 100}})
    trees = {}
    for _ in range(12):
        sim.produce([sim.tx("alice", "transfer", {"to": "w00", "denom": "kWh", "amount": 1})])
        trees[sim.tip.height] = sim.state.tree
    client = sim.client(CID)
    feed(client, sim.headers[1:])
    copy = restored(client)
    assert copy.final_heights() == client.final_heights() and client.final_height >= 8
    key = b"balances/alice/kWh"
    for h in client.final_heights()[1:]:
        proof = trees[h].prove(key)
        for c in (client, copy):
            c.verify_membership(h, key, trees[h].get(key), proof, sim.tip.timestamp_ms)


def test_from_genesis_trusts_the_header_the_park_starts_from() -> None:
    sim = SimChain(4, label="genesis")
    client = DposLightClient.from_genesis(CID, ChainId(sim.chain_id), sim.config, 86_400_000)
    genesis = sim.headers[0]
    assert client.final_consensus_state(0).header_hash == genesis.hash() == load_genesis(sim.config).header.hash()
    assert client.final_consensus_state(0).state_root == sim.headers[0].state_root
    feed(client, sim.produce_many(6))
    assert client.latest_height == 6 and client.frozen_height is None
    with pytest.raises(WrongChainError):
        DposLightClient.from_genesis(CID, ChainId("other-park"), sim.config, 86_400_000)


@pytest.mark.parametrize("mutate", [
    lambda s: {**s, "client_id": "dpos-8"},
    lambda s: {**s, "v": 2},
    lambda s: {**s, "type": "poc"},
    lambda s: {**s, "final": []},
    lambda s: {**s, "final": [*s["final"][:1], "00"]},
    lambda s: {**s, "pending": s["pending"][1:]},
    lambda s: {**s, "pending": [*s["pending"], s["pending"][-1]]},
    lambda s: {**s, "tracker": {**s["tracker"], "last_produced": []}},
    lambda s: {**s, "max_pending_headers": -1},
    lambda s: {k: v for k, v in s.items() if k != "known_sets"},
], ids=["other client", "version", "type", "no final", "bad header", "orphan pending", "duplicate pending",
        "tracker", "bound", "missing key"])
def test_malformed_state_is_a_codec_error(mutate: object) -> None:
    b = ChainBuilder(4, label="malformed")
    b.extend(5)
    client = b.client(CID)
    feed(client, b.headers[1:])
    state = json.loads(client.to_state())
    assert len(state["pending"]) >= 2
    with pytest.raises(CodecError):
        DposLightClient.from_state(CID, json.dumps(mutate(state)).encode())  # type: ignore[operator]
    with pytest.raises(CodecError):
        DposLightClient.from_state(CID, b"not json")
