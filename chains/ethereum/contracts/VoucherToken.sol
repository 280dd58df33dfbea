// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ParkERC20} from "./ParkERC20.sol";
import {Unauthorized} from "./ParkErrors.sol";

/// @title A voucher for a foreign denomination (`{lane}/{chain}/…`, protocol §2.3).
/// @notice Deployed once as an implementation; the bridge creates one EIP-1167 clone per denomination
///         on its first mint and initializes it. Only that bridge mints and burns. Name and symbol are
///         the full denomination trace.
contract VoucherToken is ParkERC20 {
    string internal _denom;

    constructor() {
        _minter = address(this); // the implementation itself can never be initialized
    }

    /// @notice Once, by the creating bridge, in the transaction that creates the clone.
    function initialize(string calldata denom_, address bridge_) external {
        if (_minter != address(0) || bridge_ == address(0)) revert Unauthorized(address(0), _minter);
        _minter = bridge_;
        _denom = denom_;
    }

    /// @notice The bridge that created this clone: the only account that mints and burns.
    function bridge() external view returns (address) {
        return _minter;
    }

    /// @notice The denomination trace this voucher stands for.
    function denom() external view returns (string memory) {
        return _denom;
    }

    function name() public view override returns (string memory) {
        return _denom;
    }

    function symbol() public view override returns (string memory) {
        return _denom;
    }

    /// @return false (nothing minted) if the supply would exceed the uint96 bound
    function mint(address to, uint256 amount) external returns (bool) {
        return _mint(to, amount);
    }

    function burn(address from, uint256 amount) external {
        _burn(from, amount);
    }
}
