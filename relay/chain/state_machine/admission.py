"""Admission: redundant relays are rejected before they take block space (SPEC.md §1 Trust, docs/architecture.md §2).

Relayers are permissionless and race each other, so the same packet, ack or header often arrives
several times. The node's mempool calls :func:`check_admission` (through
:meth:`relay.chain.state_machine.app.RelayStateMachine.check_admission`) before admitting a transaction;
it does state lookups and decoding only — no proof, and no signature work unless the cheap checks
pass — and raises:

* ``packet.replay`` for a validator's second ``client.attest`` of one height, for ``packet.verify`` of a
  verified packet or of one timed out unverified (for a batch: every item so),
  for ``packet.confirm_*`` of a packet with an outcome, for ``client.update`` whose every header the
  client already holds, for ``client.register_farmer`` of a farmer the client already binds, for
  ``client.misbehaviour`` against a frozen client, for a governance action whose nonce was used, and for
  ``account.register`` of an existing account;
* ``lifecycle.illegal`` / ``proof.invalid`` for a confirmation of a packet never verified (a timeout
  without a commitment proof) / verified with another commitment; ``client.frozen`` for
  ``client.update`` of a frozen client;
* then the transaction checks of :meth:`chains.common.tx.App.check_tx` (chain, op, account, signature,
  nonce) and the sender's bond (SPEC §6.9: ``account.unbonded`` for a registration whose name holds no
  ``min_bond`` or a sender without a full bond, ``account.unbonding`` for an unbonding sender).

Within one block, two relayers' identical transactions both pass admission against the block's
parent state; the second finds its work done in execution (``packet.replay``). A relay-work transaction stays in the
block as a redundant no-op that uses its sender's nonce and writes nothing else (SPEC §6.9,
:meth:`.app.RelayApp.execute_tx`): dropped, it would leave a gap before its sender's next nonce, and the node would
drop every later transaction of that sender with it. Any other transaction so refused leaves the block.
"""

from __future__ import annotations

from chains.common.state import ChainState
from chains.common.tx import Tx, account_path
from protocol.errors import ClientFrozenError, ReplayError
from relay.chain.state_machine import requests as rq
from relay.chain.state_machine.attest import check_attest_redundant
from relay.chain.state_machine.clients import RelayClientRouter, check_farmer_redundant
from relay.chain.state_machine.governance import check_governance_nonce, gov_nonce_of, governance_nonce
from relay.chain.state_machine.packets import check_confirmable, check_not_verified, packet_done

__all__ = ["check_redundant"]


def check_redundant(router: RelayClientRouter, state: ChainState, tx: Tx) -> None:
    """Raise if ``tx`` would only redo work already in ``state`` (or can never apply); cheap."""
    op = tx.op
    if op in (rq.VERIFY, rq.VERIFY_BATCH):
        refs = rq.parse_verify(tx).refs
        if all(packet_done(state, ref) for ref in refs):
            check_not_verified(state, refs[0])
    elif op == rq.CONFIRM_ACK:
        check_confirmable(state, rq.parse_confirm_ack(tx).ref)
    elif op == rq.CONFIRM_ACK_BATCH:
        refs_a = rq.parse_confirm_ack_batch(tx).refs
        if all(state.get(ref.outcome_key) is not None for ref in refs_a):
            check_confirmable(state, refs_a[0])
    elif op == rq.CONFIRM_TIMEOUT:
        req_t = rq.parse_confirm_timeout(tx)
        check_confirmable(state, req_t.ref, unverified_ok=req_t.commit is not None)
    elif op == rq.CLIENT_UPDATE:
        req = rq.parse_client_update(tx)
        hosted = router.load(state, req.chain_id)
        client = hosted.client
        if client.frozen_height is not None:
            raise ClientFrozenError(f"client {hosted.client_id} of {req.chain_id} is frozen", got=client.frozen_height)
        headers = [hosted.ctype.decode_header(raw) for raw in req.headers]
        if all(hosted.ctype.redundant(client, h) for h in headers):
            raise ReplayError(f"client {hosted.client_id} of {req.chain_id} already holds every header",
                              expected=f"a header above {hosted.ctype.latest_height(client)}",
                              got=[hosted.ctype.header_height(h) for h in headers])
    elif op == rq.CLIENT_MISBEHAVIOUR:
        req_m = rq.parse_misbehaviour(tx)
        hosted = router.load(state, req_m.chain_id)
        if hosted.client.frozen_height is not None:
            raise ReplayError(f"client {hosted.client_id} of {req_m.chain_id} is already frozen",
                              got=hosted.client.frozen_height)
    elif op == rq.CLIENT_ATTEST:
        check_attest_redundant(router, state, tx)
    elif op == rq.CLIENT_REGISTER_FARMER:
        req_f = rq.parse_register_farmer(tx)
        check_farmer_redundant(router, state, req_f.chain_id, req_f.name)
    elif op in rq.GOVERNANCE_OPS:
        nonce = gov_nonce_of(tx.args, op)
        if nonce < governance_nonce(state):
            check_governance_nonce(state, nonce)
    elif op == rq.REGISTER and state.get(account_path(tx.sender)) is not None:
        raise ReplayError("account already registered", got=tx.sender)
