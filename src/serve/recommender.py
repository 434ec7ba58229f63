"""Ranking for one customer: their vector in the index (with the request's rules, MMR and
explanations), blended with trending when they have bought little (recsys.blend), or
trending when there is no vector."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
from redis.exceptions import RedisError

from recsys.blend import TrendingSource, blend_scores, blends
from recsys.diversity import intra_list_diversity
from recsys.experiments.definitions import FallbackPolicy
from recsys.index.base import ItemFilter, Mmr, ScoredItem
from recsys.settings import Settings
from recsys.user_store import CustomerState, ServingUserStore
from recsys.vectors import Vector
from serve.explain import Contribution, explain
from serve.live_model import ServedModel
from serve.schemas import Source
from serve.telemetry import Telemetry

log = logging.getLogger(__name__)

# Explanations compare with the customer's most recent purchases, up to this many.
EXPLAIN_RECENT = 20
# A blend ranks the union of the vector's and trending's top lists of this many times k
# (at least BLEND_POOL_MIN each): the blend's own top k lies in it unless an article is
# far down both lists (tests/serve/test_recommend_blend.py holds it to the blend of the
# whole catalogue). Each pooled article is a payload the index decodes: at 5x (50) a
# blended request took 0.60x the plain one's throughput in `recsys bench serve`.
BLEND_POOL = 2
BLEND_POOL_MIN = 20


@dataclass(frozen=True)
class Blend:
    """RECSYS_BLEND_*: a customer with a vector and at most max_purchases distinct
    purchases gets the vector's scores blended with trending's at this weight."""

    weight: float
    max_purchases: int
    source: TrendingSource

    @classmethod
    def of(cls, settings: Settings) -> Blend | None:
        """The settings' blend; None when its weight is 0."""
        if settings.blend_trending_weight == 0:
            return None
        return cls(
            settings.blend_trending_weight, settings.blend_max_purchases, settings.blend_trending
        )


@dataclass(frozen=True)
class Ask:
    """What the request wants."""

    k: int
    rules: ItemFilter
    mmr: Mmr | None = None
    explain_top_k: int | None = None  # None: no explanations
    fallback: FallbackPolicy = "trending"  # what a customer with no vector gets
    exclude_purchased: bool = True  # RECSYS_EXCLUDE_PURCHASED
    blend: Blend | None = None  # None: the vector alone, whatever the history


@dataclass(frozen=True)
class Ranked:
    source: Source
    items: list[ScoredItem]
    applied_event_id: str | None
    fallback_reason: str | None
    explanations: dict[str, list[Contribution]] | None = None
    trending_weight: float | None = None  # the blend's, when one ranked the items
    # The stack knows the customer (a vector or a purchase history): from the same lookup.
    known: bool = False


async def load_customer(
    users: ServingUserStore, version: str, customer_id: str, tel: Telemetry
) -> CustomerState:
    """One round trip: the vector of the served version, the purchase history (newest
    first), the last applied event."""
    with tel.span("redis.load_customer"), tel.redis("load_customer"):
        return await users.customer_state(version, customer_id)


def _count_rules(tel: Telemetry, rules: ItemFilter) -> None:
    for name, values in (
        ("product_group", rules.product_groups),
        ("product_type", rules.product_types),
        ("exclude_ids", rules.exclude_ids),
        ("exclude_groups", rules.exclude_groups),
        ("exclude_types", rules.exclude_types),
    ):
        if values:
            tel.metrics.filters.labels(name).inc()
    if rules.exclude_ids:  # a metric update is a lock and a write to a shared file
        tel.metrics.excluded_explicit.inc(len(rules.exclude_ids))


async def search(
    model: ServedModel, vector: Vector, ask: Ask, rules: ItemFilter, tel: Telemetry
) -> list[ScoredItem]:
    """The index query (MMR when asked), timed and traced. Vectors come back only when
    something uses them: explanations, and the diversity score, which is measured on a
    sample of the lists (hot-path work for a metric: ~50 µs of an MMR request under
    load, with the vectors it needs)."""
    name = "index.mmr" if ask.mmr is not None else "index.search"
    measure = tel.sample_diversity()
    with_vectors = measure or ask.explain_top_k is not None
    with tel.span(name, k=ask.k), tel.timer(tel.metrics.search_seconds):
        started = time.perf_counter()
        items = await model.index.asearch(
            vector, ask.k, rules, mmr=ask.mmr, with_vectors=with_vectors
        )
        if ask.mmr is not None:
            tel.metrics.mmr.inc()
            tel.metrics.mmr_seconds.observe(time.perf_counter() - started)
    if measure:
        diversity = intra_list_diversity([i.vector for i in items if i.vector is not None])
        if diversity is not None:
            tel.metrics.diversity.observe(diversity)
    return items


