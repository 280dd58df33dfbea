"""``parkrelay market <fabric park> …`` (relay/ops/market/fabric.py): its usage errors by code, and what each action
calls on :class:`adapters.fabric.market.FabricMarket` and as whom, against an in-memory client (no peer runs here;
tests/integration/test_asset_matrix.py runs a few of the commands on the devnet's Fabric park)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import MarketAttributeError
from relay.ops import parks
from relay.ops.market import MarketArgumentError, fabric, run
from tests.unit.test_market_cli import CONFIG, ERIN, cli

GINA = "SalesMSP:gina@SalesMSP"
OPERATOR = "OperatorMSP:operator@OperatorMSP"
STN = "OperatorMSP:stn@OperatorMSP"


class FakeMarket:
    """FabricMarket's methods in memory: each call recorded with the identity it ran as; queries answer canned."""

    def __init__(self, calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]], who: str,
                 refuse: Exception | None = None) -> None:
        self.calls, self.who, self.refuse = calls, who, refuse

    def __getattr__(self, name: str) -> Any:
        async def method(*args: Any, **kw: Any) -> Any:
            self.calls.append((self.who, name, args, kw))
            if self.refuse is not None:
                raise self.refuse
            if name == "certification":
                return {"account": args[0], "certification": {"role": "station"}}
            if name == "agreement":
                return {"account": args[0], "agreement": None}
            if name == "terms":
                return {"contract_id": args[0], "terms": {"price": 3}}
            if name in ("contract", "round", "escrow", "quote"):
                return {"answer": name}
            return [{"type": name}]

        return method


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    """The four-park config of tests/unit/test_market_cli.py; the Ethereum park's genesis written by hand (its
    accounts, to translate a subject there)."""
    data = tmp_path / "data"
    (data / "genesis").mkdir(parents=True)
    (data / "genesis" / "eth-park.json").write_text(json.dumps({
        "chain_id": "eth-park", "contracts": {"bridge": "0x" + "00" * 20, "energy_token": "0x" + "00" * 20},
        "confirmation_depth": 2, "accounts": {"erin": {"address": ERIN, "balance_wh": 1000}}}))
    path = tmp_path / "devnet.toml"
    path.write_text(CONFIG.format(data=data))
    return path


