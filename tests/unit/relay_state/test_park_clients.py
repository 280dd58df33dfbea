"""The DPoS and PoC light clients hosted by the relay state machine, end to end over real park state.

Two parks are built from genesis configs made by the parks' own ``build_genesis`` (TEST-ONLY keys: the
DPoS witnesses and accounts of :mod:`chains.dpos.testing`, the PoC farmers and plots of
:mod:`chains.poc.testing`), and run as :class:`chains.dpos.testing.SimChain` /
:class:`chains.poc.testing.SimChain`, which execute every block as the park's node does, bridge included.
The relay chain creates one client per park at genesis from those configs, follows both parks with
``client.update`` and verifies a packet sent on each park with a state proof against a header its client
holds as final. The scenario is one list of relay transactions; the tests replay it on fresh nodes (one
that keeps its decoded clients, one rebuilt from state before every transaction) and compare every root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path
from chains.dpos import node as dpos_node
from chains.dpos.app import load_genesis
from chains.dpos.consensus import schedule
from chains.dpos.light_client import DposLightClient
from chains.dpos.testing import SimChain as DposSim
from chains.dpos.testing import account_signer, forge_branch, resign, test_signer, witness_name
from chains.dpos.types import DposHeader
from chains.poc import node as poc_node
from chains.poc.light_client import PocClientParams, PocLightClient
from chains.poc.plots import Farmer
from chains.poc.testing import SimChain as PocSim
from chains.poc.types import PocHeader
from chains.poc.types import decode_header as decode_poc
from protocol.codec import decode_packet, encode_packet
from protocol.crypto import Ed25519Signer
from protocol.errors import CodecError, HeaderError, ReplayError, WrongChainError
from protocol.paths import commitment_path
from protocol.types import ClientId, Packet
from relay.chain.state_machine import RelayStateMachine
from relay.chain.state_machine.keys import client_state_key
from tests.unit.bridge.sim import relay_signers, validator_set
from tests.unit.relay_state.testkit import fixed_signer

RELAY, DPOS, POC, LANE = "relay", "dpos-park", "poc-park", "lane-0"
T0 = 1_700_000_000_000
DAY = 86_400_000
DPOS_LABEL = "relay-park-clients"
BOB = Ed25519Signer(hashlib.sha256(b"parkrelay TEST-ONLY relay park clients/bob").digest())
RELAYER = fixed_signer("relayer/relayer-a")

Event = dict[str, Any]


# -- the parks and the relay genesis ------------------------------------------------------------------


def dpos_park() -> DposSim:
    nodes = {witness_name(i): test_signer(DPOS_LABEL, i).pubkey for i in range(4)}
    config = dpos_node.build_genesis(
        chain_id=DPOS, params={"maintenance_interval_blocks": 100}, nodes=nodes,
        accounts={"alice": (account_signer(DPOS_LABEL, "alice").pubkey, 1_000_000)},
        relay_validators=validator_set(relay_signers(0)), lanes=[(LANE, POC)], genesis_time_ms=T0,
        data_dir=Path("unused"))
    return DposSim(4, label=DPOS_LABEL, genesis=json.loads(json.dumps(config)))


def poc_park(farmers: list[Farmer]) -> PocSim:
    config = poc_node.build_genesis(
        chain_id=POC, params={"confirmation_depth": 3}, nodes={f.name: f.pubkey for f in farmers},
        accounts={"bob": (BOB.pubkey, 1_000_000)}, relay_validators=validator_set(relay_signers(0)),
        lanes=[(LANE, DPOS)], genesis_time_ms=T0, data_dir=Path("unused"))
    return PocSim(json.loads(json.dumps(config)), farmers)


def relay_genesis(dpos_config: dict[str, Any], poc_config: dict[str, Any]) -> dict[str, Any]:
    """As a deployment writes it (a JSON file): each park's client trusts that park's genesis config."""
    return json.loads(json.dumps({
        "chain_id": RELAY,
        "validators": wire.validator_set_to_json(validator_set(relay_signers(0))),
        "clients": {DPOS: {"client_type": "dpos", "init": {"genesis": dpos_config, "trusting_period_ms": DAY}},
                    # depth-only finality (window 0): this scenario is about hosting, persistence and
                    # determinism; the window is test_poc_finality_window.py's
                    POC: {"client_type": "poc", "init": {"genesis": poc_config, "trusting_period_ms": DAY,
                                                         "finality_window_ms": 0}}},
        "lanes": [{"lane": LANE, "chains": [DPOS, POC]}],
        "accounts": {"relayer-a": RELAYER.pubkey.hex()},
    }))


def send_args(dst: str, receiver: str, amount_wh: int) -> dict[str, Any]:
    return {"dst_chain": dst, "lane": LANE, "kind": "energy", "receiver": receiver, "denom": "kWh",
            "amount_wh": amount_wh, "timeout_timestamp_ms": T0 + DAY}


def sent_packet(events: list[Event]) -> Packet:
    raw = next(e["packet"] for e in events if e["type"] == "send_packet")
    return decode_packet(bytes.fromhex(raw))


def dpos_fork_header(sim: DposSim, height: int) -> DposHeader:
    """A valid header at ``height`` on a branch beside the canonical one: same parent, a later slot, another
    witness (so not double production), another state."""
    canonical, parent = sim.headers[height], sim.headers[height - 1]
    active = load_genesis(sim.config).active_set  # no maintenance boundary yet: the genesis set schedules
    assert active.hash == canonical.active_set_hash
    slot = canonical.slot + 1
    while schedule(active, slot, sim.params.genesis_slot) == canonical.producer:
        slot += 1
    producer = schedule(active, slot, sim.params.genesis_slot)
    header = DposHeader(DPOS, height, parent.hash(), slot * sim.params.block_interval_ms, slot, producer,
                        hashlib.sha256(b"fork txs").digest(), hashlib.sha256(b"fork state").digest(), active.hash,
                        None)
    return resign(header, sim.signers[producer])


def poc_fork_header(sim: PocSim, height: int, delta_ms: int) -> PocHeader:
    """A valid header at ``height`` beside the canonical one: same parent, same proof, a later time."""
    header, _ = sim.builder.child(sim.contexts[height - 1], delta_ms=delta_ms,
                                  state_root=hashlib.sha256(b"fork state").digest())
    return header


# -- a relay node and the scenario ------------------------------------------------------------------------


class RelayNode:
    """One relay validator's application: the real state machine over its own state, one block per transaction.

    Every transaction first passes the mempool's admission (:meth:`RelayStateMachine.check_admission`).
    With ``restart``, the state machine is rebuilt before every transaction, as a restarted process would
    be: nothing cached, only the state.
    """

    def __init__(self, genesis: dict[str, Any], *, restart: bool = False) -> None:
        self.sm = RelayStateMachine(RELAY)  # the default client types: the relay node's
        self.state = ChainState()
        self.sm.init_genesis(self.state, genesis)
        self.restart = restart
        self.height = 0
        self.roots = [self.state.root]

    def run(self, tx: Tx, now_ms: int) -> list[Event]:
        if self.restart:
            self.sm = RelayStateMachine(RELAY)
        self.sm.check_admission(self.state, tx)
        events = self.sm.execute_tx(self.state, tx, BlockContext(RELAY, self.height + 1, now_ms, "v0"))
        self.height += 1
        self.roots.append(self.state.root)
        return events

    def status(self, chain: str, now_ms: int) -> dict[str, Any]:
        return self.sm.client_status(self.state, chain, now_ms)


@dataclass
class Scenario:
    """Both parks, the relay genesis, and the relay transactions of :func:`build_scenario`."""

    genesis: dict[str, Any]
    dpos: DposSim
    poc: PocSim
    node: RelayNode
    """The node the scenario was built on (its final state is the scenario's end)."""
    steps: list[tuple[Tx, int]] = field(default_factory=list)
    """Relay transactions in order, each with its block time."""
    events: list[list[Event]] = field(default_factory=list)
    """Events of each step."""
    packets: dict[str, list[Packet]] = field(default_factory=lambda: {DPOS: [], POC: []})
    """Packets sent on each park and verified by the relay, by source chain."""
    fork_steps: list[int] = field(default_factory=list)
    """Indices of the steps that fed a fork header (one header at a height the client already held)."""

    def now(self, *extra: int) -> int:
        return max(self.dpos.tip.timestamp_ms, self.poc.tip.timestamp_ms, *extra)

    def tx(self, op: str, args: dict[str, Any]) -> Tx:
        nonce = self.node.state.get_json(account_path("relayer-a"))["nonce"]
        return Tx.signed(RELAYER, RELAY, "relayer-a", nonce, op, args)

    def submit(self, op: str, args: dict[str, Any], now_ms: int | None = None) -> list[Event]:
        tx, now = self.tx(op, args), self.now() if now_ms is None else now_ms
        events = self.node.run(tx, now)
        self.steps.append((tx, now))
        self.events.append(events)
        return events

    def update(self, chain: str, headers: list[Any], now_ms: int | None = None) -> list[Event]:
        return self.submit("client.update", {"chain_id": chain, "headers": [h.encode().hex() for h in headers]},
                           now_ms)


def verify_args(packet: Packet, height: int, tree: Any, headers: list[Any] | None = None) -> dict[str, Any]:
    """``packet.verify`` of ``packet`` at the source's ``height``, proven from the source's state ``tree`` there."""
    key = commitment_path(packet.dst_chain, packet.lane, packet.sequence)
    args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "height": height,
                            "proof": tree.prove(key).encode().hex()}
    if headers:
        args["headers"] = [h.encode().hex() for h in headers]
    return args


