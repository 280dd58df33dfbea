"""The bridge module of the Python park chains (docs/architecture.md §2 and §4; SPEC.md §2.3, §6.3, §6.5, §6.6, §7.5).

The DPoS and the PoC parks share it, and so does the Fabric park's bridge chaincode
(:mod:`chains.fabric.chaincode`), which runs the same rules over its ledger through :class:`KVState`. It runs
the park's half of the four phases: phase 1 (COMMIT) when one of its accounts sends a packet, phase 3
(EXECUTE) when a relayer brings a packet from another park with its relay certificate, and the source half of
phase 4 (SETTLE) when a relayer brings the certified outcome of a packet this park sent. Pure: no I/O, and the
only time is the block's (:class:`~chains.common.tx.BlockContext`). Each phase is split into ``validate_*``
(reads state, raises a typed :class:`~protocol.errors.ProtocolError`, changes nothing), ``apply_*`` (assumes
validity, writes) and ``process_*`` (both, in order); the ops call ``process_*`` and the host's
:meth:`~chains.common.tx.App.execute_tx` rolls a whole transaction back on any ProtocolError.

Operations (register them with :func:`register_bridge_ops`; JSON args, bytes as lowercase hex)
-----------------------------------------------------------------------------------------------

``bridge.send``  ``{dst_chain, lane, kind, receiver, timeout_timestamp_ms, ...}``, ``kind`` one of
    ``energy`` ``{denom, amount_wh}``, ``charging_right`` ``{right_id}``, ``reputation`` ``{subject, model?}``.
    Phase 1 (SPEC §6.3). ``dst_chain`` is another chain (:class:`WrongChainError`) with this lane
    configured (:class:`LaneError`), and the packet's tokens (``amount_wh`` of the denom, or 1 for the
    other kinds) within the relay's capacity for its asset on the lane (:class:`OverCapacityError`):
    the relay would refuse either forever, and the escrow would wait for an unverified timeout; the
    timeout is required (0 or missing: :class:`CodecError`) and
    later than the block time (:class:`TimeoutExpiredError`). The sequence is the next on
    ``(dst_chain, lane)``, from 1. Writes the packet commitment at
    :func:`protocol.paths.commitment_path` and the packet bytes (hex) at ``packets/<dst>/<lane>/<seq>``.
    Optional ``fees`` ``{verify?, execute?, confirm?}``: relay fees in the genesis ``fee_denom``, escrowed with the
    packet (SPEC §6.10, :mod:`chains.common.fees`). Event ``send_packet`` (with ``fees`` when there are any).
``bridge.recv``  ``{packet: hex, certificate: RelayCertificate JSON, relayer?}`` — phase 3, below; the ack names
    ``relayer`` (a relay account: it earns the execute fee).
``bridge.settle``  ``{packet: hex, certificate: RelayCertificate JSON, ack?: hex | null}`` — phase 4: with
    ``ack`` the certificate must prove ACKED with that ack's commitment, without it TIMED_OUT; the relay fees go
    to the payees of the certified outcome record. Events ``settle_packet``, ``fee_paid``, ``fee_refunded``.
``bridge.recv_batch``  ``{packets: [hex, ...], certificates: CertificateBatch JSON, relayer?}`` — phase 3 of up to
    64 packets under one certificate batch (SPEC §7.10): :func:`process_recv_batch`.
``bridge.settle_batch``  ``{items: [{packet: hex, ack?: hex}, ...], certificates: CertificateBatch JSON}`` — phase 4
    of up to 64 packets under one certificate batch: :func:`process_settle_batch`.
``bridge.update_lane``  ``{dst_chain, lane, config: hex, certificate: RelayCertificate JSON}`` — learn the
    relay's lane ``(this chain, dst_chain, lane)`` and its capacities from a relay certificate of its
    lane-config record ``relay/lane_config/{this}/{dst}/{lane}`` = ``config`` (SPEC §6.8), certified at
    a relay height above the one of the config held (:class:`ReplayError` otherwise: an old record cannot
    roll a newer one back). Opens the lane if it was not configured. Event ``lane_config_updated``.
``bridge.update_relay_validators``  ``{commit: RelayCommit JSON, new_set: ValidatorSet JSON}`` — the
    trusted relay set moves to ``new_set`` if more than 2/3 of the *current* set signed a relay header
    whose ``next_validators_hash`` is ``new_set``'s hash, at a relay height above the last accepted
    update (an old update cannot be replayed, not even after the set changes back), while the trust in the
    current set has not expired (:class:`ClientExpiredError`, below). ``new_set`` may be the current set
    itself: a relayer's refresh of an idle bridge.
``bridge.reset_relay_validators``  ``{new_set: ValidatorSet JSON, height, time_ms}`` — the relay admin (genesis
    ``relay_admin``, default the rights operator) replaces an *expired* trusted set with one checked out of
    band (:func:`reset_relay_validators`). Event ``relay_validators_reset``.
``rights.issue``  ``{right_id, station, transformer, power_kw, slot_start_ms, slot_end_ms, owner}`` —
    the rights operator named in genesis issues a base charging right (no ``/`` in its id), admitted like
    any right becoming live here and booked on its transformer; a refusal raises the typed error of its
    admission code (:func:`protocol.errors.admission_error`). Event ``right_issued``.
``rights.set_transformer``  ``{name, capacity_kw}`` — the rights operator registers a transformer or sets
    its capacity. Event ``transformer_set``.
``rights.set_station``  ``{name, transformer}`` — the rights operator registers a charging station behind
    a transformer (or moves it). Event ``station_set``.

Trusting period (SPEC §7.8): every certificate (``bridge.recv``, ``bridge.settle``, ``bridge.update_lane``)
and every set update is refused with :class:`ClientExpiredError` once the block time is more than the genesis
``trusting_period_ms`` past the trusted time (the relay time of the newest verified header, refreshed in
steps of a 64th of the period; :func:`relay_trust` reads it). A validator set repeating an ed25519 key or a
non-zero Ethereum address is refused everywhere (:class:`~protocol.errors.DuplicateValidatorError`).

Certificates travel in the wire JSON of :mod:`chains.common.wire`. Anyone may submit ``bridge.recv``,
``bridge.settle`` and ``bridge.update_relay_validators``: safety rests on the certificates, not on who
relays them.

Energy: the denomination trace rule (ICS-20-like)
-------------------------------------------------

A denom is a native token name without ``/`` (``kWh``) or a voucher trace ``<lane>/<chain>/<denom>``,
read as "``<denom>`` as it was on ``<chain>``, brought here over ``<lane>``". For a packet on ``lane``
from ``src`` to ``dst``:

* **Send on src.** If ``denom`` starts with ``<lane>/<dst>/`` the token is a voucher going home over
  the lane it came by: *burn* it (sender balance -= amount, ``supply/<denom>`` -= amount). Otherwise
  *escrow* it (sender balance -= amount, ``escrow/<denom>`` += amount and the lane's share
  ``bridge/escrow/<dst>/<lane>/<denom>`` += amount). The packet carries ``denom`` unchanged.
* **Receive on dst.** If the packet's ``denom`` starts with ``<lane>/<dst>/`` (``dst`` = this chain),
  strip that prefix and *unescrow* the rest to the receiver (from this lane's share only: a park cannot
  unlock what was escrowed towards another). Otherwise *mint* the voucher ``<lane>/<src>/<denom>`` to
  the receiver (``supply/<voucher>`` += amount).
* **Refund on src** (error ack or timeout): the exact inverse of the send — re-mint a burned voucher
  (supply and balance) or unescrow to the sender. A success ack keeps the escrow / the burn.

So a voucher that goes back the way it came unwinds one hop (multi-hop traces nest:
``lane-1/poc-park/lane-0/dpos-park/kWh``), and for every chain ``X``, denom ``d`` escrowed on ``X`` and
lane ``L`` to chain ``Y``: ``bridge/escrow/Y/L/d`` on ``X`` == ``supply/L/X/d`` on ``Y`` + amounts in
flight (sent, not yet applied on the target, not yet settled). :func:`supply_report` gives the figures.

Charging rights
---------------

:mod:`chains.common.rights` holds the rules (SPEC §2.3): the right-id trace (a voucher right held here
after coming over lane ``l`` from ``c`` is ``l/c/<id as c held it>``), the station and transformer
registry, bookings and admission. ``rights/<right_id>`` holds ``{home_park, station, transformer,
power_kw, slot_start_ms, slot_end_ms, owner, escrowed_to?}``. Only its owner sends it
(:class:`AuthorizationError`: an escrowed right is owned by ``@escrow``), and its packet must time out by
its slot start (:class:`~protocol.errors.SlotTimeoutError`), so it can only execute before the slot.
With ``prefix = <lane>/<dst>/``:

* **Send.** A *returning* right (its id starts with the prefix) is burned: the record moves to
  ``rights_burned/<right_id>`` until settlement, so its booking and its id stay reserved. Any other right
  *leaves*: it is escrowed (``owner`` := ``@escrow``, ``escrowed_to`` := ``{chain, lane, sequence}``).
* **Receive.** A returning right un-escrows ``id[len(prefix):]``, which must be escrowed towards the
  sending chain and lane (``right.not_escrowed``) with equal fields (``right.mismatch``). A leaving one
  is minted as ``<lane>/<src>/<id>`` (``right.too_long``, ``right.exists``). Either way the right becomes
  live here only through the chain's **admission hook** (:data:`AdmissionHook`; default
  :func:`~chains.common.rights.default_admission`, the rules every park applies) and is then booked.
* **Settle.** A success ack releases the booking of the right that left (unless it already came back and
  was booked again) and makes a burn final; a refund re-creates the right for the sender, still booked.

:func:`~chains.common.rights.rights_report` says where each right is; with
:func:`~chains.common.rights.rights_violations` it checks that each exists exactly once.

Reputation
----------

Nothing is escrowed. The payload's score is read from this chain's state by its **reputation provider**
(:class:`BridgeHooks`: ``reputation_models`` for a chain with several models, else ``reputation``;
default :func:`default_reputation_provider` reads ``reputation/<subject>`` = ``{score, model, height}``),
never from the sender. The target records it in :mod:`chains.common.reputation`'s
``imported_reputation/<src>/<subject>`` = ``{<model>: {score, source_height, height, holder}}``; an
attestation whose source height is not above the one recorded for its model is refused
(``reputation.stale``). The receiver is not checked: no asset is delivered to it (it becomes the record's
holder when the sender is the subject).

Phase 3 (``bridge.recv``), in order
-----------------------------------

Decode the packet (:class:`CodecError`); its ``dst_chain`` must be this chain (:class:`WrongChainError`)
and its lane configured for ``src_chain`` (:class:`LaneError`); no receipt may exist
(:class:`ReplayError`: a replayed packet or certificate is refused before any signature is checked);
the certificate must prove ``verified_path(src, dst, lane, seq)`` -> ``packet_commitment`` under the
trusted relay set and relay chain id (:class:`WrongChainError`, :class:`ValidatorSetMismatchError`,
:class:`SignatureError`, :class:`QuorumError`, :class:`InvalidProofError`); the block time must be
before the timeout (:class:`TimeoutExpiredError`; nothing is written, the source refunds once the relay
certifies the timeout). Then the kind is applied; an application refusal rolls back everything but the
receipt and acks with an error code:

==========================  ===================================================================
``payload.invalid``         the payload does not decode as the packet's kind (or a score above 10000)
``receiver.unknown``        no account ``receiver`` here (energy, charging rights)
``denom.invalid``           a returning denom with nothing after its prefix
``denom.too_long``          the voucher trace would exceed the codec's 256 bytes
``escrow.insufficient``     the lane's escrow holds less than a returning amount
``right.exists``            a voucher right with that id already exists (or is being burned) here
``right.too_long``          the voucher right's id would exceed the codec's 256 bytes
``right.not_escrowed``      a returning right that is not escrowed here towards that chain and lane
``right.mismatch``          a returning right whose fields differ from the escrowed record
``slot.started``            admission: the right's slot has started (unreachable: the timeout comes first)
``station.unknown``         admission: no ``stations/<name>`` here
``transformer.mismatch``    admission: the station is behind another transformer
``transformer.unknown``     admission: no ``transformers/<name>`` here
``capacity.exceeded``       admission: the slot would overload the transformer
``reputation.stale``        an import of that model with an equal or higher source height is recorded
(admission hook codes)      a hook may return any code; a ProtocolError it raises acks its ``code``
==========================  ===================================================================

The receipt (the ack commitment) goes to :func:`protocol.paths.receipt_path`, the ack bytes (hex) to
:func:`protocol.paths.ack_path` (``acks/<src>/<lane>/<seq>``). Event ``write_ack``.

Phase 4 (``bridge.settle``)
---------------------------

The packet's ``src_chain`` must be this chain (:class:`WrongChainError`); the stored commitment must
exist (:class:`ReplayError`: already settled) and equal the packet's (:class:`InvalidProofError`); the
certificate must prove ``outcome_path(...)`` -> ``encode_outcome(outcome, packet commitment, ack
commitment or 32 zero bytes)``. A success ack completes the packet; an error ack or a timeout refunds
exactly what phase 1 took. Either way the commitment and the stored packet bytes are deleted. Refunds
happen only here, on a certified outcome, never on the local clock. Event ``settle_packet``.

State keys (values: JSON is canonical JSON, integers decimal ASCII, absent = 0)
-----------------------------------------------------------------------------

=========================================  ===========================================================
``bridge/config``                          ``{chain_id, relay_chain_id, native_denoms, rights_operator,
                                           trusting_period_ms, relay_admin}``
``bridge/relay_validators``                ``{validators, hash, update_height, trusted_time_ms?}``: trusted relay
                                           set (wire form) and the relay time it is trusted as of
``bridge/lanes/<counterparty>/<lane>``     ``{counterparty, lane}``: a configured lane (both directions)
``bridge/lane_config/<dst>/<lane>``        ``{capacities: {asset: int}, relay_height}``: the relay's capacities
                                           of the outgoing lane (absent: none, not limited; height 0: genesis)
``nextSequenceSend/<dst>/<lane>``          next sequence to assign (SPEC §5; absent = 1)
``commitments/<dst>/<lane>/<seq>``         packet commitment, 32 raw bytes (SPEC §5), until settled
``packets/<dst>/<lane>/<seq>``             packet bytes as hex, until settled
``receipts/<src>/<lane>/<seq>``            ack commitment, 32 raw bytes (SPEC §5), forever
``acks/<src>/<lane>/<seq>``                ack bytes as hex, forever (SPEC §5)
``escrow/<denom>``                         total escrowed (SPEC §5)
``bridge/escrow/<dst>/<lane>/<denom>``     the share of ``escrow/<denom>`` sent over one lane
``supply/<voucher>``                       outstanding supply of a voucher minted here
``balances/<account>/<denom>``             balances (SPEC §5, :class:`KVState`)
``rights/<right_id>``                      a charging right held here, live or escrowed (id with its trace)
``rights_burned/<right_id>``               a voucher right burned on its way back, until settled
``bookings/<transformer>``                 ``[{right_id, power_kw, slot_start_ms, slot_end_ms}]``
``transformers/<name>``                    ``{capacity_kw}``
``stations/<name>``                        ``{transformer}``
``reputation/<subject>``                   ``{score, model, height}``: read by the default provider
``imported_reputation/<src>/<subject>``    ``{<model>: {score, source_height, height, holder}}``
=========================================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from chains.common import wire
from chains.common.fees import NO_FEES, Fees, escrow_fees, parse_fees, settle_fees
from chains.common.reputation import import_refusal, imported_reputation_path, record_import, reputation_path
from chains.common.rights import (
    ESCROW_OWNER,
    book,
    bookings_path,
    burned_right_path,
    default_admission,
    is_returning,
    right_path,
    right_payload,
    right_record,
    rights_report,
    set_station,
    set_transformer,
    station_path,
    transformer_path,
    unbook,
    voucher_right_id,
)
from chains.common.state import KVState
from chains.common.tx import ACCOUNT_RE, App, BlockContext, Tx, account_path
from protocol.certificate import (
    RelayCertificate,
    RelayCommit,
    ValidatorSet,
    verify_certificate,
    verify_commit,
    verify_record,
    verify_validator_set_update,
)
from protocol.codec import (
    MAX_STRING,
    ZERO_COMMITMENT,
    ack_commitment,
    decode_ack,
    decode_charging_right,
    decode_energy,
    decode_outcome_record,
    decode_packet,
    decode_reputation,
    encode_ack,
    encode_charging_right,
    encode_energy,
    encode_outcome,
    encode_packet,
    encode_reputation,
    packet_commitment,
)
from protocol.errors import (
    AuthorizationError,
    CertificateStaleError,
    ClientExpiredError,
    CodecError,
    IllegalTransitionError,
    InsufficientFundsError,
    InvalidProofError,
    LaneError,
    ProtocolError,
    ReplayError,
    SlotTimeoutError,
    TimeoutExpiredError,
    WrongChainError,
    admission_error,
)
from protocol.lane_config import check_capacity, decode_lane_config, encode_lane_config, packet_tokens
from protocol.paths import (
    ack_path,
    commitment_path,
    escrow_path,
    lane_config_path,
    next_send_path,
    outcome_path,
    receipt_path,
    verified_path,
)
from protocol.types import (
    NO_PAYEES,
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    EnergyPayload,
    FeePayees,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    ReputationPayload,
    check_id,
    check_uint,
)

__all__ = [
    "ESCROW_OWNER",
    "AdmissionHook",
    "AssetError",
    "BridgeHooks",
    "BridgeOp",
    "BridgeParams",
    "ModelReputationProvider",
    "RelayTrust",
    "ReputationProvider",
    "SendRequest",
    "ack_path",
    "apply_recv",
    "apply_relay_set_update",
    "apply_send",
    "apply_settle",
    "bookings_path",
    "bridge_ops",
    "burned_right_path",
    "certified_payees",
    "check_certificate_age",
    "check_max_certificate_age",
    "check_relay_trust",
    "check_trusting_period",
    "default_admission",
    "default_reputation_provider",
    "imported_reputation_path",
    "init_bridge",
    "issue_charging_right",
    "lane_capacities",
    "lane_config_key",
    "lane_configured",
    "lane_escrow_path",
    "lane_path",
    "load_params",
    "packet_path",
    "process_lane_update",
    "process_recv",
    "process_relay_set_update",
    "process_send",
    "process_settle",
    "refresh_relay_trust",
    "refreshed_trusted_time",
    "register_bridge_ops",
    "relay_trust",
    "relay_trust_of",
    "relayer_arg",
    "reputation_path",
    "reset_relay_validators",
    "right_path",
    "rights_report",
    "send_request_from_tx",
    "set_station",
    "set_transformer",
    "station_path",
    "supply_path",
    "supply_report",
    "transformer_path",
    "trusted_relay_set",
    "validate_lane_update",
    "validate_recv",
    "validate_relay_set_update",
    "validate_send",
    "validate_settle",
]

CONFIG_KEY = b"bridge/config"
RELAY_SET_KEY = b"bridge/relay_validators"

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
DEFAULT_TRUSTING_PERIOD_MS = 7 * DAY_MS
"""Default trusting period of a bridge's view of the relay set (SPEC §7.8): a week."""
MIN_TRUSTING_PERIOD_MS = MINUTE_MS
MAX_TRUSTING_PERIOD_MS = 365 * DAY_MS
DEFAULT_MAX_CERTIFICATE_AGE_MS = 10 * MINUTE_MS
"""Default bound on a phase-3 certificate's age (SPEC §7.9): ten minutes."""
MIN_MAX_CERTIFICATE_AGE_MS = 10_000
MAX_MAX_CERTIFICATE_AGE_MS = DAY_MS
REFRESH_STEP_FRACTION = 64
"""A verified certificate refreshes the trusted time only when that advances it by period / 64 or more."""

