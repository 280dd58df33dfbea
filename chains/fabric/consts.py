"""Names and byte formats shared by the Fabric park's launcher, its bridge chaincode, the relay's Fabric light
client and the Fabric adapter. Pure: no I/O.

The network (docs/architecture.md, "Fabric park"): one etcdraft ordering service run by the orderer organisation
(``OrdererMSP``), two peer organisations — the park operator (``OperatorMSP``) and a power-sales company
(``SalesMSP``), one peer each — and one application channel. The bridge chaincode's endorsement policy is
``AND('OperatorMSP.peer','SalesMSP.peer')``: every write needs both organisations, and so does every attestation
the relay's light client accepts.
"""

from __future__ import annotations

import hashlib
from typing import Final

ORDERER_MSP: Final = "OrdererMSP"
OPERATOR_MSP: Final = "OperatorMSP"
SALES_MSP: Final = "SalesMSP"
PEER_ORGS: Final = (OPERATOR_MSP, SALES_MSP)
"""The peer organisations, in the order of the endorsement policy."""

DEFAULT_CHANNEL: Final = "park"
BRIDGE_CHAINCODE: Final = "bridge"
ENDORSEMENT_POLICY: Final = "AND('OperatorMSP.peer','SalesMSP.peer')"

TIMEOUT_RECEIPT: Final = hashlib.sha256(b"parkrelay/fabric/timeout-receipt/v1").digest()
"""The value the bridge chaincode writes at a packet's receipt path when its endorsing peers' own clocks say the
packet's timeout has passed and no receipt exists (SPEC.md §8.7, hazard 2). A receipt and this sentinel are
written by transactions that both read the (absent) receipt key, so MVCC lets at most one of them commit; a
packet whose receipt path holds the sentinel can never execute. Never equal to an ack commitment (those are
sha256 of an encoded acknowledgement, which starts with a version byte, not this domain string)."""

ATTEST_FUNCTION: Final = "attest"
"""Bridge chaincode query ``attest(key_hex, nonce_hex)``: its response payload is an attestation statement
(:mod:`chains.fabric.attestation`), signed by each endorsing peer in its proposal response."""

FABRIC_CA_ATTRS_OID = "1.2.3.4.5.6.7.8.1"
"""The X.509 extension in which Fabric CA puts an enrolled identity's attributes, JSON ``{"attrs": {...}}``."""
