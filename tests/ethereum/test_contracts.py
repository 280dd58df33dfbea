"""The Ethereum park's contracts on a real anvil (chains/ethereum/SPEC.md §E1, §E2; protocol/SPEC.md §2–§7).

Relay certificates are made by the Python reference (``protocol.certificate``, ``protocol.state_commitment``)
with validator keys generated at run time and secp256k1 signatures by ``relay.chain.consensus.messages``; the
reference verifier accepts each one before the contract sees it (``tests/ethereum/harness.py``). Reverts
are compared by custom-error name and arguments.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import replace
from typing import Any

import coincurve
import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from protocol.certificate import CommitSignature, RelayCertificate, RelayCommit, commit_sign_bytes
from protocol.codec import (
    decode_packet,
    encode_ack,
    encode_charging_right,
    encode_energy,
    encode_packet,
    encode_reputation,
    sha256,
)
from protocol.paths import outcome_path, verified_path
from protocol.state_commitment import Proof
from protocol.types import (
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    EnergyPayload,
    LaneId,
    Packet,
    PacketKind,
    ReputationPayload,
)
from relay.chain.consensus.messages import ValidatorKey
from tests.ethereum.conftest import ALICE_WH, BOB_WH, DPOS, LANE, A, B, World
from tests.ethereum.harness import (
    Park,
    RelaySim,
    TxFailed,
    certificate_abi,
    commit_abi,
    deploy_park,
    lower_hex,
    make_validators,
    mapping_slot,
    recv_packet,
    send_energy,
    settle,
    token_of,
    validator_set_abi,
    voucher_of,
)

pytestmark = pytest.mark.integration

VOUCHER_A_ON_B = f"{LANE}/{A}/kWh"  # A's kWh as a voucher on B
SUCCESS_ACK = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b""))
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HOUR_MS = 3_600_000


def error_ack(code: str) -> bytes:
    return encode_ack(Acknowledgement(AckStatus.ERROR, code, b""))


def timeout(w: World, ms: int = HOUR_MS) -> int:
    return w.evm.now_ms() + ms


def balance(token: Any, who: str) -> int:
    return int(token.functions.balanceOf(to_checksum_address(who)).call())


def escrowed(park: Park, counterparty: str, denom: str, lane: str = LANE) -> int:
    return int(park.bridge.functions.escrowed(counterparty, lane, denom).call())


def supply(w: World, park: Park, denom: str) -> int:
    token = voucher_of(w.evm, park, denom)
    return 0 if token is None else int(token.functions.totalSupply().call())


def recv_call(w: World, park: Park, packet: bytes, cert: RelayCertificate, vset: Any = None,
              raw_proof: bytes | None = None) -> Any:
    return park.bridge.functions.recvPacket(packet, certificate_abi(cert, raw_proof),
                                            validator_set_abi(vset or w.relay.vset), "")


def settle_call(w: World, park: Park, packet: bytes, ack: bytes, cert: RelayCertificate) -> Any:
    return park.bridge.functions.settle(packet, ack, certificate_abi(cert), validator_set_abi(w.relay.vset),
                                        ("", "", ""))


def recv_error(w: World, park: Park, packet: bytes, cert: RelayCertificate, vset: Any = None,
               raw_proof: bytes | None = None) -> Any:
    return w.evm.revert_of(recv_call(w, park, packet, cert, vset, raw_proof), w.relayer)


def py_packet(dst: str, *, receiver: str, timeout_ms: int, src: str = DPOS, lane: str = LANE, sequence: int = 1,
              kind: PacketKind = PacketKind.ENERGY, payload: bytes | None = None, sender: str = "dpos-user") -> bytes:
    """A packet as a Python park would commit it (protocol codec)."""
    if payload is None:
        payload = encode_energy(EnergyPayload("kWh", 700))
    return encode_packet(Packet(ChainId(src), ChainId(dst), LaneId(lane), sequence, kind, payload, sender,
                                receiver, timeout_ms))


def send_a_to_b(w: World, amount: int = 1500, receiver: str | None = None, timeout_ms: int | None = None) -> bytes:
    packet, _ = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", amount,
                            lower_hex(w.bob.address) if receiver is None else receiver,
                            timeout(w) if timeout_ms is None else timeout_ms)
    return packet


def deliver(w: World, dst: Park, packet: bytes) -> bytes:
    """Phases 2 and 3: the relay verifies, the target executes; returns the ack."""
    ack, _ = recv_packet(w.evm, dst, w.relayer, packet, w.relay.verify(packet), w.relay.vset)
    return ack


def commitment_slot(dst: str, lane: str, sequence: int) -> bytes:
    """SPEC §E2.1: ``commitments`` at slot 0, keyed ``keccak256(abi.encode(dst, lane, sequence))``."""
    return mapping_slot(keccak(abi_encode(["string", "string", "uint64"], [dst, lane, sequence])), 0)


def receipt_slot(src: str, lane: str, sequence: int) -> bytes:
    """SPEC §E2.1: ``receipts`` at slot 1, keyed ``keccak256(abi.encode(src, lane, sequence))``."""
    return mapping_slot(keccak(abi_encode(["string", "string", "uint64"], [src, lane, sequence])), 1)


def verified_key(src: str, dst: str, sequence: int) -> bytes:
    return verified_path(ChainId(src), ChainId(dst), LaneId(LANE), sequence)


def outcome_key(src: str, dst: str, sequence: int) -> bytes:
    return outcome_path(ChainId(src), ChainId(dst), LaneId(LANE), sequence)


def with_signatures(cert: RelayCertificate, sigs: list[CommitSignature]) -> RelayCertificate:
    return replace(cert, commit=replace(cert.commit, signatures=tuple(sigs)))


# --- phase 1: COMMIT ---------------------------------------------------------------------------------


def name_of(revert: tuple[object, ...] | None) -> str | None:
    """The error name of a revert tuple (``Evm.revert_of``), None for no revert."""
    return None if revert is None else str(revert[0])


def test_send_escrows_and_stores_the_commitment_at_slot_0(world: World) -> None:
    w = world
    t = timeout(w)
    packet, receipt = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", 1500, lower_hex(w.bob.address), t)
    expected = Packet(ChainId(A), ChainId(B), LaneId(LANE), 1, PacketKind.ENERGY,
                      encode_energy(EnergyPayload("kWh", 1500)), lower_hex(w.alice.address),
                      lower_hex(w.bob.address), t)
    assert packet == encode_packet(expected)  # the bridge's abi.encode is the protocol codec, byte for byte
    (event,) = w.evm.events(w.a.bridge, "PacketSent", receipt)
    # indexed: an operator filters by lane (its keccak256 topic), sequence and sender without reading the data
    assert (bytes(event["lane"]), event["sequence"], event["sender"]) == (keccak(text=LANE), 1, w.alice.address)
    (log,) = [x for x in receipt["logs"] if x["address"] == w.a.bridge.address]
    assert [bytes(t) for t in log["topics"][1:]] == [keccak(text=LANE), (1).to_bytes(32, "big"),
                                                      bytes(12) + bytes.fromhex(w.alice.address[2:])]
    # SPEC §E2.1: slot 0 holds the commitment under keccak(abi.encode(dst, lane, seq))
    assert w.evm.storage(w.a.bridge.address, commitment_slot(B, LANE, 1)) == sha256(packet)
    assert bytes(w.a.bridge.functions.commitmentOf(B, LANE, 1).call()) == sha256(packet)
    assert escrowed(w.a, B, "kWh") == 1500
    assert balance(w.a.token, w.a.bridge.address) == 1500
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 1500
    assert w.a.bridge.functions.nextSequenceSend(B, LANE).call() == 2
    second = send_a_to_b(w, 10)
    assert decode_packet(second).sequence == 2 and w.a.bridge.functions.nextSequenceSend(B, LANE).call() == 3
    assert escrowed(w.a, B, "kWh") == 1510
    # sequences are per (dst, lane)
    assert w.a.bridge.functions.nextSequenceSend(DPOS, LANE).call() == 1


def test_send_refusals(world: World) -> None:
    w = world
    bridge, alice, bob = w.a.bridge, w.alice, lower_hex(w.bob.address)
    t = timeout(w)
    w.evm.transact(w.a.token.functions.approve(bridge.address, 10**9), alice)

    def err(*args: Any) -> Any:
        return w.evm.revert_of(bridge.functions.sendEnergy(*args), alice)

    assert err(B, "lane-9", "kWh", 1, bob, t) == ("LaneInvalid", B, "lane-9")
    assert err(A, LANE, "kWh", 1, bob, t) == ("WrongChain", f"not {A}", A)
    assert name_of(err(B, LANE, "kWh", 1, bob, 0)) == "CodecInvalid"
    now = w.evm.now_ms()
    assert name_of(err(B, LANE, "kWh", 1, bob, now)) == "PacketTimeout"
    assert err(B, LANE, "kWh", 1, bob, now)[1] == now
    assert name_of(err(B, LANE, "kWh", 0, bob, t)) == "CodecInvalid"
    assert name_of(err(B, LANE, "kWh", 1, "", t)) == "CodecInvalid"
    assert name_of(err(B, LANE, "kWh", 1, "r" * 257, t)) == "CodecInvalid"
    assert name_of(err(B, LANE, "", 1, bob, t)) == "CodecInvalid"
    assert name_of(err(B, LANE, "MWh", 1, bob, t)) == "InsufficientFunds"  # no such token here
    assert name_of(err(B, LANE, f"{LANE}/{B}/kWh", 1, bob, t)) == "InsufficientFunds"  # no voucher of B's kWh here
    assert err(B, LANE, "kWh", ALICE_WH + 1, bob, t) == ("InsufficientFunds", ALICE_WH, ALICE_WH + 1)
    no_allowance = bridge.functions.sendEnergy(B, LANE, "kWh", 1, bob, t)
    assert w.evm.revert_of(no_allowance, w.bob) == ("AllowanceTooLow", 0, 1)
    assert err(B, LANE, "kWh", 1, bob, t) is None  # and the good call passes

    # text the relay's strict decoder would refuse must not be committed (its escrow could never move)
    selector = function_signature_to_4byte_selector("sendEnergy(string,string,string,uint256,string,uint64)")
    types = ["string", "string", "bytes", "uint256", "bytes", "uint64"]
    for denom, receiver in [(b"k\xffWh", bob.encode()), (b"kWh", b"\xc0\xaf"), (b"kWh", b"\xed\xa0\x80"),
                            (b"kWh", b"\xf4\x90\x80\x80"), (b"kWh", b"ab\xe2\x82")]:
        data = selector + abi_encode(types, [B, LANE, denom, 1, receiver, t])
        assert name_of(w.evm.revert_of_data(bridge.address, data, alice)) == "CodecInvalid", (denom, receiver)
    for text in ["ünïcödé", "€", "𝄞", "plain"]:  # valid UTF-8 of 2, 3 and 4 bytes is accepted
        data = selector + abi_encode(types, [B, LANE, b"kWh", 1, text.encode(), t])
        assert w.evm.revert_of_data(bridge.address, data, alice) is None, text


def test_open_lane_is_for_the_operator(world: World) -> None:
    w = world
    bridge = w.a.bridge
    assert w.evm.revert_of(bridge.functions.openLane("eth-z", "lane-1"), w.alice) == (
        "Unauthorized", w.a.operator.address.lower(), w.alice.address.lower())
    assert w.evm.error_name(bridge.functions.openLane("Eth-Z", "lane-1"), w.a.operator) == "CodecInvalid"
    assert w.evm.error_name(bridge.functions.openLane("eth-z", "lane/1"), w.a.operator) == "CodecInvalid"
    assert w.evm.error_name(bridge.functions.openLane("x" * 65, "lane-1"), w.a.operator) == "CodecInvalid"
    assert w.evm.error_name(bridge.functions.openLane(A, "lane-1"), w.a.operator) == "WrongChain"
    assert not bridge.functions.laneOpen("eth-z", "lane-1").call()
    w.evm.transact(bridge.functions.openLane("eth-z", "lane-1"), w.a.operator)
    assert bridge.functions.laneOpen("eth-z", "lane-1").call()
    assert bridge.functions.nextSequenceSend("eth-z", "lane-1").call() == 1


# --- phase 3: EXECUTE --------------------------------------------------------------------------------


def test_recv_mints_a_voucher_clone_and_writes_the_receipt_at_slot_1(world: World) -> None:
    w = world
    packet = send_a_to_b(w, 1500)
    cert = w.relay.verify(packet)
    ack, receipt = recv_packet(w.evm, w.b, w.relayer, packet, cert, w.relay.vset)
    assert ack == SUCCESS_ACK
    (event,) = w.evm.events(w.b.bridge, "AckWritten", receipt)
    assert (event["srcChain"], event["laneId"], event["sequence"], event["kind"], event["ackCode"]) == (
        A, LANE, 1, 1, "ok")
    assert bytes(event["lane"]) == keccak(text=LANE)
    assert w.evm.storage(w.b.bridge.address, receipt_slot(A, LANE, 1)) == sha256(ack)
    assert bytes(w.b.bridge.functions.receiptOf(A, LANE, 1).call()) == sha256(ack)

    (created,) = w.evm.events(w.evm.at("EnergyApp", w.b.bridge.address), "VoucherCreated", receipt)
    voucher = token_of(w.evm, w.b, VOUCHER_A_ON_B)
    assert created == {"denom": VOUCHER_A_ON_B, "token": voucher.address}
    # an EIP-1167 minimal proxy of the implementation
    code = bytes(w.evm.w3.eth.get_code(voucher.address))
    impl = bytes.fromhex(w.b.voucher_impl.address[2:])
    assert code == bytes.fromhex("363d3d373d3d3d363d73") + impl + bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
    assert voucher.functions.name().call() == VOUCHER_A_ON_B
    assert voucher.functions.decimals().call() == 3
    assert voucher.functions.bridge().call() == w.b.bridge.address
    assert balance(voucher, w.bob.address) == 1500
    assert supply(w, w.b, VOUCHER_A_ON_B) == escrowed(w.a, B, "kWh") == 1500  # I2 while in flight

    # a second packet mints on the same clone
    packet2 = send_a_to_b(w, 250)
    _, receipt2 = recv_packet(w.evm, w.b, w.relayer, packet2, w.relay.verify(packet2), w.relay.vset)
    assert w.evm.events(w.evm.at("EnergyApp", w.b.bridge.address), "VoucherCreated", receipt2) == []
    assert balance(voucher, w.bob.address) == 1750
    assert supply(w, w.b, VOUCHER_A_ON_B) == escrowed(w.a, B, "kWh") == 1750


def test_recv_twice_is_a_replay(world: World) -> None:
    w = world
    packet = send_a_to_b(w)
    cert = w.relay.verify(packet)
    recv_packet(w.evm, w.b, w.relayer, packet, cert, w.relay.vset)
    assert name_of(recv_error(w, w.b, packet, cert)) == "PacketReplay"
    # a fresh, valid certificate changes nothing: the receipt check comes first
    assert name_of(recv_error(w, w.b, packet, w.relay.verify(packet))) == "PacketReplay"
    with pytest.raises(TxFailed):
        recv_packet(w.evm, w.b, w.relayer, packet, cert, w.relay.vset)
    assert supply(w, w.b, VOUCHER_A_ON_B) == 1500


def test_recv_from_a_python_park(world: World) -> None:
    w = world
    receiver = lower_hex(w.bob.address)
    packet = py_packet(B, receiver=receiver, timeout_ms=timeout(w))
    assert deliver(w, w.b, packet) == SUCCESS_ACK
    assert balance(token_of(w.evm, w.b, f"{LANE}/{DPOS}/kWh"), w.bob.address) == 700


def test_forged_and_malformed_signatures(world: World) -> None:
    w = world
    packet = send_a_to_b(w)
    cert = w.relay.verify(packet)
    msg = commit_sign_bytes(cert.commit.header, cert.commit.round)
    sigs = list(cert.commit.signatures)
    stranger = ValidatorKey(secrets.token_bytes(32), coincurve.PrivateKey().secret)

    def with_sig(position: int, sig: bytes, index: int | None = None) -> RelayCertificate:
        changed = list(sigs)
        old = changed[position]
        changed[position] = CommitSignature(old.validator_index if index is None else index, old.ed25519_sig, sig)
        return with_signatures(cert, changed)

    # a signature by a key outside the set, at validator 1's index
    assert recv_error(w, w.b, packet, with_sig(1, stranger.sign_secp256k1(msg))) == ("SignatureInvalid", 1)
    # validator 2's signature over other bytes
    assert recv_error(w, w.b, packet, with_sig(2, w.relay.keys[2].sign_secp256k1(sha256(b"other")))) == (
        "SignatureInvalid", 2)
    r, s, v = sigs[0].secp256k1_sig[:32], int.from_bytes(sigs[0].secp256k1_sig[32:64], "big"), sigs[0].secp256k1_sig[64]
    # the high-s twin recovers the same key but is not canonical
    high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    assert recv_error(w, w.b, packet, with_sig(0, high_s)) == ("SignatureInvalid", 0)
    assert recv_error(w, w.b, packet, with_sig(0, r + s.to_bytes(32, "big") + bytes([v - 27]))) == (
        "SignatureInvalid", 0)  # v 0/1
    assert recv_error(w, w.b, packet, with_sig(0, sigs[0].secp256k1_sig[:64])) == ("SignatureInvalid", 0)
    assert recv_error(w, w.b, packet, with_sig(0, b"")) == ("SignatureInvalid", 0)
    assert recv_error(w, w.b, packet, with_sig(0, bytes(65))) == ("SignatureInvalid", 0)
    # validator 0's good signature presented as validator 3's
    assert recv_error(w, w.b, packet, with_sig(0, sigs[0].secp256k1_sig, index=3)) == ("SignatureInvalid", 3)
    # index out of range, and one validator twice (enough power without the duplicate or not)
    assert recv_error(w, w.b, packet, with_sig(2, sigs[2].secp256k1_sig, index=4)) == ("SignatureInvalid", 4)
    assert recv_error(w, w.b, packet, with_signatures(cert, [*sigs, sigs[1]])) == ("SignatureInvalid", 1)
    assert recv_error(w, w.b, packet, with_signatures(cert, [sigs[0], sigs[0], sigs[1]])) == ("SignatureInvalid", 0)
    # one bad signature fails the commit even when the others reach quorum
    full = w.relay.certificate(verified_key(A, B, 1), sha256(packet), signers=[0, 1, 2, 3])
    full_msg = commit_sign_bytes(full.commit.header, full.commit.round)
    bad_last = list(full.commit.signatures)
    bad_last[3] = CommitSignature(3, bad_last[3].ed25519_sig, stranger.sign_secp256k1(full_msg))
    assert recv_error(w, w.b, packet, with_signatures(full, bad_last)) == ("SignatureInvalid", 3)
    # any order of distinct signers is fine
    assert recv_error(w, w.b, packet, with_signatures(cert, sigs[::-1])) is None
    assert recv_error(w, w.b, packet, full) is None


def test_insufficient_signatures(world: World) -> None:
    w = world
    packet = send_a_to_b(w)
    assert recv_error(w, w.b, packet, w.relay.verify(packet, [0, 1], check=False)) == ("QuorumNotReached", 2, 4)
    assert recv_error(w, w.b, packet, w.relay.verify(packet, [3], check=False)) == ("QuorumNotReached", 1, 4)
    assert recv_error(w, w.b, packet, w.relay.verify(packet, [], check=False)) == ("QuorumNotReached", 0, 4)
    assert recv_error(w, w.b, packet, w.relay.verify(packet, signers=[1, 2, 3])) is None


def test_quorum_counts_power_and_exactly_two_thirds_is_not_enough(world: World) -> None:
    w = world
    keys, vset = make_validators(4, powers=[3, 1, 1, 1])  # total 6
    relay = RelaySim("relay", keys, vset, clock=w.evm.now_ms)
    c = deploy_park(w.evm, "eth-c", relay, [(DPOS, LANE)])
    packet = py_packet("eth-c", receiver=lower_hex(w.bob.address), timeout_ms=timeout(w))

    def err(signers: list[int]) -> Any:
        cert = relay.certificate(verified_key(DPOS, "eth-c", 1), sha256(packet), signers, check=False)
        return w.evm.revert_of(recv_call(w, c, packet, cert, vset), w.relayer)

    assert err([0]) == ("QuorumNotReached", 3, 6)
    assert err([0, 1]) == ("QuorumNotReached", 4, 6)  # exactly 2/3
    assert err([1, 2, 3]) == ("QuorumNotReached", 3, 6)
    assert err([0, 1, 2]) is None  # 5/6
    assert err([2, 1, 0]) is None


def test_wrong_validator_set(world: World) -> None:
    w = world
    packet = send_a_to_b(w)
    cert = w.relay.verify(packet)
    other_keys, other_set = make_validators(4)
    # the calldata set is not the trusted one
    assert name_of(recv_error(w, w.b, packet, cert, vset=other_set)) == "ValidatorSetMismatch"
    # a certificate of a block signed by another set (its header names that set)
    forged = w.relay.commit(keys=other_keys, vset=other_set)
    assert name_of(recv_error(w, w.b, packet, replace(cert, commit=forged))) == "ValidatorSetMismatch"
    # another set's keys signing a header that names the trusted set
    impostor = w.relay.commit(keys=other_keys)
    assert recv_error(w, w.b, packet, replace(cert, commit=impostor)) == ("SignatureInvalid", 0)
    # the trusted set with one power changed hashes differently
    tampered = replace(w.relay.vset, validators=(replace(w.relay.vset.validators[0], power=2),
                                                   *w.relay.vset.validators[1:]))
    assert name_of(recv_error(w, w.b, packet, cert, vset=tampered)) == "ValidatorSetMismatch"
    assert recv_error(w, w.b, packet, cert) is None


def test_tampered_and_misdirected_proofs(world: World) -> None:
    w = world
    packet = send_a_to_b(w)
    second = send_a_to_b(w, 99)
    cert = w.relay.verify(packet)
    proof = cert.proof
    assert proof.leaf is not None and len(proof.siblings) >= 3

    def with_proof(p: Proof) -> RelayCertificate:
        return replace(cert, proof=p)

    def raw_error(raw: bytes) -> Any:
        return recv_error(w, w.b, packet, cert, raw_proof=raw)

    flipped = list(proof.siblings)
    flipped[1] = bytes([flipped[1][0] ^ 1]) + flipped[1][1:]
    assert name_of(recv_error(w, w.b, packet, with_proof(Proof(tuple(flipped), proof.leaf)))) == "ProofInvalid"
    assert name_of(recv_error(w, w.b, packet, with_proof(Proof(proof.siblings[:-1], proof.leaf)))) == "ProofInvalid"
    assert recv_error(w, w.b, packet, with_proof(Proof(proof.siblings, (proof.leaf[0], sha256(b"x"))))) == (
        "ProofInvalid",)
    assert name_of(recv_error(w, w.b, packet, with_proof(Proof(proof.siblings, None)))) == "ProofInvalid"
    # bytes that are not a proof encoding
    raw = proof.encode()
    assert name_of(raw_error(raw[:-1])) == "CodecInvalid"
    assert name_of(raw_error(raw + b"\x00")) == "CodecInvalid"
    assert name_of(raw_error(b"\x01\x01" + bytes(40))) == "CodecInvalid"  # n = 257
    assert name_of(raw_error(b"\x00")) == "CodecInvalid"
    assert name_of(raw_error(raw[:2 + 32 * len(proof.siblings)] + b"\x02" + raw[-64:])) == "CodecInvalid"
    assert raw_error(raw) is None
    # a valid proof of another key: the bridge derives the key from the packet it executes
    assert name_of(recv_error(w, w.b, packet, w.relay.verify(second))) == "ProofInvalid"
    # the relay recorded packet 1's commitment under packet 2's key: not a proof for packet 2
    misfiled = w.relay.certificate(verified_key(A, B, 3), sha256(packet), check=False)
    third = send_a_to_b(w, 5)
    assert name_of(recv_error(w, w.b, third, misfiled)) == "ProofInvalid"
    # a proof of the outcome path is not a proof of the verified path
    outcome = w.relay.certificate(outcome_key(A, B, 1), sha256(packet), check=False)
    assert name_of(recv_error(w, w.b, packet, outcome)) == "ProofInvalid"
    # a header whose state root was changed after signing
    header = replace(cert.commit.header, state_root=sha256(b"root"))
    assert recv_error(w, w.b, packet, replace(cert, commit=replace(cert.commit, header=header)))[0] == (
        "SignatureInvalid")
    assert recv_error(w, w.b, packet, cert) is None


def test_wrong_chain(world: World) -> None:
    w = world
    t = timeout(w)
    for_c = py_packet("eth-c", receiver=lower_hex(w.bob.address), timeout_ms=t)
    assert name_of(recv_error(w, w.b, for_c, w.relay.verify(for_c))) == "WrongChain"
    packet = send_a_to_b(w)
    cert = w.relay.verify(packet)
    other_relay = replace(cert, commit=w.relay.commit(chain_id="other-relay"))
    assert name_of(recv_error(w, w.b, packet, other_relay)) == "WrongChain"
    # settle is for the chain that sent the packet
    assert w.evm.error_name(settle_call(w, w.b, packet, SUCCESS_ACK, cert), w.relayer) == "WrongChain"


def test_recv_at_or_after_the_timeout(world: World) -> None:
    w = world
    now_s = w.evm.latest_timestamp()
    t = (now_s + 100) * 1000
    packet = send_a_to_b(w, timeout_ms=t)
    cert = w.relay.verify(packet)
    assert recv_error(w, w.b, packet, cert) is None  # before the timeout it would execute
    w.evm.mine_at(now_s + 100)  # block time == timeout: too late (§6.5 step 4)
    assert name_of(recv_error(w, w.b, packet, cert)) == "PacketTimeout"
    with pytest.raises(TxFailed):  # mined, and reverted
        w.evm.transact(recv_call(w, w.b, packet, cert), w.relayer, gas=2_000_000)
    assert bytes(w.b.bridge.functions.receiptOf(A, LANE, 1).call()) == bytes(32)  # nothing written
    assert voucher_of(w.evm, w.b, VOUCHER_A_ON_B) is None


def test_error_acks(world: World) -> None:
    w = world
    t = timeout(w)
    bob = lower_hex(w.bob.address)
    cases: list[tuple[str, bytes]] = []
    seq = 0

    def packet(**kw: Any) -> bytes:
        nonlocal seq
        seq += 1
        kw.setdefault("receiver", bob)
        return py_packet(B, sequence=seq, timeout_ms=t, **kw)

    cases.append(("receiver.invalid", packet(receiver=bob.upper().replace("0X", "0x"))))
    cases.append(("receiver.invalid", packet(receiver=bob[:-1])))
    cases.append(("receiver.invalid", packet(receiver=bob + "0")))
    cases.append(("receiver.invalid", packet(receiver="bob")))
    cases.append(("receiver.invalid", packet(receiver="0x" + "0" * 40)))
    right = ChargingRightPayload("right-1", ChainId(DPOS), "station-1", "trafo-1", 11, t + 10, t + 20)
    cases.append(("station.unknown", packet(kind=PacketKind.CHARGING_RIGHT, payload=encode_charging_right(right))))
    zero_amount = abi_encode(["string", "uint256"], ["kWh", 0])
    cases.append(("payload.invalid", packet(payload=zero_amount)))
    cases.append(("payload.invalid", packet(payload=abi_encode(["string", "uint256"], ["", 5]))))
    cases.append(("payload.invalid", packet(payload=encode_energy(EnergyPayload("kWh", 5)) + bytes(32))))
    cases.append(("payload.invalid", packet(payload=b"\x01")))
    cases.append(("payload.invalid", packet(kind=PacketKind.REPUTATION, payload=encode_energy(EnergyPayload("k", 5)))))
    bad_text = abi_encode(["bytes", "uint64", "bytes", "uint64"], [b"subject\xff", 1, b"model", 1])
    cases.append(("payload.invalid", packet(kind=PacketKind.REPUTATION, payload=bad_text)))
    big_score = abi_encode(["string", "uint256", "string", "uint64"], ["subject", 2**64, "model", 1])
    cases.append(("payload.invalid", packet(kind=PacketKind.REPUTATION, payload=big_score)))
    cases.append(("denom.too_long", packet(payload=encode_energy(EnergyPayload("d" * 250, 5)))))
    cases.append(("denom.invalid", packet(payload=encode_energy(EnergyPayload(f"{LANE}/{B}/", 5)))))
    # B escrowed nothing towards dpos-park: a "returning" kWh is refused
    cases.append(("escrow.insufficient", packet(payload=encode_energy(EnergyPayload(f"{LANE}/{B}/kWh", 5)))))
    for code, pkt in cases:
        ack = deliver(w, w.b, pkt)
        assert ack == error_ack(code), (code, pkt.hex())
    # refusals change nothing but the receipt
    assert voucher_of(w.evm, w.b, f"{LANE}/{DPOS}/kWh") is None
    assert voucher_of(w.evm, w.b, f"{LANE}/{DPOS}/" + "d" * 250) is None
    assert balance(w.b.token, w.bob.address) == BOB_WH
    for i, (code, _) in enumerate(cases, start=1):
        assert bytes(w.b.bridge.functions.receiptOf(DPOS, LANE, i).call()) == sha256(error_ack(code))


def test_escrow_is_per_lane(world: World) -> None:
    """Vouchers of B's kWh coming home from dpos-park cannot unlock what B escrowed towards A."""
    w = world
    t = timeout(w)
    send_energy(w.evm, w.b, w.bob, A, LANE, "kWh", 900, lower_hex(w.alice.address), t)
    assert escrowed(w.b, A, "kWh") == 900
    home = py_packet(B, receiver=lower_hex(w.bob.address), timeout_ms=t,
                     payload=encode_energy(EnergyPayload(f"{LANE}/{B}/kWh", 100)))
    assert deliver(w, w.b, home) == error_ack("escrow.insufficient")
    # nor can a "returning" kWh from A over another lane (a lane B never opened: the relay's registry decides
    # which lanes carry packets, §6.4 step 4; the receive side keys escrow by the packet's own lane)
    other_lane = py_packet(B, src=A, lane="lane-7", receiver=lower_hex(w.bob.address), timeout_ms=t,
                           payload=encode_energy(EnergyPayload(f"lane-7/{B}/kWh", 100)))
    assert deliver(w, w.b, other_lane) == error_ack("escrow.insufficient")
    assert escrowed(w.b, A, "kWh") == 900
    assert balance(w.b.token, w.b.bridge.address) == 900


