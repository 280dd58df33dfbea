"""Every asset kind on every ordered pair of the four parks, on one shared devnet (issue 12).

One devnet runs all four parks (DPoS, PoC, Ethereum, Fabric), a lane between each pair (6 lanes), four relay
validators and one relayer. For each of the 12 ordered pairs the matrix sends, per asset kind, a packet that must
complete (the happy path), one the target refuses (an error ack, refunded at home) and one that times out before
any relayer runs (refunded on proof of no receipt). Every case is committed up front and the relayer then clears
them together, so the 12 x kinds x 3 cases cost one devnet and one drain instead of one devnet each; each case is
still checked on its own (its packet's final state, its ack, the balances it touched), and the invariants are
checked at the end: no packet left non-final, every denomination's escrow at its home equal to the vouchers out,
per hop. A three-park round trip (a voucher of A held on B moves on to C, then back along its trace) runs after.

The cases are the packaged conformance scenarios (relay/ops/conformance/scenarios.toml) and run through the
conformance runner's engine, the one ``parkrelay conformance run`` uses against any deployment; the last test runs
that command itself against this devnet and reads its JUnit and HTML reports.
"""

from __future__ import annotations

import os

# the Fabric park's adapter (hfc) needs the pure-Python protobuf, chosen before protobuf's first import
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocol.codec import decode_packet
from relay.ops.packets import packet_key
from relay.ops.parks import park_view
from tests.integration.harness import Devnet, free_port_block, wait_for
from tests.integration.test_four_phases import (
    DPOS,
    ETH,
    FABRIC,
    POC,
    USER,
    Net,
    chain_spec,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARKS = [DPOS, POC, ETH, FABRIC]
LANES = {frozenset(p): f"lane-{i}" for i, p in enumerate(itertools.combinations(PARKS, 2))}
ORDERED = [(a, b) for a in PARKS for b in PARKS if a != b]
OUTCOMES = ("completed", "refused", "timed_out")
SUBJECTS: dict[str, tuple[str, str]] = {
    DPOS: ("witness-a", "dpos-witness-credit/v1"),  # docs/research.md#seed-003: a witness's credit
    POC: ("farmer-a", "poc-farmer-response/v1"),  # docs/research.md#seed-000: a farmer's response rate
    # docs/research.md#seed-001: a market participant's delivered over contracted energy
    ETH: (USER[ETH], "eth-delivery-record/v1"),
    # docs/research.md#seed-004: a certified participant's standing
    FABRIC: (USER[FABRIC], "fabric-participant-standing/v1"),
}
"""Per park: a subject its own state scores, and the model it attests it under."""
SCORED_BY_OPERATOR = {ETH: 7_500, FABRIC: 8_200}
"""Parks whose subject's score an operator records first (no market has scored it yet): the score."""
BLOCK_HEIGHT_SOURCES = {DPOS, POC, ETH}
"""Parks whose attestations carry the block height the score was read at (Fabric's: the standing's revision)."""
SLOT_START_S, SLOT_END_S, RIGHT_KW = 7_200, 10_800, 10
MARKETS: dict[str, dict[str, Any]] = {
    # the Ethereum park's node deploys its market (docs/research.md#seed-001): a two-bus feeder, the park's user a
    # member; frank (no kWh, ETH for gas) joins later by the reputation he imports
    ETH: {"market_buses": {"1": {"parent": 0, "length_m": 300, "limit_wh": 50_000},
                           "2": {"parent": 1, "length_m": 200, "limit_wh": 50_000}},
          "market_members": {USER[ETH]: 1}, "market_charge_rate": 10, "market_min_imported_score": 6_000,
          "accounts": {**chain_spec(ETH)["accounts"], "frank": 0}},
}
"""Market keys of a park's chain table (the others' markets need none)."""


def registry(home: str) -> dict[str, Any]:
    """The devnet registry of park ``home``: every park has ``st-1`` behind ``tr-1`` (150 kW) and, for each park
    ``p``, station ``st-<p>`` behind ``tr-<p>``, which is large at ``p`` (1,000 kW) and 1 kW everywhere else. A right
    issued at ``p`` on ``st-<p>`` is admitted at home and refused with ``capacity.exceeded`` on every other park."""
    return {"transformers": {"tr-1": 150, **{f"tr-{p}": 1_000 if p == home else 1 for p in PARKS}},
            "stations": {"st-1": "tr-1", **{f"st-{p}": f"tr-{p}" for p in PARKS}}}


def lane(a: str, b: str) -> str:
    return LANES[frozenset((a, b))]


def voucher(denom: str, src: str, dst: str) -> str:
    """The denomination ``dst`` mints for ``denom`` arriving from ``src`` (SPEC §2.3)."""
    return f"{lane(src, dst)}/{src}/{denom}"


@dataclass
class Case:
    kind: str
    outcome: str
    """``completed`` (happy path), ``refused`` (error ack) or ``timed_out``."""
    src: str
    dst: str
    key: str = ""
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.src}->{self.dst}-{self.outcome}"


