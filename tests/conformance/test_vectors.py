"""Replay every conformance vector in ``protocol/vectors/`` against the Python implementation.

The JSON is parsed here, independently of the generator's serialisers, so a field swapped on one side
does not cancel out on the other. Valid cases must round-trip byte for byte; invalid cases must raise a
:class:`~protocol.errors.ParkRelayError` with exactly the recorded ``code``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import protocol
from protocol import codec, lane_config, paths
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
    commit_sign_bytes,
    verify_certificate,
    verify_commit,
    verify_validator_set_update,
)
from protocol.crypto import Ed25519Signer
from protocol.errors import ParkRelayError
from protocol.lifecycle import PacketEvent, PacketState, transition
from protocol.state_commitment import EMPTY_ROOT, Proof, SparseMerkleTree, verify_membership, verify_non_membership
from protocol.types import (
    Acknowledgement,
    AckStatus,
    ChainId,
    ChargingRightPayload,
    EnergyPayload,
    LaneId,
    Packet,
    PacketKind,
    PacketOutcome,
    ReputationPayload,
)
from tests.conformance.generate_vectors import FILES, generate

VECTORS = Path(protocol.__file__).resolve().parent / "vectors"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert doc["format_version"] == 1
    return doc


def ids(case: dict[str, Any]) -> str:
    return str(case["name"])


def hb(s: str | None) -> bytes | None:
    return None if s is None else bytes.fromhex(s)


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def expect_code(code: str, fn: Callable[..., object], *args: Any) -> None:
    with pytest.raises(ParkRelayError) as info:
        fn(*args)
    assert info.value.code == code, f"expected {code}, got {info.value}"


# --- the files themselves ----------------------------------------------------------------------------


def test_vector_files_are_exactly_the_generated_set() -> None:
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(FILES)


def test_regenerating_reproduces_the_committed_files(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in FILES:
        fresh = (tmp_path / name).read_bytes()
        committed = (VECTORS / name).read_bytes()
        assert fresh == committed, f"{name} is stale: run python -m tests.conformance.generate_vectors"


def test_generation_is_idempotent(tmp_path: Path) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# --- packets -------------------------------------------------------------------------------------------

PACKETS = load("codec_packets.json")


def parse_packet(d: dict[str, str]) -> Packet:
    return Packet(ChainId(d["src_chain"]), ChainId(d["dst_chain"]), LaneId(d["lane"]), int(d["sequence"]),
                  PacketKind(int(d["kind"])), h(d["payload_hex"]), d["sender"], d["receiver"],
                  int(d["timeout_timestamp_ms"]))


@pytest.mark.parametrize("case", PACKETS["valid"], ids=ids)
def test_packet_valid(case: dict[str, Any]) -> None:
    p = parse_packet(case["packet"])
    enc = h(case["encoding_hex"])
    assert codec.encode_packet(p) == enc
    assert codec.decode_packet(enc) == p
    assert codec.packet_commitment(p) == h(case["commitment_hex"])


@pytest.mark.parametrize("case", PACKETS["invalid"], ids=ids)
def test_packet_invalid(case: dict[str, Any]) -> None:
    if "packet" in case:
        p = parse_packet(case["packet"])
        expect_code(case["error"], lambda: codec.encode_packet(p))
    else:
        expect_code(case["error"], lambda: codec.decode_packet(h(case["encoding_hex"])))


# --- payloads --------------------------------------------------------------------------------------------

PAYLOADS = load("payloads.json")


def parse_payload(kind: PacketKind, d: dict[str, str]) -> Any:
    if kind is PacketKind.ENERGY:
        return EnergyPayload(d["denom"], int(d["amount_wh"]))
    if kind is PacketKind.CHARGING_RIGHT:
        return ChargingRightPayload(d["right_id"], ChainId(d["home_park"]), d["station"], d["transformer"],
                                    int(d["power_kw"]), int(d["slot_start_ms"]), int(d["slot_end_ms"]))
    return ReputationPayload(d["subject"], int(d["score"]), d["model"], int(d["source_height"]))


ENCODE: dict[PacketKind, Callable[[Any], bytes]] = {
    PacketKind.ENERGY: codec.encode_energy,
    PacketKind.CHARGING_RIGHT: codec.encode_charging_right,
    PacketKind.REPUTATION: codec.encode_reputation,
}


@pytest.mark.parametrize("case", PAYLOADS["valid"], ids=ids)
def test_payload_valid(case: dict[str, Any]) -> None:
    kind = PacketKind(int(case["kind"]))
    value = parse_payload(kind, case["payload"])
    enc = h(case["encoding_hex"])
    assert ENCODE[kind](value) == enc
    assert codec.decode_payload(kind, enc) == value


@pytest.mark.parametrize("case", PAYLOADS["invalid"], ids=ids)
def test_payload_invalid(case: dict[str, Any]) -> None:
    kind = PacketKind(int(case["kind"]))
    if "payload" in case:
        value = parse_payload(kind, case["payload"])
        expect_code(case["error"], lambda: ENCODE[kind](value))
    else:
        expect_code(case["error"], lambda: codec.decode_payload(kind, h(case["encoding_hex"])))


# --- acks and outcomes -------------------------------------------------------------------------------------

ACKS = load("acks.json")
OUTCOMES = load("outcomes.json")


def parse_ack(d: dict[str, str]) -> Acknowledgement:
    return Acknowledgement(AckStatus(int(d["status"])), d["code"], h(d["result_hex"]))


@pytest.mark.parametrize("case", ACKS["valid"], ids=ids)
def test_ack_valid(case: dict[str, Any]) -> None:
    a = parse_ack(case["ack"])
    enc = h(case["encoding_hex"])
    assert codec.encode_ack(a) == enc
    assert codec.decode_ack(enc) == a
    assert codec.ack_commitment(a) == h(case["commitment_hex"])


@pytest.mark.parametrize("case", ACKS["invalid"], ids=ids)
def test_ack_invalid(case: dict[str, Any]) -> None:
    if "ack" in case:
        a = parse_ack(case["ack"])
        expect_code(case["error"], lambda: codec.encode_ack(a))
    else:
        expect_code(case["error"], lambda: codec.decode_ack(h(case["encoding_hex"])))


@pytest.mark.parametrize("case", OUTCOMES["valid"], ids=ids)
def test_outcome_valid(case: dict[str, Any]) -> None:
    triple = (PacketOutcome(int(case["outcome"])), h(case["packet_commitment_hex"]), h(case["ack_commitment_hex"]))
    enc = h(case["encoding_hex"])
    assert codec.encode_outcome(*triple) == enc
    assert codec.decode_outcome(enc) == triple


@pytest.mark.parametrize("case", OUTCOMES["invalid"], ids=ids)
def test_outcome_invalid(case: dict[str, Any]) -> None:
    if "outcome" in case:
        triple = (PacketOutcome(int(case["outcome"])), h(case["packet_commitment_hex"]),
                  h(case["ack_commitment_hex"]))
        expect_code(case["error"], lambda: codec.encode_outcome(*triple))
    else:
        expect_code(case["error"], lambda: codec.decode_outcome(h(case["encoding_hex"])))


# --- paths ---------------------------------------------------------------------------------------------------

PATHS = load("paths.json")
PATH_FUNCTIONS: dict[str, Callable[..., bytes]] = {
    "commitment_path": paths.commitment_path, "receipt_path": paths.receipt_path,
    "next_send_path": paths.next_send_path, "verified_path": paths.verified_path,
    "outcome_path": paths.outcome_path, "balance_path": paths.balance_path, "escrow_path": paths.escrow_path,
    "lane_config_path": paths.lane_config_path,
}


def path_args(args: dict[str, str]) -> dict[str, Any]:
    return {k: int(v) if k == "sequence" else v for k, v in args.items()}


@pytest.mark.parametrize("case", PATHS["valid"], ids=lambda c: f"{c['function']}:{c['path']}")
def test_path_valid(case: dict[str, Any]) -> None:
    key = PATH_FUNCTIONS[case["function"]](**path_args(case["args"]))
    assert key == h(case["path_hex"]) == case["path"].encode()


@pytest.mark.parametrize("case", PATHS["invalid"], ids=lambda c: f"{c['function']}:{c['args']}")
def test_path_invalid(case: dict[str, Any]) -> None:
    expect_code(case["error"], lambda: PATH_FUNCTIONS[case["function"]](**path_args(case["args"])))


# --- lane-config records (SPEC §6.8) ------------------------------------------------------------------------

LANE_CONFIGS = load("lane_configs.json")


@pytest.mark.parametrize("case", LANE_CONFIGS["valid"], ids=ids)
def test_lane_config_valid(case: dict[str, Any]) -> None:
    caps = {a: int(c) for a, c in case["capacities"].items()}
    enc = h(case["encoding_hex"])
    assert lane_config.encode_lane_config(caps) == enc
    assert lane_config.decode_lane_config(enc) == caps
    assert codec.sha256(enc) == h(case["value_hash_hex"])


@pytest.mark.parametrize("case", LANE_CONFIGS["invalid"], ids=ids)
def test_lane_config_invalid(case: dict[str, Any]) -> None:
    if "capacities" in case:
        caps = {a: int(c) for a, c in case["capacities"].items()}
        expect_code(case["error"], lambda: lane_config.encode_lane_config(caps))
    else:
        expect_code(case["error"], lambda: lane_config.decode_lane_config(h(case["encoding_hex"])))


# --- state commitment ----------------------------------------------------------------------------------------

SMT = load("state_commitment.json")


def test_empty_root() -> None:
    assert h(SMT["empty_root_hex"]) == EMPTY_ROOT == SparseMerkleTree().root


@pytest.mark.parametrize("case", SMT["cases"], ids=ids)
def test_tree_case(case: dict[str, Any]) -> None:
    items = [(h(i["key_hex"]), h(i["value_hex"])) for i in case["items"]]
    root = h(case["root_hex"])
    assert SparseMerkleTree.from_items(items).root == root
    tree = SparseMerkleTree()
    for k, v in reversed(items):  # insertion order must not matter
        tree = tree.set(k, v)
    assert tree.root == root
    for p in case["proofs"]:
        proof = Proof.decode(h(p["proof_hex"]))
        assert proof.encode() == h(p["proof_hex"])
        assert len(proof.siblings) == p["depth"]
        assert (proof.leaf is not None) == (p["ends_in"] == "leaf")
        key = h(p["key_hex"])
        assert tree.prove(key) == proof
        if p["type"] == "membership":
            value = h(p["value_hex"])
            verify_membership(root, key, value, proof)
            expect_code("proof.invalid", verify_non_membership, root, key, proof)
        else:
            verify_non_membership(root, key, proof)
            expect_code("proof.invalid", verify_membership, root, key, b"", proof)


def test_tree_operations() -> None:
    tree = SparseMerkleTree()
    for op in SMT["operations"]:
        key = h(op["key_hex"])
        tree = tree.set(key, h(op["value_hex"])) if op["op"] == "set" else tree.delete(key)
        assert tree.root == h(op["root_hex"]), op
        assert len(tree) == op["size"]
        # the incremental tree equals the tree built in one pass from its contents
        assert SparseMerkleTree.from_items(list(tree.items())).root == tree.root


@pytest.mark.parametrize("case", SMT["invalid"], ids=ids)
def test_tree_invalid_proof(case: dict[str, Any]) -> None:
    data = h(case["proof_hex"])
    if case["type"] == "decode":
        expect_code(case["error"], lambda: Proof.decode(data))
        return
    root, key, value = h(case["root_hex"]), h(case["key_hex"]), hb(case["value_hex"])
    if case["type"] == "membership":
        assert value is not None
        expect_code(case["error"], lambda: verify_membership(root, key, value, Proof.decode(data)))
    else:
        expect_code(case["error"], lambda: verify_non_membership(root, key, Proof.decode(data)))


# --- certificates -------------------------------------------------------------------------------------------

CERTS = load("certificates.json")


def parse_set(d: dict[str, Any]) -> ValidatorSet:
    vals = []
    for v in d["validators"]:
        # the TEST-ONLY seed must give the listed key
        assert Ed25519Signer(h(v["test_seed_hex"])).pubkey == h(v["ed25519_pubkey_hex"])
        vals.append(Validator(v["name"], h(v["ed25519_pubkey_hex"]), h(v["eth_address_hex"]), int(v["power"])))
    return ValidatorSet(tuple(vals))


SETS = {d["name"]: parse_set(d) for d in CERTS["validator_sets"]}


def test_certificate_file_is_marked_test_only() -> None:
    assert "TEST-ONLY" in CERTS["WARNING"]
    assert CERTS["commit_tag"] == "parkrelay/relay-commit/v1"


@pytest.mark.parametrize("d", CERTS["validator_sets"], ids=ids)
def test_validator_set_hash(d: dict[str, Any]) -> None:
    vs = SETS[d["name"]]
    assert vs.hash == h(d["hash_hex"])
    assert vs.total_power == int(d["total_power"])


def parse_header(d: dict[str, str]) -> RelayHeader:
    return RelayHeader(ChainId(d["chain_id"]), int(d["height"]), int(d["time_ms"]), h(d["last_block_hash_hex"]),
                       h(d["data_hash_hex"]), h(d["state_root_hex"]), h(d["validators_hash_hex"]),
                       h(d["next_validators_hash_hex"]))


def parse_commit(d: dict[str, Any]) -> RelayCommit:
    sigs = tuple(CommitSignature(int(s["validator_index"]), h(s["ed25519_sig_hex"])) for s in d["signatures"])
    return RelayCommit(parse_header(d["header"]), int(d["round"]), sigs)


@pytest.mark.parametrize("case", CERTS["commits"], ids=ids)
def test_commit(case: dict[str, Any]) -> None:
    vs, chain, commit = SETS[case["validator_set"]], ChainId(case["relay_chain"]), parse_commit(case)
    if case["error"] is None:
        assert commit.header.encode() == h(case["header_encoding_hex"])
        assert commit.header.hash() == h(case["header_hash_hex"])
        assert commit_sign_bytes(commit.header, commit.round) == h(case["sign_bytes_hex"])
        verify_commit(vs, chain, commit)
    else:
        expect_code(case["error"], lambda: verify_commit(vs, chain, commit))


@pytest.mark.parametrize("case", CERTS["validator_set_updates"], ids=ids)
def test_validator_set_update(case: dict[str, Any]) -> None:
    trusted, new = SETS[case["trusted_set"]], SETS[case["new_set"]]
    commit = parse_commit(case["commit"])

    def run() -> None:
        verify_validator_set_update(trusted, ChainId(case["relay_chain"]), commit, new)

    if case["error"] is None:
        run()
    else:
        expect_code(case["error"], run)


@pytest.mark.parametrize("case", CERTS["certificates"], ids=ids)
def test_certificate(case: dict[str, Any]) -> None:
    c = case["certificate"]
    cert = RelayCertificate(parse_commit(c["commit"]), h(c["key_hex"]), hb(c["value_hex"]),
                            Proof.decode(h(c["proof_hex"])))

    def run() -> None:
        verify_certificate(SETS[case["trusted_set"]], ChainId(case["relay_chain"]), cert,
                           h(case["expected_key_hex"]), hb(case["expected_value_hex"]))

    if case["error"] is None:
        run()
    else:
        expect_code(case["error"], run)


# --- lifecycle --------------------------------------------------------------------------------------------

LIFECYCLE = load("lifecycle.json")


def test_lifecycle_covers_every_pair() -> None:
    pairs = {(t["from"], t["event"]) for t in LIFECYCLE["transitions"]}
    assert pairs == {(s.value, e.value) for s in PacketState for e in PacketEvent}
    assert LIFECYCLE["states"] == [s.value for s in PacketState]


@pytest.mark.parametrize("case", LIFECYCLE["transitions"], ids=lambda t: f"{t['from']}-{t['event']}")
def test_lifecycle_transition(case: dict[str, Any]) -> None:
    state, event = PacketState(case["from"]), PacketEvent(case["event"])
    if case["error"] is None:
        assert transition(state, event) is PacketState(case["to"])
    else:
        expect_code(case["error"], lambda: transition(state, event))


@pytest.mark.parametrize("case", LIFECYCLE["sequences"], ids=ids)
def test_lifecycle_sequence(case: dict[str, Any]) -> None:
    state = PacketState(case["start"])
    visited = [state.value]
    for i, name in enumerate(case["events"]):
        event = PacketEvent(name)
        if case["failed_at"] == i:
            expect_code(case["error"], transition, state, event)
            break
        state = transition(state, event)
        visited.append(state.value)
    else:
        assert case["failed_at"] is None
    assert visited == case["states"]
