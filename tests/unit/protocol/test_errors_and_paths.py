"""Error codes (SPEC.md §9) and state paths (SPEC.md §5), checked against the spec's own tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import protocol
from protocol import errors, paths
from protocol.errors import CodecError, ParkRelayError, ProtocolError, TransportError
from protocol.types import ChainId, LaneId

SPEC = (Path(protocol.__file__).parent / "SPEC.md").read_text(encoding="utf-8")

ERROR_CLASSES = [c for name in errors.__all__ if isinstance(c := getattr(errors, name), type)
                 and issubclass(c, ParkRelayError)]


def test_codes_are_unique_and_in_the_two_trees() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))
    for cls in ERROR_CLASSES:
        assert issubclass(cls, ParkRelayError)
        assert cls in (ParkRelayError, ProtocolError, TransportError) or issubclass(cls, ProtocolError)


def test_spec_error_table_lists_every_raised_error() -> None:
    section = SPEC.split("## §9", 1)[1]
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| `([A-Za-z]+)` \|", section, re.MULTILINE))
    raised = {cls.code: cls.__name__ for cls in ERROR_CLASSES if cls not in (ParkRelayError, ProtocolError)}
    assert rows == raised


def test_error_payload() -> None:
    e = CodecError("bad field", expected=b"\x01", got=3)
    assert str(e) == "[codec.invalid] bad field (expected b'\\x01', got 3)"
    assert e.to_dict() == {"code": "codec.invalid", "disposition": "never", "message": "bad field", "expected": "01",
                           "got": 3}
    assert CodecError("plain").to_dict() == {"code": "codec.invalid", "disposition": "never", "message": "plain"}
    t = TransportError("connection reset", retryable=True, side="target")
    assert t.retryable and t.side == "target" and t.code == "transport"
    assert str(t) == "[transport] target: connection reset"
    assert not isinstance(t, ProtocolError)


def test_spec_disposition_table_matches_the_registry() -> None:
    section = SPEC.split("### §9.1", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]*) \|$", section, re.MULTILINE)
    in_spec = {code: disp for disp, codes in rows for code in re.findall(r"`([a-z_.]+)`", codes)}
    assert in_spec == {code: d.value for code, d in errors.DISPOSITIONS.items()}


def test_rate_limit_is_a_lane_error() -> None:
    assert issubclass(errors.RateLimitError, errors.LaneError)
    assert errors.RateLimitError.code != errors.LaneError.code


# --- paths -------------------------------------------------------------------------------------------------

D, SRC, L = ChainId("poc-park"), ChainId("dpos-park"), LaneId("lane-0")

PATHS = [
    ("commitments/{dst}/{lane}/{sequence}", paths.commitment_path(D, L, 12), b"commitments/poc-park/lane-0/12"),
    ("nextSequenceSend/{dst}/{lane}", paths.next_send_path(D, L), b"nextSequenceSend/poc-park/lane-0"),
    ("escrow/{denom}", paths.escrow_path("lane-0/x/kWh"), b"escrow/lane-0/x/kWh"),
    ("balances/{account}/{denom}", paths.balance_path("0xa11ce", "kWh"), b"balances/0xa11ce/kWh"),
    ("receipts/{src}/{lane}/{sequence}", paths.receipt_path(SRC, L, 3), b"receipts/dpos-park/lane-0/3"),
    ("acks/{src}/{lane}/{sequence}", paths.ack_path(SRC, L, 3), b"acks/dpos-park/lane-0/3"),
    ("relay/verified/{src}/{dst}/{lane}/{sequence}", paths.verified_path(SRC, D, L, 1),
     b"relay/verified/dpos-park/poc-park/lane-0/1"),
    ("relay/outcome/{src}/{dst}/{lane}/{sequence}", paths.outcome_path(SRC, D, L, 18446744073709551615),
     b"relay/outcome/dpos-park/poc-park/lane-0/18446744073709551615"),
]


@pytest.mark.parametrize(("template", "got", "want"), PATHS, ids=[p[0] for p in PATHS])
def test_paths(template: str, got: bytes, want: bytes) -> None:
    assert got == want
    assert f"| `{template}` |" in SPEC


@pytest.mark.parametrize("account", ["", "a/b", "/", "0xa11ce/"])
def test_balance_path_refuses_ambiguous_accounts(account: str) -> None:
    with pytest.raises(CodecError):
        paths.balance_path(account, "kWh")


def test_balance_paths_do_not_collide() -> None:
    # a voucher denom holds '/', so only an account without '/' keeps the key unambiguous
    assert paths.balance_path("a", "l/x/kWh") != paths.balance_path("a", "l/x/kWh2")
    with pytest.raises(CodecError):
        paths.balance_path("a/l", "x/kWh")
