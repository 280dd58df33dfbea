"""Partitions on real separate hosts (issue 15): every process in a network namespace of its own, links really cut.

One devnet for the module: a DPoS park (3 witnesses), a PoC park (2 farmers), 4 relay validators and 2 relayers,
each process in its own namespace of a :class:`relay.ops.netns.Lab`, at its own address (``[deployment] hosts``), all
on one bridge. The test itself runs in the root namespace and observes every host over the bridge; its
observations never cross a cut (the root namespace is in no group). A cut is silent packet loss, so what is cut
times out as on a broken cable.

(a) The relay validators split 2-2: neither half has the > 2/3 to commit, so heights stop on both sides and no
    height ever has two blocks; healed, the chain goes on and the packets sent during the split complete once.
(b) The PoC park (both farmers) cut from the relay chain and the relayers for longer than the packets' timeouts;
    healed, each packet ends exactly once: executed, or refunded on proof of its timeout.

Both end with the standard checks: nothing left non-final, supply conserved per denomination, every charging right
exactly once. Skipped, with the reason, where namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from chains.common.procs import spawn
from chains.common.rights import rights_violations
from protocol.codec import decode_packet
from relay.ops import netns
from relay.ops.config import load_config
from relay.ops.packets import packet_key
from tests.integration.harness import REPO, Devnet, free_port_block, status, wait_for
from tests.integration.test_four_phases import DPOS, LANE, POC, RELAY, USER, Net, chain_spec, voucher, wait_ready

UNAVAILABLE = netns.unavailable()

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600),
              pytest.mark.skipif(UNAVAILABLE is not None, reason=f"network namespaces unavailable: {UNAVAILABLE}")]

VALIDATORS = ["op-a", "op-b", "op-c", "op-d"]
RELAYERS = ["relayer-a", "relayer-b"]


class NsNet(Net):
    """A :class:`Net` whose relayers run inside their hosts' namespaces."""

    lab: netns.Lab

    def start_relayer(self, name: str) -> None:
        log = open(self.cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
        argv = [sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(self.cfg.path), "--name", name]
        self.relayers[name] = spawn(self.lab.exec_argv(f"relayer/{name}", argv), stdout=log,
                                    stderr=subprocess.STDOUT, cwd=REPO)


@pytest.fixture(scope="module")
def hosts_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsNet]:
    with hosts_devnet(tmp_path_factory.mktemp("partitions")) as n:
        yield n


@contextmanager
def hosts_devnet(root: Path, relay_options: dict[str, Any] | None = None) -> Iterator[NsNet]:
    """The module's devnet in ``root``, each process on a host of its own (``relay_options``: more ``[relay]`` keys,
    e.g. the engine)."""
    d = Devnet(root, chains=[chain_spec(DPOS), chain_spec(POC)], lanes=[{"lane": LANE, "a": DPOS, "b": POC}],
               relay={"validators": VALIDATORS, "base_port": free_port_block(4), "block_interval_ms": 300,
                      **(relay_options or {})},
               relayers=RELAYERS, relayer_options={"heartbeat_s": 1.0})
    cfg = d.write()
    # the same deployment, each process on a host of its own: [deployment] hosts gives each its address
    hosts = netns.plan_hosts(netns.deployment_hosts(cfg), netns.free_subnet())
    doc = load_toml(cfg.path)
    doc["deployment"]["hosts"] = hosts
    cfg.path.write_text(tomli_w.dumps(doc))
    d.cfg = load_config(cfg.path)
    with netns.Lab(hosts) as lab:
        d.wrap = lab.exec_argv  # every node inside its host's namespace
        d.start_all()
        n = NsNet(d, DPOS, POC)
        n.lab = lab
        try:
            yield n
        finally:
            n.stop_relayers()
            d.stop_all()
    assert not any(ns.startswith(lab.prefix) for ns in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())


T0 = time.monotonic()


