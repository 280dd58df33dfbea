"""One foundation for every chain kind: the registries agree, and each kind's typed parameters refuse bad keys.

Every kind registered in :data:`chains.registry.KINDS` has its relayer adapters (:mod:`adapters.registry`), a
relay client type and an operator view; an unknown kind is refused by one lookup with the known names. A
chain table's kind-specific keys are typed: a typo, a wrong type or a value out of range is a ConfigError
naming the file, the chain, the key, what was expected and what was found.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from adapters.registry import ADAPTERS, adapters_for
from chains.common.kind import KindParams, ParamError
from chains.dpos.params import DposChainParams
from chains.ethereum.params import EthChainParams
from chains.fabric.params import FabricChainParams
from chains.poc.params import PocChainParams
from chains.registry import KINDS, UnknownChainKindError, chain_kind
from relay.chain.state_machine.park_clients import CLIENT_TYPES
from relay.ops.config import ConfigError, load_config
from relay.ops.parks import _VIEWS

ROOT = Path(__file__).resolve().parents[2]
DEVNET = ROOT / "deploy" / "devnet.toml"


# --- registries -----------------------------------------------------------------------------------------------


def test_the_four_kinds_are_registered_once() -> None:
    assert list(KINDS) == ["dpos", "poc", "ethereum", "fabric"]
    assert all(chain_kind(name).name == name for name in KINDS)


@pytest.mark.parametrize("name", ["cosmos", "", "DPOS"])
def test_an_unknown_kind_is_one_clear_error(name: str) -> None:
    for lookup in (chain_kind, adapters_for):
        with pytest.raises(UnknownChainKindError, match=re.escape(f"unknown chain kind {name!r}: expected one of "
                                                                  "['dpos', 'ethereum', 'fabric', 'poc']")):
            lookup(name)


def test_every_kind_has_adapters_a_client_type_and_a_view() -> None:
    assert set(ADAPTERS) == set(KINDS)
    assert all(ADAPTERS[name].kind is KINDS[name] for name in ADAPTERS)
    assert set(CLIENT_TYPES) == set(KINDS)
    assert all(CLIENT_TYPES[name].name == name for name in KINDS)  # the kind's name is its client type
    assert set(_VIEWS) == set(KINDS)
    assert [n for n, a in ADAPTERS.items() if a.duplicates_reach_blocks] == ["ethereum", "fabric"]
    assert [n for n, a in ADAPTERS.items() if a.one_writer] == ["fabric"]


def test_kind_attributes() -> None:
    from chains.ethereum.node import NODE_NAME

    assert {n: k.node_flag for n, k in KINDS.items()} == {"dpos": "--witness", "poc": "--farmer", "ethereum": "--node",
                                                          "fabric": "--node"}
    assert KINDS["ethereum"].fixed_nodes == (NODE_NAME,)
    assert [n for n, k in KINDS.items() if not k.runs_on_park_node] == ["ethereum", "fabric"]
    assert [n for n, k in KINDS.items() if k.attested_by_relay] == ["ethereum"]
    with pytest.raises(NotImplementedError):
        KINDS["ethereum"].make_rules({}, "anvil", None, Path())  # type: ignore[arg-type]


# --- typed parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DposChainParams, PocChainParams, EthChainParams, FabricChainParams])
def test_every_parameter_has_a_docstring(cls: type[KindParams]) -> None:
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body  # type: ignore[attr-defined]
    documented = {a.target.id for a, d in itertools.pairwise(body)
                  if isinstance(a, ast.AnnAssign) and isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant)}
    assert documented == set(cls.defaults())


def test_params_read_as_a_mapping_with_defaults_filled() -> None:
    eth = EthChainParams.from_mapping({"confirmation_depth": 3})
    assert eth == {"eth_chain_id": 31337, "block_interval_ms": 1000, "confirmation_depth": 3,
                   "transformers": {"tr-1": 150}, "stations": {"st-1": "tr-1"}, "max_certificate_age_ms": 600_000,
                   "market_buses": {}, "market_members": {}, "market_charge_rate": 0, "market_round_s": 60,
                   "market_min_imported_score": 0}
    assert eth["confirmation_depth"] == eth.confirmation_depth == 3
    dpos = DposChainParams.from_mapping({})
    assert dpos.active_witnesses is None and "active_witnesses" not in dpos.set_values()


@pytest.mark.parametrize(("cls", "raw", "message"), [
    (DposChainParams, {"maintenance_interval_block": 30},
     "maintenance_interval_block: unknown key (did you mean 'maintenance_interval_blocks'?); expected one of"),
    (DposChainParams, {"block_interval_ms": "1000"}, "block_interval_ms: expected int, got '1000'"),
    (DposChainParams, {"block_interval_ms": True}, "block_interval_ms: expected int, got True"),
    (DposChainParams, {"active_witnesses": 102}, "active_witnesses: expected 1..101, got 102"),
    (DposChainParams, {"transformers": {"tr-1": -5}}, "transformers.tr-1: expected 0..1000000000, got -5"),
    (DposChainParams, {"transformers": {"tr-1": "big"}}, "transformers: expected a table of str -> int"),
    (PocChainParams, {"plot_k": 20}, "plot_k: expected 21..32, got 20"),
    (PocChainParams, {"confirmation_depth": 0}, "confirmation_depth: expected 1..65536, got 0"),
    (PocChainParams, {"target_block_interval": 2000}, "did you mean 'target_block_interval_ms'?"),
    (EthChainParams, {"block_interval_ms": 1500}, "block_interval_ms: expected a whole number of seconds >= 1000"),
])
def test_bad_params_are_refused(cls: type[KindParams], raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=re.escape(message)):
        cls.from_mapping(raw)


# --- the deployment config ------------------------------------------------------------------------------------

BASE = """
[deployment]
data_dir = "data"

