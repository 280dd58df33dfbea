"""Every way the relay state machine must refuse, as a table malleating one valid set-up into one failure.

A case's ``prepare`` may run valid steps first (a first verification before a replay, a freeze...),
then returns the failing ``(op, args)``. The test asserts the exact typed error class and that the
relay state root did not move: a refused transaction changes nothing, its sender's nonce included.
The parks' supply conservation is checked afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chains.common.tx import Tx
from protocol.codec import encode_ack, encode_energy, encode_packet, packet_commitment
from protocol.errors import (
    AuthorizationError,
    BondStateError,
    ClientExpiredError,
    ClientFrozenError,
    ClientRecoveryError,
    CodecError,
    EvidenceError,
    HeaderError,
    IllegalTransitionError,
    InsufficientFundsError,
    InvalidProofError,
    LaneError,
    NotFinalError,
    OverCapacityError,
    ProtocolError,
    QuorumError,
    RateLimitError,
    ReplayError,
    SignatureError,
    TimeoutExpiredError,
    UnknownClientError,
    WrongChainError,
)
from protocol.paths import commitment_path
from protocol.types import Acknowledgement, AckStatus, ChainId, EnergyPayload, LaneId, Packet, PacketKind
from tests.unit.relay_state.harness import DPOS, LANE, MINUTE, POC, VOUCHER, RelayHarness
from tests.unit.relay_state.testkit import SingleSignerHeader, fixed_signer


@dataclass
class Setup:
    """Two packets committed on dpos-park towards poc-park (5 kWh and 1 kWh), neither verified yet."""

    h: RelayHarness
    p1: Packet
    p2: Packet


def make_setup(**kw: Any) -> Setup:
    h = RelayHarness(**kw)
    return Setup(h, h.send(amount_wh=5_000), h.send(amount_wh=1_000))


Prepare = Callable[[Setup], tuple[str, dict[str, Any]]]


@dataclass
class Case:
    name: str
    prepare: Prepare
    error: type[ProtocolError]
    setup_kw: dict[str, Any] = field(default_factory=dict)
    sender: str = "relayer-a"


def flip_hex(h: str, at: int = 0) -> str:
    b = bytearray.fromhex(h)
    b[at] ^= 1
    return b.hex()


def tamper_proof(proof_hex: str) -> str:
    # proof = u16 n || siblings...: flip a bit of the first sibling
    assert int(proof_hex[:4], 16) > 0
    return proof_hex[:4] + flip_hex(proof_hex[4:6]) + proof_hex[6:]


def with_amount(p: Packet, amount: int) -> Packet:
    return Packet(p.src_chain, p.dst_chain, p.lane, p.sequence, p.kind, encode_energy(EnergyPayload("kWh", amount)),
                  p.sender, p.receiver, p.timeout_timestamp_ms)


def forged_return(s: Setup, amount: int, sequence: int = 99) -> Packet:
    """A faulty poc-park commits a 'returning voucher' packet it never burned (state written directly)."""
    p = Packet(ChainId(POC), ChainId(DPOS), LaneId(LANE), sequence, PacketKind.ENERGY,
               encode_energy(EnergyPayload(VOUCHER, amount)), "mallory", "alice", s.h.net.now_ms + 10 * MINUTE)
    s.h.feeds[POC].state.set(commitment_path(p.dst_chain, p.lane, p.sequence), packet_commitment(p))
    return p


def freeze(s: Setup, chain: str = DPOS) -> None:
    """Submit valid misbehaviour evidence: two signed headers at one height with different roots."""
    height = s.h.update(chain)
    other = SingleSignerHeader(chain, height, s.h.net.now_ms, b"\x42" * 32).signed(s.h.feeds[chain].key)
    held = s.h.feeds[chain].next_header()  # a second header, then evidence at the first height
    s.h.submit("client.update", {"chain_id": chain, "headers": [held.encode().hex()]})
    events = s.h.submit("client.misbehaviour", {"chain_id": chain, "header_a": _header_at(s, chain, height),
                                                "header_b": other.encode().hex()})
    assert events[0]["type"] == "client_frozen"


def _header_at(s: Setup, chain: str, height: int) -> str:
    feed = s.h.feeds[chain]
    return SingleSignerHeader(chain, height, s.h.net.now_ms, feed.trees[height].root).signed(feed.key).encode().hex()


def deliver(s: Setup, p: Packet) -> None:
    s.h.verify(p)
    s.h.deliver(p)


def error_ack_hex() -> str:
    return encode_ack(Acknowledgement(AckStatus.ERROR, "receiver.unknown", b"")).hex()


def verify_op(args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "packet.verify", args


# --- phase 2 ---------------------------------------------------------------------------------------


def _tampered_proof(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    return verify_op({**args, "proof": tamper_proof(args["proof"])})


def _proof_of_other_packet(s: Setup) -> tuple[str, dict[str, Any]]:
    args1 = s.h.verify_args(s.p1)
    args2 = s.h.verify_args(s.p2, height=args1["height"])
    return verify_op({**args1, "proof": args2["proof"]})


def _altered_packet(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    return verify_op({**args, "packet": encode_packet(with_amount(s.p1, 50_000)).hex()})


def _height_never_seen(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    return verify_op({**args, "height": args["height"] + 5})


def _height_not_final(s: Setup) -> tuple[str, dict[str, Any]]:
    # finality_depth=1: the header just fed is held but not final until the next one
    return verify_op(s.h.verify_args(s.p1))


def _frozen_source(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    freeze(s, DPOS)
    return verify_op(args)


def _expired_source(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    s.h.net.advance(10 * MINUTE + 1)
    return verify_op(args)


def _replayed_verify(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    s.h.submit("packet.verify", args)
    return verify_op(args)


def _unknown_lane(s: Setup) -> tuple[str, dict[str, Any]]:
    # both parks have lane-9 configured in their bridges, the relay does not
    for park, cp in ((DPOS, POC), (POC, DPOS)):
        s.h.feeds[park].state.set_json(f"bridge/lanes/{cp}/lane-9".encode(), {"counterparty": cp, "lane": "lane-9"})
    p = s.h.send(lane="lane-9")
    return verify_op(s.h.verify_args(p))


def _paused_lane(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.govern("lane.pause", {"src": DPOS, "dst": POC, "lane": LANE})
    return verify_op(s.h.verify_args(s.p1))


def _rate_limited(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.verify(s.p1)  # 5,000 of 5,500 Wh
    return verify_op(s.h.verify_args(s.p2))  # 1,000 more


def _forged_return(s: Setup) -> tuple[str, dict[str, Any]]:
    # nothing ever left dpos-park: no voucher can come back
    return verify_op(s.h.verify_args(forged_return(s, 50_000)))


def _return_while_outbound_in_flight(s: Setup) -> tuple[str, dict[str, Any]]:
    # p1 is verified (5 kWh outbound, not yet acked): the amount can still be refunded at home,
    # so a returning packet may not spend it
    s.h.verify(s.p1)
    return verify_op(s.h.verify_args(forged_return(s, 5_000)))


def _return_beyond_outstanding(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.roundtrip(s.p1)  # 5 kWh of vouchers now outstanding on poc-park
    return verify_op(s.h.verify_args(forged_return(s, 5_001)))


def _unknown_source(s: Setup) -> tuple[str, dict[str, Any]]:
    p = Packet(ChainId("ghost-park"), ChainId(POC), LaneId(LANE), 1, PacketKind.ENERGY,
               encode_energy(EnergyPayload("kWh", 1)), "a", "bob", s.h.net.now_ms + MINUTE)
    args = s.h.verify_args(s.p1)
    return verify_op({**args, "packet": encode_packet(p).hex()})


def _malformed_packet(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.verify_args(s.p1)
    return verify_op({**args, "packet": args["packet"][:-2]})


def _batch_two_sources(s: Setup) -> tuple[str, dict[str, Any]]:
    args1 = s.h.verify_args(s.p1)
    q = s.h.send(src=POC, sender="carol", amount_wh=10)
    args2 = s.h.verify_args(q)
    return "packet.verify_batch", {"height": args1["height"], "items": [
        {"packet": args1["packet"], "proof": args1["proof"]}, {"packet": args2["packet"], "proof": args2["proof"]}]}


def _batch_one_bad_item(s: Setup) -> tuple[str, dict[str, Any]]:
    args1 = s.h.verify_args(s.p1)
    args2 = s.h.verify_args(s.p2, height=args1["height"])
    return "packet.verify_batch", {"height": args1["height"], "items": [
        {"packet": args1["packet"], "proof": args1["proof"]},
        {"packet": args2["packet"], "proof": tamper_proof(args2["proof"])}]}


def _headers_then_bad_proof(s: Setup) -> tuple[str, dict[str, Any]]:
    # the header in the same transaction would be applied, then the proof fails: all rolled back
    feed = s.h.feeds[DPOS]
    header = feed.next_header()
    args = s.h.verify_args(s.p1, height=header.height)
    return verify_op({**args, "proof": tamper_proof(args["proof"]), "headers": [header.encode().hex()]})


def _headers_badly_signed(s: Setup) -> tuple[str, dict[str, Any]]:
    feed = s.h.feeds[DPOS]
    header = feed.next_header().signed(fixed_signer("not-the-park"))
    args = s.h.verify_args(s.p1, height=header.height)
    return verify_op({**args, "headers": [header.encode().hex()]})


# --- phase 4 ---------------------------------------------------------------------------------------


def _confirm_never_verified(s: Setup) -> tuple[str, dict[str, Any]]:
    return "packet.confirm_ack", s.h.confirm_args(s.p1, ack_hex=error_ack_hex())


def _confirm_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    args = s.h.confirm_args(s.p1)
    s.h.submit("packet.confirm_ack", args)
    return "packet.confirm_ack", args


def _confirm_ack_mismatch(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)  # success ack on poc-park; the relayer claims an error ack (to get a refund)
    return "packet.confirm_ack", s.h.confirm_args(s.p1, ack_hex=error_ack_hex())


def _confirm_before_execution(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.verify(s.p1)
    ok = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b"")).hex()
    return "packet.confirm_ack", s.h.confirm_args(s.p1, ack_hex=ok)


def _confirm_other_packet(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    args = s.h.confirm_args(s.p1)
    return "packet.confirm_ack", {**args, "packet": encode_packet(with_amount(s.p1, 1)).hex()}


def _confirm_not_final(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    args = s.h.confirm_args(s.p1)
    return "packet.confirm_ack", {**args, "height": args["height"] + 1}


def _confirm_frozen_target(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    args = s.h.confirm_args(s.p1)
    freeze(s, POC)
    return "packet.confirm_ack", args


def _as_batch(op_args: tuple[str, dict[str, Any]], *more: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``packet.confirm_ack`` arguments as (the first item of) a ``packet.confirm_ack_batch``."""
    _, args = op_args
    items = [{k: a[k] for k in ("packet", "ack", "proof")} for a in (args, *more)]
    return "packet.confirm_ack_batch", {"height": args["height"], "items": items}


