"""Witnesses in chain state: registration, votes, credit, jail, elections and rewards (docs/research.md#seed-003).

The node calls :func:`apply_block_consensus` once per block, before the block's begin-block hooks and
transactions. Everything a node needs to validate the next header (active set, proposals, LIB, last slot)
lives in chain state under the keys below, so a restarted node recomputes it by replaying blocks, and the
relay chain can prove any of it.

State keys (values are canonical JSON):

* ``dpos/params`` — the :class:`~chains.dpos.types.DposParams` of genesis (for queries; the node passes
  its params explicitly).
* ``dpos/tracker`` — the :class:`~chains.dpos.consensus.FinalityTracker`: ``{active_set: [{name, pubkey,
  votes}], lib, last_produced: {name: height}, proposals: [[height, set]]}``.
* ``dpos/head`` — ``{height, slot, timestamp_ms}`` of the last block accounted for.
* ``dpos/witnesses`` — sorted list of registered witness names.
* ``witness/<name>`` — the witness record, model ``dpos-witness-credit/v1``: ``{name, pubkey (block-signing
  key, hex), url, credit, score (= credit, for reputation attestation), model, height (of the last change),
  base_votes (from genesis), votes (last tally), produced, missed, missed_in_row, interval_produced,
  bad_blocks, jailed, jailed_until (maintenance interval from which it is eligible again), rewards}``.
* ``witness-voters/<name>`` — sorted list of accounts approving the witness.
* ``votes/<voter>`` — ``{witness: stake cap in Wh, or null for the whole balance}``.
* ``dpos/evidence/<witness>/<height>`` — ``{hashes: [a, b]}`` once double production there was punished.

Block rewards are paid from the module account ``module:reserve`` (funded at genesis), so they move
currency rather than mint it. ``voter_reward_share_bp`` of each witness's reward goes to the voters approving
it, in proportion to the stake they count for it, so voters gain from choosing witnesses that work
(docs/research.md#seed-003: the Shapley split widens the beneficiaries and makes voters choose carefully).
A witness that is also a demand-response node and was marked inactive by the last DR cycle is not eligible in
elections (``dr_inactive_ineligible``; docs/research.md#seed-002).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path, arg
from chains.dpos.consensus import (
    Candidate,
    FinalityTracker,
    credit_after,
    elect,
    interval_of,
    is_boundary,
    missed_slots,
    proportional_rewards,
    schedule,
    shapley_rewards,
    split_largest_remainder,
)
from chains.dpos.types import DposHeader, DposParams, WitnessInfo, WitnessSet
from protocol.crypto import ed25519_verify
from protocol.errors import AuthorizationError, CodecError, HeaderError, ProtocolError, ReplayError, WrongChainError

__all__ = [
    "CREDIT_MODEL",
    "RESERVE_ACCOUNT",
    "BlockConsensus",
    "DoubleSignEvidenceError",
    "active_set",
    "apply_block_consensus",
    "expected_producer",
    "load_tracker",
    "op_report_double_production",
    "op_witness_register",
    "op_witness_vote",
    "register_witness",
    "witness_path",
    "witness_record",
]

CREDIT_MODEL = "dpos-witness-credit/v1"
RESERVE_ACCOUNT = "module:reserve"
"""Module account block rewards are paid from (not a creatable account name: ``:`` is not allowed)."""
PARAMS_KEY = b"dpos/params"
TRACKER_KEY = b"dpos/tracker"
HEAD_KEY = b"dpos/head"
REGISTRY_KEY = b"dpos/witnesses"
DR_REPUTATION_PREFIX = b"reputation/"
"""Where :mod:`chains.dpos.market` keeps a demand-response node's reputation (``reputation/<name>``)."""


def witness_path(name: str) -> bytes:
    return f"witness/{name}".encode()


def voters_path(name: str) -> bytes:
    return f"witness-voters/{name}".encode()


