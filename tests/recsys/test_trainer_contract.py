"""The trainer role (recsys.trainer): one contract for every adapter, whichever way the
interactions come (in memory, as Arrow batches, as the batch's stored table). On a
matrix whose answer is known, the held-out item must come first (the shape of
implicit's RecommenderBaseTestMixin)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from batch.implicit_trainer import ImplicitTrainer
from batch.lake import DeltaRsLake, table_path
from batch.stored_interactions import StoredInteractions
from recsys.trainer import INTERACTION_COLUMNS, Factors, Trainer, as_pandas

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


@pytest.fixture(params=["implicit", pytest.param("spark", marks=pytest.mark.spark)])
def trainer(request: pytest.FixtureRequest) -> Trainer:
    """Each adapter of the role (Spark's on the suite's session)."""
    if request.param == "spark":
        return _spark(request.getfixturevalue("spark"))
    return _implicit(None)


def test_held_out_item_ranks_first(trainer: Trainer) -> None:
    data, held = checkerboard()
    factors = trainer.fit(data)
    assert factors.user_factors.dtype == np.float32
    assert factors.user_factors.shape == (GROUPS * USERS_PER_GROUP, factors.dim)
    assert factors.item_factors.shape == (GROUPS * ITEMS_PER_GROUP, factors.dim)
    assert sorted(factors.item_ids) == sorted(data["article_id"].unique())
    assert_held_out_ranks_first(factors, data, held)


@dataclass(frozen=True)
class ArrowInteractions:
    """Interactions as record batches of a few rows each, as a streamed source gives them."""

    table: pa.Table

    def batches(self) -> Iterator[pa.RecordBatch]:
        return iter(self.table.to_batches(max_chunksize=17))


def test_trainers_take_interactions_as_arrow_batches(trainer: Trainer) -> None:
    data, held = checkerboard()
    shuffled = data.sample(frac=1.0, random_state=3).reset_index(drop=True)
    source = ArrowInteractions(pa.Table.from_pandas(shuffled, preserve_index=False))
    factors = trainer.fit(source)
    assert sorted(factors.user_ids) == sorted(held)
    assert_held_out_ranks_first(factors, data, held)


def test_no_batches_are_an_empty_frame() -> None:
    empty = as_pandas(
        ArrowInteractions(pa.table({c: pa.array([], pa.string()) for c in INTERACTION_COLUMNS}))
    )
    assert list(empty.columns) == list(INTERACTION_COLUMNS) and empty.empty


@pytest.mark.spark
def test_trainers_take_the_batchs_delta_table(
    trainer: Trainer, spark: SparkSession, tmp_path: Path
) -> None:
    """The batch's own path: interactions written to the lake by a Spark job, handed over
    as a stored table (implicit streams its files, Spark reads the frame)."""
    data, held = checkerboard()
    lake = DeltaRsLake(spark, tmp_path / "lake", retention_hours=0)
    lake.write(spark.createDataFrame(data).repartition(3), "silver", "interactions")
    path = table_path(lake.lake_dir, "silver", "interactions")
    snapshot = lake.snapshot(path)
    assert snapshot is not None
    factors = trainer.fit(StoredInteractions(snapshot.frame, path))
    assert sorted(factors.user_ids) == sorted(held)
    assert_held_out_ranks_first(factors, data, held)
