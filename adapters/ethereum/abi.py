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

__all__ = [
    "BRIDGE_FUNCTIONS",
    "CERTIFICATE",
    "COMMIT",
    "ERC20_FUNCTIONS",
    "EVENTS",
    "RELAY_HEADER",
    "VALIDATOR_SET",
    "EventAbi",
    "artifact_abi",
    "certificate_arg",
    "commit_arg",
    "decode_event",
    "decode_result",
    "encode_call",
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

BRIDGE_FUNCTIONS: dict[str, tuple[list[str], list[str]]] = {
    "openLane": (["string", "string"], []),
    "configureLane": (["string", "string", "string[]", "uint64[]"], []),
    "updateLaneConfig": (["string", "string", "string[]", "uint64[]", CERTIFICATE, VALIDATOR_SET], []),
    "laneCapacity": (["string", "string", "string"], ["bool", "uint256", "uint64"]),
    "sendEnergy": (["string", "string", "string", "uint256", "string", "uint64"], ["uint64"]),
    "recvPacket": (["bytes", CERTIFICATE, VALIDATOR_SET], []),
    "settle": (["bytes", "bytes", CERTIFICATE, VALIDATOR_SET], []),
    "updateRelayValidators": ([VALIDATOR_SET, COMMIT, VALIDATOR_SET], []),
    "relaySetHash": ([], ["bytes32"]),
    "relaySetHeight": ([], ["uint64"]),
    "tokenOf": (["string"], ["address"]),
    "nextSequenceSend": (["string", "string"], ["uint64"]),
}
"""``ParkBridge`` functions: name → (input types, output types)."""

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

_FUNCTIONS = {**BRIDGE_FUNCTIONS, **ERC20_FUNCTIONS}


@dataclass(frozen=True, slots=True)
class EventAbi:
    """One event: its name, its (all non-indexed) field names and types, and its topic 0."""

    name: str
    fields: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @property
    def topic(self) -> bytes:
        return keccak(text=self.signature)


EVENTS: dict[str, EventAbi] = {
    e.name: e
    for e in (
        EventAbi("PacketSent", ("dstChain", "lane", "sequence", "packet"), ("string", "string", "uint64", "bytes")),
        EventAbi("AckWritten", ("srcChain", "lane", "sequence", "packet", "ack"),
                 ("string", "string", "uint64", "bytes", "bytes")),
        EventAbi("PacketSettled", ("dstChain", "lane", "sequence", "outcome", "refunded"),
                 ("string", "string", "uint64", "uint8", "bool")),
        EventAbi("RelayValidatorsUpdated", ("setHash", "height"), ("bytes32", "uint64")),
    )
}
"""``ParkBridge`` events by name (SPEC §E2.2: no field is indexed)."""


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


def decode_event(event: EventAbi, data: bytes) -> dict[str, Any]:
    """The fields of a log of ``event`` from its data (raises the ABI decoder's errors on garbage)."""
    return dict(zip(event.fields, abi_decode(list(event.types), data), strict=True))


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
