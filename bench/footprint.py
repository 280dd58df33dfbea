"""Memory and disk after many settled packets (issue #16's footprint target): a long run of ``bench/devnet.py``,
reporting what a node and a relayer hold once every packet settled.

    python bench/footprint.py [--packets 100000] [--round 5000] [--pair dpos:poc] [--json] [--keep DIR]

Sends ``--packets`` energy transfers through all four phases with two relayers, in bursts of ``--round``, each settled
before the next is sent: memory then measures what settled packets leave behind, not a backlog (an open-loop rate the
2-core devnet cannot sustain for 20 minutes leaves tens of thousands of packets in flight, and their records in
memory). Prints:

  relay_node_rss_mb, relay_node_peak_rss_mb   relay validator op-a: RSS once every packet settled, and its peak
  relayer_rss_mb, relayer_peak_rss_mb         the same for the larger of the two relayers
  park_node_rss_mb                            per park, its first node's RSS once every packet settled
  disk_bytes_per_packet                       per chain, one node's SQLite database (blocks with their bodies, and
                                              the WAL) over the packets settled; ``relayer``: one relayer's database
  completed, seconds, throughput_per_s, supply_conserved, redundant_relays_in_blocks   as bench/devnet.py

Targets (issue #16): relay validator RSS <= 200 MB and relayer RSS <= 150 MB after 100,000 settled packets.

What stays in memory, by design: a node's state tree (its live records; a settled packet leaves its receipt on the
target and its outcome on the relay, which replay protection needs), the trees of the last ``STATE_RETENTION`` (128)
heights for proofs (a relay validator: ``RELAY_STATE_RETENTION``, 32: relay state is proven at the head), and every
block's header; block bodies older than 16 heights (a relay validator: 4) are read back from SQLite. A relayer forgets
a packet once it settled.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, run_dir
from bench.devnet import parse_pair, run
from chains.common.progress import bar as progress_bar

TARGETS = {"relay_node_rss_mb": 200, "relayer_rss_mb": 150}
KEYS = ("pair", "completed", "seconds", "throughput_per_s", "relay_node_rss_mb", "relay_node_peak_rss_mb",
        "relayer_rss_mb", "relayer_peak_rss_mb", "park_node_rss_mb", "disk_bytes_per_packet", "supply_conserved",
        "accepted", "committed", "escrow_wh", "vouchers_wh", "redundant_relays_in_blocks", "latency_p50_s",
        "latency_p95_s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=100_000, help="transfers to settle. Default 100000")
    ap.add_argument("--round", type=int, default=5000, help="transfers per burst. Default 5000")
    ap.add_argument("--pair", default="dpos:poc", help="SRC:DST, each dpos or poc. Default dpos:poc")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, databases)")
    args = ap.parse_args()
    try:
        src, dst = parse_pair(args.pair)
    except ValueError as exc:
        ap.error(str(exc))
    if args.packets < 1 or args.round < 1:
        ap.error("--packets and --round must be at least 1")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwind through run()'s finally: every node it started stops

    signal.signal(signal.SIGTERM, on_term)
    rounds = -(-args.packets // args.round)
    with run_dir(args.keep, "parkrelay-footprint-") as root, \
            progress_bar("footprint", total=args.packets, json_mode=args.json) as bar:
        out = asyncio.run(run(src, dst, "burst", args.packets, root, rounds=rounds, bar=bar))
    result = {k: out.get(k) for k in KEYS}
    result["targets"] = {k: {"target_mb": v, "met": (out.get(k) or 0) <= v} for k, v in TARGETS.items()}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
