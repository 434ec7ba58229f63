"""POST /events/purchase: a purchase onto the events topic, 202 once the broker has it."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from opentelemetry.propagate import inject

from recsys.events import Event, new_event_id
from serve.deps import Model, State
from serve.publisher import PublishError
from serve.schemas import PurchaseAccepted, PurchaseIn

router = APIRouter(tags=["events"])


@router.post(
    "/events/purchase",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PurchaseAccepted,
    responses={
        422: {"description": "Malformed body or unknown article_id"},
        503: {"description": "The broker did not acknowledge; retry with the same event_id"},
    },
)
async def post_purchase(body: PurchaseIn, state: State, model: Model) -> PurchaseAccepted:
    if not model.index.retrieve([body.article_id]):
        raise HTTPException(422, f"unknown article_id: {body.article_id}")
    event = Event(
        event_id=body.event_id or new_event_id(),
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
    tel.metrics.purchases.inc()
    return PurchaseAccepted(event_id=event.event_id)
