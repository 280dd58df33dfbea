"""Prometheus ``/metrics`` during a real scenario (issue 14): scraped from a park node's RPC port, a relay validator
(its RPC port and its API port) and the relayer's API before and after packets move; the counters move as the
packets do, by phase and lane, and every name follows Prometheus conventions.

One devnet for the module (:mod:`tests.integration.operator_devnet`).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.common.park import ParkTarget
from adapters.common.rpc import JsonRpcClient
from chains.common.bridge import DEFAULT_TRUSTING_PERIOD_MS
from protocol.crypto import Ed25519Signer
from relay.ops.layout import relay_genesis_path
from tests.integration.operator_devnet import LANE, PARK_A, PARK_B, RELAY, OperatorNet, http, operator_devnet, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNet]:
    with operator_devnet(tmp_path_factory.mktemp("operator-metrics")) as n:
        n.ready()
        yield n


def scrape(url: str) -> Samples:
    status, text = http("GET", url + "/metrics")
    assert status == 200 and isinstance(text, str)
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_counters_move_as_the_packets_do(net: OperatorNet) -> None:
    park_url = net.cfg.chain(PARK_A).url_of(net.cfg.chain(PARK_A).nodes[0])
    target_url = net.cfg.chain(PARK_B).url_of(net.cfg.chain(PARK_B).nodes[0])
    relay_rpc = net.cfg.relay_url("op-a")
    before = {"park": scrape(park_url), "target": scrape(target_url), "relay": scrape(relay_rpc),
              "relayer": scrape(net.relayer_api)}
    lane = {"src": PARK_A, "dst": PARK_B, "lane": LANE}
    keys = [net.transfer(PARK_A, 700), net.transfer(PARK_A, 300)]
    net.wait("both packets settled", lambda: all(net.packet(k)["state"] == "completed" for k in keys), 120)

    def moved() -> bool:
        """Until every service's next scrape shows both packets in every phase it records."""
        p, t, r = scrape(park_url), scrape(target_url), scrape(relay_rpc)
        return all(value(p, "parkrelay_packets_total", phase=ph, **lane) - value(before["park"],
                   "parkrelay_packets_total", phase=ph, **lane) >= 2 for ph in ("commit", "settle")) and \
            value(t, "parkrelay_packets_total", phase="execute", **lane) - value(
                before["target"], "parkrelay_packets_total", phase="execute", **lane) >= 2 and \
            all(value(r, "parkrelay_packets_total", phase=ph, **lane) - value(
                before["relay"], "parkrelay_packets_total", phase=ph, **lane) >= 2 for ph in ("verify", "confirm"))
    net.wait("the packet counters of every chain", moved, 30)

    park, relay, relayer = scrape(park_url), scrape(relay_rpc), scrape(net.relayer_api)
    # exactly two more of each phase on this lane (nothing else moved on it meanwhile)
    for ph in ("commit", "settle"):
        assert value(park, "parkrelay_packets_total", phase=ph, **lane) - value(
            before["park"], "parkrelay_packets_total", phase=ph, **lane) == 2
    # the nodes count their blocks and RPC requests; the relay chain its rounds and its light clients' progress
    assert value(park, "parkrelay_blocks_total") > value(before["park"], "parkrelay_blocks_total")
    assert value(park, "parkrelay_rpc_requests_total", method="submitTx") >= 2
    assert value(park, "parkrelay_block_interval_seconds_count") > 0
    assert value(relay, "parkrelay_relay_consensus_rounds_total") >= value(relay, "parkrelay_blocks_total") > 0
    assert value(relay, "parkrelay_light_client_final_height", chain=PARK_A) > value(
        before["relay"], "parkrelay_light_client_final_height", chain=PARK_A)
    assert value(relay, "parkrelay_light_client_status", chain=PARK_A, status="active") == 1
    assert value(relay, "parkrelay_light_client_expiry_seconds", chain=PARK_A) > 13 * 24 * 3600
    assert value(relay, "parkrelay_lane_paused", src=PARK_A, dst=PARK_B, lane=LANE) == 0
    # the relayer: its submissions per action, settled packets and latencies, two packets more of each
    for action in ("verify", "recv", "confirm", "settle"):
        assert value(relayer, "parkrelay_relayer_submissions_total", action=action) > value(
            before["relayer"], "parkrelay_relayer_submissions_total", action=action), action
    assert value(relayer, "parkrelay_relayer_settled_packets_total") - value(
        before["relayer"], "parkrelay_relayer_settled_packets_total") == 2
    assert value(relayer, "parkrelay_packet_end_to_end_seconds_count") - value(
        before["relayer"], "parkrelay_packet_end_to_end_seconds_count") == 2
    for phase in ("verify", "execute", "confirm", "settle"):
        assert value(relayer, "parkrelay_packet_phase_seconds_count", phase=phase) - value(
            before["relayer"], "parkrelay_packet_phase_seconds_count", phase=phase) == 2, phase
    # the validator's API serves its process's metrics too
    assert value(scrape(net.validator_api), "parkrelay_packets_total", phase="verify", **lane) >= 2


