"""The EVM bridge's relay validator set over time, on anvil (protocol SPEC §7.1, §7.8): sets repeating an ed25519
key or a non-zero Ethereum address refused at deployment and at rotation with their custom errors; the trusting
period from the deployment block, refreshed by verified headers, expiring (``RelayTrustExpired``), and the owner's
reset; a retired set's certificate refused after rotation. Every refusal leaves the bridge's trust and receipts
as they were."""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils import to_checksum_address

from tests.ethereum.conftest import DPOS, LANE, World
from tests.ethereum.harness import (
    Park,
    RelaySim,
    TxFailed,
    commit_abi,
    deploy_park,
    lower_hex,
    make_validators,
    recv_packet,
    validator_set_abi,
)
from tests.ethereum.test_contracts import SUCCESS_ACK, py_packet, recv_call

pytestmark = pytest.mark.integration

PERIOD_MS = 640_000
STEP_MS = PERIOD_MS // 64  # 10 s


def _trust(park: Park) -> dict[str, Any]:
    h, height, t, period, expires = park.bridge.functions.relayTrust().call()
    return {"hash": bytes(h), "height": height, "trusted_ms": t, "period_ms": period, "expires_ms": expires}


def _fresh(w: World) -> tuple[RelaySim, Park]:
    """A park of its own (``eth-t``, a lane to the DPoS park), short trusting period, relay clock = chain clock."""
    relay = RelaySim.create("relay", 4, filler_records=16)
    park = deploy_park(w.evm, "eth-t", relay, [(DPOS, LANE)], trusting_period_ms=PERIOD_MS)
    relay.time_ms = w.evm.now_ms()
    return relay, park


def _packet(w: World, seq: int, timeout_ms: int) -> bytes:
    return py_packet("eth-t", receiver=lower_hex(w.bob.address), timeout_ms=timeout_ms, sequence=seq)


def _refused(w: World, park: Park, call: Any, sender: Any = None) -> str:
    """The custom error ``call`` reverts with; the bridge's trust unchanged."""
    before = _trust(park)
    name = w.evm.error_name(call, sender or w.relayer)
    assert name is not None, "accepted"
    assert _trust(park) == before
    return name


def test_sets_repeating_a_key_or_an_address_are_refused_at_deployment_and_rotation(world: World) -> None:
    w = world
    relay = RelaySim.create("relay", 4, filler_records=16)
    keys, addrs, powers = validator_set_abi(relay.vset)
    apps = (w.b.energy_app.address, w.b.rights.address, w.b.reputation.address)

    def deploy(vs: Any, period: int = PERIOD_MS) -> Any:
        return w.evm.deploy("ParkBridge", w.relayer, "eth-x", "relay", vs, w.b.token.address, *apps, period,
                            600_000)

    with pytest.raises(TxFailed, match="DuplicateValidatorKey"):
        deploy(([keys[0], keys[1], keys[2], keys[1]], addrs, powers))
    with pytest.raises(TxFailed, match="DuplicateValidatorAddress"):
        deploy((keys, [addrs[0], addrs[3], addrs[2], addrs[3]], powers))
    for period in (59_999, 365 * 86_400_000 + 1):
        with pytest.raises(TxFailed, match="CodecInvalid"):
            deploy((keys, addrs, powers), period)
    zero = to_checksum_address(bytes(20))
    deploy((keys, [zero, zero, addrs[2], addrs[3]], powers))  # "no secp256k1 key" may repeat

    bridge, trusted = w.b.bridge, validator_set_abi(w.relay.vset)
    commit, _, new_set = w.relay.rotate(4)
    nk, na, npw = validator_set_abi(new_set)
    cases = {
        "DuplicateValidatorKey": ([nk[0], nk[1], nk[0], nk[3]], na, npw),
        "DuplicateValidatorAddress": (nk, [na[0], na[1], na[2], na[1]], npw),
    }
    for name, vs in cases.items():
        assert _refused(w, w.b, bridge.functions.updateRelayValidators(vs, commit_abi(commit), trusted)) == name
    assert w.evm.revert_of(bridge.functions.updateRelayValidators(cases["DuplicateValidatorKey"], commit_abi(commit),
                                                                 trusted), w.relayer) == ("DuplicateValidatorKey", 2,
                                                                                          nk[0])


