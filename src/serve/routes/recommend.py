"""GET /recommend/{customer_id}: personalised top-k, or trending with the reason."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from redis.exceptions import RedisError

from recsys.experiments.assignment import Assignment, assign_active
from recsys.experiments.definitions import CONTROL
from recsys.experiments.ledger import Impression, new_recommendation_id
from serve.access import ACCESS_RESPONSES, admit
from serve.deps import AppState, app_state, served_model
from serve.params import CustomerId, RecommendQuery, query_parameters
from serve.recommender import Ask, Blend, Ranked, rank
from serve.responses import BAD_INPUT, NOT_LIVE, JsonBody, item_dicts
from serve.schemas import Recommendations

log = logging.getLogger(__name__)
router = APIRouter(tags=["recommendations"])


@router.get(
    "/recommend/{customer_id}",
    response_model=Recommendations,
    responses={**BAD_INPUT, **NOT_LIVE, **ACCESS_RESPONSES},
    openapi_extra=query_parameters(RecommendQuery),
)
async def recommend(request: Request, customer_id: CustomerId) -> JsonBody:
    """Personalised top-k from the customer's vector, inside the index's filters, never an
    article they bought (unless RECSYS_EXCLUDE_PURCHASED=false), blended with trending for
    a customer who has bought little (`trending_weight`); trending (with the same rules)
    for an unknown customer or when Redis or the index is down, flagged by `source` and
    `fallback_reason`. explain=true needs a key granting read (the explanations name the
    customer's purchases); an impression of a running experiment is recorded for a known
    customer or a keyed call only."""
    query = RecommendQuery.of(request)
    state = app_state(request)
    if query.explain:
        # Explanations name the customer's purchases: a key granting read, whatever the
        # public reads allow.
        await admit(request, "read")
    # The customer's arm of the running experiment, if one runs; its knobs replace the
    # service defaults (a parameter the request names itself still wins).
    assignment = assign_active(state.experiments, customer_id)
    arm = assignment.variant if assignment is not None else CONTROL
    model = served_model(state, arm.model_version)
    relevance = arm.relevance(query.diversity_lambda, state.settings.diversity_lambda)
    ask = Ask(
        k=query.k,
        rules=query.rules(),
        mmr=arm.mmr(query.k, relevance),
        explain_top_k=query.explain_top_k if query.explain else None,
        fallback=arm.fallback_policy or "trending",
        exclude_purchased=state.settings.exclude_purchased,
        blend=Blend.of(state.settings),
    )
    ranked = await rank(model, state.users, customer_id, ask, state.telemetry)
    metrics = state.telemetry.metrics
    metrics.requests.labels(ranked.source).inc()
    if ranked.fallback_reason:
        metrics.fallbacks.labels(ranked.fallback_reason).inc()
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "source": ranked.source,
        "model_version": model.version,
        "diversity_lambda": relevance,
        "items": item_dicts(ranked.items, ranked.explanations),
        "applied_event_id": ranked.applied_event_id,
        "fallback_reason": ranked.fallback_reason,
        "trending_weight": ranked.trending_weight,
        "experiment": None,
        "variant": None,
        "recommendation_id": None,
    }
    if assignment is not None:
        body |= {"experiment": assignment.experiment.name, "variant": assignment.variant.name}
        # An impression is a write: for customers the stack knows, or callers with a key,
        # so invented ids sent by anyone neither skew the counts nor grow Redis.
        if ranked.known or (await admit(request, "public")).keyed:
            body |= await _impression(state, assignment, customer_id, ranked)
    return JsonBody(body)


async def _impression(
    state: AppState, assignment: Assignment, customer_id: str, ranked: Ranked
) -> dict[str, Any]:
    """Record that this list was shown in the experiment (one pipelined write) and name
    it in the response. A list Redis could not record goes out without an id: a purchase
    from it is still credited by customer if any other impression showed the item."""
    experiment, variant = assignment.experiment.name, assignment.variant.name
    shown = [item.article_id for item in ranked.items]
    impression = Impression(new_recommendation_id(), experiment, variant, customer_id, shown)
    recommendation_id: str | None = impression.recommendation_id
    try:
        await state.ledger.record_impression(state.hot_redis, impression)
    except (RedisError, TimeoutError, OSError) as exc:
        log.warning("impression not recorded: %s", exc)
        state.telemetry.metrics.impressions_lost.inc()
        recommendation_id = None
    return {"experiment": experiment, "variant": variant, "recommendation_id": recommendation_id}