def votes_path(voter: str) -> bytes:
    return f"votes/{voter}".encode()


def evidence_path(name: str, height: int) -> bytes:
    return f"dpos/evidence/{name}/{height}".encode()


# -- reads -----------------------------------------------------------------------------------------


def load_tracker(state: ChainState) -> FinalityTracker:
    """The chain's finality tracker after the last block accounted for."""
    obj = state.get_json(TRACKER_KEY)
    if obj is None:
        raise ProtocolError("no DPoS consensus state: the state was not made by genesis_state")
    return FinalityTracker.from_json(obj)


def active_set(state: ChainState) -> WitnessSet:
    """The witness set that schedules the next block."""
    return load_tracker(state).active


def expected_producer(state: ChainState, params: DposParams, slot: int) -> str:
    """Who must produce in ``slot`` (if it is the next block's slot): the node's "is it my turn?"."""
    return schedule(active_set(state), slot, params.genesis_slot)


def witness_record(state: ChainState, name: str) -> dict[str, Any] | None:
    rec = state.get_json(witness_path(name))
    return rec if isinstance(rec, dict) else None


def _registry(state: ChainState) -> list[str]:
    reg = state.get_json(REGISTRY_KEY)
    return list(reg) if reg else []


# -- registration and votes ------------------------------------------------------------------------


def new_record(name: str, pubkey: bytes, url: str, params: DposParams, height: int,
               base_votes: int = 0) -> dict[str, Any]:
    return {"name": name, "pubkey": pubkey.hex(), "url": url, "credit": params.credit_initial,
            "score": params.credit_initial, "model": CREDIT_MODEL, "height": height, "base_votes": base_votes,
            "votes": base_votes, "produced": 0, "missed": 0, "missed_in_row": 0, "interval_produced": 0,
            "bad_blocks": 0, "jailed": False, "jailed_until": 0, "rewards": 0}


def register_witness(state: ChainState, params: DposParams, name: str, pubkey: bytes, url: str, height: int,
                     base_votes: int = 0) -> dict[str, Any]:
    """Create or update (key, url) a witness record; the account must exist. Raises before changing anything."""
    if state.get(account_path(name)) is None:
        raise AuthorizationError("a witness is a registered account", got=name)
    WitnessInfo(name, pubkey, base_votes)  # validates name, key and votes
    if len(url) > 256:
        raise CodecError("witness url too long", expected="<= 256 chars", got=len(url))
    registry = _registry(state)
    for other in registry:
        rec = witness_record(state, other)
        if other != name and rec is not None and rec["pubkey"] == pubkey.hex():
            raise ProtocolError("block-signing key already used by another witness", got=other)
    rec = witness_record(state, name)
    if rec is None:
        rec = new_record(name, pubkey, url, params, height, base_votes)
        registry.append(name)
        state.set_json(REGISTRY_KEY, sorted(registry))
    else:
        rec.update(pubkey=pubkey.hex(), url=url, height=height)
    state.set_json(witness_path(name), rec)
    return rec