class Matrix:
    """The shared devnet, the cases committed on it, and how each ended."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.cases: dict[str, Case] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.before: dict[tuple[str, str, str], int] = {}
        self.rights: dict[tuple[str, str, str], str] = {}
        self.before_rights: dict[str, dict[str, Any]] = {}
        self.after_rights: dict[str, dict[str, Any]] = {}
        self.report: Any = None

    async def balance(self, chain: str, denom: str, who: str | None = None) -> int:
        return int(await asyncio.to_thread(self.net.views[chain].balance, who or USER[chain], denom))

    async def transfer(self, src: str, dst: str, amount_wh: int, *, denom: str = "kWh", receiver: str | None = None,
                       timeout_s: float = 600) -> str:
        view = self.net.views[src]
        to = self.net.views[dst].account(receiver or USER[dst])
        sent = await asyncio.to_thread(view.transfer, USER[src], dst, to, amount_wh, denom, lane(src, dst),
                                       int((time.time() + timeout_s) * 1000), wait_final=False)
        return packet_key(decode_packet(sent["packet"]))

    async def rights_reports(self) -> dict[str, dict[str, Any]]:
        return {p: await asyncio.to_thread(self.net.views[p].rights) for p in PARKS}

    async def check_energy_conservation(self, denoms: dict[str, list[str]]) -> None:
        """For each park H and each denomination D it escrows (``denoms[H]``): escrow of D at H == the vouchers of
        D that the other parks hold, per hop (SPEC §2.3)."""
        for home, ds in denoms.items():
            for d in ds:
                escrowed = await asyncio.to_thread(self.net.views[home].escrow, d)
                out = 0
                for other in PARKS:
                    if other != home:
                        out += await asyncio.to_thread(self.net.views[other].voucher_supply, voucher(d, home, other))
                assert escrowed == out, f"{home}'s {d}: {escrowed} escrowed, {out} vouchers on the other parks"


@pytest.fixture(scope="module")
def matrix_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    lanes = [{"lane": name, "a": a, "b": b} for (a, b) in itertools.combinations(PARKS, 2)
             for name in [lane(a, b)]]
    d = Devnet(tmp_path_factory.mktemp("asset-matrix"), chains=[{**chain_spec(c), **registry(c), **MARKETS.get(c, {})}
                                                                for c in PARKS],
               lanes=lanes, relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                                   "block_interval_ms": 300},
               relayers=["relayer-a", "relayer-b"], relayer_options={"heartbeat_s": 1.0})
    d.write()
    d.start_all()
    n = Net(d, DPOS, POC)
    n.views.update({c: park_view(n.cfg, c) for c in PARKS if c not in n.views})
    try:
        yield n
    finally:
        n.stop_relayers()
        d.stop_all()


async def _ready(net: Net) -> None:
    """Every chain of the shared devnet finalising (``wait_ready`` looks at a pair: look at all four)."""
    for a, b in ((DPOS, POC), (ETH, FABRIC)):
        net.a, net.b = a, b
        await wait_ready(net)
    net.a, net.b = DPOS, POC


@pytest.fixture(scope="module")
def matrix(matrix_net: Net) -> Matrix:
    """Every case committed, drained by one relayer, and their rows read (once for the module)."""
    return asyncio.run(_run_matrix(matrix_net))


MATRIX_SCENARIOS = {"energy-completed": ("energy", "completed"), "energy-refused": ("energy", "refused"),
                    "energy-timeout": ("energy", "timed_out"), "energy-return": ("energy", "home"),
                    "right-completed": ("charging_right", "completed"), "right-refused": ("charging_right", "refused"),
                    "right-timeout": ("charging_right", "timed_out"),
                    "reputation-completed": ("reputation", "completed"),
                    "reputation-refused": ("reputation", "refused"), "reputation-timeout": ("reputation", "timed_out")}
"""The packaged conformance scenarios (relay/ops/conformance/scenarios.toml) the matrix runs, as (kind, outcome)."""


async def _run_matrix(net: Net) -> Matrix:
    """Every case of :data:`MATRIX_SCENARIOS` on every ordered pair, through the conformance runner's engine (the
    one ``parkrelay conformance run`` uses): the timed-out cases sent first while no relayer runs, then the others,
    one relayer clearing them together, then each completed transfer's voucher partly home again. The engine's own
    verdicts are kept (``matrix.report``) and the tests below check more of each case."""
    from relay.ops.conformance.engine import Runner
    from relay.ops.conformance.scenarios import load_scenarios

    await _ready(net)
    m = Matrix(net)
    for src, dst in ORDERED:
        m.before[(src, dst, "kWh")] = await m.balance(src, "kWh")
        m.before[(src, dst, "voucher")] = await m.balance(dst, voucher("kWh", src, dst))
    for park, score in SCORED_BY_OPERATOR.items():
        if park in PARKS:
            view = net.views[park]
            await asyncio.to_thread(view.set_participant_score,  # type: ignore[attr-defined]
                                    view.account(SUBJECTS[park][0]), score)
    scenarios = [s for s in load_scenarios() if s.id in MATRIX_SCENARIOS]
    runner = Runner(net.cfg, scenarios, pairs=ORDERED, users=USER, wait_final_sends=False)
    m.report = await runner.run()
    m.before_rights = runner.rights_before
    for r in m.report.results:
        kind, outcome = MATRIX_SCENARIOS[r.scenario.id]
        c = Case(kind, outcome, r.src, r.dst, r.packets[0].key if r.packets else "", dict(r.expect))
        m.cases[c.name] = c
        if kind == "charging_right":
            m.rights[(r.src, r.dst, outcome)] = r.expect["right_id"]
        for p in r.packets:
            m.rows[p.key] = p.row
    m.after_rights = await m.rights_reports()
    return m


async def test_the_matrix_ran_through_the_conformance_engine(matrix: Matrix) -> None:
    """The engine's verdict on every case (state, ack, exactly once, supply conserved, rights exactly once) and on
    the deployment (nothing non-final): all passed, none skipped on this devnet (every capability is there)."""
    report = matrix.report
    assert len(report.results) == len(MATRIX_SCENARIOS) * len(ORDERED)
    bad = [f"{r.name}: {r.status} {r.reason}" for r in report.results if r.status != "passed"]
    assert not bad, "\n".join(bad)
    assert report.invariants and all(i["ok"] for i in report.invariants), report.invariants
    assert report.ok


ENERGY_CASES = [f"energy-{s}->{d}-{o}" for s, d in ORDERED for o in ("completed", "refused", "timed_out", "home")]


@pytest.mark.parametrize("name", ENERGY_CASES)
async def test_energy_case(matrix: Matrix, name: str) -> None:
    c = matrix.cases[name]
    row = matrix.rows[c.key]
    if c.outcome in ("completed", "home"):
        assert row["state"] == "completed" and row["ack"] == {"success": True, "code": "ok"}, row
    elif c.outcome == "refused":
        code = "receiver.invalid" if matrix.net.kind(c.dst) == "ethereum" else "receiver.unknown"
        assert row["state"] == "refunded" and row["ack"] == {"success": False, "code": code}, row
    else:
        assert row["state"] == "refunded" and row["ack"] is None and row["verified"] is False, row


async def test_energy_balances_and_conservation_after_the_matrix(matrix: Matrix) -> None:
    """Each source paid exactly its completed transfers less what came home (the refused and timed-out ones came
    back), each target holds exactly the vouchers of the completed ones less those sent home, and every home's
    escrow equals the vouchers out."""
    sent_by = {p: 0 for p in PARKS}
    for src, dst in ORDERED:
        sent_by[src] += 1_000 - 400
        got = await matrix.balance(dst, voucher("kWh", src, dst))
        assert got == matrix.before[(src, dst, "voucher")] + 600, f"{dst}'s vouchers from {src}: {got}"
    for p in PARKS:
        first = next(matrix.before[(s, d, "kWh")] for s, d in ORDERED if s == p)
        assert await matrix.balance(p, "kWh") == first - sent_by[p], p
    await matrix.check_energy_conservation({p: ["kWh"] for p in PARKS})
    # every packet of the devnet final: the engine read them all once the matrix drained (nothing sent since)
    (final,) = [i for i in matrix.report.invariants if i["check"] == "nothing left non-final"]
    assert final["ok"], final


async def test_energy_three_park_round_trip_unwinds_hop_by_hop(matrix: Matrix) -> None:
    """A voucher of DPoS held on Ethereum moves on to Fabric and back along its trace, then home: each hop burns or
    unescrows what the previous one escrowed or minted, and nothing stays escrowed on any hop."""
    net, a, b, c = matrix.net, DPOS, ETH, FABRIC
    on_b = voucher("kWh", a, b)
    on_c = voucher(on_b, b, c)
    a0, b0, c0 = await matrix.balance(a, "kWh"), await matrix.balance(b, on_b), await matrix.balance(c, on_c)
    esc_a, esc_b = (await asyncio.to_thread(net.views[a].escrow, "kWh"),
                    await asyncio.to_thread(net.views[b].escrow, on_b))
    net.start_relayer("relayer-a")
    try:
        hops = [(a, b, "kWh", 600), (b, c, on_b, 600), (c, b, on_c, 600), (b, a, on_b, 600)]
        for i, (src, dst, denom, amount) in enumerate(hops):
            key = await matrix.transfer(src, dst, amount, denom=denom)
            rows = await net.wait_final([key], timeout_s=240)
            assert rows[key]["state"] == "completed", (i, rows[key])
            if i == 1:  # the voucher is two hops from home: escrowed on the middle park, minted on the last
                assert await matrix.balance(c, on_c) == c0 + 600
                assert await asyncio.to_thread(net.views[b].escrow, on_b) == esc_b + 600
                await matrix.check_energy_conservation({a: ["kWh"], b: [on_b]})
    finally:
        net.stop_relayers()
    assert await matrix.balance(a, "kWh") == a0
    assert await matrix.balance(b, on_b) == b0
    assert await matrix.balance(c, on_c) == c0
    assert await asyncio.to_thread(net.views[a].escrow, "kWh") == esc_a
    assert await asyncio.to_thread(net.views[b].escrow, on_b) == esc_b
    await matrix.check_energy_conservation({a: ["kWh"], b: [on_b]})



RIGHT_CASES = [f"charging_right-{s}->{d}-{o}" for s, d in ORDERED for o in OUTCOMES]
REPUTATION_CASES = [f"reputation-{s}->{d}-{o}" for s, d in ORDERED for o in OUTCOMES]


@pytest.mark.parametrize("name", RIGHT_CASES)
async def test_charging_right_case(matrix: Matrix, name: str) -> None:
    c = matrix.cases[name]
    row = matrix.rows[c.key]
    rid = c.expect["right_id"]
    reports = matrix.after_rights
    home, abroad = reports[c.src], reports[c.dst]
    held_as = voucher(rid, c.src, c.dst)
    if c.outcome == "completed":
        assert row["state"] == "completed" and row["ack"] == {"success": True, "code": "ok"}, row
        assert abroad["live"][held_as]["owner"] == matrix.net.views[c.dst].account(USER[c.dst])
        assert home["escrowed"][rid]["chain"] == c.dst and rid not in home["live"]
        assert held_as in abroad["bookings"]["tr-1"]  # admitted on the target's transformer
    else:
        if c.outcome == "refused":
            assert row["state"] == "refunded" and row["ack"] == {"success": False, "code": "capacity.exceeded"}, row
        else:
            assert row["state"] == "refunded" and row["ack"] is None and row["verified"] is False, row
        assert home["live"][rid]["owner"] == matrix.net.views[c.src].account(USER[c.src])
        assert held_as not in abroad["live"] and rid not in home["escrowed"]


async def test_every_right_exists_exactly_once_after_the_matrix(matrix: Matrix) -> None:
    from chains.common.rights import rights_violations

    assert rights_violations(matrix.after_rights) == []
    issued = {rid for rid in matrix.rights.values()}
    homes = {rid for rep in matrix.after_rights.values() for rid in (*rep["live"], *rep["escrowed"])}
    assert issued <= homes


@pytest.mark.parametrize("name", REPUTATION_CASES)
async def test_reputation_case(matrix: Matrix, name: str) -> None:
    c = matrix.cases[name]
    row = matrix.rows[c.key]
    rec = await asyncio.to_thread(matrix.net.views[c.dst].imported_reputation, c.src, c.expect["subject"],
                                  c.expect["model"])
    if c.outcome == "completed":
        assert row["state"] == "completed" and row["ack"] == {"success": True, "code": "ok"}, row
        assert rec is not None and 0 <= int(rec["score"]) <= 10_000, rec
        if c.src in BLOCK_HEIGHT_SOURCES:
            # the only attestation of this pair that executed: the score read in the block that included its send
            # (read before that block was final: a fork switch can include it again a block or two later)
            assert int(c.expect["height"]) <= int(rec["source_height"]) <= int(c.expect["height"]) + 3, (rec, c.expect)
        else:
            assert int(rec["source_height"]) >= 1, rec
        if c.src in SCORED_BY_OPERATOR:
            assert int(rec["score"]) == SCORED_BY_OPERATOR[c.src], rec
    elif c.outcome == "refused":
        assert row["state"] == "refunded" and row["ack"]["success"] is False, row
        assert row["ack"]["code"] in ("receiver.unknown", "receiver.invalid"), row
    else:
        assert row["state"] == "refunded" and row["ack"] is None and row["verified"] is False, row


def _cli(net: Net, *argv: str) -> Any:
    """``parkrelay <argv> --config <the devnet's> --json`` in-process: its JSON answer (exit 0 required)."""
    import contextlib
    import io
    import json

    from relay.ops.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([*argv, "--config", str(net.cfg.path), "--json"])
    assert rc == 0, (argv, rc, out.getvalue())
    return json.loads(out.getvalue())


