"""Spark MLlib ALS: the distributed trainer, behind the same Trainer contract as implicit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch.trainer import Factors, Progress, TrainingData

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkAlsTrainer:
    """Implicit-feedback ALS on whatever master the session runs (local or a cluster).

    Spark's confidence is 1 + alpha * r and its regularisation is scaled by each row's
    count, so its parameters are its own, not implicit's.
    """

    name = "spark"

    def __init__(
        self,
        session: SparkSession,
        *,
        rank: int,
        max_iter: int,
        reg_param: float,
        alpha: float,
        seed: int,
    ) -> None:
        self.session = session
        self.params: dict[str, Any] = {
            "rank": rank,
            "max_iter": max_iter,
            "reg_param": reg_param,
            "alpha": alpha,
            "seed": seed,
        }

    def fit(self, interactions: TrainingData, progress: Progress | None = None) -> Factors:
        from pyspark.ml.feature import StringIndexer
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import functions as F

        started = time.perf_counter()
        frame = (
            self.session.createDataFrame(
                interactions[["customer_id", "article_id", "weight"]].astype({"weight": "float32"})
            )
            if isinstance(interactions, pd.DataFrame)
            else interactions
        )
        # Dense indexes exist only inside training (the JVM builds them, in id order, and
        # hands the labels back); external ids come back out.
        users = StringIndexer(
            inputCol="customer_id", outputCol="_u", stringOrderType="alphabetAsc"
        ).fit(frame)
        items = StringIndexer(
            inputCol="article_id", outputCol="_i", stringOrderType="alphabetAsc"
        ).fit(frame)
        data = items.transform(users.transform(frame)).select(
            F.col("_u").cast("int").alias("u"),
            F.col("_i").cast("int").alias("i"),
            F.col("weight").cast("float").alias("r"),
        )
        model = ALS(
            rank=self.params["rank"],
            maxIter=self.params["max_iter"],
            regParam=self.params["reg_param"],
            alpha=self.params["alpha"],
            seed=self.params["seed"],
            implicitPrefs=True,
            userCol="u",
            itemCol="i",
            ratingCol="r",
            nonnegative=False,
        ).fit(data)
        user_ids = np.asarray(users.labelsArray[0], dtype=object)
        item_ids = np.asarray(items.labelsArray[0], dtype=object)
        user_factors = _dense(model.userFactors.toPandas(), len(user_ids), model.rank)
        item_factors = _dense(model.itemFactors.toPandas(), len(item_ids), model.rank)
        if progress is not None:
            progress(self.params["max_iter"], self.params["max_iter"])
        return Factors(
            user_ids=user_ids,
            item_ids=item_ids,
            user_factors=user_factors,
            item_factors=item_factors,
            params={
                "trainer": self.name,
                "master": self.session.sparkContext.master,
                **self.params,
            },
            train_seconds=time.perf_counter() - started,
        )


def _dense(factors: pd.DataFrame, rows: int, rank: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Spark returns (id, features) rows in any order; place them by id."""
    out = np.zeros((rows, rank), dtype=np.float32)
    if len(factors):
        features = [np.asarray(f, dtype=np.float32) for f in factors["features"]]
        out[factors["id"].to_numpy()] = np.stack(features)
    return out
