"""Reputation on the Ethereum park, on a real anvil (issue 12 rules; chains/ethereum/SPEC.md §E2.7).

The park attests what its market's delivery record scores (model ``eth-delivery-record/v1``: delivered over
contracted energy, basis points), read from state at send, never from the sender; the target keeps the newest
attestation per (source park, subject, model) and refuses a stale one; the market admits a participant from
another park by its imported score.
"""

from __future__ import annotations

import pytest

from protocol.codec import decode_packet, decode_reputation, encode_reputation
from protocol.types import PacketKind, ReputationPayload
from tests.ethereum.conftest import DPOS, LANE, A, B, World
from tests.ethereum.harness import lower_hex, send_reputation, settle
from tests.ethereum.test_contracts import HOUR_MS, SUCCESS_ACK, deliver, error_ack, name_of, py_packet

pytestmark = pytest.mark.integration

MODEL = "eth-delivery-record/v1"


def admit_and_record(w: World, who: str, contracted: int, delivered: int) -> None:
    rec = w.a.record
    if not rec.functions.participantOf(who).call()[0]:
        w.evm.transact(rec.functions.admit(who), w.a.operator)
    w.evm.transact(rec.functions.record(who, contracted, delivered), w.a.operator)


def test_delivery_record_is_written_by_the_operator_or_its_market(world: World) -> None:
    w = world
    rec = w.a.record
    alice = w.alice.address
    assert name_of(w.evm.revert_of(rec.functions.admit(alice), w.alice)) == "Unauthorized"
    assert name_of(w.evm.revert_of(rec.functions.record(alice, 10, 10), w.a.operator)) == "Unauthorized"  # not admitted
    admit_and_record(w, alice, 1_000, 900)
    assert rec.functions.scoreOf(alice).call() == [True, 9_000]
    assert name_of(w.evm.revert_of(rec.functions.record(alice, 10, 10), w.bob)) == "Unauthorized"
    w.evm.transact(rec.functions.setMarket(w.bob.address), w.a.operator)
    w.evm.transact(rec.functions.record(alice, 1_000, 1_300), w.bob)  # over-delivery caps at 10000
    assert rec.functions.participantOf(alice).call() == [True, 2_000, 2_200]
    assert rec.functions.scoreOf(alice).call() == [True, 10_000]
    assert rec.functions.scoreOf(w.bob.address).call() == [False, 0]


def test_attests_the_record_never_the_senders_score(world: World) -> None:
    w = world
    subject = lower_hex(w.alice.address)
    t = w.evm.now_ms() + HOUR_MS
    bridge = w.a.bridge
    # nothing contracted: no score to attest, no packet
    assert w.evm.revert_of(bridge.functions.sendReputation(B, LANE, subject, lower_hex(w.carol.address), t), w.bob) == (
        "ReputationUnknown", subject)
    assert name_of(w.evm.revert_of(bridge.functions.sendReputation(B, LANE, subject.upper(), "x", t), w.bob)) == (
        "CodecInvalid")
    admit_and_record(w, w.alice.address, 4_000, 3_000)
    # anyone may attest
    packet, receipt = send_reputation(w.evm, w.a, w.bob, B, LANE, subject, lower_hex(w.carol.address), t)
    p = decode_packet(packet)
    assert p.kind is PacketKind.REPUTATION and p.sender == lower_hex(w.bob.address)
    assert decode_reputation(p.payload) == ReputationPayload(subject, 7_500, MODEL, receipt["blockNumber"])
    # the sender has no way to name a score: the phase-1 entry point takes none, and the app's hook is a view
    # the router alone can drive with state it reads itself
    abi = {f["name"]: [i["name"] for i in f["inputs"]] for f in bridge.abi if f["type"] == "function"}
    assert abi["sendReputation"] == ["dstChain", "lane", "subject", "receiver", "timeoutMs"]
    admit_and_record(w, w.alice.address, 4_000, 0)
    later, receipt2 = send_reputation(w.evm, w.a, w.bob, B, LANE, subject, lower_hex(w.carol.address), t)
    assert decode_reputation(decode_packet(later).payload) == ReputationPayload(subject, 3_750, MODEL,
                                                                               receipt2["blockNumber"])


