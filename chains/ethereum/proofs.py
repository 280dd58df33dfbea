"""Storage proofs of the Ethereum park (chains/ethereum/SPEC.md §E2.1, §E3): slots, proof bytes, verification.

**Slots.** A protocol §5 path names a record of ``ParkBridge``; its storage slot follows Solidity's rule for
``mapping(bytes32 => bytes32)`` at slot ``p``: ``keccak256(mapKey ‖ uint256(p))`` where

* ``commitments/{dst}/{lane}/{seq}`` → ``p = 0``,
  ``mapKey = keccak256(abi.encode(string dst, string lane, uint64 seq))``;
* ``receipts/{src}/{lane}/{seq}`` → ``p = 1``,
  ``mapKey = keccak256(abi.encode(string src, string lane, uint64 seq))``.

Ids must be protocol identifiers (§2.1) and ``seq`` a decimal ``uint64 ≥ 1`` without padding. Any other
path is :class:`~protocol.errors.InvalidProofError`: this chain proves nothing else.

**Proof bytes** are ``rlp([account_proof_nodes, storage_proof_nodes])``: the two node lists of
``eth_getProof`` (root first), each node an RLP string. Bytes that are not that (strict RLP, at most
:data:`MAX_PROOF_NODES` non-empty nodes a list) are :class:`~protocol.errors.CodecError`.

**Verification** walks Ethereum's secure Merkle-Patricia tries (the path of a key is ``keccak256(key)``):
the account trie under a block's ``stateRoot`` from ``keccak256(address)`` to the account
``rlp([nonce, balance, storageRoot, codeHash])``, then the account's storage trie from
``keccak256(slot)`` to the value ``rlp(uint256 without leading zeros)``. The walk is sequential: node
*i* of a list must hash to the reference the walk reached (the root for node 0); a child embedded in its
parent (an encoding under 32 bytes) is followed inline, and may also be listed on its own; a list must
end where the walk ends. A walk ends at the key's leaf (present) or where the key's path leaves the trie
(an empty branch slot, or a leaf or extension for another path: absent). Zero is never stored, so
"absent" is "the value 0" (so is a leaf holding ``rlp(0) = 0x80``: anvil 1.7.1 leaves one behind when a
slot is cleared, and the EVM reads it as 0); an absent account has an empty storage trie. Every failure is
:class:`~protocol.errors.InvalidProofError`.

The verifier is this module's own (about ten times faster than rebuilding a trie from the proof, as
``trie.HexaryTrie.get_from_proof`` does); ``tests/unit/test_eth_proofs.py`` checks it against the
``trie`` package on random tries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chains.ethereum.types import keccak256, rlp_decode, rlp_encode, rlp_item
from protocol.errors import CodecError, InvalidProofError
from protocol.types import UINT64_MAX, check_id

__all__ = [
    "COMMITMENTS_SLOT",
    "EMPTY_TRIE_ROOT",
    "MAX_PROOF_NODES",
    "RECEIPTS_SLOT",
    "Account",
    "EthStorageProof",
    "StorageRootCache",
    "commitment_slot",
    "mapping_key",
    "mapping_slot",
    "mpt_get",
    "mpt_lookup",
    "receipt_slot",
    "storage_slot_of_path",
    "verify_account_proof",
    "verify_membership",
    "verify_non_membership",
    "verify_storage_proof",
]

COMMITMENTS_SLOT = 0
"""Storage slot of ``ParkBridge.commitments`` (SPEC §E2.1)."""
RECEIPTS_SLOT = 1
"""Storage slot of ``ParkBridge.receipts``."""
EMPTY_TRIE_ROOT = keccak256(b"\x80")
"""Root of an empty trie: ``keccak256(rlp(b""))``."""
MAX_PROOF_NODES = 128
"""Most nodes one list of a proof may hold (a 64-nibble path needs at most 65)."""

StorageRootCache = dict[tuple[bytes, bytes, tuple[bytes, ...]], bytes]
"""Verified account proofs: ``(state_root, address, account proof nodes) → storageRoot``."""

_PATH_PREFIX_SLOT = {"commitments": COMMITMENTS_SLOT, "receipts": RECEIPTS_SLOT}
_SEQ_RE = re.compile(r"[1-9][0-9]{0,19}")
_HEX_NIBBLE = {c: int(c, 16) for c in "0123456789abcdef"}


# -- slots ---------------------------------------------------------------------------------------------


def _abi_string_tail(s: bytes) -> bytes:
    return len(s).to_bytes(32, "big") + s + b"\x00" * (-len(s) % 32)


def mapping_key(a: str, b: str, sequence: int) -> bytes:
    """``keccak256(abi.encode(string a, string b, uint64 sequence))``: a record's key in a bridge mapping."""
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= UINT64_MAX:
        raise CodecError("sequence out of range", expected=f"0..{UINT64_MAX}", got=sequence)
    tail_a = _abi_string_tail(a.encode())
    tail_b = _abi_string_tail(b.encode())
    head = (96).to_bytes(32, "big") + (96 + len(tail_a)).to_bytes(32, "big") + sequence.to_bytes(32, "big")
    return keccak256(head + tail_a + tail_b)


