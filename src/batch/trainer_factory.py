"""Pick the ALS trainer from the settings; Spark's runs on the batch's session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batch.implicit_trainer import ImplicitTrainer
from recsys.settings import Settings
from recsys.trainer import Trainer

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def iterations(settings: Settings) -> int:
    if settings.trainer == "spark":
        return settings.spark_als_max_iter
    return settings.implicit_iterations


def open_trainer(settings: Settings, spark: SparkSession | None) -> Trainer:
    """The settings' trainer; Spark's needs the session."""
    if settings.trainer == "implicit":
        return ImplicitTrainer(
            factors=settings.implicit_factors,
            iterations=settings.implicit_iterations,
            regularization=settings.implicit_regularization,
            alpha=settings.implicit_alpha,
            regularization_exponent=settings.implicit_regularization_exponent,
            seed=settings.als_seed,
        )
    from batch.spark_trainer import SparkAlsTrainer

    if spark is None:
        raise ValueError("RECSYS_TRAINER=spark needs a Spark session")

    return SparkAlsTrainer(
        spark,
        rank=settings.spark_als_rank,
        max_iter=settings.spark_als_max_iter,
        reg_param=settings.spark_als_reg_param,
        alpha=settings.spark_als_alpha,
        seed=settings.als_seed,
        scratch_dir=settings.scratch_dir,
    )
