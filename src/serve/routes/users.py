"""GET /users/{customer_id}/profile: purchase counts, recent purchases, favourite categories."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from redis.exceptions import RedisError

from recsys.erasure import erase_customer
from serve.access import ACCESS_RESPONSES, require
from serve.actor import acting_key
from serve.deps import Model, State
from serve.params import CustomerId
from serve.responses import BAD_INPUT, NOT_LIVE
from serve.schemas import CategoryShare, Erasure, ErrorBody, Profile, PurchaseRecord

router = APIRouter(tags=["users"])


def _when(raw: bytes | str | float | None) -> datetime | None:
    return None if raw is None else datetime.fromtimestamp(float(raw), tz=UTC)


def _shares(counts: Counter[str], top: int) -> list[CategoryShare]:
    total = sum(counts.values())
    return [
        CategoryShare(name=name, count=count, percent=100.0 * count / total)
        for name, count in counts.most_common(top)
    ]


@router.get(
    "/users/{customer_id}/profile",
    # A customer's purchases: personal data, for keys granting read only.
    dependencies=[require("read")],
    response_model=Profile,
    responses={
        404: {"model": ErrorBody, "description": "No purchase of this customer is known"},
        **BAD_INPUT,
        **NOT_LIVE,
        **ACCESS_RESPONSES,
    },
)
async def profile(
    state: State,
    model: Model,
    customer_id: CustomerId,
    recent_limit: Annotated[int, Query(ge=1, le=50, description="Recent purchases (1-50)")] = 10,
    top_categories: Annotated[
        int, Query(ge=1, le=10, description="Product groups and types to list (1-10)")
    ] = 5,
) -> Profile:
    """Counts as the live model version knows them (the updater keeps them current); the
    category shares are over the customer's most recent distinct purchases."""
    tel = state.telemetry
    tel.metrics.profiles.inc()
    try:
        with tel.span("redis.load_profile"), tel.redis("load_profile"):
            bought, counts = await state.users.history_and_profile(model.version, customer_id)
    except (RedisError, TimeoutError, OSError) as exc:
        raise HTTPException(503, "profiles are unavailable: Redis does not answer") from exc
    if not counts and not bought:
        raise HTTPException(404, f"no purchase known for customer_id: {customer_id}")
    with tel.span("index.retrieve"), tel.timer(tel.metrics.retrieve_seconds):
        metadata = await model.index.aretrieve([a for a, _ in bought])
    groups: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for article_id, _ in bought:
        fields = metadata.get(article_id, {})
        if fields.get("product_group_name"):
            groups[str(fields["product_group_name"])] += 1
        if fields.get("product_type_name"):
            types[str(fields["product_type_name"])] += 1
    last_ts = bought[0][1] if bought else None
    return Profile(
        customer_id=customer_id,
        model_version=model.version,
        total_purchases=int(counts.get("purchases", len(bought))),
        first_purchase=_when(counts.get("first_ts", bought[-1][1] if bought else None)),
        last_purchase=_when(counts.get("last_ts", last_ts)),
        recent_purchases=[
            PurchaseRecord(
                article_id=a,
                purchased_at=_when(ts) or datetime.now(UTC),
                metadata=metadata.get(a, {}),
            )
            for a, ts in bought[:recent_limit]
        ],
        top_product_groups=_shares(groups, top_categories),
        top_product_types=_shares(types, top_categories),
        categories_basis=(
            f"the customer's {len(bought)} most recent distinct purchases "
            f"(at most {state.settings.history_max_items} are kept)"
        ),
    )


@router.delete(
    "/users/{customer_id}",
    dependencies=[require("admin")],
    response_model=Erasure,
    responses={
        **BAD_INPUT,
        **ACCESS_RESPONSES,
        503: {"model": ErrorBody, "description": "Redis is down"},
    },
)
async def erase_user(state: State, customer_id: CustomerId, request: Request) -> Erasure:
    """Forget the customer: their vectors (every version), history and profile in Redis,
    their rows in every Delta table and model factors file, and an erasure record so the
    next batch run, a promotion replay or a redelivered event cannot bring them back.
    What the Kafka topic still holds until its retention expires: docs/erasure.md."""
    actor = await acting_key(request)
    try:
        report = await asyncio.to_thread(
            partial(erase_customer, actor=actor),
            state.settings,
            state.user_store,
            customer_id,
        )
    except RedisError as exc:
        raise HTTPException(503, f"erasure not done, retry: {exc}") from exc
    state.telemetry.metrics.erasures.inc()
    return Erasure(**dataclasses.asdict(report))
