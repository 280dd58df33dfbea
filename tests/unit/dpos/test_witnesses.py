"""Witness bookkeeping in chain state, as the node runs it block by block, and its agreement with the light client."""

from __future__ import annotations

import dataclasses
import hashlib
from fractions import Fraction

import pytest

from chains.common.tx import BlockContext
from chains.dpos.consensus import credit_after, schedule, split_largest_remainder
from chains.dpos.light_client import DposLightClient
from chains.dpos.testing import SimChain, forge, make_chain
from chains.dpos.types import DposParams
from chains.dpos.witnesses import (
    CREDIT_MODEL,
    RESERVE_ACCOUNT,
    DoubleSignEvidenceError,
    active_set,
    apply_block_consensus,
    load_tracker,
    witness_record,
)
from protocol.crypto import Ed25519Signer
from protocol.errors import CodecError, HeaderError, ProtocolError, ReplayError, SignatureError, WrongChainError
from protocol.types import ClientId


def rec(sim: SimChain, name: str) -> dict:  # type: ignore[type-arg]
    r = witness_record(sim.state, name)
    assert r is not None
    return r


def test_genesis_state() -> None:
    sim = SimChain(4, n_standby=2, label="gen")
    assert active_set(sim.state).names == ("w00", "w01", "w02", "w03")
    r = rec(sim, "w04")
    assert r["model"] == CREDIT_MODEL and r["credit"] == r["score"] == sim.params.credit_initial
    assert sim.state.balance(RESERVE_ACCOUNT, "prc") == 10**9
    assert sim.genesis.checkpoint.header.state_root == sim.state.root
    # a second build of the same config is byte-identical (a restarted node replays to the same roots)
    again = SimChain(4, n_standby=2, label="gen")
    assert again.state.root == sim.state.root and again.genesis.header.hash() == sim.genesis.header.hash()


def test_replay_is_deterministic() -> None:
    a, b = SimChain(4, n_standby=1, label="replay"), SimChain(4, n_standby=1, label="replay")
    ha = a.produce_many(35, offline={"w02"})
    hb = b.produce_many(35, offline={"w02"})
    assert [h.hash() for h in ha] == [h.hash() for h in hb]


def test_credit_rewards_producers_and_punishes_missed_slots() -> None:
    sim = SimChain(4, label="credit", params={"jail_missed_in_row": 100})
    p = sim.params
    sim.produce_many(6, offline={"w01"})
    bc = [r for r in sim.results[1:] if r is not None]
    missed = sum(r.missed.get("w01", 0) for r in bc)
    produced = {n: sum(1 for h in sim.headers[1:] if h.producer == n) for n in ("w00", "w02", "w03")}
    assert missed > 0 and "w01" not in {h.producer for h in sim.headers[1:]}
    assert rec(sim, "w01")["credit"] == credit_after(p.credit_initial, p, missed=missed)
    assert rec(sim, "w01")["missed"] == missed == rec(sim, "w01")["missed_in_row"]
    for n, k in produced.items():
        assert rec(sim, n)["credit"] == credit_after(p.credit_initial, p, produced=k)
        assert rec(sim, n)["produced"] == k


def test_fast_replacement_jail_election_promotion_release() -> None:
    sim = SimChain(4, n_standby=2, label="jail")
    p = sim.params
    client = sim.client()
    offline = {"w01"}
    jailed_at = replaced_at = None
    for _ in range(60):
        h = sim.produce(offline=offline)
        client.process_header(h, h.timestamp_ms)
        # node state and light client agree on the set and the LIB after every block
        assert client.active_set == active_set(sim.state)
        assert client.lib == load_tracker(sim.state).lib
        if jailed_at is None and rec(sim, "w01")["jailed"]:
            jailed_at = h.height
            assert rec(sim, "w01")["missed_in_row"] >= p.jail_missed_in_row
        if replaced_at is None and "w01" not in client.active_set:
            replaced_at = h.height
            assert "w04" in client.active_set, "the best standby candidate replaces the jailed witness"
    assert jailed_at is not None and replaced_at is not None and replaced_at > jailed_at
    # after J intervals the witness is released with its credit raised, and may be elected again
    released = [e for ev in sim.events for e in ev if e["type"] == "witness_released"]
    assert released and released[0]["witness"] == "w01" and released[0]["credit"] >= p.credit_on_release
    # final consensus states of the light client hold the node's state roots
    for height in client.final_heights()[-5:]:
        assert client.final_consensus_state(height).state_root == sim.headers[height].state_root


