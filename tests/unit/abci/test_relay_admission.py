"""The per-sender mempool bound of a relay validator on CometBFT (issue 18): CheckTx refuses a sender's transaction
once ``[limits] mempool_txs_per_account`` of its transactions are pending, with the typed error naming the limit;
CometBFT's ``mempool.size`` bounds all senders together."""

from __future__ import annotations

import json
import os

from chains.common.node import AdmissionLimits
from chains.common.tx import Tx, account_path
from protocol.crypto import Ed25519Signer
from relay.chain.abci import types as T
from relay.chain.abci.app import REFUSED
from tests.unit.abci.relaynet import CHAIN, RelayNet, raw


def test_check_tx_bounds_the_pending_transactions_of_one_sender(net: RelayNet) -> None:
    """Pending = check-state nonce minus committed nonce (an account created since the commit counts from 0). The
    check state is written here as CheckTx leaves it after admitting a sender's transactions."""
    app = net.apps[0]
    app.node.config.limits = AdmissionLimits(mempool_txs_per_account=2)
    signers = {name: Ed25519Signer(os.urandom(32)) for name in ("alice", "bob")}

    def admitted(name: str, nonce: int) -> None:
        app._check_state.set_json(account_path(name), {"pubkey": signers[name].pubkey.hex(), "nonce": nonce})

    def check(name: str, nonce: int) -> T.ResponseCheckTx:
        tx = Tx.signed(signers[name], CHAIN, name, nonce, "lane.pause", {})
        return app.check_tx(T.RequestCheckTx(raw(tx), T.CheckTxType.NEW))

    admitted("alice", 1)  # one pending: below the bound, so admission proper answers
    assert check("alice", 1).codespace != "mempool.account_full"
    admitted("alice", 2)
    before = app._check_state.root
    resp = check("alice", 2)
    assert (resp.code, resp.codespace) == (REFUSED, "mempool.account_full")
    err = json.loads(resp.log)
    assert (err["expected"], err["got"]) == ("< 2", 2) and "limits.mempool_txs_per_account = 2" in err["message"]
    assert err["disposition"] == "after_progress"
    assert app._check_state.root == before
    admitted("bob", 1)
    assert check("bob", 1).codespace != "mempool.account_full", "another sender is not held back"
    app._check_state = app._fresh_check_state()  # as at Commit: nothing of alice's pending
    assert check("alice", 2).codespace != "mempool.account_full"
