// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ParkERC20} from "./ParkERC20.sol";
import {CodecInvalid} from "./ParkErrors.sol";

/// @title The park's native energy token, denomination `kWh` (base unit 1 Wh, 3 decimals).
/// @notice The park operator (the deployer) mints; everything else is plain ERC-20.
contract EnergyToken is ParkERC20 {
    constructor() {
        _minter = msg.sender;
    }

    /// @notice The park operator: the only account that mints.
    function owner() external view returns (address) {
        return _minter;
    }

    function name() public pure override returns (string memory) {
        return "Park Energy";
    }

    function symbol() public pure override returns (string memory) {
        return "kWh";
    }

    /// @notice Operator only (Unauthorized(operator, caller)); a mint beyond the uint96 supply bound is CodecInvalid().
    function mint(address to, uint256 amount) external {
        if (!_mint(to, amount)) revert CodecInvalid();
    }
}
