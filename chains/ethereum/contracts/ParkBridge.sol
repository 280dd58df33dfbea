// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {EnergyState} from "./EnergyApp.sol";
import {IParkApp} from "./IParkApp.sol";
import {PacketCodec} from "./PacketCodec.sol";
import {FeeState, ParkBridgeCore} from "./ParkBridgeCore.sol";
import {ParkSender} from "./ParkSender.sol";
import {RelayVerifier} from "./RelayVerifier.sol";
import {
    CertificateStale,
    CodecInvalid,
    InsufficientFunds,
    PacketReplay,
    PacketTimeout,
    ProofInvalid,
    ReceiverRefused,
    RelayTrustExpired,
    RelayTrustLive,
    Unauthorized,
    ValidatorSetMismatch,
    WrongChain
} from "./ParkErrors.sol";

/// @title The Ethereum park's bridge: the packet router (chains/ethereum/SPEC.md §E2; protocol/SPEC.md §6).
/// @notice Phase 1 (`sendEnergy`, `sendRight`, `sendReputation`, and their `…WithFees` forms that escrow relay
///         fees, protocol §6.10; run by the phase-1 module `ParkSender`), phase 3 (`recvPacket`) and the source half
///         of phase 4 (`settle`, which pays the fees). The router owns what every packet kind shares: lanes and their
///         relay capacities, sequences, packet commitments (slot 0) and receipts (slot 1) that the relay's light
///         client proves, and the relay certificates that drive phases 3 and 4 (`RelayVerifier`). What a packet does
///         to an asset is its kind's app (`IParkApp`): energy (`EnergyApp`, run in this contract's context by
///         DELEGATECALL: the bridge is the energy escrow and voucher minter), charging rights (`ChargingRights`, an
///         ERC-721) and reputation (`ReputationApp`), each fixed at deployment.
/// @dev Packets are parsed in place from calldata after a canonical-layout check (`PacketCodec`), so a packet has
///      exactly one accepted encoding and its commitment is sha256 of the input. An app refuses a verified packet
///      with an error ack code, never a revert; every revert of the router is a custom error with its data. The
///      storage layout, and what phase 1 shares with the rest, is `ParkBridgeCore`'s.
contract ParkBridge is ParkBridgeCore {
    using PacketCodec for bytes;

    /// @dev `lane.invalid`, `lane.over_capacity` (ParkErrors.sol): only phase 1 reverts with them, and it runs in
    ///      `ParkSender`; declared again here, same signatures and so the same selectors, so that the router's ABI
    ///      names every error its functions revert with.
    error LaneInvalid(string counterparty, string lane);
    error LaneOverCapacity(uint256 amount, uint256 capacity);

    /// @notice Who earned each step's fee, as the certified outcome record names them (protocol §2.5, §6.10):
    ///         UTF-8 of at most 256 bytes each, "" for a step nobody earned (all three "": the three-field record).
    struct FeePayees {
        string verify;
        string execute;
        string confirm;
    }

    // ---------------------------------------------------------------------------------------------
    // Immutables of the router (its storage and what phase 1 reads too: `ParkBridgeCore`)
    // ---------------------------------------------------------------------------------------------

    /// @notice How long the relay set stays trusted without a fresh verified header (protocol §7.8), ms.
    uint64 public immutable trustingPeriodMs;
    /// @notice Phase 3 refuses a certificate whose relay header is older than this at the block time (protocol
    ///         §7.9), ms: after a client recovery on the relay, certificates of revoked packets go stale.
    uint64 public immutable maxCertificateAgeMs;

    /// @notice The park operator: opens lanes; the apps take it as theirs (registry, issuing, records).
    address public immutable owner;
    /// @notice The native `kWh` token.
    address public immutable energyToken;
    /// @notice The phase-1 module (`ParkSender`, created with the router): runs the `send…` functions by
    ///         DELEGATECALL.
    address public immutable sendModule;

    bytes32 internal immutable _relayChainIdHash;
    bytes32 internal immutable _successAckCommitment;

    string public constant NATIVE_DENOM = "kWh";
    uint8 internal constant OUTCOME_ACKED = 1;
    uint8 internal constant OUTCOME_TIMED_OUT = 2;
    /// the steps of a fee (events `FeePaid`, `FeeRefunded`)
    uint8 internal constant STEP_VERIFY = 1;
    uint8 internal constant STEP_EXECUTE = 2;
    uint8 internal constant STEP_CONFIRM = 3;
    /// bounds of the trusting period (protocol §7.8): a minute .. 365 days
    uint64 internal constant MIN_TRUSTING_PERIOD_MS = 60_000;
    uint64 internal constant MAX_TRUSTING_PERIOD_MS = 365 days * 1000;
    /// bounds of the phase-3 certificate age (protocol §7.9): 10 seconds .. a day
    uint64 internal constant MIN_CERTIFICATE_AGE_MS = 10_000;
    uint64 internal constant MAX_CERTIFICATE_AGE_MS = 1 days * 1000;
    /// a verified header refreshes the trusted time by steps of at least trustingPeriodMs / 64
    uint64 internal constant REFRESH_STEP_FRACTION = 64;

    // ---------------------------------------------------------------------------------------------
    // Events: indexed by what operators filter on (lane, sequence, the sending account)
    // ---------------------------------------------------------------------------------------------

    /// @notice Phase 3: the receipt of `srcChain`'s packet `sequence` on `laneId` holds sha256(ack), the ack being
    ///         abi.encode(status, ackCode, "") with status 1 for `ok`, else 2 (this bridge's results are empty), or
    ///         abi.encode(status, ackCode, "", relayer) when the executing relayer named itself (protocol §2.4).
    event AckWritten(
        string indexed lane,
        uint64 indexed sequence,
        string srcChain,
        string laneId,
        uint8 kind,
        string ackCode,
        string relayer
    );
    /// @notice Phase 4: the packet `sequence` to `dstChain` on `laneId` settled; `refunded` for an error ack or a
    ///         timeout (`outcome` 1 ACKED, 2 TIMED_OUT).
    event PacketSettled(
        string indexed lane, uint64 indexed sequence, address indexed sender, string dstChain, string laneId,
        uint8 outcome, bool refunded
    );
    /// @notice Phase 4: `amount` wei, the fee of `step` (1 verify, 2 execute, 3 confirm) of packet `sequence` to
    ///         `dstChain`, credited to `account`, the address of `payee` as the certified outcome record names it.
    event FeePaid(
        string indexed lane,
        uint64 indexed sequence,
        address indexed account,
        string dstChain,
        string laneId,
        uint8 step,
        string payee,
        uint256 amount
    );
    /// @notice Phase 4: `amount` wei, the fee of `step` nobody here can be paid for (no payee, not an address, or
    ///         the execute fee of a timed-out packet), credited back to `account`, the packet's sender.
    event FeeRefunded(
        string indexed lane,
        uint64 indexed sequence,
        address indexed account,
        string dstChain,
        string laneId,
        uint8 step,
        uint256 amount
    );
    /// @notice `account` withdrew the `amount` wei of fees credited to it.
    event FeesWithdrawn(address indexed account, uint256 amount);
    event RelayValidatorsUpdated(bytes32 indexed setHash, uint64 height);
    /// @notice The owner replaced an expired relay set (protocol §7.8), trusted as of relay time `trustedTimeMs`.
    event RelayValidatorsReset(bytes32 indexed setHash, uint64 height, uint64 trustedTimeMs);
    event LaneOpened(string counterparty, string lane);
    event LaneConfigured(string dstChain, string lane, uint64 relayHeight, uint64 version);

    // ---------------------------------------------------------------------------------------------
    // Setup
    // ---------------------------------------------------------------------------------------------

    /// @dev The apps are deployed after the bridge (they name it): their addresses are the deployer's next CREATE
    ///      addresses (chains/ethereum/deploy.py), known before.
    constructor(
        string memory chainId_,
        string memory relayChainId_,
        RelayVerifier.ValidatorSet memory relaySet,
        address energyToken_,
        address energyApp_,
        address rightsApp_,
        address reputationApp_,
        uint64 trustingPeriodMs_,
        uint64 maxCertificateAgeMs_
    ) ParkBridgeCore(keccak256(bytes(chainId_)), energyApp_, rightsApp_, reputationApp_) {
        if (!PacketCodec.isId(bytes(chainId_)) || !PacketCodec.isId(bytes(relayChainId_))) revert CodecInvalid();
        if (
            energyToken_ == address(0) || energyApp_ == address(0) || rightsApp_ == address(0)
                || reputationApp_ == address(0)
        ) revert CodecInvalid();
        if (trustingPeriodMs_ < MIN_TRUSTING_PERIOD_MS || trustingPeriodMs_ > MAX_TRUSTING_PERIOD_MS) {
            revert CodecInvalid();
        }
        if (maxCertificateAgeMs_ < MIN_CERTIFICATE_AGE_MS || maxCertificateAgeMs_ > MAX_CERTIFICATE_AGE_MS) {
            revert CodecInvalid();
        }
        trustingPeriodMs = trustingPeriodMs_;
        maxCertificateAgeMs = maxCertificateAgeMs_;
        _relayTrustedTimeMs = uint64(block.timestamp * 1000);
        owner = msg.sender;
        _chainId = chainId_;
        _relayChainId = relayChainId_;
        _relayChainIdHash = keccak256(bytes(relayChainId_));
        energyToken = energyToken_;
        sendModule = address(new ParkSender(keccak256(bytes(chainId_)), energyApp_, rightsApp_, reputationApp_));
        EnergyState.layout().tokens[keccak256(bytes(NATIVE_DENOM))] = energyToken_;
        _relaySetHash = RelayVerifier.checkedSetHash(relaySet.ed25519Keys, relaySet.ethAddresses, relaySet.powers);
        _successAckCommitment = sha256(abi.encode(PacketCodec.ACK_SUCCESS, "ok", ""));
        emit RelayValidatorsUpdated(_relaySetHash, 0);
    }

    /// @notice Open a lane to `dstChain` (both directions). Owner only; opening an open lane does nothing.
    function openLane(string calldata dstChain, string calldata lane) external {
        if (msg.sender != owner) revert Unauthorized(owner, msg.sender);
        bytes32 key = _checkedLaneKey(dstChain, lane);
        _open(key, dstChain, lane);
    }

    /// @notice Genesis: open the lane to `dstChain` with the relay genesis's capacities for packets sent on it
    ///         (protocol §6.8; `*` the default). Owner only, and only while no certified config replaced the
    ///         genesis one.
    function configureLane(
        string calldata dstChain,
        string calldata lane,
        string[] calldata assets,
        uint64[] calldata capacities
    ) external {
        if (msg.sender != owner) revert Unauthorized(owner, msg.sender);
        bytes32 key = _checkedLaneKey(dstChain, lane);
        uint64 held = _lanes[key].configHeight;
        if (held != 0) revert PacketReplay(held, 0); // the relay's certified config rules now
        _configure(key, dstChain, lane, assets, capacities, 0);
    }

    /// @notice Learn the relay's lane `(this chain, dstChain, lane)` and its capacities from a relay certificate of
    ///         its lane-config record `relay/lane_config/{this}/{dst}/{lane}` = abi.encode(assets, capacities)
    ///         (protocol §6.8), certified above the height of the config held. Opens the lane if it was not open.
    ///         Anyone may submit it.
    function updateLaneConfig(
        string calldata dstChain,
        string calldata lane,
        string[] calldata assets,
        uint64[] calldata capacities,
        RelayVerifier.Certificate calldata cert,
        RelayVerifier.ValidatorSet calldata relaySet
    ) external {
        bytes32 key = _checkedLaneKey(dstChain, lane);
        uint64 height = cert.commit.header.height;
        uint64 held = _lanes[key].configHeight;
        if (height <= held) revert PacketReplay(held, height); // an old record cannot roll back a newer one
        bytes32 keyHash = sha256(abi.encodePacked("relay/lane_config/", _chainId, "/", dstChain, "/", lane));
        _verifyCertificate(cert, relaySet, keyHash, sha256(abi.encode(assets, capacities)));
        _configure(key, dstChain, lane, assets, capacities, height);
    }

    function _checkedLaneKey(string calldata dstChain, string calldata lane) internal view returns (bytes32) {
        if (!PacketCodec.isId(bytes(dstChain)) || !PacketCodec.isId(bytes(lane))) revert CodecInvalid();
        if (keccak256(bytes(dstChain)) == _chainIdHash) revert WrongChain(string.concat("not ", _chainId), dstChain);
        return keccak256(abi.encode(dstChain, lane));
    }

    function _open(bytes32 key, string calldata dstChain, string calldata lane) internal {
        if (_lanes[key].nextSequence == 0) {
            _lanes[key].nextSequence = 1;
            emit LaneOpened(dstChain, lane);
        }
    }

    function _configure(
        bytes32 key,
        string calldata dstChain,
        string calldata lane,
        string[] calldata assets,
        uint64[] calldata capacities,
        uint64 height
    ) internal {
        uint256 n = assets.length;
        if (capacities.length != n) revert CodecInvalid();
        _open(key, dstChain, lane);
        Lane storage l = _lanes[key];
        uint64 version = l.configVersion + 1;
        l.configVersion = version;
        l.configHeight = height;
        l.limited = n != 0;
        for (uint256 i; i < n; ++i) {
            _capacities[keccak256(abi.encode(key, version, keccak256(bytes(assets[i]))))] = uint256(capacities[i]) + 1;
        }
        emit LaneConfigured(dstChain, lane, height, version);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 1: COMMIT (protocol §6.3)
    // ---------------------------------------------------------------------------------------------

    /// @notice Send `amountWh` of `denom` to `receiver` on `dstChain`: escrow a leaving denom (the bridge needs an
    ///         allowance), burn a voucher going home (§2.3). Returns the sequence.
    function sendEnergy(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs
    ) external returns (uint64 sequence) {
        _runSendModule();
    }

    /// @notice `sendEnergy` paying the relayers `fees` (protocol §6.10) in wei: the value sent is exactly their sum
    ///         (`InsufficientFunds` short, `CodecInvalid` over or a fee above 2^64 - 1), escrowed with the packet
    ///         until it settles (`FeesEscrowed`). All zero: a plain `sendEnergy`.
    function sendEnergyWithFees(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable returns (uint64 sequence) {
        _runSendModule();
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
    ) external returns (uint64 sequence) {
        _runSendModule();
    }

    /// @notice `sendRight` paying the relayers `fees`, as `sendEnergyWithFees`.
    function sendRightWithFees(
        string calldata dstChain,
        string calldata lane,
        bytes calldata payload,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable returns (uint64 sequence) {
        _runSendModule();
    }

    /// @notice Attest to `dstChain` the score this park's market holds for `subject` now (read from state).
    function sendReputation(
        string calldata dstChain,
        string calldata lane,
        string calldata subject,
        string calldata receiver,
        uint64 timeoutMs
    ) external returns (uint64 sequence) {
        _runSendModule();
    }

    /// @notice `sendReputation` paying the relayers `fees`, as `sendEnergyWithFees`.
    function sendReputationWithFees(
        string calldata dstChain,
        string calldata lane,
        string calldata subject,
        string calldata receiver,
        uint64 timeoutMs,
        Fees calldata fees
    ) external payable returns (uint64 sequence) {
        _runSendModule();
    }

    /// @dev Run this call, calldata and all, in the phase-1 module's code (DELEGATECALL: this contract's storage,
    ///      balance and logs, the same sender and value) and end with what it returns or reverts. The `send…`
    ///      functions above are the router's ABI; `ParkSender`'s functions of the same signatures decode and check
    ///      their arguments.
    function _runSendModule() internal {
        address module = sendModule;
        assembly ("memory-safe") {
            let p := mload(0x40)
            calldatacopy(p, 0, calldatasize())
            let ok := delegatecall(gas(), module, p, calldatasize(), 0, 0)
            returndatacopy(p, 0, returndatasize())
            if iszero(ok) { revert(p, returndatasize()) }
            return(p, returndatasize())
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 3: EXECUTE (protocol §6.5)
    // ---------------------------------------------------------------------------------------------

    /// @notice Execute a packet certified by the relay chain (`relay/verified/{src}/{dst}/{lane}/{seq}` → packet
    ///         commitment) and write its receipt. Application refusals are error acks. `relayer` is the relay account
    ///         the ack names as its executor (protocol §6.10: it earns the execute fee), an identifier, or "" for
    ///         none (the three-field ack).
    function recvPacket(
        bytes calldata packet,
        RelayVerifier.Certificate calldata cert,
        RelayVerifier.ValidatorSet calldata relaySet,
        string calldata relayer
    ) external {
        packet.checkPacket();
        bool named = bytes(relayer).length != 0;
        if (named && !PacketCodec.isId(bytes(relayer))) revert CodecInvalid();
        bytes calldata src = packet.dyn(PacketCodec.SRC);
        bytes calldata lane = packet.dyn(PacketCodec.LANE);
        uint64 sequence = uint64(packet.word(PacketCodec.SEQUENCE));
        bytes calldata dst = packet.dyn(PacketCodec.DST);
        if (keccak256(dst) != _chainIdHash) revert WrongChain(_chainId, string(dst));
        // No lane check here (§6.5): the relay verified the packet only on a registered lane (§6.4 step 4), and
        // what an app unlocks is keyed by the packet's own (src, lane).
        bytes32 receiptKey = keccak256(abi.encode(src, lane, sequence));
        bytes32 held = _receipts[receiptKey];
        if (held != 0) revert PacketReplay(uint256(held), sequence);

        bytes32 valueHash = sha256(abi.encode(sha256(packet)));
        _verifyCertificate(cert, relaySet, _relayKeyHash("relay/verified/", packet), valueHash);
        // §7.9: a certificate older than the bound may prove a packet a client recovery revoked since
        if (uint256(cert.commit.header.timeMs) + maxCertificateAgeMs < block.timestamp * 1000) {
            revert CertificateStale(block.timestamp * 1000 - maxCertificateAgeMs, cert.commit.header.timeMs);
        }
        uint256 timeout = packet.word(PacketCodec.TIMEOUT);
        if (block.timestamp * 1000 >= timeout) revert PacketTimeout(timeout, block.timestamp * 1000);

        uint256 kind = packet.word(PacketCodec.KIND);
        string memory code;
        if (kind == PacketCodec.KIND_ENERGY) {
            (bool ok, bytes memory ret) = _energyApp.delegatecall(abi.encodeCall(IParkApp.onRecvPacket, (packet)));
            if (!ok) _bubble(ret);
            code = abi.decode(ret, (string));
        } else {
            code = IParkApp(kind == PacketCodec.KIND_CHARGING_RIGHT ? _rightsApp : _reputationApp).onRecvPacket(packet);
        }
        uint8 status = PacketCodec.ACK_ERROR;
        if (bytes(code).length == 0) {
            code = "ok";
            status = PacketCodec.ACK_SUCCESS;
        }
        bytes32 receipt;
        if (named) receipt = sha256(abi.encode(status, code, "", relayer));
        else if (status == PacketCodec.ACK_SUCCESS) receipt = _successAckCommitment;
        else receipt = sha256(abi.encode(status, code, ""));
        _receipts[receiptKey] = receipt;
        emit AckWritten(string(lane), sequence, string(src), string(lane), uint8(kind), code, relayer);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 4: SETTLE (protocol §6.6)
    // ---------------------------------------------------------------------------------------------

    /// @notice Settle a packet this chain sent, on a relay certificate of its outcome
    ///         (`relay/outcome/{src}/{dst}/{lane}/{seq}`). `ack` is the target's ack for ACKED, empty for TIMED_OUT.
    ///         A success ack completes the packet; an error ack or a timeout refunds the sender (the kind's app).
    ///         `payees` are the outcome record's (protocol §2.5), certified with it; the packet's relay fees go to
    ///         them, or back to the sender (protocol §6.10), credited for `withdrawFees`.
    function settle(
        bytes calldata packet,
        bytes calldata ack,
        RelayVerifier.Certificate calldata cert,
        RelayVerifier.ValidatorSet calldata relaySet,
        FeePayees calldata payees
    ) external {
        packet.checkPacket();
        bytes calldata dst = packet.dyn(PacketCodec.DST);
        bytes calldata lane = packet.dyn(PacketCodec.LANE);
        uint64 sequence = uint64(packet.word(PacketCodec.SEQUENCE));
        bytes calldata src = packet.dyn(PacketCodec.SRC);
        if (keccak256(src) != _chainIdHash) revert WrongChain(_chainId, string(src));
        bytes32 commitmentKey = keccak256(abi.encode(dst, lane, sequence));
        bytes32 stored = _commitments[commitmentKey];
        if (stored == 0) revert PacketReplay(0, sequence);
        bytes32 packetCommitment = sha256(packet);
        if (stored != packetCommitment) revert ProofInvalid();

        // the outcome record (§2.5) the relay must have certified: ACKED with this ack, or TIMED_OUT
        uint8 outcome = OUTCOME_TIMED_OUT;
        bytes32 ackCommitment;
        bool refund = true;
        if (ack.length != 0) {
            outcome = OUTCOME_ACKED;
            ackCommitment = sha256(ack);
            refund = !ack.checkAck();
        }
        bytes32 valueHash = _outcomeHash(outcome, packetCommitment, ackCommitment, payees);
        _verifyCertificate(cert, relaySet, _relayKeyHash("relay/outcome/", packet), valueHash);

        delete _commitments[commitmentKey];
        uint256 kind = packet.word(PacketCodec.KIND);
        if (kind == PacketCodec.KIND_ENERGY) {
            (bool ok, bytes memory ret) =
                _energyApp.delegatecall(abi.encodeCall(IParkApp.onSettlePacket, (packet, refund)));
            if (!ok) _bubble(ret);
        } else {
            IParkApp(kind == PacketCodec.KIND_CHARGING_RIGHT ? _rightsApp : _reputationApp).onSettlePacket(
                packet, refund
            );
        }
        (, address sender) = packet.dyn(PacketCodec.SENDER).parseAddress();
        emit PacketSettled(string(lane), sequence, sender, string(dst), string(lane), outcome, refund);
        _payFees(commitmentKey, dst, lane, sequence, outcome == OUTCOME_ACKED, payees, sender);
    }

    /// @dev sha256 of the outcome record (protocol §2.5): three fields without payees, six with any. A payee is
    ///      UTF-8 of at most 256 bytes (`CodecInvalid`); which payees are right is the certificate's to say.
    function _outcomeHash(uint8 outcome, bytes32 packetCommitment, bytes32 ackCommitment, FeePayees calldata p)
        internal
        pure
        returns (bytes32)
    {
        bytes calldata verify = bytes(p.verify);
        bytes calldata execute = bytes(p.execute);
        bytes calldata confirm = bytes(p.confirm);
        if (verify.length == 0 && execute.length == 0 && confirm.length == 0) {
            return sha256(abi.encode(outcome, packetCommitment, ackCommitment));
        }
        if (!_isPayee(verify) || !_isPayee(execute) || !_isPayee(confirm)) revert CodecInvalid();
        return sha256(abi.encode(outcome, packetCommitment, ackCommitment, p.verify, p.execute, p.confirm));
    }

    function _isPayee(bytes calldata s) internal pure returns (bool) {
        return s.length <= PacketCodec.MAX_STRING && PacketCodec.isUtf8(s);
    }

    /// @dev Protocol §6.10 at settlement: each non-zero fee of the packet's record is credited to its step's payee
    ///      if that is a `0x` address (either case, not zero), else to the payer; a timeout's execute fee always
    ///      to the payer. Then the record is deleted. Nothing is sent here (a payee refusing ether cannot block a
    ///      settlement): each account withdraws its credit with `withdrawFees`.
    function _payFees(
        bytes32 key,
        bytes calldata dst,
        bytes calldata lane,
        uint64 sequence,
        bool acked,
        FeePayees calldata payees,
        address payer
    ) internal {
        FeeState.Layout storage f = FeeState.layout();
        FeeState.Record memory r = f.records[key];
        if (r.verify == 0 && r.execute == 0 && r.confirm == 0) return;
        delete f.records[key];
        _payFee(f, dst, lane, sequence, STEP_VERIFY, r.verify, bytes(payees.verify), true, payer);
        _payFee(f, dst, lane, sequence, STEP_EXECUTE, r.execute, bytes(payees.execute), acked, payer);
        _payFee(f, dst, lane, sequence, STEP_CONFIRM, r.confirm, bytes(payees.confirm), true, payer);
    }

    function _payFee(
        FeeState.Layout storage f,
        bytes calldata dst,
        bytes calldata lane,
        uint64 sequence,
        uint8 step,
        uint256 amount,
        bytes calldata payee,
        bool earnable,
        address payer
    ) internal {
        if (amount == 0) return;
        (bool ok, address account) = payee.parseAnyCaseAddress();
        if (earnable && ok && account != address(0)) {
            f.owed[account] += amount;
            emit FeePaid(string(lane), sequence, account, string(dst), string(lane), step, string(payee), amount);
        } else {
            f.owed[payer] += amount;
            emit FeeRefunded(string(lane), sequence, payer, string(dst), string(lane), step, amount);
        }
    }

    /// @notice Send the caller the relay fees credited to it (`feesOwed`); returns the amount. Reverts
    ///         `InsufficientFunds(0, 1)` with nothing owed, `ReceiverRefused` if the caller does not take the ether
    ///         (its credit stays).
    function withdrawFees() external returns (uint256 amount) {
        mapping(address => uint256) storage owed = FeeState.layout().owed;
        amount = owed[msg.sender];
        if (amount == 0) revert InsufficientFunds(0, 1);
        owed[msg.sender] = 0; // before the call: a reentrant withdrawal finds nothing
        emit FeesWithdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert ReceiverRefused(msg.sender);
    }

    // ---------------------------------------------------------------------------------------------
    // Relay validator set (protocol §7.5)
    // ---------------------------------------------------------------------------------------------

    /// @notice Move the trusted set to `newSet`, certified by the current set as the next set of a relay header
    ///         above the height of the last accepted update.
    function updateRelayValidators(
        RelayVerifier.ValidatorSet calldata newSet,
        RelayVerifier.Commit calldata commit,
        RelayVerifier.ValidatorSet calldata relaySet
    ) external {
        bytes32 newHash = RelayVerifier.checkedSetHash(newSet.ed25519Keys, newSet.ethAddresses, newSet.powers);
        uint64 height = commit.header.height;
        uint64 held = _relaySetHeight;
        if (height <= held) revert PacketReplay(held, height);
        uint64 trusted = _checkTrust();
        _checkRelayChain(commit.header);
        RelayVerifier.verifyCommit(commit, relaySet, _relaySetHash);
        if (commit.header.nextValidatorsHash != newHash) {
            revert ValidatorSetMismatch(newHash, commit.header.nextValidatorsHash);
        }
        _relaySetHash = newHash;
        _relaySetHeight = height;
        _relayTrustedTimeMs = _refreshed(trusted, commit.header.timeMs);
        emit RelayValidatorsUpdated(newHash, height);
    }

    /// @notice The owner's way out of an expired trust (protocol §7.8): install `newSet`, checked out of band from a
    ///         relay header at `height` and relay time `timeMs`. Only once expired, above the last update's height,
    ///         with `timeMs` within the trusting period before the block time and at most a refresh step after.
    function resetRelayValidators(RelayVerifier.ValidatorSet calldata newSet, uint64 height, uint64 timeMs)
        external
    {
        if (msg.sender != owner) revert Unauthorized(owner, msg.sender);
        uint256 nowMs = block.timestamp * 1000;
        uint256 expiresAt = uint256(_relayTrustedTimeMs) + trustingPeriodMs;
        if (nowMs <= expiresAt) revert RelayTrustLive(expiresAt, nowMs);
        uint64 held = _relaySetHeight;
        if (height <= held) revert PacketReplay(held, height);
        if (uint256(timeMs) + trustingPeriodMs <= nowMs || timeMs > nowMs + trustingPeriodMs / REFRESH_STEP_FRACTION) {
            revert CodecInvalid();
        }
        bytes32 newHash = RelayVerifier.checkedSetHash(newSet.ed25519Keys, newSet.ethAddresses, newSet.powers);
        _relaySetHash = newHash;
        _relaySetHeight = height;
        _relayTrustedTimeMs = timeMs;
        emit RelayValidatorsReset(newHash, height, timeMs);
    }

    /// @dev §7.8 rule 1: the trusted time, unless the trust expired at this block's time.
    function _checkTrust() internal view returns (uint64 trusted) {
        trusted = _relayTrustedTimeMs;
        uint256 expiresAt = uint256(trusted) + trustingPeriodMs;
        if (block.timestamp * 1000 > expiresAt) revert RelayTrustExpired(expiresAt, block.timestamp * 1000);
    }

    /// @dev §7.8 rule 2: the header's time if it advances `trusted` by a step and is at most a step ahead of the
    ///      block time, else `trusted`.
    function _refreshed(uint64 trusted, uint64 headerTimeMs) internal view returns (uint64) {
        uint256 step = trustingPeriodMs / REFRESH_STEP_FRACTION;
        if (headerTimeMs > block.timestamp * 1000 + step || uint256(headerTimeMs) < uint256(trusted) + step) {
            return trusted;
        }
        return headerTimeMs;
    }

    function _checkRelayChain(RelayVerifier.RelayHeader calldata h) internal view {
        if (keccak256(bytes(h.chainId)) != _relayChainIdHash) revert WrongChain(_relayChainId, h.chainId);
    }

    function _verifyCertificate(
        RelayVerifier.Certificate calldata cert,
        RelayVerifier.ValidatorSet calldata relaySet,
        bytes32 keyHash,
        bytes32 valueHash
    ) internal {
        uint64 trusted = _checkTrust();
        _checkRelayChain(cert.commit.header);
        RelayVerifier.verifyCertificate(cert, relaySet, _relaySetHash, keyHash, valueHash);
        uint64 fresh = _refreshed(trusted, cert.commit.header.timeMs);
        if (fresh != trusted) _relayTrustedTimeMs = fresh; // about 64 writes a period, not one per packet
    }

    /// @dev sha256 of the relay path `{prefix}{src}/{dst}/{lane}/{sequence}` (protocol §5) of a checked packet.
    function _relayKeyHash(string memory prefix, bytes calldata packet) internal pure returns (bytes32) {
        return sha256(
            abi.encodePacked(
                prefix,
                packet.dyn(PacketCodec.SRC),
                "/",
                packet.dyn(PacketCodec.DST),
                "/",
                packet.dyn(PacketCodec.LANE),
                "/",
                PacketCodec.decimal(packet.word(PacketCodec.SEQUENCE))
            )
        );
    }

    /// @dev Re-raise an app's revert as is (its custom error and data).
    function _bubble(bytes memory ret) internal pure {
        assembly ("memory-safe") {
            revert(add(ret, 32), mload(ret))
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @notice The trusted relay set's hash and update height, the relay time it is trusted as of, the trusting
    ///         period and when it expires (protocol §7.8): what a relayer reads to keep the bridge fresh.
    function relayTrust()
        external
        view
        returns (bytes32 setHash, uint64 updateHeight, uint64 trustedTimeMs, uint64 periodMs, uint64 expiresAtMs)
    {
        return (_relaySetHash, _relaySetHeight, _relayTrustedTimeMs, trustingPeriodMs,
            _relayTrustedTimeMs + trustingPeriodMs);
    }

    /// @notice Hash of the trusted relay validator set (protocol §7.1).
    function relaySetHash() external view returns (bytes32) {
        return _relaySetHash;
    }

    /// @notice Relay height of the commit that installed the trusted set (0: the constructor's).
    function relaySetHeight() external view returns (uint64) {
        return _relaySetHeight;
    }

    /// @notice Relay time (ms) the trusted set is trusted as of (protocol §7.8): the deployment's block time, then
    ///         the newest verified header's.
    function relayTrustedTimeMs() external view returns (uint64) {
        return _relayTrustedTimeMs;
    }

    /// @notice This chain's id (packets' `src_chain` on send, `dst_chain` on receive).
    function chainId() external view returns (string memory) {
        return _chainId;
    }

    /// @notice The relay chain whose certificates this bridge accepts.
    function relayChainId() external view returns (string memory) {
        return _relayChainId;
    }

    /// @notice The app of kind 1 (delegatecalled).
    function energyApp() external view returns (address) {
        return _energyApp;
    }

    /// @notice The app of kind 2.
    function rightsApp() external view returns (address) {
        return _rightsApp;
    }

    /// @notice The app of kind 3.
    function reputationApp() external view returns (address) {
        return _reputationApp;
    }

    /// @notice The ERC-20 of `denom` here (zero if none yet).
    function tokenOf(string calldata denom) external view returns (address) {
        return EnergyState.layout().tokens[keccak256(bytes(denom))];
    }

    /// @notice What this bridge holds in escrow of `denom` for packets sent over `lane` to `counterparty`.
    function escrowed(string calldata counterparty, string calldata lane, string calldata denom)
        external
        view
        returns (uint256)
    {
        return EnergyState.layout().escrow[keccak256(abi.encode(counterparty, lane, denom))];
    }

    /// @notice The relay fees (wei) credited to `account` by settlements and not withdrawn yet.
    function feesOwed(address account) external view returns (uint256) {
        return FeeState.layout().owed[account];
    }

    /// @notice The relay fees (wei) escrowed with the packet `sequence` to `dstChain` on `lane`, until it settles
    ///         (all zero: none, or settled). The payer is the packet's sender.
    function feesEscrowed(string calldata dstChain, string calldata lane, uint64 sequence)
        external
        view
        returns (uint64 verify, uint64 execute, uint64 confirm)
    {
        FeeState.Record memory r = FeeState.layout().records[keccak256(abi.encode(dstChain, lane, sequence))];
        return (r.verify, r.execute, r.confirm);
    }

    /// @notice The next sequence phase 1 assigns on the lane (1 for a lane never used or not open).
    function nextSequenceSend(string calldata dstChain, string calldata lane) external view returns (uint64) {
        uint64 next = _lanes[keccak256(abi.encode(dstChain, lane))].nextSequence;
        return next == 0 ? 1 : next;
    }

    function laneOpen(string calldata counterparty, string calldata lane) external view returns (bool) {
        return _lanes[keccak256(abi.encode(counterparty, lane))].nextSequence != 0;
    }

    /// @notice The relay's capacity for `asset` on the lane to `dstChain` as this bridge knows it (`limited` false:
    ///         not limited), and the relay height of the config (0: genesis or none).
    function laneCapacity(string calldata dstChain, string calldata lane, string calldata asset)
        external
        view
        returns (bool limited, uint256 capacity, uint64 configHeight)
    {
        bytes32 key = keccak256(abi.encode(dstChain, lane));
        Lane memory l = _lanes[key];
        configHeight = l.configHeight;
        if (!l.limited) return (false, 0, configHeight);
        uint256 cap = _capacities[keccak256(abi.encode(key, l.configVersion, keccak256(bytes(asset))))];
        if (cap == 0) cap = _capacities[keccak256(abi.encode(key, l.configVersion, ANY_ASSET_HASH))];
        return (cap != 0, cap == 0 ? 0 : cap - 1, configHeight);
    }

    /// @notice The packet commitment at `commitments/{dst}/{lane}/{sequence}` (zero: none or settled).
    function commitmentOf(string calldata dstChain, string calldata lane, uint64 sequence)
        external
        view
        returns (bytes32)
    {
        return _commitments[keccak256(abi.encode(dstChain, lane, sequence))];
    }

    /// @notice The receipt (ack commitment) at `receipts/{src}/{lane}/{sequence}` (zero: none).
    function receiptOf(string calldata srcChain, string calldata lane, uint64 sequence)
        external
        view
        returns (bytes32)
    {
        return _receipts[keccak256(abi.encode(srcChain, lane, sequence))];
    }

    /// @notice The account check phase 3 applies to a receiver (SPEC §E1): `0x` and 40 lowercase hex digits, not
    ///         the zero address.
    function parseAccount(string calldata account) external pure returns (bool ok, address addr) {
        (ok, addr) = bytes(account).parseAddress();
        ok = ok && addr != address(0);
    }
}