async def test_the_cli_registers_issues_moves_and_shows_a_right_and_an_attestation(matrix: Matrix) -> None:
    """The operator's commands on the shared devnet: a transformer and its station set on the target, a right issued
    at home and moved there (admitted on the new station), both parks' listings, an attestation sent and shown."""
    net, home, abroad = matrix.net, DPOS, POC
    got = await asyncio.to_thread(_cli, net, "transformer", "set", "--chain", abroad, "--name", "tr-cli",
                                  "--capacity-kw", "40", "--station", "st-cli")
    assert got["capacity_kw"] == 40 and set(got["stations"]) == {"st-cli"}
    reg = await asyncio.to_thread(_cli, net, "transformer", "show", "--chain", abroad)
    assert reg["transformers"]["tr-cli"] == 40 and reg["stations"]["st-cli"] == "tr-cli"
    # home needs the station too: a right is admitted at home when issued
    await asyncio.to_thread(_cli, net, "transformer", "set", "--chain", home, "--name", "tr-cli", "--capacity-kw",
                            "40", "--station", "st-cli")
    await asyncio.to_thread(_cli, net, "right", "issue", "--chain", home, "--id", "r-cli", "--station", "st-cli",
                            "--transformer", "tr-cli", "--kw", "25", "--slot-start", "+2h", "--slot-end", "+3h",
                            "--owner", USER[home])
    shown = await asyncio.to_thread(_cli, net, "right", "show", "r-cli", "--chain", home)
    assert shown["state"] == "live" and shown["power_kw"] == 25
    net.start_relayer("relayer-a")
    try:
        sent = await asyncio.to_thread(_cli, net, "right", "transfer", "--from-chain", home, "--from", USER[home],
                                       "--to-chain", abroad, "--to", USER[abroad], "--id", "r-cli")
        att = await asyncio.to_thread(_cli, net, "reputation", "send", "--from-chain", home, "--from", USER[home],
                                      "--to-chain", abroad, "--to", USER[abroad], "--subject", "witness-b")
        rows = await net.wait_final([sent["packet"], att["packet"]], timeout_s=240)
    finally:
        net.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}, rows
    held = voucher("r-cli", home, abroad)
    listed = await asyncio.to_thread(_cli, net, "right", "list", "--chain", abroad, "--owner", USER[abroad])
    assert listed["live"][held]["station"] == "st-cli"
    assert (await asyncio.to_thread(_cli, net, "right", "show", "r-cli", "--chain", home))["state"] == "escrowed"
    rep = await asyncio.to_thread(_cli, net, "reputation", "show", "--chain", abroad, "--from-chain", home,
                                  "--subject", "witness-b", "--model", "dpos-witness-credit/v1")
    assert 0 <= rep["score"] <= 10_000 and rep["source_height"] >= 1
    booked = (await asyncio.to_thread(_cli, net, "transformer", "show", "--chain", abroad))["bookings"]["tr-cli"]
    assert [b["right_id"] for b in booked] == [held] and booked[0]["power_kw"] == 25


