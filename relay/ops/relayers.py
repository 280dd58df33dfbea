"""Run one relayer process from a deployment config (``parkrelay relayer start --config FILE --name NAME``).

The relayer itself (:mod:`relay.relayer.relayer`) knows no config file: this module links it to each chain of the
deployment, with the relayer's keys from the deployment's key files, and serves its operator API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from adapters.common.park import ParkSource, ParkTarget
from adapters.common.rpc import JsonRpcClient
from protocol.crypto import Ed25519Signer
from relay.relayer.relayer import ChainLink, Relayer, relay_inflight_packets

__all__ = ["build_relayer", "earnings", "run_relayer"]


def build_relayer(cfg: Any, name: str) -> Relayer:
    """A relayer for deployment ``cfg`` (relay.ops.config.DeploymentConfig) signing as account ``name``."""
    from adapters.registry import adapters_for
    from chains.registry import chain_kind
    from relay.chain.node import RelayBlockHeader
    from relay.ops.config import ConfigError
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import relayer_key_path

    if name not in cfg.relayers:
        raise ConfigError(f"{cfg.path}: no relayer {name!r}; relayers are {list(cfg.relayers)}")
    if cfg.relay_base_port is None:
        raise ConfigError(f"{cfg.path}: the relay chain has no [relay] base_port")

    def link(chain_id: str, kind: str, url: str, decode: Any) -> ChainLink:
        client = JsonRpcClient(url, side=chain_id)
        signer: Ed25519Signer = ed25519_signer(relayer_key_path(cfg, chain_id, name))
        # on a Python park the relayer's fees go to its own account there (protocol SPEC §6.10)
        return ChainLink(chain_id, kind, ParkSource(client, decode), ParkTarget(client, chain_id, name, signer),
                         client, payee=name if kind != "relay" else None)

    relay = link(cfg.relay_chain_id, "relay", cfg.relay_url(cfg.relay_validators[0]), RelayBlockHeader.decode)
    relay_rpc = relay.client
    assert relay_rpc is not None
    parks = {}
    for chain in cfg.chains:
        url = chain.url_of(chain.nodes[0], cfg.host)
        adapters, kind = adapters_for(chain.kind), chain_kind(chain.kind)
        if adapters.park_rpc:
            park = link(chain.id, chain.kind, url, adapters.source(JsonRpcClient(url, side=chain.id)).decode_header)
        else:  # a chain spoken to through its own client library (Ethereum: web3; Fabric: hfc)
            park = OWN_CLIENT_LINKS[chain.kind](cfg, chain, name, url, relay_rpc)
        # what the relayer does differently on this chain, from its kind (not from its name)
        park.duplicates_reach_blocks = adapters.duplicates_reach_blocks
        park.one_writer = adapters.one_writer
        park.batches = adapters.batches
        park.timeout_receipt = kind.timeout_receipt
        park.keepalive_after_s = kind.keepalive_after_s(chain.params)
        parks[chain.id] = park
    return Relayer(name, relay, parks, cfg.data_dir / "relayers" / f"{name}.sqlite3", peers=tuple(cfg.relayers),
                   takeover_after_s=cfg.relayer_takeover_after_s, heartbeat_s=cfg.relayer_heartbeat_s,
                   pipeline_proofs=cfg.relayer_pipeline_proofs, min_fees=cfg.relayer_min_fees,
                   relay_inflight=relay_inflight_packets(cfg.relay_max_block_bytes))


def earnings(cfg: Any, name: str) -> list[dict[str, Any]]:
    """The relay fees the parks paid relayer ``name``'s payees (protocol SPEC §6.10), from its database: per park,
    denom and step, the amount and the number of packets. Read-only: the relayer may be running."""
    import sqlite3

    from relay.ops.config import ConfigError

    if name not in cfg.relayers:
        raise ConfigError(f"{cfg.path}: no relayer {name!r}; relayers are {list(cfg.relayers)}")
    path = cfg.data_dir / "relayers" / f"{name}.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT chain, denom, step, SUM(amount), COUNT(*) FROM earned "
                            "GROUP BY chain, denom, step ORDER BY chain, step").fetchall()
    except sqlite3.OperationalError:  # a database from before relay fees: nothing earned
        rows = []
    finally:
        conn.close()
    return [{"chain": c, "denom": d, "step": st, "amount": int(a), "packets": int(n)} for c, d, st, a, n in rows]


def ethereum_link(cfg: Any, chain: Any, name: str, url: str, relay_rpc: JsonRpcClient) -> ChainLink:
    """The relayer's link to an Ethereum park: web3 source and target at the bridge the park's genesis names,
    signing with the relayer's secp256k1 devnet key on that chain."""
    from adapters import ethereum as eth_adapter
    from relay.ops.keys import read_secret
    from relay.ops.layout import genesis_path, relayer_key_path

    genesis = json.loads(genesis_path(cfg, chain.id).read_text())
    bridge = genesis["contracts"]["bridge"]
    depth = int(chain.params["confirmation_depth"])
    key = read_secret(relayer_key_path(cfg, chain.id, name))
    target = eth_adapter.target(url, chain.id, bridge, key, eth_adapter.relay_set_from_rpc(relay_rpc.call),
                                confirmation_depth=depth)
    # the relayer's fees are credited to its own address (withdrawFees, protocol SPEC §6.10)
    return ChainLink(chain.id, "ethereum", eth_adapter.source(url, chain.id, bridge, depth), target, None,
                     payee=target.address)


