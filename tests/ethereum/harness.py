"""Drive the Ethereum park's contracts on a real anvil, with a simulated relay chain.

Used by the contract tests (``tests/ethereum``) and by ``bench/gas.py``. Nothing here is mocked:

* :class:`AnvilProcess` runs the pinned anvil on a free loopback port (automine);
* :class:`Evm` deploys the committed artifacts, signs transactions locally with keys generated at run
  time, and decodes reverts into the bridge's custom errors;
* :class:`RelaySim` is a relay chain's state and its validators: a :class:`SparseMerkleTree` of
  relay records (protocol §4), headers, and commits signed with real ed25519 and secp256k1 keys by the
  Python reference (:mod:`protocol.certificate`, :func:`relay.chain.consensus.messages.secp256k1_sign`). Every
  certificate it hands out is first checked by the reference :func:`verify_certificate`, so the
  contract is tested against exactly what the Python protocol accepts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coincurve
from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from adapters.ethereum.abi import certified_payees
from adapters.ethereum.source import ack_of_code
from chains.common.procs import spawn
from chains.ethereum.compile import ARTIFACTS_DIR, load_artifact
from chains.ethereum.deploy import create_address
from protocol.certificate import (
    CommitSignature,
    RelayCertificate,
    RelayCommit,
    RelayHeader,
    Validator,
    ValidatorSet,
    commit_sign_bytes,
    verify_certificate,
    verify_commit,
)
from protocol.codec import ZERO_COMMITMENT, decode_packet, encode_ack, encode_outcome, sha256
from protocol.lane_config import encode_lane_config
from protocol.paths import lane_config_path, outcome_path, verified_path
from protocol.state_commitment import SparseMerkleTree
from protocol.types import NO_PAYEES, ChainId, FeePayees, LaneId, PacketOutcome
from relay.chain.consensus.messages import ValidatorKey

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ANVIL = REPO / "chains/ethereum/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def anvil_path() -> Path:
    """The anvil binary: ``$PARKRELAY_ANVIL`` or the one ``make setup`` installs."""
    return Path(os.environ.get("PARKRELAY_ANVIL", str(DEFAULT_ANVIL)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AnvilProcess:
    """An anvil node on ``127.0.0.1:<port>`` (automine: one block per transaction)."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port if port is not None else free_port()
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start anvil and wait until it answers JSON-RPC."""
        binary = anvil_path()
        if not binary.exists():
            raise RuntimeError(f"anvil not found at {binary}: run `make setup`")
        self._proc = spawn(
            [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--silent", "--chain-id", "31337",
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"anvil exited with {self._proc.returncode} on port {self.port}")
            try:
                if w3.eth.chain_id == 31337:
                    return
            except Exception:  # noqa: S110 - not listening yet
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {timeout_s}s")

    def stop(self) -> None:
        """Terminate anvil (kill it if it does not exit within 5 s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> AnvilProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- EVM access --------------------------------------------------------------------------------------


class TxFailed(AssertionError):
    """A transaction expected to succeed was reverted."""


def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for path in sorted(ARTIFACTS_DIR.glob("*.json")):
        for item in load_artifact(path.stem)["abi"]:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                table[keccak(text=sig)[:4]] = (item["name"], types)
    return table


@dataclass
class Evm:
    """A web3 connection with locally signed transactions and custom-error decoding."""

    w3: Web3
    errors: dict[bytes, tuple[str, list[str]]] = field(default_factory=_error_table)

    @classmethod
    def connect(cls, url: str) -> Evm:
        return cls(Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60})))

    def rpc(self, method: str, params: Sequence[Any]) -> Any:
        """A raw JSON-RPC call; raises on an RPC error."""
        resp = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in resp:
            raise RuntimeError(f"{method}: {resp['error']}")
        return resp["result"]

    def account(self, wei: int = 10**21) -> LocalAccount:
        """A fresh key, generated now, funded with ``wei``."""
        acct: LocalAccount = Account.create()
        self.rpc("anvil_setBalance", [acct.address, hex(wei)])
        return acct

    def deploy(self, name: str, sender: LocalAccount, *args: Any) -> Contract:
        """Deploy ``artifacts/<name>.json`` from ``sender``."""
        art = load_artifact(name)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        receipt = self.transact(factory.constructor(*args), sender)
        address = receipt["contractAddress"]
        if address is None:
            raise TxFailed(f"deploying {name} created no contract")
        return self.at(name, address)

    def at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name)["abi"])

    def transact(self, fn: Any, sender: LocalAccount, gas: int | None = None, value: int = 0) -> TxReceipt:
        """Sign and send ``fn`` (a contract function or constructor call) with ``value`` wei; the receipt of a
        successful tx."""
        params: dict[str, Any] = {"from": sender.address,
                                  "nonce": self.w3.eth.get_transaction_count(sender.address, "pending")}
        if gas is not None:
            params["gas"] = gas
        if value:
            params["value"] = value
        try:
            tx = fn.build_transaction(params)
        except Exception as exc:  # estimate_gas reverted: say which custom error
            raise TxFailed(f"{getattr(fn, 'fn_name', 'constructor')} reverts: {self.revert_of(fn, sender)}") from exc
        if gas is None:
            tx["gas"] = int(tx["gas"] * 1.25) + 20_000
        signed = sender.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
        if receipt["status"] != 1:
            raise TxFailed(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def revert_of(self, fn: ContractFunction | ContractConstructor, sender: LocalAccount,
                  value: int = 0) -> tuple[Any, ...] | None:
        """``eth_call`` of ``fn`` (sending ``value`` wei): ``None`` if it succeeds, else ``(ErrorName, *args)`` of the
        custom error (``("<no data>",)`` for a revert without data, ``("<unknown>", hex)`` for anything else)."""
        if isinstance(fn, ContractConstructor):
            return self.revert_of_data(None, fn.data_in_transaction, sender, value)
        return self.revert_of_data(fn.address, fn._encode_transaction_data(), sender, value)

    def revert_of_data(self, to: str | None, data: bytes | str, sender: LocalAccount,
                       value: int = 0) -> tuple[Any, ...] | None:
        """As :meth:`revert_of`, for raw calldata (``to`` None: a contract creation)."""
        hex_data = data if isinstance(data, str) else "0x" + data.hex()
        call = {"from": sender.address, "data": hex_data}
        if value:
            call["value"] = hex(value)
        if to is not None:
            call["to"] = to
        resp = self.w3.provider.make_request("eth_call", [call, "latest"])  # type: ignore[arg-type]
        if "error" not in resp:
            return None
        data = resp["error"].get("data") or "0x"
        raw = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if not raw:
            return ("<no data>",)
        entry = self.errors.get(raw[:4])
        if entry is None:
            return ("<unknown>", raw.hex())
        name, types = entry
        return (name, *abi_decode(types, raw[4:]))

    def error_name(self, fn: ContractFunction | ContractConstructor, sender: LocalAccount) -> str | None:
        """The name of the custom error ``fn`` reverts with (None if it succeeds); :meth:`revert_of` for the data."""
        r = self.revert_of(fn, sender)
        return None if r is None else str(r[0])

    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def now_ms(self) -> int:
        """The latest block's time in ms (SPEC §E1: ``timestamp × 1000``)."""
        return self.latest_timestamp() * 1000

    def mine_at(self, timestamp: int) -> None:
        """Mine an empty block at ``timestamp`` (seconds); later blocks follow from there."""
        self.rpc("evm_mine", [timestamp])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot", []))

    def revert(self, snapshot_id: str) -> None:
        if self.rpc("evm_revert", [snapshot_id]) is not True:
            raise RuntimeError(f"evm_revert({snapshot_id}) failed")

    def events(self, contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The ``name`` events ``contract`` emitted in ``receipt``, as dicts of their arguments."""
        return [dict(ev["args"]) for ev in contract.events[name]().process_receipt(receipt, errors=DISCARD)]

    def storage(self, address: str, slot: bytes) -> bytes:
        """The 32-byte storage word at ``slot``."""
        return bytes(self.w3.eth.get_storage_at(to_checksum_address(address), int.from_bytes(slot, "big")))


def mapping_slot(map_key: bytes, slot: int) -> bytes:
    """Solidity's slot of ``mapping[map_key]`` for a mapping at ``slot``: keccak256(key ‖ uint256(slot))."""
    return keccak(map_key + slot.to_bytes(32, "big"))


def lower_hex(address: str) -> str:
    """An account as packets carry it (SPEC §E1): lowercase ``0x`` hex."""
    return address.lower()


# --- the relay chain ---------------------------------------------------------------------------------


def header_abi(h: RelayHeader) -> tuple[Any, ...]:
    return (h.chain_id, h.height, h.time_ms, h.last_block_hash, h.data_hash, h.state_root, h.validators_hash,
            h.next_validators_hash)


def commit_abi(c: RelayCommit) -> tuple[Any, ...]:
    return (header_abi(c.header), c.round, [(s.validator_index, s.secp256k1_sig) for s in c.signatures])


def certificate_abi(cert: RelayCertificate, raw_proof: bytes | None = None) -> tuple[Any, ...]:
    """``(commit, proof bytes)``; ``raw_proof`` replaces the proof's encoding (to send malformed proofs)."""
    return (commit_abi(cert.commit), cert.proof.encode() if raw_proof is None else raw_proof)


def validator_set_abi(vs: ValidatorSet) -> tuple[Any, ...]:
    return ([v.ed25519_pubkey for v in vs.validators], [to_checksum_address(v.eth_address) for v in vs.validators],
            [v.power for v in vs.validators])


def make_validators(n: int, powers: Sequence[int] | None = None) -> tuple[list[ValidatorKey], ValidatorSet]:
    """``n`` validators with ed25519 and secp256k1 keys generated now."""
    keys = [ValidatorKey(secrets.token_bytes(32), coincurve.PrivateKey().secret) for _ in range(n)]
    pw = list(powers) if powers is not None else [1] * n
    vset = ValidatorSet(tuple(Validator(f"val-{i}", k.ed25519_pubkey, k.eth_address, pw[i])
                              for i, k in enumerate(keys)))
    return keys, vset


@dataclass
class RelaySim:
    """A relay chain as far as the bridges see it: its state tree, heights and validator keys."""

    chain_id: str
    keys: list[ValidatorKey]
    vset: ValidatorSet
    tree: SparseMerkleTree = field(default_factory=SparseMerkleTree)
    height: int = 0
    time_ms: int = 1_700_000_000_000
    last_hash: bytes = bytes(32)
    clock: Callable[[], int] | None = None
    """The chain's clock (ms), when given: a block is never older than it (certificates stay fresh, protocol
    §7.9, however far a test moves the chain's time)."""

    @classmethod
    def create(cls, chain_id: str = "relay", n: int = 4, filler_records: int = 64) -> RelaySim:
        """A relay of ``n`` equal-power validators whose state already holds ``filler_records`` records
        (so proofs have a realistic depth, about log2 of the record count)."""
        keys, vset = make_validators(n)
        items = ((f"relay/verified/filler/{i}".encode(), hashlib.sha256(str(i).encode()).digest())
                 for i in range(filler_records))
        return cls(chain_id, keys, vset, SparseMerkleTree.from_items(items))

    def save(self) -> tuple[Any, ...]:
        return (self.keys, self.vset, self.tree, self.height, self.time_ms, self.last_hash)

    def restore(self, saved: tuple[Any, ...]) -> None:
        self.keys, self.vset, self.tree, self.height, self.time_ms, self.last_hash = saved

    def set(self, key: bytes, value: bytes) -> None:
        self.tree = self.tree.set(key, value)

    def commit(self, signers: Iterable[int] | None = None, *, next_set: ValidatorSet | None = None,
               keys: Sequence[ValidatorKey] | None = None, vset: ValidatorSet | None = None,
               chain_id: str | None = None, round_: int = 0) -> RelayCommit:
        """A new relay block over the current state, signed by ``signers`` (default: the first 3 of 4, i.e.
        the smallest quorum) with ``keys`` (default: the relay's own) on behalf of ``vset``."""
        vset = vset or self.vset
        keys = keys if keys is not None else self.keys
        self.height += 1
        self.time_ms += 1000
        if self.clock is not None:
            self.time_ms = max(self.time_ms, self.clock())
        header = RelayHeader(ChainId(chain_id or self.chain_id), self.height, self.time_ms, self.last_hash,
                             sha256(f"block {self.height}".encode()), self.tree.root, vset.hash,
                             (next_set or vset).hash)
        self.last_hash = header.hash()
        msg = commit_sign_bytes(header, round_)
        chosen = list(signers) if signers is not None else list(range(quorum_size(vset)))
        sigs = tuple(CommitSignature(i, keys[i].sign_ed25519(msg), keys[i].sign_secp256k1(msg)) for i in chosen)
        return RelayCommit(header, round_, sigs)

    def certificate(self, key: bytes, value: bytes, signers: Iterable[int] | None = None,
                    check: bool = True) -> RelayCertificate:
        """A certificate of ``key → value`` (recorded first) in a new relay block."""
        self.set(key, value)
        cert = RelayCertificate(self.commit(signers), key, value, self.tree.prove(key))
        if check:  # the Python reference must accept what the contract is given
            verify_certificate(self.vset, ChainId(self.chain_id), cert, key, value)
        return cert

    def verify(self, packet: bytes, signers: Iterable[int] | None = None, check: bool = True) -> RelayCertificate:
        """Phase 2: record ``relay/verified/…`` → packet commitment and certify it."""
        p = decode_packet(packet)
        return self.certificate(verified_path(p.src_chain, p.dst_chain, p.lane, p.sequence), sha256(packet), signers,
                                check)

    def confirm_ack(self, packet: bytes, ack: bytes, signers: Iterable[int] | None = None,
                    check: bool = True, payees: FeePayees = NO_PAYEES) -> RelayCertificate:
        """Phase 4 (relay half), ACKED with ``ack``; the record names ``payees`` (protocol §2.5, §6.10)."""
        p = decode_packet(packet)
        record = encode_outcome(PacketOutcome.ACKED, sha256(packet), sha256(ack), payees)
        return self.certificate(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence), record, signers, check)

    def confirm_timeout(self, packet: bytes, signers: Iterable[int] | None = None,
                        check: bool = True, payees: FeePayees = NO_PAYEES) -> RelayCertificate:
        """Phase 4 (relay half), TIMED_OUT; the record names ``payees`` (no execute payee on a timeout)."""
        p = decode_packet(packet)
        record = encode_outcome(PacketOutcome.TIMED_OUT, sha256(packet), ZERO_COMMITMENT, payees)
        return self.certificate(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence), record, signers, check)

    def lane_config(self, src: str, dst: str, lane: str, capacities: dict[str, int],
                    signers: Iterable[int] | None = None, check: bool = True) -> RelayCertificate:
        """Governance set the lane's capacities: certify its lane-config record (protocol §6.8)."""
        return self.certificate(lane_config_path(ChainId(src), ChainId(dst), LaneId(lane)),
                                encode_lane_config(capacities), signers, check)

    def rotate(self, n: int = 4, signers: Iterable[int] | None = None) -> tuple[RelayCommit, list[ValidatorKey],
                                                                              ValidatorSet]:
        """A commit of the current set naming a freshly generated set as the next one (not installed)."""
        keys, vset = make_validators(n)
        commit = self.commit(signers, next_set=vset)
        verify_commit(self.vset, ChainId(self.chain_id), commit)
        return commit, keys, vset

    def install(self, keys: list[ValidatorKey], vset: ValidatorSet) -> None:
        self.keys, self.vset = keys, vset


