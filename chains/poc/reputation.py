"""What the PoC park attests about its units (SPEC.md §2.3 "Reputation"), read from its own state.

One model, ``poc-farmer-response/v1`` (docs/research.md#seed-000): a unit's response rate in the
ancillary-service market, delivered over awarded kW of its settled awards here, in basis points
(0..10000); ``default_response_ppm`` before its first settled award. A score the unit imported from another
park (``market.import_reputation``) ranks it here but is never attested onwards: a park vouches only for
what it saw. The attested ``source_height`` is the height of the block whose state was read (the send's
block), so a later attestation always carries a higher height.
"""

from __future__ import annotations

from chains.common.bridge import AssetError, BridgeHooks, ReputationProvider
from chains.common.reputation import SCORE_MAX
from chains.common.state import KVState
from chains.common.tx import BlockContext
from chains.poc.market import PocAppParams, farmer_key, own_response_ppm
from protocol.types import ReputationPayload

__all__ = ["MODEL", "poc_bridge_hooks", "poc_reputation_provider"]

MODEL = "poc-farmer-response/v1"
_PPM_PER_BP = 1_000_000 // SCORE_MAX


def poc_reputation_provider(params: PocAppParams) -> ReputationProvider:
    """The park's :data:`~chains.common.bridge.ReputationProvider` over its farmer records."""

    def provide(state: KVState, subject: str, ctx: BlockContext) -> ReputationPayload:
        rec = state.get_json(farmer_key(subject))
        if not isinstance(rec, dict):
            raise AssetError("not a unit (farmer) of this park", expected=MODEL, got=subject)
        return ReputationPayload(subject, own_response_ppm(params, rec) // _PPM_PER_BP, MODEL, ctx.height)

    return provide


def poc_bridge_hooks(params: PocAppParams) -> BridgeHooks:
    """The bridge hooks of a PoC park: default admission (SPEC §2.3), its reputation provider."""
    return BridgeHooks(reputation=poc_reputation_provider(params))
