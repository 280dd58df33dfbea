"""Deploy an Ethereum park's contracts (SPEC §E4): the tokens, the bridge (router) and its three apps, then open
the lanes and mint the genesis balances.

The deployer's transactions are a fixed sequence — nonces 0 to 6 create ``EnergyToken``, ``VoucherToken`` (the
implementation voucher clones delegate to), ``ParkBridge``, ``EnergyApp``, ``ChargingRights``, ``ReputationApp``
and ``DeliveryRecord`` (:data:`CONTRACTS`), then one ``openLane`` (or ``configureLane``, with capacities) per
lane, then one ``setTransformer`` and one ``setStation`` per registry entry, then one ``mint`` per non-zero
balance — so every contract address is the CREATE address of its nonce
(:func:`expected_addresses`, known before any node runs: the bridge is built with the addresses of the apps
created after it, which name the bridge), and a deployment cut short resumes from the deployer's nonce.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rlp
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import get_abi_input_types, keccak, to_canonical_address, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError

from protocol.certificate import ValidatorSet

__all__ = ["ADDRESS_KEYS", "CONTRACTS", "DeployError", "create_address", "deploy_market", "deploy_park",
           "expected_addresses", "load_artifact", "lower_address", "market_step_count", "park_step_count",
           "relay_set_args"]

log = logging.getLogger("parkrelay.ethereum.deploy")
_Log = logging.Logger | logging.LoggerAdapter[logging.Logger]

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
"""Committed compiler output: ``<Contract>.json`` with ``abi`` and ``bytecode`` (SPEC §E2)."""
CONTRACTS = ("EnergyToken", "VoucherToken", "ParkBridge", "EnergyApp", "ChargingRights", "ReputationApp",
             "DeliveryRecord")
"""Deployed in this order, at the deployer's nonces 0 to 6."""
ADDRESS_KEYS = ("energy_token", "voucher_impl", "bridge", "energy_app", "rights", "reputation", "delivery_record")
"""Keys of the contract addresses in ``addresses.json``, in deployment order."""

PRIORITY_FEE_WEI = 1_000_000_000
GAS_MARGIN = 1.25
RECEIPT_TIMEOUT_S = 60.0
MARKET_CONFIG_GAS = 250_000
"""Gas limit of each feeder and member transaction of the market's deployment (each uses under 100,000): they are
sent together without estimates, each depending on the one before (bus n needs bus n-1)."""

DEFAULT_TRUSTING_PERIOD_MS = 7 * 24 * 3600 * 1000
"""The bridge's trusting period of its relay set unless the deployment says otherwise (protocol SPEC §7.8): a week,
as the Python parks' and the Fabric park's bridges (bounds: a minute .. 365 days, else the constructor reverts)."""

DEFAULT_MAX_CERTIFICATE_AGE_MS = 10 * 60 * 1000
"""Phase 3 refuses a relay certificate older than this (protocol SPEC §7.9): ten minutes, as the Python parks' and
the Fabric park's bridges (bounds: 10 seconds .. a day, else the constructor reverts)."""

RelaySetArgs = tuple[Sequence[bytes], Sequence[str], Sequence[int]]
"""The ``ValidatorSet`` constructor argument: ed25519 keys (32 bytes), eth addresses, powers."""


class DeployError(Exception):
    """A deployment step failed, or the chain holds a deployment other than the expected one."""


def load_artifact(name: str, artifacts_dir: Path | None = None) -> dict[str, Any]:
    """``<artifacts_dir>/<name>.json``: ``{"abi": [...], "bytecode": "0x..."}``."""
    path = (artifacts_dir or ARTIFACTS_DIR) / f"{name}.json"
    try:
        art: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DeployError(f"contract artifact {path} not found (artifacts are committed under "
                          f"chains/ethereum/artifacts; `python -m chains.ethereum.compile` rebuilds them)") from exc
    if not isinstance(art.get("abi"), list) or not str(art.get("bytecode", "")).removeprefix("0x"):
        raise DeployError(f"contract artifact {path} has no abi or no creation bytecode")
    return art


def lower_address(addr: str | bytes) -> str:
    """An address in the park's form (SPEC §E1): ``0x`` + 40 lowercase hex digits."""
    return "0x" + to_canonical_address(addr).hex()


def create_address(deployer: str | bytes, nonce: int) -> str:
    """The address of the contract ``deployer`` creates with ``nonce``: ``keccak(rlp([deployer, nonce]))[12:]``."""
    return "0x" + keccak(rlp.encode([to_canonical_address(deployer), nonce]))[12:].hex()


def expected_addresses(deployer: str | bytes) -> dict[str, str]:
    """:data:`ADDRESS_KEYS` and ``deployer`` (lowercase hex): the CREATE addresses of the deployer's nonces 0 to 6
    — the contents of ``addresses.json``."""
    out = {key: create_address(deployer, nonce) for nonce, key in enumerate(ADDRESS_KEYS)}
    out["deployer"] = lower_address(deployer)
    return out


