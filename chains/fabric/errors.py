"""The Fabric light client's own error codes (SPEC.md §8.7, §9): refinements of ``header.invalid`` and
``proof.invalid``, so a caller that knows only the generic table treats them as those. Each code has its disposition
in :data:`protocol.errors.DISPOSITIONS`."""

from __future__ import annotations

from typing import ClassVar

from protocol.errors import HeaderError, InvalidProofError

__all__ = [
    "AttestationFreshnessError",
    "BlockSignerError",
    "ChannelConfigError",
    "EndorsementPolicyError",
    "EndorserError",
    "StatementError",
]


class BlockSignerError(HeaderError):
    """A block signature by an identity that is not a consenter of the channel's current config: an unknown or
    non-orderer MSP, a certificate that does not chain to the MSP's roots, without the orderer OU, outside its
    validity period, revoked by the MSP's CRLs, or not mapped to an etcdraft consenter (SPEC.md §8.7)."""

    code: ClassVar[str] = "header.fabric.signer"


class ChannelConfigError(HeaderError):
    """A config block the client cannot follow: not exactly one config transaction of this channel, a sequence that
    does not increase, a consensus type other than etcdraft, an MSP it cannot read, or consenters it cannot map to
    orderer identities; or a block whose signed last-config index skips a config block."""

    code: ClassVar[str] = "header.fabric.config"


class EndorserError(InvalidProofError):
    """An attestation endorsed by an identity that is not a valid peer of an application organisation of the channel:
    unknown MSP, certificate not chaining to the MSP's roots, without the peer OU, outside its validity period at the
    relay's time, or revoked."""

    code: ClassVar[str] = "proof.fabric.endorser"


class EndorsementPolicyError(InvalidProofError):
    """An attestation whose valid endorsers do not satisfy the bridge's endorsement policy (one peer of each
    organisation of the policy), or that carries an endorsement from outside the policy or one twice."""

    code: ClassVar[str] = "proof.fabric.policy"


class StatementError(InvalidProofError):
    """An attestation whose signed chaincode response does not state what is being proven: another chaincode, a
    status other than 200, another channel, key or value, statements that disagree."""

    code: ClassVar[str] = "proof.fabric.statement"


class AttestationFreshnessError(InvalidProofError):
    """An attestation whose chaincode time is older than ``max_attestation_age_ms`` or more than
    ``max_clock_skew_ms`` ahead of the relay's time: fetch a fresh one and resubmit."""

    code: ClassVar[str] = "proof.fabric.freshness"
