"""The relay hosting a PoC client with its finality window (SPEC §8.6), end to end over real park state.

A PoC park (:class:`chains.poc.testing.SimChain`, real plots, blocks executed as its node does) sends a packet;
the relay, created from the park's genesis with the default window, is updated with the park's headers and asked
to verify the packet. Relay time is the block time of each relay transaction. Finality must wait for the window,
then advance on a later update (even one with only held headers) or before a verify, and the state-reported
``final_height`` must be the one proofs are checked against. A node rebuilt from state before every transaction
reaches the same roots.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from chains.common.state import ChainState
from chains.common.tx import Tx, account_path
from chains.poc.light_client import PocClientParams
from chains.poc.plots import Farmer
from protocol.codec import encode_packet
from protocol.crypto import Ed25519Signer
from protocol.errors import InvalidProofError, NotFinalError, ReplayError
from relay.chain.state_machine.clients import STATUS_CLOCK_MARGIN_MS
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

    # what a proof executed later is judged by, reported without changing the client: a relayer proves at it instead
    # of waiting for the park's next header to move finality (issue 16)
    root_before = node.state.root
    assert node.status(POC, t1 + W - 1 + STATUS_CLOCK_MARGIN_MS)["final_height_now"] == 0
    st = node.status(POC, t1 + W + STATUS_CLOCK_MARGIN_MS)
    assert st["final_height_now"] == park.tip.height - depth and st["final_height"] == 0
    hosted = node.sm.router.load(node.state, POC)
    for at in (t1, t1 + W - 1, t1 + W, t1 + 3 * W):  # the same height advance() makes, on a copy
        copy = hosted.ctype.from_state(hosted.client_id, hosted.ctype.to_state(hosted.client))
        assert hosted.ctype.advance is not None and hosted.ctype.final_at is not None
        hosted.ctype.advance(copy, at)
        assert hosted.ctype.final_at(hosted.client, at) == copy.final_height
    assert node.status(POC, t1)["final_height_now"] == 0 and node.state.root == root_before

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


def test_a_farmer_created_after_genesis_is_registered_with_a_final_state_proof(farmers: list[Farmer]) -> None:
    park = poc_park(farmers)
    genesis = relay_genesis(dpos_park().config, park.config)  # window 0 here: this test is about the op
    node = RelayNode(json.loads(json.dumps(genesis)))
    newcomer = Ed25519Signer(hashlib.sha256(b"parkrelay TEST-ONLY poc newcomer").digest())
    park.produce([park.tx(BOB, "bob", "account.create", {"name": "newcomer", "pubkey": newcomer.pubkey.hex()})])
    assert park.failed[-1] == []
    created = park.tip.height
    park.produce_many(4)
    now = park.tip.timestamp_ms
    update(node, park.headers[1:], now)
    key = account_path("newcomer")
    account = park.trees[created].get(key)
    assert account is not None

    def register(height: int, value: bytes, proof_height: int) -> dict[str, Any]:
        return {"chain_id": POC, "height": height, "name": "newcomer", "account": value.hex(),
                "proof": park.trees[proof_height].prove(key).encode().hex()}

    final = node.status(POC, now)["final_height"]
    assert final >= created
    for args, error in (
        (register(created - 1, account, created), InvalidProofError),  # the account did not exist yet there
        (register(created, account.replace(b"0", b"1", 1), created), InvalidProofError),  # not its record
        (register(final + 1, account, final + 1), NotFinalError),
    ):
        root = node.state.root
        with pytest.raises(error) as exc:
            node.run(tx(node, "client.register_farmer", args), now)
        assert exc.value.code == error.code and node.state.root == root
    events = node.run(tx(node, "client.register_farmer", register(created, account, created)), now)
    assert events[-1] == {"type": "farmer_registered", "chain_id": POC, "client_id": "poc-1", "name": "newcomer",
                          "height": created}
    client = node.sm.router.load(node.state, POC).client
    assert client.farmer_keys["newcomer"] == newcomer.pubkey  # type: ignore[attr-defined]
    with pytest.raises(ReplayError):  # the mempool refuses a second registration
        node.sm.check_admission(node.state, tx(node, "client.register_farmer", register(created, account, created)))
