"""Purchases into implicit-feedback interactions: one row per (customer, article).

The rule: the weight sums the distinct days the customer bought the article, each day
weighted 2^(-age / half_life) with age counted back from the newest purchase in the data
(no decay when the half-life is 0 or None). Several units of one article on one day are
one decision, not several; counting them would let multi-packs dominate a customer's
taste. Decay lets tastes that drifted weigh less than what the customer buys now.

`interactions_job` is the batch's Spark job; `build_interactions` is the same rule in
memory, for the evaluation harness that rebuilds interactions for every split and
candidate setting. A test holds the two to the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SECONDS_PER_DAY = 86_400.0


def interactions_job(purchases: DataFrame, half_life_days: float | None) -> DataFrame:
    """Columns customer_id, article_id, weight (float), last_purchase (date)."""
    from pyspark.sql import functions as F

    daily = purchases.select("customer_id", "article_id", "t_dat").distinct()
    if half_life_days:
        newest = purchases.agg(F.max("t_dat").alias("_newest"))
        age = F.datediff(F.col("_newest"), F.col("t_dat")).cast("double")
        daily = daily.crossJoin(F.broadcast(newest)).withColumn(
            "_w", F.pow(F.lit(2.0), -age / F.lit(float(half_life_days)))
        )
    else:
        daily = daily.withColumn("_w", F.lit(1.0))
    return daily.groupBy("customer_id", "article_id").agg(
        F.sum("_w").cast("float").alias("weight"), F.max("t_dat").alias("last_purchase")
    )


def build_interactions(
    transactions: pd.DataFrame, half_life_days: float | None = None
) -> pd.DataFrame:
    """The same rule on a pandas frame with t_dat (datetime64)."""
    if transactions.empty:
        return pd.DataFrame(
            {"customer_id": [], "article_id": [], "weight": [], "last_purchase": []}
        )
    daily = transactions[["customer_id", "article_id", "t_dat"]].drop_duplicates()
    if half_life_days:
        age = (daily["t_dat"].max() - daily["t_dat"]).dt.total_seconds() / SECONDS_PER_DAY
        daily = daily.assign(w=np.exp2(-age.to_numpy(dtype=np.float64) / half_life_days))
    else:
        daily = daily.assign(w=1.0)
    grouped = daily.groupby(["customer_id", "article_id"], sort=False)
    out = grouped.agg(weight=("w", "sum"), last_purchase=("t_dat", "max")).reset_index()
    out["weight"] = out["weight"].astype("float32")
    return out
