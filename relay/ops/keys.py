"""Key files of a deployment: generated on the machine, mode 0600, never logged, never in the repo.

A key file holds one hex-encoded 32-byte secret. Devnet keys are made by ``parkrelay devnet init``
under ``<data_dir>/keys/``; production operators put their own files at the same paths.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from coincurve import PrivateKey
from eth_utils import keccak

from protocol.crypto import Ed25519Signer


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
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex() + "\n")
    return raw


def ed25519_signer(path: Path) -> Ed25519Signer:
    return Ed25519Signer(read_secret(path))


def eth_address(secret: bytes) -> bytes:
    """The 20-byte Ethereum address of a secp256k1 secret."""
    pub = PrivateKey(secret).public_key.format(compressed=False)[1:]
    return keccak(pub)[-20:]
