// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IParkToken, IVoucherToken} from "./IParkToken.sol";
import {
    CodecInvalid,
    InsufficientFunds,
    LaneInvalid,
    LaneOverCapacity,
    PacketReplay,
    PacketTimeout,
    ProofInvalid,
    QuorumNotReached,
    SignatureInvalid,
    Unauthorized,
    ValidatorSetMismatch,
    WrongChain
} from "./ParkErrors.sol";

/// @title The Ethereum park's bridge module (chains/ethereum/SPEC.md §E2; protocol/SPEC.md §6).
/// @notice Phase 1 (`sendEnergy`), phase 3 (`recvPacket`) and the source half of phase 4 (`settle`),
///         with a light client of the relay chain: the hash of the trusted relay validator set. Relay
///         certificates are checked with `ecrecover` over `commit_sign_bytes` (protocol §7.3) and a
///         sparse-Merkle membership proof (protocol §4) of a key the bridge derives itself.
/// @dev Packets are parsed in place from calldata after a strict canonical-layout check (protocol
///      §3.3), so a packet has exactly one accepted encoding and its commitment is sha256 of the input.
contract ParkBridge {
    // ---------------------------------------------------------------------------------------------
    // ABI types (SPEC §E2.2)
    // ---------------------------------------------------------------------------------------------

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

    /// @dev One slot: a lane to a counterparty (both directions) and what this chain knows of the relay's
    ///      capacities for packets it sends on it (protocol §6.8).
    struct Lane {
        uint64 nextSequence; // 0: lane not open
        uint64 configHeight; // relay height of the certified lane config held (0: genesis / none)
        uint64 configVersion; // bumped at every config: capacities are keyed by it, so old entries vanish
        bool limited; // whether the config lists any capacity (else nothing to look up on send)
    }

    /// @dev One slot: imported reputation (protocol §2.3, kind 3).
    struct Reputation {
        uint64 score;
        uint64 sourceHeight;
        uint64 recordedAt; // block number of the import
        bool exists;
    }

    // ---------------------------------------------------------------------------------------------
    // Storage. Slots 0 and 1 are fixed by SPEC §E2.1: the light client proves them.
    // ---------------------------------------------------------------------------------------------

    /// slot 0: keccak256(abi.encode(dst, lane, sequence)) => packet commitment (deleted at settlement)
    mapping(bytes32 => bytes32) internal _commitments;
    /// slot 1: keccak256(abi.encode(src, lane, sequence)) => ack commitment (never deleted)
    mapping(bytes32 => bytes32) internal _receipts;

    /// @notice Hash of the trusted relay validator set (protocol §7.1).
    bytes32 public relaySetHash;
    /// @notice Relay height of the commit that installed the trusted set (0: the constructor's).
    uint64 public relaySetHeight;

    /// keccak256(abi.encode(counterparty, lane)) => the lane (next sequence to send, config version)
    mapping(bytes32 => Lane) internal _lanes;
    /// keccak256(denom) => token (the energy token for `kWh`, a voucher clone otherwise)
    mapping(bytes32 => address) internal _tokens;
    /// keccak256(abi.encode(counterparty, lane, denom)) => amount escrowed towards that lane
    mapping(bytes32 => uint256) internal _escrow;
    /// keccak256(abi.encode(src, model, subject)) => imported reputation
    mapping(bytes32 => Reputation) internal _reputation;
    /// keccak256(abi.encode(laneKey, configVersion, keccak256(asset))) => capacity + 1 (0: not listed)
    mapping(bytes32 => uint256) internal _capacities;

    /// @notice This chain's id (packets' `src_chain` on send, `dst_chain` on receive).
    string public chainId;
    /// @notice The relay chain whose certificates this bridge accepts.
    string public relayChainId;

    /// @notice The park operator: opens lanes.
    address public immutable owner;
    /// @notice The native `kWh` token.
    address public immutable energyToken;
    /// @notice The VoucherToken implementation voucher clones delegate to.
    address public immutable voucherImpl;

    bytes32 internal immutable _chainIdHash;
    bytes32 internal immutable _relayChainIdHash;
    bytes32 internal immutable _successAckCommitment;

    string public constant NATIVE_DENOM = "kWh";
    /// the tag of commit_sign_bytes (§7.3), "parkrelay/relay-commit/v1": 25 bytes, left-aligned
    bytes32 internal constant COMMIT_TAG_WORD = "parkrelay/relay-commit/v1";
    uint256 internal constant COMMIT_TAG_LENGTH = 25;

    uint256 internal constant KIND_ENERGY = 1;
    uint256 internal constant KIND_REPUTATION = 3;
    uint8 internal constant ACK_SUCCESS = 1;
    uint8 internal constant ACK_ERROR = 2;
    uint8 internal constant OUTCOME_ACKED = 1;
    uint8 internal constant OUTCOME_TIMED_OUT = 2;
    uint256 internal constant MAX_ID = 64;
    uint256 internal constant MAX_STRING = 256;
    uint256 internal constant MAX_PAYLOAD = 4096;
    /// keccak256("*"): the default entry of a lane config (protocol §6.8)
    bytes32 internal constant ANY_ASSET_HASH = keccak256("*");
    /// secp256k1 n / 2: a signature's s must not exceed it (one signature per signer and message)
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    // ---------------------------------------------------------------------------------------------
    // Events (SPEC §E2.2, then this implementation's own)
    // ---------------------------------------------------------------------------------------------

    event PacketSent(string dstChain, string lane, uint64 sequence, bytes packet);
    event AckWritten(string srcChain, string lane, uint64 sequence, bytes packet, bytes ack);
    event PacketSettled(string dstChain, string lane, uint64 sequence, uint8 outcome, bool refunded);
    event RelayValidatorsUpdated(bytes32 setHash, uint64 height);
    event LaneOpened(string counterparty, string lane);
    event LaneConfigured(string dstChain, string lane, uint64 relayHeight, uint64 version);
    event VoucherCreated(string denom, address token);
    event ReputationImported(string srcChain, string model, string subject, uint64 score, uint64 sourceHeight);

    // ---------------------------------------------------------------------------------------------
    // Setup
    // ---------------------------------------------------------------------------------------------

    constructor(
        string memory chainId_,
        string memory relayChainId_,
        ValidatorSet memory relaySet,
        address energyToken_,
        address voucherImpl_
    ) {
        if (!_isId(bytes(chainId_)) || !_isId(bytes(relayChainId_))) revert CodecInvalid();
        if (energyToken_ == address(0) || voucherImpl_ == address(0)) revert CodecInvalid();
        owner = msg.sender;
        chainId = chainId_;
        relayChainId = relayChainId_;
        _chainIdHash = keccak256(bytes(chainId_));
        _relayChainIdHash = keccak256(bytes(relayChainId_));
        energyToken = energyToken_;
        voucherImpl = voucherImpl_;
        _tokens[keccak256(bytes(NATIVE_DENOM))] = energyToken_;
        relaySetHash = _checkedSetHash(relaySet.ed25519Keys, relaySet.ethAddresses, relaySet.powers);
        _successAckCommitment = sha256(abi.encode(ACK_SUCCESS, "ok", ""));
        emit RelayValidatorsUpdated(relaySetHash, 0);
    }

    /// @notice Open a lane to `dstChain` (both directions). Owner only; opening an open lane does nothing.
    function openLane(string calldata dstChain, string calldata lane) external {
        if (msg.sender != owner) revert Unauthorized();
        bytes32 key = _checkedLaneKey(dstChain, lane);
        _open(key, dstChain, lane);
    }

    /// @notice Genesis: open the lane to `dstChain` with the relay genesis's capacities for packets sent on
    ///         it (protocol §6.8; `*` the default). Owner only, and only while no certified config replaced
    ///         the genesis one.
    function configureLane(
        string calldata dstChain,
        string calldata lane,
        string[] calldata assets,
        uint64[] calldata capacities
    ) external {
        if (msg.sender != owner) revert Unauthorized();
        bytes32 key = _checkedLaneKey(dstChain, lane);
        if (_lanes[key].configHeight != 0) revert PacketReplay(); // the relay's certified config rules now
        _configure(key, dstChain, lane, assets, capacities, 0);
    }

    /// @notice Learn the relay's lane `(this chain, dstChain, lane)` and its capacities from a relay
    ///         certificate of its lane-config record `relay/lane_config/{this}/{dst}/{lane}` =
    ///         abi.encode(assets, capacities) (protocol §6.8), certified above the height of the config held.
    ///         Opens the lane if it was not open. Anyone may submit it.
    function updateLaneConfig(
        string calldata dstChain,
        string calldata lane,
        string[] calldata assets,
        uint64[] calldata capacities,
        Certificate calldata cert,
        ValidatorSet calldata relaySet
    ) external {
        bytes32 key = _checkedLaneKey(dstChain, lane);
        uint64 height = cert.commit.header.height;
        if (height <= _lanes[key].configHeight) revert PacketReplay(); // an old record cannot roll back a newer
        bytes32 keyHash = sha256(abi.encodePacked("relay/lane_config/", chainId, "/", dstChain, "/", lane));
        _verifyCertificate(cert, relaySet, keyHash, sha256(abi.encode(assets, capacities)));
        _configure(key, dstChain, lane, assets, capacities, height);
    }

    function _checkedLaneKey(string calldata dstChain, string calldata lane) internal view returns (bytes32) {
        if (!_isId(bytes(dstChain)) || !_isId(bytes(lane))) revert CodecInvalid();
        if (keccak256(bytes(dstChain)) == _chainIdHash) revert WrongChain();
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

    /// @notice Send `amountWh` of `denom` to `receiver` on `dstChain`: escrow a leaving denom (the
    ///         bridge needs an allowance), burn a voucher going home (§2.3). Returns the sequence.
    function sendEnergy(
        string calldata dstChain,
        string calldata lane,
        string calldata denom,
        uint256 amountWh,
        string calldata receiver,
        uint64 timeoutMs
    ) external returns (uint64 sequence) {
        if (keccak256(bytes(dstChain)) == _chainIdHash) revert WrongChain();
        bytes32 laneKey = keccak256(abi.encode(dstChain, lane));
        Lane storage l = _lanes[laneKey];
        sequence = l.nextSequence;
        if (sequence == 0) revert LaneInvalid();
        if (timeoutMs == 0) revert CodecInvalid();
        if (timeoutMs <= block.timestamp * 1000) revert PacketTimeout();
        if (amountWh == 0 || !_isText(bytes(denom)) || !_isText(bytes(receiver))) revert CodecInvalid();
        if (l.limited) _checkCapacity(laneKey, l.configVersion, denom, amountWh);

        address token = _tokens[keccak256(bytes(denom))];
        if (token == address(0)) revert InsufficientFunds(); // nobody here holds it
        if (_startsWithHop(bytes(denom), bytes(lane), bytes(dstChain))) {
            IVoucherToken(token).burn(msg.sender, amountWh); // going home: burn
        } else {
            if (!IParkToken(token).transferFrom(msg.sender, address(this), amountWh)) revert InsufficientFunds();
            _escrow[keccak256(abi.encode(dstChain, lane, denom))] += amountWh;
        }

        l.nextSequence = sequence + 1;
        bytes memory packet = abi.encode(
            chainId,
            dstChain,
            lane,
            sequence,
            uint8(KIND_ENERGY),
            abi.encode(denom, amountWh),
            _hexAddress(msg.sender),
            receiver,
            timeoutMs
        );
        _commitments[keccak256(abi.encode(dstChain, lane, sequence))] = sha256(packet);
        emit PacketSent(dstChain, lane, sequence, packet);
    }

    /// @dev Protocol §6.3 step 1: the relay refuses for good an amount above the bucket's capacity for the
    ///      denom (its own entry, else `*`; neither: not limited), so the packet must not be committed.
    function _checkCapacity(bytes32 laneKey, uint64 version, string calldata denom, uint256 amountWh) internal view {
        uint256 cap = _capacities[keccak256(abi.encode(laneKey, version, keccak256(bytes(denom))))];
        if (cap == 0) cap = _capacities[keccak256(abi.encode(laneKey, version, ANY_ASSET_HASH))];
        if (cap != 0 && amountWh > cap - 1) revert LaneOverCapacity(amountWh, cap - 1);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 3: EXECUTE (protocol §6.5)
    // ---------------------------------------------------------------------------------------------

    /// @notice Execute a packet certified by the relay chain (`relay/verified/{src}/{dst}/{lane}/{seq}`
    ///         → packet commitment) and write its receipt. Application refusals are error acks.
    function recvPacket(bytes calldata packet, Certificate calldata cert, ValidatorSet calldata relaySet)
        external
    {
        _checkPacket(packet);
        bytes calldata src = _dyn(packet, 0);
        bytes calldata lane = _dyn(packet, 2);
        uint64 sequence = uint64(_word(packet, 3));
        if (keccak256(_dyn(packet, 1)) != _chainIdHash) revert WrongChain();
        // No lane check here (§6.5): the relay verified the packet only on a registered lane (§6.4 step 4),
        // and a voucher coming home unescrows only what was escrowed towards its own (src, lane).
        bytes32 receiptKey = keccak256(abi.encode(src, lane, sequence));
        if (_receipts[receiptKey] != 0) revert PacketReplay();

        bytes32 valueHash = sha256(abi.encode(sha256(packet)));
        _verifyCertificate(cert, relaySet, _relayKeyHash("relay/verified/", packet), valueHash);
        if (block.timestamp * 1000 >= _word(packet, 8)) revert PacketTimeout();

        string memory code = _execute(packet);
        bytes memory ack;
        if (bytes(code).length == 0) {
            ack = abi.encode(ACK_SUCCESS, "ok", "");
            _receipts[receiptKey] = _successAckCommitment;
        } else {
            ack = abi.encode(ACK_ERROR, code, "");
            _receipts[receiptKey] = sha256(ack);
        }
        emit AckWritten(string(src), string(lane), sequence, packet, ack);
    }

    /// @return code "" on success, else the error ack's code
    function _execute(bytes calldata packet) internal returns (string memory code) {
        uint256 kind = _word(packet, 4);
        if (kind == KIND_ENERGY) return _recvEnergy(packet);
        if (kind == KIND_REPUTATION) return _recvReputation(packet);
        return "kind.unsupported"; // charging rights: refunded at home (SPEC §E2.3)
    }

    function _recvEnergy(bytes calldata packet) internal returns (string memory) {
        bytes calldata payload = _dyn(packet, 5);
        if (!_layoutOk(payload, 2, 0x1)) return "payload.invalid";
        bytes calldata denom = _dyn(payload, 0);
        uint256 amount = _word(payload, 1);
        if (denom.length == 0 || denom.length > MAX_STRING || amount == 0) return "payload.invalid";
        (bool ok, address to) = _parseAddress(_dyn(packet, 7));
        if (!ok || to == address(0)) return "receiver.invalid";

        bytes calldata src = _dyn(packet, 0);
        bytes calldata lane = _dyn(packet, 2);
        uint256 prefixLength = lane.length + _dyn(packet, 1).length + 2;
        if (_startsWithHop(denom, lane, _dyn(packet, 1))) {
            // a voucher of ours coming home: unescrow from what this lane escrowed
            bytes calldata base = denom[prefixLength:];
            if (base.length == 0) return "denom.invalid";
            bytes32 escrowKey = keccak256(abi.encode(src, lane, base));
            uint256 held = _escrow[escrowKey];
            if (held < amount) return "escrow.insufficient";
            unchecked {
                _escrow[escrowKey] = held - amount;
            }
            if (!IParkToken(_tokens[keccak256(base)]).transfer(to, amount)) revert InsufficientFunds();
        } else {
            // a foreign denom: mint its voucher `{lane}/{src}/{denom}`
            bytes memory voucher = abi.encodePacked(lane, "/", src, "/", denom);
            if (voucher.length > MAX_STRING) return "denom.too_long";
            bytes32 voucherHash = keccak256(voucher);
            address token = _tokens[voucherHash];
            if (token == address(0)) token = _createVoucher(voucher, voucherHash);
            if (!IVoucherToken(token).mint(to, amount)) return "supply.overflow";
        }
        return "";
    }

    function _recvReputation(bytes calldata packet) internal returns (string memory) {
        bytes calldata payload = _dyn(packet, 5);
        if (!_layoutOk(payload, 4, 0x5)) return "payload.invalid";
        bytes calldata subject = _dyn(payload, 0);
        bytes calldata model = _dyn(payload, 2);
        uint256 score = _word(payload, 1);
        uint256 sourceHeight = _word(payload, 3);
        if (
            subject.length == 0 || subject.length > MAX_STRING || model.length == 0 || model.length > MAX_STRING
                || score > type(uint64).max || sourceHeight > type(uint64).max || !_isUtf8(subject) || !_isUtf8(model)
        ) return "payload.invalid"; // the relay does not decode this payload: check it all here (§3.3)
        bytes calldata src = _dyn(packet, 0);
        bytes32 key = keccak256(abi.encode(src, model, subject));
        Reputation storage rec = _reputation[key];
        if (rec.exists && rec.sourceHeight > sourceHeight) return "reputation.stale";
        _reputation[key] = Reputation(uint64(score), uint64(sourceHeight), uint64(block.number), true);
        emit ReputationImported(string(src), string(model), string(subject), uint64(score), uint64(sourceHeight));
        return "";
    }

    function _createVoucher(bytes memory voucher, bytes32 voucherHash) internal returns (address token) {
        address impl = voucherImpl;
        assembly ("memory-safe") {
            // EIP-1167 minimal proxy of `impl`, at a CREATE2 address salted with the denom's hash
            let ptr := mload(0x40)
            mstore(ptr, 0x3d602d80600a3d3981f3363d3d373d3d3d363d73000000000000000000000000)
            mstore(add(ptr, 0x14), shl(0x60, impl))
            mstore(add(ptr, 0x28), 0x5af43d82803e903d91602b57fd5bf30000000000000000000000000000000000)
            token := create2(0, ptr, 0x37, voucherHash)
        }
        if (token == address(0)) revert CodecInvalid(); // unreachable: one clone per denom hash
        IVoucherToken(token).initialize(string(voucher), address(this));
        _tokens[voucherHash] = token;
        emit VoucherCreated(string(voucher), token);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 4: SETTLE (protocol §6.6)
    // ---------------------------------------------------------------------------------------------

    /// @notice Settle a packet this chain sent, on a relay certificate of its outcome
    ///         (`relay/outcome/{src}/{dst}/{lane}/{seq}`). `ack` is the target's ack for ACKED, empty
    ///         for TIMED_OUT. A success ack keeps the escrow (or the burn); an error ack or a timeout
    ///         refunds the sender.
    function settle(bytes calldata packet, bytes calldata ack, Certificate calldata cert, ValidatorSet calldata relaySet)
        external
    {
        _checkPacket(packet);
        bytes calldata dst = _dyn(packet, 1);
        bytes calldata lane = _dyn(packet, 2);
        uint64 sequence = uint64(_word(packet, 3));
        if (keccak256(_dyn(packet, 0)) != _chainIdHash) revert WrongChain();
        bytes32 commitmentKey = keccak256(abi.encode(dst, lane, sequence));
        bytes32 stored = _commitments[commitmentKey];
        if (stored == 0) revert PacketReplay();
        bytes32 packetCommitment = sha256(packet);
        if (stored != packetCommitment) revert ProofInvalid();

        // the outcome record (§2.5) the relay must have certified: ACKED with this ack, or TIMED_OUT
        uint8 outcome = OUTCOME_TIMED_OUT;
        bytes32 ackCommitment;
        bool refund = true;
        if (ack.length != 0) {
            outcome = OUTCOME_ACKED;
            ackCommitment = sha256(ack);
            refund = !_checkAck(ack);
        }
        bytes32 valueHash = sha256(abi.encode(outcome, packetCommitment, ackCommitment));
        _verifyCertificate(cert, relaySet, _relayKeyHash("relay/outcome/", packet), valueHash);

        delete _commitments[commitmentKey];
        if (refund) _refund(packet);
        emit PacketSettled(string(dst), string(lane), sequence, outcome, refund);
    }

    /// @dev Give back exactly what sendEnergy took: re-mint a burned voucher, or unescrow.
    function _refund(bytes calldata packet) internal {
        bytes calldata payload = _dyn(packet, 5); // written by sendEnergy: canonical energy payload
        bytes calldata denom = _dyn(payload, 0);
        uint256 amount = _word(payload, 1);
        (, address sender) = _parseAddress(_dyn(packet, 6));
        bytes calldata dst = _dyn(packet, 1);
        bytes calldata lane = _dyn(packet, 2);
        address token = _tokens[keccak256(denom)];
        if (_startsWithHop(denom, lane, dst)) {
            if (!IVoucherToken(token).mint(sender, amount)) revert InsufficientFunds(); // unreachable
        } else {
            _escrow[keccak256(abi.encode(dst, lane, denom))] -= amount;
            if (!IParkToken(token).transfer(sender, amount)) revert InsufficientFunds();
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Relay validator set (protocol §7.5)
    // ---------------------------------------------------------------------------------------------

    /// @notice Move the trusted set to `newSet`, certified by the current set as the next set of a
    ///         relay header above the height of the last accepted update.
    function updateRelayValidators(ValidatorSet calldata newSet, Commit calldata commit, ValidatorSet calldata relaySet)
        external
    {
        bytes32 newHash = _checkedSetHash(newSet.ed25519Keys, newSet.ethAddresses, newSet.powers);
        uint64 height = commit.header.height;
        if (height <= relaySetHeight) revert PacketReplay();
        _verifyCommit(commit, relaySet);
        if (commit.header.nextValidatorsHash != newHash) revert ValidatorSetMismatch();
        relaySetHash = newHash;
        relaySetHeight = height;
        emit RelayValidatorsUpdated(newHash, height);
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @notice The token of `denom` here (zero if none yet).
    function tokenOf(string calldata denom) external view returns (address) {
        return _tokens[keccak256(bytes(denom))];
    }

    /// @notice The next sequence `sendEnergy` assigns on the lane (1 for a lane never used or not open).
    function nextSequenceSend(string calldata dstChain, string calldata lane) external view returns (uint64) {
        uint64 next = _lanes[keccak256(abi.encode(dstChain, lane))].nextSequence;
        return next == 0 ? 1 : next;
    }

    function laneOpen(string calldata counterparty, string calldata lane) external view returns (bool) {
        return _lanes[keccak256(abi.encode(counterparty, lane))].nextSequence != 0;
    }

    /// @notice The relay's capacity for `asset` on the lane to `dstChain` as this bridge knows it
    ///         (`limited` false: not limited), and the relay height of the config (0: genesis or none).
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

    /// @notice What this bridge holds in escrow of `denom` for packets sent over `lane` to `counterparty`.
    function escrowed(string calldata counterparty, string calldata lane, string calldata denom)
        external
        view
        returns (uint256)
    {
        return _escrow[keccak256(abi.encode(counterparty, lane, denom))];
    }

    /// @notice Reputation imported from `srcChain` for `(model, subject)`; `exists` false if none.
    function importedReputation(string calldata srcChain, string calldata model, string calldata subject)
        external
        view
        returns (uint64 score, uint64 sourceHeight, uint64 recordedAt, bool exists)
    {
        Reputation memory r = _reputation[keccak256(abi.encode(srcChain, model, subject))];
        return (r.score, r.sourceHeight, r.recordedAt, r.exists);
    }

    // ---------------------------------------------------------------------------------------------
    // Relay certificates (protocol §7.4, §7.6) and proofs (§4)
    // ---------------------------------------------------------------------------------------------

    function _verifyCertificate(
        Certificate calldata cert,
        ValidatorSet calldata relaySet,
        bytes32 keyHash,
        bytes32 valueHash
    ) internal view {
        _verifyCommit(cert.commit, relaySet);
        _verifyMembership(cert.commit.header.stateRoot, keyHash, valueHash, cert.proof);
    }

    /// @dev §7.4 in order: chain id; validator set (the calldata set must be the trusted one and the
    ///      header must name it); signatures in order; quorum.
    function _verifyCommit(Commit calldata commit, ValidatorSet calldata relaySet) internal view {
        RelayHeader calldata h = commit.header;
        if (keccak256(bytes(h.chainId)) != _relayChainIdHash) revert WrongChain();
        bytes32 trusted = relaySetHash;
        (bool isTrusted, uint256 n, uint256 addrs, uint256 powers) = _trustedSet(relaySet, trusted);
        if (!isTrusted || h.validatorsHash != trusted) revert ValidatorSetMismatch();
        bytes32 digest = _commitDigest(commit);

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
            address signer = _recover(digest, sig);
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
    function _trustedSet(ValidatorSet calldata set, bytes32 trusted)
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
    function _commitDigest(Commit calldata commit) internal view returns (bytes32 digest) {
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
    function _recover(bytes32 digest, bytes calldata sig) internal pure returns (address) {
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
    function _verifyMembership(bytes32 root, bytes32 keyHash, bytes32 valueHash, bytes calldata proof)
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

    /// @dev sha256 of the relay path `{prefix}{src}/{dst}/{lane}/{sequence}` of a checked packet.
    function _relayKeyHash(string memory prefix, bytes calldata packet) internal pure returns (bytes32) {
        return sha256(
            abi.encodePacked(
                prefix,
                _dyn(packet, 0),
                "/",
                _dyn(packet, 1),
                "/",
                _dyn(packet, 2),
                "/",
                _decimal(_word(packet, 3))
            )
        );
    }

    /// @dev Validates a set (non-empty, equal lengths, powers >= 1, distinct ed25519 keys) and returns
    ///      sha256(abi.encode(keys, addresses, powers)) (protocol §7.1).
    function _checkedSetHash(bytes32[] memory keys, address[] memory addrs, uint64[] memory powers)
        internal
        pure
        returns (bytes32)
    {
        uint256 n = keys.length;
        if (n == 0 || addrs.length != n || powers.length != n) revert CodecInvalid();
        for (uint256 i; i < n; ++i) {
            if (powers[i] == 0) revert CodecInvalid();
            for (uint256 j; j < i; ++j) {
                if (keys[j] == keys[i]) revert CodecInvalid();
            }
        }
        return sha256(abi.encode(keys, addrs, powers));
    }

    // ---------------------------------------------------------------------------------------------
    // Canonical decoding (protocol §3.3) in place over calldata
    // ---------------------------------------------------------------------------------------------

    /// @dev A packet: the canonical layout of (string, string, string, uint64, uint8, bytes, string,
    ///      string, uint64) and the rules of §2.2 that are not re-checked elsewhere: this accepts exactly
    ///      the bytes abi.decode-then-re-encode would give back, and reverts CodecInvalid (never without
    ///      data) on anything else. Identifier characters need no check here: dst must equal this chain
    ///      and (src, lane) be an open lane, both checked identifiers; the UTF-8 of sender and receiver
    ///      was checked by the relay's strict decoder (phase 2) before it certified the commitment.
    function _checkPacket(bytes calldata packet) internal pure {
        if (!_layoutOk(packet, 9, 0xE7)) revert CodecInvalid();
        uint256 sequence = _word(packet, 3);
        uint256 kind = _word(packet, 4);
        uint256 timeout = _word(packet, 8);
        if (sequence == 0 || sequence > type(uint64).max || kind == 0 || kind > 3) revert CodecInvalid();
        if (timeout == 0 || timeout > type(uint64).max) revert CodecInvalid();
        uint256 srcLength = _dyn(packet, 0).length;
        uint256 dstLength = _dyn(packet, 1).length;
        uint256 laneLength = _dyn(packet, 2).length;
        uint256 senderLength = _dyn(packet, 6).length;
        uint256 receiverLength = _dyn(packet, 7).length;
        if (
            srcLength == 0 || srcLength > MAX_ID || dstLength == 0 || dstLength > MAX_ID || laneLength == 0
                || laneLength > MAX_ID || _dyn(packet, 5).length > MAX_PAYLOAD || senderLength == 0
                || senderLength > MAX_STRING || receiverLength == 0 || receiverLength > MAX_STRING
        ) revert CodecInvalid();
        if (srcLength == dstLength && keccak256(_dyn(packet, 0)) == keccak256(_dyn(packet, 1))) revert CodecInvalid();
    }

    /// @dev An acknowledgement (uint8 status, string code, bytes result), §2.4. Returns status == 1.
    function _checkAck(bytes calldata ack) internal pure returns (bool success) {
        if (!_layoutOk(ack, 3, 0x6)) revert CodecInvalid();
        uint256 status = _word(ack, 0);
        bytes calldata code = _dyn(ack, 1);
        if (status == 0 || status > 2 || code.length == 0 || code.length > MAX_STRING) revert CodecInvalid();
        if (_dyn(ack, 2).length > MAX_PAYLOAD) revert CodecInvalid();
        success = status == ACK_SUCCESS;
        if (success != (keccak256(code) == keccak256("ok"))) revert CodecInvalid();
        if (!_isUtf8(code)) revert CodecInvalid();
    }

    /// @dev True iff `data` is exactly the canonical ABI layout of a tuple of `headWords` one-word
    ///      members, those flagged in `dynMask` (bit i: member i) being `bytes`/`string`: offsets in
    ///      order with no gaps, every tail inside the data, zero padding, and nothing after the last
    ///      tail. Static members are not checked (their callers range-check them).
    function _layoutOk(bytes calldata data, uint256 headWords, uint256 dynMask) internal pure returns (bool ok) {
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
    function _word(bytes calldata data, uint256 i) internal pure returns (uint256 w) {
        assembly ("memory-safe") {
            w := calldataload(add(data.offset, shl(5, i)))
        }
    }

    /// @dev The `bytes`/`string` member whose offset is head word `i`; only after _layoutOk.
    function _dyn(bytes calldata data, uint256 i) internal pure returns (bytes calldata out) {
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
    function _startsWithHop(bytes calldata denom, bytes calldata lane, bytes calldata chain)
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
    function _isId(bytes memory s) internal pure returns (bool) {
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
    function _isText(bytes calldata s) internal pure returns (bool) {
        return s.length != 0 && s.length <= MAX_STRING && _isUtf8(s);
    }

    /// @dev RFC 3629 UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
    function _isUtf8(bytes calldata s) internal pure returns (bool) {
        uint256 n = s.length;
        uint256 i;
        while (i < n) {
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
    function _parseAddress(bytes calldata s) internal pure returns (bool ok, address account) {
        if (s.length != 42) return (false, address(0));
        uint256 head;
        uint256 tail;
        assembly ("memory-safe") {
            ok := eq(shr(240, calldataload(s.offset)), 0x3078) // "0x"
            head := calldataload(add(s.offset, 2)) // digits 0..31
            // digits 32..39 in the low 8 bytes, ASCII '0' in the 24 bytes above them
            tail := or(shr(192, calldataload(add(s.offset, 34))), shl(64, mul(0x30, div(not(0), 0xff))))
        }
        (bool okHead, uint256 high) = _hexDigits(head);
        (bool okTail, uint256 low) = _hexDigits(tail);
        ok = ok && okHead && okTail;
        account = address(uint160((high << 32) | low));
    }

    /// @dev 32 ASCII bytes, each in [0-9a-f], → their 128-bit value; all bytes at once (SWAR).
    function _hexDigits(uint256 x) internal pure returns (bool ok, uint256 v) {
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

    /// @notice The account check phase 3 applies to an energy packet's receiver (SPEC §E1): `0x` and 40
    ///         lowercase hex digits, not the zero address.
    function parseAccount(string calldata account) external pure returns (bool ok, address addr) {
        (ok, addr) = _parseAddress(bytes(account));
        ok = ok && addr != address(0);
    }

    /// @dev The lowercase `0x` hex form of an address (SPEC §E1), as the bridge writes `sender`.
    function _hexAddress(address a) internal pure returns (string memory out) {
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
    function _decimal(uint256 v) internal pure returns (bytes memory out) {
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
