"""``parkrelay market``: parsing, dispatch to each park kind's handler, its typed usage errors, and what the DPoS
and PoC handlers sign, against an in-memory park view (no chain runs here; tests/integration/test_asset_matrix.py
runs the commands on a devnet). The Fabric handler's calls: tests/unit/test_market_cli_fabric.py."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from chains.dpos.market import dr_commitment
from relay.ops import parks
from relay.ops.cli import main
from relay.ops.market import (
    HANDLERS,
    Action,
    MarketArgumentError,
    UnknownParkError,
    UnsupportedMarketError,
    pyparks,
    run,
)

ERIN = "0x" + "e1" * 20
CONFIG = """
[deployment]
data_dir = "{data}"
[relay]
validators = ["op-a"]
[[chains]]
id = "dpos-park"
kind = "dpos"
nodes = ["witness-a"]
base_port = 41000
accounts = {{ alice = 1000, bob = 1000, operator = 0 }}
[[chains]]
id = "poc-park"
kind = "poc"
nodes = ["farmer-a"]
base_port = 41100
accounts = {{ carol = 1000, operator = 0 }}
[[chains]]
id = "eth-park"
kind = "ethereum"
base_port = 41200
accounts = {{ erin = 1000, operator = 0 }}
[[chains]]
id = "fabric-park"
kind = "fabric"
base_port = 41300
accounts = {{ gina = 1000, operator = 0 }}
"""


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    """A four-park config; the Ethereum park's genesis (no market deployed) and the PoC park's written by hand."""
    data = tmp_path / "data"
    (data / "genesis").mkdir(parents=True)
    (data / "genesis" / "eth-park.json").write_text(json.dumps({
        "chain_id": "eth-park", "contracts": {"bridge": "0x" + "00" * 20, "energy_token": "0x" + "00" * 20},
        "confirmation_depth": 2, "accounts": {"erin": {"address": ERIN, "balance_wh": 1000}}}))
    (data / "genesis" / "poc-park.json").write_text(json.dumps({"app": {"grid_operator": "operator",
                                                                        "round_blocks": 10}}))
    path = tmp_path / "devnet.toml"
    path.write_text(CONFIG.format(data=data))
    return path


def cli(cfg_path: Path, *argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(["market", *argv, "--config", str(cfg_path), "--json"])
    text = out.getvalue()
    return rc, json.loads(text) if text.startswith("{") else text


# -- dispatch and typed errors ---------------------------------------------------------------------------------------

USAGE_ERRORS = [
    (["nowhere", "rounds"], "market.unknown_park"),
    (["fabric-park", "rounds"], "market.unsupported"),  # not an action of the Fabric market
    (["dpos-park", "no-such-action"], "market.unsupported"),
    (["poc-park", "dr-register", "--as", "carol", "--role", "user"], "market.unsupported"),  # a DPoS action
    (["eth-park", "feeder"], "market.unsupported"),  # its node deployed no market
    (["dpos-park", "bid", "--as", "alice", "--side", "hold", "--amount-wh", "1", "--price", "1"],
     "market.bad_argument"),
    (["dpos-park", "bid", "--side", "buy", "--amount-wh", "1", "--price", "1"], "market.bad_argument"),  # no --as
    (["dpos-park", "bid", "--as", "alice", "--side", "buy", "--amount-wh", "0", "--price", "1"],
     "market.bad_argument"),
    (["dpos-park", "dr-register", "--as", "alice", "--role", "user", "--subject", "erin"], "market.bad_argument"),
    (["dpos-park", "dr-register", "--as", "alice", "--role", "user", "--import-from", "eth-park"],
     "market.bad_argument"),
    (["dpos-park", "dr-register", "--as", "alice", "--role", "user", "--import-from", "dpos-park", "--subject", "x",
      "--model", "m"], "market.bad_argument"),
    (["dpos-park", "dr-register", "--as", "alice", "--role", "user", "--import-from", "nowhere", "--subject", "x",
      "--model", "m"], "market.unknown_park"),
    (["dpos-park", "dr-report", "--as", "alice", "--request", "1", "--delivered", "bob:5"], "market.bad_argument"),
    (["poc-park", "import-reputation", "--as", "carol", "--import-from", "eth-park"], "market.bad_argument"),
    (["dpos-park", "round", "x"], "market.bad_argument"),
]


@pytest.mark.parametrize(("argv", "code"), USAGE_ERRORS, ids=[" ".join(a[:2]) + f" -> {c}" for a, c in USAGE_ERRORS])
def test_a_usage_error_exits_2_with_its_code_and_signs_nothing(cfg_path: Path, argv: list[str], code: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def no_chain(*a: Any, **k: Any) -> Any:
        raise AssertionError("a usage error reached the chain")

    monkeypatch.setattr(parks.PyPark, "_submit", no_chain)
    monkeypatch.setattr(pyparks, "rpc", no_chain)
    rc, out = cli(cfg_path, *argv)
    assert rc == 2 and out["error"]["code"] == code, out


def test_each_error_class_has_its_code() -> None:
    assert (UnknownParkError.code, UnsupportedMarketError.code, MarketArgumentError.code) == (
        "market.unknown_park", "market.unsupported", "market.bad_argument")


def test_actions_lists_a_parks_market_and_help_describes_an_action(cfg_path: Path) -> None:
    rc, out = cli(cfg_path, "eth-park", "actions")
    assert rc == 0 and out["kind"] == "ethereum" and {"open", "bid", "clear", "settle", "admit"} <= set(out["actions"])
    rc, text = cli(cfg_path, "dpos-park", "dr-register", "--help")
    assert rc == 0 and "--import-from" in text and "dr_import_min_score" in text


def test_config_and_json_may_come_before_the_action(cfg_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["market", "poc-park", "--json", "--config", str(cfg_path), "actions"])
    assert rc == 0 and json.loads(out.getvalue())["kind"] == "poc"


@pytest.mark.parametrize("kind", sorted(HANDLERS))
def test_every_handler_names_its_kind_and_documents_each_action(kind: str) -> None:
    mod = importlib.import_module(HANDLERS[kind])
    assert mod.KIND == kind and mod.ACTIONS
    for name, action in mod.ACTIONS.items():
        assert isinstance(action, Action) and action.name == name and action.help
        assert action.run.__doc__, f"{kind} {name}: its docstring is the action's --help"


def test_every_park_kind_has_a_market_handler() -> None:
    from chains.registry import KINDS

    assert set(KINDS) <= set(HANDLERS)


# -- what the Python parks' handlers sign ----------------------------------------------------------------------------


class FakePark:
    """A DPoS/PoC park view in memory: state values, the head's time, and the transactions submitted."""

    def __init__(self, state: dict[str, Any], now_ms: int = 0, height: int = 5) -> None:
        self.url = "http://127.0.0.1:1"
        self.state = {k: json.dumps(v).encode() for k, v in state.items()}
        self.now_ms, self.height = now_ms, height
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def query(self, key: str) -> bytes | None:
        return self.state.get(key)

    def _submit(self, sender: str, op: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.sent.append((sender, op, json.loads(json.dumps(args))))
        return "ab" * 32, {"ok": True, "height": self.height}

    def account(self, name: str) -> str:
        return name


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, cfg_path: Path) -> dict[str, FakePark]:
    """The DPoS and PoC parks of the config are :class:`FakePark` s (the others' real views read their genesis)."""
    views = {"dpos-park": FakePark({"market/params": {"round_ms": 60_000}}),
             "poc-park": FakePark({})}
    real = parks.park_view

    def view(cfg: Any, chain_id: str) -> Any:
        return views[chain_id] if chain_id in views else real(cfg, chain_id)

    def fake_rpc(url: str, method: str, params: Any = None, timeout: float = 3.0) -> Any:
        park = next(v for v in views.values() if v.url == url)
        if method == "status":
            return {"height": park.height, "final_height": park.height, "timestamp_ms": park.now_ms}
        if method == "getEvents":
            return []
        raise AssertionError(method)

    monkeypatch.setattr(parks, "park_view", view)
    monkeypatch.setattr(pyparks, "rpc", fake_rpc)
    return views


