"""``packet.verify_batch`` after the issue-16 speed-ups: one replay lookup per packet, buffered state writes.

A packet listed twice in one batch is verified once (the second is skipped, the supply counts it once); a
batch whose last item fails leaves the relay state exactly as it was (root included), though the items before
it had already been written to the buffered state.
"""

from __future__ import annotations

import pytest

from protocol.errors import InvalidProofError, ReplayError
from protocol.paths import verified_path
from tests.unit.relay_state.harness import DPOS, LANE, POC, RelayHarness


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness()


def _items(h: RelayHarness, packets: list, height: int) -> list[dict[str, str]]:  # type: ignore[type-arg]
    out = []
    for p in packets:
        args = h.verify_args(p, height=height)
        out.append({"packet": args["packet"], "proof": args["proof"]})
    return out


def test_a_packet_twice_in_one_batch_is_verified_once(h: RelayHarness) -> None:
    packets = [h.send(amount_wh=10) for _ in range(3)]
    height = h.update(DPOS)
    items = _items(h, packets, height)
    events = h.submit("packet.verify_batch", {"height": height, "items": [items[0], items[1], items[0], items[2]]})
    assert [e["sequence"] for e in events if e["type"] == "packet_verified"] == [1, 2, 3]
    assert [e["sequences"] for e in events if e["type"] == "packets_skipped"] == [[1]]
    assert h.supply()["outbound"] == 30
    # the whole batch again: every item redundant, so the transaction is a replay
    with pytest.raises(ReplayError):
        h.submit("packet.verify_batch", {"height": height, "items": items})
    assert h.supply()["outbound"] == 30


def test_a_failing_last_item_rolls_back_the_buffered_writes(h: RelayHarness) -> None:
    packets = [h.send(amount_wh=10) for _ in range(3)]
    height = h.update(DPOS)
    items = _items(h, packets, height)
    forged = dict(items[2])
    proof = bytearray(bytes.fromhex(forged["proof"]))
    proof[5] ^= 1  # a sibling hash flipped: the proof no longer reaches the root
    forged["proof"] = proof.hex()
    root, supply = h.state.root, h.supply()
    with pytest.raises(InvalidProofError):
        h.submit("packet.verify_batch", {"height": height, "items": [items[0], items[1], forged]})
    assert h.state.root == root
    assert h.supply() == supply
    for p in packets:
        assert h.state.get(verified_path(p.src_chain, POC, LANE, p.sequence)) is None
    events = h.submit("packet.verify_batch", {"height": height, "items": items})
    assert len([e for e in events if e["type"] == "packet_verified"]) == 3
    for p in packets:
        assert h.state.get(verified_path(p.src_chain, POC, LANE, p.sequence)) is not None