def test_reputation_is_recorded_and_stale_imports_refused(world: World) -> None:
    w = world
    t = timeout(w)
    model, subject = "dpos-witness-credit/v1", "witness-7"

    def rep(seq: int, score: int, height: int) -> bytes:
        return py_packet(B, sequence=seq, kind=PacketKind.REPUTATION, receiver=lower_hex(w.carol.address), timeout_ms=t,
                         payload=encode_reputation(ReputationPayload(subject, score, model, height)))

    imported = w.b.reputation.functions.importedReputation
    assert deliver(w, w.b, rep(1, 8100, 50)) == SUCCESS_ACK
    score, height, _, exists = imported(DPOS, subject, model).call()
    assert (score, height, exists) == (8100, 50, True)
    assert deliver(w, w.b, rep(2, 5000, 49)) == error_ack("reputation.stale")
    assert imported(DPOS, subject, model).call()[:2] == [8100, 50]
    # the issue 12 rules: an attestation at or below the held source height never replaces it
    assert deliver(w, w.b, rep(3, 9000, 50)) == error_ack("reputation.stale")
    assert imported(DPOS, subject, model).call()[:2] == [8100, 50]
    assert deliver(w, w.b, rep(4, 7000, 51)) == SUCCESS_ACK
    assert imported(DPOS, subject, model).call()[:2] == [7000, 51]
    assert not imported(DPOS, subject, "other-model").call()[3]


