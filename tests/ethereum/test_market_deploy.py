"""The node's deployment of the park's market (``chains.ethereum.deploy.deploy_market`` as
``chains.ethereum.node`` calls it, on a real anvil): at the address announced in advance (the operator's nonce
after the park's deployment), with the feeder, the minimum imported score and the members admitted and connected,
all sent in one batch; a second call (a restart) sends nothing; a nonce taken by something else is refused."""

from __future__ import annotations

import pytest

from adapters.ethereum.market import MarketClient
from chains.ethereum.deploy import DeployError, create_address, deploy_market, market_step_count
from chains.ethereum.params import EthChainParams
from tests.ethereum.conftest import World

pytestmark = pytest.mark.integration

FEEDER = [(0, 0, 1), (0, 400, 40_000), (1, 150, 20_000), (1, 200, 20_000)]


def test_the_market_lands_where_announced_configured_and_a_restart_sends_nothing(world: World) -> None:
    w, a = world, world.a
    w3, op = w.evm.w3, a.operator
    addrs = {"delivery_record": a.record.address, "energy_token": a.token.address}
    first = w3.eth.get_transaction_count(op.address, "pending")
    members = {w.alice.address: 2, w.carol.address: 3}
    address = deploy_market(w3, op, addrs, FEEDER, members=members, min_imported_score=6_000, first_nonce=first)
    assert address == create_address(op.address, first)
    assert w3.eth.get_transaction_count(op.address) == first + market_step_count(len(FEEDER), 2, 6_000)
    client = MarketClient(w3, address)
    assert [(b["parent"], b["length_m"], b["limit_wh"]) for b in client.feeder()][1:] == FEEDER[1:]
    assert client.min_imported_score() == 6_000
    for who, bus in members.items():
        rec = client.participant(who)
        assert rec["admitted"] and rec["member"] and rec["bus"] == bus, rec
    assert deploy_market(w3, op, addrs, FEEDER, members=members, min_imported_score=6_000,
                         first_nonce=first) == address
    assert w3.eth.get_transaction_count(op.address) == first + market_step_count(len(FEEDER), 2, 6_000)


def test_a_market_nonce_used_by_another_transaction_is_refused(world: World) -> None:
    w, a = world, world.a
    addrs = {"delivery_record": a.record.address, "energy_token": a.token.address}
    first = w.evm.w3.eth.get_transaction_count(a.operator.address, "pending")
    w.evm.transact(a.token.functions.mint(w.alice.address, 1), a.operator)  # takes the market's nonce
    with pytest.raises(DeployError, match="not a deployment of this market"):
        deploy_market(w.evm.w3, a.operator, addrs, FEEDER, first_nonce=first)


@pytest.mark.parametrize(("keys", "bad"), [
    ({"market_buses": {"2": {"parent": 0, "length_m": 1, "limit_wh": 1}}}, "market_buses"),
    ({"market_buses": {"1": {"parent": 1, "length_m": 1, "limit_wh": 1}}}, "market_buses.1.parent"),
    ({"market_buses": {"1": {"parent": 0, "length_m": 1}}}, "market_buses.1"),
    ({"market_buses": {"1": {"parent": 0, "length_m": 1, "limit_wh": 0}}}, "market_buses.1"),
    ({"market_buses": {"1": {"parent": 0, "length_m": 1, "limit_wh": 9}}, "market_members": {"erin": 2}},
     "market_members.erin"),
])
def test_a_malformed_feeder_is_refused_with_the_key_to_fix(keys: dict[str, object], bad: str) -> None:
    from chains.common.kind import ParamError

    with pytest.raises(ParamError) as err:
        EthChainParams.from_mapping(keys)
    assert err.value.key == bad
