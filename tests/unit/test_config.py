"""The deployment config's relayer section: defaults, and a typed error for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.ops.config import ConfigError, DeploymentConfig, load_config

BASE = """
[deployment]
data_dir = "data"

[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a"]
base_port = 31000
"""


def _load(tmp: Path, extra: str) -> object:
    p = tmp / "d.toml"
    p.write_text(BASE + extra)
    return load_config(p)


def test_relayer_turns_default_to_four_seconds(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[relayers]\nnames = ["relayer-a", "relayer-b"]\n')
    assert cfg.relayers == ("relayer-a", "relayer-b")  # type: ignore[attr-defined]
    assert cfg.relayer_takeover_after_s == 4.0  # type: ignore[attr-defined]
    cfg = _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\ntakeover_after_s = 1.5\n')
    assert cfg.relayer_takeover_after_s == 1.5  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ['"4"', "-1", "601", "true"])
def test_a_bad_takeover_delay_is_refused_by_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="takeover_after_s"):
        _load(tmp_path, f'[relayers]\nnames = ["relayer-a"]\ntakeover_after_s = {bad}\n')


def test_a_park_light_client_table_reaches_the_relay_genesis_init(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "light_client = { max_pending_headers = 100 }\n")
    assert cfg.chains[0].light_client == {"max_pending_headers": 100}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="light_client"):
        _load(tmp_path, 'light_client = { max_pending_headers = "100" }\n')
    with pytest.raises(ConfigError, match="light_client"):
        _load(tmp_path, "light_client = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['finality_window_ms'\]"):  # a PoC key on DPoS
        _load(tmp_path, "light_client = { finality_window_ms = 60000 }\n")


def test_the_devnet_config_gives_the_poc_client_its_window() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "deploy" / "devnet.toml")
    poc = next(c for c in cfg.chains if c.kind == "poc")
    assert poc.light_client["finality_window_ms"] == 20_000


def test_proof_pipelining_is_on_by_default_and_takes_only_a_boolean(tmp_path: Path) -> None:
    assert _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\n').relayer_pipeline_proofs is True  # type: ignore[attr-defined]
    cfg = _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\npipeline_proofs = false\n')
    assert cfg.relayer_pipeline_proofs is False  # type: ignore[attr-defined]
    for bad in ('"false"', "0", "1"):
        with pytest.raises(ConfigError, match="pipeline_proofs"):
            _load(tmp_path, f'[relayers]\nnames = ["relayer-a"]\npipeline_proofs = {bad}\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\npipeline = true\n')


def test_the_relay_engine_is_builtin_by_default_and_cometbft_needs_its_ports(tmp_path: Path) -> None:
    relay = '[relay]\nvalidators = ["op-a", "op-b"]\nbase_port = 31100\n'
    cfg = _load(tmp_path, relay)
    assert cfg.relay_engine == "builtin"  # type: ignore[attr-defined]
    cfg = _load(tmp_path, relay + 'engine = "cometbft"\n[relay.cometbft]\nbase_port = 31200\n')
    assert cfg.relay_engine == "cometbft"  # type: ignore[attr-defined]
    assert cfg.cometbft_ports("op-b") == (31203, 31204, 31205)  # type: ignore[attr-defined]
    assert cfg.cometbft_timeout_propose_ms == 1000  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"relay\.engine must be one of builtin, cometbft"):
        _load(tmp_path, relay + 'engine = "tendermint"\n')
    with pytest.raises(ConfigError, match=r"needs \[relay.cometbft\] base_port"):
        _load(tmp_path, relay + 'engine = "cometbft"\n')
    with pytest.raises(ConfigError, match=r"port 31100 .* already used by relay/op-a"):
        _load(tmp_path, relay + 'engine = "cometbft"\n[relay.cometbft]\nbase_port = 31098\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        _load(tmp_path, relay + 'engine = "cometbft"\n[relay.cometbft]\nbase_port = 31200\nladdr = "x"\n')
    for bad in ("99", "60001", '"1000"'):
        with pytest.raises(ConfigError, match="timeout_propose_ms"):
            _load(tmp_path, relay + f'engine = "cometbft"\n[relay.cometbft]\nbase_port = 31200\n'
                                    f'timeout_propose_ms = {bad}\n')


def test_a_relay_validator_does_not_change_engine(tmp_path: Path) -> None:
    from relay.ops.nodes import check_engine

    relay = '[relay]\nvalidators = ["op-a"]\nbase_port = 31100\n'
    data = f'data_dir = "{tmp_path / "data"}"\n'

    def load(extra: str) -> DeploymentConfig:
        p = tmp_path / "d.toml"
        p.write_text(BASE.replace('data_dir = "data"\n', data) + extra)
        return load_config(p)

    builtin = load(relay)
    check_engine(builtin, "op-a")  # the first start records the engine
    check_engine(builtin, "op-a")
    comet = load(relay + 'engine = "cometbft"\n[relay.cometbft]\nbase_port = 31200\n')
    with pytest.raises(ConfigError, match="made by the 'builtin' engine, and \\[relay\\] engine is 'cometbft'"):
        check_engine(comet, "op-a")
    (tmp_path / "data" / "db" / "op-a.engine").unlink()
    (tmp_path / "data" / "db" / "relay-op-a.sqlite3").write_bytes(b"")  # a database from before the marker
    with pytest.raises(ConfigError, match="made by the 'builtin' engine"):
        check_engine(comet, "op-a")


def test_relayer_min_fees_per_park(tmp_path: Path) -> None:
    from relay.relayer.policy import MinFees

    cfg = _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\n[relayers.min_fees.dpos-park]\nverify = 5\nconfirm = 2\n')
    assert cfg.relayer_min_fees == {"dpos-park": MinFees(verify=5, execute=0, confirm=2)}  # type: ignore[attr-defined]
    assert _load(tmp_path, '[relayers]\nnames = ["relayer-a"]\n').relayer_min_fees == {}  # type: ignore[attr-defined]
    for bad, match in (('[relayers.min_fees.nowhere]\nverify = 1\n', "not a park"),
                       ('[relayers.min_fees.dpos-park]\ntip = 1\n', "verify, execute, confirm"),
                       ('[relayers.min_fees.dpos-park]\nverify = -1\n', "0..2"),
                       ('[relayers.min_fees.dpos-park]\nverify = "1"\n', "0..2"),
                       ('[relayers.min_fees.dpos-park]\nverify = true\n', "0..2"),
                       ('[relayers]\nmin_fees = 3\n', "table of parks")):
        text = bad if bad.startswith("[relayers]") else '[relayers]\nnames = ["relayer-a"]\n' + bad
        with pytest.raises(ConfigError, match=match):
            _load(tmp_path, text)
