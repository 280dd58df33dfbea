"""The Ethereum park's genesis announces its market (SPEC §E2.9): at the operator's CREATE address of the nonce right
after the park's deployment, with its feeder, members and round defaults; none without ``market_buses``."""

from __future__ import annotations

from pathlib import Path

import pytest

from chains.ethereum.deploy import create_address, market_step_count, park_step_count
from chains.ethereum.node import build_genesis
from protocol.certificate import Validator, ValidatorSet

OPERATOR, ERIN, FRANK = bytes([1]) * 20, bytes([2]) * 20, bytes([3]) * 20
MARKET = {"market_buses": {"1": {"parent": 0, "length_m": 300, "limit_wh": 9_000},
                           "2": {"parent": 1, "length_m": 200, "limit_wh": 8_000}},
          "market_members": {"erin": 2}, "market_charge_rate": 7, "market_round_s": 20,
          "market_min_imported_score": 6_000}


def genesis(params: dict[str, object], accounts: dict[str, tuple[bytes, int]] | None = None) -> dict[str, object]:
    vset = ValidatorSet((Validator("op-a", bytes(32), bytes([9]) * 20, 1),))
    return build_genesis(chain_id="eth-park", params=params, nodes={"anvil": OPERATOR},
                         accounts=accounts or {"erin": (ERIN, 500), "frank": (FRANK, 0), "operator": (OPERATOR, 0)},
                         relay_validators=vset, lanes=[("lane-0", "dpos-park"), ("lane-1", "poc-park")],
                         genesis_time_ms=0, data_dir=Path("/nonexistent"))


def test_the_genesis_names_the_market_at_the_nonce_after_the_parks_deployment() -> None:
    g = genesis(MARKET)
    market = g["market"]
    assert isinstance(market, dict)
    # 7 contracts, 2 lanes, the default registry (1 transformer, 1 station), 1 non-zero balance
    first = park_step_count(2, 1, 1, 1)
    assert market["first_nonce"] == first == 12
    assert market["address"] == create_address(OPERATOR, first)
    assert market["buses"] == [[0, 0, 1], [0, 300, 9_000], [1, 200, 8_000]]
    assert market["members"] == {"erin": {"address": "0x" + ERIN.hex(), "bus": 2}}
    assert (market["charge_rate"], market["round_s"], market["min_imported_score"]) == (7, 20, 6_000)
    assert market_step_count(3, 1, 6_000) == 2 + 1 + 3 + 2


def test_no_feeder_no_market_and_a_member_must_be_an_account() -> None:
    assert "market" not in genesis({})
    with pytest.raises(ValueError, match="not accounts"):
        genesis({**MARKET, "market_members": {"zed": 1}})
