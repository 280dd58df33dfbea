"""A byzantine relay validator, end to end on real processes (issue 15; SPEC.md §7.7).

Four relay validators, a DPoS park and a PoC park joined by a lane, and the Ethereum park (no lane: its bridge is
there to receive the rotation). Validator ``op-d`` equivocates: this test signs two conflicting prevotes of one
height and round with op-d's own key file (TEST ONLY: a devnet's keys are generated at run time) and posts them
to every validator's P2P consensus route, as a byzantine op-d would gossip them. What follows is the real thing:

* the honest nodes' consensus cores detect the double vote (``EvidenceFound``) and a node submits
  ``evidence.submit`` itself;
* the relay chain jails op-d in the block that includes it; that block's header names the three-validator set as
  next, and from the next height the relay chain runs on it (op-d's node follows as an observer);
* the relayers carry the rotation (the commit of the jailing block, signed by the four) to every park's bridge
  (``bridge.update_relay_validators``): the DPoS and PoC bridges and the Ethereum ``ParkBridge`` then trust the
  new set, so certificates of the three verify there and op-d's key no longer counts;
* packets sent before, during and after complete exactly once (each receiver credited once with each amount),
  and the supply is conserved (escrow at home == vouchers outstanding, both ways).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from chains.common import wire
from protocol.types import ChainId
from relay.chain.consensus import ValidatorKey, VoteType, encode_message
from relay.chain.consensus.messages import sign_vote
from relay.ops.config import ConfigError
from relay.ops.keys import read_secret
from relay.ops.layout import relay_key_paths
from tests.integration.harness import wait_for
from tests.integration.test_four_phases import (
    DPOS,
    ETH,
    LANE,
    ORDER,
    POC,
    RELAY,
    Net,
    started_net,
    voucher,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BYZANTINE = "op-d"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with started_net(tmp_path_factory.mktemp("byzantine"), [DPOS, POC, ETH], [{"lane": LANE, "a": DPOS, "b": POC}],
                     ["relayer-a", "relayer-b"]) as n:
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
    if net.cfg.chain(chain).kind == "ethereum":
        links = await net.links()
        try:
            return (await links.parks[chain].target.relay_set_hash()).hex()  # type: ignore[attr-defined]
        finally:
            await links.close_links()
    c = net.d.client(chain, net.cfg.chain(chain).nodes[0])
    async with c:
        got = await c.call("query", {"key": "bridge/relay_validators"})
    return str(json.loads(bytes.fromhex(got["value"]))["hash"])


async def test_an_equivocating_validator_is_jailed_and_every_bridge_rotates(net: Net) -> None:
    await wait_ready(net)
    for name in ("relayer-a", "relayer-b"):
        net.start_relayer(name)
    genesis_set = wire.validator_set_from_json(await relay_call(net, "getValidators"))
    ed_path, eth_path = relay_key_paths(net.cfg, BYZANTINE)
    key = ValidatorKey(read_secret(ed_path), read_secret(eth_path))
    index = next(i for i, v in enumerate(genesis_set.validators) if v.ed25519_pubkey == key.ed25519_pubkey)
    start = {c: await net.balance(c, voucher(net.other(c))) for c in (DPOS, POC)}

    sent: list[tuple[str, int]] = []

    async def send(src: str, amount: int) -> str:
        sent.append((src, amount))
        return await net.send(src, amount)

    keys = [await send(DPOS, 1_000), await send(POC, 700)]  # before: carried under the four-validator set

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

    keys.append(await send(DPOS, 300))  # during
    await wait_for("op-d's equivocation detected and punished", evidence_landed, 120, poll_s=0.5)
    (ev,) = jailed
    assert ev["validator"] == BYZANTINE and ev["ed25519_pubkey"] == key.ed25519_pubkey.hex()
    jail_height = int(ev["jailed_at"])
    # a relay node reported it itself (op-d's own node too may: its software is honest, its key was misused here)
    assert ev["reporter"] in net.cfg.relay_validators
    block = await relay_call(net, "getBlock", {"height": jail_height})
    (tx,) = [t for t in block["txs"] if t["op"] == "evidence.submit"]
    assert tx["sender"] == ev["reporter"] and tx["signature"] == ""
    keys.append(await send(POC, 200))  # during: the rotation is on its way to the bridges

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

    # every park's bridge, the EVM one included, now trusts the new set (the relayers delivered the rotation)
    for chain in (DPOS, POC, ETH):
        async def rotated(chain: str = chain) -> bool:
            return await bridge_set_hash(net, chain) == new_set.hash.hex()

        await wait_for(f"{chain}'s bridge on the new relay set", rotated, 90, poll_s=0.5)

    keys += [await send(DPOS, 50), await send(POC, 40)]  # after: certificates of the three only

    async def all_final() -> dict[str, dict[str, Any]] | None:
        try:
            rows = {k: await net.packet(k) for k in keys}
        except (OSError, ConfigError):  # a node slow to answer (the CLI's 3 s), or one not at that block yet
            return None
        return rows if all(r["state"] in ("completed", "refunded") for r in rows.values()) else None

    rows = await wait_for("every packet final", all_final, 240, poll_s=1.0)
    assert all(r["state"] == "completed" for r in rows.values()), rows
    # exactly once: each receiver credited once with each amount sent to it
    for chain in (DPOS, POC):
        got = await net.balance(chain, voucher(net.other(chain))) - start[chain]
        assert got == sum(a for src, a in sent if src == net.other(chain)), (chain, got, sent)
    await net.check_invariants()
