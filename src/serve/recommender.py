"""Ranking for one customer: their vector in the index, or trending when there is none."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from recsys import keys
from recsys.index.base import ItemFilter, ScoredItem
from recsys.vectors import Vector, decode
from serve.live_model import ServedModel


@dataclass(frozen=True)
class CustomerState:
    vector: Vector | None
    purchased: list[str]
    last_event_id: str | None


@dataclass(frozen=True)
class Ranked:
    source: str
    items: list[ScoredItem]
    applied_event_id: str | None
    fallback_reason: str | None


async def load_customer(
    client: aioredis.Redis, version: str, customer_id: str, timeout_s: float
) -> CustomerState:
    """One round trip: the vector of the served version, the purchase history, the last event."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.user_vector(version, customer_id))
    pipe.zrange(keys.history(customer_id), 0, -1)
    pipe.get(keys.last_event(customer_id))
    raw_vector, history, last = await asyncio.wait_for(pipe.execute(), timeout=timeout_s)
    return CustomerState(
        vector=decode(raw_vector),
        purchased=[a.decode() for a in history],
        last_event_id=last.decode() if last else None,
    )


async def rank(
    model: ServedModel,
    client: aioredis.Redis,
    customer_id: str,
    k: int,
    rules: ItemFilter,
    timeout_s: float,
) -> Ranked:
    try:
        state = await load_customer(client, model.version, customer_id, timeout_s)
    except (RedisError, TimeoutError, OSError):
        return Ranked("trending", model.trending.top(k, rules), None, "redis_unavailable")
    # What the customer already bought is never recommended back.
    rules = dataclasses.replace(rules, exclude_ids=(*rules.exclude_ids, *state.purchased))
    if state.vector is None:
        reason = "unknown_customer"
        return Ranked("trending", model.trending.top(k, rules), state.last_event_id, reason)
    # The query takes well under a millisecond, so it runs inline on the event loop.
    items = model.index.search(state.vector, k, rules)
    return Ranked("personalized", items, state.last_event_id, None)