async def test_charging_right_three_park_round_trip_unwinds_hop_by_hop(matrix: Matrix) -> None:
    """A right of DPoS held on Ethereum moves on to Fabric and back along its trace, then home: each hop escrows or
    burns it, the park it reaches admits it on its own transformer, and after every hop it exists exactly once."""
    from chains.common.rights import rights_violations

    net, a, b, c = matrix.net, DPOS, ETH, FABRIC
    now = int(time.time() * 1000)
    view = net.views[a]
    await asyncio.to_thread(view.issue_right, "r-trip", "st-1", "tr-1", RIGHT_KW, now + SLOT_START_S * 1000,
                            now + SLOT_END_S * 1000, view.account(USER[a]))
    on_b = voucher("r-trip", a, b)
    on_c = voucher(on_b, b, c)
    hops = [(a, b, "r-trip", on_b), (b, c, on_b, on_c), (c, b, on_c, on_b), (b, a, on_b, "r-trip")]
    net.start_relayer("relayer-a")
    try:
        for i, (src, dst, rid, arrives_as) in enumerate(hops):
            sent = await asyncio.to_thread(net.views[src].send, USER[src], dst, net.views[dst].account(USER[dst]),
                                           lane(src, dst), now + 600_000, {"kind": "charging_right", "right_id": rid},
                                           wait_final=False)
            key = packet_key(decode_packet(sent["packet"]))
            rows = await net.wait_final([key], timeout_s=240)
            assert rows[key]["state"] == "completed", (i, rows[key])
            reports = await matrix.rights_reports()
            assert rights_violations(reports) == [], (i, rights_violations(reports))
            held = reports[dst]["live"][arrives_as]
            assert held["owner"] == net.views[dst].account(USER[dst]) and held["home_park"] == a, (i, held)
            assert arrives_as in reports[dst]["bookings"]["tr-1"], i  # admitted on the park it reached
    finally:
        net.stop_relayers()
    reports = await matrix.rights_reports()
    assert reports[a]["live"]["r-trip"]["owner"] == view.account(USER[a])
    for p in (b, c):
        assert not [r for r in (*reports[p]["live"], *reports[p]["escrowed"]) if r.endswith("/r-trip")], p


