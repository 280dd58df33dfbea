"""What a node process imports: the memory protocol.abi and the lazy adapters.ethereum package are for.

A relay validator's and a park node's modules load no eth-abi, eth-utils, pydantic, eth-account or web3 (~18 MB of
RSS in each such process), nor cryptography's X.509 stack (~7 MB) until a Fabric channel config is parsed;
adapters.ethereum still gives its functions and classes by name.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_a_node_process_loads_neither_eth_abi_nor_eth_account() -> None:
    code = ("import sys\n"
            "import relay.ops.nodes, relay.chain.node, relay.chain.attestor, relay.ops.api.service, relay.cli\n"
            "import chains.dpos.node, chains.poc.node\n"
            "print(sorted(m for m in ('eth_abi', 'eth_utils', 'pydantic', 'eth_account', 'web3', 'cryptography')\n"
            "             if m in sys.modules))")
    assert _run(code) == "[]"


def test_the_x509_stack_loads_with_the_first_fabric_channel_config() -> None:
    """A relay without a Fabric park never loads it; one with a Fabric park loads it when the client reads its
    channel config, and the orderer and peer checks find it there."""
    code = ("import sys\n"
            "import chains.fabric.light_client, chains.fabric.attestation, chains.fabric.config as config\n"
            "assert 'cryptography' not in sys.modules\n"
            "from chains.fabric.testing import FabricNet\n"
            "net = FabricNet.new()\n"
            "assert 'chains.fabric.msp' not in sys.modules\n"
            "cfg = config.ChannelConfig.parse(net.config_envelope(1), net.channel_id)\n"
            "assert 'chains.fabric.msp' in sys.modules and cfg.orderer_msps and cfg.consenters\n"
            "print('ok')\n")
    assert _run(code) == "ok"


def test_the_ethereum_adapter_package_keeps_its_functions_when_its_submodules_load() -> None:
    code = ("import types\n"
            "import adapters.ethereum as eth\n"
            "from adapters.ethereum.source import EthSource\n"
            "import adapters.ethereum.target\n"
            "from adapters.ethereum import EthTarget, send_energy, EthRpc\n"
            "assert isinstance(eth.source, types.FunctionType) and isinstance(eth.target, types.FunctionType)\n"
            "assert eth.EthSource is EthSource and EthTarget.__module__ == 'adapters.ethereum.target'\n"
            "assert callable(send_energy) and EthRpc.__module__ == 'adapters.ethereum.rpc'\n"
            "try:\n"
            "    eth.no_such_name\n"
            "except AttributeError:\n"
            "    print('ok')\n")
    assert _run(code) == "ok"
