"""The relay chain's transaction operations and their JSON arguments, parsed strictly.

Byte strings are lowercase hex without ``0x``; heights are JSON integers. ``headers`` (optional on
the packet ops) are fed to the light client of the chain the proof is about before the proof is
checked (SPEC §6.4 step 2, §6.6), so a relayer can update and prove in one transaction.

=========================  ==========================================================================
op                          args
=========================  ==========================================================================
``account.register``        ``{pubkey}`` — self-signed by the new account (``sender`` = its name, nonce 0); locks
                            ``min_bond`` from the funds held for the name (SPEC §6.9, :mod:`.bonds`)
``bond.transfer``           ``{to, amount}`` — free bond units to an account, or to a name not registered yet
``account.unbond``          ``{}`` — start the unbonding period (the account relays nothing more)
``account.withdraw``        ``{}`` — after the unbonding period: the bond returns to the balance
``account.bond``            ``{}`` — lock what the bond lacks of ``min_bond`` again (after a withdrawal or a slash)
``account.set_payee``       ``{chain, payee}`` — the account on park ``chain`` its relay fees go to (SPEC §6.10)
``client.update``           ``{chain_id, headers: [hex, ...]}``
``client.misbehaviour``     ``{chain_id, header_a: hex, header_b: hex}`` — or ``{chain_id, branch: [hex, ...]}``:
                            a branch proving conflicting finality (clients with
                            ``check_conflicting_finality``, e.g. DPoS; at most 256 headers)
``client.attest``           ``{chain_id, height, block_hash: hex32, head_height}`` — relay validators only
                            (:mod:`relay.chain.state_machine.attest`)
``packet.verify``           ``{packet: hex, height, proof: hex, headers?: [hex, ...]}``
``packet.verify_batch``     ``{height, items: [{packet: hex, proof: hex}, ...], headers?: [hex, ...]}``
``packet.confirm_ack``      ``{packet: hex, ack: hex, height, proof: hex, headers?: [hex, ...]}``
``packet.confirm_ack_batch`` ``{height, items: [{packet: hex, ack: hex, proof: hex}, ...], headers?: [hex, ...]}``
                            — up to 64 packets of one target at one target height
``packet.confirm_timeout``  ``{packet: hex, height, proof: hex, headers?: [hex, ...],``
                            `` commit_height?, commit_proof?: hex, commit_headers?: [hex, ...]}`` —
                            ``commit_height`` and ``commit_proof`` (together) prove the packet's
                            commitment on its source, so a packet never verified can time out too
                            (SPEC §6.6 unverified timeout); ``commit_headers`` are source headers
``client.create``           ``{chain_id, client_type, init: {...}, gov}``           (governance)
``lane.open``               ``{src, dst, lane, limits: {...}, gov}``                (governance)
``lane.pause``              ``{src, dst, lane, gov}``                               (governance)
``lane.resume``             ``{src, dst, lane, gov}``                               (governance)
``lane.set_limits``         ``{src, dst, lane, limits: {...}, gov}``                (governance)
=========================  ==========================================================================

``gov`` is ``{"nonce": int, "signatures": [{"validator_index": int, "signature": hex64}, ...]}``
(:mod:`relay.chain.state_machine.governance`); ``limits`` is ``{asset: {"capacity": int, "refill_per_s": int}}``
(:mod:`relay.chain.state_machine.lanes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.common.tx import Tx
from protocol.codec import decode_ack
from protocol.errors import CodecError
from protocol.types import Acknowledgement, check_id
from relay.chain.state_machine.clients import MAX_HEADERS
from relay.chain.state_machine.lanes import RateLimit, limits_from_json
from relay.chain.state_machine.packets import MAX_BATCH, CommitProof, PacketRef, decode_packet_ref
from relay.chain.state_machine.records import (
    hex_arg,
    hex_list_arg,
    int_arg,
    json_object,
    list_arg,
    obj_args,
    op_args,
    str_arg,
)

__all__ = [
    "BOND_OPS",
    "GOVERNANCE_OPS",
    "OPS",
    "RELAY_WORK_OPS",
    "ClientUpdateRequest",
    "ConfirmAckBatchRequest",
    "ConfirmAckRequest",
    "ConfirmTimeoutRequest",
    "LaneRequest",
    "MisbehaviourRequest",
    "RegisterFarmerRequest",
    "VerifyRequest",
    "parse_client_create",
    "parse_client_update",
    "parse_confirm_ack",
    "parse_confirm_ack_batch",
    "parse_confirm_timeout",
    "parse_lane",
    "parse_misbehaviour",
    "parse_register_farmer",
    "parse_verify",
]

REGISTER = "account.register"
BOND_TRANSFER = "bond.transfer"
ACCOUNT_UNBOND = "account.unbond"
ACCOUNT_WITHDRAW = "account.withdraw"
ACCOUNT_BOND = "account.bond"
SET_PAYEE = "account.set_payee"
BOND_OPS = (BOND_TRANSFER, ACCOUNT_UNBOND, ACCOUNT_WITHDRAW, ACCOUNT_BOND, SET_PAYEE)
"""The ops that manage an account — its bond (:mod:`.bonds`), its fee payees (:mod:`.fees`): an account sends them
whatever its bond status."""
CLIENT_UPDATE = "client.update"
CLIENT_MISBEHAVIOUR = "client.misbehaviour"
VERIFY = "packet.verify"
VERIFY_BATCH = "packet.verify_batch"
CONFIRM_ACK = "packet.confirm_ack"
CONFIRM_ACK_BATCH = "packet.confirm_ack_batch"
CONFIRM_TIMEOUT = "packet.confirm_timeout"
CLIENT_CREATE = "client.create"
LANE_OPEN = "lane.open"
LANE_PAUSE = "lane.pause"
LANE_RESUME = "lane.resume"
LANE_SET_LIMITS = "lane.set_limits"
CLIENT_RECOVER = "client.recover"
"""Governance: replace a frozen client by a substitute, revoking its chain's in-flight packets (:mod:`.recovery`)."""

