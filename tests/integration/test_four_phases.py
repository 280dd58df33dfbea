"""The four phases end to end between two parks, on real processes over loopback (issues #3 and #4).

Every scenario runs for each pair of park kinds: DPoS <-> PoC, Ethereum <-> DPoS, Ethereum <-> PoC, Fabric <-> DPoS,
Fabric <-> PoC and Ethereum <-> Fabric. One devnet per pair (the module fixture is parametrised): the pair's park
nodes (3 DPoS witnesses, 2 PoC farmers, anvil at 1 s blocks with the bridge deployed, or a Fabric park — 3 Raft
orderers, a peer and a chaincode server per organisation — under its supervisor), 4 relay validators (each
attesting the Ethereum park's blocks when there is one); relayers are started and killed by the tests. What
differs by kind (how a crash is made, how failed transactions are counted, how a proof is tampered with) is looked
up by kind name in the tables below (FAILED_TXS, TAMPER), not branched on in the scenarios. The tests speak to each
park through what an operator and a relayer use: ``relay.ops.parks`` views (balances, escrow, vouchers,
phase 1) and the relayer's own chain links (proofs, headers, submissions), so the same scenario drives a
Python park or the Ethereum park.

Every scenario ends with the invariants: no packet left in a non-final state, and supply conserved per
denomination (escrowed at home == vouchers outstanding on the other park).

The plain outcomes — energy both ways and each voucher home, an error ack refunded, a packet never verified
refunded on proof after its timeout — run on all 12 ordered pairs of the four parks, for every asset kind, on one
shared devnet in ``test_asset_matrix.py``; this module keeps what needs a pair to itself: faults, forgeries,
crashes, races and late execution.
"""

from __future__ import annotations

import os

# the Fabric parks' adapter (hfc) needs the pure-Python protobuf, chosen before protobuf's first import in this process
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.ethereum.rpc import EthRpc, hex_int
from chains.common import wire
from chains.common.procs import spawn
from protocol.codec import decode_packet, encode_packet
from protocol.errors import (
    ClientFrozenError,
    InvalidProofError,
    LaneError,
    QuorumError,
    ReplayError,
    SignatureError,
    TimeoutExpiredError,
    WrongChainError,
)
from protocol.paths import commitment_path, verified_path
from relay.ops.config import DeploymentConfig
from relay.ops.packets import packet_key
from relay.ops.parks import ParkView, park_view
from relay.ops.relayers import build_relayer
from relay.relayer.relayer import MAX_HEADERS_PER_UPDATE, Relayer
from tests.integration.harness import (
    REPO,
    Devnet,
    fabric_children,
    free_port_block,
    status,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DPOS, POC, ETH, FABRIC, RELAY, LANE = "dpos-park", "poc-park", "eth-park", "fabric-park", "relay", "lane-0"
USER = {DPOS: "alice", POC: "carol", ETH: "erin", FABRIC: "gina"}
PAIRS = {"dpos-poc": (DPOS, POC), "eth-dpos": (ETH, DPOS), "eth-poc": (ETH, POC),
         "fabric-dpos": (FABRIC, DPOS), "fabric-poc": (FABRIC, POC), "eth-fabric": (ETH, FABRIC)}
FINAL_STATES = {"completed", "refunded"}
CRASHED = {PAIRS["dpos-poc"]: (DPOS, POC), PAIRS["eth-dpos"]: (ETH,), PAIRS["eth-poc"]: (POC,),
           PAIRS["fabric-dpos"]: (DPOS,), PAIRS["fabric-poc"]: (FABRIC,), PAIRS["eth-fabric"]: (ETH, FABRIC)}
"""Which parks each pair's node-crash scenario kills: every kind is killed in two pairs, once beside each of two
other kinds, and every pair kills at least one (killing both sides of all six pairs cost about 3.5 minutes of the
suite and proved no more per kind)."""
ORDER = ["committed", "verified", "executed", "acked", "timed_out", "completed", "refunded"]


def chain_spec(chain_id: str) -> dict[str, Any]:
    """The devnet entry of one park: small, fast blocks, its user funded."""
    funded = {USER[chain_id]: 5_000_000, "operator": 0}
    if chain_id == DPOS:
        return {"id": DPOS, "kind": "dpos", "nodes": ["witness-a", "witness-b", "witness-c"],
                "block_interval_ms": 500, "maintenance_interval_blocks": 1000, "accounts": funded}
    if chain_id == POC:
        # the relay's client waits a window of relay time before a PoC header is final (SPEC §8.6); a short
        # one here, with relayers' heartbeats every second, keeps the scenarios quick
        return {"id": POC, "kind": "poc", "nodes": ["farmer-a", "farmer-b"], "target_block_interval_ms": 700,
                "confirmation_depth": 3, "accounts": funded, "light_client": {"finality_window_ms": 4000}}
    if chain_id == FABRIC:
        # three Raft orderers, as in the devnet (one is SIGKILLed below); a short BatchTimeout for quick blocks
        return {"id": FABRIC, "kind": "fabric", "orderers": 3, "batch_timeout_ms": 100, "accounts": funded}
    return {"id": ETH, "kind": "ethereum", "base_port": free_port_block(1), "confirmation_depth": 2,
            "accounts": funded}


async def _failed_park_rpc(net: Net, chain: str, _: Relayer | None) -> list[str]:
    """Failed transaction results in the final blocks of the relay chain or a Python park (parkrelay's RPC)."""
    out: list[str] = []
    c = net.d.client(chain, net.cfg.relay_validators[0] if chain == RELAY else net.cfg.chain(chain).nodes[0])
    async with c:
        final = (await c.call("status"))["final_height"]
        for h in range(1, final + 1):
            if (chain, h) not in net._failed:
                blk = await c.call("getBlock", {"height": h})
                net._failed[(chain, h)] = [
                    f"{chain}@{h} tx {i} {tx.get('op')} by {tx.get('sender')}: "
                    f"{(r.get('error') or {}).get('code')} {str((r.get('error') or {}).get('message'))[:160]}"
                    for i, (tx, r) in enumerate(zip(blk["txs"], blk["tx_results"], strict=True)) if not r["ok"]]
            out += net._failed[(chain, h)]
    return out


async def _failed_ethereum(net: Net, chain: str, _: Relayer | None) -> list[str]:
    """Receipts with status 0 in every block of an Ethereum park."""
    out: list[str] = []
    rpc = EthRpc(net.url(chain), side=chain)
    try:
        head = hex_int(await rpc.call("eth_blockNumber", []))
        for h in range(1, head + 1):
            if (chain, h) not in net._failed:
                receipts = await rpc.call("eth_getBlockReceipts", [hex(h)])
                net._failed[(chain, h)] = [f"{chain}@{h} tx {r['transactionHash']} to {r.get('to')}: status 0"
                                           for r in receipts if hex_int(r["status"]) == 0]
            out += net._failed[(chain, h)]
    finally:
        await rpc.close()
    return out


async def _failed_fabric(net: Net, chain: str, links: Relayer | None) -> list[str]:
    """Transactions a Fabric park's peers invalidated (MVCC conflicts, endorsement-policy failures) in every block:
    the peer's validation flags, which cost a block slot and do nothing."""
    assert links is not None
    source = links.parks[chain].source
    out: list[str] = []
    for h in range(0, await source.latest_height() + 1):
        if (chain, h) not in net._failed:
            block = await source.block(h)  # type: ignore[attr-defined]  # the Fabric source's peer block
            net._failed[(chain, h)] = [f"{chain}@{h} tx {tx.tx_id}: validation code {tx.validation_code}"
                                       for tx in block.txs if tx.validation_code != 0]
        out += net._failed[(chain, h)]
    return out


def _crash_last_node(net: Net, chain: str) -> None:
    """SIGKILL the chain's last node (a DPoS witness, a PoC farmer), then start it; its peers carry on meanwhile."""
    node = net.cfg.chain(chain).nodes[-1]
    net.d.kill(chain, node)
    net.d.start(chain, node)


def _crash_anvil(net: Net, chain: str) -> None:
    """SIGKILL anvil itself under the Ethereum park's node (no final state dump; the node then exits), start the node
    again and wait until its only node answers."""
    node = net.cfg.chain(chain).nodes[-1]
    proc = net.d.procs.pop((chain, node))
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(children[0]), signal.SIGKILL)
    assert proc.wait(timeout=20) != 0  # the park node notices anvil died and exits
    net.d.start(chain, node)
    view = park_view(net.cfg, chain)
    deadline = time.monotonic() + 60
    while True:
        try:
            view.status()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{chain} not back within 60 s:\n{net.d.log_tail(chain, node)}") from None
            time.sleep(0.2)


