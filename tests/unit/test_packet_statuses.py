"""``packet_statuses``: the operator's packet states (``parkrelay packets list``, the soak's drain) read in bulk —
one batched read per chain and kind of record, not a few calls a packet — with the same state for each packet as
reading it alone."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.codec import encode_ack, encode_energy, encode_outcome, encode_packet
from protocol.paths import ack_path, commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import Acknowledgement, AckStatus, EnergyPayload, Packet, PacketKind, PacketOutcome
from relay.ops import packets as ops_packets
from relay.ops.parks import ParkView

DPOS, POC, LANE = "dpos-park", "poc-park", "lane-0"


def _packet(seq: int) -> Packet:
    return Packet(src_chain=DPOS, dst_chain=POC, lane=LANE, sequence=seq, kind=PacketKind.ENERGY,
                  payload=encode_energy(EnergyPayload("kWh", 100 + seq)), sender="alice", receiver="carol",
                  timeout_timestamp_ms=10**13)


class _Chain:
    kind = "dpos"


class _View(ParkView):
    """A park holding records in a dict; counts its bulk reads (``ParkView.acks`` reads through them too)."""

    def __init__(self, records: dict[str, bytes]) -> None:
        self.chain = _Chain()  # type: ignore[assignment]
        self.records = records
        self.bulk_reads: list[int] = []

    def query(self, path: str) -> bytes | None:
        raise AssertionError("read one record at a time")

    def query_many(self, paths: list[str]) -> dict[str, bytes | None]:
        self.bulk_reads.append(len(paths))
        return {p: self.records.get(p) for p in paths}


class _Cfg:
    relay_base_port = 26000
    relay_chain_id = "relay"

    def relay_url(self, name: str) -> str:
        return "http://127.0.0.1:26000"

    relay_validators = ["op-a"]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, _View], dict[str, str], list[dict[str, Any]]]:
    """Five packets dpos -> poc: 1 completed, 2 refunded (timed out), 3 executed, 4 verified, 5 committed."""
    src: dict[str, bytes] = {}
    dst: dict[str, bytes] = {}
    relay: dict[str, str] = {}
    ok = Acknowledgement(AckStatus.SUCCESS, "ok", b"")
    for seq in range(1, 6):
        p = _packet(seq)
        if seq >= 3:  # settled packets left the source
            src[commitment_path(POC, LANE, seq).decode()] = b"\x01" * 32
        if seq in (1, 3):
            dst[receipt_path(DPOS, LANE, seq).decode()] = b"\x01"
            dst[ack_path(DPOS, LANE, seq).decode()] = encode_ack(ok).hex().encode()  # hex text, as the parks keep
        if seq <= 4:
            relay[verified_path(DPOS, POC, LANE, seq).decode()] = "aa"
        if seq == 1:
            relay[outcome_path(DPOS, POC, LANE, seq).decode()] = encode_outcome(
                PacketOutcome.ACKED, b"\x01" * 32, b"\x02" * 32).hex()
        if seq == 2:
            relay[outcome_path(DPOS, POC, LANE, seq).decode()] = encode_outcome(
                PacketOutcome.TIMED_OUT, b"\x01" * 32, b"\x00" * 32).hex()
        assert p.sequence == seq
    views = {DPOS: _View(src), POC: _View(dst)}
    calls: list[dict[str, Any]] = []

    def fake_rpc(url: str, method: str, params: dict[str, Any] | None = None, timeout: float = 3.0) -> Any:
        assert method == "queryMany", method
        assert params is not None and len(params["keys"]) <= 1000
        calls.append(params)
        return {"height": 9, "values": {k: relay.get(k) for k in params["keys"]}}

    monkeypatch.setattr(ops_packets, "rpc", fake_rpc)
    return views, relay, calls


def test_states_are_read_in_bulk_with_one_read_per_chain_and_record_kind(world: Any) -> None:
    views, _, calls = world
    raws = [encode_packet(_packet(seq)) for seq in range(1, 6)]
    rows = ops_packets.packet_statuses(_Cfg(), raws, dict(views))  # type: ignore[arg-type]
    assert [r["state"] for r in rows] == ["completed", "refunded", "executed", "verified", "committed"]
    assert [r["packet"] for r in rows] == [f"{DPOS}/{POC}/{LANE}/{s}" for s in range(1, 6)]
    assert rows[0]["ack"] == {"success": True, "code": "ok"} and rows[1]["ack"] is None
    assert [r["verified"] for r in rows] == [True, True, True, True, False]
    assert rows[0]["payload"] == {"denom": "kWh", "amount_wh": 101}
    # the source read its commitments once; the target its receipts once and the acks of the executed ones once
    assert views[DPOS].bulk_reads == [5]
    assert views[POC].bulk_reads == [5, 2]
    assert len(calls) == 1 and len(calls[0]["keys"]) == 15  # suspended, verified and outcome of each packet

    one = [ops_packets.packet_status(_Cfg(), raw, dict(views)) for raw in raws]  # type: ignore[arg-type]
    assert one == rows  # alone or in bulk, the same answer


def test_the_relay_chain_is_asked_at_most_a_thousand_keys_a_call(world: Any) -> None:
    views, _, calls = world
    raws = [encode_packet(_packet(seq)) for seq in range(1, 501)]
    rows = ops_packets.packet_statuses(_Cfg(), raws, dict(views))  # type: ignore[arg-type]
    assert len(rows) == 500 and rows[-1]["state"] == "committed"
    assert [len(c["keys"]) for c in calls] == [1000, 500]


def test_a_suspended_packet_is_reported(world: Any) -> None:
    views, relay, _ = world
    relay["relay/suspended/" + verified_path(DPOS, POC, LANE, 4).decode()[len("relay/verified/"):]] = "aa"
    del relay[verified_path(DPOS, POC, LANE, 4).decode()]
    (row,) = ops_packets.packet_statuses(_Cfg(), [encode_packet(_packet(4))], dict(views))  # type: ignore[arg-type]
    assert row["suspended"] is True and row["state"] == "committed"
