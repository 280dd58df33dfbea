"""Lane capacities as parks learn them from the relay (SPEC.md §6.3 step 1, §6.7, §6.8).

The relay refuses for good a packet that needs more tokens than its lane's bucket can hold; phase 1
refuses it before anything is escrowed. Both sides apply the same rule, here:

* a packet's *asset* and *tokens* (§6.7): the energy denom and ``amount_wh``, or the kind name
  (``charging_right``, ``reputation``) and 1 packet;
* the *capacity* for an asset: its own entry, else the default ``*``, else none (not limited);
* the lane-config record ``relay/lane_config/{src}/{dst}/{lane}`` =
  ``abi.encode(string[] assets, uint64[] capacities)``, assets strictly ascending by UTF-8 bytes, which
  the relay writes and certifies and the parks decode (strictly, §3.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

from protocol import abi
from protocol.codec import MAX_STRING, decode_energy
from protocol.errors import CodecError, OverCapacityError
from protocol.types import Packet, PacketKind, check_uint

__all__ = [
    "ASSET_ANY",
    "LANE_CONFIG_ABI",
    "capacity_for",
    "check_capacity",
    "decode_lane_config",
    "encode_lane_config",
    "packet_tokens",
]

ASSET_ANY = "*"
"""The default entry: applies to every asset without its own."""

LANE_CONFIG_ABI = ("string[]", "uint64[]")
"""``(assets, capacities)`` of the lane-config record (SPEC §6.8)."""


def packet_tokens(packet: Packet) -> tuple[str, int]:
    """``(asset, tokens)`` a packet takes from its lane's bucket (SPEC §6.7). The payload must decode."""
    if packet.kind is PacketKind.ENERGY:
        energy = decode_energy(packet.payload)
        return energy.denom, energy.amount_wh
    return packet.kind.name.lower(), 1


def capacity_for(capacities: Mapping[str, int], asset: str) -> int | None:
    """The bucket capacity for ``asset``: its own entry, else ``*``, else ``None`` (not limited)."""
    own = capacities.get(asset)
    return own if own is not None else capacities.get(ASSET_ANY)


def check_capacity(capacities: Mapping[str, int], asset: str, tokens: int, where: str) -> None:
    """``lane.over_capacity`` if ``tokens`` exceed what the bucket of ``asset`` can ever hold."""
    cap = capacity_for(capacities, asset)
    if cap is not None and tokens > cap:
        raise OverCapacityError(f"lane {where}: {tokens} tokens of {asset} exceed the bucket's capacity, so the "
                                f"relay would never verify the packet", expected=f"<= {cap}", got=tokens)


def _check_assets(assets: list[str]) -> None:
    raw = [a.encode() if isinstance(a, str) else a for a in assets]
    for a, r in zip(assets, raw, strict=True):
        if not isinstance(a, str) or not 1 <= len(r) <= MAX_STRING:
            raise CodecError(f"a lane-config asset is 1-{MAX_STRING} UTF-8 bytes", got=a)
    if any(x >= y for x, y in pairwise(raw)):
        raise CodecError("lane-config assets are strictly ascending", got=assets)


def encode_lane_config(capacities: Mapping[str, int]) -> bytes:
    """The lane-config record of a lane with these capacities (SPEC §6.8)."""
    assets = sorted(capacities, key=lambda a: a.encode() if isinstance(a, str) else b"")
    _check_assets(assets)
    caps = [check_uint(f"capacity of {a}", capacities[a]) for a in assets]
    return abi.encode(LANE_CONFIG_ABI, (assets, caps))


def decode_lane_config(data: bytes) -> dict[str, int]:
    """Inverse of :func:`encode_lane_config`; :class:`CodecError` on anything else."""
    assets, caps = abi.decode(LANE_CONFIG_ABI, data, "lane config")
    if len(assets) != len(caps):
        raise CodecError("lane config: one capacity per asset", expected=len(assets), got=len(caps))
    _check_assets(list(assets))
    return dict(zip(assets, (int(c) for c in caps), strict=True))