def _words(packet: bytes) -> list[bytes]:
    return [packet[i:i + 32] for i in range(0, len(packet), 32)]


def _set_word(packet: bytes, index: int, value: int) -> bytes:
    return packet[:32 * index] + value.to_bytes(32, "big") + packet[32 * (index + 1):]


def test_packets_must_be_canonical(world: World) -> None:
    w = world
    t = timeout(w)
    good = py_packet(B, receiver=lower_hex(w.bob.address), timeout_ms=t)
    cert = w.relay.verify(good)
    assert recv_error(w, w.b, good, cert) is None
    words = _words(good)
    src_offset = int.from_bytes(words[0], "big")
    bad: dict[str, bytes] = {
        "trailing byte": good + b"\x00",
        "trailing word": good + bytes(32),
        "truncated": good[:-32],
        "short": good[:200],
        "empty": b"",
        "kind 0": _set_word(good, 4, 0),
        "kind 4": _set_word(good, 4, 4),
        "kind with high bits": _set_word(good, 4, 1 + (1 << 8)),
        "sequence 0": _set_word(good, 3, 0),
        "sequence above uint64": _set_word(good, 3, 1 << 64),
        "timeout 0": _set_word(good, 8, 0),
        "timeout above uint64": _set_word(good, 8, (1 << 64) + t),
        "dirty padding": good[:src_offset + 32 + 9] + b"\x01" + good[src_offset + 32 + 10:],  # "dpos-park" is 9 bytes
        "offset not canonical": _set_word(good, 0, src_offset + 32),
        "length past the end": _set_word(good, 0, len(good) - 32)[:len(good)],
    }
    bad["src equals dst"] = encode_packet_unchecked(B, B, LANE, 1, 1, b"", "s", "r", t)
    bad["long payload"] = encode_packet_unchecked(DPOS, B, LANE, 1, 1, bytes(4097), "s", "r", t)
    bad["empty sender"] = encode_packet_unchecked(DPOS, B, LANE, 1, 1, b"", "", lower_hex(w.bob.address), t)
    bad["empty src"] = encode_packet_unchecked("", B, LANE, 1, 1, b"", "s", "r", t)
    bad["long lane"] = encode_packet_unchecked(DPOS, B, "l" * 65, 1, 1, b"", "s", "r", t)
    bad["long receiver"] = encode_packet_unchecked(DPOS, B, LANE, 1, 1, b"", "s", "r" * 257, t)
    for name, packet in bad.items():
        assert name_of(recv_error(w, w.b, packet, cert)) == "CodecInvalid", name
    # the good packet still executes
    recv_packet(w.evm, w.b, w.relayer, good, cert, w.relay.vset)


