"""Charging rights between simulated parks (SPEC §2.3): the right-id trace over several hops, admission in
its order of refusals, bookings held while a right is live or in flight, and every rejection.

Every scenario checks, after each phase, that supply is conserved and that each right exists exactly once
(:meth:`Network.check`, which runs :func:`chains.common.rights.rights_violations` over every park's
:func:`chains.common.rights.rights_report`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chains.common.bridge import ESCROW_OWNER, BridgeHooks, default_admission, rights_report, supply_report
from chains.common.rights import admission_refusal, rights_violations
from chains.common.state import ChainState
from protocol.codec import encode_charging_right
from protocol.errors import ADMISSION_CODES, AuthorizationError
from protocol.types import ChainId, ChargingRightPayload, LaneId, Packet, PacketKind
from tests.unit.bridge.sim import MINUTE, STATIONS, Network, ParkSim, three_parks, two_parks

HOUR = 60 * MINUTE
SLOT_START = 10 * HOUR
"""Slots start 10 hours after the network's clock when issued."""
V1 = "lane-0/dpos-park/r1"
"""r1 as poc-park holds it."""
V2 = "lane-1/poc-park/lane-0/dpos-park/r1"
"""r1 as edge-park holds it (two hops from home)."""


@pytest.fixture
def net() -> Network:
    return two_parks()


def issue(net: Network, right_id: str, power_kw: int, owner: str = "alice", start_off: int = SLOT_START,
          hours: int = 2, station: str = "station-7", transformer: str = "t1", park: str = "dpos-park") -> None:
    start = net.now_ms + start_off
    net.parks[park].tx("operator", "rights.issue", {
        "right_id": right_id, "station": station, "transformer": transformer, "power_kw": power_kw,
        "slot_start_ms": start, "slot_end_ms": start + hours * HOUR, "owner": owner})


def right_args(right_id: str, receiver: str = "bob", dst: str = "poc-park", lane: str = "lane-0") -> dict[str, Any]:
    return {"dst_chain": dst, "lane": lane, "kind": "charging_right", "receiver": receiver, "right_id": right_id}


def booked(park: ParkSim, transformer: str = "t1") -> list[str]:
    return [b["right_id"] for b in park.state.get_json(f"bookings/{transformer}".encode()) or []]


def owners(net: Network) -> dict[str, dict[str, str]]:
    """Every park's rights: live ones by owner, escrowed ones as ``@escrow``, burning ones as ``@burning``."""
    out = {}
    for cid, park in net.parks.items():
        rep = rights_report(park.state)
        out[cid] = {**{r: v["owner"] for r, v in rep["live"].items()}, **dict.fromkeys(rep["escrowed"], ESCROW_OWNER),
                    **dict.fromkeys(rep["burning"], "@burning")}
    return out


# --- one hop and back -----------------------------------------------------------------------------


def test_right_leaves_as_a_voucher_and_comes_home_unescrowed(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 22)
    assert booked(dpos) == ["r1"]
    packet = net.send("dpos-park", "alice", **right_args("r1"))
    assert dpos.right("r1")["owner"] == ESCROW_OWNER
    assert dpos.right("r1")["escrowed_to"] == {"chain": "poc-park", "lane": "lane-0", "sequence": 1}
    assert booked(dpos) == ["r1"]  # in flight: still booked at home
    net.check()
    assert net.recv(packet, net.verify(packet))["success"]
    # minted under its trace; home_park and every other field unchanged
    assert poc.right(V1) == {"home_park": "dpos-park", "station": "station-7", "transformer": "t1", "power_kw": 22,
                             "slot_start_ms": net.now_ms + SLOT_START,
                             "slot_end_ms": net.now_ms + SLOT_START + 2 * HOUR, "owner": "bob"}
    assert poc.right("r1") is None and booked(poc) == [V1]
    net.check()
    cert, ack_hex = net.confirm(packet)
    assert not net.settle(packet, cert, ack_hex)["refunded"]
    assert dpos.right("r1")["owner"] == ESCROW_OWNER and booked(dpos) == []  # left with a success ack: released
    net.check()
    # home: burned on poc (kept, booked, until settled), un-escrowed and re-admitted at home
    back = net.send("poc-park", "bob", **right_args(V1, receiver="alice", dst="dpos-park"))
    assert poc.right(V1) is None and poc.state.get_json(f"rights_burned/{V1}".encode())["burned_to"]["sequence"] == 1
    assert booked(poc) == [V1]
    net.check()
    assert net.recv(back, net.verify(back))["success"]
    assert dpos.right("r1")["owner"] == "alice" and "escrowed_to" not in dpos.right("r1")
    assert booked(dpos) == ["r1"]
    net.check()
    cert, ack_hex = net.confirm(back)
    net.settle(back, cert, ack_hex)
    assert poc.state.get(f"rights_burned/{V1}".encode()) is None and booked(poc) == []
    assert owners(net) == {"dpos-park": {"r1": "alice"}, "poc-park": {}}
    net.check()


