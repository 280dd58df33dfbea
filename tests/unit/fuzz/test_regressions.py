"""Regression tests for what the fuzz harnesses found (one per root-cause fix)."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from adapters.ethereum.source import EthSource
from chains.common.tx import Tx
from protocol.errors import CodecError
from relay.chain.state_machine.app import relay_tx_from_json

TX = {"chain_id": "relay", "sender": "op-a", "nonce": 3, "op": "relay.verify", "args": {"height": 5},
      "signature": "11" * 64}


@pytest.mark.parametrize("change", [
    {"op": "\ud800"},                       # a lone surrogate: canonical_json raised UnicodeEncodeError
    {"args": {"k": "x\udfff"}},
    {"args": {"\ud800": 1}},
    {"nonce": -math.inf},                   # int(-inf) raised OverflowError
    {"nonce": math.nan},
    {"nonce": "3"},                         # wrong types were coerced with str()/int() and accepted
    {"nonce": 3.0},
    {"nonce": True},
    {"sender": {"v": "op-a"}},
    {"chain_id": 7},
    {"args": [["height", 5]]},              # dict() of a pair list was accepted as args
    {"signature": ["11"]},
    {"args": {"x": math.inf}},
])
def test_a_transaction_of_the_wrong_shape_is_a_codec_error(change: dict[str, Any]) -> None:
    for decode in (Tx.from_json, relay_tx_from_json):
        with pytest.raises(CodecError):
            decode({**TX, **change})
    assert Tx.from_json(TX).to_json() == TX  # the valid form still decodes to itself


def test_the_relay_keeps_its_own_size_bound() -> None:
    big = {**TX, "args": {"blob": "a" * 70_000}}
    with pytest.raises(CodecError):
        Tx.from_json(big)
    assert relay_tx_from_json(big).args["blob"] == "a" * 70_000


@pytest.mark.parametrize("entry", [
    {"topics": ["0xzz"], "data": "0x", "blockNumber": "0x1"},     # to_bytes(topic 0) raised ValueError
    {"topics": [["0x00"]], "data": "0x", "blockNumber": "0x1"},
    {"topics": {"a": 1}, "data": "0x", "blockNumber": "0x1"},     # topics[0] raised KeyError
])
def test_an_ethereum_log_with_malformed_topics_is_skipped(entry: dict[str, Any],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    source = object.__new__(EthSource)
    source.chain_id = "eth-park"
    with caplog.at_level(logging.ERROR):
        assert source.event_of(entry) is None
    assert "malformed topics" in caplog.text


def test_an_undecodable_ethereum_log_with_a_bad_block_number_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    """The skip path logged ``hex_int(blockNumber)``, which raised on the very log it was skipping."""
    from adapters.ethereum.source import _BY_TOPIC

    topic = next(iter(_BY_TOPIC))
    source = object.__new__(EthSource)
    source.chain_id = "eth-park"
    with caplog.at_level(logging.ERROR):
        assert source.event_of({"topics": ["0x" + topic.hex()], "data": "0x00", "blockNumber": "zz"}) is None
    assert "undecodable" in caplog.text


def test_a_malformed_http_request_is_one_info_line_not_an_error_traceback() -> None:
    """aiohttp logs each 400 of its HTTP parser at ERROR with a traceback; the CLI's logging turns it into one
    INFO line (anyone who reaches a port could otherwise fill the log and page the operator)."""
    import io

    from aiohttp.http_exceptions import BadHttpMessage

    from relay.ops.cli import MalformedHttpFilter

    out = io.StringIO()
    logger = logging.getLogger("fuzz-test.aiohttp.server")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(MalformedHttpFilter())
    logger.propagate = False
    try:
        try:
            raise BadHttpMessage("Invalid header value char")
        except BadHttpMessage as exc:
            logger.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
        try:
            raise RuntimeError("a real bug")
        except RuntimeError:
            logger.exception("Error handling request from %s", "127.0.0.1")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue()
    first, rest = lines.split("\n", 1)
    assert first == ("INFO Error handling request from 127.0.0.1: 400 BadHttpMessage: Invalid header value char")
    assert rest.startswith("ERROR Error handling request from 127.0.0.1") and "RuntimeError: a real bug" in rest


@pytest.mark.parametrize("answer", [b'{"jsonrpc": "2.0", "id": 1, "error": 5}', b'{"error": "x"}',
                                    b'{"error": [1]}', b'{"error": null}'])
async def test_a_node_answering_a_malformed_error_is_a_typed_error(answer: bytes) -> None:
    """JsonRpcClient.call read ``err.get("code")`` of whatever the node sent: AttributeError for a non-object."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from adapters.common.rpc import JsonRpcClient
    from protocol.errors import ProtocolError

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/rpc", handler)
    server = TestServer(app)
    await server.start_server()
    try:
        async with JsonRpcClient(str(server.make_url("")), side="hostile") as c:
            with pytest.raises(ProtocolError):
                await c.call("status")
    finally:
        await server.close()


async def test_a_head_pushed_to_a_subscriber_that_went_away_is_skipped_quietly() -> None:
    """Found by ``bench/fuzz.py --endpoints``: a WebSocket client resetting its socket while the node pushed a new
    head left a task failing with ClientConnectionResetError, logged as "Task exception was never retrieved"."""
    import asyncio

    from aiohttp.client_exceptions import ClientConnectionResetError

    from chains.common.node import ParkNode

    class GoneSubscriber:
        prepared = True  # its handshake was done: it is pushed to
        closed = False

        async def send_json(self, msg: Any) -> None:
            raise ClientConnectionResetError("Cannot write to closing transport")

    tasks: list[asyncio.Task[Any]] = []
    node: Any = object.__new__(ParkNode)
    node._ws_clients = {GoneSubscriber()}
    node._spawn = lambda coro: tasks.append(asyncio.ensure_future(coro))
    ParkNode._notify_ws(node, {"type": "new_head", "height": 1, "hash": "00"})
    assert len(tasks) == 1
    await asyncio.gather(*tasks)  # raised before
    assert tasks[0].exception() is None


# --- found by atheris (bench/fuzz_atheris.py): persisted light-client states -------------------------------

_FROM_STATE = ["dpos.DposLightClient.from_state", "eth.EthereumLightClient.from_state",
               "poc.PocLightClient.from_state", "fabric.FabricLightClient.from_state"]


def _state_target(name: str) -> Any:
    from tests.unit.fuzz.targets import all_targets

    return next(t for t in all_targets() if t.name == name)


def _edits(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The shapes atheris found: a final timestamp of ``Infinity`` (``int(inf)`` raised OverflowError in
    restore_base_state), a float or a bool where a height is, and a base without its chain id (PoC read
    ``base["chain_id"]`` outside its guarded block: KeyError)."""
    import copy

    out = []
    base = state.get("base", state)
    final = base.get("final")
    if isinstance(final, list) and final and isinstance(final[0], list):
        for value in (math.inf, 1.5, True, -1):
            s = copy.deepcopy(state)
            b = s.get("base", s)
            b["final"][0][2 if value is math.inf else 0] = value
            out.append(s)
    s = copy.deepcopy(state)
    s.get("base", s).pop("chain_id", None)
    out.append(s)
    return out


@pytest.mark.parametrize("name", _FROM_STATE)
def test_a_malformed_persisted_client_state_is_a_codec_error(name: str) -> None:
    import json

    target = _state_target(name)
    seed = target.seeds()[0]
    target.run(seed)  # the valid state restores
    edits = _edits(json.loads(seed))
    assert edits
    for state in edits:
        with pytest.raises(CodecError):
            target.run(json.dumps(state).encode())
