"""Each customer's most recent purchases as a Spark job, for their Redis history.

The job writes one row per (customer, article) it keeps; the driver then streams the
table's Arrow batches into Redis, so no customer's list passes through Python rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame

SECONDS_PER_DAY = 86_400
BATCH_ROWS = 200_000


def latest_purchases_job(purchases: DataFrame, max_items: int) -> DataFrame:
    """customer_id, article_id, ts (unix seconds of the last purchase day): up to
    max_items articles per customer, the most recently bought."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = purchases.groupBy("customer_id", "article_id").agg(
        (F.unix_date(F.max("t_dat")).cast("long") * SECONDS_PER_DAY).alias("ts")
    )
    newest_first = Window.partitionBy("customer_id").orderBy(
        F.col("ts").desc(), F.col("article_id")
    )
    return (
        latest.withColumn("_n", F.row_number().over(newest_first))
        .where(F.col("_n") <= max_items)
        .select("customer_id", "article_id", "ts")
    )


def iterate_histories(table: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(customer, {article: ts}) from the job's table, batch by batch. A customer split
    across two batches comes out twice; adding to a sorted set merges them."""
    dataset = DeltaTable(str(table)).to_pyarrow_dataset()
    for batch in dataset.to_batches(batch_size=BATCH_ROWS):
        if batch.num_rows == 0:
            continue
        ordered = pa.Table.from_batches([batch]).sort_by("customer_id")
        customers = ordered["customer_id"].to_numpy(zero_copy_only=False)
        articles = ordered["article_id"].to_pylist()
        stamps = pc.cast(ordered["ts"], pa.int64()).to_pylist()
        bounds = np.flatnonzero(np.r_[True, customers[1:] != customers[:-1], True])
        for start, stop in itertools.pairwise(bounds.tolist()):
            yield (
                str(customers[start]),
                dict(zip(articles[start:stop], stamps[start:stop], strict=True)),
            )
