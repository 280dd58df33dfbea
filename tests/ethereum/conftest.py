"""Fixtures of the Ethereum park's contract tests: one anvil per session, three parks and a relay.

The session deploys, once, three parks (``eth-a`` and ``eth-b``, a lane ``lane-0`` between them and one
to the Python park ``dpos-park`` each; ``eth-c`` with ``lane-1`` to ``eth-b`` and ``lane-2`` to ``eth-a``, for
multi-hop traces) that trust a simulated relay of four validators whose keys are generated at run time.
Each test gets the world from an ``evm_snapshot`` taken just before it and
reverted just after it (the relay's Python state likewise), so tests are independent and fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from tests.ethereum.harness import AnvilProcess, Evm, Park, RelaySim, deploy_park

A, B, C, DPOS, LANE = "eth-a", "eth-b", "eth-c", "dpos-park", "lane-0"
LANE_BC, LANE_AC = "lane-1", "lane-2"
ALICE_WH = 1_000_000
BOB_WH = 500_000


@dataclass
class World:
    """Two parks on one anvil, a relay, and three funded accounts."""

    evm: Evm
    relay: RelaySim
    a: Park
    b: Park
    alice: LocalAccount
    """Holds ``ALICE_WH`` kWh on park A."""
    bob: LocalAccount
    """Holds ``BOB_WH`` kWh on park B."""
    relayer: LocalAccount
    """Submits certificates: anyone may."""
    c: Park
    """The third park: ``lane-1`` to B, ``lane-2`` to A."""
    carol: LocalAccount
    """An account on park C (no balance)."""


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    node = AnvilProcess()
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def evm(anvil: AnvilProcess) -> Evm:
    return Evm.connect(anvil.url)


@pytest.fixture(scope="session")
def base_world(evm: Evm) -> World:
    relay = RelaySim.create("relay", 4, filler_records=64)
    relay.clock = evm.now_ms  # relay blocks as recent as the park's (the bridges refuse stale certificates)
    a = deploy_park(evm, A, relay, [(B, LANE), (DPOS, LANE), (C, LANE_AC)])
    b = deploy_park(evm, B, relay, [(A, LANE), (DPOS, LANE), (C, LANE_BC)])
    c = deploy_park(evm, C, relay, [(B, LANE_BC), (A, LANE_AC)])
    alice, bob, relayer, carol = evm.account(), evm.account(), evm.account(), evm.account()
    evm.transact(a.token.functions.mint(alice.address, ALICE_WH), a.operator)
    evm.transact(b.token.functions.mint(bob.address, BOB_WH), b.operator)
    return World(evm, relay, a, b, alice, bob, relayer, c, carol)


@pytest.fixture
def world(base_world: World) -> Iterator[World]:
    snapshot = base_world.evm.snapshot()
    saved = base_world.relay.save()
    try:
        yield base_world
    finally:
        base_world.evm.revert(snapshot)
        base_world.relay.restore(saved)