def test_boundary_pays_shapley_rewards_from_the_reserve() -> None:
    sim = SimChain(4, label="rewards", params={"block_reward": 1000})
    sim.produce_many(9)
    before = {n: sim.state.balance(n, "prc") for n in ("w00", "w01", "w02", "w03")}
    reserve = sim.state.balance(RESERVE_ACCOUNT, "prc")
    sim.produce()  # height 10: the boundary
    ev = next(e for e in sim.events[-1] if e["type"] == "block_rewards")
    assert ev["blocks"] == 10 and ev["pool"] == 10_000
    paid = {n: sim.state.balance(n, "prc") - before[n] for n in before}
    assert sum(paid.values()) == 10_000 == reserve - sim.state.balance(RESERVE_ACCOUNT, "prc")
    assert paid == {k: v for k, v in ev["paid"].items()} | {n: 0 for n in paid if n not in ev["paid"]}
    assert all(rec(sim, n)["interval_produced"] == 0 for n in paid)
    counts = {n: sum(1 for h in sim.headers[1:] if h.producer == n) for n in paid}
    # producers of equal block counts (credit equal too, as credit follows production) get equal rewards
    for a in paid:
        for b in paid:
            if counts[a] == counts[b]:
                assert abs(paid[a] - paid[b]) <= 1


def test_reserve_running_dry_pays_what_is_left() -> None:
    sim = SimChain(3, label="dry", params={"block_reward": 1000}, reserve={"prc": 1234})
    sim.produce_many(10)
    assert sim.state.balance(RESERVE_ACCOUNT, "prc") == 0
    assert sum(sim.state.balance(n, "prc") for n in ("w00", "w01", "w02")) == 1234


def test_votes_weighted_by_stake_change_the_election() -> None:
    sim = SimChain(4, n_standby=1, label="votes", accounts={"whale": {"kWh": 5_000_000}, "minnow": {"kWh": 10}})
    client = sim.client()
    txs = [sim.tx("whale", "witness.vote", {"witness": "w04"}), sim.tx("minnow", "witness.vote", {"witness": "w00"})]
    for h in [sim.produce(txs), *sim.produce_many(25)]:
        client.process_header(h, h.timestamp_ms)
    assert rec(sim, "w04")["votes"] == 5_000_000 + rec(sim, "w04")["base_votes"]
    assert "w04" in active_set(sim.state) and "w04" in client.active_set
    assert "w03" not in active_set(sim.state), "the weakest score makes room"
    # a stake cap limits the weight; withdrawing the approval removes it
    sim.produce([sim.tx("whale", "witness.vote", {"witness": "w04", "stake": 100}),
                 sim.tx("minnow", "witness.vote", {"witness": "w00", "approve": False})])
    sim.produce_many(10)
    assert rec(sim, "w04")["votes"] == 100 + rec(sim, "w04")["base_votes"]
    assert rec(sim, "w00")["votes"] == rec(sim, "w00")["base_votes"]
    sim.produce([sim.tx("whale", "witness.vote", {"witness": "nobody"}),
                 sim.tx("minnow", "witness.vote", {"witness": "w01", "approve": False}),
                 sim.tx("whale", "witness.vote", {"witness": "w01", "stake": -1})])
    assert len(sim.failed[-1]) == 3


def test_register_witness_op() -> None:
    sim = SimChain(3, label="register", accounts={"newbie": {}})
    key = hashlib.sha256(b"TEST-ONLY newbie block key").digest()
    pub = Ed25519Signer(key).pubkey.hex()
    sim.produce([sim.tx("newbie", "witness.register", {"pubkey": pub, "url": "https://newbie.example"}),
                 sim.tx("w00", "witness.register", {"pubkey": pub}),  # key already taken
                 sim.tx("newbie", "witness.register", {"pubkey": "zz"}, nonce=1)])
    assert [type(e).__name__ for _, e in sim.failed[-1]] == ["ProtocolError", "CodecError"]
    r = rec(sim, "newbie")
    assert r["pubkey"] == pub and r["credit"] == sim.params.credit_initial and not r["jailed"]