def relay_set_args(valset: ValidatorSet) -> RelaySetArgs:
    """The constructor's ``ValidatorSet`` from a protocol validator set (order kept: signatures index it)."""
    return ([v.ed25519_pubkey for v in valset.validators],
            [lower_address(v.eth_address) for v in valset.validators],
            [v.power for v in valset.validators])


@dataclass(frozen=True)
class _Step:
    """One transaction of the deployment sequence."""

    what: str
    to: str | None
    """Checksum address called; None for a contract creation."""
    data: str
    """Calldata (creation: bytecode and constructor arguments)."""
    creates: str | None = None
    """Address key this step's contract lands at (creation steps)."""
    needs_code: bool = False
    """Calls a contract of this deployment: wait until the creations before it are mined."""
    gas: int | None = None
    """A fixed gas limit, not estimated: for a call that depends on an earlier one still in flight (its estimate
    would revert until that one is mined), so the whole sequence goes out at once."""


def park_step_count(lanes: int, transformers: int, stations: int, minted_balances: int) -> int:
    """Transactions :func:`deploy_park` sends: the operator's next nonce once the park is deployed."""
    return len(CONTRACTS) + lanes + transformers + stations + minted_balances


def deploy_park(
    w3: Web3,
    deployer: LocalAccount,
    *,
    chain_id: str,
    relay_chain_id: str,
    relay_set: RelaySetArgs,
    lanes: Sequence[tuple[str, str]],
    balances: Mapping[str, int],
    lane_capacities: Mapping[tuple[str, str], Mapping[str, int]] | None = None,
    transformers: Mapping[str, int] | None = None,
    stations: Mapping[str, str] | None = None,
    artifacts_dir: Path | None = None,
    logger: _Log | None = None,
    trusting_period_ms: int = DEFAULT_TRUSTING_PERIOD_MS,
    max_certificate_age_ms: int = DEFAULT_MAX_CERTIFICATE_AGE_MS,
) -> dict[str, str]:
    """Deploy the park (or finish a deployment cut short) and return :func:`expected_addresses`.

    ``lanes`` are ``(dst_chain, lane)`` pairs to open, with the relay genesis's capacities of those in
    ``lane_capacities`` (``configureLane``, protocol §6.8; the others ``openLane``: not limited);
    ``transformers`` (name -> kW) and ``stations`` (name -> transformer) fill the charging-right registry (SPEC
    §E2.6). ``trusting_period_ms`` bounds how long the bridge trusts its relay set without a fresh relay header
(protocol SPEC §7.8); ``max_certificate_age_ms`` bounds the age of a phase-3 certificate (§7.9). ``balances`` maps
    addresses to genesis ``kWh`` balances in Wh (zero balances are skipped). The
    deployer needs ETH for gas. Transactions are signed locally with explicit nonces and sent without
    waiting for one another where they do not depend on each other, so a deployment takes about two
    blocks. Progress goes to ``logger`` (default ``parkrelay.ethereum.deploy``).
    """
    lg = logger or log
    arts = {name: load_artifact(name, artifacts_dir) for name in CONTRACTS}
    addrs = expected_addresses(deployer.address)
    checksum = {k: to_checksum_address(v) for k, v in addrs.items()}
    energy = w3.eth.contract(address=checksum["energy_token"], abi=arts["EnergyToken"]["abi"])
    bridge = w3.eth.contract(address=checksum["bridge"], abi=arts["ParkBridge"]["abi"])
    rights = w3.eth.contract(address=checksum["rights"], abi=arts["ChargingRights"]["abi"])

    def create(name: str, *args: Any) -> str:
        """Creation calldata: the bytecode, then the ABI-encoded constructor arguments."""
        ctor: Any = next((e for e in arts[name]["abi"] if e.get("type") == "constructor"),
                         {"type": "constructor", "inputs": []})
        code: str = arts[name]["bytecode"].removeprefix("0x")
        return "0x" + code + abi_encode(get_abi_input_types(ctor), args).hex()

    ed_keys, eth_addrs, powers = relay_set
    relay_arg = ([bytes(k) for k in ed_keys], [to_checksum_address(a) for a in eth_addrs], [int(p) for p in powers])
    steps = [
        _Step("EnergyToken", None, create("EnergyToken"), creates="energy_token"),  # owner: the deployer
        _Step("VoucherToken (implementation)", None, create("VoucherToken"), creates="voucher_impl"),
        _Step("ParkBridge", None, create("ParkBridge", chain_id, relay_chain_id, relay_arg, checksum["energy_token"],
                                         checksum["energy_app"], checksum["rights"], checksum["reputation"],
                                         trusting_period_ms, max_certificate_age_ms),
              creates="bridge"),
        _Step("EnergyApp", None, create("EnergyApp", checksum["energy_token"], checksum["voucher_impl"]),
              creates="energy_app"),
        _Step("ChargingRights", None, create("ChargingRights", checksum["bridge"]), creates="rights"),
        _Step("ReputationApp", None, create("ReputationApp", checksum["bridge"], checksum["delivery_record"]),
              creates="reputation"),
        _Step("DeliveryRecord", None, create("DeliveryRecord", checksum["bridge"], checksum["reputation"]),
              creates="delivery_record"),
    ]
    creations = len(steps)
    for dst, lane in lanes:
        caps = (lane_capacities or {}).get((dst, lane))
        if caps is None:
            steps.append(_Step(f"openLane({dst}, {lane})", checksum["bridge"],
                               bridge.encode_abi("openLane", [dst, lane]), needs_code=True))
        else:
            assets = sorted(caps, key=lambda a: a.encode())  # the lane-config record's order (§6.8)
            steps.append(_Step(f"configureLane({dst}, {lane}, {dict(caps)})", checksum["bridge"],
                               bridge.encode_abi("configureLane", [dst, lane, assets, [caps[a] for a in assets]]),
                               needs_code=True))
    for name, kw in sorted((transformers or {}).items()):
        steps.append(_Step(f"setTransformer({name}, {kw} kW)", checksum["rights"],
                           rights.encode_abi("setTransformer", [name, kw]), needs_code=True))
    for name, transformer in sorted((stations or {}).items()):
        steps.append(_Step(f"setStation({name} behind {transformer})", checksum["rights"],
                           rights.encode_abi("setStation", [name, transformer]), needs_code=True))
    for addr, wh in balances.items():
        if wh > 0:
            steps.append(_Step(f"mint {wh} Wh to {lower_address(addr)}", checksum["energy_token"],
                               energy.encode_abi("mint", [to_checksum_address(addr), wh]), needs_code=True))

    nonce = w3.eth.get_transaction_count(checksum["deployer"], "pending")
    for i, step in enumerate(steps[:min(nonce, creations)]):
        if step.creates and not w3.eth.get_code(checksum[step.creates]):
            raise DeployError(f"nonce {i} of the deployer {addrs['deployer']} is used but {step.what} has no code at "
                              f"{addrs[step.creates]}: this chain's state is not a deployment of this park")
    if nonce >= len(steps):
        return addrs
    if nonce:
        lg.info("resuming a deployment cut short: %d of %d transactions done", nonce, len(steps))
    _run(w3, deployer, steps, nonce, lg)
    return addrs