def mapping_slot(key: bytes, slot: int) -> bytes:
    """Storage slot of ``mapping[key]`` for a mapping declared at ``slot``: ``keccak256(key ‖ uint256(slot))``."""
    if len(key) != 32:
        raise CodecError("a bytes32 mapping key is 32 bytes", got=len(key))
    return keccak256(key + slot.to_bytes(32, "big"))


def commitment_slot(dst: str, lane: str, sequence: int) -> bytes:
    """Slot of ``commitments[keccak256(abi.encode(dst, lane, sequence))]``."""
    return mapping_slot(mapping_key(dst, lane, sequence), COMMITMENTS_SLOT)


def receipt_slot(src: str, lane: str, sequence: int) -> bytes:
    """Slot of ``receipts[keccak256(abi.encode(src, lane, sequence))]``."""
    return mapping_slot(mapping_key(src, lane, sequence), RECEIPTS_SLOT)


def storage_slot_of_path(path: bytes | str) -> bytes:
    """The bridge storage slot of a protocol §5 path; :class:`InvalidProofError` if the bridge stores no such path."""
    try:
        text = path.decode() if isinstance(path, (bytes, bytearray)) else path
        if not isinstance(text, str):
            raise TypeError(type(path).__name__)
        parts = text.split("/")
        if len(parts) != 4 or parts[0] not in _PATH_PREFIX_SLOT or not _SEQ_RE.fullmatch(parts[3]):
            raise ValueError("not commitments/{dst}/{lane}/{seq} or receipts/{src}/{lane}/{seq}")
        chain, lane = check_id("chain", parts[1]), check_id("lane", parts[2])
        sequence = int(parts[3])
        if sequence > UINT64_MAX:
            raise ValueError("sequence above uint64")
    except (UnicodeDecodeError, TypeError, ValueError, CodecError) as exc:
        raise InvalidProofError(f"path not stored by the Ethereum bridge: {exc}",
                                expected="commitments/{dst}/{lane}/{seq} or receipts/{src}/{lane}/{seq}",
                                got=path) from exc
    return mapping_slot(mapping_key(chain, lane, sequence), _PATH_PREFIX_SLOT[parts[0]])


# -- proof bytes ------------------------------------------------------------------------------------


