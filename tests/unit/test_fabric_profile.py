"""The committed hfc connection profile of the devnet's Fabric park, and where clients find a park's profile."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from relay.ops.cli import fabric_profile, main
from relay.ops.config import load_config
from relay.ops.layout import fabric_profile_path

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "deploy" / "fabric" / "connection-profile.devnet.json"


def test_committed_devnet_profile_is_what_the_devnet_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # data_dir and the profile's paths are relative to the working directory: the repository root
    monkeypatch.chdir(REPO)
    cfg = load_config("deploy/devnet.toml")
    regenerated = fabric_profile(cfg, "fabric-park", relative_to=".")
    assert json.loads(COMMITTED.read_text()) == regenerated, (
        "deploy/fabric/connection-profile.devnet.json is stale: regenerate it with "
        "`parkrelay fabric profile --config deploy/devnet.toml --relative-to . > "
        "deploy/fabric/connection-profile.devnet.json`")
    # what hfc needs of it: both peers and every orderer on the channel, each with its TLS root; every identity
    channel = regenerated["channels"][cfg.chain("fabric-park").params["channel"]]
    assert sorted(channel["peers"]) == sorted(regenerated["peers"]) == ["peer0.OperatorMSP", "peer0.SalesMSP"]
    assert channel["orderers"] == sorted(regenerated["orderers"]) == ["orderer0", "orderer1", "orderer2"]
    users = regenerated["organizations"]["OperatorMSP"]["users"]
    assert {"admin", "gina", "operator"} <= set(users)
    assert all(not Path(u["cert"]).is_absolute() and u["cert"].startswith("var/devnet/fabric-park/")
               for u in users.values())


def test_clients_use_the_configured_profile_else_the_supervisors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config("deploy/devnet.toml")
    chain = cfg.chain("fabric-park")
    assert fabric_profile_path(cfg, chain) == Path("deploy/fabric/connection-profile.devnet.json")
    elsewhere = dataclasses.replace(cfg, path=Path("/etc/parkrelay/park.toml"))
    assert fabric_profile_path(elsewhere, chain) == Path("/etc/parkrelay/fabric/connection-profile.devnet.json")
    bare = dataclasses.replace(chain, params=dataclasses.replace(chain.params, connection_profile=""))
    assert fabric_profile_path(cfg, bare) == cfg.data_dir / "fabric-park" / "connection-profile.json"


def test_profile_command_prints_json_and_names_a_missing_park(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["fabric", "profile", "--config", "deploy/devnet.toml", "--relative-to", "."]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(COMMITTED.read_text())
    assert main(["fabric", "profile", "--config", "deploy/devnet.toml", "--chain", "dpos-park"]) == 2
    assert "dpos-park is a dpos chain" in capsys.readouterr().err
