"""``bench/devnet.py --pair`` for the pairs with an Ethereum or a Fabric park: the relayed figure beside the park's own.

An EVM park (one anvil, 1 s blocks) and a Fabric park (3 etcdraft orderers, BatchTimeout 250 ms, two peers, the bridge
chaincode as a service) commit a transfer at a rate of their own: a ``sendEnergy`` waits for its block, and Fabric's
MVCC serialises the sends of one lane (each takes the lane's next sequence). So the relayed throughput of such a pair
is read beside the source park's own commit rate, measured in the same run on the same machine:

1. **park alone**: the relayers are down; ``--transfers N`` transfers are committed on the source by ``--senders``
   accounts in parallel, each waiting for its send's block as ``parkrelay transfer`` does. ``park_alone_commits_per_s``
   is N over the time from the first submission to the last commit.
2. **backlog**: the relayers start; ``backlog_settle_s`` is the time until those N are settled (phase 4).
3. **relayed**: N more transfers the same way with the relayers running; ``throughput_per_s`` is N over the time from
   the first submission to the last settlement seen, and ``latency_p50_s``/``latency_p95_s`` per packet from its commit
   (its send's answer) to its settlement being seen (the bench reads every unsettled packet's state from the source,
   target and relay chain in bulk once a second, so a latency is late by up to a second).

``relayed_over_park_alone`` = throughput_per_s / park_alone_commits_per_s: 1.0 means the relay delivers everything
the source can commit, at the same rate. With a few hundred transfers the last packets' latency (tens of seconds with
a PoC park's finality window) weighs on that figure; ``steady_settle_per_s`` (settlements per second over the middle
80 % of them, as bench/devnet.py) and ``steady_over_park_alone`` leave the filling and draining out.

Everything is read through the operator tools' park views
(:mod:`relay.ops.parks`), which speak each park's own protocol: JSON-RPC to anvil, hfc to Fabric's gateway.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import p50_p95, r2, steady_rate
from chains.common.progress import Bar
from protocol.errors import ProtocolError

DPOS, POC, ETH, FABRIC, LANE = "dpos-park", "poc-park", "eth-park", "fabric-park", "lane-0"
RECEIVER = {DPOS: "alice", POC: "carol", ETH: "erin", FABRIC: "gina"}
FINAL = ("completed", "refunded")
MVCC_RETRIES = 50
"""How many times a sender sends a transfer again that Fabric invalidated for an MVCC conflict."""


def chain_table(chain: str, senders: Sequence[str], py_table: Callable[[str, Sequence[str]], dict[str, Any]],
                eth_port: int) -> dict[str, Any]:
    """The devnet entry of ``chain``: a Python park as bench/devnet.py has it, the others as deploy/devnet.toml (1 s
    anvil blocks, depth 2; 3 orderers, BatchTimeout 250 ms), ``senders`` funded."""
    funded = {s: 10**9 for s in senders}
    if chain == ETH:
        return {"id": ETH, "kind": "ethereum", "base_port": eth_port, "block_interval_ms": 1000,
                "confirmation_depth": 2, "accounts": {"erin": 10**6, "operator": 0, **funded}}
    if chain == FABRIC:
        return {"id": FABRIC, "kind": "fabric", "orderers": 3, "batch_timeout_ms": 250,
                "accounts": {"gina": 10**6, "operator": 0, **funded}}
    return py_table(chain, senders)


def _commit_all(view: Any, senders: Sequence[str], n: int, dst: str, receiver: str, timeout_ms: int,
                bar: Bar, what: str, done: list[tuple[bytes, float]], raws: list[bytes]
                ) -> tuple[float, int, int]:
    """``n`` transfers of 1 Wh from ``senders`` in parallel (one thread each, its share in order, each send waiting
    for its block), appending (packet bytes, wall time its commit was answered) to ``done`` and the bytes to ``raws``
    as each is answered. Returns (seconds from the first submission to the last answer, refused count, sends made
    again after a Fabric MVCC conflict)."""
    shares = [n // len(senders) + (1 if i < n % len(senders) else 0) for i in range(len(senders))]
    refused, retried = [0], [0]

    def send_one(name: str) -> bytes | None:
        """One transfer, sent again while Fabric invalidates it for an MVCC conflict (another sender's send took the
        lane's next sequence in that block), as a Fabric client does; None when refused otherwise."""
        for attempt in range(MVCC_RETRIES + 1):
            try:
                raw: bytes = view.transfer(name, dst, receiver, 1, "kWh", LANE, timeout_ms, wait_final=False)["packet"]
                return raw
            except ProtocolError as exc:
                if exc.code != "fabric.mvcc_conflict" or attempt == MVCC_RETRIES:
                    failure: Exception = exc
                    break
                retried[0] += 1
            except Exception as exc:  # counted, and said a few times: a refused transfer is a finding
                failure = exc
                break
        if refused[0] < 5:
            print(f"transfer by {name} refused: {failure}", file=sys.stderr, flush=True)
        refused[0] += 1
        return None

    def one_sender(name: str, count: int) -> None:
        for _ in range(count):
            if (raw := send_one(name)) is not None:
                done.append((raw, time.time()))
                raws.append(raw)
                bar.update(completed=len(done), description=what)

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(senders)) as pool:
        for f in [pool.submit(one_sender, s, c) for s, c in zip(senders, shares, strict=True) if c]:
            f.result()
    return time.monotonic() - t0, refused[0], retried[0]