def _node_list(item: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(item, list):
        raise CodecError(f"{what} must be an RLP list of nodes")
    if len(item) > MAX_PROOF_NODES:
        raise CodecError(f"{what} has too many nodes", expected=f"<= {MAX_PROOF_NODES}", got=len(item))
    for node in item:
        if not isinstance(node, bytes) or not node:
            raise CodecError(f"every node of {what} is a non-empty RLP string")
    return tuple(item)


@dataclass(frozen=True, slots=True)
class EthStorageProof:
    """An ``eth_getProof`` proof of one storage slot: the account proof and the storage proof, root first."""

    account_proof: tuple[bytes, ...]
    """Nodes from the state root to the bridge's account leaf (or to where its path leaves the trie)."""
    storage_proof: tuple[bytes, ...]
    """Nodes from the account's storage root to the slot's leaf (or to where its path leaves the trie)."""

    def encode(self) -> bytes:
        """``rlp([account_proof_nodes, storage_proof_nodes])`` (SPEC §E3)."""
        return rlp_encode([list(self.account_proof), list(self.storage_proof)])

    @classmethod
    def decode(cls, data: bytes) -> EthStorageProof:
        """Strict inverse of :meth:`encode`; :class:`CodecError` if ``data`` is anything else."""
        item = rlp_decode(data)
        if not isinstance(item, list) or len(item) != 2:
            raise CodecError("an Ethereum storage proof is rlp([account_proof, storage_proof])",
                             got=len(item) if isinstance(item, list) else "string")
        return cls(_node_list(item[0], "account proof"), _node_list(item[1], "storage proof"))

    @classmethod
    def from_rpc(cls, result: Mapping[str, Any], slot: bytes | None = None) -> EthStorageProof:
        """From an ``eth_getProof`` result (raw JSON or web3.py's): the account proof and the storage proof of
        ``slot`` (or of the only slot asked for, when ``slot`` is ``None``)."""
        entries = list(result["storageProof"])
        if slot is not None:
            want = int.from_bytes(slot, "big")
            entries = [e for e in entries if _rpc_int(e["key"]) == want]
        if len(entries) != 1:
            raise CodecError("eth_getProof result does not hold exactly one proof of the slot", got=len(entries))
        return cls(tuple(_rpc_bytes(n) for n in result["accountProof"]),
                   tuple(_rpc_bytes(n) for n in entries[0]["proof"]))


def _rpc_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise CodecError("proof node is not 0x-prefixed hex", got=value)


def _rpc_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return int.from_bytes(value, "big")
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value[2:] or "0", 16)
        except ValueError:
            pass
    raise CodecError("storage key is not a hex quantity", got=value)


def _as_proof(proof: Any) -> EthStorageProof:
    if isinstance(proof, EthStorageProof):
        return proof
    if isinstance(proof, (bytes, bytearray, memoryview)):
        return EthStorageProof.decode(bytes(proof))
    raise CodecError("an Ethereum storage proof is bytes or an EthStorageProof", got=type(proof).__name__)


# -- Merkle-Patricia walk ----------------------------------------------------------------------------


class _Embedded(bytes):
    """The raw RLP of a child node embedded in its parent (encoding under 32 bytes)."""

    __slots__ = ()


def _node_items(raw: bytes) -> list[bytes] | None:
    """A node's items (strings as payloads, embedded lists as :class:`_Embedded` raw RLP); ``None`` for the
    empty node ``0x80``. Raises :class:`InvalidProofError` for anything but a canonical branch or 2-item node."""
    end = len(raw)
    try:
        is_list, start, stop = rlp_item(raw, 0, end)
        if stop != end:
            raise CodecError("trailing bytes after a trie node")
        if not is_list:
            if stop == start:
                return None
            raise CodecError("a trie node is an RLP list")
        items: list[bytes] = []
        pos = start
        while pos < stop:
            sub_list, s, e = rlp_item(raw, pos, stop)
            items.append(_Embedded(raw[pos:e]) if sub_list else raw[s:e])
            pos = e
    except CodecError as exc:
        raise InvalidProofError(f"malformed trie node: {exc.message}", got=raw.hex()) from exc
    if len(items) != 17 and len(items) != 2:
        raise InvalidProofError("a trie node has 17 (branch) or 2 (leaf, extension) items", got=len(items))
    return items


def mpt_lookup(root: bytes, key: bytes, nodes: Sequence[bytes]) -> bytes | None:
    """The value stored under ``key`` in the *secure* trie of ``root`` (trie key ``keccak256(key)``), as proven
    by ``nodes``; ``None`` when the proof shows the key absent (see :func:`mpt_get`)."""
    return mpt_get(root, keccak256(key), nodes)


