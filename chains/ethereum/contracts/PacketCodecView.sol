// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {PacketCodec} from "./PacketCodec.sol";
import {RelayVerifier} from "./RelayVerifier.sol";
import {CodecInvalid} from "./ParkErrors.sol";

/// @title `PacketCodec` and the verifier's proof check as views, for tools and the conformance replay.
/// @notice Each function runs the very library code the bridge runs and answers what the bridge would derive, or
///         reverts with the bridge's error (`CodecInvalid`, `ProofInvalid`). `tests/ethereum/test_codec_vectors.py`
///         replays `protocol/vectors/` against it (the vectors' README). Not deployed with a park: nothing
///         depends on it; anyone may deploy it to check bytes before sending them.
contract PacketCodecView {
    using PacketCodec for bytes;

    /// @notice The packet check phases 3 and 4 run (`strict` false) or the full §2.2 rules (`strict` true);
    ///         returns the packet commitment.
    function packetCommitment(bytes calldata packet, bool strict) external pure returns (bytes32) {
        if (strict) packet.checkPacketStrict();
        else packet.checkPacket();
        return sha256(packet);
    }

    /// @notice The ack check phase 4 runs (three fields, or four naming the relayer, §2.4); returns (success, ack
    ///         commitment).
    function ackCommitment(bytes calldata ack) external pure returns (bool success, bytes32 commitment) {
        success = ack.checkAck();
        commitment = sha256(ack);
    }

    /// @notice Whether a payload of `kind` is what the kind's app accepts in phase 3 (with the UTF-8 check for
    ///         energy, which phase 3 leaves to the relay); reverts CodecInvalid for an unknown kind.
    function payloadValid(uint8 kind, bytes calldata payload) external pure returns (bool) {
        if (kind == PacketCodec.KIND_ENERGY) return payload.isEnergyPayload(true);
        if (kind == PacketCodec.KIND_CHARGING_RIGHT) return payload.isRightPayload();
        if (kind == PacketCodec.KIND_REPUTATION) return payload.isReputationPayload();
        revert CodecInvalid();
    }

    /// @notice The outcome record (§2.5) the bridge asks a settlement certificate to prove; reverts CodecInvalid
    ///         where protocol §2.5 forbids the value (an unknown outcome, a timeout with an ack commitment).
    function outcomeRecord(uint8 outcome, bytes32 packetCommitment_, bytes32 ackCommitment_)
        external
        pure
        returns (bytes memory)
    {
        if (outcome != 1 && outcome != 2) revert CodecInvalid();
        if ((outcome == 2) != (ackCommitment_ == bytes32(0))) revert CodecInvalid();
        return abi.encode(outcome, packetCommitment_, ackCommitment_);
    }

    /// @notice The outcome record with the payees of the relay fees (§2.5, §6.10), as `ParkBridge.settle` rebuilds
    ///         it: the three-field record when all three are "", else the six-field one.
    function outcomeRecordWithPayees(
        uint8 outcome,
        bytes32 packetCommitment_,
        bytes32 ackCommitment_,
        string calldata verifyPayee,
        string calldata executePayee,
        string calldata confirmPayee
    ) external pure returns (bytes memory) {
        if (outcome != 1 && outcome != 2) revert CodecInvalid();
        if ((outcome == 2) != (ackCommitment_ == bytes32(0))) revert CodecInvalid();
        if (bytes(verifyPayee).length == 0 && bytes(executePayee).length == 0 && bytes(confirmPayee).length == 0) {
            return abi.encode(outcome, packetCommitment_, ackCommitment_);
        }
        return abi.encode(outcome, packetCommitment_, ackCommitment_, verifyPayee, executePayee, confirmPayee);
    }

    /// @notice The relay paths (§5) the bridge derives for a checked packet: `relay/verified/…`, `relay/outcome/…`.
    function relayPaths(bytes calldata packet) external pure returns (bytes memory verified, bytes memory outcome) {
        packet.checkPacket();
        bytes memory tail = abi.encodePacked(
            packet.dyn(PacketCodec.SRC), "/", packet.dyn(PacketCodec.DST), "/", packet.dyn(PacketCodec.LANE), "/",
            PacketCodec.decimal(packet.word(PacketCodec.SEQUENCE))
        );
        return (abi.encodePacked("relay/verified/", tail), abi.encodePacked("relay/outcome/", tail));
    }

    /// @notice The value hash a lane-config certificate must prove (§6.8): sha256(abi.encode(assets, capacities)).
    function laneConfigValueHash(string[] calldata assets, uint64[] calldata capacities)
        external
        pure
        returns (bytes32)
    {
        return sha256(abi.encode(assets, capacities));
    }

    /// @notice Membership of `key → value` under `root` by a protocol §4 proof (the bridge's check; it has no
    ///         non-membership check: a proof ending in an empty leaf is ProofInvalid).
    function verifyMembership(bytes32 root, bytes calldata key, bytes calldata value, bytes calldata proof)
        external
        view
        returns (bool)
    {
        RelayVerifier.verifyMembership(root, sha256(key), sha256(value), proof);
        return true;
    }
}