@pytest.fixture
def calls(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The Fabric park's genesis (its accounts) and connection profile (one more user, ``stn``) written by hand;
    every market call goes to a :class:`FakeMarket`."""
    data = cfg_path.parent / "data"
    (data / "genesis" / "fabric-park.json").write_text(json.dumps({
        "channel_id": "parkchannel", "chaincode": "bridge", "accounts": {"gina": GINA, "operator": OPERATOR}}))
    (data / "fabric-park").mkdir(parents=True)
    (data / "fabric-park" / "connection-profile.json").write_text(json.dumps({"organizations": {
        "OperatorMSP": {"users": {"admin": {}, "operator": {}, "stn": {}}}, "SalesMSP": {"users": {"gina": {}}}}}))
    out: list[Any] = []

    def fake(ctx: Any, who: str, fn: Any) -> Any:
        assert isinstance(ctx.view, parks.FabricPark)
        return asyncio.run(fn(FakeMarket(out, who)))

    monkeypatch.setattr(fabric, "with_market", fake)
    return out


def go(cfg_path: Path, *argv: str) -> Any:
    from relay.ops.config import load_config

    return run(load_config(cfg_path), "fabric-park", list(argv))


FABRIC_USAGE_ERRORS = [
    (["bid-and-ask"], "market.unsupported"),
    (["certify", "--role", "trader"], "market.bad_argument"),  # no --account
    (["certify", "--account", "gina", "--role", "regulator"], "market.bad_argument"),
    (["certify", "--account", "gina", "--role", "trader", "--station", "s1"], "market.bad_argument"),
    (["certify", "--account", "gina", "--role", "trader", "--import-from", "eth-park"], "market.bad_argument"),
    (["certify", "--account", "gina", "--role", "trader", "--import-from", "fabric-park", "--subject", "x",
      "--model", "m"], "market.bad_argument"),
    (["certify", "--account", "gina", "--role", "trader", "--import-from", "nowhere", "--subject", "x",
      "--model", "m"], "market.unknown_park"),
    (["certify", "--account", "nobody", "--role", "trader"], "market.bad_argument"),
    (["request", "--round-id", "r", "--station", "s1", "--power-kw", "5"], "market.bad_argument"),  # no --as
    (["request", "--as", "stn", "--round-id", "r", "--station", "s1", "--power-kw", "0"], "market.bad_argument"),
    (["bid", "--as", "stn", "--round-id", "r", "--station", "s1", "--side", "hold", "--power-kw", "1", "--price",
      "1"], "market.bad_argument"),
    (["open-round", "--round-id", "r", "--transformer", "t", "--requests-close-in-s", "60", "--bids-close-in-s",
      "30"], "market.bad_argument"),
    (["accept", "--as", "gina", "--contract-id", "never-proposed"], "market.bad_argument"),
    (["choose-plan", "--as", "gina", "--peak", "1", "--flat", "1"], "market.bad_argument"),
]


@pytest.mark.parametrize(("argv", "code"), FABRIC_USAGE_ERRORS,
                         ids=[" ".join(a[:1]) + f" -> {c}" for a, c in FABRIC_USAGE_ERRORS])
def test_a_fabric_usage_error_exits_2_with_its_code_and_calls_nothing(cfg_path: Path, calls: list[Any],
                                                                      argv: list[str], code: str) -> None:
    rc, out = cli(cfg_path, "fabric-park", *argv)
    assert rc == 2 and out["error"]["code"] == code, out
    assert calls == []


def test_the_fabric_market_lists_its_actions(cfg_path: Path) -> None:
    rc, out = cli(cfg_path, "fabric-park", "actions")
    assert rc == 0 and out["kind"] == "fabric"
    assert {"certify", "revoke", "propose", "accept", "settle", "open-round", "request", "allocate", "bid", "clear",
            "p2p-offer", "p2p-take", "p2p-withdraw", "round", "participant"} <= set(out["actions"])


def test_the_regulator_certifies_as_the_operator_by_default_and_on_imported_reputation(
        cfg_path: Path, calls: list[Any]) -> None:
    out = go(cfg_path, "certify", "--account", "stn", "--role", "station", "--station", "s1", "--station", "s2")
    assert out["account"] == STN and out["events"] == [{"type": "certify"}]
    go(cfg_path, "certify", "--account", "gina", "--role", "trader", "--import-from", "eth-park", "--subject", "erin",
       "--model", "eth-delivery-record/v1")
    go(cfg_path, "revoke", "--account", GINA, "--as", "admin")
    assert calls == [
        ("operator", "certify", (STN, "station"), {"stations": ["s1", "s2"], "reputation": None}),
        ("operator", "certify", (GINA, "trader"), {"stations": None, "reputation": {
            "src_chain": "eth-park", "subject": ERIN, "model": "eth-delivery-record/v1"}}),
        ("admin", "revoke", (GINA,), {})]


def test_participant_reads_certification_and_agreement(cfg_path: Path, calls: list[Any]) -> None:
    out = go(cfg_path, "participant", "stn")
    assert out == {"park": "fabric-park", "account": STN, "certification": {"role": "station"}, "agreement": None}
    assert [c[:3] for c in calls] == [("admin", "certification", (STN,)), ("admin", "agreement", (STN,))]


def test_plans_are_published_quoted_and_chosen_by_profile(cfg_path: Path, calls: list[Any]) -> None:
    go(cfg_path, "publish-plan", "--as", "gina", "--plan-id", "p1", "--peak", "30", "--flat", "20", "--valley", "10",
       "--fixed-fee", "5")
    assert go(cfg_path, "quote", "--peak", "1", "--flat", "2", "--valley", "3")["answer"] == "quote"
    go(cfg_path, "choose-plan", "--as", "stn", "--peak", "1", "--flat", "2", "--valley", "3")
    profile = {"peak": 1, "flat": 2, "valley": 3}
    assert calls == [("gina", "publish_plan", ("p1", {"peak": 30, "flat": 20, "valley": 10}, 5), {}),
                     ("admin", "quote", (profile,), {}), ("stn", "choose_plan", (profile,), {})]


def test_a_contract_sends_the_same_kept_terms_to_propose_accept_and_settle(cfg_path: Path,
                                                                          calls: list[Any]) -> None:
    out = go(cfg_path, "propose", "--as", "gina", "--contract-id", "c1", "--seller", "gina", "--buyer", "stn",
             "--quantity-kwh", "10", "--price", "3")
    kept = Path(out["terms_file"])
    terms = kept.read_bytes()
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
    doc = json.loads(terms)
    assert (doc["seller"], doc["buyer"], doc["quantity_kwh"], doc["price"], len(doc["salt"])) == (GINA, STN, 10, 3,
                                                                                                   32)
    assert out["terms_sha256"] == hashlib.sha256(terms).hexdigest()
    go(cfg_path, "accept", "--as", "stn", "--contract-id", "c1")
    go(cfg_path, "settle", "--as", "stn", "--contract-id", "c1", "--delivered-kwh", "8", "--terms", str(kept))
    assert go(cfg_path, "contract", "c1") == {"park": "fabric-park", "answer": "contract"}
    assert go(cfg_path, "contract", "c1", "--as", "gina")["terms"] == {"price": 3}
    assert calls == [("gina", "propose_contract", ("c1", terms), {}), ("stn", "accept_contract", ("c1", terms), {}),
                     ("stn", "settle_contract", ("c1", 8, terms), {}), ("admin", "contract", ("c1",), {}),
                     ("gina", "contract", ("c1",), {}), ("gina", "terms", ("c1",), {})]


def test_a_charging_round_from_opening_to_p2p(cfg_path: Path, calls: list[Any]) -> None:
    out = go(cfg_path, "open-round", "--round-id", "r1", "--transformer", "tr-1", "--requests-close-in-s", "10",
             "--bids-close-in-s", "20", "--slot-s", "60")
    times = (out["requests_close_ms"], out["bids_close_ms"], out["slot_start_ms"], out["slot_end_ms"])
    assert times[1] - times[0] == 10_000 and times[2] == times[1] and times[3] - times[2] == 60_000
    go(cfg_path, "request", "--as", "stn", "--round-id", "r1", "--station", "s1", "--power-kw", "40",
       "--willingness", "weak", "--flexibility-bp", "2500")
    go(cfg_path, "allocate", "--round-id", "r1")
    go(cfg_path, "bid", "--as", "stn", "--round-id", "r1", "--station", "s1", "--side", "sell", "--power-kw", "5",
       "--price", "7")
    go(cfg_path, "clear", "--round-id", "r1")
    go(cfg_path, "p2p-offer", "--as", "stn", "--round-id", "r1", "--station", "s1", "--offer-id", "o1", "--to",
       "gina", "--power-kw", "2", "--price", "9")
    go(cfg_path, "p2p-take", "--as", "gina", "--round-id", "r1", "--offer-id", "o1", "--station", "s9")
    go(cfg_path, "p2p-withdraw", "--as", "stn", "--round-id", "r1", "--offer-id", "o2")
    assert go(cfg_path, "round", "r1") == {"park": "fabric-park", "answer": "round"}
    go(cfg_path, "escrow")
    assert calls == [
        ("operator", "open_round", ("r1", "tr-1", *times), {}),
        ("stn", "request", ("r1", "s1", 40, "weak", 2500), {}),
        ("operator", "allocate", ("r1",), {}),
        ("stn", "bid", ("r1", "s1", "sell", 5, 7), {}),
        ("operator", "clear", ("r1",), {}),
        ("stn", "p2p_offer", ("r1", "s1", "o1", GINA, 2, 9), {}),
        ("gina", "p2p_accept", ("r1", "o1", "s9"), {}),
        ("stn", "p2p_cancel", ("r1", "o2"), {}),
        ("admin", "round", ("r1",), {}),
        ("admin", "escrow", (), {})]


def test_a_chaincode_refusal_exits_1_with_its_code(cfg_path: Path, calls: list[Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(ctx: Any, who: str, fn: Any) -> Any:
        return asyncio.run(fn(FakeMarket(calls, who, MarketAttributeError("no market.role attribute"))))

    monkeypatch.setattr(fabric, "with_market", refuse)
    rc, out = cli(cfg_path, "fabric-park", "request", "--as", "stn", "--round-id", "r1", "--station", "s1",
                  "--power-kw", "5")
    assert rc == 1 and out["error"]["code"] == "market.attribute", out
    assert len(calls) == 1


def test_an_unknown_account_names_the_parks_accounts(cfg_path: Path, calls: list[Any]) -> None:
    with pytest.raises(MarketArgumentError, match="gina"):
        go(cfg_path, "participant", "nobody")
