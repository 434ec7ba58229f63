"""Each customer's most recent purchases and purchase counts as Spark jobs, for their
Redis history and profile.

The jobs write tables; the driver then streams the tables' Arrow batches into Redis, so
no customer's rows pass through Python one by one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch.lake import arrow_batches

if TYPE_CHECKING:
    from pathlib import Path

    from pyspark.sql import DataFrame

SECONDS_PER_DAY = 86_400


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


def profiles_job(purchases: DataFrame) -> DataFrame:
    """customer_id, purchases (rows), first_ts and last_ts (unix seconds of the day)."""
    from pyspark.sql import functions as F

    return purchases.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("purchases"),
        (F.unix_date(F.min("t_dat")).cast("long") * SECONDS_PER_DAY).alias("first_ts"),
        (F.unix_date(F.max("t_dat")).cast("long") * SECONDS_PER_DAY).alias("last_ts"),
    )


def _batches(table: Path) -> Iterator[pa.Table]:
    for batch in arrow_batches(table):
        yield pa.Table.from_batches([batch])


def iterate_profiles(table: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(customer, {purchases, first_ts, last_ts}) from the profiles job's table."""
    for part in _batches(table):
        columns = {
            name: pc.cast(part[name], pa.int64()).to_pylist()
            for name in ("purchases", "first_ts", "last_ts")
        }
        for row, customer in enumerate(part["customer_id"].to_pylist()):
            yield str(customer), {name: values[row] for name, values in columns.items()}


def iterate_histories(table: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """(customer, {article: ts}) from the job's table, batch by batch. A customer split
    across two batches comes out twice; adding to a sorted set merges them."""
    for part in _batches(table):
        ordered = part.sort_by("customer_id")
        customers = ordered["customer_id"].to_numpy(zero_copy_only=False)
        articles = ordered["article_id"].to_pylist()
        stamps = pc.cast(ordered["ts"], pa.int64()).to_pylist()
        bounds = np.flatnonzero(np.r_[True, customers[1:] != customers[:-1], True])
        for start, stop in itertools.pairwise(bounds.tolist()):
            yield (
                str(customers[start]),
                dict(zip(articles[start:stop], stamps[start:stop], strict=True)),
            )
