"""Prometheus metrics of the API, on a registry of its own (one per app, so tests and
several apps in one process do not share counters).

With several server processes (RECSYS_API_WORKERS > 1) the CLI sets
PROMETHEUS_MULTIPROC_DIR before they start: each writes its values there, and whichever
answers /metrics reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Engine calls take tens of microseconds to a few milliseconds.
ENGINE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
# Whole requests: sub-millisecond on a good day, a timeout on a bad one.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Intra-list diversity is in [0, 2] (1 - mean cosine); most lists sit in [0, 1].
DIVERSITY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._shared_collectors: list[Collector] = []
        r = self.registry
        self.requests = Counter(
            "recommendation_requests", "Recommendation responses by source", ["source"], registry=r
        )
        self.fallbacks = Counter(
            "recommendation_fallback", "Trending served instead, by reason", ["reason"], registry=r
        )
        self.diversity = Histogram(
            "recommendation_diversity_score",
            "Intra-list diversity of personalised results (1 - mean pairwise cosine), "
            "on one list in 16",
            buckets=DIVERSITY_BUCKETS,
            registry=r,
        )
        self.similar = Counter("similar_items_requests", "Similar-items requests", registry=r)
        self.profiles = Counter("user_profile_requests", "User profile requests", registry=r)
        self.filters = Counter(
            "filter_applied", "Requests with a business rule, by rule", ["type"], registry=r
        )
        self.excluded_history = Counter(
            "items_excluded_history", "Purchased items excluded from results", registry=r
        )
        self.excluded_explicit = Counter(
            "items_excluded_explicit", "Items excluded by the request's exclude_ids", registry=r
        )
        self.impressions_lost = Counter(
            "experiment_impressions_unrecorded",
            "Experiment lists served without a recorded impression (Redis failed)",
            registry=r,
        )
        self.erasures = Counter("customer_erasures", "Customers erased on request", registry=r)
        self.explains = Counter("explain_requests", "Requests with explanations", registry=r)
        self.explain_seconds = Histogram(
            "explain_computation_duration_seconds",
            "Time to compute explanations",
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        self.mmr = Counter("mmr_rerank_applied", "Requests reranked by MMR", registry=r)
        self.mmr_seconds = Histogram(
            "mmr_rerank_duration_seconds",
            "Time of the index's MMR query",
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        self.purchases = Counter(
            "purchase_events_accepted", "Purchases the broker acknowledged", registry=r
        )
        self.signals = Counter(
            "signal_events_accepted",
            "Views, clicks and add-to-carts the broker acknowledged",
            ["event_type"],
            registry=r,
        )
        self.articles_accepted = Counter(
            "catalog_articles_accepted",
            "Catalog messages the broker acknowledged, by op: upsert (POST /items) or "
            "availability (POST /items/availability)",
            ["op"],
            registry=r,
        )
        self.articles_applied = Counter(
            "catalog_articles_applied",
            "Catalog articles applied to a served index version: placed by their content "
            "vector, metadata_only (a collaborative item keeps its vector), "
            "availability_only (made available or not), or none (the version has no "
            "content model)",
            ["placement"],
            registry=r,
        )
        self.catalog_invalid = Counter(
            "catalog_messages_invalid",
            "Messages on the catalog topic that are not valid catalog messages (skipped)",
            registry=r,
        )
        self.redis_seconds = Histogram(
            "redis_operation_duration_seconds",
            "Redis round trips of the API",
            ["operation"],
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "qdrant_search_duration_seconds",
            "Item-index queries",
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        self.retrieve_seconds = Histogram(
            "qdrant_retrieve_duration_seconds",
            "Item-index point look-ups",
            buckets=ENGINE_BUCKETS,
            registry=r,
        )
        # Access and limits (serve.access): reasons are missing, unknown and forbidden.
        self.auth_failures = Counter(
            "auth_failures", "Requests refused for their API key, by reason", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "rate_limited", "Requests refused with 429, by the caller's role", ["role"], registry=r
        )
        self.keys_reload_failures = Counter(
            "api_keys_reload_failures",
            "Changes of the keys file left unapplied (unreadable or invalid): keys unchanged",
            registry=r,
        )
        self.rate_limiter_unavailable = Counter(
            "rate_limiter_unavailable",
            "Requests let through unlimited because Redis did not answer the rate limiter",
            registry=r,
        )
        self.http_seconds = Histogram(
            "http_request_duration_seconds",
            "Request latency by route",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

    def add_collector(self, collector: Collector) -> None:
        """A collector whose values are read at scrape time (the same in every worker)."""
        self.registry.register(collector)
        self._shared_collectors.append(collector)

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or all workers' summed."""
        shared = os.environ.get(MULTIPROC_ENV)
        if not shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=shared)
        for collector in self._shared_collectors:
            registry.register(collector)
        return generate_latest(registry)
