"""API keys in Prometheus: each key's expiry, read from the access table at scrape time,
so an alert fires before a client's key stops working."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from recsys.api_keys import ApiKey


class KeyExpiryCollector:
    """`api_key_expiry_timestamp_seconds{key,role}` for each key with an expiry (a key
    without one has no series). Alert on `api_key_expiry_timestamp_seconds - time() <
    7 * 86400`. Reads memory only, and every worker holds the same keys."""

    def __init__(self, keys: Callable[[], Iterable[ApiKey]]) -> None:
        self._keys = keys

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key in self._keys():
            if key.expires is not None:
                family.add_metric([key.name, key.role], key.expires.timestamp())
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "api_key_expiry_timestamp_seconds",
            "When each API key with an expiry stops being accepted (unix time)",
            labels=["key", "role"],
        )
