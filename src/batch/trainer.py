"""The ALS trainer role: interactions in, user and item factors out (external ids kept)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame

Progress = Callable[[int, int], None]  # (iterations done, iterations total)
# Interactions (customer_id, article_id, weight): in memory, or a Spark job's output.
TrainingData: TypeAlias = "pd.DataFrame | SparkFrame"


def as_pandas(data: TrainingData) -> pd.DataFrame:
    """A single-node trainer's input, collected from Spark when it comes from a job."""
    if isinstance(data, pd.DataFrame):
        return data
    frame: pd.DataFrame = data.select("customer_id", "article_id", "weight").toPandas()
    return frame


@dataclass(frozen=True)
class Factors:
    """A trained model: row i of user_factors belongs to user_ids[i], likewise for items."""

    user_ids: npt.NDArray[np.object_]
    item_ids: npt.NDArray[np.object_]
    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    params: dict[str, Any]
    train_seconds: float

    @property
    def dim(self) -> int:
        return int(self.item_factors.shape[1])


class Trainer(Protocol):
    name: str

    def fit(self, interactions: TrainingData, progress: Progress | None = None) -> Factors: ...


@dataclass(frozen=True)
class InteractionMatrix:
    """Dense indexes exist only here, inside training."""

    matrix: sp.csr_matrix
    user_ids: npt.NDArray[np.object_]
    item_ids: npt.NDArray[np.object_]


def to_matrix(interactions: pd.DataFrame) -> InteractionMatrix:
    users = pd.Categorical(interactions["customer_id"])
    items = pd.Categorical(interactions["article_id"])
    matrix = sp.csr_matrix(
        (
            interactions["weight"].to_numpy(dtype=np.float32),
            (users.codes.astype(np.int64), items.codes.astype(np.int64)),
        ),
        shape=(len(users.categories), len(items.categories)),
    )
    return InteractionMatrix(
        matrix=matrix,
        user_ids=np.asarray(users.categories, dtype=object),
        item_ids=np.asarray(items.categories, dtype=object),
    )


class ImplicitTrainer:
    """`implicit`'s conjugate-gradient ALS on one node; confidence is alpha * weight."""

    name = "implicit"

    def __init__(
        self, *, factors: int, iterations: int, regularization: float, alpha: float, seed: int
    ) -> None:
        self.params: dict[str, Any] = {
            "factors": factors,
            "iterations": iterations,
            "regularization": regularization,
            "alpha": alpha,
            "seed": seed,
        }

    def fit(self, interactions: TrainingData, progress: Progress | None = None) -> Factors:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        data = to_matrix(as_pandas(interactions))
        total = int(self.params["iterations"])

        def on_iteration(iteration: int, _elapsed: float, _loss: float) -> None:
            if progress is not None:
                progress(iteration + 1, total)

        started = time.perf_counter()
        # implicit parallelises itself; a multi-threaded BLAS underneath only contends
        # (the model checks that when it is built, so the limit is set before).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.params["factors"],
                regularization=self.params["regularization"],
                alpha=self.params["alpha"],
                iterations=total,
                random_state=self.params["seed"],
            )
            model.fit(data.matrix, show_progress=False, callback=on_iteration)
        return Factors(
            user_ids=data.user_ids,
            item_ids=data.item_ids,
            user_factors=np.ascontiguousarray(model.user_factors, dtype=np.float32),
            item_factors=np.ascontiguousarray(model.item_factors, dtype=np.float32),
            params={"trainer": self.name, **self.params},
            train_seconds=time.perf_counter() - started,
        )
