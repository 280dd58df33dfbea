"""The relayer's decisions (in-memory targets and an injected clock: unit tests of the relayer).

``next_action`` is table-tested from the chains' records and ``now``. A refusal is acted on by its
disposition, which survives the JSON-RPC wire: a redundant relay is done, not an error; a full mempool is
retried within a second; a refusal the chain's progress can lift is resubmitted after it moves; any other
refusal is not retried for a long while; an I/O error propagates to the task's loop, which backs off and
reconnects that side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from adapters.common.rpc import error_from_rpc
from protocol.errors import (
    InsufficientFundsError,
    MempoolFullError,
    NonceError,
    ProtocolError,
    RateLimitError,
    ReplayError,
    SignatureError,
    TransportError,
    WrongChainError,
)
from relay.relayer.policy import RETRY_SOON_S, Action, PacketRecords, next_action
from relay.relayer.relayer import PARK_AFTER_REJECTION_S, RESUBMIT_AFTER_S, ChainLink, Relayer

T = 1_000_000  # a packet's timeout (ms) in the next_action table


@pytest.mark.parametrize(("committed", "verified", "outcome", "received", "now", "unverified", "action"), [
    (True, False, False, False, T - 1, True, Action.VERIFY),
    (True, False, False, False, T, True, Action.TIMEOUT),  # never verified, timed out: refunded on proof
    (True, False, False, False, T, False, Action.VERIFY),  # a relay that cannot certify that
    (False, False, False, False, T - 1, True, Action.FINISH),
    (True, True, False, False, T - 1, True, Action.RECV),
    (True, True, False, False, T, True, Action.TIMEOUT),
    (True, True, False, True, T - 1, True, Action.CONFIRM),
    (True, True, False, True, T + 1, True, Action.CONFIRM),  # received before the timeout: the ack decides
    (True, True, True, True, T - 1, True, Action.SETTLE),
    (True, False, True, False, T + 1, True, Action.SETTLE),  # a certified timeout of a never-verified packet
    (False, True, True, True, T - 1, True, Action.FINISH),  # settled on the source
])
def test_next_action_from_records_and_now(committed: bool, verified: bool, outcome: bool, received: bool, now: int,
                                          unverified: bool, action: Action) -> None:
    rec = PacketRecords(committed=committed, verified=verified, outcome=outcome, received=received, timeout_ms=T)
    assert next_action(rec, now, timeout_unverified=unverified) is action


@pytest.mark.parametrize(("verified", "outcome", "received", "sentinel", "now", "action"), [
    (True, False, False, False, T - 1, Action.RECV),
    (True, False, False, False, T, Action.TIMEOUT_RECEIPT),  # the target records the timeout by its own clocks first
    (True, False, False, True, T, Action.TIMEOUT),  # then the relay is shown the target's timeout receipt
    (True, False, False, True, T - 1, Action.TIMEOUT),  # the target's clocks are ahead of ours: its receipt decides
    (True, False, True, False, T + 1, Action.CONFIRM),  # received before the timeout: the ack decides
    (False, False, False, False, T, Action.TIMEOUT),  # never verified: no certificate, so no receipt; attested absence
    (False, False, False, False, T - 1, Action.VERIFY),
    (True, True, False, True, T + 1, Action.SETTLE),
])
def test_next_action_on_a_target_that_writes_timeout_receipts(verified: bool, outcome: bool, received: bool,
                                                              sentinel: bool, now: int, action: Action) -> None:
    """A target whose kind proves timeouts by a receipt it writes itself (ChainKind.timeout_receipt: Fabric)."""
    rec = PacketRecords(committed=True, verified=verified, outcome=outcome, received=received, timeout_ms=T,
                        timeout_receipt=sentinel)
    assert next_action(rec, now, target_timeout_receipt=True) is action
    if action is Action.TIMEOUT_RECEIPT:  # the same records elsewhere go straight to the relay
        assert next_action(rec, now) is Action.TIMEOUT


def test_only_fabric_writes_timeout_receipts_and_needs_keepalives() -> None:
    from chains.fabric.consts import TIMEOUT_RECEIPT
    from chains.registry import KINDS

    assert {n: k.timeout_receipt for n, k in KINDS.items() if k.timeout_receipt} == {"fabric": TIMEOUT_RECEIPT}
    keepalive = {n: k.keepalive_after_s(k.params_type.from_mapping({})) for n, k in KINDS.items()}
    assert keepalive == {"dpos": None, "poc": None, "ethereum": None, "fabric": 3600.0}


class _Target:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.calls: list[str] = []

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        self.calls.append(op)
        if self.error is not None:
            raise self.error
        return "ab" * 32


def _relayer(tmp: Path, error: Exception | None) -> tuple[Relayer, ChainLink]:
    link = ChainLink("poc-park", "poc", source=None, target=_Target(error), client=None)  # type: ignore[arg-type]
    return Relayer("relayer-t", link, {}, tmp / "r.sqlite3"), link


@pytest.mark.parametrize(("error", "wait", "redundant", "rejected", "submitted"), [
    (None, RESUBMIT_AFTER_S, 0, 0, 1),
    (MempoolFullError("mempool full"), RETRY_SOON_S, 0, 1, 0),
    # an error whose class this side lacks keeps the code and disposition the node sent
    (error_from_rpc({"data": {"code": "mempool.full", "disposition": "retry_soon", "message": "full"}}),
     RETRY_SOON_S, 0, 1, 0),
    (error_from_rpc({"data": {"code": "park.later", "disposition": "after_progress", "message": "x"}}),
     RESUBMIT_AFTER_S, 0, 1, 0),
    (ReplayError("already received"), RESUBMIT_AFTER_S, 1, 0, 0),
    (RateLimitError("bucket short"), RESUBMIT_AFTER_S, 0, 1, 0),
    (InsufficientFundsError("outbound acks unconfirmed"), RESUBMIT_AFTER_S, 0, 1, 0),
    (NonceError("nonce too high"), RETRY_SOON_S, 0, 1, 0),
    (SignatureError("forged"), PARK_AFTER_REJECTION_S, 0, 1, 0),
    (WrongChainError("wrong chain"), PARK_AFTER_REJECTION_S, 0, 1, 0),
    (ProtocolError("anything else"), PARK_AFTER_REJECTION_S, 0, 1, 0),
])
async def test_refusals_are_classified(tmp_path: Path, error: Exception | None, wait: float, redundant: int,
                                       rejected: int, submitted: int) -> None:
    r, link = _relayer(tmp_path, error)
    t = _tracked(7, dst="poc-park")
    before = time.monotonic()
    await r._submit(link, "bridge.recv", {}, "recv", [t])
    until = r._inflight[(t.key, "recv")]
    assert before + wait - 1 <= until - 0 <= time.monotonic() + wait
    assert r.stats.redundant == redundant and r.stats.rejected == rejected
    assert sum(r.stats.submitted.values()) == submitted
    r.db.close()


async def test_an_io_error_reaches_the_run_loop(tmp_path: Path) -> None:
    r, link = _relayer(tmp_path, TransportError("connection refused", retryable=True, side="poc-park"))
    with pytest.raises(TransportError):
        await r._submit(link, "bridge.recv", {}, "recv", [_tracked(1)])
    r.db.close()


# -- taking turns where a duplicate costs (Ethereum) ------------------------------------------------


def _turns(tmp: Path, name: str, *, costly: bool, peers: tuple[str, ...] = ("relayer-a", "relayer-b", "relayer-c"),
           takeover_after_s: float = 4.0, clock: Any = time.monotonic) -> Relayer:
    eth = ChainLink("eth-park", "ethereum", source=None, target=_Target(None), client=None,  # type: ignore[arg-type]
                    duplicates_reach_blocks=costly)
    dpos = ChainLink("dpos-park", "dpos", source=None, target=_Target(None), client=None)  # type: ignore[arg-type]
    relay = ChainLink("relay", "relay", source=None, target=_Target(None), client=None)  # type: ignore[arg-type]
    return Relayer(name, relay, {"eth-park": eth, "dpos-park": dpos}, tmp / f"{name}.sqlite3", peers=peers,
                   takeover_after_s=takeover_after_s, clock=clock)


def _tracked(seq: int, src: str = "dpos-park", dst: str = "eth-park") -> Any:
    from protocol.types import Packet, PacketKind
    from relay.relayer.relayer import Tracked

    p = Packet(src_chain=src, dst_chain=dst, lane="lane-0", sequence=seq, kind=PacketKind.ENERGY,
               payload=b"x", sender="alice", receiver="erin", timeout_timestamp_ms=10**13)
    return Tracked(p, b"", 1)


def test_relayers_agree_on_one_turn_order_per_action(tmp_path: Path) -> None:
    rs = [_turns(tmp_path, n, costly=True) for n in ("relayer-a", "relayer-b", "relayer-c")]
    firsts = set()
    for seq in range(60):
        key = f"dpos-park/eth-park/lane-0/{seq}"
        orders = {tuple(r.turn_order(key, "recv")) for r in rs}
        assert len(orders) == 1  # every relayer computes the same order
        firsts.add(next(iter(orders))[0])
    assert firsts == {"relayer-a", "relayer-b", "relayer-c"}  # and the first turn is spread over them
    for r in rs:
        r.db.close()


def test_only_the_relayer_whose_turn_it_is_acts_then_the_next_takes_over(tmp_path: Path) -> None:
    now = [1000.0]
    rs = {n: _turns(tmp_path, n, costly=True, clock=lambda: now[0]) for n in ("relayer-a", "relayer-b", "relayer-c")}
    t = _tracked(5)
    first, second, _third = rs["relayer-a"].turn_order(t.key, "recv")
    assert [n for n, r in rs.items() if r._my_turn(t, "recv")] == [first]
    now[0] += 4.0
    assert sorted(n for n, r in rs.items() if r._my_turn(t, "recv")) == sorted([first, second])
    now[0] += 4.0
    assert all(r._my_turn(t, "recv") for r in rs.values())
    # settling lands on the source (DPoS here): refused at admission when redundant, so no turns there
    assert all(r._my_turn(t, "settle") for r in rs.values())
    back = _tracked(6, src="eth-park", dst="dpos-park")  # settling on Ethereum takes turns; receiving on DPoS not
    assert sum(r._my_turn(back, "settle") for r in rs.values()) == 1
    assert all(r._my_turn(back, "recv") and r._my_turn(back, "verify") for r in rs.values())
    for r in rs.values():
        r.db.close()


def test_where_different_packets_conflict_one_relayer_writes_and_the_others_cover(tmp_path: Path) -> None:
    """``one_writer`` (Fabric: MVCC): the turn order is per chain, so one relayer sends every packet's transactions
    there (its adapter keeps its own conflicting ones apart) and no two relayers' transactions meet in a block; the
    next in line covers a packet whose action stayed due for takeover_after_s."""
    now = [1000.0]
    names = ("relayer-a", "relayer-b", "relayer-c")
    rs = {n: _turns(tmp_path, n, costly=True, clock=lambda: now[0]) for n in names}
    for r in rs.values():
        r.parks["eth-park"].one_writer = True
    packets = [_tracked(seq) for seq in range(30)]
    acting = {n for t in packets for n, r in rs.items() if r._my_turn(t, "recv")}
    assert len(acting) == 1  # the same relayer for every packet
    writer = acting.pop()
    back = _tracked(99, src="eth-park", dst="dpos-park")
    assert [n for n, r in rs.items() if r._my_turn(back, "settle")] == [writer]  # every action on that chain
    now[0] += 4.0
    second = rs[writer].turn_order("writes/eth-park", "write")[1]
    assert {n for n, r in rs.items() if r._my_turn(packets[0], "recv")} == {writer, second}
    for r in rs.values():
        r.db.close()


def test_no_turns_on_chains_that_refuse_duplicates_or_for_a_lone_relayer(tmp_path: Path) -> None:
    t = _tracked(1)
    free = [_turns(tmp_path, n, costly=False) for n in ("relayer-a", "relayer-b")]
    assert all(r._my_turn(t, "recv") for r in free)
    alone = _turns(tmp_path, "relayer-z", costly=True, peers=())
    assert alone._my_turn(t, "recv")
    for r in [*free, alone]:
        r.db.close()


async def test_a_refused_header_update_is_looked_at_again_soon_and_the_log_says_when(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Header updates change with the chain: whatever the refusal, the relayer looks again within seconds, and its log
    says that wait, not the 300 s a refused packet waits."""
    import logging

    r, link = _relayer(tmp_path, SignatureError("forged"))
    before = time.monotonic()
    with caplog.at_level(logging.INFO, logger="parkrelay.relayer"):
        await r._submit(link, "client.update", {}, "update/poc-park", None)
    until = r._inflight[("update/poc-park", "update")]
    assert until - before <= RESUBMIT_AFTER_S / 3 + 1
    assert "not retried for 2s" in caplog.text and "300" not in caplog.text
    r.db.close()