def build_scenario(farmers: list[Farmer]) -> Scenario:
    dpos, poc = dpos_park(), poc_park(farmers)
    genesis = relay_genesis(dpos.config, poc.config)
    sc = Scenario(genesis, dpos, poc, RelayNode(genesis))

    # phase 1 on each park, then enough blocks for its light client to finalise the block
    dpos.produce([dpos.tx("alice", "bridge.send", send_args(POC, "bob", 5_000))])
    assert dpos.failed[-1] == []
    d_packet, d_height, d_tree = sent_packet(dpos.events[-1]), dpos.tip.height, dpos.state.tree
    dpos.produce_many(7)
    poc.produce([poc.tx(BOB, "bob", "bridge.send", send_args(DPOS, "alice", 700))])
    assert poc.failed[-1] == []
    p_packet, p_height = sent_packet(poc.events[-1]), poc.tip.height
    poc.produce_many(4)

    # the relay follows both parks, then verifies each packet against a final header
    sc.update(DPOS, dpos.headers[1:5])
    sc.update(DPOS, dpos.headers[5:])
    sc.update(POC, poc.headers[1:])
    sc.submit("packet.verify", verify_args(d_packet, d_height, d_tree))
    sc.submit("packet.verify", verify_args(p_packet, p_height, poc.trees[p_height]))
    sc.packets[DPOS].append(d_packet)
    sc.packets[POC].append(p_packet)

    # a fork header at a height the client holds: not redundant, admitted and held beside the canonical one
    d_fork = dpos_fork_header(dpos, dpos.tip.height - 1)
    sc.fork_steps.append(len(sc.steps))
    sc.update(DPOS, [d_fork], sc.now(d_fork.timestamp_ms))
    p_fork = poc_fork_header(poc, poc.tip.height, delta_ms=300)
    sc.fork_steps.append(len(sc.steps))
    sc.update(POC, [p_fork], sc.now(p_fork.timestamp_ms))

    # a second packet each way, its headers carried by the verify transaction itself
    d_from = dpos.tip.height + 1
    dpos.produce([dpos.tx("alice", "bridge.send", send_args(POC, "bob", 1_000))])
    d_packet, d_height, d_tree = sent_packet(dpos.events[-1]), dpos.tip.height, dpos.state.tree
    dpos.produce_many(5)
    sc.submit("packet.verify", verify_args(d_packet, d_height, d_tree, dpos.headers[d_from:]))
    p_from = poc.tip.height + 1
    poc.produce([poc.tx(BOB, "bob", "bridge.send", send_args(DPOS, "alice", 300))])
    p_packet, p_height = sent_packet(poc.events[-1]), poc.tip.height
    poc.produce_many(4)
    sc.submit("packet.verify", verify_args(p_packet, p_height, poc.trees[p_height], poc.headers[p_from:]))
    sc.packets[DPOS].append(d_packet)
    sc.packets[POC].append(p_packet)
    return sc