def op_witness_register(params: DposParams) -> Any:
    """``witness.register {pubkey (hex, 32-byte ed25519 block-signing key), url}``: the sender becomes (or
    updates) a witness candidate. A new key is used from the next set the witness is elected into."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        try:
            pubkey = bytes.fromhex(arg(tx, "pubkey", str))
        except ValueError as exc:
            raise CodecError("pubkey must be hex") from exc
        url = tx.args.get("url", "")
        if not isinstance(url, str):
            raise CodecError("url must be a string", got=url)
        register_witness(state, params, tx.sender, pubkey, url, ctx.height)
        return [{"type": "witness_registered", "witness": tx.sender, "pubkey": pubkey.hex()}]

    return handler


def op_witness_vote(params: DposParams) -> Any:
    """``witness.vote {witness, approve? (default true), stake? (Wh cap)}``: approve or withdraw approval.

    At each election a voter's weight is its ``stake_denom`` balance at that moment (capped by ``stake`` if
    given), counted for every witness it approves, as Graphene's approval voting. A voter approves at most
    ``active_witnesses`` witnesses.
    """

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        name = arg(tx, "witness", str)
        approve = tx.args.get("approve", True)
        stake = tx.args.get("stake")
        if not isinstance(approve, bool):
            raise CodecError("approve must be a boolean", got=approve)
        if stake is not None and (isinstance(stake, bool) or not isinstance(stake, int) or stake <= 0):
            raise CodecError("stake must be a positive integer (Wh) or absent", got=stake)
        if witness_record(state, name) is None:
            raise ProtocolError("no such witness", got=name)
        votes: dict[str, Any] = state.get_json(votes_path(tx.sender)) or {}
        voters: list[str] = state.get_json(voters_path(name)) or []
        if approve:
            if name not in votes and len(votes) >= params.active_witnesses:
                raise ProtocolError("too many approved witnesses", expected=f"<= {params.active_witnesses}",
                                    got=len(votes) + 1)
            votes[name] = stake
            if tx.sender not in voters:
                voters = sorted([*voters, tx.sender])
        else:
            if name not in votes:
                raise ProtocolError("no approval of this witness to withdraw", got=name)
            del votes[name]
            voters = [v for v in voters if v != tx.sender]
        _set_or_delete(state, votes_path(tx.sender), votes)
        _set_or_delete(state, voters_path(name), voters)
        return [{"type": "witness_vote", "voter": tx.sender, "witness": name, "approve": approve, "stake": stake}]

    return handler


def _set_or_delete(state: ChainState, key: bytes, value: Any) -> None:
    if value:
        state.set_json(key, value)
    else:
        state.delete(key)


class DoubleSignEvidenceError(HeaderError):
    """``witness.report_double_production`` evidence that proves nothing: not two different headers of one witness
    at one height, or a witness the chain does not know."""

    code: ClassVar[str] = "header.dpos.double_sign_evidence"


def op_report_double_production(params: DposParams) -> Any:
    """``witness.report_double_production {header_a, header_b}`` (hex-encoded headers, e.g. a record of the relay's
    client status ``evidence``): evidence that a witness signed two different headers at one height. Both signatures
    are verified against the witness's key (its record's, or the active set's). The witness loses
    ``credit_bad_block_penalty`` and is jailed at once, so the next election replaces it; each (witness, height) is
    punished once (``packet.replay``). Bad evidence: :class:`~protocol.errors.CodecError` (not hex or not a header),
    :class:`~protocol.errors.WrongChainError`, :class:`DoubleSignEvidenceError`,
    :class:`~protocol.errors.SignatureError`."""

    def handler(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        try:
            a = DposHeader.decode(bytes.fromhex(arg(tx, "header_a", str)))
            b = DposHeader.decode(bytes.fromhex(arg(tx, "header_b", str)))
        except ValueError as exc:
            raise CodecError("evidence headers must be hex") from exc
        for hd in (a, b):
            if hd.chain_id != ctx.chain_id:
                raise WrongChainError("evidence header of another chain", expected=ctx.chain_id, got=hd.chain_id)
        if a.height != b.height or a.producer != b.producer or a.hash() == b.hash():
            raise DoubleSignEvidenceError("evidence must be two different headers of one witness at one height",
                                          expected=[a.height, a.producer, "another hash"],
                                          got=[b.height, b.producer, b.hash().hex()])
        rec = witness_record(state, a.producer)
        if rec is None:
            raise DoubleSignEvidenceError("evidence against a witness this chain does not know",
                                          expected="a registered witness", got=a.producer)
        if state.get(evidence_path(a.producer, a.height)) is not None:
            raise ReplayError("double production already punished", got=(a.producer, a.height))
        keys = {bytes.fromhex(rec["pubkey"])}
        member = load_tracker(state).active.pubkeys.get(a.producer)
        if member is not None:
            keys.add(member)
        for hd in (a, b):
            _verify_any(keys, hd)
        rec["credit"] = credit_after(rec["credit"], params, bad=1)
        rec["bad_blocks"] += 1
        events = [{"type": "witness_bad_block", "witness": a.producer, "height": a.height, "credit": rec["credit"]}]
        _jail(rec, params, ctx.height, events, reason="double production", force=True)
        _save(state, rec, ctx.height)
        state.set_json(evidence_path(a.producer, a.height), {"hashes": sorted([a.hash().hex(), b.hash().hex()])})
        return events

    return handler


def _verify_any(keys: set[bytes], header: DposHeader) -> None:
    """Raise unless one of the witness's keys (its record's, or the active set's) signed ``header``."""
    *others, last = sorted(keys)
    for key in others:
        try:
            ed25519_verify(key, header.signing_bytes(), header.signature, what="evidence header signature")
            return
        except ProtocolError:
            continue
    ed25519_verify(last, header.signing_bytes(), header.signature, what="evidence header signature")


