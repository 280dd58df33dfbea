"""The relay chain's application: transactions, blocks and admission over one state tree (SPEC.md §6,
docs/architecture.md §2).

:class:`RelayStateMachine` is what the relay node runs. It is pure and deterministic: it reads no
clock (block time comes in :class:`~chains.common.tx.BlockContext`), does no I/O, and the same genesis
and the same blocks give the same state root on every node. The node (consensus, RPC, storage) calls:

``init_genesis(state, config)``
    once (:mod:`relay.chain.state_machine.genesis`).
``check_admission(state, tx)``
    in the mempool, against the head state (:mod:`relay.chain.state_machine.admission`).
``build_block(state, candidates, ctx)``
    as proposer: executes the candidates on ``state`` (a fresh :class:`ChainState` over the parent's
    tree) and drops those that fail, but keeps *charged failures* and redundant no-ops (below).
``execute_block(state, txs, ctx)``
    as validator: executes a proposed block; a transaction that fails is recorded as failed and
    changes nothing (its nonce included), as on the park nodes.

Accounts are bonded (SPEC §6.9, :mod:`relay.chain.state_machine.bonds`): a relayer registers itself with
``account.register`` (``sender`` = the new account's name, ``nonce`` 0, ``args.pubkey`` = its key, signed by that
key), which locks ``min_bond`` bond units funded beforehand under that name, or is listed in genesis (a governance
grant, no bond). There are no fees; an unbonded sender is refused at admission, redundant relays are refused at
admission for free, and a transaction of an account that fails in a block for a reason its sender could have
checked is a **charged failure**: kept in the block as a no-op that uses the sender's nonce and counts against its
bond (:meth:`RelayApp.execute_tx` returns its ``tx_failed`` event instead of raising). A transaction that passed
admission but whose work another relayer's transaction did first in the block (``packet.replay``) stays in it as a
**redundant no-op**: it uses its nonce, counts nothing, and its result is ``ok`` with ``redundant``
(:func:`chains.common.tx.tx_result`); leaving it out would leave a gap before its sender's next nonce.

Operations and their arguments: :mod:`relay.chain.state_machine.requests`. State keys:
:mod:`relay.chain.state_machine.keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chains.common import wire
from chains.common.state import ChainState
from chains.common.tx import (
    ACCOUNT_RE,
    App,
    BlockContext,
    Tx,
    account_path,
    create_account,
    redundant_event,
    tx_result,
    use_nonce,
)
from protocol.crypto import ed25519_verify
from protocol.errors import CodecError, ProtocolError, ReplayError, UnknownClientError, WrongChainError
from protocol.types import ChainId, check_id
from relay.chain.state_machine import admission, attest, bonds, evidence, fees, governance, lanes, packets, recovery
from relay.chain.state_machine import requests as rq
from relay.chain.state_machine.clients import (
    ClientType,
    RelayClientRouter,
    client_holds,
    client_status,
    process_client_create,
    process_client_update,
    process_finality_evidence,
    process_misbehaviour,
    process_register_farmer,
)
from relay.chain.state_machine.genesis import init_genesis
from relay.chain.state_machine.keys import bond_funds_key
from relay.chain.state_machine.park_clients import default_client_types
from relay.chain.state_machine.records import Event, op_args
from relay.chain.state_machine.rights import right_record
from relay.chain.state_machine.supply import supply_record

__all__ = ["RELAY_MAX_TX_BYTES", "BlockBuild", "BlockResult", "RelayApp", "RelayStateMachine", "relay_tx_from_json"]

RELAY_MAX_TX_BYTES = 1024 * 1024
"""Largest relay transaction (canonical JSON). A batch of 100 packets with their proofs is ~300 KB,
over the park chains' :data:`chains.common.tx.MAX_TX_BYTES`; the relay node parses with this bound."""


CHARGED_OPS = frozenset((*rq.RELAY_WORK_OPS, *rq.BOND_OPS))
"""Ops whose failure in a block is charged to the sender's account (SPEC §6.9). Not ``account.register`` (no account
yet), ``evidence.submit`` (no account) nor governance actions (the validators' quorum authorises them, not the
sender's bond): those fail as before, out of the block."""


