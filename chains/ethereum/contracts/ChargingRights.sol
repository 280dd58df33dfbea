// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IChargingRightApp, IParkApp} from "./IParkApp.sol";
import {PacketCodec} from "./PacketCodec.sol";
import {
    AdmissionRefused,
    CodecInvalid,
    ReceiverRefused,
    RightExists,
    RightPayloadMismatch,
    RightUnavailable,
    TimeoutAfterSlotStart,
    Unauthorized
} from "./ParkErrors.sol";

interface IERC721Receiver {
    function onERC721Received(address operator, address from, uint256 tokenId, bytes calldata data)
        external
        returns (bytes4);
}

interface IBridgeOwner {
    function owner() external view returns (address);
    function chainId() external view returns (string memory);
}

/// @title Charging rights, kind 2 (protocol/SPEC.md §2.3; the issue 12 rules): ERC-721 rights, the park's
///        transformer registry, admission and bookings.
/// @notice One ERC-721 collection holds every right live on this park: home rights issued here (id without `/`)
///         and voucher rights received over a lane (id `{lane}/{src}/{the id as src held it}`, newest hop first).
///         The token id is `uint256(keccak256(right id))`, so an id exists at most once here. A right exists
///         exactly once in the parks: live on one, escrowed (owned by this contract) on every other along its
///         trace. For a packet on `lane` to `dst`, a right whose id starts with `{lane}/{dst}/` goes home along its
///         trace and is burned here; any other right leaves and is escrowed. The target unescrows the first (it
///         must be escrowed towards that (chain, lane) with equal fields) and mints a voucher for the second. A
///         refund undoes the source's action.
///
///         A right becomes live here (issued, minted as a voucher, unescrowed on its way back) only through
///         admission by this park's registry, refusing in this order: `slot.started`, `station.unknown`,
///         `transformer.mismatch`, `transformer.unknown`, `capacity.exceeded` (the power of the booked rights
///         whose slots overlap the new one plus its own above the transformer's capacity). A right is booked on
///         its transformer while live or in flight here; the booking is released when it leaves with a success
///         ack, or when its slot ends (a refund keeps it). The registry is written by the park operator only (the
///         bridge's owner).
/// @dev Storage per right: its owner and state (one slot), the keccak256 of its canonical payload (one slot), the
///      (dst, lane) it is escrowed towards while escrowed. The payload itself is in the `RightCreated` log: a
///      holder sends a right by handing its payload back (checked against the hash), and tools read it there.
///      A booking is one slot (power, slot start, slot end, the low 64 bits of the token id) in its
///      transformer's list; ended slots are pruned whenever the list is written.
contract ChargingRights is IChargingRightApp {
    using PacketCodec for bytes;

    uint8 internal constant NONE = 0;
    uint8 internal constant LIVE = 1; // owned by `owner`, here
    uint8 internal constant ESCROWED = 2; // owned by this contract: live further along its trace, or in flight
    uint8 internal constant BURNING = 3; // a voucher on its way home, until its packet settles

    uint8 internal constant ADMITTED = 0;
    uint8 internal constant SLOT_STARTED = 1;
    uint8 internal constant STATION_UNKNOWN = 2;
    uint8 internal constant TRANSFORMER_MISMATCH = 3;
    uint8 internal constant TRANSFORMER_UNKNOWN = 4;
    uint8 internal constant CAPACITY_EXCEEDED = 5;

    struct Right {
        address owner;
        uint8 state;
    }

    struct Transformer {
        uint64 capacityKw;
        bool exists;
        uint32 bookings;
    }

    /// @notice The router that alone calls the packet hooks.
    address public immutable bridge;
    /// @notice The park operator (the bridge's owner): writes the registry and issues home rights.
    address public immutable operator;
    /// @notice This park's chain id: the `home_park` of the rights it issues.
    string public chainId;

    mapping(uint256 tokenId => Right) internal _rights;
    mapping(uint256 tokenId => bytes32) internal _payloadHash;
    mapping(uint256 tokenId => bytes32) internal _escrowedTo; // keccak256(abi.encode(dst, lane))
    mapping(address => uint256) internal _balances;
    mapping(uint256 tokenId => address) internal _approved;
    mapping(address => mapping(address => bool)) public isApprovedForAll;

    mapping(bytes32 transformerHash => Transformer) internal _transformers;
    mapping(bytes32 stationHash => bytes32 transformerHash) internal _stations;
    /// transformer hash => index => power_kw << 192 | slot_start_ms << 128 | slot_end_ms << 64 | uint64(tokenId)
    mapping(bytes32 transformerHash => mapping(uint256 => uint256)) internal _bookings;

    // ERC-721
    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
    event Approval(address indexed owner, address indexed approved, uint256 indexed tokenId);
    event ApprovalForAll(address indexed owner, address indexed operator, bool approved);
    // rights
    /// @notice A right appeared here (issued, or minted as a voucher): its canonical payload (§2.3).
    event RightCreated(uint256 indexed tokenId, address indexed owner, bytes payload);
    /// @notice A right left for `dstChain` over `lane` in the packet `sequence` and is held in escrow here.
    event RightEscrowed(uint256 indexed tokenId, uint64 indexed sequence, string dstChain, string lane);
    // registry
    event TransformerSet(bytes32 indexed transformerHash, string name, uint64 capacityKw);
    event StationSet(bytes32 indexed stationHash, string name, string transformer);

    constructor(address bridge_) {
        if (bridge_ == address(0)) revert CodecInvalid();
        bridge = bridge_;
        operator = IBridgeOwner(bridge_).owner();
        chainId = IBridgeOwner(bridge_).chainId();
    }

    modifier onlyBridge() {
        if (msg.sender != bridge) revert Unauthorized(bridge, msg.sender);
        _;
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert Unauthorized(operator, msg.sender);
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // The registry (operator only)
    // ---------------------------------------------------------------------------------------------

    /// @notice Set a transformer's capacity (kW); creates it if new. Lowering it below the booked load refuses
    ///         new rights until the load falls; it removes no booking.
    function setTransformer(string calldata name_, uint64 capacityKw) external onlyOperator {
        if (!PacketCodec.isText(bytes(name_))) revert CodecInvalid();
        bytes32 th = keccak256(bytes(name_));
        Transformer storage t = _transformers[th];
        t.capacityKw = capacityKw;
        t.exists = true;
        emit TransformerSet(th, name_, capacityKw);
    }

    /// @notice Register a charging station behind a transformer (the transformer need not exist yet: admission
    ///         then refuses `transformer.unknown`).
    function setStation(string calldata name_, string calldata transformer) external onlyOperator {
        if (!PacketCodec.isText(bytes(name_)) || !PacketCodec.isText(bytes(transformer))) revert CodecInvalid();
        bytes32 sh = keccak256(bytes(name_));
        _stations[sh] = keccak256(bytes(transformer));
        emit StationSet(sh, name_, transformer);
    }

    /// @notice Issue a home right to `owner` (admitted and booked like any right becoming live here).
    function issue(
        string calldata rightId,
        string calldata station,
        string calldata transformer,
        uint64 powerKw,
        uint64 slotStartMs,
        uint64 slotEndMs,
        address owner
    ) external onlyOperator returns (uint256 tokenId) {
        if (!PacketCodec.isId(bytes(rightId))) revert CodecInvalid(); // a base id: no `/`
        if (!PacketCodec.isText(bytes(station)) || !PacketCodec.isText(bytes(transformer))) revert CodecInvalid();
        if (powerKw == 0 || slotEndMs <= slotStartMs || owner == address(0) || owner == address(this)) {
            revert CodecInvalid();
        }
        tokenId = uint256(keccak256(bytes(rightId)));
        if (_rights[tokenId].state != NONE) revert RightExists(tokenId);
        bytes32 th = keccak256(bytes(transformer));
        (uint8 rule, uint256 expected, uint256 got) =
            _admission(keccak256(bytes(station)), th, powerKw, slotStartMs, slotEndMs);
        if (rule != ADMITTED) revert AdmissionRefused(_ruleCode(rule), expected, got);
        bytes memory payload = abi.encode(rightId, chainId, station, transformer, powerKw, slotStartMs, slotEndMs);
        _create(tokenId, owner, payload, th, powerKw, slotStartMs, slotEndMs);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 1
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IChargingRightApp
    function onSendRight(
        address sender,
        string calldata dstChain,
        string calldata lane,
        uint64 sequence,
        bytes calldata payload,
        uint64 timeoutMs
    ) external onlyBridge {
        if (!payload.isRightPayload()) revert CodecInvalid();
        bytes calldata id = payload.dyn(0);
        uint256 tokenId = uint256(keccak256(id));
        Right storage r = _rights[tokenId];
        if (r.state != LIVE) revert RightUnavailable(tokenId, r.state);
        if (r.owner != sender) revert Unauthorized(r.owner, sender);
        bytes32 stored = _payloadHash[tokenId];
        bytes32 given = keccak256(payload);
        if (given != stored) revert RightPayloadMismatch(stored, given);
        uint64 slotStart = uint64(payload.word(5));
        if (timeoutMs > slotStart) revert TimeoutAfterSlotStart(timeoutMs, slotStart);

        delete _approved[tokenId];
        unchecked {
            --_balances[sender];
        }
        if (id.startsWithHop(bytes(lane), bytes(dstChain))) {
            // going home along its trace: burned here (kept reserved until its packet settles)
            r.owner = address(0);
            r.state = BURNING;
            emit Transfer(sender, address(0), tokenId);
        } else {
            r.owner = address(this);
            r.state = ESCROWED;
            ++_balances[address(this)];
            _escrowedTo[tokenId] = keccak256(abi.encode(dstChain, lane));
            emit Transfer(sender, address(this), tokenId);
            emit RightEscrowed(tokenId, sequence, dstChain, lane);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 3
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IParkApp
    function onRecvPacket(bytes calldata packet) external onlyBridge returns (string memory) {
        bytes calldata p = packet.dyn(PacketCodec.PAYLOAD);
        if (!p.isRightPayload()) return "payload.invalid";
        (bool ok, address to) = packet.dyn(PacketCodec.RECEIVER).parseAddress();
        if (!ok || to == address(0) || to == address(this)) return "receiver.invalid";
        bytes calldata id = p.dyn(0);
        bytes calldata src = packet.dyn(PacketCodec.SRC);
        bytes calldata lane = packet.dyn(PacketCodec.LANE);
        bytes calldata here = packet.dyn(PacketCodec.DST);
        bytes32 th = keccak256(p.dyn(3));
        uint256 power = p.word(4);
        uint256 start = p.word(5);
        uint256 end = p.word(6);

        if (id.startsWithHop(lane, here)) {
            // coming home along its trace: unescrow what was escrowed towards (src, lane) with equal fields
            bytes calldata base = id[lane.length + here.length + 2:];
            uint256 tokenId = uint256(keccak256(base));
            Right storage r = _rights[tokenId];
            if (r.state != ESCROWED || _escrowedTo[tokenId] != keccak256(abi.encode(src, lane))) {
                return "right.not_escrowed";
            }
            bytes32 fields = keccak256(abi.encode(base, p.dyn(1), p.dyn(2), p.dyn(3), power, start, end));
            if (fields != _payloadHash[tokenId]) return "right.mismatch";
            (uint8 rule,,) = _admission(keccak256(p.dyn(2)), th, power, start, end);
            if (rule != ADMITTED) return _ruleCode(rule);
            r.owner = to;
            r.state = LIVE;
            delete _escrowedTo[tokenId];
            unchecked {
                --_balances[address(this)];
                ++_balances[to];
            }
            _book(th, tokenId, power, start, end);
            emit Transfer(address(this), to, tokenId);
        } else {
            // leaving its issuer's side of the trace: a voucher `{lane}/{src}/{id}` here
            bytes memory voucher = abi.encodePacked(lane, "/", src, "/", id);
            if (voucher.length > PacketCodec.MAX_STRING) return "right.too_long";
            uint256 tokenId = uint256(keccak256(voucher));
            if (_rights[tokenId].state != NONE) return "right.exists";
            (uint8 rule,,) = _admission(keccak256(p.dyn(2)), th, power, start, end);
            if (rule != ADMITTED) return _ruleCode(rule);
            bytes memory payload = abi.encode(voucher, p.dyn(1), p.dyn(2), p.dyn(3), power, start, end);
            _create(tokenId, to, payload, th, power, start, end);
        }
        return "";
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 4
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IParkApp
    function onSettlePacket(bytes calldata packet, bool refund) external onlyBridge {
        bytes calldata p = packet.dyn(PacketCodec.PAYLOAD); // checked by onSendRight
        bytes calldata id = p.dyn(0);
        uint256 tokenId = uint256(keccak256(id));
        bool returning = id.startsWithHop(packet.dyn(PacketCodec.LANE), packet.dyn(PacketCodec.DST));
        Right storage r = _rights[tokenId];
        if (refund) {
            // undo phase 1: the right is live again with its sender, still booked here
            (, address sender) = packet.dyn(PacketCodec.SENDER).parseAddress();
            address from = returning ? address(0) : address(this);
            if (!returning) {
                delete _escrowedTo[tokenId];
                unchecked {
                    --_balances[address(this)];
                }
            }
            r.owner = sender;
            r.state = LIVE;
            unchecked {
                ++_balances[sender];
            }
            emit Transfer(from, sender, tokenId);
        } else {
            // it left for good: no longer loads our transformer; a voucher that went home is gone
            _unbook(keccak256(p.dyn(3)), tokenId);
            if (returning) {
                delete _rights[tokenId];
                delete _payloadHash[tokenId];
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Admission and bookings
    // ---------------------------------------------------------------------------------------------

    /// @dev The admission rules in their order of refusal; (rule, expected, got) for the error data. Reads only.
    function _admission(bytes32 sh, bytes32 th, uint256 power, uint256 start, uint256 end)
        internal
        view
        returns (uint8 rule, uint256 expected, uint256 got)
    {
        uint256 nowMs = block.timestamp * 1000;
        if (start <= nowMs) return (SLOT_STARTED, nowMs + 1, start);
        bytes32 registered = _stations[sh];
        if (registered == 0) return (STATION_UNKNOWN, 1, 0);
        if (registered != th) return (TRANSFORMER_MISMATCH, uint256(registered), uint256(th));
        Transformer storage t = _transformers[th];
        if (!t.exists) return (TRANSFORMER_UNKNOWN, 1, 0);
        uint256 load = power;
        uint256 n = t.bookings;
        mapping(uint256 => uint256) storage list = _bookings[th];
        for (uint256 i; i < n; ++i) {
            uint256 b = list[i];
            // an ended booking ends at or before now < start: it cannot overlap
            if (uint64(b >> 128) < end && start < uint64(b >> 64)) load += b >> 192;
        }
        if (load > t.capacityKw) return (CAPACITY_EXCEEDED, t.capacityKw, load);
        return (ADMITTED, 0, 0);
    }

    function _ruleCode(uint8 rule) internal pure returns (string memory) {
        if (rule == SLOT_STARTED) return "slot.started";
        if (rule == STATION_UNKNOWN) return "station.unknown";
        if (rule == TRANSFORMER_MISMATCH) return "transformer.mismatch";
        if (rule == TRANSFORMER_UNKNOWN) return "transformer.unknown";
        return "capacity.exceeded";
    }

    function _create(
        uint256 tokenId,
        address owner,
        bytes memory payload,
        bytes32 th,
        uint256 power,
        uint256 start,
        uint256 end
    ) internal {
        _rights[tokenId] = Right(owner, LIVE);
        _payloadHash[tokenId] = keccak256(payload);
        unchecked {
            ++_balances[owner];
        }
        _book(th, tokenId, power, start, end);
        emit Transfer(address(0), owner, tokenId);
        emit RightCreated(tokenId, owner, payload);
    }

    /// @dev Append a booking, pruning the ended ones (swap with the last).
    function _book(bytes32 th, uint256 tokenId, uint256 power, uint256 start, uint256 end) internal {
        Transformer storage t = _transformers[th];
        mapping(uint256 => uint256) storage list = _bookings[th];
        uint256 n = _prune(list, t.bookings);
        list[n] = (power << 192) | (start << 128) | (end << 64) | uint64(tokenId);
        t.bookings = uint32(n + 1);
    }

    /// @dev Remove the booking of `tokenId` (if its slot has not ended and been pruned already).
    function _unbook(bytes32 th, uint256 tokenId) internal {
        Transformer storage t = _transformers[th];
        mapping(uint256 => uint256) storage list = _bookings[th];
        uint256 n = t.bookings;
        uint64 tag = uint64(tokenId);
        for (uint256 i; i < n; ++i) {
            if (uint64(list[i]) == tag) {
                --n;
                list[i] = list[n];
                delete list[n];
                break;
            }
        }
        t.bookings = uint32(_prune(list, n));
    }

    function _prune(mapping(uint256 => uint256) storage list, uint256 n) internal returns (uint256) {
        uint256 nowMs = block.timestamp * 1000;
        for (uint256 i; i < n;) {
            if (uint64(list[i] >> 64) <= nowMs) {
                --n;
                list[i] = list[n];
                delete list[n];
            } else {
                ++i;
            }
        }
        return n;
    }

    // ---------------------------------------------------------------------------------------------
    // ERC-721
    // ---------------------------------------------------------------------------------------------

    function name() external pure returns (string memory) {
        return "Park charging rights";
    }

    function symbol() external pure returns (string memory) {
        return "RIGHT";
    }

    function supportsInterface(bytes4 id) external pure returns (bool) {
        return id == 0x01ffc9a7 || id == 0x80ac58cd; // ERC-165, ERC-721
    }

    function balanceOf(address owner) external view returns (uint256) {
        if (owner == address(0)) revert CodecInvalid();
        return _balances[owner];
    }

    /// @notice The holder of a live right, or this contract for an escrowed one.
    function ownerOf(uint256 tokenId) public view returns (address) {
        Right storage r = _rights[tokenId];
        if (r.state != LIVE && r.state != ESCROWED) revert RightUnavailable(tokenId, r.state);
        return r.owner;
    }

    function getApproved(uint256 tokenId) external view returns (address) {
        ownerOf(tokenId);
        return _approved[tokenId];
    }

    function approve(address to, uint256 tokenId) external {
        address owner = _liveOwner(tokenId);
        if (msg.sender != owner && !isApprovedForAll[owner][msg.sender]) revert Unauthorized(owner, msg.sender);
        _approved[tokenId] = to;
        emit Approval(owner, to, tokenId);
    }

    function setApprovalForAll(address op, bool approved) external {
        isApprovedForAll[msg.sender][op] = approved;
        emit ApprovalForAll(msg.sender, op, approved);
    }

    /// @notice Move a live right to another account of this park (its booking stays: same right, same slot).
    function transferFrom(address from, address to, uint256 tokenId) public {
        address owner = _liveOwner(tokenId);
        if (owner != from) revert Unauthorized(owner, from);
        if (msg.sender != owner && !isApprovedForAll[owner][msg.sender] && _approved[tokenId] != msg.sender) {
            revert Unauthorized(owner, msg.sender);
        }
        if (to == address(0) || to == address(this)) revert CodecInvalid();
        delete _approved[tokenId];
        unchecked {
            --_balances[from];
            ++_balances[to];
        }
        _rights[tokenId].owner = to;
        emit Transfer(from, to, tokenId);
    }

    function safeTransferFrom(address from, address to, uint256 tokenId) external {
        safeTransferFrom(from, to, tokenId, "");
    }

    function safeTransferFrom(address from, address to, uint256 tokenId, bytes memory data) public {
        transferFrom(from, to, tokenId);
        if (to.code.length != 0) {
            try IERC721Receiver(to).onERC721Received(msg.sender, from, tokenId, data) returns (bytes4 ret) {
                if (ret != IERC721Receiver.onERC721Received.selector) revert ReceiverRefused(to);
            } catch {
                revert ReceiverRefused(to);
            }
        }
    }

    function _liveOwner(uint256 tokenId) internal view returns (address) {
        Right storage r = _rights[tokenId];
        if (r.state != LIVE) revert RightUnavailable(tokenId, r.state);
        return r.owner;
    }

    // ---------------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------------

    /// @notice The token id of a right id here.
    function tokenIdOf(string calldata rightId) external pure returns (uint256) {
        return uint256(keccak256(bytes(rightId)));
    }

    /// @notice A right by token id: state (0 none, 1 live, 2 escrowed, 3 burning on its way home), owner, the
    ///         keccak256 of its payload, and keccak256(abi.encode(dst, lane)) it is escrowed towards (0 if not).
    function rightOf(uint256 tokenId)
        external
        view
        returns (uint8 state, address owner, bytes32 payloadHash, bytes32 escrowedTo)
    {
        Right storage r = _rights[tokenId];
        return (r.state, r.owner, _payloadHash[tokenId], _escrowedTo[tokenId]);
    }

    /// @notice A transformer: whether it is registered, its capacity (kW) and how many bookings it holds.
    function transformerOf(string calldata name_)
        external
        view
        returns (bool exists, uint64 capacityKw, uint256 bookings)
    {
        Transformer storage t = _transformers[keccak256(bytes(name_))];
        return (t.exists, t.capacityKw, t.bookings);
    }

    /// @notice The keccak256 of the transformer a station is registered behind (0: not registered).
    function stationOf(string calldata name_) external view returns (bytes32 transformerHash) {
        return _stations[keccak256(bytes(name_))];
    }

    /// @notice A transformer's bookings (ended ones included until the list is next written).
    function bookingsOf(string calldata transformer)
        external
        view
        returns (uint64[] memory powerKw, uint64[] memory slotStartMs, uint64[] memory slotEndMs, uint64[] memory tag)
    {
        bytes32 th = keccak256(bytes(transformer));
        uint256 n = _transformers[th].bookings;
        powerKw = new uint64[](n);
        slotStartMs = new uint64[](n);
        slotEndMs = new uint64[](n);
        tag = new uint64[](n);
        for (uint256 i; i < n; ++i) {
            uint256 b = _bookings[th][i];
            (powerKw[i], slotStartMs[i], slotEndMs[i], tag[i]) =
                (uint64(b >> 192), uint64(b >> 128), uint64(b >> 64), uint64(b));
        }
    }

    /// @notice The load the admission rule would count for a new right on `transformer` over [start, end) (kW).
    function bookedLoad(string calldata transformer, uint64 slotStartMs, uint64 slotEndMs)
        external
        view
        returns (uint256 load)
    {
        bytes32 th = keccak256(bytes(transformer));
        uint256 n = _transformers[th].bookings;
        for (uint256 i; i < n; ++i) {
            uint256 b = _bookings[th][i];
            if (uint64(b >> 128) < slotEndMs && slotStartMs < uint64(b >> 64)) load += b >> 192;
        }
    }
}
