"""Exact same inputs, exact same state root: on a fresh node, on a restarted node, in any block split."""

from __future__ import annotations

from typing import Any

from chains.common.state import ChainState
from chains.common.tx import Tx
from tests.unit.relay_state.harness import DPOS, LANE, MINUTE, POC, VOUCHER, RelayHarness
from tests.unit.relay_state.test_rejections import make_setup


def scenario(h: RelayHarness, on_tx: Any = None) -> list[bytes]:
    """Energy out and back, an error ack, a timeout, a batch, governance; the relay root after each step."""
    roots: list[bytes] = []
    submit = h.submit

    def recording(op: str, args: dict[str, Any], sender: str = "relayer-a") -> list[dict[str, Any]]:
        if on_tx is not None:
            on_tx(h)
        events = submit(op, args, sender)
        roots.append(h.root)
        return events

    h.submit = recording  # type: ignore[method-assign]
    p = h.send(amount_wh=5_000)
    h.roundtrip(p)
    back = h.send(src=POC, sender="bob", denom=VOUCHER, amount_wh=1_000)
    h.roundtrip(back)
    bad = h.send(receiver="nobody", amount_wh=10)
    h.roundtrip(bad)
    late = h.send(amount_wh=20, timeout_timestamp_ms=h.net.now_ms + MINUTE)
    h.verify(late)
    h.net.advance(MINUTE)
    h.confirm_timeout(late)
    h.settle(late, acked=False)
    packets = [h.send(amount_wh=1) for _ in range(5)]
    height = h.update(DPOS)
    items = [{k: h.verify_args(x, height=height)[k] for k in ("packet", "proof")} for x in packets]
    h.submit("packet.verify_batch", {"height": height, "items": items}, "relayer-b")
    h.govern("lane.set_limits", {"src": POC, "dst": DPOS, "lane": LANE,
                                 "limits": {"*": {"capacity": 10_000, "refill_per_s": 5}}})
    h.net.advance(1_234)
    h.roundtrip(h.send(src=POC, sender="carol", amount_wh=7_000))
    return roots


def test_same_inputs_same_roots() -> None:
    a, b = scenario(RelayHarness()), scenario(RelayHarness())
    assert len(a) > 20
    assert a == b


def test_state_alone_determines_the_result() -> None:
    # a node that forgets every decoded client before each transaction computes the same roots
    assert scenario(RelayHarness(), on_tx=lambda h: h.sm.router.drop_cache()) == scenario(RelayHarness())


def test_block_split_does_not_matter() -> None:
    s1, s2 = make_setup(), make_setup()
    txs: list[list[Tx]] = []
    for s in (s1, s2):
        h = s.h
        _, upd = h.header_args(DPOS)
        args = [h.verify_args(p, height=h.feeds[DPOS].height) for p in (s.p1, s.p2)]
        nonce = h.state.get_json(b"accounts/relayer-a")["nonce"]
        txs.append([h.tx("client.update", upd, nonce=nonce), h.tx("packet.verify", args[0], nonce=nonce + 1),
                    h.tx("packet.verify", args[1], nonce=nonce + 2)])
    one = ChainState(s1.h.state.tree)
    s1.h.sm.execute_block(one, txs[0], s1.h.ctx())
    three = ChainState(s2.h.state.tree)
    for i, tx in enumerate(txs[1]):
        ctx = s2.h.ctx()
        s2.h.sm.execute_block(three, [tx], type(ctx)(ctx.chain_id, ctx.height + i, ctx.timestamp_ms, ctx.producer))
    assert txs[0] == txs[1]
    assert one.root == three.root
