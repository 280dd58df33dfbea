"""Transfers through all four phases on a real devnet (issue #3's benchmark; issue #16's measuring part).

    python bench/devnet.py [--pair dpos:poc] (--transfers N | --rate R [--seconds S] | --backlog N)
                           [--senders 4] [--json] [--keep DIR] [--relay-block-bytes B]

Starts a devnet of real processes in a temp dir (3 DPoS witnesses at 1 s blocks, 2 PoC farmers at 1 s target
blocks and confirmation depth 3, a 4-validator relay chain, 2 relayers), and sends energy transfers (1 Wh each)
from the ``--pair`` source park to its target (``dpos:poc`` or ``poc:dpos``). A pair with an Ethereum or a Fabric
park (``eth:dpos``, ``fabric:poc``, ``eth:fabric`` ...) is measured beside that park's own commit rate, with
``--transfers N`` only (default 200, 8 senders): bench/devnet_parks.py says how. Three loads:

``--transfers N``  a burst: all N submitted at once (``--senders`` accounts, each with its queued nonces).
``--rate R``       open loop: R transfers per second for ``--seconds S`` (each transfer's submission is scheduled at
                   ``t0 + i/R`` whatever happened to the earlier ones), then wait until all settled.
``--backlog N``    only ONE relayer configured and not running: commit N packets, wait until every commitment is
                   final on the source, then start the relayer and time how long it takes from its start until all
                   N are settled on the source (phase 4). Issue #16's target: 10,000 in <= 60 s.

Per packet, from the chains' own block times (block headers' ``timestamp_ms``, never the bench's clock):

  t_send        source block time of the block holding the ``send_packet`` event (phase 1, committed)
  t_src_final   source block time at which that block became final: DPoS, the first block whose last irreversible
                height (``lib`` of the ``dpos/tracker`` state after that block) >= the send height; PoC, the first
                block at least ``confirmation_depth`` above it and at least the relay client's finality window
                (``finality_window_ms``, 20 s here) after it: the PoC finality rule the relay applies (SPEC §8.6),
                both parts measured in the park's own heights and block times (:func:`window_libs`)
  t_verified    relay block time of the ``packet_verified`` event (phase 2; relay blocks are final at commit)
  t_exec        target block time of the ``write_ack`` event (phase 3)
  t_ack_final   target block time at which the t_exec block became final (same rule as t_src_final, on the target)
  t_settle      source block time of the ``settle_packet`` event (phase 4)

and the two inclusion waits: the target's, ``t_exec - (time of the target block before it)``, and the source's for
the settle, ``t_settle - (time of the source block before it)``. The relay's overhead is what is left of a packet's
time once the waits the parks impose by themselves (finality, block intervals) are taken out:

  overhead_phase3 = (t_exec - t_send) - (t_src_final - t_send) - target inclusion wait
  overhead_phase4 = (t_settle - t_send) - (t_src_final - t_send) - target inclusion wait - (t_ack_final - t_exec)
                    - source inclusion wait for the settle

Prints p50 and p95 of both, and the mean time of each phase: committed->final (t_src_final - t_send),
final->verified, verified->executed, executed->ack final, ack final->settled. Issue #16's target: overhead p50 <=
1.5 s and p95 <= 3 s, for a single transfer and under 100 transfers/s. A PoC park's finality includes the relay
client's ``finality_window_ms`` (a PoC chain's finality is probabilistic: the window is how long a header must
stay on the best branch, SPEC §8.6), so the 20 s window is the park's wait, not the relay's; the relay's delay in
holding a header counts as overhead, since the window is measured from the header's own block time.

Also printed:
  throughput_per_s            packets completed through phase 4 per second (first submission to last settle seen)
  steady_settle_per_s         settlements per second of chain time over the middle 80 % of them: the rate the
                              system sustained once full (under ``--rate R`` it equals R when the relay keeps up)
  latency_p50_s, latency_p95_s  per packet: its send's block time to its settlement being seen by the bench
  chain_latency_p50_s, ...    per packet: t_settle - t_send
  mean_ack_final_to_confirmed_s, mean_confirmed_to_settled_s  ack final -> settled in its two halves: to the relay
                              block of ``packet_acked`` (the relay learning the target's finality, the confirmation),
                              then to the settle block (reading the certified outcome, the source's inclusion)
  completed, seconds          how many completed, and the wall time for all of them
  submitted_per_s             the submission rate reached (rate mode: compare with --rate)
  supply_conserved            escrowed kWh on the source == vouchers on the target == the Wh sent (1 Wh per
                              accepted transfer, every one of them settled), after the run; ``committed`` is the
                              send_packet events the bench saw (fewer when a DPoS reorg replaced a block it had
                              read at the head)
  redundant_relays_in_blocks  failed transactions that reached a block on any chain
  redundant_noops_in_blocks   relays that lost a race to another relayer's in the same block and stayed in it as
                              no-ops that use their sender's nonce (protocol SPEC §1 Trust)
  relay_node_peak_rss_mb      peak RSS of relay validator op-a (VmHWM)
  relay_rpc_requests_per_s    JSON-RPC requests op-a answered per second (``/rpc`` and ``/ws``, every client) while
                              the transfers ran: what the relayers and the bench ask of it (``[limits]`` sizes)
  relay_block_interval_p50_ms the relay chain's median block interval while the transfers ran
  relayer_peak_rss_mb         the largest peak RSS of the relayer processes (VmHWM, read before they stop)
  relay_node_rss_mb, relayer_rss_mb  their RSS once every packet settled (VmRSS)
  park_node_rss_mb            per park, the RSS of its first node (the one the bench submits to) at the same moment
  disk_bytes_per_packet       per chain: one node's SQLite database (with its WAL) over the packets settled; and one
                              relayer's database (bench/footprint.py runs this for 100,000 packets)
Targets (issue #3): p50 <= 6 s with 1 s blocks, all 1,000 through phase 4 within 120 s, relay RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, p50_p95, r2, run_dir, steady_rate
from chains.common.procs import spawn
from chains.common.progress import Bar
from chains.common.progress import bar as progress_bar

DPOS, POC, LANE = "dpos-park", "poc-park", "lane-0"
PARKS = {"dpos": DPOS, "poc": POC, "eth": "eth-park", "ethereum": "eth-park", "fabric": "fabric-park"}
PY_PARKS = (DPOS, POC)
"""The parks whose every block this bench reads (phase times, overheads); a pair with another park is run by
bench/devnet_parks.py beside that park's own commit rate."""
POC_DEPTH = 3
POC_WINDOW_MS = 20_000
"""The relay's PoC client's ``finality_window_ms`` in this devnet (as deploy/devnet.toml)."""
RECEIVER = {DPOS: "alice", POC: "carol"}


