"""Interaction weights: one per purchase day, decayed by age when a half-life is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from batch.interactions import build_interactions, interactions_job

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _tx(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "t_dat"])
    frame["t_dat"] = pd.to_datetime(frame["t_dat"])
    return frame


def test_same_day_units_count_once_and_days_add_up() -> None:
    tx = _tx([("c", "a", "2020-01-01"), ("c", "a", "2020-01-01"), ("c", "a", "2020-01-03")])
    out = build_interactions(tx)
    assert out["weight"].tolist() == [2.0]
    assert out["last_purchase"].tolist() == [pd.Timestamp("2020-01-03")]


def test_half_life_halves_the_weight_of_an_older_day() -> None:
    tx = _tx([("c", "old", "2020-01-01"), ("c", "new", "2020-01-31"), ("d", "x", "2020-01-31")])
    out = build_interactions(tx, half_life_days=30).set_index("article_id")["weight"]
    assert out["new"] == pytest.approx(1.0)
    assert out["old"] == pytest.approx(0.5)


def test_empty_input_gives_empty_interactions() -> None:
    assert build_interactions(_tx([]), half_life_days=10).empty


def test_the_spark_job_and_the_in_memory_rule_agree(spark: SparkSession) -> None:
    """The batch's Spark job and the evaluation's pandas twin give the same weights."""
    rng = np.random.default_rng(3)
    days = pd.date_range("2020-01-01", periods=120, freq="D")
    tx = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(30)], 3_000),
            "article_id": rng.choice([f"a{i}" for i in range(50)], 3_000),
            "t_dat": rng.choice(days, 3_000),
        }
    )
    for half_life in (None, 30.0):
        expected = build_interactions(tx, half_life).set_index(["customer_id", "article_id"])
        frame = spark.createDataFrame(tx.assign(t_dat=tx["t_dat"].dt.date))
        got = interactions_job(frame, half_life).toPandas()
        got = got.set_index(["customer_id", "article_id"]).loc[expected.index]
        np.testing.assert_allclose(got["weight"], expected["weight"], rtol=1e-5)
        assert (pd.to_datetime(got["last_purchase"]) == expected["last_purchase"]).all()
