"""The relay's client of a park fell behind the park's state window (soak seed 15: ``state at that height was pruned
... got 382``, retried every 10 s forever): the relayer must not retry a proof at a height the park no longer holds.
It keeps feeding the client the park's headers and proves again once the client's final height is in the window."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from adapters.common.rpc import error_from_rpc
from tests.unit.test_relayer_loop import _client, _Park, _Relay, _relayer, _send_event


class _PruningPark(_Park):
    """A park that keeps state only from ``keep_from`` up (chains.common.node's STATE_RETENTION window)."""

    def __init__(self, chain_id: str, height: int, final: int, keep_from: int) -> None:
        super().__init__(chain_id, height=height, final=final)
        self.keep_from = keep_from
        self.asked: list[int] = []

    async def prove(self, key: bytes, height: int) -> Any:
        self.asked.append(height)
        if height < self.keep_from:  # what the node's query answers, rebuilt as the RPC client does
            raise error_from_rpc({"code": -32004, "message": "state at that height was pruned",
                                  "data": {"code": "rpc.not_found", "message": "state at that height was pruned",
                                           "got": height}})
        return await super().prove(key, height)


async def test_a_pruned_proof_height_waits_for_the_client_update_instead_of_failing_the_step(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    relay = _Relay()
    src = _PruningPark("dpos-park", height=700, final=690, keep_from=170)
    dst = _Park("poc-park")
    src.events_at[3] = [_send_event("dpos-park", "poc-park", 1, 3)]
    _client(relay, src, latest=100, final=90)  # far behind: its final header's state is gone on the park
    _client(relay, dst, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"dpos-park": src, "poc-park": dst}, heartbeat_s=None)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        await r.step()  # no exception: the step goes on (before: rpc.not_found raised, 10 s backoff, forever)
    assert 90 in src.asked
    assert not [op for op, _ in relay.submitted if op == "packet.verify_batch"]
    updates = [a for op, a in relay.submitted if op == "client.update" and a["chain_id"] == "dpos-park"]
    assert updates and bytes.fromhex(updates[0]["headers"][0]) == b"101/main"  # fed from its newest header on
    assert r.stats.proof_heights_unavailable >= 1
    assert sum("final height 90" in m for m in caplog.messages) == 1  # logged once per height, not per retry

    # the updates landed: the client's final height is back in the park's window, and the packet is proven there
    _client(relay, src, latest=200, final=180)
    r._inflight.clear()
    r._client_checked.clear()  # type: ignore[attr-defined]  # (the status cache lives one second)
    await r.step()
    verifies = [a for op, a in relay.submitted if op == "packet.verify_batch"]
    assert verifies and verifies[0]["height"] == 180
    r.db.close()