def test_right_may_time_out_exactly_at_its_slot_start(net: Network) -> None:
    issue(net, "r1", 5)
    slot_start = net.parks["dpos-park"].right("r1")["slot_start_ms"]
    packet = net.send("dpos-park", "alice", **right_args("r1"), timeout_timestamp_ms=slot_start)
    net.advance(SLOT_START - MINUTE)  # a minute before the slot: still executes
    assert net.recv(packet, net.verify(packet))["success"]
    net.check()


def test_a_refused_right_is_refunded_at_home_still_booked(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 30)
    issue(net, "r2", 30)
    issue(net, "r3", 30, start_off=SLOT_START + 3 * HOUR)  # after r1's slot ends
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["success"]
    _, ack, settle = net.roundtrip("dpos-park", "alice", **right_args("r2"))
    assert ack["code"] == "capacity.exceeded" and settle["refunded"]  # 30 + 30 > 50 on poc's t1
    assert dpos.right("r2")["owner"] == "alice" and "escrowed_to" not in dpos.right("r2")
    assert poc.right("lane-0/dpos-park/r2") is None
    assert booked(dpos) == ["r2", "r3"]  # r1 left (released); r2's refund kept its booking
    assert net.roundtrip("dpos-park", "alice", **right_args("r3"))[1]["success"]  # no overlap with r1
    assert booked(poc) == [V1, "lane-0/dpos-park/r3"]


def test_return_before_the_departure_settles_keeps_the_new_booking(net: Network) -> None:
    """The right comes back (and is re-admitted, not counted against its own booking) before its home
    settles its departure; that late success settlement must not release the new booking."""
    dpos = net.parks["dpos-park"]
    net.parks["dpos-park"].tx("operator", "rights.set_transformer", {"name": "t1", "capacity_kw": 22})
    issue(net, "r1", 22)  # the whole transformer
    out = net.send("dpos-park", "alice", **right_args("r1"))
    assert net.recv(out, net.verify(out))["success"]
    out_outcome = net.confirm(out)
    back = net.send("poc-park", "bob", **right_args(V1, receiver="alice", dst="dpos-park"))
    assert net.recv(back, net.verify(back))["success"]  # r1's own booking does not count against it
    assert dpos.right("r1")["owner"] == "alice" and booked(dpos) == ["r1"]
    net.settle(out, *out_outcome)  # the late settlement of the departure
    assert booked(dpos) == ["r1"]
    net.settle(back, *net.confirm(back))
    net.check()


def test_a_refunded_return_re_mints_the_voucher_still_booked(net: Network) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    issue(net, "r1", 10)
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    _, ack, settle = net.roundtrip("poc-park", "bob", **right_args(V1, receiver="nobody", dst="dpos-park"))
    assert ack["code"] == "receiver.unknown" and settle["refunded"]
    assert poc.right(V1)["owner"] == "bob" and poc.state.get(f"rights_burned/{V1}".encode()) is None
    assert dpos.right("r1")["owner"] == ESCROW_OWNER
    packet = net.send("poc-park", "bob", **right_args(V1, receiver="alice", dst="dpos-park"),
                      timeout_timestamp_ms=net.now_ms + MINUTE)
    net.verify(packet)
    net.advance(MINUTE)
    net.check()
    net.settle(packet, net.confirm_timeout(packet), None)
    assert poc.right(V1)["owner"] == "bob" and booked(poc) == [V1]
    net.check()


# --- admission ------------------------------------------------------------------------------------


def _registry(park: ParkSim, stations: dict[str, str], transformers: dict[str, int]) -> None:
    for name, capacity in transformers.items():
        park.tx("operator", "rights.set_transformer", {"name": name, "capacity_kw": capacity})
    for name, transformer in stations.items():
        park.tx("operator", "rights.set_station", {"name": name, "transformer": transformer})


