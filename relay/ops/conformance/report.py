"""A conformance run's reports: JUnit XML (one testcase per pair x scenario), one self-contained HTML page (no script,
no external resource; every value from the chains or the config escaped), and JSON (``Report.to_json``)."""

from __future__ import annotations

import html
import time
import xml.etree.ElementTree as ET
from typing import Any

from relay.ops.conformance.engine import ORDER, Report

__all__ = ["render_html", "render_junit"]

_XML_BAD = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}


def _x(text: Any) -> str:
    """Text XML 1.0 can hold (control characters dropped; ElementTree escapes the rest)."""
    return str(text).translate(_XML_BAD)


def render_junit(report: Report) -> str:
    counts = report.counts()
    failures = counts.get("failed", 0) + sum(1 for i in report.invariants if not i["ok"])
    suites = ET.Element("testsuites", name="parkrelay conformance", tests=str(len(report.results) +
                                                                          len(report.invariants)),
                        failures=str(failures), time=f"{report.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name="parkrelay conformance", tests=suites.get("tests", "0"),
                          failures=str(failures), errors="0", skipped=str(counts.get("skipped", 0)),
                          time=f"{report.duration_s:.3f}",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_ms / 1000)))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="config", value=_x(report.config))
    ET.SubElement(props, "property", name="capabilities", value=_x(" ".join(report.capabilities)))
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=_x(f"conformance.{r.scenario.id}"),
                             name=_x(f"{r.src}->{r.dst}"), time=f"{r.duration_s:.3f}")
        if r.status == "skipped":
            ET.SubElement(case, "skipped", message=_x(r.reason))
        elif r.status == "failed":
            fail = ET.SubElement(case, "failure", message=_x(r.reason or "failed"), type="conformance")
            fail.text = _x("\n".join(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}" for c in r.checks))
        out = [f"{r.scenario.title}"] + [f"event: {e}" for e in r.events]
        for p in r.packets:
            phases = ", ".join(f"{st}@{p.phases[st]['chain']}:{p.phases[st]['height']}" for st in ORDER
                               if st in p.phases)
            out.append(f"packet {p.key}: {p.row.get('state')} ack={p.row.get('ack')} [{phases}]")
        ET.SubElement(case, "system-out").text = _x("\n".join(out))
    for inv in report.invariants:
        case = ET.SubElement(suite, "testcase", classname="conformance.deployment", name=_x(inv["check"]), time="0")
        if not inv["ok"]:
            ET.SubElement(case, "failure", message=_x(inv["detail"] or "failed"), type="invariant")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.passed{color:#176b1b}.failed{color:#b00020;font-weight:bold}
.skipped{color:#8a6d00}code{font-size:12px}details{margin:.3em 0}.bad{color:#b00020}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _t(ms: Any, t0: int) -> str:
    return "" if not isinstance(ms, int) else f"+{(ms - t0) / 1000:.1f} s"


def render_html(report: Report) -> str:
    """One page: the summary, the matrix (scenarios x pairs), then per case its checks, what the runner did and each
    packet's phases (time since the run started, chain and height when first seen)."""
    counts = report.counts()
    pairs = sorted({(r.src, r.dst) for r in report.results})
    scenarios: list[str] = []
    for r in report.results:
        if r.scenario.id not in scenarios:
            scenarios.append(r.scenario.id)
    by = {(r.scenario.id, r.src, r.dst): r for r in report.results}
    t0 = report.started_ms
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
           "<title>parkrelay conformance</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>parkrelay conformance</h1>",
           f"<p>config <code>{_e(report.config)}</code>, started "
           f"{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t0 / 1000)))}, {report.duration_s:.1f} s: "
           f"<span class=\"{'passed' if report.ok else 'failed'}\">{'PASS' if report.ok else 'FAIL'}</span> "
           f"({counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped)"
           "</p>",
           f"<p>capabilities: {_e(', '.join(report.capabilities) or 'none')}</p>"]
    if report.invariants:
        out.append("<h2>Deployment invariants</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>")
        for inv in report.invariants:
            cls = "passed" if inv["ok"] else "failed"
            out.append(f"<tr><td>{_e(inv['check'])}</td><td class=\"{cls}\">{'ok' if inv['ok'] else 'FAILED'}</td>"
                       f"<td>{_e(inv['detail'])}</td></tr>")
        out.append("</table>")
    out.append("<h2>Matrix</h2><table><tr><th>scenario</th>")
    out += [f"<th>{_e(a)} &rarr; {_e(b)}</th>" for a, b in pairs]
    out.append("</tr>")
    for sid in scenarios:
        out.append(f"<tr><th>{_e(sid)}</th>")
        for a, b in pairs:
            cell = by.get((sid, a, b))
            out.append("<td></td>" if cell is None else f"<td class=\"{_e(cell.status)}\"><a href=\"#"
                       f"{_e(_anchor(sid, a, b))}\">{_e(cell.status)}</a></td>")
        out.append("</tr>")
    out.append("</table><h2>Cases</h2>")
    for r in report.results:
        opened = " open" if r.status == "failed" else ""
        out.append(f"<details id=\"{_e(_anchor(r.scenario.id, r.src, r.dst))}\"{opened}>"
                   f"<summary><span class=\"{_e(r.status)}\">{_e(r.status)}</span> <b>{_e(r.scenario.id)}</b> "
                   f"{_e(r.src)} &rarr; {_e(r.dst)} ({r.duration_s:.1f} s): {_e(r.scenario.title)}</summary>")
        out.append(f"<p>fault <code>{_e(r.scenario.fault)}</code>; expected {_e(r.scenario.expect.state)}, ack "
                   f"{_e('none' if r.scenario.expect.acks is None else ' or '.join(r.scenario.expect.acks))}</p>")
        if r.reason:
            out.append(f"<p class=\"{'bad' if r.status == 'failed' else 'skipped'}\">{_e(r.reason)}</p>")
        if r.events:
            out.append("<ol>" + "".join(f"<li>{_e(e)}</li>" for e in r.events) + "</ol>")
        if r.packets:
            out.append("<table><tr><th>packet</th><th>state</th><th>ack</th>" +
                       "".join(f"<th>{_e(st)}</th>" for st in ORDER) + "</tr>")
            for p in r.packets:
                ack = p.row.get("ack")
                cells = []
                for st in ORDER:
                    ph = p.phases.get(st)
                    cells.append("<td></td>" if ph is None else
                                 f"<td>{_e(_t(ph.get('ms'), t0))}<br><code>{_e(ph.get('chain'))}@"
                                 f"{_e(ph.get('height'))}</code></td>")
                out.append(f"<tr><td><code>{_e(p.key)}</code></td><td>{_e(p.row.get('state', '?'))}</td>"
                           f"<td>{_e('none' if ack is None else ack.get('code'))}</td>{''.join(cells)}</tr>")
            out.append("</table>")
        if r.checks:
            out.append("<table><tr><th>check</th><th>result</th><th>detail</th></tr>" + "".join(
                f"<tr><td>{_e(c['check'])}</td><td class=\"{'passed' if c['ok'] else 'failed'}\">"
                f"{'ok' if c['ok'] else 'FAILED'}</td><td>{_e(c['detail'])}</td></tr>" for c in r.checks) + "</table>")
        out.append("</details>")
    out.append("<p>Phase cells: time since the run started and <code>chain@height</code> when the runner first saw the "
               "phase (the block that did it is at or below that height); an empty cell: passed between two reads."
               "</p></body></html>")
    return "\n".join(out) + "\n"


def _anchor(sid: str, a: str, b: str) -> str:
    return "case-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{sid}-{a}-{b}")
