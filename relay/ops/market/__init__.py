"""``parkrelay market <park> <action> …``: the participants' and operator's surface for each park's own market
(docs/architecture.md §5; issue 13). One command tree, one handler module per park kind:

    parkrelay market --help                         # this tree: every kind and its actions
    parkrelay market <park> actions [--json]        # the actions of that park's market
    parkrelay market <park> <action> --help         # one action's arguments
    parkrelay market <park> <action> [--as ACCOUNT] [args…] [--config FILE] [--json]

``<park>`` is a chain id of the deployment config; its ``kind`` picks the handler (:data:`HANDLERS`):

* ``dpos`` (:mod:`relay.ops.market.dpos`): docs/research.md#seed-003's three-stage trade (``bid``, ``rounds``,
  ``round``) and docs/research.md#seed-002's demand response (``dr-register`` with ``--import-from``, ``dr-request``,
  ``dr-commit``/``dr-reveal``, ``dr-report``, ``dr-terms``, ``dr-join``, ``dr-show``, ``ranking``);
* ``poc`` (:mod:`relay.ops.market.poc`): docs/research.md#seed-000's capacity market (``demand``, ``offer``,
  ``report``, ``erase``, ``import-reputation``, ``round``, ``results``, ``unit``);
* ``ethereum`` (:mod:`relay.ops.market.ethereum`): docs/research.md#seed-001's ``EnergyMarket`` (``feeder``,
  ``open``, ``bid``, ``clear``, ``settle``, ``withdraw``, ``round``, ``rounds``, ``admit``, ``member``,
  ``participant``);
* ``fabric`` (:mod:`relay.ops.market.fabric`): docs/research.md#seed-004's chaincode market (``certify`` with
  ``--import-from``, ``revoke``, ``participant``, ``publish-plan``, ``quote``, ``choose-plan``, ``propose``,
  ``accept``, ``settle``, ``contract``, ``open-round``, ``request``, ``allocate``, ``bid``, ``clear``,
  ``p2p-offer``, ``p2p-take``, ``p2p-withdraw``, ``round``, ``escrow``).

A handler module has ``KIND`` and ``ACTIONS`` (name -> :class:`Action`); a new kind is one more module and one
more entry in :data:`HANDLERS`. Writes sign as ``--as ACCOUNT`` with that account's
devnet key file (``<data_dir>/keys/<chain>/accounts/<account>.seed``, as every ``parkrelay`` command); keys are
never printed. Operator actions default ``--as`` to the park's ``operator`` account.

Errors: a usage error is a :class:`MarketUsageError` (exit 2) with a stable ``code``: ``market.unknown_park``
(no such chain in the config), ``market.unsupported`` (the park's kind has no market handler, or its market has
no such action, or the park has no market deployed), ``market.bad_argument`` (a missing or malformed argument).
A refusal by the chain exits 1 with the chain's own error (its protocol error code where the chain gives one).
With ``--json`` every answer, errors included, is one JSON object on stdout (``{"error": {code, message}}``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from relay.ops.config import ChainConfig, ConfigError, DeploymentConfig, load_config
from relay.ops.keys import KeyFileError

__all__ = [
    "HANDLERS",
    "Action",
    "MarketArgumentError",
    "MarketContext",
    "MarketUsageError",
    "UnknownParkError",
    "UnsupportedMarketError",
    "add_parser",
    "dispatch",
    "handler_for",
    "run",
]

HANDLERS: dict[str, str] = {
    "dpos": "relay.ops.market.dpos",
    "poc": "relay.ops.market.poc",
    "ethereum": "relay.ops.market.ethereum",
    "fabric": "relay.ops.market.fabric",
}
"""Park kind -> the module handling its market (imported on use)."""


class MarketUsageError(ConfigError):
    """A ``parkrelay market`` command that cannot run as given (exit 2): ``code`` says why."""

    code = "market.usage"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownParkError(MarketUsageError):
    """The park named is not a chain of the deployment config."""

    code = "market.unknown_park"


class UnsupportedMarketError(MarketUsageError):
    """The park's kind has no market handler, its market has no such action, or it has no market deployed."""

    code = "market.unsupported"


class MarketArgumentError(MarketUsageError):
    """A missing or malformed argument of a market action."""

    code = "market.bad_argument"


