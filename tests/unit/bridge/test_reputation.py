"""Reputation between simulated parks (SPEC §2.3 "Reputation"): scores read from the source park's own state
by its provider (DPoS witness credit and DR roles, PoC response rate), imported keyed by (source, subject,
model), stale attestations refused, and the markets that read imported reputation (DPoS DR registration,
PoC ranking).
"""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.bridge import AssetError, reputation_path, supply_report
from chains.common.reputation import imported_reputation
from chains.common.state import ChainState
from chains.common.tx import BlockContext
from chains.dpos.market import MarketParams, register_market_ops
from chains.dpos.reputation import dpos_bridge_hooks, dpos_reputation_provider
from chains.dpos.types import DposParams
from chains.dpos.witnesses import witness_path
from chains.poc.market import PocAppParams, clear_service, farmer_key, market_ops, new_farmer_record, response_ppm
from chains.poc.reputation import MODEL as POC_MODEL
from chains.poc.reputation import poc_bridge_hooks
from protocol.codec import decode_reputation, encode_reputation
from protocol.errors import CodecError, ReputationInsufficientError
from protocol.types import ChainId, LaneId, Packet, PacketKind, ReputationPayload
from tests.unit.bridge.sim import MINUTE, STATIONS, Network, ParkSim

WITNESS = "dpos-witness-credit/v1"
AGG, USER = "dr-aggregator-reputation/v1", "dr-user-reputation/v1"
POC_PARAMS = PocAppParams(grid_operator="operator")
DPOS_PARAMS = DposParams(genesis_time_ms=0)


def parks() -> Network:
    """dpos-park and poc-park with their own providers and markets (ops only: no block hooks run here)."""
    net = Network()
    dpos = net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], transformers={"t1": 100},
                        stations=STATIONS, hooks=dpos_bridge_hooks(DPOS_PARAMS, MarketParams()))
    poc = net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}],
                       accounts=("bob", "carol", "relayer", "operator"), transformers={"t1": 50}, stations=STATIONS,
                       hooks=poc_bridge_hooks(POC_PARAMS))
    register_market_ops(dpos.app, MarketParams())
    for name, op in market_ops(POC_PARAMS).items():
        poc.app.register(name, op)
    return net


def rep_args(subject: str, dst: str = "poc-park", receiver: str = "bob", **kw: Any) -> dict[str, Any]:
    return {"dst_chain": dst, "lane": "lane-0", "kind": "reputation", "receiver": receiver, "subject": subject, **kw}


def set_witness(park: ParkSim, name: str, credit: int) -> None:
    park.state.set_json(witness_path(name), {"name": name, "credit": credit, "score": credit, "model": WITNESS})


def set_dr(park: ParkSim, name: str, role: str, score: int) -> None:
    park.state.set_json(reputation_path(name), {"score": score, "model": AGG if role == "aggregator" else USER,
                                                "height": 1, "role": role, "active": True})


def set_farmer(park: ParkSim, name: str, awarded: int, delivered: int) -> None:
    park.state.set_json(farmer_key(name), {**new_farmer_record(), "awarded_kw": awarded, "delivered_kw": delivered})


# --- the source reads its own state -----------------------------------------------------------------


def test_dpos_attests_witness_credit_and_dr_reputation_by_role_from_state() -> None:
    state = ChainState()
    provide = dpos_reputation_provider(DposParams(genesis_time_ms=0, credit_max=20_000), MarketParams())
    ctx = BlockContext("dpos-park", 42, 0, "")
    state.set_json(witness_path("w1"), {"credit": 15_000})
    state.set_json(reputation_path("agg"), {"score": 7_300, "role": "aggregator"})
    state.set_json(reputation_path("u1"), {"score": 4_100, "role": "user"})
    assert provide(state, "w1", None, ctx) == ReputationPayload("w1", 7_500, WITNESS, 42)  # scaled to basis points
    assert provide(state, "agg", None, ctx) == ReputationPayload("agg", 7_300, AGG, 42)
    assert provide(state, "u1", USER, ctx) == ReputationPayload("u1", 4_100, USER, 42)
    for subject, model in (("u1", AGG), ("agg", USER), ("agg", WITNESS), ("w1", "eth-delivery-record/v1"),
                           ("nobody", None)):
        with pytest.raises(AssetError):
            provide(state, subject, model, ctx)


