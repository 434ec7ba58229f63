"""GET /experiments and /experiments/{name}: the defined experiments and their results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel
from redis.exceptions import RedisError

from recsys.experiments.definitions import Experiment
from recsys.experiments.stats import ExperimentResult, report
from serve.deps import State
from serve.schemas import ErrorBody

router = APIRouter(tags=["experiments"])


class ExperimentList(BaseModel):
    active: str | None
    experiments: list[Experiment]


@router.get("/experiments", response_model=ExperimentList)
async def list_experiments(state: State) -> ExperimentList:
    """Every experiment the service was started with (RECSYS_EXPERIMENTS_FILE); at most
    one is enabled, and every /recommend request is in it."""
    defined = state.experiments
    active = defined.active
    return ExperimentList(active=active.name if active else None, experiments=defined.experiments)


@router.get(
    "/experiments/{name}",
    response_model=ExperimentResult,
    responses={
        404: {"model": ErrorBody, "description": "No experiment of that name is defined"},
        503: {"model": ErrorBody, "description": "Redis, which holds the counts, is down"},
    },
)
async def experiment_result(
    state: State,
    name: Annotated[str, Path(min_length=1, max_length=64, description="The experiment")],
    confidence: Annotated[
        float, Query(gt=0.5, lt=1.0, description="Level of the intervals and the test")
    ] = 0.95,
) -> ExperimentResult:
    """Per variant: impressions, conversions and purchases credited to it, conversion with
    its interval, and against the control the difference, its interval and the z-test's
    p-value (docs/experiments.md says how to read them)."""
    experiment = state.experiments.get(name)
    if experiment is None:
        raise HTTPException(404, f"unknown experiment: {name}")
    try:
        counts = await state.ledger.counts(state.hot_redis, experiment)
    except (RedisError, TimeoutError, OSError) as exc:
        raise HTTPException(503, f"experiment counts unavailable: {exc}") from exc
    return report(experiment, counts, confidence)
