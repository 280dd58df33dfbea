"""The relay chain's BFT consensus (Tendermint-style), as a pure state machine: docs/architecture.md §3, SPEC.md §7.

* :mod:`relay.chain.consensus.messages` — proposals, votes, their sign bytes, checks and wire codec;
* :mod:`relay.chain.consensus.sign_state` — the signing-safety record a host persists (no double signing);
* :mod:`relay.chain.consensus.bft` — :class:`ConsensusCore`: inputs in, outputs out; no I/O, clock or randomness.
"""

from relay.chain.consensus.bft import (
    Broadcast,
    ConsensusApp,
    ConsensusConfig,
    ConsensusCore,
    Decided,
    EvidenceFound,
    MessageRejected,
    Output,
    PersistSignState,
    ScheduleTimeout,
    Step,
    Timeout,
    TimeoutConfig,
    TimeoutKind,
    proposer_index,
)
from relay.chain.consensus.messages import (
    ConflictingProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
    Message,
    Proposal,
    ValidatorKey,
    Vote,
    VoteType,
    decode_message,
    encode_message,
    proposal_sign_bytes,
    recover_eth_address,
    verify_evidence,
    vote_sign_bytes,
)
from relay.chain.consensus.sign_state import SignState, SignStep

__all__ = [
    "Broadcast",
    "ConflictingProposalEvidence",
    "ConsensusApp",
    "ConsensusConfig",
    "ConsensusCore",
    "Decided",
    "DuplicateVoteEvidence",
    "Evidence",
    "EvidenceFound",
    "Message",
    "MessageRejected",
    "Output",
    "PersistSignState",
    "Proposal",
    "ScheduleTimeout",
    "SignState",
    "SignStep",
    "Step",
    "Timeout",
    "TimeoutConfig",
    "TimeoutKind",
    "ValidatorKey",
    "Vote",
    "VoteType",
    "decode_message",
    "encode_message",
    "proposal_sign_bytes",
    "proposer_index",
    "recover_eth_address",
    "verify_evidence",
    "vote_sign_bytes",
]
