"""ed25519 signatures (SPEC.md §7.3): one verifier, typed errors."""

from __future__ import annotations

import hashlib

import pytest

from protocol.crypto import Ed25519Signer, ed25519_verify
from protocol.errors import SignatureError

SIGNER = Ed25519Signer(hashlib.sha256(b"unit-test-crypto").digest())
MSG = hashlib.sha256(b"message").digest()
SIG = SIGNER.sign(MSG)


def test_sign_and_verify() -> None:
    ed25519_verify(SIGNER.pubkey, MSG, SIG)
    assert SIGNER.sign(MSG) == SIG  # deterministic (RFC 8032)
    assert Ed25519Signer(bytes.fromhex(SIGNER.seed_hex())).pubkey == SIGNER.pubkey


BAD = [
    ("other_message", SIGNER.pubkey, MSG[::-1], SIG, "does not verify"),
    ("other_key", Ed25519Signer(bytes(32)).pubkey, MSG, SIG, "does not verify"),
    ("flipped_bit", SIGNER.pubkey, MSG, bytes([SIG[0] ^ 1]) + SIG[1:], "does not verify"),
    ("zero_signature", SIGNER.pubkey, MSG, bytes(64), "does not verify"),
    ("short_signature", SIGNER.pubkey, MSG, SIG[:63], "malformed"),
    ("long_signature", SIGNER.pubkey, MSG, SIG + b"\x00", "malformed"),
    ("short_key", SIGNER.pubkey[:31], MSG, SIG, "malformed"),
]


@pytest.mark.parametrize(("name", "key", "msg", "sig", "why"), BAD, ids=[b[0] for b in BAD])
def test_bad_signatures(name: str, key: bytes, msg: bytes, sig: bytes, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        ed25519_verify(key, msg, sig)


def test_signer_guards_its_seed() -> None:
    with pytest.raises(ValueError):
        Ed25519Signer(bytes(31))
    assert SIGNER.seed_hex() not in repr(SIGNER)
