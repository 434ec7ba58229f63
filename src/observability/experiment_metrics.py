"""Experiments in Prometheus: a collector that reads the ledger's counters in Redis at
scrape time and runs the same report as GET /experiments/{name}.

Why not counters incremented in each process: the API runs several workers in Prometheus
multiprocess mode, and the purchases are attributed wherever an event is handled. Counts
kept per process would be right only once summed, and the conversion, p-value and
interval cannot be summed at all. Read from Redis, every worker reports the same totals,
and the numbers are exactly those of the endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from recsys.experiments.definitions import Experiments
from recsys.experiments.ledger import Ledger
from recsys.experiments.stats import ExperimentResult, report

log = logging.getLogger(__name__)

LABELS = ["experiment", "variant"]


class ExperimentsCollector:
    """Register it on the registry /metrics exposes (in multiprocess mode, on the one built
    for each scrape, beside the MultiProcessCollector). A read costs one pipelined Redis
    round trip per defined experiment, made on the scraping thread; its result serves
    every scrape for cache_s seconds, so scraping faster reads Redis no more often."""

    def __init__(
        self,
        client: redis.Redis,
        experiments: Experiments,
        ledger: Ledger,
        confidence: float = 0.95,
        cache_s: float = 0.0,
    ) -> None:
        self._client = client
        self._experiments = experiments
        self._ledger = ledger
        self._confidence = confidence
        self._cache_s = cache_s
        # Concurrent scrapes wait for one read instead of each making its own.
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterable[Metric]:
        """The families without their samples, so registering reads nothing from Redis."""
        return _Families().all()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._cache_s:
                self._cached = (now, list(self._read()))
            return self._cached[1]

    def _read(self) -> Iterable[Metric]:
        families = _Families()
        try:
            results = [
                report(e, self._ledger.counts_sync(self._client, e), self._confidence)
                for e in self._experiments.experiments
            ]
        except (RedisError, OSError) as exc:
            # A scrape must not fail with Redis: the experiment series go missing for it,
            # and experiment_ledger_up says why.
            log.warning("experiment counters unreadable: %s", exc)
            families.up.add_metric([], 0)
            return families.all()
        families.up.add_metric([], 1)
        for result in results:
            families.add(result)
        return families.all()


class _Families:
    def __init__(self) -> None:
        self.impressions = CounterMetricFamily(
            "experiment_impressions", "Recommendation responses shown in the variant", labels=LABELS
        )
        self.conversions = CounterMetricFamily(
            "experiment_conversions",
            "Impressions after which a shown article was bought within the attribution window",
            labels=LABELS,
        )
        self.purchases = CounterMetricFamily(
            "experiment_purchases", "Purchases attributed to the variant", labels=LABELS
        )
        self.customers = GaugeMetricFamily(
            "experiment_exposed_customers",
            "Distinct customers shown the variant (HyperLogLog estimate)",
            labels=LABELS,
        )
        self.conversion = GaugeMetricFamily(
            "experiment_conversion_rate", "Conversions per impression", labels=LABELS
        )
        self.difference = GaugeMetricFamily(
            "experiment_conversion_difference",
            "Conversion rate minus the control's (absent for the control)",
            labels=LABELS,
        )
        self.difference_lower = GaugeMetricFamily(
            "experiment_conversion_difference_lower",
            "Lower bound of the difference's confidence interval (Newcombe)",
            labels=LABELS,
        )
        self.difference_upper = GaugeMetricFamily(
            "experiment_conversion_difference_upper",
            "Upper bound of the difference's confidence interval (Newcombe)",
            labels=LABELS,
        )
        self.p_value = GaugeMetricFamily(
            "experiment_p_value",
            "Two-sided p-value of the z-test against the control (absent where undefined)",
            labels=LABELS,
        )
        self.enabled = GaugeMetricFamily(
            "experiment_enabled", "1 for the experiment requests are in", labels=["experiment"]
        )
        self.up = GaugeMetricFamily(
            "experiment_ledger_up", "1 when the last scrape read the experiment counters"
        )

    def add(self, result: ExperimentResult) -> None:
        self.enabled.add_metric([result.experiment], 1 if result.enabled else 0)
        for v in result.variants:
            labels = [result.experiment, v.name]
            self.impressions.add_metric(labels, v.impressions)
            self.conversions.add_metric(labels, v.conversions)
            self.purchases.add_metric(labels, v.purchases)
            self.customers.add_metric(labels, v.customers)
            # Undefined numbers are left out rather than exported as NaN.
            interval = v.difference_interval
            for family, value in (
                (self.conversion, v.conversion),
                (self.difference, v.difference),
                (self.difference_lower, None if interval is None else interval.lower),
                (self.difference_upper, None if interval is None else interval.upper),
                (self.p_value, v.p_value),
            ):
                if value is not None:
                    family.add_metric(labels, value)

    def all(self) -> Iterator[Metric]:
        yield from (
            self.impressions,
            self.conversions,
            self.purchases,
            self.customers,
            self.conversion,
            self.difference,
            self.difference_lower,
            self.difference_upper,
            self.p_value,
            self.enabled,
            self.up,
        )
