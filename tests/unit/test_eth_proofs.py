"""Ethereum park codecs and storage proofs (chains/ethereum/SPEC.md §E2.1, §E3): strict RLP, slots, proof bytes,
and the Merkle-Patricia verifier checked against the ``trie`` package on random tries. No node needed."""

from __future__ import annotations

import random

import pytest
import rlp
from eth_abi import encode as abi_encode
from trie import HexaryTrie

from chains.ethereum import proofs
from chains.ethereum.proofs import (
    EMPTY_TRIE_ROOT,
    MAX_PROOF_NODES,
    EthStorageProof,
    commitment_slot,
    mapping_key,
    mpt_get,
    mpt_lookup,
    receipt_slot,
    storage_slot_of_path,
    verify_account_proof,
    verify_membership,
    verify_non_membership,
    verify_storage_proof,
)
from chains.ethereum.types import RlpItem, keccak256, rlp_decode, rlp_encode
from protocol.errors import CodecError, InvalidProofError

# -- RLP ------------------------------------------------------------------------------------------------


def _random_item(rng: random.Random, depth: int = 0) -> RlpItem:
    if depth < 3 and rng.random() < 0.3:
        return [_random_item(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 5, 20]))]
    n = rng.choice([0, 1, 1, 2, 31, 55, 56, 57, 300, 70_000])
    return bytes(rng.getrandbits(8) for _ in range(n)) if n < 1000 else rng.randbytes(n)


def test_rlp_matches_pyrlp_on_random_items() -> None:
    rng = random.Random(7)
    for _ in range(300):
        item = _random_item(rng)
        raw = rlp_encode(item)
        assert raw == rlp.encode(item)
        assert rlp_decode(raw) == rlp.decode(raw, strict=True)


def test_rlp_known_vectors() -> None:
    assert rlp_encode(b"") == b"\x80"
    assert rlp_encode(b"\x7f") == b"\x7f"
    assert rlp_encode(b"\x80") == b"\x81\x80"
    assert rlp_encode([]) == b"\xc0"
    assert rlp_encode([b"cat", b"dog"]) == b"\xc8\x83cat\x83dog"
    assert rlp_encode(b"a" * 56) == b"\xb8\x38" + b"a" * 56


@pytest.mark.parametrize("raw", [
    b"",                               # nothing
    b"\x81\x05",                       # single byte < 0x80 as a string
    b"\xb8\x05hello",                  # long form for a short string
    b"\xb9\x00\x38" + b"a" * 56,       # length with a leading zero
    b"\xf8\x02\x80\x80",               # long list form for a short list
    b"\x83ab",                         # truncated string
    b"\xc3\x80\x80",                   # truncated list
    b"\x80\x80",                       # trailing bytes
    b"\xc2\x83a",                      # item overruns its list
    b"\xbb\xff\xff\xff\xff",           # huge length, truncated
    b"\xc1" * 40 + b"\xc0",            # nested deeper than MAX_RLP_DEPTH (and truncated)
])
def test_rlp_rejects_non_canonical(raw: bytes) -> None:
    with pytest.raises(CodecError):
        rlp_decode(raw)


def test_rlp_depth_limit() -> None:
    item: RlpItem = []
    for _ in range(20):
        item = [item]
    with pytest.raises(CodecError, match="nested too deep"):
        rlp_decode(rlp_encode(item))


# -- slots --------------------------------------------------------------------------------------------


def test_mapping_key_is_abi_encode() -> None:
    for a, b, seq in [("eth-park", "lane-0", 1), ("a", "b" * 64, 2**64 - 1), ("x" * 33, "y", 42)]:
        assert mapping_key(a, b, seq) == keccak256(abi_encode(["string", "string", "uint64"], [a, b, seq]))


def test_slots_follow_solidity_mapping_rule() -> None:
    key = keccak256(abi_encode(["string", "string", "uint64"], ["dpos-park", "lane-0", 7]))
    assert commitment_slot("dpos-park", "lane-0", 7) == keccak256(key + (0).to_bytes(32, "big"))
    assert receipt_slot("dpos-park", "lane-0", 7) == keccak256(key + (1).to_bytes(32, "big"))
    assert storage_slot_of_path(b"commitments/dpos-park/lane-0/7") == commitment_slot("dpos-park", "lane-0", 7)
    assert storage_slot_of_path("receipts/dpos-park/lane-0/7") == receipt_slot("dpos-park", "lane-0", 7)
    assert storage_slot_of_path(b"receipts/a/b/18446744073709551615") == receipt_slot("a", "b", 2**64 - 1)


