"""Each customer's most recent purchases as a Spark job, for their Redis history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SECONDS_PER_DAY = 86_400


def latest_purchases_job(purchases: DataFrame, max_items: int) -> DataFrame:
    """customer_id and `items`: up to max_items (article_id, ts seconds), newest first."""
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
        .groupBy("customer_id")
        .agg(F.collect_list(F.struct("article_id", "ts")).alias("items"))
    )


def iterate_histories(histories: DataFrame) -> Iterator[tuple[str, dict[str, int]]]:
    """Stream the job's rows to the driver one partition at a time."""
    for row in histories.toLocalIterator():
        yield str(row["customer_id"]), {str(i["article_id"]): int(i["ts"]) for i in row["items"]}
