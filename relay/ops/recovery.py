"""``parkrelay relay client …``: a frozen light client's recovery by governance (SPEC.md §8.8; README *Recovery*).

    parkrelay relay client status  --config FILE --chain CHAIN [--json]
    parkrelay relay client prepare --config FILE --chain CHAIN [--trusted-height H] --out PLAN.json [--json]
    parkrelay relay client sign    --config FILE --plan PLAN.json [--json]
    parkrelay relay client submit  --config FILE --plan PLAN.json [--wait-s S] [--json]
    parkrelay relay client recover --config FILE --chain CHAIN [--trusted-height H] [--wait-s S] [--json]

``prepare`` writes a *plan*: the ``client.recover`` params and the governance nonce they are for, read from the
running deployment —

* the substitute's init: the chain's init in the relay genesis, plus for a ``poc`` park a trusted checkpoint at
  ``--trusted-height`` (default: the park node's own final height; its consensus context from the park's
  headers, :func:`chains.poc.light_client.checkpoint_from_headers`) and the farmers the frozen client bound after
  genesis (``farmers``);
* ``packets``: every packet of the chain the relay holds VERIFIED without an outcome (from the relay's
  ``packet_verified`` events and the transactions of their blocks; each checked against the relay's state).

``sign`` adds the signatures of every relay validator whose key file is on this host (on a devnet, all of them;
elsewhere each validator's operator runs ``sign`` on the plan in turn). ``submit`` sends the plan from the first
signer's relay account and waits for its block; ``recover`` does the three at once. A plan is valid for its nonce
only: any other governance action executing first makes it stale (``tx.nonce``-like ``protocol`` refusal), and
``prepare`` must be run again; so must it if a packet's state changes meanwhile (``client.recovery``).
Exit codes: 0 done, 1 the relay refused or a chain failed, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from protocol.codec import decode_packet
from protocol.paths import verified_path
from relay.ops.config import ConfigError, DeploymentConfig, load_config
from relay.ops.keys import KeyFileError, ed25519_signer
from relay.ops.layout import relay_genesis_path, relay_key_paths
from relay.ops.parks import TxRefusedError, rpc

__all__ = ["add_parser", "collect_in_flight", "dispatch", "prepare", "sign", "submit", "substitute_init"]

OP = "client.recover"
PLAN_VERSION = 1


def _relay(cfg: DeploymentConfig, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    return rpc(cfg.relay_url(cfg.relay_validators[0]), method, params, timeout)


def _park(cfg: DeploymentConfig, chain_id: str, method: str, params: dict[str, Any] | None = None) -> Any:
    chain = cfg.chain(chain_id)
    return rpc(chain.url_of(chain.nodes[0], cfg.host), method, params, 10.0)


def client_status(cfg: DeploymentConfig, chain_id: str) -> dict[str, Any]:
    out: dict[str, Any] = _relay(cfg, "getClientStatus", {"chain_id": chain_id})
    return out


def _query(cfg: DeploymentConfig, key: str) -> bytes | None:
    raw = _relay(cfg, "query", {"key": key})["value"]
    return None if raw is None else bytes.fromhex(raw)


def collect_in_flight(cfg: DeploymentConfig, chain_id: str) -> list[bytes]:
    """The raw bytes of every packet from ``chain_id`` the relay holds VERIFIED with no outcome, in key order: since
    the freeze suspended them, their commitments sit at ``relay/suspended/…`` (SPEC §8.8); a client frozen before
    suspension existed left them at ``relay/verified/…``."""
    head = int(_relay(cfg, "status")["height"])
    verified_at: dict[str, tuple[str, int]] = {}
    start = 1
    while start <= head:
        end = min(head, start + 999)
        for ev in _relay(cfg, "getEvents", {"from": start, "to": end, "type": "packet_verified"}):
            if ev.get("src") == chain_id:
                key = verified_path(ev["src"], ev["dst"], ev["lane"], int(ev["sequence"])).decode()
                verified_at[key] = (str(ev["commitment"]), int(ev["height"]))
        start = end + 1
    blocks: dict[int, dict[str, Any]] = {}
    out: dict[str, bytes] = {}
    for key, (commitment, height) in sorted(verified_at.items()):
        held = _query(cfg, key)
        if held is None:
            held = _query(cfg, "relay/suspended/" + key[len("relay/verified/"):])
        if held is None or held.hex() != commitment:
            continue  # revoked since, or verified again with another packet (its own event is the later one)
        if _query(cfg, "relay/outcome/" + key[len("relay/verified/"):]) is not None:
            continue
        block = blocks.get(height) or blocks.setdefault(height, _relay(cfg, "getBlock", {"height": height}))
        for raw in _packets_of(block):
            if hashlib.sha256(raw).hexdigest() == commitment:
                out[key] = raw
                break
        else:
            raise RuntimeError(f"relay block {height} verified {key} but holds no packet with its commitment")
    return [out[k] for k in sorted(out)]


def _packets_of(block: dict[str, Any]) -> list[bytes]:
    raws = []
    for tx in block.get("txs", []):
        args = tx.get("args", {})
        if tx.get("op") == "packet.verify":
            raws.append(bytes.fromhex(args["packet"]))
        elif tx.get("op") == "packet.verify_batch":
            raws += [bytes.fromhex(item["packet"]) for item in args.get("items", [])]
    return raws


def substitute_init(cfg: DeploymentConfig, chain_id: str, status: dict[str, Any],
                    trusted_height: int | None) -> tuple[str, dict[str, Any], int | None]:
    """``(client_type, init, trusted height)`` of a substitute for the chain's frozen client."""
    gpath = relay_genesis_path(cfg)
    if not gpath.exists():
        raise ConfigError(f"no relay genesis at {gpath}: the substitute's parameters come from it")
    client = json.loads(gpath.read_text()).get("clients", {}).get(chain_id)
    if client is None:
        raise ConfigError(f"the relay genesis has no client of {chain_id}")
    ctype, init = str(client["client_type"]), dict(client["init"])
    if ctype != status["client_type"]:
        raise ConfigError(f"the relay genesis' client of {chain_id} is a {ctype} client; the frozen one is "
                          f"{status['client_type']}")
    if ctype != "poc":
        return ctype, init, None  # the substitute trusts the park's genesis again, as the first client did
    from chains.poc.app import params_from_genesis
    from chains.poc.light_client import checkpoint_from_headers
    from chains.poc.types import decode_header

    if trusted_height is None:
        trusted_height = int(_park(cfg, chain_id, "status")["final_height"])
    params, _ = params_from_genesis(dict(init["genesis"]))
    lo = max(0, trusted_height - params.retarget_window)
    headers = []
    h = lo
    while h <= trusted_height:
        got = _park(cfg, chain_id, "getHeaders", {"from": h, "to": trusted_height})
        if not got:
            raise RuntimeError(f"{chain_id} has no header at height {h}")
        headers += [decode_header(bytes.fromhex(x["header"])) for x in got]
        h = int(got[-1]["height"]) + 1
    init["checkpoint"] = checkpoint_from_headers(params, headers).to_json()
    frozen_state = _query(cfg, f"relay/client_state/{status['client_id']}")
    genesis_accounts = {str(a["name"]) for a in init["genesis"].get("accounts", [])}
    keys = json.loads(frozen_state or b"{}").get("farmer_keys") or {}
    farmers = {n: k for n, k in keys.items() if n not in genesis_accounts}
    if farmers:
        init["farmers"] = farmers
    return ctype, init, trusted_height