@pytest.mark.parametrize("path", [
    b"nextSequenceSend/dpos-park/lane-0",
    b"escrow/kWh",
    b"balances/alice/kWh",
    b"relay/verified/a/b/lane-0/1",
    b"commitments/dpos-park/lane-0",
    b"commitments/dpos-park/lane-0/1/2",
    b"commitments/dpos-park/lane-0/0",
    b"commitments/dpos-park/lane-0/01",
    b"commitments/dpos-park/lane-0/+1",
    b"commitments/dpos-park/lane-0/18446744073709551616",
    b"commitments/Dpos/lane-0/1",
    b"commitments//lane-0/1",
    b"receipts/dpos-park/lane 0/1",
    b"receipts/dpos-park/lane-0/1\n",
    b"receipts/\xff/lane-0/1",
    b"",
])
def test_unmapped_paths_are_invalid_proofs(path: bytes) -> None:
    with pytest.raises(InvalidProofError):
        storage_slot_of_path(path)


# -- proof bytes ------------------------------------------------------------------------------------------


def test_proof_bytes_round_trip() -> None:
    p = EthStorageProof((b"\x01" * 40, b"\x02" * 70), (b"\x80",))
    raw = p.encode()
    assert raw == rlp.encode([list(p.account_proof), list(p.storage_proof)])
    assert EthStorageProof.decode(raw) == p
    assert EthStorageProof.decode(EthStorageProof((), ()).encode()) == EthStorageProof((), ())


@pytest.mark.parametrize("raw", [
    rlp.encode(b"not a list"),
    rlp.encode([[b"a" * 40]]),                          # one list
    rlp.encode([[b"a" * 40], [b"b" * 40], []]),         # three lists
    rlp.encode([b"a" * 40, [b"b" * 40]]),               # a string where a node list belongs
    rlp.encode([[[b"a"]], []]),                         # a list where a node belongs
    rlp.encode([[b""], []]),                            # an empty node
    rlp.encode([[b"ab"] * (MAX_PROOF_NODES + 1), []]),  # too many nodes
    rlp.encode([[b"a" * 40], []]) + b"\x00",            # trailing byte
    b"\xf8\x02\xc0\xc0",                                # non-canonical list prefix
])
def test_malformed_proof_bytes_are_codec_errors(raw: bytes) -> None:
    with pytest.raises(CodecError):
        EthStorageProof.decode(raw)


def test_from_rpc_picks_the_slot() -> None:
    result = {"accountProof": ["0x" + "ab" * 40],
              "storageProof": [{"key": "0x01", "value": "0x0", "proof": ["0x80"]},
                               {"key": "0x" + "00" * 31 + "02", "value": "0x0", "proof": ["0xc0"]}]}
    assert EthStorageProof.from_rpc(result, (2).to_bytes(32, "big")).storage_proof == (b"\xc0",)
    assert EthStorageProof.from_rpc(result, (1).to_bytes(32, "big")).account_proof == (b"\xab" * 40,)
    with pytest.raises(CodecError):
        EthStorageProof.from_rpc(result)  # two slots: which one?
    with pytest.raises(CodecError):
        EthStorageProof.from_rpc(result, (3).to_bytes(32, "big"))


def test_non_bytes_proof_is_codec_error() -> None:
    with pytest.raises(CodecError):
        verify_non_membership(EMPTY_TRIE_ROOT, b"\x00" * 20, b"receipts/a/b/1", object())


# -- Merkle-Patricia walk against the trie package ----------------------------------------------------------


def _proof_nodes(t: HexaryTrie, trie_key: bytes) -> list[bytes]:
    return [rlp.encode(node) for node in t.get_proof(trie_key)]


def _reference(t: HexaryTrie, trie_key: bytes) -> bytes | None:
    value = HexaryTrie.get_from_proof(t.root_hash, trie_key, t.get_proof(trie_key))
    return value or None


def _hashed_only(nodes: list[bytes]) -> list[bytes]:
    """The geth convention: nodes embedded in their parent (under 32 bytes) are not listed."""
    return [n for i, n in enumerate(nodes) if i == 0 or len(n) >= 32]


