"""Pinned results of phase-2 verification (issue 16): the speed-ups must not change one byte of state or events.

The scenario is ``bench/relay_verify.py``'s at a small size (deterministic keys, packets, proofs and signatures):
the relay state's root after every block and a digest of every block's events were recorded before the
issue-16 optimisations and must stay exactly these. A forged proof in the middle of a batch must raise the same
typed error, with the same computed root in it, as before.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.relay_verify import build
from chains.common.state import ChainState
from chains.common.tx import Tx
from protocol.errors import InvalidProofError
from relay.chain.state_machine import RelayStateMachine
from relay.chain.state_machine.keys import PRUNE_VERIFIED_KEY
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE, fixed_signer

ROOTS = [  # re-pinned once when genesis started writing the bond records (SPEC §6.9); the events are unchanged
    "dcefca777e23a534d915859768ce2770243b53b0bb67f948cd3e53d84291e1df",
    "3dcfb06e8fddc425c6782ef6c8c4bb4e184fc456314eaa4d7e140dd0508a9176",
    "1bdc28cf1fd0603d421f2f7ce9c542e0bc87513796d763cfd1fc1c317bdbbcce",
    "706125fe1ef7f7a735b055c365ffb9a21a4745bcb58a2ec5c98130a124d858c2",
    "3237ed207034e62b7366afa0d7bb86570e18dac8eccf196312adfe92c1f907f8",
]
EVENTS = [
    "a20cbe77201c494cad7331bdb0f0990ad598e70fb0e90f5024ce5a909631dcb2",
    "944a4924e9b0ee28d4509629a0ff3dbc6c0c773303c07274ed64da976bf7ecd1",
    "54733392d669de5bcc02e9e01eef6ec6037b56b6972374e120e120fd7664389a",
    "6da7d5d330a0c73d71cc5ec7dc0befc17d8231f1ea608c2aa555e80dd1edded4",
    "361b9054021ba043c4dc4588d4dd16d4660ea6b6ed4d3d9ab8653443e8462bbe",
]


def _run(packets: int = 250, batch: int = 50) -> tuple[list[str], list[str]]:
    _, genesis, txs, ctxs = build(packets, batch, park_keys=3_000, relay_keys=3_000)
    sm = RelayStateMachine("relay", [SINGLE_SIGNER_TYPE])
    state = ChainState(genesis)
    state.delete(PRUNE_VERIFIED_KEY)  # the pins predate this genesis record; phase 2 never reads it
    roots, digests = [], []
    for tx, ctx in zip(txs, ctxs, strict=True):
        events = sm.execute_tx(state, tx, ctx)
        roots.append(state.root.hex())
        digests.append(hashlib.sha256(json.dumps(events, sort_keys=True).encode()).hexdigest())
    return roots, digests


def test_roots_and_events_are_pinned() -> None:
    roots, digests = _run()
    assert roots == ROOTS
    assert digests == EVENTS


@pytest.mark.parametrize(("at", "sibling"), [(0, 3), (17, 3), (49, 3), (17, -1), (30, 0)])
def test_a_forged_proof_mid_batch_fails_as_before(at: int, sibling: int) -> None:
    _, genesis, txs, ctxs = build(50, 50, park_keys=3_000, relay_keys=3_000)
    tx = txs[0]
    args = json.loads(json.dumps(tx.args))
    proof = bytearray(bytes.fromhex(args["items"][at]["proof"]))
    n = int.from_bytes(proof[:2], "big")
    proof[2 + 32 * (sibling % n) + 7] ^= 1  # a sibling near the top (shared with other paths) or the bottom flipped
    args["items"][at]["proof"] = proof.hex()
    forged = Tx.signed(fixed_signer("relayer/bench"), "relay", "relayer", 0, tx.op, args)
    sm = RelayStateMachine("relay", [SINGLE_SIGNER_TYPE])
    state = ChainState(genesis)
    root = state.root
    with pytest.raises(InvalidProofError) as err:
        sm.execute_tx(state, forged, ctxs[0])
    assert state.root == root
    assert str(err.value) == ("[proof.invalid] membership proof does not reach the root "
                              f"(expected '{HEADER_ROOT}', got '{FORGED[at, sibling]}')")


HEADER_ROOT = "f3bbd054d7fc590c018808d812a38a0064d5f866cc4bcc5996e1b9050c1e315d"
FORGED: dict[tuple[int, int], str] = {  # the root each forged proof computes
    (0, 3): "ac1340eca6d881b4fa4e5253dea2debfb58e7a0aee8e747bf249af7f27d7cb7a",
    (17, 3): "68afea5500911f61eac2fc0ebbea390afabbf49ac85a5b0e4f2526eef906b7bd",
    (49, 3): "ef6d6a0f4457e4f2328637d4d3be33a8057bc8f8d139e1c9e89eae1c6b16018f",
    (17, -1): "d493d082caf8c6d60ea8387a0c338d5a97f1ed442d1506ac10fae004a7fdfbde",
    (30, 0): "579b84a2a5de433d7c53c60f10495b69ca18d78027caec9a2135858906f1b944",
}
