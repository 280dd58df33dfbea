"""``client.attest``: relay validators attest block hashes they saw on their own endpoints (docs/architecture.md §3).

Some park chains prove nothing about their own finality in their headers: an Ethereum header carries no
signature a light client could check (anvil seals nothing; a proof-of-stake sync committee is outside
this devnet). For those the relay's light client takes *attestations*: each relay validator runs its own
endpoint of the park chain and signs, with its relay account, ``(height, block_hash, head_height)`` it
observed there. The client counts an attestation by the validator's voting power in the relay's current
validator set, tagged with that set's hash (:attr:`protocol.certificate.ValidatorSet.hash`): a vote keeps the
power, total and set it was cast under, even after the validator leaves the set, and a quorum is counted
among the votes of one set only, so when the relay's validator set changes (the consensus engine stores a
new one), faulty validators of several sets never add up to a quorum. A hash attested by more than 2/3 of
the power of one set is final once a header with that hash is fed to it (chains/ethereum/SPEC.md §E3).

Who may attest: the sender's name is a validator's name in ``relay/validators`` and its account key is
that validator's ed25519 key, so an attestation costs a key only the validator holds. Anything else is
``auth.denied``. A client type without attestations refuses them (``codec.invalid``).

Conflicting hashes attested by a quorum at one height are misbehaviour of the park chain (or of more than
1/3 of the validators): the client freezes, its lanes pause, and the transaction succeeds so the freeze
is committed (as ``client.misbehaviour`` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from chains.common.state import ChainState
from chains.common.tx import Tx, account_path
from protocol.errors import AuthorizationError, CodecError, MisbehaviourError, ReplayError
from protocol.types import check_id
from relay.chain.state_machine.clients import RelayClientRouter, freeze_events
from relay.chain.state_machine.governance import load_validator_set
from relay.chain.state_machine.records import Event, hex_arg, int_arg, op_args, str_arg

__all__ = ["ATTEST", "AttestRequest", "Attestable", "check_attest_redundant", "parse_attest", "process_attest"]

ATTEST = "client.attest"
"""The op name (also :data:`relay.chain.state_machine.requests.CLIENT_ATTEST`)."""


@runtime_checkable
class Attestable(Protocol):
    """A light client that takes relay-validator attestations of block hashes."""

    def attest(self, attester: str, power: int, total_power: int, height: int, block_hash: bytes,
               head_height: int, now_ms: int, *, set_id: bytes) -> object: ...

    def has_attested(self, attester: str, height: int) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class AttestRequest:
    """``client.attest`` ``{chain_id, height, block_hash: hex32, head_height}``."""

    chain_id: str
    """Chain whose client takes the attestation."""
    height: int
    """Height of the attested block."""
    block_hash: bytes
    """Its hash as the validator's endpoint reports it."""
    head_height: int
    """The endpoint's head height when the validator looked (the client checks the depth)."""


def parse_attest(tx: Tx) -> AttestRequest:
    args = op_args(tx, ("chain_id", "height", "block_hash", "head_height"))
    block_hash = hex_arg(args, "block_hash", tx.op)
    if len(block_hash) != 32:
        raise CodecError("an attested block hash is 32 bytes", expected=32, got=len(block_hash))
    return AttestRequest(check_id("chain", str_arg(args, "chain_id", tx.op)), int_arg(args, "height", tx.op),
                         block_hash, int_arg(args, "head_height", tx.op))


def _validator_power(state: ChainState, sender: str) -> tuple[int, int, bytes]:
    """``(power, total_power, set hash)`` of the validator named ``sender`` whose key signs its account, in the
    relay's current validator set."""
    vset = load_validator_set(state)
    total = sum(v.power for v in vset.validators)
    for v in vset.validators:
        if v.name == sender:
            acct: Any = state.get_json(account_path(sender))
            if not isinstance(acct, dict) or acct.get("pubkey") != v.ed25519_pubkey.hex():
                raise AuthorizationError(f"account {sender} is not signed by validator {sender}'s ed25519 key")
            return v.power, total, vset.hash
    raise AuthorizationError("only relay validators attest", expected=[v.name for v in vset.validators], got=sender)


def _attestable(client: object, chain_id: str) -> Attestable:
    if not isinstance(client, Attestable):
        raise CodecError(f"the client of {chain_id} takes no attestations", got=type(client).__name__)
    return client


def check_attest_redundant(router: RelayClientRouter, state: ChainState, tx: Tx) -> None:
    """Admission: a validator's second attestation of one height is ``packet.replay``-class redundant."""
    req = parse_attest(tx)
    client = _attestable(router.load(state, req.chain_id).client, req.chain_id)
    if client.has_attested(tx.sender, req.height):
        raise ReplayError(f"{tx.sender} already attested {req.chain_id} height {req.height}")


def process_attest(router: RelayClientRouter, state: ChainState, tx: Tx, now_ms: int) -> list[Event]:
    req = parse_attest(tx)
    power, total, set_id = _validator_power(state, tx.sender)
    hosted = router.checkout(state, req.chain_id)
    client = _attestable(hosted.client, req.chain_id)
    try:
        client.attest(tx.sender, power, total, req.height, req.block_hash, req.head_height, now_ms, set_id=set_id)
    except MisbehaviourError as exc:
        router.save(state, hosted)
        return freeze_events(state, hosted, exc, now_ms)
    router.save(state, hosted)
    return [{"type": "client_attested", "chain_id": req.chain_id, "client_id": hosted.client_id,
             "attester": tx.sender, "height": req.height, "block_hash": req.block_hash.hex(),
             "final_height": hosted.client.final_height}]
