"""Who earned a packet's relay fees (protocol SPEC §6.10): the relay chain's half of ICS-29-like fees.

The fees themselves live on the source park (escrowed with the packet, paid at settlement); the relay chain only
records, with the first successful relay of each step, the payee on the source park of the relay account that did
it, and certifies the three payees in the packet's outcome record:

* ``account.set_payee {chain, payee}``: a registered account names, per park, the account there its fees go to
  (stored in its account record under ``payees``; ``""`` clears it);
* *verify*: the payee of the phase-2 transaction's sender for the packet's source, kept at
  :func:`verify_payee_key` until the outcome (only when there is one: a relayer without a payee writes nothing);
* *execute*: the payee of the relay account the target's ack names (``Acknowledgement.relayer``);
* *confirm*: the payee of the sender of the phase-4 transaction that writes the outcome.

Nothing here moves value: a wrong or missing payee only means a fee goes back to its payer on the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chains.common.state import ChainState
from chains.common.tx import BlockContext, Tx, account_path
from protocol.codec import MAX_STRING
from protocol.errors import CodecError, WrongChainError
from protocol.types import FeePayees, Packet
from relay.chain.state_machine.keys import client_pointer_key
from relay.chain.state_machine.records import Event, op_args

__all__ = ["SET_PAYEE", "PayeeBook", "op_set_payee", "payee_of", "verify_payee_key"]

SET_PAYEE = "account.set_payee"


def verify_payee_key(packet: Packet) -> bytes:
    """Where the verify step's payee waits for the packet's outcome record."""
    p = packet
    return f"relay/fees/verify/{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}".encode()


def payee_of(state: ChainState, account: str, chain: str) -> str:
    """``account``'s payee on ``chain`` (``""``: none, or no such account)."""
    if not account:
        return ""
    acct: Mapping[str, Any] | None = state.get_json(account_path(account))
    if acct is None:
        return ""
    payee = (acct.get("payees") or {}).get(chain, "")
    return payee if isinstance(payee, str) else ""


class PayeeBook:
    """:func:`payee_of` with the lookups of one transaction remembered (a batch names few accounts)."""

    def __init__(self, state: ChainState, chain: str) -> None:
        self._state, self._chain = state, chain
        self._known: dict[str, str] = {}

    def __call__(self, account: str) -> str:
        payee = self._known.get(account)
        if payee is None:
            payee = self._known[account] = payee_of(self._state, account, self._chain)
        return payee


def record_verifier(state: ChainState, packet: Packet, payee: str) -> None:
    """Phase 2 verified ``packet``: keep the verifying relayer's payee (nothing when it has none)."""
    if payee:
        state.set(verify_payee_key(packet), payee.encode())


def outcome_payees(state: ChainState, packet: Packet, execute_payee: str, confirm_payee: str) -> FeePayees:
    """The payees the outcome record certifies; forgets the verify record."""
    key = verify_payee_key(packet)
    raw = state.get(key)
    if raw is not None:
        state.delete(key)
    return FeePayees("" if raw is None else raw.decode(), execute_payee, confirm_payee)


def op_set_payee(state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
    """``account.set_payee {chain, payee}``: ``chain`` a park this relay follows (``packet.wrong_chain``), ``payee`` a
    UTF-8 string of at most 256 bytes (``""`` clears it)."""
    args = op_args(tx, ("chain", "payee"))
    chain, payee = args["chain"], args["payee"]
    if not isinstance(chain, str) or state.get(client_pointer_key(chain)) is None:
        raise WrongChainError("not a park of this relay chain", expected="a park the relay hosts a client of",
                              got=chain)
    try:
        ok = isinstance(payee, str) and len(payee.encode()) <= MAX_STRING
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise CodecError(f"a payee is a UTF-8 string of at most {MAX_STRING} bytes", got=payee)
    acct = state.get_json(account_path(tx.sender))
    payees = dict(acct.get("payees") or {})
    if payee:
        payees[chain] = payee
    else:
        payees.pop(chain, None)
    if payees:
        acct["payees"] = payees
    else:
        acct.pop("payees", None)
    state.set_json(account_path(tx.sender), acct)
    return [{"type": "payee_set", "account": tx.sender, "chain": chain, "payee": payee}]
