"""The light-client base class and the client router (SPEC.md §8), through a minimal concrete client.

``DemoClient`` follows a toy chain: a header is valid if it is signed, not from the future, and the next
height; it is final once one more header is built on it. A different header at a final height is
misbehaviour. That is enough to drive every path of :class:`LightClient`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import pytest

from protocol.errors import (
    ClientExpiredError,
    ClientFrozenError,
    CodecError,
    DuplicateClientTypeError,
    HeaderError,
    InvalidProofError,
    MisbehaviourError,
    NotFinalError,
    UnknownClientError,
)
from protocol.light_client import ClientRouter, ClientStatus, ConsensusState, LightClient
from protocol.state_commitment import SparseMerkleTree
from protocol.types import ChainId, ClientId

T0 = 1_700_000_000_000
PERIOD = 60_000


@dataclass(frozen=True)
class DemoHeader:
    height: int
    time_ms: int
    state_root: bytes
    signed: bool = True
    fork: int = 0

    def hash(self) -> bytes:
        return hashlib.sha256(f"{self.height}|{self.time_ms}|{self.state_root.hex()}|{self.fork}".encode()).digest()


class DemoClient(LightClient[DemoHeader]):
    client_type = "demo"

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int = PERIOD,
                 max_consensus_states: int = 4096, first_height: int = 1) -> None:
        super().__init__(client_id, chain_id, trusting_period_ms, max_consensus_states)
        self.latest = first_height - 1
        self.pending: dict[int, DemoHeader] = {}
        self.seen_now: list[int] = []
        self.applied: list[int] = []

    @property
    def latest_height(self) -> int:
        return self.latest

    def validate_header(self, header: DemoHeader, now_ms: int) -> None:
        self.seen_now.append(now_ms)
        if not header.signed:
            raise HeaderError("unsigned header", got=header.height)
        if header.time_ms > now_ms:
            raise HeaderError("header from the future", expected=f"<= {now_ms}", got=header.time_ms)
        final = self._final.get(header.height)
        if final is not None and final.header_hash != header.hash():
            raise MisbehaviourError("a second header at a final height", got=header.height)
        if header.height != self.latest + 1:
            raise HeaderError("not the next height", expected=self.latest + 1, got=header.height)

    def apply_header(self, header: DemoHeader) -> None:
        self.applied.append(header.height)
        self.pending[header.height] = header
        self.latest = header.height
        parent = self.pending.pop(header.height - 1, None)
        if parent is not None:
            self._record_final(ConsensusState(parent.height, parent.hash(), parent.time_ms, parent.state_root))

    def validate_conflicting(self, header_a: DemoHeader, header_b: DemoHeader, now_ms: int) -> None:
        for h in (header_a, header_b):
            if not h.signed:
                raise HeaderError("unsigned evidence header", got=h.height)
        if header_a.hash() == header_b.hash():
            raise HeaderError("evidence headers are the same header", got=header_a.height)


STATES = [SparseMerkleTree.from_items([(b"k", f"v{h}".encode()), (f"only-{h}".encode(), b"1")]) for h in range(20)]


def hdr(height: int, **changes: Any) -> DemoHeader:
    return replace(DemoHeader(height, T0 + 1_000 * height, STATES[height].root), **changes)


def client(n_headers: int = 0, **kwargs: Any) -> DemoClient:
    c = DemoClient(ClientId("demo-0"), ChainId("park-a"), **kwargs)
    for height in range(c.latest + 1, c.latest + 1 + n_headers):
        c.process_header(hdr(height), T0 + 1_000 * height)
    return c


# --- process = validate then apply ------------------------------------------------------------------------


def test_process_header_advances_finality() -> None:
    c = client(3)
    assert c.final_heights() == [1, 2]
    assert c.final_height == 2 and c.final_timestamp_ms == hdr(2).time_ms
    cs = c.final_consensus_state(2)
    assert cs == ConsensusState(2, hdr(2).hash(), hdr(2).time_ms, STATES[2].root)
    assert c.status(T0) is ClientStatus.ACTIVE


def test_validate_is_pure() -> None:
    c = client(3)
    before = (c.final_heights(), c.latest, c.applied[:], c.status(T0))
    c.validate_header(hdr(4), T0 + 10_000)
    assert (c.final_heights(), c.latest, c.applied, c.status(T0)) == before


def test_time_is_passed_through() -> None:
    c = client(0)
    c.process_header(hdr(1), T0 + 123_456)
    assert c.seen_now == [T0 + 123_456]
    with pytest.raises(HeaderError, match="future"):
        c.process_header(hdr(2, time_ms=T0 + 200_000), T0 + 199_999)


INVALID_HEADERS = [
    ("unsigned", hdr(4, signed=False)),
    ("skips_a_height", hdr(5)),
    ("repeats_latest", hdr(3)),
    ("from_the_future", hdr(4, time_ms=T0 + 10**9)),
]


@pytest.mark.parametrize(("name", "header"), INVALID_HEADERS, ids=[n for n, _ in INVALID_HEADERS])
def test_invalid_header_is_not_applied(name: str, header: DemoHeader) -> None:
    c = client(3)
    with pytest.raises(HeaderError):
        c.process_header(header, T0 + 10_000)
    assert c.applied == [1, 2, 3] and c.final_heights() == [1, 2]
    assert c.status(T0 + 10_000) is ClientStatus.ACTIVE
    c.process_header(hdr(4), T0 + 10_000)  # still usable


# --- misbehaviour and freezing -------------------------------------------------------------------------


def test_conflicting_header_freezes_for_good() -> None:
    c = client(3)
    with pytest.raises(MisbehaviourError):
        c.process_header(hdr(1, fork=1), T0 + 10_000)
    assert c.status(T0 + 10_000) is ClientStatus.FROZEN
    assert c.frozen_height == 1 and c.freeze_reason
    assert c.applied == [1, 2, 3]  # the conflicting header was not applied
    with pytest.raises(ClientFrozenError):
        c.process_header(hdr(4), T0 + 10_000)  # a valid header no longer helps
    with pytest.raises(ClientFrozenError):
        c.verify_membership(1, b"k", b"v1", STATES[1].prove(b"k"), T0 + 10_000)
    with pytest.raises(ClientFrozenError):
        c.verify_non_membership(1, b"nope", STATES[1].prove(b"nope"), T0 + 10_000)
    c.freeze(3, "later evidence")
    assert c.frozen_height == 1 and "later" not in c.freeze_reason  # the first freeze is kept
    # frozen wins over expired, at any time
    assert c.status(T0 + 10**12) is ClientStatus.FROZEN


def test_evidence_of_two_valid_headers_freezes() -> None:
    c = client(3)
    with pytest.raises(MisbehaviourError):
        c.check_misbehaviour(hdr(5), hdr(5, fork=1), T0 + 10_000)
    assert c.status(T0 + 10_000) is ClientStatus.FROZEN and c.frozen_height == 5
    with pytest.raises(ClientFrozenError):
        c.check_misbehaviour(hdr(6), hdr(6, fork=1), T0 + 10_000)


BAD_EVIDENCE = [
    ("different_heights", hdr(5), hdr(6)),
    ("one_unsigned", hdr(5), hdr(5, fork=1, signed=False)),
    ("same_header_twice", hdr(5), hdr(5)),
]


@pytest.mark.parametrize(("name", "a", "b"), BAD_EVIDENCE, ids=[n for n, _, _ in BAD_EVIDENCE])
def test_invalid_evidence_leaves_the_client_active(name: str, a: DemoHeader, b: DemoHeader) -> None:
    c = client(3)
    with pytest.raises(HeaderError):
        c.check_misbehaviour(a, b, T0 + 10_000)
    assert c.status(T0 + 10_000) is ClientStatus.ACTIVE and c.frozen_height is None


# --- expiry ---------------------------------------------------------------------------------------------


def test_expiry_uses_the_time_passed_in() -> None:
    c = client(3)
    last = c.final_timestamp_ms
    assert c.status(last + PERIOD) is ClientStatus.ACTIVE  # at the bound: still active
    assert c.status(last + PERIOD + 1) is ClientStatus.EXPIRED
    c.check_active(last + PERIOD)
    with pytest.raises(ClientExpiredError):
        c.check_active(last + PERIOD + 1)
    with pytest.raises(ClientExpiredError):
        c.process_header(hdr(4), last + PERIOD + 1)
    with pytest.raises(ClientExpiredError):
        c.verify_membership(2, b"k", b"v2", STATES[2].prove(b"k"), last + PERIOD + 1)
    c.verify_membership(2, b"k", b"v2", STATES[2].prove(b"k"), last + PERIOD)


def test_a_client_without_final_headers_does_not_expire() -> None:
    c = client(1)
    assert c.final_heights() == []
    assert c.status(T0 + 10**12) is ClientStatus.ACTIVE


def test_a_final_genesis_at_height_zero_starts_the_trusting_period() -> None:
    c = client(2, first_height=0)
    assert c.final_heights() == [0]
    assert c.final_timestamp_ms == hdr(0).time_ms
    assert c.status(hdr(0).time_ms + PERIOD) is ClientStatus.ACTIVE
    assert c.status(hdr(0).time_ms + PERIOD + 1) is ClientStatus.EXPIRED


def test_newer_final_header_extends_the_trusting_period() -> None:
    c = client(3)
    c.process_header(hdr(4), T0 + 4_000)
    assert c.final_timestamp_ms == hdr(3).time_ms
    assert c.status(hdr(2).time_ms + PERIOD + 1) is ClientStatus.ACTIVE


# --- proofs against final headers ----------------------------------------------------------------------------


def test_proofs_against_final_heights() -> None:
    c = client(4)
    now = T0 + 5_000
    c.verify_membership(2, b"k", b"v2", STATES[2].prove(b"k"), now)
    c.verify_membership(3, b"k", b"v3", STATES[3].prove(b"k").encode(), now)  # encoded proofs are decoded
    c.verify_non_membership(3, b"only-2", STATES[3].prove(b"only-2"), now)
    with pytest.raises(InvalidProofError):
        c.verify_membership(3, b"k", b"v2", STATES[3].prove(b"k"), now)  # value of another height
    with pytest.raises(InvalidProofError):
        c.verify_membership(3, b"k", b"v2", STATES[2].prove(b"k"), now)  # proof of another height
    with pytest.raises(InvalidProofError):
        c.verify_non_membership(2, b"only-2", STATES[2].prove(b"only-2"), now)
    with pytest.raises(CodecError):
        c.verify_membership(2, b"k", b"v2", b"\x00", now)


@pytest.mark.parametrize("height", [0, 4, 5, 99])
def test_proofs_against_non_final_heights_are_refused(height: int) -> None:
    c = client(4)  # 1..3 final, 4 applied but not final
    proof = STATES[min(height, 19)].prove(b"k")
    with pytest.raises(NotFinalError):
        c.verify_membership(height, b"k", f"v{height}".encode(), proof, T0 + 5_000)
    with pytest.raises(NotFinalError):
        c.verify_non_membership(height, b"absent", proof, T0 + 5_000)


def test_pruning_keeps_the_newest_consensus_states() -> None:
    c = client(9, max_consensus_states=3)
    assert c.final_heights() == [6, 7, 8]
    assert c.final_height == 8
    with pytest.raises(NotFinalError):
        c.verify_membership(5, b"k", b"v5", STATES[5].prove(b"k"), T0 + 10_000)
    c.verify_membership(6, b"k", b"v6", STATES[6].prove(b"k"), T0 + 10_000)


# --- router --------------------------------------------------------------------------------------------------


class OtherClient(DemoClient):
    client_type = "other"


def router() -> ClientRouter:
    r = ClientRouter()
    r.register_type("demo", DemoClient)
    r.register_type("other", OtherClient)
    return r


def test_router_ids_count_up_across_types() -> None:
    r = router()
    a = r.create("demo", chain_id=ChainId("park-a"))
    b = r.create("other", chain_id=ChainId("park-b"), trusting_period_ms=5)
    c = r.create("demo", chain_id=ChainId("park-a"))
    assert [a.client_id, b.client_id, c.client_id] == ["demo-0", "other-1", "demo-2"]
    assert isinstance(b, OtherClient) and b.trusting_period_ms == 5 and b.chain_id == "park-b"
    assert r.get(ClientId("other-1")) is b
    assert r.next_index == 3


def test_router_refuses_duplicate_types() -> None:
    r = router()
    with pytest.raises(DuplicateClientTypeError):
        r.register_type("demo", OtherClient)
    assert type(r.create("demo", chain_id=ChainId("park-a"))) is DemoClient  # the first factory stays


def test_router_unknown_type_and_id() -> None:
    r = router()
    with pytest.raises(UnknownClientError):
        r.create("ethereum", chain_id=ChainId("eth-park"))
    assert r.next_index == 0
    with pytest.raises(UnknownClientError):
        r.get(ClientId("demo-0"))


def test_router_never_reuses_an_id() -> None:
    r = router()
    first = r.create("demo", chain_id=ChainId("park-a"))
    first.freeze(1, "misbehaviour")
    replacement = r.create("demo", chain_id=ChainId("park-a"))
    assert replacement.client_id != first.client_id
    assert r.get(first.client_id) is first  # the frozen client stays, frozen, under its id
    seen = {first.client_id, replacement.client_id}
    for _ in range(50):
        new_id = r.create("other", chain_id=ChainId("park-b")).client_id
        assert new_id not in seen
        seen.add(new_id)
    snapshot = r.clients()
    snapshot.clear()
    assert len(r.clients()) == 52  # clients() is a copy


@pytest.mark.parametrize(("data", "why"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a test state"),
    (b'{"v": 3, "type": "poc", "base": {"client_id": "poc-0"}}', "not a test state"),
    (b'{"v": 2, "type": "dpos", "base": {"client_id": "poc-0"}}', "not a test state"),
    (b'{"v": 2, "type": "poc", "base": {"client_id": "poc-9"}}', "another client"),
    (b'{"v": 2, "type": "poc", "client_id": "poc-9"}', "another client"),
])
def test_a_persisted_state_envelope_is_checked_once_for_every_client_type(data: bytes, why: str) -> None:
    from protocol.light_client import open_state

    with pytest.raises(CodecError, match=why):
        open_state(data, client_type="poc", versions=(1, 2), client_id=ClientId("poc-0"), name="a test state")
    ok = open_state(b'{"v": 1, "type": "poc", "base": {"client_id": "poc-0"}}', client_type="poc", versions=(1, 2),
                    client_id=ClientId("poc-0"), name="a test state")
    assert ok["v"] == 1
