"""The state commitment's cost per write, per block root and per read, on one core.

    python bench/state_tree.py [--json] [--keys 100000] [--block 200] [--blocks 50] [--runs 5]

A tree of ``--keys`` records (a node's state after a while) takes ``--blocks`` blocks of ``--block`` writes each, as a
node's block flush makes them (:meth:`SparseMerkleTree.set_many`, then the root), the trees of every block kept (a
node retains its recent states). Three kinds of block, each timed on its own:

- ``packet_writes``: a DPoS park's sends: a 32-byte commitment and the packet as hex text (1,536 bytes, which the
  tree keeps compressed) per send;
- ``hash_writes``: 32-byte values only (the relay's ``relay/verified`` records in phase 2);
- ``reads``: ``get`` of keys present and absent (a replay check reads two absent keys per packet).

Prints the median over ``--runs`` of microseconds per write (per read for ``reads``); ``--json`` prints one object.
Issue 16: a large value's compression used zlib's default 256 KiB deflate state, allocated and returned to the
system on every call (``brk`` both ways, pages faulted in again); this bench shows what each write costs.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chains.common.bridge import packet_path
from chains.common.heap import tune_heap
from protocol.codec import encode_energy, encode_packet, packet_commitment
from protocol.paths import commitment_path
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId, EnergyPayload, LaneId, Packet, PacketKind

T0 = 1_700_000_000_000


def _packet(seq: int) -> Packet:
    return Packet(ChainId("dpos-park"), ChainId("poc-park"), LaneId("lane-0"), seq, PacketKind.ENERGY,
                  encode_energy(EnergyPayload("kWh", 1 + seq % 1000)), f"user-{seq % 97}", f"user-{seq % 89}",
                  T0 + 3_600_000)


def _blocks(kind: str, n_blocks: int, block: int) -> list[list[tuple[bytes, bytes]]]:
    out = []
    for b in range(n_blocks):
        items: list[tuple[bytes, bytes]] = []
        for i in range(block):
            seq = 1 + b * block + i
            if kind == "packet_writes":
                p = _packet(seq)
                items += [(commitment_path(p.dst_chain, p.lane, seq), packet_commitment(p)),
                          (packet_path(p.dst_chain, p.lane, seq), encode_packet(p).hex().encode())]
            else:
                items.append((f"relay/verified/dpos-park/poc-park/lane-0/{seq}".encode(), seq.to_bytes(32, "big")))
        out.append(items)
    return out


def _time_writes(base: SparseMerkleTree, blocks: list[list[tuple[bytes, bytes]]]) -> float:
    """Microseconds per write: each block's writes and its root, every tree kept."""
    kept = [base]
    t0 = time.perf_counter()
    for items in blocks:
        tree = kept[-1].set_many(items)
        _ = tree.root
        kept.append(tree)
    return (time.perf_counter() - t0) / sum(map(len, blocks)) * 1e6


def _time_reads(tree: SparseMerkleTree, keys: list[bytes]) -> float:
    get = tree.get
    t0 = time.perf_counter()
    for key in keys:
        get(key)
    return (time.perf_counter() - t0) / len(keys) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--block", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    tune_heap()  # glibc's thresholds as a node sets them (relay.ops.nodes)
    base = SparseMerkleTree.from_items((f"balances/acct-{i}/kWh".encode(), str(i).encode()) for i in range(args.keys))
    _ = base.root
    work: dict[str, Callable[[], float]] = {}
    for kind in ("packet_writes", "hash_writes"):
        blocks = _blocks(kind, args.blocks, args.block)
        work[kind] = lambda blocks=blocks: _time_writes(base, blocks)
    read_keys = [f"balances/acct-{i}/kWh".encode() for i in range(0, args.keys, max(1, args.keys // 5000))]
    read_keys += [f"relay/outcome/x/{i}".encode() for i in range(len(read_keys))]
    work["reads"] = lambda: _time_reads(base, read_keys)
    gc.collect()
    gc.freeze()  # the base tree is long-lived, as a node's state is
    runs: dict[str, list[float]] = {k: [] for k in work}
    for _ in range(args.runs):
        for kind, fn in work.items():
            runs[kind].append(fn())
            gc.collect()
    result: dict[str, object] = {f"{k}_us": round(statistics.median(v), 2) for k, v in runs.items()}
    result.update({"keys": args.keys, "block": args.block, "blocks": args.blocks, "runs": args.runs,
                   "all_runs_us": {k: [round(x, 2) for x in v] for k, v in runs.items()}})
    if args.json:
        print(json.dumps(result))
    else:
        for k in work:
            print(f"{k:14} {result[f'{k}_us']:8.2f} us each (median of {args.runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