def test_double_production_evidence_punishes_once() -> None:
    sim = SimChain(4, label="evidence")
    sim.produce_many(5)
    h = sim.headers[3]
    twin = forge(h, sim.signers[h.producer], tx_root=b"\x01" * 32)
    args = {"header_a": h.encode().hex(), "header_b": twin.encode().hex()}
    credit = rec(sim, h.producer)["credit"]
    sim.produce([sim.tx("w00", "witness.report_double_production", args)])
    assert not sim.failed[-1], sim.failed[-1]
    r = rec(sim, h.producer)
    assert r["bad_blocks"] == 1 and r["jailed"]
    assert r["credit"] <= credit - sim.params.credit_bad_block_penalty + 2 * sim.params.credit_produced_reward
    sim.produce([sim.tx("w00", "witness.report_double_production", args)])
    assert isinstance(sim.failed[-1][0][1], ReplayError)
    assert r["credit"] < credit and r["jailed_until"] > 0  # slashed and jailed: the next election replaces it


def test_bad_double_production_evidence_is_refused_with_typed_errors() -> None:
    sim = SimChain(4, label="evidence")
    sim.produce_many(5)
    h, other = sim.headers[3], sim.headers[4]
    twin = forge(h, sim.signers[h.producer], tx_root=b"\x01" * 32)
    stranger = forge(twin, sim.signers[h.producer], producer="nobody")
    cases: list[tuple[str, dict[str, str], type[ProtocolError], str]] = [
        ("different heights", {"header_a": h.encode().hex(), "header_b": other.encode().hex()},
         DoubleSignEvidenceError, "header.dpos.double_sign_evidence"),
        ("the same header twice", {"header_a": h.encode().hex(), "header_b": h.encode().hex()},
         DoubleSignEvidenceError, "header.dpos.double_sign_evidence"),
        ("an unknown witness", {"header_a": forge(h, producer="nobody").encode().hex(),
                                "header_b": stranger.encode().hex()},
         DoubleSignEvidenceError, "header.dpos.double_sign_evidence"),
        ("a bad signature", {"header_a": h.encode().hex(),
                             "header_b": dataclasses.replace(twin, signature=b"\x00" * 64).encode().hex()},
         SignatureError, "signature.invalid"),
        ("another witness's key", {"header_a": h.encode().hex(),
                                   "header_b": forge(twin, sim.signers[other.producer]).encode().hex()},
         SignatureError, "signature.invalid"),
        ("another chain", {"header_a": forge(h, chain_id="other-park").encode().hex(),
                           "header_b": forge(twin, chain_id="other-park").encode().hex()},
         WrongChainError, "packet.wrong_chain"),
        ("not hex", {"header_a": h.encode().hex(), "header_b": "zz"}, CodecError, "codec.invalid"),
    ]
    for what, args, error, code in cases:
        sim.produce([sim.tx("w01", "witness.report_double_production", args)])
        [(_, exc)] = sim.failed[-1]
        assert type(exc) is error and exc.code == code, what
    assert not rec(sim, h.producer)["jailed"] and rec(sim, h.producer)["bad_blocks"] == 0


def test_apply_block_consensus_rejects_wrong_producer_without_changes() -> None:
    sim = SimChain(4, label="wrong")
    sim.produce_many(3)
    slot = sim.tip.slot + 1
    right = schedule(active_set(sim.state), slot, sim.params.genesis_slot)
    wrong = next(n for n in active_set(sim.state).names if n != right)
    root = sim.state.root
    for ctx in (BlockContext(sim.chain_id, sim.tip.height + 1, slot * 1000, wrong),
                BlockContext(sim.chain_id, sim.tip.height + 2, slot * 1000, right),
                BlockContext(sim.chain_id, sim.tip.height + 1, sim.tip.timestamp_ms, right)):
        with pytest.raises(HeaderError):
            apply_block_consensus(sim.state, sim.params, ctx)
        assert sim.state.root == root