def quorum_size(vset: ValidatorSet) -> int:
    """The fewest validators (in order) whose power is more than 2/3 of the total."""
    power = 0
    for i, v in enumerate(vset.validators):
        power += v.power
        if vset.quorum_reached(power):
            return i + 1
    raise ValueError("no quorum")


# --- parks -------------------------------------------------------------------------------------------


@dataclass
class Park:
    """One deployment of the Ethereum park's contracts."""

    chain_id: str
    operator: LocalAccount
    token: Contract
    voucher_impl: Contract
    bridge: Contract
    energy_app: Contract
    rights: Contract
    """``ChargingRights``: the ERC-721 rights, the registry, admission and bookings."""
    reputation: Contract
    record: Contract
    """``DeliveryRecord``: the market's record whose scores the park attests."""


TRUSTING_PERIOD_MS = 7 * 24 * 3600 * 1000
MAX_CERTIFICATE_AGE_MS = 10 * 60 * 1000


def deploy_park(evm: Evm, chain_id: str, relay: RelaySim, lanes: Iterable[tuple[str, str]],
                capacities: dict[tuple[str, str], dict[str, int]] | None = None,
                trusting_period_ms: int = TRUSTING_PERIOD_MS,
                max_certificate_age_ms: int = MAX_CERTIFICATE_AGE_MS) -> Park:
    """The park's contracts in the order of ``chains.ethereum.deploy`` from a fresh operator key (so the bridge
    is built with the CREATE addresses of the apps that follow it); lanes opened, those in ``capacities``
    (``(counterparty, lane) -> {asset: capacity}``) with the relay genesis's limits."""
    operator = evm.account()
    at = [to_checksum_address(create_address(operator.address, n)) for n in range(7)]
    token = evm.deploy("EnergyToken", operator)
    impl = evm.deploy("VoucherToken", operator)
    bridge = evm.deploy("ParkBridge", operator, chain_id, relay.chain_id, validator_set_abi(relay.vset),
                        token.address, at[3], at[4], at[5], trusting_period_ms, max_certificate_age_ms)
    energy_app = evm.deploy("EnergyApp", operator, token.address, impl.address)
    rights = evm.deploy("ChargingRights", operator, bridge.address)
    reputation = evm.deploy("ReputationApp", operator, bridge.address, at[6])
    record = evm.deploy("DeliveryRecord", operator, bridge.address, reputation.address)
    if [c.address for c in (token, impl, bridge, energy_app, rights, reputation, record)] != at:
        raise TxFailed(f"{chain_id}: contracts not at the deployer's CREATE addresses")
    for counterparty, lane in lanes:
        caps = (capacities or {}).get((counterparty, lane))
        if caps is None:
            evm.transact(bridge.functions.openLane(counterparty, lane), operator)
        else:
            evm.transact(bridge.functions.configureLane(counterparty, lane, *lane_config_args(caps)), operator)
    return Park(chain_id, operator, token, impl, bridge, energy_app, rights, reputation, record)