def test_a_chain_kinds_refined_code_arrives_as_its_class_and_so_as_the_generic_one() -> None:
    """A relay node answers a Fabric attestation it refuses with ``proof.fabric.statement``; over JSON-RPC it is rebuilt
    as that class (chains.fabric.errors), which is an InvalidProofError: callers that catch the generic class (and
    decide by its disposition) need not know the kind."""
    from chains.fabric.errors import StatementError
    from protocol.errors import Disposition, InvalidProofError

    err = error_from_rpc({"data": {"code": "proof.fabric.statement", "message": "another key", "got": "ab"}})
    assert isinstance(err, StatementError) and isinstance(err, InvalidProofError)
    assert (err.code, err.disposition, err.got) == ("proof.fabric.statement", Disposition.NEVER, "ab")
    assert type(error_from_rpc({"data": {"code": "packet.replay", "message": "x"}})) is ReplayError  # the general one
    assert error_from_rpc({"data": {"code": "remote", "message": "x"}}).code == "remote"


@pytest.mark.parametrize(("error", "level", "words"), [
    (None, "INFO", "submitted"),
    (MempoolFullError("mempool full"), "INFO", "refused for now"),
    (SignatureError("forged"), "ERROR", "not retried"),
])
async def test_a_log_line_about_packets_carries_their_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          error: Exception | None, level: str, words: str) -> None:
    """Submissions and refusals name their packets on the record (``packet``), so ``--log-json`` lines can be
    selected by packet id; the chain and node ride along as on every line of the relayer."""
    import json
    import logging

    from relay.ops.cli import JsonLogFormatter

    r, link = _relayer(tmp_path, error)
    batch = [_tracked(7), _tracked(8)]
    with caplog.at_level(logging.INFO, logger="parkrelay.relayer"):
        await r._submit(link, "packet.verify_batch", {}, "verify", batch)
    (record,) = [rec for rec in caplog.records if words in rec.getMessage()]
    assert record.levelname == level
    line = json.loads(JsonLogFormatter().format(record))
    assert line["packet"] == ["dpos-park/eth-park/lane-0/7", "dpos-park/eth-park/lane-0/8"]
    assert (line["chain"], line["node"], line["level"]) == ("poc-park", "relayer-t", level)
    # a line about no packet has no packet field
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="parkrelay.relayer"):
        await r._submit(link, "client.update", {}, "update/poc-park", None)
    assert all("packet" not in json.loads(JsonLogFormatter().format(rec)) for rec in caplog.records)
    r.db.close()
