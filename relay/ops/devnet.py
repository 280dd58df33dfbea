"""A whole deployment on one machine: ``parkrelay devnet init|up|down|status|demo``.

``init`` makes the keys (0600 files under ``<data_dir>/keys``) and the genesis of every chain, once.
``up`` starts every node as its own process (logs in ``<data_dir>/logs``, pids in
``<data_dir>/pids.json``) and returns when all answer; the processes are detached and keep running after
the CLI exits, until ``down`` stops them with SIGTERM.
``demo`` does ``up`` with its processes tied to it instead (:mod:`chains.common.procs`: they die with the
demo even when it is SIGKILLed), watches the chains produce and finalise blocks, prints what it saw and
stops them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chains.common.genesis import lanes_from_relay_genesis
from chains.common.procs import spawn
from chains.common.storage import atomic_write
from protocol.certificate import Validator, ValidatorSet
from relay.ops.config import ETHEREUM_OPERATOR, DeploymentConfig, kind_of
from relay.ops.keys import create_secret, ed25519_signer, eth_address, read_secret
from relay.ops.layout import (
    account_key_path,
    admin_token_path,
    cometbft_home_path,
    consensus_keys_path,
    genesis_path,
    node_key_path,
    relay_genesis_path,
    relay_key_paths,
    relayer_key_path,
)
from relay.ops.parks import park_view, rpc


def relay_validator_set(cfg: DeploymentConfig) -> ValidatorSet:
    vals = []
    for name in cfg.relay_validators:
        ed_path, eth_path = relay_key_paths(cfg, name)
        vals.append(Validator(name, ed25519_signer(ed_path).pubkey, eth_address(read_secret(eth_path)), 1))
    return ValidatorSet(tuple(vals))


def init(cfg: DeploymentConfig, genesis_time_ms: int | None = None) -> None:
    """Create keys and genesis files that do not exist yet (idempotent)."""
    create_secret(admin_token_path(cfg))
    for name in cfg.relay_validators:
        for p in relay_key_paths(cfg, name):
            create_secret(p)
    valset = relay_validator_set(cfg)
    now = genesis_time_ms if genesis_time_ms is not None else int(time.time() * 1000)
    for chain in cfg.chains:
        gpath = genesis_path(cfg, chain.id)
        kind = kind_of(chain.kind)
        # secp256k1 (Ethereum) accounts are addresses, and the chain's one node runs with the operator's key
        secp = kind.key_scheme == "secp256k1"
        nodes = {}
        for n in chain.nodes:
            if secp:
                nodes[n] = eth_address(create_secret(account_key_path(cfg, chain.id, ETHEREUM_OPERATOR)))
                continue
            create_secret(node_key_path(cfg, chain.id, n))
            nodes[n] = ed25519_signer(node_key_path(cfg, chain.id, n)).pubkey
        accounts = {}
        for acct, balance in {**{r: 0 for r in cfg.relayers}, **chain.accounts}.items():
            secret = create_secret(account_key_path(cfg, chain.id, acct))
            pub = eth_address(secret) if secp else ed25519_signer(account_key_path(cfg, chain.id, acct)).pubkey
            accounts[acct] = (pub, balance)
        if gpath.exists():
            continue
        # the park learns its lanes and their capacities from the relay genesis (protocol SPEC §6.8)
        lanes = lanes_from_relay_genesis(relay_lanes(cfg), chain.id)
        genesis = kind.build_genesis(
            chain_id=chain.id, params=chain.params, nodes=nodes, accounts=accounts, relay_validators=valset,
            lanes=lanes, genesis_time_ms=now, data_dir=cfg.data_dir, base_port=chain.base_port,
            host=cfg.host_of(chain.id, chain.nodes[0]))
        # whole or absent (write, fsync, rename): init skips a genesis that exists, so a torn one would stay
        atomic_write(gpath, json.dumps(genesis, indent=2, sort_keys=True))
        print(f"genesis of {chain.id} written to {gpath}")
    for r in cfg.relayers:
        create_secret(relayer_key_path(cfg, cfg.relay_chain_id, r))
    if cfg.relay_base_port is not None and not relay_genesis_path(cfg).exists():
        atomic_write(relay_genesis_path(cfg), json.dumps(relay_genesis(cfg, valset, now), indent=2, sort_keys=True))
        print(f"genesis of {cfg.relay_chain_id} written to {relay_genesis_path(cfg)}")
    if cfg.relay_base_port is not None and cfg.relay_engine == "cometbft":
        init_cometbft(cfg, valset)


def init_cometbft(cfg: DeploymentConfig, valset: ValidatorSet) -> None:
    """Each relay validator's CometBFT home (``[relay] engine = "cometbft"``; idempotent): ``cometbft init`` makes
    its keys there, the devnet's settings go into its ``config.toml`` (every validator of the others as a persistent
    peer; deploy/cometbft/README.md), and one CometBFT genesis, the relay genesis as its ``app_state``, goes to all.
    The consensus keys file, written last, marks it done."""
    from relay.chain.abci.cometbft import consensus_pubkey, init_home, write_genesis

    homes = {v: cometbft_home_path(cfg, v) for v in cfg.relay_validators}
    for v, home in homes.items():
        init_home(home, cometbft_settings(cfg, v, peers=False))
    for v, home in homes.items():
        init_home(home, cometbft_settings(cfg, v))
    keys_path = consensus_keys_path(cfg)
    if keys_path.exists():
        return
    pubkeys = {v: consensus_pubkey(home) for v, home in homes.items()}
    relay_gen = json.loads(relay_genesis_path(cfg).read_text())
    power = {v.name: v.power for v in valset.validators}
    first = homes[cfg.relay_validators[0]]
    raw = write_genesis(first, chain_id=cfg.relay_chain_id, genesis_time_ms=int(relay_gen["genesis_time_ms"]),
                        app_state=relay_gen, validators=[(v, pubkeys[v], power[v]) for v in cfg.relay_validators])
    for home in homes.values():
        atomic_write(home / "config" / "genesis.json", raw)
    atomic_write(keys_path, json.dumps({v: k.hex() for v, k in pubkeys.items()}, indent=2, sort_keys=True))
    print(f"CometBFT homes of {', '.join(cfg.relay_validators)} written under {keys_path.parent}")


def cometbft_settings(cfg: DeploymentConfig, validator: str, *, peers: bool = True) -> Any:
    """Validator ``validator``'s :class:`~relay.chain.abci.cometbft.HomeSettings` from the deployment: its addresses
    and ports, the block interval, and (``peers``) every other validator as a persistent peer, its node id read
    from that validator's home."""
    from relay.chain.abci.cometbft import HomeSettings, node_id

    abci, rpc_port, p2p = cfg.cometbft_ports(validator)
    others = [w for w in cfg.relay_validators if w != validator] if peers else []
    return HomeSettings(moniker=validator, host=cfg.host_of(cfg.relay_chain_id, validator), abci_port=abci,
                        rpc_port=rpc_port, p2p_port=p2p, timeout_commit_ms=cfg.relay_block_interval_ms,
                        timeout_propose_ms=cfg.cometbft_timeout_propose_ms,
                        persistent_peers=tuple(f"{node_id(cometbft_home_path(cfg, w))}@"
                                               f"{cfg.host_of(cfg.relay_chain_id, w)}:{cfg.cometbft_ports(w)[2]}"
                                               for w in others))


