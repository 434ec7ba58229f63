"""Prometheus metrics of the archiver, on a registry of its own (one per Archiver);
`recsys archiver` serves them over HTTP."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A flush appends a batch to Delta: tens of milliseconds on a small table, seconds on a
# large one or a slow object store.
FLUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ArchiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rows_written = Counter(
            "archiver_rows_written",
            "Rows a flush added to a Delta table (those already there not counted), by table",
            ["table"],
            registry=r,
        )
        self.messages_invalid = Counter(
            "archiver_messages_invalid",
            "Messages not archived because they break their topic's rule, by topic (the "
            "updater dead-letters invalid events; the archiver invalid catalogue messages)",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "archiver_dead_lettered",
            "Messages the archiver sent to the dead-letter topic",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "archiver_flush_duration_seconds",
            "One flush: rows to every table, dead letters acknowledged, offsets committed",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.flush_failures = Counter(
            "archiver_flush_failures",
            "Flushes that failed and are retried (nothing of them committed)",
            registry=r,
        )
        self.last_flush = Gauge(
            "archiver_last_flush_timestamp_seconds",
            "Unix time of the last flush that committed (alert when it grows old under load)",
            registry=r,
        )
        self.compactions = Counter(
            "archiver_compactions",
            "Compactions of the events table, by outcome (done, failed)",
            ["outcome"],
            registry=r,
        )