def _fabric_processes(net: Net, chain: str) -> dict[str, int]:
    """The Fabric processes under the park's supervisor: process name (``peer0.SalesMSP``, ``orderer1``: the last part
    of each one's FABRIC_CFG_PATH) -> pid."""
    return fabric_children(net.d.procs[(chain, "network")].pid)


def crash_fabric_peer_and_leader(net: Net, chain: str) -> None:
    """SIGKILL SalesMSP's peer and the orderer leading the channel's Raft (its /metrics says so); the park's supervisor
    restarts both from their ledgers. Returns once both run again and answer (the others elected a new leader
    meanwhile: the channel kept ordering on two of three)."""
    import re

    from chains.fabric.network.genesis import park_network
    from chains.fabric.network.process import http_get

    cfg = park_network(chain_id=chain, params=net.cfg.chain(chain).params, data_dir=net.cfg.data_dir,
                       base_port=net.cfg.chain(chain).base_port, host=net.cfg.host, accounts=[])

    def metric(i: int, name: str) -> int | None:
        try:
            body = http_get(f"http://{cfg.host}:{cfg.orderer_ports(i).operations}/metrics")[1].decode()
        except OSError:
            return None
        m = re.search(r"^consensus_etcdraft_" + name + r'\{channel="[^"]+"\}\s+(\d+)', body, re.MULTILINE)
        return int(m.group(1)) if m else None

    def leader() -> int | None:
        return next((i for i in range(cfg.orderers) if metric(i, "is_leader") == 1), None)

    def healed() -> bool:
        """A leader in contact with every consenter, and every orderer at its block (a transaction broadcast while
        the Raft cluster re-forms may be dropped: Fabric's broadcast acknowledges before ordering)."""
        lead = leader()
        if lead is None or metric(lead, "active_nodes") != cfg.orderers:
            return False
        heights = {metric(i, "committed_block_number") for i in range(cfg.orderers)}
        return len(heights) == 1 and None not in heights

    deadline = time.monotonic() + 30
    while (lead := leader()) is None:
        assert time.monotonic() < deadline, "no Raft leader"
        time.sleep(0.2)
    victims = ["peer0.SalesMSP", f"orderer{lead}"]
    before = _fabric_processes(net, chain)
    for name in victims:
        os.kill(before[name], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        now = _fabric_processes(net, chain)
        if all(now.get(n) not in (None, before[n]) for n in victims):
            break
        assert time.monotonic() < deadline, f"the supervisor did not restart {victims}: {now}"
        time.sleep(0.2)
    view = park_view(net.cfg, chain)
    while True:
        try:
            if healed():
                view.status()
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{chain} not back in service after the restart"
        time.sleep(0.2)


CRASHES = {"ethereum": _crash_anvil, "fabric": crash_fabric_peer_and_leader}
"""How a park is crashed and brought back, by chain kind (others: its last node SIGKILLed and started again)."""

FAILED_TXS = {"ethereum": _failed_ethereum, "fabric": _failed_fabric}
"""How to count the failed transactions in a park's blocks, by chain kind (others: parkrelay's RPC)."""


def failed_since(before: list[str], after: list[str]) -> list[str]:
    """The failed transactions in ``after`` (a :meth:`Net.failed_txs_in_blocks` reading) not in ``before``."""
    seen = set(before)
    return [f for f in after if f not in seen]


def _flip_last(proof: bytes) -> bytes:
    return proof[:-1] + flip(proof[-1:])


def _tamper_attestation(proof: bytes) -> bytes:
    """A Fabric attestation with one peer's signed statement altered (its chaincode time, one digit). The response
    carries the statement twice: in its unsigned top-level ``response``, which nothing reads, and in the signed
    payload; its last bytes may be unsigned too (a peer's ``interest``). Altering what the peer signed must fail its
    signature."""
    from chains.fabric.attestation import decode_bundle, encode_bundle

    first, *rest = decode_bundle(proof)
    at = first.rindex(b'"time_ms":') + len(b'"time_ms":')  # the signed copy comes last
    while first[at + 1:at + 2].isdigit():  # its last digit: a millisecond off, still fresh
        at += 1
    digit = b"1" if first[at:at + 1] != b"1" else b"2"
    return encode_bundle([first[:at] + digit + first[at + 1:], *rest])


TAMPER = {"fabric": (_tamper_attestation, SignatureError)}
"""How to tamper with a park's proof, by chain kind, and the refusal expected (others: the last byte flipped,
proof.invalid)."""


def voucher(of_chain: str) -> str:
    """The denomination, on the other park, of ``of_chain``'s kWh carried over the lane."""
    return f"{LANE}/{of_chain}/kWh"


def flip(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:] if b else b


class Net:
    """One pair's devnet plus helpers to act on it, the same for every kind of park."""

    def __init__(self, d: Devnet, a: str, b: str) -> None:
        self.d = d
        assert d.cfg is not None
        self.cfg: DeploymentConfig = d.cfg
        self.a, self.b = a, b
        self.relayers: dict[str, subprocess.Popen[bytes]] = {}
        self.views: dict[str, ParkView] = {c: park_view(self.cfg, c) for c in (a, b)}
        self._failed: dict[tuple[str, int], list[str]] = {}  # failed txs per final block, read once

    def other(self, chain: str) -> str:
        return self.b if chain == self.a else self.a

    def kind(self, chain: str) -> str:
        return self.cfg.chain(chain).kind

    def url(self, chain: str, node: str | None = None) -> str:
        if chain == RELAY:
            return self.cfg.relay_url(node or self.cfg.relay_validators[0])
        c = self.cfg.chain(chain)
        return c.url_of(node or c.nodes[0])

    # -- processes --------------------------------------------------------------------------------

    def start_relayer(self, name: str) -> None:
        log = open(self.cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
        self.relayers[name] = spawn(
            [sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(self.cfg.path), "--name", name],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def kill_relayer(self, name: str, sig: int = signal.SIGKILL) -> int:
        p = self.relayers.pop(name)
        p.send_signal(sig)
        return p.wait(timeout=20)

    def stop_relayers(self) -> None:
        for name in list(self.relayers):
            self.kill_relayer(name, signal.SIGTERM)

    # -- reading the parks ------------------------------------------------------------------------

    async def balance(self, chain: str, denom: str = "kWh", who: str | None = None) -> int:
        return int(await asyncio.to_thread(self.views[chain].balance, who or USER[chain], denom))

    async def packet(self, key: str) -> dict[str, Any]:
        from relay.ops.packets import show_packet

        return await asyncio.to_thread(show_packet, self.cfg, key)

    async def wait_final(self, keys: list[str], timeout_s: float = 180) -> dict[str, dict[str, Any]]:
        async def all_final() -> dict[str, dict[str, Any]] | None:
            rows = {k: await self.packet(k) for k in keys}
            return rows if all(r["state"] in FINAL_STATES for r in rows.values()) else None

        result: dict[str, dict[str, Any]] = await wait_for(f"packets {keys} final", all_final, timeout_s, poll_s=0.5)
        return result

    async def sent(self, key: str) -> tuple[bytes, int]:
        """The packet ``key``'s bytes and the height of the block that committed it, from its source."""
        src = key.split("/")[0]
        for raw, height in await asyncio.to_thread(self.views[src].sent):
            if packet_key(decode_packet(raw)) == key:
                return raw, height
        raise AssertionError(f"{src} never committed {key}")

    async def check_invariants(self) -> None:
        """No packet in a non-final state; escrowed at home == vouchers outstanding, per denomination."""
        from relay.ops.packets import list_packets

        rows = await asyncio.to_thread(list_packets, self.cfg)
        stuck = [r["packet"] + ":" + r["state"] for r in rows if r["state"] not in FINAL_STATES]
        assert not stuck, f"packets not final: {stuck}"
        for home in (self.a, self.b):
            escrowed = await asyncio.to_thread(self.views[home].escrow, "kWh")
            outstanding = await asyncio.to_thread(self.views[self.other(home)].voucher_supply, voucher(home))
            assert escrowed == outstanding, f"{home}'s kWh: {escrowed} escrowed, {outstanding} vouchers elsewhere"

    async def failed_txs_in_blocks(self) -> list[str]:
        """Transactions that reached a block and failed there, on every chain, one line each (chain, height, what
        failed): redundant relays show up here. On Ethereum a failed transaction is a receipt with status 0 (it
        paid gas for nothing); on Fabric a transaction the peers invalidated at commit (an MVCC conflict: a flag
        other than VALID in the block's TRANSACTIONS_FILTER); on the relay chain and the Python parks a failed
        transaction result. Compare two readings with :func:`failed_since`."""
        out: list[str] = []
        links: Relayer | None = None
        try:
            for chain in (self.a, self.b, RELAY):
                kind = "relay" if chain == RELAY else self.kind(chain)
                if kind == "fabric" and links is None:
                    links = await self.links()
                out += await FAILED_TXS.get(kind, _failed_park_rpc)(self, chain, links)
        finally:
            if links is not None:
                await links.close_links()
        return out

    # -- acting -----------------------------------------------------------------------------------

    def crash_and_restart(self, chain: str) -> None:
        """SIGKILL one of the chain's processes and have it back: by default its last node, restarted
        (:data:`CRASHES` for the kinds that differ)."""
        CRASHES.get(self.kind(chain), _crash_last_node)(self, chain)

    async def send(self, src: str, amount_wh: int, *, receiver: str | None = None, denom: str = "kWh",
                   timeout_s: float = 300, wait_final: bool = False) -> str:
        """Phase 1 on ``src`` by its user, to the other park's user (or ``receiver``, as the target names it);
        returns the packet key once its block is in, not final (an operator's `parkrelay transfer` waits for
        finality). The key is stable across reorgs here: one user sends on each lane direction, and a node
        includes an abandoned branch's transfers again, so the same transfer takes the same sequence."""
        dst = self.other(src)
        to = self.views[dst].account(receiver or USER[dst])
        sent = await asyncio.to_thread(self.views[src].transfer, USER[src], dst, to, amount_wh, denom, LANE,
                                       int((time.time() + timeout_s) * 1000), wait_final=wait_final)
        return packet_key(decode_packet(sent["packet"]))

    async def links(self, name: str = "relayer-b") -> Relayer:
        """The chain links a relayer uses (not running): proofs, headers and submissions on every chain,
        signed as relayer ``name``. Close with ``close_links()``."""
        return await asyncio.to_thread(build_relayer, self.cfg, name)

    async def wait_targets_past_timeouts(self, keys: dict[str, str], links: Relayer) -> None:
        """Until the target of each packet in ``keys`` (source -> key) has a block past the packet's timeout."""
        for src, key in keys.items():
            target = links.parks[self.other(src)].source
            timeout_ms = (await self.packet(key))["timeout_timestamp_ms"]

            async def past(target: Any = target, timeout_ms: int = timeout_ms) -> bool:
                return bool(await target.header_time_ms(await target.latest_height()) > timeout_ms)

            await wait_for(f"{self.other(src)}'s block time past the timeout", past, 60)

    async def hand_verify(self, key: str, links: Relayer, *, forge_first: bool = False) -> None:
        """Phase 2 by hand (no relayer service): update the relay's client of the source until the packet's
        block is final to it, then verify the commitment's proof. Raises what the relay chain refuses. With
        ``forge_first``, a wrong proof and a tampered proof are offered first and must be refused."""
        src, dst, lane, seq = key.split("/")
        raw, height = await self.sent(key)
        park, relay, rc = links.parks[src], links.relay, links.relay.client
        assert rc is not None

        async def included(h: str) -> Any:
            return await rc.call("getTxResult", {"hash": h})

        async def final_enough() -> bool:
            st = await rc.call("getClientStatus", {"chain_id": src})
            if st["final_height"] >= height:
                return True
            latest = await park.source.latest_height()
            if latest > st["latest_height"]:
                start = st["latest_height"] + 1
                headers = await park.source.headers(start, min(latest, start + MAX_HEADERS_PER_UPDATE - 1))
                try:
                    h = await relay.target.submit("client.update", {"chain_id": src,
                                                                    "headers": [x.encode().hex() for x in headers]})
                except ReplayError:
                    return False  # held already, not final yet (Ethereum: waiting for the attestations)
                await wait_for("client update included", lambda: included(h), 30)
            return False

        await wait_for(f"{src} final on the relay chain past the packet", final_enough, 90, poll_s=0.3)
        final = (await rc.call("getClientStatus", {"chain_id": src}))["final_height"]
        pv = await park.source.prove(commitment_path(dst, lane, int(seq)), final)
        assert pv.value is not None
        if forge_first:
            # the commitment's own path before the block that committed it: a proof that it was absent there (a
            # proof of another absent path can hold this path's nodes too, in a small Ethereum storage trie)
            absent = await park.source.prove(commitment_path(dst, lane, int(seq)), height - 1)
            if absent.value is not None:
                # a kind whose proofs attest the state now, not at a height (Fabric's attestations): the attested
                # absence of a sequence never sent, offered as this one's proof
                absent = await park.source.prove(commitment_path(dst, lane, int(seq) + 1000), final)
            assert absent.value is None
            tamper, refusal = TAMPER.get(self.kind(src), (_flip_last, InvalidProofError))
            for what, proof, refused in (("the proof of the commitment's absence", absent.proof, InvalidProofError),
                                         ("a tampered proof", tamper(pv.proof), refusal)):
                with pytest.raises(refused):
                    await relay.target.submit("packet.verify", {"packet": raw.hex(), "height": final,
                                                                "proof": proof.hex()})
                assert (await self.packet(key))["state"] == "committed", what
        h = await relay.target.submit("packet.verify", {"packet": raw.hex(), "height": final, "proof": pv.proof.hex()})
        res = await wait_for("verify included", lambda: included(h), 30)
        assert res["ok"], res


@contextmanager
def started_net(root: Path, chains: list[str], lanes: list[dict[str, str]], relayers: list[str],
                a: str | None = None, b: str | None = None,
                relay_options: dict[str, Any] | None = None) -> Iterator[Net]:
    """A devnet of ``chains`` (test specs), four relay validators and ``relayers`` (none started), as a :class:`Net`
    between ``a`` and ``b`` (default: the first two chains); everything it started stops on exit."""
    d = Devnet(root, chains=[chain_spec(c) for c in chains], lanes=lanes,
               relay={"validators": ["op-a", "op-b", "op-c", "op-d"], "base_port": free_port_block(4),
                      "block_interval_ms": 300, **(relay_options or {})},
               relayers=relayers, relayer_options={"heartbeat_s": 1.0})
    d.write()
    d.start_all()
    n = Net(d, a or chains[0], b or chains[1])
    try:
        yield n
    finally:
        n.stop_relayers()
        d.stop_all()


@pytest.fixture(scope="module", params=list(PAIRS))
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    a, b = PAIRS[request.param]
    with started_net(tmp_path_factory.mktemp(f"four-phases-{request.param}"), [a, b],
                     [{"lane": LANE, "a": a, "b": b}], ["relayer-a", "relayer-b"]) as n:
        yield n


async def wait_ready(net: Net) -> Net:
    """Until the relay chain and both parks finalise (a fresh devnet's first blocks)."""
    async def ready() -> bool:
        relay = await status(net.url(RELAY))
        if relay is None or relay["final_height"] < 2:
            return False
        for chain in (net.a, net.b):
            try:
                st = await asyncio.to_thread(net.views[chain].status)
            except OSError:
                return False
            if st["final_height"] < 2:
                return False
        return True

    await wait_for("every chain finalising", ready, 120)
    return net


@pytest.fixture
async def live(net: Net) -> AsyncIterator[Net]:
    yield await wait_ready(net)


async def test_timeout_refunds_only_on_proof_and_late_execution_is_rejected(live: Net) -> None:
    before = {c: await live.balance(c) for c in (live.a, live.b)}
    keys = {c: await live.send(c, 900, timeout_s=4) for c in (live.a, live.b)}
    links = await live.links()
    try:
        # no relayer runs until the timeout has passed on each target: no source refunds on its own clock
        await live.wait_targets_past_timeouts(keys, links)
        for src, key in keys.items():
            assert (await live.packet(key))["state"] == "committed"
            assert await live.balance(src) == before[src] - 900

        # verified on the relay chain by hand (a relayer would now time them out unverified, the next
        # scenario), then executing them on the target is refused: too late
        for key in keys.values():
            await live.hand_verify(key, links)
        assert links.relay.client is not None
        # the certificates of the verified records, taken before a relayer records the timeouts (an outcome record
        # replaces the verified one, SPEC §6.6)
        certs = {key: await links.relay.client.call("getCertificate", {"key": verified_path(
            *key.split("/")[:3], int(key.split("/")[3])).decode()}) for key in keys.values()}
        live.start_relayer("relayer-a")
        try:
            for src, key in keys.items():
                raw, _ = await live.sent(key)
                cert = certs[key]
                with pytest.raises(TimeoutExpiredError):
                    await links.parks[live.other(src)].target.submit("bridge.recv", {"packet": raw.hex(),
                                                                                     "certificate": cert})
            rows = await live.wait_final(list(keys.values()))
        finally:
            live.stop_relayers()
    finally:
        await links.close_links()
    for src, key in keys.items():
        assert rows[key]["state"] == "refunded" and rows[key]["ack"] is None, rows[key]
        assert await live.balance(src) == before[src]
    await live.check_invariants()


async def test_replays_and_forgeries_are_rejected_and_change_nothing(live: Net) -> None:
    """Each direction: wrong and tampered source proofs refused by the relay chain; then, with the packet
    verified but not executed (phase 2 by hand), forged certificates refused by the target's verifier (not by
    the receipt check that refuses any certificate after execution); the genuine one executes once."""
    keys = {c: await live.send(c, 300) for c in (live.a, live.b)}
    links = await live.links()
    try:
        assert links.relay.client is not None
        for src, key in keys.items():
            dst = live.other(src)
            await live.hand_verify(key, links, forge_first=True)
            s, d, lane, seq = key.split("/")
            cert = await links.relay.client.call("getCertificate", {"key": verified_path(s, d, lane,
                                                                                         int(seq)).decode()})
            raw, _ = await live.sent(key)
            target = links.parks[dst].target
            held = await live.balance(dst, voucher(src))
            good = wire.certificate_from_json(cert)
            sig0 = good.commit.signatures[0]
            forged_sig = replace(sig0, ed25519_sig=flip(sig0.ed25519_sig), secp256k1_sig=flip(sig0.secp256k1_sig))
            forgeries: list[tuple[str, Any, type[Exception]]] = [
                ("forged signature", replace(good, commit=replace(good.commit, signatures=(
                    forged_sig, *good.commit.signatures[1:]))), SignatureError),
                ("two of four signers", replace(good, commit=replace(good.commit,
                                                                     signatures=good.commit.signatures[:2])),
                 QuorumError),
                ("another relay chain", replace(good, commit=replace(good.commit, header=replace(
                    good.commit.header, chain_id="other-relay"))), WrongChainError),
                ("a tampered proof", replace(good, proof=replace(good.proof, siblings=(
                    flip(good.proof.siblings[0]), *good.proof.siblings[1:]))), InvalidProofError),
            ]
            if live.kind(dst) != "ethereum":  # the EVM bridge takes no key or value: it derives both from the packet
                forgeries += [
                    ("proof of another key", replace(good, key=verified_path(s, d, lane, int(seq) + 1000)),
                     InvalidProofError),
                    ("another value", replace(good, value=bytes(32)), InvalidProofError),
                ]
            for what, forged, error in forgeries:
                with pytest.raises(error):
                    await target.submit("bridge.recv", {"packet": raw.hex(),
                                                        "certificate": wire.certificate_to_json(forged)})
                assert await live.balance(dst, voucher(src)) == held, what
            # a certificate for this packet does not execute another one (same lane, a later sequence)
            with pytest.raises(InvalidProofError):
                nxt = replace(decode_packet(raw), sequence=int(seq) + 1000)
                await target.submit("bridge.recv", {"packet": encode_packet(nxt).hex(), "certificate": cert})
            # the genuine certificate executes once; replaying it is refused
            await target.submit("bridge.recv", {"packet": raw.hex(), "certificate": cert})

            async def received(dst: str = dst, src: str = src, held: int = held) -> bool:
                return await live.balance(dst, voucher(src)) == held + 300

            await wait_for("genuine execution", received, 30)
            with pytest.raises(ReplayError):
                await target.submit("bridge.recv", {"packet": raw.hex(), "certificate": cert})
    finally:
        await links.close_links()
    live.start_relayer("relayer-a")
    try:
        rows = await live.wait_final(list(keys.values()))
    finally:
        live.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}
    await live.check_invariants()


async def test_a_relayer_killed_after_each_phase_still_delivers_exactly_once(live: Net) -> None:
    a, b = live.a, live.b
    va, vb = await live.balance(b, voucher(a)), await live.balance(a, voucher(b))
    failed_before = await live.failed_txs_in_blocks()
    keys = [await live.send(a, 100), await live.send(a, 101), await live.send(b, 102)]
    live.start_relayer("relayer-a")
    killed_in: list[str] = []
    try:
        for phase in ("verified", "executed", "acked"):
            async def reached(phase: str = phase) -> bool:
                states = [(await live.packet(k))["state"] for k in keys]
                return any(ORDER.index(st) >= ORDER.index(phase) for st in states)

            await wait_for(f"a packet {phase}", reached, 120, poll_s=0.1)
            live.kill_relayer("relayer-a")  # SIGKILL: no clean shutdown
            killed_in.append(phase)
            live.start_relayer("relayer-a")
        rows = await live.wait_final(keys)
    finally:
        live.stop_relayers()
    assert killed_in == ["verified", "executed", "acked"]
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert await live.balance(b, voucher(a)) == va + 100 + 101  # once each
    assert await live.balance(a, voucher(b)) == vb + 102
    assert failed_since(failed_before, await live.failed_txs_in_blocks()) == []
    await live.check_invariants()


async def test_two_relayers_racing_deliver_once_and_no_redundant_relay_reaches_a_block(live: Net) -> None:
    a, b = live.a, live.b
    va, vb = await live.balance(b, voucher(a)), await live.balance(a, voucher(b))
    failed_before = await live.failed_txs_in_blocks()
    live.start_relayer("relayer-a")
    live.start_relayer("relayer-b")
    try:
        keys = [await live.send(a, 10) for _ in range(5)]
        keys += [await live.send(b, 20) for _ in range(5)]
        rows = await live.wait_final(keys)
    finally:
        live.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert await live.balance(b, voucher(a)) == va + 50
    assert await live.balance(a, voucher(b)) == vb + 100
    assert failed_since(failed_before, await live.failed_txs_in_blocks()) == []
    await live.check_invariants()


async def test_one_relay_validator_down_then_back(live: Net) -> None:
    live.d.kill(RELAY, "op-d")  # and with it its Ethereum attestor: 3 of 4 still attest and sign
    live.start_relayer("relayer-a")
    try:
        h0 = (await status(live.url(RELAY, "op-a")))["height"]  # type: ignore[index]
        keys = [await live.send(live.a, 5), await live.send(live.b, 5)]
        rows = await live.wait_final(keys, timeout_s=240)
        assert {r["state"] for r in rows.values()} == {"completed"}
        assert (await status(live.url(RELAY, "op-a")))["height"] > h0  # type: ignore[index]
    finally:
        live.stop_relayers()
    live.d.start(RELAY, "op-d")

    async def caught_up() -> bool:
        a, d = await status(live.url(RELAY, "op-a")), await status(live.url(RELAY, "op-d"))
        return a is not None and d is not None and d["height"] >= a["height"] - 1 and d["height"] > 0

    await wait_for("op-d caught up", caught_up, 120)
    await live.check_invariants()


async def test_a_park_node_killed_hard_and_restarted_loses_nothing(live: Net) -> None:
    """SIGKILL one node of one or both parks (:data:`CRASHED`) while packets are in flight: a DPoS witness, a PoC
    farmer, anvil itself under the Ethereum park's node (which then exits; only anvil's last 1 s state dump survives),
    or on a Fabric park a peer and the Raft leader among its orderers (its supervisor restarts them from their
    ledgers) once the packets in flight are final to the relay chain. Restarted, the park continues; the relay's
    client of it stays active (no attested block was lost, so nothing conflicts); every packet completes exactly once.
    (With anvil's former 5 s dump interval this lost the verified Ethereum packet's block.)"""
    va, vb = await live.balance(live.b, voucher(live.a)), await live.balance(live.a, voucher(live.b))
    live.start_relayer("relayer-a")
    try:
        keys = [await live.send(live.a, 30), await live.send(live.b, 40)]

        async def verified() -> bool:  # final to the relay chain, so attested: what must never be lost
            return all([ORDER.index((await live.packet(k))["state"]) >= ORDER.index("verified") for k in keys])

        await wait_for("both packets verified", verified, 90)
        for chain in CRASHED[(live.a, live.b)]:
            await asyncio.to_thread(live.crash_and_restart, chain)
        # right after a restart the parks may still reorganise: take the keys from final blocks, as an operator's
        # `parkrelay transfer` does (a key read from a block a fork then drops may never exist)
        keys += [await live.send(live.a, 31, wait_final=True), await live.send(live.b, 41, wait_final=True)]
        rows = await live.wait_final(keys, timeout_s=240)
    finally:
        live.stop_relayers()
    assert {r["state"] for r in rows.values()} == {"completed"}
    assert await live.balance(live.b, voucher(live.a)) == va + 30 + 31
    assert await live.balance(live.a, voucher(live.b)) == vb + 40 + 41
    async with live.d.client(RELAY, "op-a") as relay:
        for chain in (live.a, live.b):
            assert (await relay.call("getClientStatus", {"chain_id": chain}))["status"] == "active"
    await live.check_invariants()


async def test_misbehaviour_freezes_the_client_and_its_proofs_are_refused(live: Net) -> None:
    """Last in the module: it freezes the relay's client of one park for good. Fabric when the pair has it (an orderer
    key signs a second block at a height the client holds: the ordering service forked); else DPoS (one witness
    signing two blocks at one height is only recorded, the client stays active; then colluding witnesses, more than
    2/3 of the set, make a branch conflicting with a final block irreversible: conflicting finality); otherwise
    Ethereum (a quorum of relay validators attests a hash at a height that the chain, attested honestly above it,
    contradicts)."""
    chain = next(c for c in (FABRIC, DPOS, ETH) if c in (live.a, live.b))
    key = await live.send(chain, 50)
    links = await live.links()
    try:
        rc = links.relay.client
        assert rc is not None

        async def frozen() -> bool:
            return bool((await rc.call("getClientStatus", {"chain_id": chain}))["status"] == "frozen")

        if chain == FABRIC:
            await _fabric_orderer_signs_a_second_block(live, links)
        elif chain == DPOS:
            await _dpos_witness_signs_twice(live, links)
            assert not await frozen()  # one witness of N is recorded, never halts the bridge
            await _dpos_colluders_finalise_a_conflicting_branch(live, links)
        else:
            await _relay_quorum_attests_a_lie(live, links, frozen)
        await wait_for(f"the {chain} client frozen", frozen, 60)
        # the freeze pauses the chain's lanes too, so either refusal is the relay declining the proof
        with pytest.raises((ClientFrozenError, LaneError)):
            await live.hand_verify(key, links)
        assert await frozen()  # frozen for good: no later header or proof thaws it
    finally:
        await links.close_links()
    assert (await live.packet(key))["state"] == "committed"


async def _fabric_orderer_signs_a_second_block(live: Net, links: Relayer) -> None:
    """A consenter's key (orderer0's devnet key, from the park's data dir) signs another block at a height the relay's
    client holds, on the same parent, with the same signed metadata: two orderer-signed blocks at one height. Given as
    ``client.misbehaviour`` evidence beside the real block, it freezes the client (SPEC §8.7, hazard 4)."""
    import hashlib

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from chains.fabric.consts import ORDERER_MSP
    from chains.fabric.network.config import Layout
    from chains.fabric.proto import (
        SIGNATURES_INDEX,
        Block,
        BlockHeader,
        Metadata,
        MetadataSignature,
        SerializedIdentity,
        SignatureHeader,
    )
    from chains.fabric.testing import low_s_sign

    rc = links.relay.client
    assert rc is not None
    st = await rc.call("getClientStatus", {"chain_id": FABRIC})
    if st["final_height"] < 1:  # a fresh devnet: give the client its first blocks
        await links._update_client(links.parks[FABRIC])
        await wait_for("the first Fabric blocks held", lambda: _held_above(rc, FABRIC, 1), 30)
        st = await rc.call("getClientStatus", {"chain_id": FABRIC})
    height = st["final_height"]
    real: Block = (await links.parks[FABRIC].source.block(height)).header  # type: ignore[attr-defined]
    assert real.data is None, "the evidence block must not be a config block"
    signed_value = Metadata.decode(real.metadata[SIGNATURES_INDEX]).value
    lay = Layout(live.cfg.data_dir / FABRIC)
    orderer = lay.node(ORDERER_MSP, "orderer0")
    key = load_pem_private_key(lay.keyfile(orderer).read_bytes(), None)
    creator = SerializedIdentity(ORDERER_MSP, lay.signcert(orderer).read_bytes()).encode()
    twin_header = BlockHeader(height, real.header.previous_hash, hashlib.sha256(b"a block never cut").digest())
    shdr = SignatureHeader(creator, hashlib.sha256(b"twin").digest()[:24]).encode()
    sig = low_s_sign(key, signed_value + shdr + twin_header.asn1())  # type: ignore[arg-type]
    md = Metadata(signed_value, (MetadataSignature(shdr, sig),)).encode()
    twin = Block(twin_header, None, (md, *real.metadata[SIGNATURES_INDEX + 1:]))
    assert twin.hash != real.hash
    await links.relay.target.submit("client.misbehaviour", {"chain_id": FABRIC, "header_a": real.encode().hex(),
                                                            "header_b": twin.encode().hex()})


async def _held_above(rc: Any, chain: str, height: int) -> bool:
    return bool((await rc.call("getClientStatus", {"chain_id": chain}))["final_height"] >= height)


async def _dpos_witness_signs_twice(live: Net, links: Relayer) -> None:
    from chains.dpos.types import DposHeader
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import node_key_path

    rc = links.relay.client
    assert rc is not None
    st = await rc.call("getClientStatus", {"chain_id": DPOS})
    if st["latest_height"] < 1:  # a fresh devnet: give the client a witness-signed header first
        headers = await links.parks[DPOS].source.headers(1, 3)
        h = await links.relay.target.submit("client.update", {"chain_id": DPOS,
                                                              "headers": [x.encode().hex() for x in headers]})
        await wait_for("the first DPoS headers", lambda: rc.call("getTxResult", {"hash": h}), 30)
        st = await rc.call("getClientStatus", {"chain_id": DPOS})
    async with live.d.client(DPOS, "witness-a") as dpos:
        h = DposHeader.decode(bytes.fromhex((await dpos.call("getHeader", {"height": st["latest_height"]}))
                                            ["header"]))
    witness = ed25519_signer(node_key_path(live.cfg, DPOS, h.producer))
    twin = replace(h, state_root=bytes(32), signature=b"")
    twin = twin.with_signature(witness.sign(twin.signing_bytes()))
    tx = await links.relay.target.submit("client.misbehaviour", {"chain_id": DPOS, "header_a": h.encode().hex(),
                                                                 "header_b": twin.encode().hex()})
    await wait_for("the double-sign evidence in a block", lambda: rc.call("getTxResult", {"hash": tx}), 30)
    st = await rc.call("getClientStatus", {"chain_id": DPOS})
    assert st["status"] == "active", st
    assert [e["witness"] for e in st["evidence"]] == [h.producer], st["evidence"]  # recorded in relay state


async def _dpos_colluders_finalise_a_conflicting_branch(live: Net, links: Relayer) -> None:
    """Every witness (their devnet keys: more than 2/3 of the set collude) signs a branch from a final block,
    conflicting with the final block above it, long enough that more than 2/3 of the set built on it: two
    conflicting irreversible blocks. Submitted as ``client.misbehaviour {branch}``, it freezes the client."""
    import json

    from chains.dpos.consensus import FinalityTracker
    from chains.dpos.testing import forge_branch
    from chains.dpos.types import DposHeader, DposParams
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import node_key_path

    rc = links.relay.client
    assert rc is not None
    st = await rc.call("getClientStatus", {"chain_id": DPOS})
    fork = max(st["final_height"] - 2, 0)
    async with live.d.client(DPOS, "witness-a") as dpos:
        parent = DposHeader.decode(bytes.fromhex((await dpos.call("getHeader", {"height": fork}))["header"]))
        # the state after the fork block: its tracker's set schedules the blocks above it
        tracker = FinalityTracker.from_json(json.loads(bytes.fromhex(
            (await dpos.call("query", {"key": "dpos/tracker", "height": fork}))["value"])))
        params = DposParams.from_json(json.loads(bytes.fromhex(
            (await dpos.call("query", {"key": "dpos/params", "height": fork}))["value"])))
    active = tracker.active
    signers = {name: ed25519_signer(node_key_path(live.cfg, DPOS, name)) for name in active.names}
    branch = forge_branch(parent, active, signers, params, 2 * len(active.names))
    await links.relay.target.submit("client.misbehaviour", {"chain_id": DPOS,
                                                            "branch": [x.encode().hex() for x in branch]})


async def _relay_quorum_attests_a_lie(live: Net, links: Relayer, frozen: Any) -> None:
    """Three of the four relay validators (their devnet keys) attest a made-up hash at a height a few blocks
    ahead, before their honest attestors get there. The real header there is then refused as forged; once the
    honest quorum attests the block above, its header, whose parent is the real block, reveals two chains:
    the client freezes."""
    import hashlib

    from chains.common.tx import Tx
    from protocol.errors import HeaderError, NonceError
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import relay_key_paths

    rc, eth = links.relay.client, links.parks[ETH].source
    assert rc is not None
    depth = int(live.cfg.chain(ETH).params["confirmation_depth"])
    lie = hashlib.sha256(b"a block Ethereum never had").digest()

    async def lie_at_height(v: str, lie_at: int) -> bool:
        """Validator ``v`` attests the lie at ``lie_at``; False if its own attestor attested that height first
        (the race this scenario must not lose by chance: the caller then lies further ahead)."""
        signer = ed25519_signer(relay_key_paths(live.cfg, v)[0])
        sent: list[str] = []

        async def landed() -> bool:
            results = [await rc.call("getTxResult", {"hash": h}) for h in sent]
            return any(r is not None and r["ok"] for r in results)

        # the validator's own attestor sends from this account too: a clash of nonces drops one of the two, so
        # send again until one of ours is in a block
        for _ in range(20):
            acct = await rc.call("getAccount", {"name": v})
            tx = Tx.signed(signer, live.cfg.relay_chain_id, v, int(acct["nonce"]) + int(acct.get("pending", 0)),
                           "client.attest", {"chain_id": ETH, "height": lie_at, "block_hash": lie.hex(),
                                             "head_height": lie_at + depth})
            try:
                sent.append((await rc.call("submitTx", {"tx": tx.to_json()}))["hash"])
            except NonceError:
                continue
            except ReplayError:
                return False  # its attestor got to this height first
            try:
                await wait_for(f"{v}'s attestation in a block", landed, 3)
                return True
            except AssertionError:
                if await rc.call("getTxResult", {"hash": sent[-1]}) is None:
                    continue
                return False  # in a block but refused: the honest attestation got there first
        raise AssertionError(f"{v}'s attestation never got into a block")

    for attempt in range(5):
        # far enough ahead that the honest attestors (at confirmation depth behind the head) cannot get there
        # while the three lies are being sent; further ahead on each new attempt
        lie_at = await eth.latest_height() + 12 + 12 * attempt
        if all([await lie_at_height(v, lie_at) for v in live.cfg.relay_validators[:3]]):
            break
    else:
        raise AssertionError("the honest attestors reached the lie's height first on every attempt")

    async def revealed() -> bool:
        """Feed the header above the lie until the honest quorum there makes it final (and the client freezes)."""
        if await frozen():
            return True
        if await eth.latest_height() < lie_at + 1 + depth:
            return False
        (above,) = await eth.headers(lie_at + 1, lie_at + 1)
        try:
            await links.relay.target.submit("client.update", {"chain_id": ETH, "headers": [above.encode().hex()]})
        except (HeaderError, ReplayError):
            pass  # not attested above yet: it cannot extend the lie, so it is refused for now
        return False

    # the park must first grow past the lie (up to 60 blocks ahead after retries), then its attestors get there
    ahead_s = max(0, lie_at + 1 + depth - await eth.latest_height()) * live.cfg.chain(ETH).params["block_interval_ms"]
    await wait_for("the honest attestations above the lie", revealed, 90 + ahead_s / 1000, poll_s=0.5)
