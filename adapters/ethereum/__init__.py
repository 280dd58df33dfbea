"""Relayer-side clients of the Ethereum park (chains/ethereum/SPEC.md §E5), over web3.py's ``AsyncWeb3``.

* :class:`EthSource` — heights (finality = confirmation depth), :class:`~chains.ethereum.types.EthHeader`
  headers, ``eth_getProof`` proofs of the bridge's records, bridge events from ``eth_getLogs``.
* :class:`EthTarget` — ``bridge.recv`` / ``bridge.settle`` / ``bridge.update_relay_validators`` with the
  Python parks' JSON arguments, as locally signed transactions with explicit nonces; reverts decoded into
  protocol errors (SPEC §E2.3) before anything is sent.
* :func:`send_energy` — phase 1 from an account (approve + ``sendEnergy``, or ``sendEnergyWithFees`` paying relay
  fees in wei), for the CLI and tests; :func:`send_right`, :func:`send_reputation` likewise, and the rights and
  reputation queries and operator writes of :mod:`adapters.ethereum.assets` (``right_show``, ``rights_list``,
  ``transformer_show``, ``issue_right`` …);
* relay fees (protocol SPEC §6.10): :func:`fees_owed`, :func:`fees_escrowed`, :func:`withdraw_fees`.

``source(...)`` and ``target(...)`` build them from a node URL, as :mod:`adapters.dpos` does from a
client.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from chains.common import wire
from protocol.certificate import ValidatorSet
from protocol.errors import ProtocolError, ValidatorSetMismatchError

if TYPE_CHECKING:
    from adapters.ethereum.assets import (
        RightInfo,
        imported_reputation,
        issue_right,
        right_show,
        rights_list,
        send_reputation,
        send_right,
        set_station,
        set_transformer,
        transformer_show,
    )
    from adapters.ethereum.errors import EthRevertError, GasCapError, ReputationError, RightError, decode_revert
    from adapters.ethereum.rpc import EthRpc
    from adapters.ethereum.source import EthSource
    from adapters.ethereum.target import (
        DEFAULT_MAX_GAS,
        EthTarget,
        RelaySetProvider,
        SentPacket,
        fees_escrowed,
        fees_owed,
        send_energy,
        withdraw_fees,
    )

# The names below are imported on first use, so that a process which only reads an Ethereum node (a relay validator's
# attestor, over adapters.ethereum.rpc) loads neither eth-account nor eth-abi, eth-utils and pydantic (~18 MB of RSS).
_SUBMODULES = {
    "assets": ("RightInfo", "imported_reputation", "issue_right", "right_show", "rights_list", "send_reputation",
               "send_right", "set_station", "set_transformer", "transformer_show"),
    "errors": ("EthRevertError", "GasCapError", "ReputationError", "RightError", "decode_revert"),
    "rpc": ("EthRpc",),
    "source": ("EthSource",),
    "target": ("DEFAULT_MAX_GAS", "EthTarget", "RelaySetProvider", "SentPacket", "fees_escrowed", "fees_owed",
               "send_energy", "withdraw_fees"),
}
_LAZY = {name: f"adapters.ethereum.{module}" for module, names in _SUBMODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """This package, keeping its functions :func:`source` and :func:`target` when the submodules of the same names
    are first imported (the import system binds a submodule as an attribute of its package; the eager package
    imported them before defining the functions, so the functions won)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("source", "target") and isinstance(value, types.ModuleType):
            return  # the submodule stays in sys.modules, where ``from adapters.ethereum.source import …`` finds it
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "DEFAULT_MAX_GAS",
    "EthRevertError",
    "EthRpc",
    "EthSource",
    "EthTarget",
    "GasCapError",
    "RelaySetProvider",
    "ReputationError",
    "RightError",
    "RightInfo",
    "SentPacket",
    "decode_revert",
    "fees_escrowed",
    "fees_owed",
    "imported_reputation",
    "issue_right",
    "relay_set_from_rpc",
    "right_show",
    "rights_list",
    "send_energy",
    "send_reputation",
    "send_right",
    "set_station",
    "set_transformer",
    "source",
    "target",
    "transformer_show",
    "withdraw_fees",
]


def source(w3_url: str, chain_id: str, bridge_address: str, confirmation_depth: int = 0, *,
           timeout_s: float = 10.0, log_chunk: int = 1000) -> EthSource:
    """The Ethereum park ``chain_id``'s source side: the node at ``w3_url``, the bridge at ``bridge_address``."""
    from adapters.ethereum.rpc import EthRpc
    from adapters.ethereum.source import EthSource

    return EthSource(EthRpc(w3_url, side=chain_id, timeout_s=timeout_s), chain_id, bridge_address,
                     confirmation_depth, log_chunk=log_chunk)


def target(w3_url: str, chain_id: str, bridge_address: str, private_key: bytes | str,
           relay_set_provider: RelaySetProvider | None = None, *, confirmation_depth: int = 0,
           max_gas: int | None = None, timeout_s: float = 10.0, **kw: Any) -> EthTarget:
    """The Ethereum park ``chain_id``'s target side, signing with ``private_key``.

    ``relay_set_provider(set_hash)`` returns the relay validator set with the hash the bridge trusts (sync
    or async); bridge ops pass it as the ``relaySet`` argument. See :func:`relay_set_from_rpc`. ``max_gas``: the
    gas cap of one transaction, :data:`~adapters.ethereum.target.DEFAULT_MAX_GAS` unless given."""
    from adapters.ethereum.rpc import EthRpc
    from adapters.ethereum.target import DEFAULT_MAX_GAS, EthTarget

    if max_gas is None:
        max_gas = DEFAULT_MAX_GAS
    return EthTarget(EthRpc(w3_url, side=chain_id, timeout_s=timeout_s), chain_id, bridge_address, private_key,
                     relay_set_provider, confirmation_depth=confirmation_depth, max_gas=max_gas, **kw)


def relay_set_from_rpc(call: Any) -> RelaySetProvider:
    """A relay-set provider over the relay chain's ``getValidators`` RPC.

    ``call(method, params)`` is a JSON-RPC call to a relay node (e.g. a
    :class:`~adapters.common.rpc.JsonRpcClient`'s ``call``). The provider reads the current set, or, if the
    bridge trusts another one (it is behind a rotation), that set by its hash (``getValidators {hash}``: the
    relay keeps every set it used), so the rotation itself can be submitted; a set the relay never used is
    :class:`~protocol.errors.ValidatorSetMismatchError`."""

    async def provider(set_hash: bytes) -> ValidatorSet:
        vs = wire.validator_set_from_json(await call("getValidators", {}))
        if vs.hash != set_hash:  # the bridge is behind a rotation: the relay keeps every set it used (SPEC §7.7)
            try:
                vs = wire.validator_set_from_json(await call("getValidators", {"hash": set_hash.hex()}))
            except ProtocolError:
                pass
        if vs.hash != set_hash:
            raise ValidatorSetMismatchError("the relay chain's current validator set is not the one the bridge "
                                            "trusts", expected=set_hash.hex(), got=vs.hash.hex())
        return vs

    return provider