def encode_packet_unchecked(src: str, dst: str, lane: str, sequence: int, kind: int, payload: bytes, sender: str,
                            receiver: str, timeout_ms: int) -> bytes:
    """abi.encode of a packet tuple without the protocol's value rules (to build invalid packets)."""
    return abi_encode(["string", "string", "string", "uint64", "uint8", "bytes", "string", "string", "uint64"],
                      [src, dst, lane, sequence, kind, payload, sender, receiver, timeout_ms])


def test_receiver_account_form(world: World) -> None:
    bridge = world.b.bridge
    addr = lower_hex(world.bob.address)
    pattern = re.compile(r"0x[0-9a-f]{40}")
    samples = [addr, addr.upper(), "0X" + addr[2:], addr[:-1], addr + "a", "0x" + "f" * 40, "0x" + "0" * 40,
               "0x" + "0" * 39 + "1", "1x" + addr[2:], "0x" + "g" * 40]
    alphabet = "0123456789abcdefABCDEF/:@`gG\x00\x7f\x80"
    for i in range(40):  # one bad character at each position, from the bytes around the valid ranges
        ch = alphabet[(i * 7) % len(alphabet)]
        samples.append(addr[:2 + i] + ch + addr[3 + i:])
    for s in samples:
        ok, parsed = bridge.functions.parseAccount(s).call()
        expected = bool(pattern.fullmatch(s)) and int(s[2:], 16) != 0
        assert ok == expected, s
        if ok:
            assert parsed.lower() == s


