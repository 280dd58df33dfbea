"""Relay fees on the Ethereum park, on a real anvil (protocol SPEC §6.10; chains/ethereum/SPEC.md §E2.10).

A send may escrow fees ``(verify, execute, confirm)`` in wei, paid as its value; the phase-3 ack may name the relayer
that executed it (the four-field ack, its receipt byte for byte Python's ``ack_commitment``); settlement pays each
step's fee to the payee the certified outcome record names, if that is an address, and refunds the payer (the
packet's sender) the rest and a timeout's execute fee, crediting ``feesOwed`` for ``withdrawFees``. Forged payees
fail the certificate check; every hostile argument is a typed error and changes nothing. After every scenario the
bridge's ether is exactly the fees escrowed with its unsettled packets plus the fees credited and not withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.logs import DISCARD

import adapters.ethereum as eth
from adapters.ethereum.abi import certified_payees
from adapters.ethereum.source import FEE_DENOM
from chains.common import wire
from protocol.codec import ack_commitment, decode_ack, decode_packet, encode_ack, encode_outcome, sha256
from protocol.errors import CodecError, InsufficientFundsError
from protocol.types import (
    NO_PAYEES,
    Acknowledgement,
    AckStatus,
    FeePayees,
    PacketOutcome,
)
from tests.ethereum.conftest import ALICE_WH, LANE, B, World
from tests.ethereum.harness import (
    Park,
    certificate_abi,
    lower_hex,
    recv_packet,
    send_energy,
    send_reputation,
    send_right,
    settle,
    validator_set_abi,
)
from tests.ethereum.test_contracts import balance, deliver, error_ack, name_of, timeout
from tests.ethereum.test_reputation import admit_and_record
from tests.ethereum.test_rights import issue, registry

pytestmark = pytest.mark.integration

FEES = (1_000, 20_000, 300_000)
"""(verify, execute, confirm) in wei: distinct, so a fee paid for the wrong step shows."""
RELAYER = "relayer-1"
"""The relay account a phase-3 relayer names in its ack."""
UINT64_MAX = 2**64 - 1
NO_PAYEES_ARG = ("", "", "")


# --- bookkeeping ---------------------------------------------------------------------------------------------


@dataclass
class Books:
    """What a test knows the bridge of park A must hold: the packets sent with fees, every account it may credit."""

    w: World
    packets: list[tuple[str, str, int]] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.accounts.add(self.w.alice.address)
        assert ether(self.w, self.w.a.bridge.address) == 0  # each test starts from the snapshot

    def sent(self, packet: bytes) -> bytes:
        p = decode_packet(packet)
        self.packets.append((p.dst_chain, p.lane, p.sequence))
        return packet

    def payees(self, *accounts: LocalAccount) -> None:
        self.accounts.update(a.address for a in accounts)

    def conserved(self) -> None:
        """Protocol §6.10 conservation: the bridge's ether is the fees escrowed with the packets not settled plus
        the fees credited to accounts and not withdrawn; no account the test does not know is credited."""
        bridge = self.w.a.bridge
        escrow = sum(sum(bridge.functions.feesEscrowed(*k).call()) for k in self.packets)
        owed = sum(owed_of(self.w.a, a) for a in self.accounts)
        assert ether(self.w, bridge.address) == escrow + owed, (escrow, owed)


def ether(w: World, address: str) -> int:
    return int(w.evm.w3.eth.get_balance(to_checksum_address(address)))


def owed_of(park: Park, address: str) -> int:
    return int(park.bridge.functions.feesOwed(to_checksum_address(address)).call())


def escrowed_fees(park: Park, packet: bytes) -> tuple[int, int, int]:
    p = decode_packet(packet)
    verify, execute, confirm = park.bridge.functions.feesEscrowed(p.dst_chain, p.lane, p.sequence).call()
    return int(verify), int(execute), int(confirm)


def gas_cost(w: World, receipt: Any) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def send(w: World, books: Books, fees: tuple[int, int, int] | None = FEES, receiver: str | None = None,
         timeout_ms: int | None = None, amount: int = 1500) -> bytes:
    packet, _ = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", amount,
                            lower_hex(w.bob.address) if receiver is None else receiver,
                            timeout(w) if timeout_ms is None else timeout_ms, fees=fees)
    return books.sent(packet)


def payee_set(w: World) -> tuple[LocalAccount, LocalAccount, LocalAccount]:
    return w.evm.account(0), w.evm.account(0), w.evm.account(0)


def named(v: LocalAccount, e: LocalAccount, c: LocalAccount) -> FeePayees:
    """The three payees as a relay would name them: lowercase, EIP-55 checksummed, upper-case hex digits."""
    return FeePayees(lower_hex(v.address), to_checksum_address(e.address), "0x" + c.address[2:].upper())


def settle_fn(w: World, packet: bytes, ack: bytes, cert: Any, payees: tuple[str, str, str]) -> Any:
    return w.a.bridge.functions.settle(packet, ack, certificate_abi(cert), validator_set_abi(w.relay.vset), payees)


def fee_events(w: World, receipt: Any) -> list[tuple[str, int, str, int, str]]:
    """(event, step, account, amount, payee) of the FeePaid / FeeRefunded logs of a settlement, in log order."""
    out = []
    for name in ("FeePaid", "FeeRefunded"):
        for ev in w.a.bridge.events[name]().process_receipt(receipt, errors=DISCARD):
            out.append((ev["logIndex"], name, ev["args"]["step"], ev["args"]["account"], ev["args"]["amount"],
                        ev["args"].get("payee", "")))
    return [e[1:] for e in sorted(out)]


def settle_receipt(w: World, packet: bytes, ack: bytes, cert: Any) -> Any:
    """Settle on park A with the payees the certificate's record names (as the adapter does); the receipt."""
    return w.evm.transact(settle_fn(w, packet, ack, cert, certified_payees(cert.value).as_tuple()), w.relayer)


