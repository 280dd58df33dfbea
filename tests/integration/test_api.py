"""The operator HTTP API against a real devnet (issue 14): every endpoint, the four-phase timeline of a packet sent
through the API, filters and pagination, bad parameters (400, typed body), auth (401 without and with a wrong token),
lane pause and resume by governance, backlog clearing, and schemathesis against the running server from the committed
OpenAPI document (no undocumented status code, no 500, every response as documented).

One devnet for the module (:mod:`tests.integration.operator_devnet`): two DPoS parks, four relay validators (``op-a``
serves the API), one relayer serving its API too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from relay.ops.api.server import MAX_PAGE, OPENAPI_PATH
from tests.integration.operator_devnet import LANE, PARK_A, PARK_B, RELAY, OperatorNet, http, operator_devnet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FINAL = {"completed", "refunded"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNet]:
    with operator_devnet(tmp_path_factory.mktemp("operator-api")) as n:
        n.ready()
        yield n


@pytest.fixture(scope="module")
def moved(net: OperatorNet) -> dict[str, Any]:
    """Three packets sent through the API (two out, one back) and carried to the end by the relayer."""
    keys = [net.transfer(PARK_A, 1_000), net.transfer(PARK_A, 2_000), net.transfer(PARK_B, 500)]
    net.wait("the packets settled", lambda: all(net.packet(k)["state"] in FINAL for k in keys), 120)
    return {k: net.packet(k) for k in keys}


def error_of(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert {"code", "disposition", "message"} <= set(err), err
    return err


# -- reads ------------------------------------------------------------------------------------------


def test_parks_lanes_clients_supply_relayers(net: OperatorNet, moved: dict[str, Any]) -> None:
    status, chains = net.get("/api/v1/parks")
    assert status == 200
    assert chains["relay"]["id"] == RELAY and chains["relay"]["reachable"]
    assert {p["id"]: p["kind"] for p in chains["parks"]} == {PARK_A: "dpos", PARK_B: "dpos"}
    assert all(p["final_height"] <= p["height"] for p in chains["parks"])

    status, body = net.get("/api/v1/lanes")
    assert status == 200
    lanes = {(ln["src"], ln["dst"], ln["lane"]): ln for ln in body["lanes"]}
    assert set(lanes) == {(PARK_A, PARK_B, LANE), (PARK_B, PARK_A, LANE)}
    assert lanes[(PARK_A, PARK_B, LANE)]["packets"].get("completed", 0) >= 2
    assert all(ln["registered"] and not ln["paused"] for ln in lanes.values())

    status, body = net.get("/api/v1/clients")
    assert status == 200
    clients = {c["chain_id"]: c for c in body["clients"]}
    assert set(clients) == {PARK_A, PARK_B}
    for c in clients.values():
        assert c["client_type"] == "dpos" and c["status"] == "active" and c["final_height"] > 0
        assert c["expires_in_s"] > 13 * 24 * 3600  # a 14-day trusting period, refreshed by the relayer

    status, body = net.get("/api/v1/supply")
    assert status == 200
    hops = {(s["home"], s["remote"], s["denom"]): s for s in body["supply"]}
    # 3000 Wh went out from park-a and were acked; 500 from park-b: the accountant knows them outstanding
    assert hops[(PARK_A, PARK_B, "kWh")]["outstanding"] >= 3_000
    assert hops[(PARK_B, PARK_A, "kWh")]["outstanding"] >= 500

    for url in (net.validator_api, net.relayer_api):  # the same implementation on both services
        # the relayer writes its view of a lane at its next step: it sees the settlements a step after the chains
        def caught_up(url: str = url) -> bool:
            status, body = net.get("/api/v1/relayers", url)
            assert status == 200
            (r,) = body["relayers"]
            assert r["relayer"] == "relayer-a" and r["updated_ms"] is not None
            return bool(r["backlog"] == 0)

        net.wait("the relayer's own view of its lanes emptied", caught_up, 30)

    status, over = net.get("/api/v1/overview")
    assert status == 200 and {p["packet"] for p in over["packets"]} >= set(moved)


def test_a_packet_sent_through_the_api_has_its_four_phase_timeline(net: OperatorNet, moved: dict[str, Any]) -> None:
    key = next(iter(moved))
    p = moved[key]
    assert p["state"] == "completed" and p["ack"] == {"success": True, "code": "ok"}
    assert p["sender"] == "alice" and p["receiver"] == "bob" and p["payload"] == {"denom": "kWh", "amount_wh": 1_000}
    steps = p["timeline"]
    assert [(s["phase"], s["protocol_phase"], s["chain"]) for s in steps] == [
        ("commit", 1, PARK_A), ("verify", 2, RELAY), ("execute", 3, PARK_B), ("confirm", 4, RELAY),
        ("settle", 4, PARK_A)]
    assert all(s["done"] and s["height"] > 0 for s in steps)
    times = [s["time_ms"] for s in steps]
    assert times == sorted(times), f"the phases happened in protocol order: {times}"
    # the heights are the chains' own: the commit's block holds the packet's send_packet event
    assert p["committed_ms"] == steps[0]["time_ms"]


def test_a_packet_not_sent_is_404_with_a_typed_body(net: OperatorNet) -> None:
    status, body = net.get(f"/api/v1/packets/{PARK_A}/{PARK_B}/{LANE}/999999")
    assert status == 404 and error_of(body)["code"] == "rpc.not_found"
    status, body = net.get(f"/api/v1/packets/{PARK_A}/{PARK_B}/BAD LANE/1".replace(" ", "%20"))
    assert status == 400 and error_of(body)["code"] == "rpc.invalid_params"


def test_filters_and_pagination(net: OperatorNet, moved: dict[str, Any]) -> None:
    status, body = net.get(f"/api/v1/packets?src={PARK_A}&lane={LANE}&state=completed")
    assert status == 200
    assert {p["packet"] for p in body["items"]} >= {k for k in moved if k.startswith(PARK_A)}
    assert all(p["src"] == PARK_A and p["state"] == "completed" for p in body["items"])
    status, body = net.get(f"/api/v1/packets?dst={PARK_A}")
    assert {p["packet"] for p in body["items"]} == {k for k in moved if k.startswith(PARK_B)}
    status, body = net.get("/api/v1/packets?state=pending")
    assert status == 200 and body["items"] == []
    status, body = net.get("/api/v1/packets?max_age_s=0.001")  # committed in the last millisecond: none
    assert status == 200 and body["items"] == []
    status, body = net.get("/api/v1/packets?min_age_s=0")
    assert body["total"] >= 3

    # pages of one: every packet exactly once, in order, the last page without a cursor
    seen: list[str] = []
    cursor = ""
    while True:
        status, page = net.get(f"/api/v1/packets?limit=1{cursor}")
        assert status == 200 and len(page["items"]) <= 1
        seen += [p["packet"] for p in page["items"]]
        if page["next_cursor"] is None:
            break
        assert page["next_cursor"] == page["items"][-1]["packet"]
        cursor = f"&cursor={page['next_cursor']}"
    _, everything = net.get(f"/api/v1/packets?limit={MAX_PAGE}")
    assert seen == [p["packet"] for p in everything["items"]] and len(seen) == everything["total"] >= 3


@pytest.mark.parametrize("query", [
    f"limit={MAX_PAGE + 1}", "limit=0", "limit=-1", "limit=ten", "limit=1&limit=2", "state=lost", "min_age_s=-3",
    "max_age_s=1e9", "lane=Lane%200", "cursor=not-a-key", "sort=sequence", "src=" + "a" * 65])
def test_bad_query_parameters_are_400_with_a_typed_body(net: OperatorNet, query: str) -> None:
    status, body = net.get(f"/api/v1/packets?{query}")
    assert status == 400, (query, body)
    err = error_of(body)
    assert err["code"] == "rpc.invalid_params" and err["disposition"] == "never"


def test_every_read_refuses_unknown_parameters(net: OperatorNet) -> None:
    for path in ("/api/v1/parks", "/api/v1/lanes", "/api/v1/clients", "/api/v1/relayers", "/api/v1/supply",
                 "/api/v1/overview"):
        status, body = net.get(path + "?x=1")
        assert status == 400 and error_of(body)["code"] == "rpc.invalid_params", path


def test_unknown_routes_and_methods_answer_typed_errors(net: OperatorNet) -> None:
    status, body = net.get("/api/v1/nothing")
    assert status == 404 and error_of(body)["code"] == "rpc.not_found"
    status, body = http("DELETE", net.validator_api + "/api/v1/parks")
    assert status == 405 and error_of(body)["code"] == "rpc.method_not_found"


# -- writes -----------------------------------------------------------------------------------------

WRITES: list[tuple[str, Any]] = [
    ("/api/v1/transfers", {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob",
                           "amount_wh": 1}),
    (f"/api/v1/lanes/{PARK_A}/{PARK_B}/{LANE}/pause", None),
    (f"/api/v1/lanes/{PARK_A}/{PARK_B}/{LANE}/resume", None),
    ("/api/v1/backlog/clear", None),
]


@pytest.mark.parametrize(("path", "body"), WRITES, ids=[w[0].rsplit("/", 1)[-1] for w in WRITES])
def test_writes_need_the_admin_token(net: OperatorNet, path: str, body: Any) -> None:
    _, before = net.get("/api/v1/packets?limit=200")
    for token in (None, "", net.token[:-1] + ("0" if net.token[-1] != "0" else "1"), net.token + "00", "Bearer"):
        status, answer = net.post(path, body, token=token)
        assert status == 401, (token, answer)
        assert error_of(answer)["code"] == "rpc.unauthorized"
    status, answer = http("POST", net.validator_api + path, body, headers={"Authorization": f"Basic {net.token}"})
    assert status == 401
    # nothing happened: no packet committed, no lane paused
    _, after = net.get("/api/v1/packets?limit=200")
    assert after["total"] == before["total"]
    _, lanes = net.get("/api/v1/lanes")
    assert not any(ln["paused"] for ln in lanes["lanes"])


@pytest.mark.parametrize("body", [
    {}, [], "text", {"from_chain": PARK_A},
    {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": "1"},
    {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": 0},
    {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": True},
    {"from_chain": "nowhere", "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": 1},
    {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": 1, "fee": 1},
    {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B, "receiver": "bob", "amount_wh": 1, "timeout_s": 1},
])
def test_a_malformed_transfer_is_400(net: OperatorNet, body: Any) -> None:
    status, answer = net.post("/api/v1/transfers", body, token=net.token)
    assert status == 400, answer
    assert error_of(answer)["code"] == "rpc.invalid_params"


def test_transfer_refusals_and_oversized_bodies(net: OperatorNet) -> None:
    # a sender whose key this host does not hold
    status, answer = net.post("/api/v1/transfers", {"from_chain": PARK_A, "sender": "mallory", "to_chain": PARK_B,
                                                    "receiver": "bob", "amount_wh": 1}, token=net.token)
    assert status == 422 and error_of(answer)["code"] == "auth.denied"
    # more than the sender holds: the park refuses it in phase 1
    status, answer = net.post("/api/v1/transfers", {"from_chain": PARK_A, "sender": "alice", "to_chain": PARK_B,
                                                    "receiver": "bob", "amount_wh": 10 ** 15}, token=net.token)
    assert status == 422, answer
    status, answer = http("POST", net.validator_api + "/api/v1/transfers", raw=b"{" + b" " * 20_000 + b"}",
                          token=net.token)
    assert status == 413 and error_of(answer)["code"] == "rpc.body_too_large"


def test_pause_and_resume_a_lane_by_governance(net: OperatorNet) -> None:
    path = f"/api/v1/lanes/{PARK_B}/{PARK_A}/{LANE}"
    status, out = net.post(path + "/pause", token=net.token)
    assert status == 200, out
    assert out["op"] == "lane.pause" and out["height"] > 0
    lanes = {(ln["src"], ln["dst"]): ln for ln in net.get("/api/v1/lanes")[1]["lanes"]}
    assert lanes[(PARK_B, PARK_A)]["paused"] and lanes[(PARK_B, PARK_A)]["reason"] == "governance"
    assert not lanes[(PARK_A, PARK_B)]["paused"]  # one direction only
    status, out = net.post(path + "/resume", token=net.token)
    assert status == 200 and out["op"] == "lane.resume"
    lanes = {(ln["src"], ln["dst"]): ln for ln in net.get("/api/v1/lanes")[1]["lanes"]}
    assert not lanes[(PARK_B, PARK_A)]["paused"]
    # a lane the deployment does not have
    status, out = net.post(f"/api/v1/lanes/{PARK_A}/{PARK_B}/lane-9/pause", token=net.token)
    assert status == 404 and error_of(out)["code"] == "rpc.not_found"


def test_clear_backlog_on_the_relayer_and_not_on_a_validator(net: OperatorNet) -> None:
    status, out = net.post("/api/v1/backlog/clear", url=net.relayer_api, token=net.token)
    assert status == 200 and out["relayer"] == "relayer-a" and out["packets"] >= 0
    status, out = net.post("/api/v1/backlog/clear", token=net.token)
    assert status == 404 and error_of(out)["code"] == "rpc.not_found"


def test_relayer_clear_on_the_command_line_waits_for_an_empty_backlog(net: OperatorNet) -> None:
    """``parkrelay relayer clear`` asks the relayer through its API and watches its backlog through the stream; not
    on a terminal it draws no bar, and ``--json`` prints one object."""
    key = net.transfer(PARK_A, 300)
    out = subprocess.run([sys.executable, "-m", "relay.cli", "relayer", "clear", "--config", str(net.cfg.path),
                          "--name", "relayer-a", "--api", net.relayer_api, "--timeout-s", "120", "--json"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["relayer"] == "relayer-a" and report["cleared"] and report["backlog"] == 0
    net.wait("the packet settled", lambda: net.packet(key)["state"] in FINAL, 120)
    # a relay validator's API serves no relayer: refused, said on stderr, nothing on stdout
    out = subprocess.run([sys.executable, "-m", "relay.cli", "relayer", "clear", "--config", str(net.cfg.path),
                          "--name", "relayer-a", "--api", net.validator_api, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and "rpc.not_found" in out.stderr


def test_the_served_openapi_document_is_the_committed_one(net: OperatorNet) -> None:
    committed = yaml.safe_load(OPENAPI_PATH.read_text())
    for url in (net.validator_api, net.relayer_api):
        status, served = net.get("/openapi.json", url)
        assert status == 200 and served == committed
    assert committed["openapi"].startswith("3.1")


# -- schemathesis against the running server ---------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_path(str(OPENAPI_PATH)).exclude(path="/api/v1/stream")
"""The committed document; the event stream is endless, so it is read by the status page test instead."""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_schemathesis(case: Any, net: OperatorNet) -> None:
    """Every operation, with generated valid and invalid input, with the admin token: no 500, no status code the
    document does not list, every body as its schema says."""
    response = case.call(base_url=net.validator_api, headers={"Authorization": f"Bearer {net.token}"}, timeout=30)
    case.validate_response(response, checks=CHECKS)


def test_schemathesis_sees_every_route() -> None:
    """The document lists every route the server has (an undocumented route would escape the checks above)."""
    from aiohttp import web

    from relay.ops.api.server import build_app

    class _Stub:
        relayer = None

    app = build_app(_Stub(), None)  # type: ignore[arg-type]
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if isinstance(r.resource, web.Resource)}
    doc = yaml.safe_load(Path(OPENAPI_PATH).read_text())
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert {r for r in routes if r[0] != "HEAD"} == documented
