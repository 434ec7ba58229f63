"""Prometheus metrics of the updater, on a registry of its own (one per Updater, so tests
running several do not share counters); `recsys updater` serves them over HTTP."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a purchase's Kafka timestamp to its Redis write: milliseconds when keeping up,
# seconds when catching up after an outage.
PROCESSING_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class UpdaterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.processed = Counter(
            "events_processed",
            "Events consumed, by outcome: applied (moved at least one model version), "
            "duplicate (every version had it already), dead_lettered",
            ["outcome"],
            registry=r,
        )
        # A counter of its own rather than a label on events_processed: a new label would
        # change every existing series, and scrapers that match {outcome="..."} exactly.
        self.processed_by_type = Counter(
            "events_processed_by_type",
            "Valid events consumed, by event_type and outcome (applied, duplicate)",
            ["event_type", "outcome"],
            registry=r,
        )
        self.duplicates = Counter(
            "events_duplicates_skipped",
            "Event applications skipped because the event had been applied (per version)",
            registry=r,
        )
        self.dead_lettered = Counter(
            "events_dead_lettered", "Messages sent to the dead-letter topic", registry=r
        )
        self.processing_seconds = Histogram(
            "event_processing_duration_seconds",
            "From the event's Kafka timestamp to its Redis write",
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "updater_consumer_lag",
            "Messages on the partition this updater has not consumed yet",
            ["partition"],
            registry=r,
        )
        self.redis_retries = Counter(
            "updater_redis_retries", "Batches retried because Redis failed", registry=r
        )