def mark(what: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {what}", file=sys.stderr)


def load_toml(path: Any) -> dict[str, Any]:
    import tomllib

    with open(path, "rb") as f:
        return tomllib.load(f)


def relay_host(v: str) -> str:
    return f"{RELAY}/{v}"


async def relay_heights(net: Net) -> dict[str, int]:
    out = {}
    for v in VALIDATORS:
        st = await status(net.url(RELAY, v))
        assert st is not None, f"relay validator {v} does not answer the observer"
        out[v] = int(st["height"])
    return out


async def relay_hashes(net: Net) -> dict[int, set[str]]:
    """Every block hash any relay validator holds, by height (a fork shows as two hashes at one height)."""
    by_height: dict[int, set[str]] = {}
    for v in VALIDATORS:
        async with net.d.client(RELAY, v) as c:
            top = int((await c.call("status"))["height"])
            start = 1
            while start <= top:
                for h in await c.call("getHeaders", {"from": start, "to": top}):
                    by_height.setdefault(int(h["height"]), set()).add(h["hash"])
                start += 500
    return by_height


async def relay_client_height(net: Net, chain: str) -> int:
    """The latest height of ``chain`` the relay chain's light client holds."""
    async with net.d.client(RELAY, VALIDATORS[0]) as c:
        return int((await c.call("getClientStatus", {"chain_id": chain}))["latest_height"])


async def park_blocks(net: Net, chain: str, n: int) -> None:
    """Until ``chain`` (seen from the observer) has made ``n`` more blocks: time passing, measured by the parks."""
    async def height() -> int | None:  # None while the node does not answer (2 s): a loaded machine, not a failure
        st = await status(net.url(chain))
        return None if st is None else int(st["height"])

    start = int(await wait_for(f"{chain} answering", height, 30))

    async def grown() -> bool:
        h = await height()
        return h is not None and h >= start + n

    await wait_for(f"{n} more {chain} blocks", grown, 60)


async def standard_checks(net: Net) -> None:
    """Nothing non-final, supply conserved per denomination, every charging right exactly once."""
    await net.check_invariants()
    reports = {c: await asyncio.to_thread(net.views[c].rights) for c in (DPOS, POC)}
    assert rights_violations(reports) == []


async def test_a_2_2_split_of_the_relay_validators_stalls_both_halves_without_a_fork(hosts_net: NsNet) -> None:
    net = await wait_ready(hosts_net)
    mark("a: ready")
    lab = net.lab
    before = {c: await net.balance(c) for c in (DPOS, POC)}
    vouchers = {c: await net.balance(net.other(c), voucher(c)) for c in (DPOS, POC)}
    for r in RELAYERS:
        net.start_relayer(r)
    try:
        lab.partition([relay_host(v) for v in VALIDATORS[:2]], [relay_host(v) for v in VALIDATORS[2:]])
        mark("a: split")
        try:
            # sent during the split, by both parks (the parks and relayers still reach every validator)
            keys = {DPOS: await net.send(DPOS, 301), POC: await net.send(POC, 203)}
            # a block decided at the instant of the cut may still reach a validator of either half (with its
            # commit, from its half's peer): once each half agrees on its height, heights stay put

            async def halves_settled() -> dict[str, int] | None:
                h = await relay_heights(net)
                return h if h["op-a"] == h["op-b"] and h["op-c"] == h["op-d"] else None

            await park_blocks(net, DPOS, 3)
            stalled = await wait_for("each half at one height", halves_settled, 30)
            await park_blocks(net, DPOS, 8)  # 4 s of DPoS blocks: ~13 relay blocks at 300 ms if it could commit
            assert await relay_heights(net) == stalled, "a half without > 2/3 of the power committed a block"
            for key in keys.values():
                assert (await net.packet(key))["state"] == "committed", key
        finally:
            lab.heal()
            mark("a: healed")
        forks = {h: hs for h, hs in (await relay_hashes(net)).items() if len(hs) > 1}
        assert not forks, f"two blocks at one height: {forks}"

        async def resumed() -> bool:
            now = await relay_heights(net)
            return all(now[v] > stalled[v] + 2 for v in VALIDATORS)

        await wait_for("the relay chain committing again on all four validators", resumed, 60)
        mark("a: resumed")
        rows = await net.wait_final(list(keys.values()), timeout_s=120)
        mark("a: final")
    finally:
        net.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}, rows
    # exactly once: each amount left its sender once and arrived once
    assert await net.balance(DPOS) == before[DPOS] - 301
    assert await net.balance(POC) == before[POC] - 203
    assert await net.balance(POC, voucher(DPOS)) == vouchers[DPOS] + 301
    assert await net.balance(DPOS, voucher(POC)) == vouchers[POC] + 203
    forks = {h: hs for h, hs in (await relay_hashes(net)).items() if len(hs) > 1}
    assert not forks, f"two blocks at one height: {forks}"
    await standard_checks(net)


