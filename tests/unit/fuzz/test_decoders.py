"""Every decoder and verifier raises only its typed errors (issue 15, "hostile input, everywhere").

Each target of tests/unit/fuzz/targets.py gets hypothesis-drawn mutations of its valid seeds (derandomized,
modest example counts: the suite stays fast; ``python bench/fuzz.py --minutes N`` runs the same targets
longer). A :class:`~protocol.errors.ProtocolError` is a refusal; any other exception fails the test with the
input that caused it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from tests.unit.fuzz.config import fuzz_settings
from tests.unit.fuzz.mutate import apply_bytes, apply_json, edits
from tests.unit.fuzz.targets import Target, all_targets

TARGETS = all_targets()
SETTINGS = fuzz_settings(25)


def test_targets_cover_every_boundary() -> None:
    """The inventory of docs/security.md ("Hostile input"): each decoder family has a target."""
    names = {t.name.split(".")[0] for t in TARGETS}
    assert {"codec", "wire", "consensus", "relay", "tx", "dpos", "eth", "poc", "fabric", "adapters",
            "lane_config", "state_commitment"} <= names
    assert len(TARGETS) >= 40


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_valid_seeds_decode(target: Target) -> None:
    """The seeds are real inputs, so mutations start deep inside the decoder (a seed refused for a reason
    other than its encoding, e.g. replaying a held header, still counts: it decoded)."""
    seeds = target.seeds()
    assert seeds
    decoded = 0
    for seed in seeds:
        try:
            target.run(seed)
            decoded += 1
        except ProtocolError as exc:
            decoded += exc.code != "codec.invalid"
    assert decoded >= 1, target.name


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_mutated_input_raises_only_typed_errors(target: Target, caplog: pytest.LogCaptureFixture) -> None:
    seeds = target.seeds()
    caplog.set_level(logging.CRITICAL)

    @SETTINGS
    @given(st.integers(0, len(seeds) - 1), edits)
    def prop(i: int, e: list[tuple[int, int, int]]) -> None:
        data: Any = apply_bytes(seeds[i], e) if target.kind == "bytes" else apply_json(seeds[i], e)
        try:
            target.run(data)
        except ProtocolError:
            pass

    prop()
