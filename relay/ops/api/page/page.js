// parkrelay live status page: reads /api/v1/stream (server-sent events, one overview per refresh), draws the parks
// as nodes and the lanes as edges with packets moving along them, and starts transfers with the admin token.
// No framework and no build step: the page is served as is by the operator API.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const FINAL = new Set(["completed", "refunded"]);
// where a packet in flight sits on its lane, by state: source -> relay -> target -> relay -> source
const PROGRESS = { committed: 0.15, verified: 0.4, executed: 0.65, acked: 0.85, timed_out: 0.85 };
let last = null;
let selected = null;

function el(tag, attrs = {}, text) {
  const e = tag === "svg" || ["circle", "line", "text", "g", "title"].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172800 ? `${Math.round(s / 3600)}h`
    : `${Math.round(s / 86400)}d`;
}

function drawGraph(o) {
  const svg = $("graph");
  svg.replaceChildren();
  const parks = o.parks;
  // the parks on the upper arc, the relay chain below them: a lane's edge never crosses the relay's node
  const cx = 300, cy = 250, r = 210;
  const pos = {};
  parks.forEach((p, i) => {
    const a = Math.PI + (Math.PI * (i + 0.5)) / Math.max(parks.length, 1);
    pos[p.id] = [cx + r * Math.cos(a), cy + 0.75 * r * Math.sin(a)];
  });
  pos[o.relay.id] = [cx, 330];
  const clients = Object.fromEntries(o.clients.map((c) => [c.chain_id, c]));
  // one edge per lane (both directions), labelled with the packets per state
  const lanes = {};
  for (const l of o.lanes) {
    const key = [l.src, l.dst].sort().join("|") + "|" + l.lane;
    const e = (lanes[key] ||= { a: l.src, b: l.dst, lane: l.lane, counts: {}, paused: [] });
    for (const [s, n] of Object.entries(l.packets || {})) e.counts[s] = (e.counts[s] || 0) + n;
    if (l.paused) e.paused.push(`${l.src}→${l.dst}`);
  }
  for (const e of Object.values(lanes)) {
    if (!pos[e.a] || !pos[e.b]) continue;
    const [x1, y1] = pos[e.a], [x2, y2] = pos[e.b];
    svg.append(el("line", { x1, y1, x2, y2, class: "edge", "data-testid": `lane-${e.lane}`,
      "stroke-dasharray": e.paused.length ? "6 4" : "" }));
    const c = e.counts;
    const label = `${e.lane}: C${c.committed || 0} V${c.verified || 0} E${c.executed || 0} ` +
      `A${(c.acked || 0) + (c.timed_out || 0)} ✓${(c.completed || 0) + (c.refunded || 0)}` +
      (e.paused.length ? ` · paused ${e.paused.join(", ")}` : "");
    svg.append(el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, class: "edge-label",
      "data-testid": `lane-label-${e.lane}` }, label));
  }
  // packets in flight, on their lane at the place of their state
  for (const p of o.packets) {
    if (FINAL.has(p.state) || !pos[p.src] || !pos[p.dst]) continue;
    const f = PROGRESS[p.state] ?? 0.1;
    const [x1, y1] = pos[p.src], [x2, y2] = pos[p.dst];
    const back = p.state === "acked" || p.state === "timed_out";
    const t = back ? 1 - (f - 0.65) * 2 : f;
    const dot = el("circle", { cx: x1 + (x2 - x1) * t, cy: y1 + (y2 - y1) * t, r: 6, class: "dot",
      "data-testid": `dot-${p.packet}`, "data-state": p.state });
    dot.append(el("title", {}, `${p.packet}: ${p.state}`));
    svg.append(dot);
  }
  const nodes = [...parks, o.relay];
  for (const p of nodes) {
    const [x, y] = pos[p.id];
    const client = clients[p.id];
    const status = p.id === o.relay.id ? "relay" : client ? client.status : "unknown";
    const cls = ["node", p.id === o.relay.id ? "relay" : "park", p.reachable ? "" : "unreachable",
      status === "frozen" || status === "expired" ? "frozen" : ""].join(" ");
    const g = el("g", { class: cls, "data-testid": `park-${p.id}`, "data-client-status": status,
      "data-reachable": String(p.reachable) });
    g.append(el("circle", { cx: x, cy: y, r: 30 }));
    g.append(el("text", { x, y: y - 38 }, p.id));
    g.append(el("text", { x, y: y + 46 }, p.reachable ? `head ${p.height} · final ${p.final_height}` : "unreachable"));
    if (p.id !== o.relay.id) g.append(el("text", { x, y: y + 60, "data-testid": `client-${p.id}` }, `client ${status}`));
    svg.append(g);
  }
}

