"""The relay block's size (genesis ``block.max_bytes``): parsed strictly, written by ``devnet init`` from ``[relay]
max_block_bytes``, and every route that carries a whole block reads bodies of that size.

The last is what a backlog run on 3 MiB blocks found: the relay chain stopped at its first full block without a line in
any log, because ``/p2p/consensus`` decoded every body under the 4 MiB of a park's gossip and each validator refused
the proposer's 6 MiB of hex.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chains.common import wire
from chains.common.node import BODY_RETENTION, MAX_BLOCK_BYTES, STATE_RETENTION, NodeConfig
from protocol.errors import CodecError
from relay.chain.consensus import TimeoutConfig
from relay.chain.node import (
    BLOCK_MAX_BYTES_BOUNDS,
    RELAY_BODY_RETENTION,
    RELAY_STATE_RETENTION,
    RelayNode,
    RelayRules,
    parse_block_params,
)
from relay.ops.config import RELAY_MAX_BLOCK_BYTES, ConfigError, load_config
from relay.relayer.relayer import RELAY_INFLIGHT_PACKETS, relay_inflight_packets
from tests.unit.relay_consensus.harness import VSET
from tests.unit.relay_consensus.sim import CHAIN

MIB = 1024 * 1024


def _rules(block: dict[str, Any] | None) -> RelayRules:
    genesis: dict[str, Any] = {"chain_id": CHAIN, "validators": wire.validator_set_to_json(VSET), "clients": {},
                               "lanes": []}
    if block is not None:
        genesis["block"] = block
    return RelayRules(genesis, None, None)


def test_block_params_default_to_what_a_genesis_without_them_had() -> None:
    assert parse_block_params(None) == (TimeoutConfig(), MAX_BLOCK_BYTES)
    assert parse_block_params({"commit_ms": 500}) == (TimeoutConfig(commit_ms=500), MAX_BLOCK_BYTES)
    assert parse_block_params({"commit_ms": 500, "max_bytes": 3 * MIB}) == (TimeoutConfig(commit_ms=500), 3 * MIB)
    assert _rules({"max_bytes": 2 * MIB}).max_block_bytes == 2 * MIB
    assert _rules(None).max_block_bytes == MAX_BLOCK_BYTES


@pytest.mark.parametrize("block", [
    [], "big", {"max_bytes": BLOCK_MAX_BYTES_BOUNDS[0] - 1}, {"max_bytes": BLOCK_MAX_BYTES_BOUNDS[1] + 1},
    {"max_bytes": True}, {"max_bytes": 2.5 * MIB}, {"max_bytes": "3MiB"}, {"commit_ms": -1}, {"max_block_bytes": MIB},
])
def test_a_bad_block_section_is_a_codec_error_naming_it(block: Any) -> None:
    with pytest.raises(CodecError, match="relay genesis block"):
        parse_block_params(block)
    with pytest.raises(CodecError, match="relay genesis block"):
        _rules(block)


async def _post(url: str, body: bytes) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body,
                                                    headers={"Content-Type": "application/json"}) as r:
        return r.status, json.loads(await r.read())


@pytest.mark.parametrize("max_bytes", [MAX_BLOCK_BYTES, 3 * MIB])
async def test_a_validator_reads_a_proposal_of_its_largest_block(tmp_path: Path, max_bytes: int) -> None:
    node = RelayNode(_rules({"max_bytes": max_bytes}), NodeConfig(name="op-a", data_dir=tmp_path, admin_token="t0k"))
    assert node.p2p_body_bytes >= 2 * max_bytes + 64 * 1024  # a proposal is its block hex-encoded, and a header
    # relay state is proven at the head: a validator keeps fewer states and bodies than a park node
    assert (node.state_retention, node.body_retention) == (RELAY_STATE_RETENTION, RELAY_BODY_RETENTION)
    assert RELAY_STATE_RETENTION < STATE_RETENTION and RELAY_BODY_RETENTION < BODY_RETENTION
    await node.start()
    try:
        # a proposal of a full block: hex of max_bytes + a header's worth; garbage, so consensus decoding refuses it
        full = json.dumps({"msg": "ab" * (max_bytes + 4096)}).encode()
        status, answer = await _post(node.url + "/p2p/consensus", full)
        assert (status, answer["error"]["data"]["code"]) == (400, "codec.invalid"), answer
        status, answer = await _post(node.url + "/p2p/block", json.dumps(
            {"header": "00", "txs": [{"pad": "x" * (max_bytes + 4096)}]}).encode())
        # read whole, then refused at its header ("00" is no relay header)
        assert (status, answer["error"]["data"]["code"]) == (400, "rpc.parse_error"), answer
        over = json.dumps({"msg": "ab" * (node.p2p_body_bytes // 2 + 1)}).encode()
        status, answer = await _post(node.url + "/p2p/consensus", over)
        assert (status, answer["error"]["data"]["code"]) == (413, "rpc.body_too_large"), answer
        assert node.head.header.height == 0 and not node.mempool  # nothing changed
    finally:
        await node.stop()


def test_devnet_init_writes_the_configured_block_size_into_the_relay_genesis(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from relay.ops import devnet, nodes
    from relay.ops.relayers import build_relayer

    monkeypatch.chdir(tmp_path)
    base = ('[deployment]\ndata_dir = "data"\n[[chains]]\nid = "dpos-park"\nkind = "dpos"\nnodes = ["witness-a"]\n'
            'base_port = 31000\n[relayers]\nnames = ["relayer-a"]\n[relay]\nvalidators = ["op-a"]\nbase_port = 31100\n')
    p = tmp_path / "d.toml"
    p.write_text(base)
    assert load_config(p).relay_max_block_bytes == RELAY_MAX_BLOCK_BYTES
    p.write_text(base + f"max_block_bytes = {2 * MIB}\n")
    cfg = load_config(p)
    devnet.init(cfg)
    genesis = json.loads((tmp_path / "data" / "genesis" / "relay.json").read_text())
    assert genesis["block"]["max_bytes"] == 2 * MIB
    node = nodes.load_node(cfg, "relay", None, "op-a")
    try:
        assert node.rules.max_block_bytes == 2 * MIB  # type: ignore[attr-defined]
    finally:
        node.db.close()
    relayer = build_relayer(cfg, "relayer-a")
    try:
        assert relayer.relay_inflight == relay_inflight_packets(2 * MIB) == 2 * RELAY_INFLIGHT_PACKETS
    finally:
        relayer.db.close()
    for bad in (MIB - 1, 9 * MIB, '"3MiB"', "true"):
        p.write_text(base + f"max_block_bytes = {bad}\n")
        with pytest.raises(ConfigError, match="max_block_bytes"):
            load_config(p)


def test_a_relayer_keeps_about_two_blocks_in_flight() -> None:
    assert relay_inflight_packets(MAX_BLOCK_BYTES) == RELAY_INFLIGHT_PACKETS
    assert relay_inflight_packets(3 * MIB) == 3 * RELAY_INFLIGHT_PACKETS
    assert relay_inflight_packets(MIB // 2) == RELAY_INFLIGHT_PACKETS  # never fewer than for 1 MiB blocks
