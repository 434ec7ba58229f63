"""Time-decayed popularity: the fallback list held in the model artefact."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def trending(
    transactions: pd.DataFrame,
    articles: pd.DataFrame,
    *,
    half_life_days: float,
    size: int,
    metadata_fields: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Top `size` articles by purchases weighted 2^(-age/half_life), age from the last day."""
    if transactions.empty:
        return []
    now = transactions["t_dat"].max()
    age_days = (now - transactions["t_dat"]).dt.days.to_numpy(dtype=np.float64)
    weights = pd.Series(np.exp2(-age_days / half_life_days), index=transactions.index)
    scores = weights.groupby(transactions["article_id"]).sum().nlargest(size)
    meta = articles.set_index("article_id").reindex(scores.index)[list(metadata_fields)]
    records = meta.fillna("").to_dict("records")
    return [
        {"article_id": str(article_id), "score": float(score), "metadata": record}
        for (article_id, score), record in zip(scores.items(), records, strict=True)
    ]
