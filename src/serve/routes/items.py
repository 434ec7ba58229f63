"""GET /items/{article_id}/similar and GET /popular: item-centred lists."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, HTTPException, Request

from serve.deps import app_state, served_model
from serve.params import ArticleId, ListQuery, query_parameters
from serve.responses import BAD_INPUT, NOT_LIVE, JsonBody, item_dicts
from serve.schemas import ErrorBody, Popular, SimilarItems

router = APIRouter(tags=["items"])


@router.get(
    "/items/{article_id}/similar",
    response_model=SimilarItems,
    responses={
        404: {"model": ErrorBody, "description": "Unknown article"},
        **BAD_INPUT,
        **NOT_LIVE,
    },
    openapi_extra=query_parameters(ListQuery),
)
async def similar(request: Request, article_id: ArticleId) -> JsonBody:
    """The items whose vectors are nearest the article's (the article itself excluded),
    with the same filters and exclusions as /recommend."""
    query = ListQuery.of(request)
    state = app_state(request)
    model = served_model(state)
    rules, k = query.rules(), query.k
    tel = state.telemetry
    tel.metrics.similar.inc()
    with tel.span("index.retrieve"), tel.timer(tel.metrics.retrieve_seconds):
        vector = (await model.index.avectors([article_id])).get(article_id)
    if vector is None:
        raise HTTPException(404, f"unknown article_id: {article_id}")
    rules = dataclasses.replace(rules, exclude_ids=(*rules.exclude_ids, article_id))
    with tel.span("index.search", k=k), tel.timer(tel.metrics.search_seconds):
        items = await model.index.asearch(vector, k, rules)
    return JsonBody(
        {"article_id": article_id, "model_version": model.version, "items": item_dicts(items)}
    )


@router.get(
    "/popular",
    response_model=Popular,
    responses={**BAD_INPUT, **NOT_LIVE},
    openapi_extra=query_parameters(ListQuery),
)
async def popular(request: Request) -> JsonBody:
    """Trending (time-decayed popularity) with the same filters and exclusions."""
    query = ListQuery.of(request)
    model = served_model(app_state(request))
    items = item_dicts(model.popular(query.k, query.rules()))
    return JsonBody({"source": "trending", "model_version": model.version, "items": items})
