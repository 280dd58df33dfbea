"""One foundation for every park chain kind: what the relay layer needs to know about a kind, in one place.

A chain kind (``dpos``, ``poc``, ``ethereum``; a Fabric park will be the fourth) is one :class:`ChainKind`
object in its own package (``chains/<kind>/kind.py``), listed once in :mod:`chains.registry`. It gives the
chain side of everything the relay and the operator tools do with a park chain:

* its **name** (``kind = "dpos"`` in the deployment config, and the relay's light-client type);
* its **typed parameters** (:class:`KindParams`): the kind-specific keys of a ``[[chains]]`` table, each a
  field of one frozen dataclass with its type, default, range and docstring; unknown keys, wrong types and
  values out of range are refused with a :class:`ParamError`;
* its **genesis builder** (what ``parkrelay devnet init`` writes for the park's nodes);
* its **node entry** (what ``parkrelay node <kind>`` runs): rules for the shared park-node runtime
  (:mod:`chains.common.node`), or, for a kind that runs its own process (Ethereum's anvil), none;
* its **light client**: the class the relay hosts, the factory from init args, the header decoder.

How a relayer talks to the kind (its adapters) is not here: ``adapters/`` may import ``chains/`` but not the
other way round, so the adapter factories of each kind are registered in :mod:`adapters.registry`.
"""

from __future__ import annotations

import difflib
import importlib
import types
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from protocol.certificate import ValidatorSet
from protocol.errors import CodecError
from protocol.light_client import LightClient
from protocol.types import ChainId, ClientId

if TYPE_CHECKING:
    from chains.common.node import ChainRules
    from protocol.crypto import Ed25519Signer

__all__ = [
    "HOSTED_MAX_CONSENSUS_STATES",
    "HOSTED_MAX_PENDING_HEADERS",
    "ChainKind",
    "KindParams",
    "ParamError",
    "bounded_init_int",
    "init_args",
    "init_object",
    "param",
]

P = TypeVar("P", bound="KindParams")


# --- typed parameters -------------------------------------------------------------------------------------


class ParamError(ValueError):
    """A chain's kind-specific parameter is unknown, of the wrong type or out of range."""

    def __init__(self, key: str, problem: str, expected: str, got: Any) -> None:
        self.key = key
        """The offending key."""
        self.problem = problem
        """What is wrong beyond expected vs got (``unknown key``...); empty when that says it all."""
        self.expected = expected
        """What would be accepted."""
        self.got = got
        """The value found."""
        super().__init__(f"{key}: {problem + '; ' if problem else ''}expected {expected}, got {got!r}")


def param(default: Any, *, low: int | None = None, high: int | None = None) -> Any:
    """A :class:`KindParams` field with its default and, for integers, its inclusive range."""
    if isinstance(default, dict):
        frozen = dict(default)
        return field(default_factory=lambda: dict(frozen), metadata={"low": low, "high": high})
    return field(default=default, metadata={"low": low, "high": high})


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is dict:
        key_t, val_t = get_args(hint)
        return isinstance(value, dict) and all(_type_ok(k, key_t) and _type_ok(v, val_t) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"unsupported parameter type {hint!r}")


def _type_name(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(h) for h in get_args(hint) if h is not type(None))
    if get_origin(hint) is dict:
        k, v = get_args(hint)
        return f"a table of {_type_name(k)} -> {_type_name(v)}"
    return str(getattr(hint, "__name__", hint))


class KindParams(Mapping[str, Any]):
    """Base of a kind's parameters: subclasses are ``@dataclass(frozen=True, eq=False)``, one field per key.

    Each field has a type (``int``, ``str``, ``bool``, ``float``, ``dict[str, int]``, or ``X | None``), a
    default given with :func:`param` (with an inclusive range for integers) and a docstring. A kind that
    needs a check across fields overrides :meth:`check` and raises :class:`ParamError`.

    Parameters read as a mapping too (``params["confirmation_depth"]``, ``dict(params)``), so code written
    against the untyped dict keeps working; equality with a dict compares the full, defaults-filled mapping.
    """

    @classmethod
    def from_mapping(cls: type[P], raw: Mapping[str, Any]) -> P:
        """The typed parameters of ``raw`` (a chain table's kind-specific keys), defaults filled in."""
        hints = get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        for key in sorted(raw):
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ParamError(key, f"unknown key{hint}", f"one of {sorted(known)}", raw[key])
        for key, value in raw.items():
            f = known[key]
            hint = hints[key]
            if not _type_ok(value, hint):
                raise ParamError(key, "", _type_name(hint), value)
            low, high = f.metadata.get("low"), f.metadata.get("high")
            if isinstance(value, int) and ((low is not None and value < low) or (high is not None and value > high)):
                raise ParamError(key, "", f"{low if low is not None else '...'}.."
                                                      f"{high if high is not None else '...'}", value)
            if isinstance(value, dict) and (low is not None or high is not None):
                for k, v in value.items():
                    if (low is not None and v < low) or (high is not None and v > high):
                        raise ParamError(f"{key}.{k}", "", f"{low}..{high}", v)
        out = cls(**dict(raw))
        out.check()
        return out

    def check(self) -> None:
        """Checks across fields; raise :class:`ParamError` naming the key to fix."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key and its default (None: derived, see the field's docstring)."""
        out: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            out[f.name] = _default_of(f)
        return out

    def set_values(self) -> dict[str, Any]:
        """The parameters that have a value (fields whose default is None and were not given are left out)."""
        return {k: v for k, v in self.items() if v is not None}

    # Mapping over the fields (dataclass fields, in declaration order)
    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]