def prepare(cfg: DeploymentConfig, chain_id: str, trusted_height: int | None = None) -> dict[str, Any]:
    """The recovery plan of the chain's frozen client (module docstring)."""
    cfg.chain(chain_id)
    status = client_status(cfg, chain_id)
    if status["status"] != "frozen":
        raise ConfigError(f"the relay's client {status['client_id']} of {chain_id} is {status['status']}, not frozen: "
                          "nothing to recover")
    ctype, init, height = substitute_init(cfg, chain_id, status, trusted_height)
    packets = collect_in_flight(cfg, chain_id)
    raw_nonce = _query(cfg, "relay/governance/nonce")
    params = {"chain_id": chain_id, "client_type": ctype, "init": init, "packets": [p.hex() for p in packets]}
    return {"v": PLAN_VERSION, "op": OP, "relay_chain_id": cfg.relay_chain_id,
            "nonce": int(raw_nonce.decode()) if raw_nonce else 0, "params": params, "signatures": [],
            "frozen_client": status["client_id"], "frozen_height": status["frozen_height"], "trusted_height": height,
            "revokes": [_key(p) for p in packets]}


def _key(raw: bytes) -> str:
    p = decode_packet(raw)
    return f"{p.src_chain}/{p.dst_chain}/{p.lane}/{p.sequence}"


def sign(cfg: DeploymentConfig, plan: dict[str, Any]) -> list[str]:
    """Add the signatures of the relay validators whose keys are on this host; the names that signed."""
    from relay.chain.state_machine.governance import governance_sign_bytes

    if plan.get("v") != PLAN_VERSION or plan.get("op") != OP or plan.get("relay_chain_id") != cfg.relay_chain_id:
        raise ConfigError("not a client recovery plan for this relay chain")
    msg = governance_sign_bytes(cfg.relay_chain_id, int(plan["nonce"]), OP, plan["params"])
    have = {int(s["validator_index"]) for s in plan["signatures"]}
    signed = []
    for i, name in enumerate(cfg.relay_validators):
        path = relay_key_paths(cfg, name)[0]
        if i in have or not path.exists():
            continue
        plan["signatures"].append({"validator_index": i, "signature": ed25519_signer(path).sign(msg).hex()})
        signed.append(name)
    plan["signatures"].sort(key=lambda s: s["validator_index"])
    return signed