def test_imported_reputation_keeps_the_newest_and_admits_by_it(world: World) -> None:
    w = world
    subject = lower_hex(w.alice.address)
    t = w.evm.now_ms() + HOUR_MS
    admit_and_record(w, w.alice.address, 1_000, 950)
    packet, _ = send_reputation(w.evm, w.a, w.alice, B, LANE, subject, lower_hex(w.carol.address), t)
    ack = deliver(w, w.b, packet)
    assert ack == SUCCESS_ACK
    height = decode_reputation(decode_packet(packet).payload).source_height
    imported = w.b.reputation.functions.importedReputation
    score, source_height, recorded_at, exists = imported(A, subject, MODEL).call()
    assert (score, source_height, exists) == (9_500, height, True) and recorded_at > 0
    ev = settle(w.evm, w.a, w.relayer, packet, ack, w.relay.confirm_ack(packet, ack), w.relay.vset)
    assert ev["refunded"] is False  # nothing escrowed, nothing to give back

    # the same attestation replayed through another packet, and an older one: stale, nothing replaced
    def attest(seq: int, score: int, h: int, src: str = DPOS) -> bytes:
        return py_packet(B, src=src, sequence=seq, kind=PacketKind.REPUTATION, receiver=lower_hex(w.carol.address),
                         timeout_ms=t, payload=encode_reputation(ReputationPayload(subject, score, MODEL, h)))

    assert deliver(w, w.b, attest(1, 100, 40)) == SUCCESS_ACK  # keyed by source park: DPoS's own record
    nobody = py_packet(B, src=DPOS, sequence=4, kind=PacketKind.REPUTATION, receiver="nobody", timeout_ms=t,
                       payload=encode_reputation(ReputationPayload(subject, 7_777, MODEL, 41)))
    assert deliver(w, w.b, nobody) == error_ack("receiver.invalid")  # not an address here: nothing recorded
    assert deliver(w, w.b, attest(2, 9_999, 40)) == error_ack("reputation.stale")
    assert deliver(w, w.b, attest(3, 9_999, 39)) == error_ack("reputation.stale")
    assert imported(DPOS, subject, MODEL).call()[:2] == [100, 40]
    assert imported(A, subject, MODEL).call()[:2] == [9_500, height]

    # B's market admits A's participant by the imported score (operator only, threshold the operator's)
    rec, carol = w.b.record, w.carol.address
    w.evm.transact(rec.functions.setMinImportedScore(9_600), w.b.operator)
    assert w.evm.revert_of(rec.functions.admitImported(A, subject, MODEL, carol), w.b.operator) == (
        "ReputationTooLow", 9_600, 9_500)
    assert w.evm.revert_of(rec.functions.admitImported(A, "0x" + "ab" * 20, MODEL, carol), w.b.operator) == (
        "ReputationTooLow", 9_600, 0)
    assert name_of(w.evm.revert_of(rec.functions.admitImported(A, subject, MODEL, carol), w.carol)) == "Unauthorized"
    w.evm.transact(rec.functions.setMinImportedScore(9_000), w.b.operator)
    receipt = w.evm.transact(rec.functions.admitImported(A, subject, MODEL, carol), w.b.operator)
    (admitted,) = w.evm.events(rec, "ParticipantAdmitted", receipt)
    assert (admitted["srcChain"], admitted["subject"], admitted["score"]) == (A, subject, 9_500)
    assert rec.functions.participantOf(carol).call()[0]
    w.evm.transact(rec.functions.record(carol, 100, 100), w.b.operator)  # now a participant of B's market
