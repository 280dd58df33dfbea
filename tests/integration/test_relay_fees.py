"""Relay fees and bonds on real processes (protocol SPEC §6.10, §6.9): two relayer services racing over a devnet pair,
senders escrowing fees with their packets, the parks paying the relayers that did each step first; an outside
relay account refused until a park operator funds its bond.

For each pair (the Python parks; Ethereum and Fabric as source and target), after the packets settle:

* every fee escrowed is paid or refunded exactly once: per packet and step, one ``fee_paid`` or ``fee_refunded``
  event on the source, for the amount escrowed (escrowed = paid + refunded);
* a step is paid only to a payee of the deployment's two relayers (whichever won the race), and a timed-out
  packet's execute fee (never earned) goes back to its sender, as do the verify and execute fees of a packet no
  relayer verified;
* each relayer's ``parkrelay relayer earnings`` equals what the parks paid its payees;
* supply is conserved and no relay transaction failed in a block.
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from protocol.codec import decode_packet
from relay.ops.packets import packet_key
from relay.relayer.relayer import Relayer
from tests.integration.harness import REPO, wait_for
from tests.integration.test_four_phases import LANE, USER, Net, failed_since, started_net, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PAIRS = {"dpos-poc": ("dpos-park", "poc-park"), "eth-fabric": ("eth-park", "fabric-park")}
FEES = {"verify": 3, "execute": 5, "confirm": 2}


@pytest.fixture(scope="module", params=list(PAIRS))
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    a, b = PAIRS[request.param]
    with started_net(tmp_path_factory.mktemp(f"fees-{request.param}"), [a, b],
                     [{"lane": LANE, "a": a, "b": b}], ["relayer-a", "relayer-b"]) as n:
        yield n


@pytest.fixture
async def live(net: Net) -> AsyncIterator[Net]:
    yield await wait_ready(net)


async def send_with_fees(net: Net, src: str, amount_wh: int, fees: dict[str, int], timeout_s: float = 300) -> str:
    dst = net.other(src)
    to = net.views[dst].account(USER[dst])
    asset = {"kind": "energy", "denom": "kWh", "amount_wh": amount_wh, "fees": fees}
    sent = await asyncio.to_thread(net.views[src].send, USER[src], dst, to, LANE,
                                   int((time.time() + timeout_s) * 1000), asset, wait_final=False)
    return packet_key(decode_packet(sent["packet"]))


async def fee_events(links: Relayer, chain: str) -> list[dict[str, Any]]:
    """Every ``send_packet``, ``fee_paid`` and ``fee_refunded`` event of ``chain``'s final blocks, as the relayer
    reads them (the same shapes on every kind)."""
    src = links.parks[chain].source
    final = await src.final_height()
    out: list[dict[str, Any]] = []
    for start in range(1, final + 1, 1000):
        out += [e for e in await src.events(start, min(final, start + 999))
                if isinstance(e, dict) and e.get("type") in ("send_packet", "fee_paid", "fee_refunded")]
    return out


async def payees_of(net: Net, name: str, chains: tuple[str, str]) -> dict[str, str | None]:
    """Relayer ``name``'s payee on each chain: where the parks pay its fees."""
    links = await net.links(name)
    try:
        return {c: links.parks[c].payee for c in chains}
    finally:
        await links.close_links()