@pytest.mark.parametrize(("stations", "transformers", "code"), [
    # each case also breaks every later rule, so the order of the refusals shows
    ({}, {}, "station.unknown"),
    ({"st-x": "t-other"}, {"t-other": 1}, "transformer.mismatch"),
    ({"st-x": "t-x"}, {}, "transformer.unknown"),
    ({"st-x": "t-x"}, {"t-x": 10}, "capacity.exceeded"),
    ({"st-x": "t-x"}, {"t-x": 11}, None),
], ids=["station.unknown", "transformer.mismatch", "transformer.unknown", "capacity.exceeded", "admitted"])
def test_admission_refuses_in_the_order_of_the_rules(net: Network, stations: dict[str, str],
                                                      transformers: dict[str, int], code: str | None) -> None:
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    _registry(dpos, {"st-x": "t-x"}, {"t-x": 100})
    _registry(poc, stations, transformers)
    issue(net, "r1", 11, station="st-x", transformer="t-x")
    _, ack, settle = net.roundtrip("dpos-park", "alice", **right_args("r1"))
    assert ack["code"] == (code or "ok") and settle["refunded"] is (code is not None)
    assert dpos.right("r1")["owner"] == (ESCROW_OWNER if code is None else "alice")
    assert (poc.right(V1) is not None) is (code is None)


def test_slot_started_is_the_first_refusal() -> None:
    """Unreachable on receive (a right's packet times out by its slot start), so checked on the rule itself."""
    state = ChainState()
    c = ChargingRightPayload("r1", ChainId("x"), "nowhere", "none", 1, 1_000, 2_000)
    assert admission_refusal(state, c, 1_000) == "slot.started"
    assert admission_refusal(state, c, 999) == "station.unknown"
    assert ADMISSION_CODES[:2] == ("slot.started", "station.unknown")


def test_two_rights_racing_into_one_slot_admit_only_what_the_transformer_carries() -> None:
    """Rights from two parks verified at once for the same slot of poc's 50 kW transformer: the first
    executed is admitted, the second overloads it and is refunded at its home."""
    net = three_parks()
    dpos, poc, edge = net.parks["dpos-park"], net.parks["poc-park"], net.parks["edge-park"]
    issue(net, "r1", 30)
    issue(net, "e1", 30, owner="dave", park="edge-park")
    a = net.send("dpos-park", "alice", **right_args("r1"))
    b = net.send("edge-park", "dave", **right_args("e1", dst="poc-park", lane="lane-1"))
    cert_a, cert_b = net.verify(a), net.verify(b)
    net.check()
    assert net.recv(b, cert_b)["success"]
    assert net.recv(a, cert_a)["code"] == "capacity.exceeded"
    net.check()
    for p in (a, b):
        net.settle(p, *net.confirm(p))
    assert dpos.right("r1")["owner"] == "alice" and edge.right("e1")["owner"] == ESCROW_OWNER
    assert booked(poc) == ["lane-1/edge-park/e1"]
    net.check()


def test_custom_admission_hook_decides() -> None:
    def closed(state: ChainState, payload: ChargingRightPayload, ctx: Any) -> str | None:
        return "station.closed" if payload.power_kw > 20 else default_admission(state, payload, ctx)

    net = Network()
    net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], transformers={"t1": 100},
                 stations=STATIONS)
    net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}], accounts=("bob", "relayer"),
                 transformers={"t1": 100}, stations=STATIONS, hooks=BridgeHooks(admission=closed))
    issue(net, "r1", 22)
    issue(net, "r2", 11)
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["code"] == "station.closed"
    assert net.roundtrip("dpos-park", "alice", **right_args("r2"))[1]["success"]


def test_a_refusal_rolls_back_what_the_hook_wrote() -> None:
    def messy(state: ChainState, payload: ChargingRightPayload, ctx: Any) -> str | None:
        state.set(b"hook/side-effect", b"1")  # hooks must not write; if one does, a refusal undoes it
        return "station.closed"

    net = Network()
    net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park"}], transformers={"t1": 100},
                 stations=STATIONS)
    net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park"}], accounts=("bob", "relayer"),
                 hooks=BridgeHooks(admission=messy))
    issue(net, "r1", 5)
    assert net.roundtrip("dpos-park", "alice", **right_args("r1"))[1]["code"] == "station.closed"
    assert net.parks["poc-park"].state.get(b"hook/side-effect") is None


# --- forged and misrouted packets -----------------------------------------------------------------


