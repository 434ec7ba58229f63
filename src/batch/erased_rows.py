"""The erasure record in the batch: rows of erased customers never re-enter the lake or
a model (recsys.erasure removes what was already there)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def without_erased(
    frame: DataFrame,
    erased: pd.DataFrame,
    day_column: str | None,
    received_column: str | None = None,
) -> DataFrame:
    """The rows of `frame` that are not an erased customer's from before their erasure.

    With `received_column` (an archived event's broker time) a row counts when the stack
    received it after the erasure, to the microsecond, whatever time the client stamped
    on it; a row without one (and a CSV row, which has only a day) counts when its
    `day_column` is after the erasure's day; without either, none of theirs counts.
    `erased` is recsys.erasure.erased_before's frame."""
    from pyspark.sql import functions as F

    if erased.empty:
        return frame
    at = pd.to_datetime(erased["erased_at"], utc=True)
    marks = frame.sparkSession.createDataFrame(
        pd.DataFrame(
            {
                "_erased_hash": erased["customer_hash"].astype(str),
                "_erased_day": at.dt.strftime("%Y-%m-%d"),
                "_erased_us": (at - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1),
            }
        )
    )
    joined = frame.join(
        F.broadcast(marks), F.sha2(F.col("customer_id"), 256) == F.col("_erased_hash"), "left"
    ).drop("_erased_hash")
    after_day = (
        F.to_date(F.col(day_column)) > F.to_date(F.col("_erased_day"))
        if day_column is not None
        else F.lit(False)
    )
    after = after_day
    if received_column is not None:
        received = F.unix_micros(F.col(received_column))
        after = F.when(received.isNull(), after_day).otherwise(received > F.col("_erased_us"))
    keep = F.col("_erased_day").isNull() | F.coalesce(after, F.lit(False))
    return joined.where(keep).drop("_erased_day", "_erased_us")
