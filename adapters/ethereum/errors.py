"""Errors of the Ethereum park as the relayer sees them (chains/ethereum/SPEC.md §E2.3).

Every ``ParkBridge`` revert is a named custom error; :func:`decode_revert` turns its revert data into
the protocol error class of the same meaning, so a redundant relay (``PacketReplay``) surfaces at gas
estimation as :class:`~protocol.errors.ReplayError` and costs nothing. :func:`rpc_error` classifies a
JSON-RPC error answer (a revert, a nonce refusal, an unfunded account, anything else).
"""

from __future__ import annotations

from typing import Any

from eth_abi.abi import decode as abi_decode

from adapters.common.rpc import RemoteError
from adapters.ethereum.abi import artifact_abi, selector
from chains.common.bridge import AssetError
from protocol import errors as perr
from protocol.errors import NonceError, ParkRelayError, ProtocolError, TransportError

__all__ = [
    "BRIDGE_ERRORS",
    "EthRevertError",
    "GasCapError",
    "ReputationError",
    "RightError",
    "TxAlreadyKnownError",
    "decode_revert",
    "known_error_selectors",
    "rpc_error",
]


class EthRevertError(ProtocolError):
    """A revert that is not one of the bridge's protocol errors (a panic, ``Error(string)``, an ERC-20
    error, out of gas, no data). ``name`` is the error's name when known, ``data`` the raw revert data."""

    code = "eth.reverted"

    def __init__(self, message: str, *, name: str = "", data: bytes = b"", **kw: Any) -> None:
        self.name = name
        self.data = data
        super().__init__(message, **kw)


class GasCapError(ProtocolError):
    """The transaction would need more gas than the adapter may spend on one transaction."""

    code = "eth.gas_cap"


class TxAlreadyKnownError(NonceError):
    """The node already holds this very signed transaction (sent before, e.g. by a timed-out attempt)."""


class RightError(AssetError):
    """A charging right that cannot move or be issued as asked (``asset.invalid``, as the Python parks' bridge):
    not live here, a payload other than the recorded one, an id in use, or the park's admission refusing it.
    ``rule`` is the admission rule's code (``capacity.exceeded``…) for an admission refusal, else ``""``."""

    def __init__(self, message: str, *, rule: str = "", **kw: Any) -> None:
        self.rule = rule
        super().__init__(message, **kw)


class ReputationError(AssetError):
    """No score to attest for a subject (``asset.invalid``). An imported score below what the market admits is
    :class:`protocol.errors.ReputationInsufficientError` (``reputation.insufficient``), as on every park."""