GOVERNANCE_OPS = (CLIENT_CREATE, LANE_OPEN, LANE_PAUSE, LANE_RESUME, LANE_SET_LIMITS, CLIENT_RECOVER)
CLIENT_ATTEST = "client.attest"
CLIENT_REGISTER_FARMER = "client.register_farmer"
RELAY_WORK_OPS = (CLIENT_UPDATE, CLIENT_MISBEHAVIOUR, CLIENT_ATTEST, CLIENT_REGISTER_FARMER, VERIFY, VERIFY_BATCH,
                  CONFIRM_ACK, CONFIRM_ACK_BATCH, CONFIRM_TIMEOUT)
"""The relayers' and validators' work: what a bond stands behind (a failure in a block counts, SPEC §6.9)."""
OPS = (REGISTER, *RELAY_WORK_OPS, *GOVERNANCE_OPS, *BOND_OPS)


def _headers(tx: Tx, args: Mapping[str, Any]) -> tuple[bytes, ...]:
    return tuple(hex_list_arg(args, "headers", tx.op, MAX_HEADERS)) if "headers" in args else ()


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """``packet.verify`` or ``packet.verify_batch``."""

    height: int
    """Source height the proofs are against (must be final in the source's client)."""
    refs: tuple[PacketRef, ...]
    """The packets, decoded."""
    proofs: tuple[bytes, ...]
    """Membership proof of each packet's commitment, in order."""
    headers: tuple[bytes, ...]
    """Source headers to feed first."""


def parse_verify(tx: Tx) -> VerifyRequest:
    if tx.op == VERIFY:
        args = op_args(tx, ("packet", "height", "proof"), ("headers",))
        items = [{"packet": args["packet"], "proof": args["proof"]}]
    else:
        args = op_args(tx, ("height", "items"), ("headers",))
        items = list_arg(args, "items", tx.op, MAX_BATCH, minimum=1)
    refs, proofs = [], []
    for i, item in enumerate(items):
        # exactly the two keys: what obj_args returns as it is (the message is built only for it to raise)
        it = item if type(item) is dict and len(item) == 2 and "packet" in item and "proof" in item else \
            obj_args(item, f"item {i} of {tx.op}", ("packet", "proof"))
        refs.append(decode_packet_ref(hex_arg(it, "packet", tx.op)))
        proofs.append(hex_arg(it, "proof", tx.op))
    return VerifyRequest(int_arg(args, "height", tx.op), tuple(refs), tuple(proofs), _headers(tx, args))


