"""The operator's tools: the ``parkrelay`` CLI (:mod:`relay.ops.cli`), the deployment's config, key files and
their layout (:mod:`~relay.ops.config`, :mod:`~relay.ops.keys`, :mod:`~relay.ops.layout`), ``devnet``
(:mod:`~relay.ops.devnet`), the node and relayer processes wired from a deployment (:mod:`~relay.ops.nodes`,
:mod:`~relay.ops.relayers`), views of the parks and their packets and assets (:mod:`~relay.ops.parks`,
:mod:`~relay.ops.packets`, :mod:`~relay.ops.assets`), the operator API with its status page and metrics
(:mod:`relay.ops.api`) and ``doctor`` (:mod:`~relay.ops.doctor`).

May import the relayer (:mod:`relay.relayer`) and the relay chain (:mod:`relay.chain`); neither imports this room.
"""
