"""The Fabric park's bridge chaincode (SPEC.md §8.7): the Python parks' bridge rules over the Fabric ledger.

* :mod:`.contract` — the functions (send, recv, settle, timeout_receipt, attest, ...), pure over a stub;
* :mod:`.assets` — charging rights (multi-hop traces, admission by the transformer registry), reputation (certified
  participants' standing, imported reputation, ``certify``): the issue 12 rules over the same state;
* :mod:`.ledger` — the :class:`~.ledger.Stub` protocol, protocol paths as Fabric keys, the state backend;
* :mod:`.identity` — accounts keyed by the creator's MSP identity;
* :mod:`.server` — the chaincode-as-a-service process (``python -m chains.fabric.chaincode.server``), the only
  module that imports ``fabric_chaincode_python`` (and its ``fabric_protos``, which must never share a process
  with hfc's protos).
"""
