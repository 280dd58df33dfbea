"""Pure PoC rules: plot binding, challenge chain, deadlines, retarget, fork choice, genesis."""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import replace

import pytest

from chains.poc.consensus import (
    CHALLENGE_TAG,
    PLOT_ID_TAG,
    SLOT_TAG,
    ConsensusContext,
    PocParams,
    ProofVerifier,
    deadline_ms,
    expected_plot_size,
    genesis_context,
    genesis_header,
    is_heavier,
    next_challenge,
    next_difficulty,
    plot_id,
    slot_challenge,
    validate_header,
)
from chains.poc.plots import Farmer
from chains.poc.testing import ChainBuilder, FarmedChain, make_params
from protocol.errors import CodecError, HeaderError
from protocol.types import ChainId


def test_plot_id_binds_key_and_nonce() -> None:
    pk, nonce = b"\x01" * 32, b"\x02" * 32
    assert plot_id(pk, nonce) == hashlib.sha256(PLOT_ID_TAG + pk + nonce).digest()
    assert plot_id(b"\x03" * 32, nonce) != plot_id(pk, nonce)
    with pytest.raises(CodecError):
        plot_id(pk[:31], nonce)


def test_challenge_chain_and_slots() -> None:
    c, q = b"\x0a" * 32, b"\x0b" * 32
    assert next_challenge(c, q) == hashlib.sha256(CHALLENGE_TAG + c + q).digest()
    assert slot_challenge(c, 0) == c
    assert slot_challenge(c, 2) == hashlib.sha256(SLOT_TAG + c + (2).to_bytes(4, "big")).digest()


def test_deadline_formula() -> None:
    quality, challenge = b"\x01" * 32, b"\x02" * 32
    q = int.from_bytes(hashlib.sha256(quality + challenge).digest(), "big")
    assert deadline_ms(quality, challenge, 2000, 21, 0) == q * 2000 // 2**256
    # each slot adds one difficulty (for k=21)
    assert deadline_ms(quality, challenge, 2000, 21, 3) == (3 * 2**256 + q) * 2000 // 2**256
    # a bigger plot counts for its expected size: its deadlines shrink by S(21)/S(22)
    assert deadline_ms(quality, challenge, 2000, 22, 0) == q * 2000 * expected_plot_size(21) // (
        2**256 * expected_plot_size(22))
    assert expected_plot_size(21) == 43 * 2**20


def _ctx(difficulty: int, window: tuple[tuple[int, int], ...]) -> ConsensusContext:
    return ConsensusContext(height=len(window) - 1, header_hash=b"\x00" * 32, timestamp_ms=window[-1][0],
                            state_root=b"\x00" * 32, challenge=b"\x00" * 32, quality=b"\x00" * 32,
                            difficulty=difficulty, cumulative_weight=window[-1][1], window=window)


def _window(n: int, difficulty: int, interval_ms: int) -> tuple[tuple[int, int], ...]:
    return tuple((1000 + i * interval_ms, i * difficulty) for i in range(n + 1))


PARAMS = make_params(n_plots=2, target_interval_ms=1000, retarget_window=16, max_adjust_divisor=8, min_difficulty=16)


