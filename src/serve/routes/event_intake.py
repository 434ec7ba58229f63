"""POST /events/purchase and POST /events/{view,click,add_to_cart}: an event onto the
events topic, 202 once the broker has it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, status
from opentelemetry.propagate import inject

from recsys.events import Event, EventType, new_event_id
from serve.access import ACCESS_RESPONSES, require
from serve.deps import Model, State
from serve.publisher import PublishError
from serve.schemas import EventAccepted, EventIn

router = APIRouter(tags=["events"], dependencies=[require("events")], responses=ACCESS_RESPONSES)

# The weaker signals share one parametrised route; purchases keep their own path, so
# their latency, traces and clients stay as they were.
SignalType = Literal["view", "click", "add_to_cart"]

RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"description": "Malformed body, unknown event type or unknown article_id"},
    503: {"description": "The broker did not acknowledge; retry with the same event_id"},
}


@router.post(
    "/events/purchase",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    responses=RESPONSES,
)
async def post_purchase(body: EventIn, state: State, model: Model) -> EventAccepted:
    return await publish_event("purchase", body, state, model)


@router.post(
    "/events/{event_type}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventAccepted,
    responses=RESPONSES,
)
async def post_signal(
    event_type: SignalType, body: EventIn, state: State, model: Model
) -> EventAccepted:
    """A view, click or add-to-cart: it moves the customer's vector by its weight
    (RECSYS_EVENT_WEIGHT_*), but is never history (not excluded, not counted)."""
    return await publish_event(event_type, body, state, model)


async def publish_event(
    event_type: EventType, body: EventIn, state: State, model: Model
) -> EventAccepted:
    if not await model.index.aretrieve([body.article_id]):
        raise HTTPException(422, f"unknown article_id: {body.article_id}")
    event = Event(
        event_id=body.event_id or new_event_id(),
        event_type=event_type,
        customer_id=body.customer_id,
        article_id=body.article_id,
        ts=body.ts or datetime.now(UTC),
        price=body.price,
        recommendation_id=body.recommendation_id,
    )
    tel = state.telemetry
    try:
        with tel.span("kafka.produce", topic=state.settings.events_topic):
            # The trace goes on with the message: the updater continues it.
            headers: dict[str, str] = {}
            inject(headers)
            await state.publisher.publish(
                state.settings.events_topic,
                key=event.customer_id,
                value=event.to_bytes(),
                headers=list(headers.items()),
            )
    except PublishError as exc:
        raise HTTPException(503, f"event not stored, retry with the same event_id: {exc}") from exc
    if event.is_purchase:
        tel.metrics.purchases.inc()
    else:
        tel.metrics.signals.labels(event_type).inc()
    return EventAccepted(event_id=event.event_id)
