"""What the DPoS park attests about its participants (SPEC.md §2.3 "Reputation"), read from its own state.

Three models, each scored in basis points (0..10000):

``dpos-witness-credit/v1``
    a witness's credit (docs/research.md#seed-003): ``witness/<name>`` ``credit`` scaled from
    ``0..credit_max`` (:mod:`chains.dpos.witnesses`).
``dr-aggregator-reputation/v1`` and ``dr-user-reputation/v1``
    a demand-response node's reputation (docs/research.md#seed-002): ``reputation/<name>`` ``score``
    scaled from ``0..reputation_max``, the model by the node's role (:mod:`chains.dpos.market`).

A ``bridge.send`` of kind ``reputation`` may name the model; without one a witness is attested by its
credit, any other subject by its DR role. The attested ``source_height`` is the height of the block whose
state the score was read from (the send's block): a later attestation always carries a higher height, so
the target keeps the newest (its ``reputation.stale`` rule).
"""

from __future__ import annotations

from chains.common.bridge import AssetError, BridgeHooks, ModelReputationProvider
from chains.common.reputation import SCORE_MAX
from chains.common.state import KVState
from chains.common.tx import BlockContext
from chains.dpos.market import DR_MODELS, MarketParams, reputation_path
from chains.dpos.types import DposParams
from chains.dpos.witnesses import CREDIT_MODEL, witness_path
from protocol.types import ReputationPayload

__all__ = ["MODELS", "dpos_bridge_hooks", "dpos_reputation_provider"]

MODELS = (CREDIT_MODEL, *DR_MODELS.values())
"""The models this park attests."""


def _scaled(value: int, maximum: int) -> int:
    return min(SCORE_MAX, max(0, value) * SCORE_MAX // maximum) if maximum > 0 else 0


def dpos_reputation_provider(params: DposParams, market: MarketParams) -> ModelReputationProvider:
    """The park's :data:`~chains.common.bridge.ModelReputationProvider` over its witness and DR records."""

    def provide(state: KVState, subject: str, model: str | None, ctx: BlockContext) -> ReputationPayload:
        witness = state.get_json(witness_path(subject))
        dr = state.get_json(reputation_path(subject))
        if model is None:
            model = CREDIT_MODEL if witness is not None else DR_MODELS.get(dr["role"]) if dr is not None else None
            if model is None:
                raise AssetError("no witness or DR node of that name here", got=subject)
        if model == CREDIT_MODEL:
            if witness is None:
                raise AssetError("not a witness of this park", expected=CREDIT_MODEL, got=subject)
            score = _scaled(int(witness["credit"]), params.credit_max)
        elif model in DR_MODELS.values():
            if dr is None or DR_MODELS.get(dr["role"]) != model:
                raise AssetError("not a DR node of that role here", expected=model,
                                 got=None if dr is None else DR_MODELS.get(dr["role"]))
            score = _scaled(int(dr["score"]), market.reputation_max)
        else:
            raise AssetError("a model this park does not attest", expected=list(MODELS), got=model)
        return ReputationPayload(subject, score, model, ctx.height)

    return provide


def dpos_bridge_hooks(params: DposParams, market: MarketParams) -> BridgeHooks:
    """The bridge hooks of a DPoS park: default admission (SPEC §2.3), its reputation provider."""
    return BridgeHooks(reputation_models=dpos_reputation_provider(params, market))
