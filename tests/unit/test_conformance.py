"""The conformance runner's parts that need no chain: scenario files (strict parsing, typed errors), capability gating
(a missing capability is a named skip, never a pass), and the reports (JUnit XML, HTML escaping of hostile strings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomli_w

from relay.ops.config import ConfigError, load_config
from relay.ops.conformance import capabilities as cap
from relay.ops.conformance.engine import CaseResult, PacketRecord, Report, Runner, plan_pairs
from relay.ops.conformance.report import render_html, render_junit
from relay.ops.conformance.scenarios import DEFAULT_FILE, ScenarioFileError, load_scenarios, parse_scenarios

GOOD = """
[[scenario]]
id = "energy-completed"
title = "delivered"
asset = "energy"
pairs = "ordered"
fault = "none"
expect = { state = "completed", ack = "ok" }
"""


def test_the_packaged_scenarios_parse_and_cover_every_fault() -> None:
    from relay.ops.conformance.scenarios import FAULTS

    scenarios = load_scenarios()
    assert DEFAULT_FILE.name == "scenarios.toml"
    assert {s.fault for s in scenarios} == set(FAULTS)
    assert len({s.id for s in scenarios}) == len(scenarios)
    ret = next(s for s in scenarios if s.fault == "return")
    assert ret.after == "energy-completed"
    timeout = next(s for s in scenarios if s.id == "energy-timeout")
    assert timeout.expect.state == "refunded" and timeout.expect.acks is None


@pytest.mark.parametrize(("text", "scenario", "key", "words"), [
    ("not toml [[", None, None, "not TOML"),
    ("", None, "scenario", "one or more"),
    ("[other]\nx = 1\n", None, "other", "unknown table"),
    ("scenario = 3\n", None, "scenario", "one or more"),
    (GOOD.replace('fault = "none"', 'fault = "meteor"'), "energy-completed", "fault", "not one of"),
    (GOOD.replace('asset = "energy"\n', ""), "energy-completed", "asset", "required"),
    (GOOD.replace('asset = "energy"', "asset = 7"), "energy-completed", "asset", "expected a string"),
    (GOOD.replace('id = "energy-completed"', 'id = "Bad Id!"'), "#1", "id", "[a-z0-9-]"),
    (GOOD + 'colour = "red"\n', "energy-completed", "colour", "unknown key"),
    (GOOD.replace('state = "completed"', 'state = "lost"'), "energy-completed", "expect.state", "expected one of"),
    (GOOD.replace('ack = "ok"', 'ack = "NOT A CODE"'), "energy-completed", "expect.ack", "expected"),
    (GOOD.replace('ack = "ok"', 'ack = "receiver.unknown"'), "energy-completed", "expect.ack", "completed"),
    (GOOD.replace("expect = { state = \"completed\", ack = \"ok\" }", ""), "energy-completed", "expect", "required"),
    (GOOD.replace('ack = "ok" }', 'ack = "ok", why = 1 }'), "energy-completed", "expect.why", "unknown key"),
    (GOOD + "packets = 0\n", "energy-completed", "packets", "1..20"),
    (GOOD + "kinds = []\n", "energy-completed", "kinds", "non-empty list"),
    (GOOD + 'kinds = "dpos"\n', "energy-completed", "kinds", "non-empty list"),
    (GOOD + "packets = true\n", "energy-completed", "packets", "1..20"),
    (GOOD + GOOD, "energy-completed", "id", "defined twice"),
    (GOOD + 'requires = ["ok", "Bad Cap"]\n', "energy-completed", "requires", "capability names"),
    (GOOD + 'after = "energy-completed"\n', "energy-completed", "after", "only a scenario"),
    (GOOD.replace('fault = "none"', 'fault = "return"'), "energy-completed", "after", "needs `after`"),
    (GOOD.replace('fault = "none"', 'fault = "return"') + 'after = "missing-one"\n', "energy-completed", "after",
     "no scenario"),
    ("[[scenario]]\n" + "x = 1\n" * 0 + "[[scenario]]\n", "#1", "id", "required"),
    ("scenario = [1]\n", "#1", None, "expected a table"),
])
def test_a_malformed_scenario_file_is_a_typed_error_naming_where(text: str, scenario: str | None, key: str | None,
                                                                  words: str) -> None:
    with pytest.raises(ScenarioFileError) as err:
        parse_scenarios(text, "bad.toml")
    e = err.value
    assert isinstance(e, ConfigError)  # the CLI answers it with exit code 2 and the message
    assert (e.path, e.scenario, e.key) == ("bad.toml", scenario, key), str(e)
    assert words in str(e) and str(e).startswith("bad.toml")


def test_scenario_files_that_cannot_be_read_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenarios(tmp_path / "absent.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioFileError, match="not UTF-8"):
        load_scenarios(tmp_path / "bin.toml")
    (tmp_path / "big.toml").write_text("#" * (300 * 1024))
    with pytest.raises(ScenarioFileError, match="at most"):
        load_scenarios(tmp_path / "big.toml")


def _deployment(tmp_path: Path, relayers: tuple[str, ...] = ("relayer-a", "relayer-b"), validators: int = 4,
                base_port: int | None = 31000) -> object:
    doc = {"deployment": {"data_dir": str(tmp_path / "data")},
           "relay": {"validators": [f"op-{i}" for i in range(validators)]},
           "relayers": {"names": list(relayers)},
           "chains": [{"id": "dpos-park", "kind": "dpos", "nodes": ["w-a", "w-b", "w-c"], "base_port": 31100,
                       "accounts": {"alice": 5_000, "operator": 0}},
                      {"id": "eth-park", "kind": "ethereum", "base_port": 31200,
                       "accounts": {"erin": 7, "operator": 0}}],
           "lanes": [{"lane": "lane-0", "a": "dpos-park", "b": "eth-park"}]}
    if base_port is not None:
        doc["relay"]["base_port"] = base_port
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "d.toml"
    path.write_text(tomli_w.dumps(doc))
    return load_config(path)


def _key(cfg: object, relayer: str) -> None:
    from relay.ops.layout import relayer_key_path

    p = relayer_key_path(cfg, cfg.relay_chain_id, relayer)  # type: ignore[attr-defined]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"\x01" * 32)


def test_capabilities_gate_each_fault_and_name_what_is_missing(tmp_path: Path) -> None:
    cfg = _deployment(tmp_path)
    by_id = {s.id: s for s in load_scenarios()}
    # no relayer keys, no processes: nothing can be relayed, so even the plain scenarios are skipped, named
    caps = cap.Capabilities.of(cfg, cap.ProcessTable())  # type: ignore[arg-type]
    assert cap.missing(by_id["energy-completed"], "dpos-park", "eth-park", caps) == [
        "relaying: no relayer of the config has its key in the data dir, and none runs"]
    _key(cfg, "relayer-a")
    caps = cap.Capabilities.of(cfg, cap.ProcessTable())  # type: ignore[arg-type]
    assert {"relaying", "own_relayers", "relayer_key"} <= caps.have and "two_relayers" not in caps.have
    assert cap.missing(by_id["energy-completed"], "dpos-park", "eth-park", caps) == []
    assert cap.missing(by_id["energy-timeout"], "dpos-park", "eth-park", caps) == []
    assert cap.missing(by_id["relayers-racing"], "dpos-park", "eth-park", caps) == [
        "two_relayers: the config names one relayer with keys"]
    # a park node: only where this machine started it for this config, and never on a kind that lacks the capability
    got = cap.missing(by_id["park-node-sigkill"], "dpos-park", "eth-park", caps)
    assert any(m.startswith("kill_node(dpos-park): no process of dpos-park/w-c") for m in got), got
    assert any(m.startswith("kill_node(eth-park): eth-park has one node") for m in got), got
    assert any(m.startswith("sigkill_node(ethereum)") for m in got), got
    assert not any(m.startswith("sigkill_node(dpos)") for m in got), got
    got = cap.missing(by_id["relay-validator-down"], "dpos-park", "eth-park", caps)
    assert got and got[0].startswith("kill_relay_validator:"), got
    caps = cap.Capabilities.of(cfg, cap.ProcessTable(nodes={"relay/op-3": 1, "dpos-park/w-c": 2}))  # type: ignore[arg-type]
    assert cap.missing(by_id["relay-validator-down"], "dpos-park", "eth-park", caps) == []
    got = cap.missing(by_id["park-node-sigkill"], "dpos-park", "eth-park", caps)
    assert not any("dpos-park" in m for m in got) and got, got  # the Ethereum side still lacks both
    # relayers of the deployment already running: relayed, but the runner cannot stop or kill them
    caps = cap.Capabilities.of(cfg, cap.ProcessTable(foreign_relayers=["relayer-a"]))  # type: ignore[arg-type]
    assert "relaying" in caps.have and "own_relayers" not in caps.have
    assert cap.missing(by_id["energy-timeout"], "dpos-park", "eth-park", caps)[0].startswith(
        "own_relayers: the deployment's relayers run already")
    # fewer than 4 validators: one down loses the quorum
    small = _deployment(tmp_path / "s", validators=3)
    caps = cap.Capabilities.of(small, cap.ProcessTable(nodes={"relay/op-2": 1}))  # type: ignore[arg-type]
    assert "fewer than 4" in cap.missing(by_id["relay-validator-down"], "dpos-park", "eth-park", caps)[-1]


def test_right_refusal_needs_a_registry_gap(tmp_path: Path) -> None:
    home = {"transformers": {"tr-1": 150, "tr-x": 1000}, "stations": {"st-1": "tr-1", "st-x": "tr-x"},
            "bookings": {"tr-x": [{"right_id": "r", "power_kw": 10}]}}
    target = {"transformers": {"tr-1": 150, "tr-x": 1}, "stations": {"st-1": "tr-1", "st-x": "tr-x"}, "bookings": {}}
    assert cap.refusing_station(home, target) == ("st-x", "tr-x", 2)
    assert cap.refusing_station(target, home) is None
    assert cap.admitting_station(home, target, 10) == ("st-1", "tr-1")
    assert cap.admitting_station(home, target, 151) is None
    cfg = _deployment(tmp_path)
    _key(cfg, "relayer-a")
    right_refused = next(s for s in load_scenarios() if s.id == "right-refused")
    caps = cap.Capabilities.of(cfg, cap.ProcessTable(), {"dpos-park": home, "eth-park": target})  # type: ignore[arg-type]
    assert cap.missing(right_refused, "dpos-park", "eth-park", caps) == []
    assert cap.missing(right_refused, "eth-park", "dpos-park", caps)[0].startswith("right_admission_gap(eth-park->dpos")


def test_the_pid_file_counts_only_live_processes_of_this_config(tmp_path: Path) -> None:
    cfg = _deployment(tmp_path)
    data = cfg.data_dir  # type: ignore[attr-defined]
    data.mkdir(parents=True)
    # a live process started for this config, one for another, and a dead pid
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "relay.cli", "--config",
                             str(cfg.path)])  # type: ignore[attr-defined]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "relay.cli", "--config", "x.toml"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (data / "pids.json").write_text(json.dumps({"dpos-park/w-c": mine.pid, "relay/op-3": other.pid,
                                                    "relay/op-2": dead.pid, "relayer/relayer-a": mine.pid,
                                                    "bad": "x"}))
        table = cap.pidfile_processes(cfg)  # type: ignore[arg-type]
        assert table.nodes == {"dpos-park/w-c": mine.pid}
        assert table.foreign_relayers == ["relayer-a"]
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()
    (data / "pids.json").write_text("not json")
    assert cap.pidfile_processes(cfg).nodes == {}  # type: ignore[arg-type]


def test_pairs_follow_the_lanes(tmp_path: Path) -> None:
    from relay.ops.conformance.cli import parse_pairs

    cfg = _deployment(tmp_path)
    assert plan_pairs(cfg, "ordered") == [("dpos-park", "eth-park"), ("eth-park", "dpos-park")]  # type: ignore[arg-type]
    assert plan_pairs(cfg, "lanes") == [("dpos-park", "eth-park")]  # type: ignore[arg-type]
    assert plan_pairs(cfg, "ordered", [("eth-park", "dpos-park")]) == [("eth-park", "dpos-park")]  # type: ignore[arg-type]
    assert plan_pairs(cfg, "lanes", [("eth-park", "dpos-park")]) == [("dpos-park", "eth-park")]  # type: ignore[arg-type]
    assert parse_pairs(cfg, "ethereum:dpos") == [("eth-park", "dpos-park")]  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="neither a chain id nor a chain kind"):
        parse_pairs(cfg, "fabric:dpos")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="SRC:DST"):
        parse_pairs(cfg, "dpos")  # type: ignore[arg-type]


async def test_a_run_where_nothing_can_relay_skips_every_case_and_passes_nothing(tmp_path: Path) -> None:
    """No relayer keys, no processes, and nothing listening: every case is skipped with its reason, none passes, and
    the runner touches no chain."""
    cfg = _deployment(tmp_path)
    report = await Runner(cfg, load_scenarios(), procs=cap.ProcessTable()).run()  # type: ignore[arg-type]
    assert report.results and {r.status for r in report.results} == {"skipped"}
    assert all(r.missing and r.reason.startswith("missing capability: ") for r in report.results)
    assert report.ok and report.invariants == []
    junit = ET.fromstring(render_junit(report))  # noqa: S314 - our own output
    cases = junit.findall(".//testcase")
    assert len(cases) == len(report.results)
    assert all(c.find("skipped") is not None and c.find("skipped").get("message") for c in cases)  # type: ignore[union-attr]


HOSTILE = '<script>alert("x")</script>&\'"\x00\x07'


def _hostile_report() -> Report:
    s = parse_scenarios(GOOD)[0]
    r = CaseResult(s, f"dpos{HOSTILE}", "eth-park", status="failed", reason=f"ack {HOSTILE}")
    rec = PacketRecord(f"dpos/eth/lane-0/{HOSTILE}", "dpos", "eth", 7, 1_000)
    rec.phases = {"committed": {"ms": 1_000, "chain": HOSTILE, "height": 7},
                  "completed": {"ms": 9_500, "chain": "dpos", "height": 19}}
    rec.row = {"state": HOSTILE, "ack": {"success": False, "code": HOSTILE}}
    r.packets.append(rec)
    r.check(f"check {HOSTILE}", False, HOSTILE)
    r.events.append(f"event {HOSTILE}")
    skipped = CaseResult(s, "a", "b", status="skipped", reason=f"missing capability: {HOSTILE}")
    passed = CaseResult(s, "a", "c")
    passed.check("fine", True)
    for c in (r, skipped, passed):
        c.finish()
    return Report(f"cfg{HOSTILE}.toml", 0, [r, skipped, passed], [HOSTILE],
                  [{"check": "nothing left non-final", "ok": False, "detail": HOSTILE}])


def test_the_html_report_escapes_every_hostile_string_and_loads_nothing() -> None:
    page = render_html(_hostile_report())
    assert "<script" not in page and "alert(\"x\")" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in page
    assert "src=" not in page and "http" not in page.replace("http-equiv", "")  # self-contained
    assert page.count("<details") == 3 and "FAIL" in page
    assert "+9.5 s" in page and "dpos@19" in page  # the completed phase: time since the run started, chain@height


def test_the_junit_report_is_well_formed_with_hostile_strings() -> None:
    report = _hostile_report()
    assert not report.ok
    root = ET.fromstring(render_junit(report))  # noqa: S314 - our own output
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "2" and suite.get("skipped") == "1"
    cases = suite.findall("testcase")
    assert len(cases) == 4  # three cases and one deployment invariant
    fail = cases[0].find("failure")
    assert fail is not None and "<script>" in fail.get("message", "")  # escaped in the file, intact when parsed
    assert cases[0].get("classname") == "conformance.energy-completed"
    assert "\x00" not in render_junit(report)


def test_the_cli_lists_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from relay.ops.cli import main

    cfg = _deployment(tmp_path)
    assert main(["conformance", "list", "--config", str(cfg.path), "--json"]) == 0  # type: ignore[attr-defined]
    listed = json.loads(capsys.readouterr().out)
    assert {s["id"] for s in listed} == {s.id for s in load_scenarios()}
    assert main(["conformance", "run", "--config", str(cfg.path), "--scenarios", "nope"]) == 2  # type: ignore[attr-defined]
    assert "no scenario nope" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('fault = "none"', 'fault = "meteor"'))
    assert main(["conformance", "run", "--config", str(cfg.path), "--scenario-file", str(bad)]) == 2  # type: ignore[attr-defined]
    assert "scenario energy-completed: fault: 'meteor' is not one of" in capsys.readouterr().err
    # nothing can relay here: every case skipped, exit 0, and the reports written
    junit, page = tmp_path / "r.xml", tmp_path / "r.html"
    rc = main(["conformance", "run", "--config", str(cfg.path), "--junit", str(junit),  # type: ignore[attr-defined]
               "--html", str(page), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["counts"]["passed"] == 0 and out["counts"]["skipped"] == len(out["results"])
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert ET.parse(junit).getroot().tag == "testsuites"  # noqa: S314 - our own output
    assert os.path.getsize(page) > 0


async def test_a_scenario_of_some_kinds_runs_only_on_their_pairs(tmp_path: Path) -> None:
    cfg = _deployment(tmp_path)
    only_python = parse_scenarios(GOOD + 'kinds = ["dpos", "poc"]\n')
    assert only_python[0].kinds == ("dpos", "poc")
    report = await Runner(cfg, only_python, procs=cap.ProcessTable()).run()  # type: ignore[arg-type]
    assert report.results == []  # dpos <-> ethereum is not a pair of those kinds: not run, not passed
    report = await Runner(cfg, parse_scenarios(GOOD), procs=cap.ProcessTable()).run()  # type: ignore[arg-type]
    assert [(r.src, r.dst, r.status) for r in report.results] == [("dpos-park", "eth-park", "skipped"),
                                                                  ("eth-park", "dpos-park", "skipped")]
