"""Coordinator for the relay state machine's tests: two real simulated parks, the real relay app, one clock.

TEST ONLY. The parks are :mod:`tests.unit.bridge.sim` parks (a :class:`ChainState` with the real bridge
ops), so packet commitments, receipts and acks are the bridge's own. Each park "produces" headers of
the single-signer test chain (:mod:`tests.unit.relay_state.testkit`) over its current state root; the
relay runs :class:`RelayStateMachine` on its own :class:`ChainState`, and its certificates are real
relay commits (signed by the bridge sim's relay validators, which the parks trust) over the relay
state root, so phase 3 and the source half of phase 4 run on the parks against *this* relay state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chains.common import wire
from chains.common.bridge import ack_path, lane_escrow_path, supply_path
from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path
from protocol.certificate import RelayCertificate
from protocol.codec import encode_packet
from protocol.paths import commitment_path, outcome_path, receipt_path, verified_path
from protocol.state_commitment import SparseMerkleTree
from protocol.types import Packet
from relay.chain.state_machine import RelayStateMachine, sign_governance
from relay.chain.state_machine.governance import governance_nonce
from tests.unit.bridge.sim import MINUTE, Network, three_parks, two_parks
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE, SingleSignerHeader, fixed_signer

RELAY = "relay"
DAY = 86_400_000
DPOS, POC, EDGE = "dpos-park", "poc-park", "edge-park"
LANE = "lane-0"
RELAYER_FUNDS = 10_000
"""Bond units each genesis relayer holds (the default genesis ``min_bond`` is 1000)."""
LANE1 = "lane-1"
"""The lane between poc-park and edge-park in a three-park harness."""
VOUCHER = f"{LANE}/{DPOS}/kWh"
"""dpos-park's kWh as a voucher on poc-park."""

Event = dict[str, Any]


class ParkFeed:
    """Headers of one simulated park over its real bridge state, signed by the park's test key."""

    def __init__(self, net: Network, chain_id: str) -> None:
        self.net = net
        self.chain_id = chain_id
        self.key = fixed_signer(f"park-header/{chain_id}")
        self.height = 0
        self.trees: dict[int, SparseMerkleTree] = {}

    @property
    def state(self) -> ChainState:
        return self.net.parks[self.chain_id].state

    def next_header(self, *, time_ms: int | None = None, root: bytes | None = None) -> SingleSignerHeader:
        """A header over the park's current state (or ``root``), at the next height, at the network's time."""
        self.height += 1
        self.trees[self.height] = self.state.tree
        return SingleSignerHeader(self.chain_id, self.height, self.net.now_ms if time_ms is None else time_ms,
                                  self.state.root if root is None else root).signed(self.key)

    def prove(self, height: int, key: bytes) -> str:
        return self.trees[height].prove(key).encode().hex()


