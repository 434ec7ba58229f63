"""Interaction weights: one per purchase day (a weaker signal's day at its weight), decayed
by age when a half-life is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from batch.interactions import interactions_job, with_signals
from recsys.interaction_weights import build_interactions

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


def _weighted(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "t_dat", "event_weight"])
    frame["t_dat"] = pd.to_datetime(frame["t_dat"])
    return frame


def test_a_day_counts_with_its_strongest_signal_and_weight_zero_is_nothing() -> None:
    tx = _weighted(
        [
            ("c", "bought", "2020-01-01", 0.5),  # viewed, then bought: the purchase
            ("c", "bought", "2020-01-01", 1.0),
            ("c", "viewed", "2020-01-01", 0.5),  # three views of a day are one
            ("c", "viewed", "2020-01-01", 0.5),
            ("c", "viewed", "2020-01-01", 0.5),
            ("c", "viewed", "2020-01-02", 0.25),  # a click on another day adds up
            ("c", "ignored", "2020-01-02", 0.0),
        ]
    )
    out = build_interactions(tx).set_index("article_id")["weight"]
    assert out.to_dict() == pytest.approx({"bought": 1.0, "viewed": 0.75})
    decayed = build_interactions(tx, half_life_days=1).set_index("article_id")["weight"]
    assert decayed["bought"] == pytest.approx(0.5)  # one day older than the newest row
    assert decayed["viewed"] == pytest.approx(0.5 * 0.5 + 0.25)


def test_purchases_alone_weigh_as_before() -> None:
    rows = [("c", "a", "2020-01-01"), ("c", "a", "2020-01-03"), ("d", "b", "2020-01-02")]
    plain = build_interactions(_tx(rows), half_life_days=30)
    weighted = build_interactions(
        _weighted([(*r, 1.0) for r in rows]), half_life_days=30
    )  # fmt: skip
    pd.testing.assert_frame_equal(plain, weighted)


def test_weighted_spark_job_and_in_memory_rule_agree(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    days = pd.date_range("2020-01-01", periods=60, freq="D")
    tx = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(20)], 2_000),
            "article_id": rng.choice([f"a{i}" for i in range(30)], 2_000),
            "t_dat": rng.choice(days, 2_000),
            "event_weight": rng.choice([0.0, 0.1, 0.5, 1.0], 2_000),
        }
    )
    for half_life in (None, 20.0):
        expected = build_interactions(tx, half_life).set_index(["customer_id", "article_id"])
        frame = spark.createDataFrame(tx.assign(t_dat=tx["t_dat"].dt.date))
        got = interactions_job(frame, half_life).toPandas()
        got = got.set_index(["customer_id", "article_id"])
        assert set(got.index) == set(expected.index)
        got = got.loc[expected.index]
        np.testing.assert_allclose(got["weight"], expected["weight"], rtol=1e-5)
        assert (pd.to_datetime(got["last_purchase"]) == expected["last_purchase"]).all()


def test_with_signals_weighs_each_type_and_leaves_out_the_ignored(spark: SparkSession) -> None:
    day = pd.Timestamp("2020-01-01").date()
    purchases = spark.createDataFrame(
        pd.DataFrame({"customer_id": ["c"], "article_id": ["a"], "t_dat": [day], "price": [0.1]})
    )
    signals = spark.createDataFrame(
        pd.DataFrame(
            {
                "t_dat": [day] * 3,
                "customer_id": ["c", "c", "d"],
                "article_id": ["b", "c", "e"],
                "event_type": ["view", "click", "add_to_cart"],
            }
        )
    )
    weights = {"purchase": 1.0, "view": 0.5, "click": 0.0, "add_to_cart": 1.0}
    rows = with_signals(purchases, signals, weights).toPandas()
    assert sorted(zip(rows["article_id"], rows["event_weight"], strict=True)) == [
        ("a", 1.0), ("b", 0.5), ("e", 1.0)
    ]  # fmt: skip
    alone = with_signals(purchases, None, weights).toPandas()
    assert alone["event_weight"].tolist() == [1.0]
