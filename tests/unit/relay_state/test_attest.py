"""``client.attest`` on the relay state machine with the real Ethereum light client (chains/ethereum/SPEC.md §E3).

Four relay validators of power 1; the ``eth-park`` client needs 3 attestations (exactly 2/3 is not a
quorum) at depth 2. Every refusal leaves the state root unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path
from chains.ethereum.light_client import ShallowAttestationError
from protocol.certificate import Validator, ValidatorSet
from protocol.crypto import Ed25519Signer
from protocol.errors import (
    AuthorizationError,
    ClientFrozenError,
    CodecError,
    ProtocolError,
    ReplayError,
    SignatureError,
)
from relay.chain.state_machine.app import RelayStateMachine
from relay.chain.state_machine.governance import load_validator_set, store_validator_set
from relay.chain.state_machine.park_clients import ETHEREUM_TYPE
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE, fixed_signer
from tests.unit.test_eth_light_client import make_chain

RELAY, ETH, OTHER = "relay", "eth-park", "dpos-park"
DEPTH = 2
NAMES = ("op-a", "op-b", "op-c", "op-d")
NOW = 1_790_000_100_000
# five validators of power 1: four attestations are a quorum (3/5 is not > 2/3)
QUORUM = ("op-a", "op-b", "op-c", "op-d")


class Attesting:
    def __init__(self) -> None:
        self.keys: dict[str, Ed25519Signer] = {n: fixed_signer(f"validator/{n}") for n in NAMES}
        self.keys["relayer-a"] = fixed_signer("relayer/relayer-a")
        self.keys["impostor"] = fixed_signer("impostor")
        vset = ValidatorSet(tuple(Validator(n, self.keys[n].pubkey, bytes(20), 1) for n in NAMES))
        self.sm = RelayStateMachine(RELAY, [SINGLE_SIGNER_TYPE, ETHEREUM_TYPE])
        self.state = ChainState()
        self.height = 0
        accounts = {n: self.keys[n].pubkey.hex() for n in (*NAMES, "relayer-a")}
        # an account named like a validator-to-be but holding another key (e.g. registered before the set grew)
        accounts["op-e"] = self.keys["impostor"].pubkey.hex()
        self.keys["op-e"] = self.keys["impostor"]
        vset = ValidatorSet((*vset.validators, Validator("op-e", fixed_signer("validator/op-e").pubkey, bytes(20), 1)))
        self.sm.init_genesis(self.state, {
            "chain_id": RELAY, "validators": wire.validator_set_to_json(vset),
            "clients": {
                ETH: {"client_type": "ethereum",
                      "init": {"eth_chain_id": 31337, "bridge_address": "0x" + "ab" * 20,
                               "confirmation_depth": DEPTH, "trusting_period_ms": 14 * 24 * 3600 * 1000}},
                OTHER: {"client_type": "single",
                        "init": {"pubkey": fixed_signer("park").pubkey.hex(), "trusting_period_ms": 10**9,
                                 "finality_depth": 0}},
            },
            "lanes": [{"lane": "lane-0", "chains": [ETH, OTHER]}],
            "accounts": accounts,
        })
        self.chain = make_chain(12)

    def tx(self, op: str, args: dict[str, Any], sender: str, key: str | None = None) -> Tx:
        nonce = self.state.get_json(account_path(sender))["nonce"]
        return Tx.signed(self.keys[key or sender], RELAY, sender, nonce, op, args)

    def submit(self, op: str, args: dict[str, Any], sender: str, key: str | None = None) -> list[dict[str, Any]]:
        tx = self.tx(op, args, sender, key)
        self.sm.check_admission(self.state, tx)
        events = self.sm.execute_tx(self.state, tx, BlockContext(RELAY, self.height + 1, NOW, "op-a"))
        self.height += 1
        return events

    def attest(self, who: str, height: int, block_hash: bytes | None = None, chain: str = ETH,
               head: int | None = None) -> list[dict[str, Any]]:
        h = block_hash if block_hash is not None else self.chain[height].hash
        return self.submit("client.attest", {"chain_id": chain, "height": height, "block_hash": h.hex(),
                                             "head_height": height + DEPTH if head is None else head}, who)

    def status(self) -> dict[str, Any]:
        return self.sm.client_status(self.state, ETH, NOW)


@pytest.fixture
def a() -> Attesting:
    return Attesting()


def test_a_quorum_of_attestations_makes_the_fed_header_and_its_parents_final(a: Attesting) -> None:
    a.submit("client.update", {"chain_id": ETH, "headers": [h.encode().hex() for h in a.chain[1:9]]}, "relayer-a")
    assert a.status()["final_height"] is None or a.status()["final_height"] < 8
    for who in QUORUM[:3]:
        a.attest(who, 8)
    assert a.status()["latest_height"] < 8  # 3 of 5 is not more than 2/3: nothing final yet
    events = a.attest("op-d", 8)
    assert events[0]["type"] == "client_attested" and events[0]["final_height"] == 8
    st = a.status()
    assert st["latest_height"] == 8 and st["status"] == "active"


def test_refusals_change_nothing(a: Attesting) -> None:
    a.attest("op-a", 5)
    root = a.state.root
    cases: list[tuple[str, type[ProtocolError], Any]] = [
        ("relayer attests", AuthorizationError, lambda: a.attest("relayer-a", 6)),
        ("a validator's account signed by another key", SignatureError,
         lambda: a.submit("client.attest", {"chain_id": ETH, "height": 6, "block_hash": a.chain[6].hash.hex(),
                                            "head_height": 8}, "op-b", key="impostor")),
        ("an account with a validator's name but not its key", AuthorizationError, lambda: a.attest("op-e", 6)),
        ("same height twice", ReplayError, lambda: a.attest("op-a", 5)),
        ("a client without attestations", CodecError, lambda: a.attest("op-b", 5, chain=OTHER)),
        ("too shallow", ShallowAttestationError, lambda: a.attest("op-b", 5, head=6)),
    ]
    for what, error, action in cases:
        with pytest.raises(error) as info:
            action()
        assert type(info.value) is error, what
        assert a.state.root == root, what


def test_a_quorum_contradicting_final_headers_freezes_the_client_and_pauses_its_lanes(a: Attesting) -> None:
    a.submit("client.update", {"chain_id": ETH, "headers": [h.encode().hex() for h in a.chain[1:9]]}, "relayer-a")
    for who in QUORUM:
        a.attest(who, 8)
    assert a.status()["latest_height"] == 8
    fork = make_chain(7, tag=b"fork")[6]  # another block at height 6, below the final head
    for who in QUORUM[:3]:
        a.attest(who, 6, fork.hash)
    assert a.status()["status"] == "active"
    events = a.attest("op-d", 6, fork.hash)  # the quorum now contradicts height 8's parent links
    assert events[0]["type"] == "client_frozen"
    assert any(e["type"] == "lane_paused" for e in events), events
    assert a.status()["status"] == "frozen"
    with pytest.raises(ClientFrozenError):
        a.attest("op-a", 9)


def test_a_validator_set_change_does_not_merge_quorums_and_keeps_the_removed_voters_votes(a: Attesting) -> None:
    """Votes carry the set they were cast under (its hash): across a set change they never add up, and the votes
    of a validator the new set dropped still count in the old set."""
    old = load_validator_set(a.state)
    for who in ("op-a", "op-b"):  # 2 of 5 under the old set
        a.attest(who, 6)
    # the consensus engine installs a new set without op-a and op-b: op-c, op-d, op-e (op-e's key is the impostor's
    # account key here, so it cannot attest) and two new validators
    new = ValidatorSet((*(v for v in old.validators if v.name in ("op-c", "op-d")),
                        Validator("op-f", fixed_signer("validator/op-f").pubkey, bytes(20), 1),
                        Validator("op-g", fixed_signer("validator/op-g").pubkey, bytes(20), 1)))
    store_validator_set(a.state, new)
    for who in ("op-c", "op-d"):  # 2 of 4 under the new set: with the old votes 4 voters, but no quorum of one set
        a.attest(who, 6)
    st = a.sm.router.load(a.state, ETH).client
    assert st.attested_hash(6) is None  # type: ignore[attr-defined]
    votes = json.loads(st.to_state())["votes"]  # type: ignore[attr-defined]
    assert {(v[1], v[5]) for v in votes} == {("op-a", old.hash.hex()), ("op-b", old.hash.hex()),
                                              ("op-c", new.hash.hex()), ("op-d", new.hash.hex())}