function fillTable(id, rows, cells, attrs) {
  const body = $(id);
  body.replaceChildren(...rows.map((r) => {
    const tr = el("tr", attrs ? attrs(r) : {});
    for (const c of cells(r)) {
      const td = el("td", typeof c === "object" && c !== null ? { class: c.cls || "" } : {},
        typeof c === "object" && c !== null ? c.text : String(c));
      tr.append(td);
    }
    return tr;
  }));
}

function render(o) {
  last = o;
  $("updated").textContent = `updated ${new Date(o.refreshed_ms || o.time_ms).toLocaleTimeString()}`;
  drawGraph(o);
  fillTable("packets", o.packets, (p) => [p.packet, { text: p.state, cls: `state-${p.state}` }, p.kind || "–",
    p.payload && p.payload.amount_wh !== undefined ? `${p.payload.amount_wh} Wh` : "–"],
  (p) => ({ "data-key": p.packet, "data-testid": `packet-${p.packet}`, "data-state": p.state }));
  fillTable("clients", o.clients, (c) => [c.chain_id, c.client_type || "–", { text: c.status, cls: `status-${c.status}` },
    c.final_height ?? "–", c.expires_in_s === null || c.expires_in_s === undefined ? "–" : ago(c.expires_in_s * 1000)],
  (c) => ({ "data-testid": `client-row-${c.chain_id}`, "data-status": c.status }));
  fillTable("supply", o.supply, (s) => [`${s.home} → ${s.remote} (${s.lane})`, s.denom, `${s.outstanding} Wh`,
    `${s.outbound + s.returning} Wh`]);
  fillTable("relayers", o.relayers, (r) => [r.relayer, r.backlog, r.backlog ? ago(r.oldest_pending_s * 1000) : "–",
    r.idle_s === null ? "never ran" : ago(r.idle_s * 1000), r.last_error || "–"]);
  const ids = o.parks.map((p) => p.id);
  for (const sel of [$("from_chain"), $("to_chain")]) {
    if (sel.options.length !== ids.length) {
      sel.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
      if (sel.id === "to_chain" && ids.length > 1) sel.value = ids[1];
    }
  }
  if (selected && o.changed.includes(selected)) showTimeline(selected);
}

async function showTimeline(key) {
  selected = key;
  const r = await fetch(`/api/v1/packets/${key}`);
  const box = $("timeline");
  box.hidden = false;
  if (!r.ok) { box.textContent = `${key}: not found`; return; }
  const p = await r.json();
  const items = p.timeline.map((s) => el("li", { class: s.done ? "done" : "pending", "data-phase": s.phase,
    "data-done": String(s.done) }, `phase ${s.protocol_phase} ${s.phase} on ${s.chain}: ` + (s.done
    ? `height ${s.height ?? "?"}${s.time_ms ? ` at ${new Date(s.time_ms).toLocaleTimeString()}` : ""}`
    : "not yet")));
  const ol = el("ol");
  ol.append(...items);
  box.replaceChildren(el("h3", {}, `${p.packet} — ${p.state}`), ol);
  box.dataset.packet = p.packet;
  box.dataset.state = p.state;
}

$("packets").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-key]");
  if (tr) showTimeline(tr.dataset.key);
});

$("token").value = sessionStorage.getItem("parkrelay-token") || "";
$("transfer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("transfer-result");
  const token = $("token").value.trim();
  sessionStorage.setItem("parkrelay-token", token);
  out.textContent = "sending… (waits for the source block to be final)";
  const body = { from_chain: $("from_chain").value, sender: $("sender").value.trim(), to_chain: $("to_chain").value,
    receiver: $("receiver").value.trim(), amount_wh: Number($("amount_wh").value) };
  const r = await fetch("/api/v1/transfers", { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` } });
  const answer = await r.json();
  if (r.ok) {
    out.textContent = `sent ${answer.packet}`;
    out.dataset.packet = answer.packet;
    showTimeline(answer.packet);
  } else {
    out.textContent = `refused: ${answer.error.code}: ${answer.error.message}`;
  }
});

function connect() {
  const es = new EventSource("/api/v1/stream");
  es.addEventListener("overview", (ev) => {
    $("live").textContent = "live";
    $("live").classList.add("on");
    render(JSON.parse(ev.data));
  });
  es.onerror = () => {
    $("live").textContent = "reconnecting…";
    $("live").classList.remove("on");
  };
}
connect();
