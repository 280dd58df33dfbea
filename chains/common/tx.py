"""Signed transactions and their execution on a Python park chain (the application layer).

A transaction names its chain, a registered account (``sender``), the account's next ``nonce``, an
operation ``op`` and its JSON ``args``; the account's ed25519 key signs
``sha256("parkrelay/tx/v1" || canonical_json(body))``. Accounts are named, as in Graphene, and live in
state at ``accounts/<name>`` with their public key and next nonce.

Each chain registers its operations in an :class:`App`; ``bridge.*`` ops come from
:mod:`chains.common.bridge`, market ops from the chain's own package. An op validates and applies in
one function that must raise a :class:`~protocol.errors.ProtocolError` before changing anything it
should not; :meth:`App.execute_tx` rolls the whole transaction back on any such error.

A park leaves a transaction that fails out of its block. The relay chain keeps two kinds in its blocks (its
``RelayApp``): charged failures and redundant no-ops, which use their sender's nonce; :func:`tx_result` is the
block's result for any of them.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chains.common.state import ChainState, KVState, canonical_json
from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import (
    AuthorizationError,
    CodecError,
    NonceError,
    ProtocolError,
    ReplayError,
    WrongChainError,
    disposition_of,
)

TX_TAG = b"parkrelay/tx/v1"
ACCOUNT_RE = re.compile(r"^[a-z][a-z0-9.-]{1,31}$")
CHARGED_FAILURE = "tx_failed"
"""The event type by which an app reports a transaction that failed but whose charge stands (the relay chain's charged
failures, protocol SPEC §6.9): a block records it as failed (:func:`charged_failure`), its writes — the sender's
nonce, the charge — kept."""


def charged_failure(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The error a block's result records for a transaction whose ``events`` report a charged failure
    (:data:`CHARGED_FAILURE`): its code, disposition and message, ``charged`` true; None when there is none."""
    for ev in events:
        if ev.get("type") == CHARGED_FAILURE:
            code = str(ev.get("code", ""))
            return {"code": code, "disposition": disposition_of(code).value,
                    "message": str(ev.get("message", "charged failure")), "charged": True}
    return None


REDUNDANT_TX = "tx_redundant"
"""The event type by which an app reports a transaction kept in a block as a no-op (its op's work was done already,
``packet.replay``): only its sender's nonce moved."""


def redundant_event(tx: Tx, exc: ProtocolError) -> dict[str, Any]:
    """The :data:`REDUNDANT_TX` event of ``tx``, whose op refused with ``exc`` (its message cut to 300 characters)."""
    return {"type": REDUNDANT_TX, "account": tx.sender, "op": tx.op, "code": exc.code, "message": exc.message[:300]}


