// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IEnergyApp, IParkApp} from "./IParkApp.sol";
import {IParkToken, IVoucherToken} from "./IParkToken.sol";
import {PacketCodec} from "./PacketCodec.sol";
import {CodecInvalid, InsufficientFunds, Unauthorized} from "./ParkErrors.sol";

/// @title Where the energy app keeps its state inside the router: an ERC-7201 namespace, apart from the router's
///        own variables (slots 0 and 1 are the proven commitments and receipts, chains/ethereum/SPEC.md §E2.1).
library EnergyState {
    /// @custom:storage-location erc7201:parkrelay.energy.v1
    struct Layout {
        /// keccak256(denom) => token (the energy token for `kWh`, a voucher clone otherwise)
        mapping(bytes32 => address) tokens;
        /// keccak256(abi.encode(counterparty, lane, denom)) => amount escrowed towards that lane
        mapping(bytes32 => uint256) escrow;
    }

    /// keccak256(abi.encode(uint256(keccak256("parkrelay.energy.v1")) - 1)) & ~bytes32(uint256(0xff))
    bytes32 internal constant SLOT = 0x3393a1a2fe65f773c53f2f8f2a5e3fe9aec75904e900c25f955ca35d981d3300;

    function layout() internal pure returns (Layout storage l) {
        bytes32 slot = SLOT;
        assembly ("memory-safe") {
            l.slot := slot
        }
    }
}

/// @title Energy, kind 1 (protocol/SPEC.md §2.3): the denomination trace rule, ICS-20 style.
/// @notice A leaving denomination is escrowed by the bridge (the sender approves the bridge), a voucher going home
///         over the lane it came by is burned; the target unescrows a returning denomination or mints the voucher
///         `{lane}/{src}/{denom}`, an ERC-20 clone (`VoucherToken`, EIP-1167, CREATE2 salted with keccak256 of the
///         denomination) that the bridge creates on its first mint and alone mints and burns.
/// @dev Runs only by DELEGATECALL from the router: the bridge address is the custodian of escrowed energy and the
///      minter of vouchers (SPEC §E1: `tokenOf`, escrow balances and allowances all name the bridge, and the relay's
///      supply accountant reads them there). Its state lives in `EnergyState`'s namespace of the router's storage.
///      Called directly it refuses everything (`Unauthorized`).
contract EnergyApp is IEnergyApp {
    using PacketCodec for bytes;

    /// @notice The park's native `kWh` token.
    address public immutable energyToken;
    /// @notice The VoucherToken implementation voucher clones delegate to.
    address public immutable voucherImpl;
    address private immutable _self;

    event VoucherCreated(string denom, address indexed token);

    constructor(address energyToken_, address voucherImpl_) {
        if (energyToken_ == address(0) || voucherImpl_ == address(0)) revert CodecInvalid();
        energyToken = energyToken_;
        voucherImpl = voucherImpl_;
        _self = address(this);
    }

    modifier delegated() {
        if (address(this) == _self) revert Unauthorized(address(0), msg.sender);
        _;
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 1
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IEnergyApp
    function onSendEnergy(address sender, string calldata dstChain, string calldata lane, string calldata denom,
        uint256 amountWh) external payable delegated returns (bytes memory payload) {
        if (amountWh == 0 || !PacketCodec.isText(bytes(denom))) revert CodecInvalid();
        EnergyState.Layout storage s = EnergyState.layout();
        address token = s.tokens[keccak256(bytes(denom))];
        if (token == address(0)) revert InsufficientFunds(0, amountWh); // nobody here holds it
        if (PacketCodec.startsWithHop(bytes(denom), bytes(lane), bytes(dstChain))) {
            IVoucherToken(token).burn(sender, amountWh); // going home: burn
        } else {
            if (!IParkToken(token).transferFrom(sender, address(this), amountWh)) revert InsufficientFunds(0, amountWh);
            s.escrow[keccak256(abi.encode(dstChain, lane, denom))] += amountWh;
        }
        payload = abi.encode(denom, amountWh);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 3
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IParkApp
    function onRecvPacket(bytes calldata packet) external delegated returns (string memory) {
        bytes calldata payload = packet.dyn(PacketCodec.PAYLOAD);
        // the relay decoded this payload strictly to rate-limit it (protocol §6.7): UTF-8 needs no second check
        if (!payload.isEnergyPayload(false)) return "payload.invalid";
        bytes calldata denom = payload.dyn(0);
        uint256 amount = payload.word(1);
        (bool ok, address to) = packet.dyn(PacketCodec.RECEIVER).parseAddress();
        if (!ok || to == address(0)) return "receiver.invalid";

        EnergyState.Layout storage s = EnergyState.layout();
        bytes calldata src = packet.dyn(PacketCodec.SRC);
        bytes calldata lane = packet.dyn(PacketCodec.LANE);
        bytes calldata here = packet.dyn(PacketCodec.DST);
        if (PacketCodec.startsWithHop(denom, lane, here)) {
            // a voucher of ours coming home: unescrow from what this lane escrowed
            bytes calldata base = denom[lane.length + here.length + 2:];
            if (base.length == 0) return "denom.invalid";
            bytes32 escrowKey = keccak256(abi.encode(src, lane, base));
            uint256 held = s.escrow[escrowKey];
            if (held < amount) return "escrow.insufficient";
            unchecked {
                s.escrow[escrowKey] = held - amount;
            }
            if (!IParkToken(s.tokens[keccak256(base)]).transfer(to, amount)) revert InsufficientFunds(held, amount);
        } else {
            // a foreign denom: mint its voucher `{lane}/{src}/{denom}`
            bytes memory voucher = abi.encodePacked(lane, "/", src, "/", denom);
            if (voucher.length > PacketCodec.MAX_STRING) return "denom.too_long";
            bytes32 voucherHash = keccak256(voucher);
            address token = s.tokens[voucherHash];
            if (token == address(0)) token = _createVoucher(s, voucher, voucherHash);
            if (!IVoucherToken(token).mint(to, amount)) return "supply.overflow";
        }
        return "";
    }

    function _createVoucher(EnergyState.Layout storage s, bytes memory voucher, bytes32 voucherHash)
        internal
        returns (address token)
    {
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
        s.tokens[voucherHash] = token;
        emit VoucherCreated(string(voucher), token);
    }

    // ---------------------------------------------------------------------------------------------
    // Phase 4
    // ---------------------------------------------------------------------------------------------

    /// @inheritdoc IParkApp
    /// @dev A success ack keeps the escrow (or the burn); a refund gives back exactly what onSendEnergy took.
    function onSettlePacket(bytes calldata packet, bool refund) external delegated {
        if (!refund) return;
        bytes calldata payload = packet.dyn(PacketCodec.PAYLOAD); // written by onSendEnergy: canonical
        bytes calldata denom = payload.dyn(0);
        uint256 amount = payload.word(1);
        (, address sender) = packet.dyn(PacketCodec.SENDER).parseAddress();
        bytes calldata dst = packet.dyn(PacketCodec.DST);
        bytes calldata lane = packet.dyn(PacketCodec.LANE);
        EnergyState.Layout storage s = EnergyState.layout();
        address token = s.tokens[keccak256(denom)];
        if (PacketCodec.startsWithHop(denom, lane, dst)) {
            if (!IVoucherToken(token).mint(sender, amount)) revert InsufficientFunds(0, amount); // unreachable
        } else {
            s.escrow[keccak256(abi.encode(dst, lane, denom))] -= amount;
            if (!IParkToken(token).transfer(sender, amount)) revert InsufficientFunds(0, amount);
        }
    }
}