def submit(cfg: DeploymentConfig, plan: dict[str, Any], wait_s: float = 60.0) -> dict[str, Any]:
    """Send the plan (from the relay account of the first validator whose key is here) and wait for its block."""
    from chains.common.tx import Tx

    sender = next((v for v in cfg.relay_validators if relay_key_paths(cfg, v)[0].exists()), None)
    if sender is None:
        raise KeyFileError("no relay validator key on this host to send the recovery from")
    key = ed25519_signer(relay_key_paths(cfg, sender)[0])
    acct = _relay(cfg, "getAccount", {"name": sender})
    gov = {"nonce": int(plan["nonce"]), "signatures": plan["signatures"]}
    tx = Tx.signed(key, cfg.relay_chain_id, sender, int(acct["nonce"]) + int(acct.get("pending", 0)), OP,
                   {**plan["params"], "gov": gov})
    tx_hash = _relay(cfg, "submitTx", {"tx": tx.to_json()})["hash"]
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        res = _relay(cfg, "getTxResult", {"hash": tx_hash})
        if res is not None:
            if not res["ok"]:
                err = res["error"]
                raise TxRefusedError(cfg.relay_url(cfg.relay_validators[0]), OP, err,
                                     f"{OP} refused in relay block {res['height']}: {err.get('message')}")
            status = client_status(cfg, plan["params"]["chain_id"])
            return {"tx": tx_hash, "height": res["height"], "chain_id": plan["params"]["chain_id"],
                    "client_id": status["client_id"], "status": status["status"], "replaced": plan["frozen_client"],
                    "revoked": plan["revokes"], "trusted_height": plan.get("trusted_height")}
        time.sleep(0.2)
    raise RuntimeError(f"{OP} {tx_hash[:16]} not in a relay block within {wait_s:.0f} s")


# --- the command line ------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """``parkrelay relay client status|prepare|sign|submit|recover``."""
    rl = sub.add_parser("relay", help="the relay chain: its light clients of the parks")
    rsub = rl.add_subparsers(dest="relay_what", required=True)
    cl = rsub.add_parser("client", help="a park's light client on the relay: status and recovery by governance",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cl.add_argument("action", choices=["status", "prepare", "sign", "submit", "recover"])
    cl.add_argument("--config", required=True, help="deployment config (TOML)")
    cl.add_argument("--chain", help="the park whose client (status, prepare, recover)")
    cl.add_argument("--trusted-height", type=int, help="the substitute's trusted park height (default: the park "
                                                       "node's final height)")
    cl.add_argument("--out", help="prepare: write the plan here")
    cl.add_argument("--plan", help="sign, submit: the plan file")
    cl.add_argument("--wait-s", type=float, default=60.0, help="submit, recover: how long to wait for the block")
    cl.add_argument("--json", action="store_true", help="machine-readable output")


def _print(as_json: bool, out: Any, text: str) -> None:
    print(json.dumps(out) if as_json else text)


def dispatch(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        if args.action in ("status", "prepare", "recover") and not args.chain:
            raise ConfigError(f"parkrelay relay client {args.action} needs --chain")
        if args.action == "status":
            st = client_status(cfg, args.chain)
            _print(args.json, st, f"{args.chain}: client {st['client_id']} ({st['client_type']}) {st['status']}, "
                                  f"final {st['final_height']}, frozen at {st['frozen_height']}")
            return 0
        if args.action == "prepare":
            if not args.out:
                raise ConfigError("parkrelay relay client prepare needs --out PLAN.json")
            plan = prepare(cfg, args.chain, args.trusted_height)
            Path(args.out).write_text(json.dumps(plan, indent=1))
            _print(args.json, plan, f"plan for {args.chain} (nonce {plan['nonce']}, trusted height "
                                    f"{plan['trusted_height']}, revokes {len(plan['revokes'])} packet(s)) "
                                    f"in {args.out}")
            return 0
        if args.action in ("sign", "submit"):
            if not args.plan:
                raise ConfigError(f"parkrelay relay client {args.action} needs --plan PLAN.json")
            plan = json.loads(Path(args.plan).read_text())
            if args.action == "sign":
                names = sign(cfg, plan)
                Path(args.plan).write_text(json.dumps(plan, indent=1))
                _print(args.json, {"signed": names, "signatures": len(plan["signatures"])},
                       f"signed by {', '.join(names) or 'nobody new'}; {len(plan['signatures'])} signature(s)")
                return 0
            out = submit(cfg, plan, args.wait_s)
        else:
            plan = prepare(cfg, args.chain, args.trusted_height)
            sign(cfg, plan)
            out = submit(cfg, plan, args.wait_s)
        _print(args.json, out, f"{out['chain_id']}: client {out['client_id']} replaced {out['replaced']} (trusted "
                               f"height {out['trusted_height']}; relay block {out['height']}); revoked "
                               f"{len(out['revoked'])} packet(s): {', '.join(out['revoked']) or '-'}")
        return 0
    except (ConfigError, KeyFileError, json.JSONDecodeError) as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 2
    except TxRefusedError as exc:
        if args.json:
            print(json.dumps({"error": exc.error}))
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 1