def tx_result(tx_hash: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A block's result for the transaction ``tx_hash`` that executed with ``events``: ``ok`` false with the error of a
    charged failure (:func:`charged_failure`), ``ok`` true with ``redundant`` (the code) for a redundant no-op,
    else ``ok`` true."""
    charged = charged_failure(events)
    if charged is not None:
        return {"tx": tx_hash, "ok": False, "error": charged}
    for ev in events:
        if ev.get("type") == REDUNDANT_TX:
            return {"tx": tx_hash, "ok": True, "redundant": str(ev.get("code", ReplayError.code))}
    return {"tx": tx_hash, "ok": True}


MAX_TX_BYTES = 64 * 1024


def account_path(name: str) -> bytes:
    return f"accounts/{name}".encode()


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What an op may know of the block it runs in. Time is the block's, never a clock."""

    chain_id: str
    """Chain executing the block."""
    height: int
    """Height of the block being built or replayed."""
    timestamp_ms: int
    """Block time, ms."""
    producer: str
    """Account name of the block producer (witness or farmer)."""


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction."""

    chain_id: str
    """Chain it is for: a transaction never executes on another chain."""
    sender: str
    """Registered account that signs and pays."""
    nonce: int
    """The sender's next nonce; replays fail."""
    op: str
    """Operation name (``transfer``, ``bridge.send``...)."""
    args: dict[str, Any]
    """Operation arguments (JSON values; bytes as hex strings)."""
    signature: bytes = b""
    """ed25519 signature of :meth:`sign_bytes` by the sender's key."""
    _memo: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    """:meth:`sign_bytes`, :meth:`hash` and :meth:`size`, each encoded once: a node asks for them at admission, in
    the block builder, at execution and for the block's root (a transaction is immutable once made; ``args`` is
    never changed after construction)."""

    def body(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "sender": self.sender, "nonce": self.nonce, "op": self.op,
                "args": self.args}

    def sign_bytes(self) -> bytes:
        v: bytes | None = self._memo.get("sign")
        if v is None:
            v = self._memo["sign"] = hashlib.sha256(TX_TAG + canonical_json(self.body())).digest()
        return v

    def hash(self) -> bytes:
        v: bytes | None = self._memo.get("hash")
        if v is None:
            self._encoded(canonical_json(self.to_json()))
            v = self._memo["hash"]
        return v

    def _encoded(self, raw: bytes) -> None:
        self._memo["hash"] = hashlib.sha256(raw).digest()
        self._memo["size"] = len(raw)

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "signature": self.signature.hex()}

    def size(self) -> int:
        """Bytes of the transaction's canonical JSON: what it adds to a block's body (and its gossip)."""
        v: int | None = self._memo.get("size")
        if v is None:
            self._encoded(canonical_json(self.to_json()))
            v = self._memo["size"]
        return v

    @classmethod
    def from_json(cls, obj: Any, max_bytes: int = MAX_TX_BYTES) -> Tx:
        """Strictly: the keys of :meth:`to_json` with their JSON types (a string is not a nonce, an object not a
        sender); :class:`CodecError` for anything else, lone surrogates and non-finite numbers included."""
        if not isinstance(obj, dict):
            raise CodecError("a transaction is a JSON object", got=type(obj).__name__)
        try:
            for key in ("chain_id", "sender", "op", "signature"):
                if not isinstance(obj[key], str):
                    raise TypeError(f"{key} is a string, not {type(obj[key]).__name__}")
            if not isinstance(obj["nonce"], int) or isinstance(obj["nonce"], bool):
                raise TypeError(f"nonce is an integer, not {type(obj['nonce']).__name__}")
            if not isinstance(obj["args"], dict):
                raise TypeError(f"args is an object, not {type(obj['args']).__name__}")
            tx = cls(obj["chain_id"], obj["sender"], obj["nonce"], obj["op"], dict(obj["args"]),
                     bytes.fromhex(obj["signature"]))
            # canonical_json's bytes, but refusing NaN/Infinity (no JSON) and, as UnicodeEncodeError (a
            # ValueError), lone surrogates
            raw = canonical_json(tx.to_json(), allow_nan=False)
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise CodecError(f"malformed transaction: {exc}") from exc
        if len(raw) > max_bytes:
            raise CodecError("transaction too large", expected=f"<= {max_bytes} bytes", got=len(raw))
        tx._encoded(raw)  # the same bytes canonical_json gives: its hash and size need no second encoding
        return tx

    @classmethod
    def signed(cls, signer: Ed25519Signer, chain_id: str, sender: str, nonce: int, op: str,
               args: dict[str, Any]) -> Tx:
        unsigned = cls(chain_id, sender, nonce, op, args)
        return cls(chain_id, sender, nonce, op, args, signer.sign(unsigned.sign_bytes()))


SIG_CACHE_SIZE = 65_536
"""Signatures a process remembers as verified (``verify_tx_signature``)."""
_sig_ok: OrderedDict[bytes, None] = OrderedDict()


def verify_tx_signature(pubkey: bytes, sign_bytes: bytes, signature: bytes, *, what: str) -> None:
    """:func:`ed25519_verify`, remembering the triples that verified: a node checks a transaction's signature when it
    admits it and again when it executes it in a block (its own and its peers'), and the answer for the same key,
    message and signature never changes. A signature that fails is never remembered, so it fails every time."""
    key = hashlib.sha256(pubkey + sign_bytes + signature).digest()
    if key in _sig_ok:
        _sig_ok.move_to_end(key)
        return
    ed25519_verify(pubkey, sign_bytes, signature, what=what)
    _sig_ok[key] = None
    if len(_sig_ok) > SIG_CACHE_SIZE:
        _sig_ok.popitem(last=False)


OpHandler = Callable[[ChainState, Tx, BlockContext], list[dict[str, Any]] | None]
"""An operation: validates, applies, and returns the events it emits (or None)."""

BlockHook = Callable[[ChainState, BlockContext], list[dict[str, Any]] | None]
"""Runs once per block before its transactions (rewards, maintenance...)."""


