"""The compact sparse Merkle tree (SPEC.md §4): shape, roots, proofs and every way to tamper with a proof."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

import pytest

from protocol.errors import CodecError, InvalidProofError
from protocol.state_commitment import (
    EMPTY_ROOT,
    Proof,
    SparseMerkleTree,
    leaf_hash,
    verify_membership,
    verify_non_membership,
)


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def inner(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def kh_int(key: bytes) -> int:
    return int.from_bytes(sha(key), "big")


def random_items(rng: random.Random, n: int) -> dict[bytes, bytes]:
    return {rng.randbytes(rng.randint(0, 40)): rng.randbytes(rng.randint(0, 40)) for _ in range(n)}


def shared_prefix_keys(bits: int, count: int = 2) -> list[bytes]:
    """``count`` keys whose hashes share their first ``bits`` bits."""
    groups: dict[int, list[bytes]] = {}
    i = 0
    while True:
        key = f"k{i}".encode()
        group = groups.setdefault(kh_int(key) >> (256 - bits), [])
        group.append(key)
        if len(group) == count:
            return group
        i += 1


# --- roots and shape ---------------------------------------------------------------------------------------


def test_known_answers() -> None:
    assert SparseMerkleTree().root == EMPTY_ROOT == bytes(32)
    one = SparseMerkleTree().set(b"a", b"1")
    assert one.root == leaf_hash(sha(b"a"), sha(b"1")) == sha(b"\x00" + sha(b"a") + sha(b"1"))
    two = one.set(b"b", b"2")
    la, lb = leaf_hash(sha(b"a"), sha(b"1")), leaf_hash(sha(b"b"), sha(b"2"))
    # sha256("a") starts with bit 1, sha256("b") with bit 0: they split at the root
    assert kh_int(b"a") >> 255 == 1 and kh_int(b"b") >> 255 == 0
    assert two.root == inner(lb, la)


def test_shared_prefix_makes_a_chain_with_empty_siblings() -> None:
    a, b = shared_prefix_keys(6)
    tree = SparseMerkleTree.from_items([(a, b"A"), (b, b"B")])
    common = 0
    while (kh_int(a) >> (255 - common)) & 1 == (kh_int(b) >> (255 - common)) & 1:
        common += 1
    proof = tree.prove(a)
    assert len(proof.siblings) == common + 1
    assert all(s == EMPTY_ROOT for s in proof.siblings[:common])
    assert proof.siblings[common] == leaf_hash(sha(b), sha(b"B"))


@pytest.mark.parametrize("seed", range(8))
def test_incremental_equals_bulk_in_any_order(seed: int) -> None:
    rng = random.Random(seed)
    items = random_items(rng, rng.randint(0, 120))
    bulk = SparseMerkleTree.from_items(items.items())
    keys = list(items)
    rng.shuffle(keys)
    tree = SparseMerkleTree()
    for k in keys:
        tree = tree.set(k, items[k])
    assert tree.root == bulk.root
    assert len(tree) == len(bulk) == len(items)
    assert dict(tree.items()) == items
    for k, v in items.items():
        assert tree.get(k) == v


@pytest.mark.parametrize("seed", range(8))
def test_delete_collapses_back_to_the_bulk_built_root(seed: int) -> None:
    rng = random.Random(100 + seed)
    items = random_items(rng, 80)
    tree = SparseMerkleTree.from_items(items.items())
    keys = list(items)
    rng.shuffle(keys)
    removed = set(keys[: rng.randint(1, len(keys))])
    for k in removed:
        tree = tree.delete(k)
        assert tree.get(k) is None
    rest = {k: v for k, v in items.items() if k not in removed}
    assert tree.root == SparseMerkleTree.from_items(rest.items()).root
    assert len(tree) == len(rest)
    for k in rest:
        tree = tree.delete(k)
    assert tree.root == EMPTY_ROOT and len(tree) == 0


def test_delete_deep_pair_collapses_the_chain() -> None:
    a, b = shared_prefix_keys(12)
    tree = SparseMerkleTree.from_items([(a, b"A"), (b, b"B"), (b"x", b"X")])
    assert tree.delete(a).root == SparseMerkleTree.from_items([(b, b"B"), (b"x", b"X")]).root
    only_b = tree.delete(a).delete(b"x")
    assert only_b.root == leaf_hash(sha(b), sha(b"B"))
    assert len(only_b.prove(b).siblings) == 0


def test_set_semantics() -> None:
    t1 = SparseMerkleTree().set(b"k", b"v")
    assert t1.set(b"k", b"v").root == t1.root
    t2 = t1.set(b"k", b"w")
    assert t2.root != t1.root and len(t2) == 1 and t2.get(b"k") == b"w"
    assert t1.get(b"k") == b"v"  # persistent: the old tree is untouched
    assert t1.delete(b"missing") is t1
    assert SparseMerkleTree.from_items([(b"k", b"v"), (b"k", b"w")]).root == t2.root  # last value wins
    assert t1.set(b"", b"").get(b"") == b""  # empty key and value are ordinary
    assert SparseMerkleTree().set(b"k", b"").root != SparseMerkleTree().root


def test_leaf_and_inner_hashes_are_domain_separated() -> None:
    x, y = sha(b"x"), sha(b"y")
    assert leaf_hash(x, y) != inner(x, y)
    # a two-leaf root cannot be proven as a leaf holding its children's hashes
    tree = SparseMerkleTree.from_items([(b"a", b"1"), (b"b", b"2")])
    lb, la = tree.prove(b"a").siblings[0], leaf_hash(sha(b"a"), sha(b"1"))
    with pytest.raises(InvalidProofError):
        verify_membership(tree.root, b"a", b"1", Proof((), (lb, la)))


# --- proofs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_proofs_verify_for_every_key_and_round_trip(seed: int) -> None:
    rng = random.Random(200 + seed)
    items = random_items(rng, 60)
    tree = SparseMerkleTree.from_items(items.items())
    for k, v in items.items():
        p = tree.prove(k)
        verify_membership(tree.root, k, v, p)
        assert Proof.decode(p.encode()) == p
    ends = set()
    for i in range(60):
        k = f"absent-{i}".encode()
        p = tree.prove(k)
        verify_non_membership(tree.root, k, p)
        assert Proof.decode(p.encode()) == p
        ends.add(p.leaf is None)
    assert ends == {True, False}  # both kinds of absence were exercised


def test_empty_tree_proofs() -> None:
    tree = SparseMerkleTree()
    p = tree.prove(b"k")
    assert p == Proof((), None)
    verify_non_membership(EMPTY_ROOT, b"k", p)
    with pytest.raises(InvalidProofError):
        verify_membership(EMPTY_ROOT, b"k", b"", p)


ITEMS = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(40)]
TREE = SparseMerkleTree.from_items(ITEMS)
ROOT = TREE.root
K, V = ITEMS[3]
MEM = TREE.prove(K)
ABSENT_EMPTY = next(k for k in (f"a{i}".encode() for i in range(999)) if TREE.prove(k).leaf is None)
ABSENT_LEAF = next(k for k in (f"a{i}".encode() for i in range(999)) if TREE.prove(k).leaf is not None)
NON_EMPTY = TREE.prove(ABSENT_EMPTY)
NON_LEAF = TREE.prove(ABSENT_LEAF)
NEWER = TREE.set(b"late", b"x")
OFF_PATH = next(
    k for k in (f"o{i}".encode() for i in range(9999))
    if (kh_int(k) ^ kh_int(K)) >> (256 - len(MEM.siblings)) and TREE.get(k) is None
)


def flip(p: Proof, i: int) -> Proof:
    s = list(p.siblings)
    s[i] = bytes([s[i][0] ^ 1]) + s[i][1:]
    return Proof(tuple(s), p.leaf)


def mem(root: bytes, key: bytes, value: bytes, proof: Proof) -> Callable[[], None]:
    return lambda: verify_membership(root, key, value, proof)


def non(root: bytes, key: bytes, proof: Proof) -> Callable[[], None]:
    return lambda: verify_non_membership(root, key, proof)


def test_untampered_baselines_verify() -> None:
    assert len(MEM.siblings) >= 3 and MEM.leaf is not None
    mem(ROOT, K, V, MEM)()
    non(ROOT, ABSENT_EMPTY, NON_EMPTY)()
    non(ROOT, ABSENT_LEAF, NON_LEAF)()
    mem(NEWER.root, K, V, NEWER.prove(K))()


assert MEM.leaf is not None and NON_LEAF.leaf is not None
TAMPERED: list[tuple[str, Callable[[], None], str]] = [
    *[(f"membership_flipped_sibling_{i}", mem(ROOT, K, V, flip(MEM, i)), "does not reach the root")
      for i in range(len(MEM.siblings))],
    ("membership_truncated_siblings", mem(ROOT, K, V, Proof(MEM.siblings[:-1], MEM.leaf)), "reach the root"),
    ("membership_no_siblings", mem(ROOT, K, V, Proof((), MEM.leaf)), "reach the root"),
    ("membership_extra_sibling_bottom", mem(ROOT, K, V, Proof((*MEM.siblings, EMPTY_ROOT), MEM.leaf)),
     "reach the root"),
    ("membership_extra_sibling_top", mem(ROOT, K, V, Proof((EMPTY_ROOT, *MEM.siblings), MEM.leaf)), "reach the root"),
    ("membership_wrong_value", mem(ROOT, K, b"forged", MEM), "another value"),
    ("membership_leaf_value_hash_swapped", mem(ROOT, K, b"forged", Proof(MEM.siblings, (MEM.leaf[0], sha(b"forged")))),
     "reach the root"),
    ("membership_leaf_key_swapped", mem(ROOT, K, V, Proof(MEM.siblings, (sha(b"other"), MEM.leaf[1]))),
     "key's leaf"),
    ("membership_other_keys_proof", mem(ROOT, K, V, TREE.prove(ITEMS[4][0])), "key's leaf"),
    ("membership_no_leaf", mem(ROOT, K, V, Proof(MEM.siblings, None)), "key's leaf"),
    ("membership_for_old_root", mem(NEWER.root, K, V, MEM), "reach the root"),
    ("membership_new_proof_old_root", mem(ROOT, K, V, NEWER.prove(K)), "reach the root"),
    ("membership_of_absent_key", mem(ROOT, ABSENT_LEAF, b"v", NON_LEAF), "key's leaf"),
    ("membership_using_non_membership_empty", mem(ROOT, ABSENT_EMPTY, b"v", NON_EMPTY), "key's leaf"),
    ("membership_sibling_31_bytes", mem(ROOT, K, V, Proof((MEM.siblings[0][:31], *MEM.siblings[1:]), MEM.leaf)),
     "32 bytes"),
    ("membership_257_siblings", mem(ROOT, K, V, Proof((EMPTY_ROOT,) * 257, MEM.leaf)), "at most 256"),
    ("membership_leaf_field_short", mem(ROOT, K, V, Proof(MEM.siblings, (MEM.leaf[0], MEM.leaf[1][:31]))),
     "two 32-byte"),
    ("non_membership_membership_proof_same_key", non(ROOT, K, MEM), "the key itself"),
    ("non_membership_leaf_off_path", non(ROOT, OFF_PATH, MEM), "off the key's path"),
    ("non_membership_empty_claim_at_present_key", non(ROOT, K, Proof(MEM.siblings, None)), "reach the root"),
    ("non_membership_empty_claim_at_leaf", non(ROOT, ABSENT_LEAF, Proof(NON_LEAF.siblings, None)), "reach the root"),
    ("non_membership_empty_flipped_sibling", non(ROOT, ABSENT_EMPTY, flip(NON_EMPTY, 0)), "reach the root"),
    ("non_membership_leaf_truncated", non(ROOT, ABSENT_LEAF, Proof(NON_LEAF.siblings[:-1], NON_LEAF.leaf)),
     "reach the root"),
    ("non_membership_leaf_extra_sibling",
     non(ROOT, ABSENT_LEAF, Proof((*NON_LEAF.siblings, EMPTY_ROOT), NON_LEAF.leaf)), "reach the root"),
    ("non_membership_leaf_value_changed",
     non(ROOT, ABSENT_LEAF, Proof(NON_LEAF.siblings, (NON_LEAF.leaf[0], sha(b"z")))), "reach the root"),
    ("non_membership_for_new_root", non(NEWER.root, ABSENT_EMPTY, NON_EMPTY), "reach the root"),
    ("non_membership_of_key_added_later", non(NEWER.root, b"late", TREE.prove(b"late")), "reach the root"),
]


@pytest.mark.parametrize(("name", "check", "why"), TAMPERED, ids=[n for n, _, _ in TAMPERED])
def test_tampered_proof_rejected(name: str, check: Callable[[], None], why: str) -> None:
    with pytest.raises(InvalidProofError, match=why):
        check()


# --- proof encoding -----------------------------------------------------------------------------------------

SIB = sha(b"s")
LEAF = sha(b"k") + sha(b"v")

PROOF_BYTES_BAD: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("two_bytes", b"\x00\x01"),
    ("count_without_siblings", b"\x00\x01\x00"),
    ("no_flag", b"\x00\x01" + SIB),
    ("flag_2", b"\x00\x01" + SIB + b"\x02"),
    ("flag_1_without_leaf", b"\x00\x01" + SIB + b"\x01"),
    ("flag_1_leaf_short", b"\x00\x01" + SIB + b"\x01" + LEAF[:-1]),
    ("flag_1_leaf_long", b"\x00\x01" + SIB + b"\x01" + LEAF + b"\x00"),
    ("flag_0_trailing", b"\x00\x01" + SIB + b"\x00\x00"),
    ("depth_257", (257).to_bytes(2, "big") + SIB * 257 + b"\x00"),
    ("depth_65535", b"\xff\xff" + b"\x00"),
]


@pytest.mark.parametrize(("name", "data"), PROOF_BYTES_BAD, ids=[n for n, _ in PROOF_BYTES_BAD])
def test_proof_decode_refuses(name: str, data: bytes) -> None:
    with pytest.raises(CodecError):
        Proof.decode(data)


def test_proof_encoding_layout() -> None:
    assert Proof((), None).encode() == b"\x00\x00\x00"
    assert Proof((SIB,), (LEAF[:32], LEAF[32:])).encode() == b"\x00\x01" + SIB + b"\x01" + LEAF
    p256 = Proof((SIB,) * 256, None)
    assert Proof.decode(p256.encode()) == p256


def _abi_like(rng: random.Random, n: int) -> bytes:
    """A value like the relay's ABI records: words of a few random bytes and much zero padding (compresses well)."""
    return b"".join(bytes(32 - (k := rng.randint(0, 12))) + rng.randbytes(k) for _ in range(n))


