"""A relayer's bridge op whose work another relayer did first: refused at admission for free, kept in a block as a
no-op that uses only its sender's nonce (``App.execute_in_block``, issue 16)."""

from __future__ import annotations

import pytest

from chains.common.bridge import RELAYER_OPS
from chains.common.state import ChainState
from chains.common.tx import REDUNDANT_TX, BlockContext, Tx, account_path, use_nonce
from protocol.codec import encode_packet
from protocol.errors import ReplayError
from tests.unit.bridge.test_rejections import make_setup


def test_a_second_recv_is_refused_at_admission_and_a_no_op_in_a_block() -> None:
    s = make_setup()
    s.recv(s.p1, s.cert1)
    park = s.net.parks["poc-park"]
    nonce = park.state.get_json(account_path("relayer"))["nonce"]
    again = Tx.signed(park.keys["relayer"], park.chain_id, "relayer", nonce, "bridge.recv",
                      {"packet": encode_packet(s.p1).hex(), "certificate": s.cert1})
    ctx = BlockContext(park.chain_id, park.height + 1, s.net.now_ms, "producer")
    root = park.state.root
    with pytest.raises(ReplayError):
        park.app.execute_checked(ChainState(park.state.tree), again, ctx)
    in_block = ChainState(park.state.tree)
    events = park.app.execute_in_block(in_block, again, ctx)
    assert [(e["type"], e["op"], e["code"]) for e in events] == [(REDUNDANT_TX, "bridge.recv", "packet.replay")]
    expected = ChainState(park.state.tree)
    use_nonce(expected, "relayer")
    assert in_block.root == expected.root != root  # nothing but the nonce moved
    assert park.state.root == root


def test_the_relayers_bridge_ops_are_the_no_op_ones() -> None:
    s = make_setup()
    app = s.net.parks["poc-park"].app
    assert app.noop_ops == RELAYER_OPS
    assert {"bridge.recv", "bridge.recv_batch", "bridge.settle", "bridge.settle_batch"} <= app.noop_ops
    assert "bridge.send" not in app.noop_ops and "rights.issue" not in app.noop_ops
