// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {
    CodecInvalid,
    DuplicateValidatorAddress,
    DuplicateValidatorKey,
    ProofInvalid,
    QuorumNotReached,
    SignatureInvalid,
    ValidatorSetMismatch
} from "./ParkErrors.sol";

/// @title The relay-certificate verifier: the bridge's light client of the relay chain (protocol/SPEC.md §7).
/// @notice A relay certificate is a commit of more than 2/3 of the trusted relay validator set's power over a relay
///         header, and a sparse-Merkle membership proof (protocol §4) into that header's state root. The trusted
///         set is known by its hash only (§7.1): callers pass the set in calldata and this library hashes it in
///         place. Signatures are secp256k1 over `commit_sign_bytes` (§7.3, no prefix), checked with `ecrecover`,
///         in order (§7.4: index in range and not repeated, s in the lower half).
/// @dev Stateless: the router keeps the trusted hash and the relay chain id and derives the key and value a
///      certificate must prove, so a relayer cannot aim a proof elsewhere (chains/ethereum/SPEC.md §E2.2).
library RelayVerifier {
    struct RelayHeader {
        string chainId;
        uint64 height;
        uint64 timeMs;
        bytes32 lastBlockHash;
        bytes32 dataHash;
        bytes32 stateRoot;
        bytes32 validatorsHash;
        bytes32 nextValidatorsHash;
    }

    struct Signature {
        uint256 validatorIndex;
        bytes secp256k1Sig; // 65 bytes r || s || v, v 27/28, s in the lower half
    }

    struct Commit {
        RelayHeader header;
        uint64 round;
        Signature[] signatures;
    }

    struct ValidatorSet {
        bytes32[] ed25519Keys;
        address[] ethAddresses;
        uint64[] powers;
    }

    struct Certificate {
        Commit commit;
        bytes proof; // protocol §4 encoding, into commit.header.stateRoot
    }

    /// the tag of commit_sign_bytes (§7.3), "parkrelay/relay-commit/v1": 25 bytes, left-aligned
    bytes32 internal constant COMMIT_TAG_WORD = "parkrelay/relay-commit/v1";
    uint256 internal constant COMMIT_TAG_LENGTH = 25;
    /// secp256k1 n / 2: a signature's s must not exceed it (one signature per signer and message)
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @dev The hash of a calldata set as given (for error data only: no validation).
    function setHashOf(ValidatorSet calldata set) internal pure returns (bytes32) {
        return sha256(abi.encode(set.ed25519Keys, set.ethAddresses, set.powers));
    }

    /// @dev A certificate (§7.6) proves `key → value` (given by their sha256) in the relay state the commit
    ///      certifies. Pre-condition (as verifyCommit): the caller checked the header's chain id.
    function verifyCertificate(
        Certificate calldata cert,
        ValidatorSet calldata relaySet,
        bytes32 trusted,
        bytes32 keyHash,
        bytes32 valueHash
    ) internal view {
        verifyCommit(cert.commit, relaySet, trusted);
        verifyMembership(cert.commit.header.stateRoot, keyHash, valueHash, cert.proof);
    }

    /// @dev §7.4 from step 2: validator set (the calldata set must be the trusted one, hash `trusted`, and
    ///      the header must name it); signatures in order; quorum. Pre-condition: the caller checked step 1,
    ///      the header's chain id (it holds the expected id to report a mismatch; this library holds nothing).
    function verifyCommit(Commit calldata commit, ValidatorSet calldata relaySet, bytes32 trusted) internal view {
        RelayHeader calldata h = commit.header;
        (bool isTrusted, uint256 n, uint256 addrs, uint256 powers) = trustedSet(relaySet, trusted);
        if (!isTrusted) revert ValidatorSetMismatch(trusted, setHashOf(relaySet));
        if (h.validatorsHash != trusted) revert ValidatorSetMismatch(trusted, h.validatorsHash);
        bytes32 digest = commitDigest(commit);

        // Signatures, in order (§7.4 step 4). The set is the trusted one byte for byte, so its canonical
        // layout holds: address i at addrs + 32 i, power i at powers + 32 i.
        Signature[] calldata sigs = commit.signatures;
        uint256[] memory seen = new uint256[]((n >> 8) + 1);
        uint256 signedPower;
        for (uint256 i; i < sigs.length; ++i) {
            uint256 index;
            bytes calldata sig;
            assembly ("memory-safe") {
                let elem := add(sigs.offset, calldataload(add(sigs.offset, shl(5, i))))
                index := calldataload(elem)
                let tail := add(elem, calldataload(add(elem, 32)))
                sig.length := calldataload(tail)
                sig.offset := add(tail, 32)
            }
            if (index >= n) revert SignatureInvalid(index);
            uint256 bit = 1 << (index & 255);
            uint256 word = seen[index >> 8];
            if (word & bit != 0) revert SignatureInvalid(index);
            seen[index >> 8] = word | bit;
            address expected;
            uint256 power;
            assembly ("memory-safe") {
                expected := calldataload(add(addrs, shl(5, index)))
                power := calldataload(add(powers, shl(5, index)))
            }
            address signer = recover(digest, sig);
            if (signer == address(0) || signer != expected) revert SignatureInvalid(index);
            signedPower += power;
        }
        uint256 totalPower;
        assembly ("memory-safe") {
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                totalPower := add(totalPower, calldataload(add(powers, shl(5, i))))
            }
        }
        if (3 * signedPower <= 2 * totalPower) revert QuorumNotReached(signedPower, totalPower);
    }

    /// @dev Whether the calldata `set` is the trusted set, by hashing its bytes in place: a byte string
    ///      whose sha256 is `trusted` is the canonical encoding of the set `trusted` was computed from
    ///      (protocol §7.1), so its layout is canonical too. Returns its size `n` and where its addresses
    ///      and powers start.
    function trustedSet(ValidatorSet calldata set, bytes32 trusted)
        internal
        view
        returns (bool ok, uint256 n, uint256 addrs, uint256 powers)
    {
        assembly ("memory-safe") {
            n := calldataload(add(set, 0x60)) // ed25519Keys.length, where a canonical encoding keeps it
            if lt(n, 0x10000) {
                // 3 head words, then 3 arrays of a length word and n words each
                let size := add(0x60, mul(3, shl(5, add(n, 1))))
                if iszero(gt(add(set, size), calldatasize())) {
                    let ptr := mload(0x40)
                    calldatacopy(ptr, set, size)
                    if staticcall(gas(), 2, ptr, size, 0x00, 32) { ok := eq(mload(0x00), trusted) }
                }
            }
            addrs := add(set, add(0x60, shl(5, add(n, 2))))
            powers := add(addrs, shl(5, add(n, 1)))
        }
    }

    /// @dev commit_sign_bytes (§7.3) of a commit: sha256(abi.encode(COMMIT_TAG, chainId, height, round,
    ///      header_hash)), with header_hash (§7.2) the sha256 of the header's canonical encoding, hashed
    ///      in place from calldata. A header whose calldata is not that encoding (chainId elsewhere than
    ///      right after the 8 head words, dirty padding, a height or time above uint64) is CodecInvalid:
    ///      the header does not encode (§7.4 step 3).
    function commitDigest(Commit calldata commit) internal view returns (bytes32 digest) {
        RelayHeader calldata h = commit.header;
        uint64 round = commit.round;
        bool ok;
        assembly ("memory-safe") {
            let len := calldataload(add(h, 0x100))
            ok := and(eq(calldataload(h), 0x100), lt(len, 0x10000))
            ok := and(ok, iszero(or(shr(64, calldataload(add(h, 0x20))), shr(64, calldataload(add(h, 0x40))))))
            let padded := and(add(len, 31), not(31))
            let size := add(0x120, padded)
            ok := and(ok, iszero(gt(add(h, size), calldatasize())))
            if and(ok, and(len, 31)) {
                let last := calldataload(add(h, sub(size, 32)))
                ok := iszero(and(last, sub(shl(shl(3, sub(padded, len)), 1), 1)))
            }
            if ok {
                let ptr := mload(0x40) // scratch beyond the free memory pointer, not allocated
                calldatacopy(ptr, h, size)
                ok := staticcall(gas(), 2, ptr, size, 0x00, 32)
                let headerHash := mload(0x00)
                // abi.encode(string tag, string chainId, uint64 height, uint64 round, bytes32 headerHash)
                mstore(ptr, 0xa0)
                mstore(add(ptr, 0x20), 0xe0)
                mstore(add(ptr, 0x40), calldataload(add(h, 0x20)))
                mstore(add(ptr, 0x60), round)
                mstore(add(ptr, 0x80), headerHash)
                mstore(add(ptr, 0xa0), COMMIT_TAG_LENGTH)
                mstore(add(ptr, 0xc0), COMMIT_TAG_WORD)
                mstore(add(ptr, 0xe0), len)
                calldatacopy(add(ptr, 0x100), add(h, 0x120), padded)
                ok := and(ok, staticcall(gas(), 2, ptr, add(0x100, padded), 0x00, 32))
                digest := mload(0x00)
            }
        }
        if (!ok) revert CodecInvalid();
    }

    /// @dev ecrecover of a canonical `r || s || v` (v 27/28, 0 < s <= n/2); zero if malformed.
    function recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r;
        uint256 s;
        uint256 v;
        assembly ("memory-safe") {
            r := calldataload(sig.offset)
            s := calldataload(add(sig.offset, 32))
            v := byte(0, calldataload(add(sig.offset, 64)))
        }
        if ((v != 27 && v != 28) || s == 0 || s > HALF_N) return address(0);
        return ecrecover(digest, uint8(v), r, bytes32(s));
    }

    /// @dev Membership of `key → value` (given by their sha256) under `root` (protocol §4). Bytes that
    ///      are not a proof encoding are CodecInvalid; an encoding that does not prove it ProofInvalid.
    function verifyMembership(bytes32 root, bytes32 keyHash, bytes32 valueHash, bytes calldata proof)
        internal
        view
    {
        uint256 len = proof.length;
        if (len < 3) revert CodecInvalid();
        uint256 n;
        assembly ("memory-safe") {
            n := shr(240, calldataload(proof.offset))
        }
        if (n > 256) revert CodecInvalid();
        uint256 end = 2 + 32 * n;
        if (len < end + 1) revert CodecInvalid();
        uint8 flag = uint8(proof[end]);
        if (flag == 0 && len == end + 1) revert ProofInvalid(); // no leaf: a non-membership proof
        if (flag != 1 || len != end + 65) revert CodecInvalid();
        bool ok;
        assembly ("memory-safe") {
            let leafKey := calldataload(add(proof.offset, add(end, 1)))
            let leafValue := calldataload(add(proof.offset, add(end, 33)))
            ok := and(eq(leafKey, keyHash), eq(leafValue, valueHash))
            if ok {
                let ptr := mload(0x40) // scratch beyond the free memory pointer, not allocated
                // leaf_hash = sha256(0x00 || kh || vh)
                mstore8(ptr, 0)
                mstore(add(ptr, 1), keyHash)
                mstore(add(ptr, 33), valueHash)
                ok := staticcall(gas(), 2, ptr, 65, 0x00, 32)
                let h := mload(0x00)
                // fold from depth n-1 up to 0: inner_hash = sha256(0x01 || left || right)
                mstore8(ptr, 1)
                let siblings := add(proof.offset, 2)
                for { let d := n } and(ok, gt(d, 0)) {} {
                    d := sub(d, 1)
                    let sib := calldataload(add(siblings, shl(5, d)))
                    switch and(shr(sub(255, d), keyHash), 1)
                    case 1 {
                        mstore(add(ptr, 1), sib)
                        mstore(add(ptr, 33), h)
                    }
                    default {
                        mstore(add(ptr, 1), h)
                        mstore(add(ptr, 33), sib)
                    }
                    ok := staticcall(gas(), 2, ptr, 65, 0x00, 32)
                    h := mload(0x00)
                }
                ok := and(ok, eq(h, root))
            }
        }
        if (!ok) revert ProofInvalid();
    }

    /// @dev Validates a set (non-empty, at most 65535, equal lengths, powers >= 1, distinct ed25519 keys, distinct
    ///      non-zero addresses: protocol §7.1) and returns sha256(abi.encode(keys, addresses, powers)). Linear in
    ///      the set size: each distinctness check is one pass over an open-addressing hash table in memory, salted
    ///      with the set's own hash, so no one can choose keys that collide (changing a key changes the salt).
    function checkedSetHash(bytes32[] memory keys, address[] memory addrs, uint64[] memory powers)
        internal
        pure
        returns (bytes32 setHash)
    {
        uint256 n = keys.length;
        if (n == 0 || n > 0xffff || addrs.length != n || powers.length != n) revert CodecInvalid();
        for (uint256 i; i < n; ++i) {
            if (powers[i] == 0) revert CodecInvalid();
        }
        setHash = sha256(abi.encode(keys, addrs, powers));
        uint256 size = 4;
        while (size < 2 * n) size <<= 1;
        uint256 dataKeys;
        uint256 dataAddrs;
        assembly ("memory-safe") {
            dataKeys := add(keys, 0x20)
            dataAddrs := add(addrs, 0x20)
        }
        uint256 at = firstRepeat(dataKeys, n, new uint256[](size), setHash, false);
        if (at < n) revert DuplicateValidatorKey(at, keys[at]);
        at = firstRepeat(dataAddrs, n, new uint256[](size), setHash, true);
        if (at < n) revert DuplicateValidatorAddress(at, addrs[at]);
    }

    /// @dev The index of the first of the `n` words at `data` equal to an earlier one (`n` if none; zero words
    ///      skipped if `skipZero`), with `table` (zeroed, length a power of two >= 2n) as the hash table of the
    ///      words seen (index + 1 per slot, 0 empty; linear probing).
    function firstRepeat(uint256 data, uint256 n, uint256[] memory table, bytes32 salt, bool skipZero)
        private
        pure
        returns (uint256 index)
    {
        assembly ("memory-safe") {
            index := n
            let mask := sub(mload(table), 1)
            let slots := add(table, 0x20)
            mstore(0x00, salt)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let v := mload(add(data, shl(5, i)))
                if or(v, iszero(skipZero)) {
                    mstore(0x20, v)
                    let h := and(keccak256(0x00, 0x40), mask)
                    for {} 1 {} {
                        let slot := add(slots, shl(5, h))
                        let held := mload(slot)
                        if iszero(held) {
                            mstore(slot, add(i, 1))
                            break
                        }
                        if eq(mload(add(data, shl(5, sub(held, 1)))), v) {
                            index := i
                            i := n
                            break
                        }
                        h := and(add(h, 1), mask)
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Canonical decoding (protocol §3.3) in place over calldata
    // ---------------------------------------------------------------------------------------------
}
