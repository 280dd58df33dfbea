"""The Fabric park: a real Hyperledger Fabric network (peers, etcdraft orderers, chaincode as a service), its
bridge chaincode, and the relay's Fabric light client (SPEC.md §8.7)."""
