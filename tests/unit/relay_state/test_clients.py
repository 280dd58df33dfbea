"""Hosted light clients: persistence in relay state, the state-keyed cache, the router, ids never reused."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.state import ChainState
from protocol.errors import (
    CodecError,
    DuplicateClientTypeError,
    InvalidProofError,
    SignatureError,
    UnknownClientError,
)
from protocol.light_client import LightClient
from relay.chain.state_machine import RelayClientRouter, RelayStateMachine, persistent_client_type
from relay.chain.state_machine.keys import client_state_key
from tests.unit.relay_state.harness import DPOS, POC, RELAY, RelayHarness
from tests.unit.relay_state.test_rejections import tamper_proof
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE, SingleSignerClient, SingleSignerHeader, fixed_signer


def client_bytes(h: RelayHarness, client_id: str) -> bytes:
    raw = h.state.get(client_state_key(client_id))
    assert raw is not None
    return raw


@pytest.mark.parametrize("depth", [0, 2])
def test_state_round_trips_exactly(depth: int) -> None:
    h = RelayHarness(finality_depth=depth)
    for _ in range(5):
        h.update(DPOS)
    raw = client_bytes(h, "single-0")
    client = SingleSignerClient.from_state("single-0", raw)  # type: ignore[arg-type]
    assert client.to_state() == raw
    assert (client.final_height, client.latest_height, client.final_heights()) == (
        5 - depth, 5, list(range(1, 6 - depth)))


def test_state_alone_suffices_a_restarted_node_continues() -> None:
    h = RelayHarness(finality_depth=1)
    p = h.send()
    args = h.verify_args(p)
    h.update(DPOS)  # makes args' height final
    # a new process: a new state machine (empty cache) over the same state
    h.sm = RelayStateMachine(RELAY, [SINGLE_SIGNER_TYPE])
    h.submit("packet.verify", args)
    h.deliver(p)
    height = h.update(POC)
    h.update(POC)
    h.sm = RelayStateMachine(RELAY, [SINGLE_SIGNER_TYPE])
    h.submit("packet.confirm_ack", h.confirm_args(p, height=height))
    h.settle(p)
    h.net.check()


def test_a_rolled_back_header_is_not_remembered() -> None:
    # the header is applied to the client object, then the proof fails and the tx rolls back:
    # the cached object must not survive, or the client would believe it holds the header
    h = RelayHarness()
    p = h.send()
    header = h.feeds[DPOS].next_header()
    args = h.verify_args(p, height=header.height)
    before = client_bytes(h, "single-0")
    with pytest.raises(InvalidProofError):
        h.submit("packet.verify", {**args, "proof": tamper_proof(args["proof"]), "headers": [header.encode().hex()]})
    assert client_bytes(h, "single-0") == before
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms)["latest_height"] == 0
    events = h.submit("client.update", {"chain_id": DPOS, "headers": [header.encode().hex()]})
    assert events[0]["heights"] == [header.height]
    h.submit("packet.verify", args)


def test_a_half_applied_update_is_not_remembered() -> None:
    # header 1 is applied to the client object, header 2 is refused: the tx fails before the client is
    # saved, so the object that holds header 1 must not be served again for this state
    h = RelayHarness()
    good = h.feeds[DPOS].next_header()
    bad = h.feeds[DPOS].next_header().signed(fixed_signer("not-the-park"))
    with pytest.raises(SignatureError):
        h.submit("client.update", {"chain_id": DPOS, "headers": [good.encode().hex(), bad.encode().hex()]})
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms)["latest_height"] == 0
    h.submit("client.update", {"chain_id": DPOS, "headers": [good.encode().hex()]})


def test_forks_see_their_own_clients() -> None:
    # two blocks built on one parent, executed interleaved: each state sees only its own headers
    h = RelayHarness()
    parent = h.state.tree
    fork_a, fork_b = ChainState(parent), ChainState(parent)
    ha = h.feeds[DPOS].next_header()
    hb = h.feeds[DPOS].next_header()
    h.sm.execute_tx(fork_a, h.tx("client.update", {"chain_id": DPOS, "headers": [ha.encode().hex()]}), h.ctx())
    h.sm.execute_tx(fork_b, h.tx("client.update", {"chain_id": DPOS, "headers": [hb.encode().hex()]}), h.ctx())
    assert h.sm.client_status(fork_a, DPOS, h.net.now_ms)["latest_height"] == 1
    assert h.sm.client_status(fork_b, DPOS, h.net.now_ms)["latest_height"] == 2
    assert h.sm.client_status(ChainState(parent), DPOS, h.net.now_ms)["latest_height"] == 0
    # and the cache is not fooled into reusing fork_b's object for fork_a
    h.sm.execute_tx(fork_a, h.tx("client.update", {"chain_id": DPOS, "headers": [hb.encode().hex()]},
                                 nonce=1), h.ctx())
    assert h.sm.client_status(fork_a, DPOS, h.net.now_ms)["latest_height"] == 2


def test_ids_are_never_reused_even_after_a_failed_creation() -> None:
    h = RelayHarness()
    init = h.genesis["clients"][DPOS]["init"]
    with pytest.raises(CodecError):
        h.govern("client.create", {"chain_id": "eth-park", "client_type": "single", "init": {**init, "bad": 1}})
    ev = h.govern("client.create", {"chain_id": "eth-park", "client_type": "single", "init": init})
    assert ev[0]["client_id"] == "single-2" and ev[0]["replaced"] is None
    ev = h.govern("client.create", {"chain_id": POC, "client_type": "single", "init": init})
    assert ev[0]["client_id"] == "single-3" and ev[0]["replaced"] == "single-1"
    assert h.state.get_int(b"relay/client_index") == 4


def test_router_rules() -> None:
    router = RelayClientRouter([SINGLE_SIGNER_TYPE])
    with pytest.raises(DuplicateClientTypeError):
        router.add_type(SINGLE_SIGNER_TYPE)
    with pytest.raises(UnknownClientError):
        router.client_type("ethereum")
    with pytest.raises(UnknownClientError):
        router.load(ChainState(), DPOS)
    with pytest.raises(TypeError):
        router.create("single", chain_id=DPOS, init={})


def test_a_client_class_without_persistence_cannot_be_hosted() -> None:
    class Opaque(LightClient[Any]):
        client_type = "opaque"

        @property
        def latest_height(self) -> int:
            return 0

        def validate_header(self, header: Any, now_ms: int) -> None: ...
        def apply_header(self, header: Any) -> None: ...
        def validate_conflicting(self, header_a: Any, header_b: Any, now_ms: int) -> None: ...

    with pytest.raises(TypeError, match="to_state/from_state"):
        persistent_client_type(Opaque, decode_header=SingleSignerHeader.decode,
                               create=lambda cid, chain, init: Opaque(cid, chain, 1))


def test_expiry_is_measured_on_block_time() -> None:
    h = RelayHarness(trusting_period_ms=1_000)
    h.update(DPOS)
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms + 1_000)["status"] == "active"
    assert h.sm.client_status(h.state, DPOS, h.net.now_ms + 1_001)["status"] == "expired"
