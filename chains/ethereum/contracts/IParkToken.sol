// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// The part of ERC-20 the bridge uses.
interface IParkToken {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
    function totalSupply() external view returns (uint256);
}

/// A voucher: an ERC-20 clone that only the bridge which created it mints and burns.
interface IVoucherToken is IParkToken {
    function initialize(string calldata denom, address bridge) external;
    /// Mints `amount` to `to`; returns false (and changes nothing) if the supply would overflow.
    function mint(address to, uint256 amount) external returns (bool);
    /// Burns `amount` from `from`; reverts InsufficientFunds(have, need) if its balance is smaller.
    function burn(address from, uint256 amount) external;
}
