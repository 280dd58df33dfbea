"""Deterministic PoC test chains from real farming (TEST ONLY: the keys here are derived from public labels).

Farmers' keys and plot nonces derive from labels, their k=21 plots are made once into the plot cache
(:class:`chains.poc.plots.PlotCache`; ``$PARKRELAY_PLOT_CACHE`` or ``~/.cache/parkrelay/plots``), and headers
come from real farming: for each height every farmer's best proof, the least deadline wins, and the
block's time is ``parent + deadline + delta_ms``. Chains are reproducible byte for byte on any machine
(chiapos plots are a function of plot id and k).

The bench and the tests call::

    client_args, headers = make_chain(n_headers, n_farmers=2, plot_dir=None)
    client = PocLightClient(client_id=ClientId("poc-0"), **client_args)
    for h in headers:
        client.process_header(h, now_ms=h.timestamp_ms)

``client_args`` holds ``params`` (PocParams), ``checkpoint`` (the genesis ConsensusContext),
``confirmation_depth`` and ``trusting_period_ms``. Forks and forged headers come from
:class:`ChainBuilder` and :func:`forge`. Those headers commit to synthetic state roots; :class:`SimChain`
farms a park from its genesis config and executes each block as the node does, so its headers commit to
real park state (packet commitments included) that proofs can be checked against.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chains.common.bridge import register_bridge_ops
from chains.common.state import ChainState
from chains.common.tx import App, Tx, account_path
from chains.poc.app import apply_farmed_block, block_context, genesis_block, params_from_genesis, poc_app, tx_root
from chains.poc.consensus import (
    ConsensusContext,
    PocParams,
    ProofVerifier,
    chiapos_verifier,
    genesis_context,
    genesis_header,
    next_difficulty,
    validate_header,
)
from chains.poc.plots import DEFAULT_K, FarmedProof, Farmer, PlotCache, ProgressCallback
from chains.poc.reputation import poc_bridge_hooks
from chains.poc.types import PocHeader, decode_header
from protocol.crypto import Ed25519Signer
from protocol.errors import ProtocolError
from protocol.state_commitment import EMPTY_ROOT, SparseMerkleTree
from protocol.types import ChainId

__all__ = [
    "TEST_GENESIS_TIME_MS",
    "ChainBuilder",
    "FarmedChain",
    "SimChain",
    "build_test_chain",
    "farmer_plot_nonce",
    "farmer_signer",
    "forge",
    "make_chain",
    "make_farmers",
    "make_params",
]

TEST_GENESIS_TIME_MS = 1_700_000_000_000
_KEY_TAG = b"parkrelay/TEST-ONLY/poc/farmer-key/"
_NONCE_TAG = b"parkrelay/TEST-ONLY/poc/plot-nonce/"
FARMER_LABELS = ("farmer-a", "farmer-b", "farmer-c", "farmer-d")


def farmer_signer(label: str) -> Ed25519Signer:
    """A TEST-ONLY key derived from a public label: never use outside tests and devnets."""
    return Ed25519Signer(hashlib.sha256(_KEY_TAG + label.encode()).digest())


def farmer_plot_nonce(label: str, index: int = 0) -> bytes:
    """The nonce of a test farmer's ``index``-th plot."""
    return hashlib.sha256(_NONCE_TAG + label.encode() + index.to_bytes(4, "big")).digest()


def make_farmers(n_farmers: int = 2, plot_dir: Path | str | None = None, plots_per_farmer: int = 1,
                 k: int = DEFAULT_K, progress: ProgressCallback | None = None) -> list[Farmer]:
    """Farmers ``farmer-a``, ``farmer-b``... with their plots (from the cache, or plotted once: ~12 s each)."""
    if not 1 <= n_farmers <= len(FARMER_LABELS):
        raise ValueError(f"1..{len(FARMER_LABELS)} test farmers")
    cache = PlotCache(plot_dir)
    farmers = []
    for label in FARMER_LABELS[:n_farmers]:
        farmer = Farmer(label, farmer_signer(label))
        for i in range(plots_per_farmer):
            farmer.fill(cache, farmer_plot_nonce(label, i), k, progress)
        farmers.append(farmer)
    return farmers


