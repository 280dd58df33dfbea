"""Every decoder and verifier that takes bytes or JSON from outside, as fuzz targets.

A :class:`Target` has valid seeds (built from the code's own encoders and test builders, so mutations reach
deep into the decoder) and ``run(input)``: it decodes, and where a verifier sits behind the decoder, verifies.
The property (tests/unit/fuzz/test_decoders.py, bench/fuzz.py): ``run`` returns or raises a
:class:`~protocol.errors.ProtocolError`; any other exception is a bug at that decoder's boundary.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "protocol" / "vectors"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "bytes" or "json"
    seeds: Callable[[], list[Any]]
    run: Callable[[Any], Any]


def _vector_hex(file: str, field: str = "encoding_hex") -> list[bytes]:
    doc = json.loads((VECTORS / file).read_text(encoding="utf-8"))
    return [bytes.fromhex(c[field]) for c in doc["valid"] if field in c]


# -- protocol -----------------------------------------------------------------------------------------------

def _protocol() -> list[Target]:
    from protocol import codec
    from protocol.lane_config import decode_lane_config
    from protocol.state_commitment import Proof, SparseMerkleTree
    from protocol.types import PacketKind

    def payloads() -> list[bytes]:
        doc = json.loads((VECTORS / "payloads.json").read_text(encoding="utf-8"))
        return [bytes.fromhex(c["encoding_hex"]) for c in doc["valid"]]

    def any_payload(data: bytes) -> None:
        for kind in PacketKind:
            try:
                codec.decode_payload(kind, data)
            except Exception as exc:
                from protocol.errors import ProtocolError
                if not isinstance(exc, ProtocolError):
                    raise

    def proofs() -> list[bytes]:
        tree = SparseMerkleTree.from_items([(b"a/%d" % i, b"v%d" % i) for i in range(20)])
        return [tree.prove(b"a/3").encode(), tree.prove(b"absent").encode()]

    return [
        Target("codec.decode_packet", "bytes", lambda: _vector_hex("codec_packets.json"), codec.decode_packet),
        Target("codec.decode_payload", "bytes", payloads, any_payload),
        Target("codec.decode_ack", "bytes", lambda: _vector_hex("acks.json"), codec.decode_ack),
        Target("codec.decode_outcome", "bytes", lambda: _vector_hex("outcomes.json"), codec.decode_outcome),
        Target("lane_config.decode_lane_config", "bytes", lambda: _vector_hex("lane_configs.json"),
               decode_lane_config),
        Target("state_commitment.Proof.decode", "bytes", proofs, Proof.decode),
    ]


# -- relay certificates on the wire (chains/common/wire.py) and their verifier ---------------------------------

@functools.cache
def _cert_fixture() -> tuple[Any, Any, Any]:
    from tests.unit.protocol.test_certificate import RELAY, VS, absence_cert, member_cert
    return RELAY, VS, (member_cert(), absence_cert())


def _wire() -> list[Target]:
    from chains.common import wire
    from protocol.certificate import verify_certificate

    def cert_seeds() -> list[Any]:
        return [wire.certificate_to_json(c) for c in _cert_fixture()[2]]

    def cert_run(obj: Any) -> None:
        relay, vs, _ = _cert_fixture()
        cert = wire.certificate_from_json(obj)
        verify_certificate(vs, relay, cert, cert.key, cert.value)

    return [
        Target("wire.certificate_from_json+verify", "json", cert_seeds, cert_run),
        Target("wire.validator_set_from_json", "json", lambda: [wire.validator_set_to_json(_cert_fixture()[1])],
               wire.validator_set_from_json),
        Target("wire.commit_from_json", "json", lambda: [wire.commit_to_json(_cert_fixture()[2][0].commit)],
               wire.commit_from_json),
    ]


# -- relay consensus P2P messages ----------------------------------------------------------------------------

@functools.cache
def _consensus_fixture() -> tuple[Any, Any, list[bytes]]:
    from relay.chain.consensus.messages import VoteType, encode_message, sign_proposal, sign_vote
    from tests.unit.protocol.test_certificate import RELAY, header
    from tests.unit.relay_consensus.sim import make_vset, validator_key

    keys = [validator_key(i) for i in range(4)]
    vset = make_vset(keys, [1, 1, 1, 1])
    h = header(vset)
    msgs = [sign_vote(keys[1], RELAY, VoteType.PRECOMMIT, 10, 0, b"\x33" * 32, 1, with_secp256k1=True),
            sign_vote(keys[2], RELAY, VoteType.PREVOTE, 10, 1, None, 2, with_secp256k1=False),
            sign_proposal(keys[0], RELAY, 10, 0, -1, h, b"block-bytes", 0)]
    return RELAY, vset, [encode_message(m) for m in msgs]


def _consensus() -> list[Target]:
    from relay.chain.consensus.messages import (
        Proposal,
        check_message_ranges,
        decode_message,
        verify_proposal_signature,
        verify_vote_signature,
    )

    def run(data: bytes) -> None:
        relay, vset, _ = _consensus_fixture()
        msg = decode_message(data)
        check_message_ranges(msg)
        if isinstance(msg, Proposal):
            verify_proposal_signature(vset, relay, msg)
        else:
            verify_vote_signature(vset, relay, msg)

    return [Target("consensus.decode_message+verify", "bytes", lambda: _consensus_fixture()[2], run)]


# -- relay node: block headers and transactions from peers -----------------------------------------------------

def _relay_node() -> list[Target]:
    from chains.common.tx import Tx
    from relay.chain.node import RelayBlockHeader
    from relay.chain.state_machine.app import relay_tx_from_json
    from relay.chain.state_machine.packets import decode_packet_ref

    def header_seeds() -> list[bytes]:
        _, _, (cert, _) = _cert_fixture()
        return [RelayBlockHeader(cert.commit.header, cert.commit).encode(),
                RelayBlockHeader(cert.commit.header, None).encode()]

    tx = {"chain_id": "relay", "sender": "op-a", "nonce": 3, "op": "relay.verify",
          "args": {"packet": "00" * 40, "proof": "ab", "height": 5}, "signature": "11" * 64}
    return [
        Target("relay.RelayBlockHeader.decode", "bytes", header_seeds, RelayBlockHeader.decode),
        Target("relay.relay_tx_from_json", "json", lambda: [tx], relay_tx_from_json),
        Target("tx.Tx.from_json", "json", lambda: [tx], Tx.from_json),
        Target("relay.decode_packet_ref", "bytes", lambda: _vector_hex("codec_packets.json"), decode_packet_ref),
    ]


# -- light clients: header decoders, state decoders, proof verifiers ------------------------------------------

@functools.cache
def _dpos_fixture() -> tuple[Any, list[bytes], bytes]:
    from chains.dpos.testing import ChainBuilder

    cb = ChainBuilder(4, maintenance_interval_blocks=5)
    headers = cb.extend(8)
    client = cb.client()
    for h in headers[:4]:
        client.process_header(h, h.timestamp_ms)
    return cb, [headers[4].encode()], client.to_state()


def _dpos() -> list[Target]:
    from chains.dpos.light_client import DposLightClient
    from chains.dpos.types import DposHeader, decode_witness_set, encode_witness_set
    from protocol.types import ClientId

    def update(data: bytes) -> None:
        cb, _, state = _dpos_fixture()
        client = DposLightClient.from_state(ClientId("dpos-0"), state)
        h = DposHeader.decode(data)
        client.process_header(h, cb.tip.timestamp_ms + 1000)

    def witness_sets() -> list[bytes]:
        cb = _dpos_fixture()[0]
        return [encode_witness_set(tuple(cb.witnesses))]

    return [
        Target("dpos.DposHeader.decode+process_header", "bytes", lambda: _dpos_fixture()[1], update),
        Target("dpos.DposLightClient.from_state", "bytes", lambda: [_dpos_fixture()[2]],
               lambda d: DposLightClient.from_state(ClientId("dpos-0"), d)),
        Target("dpos.decode_witness_set", "bytes", witness_sets, decode_witness_set),
    ]


@functools.cache
def _eth_fixture() -> tuple[list[bytes], bytes, Any]:
    from chains.ethereum.proofs import EthStorageProof
    from tests.unit.test_eth_light_client import CHAIN_A, attest_quorum, feed, new_client

    client = new_client()
    feed(client, CHAIN_A[:6])
    attest_quorum(client, CHAIN_A[3])
    proofs = [EthStorageProof((b"\x01" * 40, b"\x02" * 70), (b"\x80",)).encode(), EthStorageProof((), ()).encode()]
    return [CHAIN_A[6].encode()], client.to_state(), proofs


def _eth() -> list[Target]:
    from chains.ethereum.light_client import EthereumLightClient
    from chains.ethereum.proofs import EthStorageProof
    from chains.ethereum.types import EthHeader
    from protocol.types import ClientId

    def update(data: bytes) -> None:
        _, state, _ = _eth_fixture()
        client = EthereumLightClient.from_state(ClientId("ethereum-3"), state)
        h = EthHeader.decode(data)
        client.process_header(h, h.timestamp_ms)

    def verify(data: bytes) -> None:
        _, state, _ = _eth_fixture()
        client = EthereumLightClient.from_state(ClientId("ethereum-3"), state)
        client.verify_membership(3, b"relay/x", b"v", data, 1_790_000_010_000)
        client.verify_non_membership(3, b"relay/x", data, 1_790_000_010_000)

    return [
        Target("eth.EthHeader.decode+process_header", "bytes", lambda: _eth_fixture()[0], update),
        Target("eth.EthereumLightClient.from_state", "bytes", lambda: [_eth_fixture()[1]],
               lambda d: EthereumLightClient.from_state(ClientId("ethereum-3"), d)),
        Target("eth.EthStorageProof.decode", "bytes", lambda: _eth_fixture()[2], EthStorageProof.decode),
        Target("eth.verify_membership(proof)", "bytes", lambda: _eth_fixture()[2], verify),
    ]


@functools.cache
def _poc_fixture() -> tuple[Any, list[bytes], bytes]:
    from chains.poc.light_client import PocLightClient
    from chains.poc.testing import build_test_chain
    from protocol.types import ClientId

    chain = build_test_chain(6)
    client = PocLightClient(ClientId("poc-0"), **chain.client_args())
    for h in chain.headers[:3]:
        client.process_header(h, h.timestamp_ms)
    return chain, [h.encode() for h in chain.headers[2:6]], client.to_state()


def _poc() -> list[Target]:
    from chains.poc.light_client import PocLightClient
    from chains.poc.types import decode_header
    from protocol.types import ClientId

    def update(data: bytes) -> None:
        chain, _, state = _poc_fixture()
        client = PocLightClient.from_state(ClientId("poc-0"), state)
        h = decode_header(data)
        client.process_header(h, chain.headers[-1].timestamp_ms)

    return [
        Target("poc.decode_header+process_header", "bytes", lambda: _poc_fixture()[1], update),
        Target("poc.PocLightClient.from_state", "bytes", lambda: [_poc_fixture()[2]],
               lambda d: PocLightClient.from_state(ClientId("poc-0"), d)),
    ]


@functools.cache
def _fabric_fixture() -> tuple[Any, list[bytes], bytes, list[bytes]]:
    from chains.fabric.testing import T0_MS, FabricNet

    net = FabricNet.new(n_orderers=2)
    net.consenters = net.orderers[:]
    client = net.client()
    for i in range(3):
        client.process_header(net.next_block(), T0_MS + i)
    state = client.to_state()
    blocks = [net.next_block().encode(), net.config_update().encode()]
    bundles = [net.attest(b"relay/x", b"v"), net.attest(b"relay/y", None)]
    return net, blocks, state, bundles


def _fabric() -> list[Target]:
    from chains.fabric import proto as P
    from chains.fabric.attestation import Statement, decode_bundle
    from chains.fabric.config import ChannelConfig
    from chains.fabric.light_client import FabricLightClient
    from chains.fabric.testing import T0_MS as _T0
    from protocol.types import ClientId

    vectors = json.loads((ROOT / "tests" / "unit" / "fabric" / "vectors.json").read_text(encoding="utf-8"))
    decoders = {"block": P.Block, "chaincode_action": P.ChaincodeAction, "channel_header": P.ChannelHeader,
                "config_envelope": P.ConfigEnvelope, "consensus_type": P.ConsensusType,
                "fabric_msp_config": P.FabricMSPConfig, "metadata": P.Metadata,
                "orderer_block_metadata": P.OrdererBlockMetadata, "proposal_response": P.ProposalResponse,
                "proposal_response_payload": P.ProposalResponsePayload, "signature_header": P.SignatureHeader}
    out = [Target(f"fabric.proto.{cls.__name__}.decode", "bytes",
                  functools.partial(lambda k: [bytes.fromhex(vectors[k])], k), cls.decode)
           for k, cls in decoders.items()]

    def client() -> FabricLightClient:
        return FabricLightClient.from_state(ClientId("fabric-0"), _fabric_fixture()[2])

    def update(data: bytes) -> None:
        client().process_header(P.Block.decode(data), _T0 + 100)

    def attested(data: bytes) -> None:
        c = client()
        c.verify_membership(c.latest_height, b"relay/x", b"v", data, _T0 + 100)

    def statements() -> list[bytes]:
        return [Statement("bridge", "ch", b"k", b"\x01" * 16, 5, b"v").encode(),
                Statement("bridge", "ch", b"k", b"\x01" * 16, 5, None).encode()]

    out += [
        Target("fabric.Block.decode+process_header", "bytes", lambda: _fabric_fixture()[1], update),
        Target("fabric.FabricLightClient.from_state", "bytes", lambda: [_fabric_fixture()[2]],
               lambda d: FabricLightClient.from_state(ClientId("fabric-0"), d)),
        Target("fabric.verify_attestation(bundle)", "bytes", lambda: _fabric_fixture()[3], attested),
        Target("fabric.decode_bundle", "bytes", lambda: _fabric_fixture()[3], decode_bundle),
        Target("fabric.ChannelConfig.parse", "bytes", lambda: [_fabric_fixture()[0].config_envelope(1)],
               lambda d: ChannelConfig.parse(d, _fabric_fixture()[0].channel_id)),
        Target("fabric.Statement.decode", "bytes", statements, Statement.decode),
    ]
    return out


# -- the Fabric bridge chaincode's argument parsing (chains/fabric/chaincode/contract.py) ------------------------

@functools.cache
def _chaincode_fixture() -> Any:
    from tests.unit.fabric_chaincode.harness import make_harness

    return make_harness()


def _chaincode() -> list[Target]:
    from chains.fabric.chaincode.contract import FUNCTIONS
    from tests.unit.fabric_chaincode.harness import ALICE, OPERATOR, RELAYER

    callers = (ALICE, OPERATOR, RELAYER)

    def seeds() -> list[Any]:
        lane = {"src": "dpos-park", "dst": "fabric-park", "lane": "lane-0", "sequence": 1}
        out: list[Any] = []
        for i, (name, fn) in enumerate(sorted(FUNCTIONS.items())):
            args = ['{"amount_wh": 5, "denom": "kWh"}', json.dumps(lane), "alice", "00" * 32][: fn.arity]
            out.append([i % len(callers), name, *args])
        return out

    def run(value: Any) -> None:
        """One call from a hostile client: never an internal error; a refusal writes nothing."""
        h = _chaincode_fixture()
        if not isinstance(value, list) or not value:
            return
        who = callers[value[0] % len(callers)] if isinstance(value[0], int) and not isinstance(value[0], bool) \
            else callers[0]
        texts = [v if isinstance(v, str) else json.dumps(v) for v in value[1:]]
        args = [t.encode("utf-8", "surrogatepass") for t in texts]
        ledger = h.fabric.ledger
        before, events = ledger.snapshot(), len(ledger.events)
        if not args:
            return
        r = h.fabric.submit(who, args[0], *args[1:], now_ms=h.net.now_ms)  # type: ignore[arg-type]
        assert "internal error" not in (r.message or ""), (texts, r.message)
        if r.status != 200:
            assert ledger.snapshot() == before and len(ledger.events) == events, texts

    def transient_seeds() -> list[Any]:
        terms = {"contract_id": "c-1", "seller": "alice", "buyer": "bob", "quantity_kwh": 5, "price": 7,
                 "salt": "s" * 20}
        return [[i, fn, json.dumps({"contract_id": "c-1", "terms_sha256": "00" * 32, "counterparty": "bob"}), terms]
                for i, fn in enumerate(["market.propose_contract", "market.accept_contract",
                                        "market.settle_contract"])]

    def run_transient(value: Any) -> None:
        """A market call whose terms travel as transient data: same property, hostile terms."""
        if not isinstance(value, list) or len(value) < 4:
            return run(value)
        h = _chaincode_fixture()
        who = callers[value[0] % len(callers)] if isinstance(value[0], int) and not isinstance(value[0], bool) \
            else callers[0]
        texts = [v if isinstance(v, str) else json.dumps(v) for v in value[1:3]]
        terms = value[3] if isinstance(value[3], str) else json.dumps(value[3])
        ledger = h.fabric.ledger
        before, events = ledger.snapshot(), len(ledger.events)
        r = h.fabric.submit(who, *[t.encode("utf-8", "surrogatepass") for t in texts],  # type: ignore[arg-type]
                            now_ms=h.net.now_ms, transient={"terms": terms.encode("utf-8", "surrogatepass")})
        assert "internal error" not in (r.message or ""), (texts, terms[:200], r.message)
        if r.status != 200:
            assert ledger.snapshot() == before and len(ledger.events) == events, texts
        return None

    return [Target("fabric.chaincode.invoke(args)", "json", seeds, run),
            Target("fabric.chaincode.invoke(transient terms)", "json", transient_seeds, run_transient)]


# -- adapters: Ethereum bridge logs and revert data, Fabric peer blocks --------------------------------------

def _adapters() -> list[Target]:
    from eth_abi.abi import encode as abi_encode

    from adapters.ethereum.errors import decode_revert, known_error_selectors
    from adapters.ethereum.source import _BY_TOPIC, EthSource
    from adapters.fabric.blocks import decode_peer_block

    packet = _vector_hex("codec_packets.json")[0]
    defaults = {"bytes": packet, "string": "lane-0", "bytes32": b"\x11" * 32, "address": "0x" + "22" * 20,
                "bool": True}

    def value(t: str) -> Any:
        return defaults.get(t, 1)

    def logs() -> list[Any]:
        out = []
        for topic, (_, abi) in _BY_TOPIC.items():
            plain = [t for i, t in enumerate(abi.types) if not abi.is_indexed(i)]
            indexed = [t for i, t in enumerate(abi.types) if abi.is_indexed(i)]
            topics = ["0x" + topic.hex()] + ["0x" + (b"\x33" * 32 if t in ("string", "bytes")
                                                     else abi_encode([t], [value(t)])).hex() for t in indexed]
            out.append({"topics": topics, "data": "0x" + abi_encode(plain, [value(t) for t in plain]).hex(),
                        "blockNumber": "0x10", "transactionHash": "0x" + "44" * 32})
        return out

    source = object.__new__(EthSource)
    source.chain_id = "eth-park"  # event_of reads only this

    def event_of(entry: Any) -> None:
        if isinstance(entry, dict):
            source.event_of(entry)  # None for a log it cannot read; never an exception

    def reverts() -> list[bytes]:
        return [sel + abi_encode(list(types), [value(t) for t in types])
                for sel, (_, types) in known_error_selectors().items()]

    def revert(data: bytes) -> None:
        decode_revert(data, context="fuzz")  # returns the error; raising anything is a bug

    def rpc_errors() -> list[Any]:
        return [{"code": -32000, "message": "refused", "data": {"code": "packet.replay", "disposition": "skip",
                                                                "message": "replay", "expected": 1, "got": 2}},
                {"code": -32602, "message": "invalid params", "data": {"code": "rpc.invalid_params", "param": "x"}}]

    def rebuilt(err: Any) -> None:
        from adapters.common.rpc import error_from_rpc
        from protocol.errors import ProtocolError

        assert isinstance(error_from_rpc(err), ProtocolError)  # returned, whatever the shape, never raised

    return [
        Target("adapters.common.error_from_rpc", "json", rpc_errors, rebuilt),
        Target("adapters.ethereum.EthSource.event_of", "json", logs, event_of),
        Target("adapters.ethereum.decode_revert", "bytes", reverts, revert),
        Target("adapters.fabric.decode_peer_block", "bytes", lambda: _fabric_fixture()[1], decode_peer_block),
    ]


# -- the relay state machine's request parsers (the args of a relay transaction) --------------------------------

def _relay_requests() -> list[Target]:
    from chains.common.tx import Tx
    from relay.chain.state_machine import attest
    from relay.chain.state_machine import requests as rq

    parsers: dict[str, Any] = {
        rq.VERIFY: rq.parse_verify, rq.VERIFY_BATCH: rq.parse_verify, rq.CONFIRM_ACK: rq.parse_confirm_ack,
        rq.CONFIRM_TIMEOUT: rq.parse_confirm_timeout, rq.CLIENT_UPDATE: rq.parse_client_update,
        rq.CLIENT_REGISTER_FARMER: rq.parse_register_farmer, rq.CLIENT_MISBEHAVIOUR: rq.parse_misbehaviour,
        attest.ATTEST: attest.parse_attest,
    }

    def seeds() -> list[Any]:
        packet = _vector_hex("codec_packets.json")[0].hex()
        ack = _vector_hex("acks.json")[0].hex()
        h = "ab" * 40
        return [
            {"op": rq.VERIFY, "args": {"packet": packet, "height": 5, "proof": "cd" * 20, "headers": [h]}},
            {"op": rq.VERIFY_BATCH, "args": {"height": 5, "items": [{"packet": packet, "proof": "cd"}]}},
            {"op": rq.CONFIRM_ACK, "args": {"packet": packet, "ack": ack, "height": 5, "proof": "cd"}},
            {"op": rq.CONFIRM_TIMEOUT, "args": {"packet": packet, "height": 5, "proof": "cd", "commit_height": 4,
                                                "commit_proof": "ef", "commit_headers": [h]}},
            {"op": rq.CLIENT_UPDATE, "args": {"chain_id": "dpos-park", "headers": [h, h]}},
            {"op": rq.CLIENT_REGISTER_FARMER, "args": {"chain_id": "poc-park", "height": 3, "name": "farmer-a",
                                                       "account": "ab" * 32, "proof": "cd"}},
            {"op": rq.CLIENT_MISBEHAVIOUR, "args": {"chain_id": "dpos-park", "header_a": h, "header_b": h}},
            {"op": rq.CLIENT_MISBEHAVIOUR, "args": {"chain_id": "poc-park", "branch": [h, h]}},
            {"op": attest.ATTEST, "args": {"chain_id": "eth-park", "height": 3, "block_hash": "11" * 32,
                                           "head_height": 5}},
            {"op": rq.LANE_SET_LIMITS, "params": {"src": "a", "dst": "b", "lane": "lane-0",
                                                  "limits": {"kWh": {"capacity": 10, "refill_per_s": 1}}}},
            {"op": rq.CLIENT_CREATE, "params": {"chain_id": "dpos-park", "client_type": "dpos", "init": {}}},
        ]

    def run(value: Any) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("op"), str):
            return
        op = value["op"]
        if "params" in value and isinstance(value["params"], dict):
            if op == rq.CLIENT_CREATE:
                rq.parse_client_create(value["params"])
            elif op in (rq.LANE_OPEN, rq.LANE_PAUSE, rq.LANE_RESUME, rq.LANE_SET_LIMITS):
                rq.parse_lane(op, value["params"])
            return
        if op not in parsers or not isinstance(value.get("args"), dict):
            return
        parsers[op](Tx("relay", "op-a", 1, op, value["args"]))

    return [Target("relay.state_machine.parse_requests", "json", seeds, run)]


def all_targets() -> list[Target]:
    return [*_protocol(), *_wire(), *_consensus(), *_relay_node(), *_dpos(), *_eth(), *_poc(), *_fabric(),
            *_chaincode(), *_adapters(), *_relay_requests()]
