// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IChargingRightApp, IEnergyApp, IReputationApp} from "./IParkApp.sol";
import {PacketCodec} from "./PacketCodec.sol";
import {FeeState, ParkBridgeCore} from "./ParkBridgeCore.sol";
import {
    CodecInvalid,
    InsufficientFunds,
    LaneInvalid,
    LaneOverCapacity,
    PacketTimeout,
    Unauthorized,
    WrongChain
} from "./ParkErrors.sol";

/// @title Phase 1, COMMIT (protocol/SPEC.md §6.3), of every packet kind, with the escrow of relay fees (§6.10): the
///        router's `send…` functions, run by DELEGATECALL in the router's context (chains/ethereum/SPEC.md §E2.2,
///        §E2.10).
/// @notice `ParkBridge` creates this module in its constructor and hands it its `send…` calls, calldata and all: the
///         module's functions have the router's signatures and act on the router's storage, balance and logs
///         (`ParkBridgeCore`), with the caller's `msg.sender` and `msg.value`, as the energy app does. (The router
///         with phase 1 in its own code would exceed the EIP-170 code size limit.) Called directly, the module
///         refuses everything (`Unauthorized`).
contract ParkSender is ParkBridgeCore {
    bytes32 internal constant RIGHT_ASSET_HASH = keccak256("charging_right");
    bytes32 internal constant REPUTATION_ASSET_HASH = keccak256("reputation");

    address private immutable _self;

    /// @dev Built by the router with its own immutables (the hash of its chain id, its apps).
    constructor(bytes32 chainIdHash_, address energyApp_, address rightsApp_, address reputationApp_)
        ParkBridgeCore(chainIdHash_, energyApp_, rightsApp_, reputationApp_)
    {
        _self = address(this);
    }

    modifier delegated() {
        if (address(this) == _self) revert Unauthorized(address(0), msg.sender);
        _;
    }

    /// @notice Send `amountWh` of `denom` to `receiver` on `dstChain`: escrow a leaving denom (the bridge needs an
    ///         allowance), burn a voucher going home (§2.3). Returns the sequence.
    function sendEnergy(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs
    ) external delegated returns (uint64 sequence) {
        sequence = _sendEnergy(dstChain, lane, denom, amountWh, receiver, timeoutMs);
    }

    /// @notice `sendEnergy` paying the relayers `fees` (protocol §6.10): the value sent is their sum, escrowed with
    ///         the packet until it settles.
    function sendEnergyWithFees(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable delegated returns (uint64 sequence) {
        FeeState.Record memory record = _checkFees(fees);
        sequence = _sendEnergy(dstChain, lane, denom, amountWh, receiver, timeoutMs);
        _escrowFees(dstChain, lane, sequence, record);
    }

    function _sendEnergy(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs
    ) internal returns (uint64 sequence) {
        sequence = _begin(dstChain, lane, receiver, timeoutMs, keccak256(bytes(denom)), amountWh);
        (bool ok, bytes memory ret) = _energyApp.delegatecall(
            abi.encodeCall(IEnergyApp.onSendEnergy, (msg.sender, dstChain, lane, denom, amountWh))
        );
        if (!ok) _bubble(ret);
        _commit(dstChain, lane, sequence, PacketCodec.KIND_ENERGY, abi.decode(ret, (bytes)), receiver, timeoutMs);
    }

    /// @notice Send the caller's live charging right to `receiver` on `dstChain`. `payload` is the right's
    ///         canonical payload as this park recorded it (`ChargingRights.RightCreated`); the packet's timeout must
    ///         not be after the slot starts. The right is escrowed, or burned if it goes home along its trace.
    function sendRight(
        string calldata dstChain,
        string calldata lane,
        bytes calldata payload,
        string calldata receiver,
        uint64 timeoutMs
    ) external delegated returns (uint64 sequence) {
        sequence = _sendRight(dstChain, lane, payload, receiver, timeoutMs);
    }

    /// @notice `sendRight` paying the relayers `fees` (protocol §6.10), as `sendEnergyWithFees`.
    function sendRightWithFees(
        string calldata dstChain,
        string calldata lane,
        bytes calldata payload,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable delegated returns (uint64 sequence) {
        FeeState.Record memory record = _checkFees(fees);
        sequence = _sendRight(dstChain, lane, payload, receiver, timeoutMs);
        _escrowFees(dstChain, lane, sequence, record);
    }

    function _sendRight(
        string calldata dstChain,
        string calldata lane,
        bytes calldata payload,
        string calldata receiver,
        uint64 timeoutMs
    ) internal returns (uint64 sequence) {
        sequence = _begin(dstChain, lane, receiver, timeoutMs, RIGHT_ASSET_HASH, 1);
        IChargingRightApp(_rightsApp).onSendRight(msg.sender, dstChain, lane, sequence, payload, timeoutMs);
        _commit(dstChain, lane, sequence, PacketCodec.KIND_CHARGING_RIGHT, payload, receiver, timeoutMs);
    }

    /// @notice Attest to `dstChain` the score this park's market holds for `subject` now (read from state).
    function sendReputation(
        string calldata dstChain,
        string calldata lane,
        string calldata subject,
        string calldata receiver,
        uint64 timeoutMs
    ) external delegated returns (uint64 sequence) {
        sequence = _sendReputation(dstChain, lane, subject, receiver, timeoutMs);
    }

    /// @notice `sendReputation` paying the relayers `fees` (protocol §6.10), as `sendEnergyWithFees`.
    function sendReputationWithFees(
        string calldata dstChain,
        string calldata lane,
        string calldata subject,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable delegated returns (uint64 sequence) {
        FeeState.Record memory record = _checkFees(fees);
        sequence = _sendReputation(dstChain, lane, subject, receiver, timeoutMs);
        _escrowFees(dstChain, lane, sequence, record);
    }

    function _sendReputation(
        string calldata dstChain,
        string calldata lane,
        string calldata subject,
        string calldata receiver,
        uint64 timeoutMs
    ) internal returns (uint64 sequence) {
        sequence = _begin(dstChain, lane, receiver, timeoutMs, REPUTATION_ASSET_HASH, 1);
        bytes memory payload = IReputationApp(_reputationApp).onSendReputation(msg.sender, subject);
        _commit(dstChain, lane, sequence, PacketCodec.KIND_REPUTATION, payload, receiver, timeoutMs);
    }

    /// @dev Protocol §6.10, before anything else of the send: each fee at most 2^64 - 1 (`CodecInvalid`), the value
    ///      sent exactly their sum (`InsufficientFunds` short, `CodecInvalid` over).
    function _checkFees(Fees calldata fees) internal view returns (FeeState.Record memory) {
        uint256 verify = fees.verify;
        uint256 execute = fees.execute;
        uint256 confirm = fees.confirm;
        if ((verify | execute | confirm) > type(uint64).max) revert CodecInvalid();
        uint256 total = verify + execute + confirm; // < 2^66: no overflow
        if (msg.value != total) {
            if (msg.value < total) revert InsufficientFunds(msg.value, total);
            revert CodecInvalid();
        }
        return FeeState.Record(uint64(verify), uint64(execute), uint64(confirm));
    }

    /// @dev Protocol §6.10, in the send's transaction: the fee record of the packet, keyed like its commitment, and
    ///      `FeesEscrowed` right after its `PacketSent`. No fees (and so no value): nothing, as a plain send.
    function _escrowFees(string calldata dstChain, string calldata lane, uint64 sequence, FeeState.Record memory r)
        internal
    {
        if (r.verify == 0 && r.execute == 0 && r.confirm == 0) return;
        FeeState.layout().records[keccak256(abi.encode(dstChain, lane, sequence))] = r;
        emit FeesEscrowed(lane, sequence, msg.sender, dstChain, lane, r.verify, r.execute, r.confirm);
    }

    /// @dev The checks every kind shares; takes the sequence (before any app call: no reentrancy can reuse it).
    function _begin(
        string calldata dstChain,
        string calldata lane,
        string calldata receiver,
        uint64 timeoutMs,
        bytes32 assetHash,
        uint256 tokens
    ) internal returns (uint64 sequence) {
        if (keccak256(bytes(dstChain)) == _chainIdHash) revert WrongChain(string.concat("not ", _chainId), dstChain);
        bytes32 laneKey = keccak256(abi.encode(dstChain, lane));
        Lane storage l = _lanes[laneKey];
        sequence = l.nextSequence;
        if (sequence == 0) revert LaneInvalid(dstChain, lane);
        if (timeoutMs == 0) revert CodecInvalid();
        if (timeoutMs <= block.timestamp * 1000) revert PacketTimeout(timeoutMs, block.timestamp * 1000);
        if (!PacketCodec.isText(bytes(receiver))) revert CodecInvalid();
        if (l.limited) _checkCapacity(laneKey, l.configVersion, assetHash, tokens);
        l.nextSequence = sequence + 1;
    }

    /// @dev Protocol §6.3 step 1: the relay refuses for good more tokens than the bucket's capacity for the asset
    ///      (its own entry, else `*`; neither: not limited), so the packet must not be committed.
    function _checkCapacity(bytes32 laneKey, uint64 version, bytes32 assetHash, uint256 tokens) internal view {
        uint256 cap = _capacities[keccak256(abi.encode(laneKey, version, assetHash))];
        if (cap == 0) cap = _capacities[keccak256(abi.encode(laneKey, version, ANY_ASSET_HASH))];
        if (cap != 0 && tokens > cap - 1) revert LaneOverCapacity(tokens, cap - 1);
    }

    function _commit(
        string calldata dstChain,
        string calldata lane,
        uint64 sequence,
        uint256 kind,
        bytes memory payload,
        string calldata receiver,
        uint64 timeoutMs
    ) internal {
        if (payload.length > PacketCodec.MAX_PAYLOAD) revert CodecInvalid();
        bytes memory packet = abi.encode(
            _chainId,
            dstChain,
            lane,
            sequence,
            uint8(kind),
            payload,
            PacketCodec.hexAddress(msg.sender),
            receiver,
            timeoutMs
        );
        _commitments[keccak256(abi.encode(dstChain, lane, sequence))] = sha256(packet);
        emit PacketSent(lane, sequence, msg.sender, packet);
    }

    /// @dev Re-raise an app's revert as is (its custom error and data).
    function _bubble(bytes memory ret) internal pure {
        assembly ("memory-safe") {
            revert(add(ret, 32), mload(ret))
        }
    }
}