@dataclass
class MarketContext:
    """What an action runs against: the deployment, the park's chain table, and its operator view (lazily)."""

    cfg: DeploymentConfig
    chain: ChainConfig
    _view: Any = field(default=None, repr=False)

    @property
    def view(self) -> Any:
        """The park's :class:`relay.ops.parks.ParkView` (signs with devnet key files)."""
        if self._view is None:
            from relay.ops.parks import park_view

            self._view = park_view(self.cfg, self.chain.id)
        return self._view

    def account(self, name: str) -> str:
        """How this park names deployment account ``name`` (an address on Ethereum)."""
        return str(self.view.account(name))

    def other(self, chain_id: str) -> Any:
        """The view of another park of the deployment (for the subject of imported reputation)."""
        from relay.ops.parks import park_view

        if chain_id not in {c.id for c in self.cfg.chains}:
            raise UnknownParkError(f"{self.cfg.path}: no park {chain_id!r}; parks are "
                                   f"{[c.id for c in self.cfg.chains]}")
        return park_view(self.cfg, chain_id)


Runner = Callable[[MarketContext, argparse.Namespace], Any]


@dataclass(frozen=True)
class Action:
    """One ``parkrelay market <park> <name>`` action of a kind's market."""

    name: str
    help: str
    """One line for the action list; the parser's description is the runner's docstring."""
    arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the action's own arguments (``--config`` and ``--json`` are added for every action)."""
    run: Runner
    """Does it; returns what to print (a JSON-able object)."""
    signs: str | None = None
    """Who signs: None (a read), ``""`` (``--as ACCOUNT`` required) or the default account (``operator``)."""


class _Parser(argparse.ArgumentParser):
    """An action's parser: a usage error is a :class:`MarketArgumentError`, not ``SystemExit``."""

    def error(self, message: str) -> NoReturn:
        raise MarketArgumentError(f"{self.prog}: {message}")


def add_parser(sub: Any) -> None:
    """The ``market`` subcommand on the ``parkrelay`` parser: the park, then the action and its arguments (parsed by
    the park kind's handler once the config says what kind the park is)."""
    lines = []
    for kind in HANDLERS:
        try:
            mod = importlib.import_module(HANDLERS[kind])
        except ImportError:  # pragma: no cover - a handler's optional dependency is missing
            continue
        lines.append(f"  {kind}: " + ", ".join(mod.ACTIONS))
    m = sub.add_parser("market", help="a park's own market: bids, offers, requests, rounds and results",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Submit bids, offers and requests to a park's market and read its rounds and "
                                   "results.\n\nActions by park kind:\n" + "\n".join(lines) +
                                   "\n\n`parkrelay market PARK actions` lists a park's actions; "
                                   "`parkrelay market PARK ACTION --help` shows one action's arguments.")
    m.add_argument("park", help="the park (a chain id of the config)")
    m.add_argument("argv", nargs=argparse.REMAINDER, metavar="ACTION ...",
                   help="the action and its arguments (`actions` lists them)")


def handler_for(cfg: DeploymentConfig, park: str) -> tuple[ChainConfig, Any]:
    """The park's chain table and its kind's handler module; :class:`UnknownParkError` or
    :class:`UnsupportedMarketError`."""
    chain = next((c for c in cfg.chains if c.id == park), None)
    if chain is None:
        raise UnknownParkError(f"{cfg.path}: no park {park!r}; parks are {[c.id for c in cfg.chains]}")
    name = HANDLERS.get(chain.kind)
    if name is None:
        raise UnsupportedMarketError(f"park {park!r} is a {chain.kind} park: `parkrelay market` has no handler for "
                                     f"{chain.kind} yet (handlers: {sorted(HANDLERS)})")
    return chain, importlib.import_module(name)


