"""Purchases (and weaker signals) into implicit-feedback interactions: one row per
(customer, article).

The rule: the weight sums the distinct days the customer bought the article, each day
weighted 2^(-age / half_life) with age counted back from the newest day in the data
(no decay when the half-life is 0 or None). Several units of one article on one day are
one decision, not several; counting them would let multi-packs dominate a customer's
taste. Decay lets tastes that drifted weigh less than what the customer buys now.

Archived views, clicks and add-to-carts come in the same frame with an `event_weight`
column (a purchase 1, the others their RECSYS_EVENT_WEIGHT_*; absent: all purchases): a
day counts with the strongest signal of that day (a view and a purchase of it are the
purchase; three views are one view), and a weight of 0 is no interaction at all.
`last_purchase` is then the last day of any counted signal.

`build_interactions` is the rule in memory, for the evaluation that rebuilds
interactions for every split and candidate setting; the batch runs the same rule as a
Spark job, and a test holds the two to the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0
# Optional input column: how much the row's event counts (a purchase 1).
EVENT_WEIGHT = "event_weight"


def build_interactions(
    transactions: pd.DataFrame, half_life_days: float | None = None
) -> pd.DataFrame:
    """The same rule on a pandas frame with t_dat (datetime64)."""
    if transactions.empty:
        return pd.DataFrame(
            {"customer_id": [], "article_id": [], "weight": [], "last_purchase": []}
        )
    keys = ["customer_id", "article_id", "t_dat"]
    newest = transactions["t_dat"].max()
    if EVENT_WEIGHT in transactions.columns:
        strength = transactions[EVENT_WEIGHT].to_numpy(dtype=np.float64)
        daily = (
            transactions.loc[strength > 0, keys]
            .assign(s=strength[strength > 0])
            .groupby(keys, sort=False, as_index=False)
            .agg(s=("s", "max"))
        )
    else:
        daily = transactions[keys].drop_duplicates().assign(s=1.0)
    if half_life_days:
        age = (newest - daily["t_dat"]).dt.total_seconds() / SECONDS_PER_DAY
        decay = np.exp2(-age.to_numpy(dtype=np.float64) / half_life_days)
        daily = daily.assign(w=daily["s"].to_numpy(dtype=np.float64) * decay)
    else:
        daily = daily.assign(w=daily["s"].astype(np.float64))
    grouped = daily.groupby(["customer_id", "article_id"], sort=False)
    out = grouped.agg(weight=("w", "sum"), last_purchase=("t_dat", "max")).reset_index()
    out["weight"] = out["weight"].astype("float32")
    return out
