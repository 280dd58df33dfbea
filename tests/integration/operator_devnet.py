"""A small real devnet for the operator-surface tests (API, metrics, status page, doctor).

Two DPoS parks (the cheapest real park: no plots, no Fabric, no anvil), one lane between them, four relay validators
(``op-a`` serves the operator API) and one relayer (serving its API too), each its own process over loopback.
One per test module (module-scoped fixtures): start-up costs about ten seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chains.common.procs import spawn
from relay.ops.config import DeploymentConfig
from relay.ops.keys import read_secret
from relay.ops.layout import admin_token_path
from tests.integration.harness import REPO, Devnet, free_port_block

PARK_A, PARK_B, LANE, RELAY = "park-a", "park-b", "lane-0", "relay"
USER = {PARK_A: "alice", PARK_B: "bob"}
VALIDATORS = ["op-a", "op-b", "op-c", "op-d"]


def park(chain_id: str, witnesses: list[str]) -> dict[str, Any]:
    return {"id": chain_id, "kind": "dpos", "nodes": witnesses, "block_interval_ms": 500,
            "maintenance_interval_blocks": 1000, "accounts": {USER[chain_id]: 5_000_000, "operator": 0}}


@dataclass
class OperatorNet:
    """The devnet, the API of relay validator ``op-a`` and of the relayer, and helpers to read them."""

    d: Devnet
    cfg: DeploymentConfig
    validator_api: str
    relayer_api: str
    token: str
    relayers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    relayer_ports: dict[str, int] = field(default_factory=dict)

    def get(self, path: str, url: str | None = None, token: str | None = None) -> tuple[int, Any]:
        return http("GET", (url or self.validator_api) + path, token=token)

    def post(self, path: str, body: Any = None, url: str | None = None, token: str | None = None
             ) -> tuple[int, Any]:
        return http("POST", (url or self.validator_api) + path, body, token=token)

    def start_relayer(self, name: str) -> None:
        log = open(self.cfg.data_dir / "logs" / f"relayer-{name}.log", "ab")
        self.relayers[name] = spawn(
            [sys.executable, "-m", "relay.cli", "relayer", "start", "--config", str(self.cfg.path), "--name", name,
             "--api-port", str(self.relayer_ports[name])], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        url = f"http://127.0.0.1:{self.relayer_ports[name]}"
        self.wait(f"relayer {name}'s API answering", lambda: self.get("/api/v1/parks", url)[0] == 200, 60, 0.1)

    def stop_relayer(self, name: str, sig: int = signal.SIGTERM) -> int:
        p = self.relayers.pop(name)
        p.send_signal(sig)
        return p.wait(timeout=20)

    def wait(self, what: str, check: Any, timeout_s: float = 60.0, poll_s: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (OSError, KeyError, TypeError, ValueError) as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")

    def ready(self, url: str | None = None) -> None:
        """Until the API at ``url`` sees every chain reachable and finalising."""
        def ok() -> bool:
            status, body = self.get("/api/v1/parks", url)
            chains = [body["relay"], *body["parks"]] if status == 200 else []
            return bool(chains) and all(c["reachable"] and (c["final_height"] or 0) >= 2 for c in chains)
        self.wait("every chain finalising, seen through the API", ok, 90)

    def transfer(self, src: str, amount_wh: int, timeout_s: float = 300) -> str:
        dst = PARK_B if src == PARK_A else PARK_A
        status, body = self.post("/api/v1/transfers", {"from_chain": src, "sender": USER[src], "to_chain": dst,
                                                       "receiver": USER[dst], "amount_wh": amount_wh,
                                                       "timeout_s": timeout_s}, token=self.token)
        assert status == 201, body
        return str(body["packet"])

    def packet(self, key: str) -> dict[str, Any]:
        status, body = self.get(f"/api/v1/packets/{key}")
        assert status in (200, 404), body
        return body if status == 200 else {"state": None}


def http(method: str, url: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 90.0) -> tuple[int, Any]:
    """One request; ``(status, parsed JSON body or text)``."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=h)  # noqa: S310 - loopback test URLs
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            status, text, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, text, ctype = exc.code, exc.read().decode(), exc.headers.get("Content-Type", "")
    return status, json.loads(text) if "json" in ctype else text