# -- per-block bookkeeping -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockConsensus:
    """What :func:`apply_block_consensus` decided for one block: what its header must carry, and what it did."""

    active_set_hash: bytes
    """Hash of the set that scheduled the block: the header's ``active_set_hash``."""
    pending_set: tuple[WitnessInfo, ...] | None
    """The header's ``pending_set``: the newly elected set at a boundary if it differs, else ``None``."""
    missed: dict[str, int]
    """Witness -> slots it missed between the previous block and this one."""
    promoted: WitnessSet | None
    """The set that came into force with this block (it schedules the next block), if any."""
    lib: int
    """Last irreversible height after this block."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Events (credit changes, jail, rewards, election, promotion) for the block's event log."""


def apply_block_consensus(state: ChainState, params: DposParams, ctx: BlockContext) -> BlockConsensus:
    """Account for the block ``ctx`` (height, time, producer) in chain state. Call once per block, first.

    In order: checks the block is the next one and ``ctx.producer`` is scheduled for its slot (else
    :class:`HeaderError`, nothing changed); punishes the witnesses whose slots since the previous block were
    missed; rewards the producer's credit; jails witnesses under the credit threshold or with
    ``jail_missed_in_row`` misses in a row; at a maintenance boundary pays the interval's block rewards by
    Shapley value (or by blocks, ``reward_split = proportional``), releases witnesses whose jail is over, tallies
    votes and elects the next set; with fast replacement (``replacement_interval_blocks`` R > 0), a block at a
    multiple of R that finds a member of the latest elected set jailed holds that election at once; finally
    advances the LIB and promotes a proposed set that became irreversible.

    A producing node puts the result's ``active_set_hash`` and ``pending_set`` in its header; a validating
    node checks the received header carries the same (its election must agree), then the state root.
    """
    tracker = load_tracker(state)
    head = state.get_json(HEAD_KEY)
    height, ts, producer = ctx.height, ctx.timestamp_ms, ctx.producer
    slot = ts // params.block_interval_ms
    if height != head["height"] + 1:
        raise HeaderError("block is not the next one", expected=head["height"] + 1, got=height)
    if slot <= head["slot"]:
        raise HeaderError("block slot not after the previous block's", expected=f"> {head['slot']}", got=slot)
    active = tracker.active
    scheduled = schedule(active, slot, params.genesis_slot)
    if producer != scheduled:
        raise HeaderError(f"wrong witness for the slot {slot}", expected=scheduled, got=producer)
    events: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {}

    def rec_of(name: str) -> dict[str, Any]:
        rec = records.get(name)
        if rec is None:
            rec = witness_record(state, name)
            if rec is None:
                raise ProtocolError("active witness without a record", got=name)
            records[name] = rec
        return rec

    missed = missed_slots(active, head["slot"], slot, params.genesis_slot)
    for name, count in sorted(missed.items()):
        rec = rec_of(name)
        rec["credit"] = credit_after(rec["credit"], params, missed=count)
        rec["missed"] += count
        rec["missed_in_row"] += count
        events.append({"type": "witness_missed", "witness": name, "slots": count, "credit": rec["credit"]})
    rec = rec_of(producer)
    rec["credit"] = credit_after(rec["credit"], params, produced=1)
    rec["produced"] += 1
    rec["interval_produced"] += 1
    rec["missed_in_row"] = 0
    for name in sorted(records):
        r = records[name]
        if r["credit"] < params.jail_credit_threshold or r["missed_in_row"] >= params.jail_missed_in_row:
            _jail(r, params, height, events, reason="credit" if r["credit"] < params.jail_credit_threshold
                  else "missed slots")

    pending: tuple[WitnessInfo, ...] | None = None
    if is_boundary(height, params):
        for name in _registry(state):
            rec_of(name)
        _pay_rewards(state, params, records, len(active), events)
        pending = _maintenance(state, params, records, tracker, height, events)
    elif params.may_propose(height) and _latest_set_jailed(state, tracker, records):
        # fast replacement: a jailed member of the latest elected set is voted out now, not at the boundary
        for name in _registry(state):
            rec_of(name)
        pending = _maintenance(state, params, records, tracker, height, events, fast=True)
    for r in records.values():
        _save(state, r, height)

    promoted = tracker.on_block(height, producer, pending)
    if pending is not None:
        events.append({"type": "witness_set_proposed", "height": height, "set_hash": WitnessSet(pending).hash.hex(),
                       "witnesses": [w.name for w in pending]})
    if promoted is not None:
        events.append({"type": "witness_set_promoted", "height": height, "set_hash": promoted.hash.hex(),
                       "witnesses": list(promoted.names)})
    state.set_json(TRACKER_KEY, tracker.to_json())
    state.set_json(HEAD_KEY, {"height": height, "slot": slot, "timestamp_ms": ts})
    return BlockConsensus(active.hash, pending, missed, promoted, tracker.lib, events)