async def _settle_all(cfg: Any, raws: Sequence[bytes], views: dict[str, Any], give_up_s: float, bar: Bar,
                      what: str, submitting: asyncio.Future[Any] | None = None) -> dict[bytes, float]:
    """Until every packet of ``raws`` is settled on its source: the wall time each was first seen settled (read in
    bulk once a second, :func:`relay.ops.packets.packet_statuses`). ``raws`` may grow while ``submitting`` runs:
    the wait ends only once it is done. Raises with the states left on giving up."""
    from relay.ops.packets import packet_statuses

    seen: dict[bytes, float] = {}
    deadline = time.monotonic() + give_up_s
    states: dict[str, int] = {}
    while len(seen) < len(raws) or (submitting is not None and not submitting.done()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(raws) - len(seen)} packets not settled in {give_up_s:.0f} s: {states}")
        left = [r for r in list(raws) if r not in seen]
        if not left:
            await asyncio.sleep(0.2)  # the first commits of the load are not in yet
            continue
        rows = await asyncio.to_thread(packet_statuses, cfg, left, views)
        now = time.time()
        states = {}
        for raw, row in zip(left, rows, strict=True):
            states[row["state"]] = states.get(row["state"], 0) + 1
            if row["state"] in FINAL:
                seen[raw] = now
        bar.update(completed=len(seen), description=what)
        if len(seen) < len(raws) or (submitting is not None and not submitting.done()):
            await asyncio.sleep(1.0)  # a poll of the chains' state: no event tells the bench a packet settled
    return seen


