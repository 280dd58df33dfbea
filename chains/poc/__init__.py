"""chains.poc — the proof-of-capacity park (docs/architecture.md §3 and §5, docs/research.md#seed-000).

Pure (no I/O, no clock): ``types`` (PocHeader and its encoding), ``consensus`` (plot binding, challenge
chain, deadlines, retarget, fork choice, ``validate_header``), ``errors``, ``light_client``
(PocLightClient, client type ``poc``), ``market`` (capacity competition and the ancillary-service
market), ``app`` (the App, genesis, per-block bookkeeping). With I/O: ``plots`` (chiapos plots, the plot
cache, the Farmer). Tests and benches: ``testing`` (deterministic farmed chains, TEST-ONLY keys).
"""
