"""The gate's holdout as Spark jobs: the same split and the same metrics as the
in-memory evaluation, with only a sample of customers brought to the driver."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from batch.baselines import PopularityTrainer
from batch.eval_config import EvalConfig
from batch.holdout import IS_TEST, HoldoutConfig, holdout_metrics, sample_customers, split_job
from batch.lake import DeltaRsLake
from recsys.ranking.metrics import align, evaluate_ranking
from recsys.ranking.split import build_task, temporal_split

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession

pytestmark = pytest.mark.spark


def purchases_without_ties(customers: int = 60, seed: int = 4) -> pd.DataFrame:
    """Each customer buys 1-12 articles, each on a day of its own (a table has no file
    order, so one customer's purchases of one day are ordered by article; here none tie)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        days = rng.choice(300, size=int(rng.integers(1, 13)), replace=False)
        for day in days:
            article = f"{int(rng.zipf(1.6)) % 40:010d}"
            rows.append((f"c{c:03d}", article, date(2024, 1, 1) + timedelta(days=int(day))))
    return pd.DataFrame(rows, columns=["customer_id", "article_id", "t_dat"])


def test_the_split_is_the_evaluations_split(spark: SparkSession) -> None:
    frame = purchases_without_ties()
    split = split_job(spark.createDataFrame(frame), 0.2, 5).toPandas()
    events = frame.rename(columns={"t_dat": "ts"}).assign(ts=lambda f: pd.to_datetime(f["ts"]))
    expected = temporal_split(events, 0.2, 5)

    def keys(f: pd.DataFrame) -> set[tuple[str, str, str]]:
        return {(r.customer_id, r.article_id, str(pd.Timestamp(r.t_dat).date())) for r in
                f.rename(columns={"ts": "t_dat"}).itertuples()}  # fmt: skip

    assert keys(split[split[IS_TEST]]) == keys(expected.test)
    assert keys(split[~split[IS_TEST]]) == keys(expected.train)


def test_the_sample_is_seeded_and_bounded(spark: SparkSession) -> None:
    split = split_job(spark.createDataFrame(purchases_without_ties()), 0.2, 5)
    eligible = split.where(IS_TEST).select("customer_id").distinct().count()
    assert eligible > 10
    config = HoldoutConfig(customers=10, seed=1)
    first = sorted(r.customer_id for r in sample_customers(split, config).collect())
    again = sorted(r.customer_id for r in sample_customers(split.repartition(5), config).collect())
    assert len(first) == 10
    assert first == again


def test_metrics_are_the_in_memory_evaluations(spark: SparkSession, tmp_path: Path) -> None:
    """Judging every eligible customer, the Spark holdout scores a model exactly as
    `recsys evaluate` does (a deterministic model: popularity)."""
    frame = purchases_without_ties(customers=80)
    lake = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    got = holdout_metrics(lake, spark.createDataFrame(frame), PopularityTrainer(), None,
                          HoldoutConfig(customers=10_000))  # fmt: skip

    events = frame.rename(columns={"t_dat": "ts"}).assign(
        ts=lambda f: pd.to_datetime(f["ts"]), weight=np.float32(1.0)
    )
    config = EvalConfig()
    task = build_task(temporal_split(events, 0.2, 5), config)
    want = evaluate_ranking(align(PopularityTrainer().fit(task.interactions), task), task, 10)
    assert got.users == want.users > 0
    for name in ("ndcg", "map", "recall", "coverage"):
        assert getattr(got, name) == pytest.approx(getattr(want, name)), name
