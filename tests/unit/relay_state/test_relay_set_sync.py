"""The relayer's delivery of relay validator-set rotations to park bridges (relay/relayer/relay_sets.py).

In process: the relay's RPC and the parks' targets are fakes answering what the real ones answer; the real
bridge check (``chains.common.bridge`` on a simulated park) is what accepts or refuses each rotation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chains.common import wire
from protocol.errors import ProtocolError, ValidatorSetMismatchError
from relay.relayer.relay_sets import RelaySetSync, Rotation, rotation_args
from tests.unit.bridge.sim import two_parks

LOG = logging.LoggerAdapter(logging.getLogger("test"), {})


class FakeRelay:
    """``getValidatorHistory``, ``getCommit``, ``getValidators {hash}`` over a list of rotations."""

    def __init__(self, genesis: dict[str, Any]) -> None:
        self.history = [{"from_height": 1, "hash": genesis["hash"]}]
        self.sets = {genesis["hash"]: genesis}
        self.commits: dict[int, dict[str, Any]] = {}
        self.calls: list[str] = []

    def rotate(self, commit: dict[str, Any], new_set: dict[str, Any]) -> None:
        h = int(commit["header"]["height"])
        self.history.append({"from_height": h + 1, "hash": new_set["hash"]})
        self.sets[new_set["hash"]] = new_set
        self.commits[h] = commit

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append(method)
        if method == "getValidatorHistory":
            return list(self.history)
        if method == "getCommit":
            return self.commits[params["height"]]
        if method == "getValidators":
            return self.sets[params["hash"]]
        raise AssertionError(method)


class BridgeTarget:
    """A park's target over the real bridge op of a simulated park; ``track`` returns the result."""

    def __init__(self, net: Any, chain: str) -> None:
        self.net, self.chain = net, chain
        self.results: dict[str, dict[str, Any]] = {}
        self.ops: list[dict[str, Any]] = []
        self.down = False

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        if self.down:
            raise ValidatorSetMismatchError("refused for the test")
        self.ops.append(args)
        try:
            self.net.parks[self.chain].tx("relayer", op, args)
            res: dict[str, Any] = {"ok": True}
        except ProtocolError as exc:
            if exc.code == "packet.replay":
                raise
            res = {"ok": False, "error": exc.to_dict()}
        h = f"tx{len(self.ops)}"
        self.results[h] = res
        return h

    async def track(self, tx: str, timeout_s: float) -> dict[str, Any]:
        return self.results[tx]


def _setup() -> tuple[Any, FakeRelay, list[tuple[dict[str, Any], dict[str, Any]]]]:
    net = two_parks()
    relay = FakeRelay(wire.validator_set_to_json(net.relay.vset))
    rotations = []
    for generation in (1, 2):
        commit, new = net.relay.rotate(net.now_ms, generation)
        rotations.append((wire.commit_to_json(commit), wire.validator_set_to_json(new)))
    return net, relay, rotations


def test_rotations_reach_a_bridge_in_order_and_a_known_one_counts_as_done() -> None:
    net, relay, rotations = _setup()
    target = BridgeTarget(net, "poc-park")
    sync = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(sync.sync("poc-park", "dpos", target)) is True and target.ops == []  # nothing to rotate
    for commit, vs in rotations:
        relay.rotate(commit, vs)
    assert asyncio.run(sync.sync("poc-park", "poc", target)) is True
    assert [a["new_set"]["hash"] for a in target.ops] == [vs["hash"] for _, vs in rotations]
    from chains.common.bridge import trusted_relay_set

    assert trusted_relay_set(net.parks["poc-park"].state)[0].hash.hex() == rotations[-1][1]["hash"]
    # a second relayer (fresh memory) finds both there: packet.replay, done, nothing changes
    other = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(other.sync("poc-park", "poc", target)) is True
    assert other.submitted == 0 and other.delivered["poc-park"] == rotations[-1][0]["header"]["height"] + 1


def test_a_refused_rotation_stops_the_sync_and_is_retried() -> None:
    net, relay, rotations = _setup()
    for commit, vs in rotations:
        relay.rotate(commit, vs)
    target = BridgeTarget(net, "dpos-park")
    target.down = True
    sync = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(sync.sync("dpos-park", "dpos", target)) is False and "dpos-park" not in sync.delivered
    target.down = False
    assert asyncio.run(sync.sync("dpos-park", "dpos", target)) is True and sync.submitted == 2


def test_the_second_rotation_alone_is_refused_by_the_bridge() -> None:
    """Out of order, the bridge's own check refuses: the old set did not sign the second rotation."""
    net, _, rotations = _setup()
    target = BridgeTarget(net, "dpos-park")
    commit, vs = rotations[1]
    h = asyncio.run(target.submit("bridge.update_relay_validators", {"commit": commit, "new_set": vs}))
    assert asyncio.run(target.track(h, 1))["ok"] is False


