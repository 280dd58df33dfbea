"""Transfers through all four phases on a real devnet (issue #3's benchmark).

    python bench/devnet.py [--transfers 1000] [--json] [--keep DIR]

Starts a devnet of real processes in a temp dir (3 DPoS witnesses at 1 s blocks, 2 PoC farmers, a
4-validator relay chain, 2 relayers), submits ``--transfers`` energy transfers DPoS -> PoC at once
(one account, queued nonces), and waits until every packet is settled on its source (phase 4).
Prints:
  throughput_per_s            packets completed through phase 4 per second (first send to last settle)
  latency_p50_s, latency_p95_s  per packet: its send's block time to its settlement being observed
  completed, seconds          how many completed, and the wall time for all of them
  supply_conserved            escrowed kWh on DPoS == vouchers on PoC, after the run
  redundant_relays_in_blocks  failed transactions that reached a block on any chain (two relayers race)
  relay_node_peak_rss_mb      peak RSS of relay validator op-a (VmHWM)
Targets (issue #3): p50 <= 6 s with 1 s blocks, all 1,000 through phase 4 within 120 s, relay RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.common.park import ParkTarget
from bench.common import emit, run_dir
from chains.common.procs import spawn
from chains.common.progress import Bar
from chains.common.progress import bar as progress_bar
from relay.ops.keys import ed25519_signer
from relay.ops.layout import account_key_path
from tests.integration.harness import Devnet, free_port_block, status, wait_for

DPOS, POC, LANE = "dpos-park", "poc-park", "lane-0"


def _start_relayer(cfg: Any, name: str) -> subprocess.Popen[bytes]:
    log = open(cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
    return spawn([sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(cfg.path), "--name", name],
                 stdout=log, stderr=subprocess.STDOUT)


def _rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _report_stuck(cfg: Any, stuck: list[int]) -> None:
    """On giving up: which packets are stuck, in which phase (read from the chains), and what each relayer
    last saw of the lane (its progress table: pending actions, oldest packet, last error)."""
    from relay.ops.packets import relayer_progress, show_packet

    print(f"gave up with {len(stuck)} packets not settled", file=sys.stderr)
    for seq in stuck[:20]:
        key = f"{DPOS}/{POC}/{LANE}/{seq}"
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


async def run(n: int, root: Path, relay_block_ms: int = 1000, give_up_s: float = 900,
              bar: Bar | None = None) -> dict[str, Any]:
    """``bar``: the packets settled, out of ``n`` (on a terminal; else a line on stderr every 5 s)."""
    bar = bar or Bar()
    d = Devnet(root, chains=[
        {"id": DPOS, "kind": "dpos", "nodes": ["witness-a", "witness-b", "witness-c"], "block_interval_ms": 1000,
         "maintenance_interval_blocks": 10_000, "accounts": {"alice": 10**12, "operator": 0}},
        {"id": POC, "kind": "poc", "nodes": ["farmer-a", "farmer-b"], "target_block_interval_ms": 1000,
         "confirmation_depth": 3, "accounts": {"carol": 10**9, "operator": 0},
         "light_client": {"finality_window_ms": 20_000}},  # as deploy/devnet.toml
    ], lanes=[{"lane": LANE, "a": DPOS, "b": POC}],
        relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
               "block_interval_ms": relay_block_ms},
        relayers=["relayer-a", "relayer-b"])
    cfg = d.write()
    d.start_all()
    relayers = []
    try:
        async def ready() -> bool:
            sts = [await status(d.url(DPOS, "witness-a")), await status(d.url(POC, "farmer-a")),
                   await status(cfg.relay_url("op-a"))]
            return all(s is not None and s["final_height"] >= 2 for s in sts)

        bar.update(description="devnet: starting the nodes")
        await wait_for("devnet ready", ready, 180)
        bar.update(description=f"devnet: sending {n} transfers")
        relayers += [_start_relayer(cfg, r) for r in cfg.relayers]
        alice = ed25519_signer(account_key_path(cfg, DPOS, "alice"))
        client = d.client(DPOS, "witness-a")
        async with client:
            tgt = ParkTarget(client, DPOS, "alice", alice)
            t0 = time.time()
            timeout = int((t0 + 900) * 1000)
            for _ in range(n):
                await tgt.submit("bridge.send", {"dst_chain": POC, "lane": LANE, "kind": "energy", "receiver": "carol",
                                                 "denom": "kWh", "amount_wh": 1, "timeout_timestamp_ms": timeout})
            submitted_s = time.time() - t0
            sent_at: dict[int, int] = {}
            settled_at: dict[int, float] = {}

            last_print = [0.0]
            scanned = [0]

            async def progress() -> bool:
                head = (await client.call("status"))["height"]
                start = scanned[0] + 1
                for ev in await client.call("getEvents", {"from": start, "to": head, "type": "send_packet"}):
                    sent_at.setdefault(ev["sequence"], ev["height"])
                for ev in await client.call("getEvents", {"from": start, "to": head, "type": "settle_packet"}):
                    seq = int(ev.get("sequence", 0))
                    settled_at.setdefault(seq, time.time())
                scanned[0] = head
                bar.update(completed=len(settled_at), description=f"devnet: {len(sent_at)} committed, settled")
                if not bar.shown and time.monotonic() - last_print[0] >= 5:
                    last_print[0] = time.monotonic()
                    print(f"[{time.time() - t0:6.1f}s] committed {len(sent_at)}/{n}, settled {len(settled_at)}/{n}",
                          file=sys.stderr, flush=True)
                return len(settled_at) >= n

            try:
                await wait_for(f"{n} packets through phase 4", progress, give_up_s, poll_s=1.0)
            except AssertionError:
                await asyncio.to_thread(_report_stuck, cfg, sorted(set(range(1, n + 1)) - set(settled_at)))
                raise
            done_s = time.time() - t0
            # block times of the sends
            times = {}
            for h in sent_at.values():
                if h not in times:
                    times[h] = (await client.call("getHeader", {"height": h}))["timestamp_ms"] / 1000
            latencies = sorted(settled_at[s] - times[sent_at[s]] for s in settled_at if s in sent_at)
            escrow = (await client.call("query", {"key": "escrow/kWh"}))["value"]
        async with d.client(POC, "farmer-a") as poc:
            supply = (await poc.call("query", {"key": f"supply/{LANE}/{DPOS}/kWh"}))["value"]
        failed = 0
        for chain, node in ((DPOS, "witness-a"), (POC, "farmer-a"), ("relay", "op-a")):
            async with d.client(chain, node) as c:
                head = (await c.call("status"))["height"]
                for h in range(1, head + 1):
                    failed += sum(1 for r in (await c.call("getBlock", {"height": h}))["tx_results"] if not r["ok"])
        e = int(bytes.fromhex(escrow).decode()) if escrow else 0
        v = int(bytes.fromhex(supply).decode()) if supply else 0
        return {
            "transfers": n, "completed": len(settled_at), "submit_s": round(submitted_s, 1),
            "seconds": round(done_s, 1), "throughput_per_s": round(len(settled_at) / done_s, 2),
            "latency_p50_s": round(statistics.median(latencies), 2),
            "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
            "supply_conserved": e == v == n, "redundant_relays_in_blocks": failed,
            "relay_node_peak_rss_mb": round(_rss_peak_mb(d.procs[("relay", "op-a")].pid), 1),
            "relay_block_ms": relay_block_ms,
        }
    finally:
        for p in relayers:
            p.terminate()
            p.wait(timeout=20)
        d.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfers", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, databases)")
    ap.add_argument("--give-up-s", type=float, default=900,
                    help="stop waiting after this many seconds and name the stuck packets. Default 900")
    ap.add_argument("--relay-block-ms", type=int, default=1000,
                    help="relay chain block interval, ms (park blocks stay at 1 s). Default 1000")
    args = ap.parse_args()

    def on_term(signum: int, frame: object) -> None:
        # `timeout` and CI send SIGTERM: unwind through run()'s finally, which stops every node it started
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    with run_dir(args.keep, "parkrelay-bench-") as root, \
            progress_bar("devnet", total=args.transfers, json_mode=args.json) as bar:
        out = asyncio.run(run(args.transfers, root, args.relay_block_ms, args.give_up_s, bar))
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