def fabric_link(cfg: Any, chain: Any, name: str, url: str, relay_rpc: JsonRpcClient) -> ChainLink:
    """The relayer's link to a Fabric park: hfc source and target through the park's connection profile
    (:func:`relay.ops.layout.fabric_profile_path`), signing as the relayer's own
    client identity of the park (``<MSP>:<name>@<MSP>``)."""
    from adapters import fabric as fabric_adapter
    from relay.ops.layout import fabric_profile_path

    profile = fabric_profile_path(cfg, chain)
    gateway = fabric_adapter.connect(profile, chain.id, name, channel=chain.params["channel"],
                                     chaincode=chain.params["chaincode"])
    # the relayer's fees go to its own account on the park (protocol SPEC §6.10)
    return ChainLink(chain.id, "fabric", fabric_adapter.source(gateway), fabric_adapter.target(gateway), None,
                     payee=f"{gateway.msp_id}:{name}@{gateway.msp_id}")


OWN_CLIENT_LINKS: dict[str, Callable[[Any, Any, str, str, JsonRpcClient], ChainLink]] = {
    "ethereum": ethereum_link,
    "fabric": fabric_link,
}
"""How the relayer links a chain whose kind has its own client library (``KindAdapters.park_rpc`` false), by kind."""


async def run_relayer(cfg: Any, name: str, api: Any = None) -> int:
    """``parkrelay relayer start``: run until SIGTERM/SIGINT, then stop cleanly. With ``api``
    (:class:`relay.ops.api.server.ApiOptions`) the operator API and ``/metrics`` are served too."""
    from chains.common.heap import tune_heap
    from chains.common.storage import EXIT_STORAGE_FAULT, StorageFault

    tune_heap()  # as a node's: the megabytes of JSON a step reads and drops go back to the system
    try:
        relayer = build_relayer(cfg, name)
    except StorageFault as exc:
        logging.getLogger("parkrelay.relayer").error("relayer %s cannot start: %s", name, exc)
        return EXIT_STORAGE_FAULT
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, relayer.stop)
    server = None
    if api is not None:
        from relay.ops.api.service import relayer_api

        server = await relayer_api(cfg, relayer, api)
    try:
        await relayer.run()
    finally:
        if server is not None:
            await server.stop()
        await relayer.close_links()
    print(json.dumps(relayer.summary()))
    return EXIT_STORAGE_FAULT if relayer.fault is not None else 0