BRIDGE_ERRORS: dict[str, tuple[tuple[str, ...], tuple[str, ...], type[ProtocolError]]] = {
    "CodecInvalid": ((), (), perr.CodecError),
    "ProofInvalid": ((), (), perr.InvalidProofError),
    "SignatureInvalid": (("uint256",), ("index",), perr.SignatureError),
    "QuorumNotReached": (("uint256", "uint256"), ("signedPower", "totalPower"), perr.QuorumError),
    "ValidatorSetMismatch": (("bytes32", "bytes32"), ("expected", "got"), perr.ValidatorSetMismatchError),
    "DuplicateValidatorKey": (("uint256", "bytes32"), ("index", "key"), perr.DuplicateValidatorError),
    "DuplicateValidatorAddress": (("uint256", "address"), ("index", "addr"), perr.DuplicateValidatorError),
    "RelayTrustExpired": (("uint256", "uint256"), ("expiresAtMs", "blockTimeMs"), perr.ClientExpiredError),
    "RelayTrustLive": (("uint256", "uint256"), ("expiresAtMs", "blockTimeMs"), perr.IllegalTransitionError),
    "CertificateStale": (("uint256", "uint256"), ("oldestMs", "headerTimeMs"), perr.CertificateStaleError),
    "PacketReplay": (("uint256", "uint256"), ("held", "got"), perr.ReplayError),
    "PacketTimeout": (("uint256", "uint256"), ("timeoutMs", "blockTimeMs"), perr.TimeoutExpiredError),
    "TimeoutAfterSlotStart": (("uint64", "uint64"), ("timeoutMs", "slotStartMs"), perr.TimeoutExpiredError),
    "WrongChain": (("string", "string"), ("expected", "got"), perr.WrongChainError),
    "LaneInvalid": (("string", "string"), ("counterparty", "lane"), perr.LaneError),
    "LaneOverCapacity": (("uint256", "uint256"), ("amount", "capacity"), perr.OverCapacityError),
    "InsufficientFunds": (("uint256", "uint256"), ("have", "need"), perr.InsufficientFundsError),
    "Unauthorized": (("address", "address"), ("expected", "got"), perr.AuthorizationError),
    "AllowanceTooLow": (("uint256", "uint256"), ("allowed", "need"), perr.AuthorizationError),
    "ReceiverRefused": (("address",), ("to",), perr.AuthorizationError),
    "RightUnavailable": (("uint256", "uint8"), ("tokenId", "state"), RightError),
    "RightPayloadMismatch": (("bytes32", "bytes32"), ("expected", "got"), RightError),
    "RightExists": (("uint256",), ("tokenId",), RightError),
    "AdmissionRefused": (("string", "uint256", "uint256"), ("code", "expected", "got"), RightError),
    "ReputationUnknown": (("string",), ("subject",), ReputationError),
    # the same refusal as the Python parks' markets (chains/common/reputation.held_reputation)
    "ReputationTooLow": (("uint256", "uint256"), ("minimum", "score"), perr.ReputationInsufficientError),
    "RoundTiming": (("uint256", "uint256", "uint256"), ("roundId", "closesAtMs", "blockTimeMs"),
                    perr.IllegalTransitionError),
    "RoundState": (("uint256", "uint8", "uint8"), ("roundId", "expected", "got"), perr.IllegalTransitionError),
}
"""SPEC §E2.3: custom error name → (argument types, argument names, protocol error class). Where an error has an
expected and a got, the decoded error carries them as ``expected``/``got``."""

_EXPECTED_GOT: dict[str, tuple[int, int]] = {
    "ValidatorSetMismatch": (0, 1), "PacketReplay": (0, 1), "PacketTimeout": (0, 1), "TimeoutAfterSlotStart": (1, 0),
    "WrongChain": (0, 1), "LaneOverCapacity": (1, 0), "InsufficientFunds": (1, 0), "Unauthorized": (0, 1),
    "AllowanceTooLow": (1, 0), "RightPayloadMismatch": (0, 1), "AdmissionRefused": (1, 2), "ReputationTooLow": (0, 1),
    "RoundTiming": (1, 2), "RoundState": (1, 2), "RelayTrustExpired": (0, 1), "RelayTrustLive": (0, 1),
    "CertificateStale": (0, 1),
}
"""Which arguments are the expected and the got value (index pairs)."""

_ERROR_STRING = selector("Error", ("string",))
_PANIC = selector("Panic", ("uint256",))


def _abi_errors() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """Custom errors declared in the compiled artifacts (bridge, tokens), by selector."""
    out: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for contract in ("ParkBridge", "EnergyToken", "VoucherToken", "EnergyApp", "ChargingRights", "ReputationApp",
                     "DeliveryRecord", "EnergyMarket"):
        for item in artifact_abi(contract) or []:
            if item.get("type") == "error":
                types = tuple(_abi_type(i) for i in item.get("inputs", []))
                out[selector(item["name"], types)] = (item["name"], types)
    return out