# -- the arithmetic (pure: block times in, figures out) --------------------------------------------------------


def final_times(heights: Iterable[int], lib_after: Mapping[int, int], time_ms: Mapping[int, int]) -> dict[int, int]:
    """For each of ``heights``: the block time of the first block ``b`` (ascending) whose last irreversible height
    ``lib_after[b]`` is >= it. Heights no known block made final are left out. The running maximum of ``lib_after``
    is used, so a block once final stays final. O(blocks + heights log heights)."""
    want = sorted(set(heights))
    out: dict[int, int] = {}
    i, lib = 0, -1
    for b in sorted(lib_after):
        if i >= len(want):
            break
        lib = max(lib, lib_after[b])
        while i < len(want) and want[i] <= lib:
            if b in time_ms:
                out[want[i]] = time_ms[b]
            i += 1
    return out


def depth_libs(heights: Iterable[int], depth: int) -> dict[int, int]:
    """The last irreversible height after each block of a chain final at ``depth`` confirmations."""
    return {b: b - depth for b in heights}


def window_libs(time_ms: Mapping[int, int], depth: int, window_ms: int) -> dict[int, int]:
    """The last final height after each block of a PoC park under the relay's rule for it (SPEC §8.6): a header is
    final once ``depth`` blocks are on top of it **and** ``window_ms`` has passed since it was on the best branch.
    The header's own block time stands for that moment (no relay holds a header before it is made), so the wait
    counted is the park's, and whatever the relay adds to it is overhead. Heights with no known time are taken as
    not final."""
    out: dict[int, int] = {}
    for b, t in time_ms.items():
        h = b - depth
        while h > 0 and (h not in time_ms or time_ms[h] + window_ms > t):
            h -= 1
        out[b] = h
    return out


@dataclass(frozen=True, slots=True)
class PacketTimes:
    """One packet's block times, ms since the epoch (see the module docs)."""

    t_send: int
    t_src_final: int
    t_verified: int
    t_exec: int
    t_exec_prev: int
    """Time of the target block before the t_exec block."""
    t_ack_final: int
    t_settle: int
    t_settle_prev: int
    """Time of the source block before the t_settle block."""


def overhead_phase3_ms(p: PacketTimes) -> int:
    """(t_exec - t_send) - source finality wait - target inclusion wait."""
    return (p.t_exec - p.t_send) - (p.t_src_final - p.t_send) - (p.t_exec - p.t_exec_prev)


def overhead_phase4_ms(p: PacketTimes) -> int:
    """(t_settle - t_send) - source finality wait - target inclusion wait - target finality wait of the ack - source
    inclusion wait of the settle."""
    return ((p.t_settle - p.t_send) - (p.t_src_final - p.t_send) - (p.t_exec - p.t_exec_prev)
            - (p.t_ack_final - p.t_exec) - (p.t_settle - p.t_settle_prev))


PHASES = (("committed_to_final", "t_send", "t_src_final"), ("final_to_verified", "t_src_final", "t_verified"),
          ("verified_to_executed", "t_verified", "t_exec"), ("executed_to_ack_final", "t_exec", "t_ack_final"),
          ("ack_final_to_settled", "t_ack_final", "t_settle"))
"""Each phase's name and the two times it runs between."""


def phase4_split(seqs: Iterable[int], *, exec_h: Mapping[int, int], acked_h: Mapping[int, int],
                 settle_h: Mapping[int, int], dst_final: Mapping[int, int], relay_time: Mapping[int, int],
                 src_time: Mapping[int, int]) -> dict[str, float | None]:
    """Phase 4 in its two halves, means in seconds: the ack final on the target -> the relay's ``packet_acked`` block
    (its client learning the target's finality, the relayer's confirmation, a relay block), and that block -> the
    source's ``settle_packet`` block (the relayer reading the outcome and its certificate, the source's inclusion).
    Packets with any time missing are left out."""
    first: list[int] = []
    second: list[int] = []
    for s in seqs:
        try:
            t_final, t_acked, t_settle = dst_final[exec_h[s]], relay_time[acked_h[s]], src_time[settle_h[s]]
        except KeyError:
            continue
        first.append(t_acked - t_final)
        second.append(t_settle - t_acked)
    return {"mean_ack_final_to_confirmed_s": r2(statistics.fmean(first) / 1000) if first else None,
            "mean_confirmed_to_settled_s": r2(statistics.fmean(second) / 1000) if second else None}


