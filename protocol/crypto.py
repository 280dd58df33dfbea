"""Signature primitives shared by every verifier (SPEC.md §7): ed25519 via libsodium (PyNaCl); and keccak-256
(pycryptodome), Ethereum's hash, for addresses and the EVM park's proofs.

One verifier only: consensus code must never mix ed25519 implementations with different rules.
"""

from __future__ import annotations

from functools import lru_cache

from Crypto.Hash import keccak as _keccak
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from protocol.errors import SignatureError

__all__ = ["Ed25519Signer", "ed25519_verify", "keccak256"]


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (the original Keccak padding, not SHA3-256)."""
    return _keccak.new(data=data, digest_bits=256).digest()


@lru_cache(maxsize=4096)
def _verify_key(pubkey: bytes) -> VerifyKey:
    return VerifyKey(pubkey)


def ed25519_verify(pubkey: bytes, message: bytes, signature: bytes, *, what: str = "signature") -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ``pubkey``'s ed25519 signature of ``message``."""
    if len(pubkey) != 32 or len(signature) != 64:
        raise SignatureError(f"{what}: malformed key or signature", expected=(32, 64),
                             got=(len(pubkey), len(signature)))
    try:
        _verify_key(bytes(pubkey)).verify(message, signature)
    except (BadSignatureError, ValueError) as exc:
        raise SignatureError(f"{what} does not verify", got=pubkey.hex()) from exc


class Ed25519Signer:
    """An ed25519 key pair. The seed never leaves this object except through :meth:`seed_hex`."""

    __slots__ = ("_sk", "pubkey")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an ed25519 seed is 32 bytes")
        self._sk = SigningKey(seed)
        self.pubkey: bytes = bytes(self._sk.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message).signature

    def seed_hex(self) -> str:
        """The secret seed, for writing to a key file with mode 0600. Never log it."""
        return bytes(self._sk).hex()

    def __repr__(self) -> str:  # keys never appear in logs
        return f"Ed25519Signer(pubkey={self.pubkey.hex()[:16]}…)"