# --- phase 1 -------------------------------------------------------------------------------------------------


def test_fees_are_escrowed_with_the_packet_of_every_kind(world: World) -> None:
    w = world
    books = Books(w)
    w.evm.transact(w.a.token.functions.approve(w.a.bridge.address, 10**9), w.alice)
    before = ether(w, w.alice.address)
    packet, receipt = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", 1500, lower_hex(w.bob.address), timeout(w),
                                  approve=False, fees=FEES)
    books.sent(packet)
    assert ether(w, w.alice.address) == before - sum(FEES) - gas_cost(w, receipt)
    assert ether(w, w.a.bridge.address) == sum(FEES)
    assert escrowed_fees(w.a, packet) == FEES
    (ev,) = w.evm.events(w.a.bridge, "FeesEscrowed", receipt)
    assert (ev["payer"], ev["dstChain"], ev["laneId"], ev["sequence"], ev["verify"], ev["execute"], ev["confirm"]) == (
        w.alice.address, B, LANE, 1, *FEES)
    # the fees are not in the packet: it is the packet a plain send commits, sender and all
    p = decode_packet(packet)
    assert (p.sender, p.sequence) == (lower_hex(w.alice.address), 1)
    assert bytes(w.a.bridge.functions.commitmentOf(B, LANE, 1).call()) == sha256(packet)
    # without fees, or with all three zero and no value: no record, no event, as before
    plain, r1 = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", 10, lower_hex(w.bob.address), timeout(w))
    zero, r2 = send_energy(w.evm, w.a, w.alice, B, LANE, "kWh", 10, lower_hex(w.bob.address), timeout(w),
                           fees=(0, 0, 0))
    for pkt, r in ((plain, r1), (zero, r2)):
        books.sent(pkt)
        assert escrowed_fees(w.a, pkt) == (0, 0, 0)
        assert w.evm.events(w.a.bridge, "FeesEscrowed", r) == []
    # a charging right and a reputation attestation carry fees the same way
    registry(w)
    payload = issue(w, "r-fee")
    start = decode_packet(packet).timeout_timestamp_ms  # an hour from now; the slot starts in two
    right, _ = send_right(w.evm, w.a, w.alice, B, LANE, payload, lower_hex(w.bob.address), start, fees=(1, 2, 3))
    admit_and_record(w, w.alice.address, 1_000, 900)
    rep, _ = send_reputation(w.evm, w.a, w.alice, B, LANE, lower_hex(w.alice.address), lower_hex(w.bob.address),
                             timeout(w), fees=(0, 5, 0))
    assert (escrowed_fees(w.a, books.sent(right)), escrowed_fees(w.a, books.sent(rep))) == ((1, 2, 3), (0, 5, 0))
    assert ether(w, w.a.bridge.address) == sum(FEES) + 6 + 5
    books.conserved()


# --- phase 3: the ack names the relayer ----------------------------------------------------------------------