@pytest.mark.parametrize("park", PARKS)
async def test_each_park_shows_the_registry_its_chain_table_configured(matrix: Matrix, park: str) -> None:
    """``parkrelay transformer show`` on every kind: the transformers and stations of the park's chain table (set
    at genesis or deployment), read without any deployment key, and every live right booked."""
    reg = await asyncio.to_thread(matrix.net.views[park].registry)
    want = registry(park)
    # the CLI test may have registered more on the Python parks: the configured ones are all there, unchanged
    assert want["transformers"].items() <= reg["transformers"].items(), reg
    assert want["stations"].items() <= reg["stations"].items(), reg
    live = matrix.after_rights[park]["live"]
    assert {b["right_id"] for bs in reg["bookings"].values() for b in bs} >= set(live), reg["bookings"]


def _market(net: Net, *argv: str) -> tuple[int, Any]:
    """``parkrelay market <argv> --config <the devnet's> --json`` in-process: (exit code, its JSON answer)."""
    import contextlib
    import io
    import json

    from relay.ops.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["market", *argv, "--config", str(net.cfg.path), "--json"])
    return rc, json.loads(out.getvalue())


async def test_each_market_reads_reputation_imported_over_the_relay_through_the_cli(matrix: Matrix) -> None:
    """The reputation the matrix moved (its completed cases: the Ethereum park's score of erin, 7,500 bp, held by
    the DPoS and PoC parks' users; the Fabric park's standing of gina, 8,200 bp, on the Ethereum park) used by the
    target park's market, each through ``parkrelay market … --json``: a DR aggregator on the DPoS park starts at
    it and is ranked by it (docs/research.md#seed-002), a PoC unit is ranked by it (docs/research.md#seed-000), and
    the Ethereum park admits a participant by it, who then trades in a round cleared on chain
    (docs/research.md#seed-001)."""
    net = matrix.net
    eth_model, fab_model = SUBJECTS[ETH][1], SUBJECTS[FABRIC][1]
    eth_subject, fab_subject = net.views[ETH].account(USER[ETH]), net.views[FABRIC].account(USER[FABRIC])

    def cli(*argv: str) -> Any:
        rc, out = _market(net, *argv)
        assert rc == 0, (argv, out)
        return out

    # DPoS: alice (the holder of erin's attestation) registers as an aggregator at erin's score, ranked first
    got = await asyncio.to_thread(cli, DPOS, "dr-register", "--as", USER[DPOS], "--role", "aggregator",
                                  "--import-from", ETH, "--subject", USER[ETH], "--model", eth_model)
    assert got["reputation"]["score"] == SCORED_BY_OPERATOR[ETH], got
    assert got["reputation"]["imported_from"]["subject"] == eth_subject
    ranking = (await asyncio.to_thread(cli, DPOS, "ranking"))["ranking"]
    assert ranking[0]["name"] == USER[DPOS] and ranking[0]["score"] == SCORED_BY_OPERATOR[ETH], ranking
    # PoC: carol holds it too; until her first settled award the market ranks her by it
    got = await asyncio.to_thread(cli, POC, "import-reputation", "--as", USER[POC], "--import-from", ETH,
                                  "--subject", USER[ETH], "--model", eth_model)
    assert got["unit"]["response_ppm"] == SCORED_BY_OPERATOR[ETH] * 100 and got["unit"]["imported"]["src_chain"] == ETH
    # Ethereum: no standing imported for hugo, so no admission; gina's (8,200 >= 6,000) admits frank
    rc, refused = await asyncio.to_thread(_market, net, ETH, "admit", "--import-from", FABRIC, "--subject", "hugo",
                                          "--model", fab_model, "--participant", "frank")
    assert rc == 1 and refused["error"]["code"] == "reputation.insufficient", refused
    got = await asyncio.to_thread(cli, ETH, "admit", "--import-from", FABRIC, "--subject", USER[FABRIC], "--model",
                                  fab_model, "--participant", "frank", "--bus", "2")
    assert got["subject"] == fab_subject and got["imported"]["score"] == SCORED_BY_OPERATOR[FABRIC], got
    assert got["record"]["admitted"] and got["record"]["bus"] == 2, got
    # ... and trades: erin (bus 1) sells, frank (bus 2, 200 m away) buys, cleared on chain with the charge
    rnd = (await asyncio.to_thread(cli, ETH, "open", "--closes-in-s", "5"))["round"]
    await asyncio.to_thread(cli, ETH, "bid", "--as", USER[ETH], "--round", str(rnd), "--side", "sell",
                            "--quantity-wh", "1000", "--price", "10")
    await asyncio.to_thread(cli, ETH, "bid", "--as", "frank", "--round", str(rnd), "--side", "buy", "--quantity-wh",
                            "600", "--price", "20")
    closes_at = (await asyncio.to_thread(cli, ETH, "round", str(rnd)))["closes_at"]
    links = await net.links()
    try:
        source = links.parks[ETH].source

        async def closed() -> bool:
            return bool(await source.header_time_ms(await source.latest_height()) >= closes_at * 1000)

        await wait_for(f"round {rnd} closed", closed, 30)
    finally:
        await links.close_links()
    got = await asyncio.to_thread(cli, ETH, "clear", "--round", str(rnd))
    (trade,) = got["trades"]
    assert (trade["seller"], trade["buyer"], trade["quantity_wh"]) == (USER[ETH], "frank", 600), got
    assert trade["distance_m"] == 200 and trade["charge_wei_per_wh"] == 10 * 200 // 1000, trade


