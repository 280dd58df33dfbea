"""The Fabric park's ``max_certificate_age_ms`` (SPEC §7.9) reaches the bridge chaincode's genesis (``init_bridge``),
as the DPoS, PoC and Ethereum parks' do; left at the default it is not written (the chaincode's default applies and
the genesis of an existing park does not change)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chains.fabric.network import genesis as fabric_genesis
from protocol.certificate import Validator, ValidatorSet


class _Tools:
    def genesis_block(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"block")


class _Network:
    """Stands in for the Fabric binaries (key material and the channel block) in this unit test of the genesis."""

    def __init__(self, cfg: Any) -> None:
        self.tools = _Tools()

    def init(self) -> None:
        pass


def _init_bridge(tmp_path: Path, params: dict[str, Any]) -> dict[str, Any]:
    vset = ValidatorSet((Validator("op-a", bytes(32), bytes(20), 1),))
    g = fabric_genesis.build_genesis(chain_id="fabric-park", params=params, accounts={"gina": (b"", 10)},
                                     relay_validators=vset, lanes=[("lane-0", "dpos-park")], genesis_time_ms=1,
                                     data_dir=tmp_path, base_port=27000, host="127.0.0.1")
    section: dict[str, Any] = json.loads(g["init_bridge"])["bridge"]
    return section


def test_a_configured_age_is_in_the_bridge_genesis_and_the_default_is_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric_genesis, "FabricNetwork", _Network)
    assert _init_bridge(tmp_path / "a", {"max_certificate_age_ms": 90_000})["max_certificate_age_ms"] == 90_000
    assert "max_certificate_age_ms" not in _init_bridge(tmp_path / "b", {})
    with pytest.raises(ValueError, match="max_certificate_age_ms"):  # out of the 10 s .. 1 day range
        _init_bridge(tmp_path / "c", {"max_certificate_age_ms": 5_000})