KIND_NAMES: dict[str, PacketKind] = {
    "energy": PacketKind.ENERGY,
    "charging_right": PacketKind.CHARGING_RIGHT,
    "reputation": PacketKind.REPUTATION,
}
_KIND_ARGS: dict[PacketKind, tuple[str, ...]] = {
    PacketKind.ENERGY: ("denom", "amount_wh"),
    PacketKind.CHARGING_RIGHT: ("right_id",),
    PacketKind.REPUTATION: ("subject",),
}
_KIND_OPTIONAL: dict[PacketKind, tuple[str, ...]] = {PacketKind.REPUTATION: ("model",)}
_SEND_ARGS = ("dst_chain", "lane", "kind", "receiver", "timeout_timestamp_ms")

Event = dict[str, Any]


class AssetError(ProtocolError):
    """An asset that does not exist here, or cannot move or be created the way asked."""

    code = "asset.invalid"


# --- state paths ----------------------------------------------------------------------------------


def lane_path(counterparty: str, lane: str) -> bytes:
    """A configured lane to and from ``counterparty``."""
    return f"bridge/lanes/{counterparty}/{lane}".encode()


def lane_config_key(dst: str, lane: str) -> bytes:
    """The relay's capacities for packets this chain sends to ``dst`` over ``lane`` (SPEC §6.8)."""
    return f"bridge/lane_config/{dst}/{lane}".encode()


