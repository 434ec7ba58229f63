"""Spark MLlib ALS: the distributed trainer, behind the same Trainer contract as implicit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from batch.lake import spilled_batches
from batch.stored_interactions import StoredInteractions
from recsys.trainer import INTERACTION_COLUMNS, Factors, Progress, TrainingData, as_pandas

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class SparkAlsTrainer:
    """Implicit-feedback ALS on whatever master the session runs (local or a cluster).

    Spark's confidence is 1 + alpha * r and its regularisation is scaled by each row's
    count, so its parameters are its own, not implicit's. The factors come back to the
    driver through Parquet under scratch_dir (a filesystem driver and executors share),
    never through collect: 1.4M users at rank 256 would pass Spark's result limit.
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
        scratch_dir: Path,
    ) -> None:
        self.session = session
        self.scratch_dir = scratch_dir
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
        frame = self._frame(interactions)
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
        user_factors = self._dense(model.userFactors, len(user_ids), model.rank)
        item_factors = self._dense(model.itemFactors, len(item_ids), model.rank)
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

    def _frame(self, interactions: TrainingData) -> DataFrame:
        """The batch's stored table as Spark reads it; anything else (small inputs) sent
        to the session from memory."""
        if isinstance(interactions, StoredInteractions):
            return interactions.frame
        rows = as_pandas(interactions)[list(INTERACTION_COLUMNS)].astype({"weight": "float32"})
        frame: DataFrame = self.session.createDataFrame(rows)
        return frame

    def _dense(self, factors: DataFrame, rows: int, rank: int) -> npt.NDArray[np.float32]:
        """Spark returns (id, features) rows in any order; place them by id."""
        out = np.zeros((rows, rank), dtype=np.float32)
        for batch in spilled_batches(factors.select("id", "features"), self.scratch_dir):
            ids = batch.column("id").to_numpy(zero_copy_only=False)
            features = batch.column("features")
            assert isinstance(features, pa.ListArray)
            flat = features.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            out[ids] = flat.reshape(len(ids), rank)
        return out