def mpt_get(root: bytes, trie_key: bytes, nodes: Sequence[bytes]) -> bytes | None:
    """The value at the 32-byte ``trie_key`` in the trie of ``root``, as proven by ``nodes``; ``None`` when the
    proof shows it absent. :class:`InvalidProofError` unless the proof is exactly the walk along the key's path
    (module docstring)."""
    if len(trie_key) != 32:
        raise InvalidProofError("a trie key is 32 bytes", got=len(trie_key))
    path = trie_key.hex()
    n = len(nodes)
    if n == 0:
        if root == EMPTY_TRIE_ROOT:
            return None
        raise InvalidProofError("empty proof for a non-empty trie", got=root.hex())
    i = 0
    pos = 0
    ref = root
    result: bytes | None
    while True:
        if isinstance(ref, _Embedded):
            raw: bytes = ref
            if i < n and nodes[i] == raw:  # an embedded node listed on its own as well
                i += 1
        else:
            if i >= n:
                raise InvalidProofError("the proof ends before the walk along the key's path", expected=i + 1, got=n)
            raw = nodes[i]
            i += 1
            if keccak256(raw) != ref:
                raise InvalidProofError(f"proof node {i - 1} does not hash to its reference", expected=ref.hex(),
                                        got=keccak256(raw).hex())
        items = _node_items(raw)
        if items is None:
            if i != 1 or pos != 0:
                raise InvalidProofError("the empty node below the root of a trie")
            result = None
            break
        if len(items) == 17:
            if pos >= 64 or items[16]:
                raise InvalidProofError("a branch node where a 32-byte key's path has no room for one")
            child = items[_HEX_NIBBLE[path[pos]]]
            pos += 1
            if not child:
                result = None
                break
            ref = _child_ref(child)
            continue
        encoded_path, second = items
        hp = encoded_path.hex()
        if isinstance(encoded_path, _Embedded) or not hp:
            raise InvalidProofError("a leaf or extension node without a path")
        flag = hp[0]
        if flag in "02":
            if hp[1:2] != "0":
                raise InvalidProofError("hex-prefix path with a non-zero pad nibble", got=hp)
            segment = hp[2:]
        elif flag in "13":
            segment = hp[1:]
        else:
            raise InvalidProofError("hex-prefix path with an unknown flag", got=hp)
        if flag in "23":  # leaf
            if len(segment) != 64 - pos:
                raise InvalidProofError("a leaf whose path does not end a 32-byte key", expected=64 - pos,
                                        got=len(segment))
            if isinstance(second, _Embedded) or not second:
                raise InvalidProofError("a leaf without a value")
            result = second if path.endswith(segment) else None
            break
        if not segment:
            raise InvalidProofError("an extension node with an empty path")
        if not path.startswith(segment, pos):
            result = None
            break
        pos += len(segment)
        if not second:
            raise InvalidProofError("an extension node without a child")
        ref = _child_ref(second)
    if i != n:
        raise InvalidProofError("the proof has nodes beyond the end of the walk", expected=i, got=n)
    return result


def _child_ref(child: bytes) -> bytes:
    if isinstance(child, _Embedded) or len(child) == 32:
        return child
    raise InvalidProofError("a child reference is a 32-byte hash or an embedded node", got=len(child))


# -- accounts and storage -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """An account as the state trie stores it."""

    nonce: int
    balance: int
    storage_root: bytes
    """Root of the account's storage trie."""
    code_hash: bytes


def _canonical_uint(raw: Any, bits: int, what: str) -> int:
    if not isinstance(raw, bytes) or raw[:1] == b"\x00" or len(raw) * 8 > bits:
        raise InvalidProofError(f"{what} is not a canonical uint{bits}")
    return int.from_bytes(raw, "big")


