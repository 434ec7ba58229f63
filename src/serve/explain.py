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
    """For each recommended article id, its top_k contributing purchases, best first."""
    if not recommended or not purchases:
        return {article_id: [] for article_id in recommended}
    bought_ids = [article_id for article_id, _ in purchases]
    bought = unit_rows(np.stack([v for _, v in purchases]).astype(np.float32))
    rec_ids = list(recommended)
    recs = unit_rows(np.stack([recommended[a] for a in rec_ids]).astype(np.float32))
    similarity = recs @ bought.T  # recommended x purchases
    take = min(top_k, len(bought_ids))
    out: dict[str, list[Contribution]] = {}
    for row, article_id in enumerate(rec_ids):
        best = np.argsort(-similarity[row], kind="stable")[:take]
        weights = np.clip(similarity[row, best], 0.0, None).astype(np.float64)
        total = float(weights.sum())
        shares = weights / total * 100.0 if total > 0 else np.full(take, 100.0 / take)
        out[article_id] = [
            Contribution(bought_ids[i], float(similarity[row, i]), float(share))
            for i, share in zip(best, shares, strict=True)
        ]
    return out