def test_trust_refreshes_expires_and_the_owner_resets_it(world: World) -> None:
    w = world
    relay, park = _fresh(w)
    t0 = _trust(park)
    assert (t0["hash"], t0["height"], t0["period_ms"]) == (relay.vset.hash, 0, PERIOD_MS)
    assert t0["expires_ms"] == t0["trusted_ms"] + PERIOD_MS and t0["trusted_ms"] <= w.evm.now_ms()
    far = t0["trusted_ms"] + 10 * PERIOD_MS

    # a certificate whose header is a step past the trusted time (and not ahead of the chain) refreshes it
    relay.time_ms = t0["trusted_ms"] + 2 * STEP_MS - 1000  # the next commit's time is 2 steps later
    w.evm.mine_at((t0["trusted_ms"] + 3 * STEP_MS) // 1000)
    p1 = _packet(w, 1, far)
    ack, _ = recv_packet(w.evm, park, w.relayer, p1, relay.verify(p1), relay.vset)
    assert ack == SUCCESS_ACK
    assert _trust(park)["trusted_ms"] == t0["trusted_ms"] + 2 * STEP_MS
    # one less than a step later: verified, not written
    relay.time_ms += STEP_MS - 2000
    p2 = _packet(w, 2, far)
    recv_packet(w.evm, park, w.relayer, p2, relay.verify(p2), relay.vset)
    assert _trust(park)["trusted_ms"] == t0["trusted_ms"] + 2 * STEP_MS
    # a header ahead of the chain's clock by more than a step does not extend trust
    relay.time_ms = w.evm.now_ms() + 5 * STEP_MS
    p3 = _packet(w, 3, far)
    recv_packet(w.evm, park, w.relayer, p3, relay.verify(p3), relay.vset)
    assert _trust(park)["trusted_ms"] == t0["trusted_ms"] + 2 * STEP_MS

    # a same-set update from a newer commit refreshes an idle bridge
    trusted_ms = _trust(park)["trusted_ms"]
    w.evm.mine_at((trusted_ms + PERIOD_MS // 2) // 1000)
    relay.time_ms = w.evm.now_ms() - 1000
    same = relay.commit()
    vs = validator_set_abi(relay.vset)
    w.evm.transact(park.bridge.functions.updateRelayValidators(vs, commit_abi(same), vs), w.relayer)
    refreshed = _trust(park)
    assert (refreshed["trusted_ms"], refreshed["height"]) == (same.header.time_ms, same.header.height)

    # past the period: certificates and updates refused, nothing written
    w.evm.mine_at((refreshed["expires_ms"] + 1000) // 1000 + 1)
    relay.time_ms = w.evm.now_ms()
    p4 = _packet(w, 4, far)
    cert4 = relay.verify(p4)
    assert _refused(w, park, recv_call(w, park, p4, cert4, relay.vset)) == "RelayTrustExpired"
    assert park.bridge.functions.receiptOf(DPOS, LANE, 4).call() == bytes(32)
    rotation, keys, new_set = relay.rotate(4)
    rotate = park.bridge.functions.updateRelayValidators(validator_set_abi(new_set), commit_abi(rotation), vs)
    assert _refused(w, park, rotate) == "RelayTrustExpired"
    reset = park.bridge.functions.resetRelayValidators
    now_ms = w.evm.now_ms() + 1000
    new_vs = validator_set_abi(new_set)
    assert _refused(w, park, reset(new_vs, rotation.header.height, now_ms)) == "Unauthorized"
    assert _refused(w, park, reset(new_vs, same.header.height, now_ms), park.operator) == "PacketReplay"
    assert _refused(w, park, reset(new_vs, rotation.header.height, now_ms - PERIOD_MS - 5000), park.operator) == \
        "CodecInvalid"
    _, bad_keys_set = make_validators(4)
    bk, ba, bp = validator_set_abi(bad_keys_set)
    assert _refused(w, park, reset((bk, [ba[0], ba[0], ba[2], ba[3]], bp), rotation.header.height, now_ms),
                    park.operator) == "DuplicateValidatorAddress"
    receipt = w.evm.transact(reset(new_vs, rotation.header.height, now_ms), park.operator)
    (event,) = w.evm.events(park.bridge, "RelayValidatorsReset", receipt)
    assert (bytes(event["setHash"]), event["height"], event["trustedTimeMs"]) == (
        new_set.hash, rotation.header.height, now_ms)
    assert _trust(park)["expires_ms"] == now_ms + PERIOD_MS
    assert _refused(w, park, reset(new_vs, rotation.header.height + 1, now_ms), park.operator) == "RelayTrustLive"

    # the retired set's certificate is refused; the new set's is accepted
    old_keys, old_set = relay.keys, relay.vset
    relay.install(keys, new_set)
    relay.time_ms = w.evm.now_ms()
    stale = relay.commit(keys=old_keys, vset=old_set)
    fresh = relay.verify(p4)
    from dataclasses import replace
    assert _refused(w, park, recv_call(w, park, p4, replace(fresh, commit=stale), old_set)) == "ValidatorSetMismatch"
    ack, _ = recv_packet(w.evm, park, w.relayer, p4, fresh, relay.vset)
    assert ack == SUCCESS_ACK


def test_a_phase3_certificate_older_than_the_bound_is_refused_and_a_fresh_one_accepted(world: World) -> None:
    """Protocol §7.9: ``recvPacket`` refuses a certificate whose relay header is more than ``maxCertificateAgeMs``
    older than the block time (``CertificateStale``, nothing written); a certificate of a newer relay block executes.
    Out-of-range bounds are refused at deployment."""
    w = world
    relay = RelaySim.create("relay", 4, filler_records=16)
    park = deploy_park(w.evm, "eth-t", relay, [(DPOS, LANE)], trusting_period_ms=PERIOD_MS,
                       max_certificate_age_ms=60_000)
    assert park.bridge.functions.maxCertificateAgeMs().call() == 60_000
    relay.time_ms = w.evm.now_ms()
    p1 = _packet(w, 1, w.evm.now_ms() + PERIOD_MS)
    old = relay.verify(p1)  # header time: the chain's clock + 1 s
    w.evm.mine_at((old.commit.header.time_ms + 60_000) // 1000 + 1)  # the next block is > 60 s after the header
    voucher = f"{LANE}/{DPOS}/kWh"
    assert _refused(w, park, recv_call(w, park, p1, old, relay.vset)) == "CertificateStale"
    assert park.bridge.functions.receiptOf(DPOS, LANE, 1).call() == bytes(32)
    assert int(park.bridge.functions.tokenOf(voucher).call(), 16) == 0  # nothing minted: no voucher token yet
    relay.time_ms = w.evm.now_ms()
    ack, _ = recv_packet(w.evm, park, w.relayer, p1, relay.verify(p1), relay.vset)
    assert ack == SUCCESS_ACK
    assert park.bridge.functions.receiptOf(DPOS, LANE, 1).call() != bytes(32)
    assert int(park.bridge.functions.tokenOf(voucher).call(), 16) != 0

    keys_addrs_powers = validator_set_abi(relay.vset)
    apps = (w.b.energy_app.address, w.b.rights.address, w.b.reputation.address)
    for bad in (9_999, 86_400_001, 0):
        with pytest.raises(TxFailed, match="CodecInvalid"):
            w.evm.deploy("ParkBridge", w.relayer, "eth-x", "relay", keys_addrs_powers, w.b.token.address, *apps,
                         PERIOD_MS, bad)