def lane_escrow_path(counterparty: str, lane: str, denom: str) -> bytes:
    """The share of ``escrow/<denom>`` escrowed towards ``counterparty`` over ``lane``."""
    return f"bridge/escrow/{counterparty}/{lane}/{denom}".encode()


def supply_path(denom: str) -> bytes:
    """Outstanding supply of a voucher minted here."""
    return f"supply/{denom}".encode()


def packet_path(dst: str, lane: str, sequence: int) -> bytes:
    """Bytes (hex) of a packet sent and not yet settled, for relayers."""
    return f"packets/{dst}/{lane}/{sequence}".encode()


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BridgeParams:
    """The bridge's genesis configuration, as stored at ``bridge/config``."""

    chain_id: ChainId
    """This chain."""
    relay_chain_id: ChainId
    """The relay chain whose certificates this bridge accepts."""
    native_denoms: tuple[str, ...]
    """Tokens native to this chain (no ``/``), reported by :func:`supply_report`."""
    rights_operator: str | None
    """Account allowed to issue charging rights and write the station and transformer registry (None: nobody)."""
    trusting_period_ms: int | None = None
    """How long the trusted relay set stays usable without a fresh relay header (SPEC §7.8; None: a bridge
    initialised before trusting periods existed, which never expires)."""
    relay_admin: str | None = None
    """Account allowed to reset an expired trusted relay set (``bridge.reset_relay_validators``; None: nobody)."""
    max_certificate_age_ms: int | None = None
    """Phase 3 refuses a certificate whose relay header is older than this at the block time (SPEC §7.9;
    None: a bridge initialised before the bound existed, which accepts a certificate of any age)."""
    fee_denom: str | None = None
    """The park's currency, in which senders pay relay fees (SPEC §6.10; None: this bridge takes no fees)."""


AdmissionHook = Callable[[KVState, ChargingRightPayload, BlockContext], str | None]
"""Decides whether a charging right becomes live on this park (issued, minted, or un-escrowed on its
return): ``None`` admits, a string is the refusal code. The payload's ``right_id`` is the id the right
would be held under here. It must not write state. A :class:`ProtocolError` it raises refuses with the
error's ``code``. A chain's own hook should refuse what :func:`default_admission` refuses first (the
rules every park applies, SPEC §2.3), then add its own."""

ReputationProvider = Callable[[KVState, str, BlockContext], ReputationPayload]
"""Reads this chain's score of a subject from state (the sender never supplies it); raises a
:class:`ProtocolError` if there is none. For a chain that attests one model."""

ModelReputationProvider = Callable[[KVState, str, "str | None", BlockContext], ReputationPayload]
"""Like :data:`ReputationProvider` for a chain that attests several models: ``(state, subject, model, ctx)``,
``model`` as the sender asked (``None``: the provider's choice). Raises a :class:`ProtocolError` for a
model it does not score or a subject it has no score of."""


def default_reputation_provider(state: KVState, subject: str, ctx: BlockContext) -> ReputationPayload:
    """Reads ``reputation/<subject>`` = ``{score, model, height}`` (``height``, the height of the last change,
    is the attested ``source_height``)."""
    rec = state.get_json(reputation_path(subject))
    if rec is None:
        raise AssetError("no reputation recorded for subject", got=subject)
    try:
        return ReputationPayload(subject, check_uint("score", rec["score"]), str(rec["model"]),
                                 check_uint("height", rec["height"]))
    except (KeyError, TypeError) as exc:
        raise AssetError("malformed reputation record", expected="{score, model, height}", got=subject) from exc


@dataclass(frozen=True, slots=True)
class BridgeHooks:
    """What a chain plugs into the shared bridge."""

    admission: AdmissionHook = default_admission
    """Admission rule for a right becoming live here: issued, minted as a voucher, or returning."""
    reputation: ReputationProvider = default_reputation_provider
    """Source of the scores this chain attests (used when ``reputation_models`` is None; a send that names a
    model must name the one it returns)."""
    reputation_models: ModelReputationProvider | None = None
    """Source of the scores of a chain that attests several models; takes precedence over ``reputation``."""

    def attest(self, state: KVState, subject: str, model: str | None, ctx: BlockContext) -> ReputationPayload:
        """The attestation of ``subject`` (under ``model`` if given), read from ``state``."""
        if self.reputation_models is not None:
            r = self.reputation_models(state, subject, model, ctx)
        else:
            r = self.reputation(state, subject, ctx)
        if model is not None and r.model != model:
            raise AssetError("this chain does not attest that model of the subject", expected=model, got=r.model)
        return r


def init_bridge(
    state: KVState,
    chain_id: str,
    relay_chain_id: str,
    relay_validator_set: ValidatorSet,
    native_denoms: Iterable[str],
    lanes: Iterable[Mapping[str, Any]],
    *,
    rights_operator: str | None = None,
    transformers: Mapping[str, int] | None = None,
    stations: Mapping[str, str] | None = None,
    trusting_period_ms: int = DEFAULT_TRUSTING_PERIOD_MS,
    trusted_time_ms: int | None = None,
    relay_admin: str | None = None,
    max_certificate_age_ms: int = DEFAULT_MAX_CERTIFICATE_AGE_MS,
    fee_denom: str | None = None,
) -> None:
    """Genesis: store the bridge configuration, the trusted relay set and the lanes.

    ``trusting_period_ms`` (SPEC §7.8; within :data:`MIN_TRUSTING_PERIOD_MS` ..
    :data:`MAX_TRUSTING_PERIOD_MS`) bounds how long the relay set stays trusted without a fresh relay header;
    ``trusted_time_ms`` is the relay time the set is trusted as of (the relay genesis time; None: the clock
    starts at the first block that checks a certificate). ``relay_admin`` (default: ``rights_operator``) may
    reset the set once the trust expired. ``max_certificate_age_ms`` (SPEC §7.9; within
    :data:`MIN_MAX_CERTIFICATE_AGE_MS` .. :data:`MAX_MAX_CERTIFICATE_AGE_MS`) bounds the age of a phase-3
    certificate's relay header at the block time.

    ``lanes`` is a list of ``{lane, counterparty, capacities?}``; a lane carries packets both ways;
    ``capacities`` (``{asset: int}``, ``*`` the default) are the relay's bucket capacities of the lane
    from this chain to ``counterparty``, as the relay genesis sets them (SPEC §6.8;
    :func:`chains.common.genesis.lanes_from_relay_genesis`); without it the lane is not limited.
    ``transformers`` maps transformer names to capacities (kW), ``stations`` station names to the
    transformer each is behind: the park's registry for admission (:mod:`chains.common.rights`).
    ``fee_denom`` is the park's currency, in which senders may pay relay fees (SPEC §6.10; None: no fees).
    """
    if state.get(CONFIG_KEY) is not None:
        raise ProtocolError("bridge already initialised")
    check_id("chain", chain_id)
    check_id("relay chain", relay_chain_id)
    denoms = tuple(native_denoms)
    for d in denoms:
        _check_denom(d)
        if "/" in d:
            raise CodecError("a native denom has no '/' (that is a voucher trace)", got=d)
    if rights_operator is not None and not isinstance(rights_operator, str):
        raise CodecError("rights_operator must be an account name", got=rights_operator)
    admin = rights_operator if relay_admin is None else relay_admin
    if admin is not None and not isinstance(admin, str):
        raise CodecError("relay_admin must be an account name", got=admin)
    period = check_trusting_period(trusting_period_ms)
    max_age = check_max_certificate_age(max_certificate_age_ms)
    if trusted_time_ms is not None:
        check_uint("trusted_time_ms", trusted_time_ms)
    if fee_denom is not None and ("/" in _check_denom(fee_denom)):
        raise CodecError("the fee denom is a native denom (no '/')", got=fee_denom)
    lane_list: list[tuple[str, str, dict[str, int] | None]] = []
    for entry in lanes:
        if (not isinstance(entry, Mapping) or not {"lane", "counterparty"} <= set(entry)
                or not set(entry) <= {"lane", "counterparty", "capacities"}):
            raise CodecError("a lane is {lane, counterparty, capacities?}", got=entry)
        lane, counterparty = check_id("lane", entry["lane"]), check_id("counterparty", entry["counterparty"])
        if counterparty == chain_id:
            raise CodecError("a lane's counterparty is another chain", got=counterparty)
        raw_caps = entry.get("capacities")
        caps: dict[str, int] | None = None
        if raw_caps is not None:
            if not isinstance(raw_caps, Mapping):
                raise CodecError("a lane's capacities are {asset: int}", got=raw_caps)
            caps = decode_lane_config(encode_lane_config(raw_caps))  # checks every asset and capacity
        lane_list.append((counterparty, lane, caps))
    capacities = dict(transformers or {})
    station_map = dict(stations or {})
    for name, capacity in capacities.items():
        _check_transformer(name, capacity)
    for name, transformer in station_map.items():
        _check_transformer(name, 0)  # the names' rules; 0 stands for a capacity
        _check_transformer(transformer, 0)
    # everything checked: write
    state.set_json(CONFIG_KEY, {"chain_id": chain_id, "relay_chain_id": relay_chain_id,
                                "native_denoms": list(denoms), "rights_operator": rights_operator,
                                "trusting_period_ms": period, "relay_admin": admin,
                                "max_certificate_age_ms": max_age,
                                **({"fee_denom": fee_denom} if fee_denom is not None else {})})
    _store_relay_set(state, relay_validator_set, 0, trusted_time_ms)
    for counterparty, lane, caps in lane_list:
        state.set_json(lane_path(counterparty, lane), {"counterparty": counterparty, "lane": lane})
        if caps:
            state.set_json(lane_config_key(counterparty, lane), {"capacities": caps, "relay_height": 0})
    for name, capacity in capacities.items():
        set_transformer(state, name, capacity)
    for name, transformer in station_map.items():
        set_station(state, name, transformer)


def load_params(state: KVState) -> BridgeParams:
    raw = state.get_json(CONFIG_KEY)
    if raw is None:
        raise ProtocolError("bridge not initialised on this chain")
    period, max_age = raw.get("trusting_period_ms"), raw.get("max_certificate_age_ms")
    return BridgeParams(ChainId(raw["chain_id"]), ChainId(raw["relay_chain_id"]), tuple(raw["native_denoms"]),
                        raw["rights_operator"], None if period is None else int(period), raw.get("relay_admin"),
                        None if max_age is None else int(max_age), raw.get("fee_denom"))


def _params_for(state: KVState, ctx: BlockContext) -> BridgeParams:
    params = load_params(state)
    if params.chain_id != ctx.chain_id:
        raise WrongChainError("bridge configured for another chain", expected=ctx.chain_id, got=params.chain_id)
    return params


