"""Key files of a deployment: generated on the machine, mode 0600, never logged, never in the repo.

A key file holds one hex-encoded 32-byte secret. Devnet keys are made by ``parkrelay devnet init``
under ``<data_dir>/keys/``; production operators put their own files at the same paths.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from coincurve import PrivateKey

from chains.common.storage import atomic_write
from protocol.crypto import Ed25519Signer, keccak256


class KeyFileError(Exception):
    """A key file is missing, unreadable, or not 32 hex-encoded bytes."""


def read_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file not found: {path} (run `parkrelay devnet init` for a devnet)") from exc
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(f"key file {path} is not hex") from exc
    if len(raw) != 32:
        raise KeyFileError(f"key file {path} must hold 32 bytes, holds {len(raw)}")
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
    return raw


def create_secret(path: Path) -> bytes:
    """Write a fresh random secret to ``path`` (0600); keep an existing one."""
    if path.exists():
        return read_secret(path)
    raw = secrets.token_bytes(32)
    # whole or absent (a temporary file, fsync, hard link): a key torn by a full disk would be read back as a key;
    # if another process created it meanwhile, that one is kept
    if not atomic_write(path, raw.hex() + "\n", mode=0o600, exclusive=True):
        return read_secret(path)
    return raw


def ed25519_signer(path: Path) -> Ed25519Signer:
    return Ed25519Signer(read_secret(path))


def eth_address(secret: bytes) -> bytes:
    """The 20-byte Ethereum address of a secp256k1 secret."""
    pub = PrivateKey(secret).public_key.format(compressed=False)[1:]
    return keccak256(pub)[-20:]