def test_rpc_errors_are_counted_by_method_and_code(net: OperatorNet) -> None:
    url = net.cfg.chain(PARK_A).url_of(net.cfg.chain(PARK_A).nodes[0])
    before = scrape(url)
    for _ in range(3):
        http("POST", url + "/rpc", {"jsonrpc": "2.0", "id": 1, "method": "getBlock", "params": {"height": -1}})
    http("POST", url + "/rpc", {"jsonrpc": "2.0", "id": 1, "method": "no" * 40, "params": {}})
    after = scrape(url)
    assert value(after, "parkrelay_rpc_errors_total", method="getBlock", code="rpc.invalid_params") - value(
        before, "parkrelay_rpc_errors_total", method="getBlock", code="rpc.invalid_params") == 3
    # an unknown method is counted under one label, whatever its name
    assert value(after, "parkrelay_rpc_errors_total", method="unknown", code="rpc.method_not_found") >= 1
    assert not any("nonono" in dict(ls).get("method", "") for _, ls in after)


def test_names_follow_prometheus_conventions(net: OperatorNet) -> None:
    for url in (net.cfg.chain(PARK_A).url_of("wa-1"), net.cfg.relay_url("op-a"), net.relayer_api):
        status, text = http("GET", url + "/metrics")
        assert status == 200
        for fam in text_string_to_metric_families(text):
            if not fam.name.startswith("parkrelay_") or fam.name.endswith("_created"):
                continue  # a counter's creation time, which the client library exports beside it
            assert re.fullmatch(r"parkrelay_[a-z0-9_]+", fam.name), fam.name
            if fam.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
            if "seconds" in fam.name or "height" in fam.name or fam.type != "gauge":
                continue
            # a gauge names what it counts (packets, transactions, peers) or is a 0/1 state
            assert fam.name.endswith(("_transactions", "_peers", "_packets", "_in_flight", "_paused", "_status")), \
                fam.name


def test_the_grafana_dashboard_uses_metrics_the_services_export(net: OperatorNet) -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "grafana" /
                            "parkrelay-dashboard.json").read_text())
    exported: set[str] = set()
    for url in (net.cfg.chain(PARK_A).url_of("wa-1"), net.cfg.relay_url("op-a"), net.relayer_api):
        # every family the service declares (a labelled one may have no sample yet: no refusal so far)
        for fam in text_string_to_metric_families(http("GET", url + "/metrics")[1]):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(fam.type, ("",))
            exported |= {fam.name + s for s in suffixes}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"parkrelay_[a-z0-9_]+", target["expr"]))
    assert used, "the dashboard queries parkrelay metrics"
    assert used <= exported, f"the dashboard queries metrics nothing exports: {sorted(used - exported)}"
    assert RELAY  # the relay chain's panels are part of it


# --- the bridges' trust in the relay set (protocol SPEC §7.8) ------------------------------------------------
# ``parkrelay devnet init`` gives each bridge the relay genesis set, trusted as of the relay genesis time for the
# default period; each park's target answers ``relay_trust`` from its node's state (what a relayer reads to keep a
# bridge fresh). The mechanisms are the unit tests' (tests/unit/bridge/test_relay_trust.py,
# tests/unit/fabric_chaincode/test_relay_trust.py, tests/ethereum/test_relay_trust.py).


def _trust(net: OperatorNet, chain_id: str) -> dict[str, Any]:
    chain = next(c for c in net.cfg.chains if c.id == chain_id)

    async def go() -> dict[str, Any]:
        async with JsonRpcClient(chain.url_of(chain.nodes[0]), side=chain_id) as client:
            target = ParkTarget(client, chain_id, "nobody", Ed25519Signer(secrets.token_bytes(32)))
            return await target.relay_trust()
    result: dict[str, Any] = run(go())
    return result


def test_bridges_trust_the_relay_genesis_set_as_of_its_time_and_stay_fresh(net: OperatorNet) -> None:
    relay_genesis = json.loads(relay_genesis_path(net.cfg).read_text())
    genesis_ms = int(relay_genesis["genesis_time_ms"])
    key = net.transfer(PARK_A, 1_000)
    net.wait("the packet settled", lambda: net.packet(key)["state"] in {"completed", "refunded"}, 120)
    assert net.packet(key)["state"] == "completed"
    now_ms = int(time.time() * 1000)
    for chain_id in (PARK_A, PARK_B):
        trust = _trust(net, chain_id)
        assert trust["trusting_period_ms"] == DEFAULT_TRUSTING_PERIOD_MS, chain_id
        assert trust["update_height"] == 0 and trust["trusted_time_ms"] == genesis_ms, trust
        assert trust["expires_at_ms"] == genesis_ms + DEFAULT_TRUSTING_PERIOD_MS > now_ms
        names = [v["name"] for v in trust["validators"]["validators"]]
        assert names == list(net.cfg.relay_validators)
