"""``FabricTarget.track`` returns once every followed peer has committed the transaction (or a grace has passed), so
a query right after it sees the write whichever peer answers.

The CI run that failed on ``test_fabric_assets.py`` read state from the identity's own peer one moment after
``track`` returned on the other organisation's commit event: its ``rights/`` scan missed a write its ``acks/`` scan
saw. Here the :class:`~adapters.fabric.gateway.CommitWatcher` is the real one, fed commit events by hand (no streams);
the gateway around it is a stand-in, as the peers are not what is under test."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.fabric.gateway import CommitWatcher, TxStatus
from adapters.fabric.target import FabricTarget


class _Gateway:
    chain_id = "fabric-park"

    def __init__(self) -> None:
        self.w = CommitWatcher(self, ["peer0.org1", "peer0.org2"])  # type: ignore[arg-type]

    async def watcher(self) -> CommitWatcher:
        return self.w


def _target(grace_s: float) -> tuple[FabricTarget, CommitWatcher]:
    gw: Any = _Gateway()
    return FabricTarget(gw, all_peers_grace_s=grace_s), gw.w


def test_track_waits_for_the_second_peer_before_returning() -> None:
    async def scenario() -> None:
        target, watcher = _target(grace_s=30.0)
        watcher.record(TxStatus("tx1", 0, 7, "peer0.org2"))  # the other organisation's peer first
        task = asyncio.ensure_future(target.track("tx1", 5.0))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not task.done(), "track returned before the identity's own peer committed"
        watcher.record(TxStatus("tx1", 0, 7, "peer0.org1"))
        assert await asyncio.wait_for(task, 1.0) == {"ok": True, "height": 7, "tx_hash": "tx1"}

    asyncio.run(scenario())


def test_a_peer_lagging_past_the_grace_does_not_fail_a_committed_transaction() -> None:
    async def scenario() -> None:
        target, watcher = _target(grace_s=0.05)
        watcher.record(TxStatus("tx2", 0, 9, "peer0.org1"))
        assert await asyncio.wait_for(target.track("tx2", 5.0), 2.0) == {"ok": True, "height": 9, "tx_hash": "tx2"}

    asyncio.run(scenario())


def test_both_peers_committed_returns_at_once() -> None:
    async def scenario() -> None:
        target, watcher = _target(grace_s=30.0)
        for peer in ("peer0.org1", "peer0.org2"):
            watcher.record(TxStatus("tx3", 0, 4, peer))
        assert await asyncio.wait_for(target.track("tx3", 5.0), 1.0) == {"ok": True, "height": 4, "tx_hash": "tx3"}

    asyncio.run(scenario())