def _dr_inactive(state: ChainState, name: str) -> bool:
    """Whether ``name`` is a demand-response node the last DR cycle marked inactive (docs/research.md#seed-002)."""
    rec = state.get_json(DR_REPUTATION_PREFIX + name.encode())
    return isinstance(rec, dict) and rec.get("active") is False


def _latest_set_jailed(state: ChainState, tracker: FinalityTracker, records: dict[str, dict[str, Any]]) -> bool:
    """Whether a member of the latest elected set (the newest proposal, else the active set) is jailed."""
    latest = tracker.proposals[-1][1] if tracker.proposals else tracker.active
    for name in latest.names:
        rec = records.get(name) or witness_record(state, name)
        if rec is not None and rec["jailed"]:
            return True
    return False


def _jail(rec: dict[str, Any], params: DposParams, height: int, events: list[dict[str, Any]], *, reason: str,
          force: bool = False) -> None:
    until = interval_of(height, params) + params.jail_intervals
    if rec["jailed"] and not force:
        return
    rec["jailed"] = True
    rec["jailed_until"] = max(rec["jailed_until"], until)
    events.append({"type": "witness_jailed", "witness": rec["name"], "reason": reason,
                   "until_interval": rec["jailed_until"]})


def _save(state: ChainState, rec: dict[str, Any], height: int) -> None:
    rec["score"] = rec["credit"]
    rec["height"] = height
    state.set_json(witness_path(rec["name"]), rec)


