"""Equivocation evidence against relay validators, jailing, and the validator-set transition (SPEC.md §7.7).

A relay validator that signs two conflicting consensus messages — two prevotes or two precommits of one
height and round for different values, or two different proposals of one height and round — breaks the
one rule BFT safety rests on. Any node or relayer proves it with the transaction ``evidence.submit``::

    {"kind": "duplicate_vote" | "conflicting_proposal",
     "a": hex(consensus message wire bytes), "b": hex(consensus message wire bytes)}

(the wire encoding of :func:`relay.chain.consensus.messages.encode_message`). The evidence authenticates
itself, so the transaction needs no account: its ``sender`` is any account-shaped name of the reporter
(informational), its ``nonce`` 0 and its ``signature`` empty. It is checked, in this order, against the
validator set **of the evidence's height** (the relay keeps the history of its sets):

1. the arguments decode, each message is of the kind named — ``codec.invalid``;
2. the two messages are of one height, round, type and signer and differ in value — ``evidence.invalid``;
   the height is at most the current block's — ``evidence.invalid``; not older than
   :data:`MAX_EVIDENCE_AGE_BLOCKS` — ``evidence.stale``;
3. the signer's index is in the set of that height — ``evidence.invalid`` (no validator, no offence);
4. both signatures verify under that validator's key (``messages.verify_evidence``) — ``signature.invalid``
   (or ``codec.invalid``/``header.invalid`` for a malformed proposal);
5. the offence ``(validator key, height, round, type)`` was not recorded before — ``packet.replay``;
6. the validator is not jailed already — ``validator.jailed``;
7. jailing leaves at least one validator — ``evidence.invalid``.

Then, atomically with the block: the offence and the jail record are written, and the validator is removed
from ``relay/validators``. The block that includes the evidence, at height ``H``, is still signed by the old
set; its header's ``next_validators_hash`` commits the new set, which signs from ``H + 1`` on. That commit
(old set's signatures, new set's hash) is what park bridges receive in ``bridge.update_relay_validators``.
A jailed validator stays out; there is no unjailing.

Every set the relay chain used is kept under ``relay/validator_sets/{hash}``, and the heights they took
effect at under ``relay/validator_history``, so evidence of an earlier height is checked against the set
that signed it and relayers can fetch any set a bridge trusts.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from chains.common import wire
from chains.common.state import ChainState, canonical_json
from chains.common.tx import ACCOUNT_RE, BlockContext, Tx
from protocol.certificate import ValidatorSet
from protocol.errors import (
    CodecError,
    EvidenceError,
    ReplayError,
    StaleEvidenceError,
    ValidatorJailedError,
    WrongChainError,
)
from protocol.types import ChainId
from relay.chain.consensus.messages import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    Proposal,
    Vote,
    decode_message,
    encode_message,
    verify_evidence,
)
from relay.chain.state_machine.governance import load_validator_set, store_validator_set
from relay.chain.state_machine.records import Event, obj_args, str_arg

__all__ = [
    "EVIDENCE_SUBMIT",
    "MAX_EVIDENCE_AGE_BLOCKS",
    "VALIDATOR_HISTORY_KEY",
    "check_distinct_validators",
    "check_evidence",
    "check_tx_shape",
    "evidence_args",
    "execute_evidence",
    "jailed_record",
    "offence_key",
    "parse_evidence",
    "record_validator_set",
    "validator_history",
    "validator_set_at",
    "validator_set_by_hash",
]

EVIDENCE_SUBMIT = "evidence.submit"
MAX_EVIDENCE_AGE_BLOCKS = 10_000
"""Evidence of a height more than this many blocks below the current one is ``evidence.stale``."""
MAX_MESSAGE_BYTES = 256 * 1024
"""Largest consensus message one piece of evidence may carry (a proposal holds its block)."""

VALIDATOR_HISTORY_KEY = b"relay/validator_history"
_ZERO_ADDRESS = bytes(20)
_HEX_RE = re.compile(r"(?:[0-9a-f]{2})*")


def _set_key(set_hash: bytes) -> bytes:
    return f"relay/validator_sets/{set_hash.hex()}".encode()


def _jail_key(pubkey: bytes) -> bytes:
    return f"relay/jailed/{pubkey.hex()}".encode()


def offence_key(pubkey: bytes, height: int, round_: int, kind: str) -> bytes:
    """Where the relay records that it punished one offence (one per validator, height, round and message type)."""
    return f"relay/evidence/{pubkey.hex()}/{height}/{round_}/{kind}".encode()


# --- validator sets --------------------------------------------------------------------------------


def check_distinct_validators(vset: ValidatorSet) -> None:
    """``codec.invalid`` if two validators share an ed25519 key or a (non-zero) Ethereum address."""
    keys = [v.ed25519_pubkey for v in vset.validators]
    if len(set(keys)) != len(keys):
        raise CodecError("validator set repeats an ed25519 key")
    addrs = [v.eth_address for v in vset.validators if v.eth_address != _ZERO_ADDRESS]
    if len(set(addrs)) != len(addrs):
        dup = next(a for a in addrs if addrs.count(a) > 1)
        raise CodecError("validator set repeats an Ethereum address", got="0x" + dup.hex())


def validator_history(state: ChainState) -> list[dict[str, Any]]:
    """``[{"from_height", "hash"}, ...]``, ascending: the set with ``hash`` signs heights from ``from_height``."""
    raw = state.get_json(VALIDATOR_HISTORY_KEY)
    return list(raw) if raw is not None else []


def record_validator_set(state: ChainState, vset: ValidatorSet, from_height: int) -> None:
    """Install ``vset`` as the set signing ``from_height`` on (genesis: 1), keeping the history."""
    check_distinct_validators(vset)
    store_validator_set(state, vset)
    state.set_json(_set_key(vset.hash), wire.validator_set_to_json(vset))
    history = validator_history(state)
    if history and history[-1]["from_height"] == from_height:
        history[-1] = {"from_height": from_height, "hash": vset.hash.hex()}  # two jailings in one block
    else:
        history.append({"from_height": from_height, "hash": vset.hash.hex()})
    state.set_json(VALIDATOR_HISTORY_KEY, history)


def validator_set_by_hash(state: ChainState, set_hash: bytes) -> ValidatorSet | None:
    raw = state.get_json(_set_key(set_hash))
    return None if raw is None else wire.validator_set_from_json(raw)


def validator_set_at(state: ChainState, height: int) -> ValidatorSet | None:
    """The set that signs ``height`` (None before the first recorded set)."""
    found: str | None = None
    for entry in validator_history(state):
        if entry["from_height"] <= height:
            found = entry["hash"]
    if found is None:
        return None
    return validator_set_by_hash(state, bytes.fromhex(found))


def jailed_record(state: ChainState, pubkey: bytes) -> dict[str, Any] | None:
    raw = state.get_json(_jail_key(pubkey))
    return None if raw is None else dict(raw)


# --- the transaction -------------------------------------------------------------------------------


def evidence_args(ev: Evidence) -> dict[str, str]:
    """The ``evidence.submit`` arguments of ``ev``."""
    if isinstance(ev, DuplicateVoteEvidence):
        return {"kind": "duplicate_vote", "a": encode_message(ev.vote_a).hex(), "b": encode_message(ev.vote_b).hex()}
    return {"kind": "conflicting_proposal", "a": encode_message(ev.proposal_a).hex(),
            "b": encode_message(ev.proposal_b).hex()}


def _message(args: dict[str, Any], name: str) -> bytes:
    raw = args[name]
    if not isinstance(raw, str) or len(raw) > 2 * MAX_MESSAGE_BYTES or not _HEX_RE.fullmatch(raw):
        raise CodecError(f"evidence message {name!r} is lowercase hex of at most {MAX_MESSAGE_BYTES} bytes",
                         got=len(raw) if isinstance(raw, str) else type(raw).__name__)
    return bytes.fromhex(raw)


def parse_evidence(args: Any) -> Evidence:
    """Strictly decode ``evidence.submit`` arguments (``codec.invalid`` on anything else)."""
    a = obj_args(args, EVIDENCE_SUBMIT, ("kind", "a", "b"))
    kind = str_arg(a, "kind", EVIDENCE_SUBMIT)
    msg_a = decode_message(_message(a, "a"))
    msg_b = decode_message(_message(a, "b"))
    if kind == "duplicate_vote":
        if not (isinstance(msg_a, Vote) and isinstance(msg_b, Vote)):
            raise CodecError("duplicate_vote evidence holds two votes")
        return DuplicateVoteEvidence(msg_a, msg_b)
    if kind == "conflicting_proposal":
        if not (isinstance(msg_a, Proposal) and isinstance(msg_b, Proposal)):
            raise CodecError("conflicting_proposal evidence holds two proposals")
        return ConflictingProposalEvidence(msg_a, msg_b)
    raise CodecError("unknown evidence kind", expected=["duplicate_vote", "conflicting_proposal"], got=kind)


def _offence(ev: Evidence) -> tuple[int, int, int, str]:
    """``(height, round, signer index, message kind)``, after checking the two messages conflict."""
    if isinstance(ev, DuplicateVoteEvidence):
        a, b = ev.vote_a, ev.vote_b
        if (a.type, a.height, a.round, a.validator_index) != (b.type, b.height, b.round, b.validator_index):
            raise EvidenceError("the two votes are not of one type, height, round and validator",
                                got=[(int(v.type), v.height, v.round, v.validator_index) for v in (a, b)])
        if a.block_hash == b.block_hash:
            raise EvidenceError("the two votes are for the same value: no equivocation")
        return a.height, a.round, a.validator_index, a.type.name.lower()
    p, q = ev.proposal_a, ev.proposal_b
    if (p.height, p.round, p.proposer_index) != (q.height, q.round, q.proposer_index):
        raise EvidenceError("the two proposals are not of one height, round and proposer",
                            got=[(x.height, x.round, x.proposer_index) for x in (p, q)])
    if (p.pol_round, p.header, p.block) == (q.pol_round, q.header, q.block):
        raise EvidenceError("the two proposals are the same: no equivocation")
    return p.height, p.round, p.proposer_index, "proposal"


def check_tx_shape(tx: Tx, chain_id: str) -> None:
    """What makes an ``evidence.submit`` transaction well formed (it carries no account signature)."""
    if tx.chain_id != chain_id:
        raise WrongChainError("transaction for another chain", expected=chain_id, got=tx.chain_id)
    if not ACCOUNT_RE.match(tx.sender):
        raise CodecError("invalid reporter name", expected=ACCOUNT_RE.pattern, got=tx.sender)
    if tx.nonce != 0 or tx.signature:
        raise CodecError("evidence.submit is unsigned: nonce 0 and an empty signature (the evidence signs itself)",
                         got={"nonce": tx.nonce, "signature": len(tx.signature)})


def check_evidence(state: ChainState, chain_id: str, ev: Evidence, height: int | None) -> tuple[ValidatorSet, int,
                                                                                                  bytes]:
    """Run checks 2-7 of the module docstring; returns ``(set of the evidence's height, signer index, offence key)``.

    ``height`` is the block the evidence would be in (None: admission, which skips the age checks).
    """
    h, round_, index, kind = _offence(ev)
    if height is not None:
        if h > height:
            raise EvidenceError("evidence of a height the relay chain has not reached", expected=f"<= {height}", got=h)
        if height - h > MAX_EVIDENCE_AGE_BLOCKS:
            raise StaleEvidenceError("evidence older than the evidence window",
                                     expected=f">= {height - MAX_EVIDENCE_AGE_BLOCKS}", got=h)
    vset = validator_set_at(state, h)
    if vset is None:
        raise EvidenceError("no validator set recorded for the evidence's height", got=h)
    if not 0 <= index < len(vset.validators):
        raise EvidenceError("evidence against an index that is no validator of its height's set",
                            expected=f"< {len(vset.validators)}", got=index)
    verify_evidence(vset, ChainId(chain_id), ev)
    offender = vset.validators[index]
    key = offence_key(offender.ed25519_pubkey, h, round_, kind)
    if state.get(key) is not None:
        raise ReplayError("this equivocation was already punished", got=key.decode())
    if jailed_record(state, offender.ed25519_pubkey) is not None:
        raise ValidatorJailedError("the validator is already jailed", got=offender.name)
    current = load_validator_set(state)
    if len([v for v in current.validators if v.ed25519_pubkey != offender.ed25519_pubkey]) == 0:
        raise EvidenceError("jailing the last relay validator would leave no one to sign", got=offender.name)
    return vset, index, key


def execute_evidence(state: ChainState, chain_id: str, tx: Tx, ctx: BlockContext) -> list[Event]:
    """Check and apply one ``evidence.submit`` (atomic: on an error nothing changes)."""
    check_tx_shape(tx, chain_id)
    ev = parse_evidence(tx.args)
    vset, index, key = check_evidence(state, chain_id, ev, ctx.height)
    offender = vset.validators[index]
    current = load_validator_set(state)
    remaining = ValidatorSet(tuple(v for v in current.validators if v.ed25519_pubkey != offender.ed25519_pubkey))
    evidence_hash = hashlib.sha256(canonical_json(dict(tx.args))).hexdigest()
    with state.atomic():
        state.set_json(key, {"height": ctx.height, "evidence": evidence_hash, "reporter": tx.sender})
        state.set_json(_jail_key(offender.ed25519_pubkey), {
            "name": offender.name, "eth_address": offender.eth_address.hex(), "jailed_at": ctx.height,
            "evidence": evidence_hash})
        if remaining.hash != current.hash:
            record_validator_set(state, remaining, ctx.height + 1)
    return [{"type": "validator_jailed", "validator": offender.name,
             "ed25519_pubkey": offender.ed25519_pubkey.hex(), "eth_address": offender.eth_address.hex(),
             "offence": key.decode(), "reporter": tx.sender, "jailed_at": ctx.height,
             "next_set_hash": remaining.hash.hex(), "effective_height": ctx.height + 1,
             "validators": len(remaining.validators)}]