@dataclass
class App:
    """The operations a chain accepts, and the block execution that runs them."""

    chain_id: str
    ops: dict[str, OpHandler] = field(default_factory=dict)
    begin_block_hooks: list[BlockHook] = field(default_factory=list)

    def register(self, name: str, handler: OpHandler) -> None:
        if name in self.ops:
            raise ValueError(f"op {name!r} registered twice")
        self.ops[name] = handler

    def check_tx(self, state: ChainState, tx: Tx) -> None:
        """Stateless and signature checks, plus the nonce: what the mempool runs before admitting a tx."""
        if tx.chain_id != self.chain_id:
            raise WrongChainError("transaction for another chain", expected=self.chain_id, got=tx.chain_id)
        if tx.op not in self.ops:
            raise CodecError("unknown operation", expected=sorted(self.ops), got=tx.op)
        acct = state.get_json(account_path(tx.sender))
        if acct is None:
            raise AuthorizationError("unknown sender account", got=tx.sender)
        verify_tx_signature(bytes.fromhex(acct["pubkey"]), tx.sign_bytes(), tx.signature,
                            what=f"transaction signature of {tx.sender}")
        if tx.nonce != acct["nonce"]:
            if tx.nonce < acct["nonce"]:
                raise ReplayError("nonce already used", expected=acct["nonce"], got=tx.nonce)
            raise NonceError("nonce too high: an earlier transaction of the account is missing",
                             expected=acct["nonce"], got=tx.nonce)

    def execute_tx(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """Check and run ``tx``; on a ProtocolError nothing changes (the nonce included) and it propagates. What the
        node runtimes run for a block's transaction: on a park a failure leaves the block; the relay chain's app
        records charged failures and redundant no-ops instead."""
        self.check_tx(state, tx)
        return self._apply(state, tx, ctx)

    def execute_checked(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """Admission's trial run: :meth:`execute_tx` (the relay chain's app refuses here, for free, what its blocks
        record instead of raising)."""
        return self.execute_tx(state, tx, ctx)

    def _apply(self, state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        with state.atomic():
            use_nonce(state, tx.sender)
            return self.ops[tx.op](state, tx, ctx) or []

    def begin_block(self, state: ChainState, ctx: BlockContext) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for hook in self.begin_block_hooks:
            events += hook(state, ctx) or []
        return events


def use_nonce(state: ChainState, sender: str) -> None:
    """Move ``sender``'s account to its next nonce (the account exists: :meth:`App.check_tx` passed)."""
    acct = state.get_json(account_path(sender))
    acct["nonce"] += 1
    state.set_json(account_path(sender), acct)


def create_account(state: ChainState, name: str, pubkey: bytes) -> None:
    """Register an account (genesis, or the ``account.create`` op)."""
    if not ACCOUNT_RE.match(name):
        raise CodecError("invalid account name", expected=ACCOUNT_RE.pattern, got=name)
    if len(pubkey) != 32:
        raise CodecError("an account key is a 32-byte ed25519 public key", got=len(pubkey))
    if state.get(account_path(name)) is not None:
        raise ProtocolError("account exists", got=name)
    state.set_json(account_path(name), {"pubkey": pubkey.hex(), "nonce": 0})


def op_transfer(state: KVState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
    """``transfer {to, denom, amount_wh}``: move a balance between accounts."""
    to, denom, amount = _arg(tx, "to", str), _arg(tx, "denom", str), _arg(tx, "amount_wh", int)
    if amount <= 0:
        raise CodecError("amount must be positive", got=amount)
    if state.get(account_path(to)) is None:
        raise ProtocolError("unknown recipient account", got=to)
    state.sub_balance(tx.sender, denom, amount)
    state.add_balance(to, denom, amount)
    return [{"type": "transfer", "from": tx.sender, "to": to, "denom": denom, "amount_wh": amount}]


def op_create_account(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
    """``account.create {name, pubkey}``: any account may register a new one."""
    name, pubkey = _arg(tx, "name", str), _arg(tx, "pubkey", str)
    try:
        raw = bytes.fromhex(pubkey)
    except ValueError as exc:
        raise CodecError("pubkey must be hex") from exc
    create_account(state, name, raw)
    return [{"type": "account_created", "name": name}]


def _arg(tx: Tx, name: str, typ: type) -> Any:
    v = tx.args.get(name)
    if typ is int and isinstance(v, bool):
        v = None
    if not isinstance(v, typ):
        raise CodecError(f"argument {name!r} of {tx.op} must be {typ.__name__}", got=v)
    return v


arg = _arg


def base_app(chain_id: str) -> App:
    """An App with the ops every Python park chain has: ``transfer`` and ``account.create``."""
    app = App(chain_id)
    app.register("transfer", op_transfer)
    app.register("account.create", op_create_account)
    return app
