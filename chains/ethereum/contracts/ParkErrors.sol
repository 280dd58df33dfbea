// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

// The protocol's error classes as custom errors (chains/ethereum/SPEC.md §E2.3), declared at file level so that
// every contract of the park (router, apps, tokens) reverts with the same selectors: an error bubbling up from an
// app or a token through the bridge decodes as the bridge's own. Each carries what a caller needs to see why
// (expected vs got, the offending value), so a revert is decodable without a trace (adapters/ethereum/errors.py).

// --- codec, proofs, certificates (protocol §3, §4, §7) ------------------------------------------------------------

/// `codec.invalid`: bytes that are not the canonical encoding, or a value out of range (protocol §3): also a relayer
/// name that is not an identifier, a fee payee longer than 256 bytes or not UTF-8, a relay fee above 2^64 - 1 or a
/// send whose value is above the fees it offers.
error CodecInvalid();
/// `proof.invalid`: a state proof that does not verify against the certified relay state root (§4).
error ProofInvalid();
/// `signature.invalid`: a bad, malformed, repeated or out-of-range signature; `index` is the validator index.
error SignatureInvalid(uint256 index);
/// `certificate.quorum`: the signers hold at most 2/3 of the trusted set's power (§7.4).
error QuorumNotReached(uint256 signedPower, uint256 totalPower);
/// `certificate.validator_set`: a validator set other than the trusted (or certified next) one.
error ValidatorSetMismatch(bytes32 expected, bytes32 got);
/// `certificate.duplicate_validator`: a validator set repeating an ed25519 key (§7.1); `index` is the repeat's.
error DuplicateValidatorKey(uint256 index, bytes32 key);
/// `certificate.duplicate_validator`: a validator set repeating a non-zero Ethereum address (§7.1).
error DuplicateValidatorAddress(uint256 index, address addr);
/// `client.expired`: the trusted relay set's trusting period has passed (§7.8): the owner must reset it.
error RelayTrustExpired(uint256 expiresAtMs, uint256 blockTimeMs);
/// `lifecycle.illegal`: a reset of a relay set whose trust has not expired (§7.8).
error RelayTrustLive(uint256 expiresAtMs, uint256 blockTimeMs);
/// certificate.stale: a phase-3 certificate's relay header is older than maxCertificateAgeMs (protocol §7.9)
error CertificateStale(uint256 oldestMs, uint256 headerTimeMs);

// --- packets and lanes (protocol §6) --------------------------------------------------------------------------

/// `packet.replay`: a packet already received (`held` its receipt, `got` its sequence) or already settled (`held`
/// 0), or an update at or below the relay height held (`held` that height, `got` the update's).
error PacketReplay(uint256 held, uint256 got);
/// `packet.timeout`: phase 1, a timeout not after the block time; phase 3, the block time at or after it.
error PacketTimeout(uint256 timeoutMs, uint256 blockTimeMs);
/// `packet.timeout`: a charging right whose packet would time out after its slot starts (issue 12 rules).
error TimeoutAfterSlotStart(uint64 timeoutMs, uint64 slotStartMs);
/// `packet.wrong_chain`: a packet, header or certificate for another chain.
error WrongChain(string expected, string got);
/// `lane.invalid`: a lane that is not open.
error LaneInvalid(string counterparty, string lane);
/// `lane.over_capacity`: more than the relay's rate-limit capacity for the asset on the lane (§6.3 step 1, §6.8).
error LaneOverCapacity(uint256 amount, uint256 capacity);

// --- accounts and assets ------------------------------------------------------------------------------------

/// `funds.insufficient`: a balance too small (`have` < `need`), or a token this chain does not hold; a send whose
/// value is below the relay fees it offers (`have` the value, `need` their sum), or a fee withdrawal with nothing owed
/// (0, 1).
error InsufficientFunds(uint256 have, uint256 need);
/// `auth.denied`: the caller is not the account the operation is reserved for.
error Unauthorized(address expected, address got);
/// `auth.denied`: an ERC-20 allowance too small.
error AllowanceTooLow(uint256 allowed, uint256 need);
/// `asset.invalid`: no live charging right with that token id held by the caller here.
error RightUnavailable(uint256 tokenId, uint8 state);
/// `asset.invalid`: the payload given for a right is not the one recorded for it (a forged right payload).
error RightPayloadMismatch(bytes32 expected, bytes32 got);
/// `auth.denied`: an ERC-721 recipient contract that does not accept the right, or an account that does not accept the
/// relay fees it withdraws.
error ReceiverRefused(address to);
/// `asset.invalid`: a right id already in use here.
error RightExists(uint256 tokenId);
/// `asset.invalid`: the park's admission refuses a right it issues (`code` is the rule: `slot.started`,
/// `station.unknown`, `transformer.mismatch`, `transformer.unknown`, `capacity.exceeded`); `expected`/`got` are
/// the figures the rule compared (times in ms, loads in kW, or the hashes of names).
error AdmissionRefused(string code, uint256 expected, uint256 got);
/// `asset.invalid`: this park's market holds no delivery record (or no contracted energy) for the subject.
error ReputationUnknown(string subject);
/// `asset.invalid`: an imported score below the market's threshold, or none imported.
error ReputationTooLow(uint256 minimum, uint256 score);

// --- the park's market (docs/research.md#seed-001, `EnergyMarket`) -------------------------------------------

/// `lifecycle.illegal`: a bid at or after its round's close, or a clearing before it (times in ms, SPEC §E1).
error RoundTiming(uint256 roundId, uint256 closesAtMs, uint256 blockTimeMs);
/// `lifecycle.illegal`: a round not in the state the operation needs (`expected`, `got`: 0 none, 1 open, 2 cleared,
/// 3 settled), e.g. a second clearing or a second settlement.
error RoundState(uint256 roundId, uint8 expected, uint8 got);
