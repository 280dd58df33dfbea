"""Relay validator sets on the Python parks' bridge over time (protocol SPEC §7.1, §7.8): sets repeating a key
or an Ethereum address are refused at genesis and at rotation; the trusted set expires after the trusting period
without a fresh relay header (certificates, lane updates and set updates all refused), a verified certificate or
a same-set update refreshes it, and the relay admin resets an expired bridge. Every refusal is typed and leaves
every park's state as it was; conservation and rights checks close each scenario."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chains.common import wire
from chains.common.bridge import (
    DAY_MS,
    DEFAULT_MAX_CERTIFICATE_AGE_MS,
    DEFAULT_TRUSTING_PERIOD_MS,
    REFRESH_STEP_FRACTION,
    init_bridge,
    relay_trust,
    trusted_relay_set,
)
from chains.common.state import ChainState
from protocol.certificate import RelayCommit, Validator, ValidatorSet
from protocol.errors import (
    AuthorizationError,
    CertificateStaleError,
    ClientExpiredError,
    CodecError,
    DuplicateValidatorError,
    IllegalTransitionError,
    ProtocolError,
    ReplayError,
    ValidatorSetMismatchError,
)
from tests.unit.bridge.sim import T0, Network, relay_signers, two_parks, validator_set

ENERGY = {"dst_chain": "poc-park", "lane": "lane-0", "kind": "energy", "receiver": "bob", "denom": "kWh",
          "amount_wh": 100}
PERIOD = DEFAULT_TRUSTING_PERIOD_MS
STEP = PERIOD // REFRESH_STEP_FRACTION


def _update(net: Network, commit: RelayCommit, new_set: ValidatorSet | dict[str, Any],
            park: str = "poc-park") -> Any:
    body = new_set if isinstance(new_set, dict) else wire.validator_set_to_json(new_set)
    return net.parks[park].tx("relayer", "bridge.update_relay_validators",
                              {"commit": wire.commit_to_json(commit), "new_set": body})


def _reset(net: Network, new_set: ValidatorSet, height: int, time_ms: int, sender: str = "operator") -> Any:
    return net.parks["poc-park"].tx(sender, "bridge.reset_relay_validators",
                                    {"new_set": wire.validator_set_to_json(new_set), "height": height,
                                     "time_ms": time_ms})


def _refused(net: Network, error: type[ProtocolError], op: Any) -> None:
    """``op`` raises exactly ``error`` and no park's state moves."""
    roots = net.roots()
    trust = relay_trust(net.parks["poc-park"].state)
    with pytest.raises(error) as info:
        op()
    assert type(info.value) is error, repr(info.value)
    assert net.roots() == roots
    assert relay_trust(net.parks["poc-park"].state) == trust


def _deliver(net: Network) -> dict[str, Any]:
    packet = net.send("dpos-park", "alice", **ENERGY)
    return net.recv(packet, net.verify(packet))


def _with_key_of(vs: ValidatorSet, index: int, source: int, *, address: bool = False) -> dict[str, Any]:
    """The wire JSON of ``vs`` with validator ``index`` given validator ``source``'s key (or address)."""
    body = wire.validator_set_to_json(vs)
    field = "eth_address" if address else "ed25519_pubkey"
    body["validators"][index] = {**body["validators"][index], field: body["validators"][source][field]}
    del body["hash"]
    return body


def _with_addresses(vs: ValidatorSet, addresses: list[bytes]) -> ValidatorSet:
    return ValidatorSet(tuple(replace(v, eth_address=a) for v, a in zip(vs.validators, addresses, strict=True)))


# --- §7.1: repeated keys and addresses --------------------------------------------------------------------------


def test_a_set_repeating_a_key_or_an_address_is_refused_everywhere_in_python() -> None:
    vs = validator_set(relay_signers(0))
    base = [Validator(v.name, v.ed25519_pubkey, bytes([i + 1]) * 20, v.power) for i, v in enumerate(vs.validators)]
    with pytest.raises(DuplicateValidatorError):
        ValidatorSet((base[0], replace(base[1], ed25519_pubkey=base[0].ed25519_pubkey)))
    with pytest.raises(DuplicateValidatorError):
        ValidatorSet((base[0], base[1], replace(base[2], eth_address=base[0].eth_address)))
    # the zero address is "no secp256k1 key": it may repeat
    assert len(ValidatorSet(tuple(replace(v, eth_address=bytes(20)) for v in base)).validators) == 4
    assert issubclass(DuplicateValidatorError, CodecError)  # old callers catching codec.invalid still do
    with pytest.raises(DuplicateValidatorError):
        wire.validator_set_from_json(_with_key_of(vs, 3, 0))


