"""Why an item was recommended: the customer's recent purchases most like it.

Each recommended item is compared (cosine of the item vectors) with the customer's most
recent purchases; the `top_k` most similar are its explanation. A purchase's share is
its similarity over the sum of the chosen ones' (negative similarities count as 0, and
when none is positive the chosen ones share equally), so shares are non-negative and
sum to 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsys.diversity import unit_rows

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Contribution:
    article_id: str  # a purchase of the customer
    similarity: float  # cosine between its vector and the recommended item's
    share: float  # percent of the explanation, non-negative, the item's shares sum to 100


def explain(
    recommended: dict[str, Vector], purchases: list[tuple[str, Vector]], top_k: int
) -> dict[str, list[Contribution]]:
    """For each recommended article id, its top_k contributing purchases, best first.
    One matrix product and one sort for the whole list (it runs on every explained
    request), then plain Python values."""
    if not recommended or not purchases:
        return {article_id: [] for article_id in recommended}
    bought_ids = [article_id for article_id, _ in purchases]
    bought = unit_rows(np.stack([v for _, v in purchases]).astype(np.float32))
    rec_ids = list(recommended)
    recs = unit_rows(np.stack([recommended[a] for a in rec_ids]).astype(np.float32))
    similarity = recs @ bought.T  # recommended x purchases
    take = min(top_k, len(bought_ids))
    best = np.argsort(-similarity, axis=1, kind="stable")[:, :take]
    chosen = np.take_along_axis(similarity, best, axis=1).astype(np.float64)
    weights = np.clip(chosen, 0.0, None)
    totals = weights.sum(axis=1, keepdims=True)
    positive = totals > 0
    shares = np.where(positive, weights / np.where(positive, totals, 1.0) * 100.0, 100.0 / take)
    return {
        article_id: [
            Contribution(bought_ids[i], sim, share)
            for i, sim, share in zip(columns, sims, row_shares, strict=True)
        ]
        for article_id, columns, sims, row_shares in zip(
            rec_ids, best.tolist(), chosen.tolist(), shares.tolist(), strict=True
        )
    }
