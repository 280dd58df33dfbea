"""bench/devnet.py's arithmetic: finality times from block times, the relay overheads, the phase means, percentiles.

Inputs are built by hand, so a change to a definition (the module docs of bench/devnet.py) fails here."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from bench.devnet import (
    ChainLog,
    PacketTimes,
    _submit,
    block_interval_ms,
    compare_engines,
    depth_libs,
    final_times,
    overhead_phase3_ms,
    overhead_phase4_ms,
    p50_p95,
    packet_times,
    parse_pair,
    phase_ms,
    summarize,
    window_libs,
)

# a packet: sent at 10.0 s, final 12.0, verified 12.4, executed 13.0 (target block before at 12.5), its ack final
# at 15.0, settled 16.0 (source block before at 15.5)
P = PacketTimes(t_send=10_000, t_src_final=12_000, t_verified=12_400, t_exec=13_000, t_exec_prev=12_500,
                t_ack_final=15_000, t_settle=16_000, t_settle_prev=15_500)


def test_overhead_phase3_takes_out_source_finality_and_target_inclusion() -> None:
    # (13.0 - 10.0) - (12.0 - 10.0) - (13.0 - 12.5) = 0.5
    assert overhead_phase3_ms(P) == 500


def test_overhead_phase4_takes_out_both_finalities_and_both_inclusions() -> None:
    # (16.0 - 10.0) - 2.0 - 0.5 - (15.0 - 13.0) - (16.0 - 15.5) = 1.0
    assert overhead_phase4_ms(P) == 1000


def test_overheads_are_zero_when_the_relay_adds_nothing() -> None:
    # verified at finality, executed in the first target block after, settled in the first source block after the
    # ack is final: only the parks' own waits
    p = PacketTimes(t_send=0, t_src_final=3000, t_verified=3000, t_exec=4000, t_exec_prev=3000, t_ack_final=7000,
                    t_settle=8000, t_settle_prev=7000)
    assert overhead_phase3_ms(p) == 0
    assert overhead_phase4_ms(p) == 0


def test_phase_times_chain_from_send_to_settle() -> None:
    ph = phase_ms(P)
    assert ph == {"committed_to_final": 2000, "final_to_verified": 400, "verified_to_executed": 600,
                  "executed_to_ack_final": 2000, "ack_final_to_settled": 1000}
    assert sum(ph.values()) == P.t_settle - P.t_send


def test_final_times_dpos_first_block_whose_lib_reaches_the_height() -> None:
    time_ms = {h: 1000 * h for h in range(1, 11)}
    # lib after each block: irreversible height lags by 2, jumps at 7
    lib = {1: 0, 2: 0, 3: 1, 4: 2, 5: 3, 6: 3, 7: 5, 8: 6, 9: 7, 10: 8}
    out = final_times([1, 4, 4, 5, 8, 9], lib, time_ms)
    assert out == {1: 3000, 4: 7000, 5: 7000, 8: 10_000}  # 4 waits for the jump at 7; 9 never final


def test_final_times_running_max_and_missing_blocks() -> None:
    # block 5's lib unknown (pruned state: absent), block 6's lower than 4's: a height once final stays final
    time_ms = {h: 1000 * h for h in range(1, 8)}
    lib = {3: 1, 4: 3, 6: 2, 7: 4}
    assert final_times([2, 3, 4], lib, time_ms) == {2: 4000, 3: 4000, 4: 7000}


def test_final_times_poc_depth() -> None:
    time_ms = {h: 1100 * h for h in range(1, 11)}
    assert depth_libs([4, 5], 3) == {4: 1, 5: 2}
    out = final_times([2, 5, 8], depth_libs(time_ms, 3), time_ms)
    assert out == {2: time_ms[5], 5: time_ms[8]}


def test_final_times_poc_depth_and_window() -> None:
    """SPEC §8.6: depth blocks on top AND the window since the header's own time; whichever comes later."""
    time_ms = {h: 1000 * h for h in range(1, 31)}
    assert window_libs(time_ms, 3, 0) == depth_libs(time_ms, 3)
    libs = window_libs(time_ms, 3, 5000)
    assert libs[4] == 0 and libs[9] == 4 and libs[10] == 5  # the window (5 s), not the depth (3 blocks), decides
    assert final_times([2, 5], libs, time_ms) == {2: 7000, 5: 10_000}
    slow = {h: 10_000 * h for h in range(1, 11)}  # 10 s blocks: the depth decides
    assert final_times([2], window_libs(slow, 3, 5000), slow) == {2: slow[5]}
    gap = {1: 1000, 2: 2000, 4: 9000, 5: 10_000}  # height 3's time unknown: not taken as final
    assert window_libs(gap, 1, 0) == {1: 0, 2: 1, 4: 2, 5: 4}


