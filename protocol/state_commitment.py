"""The state commitment: a compact sparse Merkle tree over SHA-256 (SPEC.md §4).

One implementation serves the relay chain, the DPoS and the PoC parks. A key's path is the 256 bits of
``sha256(key)``, read from the most significant bit. A subtree holding exactly one leaf is that leaf
(as in Diem's Jellyfish tree), so a path is about log2(n) long, not 256. Hashing is domain-separated
as in RFC 9162: a leaf can never be read as an inner node.

    leaf  = sha256(0x00 || key_hash || sha256(value))
    inner = sha256(0x01 || left || right)
    empty = 32 zero bytes (no preimage is known, so no subtree can claim to be empty)

The tree is persistent: :meth:`SparseMerkleTree.set` returns a new tree that shares all untouched
nodes with the old, so a node keeps the trees of recent heights and proves against any of them.
"""

from __future__ import annotations

import bisect
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from protocol.errors import CodecError, InvalidProofError

__all__ = [
    "EMPTY_ROOT",
    "Proof",
    "SparseMerkleTree",
    "leaf_hash",
    "verify_membership",
    "verify_membership_encoded",
    "verify_non_membership",
]

EMPTY_ROOT = bytes(32)
_LEAF = b"\x00"
_INNER = b"\x01"
_sha = hashlib.sha256
_decompress = zlib.decompress
_IS_32 = (32).__eq__
_PACK_WBITS = 13
_PACK_MEM_LEVEL = 5
"""The deflate state a packed leaf is compressed with: an 8 KiB window (larger than the values packed: ABI records of
a few hundred bytes, packets as 1,536 bytes of hex) and 48 KiB of state in all. ``zlib.compress`` uses a 32 KiB
window and memory level 8: 256 KiB that glibc, under the heap settings every node runs with (a trim threshold of
128 KiB, ``chains.common.heap.tune_heap``), takes from the system and gives back on every call (``brk`` both ways, the
pages faulted in again): ~50 us a value against ~6 us (``bench/state_tree.py``). Any window decompresses with
``zlib.decompress``'s default; packed bytes never leave memory."""


def _pack(value: bytes) -> bytes:
    """``value`` deflated at level 1 in a zlib stream (:data:`_PACK_WBITS`)."""
    c = zlib.compressobj(1, zlib.DEFLATED, _PACK_WBITS, _PACK_MEM_LEVEL)
    return c.compress(value) + c.flush()


def leaf_hash(key_hash: bytes, value_hash: bytes) -> bytes:
    """Hash of a leaf holding ``value`` (by its hash) under ``key`` (by its hash)."""
    return _sha(_LEAF + key_hash + value_hash).digest()


class _Leaf:
    """A key and its value: a :class:`_PlainLeaf`, or a :class:`_PackedLeaf` for a large compressible value. Only what
    a read or a walk needs is kept; the value's hash is recomputed for a proof. A relay validator holds one leaf per
    settled packet (its outcome record, packed), so each field costs ~65 bytes per packet (issue 16's footprint)."""

    __slots__ = ()

    key: bytes
    key_hash: bytes
    value: bytes
    _hash: bytes
    """The leaf's hash, as :class:`_Inner`'s (never None for a leaf)."""

    @property
    def hash(self) -> bytes:
        return self._hash

    @property
    def value_hash(self) -> bytes:
        return _sha(self.value).digest()


class _PlainLeaf(_Leaf):
    """A leaf that keeps its value, its key's hash and its own hash (computed once)."""

    __slots__ = ("_hash", "key", "key_hash", "value")

    def __init__(self, key: bytes, key_hash: bytes, value: bytes) -> None:
        self.key = key
        self.key_hash = key_hash
        self.value = value
        self._hash = leaf_hash(key_hash, _sha(value).digest())


