"""One contract for every ALS trainer: on a matrix whose answer is known, the held-out
item must come first (the shape of implicit's RecommenderBaseTestMixin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from batch.lake import DeltaRsLake, table_path
from batch.trainer import (
    Factors,
    ImplicitTrainer,
    StoredInteractions,
    Trainer,
    matrix_from_batches,
    to_matrix,
)

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import SparkSession

GROUPS, USERS_PER_GROUP, ITEMS_PER_GROUP = 3, 20, 8


def checkerboard() -> tuple[pd.DataFrame, dict[str, str]]:
    """Users of group g bought every item of group g except one held out per user."""
    rows = []
    held_out: dict[str, str] = {}
    for g in range(GROUPS):
        items = [f"i{g}-{j}" for j in range(ITEMS_PER_GROUP)]
        for u in range(USERS_PER_GROUP):
            user = f"u{g}-{u}"
            held_out[user] = items[u % ITEMS_PER_GROUP]
            rows += [(user, item, 1.0) for item in items if item != held_out[user]]
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "weight"])
    frame["weight"] = frame["weight"].astype("float32")
    return frame, held_out


def assert_held_out_ranks_first(factors: Factors, data: pd.DataFrame, held: dict[str, str]) -> None:
    users = {u: i for i, u in enumerate(factors.user_ids)}
    items = list(factors.item_ids)
    bought = data.groupby("customer_id")["article_id"].agg(set)
    misses = 0
    for user, target in held.items():
        scores = factors.item_factors @ factors.user_factors[users[user]]
        ranked = [items[i] for i in np.argsort(-scores) if items[i] not in bought[user]]
        misses += ranked[0] != target
    assert misses == 0, f"{misses} of {len(held)} held-out items did not rank first"


def _implicit(_: object) -> Trainer:
    return ImplicitTrainer(factors=8, iterations=15, regularization=0.01, alpha=5.0, seed=1)


def _spark(session: object) -> Trainer:
    import tempfile
    from pathlib import Path

    from batch.spark_trainer import SparkAlsTrainer

    return SparkAlsTrainer(
        session,  # type: ignore[arg-type]
        rank=8,
        max_iter=10,
        reg_param=0.01,
        alpha=5.0,
        seed=1,
        scratch_dir=Path(tempfile.gettempdir()),
    )


@pytest.mark.parametrize(
    "make", [_implicit, pytest.param(_spark, marks=pytest.mark.spark)], ids=["implicit", "spark"]
)
def test_held_out_item_ranks_first(
    make: Callable[[object], Trainer], request: pytest.FixtureRequest
) -> None:
    session = request.getfixturevalue("spark") if make is _spark else None
    data, held = checkerboard()
    factors = make(session).fit(data)
    assert factors.user_factors.dtype == np.float32
    assert factors.user_factors.shape == (GROUPS * USERS_PER_GROUP, factors.dim)
    assert factors.item_factors.shape == (GROUPS * ITEMS_PER_GROUP, factors.dim)
    assert sorted(factors.item_ids) == sorted(data["article_id"].unique())
    assert_held_out_ranks_first(factors, data, held)


@pytest.mark.spark
@pytest.mark.parametrize("make", [_implicit, _spark], ids=["implicit", "spark"])
def test_trainers_take_a_spark_jobs_output(
    make: Callable[[object], Trainer], spark: SparkSession
) -> None:
    """The batch hands its Spark interactions table over as is: the same contract holds."""
    data, held = checkerboard()
    factors = make(spark).fit(spark.createDataFrame(data))
    assert sorted(factors.user_ids) == sorted(held)
    assert_held_out_ranks_first(factors, data, held)


def test_the_streamed_matrix_is_the_in_memory_one() -> None:
    """Ids and cells come out the same however the rows are batched."""
    import pyarrow as pa

    data, _ = checkerboard()
    data = data.assign(weight=np.arange(len(data), dtype=np.float32) / 7)
    shuffled = data.sample(frac=1.0, random_state=3).reset_index(drop=True)
    table = pa.Table.from_pandas(shuffled, preserve_index=False)
    streamed = matrix_from_batches(lambda: table.to_batches(max_chunksize=17))
    expected = to_matrix(data)
    assert list(streamed.user_ids) == list(expected.user_ids)
    assert list(streamed.item_ids) == list(expected.item_ids)
    assert (streamed.matrix != expected.matrix).nnz == 0


def test_no_interactions_make_an_empty_matrix() -> None:
    empty = matrix_from_batches(lambda: iter([]))
    assert empty.matrix.shape == (0, 0)
    assert len(empty.user_ids) == len(empty.item_ids) == 0


@pytest.mark.spark
@pytest.mark.parametrize("make", [_implicit, _spark], ids=["implicit", "spark"])
def test_trainers_take_the_batchs_delta_table(
    make: Callable[[object], Trainer], spark: SparkSession, tmp_path: Path
) -> None:
    """The batch's own path: interactions written to the lake by a Spark job, handed over
    as a stored table (implicit streams its files, Spark reads the frame)."""
    data, held = checkerboard()
    lake = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    lake.write(spark.createDataFrame(data).repartition(3), "silver", "interactions")
    path = table_path(lake.lake_dir, "silver", "interactions")
    snapshot = lake.snapshot(path)
    assert snapshot is not None
    factors = make(spark).fit(StoredInteractions(snapshot.frame, path))
    assert sorted(factors.user_ids) == sorted(held)
    assert_held_out_ranks_first(factors, data, held)
