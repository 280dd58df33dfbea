"""Charging rights, the transformer registry, and reputation on the Fabric park (SPEC.md §2.3, §6.3, §6.5, §6.6; the
issue 12 rules shared by every park).

The bridge chaincode runs energy through :mod:`chains.common.bridge` unchanged; the two other kinds run here, over
the same :class:`~chains.common.state.KVState` (so the in-memory ledger of the unit tests and the peer's ledger run
one code), with the same phase split (``validate_*`` raises a typed error and writes nothing, ``apply_*`` writes,
``process_*`` does both) and the same packet, receipt, ack and settlement records as the shared bridge
(:func:`commit_packet`, :func:`write_ack`, :func:`finish_settle`).

Charging rights: one token that exists once
-------------------------------------------

``rights/<R>`` holds ``{home_park, station, transformer, power_kw, slot_start_ms, slot_end_ms, owner,
escrowed_to?}``. ``R`` is the id **as this chain holds it**: a base id (no ``/``) issued here, or a voucher trace
``<lane>/<chain>/<id as that chain held it>`` (newest hop first), exactly like a voucher denomination. The payload's
``home_park`` is the issuing chain along the whole trace; every other field travels unchanged. For a packet ``p``
carrying ``R``, ``prefix = p.lane/p.dst_chain/``:

* **Returning** (``R`` starts with ``prefix``). The source *burns* voucher ``R``: the record moves to
  ``rights_burned/<R>`` (with ``burned_to``) until settlement, so neither its id nor its booking can be reused
  meanwhile. The target *unescrows* ``R[len(prefix):]``, which must be escrowed there towards ``(p.src_chain,
  p.lane)`` (``right.not_escrowed``) with equal fields (``right.mismatch``), through admission.
* **Leaving** (otherwise). The source *escrows* ``R``: ``owner`` := ``@escrow``, ``escrowed_to`` := ``{chain,
  lane, sequence}``. The target *mints* voucher ``p.lane/p.src_chain/R`` (``right.too_long`` past the codec's
  256 bytes, ``right.exists`` if it or its burn is held), through admission.
* **Refund** (error ack or timeout) undoes the source's action, owner := the sender: un-escrow a leaving right,
  re-mint a burned voucher. Its booking stays (it never left).
* **Success** releases the source's booking: the right lives elsewhere now (a burned voucher's record is dropped).

So a right is live (an owner other than ``@escrow``) on exactly one chain, or in one packet not yet applied, and
every other chain along its trace holds it escrowed or burned-until-settled.

Trace checks on receipt (defence in depth: an honest source never trips them): ``R`` parses as ``k`` hops of
``<lane>/<chain>`` (identifiers) before a base id (``payload.invalid`` otherwise), and the chain that issued the base
id — the source itself for a base id, else the chain of the innermost hop — is the payload's ``home_park``
(``right.mismatch``).

Admission and bookings (the same on every park)
------------------------------------------------

The registry: ``transformers/<name>`` = ``{capacity_kw}``, ``stations/<name>`` = ``{transformer}``, written only by
the park operator (:func:`require_operator`). A right becomes live here — issued at home, minted as a voucher,
unescrowed on its way back — only through admission, refusals in this order: ``slot.started`` (``slot_start_ms <=``
the chaincode clock), ``station.unknown``, ``transformer.mismatch`` (the station is behind another transformer than
the right's), ``transformer.unknown``, ``capacity.exceeded`` (the power of the rights booked on the transformer
whose slots overlap ``[slot_start, slot_end)``, plus this one, exceeds ``capacity_kw``: a sum, never the peak of the
load curve, so it never admits an overload). Admitted, the right is booked in ``bookings/<transformer>`` (a list
``{right_id, power_kw, slot_start_ms, slot_end_ms}``: one key per transformer, so two rights racing for one
transformer conflict at commit (MVCC) and the loser, endorsed again on the new state, is refused or admitted on
it — never both admitted past the capacity). A booking is released when the right leaves with a success ack, or
when its slot ends (ended slots are dropped whenever the list is written, and never overlap a slot still to come).
A refund keeps it. Phase 1 refuses a right whose packet times out after its slot starts.

Reputation
----------

The Fabric park's market scores its **certified participants' standing** (docs/research.md#seed-004: a digital
certificate gates access to the park's market): ``standing/<account>`` = ``{certified, score, revision, basis}``,
``score`` in basis points 0..10000, written by the operator (``set_standing``) or by ``certify`` (below);
``revision`` counts the writes of that record from 1 and is what a Fabric attestation carries as ``source_height``
(a chaincode sees no block height; the revision orders one subject's scores the same way). Sending reputation reads
that record at send time — model :data:`STANDING_MODEL`, never a score from the sender's arguments; a subject
without a certified standing is :class:`~chains.common.bridge.AssetError`.

Receiving stores ``imported_reputation/<src>/<model hex>/<subject>`` = ``{src_chain, subject, model, score,
source_height}`` (the model is hex in the key: models and subjects may hold ``/``); a packet whose
``source_height`` is at or below the stored one for that ``(src, subject, model)`` is the error ack
``reputation.stale`` and never replaces it, and a score above 10000 is ``payload.invalid``. Nothing is escrowed;
the receiver is not checked.

``certify`` is the market function that reads imported reputation: the operator certifies an account of this park
on the standing another park attests for it — admitted when the imported score of ``(src_chain, subject, model)``
is at least the park's ``certify_min_score`` (genesis ``market``; default :data:`DEFAULT_CERTIFY_MIN_SCORE`), the
account's standing becomes ``{certified: true, score: <imported score>, basis: {src_chain, subject, model,
source_height}}``.

State keys
----------

=========================================  ==========================================================
``rights/<R>``                             a right held here (live, or escrowed at an earlier hop)
``rights_burned/<R>``                      a voucher burned on its way back, until its packet settles
``transformers/<name>``                    ``{capacity_kw}``
``stations/<name>``                        ``{transformer}``
``bookings/<transformer>``                 ``[{right_id, power_kw, slot_start_ms, slot_end_ms}]``, by right id
``standing/<account>``                     ``{certified, score, revision, basis}``
``imported_reputation/<src>/<hex>/<s>``    ``{src_chain, subject, model, score, source_height}``
``market/config``                          ``{certify_min_score, currency}`` (currency: also the fee denom)
=========================================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.common.bridge import (
    ESCROW_OWNER,
    AssetError,
    BridgeParams,
    SendRequest,
    lane_capacities,
    lane_configured,
    packet_path,
)
from chains.common.rights import bookings_path, burned_right_path, right_path, station_path, transformer_path
from chains.common.state import KVState
from chains.common.tx import BlockContext, account_path
from protocol.codec import (
    MAX_STRING,
    ack_commitment,
    decode_charging_right,
    decode_reputation,
    encode_ack,
    encode_charging_right,
    encode_packet,
    encode_reputation,
    packet_commitment,
)
from protocol.errors import (
    AuthorizationError,
    CodecError,
    LaneError,
    TimeoutExpiredError,
    WrongChainError,
)
from protocol.lane_config import check_capacity, packet_tokens
from protocol.paths import ack_path, commitment_path, next_send_path, receipt_path
from protocol.types import (
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    ReputationPayload,
    check_id,
    check_uint,
)

__all__ = [
    "ADMISSION_CODES",
    "DEFAULT_CERTIFY_MIN_SCORE",
    "MARKET_CONFIG_KEY",
    "MAX_SCORE",
    "STANDING_MODEL",
    "AdmissionError",
    "Refusal",
    "admission_refusal",
    "apply_recv",
    "apply_send",
    "bookings",
    "bookings_path",
    "burned_right_path",
    "certify",
    "commit_packet",
    "finish_settle",
    "imported_reputation_path",
    "issue_right",
    "market_config",
    "market_currency",
    "process_send",
    "require_operator",
    "resize_right",
    "retire_right",
    "right_path",
    "set_standing",
    "set_station",
    "set_transformer",
    "settle_asset",
    "standing_path",
    "station_path",
    "trace_home",
    "transfer_right",
    "transformer_path",
    "validate_send",
    "write_ack",
]

STANDING_MODEL = "fabric-participant-standing/v1"
"""The model of the scores the Fabric park attests: certified participants' standing, basis points."""
MAX_SCORE = 10_000
"""Every model's scores are basis points, 0..10000."""
DEFAULT_CERTIFY_MIN_SCORE = 5_000
"""Least imported score (basis points) ``certify`` admits, unless genesis ``market`` sets another."""
MARKET_CONFIG_KEY = b"market/config"

