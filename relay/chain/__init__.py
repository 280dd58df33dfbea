"""The relay chain: BFT consensus (:mod:`relay.chain.consensus`), the relay state machine
(:mod:`relay.chain.state_machine`), the validator node (:mod:`relay.chain.node`) and its attestor of the parks
whose headers prove no finality (:mod:`relay.chain.attestor`). Imports neither the relayer nor the operator's tools.
"""