# --- phase 4: SETTLE and round trips -----------------------------------------------------------------


def test_round_trip_home_and_back_conserves_supply(world: World) -> None:
    w = world
    ev, relay = w.evm, w.relay
    packet = send_a_to_b(w, 1500)
    ack = deliver(w, w.b, packet)
    assert ack == SUCCESS_ACK
    cert = relay.confirm_ack(packet, ack)
    settled = settle(ev, w.a, w.relayer, packet, ack, cert, relay.vset)
    assert {k: settled[k] for k in ("dstChain", "laneId", "sequence", "outcome", "refunded")} == {
        "dstChain": B, "laneId": LANE, "sequence": 1, "outcome": 1, "refunded": False}
    assert ev.storage(w.a.bridge.address, commitment_slot(B, LANE, 1)) == bytes(32)  # deleted (§6.6)
    assert escrowed(w.a, B, "kWh") == supply(w, w.b, VOUCHER_A_ON_B) == 1500  # I2 at rest
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 1500
    # settling twice
    assert ev.error_name(settle_call(w, w.a, packet, ack, cert), w.relayer) == "PacketReplay"
    assert ev.revert_of(settle_call(w, w.a, packet, ack, relay.confirm_ack(packet, ack)), w.relayer) == (
        "PacketReplay", 0, 1)

    # bob sends 600 of the voucher home: B burns, A unescrows
    voucher = token_of(ev, w.b, VOUCHER_A_ON_B)
    back, _ = send_energy(ev, w.b, w.bob, A, LANE, VOUCHER_A_ON_B, 600, lower_hex(w.alice.address), timeout(w))
    assert supply(w, w.b, VOUCHER_A_ON_B) == 900 and balance(voucher, w.bob.address) == 900
    assert escrowed(w.b, A, VOUCHER_A_ON_B) == 0  # burned, not escrowed
    ack2 = deliver(w, w.a, back)
    assert ack2 == SUCCESS_ACK
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 900
    assert escrowed(w.a, B, "kWh") == 900
    assert voucher_of(ev, w.a, f"{LANE}/{B}/{VOUCHER_A_ON_B}") is None  # unescrowed, not minted
    settled2 = settle(ev, w.b, w.relayer, back, ack2, relay.confirm_ack(back, ack2), relay.vset)
    assert (settled2["outcome"], settled2["refunded"]) == (1, False)
    assert supply(w, w.b, VOUCHER_A_ON_B) == escrowed(w.a, B, "kWh") == balance(w.a.token, w.a.bridge.address) == 900


