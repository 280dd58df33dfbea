"""Client recovery by governance (SPEC.md §8.8): a frozen light client replaced by a substitute, as IBC's
``MsgRecoverClient`` does (ICS-02), with the packets verified against the frozen client revoked.

A client freezes when it is shown a branch that reverts one of its final headers (a PoC park reorganised past
the confirmation depth, two final DPoS chains…); every lane of its chain pauses (:func:`.clients.freeze_events`)
and the relay refuses every proof against it. Freezing is permanent. ``client.recover`` is the way out: a
governance action (more than 2/3 of the relay validators' power signs it, :mod:`.governance`) with params::

    {"chain_id": str, "client_type": str, "init": {...substitute's init args, its trusted checkpoint...},
     "packets": [hex of every packet from chain_id that is VERIFIED on the relay and has no outcome]}

Checks, in this order, each a typed error with nothing written: the governance nonce and quorum
(``packet.replay`` / ``certificate.quorum``, :func:`.governance.authorize`); the params' shape (``codec.invalid``);
a client follows ``chain_id`` (``client.unknown``) and it is frozen (``client.recovery``); ``client_type`` is the
frozen client's (``client.recovery``: a recovery replaces a client by one of the same kind); the relay block time
is at least the freeze time + the genesis ``recovery_delay_ms`` (``client.recovery``); ``packets`` are exactly the
chain's in-flight packets (``client.recovery``); the substitute's init describes ``chain_id``
(``packet.wrong_chain``) and is well formed (``codec.invalid``).

The freeze itself (:func:`.clients.freeze_events`) *suspends* the in-flight packets: each ``relay/verified/…``
record moves to ``relay/suspended/…``, so no relay block from the freeze on proves it. A certificate from before
the freeze is refused by every target once it is older than the target's ``max_certificate_age_ms`` (SPEC §7.9);
the delay (operators keep it >= every target's bound) makes sure that holds for all of them before anything is
revoked.

Effects: the substitute gets a new id and the chain's pointer (the frozen client keeps its state under its own
id); every listed packet is **revoked** — its ``relay/verified/…`` record deleted and the supply or rights
accountant's verify undone (as for a refund: nothing was minted that the relay counts), rate-limit tokens
kept taken — so the relay holds it COMMITTED again; every lane of the chain that the freeze paused resumes
(a lane paused by governance stays paused). Events: ``client_recovered``, ``packet_revoked`` per packet,
``lane_resumed`` per lane.

Why revoke every in-flight packet of the chain, not only those above the trusted height: the relay records
no source height per packet, and revoking one that is on both branches costs only its re-verification on
the new branch (same sequence, same commitment, proven against the substitute). A packet the new branch does
not hold is never verified again, so no relay certificate of it can be fetched from a later relay block;
its sender's escrow never existed on the new branch. A packet re-committed on the new branch at the same
sequence verifies and executes once. A different packet at that sequence verifies as itself.

The listed packets are the raw bytes relayers submitted (the relay stores only commitments); the operator
tooling (``parkrelay relay client recover``) collects them from the relay's own blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chains.common import wire
from chains.common.state import ChainState
from protocol.codec import decode_charging_right, decode_energy
from protocol.errors import ClientRecoveryError, CodecError
from protocol.paths import outcome_path
from protocol.types import ChainId, PacketKind, check_id
from relay.chain.state_machine import rights, supply
from relay.chain.state_machine.clients import RelayClientRouter, verified_in_flight
from relay.chain.state_machine.keys import CONFIG_KEY, chain_lanes_key, frozen_at_key, suspended_key
from relay.chain.state_machine.lanes import load_lane, resume_lane
from relay.chain.state_machine.packets import PacketRef, decode_packet_ref
from relay.chain.state_machine.records import Event, Staged, json_object, list_arg, obj_args, str_arg
from relay.chain.state_machine.requests import CLIENT_RECOVER

__all__ = ["CLIENT_RECOVER", "DEFAULT_RECOVERY_DELAY_MS", "MAX_RECOVERY_DELAY_MS", "MAX_RECOVER_PACKETS",
           "RecoverRequest", "check_recovery_delay", "in_flight_keys", "parse_client_recover",
           "process_client_recover", "recovery_delay_ms"]

MAX_RECOVER_PACKETS = 1000
"""Most in-flight packets one recovery may revoke (a bound on one transaction's work and size)."""

DEFAULT_RECOVERY_DELAY_MS = 11 * 60_000
"""Default wait between a freeze and its recovery (SPEC §8.8): the bridges' default ``max_certificate_age_ms``
(10 minutes) plus a minute for the clock skew between the relay and a park."""
MAX_RECOVERY_DELAY_MS = 7 * 24 * 3600_000
"""Upper bound of the genesis ``recovery_delay_ms`` (a week; at least the bridges' largest bound, a day)."""

FROZEN_REASON_PREFIX = "client "
"""Lanes a freeze paused carry the reason ``client <id> frozen`` (:func:`.clients.freeze_events`)."""


@dataclass(frozen=True, slots=True)
class RecoverRequest:
    """``client.recover`` params, parsed."""

    chain_id: ChainId
    """The park chain whose client is frozen."""
    client_type: str
    """The substitute's type: the frozen client's."""
    init: dict[str, Any]
    """The substitute's init args (its trusted checkpoint among them)."""
    packets: tuple[PacketRef, ...]
    """Every packet of the chain VERIFIED on the relay without an outcome."""


def parse_client_recover(params: Mapping[str, Any]) -> RecoverRequest:
    """Strict parse (``codec.invalid``)."""
    args = obj_args(dict(params), CLIENT_RECOVER, ("chain_id", "client_type", "init", "packets"))
    chain = check_id("chain", str_arg(args, "chain_id", CLIENT_RECOVER))
    refs = tuple(decode_packet_ref(wire.hex_bytes(raw, f"packet {i} of {CLIENT_RECOVER}"))
                 for i, raw in enumerate(list_arg(args, "packets", CLIENT_RECOVER, MAX_RECOVER_PACKETS)))
    return RecoverRequest(ChainId(chain), str_arg(args, "client_type", CLIENT_RECOVER),
                          json_object(args["init"], f"init of {CLIENT_RECOVER}"), refs)


def in_flight_keys(state: ChainState, chain_id: str) -> dict[bytes, bytes]:
    """The chain's in-flight packets, keyed by their ``relay/verified/…`` path -> packet commitment: those the
    freeze suspended (``relay/suspended/{chain_id}/…``) and any ``relay/verified/{chain_id}/…`` record without an
    outcome (a client frozen before suspension existed).

    Prefix scans (governance is rare; the scans are deterministic, sorted)."""
    out = verified_in_flight(state, chain_id)
    for key, commitment in state.prefix_items(f"relay/suspended/{chain_id}/".encode()):
        out[b"relay/verified/" + key[len(b"relay/suspended/"):]] = commitment
    return out


def recovery_delay_ms(state: ChainState) -> int:
    """The relay's ``recovery_delay_ms`` (genesis; absent: :data:`DEFAULT_RECOVERY_DELAY_MS`)."""
    raw = (state.get_json(CONFIG_KEY) or {}).get("recovery_delay_ms")
    return DEFAULT_RECOVERY_DELAY_MS if raw is None else int(raw)


def check_recovery_delay(state: ChainState, chain_id: str, now_ms: int) -> None:
    """``client.recovery`` until the relay block time is past the freeze time + ``recovery_delay_ms``: by then
    every certificate of a suspended packet's ``relay/verified`` record (all from relay blocks before the freeze,
    whose times are at most the freeze time) is older than every target's ``max_certificate_age_ms`` (operators keep
    the delay >= each bound + the clock skew between the relay and that park, SPEC §7.9). A client frozen before
    the freeze time was recorded has no record: no delay."""
    frozen = state.get_json(frozen_at_key(chain_id))
    if frozen is None:
        return
    ready = int(frozen["time_ms"]) + recovery_delay_ms(state)
    if now_ms <= ready:
        raise ClientRecoveryError(f"recovery of {chain_id} waits {ready - now_ms + 1} ms more since its client froze: "
                                  "certificates of its revoked packets must be stale at every target first",
                                  expected=f"relay block time > {ready}", got=now_ms)


def _revoke(state: ChainState, ref: PacketRef) -> Event:
    """Undo what verifying ``ref`` did (supply or rights accountant), delete its ``relay/verified`` record."""
    p = ref.packet
    staged = Staged(state)
    if p.kind is PacketKind.ENERGY:
        supply.apply_outcome(staged, supply.classify(p, decode_energy(p.payload)), delivered=False)
    elif p.kind is PacketKind.CHARGING_RIGHT:
        rights.apply_outcome(staged, rights.classify(p, decode_charging_right(p.payload)), delivered=False)
    staged.flush()
    state.delete(ref.verified_key)
    state.delete(suspended_key(ref.verified_key))
    return {"type": "packet_revoked", **ref.ids(), "commitment": ref.commitment.hex(), "state": "committed"}


def _check_packets(state: ChainState, chain_id: str, refs: tuple[PacketRef, ...]) -> None:
    expected = in_flight_keys(state, chain_id)
    seen: set[bytes] = set()
    for ref in refs:
        p = ref.packet
        where = f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"
        if p.src_chain != chain_id:
            raise ClientRecoveryError("a recovery revokes only packets from the recovered chain", expected=chain_id,
                                      got=where)
        if ref.verified_key in seen:
            raise ClientRecoveryError("packet listed twice", got=where)
        seen.add(ref.verified_key)
        held = expected.get(ref.verified_key)
        if held is None:
            raise ClientRecoveryError("packet listed is not in flight (not verified, or already has an outcome)",
                                      got=where)
        if held != ref.commitment:
            raise ClientRecoveryError(f"packet listed differs from the one verified at {where}", expected=held.hex(),
                                      got=ref.commitment.hex())
        if state.get(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence)) is not None:  # pragma: no cover
            raise ClientRecoveryError("packet listed already has an outcome", got=where)
    missing = sorted(k.decode() for k in expected if k not in seen)
    if missing:
        raise ClientRecoveryError(f"{len(missing)} in-flight packet(s) of {chain_id} not listed: every one must be "
                                  "revoked", expected=missing[:20], got=len(refs))