def lane_config_args(capacities: dict[str, int]) -> tuple[list[str], list[int]]:
    """``(assets, capacities)`` in the record's order (assets ascending by UTF-8 bytes, protocol §6.8)."""
    assets = sorted(capacities, key=lambda a: a.encode())
    return assets, [capacities[a] for a in assets]


def update_lane_config(evm: Evm, park: Park, relayer: LocalAccount, dst: str, lane: str, capacities: dict[str, int],
                       cert: RelayCertificate, vset: ValidatorSet) -> TxReceipt:
    return evm.transact(park.bridge.functions.updateLaneConfig(dst, lane, *lane_config_args(capacities),
                                                               certificate_abi(cert), validator_set_abi(vset)),
                        relayer)


def voucher_of(evm: Evm, park: Park, denom: str) -> Contract | None:
    addr = park.bridge.functions.tokenOf(denom).call()
    return None if int(addr, 16) == 0 else evm.at("VoucherToken", addr)


def token_of(evm: Evm, park: Park, denom: str) -> Contract:
    addr = park.bridge.functions.tokenOf(denom).call()
    if int(addr, 16) == 0:
        raise LookupError(f"{park.chain_id} has no token {denom}")
    return evm.at("EnergyToken" if addr == park.token.address else "VoucherToken", addr)