def earnings(net: Net, name: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "relay.cli", "relayer", "earnings", "--config", str(net.cfg.path),
                          "--name", name, "--json"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    rows: list[dict[str, Any]] = json.loads(out.stdout)["earned"]
    return rows


async def test_racing_relayers_are_paid_each_step_they_won_and_every_fee_is_paid_or_refunded(live: Net) -> None:
    a, b = live.a, live.b
    failed_before = await live.failed_txs_in_blocks()
    # a packet no relayer will verify before its timeout: only its confirm step can be earned (an unverified timeout)
    late = await send_with_fees(live, a, 7, FEES, timeout_s=3)
    links = await live.links()
    try:
        await live.wait_targets_past_timeouts({a: late}, links)
        live.start_relayer("relayer-a")
        live.start_relayer("relayer-b")
        keys = [await send_with_fees(live, a, 10, FEES) for _ in range(4)]
        keys += [await send_with_fees(live, b, 20, {"verify": 1, "confirm": 4}) for _ in range(3)]
        keys.append(await send_with_fees(live, a, 10, {}))  # no fees: relayed all the same
        rows = await live.wait_final([*keys, late])
        assert rows[late]["state"] == "refunded"
        assert all(rows[k]["state"] == "completed" for k in keys)
        payees = {name: await payees_of(live, name, (a, b)) for name in ("relayer-a", "relayer-b")}
        paid_to: dict[tuple[str, str], int] = {}  # (relayer, chain) -> amount
        for chain in (a, b):
            async def all_settled(chain: str = chain) -> list[dict[str, Any]] | None:
                events = await fee_events(links, chain)
                sends = sum(1 for e in events if e["type"] == "send_packet" and e.get("fees"))
                steps = sum(1 for e in events if e["type"] == "send_packet" for v in (e.get("fees") or {}).values()
                            if isinstance(v, int) and v)
                done = sum(1 for e in events if e["type"] != "send_packet")
                return events if sends and done >= steps else None

            # the settlements' blocks final on the source (a PoC park's take a few blocks more than the settlement)
            events = await wait_for(f"{chain}'s fee settlements final", all_settled, 60, poll_s=0.5)
            escrowed = {packet_key(decode_packet(bytes.fromhex(e["packet"]))): e["fees"]
                        for e in events if e["type"] == "send_packet" and e.get("fees")}
            settled: dict[tuple[str, str], dict[str, Any]] = {}
            for e in events:
                if e["type"] == "send_packet":
                    continue
                k = (f"{e['src']}/{e['dst']}/{e['lane']}/{e['sequence']}", e["step"])
                assert k not in settled, f"{k} paid or refunded twice"
                settled[k] = e
            # escrowed = paid + refunded, per packet and step
            assert {k: e["amount"] for k, e in settled.items()} == {
                (key, step): amount for key, fees in escrowed.items()
                for step, amount in fees.items() if step in FEES and amount}
            for (key, step), e in settled.items():
                if e["type"] == "fee_paid":
                    winner = [n for n, p in payees.items() if p[chain] == e["payee"]]
                    assert winner, f"{key} {step} paid to {e['payee']}, not a relayer's payee"
                    paid_to[(winner[0], chain)] = paid_to.get((winner[0], chain), 0) + e["amount"]
                else:
                    assert e["to"] == live.views[chain].account(USER[chain])
            if chain == a:  # the late packet: never verified, so only its confirm fee was earned
                assert settled[(late, "verify")]["type"] == "fee_refunded"
                assert settled[(late, "execute")]["type"] == "fee_refunded"
                assert settled[(late, "confirm")]["type"] == "fee_paid"
                for k in keys[:4]:
                    assert all(settled[(k, s)]["type"] == "fee_paid" for s in FEES)
        assert sum(paid_to.values()) == 4 * 10 + 2 + 3 * 5
        for name in ("relayer-a", "relayer-b"):
            expected = {c: n for (who, c), n in paid_to.items() if who == name and n}

            async def reported(name: str = name, expected: dict[str, int] = expected) -> bool:
                got: dict[str, int] = {}
                for r in await asyncio.to_thread(earnings, live, name):
                    got[r["chain"]] = got.get(r["chain"], 0) + r["amount"]
                return got == expected

            # each relayer counts a fee once its scanner passed the final block that paid it
            await wait_for(f"{name}'s earnings report {expected}", reported, 60, poll_s=0.5)
    finally:
        live.stop_relayers()
        await links.close_links()
    assert failed_since(failed_before, await live.failed_txs_in_blocks()) == []
    await live.check_invariants()


async def test_an_outside_relayer_needs_a_bond_an_operator_can_fund(live: Net) -> None:
    """SPEC §6.9 on the running relay chain: registering without a bond is refused at admission, free; a park operator
    funds the bond with ``bond.transfer``; the bonded account names its payee and works; once it starts unbonding,
    relay work is refused again."""
    from adapters.common.park import ParkTarget
    from adapters.common.rpc import JsonRpcClient
    from chains.common.tx import Tx
    from protocol.crypto import Ed25519Signer
    from protocol.errors import (
        NonceError,
        ProtocolError,
        TransportError,
        UnbondedAccountError,
        UnbondingAccountError,
    )
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import relay_key_paths

    relay_id = live.cfg.relay_chain_id
    client = JsonRpcClient(live.url("relay"), side=relay_id)
    outsider = Ed25519Signer(os.urandom(32))  # generated for this test, never stored
    register = Tx.signed(outsider, relay_id, "outsider", 0, "account.register", {"pubkey": outsider.pubkey.hex()})
    operator = ParkTarget(client, relay_id, "op-a", ed25519_signer(relay_key_paths(live.cfg, "op-a")[0]))
    try:
        with pytest.raises(UnbondedAccountError):
            await client.call("submitTx", {"tx": register.to_json()})
        with pytest.raises(ProtocolError) as unknown:
            await client.call("getAccount", {"name": "outsider"})
        assert unknown.value.code == "rpc.not_found"  # refused: nothing was written
        # op-a's attestor signs client.attest from the same account (an Ethereum park). A node refuses a second
        # transaction for a nonce it holds (``submit`` reads the nonce again), but two nodes can each take one of
        # them: the one that loses the block is dropped, so offer the transfer again with a fresh nonce
        for attempt in range(3):
            try:
                res = await operator.track(await operator.submit("bond.transfer",
                                                                 {"to": "outsider", "amount": 1000}), 30)
                break
            except (TransportError, NonceError):
                if attempt == 2:
                    raise
        assert res["ok"], res
        await client.call("submitTx", {"tx": register.to_json()})
        me = ParkTarget(client, relay_id, "outsider", outsider)

        async def registered() -> dict[str, Any] | None:
            try:
                acct: dict[str, Any] = await client.call("getAccount", {"name": "outsider"})
            except ProtocolError:  # rpc.not_found: not registered yet
                return None
            return acct if acct.get("status") == "bonded" else None

        acct = await wait_for("outsider bonded", registered, 60, poll_s=0.3)
        assert acct["bond"] == 1000
        res = await me.track(await me.submit("account.set_payee", {"chain": live.a, "payee": "outsider"}), 60)
        assert res["ok"], res
        assert (await client.call("getAccount", {"name": "outsider"}))["payees"] == {live.a: "outsider"}
        res = await me.track(await me.submit("account.unbond", {}), 60)
        assert res["ok"], res
        with pytest.raises(UnbondingAccountError):
            await me.submit("client.update", {"chain_id": live.a, "headers": []})
    finally:
        await client.close()