@dataclass(frozen=True, slots=True)
class ConfirmAckRequest:
    """``packet.confirm_ack``."""

    ref: PacketRef
    """The packet."""
    ack: Acknowledgement
    """The ack its target wrote."""
    height: int
    """Target height the receipt is proven at."""
    proof: bytes
    """Membership proof of the receipt."""
    headers: tuple[bytes, ...]
    """Target headers to feed first."""


def parse_confirm_ack(tx: Tx) -> ConfirmAckRequest:
    args = op_args(tx, ("packet", "ack", "height", "proof"), ("headers",))
    return ConfirmAckRequest(decode_packet_ref(hex_arg(args, "packet", tx.op)), decode_ack(hex_arg(args, "ack", tx.op)),
                             int_arg(args, "height", tx.op), hex_arg(args, "proof", tx.op), _headers(tx, args))


@dataclass(frozen=True, slots=True)
class ConfirmAckBatchRequest:
    """``packet.confirm_ack_batch``."""

    refs: tuple[PacketRef, ...]
    """The packets, decoded."""
    acks: tuple[Acknowledgement, ...]
    """The ack each one's target wrote."""
    height: int
    """Target height the receipts are proven at."""
    proofs: tuple[bytes, ...]
    """Membership proof of each receipt, in order."""
    headers: tuple[bytes, ...]
    """Target headers to feed first."""


def parse_confirm_ack_batch(tx: Tx) -> ConfirmAckBatchRequest:
    args = op_args(tx, ("height", "items"), ("headers",))
    refs, acks, proofs = [], [], []
    for i, item in enumerate(list_arg(args, "items", tx.op, MAX_BATCH, minimum=1)):
        it = obj_args(item, f"item {i} of {tx.op}", ("packet", "ack", "proof"))
        refs.append(decode_packet_ref(hex_arg(it, "packet", tx.op)))
        acks.append(decode_ack(hex_arg(it, "ack", tx.op)))
        proofs.append(hex_arg(it, "proof", tx.op))
    return ConfirmAckBatchRequest(tuple(refs), tuple(acks), int_arg(args, "height", tx.op), tuple(proofs),
                                  _headers(tx, args))


@dataclass(frozen=True, slots=True)
class ConfirmTimeoutRequest:
    """``packet.confirm_timeout``."""

    ref: PacketRef
    """The packet."""
    height: int
    """Target height whose header is at or past the timeout."""
    proof: bytes
    """Non-membership proof of the receipt at that height."""
    headers: tuple[bytes, ...]
    """Target headers to feed first."""
    commit: CommitProof | None = None
    """Proof that the source committed the packet (required when the relay never verified it)."""


def parse_confirm_timeout(tx: Tx) -> ConfirmTimeoutRequest:
    args = op_args(tx, ("packet", "height", "proof"), ("headers", "commit_height", "commit_proof", "commit_headers"))
    commit = None
    given = {k for k in ("commit_height", "commit_proof", "commit_headers") if k in args}
    if given:
        if not {"commit_height", "commit_proof"} <= given:
            raise CodecError(f"{tx.op}: commit_height and commit_proof come together",
                             expected=["commit_height", "commit_proof"], got=sorted(given))
        commit = CommitProof(int_arg(args, "commit_height", tx.op), hex_arg(args, "commit_proof", tx.op),
                             tuple(hex_list_arg(args, "commit_headers", tx.op, MAX_HEADERS))
                             if "commit_headers" in args else ())
    return ConfirmTimeoutRequest(decode_packet_ref(hex_arg(args, "packet", tx.op)), int_arg(args, "height", tx.op),
                                 hex_arg(args, "proof", tx.op), _headers(tx, args), commit)


