"""Tallies of a run as it goes: each request's status class and latency per endpoint kind,
errors, bad requests, purchases and freshness probes; summaries at the end."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from simulator.report import BadRequestSummary, FreshnessSummary, LatencySummary

MAX_ERROR_SAMPLES: Final = 10


def status_class(status: int) -> str:
    return f"{status // 100}xx"


@dataclass
class Recorder:
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status_counts: defaultdict[str, Counter[str]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    bad_sent: Counter[str] = field(default_factory=Counter)
    bad_refused: int = 0
    sessions: int = 0
    dropped_sessions: int = 0
    events_posted: int = 0
    events_accepted: int = 0
    # Events sent again after a 503 or no answer (SimulationConfig.retry_unavailable_s),
    # and those still refused when their retry time ran out.
    events_retried: int = 0
    events_given_up: int = 0
    freshness_s: list[float] = field(default_factory=list)
    probes: int = 0
    probes_timed_out: int = 0
    probes_abandoned: int = 0
    probes_skipped: int = 0

    def response(
        self, kind: str, status: int, seconds: float, *, expect: str, what: str, body: str
    ) -> None:
        """One answered request; expect is the status class a correct API gives it."""
        got = status_class(status)
        self.latencies[kind].append(seconds)
        self.status_counts[kind][got] += 1
        if got != expect:
            self.error(f"{kind}: HTTP {status}", f"{what} -> {status} {body[:200]}")

    def transport_error(self, kind: str, seconds: float, exc: Exception, what: str) -> None:
        self.latencies[kind].append(seconds)
        self.status_counts[kind]["transport"] += 1
        self.error(f"{kind}: {type(exc).__name__}", f"{what} -> {type(exc).__name__}: {exc}")

    def error(self, kind: str, sample: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(sample)

    def bad_request(self, reason: str, status: int | None) -> None:
        self.bad_sent[reason] += 1
        if status is not None and 400 <= status < 500:
            self.bad_refused += 1

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.status_counts.values())

    def latency_summaries(self) -> dict[str, LatencySummary]:
        return {kind: latency_summary(values) for kind, values in sorted(self.latencies.items())}

    def counts(self) -> dict[str, dict[str, int]]:
        return {kind: dict(sorted(c.items())) for kind, c in sorted(self.status_counts.items())}

    def bad_summary(self) -> BadRequestSummary:
        return BadRequestSummary(
            sent=sum(self.bad_sent.values()),
            refused_4xx=self.bad_refused,
            by_reason=dict(sorted(self.bad_sent.items())),
        )

    def freshness_summary(self, every: int, timeout_s: float) -> FreshnessSummary:
        p50, p90, p99, top = _percentiles_ms(self.freshness_s)
        return FreshnessSummary(
            every=every,
            timeout_s=timeout_s,
            probed=self.probes,
            completed=len(self.freshness_s),
            timed_out=self.probes_timed_out,
            abandoned=self.probes_abandoned,
            skipped=self.probes_skipped,
            p50_ms=p50,
            p90_ms=p90,
            p99_ms=p99,
            max_ms=top,
        )


def latency_summary(seconds: list[float]) -> LatencySummary:
    p50, p90, p99, top = _percentiles_ms(seconds)
    return LatencySummary(len(seconds), p50, p90, p99, top)


def _percentiles_ms(
    seconds: list[float],
) -> tuple[float | None, float | None, float | None, float | None]:
    if not seconds:
        return None, None, None, None
    p50, p90, p99, top = np.percentile(np.array(seconds) * 1000.0, [50, 90, 99, 100])
    return round(float(p50), 3), round(float(p90), 3), round(float(p99), 3), round(float(top), 3)
