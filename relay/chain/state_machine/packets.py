"""Phase 2 (VERIFY) and the relay half of phase 4 (CONFIRM) on the relay chain (SPEC.md §6.4, §6.6).

Each step is split as the rest of the codebase does: ``validate_*`` reads state and raises a typed
error, ``apply_*`` writes assuming validity, ``process_*`` runs both in order (the ops call these).

Phase 2, per packet, in SPEC §6.4's order: decode (strict) and refuse a packet already verified
(``packet.replay``, before any proof work); feed the source headers to the source's light client;
membership of ``commitments/{dst}/{lane}/{seq} -> packet_commitment`` at the source's *final* height;
lane registered and not paused; rate limit; supply accountant (energy) or rights accountant (charging
rights); then write
``relay/verified/{src}/{dst}/{lane}/{seq} = packet_commitment`` (COMMITTED -> VERIFIED).

A batch verifies up to :data:`MAX_BATCH` packets of one source against one source height (one
light-client lookup, one header feed, one write per lane bucket and supply hop). As in ibc-go's
redundant-relay rule, items already verified are skipped as no-ops, so two relayers racing on
overlapping batches do not fail each other; a transaction in which *every* item is redundant is
``packet.replay``. Any other failing item fails the whole transaction (it is atomic).

Phase 4: the packet must be VERIFIED here with exactly this commitment and have no outcome yet
(``packet.replay`` if it has one; ``lifecycle.illegal`` if it was never verified). An ack is proven by
membership of ``receipts/{src}/{lane}/{seq} -> ack_commitment(ack)`` at the *target's* final height;
a timeout by the final target header at that height having ``timestamp_ms >= timeout_timestamp_ms``
(else ``packet.timeout``: not yet) and non-membership of the receipt. The outcome record goes to
``relay/outcome/…``; the supply accountant (:mod:`relay.chain.state_machine.supply`) or the rights accountant
(:mod:`relay.chain.state_machine.rights`) settles the packet.
Phase 4 ignores lane status: a paused lane still confirms and refunds its packets in flight.

Unverified timeout (SPEC §6.6, issue 9): a packet the relay never verified — an unregistered lane, an
amount above the lane's capacity, a lane paused for good — would keep its escrow locked forever. Given
``commit_height`` and ``commit_proof`` (membership of its commitment at the source client's final
``commit_height``), ``packet.confirm_timeout`` records TIMED_OUT for it too: COMMITTED -> TIMED_OUT,
with no ``relay/verified`` record, no bucket and no supply change (nothing was counted or minted).
Phase 2 then treats the packet as done (:func:`packet_done`): verifying it is ``packet.replay``.

The relay records no separate lifecycle row: a packet's relay-side state is derived from the two
SPEC records (:func:`packet_state`), and every transition goes through
:func:`protocol.lifecycle.transition`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chains.common.state import ChainState
from protocol.codec import ZERO_COMMITMENT, ack_commitment, decode_outcome, encode_outcome, sha256
from protocol.codec import decode_charging_right as decode_right_strict
from protocol.codec import decode_energy as decode_energy_strict
from protocol.codec import decode_packet as decode_packet_strict
from protocol.errors import ClientFrozenError, CodecError, InvalidProofError, ReplayError
from protocol.lifecycle import PacketEvent, PacketState, transition
from protocol.paths import commitment_path, outcome_path, receipt_path, verified_path
from protocol.types import Acknowledgement, Packet, PacketKind, PacketOutcome
from relay.chain.state_machine import fees, rights, supply
from relay.chain.state_machine.clients import HostedClient, RelayClientRouter, feed_headers, load_for_proofs
from relay.chain.state_machine.keys import PRUNE_VERIFIED_KEY, suspended_key
from relay.chain.state_machine.lanes import Lane, check_tokens, kind_asset, require_open_lane, take_tokens
from relay.chain.state_machine.records import Event, Staged

__all__ = [
    "MAX_BATCH",
    "CommitProof",
    "PacketRef",
    "VerifyPlan",
    "apply_confirm_ack",
    "apply_confirm_timeout",
    "apply_verify",
    "check_confirmable",
    "check_not_verified",
    "decode_packet_ref",
    "packet_done",
    "packet_state",
    "process_confirm_ack",
    "process_confirm_ack_batch",
    "process_confirm_timeout",
    "process_verify_batch",
    "validate_confirm_ack",
    "validate_confirm_timeout",
    "validate_verify",
]

MAX_BATCH = 200
"""Most packets one ``packet.verify_batch`` may carry."""


@dataclass(frozen=True, slots=True)
class PacketRef:
    """A packet as a relayer submitted it: its canonical bytes, decoded form and commitment."""

    raw: bytes
    """Canonical encoding (strict decoding guarantees it is the only one)."""
    packet: Packet
    """Decoded packet."""
    commitment: bytes
    """``sha256(raw)``: the packet commitment (SPEC §3.4)."""

    @property
    def verified_key(self) -> bytes:
        p = self.packet
        return verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence)

    @property
    def outcome_key(self) -> bytes:
        p = self.packet
        return outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence)

    def ids(self) -> dict[str, object]:
        p = self.packet
        return {"src": p.src_chain, "dst": p.dst_chain, "lane": p.lane, "sequence": p.sequence,
                "kind": _KIND_NAMES[p.kind]}


_KIND_NAMES = {kind: kind.name.lower() for kind in PacketKind}
"""A packet kind's name in events (``kind.name`` is a property lookup on every read)."""