def forged(net: Network, src: str, dst: str, lane: str, right: ChargingRightPayload, sender: str = "bob",
           receiver: str = "alice", sequence: int = 99) -> dict[str, Any]:
    """A right packet no source committed, verified by a faulty relay; returns the target's write_ack."""
    packet = Packet(ChainId(src), ChainId(dst), LaneId(lane), sequence, PacketKind.CHARGING_RIGHT,
                    encode_charging_right(right), sender, receiver, net.now_ms + MINUTE)
    net.relay.verify_unchecked(packet)
    return net.recv(packet, net.verified_cert(packet))


def _escrowed_r1(net: Network) -> ChargingRightPayload:
    issue(net, "r1", 10)
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    rec = net.parks["poc-park"].right(V1)
    return ChargingRightPayload(V1, ChainId("dpos-park"), rec["station"], rec["transformer"], rec["power_kw"],
                                rec["slot_start_ms"], rec["slot_end_ms"])


@pytest.mark.parametrize(("field", "value"), [("power_kw", 1), ("station", "s1"), ("slot_end_ms", None),
                                              ("home_park", ChainId("poc-park"))])
def test_a_return_with_other_fields_than_the_escrowed_right_is_refused(net: Network, field: str,
                                                                        value: Any) -> None:
    right = _escrowed_r1(net)
    value = right.slot_end_ms + 1 if value is None else value
    before = net.parks["dpos-park"].state.root
    ack = forged(net, "poc-park", "dpos-park", "lane-0", replace(right, **{field: value}))
    assert ack["code"] == "right.mismatch"
    assert net.parks["dpos-park"].right("r1")["owner"] == ESCROW_OWNER
    assert net.parks["dpos-park"].state.prefix_items(b"rights/") == [(b"rights/r1", _raw(net, "r1"))]
    assert before != net.parks["dpos-park"].state.root  # only the receipt and the relayer's nonce moved
    net.check()


def _raw(net: Network, right_id: str) -> bytes:
    raw = net.parks["dpos-park"].state.get(f"rights/{right_id}".encode())
    assert raw is not None
    return raw


def test_a_return_of_a_right_never_escrowed_is_refused(net: Network) -> None:
    right = _escrowed_r1(net)
    assert forged(net, "poc-park", "dpos-park", "lane-0", replace(right, right_id="lane-0/dpos-park/r9"))[
        "code"] == "right.not_escrowed"
    assert forged(net, "poc-park", "dpos-park", "lane-0", replace(right, right_id="lane-0/dpos-park/"),
                  sequence=100)["code"] == "right.not_escrowed"
    net.check()


def test_a_voucher_returned_along_a_wrong_trace_is_refused() -> None:
    """r1 is escrowed on dpos towards poc over lane-0. edge-park, which holds r1 two hops away, claims to
    return it straight to dpos: the trace names poc, not edge, so dpos refuses and r1 stays escrowed."""
    net = three_parks()
    dpos, poc = net.parks["dpos-park"], net.parks["poc-park"]
    dpos.state.set_json(b"bridge/lanes/edge-park/lane-0", {"counterparty": "edge-park", "lane": "lane-0"})
    issue(net, "r1", 10)
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    net.roundtrip("poc-park", "bob", **right_args(V1, receiver="dave", dst="edge-park", lane="lane-1"))
    rec = net.parks["edge-park"].right(V2)
    right = ChargingRightPayload(V1, ChainId("dpos-park"), rec["station"], rec["transformer"], rec["power_kw"],
                                 rec["slot_start_ms"], rec["slot_end_ms"])
    assert forged(net, "edge-park", "dpos-park", "lane-0", right, sender="dave")["code"] == "right.not_escrowed"
    # nor can poc send home the voucher it escrowed towards edge
    with pytest.raises(AuthorizationError):
        net.send("poc-park", "bob", **right_args(V1, receiver="alice", dst="dpos-park"))
    assert dpos.right("r1")["owner"] == ESCROW_OWNER and poc.right(V1)["owner"] == ESCROW_OWNER
    net.check()


def test_a_voucher_id_past_the_string_limit_or_already_held_is_refused(net: Network) -> None:
    right = _escrowed_r1(net)
    long_id = "x" * 241  # "lane-0/poc-park/" + 241 = 257 bytes (240 would fit exactly)
    assert forged(net, "poc-park", "dpos-park", "lane-0", replace(right, right_id=long_id, home_park=ChainId(
        "poc-park")))["code"] == "right.too_long"
    # poc already holds lane-0/dpos-park/r1: a second mint of the same trace is refused
    assert forged(net, "dpos-park", "poc-park", "lane-0", replace(right, right_id="r1"), sender="alice",
                  receiver="bob", sequence=100)["code"] == "right.exists"
    net.check()


