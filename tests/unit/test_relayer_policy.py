"""The relayer's reaction to each kind of refusal (an in-memory target: a unit test of the relayer).

A redundant relay is done, not an error; a refusal the chain's progress can lift is resubmitted soon;
any other protocol refusal is not retried for a long while; an I/O error propagates to the run loop,
which backs off and reconnects that side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import (
    InsufficientFundsError,
    NonceError,
    ProtocolError,
    RateLimitError,
    ReplayError,
    SignatureError,
    TransportError,
    WrongChainError,
)
from relay.relayer import PARK_AFTER_REJECTION_S, RESUBMIT_AFTER_S, ChainLink, Relayer


class _Target:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[str] = []

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self.calls.append(op)
        if self.error is not None:
            raise self.error
        return "ab" * 32


class _Tracked:
    def __init__(self, key: str) -> None:
        self.key = key


def _relayer(tmp: Path, error: Exception | None) -> tuple[Relayer, ChainLink]:
    link = ChainLink("poc-park", "poc", source=None, target=_Target(error), client=None)  # type: ignore[arg-type]
    return Relayer("relayer-t", link, {}, tmp / "r.sqlite3"), link


@pytest.mark.parametrize(("error", "wait", "redundant", "rejected", "submitted"), [
    (None, RESUBMIT_AFTER_S, 0, 0, 1),
    (ReplayError("already received"), RESUBMIT_AFTER_S, 1, 0, 0),
    (RateLimitError("bucket short"), RESUBMIT_AFTER_S, 0, 1, 0),
    (InsufficientFundsError("outbound acks unconfirmed"), RESUBMIT_AFTER_S, 0, 1, 0),
    (NonceError("nonce too high"), RESUBMIT_AFTER_S, 0, 1, 0),
    (SignatureError("forged"), PARK_AFTER_REJECTION_S, 0, 1, 0),
    (WrongChainError("wrong chain"), PARK_AFTER_REJECTION_S, 0, 1, 0),
    (ProtocolError("anything else"), PARK_AFTER_REJECTION_S, 0, 1, 0),
])
async def test_refusals_are_classified(tmp_path: Path, error: Exception | None, wait: float, redundant: int,
                                       rejected: int, submitted: int) -> None:
    r, link = _relayer(tmp_path, error)
    t = _Tracked("dpos-park/poc-park/lane-0/7")
    before = time.monotonic()
    await r._submit(link, "bridge.recv", {}, "recv", [t])  # type: ignore[list-item]
    until = r._inflight[(t.key, "recv")]
    assert before + wait - 1 <= until - 0 <= time.monotonic() + wait
    assert r.stats.redundant == redundant and r.stats.rejected == rejected
    assert sum(r.stats.submitted.values()) == submitted
    r.db.close()


async def test_an_io_error_reaches_the_run_loop(tmp_path: Path) -> None:
    r, link = _relayer(tmp_path, TransportError("connection refused", retryable=True, side="poc-park"))
    with pytest.raises(TransportError):
        await r._submit(link, "bridge.recv", {}, "recv", [_Tracked("k")])  # type: ignore[list-item]
    r.db.close()
