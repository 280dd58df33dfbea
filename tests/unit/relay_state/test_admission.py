"""Redundant relays are refused at admission, cheaply, and kept in blocks as no-ops that use only their nonce
(SPEC.md §1 Trust, §6.9)."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.tx import Tx
from protocol.errors import (
    ClientFrozenError,
    CodecError,
    IllegalTransitionError,
    ReplayError,
    SignatureError,
    WrongChainError,
)
from tests.unit.relay_state.harness import DPOS, LANE, POC, RELAY, RelayHarness
from tests.unit.relay_state.test_rejections import freeze, make_setup


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness()


def corrupt(tx: Tx) -> Tx:
    sig = bytearray(tx.signature)
    sig[0] ^= 1
    return Tx(tx.chain_id, tx.sender, tx.nonce, tx.op, tx.args, bytes(sig))


def test_a_verified_packet_is_refused_before_any_signature_work(h: RelayHarness) -> None:
    p = h.send()
    args = h.verify_args(p)
    h.sm.check_admission(h.state, h.tx("packet.verify", args))
    h.submit("packet.verify", args)
    tx = h.tx("packet.verify", args, sender="relayer-b")
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, tx)
    # the replay check comes first: even a badly signed copy is refused as a replay, not as a bad signature
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, corrupt(tx))


def test_batches_are_refused_only_when_every_item_is_redundant(h: RelayHarness) -> None:
    p, q = h.send(), h.send()
    height = h.update(DPOS)
    items = [{k: h.verify_args(x, height=height)[k] for k in ("packet", "proof")} for x in (p, q)]
    h.submit("packet.verify_batch", {"height": height, "items": items[:1]})
    h.sm.check_admission(h.state, h.tx("packet.verify_batch", {"height": height, "items": items}))
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("packet.verify_batch", {"height": height, "items": items[:1]}))


def test_confirmations(h: RelayHarness) -> None:
    p = h.send()
    h.verify(p)
    h.deliver(p)
    args = h.confirm_args(p)
    h.sm.check_admission(h.state, h.tx("packet.confirm_ack", args))
    h.submit("packet.confirm_ack", args)
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("packet.confirm_ack", args, sender="relayer-b"))
    with pytest.raises(ReplayError):  # a timeout of an acked packet is redundant too
        h.sm.check_admission(h.state, h.tx("packet.confirm_timeout", {k: args[k] for k in ("packet", "height",
                                                                                          "proof")}))


def test_confirming_a_packet_never_verified_is_refused(h: RelayHarness) -> None:
    p = h.send()
    from protocol.codec import encode_ack
    from protocol.types import Acknowledgement, AckStatus

    ack = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b"")).hex()
    with pytest.raises(IllegalTransitionError):
        h.sm.check_admission(h.state, h.tx("packet.confirm_ack", h.confirm_args(p, ack_hex=ack)))


def test_headers_already_applied(h: RelayHarness) -> None:
    _, args = h.header_args(DPOS)
    h.sm.check_admission(h.state, h.tx("client.update", args))
    h.submit("client.update", args)
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("client.update", args, sender="relayer-b"))
    _, newer = h.header_args(DPOS)
    both = {"chain_id": DPOS, "headers": args["headers"] + newer["headers"]}
    h.sm.check_admission(h.state, h.tx("client.update", both))  # one header is new: admitted


def test_frozen_clients(h: RelayHarness) -> None:
    s = make_setup()
    freeze(s, DPOS)
    _, args = s.h.header_args(DPOS)
    with pytest.raises(ClientFrozenError):
        s.h.sm.check_admission(s.h.state, s.h.tx("client.update", args))
    evidence: dict[str, Any] = {"chain_id": DPOS, "header_a": args["headers"][0], "header_b": args["headers"][0]}
    with pytest.raises(ReplayError):
        s.h.sm.check_admission(s.h.state, s.h.tx("client.misbehaviour", evidence))


def test_governance_and_accounts(h: RelayHarness) -> None:
    params = {"src": DPOS, "dst": POC, "lane": LANE}
    args = h.gov_args("lane.pause", params)
    h.sm.check_admission(h.state, h.tx("lane.pause", args))
    h.submit("lane.pause", args)
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("lane.pause", args))
    key = h.keys["relayer-a"]
    reg = Tx.signed(key, RELAY, "relayer-a", 0, "account.register", {"pubkey": key.pubkey.hex()})
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, reg)


def test_the_ordinary_transaction_checks_follow(h: RelayHarness) -> None:
    p = h.send()
    args = h.verify_args(p)
    good = h.tx("packet.verify", args)
    with pytest.raises(SignatureError):
        h.sm.check_admission(h.state, corrupt(good))
    with pytest.raises(WrongChainError):
        h.sm.check_admission(h.state, Tx.signed(h.keys["relayer-a"], "other-relay", "relayer-a", good.nonce,
                                                "packet.verify", args))
    with pytest.raises(CodecError):
        h.sm.check_admission(h.state, h.tx("transfer", {}))
    with pytest.raises(ReplayError):
        h.sm.check_admission(h.state, h.tx("packet.verify", args, nonce=good.nonce - 1))


def test_admission_writes_nothing_and_leaves_clients_intact(h: RelayHarness) -> None:
    p = h.send()
    header = h.feeds[DPOS].next_header()
    args = h.verify_args(p, height=header.height)
    root = h.root
    h.sm.check_admission(h.state, h.tx("client.update", {"chain_id": DPOS, "headers": [header.encode().hex()]}))
    h.sm.check_admission(h.state, h.tx("packet.verify", {**args, "headers": [header.encode().hex()]}))
    assert h.root == root
    h.submit("packet.verify", {**args, "headers": [header.encode().hex()]})


# --- one block, two relayers ---------------------------------------------------------------------------


def _two_relayers_same_work(h: RelayHarness) -> tuple[list[Tx], list[Tx]]:
    """Three pieces of work (a header, a verify, a confirm), each submitted by two relayers."""
    p, q = h.send(), h.send()
    h.verify(p)
    h.deliver(p)
    _, upd = h.header_args(POC)
    h.submit("client.update", upd)
    height = h.feeds[POC].height
    confirm = h.confirm_args(p, height=height)
    _, upd2 = h.header_args(DPOS)
    verify = h.verify_args(q, height=h.feeds[DPOS].height)
    work = [("client.update", upd2), ("packet.verify", verify), ("packet.confirm_ack", confirm)]
    nonce_a = h.state.get_json(b"accounts/relayer-a")["nonce"]
    nonce_b = h.state.get_json(b"accounts/relayer-b")["nonce"]
    a = [h.tx(op, args, "relayer-a", nonce=nonce_a + i) for i, (op, args) in enumerate(work)]
    # relayer-b's copies all find their work done, and each is kept as a no-op that uses its nonce
    b = [h.tx(op, args, "relayer-b", nonce=nonce_b + i) for i, (op, args) in enumerate(work)]
    return a, b


def test_in_block_duplicates_are_no_ops_that_use_only_their_nonce(h: RelayHarness) -> None:
    a, b = _two_relayers_same_work(h)
    for tx in a + b:  # each passes admission's replay checks against the parent state
        h.sm.check_redundant(h.state, tx)
    from chains.common.state import ChainState
    from chains.common.tx import use_nonce

    only_a = ChainState(h.state.tree)
    h.sm.execute_block(only_a, a, h.ctx())
    for _ in b:
        use_nonce(only_a, "relayer-b")
    interleaved = ChainState(h.state.tree)
    result = h.sm.execute_block(interleaved, [a[0], b[0], a[1], b[1], a[2], b[2]], h.ctx())
    assert all(r["ok"] for r in result.results)
    assert [r.get("redundant") for r in result.results] == [None, "packet.replay"] * 3
    b_events = [e for e in result.events if e["tx"] in {t.hash().hex() for t in b}]
    assert [(e["type"], e["op"]) for e in b_events] == [("tx_redundant", t.op) for t in b]
    assert interleaved.root == only_a.root  # the duplicates wrote nothing but their sender's nonces


def test_a_used_nonce_is_no_no_op(h: RelayHarness) -> None:
    """Only work found done is a no-op: a transaction whose nonce was used (``packet.replay`` too) fails as before."""
    a, _ = _two_relayers_same_work(h)
    from chains.common.state import ChainState

    state = ChainState(h.state.tree)
    result = h.sm.execute_block(state, [a[0], a[0]], h.ctx())
    assert [r["ok"] for r in result.results] == [True, False]
    assert result.results[1]["error"]["code"] == "packet.replay" and "redundant" not in result.results[1]
    build = h.sm.build_block(ChainState(h.state.tree), [a[0], a[0]], h.ctx())
    assert build.included == [a[0]] and [e.code for _, e in build.dropped] == ["packet.replay"]


def test_block_builders_keep_duplicates_as_no_ops(h: RelayHarness) -> None:
    a, b = _two_relayers_same_work(h)
    candidates = [a[0], b[0], a[1], b[1], a[2], b[2]]
    from chains.common.state import ChainState

    state = ChainState(h.state.tree)
    nonce_b = state.get_json(b"accounts/relayer-b")["nonce"]
    build = h.sm.build_block(state, candidates, h.ctx())
    assert build.included == candidates and build.dropped == []
    assert [e["type"] for e in build.events] == ["client_updated", "tx_redundant", "packet_verified", "tx_redundant",
                                                 "packet_acked", "tx_redundant"]
    assert state.get_json(b"accounts/relayer-b")["nonce"] == nonce_b + 3, "no gap before relayer-b's next nonce"
    with pytest.raises(ReplayError):  # admission refuses the same work again, for free
        h.sm.check_admission(state, h.tx("packet.verify", b[1].args, "relayer-b", nonce=nonce_b + 3))


def test_block_builders_keep_a_block_within_its_byte_bound(h: RelayHarness) -> None:
    """A transaction that does not fit the block's byte budget is left in the mempool for a later block: neither
    included nor dropped (the relay node builds with ``MAX_BLOCK_BYTES``, so its proposal reaches every peer)."""
    from chains.common.state import ChainState

    a, _ = _two_relayers_same_work(h)
    sizes = [tx.size() for tx in a]
    build = h.sm.build_block(ChainState(h.state.tree), a, h.ctx(), max_bytes=sizes[0] + sizes[1])
    assert build.included == a[:2] and build.dropped == []
    build = h.sm.build_block(ChainState(h.state.tree), a, h.ctx(), max_bytes=sizes[0] + min(sizes[1:]) - 1)
    assert build.included == a[:1] and build.dropped == []
    build = h.sm.build_block(ChainState(h.state.tree), a, h.ctx())
    assert build.included == a
