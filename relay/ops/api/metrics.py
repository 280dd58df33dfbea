"""Prometheus metrics of relay validators and relayers (park nodes: :mod:`chains.common.metrics`).

A relay validator's ``/metrics`` (on its RPC port and on its API port) holds its node's metrics plus, read from
the relay chain's state and final blocks when a scrape comes:

==============================================  =========  ==================================================
``parkrelay_light_client_final_height``          gauge      chain, client_type
``parkrelay_light_client_latest_height``         gauge      chain, client_type
``parkrelay_light_client_status``                gauge      chain, status — 1 for the client's status
``parkrelay_light_client_expiry_seconds``        gauge      chain — until the trusting period ends
``parkrelay_lane_paused``                        gauge      src, dst, lane — 1 while paused
``parkrelay_relay_consensus_rounds_total``       counter    rounds it took to decide the final blocks
                                                            (a block decided in round r counts r + 1)
``parkrelay_relay_decision_round``               histogram  the round each block was decided in
==============================================  =========  ==================================================

A relayer's ``/metrics`` (on its API port), from the relayer's counters and its progress callbacks:

==============================================  =========  ==================================================
``parkrelay_relayer_submissions_total``          counter    relayer, action — accepted submissions
``parkrelay_relayer_redundant_total``            counter    relayer — redundant relays refused at admission,
                                                            before they took block space (``packet.replay``)
``parkrelay_relayer_refusals_total``             counter    relayer, chain, code — other refusals (Fabric
                                                            endorsement failures are ``fabric.*`` codes,
                                                            reverted Ethereum transactions ``eth.reverted``)
``parkrelay_relayer_settled_packets_total``      counter    relayer
``parkrelay_relayer_packets_in_flight``          gauge      relayer
``parkrelay_relayer_backlog_packets``            gauge      relayer, lane, action — packets waiting for it
``parkrelay_relayer_oldest_pending_seconds``     gauge      relayer, lane
``parkrelay_relayer_task_backoffs_total``        counter    relayer, task — I/O back-offs
``parkrelay_packet_phase_seconds``               histogram  phase — from the previous step to this
                                                            relayer's accepted submission of the next
``parkrelay_packet_end_to_end_seconds``          histogram  from the relayer first seeing a packet to its
                                                            settlement
==============================================  =========  ==================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from protocol.errors import ProtocolError

__all__ = ["RelayCollector", "RelayerMetrics", "register_relay_metrics"]

LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600)
PHASE_OF_ACTION = {"verify": "verify", "recv": "execute", "timeout_receipt": "execute", "confirm": "confirm",
                   "timeout": "confirm", "settle": "settle"}
"""A relayer's actions (:class:`relay.relayer.policy.Action` values) by the timeline step they make."""


class RelayCollector(Collector):
    """Light clients, lanes and consensus rounds of a relay validator's node, read at scrape time."""

    def __init__(self, node: Any, chains: list[str], lanes: list[tuple[str, str, str]],
                 wall_ms: Callable[[], int] | None = None) -> None:
        self.node = node
        self.chains = chains
        self.lanes = lanes
        self.wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._scanned = 0
        self._rounds = 0
        self._round_hist = Histogram("parkrelay_relay_decision_round", "Consensus round each final relay block "
                                     "was decided in", buckets=(0, 1, 2, 3, 5, 10), registry=None)

    def collect(self) -> Iterator[Any]:
        node = self.node
        state = node.head.state
        sm = node.rules.sm
        now = self.wall_ms()
        final_h = GaugeMetricFamily("parkrelay_light_client_final_height", "Final height of the relay's light "
                                    "client of a park", labels=["chain", "client_type"])
        latest_h = GaugeMetricFamily("parkrelay_light_client_latest_height", "Newest header the relay's light "
                                     "client of a park holds", labels=["chain", "client_type"])
        status = GaugeMetricFamily("parkrelay_light_client_status", "1 for the light client's status",
                                   labels=["chain", "status"])
        expiry = GaugeMetricFamily("parkrelay_light_client_expiry_seconds", "Seconds until the light client's "
                                   "trusting period ends without an update", labels=["chain"])
        for chain in self.chains:
            try:
                st = sm.client_status(state, chain, now)
            except ProtocolError:  # a chain without a client (client.unknown): nothing to report
                continue
            final_h.add_metric([chain, st["client_type"]], st["final_height"])
            latest_h.add_metric([chain, st["client_type"]], st["latest_height"])
            for s in ("active", "frozen", "expired"):
                status.add_metric([chain, s], 1.0 if st["status"] == s else 0.0)
            if st.get("final_timestamp_ms") is not None and st.get("trusting_period_ms") is not None:
                expiry.add_metric([chain], (st["final_timestamp_ms"] + st["trusting_period_ms"] - now) / 1000)
        yield from (final_h, latest_h, status, expiry)
        paused = GaugeMetricFamily("parkrelay_lane_paused", "1 while a directed lane is paused",
                                   labels=["src", "dst", "lane"])
        for lane, a, b in self.lanes:
            for src, dst in ((a, b), (b, a)):
                rec = sm.lane(state, src, dst, lane)
                if rec is not None:
                    paused.add_metric([src, dst, lane], 1.0 if rec["paused"] else 0.0)
        yield paused
        while self._scanned < node.head.header.height:
            e = node.canonical(self._scanned + 1)
            if e is None or e.header.commit is None:
                break
            self._rounds += e.header.commit.round + 1
            self._round_hist.observe(e.header.commit.round)
            self._scanned += 1
        rounds = CounterMetricFamily("parkrelay_relay_consensus_rounds", "Consensus rounds it took to decide the "
                                     "final relay blocks")
        rounds.add_metric([], self._rounds)
        yield rounds
        yield from self._round_hist.collect()


