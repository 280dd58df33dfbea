"""PoC light client persistence: ``from_state(c.to_state())`` continues exactly as ``c`` would.

Histories are farmed for real with the session's two plots: a main chain, then forks from random held
headers at random speeds (a fast fork from below finality that outweighs the best tip is a deep reorg:
the client freezes; a slow one is a harmless orphan; one from below the kept fork points is an unknown
parent), fed interleaved with repeats. A small confirmation depth and fork history make finality, pruning
and the stored retarget windows of the oldest kept headers part of almost every state.
"""

from __future__ import annotations

import json
import random

import pytest

from chains.poc.app import genesis_block
from chains.poc.consensus import ProofVerifier
from chains.poc.light_client import PocLightClient
from chains.poc.plots import Farmer
from chains.poc.testing import ChainBuilder, make_params
from chains.poc.types import PocHeader
from protocol.errors import CodecError, MisbehaviourError, ProtocolError, WrongChainError
from protocol.light_client import ClientStatus
from protocol.types import ChainId, ClientId
from tests.unit.poc.support import genesis_config

CID = ClientId("poc-3")
DEPTH, HISTORY = 3, 4

Outcome = tuple[str, str, bytes]


def history(farmers: list[Farmer], verifier: ProofVerifier, seed: int) -> tuple[ChainBuilder, list[PocHeader]]:
    rng = random.Random(seed)
    builder = ChainBuilder(make_params(n_plots=2), farmers, verifier=verifier)
    main = builder.extend(builder.genesis, rng.randint(2, 8))
    before_slow = main[-1][1]
    # a slow stretch (blocks 3 s late: difficulty falls) lets a fast fork from below it outweigh it
    main += builder.extend(before_slow, rng.randint(4, 7), delta_ms=rng.choice([5, 3000]))
    segments = [[h for h, _ in main]]
    if rng.random() < 0.5:
        segments.append([h for h, _ in builder.extend(before_slow, len(segments[0]), delta_ms=5)])
    for _ in range(rng.randint(1, 3)):
        parent = builder.contexts[rng.choice([h.hash() for seg in segments for h in seg])]
        segments.append([h for h, _ in builder.extend(parent, rng.randint(1, 6), delta_ms=rng.choice([5, 9, 3000]))])
    main_first = rng.random() < 0.5
    cursors = [0] * len(segments)
    emitted = {builder.genesis.header_hash}
    stream: list[PocHeader] = []
    while live := [i for i, seg in enumerate(segments) if cursors[i] < len(seg)]:
        linked = [i for i in live if segments[i][cursors[i]].parent_hash in emitted]
        if main_first and 0 in live:
            i = 0
        else:
            i = rng.choice(linked if linked and rng.random() < 0.9 else live)
        header = segments[i][cursors[i]]
        cursors[i] += 1
        emitted.add(header.hash())
        stream.append(header)
        if rng.random() < 0.08:
            stream.append(rng.choice(stream))
    return builder, stream


def new_client(builder: ChainBuilder, verifier: ProofVerifier, fork_history: int = HISTORY) -> PocLightClient:
    # depth-only finality (window 0): these histories test fork choice and persistence; the window rule's own
    # persistence case is test_held_times_survive_a_round_trip
    return PocLightClient(CID, builder.params, builder.genesis, DEPTH, 86_400_000, fork_history=fork_history,
                          verifier=verifier, client_params={"finality_window_ms": 0})


def feed(client: PocLightClient, headers: list[PocHeader]) -> list[Outcome]:
    now = max(h.timestamp_ms for h in headers) if headers else 0
    out: list[Outcome] = []
    for h in headers:
        try:
            client.process_header(h, now)
            out.append(("ok", "", client.to_state()))
        except ProtocolError as exc:
            out.append((exc.code, exc.message, client.to_state()))
    return out


def restored(client: PocLightClient, verifier: ProofVerifier) -> PocLightClient:
    raw = client.to_state()
    copy = PocLightClient.from_state(CID, raw, verifier=verifier)
    assert copy.to_state() == raw
    return copy


SEEDS = range(10)


