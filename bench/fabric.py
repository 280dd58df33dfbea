"""The Fabric park's bridge on a real network: commit and execute latency, sustained bridge invokes per second.

    python bench/fabric.py [--json] [--samples 20] [--seconds 20] [--lanes 8] [--keep DIR]

Starts the devnet's Fabric park on free loopback ports (the parameters of ``deploy/devnet.toml``'s ``fabric-park``:
3 etcdraft orderers, BatchTimeout 250 ms, both organisations' peers, the bridge chaincode as a service, the
AND(OperatorMSP.peer, SalesMSP.peer) endorsement policy) with Fabric's own binaries from ``make setup``, and drives
it through the hfc adapter (:mod:`adapters.fabric`) as the relayer does. Relay certificates for phase 3 come from
an in-process relay of 4 validators whose keys are made at run time (``tests/unit/bridge/sim.py``): every
certificate is verified by the chaincode exactly as one from the relay chain.

Prints (medians and p95 over ``--samples`` sequential invokes, so each figure is one transaction alone):
  commit_latency_ms        phase 1: ``bridge.send`` of energy, from the proposal to the block's commit on the peer
                           (endorse by 2 peers, order, validate, commit), as ``parkrelay transfer`` waits for it
  execute_latency_ms       phase 3: ``bridge.recv`` with a relay certificate (4 validators), proposal to commit
  endorse_ms               the endorsement part of phase 3 (both peers run the chaincode and sign)
  attest_ms                a relayer's proof read: the bridge's ``attest`` of a commitment by both organisations
  invokes_per_s            sustained phase-3 invokes per second for ``--seconds``: one worker per lane on
                           ``--lanes`` lanes (disjoint keys), each invoking as soon as its last one committed
  invokes_per_s_one_lane   the same on one lane with 8 in flight (the adapter's pipeline orders invokes that touch
                           one supply key: MVCC serialises them)
  cpu_ms_per_invoke        this process's CPU (the hfc client side) per sustained invoke
Context figures: ``block_interval_ms`` is the BatchTimeout (a lone transaction's wait for its block); latencies below
it are impossible on Fabric, so the ratio ``execute_latency_ms / batch_timeout_ms`` is the number to watch.
"""

from __future__ import annotations

import os

# hfc's generated protos need the pure-Python protobuf, chosen before protobuf loads; this process forks Fabric's
# processes, so grpc's fork handlers must be off before grpc initialises (DEPENDENCIES.md, chains/common/procs.py)
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import adapters.fabric as af
from bench.common import emit, run_dir
from chains.common import progress
from chains.common.genesis import bridge_section
from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
from chains.fabric.network.config import ChaincodeSpec, FabricNetworkConfig
from chains.fabric.network.launcher import FabricNetwork
from chains.fabric.network.tools import FabricTools
from protocol.codec import encode_packet
from protocol.paths import commitment_path
from relay.ops.config import load_config
from tests.integration.harness import REPO, free_port_block
from tests.unit.bridge.sim import Network

CHAIN, OTHER = "fabric-park", "dpos-park"
USERS = {"alice": OPERATOR_MSP, "bob": SALES_MSP, "relayer": OPERATOR_MSP}
ALICE, BOB = "OperatorMSP:alice@OperatorMSP", "SalesMSP:bob@SalesMSP"


def _ms(xs: list[float]) -> dict[str, float]:
    ys = sorted(xs)
    p95 = ys[max(0, round(0.95 * len(ys)) - 1)]
    return {"p50": round(statistics.median(ys) * 1000, 1), "p95": round(p95 * 1000, 1)}


def devnet_params() -> dict[str, Any]:
    """The devnet's Fabric park keys that shape the network (orderers, batching, raft ticks)."""
    chain = load_config(REPO / "deploy" / "devnet.toml").chain(CHAIN)
    keep = ("orderers", "batch_timeout_ms", "max_message_count", "raft_tick_ms")
    return {k: chain.params[k] for k in keep}