def test_error_ack_refunds_the_escrow(world: World) -> None:
    w = world
    packet = send_a_to_b(w, 2000, receiver="not-an-address")
    ack = deliver(w, w.b, packet)
    assert ack == error_ack("receiver.invalid")
    assert voucher_of(w.evm, w.b, VOUCHER_A_ON_B) is None
    cert = w.relay.confirm_ack(packet, ack)
    # the ack must be the one the relay certified, and canonical
    assert w.evm.error_name(settle_call(w, w.a, packet, SUCCESS_ACK, cert), w.relayer) == "ProofInvalid"
    assert w.evm.error_name(settle_call(w, w.a, packet, b"", cert), w.relayer) == "ProofInvalid"  # not TIMED_OUT
    assert w.evm.error_name(settle_call(w, w.a, packet, ack + bytes(32), cert), w.relayer) == "CodecInvalid"
    assert w.evm.error_name(settle_call(w, w.a, packet, _set_word(ack, 0, 3), cert), w.relayer) == "CodecInvalid"
    settled = settle(w.evm, w.a, w.relayer, packet, ack, cert, w.relay.vset)
    assert (settled["outcome"], settled["refunded"]) == (1, True)
    assert balance(w.a.token, w.alice.address) == ALICE_WH
    assert escrowed(w.a, B, "kWh") == 0 == balance(w.a.token, w.a.bridge.address)
    assert w.evm.error_name(settle_call(w, w.a, packet, ack, cert), w.relayer) == "PacketReplay"


