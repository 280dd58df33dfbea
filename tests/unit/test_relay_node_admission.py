"""The built-in engine's relay node refuses at admission, for free and with the typed error, what a block would
record as a charged failure (SPEC §6.9): only a transaction admission let through and that failed later is charged.
(On CometBFT the same holds through CheckTx: tests/unit/abci/test_relay_bonds.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.common.node import NodeConfig
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx
from protocol.crypto import Ed25519Signer
from protocol.errors import BondStateError
from relay.chain.node import BftDriver, RelayNode, block_bytes, make_relay_node, txs_of
from relay.chain.state_machine.app import BlockBuild
from tests.unit.abci.relaynet import CHAIN, RelayNet, register_tx


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


def _node_with(tmp_path: Path, **limits: float) -> tuple[RelayNode, Ed25519Signer, RelayNet]:
    from chains.common.node import AdmissionLimits

    relayer = Ed25519Signer(os.urandom(32))
    net = RelayNet(tmp_path / "net", extra_genesis={"accounts": {"relayer-x": relayer.pubkey.hex()},
                                                    "bonds": {"balances": {"relayer-x": 5_000}}})
    node = make_relay_node(net.genesis, "v0", net.keys[0],
                           NodeConfig(name="v0", data_dir=tmp_path / "node", limits=AdmissionLimits(**limits)))
    assert isinstance(node, RelayNode)
    return node, relayer, net


def _transfer(key: Ed25519Signer, nonce: int) -> Tx:
    return Tx.signed(key, CHAIN, "relayer-x", nonce, "bond.transfer", {"to": "someone", "amount": 1})


def test_a_bonded_account_is_admitted_at_its_rate_and_a_grant_is_not_bounded(tmp_path: Path) -> None:
    from protocol.errors import AccountRateLimitedError, SignatureError

    node, key, net = _node_with(tmp_path, relay_account_txs_per_s=0.001, relay_account_burst=2)
    try:
        for nonce in range(5):  # a governance grant: not bounded
            node.submit_tx(_transfer(key, nonce))
        node.mempool.clear()
        state = node.head.state
        assert state is not None
        acct = state.get_json(b"accounts/relayer-x")
        state.set_json(b"accounts/relayer-x", {**acct, "status": "bonded", "bond": 1_000})  # as a bonded outsider
        node.submit_tx(_transfer(key, 0))
        # a forgery naming the account is refused by its signature and spends nothing of its rate
        forged = Tx.signed(Ed25519Signer(os.urandom(32)), CHAIN, "relayer-x", 1, "bond.transfer",
                           {"to": "someone", "amount": 1})
        with pytest.raises(SignatureError):
            node.submit_tx(forged)
        node.submit_tx(_transfer(key, 1))
        held = dict(node.mempool)
        with pytest.raises(AccountRateLimitedError) as err:
            node.submit_tx(_transfer(key, 2))
        assert err.value.code == "mempool.account_rate" and "limits.relay_account_txs_per_s" in err.value.message
        assert dict(node.mempool) == held
        node.submit_tx(_transfer(key, 1))  # held already: admitted again, free
    finally:
        node.db.close()
        net.close()


@pytest.fixture
def two_validators(tmp_path: Path) -> Iterator[tuple[Ed25519Signer, RelayNode, RelayNode]]:
    """A granted relayer account's key, and two validators' nodes of one relay genesis (never started)."""
    relayer = Ed25519Signer(os.urandom(32))
    net = RelayNet(tmp_path / "net", extra_genesis={"accounts": {"relayer-x": relayer.pubkey.hex()}})
    nodes = [make_relay_node(net.genesis, f"v{i}", net.keys[i], NodeConfig(name=f"v{i}", data_dir=tmp_path / f"v{i}"))
             for i in (0, 1)]
    try:
        assert all(isinstance(n, RelayNode) for n in nodes)
        yield relayer, nodes[0], nodes[1]  # type: ignore[misc]
    finally:
        for n in nodes:
            n.db.close()
        net.close()


def _driver(node: RelayNode) -> BftDriver:
    return BftDriver(node.rules, node)  # type: ignore[arg-type]


def test_the_built_in_engine_keeps_a_charged_failure_in_the_block_it_builds_and_validates(
        two_validators: tuple[Ed25519Signer, RelayNode, RelayNode]) -> None:
    """A transaction admission let through can fail in a block once the state moved under it (another validator's
    mempool, another block first): the proposer keeps it, charged (SPEC §6.9), and every validator accepts that
    block, as CometBFT's ProcessProposal does. Refusing it would refuse every proposal that holds it: the height
    would never be decided."""
    relayer, node, other = two_validators
    unbond = Tx.signed(relayer, CHAIN, "relayer-x", 0, "account.unbond", {})
    node.mempool[unbond.hash()] = unbond  # as if admitted before the state moved
    made = _driver(node).make_block(1, 0)
    assert made is not None
    block, header = made
    assert txs_of(block) == [unbond], "the proposer keeps the charged failure"
    assert _driver(other).validate_block(header, block)
    assert _driver(node).validate_block(header, block)


def test_the_built_in_engine_refuses_a_proposal_with_a_failure_that_is_not_charged(
        two_validators: tuple[Ed25519Signer, RelayNode, RelayNode], monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction that fails uncharged (here a nonce from the future) is one an honest proposer drops: a block
    holding it is refused."""
    relayer, node, other = two_validators
    sm = node.rules.sm  # type: ignore[attr-defined]
    future = Tx.signed(relayer, CHAIN, "relayer-x", 7, "account.unbond", {})

    def build_without_dropping(state: ChainState, _: Any, ctx: BlockContext, **__: Any) -> BlockBuild:
        assert not sm.execute_block(state, [future], ctx).results[0]["ok"]
        return BlockBuild(included=[future])

    monkeypatch.setattr(sm, "build_block", build_without_dropping)
    made = _driver(node).make_block(1, 0)
    assert made is not None and txs_of(made[0]) == [future]
    assert not _driver(other).validate_block(made[1], made[0])