ADMISSION_CODES = ("slot.started", "station.unknown", "transformer.mismatch", "transformer.unknown",
                   "capacity.exceeded")
"""Admission's refusal codes, in the order they are checked."""

Event = dict[str, Any]


class AdmissionError(AssetError):
    """Issuing a right the park's admission refuses (code ``asset.invalid``; :attr:`refusal` is the rule's code, one
    of :data:`ADMISSION_CODES`, also its ``got``)."""

    def __init__(self, refusal: str, right_id: str) -> None:
        super().__init__(f"admission refuses right {right_id}: {refusal}", expected="admitted", got=refusal)
        self.refusal = refusal


class Refusal(Exception):
    """An application refusal of a verified packet: its error ack's code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- paths ------------------------------------------------------------------------------------------------------


# the rights' own paths are the shared bridge's (chains/common/rights.py): one layout on every Python host, so the
# operator's reports (rights_report, registry_report) read a Fabric park's records as a Python park's


def standing_path(account: str) -> bytes:
    return f"standing/{account}".encode()


def imported_reputation_path(src: str, subject: str, model: str) -> bytes:
    return f"imported_reputation/{src}/{model.encode().hex()}/{subject}".encode()


# --- registry ---------------------------------------------------------------------------------------------------


def require_operator(creator_msp: str, account: str, params: BridgeParams, operator_msp: str, what: str) -> None:
    """Registry writes, issuing and standing are the park operator's: the creator's MSP (from its certificate, as the
    peer validated it) must be ``operator_msp``, and its account the genesis ``rights_operator`` when one is named.
    :class:`~protocol.errors.AuthorizationError` otherwise (a sales-company identity, or another operator user)."""
    if creator_msp != operator_msp:
        raise AuthorizationError(f"{what} is for the park operator's MSP", expected=operator_msp, got=creator_msp)
    if params.rights_operator is not None and account != params.rights_operator:
        raise AuthorizationError(f"{what} is for the park operator", expected=params.rights_operator, got=account)


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name or len(name.encode()) > MAX_STRING:
        raise CodecError(f"a {kind} name is 1..{MAX_STRING} bytes without '/'", got=name)
    return name


def set_transformer(state: KVState, name: str, capacity_kw: int) -> list[Event]:
    """Set a transformer's capacity (kW). Bookings already admitted stay: a lower capacity binds new admissions."""
    _check_name("transformer", name)
    check_uint("capacity_kw", capacity_kw)
    state.set_json(transformer_path(name), {"capacity_kw": capacity_kw})
    return [{"type": "transformer_set", "name": name, "capacity_kw": capacity_kw}]


