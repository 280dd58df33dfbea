// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title Where the bridge keeps the relay fees (protocol/SPEC.md §6.10): an ERC-7201 namespace, apart from the
///        router's own variables (slots 0 and 1 are the proven commitments and receipts, chains/ethereum/SPEC.md
///        §E2.1) and the energy app's namespace.
library FeeState {
    /// @dev The fees a packet's sender escrowed, in wei (one slot). The payer is the packet's sender: phase 1
    ///      writes `msg.sender` there, and the commitment binds the packet settled to the one sent.
    struct Record {
        uint64 verify;
        uint64 execute;
        uint64 confirm;
    }

    /// @custom:storage-location erc7201:parkrelay.fees.v1
    struct Layout {
        /// keccak256(abi.encode(dst, lane, sequence)) (the commitment's key) => the fees of the packet not settled
        mapping(bytes32 => Record) records;
        /// account => wei credited to it by settlements and not withdrawn yet
        mapping(address => uint256) owed;
    }

    /// keccak256(abi.encode(uint256(keccak256("parkrelay.fees.v1")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant SLOT = 0x1eab51b9167807f19726b6f3495c965f3ea9074f2f3faa4995052d37dbe40400;

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = SLOT;
        assembly ("memory-safe") {
            l.slot := slot
        }
    }
}

/// @title What the router (`ParkBridge`) and its phase-1 module (`ParkSender`) share: the router's storage layout,
///        the immutables both read and the events of phase 1.
/// @dev `ParkSender` runs by DELEGATECALL in the router's context, so both must see the same storage: it is declared
///      here once, and neither contract declares a state variable of its own (the energy app and the relay fees keep
///      theirs in ERC-7201 namespaces). Slots 0 and 1 are fixed by chains/ethereum/SPEC.md §E2.1 (the relay's light
///      client proves them); no slot may move (`tests/ethereum/test_fees.py` checks the layout). Everything here is
///      internal: the router has the getters, the module none.
abstract contract ParkBridgeCore {
    /// @notice Relay fees a send offers (protocol §6.10), in wei, each at most 2^64 - 1; the call's value is
    ///         exactly their sum.
    struct Fees {
        uint256 verify;
        uint256 execute;
        uint256 confirm;
    }

    /// @dev One slot: a lane to a counterparty (both directions) and what this chain knows of the relay's
    ///      capacities for packets it sends on it (protocol §6.8).
    struct Lane {
        uint64 nextSequence; // 0: lane not open
        uint64 configHeight; // relay height of the certified lane config held (0: genesis / none)
        uint64 configVersion; // bumped at every config: capacities are keyed by it, so old entries vanish
        bool limited; // whether the config lists any capacity (else nothing to look up on send)
    }

    // ---------------------------------------------------------------------------------------------
    // Storage. Slots 0 and 1 are fixed by SPEC §E2.1: the light client proves them. The energy app's state is
    // in its own ERC-7201 namespace (`EnergyState`), the relay fees' in theirs (`FeeState`).
    // ---------------------------------------------------------------------------------------------

    /// slot 0: keccak256(abi.encode(dst, lane, sequence)) => packet commitment (deleted at settlement)
    mapping(bytes32 => bytes32) internal _commitments;
    /// slot 1: keccak256(abi.encode(src, lane, sequence)) => ack commitment (never deleted)
    mapping(bytes32 => bytes32) internal _receipts;

    /// slot 2: hash of the trusted relay validator set (protocol §7.1), `ParkBridge.relaySetHash()`
    bytes32 internal _relaySetHash;
    /// slot 3: relay height of the commit that installed the trusted set (0: the constructor's)
    uint64 internal _relaySetHeight;
    /// slot 3: relay time (ms) the trusted set is trusted as of (protocol §7.8): the deployment's block time, then
    /// the newest verified header's; packed with `_relaySetHeight`, so no later slot moves
    uint64 internal _relayTrustedTimeMs;

    /// keccak256(abi.encode(counterparty, lane)) => the lane (next sequence to send, config version)
    mapping(bytes32 => Lane) internal _lanes;
    /// keccak256(abi.encode(laneKey, configVersion, keccak256(asset))) => capacity + 1 (0: not listed)
    mapping(bytes32 => uint256) internal _capacities;

    /// slot 6: this chain's id (packets' `src_chain` on send, `dst_chain` on receive)
    string internal _chainId;
    /// slot 7: the relay chain whose certificates this bridge accepts
    string internal _relayChainId;

    /// the app of kind 1 (delegatecalled)
    address internal immutable _energyApp;
    /// the app of kind 2
    address internal immutable _rightsApp;
    /// the app of kind 3
    address internal immutable _reputationApp;

    bytes32 internal immutable _chainIdHash;

    /// keccak256("*"): the default entry of a lane config (protocol §6.8)
    bytes32 internal constant ANY_ASSET_HASH = keccak256("*");

    /// @notice Phase 1: `packet` committed at `commitments/{dst}/{lane}/{sequence}`.
    event PacketSent(string indexed lane, uint64 indexed sequence, address indexed sender, bytes packet);
    /// @notice Phase 1: the sender (`payer`) of packet `sequence` to `dstChain` on `laneId` escrowed these relay fees
    ///         (wei) with it (protocol §6.10).
    event FeesEscrowed(
        string indexed lane,
        uint64 indexed sequence,
        address indexed payer,
        string dstChain,
        string laneId,
        uint64 verify,
        uint64 execute,
        uint64 confirm
    );

    constructor(bytes32 chainIdHash_, address energyApp_, address rightsApp_, address reputationApp_) {
        _chainIdHash = chainIdHash_;
        _energyApp = energyApp_;
        _rightsApp = rightsApp_;
        _reputationApp = reputationApp_;
    }
}