def phase_ms(p: PacketTimes) -> dict[str, int]:
    return {name: getattr(p, b) - getattr(p, a) for name, a, b in PHASES}


def summarize(packets: Sequence[PacketTimes]) -> dict[str, Any]:
    """The overheads' p50/p95 and each phase's mean, in seconds (2 decimals), over ``packets``."""
    out: dict[str, Any] = {"phase_timed_packets": len(packets)}
    for name, fn in (("overhead_phase3", overhead_phase3_ms), ("overhead_phase4", overhead_phase4_ms)):
        p50, p95 = p50_p95([fn(p) / 1000 for p in packets])
        out[f"{name}_p50_s"], out[f"{name}_p95_s"] = r2(p50), r2(p95)
    phases = [phase_ms(p) for p in packets]
    for name, _, _ in PHASES:
        out[f"mean_{name}_s"] = r2(statistics.fmean(ph[name] for ph in phases) / 1000) if phases else None
    return out


def packet_times(seqs: Iterable[int], *, send_h: Mapping[int, int], verified_h: Mapping[int, int],
                 exec_h: Mapping[int, int], settle_h: Mapping[int, int], src_time: Mapping[int, int],
                 src_final: Mapping[int, int], relay_time: Mapping[int, int], dst_time: Mapping[int, int],
                 dst_final: Mapping[int, int]) -> list[PacketTimes]:
    """Join the per-packet event heights (sequence -> height on its chain) with the chains' block times and
    finality times (height -> ms, from :func:`final_times`). Packets with any time missing are left out."""
    out = []
    for s in seqs:
        try:
            hs, hv, he, hx = send_h[s], verified_h[s], exec_h[s], settle_h[s]
            out.append(PacketTimes(src_time[hs], src_final[hs], relay_time[hv], dst_time[he], dst_time[he - 1],
                                   dst_final[he], src_time[hx], src_time[hx - 1]))
        except KeyError:
            continue
    return out


# -- reading the chains ------------------------------------------------------------------------------------------


class ChainLog:
    """What the bench reads of one chain, incrementally by height ranges: block times, the last irreversible height
    after each block (DPoS: from its ``dpos/tracker`` state; PoC: height - depth; relay: the height itself), and the
    heights of the packet events of the benchmarked direction (sequence -> first height seen)."""

    def __init__(self, client: Any, kind: str, src: str, dst: str, types: Sequence[str]) -> None:
        self.client, self.kind, self.src, self.dst, self.types = client, kind, src, dst, types
        self.time_ms: dict[int, int] = {}
        self.lib_after: dict[int, int] = {}
        self.events: dict[str, dict[int, int]] = {t: {} for t in types}
        self.seen_wall: dict[str, dict[int, float]] = {t: {} for t in types}
        self.scanned = 0
        self.final_height = 0
        self.lib_unknown = 0
        """DPoS blocks whose state could not be read (their lib unknown: finality seen at a later block)."""

    async def try_scan(self) -> bool:
        """:meth:`scan`; False (and a line on stderr) when the node did not answer in time: a loaded node is
        asked again at the next poll instead of ending the run."""
        from protocol.errors import TransportError

        try:
            await self.scan()
        except TransportError as exc:
            print(f"{self.kind} node slow to answer ({exc}); reading it again", file=sys.stderr, flush=True)
            return False
        return True

    async def scan(self) -> None:
        st = await self.client.call("status")
        prev_final = self.final_height
        head, self.final_height = int(st["height"]), int(st["final_height"])
        # blocks above the last final height may have been replaced by a reorg since they were read (a DPoS fork
        # under load): read them again, or the events the new blocks re-include are never seen and the run waits
        # for packets that settled (an event keeps the height it was first seen at)
        self.scanned = min(self.scanned, prev_final)
        while self.scanned < head:
            start = self.scanned + 1
            hdrs = await self.client.call("getHeaders", {"from": start, "to": head})
            if not hdrs:
                return
            end = max(int(h["height"]) for h in hdrs)
            for h in hdrs:
                self.time_ms[int(h["height"])] = int(h["timestamp_ms"])
            now = time.time()
            for t in self.types:
                for ev in await self.client.call("getEvents", {"from": start, "to": end, "type": t}):
                    if ev.get("src", self.src) == self.src and ev.get("dst") == self.dst and ev.get("lane") == LANE:
                        seq = int(ev["sequence"])
                        if seq not in self.events[t]:
                            self.events[t][seq] = int(ev["height"])
                            self.seen_wall[t][seq] = now
            for b in range(start, end + 1):
                if self.kind == "dpos":
                    try:
                        r = await self.client.call("query", {"key": "dpos/tracker", "height": b})
                        self.lib_after[b] = int(json.loads(bytes.fromhex(r["value"]))["lib"])
                    except Exception:  # state pruned (the bench fell STATE_RETENTION blocks behind): lib unknown
                        self.lib_unknown += 1
                elif self.kind == "poc":
                    self.lib_after[b] = _poc_lib(self.time_ms, b)
                else:
                    self.lib_after[b] = b
            self.scanned = end

    def finality(self, heights: Iterable[int]) -> dict[int, int]:
        return final_times(heights, self.lib_after, self.time_ms)


