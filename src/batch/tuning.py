"""The batch tunes itself on the data it is given: the trainer's parameters and the
interactions' half-life, searched on a validation split carved from the holdout's
training part (so the gate's holdout stays unseen), within a time budget.

The search is Optuna's: TPE (a model of which regions did well) over sizes and counts
from a few choices and rates on a log scale, started from the current settings, and
stopped by its timeout; a small space of choices only is tried whole (grid). Optuna is
there for TPE, which finds good rates in fewer fits than a grid or random points, and
for its timeout and enqueued first trial, which this module would otherwise rebuild.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any

from batch.holdout import (
    HeldOut,
    HoldoutConfig,
    hold_out,
    judge,
    judged_seen,
    split_job,
    train_interactions,
    training_rows,
)
from batch.lake import Lake
from batch.stored_interactions import StoredInteractions
from batch.trainer_factory import open_trainer
from recsys.model_store import TrialRecord, TuningRecord
from recsys.settings import Settings

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# An unset budget: this many times the first trial, within these bounds (seconds).
BUDGET_TRIALS = 12
MIN_BUDGET_S = 10.0
MAX_BUDGET_S = 480.0


@dataclass(frozen=True)
class LogRange:
    """A rate searched on a log scale between low and high."""

    low: float
    high: float


Dimension = tuple[float, ...] | LogRange

# The default space of each trainer (their parameters mean different things: see
# recsys.settings), and the decay's half-life in days for both (0: no decay).
TRAINER_SPACES: dict[str, dict[str, Dimension]] = {
    "implicit": {
        "implicit_factors": (16, 32, 64, 128),
        "implicit_iterations": (10, 15, 25),
        "implicit_regularization": LogRange(0.01, 10.0),
        "implicit_alpha": LogRange(1.0, 100.0),
    },
    "spark": {
        "spark_als_rank": (16, 32, 64, 128),
        "spark_als_max_iter": (5, 10, 15),
        "spark_als_reg_param": LogRange(0.01, 1.0),
        "spark_als_alpha": LogRange(1.0, 100.0),
    },
}
HALF_LIFE_SPACE: dict[str, Dimension] = {
    "interaction_half_life_days": (0.0, 30.0, 90.0, 180.0, 365.0)
}


class TuningError(ValueError):
    """The search space names a setting the chosen trainer does not have."""


@dataclass(frozen=True)
class Tuned:
    settings: Settings  # the input settings with the chosen values
    record: TuningRecord


def search_space(settings: Settings) -> dict[str, Dimension]:
    """The trainer's space and the half-life's, the current value of each setting one of
    its choices (or inside its range); RECSYS_TUNING_SPACE's choices replace a dimension
    as they are."""
    space = {**TRAINER_SPACES[settings.trainer], **HALF_LIFE_SPACE}
    for key in settings.tuning_space:
        if key not in space:
            raise TuningError(
                f"RECSYS_TUNING_SPACE: {key} is not a parameter of the {settings.trainer} trainer"
            )
    for key, dimension in space.items():
        if key in settings.tuning_space:
            space[key] = tuple(settings.tuning_space[key])
            continue
        current = float(getattr(settings, key))
        if isinstance(dimension, tuple) and current not in dimension:
            space[key] = (current, *dimension)
        elif isinstance(dimension, LogRange) and current > 0:
            space[key] = LogRange(min(dimension.low, current), max(dimension.high, current))
    return space


def with_values(settings: Settings, values: dict[str, float]) -> Settings:
    """The settings with these values, each of its setting's type (factors stay ints)."""
    typed = {key: type(getattr(settings, key))(value) for key, value in values.items()}
    return settings.model_copy(update=typed)


def protocol(config: HoldoutConfig) -> str:
    return (
        f"validation carved from the holdout's training part: per customer with at least "
        f"{config.min_user_events} purchases there, the last {config.test_fraction:.0%} "
        f"held out; NDCG@{config.k} over a seeded sample of up to {config.customers:,} of "
        "them, every item they did not buy ranked; the holdout's own test purchases unseen"
    )


