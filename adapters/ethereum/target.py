"""Target side of the Ethereum park (chains/ethereum/SPEC.md §E5): signed bridge transactions.

:meth:`EthTarget.submit` takes the same ops and JSON arguments as the Python parks' bridges
(``bridge.recv`` with its optional ``relayer``, ``bridge.settle``, ``bridge.update_lane``,
``bridge.update_relay_validators``; certificates in the :mod:`chains.common.wire` form), builds the ``ParkBridge``
calldata and sends it (``bridge.settle`` passes the fee payees of the outcome record its certificate claims,
protocol SPEC §6.10):

1. **Estimate** the gas with ``eth_estimateGas`` on the pending state. A call that would revert fails
   here, decoded into its protocol error (SPEC §E2.3): a redundant relay, even one still in the pool,
   raises :class:`~protocol.errors.ReplayError` and costs nothing. An estimate above ``max_gas`` is
   refused (:class:`GasCapError`).
2. **Sign** locally (eth_account, EIP-1559) with an **explicit nonce**: one lock and one nonce counter
   per (node, signing key) in the process, initialised from ``eth_getTransactionCount(pending)`` and read
   again after a nonce refusal, an I/O error or a dropped transaction, so concurrent submissions take
   consecutive nonces and never collide. Before each send the counter is checked against the node: a
   node that lost our transactions (anvil restarted from an older dump) is sent from its nonce again.
3. **Send** with ``eth_sendRawTransaction``; return the hash.

:meth:`EthTarget.track` waits for the receipt and the confirmation depth; a reverted transaction raises
its decoded protocol error (the call is replayed at its block to get the revert data).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.common.roles import SentPacket
from adapters.common.rpc import RemoteError
from adapters.ethereum.abi import (
    EVENTS,
    certificate_arg,
    certified_payees,
    commit_arg,
    decode_event,
    decode_result,
    encode_call,
    payees_arg,
    validator_set_arg,
)
from adapters.ethereum.errors import EthRevertError, GasCapError, TxAlreadyKnownError
from adapters.ethereum.rpc import EthRpc, hex_int, to_bytes
from chains.common import wire
from chains.common.fees import Fees, parse_fees
from protocol.certificate import ValidatorSet
from protocol.codec import decode_packet
from protocol.errors import CodecError, NonceError, ProtocolError, TransportError, ValidatorSetMismatchError
from protocol.lane_config import decode_lane_config
from protocol.types import check_id

__all__ = ["DEFAULT_MAX_GAS", "EthTarget", "RelaySetProvider", "SentPacket", "fee_args", "fees_escrowed", "fees_owed",
           "send_energy", "withdraw_fees"]

DEFAULT_MAX_GAS = 1_000_000
"""Most gas the adapter spends on one transaction unless configured otherwise."""

RelaySetProvider = Callable[[bytes], ValidatorSet | Awaitable[ValidatorSet]]
"""Given the hash the bridge trusts (``relaySetHash()``), the relay validator set with that hash."""

ZERO_ADDRESS = "0x" + "00" * 20

log = logging.getLogger("parkrelay.eth")


@dataclass
class _NonceState:
    """The next nonce of one signing key on one node, and the lock its senders take turns on."""

    loop: asyncio.AbstractEventLoop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next: int | None = None
    stale: bool = False
    """Set when a transaction of this key vanished: the next sender reads the nonce from the node again."""
    sent: dict[int, str] = field(default_factory=dict)
    """Hashes of the latest transactions sent, by nonce (bounded): tells a node that lost them from one that lags."""


_NONCES: dict[tuple[str, str], _NonceState] = {}
_GAS_TASKS_MAX = 1024
"""Transactions whose gas is being counted at once; past this, a submission is not counted (the metric is then
a lower bound) rather than the relayer holding unbounded tasks."""
_SENT_KEPT = 256


def _nonce_state(url: str, address: str) -> _NonceState:
    """The process-wide nonce state of ``address`` on the node at ``url`` (per event loop)."""
    loop = asyncio.get_running_loop()
    key = (url.rstrip("/").lower(), address.lower())
    st = _NONCES.get(key)
    if st is None or st.loop is not loop:
        st = _NONCES[key] = _NonceState(loop)
    return st


class EthTarget:
    """:class:`~adapters.common.roles.TargetSide` of the Ethereum park, signing as one account."""

    def __init__(self, rpc: EthRpc, chain_id: str, bridge_address: str, private_key: bytes | str,
                 relay_set_provider: RelaySetProvider | None = None, *, confirmation_depth: int = 0,
                 max_gas: int = DEFAULT_MAX_GAS, gas_margin: float = 1.25, poll_s: float = 0.1,
                 send_attempts: int = 3) -> None:
        if confirmation_depth < 0 or max_gas <= 0 or gas_margin < 1 or send_attempts < 1:
            raise ValueError("confirmation_depth >= 0, max_gas > 0, gas_margin >= 1, send_attempts >= 1")
        self.rpc = rpc
        self.chain_id = chain_id
        self.bridge = to_checksum_address(bridge_address)
        self._account = Account.from_key(private_key)
        self.address: str = self._account.address
        """The signing account (checksummed)."""
        self.relay_set_provider = relay_set_provider
        self.confirmation_depth = confirmation_depth
        self.max_gas = max_gas
        self.gas_margin = gas_margin
        self.poll_s = poll_s
        self.send_attempts = send_attempts
        self._eth_chain_id: int | None = None
        self._relay_sets: dict[bytes, ValidatorSet] = {}
        self.gas_used = 0
        """Gas this target's bridge transactions spent once mined, reverted ones included (the relayer's
        ``parkrelay_relayer_gas_used`` metric); counted by a task per transaction that reads its receipt."""
        self._gas_tasks: set[asyncio.Task[None]] = set()

    @property
    def account(self) -> str:
        """The signing account as a packet names it (lowercase ``0x`` hex, SPEC §E1)."""
        return self.address.lower()

    # -- reads ------------------------------------------------------------------------------------

    async def eth_chain_id(self) -> int:
        """The node's EIP-155 chain id (cached)."""
        if self._eth_chain_id is None:
            self._eth_chain_id = hex_int(await self.rpc.call("eth_chainId", []))
        return self._eth_chain_id

    async def call(self, to: str, data: bytes, block: int | str = "latest") -> bytes:
        """``eth_call`` from this account; a revert raises its decoded protocol error."""
        tag = hex(block) if isinstance(block, int) else block
        return to_bytes(await self.rpc.call("eth_call", [{"from": self.address, "to": to_checksum_address(to),
                                                         "data": "0x" + data.hex()}, tag]))

    async def relay_set_hash(self) -> bytes:
        """The hash of the relay validator set the bridge trusts."""
        (h,) = decode_result("relaySetHash", await self.call(self.bridge, encode_call("relaySetHash", [])))
        return bytes(h)

    async def relay_trust(self) -> dict[str, Any]:
        """The bridge's view of the relay set over time (protocol SPEC §7.8): ``{set_hash, update_height,
        trusted_time_ms, trusting_period_ms, expires_at_ms}``. A relayer submits ``bridge.update_relay_validators``
        (the same set from a newer commit, or the rotation) once less than half the period is left."""
        h, height, t, period, expires = decode_result("relayTrust", await self.call(
            self.bridge, encode_call("relayTrust", [])))
        return {"set_hash": bytes(h).hex(), "update_height": int(height), "trusted_time_ms": int(t),
                "trusting_period_ms": int(period), "expires_at_ms": int(expires)}

    async def token_of(self, denom: str) -> str:
        """The ERC-20 of ``denom`` on the bridge (the zero address if none yet)."""
        (addr,) = decode_result("tokenOf", await self.call(self.bridge, encode_call("tokenOf", [denom])))
        return str(addr).lower()

    async def relay_set(self) -> ValidatorSet:
        """The relay validator set the bridge trusts, from the provider (cached by its hash)."""
        h = await self.relay_set_hash()
        vs = self._relay_sets.get(h)
        if vs is not None:
            return vs
        if self.relay_set_provider is None:
            raise RuntimeError(f"{self.chain_id}: this target has no relay_set_provider; bridge ops need one")
        got = self.relay_set_provider(h)
        vs = await got if inspect.isawaitable(got) else got
        if not isinstance(vs, ValidatorSet):
            raise TypeError(f"relay_set_provider returned {type(vs).__name__}, not a ValidatorSet")
        if vs.hash != h:
            raise ValidatorSetMismatchError(f"{self.chain_id}: the relay set provider has no set with the bridge's "
                                            "hash", expected=h.hex(), got=vs.hash.hex())
        self._relay_sets[h] = vs
        return vs

    async def pending_nonce(self) -> int:
        """The account's next nonce by the node (mined plus pending transactions)."""
        return hex_int(await self.rpc.call("eth_getTransactionCount", [self.address, "pending"]))

    # -- submitting -------------------------------------------------------------------------------

    async def calldata(self, op: str, args: dict[str, Any]) -> bytes:
        """The ``ParkBridge`` calldata of ``op`` with the Python parks' JSON ``args``."""
        if not isinstance(args, dict):
            raise CodecError(f"{op} arguments must be a JSON object", got=type(args).__name__)
        try:
            if op == "bridge.recv":
                packet = wire.hex_bytes(args["packet"], "packet")
                cert = wire.certificate_from_json(args["certificate"])
                relayer = _relayer_arg(args)
                return encode_call("recvPacket", [packet, certificate_arg(cert),
                                                  validator_set_arg(await self.relay_set()), relayer])
            if op == "bridge.settle":
                packet = wire.hex_bytes(args["packet"], "packet")
                cert = wire.certificate_from_json(args["certificate"])
                ack = wire.hex_bytes(args.get("ack") or "", "ack")
                return encode_call("settle", [packet, ack, certificate_arg(cert),
                                              validator_set_arg(await self.relay_set()),
                                              payees_arg(certified_payees(cert.value))])
            if op == "bridge.update_lane":  # protocol §6.8: a certified lane-config record
                cert = wire.certificate_from_json(args["certificate"])
                capacities = decode_lane_config(wire.hex_bytes(args["config"], "config"))
                assets = list(capacities)  # the record's order: ascending by UTF-8 bytes
                return encode_call("updateLaneConfig", [
                    args["dst_chain"], args["lane"], assets, [capacities[a] for a in assets], certificate_arg(cert),
                    validator_set_arg(await self.relay_set())])
            if op == "bridge.update_relay_validators":
                new_set = wire.validator_set_from_json(args["validators"])
                commit = wire.commit_from_json(args["commit"])
                return encode_call("updateRelayValidators", [validator_set_arg(new_set), commit_arg(commit),
                                                             validator_set_arg(await self.relay_set())])
            if op == "bridge.reset_relay_validators":  # protocol §7.8: the bridge's owner, once expired
                new_set = wire.validator_set_from_json(args["new_set"])
                return encode_call("resetRelayValidators", [validator_set_arg(new_set), int(args["height"]),
                                                            int(args["time_ms"])])
        except KeyError as exc:
            raise CodecError(f"{op} lacks argument {exc.args[0]!r}", got=sorted(args)) from exc
        raise CodecError(f"{self.chain_id} has no op {op!r}",
                         expected=["bridge.recv", "bridge.settle", "bridge.update_lane",
                                   "bridge.update_relay_validators", "bridge.reset_relay_validators"], got=op)

    async def submit(self, op: str, args: dict[str, Any]) -> str:
        """Sign and send ``op`` to the bridge; return the transaction hash (``0x`` hex).

        Raises the decoded protocol error if the call would revert (nothing is sent then),
        :class:`GasCapError` above ``max_gas``, :class:`~protocol.errors.TransportError` if the node is
        unreachable."""
        tx_hash = await self.transact(self.bridge, await self.calldata(op, args))
        if len(self._gas_tasks) < _GAS_TASKS_MAX:
            task = asyncio.get_running_loop().create_task(self._count_gas(tx_hash))
            self._gas_tasks.add(task)
            task.add_done_callback(self._gas_tasks.discard)
        return tx_hash

    async def _count_gas(self, tx_hash: str, timeout_s: float = 120.0) -> None:
        """Add the gas ``tx_hash`` spent to :attr:`gas_used` once it is mined (given up after ``timeout_s``: a
        transaction dropped from the pool spent none)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                rc = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            except ProtocolError:
                rc = None
            if rc is not None and rc.get("blockNumber") is not None:
                self.gas_used += hex_int(rc["gasUsed"])
                return
            await asyncio.sleep(max(self.poll_s, 1.0))

    async def estimate_gas(self, to: str, data: bytes, value: int = 0) -> int:
        """``eth_estimateGas`` of the call against the *pending* state (the node's pool included), so a relay
        another relayer has already sent reverts here, costs nothing and is never sent; a would-be revert
        raises its decoded protocol error."""
        return hex_int(await self.rpc.call("eth_estimateGas", [{"from": self.address, "to": to_checksum_address(to),
                                                                "data": "0x" + data.hex(), "value": hex(value)},
                                                               "pending"]))

    async def _fees(self) -> dict[str, int]:
        latest = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        if latest is None or latest.get("baseFeePerGas") is None:  # before London: a legacy gas price
            return {"gasPrice": hex_int(await self.rpc.call("eth_gasPrice", []))}
        try:
            tip = hex_int(await self.rpc.call("eth_maxPriorityFeePerGas", []))
        except RemoteError:
            tip = 10**9
        return {"maxFeePerGas": 2 * hex_int(latest["baseFeePerGas"]) + tip, "maxPriorityFeePerGas": tip}

    async def transact(self, to: str, data: bytes, *, value: int = 0) -> str:
        """Estimate, sign and send a call of ``to`` with ``data``; return the transaction hash."""
        to = to_checksum_address(to)
        estimate, fees, chain = await asyncio.gather(self.estimate_gas(to, data, value), self._fees(),
                                                     self.eth_chain_id())
        if estimate > self.max_gas:
            raise GasCapError(f"{self.chain_id}: the call needs more gas than one transaction may spend",
                              expected=f"<= {self.max_gas}", got=estimate)
        gas = min(self.max_gas, math.ceil(estimate * self.gas_margin))
        tx: dict[str, Any] = {"chainId": chain, "to": to, "value": value, "data": "0x" + data.hex(), "gas": gas,
                              **fees}
        if "maxFeePerGas" in fees:
            tx["type"] = 2
        st = _nonce_state(self.rpc.url, self.address)
        async with st.lock:
            last: NonceError | None = None
            for _ in range(self.send_attempts):
                if st.next is None or st.stale:
                    st.stale = False
                    st.next = await self.pending_nonce()
                else:
                    await self._reconcile_nonce(st)
                nonce = st.next
                raw = bytes(self._account.sign_transaction({**tx, "nonce": nonce}).raw_transaction)
                try:
                    tx_hash = str(await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()]))
                except TxAlreadyKnownError:
                    tx_hash = "0x" + keccak(raw).hex()  # this very transaction is in the pool already: sent
                except NonceError as exc:
                    last = exc  # another sender of this key, or a dropped transaction: read the nonce again
                    st.next = None
                    continue
                except TransportError:
                    st.next = None  # the node may or may not hold it: the next sender asks the node
                    raise
                st.next = nonce + 1
                st.sent[nonce] = tx_hash
                if len(st.sent) > _SENT_KEPT:
                    del st.sent[min(st.sent)]
                return tx_hash
            assert last is not None
            raise last

    async def _reconcile_nonce(self, st: _NonceState) -> None:
        """Check the counter against the node's pending nonce before a send. Higher: another sender of this key
        went first, take the node's. Lower: either the node lags (it knows the transaction we sent at that nonce:
        keep counting) or it lost our transactions — anvil restarted from an older state dump, a pool flushed —
        and the counter would leave a gap that nothing ever fills: send from the node's nonce again."""
        assert st.next is not None
        node_next = await self.pending_nonce()
        if node_next >= st.next:
            st.next = node_next
            return
        ours = st.sent.get(node_next)
        if ours is not None and await self.rpc.call("eth_getTransactionByHash", [ours]) is not None:
            return
        log.warning("%s: the node's next nonce for %s went back from %d to %d: it lost our transactions (restarted "
                    "from an older state?); sending from %d again", self.chain_id, self.address, st.next, node_next,
                    node_next)
        for n in [n for n in st.sent if n >= node_next]:
            del st.sent[n]
        st.next = node_next

    # -- tracking ---------------------------------------------------------------------------------

    def _nonce_is_stale(self) -> None:
        _nonce_state(self.rpc.url, self.address).stale = True

    async def wait_receipt(self, tx_hash: str, timeout_s: float = 60.0, *, depth: int | None = None
                           ) -> dict[str, Any]:
        """The receipt of ``tx_hash`` once its block is ``depth`` (default: the confirmation depth) deep
        in the node's canonical chain. A transaction the node does not know raises a retryable
        :class:`~protocol.errors.TransportError` (and this key's nonce is read again on its next send)."""
        depth = self.confirmation_depth if depth is None else depth
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        unknown = 0
        while True:
            rc = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if rc is not None and rc.get("blockNumber") is not None:
                unknown = 0
                height = hex_int(rc["blockNumber"])
                head = hex_int(await self.rpc.call("eth_blockNumber", []))
                if head >= height + depth:
                    if depth == 0:
                        return dict(rc)
                    block = await self.rpc.call("eth_getBlockByNumber", [hex(height), False])
                    if block is not None and block.get("hash") == rc.get("blockHash"):
                        return dict(rc)  # else reorganised away: its new receipt comes on a later poll
            elif await self.rpc.call("eth_getTransactionByHash", [tx_hash]) is None:
                unknown += 1
                if unknown >= 3:
                    self._nonce_is_stale()
                    raise TransportError(f"transaction {tx_hash} is unknown to the node (dropped?)", retryable=True,
                                         side=self.chain_id)
            else:
                unknown = 0
            if loop.time() > deadline:
                raise TransportError(f"transaction {tx_hash} not final within {timeout_s}s", retryable=True,
                                     side=self.chain_id)
            await asyncio.sleep(self.poll_s)

    async def track(self, tx_hash: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until ``tx_hash`` is ``confirmation_depth`` blocks deep; return ``{"ok": True, "height",
        "gas_used", "tx_hash", "block_hash"}``, or raise the decoded protocol error if it reverted."""
        rc = await self.wait_receipt(tx_hash, timeout_s)
        if hex_int(rc["status"]) != 1:
            raise await self.revert_error(tx_hash, rc)
        return {"ok": True, "height": hex_int(rc["blockNumber"]), "gas_used": hex_int(rc["gasUsed"]),
                "tx_hash": tx_hash, "block_hash": rc["blockHash"]}

    async def revert_error(self, tx_hash: str, receipt: dict[str, Any]) -> ProtocolError:
        """Why a mined transaction reverted: its call replayed at its block (after, then before it)."""
        tx = await self.rpc.call("eth_getTransactionByHash", [tx_hash])
        height = hex_int(receipt["blockNumber"])
        where = f"{self.chain_id}: tx {tx_hash} in block {height}"
        if tx is None:
            return EthRevertError(f"{where} reverted (the transaction is no longer readable)")
        call = {"from": tx["from"], "to": tx["to"], "data": tx.get("input") or tx.get("data") or "0x",
                "value": tx.get("value", "0x0"), "gas": tx["gas"]}
        for tag in (height, height - 1):
            try:
                await self.rpc.call("eth_call", [call, hex(tag)])
            except ProtocolError as exc:
                return exc
        if hex_int(receipt["gasUsed"]) >= hex_int(tx["gas"]):
            return EthRevertError(f"{where} ran out of gas", got=hex_int(tx["gas"]))
        return EthRevertError(f"{where} reverted; replaying the call did not reproduce it")

    async def close(self) -> None:
        """Stop counting gas and close the node connection."""
        for t in list(self._gas_tasks):
            t.cancel()
        await asyncio.gather(*self._gas_tasks, return_exceptions=True)
        await self.rpc.close()



def _relayer_arg(args: dict[str, Any]) -> str:
    """The optional ``relayer`` of ``bridge.recv``: the relay account the ack names (protocol SPEC §6.10), ``""``
    when absent; anything but an identifier is refused here, before a transaction is built."""
    relayer = args.get("relayer", "")
    if relayer is None or relayer == "":
        return ""
    if not isinstance(relayer, str):
        raise CodecError("bridge.recv relayer is a relay account name", got=type(relayer).__name__)
    return check_id("relayer", relayer)


def fee_args(fees: Mapping[str, int] | None) -> tuple[Fees, tuple[int, int, int]]:
    """The parsed ``fees`` of a send (``{verify?, execute?, confirm?}`` in wei, each in 0..2^64-1; None: none) and
    the ``Fees`` struct argument of a ``send…WithFees`` call. :class:`~protocol.errors.CodecError` for anything else."""
    parsed = parse_fees(fees)
    return parsed, (parsed.verify, parsed.execute, parsed.confirm)


async def send_energy(target: EthTarget, dst_chain: str, lane: str, denom: str, amount_wh: int, receiver: str,
                      timeout_timestamp_ms: int, *, token: str | None = None, timeout_s: float = 60.0,
                      fees: Mapping[str, int] | None = None) -> SentPacket:
    """Phase 1 from ``target``'s account: approve the bridge for ``amount_wh`` of ``denom``'s ERC-20 (if the
    allowance is short), call ``sendEnergy`` and return the packet from its ``PacketSent`` log.

    ``token`` is the denomination's ERC-20 (the native ``kWh`` is the park's ``EnergyToken``); by default
    the bridge's ``tokenOf(denom)``. ``fees`` ``{verify?, execute?, confirm?}`` (wei) pays the relayers (protocol
    SPEC §6.10): the call is then ``sendEnergyWithFees`` with their sum as its value, escrowed with the packet until
    it settles; without fees (or all zero) it is the plain ``sendEnergy``. Waits for each transaction to be mined
    (not for its confirmation)."""
    parsed, fee_struct = fee_args(fees)
    token = token or await target.token_of(denom)
    if int(token, 16) == 0:
        raise CodecError(f"{target.chain_id}: no ERC-20 for denomination {denom!r}; pass token=", got=denom)
    (allowance,) = decode_result("allowance", await target.call(
        token, encode_call("allowance", [target.address, target.bridge])))
    if allowance < amount_wh:
        h = await target.transact(token, encode_call("approve", [target.bridge, amount_wh]))
        rc = await target.wait_receipt(h, timeout_s, depth=0)
        if hex_int(rc["status"]) != 1:
            raise await target.revert_error(h, rc)
    args: list[Any] = [dst_chain, lane, denom, amount_wh, receiver, timeout_timestamp_ms]
    if parsed:
        h = await target.transact(target.bridge, encode_call("sendEnergyWithFees", [*args, fee_struct]),
                                  value=parsed.total)
    else:
        h = await target.transact(target.bridge, encode_call("sendEnergy", args))
    rc = await target.wait_receipt(h, timeout_s, depth=0)
    if hex_int(rc["status"]) != 1:
        raise await target.revert_error(h, rc)
    topic = EVENTS["PacketSent"].topic
    for entry in rc.get("logs", []):
        if (entry.get("address", "").lower() == target.bridge.lower() and entry.get("topics")
                and to_bytes(entry["topics"][0]) == topic):
            f = decode_event(EVENTS["PacketSent"], to_bytes(entry["data"]))
            raw = bytes(f["packet"])
            pkt = decode_packet(raw)
            return SentPacket(pkt, raw, pkt.sequence, hex_int(rc["blockNumber"]), h)
    raise CodecError(f"{target.chain_id}: sendEnergy tx {h} emitted no PacketSent")


async def fees_owed(target: EthTarget, address: str | None = None) -> int:
    """The relay fees (wei) the bridge credited to ``address`` (default: ``target``'s account) and that it has not
    withdrawn yet (``feesOwed``, protocol SPEC §6.10)."""
    who = to_checksum_address(address or target.address)
    (owed,) = decode_result("feesOwed", await target.call(target.bridge, encode_call("feesOwed", [who])))
    return int(owed)


async def fees_escrowed(target: EthTarget, dst_chain: str, lane: str, sequence: int) -> dict[str, int] | None:
    """The relay fees (wei) escrowed with the packet ``sequence`` this park sent to ``dst_chain`` on ``lane``
    (``{verify, execute, confirm}``), or None: none were, or the packet settled."""
    verify, execute, confirm = decode_result("feesEscrowed", await target.call(
        target.bridge, encode_call("feesEscrowed", [dst_chain, lane, sequence])))
    if not (verify or execute or confirm):
        return None
    return {"verify": int(verify), "execute": int(execute), "confirm": int(confirm)}


async def withdraw_fees(target: EthTarget, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """Withdraw the relay fees credited to ``target``'s account (``withdrawFees``): ``{amount, tx_hash, height}``.
    Nothing owed is :class:`~protocol.errors.InsufficientFundsError` (estimated first: nothing is sent)."""
    h = await target.transact(target.bridge, encode_call("withdrawFees", []))
    rc = await target.wait_receipt(h, timeout_s, depth=0)
    if hex_int(rc["status"]) != 1:
        raise await target.revert_error(h, rc)
    topic = EVENTS["FeesWithdrawn"].topic
    for entry in rc.get("logs", []):
        if (entry.get("address", "").lower() == target.bridge.lower() and entry.get("topics")
                and to_bytes(entry["topics"][0]) == topic):
            amount = decode_event(EVENTS["FeesWithdrawn"], to_bytes(entry["data"]))["amount"]
            return {"amount": int(amount), "tx_hash": h, "height": hex_int(rc["blockNumber"])}
    raise CodecError(f"{target.chain_id}: withdrawFees tx {h} emitted no FeesWithdrawn")
