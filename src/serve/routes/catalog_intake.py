"""POST /items and POST /items/availability: articles, or whether they may be
recommended, onto the catalog topic, 202 once the broker has every message; each serving
process then applies them to its index (serve.catalog_feed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from opentelemetry.propagate import inject

from recsys.articles import CatalogMessage
from serve.access import ACCESS_RESPONSES, require
from serve.deps import State
from serve.publisher import PublishError
from serve.schemas import ArticlesAccepted, ArticlesIn, AvailabilityIn

router = APIRouter(tags=["items"], dependencies=[require("admin")], responses=ACCESS_RESPONSES)

CATALOG_RESPONSES: dict[int | str, dict[str, str]] = {
    422: {"description": "A bad or missing field (`detail` names it), or a bad list"},
    503: {"description": "The broker did not acknowledge every article; send them again"},
}


@router.post(
    "/items",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ArticlesAccepted,
    responses=CATALOG_RESPONSES,
)
async def upsert_items(body: ArticlesIn, state: State) -> ArticlesAccepted:
    """Add or change 1-1000 articles (fields of the H&M `articles.csv`). Servable within
    seconds: an article with purchases keeps its vector and gets the new metadata; a new
    one is placed by its content vector (`metadata.placed_by: "content"`). An article's
    availability is kept (POST /items/availability changes it)."""
    # One time for the request: a later request's articles are newer everywhere.
    now = datetime.now(UTC)
    return await _publish(state, [CatalogMessage.upsert(a, now) for a in body.root])


@router.post(
    "/items/availability",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ArticlesAccepted,
    responses=CATALOG_RESPONSES,
)
async def set_availability(body: AvailabilityIn, state: State) -> ArticlesAccepted:
    """Mark 1-1000 articles available or not (`[{"article_id": "...", "available":
    false}]`). Within seconds an unavailable article is in no recommendation, similar
    items list or trending list (it stays in purchase histories and explanations); the
    next batch run keeps it so. Marking one the catalogue does not have yet is kept for
    when it arrives."""
    now = datetime.now(UTC)
    return await _publish(state, [CatalogMessage.set_availability(a, now) for a in body.root])


async def _publish(state: State, messages: Sequence[CatalogMessage]) -> ArticlesAccepted:
    topic = state.settings.catalog_topic
    tel = state.telemetry
    with tel.span("kafka.produce", topic=topic, messages=len(messages)):
        headers: dict[str, str] = {}
        inject(headers)
        results = await asyncio.gather(
            *(
                state.publisher.publish(
                    topic, key=m.topic_key, value=m.to_bytes(), headers=list(headers.items())
                )
                for m in messages
            ),
            return_exceptions=True,
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        # Resending is safe: an article's newest message wins everywhere.
        reason = failed[0] if isinstance(failed[0], PublishError) else "unexpected error"
        raise HTTPException(
            503, f"{len(failed)} of {len(messages)} articles not stored, send them again: {reason}"
        )
    for message in messages:
        tel.metrics.articles_accepted.labels(op=message.op).inc()
    return ArticlesAccepted(article_ids=[m.key for m in messages])