class _PackedLeaf(_Leaf):
    """A leaf whose value is kept zlib-compressed (:func:`_leaf` decides), and nothing else but its key: the key's
    hash, the value and the leaf's hash are recomputed when read (a walk that ends here, a write beside it, a proof).
    Such values are the settled records (relay outcome records, park acks), written once and read seldom, so a walk
    to one costs one or two SHA-256s and a decompression more, and the leaf 48 bytes and its value instead of ~200."""

    __slots__ = ("_packed", "key")

    def __init__(self, key: bytes, packed: bytes) -> None:
        self.key = key
        self._packed = packed

    @property
    def key_hash(self) -> bytes:  # type: ignore[override]
        return _sha(self.key).digest()

    @property
    def value(self) -> bytes:  # type: ignore[override]
        return _decompress(self._packed)

    @property
    def _hash(self) -> bytes:  # type: ignore[override]
        return leaf_hash(self.key_hash, self.value_hash)


PACK_FROM = 256
"""Values of this many bytes or more are kept compressed when that saves a quarter of them: the relay's records are
ABI-encoded, mostly zero padding (an outcome record with its payees: 384 -> 116 bytes)."""


def _leaf(key: bytes, key_hash: bytes, value: bytes) -> _Leaf:
    if len(value) >= PACK_FROM:
        packed = _pack(value)
        if 4 * len(packed) <= 3 * len(value):
            return _PackedLeaf(key, packed)
    return _PlainLeaf(key, key_hash, value)


class _Inner:
    """An inner node. Its hash is computed when first asked for (and kept: nodes are immutable), so the
    nodes that a run of writes creates and replaces before anyone reads a root are never hashed: a block of
    writes hashes each node of its final tree once, as a batch update would."""

    __slots__ = ("_hash", "left", "right")

    def __init__(self, left: _Node, right: _Node) -> None:
        self.left = left
        self.right = right
        self._hash: bytes | None = None

    @property
    def hash(self) -> bytes:
        h = self._hash
        return h if h is not None else _hash_new(self)


def _hash_new(node: _Inner) -> bytes:
    """Hash ``node`` and every not yet hashed node under it (depth at most 256: recursion is bounded)."""
    left, right = node.left, node.right
    lh = EMPTY_ROOT if left is None else (left._hash or _hash_new(left))  # type: ignore[arg-type]
    rh = EMPTY_ROOT if right is None else (right._hash or _hash_new(right))  # type: ignore[arg-type]
    h = node._hash = _sha(_INNER + lh + rh).digest()
    return h


_Node = _Leaf | _Inner | None


_BITS = tuple(tuple((byte >> (7 - i)) & 1 for i in range(8)) for byte in range(256))
"""The bits of a byte, most significant first."""


def _bit(key_int: int, depth: int) -> int:
    return (key_int >> (255 - depth)) & 1


@dataclass(frozen=True, slots=True)
class Proof:
    """A membership or non-membership proof.

    ``siblings`` are the hashes beside the path from the root down, one per level. ``leaf`` is the leaf
    where the path ends: ``(key_hash, value_hash)`` of the proven key for membership; for
    non-membership either ``None`` (the path ends in an empty subtree) or another key's leaf whose
    hash shares the path's prefix (that key's one-leaf subtree holds no other key).
    """

    siblings: tuple[bytes, ...]
    """Sibling hashes from depth 0 (under the root) down; at most 256."""
    leaf: tuple[bytes, bytes] | None
    """``(key_hash, value_hash)`` of the leaf the path ends in, or ``None`` for an empty subtree."""

    def encode(self) -> bytes:
        """``u16 n || n*32 siblings || flag(0|1) || [key_hash || value_hash]``."""
        out = [len(self.siblings).to_bytes(2, "big"), *self.siblings]
        if self.leaf is None:
            out.append(b"\x00")
        else:
            out += [b"\x01", self.leaf[0], self.leaf[1]]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        if len(data) < 3:
            raise CodecError("proof too short", got=len(data))
        n = int.from_bytes(data[:2], "big")
        if n > 256:
            raise CodecError("proof deeper than 256", got=n)
        end = 2 + 32 * n
        if len(data) < end + 1:
            raise CodecError("proof truncated", expected=end + 1, got=len(data))
        siblings = tuple([data[i : i + 32] for i in range(2, end, 32)])
        flag = data[end]
        if flag == 0 and len(data) == end + 1:
            return cls(siblings, None)
        if flag == 1 and len(data) == end + 65:
            return cls(siblings, (data[end + 1 : end + 33], data[end + 33 : end + 65]))
        raise CodecError("malformed proof leaf", got=data[end:].hex())