def decode_packet_ref(raw: bytes) -> PacketRef:
    """Strictly decode a packet; its commitment is the hash of the very bytes (re-encoding gives them back)."""
    return PacketRef(raw, decode_packet_strict(raw), sha256(raw))


def packet_state(state: ChainState, ref: PacketRef) -> PacketState:
    """The packet's state as the relay knows it: COMMITTED (unknown here), VERIFIED, ACKED or TIMED_OUT."""
    raw_outcome = state.get(ref.outcome_key)
    if raw_outcome is not None:
        outcome, _, _ = decode_outcome(raw_outcome)
        return PacketState.ACKED if outcome is PacketOutcome.ACKED else PacketState.TIMED_OUT
    if state.get(ref.verified_key) is not None:
        return PacketState.VERIFIED
    return PacketState.COMMITTED


# --- phase 2: VERIFY --------------------------------------------------------------------------------


def packet_done(state: ChainState, ref: PacketRef) -> bool:
    """Whether phase 2 has nothing left to do for the packet: verified, or timed out unverified."""
    return state.get(ref.verified_key) is not None or state.get(ref.outcome_key) is not None


def check_not_verified(state: ChainState, ref: PacketRef) -> None:
    """``packet.replay`` if the packet is already verified, or already has an outcome (an unverified
    timeout: it must never be verified after it): state lookups, before any proof work."""
    p = ref.packet
    where = f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"
    if state.get(ref.verified_key) is not None:
        raise ReplayError("packet already verified", expected="no relay/verified record", got=where)
    if state.get(ref.outcome_key) is not None:
        raise ReplayError("packet already has an outcome (acked, or timed out: then it can only be refunded now)",
                          expected="no relay/outcome record", got=where)


@dataclass(frozen=True, slots=True)
class VerifyPlan:
    """What verifying one packet will write, computed by :func:`validate_verify`."""

    ref: PacketRef
    """The packet."""
    lane: Lane
    """Its lane record."""
    bucket: tuple[bytes, object] | None
    """The rate-limit bucket after taking the packet's tokens (``None``: asset not limited)."""
    supply: supply.SupplyChange | None
    """Its effect on the supply accountant (energy only)."""
    right: rights.RightChange | None
    """Its effect on the rights accountant (charging rights only)."""
    source_height: int
    """Source height the commitment was proven at."""


def _supply_change(packet: Packet) -> tuple[str, int, supply.SupplyChange | None]:
    if packet.kind is PacketKind.ENERGY:
        energy = decode_energy_strict(packet.payload)
        return energy.denom, energy.amount_wh, supply.classify(packet, energy)
    return kind_asset(packet.kind), 1, None


