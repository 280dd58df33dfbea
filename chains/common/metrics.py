"""Prometheus metrics of a node process (park nodes and relay validators): ``GET /metrics`` on the node's RPC port.

Named by Prometheus conventions (``parkrelay_`` prefix, base units in the name, ``_total`` for counters). Block
figures are read from the node's final canonical blocks when a scrape comes (each block once), so the block path
pays nothing for them; RPC figures are counted as requests are answered. A method label is a registered method's
name or ``unknown``, so a caller cannot grow the label set.

==============================================  =========  ==================================================
metric                                           type       labels
==============================================  =========  ==================================================
``parkrelay_node_height``                        gauge      chain, node
``parkrelay_node_final_height``                  gauge      chain, node
``parkrelay_node_mempool_transactions``          gauge      chain, node
``parkrelay_node_peers``                         gauge      chain, node
``parkrelay_node_gossip_queued_transactions``   gauge      chain, node — admitted transactions not yet posted
                                                            to every peer (summed over peers)
``parkrelay_node_gossip_dropped_transactions``  gauge      chain, node — not gossiped since the node started: a
                                                            peer's queue was full
``parkrelay_blocks_total``                       counter    chain — final blocks
``parkrelay_block_interval_seconds``             histogram  chain — time between consecutive final blocks
``parkrelay_failed_transactions_total``          counter    chain — transactions that failed in a final block
``parkrelay_packets_total``                      counter    chain, phase, src, dst, lane — packet events in
                                                            final blocks: commit, verify, execute, confirm, settle
``parkrelay_rpc_requests_total``                 counter    chain, method
``parkrelay_rpc_errors_total``                   counter    chain, method, code
==============================================  =========  ==================================================
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["PHASE_OF_EVENT", "NodeMetrics"]

PHASE_OF_EVENT = {"send_packet": "commit", "packet_verified": "verify", "write_ack": "execute",
                  "packet_acked": "confirm", "packet_timed_out": "confirm", "settle_packet": "settle"}
"""The packet events of the bridges and the relay state machine, by the timeline step they record (SPEC §6)."""

MAX_BLOCKS_PER_SCRAPE = 5000
"""Final blocks one scrape reads at most (a node that syncs a long history catches up over several scrapes)."""


class NodeMetrics:
    """The metrics of one :class:`chains.common.node.ParkNode` in their own registry (one node per process)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        chain = node.rules.chain_id
        self.chain = chain
        labels = {"chain": chain, "node": node.config.name}
        self._gauges = {
            name: Gauge(f"parkrelay_node_{name}", doc, list(labels), registry=r).labels(**labels)
            for name, doc in (("height", "Height of the node's head block"),
                              ("final_height", "Height of the node's last final block"),
                              ("mempool_transactions", "Transactions waiting in the node's mempool"),
                              ("peers", "Peers the node gossips with"),
                              ("gossip_queued_transactions", "Admitted transactions waiting to be posted to peers"),
                              ("gossip_dropped_transactions",
                               "Transactions not gossiped to a peer whose queue was full, since the node started"))}
        self.blocks = Counter("parkrelay_blocks", "Final blocks", ["chain"], registry=r).labels(chain)
        self.interval = Histogram("parkrelay_block_interval_seconds", "Time between consecutive final blocks",
                                  ["chain"], registry=r,
                                  buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)).labels(chain)
        self.failed = Counter("parkrelay_failed_transactions", "Transactions that failed in a final block",
                              ["chain"], registry=r).labels(chain)
        self.packets = Counter("parkrelay_packets", "Packet events in final blocks, by timeline step",
                               ["chain", "phase", "src", "dst", "lane"], registry=r)
        self.requests = Counter("parkrelay_rpc_requests", "JSON-RPC requests answered", ["chain", "method"],
                                registry=r)
        self.errors = Counter("parkrelay_rpc_errors", "JSON-RPC requests answered with an error",
                              ["chain", "method", "code"], registry=r)
        self._scanned = 0

    def rpc(self, method: str, code: str | None) -> None:
        """One RPC request answered (``code``: its error code, None when it succeeded)."""
        name = method if method in self.node.methods else "unknown"
        self.requests.labels(self.chain, name).inc()
        if code is not None:
            self.errors.labels(self.chain, name, code).inc()

    def _scan(self) -> None:
        node = self.node
        final = min(int(node.rules.final_height(node)), self._scanned + MAX_BLOCKS_PER_SCRAPE)
        while self._scanned < final:
            h = self._scanned + 1
            e, parent = node.canonical(h), node.canonical(h - 1)
            if e is None:
                return
            self.blocks.inc()
            if parent is not None and h > 1:
                self.interval.observe(max(0, e.header.timestamp_ms - parent.header.timestamp_ms) / 1000)
            self.failed.inc(sum(1 for r in e.tx_results if not r.get("ok")))
            for ev in e.events:
                phase = PHASE_OF_EVENT.get(ev.get("type", ""))
                if phase is not None:
                    self.packets.labels(self.chain, phase, str(ev.get("src", self.chain)),
                                        str(ev.get("dst", "")), str(ev.get("lane", ""))).inc()
            self._scanned = h

    def render(self) -> bytes:
        """The Prometheus text exposition of this process."""
        node = self.node
        self._scan()
        self._gauges["height"].set(node.head.header.height)
        self._gauges["final_height"].set(node.rules.final_height(node))
        self._gauges["mempool_transactions"].set(len(node.mempool))
        self._gauges["peers"].set(len(node.peers))
        self._gauges["gossip_queued_transactions"].set(sum(q.qsize() for q in node._tx_outbox.values()))
        self._gauges["gossip_dropped_transactions"].set(node.tx_gossip_dropped)
        out: bytes = generate_latest(self.registry)
        return out