Fees = tuple[int, int, int]
"""Relay fees in wei a send offers: ``(verify, execute, confirm)`` (protocol §6.10)."""


def with_fees(evm: Evm, fn: Any, sender: LocalAccount, fees: Fees | None) -> TxReceipt:
    """Send ``fn`` (a ``send…WithFees`` call when ``fees`` is given) with the fees' sum as its value."""
    if fees is None:
        return evm.transact(fn, sender)
    return evm.transact(fn, sender, value=sum(fees))


def send_energy(evm: Evm, park: Park, sender: LocalAccount, dst: str, lane: str, denom: str, amount: int,
                receiver: str, timeout_ms: int, approve: bool = True, fees: Fees | None = None
                ) -> tuple[bytes, TxReceipt]:
    """Phase 1 (approving the bridge first when the denom leaves), paying ``fees`` (``sendEnergyWithFees``) when
    given; returns the packet and the receipt."""
    if approve and not denom.startswith(f"{lane}/{dst}/"):
        evm.transact(token_of(evm, park, denom).functions.approve(park.bridge.address, amount), sender)
    if fees is None:
        fn = park.bridge.functions.sendEnergy(dst, lane, denom, amount, receiver, timeout_ms)
    else:
        fn = park.bridge.functions.sendEnergyWithFees(dst, lane, denom, amount, receiver, timeout_ms, fees)
    receipt = with_fees(evm, fn, sender, fees)
    (event,) = evm.events(park.bridge, "PacketSent", receipt)
    return bytes(event["packet"]), receipt