def test_a_named_ack_is_the_four_field_ack_and_its_receipt_pythons(world: World) -> None:
    w = world
    books = Books(w)
    ok = send(w, books)
    refused = send(w, books, receiver="not-an-address")
    plain = send(w, books, fees=None)
    for packet, status, code, name in ((ok, AckStatus.SUCCESS, "ok", RELAYER),
                                       (refused, AckStatus.ERROR, "receiver.invalid", "r.2_x-y"),
                                       (plain, AckStatus.SUCCESS, "ok", "")):
        ack, receipt = recv_packet(w.evm, w.b, w.relayer, packet, w.relay.verify(packet), w.relay.vset, name)
        expected = Acknowledgement(status, code, b"", name)
        assert decode_ack(ack) == expected
        p = decode_packet(packet)
        assert bytes(w.b.bridge.functions.receiptOf(p.src_chain, p.lane, p.sequence).call()) == \
            ack_commitment(expected)
        (ev,) = w.evm.events(w.b.bridge, "AckWritten", receipt)
        assert (ev["ackCode"], ev["relayer"]) == (code, name)
    # the codec view checks both forms as phase 4 does, and refuses a four-field ack with an empty or bad relayer
    view = w.evm.deploy("PacketCodecView", w.relayer)
    named_ack = encode_ack(Acknowledgement(AckStatus.SUCCESS, "ok", b"", RELAYER))
    assert view.functions.ackCommitment(named_ack).call() == [True, ack_commitment(decode_ack(named_ack))]
    for relayer in ("", "Relayer", "-x", "a" * 65, "a/b"):
        bad = abi_encode(["uint8", "string", "bytes", "string"], [1, "ok", b"", relayer])
        assert name_of(w.evm.revert_of(view.functions.ackCommitment(bad), w.relayer)) == "CodecInvalid", relayer
    books.conserved()


def test_recv_refuses_a_relayer_that_is_not_an_identifier(world: World) -> None:
    w = world
    books = Books(w)
    packet = send(w, books)
    cert = w.relay.verify(packet)

    def recv(relayer: str) -> Any:
        fn = w.b.bridge.functions.recvPacket(packet, certificate_abi(cert), validator_set_abi(w.relay.vset), relayer)
        return w.evm.revert_of(fn, w.relayer)

    for bad in ("Relayer", "-relayer", ".r", "a" * 65, "relayer 1", "r/1", "rélayer", "r\n"):
        assert recv(bad) == ("CodecInvalid",), bad
    p = decode_packet(packet)
    assert w.b.bridge.functions.receiptOf(p.src_chain, p.lane, p.sequence).call() == bytes(32)  # nothing written
    for good in ("", "0", "a" * 64, "a.b_c-d9"):
        assert recv(good) is None, good
    books.conserved()


# --- phase 4: settlement pays ------------------------------------------------------------------------------


