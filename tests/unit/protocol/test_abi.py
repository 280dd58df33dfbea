"""protocol.abi against eth_abi, the reference: the same bytes for every value, the same verdict on every input.

Every type list the protocol encodes is here (packets, payloads, acks, outcomes, lane configs, relay headers and
sign bytes, validator sets, consensus messages, governance). For each: random values encode to eth_abi's bytes and
decode back; eth_abi refuses exactly the values ours refuses; and on mutated, cut and extended encodings our strict
decoder accepts exactly what eth_abi's decode-then-compare accepted.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_abi.abi import decode as eth_decode
from eth_abi.abi import encode as eth_encode

from protocol import abi, codec, lane_config
from protocol.errors import CodecError, ParkRelayError
from relay.chain.consensus import messages
from tests.unit.protocol.test_codec_fast import mutations

TYPE_LISTS: list[tuple[str, ...]] = sorted({
    codec.PACKET_ABI, codec.ENERGY_ABI, codec.CHARGING_RIGHT_ABI, codec.REPUTATION_ABI, codec.ACK_ABI,
    codec.ACK_RELAYER_ABI, codec.OUTCOME_ABI, codec.OUTCOME_PAYEES_ABI, lane_config.LANE_CONFIG_ABI,
    tuple(messages._VOTE_TYPES), tuple(messages._PROPOSAL_TYPES), tuple(messages._HEADER_TYPES),
    ("bytes32[]", "address[]", "uint64[]"),  # protocol.certificate: the validator set's hash
    ("string", "string", "uint64", "uint64", "bytes32"),  # commit and vote sign bytes
    ("string", "string", "uint64", "uint64", "int64", "bytes32", "bytes32"),  # proposal sign bytes
    ("string", "string", "uint64", "string", "bytes32"),  # governance
})


def _value(rng: random.Random, t: str) -> Any:
    if t.endswith("[]"):
        return [_value(rng, t[:-2]) for _ in range(rng.choice([0, 1, 2, 5, rng.randrange(40)]))]
    if t == "string":
        alphabet = "abcXYZ09-_/ é€𝄞"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 31, 32, 33, 64, rng.randrange(90)])))
    if t == "bytes":
        return rng.randbytes(rng.choice([0, 1, 31, 32, 33, 64, 65, rng.randrange(2049)]))
    if t == "bytes32":
        return rng.randbytes(32)
    if t == "address":
        return rng.randbytes(20)
    if t.startswith("int"):
        half = 1 << (int(t[3:]) - 1)
        return rng.choice([0, -1, 1, -half, half - 1, rng.randrange(-half, half)])
    bits = int(t[4:])
    return rng.choice([0, 1, (1 << bits) - 1, rng.randrange(1 << bits)])


def _normal(t: str, v: Any) -> Any:
    """A value as protocol.abi.decode gives it back (arrays as tuples)."""
    return tuple(_normal(t[:-2], x) for x in v) if t.endswith("[]") else v


def _reference_verdict(types: tuple[str, ...], data: bytes) -> str:
    """eth_abi's: decode, re-encode, compare (what the protocol did before protocol.abi)."""
    try:
        values = eth_decode(list(types), data, strict=True)
        return "ok" if eth_encode(list(types), list(values)) == data else "error"
    except Exception:  # eth_abi raises several unrelated types for one cause
        return "error"


def _verdict(types: tuple[str, ...], data: bytes) -> str:
    try:
        abi.decode(types, data)
        return "ok"
    except CodecError:
        return "error"


@pytest.mark.parametrize("types", TYPE_LISTS, ids=",".join)
def test_random_values_encode_to_eth_abis_bytes_and_decode_back(types: tuple[str, ...]) -> None:
    rng = random.Random(hash(types) & 0xFFFF)
    for _ in range(150):
        values = [_value(rng, t) for t in types]
        data = abi.encode(types, values)
        assert data == eth_encode(list(types), values), values
        assert abi.decode(types, data) == tuple(_normal(t, v) for t, v in zip(types, values, strict=True))


