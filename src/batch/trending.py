"""Time-decayed popularity: the fallback lists held in the model artefact."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.trending_lists import SEGMENTS, Entry, TrendingLists


def _entries(scores: pd.Series, meta: pd.DataFrame) -> list[Entry]:
    records = meta.reindex(scores.index).fillna("").to_dict("records")
    return [
        {"article_id": str(article_id), "score": float(score), "metadata": record}
        for (article_id, score), record in zip(scores.items(), records, strict=True)
    ]


def trending(
    transactions: pd.DataFrame,
    articles: pd.DataFrame,
    *,
    half_life_days: float,
    size: int,
    segment_size: int,
    metadata_fields: tuple[str, ...],
) -> TrendingLists:
    """Articles ranked by purchases weighted 2^(-age/half_life), age from the last day:
    the top `size` overall and the top `segment_size` of every product group and type."""
    if transactions.empty:
        return TrendingLists(overall=[])
    now = transactions["t_dat"].max()
    age_days = (now - transactions["t_dat"]).dt.days.to_numpy(dtype=np.float64)
    weights = pd.Series(np.exp2(-age_days / half_life_days), index=transactions.index)
    scores = weights.groupby(transactions["article_id"]).sum().sort_values(ascending=False)
    meta = articles.set_index("article_id")[list(metadata_fields)]
    by_segment: dict[str, dict[str, list[Entry]]] = {}
    segment_of = meta.reindex(scores.index)
    for segment in SEGMENTS:
        groups = scores.groupby(segment_of[segment].fillna(""), sort=False)
        by_segment[segment] = {
            str(value): _entries(part.head(segment_size), meta) for value, part in groups if value
        }
    return TrendingLists(overall=_entries(scores.head(size), meta), by_segment=by_segment)
