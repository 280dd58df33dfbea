"""The bridge chaincode inside a real Fabric 2.5 network (issue 11): Fabric's own orderer and peers, the chaincode
server run as a service by each organisation (``python -m chains.fabric.chaincode.server``), driven by Fabric's
own ``peer chaincode invoke`` / ``query`` as the network's users. Real relay certificates come from the unit tests'
relay simulator, so phase 3 runs against the chaincode exactly as a relayer would drive it.

Shown: genesis once; accounts are the creators' MSP identities; phase 1 and phase 3 with a real certificate;
refusals reach the client with their stable code; ``attest`` answered by each organisation's peer with its own
clock; hazard 2 with the real clocks (``timeout_receipt`` refused before the timeout, ``recv`` refused after it,
the sentinel written, ``recv`` refused for good).

Needs the Fabric network launcher (``chains.fabric.network``, branch fabric-net; passed against its 04c4105) and
``make setup``'s Fabric build; skipped without.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chains.common.genesis import bridge_section
from chains.fabric.consts import OPERATOR_MSP, PEER_ORGS, SALES_MSP, TIMEOUT_RECEIPT
from protocol.codec import decode_packet, encode_packet
from protocol.types import Packet
from tests.integration.harness import REPO, free_port_block
from tests.unit.bridge.sim import Network

launcher = pytest.importorskip("chains.fabric.network.launcher", reason="needs the Fabric network launcher")
netconfig = pytest.importorskip("chains.fabric.network.config")
nettools = pytest.importorskip("chains.fabric.network.tools")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CC = netconfig.ChaincodeSpec(command=(sys.executable, "-m", "chains.fabric.chaincode.server"), cwd=REPO,
                   env={"PYTHONPATH": str(REPO)}, ready_args=("org.hyperledger.fabric:get_metadata",))
USERS = {"alice": OPERATOR_MSP, "bob": SALES_MSP}
ALICE, BOB = "OperatorMSP:alice@OperatorMSP", "SalesMSP:bob@SalesMSP"
"""Their accounts: ``<MSP id>:<certificate CN>`` (the launcher's user certificates are ``<user>@<MSP id>``)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Park:
    """The network, the relay simulator beside it, and the peer CLI as each user."""

    def __init__(self, net: Any, relay: Network) -> None:
        self.net, self.cfg, self.relay = net, net.cfg, relay

    def invoke(self, user: str, *args: str) -> tuple[int, str]:
        """``peer chaincode invoke`` endorsed by both organisations' peers, waiting for the commit: the CLI's exit
        status and output (refusals included)."""
        msp, lay = USERS[user], self.cfg.layout
        peers: list[str] = []
        for org in PEER_ORGS:
            peers += ["--peerAddresses", self.cfg.peer_endpoint(org), "--tlsRootCertFiles", str(lay.tls_ca(org))]
        res = self.net.tools.peer(msp, "chaincode", "invoke", *self.net.tools.orderer_flags(0), "--channelID",
                                  self.cfg.channel, "--name", CC.name, *peers, "--ctor", json.dumps({"Args": args}),
                                  "--waitForEvent", "--waitForEventTimeout", "30s", user=user, check=False,
                                  timeout_s=60)
        return res.returncode, str(res.output)

    def ok(self, user: str, *args: str) -> None:
        status, out = self.invoke(user, *args)
        assert status == 0, out

    def refused(self, user: str, *args: str) -> str:
        """The error code of a refused invoke (``status:500 message:"[code] ..."`` from the endorsing peers)."""
        status, out = self.invoke(user, *args)
        codes = set(re.findall(r"status:500 message:\\?\"\[([a-z0-9._]+)\]", out))
        assert status != 0 and len(codes) == 1, out
        return codes.pop()

    def query(self, user: str, *args: str) -> Any:
        """``peer chaincode query`` as ``user`` on its own organisation's peer: the JSON answered."""
        out = self.net.lifecycle.query(USERS[user], list(args), user=user)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def park(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Park]:
    root = Path(tmp_path_factory.mktemp("fabric-bridge"))
    probe = netconfig.FabricNetworkConfig(chain_id="fabric-park", data_dir=root, base_port=20000)
    try:
        nettools.FabricTools(probe).check_installed()
    except Exception as exc:  # a machine without `make setup`'s Fabric build
        pytest.skip(str(exc))
    cfg = netconfig.FabricNetworkConfig(chain_id="fabric-park", data_dir=root,
                                        base_port=free_port_block(probe.port_count), users=USERS, chaincode=CC,
                                        batch_timeout_ms=250)
    net = launcher.FabricNetwork(cfg)
    try:
        net.up(timeout_s=120)
        relay = Network()
        relay.now_ms = now_ms()
        dpos = relay.add_park("dpos-park", [{"lane": "lane-0", "counterparty": "fabric-park"}])
        dpos.state.add_balance("alice", "kWh", 100_000)
        yield Park(net, relay)
    finally:
        net.stop()


def inbound(park: Park, amount: int, timeout_in_ms: int) -> tuple[Packet, str]:
    """A dpos-park packet to bob on the Fabric park, verified by the relay: (packet, recv argument)."""
    park.relay.now_ms = now_ms()
    packet = park.relay.send("dpos-park", "alice", dst_chain="fabric-park", lane="lane-0", kind="energy",
                             receiver=BOB, denom="kWh", amount_wh=amount, timeout_timestamp_ms=now_ms() + timeout_in_ms)
    return packet, json.dumps({"packet": encode_packet(packet).hex(), "certificate": park.relay.verify(packet)})


def test_genesis_once_and_accounts_are_msp_identities(park: Park) -> None:
    assert park.query("alice", "org.hyperledger.fabric:get_metadata")["contracts"]["bridge"]["name"] == "bridge"
    genesis = {"chain_id": "fabric-park", "accounts": [ALICE, BOB],
               "balances": [{"account": ALICE, "denom": "kWh", "amount": 100_000}],
               "bridge": bridge_section("relay", park.relay.relay.vset,
                                        [{"lane": "lane-0", "counterparty": "dpos-park"}])}
    park.ok("alice", "init_bridge", json.dumps(genesis))
    assert park.refused("bob", "init_bridge", json.dumps(genesis)) == "packet.replay"
    assert park.query("bob", "whoami") == {"account": BOB, "registered": True}
    assert park.query("bob", "balance", ALICE, "kWh")["amount_wh"] == 100_000  # on SalesMSP's peer


def test_send_and_receive_with_a_real_relay_certificate(park: Park) -> None:
    park.ok("alice", "send", json.dumps({"dst_chain": "dpos-park", "lane": "lane-0", "kind": "energy",
                                         "receiver": "bob", "denom": "kWh", "amount_wh": 5_000,
                                         "timeout_timestamp_ms": now_ms() + 600_000}))
    stored = park.query("bob", "packet", "dpos-park", "lane-0", "1")
    sent = decode_packet(bytes.fromhex(stored["packet"]))
    assert sent.sender == ALICE and sent.sequence == 1
    assert park.refused("bob", "send", json.dumps({"dst_chain": "dpos-park", "lane": "lane-0", "kind": "energy",
                                                   "receiver": "bob", "denom": "kWh", "amount_wh": 1,
                                                   "timeout_timestamp_ms": now_ms() + 600_000})
                        ) == "funds.insufficient"  # bob holds no kWh: nobody spends another's balance

    packet, args = inbound(park, 1_000, 600_000)
    park.ok("bob", "recv", args)
    assert park.query("bob", "balance", BOB, "lane-0/dpos-park/kWh")["amount_wh"] == 1_000
    assert park.refused("alice", "recv", args) == "packet.replay"
    receipt = park.query("alice", "receipt", "dpos-park", "lane-0", str(packet.sequence))
    assert receipt["timed_out"] is False and receipt["ack"]
    for msp in PEER_ORGS:  # Fabric's own CLI on each organisation's peer reads the bridge's state
        before = now_ms()
        key = f"receipts/dpos-park/lane-0/{packet.sequence}".encode().hex()
        statement = park.query("alice" if msp == OPERATOR_MSP else "bob", "attest", key, "ab" * 8)
        assert statement["value"] == receipt["receipt"] and statement["channel"] == park.cfg.channel
        assert before - 1_000 <= statement["time_ms"] <= now_ms() + 1_000  # that organisation's clock


def test_timeouts_are_decided_by_the_peers_clocks(park: Park) -> None:
    packet, args = inbound(park, 7, 4_000)
    assert park.refused("alice", "timeout_receipt", args) == "packet.timeout"
    time.sleep(max(0.0, (packet.timeout_timestamp_ms - now_ms()) / 1000) + 0.3)  # the real clock must pass it
    assert park.refused("bob", "recv", args) == "packet.timeout"
    park.ok("alice", "timeout_receipt", args)
    receipt = park.query("bob", "receipt", "dpos-park", "lane-0", str(packet.sequence))
    assert receipt == {"receipt": TIMEOUT_RECEIPT.hex(), "ack": None, "timed_out": True}
    assert park.refused("bob", "recv", args) == "packet.timeout"
    assert park.refused("bob", "timeout_receipt", args) == "packet.replay"
    assert park.query("alice", "supply")["vouchers"] == {"lane-0/dpos-park/kWh": 1_000}