def _right_change(packet: Packet) -> rights.RightChange | None:
    if packet.kind is PacketKind.CHARGING_RIGHT:
        return rights.classify(packet, decode_right_strict(packet.payload))
    return None


def validate_verify(staged: Staged, hosted: HostedClient, ref: PacketRef, height: int, proof: bytes,
                    now_ms: int, lanes: dict[tuple[str, str, str], Lane] | None = None) -> VerifyPlan:
    """SPEC §6.4 steps 3-6 for one packet whose replay check passed; ``hosted`` follows its source.
    ``lanes`` keeps the open lanes a batch already loaded (verifying writes no lane record)."""
    p = ref.packet
    hosted.client.verify_membership(height, commitment_path(p.dst_chain, p.lane, p.sequence), ref.commitment,
                                    proof, now_ms)
    lane_id = (p.src_chain, p.dst_chain, p.lane)
    lane = lanes.get(lane_id) if lanes is not None else None
    if lane is None:
        lane = require_open_lane(staged, *lane_id)
        if lanes is not None:
            lanes[lane_id] = lane
    asset, tokens, change = _supply_change(p)
    right = _right_change(p)
    bucket = check_tokens(staged, lane, asset, tokens, now_ms)
    if change is not None:
        supply.validate_verify(staged, change)
    if right is not None:
        rights.validate_verify(staged, right)
    return VerifyPlan(ref, lane, bucket, change, right, height)


def apply_verify(state: ChainState, staged: Staged, plan: VerifyPlan, payee: str = "") -> Event:
    """Take the tokens, book the supply change, write ``relay/verified/…`` (COMMITTED -> VERIFIED); keep ``payee``,
    who earned the verify fee (SPEC §6.10)."""
    new_state = transition(PacketState.COMMITTED, PacketEvent.VERIFY)
    take_tokens(staged, plan.bucket)
    if plan.supply is not None:
        supply.apply_verify(staged, plan.supply)
    if plan.right is not None:
        rights.apply_verify(staged, plan.right)
    ref = plan.ref
    p = ref.packet
    state.set(ref.verified_key, ref.commitment)
    fees.record_verifier(state, p, payee)
    # {"type": ..., **ref.ids(), ...} built in one dict (the same keys in the same order)
    return {"type": "packet_verified", "src": p.src_chain, "dst": p.dst_chain, "lane": p.lane, "sequence": p.sequence,
            "kind": _KIND_NAMES[p.kind], "commitment": ref.commitment.hex(), "source_height": plan.source_height,
            "state": new_state.value}


def _check_batch(refs: Sequence[PacketRef], lengths: Sequence[int], side: str, one_chain: str) -> str:
    """A batch's shape: 1 .. :data:`MAX_BATCH` packets, every parallel list as long, every packet's ``side``
    (``src_chain`` or ``dst_chain``) the same chain, which is returned; :class:`CodecError` otherwise."""
    if not refs or any(n != len(refs) for n in lengths):
        raise CodecError("a batch is one or more items, each complete", got=(len(refs), *lengths))
    if len(refs) > MAX_BATCH:
        raise CodecError("batch too large", expected=f"<= {MAX_BATCH}", got=len(refs))
    chain: str = getattr(refs[0].packet, side)
    for ref in refs:
        if getattr(ref.packet, side) != chain:
            raise CodecError(one_chain, expected=chain, got=getattr(ref.packet, side))
    return chain


