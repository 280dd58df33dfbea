"""A byzantine relay validator, end to end on real processes (issue 15; SPEC.md §7.7).

Four relay validators, a DPoS park joined by lanes to a PoC park (``lane-0``) and to the Fabric park (``lane-1``: its
bridge is the chaincode, on real peers and orderers), and the Ethereum park (no lane: its bridge is there to receive
the rotation). All four parks start together (their processes are spawned at once). Validator ``op-d``
equivocates: this test signs two conflicting prevotes of one height and round with op-d's own key file (TEST ONLY:
a devnet's keys are generated at run time) and posts them to every validator's P2P consensus route, as a byzantine
op-d would gossip them. What follows is the real thing:

* the honest nodes' consensus cores detect the double vote (``EvidenceFound``) and a node submits
  ``evidence.submit`` itself;
* the relay chain jails op-d in the block that includes it; that block's header names the three-validator set as
  next, and from the next height the relay chain runs on it (op-d's node follows as an observer);
* the relayers carry the rotation (the commit of the jailing block, signed by the four) to every park's bridge
  (``bridge.update_relay_validators``): the DPoS and PoC bridges, the Ethereum ``ParkBridge`` and the Fabric
  bridge chaincode then trust the new set (read back from each: the Fabric chaincode's stored set no longer holds
  op-d's keys and its hash is the relay's new set's), so certificates of the three verify there and op-d's key no
  longer counts;
* packets sent before, during and after, on both lanes and both ways, complete exactly once (each receiver
  credited once with each amount), and the standard checks hold: nothing non-final, the supply conserved per
  denomination and trace (escrow at home == the vouchers of it outstanding on the other parks), every charging
  right exactly once.
"""

from __future__ import annotations

import os

