"""Client recovery by governance (SPEC.md §8.8), in process: a source park reorganises past its client's
finality, the client freezes, ``client.recover`` replaces it with a substitute at a trusted height and revokes
the packets verified on the abandoned branch.

The park is the bridge simulator's, its headers the single-signer test chain's; a "reorg" restores the park's
state tree to its fork point and grows a new branch from there (other transactions, other roots). Each refusal
is typed and leaves the relay state root unchanged. Every scenario ends with the parks' conservation check and,
at rest, the relay's supply accountant agreeing with the parks' escrow and voucher supply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from protocol.codec import encode_packet
from protocol.errors import (
    CertificateStaleError,
    ClientFrozenError,
    ClientRecoveryError,
    CodecError,
    InvalidProofError,
    ProtocolError,
    QuorumError,
    ReplayError,
    SignatureError,
    UnknownClientError,
    WrongChainError,
)
from protocol.paths import outcome_path, receipt_path, verified_path
from protocol.types import ChainId, ClientId, Packet
from relay.chain.state_machine import RelayStateMachine
from relay.chain.state_machine.governance import governance_nonce
from relay.chain.state_machine.keys import suspended_key
from relay.chain.state_machine.recovery import in_flight_keys
from tests.unit.relay_state.harness import DPOS, LANE, MINUTE, POC, RELAY, RelayHarness
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE, SingleSignerHeader, create_single_signer

SRC, DST = POC, DPOS
"""The park that reorganises (its client is recovered) and the target of its packets."""


DELAY = 60_000
"""The relay's recovery_delay_ms in these tests (the parks' bridges keep the default 10-minute certificate bound:
the tests below that show certificates going stale use a delay at least that long)."""


@pytest.fixture
def h() -> RelayHarness:
    return RelayHarness(recovery_delay_ms=DELAY)


def send(h: RelayHarness, amount: int = 5_000, timeout: int | None = None) -> Packet:
    """Native kWh of poc-park from carol to alice on dpos-park."""
    return h.send(src=SRC, sender="carol", amount_wh=amount,
                  timeout_timestamp_ms=timeout if timeout is not None else h.net.now_ms + 10 * MINUTE)


def freeze_by_reorg(h: RelayHarness, *, wait: bool = True, timeout: int | None = None,
                    certs: dict[int, dict[str, Any]] | None = None) -> tuple[list[Packet], Any]:
    """poc-park commits two packets on a branch the relay takes as final and verifies them; then the park
    abandons that branch (its state goes back to the fork point) and a header of the new branch at a final
    height freezes the client; with ``wait``, the relay's recovery delay then passes. Returns the abandoned
    packets and the fork point's state tree."""
    fork_tree = h.feeds[SRC].state.tree
    fork_height = h.update(SRC)
    abandoned = [send(h, 5_000, timeout), send(h, 7_000, timeout)]
    for p in abandoned:
        h.verify(p)
        if certs is not None:  # a relayer fetches its certificate before the freeze
            certs[p.sequence] = h.certificate(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence))
    # the park reorganises: its state is back to the fork point, and its new branch has other blocks
    park = h.net.parks[SRC]
    park.state.tree = fork_tree
    h.net.advance(1_000)
    other = SingleSignerHeader(SRC, fork_height + 1, h.net.now_ms, b"\x42" * 32).signed(h.feeds[SRC].key)
    events = h.submit("client.update", {"chain_id": SRC, "headers": [other.encode().hex()]})
    assert events[0]["type"] == "client_frozen"
    if wait:
        h.net.advance(DELAY + 1)
    return abandoned, fork_tree


def recover_params(h: RelayHarness, packets: list[Packet], **over: Any) -> dict[str, Any]:
    return {"chain_id": SRC, "client_type": "single", "init": h.genesis["clients"][SRC]["init"],
            "packets": [encode_packet(p).hex() for p in packets], **over}


def refused(h: RelayHarness, exc: type[ProtocolError], op: str, args: dict[str, Any]) -> ProtocolError:
    """The transaction fails with ``exc`` (exactly that code) and the relay state is unchanged."""
    root = h.root
    with pytest.raises(ProtocolError) as info:
        h.submit(op, args)
    assert info.value.code == exc.code, info.value
    assert h.root == root
    return info.value