@pytest.mark.parametrize("n_keys", [1, 2, 3, 17, 200, 2000])
def test_walk_matches_trie_on_random_secure_tries(n_keys: int) -> None:
    rng = random.Random(n_keys)
    t = HexaryTrie({})
    present = [keccak256(rng.randbytes(20)) for _ in range(n_keys)]
    for k in present:
        t[k] = rlp.encode(rng.randbytes(rng.choice([1, 5, 32])))
    absent = [keccak256(rng.randbytes(20)) for _ in range(50)]
    for k in present[:100] + absent:
        nodes = _proof_nodes(t, k)
        want = _reference(t, k)
        assert mpt_get(t.root_hash, k, nodes) == want
        assert mpt_get(t.root_hash, k, _hashed_only(nodes)) == want
    assert all(mpt_get(t.root_hash, k, _proof_nodes(t, k)) is not None for k in present[:100])


def test_walk_follows_embedded_nodes() -> None:
    # keys sharing 63 nibbles and tiny values: the leaves (and the branch above them) are embedded
    t = HexaryTrie({})
    keys = [bytes(31) + bytes([i]) for i in (0x00, 0x01, 0x02, 0x10)]
    for k in keys:
        t[k] = b"v"
    for k in [*keys, bytes(31) + b"\x07", bytes(31) + b"\x30", b"\x01" + bytes(31)]:
        nodes = _proof_nodes(t, k)
        assert k not in keys or any(len(n) < 32 for n in nodes)
        want = _reference(t, k)
        assert mpt_get(t.root_hash, k, nodes) == want
        assert mpt_get(t.root_hash, k, _hashed_only(nodes)) == want


def test_walk_rejects_tampered_truncated_and_padded_proofs() -> None:
    rng = random.Random(3)
    t = HexaryTrie({})
    keys = [keccak256(rng.randbytes(8)) for _ in range(300)]
    for k in keys:
        t[k] = rlp.encode(rng.randbytes(32))
    for k in keys[:30] + [keccak256(b"absent-%d" % i) for i in range(30)]:
        nodes = _proof_nodes(t, k)
        i = rng.randrange(len(nodes))
        j = rng.randrange(len(nodes[i]))
        tampered = [*nodes]
        tampered[i] = nodes[i][:j] + bytes([nodes[i][j] ^ (1 << rng.randrange(8))]) + nodes[i][j + 1:]
        for bad in (tampered, nodes[:-1], [*nodes, nodes[-1]], nodes[1:], [nodes[0], *nodes]):
            with pytest.raises(InvalidProofError):
                mpt_get(t.root_hash, k, bad)
        with pytest.raises(InvalidProofError):
            mpt_get(keccak256(b"another root"), k, nodes)


def test_walk_on_the_empty_trie() -> None:
    k = keccak256(b"k")
    assert mpt_get(EMPTY_TRIE_ROOT, k, []) is None
    assert mpt_get(EMPTY_TRIE_ROOT, k, [b"\x80"]) is None
    with pytest.raises(InvalidProofError):
        mpt_get(keccak256(b"x"), k, [])
    with pytest.raises(InvalidProofError):
        mpt_get(EMPTY_TRIE_ROOT, k, [b"\x80", b"\x80"])
    with pytest.raises(InvalidProofError):
        mpt_get(EMPTY_TRIE_ROOT, k[:31], [])


def _single(node: list[object]) -> tuple[bytes, list[bytes]]:
    raw = rlp.encode(node)
    return keccak256(raw), [raw]


@pytest.mark.parametrize(("node", "match"), [
    ([b"\x20" + b"\x00" * 32, b""], "leaf without a value"),
    ([b"\x20" + b"\x00" * 32, [b"\x01"]], "leaf without a value"),  # a list as the value
    ([b"\x20" + b"\x00" * 31, b"\x01"], "does not end a 32-byte key"),  # path one byte short
    ([b"\x40" + b"\x00" * 32, b"\x01"], "unknown flag"),
    ([b"\x21" + b"\x00" * 31, b"\x01"], "non-zero pad nibble"),
    ([b"\x00", b"\x11" * 32], "extension node with an empty path"),
    ([b"", b"\x01"], "without a path"),
    ([[b"\x20"], b"\x01"], "without a path"),  # a list where the path belongs
    ([b"\x00\x00", b""], "extension node without a child"),
    ([b"\x00\x00", b"\x11" * 31], "32-byte hash or an embedded node"),
    ([b"\x20" + b"\x00" * 32, b"\x01", b"\x02"], "17 \\(branch\\) or 2"),
    ([b""] * 16 + [b"\x01"], "no room"),  # a branch with a value: no room for one in a 32-byte key
])
def test_walk_rejects_malformed_nodes(node: list[object], match: str) -> None:
    root, nodes = _single(node)
    with pytest.raises(InvalidProofError, match=match):
        mpt_get(root, bytes(32), nodes)


