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
* The votes the validator signed at ``height`` (the last :data:`MAX_KEPT_VOTES`, encoded) are stored in the same
  record. The rules above forbid signing them again after a restart, so without them a restarted validator could
  neither count nor re-send what it voted in the current round, and its peers may never have received it (it was
  killed before the broadcast left, or they restarted and forgot it): once every validator has restarted during a
  round, nobody holds that round's votes and nobody may sign them again, and the height stalls for good. A
  restarted core counts these votes again and re-sends them with its gossip.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

import orjson

from protocol.certificate import RelayHeader
from protocol.errors import CodecError
from relay.chain.consensus.messages import Vote, decode_header, decode_message

__all__ = ["MAX_KEPT_VOTES", "SignState", "SignStep"]

_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
"""Version 1 records (no ``votes``) are still read: a node upgraded mid-height just has no votes to re-send."""
MAX_KEPT_VOTES = 16
"""Own votes kept per record (the latest; a round signs at most two)."""
_MAX_VOTE_BYTES = 1024


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
    votes: tuple[bytes, ...] = ()
    """The encoded votes (``messages.encode_message``) signed at ``height``, oldest first, at most
    :data:`MAX_KEPT_VOTES`."""

    def allows(self, height: int, round_: int, step: SignStep, sign_bytes: bytes) -> bool:
        """True if signing ``sign_bytes`` at ``(height, round_, step)`` cannot be a double signature."""
        new, last = (height, round_, int(step)), (self.height, self.round, int(self.step))
        if new != last:
            return new > last
        return sign_bytes == self.sign_bytes

    def signed(self, height: int, round_: int, step: SignStep, sign_bytes: bytes, *,
               lock: tuple[RelayHeader, bytes] | None = None, vote: bytes | None = None) -> SignState:
        """The record after signing; ``lock`` is the block of a precommit for a block (locks at ``round_``);
        ``vote`` the encoded vote just signed (kept with the record's votes at ``height``).

        Pre-condition: :meth:`allows` returned True for the same arguments.
        """
        kept = self.votes if height == self.height else ()
        if vote is not None and vote not in kept:
            kept = (*kept, vote)[-MAX_KEPT_VOTES:]
        if lock is not None:
            return SignState(height, round_, step, sign_bytes, round_, lock[0], lock[1], kept)
        if height != self.height:
            return SignState(height, round_, step, sign_bytes, votes=kept)
        return SignState(height, round_, step, sign_bytes, self.locked_round, self.locked_header,
                         self.locked_block, kept)

    # --- persistence ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """A JSON document (``version`` 1, byte fields in hex) for the host to store. Written by orjson: a precommit's
        record holds the locked block (megabytes of hex), stored before the vote leaves, and the standard library
        took ~18 ms over 6 MB of it (the same keys, sorted; only ints and hex strings, which both write alike)."""
        return orjson.dumps({
            "version": _FORMAT_VERSION,
            "height": self.height,
            "round": self.round,
            "step": int(self.step),
            "sign_bytes": self.sign_bytes.hex(),
            "locked_round": self.locked_round,
            "locked_header": self.locked_header.encode().hex() if self.locked_header is not None else "",
            "locked_block": self.locked_block.hex(),
            "votes": [v.hex() for v in self.votes],
        }, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> SignState:
        """Parse :meth:`to_json` output; :class:`CodecError` on anything else (never guess a record)."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodecError("sign state is not JSON", got=str(exc)) from exc
        keys = {"version", "height", "round", "step", "sign_bytes", "locked_round", "locked_header",
                "locked_block"}
        version = obj.get("version") if isinstance(obj, dict) else None
        if version == _FORMAT_VERSION:
            keys.add("votes")
        if not isinstance(obj, dict) or set(obj) != keys:
            raise CodecError("sign state fields", expected=sorted(keys),
                             got=sorted(obj) if isinstance(obj, dict) else type(obj).__name__)
        if version not in _READABLE_VERSIONS or isinstance(version, bool):
            raise CodecError("sign state version", expected=_READABLE_VERSIONS, got=version)
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
        votes = _votes(obj.get("votes", []), height)
        return cls(height, round_, SignStep(step), sign_bytes, locked_round, header, block, votes)


def _votes(raw: Any, height: int) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_KEPT_VOTES:
        raise CodecError(f"sign state votes: a list of at most {MAX_KEPT_VOTES}",
                         got=len(raw) if isinstance(raw, list) else type(raw).__name__)
    out: list[bytes] = []
    for item in raw:
        if not isinstance(item, str) or len(item) > 2 * _MAX_VOTE_BYTES:
            raise CodecError("sign state vote: a hex string", got=type(item).__name__)
        try:
            data = bytes.fromhex(item)
        except ValueError as exc:
            raise CodecError("sign state vote is not hex", got=item[:16]) from exc
        msg = decode_message(data)
        if not isinstance(msg, Vote) or msg.height != height:
            raise CodecError("sign state vote: a vote at the record's height", expected=height,
                             got=getattr(msg, "height", None))
        out.append(data)
    return tuple(out)


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