def tune(
    lake: Lake,
    spark: SparkSession,
    purchases: DataFrame,
    settings: Settings,
    config: HoldoutConfig,
    on_trial: Callable[[int], None] | None = None,
) -> Tuned | None:
    """Search the space on the validation split; None when the split judges nobody
    (no customer has enough purchases), so the settings stay as they are."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    space = search_space(settings)
    # The gate's training rows only (its judged sample is not needed here), split again.
    outer = training_rows(split_job(purchases, config.test_fraction, config.min_user_events))
    inner = hold_out(outer, config)
    if inner.held_out.empty:
        log.warning("tuning skipped: the validation split judges no customer")
        return None
    objective = _Objective(lake, spark, inner, settings, config, space, on_trial)
    grid = _grid(space, settings.tuning_max_trials)
    sampler = (
        optuna.samplers.GridSampler(grid, seed=settings.als_seed)
        if grid
        else optuna.samplers.TPESampler(seed=settings.als_seed)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if not grid:  # the current settings first, where the space holds them
        study.enqueue_trial(
            {
                key: float(getattr(settings, key))
                for key, dimension in space.items()
                if key not in settings.tuning_space or float(getattr(settings, key)) in dimension  # type: ignore[operator]
            }
        )
    searching = time.perf_counter()
    study.optimize(objective, n_trials=1)
    first = time.perf_counter() - searching
    budget = settings.tuning_budget_s or min(MAX_BUDGET_S, max(MIN_BUDGET_S, BUDGET_TRIALS * first))
    remaining = budget - first
    n_trials = prod(len(v) for v in grid.values()) if grid else settings.tuning_max_trials
    if n_trials > 1 and remaining > 0:
        study.optimize(objective, n_trials=n_trials - 1, timeout=remaining)
    done = [t for t in study.trials if t.value is not None]
    trials = sorted(
        (
            TrialRecord(
                params=dict(t.params),
                validation_ndcg=float(t.value or 0.0),
                seconds=t.duration.total_seconds() if t.duration else 0.0,
            )
            for t in done
        ),
        key=lambda t: -t.validation_ndcg,
    )
    chosen = dict(study.best_trial.params)
    current = {key: float(getattr(settings, key)) for key in space}
    as_they_were = [t.validation_ndcg for t in trials if t.params == current]
    record = TuningRecord(
        protocol=protocol(config),
        budget_s=budget,
        seconds=time.perf_counter() - started,
        chosen=chosen,
        settings_ndcg=as_they_were[0] if as_they_were else None,
        trials=trials,
    )
    return Tuned(with_values(settings, chosen), record)


def _grid(space: dict[str, Dimension], max_trials: int) -> dict[str, Any]:
    """The space as a grid when it is choices alone and tried whole within max_trials
    ({} otherwise: the search samples it)."""
    grid: dict[str, Any] = {key: list(d) for key, d in space.items() if isinstance(d, tuple)}
    if len(grid) < len(space) or prod(len(v) for v in grid.values()) > max_trials:
        return {}
    return grid


class _Objective:
    """One trial: the values suggested, the validation interactions of its half-life
    (written once per half-life), the trainer fitted and judged."""

    def __init__(
        self,
        lake: Lake,
        spark: SparkSession,
        held: HeldOut,
        settings: Settings,
        config: HoldoutConfig,
        space: dict[str, Dimension],
        on_trial: Callable[[int], None] | None,
    ) -> None:
        self.lake, self.spark, self.held = lake, spark, held
        self.settings, self.config, self.space = settings, config, space
        self.on_trial = on_trial
        # Per half-life: its interactions, and what the judged customers bought in them.
        self.interactions: dict[float, tuple[StoredInteractions, pd.DataFrame]] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        values = {key: _suggest(trial, key, d) for key, d in self.space.items()}
        settings = with_values(self.settings, values)
        half_life = settings.interaction_half_life_days
        if half_life not in self.interactions:
            table = ("silver", f"tuning_interactions_{len(self.interactions)}")
            stored = train_interactions(self.lake, self.held, half_life, table)
            self.interactions[half_life] = (stored, judged_seen(self.held, stored))
        stored, seen = self.interactions[half_life]
        trainer = open_trainer(settings, self.spark)
        metrics = judge(self.held, stored, trainer, self.config, seen)
        if self.on_trial is not None:
            self.on_trial(1)
        return metrics.ndcg


def _suggest(trial: optuna.Trial, key: str, dimension: Dimension) -> float:
    if isinstance(dimension, LogRange):
        return trial.suggest_float(key, dimension.low, dimension.high, log=True)
    return float(trial.suggest_categorical(key, list(dimension)))
