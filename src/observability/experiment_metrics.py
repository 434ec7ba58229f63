"""Experiments in Prometheus: a collector that reads the ledger's counters in Redis at
scrape time and runs the same report as GET /experiments/{name}.

Why not counters incremented in each process: the API runs several workers in Prometheus
multiprocess mode, and the purchases are attributed wherever an event is handled. Counts
kept per process would be right only once summed, and the conversion, p-value and
interval cannot be summed at all. Read from Redis, every worker reports the same totals,
and the numbers are exactly those of the endpoint.

Every replica of the API could read the same totals, so only one exports them: the one
holding the export lease, a Redis key its scrapes renew (`ExportLease`). A sum over the
replicas' series is then the total, and another replica takes over within the lease's
time when the holder stops. `experiment_metrics_exporter` says which replica holds it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import RedisError

from recsys import keys
from recsys.experiments.definitions import Experiments
from recsys.experiments.ledger import Ledger
from recsys.experiments.stats import ExperimentResult, report
from recsys.stores import SyncRedis

log = logging.getLogger(__name__)

LABELS = ["experiment", "variant"]


# The lease is renewed only by its holder; anyone takes it once it has expired.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class ExportLease:
    """Which one of the processes that could export the same totals does: the holder of a
    Redis key, taken when free and renewed at each of its holder's scrapes. `owner` names
    a replica (its host name and process group, shared by a server's workers)."""

    def __init__(self, client: SyncRedis, owner: str, ttl_s: float) -> None:
        self._client = client
        self._owner = owner
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._renew = client.register_script(_RENEW_LUA)

    def held(self) -> bool:
        """Whether this replica holds the lease now (taking or renewing it)."""
        reply = self._renew(keys=[keys.METRICS_EXPORTER], args=[self._owner, self._ttl_ms])
        return int(cast(int, reply)) == 1


def export_lease(client: SyncRedis, ttl_s: float) -> ExportLease | None:
    """The lease for this replica (None with ttl_s 0: every replica exports)."""
    if ttl_s <= 0:
        return None
    return ExportLease(client, f"{socket.gethostname()}/{os.getpgid(0)}", ttl_s)


class ExperimentsCollector:
    """Register it on the registry /metrics exposes (in multiprocess mode, on the one built
    for each scrape, beside the MultiProcessCollector). A read costs one pipelined Redis
    round trip per defined experiment, made on the scraping thread; its result serves
    every scrape for cache_s seconds, so scraping faster reads Redis no more often."""

    def __init__(
        self,
        client: SyncRedis,
        experiments: Experiments,
        ledger: Ledger,
        confidence: float = 0.95,
        cache_s: float = 0.0,
        lease: ExportLease | None = None,
    ) -> None:
        self._client = client
        self._lease = lease
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
            exporting = self._lease is None or self._lease.held()
            families.exporter.add_metric([], 1 if exporting else 0)
            if not exporting:  # another replica exports the totals
                families.up.add_metric([], 1)
                return families.own()
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
        self.exporter = GaugeMetricFamily(
            "experiment_metrics_exporter",
            "1 on the one replica that exports the experiments' totals (the export lease)",
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
            *self.own(),
        )

    def own(self) -> Iterator[Metric]:
        """What every replica reports of itself."""
        yield from (self.up, self.exporter)
