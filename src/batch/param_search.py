"""The one parameter search of the project: the batch's tuning and every model `recsys
evaluate` judges choose their values with it, on a validation split, within a time budget.

The search is Optuna's: TPE (a model of which regions did well) over sizes and counts
from a few choices and rates on a log scale, started from the current values, and
stopped by its timeout; a small space of choices only is tried whole (grid). Optuna is
there for TPE, which finds good rates in fewer fits than a grid or random points, and
for its timeout and enqueued first trial, which this module would otherwise rebuild.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any

from recsys.model_store import TrialRecord

if TYPE_CHECKING:
    import optuna

# An unset budget: this many times the first trial, within these bounds (seconds): at
# least 30 s, so small data (where a fit takes a second) still gets ~30 trials; at most
# 6 minutes, so the batch at the real data set's shape stays within 30 minutes.
BUDGET_TRIALS = 12
MIN_BUDGET_S = 30.0
MAX_BUDGET_S = 360.0
# Trials at most: on the generated shops and ml-100k 60 found better points than 40 (test
# NDCG@10 +0.001-0.007) and 80 no better than 60 (docs/evaluation.md).
MAX_TRIALS = 60


@dataclass(frozen=True)
class LogRange:
    """A rate searched on a log scale between low and high; with `per`, the range is of
    its ratio to that other dimension's value (a regularisation searched per unit of
    confidence: the two trade off along a ridge a search of each alone walks poorly)."""

    low: float
    high: float
    per: str | None = None

    def holds(self, value: float, values: Values) -> bool:
        ratio = _ratio(self, value, values)
        return ratio is not None and self.low <= ratio <= self.high


Dimension = tuple[float, ...] | LogRange
Space = dict[str, Dimension]
Values = dict[str, float]
# A trial's user attribute: the values it tried (its params hold ratios where sampled so).
VALUES = "values"


@dataclass(frozen=True)
class SearchResult:
    chosen: Values
    trials: list[TrialRecord]  # best first
    budget_s: float
    seconds: float
    start_score: float | None  # the start values' score, when they were tried


def budget(budget_s: float | None, first_trial_s: float) -> float:
    """The search's budget: as set, or BUDGET_TRIALS times the first trial, bounded."""
    return budget_s or min(MAX_BUDGET_S, max(MIN_BUDGET_S, BUDGET_TRIALS * first_trial_s))


def search(
    space: Space,
    objective: Callable[[Values], float],
    *,
    start: Values | None = None,
    budget_s: float | None = None,
    max_trials: int = MAX_TRIALS,
    seed: int = 0,
) -> SearchResult:
    """Maximise objective over the space: the start values first (TPE), or every point of
    a space of choices alone that fits in max_trials (grid). An empty space is one trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    grid = _grid(space, max_trials)
    sampler = (
        optuna.samplers.GridSampler(grid, seed=seed)
        if grid
        else optuna.samplers.TPESampler(seed=seed)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    given = {k: v for k, v in (start or {}).items() if k in space}
    first_values = {k: v for k, v in given.items() if _holds(space[k], v, given)}
    if not grid and first_values:
        study.enqueue_trial(_as_sampled(space, first_values))

    def trial_objective(trial: optuna.Trial) -> float:
        values = _values(space, {key: _suggest(trial, key, d) for key, d in space.items()})
        trial.set_user_attr(VALUES, values)
        return objective(values)

    study.optimize(trial_objective, n_trials=1)
    first = time.perf_counter() - started
    limit = budget(budget_s, first)
    n_trials = prod(len(v) for v in grid.values()) if grid else max_trials
    if space and n_trials > 1 and limit > first:
        study.optimize(trial_objective, n_trials=n_trials - 1, timeout=limit - first)
    trials = sorted(
        (
            TrialRecord(
                params=dict(t.user_attrs[VALUES]),
                validation_ndcg=float(t.value or 0.0),
                seconds=t.duration.total_seconds() if t.duration else 0.0,
            )
            for t in study.trials
            if t.value is not None
        ),
        key=lambda t: -t.validation_ndcg,
    )
    start_values = {key: (start or {}).get(key) for key in space}
    as_started = [t.validation_ndcg for t in trials if t.params == start_values]
    return SearchResult(
        chosen=dict(study.best_trial.user_attrs[VALUES]),
        trials=trials,
        budget_s=limit,
        seconds=time.perf_counter() - started,
        start_score=as_started[0] if as_started else None,
    )


def _holds(dimension: Dimension, value: float, values: Values) -> bool:
    if isinstance(dimension, LogRange):
        return dimension.holds(value, values)
    return value in dimension


def _ratio(dimension: LogRange, value: float, values: Values) -> float | None:
    """The value as its range counts it: itself, or its ratio to the `per` dimension's
    value (None when that is absent or zero)."""
    if dimension.per is None:
        return value
    base = values.get(dimension.per)
    return value / base if base else None


def _as_sampled(space: Space, values: Values) -> Values:
    """Values as the sampler draws them: ratios for the dimensions searched per another."""
    out = dict(values)
    for key, dimension in space.items():
        if isinstance(dimension, LogRange) and dimension.per is not None and key in values:
            ratio = _ratio(dimension, values[key], values)
            if ratio is None:
                del out[key]
            else:
                out[key] = ratio
    return out


def _values(space: Space, sampled: Values) -> Values:
    """The values a trial tries: each ratio times its `per` dimension's value."""
    out = dict(sampled)
    for key, dimension in space.items():
        if isinstance(dimension, LogRange) and dimension.per is not None:
            out[key] = sampled[key] * sampled[dimension.per]
    return out


def _grid(space: Space, max_trials: int) -> dict[str, Any]:
    """The space as a grid when it is choices alone and tried whole within max_trials
    ({} otherwise: the search samples it)."""
    grid: dict[str, Any] = {key: list(d) for key, d in space.items() if isinstance(d, tuple)}
    if not space or len(grid) < len(space) or prod(len(v) for v in grid.values()) > max_trials:
        return {}
    return grid


def _suggest(trial: optuna.Trial, key: str, dimension: Dimension) -> float:
    if isinstance(dimension, LogRange):
        return trial.suggest_float(key, dimension.low, dimension.high, log=True)
    return float(trial.suggest_categorical(key, list(dimension)))
