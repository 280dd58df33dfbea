"""The Fabric park's network: real Hyperledger Fabric 2.5 orderers and peers on loopback, set up and run by us.

* :mod:`.config` — :class:`FabricNetworkConfig` (orderers, ports, channel, chaincode, users) and :class:`Layout`
  (every path under the park's data dir);
* :mod:`.crypto` — devnet X.509 material (CAs, MSPs with NodeOUs, TLS), generated with ``cryptography``;
* :mod:`.render` — ``core.yaml``/``orderer.yaml`` from Fabric's sampleconfig with our overrides, ``configtx.yaml``,
  the hfc connection profile;
* :mod:`.tools` and :mod:`.lifecycle` — Fabric's CLIs (configtxgen, osnadmin, peer) as each organisation's admin,
  and the chaincode-as-a-service lifecycle (our external builder: ``ccaas/bin``);
* :mod:`.process` and :mod:`.launcher` — the processes (tied to their parent) and :class:`FabricNetwork`, which
  brings the park up from nothing or back from its data dir;
* :mod:`.supervisor` — ``parkrelay node fabric``: the whole park as one supervisor process.

Nothing here is imported by the relay's light client (pure) or the chaincode (its own process).
"""
