"""The conformance scenarios: documented data (``scenarios.toml`` beside this module), parsed strictly.

A malformed scenario file is answered with :class:`ScenarioFileError` naming the file, the scenario and the key, never
with a KeyError or a silently ignored typo."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.ops.config import ConfigError

__all__ = [
    "ASSETS",
    "DEFAULT_FILE",
    "FAULTS",
    "Expect",
    "Scenario",
    "ScenarioFileError",
    "load_scenarios",
    "parse_scenarios",
]

DEFAULT_FILE = Path(__file__).with_name("scenarios.toml")
ASSETS = ("energy", "charging_right", "reputation")
FAULTS = ("none", "refused", "timeout", "return", "relayer_sigkill", "relayers_racing", "relay_validator_down",
          "park_node_sigkill", "replay")
STATES = ("completed", "refunded")
PAIRS = ("ordered", "lanes")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_CODE = re.compile(r"[a-z0-9_.]{1,64}")
_KEYS = {"id", "title", "asset", "pairs", "kinds", "fault", "packets", "after", "expect", "requires"}
MAX_SCENARIOS = 256
MAX_FILE_BYTES = 256 * 1024


class ScenarioFileError(ConfigError):
    """A scenario file the runner cannot use: ``path``, ``scenario`` (its id or index, or None for the file) and
    ``key`` say where; the message says what was expected."""

    code = "conformance.scenarios"

    def __init__(self, path: str | Path, scenario: str | None, key: str | None, problem: str) -> None:
        self.path, self.scenario, self.key, self.problem = str(path), scenario, key, problem
        where = f"{self.path}"
        if scenario is not None:
            where += f": scenario {scenario}"
        if key is not None:
            where += f": {key}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Expect:
    state: str
    acks: tuple[str, ...] | None
    """The ack codes accepted; None: no ack at all (a timeout)."""

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "ack": None if self.acks is None else list(self.acks)}


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    asset: str
    pairs: str
    fault: str
    expect: Expect
    packets: int = 1
    after: str | None = None
    requires: tuple[str, ...] = field(default=())
    kinds: tuple[str, ...] | None = None
    """Only pairs whose two parks are of these chain kinds (None: every kind)."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "asset": self.asset, "pairs": self.pairs, "fault": self.fault,
                "packets": self.packets, "after": self.after, "requires": list(self.requires),
                "kinds": None if self.kinds is None else list(self.kinds),
                "expect": self.expect.to_json()}