class Bench:
    def __init__(self, root: Path, lanes: int) -> None:
        params = devnet_params()
        probe = FabricNetworkConfig(chain_id=CHAIN, data_dir=root, base_port=20000, orderers=params["orderers"])
        FabricTools(probe).check_installed()  # names `make setup` when Fabric's binaries are missing
        cc = ChaincodeSpec(command=(sys.executable, "-m", "chains.fabric.chaincode.server"), cwd=REPO,
                           env={"PYTHONPATH": str(REPO)})
        self.cfg = FabricNetworkConfig(chain_id=CHAIN, data_dir=root, base_port=free_port_block(probe.port_count),
                                       users=USERS, chaincode=cc, **params)
        self.net = FabricNetwork(self.cfg)
        self.lanes = [f"lane-{i}" for i in range(lanes)]
        self.relay = Network()
        self.relay.now_ms = time.time_ns() // 1_000_000
        park = self.relay.add_park(OTHER, [{"lane": lane, "counterparty": CHAIN} for lane in self.lanes])
        park.state.add_balance("alice", "kWh", 10**12)
        self.params = params

    def inbound(self, lane: str) -> dict[str, Any]:
        """``bridge.recv`` arguments of a fresh dpos-park packet to bob, certified by the relay's 4 validators."""
        now = time.time_ns() // 1_000_000
        self.relay.now_ms = now
        packet = self.relay.send(OTHER, "alice", dst_chain=CHAIN, lane=lane, kind="energy", receiver=BOB,
                                 denom="kWh", amount_wh=1, timeout_timestamp_ms=now + 3_600_000)
        return {"packet": encode_packet(packet).hex(), "certificate": self.relay.verify(packet)}

    async def run(self, samples: int, seconds: float, bar: progress.Bar | None = None) -> dict[str, Any]:
        """``bar``: advanced once per stage (start, phase 1, phase 3, sustained on every lane, on one lane)."""
        bar = bar or progress.Bar()
        t = time.perf_counter()
        bar.update(description="fabric: starting the network")
        self.net.up(timeout_s=180)
        bar.advance()
        out: dict[str, Any] = {"network_start_s": round(time.perf_counter() - t, 1), **self.params}
        gw = af.connect(self.cfg.layout.connection_profile, CHAIN, "relayer")
        alice_gw = af.connect(self.cfg.layout.connection_profile, CHAIN, "alice")
        relayer, alice = af.target(gw), af.target(alice_gw)
        src = af.source(gw)
        try:
            genesis = {"chain_id": CHAIN, "accounts": [ALICE, BOB],
                       "balances": [{"account": ALICE, "denom": "kWh", "amount": 10**12}],
                       "bridge": bridge_section("relay", self.relay.relay.vset,
                                                [{"lane": lane, "counterparty": OTHER} for lane in self.lanes])}
            await alice.call("bridge.init", genesis)
            for _ in range(3):  # warm both peers' chaincode servers and the client's connections
                await relayer.call("bridge.recv", self.inbound(self.lanes[0]))

            commit, attest = [], []
            bar.update(description=f"fabric: {samples} phase-1 sends")
            for _ in range(samples):
                t = time.perf_counter()
                sent = await af.send_energy(alice, OTHER, self.lanes[0], "kWh", 1, "alice",
                                            time.time_ns() // 1_000_000 + 3_600_000)
                commit.append(time.perf_counter() - t)
                t = time.perf_counter()
                await src.prove(commitment_path(CHAIN, self.lanes[0], sent.sequence), sent.height)
                attest.append(time.perf_counter() - t)
            out["commit_latency_ms"] = _ms(commit)
            out["attest_ms"] = _ms(attest)
            bar.advance()

            execute, endorse = [], []
            bar.update(description=f"fabric: {samples} phase-3 receives")
            for _ in range(samples):
                args = self.inbound(self.lanes[0])
                t = time.perf_counter()
                tx_id = await relayer.submit("bridge.recv", args)
                endorse.append(time.perf_counter() - t)
                result = await relayer.track(tx_id)
                assert result["ok"], result
                execute.append(time.perf_counter() - t)
            out["execute_latency_ms"] = _ms(execute)
            out["endorse_ms"] = _ms(endorse)
            ratio = out["execute_latency_ms"]["p50"] / self.params["batch_timeout_ms"]
            out["execute_over_batch_timeout"] = round(ratio, 2)
            bar.advance()

            done = 0
            stop = time.perf_counter() + seconds

            async def worker(lane: str) -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    result, _ = await relayer.call("bridge.recv", self.inbound(lane))
                    assert result["ok"], result
                    done += 1

            bar.update(description=f"fabric: sustained invokes on {len(self.lanes)} lanes for {seconds:g} s")
            t, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker(lane) for lane in self.lanes))
            elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
            out["invokes_per_s"] = round(done / elapsed, 1)
            out["cpu_ms_per_invoke"] = round(cpu / max(done, 1) * 1000, 1)
            bar.advance()
            bar.update(description=f"fabric: sustained invokes on one lane for {seconds / 2:g} s")

            done = 0
            stop = time.perf_counter() + seconds / 2
            t = time.perf_counter()
            await asyncio.gather(*(worker(self.lanes[0]) for _ in range(8)))
            out["invokes_per_s_one_lane"] = round(done / (time.perf_counter() - t), 1)
            bar.advance()
            out["lanes"] = len(self.lanes)
            out["samples"] = samples
            return out
        finally:
            await relayer.close()
            await alice.close()
            self.net.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=20, help="sequential invokes per latency figure. Default 20")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the sustained run. Default 20")
    ap.add_argument("--lanes", type=int, default=8, help="lanes (one worker each) of the sustained run. Default 8")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, ledgers)")
    args = ap.parse_args()
    with run_dir(args.keep, "parkrelay-bench-fabric-") as root, \
            progress.bar("fabric", total=5, json_mode=args.json) as bar:
        out = asyncio.run(Bench(root, args.lanes).run(args.samples, args.seconds, bar))
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
