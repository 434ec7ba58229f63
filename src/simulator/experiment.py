"""An A/B experiment measured over one simulation run: the API's counters read before and
after, and the same report as GET /experiments/{name} on the difference, so earlier runs
against the same Redis do not count."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from recsys.experiments.definitions import Experiment
from recsys.experiments.ledger import VariantCounts
from recsys.experiments.stats import ExperimentResult, report
from simulator.config import SimulatorError

SETTLE_POLL_S = 0.25


class ExperimentUnknownError(SimulatorError):
    """The API does not define the experiment the run was asked to measure."""


async def experiment_definition(client: httpx.AsyncClient, name: str) -> Experiment:
    response = await client.get("/experiments")
    response.raise_for_status()
    for raw in response.json()["experiments"]:
        if raw["name"] == name:
            return Experiment.model_validate(raw)
    raise ExperimentUnknownError(f"the API defines no experiment {name!r} (GET /experiments)")


async def experiment_counts(
    client: httpx.AsyncClient, experiment: Experiment
) -> dict[str, VariantCounts]:
    response = await client.get(f"/experiments/{experiment.name}")
    response.raise_for_status()
    return {
        v["name"]: VariantCounts(
            impressions=v["impressions"],
            conversions=v["conversions"],
            purchases=v["purchases"],
            customers=v["customers"],
        )
        for v in response.json()["variants"]
    }


async def settled_counts(
    client: httpx.AsyncClient, experiment: Experiment, timeout_s: float
) -> dict[str, VariantCounts]:
    """The counters once the updater has credited the run's last purchases: two reads in
    a row that agree, or whatever they are after timeout_s."""
    give_up = time.monotonic() + timeout_s
    last = await experiment_counts(client, experiment)
    while time.monotonic() < give_up:
        await asyncio.sleep(SETTLE_POLL_S)
        now = await experiment_counts(client, experiment)
        if now == last:
            return now
        last = now
    return last


def run_result(
    experiment: Experiment, before: dict[str, VariantCounts], after: dict[str, VariantCounts]
) -> ExperimentResult:
    """The report on what this run added (distinct customers are not subtractable: the
    run's figure is the total's)."""
    delta = {
        name: VariantCounts(
            impressions=counts.impressions - before.get(name, VariantCounts()).impressions,
            conversions=counts.conversions - before.get(name, VariantCounts()).conversions,
            purchases=counts.purchases - before.get(name, VariantCounts()).purchases,
            customers=counts.customers,
        )
        for name, counts in after.items()
    }
    return report(experiment, delta)


def as_dict(result: ExperimentResult) -> dict[str, Any]:
    return result.model_dump(mode="json")