OPERATOR_BOND_UNITS = 1_000_000
"""Bond units each relay validator's account (its park operator) holds at genesis: a thousand bonds at the default
``min_bond`` (1,000, SPEC §6.9) to fund outside relayers with."""


def relay_lanes(cfg: DeploymentConfig) -> list[dict[str, Any]]:
    """The relay genesis ``lanes``: each config lane, both directions, with its limits if it has any."""
    return [{"lane": lane, "chains": [a, b],
             **({"limits": cfg.lane_limits[(lane, a, b)]} if (lane, a, b) in cfg.lane_limits else {})}
            for lane, a, b in cfg.lanes]


def relay_genesis(cfg: DeploymentConfig, valset: ValidatorSet, genesis_time_ms: int) -> dict[str, Any]:
    """The relay chain's genesis: its validators, one light client per park (from the park's genesis),
    the lanes, and the relayers' accounts."""
    from chains.common.wire import validator_set_to_json

    clients = {}
    for chain in cfg.chains:
        park_genesis = json.loads(genesis_path(cfg, chain.id).read_text())
        # a chain's `light_client` table (deploy/devnet.toml) adds init args: windows and bounds (SPEC §8.4-§8.6)
        clients[chain.id] = {"client_type": kind_of(chain.kind).name,
                             "init": {"genesis": park_genesis, "trusting_period_ms": 14 * 24 * 3600 * 1000,
                                      **chain.light_client}}
    return {
        "chain_id": cfg.relay_chain_id,
        "genesis_time_ms": genesis_time_ms,
        "validators": validator_set_to_json(valset),
        "clients": clients,
        "lanes": relay_lanes(cfg),
        # relayers, and the validators themselves: a validator attests park block hashes (client.attest)
        # from the account of its own name, signed by its validator key. Genesis accounts are governance grants:
        # no bond (SPEC §6.9). The bond unit's whole supply goes to the park operators (the validators'
        # accounts): an operator funds an outside relayer's bond with bond.transfer
        "bonds": {"balances": {v: OPERATOR_BOND_UNITS for v in cfg.relay_validators}},
        "accounts": {**{r: ed25519_signer(relayer_key_path(cfg, cfg.relay_chain_id, r)).pubkey.hex()
                        for r in cfg.relayers},
                     **{v: ed25519_signer(relay_key_paths(cfg, v)[0]).pubkey.hex() for v in cfg.relay_validators}},
        "block": {"commit_ms": cfg.relay_block_interval_ms, "max_bytes": cfg.relay_max_block_bytes},
        **({"recovery_delay_ms": cfg.relay_recovery_delay_ms} if cfg.relay_recovery_delay_ms is not None else {}),
    }


