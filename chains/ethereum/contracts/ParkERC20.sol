// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {AllowanceTooLow, CodecInvalid, InsufficientFunds, Unauthorized} from "./ParkErrors.sol";

/// @title Minimal ERC-20 shared by the park's energy token and its vouchers.
/// @notice Amounts are watt-hours: 3 decimals, so 1000 units are 1 kWh. Failures revert with the
///         protocol's custom errors: a short balance is InsufficientFunds(have, need), a short allowance
///         AllowanceTooLow(allowed, need), the zero address as recipient CodecInvalid().
/// @dev The supply is a uint96 (up to 7.9e28 Wh) sharing slot 0 with the minter's address, so a mint
///      reads one cold slot for its authorization and the supply (the bridge mints on every voucher
///      receipt). A mint beyond that bound does nothing and returns false.
abstract contract ParkERC20 {
    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    uint96 internal _totalSupply;
    address internal _minter;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    function name() public view virtual returns (string memory);

    function symbol() public view virtual returns (string memory);

    function decimals() external pure returns (uint8) {
        return 3;
    }

    function totalSupply() external view returns (uint256) {
        return _totalSupply;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    /// @notice An allowance of type(uint256).max is never decreased.
    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert AllowanceTooLow(allowed, value);
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    function _transfer(address from, address to, uint256 value) internal {
        if (to == address(0)) revert CodecInvalid();
        uint256 have = balanceOf[from];
        if (have < value) revert InsufficientFunds(have, value);
        unchecked {
            balanceOf[from] = have - value;
            balanceOf[to] += value; // cannot overflow: the sum of balances is totalSupply
        }
        emit Transfer(from, to, value);
    }

    /// @dev Minter only (Unauthorized(minter, caller)).
    /// @return ok false (nothing changed) if the supply would exceed type(uint96).max
    function _mint(address to, uint256 value) internal returns (bool ok) {
        if (msg.sender != _minter) revert Unauthorized(_minter, msg.sender);
        if (to == address(0)) revert CodecInvalid();
        uint256 supply = _totalSupply;
        unchecked {
            if (value > type(uint96).max - supply) return false;
            _totalSupply = uint96(supply + value);
            balanceOf[to] += value;
        }
        emit Transfer(address(0), to, value);
        return true;
    }

    /// @dev Minter only (Unauthorized(minter, caller)).
    function _burn(address from, uint256 value) internal {
        if (msg.sender != _minter) revert Unauthorized(_minter, msg.sender);
        uint256 have = balanceOf[from];
        if (have < value) revert InsufficientFunds(have, value);
        unchecked {
            balanceOf[from] = have - value;
            _totalSupply -= uint96(value); // value <= have <= supply
        }
        emit Transfer(from, address(0), value);
    }
}