def test_timeout_refund(world: World) -> None:
    w = world
    now_s = w.evm.latest_timestamp()
    packet = send_a_to_b(w, 3000, timeout_ms=(now_s + 60) * 1000)
    assert escrowed(w.a, B, "kWh") == 3000
    w.evm.mine_at(now_s + 61)
    # A's own clock passing the timeout refunds nothing (I3): only a certified outcome does
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 3000
    forged = w.relay.confirm_timeout(packet, [0, 1], check=False)
    assert w.evm.revert_of(settle_call(w, w.a, packet, b"", forged), w.relayer) == ("QuorumNotReached", 2, 4)
    cert = w.relay.confirm_timeout(packet)
    # a TIMED_OUT record does not settle as ACKED
    assert w.evm.error_name(settle_call(w, w.a, packet, error_ack("x"), cert), w.relayer) == "ProofInvalid"
    settled = settle(w.evm, w.a, w.relayer, packet, b"", cert, w.relay.vset)
    assert (settled["outcome"], settled["refunded"]) == (2, True)
    assert balance(w.a.token, w.alice.address) == ALICE_WH
    assert escrowed(w.a, B, "kWh") == 0
    assert w.evm.error_name(settle_call(w, w.a, packet, b"", cert), w.relayer) == "PacketReplay"


def test_returning_voucher_refund_re_mints(world: World) -> None:
    w = world
    packet = send_a_to_b(w, 1200)
    ack = deliver(w, w.b, packet)
    settle(w.evm, w.a, w.relayer, packet, ack, w.relay.confirm_ack(packet, ack), w.relay.vset)
    now_s = w.evm.latest_timestamp()
    back, _ = send_energy(w.evm, w.b, w.bob, A, LANE, VOUCHER_A_ON_B, 500, lower_hex(w.alice.address),
                          (now_s + 30) * 1000)
    assert supply(w, w.b, VOUCHER_A_ON_B) == 700
    w.evm.mine_at(now_s + 31)
    assert w.evm.error_name(recv_call(w, w.a, back, w.relay.verify(back)), w.relayer) == "PacketTimeout"
    settled = settle(w.evm, w.b, w.relayer, back, b"", w.relay.confirm_timeout(back), w.relay.vset)
    assert (settled["outcome"], settled["refunded"]) == (2, True)
    assert balance(token_of(w.evm, w.b, VOUCHER_A_ON_B), w.bob.address) == 1200
    assert supply(w, w.b, VOUCHER_A_ON_B) == escrowed(w.a, B, "kWh") == 1200


def test_settle_refusals(world: World) -> None:
    w = world
    packet = send_a_to_b(w, 100)
    ack = deliver(w, w.b, packet)
    cert = w.relay.confirm_ack(packet, ack)

    def err(pkt: bytes, a: bytes, c: RelayCertificate) -> Any:
        return w.evm.revert_of(settle_call(w, w.a, pkt, a, c), w.relayer)

    never_sent = _set_word(packet, 3, 9)
    assert name_of(err(never_sent, ack, cert)) == "PacketReplay"
    other = encode_packet(replace(decode_packet(packet), payload=encode_energy(EnergyPayload("kWh", 101))))
    assert name_of(err(other, ack, cert)) == "ProofInvalid"  # not the packet committed at that sequence
    assert name_of(err(packet, ack, w.relay.verify(packet))) == "ProofInvalid"  # a verified, not an outcome, record
    other_keys, other_set = make_validators(4)
    assert err(packet, ack, replace(cert, commit=w.relay.commit(keys=other_keys))) == ("SignatureInvalid", 0)
    wrong_set = w.a.bridge.functions.settle(packet, ack, certificate_abi(cert), validator_set_abi(other_set),
                                            ("", "", ""))
    assert w.evm.error_name(wrong_set, w.relayer) == "ValidatorSetMismatch"
    assert err(packet, ack, cert) is None


# --- relay validator set updates (protocol §7.5) -----------------------------------------------------