def test_genesis_with_a_repeated_key_is_refused() -> None:
    state = ChainState()
    body = _with_key_of(validator_set(relay_signers(0)), 2, 1)
    with pytest.raises(DuplicateValidatorError):
        init_bridge(state, "poc-park", "relay", wire.validator_set_from_json(body), ["kWh"], [])
    assert state.get(b"bridge/config") is None


@pytest.mark.parametrize("address", [False, True], ids=["ed25519 key", "eth address"])
def test_rotation_to_a_set_repeating_a_key_or_an_address_is_refused(address: bool) -> None:
    net = two_parks()
    good = _with_addresses(validator_set(relay_signers(1)), [bytes([i + 1]) * 20 for i in range(4)])
    bad = _with_key_of(good, 3, 0, address=address)
    commit = net.relay.commit(net.now_ms, next_set=good)  # signed by the trusted set, names a valid set
    _refused(net, DuplicateValidatorError, lambda: _update(net, commit, bad))
    assert trusted_relay_set(net.parks["poc-park"].state)[0] == net.relay.vset


# --- §7.8: the trusting period -----------------------------------------------------------------------------------


def test_trust_is_recorded_at_genesis_and_queried() -> None:
    net = two_parks()
    trust = relay_trust(net.parks["poc-park"].state)
    assert trust.to_json() == {"validators": wire.validator_set_to_json(net.relay.vset), "update_height": 0,
                               "trusted_time_ms": T0, "trusting_period_ms": PERIOD, "expires_at_ms": T0 + PERIOD}
    assert PERIOD == 7 * DAY_MS


@pytest.mark.parametrize("period", [59_999, 366 * DAY_MS, True, "1"])
def test_trusting_period_out_of_bounds_is_refused(period: Any) -> None:
    state = ChainState()
    with pytest.raises(CodecError):
        init_bridge(state, "poc-park", "relay", validator_set(relay_signers(0)), ["kWh"], [],
                    trusting_period_ms=period)
    assert state.get(b"bridge/config") is None


def test_certificates_and_updates_are_refused_once_trust_expired_then_a_reset_recovers() -> None:
    net = two_parks()
    dpos_packet = net.send("dpos-park", "alice", **{**ENERGY, "timeout_timestamp_ms": T0 + 2 * PERIOD})
    cert = net.verify(dpos_packet)
    net.advance(PERIOD)  # exactly the period: still trusted
    net.parks["dpos-park"].tx("relayer", "bridge.update_relay_validators", {
        "commit": wire.commit_to_json(net.relay.commit(net.now_ms)),
        "new_set": wire.validator_set_to_json(net.relay.vset)})  # keeps dpos-park fresh, not poc-park
    net.advance(1)
    poc = net.parks["poc-park"]
    # a packet certificate, a lane update, a same-set refresh and a rotation: all refused, nothing moves
    late = net.send("dpos-park", "alice", **{**ENERGY, "timeout_timestamp_ms": net.now_ms + 60_000})
    late_cert = net.verify(late)
    _refused(net, ClientExpiredError, lambda: net.recv(late, late_cert))
    _refused(net, ClientExpiredError, lambda: net.recv(dpos_packet, cert))
    args = net.lane_update_args("poc-park", "dpos-park", "lane-0", {"kWh": 5})
    _refused(net, ClientExpiredError, lambda: poc.tx("relayer", "bridge.update_lane", args))
    refresh = net.relay.commit(net.now_ms)
    _refused(net, ClientExpiredError, lambda: _update(net, refresh, net.relay.vset))
    commit, new_set = net.relay.rotate(net.now_ms, generation=1)
    _refused(net, ClientExpiredError, lambda: _update(net, commit, new_set))
    # the reset: only the admin, only above the last height, only a time within the period
    _refused(net, AuthorizationError, lambda: _reset(net, new_set, commit.header.height, net.now_ms, "relayer"))
    _refused(net, ReplayError, lambda: _reset(net, new_set, 0, net.now_ms))
    _refused(net, CodecError, lambda: _reset(net, new_set, commit.header.height, net.now_ms - PERIOD))
    _refused(net, CodecError, lambda: _reset(net, new_set, commit.header.height, net.now_ms + STEP + 1))
    (event,) = _reset(net, new_set, commit.header.height, net.now_ms)
    assert event == {"type": "relay_validators_reset", "height": commit.header.height, "hash": new_set.hash.hex(),
                     "validators": 4, "trusted_time_ms": net.now_ms}
    assert relay_trust(poc.state).expires_at_ms() == net.now_ms + PERIOD
    # a second reset while trusted is refused: a live bridge follows certified updates only
    _refused(net, IllegalTransitionError, lambda: _reset(net, validator_set(relay_signers(2)), 10**6, net.now_ms))
    # the new set's certificates pass now (the late packet's receipt was never written), the old set's do not
    assert net.recv(late, net.verified_cert(late))["success"]
    stale = net.verified_cert(dpos_packet, signers=relay_signers(0), vset=validator_set(relay_signers(0)))
    _refused(net, ValidatorSetMismatchError, lambda: net.recv(dpos_packet, stale))
    assert net.recv(dpos_packet, net.verified_cert(dpos_packet))["success"]
    net.check()