def recv_packet(evm: Evm, park: Park, relayer: LocalAccount, packet: bytes, cert: RelayCertificate,
                vset: ValidatorSet, relayer_name: str = "") -> tuple[bytes, TxReceipt]:
    """Phase 3, the ack naming ``relayer_name`` (if any, protocol §6.10); returns the ack written (from the
    ``AckWritten`` log's code and relayer, SPEC §E2.2) and the receipt."""
    receipt = evm.transact(park.bridge.functions.recvPacket(packet, certificate_abi(cert), validator_set_abi(vset),
                                                            relayer_name), relayer)
    (event,) = evm.events(park.bridge, "AckWritten", receipt)
    return encode_ack(ack_of_code(event["ackCode"], event["relayer"])), receipt


def settle(evm: Evm, park: Park, relayer: LocalAccount, packet: bytes, ack: bytes, cert: RelayCertificate,
           vset: ValidatorSet, payees: FeePayees | None = None) -> dict[str, Any]:
    """Phase 4 on the source, with the fee payees of the certified outcome record (by default those the certificate
    claims, as the adapter passes them); returns the PacketSettled event (with ``gasUsed`` added)."""
    payees = certified_payees(cert.value) if payees is None else payees
    receipt = evm.transact(park.bridge.functions.settle(packet, ack, certificate_abi(cert), validator_set_abi(vset),
                                                        payees.as_tuple()), relayer)
    (event,) = evm.events(park.bridge, "PacketSettled", receipt)
    event["gasUsed"] = receipt["gasUsed"]
    return event


