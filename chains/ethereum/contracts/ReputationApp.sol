// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IParkApp, IReputationApp} from "./IParkApp.sol";
import {PacketCodec} from "./PacketCodec.sol";
import {CodecInvalid, ReputationUnknown, Unauthorized} from "./ParkErrors.sol";

interface IDeliveryScore {
    /// Basis points 0..10000 of a participant's delivered over contracted energy; `has` false if none contracted.
    function scoreOf(address participant) external view returns (bool has, uint64 scoreBps);
}

/// @title Reputation, kind 3 (protocol/SPEC.md §2.3; the issue 12 rules).
/// @notice Sending attests what this park's market scores a participant, read from the `DeliveryRecord` at send
///         time (model `eth-delivery-record/v1`, docs/research.md#seed-001: delivered vs contracted energy in basis points), never
///         from the sender; `source_height` is the block number it was read at. Receiving keeps the newest
///         attestation per (source park, subject, model): one with a source height at or below the one held is
///         the error ack `reputation.stale` and replaces nothing. Nothing is escrowed, so nothing is refunded.
contract ReputationApp is IReputationApp {
    using PacketCodec for bytes;

    /// @notice The reputation model of the scores this park attests.
    string public constant MODEL = "eth-delivery-record/v1";

    struct Imported {
        uint64 score;
        uint64 sourceHeight;
        uint64 recordedAt; // block number of the import
        bool exists;
    }

    /// @notice The router that alone calls the packet hooks.
    address public immutable bridge;
    /// @notice The market's delivery record the attested scores are read from.
    address public immutable deliveryRecord;

    mapping(bytes32 key => Imported) internal _imported; // keccak256(abi.encode(src, subject, model))

    /// @notice An attestation from another park was recorded (`key` as in `importedKey`).
    event ReputationImported(bytes32 indexed key, uint64 score, uint64 sourceHeight);

    constructor(address bridge_, address deliveryRecord_) {
        if (bridge_ == address(0) || deliveryRecord_ == address(0)) revert CodecInvalid();
        bridge = bridge_;
        deliveryRecord = deliveryRecord_;
    }

    modifier onlyBridge() {
        if (msg.sender != bridge) revert Unauthorized(bridge, msg.sender);
        _;
    }

    /// @inheritdoc IReputationApp
    /// @dev `subject` is a participant's account in the park's form (`0x` + 40 lowercase hex digits, SPEC §E1).
    function onSendReputation(address, string calldata subject) external view returns (bytes memory payload) {
        (bool ok, address participant) = bytes(subject).parseAddress();
        if (!ok) revert CodecInvalid();
        (bool has, uint64 score) = IDeliveryScore(deliveryRecord).scoreOf(participant);
        if (!has) revert ReputationUnknown(subject);
        payload = abi.encode(subject, score, MODEL, uint64(block.number));
    }

    /// @inheritdoc IParkApp
    function onRecvPacket(bytes calldata packet) external onlyBridge returns (string memory) {
        bytes calldata p = packet.dyn(PacketCodec.PAYLOAD);
        // the relay does not decode this payload: everything is checked here (§3.3)
        if (!p.isReputationPayload()) return "payload.invalid";
        // as for every kind (protocol §2.3): the receiver is an account here, and a refusal records nothing
        (bool ok, address to) = packet.dyn(PacketCodec.RECEIVER).parseAddress();
        if (!ok || to == address(0)) return "receiver.invalid";
        bytes32 key = keccak256(abi.encode(packet.dyn(PacketCodec.SRC), p.dyn(0), p.dyn(2)));
        uint64 sourceHeight = uint64(p.word(3));
        Imported storage held = _imported[key];
        if (held.exists && sourceHeight <= held.sourceHeight) return "reputation.stale";
        uint64 score = uint64(p.word(1));
        _imported[key] = Imported(score, sourceHeight, uint64(block.number), true);
        emit ReputationImported(key, score, sourceHeight);
        return "";
    }

    /// @inheritdoc IParkApp
    function onSettlePacket(bytes calldata, bool) external view onlyBridge {}

    /// @notice The key of imported reputation of `subject` from `srcChain` under `model`.
    function importedKey(string calldata srcChain, string calldata subject, string calldata model)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(srcChain, subject, model));
    }

    /// @notice Reputation imported from `srcChain` for (`subject`, `model`); `exists` false if none.
    function importedReputation(string calldata srcChain, string calldata subject, string calldata model)
        external
        view
        returns (uint64 score, uint64 sourceHeight, uint64 recordedAt, bool exists)
    {
        Imported storage r = _imported[importedKey(srcChain, subject, model)];
        return (r.score, r.sourceHeight, r.recordedAt, r.exists);
    }
}