def _action_parser(park: str, action: Action) -> _Parser:
    p = _Parser(prog=f"parkrelay market {park} {action.name}",
                description=inspect.cleandoc(action.run.__doc__ or action.help),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    action.arguments(p)
    if action.signs == "":
        p.add_argument("--as", dest="as_", required=True, metavar="ACCOUNT",
                       help="who signs: a deployment account of the park (its devnet key file)")
    elif action.signs is not None:
        p.add_argument("--as", dest="as_", default=action.signs, metavar="ACCOUNT",
                       help=f"who signs: a deployment account of the park (its devnet key file); default "
                            f"{action.signs}")
    p.add_argument("--config", default=argparse.SUPPRESS, help="deployment config (default deploy/devnet.toml)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object on stdout")
    return p


def _split_common(argv: list[str]) -> tuple[str, bool, list[str]]:
    """``--config FILE`` and ``--json`` wherever they are (so they work before the action too)."""
    config, as_json, rest = "deploy/devnet.toml", False, []
    it = iter(argv)
    for a in it:
        if a == "--json":
            as_json = True
        elif a == "--config":
            config = next(it, "")
            if not config:
                raise MarketArgumentError("--config needs a file")
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        else:
            rest.append(a)
    return config, as_json, rest


def run(cfg: DeploymentConfig, park: str, argv: list[str]) -> Any:
    """Parse ``argv`` (the action and its arguments, without ``--config``/``--json``) for ``park`` and run it: what
    to print. Raises :class:`MarketUsageError` for usage errors; chain refusals propagate."""
    chain, mod = handler_for(cfg, park)
    actions: dict[str, Action] = mod.ACTIONS
    if not argv or argv[0] in ("actions", "help", "-h", "--help"):
        return {"park": park, "kind": chain.kind, "actions": {a.name: a.help for a in actions.values()}}
    name = argv[0]
    action = actions.get(name)
    if action is None:
        raise UnsupportedMarketError(f"the {chain.kind} market of {park} has no action {name!r}; its actions: "
                                     f"{', '.join(actions)}")
    parser = _action_parser(park, action)
    if any(a in ("-h", "--help") for a in argv[1:]):
        return {"help": parser.format_help()}
    args = parser.parse_args(argv[1:])
    return action.run(MarketContext(cfg, chain), args)


def dispatch(args: argparse.Namespace) -> int:
    """``parkrelay market``: 0 on success, 1 when the chain refused or failed, 2 on a usage error."""
    from chains.common import progress
    from protocol.errors import ParkRelayError

    as_json = False
    try:
        config, as_json, rest = _split_common(list(args.argv))
        progress.set_quiet(as_json)  # as main() does for every command: no bars in JSON output
        out = run(load_config(config), args.park, rest)
    except (MarketUsageError, ConfigError, KeyFileError) as exc:
        return _fail(as_json, getattr(exc, "code", "config.invalid"), str(exc), 2)
    except ParkRelayError as exc:  # a refusal with its protocol code (the Ethereum market's reverts)
        return _fail(as_json, getattr(exc, "code", "protocol"), str(exc), 1)
    except (OSError, RuntimeError, ValueError) as exc:  # the chain refused (its message) or did not answer
        code = getattr(exc, "code", None) or ("market.refused" if isinstance(exc, RuntimeError) else "market.io")
        return _fail(as_json, str(code), str(exc), 1)
    if isinstance(out, dict) and set(out) == {"help"}:
        print(out["help"], end="")
        return 0
    print(json.dumps(out, sort_keys=True) if as_json else json.dumps(out, indent=2, sort_keys=True))
    return 0


def _fail(as_json: bool, code: str, message: str, rc: int) -> int:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    print(f"parkrelay: {message}" if message.startswith(f"[{code}]") else f"parkrelay: [{code}] {message}",
          file=sys.stderr)
    return rc


# -- helpers for the handlers ---------------------------------------------------------------------------------------


def need(args: argparse.Namespace, *names: str) -> None:
    """Every named argument given, else a :class:`MarketArgumentError` naming the flags."""
    missing = [n for n in names if getattr(args, n, None) in (None, "")]
    if missing:
        raise MarketArgumentError("missing " + ", ".join("--" + n.rstrip("_").replace("_", "-") for n in missing))


def positive(text: str) -> int:
    """An argparse type: an integer > 0."""
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {v}")
    return v


def non_negative(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def import_ref(ctx: MarketContext, args: argparse.Namespace) -> dict[str, str] | None:
    """``{src_chain, subject, model}`` from ``--import-from``/``--subject``/``--model`` (the subject as the source
    park names it: a deployment account name is translated, e.g. to its address on Ethereum); None without
    ``--import-from``."""
    src = getattr(args, "import_from", None)
    if not src:
        if getattr(args, "subject", None) or getattr(args, "model", None):
            raise MarketArgumentError("--subject and --model go with --import-from CHAIN")
        return None
    if not args.subject or not args.model:
        raise MarketArgumentError("--import-from needs --subject and --model")
    if src == ctx.chain.id:
        raise MarketArgumentError(f"--import-from names another park, not {src} itself")
    return {"src_chain": src, "subject": str(ctx.other(src).account(args.subject)), "model": args.model}


def add_import_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--import-from CHAIN --subject NAME --model MODEL``: reputation this park imported over the relay."""
    p.add_argument("--import-from", required=required, metavar="CHAIN",
                   help="the park that attested the reputation (`parkrelay reputation send` moved it here)")
    p.add_argument("--subject", required=required,
                   help="the subject as that park names it (a deployment account name is translated)")
    p.add_argument("--model", required=required, help="the attestation's model (chains/common/reputation.MODELS)")