def test_long_outage_is_accounted_arithmetically() -> None:
    sim = SimChain(4, label="outage", params={"jail_missed_in_row": 10**9, "credit_missed_penalty": 0})
    sim.produce()
    sim.produce(skip_slots=4 * 100_000)  # a chain down for ~4.6 days: whole rounds counted at once
    missed = sim.results[-1].missed  # type: ignore[union-attr]
    assert sum(missed.values()) >= 4 * 100_000 and all(v >= 99_999 for v in missed.values())


def test_make_chain_contract() -> None:
    args, headers = make_chain(250, 21, maintenance_interval_blocks=50)
    assert set(args) == {"chain_id", "trusting_period_ms", "params", "checkpoint"}
    assert isinstance(args["params"], DposParams) and len(headers) == 250
    client = DposLightClient(client_id=ClientId("dpos-0"), **args)
    for h in headers:
        client.process_header(h, h.timestamp_ms)
    assert client.final_height > 200 and len(client.active_set) == 21
    assert client.active_set != DposLightClient(client_id=ClientId("dpos-1"), **args).active_set


def _evidence_run(replacement: int) -> tuple[int, int, SimChain]:
    """w-producer of block 3 double-produces; the evidence lands in block 6. Returns (evidence height, height at
    which a set without the offender came into force), checking the light client agrees on every block."""
    sim = SimChain(4, n_standby=2, label="fast", maintenance_interval_blocks=20,
                   params={"replacement_interval_blocks": replacement})
    client = sim.client()
    for h in sim.produce_many(5):
        client.process_header(h, h.timestamp_ms)
    bad = sim.headers[3]
    twin = forge(bad, sim.signers[bad.producer], tx_root=b"\x02" * 32)
    h = sim.produce([sim.tx("w00", "witness.report_double_production",
                            {"header_a": bad.encode().hex(), "header_b": twin.encode().hex()})])
    client.process_header(h, h.timestamp_ms)
    assert not sim.failed[-1] and rec(sim, bad.producer)["jailed"]
    evidence_at, replaced_at = h.height, None
    while replaced_at is None and sim.tip.height < 60:
        h = sim.produce()
        client.process_header(h, h.timestamp_ms)
        assert client.active_set == active_set(sim.state) and client.lib == load_tracker(sim.state).lib
        if bad.producer not in active_set(sim.state):
            replaced_at = h.height
    assert replaced_at is not None
    return evidence_at, replaced_at, sim


def test_fast_replacement_elects_in_the_next_block_not_at_the_boundary() -> None:
    evidence_at, fast_at, sim = _evidence_run(1)
    elections = [(height, e) for height, ev in enumerate(sim.events) for e in ev if e["type"] == "election"]
    first_height, first = elections[0]
    assert first_height == evidence_at + 1 and first["fast"] is True
    assert sim.results[first_height] is not None and sim.results[first_height].pending_set is not None
    # it was promoted once the proposing block became irreversible: long before the boundary at 20
    assert fast_at < 20
    # plain timing (replacement_interval_blocks = 0): the boundary at 20 elects, then finality promotes
    evidence_plain, plain_at, plain = _evidence_run(0)
    assert evidence_plain == evidence_at and plain_at > 20 > fast_at
    assert all(e["fast"] is False for ev in plain.events for e in ev if e["type"] == "election")


def test_fast_replacement_parameters_and_light_client_bound() -> None:
    with pytest.raises(CodecError):
        DposParams(genesis_time_ms=0, maintenance_interval_blocks=10, replacement_interval_blocks=3)
    with pytest.raises(CodecError):
        DposParams(genesis_time_ms=0, reward_split="equal")
    p = DposParams(genesis_time_ms=0, maintenance_interval_blocks=10, replacement_interval_blocks=5)
    assert [h for h in range(0, 21) if p.may_propose(h)] == [5, 10, 15, 20]
    assert DposParams.from_json(p.to_json()) == p
    # a light client with R = 5 still refuses a proposal at a height that is not a multiple of R
    sim = SimChain(4, n_standby=1, label="fastlc", params={"replacement_interval_blocks": 5})
    client = sim.client()
    for h in sim.produce_many(3):
        client.process_header(h, h.timestamp_ms)
    bad = forge(sim.produce(), sim.signers[sim.tip.producer], pending_set=active_set(sim.state).members)
    assert bad.height == 4
    with pytest.raises(HeaderError, match="off a maintenance boundary"):
        client.process_header(bad, bad.timestamp_ms)


