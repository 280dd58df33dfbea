"""The Fabric park's bridge chaincode: its functions over a :class:`~chains.fabric.chaincode.ledger.Stub` (SPEC.md
§6.3, §6.5, §6.6, §8.7; docs/architecture.md §3, "Fabric park").

The rules are the Python parks' own: energy and every bridge operation's framing run :mod:`chains.common.bridge`
unchanged over :class:`~chains.fabric.chaincode.ledger.StubState`, so phase 1 (escrow or burn, lane sequence,
commitment), phase 3 (relay certificate, receipt, success or error ack), phase 4 settlement, lane-config and relay
validator-set updates, the denomination traces of vouchers and the state paths of SPEC.md §5 are the same on all
four parks. Charging rights (multi-hop traces, admission by the park's transformer registry) and reputation
(certified participants' standing) run the issue 12 rules in :mod:`chains.fabric.chaincode.assets`, with the
relay-certificate checks of phases 3 and 4 still the shared bridge's (``validate_recv``, ``validate_settle``).
What is Fabric's own is here: who the sender is (the proposal's creator,
:mod:`chains.fabric.chaincode.identity`), what time it is (the endorsing peer's chaincode clock, below), the
genesis transaction, the timeout sentinel, the attestation query and the mapping of refusals to responses.
Pure apart from the stub: the clock is an argument (:meth:`BridgeContract.invoke` ``now_ms``), read by
:mod:`chains.fabric.chaincode.server`.

Functions
---------

Arguments are Fabric chaincode args (UTF-8 strings). A submit function takes one JSON object: the same
arguments, with the same strict parsing, as the Python parks' ops of the same name (:mod:`chains.common.bridge`,
:func:`chains.common.tx.op_transfer`). Submit functions are endorsed by both organisations
(:data:`~chains.fabric.consts.ENDORSEMENT_POLICY`) and committed; query functions are evaluated and write
nothing. Every function but ``init_bridge``, ``attest`` and ``ping`` needs the bridge initialised.

=========================  ======  ====================================================================
function                   kind    arguments -> response payload
=========================  ======  ====================================================================
``init_bridge``            submit  genesis JSON (below), once -> events
``register``               submit  none: creates the creator's account (nothing if it exists) -> events
``transfer``               submit  ``{to, denom, amount_wh}`` from the creator's account -> events
``send``                   submit  ``bridge.send`` args and ``fees?`` (below, "Fees"); the sender is the creator's
                                   account -> events
``recv``                   submit  ``{packet, certificate, relayer?}`` (``bridge.recv``; the ack names ``relayer``)
                                   -> events
``settle``                 submit  ``{packet, certificate, ack?}`` (``bridge.settle``; pays the fees) -> events
``timeout_receipt``        submit  ``{packet, certificate}``: write :data:`~chains.fabric.consts.TIMEOUT_RECEIPT`
                                   (below) -> events
``update_lane``            submit  ``bridge.update_lane`` args -> events
``update_relay_validators`` submit ``bridge.update_relay_validators`` args -> events
``reset_relay_validators`` submit  ``bridge.reset_relay_validators`` args ``{new_set, height, time_ms}``: the relay
                                   admin (an operator identity; default the rights operator) replaces an expired
                                   relay set (protocol SPEC §7.8) -> events
``issue_right``            submit  ``{right_id, station, transformer, power_kw, slot_start_ms, slot_end_ms, owner}``:
                                   a home right through admission; the park operator's -> events
``set_transformer``        submit  ``{name, capacity_kw}``; the park operator's -> events
``set_station``            submit  ``{name, transformer}``; the park operator's -> events
``transfer_right``         submit  ``{right_id, to}`` from the creator, the right's owner -> events
``set_standing``           submit  ``{account, certified, score}``: a participant's standing; the operator's -> events
``certify``                submit  ``{account, src_chain, subject, model}``: certify on imported reputation; the
                                   operator's -> events
``ping``                   submit  none: reads and writes nothing -> ``[]``: a relayer's keepalive, so a quiet
                                   channel still cuts a block before the relay's client of it expires (SPEC §8.7)
``attest``                 query   ``key_hex, nonce_hex`` -> attestation statement (below)
``whoami``                 query   none -> ``{account, registered}``
``balance``                query   ``account, denom`` -> ``{account, denom, amount_wh}``
``packet``                 query   ``dst, lane, sequence`` -> ``{packet, commitment}`` (hex or null)
``next_sequence``          query   ``dst, lane`` -> ``{next_sequence}``
``receipt``                query   ``src, lane, sequence`` -> ``{receipt, ack, timed_out}``
``lane``                   query   ``counterparty, lane`` -> ``{configured, capacities, relay_height}``
``config``                 query   none -> ``{config, relay_validators, fee_denom}`` (their stored JSON; the fee
                                   denom is the market's currency)
``fees``                   query   ``dst, lane, sequence`` -> ``{denom, escrow, record}``: the fee denom, what the fee
                                   escrow holds, the packet's fee record (null: none, or settled)
``relay_trust``            query   none -> ``{validators, update_height, trusted_time_ms, trusting_period_ms,
                                   expires_at_ms, now_ms}``: the relay set's trust (protocol SPEC §7.8), for relayers
``supply``                 query   none -> ``{escrow, escrow_by_lane, vouchers, issued}``
``right``                  query   ``right_id`` -> ``{right_id, right, burned}`` (records or null)
``rights``                 query   ``owner`` (empty: all) -> ``{rights: [{right_id, ...record}]}``
``transformer``            query   ``name`` -> ``{name, transformer, stations, bookings}`` (bookings not ended)
``standing``               query   ``account`` -> ``{account, standing, model}``
``imported_reputation``    query   ``src, subject, model`` -> ``{imported}`` (record or null)
``scan``                   query   ``prefix``, one of :data:`SCAN_PREFIXES` -> ``{prefix, items: {path: value}}``
                                   (at most 10 000): the records an audit reads (``make demo``'s exactly-once check)
``market.*``                submit  the park's market (:mod:`chains.fabric.chaincode.market`, chains/fabric/SPEC.md
                   /query  §F1): one JSON object each; some read transient data and private collections
``org.hyperledger.fabric:get_metadata``
                           query   none -> ``{contracts: {bridge: {name, transactions: [{name, tags}]}}, info}``:
                                   the contract-API convention, so Fabric tooling (and a launcher's readiness
                                   query) can list the functions
=========================  ======  ====================================================================

Response payloads are canonical JSON (:func:`chains.common.state.canonical_json`) except ``attest``'s. A submit
function's payload is the list of the events it emitted, and the same list is its chaincode event
(``stub.set_event``; Fabric keeps one event per transaction): the event's name is the first event's ``type``
(``send_packet``, ``write_ack``, ``settle_packet``, ``timeout_receipt``, ``lane_config_updated``,
``relay_validators_updated``, ``transfer``, ``account_registered``, ``bridge_initialised``, ...) and its payload
the canonical JSON list, each event exactly as :mod:`chains.common.bridge` builds it on the Python parks.

Fees (protocol SPEC §6.10)
--------------------------

A ``send`` may carry ``fees: {verify?, execute?, confirm?}`` (:func:`chains.common.fees.parse_fees`: integers
``0..2^64-1``, unknown keys refused, ``null`` or absent: none) in the park's **fee denomination**, the market's
currency (genesis ``market.currency``, default the first native denom, kept in ``market/config``). After every other
check of the send, the sender must hold the fees on top of what the packet takes of that denom (energy of the
currency itself: ``amount_wh`` plus the fees), else ``funds.insufficient``; then the fees move to the account
:data:`~chains.common.fees.FEE_ESCROW` and the fee record is stored at ``fees/<dst>/<lane>/<sequence>`` with the
sender as payer, and the ``send_packet`` event carries ``fees: {verify, execute, confirm, denom}`` (absent without
fees). Every kind may carry fees; the packet and its commitment are the same with or without them.

``recv`` takes an optional ``relayer`` (a relay account id, :func:`protocol.types.check_id`; ``codec.invalid``
otherwise, nothing written): the ack it writes, receipt and event, is ``(status, code, result, relayer)``, the
four-field form of protocol SPEC §2.4 (three fields without it).

``settle`` decodes the payees from the certificate's value (:func:`protocol.codec.decode_outcome_record`; a value
that is not an outcome record is a wrong value, ``proof.invalid``, as on the Python parks) and verifies the
certificate against the record rebuilt with them (:func:`validate_settle`), so payees other than the relay certified
are ``proof.invalid``. In the same
transaction as the settlement, :func:`chains.common.fees.settle_fees` pays each step's fee to its payee when the
payee is an account id of this park (:func:`~chains.fabric.chaincode.identity.is_account_id`) and refunds it to the
payer otherwise (an empty payee, a name of another park, a timed-out packet's execute fee), deletes the fee record,
and adds ``fee_paid`` / ``fee_refunded`` events after ``settle_packet``. An error ack pays like a success ack; a
timeout (``settle`` without ``ack``) refunds the execute fee.

Genesis
-------

``init_bridge`` takes the park's genesis, once (a second call: :class:`~protocol.errors.ReplayError`)::

    {"chain_id": "fabric-park",
     "accounts": ["OperatorMSP:operator", "SalesMSP:alice"],        # account ids registered at genesis
     "balances": [{"account": "SalesMSP:alice", "denom": "kWh", "amount": 1000000}],   # Wh, native only
     "bridge": {...},          # the Python parks' bridge section (chains.common.genesis.bridge_section), plus
                               # "stations": {name: transformer}; "rights_operator" is an OperatorMSP account
     "market": {"certify_min_score": 5000, "currency": "kWh"}}   # optional (assets module docstring; the
                                                                   # market's currency: a native denom, default
                                                                   # the first; chains/fabric/SPEC.md §F1)

The energy token is minted here and nowhere else: a balance may only be of a native denom of the bridge
section, and ``issued/<denom>`` records the total. If the chaincode server was started with a genesis pin
(:class:`BridgeContract` ``genesis_sha256``, env ``PARKRELAY_FABRIC_GENESIS_SHA256``), it endorses only the genesis
argument whose SHA-256 is that pin (:class:`~protocol.errors.AuthorizationError` otherwise): since both
organisations must endorse, the genesis that commits is one both configured. Without a pin the first genesis
submitted wins: acceptable on a devnet, where the launcher initialises the bridge right after the commit.

Time (hazard 2 of SPEC.md §8.7)
-------------------------------

A Fabric transaction's timestamp is chosen by its client, so nothing here reads it. The time every rule sees
(:class:`~chains.common.tx.BlockContext` ``timestamp_ms``) is the **chaincode clock**: the wall clock of the
chaincode server of the organisation whose peer is endorsing, read once per invocation. Phase 1 refuses a
timeout not later than it; phase 3 (``recv``) refuses at or past the timeout (``packet.timeout``), and refuses a
packet whose receipt path holds the sentinel; ``timeout_receipt`` writes the sentinel only once the clock is at
or past the timeout (``packet.timeout`` before), and only if no receipt exists (``packet.replay``). Both ``recv``
and ``timeout_receipt`` read the receipt key, so Fabric's MVCC check lets at most one of a receipt and the
sentinel commit, whatever the clocks say. ``timeout_receipt`` also requires the relay certificate of the
packet's ``relay/verified`` record, as ``recv`` does: the receipt path is keyed by ``(src, lane, sequence)``
only, so without it anyone could time out a sequence with a packet of their own making (a past timeout) and
block the real packet. The clock value is never written to state, so both organisations compute one write set.

A packet the relay never verified (SPEC §6.6, *unverified timeout*) has no such certificate, so it never gets a
sentinel; nor can it ever execute here, since ``recv`` needs that same certificate and the relay certifies no
``relay/verified`` record once it has recorded TIMED_OUT. For it, an attestation of the receipt path's absence
with ``time_ms`` at or past the timeout is what this chaincode can give, and it is sound for that path only.

**Clock skew.** The organisations' clocks may differ by some skew δ (keep them NTP-synchronised; δ ≤ 1 s is
the working assumption, and packet timeouts are minutes). Safety does not depend on δ: ``recv`` needs both
clocks before the timeout, the sentinel needs both at or past it, and MVCC lets only one commit. Within δ of
a boundary the two endorsements differ (one org refuses, or prunes a different set of ended bookings): the
client cannot assemble a transaction that satisfies the policy, and retries (the adapter classifies an
endorsement mismatch as retryable); once both clocks are past the boundary they agree. The decisions that
read the clock: send (timeout, charging-right slot), recv, timeout_receipt, issue_right (slot start), and
the pruning of ended bookings. Fabric gives a chaincode no block height: ``BlockContext.height`` is 0 (it only
stamps imported reputation records).

Attestations (hazard 3)
-----------------------

``attest(key_hex, nonce_hex)`` is a read-only query, evaluated on one peer per organisation and never
submitted. ``key_hex`` is a protocol path (1..:data:`MAX_ATTEST_KEY_BYTES` bytes), ``nonce_hex`` the
verifier's freshness nonce (0..:data:`MAX_NONCE_BYTES` bytes), both lowercase hex. The response payload is
the statement, canonical JSON (sorted keys, no spaces, ASCII)::

    {"chaincode":"bridge","channel":<channel id>,"key":<hex>,"nonce":<hex>,"time_ms":<chaincode clock ms>,
     "v":1,"value":<hex of the committed value, or null>}

signed by the peer in its proposal response; :mod:`chains.fabric.attestation` verifies it.

Errors
------

A refusal is a :class:`~protocol.errors.ProtocolError`; the chaincode answers it with status 500 and the
message ``str(error)``: ``"[<code>] <message> (expected <e>, got <g>)"`` (cut at :data:`MAX_ERROR_MESSAGE`
characters), the format of every parkrelay error. :func:`parse_error_message` reads the code back; the
adapter maps it to its class through :data:`protocol.errors.DISPOSITIONS`. Anything else raised (a bug, or
the peer connection failing mid-call) is answered with ``[protocol] internal error ...``. A refused invocation
writes nothing and emits no event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chains.common import bridge, wire
from chains.common.bridge import (
    CONFIG_KEY,
    DEFAULT_MAX_CERTIFICATE_AGE_MS,
    DEFAULT_TRUSTING_PERIOD_MS,
    RELAY_SET_KEY,
    BridgeHooks,
    BridgeOp,
    BridgeParams,
    bridge_ops,
    check_max_certificate_age,
    check_relay_trust,
    check_trusting_period,
    init_bridge,
    lane_capacities,
    lane_configured,
    load_params,
    packet_path,
    refresh_relay_trust,
    relay_trust,
    send_request_from_tx,
    supply_report,
    validate_recv,
)
from chains.common.fees import FEE_ESCROW, Fees, escrow_fees, fee_record, parse_fees, settle_fees
from chains.common.jsonrpc import RequestError, decode_json
from chains.common.state import KVState, canonical_json
from chains.common.tx import BlockContext, Tx, account_path, op_transfer
from chains.fabric.chaincode import assets, market
from chains.fabric.chaincode.identity import check_account_id, creator_account, is_account_id
from chains.fabric.chaincode.ledger import Stub, StubState, fabric_key
from chains.fabric.consts import BRIDGE_CHAINCODE, OPERATOR_MSP, TIMEOUT_RECEIPT
from protocol.certificate import RelayCertificate, verify_certificate
from protocol.codec import (
    MAX_STRING,
    decode_ack,
    decode_energy,
    decode_packet,
    packet_commitment,
)
from protocol.errors import (
    AuthorizationError,
    CodecError,
    InsufficientFundsError,
    LaneError,
    ProtocolError,
    ReplayError,
    TimeoutExpiredError,
    WrongChainError,
)
from protocol.paths import ack_path, commitment_path, next_send_path, receipt_path, verified_path
from protocol.types import (
    UINT64_MAX,
    Acknowledgement,
    ChainId,
    FeePayees,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    check_id,
)

__all__ = [
    "MAX_ARG_BYTES",
    "MAX_ATTEST_KEY_BYTES",
    "MAX_ERROR_MESSAGE",
    "MAX_NONCE_BYTES",
    "STATEMENT_VERSION",
    "STATUS_ERROR",
    "STATUS_OK",
    "BridgeContract",
    "Response",
    "apply_timeout_receipt",
    "attestation_statement",
    "parse_error_message",
    "validate_settle",
    "validate_timeout_receipt",
]

log = logging.getLogger("parkrelay.fabric.chaincode")

STATUS_OK = 200
"""Fabric's shim.OK: the peer endorses the response."""
STATUS_ERROR = 500
"""Fabric's shim.ERROR: the peer endorses nothing and returns the message to the client."""