def _leaf_nodes(tree: SparseMerkleTree) -> dict[bytes, Any]:
    """The tree's leaf objects by key (a walk of its internals)."""
    leaves: dict[bytes, Any] = {}
    stack: list[Any] = [tree._root]
    while stack:
        node = stack.pop()
        if hasattr(node, "left"):
            stack += [node.left, node.right]
        elif node is not None:
            leaves[node.key] = node
    return leaves


def test_large_values_kept_compressed_read_hash_and_prove_as_themselves() -> None:
    rng = random.Random(16)
    items = {rng.randbytes(12): _abi_like(rng, rng.randint(8, 20)) for _ in range(200)}
    items.update({rng.randbytes(12): rng.randbytes(300) for _ in range(20)})  # large but incompressible
    items.update({rng.randbytes(12): bytes(40) for _ in range(20)})  # compressible but small
    tree = SparseMerkleTree().set_many(items.items())
    one_by_one = SparseMerkleTree()
    for k, v in items.items():
        one_by_one = one_by_one.set(k, v)
    assert tree.root == one_by_one.root == SparseMerkleTree.from_items(items.items()).root
    for k, v in items.items():
        assert tree.get(k) == v
        proof = tree.prove(k)
        assert proof.leaf == (sha(k), sha(v))
        verify_membership(tree.root, k, v, proof)
        with pytest.raises(InvalidProofError):
            verify_membership(tree.root, k, v + b"\x00", proof)
    assert dict(tree.items()) == items
    packed = {k for k, node in _leaf_nodes(tree).items() if type(node).__name__ == "_PackedLeaf"}
    assert packed == {k for k, v in items.items() if len(v) >= 256 and v.count(0) > len(v) // 2}
    assert len(packed) > 100


def test_packed_values_are_deflated_with_a_small_window_and_any_size_reads_back() -> None:
    """Issue 16: a packed leaf's deflate state is 48 KiB, not zlib's default 256 KiB that glibc maps and unmaps on
    every write under a node's heap settings (``bench/state_tree.py``). Values larger than its 8 KiB window still
    compress and read back whole."""
    rng = random.Random(13)
    for words in (8, 48, 256, 2048):  # 256 B .. 64 KiB
        value = _abi_like(rng, words)
        tree = SparseMerkleTree().set_many([(b"k", value), (b"other", b"x")])
        leaf = _leaf_nodes(tree)[b"k"]
        assert type(leaf).__name__ == "_PackedLeaf"
        packed = leaf._packed
        assert len(packed) * 2 < len(value)
        assert (packed[0] >> 4) + 8 <= 13, "the zlib header declares a window over 8 KiB"
        assert tree.get(b"k") == value
        assert tree.root == SparseMerkleTree.from_items([(b"k", value), (b"other", b"x")]).root
        verify_membership(tree.root, b"k", value, tree.prove(b"k"))


def test_a_single_compressed_leaf_is_the_root_of_its_value() -> None:
    value = bytes(31) + b"\x01" + bytes(300)
    tree = SparseMerkleTree().set(b"relay/outcome/x", value)
    assert tree.root == leaf_hash(sha(b"relay/outcome/x"), sha(value))
    assert tree.get(b"relay/outcome/x") == value
    assert tree.delete(b"relay/outcome/x").root == EMPTY_ROOT


def test_a_settled_record_costs_its_key_its_compressed_value_and_the_tree_nodes_above_it() -> None:
    """Issue 16's footprint: a relay validator keeps one outcome record per settled packet. A packed leaf keeps its
    key and compressed value only (48 + 78 + ~150 bytes); with the ~1.4 inner nodes above it, ~380 bytes a record
    (it was ~530 while leaves also kept their key hash and leaf hash)."""
    import tracemalloc

    from protocol.codec import encode_outcome
    from protocol.types import FeePayees, PacketOutcome

    rng = random.Random(5)
    payees = FeePayees("relayer-a", "relayer-b", "relayer-a")
    items = [(f"relay/outcome/dpos-park/poc-park/lane-0/{i}".encode(),
              encode_outcome(PacketOutcome.ACKED, rng.randbytes(32), rng.randbytes(32), payees)) for i in range(5000)]
    tracemalloc.start()
    try:
        tree = SparseMerkleTree()
        for i in range(0, len(items), 500):
            tree = tree.set_many(items[i:i + 500])
            assert len(tree.root) == 32
        per_record = tracemalloc.get_traced_memory()[0] / len(items)
    finally:
        tracemalloc.stop()
    assert per_record < 430, per_record
    k, v = items[1234]
    assert tree.get(k) == v
    verify_membership(tree.root, k, v, tree.prove(k))