def test_poc_attests_its_own_response_rate_never_an_imported_one() -> None:
    net = parks()
    poc = net.parks["poc-park"]
    set_farmer(poc, "carol", awarded=200, delivered=190)
    net.roundtrip("poc-park", "carol", **rep_args("carol", dst="dpos-park", receiver="alice"))
    rec = imported_reputation(net.parks["dpos-park"].state, "poc-park", "carol", POC_MODEL)
    assert rec is not None and rec["score"] == 9_500 and rec["holder"] == "alice"
    # a unit with no award here attests the market's default, even if it imported a better score
    set_farmer(poc, "bob", awarded=0, delivered=0)
    rec_bob = poc.state.get_json(farmer_key("bob"))
    rec_bob["imported"] = {"src_chain": "x", "subject": "bob", "model": WITNESS, "score": 10_000, "source_height": 1}
    poc.state.set_json(farmer_key("bob"), rec_bob)
    net.roundtrip("poc-park", "bob", **rep_args("bob", dst="dpos-park", receiver="alice"))
    rec = imported_reputation(net.parks["dpos-park"].state, "poc-park", "bob", POC_MODEL)
    assert rec is not None and rec["score"] == POC_PARAMS.default_response_ppm // 100


def test_the_sender_cannot_supply_the_score_the_packet_carries_the_state_s() -> None:
    net = parks()
    dpos = net.parks["dpos-park"]
    set_witness(dpos, "w1", 6_100)
    with pytest.raises(CodecError):
        dpos.tx("alice", "bridge.send", {**rep_args("w1"), "score": 10_000,
                                         "timeout_timestamp_ms": net.now_ms + MINUTE})
    packet, ack, _ = net.roundtrip("dpos-park", "alice", **rep_args("w1"))
    assert ack["success"]
    assert decode_reputation(packet.payload).score == 6_100  # what the state holds (credit_max 10000)
    assert imported_reputation(net.parks["poc-park"].state, "dpos-park", "w1", WITNESS)["score"] == 6_100
    assert supply_report(dpos.state, ["kWh"])["escrow"] == {"kWh": 0}  # nothing escrowed


# --- the target: keyed by (source, subject, model), never replaced by an older one ------------------


def test_models_of_one_subject_are_kept_apart_and_stale_attestations_refused() -> None:
    net = parks()
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    set_witness(dpos, "alice", 8_000)
    set_dr(dpos, "alice", "aggregator", 7_000)
    old = net.send("dpos-park", "alice", **rep_args("alice", model=WITNESS))
    set_witness(dpos, "alice", 8_500)
    new = net.send("dpos-park", "alice", **rep_args("alice", model=WITNESS))
    agg = net.send("dpos-park", "alice", **rep_args("alice", model=AGG))
    assert new.sequence > old.sequence
    certs = {p.sequence: net.verify(p) for p in (old, new, agg)}
    assert net.recv(new, certs[new.sequence])["success"]
    assert net.recv(old, certs[old.sequence])["code"] == "reputation.stale"  # older source height
    assert net.recv(agg, certs[agg.sequence])["success"]  # another model: its own key
    held = poc.state.get_json(b"imported_reputation/dpos-park/alice")
    assert held[WITNESS]["score"] == 8_500 and held[AGG]["score"] == 7_000
    assert held[WITNESS]["holder"] == "bob"  # alice sent her own score to bob
    for p in (old, new, agg):
        net.settle(p, *net.confirm(p))
    net.check()


def _forged_rep(net: Network, r: ReputationPayload, sequence: int, sender: str = "alice",
                receiver: str = "bob") -> dict[str, Any]:
    packet = Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-0"), sequence, PacketKind.REPUTATION,
                    encode_reputation(r), sender, receiver, net.now_ms + MINUTE)
    net.relay.verify_unchecked(packet)
    return net.recv(packet, net.verified_cert(packet))


def test_an_attestation_at_the_same_source_height_is_stale_and_a_score_past_10000_invalid() -> None:
    net = parks()
    assert _forged_rep(net, ReputationPayload("w1", 5_000, WITNESS, 9), 1)["success"]
    assert _forged_rep(net, ReputationPayload("w1", 9_999, WITNESS, 9), 2)["code"] == "reputation.stale"
    assert _forged_rep(net, ReputationPayload("w1", 10_001, WITNESS, 10), 3)["code"] == "payload.invalid"
    rec = imported_reputation(net.parks["poc-park"].state, "dpos-park", "w1", WITNESS)
    assert rec is not None and rec["score"] == 5_000 and rec["source_height"] == 9


def test_an_attestation_to_an_unknown_receiver_is_an_error_ack_and_records_nothing() -> None:
    net = parks()
    assert _forged_rep(net, ReputationPayload("w1", 5_000, WITNESS, 9), 1, receiver="nobody")["code"] == \
        "receiver.unknown"
    assert imported_reputation(net.parks["poc-park"].state, "dpos-park", "w1", WITNESS) is None
    # the same attestation to an account is recorded: the refusal consumed nothing
    assert _forged_rep(net, ReputationPayload("w1", 5_000, WITNESS, 9), 2)["success"]