def test_verified_certificates_refresh_the_trust_in_steps() -> None:
    net = two_parks()
    poc = net.parks["poc-park"]
    net.advance(STEP - 1)
    assert _deliver(net)["success"]
    assert relay_trust(poc.state).trusted_time_ms == T0  # less than a step: nothing written
    net.advance(1)
    assert _deliver(net)["success"]
    assert relay_trust(poc.state).trusted_time_ms == T0 + STEP
    # a relay clock ahead of the park's: refreshed to the header's time only within a step of the block time
    packet = net.send("dpos-park", "alice", **ENERGY)
    net.relay.verify_packet(net.parks["dpos-park"], packet)
    ahead = wire.certificate_to_json(net.relay.certificate(
        b"relay/verified/dpos-park/poc-park/lane-0/%d" % packet.sequence, net.now_ms + 2 * STEP))
    assert net.recv(packet, ahead)["success"]
    assert relay_trust(poc.state).trusted_time_ms == T0 + STEP
    # so a bridge that keeps receiving never expires
    for _ in range(3):
        net.advance(PERIOD // 2)
        assert _deliver(net)["success"]
    assert not relay_trust(poc.state).expired(net.now_ms + PERIOD // 2)
    net.check()


def test_a_same_set_update_keeps_an_idle_bridge_fresh() -> None:
    net = two_parks()
    poc = net.parks["poc-park"]
    for _ in range(3):  # three periods with no packet, refreshed every half period
        net.advance(PERIOD // 2)
        commit = net.relay.commit(net.now_ms)  # an unchanged set names itself as the next one
        (event,) = _update(net, commit, net.relay.vset)
        assert event["hash"] == net.relay.vset.hash.hex()
        trust = relay_trust(poc.state)
        assert (trust.trusted_time_ms, trust.update_height) == (net.now_ms, commit.header.height)
    net.advance(PERIOD)
    assert _deliver(net)["success"]
    # the refresh of an older commit is a replay
    _refused(net, ReplayError, lambda: _update(net, commit, net.relay.vset))
    net.check()


def test_a_retired_set_is_refused_after_rotation_even_if_its_keys_leak() -> None:
    net = two_parks()
    old_signers, old_set = relay_signers(0), net.relay.vset
    commit, new_set = net.relay.rotate(net.now_ms, generation=1)
    _update(net, commit, new_set)
    packet = net.send("dpos-park", "alice", **ENERGY)
    net.relay.verify_packet(net.parks["dpos-park"], packet)
    forged = net.verified_cert(packet, signers=old_signers, vset=old_set)
    _refused(net, ValidatorSetMismatchError, lambda: net.recv(packet, forged))
    # nor can the retired set rotate the bridge back to itself, or to anything
    back = net.relay.commit(net.now_ms, signers=old_signers, vset=old_set, next_set=old_set)
    _refused(net, ValidatorSetMismatchError, lambda: _update(net, back, old_set))
    assert net.recv(packet, net.verified_cert(packet))["success"]
    net.check()


def test_a_lagging_bridge_expires_before_a_retired_set_can_forge() -> None:
    """The relay rotated, the poc park's bridge missed it; once the period has passed, the retired keys (leaked)
    forge nothing there; the admin resets to the current set."""
    net = two_parks()
    old_signers, old_set = relay_signers(0), net.relay.vset
    commit, new_set = net.relay.rotate(net.now_ms, generation=1)
    _update(net, commit, new_set, park="dpos-park")  # the dpos park follows, the poc park does not
    net.advance(PERIOD + 1)
    packet = net.send("dpos-park", "alice", **ENERGY)
    net.relay.verify_packet(net.parks["dpos-park"], packet)
    forged = net.verified_cert(packet, signers=old_signers, vset=old_set)
    _refused(net, ClientExpiredError, lambda: net.recv(packet, forged))
    _reset(net, new_set, commit.header.height, net.now_ms)
    _refused(net, ValidatorSetMismatchError, lambda: net.recv(packet, forged))
    assert net.recv(packet, net.verified_cert(packet))["success"]
    net.check()


def test_a_bridge_from_before_trusting_periods_never_expires_and_one_without_a_time_starts_at_first_use() -> None:
    state = ChainState()
    init_bridge(state, "poc-park", "relay", validator_set(relay_signers(0)), ["kWh"], [])
    assert relay_trust(state).trusted_time_ms is None and not relay_trust(state).expired(2**62)
    legacy = state.get_json(b"bridge/config")
    del legacy["trusting_period_ms"]
    state.set_json(b"bridge/config", legacy)
    assert relay_trust(state).trusting_period_ms is None and relay_trust(state).expires_at_ms() is None


def test_settlement_is_refused_once_the_source_bridge_expired() -> None:
    net = two_parks()
    packet = net.send("dpos-park", "alice", **ENERGY)
    assert net.recv(packet, net.verify(packet))["success"]
    outcome, ack = net.confirm(packet)
    net.advance(PERIOD + 1)
    _refused(net, ClientExpiredError, lambda: net.settle(packet, outcome, ack))
    dpos = net.parks["dpos-park"]
    commit = net.relay.commit(net.now_ms)
    dpos.tx("operator", "bridge.reset_relay_validators", {"new_set": wire.validator_set_to_json(net.relay.vset),
                                                          "height": commit.header.height, "time_ms": net.now_ms})
    net.settle(packet, net.outcome_cert(packet), ack)
    net.check()


@pytest.mark.parametrize("age", [9_999, DAY_MS + 1, True, "600000", None])
def test_max_certificate_age_out_of_bounds_is_refused(age: Any) -> None:
    state = ChainState()
    with pytest.raises(CodecError):
        init_bridge(state, "poc-park", "relay", validator_set(relay_signers(0)), ["kWh"], [],
                    max_certificate_age_ms=age)
    assert state.get(b"bridge/config") is None


def test_a_phase3_certificate_older_than_the_bound_is_refused_and_a_fresh_one_accepted() -> None:
    """SPEC §7.9: exactly the bound old still executes; a millisecond older is ``certificate.stale`` with nothing
    written (no receipt, no voucher, trust not refreshed); a certificate of a newer relay block executes; phase 4
    takes an old outcome certificate (outcomes are never revoked)."""
    assert DEFAULT_MAX_CERTIFICATE_AGE_MS == 10 * 60_000
    net = two_parks()
    first = net.send("dpos-park", "alice", **{**ENERGY, "timeout_timestamp_ms": T0 + DAY_MS})
    second = net.send("dpos-park", "alice", **{**ENERGY, "timeout_timestamp_ms": T0 + DAY_MS})
    cert1, cert2 = net.verify(first), net.verify(second)
    net.advance(DEFAULT_MAX_CERTIFICATE_AGE_MS)
    assert net.recv(first, cert1)["success"]  # now - header time == the bound
    net.advance(1)
    _refused(net, CertificateStaleError, lambda: net.recv(second, cert2))
    assert net.recv(second, net.verified_cert(second))["success"]
    outcome, ack = net.confirm(first)
    net.advance(DEFAULT_MAX_CERTIFICATE_AGE_MS + 1)
    net.settle(first, outcome, ack)
    net.check()
