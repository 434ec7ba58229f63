"""GET /recommend/{customer_id}: personalised top-k, or trending with the reason."""

from __future__ import annotations

from fastapi import APIRouter, Request

from recsys.diversity import mmr_for
from serve.deps import app_state, served_model
from serve.params import CustomerId, RecommendQuery, query_parameters
from serve.recommender import Ask, rank
from serve.responses import BAD_INPUT, NOT_LIVE, JsonBody, item_dicts
from serve.schemas import Recommendations

router = APIRouter(tags=["recommendations"])


@router.get(
    "/recommend/{customer_id}",
    response_model=Recommendations,
    responses={**BAD_INPUT, **NOT_LIVE},
    openapi_extra=query_parameters(RecommendQuery),
)
async def recommend(request: Request, customer_id: CustomerId) -> JsonBody:
    """Personalised top-k from the customer's vector, inside the index's filters, never an
    article they bought; trending (with the same rules) for an unknown customer or when
    Redis or the index is down, flagged by `source` and `fallback_reason`."""
    query = RecommendQuery.of(request)
    state = app_state(request)
    model = served_model(state)
    settings = state.settings
    relevance = (
        settings.diversity_lambda if query.diversity_lambda is None else query.diversity_lambda
    )
    ask = Ask(
        k=query.k,
        rules=query.rules(),
        mmr=mmr_for(query.k, relevance),
        explain_top_k=query.explain_top_k if query.explain else None,
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