def process_verify_batch(router: RelayClientRouter, state: ChainState, now_ms: int, height: int,
                         refs: Sequence[PacketRef], proofs: Sequence[bytes],
                         raw_headers: Sequence[bytes] = (), sender: str = "") -> list[Event]:
    """``packet.verify`` / ``packet.verify_batch``: ``proofs[i]`` proves ``refs[i]``'s commitment at ``height``;
    ``sender`` (the transaction's) earns the verify fee of each packet it verifies first."""
    src = _check_batch(refs, [len(proofs)], "src_chain", "a batch verifies packets of one source against one source "
                                                         "height")
    # SPEC §6.4's replay check, before any proof work; one lookup pair per packet serves both uses below (feeding
    # headers writes only client records, so a packet's verified/outcome records cannot change in between)
    done = [packet_done(state, ref) for ref in refs]
    if all(done):
        check_not_verified(state, refs[0])
    events: list[Event] = []
    if raw_headers:
        hosted = router.checkout(state, src)
        events, frozen = feed_headers(router, state, hosted, raw_headers, now_ms, require_progress=False)
        if frozen:
            return events  # the freeze must persist: succeed with it, verify nothing
    else:
        hosted, events = load_for_proofs(router, state, src, now_ms)
    staged = Staged(state)
    skipped: list[int] = []
    verified_here: set[bytes] = set()  # a packet listed twice in one batch: the second is done too
    lanes: dict[tuple[str, str, str], Lane] = {}
    payee = fees.payee_of(state, sender, src)
    for ref, proof, was_done in zip(refs, proofs, done, strict=True):
        if was_done or (ref.commitment in verified_here and packet_done(state, ref)):
            skipped.append(ref.packet.sequence)
            continue
        events.append(apply_verify(state, staged, validate_verify(staged, hosted, ref, height, proof, now_ms, lanes),
                                   payee))
        verified_here.add(ref.commitment)
    staged.flush()
    if skipped:
        events.append({"type": "packets_skipped", "src": src, "reason": "already verified or timed out",
                       "sequences": skipped})
    return events


# --- phase 4: CONFIRM -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitProof:
    """What an unverified timeout adds: the source committed this packet (SPEC §6.6)."""

    height: int
    """Source height, final in the relay's client of the source, the commitment is proven at."""
    proof: bytes
    """Membership proof of ``commitments/{dst}/{lane}/{seq} -> packet_commitment`` at ``height``."""
    headers: tuple[bytes, ...] = ()
    """Source headers to feed first."""


def check_confirmable(state: ChainState, ref: PacketRef, *, unverified_ok: bool = False) -> PacketState:
    """The packet has no outcome yet and is VERIFIED here with this commitment — or, with
    ``unverified_ok`` (a timeout carrying a commitment proof), not verified at all. Cheap: two lookups.
    Returns the state the confirmation starts from."""
    p = ref.packet
    where = f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"
    if state.get(ref.outcome_key) is not None:
        raise ReplayError("packet outcome already recorded", expected="no relay/outcome record", got=where)
    verified = state.get(ref.verified_key)
    if verified is None and state.get(suspended_key(ref.verified_key)) is not None:
        raise ClientFrozenError(f"packet {where} is suspended: its source's client froze, and a recovery revokes it "
                                "(SPEC §8.8)", got=where)
    if verified is None:
        if unverified_ok:
            return PacketState.COMMITTED
        # never verified and no proof that the source committed it
        transition(PacketState.COMMITTED, PacketEvent.EXECUTE)  # raises lifecycle.illegal
    elif verified != ref.commitment:
        raise InvalidProofError(f"packet differs from the one verified at {where}", expected=verified.hex(),
                                got=ref.commitment.hex())
    return PacketState.VERIFIED


def _dst_client(router: RelayClientRouter, state: ChainState, ref: PacketRef, raw_headers: Sequence[bytes],
                now_ms: int) -> tuple[HostedClient, list[Event], bool]:
    dst = ref.packet.dst_chain
    if not raw_headers:
        hosted, events = load_for_proofs(router, state, dst, now_ms)
        return hosted, events, False
    hosted = router.checkout(state, dst)
    events, frozen = feed_headers(router, state, hosted, raw_headers, now_ms, require_progress=False)
    return hosted, events, frozen


def _settle_supply(state: ChainState, ref: PacketRef, delivered: bool) -> None:
    """The supply or rights accountant settles a verified packet (``delivered``: a success ack)."""
    staged = Staged(state)
    if ref.packet.kind is PacketKind.ENERGY:
        supply.apply_outcome(staged, supply.classify(ref.packet, decode_energy_strict(ref.packet.payload)), delivered)
    elif ref.packet.kind is PacketKind.CHARGING_RIGHT:
        rights.apply_outcome(staged, rights.classify(ref.packet, decode_right_strict(ref.packet.payload)), delivered)
    staged.flush()


