"""The signing-safety record of a relay validator: what it signed last, and what it is locked on.

A validator that signs two different votes of one kind at one height and round is byzantine, even if
it only crashed and restarted in between. The consensus core therefore checks this record before every
signature and hands the updated record to the host (a ``PersistSignState`` output) *before* the message
it signed (the ``Broadcast`` output after it). The host must store the record durably (write + fsync)
before it sends the message, and give the stored record back to the core when it restarts.

Rules (CometBFT's "last sign state", extended with the lock):

* A signature at ``(height, round, step)`` is allowed when that triple is lexicographically greater than
  the last one signed, or equal to it with the very same sign bytes (re-signing after a restart gives the
  same signature: ed25519 and RFC 6979 ECDSA are deterministic). Steps: propose 1 < prevote 2 <
  precommit 3. So a validator signs at most one proposal, one prevote and one precommit per round, and
  never a message of an earlier round or height than one it signed.
* The lock (``locked_round`` and the locked block) changes exactly when the validator signs a precommit
  for a block, so it is stored in the same record. A restarted validator keeps its lock and so does not
  prevote against it ("amnesia"); without it, a restart could undo the locking rule.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from protocol.certificate import RelayHeader
from protocol.errors import CodecError
from relay.chain.consensus.messages import decode_header

__all__ = ["SignState", "SignStep"]

_FORMAT_VERSION = 1


class SignStep(enum.IntEnum):
    """What was signed, in the order a round signs them."""

    NONE = 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True, slots=True)
class SignState:
    """The last signature a validator made, and its lock at that height. Immutable; the core replaces it."""

    height: int = 0
    """Height of the last signature (0: never signed)."""
    round: int = 0
    """Round of the last signature."""
    step: SignStep = SignStep.NONE
    """Kind of the last signature."""
    sign_bytes: bytes = b""
    """The 32 bytes last signed."""
    locked_round: int = -1
    """Round of the last precommit for a block at ``height``, or -1."""
    locked_header: RelayHeader | None = None
    """Header of the block precommitted in ``locked_round`` (None when not locked)."""
    locked_block: bytes = b""
    """Bytes of that block, so a restarted proposer can propose it again."""

    def allows(self, height: int, round_: int, step: SignStep, sign_bytes: bytes) -> bool:
        """True if signing ``sign_bytes`` at ``(height, round_, step)`` cannot be a double signature."""
        new, last = (height, round_, int(step)), (self.height, self.round, int(self.step))
        if new != last:
            return new > last
        return sign_bytes == self.sign_bytes

    def signed(self, height: int, round_: int, step: SignStep, sign_bytes: bytes, *,
               lock: tuple[RelayHeader, bytes] | None = None) -> SignState:
        """The record after signing; ``lock`` is the block of a precommit for a block (locks at ``round_``).

        Pre-condition: :meth:`allows` returned True for the same arguments.
        """
        if lock is not None:
            return SignState(height, round_, step, sign_bytes, round_, lock[0], lock[1])
        if height != self.height:
            return SignState(height, round_, step, sign_bytes)
        return SignState(height, round_, step, sign_bytes, self.locked_round, self.locked_header,
                         self.locked_block)

    # --- persistence ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """A JSON document (``version`` 1, byte fields in hex) for the host to store."""
        return json.dumps({
            "version": _FORMAT_VERSION,
            "height": self.height,
            "round": self.round,
            "step": int(self.step),
            "sign_bytes": self.sign_bytes.hex(),
            "locked_round": self.locked_round,
            "locked_header": self.locked_header.encode().hex() if self.locked_header is not None else "",
            "locked_block": self.locked_block.hex(),
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SignState:
        """Parse :meth:`to_json` output; :class:`CodecError` on anything else (never guess a record)."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodecError("sign state is not JSON", got=str(exc)) from exc
        keys = {"version", "height", "round", "step", "sign_bytes", "locked_round", "locked_header",
                "locked_block"}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise CodecError("sign state fields", expected=sorted(keys),
                             got=sorted(obj) if isinstance(obj, dict) else type(obj).__name__)
        if obj["version"] != _FORMAT_VERSION:
            raise CodecError("sign state version", expected=_FORMAT_VERSION, got=obj["version"])
        height = _int(obj, "height", 0)
        round_ = _int(obj, "round", 0)
        step = _int(obj, "step", 0)
        locked_round = _int(obj, "locked_round", -1)
        if step > SignStep.PRECOMMIT:
            raise CodecError("sign state step", expected="0..3", got=step)
        sign_bytes = _hex(obj, "sign_bytes")
        if len(sign_bytes) not in (0, 32) or (step == 0) != (len(sign_bytes) == 0):
            raise CodecError("sign state sign_bytes: 32 bytes once something was signed", got=len(sign_bytes))
        header_bytes = _hex(obj, "locked_header")
        block = _hex(obj, "locked_block")
        header = None
        if locked_round >= 0:
            header = decode_header(header_bytes)
            if header.height != height or locked_round > round_:
                raise CodecError("sign state lock is not at the record's height and round",
                                 expected=(height, f"<= {round_}"), got=(header.height, locked_round))
        elif header_bytes or block:
            raise CodecError("sign state holds a locked block but no locked round")
        return cls(height, round_, SignStep(step), sign_bytes, locked_round, header, block)


def _int(obj: dict[str, Any], key: str, minimum: int) -> int:
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise CodecError(f"sign state {key} is an integer >= {minimum}", got=v)
    return v


def _hex(obj: dict[str, Any], key: str) -> bytes:
    v = obj[key]
    if not isinstance(v, str):
        raise CodecError(f"sign state {key} is a hex string", got=type(v).__name__)
    try:
        return bytes.fromhex(v)
    except ValueError as exc:
        raise CodecError(f"sign state {key} is not hex", got=v[:16]) from exc