@pytest.fixture(scope="module")
def scenario(farmers: list[Farmer]) -> Scenario:
    return build_scenario(farmers)


# -- tests ------------------------------------------------------------------------------------------------


def test_clients_trust_the_genesis_their_parks_start_from(scenario: Scenario) -> None:
    sm, state = RelayStateMachine(RELAY), ChainState()
    events = sm.init_genesis(state, scenario.genesis)
    created = {e["chain_id"]: e["client_id"] for e in events if e["type"] == "client_created"}
    assert created == {DPOS: "dpos-0", POC: "poc-1"}  # sorted chain ids, one router-wide counter
    # the park's node derives the same genesis header (bridge section included) as the client trusts
    nodes = {DPOS: dpos_node.DposRules(scenario.dpos.config, None, None),
             POC: poc_node.PocRules(scenario.poc.config, None, None)}
    parks: dict[str, Any] = {DPOS: scenario.dpos, POC: scenario.poc}
    for chain, client_id in created.items():
        client = sm.router.load(state, chain).client
        genesis = parks[chain].headers[0]
        assert nodes[chain].genesis()[0].hash() == genesis.hash()
        cs = client.final_consensus_state(0)
        assert (cs.header_hash, cs.state_root) == (genesis.hash(), nodes[chain].genesis()[1].root)
        assert client.client_id == client_id and client.chain_id == chain


