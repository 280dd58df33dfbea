"""The relay layer, in three rooms whose imports go one way (an import-linter contract in pyproject.toml keeps them so):

* :mod:`relay.ops` — the operator's tools: the ``parkrelay`` CLI, the deployment (config, key files, genesis),
  ``devnet``, the node and relayer processes wired from a deployment, park views, the operator API, its status page
  and metrics, ``doctor``. It may import the two rooms below.
* :mod:`relay.relayer` — the relayer: packets carried through the four phases, its policy and step loops. It may
  import the relay chain's shared types, never the operator's tools.
* :mod:`relay.chain` — the relay chain: BFT consensus, the state machine, the validator node and its attestor. It
  imports neither room above.

``python -m relay.cli`` is the ``parkrelay`` command (:mod:`relay.ops.cli`).
"""