def _run(w3: Web3, deployer: LocalAccount, steps: Sequence[_Step], first_nonce: int, lg: _Log) -> None:
    base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas") or 0)
    fees = {"maxPriorityFeePerGas": PRIORITY_FEE_WEI, "maxFeePerGas": 2 * base_fee + PRIORITY_FEE_WEI}
    chain = w3.eth.chain_id
    in_flight: list[tuple[_Step, HexBytes]] = []
    creating = False
    for nonce in range(first_nonce, len(steps)):
        step = steps[nonce]
        if step.needs_code and creating:
            _wait(w3, in_flight, lg)
            in_flight, creating = [], False
        tx: dict[str, Any] = {"from": deployer.address, "nonce": nonce, "chainId": chain, "data": step.data, **fees}
        if step.to is not None:
            tx["to"] = step.to
        if step.gas is not None:
            tx["gas"] = step.gas
            signed = deployer.sign_transaction(tx)
            in_flight.append((step, w3.eth.send_raw_transaction(signed.raw_transaction)))
            lg.info("sent %s (nonce %d)", step.what, nonce)
            continue
        try:
            gas = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            if not in_flight:
                raise DeployError(f"{step.what} would revert: {exc}") from exc
            _wait(w3, in_flight, lg)  # may depend on a transaction still in flight
            in_flight, creating = [], False
            try:
                gas = w3.eth.estimate_gas(tx)  # type: ignore[arg-type]
            except ContractLogicError as exc2:
                raise DeployError(f"{step.what} would revert: {exc2}") from exc2
        tx["gas"] = int(gas * GAS_MARGIN)
        signed = deployer.sign_transaction(tx)
        in_flight.append((step, w3.eth.send_raw_transaction(signed.raw_transaction)))
        creating = creating or step.creates is not None
        lg.info("sent %s (nonce %d)", step.what, nonce)
    _wait(w3, in_flight, lg)


def _wait(w3: Web3, sent: Sequence[tuple[_Step, HexBytes]], lg: _Log) -> None:
    for step, tx_hash in sent:
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S, poll_latency=0.1)
        if receipt["status"] != 1:
            raise DeployError(f"{step.what} failed in block {receipt['blockNumber']} (tx 0x{bytes(tx_hash).hex()})")
        created = receipt.get("contractAddress")
        where = f" at {lower_address(created)}" if created else ""
        lg.info("%s mined in block %d%s", step.what, receipt["blockNumber"], where)