def test_real_packet_commitments_verify_against_finalised_park_headers(scenario: Scenario) -> None:
    kinds = [e["type"] for events in scenario.events for e in events]
    assert kinds.count("packet_verified") == 4 and kinds.count("client_updated") >= 5
    for packets in scenario.packets.values():
        for packet in packets:
            assert scenario.node.sm.packet_state(scenario.node.state, encode_packet(packet)) == "verified"
    now = scenario.now()
    for chain, park in ((DPOS, scenario.dpos), (POC, scenario.poc)):
        status = scenario.node.status(chain, now)
        assert status["status"] == "active" and status["latest_height"] == park.tip.height
        assert 0 < status["final_height"] < park.tip.height


def test_two_nodes_fed_the_same_transactions_have_the_same_roots(scenario: Scenario) -> None:
    other = RelayNode(scenario.genesis)
    for tx, now in scenario.steps:
        other.run(tx, now)
    assert len(other.roots) == len(scenario.steps) + 1 == 10
    assert other.roots == scenario.node.roots


def test_a_node_rebuilt_from_state_before_every_transaction_continues_identically(scenario: Scenario) -> None:
    restarted = RelayNode(scenario.genesis, restart=True)
    for tx, now in scenario.steps:
        restarted.run(tx, now)
    assert restarted.roots == scenario.node.roots


def test_a_node_restarted_mid_scenario_continues_identically(scenario: Scenario) -> None:
    node = RelayNode(scenario.genesis)
    half = len(scenario.steps) // 2
    for tx, now in scenario.steps[:half]:
        node.run(tx, now)
    node.sm = RelayStateMachine(RELAY)  # a new process over the stored state
    node.sm.router.drop_cache()
    for tx, now in scenario.steps[half:]:
        node.run(tx, now)
    assert node.roots == scenario.node.roots


def update_tx(node: RelayNode, chain: str, headers: list[bytes]) -> Tx:
    nonce = node.state.get_json(account_path("relayer-a"))["nonce"]
    return Tx.signed(RELAYER, RELAY, "relayer-a", nonce, "client.update",
                     {"chain_id": chain, "headers": [h.hex() for h in headers]})


