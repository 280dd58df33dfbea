"""Test coordinator for the bridge: simulated parks, a simulated relay chain, one clock.

TEST ONLY. The relay validators' keys come from fixed public seeds.

* :class:`ParkSim` is a Python park chain reduced to its application: a :class:`ChainState`, an
  :class:`App` with the bridge ops, named accounts with ed25519 keys, and signed transactions executed
  with :meth:`App.execute_tx` at the network's clock. One transaction is one block.
* :class:`RelaySim` acts as the relay chain: it checks a packet's commitment (or receipt, or absence of
  receipt past the timeout) against the park's state root with a real proof, writes the
  ``relay/verified`` / ``relay/outcome`` records into a :class:`SparseMerkleTree`, and certifies its
  root with a real :class:`RelayHeader` signed by its validators, so certificates are the real thing.
* :class:`Network` drives the four phases between parks and checks supply conservation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chains.common import wire
from chains.common.bridge import (
    BridgeHooks,
    ack_path,
    init_bridge,
    register_bridge_ops,
    rights_report,
    supply_report,
)
from chains.common.rights import rights_violations
from chains.common.state import ChainState
from chains.common.tx import App, BlockContext, Tx, account_path, base_app, create_account
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
    commit_sign_bytes,
)
from protocol.codec import (
    ZERO_COMMITMENT,
    ack_commitment,
    decode_ack,
    decode_energy,
    decode_packet,
    encode_outcome,
    encode_packet,
    packet_commitment,
)
from protocol.crypto import Ed25519Signer
from protocol.errors import ReplayError, TimeoutExpiredError
from protocol.lane_config import encode_lane_config
from protocol.paths import commitment_path, lane_config_path, outcome_path, receipt_path, verified_path
from protocol.state_commitment import SparseMerkleTree, verify_membership, verify_non_membership
from protocol.types import NO_PAYEES, ChainId, FeePayees, LaneId, Packet, PacketKind, PacketOutcome

RELAY_CHAIN = "relay"
POWERS = (1, 1, 2, 2)
"""Total 6: validators 2 and 3 together hold exactly 2/3 (not a quorum); any three hold more."""
T0 = 1_700_000_000_000
STATIONS = {"station-7": "t1", "s1": "t1"}
"""The charging stations of the test parks, all behind transformer ``t1``."""
MINUTE = 60_000


def signer(tag: str) -> Ed25519Signer:
    """A TEST-ONLY key from a fixed, public seed."""
    return Ed25519Signer(hashlib.sha256(f"parkrelay-test-seed/{tag}".encode()).digest())


def relay_signers(generation: int) -> list[Ed25519Signer]:
    return [signer(f"relay-validator/{generation}/{i}") for i in range(len(POWERS))]


def validator_set(signers: Sequence[Ed25519Signer], powers: Sequence[int] = POWERS) -> ValidatorSet:
    return ValidatorSet(tuple(Validator(f"v{i}", s.pubkey, bytes(20), p)
                              for i, (s, p) in enumerate(zip(signers, powers, strict=True))))


class RelaySim:
    """The relay chain, reduced to its state tree and its signed headers."""

    def __init__(self, chain_id: str = RELAY_CHAIN, generation: int = 0) -> None:
        self.chain_id = chain_id
        self.signers = relay_signers(generation)
        self.vset = validator_set(self.signers)
        self.tree = SparseMerkleTree()
        self.height = 0
        self.last_hash = bytes(32)
        # unrelated records, so proofs have siblings to tamper with
        for i in range(8):
            self.tree = self.tree.set(f"relay/filler/{i}".encode(), bytes([i]) * 8)

    # -- phase 2 and the relay half of phase 4 ----------------------------------------------------

    def verify_packet(self, src: ParkSim, packet: Packet) -> None:
        """Phase 2: the source holds the commitment (proved against its root); record VERIFIED."""
        key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        if self.tree.get(key) is not None:
            raise ReplayError("already verified")
        cpath = commitment_path(packet.dst_chain, packet.lane, packet.sequence)
        commitment = packet_commitment(packet)
        verify_membership(src.state.root, cpath, commitment, src.state.prove(cpath))
        self.tree = self.tree.set(key, commitment)

    def verify_unchecked(self, packet: Packet) -> None:
        """Record a packet as VERIFIED without looking at its source (a forged or faulty source)."""
        key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        self.tree = self.tree.set(key, packet_commitment(packet))

    def confirm_ack(self, dst: ParkSim, packet: Packet, payees: FeePayees = NO_PAYEES) -> bytes:
        """Phase 4, relay half: the target's receipt (proved) matches its ack; record ACKED (with the fee
        ``payees`` the relay chain would name, SPEC §6.10). Returns the ack."""
        rpath = receipt_path(packet.src_chain, packet.lane, packet.sequence)
        raw = dst.state.get(ack_path(packet.src_chain, packet.lane, packet.sequence))
        assert raw is not None, "the target has not executed the packet"
        ack = bytes.fromhex(raw.decode())
        ack_c = ack_commitment(decode_ack(ack))
        verify_membership(dst.state.root, rpath, ack_c, dst.state.prove(rpath))
        self.tree = self.tree.set(outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                                  encode_outcome(PacketOutcome.ACKED, packet_commitment(packet), ack_c, payees))
        return ack

    def confirm_timeout(self, dst: ParkSim, packet: Packet, dst_time_ms: int, payees: FeePayees = NO_PAYEES) -> None:
        """Phase 4, relay half: no receipt (proved absent) at a target time past the timeout; record TIMED_OUT."""
        if dst_time_ms < packet.timeout_timestamp_ms:
            raise TimeoutExpiredError("the relay certifies a timeout only past it",
                                      expected=f">= {packet.timeout_timestamp_ms}", got=dst_time_ms)
        rpath = receipt_path(packet.src_chain, packet.lane, packet.sequence)
        verify_non_membership(dst.state.root, rpath, dst.state.prove(rpath))
        self.tree = self.tree.set(outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence),
                                  encode_outcome(PacketOutcome.TIMED_OUT, packet_commitment(packet), ZERO_COMMITMENT,
                                                 payees))

    def confirm_timeout_unverified(self, src: ParkSim, dst: ParkSim, packet: Packet, dst_time_ms: int) -> None:
        """Phase 4, relay half, for a packet never verified (SPEC §6.6): the source holds its commitment
        (proved), the target holds no receipt (proved) at a time past the timeout; record TIMED_OUT."""
        if self.tree.get(verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)) is not None:
            raise ReplayError("verified: use the ordinary timeout")
        cpath = commitment_path(packet.dst_chain, packet.lane, packet.sequence)
        verify_membership(src.state.root, cpath, packet_commitment(packet), src.state.prove(cpath))
        self.confirm_timeout(dst, packet, dst_time_ms)

    def set_lane_config(self, src: str, dst: str, lane: str, capacities: dict[str, int]) -> bytes:
        """Governance on the relay re-limits (or opens) a lane: its lane-config record (SPEC §6.8)."""
        raw = encode_lane_config(capacities)
        self.tree = self.tree.set(lane_config_path(ChainId(src), ChainId(dst), LaneId(lane)), raw)
        return raw

    # -- headers and certificates -----------------------------------------------------------------

    def commit(self, time_ms: int, *, indices: Sequence[int] | None = None,
               signers: Sequence[Ed25519Signer] | None = None, vset: ValidatorSet | None = None,
               next_set: ValidatorSet | None = None, chain_id: str | None = None,
               state_root: bytes | None = None) -> RelayCommit:
        """A new relay block over the current tree, signed (by default) by every current validator."""
        self.height += 1
        vset = vset or self.vset
        header = RelayHeader(ChainId(chain_id or self.chain_id), self.height, time_ms, self.last_hash,
                             hashlib.sha256(f"block-{self.height}".encode()).digest(),
                             state_root if state_root is not None else self.tree.root, vset.hash,
                             (next_set or vset).hash)
        self.last_hash = header.hash()
        signers = signers or self.signers
        msg = commit_sign_bytes(header, 0)
        idx = range(len(signers)) if indices is None else indices
        return RelayCommit(header, 0, tuple(CommitSignature(i, signers[i].sign(msg)) for i in idx))

    def certificate(self, key: bytes, time_ms: int, **commit_kw: Any) -> RelayCertificate:
        commit = self.commit(time_ms, **commit_kw)
        return RelayCertificate(commit, key, self.tree.get(key), self.tree.prove(key))

    def rotate(self, time_ms: int, generation: int) -> tuple[RelayCommit, ValidatorSet]:
        """Move to a new validator generation: the current set signs the header naming the next set."""
        new_signers = relay_signers(generation)
        new_set = validator_set(new_signers)
        commit = self.commit(time_ms, next_set=new_set)
        self.signers, self.vset = new_signers, new_set
        return commit, new_set


@dataclass
class ParkSim:
    """A Python park chain's application, run one transaction per block."""

    net: Network
    chain_id: str
    native_denoms: tuple[str, ...]
    hooks: BridgeHooks | None = None
    state: ChainState = field(default_factory=ChainState)
    app: App = field(init=False)
    keys: dict[str, Ed25519Signer] = field(default_factory=dict)
    height: int = 0

    def __post_init__(self) -> None:
        self.app = base_app(self.chain_id)
        register_bridge_ops(self.app, self.hooks)

    def add_account(self, name: str) -> None:
        self.keys[name] = signer(f"{self.chain_id}/{name}")
        create_account(self.state, name, self.keys[name].pubkey)

    def tx(self, sender: str, op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        nonce = self.state.get_json(account_path(sender))["nonce"]
        tx = Tx.signed(self.keys[sender], self.chain_id, sender, nonce, op, args)
        self.height += 1
        ctx = BlockContext(self.chain_id, self.height, self.net.now_ms, "producer")
        return self.app.execute_tx(self.state, tx, ctx)

    def balance(self, account: str, denom: str) -> int:
        return self.state.balance(account, denom)

    def supply(self, denom: str) -> int:
        return self.state.get_int(f"supply/{denom}".encode())

    def right(self, right_id: str) -> Any:
        return self.state.get_json(f"rights/{right_id}".encode())


class Network:
    """Parks, a relay chain and one clock; helpers for each phase."""

    def __init__(self, relay: RelaySim | None = None) -> None:
        self.now_ms = T0
        self.relay = relay or RelaySim()
        self.parks: dict[str, ParkSim] = {}

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    def add_park(self, chain_id: str, lanes: list[dict[str, Any]], *, native_denoms: Sequence[str] = ("kWh",),
                 accounts: Sequence[str] = ("alice", "bob", "relayer", "operator"),
                 transformers: dict[str, int] | None = None, stations: dict[str, str] | None = None,
                 hooks: BridgeHooks | None = None,
                 setup: Callable[[ChainState], None] | None = None, fee_denom: str | None = None) -> ParkSim:
        park = ParkSim(self, chain_id, tuple(native_denoms), hooks)
        for name in accounts:
            park.add_account(name)
        init_bridge(park.state, chain_id, self.relay.chain_id, self.relay.vset, native_denoms, lanes,
                    rights_operator="operator", transformers=transformers,
                    stations=stations, trusted_time_ms=self.now_ms, fee_denom=fee_denom)
        if setup is not None:
            setup(park.state)
        self.parks[chain_id] = park
        return park

    # -- the four phases ---------------------------------------------------------------------------

    def send(self, src: str, sender: str, **args: Any) -> Packet:
        """Phase 1 on ``src``; returns the committed packet."""
        args.setdefault("timeout_timestamp_ms", self.now_ms + 10 * MINUTE)
        events = self.parks[src].tx(sender, "bridge.send", args)
        (event,) = [e for e in events if e["type"] == "send_packet"]
        return decode_packet(bytes.fromhex(event["packet"]))

    def verify(self, packet: Packet) -> dict[str, Any]:
        """Phase 2: the relay verifies and certifies; returns the certificate's wire JSON."""
        self.relay.verify_packet(self.parks[packet.src_chain], packet)
        return self.verified_cert(packet)

    def verified_cert(self, packet: Packet, **commit_kw: Any) -> dict[str, Any]:
        key = verified_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        return wire.certificate_to_json(self.relay.certificate(key, self.now_ms, **commit_kw))

    def recv(self, packet: Packet, cert: dict[str, Any], sender: str = "relayer", **extra: Any) -> dict[str, Any]:
        """Phase 3 on the target; returns the ``write_ack`` event. ``extra``: more args (``relayer`` for the ack)."""
        events = self.parks[packet.dst_chain].tx(sender, "bridge.recv",
                                                 {"packet": encode_packet(packet).hex(), "certificate": cert, **extra})
        (event,) = [e for e in events if e["type"] == "write_ack"]
        return event

    def confirm(self, packet: Packet, payees: FeePayees = NO_PAYEES) -> tuple[dict[str, Any], str]:
        """Phase 4, relay half, for an executed packet: (outcome certificate JSON, ack hex)."""
        ack = self.relay.confirm_ack(self.parks[packet.dst_chain], packet, payees)
        return self.outcome_cert(packet), ack.hex()

    def confirm_timeout(self, packet: Packet, payees: FeePayees = NO_PAYEES) -> dict[str, Any]:
        self.relay.confirm_timeout(self.parks[packet.dst_chain], packet, self.now_ms, payees)
        return self.outcome_cert(packet)

    def confirm_timeout_unverified(self, packet: Packet) -> dict[str, Any]:
        self.relay.confirm_timeout_unverified(self.parks[packet.src_chain], self.parks[packet.dst_chain], packet,
                                              self.now_ms)
        return self.outcome_cert(packet)

    def lane_update_args(self, src: str, dst: str, lane: str, capacities: dict[str, int],
                         **commit_kw: Any) -> dict[str, Any]:
        """``bridge.update_lane`` args after the relay set the lane's capacities (certified now)."""
        raw = self.relay.set_lane_config(src, dst, lane, capacities)
        cert = self.relay.certificate(lane_config_path(ChainId(src), ChainId(dst), LaneId(lane)), self.now_ms,
                                      **commit_kw)
        return {"dst_chain": dst, "lane": lane, "config": raw.hex(), "certificate": wire.certificate_to_json(cert)}

    def outcome_cert(self, packet: Packet, **commit_kw: Any) -> dict[str, Any]:
        key = outcome_path(packet.src_chain, packet.dst_chain, packet.lane, packet.sequence)
        return wire.certificate_to_json(self.relay.certificate(key, self.now_ms, **commit_kw))

    def settle(self, packet: Packet, cert: dict[str, Any], ack_hex: str | None,
               relayer: str = "relayer") -> dict[str, Any]:
        """Phase 4, source half; returns the ``settle_packet`` event."""
        args: dict[str, Any] = {"packet": encode_packet(packet).hex(), "certificate": cert}
        if ack_hex is not None:
            args["ack"] = ack_hex
        events = self.parks[packet.src_chain].tx(relayer, "bridge.settle", args)
        (event,) = [e for e in events if e["type"] == "settle_packet"]
        return event

    def roundtrip(self, src: str, sender: str, **args: Any) -> tuple[Packet, dict[str, Any], dict[str, Any]]:
        """All four phases, checking conservation after each; returns (packet, write_ack, settle_packet)."""
        packet = self.send(src, sender, **args)
        self.check()
        ack_event = self.recv(packet, self.verify(packet))
        self.check()
        cert, ack = self.confirm(packet)
        settle_event = self.settle(packet, cert, ack)
        self.check()
        return packet, ack_event, settle_event

    def roots(self) -> dict[str, bytes]:
        return {cid: p.state.root for cid, p in self.parks.items()}

    # -- invariants --------------------------------------------------------------------------------

    def check(self) -> None:
        check_conservation(self)
        check_rights(self)


def pending_packets(net: Network) -> list[tuple[Packet, bool]]:
    """Packets sent and not yet settled, each with whether the target applied it with a success ack."""
    out = []
    for park in net.parks.values():
        for key, value in park.state.prefix_items(b"packets/"):
            packet = decode_packet(bytes.fromhex(value.decode()))
            assert park.state.get(commitment_path(packet.dst_chain, packet.lane, packet.sequence)) is not None, key
            dst = net.parks[packet.dst_chain].state
            raw_ack = dst.get(ack_path(packet.src_chain, packet.lane, packet.sequence))
            applied = raw_ack is not None and decode_ack(bytes.fromhex(raw_ack.decode())).success
            out.append((packet, applied))
    return out


def _balances_of(state: ChainState, denom: str) -> int:
    total = 0
    for key, value in state.prefix_items(b"balances/"):
        _, _account, d = key.decode().split("/", 2)
        if d == denom:
            total += int(value)
    return total


def check_conservation(net: Network) -> None:
    """No energy created or lost, per chain, denom and lane.

    * On each chain, every voucher's supply == its balances + what the bridge escrows of it (next hop).
    * On each chain ``X``, each total escrow == the sum of its per-lane shares.
    * For each share ``X -> (Y, L, d)``: escrow == ``supply/L/X/d`` on ``Y`` + in flight, where in flight
      is an unsettled packet not (yet) applied with a success ack: ``d`` sent by ``X`` to ``Y`` on ``L``
      (escrowed, not minted) or ``L/X/d`` sent back by ``Y`` (burned, not unescrowed).
    * Every voucher on ``Y`` whose trace names a park ``X`` and lane ``L`` is covered by such a share.
    """
    pending = pending_packets(net)
    for cid, park in net.parks.items():
        report = supply_report(park.state, park.native_denoms)
        for voucher, supply in report["vouchers"].items():
            assert supply == _balances_of(park.state, voucher) + report["escrow"].get(voucher, 0), (cid, voucher)
        per_denom: dict[str, int] = {}
        for share, amount in report["escrow_by_lane"].items():
            cp, lane, denom = share.split("/", 2)
            per_denom[denom] = per_denom.get(denom, 0) + amount
            voucher = f"{lane}/{cid}/{denom}"
            in_flight = 0
            for p, applied in pending:
                if p.kind is not PacketKind.ENERGY or applied or p.lane != lane:
                    continue
                e = decode_energy(p.payload)
                if (p.src_chain, p.dst_chain, e.denom) in ((cid, cp, denom), (cp, cid, voucher)):
                    in_flight += e.amount_wh
            assert amount == net.parks[cp].supply(voucher) + in_flight, (cid, share, amount, in_flight)
        assert {d: v for d, v in report["escrow"].items() if v} == {d: v for d, v in per_denom.items() if v}, cid
        for voucher, supply in report["vouchers"].items():
            lane, origin, denom = voucher.split("/", 2)
            if origin in net.parks and supply:
                shares = supply_report(net.parks[origin].state, ())["escrow_by_lane"]
                assert shares.get(f"{cid}/{lane}/{denom}", 0) >= supply, (cid, voucher)


def check_rights(net: Network) -> None:
    """Every charging right exists exactly once (:func:`chains.common.rights.rights_violations`): one live
    record or one unapplied packet, and every escrowed copy matched by the next hop's voucher."""
    reports = {cid: rights_report(park.state) for cid, park in net.parks.items()}
    problems = rights_violations(reports, pending_packets(net))
    assert not problems, problems


def two_parks(capacities: dict[str, int] | None = None, **kw: Any) -> Network:
    """dpos-park and poc-park joined by lane-0, both with native ``kWh``; alice on dpos holds 100 kWh.
    ``capacities``: the relay's lane capacities both parks learn at genesis (default: not limited)."""
    net = Network(**kw)
    caps: dict[str, Any] = {} if capacities is None else {"capacities": capacities}
    dpos = net.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "poc-park", **caps}],
                        transformers={"t1": 100}, stations=STATIONS)
    poc = net.add_park("poc-park", [{"lane": "lane-0", "counterparty": "dpos-park", **caps}],
                       accounts=("bob", "carol", "relayer", "operator"), transformers={"t1": 50}, stations=STATIONS)
    dpos.state.add_balance("alice", "kWh", 100_000)
    poc.state.add_balance("carol", "kWh", 40_000)
    return net


def three_parks() -> Network:
    """dpos-park -lane-0- poc-park -lane-1- edge-park, a line of three parks; each has transformer ``t1``
    (100, 50 and 40 kW) with the :data:`STATIONS` behind it; alice on dpos holds 100 kWh."""
    net = two_parks()
    poc = net.parks["poc-park"]
    net.add_park("edge-park", [{"lane": "lane-1", "counterparty": "poc-park"}],
                 accounts=("dave", "relayer", "operator"), transformers={"t1": 40}, stations=STATIONS)
    poc.state.set_json(b"bridge/lanes/edge-park/lane-1", {"counterparty": "edge-park", "lane": "lane-1"})
    return net