class RacedTarget(BridgeTarget):
    """A Fabric-like target whose first ``conflicts`` submissions are invalidated at commit by another relayer's
    transaction (``fabric.mvcc_conflict``, disposition retry_soon), as when two relayers deliver one rotation."""

    def __init__(self, net: Any, chain: str, conflicts: int) -> None:
        super().__init__(net, chain)
        self.conflicts = conflicts
        self.attempts = 0

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        from adapters.fabric.errors import MvccConflictError

        self.attempts += 1
        if self.conflicts > 0:
            self.conflicts -= 1
            raise MvccConflictError("read set changed by another transaction")
        return await super().submit(op, args)


def test_a_rotation_that_lost_a_race_is_submitted_again_at_once_and_found_done() -> None:
    """Two relayers deliver one rotation to a Fabric bridge: the loser's transaction is invalidated at commit (an
    MVCC conflict on the set both wrote). It is proposed again in the same sync, the bridge answers packet.replay,
    and the rotation counts as delivered (before: a warning, False, and a wait for the next step)."""
    net, relay, rotations = _setup()
    for commit, vs in rotations[:1]:
        relay.rotate(commit, vs)
    winner = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(winner.sync("poc-park", "fabric", BridgeTarget(net, "poc-park"))) is True
    target = RacedTarget(net, "poc-park", conflicts=1)
    loser = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(loser.sync("poc-park", "fabric", target)) is True
    assert target.attempts == 2 and loser.submitted == 0
    assert loser.delivered["poc-park"] == rotations[0][0]["header"]["height"] + 1


def test_a_rotation_refused_retry_soon_past_the_retries_waits_for_the_next_step() -> None:
    from relay.relayer.relay_sets import RACE_RETRIES

    net, relay, rotations = _setup()
    relay.rotate(*rotations[0])
    target = RacedTarget(net, "poc-park", conflicts=RACE_RETRIES + 1)
    sync = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    assert asyncio.run(sync.sync("poc-park", "fabric", target)) is False
    assert target.attempts == RACE_RETRIES + 1 and "poc-park" not in sync.delivered
    assert asyncio.run(sync.sync("poc-park", "fabric", target)) is True and sync.submitted == 1


def test_arguments_by_park_kind() -> None:
    rotations = _setup()[2]
    rot = Rotation(5, rotations[0][0], rotations[0][1])
    assert set(rotation_args("ethereum", rot)) == {"validators", "commit"}
    assert set(rotation_args("fabric", rot)) == set(rotation_args("dpos", rot)) == {"commit", "new_set"}



class TrustingTarget(BridgeTarget):
    """A bridge target that also answers ``relay_trust`` from the simulated park's state, as ParkTarget does."""

    async def relay_trust(self) -> dict[str, Any]:
        from chains.common.bridge import relay_trust

        trust = relay_trust(self.net.parks[self.chain].state)
        return {"set_hash": trust.validators.hash.hex(), **trust.to_json()}


def _latest(net: Any, relay: FakeRelay) -> None:
    commit = wire.commit_to_json(net.relay.commit(net.now_ms))
    relay.commits[int(commit["header"]["height"])] = commit
    relay.latest = commit


def test_an_idle_bridge_is_refreshed_once_less_than_half_its_trusting_period_is_left() -> None:
    from chains.common.bridge import relay_trust

    net = two_parks()
    relay = FakeRelay(wire.validator_set_to_json(net.relay.vset))
    orig = relay.call

    async def call(method: str, params: dict[str, Any]) -> Any:
        if method == "getCommit" and "height" not in params:
            return relay.latest
        return await orig(method, params)

    relay.call = call  # type: ignore[method-assign]
    target = TrustingTarget(net, "poc-park")
    sync = RelaySetSync(relay, LOG, history_ttl_s=0)  # type: ignore[arg-type]
    before = relay_trust(net.parks["poc-park"].state)
    period = before.trusting_period_ms
    assert period is not None
    # more than half the period left: nothing is submitted
    net.advance(period // 2 - 60_000)
    _latest(net, relay)
    assert asyncio.run(sync.sync("poc-park", "poc", target)) is True
    assert target.ops == [] and sync.refreshed == 0
    # less than half left: the same set from the newest commit, which moves the trusted time to that header's
    net.advance(120_000)
    _latest(net, relay)
    sync._trust_checked.clear()
    assert asyncio.run(sync.sync("poc-park", "poc", target)) is True
    assert sync.refreshed == 1 and target.ops[0]["new_set"]["hash"] == before.validators.hash.hex()
    after = relay_trust(net.parks["poc-park"].state)
    assert after.trusted_time_ms == net.now_ms and after.validators.hash == before.validators.hash
    # checked at most every TRUST_CHECK_S: an immediate second sync reads nothing
    calls = len(relay.calls)
    assert asyncio.run(sync.sync("poc-park", "poc", target)) is True and sync.refreshed == 1
    assert "getCommit" not in relay.calls[calls:]