def test_walk_rejects_non_list_nodes_and_nodes_with_trailing_bytes() -> None:
    for raw in (b"\x83abc", rlp.encode([b"\x20" + b"\x00" * 31, b"\x01"]) + b"\x00", b"\x81"):
        with pytest.raises(InvalidProofError):
            mpt_get(keccak256(raw), bytes(32), [raw])


# -- accounts and storage: a synthetic state -------------------------------------------------------------

BRIDGE = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
PATH_C = b"commitments/dpos-park/lane-0/1"
PATH_R = b"receipts/dpos-park/lane-0/1"
VALUE = keccak256(b"packet commitment")


class State:
    """A state trie with the bridge (slots written through Solidity's rule) and some other accounts."""

    def __init__(self, records: dict[bytes, bytes], *, n_accounts: int = 50, bridge: bool = True) -> None:
        rng = random.Random(11)
        self.storage = HexaryTrie({})
        for path, value in records.items():
            self.storage[keccak256(storage_slot_of_path(path))] = rlp.encode(value.lstrip(b"\x00"))
        for i in range(30):  # unrelated slots, so the storage trie has branches
            self.storage[keccak256(i.to_bytes(32, "big"))] = rlp.encode(bytes([i + 1]))
        self.accounts = HexaryTrie({})
        for _ in range(n_accounts):
            self.accounts[keccak256(rng.randbytes(20))] = rlp.encode([b"", b"\x01", EMPTY_TRIE_ROOT, keccak256(b"")])
        if bridge:
            self.accounts[keccak256(BRIDGE)] = rlp.encode([b"\x01", b"", self.storage.root_hash, keccak256(b"code")])

    @property
    def root(self) -> bytes:
        return self.accounts.root_hash

    def proof(self, path: bytes, address: bytes = BRIDGE) -> EthStorageProof:
        slot = storage_slot_of_path(path)
        return EthStorageProof(tuple(_proof_nodes(self.accounts, keccak256(address))),
                               tuple(_proof_nodes(self.storage, keccak256(slot))))


def test_membership_and_non_membership_on_a_synthetic_state() -> None:
    st = State({PATH_C: VALUE})
    verify_membership(st.root, BRIDGE, PATH_C, VALUE, st.proof(PATH_C).encode())
    verify_membership(st.root, BRIDGE, PATH_C, VALUE, st.proof(PATH_C))
    verify_non_membership(st.root, BRIDGE, PATH_R, st.proof(PATH_R).encode())
    account = verify_account_proof(st.root, BRIDGE, st.proof(PATH_C).account_proof)
    assert account is not None and account.nonce == 1 and account.storage_root == st.storage.root_hash
    assert verify_storage_proof(st.storage.root_hash, storage_slot_of_path(PATH_C),
                                st.proof(PATH_C).storage_proof) == int.from_bytes(VALUE, "big")


def test_value_with_leading_zero_bytes() -> None:
    value = b"\x00\x00" + keccak256(b"x")[2:]
    st = State({PATH_C: value})
    verify_membership(st.root, BRIDGE, PATH_C, value, st.proof(PATH_C).encode())


def test_every_wrong_claim_is_an_invalid_proof() -> None:
    st = State({PATH_C: VALUE, PATH_R: keccak256(b"ack")})
    proof_c = st.proof(PATH_C).encode()
    bad_claims = [
        lambda: verify_membership(st.root, BRIDGE, PATH_C, keccak256(b"other"), proof_c),        # wrong value
        lambda: verify_membership(st.root, BRIDGE, PATH_C, VALUE[:31], proof_c),                 # short value
        lambda: verify_membership(st.root, BRIDGE, PATH_C, bytes(32), proof_c),                  # zero value
        lambda: verify_membership(st.root, BRIDGE, PATH_R, VALUE, proof_c),                      # wrong slot
        lambda: verify_membership(st.root, b"\x11" * 20, PATH_C, VALUE, proof_c),                # wrong address
        lambda: verify_membership(st.root, BRIDGE[:19], PATH_C, VALUE, proof_c),                 # short address
        lambda: verify_membership(keccak256(b"root"), BRIDGE, PATH_C, VALUE, proof_c),           # wrong root
        lambda: verify_membership(st.root, BRIDGE, b"escrow/kWh", VALUE, proof_c),               # unmapped path
        lambda: verify_non_membership(st.root, BRIDGE, PATH_C, proof_c),                         # it is present
        lambda: verify_membership(st.root, BRIDGE, b"commitments/dpos-park/lane-0/2", VALUE,
                                  st.proof(b"commitments/dpos-park/lane-0/2").encode()),         # absent
    ]
    for claim in bad_claims:
        with pytest.raises(InvalidProofError):
            claim()