async def test_the_fabric_market_certifies_on_imported_reputation_and_takes_a_request_through_the_cli(
        matrix: Matrix) -> None:
    """The Fabric park's market (docs/research.md#seed-004; chains/fabric/SPEC.md §F1) through ``parkrelay market
    fabric-park … --json``: the regulator certifies the park's user on the Ethereum park's score of erin the matrix
    imported here (7,500 bp >= the park's certify_min_score), which the participant's record keeps as its basis; a
    station operator enrolled with ``market.role=station`` requests in a round the regulator opens, and ``round``
    shows it; the user, certified but with no ``market.role`` in its certificate, is refused ``market.attribute``."""
    from adapters import fabric as af
    from chains.fabric.consts import OPERATOR_MSP
    from chains.fabric.network.crypto import enroll_user
    from relay.ops.cli import _fabric_network
    from relay.ops.layout import fabric_profile_path

    net = matrix.net
    started = time.monotonic()
    enroll_user(_fabric_network(net.cfg, FABRIC), OPERATOR_MSP, "stn", {"market.role": "station"})
    stn_target = af.target(af.connect(fabric_profile_path(net.cfg, net.cfg.chain(FABRIC)), FABRIC, "stn"))
    try:
        await stn_target.register()
    finally:
        await stn_target.close()
    stn, gina = f"{OPERATOR_MSP}:stn@{OPERATOR_MSP}", net.views[FABRIC].account(USER[FABRIC])

    def cli(*argv: str) -> Any:
        rc, out = _market(net, FABRIC, *argv)
        assert rc == 0, (argv, out)
        return out

    got = await asyncio.to_thread(cli, "certify", "--account", USER[FABRIC], "--role", "trader", "--import-from", ETH,
                                  "--subject", USER[ETH], "--model", SUBJECTS[ETH][1])
    assert got["account"] == gina and got["events"][0]["on_reputation"] is True, got
    basis = (await asyncio.to_thread(cli, "participant", USER[FABRIC]))["certification"]["basis"]
    assert basis["score"] == SCORED_BY_OPERATOR[ETH] and basis["subject"] == net.views[ETH].account(USER[ETH]), basis
    await asyncio.to_thread(cli, "certify", "--account", "stn", "--role", "station", "--station", "st-1")
    await asyncio.to_thread(cli, "open-round", "--round-id", "cli-1", "--transformer", "tr-1",
                            "--requests-close-in-s", "600")
    await asyncio.to_thread(cli, "request", "--as", "stn", "--round-id", "cli-1", "--station", "st-1", "--power-kw",
                            "10")
    rc, refused = await asyncio.to_thread(_market, net, FABRIC, "request", "--as", USER[FABRIC], "--round-id", "cli-1",
                                          "--station", "st-1", "--power-kw", "10")
    assert rc == 1 and refused["error"]["code"] == "market.attribute", refused
    shown = await asyncio.to_thread(cli, "round", "cli-1")
    assert shown["round"]["transformer"] == "tr-1" and shown["round"]["state"] == "requests", shown
    assert shown["requests"]["st-1"]["account"] == stn and shown["requests"]["st-1"]["power_kw"] == 10, shown
    print(f"fabric market through the CLI: {time.monotonic() - started:.1f} s")


