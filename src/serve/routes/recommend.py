"""GET /recommend/{customer_id}: personalised top-k, or trending with the reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from recsys.ids import ID_PATTERN, MAX_ID_LENGTH
from recsys.index.base import ItemFilter
from serve.deps import Model, State
from serve.recommender import rank
from serve.schemas import Recommendations, RecommendedItem

router = APIRouter(tags=["recommendations"])


@router.get(
    "/recommend/{customer_id}",
    response_model=Recommendations,
    responses={
        422: {"description": "A parameter is out of range or malformed"},
        503: {"description": "No model version is live yet"},
    },
)
async def recommend(
    state: State,
    model: Model,
    customer_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
    k: Annotated[int, Query(ge=1, le=50, description="How many items")] = 10,
) -> Recommendations:
    ranked = await rank(
        model, state.redis, customer_id, k, ItemFilter(), state.settings.redis_timeout_s
    )
    return Recommendations(
        customer_id=customer_id,
        source="personalized" if ranked.source == "personalized" else "trending",
        model_version=model.version,
        items=[
            RecommendedItem(article_id=i.article_id, score=i.score, metadata=i.metadata)
            for i in ranked.items
        ],
        applied_event_id=ranked.applied_event_id,
        fallback_reason=ranked.fallback_reason,
    )