@pytest.mark.parametrize(("name", "parent", "expected"), [
    ("no interval yet: keep", _ctx(2000, ((1000, 0),)), 2000),
    ("on target: keep", _ctx(2000, _window(16, 2000, 1000)), 2000),
    # intervals of 1250 ms at 2000: raw = 2000 * 1000 // 1250 = 1600, below one 12.5 % step (1750)
    ("slow: down, clamped to one step", _ctx(2000, _window(16, 2000, 1250)), 1750),
    ("slightly slow: exact raw value", _ctx(2000, _window(16, 2000, 1100)), 2000 * 1000 // 1100),
    ("fast: up, clamped to one step", _ctx(2000, _window(16, 2000, 500)), 2250),
    ("slightly fast: exact raw value", _ctx(2000, _window(16, 2000, 950)), 2000 * 1000 // 950),
    ("floor at min difficulty", _ctx(16, _window(16, 16, 5000)), 16),
    ("zero span counts as 1 ms", _ctx(2000, tuple((1000, i * 2000) for i in range(3))), 2250),
])
def test_next_difficulty(name: str, parent: ConsensusContext, expected: int) -> None:
    assert next_difficulty(PARAMS, parent) == expected, name


def test_is_heavier() -> None:
    lo, hi = b"\x01" * 32, b"\x02" * 32
    assert is_heavier(10, hi, 9, lo)
    assert not is_heavier(9, lo, 10, hi)
    assert is_heavier(10, lo, 10, hi)  # tie: lower hash wins
    assert not is_heavier(10, hi, 10, lo)
    assert not is_heavier(10, lo, 10, lo)


def test_genesis_context_checks_the_genesis() -> None:
    g = genesis_header(PARAMS, 5, b"\x07" * 32)
    ctx = genesis_context(PARAMS, g)
    assert ctx.cumulative_weight == 0 and ctx.difficulty == PARAMS.initial_difficulty and ctx.window == ((5, 0),)
    with pytest.raises(HeaderError):
        genesis_context(PARAMS, replace(g, difficulty=1))
    with pytest.raises(HeaderError):
        genesis_context(PARAMS, replace(g, challenge=b"\x00" * 32))


def test_params_and_context_json_roundtrip(chain: FarmedChain) -> None:
    assert PocParams.from_json(PARAMS.to_json()) == PARAMS
    ctx = chain.contexts[5]
    assert ConsensusContext.from_json(ctx.to_json()) == ctx
    bad = ctx.to_json()
    bad["window"] = bad["window"][:-1]
    with pytest.raises(CodecError):
        ConsensusContext.from_json(bad)
    with pytest.raises(CodecError):
        PocParams.from_json({**PARAMS.to_json(), "retarget_window": 0})
    with pytest.raises(CodecError):
        PocParams(chain_id=ChainId("x"), genesis_challenge=b"\x00", initial_difficulty=1)


def test_validate_header_returns_the_child_context(chain: FarmedChain, verifier: ProofVerifier) -> None:
    parent = chain.builder.genesis
    for header, ctx in zip(chain.headers[:10], chain.contexts[:10], strict=True):
        got = validate_header(header, parent, chain.params, header.timestamp_ms, verifier)
        assert got == ctx
        assert got.quality == verifier(plot_id(header.farmer_pubkey, header.plot_nonce), header.k,
                                       slot_challenge(header.challenge, header.slot), header.proof)
        parent = got
    # validate_header changes nothing: the same header validates twice
    assert validate_header(chain.headers[0], chain.builder.genesis, chain.params, 0 + chain.headers[0].timestamp_ms,
                           verifier) == chain.contexts[0]


def test_expected_interval_is_difficulty_over_plots(farmers: list[Farmer]) -> None:
    """Measured on the two real plots: mean least deadline = D / 2 (D / plots), exponential; and without
    slots 13.5 % (e^-2) of heights would have no proof at all, which is why slots exist."""
    d = 1_000_000
    plots = [(info, prover) for f in farmers for info, prover in f._plots.values()]
    least, none_in_slot0, n = [], 0, 2000
    for i in range(n):
        challenge = hashlib.sha256(b"interval" + i.to_bytes(4, "big")).digest()
        best: int | None = None
        for slot in range(64):
            sc = slot_challenge(challenge, slot)
            for _, prover in plots:
                for q in prover.get_qualities_for_challenge(sc):
                    dl = deadline_ms(bytes(q), sc, d, 21, slot)
                    best = dl if best is None else min(best, dl)
            if slot == 0 and best is None:
                none_in_slot0 += 1
            if best is not None and best < (slot + 1) * d:
                break
        assert best is not None
        least.append(best)
    mean = statistics.mean(least) / d
    assert 0.45 < mean < 0.55, mean  # D/2; D/(plots+1) would be 0.333
    assert 0.45 < statistics.pstdev(least) / d < 0.55  # exponential: stdev = mean
    assert abs(none_in_slot0 / n - math.exp(-2)) < 0.03


@pytest.mark.parametrize(("initial", "direction"), [(8000, "down"), (500, "up")])
def test_retarget_moves_toward_target(farmers: list[Farmer], initial: int, direction: str) -> None:
    """2 plots at 1000 ms target want difficulty ~2000; start 4x off and farm 48 blocks."""
    params = make_params(n_plots=2, target_interval_ms=1000, initial_difficulty=initial)
    builder = ChainBuilder(params, farmers)
    pairs = builder.extend(builder.genesis, 48)
    diffs = [h.difficulty for h, _ in pairs]
    if direction == "down":
        assert diffs[12] < initial // 2 and max(diffs[24:]) < initial // 2
    else:
        assert diffs[12] > initial * 2 and min(diffs[24:]) > initial * 2
    assert 1000 < statistics.mean(diffs[-16:]) < 4000