[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a", "witness-b"]
base_port = 31000
{dpos}

[[chains]]
id = "poc-park"
kind = "poc"
nodes = ["farmer-a"]
base_port = 31100
{poc}
"""


def _load(tmp: Path, dpos: str = "", poc: str = "") -> Any:
    p = tmp / "deploy.toml"
    p.write_text(BASE.format(dpos=dpos, poc=poc))
    return load_config(p)


def test_the_devnet_config_still_loads() -> None:
    cfg = load_config(DEVNET)
    dpos, poc, eth = (cfg.chain(c) for c in ("dpos-park", "poc-park", "eth-park"))
    registry = {"transformers": {"tr-1": 150, "tr-2": 100}, "stations": {"st-1": "tr-1", "st-2": "tr-2"}}
    assert isinstance(dpos.params, DposChainParams) and dpos.params.set_values() == {
        "block_interval_ms": 1000, "active_witnesses": 3, "maintenance_interval_blocks": 30,
        "relay_chain_id": "relay", "max_certificate_age_ms": 600_000, **registry}
    assert poc.params == {"target_block_interval_ms": 2000, "plot_k": 21, "plots_per_farmer": 1,
                          "confirmation_depth": 6, "relay_chain_id": "relay", "max_certificate_age_ms": 600_000,
                          **registry}
    market = {"market_buses": {"1": {"parent": 0, "length_m": 400, "limit_wh": 40_000},
                               "2": {"parent": 1, "length_m": 150, "limit_wh": 20_000},
                               "3": {"parent": 1, "length_m": 200, "limit_wh": 20_000},
                               "4": {"parent": 0, "length_m": 900, "limit_wh": 5_000}},
              "market_members": {"erin": 2, "frank": 3}, "market_charge_rate": 20, "market_round_s": 30,
              "market_min_imported_score": 6_000}
    assert eth.params == {"eth_chain_id": 31337, "block_interval_ms": 1000, "confirmation_depth": 2, **registry,
                          "max_certificate_age_ms": 600_000, **market}
    assert eth.nodes == ("anvil",)


@pytest.mark.parametrize(("dpos", "poc", "chain", "key", "expected", "got"), [
    ("maintenance_interval_block = 30", "", "dpos-park", "maintenance_interval_block", "one of [", "30"),
    ("", "plot_k = \"21\"", "poc-park", "plot_k", "int", "'21'"),
    ("", "confirmation_depth = 0", "poc-park", "confirmation_depth", "1..65536", "0"),
    ("active_witnesses = 0", "", "dpos-park", "active_witnesses", "1..101", "0"),
])
def test_a_bad_chain_key_names_file_chain_key_expected_and_got(tmp_path: Path, dpos: str, poc: str, chain: str,
                                                               key: str, expected: str, got: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, dpos, poc)
    message = str(info.value)
    assert str(tmp_path / "deploy.toml") in message
    assert f"chain {chain!r}" in message
    assert f".{key}: " in message
    assert f"expected {expected}" in message and f"got {got}" in message


def test_an_unknown_kind_in_the_config_names_the_known_ones(tmp_path: Path) -> None:
    p = tmp_path / "deploy.toml"
    p.write_text(BASE.format(dpos="", poc="").replace('kind = "poc"', 'kind = "cosmos"'))
    with pytest.raises(ConfigError, match=re.escape("chains[1].kind: expected one of ('dpos', 'poc', 'ethereum', "
                                                    "'fabric'), got 'cosmos'")):
        load_config(p)


def test_genesis_from_typed_params_is_what_the_untyped_dict_gave(tmp_path: Path) -> None:
    """No behaviour change for valid configs: a kind's genesis from the typed params equals the node module's
    genesis from the table's raw keys (the form ``devnet init`` passed before)."""
    from chains.dpos import node as dpos_node
    from chains.poc import node as poc_node
    from protocol.certificate import Validator, ValidatorSet

    cfg = _load(tmp_path, "block_interval_ms = 500\nmaintenance_interval_blocks = 10", "plot_k = 22")
    vs = ValidatorSet((Validator("op-a", b"\x01" * 32, b"\x02" * 20, 1),))
    common: dict[str, Any] = {"accounts": {"alice": (b"\x03" * 32, 5)}, "relay_validators": vs,
                              "lanes": [("lane-0", "x")], "genesis_time_ms": 1_700_000_000_123, "data_dir": tmp_path}
    for chain, module, raw in [("dpos-park", dpos_node, {"block_interval_ms": 500, "maintenance_interval_blocks": 10}),
                               ("poc-park", poc_node, {"plot_k": 22})]:
        c = cfg.chain(chain)
        nodes = {n: bytes([i + 1]) * 32 for i, n in enumerate(c.nodes)}
        typed = chain_kind(c.kind).build_genesis(chain_id=c.id, params=c.params, nodes=nodes, **common)
        assert typed == module.build_genesis(chain_id=c.id, params=raw, nodes=nodes, **common)
    assert typed["farmers"][0]["plots"][0]["k"] == 22