def test_the_proposer_runs_its_own_block_once_and_keeps_what_any_validator_executing_it_gets(
        two_validators: tuple[Ed25519Signer, RelayNode, RelayNode], monkeypatch: pytest.MonkeyPatch) -> None:
    """The core asks validate_block of the proposer's own proposal too: make_block already executed it, so the
    proposer keeps that execution (issue 16: it ran each block twice, the second time before its proposal was sent).
    What it keeps must be what executing the block gives any other validator: events, results (a charged failure
    among them) and state; and another block under the same header is still refused."""
    relayer, node, other = two_validators
    for tx in (register_tx("alice"), Tx.signed(relayer, CHAIN, "relayer-x", 0, "account.unbond", {})):
        node.mempool[tx.hash()] = tx
    proposer = _driver(node)
    made = proposer.make_block(1, 0)
    assert made is not None
    block, header = made
    assert len(txs_of(block)) == 2
    validator = _driver(other)
    assert validator.validate_block(header, block)  # executes it
    executed = validator._validated[header.hash()]

    def no_second_run(*_: Any, **__: Any) -> Any:
        raise AssertionError("the proposer executed its own block again")

    monkeypatch.setattr(node, "_execute", no_second_run)
    assert proposer.validate_block(header, block)
    kept = proposer._validated[header.hash()]
    assert kept.events == executed.events and kept.events
    assert kept.tx_results == executed.tx_results
    assert [r["ok"] for r in kept.tx_results] == [True, False], "the unbond is a charged failure"
    assert kept.state is not None and executed.state is not None and kept.state.root == executed.state.root
    assert not proposer.validate_block(header, block_bytes([]))


def test_a_pending_registration_stays_in_the_mempool_across_blocks_that_do_not_carry_it(tmp_path: Path) -> None:
    """``account.register`` comes from a name with no account yet, at nonce 0. The mempool's prune after each new head
    counted such a sender's next nonce as -1 and dropped it: a registration that missed the next block (its proposer
    had not received the gossip yet) never reached one (CI: an outside relayer never bonded)."""
    net = RelayNet(tmp_path / "net")
    node = make_relay_node(net.genesis, "v0", net.keys[0], NodeConfig(name="v0", data_dir=tmp_path / "node"))
    try:
        register = register_tx("alice")  # RelayNet's genesis funds alice's bond
        h = node.submit_tx(register)
        node._prune_mempool()  # what every new head runs
        assert h in node.mempool
        used = Tx.signed(Ed25519Signer(os.urandom(32)), CHAIN, "nobody", 1, "account.register", {"pubkey": "00" * 32})
        node.mempool[used.hash()] = used  # nonce 1 from a name with no account: can never execute
        node._prune_mempool()
        assert h in node.mempool and used.hash() not in node.mempool
    finally:
        node.db.close()
        net.close()