# --- multi-hop ------------------------------------------------------------------------------------


def test_a_right_and_energy_go_two_hops_out_and_unwind_hop_by_hop() -> None:
    """dpos -> poc -> edge -> poc -> dpos for a right and for energy, in one network of three bridge states."""
    net = three_parks()
    dpos, poc, edge = net.parks["dpos-park"], net.parks["poc-park"], net.parks["edge-park"]
    kwh1, kwh2 = "lane-0/dpos-park/kWh", "lane-1/poc-park/lane-0/dpos-park/kWh"
    issue(net, "r1", 25)
    energy = {"kind": "energy", "amount_wh": 3_000}

    # out: dpos -> poc
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    net.roundtrip("dpos-park", "alice", dst_chain="poc-park", lane="lane-0", receiver="bob", denom="kWh", **energy)
    assert owners(net) == {"dpos-park": {"r1": ESCROW_OWNER}, "poc-park": {V1: "bob"}, "edge-park": {}}
    # out: poc -> edge (a voucher leaving on: escrowed on poc, minted under a two-hop trace on edge)
    net.roundtrip("poc-park", "bob", **right_args(V1, receiver="dave", dst="edge-park", lane="lane-1"))
    net.roundtrip("poc-park", "bob", dst_chain="edge-park", lane="lane-1", receiver="dave", denom=kwh1, **energy)
    assert owners(net) == {"dpos-park": {"r1": ESCROW_OWNER}, "poc-park": {V1: ESCROW_OWNER},
                           "edge-park": {V2: "dave"}}
    assert edge.right(V2)["home_park"] == "dpos-park" and edge.right(V2)["power_kw"] == 25
    assert (booked(dpos), booked(poc), booked(edge)) == ([], [], [V2])  # each hop released on success
    assert edge.balance("dave", kwh2) == 3_000 and supply_report(poc.state, ["kWh"])["escrow"][kwh1] == 3_000
    # back: edge -> poc (burned on edge, un-escrowed on poc)
    net.roundtrip("edge-park", "dave", **right_args(V2, receiver="bob", dst="poc-park", lane="lane-1"))
    net.roundtrip("edge-park", "dave", dst_chain="poc-park", lane="lane-1", receiver="bob", denom=kwh2, **energy)
    assert owners(net) == {"dpos-park": {"r1": ESCROW_OWNER}, "poc-park": {V1: "bob"}, "edge-park": {}}
    assert (booked(poc), booked(edge)) == ([V1], [])
    assert poc.balance("bob", kwh1) == 3_000 and edge.supply(kwh2) == 0
    # back: poc -> dpos
    net.roundtrip("poc-park", "bob", **right_args(V1, receiver="alice", dst="dpos-park"))
    net.roundtrip("poc-park", "bob", dst_chain="dpos-park", lane="lane-0", receiver="alice", denom=kwh1, **energy)
    assert owners(net) == {"dpos-park": {"r1": "alice"}, "poc-park": {}, "edge-park": {}}
    assert (booked(dpos), booked(poc), booked(edge)) == (["r1"], [], [])
    assert dpos.balance("alice", "kWh") == 100_000 and poc.supply(kwh1) == 0
    for park in net.parks.values():
        report = supply_report(park.state, ["kWh"])
        assert report["escrow_by_lane"] == {} and report["vouchers"] == {}
    net.check()


def test_rights_violations_finds_a_second_live_copy_and_a_broken_trace() -> None:
    """The checker the tests and the demo rely on fails when a right exists twice or a hop is missing."""
    net = two_parks()
    issue(net, "r1", 10)
    net.roundtrip("dpos-park", "alice", **right_args("r1"))
    reports = {cid: rights_report(p.state) for cid, p in net.parks.items()}
    assert rights_violations(reports) == []
    twice = {**reports, "dpos-park": {**reports["dpos-park"],
                                      "live": {"r1": {**reports["poc-park"]["live"][V1], "owner": "alice"}}}}
    assert any("2 live copies" in p for p in rights_violations(twice))
    orphan = {**reports, "poc-park": {**reports["poc-park"], "live": {}}}
    problems = rights_violations(orphan)
    assert any("0 live copies" in p for p in problems) and any("holds no" in p for p in problems)
    unbacked = {**reports, "dpos-park": {**reports["dpos-park"], "escrowed": {}}}
    assert any("not escrowed on dpos-park" in p for p in rights_violations(unbacked))
