// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title What the router (`ParkBridge`) asks of the app of one packet kind (chains/ethereum/SPEC.md §E2.4).
/// @notice The router owns the protocol: lanes, sequences, commitments, receipts, relay certificates. An app owns
///         one asset kind: what phase 1 takes from the sender and writes in the payload, what phase 3 does with a
///         verified packet, what phase 4 gives back. Apps are called only by their router (`Unauthorized`).
/// @dev Each hook gets the whole canonical packet (the router checked its layout, `PacketCodec.checkPacket`), so an
///      app reads the fields it needs in place.
interface IParkApp {
    /// @notice Phase 3: execute a packet whose certificate the router verified, before its timeout.
    /// @return code "" to acknowledge success, else the code of an error ack (the source refunds): an app
    ///         refuses by code, never by reverting, and writes nothing when it refuses.
    function onRecvPacket(bytes calldata packet) external returns (string memory code);

    /// @notice Phase 4 on the source: the relay certified the packet's outcome. `refund` is true for an error
    ///         ack or a timeout (undo phase 1 exactly), false for a success ack (complete it).
    function onSettlePacket(bytes calldata packet, bool refund) external;
}

/// @title Energy (kind 1): runs in the router's context (delegatecall), see `EnergyApp`.
interface IEnergyApp is IParkApp {
    /// @notice Phase 1: escrow a leaving denomination or burn a voucher going home; returns the payload. Payable:
    ///         delegatecalled by a send that carries relay fees as its value (which stays with the router).
    function onSendEnergy(address sender, string calldata dstChain, string calldata lane, string calldata denom,
        uint256 amountWh) external payable returns (bytes memory payload);
}

/// @title Charging rights (kind 2), see `ChargingRights`.
interface IChargingRightApp is IParkApp {
    /// @notice Phase 1: the sender's live right whose canonical payload is `payload` leaves: escrowed, or burned
    ///         if it goes home along its trace. `sequence` is the packet's (recorded with the escrow).
    function onSendRight(address sender, string calldata dstChain, string calldata lane, uint64 sequence,
        bytes calldata payload, uint64 timeoutMs) external;
}

/// @title Reputation (kind 3), see `ReputationApp`.
interface IReputationApp is IParkApp {
    /// @notice Phase 1: the payload attesting what this park's market scores `subject` now (read from state).
    function onSendReputation(address sender, string calldata subject) external view returns (bytes memory payload);
}
