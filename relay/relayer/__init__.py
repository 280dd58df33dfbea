"""The relayer: an untrusted carrier of packets through the four phases (:mod:`relay.relayer.relayer`), the pure
choice of each packet's next action (:mod:`relay.relayer.policy`), light-client updates that follow forks
(:mod:`relay.relayer.client_updates`) and the step loop of every task (:mod:`relay.relayer.task`).

It knows no deployment config: :mod:`relay.ops.relayers` builds one from a config file. It may import the relay
chain's shared types (:mod:`relay.chain`), never the operator's tools (:mod:`relay.ops`).
"""