def processes(cfg: DeploymentConfig) -> list[tuple[str, str, str, str, str]]:
    """Every node process of the deployment: ``(chain_id, kind, name, flag, url)``."""
    out = []
    for chain in cfg.chains:
        flag = kind_of(chain.kind).node_flag
        out += [(chain.id, chain.kind, n, flag, chain.url_of(n, cfg.host)) for n in chain.nodes]
    if cfg.relay_base_port is not None:
        out += [(cfg.relay_chain_id, "relay", v, "--validator", cfg.relay_url(v)) for v in cfg.relay_validators]
    return out


def _pids_path(cfg: DeploymentConfig) -> Path:
    return cfg.data_dir / "pids.json"


def up(cfg: DeploymentConfig, timeout_s: float = 120.0, *, detach: bool = True,
       wrap: Callable[[str, list[str]], list[str]] | None = None) -> int:
    """Start every process and wait until the nodes answer. ``detach``: they outlive this process (``devnet up``);
    otherwise they get SIGTERM when it dies, however it dies (``devnet demo``). ``wrap(key, argv)``: the command
    that runs process ``key`` (``"<chain id>/<node>"``, ``"relayer/<name>"``; e.g. inside a network namespace,
    :mod:`relay.ops.netns`) instead of ``argv``."""
    wrap = wrap or (lambda _key, argv: argv)
    init(cfg)
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    for chain_id, kind, n, flag, _ in processes(cfg):
        log_file = open(logs / f"{chain_id}-{n}.log", "ab")
        argv = [sys.executable, "-m", "relay.cli", "node", kind, "--config", str(cfg.path), flag, n]
        if kind != "relay":
            argv[7:7] = ["--chain", chain_id]
        proc = spawn(wrap(f"{chain_id}/{n}", argv), detach=detach, stdout=log_file, stderr=subprocess.STDOUT)
        pids[f"{chain_id}/{n}"] = proc.pid
    for r in cfg.relayers:
        log_file = open(logs / f"relayer-{r}.log", "ab")
        proc = spawn(wrap(f"relayer/{r}", [sys.executable, "-m", "relay.cli", "relayer", "start", "--config",
                                           str(cfg.path), "--name", r]),
                     detach=detach, stdout=log_file, stderr=subprocess.STDOUT)
        pids[f"relayer/{r}"] = proc.pid
    atomic_write(_pids_path(cfg), json.dumps(pids, indent=2))
    deadline = time.monotonic() + timeout_s
    pending = {(c, n): url for c, _, n, _, url in processes(cfg)}
    while pending and time.monotonic() < deadline:
        for key, url in list(pending.items()):
            try:
                _node_status(cfg, key[0], url)
                del pending[key]
            except (OSError, RuntimeError):
                pass
        if pending:
            time.sleep(0.2)
    if pending:
        print(f"devnet: nodes did not answer within {timeout_s:.0f}s: {sorted(pending)}; see {logs}",
              file=sys.stderr)
        down(cfg)
        return 1
    print(f"devnet up: {len(pids)} node processes; logs in {logs}")
    return 0