class RelayHarness:
    """dpos-park and poc-park (lane-0), a relay chain running the real state machine, two relayers.
    With ``three``: edge-park too, joined to poc-park by lane-1 (:func:`tests.unit.bridge.sim.three_parks`)."""

    def __init__(self, *, limits: dict[str, Any] | None = None, finality_depth: int = 0,
                 trusting_period_ms: int = DAY, relayers: Sequence[str] = ("relayer-a", "relayer-b"),
                 three: bool = False, recovery_delay_ms: int | None = None,
                 bonds: dict[str, Any] | None = None, prune_verified: bool | None = None) -> None:
        self.net = three_parks() if three else two_parks()
        self.feeds = {cid: ParkFeed(self.net, cid) for cid in self.net.parks}
        self.sm = RelayStateMachine(RELAY, [SINGLE_SIGNER_TYPE])
        self.state = ChainState()
        self.keys = {name: fixed_signer(f"relayer/{name}") for name in relayers}
        self.gov_keys = list(self.net.relay.signers)
        self.height = 0
        self.genesis: dict[str, Any] = {
            "chain_id": RELAY,
            "validators": wire.validator_set_to_json(self.net.relay.vset),
            "clients": {cid: {"client_type": "single",
                              "init": {"pubkey": feed.key.pubkey.hex(), "trusting_period_ms": trusting_period_ms,
                                       "finality_depth": finality_depth}}
                        for cid, feed in self.feeds.items()},
            "lanes": [{"lane": LANE, "chains": [DPOS, POC], **({"limits": limits} if limits is not None else {})},
                      *([{"lane": LANE1, "chains": [POC, EDGE]}] if three else [])],
            "accounts": {name: key.pubkey.hex() for name, key in self.keys.items()},
            **({"recovery_delay_ms": recovery_delay_ms} if recovery_delay_ms is not None else {}),
            # the relayers are governance grants; their bond units fund newcomers (bond.transfer, SPEC §6.9)
            "bonds": bonds if bonds is not None else {"balances": {name: RELAYER_FUNDS for name in relayers}},
            **({"prune_verified": prune_verified} if prune_verified is not None else {}),
        }
        self.sm.init_genesis(self.state, self.genesis)

    # -- relay blocks ---------------------------------------------------------------------------------

    @property
    def root(self) -> bytes:
        return self.state.root

    def ctx(self) -> BlockContext:
        return BlockContext(RELAY, self.height + 1, self.net.now_ms, "v0")

    def tx(self, op: str, args: dict[str, Any], sender: str = "relayer-a", nonce: int | None = None) -> Tx:
        if nonce is None:
            nonce = self.state.get_json(account_path(sender))["nonce"]
        return Tx.signed(self.keys[sender], RELAY, sender, nonce, op, args)

    def submit(self, op: str, args: dict[str, Any], sender: str = "relayer-a") -> list[Event]:
        """One transaction in one relay block; raises its error (and then the state is unchanged)."""
        events = self.sm.execute_tx(self.state, self.tx(op, args, sender), self.ctx())
        self.height += 1
        return events

    # -- park side ------------------------------------------------------------------------------------

    def send(self, src: str = DPOS, sender: str = "alice", **args: Any) -> Packet:
        """Phase 1 on ``src``: energy by default (5 kWh of kWh to bob / alice on the other park)."""
        dst = POC if src == DPOS else DPOS
        defaults: dict[str, Any] = {"dst_chain": dst, "lane": LANE, "kind": "energy",
                                    "receiver": "bob" if dst == POC else "alice", "denom": "kWh", "amount_wh": 5_000}
        return self.net.send(src, sender, **{**defaults, **args})

    # -- relay phases -----------------------------------------------------------------------------------

    def header_args(self, chain: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        h = self.feeds[chain].next_header(**kw)
        return h.height, {"chain_id": chain, "headers": [h.encode().hex()]}

    def update(self, chain: str, **kw: Any) -> int:
        """Feed the park's next header to the relay; returns its height."""
        height, args = self.header_args(chain, **kw)
        self.submit("client.update", args)
        return height

    def verify_args(self, packet: Packet, height: int | None = None) -> dict[str, Any]:
        if height is None:
            height = self.update(packet.src_chain)
        key = commitment_path(packet.dst_chain, packet.lane, packet.sequence)
        return {"packet": encode_packet(packet).hex(), "height": height,
                "proof": self.feeds[packet.src_chain].prove(height, key)}

    def verify(self, packet: Packet, sender: str = "relayer-a") -> list[Event]:
        return self.submit("packet.verify", self.verify_args(packet), sender)

    def certificate(self, key: bytes) -> dict[str, Any]:
        """A real relay certificate of ``key`` over the current relay state root."""
        commit = self.net.relay.commit(self.net.now_ms, state_root=self.state.root)
        return wire.certificate_to_json(RelayCertificate(commit, key, self.state.get(key), self.state.prove(key)))

    def deliver(self, packet: Packet) -> Event:
        """Phase 3 on the target park with a certificate of the relay's ``relay/verified`` record."""
        key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        return self.net.recv(packet, self.certificate(key))

    def ack_hex(self, packet: Packet) -> str:
        raw = self.feeds[packet.dst_chain].state.get(ack_path(packet.src_chain, packet.lane, packet.sequence))
        assert raw is not None, "the target has not executed the packet"
        return raw.decode()

    def confirm_args(self, packet: Packet, height: int | None = None, ack_hex: str | None = None) -> dict[str, Any]:
        if height is None:
            height = self.update(packet.dst_chain)
        key = receipt_path(packet.src_chain, packet.lane, packet.sequence)
        return {"packet": encode_packet(packet).hex(), "ack": ack_hex or self.ack_hex(packet), "height": height,
                "proof": self.feeds[packet.dst_chain].prove(height, key)}

    def confirm(self, packet: Packet) -> list[Event]:
        return self.submit("packet.confirm_ack", self.confirm_args(packet))

    def timeout_args(self, packet: Packet, height: int | None = None) -> dict[str, Any]:
        if height is None:
            height = self.update(packet.dst_chain)
        key = receipt_path(packet.src_chain, packet.lane, packet.sequence)
        return {"packet": encode_packet(packet).hex(), "height": height,
                "proof": self.feeds[packet.dst_chain].prove(height, key)}

    def confirm_timeout(self, packet: Packet) -> list[Event]:
        return self.submit("packet.confirm_timeout", self.timeout_args(packet))

    def unverified_timeout_args(self, packet: Packet, commit_height: int | None = None,
                                height: int | None = None) -> dict[str, Any]:
        """``packet.confirm_timeout`` for a packet the relay never verified: the timeout proof on the target
        plus membership of the packet's commitment on the source (SPEC §6.6 unverified timeout)."""
        if commit_height is None:
            commit_height = self.update(packet.src_chain)
        key = commitment_path(packet.dst_chain, packet.lane, packet.sequence)
        return {**self.timeout_args(packet, height), "commit_height": commit_height,
                "commit_proof": self.feeds[packet.src_chain].prove(commit_height, key)}

    def settle(self, packet: Packet, acked: bool = True) -> Event:
        """Phase 4 on the source park with a certificate of the relay's ``relay/outcome`` record."""
        key = outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        return self.net.settle(packet, self.certificate(key), self.ack_hex(packet) if acked else None)

    def roundtrip(self, packet: Packet) -> tuple[Event, Event]:
        """Phases 2-4 of a committed packet; returns (write_ack, settle_packet)."""
        self.verify(packet)
        ack = self.deliver(packet)
        self.confirm(packet)
        return ack, self.settle(packet)

    # -- governance --------------------------------------------------------------------------------------

    def gov_args(self, op: str, params: dict[str, Any], indices: Sequence[int] = (0, 1, 2, 3),
                 nonce: int | None = None) -> dict[str, Any]:
        n = governance_nonce(self.state) if nonce is None else nonce
        return {**params, "gov": sign_governance(RELAY, n, op, params, [(i, self.gov_keys[i]) for i in indices])}

    def govern(self, op: str, params: dict[str, Any], indices: Sequence[int] = (0, 1, 2, 3)) -> list[Event]:
        return self.submit(op, self.gov_args(op, params, indices))

    # -- cross-checks ------------------------------------------------------------------------------------

    def supply(self, home: str = DPOS, remote: str = POC, denom: str = "kWh") -> dict[str, int]:
        return self.sm.supply(self.state, home, LANE, remote, denom)

    def park_escrow(self, home: str = DPOS, remote: str = POC, denom: str = "kWh") -> int:
        return self.feeds[home].state.get_int(lane_escrow_path(remote, LANE, denom))

    def park_vouchers(self, home: str = DPOS, remote: str = POC, denom: str = "kWh") -> int:
        return self.feeds[remote].state.get_int(supply_path(f"{LANE}/{home}/{denom}"))

    def check_accounts_agree(self, home: str = DPOS, remote: str = POC, denom: str = "kWh") -> None:
        """At rest (every packet verified and confirmed): the relay's figures are the parks'."""
        s = self.supply(home, remote, denom)
        assert s["outbound"] == 0 and s["returning"] == 0, s
        assert s["outstanding"] == self.park_escrow(home, remote, denom) == self.park_vouchers(home, remote, denom), (
            s, self.park_escrow(home, remote, denom), self.park_vouchers(home, remote, denom))


__all__ = ["DAY", "DPOS", "EDGE", "LANE", "LANE1", "MINUTE", "POC", "RELAY", "VOUCHER", "ParkFeed", "RelayHarness"]