MAX_ARGS = 4
"""Most chaincode args (the function name included) any function takes."""
MAX_ARG_BYTES = 512 * 1024
"""Largest single argument: a relay certificate of 256 validators is ~100 KiB of JSON."""
MAX_ATTEST_KEY_BYTES = 512
"""Longest key ``attest`` reads: the longest the relay's Fabric client accepts in a statement (a §5 path of a
packet is under 200 bytes)."""
MAX_NONCE_BYTES = 64
"""Longest ``attest`` nonce."""
MAX_ERROR_MESSAGE = 2048
"""Longest error message returned (the code always fits)."""
STATEMENT_VERSION = 1
"""``v`` of the attestation statement."""

METADATA_FUNCTION = "org.hyperledger.fabric:get_metadata"
"""The contract-API system function that lists a chaincode's functions."""

ISSUED_PREFIX = "issued/"
"""``issued/<denom>``: the native supply minted at genesis (decimal Wh)."""

SCAN_PREFIXES = ("rights/", "rights_burned/", "bookings/", "transformers/", "stations/", "packets/", "acks/",
                 "standing/", "imported_reputation/", "market/", "fees/")
"""What ``scan`` lists: the records an audit of the assets reads (each right exactly once, bookings within capacity,
packets in flight and their acks, the fee records of the packets not settled)."""
_RIGHT_FIELDS = ("right_id", "station", "transformer", "power_kw", "slot_start_ms", "slot_end_ms", "owner")
_GENESIS_KEYS = frozenset({"chain_id", "accounts", "balances", "bridge", "market"})
_SECTION_REQUIRED = ("relay_chain_id", "relay_validators", "lanes")
_SECTION_OPTIONAL = ("native_denoms", "rights_operator", "transformers", "stations", "trusting_period_ms",
                     "trusted_time_ms", "relay_admin", "max_certificate_age_ms")