def _resume_frozen_lanes(state: ChainState, chain_id: str) -> list[Event]:
    events: list[Event] = []
    for src, dst, lane in state.get_json(chain_lanes_key(chain_id)) or []:
        rec = load_lane(state, src, dst, lane)
        if rec is not None and rec.paused and rec.reason.startswith(FROZEN_REASON_PREFIX) \
                and rec.reason.endswith(" frozen"):
            events += resume_lane(state, src, dst, lane)
    return events


def process_client_recover(router: RelayClientRouter, state: ChainState, req: RecoverRequest,
                           now_ms: int) -> list[Event]:
    """``client.recover`` after :func:`.governance.authorize` accepted its signatures (module docstring)."""
    old = router.load(state, req.chain_id)
    if old.client.frozen_height is None:
        raise ClientRecoveryError(f"client {old.client_id} of {req.chain_id} is not frozen: nothing to recover",
                                  expected="a frozen client", got=old.client.status(now_ms).value)
    if req.client_type != old.ctype.name:
        raise ClientRecoveryError(f"a substitute for {old.client_id} must be of its kind", expected=old.ctype.name,
                                  got=req.client_type)
    check_recovery_delay(state, req.chain_id, now_ms)
    _check_packets(state, req.chain_id, req.packets)
    hosted, _ = router.create_in_state(state, req.client_type, req.chain_id, req.init)
    if hosted.client.frozen_height is not None:  # pragma: no cover - a new client is never frozen
        raise CodecError("substitute client is frozen at creation")
    revoked = [_revoke(state, ref) for ref in req.packets]
    resumed = _resume_frozen_lanes(state, req.chain_id)
    state.delete(frozen_at_key(req.chain_id))
    return [{"type": "client_recovered", "chain_id": req.chain_id, "client_id": hosted.client_id,
             "replaced": old.client_id, "frozen_height": old.client.frozen_height,
             "trusted_height": hosted.client.final_height,
             "revoked": [f"{e['src']}/{e['dst']}/{e['lane']}/{e['sequence']}" for e in revoked],
             "resumed_lanes": [f"{e['src']}/{e['dst']}/{e['lane']}" for e in resumed]},
            *revoked, *resumed]
