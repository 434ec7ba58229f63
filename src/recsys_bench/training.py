"""`recsys bench train`: implicit against Spark MLlib ALS on the same matrix, side by side."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.table import Table

from batch.evaluation_data import load_events
from batch.generate import generate
from batch.implicit_trainer import ImplicitTrainer
from batch.spark_trainer import SparkAlsTrainer
from recsys.ranking.split import to_interactions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class TrainTiming:
    dataset: str
    users: int
    items: int
    interactions: int
    implicit_s: float
    spark_s: float

    @property
    def ratio(self) -> float:
        """How many times faster implicit trains than Spark on this matrix."""
        return self.spark_s / self.implicit_s if self.implicit_s else float("nan")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "spark_over_implicit": round(self.ratio, 1)}


def bench_datasets(
    ml100k: Path | None, transactions: int, work_dir: Path, spark: SparkSession
) -> dict[str, pd.DataFrame]:
    """The matrices to train on: ml-100k where present, and a generated H&M set."""
    sets: dict[str, pd.DataFrame] = {}
    if ml100k is not None and (ml100k / "ratings.tsv").exists():
        sets["ml-100k"] = to_interactions(load_events(ml100k))
    generated = work_dir / f"hm-{transactions}"
    if not (generated / "transactions_train.csv").exists():
        generate(
            generated,
            customers=max(1_000, transactions // 20),
            articles=max(500, transactions // 50),
            transactions=transactions,
            seed=1,
        )
    sets[f"generated {transactions:,} tx"] = to_interactions(load_events(generated, spark))
    return sets


def bench_train(
    session: SparkSession,
    datasets: dict[str, pd.DataFrame],
    *,
    rank: int,
    iterations: int,
    scratch_dir: Path,
) -> list[TrainTiming]:
    """Wall time of a full fit on each matrix, implicit then Spark, in one run."""
    rows = []
    for name, interactions in datasets.items():
        implicit = ImplicitTrainer(  # alpha on the raw weights, as Spark applies it
            factors=rank, iterations=iterations, regularization=0.1, alpha=1.0, seed=1,
            alpha_per_mean_weight=False,
        )  # fmt: skip
        spark = SparkAlsTrainer(
            session,
            rank=rank,
            max_iter=iterations,
            reg_param=0.1,
            alpha=1.0,
            seed=1,
            scratch_dir=scratch_dir,
        )
        started = time.perf_counter()
        fitted = implicit.fit(interactions)
        implicit_s = time.perf_counter() - started
        started = time.perf_counter()
        spark.fit(interactions)
        spark_s = time.perf_counter() - started
        rows.append(
            TrainTiming(
                dataset=name,
                users=len(fitted.user_ids),
                items=len(fitted.item_ids),
                interactions=len(interactions),
                implicit_s=implicit_s,
                spark_s=spark_s,
            )
        )
    return rows


def table(rows: list[TrainTiming], rank: int, iterations: int) -> Table:
    out = Table(title=f"ALS training wall time, rank {rank}, {iterations} iterations")
    for col in ("matrix", "users", "items", "nnz", "implicit s", "Spark s", "Spark / implicit"):
        out.add_column(col, justify="left" if col == "matrix" else "right")
    for r in rows:
        out.add_row(
            r.dataset, f"{r.users:,}", f"{r.items:,}", f"{r.interactions:,}",
            f"{r.implicit_s:.2f}", f"{r.spark_s:.2f}", f"{r.ratio:.1f}x",
        )  # fmt: skip
    return out