def make_params(chain_id: str = "poc-test", n_plots: int = 2, target_interval_ms: int = 1000,
                **overrides: Any) -> PocParams:
    """Consensus params whose initial difficulty matches ``n_plots`` k=21 plots at the target interval."""
    fields: dict[str, Any] = {
        "chain_id": ChainId(chain_id),
        "genesis_challenge": hashlib.sha256(b"parkrelay/TEST-ONLY/poc/genesis/" + chain_id.encode()).digest(),
        "initial_difficulty": target_interval_ms * n_plots, "target_interval_ms": target_interval_ms,
        "retarget_window": 16, "max_future_ms": 1500,
    }
    fields.update(overrides)
    return PocParams(**fields)


class ChainBuilder:
    """Farms headers on any parent (so forks are easy); remembers every context it made."""

    def __init__(self, params: PocParams, farmers: Sequence[Farmer], genesis_time_ms: int = TEST_GENESIS_TIME_MS,
                 genesis_state_root: bytes = EMPTY_ROOT, verifier: ProofVerifier | None = None) -> None:
        self.params = params
        self.farmers = list(farmers)
        self.verifier = verifier if verifier is not None else chiapos_verifier()
        self.genesis_header = genesis_header(params, genesis_time_ms, genesis_state_root)
        self.genesis = genesis_context(params, self.genesis_header)
        self.contexts: dict[bytes, ConsensusContext] = {self.genesis.header_hash: self.genesis}
        self._farmed: dict[tuple[str, bytes, int], FarmedProof | None] = {}

    def best(self, parent: ConsensusContext, farmers: Sequence[Farmer] | None = None) -> tuple[Farmer, FarmedProof]:
        """The winning farmer and proof for the child of ``parent`` (least deadline, then name)."""
        found: list[tuple[int, str, Farmer, FarmedProof]] = []
        for farmer in farmers if farmers is not None else self.farmers:
            farmed = self._farm(farmer, parent)
            if farmed is not None:
                found.append((farmed.deadline_ms, farmer.name, farmer, farmed))
        if not found:
            raise RuntimeError(f"no plot answers any slot at height {parent.height + 1}")
        _, _, farmer, farmed = min(found, key=lambda f: (f[0], f[1]))
        return farmer, farmed

    def _farm(self, farmer: Farmer, parent: ConsensusContext) -> FarmedProof | None:
        key = (farmer.name, parent.next_challenge(), next_difficulty(self.params, parent))
        if key not in self._farmed:  # forks share challenges: farm each (farmer, challenge, difficulty) once
            self._farmed[key] = farmer.farm(self.params, parent)
        return self._farmed[key]

    def child(self, parent: ConsensusContext, *, farmers: Sequence[Farmer] | None = None, delta_ms: int = 5,
              state_root: bytes = EMPTY_ROOT, tx_root: bytes = EMPTY_ROOT) -> tuple[PocHeader, ConsensusContext]:
        """A valid child of ``parent`` at ``parent + deadline + delta_ms``, farmed by the best of ``farmers``."""
        farmer, farmed = self.best(parent, farmers)
        ts = parent.timestamp_ms + farmed.deadline_ms + delta_ms
        header = farmer.make_header(self.params, parent, farmed, ts, tx_root, state_root)
        ctx = validate_header(header, parent, self.params, ts, self.verifier)
        self.contexts[ctx.header_hash] = ctx
        return header, ctx

    def extend(self, parent: ConsensusContext, n: int, **kwargs: Any) -> list[tuple[PocHeader, ConsensusContext]]:
        """``n`` headers on top of ``parent`` (keyword arguments as for :meth:`child`)."""
        out = []
        for _ in range(n):
            header, parent = self.child(parent, **kwargs)
            out.append((header, parent))
        return out

    def farmer_keys(self) -> dict[str, bytes]:
        """The farmers' account keys, as a light client binds farmer names (the park's genesis accounts)."""
        return {f.name: f.pubkey for f in self.farmers}

    def farmer(self, name: str) -> Farmer:
        return next(f for f in self.farmers if f.name == name)


