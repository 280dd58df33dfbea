"""The relay hosting a PoC client with its finality window (SPEC §8.4), end to end over real park state.

A PoC park (:class:`chains.poc.testing.SimChain`, real plots, blocks executed as its node does) sends a packet;
the relay, created from the park's genesis with the default window, is updated with the park's headers and asked
to verify the packet. Relay time is the block time of each relay transaction. Finality must wait for the window,
then advance on a later update (even one with only held headers) or before a verify, and the state-reported
``final_height`` must be the one proofs are checked against. A node rebuilt from state before every transaction
reaches the same roots.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chains.common.state import ChainState
from chains.common.tx import Tx, account_path
from chains.poc.light_client import PocClientParams
from chains.poc.plots import Farmer
from protocol.codec import encode_packet
from protocol.errors import NotFinalError, ReplayError
from tests.unit.relay_state.test_park_clients import (
    BOB,
    DPOS,
    POC,
    RELAY,
    RELAYER,
    RelayNode,
    dpos_park,
    poc_park,
    relay_genesis,
    send_args,
    sent_packet,
    verify_args,
)

W = PocClientParams().finality_window_ms


def tx(node: RelayNode, op: str, args: dict[str, Any]) -> Tx:
    nonce = node.state.get_json(account_path("relayer-a"))["nonce"]
    return Tx.signed(RELAYER, RELAY, "relayer-a", nonce, op, args)


def update(node: RelayNode, headers: list[Any], now: int) -> list[dict[str, Any]]:
    return node.run(tx(node, "client.update", {"chain_id": POC, "headers": [h.encode().hex() for h in headers]}), now)


def test_relay_finalises_poc_headers_a_window_after_it_sees_them(farmers: list[Farmer]) -> None:
    park = poc_park(farmers)
    genesis = relay_genesis(dpos_park().config, park.config)
    genesis["clients"][POC]["init"].pop("finality_window_ms")  # the default window
    node = RelayNode(json.loads(json.dumps(genesis)))
    depth = node.sm.router.load(node.state, POC).client.confirmation_depth  # type: ignore[attr-defined]
    steps: list[tuple[Tx, int]] = []

    def run(op: str, args: dict[str, Any], now: int) -> list[dict[str, Any]]:
        t = tx(node, op, args)
        events = node.run(t, now)
        steps.append((t, now))
        return events

    park.produce([park.tx(BOB, "bob", "bridge.send", send_args(DPOS, "alice", 700))])
    assert park.failed[-1] == []
    packet, height = sent_packet(park.events[-1]), park.tip.height
    park.produce_many(depth + 2)

    t1 = park.tip.timestamp_ms
    events = run("client.update", {"chain_id": POC, "headers": [h.encode().hex() for h in park.headers[1:]]}, t1)
    assert events[0]["final_height"] == 0  # deep enough, but held for no time
    assert node.status(POC, t1)["final_height"] == 0

    root = node.state.root
    with pytest.raises(NotFinalError) as exc:
        node.sm.execute_tx(node.state, tx(node, "packet.verify", verify_args(packet, height, park.trees[height])),
                           _ctx(node, t1 + W - 1))
    assert exc.value.code == "header.not_final"
    node.state = _rolled_back(node, root)

    # a window later, the verify itself advances finality (persisted, reported) before checking the proof
    events = run("packet.verify", verify_args(packet, height, park.trees[height]), t1 + W)
    kinds = [e["type"] for e in events]
    assert kinds == ["client_updated", "packet_verified"]
    assert events[0]["heights"] == [] and events[0]["final_height"] == park.tip.height - depth
    assert node.status(POC, t1 + W)["final_height"] == park.tip.height - depth
    assert node.sm.packet_state(node.state, encode_packet(packet)) == "verified"

    # the next heartbeat brings the park's new headers; they are final one window after it, on the heartbeat
    # after that (a PoC park always has a new header by then)
    first_new = park.tip.height + 1
    park.produce_many(4)
    t2 = max(park.tip.timestamp_ms, t1 + W) + 1
    events = run("client.update", {"chain_id": POC, "headers": [h.encode().hex() for h in park.headers[first_new:]]},
                 t2)
    final_before = events[0]["final_height"]
    assert final_before < park.tip.height - depth
    # an update with only held headers executes as progress if finality moves (the mempool refuses it first:
    # admission has no clock), and as packet.replay if not
    held_only = {"chain_id": POC, "headers": [park.tip.encode().hex()]}
    with pytest.raises(ReplayError):
        node.sm.execute_tx(node.state, tx(node, "client.update", held_only), _ctx(node, t2 + W - 1))
    scratch = ChainState(node.state.tree)
    events = node.sm.execute_tx(scratch, tx(node, "client.update", held_only), _ctx(node, t2 + W))
    assert events[0]["heights"] == [] and events[0]["final_height"] == park.tip.height - depth
    first_new = park.tip.height + 1
    park.produce_many(1)
    events = run("client.update", {"chain_id": POC, "headers": [h.encode().hex() for h in park.headers[first_new:]]},
                 max(park.tip.timestamp_ms, t2 + W))
    assert events[0]["final_height"] == park.tip.height - depth > final_before  # all below the new one held W

    # a node rebuilt from state before every transaction reaches the same roots
    replay = RelayNode(json.loads(json.dumps(genesis)), restart=True)
    for t, now in steps:
        replay.run(t, now)
    assert replay.state.root == node.state.root


def _ctx(node: RelayNode, now: int) -> Any:
    from chains.common.tx import BlockContext

    return BlockContext(RELAY, node.height + 1, now, "v0")


def _rolled_back(node: RelayNode, root: bytes) -> ChainState:
    # execute_tx raised: the state machine's own rollback leaves the state as it was
    assert node.state.root == root
    return node.state