def down(cfg: DeploymentConfig, timeout_s: float = 15.0) -> int:
    path = _pids_path(cfg)
    if not path.exists():
        print("devnet: nothing running")
        return 0
    pids: dict[str, int] = json.loads(path.read_text())
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                os.waitpid(pid, os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink()
    print(f"devnet down: stopped {len(pids)} processes")
    return 0


def _node_status(cfg: DeploymentConfig, chain_id: str, url: str) -> dict[str, Any]:
    """``{height, final_height, head}`` of one node; OSError/RuntimeError while it does not answer."""
    if chain_id != cfg.relay_chain_id and not kind_of(cfg.chain(chain_id).kind).runs_on_park_node:
        return park_view(cfg, chain_id).status()  # not parkrelay's park JSON-RPC: ask through the park's view
    st: dict[str, Any] = rpc(url, "status", timeout=1.0)
    return st


def status(cfg: DeploymentConfig) -> list[dict[str, Any]]:
    rows = []
    for chain_id, _, n, _, url in processes(cfg):
        try:
            st = _node_status(cfg, chain_id, url)
            rows.append({"chain": chain_id, "node": n, "url": url, "up": True, "height": st["height"],
                         "final_height": st["final_height"], "head": st["head"][:12]})
        except (OSError, RuntimeError):
            rows.append({"chain": chain_id, "node": n, "url": url, "up": False})
    return rows


def print_status(cfg: DeploymentConfig, as_json: bool = False) -> int:
    """Every node's height and finality, then each relayer's per-lane progress (``--json``: one object with
    ``nodes`` and ``lanes``). Exit 1 if a node is down."""
    from relay.ops.packets import relayer_progress

    rows = status(cfg)
    lanes = relayer_progress(cfg)
    if as_json:
        print(json.dumps({"nodes": rows, "lanes": lanes}))
        return 0 if all(r["up"] for r in rows) else 1
    print(f"{'chain':<12} {'node':<12} {'up':<4} {'height':>7} {'final':>7}  head")
    for r in rows:
        if r["up"]:
            print(f"{r['chain']:<12} {r['node']:<12} {'yes':<4} {r['height']:>7} {r['final_height']:>7}  {r['head']}")
        else:
            print(f"{r['chain']:<12} {r['node']:<12} {'no':<4}")
    if lanes:
        print(f"\n{'relayer':<12} {'lane':<28} {'pending':<34} {'oldest (s)':>10}  last error")
        now_ms = int(time.time() * 1000)
        for lp in lanes:
            pending = ", ".join(f"{k} {v}" for k, v in sorted(lp["pending"].items())) or "-"
            stale = "" if now_ms - int(lp["updated_ms"]) < 60_000 else " (stale: relayer not stepping)"
            print(f"{lp['relayer']:<12} {lp['lane']:<28} {pending:<34} {lp['oldest_pending_s']:>10}  "
                  f"{lp['last_error'] or '-'}{stale}")
    return 0 if all(r["up"] for r in rows) else 1


def demo(cfg: DeploymentConfig, seconds: float = 20.0, as_json: bool = False) -> int:
    """Start the devnet and run the scripted scenario: energy DPoS -> PoC and PoC -> DPoS, a voucher's
    return home, a refused transfer refunded, then on every further lane (DPoS <-> Ethereum, Fabric <-> DPoS,
    Fabric <-> PoC, Ethereum <-> Fabric in deploy/devnet.toml) energy both ways and the voucher home; print each
    packet's phases and a final balance table of every park with the supply-conservation check per home park.
    Without a relay chain in the config, only watch the parks finalise for ``seconds``. Exit 1 on failure."""
    if up(cfg, detach=False) != 0:
        return 1
    try:
        if not _wait_first_blocks(cfg, as_json):
            return 1
        if cfg.relay_base_port is None or not cfg.relayers or not cfg.lanes:
            return _watch(cfg, seconds, as_json)
        return _scenario(cfg, as_json)
    finally:
        down(cfg)


def _wait_first_blocks(cfg: DeploymentConfig, as_json: bool) -> bool:
    if not as_json:
        print("waiting for every chain's first block (on a first run PoC farmers fill their plots: ~15 s)")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = status(cfg)
        if all(r["up"] and r["height"] >= 1 for r in rows):
            return True
        if any(not r["up"] for r in rows):
            print(f"devnet: a node went down; see {cfg.data_dir / 'logs'}", file=sys.stderr)
            return False
        time.sleep(0.5)
    print("devnet: no first block within 180 s; see the logs", file=sys.stderr)
    return False


DEMO_FEES = {"verify": 10, "execute": 20, "confirm": 10}
"""What the demo's first transfer offers the relayers (protocol SPEC §6.10)."""
DEMO_FEE_DENOMS = {"dpos": "prc", "poc": "pcc"}
"""The currency a Python park's bridge takes fees in (its genesis ``fee_denom``), by kind."""


def _scenario(cfg: DeploymentConfig, as_json: bool) -> int:
    from relay.ops import packets

    lane, a, b = cfg.lanes[0]
    user = {c.id: next(n for n in c.accounts if n not in cfg.relayers and n != "operator") for c in cfg.chains}
    voucher_on_b = f"{lane}/{a}/kWh"
    steps = [
        (lane, f"energy {a} -> {b}", a, user[a], b, user[b], 5_000, "kWh"),
        (lane, f"energy {b} -> {a}", b, user[b], a, user[a], 2_000, "kWh"),
        (lane, f"voucher home {b} -> {a}", b, user[b], a, user[a], 3_000, voucher_on_b),
        (lane, f"refused transfer {a} -> {b} (no such account)", a, user[a], b, "nobody", 1_000, "kWh"),
    ]
    for other, x, y in cfg.lanes[1:]:  # every further lane: energy out and back, and the voucher home
        steps += [
            (other, f"energy {x} -> {y}", x, user[x], y, user[y], 4_000, "kWh"),
            (other, f"energy {y} -> {x}", y, user[y], x, user[x], 1_500, "kWh"),
            (other, f"voucher home {y} -> {x}", y, user[y], x, user[x], 2_500, f"{other}/{x}/kWh"),
        ]
    log: list[dict[str, Any]] = []
    say = (lambda *_: None) if as_json else print
    # the first transfer pays the relayers (protocol SPEC §6.10) in its park's currency, where the demo knows it
    fee_denom = DEMO_FEE_DENOMS.get(cfg.chain(a).kind)
    fee_view = park_view(cfg, a) if fee_denom else None
    fee_watch = [user[a], *cfg.relayers]
    fees_before = {n: fee_view.balance(n, fee_denom) for n in fee_watch} if fee_view and fee_denom else {}
    fee_report: dict[str, Any] | None = None
    for i, (step_lane, title, src, sender, dst, receiver, amount, denom) in enumerate(steps):
        fees = DEMO_FEES if i == 0 and fee_denom else None
        sent = packets.transfer(cfg, src, sender, dst, receiver, amount, denom, step_lane, fees=fees)
        key = sent["packet"]
        say(f"\n{title}: {amount} Wh of {denom}, packet {key}"
            + (f", relay fees {fees['verify']}/{fees['execute']}/{fees['confirm']} {fee_denom}" if fees else ""))
        t0, seen, row = time.monotonic(), ["committed"], packets.show_packet(cfg, key)
        say(f"  {0.0:5.1f}s  committed  (phase 1 on {src}, height {sent['height']})")
        while row["state"] not in ("completed", "refunded") and time.monotonic() - t0 < 120:
            time.sleep(0.3)
            row = packets.show_packet(cfg, key)
            if row["state"] != seen[-1]:
                seen.append(row["state"])
                say(f"  {time.monotonic() - t0:5.1f}s  {row['state']:<10} ({_PHASE_NOTE.get(row['state'], '')})")
        log.append({"step": title, "packet": key, "phases": seen, "ack": row["ack"],
                    "seconds": round(time.monotonic() - t0, 1)})
        if row["state"] not in ("completed", "refunded"):
            print(f"devnet demo: {key} stuck in {row['state']}; see {cfg.data_dir / 'logs'}", file=sys.stderr)
            return 1
        if fees and fee_view is not None and fee_denom:
            # the settlement paid each step's fee to the relayer that did it first (its own account on the park)
            change = {n: fee_view.balance(n, fee_denom) - fees_before[n] for n in fee_watch}
            fee_report = {"packet": key, "denom": fee_denom, "offered": fees, "sender_paid": -change[user[a]],
                          "earned": {r: change[r] for r in cfg.relayers if change[r]}}
            say(f"  relay fees: {user[a]} paid {-change[user[a]]} {fee_denom}; earned: "
                + (", ".join(f"{r} {n}" for r, n in fee_report["earned"].items()) or "nobody"))
    assets = _asset_round(cfg, user, say)
    if assets is None:
        return 1
    log += assets["packets"]
    balances = _balances(cfg, user)
    if as_json:
        print(json.dumps({"ok": balances["conserved"] and assets["ok"], "packets": log, "balances": balances,
                          "relay_fees": fee_report,
                          "rights": assets["rights"], "reputation": assets["reputation"],
                          "rights_violations": assets["violations"]}))
    else:
        print("\nbalances (Wh):")
        rows = balances["rows"]
        wc, wa, wd = (max([len(str(r[k])) for r in rows] + [n])
                      for k, n in (("chain", 10), ("account", 8), ("denom", 24)))
        for r in rows:
            print(f"  {r['chain']:<{wc}} {r['account']:<{wa}} {r['denom']:<{wd}} {r['amount_wh']:>12,}")
        for c in balances["conservation"]:
            print(f"  {c['home']} escrow of kWh {c['escrowed']:,} == vouchers on {c['remote']} {c['vouchers']:,}: "
                  f"{'conserved' if c['ok'] else 'NOT CONSERVED'}")
        print("\ncharging rights (where each one is):")
        for r in assets["rights"]:
            print(f"  {r['chain']:<{wc}} {r['state']:<9} {r['right_id']:<34} {r['detail']}")
        print("  each right exists exactly once: " + ("yes" if not assets["violations"] else
                                                      "NO: " + "; ".join(assets["violations"])))
        print("\nimported reputation:")
        reps = assets["reputation"]
        ws, wm = (max([len(str(r[k])) for r in reps] + [8]) for k in ("subject", "model"))
        for r in reps:
            print(f"  {r['chain']:<{wc}} from {r['from']:<{wc}} {r['subject']:<{ws}} {r['model']:<{wm}} "
                  f"score {r['score']:>5} (source height {r['source_height']})")
    return 0 if balances["conserved"] and assets["ok"] else 1


DEMO_SLOT_S = (7_200, 10_800)
"""The demo rights' slot: from two to three hours after they are issued (a right's timeout lies before it)."""
DEMO_BIG_KW = 100
"""The demo's refused right: every park's ``tr-2`` (deploy/devnet.toml) holds exactly one of this size."""


def _asset_round(cfg: DeploymentConfig, user: dict[str, str], say: Any) -> dict[str, Any] | None:
    """Charging rights and reputation around the parks, each to the next in ``cfg.chains`` order: a right admitted
    abroad (``st-1``), a right refused for capacity (``st-2``: the target's ``tr-2`` is already booked by its own
    right of the same slot) and refunded at home, and an attestation of the park's own subject. All committed
    first, then followed together. None when a packet did not end."""
    from chains.common.rights import rights_violations
    from relay.ops import assets

    parks = [c.id for c in cfg.chains if any(c.id in (a, b) for _, a, b in cfg.lanes)]
    ring = _ring(parks, {frozenset((a, b)) for _, a, b in cfg.lanes})
    if not ring:
        return {"ok": True, "packets": [], "rights": [], "reputation": [], "violations": []}
    views = {p: park_view(cfg, p) for p in parks}
    now = int(time.time() * 1000)
    slot = (now + DEMO_SLOT_S[0] * 1000, now + DEMO_SLOT_S[1] * 1000)
    say("\ncharging rights and reputation around the parks:")
    for p in [q for q in parks if any(q in hop for hop in ring)]:
        v = views[p]
        for rid, station, kw in ((f"ev-{p}", "st-1", 11), (f"big-{p}", "st-2", DEMO_BIG_KW)):
            v.issue_right(rid, station, station.replace("st-", "tr-"), kw, *slot, v.account(user[p]))
        say(f"  {p}: operator issued ev-{p} (11 kW on st-1) and big-{p} ({DEMO_BIG_KW} kW on st-2) to {user[p]}")
    for src, _ in ring:
        score = getattr(views[src], "set_participant_score", None)
        if score is not None:  # no market has scored a participant yet: the operator records one (Ethereum, Fabric)
            subject, _ = _demo_subject(cfg, src)
            score(views[src].account(subject), 8_200)
            say(f"  {src}: operator recorded {subject}'s score (8200 bp)")
    steps: list[tuple[str, dict[str, Any]]] = []
    t0 = time.monotonic()  # the times below count from the first of these commits
    for src, dst in ring:
        subject, model = _demo_subject(cfg, src)
        steps += [
            (f"charging right ev-{src} {src} -> {dst} (admitted on {dst}'s tr-1)",
             assets.send_right(cfg, src, user[src], dst, user[dst], f"ev-{src}")),
            (f"charging right big-{src} {src} -> {dst} (refused: {dst}'s tr-2 is full for that slot)",
             assets.send_right(cfg, src, user[src], dst, user[dst], f"big-{src}")),
            (f"reputation {src} -> {dst}: {model} of {subject}",
             assets.send_reputation(cfg, src, user[src], dst, user[dst], subject, model)),
        ]
    from relay.ops import packets

    log: list[dict[str, Any]] = []
    pending = {sent["packet"]: title for title, sent in steps}
    rows: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() - t0 < 240:
        for key in list(pending):
            row = packets.show_packet(cfg, key)
            if row["state"] in ("completed", "refunded"):
                rows[key] = row
                ack = row["ack"] or {}
                say(f"  {time.monotonic() - t0:5.1f}s  {pending.pop(key)}: {row['state']}"
                    f"{'' if ack.get('success', True) else ' (' + str(ack.get('code')) + ')'}, packet {key}")
        time.sleep(0.3)
    if pending:
        print(f"devnet demo: {sorted(pending)} did not end; see {cfg.data_dir / 'logs'}", file=sys.stderr)
        return None
    for title, sent in steps:
        r = rows[sent["packet"]]
        log.append({"step": title, "packet": sent["packet"], "state": r["state"], "ack": r["ack"]})
    reports = {p: views[p].rights() for p in parks}
    where = []
    for p, rep in reports.items():
        for rid, rec in sorted(rep["live"].items()):
            where.append({"chain": p, "state": "live", "right_id": rid, "detail": f"owner {rec['owner']}"})
        for state in ("escrowed", "burning"):
            for rid, rec in sorted(rep[state].items()):
                where.append({"chain": p, "state": state, "right_id": rid,
                              "detail": f"towards {rec['chain']} over {rec['lane']}"})
    imported = []
    for src, dst in ring:
        subject, model = _demo_subject(cfg, src)
        rec = views[dst].imported_reputation(src, views[src].account(subject), model)
        if rec is not None:
            imported.append({"chain": dst, "from": src, "subject": views[src].account(subject), "model": model,
                             "score": rec["score"], "source_height": rec["source_height"]})
    violations = rights_violations(reports)
    expected = all(rows[sent["packet"]]["state"] == ("refunded" if title.startswith("charging right big-")
                                                     else "completed") for title, sent in steps)
    return {"ok": expected and not violations and len(imported) == len(ring), "packets": log, "rights": where,
            "reputation": imported, "violations": violations}


def _ring(parks: list[str], joined: set[frozenset[str]]) -> list[tuple[str, str]]:
    """A round trip through every park along lanes (each park sends to the next, the last to the first), the first
    in ``parks`` order; else each lane once in one direction."""
    import itertools

    if len(parks) >= 3:
        for rest in itertools.permutations(parks[1:]):
            order = [parks[0], *rest]
            hops = list(zip(order, order[1:] + order[:1], strict=True))
            if all(frozenset(h) in joined for h in hops):
                return hops
    return [tuple(sorted(pair)) for pair in sorted(joined, key=sorted)]  # type: ignore[misc]


def _demo_subject(cfg: DeploymentConfig, chain_id: str) -> tuple[str, str]:
    """The subject the demo's park ``chain_id`` attests, and under which model: its first witness (DPoS credit) or
    first farmer (PoC response rate), or the participant its genesis scores (Ethereum, Fabric)."""
    chain = cfg.chain(chain_id)
    models = {"dpos": "dpos-witness-credit/v1", "poc": "poc-farmer-response/v1",
              "ethereum": "eth-delivery-record/v1", "fabric": "fabric-participant-standing/v1"}
    if chain.kind in ("dpos", "poc"):
        return chain.nodes[0], models[chain.kind]
    return next(n for n in chain.accounts if n not in cfg.relayers and n != "operator"), models[chain.kind]


_PHASE_NOTE = {"verified": "phase 2: relay chain verified the commitment", "executed": "phase 3: target wrote the ack",
               "acked": "phase 4: relay chain certified the ack", "timed_out": "phase 4: relay certified the timeout",
               "completed": "phase 4: source settled, escrow kept",
               "refunded": "phase 4: source refunded on a certified error ack"}


def _balances(cfg: DeploymentConfig, user: dict[str, str]) -> dict[str, Any]:
    rows, conservation = [], []
    views = {c.id: park_view(cfg, c.id) for c in cfg.chains}
    for chain in cfg.chains:
        vouchers = [f"{ln}/{b if a == chain.id else a}/kWh" for ln, a, b in cfg.lanes if chain.id in (a, b)]
        for denom in ["kWh", *vouchers]:
            amount = views[chain.id].balance(user[chain.id], denom)
            rows.append({"chain": chain.id, "account": user[chain.id], "denom": denom, "amount_wh": amount})
    for home in cfg.chains:
        # home escrows its kWh for every lane; the vouchers of it are on the lanes' other ends
        ends = [(ln, b if a == home.id else a) for ln, a, b in cfg.lanes if home.id in (a, b)]
        e = views[home.id].escrow("kWh")
        v = sum(views[r].voucher_supply(f"{ln}/{home.id}/kWh") for ln, r in ends)
        remotes = ",".join(r for _, r in ends)
        conservation.append({"home": home.id, "remote": remotes, "escrowed": e, "vouchers": v, "ok": e == v})
    return {"rows": rows, "conservation": conservation, "conserved": all(c["ok"] for c in conservation)}


def _watch(cfg: DeploymentConfig, seconds: float, as_json: bool) -> int:
    start = {(r["chain"], r["node"]): r for r in status(cfg)}
    time.sleep(seconds)
    end = status(cfg)
    summary = []
    for chain_id in sorted({r["chain"] for r in end}):
        before = max((r["final_height"] for k, r in start.items() if k[0] == chain_id and r["up"]), default=0)
        after = max((r["final_height"] for r in end if r["chain"] == chain_id and r["up"]), default=0)
        summary.append({"chain": chain_id, "final_height_start": before, "final_height_end": after,
                        "final_progressed": after > before})
    ok = all(s["final_progressed"] for s in summary)
    if as_json:
        print(json.dumps({"ok": ok, "chains": summary}))
    else:
        for s in summary:
            print(f"  {s['chain']}: final height {s['final_height_start']} -> {s['final_height_end']} "
                  f"({'finalising' if s['final_progressed'] else 'STALLED'})")
    return 0 if ok else 1