def set_station(state: KVState, name: str, transformer: str) -> list[Event]:
    """Register a station behind a transformer (which need not be registered yet: admission says
    ``transformer.unknown`` until it is)."""
    _check_name("station", name)
    _check_name("transformer", transformer)
    state.set_json(station_path(name), {"transformer": transformer})
    return [{"type": "station_set", "name": name, "transformer": transformer}]


def bookings(state: KVState, transformer: str) -> list[dict[str, Any]]:
    raw = state.get_json(bookings_path(transformer))
    return list(raw) if raw else []


def _write_bookings(state: KVState, transformer: str, entries: list[dict[str, Any]], now_ms: int) -> None:
    live = sorted((b for b in entries if int(b["slot_end_ms"]) > now_ms), key=lambda b: str(b["right_id"]))
    if live:
        state.set_json(bookings_path(transformer), live)
    elif state.get(bookings_path(transformer)) is not None:
        state.delete(bookings_path(transformer))


def _book(state: KVState, right_id: str, c: ChargingRightPayload, now_ms: int) -> None:
    entries = [b for b in bookings(state, c.transformer) if b["right_id"] != right_id]
    entries.append({"right_id": right_id, "power_kw": c.power_kw, "slot_start_ms": c.slot_start_ms,
                    "slot_end_ms": c.slot_end_ms})
    _write_bookings(state, c.transformer, entries, now_ms)


