"""Charging rights and reputation on the Ethereum park, for the CLI, the demo and tests (chains/ethereum/SPEC.md
§E2.6, §E2.7).

Phase 1 from an account, as :func:`adapters.ethereum.target.send_energy` does for energy:

* :func:`send_right` — ``sendRight`` of a right the account holds, by its id: the payload the bridge checks is the
  one the park recorded (read back from its ``RightCreated`` log);
* :func:`send_reputation` — ``sendReputation``: the bridge attests what the park's delivery record scores.

Queries, from the chain alone: :func:`right_show` (one right by id, with its fields, state and holder),
:func:`rights_list` (every right the park has seen, optionally one holder's), :func:`transformer_show`,
:func:`imported_reputation`. The park operator's writes: :func:`issue_right`, :func:`set_transformer`,
:func:`set_station` (the contracts refuse anyone else: :class:`~protocol.errors.AuthorizationError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.common.roles import SentPacket
from adapters.ethereum.abi import EVENTS, decode_event, decode_result, encode_call
from adapters.ethereum.rpc import hex_int, to_bytes
from adapters.ethereum.target import EthTarget, fee_args
from protocol.codec import decode_charging_right, decode_packet
from protocol.errors import CodecError

__all__ = [
    "RIGHT_STATES",
    "RightInfo",
    "imported_reputation",
    "issue_right",
    "record_delivery",
    "registry_names",
    "right_show",
    "right_token_id",
    "rights_address",
    "rights_list",
    "send_reputation",
    "send_right",
    "set_station",
    "set_transformer",
    "transformer_show",
]

RIGHT_STATES = {0: "none", 1: "live", 2: "escrowed", 3: "burning"}
"""``ChargingRights.rightOf`` states: live here, escrowed here (live further along its trace, or in flight), or a
voucher burned on its way home until its packet settles."""

_LOG_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class RightInfo:
    """A charging right as one Ethereum park holds it."""

    right_id: str
    """Its id here (a voucher's carries its trace: ``{lane}/{chain}/…``, newest hop first)."""
    token_id: int
    """ERC-721 token id: ``uint256(keccak256(right_id))``."""
    state: str
    """``live``, ``escrowed``, ``burning`` or ``none`` (gone from this park: went home)."""
    owner: str
    """Holder (lowercase ``0x`` hex); the rights contract itself while escrowed; zero otherwise."""
    home_park: str
    station: str
    transformer: str
    power_kw: int
    slot_start_ms: int
    slot_end_ms: int
    payload: bytes
    """The canonical payload (protocol §2.3) the park recorded: what ``sendRight`` takes back."""

    def to_json(self) -> dict[str, Any]:
        return {"right_id": self.right_id, "token_id": hex(self.token_id), "state": self.state, "owner": self.owner,
                "home_park": self.home_park, "station": self.station, "transformer": self.transformer,
                "power_kw": self.power_kw, "slot_start_ms": self.slot_start_ms, "slot_end_ms": self.slot_end_ms}


def right_token_id(right_id: str) -> int:
    """The ERC-721 token id of a right id on an Ethereum park."""
    return int.from_bytes(keccak(text=right_id), "big")


async def _view(target: EthTarget, to: str, name: str, args: list[Any]) -> tuple[Any, ...]:
    return decode_result(name, await target.call(to, encode_call(name, args)))


async def rights_address(target: EthTarget) -> str:
    """The park's ``ChargingRights`` (the bridge's ``rightsApp``)."""
    (addr,) = await _view(target, target.bridge, "rightsApp", [])
    return to_checksum_address(addr)


async def _reputation_address(target: EthTarget) -> str:
    (addr,) = await _view(target, target.bridge, "reputationApp", [])
    return to_checksum_address(addr)


async def _right_created_logs(target: EthTarget, rights: str, token_id: int | None = None) -> list[dict[str, Any]]:
    """``RightCreated`` logs of ``rights`` (one token's, or all), oldest first."""
    topics: list[Any] = ["0x" + EVENTS["RightCreated"].topic.hex()]
    if token_id is not None:
        topics.append("0x" + token_id.to_bytes(32, "big").hex())
    return await _logs(target, rights, topics)


async def registry_names(target: EthTarget) -> dict[str, Any]:
    """``{"transformers": [name, ...], "stations": {name: transformer}}`` as the registry's ``TransformerSet`` and
    ``StationSet`` logs last set them (the contract keys its registry by hash: the names live in the logs)."""
    rights = await rights_address(target)
    transformers: dict[str, None] = {}
    for entry in await _logs(target, rights, ["0x" + EVENTS["TransformerSet"].topic.hex()]):
        transformers[str(decode_event(EVENTS["TransformerSet"], to_bytes(entry["data"]))["name"])] = None
    stations: dict[str, str] = {}
    for entry in await _logs(target, rights, ["0x" + EVENTS["StationSet"].topic.hex()]):
        f = decode_event(EVENTS["StationSet"], to_bytes(entry["data"]))
        stations[str(f["name"])] = str(f["transformer"])
    return {"transformers": list(transformers), "stations": stations}


async def _logs(target: EthTarget, address: str, topics: list[Any]) -> list[dict[str, Any]]:
    """Every log of ``address`` matching ``topics``, oldest first, read in chunks of blocks."""
    head = hex_int(await target.rpc.call("eth_blockNumber", []))
    out: list[dict[str, Any]] = []
    for lo in range(0, head + 1, _LOG_CHUNK):
        hi = min(head, lo + _LOG_CHUNK - 1)
        batch = await target.rpc.call("eth_getLogs", [{"fromBlock": hex(lo), "toBlock": hex(hi), "address": address,
                                                       "topics": topics}])
        out.extend(x for x in batch or [] if not x.get("removed"))
    out.sort(key=lambda x: (hex_int(x["blockNumber"]), hex_int(x["logIndex"])))
    return out


async def _info(target: EthTarget, rights: str, payload: bytes) -> RightInfo:
    c = decode_charging_right(payload)
    token_id = right_token_id(c.right_id)
    state, owner, _, _ = await _view(target, rights, "rightOf", [token_id])
    return RightInfo(c.right_id, token_id, RIGHT_STATES.get(int(state), str(state)), str(owner).lower(), c.home_park,
                     c.station, c.transformer, c.power_kw, c.slot_start_ms, c.slot_end_ms, payload)


async def right_show(target: EthTarget, right_id: str) -> RightInfo | None:
    """The right ``right_id`` as this park holds it (None if the park never held it)."""
    rights = await rights_address(target)
    logs = await _right_created_logs(target, rights, right_token_id(right_id))
    if not logs:
        return None
    payload = bytes(decode_event(EVENTS["RightCreated"], to_bytes(logs[-1]["data"]))["payload"])
    return await _info(target, rights, payload)


async def rights_list(target: EthTarget, owner: str | None = None, *, include_gone: bool = False) -> list[RightInfo]:
    """Every right this park has held, in the order it first appeared, with its current state; only ``owner``'s
    (``0x`` hex) if given; rights no longer here (state ``none``) only with ``include_gone``."""
    rights = await rights_address(target)
    latest: dict[bytes, bytes] = {}
    for entry in await _right_created_logs(target, rights):
        latest[to_bytes(entry["topics"][1])] = bytes(decode_event(EVENTS["RightCreated"],
                                                                  to_bytes(entry["data"]))["payload"])
    out = [await _info(target, rights, p) for p in latest.values()]
    if owner is not None:
        out = [r for r in out if r.owner == owner.lower()]
    return [r for r in out if include_gone or r.state != "none"]


async def _sent(target: EthTarget, tx_hash: str, what: str, timeout_s: float) -> SentPacket:
    rc = await target.wait_receipt(tx_hash, timeout_s, depth=0)
    if hex_int(rc["status"]) != 1:
        raise await target.revert_error(tx_hash, rc)
    topic = EVENTS["PacketSent"].topic
    for entry in rc.get("logs", []):
        if (entry.get("address", "").lower() == target.bridge.lower() and entry.get("topics")
                and to_bytes(entry["topics"][0]) == topic):
            raw = bytes(decode_event(EVENTS["PacketSent"], to_bytes(entry["data"]))["packet"])
            pkt = decode_packet(raw)
            return SentPacket(pkt, raw, pkt.sequence, hex_int(rc["blockNumber"]), tx_hash)
    raise CodecError(f"{target.chain_id}: {what} tx {tx_hash} emitted no PacketSent")


async def _send(target: EthTarget, fn: str, args: list[Any], fees: Mapping[str, int] | None) -> str:
    """Send ``fn`` (``sendRight``, ``sendReputation``) with ``args``, or its ``…WithFees`` form paying ``fees`` (wei,
    protocol SPEC §6.10) as the call's value; returns the transaction hash."""
    parsed, fee_struct = fee_args(fees)
    if parsed:
        return await target.transact(target.bridge, encode_call(f"{fn}WithFees", [*args, fee_struct]),
                                     value=parsed.total)
    return await target.transact(target.bridge, encode_call(fn, args))


async def send_right(target: EthTarget, dst_chain: str, lane: str, right_id: str, receiver: str,
                     timeout_timestamp_ms: int, *, timeout_s: float = 60.0,
                     fees: Mapping[str, int] | None = None) -> SentPacket:
    """Phase 1 of the right ``right_id`` held by ``target``'s account: its recorded payload goes to ``sendRight``
    (escrowed, or burned if it goes home along its trace); returns the packet from the ``PacketSent`` log. The
    timeout must not be after the slot start (:class:`~protocol.errors.TimeoutExpiredError`). ``fees``
    ``{verify?, execute?, confirm?}`` (wei) pays the relayers, as :func:`~adapters.ethereum.target.send_energy`."""
    info = await right_show(target, right_id)
    if info is None:
        raise CodecError(f"{target.chain_id} holds no right {right_id!r}", got=right_id)
    h = await _send(target, "sendRight", [dst_chain, lane, info.payload, receiver, timeout_timestamp_ms], fees)
    return await _sent(target, h, "sendRight", timeout_s)


async def send_reputation(target: EthTarget, dst_chain: str, lane: str, subject: str, receiver: str,
                          timeout_timestamp_ms: int, *, timeout_s: float = 60.0,
                          fees: Mapping[str, int] | None = None) -> SentPacket:
    """Phase 1: attest to ``dst_chain`` what the park's delivery record scores ``subject`` (a ``0x`` account) now;
    returns the packet (its payload holds the score the bridge read, never one the caller chose). ``fees``
    ``{verify?, execute?, confirm?}`` (wei) pays the relayers, as :func:`~adapters.ethereum.target.send_energy`."""
    h = await _send(target, "sendReputation", [dst_chain, lane, subject, receiver, timeout_timestamp_ms], fees)
    return await _sent(target, h, "sendReputation", timeout_s)


async def imported_reputation(target: EthTarget, src_chain: str, subject: str, model: str) -> dict[str, Any] | None:
    """``{score, source_height, recorded_at}`` imported from ``src_chain`` for (``subject``, ``model``), or None."""
    score, source_height, recorded_at, exists = await _view(target, await _reputation_address(target),
                                                            "importedReputation", [src_chain, subject, model])
    if not exists:
        return None
    return {"src_chain": src_chain, "subject": subject, "model": model, "score": int(score),
            "source_height": int(source_height), "recorded_at": int(recorded_at)}


async def record_delivery(target: EthTarget, participant: str, contracted_wh: int, delivered_wh: int, *,
                          timeout_s: float = 60.0) -> dict[str, Any]:
    """The park operator records a settled delivery of ``participant`` (``0x`` account) in the park's
    ``DeliveryRecord`` (docs/research.md#seed-001: delivered over contracted energy is the score the park attests),
    admitting the participant first if it is not yet."""
    record = await _delivery_record_address(target)
    who = to_checksum_address(participant)
    admitted, _, _ = await _view(target, record, "participantOf", [who])
    out: dict[str, Any] = {}
    if not admitted:
        out["admitted"] = await _operator_tx_to(target, record, "admit", [who], timeout_s)
    out["recorded"] = await _operator_tx_to(target, record, "record", [who, contracted_wh, delivered_wh], timeout_s)
    return out


async def _delivery_record_address(target: EthTarget) -> str:
    (addr,) = await _view(target, await _reputation_address(target), "deliveryRecord", [])
    return to_checksum_address(addr)


async def transformer_show(target: EthTarget, name: str) -> dict[str, Any] | None:
    """``{name, capacity_kw, bookings}`` of a registered transformer (None if not registered)."""
    exists, capacity, bookings = await _view(target, await rights_address(target), "transformerOf", [name])
    if not exists:
        return None
    return {"name": name, "capacity_kw": int(capacity), "bookings": int(bookings)}


async def _operator_tx(target: EthTarget, name: str, args: list[Any], timeout_s: float) -> dict[str, Any]:
    return await _operator_tx_to(target, await rights_address(target), name, args, timeout_s)


async def _operator_tx_to(target: EthTarget, to: str, name: str, args: list[Any], timeout_s: float) -> dict[str, Any]:
    h = await target.transact(to, encode_call(name, args))
    rc = await target.wait_receipt(h, timeout_s, depth=0)
    if hex_int(rc["status"]) != 1:
        raise await target.revert_error(h, rc)
    return {"tx_hash": h, "height": hex_int(rc["blockNumber"])}


async def set_transformer(target: EthTarget, name: str, capacity_kw: int, *, timeout_s: float = 60.0
                          ) -> dict[str, Any]:
    """The park operator sets a transformer's capacity (kW)."""
    return await _operator_tx(target, "setTransformer", [name, capacity_kw], timeout_s)


async def set_station(target: EthTarget, name: str, transformer: str, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """The park operator registers a station behind a transformer."""
    return await _operator_tx(target, "setStation", [name, transformer], timeout_s)


async def issue_right(target: EthTarget, right_id: str, owner: str, station: str, transformer: str, power_kw: int,
                      slot_start_ms: int, slot_end_ms: int, *, timeout_s: float = 60.0) -> RightInfo:
    """The park operator issues a home right to ``owner`` (admitted and booked by the park's registry; a refusal
    is a :class:`~adapters.ethereum.errors.RightError` whose ``rule`` is the admission code)."""
    await _operator_tx(target, "issue", [right_id, station, transformer, power_kw, slot_start_ms, slot_end_ms,
                                         to_checksum_address(owner)], timeout_s)
    info = await right_show(target, right_id)
    if info is None:  # the transaction succeeded: its log is there
        raise CodecError(f"{target.chain_id}: right {right_id!r} issued but no RightCreated log found")
    return info
