"""The built-in engine's relay node refuses at admission, for free and with the typed error, what a block would
record as a charged failure (SPEC §6.9): only a transaction admission let through and that failed later is charged.
(On CometBFT the same holds through CheckTx: tests/unit/abci/test_relay_bonds.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chains.common.node import NodeConfig
from chains.common.tx import Tx
from protocol.crypto import Ed25519Signer
from protocol.errors import BondStateError
from relay.chain.node import make_relay_node
from tests.unit.abci.relaynet import CHAIN, RelayNet


def test_a_failure_a_block_would_charge_is_refused_at_admission_and_not_queued(tmp_path: Path) -> None:
    relayer = Ed25519Signer(os.urandom(32))
    net = RelayNet(tmp_path / "net", extra_genesis={"accounts": {"relayer-x": relayer.pubkey.hex()}})
    node = make_relay_node(net.genesis, "v0", net.keys[0], NodeConfig(name="v0", data_dir=tmp_path / "node"))
    try:
        # a governance grant cannot unbond: bond.state, disposition never, a charged failure in a block
        unbond = Tx.signed(relayer, CHAIN, "relayer-x", 0, "account.unbond", {})
        with pytest.raises(BondStateError):
            node.submit_tx(unbond)
        assert node.mempool == {}
        assert node.head.state is not None
        assert node.head.state.get_json(b"accounts/relayer-x")["nonce"] == 0  # type: ignore[index]
    finally:
        node.db.close()
        net.close()