def go(cfg_path: Path, park: str, *argv: str) -> Any:
    from relay.ops.config import load_config

    return run(load_config(cfg_path), park, list(argv))


@pytest.mark.parametrize(("now_ms", "round_"), [(10_000, 0), (56_999, 0), (57_001, 1), (130_000, 2)])
def test_a_bid_goes_to_the_current_round_or_the_next_when_the_current_is_about_to_close(
        cfg_path: Path, fake: dict[str, FakePark], now_ms: int, round_: int) -> None:
    fake["dpos-park"].now_ms = now_ms
    out = go(cfg_path, "dpos-park", "bid", "--as", "bob", "--side", "buy", "--amount-wh", "1500", "--price", "120")
    assert out["round"] == round_
    assert fake["dpos-park"].sent == [("bob", "market.submit_bid", {"kind": "buy", "amount_wh": 1500, "price": 120,
                                                                    "round": round_})]


def test_a_sealed_dr_bid_is_committed_kept_0600_and_revealed_as_committed(cfg_path: Path,
                                                                          fake: dict[str, FakePark]) -> None:
    park = fake["dpos-park"]
    out = go(cfg_path, "dpos-park", "dr-commit", "--as", "bob", "--request", "7", "--amount-wh", "800", "--price",
             "40")
    sender, op, args = park.sent[0]
    kept = Path(out["sealed_bid"])
    salt = json.loads(kept.read_text())["salt"]
    assert (sender, op) == ("bob", "dr.commit") and args == {"request_id": 7, "commitment": out["commitment"]}
    assert out["commitment"] == dr_commitment(7, "bob", 800, 40, salt) and len(salt) == 32
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    go(cfg_path, "dpos-park", "dr-reveal", "--as", "bob", "--request", "7")
    assert park.sent[1] == ("bob", "dr.reveal", {"request_id": 7, "amount_wh": 800, "price": 40, "salt": salt})
    with pytest.raises(MarketArgumentError):  # nothing kept for another request
        go(cfg_path, "dpos-park", "dr-reveal", "--as", "bob", "--request", "8")


