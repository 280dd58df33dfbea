"""A client of the Ethereum park's market contract (``EnergyMarket``, docs/research.md#seed-001).

Synchronous web3 (the bench and the CLI drive a round step by step): each call signs locally with an explicit
nonce, estimates gas, waits for the receipt, and turns a revert into its protocol error
(:func:`adapters.ethereum.errors.decode_revert`: ``RoundTiming``/``RoundState`` are ``lifecycle.illegal``,
``Unauthorized`` is ``auth.denied``…). Bids come from the off-chain agents (:mod:`chains.ethereum.market`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD
from web3.types import TxReceipt

from adapters.ethereum.abi import artifact_abi
from adapters.ethereum.errors import EthRevertError, decode_revert
from chains.ethereum.market.feeder import Trade

__all__ = ["MarketClient", "RoundInfo", "TxResult"]

ROUND_STATES = ("none", "open", "cleared", "settled")
ERC20_APPROVE = [{"type": "function", "name": "approve", "stateMutability": "nonpayable",
                  "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
                  "outputs": [{"name": "", "type": "bool"}]}]


@dataclass(frozen=True)
class TxResult:
    receipt: TxReceipt
    gas_used: int
    value: Any = None
    """What the call returned (by a static call just before), where it returns something."""


@dataclass(frozen=True)
class RoundInfo:
    round_id: int
    state: str
    closes_at: int
    charge_rate: int
    bids: int
    trades: int


class MarketClient:
    """One ``EnergyMarket`` at ``address`` on the node behind ``w3``."""

    def __init__(self, w3: Web3, address: str) -> None:
        abi = artifact_abi("EnergyMarket")
        if abi is None:
            raise RuntimeError("chains/ethereum/artifacts/EnergyMarket.json is missing")
        self.w3 = w3
        self.contract = w3.eth.contract(address=to_checksum_address(address), abi=abi)

    # --- transactions ---

    def _send(self, fn: Any, sender: LocalAccount, value: int = 0, want_return: bool = False) -> TxResult:
        params: dict[str, Any] = {"from": sender.address, "value": value}
        try:
            ret = fn.call(params) if want_return else None
            params["nonce"] = self.w3.eth.get_transaction_count(sender.address, "pending")
            tx = fn.build_transaction(params)
        except (ContractCustomError, ContractLogicError) as exc:
            raise _decoded(exc, fn.fn_name) from exc
        tx["gas"] = int(tx["gas"] * 1.25) + 20_000
        signed = sender.sign_transaction(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction),
                                                           timeout=60, poll_latency=0.05)
        if receipt["status"] != 1:
            raise EthRevertError(f"{fn.fn_name}: reverted in block {receipt['blockNumber']}")
        return TxResult(receipt, int(receipt["gasUsed"]), ret)

    def open_round(self, operator: LocalAccount, closes_at: int, charge_rate: int) -> int:
        """Open a round taking bids until block time ``closes_at`` (s); ``charge_rate`` wei/Wh/km. Its id."""
        r = self._send(self.contract.functions.openRound(closes_at, charge_rate), operator, want_return=True)
        return int(r.value)

    def submit_bid(self, member: LocalAccount, round_id: int, seller: bool, quantity_wh: int, price: int) -> int:
        """A seller approves its kWh escrow first; a buyer sends ``quantity × price`` wei. The bid's index."""
        if seller:
            token = self.w3.eth.contract(address=self.contract.functions.energyToken().call(), abi=ERC20_APPROVE)
            self._send(token.functions.approve(self.contract.address, quantity_wh), member)
        value = 0 if seller else quantity_wh * price
        r = self._send(self.contract.functions.submitBid(round_id, seller, quantity_wh, price), member, value, True)
        return int(r.value)

    def clear(self, sender: LocalAccount, round_id: int) -> TxResult:
        return self._send(self.contract.functions.clear(round_id), sender)

    def settle(self, operator: LocalAccount, round_id: int, delivered_wh: Sequence[int]) -> TxResult:
        return self._send(self.contract.functions.settle(round_id, list(delivered_wh)), operator)

    def withdraw(self, member: LocalAccount) -> TxResult:
        return self._send(self.contract.functions.withdraw(), member)

    def set_bus(self, operator: LocalAccount, bus: int, parent: int, length_m: int, limit_wh: int) -> TxResult:
        return self._send(self.contract.functions.setBus(bus, parent, length_m, limit_wh), operator)

    def set_member(self, operator: LocalAccount, member: str, bus: int) -> TxResult:
        return self._send(self.contract.functions.setMember(to_checksum_address(member), bus), operator)

    def _record(self) -> Any:
        abi = artifact_abi("DeliveryRecord")
        if abi is None:
            raise RuntimeError("chains/ethereum/artifacts/DeliveryRecord.json is missing")
        return self.w3.eth.contract(address=self.contract.functions.deliveryRecord().call(), abi=abi)

    def admit_imported(self, operator: LocalAccount, src_chain: str, subject: str, model: str,
                       participant: str) -> TxResult:
        """The park operator admits ``participant`` to the market on the reputation ``src_chain`` attested of
        ``subject`` under ``model`` and this park imported (``DeliveryRecord.admitImported``): refused with
        ``reputation.insufficient`` below the record's ``minImportedScore`` or with none imported."""
        return self._send(self._record().functions.admitImported(src_chain, subject, model,
                                                                 to_checksum_address(participant)), operator)

    # --- queries ---

    def participant(self, account: str) -> dict[str, Any]:
        """``{admitted, contracted_wh, delivered_wh, score_bp (None before a delivery), member, bus,
        claimable_wei}``: the account's delivery record and its place in the market."""
        who = to_checksum_address(account)
        rec = self._record()
        admitted, contracted, delivered = rec.functions.participantOf(who).call()
        has, score = rec.functions.scoreOf(who).call()
        member, bus = self.contract.functions.busOf(who).call()
        return {"admitted": bool(admitted), "contracted_wh": int(contracted), "delivered_wh": int(delivered),
                "score_bp": int(score) if has else None, "member": bool(member), "bus": int(bus) if member else None,
                "claimable_wei": self.claimable(who)}

    def min_imported_score(self) -> int:
        return int(self._record().functions.minImportedScore().call())

    def feeder(self) -> list[dict[str, int]]:
        """Every bus: ``{bus, parent, depth, length_m, limit_wh}`` (bus 0 the substation)."""
        out = []
        for bus in range(int(self.contract.functions.busCount().call())):
            _, parent, depth, length_m, limit_wh = self.contract.functions.busInfo(bus).call()
            out.append({"bus": bus, "parent": int(parent), "depth": int(depth), "length_m": int(length_m),
                        "limit_wh": int(limit_wh)})
        return out

    def round_count(self) -> int:
        return int(self.contract.functions.roundCount().call())

    def bids(self, round_id: int) -> list[dict[str, Any]]:
        """A round's bids in order: ``{index, member, bus, seller, quantity_wh, price_wei_per_wh}``."""
        out = []
        for i in range(self.round(round_id).bids):
            member, bus, seller, q, price = self.contract.functions.bidOf(round_id, i).call()
            out.append({"index": i, "member": str(member).lower(), "bus": int(bus), "seller": bool(seller),
                        "quantity_wh": int(q), "price_wei_per_wh": int(price)})
        return out

    def round(self, round_id: int) -> RoundInfo:
        state, closes_at, rate, bids, trades = self.contract.functions.roundOf(round_id).call()
        return RoundInfo(round_id, ROUND_STATES[state], closes_at, rate, bids, trades)

    def trades(self, round_id: int) -> list[Trade]:
        """The round's trades (the distance is read back from the contract's feeder)."""
        out = []
        for si, bi, q, price, charge in self.contract.functions.tradesOf(round_id).call():
            s_bus = self.contract.functions.bidOf(round_id, si).call()[1]
            b_bus = self.contract.functions.bidOf(round_id, bi).call()[1]
            out.append(Trade(si, bi, q, price, charge, self.contract.functions.distance(s_bus, b_bus).call()))
        return out

    def curtailments(self, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The ``Curtailed`` events of a clearing's receipt."""
        return [dict(e["args"]) for e in self.contract.events.Curtailed().process_receipt(receipt, errors=DISCARD)]

    def claimable(self, account: str) -> int:
        return int(self.contract.functions.claimableWei(to_checksum_address(account)).call())

    def escrowed(self) -> tuple[int, int]:
        """(wei, Wh) the market holds by its own account."""
        return (int(self.contract.functions.escrowedWei().call()), int(self.contract.functions.escrowedWh().call()))


def _decoded(exc: Exception, what: str) -> Exception:
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return decode_revert(bytes.fromhex(data[2:]), context=what)
    return EthRevertError(f"{what}: {exc}")
