"""Reputation on a park (SPEC.md §2.3 "Reputation"): what a park attests, what it keeps of other parks'
attestations, and what its markets may read of them.

Nothing is escrowed. The source bridge reads the score from its *own* state at send time, through the
chain's reputation provider (never from the sender's arguments), and attests ``(subject, score, model,
source_height)``; scores are integers ``0..10000`` (basis points) for every model (:data:`MODELS`).

The target keeps imported reputation keyed by ``(src_chain, subject, model)`` at
``imported_reputation/<src>/<subject>`` = ``{<model>: {score, source_height, height, holder}}`` (``height``:
the block that recorded it). An attestation whose ``source_height`` is not above the one recorded for its
key is refused with the error ack ``reputation.stale`` and never replaces it; a score above 10000 is
``payload.invalid``.

**Holder.** Reputation is public data: anyone may send anyone's score. A market that grants something for
it must know the caller is the subject, so a record also names its *holder*: the packet's receiver, when
the packet's sender is the subject itself (the subject, authenticated by its own chain, named the account
that speaks for it here). An attestation sent by someone else refreshes the score and keeps the holder.
:func:`held_reputation` is what markets call.
"""

from __future__ import annotations

from typing import Any

from chains.common.state import KVState
from protocol.errors import CodecError, ReputationInsufficientError
from protocol.types import Packet, ReputationPayload

__all__ = [
    "MODELS",
    "SCORE_MAX",
    "held_reputation",
    "import_refusal",
    "imported_reputation",
    "imported_reputation_path",
    "parse_import_ref",
    "record_import",
    "reputation_path",
]

SCORE_MAX = 10_000
"""Scores are basis points, 0..SCORE_MAX, for every model."""

MODELS: dict[str, str] = {
    "dpos-witness-credit/v1": "DPoS park: a witness's credit (docs/research.md#seed-003)",
    "dr-aggregator-reputation/v1": "DPoS park: a demand-response aggregator's reputation (docs/research.md#seed-002)",
    "dr-user-reputation/v1": "DPoS park: a demand-response user's reputation (docs/research.md#seed-002)",
    "poc-farmer-response/v1": "PoC park: a farmer's response rate, delivered / awarded kW (docs/research.md#seed-000)",
    "eth-delivery-record/v1": "Ethereum park: delivered vs contracted energy (docs/research.md#seed-001)",
    "fabric-participant-standing/v1": "Fabric park: a certified participant's standing (docs/research.md#seed-004)",
}
"""The scoring models parks attest (SPEC §2.3). A target records any model; markets choose which they read."""


def reputation_path(subject: str) -> bytes:
    """``reputation/<subject>`` = ``{score, model, height}``: read by the bridge's default provider."""
    return f"reputation/{subject}".encode()


def imported_reputation_path(src: str, subject: str) -> bytes:
    """``{model: {score, source_height, height, holder}}`` attested by ``src`` about ``subject``."""
    return f"imported_reputation/{src}/{subject}".encode()


def imported_reputation(state: KVState, src: str, subject: str, model: str) -> dict[str, Any] | None:
    """The imported record of ``(src, subject, model)``, or None."""
    raw = state.get_json(imported_reputation_path(src, subject))
    if not isinstance(raw, dict):
        return None
    rec = raw.get(model)
    return dict(rec) if isinstance(rec, dict) else None


def import_refusal(state: KVState, src: str, r: ReputationPayload) -> str | None:
    """The error ack code of an attestation this park will not record, or None."""
    if r.score > SCORE_MAX:
        return "payload.invalid"
    held = imported_reputation(state, src, r.subject, r.model)
    if held is not None and r.source_height <= int(held["source_height"]):
        return "reputation.stale"
    return None


def record_import(state: KVState, packet: Packet, r: ReputationPayload, height: int) -> None:
    """Record an attestation :func:`import_refusal` accepted (see "Holder" above)."""
    key = imported_reputation_path(packet.src_chain, r.subject)
    raw = state.get_json(key)
    models: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    previous = models.get(r.model) or {}
    holder = packet.receiver if packet.sender == r.subject else previous.get("holder")
    models[r.model] = {"score": r.score, "source_height": r.source_height, "height": height, "holder": holder}
    state.set_json(key, models)


def held_reputation(state: KVState, account: str, src: str, subject: str, model: str,
                    min_score: int = 0) -> dict[str, Any]:
    """The imported record of ``(src, subject, model)`` if ``account`` holds it with a score of at least
    ``min_score``; :class:`ReputationInsufficientError` otherwise. What a market calls before it grants
    anything for reputation earned on another park."""
    rec = imported_reputation(state, src, subject, model)
    where = f"{src}/{subject}/{model}"
    if rec is None:
        raise ReputationInsufficientError("no imported reputation", expected="an attestation recorded here",
                                          got=where)
    if rec.get("holder") != account:
        raise ReputationInsufficientError(
            "imported reputation not held by the caller (the subject must send its own attestation to it)",
            expected=account, got=rec.get("holder"))
    if int(rec["score"]) < min_score:
        raise ReputationInsufficientError("imported score below the market's threshold", expected=f">= {min_score}",
                                          got=rec["score"])
    return rec


def parse_import_ref(value: Any, what: str) -> tuple[str, str, str]:
    """A market op's reference to imported reputation, ``{src_chain, subject, model}`` (strict)."""
    keys = ("src_chain", "subject", "model")
    if not isinstance(value, dict) or set(value) != set(keys) or not all(
            isinstance(value[k], str) and value[k] for k in keys):
        raise CodecError(f"{what} is {{src_chain, subject, model}}, non-empty strings", got=value)
    return value["src_chain"], value["subject"], value["model"]
