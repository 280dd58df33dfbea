"""The relayer's decisions, apart from I/O (SPEC.md §10.1, §10.2): pure functions of the chains' records and now.

:func:`next_action` says what a packet needs next from the records the relayer read on the source, the relay
chain and the target; :func:`retry_delay_s` says when to offer a refused submission again, from the refusal's
:class:`~protocol.errors.Disposition`. Both are table-tested with an injected clock
(``tests/unit/test_relayer_policy.py``); the relayer's loop only reads records, calls these, and submits.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.errors import Disposition

__all__ = [
    "PARK_AFTER_REJECTION_S",
    "RESUBMIT_AFTER_S",
    "RETRY_SOON_S",
    "Action",
    "MinFees",
    "PacketRecords",
    "next_action",
    "pays_enough",
    "retry_delay_s",
]

RETRY_SOON_S = 1.0
"""Wait before offering again what a node refused for a passing reason (full mempool, nonce race)."""
RESUBMIT_AFTER_S = 6.0
"""Wait before offering again what only the chain's progress can lift (not final yet, bucket refilling)."""
PARK_AFTER_REJECTION_S = 300.0
"""Wait before offering again what was refused as invalid: a later relay may see other chain state."""


class Action(enum.Enum):
    """What a packet needs next."""

    VERIFY = "verify"
    """Phase 2: prove the commitment to the relay chain."""
    RECV = "recv"
    """Phase 3: deliver the packet with its relay certificate to the target."""
    CONFIRM = "confirm"
    """Phase 4, relay half: prove the target's receipt and acknowledgement to the relay chain."""
    TIMEOUT_RECEIPT = "timeout_receipt"
    """Phase 4, target half, on a target whose timeout is a receipt it writes (Fabric, SPEC §8.7): deliver the packet
    and its relay certificate to the target once the timeout passed, so that it records the timeout by its own clocks
    (``bridge.timeout_receipt``: refused as not yet while its clocks are behind, and never after a receipt)."""
    TIMEOUT = "timeout"
    """Phase 4, relay half: prove the timeout to the relay chain: by default no receipt at a final target height past
    the timeout; on a target that writes timeout receipts, its receipt (or, for a packet the relay never verified,
    an attested absence past the timeout)."""
    SETTLE = "settle"
    """Phase 4, source half: deliver the relay's certified outcome to the source."""
    FINISH = "finish"
    """Nothing is left to carry: forget the packet."""


@dataclass(frozen=True, slots=True)
class PacketRecords:
    """What the chains record of one packet, as the relayer last read them."""

    committed: bool
    """The source still holds the packet's commitment (it is removed when the source settles)."""
    verified: bool
    """The relay chain recorded the packet VERIFIED (phase 2)."""
    outcome: bool
    """The relay chain recorded an outcome, ACKED or TIMED_OUT (phase 4, relay half)."""
    received: bool
    """The target holds the packet's receipt with an acknowledgement (phase 3)."""
    timeout_ms: int
    """The packet's timeout (Unix ms)."""
    timeout_receipt: bool = False
    """The target's receipt path holds its timeout receipt, not an acknowledgement (a target whose kind writes one)."""


def next_action(rec: PacketRecords, now_ms: int, *, timeout_unverified: bool = True,
                target_timeout_receipt: bool = False) -> Action:
    """The next action for a packet with records ``rec`` at wall time ``now_ms``.

    With ``timeout_unverified`` a packet the relay never verified is timed out once its timeout passed (the
    relay certifies it on proof of the commitment and of non-receipt, SPEC §6.6), so its escrow never stays
    locked; without it such a packet is still offered for verification (a relay chain that cannot certify an
    unverified timeout).

    ``target_timeout_receipt``: the target's kind proves a timeout by a receipt it writes itself
    (:attr:`chains.common.kind.ChainKind.timeout_receipt`, Fabric): a verified packet past its timeout first needs
    that receipt (:attr:`Action.TIMEOUT_RECEIPT`), and only then its proof to the relay. Wall time only says when to
    try: the target refuses while its own clocks are before the timeout, and the relay checks its proof. A packet
    the relay never verified cannot get one (the target requires the relay's certificate): it is timed out as
    above, on attested absence."""
    if rec.outcome:
        return Action.SETTLE if rec.committed else Action.FINISH
    if not rec.verified:
        if not rec.committed:
            return Action.FINISH  # no commitment and no relay record: nothing was ever in flight
        if timeout_unverified and now_ms >= rec.timeout_ms:
            return Action.TIMEOUT
        return Action.VERIFY
    if rec.received:
        return Action.CONFIRM
    if rec.timeout_receipt:
        return Action.TIMEOUT
    if now_ms >= rec.timeout_ms:
        return Action.TIMEOUT_RECEIPT if target_timeout_receipt else Action.TIMEOUT
    return Action.RECV


def retry_delay_s(disposition: Disposition) -> float:
    """How long to wait before offering again a submission refused with ``disposition`` (or accepted: DONE)."""
    if disposition is Disposition.RETRY_SOON:
        return RETRY_SOON_S
    if disposition in (Disposition.AFTER_PROGRESS, Disposition.DONE):
        return RESUBMIT_AFTER_S
    return PARK_AFTER_REJECTION_S


STEP_OF: dict[Action, str] = {Action.VERIFY: "verify", Action.RECV: "execute", Action.CONFIRM: "confirm",
                              Action.TIMEOUT: "confirm", Action.TIMEOUT_RECEIPT: "confirm"}
"""The relaying step (protocol SPEC §6.10) an action earns the fee of. Settling earns none: it is how the fees of the
other steps get paid, so a relayer always settles."""


@dataclass(frozen=True, slots=True)
class MinFees:
    """The least fee a relayer takes a step of a packet for, in its source park's fee denomination."""

    verify: int = 0
    execute: int = 0
    confirm: int = 0

    def of(self, step: str) -> int:
        return {"verify": self.verify, "execute": self.execute, "confirm": self.confirm}[step]

    def __bool__(self) -> bool:
        return bool(self.verify or self.execute or self.confirm)


def pays_enough(action: Action, fees: Mapping[str, int] | None, minimum: MinFees | None) -> bool:
    """Whether the packet's fees (``None``: it offers none) pay this relayer's ``minimum`` for the step ``action``
    takes. With no minimum every step is taken; the settlement always is."""
    step = STEP_OF.get(action)
    if step is None or not minimum:
        return True
    offered = 0 if fees is None else fees.get(step, 0)
    return isinstance(offered, int) and offered >= minimum.of(step)
