"""The ``ParkBridge`` / ERC-20 ABI as the adapter speaks it (chains/ethereum/SPEC.md §E2.2).

The signatures are written out here from the normative spec, so calldata, event topics and error
selectors are computed without web3's contract machinery; ``tests/unit/test_eth_adapter_errors.py``
checks them against the compiled artifacts. Relay-chain objects (:mod:`protocol.certificate`) are
converted into the ABI tuples of the spec's structs by :func:`validator_set_arg`, :func:`commit_arg`
and :func:`certificate_arg`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from protocol.certificate import RelayCertificate, RelayCommit, ValidatorSet
from protocol.codec import decode_outcome_record
from protocol.errors import CodecError
from protocol.types import NO_PAYEES, FeePayees

__all__ = [
    "BRIDGE_FUNCTIONS",
    "CERTIFICATE",
    "COMMIT",
    "ERC20_FUNCTIONS",
    "EVENTS",
    "FEES",
    "PAYEES",
    "RELAY_HEADER",
    "REPUTATION_FUNCTIONS",
    "RIGHTS_FUNCTIONS",
    "VALIDATOR_SET",
    "EventAbi",
    "artifact_abi",
    "certificate_arg",
    "certified_payees",
    "commit_arg",
    "decode_event",
    "decode_result",
    "encode_call",
    "payees_arg",
    "selector",
    "validator_set_arg",
]

RELAY_HEADER = "(string,uint64,uint64,bytes32,bytes32,bytes32,bytes32,bytes32)"
"""``RelayHeader {chainId, height, timeMs, lastBlockHash, dataHash, stateRoot, validatorsHash, nextValidatorsHash}``."""
SIGNATURE = "(uint256,bytes)"
"""``Signature {validatorIndex, secp256k1Sig}``."""
COMMIT = f"({RELAY_HEADER},uint64,{SIGNATURE}[])"
"""``Commit {header, round, signatures}``."""
VALIDATOR_SET = "(bytes32[],address[],uint64[])"
"""``ValidatorSet {ed25519Keys, ethAddresses, powers}``."""
CERTIFICATE = f"({COMMIT},bytes)"
"""``Certificate {commit, proof}``."""
FEES = "(uint256,uint256,uint256)"
"""``Fees {verify, execute, confirm}``: relay fees in wei a send offers (protocol SPEC §6.10)."""
PAYEES = "(string,string,string)"
"""``FeePayees {verify, execute, confirm}``: the payees of the certified outcome record (protocol SPEC §2.5)."""

BRIDGE_FUNCTIONS: dict[str, tuple[list[str], list[str]]] = {
    "openLane": (["string", "string"], []),
    "configureLane": (["string", "string", "string[]", "uint64[]"], []),
    "updateLaneConfig": (["string", "string", "string[]", "uint64[]", CERTIFICATE, VALIDATOR_SET], []),
    "laneCapacity": (["string", "string", "string"], ["bool", "uint256", "uint64"]),
    "sendEnergy": (["string", "string", "string", "uint256", "string", "uint64"], ["uint64"]),
    "sendEnergyWithFees": (["string", "string", "string", "uint256", "string", "uint64", FEES], ["uint64"]),
    "recvPacket": (["bytes", CERTIFICATE, VALIDATOR_SET, "string"], []),
    "settle": (["bytes", "bytes", CERTIFICATE, VALIDATOR_SET, PAYEES], []),
    "withdrawFees": ([], ["uint256"]),
    "feesOwed": (["address"], ["uint256"]),
    "feesEscrowed": (["string", "string", "uint64"], ["uint64", "uint64", "uint64"]),
    "updateRelayValidators": ([VALIDATOR_SET, COMMIT, VALIDATOR_SET], []),
    "relaySetHash": ([], ["bytes32"]),
    "relaySetHeight": ([], ["uint64"]),
    "relayTrust": ([], ["bytes32", "uint64", "uint64", "uint64", "uint64"]),
    "resetRelayValidators": ([VALIDATOR_SET, "uint64", "uint64"], []),
    "tokenOf": (["string"], ["address"]),
    "nextSequenceSend": (["string", "string"], ["uint64"]),
    "sendRight": (["string", "string", "bytes", "string", "uint64"], ["uint64"]),
    "sendRightWithFees": (["string", "string", "bytes", "string", "uint64", FEES], ["uint64"]),
    "sendReputation": (["string", "string", "string", "string", "uint64"], ["uint64"]),
    "sendReputationWithFees": (["string", "string", "string", "string", "uint64", FEES], ["uint64"]),
    "rightsApp": ([], ["address"]),
    "reputationApp": ([], ["address"]),
    "owner": ([], ["address"]),
}
"""``ParkBridge`` functions: name → (input types, output types)."""

RIGHTS_FUNCTIONS: dict[str, tuple[list[str], list[str]]] = {
    "issue": (["string", "string", "string", "uint64", "uint64", "uint64", "address"], ["uint256"]),
    "setTransformer": (["string", "uint64"], []),
    "setStation": (["string", "string"], []),
    "rightOf": (["uint256"], ["uint8", "address", "bytes32", "bytes32"]),
    "transformerOf": (["string"], ["bool", "uint64", "uint256"]),
    "stationOf": (["string"], ["bytes32"]),
    "bookedLoad": (["string", "uint64", "uint64"], ["uint256"]),
    "ownerOf": (["uint256"], ["address"]),
    "transferFrom": (["address", "address", "uint256"], []),
}
"""``ChargingRights`` functions (the ERC-721 of rights, the registry): name → (input types, output types)."""

REPUTATION_FUNCTIONS: dict[str, tuple[list[str], list[str]]] = {
    "importedReputation": (["string", "string", "string"], ["uint64", "uint64", "uint64", "bool"]),
    "deliveryRecord": ([], ["address"]),
    "scoreOf": (["address"], ["bool", "uint64"]),
    "participantOf": (["address"], ["bool", "uint256", "uint256"]),
    "admit": (["address"], []),
    "record": (["address", "uint256", "uint256"], []),
}
"""``ReputationApp`` functions and ``DeliveryRecord.scoreOf``."""

ERC20_FUNCTIONS: dict[str, tuple[list[str], list[str]]] = {
    "approve": (["address", "uint256"], ["bool"]),
    "transfer": (["address", "uint256"], ["bool"]),
    "allowance": (["address", "address"], ["uint256"]),
    "balanceOf": (["address"], ["uint256"]),
    "totalSupply": ([], ["uint256"]),
    "decimals": ([], ["uint8"]),
    "mint": (["address", "uint256"], []),
}
"""The ERC-20 functions the adapter and its tests call (``mint`` is the park operator's, on ``EnergyToken``)."""

_FUNCTIONS = {**BRIDGE_FUNCTIONS, **ERC20_FUNCTIONS, **RIGHTS_FUNCTIONS, **REPUTATION_FUNCTIONS}


@dataclass(frozen=True, slots=True)
class EventAbi:
    """One event: its name, its field names and types in declaration order, which are indexed, and its topic 0.

    An indexed ``string``/``bytes`` field is only its keccak256 in the log (the bridge repeats the values a reader
    needs in the data)."""

    name: str
    fields: tuple[str, ...]
    types: tuple[str, ...]
    indexed: tuple[bool, ...] = ()

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @property
    def topic(self) -> bytes:
        return keccak(text=self.signature)

    def is_indexed(self, i: int) -> bool:
        return bool(self.indexed) and self.indexed[i]


def _ev(name: str, *fields: str) -> EventAbi:
    """``_ev("X", "indexed string lane", "bytes packet")``: fields as in Solidity."""
    names, types, indexed = [], [], []
    for f in fields:
        parts = f.split()
        indexed.append(parts[0] == "indexed")
        types.append(parts[-2])
        names.append(parts[-1])
    return EventAbi(name, tuple(names), tuple(types), tuple(indexed))


EVENTS: dict[str, EventAbi] = {
    e.name: e
    for e in (
        _ev("PacketSent", "indexed string lane", "indexed uint64 sequence", "indexed address sender", "bytes packet"),
        _ev("AckWritten", "indexed string lane", "indexed uint64 sequence", "string srcChain", "string laneId",
            "uint8 kind", "string ackCode", "string relayer"),
        _ev("PacketSettled", "indexed string lane", "indexed uint64 sequence", "indexed address sender",
            "string dstChain", "string laneId", "uint8 outcome", "bool refunded"),
        _ev("FeesEscrowed", "indexed string lane", "indexed uint64 sequence", "indexed address payer",
            "string dstChain", "string laneId", "uint64 verify", "uint64 execute", "uint64 confirm"),
        _ev("FeePaid", "indexed string lane", "indexed uint64 sequence", "indexed address account",
            "string dstChain", "string laneId", "uint8 step", "string payee", "uint256 amount"),
        _ev("FeeRefunded", "indexed string lane", "indexed uint64 sequence", "indexed address account",
            "string dstChain", "string laneId", "uint8 step", "uint256 amount"),
        _ev("FeesWithdrawn", "indexed address account", "uint256 amount"),
        _ev("RelayValidatorsUpdated", "indexed bytes32 setHash", "uint64 height"),
        _ev("RightCreated", "indexed uint256 tokenId", "indexed address owner", "bytes payload"),
        _ev("Transfer", "indexed address from", "indexed address to", "indexed uint256 tokenId"),
        _ev("TransformerSet", "indexed bytes32 transformerHash", "string name", "uint64 capacityKw"),
        _ev("StationSet", "indexed bytes32 stationHash", "string name", "string transformer"),
    )
}
"""``ParkBridge`` events (SPEC §E2.2: lane, sequence and sender indexed) and the ``ChargingRights`` ones the
adapter reads, by name."""


def selector(name: str, types: list[str] | tuple[str, ...]) -> bytes:
    """The 4-byte selector of function or error ``name(types...)``."""
    return keccak(text=f"{name}({','.join(types)})")[:4]


def encode_call(name: str, args: list[Any]) -> bytes:
    """Calldata of bridge or ERC-20 function ``name`` with ``args`` (ABI tuples for structs)."""
    inputs, _ = _FUNCTIONS[name]
    return selector(name, inputs) + abi_encode(inputs, args)


def decode_result(name: str, data: bytes) -> tuple[Any, ...]:
    """The decoded return values of function ``name``."""
    _, outputs = _FUNCTIONS[name]
    return tuple(abi_decode(outputs, data))


def decode_event(event: EventAbi, data: bytes, topics: list[bytes] | None = None) -> dict[str, Any]:
    """The fields of a log of ``event`` from its data and topics 1.. (raises the ABI decoder's errors on garbage).
    An indexed string or bytes field decodes to its keccak256 (32 bytes); without ``topics`` indexed fields are
    left out."""
    plain = [i for i in range(len(event.fields)) if not event.is_indexed(i)]
    out = dict(zip((event.fields[i] for i in plain), abi_decode([event.types[i] for i in plain], data), strict=True))
    if topics is not None:
        indexed = [i for i in range(len(event.fields)) if event.is_indexed(i)]
        if len(topics) != len(indexed):
            raise ValueError(f"{event.name}: {len(topics)} topics for {len(indexed)} indexed fields")
        for i, topic in zip(indexed, topics, strict=True):
            t = event.types[i]
            out[event.fields[i]] = topic if t in ("string", "bytes") else abi_decode([t], topic)[0]
    return out


# --- protocol objects -> ABI tuples ------------------------------------------------------------------


def validator_set_arg(vs: ValidatorSet) -> tuple[list[bytes], list[bytes], list[int]]:
    """``ValidatorSet`` struct of ``vs`` (its hash on both sides is the same sha256 of this encoding)."""
    return ([v.ed25519_pubkey for v in vs.validators], [v.eth_address for v in vs.validators],
            [v.power for v in vs.validators])


def commit_arg(commit: RelayCommit) -> tuple[Any, ...]:
    """``Commit`` struct of ``commit``: signatures without a secp256k1 signature are left out (the EVM
    checks only those), each keeping its index in the validator set."""
    h = commit.header
    h.validate()
    header = (h.chain_id, h.height, h.time_ms, h.last_block_hash, h.data_hash, h.state_root, h.validators_hash,
              h.next_validators_hash)
    sigs = [(s.validator_index, s.secp256k1_sig) for s in commit.signatures if s.secp256k1_sig]
    return (header, commit.round, sigs)


def certified_payees(value: bytes | None) -> FeePayees:
    """The fee payees of the outcome record ``value`` a settlement certificate claims (protocol SPEC §2.5, §6.10):
    the bridge rebuilds the record with them and the certificate must prove it. A value that is no outcome record
    gives none (the certificate check then refuses it, as the Python parks' bridges do)."""
    if value is None:
        return NO_PAYEES
    try:
        return decode_outcome_record(value)[3]
    except CodecError:
        return NO_PAYEES


def payees_arg(payees: FeePayees) -> tuple[str, str, str]:
    """``FeePayees`` struct of ``payees``."""
    return payees.as_tuple()


def certificate_arg(cert: RelayCertificate) -> tuple[Any, ...]:
    """``Certificate`` struct of ``cert``: its commit and its proof in the protocol §4 encoding. The key and
    value are not sent: the bridge derives them from the packet (SPEC §E2.2)."""
    return (commit_arg(cert.commit), cert.proof.encode())


# --- compiled artifacts ------------------------------------------------------------------------------

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "chains" / "ethereum" / "artifacts"


def artifact_abi(contract: str) -> list[dict[str, Any]] | None:
    """The ABI in ``chains/ethereum/artifacts/<contract>.json``, or None if there is no such artifact."""
    path = ARTIFACTS_DIR / f"{contract}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    abi: list[dict[str, Any]] = data["abi"]
    return abi
