"""A substitute PoC client trusting a header at a height (SPEC.md §8.8): its checkpoint from the park's headers, and
the substitute following the chain from there."""

from __future__ import annotations

import pytest

from chains.poc.consensus import ProofVerifier
from chains.poc.errors import ProofOfSpaceError
from chains.poc.light_client import PocLightClient, checkpoint_from_headers
from chains.poc.testing import FarmedChain
from protocol.errors import CodecError
from protocol.types import ClientId


def test_a_checkpoint_is_the_context_the_chain_has_at_that_height(chain: FarmedChain, verifier: ProofVerifier) -> None:
    w = chain.params.retarget_window
    trusted = 30
    headers = chain.headers[trusted - 1 - w:trusted]  # heights trusted - w .. trusted
    assert checkpoint_from_headers(chain.params, headers, verifier) == chain.contexts[trusted - 1]
    # more headers than the window changes nothing
    assert checkpoint_from_headers(chain.params, chain.headers[:trusted], verifier) == chain.contexts[trusted - 1]


def test_a_substitute_follows_the_chain_from_its_trusted_height(chain: FarmedChain, verifier: ProofVerifier) -> None:
    trusted = 25
    cp = checkpoint_from_headers(chain.params, chain.headers[:trusted], verifier)
    args = {**chain.client_args(), "checkpoint": cp.to_json(), "client_params": {"finality_window_ms": 0}}
    client = PocLightClient(client_id=ClientId("poc-7"), verifier=verifier, **args)  # type: ignore[arg-type]
    assert client.final_height == trusted
    for h in chain.headers[trusted:]:
        client.process_header(h, now_ms=h.timestamp_ms)
    assert client.final_height == len(chain.headers) - chain.confirmation_depth


def test_malformed_checkpoint_inputs_are_refused(chain: FarmedChain, verifier: ProofVerifier) -> None:
    with pytest.raises(CodecError):
        checkpoint_from_headers(chain.params, [], verifier)
    with pytest.raises(CodecError):  # a gap
        checkpoint_from_headers(chain.params, [*chain.headers[:10], *chain.headers[11:20]], verifier)
    with pytest.raises(CodecError):  # part of the retarget window missing
        checkpoint_from_headers(chain.params, chain.headers[25:30], verifier)
    with pytest.raises(ProofOfSpaceError):  # the trusted header's proof must verify (its quality feeds the next one)
        checkpoint_from_headers(chain.params, chain.headers[:20], lambda *a: None)
