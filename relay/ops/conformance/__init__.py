"""Conformance as a product: ``parkrelay conformance run`` plays documented scenarios (``scenarios.toml``) against any
deployment a config describes, gated by what the deployment and its chain kinds can do, and reports JUnit XML, a
self-contained HTML page and JSON. The test suite's asset matrix runs through the same engine."""