# --- charging rights and reputation ------------------------------------------------------------------------

RIGHT_STATES = {0: "none", 1: "live", 2: "escrowed", 3: "burning"}


def right_token_id(right_id: str) -> int:
    """``ChargingRights`` token id of a right id: ``uint256(keccak256(id))``."""
    return int.from_bytes(keccak(text=right_id), "big")


def right_state(park: Park, right_id: str) -> tuple[str, str]:
    """``(state, owner)`` of a right id on ``park`` (owner lowercase ``0x`` hex; the rights contract when escrowed)."""
    state, owner, _, _ = park.rights.functions.rightOf(right_token_id(right_id)).call()
    return RIGHT_STATES[state], owner.lower()


def right_payload(evm: Evm, park: Park, right_id: str) -> bytes:
    """The canonical payload ``park`` recorded for ``right_id`` (its latest ``RightCreated`` log)."""
    logs = park.rights.events.RightCreated().get_logs(from_block=0,
                                                      argument_filters={"tokenId": right_token_id(right_id)})
    if not logs:
        raise LookupError(f"{park.chain_id} never created right {right_id}")
    return bytes(logs[-1]["args"]["payload"])


def issue_right(evm: Evm, park: Park, right_id: str, owner: str, *, station: str = "station-1",
                transformer: str = "trafo-1", power_kw: int = 50, slot_start_ms: int, slot_end_ms: int) -> bytes:
    """The operator issues a home right; returns its payload."""
    evm.transact(park.rights.functions.issue(right_id, station, transformer, power_kw, slot_start_ms, slot_end_ms,
                                             to_checksum_address(owner)), park.operator)
    return right_payload(evm, park, right_id)


def register(evm: Evm, park: Park, transformers: dict[str, int], stations: dict[str, str]) -> None:
    """The operator writes the park's registry."""
    for name, capacity in transformers.items():
        evm.transact(park.rights.functions.setTransformer(name, capacity), park.operator)
    for name, transformer in stations.items():
        evm.transact(park.rights.functions.setStation(name, transformer), park.operator)


def send_right(evm: Evm, park: Park, sender: LocalAccount, dst: str, lane: str, payload: bytes, receiver: str,
               timeout_ms: int, fees: Fees | None = None) -> tuple[bytes, TxReceipt]:
    """Phase 1 of a charging right (paying ``fees`` when given); returns the packet and the receipt."""
    fn = (park.bridge.functions.sendRight(dst, lane, payload, receiver, timeout_ms) if fees is None
          else park.bridge.functions.sendRightWithFees(dst, lane, payload, receiver, timeout_ms, fees))
    receipt = with_fees(evm, fn, sender, fees)
    (event,) = evm.events(park.bridge, "PacketSent", receipt)
    return bytes(event["packet"]), receipt


def send_reputation(evm: Evm, park: Park, sender: LocalAccount, dst: str, lane: str, subject: str, receiver: str,
                    timeout_ms: int, fees: Fees | None = None) -> tuple[bytes, TxReceipt]:
    """Phase 1 of a reputation attestation (paying ``fees`` when given); returns the packet and the receipt."""
    fn = (park.bridge.functions.sendReputation(dst, lane, subject, receiver, timeout_ms) if fees is None
          else park.bridge.functions.sendReputationWithFees(dst, lane, subject, receiver, timeout_ms, fees))
    receipt = with_fees(evm, fn, sender, fees)
    (event,) = evm.events(park.bridge, "PacketSent", receipt)
    return bytes(event["packet"]), receipt
