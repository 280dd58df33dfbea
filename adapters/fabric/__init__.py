"""Relayer-side clients of the Fabric park (SPEC.md §8.7), over the real hfc client (PyPI ``fabric-sdk-py`` 1.0.0).

* :class:`FabricSource` — heights (an ordered block is final), blocks as the Fabric light client's headers,
  attestations as proofs, the bridge's events of VALID transactions, state reads (:mod:`.source`).
* :class:`FabricTarget` — bridge transactions endorsed by both organisations, ordered, tracked to their commit, with
  refusals, endorsement mismatches, MVCC conflicts and unreachable nodes classified (:mod:`.target`,
  :mod:`.errors`).
* :func:`send_energy`, :func:`send_right`, :func:`send_reputation` — phase 1 from a user's identity (with relay fees
  if offered, protocol SPEC §6.10), for the CLI, the demo and tests; charging rights, the transformer registry and
  reputation: reads and operator writes (:mod:`.assets`).
* :class:`~adapters.fabric.market.FabricMarket` — the park's market, one method per ``market.*`` chaincode function
  (access, agreements, contracts with private terms sent as transient data, charging-right rounds) (:mod:`.market`).
* :class:`FabricGateway` — one identity's hfc connection, shared by a source and a target (:mod:`.gateway`).

``source(...)`` and ``target(...)`` build them from the park's hfc connection profile (written by the network
launcher: ``<data dir>/connection-profile.json``) and the name of a client identity it lists. Only that identity's
key is loaded, and never into hfc's file credential store (:mod:`.gateway`, "Keys").

Importing this package (read before importing it in a new process)
------------------------------------------------------------------

* hfc's generated protos predate protobuf 4: they load only under the pure-Python protobuf, chosen with
  ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` **before protobuf is first imported in the process**. This
  package sets it (unless already set) before importing hfc, and refuses to load (:class:`ImportError` saying so) if
  protobuf was imported earlier under another implementation — import ``adapters.fabric`` first in such a process.
  Never import the chaincode library (``fabric_protos``) in the same process: its protos register the same files.
* hfc loads gRPC. A process that forks children (:func:`chains.common.procs.spawn`) must have gRPC's fork handlers
  off before gRPC initialises, so this package also sets ``GRPC_ENABLE_FORK_SUPPORT=0`` (unless set).
* hfc's import prints many ``DeprecationWarning`` s, and its client logs at DEBUG through a handler of its own
  ("New channel with name ..."); aiogrpc logs a traceback for every broken stream (a peer restarting), which the
  adapter handles itself. These are silenced here: hfc's loggers at WARNING without their own handlers (set
  ``PARKRELAY_HFC_LOG_LEVEL`` to another level name to see more), aiogrpc's at CRITICAL.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")


def _check_protobuf() -> None:
    if "google.protobuf" not in sys.modules:
        return
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python":
        raise ImportError("adapters.fabric: protobuf was imported before this package under the "
                          f"{api_implementation.Type()!r} implementation; hfc's protos need the pure-Python one "
                          "(PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python before protobuf's first import): import "
                          "adapters.fabric earlier in this process")


_check_protobuf()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import hfc.fabric  # noqa: F401  (after the environment above)


def quiet_hfc(level: int | None = None) -> None:
    """hfc's loggers at ``level`` (default ``$PARKRELAY_HFC_LOG_LEVEL`` or WARNING) without the console handlers its
    modules attach, so its DEBUG chatter stays out of operators' logs; aiogrpc's at CRITICAL."""
    if level is None:
        level = logging.getLevelName(os.environ.get("PARKRELAY_HFC_LOG_LEVEL", "WARNING").upper())
        if not isinstance(level, int):
            level = logging.WARNING
    for name in list(logging.root.manager.loggerDict):
        if name == "hfc" or name.startswith("hfc."):
            lg = logging.getLogger(name)
            lg.setLevel(level)
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:
                    lg.removeHandler(h)
    logging.getLogger("hfc").setLevel(level)
    logging.getLogger("aiogrpc").setLevel(logging.CRITICAL)


quiet_hfc()

from adapters.fabric.assets import send_reputation, send_right  # noqa: E402
from adapters.fabric.blocks import BridgeTx, PeerBlock, decode_peer_block  # noqa: E402
from adapters.fabric.errors import (  # noqa: E402
    EndorsementMismatchError,
    MvccConflictError,
    TxInvalidError,
    chaincode_error,
    classify_endorsements,
)
from adapters.fabric.gateway import CommitWatcher, FabricGateway, TxStatus  # noqa: E402
from adapters.fabric.source import FabricSource  # noqa: E402
from adapters.fabric.target import (  # noqa: E402
    OPS,
    FabricTarget,
    SentPacket,
    Submitted,
    send_energy,
    send_packet,
    write_keys,
)

__all__ = [
    "OPS",
    "BridgeTx",
    "CommitWatcher",
    "EndorsementMismatchError",
    "FabricGateway",
    "FabricSource",
    "FabricTarget",
    "MvccConflictError",
    "PeerBlock",
    "SentPacket",
    "Submitted",
    "TxInvalidError",
    "TxStatus",
    "chaincode_error",
    "classify_endorsements",
    "connect",
    "decode_peer_block",
    "quiet_hfc",
    "send_energy",
    "send_packet",
    "send_reputation",
    "send_right",
    "source",
    "target",
    "write_keys",
]


def connect(profile: str | Path, chain_id: str, user: str, **kw: Any) -> FabricGateway:
    """A gateway for identity ``user`` of the park ``chain_id`` described by connection profile ``profile`` (keyword
    arguments of :class:`FabricGateway`: ``org``, ``channel``, ``chaincode``, ``policy_orgs``, ``timeout_s``).
    Nothing connects until the first call."""
    return FabricGateway(profile, chain_id, user, **kw)


def source(profile: str | Path | FabricGateway, chain_id: str = "", user: str = "", **kw: Any) -> FabricSource:
    """The Fabric park's source side: over ``profile`` as ``user`` (a new gateway), or over a gateway shared with a
    target. ``cache_blocks`` goes to :class:`FabricSource`, the rest to :func:`connect`."""
    cache = kw.pop("cache_blocks", 512)
    gw = profile if isinstance(profile, FabricGateway) else connect(profile, chain_id, user, **kw)
    return FabricSource(gw, cache_blocks=cache)


def target(profile: str | Path | FabricGateway, chain_id: str = "", user: str = "", **kw: Any) -> FabricTarget:
    """The Fabric park's target side as ``user`` (its relayer identity): over a new gateway or a shared one.
    ``commit_timeout_s``, ``pipeline_wait_s``, ``all_peers_grace_s`` and ``in_doubt_wait_s`` go to
    :class:`FabricTarget`, the rest to :func:`connect`."""
    own = {k: kw.pop(k) for k in ("commit_timeout_s", "pipeline_wait_s", "all_peers_grace_s", "in_doubt_wait_s")
           if k in kw}
    gw = profile if isinstance(profile, FabricGateway) else connect(profile, chain_id, user, **kw)
    return FabricTarget(gw, **own)