def _root_from(path_int: int, start: bytes, siblings: tuple[bytes, ...]) -> bytes:
    h = start
    sha, inner = _sha, _INNER
    shift = 256 - len(siblings)  # the bit of the deepest level first
    for sib in reversed(siblings):
        if (path_int >> shift) & 1:
            h = sha(inner + sib + h).digest()
        else:
            h = sha(inner + h + sib).digest()
        shift += 1
    return h


def _check_shape(proof: Proof) -> None:
    if len(proof.siblings) > 256 or not all(map(_IS_32, map(len, proof.siblings))):
        raise InvalidProofError("proof siblings must be at most 256 hashes of 32 bytes")
    if proof.leaf is not None and (len(proof.leaf[0]) != 32 or len(proof.leaf[1]) != 32):
        raise InvalidProofError("proof leaf must be two 32-byte hashes")


def verify_membership(root: bytes, key: bytes, value: bytes, proof: Proof) -> None:
    """Raise :class:`InvalidProofError` unless ``key`` maps to ``value`` in the tree with ``root``."""
    _check_shape(proof)
    kh = _sha(key).digest()
    vh = _sha(value).digest()
    if proof.leaf is None or proof.leaf[0] != kh:
        raise InvalidProofError("membership proof does not end at the key's leaf", expected=kh.hex(),
                                got=None if proof.leaf is None else proof.leaf[0].hex())
    if proof.leaf[1] != vh:
        raise InvalidProofError("membership proof is for another value", expected=vh.hex(), got=proof.leaf[1].hex())
    got = _root_from(int.from_bytes(kh, "big"), leaf_hash(kh, vh), proof.siblings)
    if got != root:
        raise InvalidProofError("membership proof does not reach the root", expected=root.hex(), got=got.hex())


def verify_membership_encoded(root: bytes, key: bytes, value: bytes, data: bytes) -> None:
    """``verify_membership(root, key, value, Proof.decode(data))`` without building the :class:`Proof` (phase 2
    verifies a proof per packet): the same checks in the same order, raising the same errors."""
    # Proof.decode
    size = len(data)
    if size < 3:
        raise CodecError("proof too short", got=size)
    n = int.from_bytes(data[:2], "big")
    if n > 256:
        raise CodecError("proof deeper than 256", got=n)
    end = 2 + 32 * n
    if size < end + 1:
        raise CodecError("proof truncated", expected=end + 1, got=size)
    flag = data[end]
    leaf: tuple[bytes, bytes] | None
    if flag == 0 and size == end + 1:
        leaf = None
    elif flag == 1 and size == end + 65:
        leaf = (data[end + 1 : end + 33], data[end + 33 : end + 65])
    else:
        raise CodecError("malformed proof leaf", got=data[end:].hex())
    # _check_shape: true of every decoded proof (at most 256 siblings, each a whole 32-byte slice of data, and a leaf
    # of two 32-byte slices), so it has nothing to check here; the membership checks of verify_membership follow
    kh = _sha(key).digest()
    vh = _sha(value).digest()
    if leaf is None or leaf[0] != kh:
        raise InvalidProofError("membership proof does not end at the key's leaf", expected=kh.hex(),
                                got=None if leaf is None else leaf[0].hex())
    if leaf[1] != vh:
        raise InvalidProofError("membership proof is for another value", expected=vh.hex(), got=leaf[1].hex())
    # _root_from over the siblings where they lie in data (the deepest, last, first)
    path_int = int.from_bytes(kh, "big")
    h = leaf_hash(kh, vh)
    sha, inner = _sha, _INNER
    shift = 256 - n
    while end > 2:
        sib = data[end - 32 : end]
        end -= 32
        if (path_int >> shift) & 1:
            h = sha(inner + sib + h).digest()
        else:
            h = sha(inner + h + sib).digest()
        shift += 1
    if h != root:
        raise InvalidProofError("membership proof does not reach the root", expected=root.hex(), got=h.hex())


