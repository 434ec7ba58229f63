"""The erasure record in the batch: rows of erased customers never re-enter the lake or
a model (recsys.erasure removes what was already there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def without_erased(frame: DataFrame, erased: pd.DataFrame, day_column: str | None) -> DataFrame:
    """The rows of `frame` that are not an erased customer's from on or before the day of
    their erasure (without a day column: none of theirs). `erased` is
    recsys.erasure.erased_before's frame."""
    from pyspark.sql import functions as F

    if erased.empty:
        return frame
    days = pd.DataFrame(
        {
            "_erased_hash": erased["customer_hash"].astype(str),
            "_erased_day": pd.to_datetime(erased["erased_at"], utc=True).dt.strftime("%Y-%m-%d"),
        }
    )
    marks = frame.sparkSession.createDataFrame(days)
    joined = frame.join(
        F.broadcast(marks), F.sha2(F.col("customer_id"), 256) == F.col("_erased_hash"), "left"
    ).drop("_erased_hash")
    keep = F.col("_erased_day").isNull()
    if day_column is not None:
        keep = keep | (F.to_date(F.col(day_column)) > F.to_date(F.col("_erased_day")))
    return joined.where(keep).drop("_erased_day")