def test_proportional_split_pays_by_blocks_shapley_by_quorum_share() -> None:
    paid = {}
    for split in ("proportional", "shapley"):
        sim = SimChain(4, label="split", params={"block_reward": 1000, "reward_split": split,
                                                  "jail_missed_in_row": 100})
        # w01 is offline for the first half of the interval: it produces fewer blocks
        sim.produce_many(5, offline={"w01"})
        sim.produce_many(5)
        counts = {n: sum(1 for h in sim.headers[1:] if h.producer == n) for n in ("w00", "w01", "w02", "w03")}
        ev = next(e for e in sim.events[-1] if e["type"] == "block_rewards")
        assert sum(ev["paid"].values()) == ev["pool"] == 1000 * sum(counts.values())
        paid[split] = ev["paid"]
        if split == "proportional":
            assert all(abs(ev["paid"][n] - 1000 * counts[n]) <= 1 for n in counts)
    assert counts["w01"] < max(counts.values())
    # the Shapley split pays the quorum member with fewer blocks more than its block share
    assert paid["shapley"]["w01"] > paid["proportional"]["w01"]


@pytest.mark.parametrize("rule", [True, False])
def test_inactive_dr_node_loses_its_turn_in_elections(rule: bool) -> None:
    sim = SimChain(4, n_standby=1, label="drwit", market={"dr_cycle_ms": 5000},
                   params={"dr_inactive_ineligible": rule})
    sim.produce([sim.tx("w01", "dr.register", {"role": "user"})])
    assert not sim.failed[-1], sim.failed[-1]
    sim.produce_many(25)
    dr = sim.state.get_json(b"reputation/w01")
    assert dr["active"] is False  # it never matched in a DR cycle
    elections = [e for ev in sim.events for e in ev if e["type"] == "election"]
    assert elections
    if rule:
        assert all("w01" not in e["elected"] and "w04" in e["elected"] for e in elections)
        assert "w01" not in active_set(sim.state) and "w04" in active_set(sim.state)
    else:
        assert "w01" in active_set(sim.state) and "w04" not in active_set(sim.state)
    with pytest.raises(CodecError):
        DposParams(genesis_time_ms=0, dr_inactive_ineligible=1)  # type: ignore[arg-type]


def test_voters_share_the_rewards_of_the_witnesses_they_chose() -> None:
    sim = SimChain(4, label="voterpay", accounts={"ann": {"kWh": 3000}, "ben": {"kWh": 1000}, "cat": {"kWh": 500}},
                   params={"block_reward": 1000, "voter_reward_share_bp": 2000, "jail_missed_in_row": 100})
    # ann and ben approve w00 (ben caps its stake at 500 Wh); cat approves w01, which is offline: it produces nothing
    sim.produce([sim.tx("ann", "witness.vote", {"witness": "w00"}),
                 sim.tx("ben", "witness.vote", {"witness": "w00", "stake": 500}),
                 sim.tx("cat", "witness.vote", {"witness": "w01"})], offline={"w01"})
    reserve = sim.state.balance(RESERVE_ACCOUNT, "prc")
    while sim.tip.height < 10:
        sim.produce(offline={"w01"})
    ev = next(e for e in sim.events[-1] if e["type"] == "block_rewards")
    w00 = ev["paid"]["w00"]
    to_voters = w00 * 2000 // 10_000
    # in proportion to the stake counted for w00: ann 3000, ben its cap of 500
    assert ev["voters"] == split_largest_remainder(to_voters, {"ann": Fraction(3000), "ben": Fraction(500)})
    assert sum(ev["voters"].values()) == to_voters > 0
    assert "cat" not in ev["voters"] and "w01" not in ev["paid"]  # its witness earned nothing
    assert sim.state.balance("ann", "prc") == ev["voters"]["ann"]
    assert sim.state.balance("w00", "prc") == w00 - to_voters
    # everything paid came out of the reserve
    total = sum(sim.state.balance(n, "prc") for n in ("w00", "w01", "w02", "w03", "ann", "ben", "cat"))
    assert total == reserve - sim.state.balance(RESERVE_ACCOUNT, "prc") == ev["pool"]
    with pytest.raises(CodecError):
        DposParams(genesis_time_ms=0, voter_reward_share_bp=10_001)