async def test_b_a_park_cut_from_the_relay_past_the_timeouts_ends_every_packet_exactly_once(hosts_net: NsNet) -> None:
    net = await wait_ready(hosts_net)
    lab = net.lab
    poc_hosts = [f"{POC}/{n}" for n in net.cfg.chain(POC).nodes]
    others = [h for h in lab.hosts if h not in poc_hosts]
    dpos, poc = net.views[DPOS], net.views[POC]
    before = {c: await net.balance(c) for c in (DPOS, POC)}
    vouchers = {c: await net.balance(net.other(c), voucher(c)) for c in (DPOS, POC)}
    now = int(time.time() * 1000)
    right = f"ev-partition-{now}"
    await asyncio.to_thread(dpos.issue_right, right, "st-1", "tr-1", 10, now + 7_200_000, now + 10_800_000,
                            dpos.account(USER[DPOS]))
    for r in RELAYERS:
        net.start_relayer(r)
    try:
        lab.partition(poc_hosts, others)
        mark("b: cut")
        try:
            short_s = 5
            timed = {"to-poc": await net.send(DPOS, 71, timeout_s=short_s),
                     "from-poc": await net.send(POC, 53, timeout_s=short_s)}
            sent = await asyncio.to_thread(dpos.send, USER[DPOS], POC, poc.account(USER[POC]), LANE,
                                           int((time.time() + short_s) * 1000),
                                           {"kind": "charging_right", "right_id": right}, wait_final=False)
            timed["right"] = packet_key(decode_packet(sent["packet"]))
            executed = await net.send(DPOS, 97)  # a long timeout: delivered after the heal
            deadline_ms = int((time.time() + short_s) * 1000)

            async def both_past() -> bool:  # each park's own clock past every short timeout, during the cut
                times = [(await status(net.url(c)) or {}).get("timestamp_ms", 0) for c in (DPOS, POC)]
                return min(times) > deadline_ms

            await wait_for("both parks' block time past the timeouts", both_past, 60)
            # the relay chain learns nothing of the PoC park meanwhile (its relayers heartbeat every second)
            known = await relay_client_height(net, POC)
            await park_blocks(net, POC, 4)
            assert await relay_client_height(net, POC) == known, "a header of the cut-off park reached the relay"
            st = await status(net.url(POC))
            assert st is not None and int(st["height"]) >= known + 4
            for key in [*timed.values(), executed]:
                row = await net.packet(key)
                assert row["state"] not in ("executed", "acked", "completed", "refunded"), row
        finally:
            lab.heal()
            mark("b: healed")
        rows = await net.wait_final([*timed.values(), executed], timeout_s=180)
        mark("b: final")
    finally:
        net.stop_relayers()
    for name, key in timed.items():
        assert rows[key]["state"] == "refunded" and rows[key]["ack"] is None, (name, rows[key])
    assert rows[executed]["state"] == "completed", rows[executed]
    # refunded on proof of the timeout: nothing of those arrived, everything went back; the long one arrived once
    assert await net.balance(DPOS) == before[DPOS] - 97
    assert await net.balance(POC) == before[POC]
    assert await net.balance(POC, voucher(DPOS)) == vouchers[DPOS] + 97
    assert await net.balance(DPOS, voucher(POC)) == vouchers[POC]
    live = (await asyncio.to_thread(dpos.rights))["live"]
    assert right in live and live[right]["owner"] == dpos.account(USER[DPOS]), live.get(right)
    assert not any(right in rid for rid in (await asyncio.to_thread(poc.rights))["live"])
    await standard_checks(net)