def _unbook(state: KVState, transformer: str, right_id: str, now_ms: int) -> None:
    entries = bookings(state, transformer)
    kept = [b for b in entries if b["right_id"] != right_id]
    if len(kept) != len(entries):
        _write_bookings(state, transformer, kept, now_ms)


def admission_refusal(state: KVState, right_id: str, c: ChargingRightPayload, now_ms: int) -> str | None:
    """The code of admission's first refusal of right ``right_id`` (module docstring), or None: admitted.
    A booking of the same right id is the right itself (coming back before its departure settled): not counted."""
    if c.slot_start_ms <= now_ms:
        return "slot.started"
    station = state.get_json(station_path(c.station)) if _plain_name(c.station) else None
    if station is None:
        return "station.unknown"
    if station.get("transformer") != c.transformer:
        return "transformer.mismatch"
    transformer = state.get_json(transformer_path(c.transformer)) if _plain_name(c.transformer) else None
    if transformer is None:
        return "transformer.unknown"
    load = sum(int(b["power_kw"]) for b in bookings(state, c.transformer)
               if b["right_id"] != right_id
               and int(b["slot_start_ms"]) < c.slot_end_ms and c.slot_start_ms < int(b["slot_end_ms"]))
    if load + c.power_kw > int(transformer["capacity_kw"]):
        return "capacity.exceeded"
    return None


def _plain_name(name: str) -> bool:
    return "/" not in name


# --- rights: records --------------------------------------------------------------------------------------------


def _payload(right_id: str, rec: Mapping[str, Any]) -> ChargingRightPayload:
    return ChargingRightPayload(right_id, ChainId(rec["home_park"]), rec["station"], rec["transformer"],
                                int(rec["power_kw"]), int(rec["slot_start_ms"]), int(rec["slot_end_ms"]))


def _record(c: ChargingRightPayload, owner: str) -> dict[str, Any]:
    return {"home_park": c.home_park, "station": c.station, "transformer": c.transformer, "power_kw": c.power_kw,
            "slot_start_ms": c.slot_start_ms, "slot_end_ms": c.slot_end_ms, "owner": owner}


def _fields(c: ChargingRightPayload) -> tuple[Any, ...]:
    return c.home_park, c.station, c.transformer, c.power_kw, c.slot_start_ms, c.slot_end_ms


def trace_home(right_id: str, src: str) -> str | None:
    """The chain that issued the base id of a right ``src`` sends as ``right_id``: ``src`` for a base id, else the
    chain of the innermost hop. None if ``right_id`` is not hops ``<lane>/<chain>/`` before a base id."""
    parts = right_id.split("/")
    if len(parts) % 2 == 0 or not parts[-1]:
        return None
    try:
        for i in range(0, len(parts) - 1, 2):
            check_id("lane", parts[i])
            check_id("chain", parts[i + 1])
    except CodecError:
        return None
    return src if len(parts) == 1 else parts[-2]


def issue_right(state: KVState, params: BridgeParams, right_id: str, station: str, transformer: str, power_kw: int,
                slot_start_ms: int, slot_end_ms: int, owner: str, now_ms: int) -> list[Event]:
    """Issue a home right (a base id: an identifier, no ``/``) to a registered ``owner``, through admission
    (:class:`AdmissionError` with the rule's code) and booked."""
    check_id("right", right_id)
    c = ChargingRightPayload(right_id, params.chain_id, station, transformer, power_kw, slot_start_ms, slot_end_ms)
    encode_charging_right(c)
    if state.get(right_path(right_id)) is not None or state.get(burned_right_path(right_id)) is not None:
        raise AssetError("a charging right with that id exists", got=right_id)
    if "/" in owner or state.get(account_path(owner)) is None:
        raise AssetError("unknown owner account", got=owner)
    refusal = admission_refusal(state, right_id, c, now_ms)
    if refusal is not None:
        raise AdmissionError(refusal, right_id)
    state.set_json(right_path(right_id), _record(c, owner))
    _book(state, right_id, c, now_ms)
    return [{"type": "right_issued", "right_id": right_id, "owner": owner, "station": station,
             "transformer": transformer, "power_kw": power_kw, "slot_start_ms": slot_start_ms,
             "slot_end_ms": slot_end_ms}]