def verify_account_proof(state_root: bytes, address: bytes, account_proof: Sequence[bytes]) -> Account | None:
    """The account at ``address`` under ``state_root`` (``None``: proven absent). :class:`InvalidProofError`
    unless the proof is valid and the account well-formed."""
    if len(address) != 20:
        raise InvalidProofError("an address is 20 bytes", got=len(address))
    leaf = mpt_lookup(state_root, address, account_proof)
    if leaf is None:
        return None
    try:
        fields = rlp_decode(leaf)
    except CodecError as exc:
        raise InvalidProofError(f"malformed account: {exc.message}") from exc
    if not isinstance(fields, list) or len(fields) != 4:
        raise InvalidProofError("an account is rlp([nonce, balance, storageRoot, codeHash])")
    nonce, balance, storage_root, code_hash = fields
    if not isinstance(storage_root, bytes) or len(storage_root) != 32 or not isinstance(code_hash, bytes) \
            or len(code_hash) != 32:
        raise InvalidProofError("an account's storageRoot and codeHash are 32 bytes")
    return Account(_canonical_uint(nonce, 64, "account nonce"), _canonical_uint(balance, 256, "account balance"),
                   storage_root, code_hash)


def verify_storage_proof(storage_root: bytes, slot: bytes, storage_proof: Sequence[bytes]) -> int:
    """The value of storage ``slot`` under ``storage_root`` (0 when proven absent); :class:`InvalidProofError`."""
    if len(slot) != 32:
        raise InvalidProofError("a storage slot is 32 bytes", got=len(slot))
    leaf = mpt_lookup(storage_root, slot, storage_proof)
    if leaf is None:
        return 0
    try:
        value = rlp_decode(leaf)
    except CodecError as exc:
        raise InvalidProofError(f"malformed storage value: {exc.message}") from exc
    if not isinstance(value, bytes):
        raise InvalidProofError("a stored value is a uint256, not a list")
    if not value:  # rlp(0): anvil keeps a cleared slot as a leaf holding 0 until the account's trie is rebuilt
        return 0
    return _canonical_uint(value, 256, "stored value")


def _stored_value(state_root: bytes, address: bytes, path: bytes | str, proof: Any,
                  storage_roots: StorageRootCache | None) -> int:
    slot = storage_slot_of_path(path)
    p = _as_proof(proof)
    storage_root: bytes | None = None
    cache_key = (state_root, address, p.account_proof)
    if storage_roots is not None:
        storage_root = storage_roots.get(cache_key)
    if storage_root is None:
        account = verify_account_proof(state_root, address, p.account_proof)
        storage_root = EMPTY_TRIE_ROOT if account is None else account.storage_root
        if storage_roots is not None:
            storage_roots[cache_key] = storage_root
    return verify_storage_proof(storage_root, slot, p.storage_proof)


def verify_membership(state_root: bytes, address: bytes, path: bytes | str, value: bytes, proof: Any, *,
                      storage_roots: StorageRootCache | None = None) -> None:
    """Raise unless the bridge at ``address`` stores the 32-byte ``value`` at ``path`` under ``state_root``.

    ``proof`` is E3 proof bytes or an :class:`EthStorageProof` (:class:`CodecError` if neither decodes).
    ``storage_roots``, if given, caches verified ``(state_root, address, account proof) → storageRoot`` (the caller
    bounds it): an account proof already verified against that root is not walked again.
    """
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidProofError("a bridge record's value is 32 bytes", expected=32,
                                got=len(value) if isinstance(value, bytes) else type(value).__name__)
    want = int.from_bytes(value, "big")
    if want == 0:
        raise InvalidProofError("zero is never stored (it reads as absent): prove non-membership instead")
    got = _stored_value(state_root, address, path, proof, storage_roots)
    if got != want:
        raise InvalidProofError(f"stored value of {path!r} differs" if got else f"{path!r} is absent",
                                expected=value.hex(), got=got.to_bytes(32, "big").hex())


def verify_non_membership(state_root: bytes, address: bytes, path: bytes | str, proof: Any, *,
                          storage_roots: StorageRootCache | None = None) -> None:
    """Raise unless the bridge at ``address`` stores nothing (0) at ``path`` under ``state_root``."""
    got = _stored_value(state_root, address, path, proof, storage_roots)
    if got != 0:
        raise InvalidProofError(f"{path!r} is present", expected=0, got=got.to_bytes(32, "big").hex())