def test_fork_headers_are_admitted_held_and_then_redundant(scenario: Scenario) -> None:
    node = RelayNode(scenario.genesis)
    assert len(scenario.fork_steps) == 2
    for i, (tx, now) in enumerate(scenario.steps):
        chain = tx.args.get("chain_id")
        before = node.status(chain, now) if i in scenario.fork_steps else None
        events = node.run(tx, now)  # passed admission first: a fork header at a held height is not redundant
        if before is None:
            continue
        (event,) = events
        raw = bytes.fromhex(tx.args["headers"][0])
        # held beside the canonical branch: fork choice keeps the canonical tip and finality
        assert event["heights"] == [DposHeader.decode(raw).height if chain == DPOS else decode_poc(raw).height]
        assert event["heights"][0] <= before["latest_height"]
        assert (event["latest_height"], event["final_height"]) == (before["latest_height"], before["final_height"])
        with pytest.raises(ReplayError):  # now the client holds it: a resubmission is refused at admission
            node.sm.check_admission(node.state, update_tx(node, chain, [raw]))
    assert node.roots == scenario.node.roots


def test_held_headers_are_refused_at_admission_new_fork_headers_admitted(scenario: Scenario) -> None:
    node, dpos, poc = scenario.node, scenario.dpos, scenario.poc
    now = scenario.now()
    parks: dict[str, Any] = {DPOS: dpos, POC: poc}
    for chain, park in parks.items():
        final = node.status(chain, now)["final_height"]
        held = [park.tip.encode(), park.headers[final].encode(), park.headers[final - 3].encode()]
        for raw in held:
            with pytest.raises(ReplayError):
                node.sm.check_admission(node.state, update_tx(node, chain, [raw]))
        with pytest.raises(ReplayError):
            node.sm.check_admission(node.state, update_tx(node, chain, held))
        # a header at a height the client holds, but not one it holds: a fork header, admitted
        fork = (dpos_fork_header(dpos, dpos.tip.height) if chain == DPOS
                else poc_fork_header(poc, poc.tip.height - 1, delta_ms=900)).encode()
        node.sm.check_admission(node.state, update_tx(node, chain, [fork]))
        node.sm.check_admission(node.state, update_tx(node, chain, [*held, fork]))  # one new header is progress


def test_a_pruned_fork_header_is_not_redundant_but_refused(scenario: Scenario) -> None:
    # the DPoS fork header fed at fork_steps[0] lost: finality passed its height and pruned it. The client no longer
    # holds it, so admission lets it through (a header at a final height may be double-production evidence,
    # which must reach the client), and execution refuses it as a fork block below finality.
    node = RelayNode(scenario.genesis)
    for tx, now in scenario.steps:
        node.run(tx, now)
    raw = bytes.fromhex(scenario.steps[scenario.fork_steps[0]][0].args["headers"][0])
    header = DposHeader.decode(raw)
    client = node.sm.router.load(node.state, DPOS).client
    assert isinstance(client, DposLightClient)
    assert not client.holds(header) and header.height <= client.final_height
    resubmit = update_tx(node, DPOS, [raw])
    node.sm.check_admission(node.state, resubmit)
    with pytest.raises(HeaderError) as exc:
        node.run(resubmit, scenario.now())
    assert exc.value.code == "header.invalid" and node.status(DPOS, scenario.now())["frozen_height"] is None


def test_stored_client_state_is_the_client_s_canonical_encoding(scenario: Scenario) -> None:
    state = scenario.node.state
    for client_id, cls in (("dpos-0", DposLightClient), ("poc-1", PocLightClient)):
        raw = state.get(client_state_key(client_id))
        assert raw is not None
        client = cls.from_state(ClientId(client_id), raw)
        assert client.to_state() == raw
        assert json.loads(raw)["type"] == cls.client_type