def test_a_success_ack_pays_each_step_to_its_payee(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    packet = send(w, books)
    ack, _ = recv_packet(w.evm, w.b, w.relayer, packet, w.relay.verify(packet), w.relay.vset, RELAYER)
    books.conserved()
    payees = named(v, e, c)
    receipt = settle_receipt(w, packet, ack, w.relay.confirm_ack(packet, ack, payees=payees))
    assert fee_events(w, receipt) == [("FeePaid", 1, v.address, FEES[0], payees.verify),
                                      ("FeePaid", 2, e.address, FEES[1], payees.execute),
                                      ("FeePaid", 3, c.address, FEES[2], payees.confirm)]
    assert [owed_of(w.a, a.address) for a in (v, e, c, w.alice)] == [*FEES, 0]
    assert escrowed_fees(w.a, packet) == (0, 0, 0)  # the record is gone
    assert w.a.bridge.functions.escrowed(B, LANE, "kWh").call() == 1500  # a success keeps the energy escrowed
    books.conserved()


def test_an_error_ack_refunds_the_asset_and_still_pays_the_fees(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    packet = send(w, books, receiver="bob")  # not an account on B: an error ack
    ack = deliver(w, w.b, packet)
    assert ack == error_ack("receiver.invalid")
    assert balance(w.a.token, w.alice.address) == ALICE_WH - 1500
    receipt = settle_receipt(w, packet, ack, w.relay.confirm_ack(packet, ack, payees=named(v, e, c)))
    assert balance(w.a.token, w.alice.address) == ALICE_WH  # the asset refunded
    assert [name for name, *_ in fee_events(w, receipt)] == ["FeePaid"] * 3  # the relayers did the work
    assert [owed_of(w.a, a.address) for a in (v, e, c, w.alice)] == [*FEES, 0]
    books.conserved()


def test_a_timeout_refunds_the_execute_fee(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    now_s = w.evm.latest_timestamp()
    packet = send(w, books, timeout_ms=(now_s + 60) * 1000)
    w.relay.verify(packet)
    w.evm.mine_at(now_s + 61)
    cert = w.relay.confirm_timeout(packet, payees=FeePayees(lower_hex(v.address), "", lower_hex(c.address)))
    receipt = settle_receipt(w, packet, b"", cert)
    assert fee_events(w, receipt) == [("FeePaid", 1, v.address, FEES[0], lower_hex(v.address)),
                                      ("FeeRefunded", 2, w.alice.address, FEES[1], ""),
                                      ("FeePaid", 3, c.address, FEES[2], lower_hex(c.address))]
    assert [owed_of(w.a, a.address) for a in (v, e, c, w.alice)] == [FEES[0], 0, FEES[2], FEES[1]]
    assert balance(w.a.token, w.alice.address) == ALICE_WH
    books.conserved()


def test_a_timeout_never_pays_an_execute_payee_even_if_certified(world: World) -> None:
    """A record naming an execute payee on a timeout is not canonical (the relay never writes one); should a relay
    certify one anyway, the execute fee still goes back to the payer (nobody executed the packet)."""
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    packet = send(w, books)
    p = decode_packet(packet)
    record = abi_encode(["uint8", "bytes32", "bytes32", "string", "string", "string"],
                        [2, sha256(packet), bytes(32), lower_hex(v.address), lower_hex(e.address),
                         lower_hex(c.address)])
    from protocol.paths import outcome_path

    cert = w.relay.certificate(outcome_path(p.src_chain, p.dst_chain, p.lane, p.sequence), record, check=False)
    receipt = w.evm.transact(settle_fn(w, packet, b"", cert, (lower_hex(v.address), lower_hex(e.address),
                                                                 lower_hex(c.address))), w.relayer)
    assert [(name, step) for name, step, *_ in fee_events(w, receipt)] == [("FeePaid", 1), ("FeeRefunded", 2),
                                                                           ("FeePaid", 3)]
    assert owed_of(w.a, e.address) == 0 and owed_of(w.a, w.alice.address) == FEES[1]
    books.conserved()


def test_an_unverified_timeout_pays_only_its_confirmer(world: World) -> None:
    w = world
    books = Books(w)
    _, _, c = payee_set(w)
    books.payees(c)
    packet = send(w, books)
    receipt = settle_receipt(w, packet, b"", w.relay.confirm_timeout(packet, payees=FeePayees("", "", c.address)))
    assert fee_events(w, receipt) == [("FeeRefunded", 1, w.alice.address, FEES[0], ""),
                                      ("FeeRefunded", 2, w.alice.address, FEES[1], ""),
                                      ("FeePaid", 3, c.address, FEES[2], c.address)]
    assert owed_of(w.a, w.alice.address) == FEES[0] + FEES[1]
    books.conserved()


NOT_ADDRESSES = [
    RELAYER,                                 # a relay account name: not an account of this park
    "0x" + "ab" * 19,                        # 38 digits
    "0x" + "ab" * 21,                        # 42 digits
    "0X" + "ab" * 20,                        # upper-case prefix
    "0x" + "ag" * 20,                        # not hex
    " 0x" + "ab" * 20,                       # a space before
    "0x" + "00" * 20,                        # the zero address: nobody could withdraw it
    "0x" + "a@" * 20,                        # '@' is 0x40: case folding must not make it a digit
]


@pytest.mark.parametrize("payee", NOT_ADDRESSES)
def test_a_fee_to_anything_but_an_address_goes_back_to_the_payer(world: World, payee: str) -> None:
    w = world
    books = Books(w)
    _, e, c = payee_set(w)
    books.payees(e, c)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    receipt = settle_receipt(w, packet, ack, w.relay.confirm_ack(packet, ack, payees=FeePayees(
        payee, e.address, c.address)))
    assert fee_events(w, receipt)[0] == ("FeeRefunded", 1, w.alice.address, FEES[0], "")
    assert [owed_of(w.a, a.address) for a in (w.alice, e, c)] == list(FEES)
    books.conserved()


def test_no_payees_refund_every_fee_and_a_packet_without_fees_pays_nothing(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    receipt = settle_receipt(w, packet, ack, w.relay.confirm_ack(packet, ack))  # the three-field record
    assert [name for name, *_ in fee_events(w, receipt)] == ["FeeRefunded"] * 3
    assert owed_of(w.a, w.alice.address) == sum(FEES)
    plain = send(w, books, fees=None)
    ack = deliver(w, w.b, plain)
    receipt = settle_receipt(w, plain, ack, w.relay.confirm_ack(plain, ack, payees=named(v, e, c)))
    assert fee_events(w, receipt) == []
    assert [owed_of(w.a, a.address) for a in (v, e, c)] == [0, 0, 0]
    books.conserved()


def test_forged_payees_fail_the_certificate_and_change_nothing(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    thief = w.evm.account(0)
    books.payees(v, e, c, thief)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    payees = named(v, e, c)
    cert = w.relay.confirm_ack(packet, ack, payees=payees)
    forged = [(lower_hex(thief.address), payees.execute, payees.confirm),   # a step redirected
              (payees.verify, payees.confirm, payees.execute),               # two steps swapped
              NO_PAYEES_ARG,                                                 # the three-field record
              (payees.verify, payees.execute, payees.confirm.lower()),       # another spelling of the same account
              (payees.verify, payees.execute, payees.confirm + " ")]
    state = (ether(w, w.a.bridge.address), escrowed_fees(w.a, packet),
             w.a.bridge.functions.commitmentOf(B, LANE, 1).call())
    for f in forged:
        assert w.evm.revert_of(settle_fn(w, packet, ack, cert, f), w.relayer) == ("ProofInvalid",), f
    # a forged record needs the relay's quorum: certified by a minority, it is refused as any certificate
    minority = w.relay.confirm_ack(packet, ack, signers=[0, 1], check=False,
                                   payees=FeePayees(thief.address, thief.address, thief.address))
    assert name_of(w.evm.revert_of(settle_fn(w, packet, ack, minority, (thief.address,) * 3), w.relayer)) == (
        "QuorumNotReached")
    assert (ether(w, w.a.bridge.address), escrowed_fees(w.a, packet),
            w.a.bridge.functions.commitmentOf(B, LANE, 1).call()) == state
    books.conserved()
    w.evm.transact(settle_fn(w, packet, ack, cert, payees.as_tuple()), w.relayer)
    assert [owed_of(w.a, a.address) for a in (v, e, c, thief)] == [*FEES, 0]
    # settled once: again is a replay, and pays nothing twice
    assert w.evm.revert_of(settle_fn(w, packet, ack, cert, payees.as_tuple()), w.relayer) == ("PacketReplay", 0, 1)
    books.conserved()


def test_settle_refuses_payees_the_codec_refuses(world: World) -> None:
    w = world
    books = Books(w)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    cert = w.relay.confirm_ack(packet, ack, payees=FeePayees("a" * 256, "", ""))
    assert w.evm.revert_of(settle_fn(w, packet, ack, cert, ("a" * 257, "", "")), w.relayer) == ("CodecInvalid",)
    # not UTF-8: the ABI string is bytes on the wire, so encode the call by hand
    fn = settle_fn(w, packet, ack, cert, ("a" * 256, "", ""))
    types = ["bytes", "bytes", *[_abi_type(i) for i in _settle_inputs(w)[2:4]], "(bytes,bytes,bytes)"]
    args = [packet, ack, certificate_abi(cert), validator_set_abi(w.relay.vset), (b"\xff\xfe", b"", b"")]
    data = bytes.fromhex(fn._encode_transaction_data()[2:10]) + abi_encode(types, args)
    assert w.evm.revert_of_data(w.a.bridge.address, data, w.relayer) == ("CodecInvalid",)
    assert w.evm.revert_of(fn, w.relayer) is None  # the certified 256-byte payee is fine
    books.conserved()


def _settle_inputs(w: World) -> list[dict[str, Any]]:
    abi: list[dict[str, Any]] = list(w.a.bridge.abi)  # type: ignore[arg-type]
    (item,) = [i for i in abi if i.get("name") == "settle"]
    return list(item["inputs"])


def _abi_type(item: dict[str, Any]) -> str:
    t = str(item["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + t[len("tuple"):]
    return t


# --- withdrawals ---------------------------------------------------------------------------------------------


def _forwarder_initcode() -> bytes:
    """A contract that refuses ether (any call without data reverts) and otherwise calls the address in the first 20
    bytes of its calldata with the rest, returning or reverting with what that returns."""
    runtime = bytes.fromhex(
        "36" "6008" "57" "6000" "80" "fd"                  # no calldata (a plain transfer): revert
        "5b" "6014" "36" "03" "6014" "6000" "37"           # calldatacopy(0, 20, calldatasize - 20)
        "6000" "6000" "6014" "36" "03" "6000" "6000"       # call(gas, target, 0, 0, size - 20, 0, 0)
        "6000" "35" "6060" "1c" "5a" "f1"
        "3d" "6000" "6000" "3e"                            # returndatacopy(0, 0, returndatasize)
        "6033" "57" "3d" "6000" "fd"                       # failed: revert with it
        "5b" "3d" "6000" "f3")                             # else return it
    assert len(runtime) == 56
    return bytes.fromhex("6038" "80" "600b" "6000" "39" "6000" "f3") + runtime


def deploy_forwarder(w: World, owner: LocalAccount) -> str:
    w3 = w.evm.w3
    tx: dict[str, Any] = {"type": 2, "chainId": w3.eth.chain_id, "nonce": w3.eth.get_transaction_count(owner.address),
                          "gas": 200_000, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "value": 0,
                          "data": "0x" + _forwarder_initcode().hex()}
    rc = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction))
    assert rc["status"] == 1
    return str(rc["contractAddress"])


def test_withdraw_fees_sends_the_credit_once(world: World) -> None:
    w = world
    books = Books(w)
    v, e, c = payee_set(w)
    books.payees(v, e, c)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    settle(w.evm, w.a, w.relayer, packet, ack, w.relay.confirm_ack(packet, ack, payees=named(v, e, c)), w.relay.vset)
    w.evm.rpc("anvil_setBalance", [e.address, hex(10**18)])  # gas money
    before = ether(w, e.address)
    receipt = w.evm.transact(w.a.bridge.functions.withdrawFees(), e)
    (ev,) = w.evm.events(w.a.bridge, "FeesWithdrawn", receipt)
    assert (ev["account"], ev["amount"]) == (e.address, FEES[1])
    assert ether(w, e.address) == before + FEES[1] - gas_cost(w, receipt)
    assert owed_of(w.a, e.address) == 0
    assert ether(w, w.a.bridge.address) == FEES[0] + FEES[2]
    books.conserved()
    # nothing owed (any more): a typed refusal, nothing sent
    assert w.evm.revert_of(w.a.bridge.functions.withdrawFees(), e) == ("InsufficientFunds", 0, 1)
    assert w.evm.revert_of(w.a.bridge.functions.withdrawFees(), w.carol) == ("InsufficientFunds", 0, 1)
    books.conserved()


def test_a_payee_refusing_ether_blocks_no_settlement_and_keeps_its_credit(world: World) -> None:
    w = world
    books = Books(w)
    v, e, _ = payee_set(w)
    forwarder = deploy_forwarder(w, w.carol)
    books.payees(v, e)
    books.accounts.add(forwarder)
    packet = send(w, books)
    ack = deliver(w, w.b, packet)
    settle(w.evm, w.a, w.relayer, packet, ack, w.relay.confirm_ack(
        packet, ack, payees=FeePayees(v.address, e.address, forwarder)), w.relay.vset)
    assert owed_of(w.a, forwarder) == FEES[2]  # credited: the settlement did not send it anything
    data = bytes.fromhex(w.a.bridge.address[2:]) + function_signature_to_4byte_selector("withdrawFees()")
    assert w.evm.revert_of_data(forwarder, data, w.carol) == ("ReceiverRefused", forwarder.lower())
    # the forwarder itself works: through it, a view of the bridge answers
    owed_call = w.a.bridge.functions.feesOwed(forwarder)._encode_transaction_data()
    call = {"to": forwarder, "data": "0x" + w.a.bridge.address[2:] + owed_call[2:]}
    resp = w.evm.w3.provider.make_request("eth_call", [call, "latest"])  # type: ignore[arg-type]
    assert int(resp["result"], 16) == FEES[2]
    assert owed_of(w.a, forwarder) == FEES[2]
    books.conserved()


# --- hostile input -------------------------------------------------------------------------------------------


def test_hostile_fee_arguments_are_typed_errors(world: World) -> None:
    w = world
    books = Books(w)
    bridge = w.a.bridge
    w.evm.transact(w.a.token.functions.approve(bridge.address, 10**9), w.alice)
    bob, t = lower_hex(w.bob.address), timeout(w)

    def attempt(fees: tuple[int, int, int], value: int) -> Any:
        return w.evm.revert_of(bridge.functions.sendEnergyWithFees(B, LANE, "kWh", 10, bob, t, fees), w.alice, value)

    assert attempt(FEES, sum(FEES) - 1) == ("InsufficientFunds", sum(FEES) - 1, sum(FEES))
    assert attempt(FEES, 0) == ("InsufficientFunds", 0, sum(FEES))
    assert attempt(FEES, sum(FEES) + 1) == ("CodecInvalid",)
    assert attempt((0, 0, 0), 1) == ("CodecInvalid",)
    assert attempt((UINT64_MAX + 1, 0, 0), UINT64_MAX + 1) == ("CodecInvalid",)
    assert attempt((2**256 - 1,) * 3, 0) == ("CodecInvalid",)  # no overflow panic: refused before any sum
    assert attempt((UINT64_MAX, UINT64_MAX, UINT64_MAX), 3 * UINT64_MAX) is None  # the bounds themselves are fine
    assert attempt(FEES, sum(FEES)) is None
    # a send without fees takes no value (not payable: the compiler's check, no data)
    assert w.evm.revert_of(bridge.functions.sendEnergy(B, LANE, "kWh", 10, bob, t), w.alice, 1) == ("<no data>",)
    # the right and reputation forms check the fees the same way, before anything else of the send
    assert w.evm.revert_of(bridge.functions.sendReputationWithFees(B, LANE, bob, bob, t, FEES), w.alice, 1) == (
        "InsufficientFunds", 1, sum(FEES))
    assert w.evm.revert_of(bridge.functions.sendRightWithFees(B, LANE, b"", bob, t, (UINT64_MAX + 1, 0, 0)),
                           w.alice, UINT64_MAX + 1) == ("CodecInvalid",)
    assert w.evm.revert_of(bridge.functions.sendRightWithFees(B, LANE, b"", bob, t, (0, 0, 1)), w.alice, 2) == (
        "CodecInvalid",)
    # the phase-1 module runs only as the bridge
    module = w.evm.at("ParkSender", bridge.functions.sendModule().call())
    assert name_of(w.evm.revert_of(module.functions.sendEnergyWithFees(B, LANE, "kWh", 10, bob, t, FEES), w.alice,
                                   sum(FEES))) == "Unauthorized"
    assert bridge.functions.nextSequenceSend(B, LANE).call() == 1  # nothing was sent
    books.conserved()


def test_outcome_record_with_payees_is_pythons(world: World) -> None:
    """The record the bridge asks the certificate to prove, rebuilt from the payees, is ``encode_outcome``'s."""
    w = world
    view = w.evm.deploy("PacketCodecView", w.relayer)
    pc, ac = sha256(b"p"), sha256(b"a")
    for outcome, ack_c, payees in ((1, ac, NO_PAYEES), (1, ac, FeePayees("v", "", "")),
                                   (1, ac, FeePayees("0xAb", "é", "c" * 256)), (2, bytes(32), FeePayees("", "", "c"))):
        got = bytes(view.functions.outcomeRecordWithPayees(outcome, pc, ack_c, *payees.as_tuple()).call())
        assert got == encode_outcome(PacketOutcome(outcome), pc, ack_c, payees)


# --- the adapter ---------------------------------------------------------------------------------------------


async def test_the_adapter_sends_fees_names_the_relayer_settles_and_reports(world: World) -> None:
    w = world
    books = Books(w)
    url = w.evm.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    v, e, c = payee_set(w)
    for acct in (v, e, c):
        w.evm.rpc("anvil_setBalance", [acct.address, hex(10**18)])
    books.payees(v, e, c)
    provider = lambda h: w.relay.vset  # noqa: E731
    alice = eth.target(url, w.a.chain_id, w.a.bridge.address, w.alice.key, provider)
    relayer_a = eth.target(url, w.a.chain_id, w.a.bridge.address, w.relayer.key, provider)
    relayer_b = eth.target(url, w.b.chain_id, w.b.bridge.address, w.relayer.key, provider)
    src_a = eth.source(url, w.a.chain_id, w.a.bridge.address)
    src_b = eth.source(url, w.b.chain_id, w.b.bridge.address)
    payee_e = eth.target(url, w.a.chain_id, w.a.bridge.address, e.key, provider)
    try:
        start = await src_a.latest_height() + 1
        fees = {"verify": FEES[0], "execute": FEES[1], "confirm": FEES[2]}
        sent = await eth.send_energy(alice, B, LANE, "kWh", 1500, lower_hex(w.bob.address), timeout(w), fees=fees)
        plain = await eth.send_energy(alice, B, LANE, "kWh", 10, lower_hex(w.bob.address), timeout(w))
        books.sent(sent.raw)
        books.sent(plain.raw)
        assert await eth.fees_escrowed(alice, B, LANE, sent.sequence) == fees
        assert await eth.fees_escrowed(alice, B, LANE, plain.sequence) is None
        with pytest.raises(CodecError):
            await eth.send_energy(alice, B, LANE, "kWh", 10, lower_hex(w.bob.address), timeout(w),
                                  fees={"verify": -1})
        # phase 3 names the relayer; the write_ack event carries the four-field ack
        cert = w.relay.verify(sent.raw)
        args = {"packet": sent.raw.hex(), "certificate": wire.certificate_to_json(cert)}
        with pytest.raises(CodecError):
            await relayer_b.calldata("bridge.recv", {**args, "relayer": "Not-An-Id"})
        done = await relayer_b.track(await relayer_b.submit("bridge.recv", {**args, "relayer": RELAYER}), 30)
        (ack_ev,) = await src_b.events(done["height"], done["height"], "write_ack")
        ack = decode_ack(bytes.fromhex(ack_ev["ack"]))
        assert ack == Acknowledgement(AckStatus.SUCCESS, "ok", b"", RELAYER)
        assert ack_ev["ack_commitment"] == ack_commitment(ack).hex()
        # phase 4 takes the payees from the certificate's record
        payees = named(v, e, c)
        out = w.relay.confirm_ack(sent.raw, encode_ack(ack), payees=payees)
        settle_args = {"packet": sent.raw.hex(), "ack": encode_ack(ack).hex(),
                       "certificate": wire.certificate_to_json(out)}
        settled = await relayer_a.track(await relayer_a.submit("bridge.settle", settle_args), 30)
        events = await src_a.events(start, settled["height"])
        (sp, sp_plain) = [ev for ev in events if ev["type"] == "send_packet"]
        assert sp["fees"] == {**fees, "denom": FEE_DENOM} and "fees" not in sp_plain
        assert [ev["fees"] for ev in await src_a.events(start, settled["height"], "send_packet") if "fees" in ev] == [
            {**fees, "denom": FEE_DENOM}]
        keys = ("type", "src", "dst", "lane", "sequence", "step", "payee", "amount", "denom")
        paid = [{k: ev[k] for k in keys} for ev in events if ev["type"] == "fee_paid"]
        ids = {"src": w.a.chain_id, "dst": B, "lane": LANE, "sequence": sent.sequence, "denom": "wei"}
        assert paid == [{"type": "fee_paid", **ids, "step": step, "payee": payee, "amount": amount}
                        for step, payee, amount in zip(("verify", "execute", "confirm"), payees.as_tuple(), FEES,
                                                       strict=True)]
        assert all(ev["height"] == settled["height"] for ev in events if ev["type"] == "fee_paid")
        assert [await eth.fees_owed(alice, a.address) for a in (v, e, c)] == list(FEES)
        books.conserved()
        # a timeout of the plain packet pays nothing; one with fees refunds its execute fee to the payer
        late = await eth.send_energy(alice, B, LANE, "kWh", 10, lower_hex(w.bob.address), timeout(w),
                                     fees={"execute": 7})
        books.sent(late.raw)
        t_out = w.relay.confirm_timeout(late.raw, payees=FeePayees("", "", lower_hex(c.address)))
        done = await relayer_a.track(await relayer_a.submit("bridge.settle", {
            "packet": late.raw.hex(), "certificate": wire.certificate_to_json(t_out)}), 30)
        (refund,) = await src_a.events(done["height"], done["height"], "fee_refunded")
        assert {k: refund[k] for k in ("type", "src", "dst", "lane", "sequence", "step", "to", "amount", "denom")} == {
            "type": "fee_refunded", **{**ids, "sequence": late.sequence}, "step": "execute",
            "to": lower_hex(w.alice.address), "amount": 7}
        books.conserved()
        # withdrawing
        got = await eth.withdraw_fees(payee_e)
        assert got["amount"] == FEES[1] and await eth.fees_owed(payee_e) == 0
        with pytest.raises(InsufficientFundsError):
            await eth.withdraw_fees(payee_e)
        books.conserved()
    finally:
        for x in (alice, relayer_a, relayer_b, payee_e, src_a, src_b):
            await x.close()


def test_the_storage_layout_keeps_the_proven_slots(world: World) -> None:
    """The fee bookkeeping lives in its ERC-7201 namespace: commitments stay at slot 0, receipts at slot 1 (SPEC
    §E2.1), and a fee record is where ``parkrelay.fees.v1`` puts it."""
    w = world
    books = Books(w)
    packet = send(w, books)
    p = decode_packet(packet)
    key = keccak(abi_encode(["string", "string", "uint64"], [p.dst_chain, p.lane, p.sequence]))
    assert w.evm.storage(w.a.bridge.address, keccak(key + (0).to_bytes(32, "big"))) == sha256(packet)
    namespace = int.from_bytes(keccak(text="parkrelay.fees.v1"), "big") - 1
    base = int.from_bytes(keccak(abi_encode(["uint256"], [namespace])), "big") & ~0xFF
    word = w.evm.storage(w.a.bridge.address, keccak(key + base.to_bytes(32, "big")))
    assert int.from_bytes(word, "big") == FEES[0] | FEES[1] << 64 | FEES[2] << 128
    books.conserved()
