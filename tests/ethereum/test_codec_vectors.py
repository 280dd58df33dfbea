"""The conformance vectors (protocol/vectors/, their README) replayed against the Solidity codec on a real anvil.

Through ``PacketCodecView``, which runs the very library code of the bridge (``PacketCodec``, and
``RelayVerifier.verifyMembership``): packets, payloads, acks, outcome records, the relay paths the bridge derives,
lane-config value hashes and state-commitment membership proofs. Valid cases must reproduce the bytes (or the
commitment); invalid ones must be refused with the recorded error. A case given as a *value* the Python encoder
refuses is replayed as its raw ABI bytes when the value fits the ABI at all (a negative or over-wide integer
does not: the EVM never sees it); those left out are counted and pinned.

Not replayed, and why: ``certificates.json`` (its commits carry ed25519 signatures; the EVM checks the
secp256k1 ones, tested in ``test_contracts.py`` against the Python verifier), outcome and lane-config *decoding*
cases (the bridge only ever encodes those two records and hashes them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from web3.contract import Contract

from tests.ethereum.conftest import World
from tests.ethereum.harness import Evm

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
PACKET_RAW = ["bytes", "bytes", "bytes", "uint256", "uint256", "bytes", "bytes", "bytes", "uint256"]
PAYLOAD_RAW = {1: ["bytes", "uint256"], 2: ["bytes", "bytes", "bytes", "bytes", "uint256", "uint256", "uint256"],
               3: ["bytes", "uint256", "bytes", "uint256"]}
ACK_RAW = ["uint256", "bytes", "bytes"]
LENIENT_ACCEPTS = {"encoding_string_invalid_utf8", "encoding_raw_uppercase_lane", "encoding_raw_lane_trailing_newline"}
"""Packets the bridge's phase-3/4 check accepts and the strict one refuses: the charset of ids and the UTF-8 of
accounts, which the relay's strict decoder checked before certifying (chains/ethereum/SPEC.md §E2.4)."""


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def codec(base_world: World) -> Iterator[Contract]:
    yield base_world.evm.deploy("PacketCodecView", base_world.relayer)


def call(evm: Evm, fn: Any) -> tuple[str, Any]:
    """``("ok", result)`` or ``(error name, data)`` of a view call."""
    try:
        return "ok", fn.call()
    except Exception:  # the view reverted: name its custom error
        r = evm.revert_of_data(fn.address, fn._encode_transaction_data(), _nobody(evm))
        assert r is not None
        return str(r[0]), r[1:]


_SENDER: list[Any] = []


def _nobody(evm: Evm) -> Any:
    if not _SENDER:
        _SENDER.append(evm.account(0))
    return _SENDER[0]


ERRORS = {"codec.invalid": "CodecInvalid", "proof.invalid": "ProofInvalid"}


def _raw(types: list[str], values: list[Any]) -> bytes | None:
    """The ABI bytes of a value the encoder refuses, or None if the ABI cannot carry it (negative, too wide)."""
    for v in values:
        if isinstance(v, int) and not 0 <= v < 2**256:
            return None
    return abi_encode(types, values)


def _packet_values(p: dict[str, Any]) -> list[Any]:
    return [p["src_chain"].encode(), p["dst_chain"].encode(), p["lane"].encode(), int(p["sequence"]),
            int(p["kind"]), bytes.fromhex(p["payload_hex"]), p["sender"].encode(), p["receiver"].encode(),
            int(p["timeout_timestamp_ms"])]


