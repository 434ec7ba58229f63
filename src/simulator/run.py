"""`simulate(config)`: load the population, check the API answers, send the load and
return what it measured."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from simulator.config import SimulationConfig, SimulatorError
from simulator.experiment import (
    as_dict,
    experiment_counts,
    experiment_definition,
    run_result,
    settled_counts,
)
from simulator.measure import Recorder
from simulator.population import Population, load_population
from simulator.report import DriftedCustomer, DriftSummary, SimulationReport, report_table
from simulator.traffic import MAX_PROBES_IN_FLIGHT, Traffic

__all__ = ["ApiUnavailableError", "report_table", "simulate", "simulate_async"]


class ApiUnavailableError(SimulatorError):
    """The API did not answer /health/ready with a model to serve."""


def simulate(config: SimulationConfig) -> SimulationReport:
    """Run the simulation to its end (duration or a count bound) and report. Raises
    SimulatorError subclasses with a one-line reason for bad input or an absent API."""
    population = load_population(
        config.input_dir, seed=config.seed, drift_fraction=config.drift_fraction
    )
    return asyncio.run(simulate_async(config, population))


async def simulate_async(
    config: SimulationConfig,
    population: Population,
    on_start: Callable[[Traffic], None] | None = None,
) -> SimulationReport:
    """The same inside a running event loop; population must come from load_population
    with the config's seed and drift_fraction. `on_start` gets the traffic before it runs
    (the soak holds and releases it, and reads what was accepted)."""
    run_id = uuid.uuid4().hex[:8]  # not from the seed: a re-run must not repeat event ids
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    recorder = Recorder()
    async with _client(config) as client:
        await _require_ready(client, config.api_url)
        measured = None
        if config.experiment is not None:
            measured = await experiment_definition(client, config.experiment)
            before = await experiment_counts(client, measured)
        traffic = Traffic(config, population, client, recorder, run_id)
        if on_start is not None:
            on_start(traffic)
        elapsed = await traffic.run()
        experiment = None
        if measured is not None:
            after = await settled_counts(client, measured, config.freshness_timeout_s)
            experiment = as_dict(run_result(measured, before, after))
    return SimulationReport(
        api_url=config.api_url,
        run_id=run_id,
        seed=config.seed,
        started_at=started_at,
        duration_s=config.duration_s,
        elapsed_s=round(elapsed, 3),
        stopped_by=traffic.budget.stopped_by or "duration",
        target_events_per_s=config.rate_per_s,
        events_per_s=round(recorder.events_accepted / elapsed, 3) if elapsed > 0 else 0.0,
        sessions=recorder.sessions,
        dropped_sessions=recorder.dropped_sessions,
        requests=recorder.requests,
        events_posted=recorder.events_posted,
        events_accepted=recorder.events_accepted,
        events_retried=recorder.events_retried,
        events_given_up=recorder.events_given_up,
        latency=recorder.latency_summaries(),
        status_counts=recorder.counts(),
        errors=dict(sorted(recorder.errors.items())),
        error_samples=list(recorder.error_samples),
        bad_requests=recorder.bad_summary(),
        freshness=recorder.freshness_summary(config.freshness_every, config.freshness_timeout_s),
        drift=_drift_summary(config, population, traffic),
        experiment=experiment,
        population={
            "customers": len(population.customer_ids),
            "new_customers": len(population.new_customers),
            "articles": len(population.catalogue.article_ids),
            "product_groups": len(population.catalogue.groups),
        },
    )


def _client(config: SimulationConfig) -> httpx.AsyncClient:
    slots = config.concurrency + MAX_PROBES_IN_FLIGHT
    return httpx.AsyncClient(
        base_url=config.api_url,
        timeout=httpx.Timeout(config.request_timeout_s),
        limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots),
        # Never through a proxy from the environment: the load stays on loopback.
        trust_env=False,
        follow_redirects=False,
        headers={"Authorization": f"Bearer {config.api_key}"} if config.api_key else None,
    )


async def _require_ready(client: httpx.AsyncClient, api_url: str) -> None:
    try:
        response = await client.get("/health/ready")
    except httpx.HTTPError as exc:
        raise ApiUnavailableError(f"no API at {api_url}: {type(exc).__name__} {exc}") from exc
    if response.status_code != 200:
        raise ApiUnavailableError(
            f"the API at {api_url} is not ready: HTTP {response.status_code} {response.text[:200]}"
        )


def _drift_summary(
    config: SimulationConfig, population: Population, traffic: Traffic
) -> DriftSummary:
    groups = population.catalogue.groups
    customers = [
        DriftedCustomer(
            customer_id=population.customer_ids[row],
            from_group=groups[population.top_group(row)],
            to_group=groups[population.drift.target[row]],
            sessions_after_drift=activity.sessions,
            purchases_after_drift=activity.purchases,
        )
        for row, activity in sorted(traffic.drift_activity.items())
    ]
    return DriftSummary(
        fraction=config.drift_fraction,
        at_s=config.drift_at_s,
        planned=len(population.drift.customers),
        customers=customers,
    )
