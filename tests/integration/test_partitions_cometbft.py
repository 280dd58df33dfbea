"""Partitions on separate hosts with the relay chain on CometBFT (issue 17): ``test_partitions.py``'s devnet, every
process (each relay validator with its ``cometbft`` child) in a network namespace of its own, ``[relay] engine =
"cometbft"``; its 2-2 split of the relay validators, run unchanged: both halves stall without a fork, and after the
heal CometBFT's validators reconnect, the chain goes on and the packets sent during the split complete once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay.chain.abci.cometbft import cometbft_binary
from tests.integration.harness import free_port_block
from tests.integration.test_partitions import (  # noqa: F401  (the scenario, run here on this module's devnet)
    UNAVAILABLE,
    NsNet,
    hosts_devnet,
    test_a_2_2_split_of_the_relay_validators_stalls_both_halves_without_a_fork,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"network namespaces unavailable: {UNAVAILABLE}"),
    pytest.mark.skipif(not cometbft_binary().exists(),
                       reason=f"no cometbft binary at {cometbft_binary()}: `make setup` builds it"),
]


@pytest.fixture(scope="module")
def hosts_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NsNet]:
    options = {"engine": "cometbft", "cometbft": {"base_port": free_port_block(12)}}
    with hosts_devnet(tmp_path_factory.mktemp("partitions-cometbft"), options) as n:
        yield n
