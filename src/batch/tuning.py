"""The batch tunes itself on the data it is given: the trainer's parameters and the
interactions' half-life, searched (batch.param_search) on a validation split carved from
the holdout's training part (so the gate's holdout stays unseen), within a time budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

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
from batch.param_search import LogRange, Space, Values, search
from batch.stored_interactions import StoredInteractions
from batch.trainer_factory import open_trainer
from recsys.model_store import TuningRecord
from recsys.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# The default space of each trainer (their parameters mean different things: see
# recsys.settings), and the decay's half-life in days for both (0: no decay).
TRAINER_SPACES: dict[str, Space] = {
    "implicit": {
        "implicit_factors": (16, 32, 64, 128),
        "implicit_iterations": (10, 15, 25),
        "implicit_alpha": LogRange(1.0, 100.0),
        # Per unit of alpha: the fit weighs confidence (alpha x weight) against
        # regularisation, so good points lie along reg ~ alpha; searched as a ratio the
        # search finds them (the generated shops' validation NDCG@10 +0.004-0.008).
        "implicit_regularization": LogRange(0.001, 10.0, per="implicit_alpha"),
        "implicit_regularization_exponent": (0.0, 0.5, 1.0),
    },
    "spark": {
        "spark_als_rank": (16, 32, 64, 128),
        "spark_als_max_iter": (5, 10, 15),
        "spark_als_reg_param": LogRange(0.01, 1.0),
        "spark_als_alpha": LogRange(1.0, 100.0),
    },
}
HALF_LIFE_SPACE: Space = {"interaction_half_life_days": (0.0, 30.0, 90.0, 180.0, 365.0)}


SAMPLE_BUCKETS = 10_000  # customers are sampled by their hash, in steps of 0.01%


class TuningError(ValueError):
    """The search space names a setting the chosen trainer does not have."""


@dataclass(frozen=True)
class Tuned:
    settings: Settings  # the input settings with the chosen values
    record: TuningRecord


def search_space(settings: Settings) -> Space:
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
        if isinstance(dimension, LogRange) and dimension.per is not None:
            per = float(getattr(settings, dimension.per))
            current = current / per if per else 0.0
        if isinstance(dimension, tuple) and current not in dimension:
            space[key] = (current, *dimension)
        elif isinstance(dimension, LogRange) and current > 0:
            space[key] = replace(
                dimension, low=min(dimension.low, current), high=max(dimension.high, current)
            )
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


def sampled(purchases: DataFrame, rows: int, at_most: int | None, seed: int) -> DataFrame:
    """The purchases (`rows` of them) of a seeded sample of customers holding about
    `at_most` of them (every purchase of a sampled customer), or all of them when there
    are no more."""
    from pyspark.sql import functions as F

    if at_most is None or rows <= at_most:
        return purchases
    share = int(SAMPLE_BUCKETS * at_most / rows)
    bucket = F.pmod(F.xxhash64(F.col("customer_id"), F.lit(seed)), F.lit(SAMPLE_BUCKETS))
    return purchases.where(bucket < share)


def start_values(settings: Settings, space: Space) -> Values:
    """The settings' current value of each dimension: the search's first trial."""
    return {key: float(getattr(settings, key)) for key in space}


def tune(
    lake: Lake,
    spark: SparkSession,
    purchases: DataFrame,
    rows: int,
    settings: Settings,
    config: HoldoutConfig,
    on_trial: Callable[[int], None] | None = None,
) -> Tuned | None:
    """Search the space on the validation split of `purchases` (`rows` of them); None
    when the split judges nobody (no customer has enough purchases), so the settings
    stay as they are."""
    started = time.perf_counter()
    space = search_space(settings)
    sample = sampled(purchases, rows, settings.tuning_sample_purchases, settings.als_seed)
    # The gate's training rows only (its judged sample is not needed here), split again.
    outer = training_rows(split_job(sample, config.test_fraction, config.min_user_events))
    inner = hold_out(outer, config)
    if inner.held_out.empty:
        log.warning("tuning skipped: the validation split judges no customer")
        return None
    objective = _Objective(lake, spark, inner, settings, config, on_trial)
    found = search(
        space,
        objective,
        start=start_values(settings, space),
        budget_s=settings.tuning_budget_s,
        max_trials=settings.tuning_max_trials,
        seed=settings.als_seed,
    )
    record = TuningRecord(
        protocol=protocol(config),
        budget_s=found.budget_s,
        seconds=time.perf_counter() - started,
        chosen=found.chosen,
        settings_ndcg=found.start_score,
        trials=found.trials,
    )
    return Tuned(with_values(settings, found.chosen), record)


class _Objective:
    """One trial: the validation interactions of its half-life (written once per
    half-life), the trainer fitted with the values and judged."""

    def __init__(
        self,
        lake: Lake,
        spark: SparkSession,
        held: HeldOut,
        settings: Settings,
        config: HoldoutConfig,
        on_trial: Callable[[int], None] | None,
    ) -> None:
        self.lake, self.spark, self.held = lake, spark, held
        self.settings, self.config = settings, config
        self.on_trial = on_trial
        # Per half-life: its interactions, and what the judged customers bought in them.
        self.interactions: dict[float, tuple[StoredInteractions, pd.DataFrame]] = {}

    def __call__(self, values: Values) -> float:
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
