"""A relay block builder takes the mempool one sender at a time (:func:`relay.chain.state_machine.app.fair_order`):
a sender who queued thousands of valid but useless transactions does not starve one with a single useful one."""

from __future__ import annotations

from chains.common.state import ChainState
from chains.common.tx import Tx
from protocol.crypto import Ed25519Signer
from relay.chain.state_machine.app import fair_order
from tests.unit.relay_state.harness import RelayHarness


def _tx(sender: str, nonce: int) -> Tx:
    return Tx.signed(Ed25519Signer(bytes(32)), "relay", sender, nonce, "bond.transfer", {"to": "x", "amount": 1})


def test_round_robin_by_sender_each_in_nonce_order() -> None:
    txs = [_tx("spam", n) for n in (2, 0, 1, 3)] + [_tx("relayer", 5), _tx("relayer", 6), _tx("other", 0)]
    assert [(t.sender, t.nonce) for t in fair_order(txs)] == [
        ("spam", 0), ("relayer", 5), ("other", 0), ("spam", 1), ("relayer", 6), ("spam", 2), ("spam", 3)]
    assert fair_order([]) == []


def test_a_flood_from_one_account_leaves_block_room_for_another() -> None:
    h = RelayHarness(bonds={"balances": {"relayer-a": 10_000, "relayer-b": 10_000}})
    flood = [h.tx("bond.transfer", {"to": "relayer-b", "amount": 1}, "relayer-a", nonce=n) for n in range(
        h.state.get_json(b"accounts/relayer-a")["nonce"], h.state.get_json(b"accounts/relayer-a")["nonce"] + 50)]
    useful = h.tx("bond.transfer", {"to": "relayer-a", "amount": 1}, "relayer-b")
    built = h.sm.build_block(ChainState(h.state.tree), [*flood, useful], h.ctx(), max_txs=5)
    assert useful in built.included and len(built.included) == 5
    assert [t.nonce for t in built.included if t.sender == "relayer-a"] == [t.nonce for t in flood[:4]]