def test_dr_register_names_the_imported_attestation_with_the_subject_as_its_park_names_it(
        cfg_path: Path, fake: dict[str, FakePark]) -> None:
    go(cfg_path, "dpos-park", "dr-register", "--as", "alice", "--role", "aggregator", "--import-from", "eth-park",
       "--subject", "erin", "--model", "eth-delivery-record/v1")
    assert fake["dpos-park"].sent == [("alice", "dr.register", {"role": "aggregator", "import": {
        "src_chain": "eth-park", "subject": ERIN, "model": "eth-delivery-record/v1"}})]


def test_a_poc_unit_imports_reputation_and_the_operator_reports_delivery(cfg_path: Path,
                                                                        fake: dict[str, FakePark]) -> None:
    park = fake["poc-park"]
    out = go(cfg_path, "poc-park", "import-reputation", "--as", "carol", "--import-from", "eth-park", "--subject",
             "erin", "--model", "eth-delivery-record/v1")
    assert park.sent[0] == ("carol", "market.import_reputation", {"src_chain": "eth-park", "subject": ERIN,
                                                                  "model": "eth-delivery-record/v1"})
    assert out["unit"]["response_ppm"] == 900_000  # nothing recorded in the fake state: the default
    go(cfg_path, "poc-park", "report", "--round", "3", "--service", "reserve", "--unit", "farmer-a",
       "--delivered-kw", "40")
    assert park.sent[1] == ("operator", "market.report", {"round": 3, "service": "reserve", "unit": "farmer-a",
                                                          "delivered_kw": 40})


def test_dr_report_parses_each_winners_delivery(cfg_path: Path, fake: dict[str, FakePark]) -> None:
    go(cfg_path, "dpos-park", "dr-report", "--as", "alice", "--request", "2", "--delivered", "bob=700",
       "--delivered", "dan=0")
    assert fake["dpos-park"].sent == [("alice", "dr.report_delivery", {"request_id": 2,
                                                                       "delivered": {"bob": 700, "dan": 0}})]


def test_a_chain_refusal_exits_1_with_the_chains_code(cfg_path: Path, fake: dict[str, FakePark],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(sender: str, op: str, args: dict[str, Any]) -> Any:
        raise parks.TxRefusedError("dpos-park", op, {"code": "reputation.insufficient", "message": "below"})

    monkeypatch.setattr(fake["dpos-park"], "_submit", refuse)
    rc, out = cli(cfg_path, "dpos-park", "dr-register", "--as", "alice", "--role", "user")
    assert rc == 1 and out["error"]["code"] == "reputation.insufficient"


def test_round_shows_open_bids_then_the_cleared_result(cfg_path: Path, fake: dict[str, FakePark]) -> None:
    park = fake["dpos-park"]
    park.state["market/round/4"] = json.dumps([{"id": 1}]).encode()
    assert go(cfg_path, "dpos-park", "round", "4")["state"] == "open"
    park.state["market/result/4"] = json.dumps({"fills": [], "volume_wh": 0}).encode()
    assert go(cfg_path, "dpos-park", "round", "4")["state"] == "cleared"
    assert go(cfg_path, "dpos-park", "round", "5")["state"] == "none"


def test_a_witness_or_farmer_signs_with_its_node_key(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--as farmer-a``: a node's account is its node key's (genesis), and it has no account key file."""
    from chains.common.tx import Tx
    from protocol.crypto import ed25519_verify
    from relay.ops.config import load_config
    from relay.ops.keys import create_secret, ed25519_signer
    from relay.ops.layout import account_key_path, node_key_path

    cfg = load_config(cfg_path)
    create_secret(node_key_path(cfg, "poc-park", "farmer-a"))
    pubkey = ed25519_signer(node_key_path(cfg, "poc-park", "farmer-a")).pubkey
    assert not account_key_path(cfg, "poc-park", "farmer-a").exists()
    sent: list[Tx] = []

    def fake_rpc(url: str, method: str, params: Any = None, timeout: float = 3.0) -> Any:
        if method == "getAccount":
            return {"nonce": 0}
        if method == "submitTx":
            sent.append(Tx.from_json(params["tx"]))
            return {"hash": "cd" * 32}
        return {"ok": True, "height": 3}

    monkeypatch.setattr(parks, "rpc", fake_rpc)
    parks.park_view(cfg, "poc-park")._submit("farmer-a", "poc.erase", {"plot_id": "00" * 32})
    (tx,) = sent
    ed25519_verify(pubkey, tx.sign_bytes(), tx.signature, what="the farmer's transaction")
