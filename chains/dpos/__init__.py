"""The DPoS park chain (docs/research.md#seed-003, docs/research.md#seed-002; docs/architecture.md §3, §5): its
pure parts.

* :mod:`chains.dpos.types` — witnesses, witness sets, headers (binary codec), consensus parameters.
* :mod:`chains.dpos.consensus` — schedule, slots, LIB, witness-set promotion, election, credit, Shapley.
* :mod:`chains.dpos.light_client` — :class:`~chains.dpos.light_client.DposLightClient` (client type ``dpos``).
* :mod:`chains.dpos.witnesses` — witness records in state and the per-block ``apply_block_consensus``.
* :mod:`chains.dpos.market` — three-stage energy trade and reputation-based demand response.
* :mod:`chains.dpos.app` — the App (ops and hooks) and the genesis state.
* :mod:`chains.dpos.testing` — TEST-ONLY deterministic chains for tests and benchmarks.

Nothing here does I/O or reads a clock; the node runtime lives in :mod:`chains.common`.
"""