def test_a_third_party_refreshes_the_score_but_not_the_holder() -> None:
    net = parks()
    assert _forged_rep(net, ReputationPayload("w1", 5_000, WITNESS, 9), 1, sender="w1", receiver="carol")["success"]
    assert _forged_rep(net, ReputationPayload("w1", 6_000, WITNESS, 10), 2, sender="alice", receiver="bob")["success"]
    rec = imported_reputation(net.parks["poc-park"].state, "dpos-park", "w1", WITNESS)
    assert rec == {"score": 6_000, "source_height": 10, "height": rec["height"], "holder": "carol"}


# --- markets read imported reputation ---------------------------------------------------------------


def test_dpos_dr_admits_an_aggregator_from_another_park_by_its_imported_score() -> None:
    net = parks()
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    set_farmer(poc, "carol", awarded=100, delivered=95)
    set_farmer(poc, "bob", awarded=100, delivered=40)
    net.roundtrip("poc-park", "carol", **rep_args("carol", dst="dpos-park", receiver="bob"))  # carol speaks as bob
    net.roundtrip("poc-park", "bob", **rep_args("bob", dst="dpos-park", receiver="alice"))
    ref = {"src_chain": "poc-park", "subject": "carol", "model": POC_MODEL}
    # only the holder may use it
    with pytest.raises(ReputationInsufficientError):
        dpos.tx("alice", "dr.register", {"role": "aggregator", "import": ref})
    (event,) = dpos.tx("bob", "dr.register", {"role": "aggregator", "import": ref})
    assert event["score"] == 9_500 and event["imported_from"]["subject"] == "carol"
    assert dpos.state.get_json(reputation_path("bob"))["score"] == 9_500  # not the initial 5000
    # below the market's threshold (6000): refused, and nothing written
    root = dpos.state.root
    with pytest.raises(ReputationInsufficientError):
        dpos.tx("alice", "dr.register", {"role": "aggregator",
                                         "import": {**ref, "subject": "bob"}})
    assert dpos.state.root == root
    with pytest.raises(CodecError):
        dpos.tx("alice", "dr.register", {"role": "aggregator", "import": {**ref, "extra": 1}})
    # the imported aggregator is attested onwards by this park's own model and record
    assert net.roundtrip("dpos-park", "bob", **rep_args("bob", receiver="carol"))[1]["success"]
    held = imported_reputation(poc.state, "dpos-park", "bob", AGG)
    assert held is not None and held["score"] == 9_500


def test_poc_ranks_a_newcomer_by_the_reputation_it_brought() -> None:
    net = parks()
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    set_dr(dpos, "alice", "user", 9_800)
    net.roundtrip("dpos-park", "alice", **rep_args("alice", receiver="carol", model=USER))
    ref = {"src_chain": "dpos-park", "subject": "alice", "model": USER}
    with pytest.raises(ReputationInsufficientError):
        poc.tx("bob", "market.import_reputation", ref)  # bob does not hold it
    (event,) = poc.tx("carol", "market.import_reputation", ref)
    assert event["response_ppm"] == 980_000
    carol, bob = poc.state.get_json(farmer_key("carol")), new_farmer_record()
    assert response_ppm(POC_PARAMS, carol) == 980_000 > response_ppm(POC_PARAMS, bob) == 900_000
    # same price, same space: the newcomer with a record elsewhere is called first
    carol["committed_bytes"] = bob["committed_bytes"] = 10**9
    offers = {"bob": {"amount_kw": 100, "price": 5}, "carol": {"amount_kw": 100, "price": 5}}
    demand = {"amount_kw": 100, "price_cap": 5}
    params = PocAppParams(grid_operator="operator", max_unit_share_pct=100)
    assert clear_service(params, demand, offers, {"bob": bob, "carol": carol})[1] == {"carol": 100}
    # its own record takes over once it has one
    carol.update(awarded_kw=100, delivered_kw=50)
    assert response_ppm(POC_PARAMS, carol) == 500_000


def test_poc_refuses_an_import_below_its_threshold() -> None:
    net = parks()
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    set_dr(dpos, "alice", "user", 4_000)
    net.roundtrip("dpos-park", "alice", **rep_args("alice", receiver="carol", model=USER))
    with pytest.raises(ReputationInsufficientError):
        poc.tx("carol", "market.import_reputation", {"src_chain": "dpos-park", "subject": "alice", "model": USER})
    assert poc.state.get_json(farmer_key("carol")) is None