def trusted_relay_set(state: KVState) -> tuple[ValidatorSet, int]:
    """The trusted relay validator set and the relay height of its last accepted update (0: genesis)."""
    raw = state.get_json(RELAY_SET_KEY)
    if raw is None:
        raise ProtocolError("bridge not initialised on this chain")
    vs = wire.validator_set_from_json({"validators": raw["validators"], "hash": raw["hash"]})
    return vs, int(raw["update_height"])


def _bounded_ms(what: str, value: Any, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) within ``lo..hi``, else :class:`CodecError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CodecError(f"{what} out of bounds (ms)", expected=f"{lo}..{hi}", got=value)
    return value


def check_trusting_period(period_ms: Any) -> int:
    """``period_ms`` if it is a trusting period within the bounds (SPEC §7.8), else :class:`CodecError`."""
    return _bounded_ms("trusting period", period_ms, MIN_TRUSTING_PERIOD_MS, MAX_TRUSTING_PERIOD_MS)


def check_max_certificate_age(age_ms: Any) -> int:
    """``age_ms`` if it is a certificate-age bound within the bounds (SPEC §7.9), else :class:`CodecError`."""
    return _bounded_ms("max certificate age", age_ms, MIN_MAX_CERTIFICATE_AGE_MS, MAX_MAX_CERTIFICATE_AGE_MS)


def check_certificate_age(params: BridgeParams, header_time_ms: int, now_ms: int) -> None:
    """Phase 3 (SPEC §6.5 step 3, §7.9): :class:`CertificateStaleError` when the certificate's relay header is
    more than ``max_certificate_age_ms`` older than the block time. A header ahead of the clock is not stale."""
    bound = params.max_certificate_age_ms
    if bound is not None and now_ms - header_time_ms > bound:
        raise CertificateStaleError("relay certificate too old for phase 3: fetch one of a newer relay block",
                                    expected=f"relay header time >= {now_ms - bound}", got=header_time_ms)


@dataclass(frozen=True, slots=True)
class RelayTrust:
    """The bridge's view of the relay set over time (SPEC §7.8), as :func:`relay_trust` reads it."""

    validators: ValidatorSet
    """The trusted relay set."""
    update_height: int
    """Relay height of the update (or reset) that installed it (0: genesis)."""
    trusted_time_ms: int | None
    """Relay time the set is trusted as of: the newest verified header's, capped by this chain's clock
    (None: no certificate checked since genesis, which gave none)."""
    trusting_period_ms: int | None
    """None: a bridge from before trusting periods (never expires)."""

    def expires_at_ms(self) -> int | None:
        """This chain's time from which certificates and updates are refused (None: never, or not started)."""
        if self.trusted_time_ms is None or self.trusting_period_ms is None:
            return None
        return self.trusted_time_ms + self.trusting_period_ms

    def expired(self, now_ms: int) -> bool:
        at = self.expires_at_ms()
        return at is not None and now_ms > at

    def to_json(self) -> dict[str, Any]:
        """The query form (``bridge.relay_trust``): what a relayer needs to keep the bridge fresh."""
        return {"validators": wire.validator_set_to_json(self.validators), "update_height": self.update_height,
                "trusted_time_ms": self.trusted_time_ms, "trusting_period_ms": self.trusting_period_ms,
                "expires_at_ms": self.expires_at_ms()}


def relay_trust(state: KVState) -> RelayTrust:
    """The trusted relay set, its update height, trusted time and trusting period (a query; SPEC §7.8)."""
    raw, config = state.get_json(RELAY_SET_KEY), state.get_json(CONFIG_KEY)
    if raw is None or config is None:
        raise ProtocolError("bridge not initialised on this chain")
    return relay_trust_of(raw, config)


def relay_trust_of(raw_set: Mapping[str, Any], raw_config: Mapping[str, Any]) -> RelayTrust:
    """:class:`RelayTrust` from the stored ``bridge/relay_validators`` and ``bridge/config`` records (what a
    relayer reads over a node's state query)."""
    vs = wire.validator_set_from_json({"validators": raw_set["validators"], "hash": raw_set["hash"]})
    t, period = raw_set.get("trusted_time_ms"), raw_config.get("trusting_period_ms")
    return RelayTrust(vs, int(raw_set["update_height"]), None if t is None else int(t),
                      None if period is None else int(period))


def check_relay_trust(state: KVState, ctx: BlockContext) -> ValidatorSet:
    """The trusted relay set, unless its trust expired at the block time (:class:`ClientExpiredError`)."""
    trust = relay_trust(state)
    if trust.expired(ctx.timestamp_ms):
        raise ClientExpiredError("the bridge's relay validator set expired: no relay header verified within the "
                                 "trusting period; the park's relay admin must reset it "
                                 "(bridge.reset_relay_validators)", expected=f"block time <= {trust.expires_at_ms()}",
                                 got=ctx.timestamp_ms)
    return trust.validators


def refreshed_trusted_time(held: int | None, period_ms: int | None, header_time_ms: int, now_ms: int) -> int | None:
    """The trusted time after verifying a relay header of time ``header_time_ms`` at block time ``now_ms``
    (SPEC §7.8 rule 2), or None to leave ``held`` as it is: the header's time, when it advances the held time
    by at least the refresh step (period / :data:`REFRESH_STEP_FRACTION`) and is not ahead of the block time
    by more than that step (a relay clock ahead of this chain's cannot extend trust beyond it). The value is
    the header's, never the clock's: on Fabric the organisations' clocks differ, their write sets must not."""
    step = max(1, (period_ms or 0) // REFRESH_STEP_FRACTION)
    if header_time_ms > now_ms + step:
        return None
    if held is not None and header_time_ms < held + step:
        return None
    return header_time_ms


def refresh_relay_trust(state: KVState, header_time_ms: int, ctx: BlockContext) -> None:
    """After a verified certificate: write the trusted time :func:`refreshed_trusted_time` gives, if any (most
    certificates write nothing: no write contention between transactions, on Fabric no MVCC conflicts)."""
    raw = state.get_json(RELAY_SET_KEY)
    if raw is None:
        raise ProtocolError("bridge not initialised on this chain")
    held = raw.get("trusted_time_ms")
    new_time = refreshed_trusted_time(None if held is None else int(held), load_params(state).trusting_period_ms,
                                      header_time_ms, ctx.timestamp_ms)
    if new_time is not None:
        state.set_json(RELAY_SET_KEY, {**raw, "trusted_time_ms": new_time})


def _store_relay_set(state: KVState, vs: ValidatorSet, update_height: int, trusted_time_ms: int | None) -> None:
    record: dict[str, Any] = {**wire.validator_set_to_json(vs), "update_height": update_height}
    if trusted_time_ms is not None:
        record["trusted_time_ms"] = trusted_time_ms
    state.set_json(RELAY_SET_KEY, record)


def lane_configured(state: KVState, counterparty: str, lane: str) -> bool:
    return state.get(lane_path(counterparty, lane)) is not None


def lane_capacities(state: KVState, dst: str, lane: str) -> tuple[dict[str, int], int]:
    """The relay's capacities of the outgoing lane (empty: not limited) and the relay height they were
    certified at (0: genesis)."""
    raw = state.get_json(lane_config_key(dst, lane))
    if raw is None:
        return {}, 0
    return {str(a): int(c) for a, c in raw["capacities"].items()}, int(raw["relay_height"])


def _check_transformer(name: str, capacity_kw: int) -> None:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_STRING:
        raise CodecError("transformer name must be a non-empty string", got=name)
    check_uint("capacity_kw", capacity_kw)


def _check_denom(denom: str) -> str:
    if not isinstance(denom, str) or not denom or len(denom.encode()) > MAX_STRING:
        raise CodecError(f"a denom is a non-empty string of at most {MAX_STRING} bytes", got=denom)
    return denom


# --- relay validator set updates ------------------------------------------------------------------


def validate_relay_set_update(state: KVState, params: BridgeParams, commit: RelayCommit,
                              new_set: ValidatorSet, ctx: BlockContext | None = None) -> None:
    """Raise unless the current set certified ``new_set`` at a relay height above the last update, within
    the trusting period at ``ctx``'s block time (SPEC §7.8; ``ctx`` None: no expiry check)."""
    trusted, last_height = trusted_relay_set(state)
    if commit.header.height <= last_height:
        raise ReplayError("validator set update at or below the last accepted update height",
                          expected=f"> {last_height}", got=commit.header.height)
    if ctx is not None:
        check_relay_trust(state, ctx)
    verify_validator_set_update(trusted, params.relay_chain_id, commit, new_set)


def apply_relay_set_update(state: KVState, commit: RelayCommit, new_set: ValidatorSet,
                           ctx: BlockContext | None = None) -> list[Event]:
    trust = relay_trust(state)
    held = trust.trusted_time_ms
    t: int | None = commit.header.time_ms
    if ctx is not None:
        fresh = refreshed_trusted_time(held, trust.trusting_period_ms, commit.header.time_ms, ctx.timestamp_ms)
        t = held if fresh is None else fresh
    _store_relay_set(state, new_set, commit.header.height, t)
    return [{"type": "relay_validators_updated", "height": commit.header.height, "hash": new_set.hash.hex(),
             "validators": len(new_set.validators)}]


def process_relay_set_update(state: KVState, params: BridgeParams, commit: RelayCommit,
                             new_set: ValidatorSet, ctx: BlockContext | None = None) -> list[Event]:
    """An update to the same set from a newer commit only refreshes the trusted time (what a relayer sends to
    keep an idle bridge from expiring)."""
    validate_relay_set_update(state, params, commit, new_set, ctx)
    return apply_relay_set_update(state, commit, new_set, ctx)


def reset_relay_validators(state: KVState, params: BridgeParams, sender: str, new_set: ValidatorSet,
                           height: int, time_ms: int, ctx: BlockContext) -> list[Event]:
    """The relay admin's way out of an expired trust (SPEC §7.8): install ``new_set``, obtained out of band
    from a relay header at relay ``height`` and relay time ``time_ms`` that the operator checked, as trusted
    as of ``time_ms``. Only the admin (:class:`AuthorizationError`), only once the trust expired
    (:class:`IllegalTransitionError`: a live bridge follows the relay through certified updates only), only
    above the last update's height (:class:`ReplayError`), with ``time_ms`` within the trusting period before
    the block time and not ahead of it by more than the refresh step (:class:`CodecError`)."""
    if params.relay_admin is None or sender != params.relay_admin:
        raise AuthorizationError("resetting the relay validator set is for the relay admin",
                                 expected=params.relay_admin, got=sender)
    trust = relay_trust(state)
    if not trust.expired(ctx.timestamp_ms):
        raise IllegalTransitionError("the relay validator set has not expired: it changes through certified "
                                     "updates only", expected=f"block time > {trust.expires_at_ms()}",
                                     got=ctx.timestamp_ms)
    check_uint("height", height)
    check_uint("time_ms", time_ms)
    if height <= trust.update_height:
        raise ReplayError("reset at or below the last accepted update height", expected=f"> {trust.update_height}",
                          got=height)
    period = trust.trusting_period_ms or DEFAULT_TRUSTING_PERIOD_MS
    step = max(1, period // REFRESH_STEP_FRACTION)
    if not ctx.timestamp_ms - period < time_ms <= ctx.timestamp_ms + step:
        raise CodecError("reset time outside the trusting period around the block time",
                         expected=f"{ctx.timestamp_ms - period} < time_ms <= {ctx.timestamp_ms + step}", got=time_ms)
    _store_relay_set(state, new_set, height, time_ms)
    return [{"type": "relay_validators_reset", "height": height, "hash": new_set.hash.hex(),
             "validators": len(new_set.validators), "trusted_time_ms": time_ms}]


# --- lanes learnt from the relay (SPEC §6.8) ------------------------------------------------------


def validate_lane_update(state: KVState, params: BridgeParams, dst: str, lane: str, config: bytes,
                         cert: RelayCertificate, ctx: BlockContext | None = None) -> dict[str, int]:
    """Raise unless ``cert`` proves ``config`` is the relay's lane-config record of ``(this, dst, lane)`` at a
    relay height above the one held; returns the capacities."""
    dst_id, lane_id = ChainId(check_id("dst_chain", dst)), LaneId(check_id("lane", lane))
    if dst_id == params.chain_id:
        raise WrongChainError("a lane joins this chain to another", expected=f"not {params.chain_id}", got=dst_id)
    _, held_height = lane_capacities(state, dst_id, lane_id)
    if cert.commit.header.height <= held_height:  # before any signature work
        raise ReplayError("lane config at or below the relay height of the one held",
                          expected=f"> {held_height}", got=cert.commit.header.height)
    capacities = decode_lane_config(config)
    trusted = trusted_relay_set(state)[0] if ctx is None else check_relay_trust(state, ctx)
    verify_certificate(trusted, params.relay_chain_id, cert, lane_config_path(params.chain_id, dst_id, lane_id),
                       config)
    return capacities


def apply_lane_update(state: KVState, dst: str, lane: str, capacities: Mapping[str, int],
                      relay_height: int) -> list[Event]:
    opened = not lane_configured(state, dst, lane)
    if opened:
        state.set_json(lane_path(dst, lane), {"counterparty": dst, "lane": lane})
    state.set_json(lane_config_key(dst, lane), {"capacities": dict(capacities), "relay_height": relay_height})
    return [{"type": "lane_config_updated", "dst": dst, "lane": lane, "capacities": dict(sorted(capacities.items())),
             "relay_height": relay_height, "opened": opened}]


def process_lane_update(state: KVState, params: BridgeParams, dst: str, lane: str, config: bytes,
                        cert: RelayCertificate, ctx: BlockContext | None = None) -> list[Event]:
    capacities = validate_lane_update(state, params, dst, lane, config, cert, ctx)
    if ctx is not None:
        refresh_relay_trust(state, cert.commit.header.time_ms, ctx)
    return apply_lane_update(state, dst, lane, capacities, cert.commit.header.height)


# --- phase 1: COMMIT ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A ``bridge.send`` call, parsed."""

    sender: str
    """Account sending (the transaction's signer)."""
    dst_chain: str
    """Target chain."""
    lane: str
    """Lane to ``dst_chain``."""
    kind: PacketKind
    """What is sent."""
    receiver: str
    """Account on the target."""
    timeout_timestamp_ms: int
    """Target block time (ms) from which the packet can no longer execute."""
    denom: str = ""
    """Energy: denom with its trace."""
    amount_wh: int = 0
    """Energy: amount, Wh."""
    right_id: str = ""
    """Charging right: its id."""
    subject: str = ""
    """Reputation: whose score."""
    model: str | None = None
    """Reputation: which of the chain's models (None: the chain's choice)."""
    fees: Fees = NO_FEES
    """Relay fees offered for the packet's steps, in the park's fee denom (SPEC §6.10)."""


def _is_returning_voucher(denom: str, lane: str, dst: str) -> bool:
    return denom.startswith(f"{lane}/{dst}/")


def validate_send(state: KVState, params: BridgeParams, hooks: BridgeHooks, req: SendRequest,
                  ctx: BlockContext) -> Packet:
    """Raise unless ``req`` can be sent; return the packet it would commit. Writes nothing."""
    dst = ChainId(check_id("dst_chain", req.dst_chain))
    lane = LaneId(check_id("lane", req.lane))
    if dst == params.chain_id:
        raise WrongChainError("a packet goes to another chain", expected=f"not {params.chain_id}", got=dst)
    if not lane_configured(state, dst, lane):
        raise LaneError("lane not configured for that counterparty", expected=f"a lane to {dst}", got=lane)
    timeout = req.timeout_timestamp_ms
    if check_uint("timeout_timestamp_ms", timeout) == 0:
        raise CodecError("a packet without a timeout is refused", got=0)
    if timeout <= ctx.timestamp_ms:
        raise TimeoutExpiredError("a packet's timeout must be after the current block time",
                                  expected=f"> {ctx.timestamp_ms}", got=timeout)
    if req.fees:
        _check_fees(state, params, req)
    payload: bytes
    if req.kind is PacketKind.ENERGY:
        energy = EnergyPayload(_check_denom(req.denom), req.amount_wh)
        payload = encode_energy(energy)
        have = state.balance(req.sender, energy.denom)
        if energy.denom == params.fee_denom:
            have -= req.fees.total  # the fees come out of the same balance
        if have < energy.amount_wh:
            raise InsufficientFundsError(f"balance of {req.sender} in {energy.denom} too small",
                                         expected=f">= {energy.amount_wh}", got=have)
        if _is_returning_voucher(energy.denom, lane, dst):
            supply = state.get_int(supply_path(energy.denom))
            if supply < energy.amount_wh:  # balances never exceed supply; guard the invariant anyway
                raise InsufficientFundsError("voucher supply smaller than the amount burned",
                                             expected=f">= {energy.amount_wh}", got=supply)
    elif req.kind is PacketKind.CHARGING_RIGHT:
        rec = state.get_json(right_path(req.right_id)) if req.right_id else None
        if rec is None:
            raise AssetError("no such charging right", got=req.right_id)
        if rec["owner"] != req.sender:
            raise AuthorizationError("only the owner sends a charging right", expected=rec["owner"], got=req.sender)
        right = right_payload(req.right_id, rec)
        if timeout > right.slot_start_ms:
            raise SlotTimeoutError("a charging right's packet must time out by its slot start",
                                   expected=f"<= {right.slot_start_ms}", got=timeout)
        payload = encode_charging_right(right)
    elif req.kind is PacketKind.REPUTATION:
        if not isinstance(req.subject, str) or not req.subject:
            raise CodecError("reputation needs a subject", got=req.subject)
        if req.model is not None and (not isinstance(req.model, str) or not req.model):
            raise CodecError("a reputation model is a non-empty string", got=req.model)
        payload = encode_reputation(hooks.attest(state, req.subject, req.model, ctx))
    else:  # pragma: no cover - PacketKind is closed
        raise CodecError("unknown packet kind", got=req.kind)
    sequence = _next_sequence(state, dst, lane)
    packet = Packet(params.chain_id, dst, lane, sequence, req.kind, payload, req.sender, req.receiver, timeout)
    encode_packet(packet)  # validates every field
    capacities, _ = lane_capacities(state, dst, lane)
    asset, tokens = packet_tokens(packet)
    check_capacity(capacities, asset, tokens, f"{params.chain_id}/{dst}/{lane}")  # the relay would never verify it
    return packet


def _check_fees(state: KVState, params: BridgeParams, req: SendRequest) -> None:
    if params.fee_denom is None:
        raise CodecError("this park's bridge takes no relay fees", expected="no fees", got=req.fees.to_json())
    have = state.balance(req.sender, params.fee_denom)
    if have < req.fees.total:
        raise InsufficientFundsError(f"balance of {req.sender} in {params.fee_denom} too small for the relay fees",
                                     expected=f">= {req.fees.total}", got=have)


def apply_send(state: KVState, params: BridgeParams, packet: Packet, fees: Fees = NO_FEES) -> list[Event]:
    """Take the fees and the asset, assign the sequence, store the commitment. Assumes :func:`validate_send` passed
    (for the same ``fees``)."""
    dst, lane, seq = packet.dst_chain, packet.lane, packet.sequence
    fee_field = escrow_fees(state, params.fee_denom, packet, fees) if fees and params.fee_denom else None
    if packet.kind is PacketKind.ENERGY:
        e = decode_energy(packet.payload)
        state.sub_balance(packet.sender, e.denom, e.amount_wh)
        if _is_returning_voucher(e.denom, lane, dst):
            state.set_int(supply_path(e.denom), state.get_int(supply_path(e.denom)) - e.amount_wh)
        else:
            _add_escrow(state, dst, lane, e.denom, e.amount_wh)
    elif packet.kind is PacketKind.CHARGING_RIGHT:
        # the right stays booked here, escrowed or burned, until its packet settles (SPEC §2.3 "Bookings")
        c = decode_charging_right(packet.payload)
        rec = state.get_json(right_path(c.right_id))
        to = {"chain": dst, "lane": lane, "sequence": seq}
        if is_returning(c.right_id, lane, dst):
            state.delete(right_path(c.right_id))
            state.set_json(burned_right_path(c.right_id), {**rec, "burned_to": to})
        else:
            state.set_json(right_path(c.right_id), {**rec, "owner": ESCROW_OWNER, "escrowed_to": to})
    raw = encode_packet(packet)
    commitment = packet_commitment(packet)
    state.set_int(next_send_path(dst, lane), seq + 1)
    state.set(commitment_path(dst, lane, seq), commitment)
    state.set(packet_path(dst, lane, seq), raw.hex().encode())
    event: Event = {"type": "send_packet", "packet": raw.hex(), "src": packet.src_chain, "dst": dst, "lane": lane,
                    "sequence": seq, "kind": packet.kind.name.lower(), "commitment": commitment.hex()}
    if fee_field is not None:
        event["fees"] = fee_field
    return [event]


def process_send(state: KVState, params: BridgeParams, hooks: BridgeHooks, req: SendRequest,
                 ctx: BlockContext) -> list[Event]:
    packet = validate_send(state, params, hooks, req, ctx)
    return apply_send(state, params, packet, req.fees)


def _next_sequence(state: KVState, dst: str, lane: str) -> int:
    return state.get_int(next_send_path(ChainId(dst), LaneId(lane)), 1)


def _add_escrow(state: KVState, counterparty: str, lane: str, denom: str, amount: int) -> None:
    state.set_int(escrow_path(denom), state.get_int(escrow_path(denom)) + amount)
    key = lane_escrow_path(counterparty, lane, denom)
    state.set_int(key, state.get_int(key) + amount)


def _sub_escrow(state: KVState, counterparty: str, lane: str, denom: str, amount: int) -> None:
    key = lane_escrow_path(counterparty, lane, denom)
    have = state.get_int(key)
    total = state.get_int(escrow_path(denom))
    if have < amount or total < amount:
        raise InsufficientFundsError(f"escrow of {denom} towards {counterparty}/{lane} too small",
                                     expected=f">= {amount}", got=have)
    state.set_int(key, have - amount)
    state.set_int(escrow_path(denom), total - amount)


def issue_charging_right(state: KVState, params: BridgeParams, hooks: BridgeHooks, right_id: str, station: str,
                         transformer: str, power_kw: int, slot_start_ms: int, slot_end_ms: int, owner: str,
                         ctx: BlockContext) -> list[Event]:
    """Issue a base charging right (its id has no ``/``) to ``owner`` and book it on its transformer.

    Admission applies as to any right becoming live here: a refusal raises the typed error of its code
    (:func:`protocol.errors.admission_error`: ``slot.started``, ``station.unknown``...)."""
    check_id("right", right_id)
    if state.get(right_path(right_id)) is not None or state.get(burned_right_path(right_id)) is not None:
        raise AssetError("a charging right with that id exists", got=right_id)
    if state.get(account_path(owner)) is None:
        raise AssetError("unknown owner account", got=owner)
    c = ChargingRightPayload(right_id, params.chain_id, station, transformer, power_kw, slot_start_ms, slot_end_ms)
    encode_charging_right(c)
    refusal = _admit(hooks, state, c, ctx)
    if refusal is not None:
        raise admission_error(refusal, f"the park's admission refuses right {right_id}", expected="admitted",
                              got=refusal)
    state.set_json(right_path(right_id), right_record(c, owner))
    book(state, c, ctx.timestamp_ms)
    return [{"type": "right_issued", "right_id": right_id, "owner": owner, "transformer": transformer,
             "power_kw": power_kw, "slot_start_ms": slot_start_ms, "slot_end_ms": slot_end_ms}]


def _admit(hooks: BridgeHooks, state: KVState, c: ChargingRightPayload, ctx: BlockContext) -> str | None:
    try:
        return hooks.admission(state, c, ctx)
    except ProtocolError as exc:
        return exc.code


# --- phase 3: EXECUTE -----------------------------------------------------------------------------


class _Refusal(Exception):
    """An application-level refusal of a verified packet: becomes an error ack."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def validate_recv(state: KVState, params: BridgeParams, packet: Packet, cert: RelayCertificate,
                  ctx: BlockContext) -> None:
    """Raise unless ``packet`` may execute here now under ``cert``. Writes nothing."""
    if packet.dst_chain != params.chain_id:
        raise WrongChainError("packet is for another chain", expected=params.chain_id, got=packet.dst_chain)
    if not lane_configured(state, packet.src_chain, packet.lane):
        raise LaneError("lane not configured for the packet's source", expected=f"a lane to {packet.src_chain}",
                        got=packet.lane)
    receipt = receipt_path(packet.src_chain, packet.lane, packet.sequence)
    if state.get(receipt) is not None:
        raise ReplayError("packet already received", expected="no receipt",
                          got=f"{packet.src_chain}/{packet.lane}/{packet.sequence}")
    trusted = check_relay_trust(state, ctx)
    verify_certificate(trusted, params.relay_chain_id, cert,
                       verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                       packet_commitment(packet))
    check_certificate_age(params, cert.commit.header.time_ms, ctx.timestamp_ms)
    if ctx.timestamp_ms >= packet.timeout_timestamp_ms:
        raise TimeoutExpiredError("packet timed out: it can only be refunded at its source now",
                                  expected=f"block time < {packet.timeout_timestamp_ms}", got=ctx.timestamp_ms)


def apply_recv(state: KVState, params: BridgeParams, hooks: BridgeHooks, packet: Packet,
               ctx: BlockContext, relayer: str = "") -> Acknowledgement:
    """Execute the packet and write its receipt; a refusal rolls back to a receipt with an error ack. The ack names
    ``relayer``, the relay account that executed it and earns its execute fee (SPEC §6.10; empty: none)."""
    try:
        with state.atomic():
            if packet.kind is PacketKind.ENERGY:
                _recv_energy(state, params, packet)
            elif packet.kind is PacketKind.CHARGING_RIGHT:
                _recv_charging_right(state, params, hooks, packet, ctx)
            else:
                _recv_reputation(state, packet, ctx)
        ack = Acknowledgement(AckStatus.SUCCESS, "ok", b"", relayer)
    except _Refusal as refusal:
        ack = Acknowledgement(AckStatus.ERROR, refusal.code, b"", relayer)
    state.set(receipt_path(packet.src_chain, packet.lane, packet.sequence), ack_commitment(ack))
    state.set(ack_path(packet.src_chain, packet.lane, packet.sequence), encode_ack(ack).hex().encode())
    return ack


def process_recv(state: KVState, params: BridgeParams, hooks: BridgeHooks, packet: Packet,
                 cert: RelayCertificate, ctx: BlockContext, relayer: str = "") -> list[Event]:
    validate_recv(state, params, packet, cert, ctx)
    refresh_relay_trust(state, cert.commit.header.time_ms, ctx)
    return [_write_ack_event(packet, apply_recv(state, params, hooks, packet, ctx, relayer))]


def _batch_commit(certs: list[RelayCertificate], n: int) -> RelayCommit:
    """The one commit of a certificate batch carrying ``n`` items (one record each)."""
    if len(certs) != n:
        raise CodecError("a batch has one certificate record per item", expected=n, got=len(certs))
    return certs[0].commit


def process_recv_batch(state: KVState, params: BridgeParams, hooks: BridgeHooks, packets: list[Packet],
                       certs: list[RelayCertificate], ctx: BlockContext, relayer: str = "") -> list[Event]:
    """``bridge.recv_batch`` (SPEC §7.10): phase 3 of up to :data:`~chains.common.wire.MAX_BATCH_RECORDS` packets
    under one certificate batch, ``certs[i]`` proving ``packets[i]``. The checks of :func:`validate_recv`, in its
    order, with the commit's signatures checked once: a packet for another chain or lane fails the whole batch, as
    does any wrong record; a packet already received, or past its timeout at this block, is skipped (reported in a
    ``packets_skipped`` event, nothing written for it), so two relayers' overlapping batches both land. A batch
    with nothing left to do fails (:class:`ReplayError` if a packet was received already, else
    :class:`TimeoutExpiredError`), before any signature is checked where it can be."""
    commit = _batch_commit(certs, len(packets))
    todo: list[tuple[Packet, RelayCertificate]] = []
    replayed: list[int] = []
    for packet, cert in zip(packets, certs, strict=True):
        if packet.dst_chain != params.chain_id:
            raise WrongChainError("packet is for another chain", expected=params.chain_id, got=packet.dst_chain)
        if not lane_configured(state, packet.src_chain, packet.lane):
            raise LaneError("lane not configured for the packet's source",
                            expected=f"a lane to {packet.src_chain}", got=packet.lane)
        if cert.commit is not commit and cert.commit != commit:
            raise CodecError("a certificate batch has one commit")
        if state.get(receipt_path(packet.src_chain, packet.lane, packet.sequence)) is not None:
            replayed.append(packet.sequence)
        else:
            todo.append((packet, cert))
    if not todo:
        p = packets[0]
        raise ReplayError("every packet of the batch was received already", expected="no receipt",
                          got=f"{p.src_chain}/{p.lane}/{sorted(replayed)}")
    trusted = check_relay_trust(state, ctx)
    verify_commit(trusted, params.relay_chain_id, commit)
    for packet, cert in todo:
        verify_record(cert, verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                      packet_commitment(packet))
    check_certificate_age(params, commit.header.time_ms, ctx.timestamp_ms)
    live = [(p, c) for p, c in todo if ctx.timestamp_ms < p.timeout_timestamp_ms]
    expired = [p.sequence for p, _ in todo if ctx.timestamp_ms >= p.timeout_timestamp_ms]
    if not live:
        p = todo[0][0]
        raise TimeoutExpiredError("every packet of the batch timed out: they can only be refunded at their source now",
                                  expected=f"block time < {p.timeout_timestamp_ms}", got=ctx.timestamp_ms)
    refresh_relay_trust(state, commit.header.time_ms, ctx)
    events: list[Event] = []
    done: set[tuple[str, str, int]] = set()
    for packet, _ in live:
        ident = (packet.src_chain, packet.lane, packet.sequence)
        if ident in done:  # listed twice: the first wrote the receipt
            replayed.append(packet.sequence)
            continue
        done.add(ident)
        ack = apply_recv(state, params, hooks, packet, ctx, relayer)
        events.append(_write_ack_event(packet, ack))
    if replayed or expired:
        events.append({"type": "packets_skipped", "src": packets[0].src_chain, "dst": params.chain_id,
                       "received_already": sorted(replayed), "timed_out": sorted(expired)})
    return events


def _write_ack_event(packet: Packet, ack: Acknowledgement) -> Event:
    return {"type": "write_ack", "src": packet.src_chain, "dst": packet.dst_chain, "lane": packet.lane,
            "sequence": packet.sequence, "kind": packet.kind.name.lower(), "success": ack.success,
            "code": ack.code, "ack": encode_ack(ack).hex(), "ack_commitment": ack_commitment(ack).hex()}


def _require_account(state: KVState, name: str) -> None:
    if "/" in name or state.get(account_path(name)) is None:
        raise _Refusal("receiver.unknown")


def _recv_energy(state: KVState, params: BridgeParams, packet: Packet) -> None:
    try:
        e = decode_energy(packet.payload)
    except CodecError as exc:
        raise _Refusal("payload.invalid") from exc
    _require_account(state, packet.receiver)
    prefix = f"{packet.lane}/{params.chain_id}/"
    if e.denom.startswith(prefix):
        base = e.denom[len(prefix):]
        if not base:
            raise _Refusal("denom.invalid")
        try:
            _sub_escrow(state, packet.src_chain, packet.lane, base, e.amount_wh)
        except InsufficientFundsError as exc:
            raise _Refusal("escrow.insufficient") from exc
        state.add_balance(packet.receiver, base, e.amount_wh)
    else:
        voucher = f"{packet.lane}/{packet.src_chain}/{e.denom}"
        if len(voucher.encode()) > MAX_STRING:
            raise _Refusal("denom.too_long")  # it could never be sent on, nor home
        state.set_int(supply_path(voucher), state.get_int(supply_path(voucher)) + e.amount_wh)
        state.add_balance(packet.receiver, voucher, e.amount_wh)


def _recv_charging_right(state: KVState, params: BridgeParams, hooks: BridgeHooks, packet: Packet,
                         ctx: BlockContext) -> None:
    try:
        c = decode_charging_right(packet.payload)
    except CodecError as exc:
        raise _Refusal("payload.invalid") from exc
    _require_account(state, packet.receiver)
    if is_returning(c.right_id, packet.lane, params.chain_id):
        local = c.right_id[len(f"{packet.lane}/{params.chain_id}/"):]
        rec = state.get_json(right_path(local)) if local else None
        escrowed_to = rec.get("escrowed_to") if rec is not None else None
        if (rec is None or rec["owner"] != ESCROW_OWNER or escrowed_to is None
                or escrowed_to["chain"] != packet.src_chain or escrowed_to["lane"] != packet.lane):
            raise _Refusal("right.not_escrowed")
        right = replace(c, right_id=local)
        if right_payload(local, rec) != right:
            raise _Refusal("right.mismatch")
    else:
        local = voucher_right_id(packet.lane, packet.src_chain, c.right_id)
        if len(local.encode()) > MAX_STRING:
            raise _Refusal("right.too_long")  # it could never be sent on, nor back
        if state.get(right_path(local)) is not None or state.get(burned_right_path(local)) is not None:
            raise _Refusal("right.exists")
        right = replace(c, right_id=local)
    refusal = _admit(hooks, state, right, ctx)
    if refusal is not None:
        raise _Refusal(refusal)
    state.set_json(right_path(local), right_record(right, packet.receiver))
    book(state, right, ctx.timestamp_ms)


def _recv_reputation(state: KVState, packet: Packet, ctx: BlockContext) -> None:
    try:
        r = decode_reputation(packet.payload)
    except CodecError as exc:
        raise _Refusal("payload.invalid") from exc
    _require_account(state, packet.receiver)  # as for every kind: the receiver is an account here
    refusal = import_refusal(state, packet.src_chain, r)
    if refusal is not None:
        raise _Refusal(refusal)
    record_import(state, packet, r, ctx.height)


# --- phase 4: SETTLE ------------------------------------------------------------------------------


def validate_settle(state: KVState, params: BridgeParams, packet: Packet, cert: RelayCertificate,
                    ack: Acknowledgement | None, ctx: BlockContext | None = None) -> PacketOutcome:
    """Raise unless ``cert`` proves this packet's outcome (ACKED with ``ack``, or TIMED_OUT if None)."""
    if packet.src_chain != params.chain_id:
        raise WrongChainError("packet was sent by another chain", expected=params.chain_id, got=packet.src_chain)
    stored = state.get(commitment_path(packet.dst_chain, packet.lane, packet.sequence))
    if stored is None:
        raise ReplayError("no commitment for the packet: already settled (or never sent)",
                          got=f"{packet.dst_chain}/{packet.lane}/{packet.sequence}")
    commitment = packet_commitment(packet)
    if stored != commitment:
        raise InvalidProofError("packet differs from the one committed at its sequence", expected=stored,
                                got=commitment)
    outcome = PacketOutcome.TIMED_OUT if ack is None else PacketOutcome.ACKED
    ack_commit = ZERO_COMMITMENT if ack is None else ack_commitment(ack)
    trusted = trusted_relay_set(state)[0] if ctx is None else check_relay_trust(state, ctx)
    verify_certificate(trusted, params.relay_chain_id, cert,
                       outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                       encode_outcome(outcome, commitment, ack_commit, certified_payees(cert)))
    return outcome


def certified_payees(cert: RelayCertificate) -> FeePayees:
    """The payees of the outcome record ``cert`` claims (SPEC §6.10). Only a claim until the certificate is
    verified against the record rebuilt with them: a value that is no outcome record gives none, and the
    certificate check then refuses it as it refuses any wrong value."""
    if cert.value is None:
        return NO_PAYEES
    try:
        return decode_outcome_record(cert.value)[3]
    except CodecError:
        return NO_PAYEES


def apply_settle(state: KVState, params: BridgeParams, packet: Packet, outcome: PacketOutcome,
                 ack: Acknowledgement | None, ctx: BlockContext, payees: FeePayees = NO_PAYEES) -> list[Event]:
    """Complete on a success ack, refund on an error ack or a timeout; pay the relay fees to the certified
    ``payees`` and refund the rest (SPEC §6.10); forget the commitment."""
    refund = outcome is PacketOutcome.TIMED_OUT or ack is None or not ack.success
    if refund:
        _refund(state, params, packet)
    else:
        _complete(state, params, packet, ctx)
    state.delete(commitment_path(packet.dst_chain, packet.lane, packet.sequence))
    state.delete(packet_path(packet.dst_chain, packet.lane, packet.sequence))
    events: list[Event] = [{"type": "settle_packet", "src": packet.src_chain, "dst": packet.dst_chain,
                            "lane": packet.lane, "sequence": packet.sequence, "kind": packet.kind.name.lower(),
                            "outcome": outcome.name.lower(), "ack_code": None if ack is None else ack.code,
                            "refunded": refund}]
    return events + settle_fees(state, packet, outcome, payees, _payable)


def _payable(payee: str) -> bool:
    """A Python park credits only a valid account name (a fee to anything else goes back to its payer)."""
    return ACCOUNT_RE.match(payee) is not None


def process_settle(state: KVState, params: BridgeParams, packet: Packet, cert: RelayCertificate,
                   ack: Acknowledgement | None, ctx: BlockContext) -> list[Event]:
    outcome = validate_settle(state, params, packet, cert, ack, ctx)
    refresh_relay_trust(state, cert.commit.header.time_ms, ctx)
    return apply_settle(state, params, packet, outcome, ack, ctx, certified_payees(cert))


def process_settle_batch(state: KVState, params: BridgeParams, items: list[tuple[Packet, Acknowledgement | None]],
                         certs: list[RelayCertificate], ctx: BlockContext) -> list[Event]:
    """``bridge.settle_batch`` (SPEC §7.10): phase 4 of several packets under one certificate batch, ``certs[i]``
    proving the outcome of ``items[i]`` (ACKED with its ack, or TIMED_OUT without). The checks of
    :func:`validate_settle`, the commit's signatures once; a packet settled already (no commitment) is skipped and
    reported in ``packets_skipped``; anything else wrong fails the whole batch; nothing left to do:
    :class:`ReplayError` before any signature is checked."""
    commit = _batch_commit(certs, len(items))
    todo: list[tuple[Packet, Acknowledgement | None, RelayCertificate, bytes]] = []
    settled: list[int] = []
    seen: set[tuple[str, str, int]] = set()
    for (packet, ack), cert in zip(items, certs, strict=True):
        if packet.src_chain != params.chain_id:
            raise WrongChainError("packet was sent by another chain", expected=params.chain_id, got=packet.src_chain)
        if cert.commit is not commit and cert.commit != commit:
            raise CodecError("a certificate batch has one commit")
        ident = (packet.dst_chain, packet.lane, packet.sequence)
        stored = state.get(commitment_path(*ident))
        if stored is None or ident in seen:
            settled.append(packet.sequence)
            continue
        commitment = packet_commitment(packet)
        if stored != commitment:
            raise InvalidProofError("packet differs from the one committed at its sequence", expected=stored,
                                    got=commitment)
        seen.add(ident)
        todo.append((packet, ack, cert, commitment))
    if not todo:
        p = items[0][0]
        raise ReplayError("every packet of the batch was settled already (or never sent)",
                          got=f"{p.dst_chain}/{p.lane}/{sorted(settled)}")
    trusted = check_relay_trust(state, ctx)
    verify_commit(trusted, params.relay_chain_id, commit)
    outcomes = []
    for packet, ack, cert, commitment in todo:
        outcome = PacketOutcome.TIMED_OUT if ack is None else PacketOutcome.ACKED
        ack_commit = ZERO_COMMITMENT if ack is None else ack_commitment(ack)
        payees = certified_payees(cert)
        verify_record(cert, outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                      encode_outcome(outcome, commitment, ack_commit, payees))
        outcomes.append((outcome, payees))
    refresh_relay_trust(state, commit.header.time_ms, ctx)
    events: list[Event] = []
    for (packet, ack, _, _), (outcome, payees) in zip(todo, outcomes, strict=True):
        events += apply_settle(state, params, packet, outcome, ack, ctx, payees)
    if settled:
        events.append({"type": "packets_skipped", "src": params.chain_id, "dst": items[0][0].dst_chain,
                       "settled_already": sorted(settled)})
    return events


def _refund(state: KVState, params: BridgeParams, packet: Packet) -> None:
    """Give back exactly what :func:`apply_send` took (a right keeps its booking)."""
    if packet.kind is PacketKind.ENERGY:
        e = decode_energy(packet.payload)
        if _is_returning_voucher(e.denom, packet.lane, packet.dst_chain):
            state.set_int(supply_path(e.denom), state.get_int(supply_path(e.denom)) + e.amount_wh)
        else:
            _sub_escrow(state, packet.dst_chain, packet.lane, e.denom, e.amount_wh)
        state.add_balance(packet.sender, e.denom, e.amount_wh)
    elif packet.kind is PacketKind.CHARGING_RIGHT:
        c = decode_charging_right(packet.payload)
        if is_returning(c.right_id, packet.lane, packet.dst_chain):
            state.delete(burned_right_path(c.right_id))
        state.set_json(right_path(c.right_id), right_record(c, packet.sender))


def _complete(state: KVState, params: BridgeParams, packet: Packet, ctx: BlockContext) -> None:
    """A success ack: a right that left is no longer booked here (SPEC §2.3 "Bookings")."""
    if packet.kind is not PacketKind.CHARGING_RIGHT:
        return
    c = decode_charging_right(packet.payload)
    if is_returning(c.right_id, packet.lane, packet.dst_chain):
        state.delete(burned_right_path(c.right_id))  # the burn is final
        unbook(state, c.transformer, c.right_id, ctx.timestamp_ms)
        return
    rec = state.get_json(right_path(c.right_id))
    sent = {"chain": packet.dst_chain, "lane": packet.lane, "sequence": packet.sequence}
    # a right that already came back (its return executed before this settlement) is live and booked again
    if rec is not None and rec["owner"] == ESCROW_OWNER and rec.get("escrowed_to") == sent:
        unbook(state, c.transformer, c.right_id, ctx.timestamp_ms)


# --- reports --------------------------------------------------------------------------------------


def supply_report(state: KVState, native_denoms: Iterable[str]) -> dict[str, dict[str, int]]:
    """Escrow per denom, its split per lane, and voucher supply per voucher denom (a full scan: a query).

    ``escrow`` always lists every native denom (0 if nothing is escrowed) and any voucher escrowed on
    a further hop; ``escrow_by_lane`` is keyed ``<counterparty>/<lane>/<denom>``; ``vouchers`` is keyed
    by the voucher's full trace.
    """
    escrow = {d: state.get_int(escrow_path(d)) for d in native_denoms}
    for key, value in state.prefix_items(b"escrow/"):
        escrow[key.decode()[len("escrow/"):]] = int(value)
    by_lane = {key.decode()[len("bridge/escrow/"):]: int(value)
               for key, value in state.prefix_items(b"bridge/escrow/")}
    vouchers = {key.decode()[len("supply/"):]: int(value) for key, value in state.prefix_items(b"supply/")}
    return {"escrow": escrow, "escrow_by_lane": by_lane, "vouchers": vouchers}


# --- ops ------------------------------------------------------------------------------------------


def _args(tx: Tx, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    args = tx.args
    missing = [k for k in required if k not in args]
    if missing:
        raise CodecError(f"{tx.op} lacks arguments", expected=list(required), got=sorted(args))
    extra = set(args) - set(required) - set(optional)
    if extra:
        raise CodecError(f"{tx.op} has unknown arguments", expected=list(required + optional), got=sorted(extra))
    return args


def _str_arg(tx: Tx, args: Mapping[str, Any], name: str) -> str:
    v = args[name]
    if not isinstance(v, str):
        raise CodecError(f"argument {name!r} of {tx.op} must be a string", got=v)
    return v


def _int_arg(tx: Tx, args: Mapping[str, Any], name: str) -> int:
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise CodecError(f"argument {name!r} of {tx.op} must be an integer", got=v)
    return v


def send_request_from_tx(tx: Tx) -> SendRequest:
    """Parse ``bridge.send`` arguments strictly (:class:`CodecError` on a missing, extra or mistyped one)."""
    kind_name = tx.args.get("kind")
    if not isinstance(kind_name, str) or kind_name not in KIND_NAMES:
        raise CodecError("unknown packet kind", expected=sorted(KIND_NAMES), got=kind_name)
    kind = KIND_NAMES[kind_name]
    args = _args(tx, _SEND_ARGS + _KIND_ARGS[kind], (*_KIND_OPTIONAL.get(kind, ()), "fees"))
    base = SendRequest(tx.sender, _str_arg(tx, args, "dst_chain"), _str_arg(tx, args, "lane"), kind,
                       _str_arg(tx, args, "receiver"), _int_arg(tx, args, "timeout_timestamp_ms"),
                       fees=parse_fees(args.get("fees")))
    if kind is PacketKind.ENERGY:
        return replace(base, denom=_str_arg(tx, args, "denom"), amount_wh=_int_arg(tx, args, "amount_wh"))
    if kind is PacketKind.CHARGING_RIGHT:
        return replace(base, right_id=_str_arg(tx, args, "right_id"))
    model = _str_arg(tx, args, "model") if "model" in args else None
    return replace(base, subject=_str_arg(tx, args, "subject"), model=model)


def _batch_list(tx: Tx, args: Mapping[str, Any], name: str) -> list[Any]:
    v = args[name]
    if not isinstance(v, list) or not 1 <= len(v) <= wire.MAX_BATCH_RECORDS:
        raise CodecError(f"argument {name!r} of {tx.op} is a list of 1 .. {wire.MAX_BATCH_RECORDS}",
                         got=len(v) if isinstance(v, list) else type(v).__name__)
    return v


def _packet_arg(tx: Tx, args: Mapping[str, Any]) -> Packet:
    return decode_packet(wire.hex_bytes(args["packet"], "packet"))


def relayer_arg(tx: Tx, args: Mapping[str, Any]) -> str:
    """The optional ``relayer`` of ``bridge.recv`` / ``bridge.recv_batch``: the relay account the ack names
    (SPEC §6.10), ``""`` when absent."""
    v = args.get("relayer", "")
    if v == "":
        return ""
    return check_id("relayer", _str_arg(tx, args, "relayer"))


BridgeOp = Callable[[KVState, Tx, BlockContext], list[Event]]
"""A bridge operation over any :class:`KVState` backend (a Python park's tree, the Fabric chaincode's ledger)."""


def register_bridge_ops(app: App, hooks: BridgeHooks | None = None) -> None:
    """Register ``bridge.send``, ``bridge.recv``, ``bridge.settle``, ``bridge.update_lane``,
    ``bridge.update_relay_validators``,
    ``rights.issue``, ``rights.set_transformer`` and ``rights.set_station`` on ``app`` (arguments in the module
    docstring).

    ``hooks`` plugs in the chain's admission rule and reputation provider (defaults:
    :func:`default_admission`, :func:`default_reputation_provider`). The bridge must have been set up
    in genesis with :func:`init_bridge` for the same chain id as ``app``.
    """
    for name, op in bridge_ops(hooks).items():
        app.register(name, op)


def bridge_ops(hooks: BridgeHooks | None = None) -> dict[str, BridgeOp]:
    """The operations :func:`register_bridge_ops` registers, by name, for a host that runs them itself."""
    h = hooks if hooks is not None else BridgeHooks()

    def op_send(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = send_request_from_tx(tx)
        return process_send(state, _params_for(state, ctx), h, req, ctx)

    def op_recv(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("packet", "certificate"), ("relayer",))
        packet = _packet_arg(tx, args)
        cert = wire.certificate_from_json(args["certificate"])
        return process_recv(state, _params_for(state, ctx), h, packet, cert, ctx, relayer_arg(tx, args))

    def op_settle(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("packet", "certificate"), ("ack",))
        packet = _packet_arg(tx, args)
        cert = wire.certificate_from_json(args["certificate"])
        raw_ack = args.get("ack")
        ack = None if raw_ack is None else decode_ack(wire.hex_bytes(raw_ack, "ack"))
        return process_settle(state, _params_for(state, ctx), packet, cert, ack, ctx)

    def op_recv_batch(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("packets", "certificates"), ("relayer",))
        relayer = relayer_arg(tx, args)
        raw = _batch_list(tx, args, "packets")
        packets = [decode_packet(wire.hex_bytes(v, f"packet {i}")) for i, v in enumerate(raw)]
        certs = wire.certificate_batch_from_json(args["certificates"])
        return process_recv_batch(state, _params_for(state, ctx), h, packets, certs, ctx, relayer)

    def op_settle_batch(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("items", "certificates"))
        items: list[tuple[Packet, Acknowledgement | None]] = []
        for i, item in enumerate(_batch_list(tx, args, "items")):
            if not isinstance(item, dict) or "packet" not in item or set(item) - {"packet", "ack"}:
                raise CodecError(f"item {i} of {tx.op} is {{packet, ack?}}", got=item if isinstance(item, dict)
                                 else type(item).__name__)
            raw_ack = item.get("ack")
            items.append((decode_packet(wire.hex_bytes(item["packet"], f"item {i} packet")),
                          None if raw_ack is None else decode_ack(wire.hex_bytes(raw_ack, f"item {i} ack"))))
        certs = wire.certificate_batch_from_json(args["certificates"])
        return process_settle_batch(state, _params_for(state, ctx), items, certs, ctx)

    def op_update_lane(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("dst_chain", "lane", "config", "certificate"))
        cert = wire.certificate_from_json(args["certificate"])
        return process_lane_update(state, _params_for(state, ctx), _str_arg(tx, args, "dst_chain"),
                                   _str_arg(tx, args, "lane"), wire.hex_bytes(args["config"], "config"), cert, ctx)

    def op_update_relay_validators(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("commit", "new_set"))
        commit = wire.commit_from_json(args["commit"])
        new_set = wire.validator_set_from_json(args["new_set"])
        return process_relay_set_update(state, _params_for(state, ctx), commit, new_set, ctx)

    def op_reset_relay_validators(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("new_set", "height", "time_ms"))
        new_set = wire.validator_set_from_json(args["new_set"])
        return reset_relay_validators(state, _params_for(state, ctx), tx.sender, new_set,
                                      _int_arg(tx, args, "height"), _int_arg(tx, args, "time_ms"), ctx)

    def op_issue_right(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("right_id", "station", "transformer", "power_kw", "slot_start_ms", "slot_end_ms",
                          "owner"))
        params = _params_for(state, ctx)
        _require_operator(params, tx)
        return issue_charging_right(
            state, params, h, _str_arg(tx, args, "right_id"), _str_arg(tx, args, "station"),
            _str_arg(tx, args, "transformer"), _int_arg(tx, args, "power_kw"), _int_arg(tx, args, "slot_start_ms"),
            _int_arg(tx, args, "slot_end_ms"), _str_arg(tx, args, "owner"), ctx)

    def op_set_transformer(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("name", "capacity_kw"))
        _require_operator(_params_for(state, ctx), tx)
        name, capacity = _str_arg(tx, args, "name"), _int_arg(tx, args, "capacity_kw")
        set_transformer(state, name, capacity)
        return [{"type": "transformer_set", "name": name, "capacity_kw": capacity}]

    def op_set_station(state: KVState, tx: Tx, ctx: BlockContext) -> list[Event]:
        args = _args(tx, ("name", "transformer"))
        _require_operator(_params_for(state, ctx), tx)
        name, transformer = _str_arg(tx, args, "name"), _str_arg(tx, args, "transformer")
        set_station(state, name, transformer)
        return [{"type": "station_set", "name": name, "transformer": transformer}]

    return {
        "bridge.send": op_send,
        "bridge.recv": op_recv,
        "bridge.settle": op_settle,
        "bridge.recv_batch": op_recv_batch,
        "bridge.settle_batch": op_settle_batch,
        "bridge.update_lane": op_update_lane,
        "bridge.update_relay_validators": op_update_relay_validators,
        "bridge.reset_relay_validators": op_reset_relay_validators,
        "rights.issue": op_issue_right,
        "rights.set_transformer": op_set_transformer,
        "rights.set_station": op_set_station,
    }


def _require_operator(params: BridgeParams, tx: Tx) -> None:
    if params.rights_operator is None or tx.sender != params.rights_operator:
        raise AuthorizationError(f"{tx.op} is for the rights operator", expected=params.rights_operator,
                                 got=tx.sender)
