// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

// The protocol's error classes as custom errors (chains/ethereum/SPEC.md §E2.3). They are declared at
// file level so that the tokens revert with the very selectors the bridge uses: a token's
// InsufficientFunds() bubbling up through the bridge decodes as the bridge's own error.

/// `codec.invalid`: bytes that are not the canonical encoding, or a value out of range (protocol §3).
error CodecInvalid();
/// `proof.invalid`: a state proof that does not verify against the certified relay state root (§4).
error ProofInvalid();
/// `signature.invalid`: a bad, malformed, repeated or out-of-range signature; `index` is the validator index.
error SignatureInvalid(uint256 index);
/// `certificate.quorum`: the signers hold at most 2/3 of the trusted set's power (§7.4).
error QuorumNotReached(uint256 signedPower, uint256 totalPower);
/// `certificate.validator_set`: a validator set other than the trusted (or certified next) one.
error ValidatorSetMismatch();
/// `packet.replay`: already received, already settled, or an update at or below the trusted height.
error PacketReplay();
/// `packet.timeout`: the packet's timeout has passed (phase 3) or is not in the future (phase 1).
error PacketTimeout();
/// `packet.wrong_chain`: a packet, header or certificate for another chain.
error WrongChain();
/// `lane.invalid`: a lane that is not open.
error LaneInvalid();
/// `lane.over_capacity`: an amount above the relay's rate-limit capacity for the denom on the lane
/// (protocol §6.3 step 1, §6.8): the relay would never verify the packet.
error LaneOverCapacity(uint256 amount, uint256 capacity);
/// `funds.insufficient`: a balance too small, or a token this chain does not hold.
error InsufficientFunds();
/// `auth.denied`: not the owner, not the bridge, or no allowance.
error Unauthorized();