def resize_right(state: KVState, right_id: str, power_kw: int, now_ms: int) -> None:
    """Set a live home right's power and its booking (the market moving kW between stations behind one transformer
    and slot: the caller shrinks one right before it grows another, so the booked total never rises)."""
    rec = state.get_json(right_path(right_id))
    if rec is None or rec["owner"] == ESCROW_OWNER:
        raise AssetError("no live charging right to resize", got=right_id)
    check_uint("power_kw", power_kw)
    new = {**rec, "power_kw": power_kw}
    state.set_json(right_path(right_id), new)
    _book(state, right_id, _payload(right_id, new), now_ms)


def retire_right(state: KVState, right_id: str, now_ms: int) -> None:
    """Remove a live right and its booking (all its kW went to another station)."""
    rec = state.get_json(right_path(right_id))
    if rec is None or rec["owner"] == ESCROW_OWNER:
        raise AssetError("no live charging right to retire", got=right_id)
    state.delete(right_path(right_id))
    _unbook(state, rec["transformer"], right_id, now_ms)


def transfer_right(state: KVState, sender: str, right_id: str, to: str) -> list[Event]:
    """The owner of a live right hands it to another registered account of this park (its booking stays)."""
    rec = state.get_json(right_path(right_id)) if right_id else None
    if rec is None:
        raise AssetError("no such charging right", got=right_id)
    if rec["owner"] != sender:
        raise AuthorizationError("only the owner transfers a charging right", expected=rec["owner"], got=sender)
    if "/" in to or state.get(account_path(to)) is None:
        raise AssetError("unknown recipient account", got=to)
    state.set_json(right_path(right_id), {**rec, "owner": to})
    return [{"type": "right_transferred", "right_id": right_id, "from": sender, "to": to}]


# --- reputation: standing ---------------------------------------------------------------------------------------


def _check_score(score: Any) -> int:
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= MAX_SCORE:
        raise CodecError(f"a score is basis points 0..{MAX_SCORE}", got=score)
    return score


def _write_standing(state: KVState, account: str, certified: bool, score: int,
                    basis: dict[str, Any] | None) -> dict[str, Any]:
    old = state.get_json(standing_path(account))
    rec = {"certified": certified, "score": score, "revision": (int(old["revision"]) if old else 0) + 1,
           "basis": basis}
    state.set_json(standing_path(account), rec)
    return rec


def set_standing(state: KVState, account: str, certified: bool, score: int) -> list[Event]:
    """The operator records a participant's standing (a certificate of access and a score)."""
    if not isinstance(certified, bool):
        raise CodecError("certified is true or false", got=certified)
    _check_score(score)
    rec = _write_standing(state, account, certified, score, None)
    return [{"type": "standing_set", "account": account, "certified": certified, "score": score,
             "revision": rec["revision"]}]


def market_config(state: KVState) -> dict[str, int]:
    raw = state.get_json(MARKET_CONFIG_KEY)
    return {"certify_min_score": int(raw["certify_min_score"]) if raw else DEFAULT_CERTIFY_MIN_SCORE}


def market_currency(state: KVState, params: BridgeParams) -> str:
    """The park's currency (genesis ``market.currency``, stored in ``market/config``; default the first native
    denom): what the market pays in, and the fee denomination of the relay fees senders offer (protocol SPEC
    §6.10)."""
    raw = state.get_json(MARKET_CONFIG_KEY) or {}
    return str(raw.get("currency") or params.native_denoms[0])


