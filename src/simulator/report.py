"""What a run measured, as plain dataclasses (JSON through asdict) and one rich table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "transport")


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds from sending a request to having read its whole response."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class FreshnessSummary:
    """From a 202 on POST /events/purchase to the first GET /recommend of that customer
    whose applied_event_id is that event (or a later one of theirs)."""

    every: int  # every Nth accepted purchase is probed
    timeout_s: float
    probed: int
    completed: int
    timed_out: int
    abandoned: int  # stopped by max_requests or the end of the run before an answer
    skipped: int  # due for a probe while too many were in flight
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class BadRequestSummary:
    """Requests meant to fail: every one must get a 4xx."""

    sent: int
    refused_4xx: int
    by_reason: dict[str, int]


@dataclass(frozen=True)
class DriftedCustomer:
    customer_id: str
    from_group: str  # the product group they had bought most
    to_group: str  # where their purchases came from after the drift
    sessions_after_drift: int
    purchases_after_drift: int  # accepted (202)


@dataclass(frozen=True)
class DriftSummary:
    fraction: float
    at_s: float  # seconds into the run
    planned: int  # customers of the plan, active or not
    customers: list[DriftedCustomer]  # those with a session after the drift time


@dataclass(frozen=True)
class SimulationReport:
    api_url: str
    run_id: str  # prefix of this run's event ids
    seed: int
    started_at: str  # ISO 8601, UTC
    duration_s: float  # configured
    elapsed_s: float  # from the first arrival until the last session ended
    stopped_by: str  # "duration", "max_events" or "max_requests"
    target_events_per_s: float
    events_per_s: float  # 202s on POST /events/purchase per second of elapsed_s
    sessions: int
    dropped_sessions: int  # arrivals while too many requests waited for a slot
    requests: int
    events_posted: int
    events_accepted: int
    latency: dict[str, LatencySummary]  # per endpoint kind
    status_counts: dict[str, dict[str, int]]  # endpoint kind -> status class -> requests
    errors: dict[str, int]  # 5xx, transport errors and unexpected answers, by kind
    error_samples: list[str]
    bad_requests: BadRequestSummary
    freshness: FreshnessSummary
    drift: DriftSummary
    population: dict[str, int] = field(default_factory=dict)
    events_retried: int = 0  # sent again after a 503 or no answer (retry_unavailable_s)
    events_given_up: int = 0  # still refused when their retry time ran out
    # GET /experiments/{name}'s report on this run's counts, when one was measured
    experiment: dict[str, Any] | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def report_table(report: SimulationReport) -> Table:
    """The run's figures over its per-endpoint counts and latencies, in one table."""
    outer = Table(title=f"recsys simulate against {report.api_url}", show_header=False)
    outer.add_column()
    outer.add_row(_summary(report))
    outer.add_row(_endpoints(report))
    if report.experiment is not None:
        outer.add_row(_experiment(report.experiment))
    return outer


def _experiment(result: dict[str, Any]) -> Table:
    winner = result.get("winner") or "undecided"
    table = Table(
        title=f"experiment {result['experiment']} (this run): winner {winner}",
        box=None,
        padding=(0, 1),
    )
    for column in ("variant", "impressions", "conversions", "conversion", "vs control", "p"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for v in result["variants"]:
        rate = v.get("conversion")
        diff, ci = v.get("difference"), v.get("difference_interval")
        versus = (
            f"{diff:+.4f} [{ci['lower']:+.4f}, {ci['upper']:+.4f}]"
            if diff is not None and ci is not None
            else ""
        )
        p_value = v.get("p_value")
        table.add_row(
            v["name"],
            f"{v['impressions']:,}",
            f"{v['conversions']:,}",
            "" if rate is None else f"{rate:.4f}",
            versus,
            "" if p_value is None else f"{p_value:.2g}",
        )
    return table


def _summary(report: SimulationReport) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    fresh = report.freshness
    bad = report.bad_requests
    drift = report.drift
    rows = [
        ("run", f"{report.elapsed_s:.1f} s of {report.duration_s:g} s, "
                f"stopped by {report.stopped_by}, seed {report.seed}, run id {report.run_id}"),
        ("events/s sustained", f"{report.events_per_s:.1f} "
                               f"(target {report.target_events_per_s:g})"),
        ("purchases", f"{report.events_accepted:,} accepted of {report.events_posted:,} posted"
                      + (f"; events sent again {report.events_retried:,}, given up "
                         f"{report.events_given_up:,}"
                         if report.events_retried or report.events_given_up else "")),
        ("sessions", f"{report.sessions:,} ({report.dropped_sessions:,} dropped: API behind)"),
        ("requests", f"{report.requests:,}"),
        ("errors", _errors(report)),
        ("bad requests", f"{bad.sent:,} sent, {bad.refused_4xx:,} refused with a 4xx"),
        ("freshness", f"p50 {_ms(fresh.p50_ms)}, p99 {_ms(fresh.p99_ms)}, "
                      f"max {_ms(fresh.max_ms)}; {fresh.completed:,} of {fresh.probed:,} probes "
                      f"(every {fresh.every}) seen, {fresh.timed_out:,} timed out "
                      f"({fresh.timeout_s:g} s), {fresh.abandoned:,} abandoned"),
        ("drift", f"{len(drift.customers):,} of {drift.planned:,} drifted customers active "
                  f"after {drift.at_s:.1f} s, "
                  f"{sum(c.purchases_after_drift for c in drift.customers):,} purchases "
                  "in their new group"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def _endpoints(report: SimulationReport) -> Table:
    table = Table(box=None, padding=(0, 1))
    table.add_column("endpoint")
    for column in ("requests", *STATUS_CLASSES, "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for kind, counts in report.status_counts.items():
        lat = report.latency.get(kind)
        figures = (lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms) if lat else (None,) * 4
        table.add_row(
            kind,
            f"{sum(counts.values()):,}",
            *(f"{counts.get(c, 0):,}" for c in STATUS_CLASSES),
            *(_number(v) for v in figures),
        )
    return table


def _errors(report: SimulationReport) -> str:
    if not report.errors:
        return "none"
    kinds = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(report.errors.items()))
    return f"[red]{report.error_count:,}[/red] ({kinds})"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
