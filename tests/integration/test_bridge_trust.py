"""The parks' bridges' trust in the relay set on a real devnet (protocol SPEC §7.8): ``parkrelay devnet init`` gives
each bridge the relay genesis set, trusted as of the relay genesis time for the default period; packets flow; each
park's target answers ``relay_trust`` from its node's state (what a relayer reads to keep a bridge fresh), and no
bridge is near expiry. Two DPoS parks and four relay validators, each its own process
(:mod:`tests.integration.operator_devnet`); the mechanisms are the unit tests' (tests/unit/bridge/test_relay_trust.py,
tests/unit/fabric_chaincode/test_relay_trust.py, tests/ethereum/test_relay_trust.py)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.common.park import ParkTarget
from adapters.common.rpc import JsonRpcClient
from chains.common.bridge import DEFAULT_TRUSTING_PERIOD_MS
from protocol.crypto import Ed25519Signer
from relay.ops.layout import relay_genesis_path
from tests.integration.operator_devnet import PARK_A, PARK_B, OperatorNet, operator_devnet, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNet]:
    with operator_devnet(tmp_path_factory.mktemp("bridge-trust")) as n:
        n.ready()
        yield n


def _trust(net: OperatorNet, chain_id: str) -> dict[str, Any]:
    chain = next(c for c in net.cfg.chains if c.id == chain_id)

    async def go() -> dict[str, Any]:
        async with JsonRpcClient(chain.url_of(chain.nodes[0]), side=chain_id) as client:
            target = ParkTarget(client, chain_id, "nobody", Ed25519Signer(secrets.token_bytes(32)))
            return await target.relay_trust()
    result: dict[str, Any] = run(go())
    return result


def test_bridges_trust_the_relay_genesis_set_as_of_its_time_and_stay_fresh(net: OperatorNet) -> None:
    relay_genesis = json.loads(relay_genesis_path(net.cfg).read_text())
    genesis_ms = int(relay_genesis["genesis_time_ms"])
    key = net.transfer(PARK_A, 1_000)
    net.wait("the packet settled", lambda: net.packet(key)["state"] in {"completed", "refunded"}, 120)
    assert net.packet(key)["state"] == "completed"
    now_ms = int(time.time() * 1000)
    for chain_id in (PARK_A, PARK_B):
        trust = _trust(net, chain_id)
        assert trust["trusting_period_ms"] == DEFAULT_TRUSTING_PERIOD_MS, chain_id
        assert trust["update_height"] == 0 and trust["trusted_time_ms"] == genesis_ms, trust
        assert trust["expires_at_ms"] == genesis_ms + DEFAULT_TRUSTING_PERIOD_MS > now_ms
        names = [v["name"] for v in trust["validators"]["validators"]]
        assert names == list(net.cfg.relay_validators)