def _poc_lib(time_ms: Mapping[int, int], b: int) -> int:
    """:func:`window_libs` of one block, with the devnet's PoC depth and window."""
    return window_libs({h: time_ms[h] for h in range(max(1, b - 200), b + 1) if h in time_ms}, POC_DEPTH,
                       POC_WINDOW_MS).get(b, 0)


# -- the devnet --------------------------------------------------------------------------------------------------


def _chain_table(chain: str, senders: Sequence[str]) -> dict[str, Any]:
    funded = {s: 10**12 for s in senders}
    if chain == DPOS:
        return {"id": DPOS, "kind": "dpos", "nodes": ["witness-a", "witness-b", "witness-c"], "block_interval_ms": 1000,
                "maintenance_interval_blocks": 10_000, "accounts": {"alice": 10**12, "operator": 0, **funded}}
    return {"id": POC, "kind": "poc", "nodes": ["farmer-a", "farmer-b"], "target_block_interval_ms": 1000,
            "confirmation_depth": POC_DEPTH, "accounts": {"carol": 10**9, "operator": 0, **funded},
            "light_client": {"finality_window_ms": POC_WINDOW_MS}}


def _start_relayer(cfg: Any, name: str) -> subprocess.Popen[bytes]:
    log = open(cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
    return spawn([sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(cfg.path), "--name", name],
                 stdout=log, stderr=subprocess.STDOUT)


def _rss_peak_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak RSS (``VmHWM``) or, with ``field="VmRSS"``, its RSS now, in MB (MiB)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def disk_per_packet(data_dir: Path, packets: int) -> dict[str, int]:
    """Bytes on disk per settled packet, per node of each chain (its SQLite database with its WAL: blocks, bodies) and
    per relayer (its database), averaged over the chain's nodes: ``{"relay": ..., "dpos-park": ..., "relayer": ..}``."""
    sizes: dict[str, list[int]] = {}
    for f in (data_dir / "db").glob("*.sqlite3"):
        chain = f.stem.rsplit("-", 2)[0] if f.stem.startswith(("dpos-park", "poc-park")) else f.stem.split("-", 1)[0]
        total = sum(g.stat().st_size for g in f.parent.glob(f.name + "*"))
        sizes.setdefault(chain, []).append(total)
    for f in (data_dir / "relayers").glob("*.sqlite3"):
        sizes.setdefault("relayer", []).append(sum(g.stat().st_size for g in f.parent.glob(f.name + "*")))
    return {chain: round(sum(v) / len(v) / max(1, packets)) for chain, v in sorted(sizes.items())}


def _report_stuck(cfg: Any, src: str, dst: str, stuck: list[int]) -> None:
    """On giving up: which packets are stuck, in which phase (read from the chains), and what each relayer
    last saw of the lane (its progress table: pending actions, oldest packet, last error)."""
    from relay.ops.packets import relayer_progress, show_packet

    print(f"gave up with {len(stuck)} packets not settled", file=sys.stderr)
    for seq in stuck[:20]:
        key = f"{src}/{dst}/{LANE}/{seq}"
        try:
            state = show_packet(cfg, key)["state"]
        except Exception as exc:  # a report on the way out must not hide the failure it reports
            state = f"unreadable ({exc})"
        print(f"  stuck {key}: {state}", file=sys.stderr)
    if len(stuck) > 20:
        print(f"  ... and {len(stuck) - 20} more", file=sys.stderr)
    for lp in relayer_progress(cfg):
        print(f"  {lp['relayer']} {lp['lane']}: pending {lp['pending']}, oldest {lp['oldest_packet']} for "
              f"{lp['oldest_pending_s']}s, last error: {lp['last_error']}", file=sys.stderr)


Background = Callable[[Any, asyncio.Event, asyncio.Event], Awaitable[dict[str, Any]]]
"""A load run beside the transfers: ``(deployment config, ready, stop) -> its figures``; it sets ``ready`` once at full
load (the transfers start then) and returns once ``stop`` is set."""


class Sender:
    """One source account submitting ``bridge.send`` in nonce order, its nonce kept locally (read again from the
    chain after a nonce refusal)."""

    def __init__(self, client: Any, chain: str, account: str, signer: Any) -> None:
        self.client, self.chain, self.account, self.signer = client, chain, account, signer
        self.nonce: int | None = None
        self.failed = 0

    async def _read_nonce(self) -> int:
        acct = await self.client.call("getAccount", {"name": self.account})
        return int(acct["nonce"]) + int(acct.get("pending", 0))

    async def send(self, args: dict[str, Any]) -> bool:
        from chains.common.tx import Tx
        from protocol.errors import NonceError

        for attempt in range(2):
            if self.nonce is None:
                self.nonce = await self._read_nonce()
            tx = Tx.signed(self.signer, self.chain, self.account, self.nonce, "bridge.send", args)
            try:
                await self.client.call("submitTx", {"tx": tx.to_json()})
                self.nonce += 1
                return True
            except NonceError:
                self.nonce = None
                if attempt:
                    break
            except Exception as exc:  # counted, and said once in a while: a refused transfer is a finding
                if self.failed < 5:
                    print(f"submit failed on {self.account}: {exc}", file=sys.stderr)
                self.nonce = None
                break
        self.failed += 1
        return False


async def _submit(senders: list[Sender], args: dict[str, Any], n: int, rate: float | None) -> tuple[int, float, float]:
    """Submit ``n`` transfers spread over ``senders``: all at once (``rate`` None) or the i-th at ``t0 + i/rate``.
    Returns (how many the node accepted, seconds from the first submission to the last, the largest delay of a
    submission behind its schedule in seconds)."""
    queues: list[asyncio.Queue[float | None]] = [asyncio.Queue() for _ in senders]
    accepted, lag = [0], [0.0]
    t0 = time.monotonic()

    async def worker(s: Sender, q: asyncio.Queue[float | None]) -> None:
        while (due := await q.get()) is not None:
            lag[0] = max(lag[0], time.monotonic() - due)
            ok = await s.send(args)  # awaited first: `accepted[0] += await ...` reads the count before the await
            accepted[0] += ok

    tasks = [asyncio.create_task(worker(s, q)) for s, q in zip(senders, queues, strict=True)]
    for i in range(n):
        due = t0 + (i / rate if rate else 0.0)
        if rate and (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        queues[i % len(queues)].put_nowait(due)
    for q in queues:
        q.put_nowait(None)
    await asyncio.gather(*tasks)
    return accepted[0], time.monotonic() - t0, lag[0] if rate else 0.0


async def run(src: str, dst: str, mode: str, n: int, root: Path, *, rate: float | None = None,
              n_senders: int = 4, relay_block_ms: int = 500, give_up_s: float = 900, rounds: int = 1,
              bar: Bar | None = None, pipeline: bool = True, engine: str = "builtin",
              relay_block_bytes: int | None = None,
              background: Background | None = None) -> dict[str, Any]:
    """``mode``: burst, rate or backlog (the module docs); ``n`` transfers (rate mode: rate x seconds), in ``rounds``
    loads of ``n / rounds``, each settled before the next is sent. ``bar``: the packets settled, out of ``n`` (on a
    terminal; else a line on stderr every 5 s). ``background`` (:data:`Background`): a load run beside the transfers
    (bench/spam.py's flood), started once the relayers run, the transfers sent once it is ready, stopped once every
    packet settled; what it returns is the result's ``background``."""
    if rounds < 1 or (rounds > 1 and mode == "backlog"):
        raise ValueError("rounds: at least 1, and only for a burst or a rate")
    from adapters.common.rpc import JsonRpcClient
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import account_key_path
    from tests.integration.harness import Devnet, free_port_block, wait_for

    bar = bar or Bar()
    senders_names = [f"sender{i}" for i in range(n_senders)]
    relayer_names = ["relayer-a"] if mode == "backlog" else ["relayer-a", "relayer-b"]
    d = Devnet(root, chains=[_chain_table(DPOS, senders_names if src == DPOS else []),
                             _chain_table(POC, senders_names if src == POC else [])],
               lanes=[{"lane": LANE, "a": DPOS, "b": POC}],
               relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                      "block_interval_ms": relay_block_ms, "engine": engine,
                      **({"max_block_bytes": relay_block_bytes} if relay_block_bytes is not None else {}),
                      **({"cometbft": {"base_port": free_port_block(12)}} if engine == "cometbft" else {})},
               relayers=relayer_names, relayer_options={"pipeline_proofs": pipeline})
    cfg = d.write()
    d.start_all()
    relayers: dict[str, subprocess.Popen[bytes]] = {}
    first_node = {c.id: c.nodes[0] for c in cfg.chains}
    # 30 s: on a loaded machine a node may take seconds to answer; a timed-out submitTx that still lands would be
    # miscounted as refused (and its nonce read again)
    clients = {c: JsonRpcClient(d.url(c, node), side=f"{c}/{node}", timeout_s=30)
               for c, node in ((DPOS, first_node[DPOS]), (POC, first_node[POC]), ("relay", "op-a"))}
    try:
        for c in clients.values():
            await c.__aenter__()
        src_log = ChainLog(clients[src], "dpos" if src == DPOS else "poc", src, dst, ["send_packet", "settle_packet"])
        dst_log = ChainLog(clients[dst], "dpos" if dst == DPOS else "poc", src, dst, ["write_ack"])
        relay_log = ChainLog(clients["relay"], "relay", src, dst, ["packet_verified", "packet_acked"])

        async def ready() -> bool:
            try:
                sts = [await c.call("status") for c in clients.values()]
            except Exception:
                return False
            return all(s["final_height"] >= 2 for s in sts)

        bar.update(description="devnet: starting the nodes")
        await wait_for("devnet ready", ready, 180, poll_s=0.5)
        if mode != "backlog":
            relayers.update({r: _start_relayer(cfg, r) for r in cfg.relayers})
            bar.update(description="devnet: starting the relayers")
            # started before the first transfer: a relayer's start-up is not the relay's overhead
            await wait_for("relayers running", lambda: _relayers_started(cfg, relayers), 120, poll_s=0.5)
        stop_background, background_ready = asyncio.Event(), asyncio.Event()
        bg_task = None
        if background is not None:
            bar.update(description="devnet: starting the background load")
            bg_task = asyncio.ensure_future(background(cfg, background_ready, stop_background))
            ready_or_failed = asyncio.ensure_future(background_ready.wait())
            await asyncio.wait({ready_or_failed, bg_task}, timeout=180, return_when=asyncio.FIRST_COMPLETED)
            if bg_task.done():
                bg_task.result()  # its exception, if it failed while starting
            if not background_ready.is_set():
                raise RuntimeError("the background load did not start within 180 s")
        senders = [Sender(clients[src], src, s, ed25519_signer(account_key_path(cfg, src, s))) for s in senders_names]
        bar.update(description=f"devnet: sending {n} transfers {src} -> {dst} ({mode})")
        rpc_before = await rpc_requests(d.url("relay", "op-a"))
        t0 = time.time()
        args = {"dst_chain": dst, "lane": LANE, "kind": "energy", "receiver": RECEIVER[dst], "denom": "kWh",
                "amount_wh": 1, "timeout_timestamp_ms": int((t0 + give_up_s + 3600) * 1000)}
        sent, settled = src_log.events["send_packet"], src_log.events["settle_packet"]
        last_print = [0.0]
        accepted = 0

        async def scan_all() -> bool:
            return await src_log.try_scan() and await dst_log.try_scan() and await relay_log.try_scan()

        async def progress() -> bool:
            if not await scan_all():
                return False
            bar.update(completed=len(settled), description=f"devnet: {len(sent)} committed, settled")
            if not bar.shown and time.monotonic() - last_print[0] >= 5:
                last_print[0] = time.monotonic()
                print(f"[{time.time() - t0:6.1f}s] committed {len(sent)}/{accepted}, "
                      f"verified {len(relay_log.events['packet_verified'])}, "
                      f"executed {len(dst_log.events['write_ack'])}, settled {len(settled)}/{accepted}",
                      file=sys.stderr, flush=True)
            # a submission whose answer timed out may still have been committed: wait for every commitment seen
            return len(settled) >= max(accepted, len(sent))

        submit_s, lag_s, per_round = 0.0, 0.0, -(-n // rounds)
        for r in range(rounds):  # each round through phase 4 before the next (bench/footprint.py)
            if r:
                await wait_for(f"round {r} of {rounds} through phase 4", progress, give_up_s, poll_s=1.0)
            got, secs, lag = await _submit(senders, args, min(per_round, n - r * per_round),
                                           rate if mode == "rate" else None)
            accepted, submit_s, lag_s = accepted + got, submit_s + secs, max(lag_s, lag)
        if accepted < n:
            print(f"{n - accepted} of {n} transfers refused at submission", file=sys.stderr)

        relayer_start = None
        if mode == "backlog":
            async def committed_final() -> bool:
                await src_log.try_scan()
                bar.update(description=f"devnet: backlog {len(sent)}/{accepted} committed")
                return len(sent) >= accepted and max(sent.values(), default=0) <= src_log.final_height

            await wait_for(f"{accepted} commitments final on {src}", committed_final, give_up_s, poll_s=1.0)
            relayer_start = time.time()
            relayers["relayer-a"] = _start_relayer(cfg, "relayer-a")

        try:
            await wait_for(f"{accepted} packets through phase 4", progress, give_up_s, poll_s=1.0)
        except AssertionError:
            await asyncio.to_thread(_report_stuck, cfg, src, dst, sorted(set(sent) - set(settled)))
            raise
        done = time.time()
        rpc_during = await rpc_requests(d.url("relay", "op-a")) - rpc_before
        stop_background.set()
        bg_out = await asyncio.wait_for(bg_task, 120) if bg_task is not None else None
        relayer_rss = max((_rss_peak_mb(p.pid) for p in relayers.values()), default=0.0)
        relayer_rss_now = max((_rss_peak_mb(p.pid, "VmRSS") for p in relayers.values()), default=0.0)
        relay_rss_now = _rss_peak_mb(d.procs[("relay", "op-a")].pid, "VmRSS")
        park_rss_now = {chain: round(_rss_peak_mb(d.procs[(chain, node)].pid, "VmRSS"), 1)
                        for chain, node in first_node.items() if (chain, node) in d.procs}
        # the last packets' ack blocks become final after their settle was seen: read the target a little further
        await wait_for("target finality of the last acks", _ack_final_seen(dst_log), 60, poll_s=1.0)
        await wait_for("a last read of the chains", scan_all, 60, poll_s=1.0)

        seen_settle = src_log.seen_wall["settle_packet"]
        latencies = [seen_settle[s] - src_log.time_ms[h] / 1000 for s, h in sent.items() if s in seen_settle]
        chain_lat = [(src_log.time_ms[settled[s]] - src_log.time_ms[h]) / 1000 for s, h in sent.items() if s in settled]
        pts = packet_times(sent, send_h=sent, verified_h=relay_log.events["packet_verified"],
                           exec_h=dst_log.events["write_ack"], settle_h=settled, src_time=src_log.time_ms,
                           src_final=src_log.finality(sent.values()), relay_time=relay_log.time_ms,
                           dst_time=dst_log.time_ms, dst_final=dst_log.finality(dst_log.events["write_ack"].values()))
        escrow = (await clients[src].call("query", {"key": "escrow/kWh"}))["value"]
        supply = (await clients[dst].call("query", {"key": f"supply/{LANE}/{src}/kWh"}))["value"]
        failed = noops = 0
        for c in clients.values():
            head = (await c.call("status"))["height"]
            for h in range(1, head + 1):
                results = (await c.call("getBlock", {"height": h}))["tx_results"]
                failed += sum(1 for r in results if not r["ok"])
                noops += sum(1 for r in results if r.get("redundant"))
        e = int(bytes.fromhex(escrow).decode()) if escrow else 0
        v = int(bytes.fromhex(supply).decode()) if supply else 0
        lat50, lat95 = p50_p95(latencies)
        cl50, cl95 = p50_p95(chain_lat)
        out: dict[str, Any] = {
            "pair": f"{src}:{dst}", "mode": mode, "transfers": n, "accepted": accepted,
            "submit_s": round(submit_s, 1), "submitted_per_s": round(accepted / submit_s, 1) if submit_s else None,
            "completed": len(settled), "seconds": round(done - t0, 1),
            "throughput_per_s": round(len(settled) / (done - t0), 2),
            "latency_p50_s": r2(lat50), "latency_p95_s": r2(lat95),
            "chain_latency_p50_s": r2(cl50), "chain_latency_p95_s": r2(cl95),
            **summarize(pts),
            **phase4_split(settled, exec_h=dst_log.events["write_ack"], acked_h=relay_log.events["packet_acked"],
                           settle_h=settled, dst_final=dst_log.finality(dst_log.events["write_ack"].values()),
                           relay_time=relay_log.time_ms, src_time=src_log.time_ms),
            # every accepted transfer (1 Wh) escrowed once on the source and minted once on the target; the send
            # events the bench saw may be fewer: a block it read at the head can be replaced by a DPoS reorg
            "committed": len(sent), "supply_conserved": e == v == max(accepted, len(sent)), "escrow_wh": e,
            "vouchers_wh": v,
            "redundant_relays_in_blocks": failed, "redundant_noops_in_blocks": noops,
            "lib_unknown_blocks": src_log.lib_unknown + dst_log.lib_unknown,
            "relay_node_peak_rss_mb": round(_rss_peak_mb(d.procs[("relay", "op-a")].pid), 1),
            "relayer_peak_rss_mb": round(relayer_rss, 1),
            "relay_node_rss_mb": round(relay_rss_now, 1), "relayer_rss_mb": round(relayer_rss_now, 1),
            "park_node_rss_mb": park_rss_now,
            "disk_bytes_per_packet": disk_per_packet(cfg.data_dir, len(settled)),
            "relay_block_ms": relay_block_ms, "relay_block_bytes": cfg.relay_max_block_bytes, "senders": n_senders,
            "pipeline_proofs": pipeline,
            "engine": engine, "relay_block_interval_p50_ms": block_interval_ms(relay_log.time_ms, t0, done),
            "relay_rpc_requests_per_s": round(rpc_during / (done - t0), 1),
        }
        if bg_out is not None:
            out["background"] = bg_out
        out["steady_settle_per_s"] = steady_rate([src_log.time_ms[h] / 1000 for h in settled.values()])
        if mode == "rate":
            out["rate_per_s"], out["max_submit_lag_s"] = rate, round(lag_s, 2)
        if relayer_start is not None:
            last_settle = max(src_log.time_ms[h] for h in settled.values()) / 1000
            out["backlog_settle_s"] = round(done - relayer_start, 1)
            out["backlog_settle_chain_s"] = round(last_settle - relayer_start, 1)
            out["backlog_per_s"] = round(len(settled) / (done - relayer_start), 1)
        return out
    finally:
        try:
            for c in clients.values():
                await c.__aexit__(None, None, None)
            for p in relayers.values():
                p.terminate()
            for p in relayers.values():
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:  # a starved or stuck relayer must not keep the nodes running
                    p.kill()
                    p.wait()
        finally:
            d.stop_all()


async def _relayers_started(cfg: Any, relayers: Mapping[str, subprocess.Popen[bytes]]) -> bool:
    """Every relayer of ``relayers`` logged that it started (its parks and paths are set up)."""
    for name, p in relayers.items():
        if p.poll() is not None:
            raise RuntimeError(f"relayer {name} exited with {p.returncode} (its log: {cfg.data_dir}/logs)")
        log = cfg.data_dir / "logs" / f"relayer-{name}.log"
        if f"relayer {name} started" not in log.read_text(errors="replace"):
            return False
    return True


def _ack_final_seen(dst_log: ChainLog) -> Any:
    async def check() -> bool:
        await dst_log.try_scan()
        return max(dst_log.events["write_ack"].values(), default=0) <= max(dst_log.lib_after.values(), default=-1)
    return check


async def rpc_requests(url: str) -> int:
    """JSON-RPC requests a node answered so far (its ``/metrics``: ``parkrelay_rpc_requests_total``, every method),
    over ``POST /rpc`` and ``/ws`` alike."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics",
                                                               timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = await r.text()
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("parkrelay_rpc_requests_total{")))


def block_interval_ms(time_ms: Mapping[int, int], t0_s: float, t1_s: float) -> float | None:
    """The median time between consecutive blocks of a chain (``time_ms``: height -> block time) made from ``t0_s``
    to ``t1_s``; None if fewer than two."""
    hs = sorted(h for h, t in time_ms.items() if t0_s * 1000 <= t <= t1_s * 1000)
    gaps = [time_ms[b] - time_ms[a] for a, b in itertools.pairwise(hs) if b == a + 1]
    return float(statistics.median(gaps)) if gaps else None


ENGINE_RATIOS = ("throughput_per_s", "steady_settle_per_s", "relay_block_interval_p50_ms", "latency_p50_s")
"""The figures ``--engine both`` divides (CometBFT's over the built-in engine's), with the overhead medians."""


def compare_engines(builtin: dict[str, Any], comet: dict[str, Any]) -> dict[str, Any]:
    """``--engine both``: each run's figures and CometBFT's over the built-in engine's for :data:`ENGINE_RATIOS` and
    every ``overhead_*_p50_s`` both have."""
    keys = [*ENGINE_RATIOS, *sorted(k for k in builtin if k.startswith("overhead_") and k.endswith("_p50_s"))]
    ratios = {k: r2(comet[k] / builtin[k]) for k in keys
              if isinstance(builtin.get(k), int | float) and isinstance(comet.get(k), int | float) and builtin[k]}
    return {"builtin": builtin, "cometbft": comet, "cometbft_over_builtin": ratios,
            "supply_conserved": bool(builtin.get("supply_conserved") and comet.get("supply_conserved"))}


def parse_pair(text: str) -> tuple[str, str]:
    """``SRC:DST`` with both in dpos, poc, eth (or ethereum), fabric and different -> the two chain ids; ValueError
    with the reason."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"--pair is SRC:DST, got {text!r}")
    for p in parts:
        if p not in PARKS:
            raise ValueError(f"--pair {text}: {p!r} is not one of {', '.join(PARKS)}")
    if PARKS[parts[0]] == PARKS[parts[1]]:
        raise ValueError(f"--pair {text}: source and target must differ")
    return PARKS[parts[0]], PARKS[parts[1]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="dpos:poc",
                    help="SRC:DST, each dpos, poc, eth or fabric. Default dpos:poc")
    load = ap.add_mutually_exclusive_group()
    load.add_argument("--transfers", type=int, help="a burst of N transfers, all submitted at once (default 1000)")
    load.add_argument("--rate", type=float, help="open loop: R transfers per second for --seconds")
    load.add_argument("--backlog", type=int, help="N packets committed with no relayer, then one relayer started")
    ap.add_argument("--seconds", type=float, default=30, help="how long --rate submits. Default 30")
    ap.add_argument("--senders", type=int,
                    help="source accounts submitting in parallel. Default 4 (8 from an Ethereum or Fabric park)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, databases)")
    ap.add_argument("--give-up-s", type=float, default=900,
                    help="stop waiting after this many seconds and name the stuck packets. Default 900")
    ap.add_argument("--no-pipeline", action="store_true",
                    help="relayers wait for a client update's block before proving at its height ([relayers] "
                         "pipeline_proofs = false), to compare")
    ap.add_argument("--relay-block-ms", type=int, default=500,
                    help="relay chain block interval, ms (park blocks stay at 1 s). Default 500, the devnet's")
    ap.add_argument("--relay-block-bytes", type=int,
                    help="the relay genesis's block.max_bytes ([relay] max_block_bytes). Default: the config's, 3 MiB")
    ap.add_argument("--engine", choices=("builtin", "cometbft", "both"), default="builtin",
                    help="the relay chain's consensus ([relay] engine); both: the same load on each, one after the "
                         "other, with CometBFT's figures over the built-in engine's. Default builtin")
    args = ap.parse_args()
    try:
        src, dst = parse_pair(args.pair)
    except ValueError as exc:
        ap.error(str(exc))
    others = not (src in PY_PARKS and dst in PY_PARKS)
    if others and args.engine != "builtin":
        ap.error(f"--pair {args.pair}: --engine is measured on the DPoS and PoC pairs")
    if others and (args.rate is not None or args.backlog is not None):
        ap.error(f"--pair {args.pair}: a pair with an Ethereum or Fabric park runs --transfers N only (the park "
                 "alone, then the backlog, then relayed: bench/devnet_parks.py)")
    senders = args.senders if args.senders is not None else 8 if others else 4
    if args.rate is not None:
        mode, n = "rate", round(args.rate * args.seconds)
    elif args.backlog is not None:
        mode, n = "backlog", args.backlog
    else:
        mode, n = "burst", args.transfers if args.transfers is not None else 200 if others else 1000
    if n < 1 or senders < 1:
        ap.error("the load must be at least one transfer, from at least one sender")

    def on_term(signum: int, frame: object) -> None:
        # `timeout` and CI send SIGTERM: unwind through run()'s finally, which stops every node it started
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with run_dir(args.keep, "parkrelay-bench-") as root, \
            progress_bar("devnet", total=n, json_mode=args.json) as bar:
        if others:
            from bench.devnet_parks import run_parks

            out = asyncio.run(run_parks(src, dst, n, root, n_senders=senders, give_up_s=args.give_up_s, bar=bar,
                                        py_table=_chain_table, start_relayer=_start_relayer, rss_mb=_rss_peak_mb))
        else:
            runs = {}
            for engine in ("builtin", "cometbft") if args.engine == "both" else (args.engine,):
                (root / engine).mkdir(parents=True, exist_ok=True)
                runs[engine] = asyncio.run(run(src, dst, mode, n, root / engine, rate=args.rate, n_senders=senders,
                                               relay_block_ms=args.relay_block_ms, give_up_s=args.give_up_s,
                                               bar=bar, pipeline=not args.no_pipeline, engine=engine,
                                               relay_block_bytes=args.relay_block_bytes))
            out = compare_engines(runs["builtin"], runs["cometbft"]) if len(runs) == 2 else runs[args.engine]
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
