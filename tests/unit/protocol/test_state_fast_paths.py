"""The fast paths behind relay verification (issue 16): they must give exactly what the plain paths give.

- :meth:`SparseMerkleTree.set_many` builds the same tree (root, size, proofs) as :meth:`SparseMerkleTree.set`
  one pair at a time, whatever the keys, repeats and existing leaves;
- inner-node hashes computed on first read give the roots of eagerly hashed trees (checked against a tree
  rebuilt from scratch by :meth:`SparseMerkleTree.from_items`);
- :class:`chains.common.state.ChainState` buffers writes: reads see them, :meth:`atomic` rolls them back, and
  the root is the root of the same writes applied one by one;
- :func:`chains.common.wire.hex_bytes` without a regex still refuses every non-canonical spelling.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chains.common.state import ChainState
from chains.common.wire import MAX_HEX_BYTES, hex_bytes, strict_hex
from protocol.errors import CodecError, ProtocolError
from protocol.state_commitment import SparseMerkleTree, verify_membership, verify_non_membership


def _sequential(tree: SparseMerkleTree, items: list[tuple[bytes, bytes]]) -> SparseMerkleTree:
    for k, v in items:
        tree = tree.set(k, v)
    return tree


def _shared_prefix_keys(bits: int, count: int) -> list[bytes]:
    """``count`` keys whose hashes share their first ``bits`` bits (forces long single-child chains)."""
    groups: dict[int, list[bytes]] = {}
    i = 0
    while True:
        k = f"p{bits}-{i}".encode()
        g = groups.setdefault(int.from_bytes(hashlib.sha256(k).digest(), "big") >> (256 - bits), [])
        g.append(k)
        if len(g) == count:
            return g
        i += 1


@pytest.mark.parametrize("seed", range(12))
def test_set_many_is_sequential_set(seed: int) -> None:
    rng = random.Random(seed)
    base_items = [(rng.randbytes(rng.randint(0, 12)), rng.randbytes(rng.randint(1, 8)))
                  for _ in range(rng.choice([0, 1, 2, 50, 400]))]
    base = SparseMerkleTree.from_items(base_items)
    existing = [k for k, _ in base_items]
    writes: list[tuple[bytes, bytes]] = []
    for _ in range(rng.choice([1, 2, 3, 30, 200])):
        if existing and rng.random() < 0.3:
            key = rng.choice(existing)  # overwrite a leaf that is there
        elif writes and rng.random() < 0.1:
            key = rng.choice(writes)[0]  # a key written twice in one batch: the last value wins
        else:
            key = rng.randbytes(rng.randint(0, 12))
        writes.append((key, rng.randbytes(rng.randint(1, 8))))
    a, b = _sequential(base, writes), base.set_many(writes)
    assert b.root == a.root
    assert len(b) == len(a)
    final = dict(base_items)
    final.update(writes)
    assert b.root == SparseMerkleTree.from_items(final.items()).root  # and an eagerly rebuilt tree agrees
    for k, v in list(final.items())[:40]:
        assert b.get(k) == v
        verify_membership(b.root, k, v, b.prove(k))
    verify_non_membership(b.root, b"\xffabsent", b.prove(b"\xffabsent"))
    assert base.root == SparseMerkleTree.from_items(base_items).root  # the old tree is untouched


@pytest.mark.parametrize("seed", range(16))
def test_delete_many_is_sequential_delete(seed: int) -> None:
    """``delete_many`` builds each inner node on the deleted paths once; the tree it leaves is the one deleting the
    keys one by one leaves (same root, size, proofs), absent and repeated keys included, down to an empty tree."""
    rng = random.Random(seed)
    base_items = dict((rng.randbytes(rng.randint(0, 12)), rng.randbytes(rng.randint(1, 8)))
                      for _ in range(rng.choice([0, 1, 2, 3, 50, 400])))
    base = SparseMerkleTree.from_items(base_items.items())
    existing = list(base_items)
    share = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
    gone = [k for k in existing if rng.random() < share]
    gone += [rng.randbytes(rng.randint(0, 12)) for _ in range(rng.choice([0, 1, 20]))]  # absent: ignored
    gone += gone[: rng.randint(0, 3)]  # repeated
    rng.shuffle(gone)
    a = base
    for k in gone:
        a = a.delete(k)
    b = base.delete_many(gone)
    assert (b.root, len(b)) == (a.root, len(a))
    removed = set(gone)
    left = {k: v for k, v in base_items.items() if k not in removed}
    assert b.root == SparseMerkleTree.from_items(left.items()).root
    for k in gone[:30]:
        assert b.get(k) is None
        verify_non_membership(b.root, k, b.prove(k))
    for k, v in list(left.items())[:30]:
        verify_membership(b.root, k, v, b.prove(k))
    assert base.delete_many([]) is base and base.root == SparseMerkleTree.from_items(base_items.items()).root


def test_set_many_long_shared_prefixes_and_empty() -> None:
    keys = _shared_prefix_keys(10, 4)
    base = SparseMerkleTree.from_items([(keys[0], b"a")])
    writes = [(k, b"v") for k in keys[1:]] + [(b"other", b"x")]
    assert base.set_many(writes).root == _sequential(base, writes).root
    assert base.set_many([]) is base
    assert SparseMerkleTree().set_many(writes).root == SparseMerkleTree.from_items(writes).root


def test_lazy_hashes_match_a_rebuilt_tree_after_many_writes_and_deletes() -> None:
    rng = random.Random(7)
    tree, model = SparseMerkleTree(), {}
    for step in range(600):
        k = str(rng.randint(0, 150)).encode()
        if rng.random() < 0.3:
            tree = tree.delete(k)
            model.pop(k, None)
        else:
            v = rng.randbytes(4)
            tree = tree.set(k, v)
            model[k] = v
        if step % 97 == 0:  # read roots now and then, so some nodes are hashed early and others late
            assert tree.root == SparseMerkleTree.from_items(model.items()).root
    assert tree.root == SparseMerkleTree.from_items(model.items()).root
    assert len(tree) == len(model)


def _plain_root(writes: list[tuple[bytes, bytes | None]], base: SparseMerkleTree) -> bytes:
    t = base
    for k, v in writes:
        t = t.delete(k) if v is None else t.set(k, v)
    return t.root


def test_chain_state_buffers_writes_reads_them_and_commits_the_same_root() -> None:
    base = SparseMerkleTree.from_items([(f"k{i}".encode(), b"old") for i in range(50)])
    state = ChainState(base)
    writes: list[tuple[bytes, bytes | None]] = [(b"k1", b"new"), (b"k2", None), (b"fresh", b"f"), (b"k2", b"back"),
                                                (b"k3", None), (b"gone", None), (b"fresh", b"g")]
    for k, v in writes:
        if v is None:
            state.delete(k)
        else:
            state.set(k, v)
    assert state.get(b"k1") == b"new" and state.get(b"k3") is None and state.get(b"fresh") == b"g"
    assert state.get(b"k2") == b"back" and state.get(b"k4") == b"old"
    assert state.root == _plain_root(writes, base)
    assert state.tree.get(b"k2") == b"back" and len(state.tree) == 50
    state.set(b"k9", b"x")
    p = state.prove(b"k9")  # proofs see buffered writes
    verify_membership(state.root, b"k9", b"x", p)


def test_chain_state_atomic_rolls_back_buffered_writes() -> None:
    state = ChainState(SparseMerkleTree.from_items([(b"a", b"1")]))
    state.set(b"b", b"2")  # buffered before the block: kept
    root_before = _plain_root([(b"b", b"2")], SparseMerkleTree.from_items([(b"a", b"1")]))
    with pytest.raises(ProtocolError), state.atomic():
        state.set(b"a", b"changed")
        state.delete(b"b")
        state.set(b"c", b"3")
        raise ProtocolError("refused")
    assert state.get(b"a") == b"1" and state.get(b"b") == b"2" and state.get(b"c") is None
    assert state.root == root_before
    with state.atomic():
        state.set(b"c", b"3")
    assert state.get(b"c") == b"3"


def test_chain_state_refuses_non_bytes_at_the_write() -> None:
    state = ChainState()
    with pytest.raises(TypeError):
        state.set(b"k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        state.set("k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        state.delete(7)  # type: ignore[arg-type]
    state.set(b"k", bytearray(b"v"))  # type: ignore[arg-type]
    assert state.get(b"k") == b"v" and type(state.get(b"k")) is bytes
    assert state.root == SparseMerkleTree().set(b"k", b"v").root


@pytest.mark.parametrize("bad", ["AB", "aB", "a b", "ab ", " ab", "abc", "0x12", "ab\n", "\u0661\u0662", "é1", "zz",
                                 "\x00\x00", "a", "\t"])
def test_hex_bytes_refuses_every_non_canonical_spelling(bad: str) -> None:
    with pytest.raises(CodecError):
        hex_bytes(bad, "field")


def test_hex_bytes_accepts_canonical_and_bounds_length() -> None:
    assert hex_bytes("", "f") == b""
    assert hex_bytes(bytes(range(256)).hex(), "f") == bytes(range(256))
    assert hex_bytes("00ff", "f", 2) == b"\x00\xff"
    with pytest.raises(CodecError):
        hex_bytes("00ff", "f", 3)
    with pytest.raises(CodecError):
        hex_bytes("00" * (MAX_HEX_BYTES + 1), "f")
    for not_str in (b"00", None, 12, ["00"]):
        with pytest.raises(CodecError):
            hex_bytes(not_str, "f")


def test_hex_bytes_accepts_exactly_what_re_encodes_to_itself() -> None:
    """Its checks stand for ``bytes.fromhex(value).hex() == value``: the same verdict on random spellings mixing
    hex digits of both cases, whitespace, other ASCII and non-ASCII digits; and ``strict_hex`` agrees with it."""
    rng = random.Random(16)
    odd = "ABCDEFGgx \t\n\r\x0b\x0c-+\u00e9\u0660\uff10"
    for _ in range(20_000):
        value = "".join(rng.choice(odd) if rng.random() < 0.1 else rng.choice("0123456789abcdef")
                        for _ in range(rng.randrange(0, 24)))
        try:
            want: bytes | None = bytes.fromhex(value)
        except ValueError:
            want = None
        if want is not None and want.hex() != value:
            want = None
        assert strict_hex(value) == want, repr(value)
        if want is None:
            with pytest.raises(CodecError):
                hex_bytes(value, "f")
        else:
            assert hex_bytes(value, "f") == want


class _Rollback(Exception):
    pass


_KEYS = [f"k{i}".encode() for i in range(6)]
_program = st.recursive(
    st.one_of(st.tuples(st.just("set"), st.sampled_from(_KEYS), st.binary(min_size=1, max_size=3)),
              st.tuples(st.just("delete"), st.sampled_from(_KEYS)),
              st.tuples(st.just("get"), st.sampled_from(_KEYS)),
              st.tuples(st.just("root"))),  # a flush, maybe inside atomic blocks
    lambda inner: st.tuples(st.just("atomic"), st.lists(inner, max_size=6), st.booleans()),  # (body, raise at end)
    max_leaves=30)


def _run(state: ChainState, model: dict[bytes, bytes], ops: list[object], seen: list[object]) -> None:
    for op in ops:
        kind = op[0]  # type: ignore[index]
        if kind == "set":
            _, k, v = op  # type: ignore[misc]
            state.set(k, v)
            model[k] = v
        elif kind == "delete":
            state.delete(op[1])  # type: ignore[index]
            model.pop(op[1], None)  # type: ignore[index]
        elif kind == "get":
            seen.append((state.get(op[1]), model.get(op[1])))  # type: ignore[index]
        elif kind == "root":
            seen.append((state.root, SparseMerkleTree.from_items(model.items()).root))
        else:
            _, body, fail = op  # type: ignore[misc]
            saved = dict(model)
            try:
                with state.atomic():
                    _run(state, model, body, seen)
                    if fail:
                        raise _Rollback
            except _Rollback:
                model.clear()
                model.update(saved)


@settings(max_examples=400, deadline=None)
@given(st.lists(_program, max_size=8))
def test_atomic_blocks_roll_back_exactly_what_they_wrote_nested_and_across_flushes(program: list[object]) -> None:
    """An atomic block no longer flushes the buffered writes when it starts (issue 16): it keeps an undo log, and a
    snapshot once a flush inside it (a root, a proof) moved its writes into the tree. Against a model that copies
    the whole state at every block: every read, every root and the final state agree, nested blocks committed or
    rolled back, with flushes anywhere."""
    base = {b"k0": b"base", b"k5": b"five"}
    state, model = ChainState(SparseMerkleTree.from_items(base.items())), dict(base)
    seen: list[object] = []
    _run(state, model, program, seen)
    for got, expected in seen:
        assert got == expected
    assert state.root == SparseMerkleTree.from_items(model.items()).root
    assert {k: state.get(k) for k in _KEYS} == {k: model.get(k) for k in _KEYS}
    assert not state._frames


def test_an_atomic_block_leaves_the_buffered_writes_unflushed() -> None:
    """Starting a transaction's block no longer writes the block's earlier transactions into the tree: the tree is
    written once, when the root is asked for."""
    state = ChainState(SparseMerkleTree.from_items([(b"a", b"1")]))
    tree = state._tree
    state.set(b"b", b"2")
    with state.atomic():
        state.set(b"c", b"3")
    with pytest.raises(_Rollback), state.atomic():
        state.set(b"b", b"changed")
        raise _Rollback
    assert state._tree is tree and state.get(b"b") == b"2" and state.get(b"c") == b"3"
    assert state.root == SparseMerkleTree.from_items([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]).root


def test_the_tree_is_replaced_outside_atomic_blocks_only() -> None:
    """Replacing the whole tree inside an atomic block would leave its rollback nothing to restore: refused, and the
    block's writes still roll back; outside a block it replaces the state, buffered writes dropped."""
    state = ChainState()
    state.set(b"k", b"before")
    other = SparseMerkleTree().set(b"x", b"1")
    with pytest.raises(RuntimeError, match="outside atomic blocks"), state.atomic():
        state.set(b"k", b"inside")
        state.tree = other
    assert state.get(b"k") == b"before" and state.get(b"x") is None
    state.tree = other
    assert state.get(b"k") is None and state.get(b"x") == b"1" and state.root == other.root
