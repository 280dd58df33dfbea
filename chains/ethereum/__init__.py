"""The Ethereum park: anvil node, Solidity contracts, light client (see SPEC.md).

Pure (no I/O, no clock):

* :mod:`chains.ethereum.types` — strict RLP, keccak-256 and :class:`~chains.ethereum.types.EthHeader` (the
  block header as its hash is computed, every fork's fields through Prague).
* :mod:`chains.ethereum.proofs` — protocol §5 paths → ``ParkBridge`` storage slots (SPEC §E2.1), the E3 proof
  bytes ``rlp([account_proof, storage_proof])`` and the Merkle-Patricia verifier.
* :mod:`chains.ethereum.light_client` — :class:`~chains.ethereum.light_client.EthereumLightClient` (client
  type ``ethereum``): finality by confirmation depth and relay-validator attestation (SPEC §E3).

With I/O: the anvil process, the node, contract compilation and deployment (their own modules here).
"""
