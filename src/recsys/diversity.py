"""Diversity, as serving applies it and as the evaluation measures it: how big a pool MMR
picks from, and how diverse a list came out."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recsys.index.base import Mmr

# MMR picks from the nearest max(MMR_MIN_POOL, MMR_POOL_PER_ITEM * k) items: at k = 50
# that is 250, so diversity changes the list even at the largest k.
MMR_MIN_POOL = 100
MMR_POOL_PER_ITEM = 5


def mmr_for(k: int, diversity_lambda: float) -> Mmr | None:
    """None at 1.0: pure relevance is the plain nearest-neighbour query."""
    if diversity_lambda >= 1.0:
        return None
    return Mmr(relevance=diversity_lambda, candidates=max(MMR_MIN_POOL, MMR_POOL_PER_ITEM * k))


def intra_list_diversity(vectors: list[npt.NDArray[np.float32]]) -> float | None:
    """1 - mean pairwise cosine of a result list (None below two items)."""
    n = len(vectors)
    if n < 2:
        return None
    # Cosines from the Gram matrix: one product of the raw rows, then each entry divided
    # by both norms (half the numpy calls of normalising first: it runs on live requests).
    rows = np.array(vectors, dtype=np.float32)
    gram = rows @ rows.T
    norms = np.sqrt(np.diagonal(gram))
    norms = np.where(norms > 0, norms, 1.0)
    cosines = gram / norms / norms[:, None]
    mean = (float(cosines.sum()) - float(np.trace(cosines))) / (n * (n - 1))
    return 1.0 - mean