@contextmanager
def operator_devnet(root: Path, relayers: tuple[str, ...] = ("relayer-a",), start_relayers: bool = True
                    ) -> Iterator[OperatorNet]:
    d = Devnet(root, chains=[park(PARK_A, ["wa-1"]), park(PARK_B, ["wb-1"])],
               lanes=[{"lane": LANE, "a": PARK_A, "b": PARK_B}],
               relay={"validators": VALIDATORS, "base_port": free_port_block(4), "block_interval_ms": 300},
               relayers=list(relayers), relayer_options={"heartbeat_s": 1.0})
    cfg = d.write()
    api_ports = free_port_block(1 + len(relayers))
    for c in cfg.chains:
        for n in c.nodes:
            d.start(c.id, n)
    for v in VALIDATORS[1:]:
        d.start(RELAY, v)
    logs = cfg.data_dir / "logs"
    log = open(logs / f"{RELAY}-{VALIDATORS[0]}.log", "ab")
    d.procs[(RELAY, VALIDATORS[0])] = spawn(
        [sys.executable, "-m", "relay.cli", "--log-level", "info", "node", "relay", "--config", str(cfg.path),
         "--validator", VALIDATORS[0], "--api-port", str(api_ports)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    net = OperatorNet(d, cfg, f"http://127.0.0.1:{api_ports}", "", read_secret(admin_token_path(cfg)).hex(),
                      relayer_ports={r: api_ports + 1 + i for i, r in enumerate(relayers)})
    net.relayer_api = f"http://127.0.0.1:{net.relayer_ports[relayers[0]]}" if relayers else ""
    try:
        net.wait("the validator's API answering", lambda: net.get("/api/v1/parks")[0] == 200, 60)
        if start_relayers:
            for r in relayers:
                net.start_relayer(r)
        yield net
    finally:
        for r in list(net.relayers):
            net.stop_relayer(r)
        d.stop_all()


def run(coro: Any) -> Any:
    """Run ``coro`` to its end on a loop of its own thread (a test's thread may hold one: Playwright's)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def freeze_dpos_client(net: OperatorNet, chain: str) -> None:
    """Freeze the relay's light client of DPoS park ``chain`` for good, as colluding witnesses would: every witness
    (their devnet keys) signs a branch from a final block conflicting with the final chain above it, long enough to
    be irreversible; submitted as ``client.misbehaviour {branch}`` (SPEC §8.5, conflicting finality) from relay
    validator ``op-d``'s account."""
    from adapters.common.park import ParkTarget
    from adapters.common.rpc import JsonRpcClient
    from chains.dpos.consensus import FinalityTracker
    from chains.dpos.testing import forge_branch
    from chains.dpos.types import DposHeader, DposParams
    from relay.ops.keys import ed25519_signer
    from relay.ops.layout import node_key_path, relay_key_paths

    async def go() -> None:
        async with JsonRpcClient(net.cfg.relay_url("op-a"), side=RELAY) as rc, \
                JsonRpcClient(net.cfg.chain(chain).url_of(net.cfg.chain(chain).nodes[0]), side=chain) as park:
            st = await rc.call("getClientStatus", {"chain_id": chain})
            fork = max(st["final_height"] - 2, 0)
            parent = DposHeader.decode(bytes.fromhex((await park.call("getHeader", {"height": fork}))["header"]))
            tracker = FinalityTracker.from_json(json.loads(bytes.fromhex(
                (await park.call("query", {"key": "dpos/tracker", "height": fork}))["value"])))
            params = DposParams.from_json(json.loads(bytes.fromhex(
                (await park.call("query", {"key": "dpos/params", "height": fork}))["value"])))
            active = tracker.active
            signers = {n: ed25519_signer(node_key_path(net.cfg, chain, n)) for n in active.names}
            branch = forge_branch(parent, active, signers, params, 2 * len(active.names) + 2)
            target = ParkTarget(rc, RELAY, "op-d", ed25519_signer(relay_key_paths(net.cfg, "op-d")[0]))
            await target.submit("client.misbehaviour", {"chain_id": chain,
                                                        "branch": [h.encode().hex() for h in branch]})

    run(go())