def _abi_type(item: dict[str, Any]) -> str:
    t = str(item["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item.get("components", [])) + ")" + t[len("tuple"):]
    return t


_SELECTORS: dict[bytes, tuple[str, tuple[str, ...]]] | None = None


def known_error_selectors() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """Selector → (name, argument types) of every error the adapter can name: the artifacts' custom errors
    and SPEC §E2.3's (the spec's win: they fix the protocol meaning)."""
    global _SELECTORS
    if _SELECTORS is None:
        table = _abi_errors()
        for name, (types, _, _) in BRIDGE_ERRORS.items():
            table[selector(name, types)] = (name, types)
        _SELECTORS = table
    return _SELECTORS


def decode_revert(data: bytes, *, context: str = "") -> ProtocolError:
    """The protocol error that revert ``data`` names (SPEC §E2.3), or :class:`EthRevertError` for others."""
    where = f"{context}: " if context else ""
    sel, body = data[:4], data[4:]
    if len(data) < 4:
        return EthRevertError(f"{where}reverted without error data", data=data)
    if sel == _ERROR_STRING:
        try:
            (reason,) = abi_decode(["string"], body)
        except Exception:  # garbage after the selector: still a revert, reported raw
            reason = body.hex()
        return EthRevertError(f"{where}reverted: {reason}", name="Error", data=data)
    if sel == _PANIC:
        try:
            (code,) = abi_decode(["uint256"], body)
            what = f"0x{code:02x}"
        except Exception:
            what = body.hex()
        return EthRevertError(f"{where}panic {what}", name="Panic", data=data)
    known = known_error_selectors().get(sel)
    if known is None:
        return EthRevertError(f"{where}reverted with unknown error 0x{sel.hex()}", data=data)
    name, types = known
    try:
        values = tuple(abi_decode(list(types), body)) if types else ()
    except Exception:
        values = (body.hex(),)
    spec = BRIDGE_ERRORS.get(name)
    if spec is None:
        return EthRevertError(f"{where}reverted with {name}{values}", name=name, data=data)
    _, arg_names, cls = spec
    if name == "QuorumNotReached" and len(values) == 2:
        return cls(f"{where}commit signed by at most 2/3 of the voting power ({name})",
                   expected=f"> {2 * values[1] // 3}", got=values[0])
    if name == "SignatureInvalid" and values:
        return cls(f"{where}invalid signature ({name})", got=values[0])
    shown = tuple(f"0x{v.hex()}" if isinstance(v, bytes) else v for v in values)
    detail = ", ".join(f"{n}={v}" for n, v in zip(arg_names, shown, strict=False))
    message = f"{where}{name}" + (f"({detail})" if detail else "")
    kw: dict[str, Any] = {}
    pair = _EXPECTED_GOT.get(name)
    if pair is not None and len(shown) > max(pair):
        kw = {"expected": shown[pair[0]], "got": shown[pair[1]]}
    if name == "AdmissionRefused" and values:
        return RightError(message, rule=str(values[0]), **kw)
    return cls(message, **kw)


_NONCE_MESSAGES = ("nonce too low", "nonce too high", "invalid nonce", "replacement transaction underpriced",
                   "replacement fee too low", "nonce has already been used")
_MISSING_BLOCK_MESSAGES = ("blockoutofrange", "block out of range", "header not found", "unknown block",
                          "block not found", "resource not found")
_KNOWN_MESSAGES = ("already known", "already imported", "known transaction")


def _revert_data(err: dict[str, Any]) -> bytes | None:
    data = err.get("data")
    if isinstance(data, dict):  # some nodes nest it: {"data": {"data": "0x..", "message": ..}}
        data = data.get("data") or data.get("result")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def rpc_error(method: str, err: Any, *, side: str) -> ParkRelayError:
    """Classify the ``error`` member of a JSON-RPC answer of ``side``'s node to ``method``."""
    if not isinstance(err, dict):
        return TransportError(f"{method}: malformed error answer {err!r}", retryable=True, side=side)
    code = err.get("code")
    message = str(err.get("message", ""))
    low = message.lower()
    data = _revert_data(err)
    if code == 3 or "revert" in low:
        return decode_revert(data or b"", context=f"{side}: {method}")
    if any(m in low for m in _KNOWN_MESSAGES):
        return TxAlreadyKnownError(f"{side}: {method}: {message}")
    if any(m in low for m in _NONCE_MESSAGES):
        return NonceError(f"{side}: {method}: {message}")
    if "insufficient funds" in low:
        return perr.InsufficientFundsError(f"{side}: {method}: the sending account cannot pay: {message}")
    if "gas required exceeds" in low or "out of gas" in low or "intrinsic gas too low" in low:
        return GasCapError(f"{side}: {method}: {message}")
    if any(m in low for m in _MISSING_BLOCK_MESSAGES):
        # a height past the node's head (not yet there) or below what it keeps: the caller asks again later
        return TransportError(f"{method}: the node has no such block: {message}", retryable=True, side=side)
    if code in (-32005, 429) or "rate limit" in low or "limit exceeded" in low:
        return TransportError(f"{method}: rate limited: {message}", retryable=True, side=side)
    return RemoteError(str(code), f"{side}: {method}: {message}")