def register_relay_metrics(node: Any, cfg: Any) -> None:
    """Add the relay chain's metrics to relay validator ``node``'s registry (its ``/metrics``)."""
    node.metrics.registry.register(RelayCollector(node, [c.id for c in cfg.chains], list(cfg.lanes)))


class RelayerMetrics:
    """A relayer's metrics: its counters read at scrape time, latencies observed through its callbacks
    (:attr:`relay.relayer.relayer.Relayer.observer`)."""

    def __init__(self, relayer: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.relayer = relayer
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r, name = self.registry, relayer.name
        self.phase = Histogram("parkrelay_packet_phase_seconds", "From a packet's previous step to this relayer's "
                               "accepted submission of the next", ["phase"], buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("parkrelay_packet_end_to_end_seconds", "From the relayer first seeing a packet "
                                    "to its settlement", buckets=LATENCY_BUCKETS, registry=r)
        self.refusals = Counter("parkrelay_relayer_refusals", "Submissions a chain refused (redundant ones apart)",
                                ["relayer", "chain", "code"], registry=r)
        self._last: dict[str, float] = {}
        self._name = name
        r.register(_RelayerCollector(relayer))

    # -- the relayer's callbacks ------------------------------------------------------------------

    def submitted(self, action: str, packets: list[Any]) -> None:
        phase = PHASE_OF_ACTION.get(action)
        if phase is None:
            return
        now = self.clock()
        for t in packets:
            since = self._last.get(t.key, t.seen_s)
            self.phase.labels(phase).observe(max(0.0, now - since))
            self._last[t.key] = now

    def refused(self, chain: str, code: str) -> None:
        self.refusals.labels(self._name, chain, code).inc()

    def finished(self, t: Any) -> None:
        self._last.pop(t.key, None)
        self.end_to_end.observe(max(0.0, self.clock() - t.seen_s))

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out


class _RelayerCollector(Collector):
    def __init__(self, relayer: Any) -> None:
        self.relayer = relayer

    def collect(self) -> Iterator[Any]:
        rl = self.relayer
        name = rl.name
        st = rl.stats
        sub = CounterMetricFamily("parkrelay_relayer_submissions", "Submissions the chains accepted",
                                  labels=["relayer", "action"])
        for action, n in sorted(st.submitted.items()):
            sub.add_metric([name, action], n)
        yield sub
        for metric, doc, value in (
                ("parkrelay_relayer_redundant", "Redundant relays refused at admission, before block space "
                 "(another relayer did it first)", st.redundant),
                ("parkrelay_relayer_settled_packets", "Packets this relayer saw to their end", st.settled),
                ("parkrelay_relayer_undecodable_events", "Park events the relayer could not decode",
                 st.undecodable_events)):
            c = CounterMetricFamily(metric, doc, labels=["relayer"])
            c.add_metric([name], value)
            yield c
        gas = CounterMetricFamily("parkrelay_relayer_gas_used", "Gas this relayer's Ethereum transactions spent "
                                  "once mined (reverted ones included)", labels=["relayer", "chain"])
        endorse = CounterMetricFamily("parkrelay_relayer_fabric_endorsement_failures", "Proposals a Fabric park's "
                                      "peers refused or answered differently, by code", labels=["relayer", "chain",
                                                                                                 "code"])
        for chain_id, link in sorted(getattr(rl, "parks", {}).items()):
            target = getattr(link, "target", None)
            if isinstance(getattr(target, "gas_used", None), int):
                gas.add_metric([name, chain_id], target.gas_used)
            for code, n in sorted((getattr(target, "endorsement_failures", None) or {}).items()):
                endorse.add_metric([name, chain_id, code], n)
        yield gas
        yield endorse
        earned = CounterMetricFamily("parkrelay_relayer_fees_earned", "Relay fees the parks paid this relayer's "
                                     "payees (protocol SPEC §6.10), in each park's fee denomination",
                                     labels=["relayer", "chain", "denom", "step"])
        for (chain, denom, step), amount in sorted(getattr(rl, "earned", {}).items()):
            earned.add_metric([name, chain, denom, step], amount)
        yield earned
        unpaid = CounterMetricFamily("parkrelay_relayer_unpaid_steps", "Steps left to other relayers: the packet's "
                                     "fee for them was below this relayer's min_fees", labels=["relayer"])
        unpaid.add_metric([name], getattr(st, "unpaid", 0))
        yield unpaid
        flight = GaugeMetricFamily("parkrelay_relayer_packets_in_flight", "Packets the relayer carries",
                                   labels=["relayer"])
        flight.add_metric([name], len(rl.packets))
        yield flight
        backlog = GaugeMetricFamily("parkrelay_relayer_backlog_packets", "Packets waiting for an action",
                                    labels=["relayer", "lane", "action"])
        oldest = GaugeMetricFamily("parkrelay_relayer_oldest_pending_seconds", "Age of the oldest packet waiting",
                                   labels=["relayer", "lane"])
        for lane, lp in sorted(rl.progress.items()):
            for action, n in sorted(lp.pending.items()):
                backlog.add_metric([name, lane, action], n)
            oldest.add_metric([name, lane], lp.oldest_pending_s if lp.pending else 0.0)
        yield backlog
        yield oldest
        backoffs = CounterMetricFamily("parkrelay_relayer_task_backoffs", "I/O back-offs of a relayer task",
                                       labels=["relayer", "task"])
        for task, h in sorted(rl.health.items()):
            backoffs.add_metric([name, task], h.backoffs)
        yield backoffs
