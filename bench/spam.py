"""Honest transfers while spammers flood the relay chain (issue 18): the same load with and without the flood.

    python bench/spam.py [--transfers 1000] [--spammers 8] [--ws 16] [--json] [--keep DIR]

Runs ``bench/devnet.py``'s DPoS -> PoC burst of ``--transfers`` twice on fresh devnets (built-in relay engine, 4
validators, 2 relayers): once alone, then beside a flood aimed at relay validator ``op-a``, the validator the
relayers submit to. The flood, from loopback, lasts until every honest packet settled:

* **mempool and blocks**: ``--spammers`` bonded relay accounts (op-a's operator funds each name with
  ``bond.transfer``, each registers itself with its bond, SPEC §6.9) submit valid but useless ``bond.transfer``s of
  one unit to each other, each as fast as admission takes them (up to its ``[limits] mempool_txs_per_account``);
* **admission**: two more bonded accounts submit only transactions admission refuses — a ``client.update`` of a
  header no park signed, a ``packet.verify`` of garbage, each at the account's next nonce so it is decoded and checked
  in full — and registrations of names nobody funded (``account.unbonded``);
* **RPC**: concurrent ``status`` / ``getAccount`` / ``getClientStatus`` queries;
* **WebSocket**: ``--ws`` sockets sending queries as fast as they are answered.

The flood runs in a process of its own (``--flood-nice``, default 10: below the devnet's processes): on a real network
the spammers' own CPU is theirs, not the validator host's, and in the bench's process their event loop would also
slow the bench's honest sender and its measurements. ``--flood-nice 0`` gives the flood an equal share of the two
cores.

It prints both runs' honest figures (throughput through phase 4, latency p50/p95, overhead, relay validator peak
RSS, supply) and the ratios the issue sets: loaded throughput >= 0.8 x unloaded, loaded p95 latency <= 2 x unloaded;
and what the flood did (accepted and refused by code, per kind).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, r2, run_dir
from bench.devnet import DPOS, POC, run
from chains.common.progress import bar as progress_bar

THROUGHPUT_FLOOR = 0.8
"""Loaded honest throughput over unloaded: the issue's floor."""
P95_CEILING = 2.0
"""Loaded honest p95 latency over unloaded: the issue's ceiling."""
SPAM_FUNDS = 10_000
"""Bond units op-a's operator gives each spammer (the default ``min_bond`` is 1,000)."""


def loopback(host: int) -> str:
    """The ``host``-th loopback address, 127.0.0.<host>: every 127/8 address reaches the devnet's 127.0.0.1
    listeners, and a node's per-address bounds (``[limits]``) then see each spamming client as its own host, as
    they would over a network; the honest relayers and the bench keep 127.0.0.1."""
    return f"127.0.0.{host}"


def rpc_from(url: str, address: str) -> Any:
    """A JSON-RPC client of ``url`` whose connections leave from ``address``."""
    import aiohttp

    from adapters.common.rpc import JsonRpcClient

    class FromAddress(JsonRpcClient):
        async def connect(self) -> None:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=self.timeout,
                                                      connector=aiohttp.TCPConnector(local_addr=(address, 0)))

    return FromAddress(url, side=f"spam@{address}", timeout_s=30)