def market_step_count(buses: int, members: int, min_imported_score: int = 0) -> int:
    """Transactions :func:`deploy_market` sends for a feeder of ``buses`` buses (the substation included) and
    ``members`` members: the contract, ``setMarket``, ``setMinImportedScore`` if not 0, one ``setBus`` per bus, and
    ``admit`` plus ``setMember`` per member."""
    return 2 + (1 if min_imported_score else 0) + buses + 2 * members


def deploy_market(
    w3: Web3,
    operator: LocalAccount,
    addresses: Mapping[str, str],
    feeder: Sequence[tuple[int, int, int]],
    *,
    members: Mapping[str, int] | None = None,
    min_imported_score: int = 0,
    first_nonce: int | None = None,
    artifacts_dir: Path | None = None,
    logger: _Log | None = None,
) -> str:
    """Deploy the park's market (``EnergyMarket``, docs/research.md#seed-001) beside a deployed park: the contract,
    ``DeliveryRecord.setMarket`` (its settlement writes the record the park attests), ``setMinImportedScore`` if
    ``min_imported_score`` is not 0, the feeder, one ``setBus(bus, parent, length_m, limit_wh)`` per
    ``(parent, length_m, limit_wh)`` of ``feeder`` in bus order (bus 0, the substation, first: ``(0, 0, limit)``),
    then each of ``members`` (address -> bus) admitted in the delivery record and connected at its bus.
    ``operator`` is the park's (the bridge's owner, nonces past the park's). Returns the market's address
    (lowercase hex).

    ``first_nonce``: the operator's nonce of the contract's creation, fixed in advance (the node's deployment: the
    park's genesis announces the market's address, :func:`market_step_count` transactions from that nonce), so a
    deployment cut short resumes where it stopped; None: from the operator's next nonce."""
    lg = logger or log
    art = load_artifact("EnergyMarket", artifacts_dir)
    record_art = load_artifact("DeliveryRecord", artifacts_dir)
    record = to_checksum_address(addresses["delivery_record"])
    energy = to_checksum_address(addresses["energy_token"])
    ctor: Any = next(e for e in art["abi"] if e.get("type") == "constructor")
    nonce = w3.eth.get_transaction_count(operator.address, "pending")
    first = nonce if first_nonce is None else first_nonce
    market = to_checksum_address(create_address(operator.address, first))
    m = w3.eth.contract(address=market, abi=art["abi"])
    rec = w3.eth.contract(address=record, abi=record_art["abi"])
    steps = [_Step("EnergyMarket", None, "0x" + art["bytecode"].removeprefix("0x")
                   + abi_encode(get_abi_input_types(ctor), [record, energy]).hex(), creates="market"),
             _Step("DeliveryRecord.setMarket", record, rec.encode_abi("setMarket", [market]), needs_code=True)]
    if min_imported_score:
        steps.append(_Step(f"DeliveryRecord.setMinImportedScore({min_imported_score})", record,
                           rec.encode_abi("setMinImportedScore", [min_imported_score]), needs_code=True))
    for bus, (parent, length_m, limit_wh) in enumerate(feeder):
        steps.append(_Step(f"setBus({bus} behind {parent}, {length_m} m, {limit_wh} Wh)", market,
                           m.encode_abi("setBus", [bus, parent, length_m, limit_wh]), needs_code=True,
                           gas=MARKET_CONFIG_GAS))
    for addr, bus in (members or {}).items():
        who = to_checksum_address(addr)
        steps.append(_Step(f"DeliveryRecord.admit({lower_address(addr)})", record, rec.encode_abi("admit", [who]),
                           needs_code=True, gas=MARKET_CONFIG_GAS))
        steps.append(_Step(f"setMember({lower_address(addr)} at bus {bus})", market,
                           m.encode_abi("setMember", [who, bus]), needs_code=True, gas=MARKET_CONFIG_GAS))
    if nonce < first:
        raise DeployError(f"the market is created at the operator's nonce {first}, but its next nonce is {nonce}: "
                          f"deploy the park first")
    if first_nonce is not None and nonce > first and not w3.eth.get_code(market):
        raise DeployError(f"nonce {first} of the operator is used but EnergyMarket has no code at "
                          f"{lower_address(market)}: this chain's state is not a deployment of this market")
    if nonce < first + len(steps):
        if nonce > first:
            lg.info("resuming the market's deployment: %d of %d transactions done", nonce - first, len(steps))
        _run(w3, operator, [_Step("(earlier)", None, "")] * first + steps, nonce, lg)
    return lower_address(market)