@pytest.fixture(scope="module")
def histories(farmers: list[Farmer], verifier: ProofVerifier) -> dict[int, tuple[ChainBuilder, list[PocHeader]]]:
    return {seed: history(farmers, verifier, seed) for seed in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_restored_client_continues_as_the_original(histories: dict[int, tuple[ChainBuilder, list[PocHeader]]],
                                                     verifier: ProofVerifier, seed: int) -> None:
    builder, stream = histories[seed]
    now = max(h.timestamp_ms for h in stream)

    def run(client: PocLightClient, headers: list[PocHeader]) -> list[Outcome]:
        out: list[Outcome] = []
        for h in headers:
            try:
                client.process_header(h, now)
                out.append(("ok", "", client.to_state()))
            except ProtocolError as exc:
                out.append((exc.code, exc.message, client.to_state()))
        return out

    expected = run(new_client(builder, verifier), stream)
    rng = random.Random(1000 + seed)
    for split in sorted({0, len(stream), *rng.sample(range(len(stream) + 1), 4)}):
        prefix = new_client(builder, verifier)
        run(prefix, stream[:split])
        assert run(restored(prefix, verifier), stream[split:]) == expected[split:], f"split at {split}"


def test_the_histories_cover_reorgs_pruning_and_freezes(
        histories: dict[int, tuple[ChainBuilder, list[PocHeader]]], verifier: ProofVerifier) -> None:
    frozen = reorgs = stored_windows = replays = 0
    for builder, stream in histories.values():
        client = new_client(builder, verifier)
        now = max(h.timestamp_ms for h in stream)
        for h in stream:
            best = client.best_tip.header_hash
            try:
                client.process_header(h, now)
            except ProtocolError as exc:
                replays += exc.code == "packet.replay"
            # a new best tip that does not extend the old one: a reorg
            reorgs += client.best_tip.header_hash != best and h.parent_hash != best
            # the oldest kept headers (parents pruned) carry their retarget windows
            stored_windows += sum(n[-1] is not None for n in json.loads(client.to_state())["nodes"]) > 1
        frozen += client.frozen_height is not None
    assert 2 <= frozen <= len(SEEDS) - 2 and reorgs >= 3 and stored_windows >= 20 and replays >= 5, (
        frozen, reorgs, stored_windows, replays)


def test_equal_histories_give_equal_bytes(farmers: list[Farmer], verifier: ProofVerifier) -> None:
    (b1, s1), (b2, s2) = history(farmers, verifier, 3), history(farmers, verifier, 3)
    c1, c2 = new_client(b1, verifier), new_client(b2, verifier)
    assert feed(c1, s1) == feed(c2, s2)
    assert c1.to_state() == c2.to_state()


def test_a_frozen_client_stays_frozen_after_a_round_trip(farmers: list[Farmer], verifier: ProofVerifier) -> None:
    builder = ChainBuilder(make_params(n_plots=2), farmers, verifier=verifier)
    main = builder.extend(builder.genesis, 1)
    slow = builder.extend(main[-1][1], 12, delta_ms=3000)
    # the fast fork starts with the other farmer's proof: a copy of a final header's proof is refused
    rival = builder.child(main[-1][1], farmers=[f for f in farmers if f.name != slow[0][0].farmer], delta_ms=5)
    fast = [rival, *builder.extend(rival[1], 11, delta_ms=5)]
    client = new_client(builder, verifier, fork_history=32)
    now = max(h.timestamp_ms for h, _ in slow + fast)
    for h, _ in main + slow:
        client.process_header(h, now)
    with pytest.raises(MisbehaviourError):
        for h, _ in fast:
            client.process_header(h, now)
    copy = restored(client, verifier)
    assert copy.status(now) is ClientStatus.FROZEN
    assert (copy.frozen_height, copy.freeze_reason) == (client.frozen_height, client.freeze_reason)
    assert feed(copy, [slow[-1][0]])[0][0] == "client.frozen"


def test_from_genesis_trusts_the_header_the_park_starts_from(verifier: ProofVerifier) -> None:
    config = {**genesis_config(), "confirmation_depth": 4}
    _, header, ctx = genesis_block(config)
    client = PocLightClient.from_genesis(CID, ChainId("poc-test"), config, 86_400_000, verifier=verifier)
    assert client.final_tip == client.best_tip == ctx
    assert client.final_consensus_state(0).header_hash == header.hash()
    assert client.confirmation_depth == 4
    assert PocLightClient.from_genesis(CID, ChainId("poc-test"), config, 1, confirmation_depth=2,
                                       verifier=verifier).confirmation_depth == 2
    with pytest.raises(WrongChainError):
        PocLightClient.from_genesis(CID, ChainId("other-park"), config, 86_400_000, verifier=verifier)


@pytest.mark.parametrize("mutate", [
    lambda s: {**s, "base": {**s["base"], "client_id": "poc-4"}},
    lambda s: {**s, "v": 1},
    lambda s: {**s, "type": "dpos"},
    lambda s: {**s, "best": "00" * 32},
    lambda s: {**s, "final_tip": s["best"]},
    lambda s: {**s, "nodes": s["nodes"][1:]},
    lambda s: {**s, "nodes": [[*s["nodes"][0][:9], None, *s["nodes"][0][10:]], *s["nodes"][1:]]},
    lambda s: {**s, "nodes": [*s["nodes"], s["nodes"][-1]]},
    lambda s: {**s, "confirmation_depth": 0},
    lambda s: {k: v for k, v in s.items() if k != "fork_history"},
    lambda s: {**s, "client_params": {**s["client_params"], "surprise": 1}},
    lambda s: {**s, "client_params": {**s["client_params"], "max_distance": s["client_params"]["max_pending"]}},
    lambda s: {**s, "nodes": [[*n[:10], 7, *n[11:]] for n in s["nodes"]]},
    lambda s: {**s, "nodes": [[*n[:12], -1] for n in s["nodes"]]},
    lambda s: {**s, "farmer_keys": {"farmer-a": "00"}},
], ids=["other client", "version", "type", "unknown best", "final tip not final", "orphan node",
        "missing window", "duplicate node", "depth", "missing key", "unknown client param", "invalid client param",
        "farmer not a name", "negative held time", "short farmer key"])
def test_malformed_state_is_a_codec_error(farmers: list[Farmer], verifier: ProofVerifier, mutate: object) -> None:
    builder = ChainBuilder(make_params(n_plots=2), farmers, verifier=verifier)
    client = new_client(builder, verifier)
    feed(client, [h for h, _ in builder.extend(builder.genesis, 12)])
    state = json.loads(client.to_state())
    assert state["nodes"][0][9] is not None and all(n[9] is None for n in state["nodes"][1:])
    with pytest.raises(CodecError):
        PocLightClient.from_state(CID, json.dumps(mutate(state)).encode(), verifier=verifier)  # type: ignore[operator]
