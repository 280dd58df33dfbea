"""A transaction's encodings are computed once, and a signature verified once per process: neither may ever accept
what the uncached code refuses."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from chains.common import tx as tx_mod
from chains.common.state import ChainState, canonical_json
from chains.common.tx import Tx, base_app, create_account
from protocol.crypto import Ed25519Signer
from protocol.errors import SignatureError

ALICE = Ed25519Signer(hashlib.sha256(b"test-only memo alice").digest())
MALLORY = Ed25519Signer(hashlib.sha256(b"test-only memo mallory").digest())


def _tx(nonce: int = 0, amount: int = 5, signer: Ed25519Signer = ALICE) -> Tx:
    return Tx.signed(signer, "memo-chain", "alice", nonce, "transfer",
                     {"to": "bob", "denom": "kWh", "amount_wh": amount})


def test_the_remembered_encodings_are_the_canonical_ones() -> None:
    t = _tx()
    raw = canonical_json(t.to_json())
    assert t.hash() == hashlib.sha256(raw).digest() and t.size() == len(raw)
    decoded = Tx.from_json(t.to_json())  # remembered from the bytes the decoder measured
    assert decoded._memo["hash"] == t.hash() and decoded.size() == t.size()
    assert decoded.sign_bytes() == hashlib.sha256(tx_mod.TX_TAG + canonical_json(t.body())).digest()
    other = dataclasses.replace(t, signature=bytes(64))  # a copy never inherits them
    assert other.hash() == hashlib.sha256(canonical_json(other.to_json())).digest() != t.hash()


def test_a_cached_signature_never_vouches_for_another_key_message_or_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx_mod, "_sig_ok", tx_mod.OrderedDict())
    state = ChainState()
    create_account(state, "alice", ALICE.pubkey)
    create_account(state, "bob", MALLORY.pubkey)
    state.add_balance("alice", "kWh", 100)
    app = base_app("memo-chain")
    good = _tx()
    app.check_tx(state, good)
    app.check_tx(state, good)  # remembered
    assert len(tx_mod._sig_ok) == 1
    forged = dataclasses.replace(_tx(amount=99), signature=good.signature)  # another message, the same signature
    with pytest.raises(SignatureError):
        app.check_tx(state, forged)
    by_mallory = _tx(signer=MALLORY)  # alice's account, mallory's key
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(SignatureError):
            app.check_tx(state, by_mallory)
    assert len(tx_mod._sig_ok) == 1


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tx_mod, "_sig_ok", tx_mod.OrderedDict())
    monkeypatch.setattr(tx_mod, "SIG_CACHE_SIZE", 3)
    for n in range(5):
        t = _tx(nonce=n)
        tx_mod.verify_tx_signature(ALICE.pubkey, t.sign_bytes(), t.signature, what="t")
    assert len(tx_mod._sig_ok) == 3