async def explain_items(
    model: ServedModel, items: list[ScoredItem], purchased: list[str], top_k: int, tel: Telemetry
) -> dict[str, list[Contribution]]:
    tel.metrics.explains.inc()
    with tel.span("explain"), tel.timer(tel.metrics.explain_seconds):
        recent = purchased[:EXPLAIN_RECENT]
        with tel.timer(tel.metrics.retrieve_seconds):
            vectors = await model.index.avectors(recent)
        bought = [(a, vectors[a]) for a in recent if a in vectors]
        recommended = {i.article_id: i.vector for i in items if i.vector is not None}
        return explain(recommended, bought, top_k)


async def _trending_rules(
    model: ServedModel, blend: Blend, purchased: list[str], rules: ItemFilter
) -> ItemFilter | None:
    """The rules of the blend's trending side: the request's, or for the group source
    narrowed to the product groups the customer bought from (within the request's own
    groups when it names some); None when no group is left."""
    if blend.source == "overall":
        return rules
    payloads = await model.index.aretrieve(purchased)
    bought = {str(p.get("product_group_name") or "") for p in payloads.values()} - {""}
    wanted = sorted(bought & set(rules.product_groups) if rules.product_groups else bought)
    return dataclasses.replace(rules, product_groups=tuple(wanted)) if wanted else None


async def blended(
    model: ServedModel,
    vector: Vector,
    purchased: list[str],
    ask: Ask,
    rules: ItemFilter,
    tel: Telemetry,
) -> list[ScoredItem]:
    """The vector's top list and trending's, ranked by their blend (recsys.blend), each
    item scored by it. An article of trending's list is scored against the vector too."""
    blend = ask.blend
    if blend is None:
        raise ValueError("blended() needs an Ask with a blend")
    pool = max(ask.k * BLEND_POOL, BLEND_POOL_MIN)
    with tel.span("blend", k=ask.k, weight=blend.weight):
        pooled = await search(model, vector, dataclasses.replace(ask, k=pool), rules, tel)
        items = {i.article_id: i for i in pooled}
        trend_rules = await _trending_rules(model, blend, purchased, rules)
        trending = (
            {t.article_id: t for t in model.popular(pool, trend_rules)} if trend_rules else {}
        )
        missing = [a for a in trending if a not in items]
        found = await model.index.avectors(missing) if missing else {}
        for article_id, item_vector in found.items():
            score = float(np.dot(vector, item_vector))
            items[article_id] = dataclasses.replace(
                trending[article_id], score=score, vector=item_vector
            )
        ids = list(items)
        personal = np.array([items[a].score for a in ids], dtype=np.float64)
        trend = np.array(
            [model.trending.score(a) if trend_rules and trend_rules.allows(a, items[a].metadata)
             else 0.0 for a in ids],
            dtype=np.float64,
        )  # fmt: skip
        mixed = blend_scores(personal, trend, blend.weight)
        order = np.argsort(-mixed, kind="stable")[: ask.k]
        return [dataclasses.replace(items[ids[i]], score=float(mixed[i])) for i in order]


def _trending(model: ServedModel, ask: Ask, rules: ItemFilter) -> list[ScoredItem]:
    if ask.fallback == "none":
        return []
    return model.popular(ask.k, rules)


async def rank(
    model: ServedModel,
    users: ServingUserStore,
    customer_id: str,
    ask: Ask,
    tel: Telemetry,
) -> Ranked:
    _count_rules(tel, ask.rules)
    try:
        state = await load_customer(users, model.version, customer_id, tel)
    except (RedisError, TimeoutError, OSError):
        return Ranked("trending", _trending(model, ask, ask.rules), None, "redis_unavailable")
    # What the customer already bought is not recommended back (unless the settings
    # allow it).
    rules = ask.rules
    if state.purchased and ask.exclude_purchased:
        tel.metrics.excluded_history.inc(len(state.purchased))
        rules = dataclasses.replace(
            rules, exclude_ids=tuple(dict.fromkeys((*rules.exclude_ids, *state.purchased)))
        )
    if state.vector is None:
        reason = "unknown_customer"
        trending = _trending(model, ask, rules)
        return Ranked("trending", trending, state.last_event_id, reason,
                      known=bool(state.purchased))  # fmt: skip
    # The index is awaited: a Qdrant server's query waits on the network without holding
    # the event loop; the embedded engine's (well under a millisecond) runs inline.
    vector = np.asarray(state.vector)
    weight = None
    try:
        if (
            ask.blend is not None
            and ask.mmr is None
            and blends(ask.blend.weight, ask.blend.max_purchases, len(set(state.purchased)))
        ):
            weight = ask.blend.weight
            items = await blended(model, vector, state.purchased, ask, rules, tel)
        else:
            items = await search(model, vector, ask, rules, tel)
    except Exception as exc:  # a server backend that is down or timing out
        log.warning("index query failed, serving trending: %s", exc)
        reason = "index_unavailable"
        trending = _trending(model, ask, rules)
        return Ranked("trending", trending, state.last_event_id, reason, known=True)
    explanations = (
        await explain_items(model, items, state.purchased, ask.explain_top_k, tel)
        if ask.explain_top_k is not None
        else None
    )
    return Ranked(
        "personalized", items, state.last_event_id, None, explanations,
        trending_weight=weight, known=True,
    )  # fmt: skip
