"""Purchases into implicit-feedback interactions: one row per (customer, article)."""

from __future__ import annotations

import pandas as pd


def build_interactions(transactions: pd.DataFrame) -> pd.DataFrame:
    """Weight is the number of distinct days the customer bought the article.

    Several units of one article on one day are one decision, not several; counting
    them would let multi-packs dominate a customer's taste.
    """
    if transactions.empty:
        return pd.DataFrame(
            {"customer_id": [], "article_id": [], "weight": [], "last_purchase": []}
        )
    daily = transactions[["customer_id", "article_id", "t_dat"]].drop_duplicates()
    grouped = daily.groupby(["customer_id", "article_id"], sort=False)["t_dat"]
    out = grouped.agg(weight="count", last_purchase="max").reset_index()
    out["weight"] = out["weight"].astype("float32")
    return out
