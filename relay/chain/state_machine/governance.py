"""Governance of the relay chain: actions signed by more than 2/3 of the relay validators' voting power.

Registering a light client (a new park, or a replacement for a frozen client) and opening, pausing,
resuming or re-limiting a lane are governance actions. Any account may *submit* one; what authorises it
are the validators' ed25519 signatures over the action's sign bytes, checked against the validator set
in relay state (``relay/validators``) with the quorum rule of SPEC.md §7.4 (``3 × signed > 2 × total``;
exactly 2/3 is not a quorum)::

    governance_sign_bytes = sha256(abi.encode(string "parkrelay/relay-governance/v1", string relay_chain_id,
                                              uint64 nonce, string action, bytes32 sha256(canonical_json(params))))

``action`` is the op name (a signature for ``lane.pause`` cannot serve ``lane.resume``), ``params`` the
op's arguments without ``gov``, and ``nonce`` the relay's next governance nonce
(``relay/governance/nonce``, from 0): each action executes at most once, in nonce order (a nonce
already used is ``packet.replay``; a later one waits). The transaction carries the authorisation as
``gov = {"nonce": int, "signatures": [{"validator_index": int, "signature": hex64}, ...]}``.

The validator set itself changes through the consensus engine (:func:`store_validator_set`, called
at the end of a block that installs a new set), not through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chains.common import wire
from chains.common.state import ChainState, canonical_json
from protocol.abi import encode as abi_encode
from protocol.certificate import ValidatorSet
from protocol.codec import sha256
from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import ProtocolError, QuorumError, ReplayError, SignatureError
from protocol.types import check_uint
from relay.chain.state_machine.keys import GOVERNANCE_NONCE_KEY, VALIDATORS_KEY
from relay.chain.state_machine.records import list_arg, obj_args

__all__ = [
    "GOVERNANCE_TAG",
    "GovernanceSignature",
    "authorize",
    "check_governance_nonce",
    "gov_nonce_of",
    "governance_nonce",
    "governance_sign_bytes",
    "load_validator_set",
    "sign_governance",
    "store_validator_set",
    "verify_governance",
]

GOVERNANCE_TAG = "parkrelay/relay-governance/v1"


@dataclass(frozen=True, slots=True)
class GovernanceSignature:
    """One validator's signature of a governance action."""

    validator_index: int
    """Signer's index in the relay validator set."""
    signature: bytes
    """64-byte ed25519 signature of :func:`governance_sign_bytes`."""


def governance_sign_bytes(relay_chain_id: str, nonce: int, action: str, params: Mapping[str, Any]) -> bytes:
    """The 32 bytes validators sign to authorise ``action(params)`` as governance action ``nonce``."""
    check_uint("governance nonce", nonce)
    return sha256(abi_encode(["string", "string", "uint64", "string", "bytes32"],
                             [GOVERNANCE_TAG, relay_chain_id, nonce, action, sha256(canonical_json(dict(params)))]))


def verify_governance(vset: ValidatorSet, relay_chain_id: str, nonce: int, action: str, params: Mapping[str, Any],
                      signatures: Sequence[GovernanceSignature]) -> None:
    """Raise unless validators with more than 2/3 of ``vset``'s power signed (SPEC §7.4 rules)."""
    msg = governance_sign_bytes(relay_chain_id, nonce, action, params)
    seen: set[int] = set()
    power = 0
    for sig in signatures:
        idx = sig.validator_index
        if not 0 <= idx < len(vset.validators):
            raise SignatureError("governance signature by an unknown validator index",
                                 expected=f"< {len(vset.validators)}", got=idx)
        if idx in seen:
            raise SignatureError("two governance signatures by one validator", got=idx)
        seen.add(idx)
        v = vset.validators[idx]
        ed25519_verify(v.ed25519_pubkey, msg, sig.signature, what=f"governance signature of validator {v.name}")
        power += v.power
    if not vset.quorum_reached(power):
        raise QuorumError(f"governance action {action} signed by at most 2/3 of the voting power",
                          expected=f"> {2 * vset.total_power // 3} of {vset.total_power}", got=power)


def sign_governance(relay_chain_id: str, nonce: int, action: str, params: Mapping[str, Any],
                    signers: Sequence[tuple[int, Ed25519Signer]]) -> dict[str, Any]:
    """The ``gov`` argument for ``action(params)``, signed by ``(validator_index, key)`` pairs (operator tooling)."""
    msg = governance_sign_bytes(relay_chain_id, nonce, action, params)
    return {"nonce": nonce, "signatures": [{"validator_index": i, "signature": s.sign(msg).hex()}
                                           for i, s in signers]}


def load_validator_set(state: ChainState) -> ValidatorSet:
    raw = state.get_json(VALIDATORS_KEY)
    if raw is None:
        raise ProtocolError("relay chain not initialised: no validator set")
    return wire.validator_set_from_json(raw)


def store_validator_set(state: ChainState, vset: ValidatorSet) -> None:
    """Install the validator set that authorises governance (genesis, or the consensus engine's end of block)."""
    state.set_json(VALIDATORS_KEY, wire.validator_set_to_json(vset))


def governance_nonce(state: ChainState) -> int:
    return state.get_int(GOVERNANCE_NONCE_KEY)


def _parse_gov(value: Any, what: str) -> tuple[int, list[GovernanceSignature]]:
    gov = obj_args(value, f"gov of {what}", ("nonce", "signatures"))
    nonce = check_uint("governance nonce", gov["nonce"])
    sigs = []
    for i, item in enumerate(list_arg(gov, "signatures", what, wire.MAX_SIGNATURES)):
        s = obj_args(item, f"governance signature {i}", ("validator_index", "signature"))
        sigs.append(GovernanceSignature(check_uint("validator_index", s["validator_index"]),
                                        wire.hex_bytes(s["signature"], f"governance signature {i}", 64)))
    return nonce, sigs


def check_governance_nonce(state: ChainState, nonce: int) -> None:
    """``packet.replay`` for a used nonce, :class:`ProtocolError` for one ahead of its turn."""
    expected = governance_nonce(state)
    if nonce < expected:
        raise ReplayError("governance nonce already used", expected=expected, got=nonce)
    if nonce > expected:
        raise ProtocolError("governance nonce ahead of its turn", expected=expected, got=nonce)


def gov_nonce_of(args: Mapping[str, Any], action: str) -> int:
    """The nonce a governance transaction claims (for admission checks)."""
    nonce, _ = _parse_gov(args.get("gov"), action)
    return nonce


def authorize(state: ChainState, relay_chain_id: str, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``args["gov"]`` (nonce, then quorum of signatures) and consume the nonce; returns the params."""
    if "gov" not in args:
        raise SignatureError(f"{action} is a governance action: it needs validator signatures ('gov')")
    nonce, sigs = _parse_gov(args["gov"], action)
    params = {k: v for k, v in args.items() if k != "gov"}
    check_governance_nonce(state, nonce)
    verify_governance(load_validator_set(state), relay_chain_id, nonce, action, params, sigs)
    state.set_int(GOVERNANCE_NONCE_KEY, nonce + 1)
    return params