# the Fabric park's adapter (hfc) needs the pure-Python protobuf, chosen before protobuf's first import
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from chains.common import wire
from chains.common.rights import rights_violations
from protocol.certificate import ValidatorSet
from protocol.codec import decode_packet
from protocol.errors import TransportError
from protocol.types import ChainId
from relay.chain.consensus import ValidatorKey, VoteType, encode_message
from relay.chain.consensus.messages import sign_vote
from relay.ops.config import ConfigError
from relay.ops.keys import read_secret
from relay.ops.layout import relay_key_paths
from relay.ops.packets import packet_key
from relay.ops.parks import FabricPark, park_view
from tests.integration.harness import wait_for
from tests.integration.test_four_phases import (
    DPOS,
    ETH,
    FABRIC,
    LANE,
    ORDER,
    POC,
    RELAY,
    USER,
    Net,
    started_net,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BYZANTINE = "op-d"
FABRIC_LANE = "lane-1"
LANES = {frozenset((DPOS, POC)): LANE, frozenset((DPOS, FABRIC)): FABRIC_LANE}
"""The lanes: DPoS <-> PoC and DPoS <-> Fabric (the Ethereum park has none: its bridge only receives the rotation)."""
PARKS = (DPOS, POC, ETH, FABRIC)


def lane_of(a: str, b: str) -> str:
    return LANES[frozenset((a, b))]


def voucher(src: str, dst: str) -> str:
    """The denomination ``dst`` mints for ``src``'s kWh carried over their lane (SPEC §2.3)."""
    return f"{lane_of(src, dst)}/{src}/kWh"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with started_net(tmp_path_factory.mktemp("byzantine"), [DPOS, POC, ETH, FABRIC],
                     [{"lane": lane, "a": a, "b": b} for (a, b), lane in
                      (((DPOS, POC), LANE), ((DPOS, FABRIC), FABRIC_LANE))],
                     ["relayer-a", "relayer-b"]) as n:
        n.views.update({c: park_view(n.cfg, c) for c in PARKS if c not in n.views})
        yield n


async def relay_call(net: Net, method: str, params: dict[str, Any] | None = None, node: str | None = None) -> Any:
    c = net.d.client(RELAY, node or net.cfg.relay_validators[0])
    async with c:
        return await c.call(method, params or {})


async def equivocate(net: Net, key: ValidatorKey, index: int) -> int:
    """Two prevotes of op-d for two different blocks at the next height, round 0, posted to every validator.
    Returns the height voted at."""
    height = int((await relay_call(net, "status"))["height"]) + 1
    chain = ChainId(net.cfg.relay_chain_id)
    votes = [sign_vote(key, chain, VoteType.PREVOTE, height, 0, os.urandom(32), index, with_secp256k1=True)
             for _ in range(2)]
    async with aiohttp.ClientSession() as session:
        for v in net.cfg.relay_validators:
            for vote in votes:
                try:
                    async with session.post(net.cfg.relay_url(v) + "/p2p/consensus",
                                            json={"msg": encode_message(vote).hex()}) as r:
                        await r.read()
                except aiohttp.ClientError:
                    pass
    return height


async def bridge_set_hash(net: Net, chain: str) -> str:
    """The hash of the relay validator set a park's bridge trusts."""
    if net.kind(chain) == "ethereum":
        links = await net.links()
        try:
            return (await links.parks[chain].target.relay_set_hash()).hex()  # type: ignore[attr-defined]
        finally:
            await links.close_links()
    return (await bridge_set(net, chain)).hash.hex()


async def bridge_set(net: Net, chain: str) -> ValidatorSet:
    """The relay validator set a DPoS, PoC or Fabric park's bridge stores (``bridge/relay_validators``), read back
    from it: a Python park's node's state query, or the Fabric bridge chaincode's ``config`` query (endorsed by a
    peer: the chaincode's own world state). Its hash is checked against its validators when it is parsed."""
    if net.kind(chain) == "fabric":
        raw = (await fabric_query(net, "config"))["relay_validators"]
    else:
        c = net.d.client(chain, net.cfg.chain(chain).nodes[0])
        async with c:
            got = await c.call("query", {"key": "bridge/relay_validators"})
        raw = json.loads(bytes.fromhex(got["value"]))
    return wire.validator_set_from_json({"validators": raw["validators"], "hash": raw["hash"]})


async def fabric_query(net: Net, fcn: str) -> Any:
    """A query function of the Fabric park's bridge chaincode (evaluated by a peer), its JSON answer."""
    view = net.views[FABRIC]
    assert isinstance(view, FabricPark)
    return await asyncio.to_thread(view._json, fcn)


async def send(net: Net, src: str, dst: str, amount_wh: int, timeout_s: float = 300) -> str:
    """Phase 1 on ``src`` by its user to ``dst``'s user over their lane; the packet key once its block is in.

    On the Fabric park a proposal no peer could be reached to endorse (a gRPC connection not set up within the
    view's 5 s on a loaded machine) is proposed again: nothing was sent to the orderers, so nothing can commit twice
    (an error after the broadcast is not retried)."""
    to = net.views[dst].account(USER[dst])
    for attempt in range(3):
        try:
            sent = await asyncio.to_thread(net.views[src].transfer, USER[src], dst, to, amount_wh, "kWh",
                                           lane_of(src, dst), int((time.time() + timeout_s) * 1000), wait_final=False)
            break
        except TransportError as exc:
            if net.kind(src) != "fabric" or "endorsing send" not in str(exc) or attempt == 2:
                raise
    return packet_key(decode_packet(sent["packet"]))


async def standard_checks(net: Net) -> None:
    """Nothing non-final on any park, the supply conserved per denomination and trace (each park's kWh escrowed
    at home == the vouchers of it outstanding on the parks it has a lane to), every charging right exactly once."""
    from relay.ops.packets import list_packets

    rows = await asyncio.to_thread(list_packets, net.cfg)
    stuck = [r["packet"] + ":" + r["state"] for r in rows if r["state"] not in ("completed", "refunded")]
    assert not stuck, f"packets not final: {stuck}"
    for home in (DPOS, POC, FABRIC):
        escrowed = await asyncio.to_thread(net.views[home].escrow, "kWh")
        out = 0
        for other in (DPOS, POC, FABRIC):
            if frozenset((home, other)) in LANES:
                out += await asyncio.to_thread(net.views[other].voucher_supply, voucher(home, other))
        assert escrowed == out, f"{home}'s kWh: {escrowed} escrowed, {out} vouchers on the other parks"
    reports = {c: await asyncio.to_thread(net.views[c].rights) for c in PARKS}
    assert rights_violations(reports) == []


async def test_an_equivocating_validator_is_jailed_and_every_bridge_rotates(net: Net) -> None:
    await wait_ready(net)  # the relay chain, DPoS and PoC

    async def fabric_ready() -> bool:
        try:
            return int((await asyncio.to_thread(net.views[FABRIC].status))["final_height"]) >= 2
        except OSError:
            return False

    await wait_for("the Fabric park up", fabric_ready, 120, poll_s=0.5)
    for name in ("relayer-a", "relayer-b"):
        net.start_relayer(name)
    genesis_set = wire.validator_set_from_json(await relay_call(net, "getValidators"))
    ed_path, eth_path = relay_key_paths(net.cfg, BYZANTINE)
    key = ValidatorKey(read_secret(ed_path), read_secret(eth_path))
    index = next(i for i, v in enumerate(genesis_set.validators) if v.ed25519_pubkey == key.ed25519_pubkey)
    assert (await bridge_set(net, FABRIC)).hash == genesis_set.hash
    directions = [(DPOS, POC), (POC, DPOS), (DPOS, FABRIC), (FABRIC, DPOS)]
    start = {(s, d): await net.balance(d, voucher(s, d)) for s, d in directions}

    sent: list[tuple[str, str, int]] = []

    async def transfer(src: str, dst: str, amount: int) -> str:
        sent.append((src, dst, amount))
        return await send(net, src, dst, amount)

    # before: carried under the four-validator set
    keys = [await transfer(DPOS, POC, 1_000), await transfer(POC, DPOS, 700), await transfer(DPOS, FABRIC, 600),
            await transfer(FABRIC, DPOS, 500)]

    async def executed_under_the_old_set() -> bool:
        try:
            states = [(await net.packet(k))["state"] for k in keys]
        except (OSError, ConfigError):  # a node slow to answer (the CLI's 3 s), or one not at that block yet
            return False
        return all(ORDER.index(s) >= ORDER.index("executed") for s in states)

    await wait_for("the first packets executed on their targets", executed_under_the_old_set, 240, poll_s=1.0)
    assert (await relay_call(net, "getValidators"))["hash"] == genesis_set.hash.hex()

    # op-d equivocates until a node's evidence jails it (a double vote for a height already decided when it arrives
    # is ignored as late gossip, so it is sent again for the then-next height)
    jailed: list[dict[str, Any]] = []
    first = int((await relay_call(net, "status"))["height"])

    async def evidence_landed() -> bool:
        await equivocate(net, key, index)
        jailed[:] = await relay_call(net, "getEvents", {"from": first, "type": "validator_jailed"})
        return bool(jailed)

    keys += [await transfer(DPOS, POC, 300), await transfer(FABRIC, DPOS, 250)]  # during
    await wait_for("op-d's equivocation detected and punished", evidence_landed, 120, poll_s=0.5)
    (ev,) = jailed
    assert ev["validator"] == BYZANTINE and ev["ed25519_pubkey"] == key.ed25519_pubkey.hex()
    jail_height = int(ev["jailed_at"])
    # a relay node reported it itself (op-d's own node too may: its software is honest, its key was misused here)
    assert ev["reporter"] in net.cfg.relay_validators
    block = await relay_call(net, "getBlock", {"height": jail_height})
    (tx,) = [t for t in block["txs"] if t["op"] == "evidence.submit"]
    assert tx["sender"] == ev["reporter"] and tx["signature"] == ""
    # during: the rotation is on its way to the bridges
    keys += [await transfer(POC, DPOS, 200), await transfer(DPOS, FABRIC, 150)]
    # the relay chain: the jailing block names the new set as next; the next height is signed by the three
    new_set = wire.validator_set_from_json(await relay_call(net, "getValidators"))
    assert [v.name for v in new_set.validators] == [v.name for v in genesis_set.validators if v.name != BYZANTINE]
    assert new_set.hash.hex() == ev["next_set_hash"]
    rotation = await relay_call(net, "getCommit", {"height": jail_height})
    assert rotation["header"]["validators_hash"] == genesis_set.hash.hex()
    assert rotation["header"]["next_validators_hash"] == new_set.hash.hex()
    history = await relay_call(net, "getValidatorHistory")
    assert history == [{"from_height": 1, "hash": genesis_set.hash.hex()},
                       {"from_height": jail_height + 1, "hash": new_set.hash.hex()}]

    async def after_rotation() -> dict[str, Any] | None:
        st = await relay_call(net, "status")
        if int(st["final_height"]) < jail_height + 2:
            return None
        c: dict[str, Any] = await relay_call(net, "getCommit", {"height": jail_height + 2})
        return c

    later = await wait_for("the relay chain past the rotation", after_rotation, 60)
    assert later["header"]["validators_hash"] == new_set.hash.hex()
    signers = {new_set.validators[s["validator_index"]].name for s in later["signatures"]}
    assert BYZANTINE not in signers and len(signers) == 3
    for v in net.cfg.relay_validators:  # every node, op-d's included, agrees on the set and the blocks
        assert (await relay_call(net, "getValidators", node=v))["hash"] == new_set.hash.hex()
        assert (await relay_call(net, "getCommit", {"height": jail_height}, node=v))["header"] == rotation["header"]

    # every park's bridge, the EVM one and the Fabric chaincode included, now trusts the new set (the relayers
    # delivered the rotation)
    for chain in (DPOS, POC, ETH, FABRIC):
        async def rotated(chain: str = chain) -> bool:
            return await bridge_set_hash(net, chain) == new_set.hash.hex()

        await wait_for(f"{chain}'s bridge on the new relay set", rotated, 90, poll_s=0.5)
    # read back from the chaincode: the three, op-d's keys (its Ed25519 key and its Ethereum address) gone
    on_fabric = await bridge_set(net, FABRIC)
    assert on_fabric == new_set
    assert key.ed25519_pubkey not in {v.ed25519_pubkey for v in on_fabric.validators}
    assert key.eth_address not in {v.eth_address for v in on_fabric.validators}
    trust = await fabric_query(net, "relay_trust")
    assert int(trust["update_height"]) >= jail_height, trust

    # after: certificates of the three only, to and from every park with a lane (Fabric's recv and its settle of
    # the ack verify the new set's signatures)
    keys += [await transfer(DPOS, POC, 50), await transfer(POC, DPOS, 40), await transfer(DPOS, FABRIC, 30),
             await transfer(FABRIC, DPOS, 20)]

    async def all_final() -> dict[str, dict[str, Any]] | None:
        try:
            rows = {k: await net.packet(k) for k in keys}
        except (OSError, ConfigError):  # a node slow to answer (the CLI's 3 s), or one not at that block yet
            return None
        return rows if all(r["state"] in ("completed", "refunded") for r in rows.values()) else None

    rows = await wait_for("every packet final", all_final, 240, poll_s=1.0)
    assert all(r["state"] == "completed" for r in rows.values()), rows
    # exactly once: each receiver credited once with each amount sent to it, per lane direction
    for src, dst in directions:
        got = await net.balance(dst, voucher(src, dst)) - start[(src, dst)]
        assert got == sum(a for s_, d_, a in sent if (s_, d_) == (src, dst)), (src, dst, got, sent)
    await standard_checks(net)