def validate_confirm_ack(hosted: HostedClient, ref: PacketRef, ack: Acknowledgement, height: int, proof: bytes,
                         now_ms: int) -> bytes:
    """Membership of the receipt at the target's final ``height``; returns the ack commitment."""
    p = ref.packet
    ack_c = ack_commitment(ack)
    hosted.client.verify_membership(height, receipt_path(p.src_chain, p.lane, p.sequence), ack_c, proof, now_ms)
    return ack_c


def apply_confirm_ack(state: ChainState, ref: PacketRef, ack: Acknowledgement, ack_c: bytes, height: int,
                      payees: fees.PayeeBook | None = None, confirmer: str = "") -> Event:
    """Write ACKED with the fee payees (SPEC §6.10): ``payees`` looks up the source payee of an account, ``confirmer``
    is the sender of the transaction."""
    new_state = transition(transition(PacketState.VERIFIED, PacketEvent.EXECUTE), PacketEvent.CONFIRM_ACK)
    book = payees if payees is not None else fees.PayeeBook(state, ref.packet.src_chain)
    record = fees.outcome_payees(state, ref.packet, book(ack.relayer), book(confirmer))
    state.set(ref.outcome_key, encode_outcome(PacketOutcome.ACKED, ref.commitment, ack_c, record))
    if state.get(PRUNE_VERIFIED_KEY) is not None:  # the outcome record answers every later question (SPEC §6.6)
        state.delete(ref.verified_key)
    _settle_supply(state, ref, ack.success)
    return {"type": "packet_acked", **ref.ids(), "success": ack.success, "ack_code": ack.code,
            "ack_commitment": ack_c.hex(), "target_height": height, "state": new_state.value}


def process_confirm_ack(router: RelayClientRouter, state: ChainState, now_ms: int, ref: PacketRef,
                        ack: Acknowledgement, height: int, proof: bytes,
                        raw_headers: Sequence[bytes] = (), sender: str = "") -> list[Event]:
    check_confirmable(state, ref)
    hosted, events, frozen = _dst_client(router, state, ref, raw_headers, now_ms)
    if frozen:
        return events
    ack_c = validate_confirm_ack(hosted, ref, ack, height, proof, now_ms)
    return [*events, apply_confirm_ack(state, ref, ack, ack_c, height, confirmer=sender)]


def process_confirm_ack_batch(router: RelayClientRouter, state: ChainState, now_ms: int, refs: Sequence[PacketRef],
                              acks: Sequence[Acknowledgement], height: int, proofs: Sequence[bytes],
                              raw_headers: Sequence[bytes] = (), sender: str = "") -> list[Event]:
    """``packet.confirm_ack_batch``: ``proofs[i]`` proves ``acks[i]``'s receipt of ``refs[i]`` at the target's final
    ``height``; every packet has one target. As ``packet.verify_batch`` does for phase 2: a packet with an outcome
    already is skipped (``packets_skipped``), a batch with nothing left to do is ``packet.replay`` before any proof
    work, and anything else wrong with one packet (not verified, another commitment, a bad proof) fails the batch."""
    dst = _check_batch(refs, [len(acks), len(proofs)], "dst_chain", "a batch confirms packets of one target against "
                                                                    "one target height")
    done = [state.get(ref.outcome_key) is not None for ref in refs]
    if all(done):
        check_confirmable(state, refs[0])  # raises packet.replay
    for ref, was_done in zip(refs, done, strict=True):
        if not was_done:
            check_confirmable(state, ref)
    hosted, events, frozen = _dst_client(router, state, refs[0], raw_headers, now_ms)
    if frozen:
        return events
    skipped: list[int] = []
    confirmed: set[bytes] = set()
    books: dict[str, fees.PayeeBook] = {}  # one per source
    for ref, ack, proof, was_done in zip(refs, acks, proofs, done, strict=True):
        if was_done or ref.outcome_key in confirmed:
            skipped.append(ref.packet.sequence)
            continue
        ack_c = validate_confirm_ack(hosted, ref, ack, height, proof, now_ms)
        src = ref.packet.src_chain
        book = books.get(src) or books.setdefault(src, fees.PayeeBook(state, src))
        events.append(apply_confirm_ack(state, ref, ack, ack_c, height, book, sender))
        confirmed.add(ref.outcome_key)
    if skipped:
        events.append({"type": "packets_skipped", "src": refs[0].packet.src_chain, "dst": dst,
                       "reason": "outcome recorded already", "sequences": skipped})
    return events


