"""GET /recommend/{customer_id}: personalised top-k, or trending with the reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from recsys.diversity import mmr_for
from serve.deps import Model, State
from serve.params import CustomerId, ItemRules, K
from serve.recommender import Ask, rank
from serve.responses import BAD_INPUT, NOT_LIVE, JsonBody, item_dicts
from serve.schemas import Recommendations

router = APIRouter(tags=["recommendations"])


@router.get(
    "/recommend/{customer_id}",
    response_model=Recommendations,
    responses={**BAD_INPUT, **NOT_LIVE},
)
async def recommend(
    state: State,
    model: Model,
    customer_id: CustomerId,
    rules: ItemRules,
    k: K = 10,
    explain: Annotated[
        bool, Query(description="Say which recent purchases led to each item")
    ] = False,
    explain_top_k: Annotated[
        int, Query(ge=1, le=10, description="Purchases per explanation (1-10)")
    ] = 3,
    diversity_lambda: Annotated[
        float | None,
        Query(
            ge=0.0,
            le=1.0,
            description="MMR trade-off: 1 is pure relevance, 0 pure diversity; "
            "default RECSYS_DIVERSITY_LAMBDA",
        ),
    ] = None,
) -> JsonBody:
    """Personalised top-k from the customer's vector, inside the index's filters, never an
    article they bought; trending (with the same rules) for an unknown customer or when
    Redis or the index is down, flagged by `source` and `fallback_reason`."""
    relevance = state.settings.diversity_lambda if diversity_lambda is None else diversity_lambda
    ask = Ask(
        k=k,
        rules=rules,
        mmr=mmr_for(k, relevance),
        explain_top_k=explain_top_k if explain else None,
    )
    ranked = await rank(model, state.hot_redis, customer_id, ask, state.telemetry)
    metrics = state.telemetry.metrics
    metrics.requests.labels(ranked.source).inc()
    if ranked.fallback_reason:
        metrics.fallbacks.labels(ranked.fallback_reason).inc()
    return JsonBody(
        {
            "customer_id": customer_id,
            "source": ranked.source,
            "model_version": model.version,
            "diversity_lambda": relevance,
            "items": item_dicts(ranked.items, ranked.explanations),
            "applied_event_id": ranked.applied_event_id,
            "fallback_reason": ranked.fallback_reason,
        }
    )