def test_absent_bridge_account_has_empty_storage() -> None:
    st = State({}, bridge=False)
    p = st.proof(PATH_R)
    assert verify_account_proof(st.root, BRIDGE, p.account_proof) is None
    for storage_proof in ((), (b"\x80",)):
        verify_non_membership(st.root, BRIDGE, PATH_R, EthStorageProof(p.account_proof, storage_proof))
    with pytest.raises(InvalidProofError):
        verify_membership(st.root, BRIDGE, PATH_R, VALUE, EthStorageProof(p.account_proof, ()))
    with pytest.raises(InvalidProofError):  # a storage proof from another trie does not fit the empty one
        verify_non_membership(st.root, BRIDGE, PATH_R, EthStorageProof(p.account_proof, p.storage_proof))


@pytest.mark.parametrize("account", [
    [b"\x01", b""],                                                    # two fields
    [b"\x00", b"", EMPTY_TRIE_ROOT, keccak256(b"")],                   # nonce with a leading zero
    [b"", b"", EMPTY_TRIE_ROOT[:31], keccak256(b"")],                  # short storage root
    [b"", b"", EMPTY_TRIE_ROOT, [b""]],                                # code hash a list
    [b"\x01" * 9, b"", EMPTY_TRIE_ROOT, keccak256(b"")],               # nonce above uint64
])
def test_malformed_accounts_are_invalid(account: list[object]) -> None:
    t = HexaryTrie({})
    t[keccak256(BRIDGE)] = rlp.encode(account)
    with pytest.raises(InvalidProofError):
        verify_account_proof(t.root_hash, BRIDGE, _proof_nodes(t, keccak256(BRIDGE)))


@pytest.mark.parametrize("stored", [b"\x81\x00", b"\x00", rlp.encode(b"\x01" * 33), rlp.encode([b"\x01"]), b"\x05\x05"])
def test_malformed_storage_values_are_invalid(stored: bytes) -> None:
    t = HexaryTrie({})
    slot = storage_slot_of_path(PATH_C)
    t[keccak256(slot)] = stored
    with pytest.raises(InvalidProofError):
        verify_storage_proof(t.root_hash, slot, _proof_nodes(t, keccak256(slot)))


def test_a_leaf_holding_zero_reads_as_absent() -> None:
    # anvil keeps a cleared slot as a leaf holding rlp(0) = 0x80 (seen with anvil 1.7.1)
    t = HexaryTrie({})
    slot = storage_slot_of_path(PATH_C)
    t[keccak256(slot)] = b"\x80"
    t[keccak256(b"other")] = b"\x01"
    assert verify_storage_proof(t.root_hash, slot, _proof_nodes(t, keccak256(slot))) == 0


def test_storage_root_cache_is_keyed_by_root_address_and_proof() -> None:
    st = State({PATH_C: VALUE})
    cache: proofs.StorageRootCache = {}
    p = st.proof(PATH_C)
    verify_membership(st.root, BRIDGE, PATH_C, VALUE, p, storage_roots=cache)
    assert cache == {(st.root, BRIDGE, p.account_proof): st.storage.root_hash}
    verify_membership(st.root, BRIDGE, PATH_C, VALUE, p, storage_roots=cache)  # from the cache
    with pytest.raises(InvalidProofError):  # another address is not answered from the cache
        verify_membership(st.root, b"\x11" * 20, PATH_C, VALUE, p, storage_roots=cache)


def test_lookup_hashes_the_key() -> None:
    t = HexaryTrie({})
    t[keccak256(b"key")] = b"\x01"
    assert mpt_lookup(t.root_hash, b"key", _proof_nodes(t, keccak256(b"key"))) == b"\x01"