def lanes_paused(h: RelayHarness) -> list[bool]:
    return [h.sm.lane(h.state, a, b, LANE)["paused"] for a, b in ((SRC, DST), (DST, SRC))]  # type: ignore[index]


# --- refusals --------------------------------------------------------------------------------------


def test_recovery_of_an_active_client_is_refused(h: RelayHarness) -> None:
    err = refused(h, ClientRecoveryError, "client.recover", h.gov_args("client.recover", recover_params(h, [])))
    assert "not frozen" in err.message


def test_recovery_refusals_are_typed_and_change_nothing(h: RelayHarness) -> None:
    abandoned, _ = freeze_by_reorg(h)
    good = recover_params(h, abandoned)

    def gov(params: dict[str, Any], indices: tuple[int, ...] = (0, 1, 2, 3)) -> dict[str, Any]:
        return h.gov_args("client.recover", params, indices)

    # another kind of client: a recovery keeps the kind
    refused(h, ClientRecoveryError, "client.recover", gov({**good, "client_type": "poc"}))
    # a substitute describing another chain
    refused(h, UnknownClientError, "client.recover", gov({**good, "chain_id": "nowhere"}))
    # malformed substitutes and params
    refused(h, CodecError, "client.recover", gov({**good, "init": {"pubkey": "zz"}}))
    refused(h, CodecError, "client.recover", gov({**good, "init": [1]}))
    refused(h, CodecError, "client.recover", gov({**good, "packets": ["00"]}))
    refused(h, CodecError, "client.recover", gov({**good, "extra": 1}))
    # the in-flight list must be exactly the relay's
    refused(h, ClientRecoveryError, "client.recover", gov(recover_params(h, abandoned[:1])))
    refused(h, ClientRecoveryError, "client.recover", gov(recover_params(h, [*abandoned, abandoned[0]])))
    # quorum: 2 of 4 equal-power validators is not > 2/3
    refused(h, QuorumError, "client.recover", gov(good, (0, 1)))
    # signatures for another action do not serve this one
    refused(h, SignatureError, "client.recover", {**good, "gov": h.gov_args("client.create", good)["gov"]})
    # a nonce ahead of its turn waits (refused now); a missing authorisation is refused
    refused(h, ProtocolError, "client.recover", h.gov_args("client.recover", good, nonce=governance_nonce(h.state) + 1))
    refused(h, SignatureError, "client.recover", good)
    assert h.sm.client_status(h.state, SRC, h.net.now_ms)["status"] == "frozen"
    assert lanes_paused(h) == [True, True]
    # the good one executes once; replaying it is packet.replay
    args = gov(good)
    h.submit("client.recover", args)
    refused(h, ReplayError, "client.recover", args)


