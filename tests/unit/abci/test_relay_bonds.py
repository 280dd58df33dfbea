"""Bonded relay accounts (SPEC.md §6.9) on the ABCI application: an unbonded registration is refused at CheckTx, and
a charged failure goes through PrepareProposal, ProcessProposal and FinalizeBlock the same on every validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chains.common.tx import Tx, account_path
from protocol.crypto import Ed25519Signer
from relay.chain.abci import types as T
from relay.chain.abci.app import REFUSED
from tests.unit.abci.relaynet import CHAIN, RelayNet, raw, register_tx


def check(net: RelayNet, tx: bytes, app: int = 0) -> T.ResponseCheckTx:
    return net.apps[app].check_tx(T.RequestCheckTx(tx, T.CheckTxType.NEW))


def account(net: RelayNet, name: str, app: int = 0) -> Any:
    q = net.apps[app].query(T.RequestQuery(data=account_path(name), path="/key"))
    return json.loads(q.value)


def test_an_unbonded_registration_is_refused_at_check_tx_and_left_out_of_proposals(net: RelayNet) -> None:
    tx = raw(register_tx("stranger"))  # RelayNet's genesis funds alice, bob...: not this name
    res = check(net, tx)
    assert (res.code, res.codespace) == (REFUSED, "account.unbonded")
    assert json.loads(res.log)["disposition"] == "fatal"
    assert net.run([tx]) == (), "the proposer drops it"


def test_a_charged_failure_is_kept_in_the_block_and_every_validator_counts_it(net: RelayNet) -> None:
    signer = Ed25519Signer(bytes(range(32)))
    net.run([raw(register_tx("alice", signer))])
    assert (account(net, "alice")["status"], account(net, "alice")["bond"]) == ("bonded", 1_000)
    bad = raw(Tx.signed(signer, CHAIN, "alice", 1, "bond.transfer", {"to": "bob", "amount": 0}))
    refused = check(net, bad)  # CheckTx's trial execution refuses it for free
    assert (refused.code, refused.codespace) == (REFUSED, "codec.invalid")
    items = net.run([bad])  # in a block anyway (another validator's mempool): charged, not dropped
    assert bad in items
    last = net.results[net.height].tx_results[-1]  # recorded as failed, its charge kept
    assert (last.code, last.codespace) == (REFUSED, "codec.invalid")
    for i in range(len(net.apps)):
        alice = account(net, "alice", i)
        assert (alice["nonce"], alice["failures"], alice["failures_total"], alice["bond"]) == (2, 1, 1, 1_000)


def test_check_tx_admits_a_bonded_account_at_its_rate_and_a_recheck_costs_nothing(tmp_path: Path) -> None:
    from chains.common.jsonrpc import RateBuckets

    net = RelayNet(tmp_path, extra_genesis={"bonds": {"balances": {"alice": 5_000}}})
    net.init_chain()
    signer = Ed25519Signer(bytes(range(32)))
    net.run([raw(register_tx("alice", signer))])
    app = net.apps[0]
    app.node._account_buckets = RateBuckets(0.001, 2)  # [limits] relay_account_txs_per_s, relay_account_burst

    def transfer(nonce: int) -> bytes:
        return raw(Tx.signed(signer, CHAIN, "alice", nonce, "bond.transfer", {"to": "bob", "amount": 1}))

    assert check(net, transfer(1)).code == 0 and check(net, transfer(2)).code == 0
    refused = check(net, transfer(3))
    assert (refused.code, refused.codespace) == (REFUSED, "mempool.account_rate")
    assert json.loads(refused.log)["disposition"] == "retry_soon"
    recheck = app.check_tx(T.RequestCheckTx(transfer(1), T.CheckTxType.RECHECK))
    assert recheck.codespace != "mempool.account_rate"  # a recheck is the same transaction again: not counted
    net.close()
