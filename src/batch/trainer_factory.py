"""Pick the ALS trainer from the settings; Spark's session lives as long as the trainer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from batch.trainer import ImplicitTrainer, Trainer
from recsys.settings import Settings


def iterations(settings: Settings) -> int:
    if settings.trainer == "spark":
        return settings.spark_als_max_iter
    return settings.implicit_iterations


@contextlib.contextmanager
def open_trainer(settings: Settings) -> Iterator[Trainer]:
    if settings.trainer == "implicit":
        yield ImplicitTrainer(
            factors=settings.implicit_factors,
            iterations=settings.implicit_iterations,
            regularization=settings.implicit_regularization,
            alpha=settings.implicit_alpha,
            seed=settings.als_seed,
        )
        return
    from batch.spark_trainer import SparkAlsTrainer
    from recsys.spark import spark_session

    with spark_session(settings, "recsys-als") as session:
        yield SparkAlsTrainer(
            session,
            rank=settings.spark_als_rank,
            max_iter=settings.spark_als_max_iter,
            reg_param=settings.spark_als_reg_param,
            alpha=settings.spark_als_alpha,
            seed=settings.als_seed,
        )