def test_a_substitute_of_another_chain_is_refused(h: RelayHarness) -> None:
    """A substitute whose init describes another chain (a PoC init names its genesis' chain) is refused."""

    def create(client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> Any:
        args = dict(init)
        return create_single_signer(client_id, ChainId(args.pop("chain_id", chain_id)), args)

    # the same relay state under a state machine whose "single" substitutes may name their chain
    h.sm = RelayStateMachine(RELAY, [replace(SINGLE_SIGNER_TYPE, create=create)])
    abandoned, _ = freeze_by_reorg(h)
    params = recover_params(h, abandoned, init={**h.genesis["clients"][SRC]["init"], "chain_id": "edge-park"})
    refused(h, WrongChainError, "client.recover", h.gov_args("client.recover", params))
    h.govern("client.recover", recover_params(h, abandoned))
    assert h.sm.client_status(h.state, SRC, h.net.now_ms)["status"] == "active"


# --- recovery ----------------------------------------------------------------------------------------


def test_recovery_revokes_abandoned_packets_and_the_new_branch_ends_each_exactly_once(h: RelayHarness) -> None:
    abandoned, _ = freeze_by_reorg(h)
    a1, a2 = abandoned
    assert h.supply(SRC, DST)["outbound"] == 12_000
    assert lanes_paused(h) == [True, True]
    # the new branch: carol re-commits the first packet identically (same sequence, same bytes); the second is gone
    # and a third, different packet takes its sequence
    again = send(h, 5_000, timeout=a1.timeout_timestamp_ms)
    assert encode_packet(again) == encode_packet(a1)
    other = send(h, 3_000)
    assert other.sequence == a2.sequence and encode_packet(other) != encode_packet(a2)
    # while frozen the client takes no header and verifies nothing
    refused(h, ClientFrozenError, "client.update", h.header_args(SRC)[1])
    third = send(h, 1_000)
    refused(h, ClientFrozenError, "packet.verify", {"packet": encode_packet(third).hex(), "height": 1, "proof": "00"})

    ev = h.govern("client.recover", recover_params(h, abandoned))
    rec = ev[0]
    assert rec["type"] == "client_recovered" and rec["replaced"] == "single-1" and rec["client_id"] == "single-2"
    assert sorted(rec["revoked"]) == sorted(f"{SRC}/{DST}/{LANE}/{p.sequence}" for p in abandoned)
    assert sorted(rec["resumed_lanes"]) == [f"{DST}/{SRC}/{LANE}", f"{SRC}/{DST}/{LANE}"]
    assert lanes_paused(h) == [False, False]
    assert h.sm.client_status(h.state, SRC, h.net.now_ms)["status"] == "active"
    assert in_flight_keys(h.state, SRC) == {}
    assert h.supply(SRC, DST)["outbound"] == 0  # the accountant's verify of both is undone
    for p in abandoned:
        assert h.state.get(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence)) is None
        assert h.sm.packet_state(h.state, encode_packet(p)) == "committed"

    # no relay certificate from now on lets the target execute an abandoned packet
    with pytest.raises(InvalidProofError):
        h.deliver(a2)
    # the abandoned packet is not on the new branch: the substitute refuses its commitment
    refused(h, InvalidProofError, "packet.verify", h.verify_args(a2))

    # the new branch's packets go through the substitute, each exactly once
    for p in (again, other, third):
        h.roundtrip(p)
    h.net.check()
    h.check_accounts_agree(SRC, DST)
    assert h.feeds[DST].state.balance("alice", f"{LANE}/{SRC}/kWh") == 9_000
    assert h.feeds[SRC].state.balance("carol", "kWh") == 40_000 - 9_000


def test_recovered_client_follows_new_branch_headers_from_its_trusted_height(h: RelayHarness) -> None:
    abandoned, _ = freeze_by_reorg(h)
    h.govern("client.recover", recover_params(h, abandoned))
    before = h.sm.client_status(h.state, SRC, h.net.now_ms)["latest_height"]
    height = h.update(SRC)
    assert height > before
    assert h.sm.client_status(h.state, SRC, h.net.now_ms)["final_height"] == height
    # misbehaviour against the substitute freezes it again (a recovery is no amnesty), and a second recovery works
    other = SingleSignerHeader(SRC, height, h.net.now_ms, b"\x43" * 32).signed(h.feeds[SRC].key)
    assert h.submit("client.update", {"chain_id": SRC, "headers": [other.encode().hex()]})[0]["type"] == \
        "client_frozen"
    assert lanes_paused(h) == [True, True]
    h.net.advance(DELAY + 1)
    h.govern("client.recover", recover_params(h, []))
    assert lanes_paused(h) == [False, False]


def test_a_lane_paused_by_governance_stays_paused_after_recovery(h: RelayHarness) -> None:
    h.govern("lane.pause", {"src": DST, "dst": SRC, "lane": LANE})
    abandoned, _ = freeze_by_reorg(h)
    h.govern("client.recover", recover_params(h, abandoned))
    assert lanes_paused(h) == [False, True]