def certify(state: KVState, account: str, src_chain: str, subject: str, model: str) -> list[Event]:
    """Certify ``account`` on the reputation ``src_chain`` attested for ``subject`` under ``model`` (module
    docstring): :class:`~chains.common.bridge.AssetError` if none is imported or its score is below the park's
    minimum."""
    check_id("src_chain", src_chain)
    for kind, s in (("subject", subject), ("model", model)):
        if not isinstance(s, str) or not s or len(s.encode()) > MAX_STRING:
            raise CodecError(f"{kind} is 1..{MAX_STRING} bytes", got=s)
    imported = state.get_json(imported_reputation_path(src_chain, subject, model))
    if imported is None:
        raise AssetError("no reputation imported for that subject and model", got=f"{src_chain}/{model}/{subject}")
    least = market_config(state)["certify_min_score"]
    if int(imported["score"]) < least:
        raise AssetError("imported score below the park's minimum for certification", expected=f">= {least}",
                         got=int(imported["score"]))
    basis = {"src_chain": src_chain, "subject": subject, "model": model,
             "source_height": int(imported["source_height"])}
    rec = _write_standing(state, account, True, int(imported["score"]), basis)
    return [{"type": "participant_certified", "account": account, "score": rec["score"], "revision": rec["revision"],
             **{f"basis_{k}": v for k, v in basis.items()}}]


def _standing_payload(state: KVState, subject: str) -> ReputationPayload:
    rec = state.get_json(standing_path(subject)) if subject and "/" not in subject else None
    if rec is None or not rec.get("certified"):
        raise AssetError("no certified participant standing for subject", got=subject)
    return ReputationPayload(subject, int(rec["score"]), STANDING_MODEL, int(rec["revision"]))


# --- phase 1 ----------------------------------------------------------------------------------------------------


def _returning(right_id: str, lane: str, dst: str) -> bool:
    return right_id.startswith(f"{lane}/{dst}/")


def validate_send(state: KVState, params: BridgeParams, req: SendRequest, now_ms: int) -> Packet:
    """Raise unless ``req`` (a charging right or reputation) can be sent now; the packet it would commit."""
    dst = ChainId(check_id("dst_chain", req.dst_chain))
    lane = LaneId(check_id("lane", req.lane))
    if dst == params.chain_id:
        raise WrongChainError("a packet goes to another chain", expected=f"not {params.chain_id}", got=dst)
    if not lane_configured(state, dst, lane):
        raise LaneError("lane not configured for that counterparty", expected=f"a lane to {dst}", got=lane)
    timeout = req.timeout_timestamp_ms
    if check_uint("timeout_timestamp_ms", timeout) == 0:
        raise CodecError("a packet without a timeout is refused", got=0)
    if timeout <= now_ms:
        raise TimeoutExpiredError("a packet's timeout must be after the current block time",
                                  expected=f"> {now_ms}", got=timeout)
    if req.kind is PacketKind.CHARGING_RIGHT:
        rec = state.get_json(right_path(req.right_id)) if req.right_id else None
        if rec is None:
            raise AssetError("no such charging right", got=req.right_id)
        if rec["owner"] != req.sender:
            raise AuthorizationError("only the owner sends a charging right", expected=rec["owner"], got=req.sender)
        right = _payload(req.right_id, rec)
        if timeout > right.slot_start_ms:
            raise TimeoutExpiredError("a charging right's packet must time out by its slot start",
                                      expected=f"<= {right.slot_start_ms}", got=timeout)
        payload = encode_charging_right(right)
    elif req.kind is PacketKind.REPUTATION:
        if not isinstance(req.subject, str) or not req.subject:
            raise CodecError("reputation needs a subject", got=req.subject)
        payload = encode_reputation(_standing_payload(state, req.subject))
    else:
        raise CodecError("energy is the shared bridge's", got=req.kind.name.lower())
    sequence = state.get_int(next_send_path(dst, lane), 1)
    packet = Packet(params.chain_id, dst, lane, sequence, req.kind, payload, req.sender, req.receiver, timeout)
    encode_packet(packet)  # every field
    capacities, _ = lane_capacities(state, dst, lane)
    asset, tokens = packet_tokens(packet)
    check_capacity(capacities, asset, tokens, f"{params.chain_id}/{dst}/{lane}")
    return packet