def verify_non_membership(root: bytes, key: bytes, proof: Proof) -> None:
    """Raise :class:`InvalidProofError` unless ``key`` is absent from the tree with ``root``."""
    _check_shape(proof)
    kh = _sha(key).digest()
    ki = int.from_bytes(kh, "big")
    depth = len(proof.siblings)
    if proof.leaf is None:
        start = EMPTY_ROOT
    else:
        other, vh = proof.leaf
        if other == kh:
            raise InvalidProofError("non-membership proof ends at the key itself: the key is present")
        oi = int.from_bytes(other, "big")
        if depth and (oi ^ ki) >> (256 - depth):
            raise InvalidProofError("non-membership proof ends at a leaf off the key's path")
        start = leaf_hash(other, vh)
    got = _root_from(ki, start, proof.siblings)
    if got != root:
        raise InvalidProofError("non-membership proof does not reach the root", expected=root.hex(), got=got.hex())


class SparseMerkleTree:
    """An immutable tree; updates return a new tree sharing structure with the old one."""

    __slots__ = ("_root", "_size")

    def __init__(self, _root: _Node = None, _size: int = 0) -> None:
        self._root = _root
        self._size = _size

    @property
    def root(self) -> bytes:
        """The 32-byte root hash (``EMPTY_ROOT`` when empty)."""
        return self._root.hash if self._root is not None else EMPTY_ROOT

    def __len__(self) -> int:
        return self._size

    @classmethod
    def from_items(cls, items: Iterable[tuple[bytes, bytes]]) -> SparseMerkleTree:
        """Build a tree from (key, value) pairs in one pass; the last value of a repeated key wins."""
        by_hash: dict[bytes, _Leaf] = {}
        for key, value in items:
            kh = _sha(key).digest()
            by_hash[kh] = _leaf(key, kh, value)
        leaves, ints = _sorted_leaves(by_hash)
        return cls(_build(leaves, ints, 0, len(leaves), 0), len(leaves))

    def get(self, key: bytes) -> bytes | None:
        kh = _sha(key).digest()
        node = self._root
        if node.__class__ is _Inner:
            inner = _Inner
            for byte in kh:  # the path: the key hash's bits, most significant first
                for bit in _BITS[byte]:
                    node = node.right if bit else node.left
                    if node.__class__ is not inner:
                        break
                else:
                    continue
                break
        if node is not None and node.key_hash == kh:  # type: ignore[union-attr]
            return node.value  # type: ignore[union-attr]
        return None

    def set(self, key: bytes, value: bytes) -> SparseMerkleTree:
        """A new tree with ``key`` mapped to ``value``."""
        kh = _sha(key).digest()
        root, added = _insert_one(self._root, 0, _leaf(key, kh, value), int.from_bytes(kh, "big"))
        return SparseMerkleTree(root, self._size + added)

    def set_many(self, items: Iterable[tuple[bytes, bytes]]) -> SparseMerkleTree:
        """A new tree with every ``(key, value)`` written (the last value of a repeated key wins).

        The same tree as :meth:`set` one pair at a time (the tree's shape depends only on its keys), but
        each new inner node is built once: writes that share a path share its new nodes."""
        by_hash: dict[bytes, _Leaf] = {}
        for key, value in items:
            kh = _sha(key).digest()
            by_hash[kh] = _leaf(key, kh, value)
        if not by_hash:
            return self
        leaves, ints = _sorted_leaves(by_hash)
        root, added = _insert_many(self._root, 0, leaves, ints, 0, len(leaves))
        return SparseMerkleTree(root, self._size + added)

    def delete(self, key: bytes) -> SparseMerkleTree:
        """A new tree without ``key`` (the same tree if it was absent)."""
        kh = _sha(key).digest()
        root, removed = _delete(self._root, 0, int.from_bytes(kh, "big"), kh)
        return SparseMerkleTree(root, self._size - removed) if removed else self

    def delete_many(self, keys: Iterable[bytes]) -> SparseMerkleTree:
        """A new tree without any of ``keys`` (absent ones ignored): the same tree as :meth:`delete` one key at a
        time, but each inner node on the deleted keys' paths is rebuilt once, not once per key (a block's settlements
        delete hundreds of records)."""
        hashes = sorted({_sha(key).digest() for key in keys})
        if not hashes:
            return self
        ints = [int.from_bytes(kh, "big") for kh in hashes]
        root, removed = _delete_many(self._root, 0, hashes, ints, 0, len(hashes))
        return SparseMerkleTree(root, self._size - removed) if removed else self

    def prove(self, key: bytes) -> Proof:
        """A membership proof if ``key`` is present, else a non-membership proof."""
        kh = _sha(key).digest()
        ki = int.from_bytes(kh, "big")
        siblings: list[bytes] = []
        node = self._root
        depth = 0
        while isinstance(node, _Inner):
            if _bit(ki, depth):
                sib, node = node.left, node.right
            else:
                sib, node = node.right, node.left
            siblings.append(sib.hash if sib is not None else EMPTY_ROOT)
            depth += 1
        leaf = None if node is None else (node.key_hash, node.value_hash)
        return Proof(tuple(siblings), leaf)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs in key-hash order."""
        stack: list[_Node] = [self._root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Leaf):
                yield node.key, node.value
            elif isinstance(node, _Inner):
                stack.append(node.right)
                stack.append(node.left)


def _sorted_leaves(by_hash: dict[bytes, _Leaf]) -> tuple[list[_Leaf], list[int]]:
    """The leaves in key-hash order and their key hashes as integers, from the hashes already computed (a packed
    leaf would recompute its own)."""
    hashes = sorted(by_hash)
    return [by_hash[kh] for kh in hashes], [int.from_bytes(kh, "big") for kh in hashes]


def _build(leaves: list[_Leaf], ints: list[int], lo: int, hi: int, depth: int) -> _Node:
    n = hi - lo
    if n == 0:
        return None
    if n == 1:
        return leaves[lo]
    a = _split_point(ints, lo, hi, depth)
    return _Inner(_build(leaves, ints, lo, a, depth + 1), _build(leaves, ints, a, hi, depth + 1))


def _split_point(ints: list[int], lo: int, hi: int, depth: int) -> int:
    """The first index in ``ints[lo:hi]`` whose bit at ``depth`` is 1 (the keys are sorted, so the keys that go
    left and right of an inner node at ``depth`` split at one point); ``hi`` if none."""
    a, b = lo, hi
    shift = 255 - depth
    while a < b:
        mid = (a + b) // 2
        if (ints[mid] >> shift) & 1:
            b = mid
        else:
            a = mid + 1
    return a


def _insert_one(node: _Node, depth: int, leaf: _Leaf, ki: int) -> tuple[_Node, int]:
    """``node`` (at ``depth`` on ``leaf``'s path) with ``leaf`` written; and 1 if its key is new, else 0."""
    path: list[tuple[_Inner, int]] = []
    shift = 255 - depth
    while isinstance(node, _Inner):
        bit = (ki >> shift) & 1
        path.append((node, bit))
        node = node.right if bit else node.left
        shift -= 1
    new: _Node
    if node is None:
        new, added = leaf, 1
    elif (node_ki := int.from_bytes(node.key_hash, "big")) == ki:  # read once: a packed leaf recomputes it
        new, added = leaf, 0
    else:
        new, added = _split(node, node_ki, leaf, ki, 255 - shift), 1
    for parent, bit in reversed(path):
        new = _Inner(parent.left, new) if bit else _Inner(new, parent.right)
    return new, added


def _insert_many(node: _Node, depth: int, leaves: list[_Leaf], ints: list[int], lo: int, hi: int) -> tuple[_Node, int]:
    """``node`` with ``leaves[lo:hi]`` (sorted by key hash, distinct, all under ``node``'s path) written."""
    if lo == hi:
        return node, 0
    if node is None:
        return _build(leaves, ints, lo, hi, depth), hi - lo
    if hi - lo == 1:
        return _insert_one(node, depth, leaves[lo], ints[lo])
    if isinstance(node, _Leaf):
        sub, sub_ints = leaves[lo:hi], ints[lo:hi]
        if any(lf.key_hash == node.key_hash for lf in sub):
            return _build(sub, sub_ints, 0, len(sub), depth), hi - lo - 1
        ni = int.from_bytes(node.key_hash, "big")
        at = bisect.bisect_left(sub_ints, ni)
        sub.insert(at, node)
        sub_ints.insert(at, ni)
        return _build(sub, sub_ints, 0, len(sub), depth), hi - lo
    a = _split_point(ints, lo, hi, depth)
    left, added_l = _insert_many(node.left, depth + 1, leaves, ints, lo, a)
    right, added_r = _insert_many(node.right, depth + 1, leaves, ints, a, hi)
    return _Inner(left, right), added_l + added_r


def _split(a: _Leaf, ai: int, b: _Leaf, bi: int, depth: int) -> _Inner:
    # two distinct keys always differ somewhere in 256 bits
    ba, bb = _bit(ai, depth), _bit(bi, depth)
    if ba != bb:
        return _Inner(a, b) if ba == 0 else _Inner(b, a)
    child = _split(a, ai, b, bi, depth + 1)
    return _Inner(child, None) if ba == 0 else _Inner(None, child)


def _delete_many(node: _Node, depth: int, hashes: list[bytes], ints: list[int], lo: int, hi: int
                 ) -> tuple[_Node, int]:
    """``node`` (at ``depth``) without the keys hashed ``hashes[lo:hi]`` (sorted, distinct, all under its path); and
    how many of them it held. Compacted as :func:`_delete` does, bottom up: a subtree left with one leaf is that
    leaf."""
    if lo == hi or node is None:
        return node, 0
    if isinstance(node, _Leaf):
        kh = node.key_hash
        at = bisect.bisect_left(hashes, kh, lo, hi)
        return (None, 1) if at < hi and hashes[at] == kh else (node, 0)
    if hi - lo == 1:
        return _delete(node, depth, ints[lo], hashes[lo])
    a = _split_point(ints, lo, hi, depth)
    left, removed_l = _delete_many(node.left, depth + 1, hashes, ints, lo, a)
    right, removed_r = _delete_many(node.right, depth + 1, hashes, ints, a, hi)
    removed = removed_l + removed_r
    if not removed:
        return node, 0
    if left is None and (right is None or isinstance(right, _Leaf)):
        return right, removed
    if right is None and isinstance(left, _Leaf):
        return left, removed
    return _Inner(left, right), removed


def _delete(node: _Node, depth: int, ki: int, kh: bytes) -> tuple[_Node, int]:
    if node is None:
        return None, 0
    if isinstance(node, _Leaf):
        return (None, 1) if node.key_hash == kh else (node, 0)
    if _bit(ki, depth):
        right, removed = _delete(node.right, depth + 1, ki, kh)
        left = node.left
    else:
        left, removed = _delete(node.left, depth + 1, ki, kh)
        right = node.right
    if not removed:
        return node, 0
    # keep the tree compact: a subtree with one leaf is that leaf
    if left is None and (right is None or isinstance(right, _Leaf)):
        return right, 1
    if right is None and isinstance(left, _Leaf):
        return left, 1
    return _Inner(left, right), 1
