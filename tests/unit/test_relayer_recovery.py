"""The relayer around a frozen client and its recovery (SPEC.md §8.8), on the in-memory chains of
:mod:`tests.unit.test_relayer_loop`: while the relay's client of a source park is frozen, the relayer neither
verifies that park's packets nor delivers the ones the relay verified from it (they may come from a branch the
park abandoned); once a substitute client replaced the frozen one it rescans the park and carries on, a packet the
recovery revoked going back to phase 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from protocol.errors import CertificateStaleError
from protocol.paths import verified_path
from relay.relayer.policy import RETRY_SOON_S
from tests.unit.test_relayer_loop import _client, _Park, _Relay, _relayer, _send_event

_P = TypeVar("_P", bound=_Park)
_Q = TypeVar("_Q", bound=_Park)


class _RelayWithRecords(_Relay):
    """The fake relay, plus VERIFIED records for the keys in ``verified``."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: set[str] = set()

    async def query_many(self, keys: list[str]) -> dict[str, str | None]:
        return {k: ("01" * 32 if k in self.verified else None) for k in keys}


def _one_verified_packet(relay: _RelayWithRecords, a: _P, b: _Q) -> tuple[_P, _Q]:
    """Packet 1 from ``a`` to ``b`` sent at height 3, both clients at 10 (final 8), and VERIFIED on ``relay``."""
    a.events_at[3] = [_send_event("park-a", "park-b", 1, 3)]
    _client(relay, a, latest=10, final=8)
    _client(relay, b, latest=10, final=8)
    relay.verified.add(verified_path("park-a", "park-b", "lane-0", 1).decode())
    return a, b


async def test_a_frozen_source_holds_its_packets_and_a_recovery_resumes_them(tmp_path: Path) -> None:
    relay = _RelayWithRecords()
    a, b = _one_verified_packet(relay, _Park("park-a"), _Park("park-b"))
    relay.status["park-a"].update(client_id="poc-0", status="frozen", frozen_height=9)
    relay.status["park-b"]["client_id"] = "dpos-1"
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r.step()
    await r.step()
    # verified on the relay, not executed on the target: while the source's client is frozen it is not delivered
    assert [op for op, _ in b.submitted] == []
    assert not [op for op, _ in relay.submitted if op.startswith(("packet.verify", "client.update"))]
    assert r.stats.clients_frozen == 1
    assert r.db.execute("SELECT height FROM cursors WHERE chain = 'park-a'").fetchone() is not None

    # governance recovered the client: a substitute with a new id, and the recovery revoked the packet
    relay.status["park-a"] = {**relay.status["park-a"], "client_id": "poc-2", "status": "active",
                              "frozen_height": None}
    relay.verified.clear()
    r._client_checked.clear()  # type: ignore[attr-defined]  # (the status cache lives one second)
    await r.step()
    assert r.stats.clients_recovered == 1
    # the packet goes back to phase 2 against the substitute; nothing was delivered from the old verification
    assert [op for op, _ in relay.submitted if op == "packet.verify_batch"]
    assert [op for op, _ in b.submitted] == []
    r.db.close()


async def test_another_packet_at_the_sequence_on_the_new_branch_replaces_the_tracked_one(tmp_path: Path) -> None:
    relay = _RelayWithRecords()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[3] = [_send_event("park-a", "park-b", 1, 3)]
    _client(relay, a, latest=10, final=8)
    _client(relay, b, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None)
    await r.step()
    (old,) = r.packets.values()
    new_event: dict[str, Any] = _send_event("park-a", "park-b", 1, 4, timeout_ms=10**13 + 1)
    a.events_at = {4: [new_event]}
    r._rescan("park-a")
    await r.step()
    (new,) = r.packets.values()
    assert new.raw != old.raw and new.raw.hex() == new_event["packet"]
    (row,) = r.db.execute("SELECT packet, done FROM packets").fetchall()
    assert row == (new.raw.hex(), 0)
    r.db.close()


class _RelayWithCertificates(_RelayWithRecords):
    """Serves ``getCertificate``: a new certificate (numbered) for every call, as a relay's newest block gives."""

    def __init__(self) -> None:
        super().__init__()
        self.certificates = 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if method == "getCertificate":
            self.certificates += 1
            return {"n": self.certificates, "key": (params or {})["key"]}
        return await super().call(method, params)


class _StaleOnceTarget(_Park):
    """A target that refuses the first certificate as stale (SPEC §7.9), then accepts."""

    def __init__(self, chain_id: str) -> None:
        super().__init__(chain_id)
        self.refusals = 0

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        if op == "bridge.recv" and self.refusals == 0:
            self.refusals += 1
            self.submitted.append((op, args))
            raise CertificateStaleError("relay certificate too old for phase 3", expected=">= 1", got=0)
        return await super().submit(op, args)


async def test_a_stale_certificate_is_refetched_and_resubmitted_within_a_second(tmp_path: Path) -> None:
    relay = _RelayWithCertificates()
    a, b = _one_verified_packet(relay, _Park("park-a"), _StaleOnceTarget("park-b"))
    now = [0.0]
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, heartbeat_s=None, clock=lambda: now[0])
    await r.step()
    await r.step()
    recvs = [args for op, args in b.submitted if op == "bridge.recv"]
    assert len(recvs) == 1 and recvs[0]["certificate"]["n"] == 1 and b.refusals == 1
    now[0] += RETRY_SOON_S + 0.01  # certificate.stale: resubmitted soon, not parked, with a certificate fetched anew
    await r.step()
    recvs = [args for op, args in b.submitted if op == "bridge.recv"]
    assert len(recvs) == 2 and recvs[1]["certificate"]["n"] > recvs[0]["certificate"]["n"]
    r.db.close()
