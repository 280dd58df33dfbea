"""A small deterministic light client for the relay state machine's tests and bench. TEST ONLY.

:class:`SingleSignerClient` follows a chain whose headers are signed by one ed25519 key. A header is
``(chain_id, height, time_ms, state_root)``; heights strictly increase (gaps allowed), times never
decrease. With ``finality_depth`` 0 a header is final at once; with ``d`` it is final once a header
``d`` heights above it is held. Two validly signed, different headers at one height are
misbehaviour. It implements the relay's persistence interface (``to_state`` / ``from_state``) on top of
:func:`relay.chain.state_machine.base_state_to_json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from chains.common.state import canonical_json
from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import CodecError, HeaderError, MisbehaviourError, WrongChainError
from protocol.light_client import ConsensusState, LightClient
from protocol.types import ChainId, ClientId, check_uint
from relay.chain.state_machine import ClientType, base_state_to_json, persistent_client_type, restore_base_state

HEADER_TAG = "parkrelay/test-single-signer-header/v1"
HEADER_ABI = ["string", "uint64", "uint64", "bytes32", "bytes"]
MAX_DRIFT_MS = 10_000


def fixed_signer(tag: str) -> Ed25519Signer:
    """A TEST-ONLY key from a fixed, public seed."""
    return Ed25519Signer(hashlib.sha256(f"parkrelay-relay-state-test/{tag}".encode()).digest())


@dataclass(frozen=True, slots=True)
class SingleSignerHeader:
    """A header of a single-signer test chain."""

    chain_id: str
    """Chain it belongs to."""
    height: int
    """Height, >= 1."""
    time_ms: int
    """Block time, ms."""
    state_root: bytes
    """State commitment root after the block (32 bytes)."""
    signature: bytes = b""
    """ed25519 signature of :meth:`sign_bytes` by the chain's key."""

    def sign_bytes(self) -> bytes:
        return hashlib.sha256(abi_encode(["string", "string", "uint64", "uint64", "bytes32"],
                                         [HEADER_TAG, self.chain_id, self.height, self.time_ms,
                                          self.state_root])).digest()

    def hash(self) -> bytes:
        """Identity of the header's content (the signature is not part of it)."""
        return self.sign_bytes()

    def signed(self, key: Ed25519Signer) -> SingleSignerHeader:
        return replace(self, signature=key.sign(self.sign_bytes()))

    def encode(self) -> bytes:
        if len(self.state_root) != 32:
            raise CodecError("state root is 32 bytes", got=len(self.state_root))
        return abi_encode(HEADER_ABI, [self.chain_id, self.height, self.time_ms, self.state_root, self.signature])

    @classmethod
    def decode(cls, data: bytes) -> SingleSignerHeader:
        try:
            chain_id, height, time_ms, root, sig = abi_decode(HEADER_ABI, bytes(data), strict=True)
        except Exception as exc:  # eth_abi raises several unrelated types for one cause
            raise CodecError(f"not a single-signer header: {exc}") from exc
        header = cls(chain_id, height, time_ms, root, sig)
        if header.encode() != bytes(data):
            raise CodecError("not the canonical encoding of a single-signer header")
        return header