@dataclass
class FarmedChain:
    """A generated chain and what made it."""

    builder: ChainBuilder
    headers: list[PocHeader]
    contexts: list[ConsensusContext] = field(default_factory=list)
    confirmation_depth: int = 6
    trusting_period_ms: int = 14 * 24 * 3600 * 1000

    @property
    def params(self) -> PocParams:
        return self.builder.params

    def client_args(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~chains.poc.light_client.PocLightClient` (all but ``client_id``)."""
        return {"params": self.builder.params, "checkpoint": self.builder.genesis,
                "confirmation_depth": self.confirmation_depth, "trusting_period_ms": self.trusting_period_ms,
                "farmer_keys": self.builder.farmer_keys()}


def build_test_chain(n_headers: int, n_farmers: int = 2, plot_dir: Path | str | None = None, *,
                     confirmation_depth: int = 6, target_interval_ms: int = 1000, delta_ms: int = 5,
                     params: PocParams | None = None) -> FarmedChain:
    """A chain of ``n_headers`` farmed headers after genesis (genesis itself is the checkpoint)."""
    farmers = make_farmers(n_farmers, plot_dir)
    params = params or make_params(n_plots=n_farmers, target_interval_ms=target_interval_ms)
    builder = ChainBuilder(params, farmers)
    pairs = builder.extend(builder.genesis, n_headers, delta_ms=delta_ms)
    return FarmedChain(builder, [h for h, _ in pairs], [c for _, c in pairs], confirmation_depth)


def make_chain(n_headers: int, n_farmers: int = 2, plot_dir: Path | str | None = None, *,
               confirmation_depth: int = 6, target_interval_ms: int = 1000, delta_ms: int = 5,
               cache_headers: bool = True) -> tuple[dict[str, Any], list[PocHeader]]:
    """``(client_args, headers)`` for ``PocLightClient(client_id=..., **client_args)``; feed each header with
    ``now_ms=header.timestamp_ms`` (or any time up to the trusting period after the final header).

    Farming costs ~8 ms a header (a full chiapos proof lookup); with ``cache_headers`` the encoded headers
    are kept in the plot directory, keyed by every input, so a bench re-run reads them back.
    """
    params = make_params(n_plots=n_farmers, target_interval_ms=target_interval_ms)
    farmers = make_farmers(n_farmers, plot_dir)
    builder = ChainBuilder(params, farmers)
    chain = FarmedChain(builder, [], [], confirmation_depth)
    key = hashlib.sha256(json.dumps({
        "v": 1, "n": n_headers, "params": params.to_json(), "delta": delta_ms,
        "plots": [p.plot_id.hex() for f in farmers for p in f.plots],
    }, sort_keys=True).encode()).hexdigest()[:24]
    cache_file = PlotCache(plot_dir).directory / f"chain-{key}.bin"
    if cache_headers and cache_file.exists():
        chain.headers = _read_headers(cache_file.read_bytes())
    else:
        chain.headers = [h for h, _ in builder.extend(builder.genesis, n_headers, delta_ms=delta_ms)]
        if cache_headers:
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_bytes(b"".join(len(e).to_bytes(4, "big") + e for e in (h.encode() for h in chain.headers)))
            tmp.replace(cache_file)
    return chain.client_args(), chain.headers


def _read_headers(data: bytes) -> list[PocHeader]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(decode_header(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def forge(header: PocHeader, signer: Ed25519Signer | None = None, **changes: Any) -> PocHeader:
    """A copy of ``header`` with fields replaced, re-signed by ``signer`` (else the signature is kept as is)."""
    forged = replace(header, **changes)
    if signer is not None:
        forged = forged.with_signature(signer.sign(forged.signing_bytes()))
    return forged


class SimChain:
    """A pure, in-memory PoC park that farms and executes blocks as its node does (``PocRules`` with the node
    runtime's ``build_block``): on a provisional header, :func:`~chains.poc.app.apply_farmed_block` and the
    begin-block hooks, then the transactions, then the header signed over the resulting roots. The bridge ops
    are registered, as on the node. TEST-ONLY: farm with :func:`make_farmers`' plots, whose keys are public.

    ``config`` is the park's genesis config (``chains.poc.node.build_genesis``, or the format of
    :mod:`chains.poc.app`); the farmers need accounts keyed by their farmer keys.
    """

    def __init__(self, config: dict[str, Any], farmers: Sequence[Farmer], *,
                 verifier: ProofVerifier | None = None) -> None:
        self.config = config
        self.state, genesis, genesis_ctx = genesis_block(config)
        self.params, self.app_params = params_from_genesis(config)
        self.chain_id = self.params.chain_id
        self.app: App = poc_app(self.chain_id, self.app_params, verifier)
        register_bridge_ops(self.app, poc_bridge_hooks(self.app_params))
        self.builder = ChainBuilder(self.params, farmers, genesis.timestamp_ms, genesis.state_root, verifier)
        self.headers: list[PocHeader] = [genesis]
        self.contexts: list[ConsensusContext] = [genesis_ctx]
        self.trees: list[SparseMerkleTree] = [self.state.tree]
        """The state tree after each block (index = height), to prove keys at any height."""
        self.events: list[list[dict[str, Any]]] = [[]]
        self.failed: list[list[tuple[Tx, ProtocolError]]] = [[]]
        """Transactions of each block that raised (and were left out), with their error."""

    @property
    def tip(self) -> PocHeader:
        return self.headers[-1]

    def tx(self, signer: Ed25519Signer, sender: str, op: str, args: dict[str, Any], nonce: int | None = None) -> Tx:
        """A transaction of ``sender`` signed by ``signer``, at its next nonce by default."""
        if nonce is None:
            nonce = self.state.get_json(account_path(sender))["nonce"]
        return Tx.signed(signer, self.chain_id, sender, nonce, op, args)

    def produce(self, txs: Sequence[Tx] = (), *, delta_ms: int = 5) -> PocHeader:
        """Farm, execute and sign the next block: the best proof over the farmers, ``delta_ms`` after its deadline."""
        parent = self.contexts[-1]
        farmer, farmed = self.builder.best(parent)
        ts = parent.timestamp_ms + farmed.deadline_ms + delta_ms
        provisional = farmer.make_header(self.params, parent, farmed, ts, bytes(32), bytes(32))
        ctx = block_context(provisional)
        state = ChainState(self.state.tree)
        events = [*apply_farmed_block(state, provisional, self.app_params), *self.app.begin_block(state, ctx)]
        included: list[bytes] = []
        failed: list[tuple[Tx, ProtocolError]] = []
        for tx in txs:
            try:
                events += self.app.execute_tx(state, tx, ctx)
                included.append(tx.hash())
            except ProtocolError as exc:
                failed.append((tx, exc))
        header = farmer.make_header(self.params, parent, farmed, ts, tx_root(included), state.root)
        self.contexts.append(validate_header(header, parent, self.params, ts, self.builder.verifier))
        self.builder.contexts[header.hash()] = self.contexts[-1]
        self.state = state
        self.headers.append(header)
        self.trees.append(state.tree)
        self.events.append(events)
        self.failed.append(failed)
        return header

    def produce_many(self, n: int) -> list[PocHeader]:
        return [self.produce() for _ in range(n)]