def test_packets(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    data = load("codec_packets")
    for case in data["valid"]:
        raw = bytes.fromhex(case["encoding_hex"])
        assert abi_encode(PACKET_RAW, _packet_values(case["packet"])) == raw, case["name"]
        for strict in (True, False):
            assert call(evm, codec.functions.packetCommitment(raw, strict)) == (
                "ok", bytes.fromhex(case["commitment_hex"])), case["name"]
    lenient_accepted, unrepresentable = set(), []
    for case in data["invalid"]:
        raw = bytes.fromhex(case["encoding_hex"]) if "encoding_hex" in case else _raw(
            PACKET_RAW, _packet_values(case["packet"]))
        if raw is None:
            unrepresentable.append(case["name"])
            continue
        assert call(evm, codec.functions.packetCommitment(raw, True))[0] == ERRORS[case["error"]], case["name"]
        if call(evm, codec.functions.packetCommitment(raw, False))[0] == "ok":
            lenient_accepted.add(case["name"])
    assert sorted(unrepresentable) == ["sequence_negative"]
    # value cases the lenient check lets through are the charset/UTF-8 ones too
    assert lenient_accepted - LENIENT_ACCEPTS <= {"src_uppercase", "dst_trailing_newline", "lane_with_slash",
                                                  "lane_leading_dash"}, lenient_accepted
    assert LENIENT_ACCEPTS <= lenient_accepted


def _payload_values(kind: int, p: dict[str, Any]) -> list[Any]:
    if kind == 1:
        return [p["denom"].encode(), int(p["amount_wh"])]
    if kind == 2:
        return [p["right_id"].encode(), p["home_park"].encode(), p["station"].encode(), p["transformer"].encode(),
                int(p["power_kw"]), int(p["slot_start_ms"]), int(p["slot_end_ms"])]
    return [p["subject"].encode(), int(p["score"]), p["model"].encode(), int(p["source_height"])]


def test_payloads(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    data = load("payloads")
    kinds = set()
    for case in data["valid"]:
        kind = int(case["kind"])
        kinds.add(kind)
        raw = bytes.fromhex(case["encoding_hex"])
        assert abi_encode(PAYLOAD_RAW[kind], _payload_values(kind, case["payload"])) == raw, case["name"]
        assert call(evm, codec.functions.payloadValid(kind, raw)) == ("ok", True), case["name"]
    assert kinds == {1, 2, 3}
    unrepresentable = []
    for case in data["invalid"]:
        kind = int(case["kind"])
        raw = bytes.fromhex(case["encoding_hex"]) if "encoding_hex" in case else _raw(
            PAYLOAD_RAW[kind], _payload_values(kind, case["payload"]))
        if raw is None:
            unrepresentable.append(case["name"])
            continue
        assert case["error"] == "codec.invalid"
        assert call(evm, codec.functions.payloadValid(kind, raw)) == ("ok", False), case["name"]
    assert sorted(unrepresentable) == ["energy_amount_over_uint256", "reputation_height_negative"]


def test_acks(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    data = load("acks")
    for case in data["valid"]:
        raw = bytes.fromhex(case["encoding_hex"])
        a = case["ack"]
        assert abi_encode(ACK_RAW, [int(a["status"]), a["code"].encode(), bytes.fromhex(a["result_hex"])]) == raw
        assert call(evm, codec.functions.ackCommitment(raw)) == (
            "ok", [a["status"] == "1", bytes.fromhex(case["commitment_hex"])]), case["name"]
    for case in data["invalid"]:
        if "encoding_hex" in case:
            raw = bytes.fromhex(case["encoding_hex"])
        else:
            a = case["ack"]
            raw = abi_encode(ACK_RAW, [int(a["status"]), a["code"].encode(), bytes.fromhex(a["result_hex"])])
        assert call(evm, codec.functions.ackCommitment(raw))[0] == ERRORS[case["error"]], case["name"]


def test_outcome_records(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    data = load("outcomes")
    for case in data["valid"]:
        fn = codec.functions.outcomeRecord(int(case["outcome"]), bytes.fromhex(case["packet_commitment_hex"]),
                                           bytes.fromhex(case["ack_commitment_hex"]))
        assert call(evm, fn) == ("ok", bytes.fromhex(case["encoding_hex"])), case["name"]
    replayed = 0
    for case in data["invalid"]:
        if "outcome" not in case:
            continue  # a decoding case: the bridge never decodes an outcome record
        pc, ac = bytes.fromhex(case["packet_commitment_hex"]), bytes.fromhex(case["ack_commitment_hex"])
        outcome = int(case["outcome"])
        if len(pc) != 32 or len(ac) != 32 or not 0 <= outcome < 256:
            continue  # not a bytes32 / uint8: the ABI cannot carry it
        assert call(evm, codec.functions.outcomeRecord(outcome, pc, ac))[0] == "CodecInvalid", case["name"]
        replayed += 1
    assert replayed == 2  # timed_out_with_ack, acked_zero_ack (the others are 31- or 33-byte commitments)


def test_relay_paths_the_bridge_derives(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    replayed = 0
    for case in load("paths")["valid"]:
        if case["function"] not in ("verified_path", "outcome_path"):
            continue  # the bridge derives only these two relay paths (and lane_config's, below)
        a = case["args"]
        packet = abi_encode(PACKET_RAW, [a["src"].encode(), a["dst"].encode(), a["lane"].encode(), int(a["sequence"]),
                                         1, b"", b"s", b"r", 1])
        verified, outcome = call(evm, codec.functions.relayPaths(packet))[1]
        got = verified if case["function"] == "verified_path" else outcome
        assert got == bytes.fromhex(case["path_hex"]), case["path"]
        replayed += 1
    assert replayed >= 2


def test_lane_config_value_hashes(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    for case in load("lane_configs")["valid"]:
        caps = {a: int(c) for a, c in case["capacities"].items()}
        assets = sorted(caps, key=lambda a: a.encode())
        fn = codec.functions.laneConfigValueHash(assets, [caps[a] for a in assets])
        assert call(evm, fn) == ("ok", bytes.fromhex(case["value_hash_hex"])), case["name"]


def test_state_commitment_membership_proofs(base_world: World, codec: Contract) -> None:
    evm = base_world.evm
    data = load("state_commitment")
    memberships = 0
    for case in data["cases"]:
        root = bytes.fromhex(case["root_hex"])
        for p in case["proofs"]:
            key, proof = bytes.fromhex(p["key_hex"]), bytes.fromhex(p["proof_hex"])
            if p["type"] == "membership":
                fn = codec.functions.verifyMembership(root, key, bytes.fromhex(p["value_hex"]), proof)
                assert call(evm, fn) == ("ok", True), (p["key_hex"], p["depth"])
                memberships += 1
            else:  # the bridge has no absence check: a proof ending in an empty leaf proves nothing to it
                fn = codec.functions.verifyMembership(root, key, b"x", proof)
                assert call(evm, fn)[0] == "ProofInvalid"
    assert memberships >= 8
    for case in data["invalid"]:
        proof = bytes.fromhex(case["proof_hex"])
        if case["type"] == "decode":
            fn = codec.functions.verifyMembership(bytes(32), b"k", b"v", proof)
        else:
            value = bytes.fromhex(case["value_hex"]) if case.get("value_hex") else b"x"
            fn = codec.functions.verifyMembership(bytes.fromhex(case["root_hex"]), bytes.fromhex(case["key_hex"]),
                                                  value, proof)
        assert call(evm, fn)[0] == ERRORS[case["error"]], case["name"]