async def test_conformance_cli_end_to_end_writes_junit_and_html(matrix: Matrix, tmp_path: Any) -> None:
    """``parkrelay conformance run`` as an operator runs it, a process against this devnet's config: a few scenarios on
    one pair, with the JUnit and HTML reports. Delivered, refused and replayed cases pass; the park-node crash is
    skipped, naming the missing capability (no process of this devnet was started by ``devnet up`` for the runner to
    kill), never passed."""
    import json
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    from tests.integration.harness import REPO

    junit, page = tmp_path / "conformance.xml", tmp_path / "conformance.html"
    started = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "relay.cli", "conformance", "run", "--config", str(matrix.net.cfg.path),
                         "--pairs", f"{DPOS}:{POC}", "--scenarios", "energy-completed,energy-refused,replay,"
                         "park-node-sigkill", "--junit", str(junit), "--html", str(page), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    print(f"conformance CLI: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    out = json.loads(proc.stdout)
    assert out["counts"] == {"passed": 3, "failed": 0, "skipped": 1}, out["counts"]
    by = {r["scenario"]: r for r in out["results"]}
    assert set(by) == {"energy-completed", "energy-refused", "replay", "park-node-sigkill"}
    assert by["park-node-sigkill"]["status"] == "skipped"
    assert any(m.startswith(f"kill_node({DPOS})") for m in by["park-node-sigkill"]["missing"]), by["park-node-sigkill"]
    assert [c["detail"] for c in by["replay"]["checks"] if c["check"] == "replay refused"] == ["packet.replay"]
    delivered = by["energy-completed"]["packets"][0]
    assert delivered["state"] == "completed" and delivered["ack"] == {"success": True, "code": "ok"}
    assert delivered["phases"]["committed"]["chain"] == DPOS and delivered["phases"]["completed"]["chain"] == DPOS
    assert by["energy-refused"]["packets"][0]["ack"]["code"] == "receiver.unknown"
    assert {i["check"] for i in out["invariants"] if i["ok"]} == {
        "nothing left non-final", "supply conserved per denomination", "every charging right exists exactly once"}
    root = ET.parse(junit).getroot()  # noqa: S314 - the report this test had written
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert ("conformance.energy-completed", f"{DPOS}->{POC}") in cases and len(cases) == 4 + 3
    skipped = cases[("conformance.park-node-sigkill", f"{DPOS}->{POC}")].find("skipped")
    assert skipped is not None and f"kill_node({DPOS})" in skipped.get("message", "")
    assert not list(root.iter("failure"))
    html = page.read_text()
    assert delivered["packet"] in html and "PASS" in html and "skipped" in html
    assert f"<code>{DPOS}@{delivered['phases']['completed']['height']}</code>" in html