@pytest.mark.parametrize("chain,init,error", [
    (DPOS, lambda g: {**g, "extra": 1}, CodecError),
    (DPOS, lambda g: {k: v for k, v in g.items() if k != "trusting_period_ms"}, CodecError),
    (DPOS, lambda g: {**g, "trusting_period_ms": 0}, CodecError),
    (DPOS, lambda g: {**g, "max_pending_headers": 10**9}, CodecError),
    (DPOS, lambda g: {**g, "confirmation_depth": 3}, CodecError),
    (DPOS, lambda g: {**g, "genesis": {**g["genesis"], "chain_id": "other-park"}}, WrongChainError),
    (POC, lambda g: {**g, "max_pending_headers": 10}, CodecError),
    (POC, lambda g: {**g, "confirmation_depth": 0}, CodecError),
    (POC, lambda g: {**g, "genesis": "not an object"}, CodecError),
    (POC, lambda g: {**g, "genesis": {**g["genesis"], "chain_id": "other-park"}}, WrongChainError),
    (POC, lambda g: {**g, "finality_window_ms": -1}, CodecError),
    (POC, lambda g: {**g, "finality_window_ms": "30000"}, CodecError),
    (POC, lambda g: {**g, "finality_window_ms": True}, CodecError),
    (POC, lambda g: {**g, "max_pending": 10, "max_distance": 10}, CodecError),
    (POC, lambda g: {**g, "max_pending_per_farmer": 0}, CodecError),
    (POC, lambda g: {**g, "max_distance": 3}, CodecError),  # not above the park's confirmation depth (3)
    (POC, lambda g: {**g, "max_pending": 10**6}, CodecError),
], ids=["unknown key", "no trusting period", "zero trusting period", "pending bound", "dpos has no depth",
        "dpos other chain", "poc has no pending bound", "zero depth", "genesis not an object", "poc other chain",
        "negative window", "window not an integer", "window a boolean", "distance not below pending",
        "zero per-farmer cap", "distance within depth", "pending too large"])
def test_init_args_are_checked(scenario: Scenario, chain: str, init: Any, error: type[Exception]) -> None:
    genesis = json.loads(json.dumps(scenario.genesis))
    genesis["clients"][chain]["init"] = init(genesis["clients"][chain]["init"])
    with pytest.raises(error):
        RelayStateMachine(RELAY).init_genesis(ChainState(), genesis)


def test_init_bounds_are_applied(scenario: Scenario) -> None:
    genesis = json.loads(json.dumps(scenario.genesis))
    genesis["clients"][DPOS]["init"].update(max_consensus_states=8, max_pending_headers=100)
    genesis["clients"][POC]["init"].update(max_consensus_states=9, confirmation_depth=5, fork_history=2,
                                           finality_window_ms=45_000, max_pending=300, max_pending_per_farmer=20,
                                           max_distance=100)
    sm, state = RelayStateMachine(RELAY), ChainState()
    sm.init_genesis(state, genesis)
    dpos = sm.router.load(state, DPOS).client
    poc = sm.router.load(state, POC).client
    assert isinstance(dpos, DposLightClient) and isinstance(poc, PocLightClient)
    assert (dpos.max_consensus_states, dpos.max_pending_headers) == (8, 100)
    assert (poc.max_consensus_states, poc.confirmation_depth, poc.fork_history) == (9, 5, 2)
    assert poc.client_params == PocClientParams(45_000, 300, 20, 100)
    # absent: the defaults (SPEC §8.6)
    del genesis["clients"][POC]["init"]["finality_window_ms"]
    genesis["clients"][POC]["init"] = {"genesis": genesis["clients"][POC]["init"]["genesis"], "trusting_period_ms": DAY}
    sm, state = RelayStateMachine(RELAY), ChainState()
    sm.init_genesis(state, genesis)
    poc = sm.router.load(state, POC).client
    assert isinstance(poc, PocLightClient) and poc.client_params == PocClientParams()
    assert poc.client_params.finality_window_ms == 60_000 and poc.farmer_keys is not None


