"""Redundant relays are refused at admission, cheaply, and dropped from blocks (SPEC.md §1 Trust)."""

from __future__ import annotations

from typing import Any

import pytest

from chains.common.tx import Tx
from protocol.errors import (
    ClientFrozenError,
    CodecError,
    IllegalTransitionError,
    ProtocolError,
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
    # relayer-b's copies all fail, and a failed transaction does not consume its nonce
    b = [h.tx(op, args, "relayer-b", nonce=nonce_b) for op, args in work]
    return a, b


def test_in_block_duplicates_fail_in_execution_and_change_nothing(h: RelayHarness) -> None:
    a, b = _two_relayers_same_work(h)
    for tx in a + b:  # each passes admission against the parent state (nonces aside)
        h.sm.check_redundant(h.state, tx)
    from chains.common.state import ChainState

    only_a = ChainState(h.state.tree)
    h.sm.execute_block(only_a, a, h.ctx())
    interleaved = ChainState(h.state.tree)
    result = h.sm.execute_block(interleaved, [a[0], b[0], a[1], b[1], a[2], b[2]], h.ctx())
    assert [r["ok"] for r in result.results] == [True, False, True, False, True, False]
    assert {r["error"]["code"] for r in result.results if not r["ok"]} == {"packet.replay"}
    assert interleaved.root == only_a.root  # the failed duplicates wrote nothing, not even their nonces


def test_block_builders_drop_duplicates(h: RelayHarness) -> None:
    a, b = _two_relayers_same_work(h)
    candidates = [a[0], b[0], a[1], b[1], a[2], b[2]]
    kept, dropped = h.sm.select_block_txs(h.state, candidates)
    assert kept == a and [t for t, _ in dropped] == b
    assert all(isinstance(e, ReplayError) for _, e in dropped)
    from chains.common.state import ChainState

    build = h.sm.build_block(ChainState(h.state.tree), candidates, h.ctx())
    assert build.included == a and [t for t, _ in build.dropped] == b
    assert all(e.code == "packet.replay" for _, e in build.dropped)
    assert [e["type"] for e in build.events] == ["client_updated", "packet_verified", "packet_acked"]


def test_work_keys(h: RelayHarness) -> None:
    a, _ = _two_relayers_same_work(h)
    keys = [h.sm.work_keys(h.state, tx) for tx in a]
    assert keys[0] == {f"relay/header/{DPOS}/{h.feeds[DPOS].height}".encode()}
    assert keys[1] == {b"relay/verified/dpos-park/poc-park/lane-0/2"}
    assert keys[2] == {b"relay/outcome/dpos-park/poc-park/lane-0/1"}


def test_select_drops_what_admission_refuses(h: RelayHarness) -> None:
    p = h.send()
    args = h.verify_args(p)
    h.submit("packet.verify", args)
    kept, dropped = h.sm.select_block_txs(h.state, [h.tx("packet.verify", args, "relayer-b")])
    assert kept == [] and isinstance(dropped[0][1], ProtocolError)


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
