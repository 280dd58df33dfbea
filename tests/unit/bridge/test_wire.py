"""Wire JSON of relay certificates (:mod:`chains.common.wire`): round trips and strict parsing."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from chains.common import wire
from protocol.errors import CodecError
from tests.unit.bridge.sim import RelaySim


@pytest.fixture
def cert_json() -> dict[str, Any]:
    relay = RelaySim()
    relay.tree = relay.tree.set(b"relay/verified/a/b/lane-0/1", b"\x11" * 32)
    return wire.certificate_to_json(relay.certificate(b"relay/verified/a/b/lane-0/1", 1_000))


def test_certificate_round_trips(cert_json: dict[str, Any]) -> None:
    cert = wire.certificate_from_json(cert_json)
    assert wire.certificate_to_json(cert) == cert_json
    # and survives a trip through text
    assert wire.certificate_from_json(json.loads(json.dumps(cert_json))) == cert
    assert set(cert_json) == {"commit", "key", "value", "proof"}
    assert set(cert_json["commit"]) == {"header", "round", "signatures"}
    assert set(cert_json["commit"]["signatures"][0]) == {"validator_index", "ed25519_sig", "secp256k1_sig"}


def test_non_membership_certificate_has_null_value() -> None:
    relay = RelaySim()
    cert = wire.certificate_to_json(relay.certificate(b"relay/outcome/x", 1_000))
    assert cert["value"] is None
    assert wire.certificate_from_json(cert).value is None


def test_validator_set_round_trips_and_checks_its_hash() -> None:
    vs = RelaySim().vset
    body = wire.validator_set_to_json(vs)
    assert wire.validator_set_from_json(body) == vs
    del body["hash"]
    assert wire.validator_set_from_json(body) == vs  # the hash is optional
    body["hash"] = "11" * 32
    with pytest.raises(CodecError):
        wire.validator_set_from_json(body)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(c: dict[str, Any]) -> None:
        obj: Any = c
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
    return fn


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def fn(c: dict[str, Any]) -> None:
        obj: Any = c
        for p in path[:-1]:
            obj = obj[p]
        del obj[path[-1]]
    return fn


BAD: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("uppercase hex", lambda c: c.update(key=c["key"].upper())),
    ("0x prefix", lambda c: c.update(key="0x" + c["key"])),
    ("odd-length hex", lambda c: c.update(key=c["key"] + "0")),
    ("spaces in hex", lambda c: c.update(proof=c["proof"][:4] + " " + c["proof"][4:])),
    ("unknown top-level key", _set(("extra",), 1)),
    ("missing value", _drop(("value",))),
    ("unknown header key", _set(("commit", "header", "extra"), 1)),
    ("missing header field", _drop(("commit", "header", "data_hash"))),
    ("short state root", _set(("commit", "header", "state_root"), "00" * 31)),
    ("height as string", _set(("commit", "header", "height"), "5")),
    ("height as bool", _set(("commit", "header", "height"), True)),
    ("negative round", _set(("commit", "round"), -1)),
    ("float time", _set(("commit", "header", "time_ms"), 1.5)),
    ("signatures not a list", _set(("commit", "signatures"), {})),
    ("short ed25519 signature", _set(("commit", "signatures", 0, "ed25519_sig"), "00" * 63)),
    ("bad secp256k1 length", _set(("commit", "signatures", 0, "secp256k1_sig"), "00" * 64)),
    ("truncated proof", lambda c: c.update(proof=c["proof"][:-2])),
    ("proof with trailing bytes", lambda c: c.update(proof=c["proof"] + "00")),
    ("bad chain id", _set(("commit", "header", "chain_id"), "Relay")),
    ("not an object", lambda c: c.clear()),
]


@pytest.mark.parametrize(("name", "mutate"), BAD, ids=[b[0] for b in BAD])
def test_malformed_certificate_is_a_codec_error(cert_json: dict[str, Any], name: str,
                                                mutate: Callable[[dict[str, Any]], None]) -> None:
    bad = copy.deepcopy(cert_json)
    mutate(bad)
    with pytest.raises(CodecError):
        wire.certificate_from_json(bad)


def test_a_list_is_not_a_certificate() -> None:
    with pytest.raises(CodecError):
        wire.certificate_from_json([])
