// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {CodecInvalid} from "./ParkErrors.sol";

/// @title The packet codec (protocol/SPEC.md §2, §3): canonical ABI layouts checked in place over calldata.
/// @notice Every park contract parses packets, payloads and acks with this library, never with `abi.decode`
///         (which accepts non-canonical encodings): a byte string has at most one accepted encoding, so a
///         commitment (sha256 of the bytes) names exactly one value. `PacketCodecView` exposes the checks as
///         views; `tests/ethereum/test_codec_vectors.py` replays `protocol/vectors/` against it.
/// @dev Two strengths of packet check. `checkPacket` is what phase 3 and 4 run: the layout and every rule of
///      §2.2 except the identifier charset of src/dst/lane and the UTF-8 of sender/receiver, which the relay's
///      strict decoder checked in phase 2 before certifying the commitment (and dst is compared with this
///      chain, src/lane key only records that honest packets wrote). `checkPacketStrict` adds them: it accepts
///      exactly what `protocol.codec.decode_packet` accepts.
library PacketCodec {
    uint256 internal constant MAX_ID = 64;
    uint256 internal constant MAX_STRING = 256;
    uint256 internal constant MAX_PAYLOAD = 4096;
    uint8 internal constant ACK_SUCCESS = 1;
    uint8 internal constant ACK_ERROR = 2;
    uint256 internal constant ASCII_HIGH_BITS = 0x8080808080808080808080808080808080808080808080808080808080808080;

    // packet head words (§3.1)
    uint256 internal constant SRC = 0;
    uint256 internal constant DST = 1;
    uint256 internal constant LANE = 2;
    uint256 internal constant SEQUENCE = 3;
    uint256 internal constant KIND = 4;
    uint256 internal constant PAYLOAD = 5;
    uint256 internal constant SENDER = 6;
    uint256 internal constant RECEIVER = 7;
    uint256 internal constant TIMEOUT = 8;

    uint256 internal constant KIND_ENERGY = 1;
    uint256 internal constant KIND_CHARGING_RIGHT = 2;
    uint256 internal constant KIND_REPUTATION = 3;

    // ---------------------------------------------------------------------------------------------
    // Packets and acks
    // ---------------------------------------------------------------------------------------------

    /// @dev A packet: the canonical layout of (string, string, string, uint64, uint8, bytes, string, string,
    ///      uint64) and the rules of §2.2 but the charset and UTF-8 ones (see the library notes): accepts
    ///      exactly the bytes abi.decode-then-re-encode gives back, reverts CodecInvalid on anything else.
    function checkPacket(bytes calldata packet) internal pure {
        if (!layoutOk(packet, 9, 0xE7)) revert CodecInvalid();
        uint256 sequence = word(packet, 3);
        uint256 kind = word(packet, 4);
        uint256 timeout = word(packet, 8);
        if (sequence == 0 || sequence > type(uint64).max || kind == 0 || kind > 3) revert CodecInvalid();
        if (timeout == 0 || timeout > type(uint64).max) revert CodecInvalid();
        uint256 srcLength = dyn(packet, 0).length;
        uint256 dstLength = dyn(packet, 1).length;
        uint256 laneLength = dyn(packet, 2).length;
        uint256 senderLength = dyn(packet, 6).length;
        uint256 receiverLength = dyn(packet, 7).length;
        if (
            srcLength == 0 || srcLength > MAX_ID || dstLength == 0 || dstLength > MAX_ID || laneLength == 0
                || laneLength > MAX_ID || dyn(packet, 5).length > MAX_PAYLOAD || senderLength == 0
                || senderLength > MAX_STRING || receiverLength == 0 || receiverLength > MAX_STRING
        ) revert CodecInvalid();
        if (srcLength == dstLength && keccak256(dyn(packet, 0)) == keccak256(dyn(packet, 1))) revert CodecInvalid();
    }

    /// @dev An acknowledgement (uint8 status, string code, bytes result), or (…, string relayer) when the relayer
    ///      that executed the packet named itself (§2.4, §6.10): the two forms differ in their first offset word
    ///      (0x60, 0x80), and `relayer` is an identifier (so a four-field ack with an empty one is refused). Returns
    ///      status == 1.
    function checkAck(bytes calldata ack) internal pure returns (bool success) {
        bool named = word(ack, 1) == 0x80;
        if (named ? !layoutOk(ack, 4, 0xE) : !layoutOk(ack, 3, 0x6)) revert CodecInvalid();
        if (named && !isId(dyn(ack, 3))) revert CodecInvalid();
        uint256 status = word(ack, 0);
        bytes calldata code = dyn(ack, 1);
        if (status == 0 || status > 2 || code.length == 0 || code.length > MAX_STRING) revert CodecInvalid();
        if (dyn(ack, 2).length > MAX_PAYLOAD) revert CodecInvalid();
        success = status == ACK_SUCCESS;
        if (success != (keccak256(code) == keccak256("ok"))) revert CodecInvalid();
        if (!isUtf8(code)) revert CodecInvalid();
    }

    /// @dev `checkPacket` and the identifier charset of src, dst and lane and the UTF-8 of sender and receiver:
    ///      exactly the bytes `protocol.codec.decode_packet` accepts.
    function checkPacketStrict(bytes calldata packet) internal pure {
        checkPacket(packet);
        if (!isId(dyn(packet, SRC)) || !isId(dyn(packet, DST)) || !isId(dyn(packet, LANE))) revert CodecInvalid();
        if (!isUtf8(dyn(packet, SENDER)) || !isUtf8(dyn(packet, RECEIVER))) revert CodecInvalid();
    }

    // ---------------------------------------------------------------------------------------------
    // Payloads (§2.3): false for anything the kind's strict decoder refuses (the bridge acks `payload.invalid`)
    // ---------------------------------------------------------------------------------------------

    /// @dev Energy `(string denom, uint256 amount_wh)`: denom 1-256 bytes of UTF-8, amount >= 1. `utf8` false
    ///      skips the UTF-8 check (phase 3 of a packet whose payload the relay decoded to rate-limit it, §6.7).
    function isEnergyPayload(bytes calldata p, bool utf8) internal pure returns (bool) {
        if (!layoutOk(p, 2, 0x1)) return false;
        bytes calldata denom = dyn(p, 0);
        if (denom.length == 0 || denom.length > MAX_STRING || word(p, 1) == 0) return false;
        return !utf8 || isUtf8(denom);
    }

    /// @dev Charging right `(string right_id, string home_park, string station, string transformer, uint64
    ///      power_kw, uint64 slot_start_ms, uint64 slot_end_ms)`: strings 1-256 bytes of UTF-8, home_park an
    ///      identifier, power >= 1, the slot ending after it starts. Nobody decoded it before (the relay only
    ///      counts one token per right), so everything is checked here.
    function isRightPayload(bytes calldata p) internal pure returns (bool) {
        if (!layoutOk(p, 7, 0xF)) return false;
        uint256 power = word(p, 4);
        uint256 start = word(p, 5);
        uint256 end = word(p, 6);
        if (power == 0 || power > type(uint64).max || end > type(uint64).max || end <= start) return false;
        if (!isId(dyn(p, 1))) return false;
        return isText(dyn(p, 0)) && isText(dyn(p, 2)) && isText(dyn(p, 3));
    }

    /// @dev Reputation `(string subject, uint64 score, string model, uint64 source_height)`: strings 1-256
    ///      bytes of UTF-8, integers within uint64.
    function isReputationPayload(bytes calldata p) internal pure returns (bool) {
        if (!layoutOk(p, 4, 0x5)) return false;
        if (word(p, 1) > type(uint64).max || word(p, 3) > type(uint64).max) return false;
        return isText(dyn(p, 0)) && isText(dyn(p, 2));
    }

    // ---------------------------------------------------------------------------------------------
    // Layout
    // ---------------------------------------------------------------------------------------------
    /// @dev True iff `data` is exactly the canonical ABI layout of a tuple of `headWords` one-word
    ///      members, those flagged in `dynMask` (bit i: member i) being `bytes`/`string`: offsets in
    ///      order with no gaps, every tail inside the data, zero padding, and nothing after the last
    ///      tail. Static members are not checked (their callers range-check them).
    function layoutOk(bytes calldata data, uint256 headWords, uint256 dynMask) internal pure returns (bool ok) {
        assembly ("memory-safe") {
            let base := data.offset
            let total := data.length
            let expect := shl(5, headWords)
            ok := iszero(lt(total, expect))
            for { let i := 0 } and(ok, lt(i, headWords)) { i := add(i, 1) } {
                if and(shr(i, dynMask), 1) {
                    ok := and(eq(calldataload(add(base, shl(5, i))), expect), iszero(gt(add(expect, 32), total)))
                    if ok {
                        let len := calldataload(add(base, expect))
                        ok := iszero(gt(len, total))
                        if ok {
                            let padded := and(add(len, 31), not(31))
                            let end := add(add(expect, 32), padded)
                            ok := iszero(gt(end, total))
                            if and(ok, and(len, 31)) {
                                let last := calldataload(add(base, sub(end, 32)))
                                ok := iszero(and(last, sub(shl(shl(3, sub(padded, len)), 1), 1)))
                            }
                            expect := end
                        }
                    }
                }
            }
            if ok { ok := eq(expect, total) }
        }
    }

    /// @dev Head word `i` of an ABI tuple in calldata.
    function word(bytes calldata data, uint256 i) internal pure returns (uint256 w) {
        assembly ("memory-safe") {
            w := calldataload(add(data.offset, shl(5, i)))
        }
    }

    /// @dev The `bytes`/`string` member whose offset is head word `i`; only after layoutOk.
    function dyn(bytes calldata data, uint256 i) internal pure returns (bytes calldata out) {
        assembly ("memory-safe") {
            let at := add(data.offset, calldataload(add(data.offset, shl(5, i))))
            out.length := calldataload(at)
            out.offset := add(at, 32)
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Strings
    // ---------------------------------------------------------------------------------------------

    /// @dev Whether `denom` starts with `{lane}/{chain}/` (protocol §2.3: a voucher that came from `chain`).
    function startsWithHop(bytes calldata denom, bytes calldata lane, bytes calldata chain)
        internal
        pure
        returns (bool)
    {
        uint256 l = lane.length;
        uint256 c = chain.length;
        if (denom.length < l + c + 2) return false;
        if (denom[l] != "/" || denom[l + c + 1] != "/") return false;
        return keccak256(denom[:l]) == keccak256(lane) && keccak256(denom[l + 1:l + 1 + c]) == keccak256(chain);
    }

    /// @dev Protocol §2.1 identifier: `[a-z0-9][a-z0-9._-]{0,63}`.
    function isId(bytes memory s) internal pure returns (bool) {
        uint256 n = s.length;
        if (n == 0 || n > MAX_ID) return false;
        for (uint256 i; i < n; ++i) {
            bytes1 c = s[i];
            bool alnum = (c >= "a" && c <= "z") || (c >= "0" && c <= "9");
            if (!alnum && (i == 0 || (c != "." && c != "_" && c != "-"))) return false;
        }
        return true;
    }

    /// @dev 1 to 256 bytes of valid UTF-8 (what the protocol's strict decoders accept).
    function isText(bytes calldata s) internal pure returns (bool) {
        return s.length != 0 && s.length <= MAX_STRING && isUtf8(s);
    }

    /// @dev RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
    ///      ASCII runs are skipped a word at a time (no byte of the word has its top bit set).
    function isUtf8(bytes calldata s) internal pure returns (bool) {
        uint256 n = s.length;
        uint256 i;
        while (i < n) {
            uint256 left = n - i;
            uint256 w;
            assembly ("memory-safe") {
                w := calldataload(add(s.offset, i))
            }
            if (left < 32) w &= ~(type(uint256).max >> (left << 3)); // only the string's own bytes
            if (w & ASCII_HIGH_BITS == 0) {
                i += left < 32 ? left : 32;
                continue;
            }
            uint8 c = uint8(s[i]);
            if (c < 0x80) {
                ++i;
                continue;
            }
            uint256 more;
            uint8 lo = 0x80;
            uint8 hi = 0xBF;
            if (c >= 0xC2 && c <= 0xDF) {
                more = 1;
            } else if (c == 0xE0) {
                more = 2;
                lo = 0xA0;
            } else if (c == 0xED) {
                more = 2;
                hi = 0x9F;
            } else if (c >= 0xE1 && c <= 0xEF) {
                more = 2;
            } else if (c == 0xF0) {
                more = 3;
                lo = 0x90;
            } else if (c == 0xF4) {
                more = 3;
                hi = 0x8F;
            } else if (c >= 0xF1 && c <= 0xF3) {
                more = 3;
            } else {
                return false;
            }
            if (i + more >= n) return false;
            uint8 c1 = uint8(s[i + 1]);
            if (c1 < lo || c1 > hi) return false;
            for (uint256 k = 2; k <= more; ++k) {
                uint8 ck = uint8(s[i + k]);
                if (ck < 0x80 || ck > 0xBF) return false;
            }
            i += more + 1;
        }
        return true;
    }

    /// @dev `0x` + 40 lowercase hex digits (SPEC §E1) → the address; ok false for anything else.
    function parseAddress(bytes calldata s) internal pure returns (bool ok, address account) {
        if (s.length != 42) return (false, address(0));
        uint256 head;
        uint256 tail;
        assembly ("memory-safe") {
            ok := eq(shr(240, calldataload(s.offset)), 0x3078) // "0x"
            head := calldataload(add(s.offset, 2)) // digits 0..31
            // digits 32..39 in the low 8 bytes, ASCII '0' in the 24 bytes above them
            tail := or(shr(192, calldataload(add(s.offset, 34))), shl(64, mul(0x30, div(not(0), 0xff))))
        }
        (bool okHead, uint256 high) = hexDigits(head);
        (bool okTail, uint256 low) = hexDigits(tail);
        ok = ok && okHead && okTail;
        account = address(uint160((high << 32) | low));
    }

    /// @dev `0x` + 40 hex digits of either case (a fee payee, protocol §6.10) → the address; ok false for anything
    ///      else. Letters are folded to lowercase first: only bytes with bit 6 set (0x40..0x7f) get bit 5, so no
    ///      byte outside `A-F` becomes a lowercase hex digit.
    function parseAnyCaseAddress(bytes calldata s) internal pure returns (bool ok, address account) {
        if (s.length != 42) return (false, address(0));
        uint256 head;
        uint256 tail;
        assembly ("memory-safe") {
            ok := eq(shr(240, calldataload(s.offset)), 0x3078) // "0x"
            head := calldataload(add(s.offset, 2))
            tail := or(shr(192, calldataload(add(s.offset, 34))), shl(64, mul(0x30, div(not(0), 0xff))))
        }
        uint256 fold = (type(uint256).max / 0xff) * 0x20;
        (bool okHead, uint256 high) = hexDigits(head | ((head >> 1) & fold));
        (bool okTail, uint256 low) = hexDigits(tail | ((tail >> 1) & fold));
        ok = ok && okHead && okTail;
        account = address(uint160((high << 32) | low));
    }

    /// @dev 32 ASCII bytes, each in [0-9a-f], → their 128-bit value; all bytes at once (SWAR).
    function hexDigits(uint256 x) internal pure returns (bool ok, uint256 v) {
        uint256 ones = type(uint256).max / 0xff; // 0x0101…01
        unchecked {
            uint256 letter = (x >> 6) & ones; // bit 6 set: 0x40..0x7f, a letter if valid
            uint256 highNibble = (x >> 4) & (ones * 0x0f);
            uint256 lowNibble = x & (ones * 0x0f);
            ok = x & (ones * 0x80) == 0 // ASCII
                && highNibble == ones * 3 + letter * 3 // 0x3_ for digits, 0x6_ for letters
                && (lowNibble + ones * 6 + letter * 3) & (ones * 0x10) == 0 // digit <= 9, letter <= 6
                && ((lowNibble + ones * 0x0f) | ((ones - letter) << 4)) & (ones * 0x10) == ones * 0x10; // letter >= 1
            v = lowNibble + letter * 9; // one nibble value per byte
            // pack: pairs of nibbles into bytes, bytes into 16-bit words, … (earlier digits more significant)
            v = (v | (v >> 4)) & ((type(uint256).max / 0xffff) * 0xff);
            v = (v | (v >> 8)) & ((type(uint256).max / 0xffffffff) * 0xffff);
            v = (v | (v >> 16)) & ((type(uint256).max / type(uint64).max) * type(uint32).max);
            v = (v | (v >> 32)) & ((type(uint256).max / type(uint128).max) * type(uint64).max);
            v = (v | (v >> 64)) & type(uint128).max;
        }
    }

    /// @dev The lowercase `0x` hex form of an address (SPEC §E1), as the bridge writes `sender`.
    function hexAddress(address a) internal pure returns (string memory out) {
        out = new string(42);
        assembly ("memory-safe") {
            let p := add(out, 32)
            mstore8(p, 48) // '0'
            mstore8(add(p, 1), 120) // 'x'
            let v := a
            for { let i := 41 } gt(i, 1) { i := sub(i, 1) } {
                let d := and(v, 15)
                mstore8(add(p, i), add(d, add(48, mul(gt(d, 9), 39))))
                v := shr(4, v)
            }
        }
    }

    /// @dev Decimal ASCII without padding (protocol §5 `{sequence}`).
    function decimal(uint256 v) internal pure returns (bytes memory out) {
        uint256 digits = 1;
        for (uint256 t = v; t >= 10; t /= 10) {
            ++digits;
        }
        out = new bytes(digits);
        assembly ("memory-safe") {
            let p := add(out, 32)
            for { let i := digits } gt(i, 0) {} {
                i := sub(i, 1)
                mstore8(add(p, i), add(48, mod(v, 10)))
                v := div(v, 10)
            }
        }
    }
}