async def run_parks(src: str, dst: str, n: int, root: Path, *, n_senders: int, give_up_s: float, bar: Bar,
                    py_table: Callable[[str, Sequence[str]], dict[str, Any]],
                    start_relayer: Callable[[Any, str], subprocess.Popen[bytes]],
                    rss_mb: Callable[..., float]) -> dict[str, Any]:
    """The three steps of the module docs for ``src`` -> ``dst`` (at least one an Ethereum or Fabric park)."""
    from relay.ops.parks import park_view
    from tests.integration.harness import Devnet, free_port_block, status, wait_for

    senders = [f"sender{i}" for i in range(n_senders)]
    eth_port = free_port_block(1)
    d = Devnet(root, chains=[chain_table(c, senders if c == src else [], py_table, eth_port) for c in (src, dst)],
               lanes=[{"lane": LANE, "a": src, "b": dst}],
               relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                      "block_interval_ms": 1000},
               relayers=["relayer-a", "relayer-b"])
    cfg = d.write()
    d.start_all()
    relayers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        views = {c: park_view(cfg, c) for c in (src, dst)}

        async def ready() -> bool:
            relay = await status(cfg.relay_url("op-a"))
            if relay is None or relay["final_height"] < 2:
                return False
            for v in views.values():
                try:
                    if int((await asyncio.to_thread(v.status))["final_height"]) < 2:
                        return False
                except OSError:
                    return False
            return True

        bar.update(description="devnet: starting the nodes")
        await wait_for("every chain finalising", ready, 300, poll_s=1.0)
        receiver = views[dst].account(RECEIVER[dst])
        timeout_ms = int((time.time() + give_up_s * 3 + 3600) * 1000)

        def commit(what: str, done: list[tuple[bytes, float]], raws: list[bytes]) -> tuple[float, int, int]:
            bar.update(completed=0, description=what)
            return _commit_all(views[src], senders, n, dst, receiver, timeout_ms, bar, what, done, raws)

        alone: list[tuple[bytes, float]] = []
        alone_s, refused_a, retried_a = await asyncio.to_thread(commit, f"park alone: {n} commits on {src}", alone, [])
        t_start = time.time()
        relayers.update({r: start_relayer(cfg, r) for r in cfg.relayers})
        await _settle_all(cfg, [r for r, _ in alone], views, give_up_s, bar, "backlog: settled")
        backlog_s = time.time() - t_start

        # the relayed load: its settlements are read while it is being committed
        t0 = time.time()
        relayed: list[tuple[bytes, float]] = []
        raws: list[bytes] = []
        commit_task = asyncio.ensure_future(asyncio.to_thread(commit, f"relayed: {n} transfers {src} -> {dst}",
                                                              relayed, raws))
        settled = await _settle_all(cfg, raws, views, give_up_s, bar, "relayed: settled", commit_task)
        relayed_commit_s, refused_b, retried_b = await commit_task
        done = max(settled.values(), default=t0)

        relay_rss = round(rss_mb(d.procs[("relay", "op-a")].pid), 1)
        relayer_rss = round(max((rss_mb(p.pid) for p in relayers.values()), default=0.0), 1)
        escrow = await asyncio.to_thread(views[src].escrow, "kWh")
        vouchers = await asyncio.to_thread(views[dst].voucher_supply, f"{LANE}/{src}/kWh")
        failed = 0
        async with d.client("relay", "op-a") as c:
            for h in range(1, int((await c.call("status"))["height"]) + 1):
                failed += sum(1 for r in (await c.call("getBlock", {"height": h}))["tx_results"] if not r["ok"])
        committed = len(alone) + len(relayed)
        steady = steady_rate(list(settled.values()))
        lat50, lat95 = p50_p95([settled[r] - t for r, t in relayed if r in settled])
        park_alone = len(alone) / alone_s if alone_s else None
        throughput = len(settled) / (done - t0) if done > t0 else None
        return {
            "pair": f"{src}:{dst}", "mode": "park-alone+backlog+relayed", "transfers": n, "senders": n_senders,
            "park_alone_commits_per_s": r2(park_alone), "park_alone_s": r2(alone_s),
            "backlog_settle_s": r2(backlog_s), "backlog_per_s": r2(len(alone) / backlog_s if backlog_s else None),
            "relayed_commits_per_s": r2(len(relayed) / relayed_commit_s if relayed_commit_s else None),
            "throughput_per_s": r2(throughput), "seconds": r2(done - t0), "completed": len(settled),
            "relayed_over_park_alone": r2(throughput / park_alone if throughput and park_alone else None),
            "steady_settle_per_s": steady, "steady_over_park_alone": r2(steady / park_alone if steady and park_alone
                                                                        else None),
            "latency_p50_s": r2(lat50), "latency_p95_s": r2(lat95),
            "refused_at_submission": refused_a + refused_b, "mvcc_resends": retried_a + retried_b,
            "committed": committed,
            "escrow_wh": escrow, "vouchers_wh": vouchers, "supply_conserved": escrow == vouchers == committed,
            "relay_failed_txs_in_blocks": failed,
            "relay_node_peak_rss_mb": relay_rss, "relayer_peak_rss_mb": relayer_rss,
        }
    finally:
        for p in relayers.values():
            p.terminate()
        for p in relayers.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        d.stop_all()
