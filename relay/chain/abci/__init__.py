"""The relay chain as an ABCI 2.0 application of CometBFT v0.38 (issue 17): the messages
(:mod:`relay.chain.abci.types`), the socket framing (:mod:`relay.chain.abci.framing`) and the asyncio socket server
with the :class:`~relay.chain.abci.server.Application` contract (:mod:`relay.chain.abci.server`), and the relay state
machine as that application (:mod:`relay.chain.abci.app`, SPEC §7.11)."""
