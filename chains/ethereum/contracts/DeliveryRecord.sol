// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {CodecInvalid, ReputationTooLow, Unauthorized} from "./ParkErrors.sol";

interface IImportedReputation {
    function importedReputation(string calldata srcChain, string calldata subject, string calldata model)
        external
        view
        returns (uint64 score, uint64 sourceHeight, uint64 recordedAt, bool exists);
}

interface IParkOperator {
    function owner() external view returns (address);
}

/// @title The Ethereum park market's delivery record (docs/research.md#seed-001): per participant, the energy it
///        contracted to deliver and the energy it delivered, as settled by the market.
/// @notice The reputation the park attests to other parks (`ReputationApp`, model `eth-delivery-record/v1`) is a
///         participant's delivered over contracted energy in basis points, capped at 10000. The park operator
///         and the market contract it names write records; the market admits participants, local ones or ones
///         from another park by the reputation imported from there (`admitImported`, the market function that
///         reads imported reputation).
/// @dev Issue 13 builds the market of docs/research.md#seed-001 (bilateral bidding, double auction, settlement) on top: its settlement
///      calls `record`.
contract DeliveryRecord {
    struct Participant {
        uint112 contractedWh;
        uint112 deliveredWh;
        bool admitted;
    }

    /// @notice The park operator (the bridge's owner).
    address public immutable operator;
    /// @notice Where imported reputation is read (the park's `ReputationApp`).
    address public immutable reputation;
    /// @notice The market contract that may also write records (zero: none yet).
    address public market;
    /// @notice The lowest imported score (basis points) `admitImported` accepts.
    uint64 public minImportedScore;

    mapping(address => Participant) internal _participants;

    event ParticipantAdmitted(address indexed participant, string srcChain, string subject, string model, uint64 score);
    event DeliveryRecorded(address indexed participant, uint256 contractedWh, uint256 deliveredWh);
    event MarketSet(address market);
    event MinImportedScoreSet(uint64 scoreBps);

    constructor(address bridge, address reputation_) {
        if (bridge == address(0) || reputation_ == address(0)) revert CodecInvalid();
        operator = IParkOperator(bridge).owner();
        reputation = reputation_;
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert Unauthorized(operator, msg.sender);
        _;
    }

    function setMarket(address market_) external onlyOperator {
        market = market_;
        emit MarketSet(market_);
    }

    function setMinImportedScore(uint64 scoreBps) external onlyOperator {
        if (scoreBps > 10_000) revert CodecInvalid();
        minImportedScore = scoreBps;
        emit MinImportedScoreSet(scoreBps);
    }

    /// @notice Admit a participant of this park.
    function admit(address participant) external onlyOperator {
        if (participant == address(0)) revert CodecInvalid();
        _participants[participant].admitted = true;
        emit ParticipantAdmitted(participant, "", "", "", 0);
    }

    /// @notice Admit `participant` (its account here) as the participant `subject` of park `srcChain`, on the
    ///         reputation that park attested under `model`: refused below `minImportedScore` or with none imported
    ///         (`ReputationTooLow(minimum, score)`, score 0 then).
    function admitImported(string calldata srcChain, string calldata subject, string calldata model,
        address participant) external onlyOperator {
        if (participant == address(0)) revert CodecInvalid();
        (uint64 score,,, bool exists) = IImportedReputation(reputation).importedReputation(srcChain, subject, model);
        uint64 minimum = minImportedScore;
        if (!exists || score < minimum) revert ReputationTooLow(minimum, exists ? score : 0);
        _participants[participant].admitted = true;
        emit ParticipantAdmitted(participant, srcChain, subject, model, score);
    }

    /// @notice Add a settled delivery: `contractedWh` promised, `deliveredWh` delivered. Operator or market only,
    ///         for an admitted participant.
    function record(address participant, uint256 contractedWh, uint256 deliveredWh) external {
        if (msg.sender != operator && (msg.sender != market || market == address(0))) {
            revert Unauthorized(operator, msg.sender);
        }
        Participant storage p = _participants[participant];
        if (!p.admitted) revert Unauthorized(participant, address(0));
        uint256 contracted = p.contractedWh + contractedWh;
        uint256 delivered = p.deliveredWh + deliveredWh;
        if (contracted > type(uint112).max || delivered > type(uint112).max) revert CodecInvalid();
        p.contractedWh = uint112(contracted);
        p.deliveredWh = uint112(delivered);
        emit DeliveryRecorded(participant, contractedWh, deliveredWh);
    }

    /// @notice A participant's record: admitted, energy contracted and delivered (Wh).
    function participantOf(address participant)
        external
        view
        returns (bool admitted, uint256 contractedWh, uint256 deliveredWh)
    {
        Participant storage p = _participants[participant];
        return (p.admitted, p.contractedWh, p.deliveredWh);
    }

    /// @notice Delivered over contracted energy in basis points, capped at 10000; `has` false if nothing was
    ///         contracted (no score to attest).
    function scoreOf(address participant) external view returns (bool has, uint64 scoreBps) {
        Participant storage p = _participants[participant];
        if (p.contractedWh == 0) return (false, 0);
        uint256 bps = uint256(p.deliveredWh) * 10_000 / p.contractedWh;
        return (true, uint64(bps > 10_000 ? 10_000 : bps));
    }
}
