"""``verify_membership_encoded`` is ``verify_membership`` of ``Proof.decode``: the same result and the same error.

Differential, over valid proofs of a tree with a few hundred keys, their single-byte mutations, truncations and
extensions, wrong keys, values and roots: either both accept, or both raise the same error type with the same
message (which carries the computed root, so the whole hashing is compared too).
"""

from __future__ import annotations

import random

import pytest

from protocol.errors import ParkRelayError
from protocol.state_commitment import Proof, SparseMerkleTree, verify_membership, verify_membership_encoded

_TREE = SparseMerkleTree.from_items((f"k/{i}".encode(), f"v{i}".encode()) for i in range(300))


def _reference(root: bytes, key: bytes, value: bytes, data: bytes) -> None:
    verify_membership(root, key, value, Proof.decode(data))


def _outcome(fn, *args: bytes) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except ParkRelayError as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def _same(root: bytes, key: bytes, value: bytes, data: bytes) -> tuple[str, str]:
    got = _outcome(verify_membership_encoded, root, key, value, data)
    assert got == _outcome(_reference, root, key, value, data), data.hex()
    return got


@pytest.mark.parametrize("i", [0, 1, 7, 150, 299])
def test_valid_proofs_and_their_mutations_agree(i: int) -> None:
    rng = random.Random(i)
    key, value, root = f"k/{i}".encode(), f"v{i}".encode(), _TREE.root
    data = _TREE.prove(key).encode()
    assert _same(root, key, value, data) == ("ok", "")
    for pos in range(len(data)):
        b = bytearray(data)
        b[pos] ^= 1 << rng.randrange(8)
        assert _same(root, key, value, bytes(b))[0] != "ok"
        b[pos] = 0xFF
        _same(root, key, value, bytes(b))
    for cut in range(len(data)):
        _same(root, key, value, data[:cut])
    for extra in (b"\x00", bytes(32), b"\x01" + bytes(64)):
        _same(root, key, value, data + extra)
    assert _same(root, key, b"other", data)[0] == "InvalidProofError"
    assert _same(root, b"k/none", value, data)[0] == "InvalidProofError"
    assert _same(bytes(32), key, value, data)[0] == "InvalidProofError"


def test_non_membership_proofs_and_odd_shapes_agree() -> None:
    root = _TREE.root
    absent = _TREE.prove(b"k/absent").encode()
    _same(root, b"k/absent", b"x", absent)
    for data in (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00", b"\x00\x00\x01" + bytes(64), b"\x01\x01" + bytes(40),
                 b"\x00\x00\x02", b"\x00\x01" + bytes(32) + b"\x00"):
        _same(root, b"k/1", b"v1", data)
    empty = SparseMerkleTree().set(b"only", b"one")
    _same(empty.root, b"only", b"one", empty.prove(b"only").encode())  # no siblings at all