class SingleSignerClient(LightClient[SingleSignerHeader]):
    """Light client of a single-signer test chain."""

    client_type: ClassVar[str] = "single"

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int, *, pubkey: bytes,
                 finality_depth: int = 0, max_consensus_states: int = 256) -> None:
        super().__init__(client_id, chain_id, trusting_period_ms, max_consensus_states)
        if len(pubkey) != 32:
            raise CodecError("pubkey is 32 bytes", got=len(pubkey))
        self.pubkey = pubkey
        self.finality_depth = finality_depth
        self._latest_height = 0
        self.latest_time_ms = 0
        self._pending: list[tuple[int, bytes, int, bytes]] = []
        """Held headers not yet final: (height, hash, time, root), ascending."""

    @property
    def latest_height(self) -> int:
        return self._latest_height

    # -- headers ------------------------------------------------------------------------------------

    def held_hash(self, height: int) -> bytes | None:
        for h, hh, _, _ in self._pending:
            if h == height:
                return hh
        if height in self.final_heights():
            return self.final_consensus_state(height).header_hash
        return None

    def _check_signature(self, header: SingleSignerHeader) -> None:
        if header.chain_id != self.chain_id:
            raise WrongChainError("header of another chain", expected=self.chain_id, got=header.chain_id)
        ed25519_verify(self.pubkey, header.sign_bytes(), header.signature, what=f"header {header.height} signature")

    def validate_header(self, header: SingleSignerHeader, now_ms: int) -> None:
        self._check_signature(header)
        if header.height <= self.latest_height:
            held = self.held_hash(header.height)
            if held is None:
                raise HeaderError("header below the held ones", expected=f"> {self.latest_height}", got=header.height)
            if held == header.hash():
                raise HeaderError("header already held", got=header.height)
            raise MisbehaviourError(f"two signed headers at height {header.height}", expected=held.hex(),
                                    got=header.hash().hex())
        if header.time_ms < self.latest_time_ms:
            raise HeaderError("header time goes backwards", expected=f">= {self.latest_time_ms}", got=header.time_ms)
        if header.time_ms > now_ms + MAX_DRIFT_MS:
            raise HeaderError("header from the future", expected=f"<= {now_ms + MAX_DRIFT_MS}", got=header.time_ms)

    def apply_header(self, header: SingleSignerHeader) -> None:
        self._pending.append((header.height, header.hash(), header.time_ms, header.state_root))
        self._latest_height = header.height
        self.latest_time_ms = header.time_ms
        while self._pending and self._pending[0][0] <= self.latest_height - self.finality_depth:
            h, hh, ts, root = self._pending.pop(0)
            self._record_final(ConsensusState(h, hh, ts, root))

    def validate_conflicting(self, header_a: SingleSignerHeader, header_b: SingleSignerHeader, now_ms: int) -> None:
        if header_a.hash() == header_b.hash():
            raise HeaderError("evidence headers are the same header")
        self._check_signature(header_a)
        self._check_signature(header_b)

    # -- persistence --------------------------------------------------------------------------------

    def to_state(self) -> bytes:
        return canonical_json({
            "type": self.client_type, "pubkey": self.pubkey.hex(), "finality_depth": self.finality_depth,
            "latest_height": self.latest_height, "latest_time_ms": self.latest_time_ms,
            "pending": [[h, hh.hex(), ts, root.hex()] for h, hh, ts, root in self._pending],
            "base": base_state_to_json(self),
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes) -> SingleSignerClient:
        obj = json.loads(data)
        base = obj["base"]
        if base["client_id"] != client_id:
            raise CodecError("client state of another client", expected=client_id, got=base["client_id"])
        client = cls(client_id, ChainId(base["chain_id"]), int(base["trusting_period_ms"]),
                     pubkey=bytes.fromhex(obj["pubkey"]), finality_depth=int(obj["finality_depth"]),
                     max_consensus_states=int(base["max_consensus_states"]))
        restore_base_state(client, base)
        client._latest_height = int(obj["latest_height"])
        client.latest_time_ms = int(obj["latest_time_ms"])
        client._pending = [(int(h), bytes.fromhex(hh), int(ts), bytes.fromhex(root))
                           for h, hh, ts, root in obj["pending"]]
        return client


def create_single_signer(client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> SingleSignerClient:
    """Init args: ``{pubkey: hex, trusting_period_ms, finality_depth?, max_consensus_states?}``."""
    extra = set(init) - {"pubkey", "trusting_period_ms", "finality_depth", "max_consensus_states"}
    if extra:
        raise CodecError("unknown init args", got=sorted(extra))
    return SingleSignerClient(client_id, chain_id, check_uint("trusting_period_ms", init["trusting_period_ms"]),
                              pubkey=bytes.fromhex(init["pubkey"]),
                              finality_depth=check_uint("finality_depth", init.get("finality_depth", 0)),
                              max_consensus_states=check_uint("max_consensus_states",
                                                              init.get("max_consensus_states", 256)))


def _is_redundant(client: LightClient[Any], header: Any) -> bool:
    # a header the client holds (or one below what it keeps) adds nothing; a *different* header at a
    # held height is not redundant: processing it proves misbehaviour and freezes the client
    assert isinstance(client, SingleSignerClient) and isinstance(header, SingleSignerHeader)
    return header.height <= client.latest_height and client.held_hash(header.height) in (None, header.hash())


SINGLE_SIGNER_TYPE: ClientType = persistent_client_type(
    SingleSignerClient, decode_header=SingleSignerHeader.decode, create=create_single_signer,
    is_redundant=_is_redundant)
"""The relay's adapter for :class:`SingleSignerClient`."""
