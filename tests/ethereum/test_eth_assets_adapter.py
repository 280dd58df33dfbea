"""The Ethereum adapter's rights and reputation helpers (adapters/ethereum/assets.py) against real contracts on anvil:
phase 1 reads the packet back, the queries read state and logs, the contracts' refusals arrive as typed protocol
errors (the operator-only registry, an admission refusal, a timeout after the slot start)."""

from __future__ import annotations

import pytest

from adapters import ethereum as eth
from adapters.ethereum.errors import RightError
from protocol.codec import decode_charging_right, decode_reputation
from protocol.errors import AuthorizationError, TimeoutExpiredError
from protocol.types import PacketKind
from tests.ethereum.conftest import LANE, A, B, World
from tests.ethereum.harness import Park, lower_hex, settle
from tests.ethereum.test_contracts import HOUR_MS, SUCCESS_ACK, deliver

pytestmark = pytest.mark.integration


def _target(w: World, park: Park, key: bytes) -> eth.EthTarget:
    return eth.target(w.evm.w3.provider.endpoint_uri, park.chain_id, park.bridge.address, key)  # type: ignore[attr-defined]


async def test_rights_through_the_adapter(world: World) -> None:
    w = world
    op_a, op_b = _target(w, w.a, w.a.operator.key), _target(w, w.b, w.b.operator.key)
    alice, bob_b = _target(w, w.a, w.alice.key), _target(w, w.b, w.bob.key)
    try:
        with pytest.raises(AuthorizationError):
            await eth.set_transformer(alice, "trafo-1", 100)
        for op in (op_a, op_b):
            await eth.set_transformer(op, "trafo-1", 100)
            await eth.set_station(op, "station-1", "trafo-1")
        assert await eth.transformer_show(op_a, "trafo-1") == {"name": "trafo-1", "capacity_kw": 100, "bookings": 0}
        assert await eth.transformer_show(op_a, "trafo-9") is None
        start = w.evm.now_ms() + 2 * HOUR_MS
        info = await eth.issue_right(op_a, "r1", w.alice.address, "station-1", "trafo-1", 70, start,
                                     start + HOUR_MS)
        assert (info.state, info.owner, info.home_park, info.power_kw) == ("live", lower_hex(w.alice.address), A, 70)
        with pytest.raises(RightError) as refused:
            await eth.issue_right(op_a, "r2", w.alice.address, "station-1", "trafo-1", 31, start, start + HOUR_MS)
        assert refused.value.rule == "capacity.exceeded" and (refused.value.expected, refused.value.got) == (100, 101)
        assert [r.right_id for r in await eth.rights_list(op_a, lower_hex(w.alice.address))] == ["r1"]

        with pytest.raises(TimeoutExpiredError):
            await eth.send_right(alice, B, LANE, "r1", lower_hex(w.bob.address), start + 1)
        sent = await eth.send_right(alice, B, LANE, "r1", lower_hex(w.bob.address), start - 60_000)
        assert sent.packet.kind is PacketKind.CHARGING_RIGHT and sent.packet.payload == info.payload
        assert (await eth.right_show(alice, "r1")).state == "escrowed"  # type: ignore[union-attr]
        ack = deliver(w, w.b, sent.raw)
        assert ack == SUCCESS_ACK
        settle(w.evm, w.a, w.relayer, sent.raw, ack, w.relay.confirm_ack(sent.raw, ack), w.relay.vset)
        voucher = await eth.right_show(bob_b, f"{LANE}/{A}/r1")
        assert voucher is not None and (voucher.state, voucher.owner) == ("live", lower_hex(w.bob.address))
        assert decode_charging_right(voucher.payload).home_park == A
        assert [r.right_id for r in await eth.rights_list(bob_b)] == [f"{LANE}/{A}/r1"]
        assert voucher.to_json()["transformer"] == "trafo-1"
        assert await eth.right_show(bob_b, "r1") is None
    finally:
        for t in (op_a, op_b, alice, bob_b):
            await t.close()


async def test_reputation_through_the_adapter(world: World) -> None:
    w = world
    w.evm.transact(w.a.record.functions.admit(w.alice.address), w.a.operator)
    w.evm.transact(w.a.record.functions.record(w.alice.address, 2_000, 1_000), w.a.operator)
    alice, bob_b = _target(w, w.a, w.alice.key), _target(w, w.b, w.bob.key)
    subject = lower_hex(w.alice.address)
    try:
        sent = await eth.send_reputation(alice, B, LANE, subject, lower_hex(w.bob.address), w.evm.now_ms() + HOUR_MS)
        r = decode_reputation(sent.packet.payload)
        assert (r.subject, r.score, r.model) == (subject, 5_000, "eth-delivery-record/v1")
        assert deliver(w, w.b, sent.raw) == SUCCESS_ACK
        got = await eth.imported_reputation(bob_b, A, subject, "eth-delivery-record/v1")
        assert got is not None and (got["score"], got["source_height"]) == (5_000, r.source_height)
        assert await eth.imported_reputation(bob_b, A, subject, "other/v1") is None
        with pytest.raises(eth.ReputationError):
            bob = lower_hex(w.bob.address)
            await eth.send_reputation(alice, B, LANE, bob, bob, w.evm.now_ms() + HOUR_MS)
    finally:
        await alice.close()
        await bob_b.close()