_UINT_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_ERROR_RE = re.compile(r"\[([a-z0-9._]+)\] (.*)", re.DOTALL)
_HEX_RE = re.compile(r"(?:[0-9a-f]{2})*")

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """What the chaincode answers the peer."""

    status: int
    """:data:`STATUS_OK` or :data:`STATUS_ERROR`."""
    payload: bytes = b""
    """The function's result (empty on an error)."""
    message: str = ""
    """On an error: ``[<code>] <message>``."""

    @property
    def code(self) -> str | None:
        """The stable error code of an error response (None on success)."""
        return None if self.status < 400 else parse_error_message(self.message)[0]


def parse_error_message(message: str) -> tuple[str, str]:
    """``(code, text)`` of a chaincode error message; an unrecognised message is ``("remote", message)``."""
    m = _ERROR_RE.fullmatch(message)
    return (m.group(1), m.group(2)) if m else ("remote", message)


def attestation_statement(channel: str, key: bytes, nonce: bytes, time_ms: int, value: bytes | None) -> bytes:
    """The canonical bytes ``attest`` answers (module docstring, "Attestations")."""
    statement = {"chaincode": BRIDGE_CHAINCODE, "channel": channel, "key": key.hex(), "nonce": nonce.hex(),
                 "time_ms": time_ms, "v": STATEMENT_VERSION, "value": None if value is None else value.hex()}
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --- one invocation -------------------------------------------------------------------------------


@dataclass
class _Call:
    """One invocation: its stub, its state view, its clock, its arguments."""

    stub: Stub
    state: StubState
    now_ms: int
    args: list[str]
    raw_args: list[bytes]
    events: list[Event] = field(default_factory=list)
    private_writes: list[tuple[str, str, bytes]] = field(default_factory=list)
    """Private data writes ``(collection, key, value)``, handed to the stub after the state's (market)."""

    def sender(self) -> str:
        """The creator's account (:mod:`~chains.fabric.chaincode.identity`)."""
        return creator_account(self.stub.get_creator())

    def ctx(self, chain_id: str) -> BlockContext:
        return BlockContext(chain_id, 0, self.now_ms, "")