def _batch_confirm_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    return _as_batch(_confirm_replayed(s))


def _batch_confirm_one_bad_item(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    deliver(s, s.p2)
    height = s.h.update(POC)
    good = s.h.confirm_args(s.p2, height=height)
    return _as_batch(("", s.h.confirm_args(s.p1, height=height, ack_hex=error_ack_hex())), good)


def _batch_confirm_not_final(s: Setup) -> tuple[str, dict[str, Any]]:
    return _as_batch(_confirm_not_final(s))


def _batch_confirm_frozen_target(s: Setup) -> tuple[str, dict[str, Any]]:
    return _as_batch(_confirm_frozen_target(s))


def _batch_confirm_never_verified(s: Setup) -> tuple[str, dict[str, Any]]:
    return _as_batch(_confirm_never_verified(s))


def _timeout_too_early(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.verify(s.p1)
    s.h.net.advance(10 * MINUTE - 1)  # one ms before the timeout
    return "packet.confirm_timeout", s.h.timeout_args(s.p1)


def _timeout_but_executed(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    s.h.net.advance(10 * MINUTE)
    return "packet.confirm_timeout", s.h.timeout_args(s.p1)


def _timeout_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.verify(s.p1)
    s.h.net.advance(10 * MINUTE)
    args = s.h.timeout_args(s.p1)
    s.h.submit("packet.confirm_timeout", args)
    return "packet.confirm_timeout", args


def _unverified_timeout_wrong_commit_proof(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    args = s.h.unverified_timeout_args(s.p1)
    other = s.h.unverified_timeout_args(s.p2)  # p2's commitment, proven at a later source height
    return "packet.confirm_timeout", {**args, "commit_height": other["commit_height"],
                                      "commit_proof": other["commit_proof"]}


def _unverified_timeout_tampered_commit_proof(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    args = s.h.unverified_timeout_args(s.p1)
    return "packet.confirm_timeout", {**args, "commit_proof": tamper_proof(args["commit_proof"])}


def _unverified_timeout_too_early(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE - 1)  # one ms before the timeout
    return "packet.confirm_timeout", s.h.unverified_timeout_args(s.p1)


def _unverified_timeout_commit_not_final(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    args = s.h.unverified_timeout_args(s.p1)
    return "packet.confirm_timeout", {**args, "commit_height": args["commit_height"] + 5}


def _unverified_timeout_receipt_exists(s: Setup) -> tuple[str, dict[str, Any]]:
    # a packet the target executed cannot time out, verified or not: its receipt is there
    deliver(s, s.p1)
    s.h.net.advance(10 * MINUTE)
    return "packet.confirm_timeout", s.h.unverified_timeout_args(s.p1)


def _unverified_timeout_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    args = s.h.unverified_timeout_args(s.p1)
    s.h.submit("packet.confirm_timeout", args)
    return "packet.confirm_timeout", args


def _unverified_timeout_without_commit_proof(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    return "packet.confirm_timeout", s.h.timeout_args(s.p1)


def _unverified_timeout_half_commit(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    args = s.h.unverified_timeout_args(s.p1)
    del args["commit_proof"]
    return "packet.confirm_timeout", args


def _verify_after_unverified_timeout(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.net.advance(10 * MINUTE)
    s.h.submit("packet.confirm_timeout", s.h.unverified_timeout_args(s.p1))
    return "packet.verify", s.h.verify_args(s.p1)


def _over_capacity(s: Setup) -> tuple[str, dict[str, Any]]:
    # governance lowers the capacity below a packet already committed: no refill will ever admit it
    s.h.govern("lane.set_limits", {"src": DPOS, "dst": POC, "lane": LANE,
                                   "limits": {"kWh": {"capacity": 4_999, "refill_per_s": 10}}})
    return "packet.verify", s.h.verify_args(s.p1)


def _timeout_after_ack(s: Setup) -> tuple[str, dict[str, Any]]:
    deliver(s, s.p1)
    s.h.confirm(s.p1)
    s.h.net.advance(10 * MINUTE)
    return "packet.confirm_timeout", s.h.timeout_args(s.p1)


# --- light clients ---------------------------------------------------------------------------------


def _update_wrong_key(s: Setup) -> tuple[str, dict[str, Any]]:
    h = s.h.feeds[DPOS].next_header().signed(fixed_signer("not-the-park"))
    return "client.update", {"chain_id": DPOS, "headers": [h.encode().hex()]}


def _update_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    _, args = s.h.header_args(DPOS)
    s.h.submit("client.update", args)
    return "client.update", args


def _update_frozen(s: Setup) -> tuple[str, dict[str, Any]]:
    freeze(s, DPOS)
    return "client.update", s.h.header_args(DPOS)[1]


def _update_unknown_chain(s: Setup) -> tuple[str, dict[str, Any]]:
    return "client.update", {**s.h.header_args(DPOS)[1], "chain_id": "ghost-park"}


def _update_time_backwards(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.update(DPOS)
    return "client.update", s.h.header_args(DPOS, time_ms=s.h.net.now_ms - 1)[1]


def _evidence_same_header(s: Setup) -> tuple[str, dict[str, Any]]:
    height = s.h.update(DPOS)
    same = _header_at(s, DPOS, height)
    return "client.misbehaviour", {"chain_id": DPOS, "header_a": same, "header_b": same}


def _evidence_two_heights(s: Setup) -> tuple[str, dict[str, Any]]:
    a = s.h.update(DPOS)
    b = s.h.update(DPOS)
    return "client.misbehaviour", {"chain_id": DPOS, "header_a": _header_at(s, DPOS, a),
                                   "header_b": _header_at(s, DPOS, b)}


def _evidence_forged(s: Setup) -> tuple[str, dict[str, Any]]:
    height = s.h.update(DPOS)
    forged = SingleSignerHeader(DPOS, height, s.h.net.now_ms, b"\x42" * 32).signed(fixed_signer("not-the-park"))
    return "client.misbehaviour", {"chain_id": DPOS, "header_a": _header_at(s, DPOS, height),
                                   "header_b": forged.encode().hex()}


def _evidence_already_frozen(s: Setup) -> tuple[str, dict[str, Any]]:
    freeze(s, DPOS)
    height = s.h.feeds[DPOS].height
    other = SingleSignerHeader(DPOS, height, s.h.net.now_ms, b"\x43" * 32).signed(s.h.feeds[DPOS].key)
    return "client.misbehaviour", {"chain_id": DPOS, "header_a": _header_at(s, DPOS, height),
                                   "header_b": other.encode().hex()}


# --- governance ------------------------------------------------------------------------------------

PAUSE = {"src": DPOS, "dst": POC, "lane": LANE}


def _gov_exactly_two_thirds(s: Setup) -> tuple[str, dict[str, Any]]:
    return "lane.pause", s.h.gov_args("lane.pause", PAUSE, indices=(2, 3))  # power 4 of 6


def _gov_one_validator(s: Setup) -> tuple[str, dict[str, Any]]:
    return "lane.pause", s.h.gov_args("lane.pause", PAUSE, indices=(3,))


def _gov_bad_signature(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.gov_args("lane.pause", PAUSE)
    sig = args["gov"]["signatures"][0]
    sig["signature"] = flip_hex(sig["signature"])
    return "lane.pause", args


def _gov_duplicate_signer(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.gov_args("lane.pause", PAUSE, indices=(1, 2, 3))
    args["gov"]["signatures"].append(dict(args["gov"]["signatures"][-1]))
    return "lane.pause", args


def _gov_other_action(s: Setup) -> tuple[str, dict[str, Any]]:
    s.h.govern("lane.pause", PAUSE)
    return "lane.resume", s.h.gov_args("lane.pause", PAUSE)  # a pause signature offered for a resume


def _gov_params_altered(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.gov_args("lane.pause", PAUSE)
    return "lane.pause", {**args, "dst": DPOS, "src": POC}


def _gov_replayed(s: Setup) -> tuple[str, dict[str, Any]]:
    args = s.h.gov_args("lane.pause", PAUSE)
    s.h.submit("lane.pause", args)
    return "lane.pause", args


def _gov_missing(s: Setup) -> tuple[str, dict[str, Any]]:
    return "lane.pause", dict(PAUSE)


def _lane_open_without_client(s: Setup) -> tuple[str, dict[str, Any]]:
    params = {"src": DPOS, "dst": "ghost-park", "lane": LANE, "limits": {}}
    return "lane.open", s.h.gov_args("lane.open", params)


def _lane_open_twice(s: Setup) -> tuple[str, dict[str, Any]]:
    return "lane.open", s.h.gov_args("lane.open", {**PAUSE, "limits": {}})


def _set_limits_unknown_lane(s: Setup) -> tuple[str, dict[str, Any]]:
    params = {"src": DPOS, "dst": POC, "lane": "lane-9", "limits": {"kWh": {"capacity": 1, "refill_per_s": 1}}}
    return "lane.set_limits", s.h.gov_args("lane.set_limits", params)


def _set_limits_malformed(s: Setup) -> tuple[str, dict[str, Any]]:
    params = {**PAUSE, "limits": {"kWh": {"capacity": -1, "refill_per_s": 1}}}
    return "lane.set_limits", s.h.gov_args("lane.set_limits", params)


def _client_create_unknown_type(s: Setup) -> tuple[str, dict[str, Any]]:
    params = {"chain_id": "eth-park", "client_type": "ethereum", "init": {}}
    return "client.create", s.h.gov_args("client.create", params)


def _client_recover_active_client(s: Setup) -> tuple[str, dict[str, Any]]:
    params = {"chain_id": DPOS, "client_type": "single", "init": s.h.genesis["clients"][DPOS]["init"], "packets": []}
    return "client.recover", s.h.gov_args("client.recover", params)


# --- attestations (client.attest) -------------------------------------------------------------------


def _attest_by_non_validator(s: Setup) -> tuple[str, dict[str, Any]]:
    # relayer-a is an account but not a relay validator: its word on a block hash counts for nothing
    return "client.attest", {"chain_id": DPOS, "height": 1, "block_hash": "11" * 32, "head_height": 9}


def _attest_short_hash(s: Setup) -> tuple[str, dict[str, Any]]:
    return "client.attest", {"chain_id": DPOS, "height": 1, "block_hash": "11" * 31, "head_height": 9}


def _register_farmer_on_a_client_without_farmers(s: Setup) -> tuple[str, dict[str, Any]]:
    # only a poc client binds farmer names (SPEC §8.6); the PoC cases are in test_poc_finality_window.py
    return "client.register_farmer", {"chain_id": DPOS, "height": 1, "name": "farmer-x", "account": "7b7d",
                                      "proof": "00"}


# --- accounts --------------------------------------------------------------------------------------


def _register_existing(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.register", {"pubkey": s.h.keys["relayer-a"].pubkey.hex()}


def _bond_transfer_beyond_balance(s: Setup) -> tuple[str, dict[str, Any]]:
    return "bond.transfer", {"to": "newcomer", "amount": 10**9}  # more: test_bonds.py


def _unbond_a_grant(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.unbond", {}  # relayer-a is a genesis account: a governance grant holds no bond


def _withdraw_not_unbonding(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.withdraw", {}


def _bond_a_grant(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.bond", {}


def _set_payee_unknown_chain(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.set_payee", {"chain": "no-such-park", "payee": "relayer-a"}


def _set_payee_too_long(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.set_payee", {"chain": DPOS, "payee": "p" * 257}


def _set_payee_not_a_string(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.set_payee", {"chain": DPOS, "payee": ["relayer-a"]}


def _set_payee_extra_argument(s: Setup) -> tuple[str, dict[str, Any]]:
    return "account.set_payee", {"chain": DPOS, "payee": "relayer-a", "amount": 1}


def _evidence_without_conflict(s: Setup) -> tuple[str, dict[str, Any]]:
    from relay.chain.consensus.messages import Vote, VoteType, encode_message, vote_sign_bytes

    sig = s.h.gov_keys[1].sign(vote_sign_bytes(ChainId("relay"), VoteType.PREVOTE, 1, 0, b"\xaa" * 32))
    raw = encode_message(Vote(VoteType.PREVOTE, 1, 0, b"\xaa" * 32, 1, sig)).hex()
    return "evidence.submit", {"kind": "duplicate_vote", "a": raw, "b": raw}  # more: test_evidence.py


LIMITED = {"limits": {"kWh": {"capacity": 5_500, "refill_per_s": 10}}}

CASES = [
    Case("verify: tampered proof", _tampered_proof, InvalidProofError),
    Case("verify: proof of another packet", _proof_of_other_packet, InvalidProofError),
    Case("verify: packet altered after commit", _altered_packet, InvalidProofError),
    Case("verify: height never seen", _height_never_seen, NotFinalError),
    Case("verify: height held but not final", _height_not_final, NotFinalError, {"finality_depth": 1}),
    Case("verify: frozen source client", _frozen_source, ClientFrozenError),
    Case("verify: expired source client", _expired_source, ClientExpiredError, {"trusting_period_ms": 10 * MINUTE}),
    Case("verify: replayed", _replayed_verify, ReplayError),
    Case("verify: replayed by another relayer", _replayed_verify, ReplayError, sender="relayer-b"),
    Case("verify: unknown lane", _unknown_lane, LaneError),
    Case("verify: paused lane", _paused_lane, LaneError),
    Case("verify: rate limit exhausted", _rate_limited, RateLimitError, LIMITED),
    Case("verify: supply, forged returning voucher", _forged_return, InsufficientFundsError),
    Case("verify: supply, return spends in-flight outbound", _return_while_outbound_in_flight, InsufficientFundsError),
    Case("verify: supply, return beyond outstanding", _return_beyond_outstanding, InsufficientFundsError),
    Case("verify: source without a client", _unknown_source, UnknownClientError),
    Case("verify: malformed packet", _malformed_packet, CodecError),
    Case("verify_batch: two sources", _batch_two_sources, CodecError),
    Case("verify_batch: one bad item fails the batch", _batch_one_bad_item, InvalidProofError),
    Case("verify: headers applied, then bad proof", _headers_then_bad_proof, InvalidProofError),
    Case("verify: header badly signed", _headers_badly_signed, SignatureError),
    Case("confirm_ack: never verified", _confirm_never_verified, IllegalTransitionError),
    Case("confirm_ack: replayed", _confirm_replayed, ReplayError),
    Case("confirm_ack: ack mismatches the receipt", _confirm_ack_mismatch, InvalidProofError),
    Case("confirm_ack: not executed yet", _confirm_before_execution, InvalidProofError),
    Case("confirm_ack: packet differs from the verified one", _confirm_other_packet, InvalidProofError),
    Case("confirm_ack: height not final", _confirm_not_final, NotFinalError),
    Case("confirm_ack: frozen target client", _confirm_frozen_target, ClientFrozenError),
    Case("confirm_ack_batch: replayed", _batch_confirm_replayed, ReplayError),
    Case("confirm_ack_batch: one mismatching ack fails the batch", _batch_confirm_one_bad_item, InvalidProofError),
    Case("confirm_ack_batch: height not final", _batch_confirm_not_final, NotFinalError),
    Case("confirm_ack_batch: frozen target client", _batch_confirm_frozen_target, ClientFrozenError),
    Case("confirm_ack_batch: never verified", _batch_confirm_never_verified, IllegalTransitionError),
    Case("confirm_timeout: before the timeout", _timeout_too_early, TimeoutExpiredError),
    Case("confirm_timeout: receipt exists", _timeout_but_executed, InvalidProofError),
    Case("confirm_timeout: replayed", _timeout_replayed, ReplayError),
    Case("confirm_timeout: after an ack", _timeout_after_ack, ReplayError),
    Case("confirm_timeout unverified: commit proof of another packet", _unverified_timeout_wrong_commit_proof,
         InvalidProofError),
    Case("confirm_timeout unverified: tampered commit proof", _unverified_timeout_tampered_commit_proof,
         InvalidProofError),
    Case("confirm_timeout unverified: before the timeout", _unverified_timeout_too_early, TimeoutExpiredError),
    Case("confirm_timeout unverified: commit height never seen", _unverified_timeout_commit_not_final, NotFinalError),
    Case("confirm_timeout with commit proof: executed meanwhile", _unverified_timeout_receipt_exists,
         InvalidProofError),
    Case("confirm_timeout unverified: replayed", _unverified_timeout_replayed, ReplayError),
    Case("confirm_timeout unverified: no commit proof", _unverified_timeout_without_commit_proof,
         IllegalTransitionError),
    Case("confirm_timeout unverified: commit_height without commit_proof", _unverified_timeout_half_commit,
         CodecError),
    Case("verify: after an unverified timeout", _verify_after_unverified_timeout, ReplayError),
    Case("verify: above the lane's capacity", _over_capacity, OverCapacityError),
    Case("client.update: wrong signer", _update_wrong_key, SignatureError),
    Case("client.update: replayed", _update_replayed, ReplayError),
    Case("client.update: frozen client", _update_frozen, ClientFrozenError),
    Case("client.update: unknown chain", _update_unknown_chain, UnknownClientError),
    Case("client.update: time goes backwards", _update_time_backwards, HeaderError),
    Case("client.misbehaviour: the same header twice", _evidence_same_header, HeaderError),
    Case("client.misbehaviour: two heights", _evidence_two_heights, HeaderError),
    Case("client.misbehaviour: forged header", _evidence_forged, SignatureError),
    Case("client.misbehaviour: already frozen", _evidence_already_frozen, ReplayError),
    Case("governance: exactly 2/3 of the power", _gov_exactly_two_thirds, QuorumError),
    Case("governance: one validator", _gov_one_validator, QuorumError),
    Case("governance: a bad signature in a quorum", _gov_bad_signature, SignatureError),
    Case("governance: duplicate signer", _gov_duplicate_signer, SignatureError),
    Case("governance: signature for another action", _gov_other_action, SignatureError),
    Case("governance: params altered after signing", _gov_params_altered, SignatureError),
    Case("governance: replayed nonce", _gov_replayed, ReplayError),
    Case("governance: unsigned", _gov_missing, SignatureError),
    Case("lane.open: chain without a client", _lane_open_without_client, UnknownClientError),
    Case("lane.open: lane exists", _lane_open_twice, LaneError),
    Case("lane.set_limits: unknown lane", _set_limits_unknown_lane, LaneError),
    Case("lane.set_limits: negative capacity", _set_limits_malformed, CodecError),
    Case("client.create: unknown client type", _client_create_unknown_type, UnknownClientError),
    Case("client.recover: client not frozen", _client_recover_active_client, ClientRecoveryError),
    Case("client.attest: not a relay validator", _attest_by_non_validator, AuthorizationError),
    Case("client.attest: block hash of 31 bytes", _attest_short_hash, CodecError),
    Case("client.register_farmer: client binds no farmers", _register_farmer_on_a_client_without_farmers,
         CodecError),
    Case("account.register: existing account", _register_existing, ReplayError),
    Case("bond.transfer: beyond the balance", _bond_transfer_beyond_balance, InsufficientFundsError),
    Case("account.unbond: a governance grant", _unbond_a_grant, BondStateError),
    Case("account.withdraw: not unbonding", _withdraw_not_unbonding, BondStateError),
    Case("account.bond: a governance grant", _bond_a_grant, BondStateError),
    Case("account.set_payee: a chain the relay does not follow", _set_payee_unknown_chain, WrongChainError),
    Case("account.set_payee: payee over 256 bytes", _set_payee_too_long, CodecError),
    Case("account.set_payee: payee not a string", _set_payee_not_a_string, CodecError),
    Case("account.set_payee: an unknown argument", _set_payee_extra_argument, CodecError),
    Case("evidence.submit: votes that do not conflict", _evidence_without_conflict, EvidenceError),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_without_state_change(case: Case) -> None:
    s = make_setup(**case.setup_kw)
    op, args = case.prepare(s)
    root = s.h.root
    sender = case.sender
    if op == "evidence.submit":  # unsigned: the evidence signs itself
        with pytest.raises(case.error) as info:
            s.h.sm.execute_tx(s.h.state, Tx("relay", "watcher", 0, op, args, b""), s.h.ctx())
    elif op == "account.register":
        sender = "relayer-a"
        tx = s.h.tx(op, args, sender, nonce=0)
        with pytest.raises(case.error) as info:
            s.h.sm.execute_tx(s.h.state, tx, s.h.ctx())
    else:
        with pytest.raises(case.error) as info:
            s.h.submit(op, args, sender)
    assert type(info.value) is case.error, info.value
    assert info.value.code == case.error.code
    assert s.h.root == root
    s.h.net.check()


def test_table_covers_every_op() -> None:
    ops = {c.prepare(make_setup(**c.setup_kw))[0] for c in CASES}
    assert ops == set(make_setup().h.sm.app.ops)


def test_a_badly_signed_transaction_changes_nothing() -> None:
    s = make_setup()
    tx = s.h.tx("packet.verify", s.h.verify_args(s.p1))
    bad = type(tx)(tx.chain_id, tx.sender, tx.nonce, tx.op, tx.args, bytes.fromhex(flip_hex(tx.signature.hex())))
    root = s.h.root
    with pytest.raises(SignatureError):
        s.h.sm.execute_tx(s.h.state, bad, s.h.ctx())
    assert s.h.root == root