class RelayApp(App):
    """:class:`chains.common.tx.App` plus self-signed, bonded ``account.register``, the bond status of every sender
    and charged failures (SPEC §6.9)."""

    def check_tx(self, state: ChainState, tx: Tx) -> None:
        if tx.op == evidence.EVIDENCE_SUBMIT:  # self-authenticating: no account (SPEC §7.7)
            evidence.check_tx_shape(tx, self.chain_id)
            evidence.check_evidence(state, self.chain_id, evidence.parse_evidence(tx.args), None)
            return
        if tx.op != rq.REGISTER:
            super().check_tx(state, tx)
            if tx.op not in rq.BOND_OPS:  # the bond ops are how an account gets back to a full bond
                bonds.check_active(state, tx.sender, state.get_json(account_path(tx.sender)))
            return
        if tx.chain_id != self.chain_id:
            raise WrongChainError("transaction for another chain", expected=self.chain_id, got=tx.chain_id)
        if state.get(account_path(tx.sender)) is not None:
            raise ReplayError("account already registered", got=tx.sender)
        if not ACCOUNT_RE.match(tx.sender):
            raise CodecError("invalid account name", expected=ACCOUNT_RE.pattern, got=tx.sender)
        if tx.nonce != 0:
            raise CodecError("account.register uses nonce 0", expected=0, got=tx.nonce)
        pubkey = wire.hex_bytes(op_args(tx, ("pubkey",))["pubkey"], "pubkey", 32)
        bonds.check_register(state, tx.sender)  # a lookup: before the signature's work
        ed25519_verify(pubkey, tx.sign_bytes(), tx.signature, what=f"self-signature of new account {tx.sender}")

    def execute_tx(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """Run ``tx`` as a transaction of a block (what the node runtimes call). As :meth:`execute_checked`, except
        that a relay-work op whose work was done already (``packet.replay``) is a redundant no-op that uses the nonce
        (``tx_redundant``, SPEC §1 Trust), and that a charged failure (an op of :data:`CHARGED_OPS`
        refused with an error its sender could have checked,
        :func:`.bonds.counts_as_failure`, after the signature, nonce and bond checks passed) does not raise: the op's
        writes are undone, the sender's nonce is used and the failure counted (maybe slashed), and the
        ``tx_failed`` event (``account_slashed`` too) is returned."""
        return self._execute(state, tx, ctx, charge=True)

    def execute_checked(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """Run ``tx``; on any :class:`ProtocolError` nothing changes (its nonce included) and it propagates. What a
        trial execution at admission runs: a failure it would charge in a block is refused there for free."""
        return self._execute(state, tx, ctx, charge=False)

    def _execute(self, state: ChainState, tx: Tx, ctx: BlockContext, *, charge: bool) -> list[dict[str, Any]]:
        if tx.op == evidence.EVIDENCE_SUBMIT:
            return evidence.execute_evidence(state, self.chain_id, tx, ctx)
        if tx.op == rq.REGISTER:
            with state.atomic():
                self.check_tx(state, tx)
                create_account(state, tx.sender, bytes.fromhex(tx.args["pubkey"]))
                acct = state.get_json(account_path(tx.sender))
                acct["nonce"] = 1
                state.set_json(account_path(tx.sender), acct)
                return [{"type": "account_registered", "name": tx.sender}, *bonds.apply_register(state, tx.sender)]
        self.check_tx(state, tx)  # never charged: the sender is not proven (signature), not in turn, or not bonded
        try:
            with state.atomic():
                use_nonce(state, tx.sender)
                return self.ops[tx.op](state, tx, ctx) or []
        except ProtocolError as exc:
            if charge and exc.code == ReplayError.code and tx.op in rq.RELAY_WORK_OPS:
                # a race lost: a no-op that uses the nonce (SPEC §6.9)
                with state.atomic():
                    use_nonce(state, tx.sender)
                return [redundant_event(tx, exc)]
            if not (charge and tx.op in CHARGED_OPS and bonds.counts_as_failure(exc)):
                raise
            with state.atomic():
                return bonds.charge_failure(state, tx, exc, ctx)


def fair_order(txs: Sequence[Tx]) -> list[Tx]:
    """``txs`` taken one sender at a time, round robin: each sender's transactions stay in nonce order (so a
    relayer's proof still follows the client update it relies on), senders in the order of their first transaction.
    A block builder that takes the mempool in arrival order lets whoever queued most fill the block; in this order a
    sender with one transaction waits behind at most one of each other sender's (the relay chain charges no fees:
    this is what keeps a flood of valid but useless transactions from starving the relayers)."""
    by_sender: dict[str, list[Tx]] = {}
    for tx in txs:
        by_sender.setdefault(tx.sender, []).append(tx)
    queues = [sorted(q, key=lambda t: t.nonce) for q in by_sender.values()]
    out: list[Tx] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


@dataclass
class BlockResult:
    """What executing a block produced."""

    events: list[Event] = field(default_factory=list)
    """Events of the successful transactions, each with its ``tx`` hash."""
    results: list[dict[str, Any]] = field(default_factory=list)
    """Per transaction: ``{"tx", "ok"}`` and, on failure, ``"error"`` (code, message, expected, got)."""


@dataclass
class BlockBuild:
    """What building a block produced: the transactions kept, in order, and those dropped."""

    included: list[Tx] = field(default_factory=list)
    """Transactions kept, in block order: those that executed, charged failures and redundant no-ops."""
    dropped: list[tuple[Tx, ProtocolError]] = field(default_factory=list)
    """Transactions left out, with the error that excluded them (``packet.replay`` of a used nonce, a signature, an
    unbonded sender...)."""
    events: list[Event] = field(default_factory=list)
    """Events of the included transactions."""
    results: list[dict[str, Any]] = field(default_factory=list)
    """One result per included transaction, as :meth:`RelayStateMachine.execute_block` records it (``ok``, or the
    charged failure's error)."""


class RelayStateMachine:
    """The relay chain's application state machine."""

    def __init__(self, chain_id: str, client_types: Iterable[ClientType] | None = None) -> None:
        """``client_types`` defaults to the park chains' (:func:`.park_clients.default_client_types`)."""
        self.chain_id = ChainId(check_id("relay chain", chain_id))
        self.router = RelayClientRouter(default_client_types() if client_types is None else client_types)
        self.app = RelayApp(self.chain_id)
        for name, handler in (
            (rq.CLIENT_UPDATE, self._op_client_update),
            (rq.CLIENT_MISBEHAVIOUR, self._op_misbehaviour),
            (rq.CLIENT_ATTEST, self._op_attest),
            (rq.CLIENT_REGISTER_FARMER, self._op_register_farmer),
            (rq.VERIFY, self._op_verify),
            (rq.VERIFY_BATCH, self._op_verify),
            (rq.CONFIRM_ACK, self._op_confirm_ack),
            (rq.CONFIRM_ACK_BATCH, self._op_confirm_ack_batch),
            (rq.CONFIRM_TIMEOUT, self._op_confirm_timeout),
            (rq.CLIENT_CREATE, self._op_client_create),
            (rq.CLIENT_RECOVER, self._op_client_recover),
            (rq.LANE_OPEN, self._op_lane),
            (rq.LANE_PAUSE, self._op_lane),
            (rq.LANE_RESUME, self._op_lane),
            (rq.LANE_SET_LIMITS, self._op_lane),
        ):
            self.app.register(name, handler)
        for name, handler in ((rq.BOND_TRANSFER, bonds.op_transfer), (rq.ACCOUNT_UNBOND, bonds.op_unbond),
                              (rq.ACCOUNT_WITHDRAW, bonds.op_withdraw), (rq.ACCOUNT_BOND, bonds.op_bond),
                              (rq.SET_PAYEE, fees.op_set_payee)):
            self.app.register(name, handler)
        # account.register is handled by RelayApp before the op table; listed so check_tx knows the op
        self.app.register(rq.REGISTER, lambda state, tx, ctx: None)
        self.app.register(evidence.EVIDENCE_SUBMIT, lambda state, tx, ctx: None)  # likewise (RelayApp runs it)

    # -- the node's entry points ---------------------------------------------------------------------

    def init_genesis(self, state: ChainState, config: Any) -> list[Event]:
        """Write genesis (:mod:`relay.chain.state_machine.genesis`); the config's chain id must be this chain's."""
        if not isinstance(config, dict) or config.get("chain_id") != self.chain_id:
            raise WrongChainError("genesis for another relay chain", expected=self.chain_id,
                                  got=config.get("chain_id") if isinstance(config, dict) else None)
        return init_genesis(state, self.router, config)

    def execute_tx(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        """Run one transaction; on a :class:`ProtocolError` nothing changes and it propagates (a trial run, as
        admission may make it: :meth:`RelayApp.execute_checked`)."""
        self._check_ctx(ctx)
        return self.app.execute_checked(state, tx, ctx)

    def execute_in_block(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        """Run one transaction of a block: as :meth:`execute_tx`, but a charged failure or a redundant no-op is
        recorded and returns its events (:meth:`RelayApp.execute_tx`, SPEC §6.9)."""
        self._check_ctx(ctx)
        return self.app.execute_tx(state, tx, ctx)

    def _check_ctx(self, ctx: BlockContext) -> None:
        if ctx.chain_id != self.chain_id:
            raise WrongChainError("block context of another chain", expected=self.chain_id, got=ctx.chain_id)

    def check_redundant(self, state: ChainState, tx: Tx) -> None:
        """The cheap replay checks of admission alone (state lookups, decoding; no signatures)."""
        admission.check_redundant(self.router, state, tx)

    def check_admission(self, state: ChainState, tx: Tx) -> None:
        """What the mempool runs: replay checks first, then chain, op, account, signature and nonce."""
        if tx.chain_id != self.chain_id:
            raise WrongChainError("transaction for another chain", expected=self.chain_id, got=tx.chain_id)
        if tx.op not in self.app.ops:
            raise CodecError("unknown operation", expected=sorted(self.app.ops), got=tx.op)
        admission.check_redundant(self.router, state, tx)
        self.app.check_tx(state, tx)

    def build_block(self, state: ChainState, candidates: Sequence[Tx], ctx: BlockContext,
                    max_txs: int | None = None, max_bytes: int | None = None) -> BlockBuild:
        """Execute ``candidates`` on ``state`` in :func:`fair_order`, keeping the ones that succeed, charged
        failures and redundant no-ops (up to ``max_txs``, and up to ``max_bytes`` of their canonical JSON: one that
        does not fit is left for a later block, neither kept nor dropped)."""
        out = BlockBuild()
        room = max_bytes
        for tx in fair_order(candidates):
            if max_txs is not None and len(out.included) >= max_txs:
                break
            size = tx.size() if room is not None else 0
            if room is not None and size > room:
                continue
            try:
                events = self.execute_in_block(state, tx, ctx)
            except ProtocolError as exc:
                out.dropped.append((tx, exc))
                continue
            if room is not None:
                room -= size
            out.included.append(tx)
            th = tx.hash().hex()  # once per transaction, not per event (a batch has one per packet)
            out.results.append(tx_result(th, events))
            out.events += [{**e, "tx": th} for e in events]
        return out

    def execute_block(self, state: ChainState, txs: Sequence[Tx], ctx: BlockContext) -> BlockResult:
        """Execute a proposed block on ``state``; failed transactions are recorded and change nothing."""
        out = BlockResult()
        for tx in txs:
            th = tx.hash().hex()
            try:
                events = self.execute_in_block(state, tx, ctx)
            except ProtocolError as exc:
                out.results.append({"tx": th, "ok": False, "error": exc.to_dict()})
                continue
            out.results.append(tx_result(th, events))
            out.events += [{**e, "tx": th} for e in events]
        return out

    # -- queries -------------------------------------------------------------------------------------

    def client_status(self, state: ChainState, chain_id: str, now_ms: int) -> dict[str, Any]:
        return client_status(self.router, state, chain_id, now_ms)

    def client_holds(self, state: ChainState, chain_id: str, raw_headers: list[bytes]) -> list[bool]:
        return client_holds(self.router, state, chain_id, raw_headers)

    def packet_state(self, state: ChainState, raw_packet: bytes) -> str:
        return packets.packet_state(state, packets.decode_packet_ref(raw_packet)).value

    def lane(self, state: ChainState, src: str, dst: str, lane: str) -> dict[str, Any] | None:
        rec = lanes.load_lane(state, src, dst, lane)
        return None if rec is None else {"src": src, "dst": dst, "lane": lane, **rec.to_json()}

    def supply(self, state: ChainState, home: str, lane: str, remote: str, denom: str) -> dict[str, Any]:
        return supply_record(state, home, lane, remote, denom)

    def account(self, state: ChainState, name: str) -> dict[str, Any] | None:
        """An account record with its bond fields (what ``getAccount`` shows), or the funds held for a name not
        registered yet (``{"name", "registered": False, "funds"}``)."""
        acct = state.get_json(account_path(name))
        if acct is None:
            funds = state.get_int(bond_funds_key(name))
            return {"name": name, "registered": False, "funds": funds} if funds else None
        return {"name": name, "registered": True, **acct}

    def bond_supply(self, state: ChainState) -> dict[str, Any]:
        """Where every bond unit is, and whether they add up to the genesis supply (:func:`.bonds.bond_supply`)."""
        return bonds.bond_supply(state)

    def right(self, state: ChainState, home: str, lane: str, remote: str, right_id: str) -> dict[str, Any] | None:
        """The rights accountant's record of one hop of a right (None: not out over that hop)."""
        return right_record(state, home, lane, remote, right_id)

    # -- ops -----------------------------------------------------------------------------------------

    def _op_client_update(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_client_update(tx)
        return process_client_update(self.router, state, req.chain_id, req.headers, ctx.timestamp_ms)

    def _op_misbehaviour(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_misbehaviour(tx)
        if req.branch:
            return process_finality_evidence(self.router, state, req.chain_id, req.branch, ctx.timestamp_ms)
        return process_misbehaviour(self.router, state, req.chain_id, req.header_a, req.header_b, ctx.timestamp_ms)

    def _op_register_farmer(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_register_farmer(tx)
        return process_register_farmer(self.router, state, req.chain_id, req.height, req.name, req.account, req.proof,
                                       ctx.timestamp_ms)

    def _op_attest(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        return attest.process_attest(self.router, state, tx, ctx.timestamp_ms)

    def _op_verify(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_verify(tx)
        return packets.process_verify_batch(self.router, state, ctx.timestamp_ms, req.height, req.refs, req.proofs,
                                            req.headers, tx.sender)

    def _op_confirm_ack(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_confirm_ack(tx)
        return packets.process_confirm_ack(self.router, state, ctx.timestamp_ms, req.ref, req.ack, req.height,
                                           req.proof, req.headers, tx.sender)

    def _op_confirm_ack_batch(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_confirm_ack_batch(tx)
        return packets.process_confirm_ack_batch(self.router, state, ctx.timestamp_ms, req.refs, req.acks, req.height,
                                                 req.proofs, req.headers, tx.sender)

    def _op_confirm_timeout(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        req = rq.parse_confirm_timeout(tx)
        return packets.process_confirm_timeout(self.router, state, ctx.timestamp_ms, req.ref, req.height, req.proof,
                                               req.headers, req.commit, tx.sender)

    def _governed(self, state: ChainState, tx: Tx) -> Mapping[str, Any]:
        return governance.authorize(state, self.chain_id, tx.op, tx.args)

    def _op_client_create(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        params = self._governed(state, tx)
        chain_id, client_type, init = rq.parse_client_create(params)
        return process_client_create(self.router, state, chain_id, client_type, init)

    def _op_client_recover(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        params = self._governed(state, tx)
        return recovery.process_client_recover(self.router, state, recovery.parse_client_recover(params),
                                               ctx.timestamp_ms)

    def _op_lane(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[Event]:
        params = self._governed(state, tx)
        req = rq.parse_lane(tx.op, params)
        if tx.op == rq.LANE_OPEN:
            for chain in (req.src, req.dst):
                if not self.router.has_client(state, chain):
                    raise UnknownClientError("a lane joins chains that have light clients", got=chain)
            return lanes.open_lane(state, req.src, req.dst, req.lane, req.limits or {})
        if tx.op == rq.LANE_PAUSE:
            return lanes.pause_lane(state, req.src, req.dst, req.lane, "governance")
        if tx.op == rq.LANE_RESUME:
            return lanes.resume_lane(state, req.src, req.dst, req.lane)
        return lanes.set_limits(state, req.src, req.dst, req.lane, req.limits or {})


def relay_tx_from_json(obj: Any, max_bytes: int = RELAY_MAX_TX_BYTES) -> Tx:
    """:meth:`Tx.from_json` with the relay's size bound instead of the park chains' (for the relay node's RPC)."""
    return Tx.from_json(obj, max_bytes)