def apply_send(state: KVState, packet: Packet) -> list[Event]:
    """Burn a returning voucher or escrow a leaving right (reputation takes nothing); commit the packet."""
    if packet.kind is PacketKind.CHARGING_RIGHT:
        c = decode_charging_right(packet.payload)
        rec = state.get_json(right_path(c.right_id))
        to = {"chain": packet.dst_chain, "lane": packet.lane, "sequence": packet.sequence}
        if _returning(c.right_id, packet.lane, packet.dst_chain):
            state.delete(right_path(c.right_id))
            state.set_json(burned_right_path(c.right_id), {**rec, "burned_to": to})
        else:
            state.set_json(right_path(c.right_id), {**rec, "owner": ESCROW_OWNER, "escrowed_to": to})
    return commit_packet(state, packet)


def process_send(state: KVState, params: BridgeParams, req: SendRequest, now_ms: int) -> list[Event]:
    return apply_send(state, validate_send(state, params, req, now_ms))


def commit_packet(state: KVState, packet: Packet) -> list[Event]:
    """The sequence, the commitment and the packet bytes, as :func:`chains.common.bridge.apply_send` writes them."""
    dst, lane, seq = packet.dst_chain, packet.lane, packet.sequence
    raw = encode_packet(packet)
    commitment = packet_commitment(packet)
    state.set_int(next_send_path(dst, lane), seq + 1)
    state.set(commitment_path(dst, lane, seq), commitment)
    state.set(packet_path(dst, lane, seq), raw.hex().encode())
    return [{"type": "send_packet", "packet": raw.hex(), "src": packet.src_chain, "dst": dst, "lane": lane,
             "sequence": seq, "kind": packet.kind.name.lower(), "commitment": commitment.hex()}]


# --- phase 3 ----------------------------------------------------------------------------------------------------


def apply_recv(state: KVState, params: BridgeParams, packet: Packet, ctx: BlockContext,
               relayer: str = "") -> list[Event]:
    """Execute a verified charging-right or reputation packet (the caller ran
    :func:`chains.common.bridge.validate_recv`); a refusal rolls back to a receipt with an error ack. The ack names
    ``relayer`` (protocol SPEC §6.10: the relay account that executed the packet; empty: none, the three-field ack),
    which the caller checked."""
    try:
        with state.atomic():
            if packet.kind is PacketKind.CHARGING_RIGHT:
                _recv_right(state, params, packet, ctx.timestamp_ms)
            elif packet.kind is PacketKind.REPUTATION:
                _recv_reputation(state, packet)
            else:
                raise CodecError("energy is the shared bridge's", got=packet.kind.name.lower())
        ack = Acknowledgement(AckStatus.SUCCESS, "ok", b"", relayer)
    except Refusal as refusal:
        ack = Acknowledgement(AckStatus.ERROR, refusal.code, b"", relayer)
    return write_ack(state, packet, ack)


def write_ack(state: KVState, packet: Packet, ack: Acknowledgement) -> list[Event]:
    """The receipt and the ack, and the ``write_ack`` event, as the shared bridge writes them (``ack`` of either
    form: three fields, or four when it names the relayer, protocol SPEC §2.4)."""
    raw = encode_ack(ack)
    state.set(receipt_path(packet.src_chain, packet.lane, packet.sequence), ack_commitment(ack))
    state.set(ack_path(packet.src_chain, packet.lane, packet.sequence), raw.hex().encode())
    return [{"type": "write_ack", "src": packet.src_chain, "dst": packet.dst_chain, "lane": packet.lane,
             "sequence": packet.sequence, "kind": packet.kind.name.lower(), "success": ack.success,
             "code": ack.code, "ack": raw.hex(), "ack_commitment": ack_commitment(ack).hex()}]


