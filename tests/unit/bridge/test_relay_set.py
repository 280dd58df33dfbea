"""``bridge.update_relay_validators``: the park's light client of the relay chain changes set only when
more than 2/3 of the set it trusts signed the header naming the next set, at a height above the last
update; afterwards certificates by the new set pass and by the old set fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chains.common import wire
from chains.common.bridge import trusted_relay_set
from protocol.certificate import RelayCommit, ValidatorSet
from protocol.errors import (
    CodecError,
    ProtocolError,
    QuorumError,
    ReplayError,
    SignatureError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from tests.unit.bridge.sim import Network, relay_signers, two_parks, validator_set

ENERGY = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh",
          "amount_wh": 100}


def update(net: Network, commit: RelayCommit, new_set: ValidatorSet, park: str = "poc-park") -> Any:
    return net.parks[park].tx("relayer", "bridge.update_relay_validators",
                              {"commit": wire.commit_to_json(commit), "new_set": wire.validator_set_to_json(new_set)})


def test_update_signed_by_the_trusted_set_is_accepted() -> None:
    net = two_parks()
    poc = net.parks["poc-park"]
    old_set = net.relay.vset
    commit, new_set = net.relay.rotate(net.now_ms, generation=1)
    (event,) = update(net, commit, new_set)
    assert event == {"type": "relay_validators_updated", "height": commit.header.height, "hash": new_set.hash.hex(),
                     "validators": 4}
    assert trusted_relay_set(poc.state) == (new_set, commit.header.height)
    # the new set's certificates pass...
    packet = net.send("dpos-park", "alice", **ENERGY)
    net.relay.verify_packet(net.parks["dpos-park"], packet)
    assert net.recv(packet, net.verified_cert(packet))["success"]
    # ...and the old set's no longer do
    packet2 = net.send("dpos-park", "alice", **ENERGY)
    net.relay.verify_packet(net.parks["dpos-park"], packet2)
    stale = net.verified_cert(packet2, signers=relay_signers(0), vset=old_set)
    root = poc.state.root
    with pytest.raises(ValidatorSetMismatchError):
        net.recv(packet2, stale)
    assert poc.state.root == root


Prepare = Callable[[Network], Callable[[], Any]]


def _new_set_only_claiming_old(net: Network) -> Callable[[], Any]:
    new_signers = relay_signers(1)
    new_set = validator_set(new_signers)
    commit = net.relay.commit(net.now_ms, signers=new_signers, next_set=new_set)  # header names the old set
    return lambda: update(net, commit, new_set)


def _new_set_only_naming_itself(net: Network) -> Callable[[], Any]:
    new_signers = relay_signers(1)
    new_set = validator_set(new_signers)
    commit = net.relay.commit(net.now_ms, signers=new_signers, vset=new_set)
    return lambda: update(net, commit, new_set)


def _too_few(net: Network) -> Callable[[], Any]:
    new_set = validator_set(relay_signers(1))
    commit = net.relay.commit(net.now_ms, next_set=new_set, indices=(2, 3))
    return lambda: update(net, commit, new_set)


def _not_the_named_set(net: Network) -> Callable[[], Any]:
    commit = net.relay.commit(net.now_ms, next_set=validator_set(relay_signers(1)))
    return lambda: update(net, commit, validator_set(relay_signers(2)))


def _other_relay_chain(net: Network) -> Callable[[], Any]:
    new_set = validator_set(relay_signers(1))
    commit = net.relay.commit(net.now_ms, next_set=new_set, chain_id="relay-2")
    return lambda: update(net, commit, new_set)


def _replayed(net: Network) -> Callable[[], Any]:
    commit, new_set = net.relay.rotate(net.now_ms, generation=1)
    update(net, commit, new_set)
    return lambda: update(net, commit, new_set)


def _replayed_after_switching_back(net: Network) -> Callable[[], Any]:
    # 0 -> 1 -> 0: the first update is validly signed by the (again) trusted generation 0, but it is old
    first, set1 = net.relay.rotate(net.now_ms, generation=1)
    update(net, first, set1)
    second, set0 = net.relay.rotate(net.now_ms, generation=0)
    update(net, second, set0)
    assert trusted_relay_set(net.parks["poc-park"].state)[0] == set0
    return lambda: update(net, first, set1)


def _hash_mismatch(net: Network) -> Callable[[], Any]:
    new_set = validator_set(relay_signers(1))
    commit = net.relay.commit(net.now_ms, next_set=new_set)
    body = wire.validator_set_to_json(new_set)
    body["hash"] = "00" * 32
    return lambda: net.parks["poc-park"].tx("relayer", "bridge.update_relay_validators",
                                            {"commit": wire.commit_to_json(commit), "new_set": body})


CASES: list[tuple[str, Prepare, type[ProtocolError]]] = [
    ("signed by the new set only (header names the old set)", _new_set_only_claiming_old, SignatureError),
    ("signed by the new set only (header names the new set)", _new_set_only_naming_itself,
     ValidatorSetMismatchError),
    ("signed by exactly 2/3 of the old set", _too_few, QuorumError),
    ("new set is not the certified next set", _not_the_named_set, ValidatorSetMismatchError),
    ("another relay chain", _other_relay_chain, WrongChainError),
    ("old update replayed", _replayed, ReplayError),
    ("old update replayed after the set switched back", _replayed_after_switching_back, ReplayError),
    ("new set hash does not match its validators", _hash_mismatch, CodecError),
]


@pytest.mark.parametrize(("name", "prepare", "error"), CASES, ids=[c[0] for c in CASES])
def test_update_rejected(name: str, prepare: Prepare, error: type[ProtocolError]) -> None:
    net = two_parks()
    op = prepare(net)
    roots = net.roots()
    trusted = trusted_relay_set(net.parks["poc-park"].state)
    with pytest.raises(error) as info:
        op()
    assert type(info.value) is error, f"{name}: {info.value!r}"
    assert net.roots() == roots
    assert trusted_relay_set(net.parks["poc-park"].state) == trusted
