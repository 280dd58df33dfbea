"""The relayer's side of relay fees (protocol SPEC §6.10) on in-memory chains: it names its payees on the relay
chain, reads each packet's fees from its ``send_packet`` event (kept across a restart), leaves steps paid below its
``min_fees`` to others, names itself in phase 3, and counts what the parks paid it once per packet and step.
The same on real processes: ``tests/integration/test_relay_fees.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from protocol.codec import decode_packet
from relay.relayer.policy import Action, MinFees, pays_enough
from relay.relayer.relayer import ChainLink, Relayer, Tracked
from tests.unit.test_relayer_loop import _client, _Park, _Relay, _send_event

FEES = {"verify": 5, "execute": 7, "confirm": 3}


class _PayingRelay(_Relay):
    def __init__(self) -> None:
        super().__init__()
        self.account: dict[str, Any] = {"nonce": 1}

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if method == "getAccount":
            return dict(self.account)
        return await super().call(method, params)


def _relayer(tmp: Path, relay: _Relay, parks: dict[str, _Park], payees: dict[str, str] | None = None,
             **kw: Any) -> Relayer:
    link = ChainLink("relay", "relay", relay, relay, relay)  # type: ignore[arg-type]
    links = {c: ChainLink(c, "dpos", p, p, None, payee=(payees or {}).get(c))  # type: ignore[arg-type]
             for c, p in parks.items()}
    return Relayer("relayer-t", link, links, tmp / "r.sqlite3", poll_s=0.05, heartbeat_s=None, **kw)


def _paid(src: str, seq: int, step: str, payee: str, amount: int) -> dict[str, Any]:
    return {"type": "fee_paid", "src": src, "dst": "park-b", "lane": "lane-0", "sequence": seq, "step": step,
            "payee": payee, "amount": amount, "denom": "prc", "height": 9}


@pytest.mark.parametrize("action,fees,minimum,ok", [
    (Action.VERIFY, None, None, True),
    (Action.VERIFY, None, MinFees(), True),
    (Action.VERIFY, None, MinFees(verify=1), False),
    (Action.VERIFY, FEES, MinFees(verify=5), True),
    (Action.VERIFY, FEES, MinFees(verify=6), False),
    (Action.RECV, FEES, MinFees(verify=100, execute=7), True),
    (Action.RECV, FEES, MinFees(execute=8), False),
    (Action.CONFIRM, FEES, MinFees(confirm=4), False),
    (Action.TIMEOUT, FEES, MinFees(confirm=3), True),
    (Action.TIMEOUT_RECEIPT, FEES, MinFees(confirm=4), False),
    (Action.SETTLE, None, MinFees(verify=9, execute=9, confirm=9), True),  # settling is how fees get paid
])
def test_pays_enough(action: Action, fees: dict[str, int] | None, minimum: MinFees | None, ok: bool) -> None:
    assert pays_enough(action, fees, minimum) is ok


async def test_fees_are_read_from_the_send_event_and_kept_across_a_restart(tmp_path: Path) -> None:
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[3] = [{**_send_event("park-a", "park-b", 1, 3), "fees": {**FEES, "denom": "prc"}},
                      _send_event("park-a", "park-b", 2, 3)]
    r = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b})
    await r._scan(r.parks["park-a"])
    assert r.packets["park-a/park-b/lane-0/1"].fees == FEES
    assert r.packets["park-a/park-b/lane-0/2"].fees is None
    r.db.close()
    again = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b})
    assert again.packets["park-a/park-b/lane-0/1"].fees == FEES
    again.db.close()


async def test_malformed_fees_in_an_event_are_skipped_as_undecodable(tmp_path: Path) -> None:
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[3] = [{**_send_event("park-a", "park-b", 1, 3), "fees": {"verify": -1}},
                      {**_send_event("park-a", "park-b", 2, 3), "fees": "lots"},
                      _send_event("park-a", "park-b", 3, 3)]
    r = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b})
    await r._scan(r.parks["park-a"])
    assert r.stats.undecodable_events == 2
    assert list(r.packets) == ["park-a/park-b/lane-0/3"]
    r.db.close()


async def test_a_step_paid_below_the_minimum_is_left_to_others(tmp_path: Path) -> None:
    relay = _Relay()
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[3] = [{**_send_event("park-a", "park-b", 1, 3), "fees": {**FEES, "denom": "prc"}},
                      _send_event("park-a", "park-b", 2, 3)]
    for p in (a, b):
        _client(relay, p, latest=10, final=8)
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, min_fees={"park-a": MinFees(verify=5)})
    await r._scan(r.parks["park-a"])
    await r._path_step("park-a", "park-b")
    verified = [decode_packet(bytes.fromhex(i["packet"])).sequence
                for op, args in relay.submitted if op == "packet.verify_batch" for i in args["items"]]
    assert verified == [1]  # packet 2 offers no fee: this relayer leaves it
    assert r.stats.unpaid == 1
    r.db.close()


async def test_phase_3_names_the_relayer(tmp_path: Path) -> None:
    a, b = _Park("park-a"), _Park("park-b")
    r = _relayer(tmp_path, _PayingRelay(), {"park-a": a, "park-b": b})

    async def cert(key: bytes) -> dict[str, Any]:
        return {"key": key.decode()}

    r._certificate = cert  # type: ignore[method-assign]
    ev = _send_event("park-a", "park-b", 1, 3)
    raw = bytes.fromhex(ev["packet"])
    await r._recv([Tracked(decode_packet(raw), raw, 3)])
    assert [(op, args["relayer"]) for op, args in b.submitted] == [("bridge.recv", "relayer-t")]
    r.db.close()


def _tracked(n: int) -> list[Tracked]:
    """Packets 1..n from park-a to park-b, committed at height 3, as the relayer tracks them."""
    out = []
    for seq in range(1, n + 1):
        raw = bytes.fromhex(_send_event("park-a", "park-b", seq, 3)["packet"])
        out.append(Tracked(decode_packet(raw), raw, 3))
    return out


async def test_payees_are_named_on_the_relay_chain_once(tmp_path: Path) -> None:
    relay = _PayingRelay()
    relay.account["payees"] = {"park-a": "relayer-t"}
    a, b = _Park("park-a"), _Park("park-b")
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, {"park-a": "relayer-t", "park-b": "rt-on-b"})
    relay.status = {}
    await r._sync_payees()
    assert relay.submitted == [("account.set_payee", {"chain": "park-b", "payee": "rt-on-b"})]
    assert r._payees_synced
    r.db.close()


async def test_a_refused_payee_is_tried_again(tmp_path: Path) -> None:
    from protocol.errors import WrongChainError

    relay = _PayingRelay()
    relay.refuse["account.set_payee"] = WrongChainError("not a park")
    a, b = _Park("park-a"), _Park("park-b")
    r = _relayer(tmp_path, relay, {"park-a": a, "park-b": b}, {"park-a": "relayer-t"})
    await r._sync_payees()
    assert not r._payees_synced
    await r._sync_payees()
    assert r._payees_synced and len(relay.submitted) == 2
    r.db.close()


async def test_earnings_count_only_its_own_payees_once_per_packet_and_step(tmp_path: Path) -> None:
    a, b = _Park("park-a"), _Park("park-b")
    a.events_at[9] = [_paid("park-a", 1, "verify", "relayer-t", 5), _paid("park-a", 1, "execute", "someone", 7),
                      _paid("park-a", 1, "confirm", "relayer-t", 3), _paid("park-a", 2, "verify", "relayer-t", 5)]
    r = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b}, {"park-a": "relayer-t"})
    a.final = 9
    await r._scan(r.parks["park-a"])
    assert r.earned == {("park-a", "prc", "verify"): 10, ("park-a", "prc", "confirm"): 3}
    r._rescan("park-a")  # a recovery rescans the park from its genesis: nothing counted twice
    await r._scan(r.parks["park-a"])
    assert r.earned == {("park-a", "prc", "verify"): 10, ("park-a", "prc", "confirm"): 3}
    assert r.summary()["earned"] == [
        {"chain": "park-a", "denom": "prc", "step": "confirm", "amount": 3},
        {"chain": "park-a", "denom": "prc", "step": "verify", "amount": 10}]
    r.db.close()
    again = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b}, {"park-a": "relayer-t"})
    assert again.earned == r.earned
    again.db.close()


def test_earnings_cli_reads_the_database(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from relay.ops.relayers import earnings

    a = _Park("park-a")
    a.events_at[9] = [_paid("park-a", 1, "verify", "relayer-t", 5), _paid("park-a", 2, "verify", "relayer-t", 5)]
    a.final = 9
    (tmp_path / "relayers").mkdir()
    r = Relayer("relayer-t", ChainLink("relay", "relay", _Relay(), _Relay(), None),  # type: ignore[arg-type]
                {"park-a": ChainLink("park-a", "dpos", a, a, None, payee="relayer-t")},  # type: ignore[arg-type]
                tmp_path / "relayers" / "relayer-t.sqlite3", heartbeat_s=None)
    asyncio.run(r._scan(r.parks["park-a"]))
    r.db.close()
    cfg = SimpleNamespace(relayers=("relayer-t",), data_dir=tmp_path, path=tmp_path / "x.toml")
    assert earnings(cfg, "relayer-t") == [{"chain": "park-a", "denom": "prc", "step": "verify", "amount": 10,
                                            "packets": 2}]


async def test_a_batch_too_large_for_a_park_transaction_is_split_until_it_fits(tmp_path: Path) -> None:
    """With relay fees a packet's certified record grows (payees, the relayer in the ack), and so do proofs as the
    relay's state grows: a 16-packet settle batch once went over a park's 64 KiB and was refused as too large. The
    relayer halves a batch until its arguments fit (``PARK_TX_ARGS_BUDGET``)."""
    import json as _json

    from relay.relayer.relayer import PARK_TX_ARGS_BUDGET

    a, b = _Park("park-a"), _Park("park-b")
    r = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b})
    todo = _tracked(16)
    built: list[int] = []

    async def build(chunk: list[Tracked]) -> dict[str, Any]:
        built.append(len(chunk))
        return {"items": [{"packet": t.raw.hex(), "proof": "ab" * 4_000} for t in chunk]}  # ~8 KB a packet

    await r._submit_fitting(r.parks["park-a"], "bridge.settle_batch", todo, build, "settle")
    sent = [args for op, args in a.submitted if op == "bridge.settle_batch"]
    assert all(len(_json.dumps(args, separators=(",", ":"))) <= PARK_TX_ARGS_BUDGET for args in sent)
    assert sorted(i["packet"] for args in sent for i in args["items"]) == sorted(t.raw.hex() for t in todo)
    assert built[0] == 16 and len(sent) >= 3  # 16 did not fit: halves, then quarters
    r.db.close()


async def test_batches_after_one_too_large_are_cut_to_the_measured_fit_and_fetched_ahead(tmp_path: Path) -> None:
    """A settlement carries ~4 KiB a packet, so sixteen never fit a park transaction: every batch was built (its
    certificates fetched from the relay) twice, whole and then in halves. After the first split the relayer cuts the
    batches to what the bytes per packet measured allow, and fetches the next batch's arguments while it submits
    one (issue 16)."""
    import json as _json

    from relay.relayer.relayer import PARK_TX_ARGS_BUDGET

    a, b = _Park("park-a"), _Park("park-b")
    r = _relayer(tmp_path, _Relay(), {"park-a": a, "park-b": b})
    todo = _tracked(128)
    built: list[int] = []
    trace: list[str] = []
    submit = a.submit

    async def slow_submit(op: str, args: dict[str, Any]) -> str:
        trace.append("submit")
        await asyncio.sleep(0)  # a round trip: the next batch's fetch runs meanwhile
        await asyncio.sleep(0)
        trace.append("submitted")
        return await submit(op, args)

    a.submit = slow_submit  # type: ignore[method-assign]

    async def build(chunk: list[Tracked]) -> dict[str, Any]:
        built.append(len(chunk))
        trace.append("build")
        await asyncio.sleep(0)
        return {"items": [{"packet": t.raw.hex(), "proof": "ab" * 2_000} for t in chunk]}  # ~4 KB a packet

    await r._submit_fitting(r.parks["park-a"], "bridge.settle_batch", todo, build, "settle")
    sent = [args for op, args in a.submitted if op == "bridge.settle_batch"]
    assert all(len(_json.dumps(args, separators=(",", ":"))) <= PARK_TX_ARGS_BUDGET for args in sent)
    assert [i["packet"] for args in sent for i in args["items"]] == [t.raw.hex() for t in todo], "all, in order"
    assert built[0] == 16 and len(built) == len(sent) + 1, "one batch built twice, then each once"
    assert [len(args["items"]) for args in sent[:2]] == [8, 8], "the first batch's halves"
    for args in sent[2:-1]:  # then cut to the measured fit, not halved: one packet more would not have fitted
        size, n = len(_json.dumps(args, separators=(",", ":"))), len(args["items"])
        assert n > 8 and size + size / n > PARK_TX_ARGS_BUDGET, (n, size)
    assert trace.index("build", trace.index("submit")) < trace.index("submitted"), "the next batch fetched meanwhile"
    r.db.close()