def validate_confirm_timeout(hosted: HostedClient, ref: PacketRef, height: int, proof: bytes, now_ms: int, *,
                             certified: bool = True) -> None:
    """The target's client proves the packet timed out at its final ``height``
    (:meth:`~protocol.light_client.LightClient.verify_timeout`: by default a header at or past the timeout that holds
    no receipt; a chain kind without a trustworthy block time proves it its own way, SPEC §8.7). ``certified`` is
    False for a packet this relay never verified (it never issued a certificate the target could execute it with)."""
    p = ref.packet
    hosted.client.verify_timeout(height, receipt_path(p.src_chain, p.lane, p.sequence), p.timeout_timestamp_ms, proof,
                                 now_ms, certified=certified)


def validate_commitment(hosted: HostedClient, ref: PacketRef, commit: CommitProof, now_ms: int) -> None:
    """Unverified timeout: the source committed exactly this packet (membership at its final height)."""
    p = ref.packet
    hosted.client.verify_membership(commit.height, commitment_path(p.dst_chain, p.lane, p.sequence), ref.commitment,
                                    commit.proof, now_ms)


def apply_confirm_timeout(state: ChainState, ref: PacketRef, height: int,
                          start: PacketState = PacketState.VERIFIED, confirmer: str = "") -> Event:
    """Write TIMED_OUT, with the verify and confirm payees (SPEC §6.10; ``confirmer`` sent the transaction). From
    VERIFIED the supply accountant releases the packet; from COMMITTED (never verified) it never counted it, and no
    rate-limit tokens were taken: nothing else changes."""
    new_state = transition(start, PacketEvent.CONFIRM_TIMEOUT)
    record = fees.outcome_payees(state, ref.packet, "", fees.payee_of(state, confirmer, ref.packet.src_chain))
    state.set(ref.outcome_key, encode_outcome(PacketOutcome.TIMED_OUT, ref.commitment, ZERO_COMMITMENT, record))
    if start is PacketState.VERIFIED:
        if state.get(PRUNE_VERIFIED_KEY) is not None:
            state.delete(ref.verified_key)
        _settle_supply(state, ref, delivered=False)
    return {"type": "packet_timed_out", **ref.ids(), "target_height": height, "state": new_state.value,
            "verified": start is PacketState.VERIFIED}


def process_confirm_timeout(router: RelayClientRouter, state: ChainState, now_ms: int, ref: PacketRef, height: int,
                            proof: bytes, raw_headers: Sequence[bytes] = (),
                            commit: CommitProof | None = None, sender: str = "") -> list[Event]:
    """``packet.confirm_timeout``; with ``commit``, also for a packet never verified (SPEC §6.6). A packet
    verified meanwhile takes the ordinary path and ``commit`` is ignored."""
    start = check_confirmable(state, ref, unverified_ok=commit is not None)
    events: list[Event] = []
    if start is PacketState.COMMITTED and commit is not None:  # (COMMITTED only comes with a commit proof)
        src = ref.packet.src_chain
        if commit.headers:
            src_hosted = router.checkout(state, src)
            src_events, src_frozen = feed_headers(router, state, src_hosted, commit.headers, now_ms,
                                                  require_progress=False)
            events += src_events
            if src_frozen:
                return events  # the freeze must persist: succeed with it, time out nothing
        else:
            src_hosted = router.load(state, src)
        validate_commitment(src_hosted, ref, commit, now_ms)
    hosted, dst_events, frozen = _dst_client(router, state, ref, raw_headers, now_ms)
    events += dst_events
    if frozen:
        return events
    validate_confirm_timeout(hosted, ref, height, proof, now_ms, certified=start is PacketState.VERIFIED)
    return [*events, apply_confirm_timeout(state, ref, height, start, sender)]