def test_p50_p95() -> None:
    vals = [float(x) for x in range(100, 0, -1)]  # 1..100, unsorted
    assert p50_p95(vals) == (50.5, 95.0)
    assert p50_p95([3.0]) == (3.0, 3.0)
    assert all(math.isnan(x) for x in p50_p95([]))


def test_packet_times_joins_heights_and_times() -> None:
    src_time = {1: 10_000, 2: 11_000, 5: 15_500, 6: 16_000}
    dst_time = {7: 12_500, 8: 13_000}
    pts = packet_times([1, 2], send_h={1: 1, 2: 2}, verified_h={1: 3}, exec_h={1: 8}, settle_h={1: 6},
                       src_time=src_time, src_final={1: 12_000}, relay_time={3: 12_400}, dst_time=dst_time,
                       dst_final={8: 15_000})
    assert pts == [P]  # packet 2 has no verify/exec/settle yet: left out


def test_summarize() -> None:
    q = PacketTimes(t_send=0, t_src_final=3000, t_verified=3000, t_exec=4000, t_exec_prev=3000, t_ack_final=7000,
                    t_settle=8000, t_settle_prev=7000)
    s = summarize([P, q, P])
    assert s["phase_timed_packets"] == 3
    assert (s["overhead_phase3_p50_s"], s["overhead_phase3_p95_s"]) == (0.5, 0.5)
    assert (s["overhead_phase4_p50_s"], s["overhead_phase4_p95_s"]) == (1.0, 1.0)
    assert s["mean_committed_to_final_s"] == round((2 + 3 + 2) / 3, 2)
    assert s["mean_final_to_verified_s"] == round(0.8 / 3, 2)
    assert s["mean_verified_to_executed_s"] == round((0.6 + 1 + 0.6) / 3, 2)
    assert s["mean_executed_to_ack_final_s"] == round((2 + 3 + 2) / 3, 2)
    assert s["mean_ack_final_to_settled_s"] == 1.0
    assert summarize([])["overhead_phase3_p50_s"] is None


def test_parse_pair() -> None:
    assert parse_pair("dpos:poc") == ("dpos-park", "poc-park")
    assert parse_pair("poc:dpos") == ("poc-park", "dpos-park")
    assert parse_pair("eth:fabric") == ("eth-park", "fabric-park")
    assert parse_pair("dpos:ethereum") == ("dpos-park", "eth-park")
    for bad, why in (("dpos:dpos", "differ"), ("eth:ethereum", "differ"), ("dpos", "SRC:DST"), ("dpos:x", "not one of"),
                     ("a:b:c", "SRC:DST")):
        with pytest.raises(ValueError, match=why):
            parse_pair(bad)