@dataclass(frozen=True, slots=True)
class ClientUpdateRequest:
    """``client.update``."""

    chain_id: str
    """Chain whose client gets the headers."""
    headers: tuple[bytes, ...]
    """Headers in order, encoded as the client type decodes them."""


def parse_client_update(tx: Tx) -> ClientUpdateRequest:
    args = op_args(tx, ("chain_id", "headers"))
    return ClientUpdateRequest(check_id("chain", str_arg(args, "chain_id", tx.op)),
                               tuple(hex_list_arg(args, "headers", tx.op, MAX_HEADERS)))


@dataclass(frozen=True, slots=True)
class RegisterFarmerRequest:
    """``client.register_farmer``: a park account created after genesis, proven against a final header, binds a
    farmer name to its key in a client that checks farmers (``poc``, SPEC §8.6)."""

    chain_id: str
    """The park."""
    height: int
    """Final park height the account is proven at."""
    name: str
    """Account (farmer) name."""
    account: bytes
    """The park's stored account record (``accounts/<name>``), exactly as proven."""
    proof: bytes
    """Membership proof of the record."""


def parse_register_farmer(tx: Tx) -> RegisterFarmerRequest:
    args = op_args(tx, ("chain_id", "height", "name", "account", "proof"))
    return RegisterFarmerRequest(check_id("chain", str_arg(args, "chain_id", tx.op)), int_arg(args, "height", tx.op),
                                 str_arg(args, "name", tx.op), hex_arg(args, "account", tx.op),
                                 hex_arg(args, "proof", tx.op))


@dataclass(frozen=True, slots=True)
class MisbehaviourRequest:
    """``client.misbehaviour``."""

    chain_id: str
    """Chain whose client the evidence is about."""
    header_a: bytes
    """First header."""
    header_b: bytes
    """A conflicting header at the same height."""
    branch: tuple[bytes, ...] = ()
    """Instead of the two headers (both then empty): a branch proving conflicting finality."""


MAX_BRANCH_HEADERS = 256
"""Most headers of a ``client.misbehaviour`` branch."""


def parse_misbehaviour(tx: Tx) -> MisbehaviourRequest:
    if isinstance(tx.args, dict) and "branch" in tx.args:
        args = op_args(tx, ("chain_id", "branch"))
        return MisbehaviourRequest(check_id("chain", str_arg(args, "chain_id", tx.op)), b"", b"",
                                   tuple(hex_list_arg(args, "branch", tx.op, MAX_BRANCH_HEADERS)))
    args = op_args(tx, ("chain_id", "header_a", "header_b"))
    return MisbehaviourRequest(check_id("chain", str_arg(args, "chain_id", tx.op)), hex_arg(args, "header_a", tx.op),
                               hex_arg(args, "header_b", tx.op))


@dataclass(frozen=True, slots=True)
class LaneRequest:
    """``lane.open`` / ``lane.pause`` / ``lane.resume`` / ``lane.set_limits`` (params, without ``gov``)."""

    src: str
    """Source chain of the directed lane."""
    dst: str
    """Target chain of the directed lane."""
    lane: str
    """Lane id."""
    limits: dict[str, RateLimit] | None
    """New limits (``lane.open``, ``lane.set_limits``)."""


def parse_lane(op: str, params: Mapping[str, Any]) -> LaneRequest:
    with_limits = op in (LANE_OPEN, LANE_SET_LIMITS)
    args = obj_args(dict(params), op, ("src", "dst", "lane", *(("limits",) if with_limits else ())))
    return LaneRequest(check_id("src chain", str_arg(args, "src", op)), check_id("dst chain", str_arg(args, "dst", op)),
                       check_id("lane", str_arg(args, "lane", op)),
                       limits_from_json(args["limits"]) if with_limits else None)


def parse_client_create(params: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``client.create`` params: ``(chain_id, client_type, init)``."""
    args = obj_args(dict(params), CLIENT_CREATE, ("chain_id", "client_type", "init"))
    return (check_id("chain", str_arg(args, "chain_id", CLIENT_CREATE)), str_arg(args, "client_type", CLIENT_CREATE),
            json_object(args["init"], "init of client.create"))