@pytest.mark.parametrize("types", TYPE_LISTS, ids=",".join)
def test_mutated_encodings_get_eth_abis_verdict(types: tuple[str, ...]) -> None:
    rng = random.Random(len(types))
    accepted = refused = 0
    for _ in range(4):
        data = abi.encode(types, [_value(rng, t) for t in types])
        for mutated in mutations(data, rng, step=max(1, len(data) // 160)):
            verdict = _verdict(types, mutated)
            assert verdict == _reference_verdict(types, mutated), mutated.hex()
            accepted += verdict == "ok"
            refused += verdict == "error"
    assert refused > 50  # the mutations do reach the refusals


@pytest.mark.parametrize("types", TYPE_LISTS, ids=",".join)
def test_values_eth_abi_refuses_are_refused(types: tuple[str, ...]) -> None:
    rng = random.Random(17)
    good = [_value(rng, t) for t in types]
    for i, t in enumerate(types):
        bad_values: list[Any] = [None, 1.5]
        if t.endswith("[]"):
            bad_values += ["ab", b"ab", 3, [None]]
        elif t == "string":
            bad_values += ["\ud800", b"x", 7, [1]]
        elif t == "bytes":
            bad_values += ["text", -1, [1]]
        elif t == "bytes32":
            bad_values += [bytes(33), 7, [1]]  # eth_abi would take a hex str; the protocol never passes one
        elif t.startswith("int"):
            half = 1 << (int(t[3:]) - 1)
            bad_values += [half, -half - 1, "7", b"\x07", True]
        else:
            bad_values += [-1, 1 << int(t[4:]), "7", b"\x07", True]
        for bad in bad_values:
            values = [*good[:i], bad, *good[i + 1:]]
            with pytest.raises(CodecError):
                abi.encode(types, values)
            if not (t == "bytes32" and isinstance(bad, str)):
                with pytest.raises(Exception):  # noqa: B017 - eth_abi's refusals share no base class
                    eth_encode(list(types), values)


def test_hostile_encodings_are_refused_without_allocating() -> None:
    word = (1).to_bytes(32, "big")
    huge = (2**255).to_bytes(32, "big")
    cases = {
        ("string",): [huge + word, (32).to_bytes(32, "big") + huge, (64).to_bytes(32, "big") + bytes(64), b""],
        ("uint64[]",): [(32).to_bytes(32, "big") + huge, (32).to_bytes(32, "big") + (2**40).to_bytes(32, "big")],
        ("string[]", "uint64[]"): [(64).to_bytes(32, "big") + (96).to_bytes(32, "big") + huge + bytes(32)],
        ("uint8",): [(256).to_bytes(32, "big"), word[:31]],
        ("int64",): [(2**63).to_bytes(32, "big"), b"\x00" + b"\xff" * 31],
        ("address",): [b"\x01" + bytes(31)],
        ("bytes",): [(32).to_bytes(32, "big") + word + b"\x01" + b"\x02" + bytes(30)],  # padding not zero
    }
    for types, inputs in cases.items():
        for data in inputs:
            with pytest.raises(CodecError):
                abi.decode(types, data)
            assert _reference_verdict(types, data) == "error"
    with pytest.raises(CodecError, match="expected bytes"):
        abi.decode(("uint8",), "00" * 32)  # type: ignore[arg-type]


def test_an_address_decodes_to_its_20_bytes_and_an_int_to_its_sign() -> None:
    address = bytes(range(20))
    assert abi.decode(("address", "int64", "bytes32"), abi.encode(("address", "int64", "bytes32"),
                                                                   [address, -1, b"ab"])) == (
        address, -1, b"ab" + bytes(30))


def test_types_the_protocol_does_not_use_are_a_bug_not_input() -> None:
    for t in ("bool", "uint7", "uint264", "bytes31", "uint64[][]", "(uint64,string)", "uint64[2]"):
        with pytest.raises(ValueError, match="unsupported ABI type"):
            abi.encode((t,), [0])


def test_a_wrong_number_of_values_is_refused() -> None:
    with pytest.raises(CodecError, match="2 values expected"):
        abi.encode(("uint8", "string"), [1])


def test_errors_carry_the_codec_code() -> None:
    with pytest.raises(ParkRelayError) as exc:
        abi.decode(codec.ACK_ABI, b"\x00" * 5, "acknowledgement")
    assert exc.value.code == "codec.invalid"
    assert "acknowledgement" in str(exc.value)