def _pay_rewards(state: ChainState, params: DposParams, records: dict[str, dict[str, Any]], active_n: int,
                 events: list[dict[str, Any]]) -> None:
    produced = {name: r["interval_produced"] for name, r in records.items() if r["interval_produced"] > 0}
    blocks = sum(produced.values())
    pool = min(params.block_reward * blocks, state.balance(RESERVE_ACCOUNT, params.reward_denom))
    paid: dict[str, int] = {}
    to_voters: dict[str, int] = {}
    if pool > 0 and produced:
        if params.reward_split == "proportional":
            split = proportional_rewards(produced, pool)
        else:
            credit = {name: records[name]["credit"] for name in produced}
            split = shapley_rewards(produced, credit, active_n, pool)
        paid = {k: v for k, v in split.items() if v > 0}
        for name, amount in sorted(paid.items()):
            share = amount * params.voter_reward_share_bp // 10_000
            weights = _voter_weights(state, params, name) if share else {}
            parts = split_largest_remainder(share, {v: Fraction(w) for v, w in weights.items()}) if weights else {}
            own = amount - sum(parts.values())
            state.sub_balance(RESERVE_ACCOUNT, params.reward_denom, amount)
            state.add_balance(name, params.reward_denom, own)
            records[name]["rewards"] += own
            for voter, part in sorted(parts.items()):
                if part:
                    state.add_balance(voter, params.reward_denom, part)
                    to_voters[voter] = to_voters.get(voter, 0) + part
    for r in records.values():
        r["interval_produced"] = 0
    events.append({"type": "block_rewards", "blocks": blocks, "pool": pool, "denom": params.reward_denom,
                   "paid": dict(sorted(paid.items())), "voters": dict(sorted(to_voters.items()))})


def _voter_weights(state: ChainState, params: DposParams, name: str) -> dict[str, int]:
    """Each voter approving ``name`` -> the stake it counts for it now (its balance, capped by its ``stake``)."""
    out = {}
    for voter in state.get_json(voters_path(name)) or []:
        cap = (state.get_json(votes_path(voter)) or {}).get(name)
        bal = state.balance(voter, params.stake_denom)
        w = bal if cap is None else min(cap, bal)
        if w > 0:
            out[voter] = w
    return out


def _tally(state: ChainState, params: DposParams, name: str, base_votes: int) -> int:
    return base_votes + sum(_voter_weights(state, params, name).values())


def _maintenance(state: ChainState, params: DposParams, records: dict[str, dict[str, Any]],
                 tracker: FinalityTracker, height: int, events: list[dict[str, Any]], *,
                 fast: bool = False) -> tuple[WitnessInfo, ...] | None:
    interval = interval_of(height, params)
    candidates = []
    for name in sorted(records):
        r = records[name]
        if r["jailed"] and interval >= r["jailed_until"]:
            r["jailed"] = False
            r["missed_in_row"] = 0
            r["credit"] = max(r["credit"], params.credit_on_release)
            events.append({"type": "witness_released", "witness": name, "credit": r["credit"]})
        r["votes"] = _tally(state, params, name, r["base_votes"])
        ineligible = r["jailed"] or (params.dr_inactive_ineligible and _dr_inactive(state, name))
        candidates.append(Candidate(name, bytes.fromhex(r["pubkey"]), r["votes"], r["credit"], ineligible))
    elected = elect(candidates, params)
    if elected is None:
        events.append({"type": "election_empty", "height": height})
        return None
    latest = tracker.proposals[-1][1] if tracker.proposals else tracker.active
    events.append({"type": "election", "height": height, "elected": list(elected.names), "fast": fast})
    return None if elected.hash == latest.hash else elected.members


def init_consensus_state(state: ChainState, params: DposParams, genesis_set: WitnessSet) -> None:
    """Genesis: store params, the tracker (every witness at height 0) and the head."""
    state.set_json(PARAMS_KEY, params.to_json())
    state.set_json(TRACKER_KEY, FinalityTracker(genesis_set).to_json())
    state.set_json(HEAD_KEY, {"height": 0, "slot": params.genesis_slot, "timestamp_ms": params.genesis_time_ms})