class _FakeSender:
    """Answers after a yield to the loop, as a node's RPC does; refuses every 10th transfer."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, args: dict[str, object]) -> bool:
        self.calls += 1
        await asyncio.sleep(0)
        return self.calls % 10 != 0


def test_submit_counts_every_accepted_transfer_of_concurrent_senders() -> None:
    senders = [_FakeSender() for _ in range(4)]
    accepted, _, lag = asyncio.run(_submit(senders, {}, 100, None))  # type: ignore[arg-type]
    assert [s.calls for s in senders] == [25, 25, 25, 25]
    assert accepted == 100 - 4 * 2  # each refused its 10th and 20th
    assert lag == 0.0


def test_submit_open_loop_spreads_over_the_schedule() -> None:
    senders = [_FakeSender() for _ in range(2)]
    t0 = time.monotonic()
    accepted, submit_s, _ = asyncio.run(_submit(senders, {}, 20, 200.0))  # type: ignore[arg-type]
    assert accepted == 20 - 2
    assert submit_s >= 19 / 200 - 0.01 and time.monotonic() - t0 < 2


def test_disk_per_packet_averages_each_chains_nodes_with_their_wal(tmp_path: Path) -> None:
    from bench.devnet import disk_per_packet

    (tmp_path / "db").mkdir()
    (tmp_path / "relayers").mkdir()
    for name, size in (("relay-op-a.sqlite3", 3000), ("relay-op-a.sqlite3-wal", 1000), ("relay-op-b.sqlite3", 2000),
                       ("dpos-park-witness-a.sqlite3", 500), ("poc-park-farmer-b.sqlite3", 700),
                       ("op-a.port", 10**6)):
        (tmp_path / "db" / name).write_bytes(bytes(size))
    (tmp_path / "relayers" / "relayer-a.sqlite3").write_bytes(bytes(300))
    assert disk_per_packet(tmp_path, 10) == {"dpos-park": 50, "poc-park": 70, "relay": 300, "relayer": 30}


def test_steady_rate_leaves_out_the_pipeline_filling_and_draining() -> None:
    from bench.devnet import steady_rate

    # 100 packets: 10 trickle in over 20 s, 80 settle at 200/s, 10 trickle out
    times = [float(i * 2) for i in range(10)] + [20 + i / 200 for i in range(80)] + [40.0 + i for i in range(10)]
    assert steady_rate(times) == round(80 / (times[90] - times[10]), 1)
    assert steady_rate([1.0] * 20) is None and steady_rate([1.0, 2.0]) is None


def test_block_interval_is_the_median_gap_of_consecutive_blocks_in_the_window() -> None:
    times = {1: 0, 2: 1000, 3: 1300, 4: 1600, 6: 5000, 7: 5300, 8: 9_000}
    assert block_interval_ms(times, 0.5, 5.5) == 300.0  # gaps 300 (2->3), 300 (3->4), 300 (6->7); 4->6 is no gap
    assert block_interval_ms(times, 0.0, 0.5) is None


def test_compare_engines_gives_cometbft_over_builtin() -> None:
    builtin = {"throughput_per_s": 100.0, "steady_settle_per_s": 90.0, "relay_block_interval_p50_ms": 1000.0,
               "latency_p50_s": 10.0, "overhead_phase3_p50_s": 1.0, "supply_conserved": True}
    comet = {**builtin, "throughput_per_s": 50.0, "relay_block_interval_p50_ms": 1300.0, "overhead_phase3_p50_s": 2.5}
    out = compare_engines(builtin, comet)
    assert out["cometbft_over_builtin"] == {"throughput_per_s": 0.5, "steady_settle_per_s": 1.0,
                                            "relay_block_interval_p50_ms": 1.3, "latency_p50_s": 1.0,
                                            "overhead_phase3_p50_s": 2.5}
    assert out["supply_conserved"] is True
    assert compare_engines(builtin, {**comet, "supply_conserved": False})["supply_conserved"] is False


class _ForkingChain:
    """A chain's JSON-RPC as ChainLog reads it: blocks height -> (time, events of one type), replaceable by a reorg."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[int]] = {}
        self.final = 0

    async def call(self, method: str, params: dict[str, object] | None = None) -> object:
        p = params or {}
        if method == "status":
            return {"height": max(self.blocks, default=0), "final_height": self.final}
        lo, hi = int(p["from"]), int(p["to"])  # type: ignore[call-overload]
        heights = [h for h in sorted(self.blocks) if lo <= h <= hi]
        if method == "getHeaders":
            return [{"height": h, "timestamp_ms": 1000 * h} for h in heights]
        assert method == "getEvents"
        return [{"src": "a", "dst": "b", "lane": "lane-0", "sequence": s, "height": h}
                for h in heights for s in self.blocks[h]]


def test_chain_log_reads_again_the_blocks_a_reorg_replaced() -> None:
    """Settlements re-included by a DPoS fork above the last final height are seen (a footprint run once waited
    forever for 42 packets that had settled)."""
    chain = _ForkingChain()
    chain.blocks = {1: [1], 2: [2], 3: [], 4: [3], 5: [4]}
    chain.final = 3
    log = ChainLog(chain, "relay", "a", "b", ["settle_packet"])
    asyncio.run(log.scan())
    assert set(log.events["settle_packet"]) == {1, 2, 3, 4}
    chain.blocks.update({4: [5], 5: [3, 4], 6: [6]})  # blocks 4 and 5 replaced: packet 5 settled in the new block 4
    chain.final = 5
    asyncio.run(log.scan())
    assert set(log.events["settle_packet"]) == {1, 2, 3, 4, 5, 6}
    assert log.scanned == 6 and log.time_ms[6] == 6000


def test_phase_4_splits_at_the_relays_confirmation() -> None:
    from bench.devnet import phase4_split

    # packet 1: ack final at 15.0 s, packet_acked in the relay block of 16.2 s, settled at 17.0 s; packet 2 like it, 1 s
    # later; packet 3 not yet confirmed on the relay: left out
    out = phase4_split([1, 2, 3], exec_h={1: 8, 2: 9, 3: 9}, acked_h={1: 40, 2: 41}, settle_h={1: 6, 2: 7, 3: 7},
                       dst_final={8: 15_000, 9: 16_000}, relay_time={40: 16_200, 41: 17_600},
                       src_time={6: 17_000, 7: 18_000})
    assert out == {"mean_ack_final_to_confirmed_s": round((1.2 + 1.6) / 2, 2),
                   "mean_confirmed_to_settled_s": round((0.8 + 0.4) / 2, 2)}
    assert phase4_split([], exec_h={}, acked_h={}, settle_h={}, dst_final={}, relay_time={}, src_time={}) == {
        "mean_ack_final_to_confirmed_s": None, "mean_confirmed_to_settled_s": None}