class Flood:
    """The spammers' load on one relay validator; counts what it sent by kind and outcome. Each spammer, each query
    loop and each WebSocket connects from a loopback address of its own (:func:`loopback`)."""

    def __init__(self, cfg: Any, n_spammers: int, n_ws: int) -> None:
        self.cfg = cfg
        self.url = cfg.relay_url(cfg.relay_validators[0])
        self.n_spammers, self.n_ws = n_spammers, n_ws
        self.outcomes: Counter[str] = Counter()
        self.client = rpc_from(self.url, loopback(9))
        self.clients: list[Any] = [self.client]

    def client_at(self, host: int) -> Any:
        client = rpc_from(self.url, loopback(host))
        self.clients.append(client)
        return client

    def count(self, kind: str, exc: BaseException | None) -> None:
        code = "accepted" if exc is None else str(getattr(exc, "code", type(exc).__name__))
        self.outcomes[f"{kind}:{code}"] += 1

    async def submit(self, kind: str, tx: Any, client: Any = None) -> bool:
        from protocol.errors import ParkRelayError

        try:
            await (client or self.client).call("submitTx", {"tx": tx.to_json()})
        except (ParkRelayError, OSError, TimeoutError) as exc:
            self.count(kind, exc)
            return False
        self.count(kind, None)
        return True

    async def setup(self) -> list[tuple[str, Any]]:
        """Fund and register the spammers: op-a's account transfers each its bond, each registers itself."""
        from chains.common.tx import Tx
        from protocol.crypto import Ed25519Signer
        from relay.ops.keys import ed25519_signer
        from relay.ops.layout import relay_key_paths

        chain = self.cfg.relay_chain_id
        operator = self.cfg.relay_validators[0]
        op_key = ed25519_signer(relay_key_paths(self.cfg, operator)[0])
        acct = await self.client.call("getAccount", {"name": operator})
        nonce = int(acct["nonce"]) + int(acct.get("pending", 0))
        # the last two only ever send what admission refuses: their nonce stays 1, so their forgeries are decoded
        # and checked in full (a stale nonce would be refused before that)
        spammers = [(f"spam{i}", Ed25519Signer(os.urandom(32))) for i in range(self.n_spammers + 2)]
        for name, _ in spammers:
            await self.submit("fund", Tx.signed(op_key, chain, operator, nonce, "bond.transfer",
                                                {"to": name, "amount": SPAM_FUNDS}))
            nonce += 1
        await self._until({operator: nonce})
        for name, key in spammers:
            await self.submit("register", Tx.signed(key, chain, name, 0, "account.register",
                                                    {"pubkey": key.pubkey.hex()}))
        await self._until({name: 1 for name, _ in spammers})
        return spammers

    async def _until(self, nonces: dict[str, int], timeout_s: float = 120) -> None:
        """Until each named account has committed up to its nonce (``getAccount``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = []
            for name, want in nonces.items():
                try:
                    seen.append(int((await self.client.call("getAccount", {"name": name}))["nonce"]) >= want)
                except Exception:  # not registered yet: the probe says no
                    seen.append(False)
            if all(seen):
                return
            await asyncio.sleep(0.5)  # the relay chain's blocks: nothing to await but the next one
        raise RuntimeError(f"spam set-up not committed within {timeout_s:.0f} s: {nonces}")

    async def useless_transfers(self, name: str, key: Any, peer: str, client: Any, stop: asyncio.Event) -> None:
        """Valid ``bond.transfer``s of one unit to ``peer``, each nonce as soon as the last was admitted."""
        from chains.common.tx import Tx
        from protocol.errors import ParkRelayError

        chain = self.cfg.relay_chain_id
        nonce = 1
        while not stop.is_set():
            tx = Tx.signed(key, chain, name, nonce, "bond.transfer", {"to": peer, "amount": 1})
            if await self.submit("useless", tx, client):
                nonce += 1
                continue
            await asyncio.sleep(0.05)  # refused (a bound reached): the next try, a little later
            try:
                acct = await client.call("getAccount", {"name": name})
                nonce = int(acct["nonce"]) + int(acct.get("pending", 0))
            except ParkRelayError as exc:
                self.count("nonce_read", exc)

    async def refused_at_admission(self, name: str, key: Any, client: Any, stop: asyncio.Event) -> None:
        """Transactions admission refuses: forged headers, garbage proofs, registrations nobody funded."""
        from chains.common.tx import Tx
        from protocol.crypto import Ed25519Signer

        chain = self.cfg.relay_chain_id
        park = self.cfg.chains[0].id
        i = 0
        while not stop.is_set():
            i += 1
            kind = i % 3
            if kind == 0:
                tx = Tx.signed(key, chain, name, 1, "client.update",
                               {"chain_id": park, "headers": [os.urandom(120).hex()]})
                await self.submit("forged_header", tx, client)
            elif kind == 1:
                tx = Tx.signed(key, chain, name, 1, "packet.verify",
                               {"packet": os.urandom(80).hex(), "height": 1, "proof": os.urandom(64).hex()})
                await self.submit("garbage_proof", tx, client)
            else:
                stranger = Ed25519Signer(os.urandom(32))
                tx = Tx.signed(stranger, chain, f"nobody{i}", 0, "account.register",
                               {"pubkey": stranger.pubkey.hex()})
                await self.submit("unfunded_register", tx, client)

    async def queries(self, client: Any, stop: asyncio.Event) -> None:
        from protocol.errors import ParkRelayError

        methods = [("status", {}), ("getAccount", {"name": "spam0"}),
                   ("getClientStatus", {"chain_id": self.cfg.chains[0].id})]
        i = 0
        while not stop.is_set():
            method, params = methods[i % len(methods)]
            i += 1
            try:
                await client.call(method, params)
                self.count("query", None)
            except (ParkRelayError, OSError, TimeoutError) as exc:
                self.count("query", exc)

    async def websocket(self, address: str, stop: asyncio.Event) -> None:
        import aiohttp

        ws_url = self.url.replace("http://", "ws://") + "/ws"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session, \
                    session.ws_connect(ws_url) as ws:
                i = 0
                while not stop.is_set():
                    i += 1
                    await ws.send_json({"jsonrpc": "2.0", "id": i, "method": "status", "params": {}})
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        self.count("ws", ConnectionError(f"socket {msg.type.name}"))
                        return
                    body = msg.json()
                    code = (body.get("error") or {}).get("data", {}).get("code") if isinstance(body, dict) else None
                    self.outcomes[f"ws:{code or 'accepted'}"] += 1
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.count("ws_connect", exc)

    async def __call__(self, cfg: Any, ready: asyncio.Event, stop: asyncio.Event) -> dict[str, Any]:
        t0 = time.monotonic()
        spammers = await self.setup()
        flooders, forgers = spammers[:self.n_spammers], spammers[self.n_spammers:]
        tasks = [asyncio.ensure_future(self.useless_transfers(name, key, flooders[(i + 1) % len(flooders)][0],
                                                              self.client_at(10 + i), stop))
                 for i, (name, key) in enumerate(flooders)]
        tasks += [asyncio.ensure_future(self.refused_at_admission(name, key, self.client_at(80 + i), stop))
                  for i, (name, key) in enumerate(forgers)]
        tasks += [asyncio.ensure_future(self.queries(self.client_at(100 + k), stop)) for k in range(4)]
        tasks += [asyncio.ensure_future(self.websocket(loopback(150 + j), stop)) for j in range(self.n_ws)]
        setup_s = time.monotonic() - t0
        ready.set()
        t1 = time.monotonic()
        await stop.wait()
        failed = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, BaseException)]
        for client in self.clients:
            await client.close()
        if failed:
            raise RuntimeError(f"{len(failed)} flood tasks failed; the first: {failed[0]!r}") from failed[0]
        seconds = time.monotonic() - t1
        sent = sum(self.outcomes.values())
        return {"spammers": len(flooders), "forgers": len(forgers), "websockets": self.n_ws,
                "setup_s": round(setup_s, 1), "flood_s": round(seconds, 1), "requests": sent,
                "requests_per_s": round(sent / seconds, 1), "outcomes": dict(sorted(self.outcomes.items()))}


def summary(out: dict[str, Any]) -> dict[str, Any]:
    keys = ("throughput_per_s", "seconds", "latency_p50_s", "latency_p95_s", "overhead_phase3_p50_s",
            "overhead_phase3_p95_s", "overhead_phase4_p50_s", "overhead_phase4_p95_s", "relay_node_peak_rss_mb",
            "relay_node_rss_mb", "relay_block_interval_p50_ms", "supply_conserved", "completed", "accepted",
            "redundant_relays_in_blocks", "relay_rpc_requests_per_s")
    return {k: out.get(k) for k in keys}


def compare(unloaded: dict[str, Any], loaded: dict[str, Any], flood: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both runs' honest figures, the two ratios the issue bounds and whether each holds."""
    thr = loaded["throughput_per_s"] / unloaded["throughput_per_s"] if unloaded["throughput_per_s"] else None
    p95 = loaded["latency_p95_s"] / unloaded["latency_p95_s"] if unloaded["latency_p95_s"] else None
    return {
        "unloaded": summary(unloaded), "loaded": summary(loaded), "flood": flood or {},
        "throughput_loaded_over_unloaded": r2(thr), "p95_loaded_over_unloaded": r2(p95),
        "throughput_target_met": thr is not None and thr >= THROUGHPUT_FLOOR,
        "p95_target_met": p95 is not None and p95 <= P95_CEILING,
        "nothing_lost": bool(unloaded.get("supply_conserved") and loaded.get("supply_conserved")
                             and loaded.get("completed") == loaded.get("accepted")),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfers", type=int, default=1000, help="honest DPoS -> PoC transfers per run. Default 1000")
    ap.add_argument("--spammers", type=int, default=8, help="bonded spammer accounts (1..64). Default 8")
    ap.add_argument("--ws", type=int, default=16, help="spamming WebSocket connections (0..64). Default 16")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="run in this directory and keep it (logs, databases)")
    ap.add_argument("--give-up-s", type=float, default=900, help="stop waiting after this long. Default 900")
    ap.add_argument("--flood-nice", type=int, default=10, help="niceness of the flood's process (0..19). Default 10")
    ap.add_argument("--flood-child", nargs=3, metavar=("CONFIG", "SPAMMERS", "WS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood_child:
        return flood_child(Path(args.flood_child[0]), int(args.flood_child[1]), int(args.flood_child[2]))
    if not 0 <= args.flood_nice <= 19:
        ap.error("--flood-nice 0..19")
    if not 1 <= args.spammers <= 64 or not 0 <= args.ws <= 64 or args.transfers < 1:
        ap.error("--spammers 1..64, --ws 0..64, --transfers >= 1")
    with run_dir(args.keep, "parkrelay-bench-") as root, \
            progress_bar("spam", total=2 * args.transfers, json_mode=args.json) as bar:
        runs = {}
        for name in ("unloaded", "loaded"):
            (root / name).mkdir()
            flood = flood_load(args.spammers, args.ws, args.flood_nice) if name == "loaded" else None
            runs[name] = asyncio.run(run(DPOS, POC, "burst", args.transfers, root / name, give_up_s=args.give_up_s,
                                         bar=bar, background=flood))
    out = compare(runs["unloaded"], runs["loaded"], {**runs["loaded"].get("background", {}),
                                                     "flood_nice": args.flood_nice})
    emit(out, args.json)
    return 0


def flood_load(n_spammers: int, n_ws: int, nice: int = 10) -> Any:
    """The :data:`bench.devnet.Background` that floods the devnet :func:`bench.devnet.run` starts: this script again
    as a child process (``--flood-child``) at niceness ``nice``. It prints ``ready`` once the spammers are set up,
    floods until its stdin closes, then prints what it sent as one JSON line."""
    async def flood(cfg: Any, ready: asyncio.Event, stop: asyncio.Event) -> dict[str, Any]:
        import json

        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--flood-child", str(cfg.path), str(n_spammers), str(n_ws),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            preexec_fn=(lambda: os.nice(nice)) if nice else None)
        assert child.stdin is not None and child.stdout is not None
        try:
            line = await child.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"the flood process did not start: {line!r}")
            ready.set()
            await stop.wait()
            child.stdin.close()
            out, _ = await asyncio.wait_for(child.communicate(), 120)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        if child.returncode != 0:
            raise RuntimeError(f"the flood process failed (exit {child.returncode})")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result
    return flood


def flood_child(config: Path, n_spammers: int, n_ws: int) -> int:
    """``--flood-child``: flood the deployment ``config`` until stdin closes (see :func:`flood_load`)."""
    import json

    from relay.ops.config import load_config

    cfg = load_config(config)

    async def go() -> dict[str, Any]:
        ready, stop = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(Flood(cfg, n_spammers, n_ws)(cfg, ready, stop))
        await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()  # set-up failed: raises
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
        stop.set()
        return await task

    print(json.dumps(asyncio.run(go())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