def test_a_packet_executed_before_the_freeze_is_not_revoked_when_its_outcome_is_recorded(h: RelayHarness) -> None:
    """A packet whose outcome the relay recorded before the freeze is settled history: not in flight."""
    settled = send(h, 1_000)
    h.roundtrip(settled)
    abandoned, _ = freeze_by_reorg(h)
    keys = in_flight_keys(h.state, SRC)
    assert sorted(keys) == sorted(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence) for p in abandoned)
    # listing the settled one is refused
    refused(h, ClientRecoveryError, "client.recover",
            h.gov_args("client.recover", recover_params(h, [*abandoned, settled])))
    h.govern("client.recover", recover_params(h, abandoned))
    assert h.state.get(outcome_path(settled.src_chain, settled.dst_chain, settled.lane, settled.sequence))


# --- the stale-certificate gap (SPEC §8.8, §7.9) -----------------------------------------------------------


def test_the_freeze_suspends_in_flight_packets_and_recovery_waits_for_the_delay(h: RelayHarness) -> None:
    abandoned, _ = freeze_by_reorg(h, wait=False)
    frozen_at = h.net.now_ms
    keys = [verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence) for p in abandoned]
    # the relay/verified records left the provable path in the freeze's own block; recovery still finds them
    for key in keys:
        assert h.state.get(key) is None and h.state.get(suspended_key(key)) is not None
    assert sorted(in_flight_keys(h.state, SRC)) == sorted(keys)
    # a certificate of any relay block from the freeze on proves the record's absence: no delivery
    for p in abandoned:
        with pytest.raises(InvalidProofError):
            h.deliver(p)
    # nor can the relay confirm or time out a suspended packet
    refused(h, ClientFrozenError, "packet.confirm_timeout", {"packet": encode_packet(abandoned[0]).hex(),
                                                             "height": 1, "proof": "00"})
    # a plain client.create cannot end the suspension (only client.recover revokes)
    refused(h, ClientRecoveryError, "client.create",
            h.gov_args("client.create", {"chain_id": SRC, "client_type": "single",
                                         "init": h.genesis["clients"][SRC]["init"]}))
    # recovery is refused until the relay's block time is past freeze + recovery_delay_ms, and changes nothing
    args = h.gov_args("client.recover", recover_params(h, abandoned))
    err = refused(h, ClientRecoveryError, "client.recover", args)
    assert err.expected == f"relay block time > {frozen_at + DELAY}"
    h.net.advance(DELAY)
    refused(h, ClientRecoveryError, "client.recover", args)
    h.net.advance(1)
    ev = h.submit("client.recover", args)
    assert ev[0]["type"] == "client_recovered"
    for key in keys:
        assert h.state.get(key) is None and h.state.get(suspended_key(key)) is None
    assert in_flight_keys(h.state, SRC) == {}
    assert h.supply(SRC, DST)["outbound"] == 0


def test_a_certificate_from_before_the_freeze_is_stale_at_the_target_once_recovery_is_allowed() -> None:
    """The gap closed: a relayer holding a certificate taken before the freeze cannot execute a revoked packet
    after the recovery, since the recovery waited the target's max_certificate_age_ms (10 minutes here)."""
    delay = 10 * MINUTE
    h = RelayHarness(recovery_delay_ms=delay)
    certs: dict[int, dict[str, Any]] = {}
    abandoned, _ = freeze_by_reorg(h, wait=False, timeout=h.net.now_ms + 60 * MINUTE, certs=certs)
    h.net.advance(delay + 1)
    h.govern("client.recover", recover_params(h, abandoned))
    target = h.feeds[DST].state
    voucher = f"{LANE}/{SRC}/kWh"
    for p in abandoned:
        root = target.root
        with pytest.raises(CertificateStaleError):
            h.net.recv(p, certs[p.sequence])
        assert target.root == root  # nothing minted, no receipt
        assert target.get(receipt_path(p.src_chain, p.lane, p.sequence)) is None
    assert target.balance("alice", voucher) == 0
    # the new branch re-commits nothing here; a new packet verifies through the substitute and executes once
    fresh = send(h, 2_000, h.net.now_ms + 10 * MINUTE)
    h.roundtrip(fresh)
    assert target.balance("alice", voucher) == 2_000
    h.net.check()
    h.check_accounts_agree(SRC, DST)