def _recv_right(state: KVState, params: BridgeParams, packet: Packet, now_ms: int) -> None:
    try:
        c = decode_charging_right(packet.payload)
    except CodecError as exc:
        raise Refusal("payload.invalid") from exc
    if "/" in packet.receiver or state.get(account_path(packet.receiver)) is None:
        raise Refusal("receiver.unknown")
    home = trace_home(c.right_id, packet.src_chain)
    if home is None:
        raise Refusal("payload.invalid")
    prefix = f"{packet.lane}/{params.chain_id}/"
    if c.right_id.startswith(prefix):
        local_id = c.right_id[len(prefix):]
        rec = state.get_json(right_path(local_id))
        to = rec.get("escrowed_to") if rec is not None else None
        if (rec is None or rec["owner"] != ESCROW_OWNER or not isinstance(to, dict)
                or to.get("chain") != packet.src_chain or to.get("lane") != packet.lane):
            raise Refusal("right.not_escrowed")
        if _fields(_payload(local_id, rec)) != _fields(c):
            raise Refusal("right.mismatch")
    else:
        if home != c.home_park:
            raise Refusal("right.mismatch")
        local_id = f"{packet.lane}/{packet.src_chain}/{c.right_id}"
        if len(local_id.encode()) > MAX_STRING:
            raise Refusal("right.too_long")
        if state.get(right_path(local_id)) is not None or state.get(burned_right_path(local_id)) is not None:
            raise Refusal("right.exists")
    refusal = admission_refusal(state, local_id, c, now_ms)
    if refusal is not None:
        raise Refusal(refusal)
    state.set_json(right_path(local_id), _record(c, packet.receiver))
    _book(state, local_id, c, now_ms)


def _recv_reputation(state: KVState, packet: Packet) -> None:
    try:
        r = decode_reputation(packet.payload)
    except CodecError as exc:
        raise Refusal("payload.invalid") from exc
    if "/" in packet.receiver or state.get(account_path(packet.receiver)) is None:
        raise Refusal("receiver.unknown")  # as for every kind (SPEC §2.3): the receiver is an account here
    if r.score > MAX_SCORE:
        raise Refusal("payload.invalid")
    key = imported_reputation_path(packet.src_chain, r.subject, r.model)
    held = state.get_json(key)
    if held is not None and r.source_height <= int(held["source_height"]):
        raise Refusal("reputation.stale")
    state.set_json(key, {"src_chain": packet.src_chain, "subject": r.subject, "model": r.model, "score": r.score,
                         "source_height": r.source_height})


# --- phase 4 ----------------------------------------------------------------------------------------------------


def settle_asset(state: KVState, packet: Packet, refund: bool, now_ms: int) -> None:
    """The source's half of phase 4 for a right (reputation took nothing): refund or complete (module docstring)."""
    if packet.kind is not PacketKind.CHARGING_RIGHT:
        return
    c = decode_charging_right(packet.payload)
    rid = c.right_id
    if _returning(rid, packet.lane, packet.dst_chain):
        burned = state.get_json(burned_right_path(rid))
        state.delete(burned_right_path(rid))
        if refund:
            rec = {k: v for k, v in (burned or _record(c, packet.sender)).items() if k != "burned_to"}
            state.set_json(right_path(rid), {**rec, "owner": packet.sender})
        else:
            _unbook(state, c.transformer, rid, now_ms)
        return
    rec = state.get_json(right_path(rid))
    if refund:
        base = rec if rec is not None else _record(c, packet.sender)
        state.set_json(right_path(rid), {k: v for k, v in {**base, "owner": packet.sender}.items()
                                         if k != "escrowed_to"})
    elif rec is not None and rec.get("owner") == ESCROW_OWNER and rec.get("escrowed_to") == {
            "chain": packet.dst_chain, "lane": packet.lane, "sequence": packet.sequence}:
        # only while this departure is the right's latest: one that came back (booked anew) and left again keeps
        # its booking until that later packet settles
        _unbook(state, c.transformer, rid, now_ms)


def finish_settle(state: KVState, packet: Packet, outcome: PacketOutcome, ack: Acknowledgement | None,
                  refund: bool) -> list[Event]:
    """Forget the commitment and the packet bytes; the ``settle_packet`` event, as the shared bridge's."""
    state.delete(commitment_path(packet.dst_chain, packet.lane, packet.sequence))
    state.delete(packet_path(packet.dst_chain, packet.lane, packet.sequence))
    return [{"type": "settle_packet", "src": packet.src_chain, "dst": packet.dst_chain, "lane": packet.lane,
             "sequence": packet.sequence, "kind": packet.kind.name.lower(), "outcome": outcome.name.lower(),
             "ack_code": None if ack is None else ack.code, "refunded": refund}]