Handler = Callable[["BridgeContract", _Call], bytes]


@dataclass(frozen=True, slots=True)
class _Function:
    handler: Handler
    arity: int
    submit: bool


class BridgeContract:
    """The bridge chaincode's functions (module docstring). One instance serves every invocation; it holds no
    state between them."""

    def __init__(self, *, genesis_sha256: bytes | None = None, hooks: BridgeHooks | None = None,
                 operator_msp: str = OPERATOR_MSP) -> None:
        if genesis_sha256 is not None and len(genesis_sha256) != 32:
            raise ValueError("genesis_sha256 is a 32-byte SHA-256 digest")
        self.genesis_sha256 = genesis_sha256
        """If set, the only genesis ``init_bridge`` endorses."""
        self.operator_msp = operator_msp
        """The park operator's MSP: the only one whose identities write the registry, issue rights and set
        standing (:func:`~chains.fabric.chaincode.assets.require_operator`)."""
        self.hooks = hooks if hooks is not None else BridgeHooks()
        """The park's admission rule and reputation provider for energy's shared rules."""
        self.ops: dict[str, BridgeOp] = bridge_ops(self.hooks)

    def invoke(self, stub: Stub, args: Sequence[bytes], now_ms: int) -> Response:
        """Run the function ``args[0]`` with ``args[1:]`` at chaincode clock ``now_ms``; write and emit only on
        success."""
        state = StubState(stub)
        try:
            fn, call = self._parse(stub, state, args, now_ms)
            payload = fn.handler(self, call)
            if fn.submit:
                state.flush()
                for collection, key, value in call.private_writes:
                    stub.put_private_data(collection, key, value)
                if call.events:
                    stub.set_event(str(call.events[0]["type"]), canonical_json(call.events))
            return Response(STATUS_OK, payload)
        except ProtocolError as exc:
            return Response(STATUS_ERROR, message=str(exc)[:MAX_ERROR_MESSAGE])
        except Exception as exc:  # a bug, or the peer link failing: refuse, write nothing, keep serving
            log.exception("bridge chaincode: internal error")
            return Response(STATUS_ERROR, message=f"[protocol] internal error in the bridge chaincode: "
                                                  f"{type(exc).__name__}"[:MAX_ERROR_MESSAGE])

    def _parse(self, stub: Stub, state: StubState, args: Sequence[bytes],
               now_ms: int) -> tuple[_Function, _Call]:
        if not args:
            raise CodecError("no function named", expected=sorted(FUNCTIONS))
        if len(args) > MAX_ARGS:
            raise CodecError("too many arguments", expected=f"<= {MAX_ARGS}", got=len(args))
        texts: list[str] = []
        for i, raw in enumerate(args):
            if len(raw) > MAX_ARG_BYTES:
                raise CodecError(f"argument {i} too large", expected=f"<= {MAX_ARG_BYTES} bytes", got=len(raw))
            try:
                texts.append(bytes(raw).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise CodecError(f"argument {i} is not UTF-8", got=f"byte {exc.start}") from exc
        name = texts[0]
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise CodecError("unknown function", expected=sorted(FUNCTIONS), got=name[:80])
        if len(texts) - 1 != fn.arity:
            raise CodecError(f"{name} takes {fn.arity} argument(s)", expected=fn.arity, got=len(texts) - 1)
        return fn, _Call(stub, state, now_ms, texts[1:], [bytes(a) for a in args[1:]])

    # -- submit: genesis and accounts ------------------------------------------------------------

    def _init_bridge(self, call: _Call) -> bytes:
        state = call.state
        if state.get(CONFIG_KEY) is not None:
            raise ReplayError("bridge already initialised")
        digest = hashlib.sha256(call.raw_args[0]).digest()
        if self.genesis_sha256 is not None and digest != self.genesis_sha256:
            raise AuthorizationError("genesis differs from the one this organisation pinned",
                                     expected=self.genesis_sha256.hex(), got=digest.hex())
        genesis = _json_object(call.args[0], "genesis")
        unknown = set(genesis) - _GENESIS_KEYS
        if unknown or "chain_id" not in genesis or "bridge" not in genesis:
            raise CodecError("genesis is {chain_id, bridge, accounts?, balances?, market?}",
                             expected=sorted(_GENESIS_KEYS),
                             got=sorted(genesis))
        chain_id = check_id("chain", genesis["chain_id"])
        section = _json_fields(genesis["bridge"], "genesis bridge", _SECTION_REQUIRED, _SECTION_OPTIONAL)
        accounts = _list(genesis.get("accounts", []), "genesis accounts")
        account_ids = [check_account_id(a, "genesis account") for a in accounts]
        if len(set(account_ids)) != len(account_ids):
            raise CodecError("genesis accounts repeat an account", got=sorted(account_ids))
        native = _list(section.get("native_denoms", ["kWh"]), "native_denoms")
        if not all(isinstance(d, str) for d in native):
            raise CodecError("native_denoms are strings", got=native)
        operator = section.get("rights_operator")
        if operator is not None:
            check_account_id(operator, "rights_operator")
            if operator.split(":", 1)[0] != self.operator_msp:
                raise CodecError("the rights operator is an identity of the park operator's MSP",
                                 expected=f"{self.operator_msp}:<name>", got=operator)
        relay_admin = section.get("relay_admin")
        if relay_admin is not None:
            check_account_id(relay_admin, "relay_admin")
            if relay_admin.split(":", 1)[0] != self.operator_msp:
                raise CodecError("the relay admin is an identity of the park operator's MSP",
                                 expected=f"{self.operator_msp}:<name>", got=relay_admin)
        period = check_trusting_period(section.get("trusting_period_ms", DEFAULT_TRUSTING_PERIOD_MS))
        max_age = check_max_certificate_age(section.get("max_certificate_age_ms", DEFAULT_MAX_CERTIFICATE_AGE_MS))
        trusted_time = section.get("trusted_time_ms")
        if trusted_time is not None and (isinstance(trusted_time, bool) or not isinstance(trusted_time, int)
                                         or not 0 <= trusted_time <= UINT64_MAX):
            raise CodecError("trusted_time_ms is a uint64 (ms)", got=trusted_time)
        transformers = section.get("transformers") or {}
        if not isinstance(transformers, dict):
            raise CodecError("transformers are {name: capacity_kw}", got=type(transformers).__name__)
        stations = section.get("stations") or {}
        if not isinstance(stations, dict):
            raise CodecError("stations are {name: transformer}", got=type(stations).__name__)
        market_section = _json_fields(genesis.get("market", {}), "genesis market", (),
                                      ("certify_min_score", "currency"))
        min_score = market_section.get("certify_min_score", assets.DEFAULT_CERTIFY_MIN_SCORE)
        if isinstance(min_score, bool) or not isinstance(min_score, int) or not 0 <= min_score <= assets.MAX_SCORE:
            raise CodecError(f"certify_min_score is basis points 0..{assets.MAX_SCORE}", got=min_score)
        currency = market_section.get("currency", native[0] if native else "kWh")
        if currency not in native:
            raise CodecError("the market's currency is a native denom", expected=native, got=currency)
        lanes = _list(section["lanes"], "lanes")
        balances: list[tuple[str, str, int]] = []
        for entry in _list(genesis.get("balances", []), "genesis balances"):
            b = _json_fields(entry, "genesis balance", ("account", "denom", "amount"))
            account, denom, amount = b["account"], b["denom"], b["amount"]
            if account not in account_ids:
                raise CodecError("a genesis balance belongs to a genesis account", expected=account_ids, got=account)
            if denom not in native:
                raise CodecError("genesis mints native denoms only", expected=native, got=denom)
            if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= UINT64_MAX:
                raise CodecError("a genesis balance is a positive integer (Wh)", got=amount)
            balances.append((account, denom, amount))
        with state.atomic():
            init_bridge(state, chain_id, check_id("relay chain", section["relay_chain_id"]),
                        wire.validator_set_from_json(section["relay_validators"]), native, lanes,
                        rights_operator=operator, transformers=transformers, trusting_period_ms=period,
                        trusted_time_ms=trusted_time, relay_admin=relay_admin, max_certificate_age_ms=max_age)
            for name, capacity in transformers.items():
                assets.set_transformer(state, name, capacity)  # names without '/', as the registry writes them
            for name, transformer in stations.items():
                assets.set_station(state, name, transformer)
            state.set_json(assets.MARKET_CONFIG_KEY, {"certify_min_score": min_score, "currency": currency})
            for account in account_ids:
                _register(state, account)
            issued: dict[str, int] = {}
            for account, denom, amount in balances:
                state.add_balance(account, denom, amount)
                issued[denom] = issued.get(denom, 0) + amount
            for denom, total in issued.items():
                if total > UINT64_MAX:
                    raise CodecError("genesis mints more than a uint64 of a denom", got=denom)
                state.set_int(f"{ISSUED_PREFIX}{denom}".encode(), total)
        call.events.append({"type": "bridge_initialised", "chain_id": chain_id,
                            "relay_chain_id": section["relay_chain_id"], "genesis_sha256": digest.hex(),
                            "accounts": len(account_ids)})
        return canonical_json(call.events)

    def _register(self, call: _Call) -> bytes:
        _require_init(call.state)
        account = call.sender()
        if call.state.get(account_path(account)) is None:
            _register(call.state, account)
            call.events.append({"type": "account_registered", "account": account})
        return canonical_json(call.events)

    def _transfer(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        tx = Tx(params.chain_id, call.sender(), 0, "transfer", _json_object(call.args[0], "transfer arguments"))
        call.events += op_transfer(call.state, tx, call.ctx(params.chain_id))
        return canonical_json(call.events)

    # -- submit: the bridge ----------------------------------------------------------------------

    def _op(self, call: _Call, op: str, *, needs_sender: bool) -> bytes:
        params = _require_init(call.state)
        sender = call.sender() if needs_sender else ""
        tx = Tx(params.chain_id, sender, 0, op, _json_object(call.args[0], f"{op} arguments"))
        call.events += self.ops[op](call.state, tx, call.ctx(params.chain_id))
        return canonical_json(call.events)

    def _send(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        args = _json_object(call.args[0], "bridge.send arguments")
        fees = parse_fees(args.pop("fees", None))  # the relay fees are the chaincode's (module docstring, "Fees")
        tx = Tx(params.chain_id, call.sender(), 0, "bridge.send", args)
        req = send_request_from_tx(tx)  # the Python parks' strict parsing: a score in the arguments is refused
        ctx = call.ctx(params.chain_id)
        if req.kind is PacketKind.ENERGY:
            packet = bridge.validate_send(call.state, params, self.hooks, req, ctx)
        else:
            packet = assets.validate_send(call.state, params, req, call.now_ms)
        denom = assets.market_currency(call.state, params)
        check_fee_funds(call.state, packet, fees, denom)
        # every check passed: the writes, the fees first (a refusal writes nothing in any case: StubState.flush)
        fee_field = escrow_fees(call.state, denom, packet, fees)
        if req.kind is PacketKind.ENERGY:
            events = bridge.apply_send(call.state, params, packet)
        else:
            events = assets.apply_send(call.state, packet)
        if fee_field is not None:
            events[0]["fees"] = fee_field
        call.events += events
        return canonical_json(call.events)

    def _recv(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        args = _json_fields(_json_object(call.args[0], "recv arguments"), "recv arguments",
                            ("packet", "certificate"), ("relayer",))
        relayer = relayer_arg(args.get("relayer", ""))
        packet = decode_packet(wire.hex_bytes(args["packet"], "packet"))
        cert = wire.certificate_from_json(args["certificate"])
        if call.state.get(receipt_path(packet.src_chain, packet.lane, packet.sequence)) == TIMEOUT_RECEIPT:
            raise TimeoutExpiredError("packet timed out here: its receipt path holds the timeout sentinel",
                                      expected="no receipt", got=_packet_id(packet))
        ctx = call.ctx(params.chain_id)
        if packet.kind is PacketKind.ENERGY:
            call.events += bridge.process_recv(call.state, params, self.hooks, packet, cert, ctx, relayer)
            return canonical_json(call.events)
        validate_recv(call.state, params, packet, cert, ctx)
        refresh_relay_trust(call.state, cert.commit.header.time_ms, ctx)
        call.events += assets.apply_recv(call.state, params, packet, ctx, relayer)
        return canonical_json(call.events)

    def _settle(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        args = _json_fields(_json_object(call.args[0], "settle arguments"), "settle arguments",
                            ("packet", "certificate"), ("ack",))
        packet = decode_packet(wire.hex_bytes(args["packet"], "packet"))
        cert = wire.certificate_from_json(args["certificate"])
        raw_ack = args.get("ack")
        ack = None if raw_ack is None else decode_ack(wire.hex_bytes(raw_ack, "ack"))
        ctx = call.ctx(params.chain_id)
        outcome, payees = validate_settle(call.state, params, packet, cert, ack, ctx)
        refresh_relay_trust(call.state, cert.commit.header.time_ms, ctx)
        # the fees first: the shared settlement then finds no fee record to settle by a Python park's account rule
        fee_events = settle_fees(call.state, packet, outcome, payees, is_account_id)
        if packet.kind is PacketKind.ENERGY:
            call.events += bridge.apply_settle(call.state, params, packet, outcome, ack, ctx)
        else:
            refund = outcome is PacketOutcome.TIMED_OUT or ack is None or not ack.success
            assets.settle_asset(call.state, packet, refund, call.now_ms)
            call.events += assets.finish_settle(call.state, packet, outcome, ack, refund)
        call.events += fee_events
        return canonical_json(call.events)

    def _update_lane(self, call: _Call) -> bytes:
        return self._op(call, "bridge.update_lane", needs_sender=False)

    def _update_relay_validators(self, call: _Call) -> bytes:
        return self._op(call, "bridge.update_relay_validators", needs_sender=False)

    def _reset_relay_validators(self, call: _Call) -> bytes:
        return self._op(call, "bridge.reset_relay_validators", needs_sender=True)

    # -- submit: the registry, rights and standing (chains.fabric.chaincode.assets) --------------------

    def _operator_args(self, call: _Call, what: str, required: tuple[str, ...]) -> tuple[BridgeParams, dict[str, Any]]:
        params = _require_init(call.state)
        assets.require_operator(call.stub.get_creator()[0], call.sender(), params, self.operator_msp, what)
        return params, _json_fields(_json_object(call.args[0], f"{what} arguments"), f"{what} arguments", required)

    def _issue_right(self, call: _Call) -> bytes:
        params, a = self._operator_args(call, "issue_right", _RIGHT_FIELDS)
        call.events += assets.issue_right(call.state, params, _str(a, "right_id"), _str(a, "station"),
                                          _str(a, "transformer"), _int(a, "power_kw"), _int(a, "slot_start_ms"),
                                          _int(a, "slot_end_ms"), _str(a, "owner"), call.now_ms)
        return canonical_json(call.events)

    def _set_transformer(self, call: _Call) -> bytes:
        _, a = self._operator_args(call, "set_transformer", ("name", "capacity_kw"))
        call.events += assets.set_transformer(call.state, _str(a, "name"), _int(a, "capacity_kw"))
        return canonical_json(call.events)

    def _set_station(self, call: _Call) -> bytes:
        _, a = self._operator_args(call, "set_station", ("name", "transformer"))
        call.events += assets.set_station(call.state, _str(a, "name"), _str(a, "transformer"))
        return canonical_json(call.events)

    def _set_standing(self, call: _Call) -> bytes:
        _, a = self._operator_args(call, "set_standing", ("account", "certified", "score"))
        call.events += assets.set_standing(call.state, check_account_id(a["account"]), a["certified"], a["score"])
        return canonical_json(call.events)

    def _certify(self, call: _Call) -> bytes:
        _, a = self._operator_args(call, "certify", ("account", "src_chain", "subject", "model"))
        call.events += assets.certify(call.state, check_account_id(a["account"]), _str(a, "src_chain"),
                                      _str(a, "subject"), _str(a, "model"))
        return canonical_json(call.events)

    def _market(self, call: _Call, name: str) -> bytes:
        """A market function (:mod:`chains.fabric.chaincode.market`)."""
        params = _require_init(call.state)
        mc = market.MarketCall(call.stub, call.state, call.now_ms, _json_object(call.args[0], f"{name} arguments"),
                               params, self.operator_msp)
        payload = market.run(market.FUNCTIONS[name], mc)
        call.events += mc.events
        call.private_writes += mc.private_writes
        return payload

    def _transfer_right(self, call: _Call) -> bytes:
        _require_init(call.state)
        a = _json_fields(_json_object(call.args[0], "transfer_right arguments"), "transfer_right arguments",
                         ("right_id", "to"))
        call.events += assets.transfer_right(call.state, call.sender(), _str(a, "right_id"), _str(a, "to"))
        return canonical_json(call.events)

    def _ping(self, call: _Call) -> bytes:
        # no state read or written: concurrent pings never conflict (MVCC), and the block they land in is the point
        return canonical_json(call.events)

    def _timeout_receipt(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        packet, cert = _packet_and_certificate(call.args[0], "timeout_receipt")
        validate_timeout_receipt(call.state, params, packet, cert, call.now_ms)
        refresh_relay_trust(call.state, cert.commit.header.time_ms, call.ctx(params.chain_id))
        call.events += apply_timeout_receipt(call.state, packet)
        return canonical_json(call.events)

    # -- queries ---------------------------------------------------------------------------------

    def _attest(self, call: _Call) -> bytes:
        key = _hex_arg(call.args[0], "attest key", MAX_ATTEST_KEY_BYTES)
        if not key:
            raise CodecError("attest key is empty", expected=f"1..{MAX_ATTEST_KEY_BYTES} bytes", got=0)
        nonce = _hex_arg(call.args[1], "attest nonce", MAX_NONCE_BYTES)
        raw = call.stub.get_state(fabric_key(key))
        return attestation_statement(call.stub.get_channel_id(), key, nonce, call.now_ms,
                                     bytes(raw) if raw else None)

    def _whoami(self, call: _Call) -> bytes:
        account = call.sender()
        return canonical_json({"account": account, "registered": call.state.get(account_path(account)) is not None})

    def _balance(self, call: _Call) -> bytes:
        account = check_account_id(call.args[0])
        denom = _denom_arg(call.args[1])
        return canonical_json({"account": account, "denom": denom, "amount_wh": call.state.balance(account, denom)})

    def _packet(self, call: _Call) -> bytes:
        dst, lane, seq = _id_arg(call.args[0], "dst"), _id_arg(call.args[1], "lane"), _uint_arg(call.args[2])
        raw = call.state.get(packet_path(dst, lane, seq))
        commitment = call.state.get(commitment_path(ChainId(dst), LaneId(lane), seq))
        return canonical_json({"packet": None if raw is None else raw.decode("ascii", "replace"),
                               "commitment": None if commitment is None else commitment.hex()})

    def _next_sequence(self, call: _Call) -> bytes:
        dst, lane = _id_arg(call.args[0], "dst"), _id_arg(call.args[1], "lane")
        return canonical_json({"next_sequence": call.state.get_int(next_send_path(ChainId(dst), LaneId(lane)), 1)})

    def _receipt(self, call: _Call) -> bytes:
        src, lane, seq = _id_arg(call.args[0], "src"), _id_arg(call.args[1], "lane"), _uint_arg(call.args[2])
        receipt = call.state.get(receipt_path(ChainId(src), LaneId(lane), seq))
        ack = call.state.get(ack_path(ChainId(src), LaneId(lane), seq))
        return canonical_json({"receipt": None if receipt is None else receipt.hex(),
                               "ack": None if ack is None else ack.decode("ascii", "replace"),
                               "timed_out": receipt == TIMEOUT_RECEIPT})

    def _lane(self, call: _Call) -> bytes:
        cp, lane = _id_arg(call.args[0], "counterparty"), _id_arg(call.args[1], "lane")
        capacities, height = lane_capacities(call.state, cp, lane)
        return canonical_json({"configured": lane_configured(call.state, cp, lane), "capacities": capacities,
                               "relay_height": height})

    def _relay_trust(self, call: _Call) -> bytes:
        _require_init(call.state)
        return canonical_json({**relay_trust(call.state).to_json(), "now_ms": call.now_ms})

    def _config(self, call: _Call) -> bytes:
        params = _require_init(call.state) if call.state.get(CONFIG_KEY) is not None else None
        return canonical_json({"config": call.state.get_json(CONFIG_KEY),
                               "relay_validators": call.state.get_json(RELAY_SET_KEY),
                               "fee_denom": None if params is None else assets.market_currency(call.state, params)})

    def _fees(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        dst, lane, seq = _id_arg(call.args[0], "dst"), _id_arg(call.args[1], "lane"), _uint_arg(call.args[2])
        denom = assets.market_currency(call.state, params)
        record = fee_record(call.state, dst, lane, seq)
        return canonical_json({"denom": denom, "escrow": call.state.balance(FEE_ESCROW, denom),
                               "record": None if record is None else dict(record)})

    def _metadata(self, call: _Call) -> bytes:
        transactions = [{"name": name, "tags": ["submit" if f.submit else "evaluate"]}
                        for name, f in sorted(FUNCTIONS.items()) if name != METADATA_FUNCTION]
        return canonical_json({"info": {"title": BRIDGE_CHAINCODE, "version": "1"}, "components": {},
                               "contracts": {BRIDGE_CHAINCODE: {"name": BRIDGE_CHAINCODE,
                                                                "transactions": transactions}}})

    def _right(self, call: _Call) -> bytes:
        right_id = _right_id_arg(call.args[0])
        return canonical_json({"right_id": right_id, "right": call.state.get_json(assets.right_path(right_id)),
                               "burned": call.state.get_json(assets.burned_right_path(right_id))})

    def _rights(self, call: _Call) -> bytes:
        owner = call.args[0]
        out = []
        for key, value in call.state.prefix_items(b"rights/"):
            rec = json.loads(value)
            if not owner or rec.get("owner") == owner:
                out.append({"right_id": key.decode()[len("rights/"):], **rec})
        return canonical_json({"rights": out})

    def _transformer(self, call: _Call) -> bytes:
        name = _right_id_arg(call.args[0], "transformer")
        stations = sorted(k.decode()[len("stations/"):] for k, v in call.state.prefix_items(b"stations/")
                          if json.loads(v).get("transformer") == name)
        booked = [b for b in assets.bookings(call.state, name) if int(b["slot_end_ms"]) > call.now_ms]
        return canonical_json({"name": name, "transformer": call.state.get_json(assets.transformer_path(name)),
                               "stations": stations, "bookings": booked})

    def _standing(self, call: _Call) -> bytes:
        account = check_account_id(call.args[0])
        return canonical_json({"account": account, "standing": call.state.get_json(assets.standing_path(account)),
                               "model": assets.STANDING_MODEL})

    def _imported_reputation(self, call: _Call) -> bytes:
        src = _id_arg(call.args[0], "src")
        subject, model = _right_id_arg(call.args[1], "subject"), _right_id_arg(call.args[2], "model")
        return canonical_json({"imported": call.state.get_json(assets.imported_reputation_path(src, subject, model))})

    def _scan(self, call: _Call) -> bytes:
        prefix = call.args[0]
        if prefix not in SCAN_PREFIXES:
            raise CodecError("scan reads the asset records only", expected=list(SCAN_PREFIXES), got=prefix[:80])
        items = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                 for k, v in call.state.prefix_items(prefix.encode())}
        return canonical_json({"prefix": prefix, "items": items})

    def _supply(self, call: _Call) -> bytes:
        params = _require_init(call.state)
        report: dict[str, Any] = supply_report(call.state, params.native_denoms)
        report["issued"] = {k.decode()[len(ISSUED_PREFIX):]: int(v)
                            for k, v in call.state.prefix_items(ISSUED_PREFIX.encode())}
        return canonical_json(report)


FUNCTIONS: dict[str, _Function] = {
    "init_bridge": _Function(BridgeContract._init_bridge, 1, True),
    "register": _Function(BridgeContract._register, 0, True),
    "transfer": _Function(BridgeContract._transfer, 1, True),
    "send": _Function(BridgeContract._send, 1, True),
    "recv": _Function(BridgeContract._recv, 1, True),
    "settle": _Function(BridgeContract._settle, 1, True),
    "timeout_receipt": _Function(BridgeContract._timeout_receipt, 1, True),
    "update_lane": _Function(BridgeContract._update_lane, 1, True),
    "update_relay_validators": _Function(BridgeContract._update_relay_validators, 1, True),
    "reset_relay_validators": _Function(BridgeContract._reset_relay_validators, 1, True),
    "issue_right": _Function(BridgeContract._issue_right, 1, True),
    "set_transformer": _Function(BridgeContract._set_transformer, 1, True),
    "set_station": _Function(BridgeContract._set_station, 1, True),
    "transfer_right": _Function(BridgeContract._transfer_right, 1, True),
    "set_standing": _Function(BridgeContract._set_standing, 1, True),
    "certify": _Function(BridgeContract._certify, 1, True),
    "ping": _Function(BridgeContract._ping, 0, True),
    "attest": _Function(BridgeContract._attest, 2, False),
    "whoami": _Function(BridgeContract._whoami, 0, False),
    "balance": _Function(BridgeContract._balance, 2, False),
    "packet": _Function(BridgeContract._packet, 3, False),
    "next_sequence": _Function(BridgeContract._next_sequence, 2, False),
    "receipt": _Function(BridgeContract._receipt, 3, False),
    "lane": _Function(BridgeContract._lane, 2, False),
    "config": _Function(BridgeContract._config, 0, False),
    "fees": _Function(BridgeContract._fees, 3, False),
    "relay_trust": _Function(BridgeContract._relay_trust, 0, False),
    "supply": _Function(BridgeContract._supply, 0, False),
    "right": _Function(BridgeContract._right, 1, False),
    "rights": _Function(BridgeContract._rights, 1, False),
    "transformer": _Function(BridgeContract._transformer, 1, False),
    "standing": _Function(BridgeContract._standing, 1, False),
    "imported_reputation": _Function(BridgeContract._imported_reputation, 3, False),
    "scan": _Function(BridgeContract._scan, 1, False),
    METADATA_FUNCTION: _Function(BridgeContract._metadata, 0, False),
}


def _market_handler(name: str) -> Handler:
    def handler(self: BridgeContract, call: _Call) -> bytes:
        return self._market(call, name)
    return handler


for _name, _fn in market.FUNCTIONS.items():
    FUNCTIONS[_name] = _Function(_market_handler(_name), 1, _fn.submit)
"""Every function, its argument count (after the name) and whether it is submitted (writes) or queried."""


# --- phase 4 and relay fees (protocol SPEC §6.6, §6.10) -------------------------------------------


def validate_settle(state: KVState, params: BridgeParams, packet: Packet, cert: RelayCertificate,
                    ack: Acknowledgement | None, ctx: BlockContext) -> tuple[PacketOutcome, FeePayees]:
    """Raise unless ``cert`` proves this packet's outcome record (ACKED with ``ack``, or TIMED_OUT if None); the
    outcome and the fee payees the record names. Writes nothing. The Python parks' checks, in their order
    (:func:`chains.common.bridge.validate_settle`): the record is rebuilt with the payees the certificate claims, so
    payees other than the relay certified, or a value that is no outcome record, fail like any other wrong value
    (``proof.invalid``)."""
    outcome = bridge.validate_settle(state, params, packet, cert, ack, ctx)
    return outcome, bridge.certified_payees(cert)


def check_fee_funds(state: KVState, packet: Packet, fees: Fees, denom: str) -> None:
    """``funds.insufficient`` unless the sender holds ``fees`` in the fee denom ``denom`` on top of what the packet
    itself takes of it (energy of that very denom). Writes nothing."""
    if not fees:
        return
    need = fees.total
    if packet.kind is PacketKind.ENERGY:
        e = decode_energy(packet.payload)
        if e.denom == denom:
            need += e.amount_wh
    have = state.balance(packet.sender, denom)
    if have < need:
        raise InsufficientFundsError(f"balance of {packet.sender} in {denom} too small for the packet and its relay "
                                     "fees", expected=f">= {need}", got=have)


def relayer_arg(value: Any) -> str:
    """The optional ``relayer`` of ``recv``: the relay account the ack names (protocol SPEC §6.10), ``""`` when absent
    or empty; anything else but an id (``[a-z0-9][a-z0-9._-]{0,63}``: ``null`` too) is ``codec.invalid``."""
    if value == "":
        return ""
    if not isinstance(value, str):
        raise CodecError("the relayer is a relay account id (a string)", got=type(value).__name__)
    return check_id("relayer", value)


# --- the timeout sentinel (hazard 2) --------------------------------------------------------------


def validate_timeout_receipt(state: KVState, params: BridgeParams, packet: Packet, cert: RelayCertificate,
                             now_ms: int) -> None:
    """Raise unless ``packet`` (certified VERIFIED by ``cert``) has timed out here with no receipt. Writes nothing.

    In order: the packet is for this chain (``packet.wrong_chain``) on a configured lane (``lane.invalid``); its
    receipt path is empty (``packet.replay``: executed, or already timed out); the chaincode clock ``now_ms`` is
    at or past its timeout (``packet.timeout``: not yet); ``cert`` proves ``relay/verified/...`` = its commitment.
    """
    if packet.dst_chain != params.chain_id:
        raise WrongChainError("packet is for another chain", expected=params.chain_id, got=packet.dst_chain)
    if not lane_configured(state, packet.src_chain, packet.lane):
        raise LaneError("lane not configured for the packet's source", expected=f"a lane to {packet.src_chain}",
                        got=packet.lane)
    existing = state.get(receipt_path(packet.src_chain, packet.lane, packet.sequence))
    if existing == TIMEOUT_RECEIPT:
        raise ReplayError("packet already timed out here", expected="no receipt", got=_packet_id(packet))
    if existing is not None:
        raise ReplayError("packet already received: it executed before its timeout", expected="no receipt",
                          got=_packet_id(packet))
    if now_ms < packet.timeout_timestamp_ms:
        raise TimeoutExpiredError("packet has not timed out by this peer's clock",
                                  expected=f">= {packet.timeout_timestamp_ms}", got=now_ms)
    trusted = check_relay_trust(state, BlockContext(params.chain_id, 0, now_ms, ""))
    verify_certificate(trusted, params.relay_chain_id, cert,
                       verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                       packet_commitment(packet))


def apply_timeout_receipt(state: KVState, packet: Packet) -> list[Event]:
    """Write the sentinel at the packet's receipt path. Assumes :func:`validate_timeout_receipt` passed."""
    state.set(receipt_path(packet.src_chain, packet.lane, packet.sequence), TIMEOUT_RECEIPT)
    return [{"type": "timeout_receipt", "src": packet.src_chain, "dst": packet.dst_chain, "lane": packet.lane,
             "sequence": packet.sequence, "kind": packet.kind.name.lower()}]


# --- helpers --------------------------------------------------------------------------------------


def _register(state: KVState, account: str) -> None:
    msp_id, cn = account.split(":", 1)
    state.set_json(account_path(account), {"msp_id": msp_id, "common_name": cn})


def _require_init(state: KVState) -> BridgeParams:
    """The bridge's configuration; ``[protocol] bridge not initialised`` before ``init_bridge``."""
    return load_params(state)


def _packet_id(packet: Packet) -> str:
    return f"{packet.src_chain}/{packet.lane}/{packet.sequence}"


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = decode_json(text, max_bytes=MAX_ARG_BYTES)
    except RequestError as exc:
        raise CodecError(f"{what}: {exc.message}", expected=exc.expected, got=exc.got) from exc
    if not isinstance(value, dict):
        raise CodecError(f"{what} must be a JSON object", got=type(value).__name__)
    return value


def _json_fields(value: Any, what: str, required: tuple[str, ...],
                 optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"{what} must be a JSON object", got=type(value).__name__)
    missing = [k for k in required if k not in value]
    extra = set(value) - set(required) - set(optional)
    if missing or extra:
        raise CodecError(f"{what} has the wrong fields", expected=list(required + optional), got=sorted(value))
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CodecError(f"{what} must be a JSON array", got=type(value).__name__)
    return value


def _packet_and_certificate(text: str, fn: str) -> tuple[Packet, RelayCertificate]:
    args = _json_fields(_json_object(text, f"{fn} arguments"), f"{fn} arguments", ("packet", "certificate"))
    packet = decode_packet(wire.hex_bytes(args["packet"], "packet"))
    return packet, wire.certificate_from_json(args["certificate"])


def _hex_arg(text: str, what: str, max_bytes: int) -> bytes:
    if len(text) > 2 * max_bytes:
        raise CodecError(f"{what} too long", expected=f"<= {max_bytes} bytes", got=len(text) // 2)
    if not _HEX_RE.fullmatch(text):
        raise CodecError(f"{what} must be lowercase hex", got=text[:80])
    return bytes.fromhex(text)


def _id_arg(text: str, what: str) -> str:
    return check_id(what, text)


def _uint_arg(text: str) -> int:
    if not _UINT_RE.fullmatch(text) or int(text) > UINT64_MAX:
        raise CodecError("sequence must be a decimal uint64", got=text[:40])
    return int(text)


def _right_id_arg(text: str, what: str = "right id") -> str:
    if not text or len(text.encode()) > MAX_STRING:
        raise CodecError(f"a {what} is 1..{MAX_STRING} bytes", got=text[:80])
    return text


def _str(args: dict[str, Any], name: str) -> str:
    v = args[name]
    if not isinstance(v, str):
        raise CodecError(f"argument {name!r} must be a string", got=v)
    return v


def _int(args: dict[str, Any], name: str) -> int:
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise CodecError(f"argument {name!r} must be an integer", got=v)
    return v


def _denom_arg(text: str) -> str:
    if not text or len(text.encode()) > MAX_STRING:
        raise CodecError(f"a denom is 1..{MAX_STRING} bytes", got=text[:80])
    return text
