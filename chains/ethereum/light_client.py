"""Light client of the Ethereum park, client type ``ethereum`` (chains/ethereum/SPEC.md §E3; SPEC.md §8).

Ethereum headers carry no signature the relay could check, and the relay does not follow Ethereum's
consensus. Finality is **confirmation depth + attestation** by the relay's own validators:

* **Attestations.** A relay validator that saw, on its own Ethereum endpoint, block ``block_hash`` at
  ``height`` while the head was at ``head_height`` attests ``(height, block_hash, head_height)``
  (:meth:`EthereumLightClient.attest`; the host authenticates the attester and passes its voting power
  and the total). It counts only if ``head_height − height ≥ confirmation_depth``
  (:class:`ShallowAttestationError`). An attester counts once per height: the same hash again is
  :class:`AttestationReplayError`, another hash :class:`ConflictingAttestationError` (that attestation
  is refused; the client stays active). Every vote keeps the power, total and validator set (``set_id``,
  the relay's set hash) it was cast under, even after the attester leaves the set. A hash is **attested**
  when, for one set, the votes cast under that set hold more than 2/3 of its power (``3 × signed >
  2 × total``); exactly 2/3 is not, and votes of different sets never add up, so faulty validators of
  several sets cannot together make a quorum that no single set's > 1/3 fault could.
* **Finality.** A header is final when its hash is attested at its height, or when it is the parent (by
  ``parentHash``) of a final header. A header that is neither yet waits as *pending* (at most
  ``max_pending_headers``, :class:`PendingLimitError`) in a pool that links headers by ``parentHash`` in
  whatever order they arrive (a :class:`protocol.fork_tree.ForkTree` without fork choice, SPEC.md §8.1.1); a
  header linking to a held parent must be one height above it and not earlier
  (:func:`protocol.fork_tree.check_link`). When an attestation or a final child arrives, it and every pending
  ancestor it links to become final. So the *expected hash* of a height is known
  from its attestation, its final header, or the ``parentHash`` of the final header above it — and a
  header anyone submits is checked against the expected hashes of its height and its parent's.
* **Forged headers.** Anyone can build an Ethereum header. One that conflicts with an expected hash
  (a final or attested height, or the parent of one) is :class:`~protocol.errors.HeaderError` and
  changes nothing; so is a pending header that cannot become final without a conflict, which is also
  pruned. Only hash-authentic headers (the attested one, and ancestors reached through ``parentHash``)
  ever become final.
* **Bounds** (SPEC.md §8.4 gives the security argument). Headers and attestations are accepted from
  :meth:`~EthereumLightClient.floor_height` up: at most ``max_consensus_states − 1`` below the newest final
  height (and not below the lowest retained final height once ``max_consensus_states`` are held); what falls
  below it is dropped. Above, both are bounded from an *anchor* only a quorum can move:

  - an attestation more than ``max_attestation_ahead`` above the newest final height (before any, the lowest
    attested height) is refused (:class:`AttestationLimitError`);
  - each attester holds at most ``max_open_attestations`` *open* votes (above the final height, on a hash not
    attested there); one more drops that attester's own lowest open vote. A flood of made-up attestations thus
    displaces only the flooder's votes, never an honest one, and cannot hold finality back;
  - a pending header more than ``max_pending_ahead`` above the newest final or attested height is refused
    (:class:`PendingAheadError`); at most ``max_pending_per_height`` wait at one height (one more displaces a
    held one there, childless first, then the lowest hash) and ``max_pending_headers`` in all (one more
    displaces the highest pending header if it is higher, else :class:`PendingLimitError`). Forged headers
    thus displace forged headers; an honest relayer's batch (each header the parent of the next, fed upward
    from finality) is never displaced by itself, and finalises in the transaction that carries its attested
    header.
* **Misbehaviour.** Two different hashes expected at one height — two attested hashes, or an attested
  hash against the final chain (the ``parentHash`` link of an attested or final header included) —
  mean the relay's quorum attested two chains (or Ethereum reorganised deeper than the confirmation
  depth). :meth:`~EthereumLightClient.attest` freezes the client and raises
  :class:`~protocol.errors.MisbehaviourError`; so does :meth:`~EthereumLightClient.validate_header`
  (via :meth:`~protocol.light_client.LightClient.process_header`) for the authentic header that reveals
  it. Two headers at one height prove nothing (:meth:`~EthereumLightClient.validate_conflicting`
  always refuses): headers are unsigned.
* **Proofs.** :meth:`~EthereumLightClient.verify_membership` / ``verify_non_membership`` map the protocol
  §5 path to the bridge's storage slot and verify the ``eth_getProof`` proof against the final header's
  ``stateRoot`` (:mod:`chains.ethereum.proofs`).

Persistence: :meth:`~EthereumLightClient.to_state` is canonical JSON (sorted keys, bytes as lowercase hex)::

    {"v": 2, "type": "ethereum", "base": protocol.light_client.base_state_to_json(client),
     "eth_chain_id", "bridge_address": "0x…", "confirmation_depth", "max_pending_headers",
     "max_open_attestations", "max_attestation_ahead", "max_pending_ahead", "max_pending_per_height",
     "final_parents": [[height, parent hash], ...],    # the parentHash of each final header, ascending
     "attested": [[height, hash], ...],                # heights whose hash reached quorum, ascending
     "votes": [[height, attester, hash, power, total_power, set id hex], ...],   # sorted by (height, attester)
     "pending": [header RLP, ...]}                     # sorted by (height, hash)

Nothing depends on arrival order beyond what these hold (eviction choices included), so equal histories give
equal bytes, and :meth:`~EthereumLightClient.from_state` rebuilds a client that behaves as the one that wrote
them. Version 1 (votes without a set id, no flood bounds) still loads: its votes count as one set, its bounds
take the defaults.
:meth:`~EthereumLightClient.from_init` builds a client from JSON init args (the relay's ``client.create``).

Pre-conditions (as ibc-go states them): the host calls :meth:`~protocol.light_client.LightClient.process_header`;
:meth:`~EthereumLightClient.apply_header` assumes :meth:`~EthereumLightClient.validate_header` accepted the
header. Time is passed in, never read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from chains.common.state import canonical_json
from chains.ethereum.proofs import StorageRootCache
from chains.ethereum.proofs import verify_membership as verify_storage_membership
from chains.ethereum.proofs import verify_non_membership as verify_storage_non_membership
from chains.ethereum.types import EthHeader
from protocol.errors import (
    CodecError,
    HeaderError,
    MisbehaviourError,
    ReplayError,
)
from protocol.fork_tree import ForkNode, ForkTree, check_link
from protocol.light_client import (
    ConsensusState,
    HeaderReplayError,
    LightClient,
    PendingLimitError,
    base_state_to_json,
    open_state,
    restore_base_state,
)
from protocol.types import ChainId, ClientId, check_id

__all__ = [
    "HOSTED_MAX_CONSENSUS_STATES",
    "HOSTED_MAX_OPEN_ATTESTATIONS",
    "HOSTED_MAX_PENDING_AHEAD",
    "HOSTED_MAX_PENDING_HEADERS",
    "HOSTED_MAX_PENDING_PER_HEIGHT",
    "MAX_CONFIRMATION_DEPTH",
    "STATE_VERSION",
    "AttestationLimitError",
    "AttestationReplayError",
    "AttestationResult",
    "ConflictingAttestationError",
    "EthereumLightClient",
    "HeaderReplayError",
    "PendingAheadError",
    "PendingLimitError",
    "ShallowAttestationError",
]

STATE_VERSION = 2
"""Version of the :meth:`EthereumLightClient.to_state` encoding (2: votes carry their validator-set id, and the
flood bounds are state; :meth:`~EthereumLightClient.from_state` still reads 1)."""
HOSTED_MAX_CONSENSUS_STATES = 512
"""Default ``max_consensus_states`` of :meth:`EthereumLightClient.from_init` (range 1..4096)."""
HOSTED_MAX_PENDING_HEADERS = 1024
"""Default ``max_pending_headers`` of :meth:`EthereumLightClient.from_init` (range 1..65536)."""
HOSTED_MAX_OPEN_ATTESTATIONS = 64
"""Default ``max_open_attestations`` (range 1..4096): open votes one attester may hold (module docstring)."""
HOSTED_MAX_PENDING_AHEAD = 256
"""Default ``max_pending_ahead`` (range 1..65536): how far above the anchor a pending header may be."""
HOSTED_MAX_PENDING_PER_HEIGHT = 4
"""Default ``max_pending_per_height`` (range 1..64): pending headers held at one height."""
MAX_CONFIRMATION_DEPTH = 2**16
"""Largest ``confirmation_depth`` (0 is allowed: attest the head itself)."""
MAX_ATTESTER_LEN = 256
"""Longest attester name (a relay validator's name)."""
_STORAGE_ROOT_CACHE = 256
_UINT64 = 2**64 - 1
_INIT_REQUIRED = ("eth_chain_id", "bridge_address", "confirmation_depth", "trusting_period_ms")
_INIT_OPTIONAL = ("max_consensus_states", "max_pending_headers", "max_open_attestations", "max_attestation_ahead",
                  "max_pending_ahead", "max_pending_per_height")


class ShallowAttestationError(HeaderError):
    """An attestation of a height less than ``confirmation_depth`` below the attester's head."""

    code: ClassVar[str] = "header.eth.shallow_attestation"


class ConflictingAttestationError(HeaderError):
    """The attester already attested another hash at this height: this attestation is refused (no freeze)."""

    code: ClassVar[str] = "header.eth.attestation_conflict"


class AttestationLimitError(HeaderError):
    """An attestation of a height more than ``max_attestation_ahead`` above the anchor (the newest final height, or
    before any, the lowest attested one): too far ahead to matter, so it could only fill the client."""

    code: ClassVar[str] = "header.eth.attestation_limit"


class PendingAheadError(HeaderError):
    """A header that would wait as pending more than ``max_pending_ahead`` above the anchor (the newest final or
    attested height): too far ahead to become final soon, so it could only fill the pool. Resubmit later."""

    code: ClassVar[str] = "header.eth.pending_ahead"


class AttestationReplayError(ReplayError):
    """The attester was already counted for this hash, or the hash is already attested or final: nothing to do."""

    code: ClassVar[str] = ReplayError.code


@dataclass(frozen=True, slots=True)
class AttestationResult:
    """What one accepted attestation did."""

    attested: bool
    """This attestation brought its hash to quorum."""
    final_heights: tuple[int, ...]
    """Heights that became final because of it (ascending; empty until the attested header is held)."""
    signed_power: int
    """Power of the attesters of this hash at this height, this one included."""
    total_power: int
    """Total power the quorum was measured against."""


@dataclass(frozen=True, slots=True)
class _Vote:
    """One attester's vote at one height, with the power it had in the validator set it was cast under."""

    block_hash: bytes
    """The attested hash."""
    power: int
    """The attester's voting power in that set."""
    total_power: int
    """That set's total power."""
    set_id: bytes
    """Id of that set (the relay's validator-set hash; empty for votes restored from a version-1 state). A quorum is
    counted among the votes of one set only."""


class EthereumLightClient(LightClient[EthHeader]):
    """Follows the Ethereum park by relay-validator attestations over a confirmation depth (module docstring)."""

    client_type: ClassVar[str] = "ethereum"

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int, *, eth_chain_id: int,
                 bridge_address: bytes, confirmation_depth: int, max_consensus_states: int = 4096,
                 max_pending_headers: int = 4096, max_open_attestations: int = HOSTED_MAX_OPEN_ATTESTATIONS,
                 max_attestation_ahead: int | None = None, max_pending_ahead: int = HOSTED_MAX_PENDING_AHEAD,
                 max_pending_per_height: int = HOSTED_MAX_PENDING_PER_HEIGHT) -> None:
        """Raises :class:`CodecError` for a parameter out of range (``eth_chain_id`` 1..2^64−1, a 20-byte
        ``bridge_address``, ``confirmation_depth`` 0..2^16, positive trusting period and limits).
        ``max_attestation_ahead`` defaults to ``max_consensus_states + max_pending_headers``."""
        check_id("chain", chain_id)
        _check_int("trusting_period_ms", trusting_period_ms, 1, 2**63 - 1)
        _check_int("eth_chain_id", eth_chain_id, 1, _UINT64)
        _check_int("confirmation_depth", confirmation_depth, 0, MAX_CONFIRMATION_DEPTH)
        _check_int("max_consensus_states", max_consensus_states, 1, 2**31)
        _check_int("max_pending_headers", max_pending_headers, 1, 2**31)
        if max_attestation_ahead is None:
            max_attestation_ahead = max_consensus_states + max_pending_headers
        _check_int("max_open_attestations", max_open_attestations, 1, 2**31)
        _check_int("max_attestation_ahead", max_attestation_ahead, 1, 2**32)
        _check_int("max_pending_ahead", max_pending_ahead, 1, 2**31)
        _check_int("max_pending_per_height", max_pending_per_height, 1, 2**31)
        if not isinstance(bridge_address, bytes) or len(bridge_address) != 20:
            raise CodecError("bridge_address is 20 bytes", got=bridge_address)
        super().__init__(client_id, chain_id, trusting_period_ms, max_consensus_states)
        self.eth_chain_id = eth_chain_id
        self.bridge_address = bridge_address
        self.confirmation_depth = confirmation_depth
        self.max_pending_headers = max_pending_headers
        self.max_open_attestations = max_open_attestations
        """Open votes (above the final height, on a hash not attested there) one attester may hold; one more evicts
        that attester's own lowest open vote, so a flood only ever displaces the flooder's votes."""
        self.max_attestation_ahead = max_attestation_ahead
        """Attestations above the anchor by more than this are refused (:class:`AttestationLimitError`)."""
        self.max_pending_ahead = max_pending_ahead
        """Pending headers above the anchor by more than this are refused (:class:`PendingAheadError`)."""
        self.max_pending_per_height = max_pending_per_height
        """Pending headers held at one height; one more evicts one held there (childless first)."""
        self._final_by_hash: dict[bytes, int] = {}
        """Height of each final header by hash, same entries as ``_final`` (links of headers to final parents)."""
        self._final_parent: dict[int, bytes] = {}
        """parentHash of each final header, same keys as ``_final``: the expected hash one height below."""
        self._attested: dict[int, bytes] = {}
        """Heights whose hash reached quorum (with or without the header held)."""
        self._votes: dict[int, dict[str, _Vote]] = {}
        """Attestations counted, by height then attester."""
        self._pending: ForkTree[ForkNode[EthHeader]] = ForkTree()
        """Headers held but not final, by hash and height, linked by ``parentHash`` whatever order they came in."""
        self._validated: tuple[bytes, list[EthHeader] | None] | None = None
        """(header hash, plan) of the last validate_header, for apply_header; cleared by every other mutation."""
        self._storage_roots: StorageRootCache = {}
        """Verified account proofs (a cache of pure results, bounded, not part of the state)."""

    # -- what the host and operators read ---------------------------------------------------------

    @property
    def latest_height(self) -> int:
        """Highest final height (0 before any header is final)."""
        return self.final_height

    @property
    def pending_count(self) -> int:
        """Headers held but not final."""
        return len(self._pending)

    def pending_heights(self) -> list[int]:
        """Heights of the pending headers, ascending (a height may repeat: forged headers wait too)."""
        return sorted(node.height for node in self._pending.nodes())

    def attested_hash(self, height: int) -> bytes | None:
        """The hash attested at ``height`` by a quorum, if any."""
        return self._attested.get(height)

    def has_attested(self, attester: str, height: int) -> bytes | None:
        """The hash ``attester`` was counted for at ``height``, if any (a host may skip a redundant attestation)."""
        vote = self._votes.get(height, {}).get(attester)
        return None if vote is None else vote.block_hash

    def expected_hash(self, height: int) -> bytes | None:
        """The hash a header at ``height`` must have, if known: final there, attested there, or the parent of the
        final header above."""
        cs = self._final.get(height)
        if cs is not None:
            return cs.header_hash
        attested = self._attested.get(height)
        if attested is not None:
            return attested
        return self._final_parent.get(height + 1)

    def holds(self, header: EthHeader) -> bool:
        """Whether ``header`` is held (pending, or final at its height): submitting it again adds nothing."""
        hhash = header.hash
        return hhash in self._pending or self.holds_final(header.height, hhash)

    def floor_height(self) -> int:
        """Lowest height a header or attestation may have: at most ``max_consensus_states − 1`` below the newest
        final height, and not below the lowest retained final height once ``max_consensus_states`` are held
        (anything lower would be pruned at once). Attestations and pending headers below it are dropped, so what
        the client holds spans a bounded range of heights."""
        if not self._final:
            return 0
        floor = self.final_height - self.max_consensus_states + 1
        if len(self._final) >= self.max_consensus_states:
            floor = max(floor, min(self._final))
        return max(floor, 0)

    def attestation_anchor(self) -> int | None:
        """Height attestations are bounded from above by (plus ``max_attestation_ahead``): the newest final height;
        before any, the lowest attested height; ``None`` before either (the per-attester quota alone bounds votes
        then). Only a quorum moves it, so no minority can push it up or hold it down."""
        if self._final:
            return self.final_height
        if self._attested:
            return min(self._attested)
        return None

    def pending_anchor(self) -> int:
        """Height pending headers are bounded from above by (plus ``max_pending_ahead``): the newest final or attested
        height, 0 before any. Only a quorum moves it."""
        return max(max(self._attested, default=0), self.final_height)

    def open_votes(self, attester: str) -> list[int]:
        """Heights, ascending, where ``attester``'s vote is *open*: above the final height, on a hash not attested
        there. At most ``max_open_attestations`` of them are held."""
        final = self.final_height if self._final else -1
        attested = self._attested
        out = []
        for h, votes in self._votes.items():
            vote = votes.get(attester)
            if vote is not None and h > final and attested.get(h) != vote.block_hash:
                out.append(h)
        out.sort()
        return out

    # -- attestations -------------------------------------------------------------------------------

    def attest(self, attester: str, power: int, total_power: int, height: int, block_hash: bytes, head_height: int,
               now_ms: int, *, set_id: bytes = b"") -> AttestationResult:
        """Count ``attester`` (voting ``power`` of ``total_power`` in the validator set ``set_id``, the relay's set
        hash) for ``block_hash`` at ``height``, seen under head ``head_height``. The vote keeps that power, total and
        set for good; it counts toward a quorum only with votes cast under the same set.

        Raises, changing nothing: :class:`~protocol.errors.ClientFrozenError` / ``ClientExpiredError``,
        :class:`CodecError` (malformed arguments), :class:`ShallowAttestationError`, a ``HeaderError`` below
        :meth:`floor_height`, :class:`AttestationReplayError`, :class:`ConflictingAttestationError`,
        :class:`AttestationLimitError`. If the hash reaches quorum against a different expected hash at its height,
        or its header's ``parentHash`` chain conflicts with one below, the attestation is recorded, the client
        **freezes** and :class:`~protocol.errors.MisbehaviourError` is raised: the host must persist the client.
        """
        self.check_active(now_ms)
        if not isinstance(attester, str) or not 1 <= len(attester) <= MAX_ATTESTER_LEN:
            raise CodecError("an attester is named by a non-empty string", expected=f"1..{MAX_ATTESTER_LEN} chars",
                             got=attester)
        _check_int("attestation height", height, 0, _UINT64)
        _check_int("attestation head_height", head_height, 0, _UINT64)
        _check_int("attestation total_power", total_power, 1, _UINT64)
        _check_int("attestation power", power, 1, total_power)
        if not isinstance(block_hash, bytes) or len(block_hash) != 32:
            raise CodecError("an attested block hash is 32 bytes", got=block_hash)
        if not isinstance(set_id, bytes) or len(set_id) > 32:
            raise CodecError("a validator-set id is at most 32 bytes", got=set_id)
        if head_height - height < self.confirmation_depth:
            raise ShallowAttestationError(
                f"attestation of {height} by {attester} under head {head_height} is shallower than the confirmation "
                f"depth of client {self.client_id}", expected=f"head_height >= {height + self.confirmation_depth}",
                got=head_height)
        floor = self.floor_height()
        if height < floor:
            raise HeaderError(f"attestation of {height} is below the heights client {self.client_id} retains",
                              expected=f">= {floor}", got=height)
        votes = self._votes.get(height, {})
        prev = votes.get(attester)
        if prev is not None:
            if prev.block_hash == block_hash:
                raise AttestationReplayError(f"{attester} already attested {height} to client {self.client_id}",
                                             got=block_hash.hex())
            raise ConflictingAttestationError(f"{attester} already attested another hash at {height}",
                                              expected=prev.block_hash.hex(), got=block_hash.hex())
        expected = self.expected_hash(height)
        if expected == block_hash:
            raise AttestationReplayError(f"{height} {block_hash.hex()[:16]}… is already attested or final in client "
                                         f"{self.client_id}", got=block_hash.hex())
        anchor = self.attestation_anchor()
        if anchor is not None and height > anchor + self.max_attestation_ahead:
            raise AttestationLimitError(
                f"attestation of {height} by {attester} is too far above what client {self.client_id} holds final",
                expected=f"<= {anchor + self.max_attestation_ahead}", got=height)
        # a quorum is counted within one validator set: faulty validators of several sets never add up
        signed, total = power, total_power
        for vote in votes.values():
            if vote.block_hash == block_hash and vote.set_id == set_id:
                signed += vote.power
                total = max(total, vote.total_power)
        self._validated = None
        vote = _Vote(block_hash, power, total_power, set_id)
        if 3 * signed <= 2 * total:
            self._votes.setdefault(height, {})[attester] = vote
            self._evict_open_votes(attester, height)
            return AttestationResult(False, (), signed, total)
        # quorum: check every consequence before changing anything but the vote
        try:
            if expected is not None:
                raise MisbehaviourError(
                    f"client {self.client_id} of {self.chain_id}: a quorum attested {block_hash.hex()[:16]}… at "
                    f"{height}, where {expected.hex()[:16]}… is already attested or final", expected=expected.hex(),
                    got=block_hash.hex())
            node = self._pending.get(block_hash)
            # a held header with that hash at another height: the quorum named the wrong height; nothing is final
            chain = self._final_chain(node.header) if node is not None and node.height == height else []
        except MisbehaviourError as exc:
            self._votes.setdefault(height, {})[attester] = vote
            self.freeze(height, exc.message)
            raise
        self._votes.setdefault(height, {})[attester] = vote
        self._attested[height] = block_hash
        finals = self._finalise(chain)
        if not finals:
            self._prune()  # pending headers at this height with another hash, or children of another parent
        return AttestationResult(True, finals, signed, total)

    def _evict_open_votes(self, attester: str, keep: int) -> None:
        """Hold ``attester`` to ``max_open_attestations`` open votes by dropping its own lowest ones (never the vote
        at ``keep``, just cast): a flood displaces only the flooder's votes, and an honest attester whose old votes
        never reached quorum keeps attesting (a later attested height finalises those heights through parentHash)."""
        open_heights = self.open_votes(attester)
        excess = len(open_heights) - self.max_open_attestations
        for h in open_heights:
            if excess <= 0:
                break
            if h == keep:
                continue
            votes = self._votes[h]
            del votes[attester]
            if not votes:
                del self._votes[h]
            excess -= 1

    # -- validate / apply ------------------------------------------------------------------------------

    def validate_header(self, header: EthHeader, now_ms: int) -> None:
        """Raise unless ``header`` may be held: not held yet (:class:`HeaderReplayError`), not conflicting with an
        expected hash at its height or its parent's (``HeaderError``), linked to a held parent by number and time,
        with room if it must wait (:class:`PendingLimitError`). :class:`MisbehaviourError` if the header is
        authentic (its hash expected) and its ``parentHash`` chain conflicts with an expected hash below."""
        self._validated = (header.hash, self._plan(header))

    def apply_header(self, header: EthHeader) -> None:
        """Hold a validated header: final (with the pending ancestors it links to) if its hash is expected, else
        pending."""
        hhash = header.hash
        validated, self._validated = self._validated, None
        plan = validated[1] if validated is not None and validated[0] == hhash else self._plan(header)
        if plan is None:
            for victim in self._pending_victims(header):
                self._drop_pending(victim)
            self._hold_pending(header)
        else:
            self._finalise(plan)

    def _pending_victims(self, header: EthHeader) -> list[bytes]:
        """Hashes of the pending headers to drop so ``header`` can wait (empty if there is room), chosen from the state
        alone (replicas that decoded the client from bytes agree). At a full height: one held there, childless before
        a parent of another pending header, then the lowest hash — so a forged flood at one height displaces itself,
        and an honest batch (each header a parent of the next) never evicts its own members. In a full pool: the
        highest pending header if it is above ``header`` (honest relayers feed upward from finality, forged headers
        far ahead go first), else :class:`PendingLimitError`."""
        height = header.height
        pool = self._pending
        at_height = pool.at_height(height)
        if len(at_height) >= self.max_pending_per_height:
            # a parent of another pending header: it has children in the pool (linked whatever the arrival order)
            return [min(at_height, key=lambda node: (bool(node.children), node.hash)).hash]
        if len(pool) < self.max_pending_headers:
            return []
        top = max(pool.nodes(), key=lambda node: (node.height, not node.children, node.hash))
        if top.height > height:
            return [top.hash]
        raise PendingLimitError(f"client {self.client_id} holds {len(self._pending)} pending headers, none above "
                                f"{height}", expected=f"<= {self.max_pending_headers}", got=len(self._pending) + 1)

    def _hold_pending(self, header: EthHeader) -> None:
        self._pending.add(ForkNode(header, header.hash, header.parent_hash, header.height))

    def _drop_pending(self, hhash: bytes) -> None:
        node = self._pending.get(hhash)
        if node is not None:
            self._pending.remove(node)

    def _plan(self, header: EthHeader) -> list[EthHeader] | None:
        """Headers that become final when ``header`` is applied (it first, then its pending ancestors), or
        ``None`` if it waits as pending. Raises as :meth:`validate_header` says."""
        height, hhash = header.height, header.hash
        if self.holds(header):
            raise HeaderReplayError(f"header {height} {hhash.hex()[:16]}… is already held by client {self.client_id}",
                                    got=hhash.hex())
        floor = self.floor_height()
        if height < floor:
            raise HeaderError(f"header {height} is below the heights client {self.client_id} retains",
                              expected=f">= {floor}", got=height)
        if height in self._final:
            raise HeaderError(f"header {height} conflicts with the final one: a forged header",
                              expected=self._final[height].header_hash.hex(), got=hhash.hex())
        expected = self.expected_hash(height)
        if expected is not None and expected != hhash:
            raise HeaderError(f"header {height} conflicts with the hash attested there or linked from the final "
                              "header above: a forged header", expected=expected.hex(), got=hhash.hex())
        self._check_link(header)
        if expected is None:
            below = self.expected_hash(height - 1) if height > 0 else None
            if below is not None and below != header.parent_hash:
                raise HeaderError(f"header {height} does not extend the attested or final header below it",
                                  expected=below.hex(), got=header.parent_hash.hex())
            anchor = self.pending_anchor()
            if height > anchor + self.max_pending_ahead:
                raise PendingAheadError(f"header {height} would wait too far above the newest final or attested height "
                                        f"of client {self.client_id}", expected=f"<= {anchor + self.max_pending_ahead}",
                                        got=height)
            self._pending_victims(header)  # raises PendingLimitError if nothing may make room
            return None
        return self._final_chain(header)

    def _check_link(self, header: EthHeader) -> None:
        """Number and time against a held parent (none held: nothing to check)."""
        parent = self._pending.get(header.parent_hash)
        if parent is not None:
            p_height, p_ts = parent.height, parent.header.timestamp_ms
        else:
            final_height = self._final_by_hash.get(header.parent_hash)
            if final_height is None:
                return
            cs = self._final[final_height]
            p_height, p_ts = cs.height, cs.timestamp_ms
        # whole seconds: sub-second blocks share a timestamp
        check_link(header.height, header.timestamp_ms, p_height, p_ts, same_time=True)

    def _final_chain(self, header: EthHeader) -> list[EthHeader]:
        """``header`` (whose hash is expected) and the pending ancestors it links to; :class:`MisbehaviourError`
        if a ``parentHash`` on that chain conflicts with the expected hash below it."""
        chain = [header]
        cur = header
        while True:
            below = self.expected_hash(cur.height - 1) if cur.height > 0 else None
            if below is not None and below != cur.parent_hash:
                raise MisbehaviourError(
                    f"client {self.client_id} of {self.chain_id}: attested header {cur.height} "
                    f"{cur.hash.hex()[:16]}… links to a parent other than the attested or final one",
                    expected=below.hex(), got=cur.parent_hash.hex())
            node = self._pending.get(cur.parent_hash)
            if node is None:
                return chain
            parent = node.header
            if parent.height + 1 != cur.height or parent.timestamp_ms > cur.timestamp_ms:
                return chain
            chain.append(parent)
            cur = parent

    def _finalise(self, chain: list[EthHeader]) -> tuple[int, ...]:
        """Record ``chain`` (a header and its pending ancestors) as final, lowest first; prune. Returns the heights."""
        if not chain:
            return ()
        for hd in reversed(chain):
            self._drop_pending(hd.hash)
            self._final_parent[hd.height] = hd.parent_hash
            self._record_final(ConsensusState(hd.height, hd.hash, hd.timestamp_ms, hd.state_root))
        self._prune()
        return tuple(hd.height for hd in reversed(chain))

    def _record_final(self, cs: ConsensusState) -> None:
        # heights may be recorded out of order (parents after children): prune the lowest, not the first inserted
        final = self._final
        if not final:
            self._final_by_hash = {}  # restore_base_state empties _final behind our back
        first = not final
        final[cs.height] = cs
        self._final_by_hash[cs.header_hash] = cs.height
        if first or cs.height > self.final_height:
            self.final_height = cs.height
            self.final_timestamp_ms = cs.timestamp_ms
        while len(final) > self.max_consensus_states:
            oldest = min(final)
            self._final_by_hash.pop(final.pop(oldest).header_hash, None)
            self._final_parent.pop(oldest, None)

    def _prune(self) -> None:
        """Drop what can no longer matter: attestations below the floor, pending headers below it or that cannot
        become final without a conflict."""
        floor = self.floor_height()
        for store in (self._attested, self._votes):
            for h in [h for h in store if h < floor]:
                del store[h]
        pool = self._pending
        for node in list(pool.nodes()):
            height = node.height
            expected = self.expected_hash(height)
            below = self.expected_hash(height - 1) if height > 0 else None
            if height < floor or (expected is not None and expected != node.hash) or (
                    below is not None and below != node.parent_hash):
                pool.remove(node)

    # -- proofs --------------------------------------------------------------------------------------------

    def verify_membership(self, height: int, key: bytes, value: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless the bridge stores ``value`` (32 bytes) at the §5 path ``key`` in the final header at
        ``height``: ``client.frozen``/``client.expired``, ``header.not_final``, ``codec.invalid`` (proof bytes),
        ``proof.invalid``."""
        self.check_active(now_ms)
        cs = self.final_consensus_state(height)
        verify_storage_membership(cs.state_root, self.bridge_address, key, value, proof,
                                  storage_roots=self._bounded_cache())

    def verify_non_membership(self, height: int, key: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless the bridge stores nothing at the §5 path ``key`` in the final header at ``height``."""
        self.check_active(now_ms)
        cs = self.final_consensus_state(height)
        verify_storage_non_membership(cs.state_root, self.bridge_address, key, proof,
                                      storage_roots=self._bounded_cache())

    def _bounded_cache(self) -> StorageRootCache:
        if len(self._storage_roots) >= _STORAGE_ROOT_CACHE:
            self._storage_roots.clear()
        return self._storage_roots

    # -- misbehaviour evidence ----------------------------------------------------------------------

    def validate_conflicting(self, header_a: EthHeader, header_b: EthHeader, now_ms: int) -> None:
        """Always refuses: Ethereum headers are unsigned, so two of them at one height prove nothing (anyone can
        build one). Misbehaviour is two attested hashes at one height (:meth:`attest`)."""
        raise HeaderError("two Ethereum headers at one height prove nothing: headers are unsigned; misbehaviour is "
                          "a quorum attesting two hashes", got=header_a.height)

    # -- construction from init args, persistence --------------------------------------------------

    @classmethod
    def from_init(cls, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> Self:
        """A client from JSON init args (relay genesis or governance ``client.create``)::

            {"eth_chain_id": 31337, "bridge_address": "0x…40 hex…", "confirmation_depth": 2,
             "trusting_period_ms": 1209600000,
             "max_consensus_states": 512,    # optional, 1..4096 (default 512)
             "max_pending_headers": 1024,    # optional, 1..65536 (default 1024)
             "max_open_attestations": 64,    # optional, 1..4096: open votes per attester (default 64)
             "max_attestation_ahead": 1536,  # optional, 1..2^20 (default max_consensus_states + max_pending_headers)
             "max_pending_ahead": 256,       # optional, 1..65536: pending headers above the anchor (default 256)
             "max_pending_per_height": 4}    # optional, 1..64: pending headers at one height (default 4)

        Unknown or missing keys, and values out of range, are :class:`CodecError`.
        """
        what = f"the init of ethereum client {client_id}"
        if not isinstance(init, Mapping) or not all(isinstance(k, str) for k in init):
            raise CodecError(f"{what} must be a JSON object", got=type(init).__name__)
        missing = [k for k in _INIT_REQUIRED if k not in init]
        if missing:
            raise CodecError(f"{what} lacks arguments", expected=list(_INIT_REQUIRED), got=sorted(init))
        extra = set(init) - set(_INIT_REQUIRED) - set(_INIT_OPTIONAL)
        if extra:
            raise CodecError(f"{what} has unknown arguments", expected=list(_INIT_REQUIRED + _INIT_OPTIONAL),
                             got=sorted(extra))
        return cls(client_id, chain_id,
                   _check_int("trusting_period_ms", init["trusting_period_ms"], 1, 2**63 - 1),
                   eth_chain_id=_check_int("eth_chain_id", init["eth_chain_id"], 1, _UINT64),
                   bridge_address=_address(init["bridge_address"]),
                   confirmation_depth=_check_int("confirmation_depth", init["confirmation_depth"], 0,
                                                 MAX_CONFIRMATION_DEPTH),
                   max_consensus_states=_check_int("max_consensus_states",
                                                   init.get("max_consensus_states", HOSTED_MAX_CONSENSUS_STATES),
                                                   1, 4096),
                   max_pending_headers=_check_int("max_pending_headers",
                                                  init.get("max_pending_headers", HOSTED_MAX_PENDING_HEADERS),
                                                  1, 65536),
                   max_open_attestations=_check_int("max_open_attestations",
                                                    init.get("max_open_attestations", HOSTED_MAX_OPEN_ATTESTATIONS),
                                                    1, 4096),
                   max_attestation_ahead=None if "max_attestation_ahead" not in init else _check_int(
                       "max_attestation_ahead", init["max_attestation_ahead"], 1, 2**20),
                   max_pending_ahead=_check_int("max_pending_ahead",
                                                init.get("max_pending_ahead", HOSTED_MAX_PENDING_AHEAD), 1, 65536),
                   max_pending_per_height=_check_int("max_pending_per_height",
                                                     init.get("max_pending_per_height", HOSTED_MAX_PENDING_PER_HEIGHT),
                                                     1, 64))

    def to_state(self) -> bytes:
        """Canonical JSON of everything the client's future behaviour depends on (see the module docstring)."""
        return canonical_json({
            "v": STATE_VERSION, "type": self.client_type, "base": base_state_to_json(self),
            "eth_chain_id": self.eth_chain_id, "bridge_address": "0x" + self.bridge_address.hex(),
            "confirmation_depth": self.confirmation_depth, "max_pending_headers": self.max_pending_headers,
            "max_open_attestations": self.max_open_attestations, "max_attestation_ahead": self.max_attestation_ahead,
            "max_pending_ahead": self.max_pending_ahead, "max_pending_per_height": self.max_pending_per_height,
            "final_parents": [[h, self._final_parent[h].hex()] for h in sorted(self._final_parent)],
            "attested": [[h, self._attested[h].hex()] for h in sorted(self._attested)],
            "votes": [[h, name, v.block_hash.hex(), v.power, v.total_power, v.set_id.hex()]
                      for h in sorted(self._votes) for name, v in sorted(self._votes[h].items())],
            "pending": [node.header.encode().hex()
                        for node in sorted(self._pending.nodes(), key=lambda n: (n.height, n.hash))],
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes) -> Self:
        """The inverse of :meth:`to_state`: a client that behaves as the one that wrote ``data``.

        ``data`` is trusted to come from :meth:`to_state` (the relay chain's own state): its structure is checked
        (:class:`~protocol.errors.CodecError`), not the history that produced it.
        """
        try:
            obj = open_state(data, client_type=cls.client_type, versions=(1, STATE_VERSION), client_id=client_id,
                             name="an Ethereum light-client state")
            base = obj["base"]
            # version 1 predates the flood bounds: its client gets the defaults
            bounds: dict[str, Any] = {k: obj[k] for k in _INIT_OPTIONAL[2:]} if obj["v"] >= 2 else {}
            client = cls(client_id, ChainId(base["chain_id"]), base["trusting_period_ms"],
                         eth_chain_id=obj["eth_chain_id"], bridge_address=_address(obj["bridge_address"]),
                         confirmation_depth=obj["confirmation_depth"],
                         max_consensus_states=base["max_consensus_states"],
                         max_pending_headers=obj["max_pending_headers"], **bounds)
            restore_base_state(client, base)
            parents = {_check_int("height", h, 0, _UINT64): _hash32(p) for h, p in obj["final_parents"]}
            if sorted(parents) != client.final_heights():
                raise CodecError("final_parents and final heights differ", expected=client.final_heights(),
                                 got=sorted(parents))
            client._final_parent = parents
            client._attested = {_check_int("height", h, 0, _UINT64): _hash32(x) for h, x in obj["attested"]}
            for entry in obj["votes"]:
                # version 1 votes carry no set id: they count together, as they did then
                h, name, x, power, total, set_hex = entry if obj["v"] >= 2 else (*entry, "")
                votes = client._votes.setdefault(_check_int("height", h, 0, _UINT64), {})
                if not isinstance(name, str) or name in votes:
                    raise CodecError("malformed or repeated vote", got=name)
                total = _check_int("total_power", total, 1, _UINT64)
                set_id = bytes.fromhex(set_hex)
                if len(set_id) > 32:
                    raise CodecError("a validator-set id is at most 32 bytes", got=set_hex)
                votes[name] = _Vote(_hash32(x), _check_int("power", power, 1, total), total, set_id)
            for raw in obj["pending"]:
                header = EthHeader.decode(bytes.fromhex(raw))
                if header.hash not in client._pending:  # a repeat is held once, as it always was
                    client._hold_pending(header)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"malformed Ethereum light-client state of {client_id}: {exc!r}") from exc
        return client


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CodecError(f"{name} out of range", expected=f"{low}..{high}", got=value)
    return value


def _hash32(value: Any) -> bytes:
    raw = bytes.fromhex(value)
    if len(raw) != 32:
        raise CodecError("expected 32 bytes", got=len(raw))
    return raw


def _address(value: Any) -> bytes:
    """A ``0x``-prefixed 20-byte hex address (either case); :class:`CodecError` otherwise."""
    if isinstance(value, str) and len(value) == 42 and value[:2] == "0x":
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise CodecError("an address is 0x and 40 hex digits", got=value)
