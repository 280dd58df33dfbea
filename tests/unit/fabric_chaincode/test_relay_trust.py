"""The bridge chaincode's view of the relay set over time (protocol SPEC §7.8), as the Python parks' bridge: a
trusting period from genesis, certificates refused once it passed (``client.expired``, nothing written), refreshed
by verified certificates and same-set updates, an expired bridge reset by the relay admin (an operator identity),
queried by relayers through ``relay_trust``. Refusals leave the ledger and its events as they were
(:meth:`Harness.refused`); the harness's conservation checks close each test."""

from __future__ import annotations

import json
from typing import Any

from chains.common import wire
from chains.common.bridge import REFRESH_STEP_FRACTION
from protocol.codec import encode_packet
from tests.unit.bridge.sim import MINUTE, relay_signers, validator_set
from tests.unit.fabric_chaincode.harness import (
    ALICE,
    DPOS,
    FABRIC,
    OPERATOR,
    RELAYER,
    Harness,
    energy,
    genesis,
    make_harness,
)

PERIOD = 60 * MINUTE
STEP = PERIOD // REFRESH_STEP_FRACTION


def _harness() -> Harness:
    h = make_harness(init=False)
    g = genesis(h.net)
    g["bridge"] = {**g["bridge"], "trusting_period_ms": PERIOD, "trusted_time_ms": h.net.now_ms}
    h.genesis_json = json.dumps(g)
    h.ok(OPERATOR, "init_bridge", h.genesis_json)
    return h


def _refresh_args(h: Harness) -> dict[str, Any]:
    return {"commit": wire.commit_to_json(h.net.relay.commit(h.net.now_ms)),
            "new_set": wire.validator_set_to_json(h.net.relay.vset)}


def test_relay_trust_is_queried_and_refreshed_by_certificates_and_same_set_updates() -> None:
    h = _harness()
    t0 = h.net.now_ms
    trust = h.query("relay_trust")
    assert {k: trust[k] for k in ("update_height", "trusted_time_ms", "trusting_period_ms", "expires_at_ms")} == {
        "update_height": 0, "trusted_time_ms": t0, "trusting_period_ms": PERIOD, "expires_at_ms": t0 + PERIOD}
    assert trust["validators"]["hash"] == h.net.relay.vset.hash.hex()
    h.net.advance(STEP)
    _, ack, _ = h.dpos_to_fabric("alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC))
    assert ack["success"]
    assert h.query("relay_trust")["trusted_time_ms"] == t0 + STEP
    h.net.advance(PERIOD // 2)
    args = _refresh_args(h)
    h.ok(RELAYER, "update_relay_validators", args)
    assert h.query("relay_trust")["trusted_time_ms"] == h.net.now_ms
    h.net.advance(PERIOD)  # exactly the period after the refresh: still trusted
    _, ack, _ = h.dpos_to_fabric("alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC))
    assert ack["success"]
    h.check()


def test_expired_trust_refuses_certificates_until_the_operator_resets_it() -> None:
    h = _harness()
    packet = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC,
                                                 timeout_timestamp_ms=h.net.now_ms + 3 * PERIOD))
    cert = h.net.verify(packet)
    out = h.send_from_fabric(ALICE, **energy("bob", 2_000, dst=DPOS, timeout_timestamp_ms=h.net.now_ms + 3 * PERIOD))
    h.net.recv(out, h.verify_from_fabric(out))
    outcome, ack = h.net.confirm(out)
    h.net.advance(PERIOD + 1)
    assert h.refused(RELAYER, "recv", h.recv_args(packet, cert)) == "client.expired"
    settle = {"packet": encode_packet(out).hex(), "certificate": outcome, "ack": ack}
    assert h.refused(RELAYER, "settle", settle) == "client.expired"
    assert h.refused(RELAYER, "update_relay_validators", _refresh_args(h)) == "client.expired"
    commit, new_set = h.net.relay.rotate(h.net.now_ms, generation=1)
    rotate = {"commit": wire.commit_to_json(commit), "new_set": wire.validator_set_to_json(new_set)}
    assert h.refused(RELAYER, "update_relay_validators", rotate) == "client.expired"
    reset = {"new_set": wire.validator_set_to_json(new_set), "height": commit.header.height,
             "time_ms": h.net.now_ms}
    assert h.refused(ALICE, "reset_relay_validators", reset) == "auth.denied"
    assert h.refused(RELAYER, "reset_relay_validators", reset) == "auth.denied"
    assert h.refused(OPERATOR, "reset_relay_validators", {**reset, "height": 0}) == "packet.replay"
    assert h.refused(OPERATOR, "reset_relay_validators", {**reset, "time_ms": h.net.now_ms - PERIOD}) \
        == "codec.invalid"
    (event,) = h.ok(OPERATOR, "reset_relay_validators", reset)
    assert event["type"] == "relay_validators_reset" and event["hash"] == new_set.hash.hex()
    assert h.query("relay_trust")["expires_at_ms"] == h.net.now_ms + PERIOD
    assert h.refused(OPERATOR, "reset_relay_validators", {
        **reset, "new_set": wire.validator_set_to_json(validator_set(relay_signers(2))),
        "height": commit.header.height + 1}) == "lifecycle.illegal"
    # the retired set's certificate is refused, the current set's accepted, and the settlement completes
    assert h.refused(RELAYER, "recv", h.recv_args(packet, cert)) == "certificate.validator_set"
    h.ok(RELAYER, "recv", h.recv_args(packet, h.net.verified_cert(packet)))
    h.settle_on_fabric(out, h.net.outcome_cert(out), ack)
    h.check()


def test_a_phase3_certificate_older_than_the_bound_is_refused_and_a_fresh_one_accepted() -> None:
    """Protocol §7.9: ``recv`` refuses a certificate whose relay header is more than ``max_certificate_age_ms``
    older than the chaincode clock (``certificate.stale``, nothing written); one of a newer relay block executes.
    Out-of-range bounds are refused at genesis."""
    h = make_harness(init=False)
    g = genesis(h.net)
    g["bridge"] = {**g["bridge"], "max_certificate_age_ms": 2 * MINUTE}
    h.genesis_json = json.dumps(g)
    h.ok(OPERATOR, "init_bridge", h.genesis_json)
    assert h.query("config")["config"]["max_certificate_age_ms"] == 2 * MINUTE
    packet = h.net.send(DPOS, "alice", **energy("OperatorMSP:bob", 1_000, dst=FABRIC,
                                                 timeout_timestamp_ms=h.net.now_ms + 30 * MINUTE))
    old = h.net.verify(packet)
    h.net.advance(2 * MINUTE + 1)
    assert h.refused(RELAYER, "recv", h.recv_args(packet, old)) == "certificate.stale"
    event = h.recv_on_fabric(packet, h.net.verified_cert(packet))
    assert event["success"]
    h.check()

    for bad in (9_999, 24 * 60 * MINUTE + 1, "600000", True):
        fresh = make_harness(init=False)
        g = genesis(fresh.net)
        g["bridge"] = {**g["bridge"], "max_certificate_age_ms": bad}
        assert fresh.refused(OPERATOR, "init_bridge", json.dumps(g)) == "codec.invalid", bad
