"""Spark MLlib ALS: the distributed trainer, behind the same Trainer contract as implicit."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch.trainer import Factors, Progress

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

    def fit(self, interactions: pd.DataFrame, progress: Progress | None = None) -> Factors:
        from pyspark.ml.recommendation import ALS

        # Dense indexes exist only inside training; external ids come back out.
        users = pd.Categorical(interactions["customer_id"])
        items = pd.Categorical(interactions["article_id"])
        frame = pd.DataFrame(
            {
                "u": users.codes.astype(np.int32),
                "i": items.codes.astype(np.int32),
                "r": interactions["weight"].to_numpy(dtype=np.float32),
            }
        )
        started = time.perf_counter()
        data = self.session.createDataFrame(frame)
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
        user_factors = _dense(model.userFactors.toPandas(), len(users.categories), model.rank)
        item_factors = _dense(model.itemFactors.toPandas(), len(items.categories), model.rank)
        if progress is not None:
            progress(self.params["max_iter"], self.params["max_iter"])
        return Factors(
            user_ids=np.asarray(users.categories, dtype=object),
            item_ids=np.asarray(items.categories, dtype=object),
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