def test_validator_set_update_and_replay(world: World) -> None:
    w = world
    relay, bridge = w.relay, w.b.bridge
    old_keys, old_set = relay.keys, relay.vset
    commit, new_keys, new_set = relay.rotate(4)

    def update(vs: Any, c: RelayCommit, trusted: Any) -> Any:
        return bridge.functions.updateRelayValidators(validator_set_abi(vs), commit_abi(c), validator_set_abi(trusted))

    # unauthorised: the new set certifying itself; strangers signing for the trusted set; too few signers
    self_signed = relay.commit(keys=new_keys, vset=new_set, next_set=new_set)
    assert w.evm.error_name(update(new_set, self_signed, old_set), w.relayer) == "ValidatorSetMismatch"
    impostor = relay.commit(keys=new_keys, next_set=new_set)
    assert w.evm.revert_of(update(new_set, impostor, old_set), w.relayer) == ("SignatureInvalid", 0)
    weak = relay.commit([0, 1], next_set=new_set)
    assert w.evm.revert_of(update(new_set, weak, old_set), w.relayer) == ("QuorumNotReached", 2, 4)
    _, third_set = make_validators(3)
    assert w.evm.error_name(update(third_set, commit, old_set), w.relayer) == "ValidatorSetMismatch"
    assert w.evm.error_name(update(new_set, commit, new_set), w.relayer) == "ValidatorSetMismatch"
    assert bytes(bridge.functions.relaySetHash().call()) == old_set.hash

    receipt = w.evm.transact(update(new_set, commit, old_set), w.relayer)
    (event,) = w.evm.events(bridge, "RelayValidatorsUpdated", receipt)
    assert (bytes(event["setHash"]), event["height"]) == (new_set.hash, commit.header.height)
    assert bytes(bridge.functions.relaySetHash().call()) == new_set.hash
    assert bridge.functions.relaySetHeight().call() == commit.header.height
    relay.install(new_keys, new_set)

    # replays: the same update, and an older one
    assert w.evm.error_name(update(new_set, commit, new_set), w.relayer) == "PacketReplay"
    assert w.evm.error_name(update(new_set, commit, old_set), w.relayer) == "PacketReplay"

    # certificates of the old set no longer count; the new set's do
    packet = send_a_to_b(w)
    old_commit = relay.commit(keys=old_keys, vset=old_set)
    new_cert = relay.verify(packet)
    assert recv_error(w, w.b, packet, replace(new_cert, commit=old_commit), vset=old_set) == (
        "ValidatorSetMismatch", new_set.hash, old_set.hash)
    assert name_of(recv_error(w, w.b, packet, replace(new_cert, commit=old_commit))) == "ValidatorSetMismatch"
    assert deliver(w, w.b, packet) == SUCCESS_ACK

    # rotating back to the old set works at a higher height, and the first update still cannot replay
    back_commit = relay.commit(next_set=old_set)
    w.evm.transact(update(old_set, back_commit, new_set), w.relayer)
    assert bytes(bridge.functions.relaySetHash().call()) == old_set.hash
    assert w.evm.error_name(update(new_set, commit, old_set), w.relayer) == "PacketReplay"


def test_malformed_validator_sets_are_refused(world: World) -> None:
    w = world
    relay, bridge = w.relay, w.b.bridge
    commit, _, new_set = relay.rotate(4)
    keys, addrs, powers = validator_set_abi(new_set)
    trusted = validator_set_abi(relay.vset)
    apps = (w.b.energy_app.address, w.b.rights.address, w.b.reputation.address)
    for name, vs in {
        "empty": ([], [], []),
        "lengths differ": (keys, addrs[:3], powers),
        "zero power": (keys, addrs, [1, 0, 1, 1]),
    }.items():
        call = bridge.functions.updateRelayValidators(vs, commit_abi(commit), trusted)
        assert w.evm.error_name(call, w.relayer) == "CodecInvalid", name
    call = bridge.functions.updateRelayValidators(([keys[0], keys[1], keys[0], keys[3]], addrs, powers),
                                                  commit_abi(commit), trusted)
    assert w.evm.error_name(call, w.relayer) == "DuplicateValidatorKey"  # tests/ethereum/test_relay_trust.py
    for relay_set in [([], [], []), (keys, addrs, [1, 0, 1, 1])]:
        with pytest.raises(TxFailed, match="CodecInvalid"):
            w.evm.deploy("ParkBridge", w.relayer, "eth-x", "relay", relay_set, w.b.token.address,
                         *apps, 86_400_000, 600_000)
    with pytest.raises(TxFailed, match="CodecInvalid"):
        w.evm.deploy("ParkBridge", w.relayer, "Bad Id", "relay", trusted, w.b.token.address, *apps, 86_400_000,
                     600_000)


# --- tokens ------------------------------------------------------------------------------------------


def test_tokens(world: World) -> None:
    w = world
    token = w.a.token
    assert (token.functions.symbol().call(), token.functions.decimals().call()) == ("kWh", 3)
    assert token.functions.owner().call() == w.a.operator.address
    assert w.evm.error_name(token.functions.mint(w.alice.address, 1), w.alice) == "Unauthorized"
    assert w.evm.error_name(token.functions.mint(w.alice.address, 2**96), w.a.operator) == "CodecInvalid"
    assert w.evm.error_name(token.functions.transfer(w.bob.address, ALICE_WH + 1), w.alice) == "InsufficientFunds"
    assert w.evm.revert_of(token.functions.transferFrom(w.alice.address, w.bob.address, 1), w.bob) == (
        "AllowanceTooLow", 0, 1)
    assert w.evm.error_name(token.functions.transfer("0x" + "00" * 20, 1), w.alice) == "CodecInvalid"
    # the voucher implementation cannot be initialized, a clone only once, and only its bridge mints
    impl = w.a.voucher_impl
    assert w.evm.error_name(impl.functions.initialize("x", w.alice.address), w.alice) == "Unauthorized"
    packet = send_a_to_b(w, 10)
    deliver(w, w.b, packet)
    voucher = token_of(w.evm, w.b, VOUCHER_A_ON_B)
    assert w.evm.error_name(voucher.functions.initialize("x", w.alice.address), w.alice) == "Unauthorized"
    assert w.evm.error_name(voucher.functions.mint(w.bob.address, 1), w.bob) == "Unauthorized"
    assert w.evm.error_name(voucher.functions.burn(w.bob.address, 1), w.bob) == "Unauthorized"
    # vouchers are ordinary ERC-20s for their holders
    w.evm.transact(voucher.functions.transfer(w.alice.address, 4), w.bob)
    assert balance(voucher, w.alice.address) == 4 and int(voucher.functions.totalSupply().call()) == 10


# --- gas ---------------------------------------------------------------------------------------------


def test_recv_gas_within_target(world: World) -> None:
    """Steady-state recvPacket (voucher exists, receiver holds some): ≤ 150,000 gas with 4 validators, 3
    signatures and a relay state of 10,000 records (bench/gas.py reports the figures)."""
    w = world
    w.relay.tree = RelaySim.create(filler_records=10_000).tree
    deliver(w, w.b, send_a_to_b(w, 10))  # creates the voucher and bob's balance
    packet = send_a_to_b(w, 10)
    cert = w.relay.verify(packet)
    assert len(cert.commit.signatures) == 3 and len(w.relay.vset.validators) == 4
    _, receipt = recv_packet(w.evm, w.b, w.relayer, packet, cert, w.relay.vset)
    assert receipt["gasUsed"] <= 150_000, (receipt["gasUsed"], len(cert.proof.siblings))
