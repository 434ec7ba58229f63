"""The interaction rule (recsys.interaction_weights) as the batch's Spark job, and the
purchases joined with the archived weaker signals it weighs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from recsys.interaction_weights import EVENT_WEIGHT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def interactions_job(purchases: DataFrame, half_life_days: float | None) -> DataFrame:
    """Columns customer_id, article_id, weight (float), last_purchase (date)."""
    from pyspark.sql import functions as F

    strength = F.col(EVENT_WEIGHT) if EVENT_WEIGHT in purchases.columns else F.lit(1.0)
    daily = (
        purchases.select("customer_id", "article_id", "t_dat", strength.alias("_s"))
        .where(F.col("_s") > 0)
        .groupBy("customer_id", "article_id", "t_dat")
        .agg(F.max("_s").alias("_s"))
    )
    if half_life_days:
        newest = purchases.agg(F.max("t_dat").alias("_newest"))
        age = F.datediff(F.col("_newest"), F.col("t_dat")).cast("double")
        daily = daily.crossJoin(F.broadcast(newest)).withColumn(
            "_w", F.col("_s") * F.pow(F.lit(2.0), -age / F.lit(float(half_life_days)))
        )
    else:
        daily = daily.withColumn("_w", F.col("_s").cast("double"))
    return daily.groupBy("customer_id", "article_id").agg(
        F.sum("_w").cast("float").alias("weight"), F.max("t_dat").alias("last_purchase")
    )


def with_signals(
    purchases: DataFrame, signals: DataFrame | None, weights: Mapping[str, float]
) -> DataFrame:
    """Purchases and archived weaker signals in one frame for `interactions_job`: columns
    customer_id, article_id, t_dat, event_weight (a purchase 1, a signal its type's
    weight; types weighing 0 are left out)."""
    from pyspark.sql import functions as F

    columns = ["customer_id", "article_id", "t_dat"]
    out = purchases.select(*columns, F.lit(1.0).alias(EVENT_WEIGHT))
    if signals is None:
        return out
    by_type = F.create_map(*[F.lit(v) for pair in weights.items() for v in pair])
    weight = F.coalesce(by_type[F.col("event_type")], F.lit(0.0)).cast("double")
    weak = signals.select(*columns, weight.alias(EVENT_WEIGHT))
    combined: DataFrame = out.unionByName(weak.where(F.col(EVENT_WEIGHT) > 0))
    return combined