def _misbehaviour_tx(node: RelayNode, args: dict[str, Any]) -> Tx:
    nonce = node.state.get_json(account_path("relayer-a"))["nonce"]
    return Tx.signed(RELAYER, RELAY, "relayer-a", nonce, "client.misbehaviour", {"chain_id": DPOS, **args})


def test_a_witness_double_signing_is_recorded_without_freezing_and_conflicting_finality_freezes(
        scenario: Scenario) -> None:
    """On the real DPoS client: one witness of four signing two headers at one height is recorded in the relay's
    state (status query) and the bridge keeps running; a branch that three colluding witnesses made irreversible
    against a final header freezes the client and pauses its lanes."""
    node = RelayNode(scenario.genesis)
    for tx, now in scenario.steps:
        node.run(tx, now)
    sim, now = scenario.dpos, scenario.now()
    held = sim.headers[3]
    twin = resign(dataclasses.replace(held, tx_root=b"\x01" * 32), sim.signers[held.producer])
    evidence = {"header_a": held.encode().hex(), "header_b": twin.encode().hex()}
    events = node.run(_misbehaviour_tx(node, evidence), now)
    assert events[0]["type"] == "client_evidence_recorded" and len(events) == 1  # no lane paused
    st = node.status(DPOS, now)
    assert st["status"] == "active"
    [record] = st["evidence"]
    assert record["witness"] == held.producer and record["height"] == 3
    assert {record["header_a"], record["header_b"]} == set(evidence.values())  # what the park's op takes
    with pytest.raises(ReplayError):
        node.run(_misbehaviour_tx(node, evidence), now)
    fork = st["final_height"] - 2
    branch = forge_branch(sim.headers[fork], load_genesis(sim.config).active_set, sim.signers, sim.params, 6)
    short = {"branch": [h.encode().hex() for h in branch[:1]]}
    with pytest.raises(HeaderError) as info:
        node.run(_misbehaviour_tx(node, short), now)
    assert info.value.code == "header.dpos.finality_evidence"
    events = node.run(_misbehaviour_tx(node, {"branch": [h.encode().hex() for h in branch]}), now)
    assert events[0]["type"] == "client_frozen" and events[0]["paused_lanes"]
    assert node.status(DPOS, now)["status"] == "frozen"


def test_a_dpos_header_ahead_of_the_relay_block_time_waits_for_a_later_block_and_is_never_charged(
        scenario: Scenario) -> None:
    """On CometBFT a relay block's time is the median of the previous block's precommit times, a block interval or
    so behind the wall clock admission checked against: a header made a moment before its update was admitted can
    be ahead of that time by more than the drift. The update is then ``header.dpos.future_timestamp`` (after
    progress): the proposer leaves it for a later block, nothing is charged, and a block late enough takes it."""
    from chains.dpos.light_client import FutureTimestampError
    from protocol.errors import Disposition
    from relay.chain.state_machine.bonds import counts_as_failure

    node = RelayNode(scenario.genesis)
    header = scenario.dpos.headers[1]
    tx = update_tx(node, DPOS, [header.encode()])
    drift = node.sm.router.load(node.state, DPOS).client._drift_ms  # type: ignore[attr-defined]
    early = BlockContext(RELAY, 1, header.timestamp_ms - drift - 1, "v0")
    root = node.state.root
    with pytest.raises(FutureTimestampError) as caught:
        node.sm.execute_tx(ChainState(node.state.tree), tx, early)  # what a block at that time does: no charge
    assert caught.value.code == "header.dpos.future_timestamp"
    assert caught.value.disposition is Disposition.AFTER_PROGRESS and not counts_as_failure(caught.value)
    built = node.sm.build_block(ChainState(node.state.tree), [tx], early)
    assert built.included == [] and [e.code for _, e in built.dropped] == ["header.dpos.future_timestamp"]
    assert node.state.root == root
    on_time = BlockContext(RELAY, 1, header.timestamp_ms - drift, "v0")  # the drift bound is inclusive
    assert node.sm.build_block(ChainState(node.state.tree), [tx], on_time).included == [tx]
