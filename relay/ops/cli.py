"""``parkrelay`` — the operator command line.

    parkrelay node dpos --config deploy/devnet.toml --witness witness-a
    parkrelay node poc  --config deploy/devnet.toml --farmer farmer-a
    parkrelay node ethereum --config deploy/devnet.toml [--chain eth-park]
    parkrelay node fabric --config deploy/devnet.toml [--chain fabric-park]
    parkrelay devnet init|up|down|status|demo --config deploy/devnet.toml
    parkrelay status --config deploy/devnet.toml [--json]
    parkrelay doctor --config deploy/devnet.toml [--json] [--api URL]
    parkrelay market PARK ACTION [--as ACCOUNT] [args...] [--config FILE] [--json]   (relay/ops/market)
    parkrelay conformance run --config FILE [--pairs A:B,...] [--scenarios ID,...] [--junit F] [--html F] [--json]
    parkrelay relay client status|prepare|sign|submit|recover --config FILE [--chain CHAIN]   (relay/ops/recovery)

Long flags only; ``--json`` prints machine-readable output. Exit codes: 0 ok, 1 runtime failure,
2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chains.common import progress
from chains.registry import KINDS
from relay.ops.config import ETHEREUM_OPERATOR, ConfigError, DeploymentConfig, load_config
from relay.ops.keys import KeyFileError, read_secret

if TYPE_CHECKING:
    from chains.ethereum.node import EthNodeSettings
    from chains.fabric.network.config import FabricNetworkConfig


class JsonLogFormatter(logging.Formatter):
    """``--log-json``: one object per line with the chain and node of the process, and ``packet`` (a list of packet
    ids, ``src/dst/lane/sequence``) on a line about packets (a relayer's submissions, refusals, settlements)."""

    def format(self, r: logging.LogRecord) -> str:
        out = {"ts": r.created, "level": r.levelname, "logger": r.name, "chain": getattr(r, "chain", "-"),
               "node": getattr(r, "node", "-"), "msg": r.getMessage()}
        packet = getattr(r, "packet", None)
        if packet is not None:
            out["packet"] = packet
        return json.dumps(out)


def _setup_logging(level: str, json_logs: bool) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s %(chain)s/%(node)s %(message)s"

    class _Defaults(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            for k in ("chain", "node"):
                if not hasattr(record, k):
                    setattr(record, k, "-")
            return True

    handler = logging.StreamHandler()
    handler.addFilter(_Defaults())
    if json_logs:
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # web3 logs every HTTP session it opens and closes at INFO: noise for an operator
    logging.getLogger("web3").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("aiohttp.server").addFilter(MalformedHttpFilter())


class MalformedHttpFilter(logging.Filter):
    """aiohttp answers a malformed HTTP request (bad request line, header, chunk or URL) with 400 and logs it at
    ERROR with a traceback: anyone who reaches a port could fill the log and page the operator. One INFO line
    instead, naming the parser's complaint; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.msg = f"{record.getMessage()}: {exc.code} {type(exc).__name__}: {str(exc.message)[:200]}"
            record.args = ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parkrelay", description="Cross-chain relay for industrial-park energy chains")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = p.add_subparsers(dest="cmd", required=True)

    node = sub.add_parser("node", help="run one park-chain node process")
    node.add_argument("kind", choices=[*KINDS, *(["fabric"] if "fabric" not in KINDS else []), "relay"])
    node.add_argument("--config", required=True, help="deployment config (TOML)")
    node.add_argument("--chain", help="chain id (default: the only chain of that kind)")
    node.add_argument("--witness", help="DPoS witness name")
    node.add_argument("--farmer", help="PoC farmer name")
    node.add_argument("--validator", help="relay validator name")
    node.add_argument("--node", help="ethereum: the node name (optional; its one node is `anvil`)")

    dev = sub.add_parser("devnet", help="run a whole devnet on this machine")
    dev.add_argument("action", choices=["init", "up", "down", "status", "demo"])
    dev.add_argument("--config", default="deploy/devnet.toml")
    dev.add_argument("--seconds", type=float, default=20.0, help="demo: how long to watch (default 20)")
    dev.add_argument("--json", action="store_true")

    rl = sub.add_parser("relayer", help="the relayer service")
    rl.add_argument("action", choices=["start", "clear", "earnings"],
                    help="start: run the relayer; clear: ask a running relayer (--api) to act on its whole backlog "
                         "now and wait until the backlog is empty; earnings: the relay fees the parks paid it "
                         "(from its database; running or not)")
    rl.add_argument("--config", default="deploy/devnet.toml")
    rl.add_argument("--name", required=True, help="relayer name (its account on every chain)")
    rl.add_argument("--api", metavar="URL", help="clear: the relayer's operator API (http://127.0.0.1:PORT)")
    rl.add_argument("--timeout-s", type=float, default=300.0, help="clear: give up after this long (default 300)")
    rl.add_argument("--json", action="store_true", help="clear, earnings: print one JSON object")

    tr = sub.add_parser("transfer", help="send energy to another park (phase 1; relayers do the rest)")
    tr.add_argument("--config", default="deploy/devnet.toml")
    tr.add_argument("--from-chain", required=True)
    tr.add_argument("--from", dest="sender", required=True, help="sending account (its devnet key is used)")
    tr.add_argument("--to-chain", required=True)
    tr.add_argument("--to", dest="receiver", required=True)
    tr.add_argument("--amount-wh", type=int, required=True, help="amount in Wh (1 kWh = 1000)")
    tr.add_argument("--denom", default="kWh")
    tr.add_argument("--lane", help="default: the first lane joining the two chains")
    tr.add_argument("--timeout-s", type=float, default=600.0, help="seconds until the packet times out")
    tr.add_argument("--fees", metavar="VERIFY,EXECUTE,CONFIRM", type=_fees_arg,
                    help="relay fees in the source park's currency, escrowed for the relayers that carry the packet "
                         "(protocol SPEC §6.10), e.g. 10,20,10")
    tr.add_argument("--json", action="store_true")

    pk = sub.add_parser("packet", help="packets and their phases, read from the chains")
    pk.add_argument("action", choices=["list", "show"])
    pk.add_argument("key", nargs="?", help="show: src/dst/lane/sequence")
    pk.add_argument("--config", default="deploy/devnet.toml")
    pk.add_argument("--chain", help="list: only packets sent by this chain")
    pk.add_argument("--json", action="store_true")

    fb = sub.add_parser("fabric", help="a Fabric park's client material")
    fb.add_argument("action", choices=["profile"], help="profile: print the park's hfc connection profile (JSON)")
    fb.add_argument("--config", default="deploy/devnet.toml")
    fb.add_argument("--chain", help="the Fabric park (default: the only one)")
    fb.add_argument("--relative-to", metavar="DIR",
                    help="write file paths relative to DIR (hfc resolves them against its working directory)")

    from relay.ops.assets import add_parsers as add_asset_parsers

    add_asset_parsers(sub)

    from relay.ops.market import add_parser as add_market_parser

    add_market_parser(sub)

    from relay.ops.recovery import add_parser as add_recovery_parser

    add_recovery_parser(sub)

    st = sub.add_parser("status", help="heights and finality of every chain in a deployment")
    st.add_argument("--config", default="deploy/devnet.toml")
    st.add_argument("--json", action="store_true")
    _add_operator_options(sub, node, rl)
    _add_doctor(sub)
    from relay.ops.conformance.cli import add_parser as add_conformance_parser

    add_conformance_parser(sub)
    return p


# -- the operator's surface (issue 14): API options of `node relay` and `relayer start`, and `doctor` ------------


def _add_operator_options(sub: Any, node: argparse.ArgumentParser, relayer: argparse.ArgumentParser) -> None:
    for parser in (node, relayer):
        parser.add_argument("--api-port", type=int, metavar="PORT",
                            help="serve the operator HTTP API, /metrics and the status page on PORT (relay "
                                 "validators and relayers; 0 = any free port; default: not served)")
        parser.add_argument("--api-host", default=None, metavar="ADDR",
                            help="address the API binds to (default: the deployment's host, 127.0.0.1)")


def _add_doctor(sub: Any) -> None:
    from relay.ops.doctor import add_parser

    add_parser(sub)


def _doctor(cfg: DeploymentConfig, args: Any) -> int:
    from relay.ops.doctor import main as doctor

    return doctor(cfg, args)


def _api_options(args: Any, cfg: DeploymentConfig) -> Any:
    if getattr(args, "api_port", None) is None:
        return None
    from relay.ops.api.server import ApiOptions

    if not 0 <= args.api_port < 65536:
        raise ConfigError(f"--api-port: expected a TCP port (0-65535), got {args.api_port}")
    return ApiOptions(port=args.api_port, host=args.api_host or cfg.host)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_json)
    # progress bars are for a person at a terminal: none in JSON output or JSON logs
    progress.set_quiet(args.log_json or bool(getattr(args, "json", False)))
    try:
        return _dispatch(args)
    except (ConfigError, KeyFileError) as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: Any) -> int:
    if args.cmd == "relay":  # a frozen client's recovery by governance (relay/ops/recovery.py)
        from relay.ops.recovery import dispatch as relay_client

        return relay_client(args)
    if args.cmd == "market":  # its config and --json come with the action's arguments (relay/ops/market)
        from relay.ops.market import dispatch as market

        return market(args)
    cfg = load_config(args.config)
    if args.cmd == "node":
        from relay.ops.config import kind_of
        from relay.ops.nodes import run_node

        if args.kind == "relay":
            if not args.validator:
                raise ConfigError("parkrelay node relay needs --validator NAME")
            return asyncio.run(run_node(cfg, "relay", None, args.validator, api=_api_options(args, cfg)))
        if args.kind == "fabric":
            # the whole Fabric park (orderers, peers, chaincode servers) under one supervisor process
            from chains.fabric.network.supervisor import run_supervisor

            return run_supervisor(_fabric_network(cfg, args.chain))
        kind = kind_of(args.kind)
        if not kind.runs_on_park_node:
            # a kind with its own node process; Ethereum is the only one (anvil plus its deployment)
            from chains.ethereum.node import run_ethereum_node

            return asyncio.run(run_ethereum_node(_ethereum_settings(cfg, args.chain, args.node)))
        name = _node_name(args, kind.node_flag)
        if not name:
            raise ConfigError(f"parkrelay node {args.kind} needs {kind.node_flag} NAME")
        return asyncio.run(run_node(cfg, args.kind, args.chain, name))
    if args.cmd == "relayer" and args.action == "clear":
        from relay.ops.backlog import main as clear_backlog

        return clear_backlog(cfg, args)
    if args.cmd == "relayer" and args.action == "earnings":
        from relay.ops.relayers import earnings

        rows = earnings(cfg, args.name)
        if args.json:
            print(json.dumps({"relayer": args.name, "earned": rows}))
        else:
            print(f"relayer {args.name}: " + ("nothing earned yet" if not rows else ""))
            for r in rows:
                print(f"  {r['chain']:<14} {r['step']:<8} {r['amount']:>12} {r['denom']}  ({r['packets']} packets)")
        return 0
    if args.cmd == "relayer":
        from relay.ops.relayers import run_relayer

        return asyncio.run(run_relayer(cfg, args.name, api=_api_options(args, cfg)))
    if args.cmd in ("transfer", "packet"):
        return _ops(cfg, args)
    if args.cmd in ("right", "reputation", "transformer"):
        from relay.ops.assets import dispatch

        return dispatch(cfg, args)
    if args.cmd == "doctor":
        return _doctor(cfg, args)
    if args.cmd == "conformance":
        from relay.ops.conformance.cli import main as conformance

        return conformance(cfg, args)
    if args.cmd == "fabric":
        print(json.dumps(fabric_profile(cfg, args.chain, args.relative_to), indent=2))
        return 0
    from relay.ops import devnet

    if args.cmd == "status":
        return devnet.print_status(cfg, as_json=args.json)
    action = args.action
    if action == "init":
        devnet.init(cfg)
        return 0
    if action == "up":
        return devnet.up(cfg)
    if action == "down":
        return devnet.down(cfg)
    if action == "status":
        return devnet.print_status(cfg, as_json=args.json)
    return devnet.demo(cfg, seconds=args.seconds, as_json=args.json)


def _node_name(args: Any, flag: str) -> str | None:
    """The value of the ``parkrelay node`` flag naming a node: a kind's ``node_flag`` (``--witness`` ->
    ``args.witness``); each kind's flag is an argument of the ``node`` parser."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return value if isinstance(value, str) else None


def _fabric_network(cfg: DeploymentConfig, chain_id: str | None) -> FabricNetworkConfig:
    """A Fabric park's network from the config: its chain table, an identity for each account and relayer, its data
    dir ``<data_dir>/<chain id>``, and, once ``devnet init`` wrote the park's genesis, the bridge's ``init_bridge``
    (submitted once the chaincode answers; each organisation's chaincode server endorses no other genesis)."""
    from chains.fabric.network.config import FabricConfigError
    from chains.fabric.network.genesis import park_network
    from relay.ops.layout import genesis_path

    chains = cfg.chains_of_kind("fabric") if chain_id is None else [cfg.chain(chain_id)]
    if len(chains) != 1:
        raise ConfigError(f"{cfg.path}: {len(chains)} chains of kind fabric; name one with --chain")
    chain = chains[0]
    if chain.kind != "fabric":
        raise ConfigError(f"{cfg.path}: chain {chain.id} is a {chain.kind} chain; run `parkrelay node {chain.kind}`")
    gpath = genesis_path(cfg, chain.id)
    genesis = json.loads(gpath.read_text()) if gpath.exists() else None
    try:
        return park_network(chain_id=chain.id, params=chain.params, data_dir=cfg.data_dir, base_port=chain.base_port,
                            host=cfg.host_of(chain.id, chain.nodes[0]), accounts=[*chain.accounts, *cfg.relayers],
                            genesis=genesis)
    except FabricConfigError as exc:
        raise ConfigError(f"{cfg.path}: chain {chain.id!r}: {exc}") from exc


def fabric_profile(cfg: DeploymentConfig, chain_id: str | None, relative_to: str | Path | None = None
                   ) -> dict[str, Any]:
    """The hfc connection profile of a deployment's Fabric park: what ``parkrelay node fabric`` writes to
    ``<data_dir>/<chain>/connection-profile.json`` (every peer and orderer with its endpoint and TLS root, every
    identity with its certificate and key file). With ``relative_to``, file paths are relative to that folder
    (``deploy/fabric/connection-profile.devnet.json`` is this for deploy/devnet.toml, relative to the repository)."""
    from chains.fabric.network.render import connection_profile

    profile = connection_profile(_fabric_network(cfg, chain_id))
    if relative_to is None:
        return profile
    base = Path(relative_to).absolute()

    def rel(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: rel(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [rel(v) for v in node]
        if key in ("path", "cert", "private_key") and isinstance(node, str) and Path(node).is_absolute():
            return os.path.relpath(node, base)
        return node

    out: dict[str, Any] = rel(profile)
    return out


def _ethereum_settings(cfg: DeploymentConfig, chain_id: str | None, node: str | None) -> EthNodeSettings:
    """An Ethereum park node's settings from the config, its genesis, the relay genesis and the operator key."""
    from chains.ethereum.node import EthNodeSettings, relay_set_from_json
    from relay.ops.layout import account_key_path, genesis_path, relay_genesis_path

    chains = cfg.chains_of_kind("ethereum") if chain_id is None else [cfg.chain(chain_id)]
    if len(chains) != 1:
        raise ConfigError(f"{cfg.path}: {len(chains)} chains of kind ethereum; name one with --chain")
    chain = chains[0]
    if chain.kind != "ethereum":
        raise ConfigError(f"{cfg.path}: chain {chain.id} is a {chain.kind} chain; run `parkrelay node {chain.kind}`")
    if node is not None and node not in chain.nodes:
        raise ConfigError(f"{cfg.path}: chain {chain.id} has one node, {chain.nodes[0]!r}; got --node {node!r}")
    gpath = genesis_path(cfg, chain.id)
    if not gpath.exists():
        raise ConfigError(f"no genesis at {gpath}: run `parkrelay devnet init --config {cfg.path}` first")
    genesis = json.loads(gpath.read_text())
    relay_chain_id, relay_set = cfg.relay_chain_id, genesis["relay_validators"]
    rpath = relay_genesis_path(cfg)
    if rpath.exists():  # the relay chain's own genesis is the authority on its id and validator set
        relay = json.loads(rpath.read_text())
        relay_chain_id, relay_set = relay["chain_id"], relay["validators"]
        if relay_set["hash"] != genesis["relay_validators"]["hash"]:
            raise ConfigError(f"{gpath} and {rpath} name different relay validator sets; re-run `parkrelay devnet "
                              f"init` on an empty data_dir")
    return EthNodeSettings(chain_id=chain.id, genesis=genesis,
                           operator_key=read_secret(account_key_path(cfg, chain.id, ETHEREUM_OPERATOR)),
                           relay_chain_id=relay_chain_id, relay_set=relay_set_from_json(relay_set),
                           port=chain.base_port, state_dir=cfg.data_dir / chain.id,
                           host=cfg.host_of(chain.id, chain.nodes[0]),
                           admin_token=_admin_token(cfg))


def _admin_token(cfg: DeploymentConfig) -> str:
    """The deployment's admin token (hex), as the other nodes read it; empty if there is none."""
    from relay.ops.layout import admin_token_path

    path = admin_token_path(cfg)
    return read_secret(path).hex() if path.exists() else ""


def _fees_arg(text: str) -> dict[str, int]:
    """``--fees VERIFY,EXECUTE,CONFIRM``: three amounts >= 0."""
    parts = text.split(",")
    try:
        amounts = [int(p) for p in parts]
    except ValueError:
        amounts = []
    if len(amounts) != 3 or any(a < 0 or a >= 2**64 for a in amounts):
        raise argparse.ArgumentTypeError(f"--fees takes three amounts VERIFY,EXECUTE,CONFIRM, got {text!r}")
    return dict(zip(("verify", "execute", "confirm"), amounts, strict=True))


def _ops(cfg: Any, args: Any) -> int:
    from relay.ops import packets

    try:
        if args.cmd == "transfer":
            out: Any = packets.transfer(cfg, args.from_chain, args.sender, args.to_chain, args.receiver, args.amount_wh,
                                        args.denom, args.lane, args.timeout_s, fees=args.fees)
            print(json.dumps(out) if args.json else f"sent {out['packet']} (tx {out['tx'][:16]}, height "
                                                    f"{out['height']}); `parkrelay packet show {out['packet']}`")
            return 0
        if args.action == "list":
            rows = packets.list_packets(cfg, args.chain)
            if args.json:
                print(json.dumps(rows))
            else:
                print(f"{'packet':<34} {'state':<10} {'kind':<8} {'from':<10} {'to':<10} payload")
                for r in rows:
                    print(f"{r['packet']:<34} {r['state']:<10} {r['kind']:<8} {r['sender']:<10} {r['receiver']:<10} "
                          f"{r['payload']}")
            return 0
        if not args.key:
            raise ConfigError("parkrelay packet show needs a packet: src/dst/lane/sequence")
        row = packets.show_packet(cfg, args.key)
        print(json.dumps(row, indent=None if args.json else 2))
        return 0
    except (OSError, RuntimeError) as exc:
        print(f"parkrelay: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
