"""The four-phase scenarios with the relay chain on CometBFT (issue 17): ``[relay] engine = "cometbft"``.

The devnets of ``test_four_phases.py`` for the DPoS <-> PoC and the Ethereum <-> Fabric pairs (between them every
kind of park; 4 relay validators, relayers started by the tests), the relay validators each running the relay state
machine as the ABCI application of a real ``cometbft`` v0.38.25 child, and the same scenarios, imported from there
and run unchanged: a timeout refunded only on proof, replays and forgeries refused, a relayer SIGKILLed after
each phase, two relayers racing with no failed transaction in any block, one relay validator down and back, park
nodes SIGKILLed, a frozen client. Beside them, what only this engine has: a validator's app SIGKILLed (its
``cometbft`` child dies with it) while the others go on, then restarted: CometBFT's handshake replays to the app
the blocks it lacks, and the validator signs relay certificates again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from relay.chain.abci.cometbft import cometbft_binary
from relay.ops.layout import cometbft_home_path
from tests.integration.harness import free_port_block, status, wait_for
from tests.integration.test_four_phases import (  # noqa: F401  (the scenarios, run here on this module's devnet)
    LANE,
    PAIRS,
    RELAY,
    Net,
    started_net,
    test_a_park_node_killed_hard_and_restarted_loses_nothing,
    test_a_relayer_killed_after_each_phase_still_delivers_exactly_once,
    test_one_relay_validator_down_then_back,
    test_replays_and_forgeries_are_rejected_and_change_nothing,
    test_timeout_refunds_only_on_proof_and_late_execution_is_rejected,
    test_two_relayers_racing_deliver_once_and_no_redundant_relay_reaches_a_block,
    wait_ready,
)
from tests.integration.test_four_phases import (
    test_misbehaviour_freezes_the_client_and_its_proofs_are_refused as _misbehaviour,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not cometbft_binary().exists(),
                       reason=f"no cometbft binary at {cometbft_binary()}: `make setup` builds it"),
]


COMETBFT_PAIRS = ("dpos-poc", "eth-fabric")
"""The pairs of ``test_four_phases.py`` run on CometBFT: between them every kind of park (each pair costs about
three minutes; all six would add a quarter of an hour to the suite for no kind not already covered)."""


@pytest.fixture(scope="module", params=COMETBFT_PAIRS)
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    a, b = PAIRS[request.param]
    options = {"engine": "cometbft", "cometbft": {"base_port": free_port_block(12)}}
    with started_net(tmp_path_factory.mktemp(f"relay-on-cometbft-{request.param}"), [a, b],
                     [{"lane": LANE, "a": a, "b": b}], ["relayer-a", "relayer-b"], relay_options=options) as n:
        yield n


@pytest.fixture
async def live(net: Net) -> AsyncIterator[Net]:
    yield await wait_ready(net)


async def test_the_relay_runs_on_cometbft(live: Net) -> None:
    st = await status(live.url(RELAY))
    assert st is not None and st["engine"] == "cometbft"
    home = cometbft_home_path(live.cfg, "op-a")
    assert (home / "config" / "genesis.json").exists() and (home / "data").is_dir()


async def test_a_validator_app_killed_is_replayed_by_cometbft_and_signs_again(live: Net) -> None:
    """SIGKILL op-c (the app; its cometbft child gets SIGTERM from the kernel): the three others go on. Restarted,
    its CometBFT's handshake finds the app behind its block store and replays the blocks (``ABCI Replay Blocks``),
    the app catches up and op-c's signature is in the relay commits again."""
    log = live.cfg.data_dir / "logs" / "cometbft-op-c.log"
    live.d.kill(RELAY, "op-c")
    before = (await status(live.url(RELAY, "op-a")))["height"]  # type: ignore[index]

    async def moved_on() -> bool:
        st = await status(live.url(RELAY, "op-a"))
        return st is not None and st["height"] >= before + 3

    await wait_for("the relay chain going on without op-c", moved_on, 60)
    replays_before = len(re.findall(r"ABCI Replay Blocks", log.read_text(errors="replace")))
    live.d.start(RELAY, "op-c")

    async def caught_up() -> bool:
        a, c = await status(live.url(RELAY, "op-a")), await status(live.url(RELAY, "op-c"))
        return a is not None and c is not None and c["height"] >= a["height"] - 1

    await wait_for("op-c caught up", caught_up, 120)
    text = log.read_text(errors="replace")
    replays = re.findall(r"ABCI Replay Blocks\s+module=consensus appHeight=(\d+) storeHeight=(\d+)", text)
    assert len(replays) > replays_before, text[-3000:]
    app_h, store_h = (int(x) for x in replays[-1])
    assert app_h < store_h, "the app came back behind CometBFT's block store and was replayed"

    async def signs_again() -> bool:
        async with live.d.client(RELAY, "op-a") as c:
            commit = await c.call("getCommit", {})
            names = [v["name"] for v in (await c.call("getValidators", {}))["validators"]]
        return names.index("op-c") in {s["validator_index"] for s in commit["signatures"]}

    await wait_for("op-c's signature in a relay commit", signs_again, 60)
    await live.check_invariants()



async def test_misbehaviour_freezes_the_client_and_its_proofs_are_refused(live: Net) -> None:
    """Last: it freezes the relay's client of the DPoS park for good (``test_four_phases.py``)."""
    await _misbehaviour(live)
