"""Gas of the Ethereum park's bridge on a fresh anvil (chains/ethereum/SPEC.md §E2).

    python bench/gas.py [--json] [--relay-records 10000] [--validators 4]

Deploys two parks (``eth-a``, ``eth-b``) that trust a simulated relay chain of ``--validators`` equal-power
validators (keys generated now), whose state holds ``--relay-records`` records so that membership proofs
have the depth they have on a busy relay (about log2 of the record count). Certificates carry the
smallest quorum (3 of 4 signatures). Measures ``gasUsed`` of:

  send_first               sendEnergy: first packet of its lane (escrow and sequence slots written fresh)
  send                     sendEnergy: steady state, on a lane without capacities (not limited)
  send_limited             sendEnergy: steady state, on a lane with the denom's capacity and a default
                           (protocol §6.3 step 1: two capacity look-ups at most)
  recv_first               recvPacket: first receipt of a denom, creating its voucher (EIP-1167 clone)
  recv                     recvPacket: steady state, voucher exists, the receiver already holds some
  recv_new_holder          recvPacket: voucher exists, the receiver's first voucher balance
  recv_returning           recvPacket: a voucher coming home (unescrow)
  settle_success           settle: ACKED with a success ack (escrow kept)
  settle_refund_error_ack  settle: ACKED with an error ack (unescrow to the sender)
  settle_refund_timeout    settle: TIMED_OUT (unescrow to the sender)
  update_relay_validators  updateRelayValidators: a new set of the same size
  update_lane_config       updateLaneConfig: a certified lane-config record with two capacities (protocol §6.8)

Target (issue 4): recv <= 150,000 gas with 4 relay validators (3 signatures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ethereum.harness import (
    AnvilProcess,
    Evm,
    RelaySim,
    commit_abi,
    deploy_park,
    lower_hex,
    recv_packet,
    send_energy,
    settle,
    update_lane_config,
    validator_set_abi,
)

RECV_TARGET = 150_000
HOUR_MS = 3_600_000


def measure(relay_records: int, validators: int) -> dict[str, Any]:
    """Run every operation once on a fresh anvil; returns the figures and the conditions they hold under."""
    with AnvilProcess() as node:
        evm = Evm.connect(node.url)
        relay = RelaySim.create("relay", validators, filler_records=relay_records)
        a = deploy_park(evm, "eth-a", relay, [("eth-b", "lane-0"), ("eth-b", "lane-1")],
                        capacities={("eth-b", "lane-1"): {"kWh": 10**9, "*": 10**6}})
        b = deploy_park(evm, "eth-b", relay, [("eth-a", "lane-0")])
        alice, bob, carol, relayer = evm.account(), evm.account(), evm.account(), evm.account()
        evm.transact(a.token.functions.mint(alice.address, 10**9), a.operator)
        evm.transact(a.token.functions.approve(a.bridge.address, 2**256 - 1), alice)
        gas: dict[str, int] = {}

        def send(amount: int, receiver: str, timeout_ms: int | None = None) -> tuple[bytes, int]:
            t = timeout_ms if timeout_ms is not None else evm.now_ms() + HOUR_MS
            packet, receipt = send_energy(evm, a, alice, "eth-b", "lane-0", "kWh", amount, receiver, t, approve=False)
            return packet, int(receipt["gasUsed"])

        def recv(packet: bytes) -> tuple[bytes, int, int, int]:
            cert = relay.verify(packet)
            ack, receipt = recv_packet(evm, b, relayer, packet, cert, relay.vset)
            tx = evm.w3.eth.get_transaction(receipt["transactionHash"])
            return ack, int(receipt["gasUsed"]), len(bytes(tx["input"])), len(cert.proof.siblings)

        # first packet of the lane, and the first receipt of A's kWh on B (creates the voucher clone)
        p1, gas["send_first"] = send(1000, lower_hex(bob.address))
        ack1, gas["recv_first"], _, _ = recv(p1)
        # steady state: the voucher exists and bob holds some
        p2, gas["send"] = send(1000, lower_hex(bob.address))
        for _ in range(2):  # the second send on the limited lane is its steady state
            _, receipt = send_energy(evm, a, alice, "eth-b", "lane-1", "kWh", 1000, lower_hex(bob.address),
                                     evm.now_ms() + HOUR_MS, approve=False)
        gas["send_limited"] = int(receipt["gasUsed"])
        ack2, gas["recv"], calldata, siblings = recv(p2)
        # the voucher exists but carol holds none yet
        p3, _ = send(1000, lower_hex(carol.address))
        _, gas["recv_new_holder"], _, _ = recv(p3)

        success = settle(evm, a, relayer, p2, ack2, relay.confirm_ack(p2, ack2), relay.vset)
        gas["settle_success"] = int(success["gasUsed"])
        settle(evm, a, relayer, p1, ack1, relay.confirm_ack(p1, ack1), relay.vset)

        # error ack: B refuses an invalid receiver; A refunds
        p4, _ = send(700, "not-an-address")
        ack4, _, _, _ = recv(p4)
        gas["settle_refund_error_ack"] = int(
            settle(evm, a, relayer, p4, ack4, relay.confirm_ack(p4, ack4), relay.vset)["gasUsed"])

        # timeout: never received; the relay certifies TIMED_OUT; A refunds
        now_s = evm.latest_timestamp()
        p5, _ = send(500, lower_hex(bob.address), (now_s + 30) * 1000)
        evm.mine_at(now_s + 31)
        gas["settle_refund_timeout"] = int(
            settle(evm, a, relayer, p5, b"", relay.confirm_timeout(p5), relay.vset)["gasUsed"])

        # a voucher going home: bob sends some of his A-kWh vouchers back to A, which unescrows
        back, _ = send_energy(evm, b, bob, "eth-a", "lane-0", "lane-0/eth-a/kWh", 400, lower_hex(alice.address),
                              evm.now_ms() + HOUR_MS)
        _, receipt = recv_packet(evm, a, relayer, back, relay.verify(back), relay.vset)
        gas["recv_returning"] = int(receipt["gasUsed"])

        caps = {"kWh": 5 * 10**8, "*": 10**6}
        cert = relay.lane_config("eth-a", "eth-b", "lane-1", caps)
        gas["update_lane_config"] = int(update_lane_config(evm, a, relayer, "eth-b", "lane-1", caps, cert,
                                                           relay.vset)["gasUsed"])

        commit, keys, vset = relay.rotate(validators)
        receipt = evm.transact(b.bridge.functions.updateRelayValidators(
            validator_set_abi(vset), commit_abi(commit), validator_set_abi(relay.vset)), relayer)
        gas["update_relay_validators"] = int(receipt["gasUsed"])
        relay.install(keys, vset)

        return {
            "gas": gas,
            "conditions": {
                "relay_validators": validators,
                "signatures": len(commit.signatures),
                "relay_records": len(relay.tree),
                "proof_siblings": siblings,
                "recv_calldata_bytes": calldata,
                "anvil_hardfork": evm.rpc("anvil_nodeInfo", [])["hardFork"],
            },
            "target": {"recv_max": RECV_TARGET, "recv_met": gas["recv"] <= RECV_TARGET},
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--relay-records", type=int, default=10_000, help="records in the relay state (proof depth)")
    ap.add_argument("--validators", type=int, default=4, help="relay validators (equal power)")
    args = ap.parse_args()
    out = measure(args.relay_records, args.validators)
    if args.json:
        print(json.dumps(out))
        return 0
    for name, used in out["gas"].items():
        note = f"   (target <= {RECV_TARGET:,}: {'met' if used <= RECV_TARGET else 'MISSED'})" if name == "recv" else ""
        print(f"{name:<26} {used:>9,}{note}")
    print("conditions: " + ", ".join(f"{k}={v}" for k, v in out["conditions"].items()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