def _default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


# --- light-client init args (the relay genesis's ``clients.<chain>.init``) -------------------------------

HOSTED_MAX_CONSENSUS_STATES = 512
"""Default ``max_consensus_states`` of a client the relay hosts: final heights kept (about 8 min of 1 s DPoS
blocks). Lower than the light clients' own defaults because the relay rewrites a client's whole state with
every update it accepts."""
HOSTED_MAX_PENDING_HEADERS = 4096
"""Default ``max_pending_headers`` of a hosted DPoS client: how long (in blocks) the park's LIB may stall."""


def init_args(value: Any, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """``value`` if it is a JSON object with every ``required`` key and no key outside ``required + optional``."""
    if not isinstance(value, dict):
        raise CodecError(f"{what} must be a JSON object", got=type(value).__name__)
    missing = [k for k in required if k not in value]
    if missing:
        raise CodecError(f"{what} lacks arguments", expected=list(required), got=sorted(value))
    extra = set(value) - set(required) - set(optional)
    if extra:
        raise CodecError(f"{what} has unknown arguments", expected=list(required + optional), got=sorted(extra))
    return value


def init_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object with string keys (any keys)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CodecError(f"{what} must be a JSON object", got=type(value).__name__)
    return value


def bounded_init_int(init: Mapping[str, Any], name: str, default: int | None, low: int, high: int,
                     what: str) -> int:
    """Init argument ``name`` (or ``default``) if it is an integer in ``low..high``."""
    value = init.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CodecError(f"{name} of {what} out of range", expected=f"{low}..{high}", got=value)
    return value


# --- the kind -----------------------------------------------------------------------------------------------


class ChainKind(ABC):
    """A park chain kind: the one object the relay layer asks about it (module docstring).

    Subclasses set the class attributes and implement the abstract methods; one instance per kind is
    registered in :mod:`chains.registry`.
    """

    name: ClassVar[str]
    """The kind's name: ``kind = "<name>"`` in the config, and the relay's light-client type."""
    params_type: ClassVar[type[KindParams]]
    """The kind-specific keys of a ``[[chains]]`` table."""
    node_flag: ClassVar[str]
    """The ``parkrelay node <kind>`` flag naming one node (``--witness``, ``--farmer``, ``--node``)."""
    key_scheme: ClassVar[Literal["ed25519", "secp256k1"]]
    """Signature scheme of the chain's accounts (and of its nodes' keys)."""
    fixed_nodes: ClassVar[tuple[str, ...]] = ()
    """Non-empty: the chain always has exactly these nodes and its config table has no ``nodes`` key."""
    attested_by_relay: ClassVar[bool] = False
    """Finality by relay-validator attestation: every relay validator runs an attestor of the chain."""
    runs_on_park_node: ClassVar[bool] = True
    """Its node is the shared park-node runtime with this kind's :meth:`make_rules`. False: the kind runs its
    own process (Ethereum: anvil plus its first-start deployment), started by the relay layer's CLI."""
    advances_with_time: ClassVar[bool] = False
    """The light client's finality also waits on relay time (PoC's finality window): the relay calls
    :meth:`advance_light_client` after each update and before each proof check."""
    timeout_receipt: ClassVar[bytes | None] = None
    """The value a target of this kind writes at a packet's receipt path once the packet has timed out there, and that
    the relay's client of it takes as the proof of the timeout (Fabric's sentinel, SPEC §8.7: the chain has no block
    time the relay can trust). A relayer then has the target write it (``bridge.timeout_receipt``) before proving the
    timeout. None: the timeout is proven by a final block past it that holds no receipt (SPEC §6.6)."""
    client_params: ClassVar[tuple[str, ...]] = ()
    """Init args of the relay's light client of this kind that a deployment may set (its ``light_client``
    table): windows and bounds, checked with their ranges when the client is created."""

    def keepalive_after_s(self, params: KindParams) -> float | None:
        """How long the relay's client of such a chain may go without a new block before a relayer makes one (a no-op
        transaction, ``bridge.ping``); None: the chain makes blocks on its own (a slot schedule, a farmer's proof)."""
        return None

    def port_count(self, params: KindParams, nodes: tuple[str, ...]) -> int:
        """How many consecutive ports from the chain's ``base_port`` its processes use (default: one per node)."""
        return len(nodes)

    def parse_params(self, raw: Mapping[str, Any]) -> KindParams:
        """The typed parameters of a chain table's kind-specific keys (:class:`ParamError` if one is bad)."""
        return self.params_type.from_mapping(raw)

    @abstractmethod
    def build_genesis(self, *, chain_id: str, params: Mapping[str, Any], nodes: dict[str, bytes],
                      accounts: dict[str, tuple[bytes, int]], relay_validators: ValidatorSet,
                      lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int, data_dir: Path,
                      base_port: int | None = None, host: str = "127.0.0.1") -> dict[str, Any]:
        """The park's genesis file: ``nodes`` name -> public key (Ethereum: the operator's address), ``accounts``
        name -> ``(public key or address, kWh balance in Wh)``, ``lanes`` ``(lane, other chain)``. ``base_port`` and
        ``host`` (the chain table's) matter only to a kind whose genesis names its nodes' endpoints (Fabric: the
        orderers are consenters of the channel's genesis block)."""

    def make_rules(self, genesis: dict[str, Any], name: str, signer: Ed25519Signer, data_dir: Path) -> ChainRules:
        """Node ``name``'s consensus rules for the shared park-node runtime (only if :attr:`runs_on_park_node`)."""
        raise NotImplementedError(f"a {self.name} chain runs its own node process, not the park-node runtime")

    def advance_light_client(self, client: LightClient[Any], now_ms: int) -> bool:
        """Make final what relay time ``now_ms`` allows; True if anything changed (only if
        :attr:`advances_with_time`)."""
        raise NotImplementedError(f"a {self.name} client's finality does not wait on relay time")

    def light_client_final_at(self, client: LightClient[Any], now_ms: int) -> int:
        """The final height :meth:`advance_light_client` would make at relay time ``now_ms``, changing nothing (only
        if :attr:`advances_with_time`)."""
        raise NotImplementedError(f"a {self.name} client's finality does not wait on relay time")

    @property
    @abstractmethod
    def light_client_type(self) -> type[LightClient[Any]]:
        """The light client the relay chain hosts for a chain of this kind (``client_type == name``)."""

    @abstractmethod
    def create_light_client(self, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> LightClient[Any]:
        """A light client from its init args (``clients.<chain id>.init`` in the relay genesis, or a governance
        ``client.create``); bad args are :class:`~protocol.errors.CodecError`."""

    @abstractmethod
    def decode_header(self, raw: bytes) -> Any:
        """A header of the chain from its binary encoding (strict)."""

    def holds(self, client: LightClient[Any], header: Any) -> bool:
        """Whether ``client`` already holds ``header`` (so submitting it again is redundant)."""
        if not isinstance(client, self.light_client_type):
            raise TypeError(f"the {self.name} client type hosts {self.light_client_type.__name__}, "
                            f"not {type(client).__name__}")
        held: bool = client.holds(header)  # type: ignore[attr-defined]
        return held

    def __repr__(self) -> str:
        return f"<chain kind {self.name}>"


class ParkNodeKind(ChainKind):
    """A kind whose nodes run on the shared park-node runtime (DPoS, PoC): its ``node_module`` (imported only when
    a genesis is built or a node starts, so the relay's light clients never load the node runtime) provides
    ``build_genesis(**kwargs)`` and ``make_rules(genesis, name, signer, data_dir)``."""

    node_module: ClassVar[str]
    """Dotted name of the module holding the kind's genesis builder and node rules (``chains.dpos.node``)."""

    def build_genesis(self, *, chain_id: str, params: Mapping[str, Any], nodes: dict[str, bytes],
                      accounts: dict[str, tuple[bytes, int]], relay_validators: ValidatorSet,
                      lanes: list[tuple[str, str] | dict[str, Any]], genesis_time_ms: int, data_dir: Path,
                      base_port: int | None = None, host: str = "127.0.0.1") -> dict[str, Any]:
        genesis: dict[str, Any] = importlib.import_module(self.node_module).build_genesis(
            chain_id=chain_id, params=params, nodes=nodes, accounts=accounts, relay_validators=relay_validators,
            lanes=lanes, genesis_time_ms=genesis_time_ms, data_dir=data_dir)
        return genesis

    def make_rules(self, genesis: dict[str, Any], name: str, signer: Ed25519Signer, data_dir: Path) -> ChainRules:
        rules: ChainRules = importlib.import_module(self.node_module).make_rules(genesis, name, signer, data_dir)
        return rules
