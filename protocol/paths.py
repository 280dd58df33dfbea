"""Well-known state paths (SPEC.md §5). Every chain stores the protocol's records under these keys.

Keys are UTF-8 strings; sequences are written in decimal without padding.
"""

from __future__ import annotations

from protocol.errors import CodecError
from protocol.types import ChainId, LaneId


def commitment_path(dst: ChainId, lane: LaneId, sequence: int) -> bytes:
    """Source chain, phase 1: packet commitment of ``sequence`` on the lane to ``dst``."""
    return f"commitments/{dst}/{lane}/{sequence}".encode()


def receipt_path(src: ChainId, lane: LaneId, sequence: int) -> bytes:
    """Target chain, phase 3: ack commitment (the receipt) of a packet from ``src``."""
    return f"receipts/{src}/{lane}/{sequence}".encode()


def ack_path(src: ChainId, lane: LaneId, sequence: int) -> bytes:
    """Target chain, phase 3: the ack written for a packet from ``src`` (hex of its canonical encoding).

    Not committed by the receipt alone: relayers read the ack bytes here to prove them in phase 4.
    """
    return f"acks/{src}/{lane}/{sequence}".encode()


def next_send_path(dst: ChainId, lane: LaneId) -> bytes:
    """Source chain: the next sequence to assign on the lane to ``dst``."""
    return f"nextSequenceSend/{dst}/{lane}".encode()


def verified_path(src: ChainId, dst: ChainId, lane: LaneId, sequence: int) -> bytes:
    """Relay chain, phase 2: packet commitment of a verified packet."""
    return f"relay/verified/{src}/{dst}/{lane}/{sequence}".encode()


def outcome_path(src: ChainId, dst: ChainId, lane: LaneId, sequence: int) -> bytes:
    """Relay chain, phase 4: encoded outcome (ACKED with the ack commitment, or TIMED_OUT)."""
    return f"relay/outcome/{src}/{dst}/{lane}/{sequence}".encode()


def balance_path(account: str, denom: str) -> bytes:
    """Any Python chain: an account's balance of ``denom`` (decimal Wh).

    ``denom`` may hold ``/`` (a voucher trace), so ``account`` may not: else ``a/b`` + ``c`` and ``a`` +
    ``b/c`` would share one key.
    """
    if not account or "/" in account:
        raise CodecError("an account in a state path is non-empty and has no '/'", got=account)
    return f"balances/{account}/{denom}".encode()


def escrow_path(denom: str) -> bytes:
    """Source chain: total of its native ``denom`` escrowed by the bridge."""
    return f"escrow/{denom}".encode()


def lane_config_path(src: ChainId, dst: ChainId, lane: LaneId) -> bytes:
    """Relay chain: the lane-config record (SPEC.md §6.8) of the directed lane ``src -> dst``."""
    return f"relay/lane_config/{src}/{dst}/{lane}".encode()
