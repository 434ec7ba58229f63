"""Purchases into implicit-feedback interactions: one row per (customer, article)."""

from __future__ import annotations

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0


def build_interactions(
    transactions: pd.DataFrame, half_life_days: float | None = None
) -> pd.DataFrame:
    """Weight sums the distinct days the customer bought the article, each day weighted
    2^(-age / half_life) with age counted back from the newest purchase in the data (no
    decay when half_life_days is None).

    Several units of one article on one day are one decision, not several; counting
    them would let multi-packs dominate a customer's taste. Decay lets tastes that
    drifted weigh less than what the customer buys now.
    """
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