def load_scenarios(path: str | Path = DEFAULT_FILE) -> list[Scenario]:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioFileError(p, None, None, f"{size} bytes; at most {MAX_FILE_BYTES}")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioFileError(p, None, None, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ScenarioFileError(p, None, None, f"cannot read it ({exc.strerror or exc})") from exc
    return parse_scenarios(text, p)


def parse_scenarios(text: str, path: str | Path = "<scenarios>") -> list[Scenario]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError(path, None, None, f"not TOML: {exc}") from exc
    extra = set(doc) - {"scenario"}
    if extra:
        raise ScenarioFileError(path, None, sorted(extra)[0], "unknown table; the file holds [[scenario]] entries")
    raw = doc.get("scenario")
    if not isinstance(raw, list) or not raw:
        raise ScenarioFileError(path, None, "scenario", "expected one or more [[scenario]] tables")
    if len(raw) > MAX_SCENARIOS:
        raise ScenarioFileError(path, None, "scenario", f"{len(raw)} scenarios; at most {MAX_SCENARIOS}")
    out: list[Scenario] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        s = _scenario(entry, i, path)
        if s.id in seen:
            raise ScenarioFileError(path, s.id, "id", "defined twice")
        seen.add(s.id)
        out.append(s)
    for s in out:
        if s.after is not None:
            if s.after not in seen:
                raise ScenarioFileError(path, s.id, "after", f"no scenario {s.after!r} in this file")
            if s.after == s.id:
                raise ScenarioFileError(path, s.id, "after", "a scenario cannot come after itself")
            first = next(x for x in out if x.id == s.after)
            if first.after is not None:
                raise ScenarioFileError(path, s.id, "after", f"{s.after!r} itself comes after another: one level only")
            if first.asset != s.asset or first.fault not in ("none",):
                raise ScenarioFileError(path, s.id, "after", f"{s.after!r} must deliver {s.asset} (fault = \"none\")")
        elif s.fault == "return":
            raise ScenarioFileError(path, s.id, "after", "fault \"return\" needs `after`: the scenario it returns")
    return out


def _scenario(entry: Any, i: int, path: str | Path) -> Scenario:
    if not isinstance(entry, dict):
        raise ScenarioFileError(path, f"#{i + 1}", None, "expected a table")
    sid = entry.get("id")
    name = sid if isinstance(sid, str) and _ID.fullmatch(sid) else f"#{i + 1}"
    unknown = set(entry) - _KEYS
    if unknown:
        raise ScenarioFileError(path, name, sorted(unknown)[0], f"unknown key; known: {', '.join(sorted(_KEYS))}")

    def need(key: str, choices: tuple[str, ...] | None = None) -> str:
        if key not in entry:
            raise ScenarioFileError(path, name, key, "required")
        v = entry[key]
        if not isinstance(v, str):
            raise ScenarioFileError(path, name, key, f"expected a string, got {type(v).__name__}")
        if choices is not None and v not in choices:
            raise ScenarioFileError(path, name, key, f"{v!r} is not one of {', '.join(choices)}")
        return v

    if not isinstance(sid, str) or not _ID.fullmatch(sid):
        raise ScenarioFileError(path, name, "id", f"required, [a-z0-9-] (1-64 characters), got {sid!r}")
    title = entry.get("title", sid)
    if not isinstance(title, str) or len(title) > 200:
        raise ScenarioFileError(path, name, "title", "expected a string of at most 200 characters")
    asset, pairs, fault = need("asset", ASSETS), need("pairs", PAIRS), need("fault", FAULTS)
    packets = entry.get("packets", 1)
    if isinstance(packets, bool) or not isinstance(packets, int) or not 1 <= packets <= 20:
        raise ScenarioFileError(path, name, "packets", f"expected a whole number in 1..20, got {packets!r}")
    after = entry.get("after")
    if after is not None and (not isinstance(after, str) or not _ID.fullmatch(after)):
        raise ScenarioFileError(path, name, "after", f"expected a scenario id, got {after!r}")
    if fault != "return" and after is not None:
        raise ScenarioFileError(path, name, "after", "only a scenario with fault = \"return\" comes after another")
    requires = entry.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) and _CODE.fullmatch(r) for r in requires):
        raise ScenarioFileError(path, name, "requires", "expected a list of capability names ([a-z0-9_.])")
    kinds = entry.get("kinds")
    if kinds is not None and (not isinstance(kinds, list) or not kinds
                              or not all(isinstance(k, str) and _ID.fullmatch(k) for k in kinds)):
        raise ScenarioFileError(path, name, "kinds", "expected a non-empty list of chain kinds (\"dpos\", \"poc\"...)")
    return Scenario(sid, title, asset, pairs, fault, _expect(entry.get("expect"), name, path), packets, after,
                    tuple(requires), None if kinds is None else tuple(kinds))


def _expect(raw: Any, name: str, path: str | Path) -> Expect:
    if raw is None:
        raise ScenarioFileError(path, name, "expect", "required: { state = ..., ack = ... }")
    if not isinstance(raw, dict):
        raise ScenarioFileError(path, name, "expect", "expected a table { state = ..., ack = ... }")
    unknown = set(raw) - {"state", "ack"}
    if unknown:
        raise ScenarioFileError(path, name, f"expect.{sorted(unknown)[0]}", "unknown key; known: state, ack")
    state = raw.get("state")
    if state not in STATES:
        raise ScenarioFileError(path, name, "expect.state", f"expected one of {', '.join(STATES)}, got {state!r}")
    ack = raw.get("ack")
    if ack == "none":
        return Expect(state, None)
    codes = [ack] if isinstance(ack, str) else ack
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) and _CODE.fullmatch(c) for c in codes):
        raise ScenarioFileError(path, name, "expect.ack",
                                f"expected \"ok\", an error code, a list of codes or \"none\", got {ack!r}")
    if state == "completed" and codes != ["ok"]:
        raise ScenarioFileError(path, name, "expect.ack", "a completed packet's ack is \"ok\"")
    return Expect(state, tuple(codes))
