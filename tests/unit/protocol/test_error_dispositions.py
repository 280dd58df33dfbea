"""One registry of error codes, each with a disposition, that survives the JSON-RPC wire (SPEC.md §9)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

import pytest

from adapters.common.rpc import RemoteError, error_from_rpc
from protocol import errors as perr
from protocol.errors import DISPOSITIONS, Disposition, MempoolFullError, ParkRelayError, TransportError

PACKAGES = ("protocol", "chains", "adapters", "relay")
OWN_PROCESS = ("chains.fabric.chaincode.server",)
"""Modules that only run in their own process: the chaincode server's protos (fabric_protos) cannot be registered in
a process that loaded hfc's (the Fabric adapter and tests), so they are read, not imported."""


def _all_error_classes() -> set[type[ParkRelayError]]:
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
            if mod.name.endswith((".cli", "__main__")) or mod.name in OWN_PROCESS:
                continue
            importlib.import_module(mod.name)
    seen: set[type[ParkRelayError]] = set()
    todo: list[type[ParkRelayError]] = [ParkRelayError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen and not sub.__module__.startswith("tests"):
                seen.add(sub)
                todo.append(sub)
    return seen


def test_own_process_modules_define_no_error_class() -> None:
    """What the registry check cannot import must not hold an error class it would miss."""
    import ast

    for name in OWN_PROCESS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        tree = ast.parse(open(spec.origin, encoding="utf-8").read())
        bases = {ast.unparse(b) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for b in node.bases}
        assert not bases & {"ParkRelayError", "ProtocolError", *perr.__all__}, (name, bases)


def test_every_error_class_of_the_code_base_has_its_code_registered() -> None:
    missing = sorted(f"{c.__module__}.{c.__qualname__}: {c.code}" for c in _all_error_classes()
                     if c.code not in DISPOSITIONS)
    assert not missing, f"codes without a disposition in protocol.errors.DISPOSITIONS: {missing}"


@pytest.mark.parametrize(("code", "disposition"), [
    ("mempool.full", Disposition.RETRY_SOON),
    ("tx.nonce", Disposition.RETRY_SOON),
    ("packet.replay", Disposition.DONE),
    ("header.not_final", Disposition.AFTER_PROGRESS),
    ("lane.rate_limited", Disposition.AFTER_PROGRESS),
    ("signature.invalid", Disposition.NEVER),
    ("auth.denied", Disposition.FATAL),
    ("no.such.code", Disposition.NEVER),
])
def test_codes_have_the_disposition_a_relayer_acts_on(code: str, disposition: Disposition) -> None:
    assert perr.disposition_of(code) is disposition


def _wire(exc: ParkRelayError) -> dict[str, Any]:
    """What a node's JSON-RPC error object carries for ``exc``."""
    return {"code": -32000, "message": exc.message, "data": exc.to_dict()}


def test_a_full_mempool_keeps_its_code_and_disposition_across_the_wire() -> None:
    back = error_from_rpc(_wire(MempoolFullError("mempool full", expected="< 20000", got=20000)))
    assert isinstance(back, MempoolFullError)
    assert back.code == "mempool.full" and back.disposition is Disposition.RETRY_SOON
    assert back.expected == "< 20000" and back.got == 20000


def test_an_unknown_code_keeps_the_remote_code_and_the_disposition_it_named() -> None:
    back = error_from_rpc({"code": -32000, "message": "x", "data": {"code": "park.custom", "disposition":
                                                                    "after_progress", "message": "later"}})
    assert isinstance(back, RemoteError)
    assert back.code == "park.custom" and back.remote_code == "park.custom"
    assert back.disposition is Disposition.AFTER_PROGRESS and back.message == "later"


@pytest.mark.parametrize("err", [None, "text", 7, [], {"data": "not a dict"}, {"data": {"disposition": "bogus"}},
                                 {"data": {"code": 5, "disposition": 3}}])
def test_malformed_error_objects_still_become_protocol_errors(err: Any) -> None:
    back = error_from_rpc(err)
    assert isinstance(back, perr.ProtocolError)
    assert back.disposition in set(Disposition)


def test_transport_errors_say_whether_to_reconnect() -> None:
    assert TransportError("down", retryable=True, side="a").disposition is Disposition.RETRY_SOON
    assert TransportError("bad config", retryable=False, side="a").disposition is Disposition.FATAL
